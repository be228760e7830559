//! SQLite databases as the generic engine's special files: the
//! implementation of [`SpecialFiles`] that the backup walker and the
//! live-restore protections of `ops/` call, so that they know nothing of
//! SQLite themselves.
//!
//! For a backup it claims every regular file with a SQLite header (or
//! every file named as a database, in [`SqliteMode::Off`] only those) and
//! captures it as described in the parent module; its `-wal`, `-shm` and
//! `-journal` companions are left out. For a restore that replaces live
//! data it says which files are databases, which companions they have,
//! and checkpoints a database completely before its companions go.

use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::apps::sqlite::{
    COMPANION_SUFFIXES, Captured, IMAGE_PREFIX, Image, MAGIC, SqliteMode, capture, companion_of,
    sniff,
};
use crate::error::{Error, Result};
use crate::format::snapshot::DatabaseInfo;
use crate::ops::backup::special::{Capture, CaptureFailure, Claim, SpecialFiles};

/// The page size assumed for a database named as one whose header could
/// not be read when the backup reached it: SQLite's default.
const DEFAULT_PAGE_SIZE: u32 = 4096;

/// SQLite databases for the engine's special-file hook (see the module
/// doc). The default captures every file with a SQLite header.
#[derive(Debug, Default)]
pub struct SqliteFiles {
    /// Whether files are claimed by their header, or only when named.
    mode: SqliteMode,
    /// An image captured before the backup (a `cairn watch` base).
    prepared: Captured,
}

impl SqliteFiles {
    /// Databases found as `mode` says, and those named in
    /// `BackupOptions::special_paths` whatever their header.
    #[must_use]
    pub fn new(mode: SqliteMode) -> Self {
        Self {
            mode,
            prepared: Captured::default(),
        }
    }

    /// The default hook: every file with a SQLite header is a database.
    #[must_use]
    pub fn hook() -> Arc<dyn SpecialFiles> {
        Arc::new(Self::default())
    }

    /// A hook that stores `image`, captured beforehand, for the database
    /// at the absolute path `path` instead of a capture made when the
    /// backup reaches it: the base of a `cairn watch` chain, which must be
    /// the image of one known point of the log.
    pub(crate) fn prepared(path: PathBuf, image: Image) -> Self {
        Self {
            mode: SqliteMode::Auto,
            prepared: Captured::new(path, image),
        }
    }
}

/// `image` of the database `path` as the walker stores it: cut in pages
/// (one chunk a page, so that a change to a few pages stores about those
/// pages), recorded with its row counts.
fn stored(path: &Path, image: Image, page_size: u32) -> Capture {
    let Image {
        file,
        len,
        tables,
        _tmp,
    } = image;
    Capture {
        file,
        len,
        pieces: usize::try_from(page_size).ok(),
        record: Some(DatabaseInfo {
            path: path.as_os_str().as_bytes().to_vec(),
            page_size,
            tables,
        }),
        keep: Box::new(_tmp),
    }
}

impl SpecialFiles for SqliteFiles {
    fn classify(&self, path: &Path, file: Option<&File>, named: bool) -> Option<Claim> {
        if !named && self.mode == SqliteMode::Off {
            return None;
        }
        let page_size = match file {
            Some(f) => sniff(f),
            None => crate::ops::backup::open_nofollow(path)
                .ok()
                .and_then(|f| sniff(&f)),
        };
        (named || page_size.is_some()).then_some(Claim { unit: page_size })
    }

    fn capture(
        &self,
        path: &Path,
        file: &File,
        claim: Claim,
        len: u64,
    ) -> std::result::Result<Capture, CaptureFailure> {
        let page_size = claim.unit;
        match capture(path, file, page_size) {
            // A database named with --sqlite-db whose header could not be
            // read at first: SQLite's default page size.
            Ok(image) => Ok(stored(path, image, page_size.unwrap_or(DEFAULT_PAGE_SIZE))),
            // Named as a database (a `sqlite` component, --sqlite-db) but
            // without SQLite's header: the profile names the wrong file;
            // storing it as a database backup would hide that.
            Err(why) if page_size.is_none() && len > 0 => {
                Err(CaptureFailure::Fatal(Error::NotADatabase {
                    path: path.to_path_buf(),
                    why,
                }))
            }
            Err(why) => Err(CaptureFailure::Raw(format!(
                "{} looks like a SQLite database but could not be captured consistently ({why}): stored as raw bytes, which may be a torn copy; check the database with `sqlite3 {} 'PRAGMA integrity_check'`, or turn SQLite capture off for it (sqlite mode off) to store it raw without this warning",
                path.display(),
                path.display()
            ))),
        }
    }

    fn take_prepared(&self, path: &Path) -> Option<Capture> {
        let image = self.prepared.take(path)?;
        let page_size = sniff(&image.file).unwrap_or(DEFAULT_PAGE_SIZE);
        Some(stored(path, image, page_size))
    }

    fn holds_prepared(&self, path: &Path) -> bool {
        self.prepared.holds(path)
    }

    fn companion_suffixes(&self) -> &[&[u8]] {
        &COMPANION_SUFFIXES
    }

    fn change_log_suffix(&self) -> Option<&[u8]> {
        Some(b"-wal")
    }

    fn vanishes_quietly(&self, name: &[u8]) -> bool {
        self.mode == SqliteMode::Auto && companion_of(name).is_some()
    }

    fn scratch_prefix(&self) -> Option<&[u8]> {
        Some(IMAGE_PREFIX.as_bytes())
    }

    fn is_special(&self, path: &Path) -> bool {
        is_sqlite(path)
    }

    fn settle(&self, path: &Path) -> Result<()> {
        checkpoint_fully(path)
    }

    fn companion_of<'n>(&self, name: &'n [u8]) -> Option<&'n [u8]> {
        companion_of(name)
    }
}

/// Whether the file at `path` starts with SQLite's header.
#[must_use]
pub fn is_sqlite(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 16];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| head == *MAGIC)
}

/// The `-wal`, `-shm` and `-journal` files of the database at `path`.
#[must_use]
pub fn companions(path: &Path) -> Vec<PathBuf> {
    COMPANION_SUFFIXES
        .iter()
        .map(|s| {
            let mut name = path.as_os_str().to_owned();
            name.push(std::ffi::OsStr::from_bytes(s));
            PathBuf::from(name)
        })
        .collect()
}

/// Checkpoints the database at `path` completely into its main file (and
/// rolls back a hot journal), so that its `-wal`/`-shm`/`-journal` hold
/// nothing the main file lacks and can be removed. Nothing to do when it
/// has none.
///
/// # Errors
/// [`Error::Busy`] when the database cannot be opened or the checkpoint
/// stays incomplete: a reader or writer holds the log (whatever SQLite
/// said, the remedy is to stop the application, as the message says).
pub fn checkpoint_fully(path: &Path) -> Result<()> {
    if companions(path).iter().all(|c| !c.exists()) {
        return Ok(());
    }
    let fail = |why: String| {
        Error::Busy(format!(
            "{} could not be checkpointed ({why}): its -wal would be lost with the old file; stop the application and restore again",
            path.display()
        ))
    };
    let conn = rusqlite::Connection::open(path).map_err(|e| fail(e.to_string()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(|e| fail(e.to_string()))?;
    let (busy, log, done): (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .map_err(|e| fail(e.to_string()))?;
    if busy != 0 || log != done {
        return Err(fail(format!(
            "{done} of {log} log frames copied, busy {busy}"
        )));
    }
    Ok(())
}

/// Checkpoints a WAL database into its main file, so that what is removed
/// with its `-wal` file is already in the file the safety snapshot holds.
/// Best effort: the safety snapshot captured the committed state anyway.
pub fn settle_database(path: &Path) {
    if let Ok(conn) = rusqlite::Connection::open(path) {
        let _ = conn.busy_timeout(std::time::Duration::from_secs(5));
        let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that holds the log back keeps the checkpoint from
    /// finishing: another process holds what the restore needs (Busy,
    /// HTTP 409), not a bad request.
    #[test]
    fn sqlite_a_checkpoint_a_reader_holds_back_is_busy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.db");
        let writer = rusqlite::Connection::open(&path).expect("open");
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
                 CREATE TABLE t (x); INSERT INTO t VALUES (1);",
            )
            .expect("fill");
        let reader = rusqlite::Connection::open(&path).expect("open");
        reader.execute_batch("BEGIN").expect("begin");
        let _: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("read");
        writer
            .execute_batch("INSERT INTO t VALUES (2)")
            .expect("a commit after the reader's snapshot");
        let e = checkpoint_fully(&path).expect_err("held back");
        assert_eq!(e.kind(), crate::error::ErrorKind::Busy, "{e}");
        assert!(
            e.to_string()
                .ends_with("stop the application and restore again"),
            "{e}"
        );
        reader.execute_batch("COMMIT").expect("commit");
        checkpoint_fully(&path).expect("nothing holds it back now");
    }
}
