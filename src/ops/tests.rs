//! Tests of operations that look at the repository's internals: how a
//! backup loads the index it is given, which the public API does not show.
//! They live here, above `repo/`, because they run operations.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::Result;
use crate::ops::backup::BackupOptions;
use crate::ops::backup::NoProgress;
use crate::repo::InitOptions;
use crate::repo::Repository;
use crate::storage::{Backend, FileKind, LocksAndIndex, MemoryBackend, StagedFile};
use crate::sync::lock;

/// A store that says it is remote and lists `index/` with `locks/` in
/// one go, as object storage does, naming `stale` as well: an index file
/// a prune deleted while the listing ran. Counts separate `index/`
/// listings.
struct OneListing {
    inner: MemoryBackend,
    stale: Mutex<Option<String>>,
    index_lists: AtomicU64,
}

impl Backend for OneListing {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> Result<()> {
        self.inner.create()
    }
    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        if kind == FileKind::Index {
            self.index_lists.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.list(kind)
    }
    fn list_locks_and_index(&self) -> Result<LocksAndIndex> {
        let mut index = self.inner.list(FileKind::Index)?;
        if let Some(stale) = lock(&self.stale).clone() {
            index.push((stale, 100));
        }
        Ok(LocksAndIndex {
            locks: self.inner.list(FileKind::Lock)?,
            index,
            index_read_first: true,
        })
    }
    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        self.inner.read(kind, name)
    }
    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.inner.read_range(kind, name, offset, len)
    }
    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        self.inner.size(kind, name)
    }
    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        self.inner.write(kind, name, data)
    }
    fn stage(&self, kind: FileKind) -> Result<Box<dyn StagedFile>> {
        self.inner.stage(kind)
    }
    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        self.inner.delete(kind, name)
    }
    fn requests(&self) -> Option<u64> {
        Some(0)
    }
}

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
    let backend = Arc::new(OneListing {
        inner: MemoryBackend::new(),
        stale: Mutex::new(None),
        index_lists: AtomicU64::new(0),
    });
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
    backend.index_lists.store(0, Ordering::Relaxed);
    lock_and_release(&repo);
    assert_eq!(backend.index_lists.load(Ordering::Relaxed), 0);
    assert!(repo.has_no_index_files());
    backup(&repo, "one");
    backup(&open(None), "two");
    let present = sorted_index(&backend.inner);
    assert!(present.len() >= 2, "{present:?}");

    // A host with nothing cached reads every listed file from the
    // store: no second listing.
    backend.index_lists.store(0, Ordering::Relaxed);
    let fresh = open(None);
    lock_and_release(&fresh);
    assert_eq!(backend.index_lists.load(Ordering::Relaxed), 0);
    assert_eq!(loaded(&fresh), present);

    // Overtaken: the listing names a file already gone. Reading it
    // finds that out, and index/ is listed again.
    *lock(&backend.stale) = Some("ab".repeat(32));
    let overtaken = open(None);
    lock_and_release(&overtaken);
    assert!(backend.index_lists.load(Ordering::Relaxed) >= 2);
    assert_eq!(loaded(&overtaken), present);
    *lock(&backend.stale) = None;

    // A host whose cache holds the files would not read them from the
    // store, so it lists locks/ and index/ one after the other.
    let cached = open(Some(cache.path()));
    cached
        .ensure_index()
        .unwrap_or_else(|e| panic!("index: {e}"));
    let again = open(Some(cache.path()));
    backend.index_lists.store(0, Ordering::Relaxed);
    lock_and_release(&again);
    assert_eq!(backend.index_lists.load(Ordering::Relaxed), 1);
    assert_eq!(loaded(&again), present);
    let report = crate::ops::verify::verify(&again, &crate::ops::verify::VerifyOptions::default())
        .unwrap_or_else(|e| panic!("verify: {e}"));
    assert!(report.errors.is_empty(), "{:?}", report.errors);
}
