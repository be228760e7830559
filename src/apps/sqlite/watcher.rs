//! The watcher of `cairn watch`: the threads that store what
//! [`crate::apps::sqlite::follower::Follower`] captures from a live SQLite
//! database as base snapshots and WAL segments (store-format.md §25).
//! Reading the stored segments back and linking them into timelines is
//! `crate::repo::segments`'s; restoring from them is
//! [`crate::apps::sqlite::pitr`]'s.
//!
//! # Chains
//!
//! The watcher starts a *chain*: it takes a base (a page-aware snapshot of
//! the database, tagged `watch`, whose image is exactly one point of the
//! log) and then writes a segment (`segment`) whenever a captured commit
//! has waited [`WatchOptions::lag`], and a segment without transactions
//! every [`WatchOptions::heartbeat`] while the database is idle, so the
//! timeline can tell "nothing happened" from "nobody was watching". Each
//! flush writes packs, then their index file, then the segment, under a
//! shared lock: a crash at any point leaves a valid repository, and a
//! segment never names data that is not stored.
//!
//! A new chain starts on schedule ([`WatchOptions::base_every`]), when the
//! pages stored since the base pass [`WatchOptions::base_bytes`] or the
//! database's size, whichever is larger (so a restore never reads an
//! unbounded log, and a base is not taken more often than replaying costs
//! about as much), and whenever the follower cannot prove it saw every
//! commit (the database was replaced, another
//! process restarted the log twice, the watcher itself was restarted). A
//! scheduled new chain begins before the old one ends, so the two overlap
//! and no gap opens; the others leave a gap from the old chain's last
//! proven moment to the new base, which the timeline reports as a gap
//! (`crate::repo::segments::Timeline::gaps`).
//!
//! # Memory, and a storing that cannot keep up
//!
//! Every page image read from the log and not yet stored counts against
//! [`WatchOptions::max_memory`] (default 64 MiB), whichever chain it
//! belongs to (a chain ended by a new base is stored in the background)
//! and also while a new base is stored (the commits read meanwhile wait
//! for its segment 0). Each poll reads only as much of the log as fits
//! ([`Follower::set_read_limit`]; at least one transaction, and whole the
//! few frames committed during one of the watcher's own restarts of the
//! log), a segment is sealed at a quarter of the limit, and the storing
//! thread releases a segment's pages once it is stored. When the limit is
//! reached the watcher reads no further: the commits wait in the `-wal`
//! file, which cannot restart under the pin. A short stall costs nothing
//! more. But when the log grows past [`WatchOptions::max_wal`] (default
//! 256 MiB) while the watcher is behind it, the watcher lets the log go
//! (the application's checkpoints copy and restart it as without a
//! watcher), ends the chain at the last commit it read, with the reason,
//! waits until what it read is stored, and starts a new chain from a new
//! base: the time between is a gap, which `db timeline` shows and a
//! restore to a moment in it reports. A scheduled new base is not taken
//! while the watcher is behind or its memory half full. The rest of the
//! process (packs being written, a base being stored: the backup's own
//! buffers) is bounded by the repository's pack size, not by the log.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::apps::sqlite::follower::{Base, Commit, Event, Follower};
use crate::apps::sqlite::special::SqliteFiles;
use crate::error::{Error, Result};
use crate::format::pack::BlobKind;
use crate::format::segment::{self, Segment, SegmentTxn, nanos};
use crate::id::{BlobId, SegmentId, SnapshotId};
use crate::ops::backup::{BackupOptions, BackupOutcome, NoProgress};
use crate::repo::Repository;
use crate::repo::segments::{
    BASE_TAG, Segments, read_segments, read_segments_since, window_starts,
};
use crate::storage::FileKind;

/// Default [`WatchOptions::max_memory`]: 64 MiB.
pub const DEFAULT_MAX_MEMORY: u64 = 64 << 20;

/// Default [`WatchOptions::max_wal`]: 256 MiB.
pub const DEFAULT_MAX_WAL: u64 = 256 << 20;

/// How `cairn watch` runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WatchOptions {
    /// The longest a captured commit waits before it is written to the
    /// repository.
    pub lag: Duration,
    /// The pause between two reads of the log: the precision of commit
    /// times.
    pub poll: Duration,
    /// A segment is written at least this often while the database is
    /// idle, proving that the watcher was following it.
    pub heartbeat: Duration,
    /// A new base is taken when the chain's base is this old.
    pub base_every: Duration,
    /// A new base is taken when the chain's segments hold this many bytes
    /// of pages, or the size of the database if larger: a bound on what a
    /// restore reads past the base (it writes only each page's last
    /// version, but may have to read every segment's data).
    pub base_bytes: u64,
    /// The log size at which the watcher restarts the log itself.
    pub restart_bytes: u64,
    /// The host name to record instead of this machine's.
    pub host: Option<String>,
    /// The most bytes of page images the watcher holds in memory: read
    /// from the log and not yet stored, by every chain of the database
    /// together (the transactions read while a new base is stored
    /// included). At it the watcher reads no further until the storing
    /// catches up: the commits wait in the application's `-wal` file, up
    /// to [`WatchOptions::max_wal`]. A segment is sealed at a quarter of
    /// it, so the storing can free memory before the lag is up.
    pub max_memory: u64,
    /// How long the application's log may grow while the watcher is behind
    /// it (its memory full, or its last read stopped short of the end): the
    /// watcher's pin keeps the log from restarting until the watcher has
    /// read it. Past it the watcher lets the log go (the application's
    /// checkpoints then copy and restart it as without a watcher), ends
    /// the chain with the transactions it read (a gap in the timeline
    /// follows), and takes a new base once everything read is stored.
    pub max_wal: u64,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            lag: Duration::from_secs(1),
            poll: Duration::from_millis(10),
            heartbeat: Duration::from_secs(30),
            base_every: Duration::from_secs(3600),
            // 256 MiB took a base every 2 s at full speed (7,000
            // commits a second here), each a whole-database read that
            // took CPU from the application and stored the pages that
            // changed again. A restore of a point 1 GiB of pages after
            // its base reads at most that much segment data, compressed
            // (to about a quarter for the row data of benches/pitr.sh).
            base_bytes: 1 << 30,
            restart_bytes: crate::apps::sqlite::follower::DEFAULT_RESTART_BYTES,
            host: None,
            max_memory: DEFAULT_MAX_MEMORY,
            max_wal: DEFAULT_MAX_WAL,
        }
    }
}

/// What the watcher reports as it goes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum WatchNote {
    /// A chain began with a base snapshot.
    Base {
        /// The snapshot.
        id: SnapshotId,
        /// The point of the log it stands for.
        time: Timestamp,
        /// Bytes the base added to the repository.
        bytes_added: u64,
    },
    /// A segment was written.
    Segment {
        /// Its id.
        id: SegmentId,
        /// Transactions in it.
        txns: usize,
        /// Pages in it.
        pages: u64,
        /// The longest a commit in it waited to be stored.
        lag: Duration,
        /// The most bytes of pages the watcher has held in memory at once
        /// since it started (see [`WatchOptions::max_memory`]).
        peak_memory: u64,
    },
    /// The chain ended and a new one starts: the reason.
    ChainEnd(String),
    /// Something failed; the watcher keeps going (and keeps what it has
    /// not stored yet).
    Problem(String),
}

/// The absolute form of a database path as the watcher records it:
/// symlinks resolved where the file exists.
///
/// # Errors
/// When the current directory cannot be read for a relative path.
pub fn db_path(db: &Path) -> Result<PathBuf> {
    match std::fs::canonicalize(db) {
        Ok(p) => Ok(p),
        Err(_) => std::path::absolute(db).map_err(|e| Error::source_read(db, e)),
    }
}

/// What the storing thread of a chain needs to write its next segment.
struct ChainState {
    base: SnapshotId,
    base_time: i64,
    base_txn: u64,
    seq: u64,
    prev: Option<SegmentId>,
    from: i64,
    page_size: u32,
    next_txn: u64,
}

impl ChainState {
    /// A chain from its base (`base`, taken at `base_time` and numbered
    /// `base_txn`), before its segment 0: the first transaction after the
    /// base is numbered `base_txn + 1`.
    fn first(base: SnapshotId, base_time: i64, base_txn: u64, page_size: u32) -> Self {
        Self {
            base,
            base_time,
            base_txn,
            seq: 0,
            prev: None,
            from: base_time,
            page_size,
            next_txn: base_txn + 1,
        }
    }
}

/// A base just stored, and what the follower read while it was.
struct StoredBase {
    /// The backup that stored the base.
    done: BackupOutcome,
    /// The commits read meanwhile, counted as held: segment 0's.
    first: Vec<Commit>,
    /// Why the follower let the log go meanwhile, if it did: the new chain
    /// then ends at once.
    behind: Option<String>,
}

/// What the polling thread hands a chain's storing thread.
enum Handed {
    /// Commits just read, in order, for the segment being filled. They go
    /// over at every poll and the storing thread copies their pages into
    /// the segment's one buffer at once, so the memory they were read into
    /// is freed and used again within a poll or two. Kept until the
    /// segment was complete (a second at the default lag), they made the
    /// polling thread fault in fresh memory for everything it read: at the
    /// log's full rate, most of that thread's CPU, taken from the
    /// application.
    Commits(Vec<Commit>),
    /// The segment being filled is complete: it covers up to `until`, and
    /// with `end` the chain ends with it.
    Seal { until: i64, end: Option<String> },
}

fn page_bytes(commits: &[Commit]) -> u64 {
    commits.iter().map(|c| c.data.len() as u64).sum()
}

/// Hands `what` to a chain's storing thread, which releases its `bytes`
/// of pages (counted in `held` when they were read) once it has stored
/// them.
fn send(tx: &std::sync::mpsc::Sender<Handed>, what: Handed, bytes: u64, held: &AtomicU64) {
    if tx.send(what).is_err() {
        // The storing thread is gone (it reported why itself).
        held.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// The segment a storing thread is filling.
#[derive(Default)]
struct Filling {
    /// The commits, their `data` moved into `data`.
    commits: Vec<Commit>,
    /// Their pages, in order.
    data: Vec<u8>,
}

impl Filling {
    fn add(&mut self, commits: Vec<Commit>) {
        // Exactly: doubling would take up to twice the pages held.
        self.data
            .reserve_exact(usize::try_from(page_bytes(&commits)).unwrap_or(0));
        for mut c in commits {
            self.data.extend_from_slice(&c.data);
            c.data = Vec::new();
            self.commits.push(c);
        }
    }

    /// Empties it for the next segment. The buffer is kept (a segment at
    /// full speed is tens of megabytes, and fresh memory costs a page
    /// fault per page) up to `keep` bytes.
    fn clear(&mut self, keep: usize) {
        self.commits.clear();
        self.data.clear();
        if self.data.capacity() > keep {
            self.data.shrink_to(keep);
        }
    }
}

/// A chain as the polling thread sees it: what it has read and not yet
/// handed over, and the channel to the chain's storing thread.
struct Following<'scope> {
    /// Commits handed over for the segment being filled.
    pending: u64,
    /// When the first of them was found.
    pending_since: Option<Timestamp>,
    /// The latest time one of them was found at.
    pending_last: Option<i64>,
    /// Bytes of their pages.
    pending_bytes: u64,
    /// The start of the time the pending commits cover.
    from: i64,
    next_txn: u64,
    started: Instant,
    last_sent: Instant,
    /// Bytes of pages handed over since the base.
    sent_bytes: u64,
    /// The size of the base image: a new base is not due on size before
    /// the chain's pages reach it (replaying them costs about what a
    /// base does).
    base_len: u64,
    /// Set when the storing fell so far behind that the follower let the
    /// log go: the chain ends with the commits read, for this reason.
    behind: Option<String>,
    tx: std::sync::mpsc::Sender<Handed>,
    storer: std::thread::ScopedJoinHandle<'scope, ()>,
}

impl Following<'_> {
    /// Hands the commits a poll found to the storing thread (counted as
    /// held in memory) for the segment being filled; the reason the
    /// follower lost its proof of continuity (or could not read), if so.
    fn take(&mut self, polled: Result<Vec<Event>>, w: &Watcher<'_>) -> Option<String> {
        let mut commits = Vec::new();
        let lost = collect(polled, &mut commits).err().map(|e| e.to_string());
        w.hold(page_bytes(&commits));
        self.hand(commits, &w.held);
        lost
    }

    /// Hands `commits`, already counted in `held`, to the storing thread.
    fn hand(&mut self, commits: Vec<Commit>, held: &AtomicU64) {
        let Some(first) = commits.first() else {
            return;
        };
        self.pending_since.get_or_insert(first.time);
        let last = commits.iter().map(|c| nanos(c.time)).max();
        self.pending_last = self.pending_last.max(last);
        self.pending += commits.len() as u64;
        let bytes = page_bytes(&commits);
        self.pending_bytes += bytes;
        send(&self.tx, Handed::Commits(commits), bytes, held);
    }

    /// The number the next commit read will get.
    fn next_number(&self) -> u64 {
        self.next_txn + self.pending
    }

    /// The last moment known complete after a loss: the last commit read
    /// (what came after it may be missing), or the start of the time not
    /// yet handed over.
    fn last_read(&self) -> i64 {
        self.pending_last.unwrap_or(self.from).max(self.from)
    }
}

/// What the polling thread holds between two polls.
struct Polling<'scope> {
    /// The follower of the current chain's log.
    follower: Follower,
    /// The current chain.
    chain: Following<'scope>,
    /// The storing threads of chains ended by a new base, still storing
    /// what they were handed. Waited for in the polling thread, a backlog
    /// of seconds at full speed kept it from polling, so the pin stood
    /// still and the application's checkpoints copied nothing, until its
    /// next one synced the whole log written meanwhile inside a commit.
    retiring: Vec<std::thread::ScopedJoinHandle<'scope, ()>>,
    /// No new base is tried before this (set after a failed one).
    next_base_try: Instant,
}

/// Lowers the calling thread's priority (and that of the threads it
/// starts): storing what was read may wait for the application, which
/// should not wait for it. On a busy machine the application's commits
/// then keep their pace and the storing uses what CPU is left (see the
/// full-speed figures of issue 10 in BENCHMARKS.md).
fn background() {
    // On Linux the nice value is a thread's own; elsewhere it would slow
    // the polling thread too, whose holds of the write lock must be short.
    #[cfg(target_os = "linux")]
    let _ = rustix::process::nice(19);
}

/// `bytes` for people: `12.5 MiB`.
fn size(bytes: u64) -> String {
    bytesize::ByteSize(bytes).display().iec().to_string()
}

fn thread_error(e: std::io::Error) -> Error {
    Error::internal(format!(
        "cannot start a thread: {e}; the system may be out of memory or of threads"
    ))
}

/// Adds the commits a poll found to `into`, even when it then lost its
/// proof of continuity; that loss, or the poll's failure, is the error.
fn collect(polled: Result<Vec<Event>>, into: &mut Vec<Commit>) -> Result<()> {
    let mut lost = None;
    for e in polled? {
        match e {
            Event::Commit(c) => into.push(c),
            Event::Lost(why) => lost = Some(why),
        }
    }
    // The application restarted or replaced the log where the follower
    // could not see it: another process changed what it follows.
    lost.map_or(Ok(()), |why| Err(Error::Busy(why)))
}

/// The watcher of one database.
struct Watcher<'a> {
    repo: &'a Repository,
    db: PathBuf,
    host: String,
    opts: &'a WatchOptions,
    notify: &'a (dyn Fn(WatchNote) + Sync),
    /// Bytes of pages read and not yet stored (see
    /// [`WatchOptions::max_memory`]).
    held: AtomicU64,
    /// The most `held` has been.
    peak: AtomicU64,
}

/// Follows the WAL-mode database `db` and stores its transactions until
/// `stop` is set (see the module doc). Problems on the way (the
/// repository unreachable, the database replaced) are reported through
/// `notify` and do not end the watch.
///
/// # Errors
/// When the database cannot be followed at all at the start (not WAL,
/// unreadable), or its first base cannot be stored.
pub fn watch(
    repo: &Repository,
    db: &Path,
    opts: &WatchOptions,
    stop: &AtomicBool,
    notify: &(dyn Fn(WatchNote) + Sync),
) -> Result<()> {
    let db = db_path(db)?;
    let host = opts
        .host
        .clone()
        .unwrap_or_else(|| crate::repo::host_and_user().0);
    crate::repo::audit::record_event(repo, "watch", &db.display().to_string(), true, "started");
    let w = Watcher {
        repo,
        db,
        host,
        opts,
        notify,
        held: AtomicU64::new(0),
        peak: AtomicU64::new(0),
    };
    let done = std::thread::scope(|scope| w.run(scope, stop));
    let detail = match &done {
        Ok(()) => "stopped".to_owned(),
        Err(e) => e.to_string(),
    };
    crate::repo::audit::record_event(
        repo,
        "watch",
        &w.db.display().to_string(),
        done.is_ok(),
        &detail,
    );
    done
}

impl<'a> Watcher<'a> {
    /// Counts `bytes` of pages just read as held in memory.
    fn hold(&self, bytes: u64) {
        let now = self.held.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    /// Bytes of pages that may still be read before the watcher holds
    /// [`WatchOptions::max_memory`]; with nothing held, at least one
    /// transaction (a poll reads one whatever its limit).
    fn room(&self) -> u64 {
        match self.held.load(Ordering::Relaxed) {
            0 => self.opts.max_memory.max(1),
            held => self.opts.max_memory.saturating_sub(held),
        }
    }

    /// Why the watcher must let the log go, if it must: `follower`, which
    /// is behind, keeps a log longer than [`WatchOptions::max_wal`].
    fn too_far_behind(&self, follower: &mut Follower) -> Option<String> {
        let (len, unread) = follower.log_len().unwrap_or((0, 0));
        (len > self.opts.max_wal).then(|| {
            format!(
                "the storing fell behind: the log grew to {} ({} unread; limit {}, max WAL) with {} of pages in memory (limit {}, max memory); the watcher let the log go so that the application's checkpoints proceed, and takes a new base once what it read is stored",
                size(len),
                size(unread),
                size(self.opts.max_wal),
                size(self.held.load(Ordering::Relaxed)),
                size(self.opts.max_memory),
            )
        })
    }

    /// Polls the log in this thread, so that commit times (when a poll
    /// found them) do not depend on how long storing takes; each chain's
    /// segments are written by a thread of its own, in order.
    ///
    /// Each turn: join the retired chains' storing threads that ended;
    /// start again when the storing fell behind; finish when stopped;
    /// wait while memory is full; poll, starting again on a loss; then
    /// take a new base, or seal a segment, when one is due.
    fn run<'scope>(
        &'scope self,
        scope: &'scope std::thread::Scope<'scope, '_>,
        stop: &'scope AtomicBool,
    ) -> Result<()> {
        let next_txn = self.next_txn()?;
        let (follower, chain) = self.start_chain(scope, stop, next_txn, None)?;
        let mut p = Polling {
            follower,
            chain,
            retiring: Vec::new(),
            next_base_try: Instant::now(),
        };
        loop {
            p.retiring = self.join_finished(std::mem::take(&mut p.retiring));
            if let Some(why) = p.chain.behind.take() {
                let Some(next) = self.start_again_behind(scope, stop, p, why) else {
                    return Ok(());
                };
                p = next;
                continue;
            }
            if stop.load(Ordering::Relaxed) {
                self.finish(p);
                return Ok(());
            }
            let t0 = nanos(Timestamp::now());
            let room = self.room();
            if room == 0 {
                self.wait_for_storing(&mut p.follower, &mut p.chain);
                continue;
            }
            p.follower.set_read_limit(room);
            if let Some(why) = p.chain.take(p.follower.poll(), self) {
                let Some(next) = self.start_again_after_loss(scope, stop, p, why) else {
                    return Ok(());
                };
                p = next;
                continue;
            }
            if !p.follower.caught_up() {
                // Reading slower than the application writes.
                p.chain.behind = self.too_far_behind(&mut p.follower);
                if p.chain.behind.is_some() {
                    continue;
                }
            }
            if self.new_base_due(&p) {
                self.take_new_base(scope, stop, &mut p);
                continue;
            }
            if self.segment_due(&p.chain) {
                // A read cut short claims no moment past its commits.
                let upto = if p.follower.caught_up() {
                    t0
                } else {
                    p.chain.from
                };
                self.hand_over(&mut p.chain, upto, None);
            }
            std::thread::sleep(self.opts.poll);
        }
    }

    /// Ends the chain because the storing fell behind (`why`) and starts a
    /// new one: lets go of the log at once (the application checkpoints
    /// again), stores what was read, waits for every chain still being
    /// stored, then starts again. `None` when `stop` was set first.
    fn start_again_behind<'scope>(
        &'scope self,
        scope: &'scope std::thread::Scope<'scope, '_>,
        stop: &'scope AtomicBool,
        p: Polling<'scope>,
        why: String,
    ) -> Option<Polling<'scope>> {
        let Polling {
            mut follower,
            chain,
            mut retiring,
            next_base_try,
        } = p;
        follower.let_go();
        drop(follower);
        (self.notify)(WatchNote::ChainEnd(why.clone()));
        let until = chain.last_read();
        let next = chain.next_number();
        self.end_chain(chain, until, why);
        retiring.drain(..).for_each(|r| self.join_storer(r));
        let (follower, chain) = self.restart_chain(scope, stop, next)?;
        Some(Polling {
            follower,
            chain,
            retiring,
            next_base_try,
        })
    }

    /// Ends the chain at its last commit read because the follower lost
    /// its proof of continuity, or could not read (`why`), and starts a
    /// new one. `None` when `stop` was set first, once every chain is
    /// stored.
    fn start_again_after_loss<'scope>(
        &'scope self,
        scope: &'scope std::thread::Scope<'scope, '_>,
        stop: &'scope AtomicBool,
        p: Polling<'scope>,
        why: String,
    ) -> Option<Polling<'scope>> {
        let Polling {
            follower,
            chain,
            retiring,
            next_base_try,
        } = p;
        let until = chain.last_read();
        (self.notify)(WatchNote::ChainEnd(why.clone()));
        let next = chain.next_number();
        drop(follower);
        self.end_chain(chain, until, why);
        let Some((follower, chain)) = self.restart_chain(scope, stop, next) else {
            retiring.into_iter().for_each(|r| self.join_storer(r));
            return None;
        };
        Some(Polling {
            follower,
            chain,
            retiring,
            next_base_try,
        })
    }

    /// Stops the watch: reads the rest of the log, lets it go, and waits
    /// until every chain is stored.
    fn finish(&self, p: Polling<'_>) {
        let Polling {
            mut follower,
            mut chain,
            retiring,
            ..
        } = p;
        let until = self.read_rest(&mut follower, &mut chain);
        follower.let_go();
        self.end_chain(chain, until, "the watcher was stopped".into());
        retiring.into_iter().for_each(|r| self.join_storer(r));
    }

    /// A poll's turn with memory full: the storing has fallen behind, and
    /// what is still unread waits in the log, under the pin, up to
    /// `max_wal`. What was handed over is sealed now, as far as the last
    /// poll read (the storing thread frees nothing before a segment is
    /// sealed, so waiting for the lag here would wait forever); then the
    /// log's length is checked and the turn waits a poll.
    fn wait_for_storing(&self, follower: &mut Follower, chain: &mut Following<'_>) {
        self.seal_pending(chain);
        chain.behind = self.too_far_behind(follower);
        std::thread::sleep(self.opts.poll);
    }

    /// Whether a scheduled new base is due (the chain's base is
    /// [`WatchOptions::base_every`] old, or its pages reach
    /// [`WatchOptions::base_bytes`] or the base's size) and may be tried
    /// now. Not while two ended chains are still being stored, nor while
    /// the follower is behind the log or memory is half full: the storing
    /// has fallen behind, and another base would only add to it; nor
    /// before the retry time after a failed one.
    fn new_base_due(&self, p: &Polling<'_>) -> bool {
        let chain = &p.chain;
        let base_due = (chain.started.elapsed() >= self.opts.base_every
            || chain.sent_bytes >= self.opts.base_bytes.max(chain.base_len))
            && p.retiring.len() < 2
            && p.follower.caught_up()
            && self.room() >= self.opts.max_memory / 2;
        base_due && Instant::now() >= p.next_base_try
    }

    /// Starts a new chain from a new base while the old one is read up to
    /// it (the two overlap, see [`Watcher::start_chain`]), and retires the
    /// old chain, which ends where the new base begins. When the base
    /// cannot be taken, the old chain goes on and the next try is in 60 s.
    fn take_new_base<'scope>(
        &'scope self,
        scope: &'scope std::thread::Scope<'scope, '_>,
        stop: &'scope AtomicBool,
        p: &mut Polling<'scope>,
    ) {
        match self.start_chain(scope, stop, 0, Some((&mut p.follower, &mut p.chain))) {
            Ok((new_follower, new_chain)) => {
                let old = std::mem::replace(&mut p.chain, new_chain);
                p.follower = new_follower;
                let until = old.from;
                p.retiring
                    .push(self.retire(old, until, "a new base was taken".into()));
            }
            Err(e) => {
                p.next_base_try = Instant::now() + Duration::from_secs(60);
                (self.notify)(WatchNote::Problem(format!(
                    "taking a new base of {}: {e}; trying again in 60 s",
                    self.db.display()
                )));
            }
        }
    }

    /// Whether the commits handed over are due to be sealed as a segment:
    /// the first has waited the lag (less the poll about to pass), or they
    /// hold a quarter of [`WatchOptions::max_memory`]; with none, whether
    /// a heartbeat is due.
    fn segment_due(&self, chain: &Following<'_>) -> bool {
        let waited = chain
            .pending_since
            .map(|t| Timestamp::now().duration_since(t).unsigned_abs());
        match waited {
            Some(w) => {
                w + self.opts.poll >= self.opts.lag
                    || chain.pending_bytes >= self.opts.max_memory / 4
            }
            None => chain.last_sent.elapsed() >= self.opts.heartbeat,
        }
    }

    /// The last reads of a stopping watcher: the rest of the log, as much
    /// at a time as memory allows, so that the chain's end claims no moment
    /// whose commits it has not read; then the log is let go. Where the
    /// chain ends: now, or the last commit read when the storing cannot
    /// keep up with the application (its log past `max_wal`) or the
    /// follower lost its proof of continuity.
    fn read_rest(&self, follower: &mut Follower, chain: &mut Following<'_>) -> i64 {
        loop {
            let t0 = nanos(Timestamp::now());
            let room = self.room();
            if room > 0 {
                follower.set_read_limit(room);
                if chain.take(follower.poll_rest(), self).is_some() {
                    break chain.last_read();
                }
                if follower.caught_up() {
                    break t0;
                }
            }
            if self.too_far_behind(follower).is_some() || chain.storer.is_finished() {
                break chain.last_read();
            }
            // Sealed, so the storing thread can free what it holds.
            self.seal_pending(chain);
            std::thread::sleep(self.opts.poll);
        }
    }

    /// Seals the commits handed over, if any, as far as they go (a segment
    /// claims no moment past what was read), so that the storing thread
    /// can store them and free their pages.
    fn seal_pending(&self, chain: &mut Following<'_>) {
        if chain.pending > 0 {
            let from = chain.from;
            self.hand_over(chain, from, None);
        }
    }

    /// Seals the segment the pending commits (already handed to the
    /// storing thread) fill, covering up to `until` or the latest of them.
    fn hand_over(&self, chain: &mut Following<'_>, until: i64, end: Option<String>) {
        let until = chain
            .pending_last
            .map_or(until, |last| last.max(until))
            .max(chain.from);
        chain.next_txn += chain.pending;
        chain.sent_bytes += chain.pending_bytes;
        chain.pending = 0;
        chain.pending_bytes = 0;
        chain.pending_since = None;
        chain.pending_last = None;
        chain.from = until;
        chain.last_sent = Instant::now();
        send(&chain.tx, Handed::Seal { until, end }, 0, &self.held);
    }

    /// Hands over the rest with `end` and waits until the chain is stored.
    fn end_chain(&self, chain: Following<'_>, until: i64, end: String) {
        self.join_storer(self.retire(chain, until, end));
    }

    /// Hands over the rest with `end`; the chain's storing thread, which
    /// ends once it has stored it.
    fn retire<'scope>(
        &self,
        mut chain: Following<'scope>,
        until: i64,
        end: String,
    ) -> std::thread::ScopedJoinHandle<'scope, ()> {
        self.hand_over(&mut chain, until, Some(end));
        drop(chain.tx);
        chain.storer
    }

    /// Joins those of `storers` that have ended; the others.
    fn join_finished<'scope>(
        &self,
        storers: Vec<std::thread::ScopedJoinHandle<'scope, ()>>,
    ) -> Vec<std::thread::ScopedJoinHandle<'scope, ()>> {
        let (ended, busy): (Vec<_>, Vec<_>) = storers.into_iter().partition(|s| s.is_finished());
        ended.into_iter().for_each(|s| self.join_storer(s));
        busy
    }

    fn join_storer(&self, storer: std::thread::ScopedJoinHandle<'_, ()>) {
        if storer.join().is_err() {
            (self.notify)(WatchNote::Problem(format!(
                "the thread storing {} stopped unexpectedly",
                self.db.display()
            )));
        }
    }

    /// The number the next chain's base gets: one past the last
    /// transaction stored for this database by this host.
    ///
    /// Numbers grow with time, so the newest segments hold the last: those
    /// of the last few hours are read first, and all only when none of
    /// them is of this database.
    fn next_txn(&self) -> Result<u64> {
        let db = self.db.as_os_str().as_bytes();
        let next = |segments: &Segments| {
            segments
                .iter()
                .filter(|(_, s)| s.host == self.host && s.db == db)
                .map(|(_, s)| s.last_txn() + 1)
                .max()
        };
        let now = nanos(Timestamp::now());
        for since in window_starts(now) {
            let (segments, _) = read_segments_since(self.repo, since)?;
            if let Some(n) = next(&segments) {
                return Ok(n);
            }
        }
        let (segments, _) = read_segments(self.repo)?;
        Ok(next(&segments).unwrap_or(0))
    }

    /// Starts chains until one starts or `stop` is set, waiting longer
    /// after each failure.
    fn restart_chain<'scope>(
        &'scope self,
        scope: &'scope std::thread::Scope<'scope, '_>,
        stop: &'scope AtomicBool,
        next_txn: u64,
    ) -> Option<(Follower, Following<'scope>)> {
        let mut wait = Duration::from_millis(100);
        loop {
            match self.start_chain(scope, stop, next_txn, None) {
                Ok(started) => return Some(started),
                Err(e) => (self.notify)(WatchNote::Problem(format!(
                    "starting again on {}: {e}; trying again in {} s",
                    self.db.display(),
                    wait.as_secs_f32()
                ))),
            }
            let until = Instant::now() + wait;
            while Instant::now() < until {
                if stop.load(Ordering::Relaxed) {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            wait = (wait * 2).min(Duration::from_secs(30));
        }
    }

    /// Takes a new base, writes the chain's first segment and starts its
    /// storing thread. With `old` (a scheduled new base), the old chain is
    /// read up to the new base before the base is stored, so the chains
    /// overlap; the caller then ends it.
    fn start_chain<'scope>(
        &'scope self,
        scope: &'scope std::thread::Scope<'scope, '_>,
        stop: &'scope AtomicBool,
        mut base_txn: u64,
        old: Option<(&mut Follower, &mut Following<'scope>)>,
    ) -> Result<(Follower, Following<'scope>)> {
        let known = old.as_ref().and_then(|(f, _)| f.position());
        let (mut follower, base) = Follower::start_after(&self.db, self.opts.restart_bytes, known)?;
        if let Some((old_follower, old_chain)) = old {
            base_txn = self.read_old_chain_to(old_follower, old_chain, &base)?;
        }
        let base_time = base.time;
        let page_size = base.page_size;
        let base_len = base.len();
        let opts = self.base_options(base);
        let StoredBase {
            done,
            mut first,
            behind,
        } = self.store_base(&mut follower, &opts)?;
        self.check_base(&done)?;
        (self.notify)(WatchNote::Base {
            id: done.id,
            time: base_time,
            bytes_added: done.snapshot.summary.bytes_stored,
        });
        let state = ChainState::first(done.id, nanos(base_time), base_txn, page_size);
        // Segment 0 makes the chain visible at once, with whatever was
        // committed while the base was stored and since. It is the storing
        // thread's first batch, not stored here: while this thread stores
        // it does not poll, so the pin stands still and the application's
        // checkpoints copy nothing, for as long as storing a second of log
        // at full speed takes; its next checkpoint then syncs all the log
        // written meanwhile inside one of its commits.
        let t0 = nanos(Timestamp::now());
        let read_to_end = behind.is_none() && self.read_since_base(&mut follower, &mut first)?;
        let from = state.from;
        let mut chain = self.follow(scope, stop, state, base_len, behind)?;
        chain.hand(first, &self.held);
        if chain.behind.is_none() {
            // A read cut short claims no moment past its commits.
            self.hand_over(&mut chain, if read_to_end { t0 } else { from }, None);
        }
        Ok((follower, chain))
    }

    /// Reads the old chain's log up to the new `base` and ends the old
    /// chain's time there; the number the new base gets, one past every
    /// transaction the old chain will hold.
    ///
    /// The new pin holds the log now: everything committed before the new
    /// base is still in it for the old follower to read, and the old chain
    /// ends exactly where the new one begins. A loss here is the new
    /// chain's to report: the old one ends at the new base either way.
    fn read_old_chain_to(
        &self,
        old_follower: &mut Follower,
        old_chain: &mut Following<'_>,
        base: &Base,
    ) -> Result<u64> {
        // (Whole: a base is due only while the old follower keeps up.)
        old_follower.set_read_limit(u64::MAX);
        let polled = old_follower.poll_final(Some(base))?;
        let _ = old_chain.take(Ok(polled), self);
        old_chain.from = old_chain.from.max(nanos(base.time));
        (self.notify)(WatchNote::ChainEnd("a new base is due".into()));
        Ok(old_chain.next_number())
    }

    /// The backup that stores `base` as a snapshot tagged `watch` of this
    /// database, dated when the base was taken.
    fn base_options(&self, base: Base) -> BackupOptions {
        BackupOptions {
            paths: vec![self.db.clone()],
            special_paths: vec![self.db.clone()],
            tags: vec![BASE_TAG.to_owned()],
            time: Some(base.time),
            force: true,
            host: Some(self.host.clone()),
            special: Some(Arc::new(SqliteFiles::prepared(
                self.db.clone(),
                base.into_image(),
            ))),
            ..BackupOptions::default()
        }
    }

    /// Stores a base with `opts` in a scoped thread while this one keeps
    /// polling `follower`; when the follower lost its proof of continuity
    /// meanwhile, that loss is the error and what it read is released.
    ///
    /// The follower keeps polling while the base is stored, so the commits
    /// made meanwhile are dated when they were read, a poll after they
    /// were made, not when the storing ended; and its pin keeps moving on,
    /// so the application's checkpoints go on copying the log a little at
    /// a time. They go into segment 0, and count as held in memory: past
    /// `max_memory` the follower reads no further, and past `max_wal` it
    /// lets the log go and the chain ends with them.
    fn store_base(&self, follower: &mut Follower, opts: &BackupOptions) -> Result<StoredBase> {
        let mut first = Vec::new();
        let mut lost = None;
        let mut behind = None;
        let done = std::thread::scope(|s| {
            let storing = std::thread::Builder::new()
                .name("cairn-base".into())
                .spawn_scoped(s, || {
                    background();
                    crate::ops::backup::backup(self.repo, opts, &NoProgress)
                })
                .map_err(thread_error)?;
            while !storing.is_finished() {
                if lost.is_none() && behind.is_none() {
                    let room = self.room();
                    if room > 0 {
                        lost = self.poll_into(follower, room, &mut first).err();
                    }
                    if room == 0 || !follower.caught_up() {
                        behind = self.too_far_behind(follower);
                        if behind.is_some() {
                            follower.let_go();
                        }
                    }
                }
                std::thread::sleep(self.opts.poll);
            }
            storing
                .join()
                .unwrap_or_else(|_| Err(Error::internal("storing the base panicked")))
        })?;
        if let Some(e) = lost {
            self.held.fetch_sub(page_bytes(&first), Ordering::Relaxed);
            return Err(e);
        }
        Ok(StoredBase {
            done,
            first,
            behind,
        })
    }

    /// Fails unless `done`, a base's backup, stored this database as a
    /// database image (the capture may have fallen back to a plain file).
    fn check_base(&self, done: &BackupOutcome) -> Result<()> {
        if done
            .snapshot
            .databases
            .iter()
            .any(|d| d.path == self.db.as_os_str().as_bytes())
        {
            return Ok(());
        }
        Err(Error::Capture(format!(
            "the base of {} was not stored as a database image: {}",
            self.db.display(),
            done.warnings.join("; ")
        )))
    }

    /// Reads what was committed since the base was stored, as far as
    /// memory allows, onto `first`; whether that read reached the end of
    /// the log. On a loss the chain does not start: `first` is released
    /// and the loss is the error.
    fn read_since_base(&self, follower: &mut Follower, first: &mut Vec<Commit>) -> Result<bool> {
        let room = self.room();
        if room == 0 {
            return Ok(false);
        }
        if let Err(e) = self.poll_into(follower, room, first) {
            self.held.fetch_sub(page_bytes(first), Ordering::Relaxed);
            return Err(e);
        }
        Ok(follower.caught_up())
    }

    /// Polls `follower` for at most `room` bytes of pages and adds the
    /// commits found to `into`, counted as held, even when the follower
    /// then lost its proof of continuity; that loss, or the poll's
    /// failure, is the error.
    fn poll_into(&self, follower: &mut Follower, room: u64, into: &mut Vec<Commit>) -> Result<()> {
        follower.set_read_limit(room);
        let mut got = Vec::new();
        let polled = collect(follower.poll(), &mut got);
        self.hold(page_bytes(&got));
        into.append(&mut got);
        polled
    }

    /// Starts the storing thread of a chain at `state` and returns the
    /// polling thread's side of it, nothing pending yet; `behind` is why
    /// the log was let go while its base was stored, if it was.
    fn follow<'scope>(
        &'scope self,
        scope: &'scope std::thread::Scope<'scope, '_>,
        stop: &'scope AtomicBool,
        state: ChainState,
        base_len: u64,
        behind: Option<String>,
    ) -> Result<Following<'scope>> {
        let from = state.from;
        let next_txn = state.next_txn;
        let (tx, rx) = std::sync::mpsc::channel::<Handed>();
        let storer = std::thread::Builder::new()
            .name("cairn-store".into())
            .spawn_scoped(scope, move || self.store_all(state, &rx, stop))
            .map_err(thread_error)?;
        Ok(Following {
            pending: 0,
            pending_since: None,
            pending_last: None,
            pending_bytes: 0,
            from,
            next_txn,
            started: Instant::now(),
            last_sent: Instant::now(),
            sent_bytes: 0,
            base_len,
            behind,
            tx,
            storer,
        })
    }

    /// The storing thread of a chain: writes each batch as a segment, in
    /// order, trying a failed one again (after a pause growing to 30 s)
    /// until it is stored, or until `stop` is set, when what is left is
    /// reported lost.
    fn store_all(
        &self,
        mut state: ChainState,
        rx: &std::sync::mpsc::Receiver<Handed>,
        stop: &AtomicBool,
    ) {
        background();
        let mut filling = Filling::default();
        while let Ok(handed) = rx.recv() {
            let (until, end) = match handed {
                Handed::Commits(commits) => {
                    filling.add(commits);
                    continue;
                }
                Handed::Seal { until, end } => (until, end),
            };
            let mut wait = Duration::from_secs(1);
            let bytes = filling.data.len() as u64;
            loop {
                match self.store(&mut state, &filling, until, end.as_ref()) {
                    Ok(()) => break,
                    Err(e) if stop.load(Ordering::Relaxed) => {
                        (self.notify)(WatchNote::Problem(format!(
                            "stopping with {} transactions of {} not stored: {e}",
                            filling.commits.len(),
                            self.db.display()
                        )));
                        let mut left = bytes;
                        while let Ok(h) = rx.try_recv() {
                            if let Handed::Commits(c) = h {
                                left += page_bytes(&c);
                            }
                        }
                        self.held.fetch_sub(left, Ordering::Relaxed);
                        return;
                    }
                    Err(e) => {
                        (self.notify)(WatchNote::Problem(format!(
                            "storing {} transactions of {}: {e}; kept in memory, trying again in {} s",
                            filling.commits.len(),
                            self.db.display(),
                            wait.as_secs()
                        )));
                        let until = Instant::now() + wait;
                        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        wait = (wait * 2).min(Duration::from_secs(30));
                    }
                }
            }
            self.held.fetch_sub(bytes, Ordering::Relaxed);
            filling.clear(usize::try_from(self.opts.max_memory / 4).unwrap_or(usize::MAX));
        }
    }

    /// Stores the `filling` segment, covering up to `until` and ending
    /// the chain with `end`, as the chain's next: packs, index, then the
    /// segment file, under a shared lock.
    fn store(
        &self,
        chain: &mut ChainState,
        filling: &Filling,
        until: i64,
        end: Option<&String>,
    ) -> Result<()> {
        let repo = self.repo;
        let mut txns = Vec::with_capacity(filling.commits.len());
        let mut time = chain.from;
        for c in &filling.commits {
            if c.page_size != chain.page_size {
                return Err(Error::Busy(format!(
                    "{} changed its page size from {} to {}",
                    self.db.display(),
                    chain.page_size,
                    c.page_size
                )));
            }
            // Commit times never go back, even if the clock does.
            time = time.max(nanos(c.time));
            txns.push(SegmentTxn {
                time,
                db_pages: c.db_pages,
                pages: c.pages.clone(),
            });
        }
        let data = &filling.data;
        let waited = filling
            .commits
            .first()
            .map(|c| Timestamp::now().duration_since(c.time).unsigned_abs())
            .unwrap_or_default();
        let held = repo.lock_to_add(crate::repo::lock::BRIEF_OPERATION)?;
        let writer = repo.blob_writer();
        let stored = (|| -> Result<Vec<BlobId>> {
            // Cut in place: the streaming chunker would copy every byte
            // twice more, at the log's full rate.
            let mut ids = Vec::new();
            for range in repo.config().chunker.cut_points(data, repo.chunker_seed()) {
                let chunk = data
                    .get(range)
                    .ok_or_else(|| Error::internal("the chunker cut outside the pages"))?;
                ids.push(writer.save(BlobKind::Data, chunk)?.0);
            }
            writer.finish()?;
            Ok(ids)
        })();
        let ids = match stored {
            Ok(ids) => ids,
            Err(e) => {
                writer.abandon();
                return Err(e);
            }
        };
        let seg = Segment {
            host: self.host.clone(),
            db: self.db.as_os_str().as_bytes().to_vec(),
            base: chain.base,
            base_time: chain.base_time,
            base_txn: chain.base_txn,
            seq: chain.seq,
            prev: chain.prev,
            from: chain.from,
            until: until.max(time).max(chain.from),
            page_size: chain.page_size,
            first_txn: chain.next_txn,
            txns,
            data: ids,
            end: end.cloned(),
        };
        let (id, bytes) = segment::encode_file(repo.crypto(), &seg)?;
        repo.backend().write(FileKind::Wal, &id.to_hex(), &bytes)?;
        drop(held);
        chain.seq += 1;
        chain.prev = Some(id);
        chain.from = seg.until;
        chain.next_txn += seg.txns.len() as u64;
        (self.notify)(WatchNote::Segment {
            id,
            txns: seg.txns.len(),
            pages: seg.pages(),
            lag: waited,
            peak_memory: self.peak.load(Ordering::Relaxed),
        });
        Ok(())
    }
}
