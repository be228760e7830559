//! Object storage: many hosts in one repository on the Garage test cluster,
//! a node failing in the middle of a backup, the local cache and request
//! counts. (The core round-trip, corruption and crash tests run on S3 too,
//! in their own modules.)

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cairn::{FileKind, PackId};

use super::util::{
    Dir, Rng, Store, backend_at, cairn, cluster_exclusive, open_at, repo_location, run, s3_base,
    s3_shared, stderr,
};

/// Every file under `root` (relative path → content).
fn contents(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).expect("under root").to_path_buf();
                out.insert(rel, fs::read(&p).expect("read"));
            }
        }
    }
    out
}

/// `cairn` for one simulated host: its own name and cache directory.
fn host_cmd(repo: &Path, home: &Path, host: &str) -> Command {
    let mut c = cairn(repo, home);
    c.arg("--cache-dir")
        .arg(home.join(format!("cache-{host}")))
        .args(["--retry-lock", "10m"]);
    c
}

/// Every blob id with the number of packs that hold it.
fn copies_per_blob(repo: &Path) -> HashMap<cairn::BlobId, usize> {
    let r = open_at(repo);
    let mut copies = HashMap::new();
    for (name, size) in backend_at(repo).list(FileKind::Pack).expect("list") {
        let id: PackId = name.parse().expect("pack id");
        for e in r.read_pack_header(&id, size).expect("header") {
            *copies.entry(e.id).or_insert(0) += 1;
        }
    }
    copies
}

#[test]
fn many_hosts_back_up_concurrently_while_another_prunes() {
    let Some(_shared) = s3_shared() else {
        return;
    };
    const HOSTS: usize = 3;
    const ROUNDS: usize = 20;
    let d = Dir::new();
    let repo = repo_location(Store::S3, &d, "repo");
    assert!(run(cairn(&repo, d.path()).arg("init")).status.success());

    // Files every host has (stored once however many back them up), and
    // files of each host's own.
    let mut rng = Rng::seeded(7);
    let shared: Vec<Vec<u8>> = (0..6).map(|_| rng.bytes(300_000)).collect();
    let sources: Vec<PathBuf> = (0..HOSTS)
        .map(|h| {
            let src = d.join(&format!("host{h}"));
            fs::create_dir_all(src.join("shared")).expect("mkdir");
            fs::create_dir_all(src.join("own")).expect("mkdir");
            for (i, data) in shared.iter().enumerate() {
                fs::write(src.join(format!("shared/s{i}.bin")), data).expect("write");
            }
            src
        })
        .collect();

    let done = Arc::new(AtomicBool::new(false));
    let pruner = {
        let (repo, home, done) = (repo.clone(), d.path().to_path_buf(), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut runs = 0;
            while !done.load(Ordering::Relaxed) {
                let o = run(host_cmd(&repo, &home, "pruner").args([
                    "forget",
                    "--keep-last",
                    "3",
                    "--prune",
                ]));
                assert!(o.status.success(), "forget --prune failed: {}", stderr(&o));
                runs += 1;
            }
            runs
        })
    };

    let failures = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = sources
        .iter()
        .enumerate()
        .map(|(h, src)| {
            let (repo, home, src, failures) = (
                repo.clone(),
                d.path().to_path_buf(),
                src.clone(),
                Arc::clone(&failures),
            );
            std::thread::spawn(move || {
                let host = format!("h{h}");
                let mut rng = Rng::seeded(100 + h as u64);
                let mut ok = 0;
                for round in 0..ROUNDS {
                    // Each round changes two of the host's own files and
                    // adds one.
                    for _ in 0..2 {
                        let i = rng.next() % 8;
                        let len = 20_000 + (rng.next() % 200_000) as usize;
                        fs::write(src.join(format!("own/f{i}.bin")), rng.bytes(len))
                            .expect("write");
                    }
                    fs::write(src.join(format!("own/r{round}.txt")), rng.bytes(5_000))
                        .expect("write");
                    let o = run(host_cmd(&repo, &home, &host)
                        .args(["backup", "--json", "--host", &host])
                        .arg(&src));
                    if !o.status.success() {
                        failures
                            .lock()
                            .expect("lock")
                            .push(format!("{host} round {round}: {}", stderr(&o)));
                        continue;
                    }
                    let v: serde_json::Value =
                        serde_json::from_slice(&o.stdout).expect("backup json");
                    let id = v["id"].as_str().expect("id").to_owned();
                    assert!(v["requests"].as_u64().is_some_and(|n| n > 0), "{v}");
                    // Every snapshot that reported success restores exactly,
                    // whatever the pruner is doing meanwhile.
                    let target = home.join(format!("restore-{host}-{round}"));
                    let o = run(host_cmd(&repo, &home, &host)
                        .args(["restore", &id, "--target"])
                        .arg(&target));
                    assert!(o.status.success(), "{host} round {round}: restore failed");
                    let restored = target.join(src.strip_prefix("/").expect("absolute"));
                    assert!(
                        contents(&restored) == contents(&src),
                        "{host} round {round}: snapshot {id} does not restore identically"
                    );
                    fs::remove_dir_all(&target).expect("clean up");
                    ok += 1;
                }
                ok
            })
        })
        .collect();
    let succeeded: usize = workers
        .into_iter()
        .map(|w| w.join().expect("host thread"))
        .sum();
    done.store(true, Ordering::Relaxed);
    let prunes = pruner.join().expect("pruner thread");
    let failures = failures.lock().expect("lock").clone();
    assert!(
        failures.is_empty(),
        "backups failed (they wait for the pruner's lock): {failures:#?}"
    );
    assert_eq!(succeeded, HOSTS * ROUNDS);
    assert!(prunes >= 3, "the pruner ran only {prunes} times");

    // Retention grouped by host: each host keeps its own last three.
    let o = run(cairn(&repo, d.path()).args(["forget", "--keep-last", "3", "--prune"]));
    assert!(o.status.success());
    let o = run(cairn(&repo, d.path()).args(["snapshots", "--json"]));
    let snaps: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let mut per_host: BTreeMap<String, usize> = BTreeMap::new();
    for s in snaps.as_array().expect("array") {
        *per_host
            .entry(s["hostname"].as_str().expect("host").to_owned())
            .or_default() += 1;
    }
    assert_eq!(
        per_host,
        (0..HOSTS).map(|h| (format!("h{h}"), 3)).collect(),
        "retention groups by host"
    );

    // Shared files are stored once: hosts that raced may each have written
    // a copy, which prune counts as garbage; repacking every pack with any
    // garbage leaves exactly one copy of every blob.
    let o = run(cairn(&repo, d.path()).args(["prune", "--max-unused", "0"]));
    assert!(o.status.success());
    let copies = copies_per_blob(&repo);
    let twice: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "blobs stored more than once: {twice:?}");
    let o = run(cairn(&repo, d.path()).args(["verify", "--read-data"]));
    assert!(o.status.success(), "verify: {}", stderr(&o));
}

/// Restarts a stopped Garage node when dropped, so that a failing test
/// does not leave the cluster degraded for the others.
struct NodeDown {
    dir: String,
    node: &'static str,
}

fn garage_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/garage-cluster.sh")
}

impl NodeDown {
    fn stop(dir: &str, node: &'static str) -> Self {
        let ok = Command::new(garage_script())
            .args(["stop-node", dir, node])
            .status()
            .expect("garage-cluster.sh");
        assert!(ok.success(), "could not stop node {node}");
        Self {
            dir: dir.to_owned(),
            node,
        }
    }
}

impl Drop for NodeDown {
    fn drop(&mut self) {
        let _ = Command::new(garage_script())
            .args(["start-node", &self.dir, self.node])
            .status();
    }
}

#[test]
fn a_node_stopped_in_the_middle_of_a_backup() {
    if s3_base().is_none() {
        return;
    }
    let _exclusive = cluster_exclusive();
    let Ok(garage_dir) = std::env::var("GARAGE_DIR") else {
        panic!("GARAGE_DIR (written by scripts/garage-cluster.sh into DIR/env) is needed");
    };
    let d = Dir::new();
    let repo = repo_location(Store::S3, &d, "repo");
    assert!(run(cairn(&repo, d.path()).arg("init")).status.success());
    let src = d.join("src");
    fs::create_dir(&src).expect("mkdir");
    let mut rng = Rng::seeded(3);
    for i in 0..48 {
        fs::write(src.join(format!("f{i}.bin")), rng.bytes(1 << 20)).expect("write");
    }
    // Uploads are held to 8 MiB/s so that the backup (48 MiB, three packs)
    // is still running when the node goes down.
    let mut child = cairn(&repo, d.path())
        .args(["--limit-upload", "8192", "backup", "--json"])
        .arg(&src)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let still_running = child.try_wait().expect("try_wait").is_none();
    let down = NodeDown::stop(&garage_dir, "3");
    let out = child.wait_with_output().expect("wait");
    eprintln!(
        "backup (running when node 3 stopped: {still_running}): {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        still_running,
        "the backup ended before the node was stopped"
    );
    let snaps_after = |label: &str| {
        let o = run(cairn(&repo, d.path()).args(["snapshots", "--json"]));
        assert!(o.status.success(), "{label}: snapshots failed");
        serde_json::from_slice::<serde_json::Value>(&o.stdout).expect("json")
    };
    if out.status.success() {
        // Two of three nodes are a quorum: the backup completes, and its
        // snapshot restores exactly.
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let id = v["id"].as_str().expect("id");
        let target = d.join("restored");
        let o = run(cairn(&repo, d.path())
            .args(["restore", id, "--target"])
            .arg(&target));
        assert!(o.status.success());
        assert!(contents(&target.join(src.strip_prefix("/").expect("abs"))) == contents(&src));
    } else {
        // Or it fails clearly, leaving no snapshot behind.
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("cairn: error:"), "{err}");
        assert_eq!(
            snaps_after("after the failed backup"),
            serde_json::json!([])
        );
    }
    let o = run(cairn(&repo, d.path()).args(["verify", "--read-data"]));
    assert!(
        o.status.success(),
        "verify with node 3 down: {}",
        stderr(&o)
    );
    drop(down);
    let o = run(cairn(&repo, d.path()).args(["verify", "--read-data"]));
    assert!(
        o.status.success(),
        "verify with node 3 back: {}",
        stderr(&o)
    );
}

#[test]
fn the_cache_saves_requests_and_survives_damage() {
    let Some(_shared) = s3_shared() else {
        return;
    };
    let d = Dir::new();
    let repo = repo_location(Store::S3, &d, "repo");
    assert!(run(cairn(&repo, d.path()).arg("init")).status.success());
    let src = d.join("src");
    for i in 0..40 {
        let dir = src.join(format!("d{}", i % 5));
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join(format!("f{i}")), format!("{i}").repeat(100)).expect("write");
    }
    for _ in 0..3 {
        assert!(
            run(cairn(&repo, d.path()).arg("backup").arg(&src))
                .status
                .success()
        );
    }
    let requests = |args: &[&str]| -> u64 {
        let o = run(cairn(&repo, d.path()).args(args).arg("--verbose"));
        assert!(o.status.success());
        let err = stderr(&o);
        let line = err
            .lines()
            .find(|l| l.ends_with("requests to the repository"))
            .expect("--verbose reports the requests");
        line.split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .expect("a count")
    };
    // A backup that finds nothing new: its lock (PUT, LIST, DELETE), the
    // index listing under it, the snapshot and the audit event. The parent
    // comes from the cache, since no index file has gone since the last
    // backup (store-format.md §20). The snapshot also records the
    // directories above the source, /tmp among them, which concurrent tests
    // change: then it stores their new trees, one tree pack and its index
    // file more, and says so.
    let o = run(cairn(&repo, d.path())
        .arg("backup")
        .arg(&src)
        .arg("--verbose"));
    assert!(o.status.success(), "{}", stderr(&o));
    let (out, err) = (String::from_utf8_lossy(&o.stdout), stderr(&o));
    let count: u64 = err
        .lines()
        .find(|l| l.ends_with("requests to the repository"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .expect("--verbose reports the requests");
    let nothing_new = format!("{out}{err}").contains("added 0 B of new data");
    assert_eq!(count, if nothing_new { 6 } else { 8 }, "{out}{err}");
    let cache = d.path().join(".cache/cairn");
    fs::remove_dir_all(&cache).ok();
    let cold = requests(&["ls", "latest"]);
    let warm = requests(&["ls", "latest"]);
    // Warm: no config, snapshot, index or key file and no tree is fetched
    // again, and the keys are not listed; only the listings of snapshots
    // (which confirms the remembered repository) and index remain.
    assert_eq!(warm, 2, "cold {cold} requests, warm {warm}");
    assert!(cold > warm, "cold {cold} requests, warm {warm}");
    // A damaged cache costs requests, not correctness.
    for e in walk(&cache) {
        if e.components().any(|c| c.as_os_str() == "data")
            || e.components().any(|c| c.as_os_str() == "snapshots")
        {
            let mut bytes = fs::read(&e).expect("read");
            if let Some(b) = bytes.get_mut(100) {
                *b ^= 1;
            }
            fs::write(&e, bytes).expect("write");
        }
    }
    let o = run(cairn(&repo, d.path()).args(["ls", "latest"]));
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("f39"));
    assert_eq!(
        requests(&["ls", "latest"]),
        warm,
        "the damaged copies were replaced"
    );
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn copy_local_to_s3_to_another_local_repository() {
    let Some(_shared) = s3_shared() else {
        return;
    };
    let d = Dir::new();
    let middle = repo_location(Store::S3, &d, "offsite");
    super::copy::offsite_and_back(middle.to_str().expect("utf-8 location"));
}

#[test]
fn bad_credentials_and_locations_fail_clearly() {
    let Some(_shared) = s3_shared() else {
        return;
    };
    let d = Dir::new();
    let repo = repo_location(Store::S3, &d, "repo");
    assert!(run(cairn(&repo, d.path()).arg("init")).status.success());
    let secret = "not-the-secret-0123456789";
    let o = run(cairn(&repo, d.path())
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .arg("snapshots"));
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("AWS_SECRET_ACCESS_KEY"), "{err}");
    assert!(!err.contains(secret), "the secret is not repeated: {err}");

    let o = run(cairn(&repo, d.path())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .arg("snapshots"));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no credentials found"),
        "{}",
        stderr(&o)
    );

    let base = s3_base().expect("cluster");
    let (endpoint, _) = base.rsplit_once('/').expect("s3:URL/BUCKET");
    let no_bucket = PathBuf::from(format!("{endpoint}/no-such-bucket/x"));
    let o = run(cairn(&no_bucket, d.path()).arg("snapshots"));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("bucket does not exist"),
        "{}",
        stderr(&o)
    );

    let empty = repo_location(Store::S3, &d, "nothing-here");
    let o = run(cairn(&empty, d.path()).arg("snapshots"));
    assert_eq!(o.status.code(), Some(10), "no repository");

    let o = run(cairn(Path::new("s3:https://host"), d.path()).arg("snapshots"));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("the bucket is missing"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_repository_created_anew_where_one_was_remembered_is_noticed() {
    let Some(_shared) = s3_shared() else {
        return;
    };
    let d = Dir::new();
    let repo = repo_location(Store::S3, &d, "repo");
    let src = d.join("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("a"), "first repository").expect("write");
    assert!(run(cairn(&repo, d.path()).arg("init")).status.success());
    assert!(
        run(cairn(&repo, d.path()).arg("backup").arg(&src))
            .status
            .success()
    );
    // Someone deletes the repository and creates another at the same
    // location, with the same password: this host still remembers the
    // first one's config and key.
    let backend = backend_at(&repo);
    for kind in [
        FileKind::Pack,
        FileKind::Index,
        FileKind::Snapshot,
        FileKind::Lock,
        FileKind::Audit,
        FileKind::Key,
    ] {
        for (name, _) in backend.list(kind).expect("list") {
            backend.delete(kind, &name).expect("delete");
        }
    }
    backend
        .delete(FileKind::Config, "config")
        .expect("delete config");
    let other = d.path().join("other-home");
    fs::create_dir_all(&other).expect("mkdir");
    assert!(run(cairn(&repo, &other).arg("init")).status.success());
    // The backup stops before it writes anything with the old key…
    fs::write(src.join("a"), "second repository").expect("write");
    let o = run(cairn(&repo, d.path()).arg("backup").arg(&src));
    assert!(!o.status.success(), "a backup with a stale key must fail");
    assert!(
        stderr(&o).contains("not the one this host opened before"),
        "{}",
        stderr(&o)
    );
    // …and the next run opens the new repository afresh.
    assert!(
        run(cairn(&repo, d.path()).arg("backup").arg(&src))
            .status
            .success()
    );
    let o = run(cairn(&repo, d.path()).args(["verify", "--read-data"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(cairn(&repo, &other).args(["snapshots", "--json"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let listed: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
}
