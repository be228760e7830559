//! The local cache of a remote repository: copies of what is costly to fetch
//! again and again (key, index and snapshot files, and the packs that hold
//! tree blobs), so that listing snapshots, browsing them and a backup that
//! finds nothing changed make few requests.
//!
//! The cache is a [`Backend`] wrapper. Every cached file is named by the
//! BLAKE3 hash of its content, as in the repository, and is checked against
//! it before use; a cached pack is checked blob by blob when its blobs are
//! opened (authenticated decryption and the id), and dropped on the first
//! mismatch. A damaged, stale or deleted cache therefore costs requests,
//! never correctness, and the whole directory may be deleted at any time.
//! Listing a kind from the repository drops cached files the repository no
//! longer has (removed by forget or prune). Writes go to the cache only
//! through temporary files renamed into place, so concurrent processes on
//! one host share it safely. Layout: store-format.md §24.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::Result;
use crate::backend::{Backend, FileKind, StagedFile};

/// A backend with a local cache in front of it.
pub struct CachedBackend {
    inner: Arc<dyn Backend>,
    dir: PathBuf,
}

/// Whether files of `kind` are cached whole on first read.
fn cached_kind(kind: FileKind) -> bool {
    matches!(kind, FileKind::Key | FileKind::Index | FileKind::Snapshot)
}

impl CachedBackend {
    /// Caches `inner` in `dir` (one repository's directory, created on first
    /// use, 0700).
    #[must_use]
    pub fn new(inner: Arc<dyn Backend>, dir: PathBuf) -> Self {
        Self { inner, dir }
    }

    fn path(&self, kind: FileKind, name: &str) -> PathBuf {
        self.dir.join(kind.dir()).join(name)
    }

    /// The cached copy of a file when it is there and intact; a damaged
    /// copy is removed.
    fn cached(&self, kind: FileKind, name: &str) -> Option<Vec<u8>> {
        let path = self.path(kind, name);
        let bytes = fs::read(&path).ok()?;
        if blake3::hash(&bytes).to_hex().as_str() == name {
            Some(bytes)
        } else {
            let _ = fs::remove_file(&path);
            None
        }
    }

    /// Stores a copy whose name is the hash of its content (anything else is
    /// not stored). A failure only means a later read goes to the
    /// repository again.
    fn store(&self, kind: FileKind, name: &str, bytes: &[u8]) {
        if blake3::hash(bytes).to_hex().as_str() != name {
            return;
        }
        let _ = self.store_file(kind, name, |f| f.write_all(bytes));
    }

    fn store_file(
        &self,
        kind: FileKind,
        name: &str,
        fill: impl FnOnce(&mut fs::File) -> io::Result<()>,
    ) -> io::Result<()> {
        let dir = self.dir.join(kind.dir());
        if !dir.is_dir() {
            crate::filescache::create_cache_dir(&self.dir)?;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)?;
        }
        let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(&dir)?;
        fill(tmp.as_file_mut())?;
        tmp.persist(dir.join(name)).map_err(|e| e.error)?;
        Ok(())
    }

    /// Drops cached files of `kind` that are not in `present`.
    fn drop_missing(&self, kind: FileKind, present: &[(String, u64)]) {
        let Ok(entries) = fs::read_dir(self.dir.join(kind.dir())) else {
            return;
        };
        let present: std::collections::HashSet<&str> =
            present.iter().map(|(n, _)| n.as_str()).collect();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            // Temporary files of a concurrent process are left alone.
            if !name.starts_with('.') && !present.contains(name) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// `len` bytes at `offset` of a pack, from a local copy of the whole
    /// pack, which is downloaded (and checked against its name) on first
    /// use. For packs read again and again: those of tree blobs. The caller
    /// must check what it reads and call [`CachedBackend::forget_pack`] when
    /// the check fails.
    ///
    /// # Errors
    /// Backend errors of the download.
    pub fn read_pack_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        if let Some(bytes) = self.read_cached_range(name, offset, len) {
            return Ok(bytes);
        }
        let whole = self.inner.read(FileKind::Pack, name)?;
        if blake3::hash(&whole).to_hex().as_str() == name {
            self.store(FileKind::Pack, name, &whole);
        }
        let range = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(offset.saturating_add(len)).ok())
            .and_then(|(a, b)| whole.get(a..b));
        match range {
            Some(r) => Ok(r.to_vec()),
            // Shorter than the index says: let the plain read report it.
            None => self.inner.read_range(FileKind::Pack, name, offset, len),
        }
    }

    fn read_cached_range(&self, name: &str, offset: u64, len: u64) -> Option<Vec<u8>> {
        let mut f = fs::File::open(self.path(FileKind::Pack, name)).ok()?;
        f.seek(SeekFrom::Start(offset)).ok()?;
        let mut buf = vec![0; usize::try_from(len).ok()?];
        match f.read_exact(&mut buf) {
            Ok(()) => Some(buf),
            Err(_) => {
                self.forget_pack(name);
                None
            }
        }
    }

    /// Stages a pack whose bytes also go into the cache, under its name,
    /// once it is committed: for tree packs, which the next backup, `ls` or
    /// restore reads again.
    ///
    /// # Errors
    /// As [`Backend::stage`].
    pub fn stage_keeping_copy(&self) -> Result<Box<dyn StagedFile>> {
        let inner = self.inner.stage(FileKind::Pack)?;
        let dir = self.dir.join(FileKind::Pack.dir());
        // Without a cache file the pack is still written; it is only not
        // kept.
        let copy = crate::filescache::create_cache_dir(&self.dir)
            .and_then(|()| {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&dir)
            })
            .and_then(|()| tempfile::Builder::new().prefix(".tmp-").tempfile_in(&dir))
            .ok();
        Ok(Box::new(KeptStaged { inner, copy, dir }))
    }

    /// Removes the local copy of a pack (found damaged).
    pub fn forget_pack(&self, name: &str) {
        let _ = fs::remove_file(self.path(FileKind::Pack, name));
    }
}

impl Backend for CachedBackend {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn create(&self) -> Result<()> {
        self.inner.create()
    }

    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        let names = self.inner.list(kind)?;
        if cached_kind(kind) || kind == FileKind::Pack {
            self.drop_missing(kind, &names);
        }
        Ok(names)
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        if !cached_kind(kind) {
            return self.inner.read(kind, name);
        }
        if let Some(bytes) = self.cached(kind, name) {
            return Ok(bytes);
        }
        let bytes = self.inner.read(kind, name)?;
        self.store(kind, name, &bytes);
        Ok(bytes)
    }

    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.inner.read_range(kind, name, offset, len)
    }

    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        self.inner.size(kind, name)
    }

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        self.inner.write(kind, name, data)?;
        if cached_kind(kind) {
            self.store(kind, name, data);
        }
        Ok(())
    }

    fn stage(&self, kind: FileKind) -> Result<Box<dyn StagedFile>> {
        self.inner.stage(kind)
    }

    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        self.inner.delete(kind, name)?;
        let _ = fs::remove_file(self.path(kind, name));
        Ok(())
    }

    fn requests(&self) -> Option<u64> {
        self.inner.requests()
    }

    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }
}

/// A staged pack written to the repository and to a cache file alike.
struct KeptStaged {
    inner: Box<dyn StagedFile>,
    copy: Option<tempfile::NamedTempFile>,
    dir: PathBuf,
}

impl Write for KeptStaged {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(copy) = &mut self.copy
            && copy.write_all(buf.get(..n).unwrap_or_default()).is_err()
        {
            self.copy = None;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl StagedFile for KeptStaged {
    fn commit(self: Box<Self>, name: &str) -> Result<()> {
        let Self { inner, copy, dir } = *self;
        inner.commit(name)?;
        // Kept only once the repository has it: the cache never holds a
        // pack the repository lacks. Its blobs are checked when read.
        if let Some(copy) = copy {
            let _ = copy.persist(dir.join(name));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;

    fn setup() -> (tempfile::TempDir, Arc<MemoryBackend>, CachedBackend) {
        let dir = tempfile::tempdir().unwrap();
        let mem = Arc::new(MemoryBackend::new());
        let cached = CachedBackend::new(mem.clone(), dir.path().join("repo"));
        (dir, mem, cached)
    }

    fn named(bytes: &[u8]) -> String {
        blake3::hash(bytes).to_hex().to_string()
    }

    #[test]
    fn serves_a_copy_and_refetches_a_damaged_one() {
        let (_d, mem, cached) = setup();
        let bytes = b"an index file".to_vec();
        let name = named(&bytes);
        mem.write(FileKind::Index, &name, &bytes).unwrap();
        assert_eq!(cached.read(FileKind::Index, &name).unwrap(), bytes);
        let path = cached.path(FileKind::Index, &name);
        assert_eq!(fs::read(&path).unwrap(), bytes);
        // Served from the cache even when the repository loses the file…
        mem.delete(FileKind::Index, &name).unwrap();
        assert_eq!(cached.read(FileKind::Index, &name).unwrap(), bytes);
        // …but a damaged copy is dropped and the repository asked again.
        fs::write(&path, b"garbage").unwrap();
        assert!(
            cached
                .read(FileKind::Index, &name)
                .unwrap_err()
                .is_not_found()
        );
        assert!(!path.exists());
    }

    #[test]
    fn listing_drops_what_the_repository_no_longer_has() {
        let (_d, mem, cached) = setup();
        let (a, b) = (b"snapshot a".to_vec(), b"snapshot b".to_vec());
        for x in [&a, &b] {
            cached.write(FileKind::Snapshot, &named(x), x).unwrap();
        }
        assert!(cached.path(FileKind::Snapshot, &named(&a)).exists());
        mem.delete(FileKind::Snapshot, &named(&a)).unwrap();
        let listed = cached.list(FileKind::Snapshot).unwrap();
        assert_eq!(listed.len(), 1);
        assert!(!cached.path(FileKind::Snapshot, &named(&a)).exists());
        assert!(cached.path(FileKind::Snapshot, &named(&b)).exists());
    }

    #[test]
    fn packs_written_through_the_cache_are_kept() {
        let (_d, mem, cached) = setup();
        let pack = b"a tree pack".to_vec();
        let name = named(&pack);
        let mut staged = cached.stage_keeping_copy().unwrap();
        staged.write_all(&pack).unwrap();
        staged.commit(&name).unwrap();
        assert_eq!(mem.read(FileKind::Pack, &name).unwrap(), pack);
        mem.delete(FileKind::Pack, &name).unwrap();
        assert_eq!(cached.read_pack_range(&name, 2, 4).unwrap(), pack[2..6]);
    }

    #[test]
    fn packs_are_fetched_whole_once() {
        let (_d, mem, cached) = setup();
        let pack: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let name = named(&pack);
        mem.write(FileKind::Pack, &name, &pack).unwrap();
        assert_eq!(
            cached.read_pack_range(&name, 100, 50).unwrap(),
            pack[100..150]
        );
        mem.delete(FileKind::Pack, &name).unwrap();
        assert_eq!(
            cached.read_pack_range(&name, 4000, 96).unwrap(),
            pack[4000..4096]
        );
        cached.forget_pack(&name);
        assert!(cached.read_pack_range(&name, 0, 1).is_err());
    }
}
