//! Copying snapshots from one repository into another (`cairn copy`), and
//! the *related* repositories that make such copies cheap (`init
//! --from-repo`).
//!
//! A blob's id is keyed with its repository's id key (store-format.md §8),
//! so two repositories normally name the same content differently. A
//! repository created *related* to another takes that one's id key and
//! chunker seed and parameters (but draws its own encryption key): the same
//! file then gives the same chunks and the same ids in both, a copy can skip
//! every blob the target already has without reading it, and later backups
//! into either deduplicate against the copied data. Between unrelated
//! repositories a copy still works: every blob is read, named again with the
//! target's key, and the trees and chunk lists that refer to it are
//! rewritten with the new ids.
//!
//! A copied snapshot keeps its metadata; its `original` names the snapshot
//! it copies (the first one, along a chain of copies), which is how a later
//! copy recognises what the target already holds. Writing follows the
//! store's order: packs, then the index naming them
//! ([`crate::repo::BlobWriter::finish`]), and only then the snapshot files,
//! so an interrupted copy leaves a valid target whose new packs at worst
//! nobody refers to yet.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::pack::BlobKind;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{NodeKind, Tree};
use crate::id::{BlobId, SnapshotId};
use crate::ops::backup::Progress;
use crate::repo::audit::{Audited, Event};
use crate::repo::chunklist;
use crate::repo::lock::Lock;
use crate::repo::{BlobWriter, Repository};
use crate::sync::lock;

/// One snapshot `copy` looked at.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct CopiedSnapshot {
    /// Its id in the source.
    pub source: SnapshotId,
    /// Its copy's id in the target.
    pub target: SnapshotId,
    /// `false` when the target already held a copy (`target` names it).
    pub copied: bool,
}

/// What [`copy()`] did.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct CopyReport {
    /// Every snapshot asked for, oldest first.
    pub snapshots: Vec<CopiedSnapshot>,
    /// Whether the repositories share blob ids ([`Repository::shares_blob_ids`]): if
    /// not, every blob of a copied snapshot was read and named again.
    pub shared_ids: bool,
    /// Blobs read from the source.
    pub blobs_read: u64,
    /// Blobs added to the target (data, trees and chunk lists).
    pub blobs_transferred: u64,
    /// Plaintext bytes of the blobs added.
    pub bytes_transferred: u64,
    /// Bytes written to the target: packs and index files (snapshot files
    /// not counted).
    pub bytes_stored: u64,
}

impl CopyReport {
    /// Snapshots copied by this run.
    #[must_use]
    pub fn copied(&self) -> usize {
        self.snapshots.iter().filter(|s| s.copied).count()
    }

    /// Snapshots the target already held.
    #[must_use]
    pub fn skipped(&self) -> usize {
        self.snapshots.len() - self.copied()
    }
}

/// Once a batch of copied snapshots has added this many times the pack size
/// in plaintext, its packs and index are finished and its snapshots
/// written: packs stay full-sized when many small snapshots are copied,
/// while an interrupted copy of many large ones keeps most of its work.
const BATCH_PACKS: u64 = 4;

/// Copies `snapshots` of `src` into `dst`, oldest first, transferring only
/// the blobs `dst` lacks. A snapshot `dst` already holds a copy of (its
/// `original`, or the same snapshot id) is skipped. Takes a shared lock on
/// both repositories (`copy` on the target, which refuses `--no-lock`, as
/// backup does) and records a `copy` event in the target's audit log.
///
/// # Errors
/// [`Error::Invalid`] when `src` and `dst` are one repository; missing or
/// damaged snapshots or blobs in the source; lock and backend errors. The
/// snapshots finished before an error are written to the target first.
pub fn copy(
    src: &Repository,
    dst: &Repository,
    snapshots: &[SnapshotId],
    progress: &dyn Progress,
) -> Result<CopyReport> {
    if src.config().repo_id == dst.config().repo_id {
        return Err(Error::invalid(format!(
            "{} and {} are the same repository: copy needs another repository as its target",
            src.backend().location(),
            dst.backend().location()
        )));
    }
    let what = format!("from {}", src.backend().location());
    Event::new(dst, "copy", what).run(|_| copy_locked(src, dst, snapshots, progress))
}

impl Audited for CopyReport {
    fn audit(&self) -> (bool, String) {
        let detail = format!(
            "{} copied, {} already there, {} blobs ({} bytes) added{}",
            self.copied(),
            self.skipped(),
            self.blobs_transferred,
            self.bytes_transferred,
            self.snapshots
                .iter()
                .filter(|s| s.copied)
                .map(|s| format!("; {} -> {}", s.source.short(), s.target.short()))
                .collect::<String>()
        );
        (true, detail)
    }
}

/// Copies `snapshots` holding a shared lock on both repositories.
fn copy_locked(
    src: &Repository,
    dst: &Repository,
    snapshots: &[SnapshotId],
    progress: &dyn Progress,
) -> Result<CopyReport> {
    // The source lock keeps prune from deleting what is being read; the
    // target lock keeps prune from deleting blobs this copy skips because
    // the target has them. Both indexes are taken as they are under the
    // locks.
    let src_lock = src.lock(false, "copy-from")?;
    src.refresh_index()?;
    let dst_lock = dst.lock(false, "copy")?;
    dst.refresh_index()?;
    let mut wanted = Vec::new();
    let mut seen = HashSet::new();
    for id in snapshots {
        if seen.insert(*id) {
            wanted.push((*id, src.read_snapshot(id)?));
        }
    }
    wanted.sort_by_key(|(id, s)| (s.time, s.time_nsec, *id));
    // What the target holds: each of its snapshots under its own id and
    // under the id of the snapshot it is a copy of.
    let mut known: HashMap<SnapshotId, SnapshotId> = HashMap::new();
    for (id, snap) in dst.snapshots()? {
        known.insert(id, id);
        if let Ok(Snapshot {
            original: Some(original),
            ..
        }) = snap
        {
            known.entry(original).or_insert(id);
        }
    }
    let copier = Copier {
        src,
        dst,
        shared: src.shares_blob_ids(dst),
        trees: Mutex::new(HashMap::new()),
        lists: Mutex::new(HashMap::new()),
        data: Mutex::new(HashMap::new()),
        blobs_read: std::sync::atomic::AtomicU64::new(0),
        progress,
    };
    let mut run = Run {
        src,
        dst,
        locks: [&src_lock, &dst_lock],
        known,
        pending: Vec::new(),
        report: CopyReport {
            shared_ids: copier.shared,
            ..CopyReport::default()
        },
    };
    let batch_limit = BATCH_PACKS * u64::from(dst.config().pack_target_size);
    let mut writer = dst.blob_writer();
    for (id, snap) in wanted {
        let origin = snap.original.unwrap_or(id);
        if let Some(there) = run.known.get(&origin).or_else(|| run.known.get(&id)) {
            run.report.snapshots.push(CopiedSnapshot {
                source: id,
                target: *there,
                copied: false,
            });
            continue;
        }
        progress.file();
        let root = match crate::repo::in_pool(|| copier.tree(&writer, &snap.tree)) {
            Ok(root) => root,
            Err(e) => {
                // The snapshots pending are complete: keep them, then fail.
                if run.flush(&writer).is_err() {
                    writer.abandon();
                }
                return Err(e);
            }
        };
        run.pending.push((id, Snapshot { tree: root, ..snap }));
        if writer.stats().bytes_added >= batch_limit {
            run.flush(&writer).inspect_err(|_| writer.abandon())?;
            writer = dst.blob_writer();
        }
    }
    run.flush(&writer).inspect_err(|_| writer.abandon())?;
    let mut report = run.report;
    report.blobs_read = copier.blobs_read();
    drop(dst_lock);
    drop(src_lock);
    Ok(report)
}

/// The state of one run between batches.
struct Run<'a> {
    src: &'a Repository,
    dst: &'a Repository,
    /// Held on the source and the target.
    locks: [&'a Lock; 2],
    /// Source snapshot ids and originals → the target's copy.
    known: HashMap<SnapshotId, SnapshotId>,
    /// Snapshots whose blobs are in the current writer, with their new
    /// root trees, oldest first.
    pending: Vec<(SnapshotId, Snapshot)>,
    report: CopyReport,
}

impl Run<'_> {
    /// Finishes `writer` (its packs and their index) and only then writes
    /// the pending snapshots, oldest first, so that a snapshot's parent
    /// copied in the same batch is already known when it is written.
    fn flush(&mut self, writer: &BlobWriter<'_>) -> Result<()> {
        for held in self.locks {
            held.check()?;
        }
        let stats = writer.finish()?;
        self.report.blobs_transferred += stats.blobs_added;
        self.report.bytes_transferred += stats.bytes_added;
        self.report.bytes_stored += stats.bytes_stored;
        for (source, mut snap) in std::mem::take(&mut self.pending) {
            let origin = snap.original.unwrap_or(source);
            // The parent becomes the target's copy of the source's parent,
            // when the target has one (known by the parent's id, or by its
            // original if the parent is itself a copy); otherwise none: it
            // is only where backup looked for unchanged files.
            snap.parent = snap.parent.and_then(|p| {
                self.known.get(&p).copied().or_else(|| {
                    let original = self.src.read_snapshot(&p).ok()?.original?;
                    self.known.get(&original).copied()
                })
            });
            snap.original = Some(origin);
            for held in self.locks {
                held.check()?;
            }
            let target = self.dst.save_snapshot(&snap)?;
            self.known.insert(origin, target);
            self.known.insert(source, target);
            self.report.snapshots.push(CopiedSnapshot {
                source,
                target,
                copied: true,
            });
        }
        Ok(())
    }
}

/// The walk of one run: what has been copied so far, so that a tree, list
/// or blob shared by several files or snapshots is handled once.
struct Copier<'a> {
    src: &'a Repository,
    dst: &'a Repository,
    /// The repositories share blob ids: blobs are copied byte for byte and
    /// keep their ids; otherwise every blob is named again.
    shared: bool,
    /// Source tree id → target tree id.
    trees: Mutex<HashMap<BlobId, BlobId>>,
    /// Source chunk list (root, depth) → target (root, depth).
    lists: Mutex<HashMap<(BlobId, u8), (BlobId, u8)>>,
    /// Source data blob id → target id, for blobs handled in this run.
    data: Mutex<HashMap<BlobId, BlobId>>,
    blobs_read: std::sync::atomic::AtomicU64,
    progress: &'a dyn Progress,
}

impl Copier<'_> {
    fn blobs_read(&self) -> u64 {
        self.blobs_read.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn read(&self, id: &BlobId) -> Result<Vec<u8>> {
        let plain = self.src.read_blob(id)?;
        self.blobs_read
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(plain)
    }

    /// Stores `plain` in the target; with shared ids it must keep `id`.
    fn save(
        &self,
        writer: &BlobWriter<'_>,
        kind: BlobKind,
        id: &BlobId,
        plain: &[u8],
    ) -> Result<BlobId> {
        let (new, added) = writer.save(kind, plain)?;
        if self.shared && new != *id {
            // Cannot happen when the probe ids agree; refuse rather than
            // write a snapshot whose trees name blobs the target lacks.
            return Err(Error::internal(format!(
                "blob {id} got the id {new} in the target although the repositories share blob ids"
            )));
        }
        if added {
            self.progress.bytes(plain.len() as u64);
        }
        Ok(new)
    }

    /// Copies the tree `id` and everything below it; returns its id in the
    /// target.
    ///
    /// Trees and chunk lists are always read, even when the target has
    /// them: a tree in the target's index does not prove that everything
    /// below it is there (an interrupted backup may have indexed a tree
    /// pack before the data packs its files refer to), and they are small
    /// next to the data. Data blobs the target has are never read when the
    /// ids are shared.
    fn tree(&self, writer: &BlobWriter<'_>, id: &BlobId) -> Result<BlobId> {
        if let Some(done) = lock(&self.trees).get(id) {
            return Ok(*done);
        }
        let plain = self.read(id)?;
        let mut tree = Tree::decode(&plain)
            .map_err(|e| Error::corrupt(format!("tree {id}"), e.to_string()))?;
        // File contents first, all of the directory's files at once, so
        // that blobs are read and stored in parallel.
        let mut contents: Vec<BlobId> = Vec::new();
        let mut listed: Vec<(BlobId, u8, Vec<BlobId>)> = Vec::new();
        for node in &tree.nodes {
            match &node.kind {
                NodeKind::File { content } => contents.extend(content),
                NodeKind::ListedFile { list, depth } => {
                    if lock(&self.lists).contains_key(&(*list, *depth)) {
                        continue;
                    }
                    let mut data = Vec::new();
                    self.list(writer, list, *depth, &mut data)?;
                    contents.extend(&data);
                    listed.push((*list, *depth, data));
                }
                _ => {}
            }
        }
        self.data_blobs(writer, &contents)?;
        for (list, depth, data) in listed {
            let new = if self.shared {
                (list, depth)
            } else {
                let mapped = self.mapped(&data)?;
                chunklist::store(writer, &mapped)?
            };
            lock(&self.lists).insert((list, depth), new);
        }
        for node in &mut tree.nodes {
            match &mut node.kind {
                NodeKind::Dir { subtree } => *subtree = self.tree(writer, subtree)?,
                NodeKind::File { content } if !self.shared => *content = self.mapped(content)?,
                NodeKind::ListedFile { list, depth } if !self.shared => {
                    let found = lock(&self.lists).get(&(*list, *depth)).copied();
                    let (l, d) = found.ok_or_else(|| {
                        Error::internal(format!("chunk list {list} was not copied"))
                    })?;
                    (*list, *depth) = (l, d);
                }
                _ => {}
            }
        }
        let new = if self.shared {
            self.save(writer, BlobKind::Tree, id, &plain)?
        } else {
            // Names are unchanged, so the order stays canonical.
            let bytes = tree.encode();
            self.save(writer, BlobKind::Tree, id, &bytes)?
        };
        lock(&self.trees).insert(*id, new);
        Ok(new)
    }

    /// Reads the chunk list tree at `id` (of `depth` levels), adding its
    /// data blob ids to `data` in file order. With shared ids each list
    /// blob is stored in the target as it is (unless the target has it);
    /// otherwise the caller stores new lists of the new ids.
    fn list(
        &self,
        writer: &BlobWriter<'_>,
        id: &BlobId,
        depth: u8,
        data: &mut Vec<BlobId>,
    ) -> Result<()> {
        if depth == 0 || depth > chunklist::MAX_DEPTH {
            return Err(Error::corrupt(
                format!("chunk list {id}"),
                format!("depth {depth} is outside 1..={}", chunklist::MAX_DEPTH),
            ));
        }
        let plain = self.read(id)?;
        let ids =
            chunklist::decode(&plain).map_err(|e| Error::corrupt(format!("chunk list {id}"), e))?;
        for child in &ids {
            if depth == 1 {
                data.push(*child);
            } else {
                self.list(writer, child, depth - 1, data)?;
            }
        }
        if self.shared {
            self.save(writer, BlobKind::Tree, id, &plain)?;
        }
        Ok(())
    }

    /// Copies the data blobs `ids` the target lacks (with shared ids) or
    /// that this run has not named yet (otherwise), in parallel.
    fn data_blobs(&self, writer: &BlobWriter<'_>, ids: &[BlobId]) -> Result<()> {
        let todo: Vec<BlobId> = {
            let data = lock(&self.data);
            let mut unique = HashSet::new();
            let candidates: Vec<BlobId> = ids
                .iter()
                .filter(|id| !data.contains_key(id) && unique.insert(**id))
                .copied()
                .collect();
            drop(data);
            if self.shared {
                // Read the index without holding `data`: the writer takes
                // the index for writing while it flushes.
                let index = self.dst.index();
                candidates
                    .into_iter()
                    .filter(|id| !index.contains(id))
                    .collect()
            } else {
                candidates
            }
        };
        todo.par_iter().try_for_each(|id| {
            let plain = self.read(id)?;
            let new = self.save(writer, BlobKind::Data, id, &plain)?;
            lock(&self.data).insert(*id, new);
            Ok(())
        })
    }

    /// The target ids of data blobs already copied.
    fn mapped(&self, ids: &[BlobId]) -> Result<Vec<BlobId>> {
        let data = lock(&self.data);
        ids.iter()
            .map(|id| {
                data.get(id)
                    .copied()
                    .ok_or_else(|| Error::internal(format!("data blob {id} was not copied")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ops::backup::{BackupOptions, NoProgress, backup};
    use crate::repo::InitOptions;
    use crate::storage::MemoryBackend;

    fn repo(opts: &InitOptions, password: &[u8]) -> Repository {
        Repository::init(Arc::new(MemoryBackend::new()), Some(password), opts).expect("init")
    }

    fn small_packs() -> InitOptions {
        InitOptions {
            pack_target_size: Some(1 << 20),
            kdf_memory_mib: crate::format::crypto::MIN_KDF_MEMORY_MIB,
            ..InitOptions::default()
        }
    }

    fn noise(seed: u8, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut h = blake3::Hasher::new();
        h.update(&[seed]);
        let mut reader = h.finalize_xof();
        out.resize(len, 0);
        reader.fill(&mut out);
        out
    }

    /// Three snapshots of a growing directory, each adding 2.5 MB: with
    /// 1 MiB packs the copy finishes a batch after the second, so parents
    /// are remapped both within a batch and across batches.
    fn source() -> (Repository, Vec<SnapshotId>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = repo(&small_packs(), b"one");
        let mut ids = Vec::new();
        for n in 0..3u8 {
            std::fs::write(dir.path().join(format!("f{n}")), noise(n, 2_500_000)).expect("write");
            let done = backup(
                &src,
                &BackupOptions::new(vec![dir.path().to_path_buf()]),
                &NoProgress,
            )
            .expect("backup");
            ids.push(done.id);
        }
        (src, ids, dir)
    }

    fn check_copy(src: &Repository, dst: &Repository, ids: &[SnapshotId]) {
        let report = copy(src, dst, ids, &NoProgress).expect("copy");
        assert_eq!(report.copied(), 3);
        assert!(report.bytes_transferred > 7_500_000);
        let by_source: HashMap<SnapshotId, SnapshotId> = report
            .snapshots
            .iter()
            .map(|s| (s.source, s.target))
            .collect();
        for (i, id) in ids.iter().enumerate() {
            let copied = dst.read_snapshot(&by_source[id]).expect("copied");
            let original = src.read_snapshot(id).expect("original");
            assert_eq!(copied.original, Some(*id));
            assert_eq!(
                (copied.time, &copied.paths, &copied.hostname),
                (original.time, &original.paths, &original.hostname)
            );
            let parent = i.checked_sub(1).map(|p| by_source[&ids[p]]);
            assert_eq!(copied.parent, parent, "snapshot {i}");
        }
        let opts = crate::ops::verify::VerifyOptions {
            read_data: true,
            ..crate::ops::verify::VerifyOptions::default()
        };
        let report = crate::ops::verify::verify(dst, &opts).expect("verify");
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let again = copy(src, dst, ids, &NoProgress).expect("copy again");
        assert_eq!((again.copied(), again.skipped()), (0, 3));
        assert_eq!((again.blobs_read, again.blobs_transferred), (0, 0));
    }

    #[test]
    fn copies_in_batches_and_remaps_parents_between_related_repositories() {
        let (src, ids, _dir) = source();
        let mut opts = small_packs();
        opts.related_to(&src);
        let dst = repo(&opts, b"two");
        assert!(src.shares_blob_ids(&dst));
        assert_eq!(dst.chunker_seed(), src.chunker_seed());
        check_copy(&src, &dst, &ids);
    }

    #[test]
    fn copies_in_batches_and_remaps_parents_between_unrelated_repositories() {
        let (src, ids, _dir) = source();
        let dst = repo(&small_packs(), b"two");
        assert!(!src.shares_blob_ids(&dst));
        check_copy(&src, &dst, &ids);
    }

    #[test]
    fn related_repositories_skip_data_the_target_has_without_reading_it() {
        let (src, ids, dir) = source();
        let mut opts = small_packs();
        opts.related_to(&src);
        let dst = repo(&opts, b"two");
        // The target backs up the same files itself: same chunks, same ids.
        let own = backup(
            &dst,
            &BackupOptions::new(vec![dir.path().to_path_buf()]),
            &NoProgress,
        )
        .expect("backup");
        let data_blobs = dst.index().len();
        let last = ids.last().copied().expect("snapshots");
        let report = copy(&src, &dst, &[last], &NoProgress).expect("copy");
        assert_eq!(report.copied(), 1);
        // Only trees were read (to find what is below them), no data.
        assert!(
            report.blobs_read < 5 && data_blobs > 20,
            "read {} of {data_blobs} blobs",
            report.blobs_read
        );
        // At most the trees of the directories above the source differ
        // (their metadata, /tmp's mtime, may have changed in between).
        assert!(
            report.blobs_transferred <= 4 && report.bytes_transferred < 10_000,
            "{report:?}"
        );
        let copied = dst
            .read_snapshot(&report.snapshots[0].target)
            .expect("copy");
        let path = dir.path().as_os_str().as_encoded_bytes();
        let node = |tree| {
            crate::repo::walk::find_node(&dst, tree, path)
                .expect("find")
                .expect("node")
        };
        let taken = dst.read_snapshot(&own.id).expect("own");
        assert_eq!(node(&copied.tree).kind, node(&taken.tree).kind);
    }

    #[test]
    fn a_repository_is_not_copied_into_itself() {
        let (src, ids, _dir) = source();
        let err = copy(&src, &src, &ids, &NoProgress).expect_err("refused");
        assert!(err.to_string().contains("same repository"), "{err}");
    }
}
