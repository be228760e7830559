//! Inspection without restoring: `diff` between real snapshots, `find`
//! across several snapshots sharing subtrees, and `dump` of one file,
//! through the library and through the binary.

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use cairn::{BlobId, Change, ChangeKind, DiffTotals, EntryType, NodeKind, PackId, Repository};

use super::util::{
    Dir, Rng, assert_verifies, backup_path, cairn, init_repo, open_repo, run, stderr, stdout,
};

fn bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

/// The tree of directory `path` in a snapshot whose root tree is `root`.
fn tree_at(repo: &Repository, root: &BlobId, path: &Path) -> BlobId {
    match cairn::find_node(repo, root, bytes(path))
        .expect("find")
        .expect("not the root")
        .kind
    {
        NodeKind::Dir { subtree } => subtree,
        other => panic!("{} is not a directory: {other:?}", path.display()),
    }
}

/// Every tree reachable from `root` with the path it is at (`""` for the
/// root).
fn trees_with_paths(repo: &Repository, root: &BlobId) -> Vec<(BlobId, Vec<u8>)> {
    let mut out = vec![(*root, Vec::new())];
    cairn::walk_tree(repo, root, b"", &mut |p, n| {
        if let NodeKind::Dir { subtree } = &n.kind {
            out.push((*subtree, p.to_vec()));
        }
    })
    .expect("walk");
    out
}

fn total_file_bytes(repo: &Repository, root: &BlobId) -> u64 {
    let mut total = 0;
    cairn::walk_tree(repo, root, b"", &mut |_, n| total += n.size).expect("walk");
    total
}

/// Flips one byte inside blob `id` where its pack stores it.
fn damage_blob(repo: &Repository, repo_path: &Path, id: &BlobId) {
    for sub in fs::read_dir(repo_path.join("data")).expect("data") {
        for f in fs::read_dir(sub.expect("sub").path()).expect("sub") {
            let p = f.expect("f").path();
            let pack: PackId = p
                .file_name()
                .and_then(|n| n.to_str())
                .expect("name")
                .parse()
                .expect("pack id");
            let size = fs::metadata(&p).expect("stat").len();
            let entries = repo.read_pack_header(&pack, size).expect("header");
            if let Some(e) = entries.iter().find(|e| e.id == *id) {
                let mut bytes = fs::read(&p).expect("read");
                bytes[e.offset as usize + e.length as usize / 2] ^= 0x01;
                fs::write(&p, bytes).expect("write");
                return;
            }
        }
    }
    panic!("blob {id} is in no pack");
}

type Row = (
    String,
    ChangeKind,
    Option<EntryType>,
    Option<EntryType>,
    u64,
    u64,
);

fn rows(changes: &[Change]) -> Vec<Row> {
    changes
        .iter()
        .map(|c| {
            (
                String::from_utf8_lossy(&c.path).into_owned(),
                c.kind,
                c.type_before,
                c.type_after,
                c.size_before,
                c.size_after,
            )
        })
        .collect()
}

/// A source tree, backed up, changed in every way diff distinguishes, and
/// backed up again.
struct Changed {
    d: Dir,
    src: PathBuf,
    repo: Repository,
    first: cairn::BackupOutcome,
    second: cairn::BackupOutcome,
}

fn changed_tree() -> Changed {
    let d = Dir::new();
    let src = d.join("src");
    for dir in ["", "sub", "olddir"] {
        fs::create_dir_all(src.join(dir)).expect("mkdir");
    }
    for (name, content) in [
        ("keep.txt", "keep"),
        ("mod.txt", "aaa"),
        ("chmod.txt", "perm"),
        ("gone.txt", "gone!"),
        ("tl", "file"),
        ("sub/deep.txt", "deep"),
        ("olddir/x.txt", "xx"),
    ] {
        fs::write(src.join(name), content).expect("write");
    }
    fs::set_permissions(src.join("chmod.txt"), fs::Permissions::from_mode(0o644)).expect("chmod");
    let repo = init_repo(&d.join("repo"));
    let first = backup_path(&repo, &src);

    fs::write(src.join("mod.txt"), "bbbbbb").expect("write");
    fs::set_permissions(src.join("chmod.txt"), fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::remove_file(src.join("gone.txt")).expect("rm");
    fs::write(src.join("new.txt"), "newfile").expect("write");
    fs::create_dir(src.join("newdir")).expect("mkdir");
    fs::write(src.join("newdir/inner.txt"), "inner").expect("write");
    fs::remove_dir_all(src.join("olddir")).expect("rm -r");
    fs::remove_file(src.join("tl")).expect("rm");
    std::os::unix::fs::symlink("keep.txt", src.join("tl")).expect("symlink");
    let second = backup_path(&repo, &src);
    Changed {
        d,
        src,
        repo,
        first,
        second,
    }
}

#[test]
fn diff_finds_every_kind_of_change_and_nothing_else() {
    use ChangeKind::{Added, Metadata, Modified, Removed, TypeChanged};
    use EntryType::{Dir as D, File as F, Symlink as L};
    let c = changed_tree();
    let repo = &c.repo;
    let a = tree_at(repo, &c.first.snapshot.tree, &c.src);
    let b = tree_at(repo, &c.second.snapshot.tree, &c.src);
    let changes = cairn::diff(repo, &a, &b).expect("diff");
    let s = |p: &str| p.to_owned();
    assert_eq!(
        rows(&changes),
        vec![
            (s("/chmod.txt"), Metadata, Some(F), Some(F), 4, 4),
            (s("/gone.txt"), Removed, Some(F), None, 5, 0),
            (s("/mod.txt"), Modified, Some(F), Some(F), 3, 6),
            (s("/new.txt"), Added, None, Some(F), 0, 7),
            (s("/newdir"), Added, None, Some(D), 0, 0),
            (s("/newdir/inner.txt"), Added, None, Some(F), 0, 5),
            (s("/olddir"), Removed, Some(D), None, 0, 0),
            (s("/olddir/x.txt"), Removed, Some(F), None, 2, 0),
            (s("/tl"), TypeChanged, Some(F), Some(L), 4, 0),
        ]
    );
    assert_eq!(
        DiffTotals::of(&changes),
        DiffTotals {
            files_added: 2,
            files_removed: 2,
            files_changed: 2,
            dirs_added: 1,
            dirs_removed: 1,
            dirs_changed: 0,
            others_added: 0,
            others_removed: 0,
            others_changed: 0,
            type_changed: 1,
            bytes_added: 7 + 5 + 3,
            bytes_removed: 5 + 2 + 4,
        }
    );

    // The other way round, every change is mirrored.
    let back = cairn::diff(repo, &b, &a).expect("diff");
    assert_eq!(back.len(), changes.len());
    for (x, y) in changes.iter().zip(&back) {
        let mirrored = match x.kind {
            Added => Removed,
            Removed => Added,
            k => k,
        };
        assert_eq!(
            (&y.path, y.kind, y.type_before, y.size_before, y.size_after),
            (&x.path, mirrored, x.type_after, x.size_after, x.size_before)
        );
    }

    // From the snapshots' roots: the same changes below the source, and
    // above it only the directories on the way, whose times move with
    // what happens in them.
    let (ra, rb) = (c.first.snapshot.tree, c.second.snapshot.tree);
    let whole = cairn::diff(repo, &ra, &rb).expect("diff");
    let src = bytes(&c.src);
    let (inside, outside): (Vec<&Change>, Vec<&Change>) = whole
        .iter()
        .partition(|ch| ch.path.starts_with(src) && ch.path.get(src.len()) == Some(&b'/'));
    let inside: Vec<Change> = inside
        .into_iter()
        .map(|ch| Change {
            path: ch.path.get(src.len()..).expect("below").to_vec(),
            ..ch.clone()
        })
        .collect();
    assert_eq!(inside, changes);
    for ch in outside {
        assert!(src.starts_with(&ch.path), "unexpected change {ch:?}");
        assert_eq!((ch.kind, ch.type_after), (Metadata, Some(D)), "{ch:?}");
    }
    let t = DiffTotals::of(&whole);
    assert_eq!(
        t.bytes_added as i64 - t.bytes_removed as i64,
        total_file_bytes(repo, &rb) as i64 - total_file_bytes(repo, &ra) as i64,
        "data added minus removed is the growth of the snapshot"
    );

    // A tree against itself, and an unchanged source backed up again.
    assert!(cairn::diff(repo, &ra, &ra).expect("diff").is_empty());
    assert!(cairn::diff(repo, &b, &b).expect("diff").is_empty());
    let third = backup_path(repo, &c.src);
    let b3 = tree_at(repo, &third.snapshot.tree, &c.src);
    assert!(cairn::diff(repo, &b, &b3).expect("diff").is_empty());
    assert_verifies(repo);
}

#[test]
fn diff_never_reads_a_subtree_both_sides_share() {
    let c = changed_tree();
    let (ra, rb) = (c.first.snapshot.tree, c.second.snapshot.tree);
    let a = tree_at(&c.repo, &ra, &c.src);
    let b = tree_at(&c.repo, &rb, &c.src);
    let before = cairn::diff(&c.repo, &a, &b).expect("diff");
    // `sub` did not change: both snapshots name the same tree, and diff
    // must not open it. Damaged, it would fail any read.
    let sub = tree_at(&c.repo, &rb, &c.src.join("sub"));
    assert_eq!(sub, tree_at(&c.repo, &ra, &c.src.join("sub")));
    damage_blob(&c.repo, &c.d.join("repo"), &sub);
    let repo = open_repo(&c.d.join("repo"));
    assert_eq!(cairn::diff(&repo, &a, &b).expect("diff"), before);
    assert_eq!(
        cairn::diff(&repo, &ra, &rb).expect("diff").len(),
        cairn::diff(&c.repo, &ra, &rb).expect("diff").len()
    );
    // Anything that does read it names the damaged tree.
    let all = cairn::FindPatterns::new(&["*"], false).expect("patterns");
    let e = cairn::find(&repo, &all, &[(c.second.id, rb)]).expect_err("damaged tree");
    assert!(
        e.is_damage() && e.to_string().contains(&sub.to_hex()),
        "{e}"
    );
    let old_dir = tree_at(&repo, &ra, &c.src.join("olddir"));
    let e = cairn::diff(&repo, &old_dir, &sub).expect_err("damaged tree");
    assert!(
        e.is_damage() && e.to_string().contains(&sub.to_hex()),
        "{e}"
    );
}

#[test]
fn cli_diff_text_and_json() {
    let c = changed_tree();
    let repo_path = c.d.join("repo");
    let (id1, id2) = (c.first.id.to_hex(), c.second.id.to_hex());
    let src = c.src.display().to_string();

    let o = run(cairn(&repo_path, c.d.path()).args(["diff", &id1, &id2]));
    assert!(o.status.success());
    let text = stdout(&o);
    for line in [
        format!("U         4 B  {src}/chmod.txt"),
        format!("-         5 B  {src}/gone.txt"),
        format!("M         6 B  {src}/mod.txt (3 B → 6 B)"),
        format!("+         7 B  {src}/new.txt"),
        format!("+              {src}/newdir/"),
        format!("+         5 B  {src}/newdir/inner.txt"),
        format!("-              {src}/olddir/"),
        format!("-         2 B  {src}/olddir/x.txt"),
        format!("T              {src}/tl (file → symlink)"),
    ] {
        assert!(text.lines().any(|l| l == line), "missing line {line:?}");
    }
    assert!(!text.contains("keep.txt") && !text.contains("/sub"));
    let last = text.lines().last().expect("summary");
    assert!(
        last.starts_with("files: 2 added, 2 removed, 2 changed; dirs: 1 added, 1 removed,")
            && last.ends_with("type changed: 1; data: 15 B added, 11 B removed"),
        "{last}"
    );

    let o = run(cairn(&repo_path, c.d.path()).args(["diff", "--json", &id1, &id2]));
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["before"], id1.as_str());
    assert_eq!(v["totals"]["files_added"], 2);
    let changes = v["changes"].as_array().expect("list");
    let tl = changes
        .iter()
        .find(|c| c["path"] == format!("{src}/tl").as_str())
        .expect("tl");
    assert_eq!(tl["change"], "type_changed");
    assert_eq!(tl["type_before"], "file");
    assert_eq!(tl["type_after"], "symlink");
    assert_eq!(tl["size_before"], 4);

    let o = run(cairn(&repo_path, c.d.path()).args(["diff", &id2, &id2]));
    assert!(o.status.success());
    assert_eq!(stdout(&o), "no differences\n");
    let o = run(cairn(&repo_path, c.d.path()).args(["diff", &id1, "nosuchsnapshot"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no snapshot matches 'nosuchsnapshot'"));
}

/// Two snapshots of a tree; the second adds `d/w.rs`, so `a`, `c` and
/// their subtrees are shared.
struct Two {
    d: Dir,
    src: PathBuf,
    repo: Repository,
    first: cairn::BackupOutcome,
    second: cairn::BackupOutcome,
}

fn two_snapshots() -> Two {
    let d = Dir::new();
    let src = d.join("src");
    for dir in ["a/b", "c"] {
        fs::create_dir_all(src.join(dir)).expect("mkdir");
    }
    for (name, content) in [
        ("a/x.rs", "fn x() {}"),
        ("a/b/y.rs", "fn y() {}"),
        ("c/z.txt", "zzz"),
        ("c/Upper.RS", "fn u() {}"),
        ("README.md", "# readme"),
    ] {
        fs::write(src.join(name), content).expect("write");
    }
    let repo = init_repo(&d.join("repo"));
    let first = backup_path(&repo, &src);
    fs::create_dir(src.join("d")).expect("mkdir");
    fs::write(src.join("d/w.rs"), "fn w() {}").expect("write");
    let second = backup_path(&repo, &src);
    Two {
        d,
        src,
        repo,
        first,
        second,
    }
}

#[test]
fn find_by_name_and_by_path_across_snapshots() {
    let t = two_snapshots();
    let repo = &t.repo;
    let snaps = [
        (t.second.id, t.second.snapshot.tree),
        (t.first.id, t.first.snapshot.tree),
    ];
    let src = t.src.display().to_string();
    let find = |patterns: &[&str], ignore_case: bool| {
        let p = cairn::FindPatterns::new(patterns, ignore_case).expect("patterns");
        cairn::find(repo, &p, &snaps).expect("find")
    };
    let listed = |o: &cairn::FindOutcome| -> Vec<(cairn::SnapshotId, String)> {
        o.found
            .iter()
            .map(|f| {
                let path = String::from_utf8_lossy(&f.path).into_owned();
                let rel = path.strip_prefix(&src).expect("below src").to_owned();
                (f.snapshot, rel)
            })
            .collect()
    };
    let (s1, s2) = (t.first.id, t.second.id);
    let r = |s, p: &str| (s, p.to_owned());

    // Names, at any depth, in both snapshots, newest first.
    let by_name = find(&["*.rs"], false);
    assert_eq!(
        listed(&by_name),
        vec![
            r(s2, "/a/b/y.rs"),
            r(s2, "/a/x.rs"),
            r(s2, "/d/w.rs"),
            r(s1, "/a/b/y.rs"),
            r(s1, "/a/x.rs"),
        ]
    );
    let x = by_name.found.get(1).expect("x.rs");
    assert_eq!(
        (x.entry.entry_type, x.entry.size),
        (EntryType::File, "fn x() {}".len() as u64)
    );
    // A tree is searched once however many snapshots hold it: with name
    // patterns, once per distinct tree id.
    let per_snapshot: Vec<Vec<(BlobId, Vec<u8>)>> = snaps
        .iter()
        .map(|(_, root)| trees_with_paths(repo, root))
        .collect();
    let ids: HashSet<BlobId> = per_snapshot.iter().flatten().map(|(id, _)| *id).collect();
    let all: usize = per_snapshot.iter().map(Vec::len).sum();
    assert_eq!(by_name.trees_searched, ids.len() as u64);
    assert!(ids.len() < all, "the snapshots share subtrees");

    // Letters in either case.
    let ci = find(&["*.rs"], true);
    assert!(listed(&ci).contains(&r(s1, "/c/Upper.RS")));
    assert_eq!(ci.found.len(), by_name.found.len() + 2);

    // Paths: a pattern with a slash matches at any depth, `*` stays within
    // one directory, `**` crosses them, a leading `/` anchors at the root.
    let by_path = find(&["b/*.rs"], false);
    assert_eq!(
        listed(&by_path),
        vec![r(s2, "/a/b/y.rs"), r(s1, "/a/b/y.rs")]
    );
    let pairs: HashSet<(BlobId, Vec<u8>)> = per_snapshot.into_iter().flatten().collect();
    assert_eq!(by_path.trees_searched, pairs.len() as u64);
    assert_eq!(
        listed(&find(&["src/a/*"], false)),
        vec![
            r(s2, "/a/b"),
            r(s2, "/a/x.rs"),
            r(s1, "/a/b"),
            r(s1, "/a/x.rs")
        ]
    );
    assert_eq!(
        listed(&find(&["src/**/*.txt", "README.*"], false)),
        vec![
            r(s2, "/README.md"),
            r(s2, "/c/z.txt"),
            r(s1, "/README.md"),
            r(s1, "/c/z.txt")
        ]
    );
    assert_eq!(
        listed(&find(&[&format!("{src}/d/*")], false)),
        vec![r(s2, "/d/w.rs")]
    );
    assert!(find(&["/a/*.rs"], false).found.is_empty(), "anchored at /");
    assert!(find(&["*.nothing"], false).found.is_empty());

    let e = cairn::FindPatterns::new(&["a[b"], false).expect_err("bad glob");
    assert!(e.to_string().contains("'a[b'"), "{e}");
    assert_verifies(repo);
}

#[test]
fn cli_find() {
    let t = two_snapshots();
    let repo_path = t.d.join("repo");
    let src = t.src.display().to_string();
    let o = run(cairn(&repo_path, t.d.path()).args(["find", "*.rs"]));
    assert!(o.status.success());
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "a header and five matches");
    assert!(lines[0].starts_with("snapshot"));
    let (s1, s2) = (t.first.id.short(), t.second.id.short());
    assert!(lines[1].starts_with(&s2) && lines[1].ends_with(&format!("{src}/a/b/y.rs")));
    assert!(lines[5].starts_with(&s1) && lines[5].ends_with(&format!("{src}/a/x.rs")));
    assert!(lines[1].contains(" file ") && lines[1].contains(" 9 B "));
    assert!(stderr(&o).contains("5 match(es) in 2 of 2 snapshot(s)"));

    let o = run(cairn(&repo_path, t.d.path()).args([
        "find",
        "--snapshot",
        &t.first.id.to_hex()[..12],
        "--json",
        "*.rs",
        "z.*",
    ]));
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let items = v.as_array().expect("list");
    assert_eq!(items.len(), 3);
    assert!(
        items
            .iter()
            .all(|i| i["snapshot"] == t.first.id.to_hex().as_str())
    );
    assert_eq!(items[2]["path"], format!("{src}/c/z.txt").as_str());
    assert_eq!(items[2]["type"], "file");
    assert_eq!(items[2]["size"], 3);

    for args in [
        vec!["find", "*.nothing"],
        vec!["find", "--host", "no-such-host", "*.rs"],
    ] {
        let o = run(cairn(&repo_path, t.d.path()).args(&args));
        assert_eq!(o.status.code(), Some(0), "nothing found is not an error");
        assert_eq!(stdout(&o), "");
        assert!(stderr(&o).contains("no matches"));
    }
    let o = run(cairn(&repo_path, t.d.path()).args(["find", "--json", "*.nothing"]));
    assert!(o.status.success());
    assert_eq!(stdout(&o).trim(), "[]");
    let o = run(cairn(&repo_path, t.d.path()).args(["find", "a[b"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("invalid pattern 'a[b'"));
    let o = run(cairn(&repo_path, t.d.path()).args(["find"]));
    assert_eq!(o.status.code(), Some(2), "a pattern is required");
}

/// A snapshot with a file of several chunks.
struct Big {
    d: Dir,
    src: PathBuf,
    repo: Repository,
    data: Vec<u8>,
    done: cairn::BackupOutcome,
}

fn big_file() -> Big {
    let d = Dir::new();
    let src = d.join("src");
    fs::create_dir(&src).expect("mkdir");
    let data = Rng::seeded(7).bytes(5 << 20);
    fs::write(src.join("big.bin"), &data).expect("write");
    std::os::unix::fs::symlink("big.bin", src.join("link")).expect("symlink");
    let repo = init_repo(&d.join("repo"));
    let done = backup_path(&repo, &src);
    Big {
        d,
        src,
        repo,
        data,
        done,
    }
}

#[test]
fn dump_streams_a_file_and_refuses_anything_else() {
    let b = big_file();
    let root = b.done.snapshot.tree;
    let path = b.src.join("big.bin");
    let node = cairn::find_node(&b.repo, &root, bytes(&path))
        .expect("find")
        .expect("node");
    let NodeKind::File { content } = &node.kind else {
        panic!("not a file")
    };
    assert!(content.len() >= 4, "several chunks: {}", content.len());
    let mut out = Vec::new();
    let n = cairn::dump(&b.repo, bytes(&path), &node, &mut out).expect("dump");
    assert_eq!(n, b.data.len() as u64);
    assert!(out == b.data, "dumped bytes differ");

    let dir = cairn::find_node(&b.repo, &root, bytes(&b.src))
        .expect("find")
        .expect("node");
    let e = cairn::dump(&b.repo, bytes(&b.src), &dir, &mut Vec::new()).expect_err("a directory");
    let msg = e.to_string();
    // The library says what is wrong; the advice to restore it with
    // `--include` is the command line's (`cli_dump`).
    assert!(
        matches!(&e, cairn::Error::NotAFile { entry: "dir", .. })
            && e.kind() == cairn::ErrorKind::InvalidInput
            && msg.contains(&format!("{} is a directory", b.src.display()))
            && !msg.contains("--"),
        "{msg}"
    );
    let link = b.src.join("link");
    let node = cairn::find_node(&b.repo, &root, bytes(&link))
        .expect("find")
        .expect("node");
    let e = cairn::dump(&b.repo, bytes(&link), &node, &mut Vec::new()).expect_err("a symlink");
    assert!(e.to_string().contains("is a symlink"), "{e}");
    assert!(!e.to_string().contains("--"), "{e}");
    assert_verifies(&b.repo);
}

#[test]
fn cli_dump() {
    let b = big_file();
    let repo_path = b.d.join("repo");
    let big = b.src.join("big.bin").display().to_string();
    let o = run(cairn(&repo_path, b.d.path()).args(["dump", "latest", &big]));
    assert!(o.status.success());
    assert!(o.stdout == b.data, "dumped bytes differ");
    assert_eq!(stderr(&o), "");

    let src = b.src.display().to_string();
    let o = run(cairn(&repo_path, b.d.path()).args(["dump", "latest", &src]));
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    let err = stderr(&o);
    assert_eq!(
        err,
        format!(
            "cairn: error: {src} is a directory, and dump writes one file: to get a directory, use `cairn restore SNAPSHOT --target DIR --include {src}`\n"
        )
    );
    let missing = format!("{src}/no-such-file");
    let o = run(cairn(&repo_path, b.d.path()).args(["dump", "latest", &missing]));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(&format!("{missing} is not in this snapshot")));
    let o = run(cairn(&repo_path, b.d.path()).args(["dump", "latest", "/"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("root directory"));
}

#[test]
fn cli_dump_into_a_pipe_closed_early() {
    let b = big_file();
    let big = b.src.join("big.bin");
    let mut child = cairn(&b.d.join("repo"), b.d.path())
        .args(["dump", "latest"])
        .arg(&big)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Read a little, as `head -c` would, then go away: cairn still has
    // megabytes to write into a pipe that holds 64 KiB at most.
    let mut head = vec![0u8; 4096];
    child
        .stdout
        .take()
        .expect("stdout")
        .read_exact(&mut head)
        .expect("read");
    assert_eq!(head, b.data[..4096]);
    let o = child.wait_with_output().expect("wait");
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err, "", "no error message for a reader that left");
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn dump_names_a_damaged_chunk() {
    let b = big_file();
    let path = b.src.join("big.bin");
    let node = cairn::find_node(&b.repo, &b.done.snapshot.tree, bytes(&path))
        .expect("find")
        .expect("node");
    let NodeKind::File { content } = &node.kind else {
        panic!("not a file")
    };
    let victim = content[1];
    let repo_path = b.d.join("repo");
    damage_blob(&b.repo, &repo_path, &victim);

    let repo = open_repo(&repo_path);
    let mut out = Vec::new();
    let e = cairn::dump(&repo, bytes(&path), &node, &mut out).expect_err("damaged");
    assert!(e.is_damage(), "{e}");
    assert!(e.to_string().contains(&victim.to_hex()), "{e}");
    assert!(out.len() < b.data.len(), "stopped at the damaged chunk");

    let o = run(cairn(&repo_path, b.d.path())
        .args(["dump", "latest"])
        .arg(&path));
    assert_eq!(o.status.code(), Some(3), "damage has its exit code");
    assert!(stderr(&o).contains(&victim.to_hex()));
}

#[test]
fn names_that_are_not_utf8() {
    let d = Dir::new();
    let src = d.join("src");
    fs::create_dir(&src).expect("mkdir");
    let repo = init_repo(&d.join("repo"));
    let first = backup_path(&repo, &src);
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.rs");
    fs::write(src.join(name), "fn cafe() {}").expect("write");
    let second = backup_path(&repo, &src);
    let mut raw = bytes(&src).to_vec();
    raw.extend_from_slice(b"/caf\xe9.rs");

    let p = cairn::FindPatterns::new(&["caf?.rs", "*/caf*"], false).expect("patterns");
    let found = cairn::find(&repo, &p, &[(second.id, second.snapshot.tree)]).expect("find");
    assert_eq!(found.found.len(), 1);
    assert_eq!(found.found[0].path, raw, "paths stay raw bytes");
    let a = tree_at(&repo, &first.snapshot.tree, &src);
    let b = tree_at(&repo, &second.snapshot.tree, &src);
    let changes = cairn::diff(&repo, &a, &b).expect("diff");
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].path, b"/caf\xe9.rs");

    // Text and JSON show the name lossily; dump takes it raw.
    let lossy = format!("{}/caf\u{FFFD}.rs", src.display());
    let o = run(cairn(&d.join("repo"), d.path()).args(["find", "--json", "*.rs"]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v[0]["path"], lossy.as_str());
    let o = run(cairn(&d.join("repo"), d.path()).args([
        "diff",
        &first.id.to_hex(),
        &second.id.to_hex(),
    ]));
    assert!(stdout(&o).contains(&format!("+        12 B  {lossy}\n")));
    let o = run(cairn(&d.join("repo"), d.path())
        .args(["dump", "latest"])
        .arg(std::ffi::OsStr::from_bytes(&raw)));
    assert!(o.status.success());
    assert_eq!(o.stdout, b"fn cafe() {}");
    assert_verifies(&repo);
}

/// A path that is not in a snapshot is a reference that matches nothing:
/// kind NotFound (HTTP 404), not invalid input (it was 400); the command
/// line's exit code stays 1. A path through a file is not there either.
#[test]
fn a_path_not_in_the_snapshot_is_not_found() {
    let b = big_file();
    let root = b.done.snapshot.tree;
    for missing in [
        b.src.join("no-such-file"),
        b.src.join("big.bin/inside-a-file"),
    ] {
        let e = cairn::find_node(&b.repo, &root, bytes(&missing)).expect_err("not there");
        assert_eq!(e.kind(), cairn::ErrorKind::NotFound, "{e}");
        assert!(
            e.to_string().contains(&missing.display().to_string()),
            "{e}"
        );
    }
    let dir = cairn::find_node(&b.repo, &root, bytes(&b.src))
        .expect("find")
        .expect("node");
    let e = cairn::file_content(&b.repo, &dir).expect_err("a directory");
    assert_eq!(e.kind(), cairn::ErrorKind::InvalidInput, "{e}");
}

/// A restore of paths none of which is in the snapshot names nothing:
/// NotFound (through the HTTP API 404, not 400), exit code 1 as before.
#[test]
fn a_restore_of_paths_not_in_the_snapshot_is_not_found() {
    let b = big_file();
    let target = b.d.join("restored");
    let mut opts = cairn::RestoreOptions::new(&target);
    // Not below any path backed up (a path below one brings its
    // directories along).
    opts.includes = vec![std::path::PathBuf::from("/no/such/path")];
    let e = cairn::restore(&b.repo, &b.done.snapshot, &opts, &cairn::NoProgress)
        .expect_err("nothing to restore");
    assert_eq!(e.kind(), cairn::ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("is in the snapshot"), "{e}");
}
