//! Compaction of WAL segments: prune rewrites each ended chain's many small
//! segments (one per second of writes, store-format.md §25) as a few large
//! ones.
//!
//! A merged segment is an ordinary segment: the transactions of a run of
//! consecutive segments in order, their data blob lists back to back (the
//! pages of all of them in log order, which is what a segment's data is),
//! `from` of the first, `until` and `end` of the last. No data is copied;
//! only segment files are written and deleted. Only chains whose last
//! segment says why they ended are compacted: nothing writes to those any
//! more, whereas a chain without an end may still be followed (or was left
//! by a killed watcher, and stays as it is).
//!
//! The new segments are written, from 0, before any old one is deleted, and
//! the old ones are deleted newest first. Readers (`repo::segments`) take,
//! among the sets linked from a segment 0 of one base, the one reaching
//! furthest, the shorter on a tie, so at every step of a crash the chain
//! reads as the old set or the new, both exact; the leftovers of the other
//! are *superseded*, and the next prune deletes them.

use crate::error::Result;
use crate::format::segment::{self, Segment};
use crate::id::SegmentId;
use crate::repo::Repository;
use crate::repo::lock::Lock;
use crate::repo::segments::{Chain, Segments};
use crate::storage::FileKind;

/// The most a merged segment holds, as an estimate of its encoded size
/// (about 20 bytes a transaction, 4 a page, 32 a data blob): 16 MiB, a
/// few hundred thousand transactions, so a chain of an hour at a steady
/// 100 transactions a second becomes one or two files, and the largest
/// stays far below the 256 MiB record limit (§18).
const MERGED_WEIGHT: u64 = 16 << 20;

/// What compaction did (or, dry, would do).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Compacted {
    /// Chains written again.
    pub chains: usize,
    /// Segment files replaced by them.
    pub replaced: usize,
    /// Segment files written.
    pub written: usize,
    /// Leftover segments of an interrupted compaction deleted.
    pub superseded: usize,
}

fn weight(s: &Segment) -> u64 {
    20 * s.txns.len() as u64 + 4 * s.pages() + 32 * s.data.len() as u64
}

/// Whether `s` may follow `prev` in one merged segment: the same page
/// size, its time and numbers continuing from where `prev` ended.
fn continues(prev: &Segment, s: &Segment) -> bool {
    s.page_size == prev.page_size
        && s.from == prev.until
        && prev.first_txn.checked_add(prev.txns.len() as u64) == Some(s.first_txn)
}

/// The runs of consecutive segments of `chain` that make one merged
/// segment each (index ranges), greedily up to [`MERGED_WEIGHT`].
fn runs(chain: &Segments) -> Vec<std::ops::Range<usize>> {
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    let mut run_weight = 0;
    for (i, (_, s)) in chain.iter().enumerate() {
        let w = weight(s);
        let joins = runs.last().is_some_and(|r| {
            run_weight + w <= MERGED_WEIGHT
                && i.checked_sub(1)
                    .and_then(|p| chain.get(p))
                    .is_some_and(|(_, prev)| continues(prev, s))
                && r.end == i
        });
        match runs.last_mut() {
            Some(r) if joins => {
                r.end = i + 1;
                run_weight += w;
            }
            _ => {
                runs.push(i..i + 1);
                run_weight = w;
            }
        }
    }
    runs
}

/// Whether the data of every segment of `chain` is exactly its pages, as
/// the index tells, so that concatenating data lists keeps each page where
/// the transactions say it is. A chain where it is not is left as it is
/// (`verify` and restore report it).
fn data_is_exact(repo: &Repository, chain: &Segments) -> bool {
    let index = repo.index();
    chain
        .iter()
        .all(|(_, s)| s.data.iter().all(|b| index.contains(b)) && s.data_fits(&index).is_ok())
}

/// The merged segments for `chain` (its runs), linked from 0.
fn merged(chain: &Segments, runs: &[std::ops::Range<usize>]) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::with_capacity(runs.len());
    for run in runs {
        let Some(((_, first), (_, last))) = chain.get(run.start).zip(chain.get(run.end - 1)) else {
            continue;
        };
        let mut m = first.clone();
        m.seq = out.len() as u64;
        // Linked when written, by the name of the one before.
        m.prev = None;
        m.from = first.from;
        m.until = last.until;
        m.end.clone_from(&last.end);
        for (_, s) in chain.get(run.start + 1..run.end).unwrap_or_default() {
            m.txns.extend(s.txns.iter().cloned());
            m.data.extend_from_slice(&s.data);
        }
        out.push(m);
    }
    out
}

/// Compacts the ended chains in `chains` (see the module doc), checking
/// `held` before each deletion; changes nothing when `dry_run`.
///
/// # Errors
/// Backend errors, a lock lost ([`Lock::check`]). A failure leaves each
/// chain readable as its old segments or its new ones.
pub(crate) fn compact(
    repo: &Repository,
    chains: &[&Chain],
    held: &Lock,
    dry_run: bool,
) -> Result<Compacted> {
    let mut done = Compacted::default();
    for chain in chains {
        if chain.problem.is_some() || chain.end().is_none() {
            continue;
        }
        if !dry_run {
            held.check()?;
            for id in &chain.superseded {
                delete(repo, id)?;
            }
        }
        done.superseded += chain.superseded.len();
        let runs = runs(&chain.segments);
        if runs.len() >= chain.segments.len() || !data_is_exact(repo, &chain.segments) {
            continue;
        }
        done.chains += 1;
        done.replaced += chain.segments.len();
        done.written += runs.len();
        if dry_run {
            continue;
        }
        let mut prev = None;
        for mut m in merged(&chain.segments, &runs) {
            m.prev = prev;
            let (id, bytes) = segment::encode_file(repo.crypto(), &m)?;
            repo.backend().write(FileKind::Wal, &id.to_hex(), &bytes)?;
            prev = Some(id);
        }
        held.check()?;
        for (id, _) in chain.segments.iter().rev() {
            delete(repo, id)?;
        }
    }
    Ok(done)
}

fn delete(repo: &Repository, id: &SegmentId) -> Result<()> {
    match repo.backend().delete(FileKind::Wal, &id.to_hex()) {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::segment::SegmentTxn;
    use crate::id::{BlobId, SnapshotId};

    fn chain(sizes: &[usize]) -> Segments {
        let mut out: Segments = Vec::new();
        let (mut from, mut txn) = (1_000i64, 1u64);
        for (seq, &n) in sizes.iter().enumerate() {
            let until = from + 1_000;
            let s = Segment {
                host: "h".into(),
                db: b"/a.db".to_vec(),
                base: SnapshotId([1; 32]),
                base_time: 1_000,
                base_txn: 0,
                seq: seq as u64,
                prev: out.last().map(|(id, _)| *id),
                from,
                until,
                page_size: 4096,
                first_txn: txn,
                txns: (0..n)
                    .map(|k| SegmentTxn {
                        time: from + 1 + k as i64,
                        db_pages: 3,
                        pages: vec![1, 2],
                    })
                    .collect(),
                data: vec![BlobId([u8::try_from(seq).unwrap_or(0); 32])],
                end: (seq + 1 == sizes.len()).then(|| "stopped".to_owned()),
            };
            out.push((SegmentId([u8::try_from(seq).unwrap_or(0); 32]), s));
            from = until;
            txn += n as u64;
        }
        out
    }

    #[test]
    fn runs_take_consecutive_segments_up_to_the_weight() {
        let c = chain(&[3, 5, 0, 2]);
        assert_eq!(runs(&c), vec![0..4]);
        // A segment as heavy as the bound stands alone.
        let heavy = usize::try_from(MERGED_WEIGHT / 28).unwrap_or(0);
        let c = chain(&[3, heavy, 2, 4]);
        assert_eq!(runs(&c), vec![0..1, 1..2, 2..4]);
    }

    #[test]
    fn runs_break_where_numbers_or_times_do_not_continue() {
        let mut c = chain(&[3, 5, 2]);
        if let Some((_, s)) = c.get_mut(2) {
            s.first_txn += 1;
        }
        assert_eq!(runs(&c), vec![0..2, 2..3]);
        let mut c = chain(&[3, 5, 2]);
        if let Some((_, s)) = c.get_mut(1) {
            s.from += 1;
        }
        assert_eq!(runs(&c), vec![0..1, 1..3]);
    }

    #[test]
    fn a_merged_segment_is_its_runs_back_to_back() {
        let c = chain(&[3, 5, 2]);
        let m = merged(&c, &[0..2, 2..3]);
        assert_eq!(m.len(), 2);
        let (a, b) = (&m[0], &m[1]);
        assert_eq!((a.seq, a.from, a.until, a.first_txn), (0, 1_000, 3_000, 1));
        assert_eq!(a.txns.len(), 8);
        assert_eq!(a.data, vec![BlobId([0; 32]), BlobId([1; 32])]);
        assert_eq!(a.end, None);
        assert_eq!((b.seq, b.from, b.until, b.first_txn), (1, 3_000, 4_000, 9));
        assert_eq!(b.end.as_deref(), Some("stopped"));
    }
}
