//! `cairn restore`: a snapshot (or part of it) into a directory, one
//! component of an application snapshot in place (`--component` without
//! `--target`), or a database `cairn watch` follows as of a moment.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use cairn::{
    ComponentRestoreOptions, FileAction, PitrRestoreOptions, Repository, RestoreOptions, SnapshotId,
};

use super::exit;
use super::global::Global;
use super::output::{BarProgress, Out, local_time, report_audit_errors, size, terminal_safe};
use super::password;
use super::render::undo_command;
use super::repo_open::open;
use super::select::{AtArgs, parse_time};

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot id (or unique prefix), or `latest`; left out with --at.
    /// Or the path of a database `cairn watch` follows (anything but
    /// `latest` or hexadecimal digits; write `./cafe` for a file named
    /// like an id): it is rebuilt into the file --target names, as of
    /// --at or --txn, else as of its last stored transaction.
    #[arg(value_name = "SNAPSHOT|DB")]
    snapshot: Option<String>,
    #[command(flatten)]
    at: AtArgs,
    /// With DB: rebuild the database as of this transaction number (as
    /// `cairn db timeline` shows them) instead of a time.
    #[arg(long, value_name = "N", conflicts_with = "at", requires = "snapshot")]
    txn: Option<u64>,
    /// With DB: replace the --target file if it exists (atomically).
    #[arg(long, requires = "snapshot")]
    overwrite: bool,
    /// Directory to restore into; created if missing. Existing files of the
    /// same name are replaced atomically. Required unless --component
    /// restores in place.
    #[arg(short, long, value_name = "DIR", required_unless_present = "component")]
    target: Option<PathBuf>,
    /// Restore only this path of the snapshot and what is below it
    /// (repeatable).
    #[arg(short, long = "include", value_name = "PATH")]
    includes: Vec<PathBuf>,
    /// Restore this component of an application snapshot (`cairn snap`).
    /// Without --target its files are put back in place: a safety snapshot
    /// of their current state first, then each file replaced atomically
    /// (a database's -wal/-shm/-journal files removed with it), and the
    /// command that undoes it is printed. Nothing else is touched: config
    /// files come back only with --component config.
    #[arg(short, long, value_name = "NAME", conflicts_with = "includes")]
    component: Option<String>,
    /// With --component in place: say what would change (files, tables'
    /// row counts) and change nothing.
    #[arg(long, requires = "component", conflicts_with = "target")]
    dry_run: bool,
    /// Replace a database even though another process has it open (that
    /// process would go on using the old file): with --component in
    /// place, or --target / (every file back where it was, after a
    /// safety snapshot of the files it replaces, as in place).
    #[arg(long)]
    force: bool,
}

/// The arguments of a restore into a directory (`--target`); the cache
/// directory and the profile (global options) and a component's paths
/// (read from the snapshot) are set by [`restore`].
impl TryFrom<&RestoreArgs> for RestoreOptions {
    type Error = anyhow::Error;

    fn try_from(a: &RestoreArgs) -> Result<Self> {
        let Some(target) = &a.target else {
            bail!("give --target DIR, or --component NAME to restore in place");
        };
        let mut opts = Self::new(target);
        opts.includes.clone_from(&a.includes);
        opts.force = a.force;
        Ok(opts)
    }
}

/// The arguments of a component restore in place (`--component` without
/// `--target`); the cache directory and the profile (global options) are
/// set by [`restore`].
impl TryFrom<&RestoreArgs> for ComponentRestoreOptions {
    type Error = anyhow::Error;

    fn try_from(a: &RestoreArgs) -> Result<Self> {
        let Some(component) = &a.component else {
            bail!("give --target DIR, or --component NAME to restore in place");
        };
        Ok(Self {
            component: component.clone(),
            dry_run: a.dry_run,
            force: a.force,
            cache_dir: None,
            profile: None,
        })
    }
}

/// The arguments of a point-in-time restore of a watched database; the
/// cache directory (a global option) is set by `restore_db_at`.
impl From<&RestoreArgs> for PitrRestoreOptions {
    fn from(a: &RestoreArgs) -> Self {
        let mut opts = Self::default();
        opts.host.clone_from(&a.at.host);
        opts.overwrite = a.overwrite;
        opts.force = a.force;
        opts
    }
}

pub fn restore(g: &Global, out: &Out, a: &RestoreArgs) -> Result<u8> {
    let (repo, _) = open(g)?;
    if let Some(db) = a.snapshot.as_deref() {
        if a.at.at.is_some() || a.txn.is_some() {
            return restore_db_at(g, out, &repo, db, a);
        }
        if !names_a_snapshot(db) {
            return restore_db_at(g, out, &repo, db, a).with_context(|| {
                format!("'{db}' is not a snapshot id, so it was taken for a database `cairn watch` follows")
            });
        }
    }
    if a.overwrite {
        bail!(
            "--overwrite is for restoring a watched database (with --at or --txn); a snapshot's files are always replaced atomically"
        );
    }
    let (id, snap) = a.at.resolve(&repo, a.snapshot.as_deref())?;
    if a.target.is_none() {
        // `--component` without `--target` (clap requires one of them).
        let mut opts = ComponentRestoreOptions::try_from(a)?;
        opts.cache_dir = password::cache_dir(g);
        opts.profile.clone_from(&g.loaded);
        return restore_in_place(g, out, &repo, id, &snap, &opts);
    }
    let mut opts = RestoreOptions::try_from(a)?;
    opts.cache_dir = password::cache_dir(g);
    opts.profile = g.loaded.as_ref().map(|p| p.file.clone());
    if let Some(c) = &a.component {
        (opts.includes, opts.excludes) =
            cairn::component_paths(&repo, id, &snap, c, g.loaded.as_ref())?;
    }
    let target = &opts.target;
    let bar = out.progress(true, "restoring");
    let result = cairn::restore(&repo, &snap, &opts, &BarProgress(bar.clone()));
    bar.finish_and_clear();
    report_audit_errors(out, &repo);
    let done = result?;
    for w in &done.warnings {
        out.warn(w);
    }
    for e in &done.errors {
        eprintln!("cairn: not restored: {}", terminal_safe(e));
    }
    let undo = done.undo.as_ref().map(|u| undo_command(g, u));
    if out.json {
        out.print_json(&done.report(id, target.clone(), a.component.clone(), undo.clone()))?;
    } else if !out.quiet {
        outln!(
            "restored snapshot {} to {}: {} files, {} directories, {} other, {}",
            id.short(),
            target.display(),
            done.files,
            done.dirs,
            done.others,
            size(done.bytes)
        );
        if let (Some(u), Some(cmd)) = (&done.undo, &undo) {
            outln!(
                "safety snapshot {} saved: the replaced files as they were; to undo, run:\n  {cmd}",
                u.snapshot.short()
            );
        }
    }
    if done.index_damaged {
        eprintln!(
            "cairn: error: the repository's index is damaged or incomplete: some data was found only by scanning packs that no index lists; run `cairn verify --read-data`"
        );
    }
    if !done.errors.is_empty() {
        eprintln!(
            "cairn: error: restore incomplete: {} item(s) could not be restored (listed above)",
            done.errors.len()
        );
    }
    if done.errors.is_empty() && !done.index_damaged {
        Ok(exit::OK)
    } else {
        Ok(exit::INCOMPLETE)
    }
}

/// Whether `name` can only mean a snapshot: `latest` or an id's prefix.
/// Anything else given to `restore` is a watched database's path.
fn names_a_snapshot(name: &str) -> bool {
    name == "latest" || (!name.is_empty() && name.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `restore --at TIME DB` / `--txn N DB` / `DB`: point-in-time restore
/// of a watched database (without a point, its newest state).
fn restore_db_at(
    g: &Global,
    out: &Out,
    repo: &Repository,
    db: &str,
    a: &RestoreArgs,
) -> Result<u8> {
    let Some(target) = &a.target else {
        bail!("give --target FILE: the file to rebuild {db} into");
    };
    if a.component.is_some() || !a.includes.is_empty() || !a.at.paths.is_empty() {
        bail!("--component, --include and --path do not apply to restoring a watched database");
    }
    let point = match (&a.at.at, a.txn) {
        (_, Some(n)) => cairn::PitrPoint::Txn(n),
        (Some(t), None) => cairn::PitrPoint::Time(parse_time(t)?),
        (None, None) => cairn::PitrPoint::Latest,
    };
    let path = cairn::watched_db_path(std::path::Path::new(db))?;
    let mut opts = PitrRestoreOptions::from(a);
    opts.cache_dir = password::cache_dir(g);
    let bar = out.progress(false, "rebuilding");
    let done = cairn::restore_at(repo, path.as_os_str().as_bytes(), point, target, &opts);
    bar.finish_and_clear();
    report_audit_errors(out, repo);
    let done = done?;
    if let Some(gap) = &done.gap {
        out.warn(format!(
            "that moment lies in a gap of the timeline (from {}{}{}): restored the last transaction that reached the repository",
            local_time(gap.from),
            gap.to.map(|t| format!(" to {}", local_time(t))).unwrap_or_default(),
            gap.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
        ));
    }
    if out.json {
        out.print_json(&serde_json::json!({
            "db": path,
            "target": target,
            "host": done.host,
            "base": done.base,
            "txn": done.txn,
            "time": done.time.to_string(),
            "applied": done.applied,
            "segments": done.segments,
            "pages": done.pages,
            "bytes": done.bytes,
            "safety_snapshot": done.undo.as_ref().map(|u| u.snapshot),
            "undo": done.undo.as_ref().map(|u| undo_command(g, u)),
            "gap": done.gap.as_ref().map(|g| serde_json::json!({
                "from": g.from.to_string(),
                "to": g.to.map(|t| t.to_string()),
                "reason": g.reason,
            })),
        }))?;
    } else if !out.quiet {
        outln!(
            "rebuilt {} as of transaction {} (read at {}) into {}: base {} + {} transactions from {} segments ({} pages written), {}",
            path.display(),
            done.txn,
            done.time,
            target.display(),
            done.base.short(),
            done.applied,
            done.segments,
            done.pages,
            size(done.bytes)
        );
        if let Some(u) = &done.undo {
            outln!(
                "safety snapshot {} saved: {} as it was; to undo, run:\n  {}",
                u.snapshot.short(),
                target.display(),
                undo_command(g, u)
            );
        }
    }
    Ok(exit::OK)
}

/// `cairn restore ID --component NAME` without `--target`: in place.
pub fn restore_in_place(
    g: &Global,
    out: &Out,
    repo: &Repository,
    id: SnapshotId,
    snap: &cairn::Snapshot,
    opts: &ComponentRestoreOptions,
) -> Result<u8> {
    let component = opts.component.as_str();
    let dry_run = opts.dry_run;
    let bar = out.progress(true, "restoring");
    let result = cairn::restore_component(repo, id, snap, opts, &BarProgress(bar.clone()));
    bar.finish_and_clear();
    report_audit_errors(out, repo);
    let done = result?;
    for w in &done.warnings {
        out.warn(w);
    }
    let undo = done.undo.as_ref().map(|u| undo_command(g, u));
    if out.json {
        out.print_json(&done.report(id, component, dry_run, undo))?;
        return Ok(exit::OK);
    }
    if out.quiet {
        return Ok(exit::OK);
    }
    if let Some(s) = done.safety {
        outln!(
            "safety snapshot {} saved: the component as it was before",
            s.short()
        );
    }
    for f in &done.files {
        let verb = match (f.action, dry_run) {
            (FileAction::Unchanged, _) => "unchanged",
            (FileAction::Replace, true) => "would replace",
            (FileAction::Replace, false) => "replaced",
            (FileAction::Create, true) => "would create",
            (FileAction::Create, false) => "created",
        };
        let len = std::fs::metadata(&f.path).map(|m| size(m.len()));
        outln!(
            "{verb} {}{}",
            f.path.display(),
            match (dry_run, len) {
                (false, Ok(l)) if f.action != FileAction::Unchanged => format!(" ({l})"),
                _ => String::new(),
            }
        );
        for t in &f.tables {
            let n = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
            if t.now != t.snapshot {
                outln!(
                    "  table {}: {} rows {} {}",
                    t.name,
                    n(t.now),
                    if dry_run { "→ would be" } else { "→" },
                    n(t.snapshot)
                );
            }
        }
    }
    if let Some(u) = undo {
        outln!("to undo: {u}");
    } else if dry_run {
        outln!("dry run: nothing changed");
    }
    Ok(exit::OK)
}
