//! Application profiles: the `cairn.toml` at an application's root, the
//! application snapshot it describes (`cairn snap`), and the in-place
//! restore of one of its components with a safety snapshot first.
//!
//! A profile names the application, optionally its repository and
//! password source, its retention rules and its **components**: a SQLite
//! database (`sqlite = "prisma/dev.db"`) or a set of paths with excludes
//! (`paths = ["."]`, `exclude = [...]`). An application snapshot is one
//! ordinary snapshot of the union of the components' paths; the snapshot's
//! [`AppInfo`] records which paths belong to which component, the
//! application's name and root, and its git state, so a later restore needs
//! only the snapshot, not the profile as it is now.
//!
//! A path can belong to only one component. Excludes are snapshot-wide (one
//! tree is walked once), so the paths of the other components are
//! re-included after a files component's excludes: an exclude such as
//! `.env*` in `code` cannot drop the `.env` that `config` names.
//!
//! # Restoring in place
//!
//! [`restore_component`] puts a component's files back where they were:
//! first a safety snapshot of their current state (tagged `safety`), then
//! for each file a copy restored from the repository (hashes checked) into
//! a temporary directory beside it, renamed over it and the directory
//! fsynced, so each file is either the old one or the new one whatever
//! happens. A database's `-wal`, `-shm` and `-journal` files belong to the
//! old database: they are removed before the rename, since SQLite would
//! otherwise apply the old log to the new file; a WAL database is
//! checkpointed first, and the safety snapshot holds its state anyway. A
//! database that another process has open is not replaced unless forced:
//! that process would go on writing to the old file.

pub mod schedule;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component as PathComponent, Path, PathBuf};

use serde::Deserialize;

use crate::apps::engine::restore;
use crate::apps::sqlite::special::SqliteFiles;
use crate::error::{Error, Result};
use crate::format::snapshot::{AppInfo, ComponentInfo, GitInfo, Snapshot, TableRows};
use crate::id::SnapshotId;
use crate::ops::backup::{BackupOptions, BackupOutcome, Progress, absolute};
use crate::ops::forget::KeepPolicy;
use crate::ops::restore::RestoreOptions;
use crate::repo::Repository;
use crate::repo::audit::{Audited, Event};

/// The name of a profile file.
pub const PROFILE_FILE: &str = "cairn.toml";

/// What a files component leaves out unless it says
/// `default_excludes = false`: dependencies, build output, the git
/// repository (its state is recorded as [`GitInfo`]) and logs.
pub const DEFAULT_EXCLUDES: [&str; 5] = ["node_modules/", ".next/", "target/", ".git/", "*.log"];

pub use crate::format::snapshot::SAFETY_TAG;

/// A parsed `cairn.toml`.
#[derive(Debug, Clone)]
pub struct Profile {
    /// The application's name (`app`; default: the root directory's name).
    pub name: String,
    /// The directory holding the profile, absolute.
    pub root: PathBuf,
    /// The profile file.
    pub file: PathBuf,
    /// The repository (`repo`), relative paths taken from the root.
    pub repo: Option<PathBuf>,
    /// A file holding the repository password (`password_file`).
    pub password_file: Option<PathBuf>,
    /// A shell command printing the password (`password_command`).
    pub password_command: Option<String>,
    /// The components, sorted by name.
    pub components: Vec<Component>,
    /// The retention rules (`[retention]`), if any.
    pub retention: Option<KeepPolicy>,
    /// The scheduled jobs (`[[jobs]]`) that `cairn daemon` runs.
    pub jobs: Vec<crate::apps::profile::schedule::Job>,
    /// The databases `cairn watch` (and `cairn daemon`) follow commit by
    /// commit (`[watch]`), with how.
    pub watch: Option<WatchPlan>,
}

/// `[watch]` of a profile: which databases to follow, and how.
#[derive(Debug, Clone)]
pub struct WatchPlan {
    /// The databases, absolute (the `sqlite` components named, or all).
    pub dbs: Vec<PathBuf>,
    /// The options (`lag`, `heartbeat`, `base_every`, `base_size`,
    /// `max_memory`, `max_wal`).
    pub opts: crate::apps::sqlite::watcher::WatchOptions,
    /// How far back the log is kept (`keep`, as `forget --keep-pitr`),
    /// applied with the profile's `[retention]` by `forget --app` and by
    /// `cairn daemon` jobs that forget.
    pub keep: Option<jiff::Span>,
}

/// One component of a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    /// Its name (the key under `[components]`).
    pub name: String,
    /// What it holds.
    pub kind: ComponentKind,
}

/// What a component holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentKind {
    /// A SQLite database file, captured consistently.
    Sqlite {
        /// The database, absolute.
        path: PathBuf,
    },
    /// A database dumped by a command (`pg_dump`, `mysqldump`) whose
    /// standard output is stored as the file `/NAME` of its own snapshot,
    /// and restored by piping it into the restore command.
    Command {
        /// The dump command: program, then arguments (run without a
        /// shell, in the application's root).
        dump: Vec<String>,
        /// The command that reads a dump on its standard input and loads
        /// it, if the profile gives one.
        restore: Option<Vec<String>>,
        /// The name the dump is stored under.
        name: String,
    },
    /// Files and directories.
    Files {
        /// The paths, absolute.
        paths: Vec<PathBuf>,
        /// Exclude patterns (gitignore syntax), defaults included.
        excludes: Vec<String>,
    },
}

impl Component {
    /// The component's paths, absolute.
    #[must_use]
    pub fn paths(&self) -> Vec<PathBuf> {
        match &self.kind {
            ComponentKind::Sqlite { path } => vec![path.clone()],
            ComponentKind::Files { paths, .. } => paths.clone(),
            ComponentKind::Command { .. } => Vec::new(),
        }
    }

    /// `sqlite` or `files`, as recorded in [`ComponentInfo::kind`].
    #[must_use]
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            ComponentKind::Sqlite { .. } => "sqlite",
            ComponentKind::Files { .. } => "files",
            ComponentKind::Command { .. } => "command",
        }
    }
}

/// The file as written; every key is checked, so a typo is an error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    app: Option<String>,
    repo: Option<PathBuf>,
    password_file: Option<PathBuf>,
    password_command: Option<String>,
    #[serde(default)]
    components: BTreeMap<String, ComponentFile>,
    retention: Option<RetentionFile>,
    #[serde(default)]
    jobs: Vec<crate::apps::profile::schedule::JobFile>,
    watch: Option<WatchFile>,
}

/// `[watch]`: continuous capture of the profile's SQLite components.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WatchFile {
    components: Option<Vec<String>>,
    lag: Option<String>,
    heartbeat: Option<String>,
    base_every: Option<String>,
    base_size: Option<String>,
    max_memory: Option<String>,
    max_wal: Option<String>,
    keep: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ComponentFile {
    sqlite: Option<PathBuf>,
    paths: Option<Vec<PathBuf>>,
    dump: Option<Vec<String>>,
    restore: Option<Vec<String>>,
    name: Option<String>,
    #[serde(default)]
    exclude: Vec<String>,
    default_excludes: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionFile {
    keep_last: Option<i64>,
    keep_hourly: Option<i64>,
    keep_daily: Option<i64>,
    keep_weekly: Option<i64>,
    keep_monthly: Option<i64>,
    keep_yearly: Option<i64>,
    keep_within: Option<String>,
    #[serde(default)]
    keep_tags: Vec<String>,
    keep_rollback: Option<String>,
}

impl Profile {
    /// The nearest `cairn.toml` in `start` or a directory above it.
    #[must_use]
    pub fn find(start: &Path) -> Option<PathBuf> {
        start
            .ancestors()
            .map(|d| d.join(PROFILE_FILE))
            .find(|f| f.is_file())
    }

    /// Reads and checks the profile `file`.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file when it cannot be read;
    /// [`Error::Invalid`] naming it for malformed TOML, an unknown key, a
    /// component with neither or both of `sqlite` and `paths`, a path
    /// outside the root, a path in two components.
    pub fn load(file: &Path) -> Result<Self> {
        let text =
            fs::read_to_string(file).map_err(|e| Error::io("cannot read the profile", file, e))?;
        let file = absolute(file)?;
        Self::parse(&text, &file)
    }

    /// Parses the text of the profile at `file` (absolute).
    ///
    /// # Errors
    /// As [`Profile::load`].
    pub fn parse(text: &str, file: &Path) -> Result<Self> {
        let bad = |what: String| {
            Error::invalid(format!(
                "profile {}: {what}; see `cairn snap --help` for the format",
                file.display()
            ))
        };
        let raw: ProfileFile = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let root = file
            .parent()
            .ok_or_else(|| bad("has no parent directory".into()))?
            .to_path_buf();
        let name = app_name(raw.app, &root, &bad)?;
        if raw.components.is_empty() {
            return Err(bad(
                "no components: add for example [components.db] sqlite = \"data/app.db\" or [components.code] paths = [\".\"]".into(),
            ));
        }
        let components = raw
            .components
            .into_iter()
            .map(|(cname, c)| component(cname, c, &root, &bad))
            .collect::<Result<Vec<_>>>()?;
        no_shared_paths(&components, &bad)?;
        let retention = raw.retention.map(|r| retention(r, &bad)).transpose()?;
        let jobs = jobs(raw.jobs, &components, retention.is_some(), file)?;
        let watch = raw
            .watch
            .map(|w| watch_plan(w, &components, file))
            .transpose()?;
        Ok(Self {
            name,
            // A URL (`s3:https://…`) is a location, not a path below the root.
            repo: raw.repo.map(|r| {
                if crate::storage::is_url(&r) {
                    r
                } else {
                    normalize(&root.join(r))
                }
            }),
            password_file: raw.password_file.map(|p| normalize(&root.join(p))),
            password_command: raw.password_command,
            root,
            file: file.to_path_buf(),
            components,
            retention,
            jobs,
            watch,
        })
    }

    /// The component called `name`.
    ///
    /// # Errors
    /// [`Error::NotFound`] listing the components there are.
    pub fn component(&self, name: &str) -> Result<&Component> {
        self.components
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "the profile {} has no component '{name}'; it has: {}",
                    self.file.display(),
                    self.component_names().join(", ")
                ))
            })
    }

    fn component_names(&self) -> Vec<String> {
        self.components.iter().map(|c| c.name.clone()).collect()
    }
}

/// The application's name: `app` as given (not blank), or else the name
/// of the profile's directory `root`.
fn app_name(app: Option<String>, root: &Path, bad: &dyn Fn(String) -> Error) -> Result<String> {
    match app {
        Some(n) if n.trim().is_empty() => Err(bad("`app` is empty".into())),
        Some(n) => Ok(n),
        None => Ok(root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "app".to_owned())),
    }
}

/// The component `cname` of the profile at `root`, checked: exactly one
/// of `sqlite`, `dump` or `paths`, with only the keys that go with it, and
/// every path inside `root`.
fn component(
    cname: String,
    mut c: ComponentFile,
    root: &Path,
    bad: &dyn Fn(String) -> Error,
) -> Result<Component> {
    if c.dump.is_none() && (c.restore.is_some() || c.name.is_some()) {
        return Err(bad(format!(
            "component {cname}: `restore` and `name` go with `dump`"
        )));
    }
    let kind = match (c.sqlite.take(), c.paths.take(), c.dump.take()) {
        (None, None, Some(dump)) => command_component(&cname, dump, c, bad)?,
        (Some(db), None, None) => {
            if !c.exclude.is_empty() || c.default_excludes.is_some() {
                return Err(bad(format!(
                    "component {cname}: `exclude` and `default_excludes` go with `paths`, not `sqlite`"
                )));
            }
            ComponentKind::Sqlite {
                path: inside(root, &cname, &db, bad)?,
            }
        }
        (None, Some(paths), None) => files_component(&cname, &paths, c, root, bad)?,
        _ => {
            return Err(bad(format!(
                "component {cname}: give one of `sqlite = \"PATH\"` (a SQLite database), `dump = [\"CMD\", ...]` (a database dump command) or `paths = [...]` (files)"
            )));
        }
    };
    Ok(Component { name: cname, kind })
}

/// A `dump` component `cname`: the dump command (and the restore command,
/// if given) not empty, and the name its output is stored under (by
/// default `CNAME.dump`) a plain file name. `c` is the rest of its table.
fn command_component(
    cname: &str,
    dump: Vec<String>,
    c: ComponentFile,
    bad: &dyn Fn(String) -> Error,
) -> Result<ComponentKind> {
    if !c.exclude.is_empty() || c.default_excludes.is_some() {
        return Err(bad(format!(
            "component {cname}: `exclude` and `default_excludes` go with `paths`, not `dump`"
        )));
    }
    if dump.is_empty() || c.restore.as_ref().is_some_and(Vec::is_empty) {
        return Err(bad(format!(
            "component {cname}: a command is a list of program and arguments, e.g. dump = [\"pg_dump\", \"shop\"]"
        )));
    }
    let name = c.name.unwrap_or_else(|| format!("{cname}.dump"));
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(bad(format!(
            "component {cname}: name '{name}' must be a plain file name"
        )));
    }
    Ok(ComponentKind::Command {
        dump,
        restore: c.restore,
        name,
    })
}

/// A `paths` component `cname`: at least one path, each inside `root`;
/// its excludes are [`DEFAULT_EXCLUDES`] (unless `default_excludes =
/// false`) followed by its own. `c` is the rest of its table.
fn files_component(
    cname: &str,
    paths: &[PathBuf],
    c: ComponentFile,
    root: &Path,
    bad: &dyn Fn(String) -> Error,
) -> Result<ComponentKind> {
    if paths.is_empty() {
        return Err(bad(format!("component {cname}: `paths` is empty")));
    }
    let mut excludes: Vec<String> = if c.default_excludes.unwrap_or(true) {
        DEFAULT_EXCLUDES.iter().map(|s| (*s).to_owned()).collect()
    } else {
        Vec::new()
    };
    excludes.extend(c.exclude);
    Ok(ComponentKind::Files {
        paths: paths
            .iter()
            .map(|p| inside(root, cname, p, bad))
            .collect::<Result<_>>()?,
        excludes,
    })
}

/// `p`, a path of the component `cname`, joined to the profile's `root`
/// and normalized; an error when it leads outside `root`.
fn inside(root: &Path, cname: &str, p: &Path, bad: &dyn Fn(String) -> Error) -> Result<PathBuf> {
    let joined = normalize(&root.join(p));
    if joined.starts_with(root) {
        Ok(joined)
    } else {
        Err(bad(format!(
            "component {cname}: {} is outside the application's root {}",
            p.display(),
            root.display()
        )))
    }
}

/// Fails when two components name the same path: restoring one of them
/// would touch the other's files.
fn no_shared_paths(components: &[Component], bad: &dyn Fn(String) -> Error) -> Result<()> {
    let mut seen: BTreeMap<PathBuf, &str> = BTreeMap::new();
    for c in components {
        for p in c.paths() {
            if let Some(other) = seen.insert(p.clone(), &c.name) {
                return Err(bad(format!(
                    "{} is in both components {other} and {}",
                    p.display(),
                    c.name
                )));
            }
        }
    }
    Ok(())
}

/// The `[[jobs]]` of the profile at `file`, checked against its
/// `components` (and whether it has a `[retention]`, which a job with
/// `forget = true` applies).
fn jobs(
    raw: Vec<crate::apps::profile::schedule::JobFile>,
    components: &[Component],
    has_retention: bool,
    file: &Path,
) -> Result<Vec<crate::apps::profile::schedule::Job>> {
    let bad_job = |what: String| {
        Error::invalid(format!(
            "profile {}: {what}; see `cairn daemon --help` for the format of [[jobs]]",
            file.display()
        ))
    };
    crate::apps::profile::schedule::jobs(
        raw,
        &components
            .iter()
            .map(|c| c.name.clone())
            .collect::<Vec<_>>(),
        has_retention,
        &bad_job,
    )
}

/// The `[watch]` table of the profile at `file`: the databases it follows
/// (by default every `sqlite` component) and the watcher's options.
fn watch_plan(w: WatchFile, components: &[Component], file: &Path) -> Result<WatchPlan> {
    let bad = |what: String| {
        Error::invalid(format!(
            "profile {}: [watch] {what}; see `cairn watch --help`",
            file.display()
        ))
    };
    let sqlite: Vec<(&str, &PathBuf)> = components
        .iter()
        .filter_map(|c| match &c.kind {
            ComponentKind::Sqlite { path } => Some((c.name.as_str(), path)),
            _ => None,
        })
        .collect();
    let dbs = match w.components {
        None => sqlite.iter().map(|(_, p)| (*p).clone()).collect(),
        Some(names) => names
            .iter()
            .map(|n| {
                sqlite
                    .iter()
                    .find(|(name, _)| name == n)
                    .map(|(_, p)| (*p).clone())
                    .ok_or_else(|| {
                        bad(format!(
                            "names '{n}', which is not a sqlite component (they are: {})",
                            sqlite
                                .iter()
                                .map(|(n, _)| *n)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })
            })
            .collect::<Result<Vec<_>>>()?,
    };
    if dbs.is_empty() {
        return Err(bad(
            "has no database to follow: add a component with `sqlite = \"PATH\"`".to_owned(),
        ));
    }
    let mut opts = crate::apps::sqlite::watcher::WatchOptions::default();
    let duration = |key: &str, v: Option<String>, into: &mut std::time::Duration| -> Result<()> {
        if let Some(v) = v {
            *into = crate::timespec::parse_duration(&v).map_err(|e| bad(format!("{key}: {e}")))?;
        }
        Ok(())
    };
    duration("lag", w.lag, &mut opts.lag)?;
    duration("heartbeat", w.heartbeat, &mut opts.heartbeat)?;
    duration("base_every", w.base_every, &mut opts.base_every)?;
    if let Some(size) = w.max_memory {
        opts.max_memory =
            crate::timespec::parse_size(&size).map_err(|e| bad(format!("max_memory: {e}")))?;
    }
    if let Some(size) = w.max_wal {
        opts.max_wal =
            crate::timespec::parse_size(&size).map_err(|e| bad(format!("max_wal: {e}")))?;
    }
    if let Some(size) = w.base_size {
        opts.base_bytes =
            crate::timespec::parse_size(&size).map_err(|e| bad(format!("base_size: {e}")))?;
    }
    let keep = w
        .keep
        .map(|k| {
            k.parse::<jiff::Span>().map_err(|e| {
                bad(format!(
                    "keep '{k}': {e}; give a span such as \"7d\" or \"48h\""
                ))
            })
        })
        .transpose()?;
    Ok(WatchPlan { dbs, opts, keep })
}

fn retention(r: RetentionFile, bad: &dyn Fn(String) -> Error) -> Result<KeepPolicy> {
    let span = |key: &str, w: Option<String>| {
        w.map(|w| {
            w.parse::<jiff::Span>().map_err(|e| {
                bad(format!(
                    "retention {key} '{w}': {e}; give a span such as \"7d\" or \"2w\""
                ))
            })
        })
        .transpose()
    };
    let within = span("keep_within", r.keep_within)?;
    let rollback = span("keep_rollback", r.keep_rollback)?;
    let policy = KeepPolicy {
        last: r.keep_last,
        hourly: r.keep_hourly,
        daily: r.keep_daily,
        weekly: r.keep_weekly,
        monthly: r.keep_monthly,
        yearly: r.keep_yearly,
        within,
        tags: r.keep_tags,
        rollback,
        ..KeepPolicy::default()
    };
    // Checked here, once, so that every door that applies it (forget
    // --app, a daemon job, the API) refuses the same profile the same way.
    policy
        .validate()
        .map_err(|e| bad(format!("[retention]: {e}")))?;
    Ok(policy)
}

/// `path` without `.` and with `..` applied, lexically.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            PathComponent::CurDir => {}
            PathComponent::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The git state of the work tree at `root`, or `None` when it is not one
/// (or git is not installed).
#[must_use]
pub fn git_info(root: &Path) -> Option<GitInfo> {
    let git = |args: &[&str]| -> Option<(bool, String)> {
        let out = crate::secrets::command("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        Some((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        ))
    };
    let (inside, _) = git(&["rev-parse", "--is-inside-work-tree"])?;
    if !inside {
        return None;
    }
    let commit = match git(&["rev-parse", "--verify", "--quiet", "HEAD"]) {
        Some((true, c)) => c,
        _ => String::new(),
    };
    let branch = match git(&["symbolic-ref", "--quiet", "--short", "HEAD"]) {
        Some((true, b)) if !b.is_empty() => Some(b),
        _ => None,
    };
    let dirty = match git(&["status", "--porcelain"]) {
        Some((true, s)) => !s.is_empty(),
        _ => false,
    };
    Some(GitInfo {
        branch,
        commit,
        dirty,
    })
}

/// Options of an application snapshot.
#[derive(Debug, Clone, Default)]
pub struct SnapOptions {
    /// Only these components (all when empty).
    pub components: Vec<String>,
    /// Tags besides the profile's.
    pub tags: Vec<String>,
    /// As [`BackupOptions::cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// As [`BackupOptions::force`].
    pub force: bool,
}

/// Takes a snapshot of the profile's components (or those chosen): one
/// of all the database and files components, and one more for each dump
/// command component (a stream is a snapshot of its own). The first
/// outcome is the files snapshot when there is one.
///
/// # Errors
/// [`Error::NotFound`] for an unknown component; [`Error::Invalid`] for
/// a component path that does not exist (naming it and the profile);
/// [`Error::NotADatabase`] for a `sqlite` component that is not a
/// database; as `crate::ops::backup` and
/// [`crate::ops::backup::backup_command`] otherwise (a dump command that fails stores
/// no snapshot of its component; snapshots taken before it stay).
pub fn snap(
    repo: &Repository,
    profile: &Profile,
    opts: &SnapOptions,
    progress: &dyn Progress,
) -> Result<Vec<BackupOutcome>> {
    let chosen: Vec<&Component> = if opts.components.is_empty() {
        profile.components.iter().collect()
    } else {
        opts.components
            .iter()
            .map(|n| profile.component(n))
            .collect::<Result<_>>()?
    };
    let git = git_info(&profile.root);
    let app_info = |components: Vec<ComponentInfo>| AppInfo {
        name: profile.name.clone(),
        root: profile.root.as_os_str().as_bytes().to_vec(),
        components,
        git: git.clone(),
    };
    let mut backup = BackupOptions::new(Vec::new());
    let mut components = Vec::new();
    let mut keep = Vec::new();
    for c in chosen.iter().filter(|c| c.kind_name() != "command") {
        for p in c.paths() {
            if fs::symlink_metadata(&p).is_err() {
                let e = Error::invalid(format!(
                    "component {} of {}: {} does not exist; create it or fix the profile {}",
                    c.name,
                    profile.name,
                    p.display(),
                    profile.file.display()
                ));
                let names = chosen.iter().map(|c| c.name.as_str());
                return Err(crate::ops::backup::snap_event(repo, &profile.name, names).fail(e));
            }
            keep.push(p.clone());
            backup.paths.push(p);
        }
        match &c.kind {
            ComponentKind::Sqlite { path } => backup.special_paths.push(path.clone()),
            ComponentKind::Files { excludes, .. } => backup.excludes.extend(excludes.clone()),
            ComponentKind::Command { .. } => {}
        }
        let mut paths: Vec<Vec<u8>> = c
            .paths()
            .iter()
            .map(|p| p.as_os_str().as_bytes().to_vec())
            .collect();
        paths.sort();
        components.push(ComponentInfo {
            name: c.name.clone(),
            kind: c.kind_name().to_owned(),
            paths,
        });
    }
    let mut done = Vec::new();
    if !backup.paths.is_empty() {
        // Excludes apply to the whole walk: put every component's own paths
        // back, so one component's excludes never drop another's files.
        backup.excludes.sort();
        backup.excludes.dedup();
        // A component left out of this snap keeps its paths out of the
        // components that are in it: `snap --component code` with code at
        // "." must not store the database (a raw, possibly torn copy of
        // it, and its -wal) or the secrets of `config`. A full snap stores
        // them under their own components, so the same rule holds
        // whichever subset is snapped.
        backup
            .excludes
            .extend(left_out_paths(profile, &chosen, &keep));
        for p in &keep {
            backup.excludes.push(format!("!{}", glob_escape(p)));
        }
        backup.tags.clone_from(&opts.tags);
        backup.cache_dir.clone_from(&opts.cache_dir);
        backup.force = opts.force;
        backup.app = Some(app_info(components));
        done.push(crate::apps::engine::backup(repo, &backup, progress)?);
    }
    for c in chosen {
        if let ComponentKind::Command { dump, name, .. } = &c.kind {
            let mut stream = BackupOptions::new(Vec::new());
            stream.tags.clone_from(&opts.tags);
            stream.app = Some(app_info(vec![ComponentInfo {
                name: c.name.clone(),
                kind: c.kind_name().to_owned(),
                paths: vec![format!("/{name}").into_bytes()],
            }]));
            done.push(run_dump(repo, &stream, profile, dump, name, progress)?);
        }
    }
    Ok(done)
}

/// Exclude patterns for the paths of the profile's components that are
/// not `chosen` and lie strictly below a path being snapped (`kept`): a
/// database with its `-wal`, `-shm` and `-journal` files, and each path of
/// a files component.
fn left_out_paths(profile: &Profile, chosen: &[&Component], kept: &[PathBuf]) -> Vec<String> {
    let mut out = Vec::new();
    for c in &profile.components {
        if chosen.iter().any(|k| k.name == c.name) {
            continue;
        }
        let mut paths = c.paths();
        if let ComponentKind::Sqlite { path } = &c.kind {
            paths.extend(crate::apps::sqlite::special::companions(path));
        }
        for p in paths {
            if kept.iter().any(|k| p != *k && p.starts_with(k)) {
                out.push(glob_escape(&p));
            }
        }
    }
    out
}

/// Stores the output of a component's dump command, run in the
/// application's root.
fn run_dump(
    repo: &Repository,
    opts: &BackupOptions,
    profile: &Profile,
    dump: &[String],
    name: &str,
    progress: &dyn Progress,
) -> Result<BackupOutcome> {
    let argv: Vec<std::ffi::OsString> = dump.iter().map(Into::into).collect();
    let mut opts = opts.clone();
    opts.command_dir = Some(profile.root.clone());
    crate::ops::backup::backup_command(repo, &opts, name.as_bytes(), &argv, progress)
}

/// `path` as a gitignore pattern matching exactly it.
fn glob_escape(path: &Path) -> String {
    let mut out = String::new();
    for ch in path.to_string_lossy().chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\' | '!' | '#') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// Options of an in-place component restore.
#[derive(Debug, Clone, Default)]
pub struct ComponentRestoreOptions {
    /// The component to restore.
    pub component: String,
    /// Only report what would change.
    pub dry_run: bool,
    /// Replace a database even though a process has it open.
    pub force: bool,
    /// For the safety snapshot, as [`BackupOptions::cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// The application's profile as it is now: a dump command component
    /// is restored with its `restore` command, after a safety snapshot
    /// taken with its `dump` command.
    pub profile: Option<Profile>,
}

/// What happens, or would happen, to one file of a component.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct FileChange {
    /// The file.
    #[cfg_attr(feature = "server", schema(value_type = String))]
    pub path: PathBuf,
    /// What is done to it.
    pub action: FileAction,
    /// For a database: its tables now and in the snapshot (rows), when
    /// both are known.
    pub tables: Vec<TableChange>,
}

/// What is done to a file; in JSON `replace`, `create` or `unchanged`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub enum FileAction {
    /// It exists with other content and is replaced.
    Replace,
    /// It does not exist and is created.
    Create,
    /// It already has the snapshot's content (compared byte for byte);
    /// left alone.
    Unchanged,
}

/// A table's row counts now and in the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct TableChange {
    /// Table name.
    pub name: String,
    /// Rows in the current database (`None`: no such table).
    pub now: Option<u64>,
    /// Rows in the snapshot (`None`: no such table).
    pub snapshot: Option<u64>,
}

/// What an in-place component restore did.
#[derive(Debug, Clone, Default)]
pub struct ComponentRestore {
    /// The safety snapshot of the files' state before, when anything was
    /// replaced.
    pub safety: Option<SnapshotId>,
    /// One entry per file of the component.
    pub files: Vec<FileChange>,
    /// Things the user should know (metadata not applied).
    pub warnings: Vec<String>,
    /// How to undo the restore, when anything was replaced.
    pub undo: Option<crate::ops::protect::Undo>,
}

/// An in-place component restore as both doors report it (`restore
/// --component` without `--target`, `POST /api/restore` without a
/// target).
#[derive(Debug, Clone, serde::Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct ComponentRestoreReport {
    /// The snapshot restored from.
    pub snapshot: SnapshotId,
    /// The component.
    pub component: String,
    /// Always true: the files were put back where they were.
    pub in_place: bool,
    /// Nothing was changed; `files` says what would be.
    pub dry_run: bool,
    /// The safety snapshot of the files as they were, when any was
    /// replaced.
    pub safety_snapshot: Option<SnapshotId>,
    /// The command that puts the replaced files back.
    pub undo: Option<String>,
    /// One entry per file of the component.
    pub files: Vec<FileChange>,
    /// Things the user should know (metadata not applied).
    pub warnings: Vec<String>,
}

impl ComponentRestore {
    /// What both doors report of restoring `component` of `snapshot`;
    /// `undo` is the undo command written for the door's user.
    #[must_use]
    pub fn report(
        &self,
        snapshot: SnapshotId,
        component: &str,
        dry_run: bool,
        undo: Option<String>,
    ) -> ComponentRestoreReport {
        ComponentRestoreReport {
            snapshot,
            component: component.to_owned(),
            in_place: true,
            dry_run,
            safety_snapshot: self.safety,
            undo,
            files: self.files.clone(),
            warnings: self.warnings.clone(),
        }
    }
}

/// Puts one component of the application snapshot `snap` back in place
/// (see the module doc): safety snapshot, then an atomic replace per file.
///
/// # Errors
/// [`Error::NotAppSnapshot`] when `snap` is not an application snapshot;
/// [`Error::NoComponent`] when it has no such component;
/// [`Error::NotFound`] when a path of the component is not in it;
/// [`Error::InPlaceDirectory`] when the component is a directory tree
/// (restore those with a target); [`Error::InUse`] when a database is
/// open in another process and `force` is not set; [`Error::Damaged`]
/// when a file cannot be read back from the snapshot or a database read
/// back is not sound; [`Error::PartlyRestored`] for a failure after some
/// files were replaced. A dump command component: [`Error::NoProfile`]
/// without a profile, [`Error::NotADumpCommand`] and
/// [`Error::NoRestoreCommand`] when the profile cannot restore it,
/// [`Error::RestoreCommand`] when its restore command fails. Restore and
/// backup errors.
pub fn restore_component(
    repo: &Repository,
    id: SnapshotId,
    snap: &Snapshot,
    opts: &ComponentRestoreOptions,
    progress: &dyn Progress,
) -> Result<ComponentRestore> {
    let app_name = snap.app.as_ref().map_or("", |a| a.name.as_str());
    let what = format!(
        "component {} of app {app_name} from snapshot {id}",
        opts.component
    );
    Event::new(repo, "restore-component", what)
        .unless_dry_run(opts.dry_run)
        .run(|_| {
            let app = snap.app.as_ref().ok_or(Error::NotAppSnapshot {
                snapshot: id,
                in_place: true,
            })?;
            let comp = app
                .components
                .iter()
                .find(|c| c.name == opts.component)
                .ok_or_else(|| no_component(repo, id, snap, app, &opts.component))?;
            if comp.kind == "command" {
                return restore_dump(repo, id, snap, app, comp, opts, progress);
            }
            let mut done = ComponentRestore {
                files: file_changes(repo, id, snap, comp)?,
                ..ComponentRestore::default()
            };
            if !opts.dry_run {
                replace_changed(repo, snap, app, comp, opts, progress, &mut done)?;
            }
            Ok(done)
        })
}

impl Audited for ComponentRestore {
    fn audit(&self) -> (bool, String) {
        let changed = self
            .files
            .iter()
            .filter(|f| f.action != FileAction::Unchanged)
            .count();
        let detail = match self.safety {
            Some(s) => format!("{changed} files replaced in place; safety snapshot {s}"),
            None => format!("{changed} files replaced in place"),
        };
        (true, detail)
    }
}

/// What restoring file component `comp` of `snap` would do to each of its
/// files: create, replace or leave it, and for a database how each
/// table's row count would change.
fn file_changes(
    repo: &Repository,
    id: SnapshotId,
    snap: &Snapshot,
    comp: &ComponentInfo,
) -> Result<Vec<FileChange>> {
    let is_db = comp.kind == "sqlite";
    let mut files = Vec::new();
    for raw in &comp.paths {
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(raw));
        let node = crate::repo::walk::find_node(repo, &snap.tree, raw)?.ok_or_else(|| {
            Error::NotFound(format!(
                "{} is not in snapshot {}",
                path.display(),
                id.short()
            ))
        })?;
        if !node.kind.is_file() {
            return Err(Error::InPlaceDirectory { path, snapshot: id });
        }
        let action = match fs::symlink_metadata(&path) {
            Err(_) => FileAction::Create,
            Ok(m) if m.len() == node.size && same_content(repo, &node, &path, is_db)? => {
                FileAction::Unchanged
            }
            Ok(_) => FileAction::Replace,
        };
        let tables = if is_db {
            let then = snap
                .databases
                .iter()
                .find(|d| d.path == *raw)
                .map(|d| d.tables.clone());
            table_changes(live_tables(&path), then)
        } else {
            Vec::new()
        };
        files.push(FileChange {
            path,
            action,
            tables,
        });
    }
    Ok(files)
}

/// Replaces the files of `done` that change, after a safety snapshot of
/// them as they are now (those that exist), taken with the component's
/// kind so that it restores the same way. A failure after the first file
/// says how to go back.
fn replace_changed(
    repo: &Repository,
    snap: &Snapshot,
    app: &AppInfo,
    comp: &ComponentInfo,
    opts: &ComponentRestoreOptions,
    progress: &dyn Progress,
    done: &mut ComponentRestore,
) -> Result<()> {
    let is_db = comp.kind == "sqlite";
    let changing: Vec<PathBuf> = done
        .files
        .iter()
        .filter(|f| f.action != FileAction::Unchanged)
        .map(|f| f.path.clone())
        .collect();
    if changing.is_empty() {
        return Ok(());
    }
    let existing: Vec<PathBuf> = done
        .files
        .iter()
        .filter(|f| f.action != FileAction::Create)
        .map(|f| f.path.clone())
        .collect();
    let replacing = crate::ops::protect::Replacing {
        databases: if is_db { changing.clone() } else { Vec::new() },
        app: Some(crate::ops::protect::component_app(
            app,
            &comp.name,
            &comp.kind,
            &existing,
            git_info(Path::new(std::ffi::OsStr::from_bytes(&app.root))),
        )),
        files: existing,
        profile: opts.profile.as_ref().map(|p| p.file.clone()),
        undo_component: Some(comp.name.clone()),
        force: opts.force,
        cache_dir: opts.cache_dir.clone(),
        // replace_file checks each restored copy before it removes a
        // database's companions.
        whole_files: false,
    };
    let (undo, warnings) =
        crate::ops::protect::guard(repo, &replacing, &SqliteFiles::hook(), progress)?;
    done.warnings.extend(warnings);
    done.safety = undo.as_ref().map(|u| u.snapshot);
    done.undo = undo;
    for (i, path) in changing.iter().enumerate() {
        let w = replace_file(repo, snap, path, is_db).map_err(|e| match &done.undo {
            // Files replaced before this one stay replaced: say how to
            // go back.
            Some(u) if i > 0 => Error::PartlyRestored {
                error: Box::new(e),
                replaced: i,
                safety: u.snapshot,
            },
            _ => e,
        })?;
        done.warnings.extend(w);
    }
    Ok(())
}

/// Restores a dump command component: a safety snapshot with the
/// profile's dump command, then the stored dump piped into its restore
/// command, both run in the application's root.
fn restore_dump(
    repo: &Repository,
    id: SnapshotId,
    snap: &Snapshot,
    app: &AppInfo,
    comp: &ComponentInfo,
    opts: &ComponentRestoreOptions,
    progress: &dyn Progress,
) -> Result<ComponentRestore> {
    let profile = opts.profile.as_ref().ok_or_else(|| Error::NoProfile {
        component: comp.name.clone(),
    })?;
    let ComponentKind::Command {
        dump,
        restore: load,
        name,
    } = &profile.component(&comp.name)?.kind
    else {
        return Err(Error::NotADumpCommand {
            component: comp.name.clone(),
            profile: profile.file.clone(),
            snapshot: id,
        });
    };
    let raw = comp.paths.first().cloned().unwrap_or_default();
    let shown = String::from_utf8_lossy(&raw).into_owned();
    let Some(load) = load else {
        return Err(Error::NoRestoreCommand {
            component: comp.name.clone(),
            profile: profile.file.clone(),
            snapshot: id,
            dump: shown,
        });
    };
    let node = crate::repo::walk::find_node(repo, &snap.tree, &raw)?
        .ok_or_else(|| Error::NotFound(format!("snapshot {} holds no dump {shown}", id.short())))?;
    let mut done = ComponentRestore {
        files: vec![FileChange {
            path: PathBuf::from(&shown),
            action: FileAction::Replace,
            tables: Vec::new(),
        }],
        ..ComponentRestore::default()
    };
    if opts.dry_run {
        return Ok(done);
    }
    let mut safety = BackupOptions::new(Vec::new());
    safety.tags = vec![SAFETY_TAG.to_owned()];
    safety.command_dir = Some(profile.root.clone());
    safety.app = Some(AppInfo {
        name: app.name.clone(),
        root: app.root.clone(),
        components: vec![ComponentInfo {
            name: comp.name.clone(),
            kind: comp.kind.clone(),
            paths: vec![format!("/{name}").into_bytes()],
        }],
        git: git_info(&profile.root),
    });
    let argv: Vec<std::ffi::OsString> = dump.iter().map(Into::into).collect();
    let saved =
        crate::ops::backup::backup_command(repo, &safety, name.as_bytes(), &argv, progress)?;
    done.warnings.extend(saved.warnings);
    done.safety = Some(saved.id);
    done.undo = Some(crate::ops::protect::Undo {
        snapshot: saved.id,
        component: Some(comp.name.clone()),
        files: Vec::new(),
        profile: Some(profile.file.clone()),
    });
    let (program, args) = load
        .split_first()
        .ok_or_else(|| Error::invalid("the restore command is empty"))?;
    let shown_cmd = load.join(" ");
    let failed = |why: String| Error::RestoreCommand {
        component: comp.name.clone(),
        command: shown_cmd.clone(),
        problem: why,
        safety: saved.id,
    };
    let mut child = crate::secrets::command(program)
        .args(args)
        .current_dir(&profile.root)
        .stdin(std::process::Stdio::piped())
        // What the restore command prints on success (psql echoes every
        // statement's result) is noise; its errors go to stderr.
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| failed(format!("it could not be started: {e}")))?;
    let written = match child.stdin.take() {
        Some(mut stdin) => crate::ops::inspect::dump(repo, &raw, &node, &mut stdin).map(|_| ()),
        // Its standard input was asked to be a pipe.
        None => Err(Error::internal("no pipe to the restore command")),
    };
    let status = child
        .wait()
        .map_err(|e| failed(format!("waiting for it: {e}")))?;
    if !status.success() {
        return Err(failed(format!("it exited with {status}")));
    }
    written.map_err(|e| failed(e.to_string()))?;
    Ok(done)
}

/// The paths of component `name` of the application snapshot `snap`, for
/// a restore into a target, and the paths of the other components below
/// them, which such a restore leaves out (restoring `code` must not bring
/// `.env` or the database along).
///
/// # Errors
/// [`Error::NotAppSnapshot`] when `snap` is not an application snapshot;
/// [`Error::NoComponent`] when it has no such component, listing those
/// it has.
pub fn component_paths(
    repo: &Repository,
    id: SnapshotId,
    snap: &Snapshot,
    name: &str,
    profile: Option<&Profile>,
) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let app = snap.app.as_ref().ok_or(Error::NotAppSnapshot {
        snapshot: id,
        in_place: false,
    })?;
    let c = app
        .components
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| no_component(repo, id, snap, app, name))?;
    let path = |p: &Vec<u8>| PathBuf::from(std::ffi::OsStr::from_bytes(p));
    let mine: Vec<PathBuf> = c.paths.iter().map(path).collect();
    let mut others: Vec<PathBuf> = app
        .components
        .iter()
        .filter(|o| o.name != name)
        .flat_map(|o| o.paths.iter().map(path))
        .collect();
    // The application's other components as its profile names them now:
    // a snapshot of some components taken before cairn left the others'
    // paths out of them holds the database and the secrets too.
    if let Some(p) = profile.filter(|p| p.name == app.name) {
        for c in p.components.iter().filter(|c| c.name != name) {
            others.extend(c.paths());
            if let ComponentKind::Sqlite { path } = &c.kind {
                others.extend(crate::apps::sqlite::special::companions(path));
            }
        }
    }
    others.retain(|p| mine.iter().any(|m| p.starts_with(m)));
    others.sort();
    others.dedup();
    Ok((mine, others))
}

/// The error for a component `snap` does not have, naming those it has
/// and, when the same `cairn snap` stored the component in a snapshot of
/// its own (a dump command's stream), that snapshot.
fn no_component(
    repo: &Repository,
    id: SnapshotId,
    snap: &Snapshot,
    app: &AppInfo,
    name: &str,
) -> Error {
    let has: Vec<String> = app.components.iter().map(|c| c.name.clone()).collect();
    // Taken by the same snap: the same application, within a minute or
    // so (a dump runs right after the files).
    let t = snap.timestamp().as_second();
    let sibling = repo.snapshots().ok().and_then(|all| {
        all.into_iter()
            .filter_map(|(sid, s)| s.ok().map(|s| (sid, s)))
            .filter(|(_, s)| {
                (s.timestamp().as_second() - t).abs() <= 600
                    && s.app.as_ref().is_some_and(|a| {
                        a.name == app.name && a.components.iter().any(|c| c.name == name)
                    })
            })
            .min_by_key(|(_, s)| (s.timestamp().as_second() - t).abs())
    });
    Error::NoComponent {
        snapshot: id,
        component: name.to_owned(),
        has,
        sibling: sibling.map(|(sid, _)| sid),
    }
}

/// Whether the file at `path` already holds `node`'s content (a
/// database: its consistent image does).
fn same_content(
    repo: &Repository,
    node: &crate::format::tree::Node,
    path: &Path,
    is_db: bool,
) -> Result<bool> {
    use std::io::Read;
    if is_db
        && crate::apps::sqlite::special::companions(path)
            .iter()
            .any(|c| c.exists())
    {
        // Committed data may live in the -wal file: not the same bytes.
        return Ok(false);
    }
    let Ok(mut file) = fs::File::open(path) else {
        return Ok(false);
    };
    for blob in crate::repo::walk::file_content(repo, node)? {
        let want = repo.read_blob(&blob)?;
        let mut have = vec![0u8; want.len()];
        if file.read_exact(&mut have).is_err() || have != want {
            return Ok(false);
        }
    }
    let mut rest = [0u8; 1];
    Ok(matches!(file.read(&mut rest), Ok(0)))
}

/// The tables of the database at `path` now, read-only; `None` when it
/// does not exist or cannot be read.
fn live_tables(path: &Path) -> Option<Vec<TableRows>> {
    if !path.exists() {
        return None;
    }
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    crate::apps::sqlite::table_counts(&conn).ok()
}

fn table_changes(now: Option<Vec<TableRows>>, then: Option<Vec<TableRows>>) -> Vec<TableChange> {
    let mut all: BTreeMap<String, TableChange> = BTreeMap::new();
    for t in now.unwrap_or_default() {
        all.entry(t.name.clone())
            .or_insert_with(|| TableChange {
                name: t.name,
                now: None,
                snapshot: None,
            })
            .now = Some(t.rows);
    }
    for t in then.unwrap_or_default() {
        all.entry(t.name.clone())
            .or_insert_with(|| TableChange {
                name: t.name,
                now: None,
                snapshot: None,
            })
            .snapshot = Some(t.rows);
    }
    all.into_values().collect()
}

/// Restores `path` from `snap` into a temporary directory beside it and
/// renames it over `path` (see the module doc). Returns warnings.
fn replace_file(
    repo: &Repository,
    snap: &Snapshot,
    path: &Path,
    is_db: bool,
) -> Result<Vec<String>> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::invalid(format!("{} has no parent directory", path.display())))?;
    fs::create_dir_all(dir).map_err(|e| Error::target_write(dir, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".cairn-restore-")
        .tempdir_in(dir)
        .map_err(|e| Error::target_write(dir, e))?;
    let mut opts = RestoreOptions::new(tmp.path());
    opts.includes.push(path.to_path_buf());
    let done = restore(repo, snap, &opts, &crate::ops::backup::NoProgress)?;
    // Restore leaves out, and lists, what it cannot read back (exit code 3
    // for `cairn restore`): so here.
    if let Some(e) = done.errors.first() {
        return Err(Error::Damaged(format!(
            "{} could not be restored, nothing was replaced: {e}",
            path.display()
        )));
    }
    let relative = path.strip_prefix("/").unwrap_or(path);
    let restored = tmp.path().join(relative);
    if is_db {
        check_database(&restored, path)?;
        crate::apps::sqlite::special::settle_database(path);
        for c in crate::apps::sqlite::special::companions(path) {
            match fs::remove_file(&c) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::target_write(&c, e)),
            }
        }
    }
    fs::rename(&restored, path).map_err(|e| Error::target_write(path, e))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::target_write(dir, e))?;
    Ok(done.warnings)
}

/// Checks the restored image `restored` of `path` opens as a database:
/// what was stored as one and is not sound is damaged data (exit code 3).
fn check_database(restored: &Path, path: &Path) -> Result<()> {
    let fail = |why: String| {
        Error::Damaged(format!(
            "the restored copy of {} is not a sound database ({why}); nothing was replaced",
            path.display()
        ))
    };
    let conn =
        rusqlite::Connection::open_with_flags(restored, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| fail(e.to_string()))?;
    let ok: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| fail(e.to_string()))?;
    if ok == "ok" { Ok(()) } else { Err(fail(ok)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Profile> {
        Profile::parse(text, Path::new("/srv/shop/cairn.toml"))
    }

    #[test]
    fn profile_defaults_name_excludes_and_resolves_paths_from_the_root() {
        let p = parse(
            "[components.code]\npaths = [\"./src\", \"lib/../pkg\"]\n[components.db]\nsqlite = \"data/app.db\"\n",
        )
        .expect("parses");
        assert_eq!(p.name, "shop", "the root directory names the app");
        assert_eq!(p.repo, None);
        assert!(p.retention.is_none());
        let code = p.component("code").expect("code");
        let ComponentKind::Files { paths, excludes } = &code.kind else {
            panic!("files");
        };
        assert_eq!(
            paths,
            &[
                PathBuf::from("/srv/shop/src"),
                PathBuf::from("/srv/shop/pkg")
            ]
        );
        assert_eq!(excludes.len(), DEFAULT_EXCLUDES.len());
        assert_eq!(
            p.component("db").expect("db").paths(),
            [PathBuf::from("/srv/shop/data/app.db")]
        );
        let off =
            parse("[components.c]\npaths = [\".\"]\ndefault_excludes = false\nexclude = [\"x\"]\n")
                .expect("parses");
        assert_eq!(
            off.component("c").expect("c").kind,
            ComponentKind::Files {
                paths: vec![PathBuf::from("/srv/shop")],
                excludes: vec!["x".to_owned()]
            }
        );
    }

    #[test]
    fn profile_rejects_what_it_cannot_mean() {
        for (text, says) in [
            ("", "no components"),
            (
                "app = \"\"\n[components.a]\npaths=[\".\"]",
                "`app` is empty",
            ),
            ("colour = 1\n[components.a]\npaths=[\".\"]", "unknown field"),
            ("[components.a]\npaths = []", "`paths` is empty"),
            (
                "[components.a]\nsqlite = \"a\"\npaths = [\"b\"]",
                "give one of",
            ),
            (
                "[components.a]\nsqlite = \"a\"\nexclude = [\"b\"]",
                "go with `paths`",
            ),
            (
                "[components.a]\npaths = [\"../x\"]",
                "outside the application's root",
            ),
            (
                "[components.a]\npaths = [\"x\"]\n[components.b]\nsqlite = \"./x\"",
                "in both components",
            ),
            ("[components.a]\ndump = []", "a command is a list"),
            (
                "[components.a]\ndump = [\"d\"]\nname = \"a/b\"",
                "plain file name",
            ),
            (
                "[components.a]\npaths = [\".\"]\nrestore = [\"r\"]",
                "go with `dump`",
            ),
            (
                "[components.a]\npaths = [\".\"]\n[retention]\nkeep_within = \"soon\"",
                "keep_within",
            ),
            ("[components.a\npaths = [\".\"]", "cairn.toml"),
        ] {
            let e = parse(text).expect_err(text).to_string();
            assert!(e.contains(says), "{text:?}: {e}");
            assert!(e.contains("/srv/shop/cairn.toml"), "{text:?}: {e}");
        }
    }

    #[test]
    fn profile_dump_components_and_retention() {
        let p = parse(
            "app = \"x\"\nrepo = \"../b\"\n[components.pg]\ndump = [\"pg_dump\", \"shop\"]\nrestore = [\"psql\", \"shop\"]\n[retention]\nkeep_last = 3\nkeep_within = \"2w\"\n",
        )
        .expect("parses");
        assert_eq!(p.repo.as_deref(), Some(Path::new("/srv/b")));
        assert_eq!(
            p.component("pg").expect("pg").kind,
            ComponentKind::Command {
                dump: vec!["pg_dump".into(), "shop".into()],
                restore: Some(vec!["psql".into(), "shop".into()]),
                name: "pg.dump".into(),
            }
        );
        let r = p.retention.clone().expect("retention");
        assert_eq!(r.last, Some(3));
        assert!(r.within.is_some());
        let e = p.component("nope").expect_err("unknown").to_string();
        assert!(e.contains("it has: pg"), "{e}");
    }

    #[test]
    fn profile_jobs_parse_with_their_defaults() {
        let p = parse(
            "[components.db]\nsqlite = \"d.db\"\n[components.code]\npaths = [\".\"]\n[retention]\nkeep_last = 3\n\
             [[jobs]]\nname = \"nightly\"\ncron = \"0 2 * * *\"\ntimezone = \"Europe/London\"\nforget = true\nprune = true\nverify = \"*/7\"\n\
             [[jobs]]\nname = \"frequent\"\nevery = \"6h\"\ncomponents = [\"db\"]\ntags = [\"hourly\"]\n",
        )
        .expect("parses");
        let [nightly, frequent] = p.jobs.as_slice() else {
            panic!("two jobs: {:?}", p.jobs);
        };
        assert_eq!(nightly.name, "nightly");
        assert_eq!(
            nightly.schedule.to_string(),
            "cron \"0 2 * * *\" (Europe/London)"
        );
        assert!(nightly.components.is_empty(), "all components");
        assert!(nightly.forget && nightly.prune);
        assert_eq!(
            nightly.verify,
            Some(crate::apps::profile::schedule::VerifyPlan::Rotate(7))
        );
        assert_eq!(frequent.schedule.to_string(), "every 6h");
        assert_eq!(frequent.components, ["db"]);
        assert_eq!(frequent.tags, ["hourly"]);
        assert!(!frequent.forget && !frequent.prune && frequent.verify.is_none());
        let none = parse("[components.a]\npaths = [\".\"]").expect("parses");
        assert!(none.jobs.is_empty());
    }

    #[test]
    fn profile_rejects_bad_jobs_naming_the_file_and_the_job() {
        let base = "[components.a]\npaths = [\".\"]\n";
        for (jobs, says) in [
            ("[[jobs]]\nevery = \"1h\"", "job 1 has no `name`"),
            ("[[jobs]]\nname = \"j\"", "job j: give one of `cron"),
            (
                "[[jobs]]\nname = \"j\"\ncron = \"0 2 * * *\"\nevery = \"1h\"",
                "job j: give one of",
            ),
            ("[[jobs]]\nname = \"j\"\ncron = \"0 2 * *\"", "job j: cron"),
            (
                "[[jobs]]\nname = \"j\"\ncron = \"0 2 * * *\"\ntimezone = \"Nowhere/Town\"",
                "job j: time zone 'Nowhere/Town'",
            ),
            (
                "[[jobs]]\nname = \"j\"\nevery = \"1h\"\ntimezone = \"UTC\"",
                "`timezone` goes with `cron`",
            ),
            (
                "[[jobs]]\nname = \"j\"\nevery = \"often\"",
                "job j: every 'often'",
            ),
            (
                "[[jobs]]\nname = \"j\"\nevery = \"1h\"\ncomponents = [\"db\"]",
                "job j: no component 'db'; the profile has: a",
            ),
            (
                "[[jobs]]\nname = \"j\"\nevery = \"1h\"\nforget = true",
                "there are none: add a [retention] table",
            ),
            (
                "[[jobs]]\nname = \"j\"\nevery = \"1h\"\nverify = \"8/7\"",
                "job j: verify '8/7'",
            ),
            (
                "[[jobs]]\nname = \"j\"\nevery = \"1h\"\n[[jobs]]\nname = \"j\"\nevery = \"2h\"",
                "two jobs are called j",
            ),
            (
                "[[jobs]]\nname = \"j\"\nevery = \"1h\"\nwhen = 1",
                "unknown field `when`",
            ),
        ] {
            let text = format!("{base}{jobs}");
            let e = parse(&text).expect_err(&text).to_string();
            assert!(e.contains(says), "{text:?}: {e}");
            assert!(e.contains("/srv/shop/cairn.toml"), "{text:?}: {e}");
        }
    }

    #[test]
    fn profile_component_paths_are_escaped_for_gitignore() {
        assert_eq!(glob_escape(Path::new("/a/[b]*?.db")), "/a/\\[b\\]\\*\\?.db");
    }

    #[test]
    fn profile_watch_names_sqlite_components_and_reads_durations() {
        let p = parse(
            "[components.db]\nsqlite = \"data/app.db\"\n[components.jobs]\nsqlite = \"data/jobs.db\"\n[components.code]\npaths = [\".\"]\n[watch]\ncomponents = [\"db\"]\nlag = \"250ms\"\nbase_every = \"2h\"\nbase_size = \"64MiB\"\nmax_memory = \"16MiB\"\nmax_wal = \"1GiB\"\nkeep = \"7d\"\n",
        )
        .expect("parse");
        let w = p.watch.expect("[watch]");
        assert_eq!(w.dbs, [PathBuf::from("/srv/shop/data/app.db")]);
        assert_eq!(w.opts.lag, std::time::Duration::from_millis(250));
        assert_eq!(w.opts.base_every, std::time::Duration::from_secs(7200));
        assert_eq!(w.opts.base_bytes, 64 << 20);
        assert_eq!(w.opts.max_memory, 16 << 20);
        assert_eq!(w.opts.max_wal, 1 << 30);
        assert_eq!(w.keep.map(|k| k.get_days()), Some(7));
        let all = parse(
            "[components.db]\nsqlite = \"a.db\"\n[components.b]\nsqlite = \"b.db\"\n[watch]\n",
        )
        .expect("parse");
        assert_eq!(
            all.watch.map(|w| w.dbs.len()),
            Some(2),
            "every sqlite component"
        );
        for (bad, says) in [
            (
                "[components.code]\npaths = [\".\"]\n[watch]\ncomponents = [\"code\"]\n",
                "not a sqlite component",
            ),
            (
                "[components.db]\nsqlite = \"a.db\"\n[watch]\nlag = \"soon\"\n",
                "lag",
            ),
            (
                "[components.db]\nsqlite = \"a.db\"\n[watch]\nlagg = \"1s\"\n",
                "lagg",
            ),
            (
                "[components.code]\npaths = [\".\"]\n[watch]\n",
                "no database",
            ),
        ] {
            let e = parse(bad).expect_err(bad).to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
