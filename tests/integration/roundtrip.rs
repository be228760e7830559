//! Round trips through backup and restore: random trees with every kind of
//! entry and metadata cairn records, a real tree of thousands of files, and
//! deduplication.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use cairn::{BackupOptions, InitOptions, MemoryBackend, NoProgress, Repository, RestoreOptions};
use filetime::FileTime;
use proptest::prelude::*;

use super::util::{
    Dir, Store, assert_verifies, backup_path, init_at, init_repo, on_each_store, open_at,
    open_repo, repo_location,
};

/// Everything about one entry that a restore must reproduce.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    content: Option<Vec<u8>>,
    target: Option<Vec<u8>>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Index of the first path sharing this inode (hard links).
    link_group: Option<PathBuf>,
}

/// Describes every entry below `root`, keyed by path relative to it.
fn describe(root: &Path) -> HashMap<PathBuf, Entry> {
    let mut out = HashMap::new();
    let mut inodes: HashMap<u64, PathBuf> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = root.join(&rel);
        let meta = fs::symlink_metadata(&path).expect("lstat");
        let ft = meta.file_type();
        let mut names: Vec<_> = if ft.is_dir() {
            fs::read_dir(&path)
                .expect("read_dir")
                .map(|e| e.expect("entry").file_name())
                .collect()
        } else {
            Vec::new()
        };
        names.sort();
        for n in names {
            stack.push(rel.join(n));
        }
        let link_group = (ft.is_file() && meta.nlink() > 1).then(|| {
            inodes
                .entry(meta.ino())
                .or_insert_with(|| rel.clone())
                .clone()
        });
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = xattr::list(&path)
            .map(|names| {
                names
                    .filter_map(|n| Some((n.as_bytes().to_vec(), xattr::get(&path, &n).ok()??)))
                    .collect()
            })
            .unwrap_or_default();
        xattrs.sort();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else {
            "other"
        };
        out.insert(
            rel.clone(),
            Entry {
                kind,
                mode: if ft.is_symlink() {
                    0
                } else {
                    meta.mode() & 0o7777
                },
                uid: meta.uid(),
                gid: meta.gid(),
                size: if ft.is_file() { meta.len() } else { 0 },
                mtime: (meta.mtime(), meta.mtime_nsec()),
                content: ft.is_file().then(|| fs::read(&path).expect("read")),
                target: ft.is_symlink().then(|| {
                    fs::read_link(&path)
                        .expect("readlink")
                        .as_os_str()
                        .as_bytes()
                        .to_vec()
                }),
                xattrs,
                link_group,
            },
        );
    }
    out
}

/// Restores `snapshot` of `src` and asserts the result equals `src`.
fn assert_round_trip(repo: &Repository, src: &Path, snap: &cairn::Snapshot) {
    let out = Dir::new();
    let done =
        cairn::restore(repo, snap, &RestoreOptions::new(out.path()), &NoProgress).expect("restore");
    assert!(done.errors.is_empty(), "restore errors: {:?}", done.errors);
    let restored = out.path().join(src.strip_prefix("/").expect("absolute"));
    let want = describe(src);
    let got = describe(&restored);
    let mut keys: Vec<_> = want.keys().collect();
    keys.sort();
    for k in keys {
        let g = got
            .get(k)
            .unwrap_or_else(|| panic!("{} missing after restore", k.display()));
        assert_eq!(g, &want[k], "{} differs", k.display());
    }
    assert_eq!(got.len(), want.len(), "restore created extra entries");
    // Sparse files stay sparse: nothing was allocated for their holes.
    for (rel, e) in &want {
        if e.kind == "file" && rel.to_string_lossy().ends_with("-sparse") {
            let blocks = fs::metadata(restored.join(rel)).expect("stat").blocks() * 512;
            assert!(
                blocks < e.size / 2,
                "{} is not sparse ({blocks} bytes allocated of {})",
                rel.display(),
                e.size
            );
        }
    }
}

/// One entry of a generated tree.
#[derive(Debug, Clone)]
enum Gen {
    File { size: usize, seed: u8 },
    Empty,
    Sparse { size: u64 },
    Symlink { target: Vec<u8> },
    HardLink { to: usize },
    Dir,
    Fifo,
}

fn name_strategy() -> impl Strategy<Value = Vec<u8>> {
    // Raw bytes, including non-UTF-8, but never '/', NUL, "." or "..".
    prop::collection::vec(
        prop_oneof![
            Just(b'a'),
            Just(b'Z'),
            Just(b' '),
            Just(0xff_u8),
            Just(0xc3),
            Just(b'-'),
            1u8..=0x2e
        ],
        1..12,
    )
    .prop_filter("valid name", |n| {
        n != b"." && n != b".." && !n.contains(&b'/')
    })
}

fn gen_strategy() -> impl Strategy<Value = Gen> {
    prop_oneof![
        4 => (0usize..200_000, any::<u8>()).prop_map(|(size, seed)| Gen::File { size, seed }),
        1 => Just(Gen::Empty),
        1 => (1_000_000u64..3_000_000).prop_map(|size| Gen::Sparse { size }),
        1 => prop::collection::vec(any::<u8>().prop_filter("no nul", |b| *b != 0), 1..40).prop_map(|target| Gen::Symlink { target }),
        1 => (0usize..64).prop_map(|to| Gen::HardLink { to }),
        2 => Just(Gen::Dir),
        1 => Just(Gen::Fifo),
    ]
}

fn content(size: usize, seed: u8) -> Vec<u8> {
    // Half compressible text, half noise, so both storage paths run.
    let mut x = u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..size)
        .map(|i| {
            if (i / 4096) % 2 == 0 {
                b"cairn "[i % 6]
            } else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            }
        })
        .collect()
}

/// Builds a tree from generated entries; directories nest later entries.
fn build(root: &Path, entries: &[(Vec<u8>, Gen, u32, i64)]) {
    let mut dirs = vec![root.to_path_buf()];
    let mut files: Vec<PathBuf> = Vec::new();
    for (i, (name, g, mode, mtime)) in entries.iter().enumerate() {
        let parent = dirs[i % dirs.len()].clone();
        let mut name = name.clone();
        name.extend_from_slice(format!("-{i}").as_bytes());
        if matches!(g, Gen::Sparse { .. }) {
            name.extend_from_slice(b"-sparse");
        }
        let path = parent.join(OsStr::from_bytes(&name));
        match g {
            Gen::File { size, seed } => {
                fs::write(&path, content(*size, *seed)).expect("write");
                files.push(path.clone());
            }
            Gen::Empty => {
                fs::write(&path, b"").expect("write");
                files.push(path.clone());
            }
            Gen::Sparse { size } => {
                let mut f = fs::File::create(&path).expect("create");
                f.seek(SeekFrom::Start(size / 2)).expect("seek");
                f.write_all(b"middle").expect("write");
                f.set_len(*size + 6).expect("set_len");
                files.push(path.clone());
            }
            Gen::Symlink { target } => {
                std::os::unix::fs::symlink(OsStr::from_bytes(target), &path).expect("symlink");
                let t = FileTime::from_unix_time(*mtime, 123);
                filetime::set_symlink_file_times(&path, t, t).expect("lutimes");
                continue;
            }
            Gen::HardLink { to } => {
                if files.is_empty() {
                    continue;
                }
                let target = &files[to % files.len()];
                fs::hard_link(target, &path).expect("link");
                continue;
            }
            Gen::Dir => {
                fs::create_dir(&path).expect("mkdir");
                dirs.push(path.clone());
            }
            Gen::Fifo => {
                nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o644))
                    .expect("mkfifo");
            }
        }
        // Odd modes, including setgid and sticky bits; directories stay
        // writable so the tree can be built and removed.
        let m = if matches!(g, Gen::Dir) {
            mode | 0o700
        } else {
            *mode
        };
        fs::set_permissions(&path, fs::Permissions::from_mode(m)).expect("chmod");
        if i % 3 == 0 && !matches!(g, Gen::Fifo) {
            xattr::set(&path, format!("user.cairn{i}"), &name).expect("setxattr");
        }
        let t = FileTime::from_unix_time(*mtime, (i as u32 * 7919) % 1_000_000_000);
        filetime::set_symlink_file_times(&path, t, t).expect("utimes");
    }
    // Directory times last: creating entries changes them.
    for (i, d) in dirs.iter().enumerate().skip(1).rev() {
        let t = FileTime::from_unix_time(1_600_000_000 + i as i64, 42);
        filetime::set_file_times(d, t, t).expect("utimes");
    }
}

fn small_chunk_repo() -> &'static Repository {
    static REPO: OnceLock<Repository> = OnceLock::new();
    REPO.get_or_init(|| {
        let mut opts = InitOptions::default();
        // Small chunks so that modest files span many of them.
        opts.chunker = cairn::ChunkerParams {
            min_size: 2048,
            avg_size: 8192,
            max_size: 32768,
            normalization: 1,
        };
        opts.pack_target_size = Some(1 << 20);
        Repository::init(Arc::new(MemoryBackend::new()), Some(b"pw"), &opts).expect("init")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn random_trees_round_trip(
        entries in prop::collection::vec(
            (name_strategy(), gen_strategy(), prop_oneof![Just(0o644u32), Just(0o600), Just(0o755), Just(0o4755), Just(0o2711), Just(0o1777), Just(0o000)], 0i64..2_000_000_000),
            0..60,
        )
    ) {
        let src = Dir::new();
        build(src.path(), &entries);
        let repo = small_chunk_repo();
        let done = cairn::backup(repo, &BackupOptions::new(vec![src.path().to_path_buf()]), &NoProgress).expect("backup");
        assert_round_trip(repo, src.path(), &done.snapshot);
        assert_verifies(repo);
    }
}

/// Writes `n` files of varied sizes into a nested tree.
fn many_files(root: &Path, n: usize) -> u64 {
    let mut total = 0;
    for i in 0..n {
        let dir = root.join(format!("d{}/e{}", i % 37, i % 11));
        fs::create_dir_all(&dir).expect("mkdir");
        let data = content(i * 37 % 9000, (i % 251) as u8);
        total += data.len() as u64;
        fs::write(dir.join(format!("file-{i}.txt")), data).expect("write");
    }
    total
}

// The round trips below run on a local repository and on one in the S3
// test cluster.
on_each_store!(
    tree_of_five_thousand_files_round_trips,
    unchanged_tree_and_copied_file_add_almost_nothing
);

fn tree_of_five_thousand_files_round_trips(store: Store) {
    let src = Dir::new();
    many_files(src.path(), 5000);
    let dir = Dir::new();
    let location = repo_location(store, &dir, "repo");
    let repo = init_at(&location, &InitOptions::default());
    let done = backup_path(&repo, src.path());
    assert_eq!(done.snapshot.summary.files_new, 5000);
    drop(repo);
    let repo = open_at(&location);
    assert_round_trip(&repo, src.path(), &done.snapshot);
    assert_verifies(&repo);
}

fn unchanged_tree_and_copied_file_add_almost_nothing(store: Store) {
    let src = Dir::new();
    let tree_size = many_files(src.path(), 2000);
    let big = content(8 << 20, 7);
    fs::write(src.join("big.bin"), &big).expect("write");
    let tree_size = tree_size + big.len() as u64;
    // Files changed within a second of the parent backup are read again on
    // purpose ("racily clean"): let a little time pass first.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let dir = Dir::new();
    let repo = init_at(&repo_location(store, &dir, "repo"), &InitOptions::default());
    let opts = BackupOptions::new(vec![src.path().to_path_buf()]);
    let first = cairn::backup(&repo, &opts, &NoProgress).expect("first");
    assert!(first.snapshot.summary.bytes_stored > 0);

    let second = cairn::backup(&repo, &opts, &NoProgress).expect("second");
    let s = &second.snapshot.summary;
    assert_eq!(second.snapshot.parent, Some(first.id));
    assert_eq!(
        s.files_unchanged, 2001,
        "unchanged files are not read again"
    );
    assert_eq!(s.bytes_read, 0);
    assert!(
        s.bytes_stored * 100 < tree_size,
        "second backup stored {} of {tree_size}",
        s.bytes_stored
    );

    fs::create_dir(src.join("elsewhere")).expect("mkdir");
    fs::write(src.join("elsewhere/copy.bin"), &big).expect("write copy");
    let third = cairn::backup(&repo, &opts, &NoProgress).expect("third");
    let s = &third.snapshot.summary;
    assert_eq!(s.files_new, 1);
    assert_eq!(s.bytes_read, big.len() as u64);
    assert!(
        s.bytes_stored * 100 < big.len() as u64,
        "the copy stored {} bytes",
        s.bytes_stored
    );
    assert_verifies(&repo);
    assert_round_trip(&repo, src.path(), &third.snapshot);
}

#[test]
fn real_system_tree_round_trips() {
    // A real tree of the machine (C headers: about 8,000 files in 1,000
    // directories, with symlinks), compared byte for byte and metadata for
    // metadata after a backup and restore.
    let src = Path::new("/usr/include");
    let files = walk_count(src);
    assert!(
        files >= 5000,
        "/usr/include has only {files} files on this machine"
    );
    let store = Dir::new();
    let repo = init_repo(&store.join("repo"));
    let done = cairn::backup(
        &repo,
        &BackupOptions::new(vec![src.to_path_buf()]),
        &NoProgress,
    )
    .expect("backup");
    assert_round_trip(&repo, src, &done.snapshot);
    assert_verifies(&repo);
}

fn walk_count(dir: &Path) -> usize {
    fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => walk_count(&e.path()),
                    Ok(t) if t.is_file() => 1,
                    _ => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// More tiny files than one index file or one pack may list: the backup
/// writes index files as it goes, deduplicates across them, and restore
/// fills every file from packs read run by run.
#[test]
fn seventy_thousand_tiny_files_round_trip() {
    let src = Dir::new();
    let n = 70_000;
    for i in 0..n {
        let dir = src.path().join(format!("d{:03}", i % 500));
        if i < 500 {
            fs::create_dir_all(&dir).expect("mkdir");
        }
        // Distinct small contents, a few repeated and a few empty.
        let body = match i % 1000 {
            0 => String::new(),
            1 => "the same line in many files\n".to_owned(),
            _ => format!("tiny file number {i}\n"),
        };
        fs::write(dir.join(format!("f{i}")), body).expect("write");
    }
    let store = Dir::new();
    let repo = init_repo(&store.join("repo"));
    let done = backup_path(&repo, src.path());
    assert_eq!(done.snapshot.summary.files_new, n);
    let index_files = fs::read_dir(store.join("repo/index"))
        .expect("index dir")
        .count();
    assert!(
        index_files >= 2,
        "{n} blobs must have been split over index files, found {index_files}"
    );
    drop(repo);
    let repo = open_repo(&store.join("repo"));
    // Every blob of the first backup is found again across the index files.
    let mut opts = BackupOptions::new(vec![src.path().to_path_buf()]);
    opts.force = true;
    let again = cairn::backup(&repo, &opts, &NoProgress).expect("second backup");
    // Nothing new but, at most, the trees of the directories leading to the
    // source (other tests change /tmp's times meanwhile).
    assert!(
        again.snapshot.summary.blobs_added <= src.path().components().count() as u64,
        "{} blobs added",
        again.snapshot.summary.blobs_added
    );
    assert_round_trip(&repo, src.path(), &done.snapshot);
    assert_verifies(&repo);
}

/// Restoring over an earlier restore replaces every file with the
/// snapshot's content and mode, including read-only ones, and leaves no
/// temporary files behind.
#[test]
fn restore_replaces_existing_files_in_place() {
    let src = Dir::new();
    fs::create_dir_all(src.join("sub")).expect("mkdir");
    fs::write(src.join("a.txt"), b"snapshot content of a").expect("write");
    fs::write(src.join("sub/b.bin"), content(300_000, 3)).expect("write");
    fs::write(src.join("sub/ro.txt"), b"read-only in the snapshot").expect("write");
    fs::set_permissions(src.join("sub/ro.txt"), fs::Permissions::from_mode(0o444)).expect("chmod");
    let store = Dir::new();
    let repo = init_repo(&store.join("repo"));
    let done = backup_path(&repo, src.path());
    let out = Dir::new();
    let restored = out
        .path()
        .join(src.path().strip_prefix("/").expect("absolute"));
    fs::create_dir_all(restored.join("sub")).expect("mkdir");
    fs::write(
        restored.join("a.txt"),
        b"something else, and longer than before",
    )
    .expect("write");
    fs::write(restored.join("sub/b.bin"), b"short").expect("write");
    fs::write(restored.join("sub/ro.txt"), b"old").expect("write");
    fs::set_permissions(
        restored.join("sub/ro.txt"),
        fs::Permissions::from_mode(0o400),
    )
    .expect("chmod");
    let outcome = cairn::restore(
        &repo,
        &done.snapshot,
        &RestoreOptions::new(out.path()),
        &NoProgress,
    )
    .expect("restore");
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_eq!(describe(&restored), describe(src.path()));
    let leftovers: Vec<_> = ["", "sub"]
        .iter()
        .flat_map(|d| fs::read_dir(restored.join(d)).expect("read dir"))
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".cairn"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}
