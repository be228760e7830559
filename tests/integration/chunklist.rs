//! Files of many chunks keep their chunk list in list blobs: they round-trip
//! through restore, dump, verify and prune, and a small change adds a few
//! blobs, not a new list of every chunk.

use std::fs;
use std::sync::Arc;

use cairn::{
    BackupOptions, ChunkerParams, InitOptions, LocalBackend, NoProgress, NodeKind, Repository,
    RestoreOptions,
};

use super::util::{Dir, PASSWORD, Rng, assert_verifies, cairn, json_of, run};

/// A repository whose chunks average 256 bytes, so that a file of a few
/// hundred KiB has thousands of them.
fn small_chunk_repo(path: &std::path::Path) -> Repository {
    let mut opts = InitOptions::default();
    opts.chunker = ChunkerParams {
        min_size: 64,
        avg_size: 256,
        max_size: 1024,
        normalization: 2,
    };
    opts.kdf_memory_mib = cairn::MIN_KDF_MEMORY_MIB;
    Repository::init(
        Arc::new(LocalBackend::new(path)),
        Some(PASSWORD.as_bytes()),
        &opts,
    )
    .expect("init")
}

fn file_node(repo: &Repository, snap: &cairn::Snapshot, path: &std::path::Path) -> cairn::Node {
    use std::os::unix::ffi::OsStrExt;
    cairn::find_node(repo, &snap.tree, path.as_os_str().as_bytes())
        .expect("find")
        .expect("present")
}

#[test]
fn long_chunk_lists_live_in_list_blobs_and_change_locally() {
    let d = Dir::new();
    let src = d.join("src");
    fs::create_dir_all(&src).expect("mkdir");
    let big = src.join("big.db");
    let mut data = Rng::seeded(11).bytes(1 << 20);
    fs::write(&big, &data).expect("write");
    let repo_dir = d.join("repo");
    let repo = small_chunk_repo(&repo_dir);
    let backup = |repo: &Repository| {
        cairn::backup(repo, &BackupOptions::new(vec![src.clone()]), &NoProgress).expect("backup")
    };
    let first = backup(&repo);
    let node = file_node(&repo, &first.snapshot, &big);
    let NodeKind::ListedFile { depth, .. } = node.kind else {
        panic!(
            "a file of ~4000 chunks is listed in list blobs: {:?}",
            node.kind
        );
    };
    assert!(depth >= 2, "about 60 lists need a second level");
    assert_eq!(node.size, data.len() as u64);

    // Ten bytes changed in place: a chunk or two, their lists and the
    // lists above them; nothing near the 4000 ids of the whole list.
    if let Some(b) = data.get_mut(500_000..500_010) {
        b.fill(0x55);
    }
    fs::write(&big, &data).expect("rewrite");
    let second = backup(&repo);
    let added = second.snapshot.summary.blobs_added;
    eprintln!(
        "10-byte change: {added} blobs, {} bytes added ({} stored)",
        second.snapshot.summary.bytes_added, second.snapshot.summary.bytes_stored
    );
    assert!(
        (2..=16).contains(&added),
        "{added} blobs added for a 10-byte change"
    );
    assert!(
        second.snapshot.summary.bytes_added < 40_000,
        "{} bytes added",
        second.snapshot.summary.bytes_added
    );

    // Restore and dump give the bytes back; diff sees the change.
    let out = d.join("out");
    let r = cairn::restore(
        &repo,
        &second.snapshot,
        &RestoreOptions::new(&out),
        &NoProgress,
    )
    .expect("restore");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let restored = out.join(big.strip_prefix("/").expect("abs"));
    assert!(fs::read(&restored).expect("restored") == data);
    let mut dumped = Vec::new();
    let node = file_node(&repo, &second.snapshot, &big);
    cairn::dump(&repo, b"big.db", &node, &mut dumped).expect("dump");
    assert!(dumped == data);
    let changes = cairn::diff(&repo, &first.snapshot.tree, &second.snapshot.tree).expect("diff");
    assert!(
        changes
            .iter()
            .any(|c| c.path.ends_with(b"big.db") && c.kind == cairn::ChangeKind::Modified),
        "{changes:?}"
    );
    assert_verifies(&repo);

    // ls --json names the list; forget the first snapshot and prune: the
    // second still restores, its lists kept.
    let home = d.join("home");
    let listing = json_of(&run(
        cairn(&repo_dir, &home).args(["ls", "--json", "latest"])
    ));
    assert!(
        listing
            .as_array()
            .expect("array")
            .iter()
            .any(|n| n["content_list"].is_array()),
        "{listing}"
    );
    assert!(
        run(cairn(&repo_dir, &home).args([
            "forget",
            "--prune",
            "--max-unused",
            "0%",
            &first.id.to_hex()
        ]))
        .status
        .success()
    );
    assert_verifies(&repo);
    let out2 = d.join("out2");
    let r = cairn::restore(
        &repo,
        &second.snapshot,
        &RestoreOptions::new(&out2),
        &NoProgress,
    )
    .expect("restore after prune");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(fs::read(out2.join(big.strip_prefix("/").expect("abs"))).expect("restored") == data);
}
