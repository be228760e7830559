//! Shared helpers: temporary trees, repositories and a runner for the binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use cairn::{InitOptions, LocalBackend, Repository};

/// A temporary directory that lives as long as the value.
pub struct Dir {
    pub tmp: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Self {
        Self {
            tmp: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }
}

pub const PASSWORD: &str = "correct horse battery staple";

/// Creates an encrypted repository at `path`.
pub fn init_repo(path: &Path) -> Repository {
    Repository::init(
        Arc::new(LocalBackend::new(path)),
        Some(PASSWORD.as_bytes()),
        &InitOptions::default(),
    )
    .expect("init")
}

/// Opens the repository at `path`.
pub fn open_repo(path: &Path) -> Repository {
    Repository::open(Arc::new(LocalBackend::new(path)), &mut || {
        Ok(PASSWORD.as_bytes().to_vec())
    })
    .expect("open")
}

/// The `cairn` binary with a clean environment pointing at `repo` (a
/// directory or an `s3:` URL; the AWS credentials of the test's environment
/// are passed on for the latter).
pub fn cairn(repo: &Path, home: &Path) -> Command {
    cairn_with_password(repo, PASSWORD, home)
}

/// [`cairn`] with another password.
pub fn cairn_with_password(repo: &Path, password: &str, home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("CAIRN_REPO", repo)
        .env("CAIRN_PASSWORD", password);
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    ] {
        if let Some(v) = std::env::var_os(var) {
            c.env(var, v);
        }
    }
    c
}

/// Where a test's repository is stored: the core tests (round trip,
/// corruption, crash) run against both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// A directory.
    Local,
    /// The Garage cluster of `scripts/garage-cluster.sh` (three nodes on
    /// loopback, replication factor 3), through the S3 API.
    S3,
}

/// `s3:http://HOST:PORT/BUCKET` of the test cluster, from `GARAGE_S3` and
/// `GARAGE_BUCKET` (`. DIR/env` after `scripts/garage-cluster.sh start
/// DIR`). Without them the S3 variants are skipped with a message, except
/// under CI, where `.ci/run` starts the cluster and a missing one is a
/// failure.
pub fn s3_base() -> Option<String> {
    match (std::env::var("GARAGE_S3"), std::env::var("GARAGE_BUCKET")) {
        (Ok(url), Ok(bucket)) => Some(format!("s3:{url}/{bucket}")),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the S3 tests: start scripts/garage-cluster.sh and export its env"
            );
            eprintln!(
                "skipped: no S3 test cluster (scripts/garage-cluster.sh start DIR; . DIR/env)"
            );
            None
        }
    }
}

/// Tests share the S3 cluster (read guard), except the one that stops a
/// node (write guard): with a node down and brought back, the cluster may
/// for a while list objects deleted meanwhile, which other tests would
/// report as damage.
pub fn cluster_shared() -> std::sync::RwLockReadGuard<'static, ()> {
    CLUSTER
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The shared guard of the S3 cluster, or `None` (skip the test) without
/// one; see [`s3_base`] and [`cluster_shared`].
pub fn s3_shared() -> Option<std::sync::RwLockReadGuard<'static, ()>> {
    s3_base().map(|_| cluster_shared())
}

/// See [`cluster_shared`].
pub fn cluster_exclusive() -> std::sync::RwLockWriteGuard<'static, ()> {
    CLUSTER
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

static CLUSTER: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// A fresh repository location: `dir/name` on disk, or a prefix of the
/// test bucket no other test or run uses.
pub fn repo_location(store: Store, dir: &Dir, name: &str) -> PathBuf {
    match store {
        Store::Local => dir.join(name),
        Store::S3 => {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let base = s3_base().expect("the S3 variant runs only with a cluster");
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            PathBuf::from(format!(
                "{base}/test-{}-{nanos}-{n}/{name}",
                std::process::id()
            ))
        }
    }
}

/// The backend of a repository location.
pub fn backend_at(location: &Path) -> Arc<dyn cairn::Backend> {
    cairn::open_location(location).expect("backend")
}

/// Creates an encrypted repository at `location` with `opts`.
pub fn init_at(location: &Path, opts: &InitOptions) -> Repository {
    Repository::init(backend_at(location), Some(PASSWORD.as_bytes()), opts).expect("init")
}

/// Opens the repository at `location`.
pub fn open_at(location: &Path) -> Repository {
    Repository::open(backend_at(location), &mut || {
        Ok(PASSWORD.as_bytes().to_vec())
    })
    .expect("open")
}

/// Defines, for each named `fn NAME(store: Store)`, a module `NAME` with
/// the tests `local` and `s3` (the latter skipped without a cluster, see
/// [`s3_base`]).
macro_rules! on_each_store {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use crate::integration::util::{Store, s3_base};

                #[test]
                fn local() {
                    super::$name(Store::Local);
                }

                #[test]
                fn s3() {
                    if s3_base().is_some() {
                        let _shared = crate::integration::util::cluster_shared();
                        super::$name(Store::S3);
                    }
                }
            }
        )*
    };
}
pub(crate) use on_each_store;

/// Runs a command and returns its output, printing it when the test fails.
pub fn run(c: &mut Command) -> Output {
    let out = c.output().expect("run cairn");
    eprintln!(
        "$ {:?}\nstatus: {}\nstdout:\n{}\nstderr:\n{}",
        c,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Verifies with read-data and asserts no problems.
pub fn assert_verifies(repo: &Repository) {
    let mut opts = cairn::VerifyOptions::default();
    opts.read_data = true;
    let report = cairn::verify(repo, &opts).expect("verify");
    assert!(
        report.errors.is_empty(),
        "verify found: {:#?}",
        report.errors
    );
}

/// A small deterministic generator (xorshift) for test data.
pub struct Rng(pub u64);

impl Rng {
    /// A generator from any seed (zero included).
    pub fn seeded(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `len` bytes of noise (incompressible).
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Backs up `path` with default options; panics on failure.
pub fn backup_path(repo: &Repository, path: &Path) -> cairn::BackupOutcome {
    cairn::backup(
        repo,
        &cairn::BackupOptions::new(vec![path.to_path_buf()]),
        &cairn::NoProgress,
    )
    .expect("backup")
}

/// The JSON a successful command printed; panics (showing stderr) otherwise.
pub fn json_of(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "failed: {}", stderr(o));
    serde_json::from_str(&stdout(o)).expect("json output")
}

/// How many POSIX locks the processes `pids` hold on the file with inode
/// `ino`, from /proc/locks.
pub fn posix_locks(pids: &[u32], ino: u64) -> usize {
    let table = std::fs::read_to_string("/proc/locks").expect("/proc/locks");
    table
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&"POSIX")
                && f.get(4)
                    .and_then(|p| p.parse::<u32>().ok())
                    .is_some_and(|p| pids.contains(&p))
                && f.get(5).and_then(|d| d.rsplit(':').next()) == Some(ino.to_string().as_str())
        })
        .count()
}

/// Copies the tree at `from` to `to`, files and directories.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// The files under `dir`, as paths relative to it.
pub fn files_under(dir: &Path) -> std::collections::BTreeSet<PathBuf> {
    let mut out = std::collections::BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let path = e.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(path.strip_prefix(dir).expect("under dir").to_path_buf());
            }
        }
    }
    out
}

/// A guard for a test loop that waits for some state: [`Deadline::check`]
/// fails the test, naming what was awaited, once `limit` has passed, so a
/// test that never gets there fails instead of spinning. A failure guard,
/// not a timing assertion: give it minutes.
pub struct Deadline {
    at: std::time::Instant,
    what: String,
}

impl Deadline {
    pub fn new(limit: std::time::Duration, what: impl Into<String>) -> Self {
        Self {
            at: std::time::Instant::now() + limit,
            what: what.into(),
        }
    }

    /// Fails the test if the deadline has passed.
    #[track_caller]
    pub fn check(&self) {
        assert!(
            std::time::Instant::now() < self.at,
            "gave up waiting: {}",
            self.what
        );
    }

    /// Whether the deadline has passed.
    pub fn passed(&self) -> bool {
        std::time::Instant::now() >= self.at
    }
}

/// Waits (polling every 10 ms) until `ready` holds; fails the test naming
/// `what` after `limit` (see [`Deadline`]).
#[track_caller]
pub fn wait_until(limit: std::time::Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Deadline::new(limit, what);
    while !ready() {
        deadline.check();
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
