//! `cairn copy` and `init --from-repo`: snapshots copied between related
//! and unrelated repositories restore identically, pass `verify
//! --read-data`, are recognised along chains of copies, store shared data
//! once, and a repeated copy transfers nothing. The helpers take repository
//! locations as strings so that an `s3:` URL can be passed as well.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use super::util::{Dir, PASSWORD, Rng, cairn_with_password, json_of, run, stderr};
use cairn::{ChunkerParams, InitOptions, LocalBackend, NodeKind, Repository};

/// The target repositories' passwords: not the source's.
const OTHER: &str = "a different password for the copy";
const THIRD: &str = "yet another password";

/// `cairn` against the repository at `repo` (a directory or an `s3:`
/// URL) opened with `password`; AWS credentials in the test's environment
/// are passed on.
pub fn cairn_at(repo: &str, password: &str, home: &Path) -> Command {
    cairn_with_password(Path::new(repo), password, home)
}

/// Creates a repository at `repo`, related to `from` (with its password)
/// when given.
pub fn init(repo: &str, password: &str, from: Option<(&str, &str)>, home: &Path) {
    let mut c = cairn_at(repo, password, home);
    c.args(["init", "--kdf-memory", "19"]);
    if let Some((from, from_pw)) = from {
        c.args(["--from-repo", from])
            .env("CAIRN_FROM_PASSWORD", from_pw);
    }
    let o = run(&mut c);
    assert!(o.status.success(), "init failed: {}", stderr(&o));
}

/// Backs up `path` into `repo`; returns the snapshot id.
pub fn backup(repo: &str, password: &str, path: &Path, home: &Path) -> String {
    let o = run(cairn_at(repo, password, home)
        .args(["--json", "backup"])
        .arg(path));
    json_of(&o)["id"].as_str().expect("snapshot id").to_owned()
}

/// `copy --json --from FROM ARGS` into `to`; returns the report.
pub fn copy(from: (&str, &str), to: (&str, &str), args: &[&str], home: &Path) -> serde_json::Value {
    let o = run(cairn_at(to.0, to.1, home)
        .args(["--json", "copy", "--from", from.0])
        .args(args)
        .env("CAIRN_FROM_PASSWORD", from.1));
    json_of(&o)
}

/// Source snapshot id → target snapshot id, from a copy report.
pub fn pairs(report: &serde_json::Value) -> BTreeMap<String, String> {
    report["snapshots"]
        .as_array()
        .expect("snapshots")
        .iter()
        .map(|s| {
            (
                s["source"].as_str().expect("source").to_owned(),
                s["target"].as_str().expect("target").to_owned(),
            )
        })
        .collect()
}

pub fn assert_transferred_nothing(report: &serde_json::Value) {
    assert_eq!(report["copied"], 0, "{report:#}");
    assert_eq!(report["blobs_transferred"], 0, "{report:#}");
    assert_eq!(report["bytes_transferred"], 0, "{report:#}");
    assert_eq!(report["bytes_stored"], 0, "{report:#}");
}

/// Everything about a directory tree that a restore must reproduce:
/// relative path → kind, permissions, size and content (or link target).
fn listing(root: &Path) -> BTreeMap<String, (String, u32, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (String, u32, Vec<u8>)>) {
        for e in fs::read_dir(dir).expect("read_dir") {
            let p = e.expect("entry").path();
            let rel = p
                .strip_prefix(root)
                .expect("below root")
                .to_string_lossy()
                .into_owned();
            let m = fs::symlink_metadata(&p).expect("lstat");
            let mode = m.permissions().mode() & 0o7777;
            if m.file_type().is_symlink() {
                let t = fs::read_link(&p).expect("readlink");
                out.insert(
                    rel,
                    ("link".into(), 0, t.into_os_string().into_encoded_bytes()),
                );
            } else if m.is_dir() {
                out.insert(rel, ("dir".into(), mode, Vec::new()));
                walk(root, &p, out);
            } else {
                out.insert(
                    rel,
                    (
                        format!("file {}", m.size()),
                        mode,
                        fs::read(&p).expect("read"),
                    ),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Restores `snapshot` of `repo` into `into`.
pub fn restore(repo: (&str, &str), snapshot: &str, into: &Path, home: &Path) {
    let o = run(cairn_at(repo.0, repo.1, home)
        .args(["restore", snapshot, "--target"])
        .arg(into));
    assert!(o.status.success(), "restore failed: {}", stderr(&o));
}

/// Restores each source snapshot and its copy and asserts they are equal,
/// file for file and byte for byte.
pub fn assert_restore_identically(
    from: (&str, &str),
    to: (&str, &str),
    pairs: &BTreeMap<String, String>,
    home: &Path,
) {
    let d = Dir::new();
    for (i, (source, target)) in pairs.iter().enumerate() {
        let (a, b) = (d.join(&format!("a{i}")), d.join(&format!("b{i}")));
        restore(from, source, &a, home);
        restore(to, target, &b, home);
        let (la, lb) = (listing(&a), listing(&b));
        assert!(la.len() > 3, "the snapshot restored too little: {la:?}");
        assert!(la == lb, "snapshot {source} and its copy {target} differ");
    }
}

pub fn assert_verifies(repo: (&str, &str), home: &Path) {
    let o = run(cairn_at(repo.0, repo.1, home).args(["verify", "--read-data"]));
    assert!(o.status.success(), "verify failed: {}", stderr(&o));
}

/// A source tree: small files, a large one, a symlink, a subdirectory.
fn fill(dir: &Path, seed: u64) {
    let mut rng = Rng::seeded(seed);
    fs::create_dir_all(dir.join("sub/deeper")).expect("mkdir");
    fs::write(dir.join("small.txt"), b"hello copy").expect("write");
    fs::write(dir.join("sub/noise.bin"), rng.bytes(300_000)).expect("write");
    fs::write(dir.join("sub/deeper/big.bin"), rng.bytes(2_500_000)).expect("write");
    fs::write(dir.join("empty"), b"").expect("write");
    std::os::unix::fs::symlink("small.txt", dir.join("link")).expect("symlink");
    fs::set_permissions(dir.join("small.txt"), fs::Permissions::from_mode(0o640)).expect("chmod");
}

/// Two snapshots of `src` in `repo`, the second after a change.
pub fn two_snapshots(repo: &str, src: &Path, home: &Path) -> [String; 2] {
    fill(src, 1);
    let first = backup(repo, PASSWORD, src, home);
    fs::write(src.join("sub/added.bin"), Rng::seeded(2).bytes(400_000)).expect("write");
    fs::write(src.join("small.txt"), b"changed").expect("write");
    let second = backup(repo, PASSWORD, src, home);
    [first, second]
}

pub fn loc(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_owned()
}

/// Copies between `a` (with two snapshots) and a new repository `b`
/// created related to `a` or not, and checks everything the issue asks.
pub fn copy_round_trip(a: &str, b: &str, related: bool) {
    let d = Dir::new();
    let home = d.join("home");
    init(a, PASSWORD, None, &home);
    let ids = two_snapshots(a, &d.join("src"), &home);
    init(b, OTHER, related.then_some((a, PASSWORD)), &home);
    let report = copy((a, PASSWORD), (b, OTHER), &["--all"], &home);
    assert_eq!(report["copied"], 2, "{report:#}");
    assert_eq!(report["shared_ids"], related, "{report:#}");
    assert!(report["bytes_transferred"].as_u64().expect("bytes") > 3_000_000);
    let pairs = pairs(&report);
    assert_eq!(pairs.keys().cloned().collect::<Vec<_>>(), {
        let mut v = ids.to_vec();
        v.sort();
        v
    });
    assert_restore_identically((a, PASSWORD), (b, OTHER), &pairs, &home);
    assert_verifies((b, OTHER), &home);

    // The copies name their originals, and the second's parent is the
    // first's copy.
    let o = run(cairn_at(b, OTHER, &home).args(["--json", "snapshots"]));
    let snaps = json_of(&o);
    let snaps = snaps.as_array().expect("list");
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[0]["original"], ids[0].as_str());
    assert_eq!(snaps[1]["original"], ids[1].as_str());
    assert_eq!(snaps[1]["parent"], snaps[0]["id"]);

    let again = copy((a, PASSWORD), (b, OTHER), &["--all"], &home);
    assert_transferred_nothing(&again);
    assert_eq!(again["skipped"], 2);
    assert_eq!(pairs, self::pairs(&again));

    // A backup into the target that reads every file again deduplicates
    // against copied data exactly when the repositories are related (same
    // chunker seed and blob ids).
    let o = run(cairn_at(b, OTHER, &home)
        .args(["--json", "backup", "--force"])
        .arg(d.join("src")));
    let added = json_of(&o)["summary"]["bytes_added"]
        .as_u64()
        .expect("bytes_added");
    if related {
        assert!(added < 10_000, "a related backup added {added} bytes");
    } else {
        // The 2.5 MB file is cut differently under another chunker seed;
        // a smaller file may be one chunk in both and then deduplicates.
        assert!(added > 2_000_000, "an unrelated backup added {added} bytes");
    }
}

/// The acceptance test: a local repository copied to `middle` (a
/// new repository related to it, e.g. on S3) and from there to a second
/// local repository with another password; everything restores
/// identically and verifies, and repeating any of the copies transfers
/// nothing.
pub fn offsite_and_back(middle: &str) {
    let d = Dir::new();
    let home = d.join("home");
    let (a, c) = (loc(&d.join("a")), loc(&d.join("c")));
    init(&a, PASSWORD, None, &home);
    let ids = two_snapshots(&a, &d.join("src"), &home);
    init(middle, OTHER, Some((&a, PASSWORD)), &home);
    let out = copy((&a, PASSWORD), (middle, OTHER), &["--all"], &home);
    assert_eq!(
        (out["copied"].as_u64(), out["shared_ids"].as_bool()),
        (Some(2), Some(true))
    );
    init(&c, THIRD, Some((middle, OTHER)), &home);
    let back = copy((middle, OTHER), (&c, THIRD), &["--all"], &home);
    assert_eq!(
        (back["copied"].as_u64(), back["shared_ids"].as_bool()),
        (Some(2), Some(true))
    );
    // Source snapshot in A → its copy in C, by way of the middle.
    let there = pairs(&out);
    let and_back = pairs(&back);
    let a_to_c: BTreeMap<String, String> = ids
        .iter()
        .map(|id| (id.clone(), and_back[&there[id]].clone()))
        .collect();
    assert_restore_identically((&a, PASSWORD), (&c, THIRD), &a_to_c, &home);
    assert_verifies((middle, OTHER), &home);
    assert_verifies((&c, THIRD), &home);
    assert_transferred_nothing(&copy((&a, PASSWORD), (middle, OTHER), &["--all"], &home));
    assert_transferred_nothing(&copy((middle, OTHER), (&c, THIRD), &["--all"], &home));
    let direct = copy((&a, PASSWORD), (&c, THIRD), &["--all"], &home);
    assert_transferred_nothing(&direct);
    assert_eq!(pairs(&direct), a_to_c);
}

#[test]
fn offsite_and_back_through_a_local_middle() {
    let d = Dir::new();
    offsite_and_back(&loc(&d.join("middle")));
}

#[test]
fn copies_into_a_related_repository_and_then_transfers_nothing() {
    let d = Dir::new();
    copy_round_trip(&loc(&d.join("a")), &loc(&d.join("b")), true);
}

#[test]
fn copies_between_unrelated_repositories_by_naming_blobs_again() {
    let d = Dir::new();
    copy_round_trip(&loc(&d.join("a")), &loc(&d.join("b")), false);
}

#[test]
fn a_chain_of_copies_recognises_what_the_target_already_holds() {
    let d = Dir::new();
    let home = d.join("home");
    let (a, b, c) = (loc(&d.join("a")), loc(&d.join("b")), loc(&d.join("c")));
    init(&a, PASSWORD, None, &home);
    let ids = two_snapshots(&a, &d.join("src"), &home);
    init(&b, OTHER, Some((&a, PASSWORD)), &home);
    init(&c, THIRD, None, &home);
    // Only the first snapshot goes A → B → C.
    let ab = copy((&a, PASSWORD), (&b, OTHER), &[&ids[0]], &home);
    assert_eq!(ab["copied"], 1);
    let bc = copy((&b, OTHER), (&c, THIRD), &["--all"], &home);
    assert_eq!(bc["copied"], 1);
    let in_c = pairs(&bc).into_values().next().expect("copy in c");
    let o = run(cairn_at(&c, THIRD, &home).args(["--json", "snapshots"]));
    assert_eq!(json_of(&o)[0]["original"], ids[0].as_str());

    // A → C directly: the first is there already (by way of B), only the
    // second is copied; then B → C again copies nothing.
    let ac = copy((&a, PASSWORD), (&c, THIRD), &["--all"], &home);
    assert_eq!(ac["copied"], 1, "{ac:#}");
    assert_eq!(ac["skipped"], 1, "{ac:#}");
    assert_eq!(pairs(&ac)[&ids[0]], in_c);
    assert_transferred_nothing(&copy((&b, OTHER), (&c, THIRD), &["--all"], &home));
    assert_restore_identically((&a, PASSWORD), (&c, THIRD), &pairs(&ac), &home);
    assert_verifies((&c, THIRD), &home);
}

#[test]
fn shared_data_is_stored_once_in_the_target() {
    let d = Dir::new();
    let home = d.join("home");
    let (a, b) = (loc(&d.join("a")), loc(&d.join("b")));
    init(&a, PASSWORD, None, &home);
    let ids = two_snapshots(&a, &d.join("src"), &home);
    init(&b, OTHER, None, &home);
    let stats = |repo: &str, pw: &str| {
        let o = run(cairn_at(repo, pw, &home).args(["--json", "stats"]));
        json_of(&o)["pack_bytes"].as_u64().expect("pack_bytes")
    };
    let before = stats(&b, OTHER);
    copy((&a, PASSWORD), (&b, OTHER), &[&ids[0]], &home);
    let first = stats(&b, OTHER) - before;
    assert!(first > 2_800_000, "the first copy stored {first} bytes");
    let second = copy((&a, PASSWORD), (&b, OTHER), &[&ids[1]], &home);
    let grown = stats(&b, OTHER) - before - first;
    // The second snapshot adds one 400 kB file and a changed small one:
    // its shared files are not stored again.
    assert!(
        (400_000..460_000).contains(&grown),
        "the second copy stored {grown} bytes"
    );
    let transferred = second["bytes_transferred"].as_u64().expect("bytes");
    assert!(transferred < 420_000, "{second:#}");
}

#[test]
fn a_wrong_source_password_fails_clearly_and_writes_nothing() {
    let d = Dir::new();
    let home = d.join("home");
    let (a, b) = (loc(&d.join("a")), loc(&d.join("b")));
    init(&a, PASSWORD, None, &home);
    two_snapshots(&a, &d.join("src"), &home);
    init(&b, OTHER, None, &home);
    let files = |p: &str| {
        walkdir(Path::new(p))
            .into_iter()
            .map(|f| (f.clone(), fs::read(&f).expect("read")))
            .collect::<BTreeMap<_, _>>()
    };
    let before = files(&b);
    let o = run(cairn_at(&b, OTHER, &home)
        .args(["copy", "--all", "--from", &a])
        .env("CAIRN_FROM_PASSWORD", "not the password"));
    assert_eq!(o.status.code(), Some(12), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("source repository") && err.contains("wrong password"),
        "{err}"
    );
    // No source password at all, without a terminal: a clear error too.
    let o = run(cairn_at(&b, OTHER, &home).args(["copy", "--all", "--from", &a]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("CAIRN_FROM_PASSWORD"), "{}", stderr(&o));
    // Copying a repository into itself is refused.
    let o = run(cairn_at(&a, PASSWORD, &home)
        .args(["copy", "--all", "--from", &a])
        .env("CAIRN_FROM_PASSWORD", PASSWORD));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("same repository"), "{}", stderr(&o));
    assert!(files(&b) == before, "the failed copies changed the target");
}

/// Every file below `dir`, sorted.
fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// A repository with small chunks, so that a file of a few hundred
/// kilobytes has its chunk ids in list blobs (`NodeKind::ListedFile`).
fn small_chunk_repo(path: &Path, password: &str) -> Repository {
    let mut opts = InitOptions::default();
    opts.chunker = ChunkerParams {
        min_size: 64,
        avg_size: 256,
        max_size: 1024,
        normalization: 1,
    };
    opts.kdf_memory_mib = cairn::MIN_KDF_MEMORY_MIB;
    Repository::init(
        Arc::new(LocalBackend::new(path)),
        Some(password.as_bytes()),
        &opts,
    )
    .expect("init")
}

#[test]
fn chunk_lists_are_copied_and_rewritten() {
    let d = Dir::new();
    let src = d.join("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("listed.bin"), Rng::seeded(7).bytes(300_000)).expect("write");
    fs::write(src.join("inline.txt"), b"a few bytes").expect("write");
    let a = small_chunk_repo(&d.join("a"), PASSWORD);
    let snap = super::util::backup_path(&a, &src);
    let node = cairn::find_node(
        &a,
        &snap.snapshot.tree,
        src.join("listed.bin").as_os_str().as_encoded_bytes(),
    )
    .expect("find")
    .expect("node");
    assert!(
        matches!(node.kind, NodeKind::ListedFile { .. }),
        "the test file should have a chunk list: {:?}",
        node.kind
    );
    let want = cairn::file_content(&a, &node).expect("content");

    let mut related = InitOptions::default();
    related.kdf_memory_mib = cairn::MIN_KDF_MEMORY_MIB;
    related.related_to(&a);
    let b = Repository::init(
        Arc::new(LocalBackend::new(d.join("b"))),
        Some(OTHER.as_bytes()),
        &related,
    )
    .expect("init b");
    assert!(a.shares_blob_ids(&b));
    let unrelated = small_chunk_repo(&d.join("c"), THIRD);
    assert!(!a.shares_blob_ids(&unrelated));

    for target in [&b, &unrelated] {
        let report = cairn::copy(&a, target, &[snap.id], &cairn::NoProgress).expect("copy");
        assert_eq!(report.copied(), 1);
        let copy_id = report.snapshots[0].target;
        let copied = target.read_snapshot(&copy_id).expect("snapshot");
        assert_eq!(copied.original, Some(snap.id));
        let node = cairn::find_node(
            target,
            &copied.tree,
            src.join("listed.bin").as_os_str().as_encoded_bytes(),
        )
        .expect("find")
        .expect("node");
        assert!(matches!(node.kind, NodeKind::ListedFile { .. }));
        let got = cairn::file_content(target, &node).expect("content");
        let plain = |r: &Repository, ids: &[cairn::BlobId]| -> Vec<u8> {
            ids.iter()
                .flat_map(|id| r.read_blob(id).expect("blob"))
                .collect()
        };
        assert_eq!(plain(target, &got), plain(&a, &want));
        super::util::assert_verifies(target);
        let again = cairn::copy(&a, target, &[snap.id], &cairn::NoProgress).expect("copy");
        assert_eq!((again.copied(), again.blobs_transferred), (0, 0));
    }
}

#[test]
fn a_copy_killed_at_random_moments_leaves_a_valid_target() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    eprintln!("copy crash test seed: {seed}");
    let mut rng = Rng(seed);
    let d = Dir::new();
    let home = d.join("home");
    let (a, b) = (loc(&d.join("a")), loc(&d.join("b")));
    let src = d.join("src");
    fs::create_dir_all(&src).expect("mkdir");
    init(&a, PASSWORD, None, &home);
    for i in 0..5 {
        for j in 0..4 {
            fs::write(src.join(format!("f{i}-{j}")), rng.bytes(500_000)).expect("write");
        }
        backup(&a, PASSWORD, &src, &home);
    }
    // Unrelated: every blob is read and stored, the slowest kind of copy.
    init(&b, OTHER, None, &home);
    let started = std::time::Instant::now();
    let o = run(cairn_at(&b, OTHER, &home)
        .args(["copy", "--all", "--from", &a])
        .env("CAIRN_FROM_PASSWORD", PASSWORD));
    assert!(o.status.success(), "{}", stderr(&o));
    let window = started.elapsed();
    // Start over in a fresh target, killing copies at random moments.
    let c = loc(&d.join("c"));
    init(&c, THIRD, None, &home);
    for round in 0..8 {
        let mut child = cairn_at(&c, THIRD, &home)
            .args(["copy", "--all", "--from", &a])
            .env("CAIRN_FROM_PASSWORD", PASSWORD)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        let delay = window.mul_f64((rng.next() % 1000) as f64 / 1000.0);
        std::thread::sleep(delay);
        child.kill().ok(); // SIGKILL
        child.wait().expect("wait");
        let o = run(cairn_at(&c, THIRD, &home).args(["verify", "--read-data"]));
        assert!(
            o.status.success(),
            "round {round}: verify failed after SIGKILL at {delay:?}"
        );
    }
    let report = copy((&a, PASSWORD), (&c, THIRD), &["--all"], &home);
    assert_eq!(report["snapshots"].as_array().expect("list").len(), 5);
    assert_verifies((&c, THIRD), &home);
    // The newest snapshot (the report lists them oldest first).
    let newest = report["snapshots"]
        .as_array()
        .and_then(|l| l.last())
        .expect("newest");
    let latest = BTreeMap::from([(
        newest["source"].as_str().expect("source").to_owned(),
        newest["target"].as_str().expect("target").to_owned(),
    )]);
    assert_restore_identically((&a, PASSWORD), (&c, THIRD), &latest, &home);
    assert_transferred_nothing(&copy((&a, PASSWORD), (&c, THIRD), &["--all"], &home));
}
