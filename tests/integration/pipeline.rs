//! Large files through the parallel backup pipeline: files larger than all
//! of its buffers together, several at once, with chunks repeated within a
//! batch and across files, keep the streaming chunker's cut points in file
//! order, restore byte for byte, and leave trees in packs of their own.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use cairn::{
    BlobKind, ChunkerParams, FileKind, InitOptions, LocalBackend, NoProgress, Repository,
    RestoreOptions,
};

use super::util::{Dir, PASSWORD, Rng, assert_verifies, backup_path};

const MIB: usize = 1 << 20;

/// An encrypted repository with small chunks (so a file spans thousands of
/// them) and small packs (so many packs close while workers store chunks).
fn small_chunk_repo(path: &Path) -> Repository {
    let mut opts = InitOptions::default();
    opts.chunker = ChunkerParams {
        min_size: 4096,
        avg_size: 16384,
        max_size: 65536,
        normalization: 1,
    };
    opts.pack_target_size = Some(2 << 20);
    Repository::init(
        Arc::new(LocalBackend::new(path)),
        Some(PASSWORD.as_bytes()),
        &opts,
    )
    .expect("init")
}

/// `len` bytes in 128 KiB blocks of noise, of text, and of copies of an
/// earlier block (so that equal chunks meet in one batch).
fn mixed(len: usize, seed: u64) -> Vec<u8> {
    const BLOCK: usize = 128 << 10;
    let mut rng = Rng::seeded(seed);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let start = out.len();
        let n = BLOCK.min(len - start);
        match rng.next() % 4 {
            0 if start >= BLOCK => {
                let from = (rng.next() as usize % (start / BLOCK)) * BLOCK;
                out.extend_from_within(from..from + n);
            }
            1 => out.extend((0..n).map(|i| b"the pipeline keeps file order\n"[i % 30])),
            _ => {
                while out.len() < start + n {
                    out.extend_from_slice(&rng.next().to_le_bytes());
                }
                out.truncate(start + n);
            }
        }
    }
    out
}

#[test]
fn files_larger_than_all_buffers_round_trip_in_file_order() {
    let src = Dir::new();
    // One file several times the pipeline's memory budget (two files'
    // pairs of 8 MiB batches), four more to make large files compete for
    // it, and a copy of part of the first.
    let mut files = vec![("big.bin".to_owned(), mixed(80 * MIB + 12_345, 1))];
    for i in 0..4 {
        files.push((
            format!("mid-{i}.bin"),
            mixed(12 * MIB + i * 7777, 10 + i as u64),
        ));
    }
    let copy = files[0].1[5 * MIB + 3..25 * MIB].to_vec();
    files.push(("copy.bin".to_owned(), copy));
    for (name, data) in &files {
        fs::write(src.join(name), data).expect("write");
    }
    let total: usize = files.iter().map(|(_, d)| d.len()).sum();

    let store = Dir::new();
    let repo = small_chunk_repo(&store.join("repo"));
    let done = backup_path(&repo, src.path());
    let summary = &done.snapshot.summary;
    assert_eq!(summary.files_new, files.len() as u64);
    assert_eq!(summary.bytes_read, total as u64);
    assert!(
        summary.bytes_added < total as u64 * 9 / 10,
        "repeated chunks are stored once: {} bytes added of {total}",
        summary.bytes_added
    );

    // Every file's content list is the streaming chunker's, in order.
    let chunker = repo.config().chunker;
    for (name, data) in &files {
        let path = src.join(name);
        let node = cairn::find_node(&repo, &done.snapshot.tree, path.as_os_str().as_bytes())
            .expect("find")
            .expect("node");
        assert!(node.kind.is_file(), "{name} is not a file in the snapshot");
        let content = &cairn::file_content(&repo, &node).expect("content");
        let want: Vec<_> = chunker
            .chunks(&data[..], repo.chunker_seed())
            .map(|c| repo.crypto().blob_id(&c.expect("chunk")))
            .collect();
        assert_eq!(node.size, data.len() as u64, "{name}");
        assert!(
            content == &want,
            "{name}: content ids differ from the streaming chunker's"
        );
    }

    // Trees have packs of their own, however the threads storing chunks
    // interleave: a damaged data pack never hides a directory.
    let mut tree_packs = 0;
    for (name, _) in repo.backend().list(FileKind::Index).expect("list") {
        for pack in repo.read_index_file(&name).expect("index").packs {
            let trees = pack
                .entries
                .iter()
                .filter(|e| e.kind == BlobKind::Tree)
                .count();
            assert!(
                trees == 0 || trees == pack.entries.len(),
                "pack {} holds {trees} trees and {} data blobs",
                pack.id,
                pack.entries.len() - trees
            );
            tree_packs += usize::from(trees > 0);
        }
    }
    assert_eq!(tree_packs, 1);

    let out = Dir::new();
    let restored = cairn::restore(
        &repo,
        &done.snapshot,
        &RestoreOptions::new(out.path()),
        &NoProgress,
    )
    .expect("restore");
    assert!(restored.errors.is_empty(), "{:?}", restored.errors);
    let below = out
        .path()
        .join(src.path().strip_prefix("/").expect("absolute"));
    for (name, data) in &files {
        let got = fs::read(below.join(name)).expect("read restored");
        assert!(&got == data, "{name} restored differently");
    }
    assert_verifies(&repo);
}
