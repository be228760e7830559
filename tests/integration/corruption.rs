//! Damaged repositories: what verify reports and what restore saves.
//!
//! Each test damages one thing (a flipped byte, a truncated pack, a deleted
//! pack, a deleted index file) and checks that `verify --read-data` names
//! the damaged objects and fails, and that `restore` restores every file it
//! can, names the ones it cannot, and fails. Every test runs on a local
//! repository and on one in the S3 test cluster.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use cairn::{
    Backend, BackupOptions, BlobId, FileKind, InitOptions, NoProgress, NodeKind, PackId, Repository,
};

use super::util::{
    Dir, PASSWORD, Rng, Store, backend_at, cairn, cairn_with_password, init_at, on_each_store,
    repo_location, run, stderr,
};

struct Fixture {
    dir: Dir,
    repo: PathBuf,
    src: PathBuf,
    /// Source file name → its content blobs.
    files: BTreeMap<String, Vec<BlobId>>,
}

/// A repository with small packs holding eight large files and some small
/// ones, so that damage to one pack leaves most files intact.
fn fixture(store: Store) -> Fixture {
    let dir = Dir::new();
    let src = dir.join("src");
    fs::create_dir(&src).expect("mkdir");
    for i in 0..8u64 {
        fs::write(
            src.join(format!("big-{i}.bin")),
            Rng::seeded(i + 1).bytes(1_500_000),
        )
        .expect("write");
    }
    for i in 0..20u64 {
        fs::write(
            src.join(format!("small-{i}.txt")),
            format!("small file {i}\n").repeat(50),
        )
        .expect("write");
    }
    let repo = repo_location(store, &dir, "repo");
    let mut opts = InitOptions::default();
    opts.pack_target_size = Some(1 << 20);
    let r = init_at(&repo, &opts);
    let done =
        cairn::backup(&r, &BackupOptions::new(vec![src.clone()]), &NoProgress).expect("backup");
    let mut files = BTreeMap::new();
    cairn::walk_tree(&r, &done.snapshot.tree, b"/", &mut |path, node| {
        if let NodeKind::File { content } = &node.kind {
            let name = String::from_utf8_lossy(path)
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            files.insert(name, content.clone());
        }
    })
    .expect("walk");
    Fixture {
        dir,
        repo,
        src,
        files,
    }
}

impl Fixture {
    fn backend(&self) -> Arc<dyn Backend> {
        backend_at(&self.repo)
    }

    fn open(&self) -> Repository {
        Repository::open(self.backend(), &mut || Ok(PASSWORD.as_bytes().to_vec())).expect("open")
    }

    /// The pack holding the first chunk of `file`, and every file with a
    /// blob in that pack.
    fn pack_of(&self, file: &str) -> (String, Vec<String>) {
        let (p, affected, _) = self.locate(file);
        (p, affected)
    }

    /// As [`Fixture::pack_of`], plus the offset of the chunk in the pack.
    fn locate(&self, file: &str) -> (String, Vec<String>, u64) {
        let r = self.open();
        let first = self.files[file][0];
        let mut packs = self.backend().list(FileKind::Pack).expect("list");
        packs.sort();
        let (pack, blobs, offset) = packs
            .into_iter()
            .find_map(|(name, size)| {
                let id: PackId = name.parse().ok()?;
                let entries = r.read_pack_header(&id, size).ok()?;
                let ids: Vec<BlobId> = entries.iter().map(|e| e.id).collect();
                let at = entries.iter().find(|e| e.id == first)?.offset;
                Some((name, ids, u64::from(at)))
            })
            .expect("pack of file");
        let affected = self
            .files
            .iter()
            .filter(|(_, content)| content.iter().any(|b| blobs.contains(b)))
            .map(|(n, _)| n.clone())
            .collect();
        (pack, affected, offset)
    }

    fn verify(&self) -> (Option<i32>, String) {
        let o = run(cairn(&self.repo, self.dir.path()).args(["verify", "--read-data"]));
        (o.status.code(), stderr(&o))
    }

    /// Restores, checks that every file outside `damaged` is identical,
    /// and returns the exit code and stderr.
    fn restore_checking(&self, damaged: &[String]) -> (Option<i32>, String) {
        let target = self.dir.join(&format!("restore-{}", damaged.len()));
        let o = run(cairn(&self.repo, self.dir.path())
            .args(["restore", "latest", "--target"])
            .arg(&target));
        let restored = target.join(self.src.strip_prefix("/").expect("abs"));
        for name in self.files.keys() {
            let got = fs::read(restored.join(name));
            if damaged.contains(name) {
                assert!(got.is_err(), "{name} was damaged but a file was restored");
                assert!(
                    stderr(&o).contains(name.as_str()),
                    "{name} is not named as damaged"
                );
            } else {
                assert_eq!(
                    got.expect("undamaged file restored"),
                    fs::read(self.src.join(name)).expect("src"),
                    "{name}"
                );
            }
        }
        // No temporary files are left behind.
        for e in fs::read_dir(&restored).expect("restored dir") {
            let n = e.expect("e").file_name();
            assert!(!n.to_string_lossy().starts_with('.'), "left over: {n:?}");
        }
        (o.status.code(), stderr(&o))
    }
}

on_each_store!(
    flipped_byte_in_a_pack,
    truncated_pack,
    deleted_pack,
    deleted_index_file
);

fn flipped_byte_in_a_pack(store: Store) {
    let f = fixture(store);
    let (pack, _, offset) = f.locate("big-3.bin");
    let b = f.backend();
    let mut bytes = b.read(FileKind::Pack, &pack).expect("read");
    bytes[offset as usize + 1000] ^= 0x40;
    b.write(FileKind::Pack, &pack, &bytes).expect("write");

    let (code, err) = f.verify();
    assert_eq!(code, Some(3));
    assert!(err.contains(&pack), "verify names the pack");
    assert!(
        err.contains(&f.files["big-3.bin"][0].to_hex()),
        "verify names the blob"
    );
    assert!(err.contains("big-3.bin"), "verify names the file");

    let (code, _) = f.restore_checking(&["big-3.bin".to_owned()]);
    assert_eq!(code, Some(3));
}

fn truncated_pack(store: Store) {
    let f = fixture(store);
    let (pack, affected) = f.pack_of("big-5.bin");
    let b = f.backend();
    let bytes = b.read(FileKind::Pack, &pack).expect("read");
    b.write(FileKind::Pack, &pack, &bytes[..bytes.len() / 3])
        .expect("truncate");

    let (code, err) = f.verify();
    assert_eq!(code, Some(3));
    assert!(err.contains(&pack), "verify names the pack");
    assert!(err.contains("truncated"), "verify says what is wrong");
    // Blobs that lie beyond the cut are lost; the pack's first blob (in the
    // first third) is still readable, so only the files with a blob beyond
    // the cut are damaged.
    let r = f.open();
    let damaged: Vec<String> = affected
        .into_iter()
        .filter(|name| f.files[name].iter().any(|b| r.read_blob(b).is_err()))
        .collect();
    assert!(!damaged.is_empty());
    let (code, _) = f.restore_checking(&damaged);
    assert_eq!(code, Some(3));
}

fn deleted_pack(store: Store) {
    let f = fixture(store);
    let (pack, affected) = f.pack_of("big-6.bin");
    f.backend().delete(FileKind::Pack, &pack).expect("rm");

    let (code, err) = f.verify();
    assert_eq!(code, Some(3));
    assert!(err.contains(&pack), "verify names the pack");
    assert!(err.contains("missing"));
    for name in &affected {
        assert!(err.contains(name.as_str()), "verify names {name}");
    }
    let (code, _) = f.restore_checking(&affected);
    assert_eq!(code, Some(3));

    // prune will not delete what it cannot prove unused: it stops, names
    // the pack and exits as damage does (3), not as a usage error.
    let packs = f.backend().list(FileKind::Pack).expect("list").len();
    let o = run(cairn(&f.repo, f.dir.path()).arg("prune"));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains(&pack), "prune names the pack");
    assert_eq!(f.backend().list(FileKind::Pack).expect("list").len(), packs);
}

fn deleted_index_file(store: Store) {
    let f = fixture(store);
    let b = f.backend();
    let (index, _) = b
        .list(FileKind::Index)
        .expect("index")
        .into_iter()
        .next()
        .expect("one");
    b.delete(FileKind::Index, &index).expect("rm");

    let (code, err) = f.verify();
    assert_eq!(code, Some(3));
    assert!(
        err.contains("in no index"),
        "verify says blobs are unindexed"
    );
    assert!(err.contains("big-0.bin"), "verify names the files");

    // The packs are intact: restore finds the data by reading their
    // headers, restores everything, and still reports the damage.
    let (code, err) = f.restore_checking(&[]);
    assert_eq!(code, Some(3));
    assert!(err.contains("index is damaged"));
}

/// A repository (made through the CLI) with `backups` snapshots of
/// `src/f`, whose content is `v0`, `v1`, ... in turn; returns the snapshot
/// ids oldest first.
fn cli_repo_with_snapshots(d: &Dir, backups: usize) -> Vec<String> {
    let repo = d.join("repo");
    let src = d.join("src");
    fs::create_dir_all(&src).expect("mkdir");
    assert!(run(cairn(&repo, d.path()).arg("init")).status.success());
    let mut ids = Vec::new();
    for i in 0..backups {
        fs::write(src.join("f"), format!("v{i}")).expect("write");
        let o = run(cairn(&repo, d.path()).args(["backup", "--json"]).arg(&src));
        assert!(o.status.success());
        let done: serde_json::Value = serde_json::from_slice(&o.stdout).expect("backup --json");
        ids.push(done["id"].as_str().expect("id").to_owned());
    }
    ids
}

#[test]
fn latest_refuses_a_damaged_newest_snapshot_unless_asked_to_skip_damaged_ones() {
    let d = Dir::new();
    let repo = d.join("repo");
    let ids = cli_repo_with_snapshots(&d, 2);
    let newest = d.join(&format!("repo/snapshots/{}", ids[1]));
    let mut bytes = fs::read(&newest).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&newest, &bytes).expect("flip");
    let named = format!("snapshots/{}", ids[1]);
    let in_target = |t: &std::path::Path| {
        t.join(d.join("src").strip_prefix("/").expect("abs"))
            .join("f")
    };

    // `latest` (restore, ls, dump) and a time fail loudly, naming the
    // file, and restore nothing: the damaged one may be the newest.
    let t1 = d.join("t1");
    let o = run(cairn(&repo, d.path())
        .args(["restore", "latest", "--target"])
        .arg(&t1));
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains(&named), "{}", stderr(&o));
    assert!(stderr(&o).contains("--skip-damaged"), "{}", stderr(&o));
    assert!(!in_target(&t1).exists(), "an older snapshot was restored");
    let o = run(cairn(&repo, d.path()).args(["ls", "latest"]));
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains(&named), "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "ls listed an older snapshot");
    let f = d.join("src/f");
    let o = run(cairn(&repo, d.path()).arg("dump").arg("latest").arg(&f));
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains(&named), "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "dump wrote an older snapshot's file");
    let now = jiff::Timestamp::now().to_string();
    let o = run(cairn(&repo, d.path())
        .args(["restore", "--at", &now, "--target"])
        .arg(&t1));
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains(&named), "{}", stderr(&o));
    assert!(!in_target(&t1).exists());

    // Asked for explicitly, the newest readable snapshot is used.
    let t2 = d.join("t2");
    let o = run(cairn(&repo, d.path())
        .args(["restore", "latest", "--skip-damaged", "--target"])
        .arg(&t2));
    assert!(o.status.success());
    assert_eq!(fs::read(in_target(&t2)).expect("restored"), b"v0");
    let o = run(cairn(&repo, d.path())
        .args(["dump", "latest", "--skip-damaged"])
        .arg(&f));
    assert!(o.status.success());
    assert_eq!(o.stdout, b"v0");
    // A readable snapshot named by id is not affected.
    let o = run(cairn(&repo, d.path()).args(["ls", &ids[0]]));
    assert!(o.status.success());
}

#[test]
fn a_damaged_or_missing_key_file_is_named_rather_than_taken_for_a_wrong_password() {
    let d = Dir::new();
    let repo = d.join("repo");
    cli_repo_with_snapshots(&d, 1);
    let keys = d.join("repo/keys");
    let mut names: Vec<String> = fs::read_dir(&keys)
        .expect("keys")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1);
    let name = names.remove(0);
    let key = keys.join(&name);
    let good = fs::read(&key).expect("read key");
    let named = format!("keys/{name}");

    let mut flipped = good.clone();
    let at = flipped.len() - 20;
    flipped[at] ^= 0x10;
    for (what, bytes) in [
        ("flipped", flipped),
        ("truncated", good[..good.len() / 2].to_vec()),
    ] {
        fs::write(&key, &bytes).expect("damage");
        let o = run(cairn(&repo, d.path()).arg("snapshots"));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(3), "{what}: {err}");
        assert!(
            err.contains(&named) && err.contains("damaged"),
            "{what}: {err}"
        );
        assert!(!err.contains("wrong password"), "{what}: {err}");
    }

    // Intact again: a wrong password is still a wrong password.
    fs::write(&key, &good).expect("repair");
    let o = run(cairn_with_password(&repo, "not the password", d.path()).arg("snapshots"));
    assert_eq!(o.status.code(), Some(12), "{}", stderr(&o));
    assert!(
        run(cairn(&repo, d.path()).arg("snapshots"))
            .status
            .success()
    );

    fs::remove_file(&key).expect("rm");
    let o = run(cairn(&repo, d.path()).arg("snapshots"));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("keys/") && err.contains("no key file"),
        "{err}"
    );
}

#[test]
fn verify_reports_a_snapshot_the_audit_log_saved_and_nobody_forgot() {
    let d = Dir::new();
    let repo = d.join("repo");
    let ids = cli_repo_with_snapshots(&d, 3);
    // One forgotten the proper way, one deleted behind cairn's back.
    assert!(
        run(cairn(&repo, d.path()).args(["forget", &ids[0]]))
            .status
            .success()
    );
    assert!(run(cairn(&repo, d.path()).arg("verify")).status.success());
    fs::remove_file(d.join(&format!("repo/snapshots/{}", ids[1]))).expect("rm");

    let o = run(cairn(&repo, d.path()).arg("verify"));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains(&ids[1]) && err.contains("missing"), "{err}");
    assert!(
        !err.contains(&ids[0]),
        "a forgotten snapshot is not missing: {err}"
    );
    assert!(!err.contains(&ids[2]), "{err}");

    // A full id the audit log never saved (a typo) is an error.
    let o = run(cairn(&repo, d.path()).args(["forget", &"ab".repeat(32)]));
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("no snapshot matches"), "{}", stderr(&o));
    // Forgetting it by its full id records that it is gone for good.
    let o = run(cairn(&repo, d.path()).args(["forget", &ids[1]]));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(cairn(&repo, d.path()).arg("verify"));
    assert!(o.status.success(), "{}", stderr(&o));

    // A damaged snapshot file: no rule and no prefix removes it, its full
    // id does, on purpose; then the repository verifies again.
    let file = d.join(&format!("repo/snapshots/{}", ids[2]));
    let mut bytes = fs::read(&file).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    fs::write(&file, bytes).expect("damage");
    let o = run(cairn(&repo, d.path()).args(["forget", &ids[2][..12]]));
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("full id"), "{}", stderr(&o));
    let o = run(cairn(&repo, d.path()).args(["forget", &ids[2]]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!file.exists(), "the damaged file was not removed");
    let o = run(cairn(&repo, d.path()).arg("verify"));
    assert!(o.status.success(), "{}", stderr(&o));
}
