//! SQLite databases as cairn sees them: the capture of a live database by
//! backup (this file), reading its WAL file (`wal`), following its log
//! transaction by transaction (`follower`), the watcher of
//! `cairn watch` that stores bases and WAL segments (`watcher`), and the
//! restore to a point in time (`pitr`).
//!
//! May use: ops/, repo/, format/, storage/ and the base modules; not
//! daemon/ or server/, which call into it. The segment record is
//! `format::segment`'s and reading segments back is `repo::segments`'s, so
//! the operations below (prune, forget, verify, status) never need this
//! folder.
//!
//! # Capture
//!
//! Transactionally consistent capture of live SQLite databases.
//!
//! A database file copied byte by byte while an application writes to it is
//! a torn image: pages from before and after a transaction, and in WAL mode
//! the committed data that still lives in the `-wal` file is missing
//! altogether. So backup stores, for a regular file that starts with
//! SQLite's 16-byte header `"SQLite format 3\0"` (or that is named with
//! `--sqlite-db`), an image of the database as of one transaction instead of
//! the raw bytes; its `-wal`, `-shm` and `-journal` companions are not
//! stored. The image is a self-contained database file: restored, it opens
//! without any WAL, and its `PRAGMA journal_mode` is the source's persistent
//! setting (`wal` for a WAL database, since WAL mode is recorded in the
//! header, `delete` for a rollback-journal one).
//!
//! The generic backup walker and the live-restore protections of `ops/`
//! know nothing of SQLite: they reach this capture through the
//! special-file hook that [`special::SqliteFiles`] implements, which the
//! library's backup and restore (`crate::apps::engine`) install.
//!
//! # How
//!
//! The database is opened read-only (`SQLITE_OPEN_READ_ONLY`, a busy
//! timeout of [`BUSY_TIMEOUT`]) and copied with SQLite's online backup API
//! into a temporary file in the system temporary directory (`$TMPDIR`, else
//! `/tmp`), which therefore needs free space the size of the database; the
//! temporary file is then chunked like any other file and deleted. Pages go
//! from SQLite's page cache to the temporary file a step at a time
//! ([`STEP_BYTES`]), so the database is never held in memory.
//!
//! - **WAL mode**: the copy runs inside one read transaction, so it sees one
//!   snapshot of the database however long it takes. Writers are never
//!   held back (a WAL reader does not block them); checkpoints cannot pass
//!   the snapshot while it is read, so the `-wal` file may grow meanwhile.
//! - **Rollback-journal mode**: a reader's shared lock keeps writers from
//!   committing, so the copy takes the lock one step at a time and sleeps
//!   [`STEP_PAUSE`] between steps, when writers get through. A commit in
//!   between makes SQLite restart the copy from the first page; after
//!   [`MAX_RESTARTS`] restarts the rest is copied in one step under one
//!   shared lock, so the copy always ends, at the cost of a writer waiting
//!   up to one whole copy (about 0.3 s for 100 MB here; see store-format.md)
//!   once in that case. Writers wait on their own busy timeout meanwhile.
//!
//! A file that looks like a database but cannot be captured (corrupt,
//! encrypted, a hot journal a read-only connection cannot roll back, no
//! room for the temporary file) is stored as raw bytes with a warning that
//! names it.
//!
//! # Change detection
//!
//! A database is unchanged only if its main file stats as recorded *and*
//! its `-wal` file, when there is one, was last written (mtime and ctime)
//! before the previous backup started, which therefore captured everything
//! in it: a commit in WAL mode touches only the `-wal` and `-shm` files,
//! never the main file.
//!
//! # Measurements
//!
//! A 93 MiB database (4 KiB pages, 95,000 rows of 1 KiB) on 2 shared cores:
//! capturing adds 0.1–0.3 s to a backup and no peak memory (73 MiB with or
//! without); a writer committing every millisecond saw its worst commit
//! take 15 ms in WAL mode (14 ms without a backup) and 337 ms in
//! rollback-journal mode (25 ms without). Details in store-format.md §11.
//! The online backup API was chosen over a read transaction on
//! `sqlite_dbpage`, which needs SQLite built with
//! `SQLITE_ENABLE_DBPAGE_VTAB` and yields the same pages.

pub mod follower;
pub mod pitr;
pub mod special;
pub mod wal;
pub mod watcher;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use crate::format::segment::valid_page_size;
use crate::format::snapshot::TableRows;

/// The first 16 bytes of every SQLite database file.
pub const MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// The length of a database file's header.
pub const HEADER_LEN: usize = 100;

/// The suffixes of the files SQLite keeps beside a database, which are not
/// stored with a captured one.
pub const COMPANION_SUFFIXES: [&[u8]; 3] = [b"-wal", b"-shm", b"-journal"];

/// The name prefix of the temporary files images are staged in, which
/// backup leaves out of the temporary directory.
pub const IMAGE_PREFIX: &str = ".cairn-sqlite-";

/// How long the capture's connection waits for a lock before a step
/// reports busy.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a capture may go on being refused locks (busy) before it gives
/// up and the file is stored as raw bytes.
pub const BUSY_LIMIT: Duration = Duration::from_secs(60);

/// Bytes copied per backup step (pages of the database's page size).
pub const STEP_BYTES: u32 = 4 << 20;

/// The pause between steps in rollback-journal mode, when writers commit.
pub const STEP_PAUSE: Duration = Duration::from_millis(5);

/// Restarts (a writer committed between two steps, rollback-journal mode)
/// after which the rest is copied in one step.
pub const MAX_RESTARTS: u32 = 1;

/// Whether backup looks for SQLite databases by their header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SqliteMode {
    /// Capture every regular file with a SQLite header (the default).
    #[default]
    Auto,
    /// Store every file as raw bytes (databases named explicitly are still
    /// captured).
    Off,
}

/// The page size a database header records, or `None` when `header` is not
/// a SQLite header (too short, wrong magic, an invalid page size).
#[must_use]
pub fn page_size(header: &[u8]) -> Option<u32> {
    if header.get(..MAGIC.len())? != MAGIC {
        return None;
    }
    let (hi, lo) = (*header.get(16)?, *header.get(17)?);
    // The header is big-endian by SQLite's specification; the value 1
    // stands for 65536, which does not fit in two bytes.
    let size = match (u32::from(hi) << 8) | u32::from(lo) {
        1 => 65536,
        n => n,
    };
    valid_page_size(size).then_some(size)
}

/// Whether `file` starts with a SQLite header; its page size if so. Reads
/// at an offset, so the file's position is left at the start.
pub(crate) fn sniff(file: &File) -> Option<u32> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match file.read_at(header.get_mut(got..)?, got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    page_size(header.get(..got)?)
}

/// The database a companion file's name belongs to: `app.db` for
/// `app.db-wal`, `app.db-shm` and `app.db-journal`.
#[must_use]
pub fn companion_of(name: &[u8]) -> Option<&[u8]> {
    COMPANION_SUFFIXES
        .iter()
        .find_map(|s| name.strip_suffix(*s))
        .filter(|base| !base.is_empty())
}

/// A captured database: a temporary file holding the image, deleted when
/// dropped.
pub(crate) struct Image {
    /// The image, positioned at its start.
    pub file: File,
    /// Its length.
    pub len: u64,
    /// The row count of each table in the image.
    pub tables: Vec<TableRows>,
    /// Keeps the temporary file until the image is stored.
    _tmp: tempfile::TempPath,
}

/// An image captured before a backup, for one path (see
/// [`special::SqliteFiles`]): taken by the backup when it reaches that
/// path, at most once.
#[derive(Clone, Default)]
pub(crate) struct Captured(Option<std::sync::Arc<std::sync::Mutex<CapturedSlot>>>);

/// The path and its image, until the backup takes it.
type CapturedSlot = Option<(PathBuf, Image)>;

impl Captured {
    /// `image` for the database at the absolute path `path`.
    pub(crate) fn new(path: PathBuf, image: Image) -> Self {
        Self(Some(std::sync::Arc::new(std::sync::Mutex::new(Some((
            path, image,
        ))))))
    }

    /// Whether `path` is the captured one and not taken yet.
    pub(crate) fn holds(&self, path: &Path) -> bool {
        self.0.as_ref().is_some_and(|m| {
            crate::sync::lock(m)
                .as_ref()
                .is_some_and(|(p, _)| p == path)
        })
    }

    /// The image for `path`, if it is the captured one and not taken yet.
    pub(crate) fn take(&self, path: &Path) -> Option<Image> {
        let mut slot = crate::sync::lock(self.0.as_ref()?);
        if slot.as_ref().is_some_and(|(p, _)| p == path) {
            return slot.take().map(|(_, image)| image);
        }
        None
    }
}

impl std::fmt::Debug for Captured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Captured(..)"
        } else {
            "Captured(none)"
        })
    }
}

/// Copies the database at `path` into a temporary file as of one
/// transaction. `opened` is the file backup opened (without following
/// symlinks); the capture fails if `path` is no longer that file. The error
/// says why, for a warning.
pub(crate) fn capture(path: &Path, opened: &File, page_size: Option<u32>) -> Result<Image, String> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let src = Connection::open_with_flags(path, flags).map_err(|e| format!("opening: {e}"))?;
    src.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| format!("opening: {e}"))?;
    same_file(path, opened)?;
    let mode: String = retry_busy(|| src.query_row("PRAGMA journal_mode", [], |r| r.get(0)))
        .map_err(|e| format!("reading the journal mode: {e}"))?;
    let wal = mode.eq_ignore_ascii_case("wal");
    // In WAL mode the whole copy is one read transaction (see the module
    // doc); reading the schema starts it. A file that is not a database
    // (corrupt, encrypted) fails here rather than being copied page by page.
    retry_busy(|| {
        if wal {
            src.execute_batch("BEGIN")?;
        }
        let read = src.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
            r.get::<_, i64>(0)
        });
        if read.is_err() && wal {
            src.execute_batch("ROLLBACK")?;
        }
        read
    })
    .map_err(|e| format!("reading the schema: {e}"))?;
    let image = image_of(&src, wal, page_size)?;
    if wal {
        src.execute_batch("COMMIT")
            .map_err(|e| format!("ending the read: {e}"))?;
    }
    Ok(image)
}

/// Copies the database `src` has open into a temporary file: in WAL mode
/// as of the read transaction `src` holds.
pub(crate) fn image_of(
    src: &Connection,
    wal: bool,
    page_size: Option<u32>,
) -> Result<Image, String> {
    let tmp = tempfile::Builder::new()
        .prefix(IMAGE_PREFIX)
        .tempfile()
        .map_err(|e| {
            format!(
                "cannot create a temporary file in {}: {e}",
                std::env::temp_dir().display()
            )
        })?;
    let mut dst = Connection::open(tmp.path()).map_err(|e| format!("creating the image: {e}"))?;
    // The image is written once and read back: no journal, no fsync.
    dst.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")
        .map_err(|e| format!("creating the image: {e}"))?;
    copy(src, &mut dst, wal, page_size.unwrap_or(4096)).map_err(|e| format!("copying: {e}"))?;
    // Counted on the image, which nobody else writes: the counts are those
    // of the transaction captured.
    let tables = table_counts(&dst).map_err(|e| format!("counting rows: {e}"))?;
    dst.close()
        .map_err(|(_, e)| format!("writing the image: {e}"))?;
    let (file, tmp) = tmp.into_parts();
    drop(file);
    let file = File::open(&tmp).map_err(|e| format!("cannot read back the image: {e}"))?;
    let len = file
        .metadata()
        .map_err(|e| format!("cannot read back the image: {e}"))?
        .len();
    Ok(Image {
        file,
        len,
        tables,
        _tmp: tmp,
    })
}

/// The tables of the database `conn` has open (SQLite's own `sqlite_`
/// tables and virtual tables left out), sorted by name, with their row
/// counts.
///
/// # Errors
/// SQLite's, when the schema or a table cannot be read.
pub fn table_counts(conn: &Connection) -> rusqlite::Result<Vec<TableRows>> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND sql NOT LIKE 'CREATE VIRTUAL%' ORDER BY name",
    )?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    names
        .into_iter()
        .map(|name| {
            let sql = format!("SELECT count(*) FROM \"{}\"", name.replace('"', "\"\""));
            let rows: i64 = conn.query_row(&sql, [], |r| r.get(0))?;
            Ok(TableRows {
                name,
                rows: u64::try_from(rows).unwrap_or(0),
            })
        })
        .collect()
}

/// Whether SQLite refused a lock (busy, locked), which passes.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Runs `f` again while SQLite reports busy, for up to [`BUSY_LIMIT`]
/// (each try already waits up to [`BUSY_TIMEOUT`]): a writer that commits
/// in a tight loop can hold the lock whenever the busy handler looks.
fn retry_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let start = Instant::now();
    loop {
        match f() {
            Err(e) if is_busy(&e) && start.elapsed() < BUSY_LIMIT => {
                std::thread::sleep(STEP_PAUSE);
            }
            other => return other,
        }
    }
}

/// Fails when `path` is no longer the file backup opened (replaced since).
fn same_file(path: &Path, opened: &File) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let now = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    let then = opened.metadata().map_err(|e| e.to_string())?;
    if now.dev() == then.dev() && now.ino() == then.ino() {
        Ok(())
    } else {
        Err("it was replaced while being opened".to_owned())
    }
}

/// Runs the online backup from `src` to `dst` (see the module doc).
fn copy(src: &Connection, dst: &mut Connection, wal: bool, page_size: u32) -> Result<(), String> {
    let pages = i32::try_from((STEP_BYTES / page_size).max(1)).unwrap_or(1024);
    let backup = Backup::new(src, dst).map_err(|e| e.to_string())?;
    let mut restarts = 0u32;
    let mut remaining: Option<i32> = None;
    let mut busy_since: Option<Instant> = None;
    loop {
        let step = if restarts >= MAX_RESTARTS { -1 } else { pages };
        let result = match backup.step(step) {
            Ok(r) => r,
            Err(e) if is_busy(&e) => StepResult::Busy,
            Err(e) => return Err(e.to_string()),
        };
        match result {
            StepResult::Done => return Ok(()),
            StepResult::More => {
                busy_since = None;
                let now = backup.progress().remaining;
                if remaining.is_some_and(|before| now >= before) {
                    restarts += 1;
                }
                remaining = Some(now);
                if !wal {
                    std::thread::sleep(STEP_PAUSE);
                }
            }
            // Busy, locked, or a result this build does not know: retry
            // until the limit.
            _ => {
                let since = *busy_since.get_or_insert_with(Instant::now);
                if since.elapsed() > BUSY_LIMIT {
                    return Err(format!(
                        "the database stayed locked for over {} s",
                        BUSY_LIMIT.as_secs()
                    ));
                }
                std::thread::sleep(STEP_PAUSE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_page_size_decodes_the_big_endian_field() {
        let mut h = [0u8; HEADER_LEN];
        h[..16].copy_from_slice(MAGIC);
        h[16] = 0x10;
        assert_eq!(page_size(&h), Some(4096));
        h[16] = 0;
        h[17] = 1;
        assert_eq!(page_size(&h), Some(65536));
        h[16] = 0x02;
        h[17] = 0x00;
        assert_eq!(page_size(&h), Some(512));
        h[16] = 0x03;
        assert_eq!(page_size(&h), None, "not a power of two");
        assert_eq!(page_size(&h[..17]), None, "too short");
        h[0] = b's';
        h[16] = 0x10;
        assert_eq!(page_size(&h), None, "wrong magic");
    }

    #[test]
    fn sqlite_companions_name_their_database() {
        assert_eq!(companion_of(b"app.db-wal"), Some(&b"app.db"[..]));
        assert_eq!(companion_of(b"app.db-shm"), Some(&b"app.db"[..]));
        assert_eq!(companion_of(b"x-journal"), Some(&b"x"[..]));
        assert_eq!(companion_of(b"-wal"), None);
        assert_eq!(companion_of(b"app.db"), None);
    }

    #[test]
    fn sqlite_capture_is_a_consistent_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let c = Connection::open(&path).expect("open");
        c.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE t (x); INSERT INTO t VALUES (1), (2), (3);",
        )
        .expect("fill");
        let opened = File::open(&path).expect("open file");
        let ps = sniff(&opened);
        assert_eq!(ps, Some(4096));
        let image = capture(&path, &opened, ps).expect("capture");
        let copy = dir.path().join("copy.db");
        std::fs::copy(&image._tmp, &copy).expect("copy");
        assert_eq!(std::fs::metadata(&copy).expect("meta").len(), image.len);
        let r = Connection::open(&copy).expect("open copy");
        let n: i64 = r
            .query_row("SELECT sum(x) FROM t", [], |r| r.get(0))
            .expect("sum");
        assert_eq!(n, 6, "the rows only in the WAL are in the image");
    }
}
