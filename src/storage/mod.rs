//! Storage: moves bytes by name and knows no record type.
//!
//! The engine reaches repository files only through [`Backend`], so a new
//! store (object storage, a fault injector) is one more implementation of this
//! trait. A backend guarantees that [`Backend::write`] is atomic and durable
//! when it returns: a reader sees either no file or the whole file, never a
//! prefix, even across a crash.
//!
//! Besides the stores (`local`, `memory`, `s3`) live the wrappers around
//! any backend: `throttle` (a bandwidth limit), [`cache`] (a local copy of
//! what a remote repository is read for often), and, in tests only,
//! `faults`, which fails chosen operations, acts like object storage and
//! counts calls, so that tests of the layers above need not write their own
//! backend.

pub mod cache;

#[cfg(test)]
pub(crate) mod faults;
mod local;
mod memory;
#[cfg(feature = "s3")]
mod s3;
mod throttle;

pub use local::LocalBackend;
pub use memory::MemoryBackend;
#[cfg(feature = "s3")]
pub use s3::{AddressStyle, S3Backend, S3Location};
pub use throttle::Throttled;

use crate::error::{Error, Result};

/// The kinds of repository file, each in its own namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileKind {
    /// The single `config` file.
    Config,
    /// Key files under `keys/`.
    Key,
    /// Data packs under `data/`.
    Pack,
    /// Index files under `index/`.
    Index,
    /// Snapshot files under `snapshots/`.
    Snapshot,
    /// Lock files under `locks/`.
    Lock,
    /// Audit event files under `audit/`.
    Audit,
    /// WAL segment files under `wal/`.
    Wal,
}

impl FileKind {
    /// The directory (or, for the config, the file) name in the repository.
    #[must_use]
    pub fn dir(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Key => "keys",
            Self::Pack => "data",
            Self::Index => "index",
            Self::Snapshot => "snapshots",
            Self::Lock => "locks",
            Self::Audit => "audit",
            Self::Wal => "wal",
        }
    }

    /// Every kind that lives in a directory.
    pub const DIRS: [Self; 7] = [
        Self::Key,
        Self::Pack,
        Self::Index,
        Self::Snapshot,
        Self::Lock,
        Self::Audit,
        Self::Wal,
    ];
}

/// A file being written piece by piece that becomes visible under its name
/// only when committed, atomically and durably. Dropping it without
/// committing leaves nothing visible.
pub trait StagedFile: std::io::Write + Send {
    /// Makes the file durable and visible as `name` (which may be decided
    /// only now, from the content written).
    ///
    /// # Errors
    /// Fails when the storage refuses; then no file of that name exists.
    fn commit(self: Box<Self>, name: &str) -> Result<()>;
}

/// What [`Backend::list_locks_and_index`] found.
#[derive(Debug, Clone, Default)]
pub struct LocksAndIndex {
    /// Names and sizes under `locks/`.
    pub locks: Vec<(String, u64)>,
    /// Names and sizes under `index/`.
    pub index: Vec<(String, u64)>,
    /// True when both came from one listing in key order, where `index/`
    /// sorts before `locks/`: a prune that ended while the listing ran may
    /// then be missing from the lock part while its deletions are missing
    /// from the index part. Such an index listing may name only files that
    /// are gone, never hide a deletion from a reader that then reads every
    /// file it names from the storage (store-format.md §21).
    pub index_read_first: bool,
}

/// A temporary file a writer left in the storage: a local repository's
/// `.tmp-*` file of a write or a staged pack that never completed
/// (store-format.md §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Temporary {
    /// Its path below the repository, for example `data/.tmp-Ab12Cd`.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// How long ago it was last written (by its modification time; a
    /// file dated in the future counts as written now).
    pub idle: std::time::Duration,
}

/// The name of the config file within [`FileKind::Config`].
pub const CONFIG_NAME: &str = "config";

/// Byte storage for one repository.
pub trait Backend: Send + Sync {
    /// A human-readable location, for messages.
    fn location(&self) -> String;

    /// Prepares an empty repository layout.
    ///
    /// # Errors
    /// [`Error::RepoExists`] when a config is already there.
    fn create(&self) -> Result<()>;

    /// Names and sizes of all files of `kind` (in no particular order).
    ///
    /// # Errors
    /// Fails when the storage cannot be listed.
    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>>;

    /// The whole file.
    ///
    /// # Errors
    /// Fails when the file is missing or unreadable.
    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>>;

    /// `len` bytes from `offset`; a short file is an error, not a short read.
    ///
    /// # Errors
    /// Fails when the file is missing, unreadable or shorter than asked.
    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>>;

    /// `len` bytes from `offset` as a stream: for reading most of a large
    /// pack in one request without holding it in memory. A stream that ends
    /// early fails with [`std::io::ErrorKind::UnexpectedEof`]. The default
    /// reads the range whole.
    ///
    /// # Errors
    /// As [`Backend::read_range`], at the start or while reading.
    fn read_range_stream(
        &self,
        kind: FileKind,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Box<dyn std::io::Read + Send>> {
        let bytes = self.read_range(kind, name, offset, len)?;
        Ok(Box::new(std::io::Cursor::new(bytes)))
    }

    /// The size of one file.
    ///
    /// # Errors
    /// Fails when the file is missing.
    fn size(&self, kind: FileKind, name: &str) -> Result<u64>;

    /// Writes a whole file atomically and durably.
    ///
    /// # Errors
    /// Fails when the storage refuses; then no file of that name was created.
    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()>;

    /// Starts a file of `kind` whose name is given when it is committed, so
    /// that large files (packs) need not be held in memory.
    ///
    /// # Errors
    /// Fails when the storage cannot create a temporary file.
    fn stage(&self, kind: FileKind) -> Result<Box<dyn StagedFile>>;

    /// Removes a file.
    ///
    /// # Errors
    /// Fails when the file cannot be removed (a missing file is not an error).
    fn delete(&self, kind: FileKind, name: &str) -> Result<()>;

    /// The temporary files writers left in the storage (see
    /// [`Temporary`]). The default, for storage whose writes are single
    /// uploads that leave nothing behind, finds none.
    ///
    /// # Errors
    /// Fails when the storage cannot be listed.
    fn temporaries(&self) -> Result<Vec<Temporary>> {
        Ok(Vec::new())
    }

    /// Removes one of [`Backend::temporaries`] by its `path` (a missing
    /// file is not an error).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a path that does not name a temporary file;
    /// fails when the file cannot be removed.
    fn remove_temporary(&self, path: &str) -> Result<()> {
        Err(Error::invalid(format!(
            "{path} is not a temporary file of this storage"
        )))
    }

    /// The network requests made so far (retries included), for stores
    /// reached over a network; `None` for local ones.
    fn requests(&self) -> Option<u64> {
        None
    }

    /// Lists `locks/` and `index/` for a process that has just written its
    /// lock file (store-format.md §21). The default lists `locks/` first,
    /// then `index/`, so the index listing is as new as the lock listing;
    /// an object store may instead list both in one request (see
    /// `LocksAndIndex::index_read_first`).
    ///
    /// # Errors
    /// Fails when the storage cannot be listed.
    fn list_locks_and_index(&self) -> Result<LocksAndIndex> {
        let locks = self.list(FileKind::Lock)?;
        let index = self.list(FileKind::Index)?;
        Ok(LocksAndIndex {
            locks,
            index,
            index_read_first: false,
        })
    }

    /// Whether reading is slow or costly enough that the engine should keep
    /// a local cache of what it reads often (store-format.md §24).
    fn is_remote(&self) -> bool {
        self.requests().is_some()
    }
}

/// True when `location` names a repository by URL (`s3:…`) rather than by
/// a directory path.
#[must_use]
pub fn is_url(location: &std::path::Path) -> bool {
    location.as_os_str().as_encoded_bytes().starts_with(b"s3:")
}

/// The backend for a repository location: an `s3:` URL (see
/// `S3Location::parse`) or a local directory.
///
/// # Errors
/// A malformed URL, or an S3 client that cannot be set up; an `s3:` URL
/// in a build without the `s3` feature.
pub fn open_location(location: &std::path::Path) -> Result<std::sync::Arc<dyn Backend>> {
    if is_url(location) {
        let text = location.to_str().ok_or_else(|| {
            Error::invalid(format!(
                "repository '{}' is not valid UTF-8",
                location.display()
            ))
        })?;
        #[cfg(feature = "s3")]
        return Ok(std::sync::Arc::new(S3Backend::new(S3Location::parse(
            text,
        )?)?));
        #[cfg(not(feature = "s3"))]
        return Err(Error::invalid(format!(
            "repository '{text}' is on object storage, and this cairn was built without S3 support: build it with the `s3` feature (on by default)"
        )));
    } else {
        Ok(std::sync::Arc::new(LocalBackend::new(location)))
    }
}

/// Rejects names that could escape the repository or collide with
/// temporary files: names are 64 lowercase hex digits (or `config`).
pub(crate) fn check_name(kind: FileKind, name: &str) -> Result<()> {
    let ok = if kind == FileKind::Config {
        name == CONFIG_NAME
    } else {
        name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "'{name}' is not a valid {} file name",
            kind.dir()
        )))
    }
}

impl Error {
    /// True for a backend error whose cause is a missing file.
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Backend { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}
