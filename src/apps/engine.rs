//! The engine's backup and restore as every door calls them: the generic
//! operations of `ops/` with the application layer's special-file hook
//! installed (today the SQLite capture, [`SqliteFiles`]).
//!
//! `ops/` knows no application: its walker stores a database as whatever
//! hook it is given says, and its live-restore protections learn from the
//! same hook which files are databases and how to checkpoint them. These
//! two functions are what the library exports as `cairn::backup` and
//! `cairn::restore`, and what the CLI, the HTTP API, the daemon and the
//! profiles call, so that every door captures databases consistently and
//! gets the protections of a restore that replaces live data (see
//! `crate::ops::protect`) without having to remember a hook. The engine's
//! restore takes its hook as a required parameter, so code that calls
//! `ops/` directly cannot leave it out by accident either.

use crate::apps::sqlite::special::SqliteFiles;
use crate::error::Result;
use crate::format::snapshot::Snapshot;
use crate::ops::backup::{BackupOptions, BackupOutcome, Progress};
use crate::ops::restore::{RestoreOptions, RestoreOutcome};
use crate::repo::Repository;

/// Takes a snapshot of `opts.paths`, capturing SQLite databases
/// consistently: with `opts.special` unset, every regular file with a
/// SQLite header and every file in `opts.special_paths` is stored as an
/// image of the database as of one transaction (see `apps::sqlite`);
/// another hook in `opts.special` (such as [`SqliteFiles`] with
/// [`crate::apps::sqlite::SqliteMode::Off`]) is used as given.
///
/// # Errors
/// As the engine's `ops::backup::backup`.
pub fn backup(
    repo: &Repository,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupOutcome> {
    if opts.special.is_some() {
        return crate::ops::backup::backup(repo, opts, progress);
    }
    let mut hooked = opts.clone();
    hooked.special = Some(SqliteFiles::hook());
    crate::ops::backup::backup(repo, &hooked, progress)
}

/// Restores `snapshot` according to `opts`; a restore into `/` first
/// applies the protections of a live restore (`crate::ops::protect`) to
/// the SQLite databases it replaces.
///
/// # Errors
/// As the engine's `ops::restore::restore`.
pub fn restore(
    repo: &Repository,
    snapshot: &Snapshot,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreOutcome> {
    crate::ops::restore::restore(repo, snapshot, opts, &SqliteFiles::hook(), progress)
}
