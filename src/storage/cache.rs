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
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::{Backend, FileKind, StagedFile};
use crate::sync::lock;

/// A backend with a local cache in front of it.
pub struct CachedBackend {
    inner: Arc<dyn Backend>,
    dir: PathBuf,
    /// Set while the repository was opened from a remembered [`Identity`]
    /// that nothing read from the repository in this process has confirmed
    /// yet (see [`CachedBackend::confirm`]).
    unconfirmed: Mutex<Option<Remembered>>,
}

/// The file, in a repository's cache directory, naming the newest audit
/// event this host knows of.
const NEWEST_AUDIT: &str = "audit-newest";

/// Magic at the start of an identity record.
const IDENTITY_MAGIC: &[u8; 8] = b"CAIRNLOC";

/// How long a remembered identity is used without asking the repository:
/// a key removed with `cairn key remove` stops working on a host that
/// remembers it within this time.
pub const IDENTITY_MAX_AGE_SECS: i64 = 3600;

/// What a host remembers of a remote repository it opened, so that the
/// next command need not fetch the config and list the keys (two requests)
/// before its first real one. Stored per location under
/// `<cache>/locations/` (store-format.md §24).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// When the repository last confirmed it, seconds since the epoch.
    pub checked: i64,
    /// The name of the key file that opened it (its copy is in the cache).
    pub key: String,
    /// The repository's config file, byte for byte.
    pub config: Vec<u8>,
}

/// An identity in use, with where it is recorded.
#[derive(Debug, Clone)]
struct Remembered {
    identity: Identity,
    record: PathBuf,
}

impl Identity {
    fn record_path(root: &Path, location: &str) -> PathBuf {
        root.join("locations")
            .join(blake3::hash(location.as_bytes()).to_hex().as_str())
    }

    /// The identity remembered for `location`, if one is recorded, intact
    /// and younger than [`IDENTITY_MAX_AGE_SECS`].
    #[must_use]
    pub fn load(root: &Path, location: &str) -> Option<Self> {
        let bytes = fs::read(Self::record_path(root, location)).ok()?;
        let id: Self = crate::format::codec::decode(bytes.strip_prefix(IDENTITY_MAGIC)?).ok()?;
        let age = jiff::Timestamp::now().as_second().checked_sub(id.checked)?;
        (0..IDENTITY_MAX_AGE_SECS).contains(&age).then_some(id)
    }

    /// Records that `location` holds the repository with config `config`,
    /// opened by key file `key`, as of now. A failure only means the next
    /// command asks the repository again.
    pub fn save(root: &Path, location: &str, key: &str, config: &[u8]) {
        let id = Self {
            checked: jiff::Timestamp::now().as_second(),
            key: key.to_owned(),
            config: config.to_vec(),
        };
        let _ = id.write(&Self::record_path(root, location));
    }

    fn write(&self, path: &Path) -> io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        if !dir.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let mut bytes = IDENTITY_MAGIC.to_vec();
        bytes.extend_from_slice(&crate::format::codec::encode(self));
        let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
        tmp.write_all(&bytes)?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Whether `name` is the name of `bytes`: the hex BLAKE3 of the content,
/// or for WAL segments (store-format.md §25) 16 hex digits of time followed
/// by the first 48 of that hash.
fn names_content(kind: FileKind, name: &str, bytes: &[u8]) -> bool {
    let hash = blake3::hash(bytes).to_hex();
    match kind {
        FileKind::Wal => name.len() == 64 && name.get(16..) == hash.get(..48),
        _ => hash.as_str() == name,
    }
}

/// Whether files of `kind` are cached whole on first read.
fn cached_kind(kind: FileKind) -> bool {
    matches!(
        kind,
        FileKind::Key | FileKind::Index | FileKind::Snapshot | FileKind::Wal
    )
}

impl CachedBackend {
    /// Caches `inner` in `dir` (one repository's directory, created on first
    /// use, 0700).
    #[must_use]
    pub fn new(inner: Arc<dyn Backend>, dir: PathBuf) -> Self {
        Self {
            inner,
            dir,
            unconfirmed: Mutex::new(None),
        }
    }

    /// The newest audit event this host knows of in the repository: the
    /// newest it listed or wrote. Audit events chain to it instead of to the
    /// newest in a fresh listing, which saves a request per command; events
    /// written meanwhile by other hosts make the chain a tree, as concurrent
    /// writers do anyway (see `audit`).
    pub(crate) fn newest_audit(&self) -> Option<String> {
        let name = fs::read_to_string(self.dir.join(NEWEST_AUDIT)).ok()?;
        Some(name.trim().to_owned())
    }

    fn note_audit(&self, name: &str) {
        if self.newest_audit().is_some_and(|n| n.as_str() >= name) {
            return;
        }
        let _ = create_cache_dir(&self.dir).and_then(|()| {
            let mut tmp = tempfile::Builder::new()
                .prefix(".tmp-")
                .tempfile_in(&self.dir)?;
            tmp.write_all(name.as_bytes())?;
            tmp.persist(self.dir.join(NEWEST_AUDIT))
                .map_err(|e| e.error)?;
            Ok(())
        });
    }

    /// The names of the cached files of `kind` (unchecked: a read checks).
    pub(crate) fn cached_names(&self, kind: FileKind) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.dir.join(kind.dir())) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect()
    }

    /// Reads a file from the repository even when a copy is cached, and
    /// caches what was read: for a reader that must see whether the file
    /// is still there.
    ///
    /// # Errors
    /// Backend errors.
    pub(crate) fn read_fresh(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        let bytes = self.inner.read(kind, name)?;
        if cached_kind(kind) {
            self.store(kind, name, &bytes);
        }
        Ok(bytes)
    }

    /// The cached copy of key file `name`, if intact.
    pub(crate) fn cached_key(&self, name: &str) -> Option<Vec<u8>> {
        self.cached(FileKind::Key, name)
    }

    /// Marks the repository as opened from `identity` (recorded under
    /// `root` for `location`) and not yet confirmed by the repository.
    pub(crate) fn trust_remembered(&self, root: &Path, location: &str, identity: Identity) {
        *lock(&self.unconfirmed) = Some(Remembered {
            identity,
            record: Identity::record_path(root, location),
        });
    }

    /// Makes sure the repository behind a remembered identity is still the
    /// one it was (not deleted and created anew at the same location, which
    /// would give it another key) before anything but a lock is written or
    /// deleted: the config must be byte for byte the same and the key file
    /// still listed. Two requests, once per process, and only when no
    /// listing confirmed it first (see [`CachedBackend::list`]).
    ///
    /// # Errors
    /// Backend errors; [`Error::Invalid`] when the repository changed (the
    /// remembered identity is then forgotten, so running the command again
    /// opens the repository afresh).
    fn confirm(&self) -> Result<()> {
        let Some(remembered) = lock(&self.unconfirmed).clone() else {
            return Ok(());
        };
        let config = self
            .inner
            .read(FileKind::Config, crate::storage::CONFIG_NAME);
        let keys = self.inner.list(FileKind::Key)?;
        let same = matches!(&config, Ok(c) if *c == remembered.identity.config)
            && keys.iter().any(|(n, _)| *n == remembered.identity.key);
        if !same {
            let _ = fs::remove_file(&remembered.record);
            if let Err(e) = config
                && !e.is_not_found()
            {
                return Err(e);
            }
            return Err(Error::invalid(format!(
                "the repository at {} is not the one this host opened before (it was created anew, or the key this host used was removed); run the command again to open it afresh",
                self.inner.location()
            )));
        }
        let mut identity = remembered.identity;
        identity.checked = jiff::Timestamp::now().as_second();
        let _ = identity.write(&remembered.record);
        *lock(&self.unconfirmed) = None;
        Ok(())
    }

    /// A listing of index or snapshot files confirms a remembered identity
    /// when it names a file this cache holds: cached files are named by the
    /// hash of their content, which is sealed with the repository's key, so
    /// a repository listing one has that key.
    fn confirm_by_listing(&self, kind: FileKind, names: &[(String, u64)]) -> Result<()> {
        if lock(&self.unconfirmed).is_none() {
            return Ok(());
        }
        let known = matches!(kind, FileKind::Index | FileKind::Snapshot)
            && names.iter().any(|(n, _)| self.path(kind, n).is_file());
        if known {
            *lock(&self.unconfirmed) = None;
            Ok(())
        } else {
            self.confirm()
        }
    }

    fn path(&self, kind: FileKind, name: &str) -> PathBuf {
        self.dir.join(kind.dir()).join(name)
    }

    /// The cached copy of a file when it is there and intact; a damaged
    /// copy is removed.
    fn cached(&self, kind: FileKind, name: &str) -> Option<Vec<u8>> {
        let path = self.path(kind, name);
        let bytes = fs::read(&path).ok()?;
        if names_content(kind, name, &bytes) {
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
        if !names_content(kind, name, bytes) {
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
            create_cache_dir(&self.dir)?;
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
        self.confirm()?;
        let inner = self.inner.stage(FileKind::Pack)?;
        let dir = self.dir.join(FileKind::Pack.dir());
        // Without a cache file the pack is still written; it is only not
        // kept.
        let copy = create_cache_dir(&self.dir)
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
        if kind != FileKind::Lock {
            self.confirm_by_listing(kind, &names)?;
        }
        if cached_kind(kind) || kind == FileKind::Pack {
            self.drop_missing(kind, &names);
        }
        if kind == FileKind::Audit
            && let Some(newest) = names.iter().map(|(n, _)| n).max()
        {
            self.note_audit(newest);
        }
        Ok(names)
    }

    fn list_locks_and_index(&self) -> Result<crate::storage::LocksAndIndex> {
        let listed = self.inner.list_locks_and_index()?;
        self.confirm_by_listing(FileKind::Index, &listed.index)?;
        self.drop_missing(FileKind::Index, &listed.index);
        Ok(listed)
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

    fn read_range_stream(
        &self,
        kind: FileKind,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Box<dyn Read + Send>> {
        self.inner.read_range_stream(kind, name, offset, len)
    }

    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        self.inner.size(kind, name)
    }

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        if kind != FileKind::Lock {
            self.confirm()?;
        }
        self.inner.write(kind, name, data)?;
        if cached_kind(kind) {
            self.store(kind, name, data);
        }
        if kind == FileKind::Audit {
            self.note_audit(name);
        }
        Ok(())
    }

    fn stage(&self, kind: FileKind) -> Result<Box<dyn StagedFile>> {
        self.confirm()?;
        self.inner.stage(kind)
    }

    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        if kind != FileKind::Lock {
            self.confirm()?;
        }
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

/// Creates the repository's cache directory (0700) and, in the shared root
/// above it, a `CACHEDIR.TAG` so that backup tools (cairn's users' other
/// tools included) skip the cache.
pub(crate) fn create_cache_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    if let Some(root) = dir.parent() {
        let tag = root.join("CACHEDIR.TAG");
        if !tag.exists() {
            fs::write(
                &tag,
                "Signature: 8a477f597d28d172789f06886806bc55\n\
                 # This file marks cairn's cache directory; see https://bford.info/cachedir/\n",
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryBackend;

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
    fn an_identity_is_remembered_for_an_hour_and_damage_forgets_it() {
        let dir = tempfile::tempdir().unwrap();
        let (root, loc) = (dir.path(), "s3:http://127.0.0.1:1/bucket/repo");
        assert_eq!(Identity::load(root, loc), None);
        Identity::save(root, loc, "ab", b"config bytes");
        let id = Identity::load(root, loc).unwrap();
        assert_eq!(
            (id.key.as_str(), id.config.as_slice()),
            ("ab", &b"config bytes"[..])
        );
        assert_eq!(
            Identity::load(root, "s3:http://127.0.0.1:1/bucket/other"),
            None
        );
        let path = Identity::record_path(root, loc);
        // Too old, or from the future: asked again.
        for checked in [id.checked - IDENTITY_MAX_AGE_SECS, id.checked + 60] {
            Identity {
                checked,
                ..id.clone()
            }
            .write(&path)
            .unwrap();
            assert_eq!(Identity::load(root, loc), None);
        }
        let mut bytes = fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 1);
        fs::write(&path, bytes).unwrap();
        assert_eq!(Identity::load(root, loc), None);
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
