//! Prune: removes the data no snapshot references any more.
//!
//! Under an exclusive lock (no backup can be adding references meanwhile,
//! see `lock`), prune marks every blob reachable from a snapshot, then
//! looks at each pack through the index files: a pack with nothing used is
//! deleted; a pack whose unused share exceeds `max_unused` has its used
//! blobs copied into new packs and is deleted; small packs (the tail of
//! each backup, each second of `cairn watch`) are copied together into
//! full ones when there are two or more; other packs stay as they are,
//! their few unused blobs with them. The WAL segments of chains that ended
//! are written again as a few large ones (`compact`). Index files that describe no
//! changed pack stay untouched, so the work grows with the garbage, apart
//! from the marking, which reads every distinct tree once.
//!
//! The order keeps the repository valid at every step (store-format.md
//! §14.5): new packs, then their index files, then the rewritten index
//! files, and only then deletions: old index files, then packs. A crash
//! leaves at worst duplicate index entries or packs no index names, which
//! the next prune removes.

pub mod compact;

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::index::{self, IndexFile, IndexPack};
use crate::format::pack::{BlobKind, PackEntry};
use crate::format::tree::NodeKind;
use crate::id::{BlobId, PackId};
use crate::repo::Repository;
use crate::repo::audit::{Audited, Event};
use crate::storage::FileKind;

/// How to prune.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PruneOptions {
    /// A pack whose unused bytes exceed this share of it is repacked
    /// (0.0 repacks every pack with any garbage, 1.0 only deletes packs
    /// with nothing used).
    pub max_unused: f64,
    /// Repack small packs together (see `SMALL_SHARE`) when there are at
    /// least two: each frequent backup and each second of `cairn watch`
    /// ends in a small pack and an index file of its own.
    pub repack_small: bool,
    /// Work out what would be done, change nothing.
    pub dry_run: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        Self {
            max_unused: 0.05,
            repack_small: true,
            dry_run: false,
        }
    }
}

/// A pack stored in fewer bytes than this share of the repository's pack
/// target is small. Repacking them yields full packs and one small
/// remainder, which the next prune takes again with the packs written
/// since, so what is rewritten stays bounded by what was added.
pub const SMALL_SHARE: f64 = 0.5;

/// A temporary file in the repository not written for this long is a
/// leftover of a writer that was killed, and prune removes it (under its
/// exclusive lock, so no backup that holds a live lock is writing; see
/// store-format.md §2).
pub const TEMPORARY_STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(60 * 60);

/// What prune did (or, dry, would do).
#[derive(Debug, Clone, Default, serde::Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct PruneReport {
    /// Snapshots whose trees were walked.
    pub snapshots: usize,
    /// WAL segments whose data was kept (after compaction).
    pub segments: usize,
    /// Segments of ended chains written again as fewer: those replaced...
    pub segments_replaced: usize,
    /// ...and those written in their place.
    pub segments_written: usize,
    /// Leftovers of an interrupted compaction deleted.
    pub segments_superseded: usize,
    /// Blobs referenced by them.
    pub blobs_used: u64,
    /// Packs before.
    pub packs_before: usize,
    /// Packs deleted because nothing in them is used.
    pub packs_deleted: usize,
    /// Packs whose used blobs were copied out before deletion (small ones
    /// included).
    pub packs_repacked: usize,
    /// Of those, packs repacked only for being small.
    pub packs_small: usize,
    /// Packs no index file named (left by an interrupted backup), deleted.
    pub packs_unindexed: usize,
    /// Used blobs copied into new packs.
    pub blobs_repacked: u64,
    /// Unused blobs removed with their packs.
    pub blobs_removed: u64,
    /// Index files replaced.
    pub index_files_rewritten: usize,
    /// Bytes of packs and index files before.
    pub bytes_before: u64,
    /// Bytes after (estimated for a dry run: the repacked blobs counted at
    /// their old size).
    pub bytes_after: u64,
    /// Temporary files left by killed writers (staged packs of killed
    /// backups, say), idle for [`TEMPORARY_STALE_AFTER`], removed.
    pub temporaries_removed: usize,
    /// Their bytes.
    pub temporary_bytes_removed: u64,
    /// Wall time, milliseconds.
    pub duration_ms: u64,
}

impl PruneReport {
    /// Bytes freed.
    #[must_use]
    pub fn bytes_freed(&self) -> u64 {
        self.bytes_before.saturating_sub(self.bytes_after)
    }
}

/// Every blob reachable from the snapshots: trees and their contents.
/// Each distinct tree is read (and verified) once, a level of the forest
/// at a time in parallel.
fn mark(repo: &Repository, roots: Vec<BlobId>) -> Result<HashSet<BlobId>> {
    let mut used: HashSet<BlobId> = HashSet::new();
    let mut level: Vec<BlobId> = roots;
    while !level.is_empty() {
        level.retain(|id| used.insert(*id));
        let trees = crate::repo::in_pool(|| {
            level
                .par_iter()
                .map(|id| repo.read_tree(id))
                .collect::<Result<Vec<_>>>()
        })?;
        let mut next = Vec::new();
        for tree in trees {
            for node in tree.nodes {
                match node.kind {
                    NodeKind::File { content } => used.extend(content),
                    NodeKind::ListedFile { list, depth } => {
                        let mut lists = Vec::new();
                        let mut data = Vec::new();
                        crate::repo::chunklist::walk(
                            repo,
                            &list,
                            depth,
                            &mut |id| {
                                lists.push(*id);
                                Ok(())
                            },
                            &mut |id| {
                                data.push(*id);
                                Ok(())
                            },
                        )?;
                        used.extend(lists);
                        used.extend(data);
                    }
                    NodeKind::Dir { subtree } => next.push(subtree),
                    _ => {}
                }
            }
        }
        next.sort_unstable();
        next.dedup();
        level = next;
    }
    Ok(used)
}

/// What happens to one pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Keep,
    Delete,
    Repack,
}

/// Removes unreferenced data; see the module documentation. Runs in
/// three phases, each a function of its own: what is used, what to do
/// with each pack, and doing it (skipped in a dry run).
///
/// # Errors
/// [`Error::Locked`] while other processes use the repository; an error
/// before anything is deleted when a snapshot, tree or index file cannot
/// be read, or a used blob is in no index (pruning then could delete data
/// still needed: `verify` tells what is wrong).
pub fn prune(repo: &Repository, opts: &PruneOptions) -> Result<PruneReport> {
    Event::new(repo, "prune", "repository")
        .unless_dry_run(opts.dry_run)
        .run(|_| {
            let started = Instant::now();
            let held = repo.lock(true, "prune")?;
            repo.refresh_index()?;
            let mut report = PruneReport::default();
            let used = used_blobs(repo, &held, opts, &mut report)?;
            let plan = plan(repo, &used, opts, &mut report)?;
            if opts.dry_run {
                report.bytes_after = report.bytes_before - plan.freed_packs + plan.kept_again;
            } else {
                carry_out(repo, &held, &plan, &mut report)?;
            }
            report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            drop(held);
            Ok(report)
        })
}

impl Audited for PruneReport {
    fn audit(&self) -> (bool, String) {
        let detail = format!(
            "{} packs deleted, {} repacked; {} bytes before, {} after",
            self.packs_deleted, self.packs_repacked, self.bytes_before, self.bytes_after
        );
        (true, detail)
    }
}

/// Every blob the snapshots and WAL segments use. Stops, before anything
/// is changed, at an index file, snapshot or segment that cannot be read
/// and at a used blob that no index names: pruning then could delete data
/// still needed. Compacts ended chains' segments (which keeps the same
/// data blobs) once every used blob is known to be indexed.
fn used_blobs(
    repo: &Repository,
    held: &crate::repo::lock::Lock,
    opts: &PruneOptions,
    report: &mut PruneReport,
) -> Result<HashSet<BlobId>> {
    let mut roots = Vec::new();
    if let Some((id, e)) = repo.index_errors().first() {
        return Err(Error::Damaged(format!(
            "index file {id} cannot be read ({e}): prune would not know what its packs hold; run `cairn verify`"
        )));
    }
    for (id, snap) in repo.snapshots()? {
        let snap = snap.map_err(|e| {
            Error::Damaged(format!(
                "snapshot {id} cannot be read ({e}): prune would not know what it references; remove it with `cairn forget {id}` or repair it first"
            ))
        })?;
        roots.push(snap.tree);
        report.snapshots += 1;
    }
    let mut used = mark(repo, roots)?;
    // WAL segments (`cairn watch`) use data blobs too; one that cannot be
    // read stops prune like a damaged snapshot does.
    let (segments, problems) = crate::repo::segments::read_segments(repo)?;
    if let Some(problem) = problems.first() {
        return Err(Error::Damaged(format!(
            "{problem}: prune would not know what it references; run `cairn verify`"
        )));
    }
    for (_, s) in &segments {
        used.extend(s.data.iter().copied());
    }
    report.blobs_used = used.len() as u64;
    {
        let index = repo.index();
        if let Some(missing) = used.iter().find(|id| !index.contains(id)) {
            return Err(Error::Damaged(format!(
                "blob {missing}, used by a snapshot, is in no index: prune stops so as not to delete data that may still be needed; run `cairn verify`"
            )));
        }
    }
    // Ended chains' segments, written again as few (the same data blobs, so
    // the marking above holds for them). Only once every used blob is known
    // to be indexed: compaction writes and deletes.
    let before = segments.len();
    let timelines = crate::repo::segments::link_timelines(repo, segments, None, None)?;
    let chains: Vec<&crate::repo::segments::Chain> =
        timelines.iter().flat_map(|t| &t.chains).collect();
    let compacted = crate::ops::prune::compact::compact(repo, &chains, held, opts.dry_run)?;
    report.segments = before + compacted.written - compacted.replaced - compacted.superseded;
    report.segments_replaced = compacted.replaced;
    report.segments_written = compacted.written;
    report.segments_superseded = compacted.superseded;
    Ok(used)
}

/// What prune will do with each pack.
struct Plan {
    /// Every index file, as named and read.
    files: Vec<(String, IndexFile)>,
    /// Each indexed pack's fate.
    fate: HashMap<PackId, Fate>,
    /// The packs to repack, with the used blobs to copy out of each.
    to_repack: Vec<(PackId, Vec<PackEntry>)>,
    /// The packs to delete once their blobs are safe elsewhere.
    to_delete: Vec<PackId>,
    /// Indexes into `files` of those naming a pack that goes away.
    rewrite: Vec<usize>,
    /// Bytes of the packs deleted.
    freed_packs: u64,
    /// Bytes of the blobs repacked.
    kept_again: u64,
    /// Temporary files nobody has written for a long while.
    stale: Vec<crate::storage::Temporary>,
}

/// Decides each pack's fate from the index files and the stored packs:
/// delete (nothing used), repack (too much unused, or small), keep.
fn plan(
    repo: &Repository,
    used: &HashSet<BlobId>,
    opts: &PruneOptions,
    report: &mut PruneReport,
) -> Result<Plan> {
    let index = repo.index();

    // The packs as the index files describe them, and as they are stored.
    let mut index_names: Vec<String> = repo
        .backend()
        .list(FileKind::Index)?
        .into_iter()
        .map(|(n, size)| {
            report.bytes_before += size;
            n
        })
        .collect();
    index_names.sort();
    let stored: HashMap<PackId, u64> = repo
        .backend()
        .list(FileKind::Pack)?
        .into_iter()
        .filter_map(|(n, size)| Some((n.parse().ok()?, size)))
        .collect();
    report.packs_before = stored.len();
    report.bytes_before += stored.values().sum::<u64>();
    let files: Vec<(String, IndexFile)> = index_names
        .iter()
        .map(|n| Ok((n.clone(), repo.read_index_file(n)?)))
        .collect::<Result<_>>()?;

    // The blob the index resolves each used id to ("first location wins")
    // is the copy that counts; any other copy is garbage.
    let counts = |p: &IndexPack, e: &PackEntry| {
        used.contains(&e.id)
            && index
                .get(&e.id)
                .is_some_and(|loc| index.pack_id(loc.pack) == Some(p.id) && loc.offset == e.offset)
    };
    let (mut fate, kind) = decide_fates(&files, &counts, &stored, opts)?;
    if opts.repack_small {
        take_small_packs(repo, &mut fate, &kind, &stored, report);
    }
    let unindexed: Vec<PackId> = stored
        .keys()
        .filter(|id| !fate.contains_key(id))
        .copied()
        .collect();
    report.packs_unindexed = unindexed.len();

    // Repack: the used blobs of each pack to copy out.
    let to_repack: Vec<(PackId, Vec<PackEntry>)> = {
        let mut seen = HashSet::new();
        files
            .iter()
            .flat_map(|(_, f)| &f.packs)
            .filter(|p| fate.get(&p.id) == Some(&Fate::Repack) && seen.insert(p.id))
            .map(|p| {
                let wanted = p.entries.iter().filter(|e| counts(p, e)).cloned();
                (p.id, wanted.collect())
            })
            .collect()
    };
    let to_delete: Vec<PackId> = fate
        .iter()
        .filter(|(_, f)| **f != Fate::Keep)
        .map(|(id, _)| *id)
        .chain(unindexed.iter().copied())
        .collect();
    report.packs_repacked = to_repack.len();
    report.packs_deleted = fate.values().filter(|f| **f == Fate::Delete).count();
    for (_, file) in &files {
        for p in &file.packs {
            for e in &p.entries {
                match fate.get(&p.id) {
                    Some(Fate::Repack) if counts(p, e) => report.blobs_repacked += 1,
                    Some(Fate::Repack | Fate::Delete) => report.blobs_removed += 1,
                    _ => {}
                }
            }
        }
    }
    // Index files that name a pack going away are rewritten without it.
    let rewrite: Vec<usize> = files
        .iter()
        .enumerate()
        .filter(|(_, (_, f))| f.packs.iter().any(|p| fate.get(&p.id) != Some(&Fate::Keep)))
        .map(|(i, _)| i)
        .collect();
    report.index_files_rewritten = rewrite.len();
    let freed_packs: u64 = to_delete.iter().filter_map(|id| stored.get(id)).sum();
    let kept_again: u64 = to_repack
        .iter()
        .flat_map(|(_, wanted)| wanted)
        .map(|e| u64::from(e.length))
        .sum();
    // The writer below adds to the index: no read guard may be held.
    drop(index);
    // Temporary files nobody has written for a long while: no process
    // holding a live lock can be writing them, since this one holds the
    // exclusive lock.
    let stale: Vec<crate::storage::Temporary> = repo
        .backend()
        .temporaries()?
        .into_iter()
        .filter(|t| t.idle >= TEMPORARY_STALE_AFTER)
        .collect();
    report.temporaries_removed = stale.len();
    report.temporary_bytes_removed = stale.iter().map(|t| t.size).sum();
    Ok(Plan {
        files,
        fate,
        to_repack,
        to_delete,
        rewrite,
        freed_packs,
        kept_again,
        stale,
    })
}

/// Each indexed pack's fate, and the kind of blobs it holds: deleted when
/// no blob of it counts, repacked when more than `max_unused` of it is
/// garbage, else kept. A pack holding used blobs that is not stored stops
/// prune.
fn decide_fates(
    files: &[(String, IndexFile)],
    counts: &dyn Fn(&IndexPack, &PackEntry) -> bool,
    stored: &HashMap<PackId, u64>,
    opts: &PruneOptions,
) -> Result<(HashMap<PackId, Fate>, HashMap<PackId, BlobKind>)> {
    let mut fate: HashMap<PackId, Fate> = HashMap::new();
    // Writers keep data and trees in packs of their own; a repack does too.
    let mut kind: HashMap<PackId, BlobKind> = HashMap::new();
    for (_, file) in files {
        for p in &file.packs {
            if fate.contains_key(&p.id) {
                continue;
            }
            if let Some(e) = p.entries.first() {
                kind.insert(p.id, e.kind);
            }
            let (used_bytes, all_bytes) = p.entries.iter().fold((0u64, 0u64), |(u, a), e| {
                let len = u64::from(e.length);
                (if counts(p, e) { u + len } else { u }, a + len)
            });
            let f = if used_bytes == 0 {
                Fate::Delete
            } else if !stored.contains_key(&p.id) {
                return Err(Error::Damaged(format!(
                    "pack {} holds blobs that snapshots use, but it is missing: prune stops; run `cairn verify`",
                    p.id
                )));
            } else if all_bytes > 0
                && (all_bytes - used_bytes) as f64 > opts.max_unused * all_bytes as f64
            {
                Fate::Repack
            } else {
                Fate::Keep
            };
            fate.insert(p.id, f);
        }
    }
    Ok((fate, kind))
}

/// Small packs kept as they are make fewer, full ones together, per
/// kind. A kind with packs repacked anyway takes even a single small one
/// along, so that a prune leaves at most one small pack of each kind
/// (the repack's last) and the next prune has nothing to do.
fn take_small_packs(
    repo: &Repository,
    fate: &mut HashMap<PackId, Fate>,
    kind: &HashMap<PackId, BlobKind>,
    stored: &HashMap<PackId, u64>,
    report: &mut PruneReport,
) {
    let below = SMALL_SHARE * f64::from(repo.config().pack_target_size);
    for k in [BlobKind::Data, BlobKind::Tree] {
        let of_kind = |id: &PackId| kind.get(id) == Some(&k);
        let small: Vec<PackId> = fate
            .iter()
            .filter(|(id, f)| {
                **f == Fate::Keep
                    && of_kind(id)
                    && stored.get(id).is_some_and(|&size| (size as f64) < below)
            })
            .map(|(id, _)| *id)
            .collect();
        let repacking = fate.iter().any(|(id, f)| *f == Fate::Repack && of_kind(id));
        if small.len() + usize::from(repacking) >= 2 {
            report.packs_small += small.len();
            for id in small {
                fate.insert(id, Fate::Repack);
            }
        }
    }
}

/// Carries out `plan`: new packs and their index files first, then the
/// index files without the changed packs, and only then the deletions, so
/// that every crash point leaves every used blob indexed (see the module
/// documentation).
fn carry_out(
    repo: &Repository,
    held: &crate::repo::lock::Lock,
    plan: &Plan,
    report: &mut PruneReport,
) -> Result<()> {
    // 1. New packs and their index files.
    let writer = repo.blob_writer();
    let copied = crate::repo::in_pool_holding_packs(repo.config().pack_target_size, || {
        plan.to_repack
            .par_iter()
            .try_for_each(|(pack, wanted)| -> Result<()> {
                let bytes = repo.backend().read(FileKind::Pack, &pack.to_hex())?;
                for e in wanted {
                    let start = e.offset as usize;
                    let sealed = bytes.get(start..start + e.length as usize).ok_or_else(|| {
                        Error::corrupt(
                            format!("pack {pack}"),
                            format!("blob {} lies beyond its end", e.id),
                        )
                    })?;
                    let plain = repo.open_blob(&e.id, pack, e.compression, e.raw_length, sealed)?;
                    writer.save_again(e.kind, &plain)?;
                }
                Ok(())
            })
    });
    if let Err(e) = copied.and_then(|()| held.check()) {
        writer.abandon();
        return Err(e);
    }
    writer.finish().inspect_err(|_| writer.abandon())?;
    // A repacked pack identical to one already stored (unencrypted sealing
    // is deterministic: a small pack copied alone, or a pack an interrupted
    // prune wrote) is that very file, now named by the new index.
    let indexed = writer.indexed_packs();
    drop(writer);
    let to_delete: Vec<PackId> = plan
        .to_delete
        .iter()
        .filter(|id| !indexed.contains(id))
        .copied()
        .collect();

    // 2. The index files that named changed packs, without those packs.
    for file in plan
        .rewrite
        .iter()
        .filter_map(|&i| plan.files.get(i))
        .map(|(_, f)| f)
    {
        let kept = IndexFile {
            packs: file
                .packs
                .iter()
                .filter(|p| plan.fate.get(&p.id) == Some(&Fate::Keep))
                .cloned()
                .collect(),
        };
        if kept.packs.is_empty() {
            continue;
        }
        let (id, bytes) = index::encode_file(repo.crypto(), &kept)?;
        repo.backend()
            .write(FileKind::Index, &id.to_hex(), &bytes)?;
    }
    held.check()?;

    // 3. Deletions: the replaced index files, then the packs.
    for (name, _) in plan.rewrite.iter().filter_map(|&i| plan.files.get(i)) {
        repo.backend().delete(FileKind::Index, name)?;
    }
    for id in &to_delete {
        match repo.backend().delete(FileKind::Pack, &id.to_hex()) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    held.check()?;
    for t in &plan.stale {
        repo.backend().remove_temporary(&t.path)?;
    }
    repo.refresh_index()?;
    report.bytes_after = repo
        .backend()
        .list(FileKind::Index)?
        .into_iter()
        .chain(repo.backend().list(FileKind::Pack)?)
        .map(|(_, size)| size)
        .sum();
    Ok(())
}
