//! The files cache: unchanged directories are reused whole, every kind of
//! change is still seen, and a cache that cannot be trusted is not.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::os::unix::ffi::OsStrExt;

use cairn::{
    BackupOptions, BackupOutcome, BlobId, NoProgress, NodeKind, Repository, RestoreOptions,
};

use super::util::{Dir, assert_verifies, cairn, init_repo, run, stdout};

/// The files cache trusts only entries whose times are at least a second
/// before the backup that recorded them; waiting this long after writing
/// the sources makes them trusted by the next backup.
const SETTLE: Duration = Duration::from_millis(2100);

fn backup(repo: &Repository, paths: &[&Path], cache: &Path, force: bool) -> BackupOutcome {
    let mut opts = BackupOptions::new(paths.iter().map(|p| p.to_path_buf()).collect());
    opts.cache_dir = Some(cache.to_path_buf());
    opts.force = force;
    cairn::backup(repo, &opts, &NoProgress).expect("backup")
}

/// Restores `done` and returns where `src` came back.
fn restored(repo: &Repository, done: &BackupOutcome, out: &Path, src: &Path) -> PathBuf {
    let r = cairn::restore(repo, &done.snapshot, &RestoreOptions::new(out), &NoProgress)
        .expect("restore");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    out.join(src.strip_prefix("/").expect("absolute"))
}

/// The tree id of the directory `path` in `done`'s snapshot (the root tree
/// also records the directories above it, which other tests change).
fn tree_of(repo: &Repository, done: &BackupOutcome, path: &Path) -> BlobId {
    let mut id = done.snapshot.tree;
    for part in path.strip_prefix("/").expect("absolute").components() {
        let tree = repo.read_tree(&id).expect("tree");
        let node = tree
            .find(part.as_os_str().as_bytes())
            .expect("path in snapshot");
        let NodeKind::Dir { subtree } = &node.kind else {
            panic!("{} is not a directory", path.display());
        };
        id = *subtree;
    }
    id
}

fn cache_file(cache: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = fs::read_dir(cache)
        .expect("cache dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "one repository, one cache: {dirs:?}");
    dirs.into_iter().next().expect("one").join("files")
}

#[test]
fn files_cache_reuses_unchanged_directories_and_sees_every_change() {
    let d = Dir::new();
    let src = d.join("src");
    let a = src.join("a");
    fs::create_dir_all(a.join("deep")).expect("mkdir");
    fs::create_dir_all(src.join("b")).expect("mkdir");
    for i in 0..20 {
        fs::write(a.join(format!("{i}")), format!("file {i} ").repeat(50)).expect("write");
    }
    fs::write(a.join("deep/x"), b"deep file").expect("write");
    fs::write(src.join("top.txt"), b"top").expect("write");
    std::os::unix::fs::symlink("../a/1", src.join("b/link")).expect("symlink");
    std::thread::sleep(SETTLE);
    let repo = init_repo(&d.join("repo"));
    let cache = d.join("cache");

    let first = backup(&repo, &[&src], &cache, false);
    assert_eq!(first.dirs_reused, 0, "nothing cached yet");
    let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode();
    assert_eq!(mode(&cache_file(&cache)) & 0o777, 0o600);
    assert_eq!(
        mode(cache_file(&cache).parent().expect("dir")) & 0o777,
        0o700
    );

    // Nothing changed: every directory (src, a, a/deep, b) comes from the
    // cache, nothing is read, and the tree is the same.
    let same = backup(&repo, &[&src], &cache, false);
    assert_eq!(same.dirs_reused, 4);
    assert_eq!(same.snapshot.summary.bytes_read, 0);
    assert_eq!(same.snapshot.summary.files_unchanged, 22);
    assert_eq!(same.snapshot.summary.dirs, first.snapshot.summary.dirs);
    assert_eq!(tree_of(&repo, &same, &src), tree_of(&repo, &first, &src));

    // --force reads everything again and reuses nothing.
    let forced = backup(&repo, &[&src], &cache, true);
    assert_eq!(forced.dirs_reused, 0);
    assert_eq!(
        forced.snapshot.summary.bytes_read,
        first.snapshot.summary.bytes_read
    );
    assert_eq!(tree_of(&repo, &forced, &src), tree_of(&repo, &first, &src));

    // New content of the same size with the old mtime put back: the ctime
    // gives it away. Only that file is read; a/deep and b are reused.
    let three = a.join("3");
    let old_mtime =
        filetime::FileTime::from_last_modification_time(&fs::metadata(&three).expect("stat"));
    let new_content = "FILE 3 ".repeat(50);
    fs::write(&three, &new_content).expect("rewrite");
    filetime::set_file_mtime(&three, old_mtime).expect("set mtime");
    let changed = backup(&repo, &[&src], &cache, false);
    assert_eq!(changed.dirs_reused, 2);
    assert_eq!(
        changed.snapshot.summary.bytes_read,
        new_content.len() as u64
    );
    let out = restored(&repo, &changed, &d.join("out1"), &src);
    assert_eq!(
        fs::read_to_string(out.join("a/3")).expect("read"),
        new_content
    );

    // A mode change, a new file and a removed one.
    fs::set_permissions(a.join("deep/x"), fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::write(src.join("b/new"), b"new file").expect("write");
    fs::remove_file(src.join("top.txt")).expect("remove");
    let more = backup(&repo, &[&src], &cache, false);
    let out = restored(&repo, &more, &d.join("out2"), &src);
    assert_eq!(mode(&out.join("a/deep/x")) & 0o777, 0o600);
    assert_eq!(fs::read(out.join("b/new")).expect("read"), b"new file");
    assert!(!out.join("top.txt").exists());
    assert_eq!(
        fs::read_link(out.join("b/link")).expect("link"),
        Path::new("../a/1")
    );
    assert_eq!(
        fs::read_to_string(out.join("a/3")).expect("read"),
        new_content
    );

    // Another set of paths has no parent snapshot; the cache still knows
    // its directories, so nothing is read.
    std::thread::sleep(SETTLE);
    backup(&repo, &[&src], &cache, false);
    let sub = backup(&repo, &[&a], &cache, false);
    assert!(
        sub.snapshot.parent.is_none(),
        "no snapshot of these paths yet"
    );
    assert_eq!(sub.dirs_reused, 2, "a and a/deep");
    assert_eq!(sub.snapshot.summary.bytes_read, 0);

    // A damaged cache is reported, ignored and rebuilt.
    let file = cache_file(&cache);
    let mut bytes = fs::read(&file).expect("read cache");
    if let Some(b) = bytes.last_mut() {
        *b ^= 0x40;
    }
    fs::write(&file, &bytes).expect("damage cache");
    let damaged = backup(&repo, &[&src], &cache, false);
    assert_eq!(damaged.dirs_reused, 0);
    assert!(
        damaged.warnings.iter().any(|w| w.contains("files cache")),
        "{:?}",
        damaged.warnings
    );
    assert_eq!(
        damaged.snapshot.summary.bytes_read, 0,
        "the parent snapshot still serves"
    );
    let rebuilt = backup(&repo, &[&src], &cache, false);
    assert_eq!(rebuilt.dirs_reused, 4);

    // Snapshots forgotten but nothing pruned: every blob is still there,
    // which the index files, all still present, prove; the entries hold.
    forget_all(&repo);
    let forgotten = backup(&repo, &[&src], &cache, false);
    assert_eq!(forgotten.dirs_reused, 4);
    assert_eq!(forgotten.snapshot.summary.bytes_read, 0);
    assert_verifies(&repo);

    // Forgotten and pruned: the data is gone and so are the index files
    // the cache recorded; entries whose snapshot is gone no longer count,
    // and with no parent either, everything is read again.
    forget_all(&repo);
    let pruned = cairn::prune(&repo, &cairn::PruneOptions::default()).expect("prune");
    assert!(pruned.packs_deleted > 0, "{pruned:?}");
    let orphaned = backup(&repo, &[&src], &cache, false);
    assert_eq!(orphaned.dirs_reused, 0);
    assert!(orphaned.snapshot.summary.bytes_read > 0);
    assert_eq!(orphaned.snapshot.summary.files_unchanged, 0);
    assert_verifies(&repo);
}

#[test]
fn files_cache_does_not_trust_entries_as_new_as_the_backup() {
    let d = Dir::new();
    let src = d.join("src");
    fs::create_dir_all(src.join("sub")).expect("mkdir");
    fs::write(src.join("sub/f"), b"just written").expect("write");
    let repo = init_repo(&d.join("repo"));
    let cache = d.join("cache");
    // Dated a little ahead, as a file written during the backup would be,
    // however slowly this machine gets to the backup.
    let ahead = filetime::FileTime::from_unix_time(jiff::Timestamp::now().as_second() + 600, 0);
    filetime::set_file_mtime(src.join("sub/f"), ahead).expect("mtime");
    // And the directory, so that however late the backup starts, `src`
    // holds an entry as new as it too (otherwise, once a second has passed,
    // `src` itself may rightly be reused while `sub` is not).
    filetime::set_file_mtime(src.join("sub"), ahead).expect("mtime");
    backup(&repo, &[&src], &cache, false);
    // The file's times are not before the first backup's start: a change
    // in the same timestamp tick could hide, so neither the directory nor
    // the file is trusted.
    let again = backup(&repo, &[&src], &cache, false);
    assert_eq!(again.dirs_reused, 0);
    assert_eq!(again.snapshot.summary.bytes_read, 12);
    assert_verifies(&repo);
}

#[test]
fn cli_cache_dir_and_no_cache() {
    let d = Dir::new();
    let src = d.join("src");
    fs::create_dir_all(src.join("sub")).expect("mkdir");
    fs::write(src.join("sub/f"), b"settled").expect("write");
    std::thread::sleep(SETTLE);
    let repo = d.join("repo");
    let home = d.join("home");
    let cache = d.join("cache");
    assert!(
        run(cairn(&repo, &home).args(["init", "--kdf-memory", "19"]))
            .status
            .success()
    );
    let from_cache = |extra: &[&str]| -> u64 {
        let o = run(cairn(&repo, &home)
            .env("CAIRN_CACHE_DIR", &cache)
            .args(["backup", "--json"])
            .args(extra)
            .arg(&src));
        assert!(o.status.success());
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
        v["dirs_from_cache"].as_u64().expect("dirs_from_cache")
    };
    assert_eq!(from_cache(&[]), 0);
    assert_eq!(from_cache(&[]), 2);
    assert_eq!(from_cache(&["--no-cache"]), 0);
    assert!(cache.join("CACHEDIR.TAG").is_file());
    assert!(
        !home.join(".cache/cairn").exists(),
        "CAIRN_CACHE_DIR replaces the default"
    );
    // Without CAIRN_CACHE_DIR the cache goes to the user's cache directory.
    let o = run(cairn(&repo, &home).args(["backup", "-q"]).arg(&src));
    assert!(o.status.success());
    assert!(home.join(".cache/cairn/CACHEDIR.TAG").is_file());
}

/// Forgets every snapshot (the audit log records it, so verify does not
/// report them missing).
fn forget_all(repo: &cairn::Repository) {
    let mut opts = cairn::ForgetOptions::default();
    opts.ids = repo
        .snapshots()
        .expect("list")
        .into_iter()
        .map(|(id, _)| id.to_hex())
        .collect();
    cairn::forget(repo, &opts).expect("forget");
}
