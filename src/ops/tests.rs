//! Tests of operations that look at the repository's internals: how a
//! backup loads the index it is given, which the public API does not show.
//! They live here, above `repo/`, because they run operations.

use std::sync::Arc;

use crate::ops::backup::BackupOptions;
use crate::ops::backup::NoProgress;
use crate::repo::InitOptions;
use crate::repo::Repository;
use crate::storage::faults::{Faults, Op};
use crate::storage::{Backend, FileKind, MemoryBackend};

fn sorted_index(backend: &MemoryBackend) -> Vec<String> {
    let mut names: Vec<String> = backend
        .list(FileKind::Index)
        .unwrap_or_else(|e| panic!("list: {e}"))
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    names.sort();
    names
}

#[test]
fn a_backup_trusts_an_index_listed_before_the_locks_only_when_it_reads_it_all() {
    let src = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    // A store that says it is remote and lists `index/` with `locks/` in
    // one go, as object storage does, naming a stale index file (one a
    // prune deleted while the listing ran) when told to. Counts separate
    // `index/` listings.
    let inner = Arc::new(MemoryBackend::new());
    let backend = Arc::new(
        Faults::new(Arc::clone(&inner) as Arc<dyn Backend>)
            .remote()
            .one_listing(),
    );
    let index_lists = || backend.calls(Op::List, FileKind::Index);
    let dyn_backend = Arc::clone(&backend) as Arc<dyn Backend>;
    Repository::init(
        Arc::clone(&dyn_backend),
        Some(b"pw"),
        &InitOptions::default(),
    )
    .unwrap_or_else(|e| panic!("init: {e}"));
    let open = |cache_root: Option<&std::path::Path>| {
        let mut opts = crate::repo::OpenOptions::new();
        opts.cache_root = cache_root.map(std::path::Path::to_path_buf);
        Repository::open_with(Arc::clone(&dyn_backend), &opts, &mut || Ok(b"pw".to_vec()))
            .unwrap_or_else(|e| panic!("open: {e}"))
    };
    let backup = |repo: &Repository, content: &str| {
        std::fs::write(src.path().join("f"), content).unwrap_or_else(|e| panic!("write: {e}"));
        crate::ops::backup::backup(
            repo,
            &BackupOptions::new(vec![src.path().to_path_buf()]),
            &NoProgress,
        )
        .unwrap_or_else(|e| panic!("backup: {e}"));
    };
    let lock_and_release = |repo: &Repository| {
        drop(
            repo.lock_to_add("backup")
                .unwrap_or_else(|e| panic!("lock: {e}")),
        );
    };
    let loaded = |repo: &Repository| {
        let mut names = repo.loaded_index_names();
        names.sort();
        names
    };

    // An empty repository: the combined listing names nothing and is
    // used as it is.
    let repo = open(None);
    backend.reset_calls();
    lock_and_release(&repo);
    assert_eq!(index_lists(), 0);
    assert!(repo.has_no_index_files());
    backup(&repo, "one");
    backup(&open(None), "two");
    let present = sorted_index(&inner);
    assert!(present.len() >= 2, "{present:?}");

    // A host with nothing cached reads every listed file from the
    // store: no second listing.
    backend.reset_calls();
    let fresh = open(None);
    lock_and_release(&fresh);
    assert_eq!(index_lists(), 0);
    assert_eq!(loaded(&fresh), present);

    // Overtaken: the listing names a file already gone. Reading it
    // finds that out, and index/ is listed again.
    backend.set_stale_index(Some("ab".repeat(32)));
    let overtaken = open(None);
    lock_and_release(&overtaken);
    assert!(index_lists() >= 2);
    assert_eq!(loaded(&overtaken), present);
    backend.set_stale_index(None);

    // A host whose cache holds the files would not read them from the
    // store, so it lists locks/ and index/ one after the other.
    let cached = open(Some(cache.path()));
    cached
        .ensure_index()
        .unwrap_or_else(|e| panic!("index: {e}"));
    let again = open(Some(cache.path()));
    backend.reset_calls();
    lock_and_release(&again);
    assert_eq!(index_lists(), 1);
    assert_eq!(loaded(&again), present);
    let report = crate::ops::verify::verify(&again, &crate::ops::verify::VerifyOptions::default())
        .unwrap_or_else(|e| panic!("verify: {e}"));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
}
