//! Application commands: `snap` and `run`, over the profile
//! (`cairn.toml`) found for the current directory or named with
//! `--profile`; and finding that profile for every command.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use anyhow::{Context, Result, anyhow};
use clap::Args;

use cairn::{Profile, Repository, SnapOptions, SnapshotId};

use super::exit;
use super::global::Global;
use super::output::{BarProgress, Out, report_audit_errors};
use super::password;
use super::render::{print_backup, undo_command};
use super::repo_open::open_or_create_default;

/// Finds the profile (`--profile`, `CAIRN_PROFILE`, else the nearest
/// `cairn.toml` in the current directory or above) and lets it supply the
/// repository and password source the command line and environment leave
/// open.
pub fn apply_profile(g: &mut Global) -> Result<()> {
    let file = match &g.profile {
        Some(f) => Some(f.clone()),
        None => std::env::current_dir().ok().and_then(|d| Profile::find(&d)),
    };
    let Some(file) = file else {
        return Ok(());
    };
    let profile = Profile::load(&file)?;
    if g.repo.is_none() {
        g.repo.clone_from(&profile.repo);
    }
    if !password::password_given(g) {
        g.password_file.clone_from(&profile.password_file);
        g.password_command.clone_from(&profile.password_command);
    }
    g.loaded = Some(profile);
    Ok(())
}

fn profile(g: &Global) -> Result<&Profile> {
    g.loaded.as_ref().ok_or_else(|| {
        anyhow!(
            "no application profile: create a {} in the application's root (see `cairn snap --help`), run cairn there, or pass --profile FILE",
            cairn::PROFILE_FILE
        )
    })
}

#[derive(Debug, Args)]
#[command(after_help = "\
A cairn.toml at the application's root describes it, for example:

  app = \"shop\"                  # default: the directory's name
  repo = \"/srv/backups/shop\"    # optional; --repo and CAIRN_REPO win
  password_file = \"/etc/cairn/shop.pass\"   # optional

  [components.db]
  sqlite = \"prisma/dev.db\"      # captured consistently while the app runs

  [components.code]
  paths = [\".\"]                 # excludes node_modules/ .next/ target/ .git/ *.log
  exclude = [\"coverage/\"]       # more excludes; default_excludes = false drops the defaults

  [components.config]
  paths = [\".env\", \"package.json\"]

  [components.pg]               # a database dump, stored as its own snapshot
  dump = [\"pg_dump\", \"--clean\", \"--if-exists\", \"shop\"]
  restore = [\"psql\", \"-v\", \"ON_ERROR_STOP=1\", \"shop\"]   # reads the dump on stdin
  name = \"shop.sql\"             # default: COMPONENT.dump

  [retention]                   # used by `cairn forget --app`
  keep_last = 10
  keep_daily = 7

Paths are relative to the profile's directory, where dump and restore commands run
(without a shell); a path belongs to one component.
The snapshot records the components, the app's name, host, and git branch,
commit and dirty state.")]
pub struct SnapArgs {
    /// Only this component (repeatable); default: all of them.
    #[arg(short, long = "component", value_name = "NAME")]
    components: Vec<String>,
    /// Add a tag to the snapshot (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Read every file even when the parent snapshot says it is unchanged.
    #[arg(long)]
    force: bool,
}

/// The arguments of `snap`; the cache directory (a global option) is set
/// by [`snap`].
impl From<&SnapArgs> for SnapOptions {
    fn from(a: &SnapArgs) -> Self {
        Self {
            components: a.components.clone(),
            tags: a.tags.clone(),
            cache_dir: None,
            force: a.force,
        }
    }
}

/// `cairn snap`.
pub fn snap(g: &Global, out: &Out, a: &SnapArgs) -> Result<u8> {
    let profile = profile(g)?;
    cairn::check_user_tags(&a.tags)?;
    let repo = open_or_create_default(g, out)?;
    let mut opts = SnapOptions::from(a);
    opts.cache_dir = password::cache_dir(g);
    let done = take(out, &repo, profile, &opts)?;
    if out.json {
        // One snapshot is the usual case; dump components add more.
        let all: Vec<_> = done.iter().map(cairn::BackupOutcome::report).collect();
        match all.as_slice() {
            [one] => out.print_json(one)?,
            _ => out.print_json(&all)?,
        }
    } else {
        for d in &done {
            print_backup(out, d)?;
        }
    }
    Ok(exit::OK)
}

fn take(
    out: &Out,
    repo: &Repository,
    profile: &Profile,
    opts: &SnapOptions,
) -> Result<Vec<cairn::BackupOutcome>> {
    let bar = out.progress(true, "snapshot");
    let result = cairn::snap(repo, profile, opts, &BarProgress(bar.clone()));
    bar.finish_and_clear();
    report_audit_errors(out, repo);
    Ok(result?)
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Snapshot only this component before and after (repeatable);
    /// default: all of them.
    #[arg(short, long = "component", value_name = "NAME")]
    components: Vec<String>,
    /// The command and its arguments (after `--`), run without a shell in
    /// the current directory.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<OsString>,
}

/// The snapshot before `run`'s command (tag `pre`); the one after takes
/// other tags. The cache directory (a global option) is set by [`run`].
impl From<&RunArgs> for SnapOptions {
    fn from(a: &RunArgs) -> Self {
        Self {
            components: a.components.clone(),
            tags: vec![cairn::PRE_TAG.to_owned()],
            cache_dir: None,
            force: false,
        }
    }
}

/// `cairn run`: snapshot (tag `pre`), run the command, snapshot (tag
/// `post`, and `failed` if it failed); exits with the command's code.
pub fn run(g: &Global, out: &Out, a: &RunArgs) -> Result<u8> {
    let profile = profile(g)?;
    let repo = open_or_create_default(g, out)?;
    let mut opts = SnapOptions::from(a);
    opts.cache_dir = password::cache_dir(g);
    let pre = take(out, &repo, profile, &opts)?;
    for p in &pre {
        for w in &p.warnings {
            out.warn(w);
        }
        out.info(format!(
            "snapshot {} saved before the command (tag pre)",
            p.id.short()
        ));
    }
    let (program, args) = a
        .command
        .split_first()
        .ok_or_else(|| anyhow!("give the command to run after --"))?;
    let shown = a
        .command
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let status = cairn::child_command(program)
        .args(args)
        .status()
        .with_context(|| format!("cannot run `{shown}`"))?;
    // The audit log records what ran between the two snapshots.
    let pre_ids: Vec<String> = pre.iter().map(|p| p.id.short()).collect();
    cairn::audit_record(
        &repo,
        "run",
        &redacted(&a.command),
        status.success(),
        &format!(
            "{status}; snapshot {} taken before it (tag pre)",
            pre_ids.join(", ")
        ),
    );
    opts.tags = vec!["post".to_owned()];
    if !status.success() {
        opts.tags.push("failed".to_owned());
    }
    let post = take(out, &repo, profile, &opts)?;
    for w in post.iter().flat_map(|p| &p.warnings) {
        out.warn(w);
    }
    let undo: Vec<String> = pre
        .iter()
        .flat_map(|p| undo_commands(g, p.id, &p.snapshot))
        .collect();
    let ids = |list: &[cairn::BackupOutcome]| list.iter().map(|p| p.id).collect::<Vec<_>>();
    if out.json {
        out.print_json(&serde_json::json!({
            "pre": ids(&pre),
            "post": ids(&post),
            "command": shown,
            "exit_code": status.code(),
            "success": status.success(),
            "restore_commands": undo,
        }))?;
    } else if !out.quiet {
        for p in &post {
            outln!(
                "snapshot {} saved after the command (tag {})",
                p.id.short(),
                opts.tags.join(",")
            );
        }
    }
    if status.success() {
        return Ok(exit::OK);
    }
    eprintln!("cairn: error: `{shown}` failed ({status}); to go back to the state before it, run:");
    for cmd in &undo {
        eprintln!("  {cmd}");
    }
    Ok(status
        .code()
        .and_then(|c| u8::try_from(c).ok())
        .filter(|&c| c != 0)
        .unwrap_or(exit::ERROR))
}

/// The command line for the audit log, without what looks like a secret:
/// a URL's password (`postgres://u:PASS@h`) and the value of an argument
/// named like one (`--password=…`, `TOKEN=…`).
fn redacted(command: &[OsString]) -> String {
    let secretish = |name: &str| {
        let lower = name.to_ascii_lowercase();
        ["pass", "token", "secret", "key"]
            .iter()
            .any(|w| lower.contains(w))
    };
    let mut out = Vec::with_capacity(command.len());
    let mut next_is_secret = false;
    for arg in command {
        let arg = arg.to_string_lossy();
        if std::mem::take(&mut next_is_secret) {
            out.push("***".to_owned());
            continue;
        }
        if let Some((scheme, rest)) = arg.split_once("://")
            && let Some((userinfo, host)) = rest.rsplit_once('@')
            && let Some((user, _)) = userinfo.split_once(':')
        {
            out.push(format!("{scheme}://{user}:***@{host}"));
        } else if let Some((name, _)) = arg.split_once('=')
            && secretish(name)
        {
            out.push(format!("{name}=***"));
        } else {
            // `--password VALUE`: the value is the next argument.
            next_is_secret = arg.starts_with('-') && secretish(&arg);
            out.push(arg.into_owned());
        }
    }
    out.join(" ")
}

/// The commands that put back each component of `snap` that can be
/// restored in place (files, not directories).
fn undo_commands(g: &Global, id: SnapshotId, snap: &cairn::Snapshot) -> Vec<String> {
    let Some(app) = &snap.app else {
        return Vec::new();
    };
    app.components
        .iter()
        .map(|c| {
            let dirs = c.kind == "files"
                && c.paths.iter().any(|p| {
                    std::fs::symlink_metadata(OsStr::from_bytes(p)).is_ok_and(|m| m.is_dir())
                });
            let undo = cairn::Undo {
                snapshot: id,
                component: Some(c.name.clone()),
                files: Vec::new(),
                profile: g.loaded.as_ref().map(|p| p.file.clone()),
            };
            let target = if dirs { " --target DIR" } else { "" };
            format!("{}{target}", undo_command(g, &undo))
        })
        .collect()
}
