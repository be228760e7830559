//! The protections of every restore that replaces live data, in one place.
//!
//! A restore reaches live files through several doors: `restore
//! --component` in place, `restore --target /` (every file back where it
//! was), `db restore --into` an existing database, `POST /api/restore`,
//! a daemon. Each of them calls [`guard`] before it writes anything, so the
//! rules are the same whichever door is used:
//!
//! 1. A SQLite database that another process has open is not replaced
//!    (that process would go on using the old file, or write into the new
//!    one through a stale `-wal`) unless the caller forces it.
//! 2. The files as they are now are saved first in a **safety snapshot**
//!    (tag [`SAFETY_TAG`]), databases captured consistently.
//! 3. The caller gets an [`Undo`]: the snapshot and the command that puts
//!    everything back.
//! 4. A database about to be replaced by a file is checkpointed and its
//!    `-wal`/`-shm`/`-journal` files are removed, after the safety snapshot
//!    holds its committed state: SQLite would replay an old log onto the
//!    new file.
//!
//! Nothing here decides *whether* a restore is live: the door does (a
//! component's own paths, a target that maps files onto themselves, an
//! existing database given as the destination). The rules are here so that
//! no door can skip one.
//!
//! What a database is, what its companions are and how its log is
//! checkpointed is the application layer's knowledge: it reaches these
//! rules through the special-file hook
//! ([`SpecialFiles`](crate::ops::backup::special::SpecialFiles)) that the
//! SQLite capture implements (`SqliteFiles`, src/apps/sqlite/special.rs),
//! the same hook the safety snapshot's backup captures the databases
//! with. [`guard`] and [`crate::ops::restore::restore`] take the hook as a
//! parameter, not an option with a default, so that no caller can leave
//! it out by accident; the library's public `cairn::restore` is the
//! application layer's (src/apps/engine.rs), which passes the SQLite hook,
//! and so is the restore the CLI, the HTTP API, the daemon and the
//! profiles call.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::snapshot::{AppInfo, ComponentInfo, SAFETY_TAG};
use crate::id::SnapshotId;
use crate::ops::backup::special::SpecialFiles;
use crate::ops::backup::{BackupOptions, Progress};
use crate::repo::Repository;

/// What a restore is about to replace.
#[derive(Debug, Clone, Default)]
pub struct Replacing {
    /// Existing files that will be replaced (absolute paths).
    pub files: Vec<PathBuf>,
    /// The databases (special files) among them, and databases the
    /// restore creates: none may be open in another process.
    pub databases: Vec<PathBuf>,
    /// The application and component the files belong to, when known:
    /// the safety snapshot is then a snapshot of that component, so that
    /// `restore --component` puts it back.
    pub app: Option<AppInfo>,
    /// The profile file of that application, for the undo command.
    pub profile: Option<PathBuf>,
    /// Undo with `restore --component NAME` (files replaced in place);
    /// `None`: with `restore --target /`.
    pub undo_component: Option<String>,
    /// Replace databases even though another process has them open.
    pub force: bool,
    /// Where the safety snapshot's files cache lives, as
    /// [`BackupOptions::cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// Whether the files will be replaced by whole files (a restore), so
    /// that a database's companions must go: not for a table-level
    /// restore, which writes through SQLite.
    pub whole_files: bool,
}

/// How to undo a restore: the safety snapshot and what to restore of it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Undo {
    /// The safety snapshot.
    pub snapshot: SnapshotId,
    /// Restore this component of it in place, when it is an application
    /// snapshot of files (not directories).
    pub component: Option<String>,
    /// Otherwise restore these files of it back to where they were.
    pub files: Vec<PathBuf>,
    /// The application's profile, so that the command works from any
    /// directory (its repository and password source come from it).
    pub profile: Option<PathBuf>,
}

impl Undo {
    /// The command that undoes the restore. `repo` is the repository's
    /// location when it does not come from the profile or the default.
    #[must_use]
    pub fn command(&self, repo: Option<&str>) -> String {
        let mut cmd = String::from("cairn");
        if let Some(r) = repo {
            cmd.push_str(" --repo ");
            cmd.push_str(&shell_quote(r));
        }
        if let Some(p) = &self.profile {
            cmd.push_str(" --profile ");
            cmd.push_str(&shell_quote(&p.to_string_lossy()));
        }
        cmd.push_str(" restore ");
        cmd.push_str(&self.snapshot.short());
        match &self.component {
            Some(c) => {
                cmd.push_str(" --component ");
                cmd.push_str(&shell_quote(c));
            }
            None => cmd.push_str(" --target /"),
        }
        cmd
    }
}

/// `s` quoted for a POSIX shell when it needs to be.
#[must_use]
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:@=+,".contains(&b));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Applies the rules of the module doc to `what`, before anything is
/// written. `special` knows the databases (their companions, how to
/// checkpoint them, how to capture them in the safety snapshot). Returns
/// the undo (`None` when no existing file is replaced) and the safety
/// snapshot's warnings.
///
/// # Errors
/// [`Error::InUse`] naming a database and the processes that have it
/// open (unless `force`); the safety snapshot's backup errors (then
/// nothing may be replaced: the caller stops); the hook's `settle`
/// errors.
pub fn guard(
    repo: &Repository,
    what: &Replacing,
    special: &Arc<dyn SpecialFiles>,
    progress: &dyn Progress,
) -> Result<(Option<Undo>, Vec<String>)> {
    if !what.force {
        for db in &what.databases {
            let users = open_by(db, special.as_ref());
            if !users.is_empty() {
                return Err(Error::InUse {
                    path: db.clone(),
                    users: users.join(", "),
                });
            }
        }
    }
    if what.files.is_empty() {
        return Ok((None, Vec::new()));
    }
    let mut backup = BackupOptions::new(what.files.clone());
    backup.tags = vec![SAFETY_TAG.to_owned()];
    backup.cache_dir.clone_from(&what.cache_dir);
    backup.special = Some(Arc::clone(special));
    backup.special_paths.clone_from(&what.databases);
    backup.app.clone_from(&what.app);
    let saved = crate::ops::backup::backup(repo, &backup, progress)?;
    if what.whole_files {
        for db in &what.databases {
            special.settle(db)?;
            for c in special.companions(db) {
                match fs::remove_file(&c) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::target_write(&c, e)),
                }
            }
        }
    }
    let undo = Undo {
        snapshot: saved.id,
        files: if what.undo_component.is_some() {
            Vec::new()
        } else {
            what.files.clone()
        },
        component: what.undo_component.clone(),
        profile: what.profile.clone(),
    };
    Ok((Some(undo), saved.warnings))
}

/// A one-component application record for a safety snapshot of `files`,
/// with the application's git state now (`git`, when the caller knows
/// it: protect is below the application layer that reads it).
#[must_use]
pub fn component_app(
    app: &AppInfo,
    component: &str,
    kind: &str,
    files: &[PathBuf],
    git: Option<crate::format::snapshot::GitInfo>,
) -> AppInfo {
    let mut paths: Vec<Vec<u8>> = files
        .iter()
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .collect();
    paths.sort();
    AppInfo {
        name: app.name.clone(),
        root: app.root.clone(),
        components: vec![ComponentInfo {
            name: component.to_owned(),
            kind: kind.to_owned(),
            paths,
        }],
        git,
    }
}

/// The processes (`pid (name)`) that have `path` or its companions (as
/// `special` names them) open, from `/proc`; empty where `/proc` cannot be
/// read.
#[must_use]
pub fn open_by(path: &Path, special: &dyn SpecialFiles) -> Vec<String> {
    let mut targets = vec![path.to_path_buf()];
    targets.extend(special.companions(path));
    let targets: Vec<PathBuf> = targets
        .into_iter()
        .filter_map(|p| fs::canonicalize(&p).ok())
        .collect();
    let me = std::process::id().to_string();
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut users = Vec::new();
    for p in procs.flatten() {
        let pid = p.file_name().to_string_lossy().into_owned();
        if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let uses = fds
            .flatten()
            .filter_map(|fd| fs::read_link(fd.path()).ok())
            .any(|t| targets.contains(&t));
        if uses {
            let name = fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            users.push(format!("process {pid} ({})", name.trim()));
        }
    }
    users
}
