//! Restore to a point in time: rebuilding a watched SQLite database as of
//! a moment or a transaction from a base snapshot and the WAL segments
//! `cairn watch` stored after it (see [`crate::apps::sqlite::watcher`];
//! the segments are read and linked by `crate::repo::segments`).
//!
//! [`restore_at`] picks the chain with the latest base at or before the
//! moment asked for, writes the base image beside the target, applies
//! the captured transactions committed at or before that moment (only the
//! last version of each page is read and written, and the file is cut and
//! grown as they left it: see `Plan`), checks the result with SQLite's
//! `quick_check`, and renames it onto the target. A
//! commit's time is never before the commit (see `follower`: when the
//! watcher found it, at most a poll after it while polls keep time), so a
//! restore never includes a transaction committed after the time asked
//! for; one committed less than a poll before may be left out.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use rayon::prelude::*;

use crate::error::{Error, Hint, Result};
use crate::format::segment::{Segment, SegmentTxn, nanos, timestamp};
use crate::id::{BlobId, SegmentId, SnapshotId};
use crate::repo::Repository;
use crate::repo::audit::{Audited, Event};
use crate::repo::segments::{
    Chain, Gap, Segments, Timeline, link_timelines, read_segments, read_segments_since,
    window_starts,
};

/// What to restore to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PitrPoint {
    /// The state after the last transaction committed at or before this
    /// moment.
    Time(Timestamp),
    /// The state after this transaction (a number from `db timeline`).
    Txn(u64),
    /// The newest state stored.
    Latest,
}

/// How to restore.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PitrRestoreOptions {
    /// The host whose watcher stored the database (default: the only one,
    /// else this host).
    pub host: Option<String>,
    /// Replace an existing target file (after a safety snapshot of it).
    pub overwrite: bool,
    /// Replace it even though another process has it open.
    pub force: bool,
    /// For the safety snapshot, as [`crate::ops::backup::BackupOptions::cache_dir`].
    pub cache_dir: Option<PathBuf>,
}

/// What a point-in-time restore did.
#[derive(Debug, Clone)]
pub struct PitrRestored {
    /// The host whose chain was used.
    pub host: String,
    /// The base snapshot.
    pub base: SnapshotId,
    /// The number of the state restored (the last transaction applied, or
    /// the base's).
    pub txn: u64,
    /// When that transaction was read by the watcher (or the base's time).
    pub time: Timestamp,
    /// Transactions applied on top of the base.
    pub applied: u64,
    /// Segments whose transactions were applied.
    pub segments: usize,
    /// Page images written over the base: the last version of each page
    /// the transactions applied wrote.
    pub pages: u64,
    /// When the moment asked for lies where no chain covers it: the gap.
    pub gap: Option<Gap>,
    /// The restored file's size.
    pub bytes: u64,
    /// When an existing file was replaced: its safety snapshot and how
    /// to put it back.
    pub undo: Option<crate::ops::protect::Undo>,
}

/// The timeline of `db` to restore from: of `host` when given, else of
/// the only host that watched it, else of this host.
fn timeline_for(
    repo: &Repository,
    db: &[u8],
    host: Option<&str>,
    segments: Segments,
) -> Result<Timeline> {
    let mut found = link_timelines(repo, segments, host, Some(db))?;
    let shown = String::from_utf8_lossy(db).into_owned();
    if found.len() > 1 {
        let me = crate::repo::host_and_user().0;
        if let Some(i) = found.iter().position(|t| t.host == me) {
            return Ok(found.swap_remove(i));
        }
        let hosts: Vec<&str> = found.iter().map(|t| t.host.as_str()).collect();
        return Err(Error::Ambiguous(format!(
            "{shown} was watched on several hosts ({})",
            hosts.join(", ")
        ))
        .hinted(Hint::ChooseHost));
    }
    found.pop().ok_or_else(|| {
        Error::NotFound(format!(
            "nothing was stored by cairn watch for {shown}{}: check the path with `cairn db timeline`",
            host.map(|h| format!(" on host {h}")).unwrap_or_default()
        ))
    })
}

/// The timeline to restore `point` from, read from the segments that end
/// in a window before it when the chain it picks lies wholly within that
/// window, else from every segment.
fn timeline_near(
    repo: &Repository,
    db: &[u8],
    host: Option<&str>,
    point: PitrPoint,
) -> Result<Timeline> {
    let near = match point {
        PitrPoint::Time(at) => Some(nanos(at)),
        PitrPoint::Latest => Some(nanos(Timestamp::now())),
        PitrPoint::Txn(_) => None,
    };
    if let Some(near) = near {
        for since in window_starts(near) {
            let (segments, _) = read_segments_since(repo, since)?;
            let Ok(timeline) = timeline_for(repo, db, host, segments) else {
                continue;
            };
            if choose(&timeline, point).is_ok_and(|(chain, _)| chain.base_time >= since) {
                return Ok(timeline);
            }
        }
    }
    let (segments, _) = read_segments(repo)?;
    timeline_for(repo, db, host, segments)
}

/// Restores database `db` (its absolute path, as watched) as of `point`
/// into the file `target` (see the module doc).
///
/// # Errors
/// [`Error::NotFound`] when nothing was stored for the database (on
/// `host`) or the transaction asked for is not stored;
/// [`Error::Ambiguous`] when several hosts watched it and none is named;
/// [`Error::Invalid`] when the time lies before the first base, or the
/// target exists without `overwrite` or is not a regular file;
/// [`Error::Busy`] when the target has a `-wal` file beside it (a database
/// in use); [`Error::InUse`] when another process has it open;
/// [`Error::Damaged`] when no chain can be restored (a segment or base is
/// missing) or the rebuilt database fails SQLite's check; damaged or
/// missing data; [`Error::TargetWrite`].
pub fn restore_at(
    repo: &Repository,
    db: &[u8],
    point: PitrPoint,
    target: &Path,
    opts: &PitrRestoreOptions,
) -> Result<PitrRestored> {
    let what = format!("{} into {}", String::from_utf8_lossy(db), target.display());
    Event::new(repo, "restore-at", what).run(|_| {
        check_target(target, opts.overwrite)?;
        let _held = repo.lock(false, "restore")?;
        repo.ensure_index()?;
        let timeline = timeline_near(repo, db, opts.host.as_deref(), point)?;
        let (chain, gap) = choose(&timeline, point)?;
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(".cairn-restore-")
            .tempfile_in(&dir)
            .map_err(|e| Error::target_write(&dir, e))?;
        let mut out = PitrRestored {
            host: timeline.host.clone(),
            base: chain.base,
            txn: chain.base_txn,
            time: timestamp(chain.base_time),
            applied: 0,
            segments: 0,
            pages: 0,
            gap,
            bytes: 0,
            undo: None,
        };
        rebuild(repo, db, chain, point, &tmp, &mut out)?;
        check_target(target, opts.overwrite)?;
        // Replacing a database is a live restore: the rules of every other
        // door (crate::ops::protect), once the new file is ready.
        if let Ok(real) = std::fs::canonicalize(target) {
            let what = crate::ops::protect::Replacing {
                files: vec![real.clone()],
                databases: vec![real],
                force: opts.force,
                cache_dir: opts.cache_dir.clone(),
                whole_files: true,
                ..crate::ops::protect::Replacing::default()
            };
            let (undo, _) = crate::ops::protect::guard(
                repo,
                &what,
                &crate::apps::sqlite::special::SqliteFiles::hook(),
                &crate::ops::backup::NoProgress,
            )?;
            out.undo = undo;
        }
        tmp.persist(target)
            .map_err(|e| Error::target_write(target, e.error))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::target_write(&dir, e))?;
        Ok(out)
    })
}

impl Audited for PitrRestored {
    fn audit(&self) -> (bool, String) {
        let detail = format!(
            "transaction {} of {} ({})",
            self.txn,
            self.time,
            self.base.short()
        );
        (true, detail)
    }
}

/// Writes database `db` as of `point` into `tmp`: the chain's base
/// snapshot's copy, then the chain's transactions up to the point; syncs
/// it and checks it with SQLite. Fills in what `out` says was applied.
fn rebuild(
    repo: &Repository,
    db: &[u8],
    chain: &Chain,
    point: PitrPoint,
    tmp: &tempfile::NamedTempFile,
    out: &mut PitrRestored,
) -> Result<()> {
    let base = repo.read_snapshot(&chain.base)?;
    let node = crate::repo::walk::find_node(repo, &base.tree, db)?.ok_or_else(|| {
        Error::corrupt(
            format!("snapshot {}", chain.base),
            format!("it has no {}", String::from_utf8_lossy(db)),
        )
    })?;
    {
        let mut w = std::io::BufWriter::new(tmp.as_file());
        crate::ops::inspect::dump(repo, db, &node, &mut w).map_err(|e| match e {
            Error::Output { source } => Error::target_write(tmp.path(), source),
            other => other,
        })?;
        std::io::Write::flush(&mut w).map_err(|e| Error::target_write(tmp.path(), e))?;
    }
    let wanted = |t: &SegmentTxn, number: u64| match point {
        PitrPoint::Time(at) => t.time <= nanos(at),
        PitrPoint::Txn(n) => number <= n,
        PitrPoint::Latest => true,
    };
    let plan = Plan::of(&chain.segments, wanted)?;
    if let Some((number, time)) = plan.last {
        out.txn = number;
        out.time = timestamp(time);
    }
    out.applied = plan.applied;
    out.segments = plan.segments;
    out.pages = plan.write(repo, &chain.segments, tmp.as_file(), tmp.path())?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::target_write(tmp.path(), e))?;
    quick_check(tmp.path())?;
    out.bytes = tmp
        .as_file()
        .metadata()
        .map_err(|e| Error::target_write(tmp.path(), e))?
        .len();
    Ok(())
}

/// Refuses a target that exists (unless `overwrite`) or that a live
/// database's log sits beside.
fn check_target(target: &Path, overwrite: bool) -> Result<()> {
    let mut wal = target.as_os_str().to_owned();
    wal.push("-wal");
    if Path::new(&wal).exists() {
        return Err(Error::Busy(format!(
            "{} has a -wal file beside it: a database in use. Stop the application and remove or checkpoint its log first, or restore to another file and move it into place",
            target.display()
        )));
    }
    match std::fs::symlink_metadata(target) {
        Ok(_) if !overwrite => {
            Err(Error::invalid(format!("{} exists", target.display())).hinted(Hint::Overwrite))
        }
        Ok(m) if !m.is_file() => Err(Error::invalid(format!(
            "{} is not a regular file",
            target.display()
        ))),
        _ => Ok(()),
    }
}

/// The chain to restore `point` from, and the gap `point` lies in, if any.
fn choose(timeline: &Timeline, point: PitrPoint) -> Result<(&Chain, Option<Gap>)> {
    let shown = String::from_utf8_lossy(&timeline.db);
    let usable: Vec<&Chain> = timeline
        .chains
        .iter()
        .filter(|c| c.problem.as_deref().is_none_or(|_| !c.segments.is_empty()))
        .collect();
    let (first, last) = match (usable.first(), usable.last()) {
        (Some(f), Some(l)) => (*f, *l),
        // Every chain lacks a segment or its base snapshot: stored data
        // is missing.
        _ => {
            return Err(Error::Damaged(format!(
                "no chain of {shown} can be restored: {}",
                timeline
                    .chains
                    .iter()
                    .filter_map(|c| c.problem.clone())
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
    };
    match point {
        PitrPoint::Latest => Ok((last, None)),
        PitrPoint::Txn(n) => usable
            .iter()
            .rev()
            .find(|c| c.base_txn <= n && n <= c.last_txn())
            .map(|c| (*c, None))
            .ok_or_else(|| {
                let ranges: Vec<String> = usable
                    .iter()
                    .map(|c| format!("{}–{}", c.base_txn, c.last_txn()))
                    .collect();
                Error::NotFound(format!(
                    "transaction {n} of {shown} is not stored; stored: {}",
                    ranges.join(", ")
                ))
            }),
        PitrPoint::Time(at) => {
            let at = nanos(at);
            let Some(i) = usable.iter().rposition(|c| c.base_time <= at) else {
                return Err(Error::invalid(format!(
                    "{shown} can be restored from {} on, not before",
                    timestamp(first.base_time)
                )));
            };
            let chain = usable.get(i).copied().unwrap_or(first);
            let gap = (at > chain.until()).then(|| Gap {
                from: timestamp(chain.until()),
                to: usable.get(i + 1).map(|c| timestamp(c.base_time)),
                reason: chain
                    .end()
                    .map(str::to_owned)
                    .or_else(|| chain.problem.clone()),
            });
            Ok((chain, gap))
        }
    }
}

/// What a restore writes over the base image: the last version of each
/// page as of the point, found before any page is read.
///
/// Applying every transaction in turn would give the same file, but
/// writes every version of a page (an hour of a busy database rewrites
/// its hot pages tens of thousands of times) and must read every segment
/// in order. The file after transactions 1..n is the base with, for each
/// page, its last version written, except where a later transaction cut
/// the file below that page (a VACUUM), which leaves zeros. So: cut the base
/// image to the least size any applied transaction left, extend it to the
/// last one's size (zeros between), and write each page's last version
/// still inside every size after it.
struct Plan {
    /// For each segment that holds a page version to write (by its place in
    /// the chain): the pages (number, byte offset in the segment's data).
    reads: BTreeMap<usize, Vec<(u32, u64)>>,
    /// The least and the last database size (pages) of the transactions
    /// applied; `None` when none is.
    sizes: Option<(u32, u32)>,
    /// The number and time of the last transaction applied.
    last: Option<(u64, i64)>,
    /// Transactions applied.
    applied: u64,
    /// Segments with transactions applied.
    segments: usize,
    /// The chain's page size.
    page_size: u32,
}

impl Plan {
    /// The plan for the transactions of `segments` that `wanted` takes: all
    /// of them up to the first it does not.
    fn of(segments: &Segments, wanted: impl Fn(&SegmentTxn, u64) -> bool) -> Result<Self> {
        // (segment, transaction, index of its first page in the segment,
        // its number).
        let mut taken: Vec<(usize, &SegmentTxn, u64, u64)> = Vec::new();
        let mut segments_used = 0;
        let mut page_size = None;
        'segments: for (i, (id, s)) in segments.iter().enumerate() {
            if *page_size.get_or_insert(s.page_size) != s.page_size {
                return Err(Error::corrupt(
                    format!("WAL segment {id}"),
                    "its page size differs from the rest of its chain",
                ));
            }
            let mut first_page = 0u64;
            let mut used = false;
            for (k, t) in s.txns.iter().enumerate() {
                let number = s.first_txn + k as u64;
                if !wanted(t, number) {
                    segments_used += usize::from(used);
                    break 'segments;
                }
                taken.push((i, t, first_page, number));
                used = true;
                first_page += t.pages.len() as u64;
            }
            segments_used += usize::from(used);
        }
        let mut plan = Self {
            reads: BTreeMap::new(),
            sizes: None,
            last: taken.last().map(|&(_, t, _, number)| (number, t.time)),
            applied: taken.len() as u64,
            segments: segments_used,
            page_size: page_size.unwrap_or(4096),
        };
        // Backwards: the first version met of a page is its last; it
        // survives if no transaction from its own on cut the file below it.
        let mut least = u32::MAX;
        let mut decided: HashSet<u32> = HashSet::new();
        let size = u64::from(plan.page_size);
        for &(i, t, first_page, _) in taken.iter().rev() {
            least = least.min(t.db_pages);
            for (j, &page) in t.pages.iter().enumerate().rev() {
                if decided.insert(page) && page <= least {
                    plan.reads
                        .entry(i)
                        .or_default()
                        .push((page, (first_page + j as u64) * size));
                }
            }
        }
        plan.sizes = taken.last().map(|&(_, t, _, _)| (least, t.db_pages));
        Ok(plan)
    }

    /// Writes the plan over the base image in `file`; the page versions
    /// written.
    fn write(
        &self,
        repo: &Repository,
        segments: &Segments,
        file: &File,
        path: &Path,
    ) -> Result<u64> {
        let size = u64::from(self.page_size);
        let Some((least, last)) = self.sizes else {
            return Ok(0);
        };
        file.set_len(u64::from(least) * size)
            .and_then(|()| file.set_len(u64::from(last) * size))
            .map_err(|e| Error::target_write(path, e))?;
        let reads: Vec<(&usize, &Vec<(u32, u64)>)> = self.reads.iter().collect();
        crate::repo::in_pool(|| {
            reads.par_iter().try_for_each(|&(&i, pages)| {
                let Some((id, s)) = segments.get(i) else {
                    return Ok(());
                };
                SegmentData::new(repo, id, s)?.write_pages(pages, size, file, path)
            })
        })?;
        Ok(self.reads.values().map(|v| v.len() as u64).sum())
    }
}

/// The data of one segment: its blobs' places in the concatenated page
/// images, read only where a page is wanted.
struct SegmentData<'a> {
    repo: &'a Repository,
    id: &'a SegmentId,
    blobs: &'a [BlobId],
    /// The offset where each blob starts, and the end of the last.
    starts: Vec<u64>,
}

impl<'a> SegmentData<'a> {
    fn new(repo: &'a Repository, id: &'a SegmentId, s: &'a Segment) -> Result<Self> {
        let mut starts = Vec::with_capacity(s.data.len() + 1);
        let mut at = 0u64;
        starts.push(at);
        for blob in &s.data {
            at += u64::from(repo.raw_length(blob)?);
            starts.push(at);
        }
        Ok(Self {
            repo,
            id,
            blobs: &s.data,
            starts,
        })
    }

    /// Writes `pages` (number, offset in the data) of `size` bytes each into
    /// `file`, reading each blob they lie in once.
    fn write_pages(&self, pages: &[(u32, u64)], size: u64, file: &File, path: &Path) -> Result<()> {
        let mut sorted = pages.to_vec();
        sorted.sort_unstable_by_key(|&(_, at)| at);
        let end = self.starts.last().copied().unwrap_or(0);
        // The blob read last, by its place; pages come in data order, so a
        // blob is read once.
        let mut held: Option<(usize, Vec<u8>)> = None;
        let mut page = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        for (number, at) in sorted {
            if at + size > end {
                return Err(Error::corrupt(
                    format!("WAL segment {}", self.id),
                    "its data ends before its last page",
                ));
            }
            page.clear();
            let mut pos = at;
            while pos < at + size {
                // The blob holding byte `pos`: the last start at or before it.
                let b = self.starts.partition_point(|&s| s <= pos) - 1;
                if held.as_ref().is_none_or(|(h, _)| *h != b) {
                    let Some(id) = self.blobs.get(b) else {
                        return Err(Error::corrupt(
                            format!("WAL segment {}", self.id),
                            "its data ends before its last page",
                        ));
                    };
                    held = Some((b, self.repo.read_blob(id)?));
                }
                let (start, stop) = (
                    self.starts.get(b).copied().unwrap_or(0),
                    self.starts.get(b + 1).copied().unwrap_or(0),
                );
                let take = (at + size).min(stop) - pos;
                let from = usize::try_from(pos - start).unwrap_or(usize::MAX);
                let bytes = held
                    .as_ref()
                    .and_then(|(_, d)| d.get(from..from + usize::try_from(take).unwrap_or(0)))
                    .ok_or_else(|| {
                        Error::corrupt(
                            format!("WAL segment {}", self.id),
                            "a blob of its data is shorter than the index says",
                        )
                    })?;
                page.extend_from_slice(bytes);
                pos += take;
            }
            file.write_all_at(&page, u64::from(number - 1) * size)
                .map_err(|e| Error::target_write(path, e))?;
        }
        Ok(())
    }
}

/// SQLite's `quick_check` of the rebuilt file.
fn quick_check(path: &Path) -> Result<()> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Error::sqlite("the rebuilt database cannot be opened", path, e))?;
    let checking = |e| Error::sqlite("checking the rebuilt database", path, e);
    let result: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(checking)?;
    conn.close().map_err(|(_, e)| checking(e))?;
    // Rebuilt from the stored base and pages: what is wrong with it is
    // wrong with them (exit code 3).
    if result != "ok" {
        return Err(Error::Damaged(format!(
            "the rebuilt database fails SQLite's quick_check ({result}); nothing was written to the target. Run `cairn verify` on the repository"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a page of the rebuilt file holds, in the model.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Held {
        Base(u32),
        Zero,
        /// A page image, by segment and offset in its data.
        Version(usize, u64),
    }

    fn chain(shape: &[Vec<(u32, Vec<u32>)>]) -> Segments {
        let mut first_txn = 1;
        shape
            .iter()
            .enumerate()
            .map(|(i, txns)| {
                let s = Segment {
                    host: "h".into(),
                    db: b"/db".to_vec(),
                    base: SnapshotId([1; 32]),
                    base_time: 0,
                    base_txn: 0,
                    seq: i as u64,
                    prev: (i > 0).then_some(SegmentId([2; 32])),
                    from: 0,
                    until: 0,
                    page_size: 512,
                    first_txn,
                    txns: txns
                        .iter()
                        .map(|(db_pages, pages)| SegmentTxn {
                            time: 0,
                            db_pages: *db_pages,
                            pages: pages.clone(),
                        })
                        .collect(),
                    data: Vec::new(),
                    end: None,
                };
                first_txn += txns.len() as u64;
                (SegmentId([3; 32]), s)
            })
            .collect()
    }

    /// Every transaction up to `upto` applied in turn, as restore once did.
    fn replayed(segments: &Segments, base: u32, upto: u64) -> Vec<Held> {
        let mut image: Vec<Held> = (1..=base).map(Held::Base).collect();
        for (i, (_, s)) in segments.iter().enumerate() {
            let mut page_at = 0u64;
            for (k, t) in s.txns.iter().enumerate() {
                if s.first_txn + k as u64 > upto {
                    return image;
                }
                for &p in &t.pages {
                    let p = p as usize;
                    if image.len() < p {
                        image.resize(p, Held::Zero);
                    }
                    image[p - 1] = Held::Version(i, page_at * 512);
                    page_at += 1;
                }
                image.resize(t.db_pages as usize, Held::Zero);
            }
        }
        image
    }

    /// The plan's file: the base cut and grown, then the pages it reads.
    fn planned(plan: &Plan, base: u32) -> Vec<Held> {
        let mut image: Vec<Held> = (1..=base).map(Held::Base).collect();
        if let Some((least, last)) = plan.sizes {
            image.resize(least as usize, Held::Zero);
            image.resize(last as usize, Held::Zero);
        }
        for (&i, pages) in &plan.reads {
            for &(p, at) in pages {
                image[p as usize - 1] = Held::Version(i, at);
            }
        }
        image
    }

    proptest! {
        #[test]
        fn the_plan_gives_what_replaying_every_transaction_gives(
            shape in proptest::collection::vec(
                proptest::collection::vec(
                    (1u32..16, proptest::collection::vec(1u32..16, 0..8)),
                    0..5,
                ),
                1..5,
            ),
            base in 1u32..16,
            upto in 0u64..20,
        ) {
            let segments = chain(&shape);
            let plan = Plan::of(&segments, |_, n| n <= upto).expect("plan");
            prop_assert_eq!(planned(&plan, base), replayed(&segments, base, upto));
            let total: u64 = shape.iter().map(|s| s.len() as u64).sum();
            prop_assert_eq!(plan.applied, total.min(upto));
            // Each page is read at most once.
            let mut seen = HashSet::new();
            for pages in plan.reads.values() {
                for (p, _) in pages {
                    prop_assert!(seen.insert(*p));
                }
            }
        }
    }

    /// A rebuilt file whose pages SQLite finds inconsistent is damage
    /// (exit code 3), not a bad request; a sound one passes.
    #[test]
    fn pitr_a_rebuilt_database_that_fails_quick_check_is_damaged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rebuilt.db");
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.execute_batch(
            "PRAGMA page_size = 1024; CREATE TABLE t (x); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) INSERT INTO t SELECT randomblob(100) FROM n;",
        )
        .expect("fill");
        drop(conn);
        quick_check(&path).expect("a sound database passes");
        // Page 3, a leaf of t's tree: its cells point past its end.
        let mut bytes = std::fs::read(&path).expect("read");
        if let Some(page) = bytes.get_mut(2048 + 8..2048 + 200) {
            page.fill(0xff);
        }
        std::fs::write(&path, &bytes).expect("write");
        let e = quick_check(&path).expect_err("fails its check");
        assert!(e.is_damage(), "{e:?}");
        assert!(e.to_string().contains("fails SQLite's quick_check"), "{e}");
    }
}
