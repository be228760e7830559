//! The hook through which files that are more than their bytes reach the
//! generic engine: the backup walker and the protections of a live
//! restore (`crate::ops::protect`).
//!
//! A live database copied byte by byte is a torn image, and its
//! companion files (SQLite's `-wal`, `-shm`, `-journal`) hold state that
//! belongs to it. The walker knows nothing of that: for each regular file
//! it asks a [`SpecialFiles`] hook, when the caller gave one, whether the
//! file is special ([`SpecialFiles::classify`]) and then stores the
//! [`Capture`] the hook makes of it instead of the raw bytes, with the
//! [`DatabaseInfo`] the hook reports in the snapshot's `databases`. The
//! hook also names the companions that are not stored beside a captured
//! file, and the one whose changes the file's own stat does not show. A
//! restore that replaces live files asks the same hook which of them are
//! special, what their companions are, and to settle them before they go.
//!
//! The SQLite capture implements this trait (`SqliteFiles`, in
//! src/apps/sqlite/special.rs); this module, like the rest of `ops/`,
//! names no application.
//!
//! Cost: the walker asks the hook only where a file is read (one call per
//! file read), per directory entry for its companions, and never when no
//! hook is given.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::format::snapshot::DatabaseInfo;

/// What a hook learnt about a file it claimed, handed back to
/// [`SpecialFiles::capture`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Claim {
    /// The unit the file is organised in, read from its header (a
    /// database's page size); `None` when the file was named as special
    /// but its header could not be read as one.
    pub unit: Option<u32>,
}

/// The image of a special file to store instead of its raw bytes.
pub struct Capture {
    /// The image, positioned at its start.
    pub file: File,
    /// Its length.
    pub len: u64,
    /// Cut the image into pieces of this many bytes (a database's pages,
    /// so that a change to a few pages stores about those pages) instead
    /// of content-defined chunks.
    pub pieces: Option<usize>,
    /// The record of the capture to list in the snapshot's `databases`.
    pub record: Option<DatabaseInfo>,
    /// Dropped once the image is stored (the temporary file holding it).
    pub keep: Box<dyn Send>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("len", &self.len)
            .field("pieces", &self.pieces)
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

/// Why a claimed file could not be captured.
#[derive(Debug)]
pub enum CaptureFailure {
    /// The file is not what the caller named it as: the backup fails with
    /// this error rather than store something else under that name.
    Fatal(Error),
    /// The file is stored as raw bytes, with its companions, and the
    /// backup warns with this message.
    Raw(String),
}

/// Files the engine must not treat as plain bytes: how to recognise them,
/// capture them for a backup, and settle them before a restore replaces
/// them. See the module doc.
///
/// Methods are called from the walker's worker threads.
pub trait SpecialFiles: Send + Sync + std::fmt::Debug {
    /// Whether the regular file `path` is to be captured rather than
    /// stored as bytes. `named`: the caller listed it in
    /// [`crate::ops::backup::BackupOptions::special_paths`]. `file` is the
    /// file the walker opened for reading (read it at an offset, so that
    /// its position stays at the start), or `None` where the walker has
    /// not opened it: the hook then opens it itself, without following a
    /// symlink, if it needs to look.
    fn classify(&self, path: &Path, file: Option<&File>, named: bool) -> Option<Claim>;

    /// Captures the file `path` that [`Self::classify`] claimed; `file` is
    /// the file the walker opened (the capture must fail if `path` is no
    /// longer that file) and `len` its length when it was examined.
    ///
    /// # Errors
    /// [`CaptureFailure`], which says whether the backup stops or stores
    /// the raw bytes with a warning.
    fn capture(
        &self,
        path: &Path,
        file: &File,
        claim: Claim,
        len: u64,
    ) -> Result<Capture, CaptureFailure>;

    /// An image of `path` captured before the backup, which the walker
    /// stores without opening the file itself (at most once: it is taken).
    fn take_prepared(&self, _path: &Path) -> Option<Capture> {
        None
    }

    /// Whether an image of `path` captured before the backup waits to be
    /// taken: the file is then not opened to be looked at.
    fn holds_prepared(&self, _path: &Path) -> bool {
        false
    }

    /// The suffixes of the companion files a special file `NAME` keeps
    /// beside it (`NAME-wal`, ...): they are not stored when the file is
    /// captured, only when it is stored as raw bytes.
    fn companion_suffixes(&self) -> &[&[u8]] {
        &[]
    }

    /// The suffix of the companion that takes a special file's changes
    /// without touching the file itself (SQLite's `-wal`): the file is
    /// unchanged since a backup only if that companion was last modified
    /// before it too.
    fn change_log_suffix(&self) -> Option<&[u8]> {
        None
    }

    /// Whether a directory entry `name` that vanished between the listing
    /// and its stat is expected to (a companion that lives for one
    /// transaction): then no warning is given.
    fn vanishes_quietly(&self, _name: &[u8]) -> bool {
        false
    }

    /// The name prefix of the scratch files captures are staged in, in
    /// the system temporary directory (`std::env::temp_dir()`): when that
    /// directory is backed up, they are the backup's own, not data.
    fn scratch_prefix(&self) -> Option<&[u8]> {
        None
    }

    /// Whether the existing file at `path`, about to be replaced by a
    /// restore, is special by its content.
    fn is_special(&self, _path: &Path) -> bool {
        false
    }

    /// Brings what the companions of the special file `path` hold into
    /// the file itself, so that they can be removed before a restore
    /// replaces it (the new file must not meet an old log).
    ///
    /// # Errors
    /// When that cannot be done; the file must then not be replaced.
    fn settle(&self, _path: &Path) -> crate::error::Result<()> {
        Ok(())
    }

    /// The database a companion file's name belongs to: `app.db` for
    /// `app.db-wal` (see [`Self::companion_suffixes`]).
    fn companion_of<'n>(&self, name: &'n [u8]) -> Option<&'n [u8]> {
        self.companion_suffixes()
            .iter()
            .find_map(|s| name.strip_suffix(*s))
            .filter(|base| !base.is_empty())
    }

    /// The companion files of the special file `path`.
    fn companions(&self, path: &Path) -> Vec<PathBuf> {
        self.companion_suffixes()
            .iter()
            .map(|s| {
                use std::os::unix::ffi::OsStrExt;
                let mut name = path.as_os_str().to_owned();
                name.push(std::ffi::OsStr::from_bytes(s));
                PathBuf::from(name)
            })
            .collect()
    }
}

/// A hook that claims no file: every file is its bytes, for the engine's
/// own tests, which know no application.
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PlainFiles;

#[cfg(test)]
impl SpecialFiles for PlainFiles {
    fn classify(&self, _path: &Path, _file: Option<&File>, _named: bool) -> Option<Claim> {
        None
    }

    fn capture(
        &self,
        path: &Path,
        _file: &File,
        _claim: Claim,
        _len: u64,
    ) -> Result<Capture, CaptureFailure> {
        Err(CaptureFailure::Raw(format!(
            "{} was not claimed as special",
            path.display()
        )))
    }
}
