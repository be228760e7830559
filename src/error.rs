//! The library's error type.
//!
//! Variants carry the object they are about (a path, a pack id, a blob id) so
//! that the command line can print one line naming the thing and saying what
//! to do, and map the kind of failure to an exit code. Messages are lowercase
//! and have no trailing period.

use std::io;
use std::path::{Path, PathBuf};

/// Result with cairn's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in cairn's engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No repository exists at the location.
    #[error(
        "no repository at {location}: create one with `cairn init`, or point --repo / CAIRN_REPO at an existing one"
    )]
    RepoNotFound {
        /// Where we looked.
        location: String,
    },
    /// `init` was asked to create a repository where one exists.
    #[error("a repository already exists at {location}")]
    RepoExists {
        /// Where it is.
        location: String,
    },
    /// The repository uses a format this build does not understand.
    #[error(
        "{location} is a cairn repository of format version {found}, but this cairn reads version {supported}: use a cairn release that supports version {found}"
    )]
    UnsupportedVersion {
        /// Where the repository is.
        location: String,
        /// The version in its config.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// No key file opened with the given password.
    #[error("wrong password: none of the {keys} key(s) of {location} opens with it")]
    WrongPassword {
        /// Where the repository is.
        location: String,
        /// How many key files were tried.
        keys: usize,
    },
    /// A password is needed but none was given and there is no terminal.
    #[error(
        "{location} needs a password: set CAIRN_PASSWORD, or pass --password-file or --password-command"
    )]
    NoPassword {
        /// Where the repository is.
        location: String,
    },
    /// The password source named (a password file, a password command)
    /// gave no password: it is missing, unreadable or failed.
    #[error("{0}")]
    PasswordSource(String),
    /// A stored object failed a check (hash, authentication tag, decoding).
    #[error("{object} is damaged: {reason}")]
    Corrupt {
        /// The object, for example `pack 3fa2… (data/3f/3fa2…)`.
        object: String,
        /// What check failed.
        reason: String,
    },
    /// Stored data an operation needs is damaged or missing, and the
    /// operation stopped rather than work around it (prune will not delete
    /// what it cannot prove unused). The message names the object and says
    /// what to do.
    #[error("{0}")]
    Damaged(String),
    /// A blob is referenced but no index knows it.
    #[error("blob {id} is not in any index (its pack is missing or unindexed)")]
    BlobNotIndexed {
        /// The blob.
        id: crate::id::BlobId,
    },
    /// A repository file could not be read or written.
    #[error("repository {op} of {path} failed: {source}")]
    Backend {
        /// What we were doing: read, write, list, delete.
        op: &'static str,
        /// The repository file.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A source file could not be read during backup.
    #[error("cannot read {}: {source}; fix its permissions or leave it out with --exclude", path.display())]
    SourceRead {
        /// The source path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A stream being backed up (standard input, a command's output)
    /// failed: the command could not be started, exited non-zero or was
    /// killed, or the stream could not be read. No snapshot was saved.
    #[error("{stream} {problem}; no snapshot was saved: fix it and run the backup again")]
    Stream {
        /// What the stream is: `standard input`, or the command line.
        stream: String,
        /// What went wrong, with the command's last lines of stderr.
        problem: String,
    },
    /// A restore target could not be written.
    #[error("cannot write {}: {source}", path.display())]
    TargetWrite {
        /// The target path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The stream a command writes to (`dump`'s output) failed, for
    /// example a pipe whose reader went away.
    #[error("cannot write the output: {source}")]
    Output {
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A reference (a snapshot id or `latest`, a path in a snapshot, a
    /// table, a component, a database) matched nothing. The message names
    /// the reference.
    #[error("{0}")]
    NotFound(String),
    /// A reference matched more than one thing (a snapshot id prefix that
    /// is too short). The message names the reference.
    #[error("{0}")]
    Ambiguous(String),
    /// A SQLite database could not be opened, read or written.
    #[error("{doing} {}: {source}", database.display())]
    Sqlite {
        /// What cairn was doing, for example `cannot read the database`.
        doing: String,
        /// The database file.
        database: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// Another process holds a lock that conflicts with this operation.
    #[error(
        "cannot {operation}: the repository is locked ({holders}); wait for it, pass --retry-lock DURATION to wait here, or if that process is gone run `cairn unlock`"
    )]
    Locked {
        /// What this process wanted to do.
        operation: String,
        /// The conflicting locks, described.
        holders: String,
    },
    /// This process's lock was not refreshed in time, so others may have
    /// ignored it; nothing that depends on it was written.
    #[error(
        "this process's repository lock was last refreshed {age_secs}s ago (the machine slept, or the repository could not be written), so another process may have ignored it: stopped before writing the snapshot; run the command again"
    )]
    LockLost {
        /// Seconds since the lock file was written.
        age_secs: i64,
    },
    /// An alert could not be delivered to its command or URL.
    #[error(
        "cannot deliver the {kind} alert: {problem}; check the notify command or URL (the alert is still reported here)"
    )]
    Notify {
        /// The alert's kind: `failure`, `stale`, `low_space`.
        kind: &'static str,
        /// Each target that failed and why.
        problem: String,
    },
    /// An argument, option, profile setting or request is not acceptable.
    /// The message names the input and what to do.
    #[error("{0}")]
    Invalid(String),
}

/// The kind of a failure: what the command line's exit codes and the HTTP
/// API's statuses are chosen by, each in one table (`cli/`, `server/`),
/// never by the text of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// An argument, option, profile or request that is not acceptable.
    InvalidInput,
    /// A reference that matches nothing.
    NotFound,
    /// A reference that matches more than one thing.
    Ambiguous,
    /// No repository at the location given.
    NoRepository,
    /// A repository already exists where one was to be created.
    AlreadyExists,
    /// The repository is of a format version this build does not read.
    UnsupportedVersion,
    /// The password is missing or wrong, or its source failed.
    Password,
    /// Another process's lock conflicts with the operation, or this
    /// process's own lock was lost.
    Locked,
    /// Stored data is damaged or missing.
    Damaged,
    /// The repository's storage could not be read or written.
    Storage,
    /// A file on this machine could not be read or written (a source, a
    /// restore target, the output).
    Io,
    /// A SQLite database could not be opened, read or written.
    Database,
    /// A stream being backed up (standard input, a command) failed.
    Stream,
    /// An alert could not be delivered.
    Notify,
}

impl From<crate::id::ParseIdError> for Error {
    fn from(e: crate::id::ParseIdError) -> Self {
        Self::Invalid(e.to_string())
    }
}

impl Error {
    /// An invalid-input error with the given message.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }

    /// A damaged-object error.
    pub fn corrupt(object: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Corrupt {
            object: object.into(),
            reason: reason.into(),
        }
    }

    /// A source-read error for `path`.
    pub fn source_read(path: &Path, source: io::Error) -> Self {
        Self::SourceRead {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A target-write error for `path`.
    pub fn target_write(path: &Path, source: io::Error) -> Self {
        Self::TargetWrite {
            path: path.to_path_buf(),
            source,
        }
    }

    /// True when the error means stored data is damaged or missing, as
    /// opposed to a usage or environment problem.
    #[must_use]
    pub fn is_damage(&self) -> bool {
        self.kind() == ErrorKind::Damaged
    }

    /// A SQLite error of `database`, while `doing` (for example `cannot
    /// read`).
    pub fn sqlite(doing: impl Into<String>, database: &Path, source: rusqlite::Error) -> Self {
        Self::Sqlite {
            doing: doing.into(),
            database: database.to_path_buf(),
            source,
        }
    }

    /// What kind of failure this is.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::RepoNotFound { .. } => ErrorKind::NoRepository,
            Self::RepoExists { .. } => ErrorKind::AlreadyExists,
            Self::UnsupportedVersion { .. } => ErrorKind::UnsupportedVersion,
            Self::WrongPassword { .. } | Self::NoPassword { .. } | Self::PasswordSource(_) => {
                ErrorKind::Password
            }
            Self::Corrupt { .. } | Self::Damaged(_) | Self::BlobNotIndexed { .. } => {
                ErrorKind::Damaged
            }
            Self::Backend { .. } => ErrorKind::Storage,
            Self::SourceRead { .. } | Self::TargetWrite { .. } | Self::Output { .. } => {
                ErrorKind::Io
            }
            Self::Stream { .. } => ErrorKind::Stream,
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::Ambiguous(_) => ErrorKind::Ambiguous,
            Self::Sqlite { .. } => ErrorKind::Database,
            Self::Locked { .. } | Self::LockLost { .. } => ErrorKind::Locked,
            Self::Notify { .. } => ErrorKind::Notify,
            Self::Invalid(_) => ErrorKind::InvalidInput,
        }
    }
}
