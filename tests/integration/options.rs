//! Backup and restore options: excludes, includes, device nodes, listing.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use cairn::{BackupOptions, NoProgress, RestoreOptions};

use super::util::{Dir, assert_verifies, cairn, init_repo, run, stdout};

#[test]
fn excludes_follow_gitignore_syntax() {
    let d = Dir::new();
    let src = d.join("app");
    for p in ["src", "node_modules/x", "logs", ".next"] {
        fs::create_dir_all(src.join(p)).expect("mkdir");
    }
    for f in [
        "src/main.js",
        "node_modules/x/i.js",
        "logs/a.log",
        "app.log",
        ".next/b",
        "keep.txt",
        ".env",
    ] {
        fs::write(src.join(f), f).expect("write");
    }
    fs::write(d.join("excludes"), "# comment\n.next\n\n").expect("write");
    let repo = d.join("repo");
    assert!(run(cairn(&repo, d.path()).arg("init")).status.success());
    let o = run(cairn(&repo, d.path())
        .args([
            "backup",
            "--exclude",
            "node_modules",
            "--exclude",
            "*.log",
            "--exclude-file",
        ])
        .arg(d.join("excludes"))
        .arg(&src));
    assert!(o.status.success());
    let o = run(cairn(&repo, d.path()).args(["ls", "latest"]).arg(&src));
    let listed = stdout(&o);
    for kept in ["src/main.js", "keep.txt", ".env", "logs"] {
        assert!(listed.contains(kept), "{kept} kept");
    }
    for gone in ["node_modules", "a.log", "app.log", ".next"] {
        assert!(!listed.contains(gone), "{gone} excluded");
    }
}

#[test]
fn restore_include_restores_only_that_subtree() {
    let d = Dir::new();
    let src = d.join("app");
    fs::create_dir_all(src.join("config")).expect("mkdir");
    fs::create_dir_all(src.join("code")).expect("mkdir");
    fs::write(src.join("config/.env"), "SECRET=1").expect("write");
    fs::write(src.join("code/main.rs"), "fn main() {}").expect("write");
    let repo = d.join("repo");
    assert!(run(cairn(&repo, d.path()).arg("init")).status.success());
    assert!(
        run(cairn(&repo, d.path()).arg("backup").arg(&src))
            .status
            .success()
    );
    let target = d.join("out");
    let o = run(cairn(&repo, d.path())
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .arg("--include")
        .arg(src.join("config")));
    assert!(o.status.success());
    let restored = target.join(src.strip_prefix("/").expect("abs"));
    assert_eq!(
        fs::read(restored.join("config/.env")).expect("restored"),
        b"SECRET=1"
    );
    assert!(!restored.join("code").exists());
    // An include that is not in the snapshot is an error, not a silent no-op.
    let o = run(cairn(&repo, d.path())
        .args(["restore", "latest", "--target"])
        .arg(&target)
        .args(["--include", "/no/such/path"]));
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn device_nodes_are_recorded_and_restored_as_root() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: creating device nodes needs root");
        return;
    }
    let d = Dir::new();
    let src = d.join("dev");
    fs::create_dir(&src).expect("mkdir");
    let rdev = nix::sys::stat::makedev(1, 3);
    nix::sys::stat::mknod(
        &src.join("null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        rdev,
    )
    .expect("mknod");
    let repo = init_repo(&d.join("repo"));
    let done =
        cairn::backup(&repo, &BackupOptions::new(vec![src.clone()]), &NoProgress).expect("backup");
    let out = d.join("out");
    let r = cairn::restore(
        &repo,
        &done.snapshot,
        &RestoreOptions::new(&out),
        &NoProgress,
    )
    .expect("restore");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let meta = fs::symlink_metadata(out.join(src.strip_prefix("/").expect("abs")).join("null"))
        .expect("stat");
    assert!(meta.file_type().is_char_device());
    assert_eq!(meta.rdev(), rdev);
    let src_mode = fs::symlink_metadata(src.join("null")).expect("stat").mode();
    assert_eq!(meta.mode() & 0o7777, src_mode & 0o7777);
    assert_verifies(&repo);
}

#[test]
fn ls_json_lists_entries_with_metadata() {
    let d = Dir::new();
    let src = d.join("s");
    fs::create_dir(&src).expect("mkdir");
    fs::write(src.join("f.txt"), "12345").expect("write");
    std::os::unix::fs::symlink("f.txt", src.join("link")).expect("symlink");
    let repo = d.join("repo");
    assert!(run(cairn(&repo, d.path()).arg("init")).status.success());
    assert!(
        run(cairn(&repo, d.path()).arg("backup").arg(&src))
            .status
            .success()
    );
    let o = run(cairn(&repo, d.path())
        .args(["ls", "--json", "latest"])
        .arg(&src));
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let items = v.as_array().expect("array");
    let file = items
        .iter()
        .find(|i| i["path"].as_str().is_some_and(|p| p.ends_with("/f.txt")))
        .expect("f.txt");
    assert_eq!(file["size"], 5);
    assert_eq!(file["type"], "file");
    let link = items
        .iter()
        .find(|i| i["path"].as_str().is_some_and(|p| p.ends_with("/link")))
        .expect("link");
    assert_eq!(link["target"], "f.txt");
}

#[test]
fn restore_never_follows_a_symlink_already_in_the_target() {
    let d = Dir::new();
    let src = d.join("app");
    fs::create_dir_all(src.join("docs")).expect("mkdir");
    fs::write(src.join("docs/sudoers"), "owned").expect("write");
    fs::write(src.join("keep.txt"), "kept").expect("write");
    let repo = d.join("repo");
    assert!(run(cairn(&repo, d.path()).arg("init")).status.success());
    assert!(
        run(cairn(&repo, d.path()).arg("backup").arg(&src))
            .status
            .success()
    );
    // Before the restore, `docs` in the target is a symlink leading out.
    let target = d.join("out");
    let restored = target.join(src.strip_prefix("/").expect("abs"));
    fs::create_dir_all(&restored).expect("mkdir");
    let outside = d.join("outside");
    fs::create_dir(&outside).expect("mkdir");
    std::os::unix::fs::symlink(&outside, restored.join("docs")).expect("symlink");
    let o = run(cairn(&repo, d.path())
        .args(["restore", "latest", "--target"])
        .arg(&target));
    assert_eq!(o.status.code(), Some(3));
    assert!(super::util::stderr(&o).contains("not a directory"));
    assert!(
        !outside.join("sudoers").exists(),
        "restore wrote through the symlink"
    );
    assert_eq!(
        fs::read(restored.join("keep.txt")).expect("other files restored"),
        b"kept"
    );
}

#[test]
fn init_refuses_a_location_with_data_but_no_config() {
    let d = Dir::new();
    let repo = d.join("repo");
    assert!(run(cairn(&repo, d.path()).arg("init")).status.success());
    assert!(
        run(cairn(&repo, d.path())
            .arg("backup")
            .arg(d.join("repo/keys")))
        .status
        .success()
    );
    fs::remove_file(repo.join("config")).expect("lose the config");
    let keys_before = fs::read_dir(repo.join("keys")).expect("keys").count();
    let o = run(cairn(&repo, d.path()).arg("init"));
    assert_ne!(o.status.code(), Some(0));
    assert!(super::util::stderr(&o).contains("no config"));
    assert_eq!(
        fs::read_dir(repo.join("keys")).expect("keys").count(),
        keys_before,
        "keys kept"
    );
}

/// An unchanged file's extended attributes are carried over from the
/// parent without being read again; changing one changes the ctime, so the
/// file is examined again and the new value recorded.
#[test]
fn extended_attributes_follow_changes_across_incremental_backups() {
    let d = Dir::new();
    let src = d.join("src");
    fs::create_dir_all(&src).expect("mkdir");
    let file = src.join("tagged.txt");
    fs::write(&file, b"content").expect("write");
    if xattr::set(&file, "user.cairn-test", b"one").is_err() {
        eprintln!("skipped: this file system does not take user xattrs");
        return;
    }
    // Older than the "racily clean" window, so the next backup may trust
    // the recorded stat.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let repo = init_repo(&d.join("repo"));
    let opts = BackupOptions::new(vec![src.clone()]);
    let xattr_in = |snap: &cairn::Snapshot| {
        let rel = file.to_string_lossy().into_owned();
        let node = cairn::find_node(&repo, &snap.tree, rel.as_bytes())
            .expect("find")
            .expect("present");
        node.xattrs
            .iter()
            .find(|x| x.name == b"user.cairn-test")
            .map(|x| x.value.clone())
    };
    let first = cairn::backup(&repo, &opts, &NoProgress).expect("backup");
    assert_eq!(xattr_in(&first.snapshot).as_deref(), Some(&b"one"[..]));
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let second = cairn::backup(&repo, &opts, &NoProgress).expect("backup");
    assert_eq!(second.snapshot.summary.files_unchanged, 1);
    assert_eq!(xattr_in(&second.snapshot).as_deref(), Some(&b"one"[..]));
    xattr::set(&file, "user.cairn-test", b"two").expect("setxattr");
    let third = cairn::backup(&repo, &opts, &NoProgress).expect("backup");
    assert_eq!(third.snapshot.summary.files_unchanged, 0);
    assert_eq!(xattr_in(&third.snapshot).as_deref(), Some(&b"two"[..]));
    assert_verifies(&repo);
}
