//! Writing blobs: [`BlobWriter`] compresses and seals blobs into packs,
//! hands full packs to writer threads, and writes the index files that
//! name them (packs first, then their index: store-format.md §9, §10,
//! §14). The pack layout itself is encoded by `format::pack`; this file
//! does the I/O.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{Error, Result};
use crate::format::crypto::{Crypto, Domain};
use crate::format::index::{self, IndexFile, IndexPack};
use crate::format::pack::{self, BlobKind, Compression, PackEntry};
use crate::id::{BlobId, PackId};
use crate::repo::Repository;
use crate::storage::{Backend, FileKind, StagedFile};
use crate::sync::lock;

thread_local! {
    /// Per-thread buffers for a blob's compressed and sealed forms, reused
    /// so that storing a blob allocates nothing.
    static SCRATCH: std::cell::RefCell<(Vec<u8>, Vec<u8>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Keeps a reused buffer small between uses: a rare large chunk should not
/// pin megabytes in every worker for the rest of the run.
pub(crate) fn shrink_scratch(buf: &mut Vec<u8>) {
    const KEEP: usize = 1 << 20;
    if buf.capacity() > KEEP {
        buf.clear();
        buf.shrink_to(KEEP);
    }
}

/// A pack closes when it holds this many blobs, whatever its size.
const MAX_PACK_ENTRIES: usize = 1 << 16;

/// At most this many blob entries go into one index file (unless one pack
/// has more). A backup writes an index file whenever its packs reach this
/// many entries: memory for unindexed packs stays bounded, an interrupted
/// backup leaves most of its data indexed for the next run to reuse, and
/// readers decode index files a few at a time in little memory.
const MAX_INDEX_ENTRIES: usize = 1 << 16;

impl Repository {
    /// Starts a pack of `kind`; tree packs of a remote repository are also
    /// kept in the local cache, since every later backup reads them.
    fn stage_pack(&self, kind: BlobKind) -> Result<Box<dyn StagedFile>> {
        match (&self.cache, kind) {
            (Some(cache), BlobKind::Tree) => cache.stage_keeping_copy(),
            _ => self.backend.stage(FileKind::Pack),
        }
    }

    /// Starts writing blobs.
    #[must_use]
    pub fn blob_writer(&self) -> BlobWriter<'_> {
        let written = Arc::new(Mutex::new(Vec::new()));
        let bytes_stored = Arc::new(AtomicU64::new(0));
        let failure = Arc::new(Mutex::new(None));
        // A rendezvous queue: one pack being written per writer thread, one
        // handed over and one being filled at most, so memory stays at a few
        // packs while workers keep compressing during the writer's fsync.
        // A remote store gets several writers: there an upload's time is
        // mostly round trips, not local disk bandwidth.
        let (tx, rx) = std::sync::mpsc::sync_channel::<OpenPack>(0);
        let rx = Arc::new(Mutex::new(rx));
        let writers = if self.backend.is_remote() {
            remote_pack_writers(self.config.pack_target_size)
        } else {
            1
        };
        let mut handles = Vec::new();
        for n in 0..writers {
            let (backend, crypto) = (Arc::clone(&self.backend), self.crypto.clone());
            let (done, stored, failed, rx) = (
                Arc::clone(&written),
                Arc::clone(&bytes_stored),
                Arc::clone(&failure),
                Arc::clone(&rx),
            );
            let spawned = std::thread::Builder::new()
                .name(format!("cairn-pack-writer-{n}"))
                .spawn(move || {
                    loop {
                        // The guard is dropped before the pack is written,
                        // so the other writers can take the next one.
                        let next = lock(&rx).recv();
                        let Ok(open) = next else { return };
                        match open.finish(&crypto, backend.as_ref()) {
                            Ok((packed, existed)) => {
                                if !existed {
                                    stored.fetch_add(packed.size, Ordering::Relaxed);
                                }
                                lock(&done).push((packed, !existed));
                            }
                            Err(e) => {
                                lock(&failed).get_or_insert(e);
                                return;
                            }
                        }
                    }
                });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    *lock(&failure) = Some(Error::internal(format!(
                        "cannot start a pack writer thread: {e}"
                    )));
                    break;
                }
            }
        }
        let tx = (handles.len() == writers).then_some(tx);
        BlobWriter {
            repo: self,
            seen: Mutex::new(HashSet::new()),
            data_pack: Mutex::new(None),
            tree_pack: Mutex::new(None),
            written,
            indexed: Mutex::new(Vec::new()),
            blobs_added: AtomicU64::new(0),
            bytes_added: AtomicU64::new(0),
            bytes_stored,
            queue: Mutex::new(tx),
            uploader: Mutex::new(handles),
            failure,
        }
    }
}

/// Pack writer threads for a remote backend: enough uploads at once to
/// hide round trips, bounded by the memory they hold (a whole pack each
/// while it is uploaded): four for 16 MiB packs, two for 64 MiB ones.
fn remote_pack_writers(pack_size: u32) -> usize {
    usize::try_from((128 << 20) / pack_size.max(1))
        .unwrap_or(1)
        .clamp(1, 4)
}

/// Adds blobs to packs, deduplicating against the index, and writes the
/// index for them when finished. Shared by worker threads.
pub struct BlobWriter<'r> {
    repo: &'r Repository,
    seen: Mutex<HashSet<BlobId>>,
    /// The packs being filled, staged in storage as they grow: one for file
    /// contents and one for trees. Trees never share a pack with file
    /// contents, so a damaged data pack leaves every directory readable
    /// (verify and restore still name and restore the other files), however
    /// the threads storing chunks interleave.
    data_pack: Mutex<Option<OpenPack>>,
    tree_pack: Mutex<Option<OpenPack>>,
    /// Packs written in this session, not yet in any index, each with
    /// whether this session created the file (and may delete it).
    written: Arc<Mutex<Vec<(IndexPack, bool)>>>,
    /// Packs this writer has put in index files, created or found already
    /// there (an unencrypted pack with the same bytes).
    indexed: Mutex<Vec<PackId>>,
    blobs_added: AtomicU64,
    bytes_added: AtomicU64,
    bytes_stored: Arc<AtomicU64>,
    /// Full packs on their way to the writer thread; `None` once closed.
    queue: Mutex<Option<std::sync::mpsc::SyncSender<OpenPack>>>,
    uploader: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// The writer thread's error, which stops it.
    failure: Arc<Mutex<Option<Error>>>,
}

/// A pack being written: blobs go straight to a staged file, so memory does
/// not grow with the pack size; the id is hashed along the way.
struct OpenPack {
    file: Box<dyn StagedFile>,
    hasher: blake3::Hasher,
    len: u64,
    entries: Vec<PackEntry>,
}

fn staged_err(e: std::io::Error) -> Error {
    Error::Backend {
        op: "write",
        path: "a new pack".into(),
        source: e,
    }
}

impl OpenPack {
    fn new(file: Box<dyn StagedFile>) -> Self {
        Self {
            file,
            hasher: blake3::Hasher::new(),
            len: 0,
            entries: Vec::new(),
        }
    }

    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        self.file.write_all(bytes).map_err(staged_err)?;
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn add(
        &mut self,
        id: BlobId,
        kind: BlobKind,
        compression: Compression,
        raw_length: u32,
        sealed: &[u8],
    ) -> Result<()> {
        let offset =
            u32::try_from(self.len).map_err(|_| Error::internal("a pack grew beyond 4 GiB"))?;
        let length = u32::try_from(sealed.len())
            .map_err(|_| Error::internal("a blob larger than 4 GiB cannot be stored"))?;
        self.append(sealed)?;
        self.entries.push(PackEntry {
            id,
            kind,
            compression,
            offset,
            length,
            raw_length,
        });
        Ok(())
    }

    /// Writes header and trailer, and commits the file under its hash.
    /// Returns `None` when an identical pack already exists (unencrypted
    /// repositories seal deterministically): that file is someone else's,
    /// so this session must not list it as its own to delete on failure.
    fn finish(mut self, crypto: &Crypto, backend: &dyn Backend) -> Result<(IndexPack, bool)> {
        let tail = pack::header_and_trailer(crypto, &self.entries)?;
        self.append(&tail)?;
        let id = PackId(*self.hasher.finalize().as_bytes());
        let name = id.to_hex();
        // Only deterministic (unencrypted) sealing can produce a pack that
        // already exists; asking costs a request per pack on object storage.
        let existed = !crypto.is_encrypted()
            && backend
                .size(FileKind::Pack, &name)
                .is_ok_and(|s| s == self.len);
        if !existed {
            self.file.commit(&name)?;
        }
        Ok((
            IndexPack {
                id,
                size: self.len,
                entries: self.entries,
            },
            existed,
        ))
    }
}

/// What a [`BlobWriter`] added.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteStats {
    /// New blobs.
    pub blobs_added: u64,
    /// Their plaintext bytes.
    pub bytes_added: u64,
    /// Bytes written to the repository.
    pub bytes_stored: u64,
}

impl BlobWriter<'_> {
    /// Stores `plain` unless the repository already has it; returns its id
    /// and whether it was new.
    ///
    /// # Errors
    /// Backend errors while writing a full pack.
    pub fn save(&self, kind: BlobKind, plain: &[u8]) -> Result<(BlobId, bool)> {
        self.store(kind, plain, true)
    }

    /// Stores `plain` again although the index has it (prune copies the
    /// used blobs out of packs it is about to delete); once per writer.
    ///
    /// # Errors
    /// As [`BlobWriter::save`].
    pub(crate) fn save_again(&self, kind: BlobKind, plain: &[u8]) -> Result<(BlobId, bool)> {
        self.store(kind, plain, false)
    }

    fn store(&self, kind: BlobKind, plain: &[u8], dedup_index: bool) -> Result<(BlobId, bool)> {
        let id = self.repo.crypto.blob_id(plain);
        let new = {
            // `seen` is locked across the index lookup: `flush_index` adds
            // ids to the index before it removes them from `seen`, so every
            // id is always in one of the two for this check.
            let mut seen = lock(&self.seen);
            !(dedup_index && self.repo.index().contains(&id)) && seen.insert(id)
        };
        if !new {
            return Ok((id, false));
        }
        let raw_length = u32::try_from(plain.len())
            .map_err(|_| Error::internal("a blob larger than 4 GiB cannot be stored"))?;
        let level = self.repo.config.compression_level;
        let full = SCRATCH.with_borrow_mut(|(compressed, sealed)| -> Result<Option<OpenPack>> {
            let compression = if level > 0
                && plain.len() > 64
                && crate::format::compress::compress_smaller(plain, level, compressed)
            {
                Compression::Zstd
            } else {
                Compression::None
            };
            let payload = match compression {
                Compression::Zstd => compressed.as_slice(),
                Compression::None => plain,
            };
            self.repo.crypto.seal_into(Domain::Blob, payload, sealed)?;
            let mut cur = lock(self.open_pack(kind));
            let open = match cur.as_mut() {
                Some(open) => open,
                None => cur.insert(OpenPack::new(self.repo.stage_pack(kind)?)),
            };
            open.add(id, kind, compression, raw_length, sealed)?;
            // Packs also close at a number of entries that keeps the header
            // (52 bytes an entry) far below the record limit.
            let full = if open.len >= u64::from(self.repo.config.pack_target_size)
                || open.entries.len() >= MAX_PACK_ENTRIES
            {
                cur.take()
            } else {
                None
            };
            drop(cur);
            shrink_scratch(compressed);
            shrink_scratch(sealed);
            Ok(full)
        })?;
        self.blobs_added.fetch_add(1, Ordering::Relaxed);
        self.bytes_added
            .fetch_add(plain.len() as u64, Ordering::Relaxed);
        if let Some(builder) = full {
            self.write_pack(builder)?;
            self.flush_index(false)?;
        }
        Ok((id, true))
    }

    /// The pack that blobs of `kind` are added to.
    fn open_pack(&self, kind: BlobKind) -> &Mutex<Option<OpenPack>> {
        match kind {
            BlobKind::Data => &self.data_pack,
            BlobKind::Tree => &self.tree_pack,
        }
    }

    /// Hands a full pack to the writer thread (waiting while it is busy
    /// with the previous two).
    fn write_pack(&self, builder: OpenPack) -> Result<()> {
        let sent = match lock(&self.queue).as_ref() {
            Some(tx) => tx.send(builder).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            Err(self.writer_failure())
        }
    }

    fn writer_failure(&self) -> Error {
        lock(&self.failure)
            .take()
            .unwrap_or_else(|| Error::internal("the pack writer stopped after an earlier error"))
    }

    /// Closes the queue and waits until every queued pack is written.
    fn drain_writer(&self) -> Result<()> {
        drop(lock(&self.queue).take());
        let handles = std::mem::take(&mut *lock(&self.uploader));
        for handle in handles {
            if handle.join().is_err() {
                return Err(Error::internal("a pack writer thread panicked"));
            }
        }
        match lock(&self.failure).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Writes the last pack and the index files for every pack of this
    /// session. Only after this returns may a snapshot refer to the blobs.
    ///
    /// # Errors
    /// Backend errors; packs not yet in an index stay listed for
    /// [`BlobWriter::abandon`].
    pub fn finish(&self) -> Result<WriteStats> {
        for kind in [BlobKind::Data, BlobKind::Tree] {
            let last = lock(self.open_pack(kind)).take();
            if let Some(last) = last {
                self.write_pack(last)?;
            }
        }
        self.drain_writer()?;
        self.flush_index(true)?;
        Ok(self.stats())
    }

    /// Writes index files for the written packs: all of them when `all`,
    /// otherwise only full index files' worth.
    fn flush_index(&self, all: bool) -> Result<()> {
        loop {
            // Take packs for one index file, keeping it far below the
            // decoder's record limit (an entry encodes to 52 bytes).
            let group: Vec<(IndexPack, bool)> = {
                let mut written = lock(&self.written);
                let mut entries = 0;
                let n = written
                    .iter()
                    .take_while(|(p, _)| {
                        entries += p.entries.len();
                        entries <= MAX_INDEX_ENTRIES || entries == p.entries.len()
                    })
                    .count();
                let total: usize = written.iter().map(|(p, _)| p.entries.len()).sum();
                if !all && n == written.len() && total < MAX_INDEX_ENTRIES {
                    // Not a full file yet.
                    return Ok(());
                }
                written.drain(..n).collect()
            };
            if group.is_empty() {
                return Ok(());
            }
            let file = IndexFile {
                packs: group.iter().map(|(p, _)| p.clone()).collect(),
            };
            let (id, bytes) = match index::encode_file(&self.repo.crypto, &file) {
                Ok(encoded) => encoded,
                Err(e) => {
                    lock(&self.written).extend(group);
                    return Err(e);
                }
            };
            let name = id.to_hex();
            if let Err(e) = self.repo.backend.write(FileKind::Index, &name, &bytes) {
                // If the index file is there after all (the failure came
                // after the rename, say while syncing the directory), its
                // packs must stay; only packs surely unindexed go back for
                // `abandon`.
                if self.repo.backend.size(FileKind::Index, &name).is_err() {
                    lock(&self.written).extend(group);
                }
                return Err(e);
            }
            self.bytes_stored
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            {
                // Kept sorted, as a listing is, so that a later
                // `refresh_index` that finds just these sees no change.
                let mut names = lock(&self.repo.index_names);
                if let Err(at) = names.binary_search(&name) {
                    names.insert(at, name.clone());
                }
            }
            {
                let mut index = self
                    .repo
                    .index
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                for p in &file.packs {
                    index.add_pack(p)?;
                }
            }
            lock(&self.indexed).extend(file.packs.iter().map(|p| p.id));
            // Only now that the index has them may `seen` forget them.
            let mut seen = lock(&self.seen);
            for p in &file.packs {
                for e in &p.entries {
                    seen.remove(&e.id);
                }
            }
        }
    }

    /// Deletes the packs this session wrote that no index file names yet.
    /// Nothing can refer to their blobs, so this is always safe.
    pub fn abandon(&self) {
        let _ = self.drain_writer();
        for (p, _) in std::mem::take(&mut *lock(&self.written))
            .into_iter()
            .filter(|(_, created)| *created)
        {
            let _ = self.repo.backend.delete(FileKind::Pack, &p.id.to_hex());
        }
    }

    /// The packs this writer has put in index files. An unencrypted
    /// repository seals deterministically, so one may be a file that was
    /// already there (say a pack an interrupted prune wrote): whoever
    /// deletes packs must keep these.
    pub(crate) fn indexed_packs(&self) -> HashSet<PackId> {
        lock(&self.indexed).iter().copied().collect()
    }

    /// Counts so far.
    #[must_use]
    pub fn stats(&self) -> WriteStats {
        WriteStats {
            blobs_added: self.blobs_added.load(Ordering::Relaxed),
            bytes_added: self.bytes_added.load(Ordering::Relaxed),
            bytes_stored: self.bytes_stored.load(Ordering::Relaxed),
        }
    }
}
