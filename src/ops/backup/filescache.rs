//! The files cache: what each directory looked like when a backup on this
//! machine last stored it, kept outside the repository.
//!
//! For every directory a backup stores, the cache keeps a digest of the
//! `lstat` of each entry it stored (and the tree ids of its subdirectories)
//! together with the tree that came out. A later backup that finds the same
//! digest takes that tree as it is: no file is opened, no link or extended
//! attribute read, no tree fetched from the repository, so an unchanged file
//! costs its one `lstat` whatever snapshot is the parent, and even with none
//! (another set of paths, `--parent` elsewhere). A directory whose digest
//! differs still gets its cached tree as the reference for per-file change
//! detection.
//!
//! The cache is a hint, trusted only as far as it can be checked:
//! - it is sealed with the repository's keys, so it shows no names or ids
//!   and cannot be altered unnoticed;
//! - an entry counts only while the snapshot that last stored its tree
//!   exists: only then are that tree and everything below it sure to be in
//!   the repository, since prune keeps whatever a snapshot references; or
//!   while every index file the repository had when the cache was written
//!   is still there: prune deletes a pack only after removing the index
//!   files that name it, so then nothing has been deleted since (this needs
//!   no listing of the snapshots, a request on object storage);
//! - a directory with an entry whose times are not safely before the backup
//!   that recorded it ("racily clean") is not reused.
//!
//! A cache that is missing, damaged, written by another version or for
//! another key is ignored and rebuilt. Its format is in store-format.md §20.

use std::collections::{HashMap, HashSet};
use std::fs::{self, Metadata};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::format::codec;
use crate::format::crypto::Domain;
use crate::id::{BlobId, SnapshotId};
use crate::repo::Repository;
use crate::sync::lock;

/// First bytes of a cache file.
const MAGIC: [u8; 8] = *b"CAIRNFCA";
/// Version of the layout after the magic; another value is ignored.
const VERSION: u32 = 2;
/// Backups in a row that may leave a directory out before its entry is
/// dropped: other sets of paths keep their entries for this long.
const MAX_AGE: u32 = 20;
/// Name of the cache file in a repository's cache directory.
const FILE_NAME: &str = "files";

/// Key of a directory: the first 16 bytes of BLAKE3 of its absolute path.
pub(crate) type DirKey = [u8; 16];

/// The directory key of `path`.
pub(crate) fn dir_key(path: &Path) -> DirKey {
    use std::os::unix::ffi::OsStrExt;
    let hash = blake3::hash(path.as_os_str().as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(hash.as_bytes().get(..16).unwrap_or(&[0; 16]));
    key
}

/// Accumulates the digest of a directory's state, entry by entry, in name
/// order. Everything a tree node is made of either is one of these `lstat`
/// fields or changes the ctime when it changes (content, link target,
/// extended attributes), so equal digests mean equal trees.
pub(crate) struct StateHasher(blake3::Hasher);

impl StateHasher {
    pub(crate) fn new() -> Self {
        Self(blake3::Hasher::new_derive_key(
            "cairn 2026-11-24 files cache directory state v1",
        ))
    }

    /// Adds one stored entry; `subtree` for a directory.
    pub(crate) fn entry(&mut self, name: &[u8], meta: &Metadata, subtree: Option<&BlobId>) {
        let h = &mut self.0;
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name);
        h.update(&meta.mode().to_le_bytes());
        h.update(&meta.uid().to_le_bytes());
        h.update(&meta.gid().to_le_bytes());
        for v in [
            meta.size(),
            meta.ino(),
            meta.dev(),
            meta.nlink(),
            meta.rdev(),
        ] {
            h.update(&v.to_le_bytes());
        }
        for v in [
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec(),
        ] {
            h.update(&v.to_le_bytes());
        }
        match subtree {
            Some(id) => {
                h.update(&[1]);
                h.update(&id.0);
            }
            None => {
                h.update(&[0]);
            }
        }
    }

    pub(crate) fn finish(&self) -> [u8; 32] {
        *self.0.finalize().as_bytes()
    }
}

/// One directory as a backup stored it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    /// [`dir_key`] of the directory.
    key: DirKey,
    /// [`StateHasher`] digest of its entries when stored.
    state: [u8; 32],
    /// The tree stored for it.
    tree: BlobId,
    /// Entries with mtime and ctime (seconds) below this can be trusted: a
    /// second before the backup that recorded them started.
    trusted_before: i64,
    /// Index into [`CacheFile::snapshots`] of the snapshot that stored (or
    /// last reused) `tree`.
    snapshot: u32,
    /// Backups since this directory was last part of one.
    age: u32,
}

/// The body of a cache file.
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct CacheFile {
    /// Snapshots the entries name, without repeats.
    snapshots: Vec<SnapshotId>,
    /// Entries sorted by key, without repeats.
    entries: Vec<Entry>,
    /// The repository's index files when the file was written (as loaded
    /// under the backup's lock, plus those the backup wrote), sorted.
    index_files: Vec<[u8; 32]>,
}

/// A directory's cached state, as a backup looks it up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cached {
    pub(crate) state: [u8; 32],
    pub(crate) tree: BlobId,
    pub(crate) trusted_before: i64,
}

/// The loaded cache of one repository plus what this backup records.
pub(crate) struct FilesCache {
    file: PathBuf,
    /// Whether every index file of the cache's record is still there, so
    /// no pack has been deleted since it was written.
    nothing_deleted: bool,
    loaded: HashMap<DirKey, (Entry, SnapshotId)>,
    recorded: Mutex<Vec<(DirKey, [u8; 32], BlobId)>>,
}

/// Decodes a whole cache file and checks its structure; returns the number
/// of directories it lists. For the fuzz target and tests.
///
/// # Errors
/// A message saying what is wrong.
#[cfg(any(test, feature = "internals"))]
pub fn check_file(crypto: &crate::format::crypto::Crypto, bytes: &[u8]) -> Result<usize, String> {
    decode(crypto, bytes.to_vec()).map(|f| f.entries.len())
}

fn decode(crypto: &crate::format::crypto::Crypto, bytes: Vec<u8>) -> Result<CacheFile, String> {
    let head = MAGIC.len() + 4;
    if bytes.get(..MAGIC.len()) != Some(&MAGIC[..]) {
        return Err("not a cairn files cache".into());
    }
    let mut version = [0u8; 4];
    version.copy_from_slice(bytes.get(MAGIC.len()..head).unwrap_or(&[0; 4]));
    let version = u32::from_le_bytes(version);
    if version != VERSION {
        return Err(format!(
            "written in layout {version}, this build reads {VERSION}"
        ));
    }
    let plain = crypto
        .open_owned(Domain::FilesCache, bytes, head)
        .map_err(|e| e.to_string())?;
    let file: CacheFile = codec::decode(&plain).map_err(|e| e.to_string())?;
    if file
        .entries
        .windows(2)
        .any(|w| matches!(w, [a, b] if a.key >= b.key))
    {
        return Err("entries are not sorted or repeat a directory".into());
    }
    let n = file.snapshots.len();
    if file.entries.iter().any(|e| e.snapshot as usize >= n) {
        return Err("an entry names a snapshot the file does not list".into());
    }
    Ok(file)
}

impl FilesCache {
    /// The cache of `repo` under `root` (a directory shared by all
    /// repositories; each has its own subdirectory named by its id). A cache
    /// that cannot be used comes back empty with the reason, for a warning.
    pub(crate) fn load(repo: &Repository, root: &Path) -> (Self, Option<String>) {
        let file = root
            .join(hex::encode(repo.config().repo_id))
            .join(FILE_NAME);
        let mut cache = Self {
            file,
            nothing_deleted: false,
            loaded: HashMap::new(),
            recorded: Mutex::new(Vec::new()),
        };
        let bytes = match fs::read(&cache.file) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return (cache, None),
            Err(e) => {
                let why = format!(
                    "cannot read the files cache {}: {e}; every file is compared with the parent snapshot instead",
                    cache.file.display()
                );
                return (cache, Some(why));
            }
        };
        let parsed = match decode(repo.crypto(), bytes) {
            Ok(f) => f,
            Err(e) => {
                let why = format!(
                    "ignoring the files cache {} ({e}); it is rebuilt by this backup",
                    cache.file.display()
                );
                return (cache, Some(why));
            }
        };
        let now: HashSet<[u8; 32]> = repo.index_file_ids().into_iter().collect();
        if parsed.index_files.iter().all(|f| now.contains(f)) {
            cache.nothing_deleted = true;
            for e in parsed.entries {
                if let Some(snap) = parsed.snapshots.get(e.snapshot as usize) {
                    cache.loaded.insert(e.key, (e.clone(), *snap));
                }
            }
            return (cache, None);
        }
        // Entries whose snapshot is gone may name trees whose data prune
        // has removed.
        let existing: HashSet<SnapshotId> = match repo.listed_snapshot_ids() {
            Ok(ids) => ids,
            Err(_) => return (cache, None),
        };
        for e in parsed.entries {
            let Some(snap) = parsed.snapshots.get(e.snapshot as usize) else {
                continue;
            };
            if existing.contains(snap) {
                cache.loaded.insert(e.key, (e.clone(), *snap));
            }
        }
        (cache, None)
    }

    /// Whether no pack can have been deleted from the repository since
    /// this cache was written (its index files are all still there): then
    /// whatever a snapshot referenced at that time still exists, whether or
    /// not the snapshot has been forgotten since.
    pub(crate) fn nothing_deleted(&self) -> bool {
        self.nothing_deleted
    }

    /// The cached state of the directory with key `key`.
    pub(crate) fn lookup(&self, key: &DirKey) -> Option<Cached> {
        self.loaded.get(key).map(|(e, _)| Cached {
            state: e.state,
            tree: e.tree,
            trusted_before: e.trusted_before,
        })
    }

    /// Records that this backup stored `tree` for the directory `key` in
    /// state `state`.
    pub(crate) fn record(&self, key: DirKey, state: [u8; 32], tree: BlobId) {
        lock(&self.recorded).push((key, state, tree));
    }

    /// Writes the cache after `snapshot` was saved: the directories it
    /// recorded, plus the older entries (one backup older) that are not too
    /// old. The file is replaced atomically; a crash leaves the old one or
    /// the new one, and a torn file would fail its seal and be rebuilt.
    ///
    /// # Errors
    /// When the file cannot be written; the snapshot is saved regardless.
    pub(crate) fn save(
        self,
        repo: &Repository,
        snapshot: SnapshotId,
        trusted_before: i64,
    ) -> io::Result<()> {
        let recorded = self
            .recorded
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut snapshots: Vec<SnapshotId> = vec![snapshot];
        let mut slot: HashMap<SnapshotId, u32> = HashMap::from([(snapshot, 0)]);
        let mut entries: HashMap<DirKey, Entry> = HashMap::with_capacity(recorded.len());
        for (key, state, tree) in recorded {
            entries.insert(
                key,
                Entry {
                    key,
                    state,
                    tree,
                    trusted_before,
                    snapshot: 0,
                    age: 0,
                },
            );
        }
        for (key, (mut e, snap)) in self.loaded {
            if entries.contains_key(&key) || e.age >= MAX_AGE {
                continue;
            }
            e.age += 1;
            e.snapshot = *slot.entry(snap).or_insert_with(|| {
                snapshots.push(snap);
                u32::try_from(snapshots.len() - 1).unwrap_or(u32::MAX)
            });
            entries.insert(key, e);
        }
        let mut entries: Vec<Entry> = entries.into_values().collect();
        entries.sort_unstable_by_key(|e| e.key);
        let mut index_files = repo.index_file_ids();
        index_files.sort_unstable();
        let body = codec::encode(&CacheFile {
            snapshots,
            entries,
            index_files,
        });
        let mut bytes = Vec::with_capacity(body.len() + 64);
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        let sealed = repo
            .crypto()
            .seal(Domain::FilesCache, &body)
            .map_err(io::Error::other)?;
        bytes.extend_from_slice(&sealed);
        let dir = self
            .file
            .parent()
            .ok_or_else(|| io::Error::other("the cache file has no directory"))?;
        crate::storage::cache::create_cache_dir(dir)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".files-")
            .tempfile_in(dir)?;
        tmp.write_all(&bytes)?;
        tmp.persist(&self.file).map_err(|e| e.error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CacheFile {
        CacheFile {
            snapshots: vec![SnapshotId([3; 32]), SnapshotId([4; 32])],
            entries: vec![
                Entry {
                    key: [1; 16],
                    state: [2; 32],
                    tree: BlobId([5; 32]),
                    trusted_before: 1_700_000_000,
                    snapshot: 0,
                    age: 0,
                },
                Entry {
                    key: [9; 16],
                    state: [8; 32],
                    tree: BlobId([7; 32]),
                    trusted_before: -5,
                    snapshot: 1,
                    age: 3,
                },
            ],
            index_files: vec![[8; 32], [9; 32]],
        }
    }

    fn crypto() -> crate::format::crypto::Crypto {
        let key = crate::format::crypto::MasterKey::generate().expect("key");
        crate::format::crypto::Crypto::new(&key, true)
    }

    fn framed(c: &crate::format::crypto::Crypto, file: &CacheFile) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend(
            c.seal(Domain::FilesCache, &codec::encode(file))
                .expect("seal"),
        );
        bytes
    }

    #[test]
    fn cache_file_round_trips_and_rejects_damage() {
        let c = crypto();
        let bytes = framed(&c, &sample());
        assert_eq!(decode(&c, bytes.clone()).expect("decodes"), sample());
        for i in [0, 9, 20, bytes.len() - 1] {
            let mut bad = bytes.clone();
            if let Some(b) = bad.get_mut(i) {
                *b ^= 1;
            }
            assert!(decode(&c, bad).is_err(), "byte {i} flipped");
        }
        assert!(decode(&crypto(), bytes.clone()).is_err(), "another key");
        assert!(
            decode(
                &c,
                bytes.get(..bytes.len() - 1).unwrap_or_default().to_vec()
            )
            .is_err()
        );
        let mut unsorted = sample();
        unsorted.entries.reverse();
        assert!(decode(&c, framed(&c, &unsorted)).is_err());
        let mut dangling = sample();
        if let Some(e) = dangling.entries.first_mut() {
            e.snapshot = 2;
        }
        assert!(decode(&c, framed(&c, &dangling)).is_err());
    }

    #[test]
    fn state_digest_sees_every_field_that_makes_a_node() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a");
        fs::write(&a, b"one").expect("write");
        let meta = fs::symlink_metadata(&a).expect("stat");
        let digest = |name: &[u8], sub: Option<&BlobId>| {
            let mut h = StateHasher::new();
            h.entry(name, &meta, sub);
            h.finish()
        };
        let base = digest(b"a", None);
        assert_eq!(base, digest(b"a", None));
        assert_ne!(base, digest(b"b", None));
        assert_ne!(base, digest(b"a", Some(&BlobId([0; 32]))));
        assert_ne!(
            digest(b"a", Some(&BlobId([0; 32]))),
            digest(b"a", Some(&BlobId([1; 32])))
        );
        // Another file with the same name, size and content: another inode.
        let b = dir.path().join("b");
        fs::write(&b, b"one").expect("write");
        let other = fs::symlink_metadata(&b).expect("stat");
        let mut h = StateHasher::new();
        h.entry(b"a", &other, None);
        assert_ne!(base, h.finish());
    }
}
