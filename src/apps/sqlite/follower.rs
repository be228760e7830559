//! Following a live WAL-mode SQLite database commit by commit, for
//! point-in-time recovery (`cairn watch`, issue 10).
//!
//! This module owns the capture side: which SQLite locks the watcher takes
//! and when, how it reads committed transactions out of the `-wal` file
//! before SQLite checkpoints them away, and how it knows that it missed
//! none. Storing what it captures is the caller's business.
//!
//! # Method
//!
//! SQLite appends committed transactions to the `-wal` file; a checkpoint
//! copies them into the database file, and once every frame is copied the
//! next writer *restarts* the log from its start, overwriting it. The
//! watcher must read every transaction before that. It does what
//! Litestream does, without writing to the application's database:
//!
//! - **The pin.** The watcher keeps a read transaction open on a connection
//!   of its own. While a reader uses the log, SQLite cannot restart it: the
//!   log only grows, and checkpoints (the application's automatic ones
//!   included) copy frames into the database file only up to the pinned
//!   snapshot. Readers and writers are not held back: a WAL reader blocks
//!   neither.
//! - **Reading.** Every poll (a few milliseconds apart) the watcher reads
//!   the log from where it stopped and keeps the transactions that end in a
//!   commit frame whose salts and checksum chain validate ([`crate::apps::sqlite::wal`]).
//!   A commit's time is the moment of the stat before the read that found
//!   it: never before the commit, at most a poll interval after it while
//!   the watcher keeps to its polls. (The `-wal` file's modification time
//!   would be tighter, but measured here it can lag the write that should
//!   have set it by hundreds of milliseconds, which would date a commit
//!   before it happened.)
//! - **A pin that holds.** A read transaction holds the log only if the
//!   log had frames not yet in the database file when it began; otherwise
//!   SQLite reads the file alone and the next writer may restart the log.
//!   So the watcher takes the pin with the write lock held (nobody adds
//!   frames meanwhile) and checks in the wal-index (`DB-shm`) that frames
//!   remain to be copied. When none do, it makes one: a commit that
//!   changes nothing (`user_version` set to itself within the write
//!   transaction that read it), which restarts the log as the
//!   application's next commit would have, and pins at once.
//! - **Restarting the log.** Past a size limit the watcher restarts the
//!   log itself: it moves the pin to the newest snapshot and checkpoints
//!   up to it (PASSIVE: no locks held against anyone), again while more
//!   than a few hundred frames came meanwhile (at most four passes); then,
//!   it reads what came meanwhile, in passes, outside any lock; under the
//!   write lock it reads the rest of the log, drops the pin and copies the
//!   few frames since, so that the log is wholly in the database file;
//!   then it pins again as above (its own no-op commit restarts the log,
//!   unless an application commit came first and did). While it waits for
//!   the write lock it keeps reading the log and pins as soon as the log
//!   changes, so a busy application cannot outrun it. The log is read a
//!   few megabytes at a time, up to the first frame of another
//!   generation: SQLite does not shrink the file when the log restarts.
//! - **Knowing nothing was missed.** A writer that restarts the log adds
//!   one to the first salt of the shared header (SQLite's checkpoint
//!   sequence number is each connection's own and counts nothing). When
//!   the header changes, the watcher first reads what the old log still
//!   holds past its position; then a first salt other than the old one
//!   plus one (two restarts, or one by a TRUNCATE checkpoint), or a new log
//!   that has already overwritten the place where the old one would have
//!   continued (unless the restart was the watcher's own), means
//!   transactions may have been lost: the follower reports
//!   [`Event::Lost`] and the caller takes a new base. The same holds when
//!   the database file is replaced or its page size changes. The only
//!   moments without a pin are the microseconds between the watcher's own
//!   commit and its pin, and the wait for the write lock after its restart
//!   (during which it reads the log between attempts).
//!
//! - **Memory.** A poll reads at most [`Follower::set_read_limit`] bytes of
//!   the log (at least one transaction), so the caller can bound the pages
//!   it holds; the rest waits in the log under the pin, and the watcher's
//!   own restart of the log waits until it has read it all.
//!   [`Follower::log_len`] tells how long the pin lets the log grow; a
//!   caller that cannot keep up lets the pin go and reports a gap (see
//!   [`crate::apps::sqlite::watcher`]).
//!
//! A base (a whole image of the database at a known point of the log) is
//! taken at [`Follower::start`]: the watcher reads the log (in passes while
//! the application appends), then under the write lock it reads the rest
//! to the end and opens the pin, whose snapshot is then exactly that
//! point; the image is copied from the pin's snapshot after the write lock
//! is released, so writers wait only for the read of the log.
//!
//! Applications that run `wal_checkpoint(RESTART)` or `(TRUNCATE)`
//! themselves get SQLite's documented "busy" result while the pin is held
//! (their checkpoint still copies what it can); automatic checkpoints are
//! unaffected.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::{Connection, OpenFlags};

use crate::apps::sqlite::Image;
use crate::apps::sqlite::wal::{self, Cursor, WalHeader};
use crate::error::{Error, Result};

/// How long the watcher waits for the write lock before trying again at a
/// later poll; the application is never kept waiting by this wait (a
/// connection waiting for a lock holds none).
pub const LOCK_WAIT: Duration = Duration::from_millis(200);

/// How far (in frames) the log may grow past the pin before the pin
/// moves forward: a quarter of SQLite's automatic checkpoint threshold.
const ROLL_FRAMES: u64 = 250;

/// The most passes of copying the log into the database before the write
/// lock is taken to copy the rest (see `restart_log`), and of reading it
/// before a base is pinned (see `start`).
const COPY_PASSES: usize = 4;

/// The least time between two restarts of the log by the watcher.
const MIN_RESTART_INTERVAL: Duration = Duration::from_secs(1);

/// The pause between two attempts at a lock.
const LOCK_RETRY: Duration = Duration::from_micros(100);

/// Default size of the log at which the watcher restarts it: SQLite's own
/// automatic checkpoint threshold (1,000 pages) for 4 KiB pages.
pub const DEFAULT_RESTART_BYTES: u64 = 4 << 20;

/// One committed transaction, as read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// A moment no earlier than the commit: when the watcher found the
    /// log holding it (the stat before the read).
    pub time: Timestamp,
    /// The page size of the database.
    pub page_size: u32,
    /// The database's size in pages after it.
    pub db_pages: u32,
    /// The numbers (from 1) of the pages it wrote, in log order.
    pub pages: Vec<u32>,
    /// Their images, `page_size` bytes each, in the same order: one
    /// buffer, not one per page, at the log's full rate.
    pub data: Vec<u8>,
}

impl Commit {
    /// Each page it wrote: number and image, in log order.
    #[cfg(any(test, feature = "internals"))]
    pub fn images(&self) -> impl Iterator<Item = (u32, &[u8])> {
        let size = usize::try_from(self.page_size).unwrap_or(usize::MAX).max(1);
        self.pages.iter().copied().zip(self.data.chunks_exact(size))
    }
}

/// What a poll found.
#[derive(Debug)]
pub enum Event {
    /// A committed transaction, in commit order.
    Commit(Commit),
    /// The follower cannot prove it saw every transaction since the last
    /// one it reported: the caller must start again from a new base.
    Lost(String),
}

/// The point of the log a base image stands for.
pub struct Base {
    /// The image: the database as of the transactions read so far.
    image: Image,
    /// When it was taken (the moment the write lock was held).
    pub time: Timestamp,
    /// The database's page size.
    pub page_size: u32,
    /// The end of the log's committed frames when it was taken, if the log
    /// held any.
    at: Option<Cursor>,
}

impl Base {
    /// The image file, at its start.
    #[must_use]
    #[cfg(any(test, feature = "internals"))]
    pub fn file(&self) -> &File {
        &self.image.file
    }

    /// The image's length in bytes.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.image.len
    }

    /// The image itself, for storing.
    pub(crate) fn into_image(self) -> Image {
        self.image
    }

    /// Whether the image is empty (never, for a database).
    #[must_use]
    #[cfg(any(test, feature = "internals"))]
    pub fn is_empty(&self) -> bool {
        self.image.len == 0
    }
}

impl std::fmt::Debug for Base {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Base")
            .field("time", &self.time)
            .field("page_size", &self.page_size)
            .field("len", &self.image.len)
            .finish_non_exhaustive()
    }
}

/// Follows one database; see the module doc.
pub struct Follower {
    db: PathBuf,
    wal: PathBuf,
    /// Holds the pin: a read transaction, open while `pinned`.
    pin: Connection,
    /// The next pin, begun before the current one ends so that moving
    /// the pin forward leaves no moment without one.
    spare: Connection,
    pinned: bool,
    /// Where the log stood when the pin was taken.
    pinned_at: Option<Cursor>,
    /// Takes the write lock for a restart of the log.
    writer: Connection,
    /// Runs checkpoints.
    checkpointer: Connection,
    /// Where the follower is in the log; `None` while the log is empty.
    cursor: Option<Cursor>,
    page_size: u32,
    /// Device and inode of the database file followed.
    identity: (u64, u64),
    restart_bytes: u64,
    /// Where the log stood when the watcher restarted it itself, so that
    /// the restart is known to have lost nothing.
    own_restart: Option<Cursor>,
    last_restart: Option<std::time::Instant>,
    /// The buffer the log is read through.
    buf: Vec<u8>,
    /// How many bytes of log a poll reads at most (one transaction at
    /// least): the watcher's room for pages in memory.
    read_limit: u64,
    /// Whether the last read stopped at `read_limit`, short of the log's
    /// end.
    cut_short: bool,
    /// The wal-index, open for as long as the connections (declared
    /// last, so dropped after them; see `unbackfilled`).
    shm: Option<Arc<File>>,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("db", &self.db)
            .field("pinned", &self.pinned)
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

/// SQLite's error about the followed database `db`, while `what`.
fn sql_error(db: &Path, what: &str, e: rusqlite::Error) -> Error {
    Error::sqlite(format!("{}: {what}", db.display()), db, e)
}

/// A file of the followed database that cannot be read. (Not
/// [`Error::source_read`], whose advice is a backup's: `--exclude`.)
fn read_error(path: &Path, e: std::io::Error) -> Error {
    Error::WatchRead {
        path: path.to_path_buf(),
        source: e,
    }
}

/// `db` with `suffix` appended: its `-wal` or `-shm` file.
fn companion(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn wal_path(db: &Path) -> PathBuf {
    companion(db, "-wal")
}

fn shm_path(db: &Path) -> PathBuf {
    companion(db, "-shm")
}

/// The wal-index files this process has open, by device and inode.
static SHM_FILES: Mutex<BTreeMap<(u64, u64), Weak<File>>> = Mutex::new(BTreeMap::new());

/// The wal-index file at `path`, opened once per process and shared by
/// every follower of it. Closing any descriptor of a file drops every
/// POSIX lock the process holds on it, and SQLite's read locks (the pin's)
/// are POSIX locks on this file: a follower that opened its own and was
/// dropped (the old chain's, after a new base) silently unpinned the new
/// follower's log, which the application then restarted under it. Shared,
/// the file is closed only with the last follower, after its connections.
fn open_shared(path: &Path) -> Result<Arc<File>> {
    let (dev, ino) = identity(path)?;
    let mut files = SHM_FILES.lock().unwrap_or_else(PoisonError::into_inner);
    files.retain(|_, f| f.strong_count() > 0);
    if let Some(file) = files.get(&(dev, ino)).and_then(Weak::upgrade) {
        return Ok(file);
    }
    let file = Arc::new(File::open(path).map_err(|e| read_error(path, e))?);
    let opened = file
        .metadata()
        .map(|m| (m.dev(), m.ino()))
        .map_err(|e| read_error(path, e))?;
    files.insert(opened, Arc::downgrade(&file));
    Ok(file)
}

fn identity(db: &Path) -> Result<(u64, u64)> {
    let meta = std::fs::metadata(db).map_err(|e| read_error(db, e))?;
    Ok((meta.dev(), meta.ino()))
}

fn connect(db: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(db, flags).map_err(|e| sql_error(db, "opening", e))?;
    // Retries often and briefly: the write lock is wanted in the gap
    // between two of the application's commits.
    conn.busy_handler(Some(|attempt: i32| {
        std::thread::sleep(LOCK_RETRY);
        u128::try_from(attempt).unwrap_or(0) * LOCK_RETRY.as_micros() < LOCK_WAIT.as_micros()
    }))
    .map_err(|e| sql_error(db, "opening", e))?;
    // The watcher's connections never write, but a connection that
    // checkpoints on its own would restart the log behind the pin's back.
    // Its only commits change nothing: no need to wait for the disk.
    conn.execute_batch("PRAGMA wal_autocheckpoint = 0; PRAGMA synchronous = NORMAL")
        .map_err(|e| sql_error(db, "opening", e))?;
    Ok(conn)
}

/// Reads `len` bytes at `offset`, fewer at the end of the file.
fn read_at(file: &File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let got = read_into(file, offset, len, &mut buf)?;
    buf.truncate(got);
    Ok(buf)
}

/// Reads `len` bytes at `offset` into the start of `buf` (grown to hold
/// them, never shrunk: the log is read through one buffer, not a fresh
/// zeroed one each poll); how many it read, fewer at the end of the file.
fn read_into(file: &File, offset: u64, len: usize, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    if buf.len() < len {
        buf.resize(len, 0);
    }
    let mut got = 0;
    while got < len {
        let Some(rest) = buf.get_mut(got..len) else {
            break;
        };
        let n = file.read_at(rest, offset + got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(got)
}

/// How far [`Follower::read_upto`] reads: the end of a log's committed
/// frames (none: the log was empty), and a time its commits were made by.
type Limit = (Option<Cursor>, Timestamp);

/// How much of the log is read at once. SQLite does not shrink the log when
/// it restarts it: past the current generation's frames the file still
/// holds older generations' (whose salts end a scan), up to the largest the
/// log ever grew. Read to the file's end at every poll, that tail cost tens
/// of megabytes a poll after a restart at full speed, and the reads under
/// the write lock held the application for most of a second.
const READ_PIECE: u64 = 4 << 20;

/// Reads the log `file` (at `path`, `len` bytes long) from `cursor` on, a
/// piece at a time, until the first frame that is not of the cursor's
/// generation or the end; calls `each` with every complete transaction and
/// the bytes its page ranges index. Past `limit` bytes of log it reads no
/// further piece once it has read a transaction (a longer one is read
/// whole); whether it stopped there, short of the end.
fn read_log(
    file: &File,
    path: &Path,
    cursor: &mut Cursor,
    len: u64,
    limit: u64,
    buf: &mut Vec<u8>,
    mut each: impl FnMut(&[u8], wal::Transaction),
) -> Result<bool> {
    let frame_len = cursor.header().frame_len() as u64;
    // Within the limit from the first piece on: a piece that holds no
    // whole transaction is doubled until one does.
    let mut piece = (READ_PIECE.min(limit) / frame_len).max(1) * frame_len;
    let start = cursor.offset();
    let stop = start.saturating_add(limit);
    loop {
        let from = cursor.offset();
        let left = len.saturating_sub(from);
        if left == 0 {
            return Ok(false);
        }
        // Past the limit only while no transaction was read yet.
        let capped = from > start;
        if capped && from >= stop {
            return Ok(true);
        }
        let mut n = left.min(piece);
        if capped {
            n = n.min((stop - from).div_ceil(frame_len) * frame_len);
        }
        let got = read_into(file, from, usize::try_from(n).unwrap_or(usize::MAX), buf)
            .map_err(|e| read_error(path, e))?;
        let body = buf.get(..got).unwrap_or_default();
        let before = cursor.frames();
        let (txns, more) = cursor.read_more(body);
        for txn in txns {
            each(body, txn);
        }
        if !more || n == left {
            return Ok(false);
        }
        if cursor.frames() == before {
            if capped {
                // The rest of a transaction lies past the limit: the next
                // read takes it whole.
                return Ok(true);
            }
            // A transaction longer than the piece: read it whole.
            piece = piece.saturating_mul(2);
        }
    }
}

impl Follower {
    /// Starts following the WAL-mode database at `db`: takes the pin and a
    /// base image (see the module doc). `restart_bytes` is the log size at
    /// which the watcher restarts the log.
    ///
    /// # Errors
    /// When the database cannot be opened, is not in WAL mode, or the
    /// image cannot be written.
    #[cfg(any(test, feature = "internals"))]
    pub fn start(db: &Path, restart_bytes: u64) -> Result<(Self, Base)> {
        Self::start_after(db, restart_bytes, None)
    }

    /// [`Follower::start`] beside a follower of the same database that has
    /// read the log up to `known` ([`Follower::position`]): the new one
    /// reads on from there instead of from the log's start. At a new base
    /// the old follower's pin still holds the log, which may have grown
    /// long; read whole at every base, it cost a base more the longer it
    /// grew, and under a fast writer a base came due again before the read
    /// ended, the log never restarted and grew without end.
    pub(crate) fn start_after(
        db: &Path,
        restart_bytes: u64,
        known: Option<Cursor>,
    ) -> Result<(Self, Base)> {
        let pin = connect(db)?;
        let mode: String = pin
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(|e| sql_error(db, "reading the journal mode", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::invalid(format!(
                "{} is in journal mode {mode}, not WAL: cairn watch follows WAL databases (the application sets PRAGMA journal_mode=WAL once; snapshots with cairn backup work in any mode)",
                db.display()
            )));
        }
        let writer = connect(db)?;
        // The write lock is waited for in `lock_writes`, which reads the
        // log between attempts.
        writer
            .busy_handler(None)
            .map_err(|e| sql_error(db, "opening", e))?;
        // Its only commit changes nothing and comes right after the log was
        // wholly copied into the database file and synced (by a checkpoint
        // or at the last restart): lost in a power failure, the database
        // is the same. Under NORMAL, the commit that restarts the log syncs
        // the log's header, and while a busy application's writes wait to
        // reach the disk that sync took hundreds of milliseconds, all of
        // them under the write lock.
        writer
            .execute_batch("PRAGMA synchronous = OFF")
            .map_err(|e| sql_error(db, "opening", e))?;
        let mut follower = Self {
            db: db.to_owned(),
            wal: wal_path(db),
            writer,
            checkpointer: connect(db)?,
            pin,
            spare: connect(db)?,
            pinned: false,
            pinned_at: None,
            cursor: None,
            page_size: 0,
            identity: identity(db)?,
            restart_bytes,
            own_restart: None,
            last_restart: None,
            buf: Vec::new(),
            read_limit: u64::MAX,
            cut_short: false,
            shm: None,
        };
        let page_size: u32 = follower
            .pin
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(|e| sql_error(db, "reading the page size", e))?;
        follower.page_size = page_size;
        // Under the write lock nobody commits: the log read to its end and
        // the pin's snapshot are the same point, the base's. The log is read
        // before, whole and then in passes, so that under the lock only
        // what was appended since is (a log of hundreds of MB would
        // otherwise hold the application for seconds).
        // With no cursor, or one of another generation or file,
        // `catch_up` reads the log whole.
        follower.cursor = known;
        follower.catch_up()?;
        follower.read_in_passes(Self::catch_up)?;
        if !follower.lock_writes(None)? {
            return Err(Error::Busy(format!(
                "{}: the application held the write lock for {} ms; try again",
                db.display(),
                LOCK_WAIT.as_millis()
            )));
        }
        let mut scratch = Vec::new();
        let pinned = follower
            .catch_up()
            .and_then(|()| follower.pin_under_lock(&mut scratch));
        let time = Timestamp::now();
        follower.release_writes();
        pinned?;
        if !follower.pinned {
            return Err(Error::Busy(format!(
                "{}: the application kept the write lock; try again",
                db.display()
            )));
        }
        let at = follower.cursor;
        let image = crate::apps::sqlite::image_of(&follower.pin, true, Some(page_size))
            .map_err(|e| Error::Capture(format!("{}: copying the base: {e}", db.display())))?;
        Ok((
            follower,
            Base {
                image,
                time,
                page_size,
                at,
            },
        ))
    }

    /// The database followed.
    #[must_use]
    #[cfg(any(test, feature = "internals"))]
    pub fn db(&self) -> &Path {
        &self.db
    }

    /// Takes the write lock, trying for up to [`LOCK_WAIT`]; `false` when
    /// the application held it throughout. With `events`, the log is read
    /// between attempts, and pinned as soon as it changes while unpinned:
    /// an application that commits again and again must not outrun the
    /// watcher while it waits.
    fn lock_writes(&mut self, mut events: Option<&mut Vec<Event>>) -> Result<bool> {
        let started = std::time::Instant::now();
        let before = self.cursor;
        loop {
            match self.writer.execute_batch("BEGIN IMMEDIATE") {
                Ok(()) => return Ok(true),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy
                        && started.elapsed() < LOCK_WAIT => {}
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy =>
                {
                    return Ok(false);
                }
                Err(e) => return Err(sql_error(&self.db, "taking the write lock", e)),
            }
            if let Some(events) = events.as_deref_mut() {
                self.read_budgeted(events)?;
                if !self.pinned && self.cursor != before {
                    self.take_pin()?;
                }
            }
            std::thread::sleep(LOCK_RETRY);
        }
    }

    fn release_writes(&self) {
        if !self.writer.is_autocommit() {
            let _ = self.writer.execute_batch("ROLLBACK");
        }
    }

    /// Whether the log holds frames not yet copied into the database file,
    /// from the wal-index (`DB-shm`, walformat.html: `mxFrame` at offset 16
    /// of the header, `nBackfill` at offset 96, native byte order).
    ///
    /// The file is opened once and kept open: closing any descriptor of a
    /// file drops every POSIX lock the process holds on it, SQLite's own
    /// (the pin's read lock) included.
    fn unbackfilled(&mut self) -> Result<bool> {
        let path = shm_path(&self.db);
        let file = match &self.shm {
            Some(f) => f,
            None => self.shm.insert(open_shared(&path)?),
        };
        let head = read_at(file, 0, 100).map_err(|e| read_error(&path, e))?;
        Ok(shm_word(&head, 16) > shm_word(&head, 96))
    }

    /// Sets how many bytes of log [`Follower::poll`] reads at most, so
    /// that the pages it returns fit in the memory the caller has left;
    /// it always reads one transaction, and reads whole the log it must
    /// restart (the watcher's own restarts wait until it has read the
    /// rest). Unlimited at the start.
    pub fn set_read_limit(&mut self, bytes: u64) {
        self.read_limit = bytes;
    }

    /// Whether the last poll read the log to its end (not stopped by the
    /// read limit).
    #[must_use]
    pub fn caught_up(&self) -> bool {
        !self.cut_short
    }

    /// The length of the committed log, and how much of it this follower
    /// has not read yet, in bytes: what its pin keeps the log from
    /// restarting over. From the wal-index's count of valid frames
    /// (`mxFrame`), read without SQLite's locks, so an estimate.
    ///
    /// # Errors
    /// When the wal-index cannot be read.
    pub fn log_len(&mut self) -> Result<(u64, u64)> {
        let path = shm_path(&self.db);
        let file = match &self.shm {
            Some(f) => f,
            None => self.shm.insert(open_shared(&path)?),
        };
        let head = read_at(file, 0, 48).map_err(|e| read_error(&path, e))?;
        let frames = u64::from(shm_word(&head, 16));
        let read = self.cursor.map_or(0, |c| c.frames());
        let frame_len = u64::from(self.page_size) + wal::FRAME_HEADER_LEN as u64;
        Ok((
            frames.saturating_mul(frame_len),
            frames.saturating_sub(read).saturating_mul(frame_len),
        ))
    }

    /// Lets the log go: drops the pin, so that the application's
    /// checkpoints copy and restart the log as they would without a
    /// watcher. What the follower had not read may then be overwritten:
    /// it is not polled again.
    pub(crate) fn let_go(&mut self) {
        self.drop_pin();
    }
}

/// The 32-bit word at `at` of the wal-index header `head` (walformat.html:
/// `mxFrame` at 16, `nBackfill` at 96), in the host's byte order; 0 past
/// its end.
// The wal-index is in the host's byte order.
#[allow(clippy::big_endian_bytes)]
fn shm_word(head: &[u8], at: usize) -> u32 {
    let bytes = head
        .get(at..at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .unwrap_or_default();
    if cfg!(target_endian = "big") {
        u32::from_be_bytes(bytes)
    } else {
        u32::from_le_bytes(bytes)
    }
}

impl Follower {
    /// With the write lock held and the log read to its end: takes the pin
    /// so that it holds the log. A read transaction holds the log only if
    /// the log had frames not yet in the database file when it began (else
    /// SQLite reads from the file alone and lets the next writer restart
    /// the log). With the write lock held nobody adds frames, so that can
    /// be checked after the fact. When there are none, the watcher makes
    /// one: a commit that changes nothing (`user_version` set to itself,
    /// in the write transaction that read it), which restarts the log as
    /// the application's next commit would have. The write lock is then
    /// released and taken again; the caller releases it.
    fn pin_under_lock(&mut self, events: &mut Vec<Event>) -> Result<()> {
        self.take_pin()?;
        if self.unbackfilled()? {
            return Ok(());
        }
        self.drop_pin();
        let version: i64 = self
            .writer
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| sql_error(&self.db, "reading user_version", e))?;
        self.writer
            .execute_batch(&format!("PRAGMA user_version = {version}; COMMIT"))
            .map_err(|e| sql_error(&self.db, "writing a frame for the pin", e))?;
        // The log restarts with this commit, and the old log ended where
        // the cursor is: nothing can have been appended to it since.
        self.own_restart = self.cursor;
        // Pinned at once (the new frame is not yet copied away, so this
        // pin almost surely holds), then again under the write lock, where
        // whether it holds can be checked.
        self.take_pin()?;
        if !self.lock_writes(Some(events))? {
            return Ok(());
        }
        self.read_new(events)?;
        self.take_pin()?;
        if !self.unbackfilled()? {
            // Copied away already (an application's checkpoint between
            // the commit and the pin): the next poll tries again.
            self.drop_pin();
        }
        Ok(())
    }

    /// Opens the pin's read transaction on the newest snapshot: on the
    /// spare connection, before the old pin ends.
    fn take_pin(&mut self) -> Result<()> {
        self.spare
            .execute_batch("BEGIN")
            .and_then(|()| {
                self.spare
                    .query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
                        r.get::<_, i64>(0)
                    })
            })
            .map_err(|e| {
                let _ = self.spare.execute_batch("ROLLBACK");
                sql_error(&self.db, "opening the pin (a read transaction)", e)
            })?;
        self.drop_pin();
        std::mem::swap(&mut self.pin, &mut self.spare);
        self.pinned = true;
        self.pinned_at = self.cursor;
        Ok(())
    }

    /// Moves the pin forward when the log has grown well past it, so that
    /// checkpoints (the application's automatic ones) keep copying the log
    /// into the database a little at a time, as they would without a
    /// watcher, instead of all at once after the next restart.
    fn roll_pin(&mut self) -> Result<()> {
        let grown = match (self.pinned_at, self.cursor) {
            (Some(at), Some(now)) if at.header() == now.header() => {
                now.frames().saturating_sub(at.frames())
            }
            _ => u64::MAX,
        };
        if self.pinned && grown >= ROLL_FRAMES {
            self.take_pin()?;
        }
        Ok(())
    }

    fn drop_pin(&mut self) {
        if self.pinned {
            let _ = self.pin.execute_batch("COMMIT");
            self.pinned = false;
        }
    }

    /// How far this follower has read the log: after the last complete
    /// transaction of the current generation (none before the first read,
    /// or while there is no log).
    pub(crate) fn position(&self) -> Option<Cursor> {
        self.cursor
    }

    /// Moves the cursor (placed by [`Follower::read_whole_log`]) to the
    /// log's end, reading only what was appended since when the log is
    /// still the same generation (same header: within a generation frames
    /// are only appended), else the whole log.
    fn catch_up(&mut self) -> Result<()> {
        let Some(file) = self.open_log()? else {
            self.cursor = None;
            return Ok(());
        };
        let head = read_at(&file, 0, wal::HEADER_LEN).map_err(|e| read_error(&self.wal, e))?;
        let (Ok(header), Some(cursor)) = (WalHeader::parse(&head), self.cursor) else {
            return self.read_whole_log();
        };
        if cursor.header() != &header {
            return self.read_whole_log();
        }
        self.read_to_end(&file, cursor)
    }

    fn read_whole_log(&mut self) -> Result<()> {
        let Some(file) = self.open_log()? else {
            self.cursor = None;
            return Ok(());
        };
        let head = read_at(&file, 0, wal::HEADER_LEN).map_err(|e| read_error(&self.wal, e))?;
        let Ok(header) = WalHeader::parse(&head) else {
            self.cursor = None;
            return Ok(());
        };
        self.read_to_end(&file, Cursor::new(header))
    }

    /// Reads `file` from `cursor` to its current end and keeps the cursor
    /// where that leaves it.
    fn read_to_end(&mut self, file: &File, mut cursor: Cursor) -> Result<()> {
        let len = file.metadata().map_err(|e| read_error(&self.wal, e))?.len();
        read_log(
            file,
            &self.wal,
            &mut cursor,
            len,
            u64::MAX,
            &mut self.buf,
            |_, _| {},
        )?;
        self.cursor = Some(cursor);
        Ok(())
    }

    fn open_log(&self) -> Result<Option<File>> {
        match File::open(&self.wal) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(read_error(&self.wal, e)),
        }
    }

    /// Reads what was committed since the last poll; restarts the log when
    /// it has grown past the limit.
    ///
    /// # Errors
    /// When the log or the database cannot be read.
    pub fn poll(&mut self) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        if self.read_checked(&mut events, None)?.is_none() {
            return Ok(events);
        }
        // The generation's length, not the file's: SQLite does not shrink
        // the file when the log restarts, so a log that once grew large
        // would seem far past the limit after every restart.
        let len = self.cursor.map_or(0, |c| c.offset());
        if events.iter().any(|e| matches!(e, Event::Lost(_))) {
            return Ok(events);
        }
        if self.pinned {
            self.roll_pin()?;
        } else {
            self.repin(&mut events)?;
        }
        // At most one restart a second (each costs checkpoints and a short
        // hold of the write lock), unless the log is far past the limit.
        let due = self
            .last_restart
            .is_none_or(|t| t.elapsed() >= MIN_RESTART_INTERVAL);
        // Not while the read stopped short of the log's end (the watcher's
        // memory was full): a restart reads the whole log first.
        if len > self.restart_bytes
            && !self.cut_short
            && (due || len > self.restart_bytes.saturating_mul(16))
        {
            self.last_restart = Some(std::time::Instant::now());
            self.restart_log(&mut events)?;
        }
        Ok(events)
    }

    /// Reads what the log holds past the last poll and nothing more (no
    /// moving of the pin, no restart), then lets the pin go: the last poll
    /// of a follower whose successor already holds the log, or of a
    /// stopping watcher.
    ///
    /// The pin goes at once, not when the follower is dropped: a new base
    /// is stored (hundreds of milliseconds at full speed) before the old
    /// follower is, and a pin held that long lets the log grow past what
    /// the application's automatic checkpoints copy, until the first one
    /// after it copies it all inside one of the application's commits.
    ///
    /// With `successor`, the base of the follower that takes over, it reads
    /// only up to that base's point of the log and dates what it finds no
    /// later than the base: the transactions after that point are the
    /// successor's alone, so none is stored or numbered twice.
    ///
    /// # Errors
    /// When the log cannot be read.
    pub fn poll_final(&mut self, successor: Option<&Base>) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        let limit = successor.map(|b| (b.at, b.time));
        let read = self.read_checked(&mut events, limit);
        self.drop_pin();
        read?;
        Ok(events)
    }

    /// Reads what the log holds past the last poll, within the read limit,
    /// and nothing more (no moving of the pin, no restart): the reads of a
    /// stopping watcher, which then lets the log go.
    ///
    /// # Errors
    /// When the log cannot be read.
    pub(crate) fn poll_rest(&mut self) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        self.read_checked(&mut events, None)?;
        Ok(events)
    }

    /// Reads new transactions into `events` unless the database file was
    /// replaced (then [`Event::Lost`]); the log's length, `None` when
    /// replaced.
    fn read_checked(
        &mut self,
        events: &mut Vec<Event>,
        limit: Option<Limit>,
    ) -> Result<Option<u64>> {
        if identity(&self.db).ok() != Some(self.identity) {
            events.push(Event::Lost(format!(
                "{} was replaced by another file",
                self.db.display()
            )));
            return Ok(None);
        }
        // The wal-index the watcher's connections use must be the one at
        // the path: if the application's last connection closed and
        // deleted it (which SQLite does only when no other process holds a
        // shared lock on the database, so this should not happen while the
        // watcher is connected), those connections see a log nobody else
        // does and must not lock, commit or checkpoint through it.
        if let Some(file) = &self.shm {
            let ours = file.metadata().map(|m| (m.dev(), m.ino())).ok();
            let there = identity(&shm_path(&self.db)).ok();
            if ours != there {
                events.push(Event::Lost(format!(
                    "{}-shm was deleted or replaced (the application's last connection closed)",
                    self.db.display()
                )));
                return Ok(None);
            }
        }
        self.read_upto(events, limit, self.read_limit).map(Some)
    }

    /// Reads new transactions into `events`; returns the log's length.
    fn read_new(&mut self, events: &mut Vec<Event>) -> Result<u64> {
        self.read_upto(events, None, u64::MAX)
    }

    /// [`Follower::read_new`], with a `limit`: no further than a point of
    /// the log (none: the log was empty then), and commits dated no later
    /// than a time (when they are known committed before it); and about
    /// `budget` bytes of log at most (see `read_log`).
    fn read_upto(
        &mut self,
        events: &mut Vec<Event>,
        limit: Option<Limit>,
        budget: u64,
    ) -> Result<u64> {
        self.cut_short = false;
        let Some(file) = self.open_log()? else {
            return Ok(0);
        };
        let meta = file.metadata().map_err(|e| read_error(&self.wal, e))?;
        let len = meta.len();
        // Every commit found below `len` was written before this moment.
        let mut time = Timestamp::now();
        if let Some((_, before)) = limit {
            time = time.min(before);
        }
        let head = read_at(&file, 0, wal::HEADER_LEN).map_err(|e| read_error(&self.wal, e))?;
        let Ok(header) = WalHeader::parse(&head) else {
            // Empty or truncated (a TRUNCATE checkpoint): nothing to read;
            // the next header tells whether anything was missed.
            return Ok(len);
        };
        let cursor = match self.cursor {
            Some(c) if c.header() == &header => c,
            Some(old) => {
                // The log restarted. What the old one still holds past our
                // position is read first.
                // (Whole: under the pin the log restarts only once read.)
                let mut old_cursor = old;
                self.read_frames(&file, &mut old_cursor, len, u64::MAX, time, events)?;
                let ours = self.own_restart.take() == Some(old_cursor);
                if let Some(reason) = self.missed(&file, &old_cursor, &header, len, ours)? {
                    events.push(Event::Lost(reason));
                    return Ok(len);
                }
                Cursor::new(header)
            }
            None => {
                if header.page_size != self.page_size {
                    events.push(Event::Lost(format!(
                        "the page size changed from {} to {}",
                        self.page_size, header.page_size
                    )));
                    return Ok(len);
                }
                Cursor::new(header)
            }
        };
        let mut cursor = cursor;
        let end = match limit {
            // Within one generation frames are only appended: the limit is
            // an offset of it. (Another generation cannot follow it while
            // the successor's pin holds the log.)
            Some((Some(at), _)) if at.header() == cursor.header() => len.min(at.offset()),
            // The log was empty at the limit: nothing of this generation.
            Some((None, _)) => 0,
            _ => len,
        };
        self.cut_short = self.read_frames(&file, &mut cursor, end, budget, time, events)?;
        self.cursor = Some(cursor);
        Ok(len)
    }

    fn read_frames(
        &mut self,
        file: &File,
        cursor: &mut Cursor,
        len: u64,
        limit: u64,
        time: Timestamp,
        events: &mut Vec<Event>,
    ) -> Result<bool> {
        let page_size = cursor.header().page_size;
        read_log(
            file,
            &self.wal,
            cursor,
            len,
            limit,
            &mut self.buf,
            |body, txn| {
                let mut pages = Vec::with_capacity(txn.pages.len());
                let mut data = Vec::with_capacity(txn.pages.len() * page_size as usize);
                for (page, range) in &txn.pages {
                    if let Some(image) = body.get(range.clone()) {
                        pages.push(*page);
                        data.extend_from_slice(image);
                    }
                }
                events.push(Event::Commit(Commit {
                    time,
                    page_size,
                    db_pages: txn.db_pages,
                    pages,
                    data,
                }));
            },
        )
    }

    /// Why transactions may have been lost when the log restarted from
    /// `old` (read as far as it goes) to `new`; `None` when none can have
    /// been. `ours` says the watcher restarted it itself with `old`
    /// complete.
    ///
    /// A writer that restarts the log keeps the first salt of the shared
    /// header and adds one (SQLite's `walRestartHdr`); the checkpoint
    /// sequence number is no help, being each connection's own count. So
    /// a first salt one higher means exactly one restart; anything else (a
    /// log restarted twice, or by a TRUNCATE checkpoint, whose next writer
    /// may draw new salts) may hide a whole log.
    fn missed(
        &self,
        file: &File,
        old: &Cursor,
        new: &WalHeader,
        len: u64,
        ours: bool,
    ) -> Result<Option<String>> {
        if new.page_size != old.header().page_size {
            return Ok(Some(format!(
                "the page size changed from {} to {}",
                old.header().page_size,
                new.page_size
            )));
        }
        if new.salt[0] != old.header().salt[0].wrapping_add(1) {
            return Ok(Some(
                "the log was restarted more than once, or by a checkpoint, between two reads"
                    .to_owned(),
            ));
        }
        if ours {
            return Ok(None);
        }
        // Where the old log would continue: if the new one has written
        // there already, a frame of the old one may have been overwritten.
        let first = new.frame_offset(0);
        let upto = old.offset().saturating_add(new.frame_len() as u64).min(len);
        let body = read_at(
            file,
            first,
            usize::try_from(upto.saturating_sub(first)).unwrap_or(0),
        )
        .map_err(|e| read_error(&self.wal, e))?;
        let written = wal::valid_frames(new, &body);
        if written > old.frames() {
            return Ok(Some(
                "the log restarted and was overwritten past the watcher's position before it was read"
                    .to_owned(),
            ));
        }
        Ok(None)
    }

    /// Reads the log with `read` in passes while the application keeps
    /// appending: each pass reads what came during the last, until one
    /// reads at most `ROLL_FRAMES` pages, so what is left for the write
    /// lock is small.
    fn read_in_passes(&mut self, mut read: impl FnMut(&mut Self) -> Result<()>) -> Result<()> {
        for _ in 0..COPY_PASSES {
            let before = self.cursor.map(|c| c.offset());
            read(self)?;
            let after = self.cursor.map(|c| c.offset());
            let read = after.unwrap_or(0).saturating_sub(before.unwrap_or(0));
            if before.is_none() || read <= ROLL_FRAMES * u64::from(self.page_size) {
                break;
            }
        }
        Ok(())
    }

    /// Restarts the log (see the module doc).
    fn restart_log(&mut self, events: &mut Vec<Event>) -> Result<()> {
        // Step 1, no locks against anyone: the pin moves to the newest
        // snapshot and the log is copied into the database up to it, in
        // passes: each leaves only what was committed while it ran, so a
        // busy application is not held in step 2 while a long log is
        // copied.
        // Every read here keeps to the read limit, counting what the poll
        // read already: a restart that would read past it is given up for
        // now (the pin holds the log; the next polls read on). Unbounded,
        // a restart on a starved CPU beside a fast writer read gigabytes
        // into memory while its checkpoints crawled.
        for _ in 0..COPY_PASSES {
            self.take_pin()?;
            let copied = self.checkpoint();
            if self.read_budgeted(events)? {
                return Ok(());
            }
            match copied {
                Ok((log, done)) if log.saturating_sub(done) > ROLL_FRAMES => {}
                _ => break,
            }
        }
        // What the application committed meanwhile is read now, not under
        // the write lock: at full speed a second of log is tens of
        // megabytes, whose reading held the application for most of a
        // second.
        let mut cut = false;
        self.read_in_passes(|f| {
            cut = cut || f.read_budgeted(events)?;
            Ok(())
        })?;
        if cut || events.iter().any(|e| matches!(e, Event::Lost(_))) {
            return Ok(());
        }
        // Step 2, under the write lock, where nobody commits: the rest is
        // read and copied, so the whole log is in the database file (as
        // far as the application's own readers allow).
        if !self.lock_writes(Some(events))? {
            // The application held it throughout (a long transaction).
            return Ok(());
        }
        let read = match self.read_budgeted(events) {
            Ok(true) => {
                self.release_writes();
                return Ok(());
            }
            other => other,
        };
        self.drop_pin();
        let copied = read.and_then(|_| self.checkpoint().map(|_| ()));
        self.release_writes();
        copied?;
        // Step 3: the next commit restarts the log: the watcher's own if
        // it gets the write lock first (`pin_under_lock`), else the
        // application's, read and pinned as soon as it appears. A separate
        // hold: only a write transaction that begins once the whole log is
        // in the database file restarts the log (SQLite's walRestartLog
        // needs the writer's snapshot to be read from the file alone).
        self.repin(events)
    }

    /// Takes the pin again under the write lock (see `pin_under_lock`).
    fn repin(&mut self, events: &mut Vec<Event>) -> Result<()> {
        if !self.lock_writes(Some(events))? {
            return Ok(());
        }
        let pinned = match self.read_budgeted(events) {
            // The pin must hold, and the watcher's own commit (which
            // restarts the log) must wait until the log is read.
            Ok(true) => self.take_pin(),
            Ok(false) => self.pin_under_lock(events),
            Err(e) => Err(e),
        };
        self.release_writes();
        pinned
    }

    /// Reads new transactions into `events` within what is left of the
    /// read limit once the pages already in `events` are counted; whether
    /// it stopped short of the log's end.
    fn read_budgeted(&mut self, events: &mut Vec<Event>) -> Result<bool> {
        let held: u64 = events
            .iter()
            .map(|e| match e {
                Event::Commit(c) => c.data.len() as u64,
                Event::Lost(_) => 0,
            })
            .sum();
        self.read_upto(events, None, self.read_limit.saturating_sub(held))?;
        Ok(self.cut_short)
    }

    /// A PASSIVE checkpoint; the frames in the log and those copied into
    /// the database file.
    fn checkpoint(&self) -> Result<(u64, u64)> {
        let (log, done): (i64, i64) = self
            .checkpointer
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })
            .map_err(|e| sql_error(&self.db, "checkpointing", e))?;
        // -1 when the connection is not in WAL mode: nothing copied.
        Ok((
            u64::try_from(log).unwrap_or(0),
            u64::try_from(done).unwrap_or(0),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use rusqlite::Connection;

    use super::{Event, Follower};

    fn state(conn: &Connection) -> String {
        conn.query_row(
            "SELECT count(*) || '/' || total(length(v)) || '/' || coalesce(group_concat(k || ':' || length(v) || substr(v, 1, 6), ','), '') FROM t",
            [],
            |r| r.get(0),
        )
        .unwrap_or_else(|e| panic!("state: {e}"))
    }

    fn state_of_image(dir: &std::path::Path, image: &[u8]) -> String {
        let path = dir.join("replay.db");
        std::fs::write(&path, image).unwrap_or_else(|e| panic!("write: {e}"));
        let conn = Connection::open(&path).unwrap_or_else(|e| panic!("open: {e}"));
        let s = state(&conn);
        drop(conn);
        let _ = std::fs::remove_file(dir.join("replay.db-wal"));
        s
    }

    /// Replays `commits` onto `image` and returns the state after each,
    /// the base's first.
    fn replay(
        dir: &std::path::Path,
        mut image: Vec<u8>,
        page: usize,
        commits: &[super::Commit],
    ) -> Vec<String> {
        let mut replayed = vec![state_of_image(dir, &image)];
        for c in commits {
            for (number, bytes) in c.images() {
                let at = (number as usize - 1) * page;
                if image.len() < at + page {
                    image.resize(at + page, 0);
                }
                image[at..at + page].copy_from_slice(bytes);
            }
            image.truncate(c.db_pages as usize * page);
            replayed.push(state_of_image(dir, &image));
        }
        replayed
    }

    /// What a scenario produced: the writer's states, the follower's
    /// replayed states, and why it reported losses.
    struct Run {
        states: Vec<String>,
        replayed: Vec<String>,
        lost: Vec<String>,
        writer_time: std::time::Duration,
        /// Polls that stopped at the read limit, short of the log's end.
        cut_short: usize,
    }

    /// Runs `write` (which records the state after each commit) in a
    /// thread, starts a follower once 40 states are recorded, and polls it
    /// until the writer is done.
    fn scenario(
        restart_bytes: u64,
        write: impl FnOnce(&std::path::Path, &Mutex<Vec<String>>) + Send + 'static,
    ) -> (tempfile::TempDir, Run) {
        scenario_limited(restart_bytes, u64::MAX, write)
    }

    /// [`scenario`] with the follower reading at most `read_limit` bytes of
    /// log a poll.
    fn scenario_limited(
        restart_bytes: u64,
        read_limit: u64,
        write: impl FnOnce(&std::path::Path, &Mutex<Vec<String>>) + Send + 'static,
    ) -> (tempfile::TempDir, Run) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let db = dir.path().join("app.db");
        let setup = Connection::open(&db).unwrap_or_else(|e| panic!("open: {e}"));
        setup
            .execute_batch(
                "PRAGMA journal_mode=WAL; CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT);",
            )
            .unwrap_or_else(|e| panic!("setup: {e}"));
        drop(setup);
        let states = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (db, states, stop) = (db.clone(), Arc::clone(&states), Arc::clone(&stop));
            std::thread::spawn(move || {
                let started = Instant::now();
                write(&db, &states);
                stop.store(true, Ordering::Release);
                started.elapsed()
            })
        };
        while states.lock().unwrap_or_else(|e| e.into_inner()).len() < 40 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let (mut follower, base) =
            Follower::start(&db, restart_bytes).unwrap_or_else(|e| panic!("start: {e}"));
        follower.set_read_limit(read_limit);
        // The writer gets ahead of the first poll, so that a follower
        // limited to a few transactions a poll must stop at its limit
        // (what the limited tests are about) however the machine
        // schedules the two threads.
        let ahead = states.lock().unwrap_or_else(|e| e.into_inner()).len() + 8;
        while read_limit < u64::MAX
            && states.lock().unwrap_or_else(|e| e.into_inner()).len() < ahead
            && !stop.load(Ordering::Acquire)
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let mut image = Vec::new();
        base.file()
            .read_to_end(&mut image)
            .unwrap_or_else(|e| panic!("read base: {e}"));
        let mut commits = Vec::new();
        let mut lost = Vec::new();
        let mut cut_short = 0;
        loop {
            let stopped = stop.load(Ordering::Acquire);
            cut_short += usize::from(!follower.caught_up());
            for event in follower.poll().unwrap_or_else(|e| panic!("poll: {e}")) {
                match event {
                    Event::Commit(c) => commits.push(c),
                    Event::Lost(why) => lost.push(why),
                }
            }
            // Done once a poll after the writer's end has read to the
            // log's end.
            if (stopped && follower.caught_up()) || !lost.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        drop(follower);
        let writer_time = writer.join().unwrap_or_else(|_| panic!("writer panicked"));
        let states = states.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let replayed = replay(dir.path(), image, base.page_size as usize, &commits);
        (
            dir,
            Run {
                states,
                replayed,
                lost,
                writer_time,
                cut_short,
            },
        )
    }

    /// Every state the writer committed after the base, and only those,
    /// in order (repeats collapsed: the watcher's own commits, and some of
    /// the writer's, change nothing).
    fn assert_every_state(run: &Run) {
        assert!(run.lost.is_empty(), "lost: {:?}", run.lost);
        assert_states_in_order(run);
    }

    /// The replayed states are consecutive states of the writer's from
    /// the base on; all of them unless a loss was reported.
    fn assert_states_in_order(run: &Run) {
        let mut states = run.states.clone();
        states.dedup();
        let mut replayed = run.replayed.clone();
        replayed.dedup();
        let first = states
            .iter()
            .position(|s| *s == replayed[0])
            .unwrap_or_else(|| panic!("the base is no committed state"));
        assert!(first > 0, "the base was taken part-way");
        assert!(
            replayed.len() <= states.len() - first,
            "more states than commits"
        );
        assert_eq!(
            replayed.len()
                + usize::from(!run.lost.is_empty()) * (states.len() - first - replayed.len()),
            states.len() - first,
            "{} distinct states after the base, {} replayed",
            states.len() - first - 1,
            replayed.len() - 1,
        );
        for (i, (got, want)) in replayed.iter().zip(&states[first..]).enumerate() {
            assert_eq!(got, want, "state {i} after the base");
        }
    }

    /// Commits `n` transactions of every size, VACUUM every `vacuum`,
    /// with SQLite's automatic checkpoints every `autocheckpoint` pages.
    fn mixed_writes(
        db: &std::path::Path,
        states: &Mutex<Vec<String>>,
        n: i64,
        vacuum: i64,
        autocheckpoint: u32,
    ) {
        let conn = Connection::open(db).unwrap_or_else(|e| panic!("open: {e}"));
        conn.execute_batch(&format!("PRAGMA wal_autocheckpoint={autocheckpoint}"))
            .unwrap_or_else(|e| panic!("pragma: {e}"));
        let record = |conn: &Connection| {
            states
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(state(conn));
        };
        record(&conn);
        let mut x: u64 = 99;
        for i in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let size = usize::try_from(x % 9000).unwrap_or(0);
            match x % 5 {
                0 => conn.execute("DELETE FROM t WHERE k % 7 = ?1", [i % 7]),
                1 => conn.execute(
                    "UPDATE t SET v = ?1 WHERE k % 3 = ?2",
                    rusqlite::params!["u".repeat(size % 300), i % 3],
                ),
                _ => conn.execute(
                    "INSERT OR REPLACE INTO t(k, v) VALUES (?1, ?2)",
                    rusqlite::params![
                        i64::try_from(x % 200).unwrap_or(0),
                        format!("{i}{}", "v".repeat(size))
                    ],
                ),
            }
            .unwrap_or_else(|e| panic!("write {i}: {e}"));
            record(&conn);
            if vacuum > 0 && i % vacuum == vacuum - 1 {
                conn.execute_batch("VACUUM")
                    .unwrap_or_else(|e| panic!("vacuum: {e}"));
                record(&conn);
            }
            if i % 50 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }

    /// A writer commits transactions of every size while the follower,
    /// started part-way through, restarts the log every 1 MiB (SQLite's
    /// own automatic checkpoints run at their default, 1,000 pages): the
    /// base plus the captured transactions, replayed, pass through every
    /// state the writer committed after the base, in order, with none
    /// missing.
    #[test]
    fn the_base_and_the_captured_transactions_replay_every_commit() {
        let (_dir, run) = scenario(1 << 20, |db, states| {
            mixed_writes(db, states, 600, 0, 1000);
        });
        eprintln!("writer's run with the watcher: {:?}", run.writer_time);
        assert_every_state(&run);
    }

    /// A follower that may read one transaction a poll (a watcher whose
    /// memory is full) reads the rest at later polls, and the log does not
    /// restart under it before it has: still every state, in order.
    #[test]
    fn a_follower_reading_a_little_at_a_time_misses_nothing() {
        let (_dir, run) = scenario_limited(256 << 10, 1, |db, states| {
            mixed_writes(db, states, 400, 0, 1000);
        });
        assert!(run.cut_short > 0, "no poll stopped at the limit");
        assert_every_state(&run);
    }

    /// VACUUM rewrites the whole database through the log: still every
    /// state.
    #[test]
    fn a_vacuum_is_followed() {
        let (_dir, run) = scenario(1 << 20, |db, states| {
            mixed_writes(db, states, 300, 60, 1000);
        });
        assert_every_state(&run);
    }

    /// An application that checkpoints every 20 pages, in the same
    /// process, can now and then restart the log twice in the moment the
    /// watcher restarts it (it has no pin then): that is reported, never
    /// followed silently, and everything captured before it replays
    /// exactly.
    #[test]
    fn losses_under_aggressive_checkpoints_are_reported() {
        for _ in 0..3 {
            let (_dir, run) = scenario(64 << 10, |db, states| {
                mixed_writes(db, states, 400, 0, 20);
            });
            assert_states_in_order(&run);
        }
    }

    /// A transaction longer than the piece the log is read in is read
    /// whole, and the commits around it too.
    #[test]
    fn a_transaction_longer_than_a_read_piece_is_followed() {
        let (_dir, run) = scenario(1 << 30, |db, states| {
            mixed_writes(db, states, 60, 0, 1000);
            let conn = Connection::open(db).unwrap_or_else(|e| panic!("open: {e}"));
            let big = usize::try_from(super::READ_PIECE).unwrap_or(0) * 3 / 2;
            conn.execute(
                "INSERT INTO t(k, v) VALUES (1000000, ?1)",
                ["b".repeat(big)],
            )
            .unwrap_or_else(|e| panic!("big: {e}"));
            states
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(state(&conn));
            drop(conn);
            mixed_writes(db, states, 20, 0, 1000);
        });
        assert_every_state(&run);
    }

    /// SQLite's read locks are POSIX locks on the wal-index, which any
    /// descriptor of it closed in the process drops. A follower dropped
    /// while another follows the same database (the old chain's, after a
    /// new base) must leave the other's locks in place. (Another process's
    /// checkpoint would then restart the log under the pin; in this process
    /// SQLite tracks its own connections' locks itself, so /proc/locks is
    /// the witness.)
    #[test]
    fn a_follower_dropped_beside_another_leaves_its_locks() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let db = dir.path().join("app.db");
        let app = Connection::open(&db).unwrap_or_else(|e| panic!("open: {e}"));
        app.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE t(v TEXT); INSERT INTO t VALUES ('a');",
        )
        .unwrap_or_else(|e| panic!("setup: {e}"));
        let (old, _) = Follower::start(&db, 1 << 30).unwrap_or_else(|e| panic!("start: {e}"));
        let (mut new, _) = Follower::start(&db, 1 << 30).unwrap_or_else(|e| panic!("start: {e}"));
        drop(old);
        let shm = std::fs::metadata(dir.path().join("app.db-shm"))
            .unwrap_or_else(|e| panic!("stat: {e}"))
            .ino()
            .to_string();
        let me = std::process::id().to_string();
        let locks = std::fs::read_to_string("/proc/locks").unwrap_or_else(|e| panic!("{e}"));
        let held = locks
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|f| {
                f.get(1) == Some(&"POSIX")
                    && f.get(4) == Some(&me.as_str())
                    && f.get(5).and_then(|d| d.rsplit(':').next()) == Some(shm.as_str())
            })
            .count();
        assert!(held > 0, "no lock left on the wal-index");
        app.execute("INSERT INTO t VALUES ('b')", [])
            .unwrap_or_else(|e| panic!("insert: {e}"));
        let events = new.poll().unwrap_or_else(|e| panic!("poll: {e}"));
        assert!(
            events.iter().all(|e| matches!(e, Event::Commit(_))),
            "{events:?}"
        );
    }

    /// A database replaced by another file (an application's own restore)
    /// is reported, not followed into.
    #[test]
    fn a_replaced_database_is_reported_lost() {
        let (_dir, run) = scenario(4 << 20, |db, states| {
            mixed_writes(db, states, 60, 0, 1000);
            let other = db.with_file_name("other.db");
            let conn = Connection::open(&other).unwrap_or_else(|e| panic!("open: {e}"));
            conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'new');")
                .unwrap_or_else(|e| panic!("other: {e}"));
            drop(conn);
            std::fs::rename(&other, db).unwrap_or_else(|e| panic!("rename: {e}"));
            std::thread::sleep(std::time::Duration::from_millis(200));
        });
        assert!(
            run.lost.iter().any(|l| l.contains("replaced")),
            "{:?}",
            run.lost
        );
    }
}
