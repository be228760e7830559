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

/// The `cairn` binary with a clean environment pointing at `repo`.
pub fn cairn(repo: &Path, home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("CAIRN_REPO", repo)
        .env("CAIRN_PASSWORD", PASSWORD);
    c
}

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
