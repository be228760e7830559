//! The merged index of an open repository: loading it (on first need, or
//! again when its files changed), the index files that could not be read,
//! and the headers of packs no index describes, read as a fallback.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::format::index::{self, Index, IndexFile, IndexPack, Location};
use crate::id::{BlobId, IndexId, PackId};
use crate::repo::Repository;
use crate::storage::FileKind;
use crate::sync::lock;

impl Repository {
    /// The names of the index files loaded, for tests.
    #[cfg(test)]
    pub(crate) fn loaded_index_names(&self) -> Vec<String> {
        lock(&self.index_names).clone()
    }

    /// Whether the index was loaded and found no index file at all: a new
    /// repository (or one that lost every index file), whose snapshots, if
    /// any, could not serve as a parent.
    pub(crate) fn has_no_index_files(&self) -> bool {
        self.index_loaded.load(Ordering::Acquire) && lock(&self.index_names).is_empty()
    }

    /// The ids of the index files loaded, and of those written since by
    /// this process.
    pub(crate) fn index_file_ids(&self) -> Vec<[u8; 32]> {
        lock(&self.index_names)
            .iter()
            .filter_map(|n| {
                let mut id = [0u8; 32];
                hex::decode_to_slice(n, &mut id).ok().map(|()| id)
            })
            .collect()
    }

    /// Loads the index again if its files changed since it was loaded
    /// (another process wrote or pruned), or for the first time: a lock
    /// holder must work from the index as it is under the lock, not as it
    /// was before.
    ///
    /// # Errors
    /// When the index cannot be listed or read.
    pub fn refresh_index(&self) -> Result<bool> {
        self.refresh_index_from(self.backend.list(FileKind::Index)?)
    }

    fn refresh_index_from(&self, listed: Vec<(String, u64)>) -> Result<bool> {
        let mut names: Vec<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        if self.index_loaded.load(Ordering::Acquire) && *lock(&self.index_names) == names {
            return Ok(false);
        }
        self.load_index_from(listed, false)?;
        Ok(true)
    }

    /// Takes a shared lock for an operation that only adds data (backup)
    /// and loads the index as it is under the lock, from the listing that
    /// took the lock where the storage lists both at once.
    ///
    /// Such a listing may have read `index/` before `locks/`
    /// (`crate::storage::LocksAndIndex::index_read_first`). It may then
    /// miss index files written by a backup that finished meanwhile, which
    /// costs at most a blob stored twice, and it may name files deleted by
    /// a prune that finished meanwhile, which must not be trusted: so it is
    /// used only when it names no file, or when every file it names is read
    /// from the storage now and all are still there; otherwise `index/` is
    /// listed again. Where index files are already cached or loaded, those
    /// reads would be wasted: then `locks/` and `index/` are listed one
    /// after the other, as for every other lock.
    ///
    /// # Errors
    /// As [`Repository::lock`] and [`Repository::refresh_index`].
    pub fn lock_to_add(&self, operation: &str) -> Result<crate::repo::lock::Lock> {
        // Where index files are cached or loaded, the index part of a
        // combined listing would be listed again anyway: list locks/ alone
        // then, so a large index/ is not listed twice.
        let with_index = !self.index_loaded.load(Ordering::Acquire)
            && self
                .cache()
                .is_none_or(|c| c.cached_names(FileKind::Index).is_empty());
        let (held, listed) = self.lock_listing(false, operation, with_index)?;
        let Some(listed) = listed else {
            self.refresh_index()?;
            return Ok(held);
        };
        if !listed.index_read_first || listed.index.is_empty() {
            self.refresh_index_from(listed.index)?;
            return Ok(held);
        }
        // Every file is read from the store, past any copy another process
        // of this host cached meanwhile: one found gone means a prune
        // overtook the listing.
        if self.load_index_from(listed.index, true)? > 0 {
            self.refresh_index()?;
        }
        Ok(held)
    }

    /// Loads the index unless it was loaded already.
    ///
    /// # Errors
    /// When the index cannot be listed or read.
    pub fn ensure_index(&self) -> Result<()> {
        if self.index_loaded.load(Ordering::Acquire) {
            return Ok(());
        }
        self.load_index_from(self.backend.list(FileKind::Index)?, false)
            .map(|_| ())
    }

    /// Loads the index from the listed files, reading each from the
    /// storage rather than the cache with `fresh`; returns how many were
    /// listed but found gone.
    fn load_index_from(&self, mut names: Vec<(String, u64)>, fresh: bool) -> Result<usize> {
        use rayon::prelude::*;
        names.sort();
        let loaded: Vec<String> = names.iter().map(|(n, _)| n.clone()).collect();
        // A few files at a time are read and decoded in parallel, then
        // folded into the index and dropped, so memory holds the compact
        // index plus a handful of decoded files, however many there are.
        let batch = rayon::current_num_threads().max(1);
        let mut errors = Vec::new();
        let mut gone = 0usize;
        let files = names.chunks(batch).flat_map(|chunk| {
            let decoded: Vec<(String, Result<IndexFile>)> = chunk
                .par_iter()
                .map(|(name, _)| (name.clone(), self.read_index_file_from(name, fresh)))
                .collect();
            decoded
        });
        let files = files.filter_map(|(name, file)| match file {
            Ok(file) => Some(Ok(file)),
            // Deleted since it was listed (by a prune that finished just
            // before this process took its lock, on a store whose listings
            // lag behind deletions): it is simply not there.
            Err(e) if e.is_not_found() && self.vanished(FileKind::Index, &name) => {
                gone += 1;
                None
            }
            Err(e) => {
                errors.push((name.parse().unwrap_or_default(), e.to_string()));
                None
            }
        });
        let index = Index::build(files)?;
        *lock(&self.index_errors) = errors;
        *self.index.write().unwrap_or_else(PoisonError::into_inner) = index;
        *lock(&self.index_names) = loaded;
        *lock(&self.unindexed) = None;
        self.index_loaded.store(true, Ordering::Release);
        Ok(gone)
    }

    /// Reads and checks one index file.
    ///
    /// # Errors
    /// Backend errors, or [`Error::Corrupt`] naming the file.
    pub fn read_index_file(&self, name: &str) -> Result<IndexFile> {
        self.read_index_file_from(name, false)
    }

    fn read_index_file_from(&self, name: &str, fresh: bool) -> Result<IndexFile> {
        let bytes = match self.cache() {
            Some(cache) if fresh => cache.read_fresh(FileKind::Index, name)?,
            _ => self.backend.read(FileKind::Index, name)?,
        };
        if IndexId::hash_of(&bytes).to_hex() != name {
            return Err(Error::corrupt(
                format!("index {name}"),
                "its content does not match its name",
            ));
        }
        index::decode_file_owned(&self.crypto, bytes)
            .map_err(|r| Error::corrupt(format!("index {name}"), r))
    }

    /// Index files that could not be read (reported by `verify`).
    #[must_use]
    pub fn index_errors(&self) -> Vec<(IndexId, String)> {
        lock(&self.index_errors).clone()
    }

    /// Read access to the merged index.
    pub fn index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        // Callers that can report a failure load it first
        // (`ensure_index`, `refresh_index`); here a failure to load leaves
        // the index empty, so every blob reads as not indexed.
        let _ = self.ensure_index();
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The plaintext length of a stored blob, from the index.
    ///
    /// # Errors
    /// [`Error::BlobNotIndexed`].
    pub(crate) fn raw_length(&self, id: &BlobId) -> Result<u32> {
        self.locate(id).map(|(_, loc)| loc.raw_length)
    }

    pub(super) fn locate(&self, id: &BlobId) -> Result<(PackId, Location)> {
        self.ensure_index()?;
        {
            let index = self.index();
            if let Some(loc) = index.get(id)
                && let Some(pack) = index.pack_id(loc.pack)
            {
                return Ok((pack, loc));
            }
        }
        // Fall back to packs that no index describes (their index file was
        // lost, or a backup was interrupted after writing them).
        let mut extra = lock(&self.unindexed);
        if extra.is_none() {
            *extra = Some(self.scan_unindexed_packs());
        }
        let found = extra
            .as_ref()
            .and_then(|x| x.get(id).and_then(|loc| Some((x.pack_id(loc.pack)?, loc))))
            .ok_or(Error::BlobNotIndexed { id: *id })?;
        self.used_unindexed.store(true, Ordering::Relaxed);
        Ok(found)
    }

    /// True when some blob read so far was found only by scanning packs
    /// that no index lists: the data was there, but the index is damaged
    /// or incomplete.
    #[must_use]
    pub fn used_unindexed_packs(&self) -> bool {
        self.used_unindexed.load(Ordering::Relaxed)
    }

    fn scan_unindexed_packs(&self) -> Index {
        let mut extra = Index::default();
        let Ok(packs) = self.backend.list(FileKind::Pack) else {
            return extra;
        };
        let index = self.index();
        for (name, size) in packs {
            let Ok(id) = name.parse::<PackId>() else {
                continue;
            };
            if index.has_pack(&id) {
                continue;
            }
            if let Ok(entries) = self.read_pack_header(&id, size)
                && extra.add_pack(&IndexPack { id, size, entries }).is_err()
            {
                break;
            }
        }
        extra
    }
}
