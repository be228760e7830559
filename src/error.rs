//! The library's error type.
//!
//! Variants carry the object they are about (a path, a pack id, a blob id) so
//! that the command line can print one line naming the thing and saying what
//! to do, and map the kind of failure to an exit code. Messages are lowercase
//! and have no trailing period.
//!
//! A message states what failed; it does not name the command line's flags
//! or commands, which a program using the library or a client of the HTTP
//! API does not have. The command line adds that advice when it prints an
//! error (`cli/advice.rs`), choosing it by variant.

use std::io;
use std::path::{Path, PathBuf};

/// Result with cairn's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in cairn's engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No repository exists at the location.
    #[error("no repository at {location}")]
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
    #[error("{location} needs a password")]
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
    #[error("cannot read {}: {source}", path.display())]
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
    /// A file or directory of cairn's own on this machine (the daemon's
    /// state and lock files, the server's tokens file) could not be read or
    /// written. Sources and restore targets have variants of their own.
    #[error("{doing} {}: {source}", path.display())]
    Io {
        /// What cairn was doing, for example `cannot read the daemon state`.
        doing: String,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The HTTP server cannot listen on its address (taken, not local, not
    /// allowed).
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address and port.
        address: std::net::SocketAddr,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A path in a snapshot names something other than a regular file
    /// where file contents are wanted (`dump`).
    #[error("{}", not_a_file(path, entry))]
    NotAFile {
        /// The path, as shown to the user.
        path: String,
        /// What it is instead: `dir`, `symlink`, … (an entry type's name).
        entry: &'static str,
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
    ///
    /// The message is `doing`, SQLite's error, then `outcome`. `doing`
    /// names the database as the person who asked knows it, which is not
    /// always `database`: a snapshot's database is read from a temporary
    /// image, an export is loaded into a scratch database.
    #[error("{doing}: {source}{outcome}")]
    Sqlite {
        /// What cairn was doing, naming the database or table, for example
        /// `cannot open /srv/app.db` or `reading table users`.
        doing: String,
        /// The database file SQLite had open.
        database: PathBuf,
        /// SQLite's error (boxed: it is large, and every `Result` of the
        /// crate carries this type).
        #[source]
        source: Box<rusqlite::Error>,
        /// What the failure means for the operation, after SQLite's error
        /// (`; nothing was restored`), or nothing.
        outcome: &'static str,
    },
    /// A SQLite database could not be captured as the image of one
    /// transaction where only such an image will do (the base of a
    /// watcher's chain). The message names the database and says why.
    #[error("{0}")]
    Capture(String),
    /// Another process has a database open that the operation would
    /// replace under it (a live restore), and the operation was not
    /// forced.
    #[error(
        "{} is open in {users}: stop the application first (it would go on using the old database)",
        path.display()
    )]
    InUse {
        /// The database.
        path: PathBuf,
        /// The processes that have it open, described.
        users: String,
    },
    /// Another process holds or changed something the operation needs: an
    /// application kept its database's write lock or log, or changed the
    /// database under a watcher. The message names the database and says
    /// what to do.
    #[error("{0}")]
    Busy(String),
    /// A file named as a SQLite database (a profile's `sqlite`
    /// component, a path a backup was told is one) does not have SQLite's
    /// header.
    #[error(
        "{} is named as a SQLite database but is not one (its header is not SQLite's: {why})",
        path.display()
    )]
    NotADatabase {
        /// The file.
        path: PathBuf,
        /// What reading it as a database said.
        why: String,
    },
    /// A file of a database that a watcher follows (the database, its
    /// `-wal` or `-shm`) could not be read.
    #[error(
        "cannot read {}: {source}; the watcher reads the database, its -wal and its -shm: run it as a user that may read and write them (the application's)",
        path.display()
    )]
    WatchRead {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A component was asked of a snapshot that is not an application
    /// snapshot (it records no components).
    #[error("snapshot {} is not an application snapshot", snapshot.short())]
    NotAppSnapshot {
        /// The snapshot.
        snapshot: crate::id::SnapshotId,
        /// Whether the component was to be restored in place (rather than
        /// into a target directory).
        in_place: bool,
    },
    /// An application snapshot has no component of the name asked for.
    #[error("{}", no_component(snapshot, component, has, sibling.as_ref()))]
    NoComponent {
        /// The snapshot.
        snapshot: crate::id::SnapshotId,
        /// The component asked for.
        component: String,
        /// The components it has.
        has: Vec<String>,
        /// A snapshot of the same application taken with it (by the same
        /// snap) that has the component: a dump command's stream.
        sibling: Option<crate::id::SnapshotId>,
    },
    /// A component to restore in place is a directory in the snapshot;
    /// an in-place restore replaces files only.
    #[error(
        "{} is a directory in snapshot {}: in-place restore replaces files only",
        path.display(),
        snapshot.short()
    )]
    InPlaceDirectory {
        /// The directory.
        path: PathBuf,
        /// The snapshot.
        snapshot: crate::id::SnapshotId,
    },
    /// A dump command component of a snapshot is no longer a dump command
    /// in the application's profile, so it has no restore command.
    #[error("component {component} is no longer a dump command in {}", profile.display())]
    NotADumpCommand {
        /// The component.
        component: String,
        /// The profile.
        profile: PathBuf,
        /// The snapshot holding the dump.
        snapshot: crate::id::SnapshotId,
    },
    /// `error`, which the caller can get past by changing the request as
    /// `hint` says. The message is `error`'s; a front end adds the hint in
    /// its own terms (the CLI names its flag).
    #[error("{error}")]
    Hinted {
        /// The error.
        error: Box<Error>,
        /// What the caller can change.
        hint: Hint,
    },
    /// Restoring a dump command component needs the application's profile
    /// (its restore command), and none was given.
    #[error(
        "component {component} is a database dump: restoring it runs the restore command of the application's cairn.toml"
    )]
    NoProfile {
        /// The component.
        component: String,
    },
    /// A dump command component has no restore command in the
    /// application's profile.
    #[error(
        "component {component} has no `restore` command in {}: add one (e.g. restore = [\"psql\", \"shop\"])",
        profile.display()
    )]
    NoRestoreCommand {
        /// The component.
        component: String,
        /// The profile.
        profile: PathBuf,
        /// The snapshot holding the dump.
        snapshot: crate::id::SnapshotId,
        /// The dump's path in the snapshot.
        dump: String,
    },
    /// A component's restore command could not be started, failed, or
    /// could not be given the dump. The safety snapshot taken first holds
    /// what the command was to replace.
    #[error(
        "restoring component {component} with `{command}` failed: {problem}; safety snapshot {} holds the database as it was before",
        safety.short()
    )]
    RestoreCommand {
        /// The component.
        component: String,
        /// The restore command, as a line.
        command: String,
        /// What went wrong.
        problem: String,
        /// The safety snapshot.
        safety: crate::id::SnapshotId,
    },
    /// An in-place restore failed after it had replaced some files; the
    /// safety snapshot holds the component as it was. Of the kind of the
    /// failure, whose message this one begins with (so the failure is not
    /// also its `source()`, which would say it twice).
    #[error(
        "{error}; {replaced} file(s) were replaced before it; safety snapshot {} holds the component as it was",
        safety.short()
    )]
    PartlyRestored {
        /// The failure.
        error: Box<Error>,
        /// How many files were replaced before it.
        replaced: usize,
        /// The safety snapshot.
        safety: crate::id::SnapshotId,
    },
    /// Another process holds a lock that conflicts with this operation.
    #[error("cannot {operation}: the repository is locked ({holders})")]
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
    /// Something failed that no input explains and no user can fix by
    /// changing what they asked: the system refused a thread, a runtime or
    /// random bytes, or cairn broke one of its own invariants (a bug).
    #[error("{0}")]
    Internal(String),
    /// An argument, option, profile setting or request is not acceptable.
    /// The message names the input and what to do.
    #[error("{0}")]
    Invalid(String),
}

/// The message of [`Error::NoComponent`].
fn no_component(
    snapshot: &crate::id::SnapshotId,
    component: &str,
    has: &[String],
    sibling: Option<&crate::id::SnapshotId>,
) -> String {
    let mut msg = format!(
        "snapshot {} has no component '{component}'; it has: {}",
        snapshot.short(),
        has.join(", ")
    );
    if let Some(s) = sibling {
        msg.push_str(&format!(
            "; snapshot {} of the same application, taken with it, has it",
            s.short()
        ));
    }
    msg
}

/// The message of [`Error::NotAFile`].
fn not_a_file(path: &str, entry: &str) -> String {
    if entry == "dir" {
        format!("{path} is a directory, and dump writes one file")
    } else {
        format!("{path} is a {entry}, not a regular file: dump writes file contents only")
    }
}

/// What a caller can change in its request to get past an error
/// ([`Error::Hinted`]). The library states the problem; a front end says
/// how to change the request in its own terms, so that no library message
/// names a command-line flag that a program or an API client does not
/// have.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Hint {
    /// Name the host whose data to use (several hosts have it).
    ChooseHost,
    /// Allow the existing target to be replaced.
    Overwrite,
    /// Name a database stored as a plain file (the snapshot captured none).
    NameRawDatabase,
    /// Name one of the snapshot's databases.
    ChooseDatabase,
    /// Allow the rows already in the target's tables to be replaced.
    DropExisting,
    /// Allow rows that refer to rows of `parent` that are not there.
    IgnoreForeignKeys {
        /// The table referred to.
        parent: String,
    },
    /// Name one table, or write one file per table.
    ChooseTable,
    /// Export to a directory, which writes the schema as well.
    ExportWithSchema,
    /// Give retention rules (keep the last N, daily, …).
    KeepRules,
    /// Open the repository with its lock (a lock-free open only reads).
    TakeLock,
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
    /// Another process's lock conflicts with the operation.
    Locked,
    /// Another process holds or changed something the operation needs
    /// (a database an application has open, its write lock or its log):
    /// waiting, stopping that process or forcing is the fix, not changing
    /// the request.
    Busy,
    /// This process's own lock was not refreshed in time, so others may
    /// have ignored it: running again is the fix, not waiting.
    LockLost,
    /// Stored data is damaged or missing.
    Damaged,
    /// The repository's storage could not be read or written.
    Storage,
    /// A file or other resource on this machine could not be used (a
    /// source, a restore target, the output, a file of cairn's own, the
    /// server's address).
    Io,
    /// A SQLite database could not be opened, read, written or captured.
    Database,
    /// A stream being backed up (standard input, a command) or restored
    /// (a component's restore command) failed.
    Stream,
    /// An alert could not be delivered.
    Notify,
    /// The system or cairn itself failed ([`Error::Internal`]).
    Internal,
}

impl From<crate::id::ParseIdError> for Error {
    fn from(e: crate::id::ParseIdError) -> Self {
        Self::Invalid(e.to_string())
    }
}

impl Error {
    /// This error with `hint`: what the caller can change to get past it.
    #[must_use]
    pub fn hinted(self, hint: Hint) -> Self {
        Self::Hinted {
            error: Box::new(self),
            hint,
        }
    }

    /// The hint of a [`Error::Hinted`] error.
    #[must_use]
    pub fn hint(&self) -> Option<&Hint> {
        match self {
            Self::Hinted { hint, .. } => Some(hint),
            _ => None,
        }
    }

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

    /// An error of a file of cairn's own at `path`, while `doing` (for
    /// example `cannot read the daemon state`).
    pub fn io(doing: impl Into<String>, path: &Path, source: io::Error) -> Self {
        Self::Io {
            doing: doing.into(),
            path: path.to_path_buf(),
            source,
        }
    }

    /// An internal failure with the given message.
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::Internal(msg.into())
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
    /// open /srv/app.db`: see [`Error::Sqlite`]).
    pub fn sqlite(doing: impl Into<String>, database: &Path, source: rusqlite::Error) -> Self {
        Self::Sqlite {
            doing: doing.into(),
            database: database.to_path_buf(),
            source: Box::new(source),
            outcome: "",
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
            Self::SourceRead { .. }
            | Self::TargetWrite { .. }
            | Self::Output { .. }
            | Self::Io { .. }
            | Self::WatchRead { .. }
            | Self::Listen { .. } => ErrorKind::Io,
            Self::Stream { .. } | Self::RestoreCommand { .. } => ErrorKind::Stream,
            Self::NotFound(_) | Self::NoComponent { .. } => ErrorKind::NotFound,
            Self::Ambiguous(_) => ErrorKind::Ambiguous,
            Self::Sqlite { .. } | Self::Capture(_) => ErrorKind::Database,
            Self::InUse { .. } | Self::Busy(_) => ErrorKind::Busy,
            Self::PartlyRestored { error, .. } => error.kind(),
            Self::Locked { .. } => ErrorKind::Locked,
            Self::LockLost { .. } => ErrorKind::LockLost,
            Self::Notify { .. } => ErrorKind::Notify,
            Self::Internal(_) => ErrorKind::Internal,
            Self::Invalid(_)
            | Self::NotAFile { .. }
            | Self::NotADatabase { .. }
            | Self::NotAppSnapshot { .. }
            | Self::InPlaceDirectory { .. }
            | Self::NotADumpCommand { .. }
            | Self::NoProfile { .. }
            | Self::NoRestoreCommand { .. } => ErrorKind::InvalidInput,
            Self::Hinted { error, .. } => error.kind(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_error() -> io::Error {
        io::Error::from(io::ErrorKind::PermissionDenied)
    }

    /// One error of every variant, with the kind its documentation gives.
    /// One piece on purpose: a table with a row per variant, read against
    /// the enum, which splitting would only scatter.
    fn examples() -> Vec<(Error, ErrorKind)> {
        let location = || "/srv/repo".to_owned();
        let path = Path::new("/srv/file");
        let snapshot = || crate::id::SnapshotId([7; 32]);
        vec![
            (
                Error::RepoNotFound {
                    location: location(),
                },
                ErrorKind::NoRepository,
            ),
            (
                Error::RepoExists {
                    location: location(),
                },
                ErrorKind::AlreadyExists,
            ),
            (
                Error::UnsupportedVersion {
                    location: location(),
                    found: 9,
                    supported: 1,
                },
                ErrorKind::UnsupportedVersion,
            ),
            (
                Error::WrongPassword {
                    location: location(),
                    keys: 2,
                },
                ErrorKind::Password,
            ),
            (
                Error::NoPassword {
                    location: location(),
                },
                ErrorKind::Password,
            ),
            (
                Error::PasswordSource("the password file is missing".into()),
                ErrorKind::Password,
            ),
            (Error::corrupt("pack 3fa2", "bad tag"), ErrorKind::Damaged),
            (Error::Damaged("index 0a1b".into()), ErrorKind::Damaged),
            (
                Error::BlobNotIndexed {
                    id: crate::id::BlobId::hash_of(b"x"),
                },
                ErrorKind::Damaged,
            ),
            (
                Error::Backend {
                    op: "read",
                    path: "data/3f/3fa2".into(),
                    source: io_error(),
                },
                ErrorKind::Storage,
            ),
            (Error::source_read(path, io_error()), ErrorKind::Io),
            (
                Error::Stream {
                    stream: "standard input".into(),
                    problem: "could not be read".into(),
                },
                ErrorKind::Stream,
            ),
            (Error::target_write(path, io_error()), ErrorKind::Io),
            (Error::Output { source: io_error() }, ErrorKind::Io),
            (
                Error::io("cannot read the daemon state", path, io_error()),
                ErrorKind::Io,
            ),
            (
                Error::Listen {
                    address: std::net::SocketAddr::from(([127, 0, 0, 1], 8080)),
                    source: io_error(),
                },
                ErrorKind::Io,
            ),
            (
                Error::NotAFile {
                    path: "/srv".into(),
                    entry: "dir",
                },
                ErrorKind::InvalidInput,
            ),
            (
                Error::NotFound("no snapshot matches 'ab'".into()),
                ErrorKind::NotFound,
            ),
            (
                Error::Ambiguous("'a' matches several snapshots".into()),
                ErrorKind::Ambiguous,
            ),
            (
                Error::sqlite(
                    "cannot read the database",
                    path,
                    rusqlite::Error::InvalidQuery,
                ),
                ErrorKind::Database,
            ),
            (
                Error::Capture("/srv/app.db: copying the base: the disk is full".into()),
                ErrorKind::Database,
            ),
            (
                Error::InUse {
                    path: path.to_path_buf(),
                    users: "process 4242 (node)".into(),
                },
                ErrorKind::Busy,
            ),
            (
                Error::Busy("/srv/app.db: the application kept the write lock".into()),
                ErrorKind::Busy,
            ),
            (
                Error::NotADatabase {
                    path: path.to_path_buf(),
                    why: "file is not a database".into(),
                },
                ErrorKind::InvalidInput,
            ),
            (
                Error::WatchRead {
                    path: path.to_path_buf(),
                    source: io_error(),
                },
                ErrorKind::Io,
            ),
            (
                Error::NotAppSnapshot {
                    snapshot: snapshot(),
                    in_place: true,
                },
                ErrorKind::InvalidInput,
            ),
            (
                Error::NoComponent {
                    snapshot: snapshot(),
                    component: "notes".into(),
                    has: vec!["code".into(), "db".into()],
                    sibling: Some(snapshot()),
                },
                ErrorKind::NotFound,
            ),
            (
                Error::InPlaceDirectory {
                    path: path.to_path_buf(),
                    snapshot: snapshot(),
                },
                ErrorKind::InvalidInput,
            ),
            (
                Error::NotADumpCommand {
                    component: "notes".into(),
                    profile: path.to_path_buf(),
                    snapshot: snapshot(),
                },
                ErrorKind::InvalidInput,
            ),
            (
                Error::NoProfile {
                    component: "notes".into(),
                },
                ErrorKind::InvalidInput,
            ),
            (
                Error::Ambiguous("'app.db' was watched on several hosts (a, b)".into())
                    .hinted(Hint::ChooseHost),
                ErrorKind::Ambiguous,
            ),
            (
                Error::NoRestoreCommand {
                    component: "notes".into(),
                    profile: path.to_path_buf(),
                    snapshot: snapshot(),
                    dump: "/notes.txt".into(),
                },
                ErrorKind::InvalidInput,
            ),
            (
                Error::RestoreCommand {
                    component: "notes".into(),
                    command: "psql shop".into(),
                    problem: "it exited with exit status: 1".into(),
                    safety: snapshot(),
                },
                ErrorKind::Stream,
            ),
            (
                Error::PartlyRestored {
                    error: Box::new(Error::Damaged("pack 3fa2 is missing".into())),
                    replaced: 1,
                    safety: snapshot(),
                },
                ErrorKind::Damaged,
            ),
            (
                Error::PartlyRestored {
                    error: Box::new(Error::target_write(path, io_error())),
                    replaced: 1,
                    safety: snapshot(),
                },
                ErrorKind::Io,
            ),
            (
                Error::Locked {
                    operation: "backup".into(),
                    holders: "an exclusive lock of prune".into(),
                },
                ErrorKind::Locked,
            ),
            (Error::LockLost { age_secs: 900 }, ErrorKind::LockLost),
            (
                Error::Notify {
                    kind: "failure",
                    problem: "the URL did not answer".into(),
                },
                ErrorKind::Notify,
            ),
            (
                Error::internal("a pack writer thread panicked"),
                ErrorKind::Internal,
            ),
            (Error::invalid("tag ''"), ErrorKind::InvalidInput),
        ]
    }

    #[test]
    fn every_variant_has_its_documented_kind() {
        for (e, kind) in examples() {
            assert_eq!(e.kind(), kind, "{e:?}");
            assert_eq!(e.is_damage(), kind == ErrorKind::Damaged, "{e:?}");
        }
    }

    /// The library's messages name no command-line flag: the HTTP API and
    /// programs return them as they are, and the command line adds its
    /// advice (`cli/advice.rs`).
    #[test]
    fn messages_name_no_command_line_flag() {
        for (e, _) in examples() {
            let text = e.to_string();
            assert!(!text.contains("--"), "{text}");
            assert!(!text.contains("CAIRN_"), "{text}");
            assert!(!text.contains("`cairn "), "{text}");
        }
        let locked = Error::Locked {
            operation: "backup".into(),
            holders: "an exclusive lock of prune".into(),
        };
        assert_eq!(
            locked.to_string(),
            "cannot backup: the repository is locked (an exclusive lock of prune)"
        );
    }

    #[test]
    fn not_a_file_says_what_it_is() {
        let e = |entry| {
            Error::NotAFile {
                path: "/srv/x".into(),
                entry,
            }
            .to_string()
        };
        assert_eq!(e("dir"), "/srv/x is a directory, and dump writes one file");
        assert_eq!(
            e("symlink"),
            "/srv/x is a symlink, not a regular file: dump writes file contents only"
        );
    }
}
