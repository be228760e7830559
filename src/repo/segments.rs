//! The repository's WAL segments (`wal/`, store-format.md §25) as
//! repository objects: listing and reading segment files, and linking them
//! into the chains and timelines of each watched database.
//!
//! The segment record itself is `crate::format::segment`'s; writing
//! segments while a database is watched is the watcher's
//! (`src/apps/sqlite/watcher.rs`), and restoring from them is
//! `src/apps/sqlite/pitr.rs`'s, both above this layer. Prune, forget,
//! verify and status read segments through this module, so they depend on
//! the repository layer only.
//!
//! A chain is a base snapshot tagged [`BASE_TAG`] followed by segments
//! `0, 1, 2, …`, each naming the one before. Linking is tolerant of what a
//! crash or a concurrent writer leaves: segments deleted while they are
//! read (by forget, or by prune's compaction, which writes a chain's new
//! segments before it deletes the old), two linked sets of one base (a
//! compaction interrupted), a segment missing in the middle, a base
//! snapshot forgotten. Each is reported on the chain, never as an error of
//! the whole reading.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use jiff::Timestamp;
use rayon::prelude::*;

use crate::error::Result;
use crate::format::segment::{self, Segment, timestamp};
use crate::id::{SegmentId, SnapshotId};
use crate::repo::Repository;
use crate::storage::FileKind;

/// The tag of the base snapshots that chains of segments start from
/// (store-format.md §25.1).
pub const BASE_TAG: &str = "watch";

/// Segments with their ids.
pub type Segments = Vec<(SegmentId, Segment)>;

/// Every segment in the repository, by `until`, and why others could not
/// be read.
///
/// # Errors
/// When `wal/` cannot be listed.
pub fn read_segments(repo: &Repository) -> Result<(Segments, Vec<String>)> {
    read_segments_since(repo, i64::MIN)
}

/// [`read_segments`] of the segments that end at or after `since`
/// (nanoseconds), known from their names.
///
/// # Errors
/// When `wal/` cannot be listed.
pub(crate) fn read_segments_since(
    repo: &Repository,
    since: i64,
) -> Result<(Segments, Vec<String>)> {
    type Read = std::result::Result<(SegmentId, Segment), String>;
    let mut read: HashMap<String, Read> = HashMap::new();
    // A segment listed but gone when read was deleted meanwhile: by forget
    // (its whole chain), or by prune's compaction, which writes a chain's
    // new segments before it deletes the old. Listing again then finds the
    // new set, so a chain never reads as cut short by a concurrent prune.
    for _ in 0..4 {
        let names: HashSet<String> = repo
            .backend()
            .list(FileKind::Wal)?
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| {
                n.parse::<SegmentId>()
                    .is_ok_and(|id| segment::until_of(&id) >= since)
            })
            .collect();
        let fresh: Vec<&String> = names.iter().filter(|n| !read.contains_key(*n)).collect();
        let got: Vec<(String, Option<Read>)> = crate::repo::in_pool(|| {
            fresh
                .par_iter()
                .filter_map(|name| {
                    let id: SegmentId = name.parse().ok()?;
                    let got = repo
                        .backend()
                        .read(FileKind::Wal, name)
                        .and_then(|b| segment::decode_file(repo.crypto(), &id, &b));
                    let read = match got {
                        Ok(s) => Some(Ok((id, s))),
                        // Gone since the listing.
                        Err(e) if e.is_not_found() => None,
                        Err(e) => Some(Err(e.to_string())),
                    };
                    Some(((*name).clone(), read))
                })
                .collect()
        });
        read.retain(|n, _| names.contains(n));
        let mut vanished = false;
        for (name, r) in got {
            match r {
                Some(r) => {
                    read.insert(name, r);
                }
                None => vanished = true,
            }
        }
        if !vanished {
            break;
        }
    }
    let mut segments = Vec::new();
    let mut problems = Vec::new();
    for r in read.into_values() {
        match r {
            Ok(s) => segments.push(s),
            Err(e) => problems.push(e),
        }
    }
    problems.sort();
    segments.sort_by(|(a, x), (b, y)| (x.until, a).cmp(&(y.until, b)));
    Ok((segments, problems))
}

/// One chain as read back: its segments from 0 on, as far as they link.
#[derive(Debug, Clone)]
pub struct Chain {
    /// The base snapshot.
    pub base: SnapshotId,
    /// The point of the log the base stands for.
    pub base_time: i64,
    /// The base state's number.
    pub base_txn: u64,
    /// The linked segments, from 0.
    pub segments: Vec<(SegmentId, Segment)>,
    /// Segments of the same base off that path whose time it covers: what
    /// an interrupted compaction left (see `link`), which prune removes.
    pub superseded: Vec<SegmentId>,
    /// Why the chain cannot be followed to its end (a segment missing or
    /// damaged, the base snapshot forgotten).
    pub problem: Option<String>,
}

impl Chain {
    /// The end of the time the chain covers.
    #[must_use]
    pub fn until(&self) -> i64 {
        self.segments
            .last()
            .map_or(self.base_time, |(_, s)| s.until)
    }

    /// The number of its last transaction.
    #[must_use]
    pub fn last_txn(&self) -> u64 {
        self.segments
            .last()
            .map_or(self.base_txn, |(_, s)| s.last_txn())
    }

    /// Why it ended, if it did.
    #[must_use]
    pub fn end(&self) -> Option<&str> {
        self.segments.last().and_then(|(_, s)| s.end.as_deref())
    }

    /// Transactions in it.
    #[must_use]
    pub fn txns(&self) -> u64 {
        self.segments.iter().map(|(_, s)| s.txns.len() as u64).sum()
    }
}

/// The chains of one database watched on one host, by base time.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// The host.
    pub host: String,
    /// The database's absolute path, raw bytes.
    pub db: Vec<u8>,
    /// Its chains, oldest first.
    pub chains: Vec<Chain>,
}

/// A stretch of time no chain covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The last moment covered before it.
    pub from: Timestamp,
    /// The next base, or `None` after the last chain.
    pub to: Option<Timestamp>,
    /// Why the chain before it ended; `None` when it just stops (the
    /// watcher was killed, or still runs and has not written since).
    pub reason: Option<String>,
}

impl Timeline {
    /// The stretches between chains that no chain covers.
    #[must_use]
    pub fn gaps(&self) -> Vec<Gap> {
        self.chains
            .windows(2)
            .filter_map(|w| match w {
                [a, b] if b.base_time > a.until() => Some(Gap {
                    from: timestamp(a.until()),
                    to: Some(timestamp(b.base_time)),
                    reason: a.end().map(str::to_owned).or_else(|| a.problem.clone()),
                }),
                _ => None,
            })
            .collect()
    }
}

/// The timelines of every database watched (of `host` and `db`, when
/// given), and the segments that could not be read.
///
/// # Errors
/// When `wal/` or `snapshots/` cannot be listed.
pub fn timelines(
    repo: &Repository,
    host: Option<&str>,
    db: Option<&[u8]>,
) -> Result<(Vec<Timeline>, Vec<String>)> {
    let (segments, problems) = read_segments(repo)?;
    let timelines = link_timelines(repo, segments, host, db)?;
    Ok((timelines, problems))
}

/// The timelines `segments` (of `host` and `db`, when given) make.
///
/// # Errors
/// When `snapshots/` cannot be listed.
pub(crate) fn link_timelines(
    repo: &Repository,
    segments: Segments,
    host: Option<&str>,
    db: Option<&[u8]>,
) -> Result<Vec<Timeline>> {
    let snapshots = repo.listed_snapshot_ids()?;
    let mut by_db: BTreeMap<(String, Vec<u8>), HashMap<SnapshotId, Segments>> = BTreeMap::new();
    for (id, s) in segments {
        if host.is_some_and(|h| h != s.host) || db.is_some_and(|d| d != s.db) {
            continue;
        }
        by_db
            .entry((s.host.clone(), s.db.clone()))
            .or_default()
            .entry(s.base)
            .or_default()
            .push((id, s));
    }
    let timelines = by_db
        .into_iter()
        .map(|((host, db), bases)| {
            let mut chains: Vec<Chain> = bases
                .into_values()
                .map(|segs| link(segs, &snapshots))
                .collect();
            chains.sort_by_key(|c| (c.base_time, c.base));
            Timeline { host, db, chains }
        })
        .collect();
    Ok(timelines)
}

/// Links one base's segments into a chain from segment 0, each naming the
/// one before.
///
/// Prune's compaction (`compact`) writes a chain again as fewer segments
/// before deleting the old ones, so a crash can leave two linked sets for
/// one base. Both are exact; the one reaching the latest `until` is taken,
/// the one with fewer segments on a tie (the compacted one, once whole).
/// Segments off that path that end within it are *superseded* (leftovers
/// of the other set); one that ends after it means a segment is missing or
/// does not link, and is the chain's problem.
fn link(mut segs: Vec<(SegmentId, Segment)>, snapshots: &HashSet<SnapshotId>) -> Chain {
    segs.sort_by_key(|(id, s)| (s.seq, *id));
    let (base, base_time, base_txn) = segs
        .first()
        .map(|(_, s)| (s.base, s.base_time, s.base_txn))
        .unwrap_or_default();
    // Each segment's place on the path from a segment 0 that leads to it:
    // (its depth, the index of the one before). Sorted by `seq`, a
    // segment's predecessor comes first.
    let index: HashMap<SegmentId, usize> = segs
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (*id, i))
        .collect();
    let mut reached: Vec<Option<(u64, Option<usize>)>> = Vec::with_capacity(segs.len());
    for (_, s) in &segs {
        let r = match s.prev {
            None => (s.seq == 0).then_some((0, None)),
            Some(prev) => index.get(&prev).and_then(|&j| {
                let (depth, _) = reached.get(j).copied().flatten()?;
                (segs.get(j)?.1.seq.checked_add(1) == Some(s.seq)).then_some((depth + 1, Some(j)))
            }),
        };
        reached.push(r);
    }
    // Only a path's last segment may be chosen: one that ends no later
    // than the segment before it (a final segment with nothing new, or a
    // clock stepped back) would otherwise lose to it and drop its path's tail.
    let mut continued = vec![false; segs.len()];
    for (_, prev) in reached.iter().flatten() {
        if let Some(c) = prev.and_then(|j| continued.get_mut(j)) {
            *c = true;
        }
    }
    let best = segs
        .iter()
        .zip(&reached)
        .zip(&continued)
        .enumerate()
        .filter_map(|(i, (((id, s), r), continued))| {
            let (depth, _) = (*r).filter(|_| !continued)?;
            Some((
                i,
                (s.until, std::cmp::Reverse(depth), std::cmp::Reverse(*id)),
            ))
        })
        .max_by(|a, b| a.1.cmp(&b.1))
        .map(|(i, _)| i);
    let mut on_path = vec![false; segs.len()];
    let mut at = best;
    while let Some(i) = at {
        if let Some(on) = on_path.get_mut(i) {
            *on = true;
        }
        at = reached.get(i).copied().flatten().and_then(|(_, prev)| prev);
    }
    let reach = best
        .and_then(|i| segs.get(i))
        .map_or(base_time, |(_, s)| s.until);
    let mut linked = Vec::new();
    let mut superseded = Vec::new();
    let mut problem = None;
    let mut off_path = Vec::new();
    for ((id, s), on) in segs.into_iter().zip(on_path) {
        if on {
            linked.push((id, s));
        } else if s.until <= reach {
            superseded.push(id);
        } else {
            off_path.push(id);
        }
    }
    if let Some(next) = off_path.first() {
        problem = Some(format!(
            "segment {} of the chain is missing or does not link (next is {next})",
            linked.len()
        ));
    }
    if !snapshots.contains(&base) {
        problem = Some(format!("its base snapshot {} is gone", base.short()));
        linked.clear();
    }
    Chain {
        base,
        base_time,
        base_txn,
        segments: linked,
        superseded,
        problem,
    }
}

/// How far before the moment asked for segments are read, in turn, before
/// all are: a chain whose base lies within the window has every segment
/// in it (a segment ends after its base), so a restore reads about one
/// base interval of segments however long the log is kept.
const WINDOWS: [Duration; 3] = [
    Duration::from_secs(2 * 3600),
    Duration::from_secs(12 * 3600),
    Duration::from_secs(3 * 86_400),
];

/// The starts of the [`WINDOWS`] before `near` (nanoseconds), shortest
/// window first.
pub(crate) fn window_starts(near: i64) -> impl Iterator<Item = i64> {
    WINDOWS
        .iter()
        .map(move |w| near.saturating_sub(i64::try_from(w.as_nanos()).unwrap_or(i64::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A linked set of segments of one base ending at `untils`, their ids
    /// starting with `tag`.
    fn linked_set(tag: u8, untils: &[i64]) -> Segments {
        let mut out: Segments = Vec::new();
        for (i, &until) in untils.iter().enumerate() {
            let s = Segment {
                host: "h".into(),
                db: b"/db".to_vec(),
                base: SnapshotId([1; 32]),
                base_time: 0,
                base_txn: 0,
                seq: i as u64,
                prev: out.last().map(|(id, _)| *id),
                from: out.last().map_or(0, |(_, s)| s.until),
                until,
                page_size: 512,
                first_txn: 1,
                txns: Vec::new(),
                data: Vec::new(),
                end: None,
            };
            let mut id = [u8::try_from(i).unwrap_or(0); 32];
            id[0] = tag;
            out.push((SegmentId(id), s));
        }
        out
    }

    fn linked(segs: Segments) -> (Vec<u8>, Vec<u8>, Option<String>) {
        let base = HashSet::from([SnapshotId([1; 32])]);
        let c = link(segs, &base);
        (
            c.segments.iter().map(|(id, _)| id.0[0]).collect(),
            c.superseded.iter().map(|id| id.0[0]).collect(),
            c.problem,
        )
    }

    #[test]
    fn link_takes_the_set_reaching_furthest_then_the_shorter() {
        let old = linked_set(b'o', &[10, 20, 30, 40]);
        let new = linked_set(b'n', &[20, 40]);
        let both = |kept: &[usize], new_count: usize| {
            let mut segs: Segments = kept.iter().filter_map(|&i| old.get(i).cloned()).collect();
            segs.extend(new.iter().take(new_count).cloned());
            segs
        };
        // Compaction writing its new set: the old one still reaches further.
        let (path, superseded, problem) = linked(both(&[0, 1, 2, 3], 1));
        assert_eq!(
            (path, superseded, problem),
            (vec![b'o'; 4], vec![b'n'], None)
        );
        // Both whole: the compacted one.
        let (path, superseded, problem) = linked(both(&[0, 1, 2, 3], 2));
        assert_eq!(
            (path, superseded, problem),
            (vec![b'n'; 2], vec![b'o'; 4], None)
        );
        // The old set deleted newest first, part way.
        let (path, superseded, problem) = linked(both(&[0, 1], 2));
        assert_eq!(
            (path, superseded, problem),
            (vec![b'n'; 2], vec![b'o'; 2], None)
        );
        assert_eq!(linked(new.clone()).0, vec![b'n'; 2]);
        // A segment missing in the middle is a problem, not superseded.
        let (path, superseded, problem) = linked(both(&[0, 1, 3], 0));
        assert_eq!((path, superseded), (vec![b'o'; 2], vec![]));
        assert!(problem.is_some_and(|p| p.contains("segment 2")));
    }

    #[test]
    fn link_keeps_a_last_segment_that_ends_no_later_than_the_one_before() {
        // A final segment with nothing new (its `until` is its `from`), and
        // one written while the clock stood behind: both stay on the path.
        for untils in [[10, 20, 20], [10, 20, 15]] {
            let (path, superseded, problem) = linked(linked_set(b'o', &untils));
            assert_eq!((path.len(), superseded, problem), (3, vec![], None));
        }
    }
}
