//! One function per subcommand: turn arguments into library options, call
//! the library, render the result.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde::Serialize;

use cairn::{
    BackupOptions, BlobId, FileKind, InitOptions, KeyId, Node, NodeKind, PackId, Repository,
    RestoreOptions, SnapshotId, VerifyOptions,
};

use super::output::{BarProgress, size};
use super::password::{self, backend, location, new_password, open};
use super::{Global, Out, exit};

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Store objects unencrypted (integrity-checked only). Anyone who can
    /// read the repository can read your data.
    #[arg(long)]
    no_encryption: bool,
    /// zstd level for stored data, 0 (off) to 22; higher is smaller and slower.
    #[arg(long, value_name = "LEVEL", default_value_t = InitOptions::default().compression_level, value_parser = clap::value_parser!(i32).range(0..=22))]
    compression_level: i32,
    #[command(flatten)]
    kdf: KdfArgs,
    /// Size in MiB at which packs are closed [default: 16 on a file
    /// system, 64 on object storage]
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pack_size: Option<u32>,
    #[command(flatten)]
    from: super::copy::InitFrom,
}

/// How hard a new key is to guess.
#[derive(Debug, Args)]
pub struct KdfArgs {
    /// Memory, in MiB, argon2id uses to derive the key from the password
    /// (19 to 1024). More is harder to brute-force; it is also the peak
    /// memory of every command that opens the repository with this key.
    #[arg(long, value_name = "MIB", default_value_t = cairn::DEFAULT_KDF_MEMORY_MIB,
          value_parser = clap::value_parser!(u32).range(i64::from(cairn::MIN_KDF_MEMORY_MIB)..=i64::from(cairn::MAX_KDF_MEMORY_MIB)))]
    kdf_memory: u32,
}

pub fn init(g: &Global, out: &Out, a: &InitArgs) -> Result<u8> {
    let loc = location(g)?;
    let mut opts = InitOptions::default();
    opts.encryption = !a.no_encryption;
    opts.compression_level = a.compression_level;
    opts.pack_target_size = a.pack_size.map(|m| m << 20);
    opts.kdf_memory_mib = a.kdf.kdf_memory;
    let related = a.from.apply(g, &mut opts)?;
    let pw = if a.no_encryption {
        None
    } else if let (Some(key), false) = (&loc.default_key, password::password_given(g)) {
        Some(default_key(out, key)?)
    } else {
        Some(new_password(g, &loc, "init")?)
    };
    let repo = Repository::init(backend(g, &loc)?, pw.as_deref(), &opts)?;
    if out.json {
        out.print_json(&serde_json::json!({
            "location": loc.path,
            "key": repo.key_id(),
            "encrypted": !a.no_encryption,
            "related_to": related,
        }))?;
    } else {
        out.info(format!("created repository at {}", loc.path.display()));
        if let Some(other) = &related {
            out.info(format!(
                "it shares blob ids and chunking with {}: `cairn copy` between them transfers only missing data",
                other.display()
            ));
        }
        if a.no_encryption {
            out.warn("the repository is NOT encrypted: anyone who can read it can read your data");
        } else {
            out.info("keep the password safe: without it the data cannot be read back");
        }
    }
    Ok(exit::OK)
}

/// Reads or creates the default repository's key file.
fn default_key(out: &Out, key: &std::path::Path) -> Result<Vec<u8>> {
    if key.exists() {
        return password::read_key_file(key);
    }
    let pw = password::create_default_key(key)?;
    out.info(format!(
        "generated the key of the default repository at {} (mode 0600).\n\
         Keep a copy of that file somewhere other than this machine: without it the backups cannot be read.",
        key.display()
    ));
    Ok(pw)
}

#[derive(Debug, Args)]
#[command(after_help = "\
A stream is stored as one file at the snapshot's root, /NAME, with mode 0600:
`cairn dump latest NAME` writes it back. A command runs without a shell; its stderr
is passed through, and if it cannot start, exits non-zero or is killed, the backup
fails and saves no snapshot. Plain, uncompressed dumps deduplicate best:
  cairn backup --stdin-from-command app.sql -- pg_dump --no-owner appdb")]
pub struct BackupArgs {
    /// Files and directories to back up.
    #[arg(
        value_name = "PATH",
        required_unless_present_any = ["stdin", "stdin_from_command"],
        conflicts_with_all = ["stdin", "stdin_from_command"]
    )]
    paths: Vec<PathBuf>,
    /// Back up standard input as one file, named by --stdin-name.
    #[arg(long, conflicts_with = "stdin_from_command")]
    stdin: bool,
    /// The file name standard input is stored under (at the snapshot's
    /// root, as /NAME).
    #[arg(long, value_name = "NAME", default_value = "stdin", requires = "stdin")]
    stdin_name: String,
    /// Run the command given after `--` (no shell) and back up its standard
    /// output as the file NAME (at the snapshot's root, as /NAME).
    #[arg(long, value_name = "NAME", requires = "command")]
    stdin_from_command: Option<String>,
    /// The command for --stdin-from-command, after `--`.
    #[arg(last = true, value_name = "COMMAND", requires = "stdin_from_command")]
    command: Vec<std::ffi::OsString>,
    /// Tag the snapshot (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Record this host name instead of this machine's (retention and
    /// parent selection group by host).
    #[arg(long, env = "CAIRN_HOST", value_name = "NAME")]
    host: Option<String>,
    /// Leave out paths matching this gitignore-style pattern (repeatable).
    #[arg(short = 'e', long = "exclude", value_name = "PATTERN")]
    excludes: Vec<String>,
    /// Read exclude patterns from a file, one per line (repeatable).
    #[arg(long = "exclude-file", value_name = "FILE")]
    exclude_files: Vec<PathBuf>,
    /// Do not cross file-system boundaries.
    #[arg(short = 'x', long)]
    one_file_system: bool,
    /// Compare against this snapshot instead of the latest with the same
    /// host and paths.
    #[arg(long, value_name = "SNAPSHOT")]
    parent: Option<String>,
    /// Read every file, even those the parent snapshot says are unchanged.
    #[arg(long)]
    force: bool,
    /// Record this time as the snapshot's instead of now (RFC 3339, a local
    /// time like "2026-11-20 14:00", or "3 days ago"; not in the future).
    #[arg(long, value_name = "TIME")]
    time: Option<String>,
    /// Store each SQLite database (a file with SQLite's header) as a
    /// consistent image taken with SQLite's online backup API, without its
    /// -wal, -shm and -journal files (auto); or as raw bytes (off). The
    /// image is staged in the temporary directory ($TMPDIR), which needs
    /// room for the largest database.
    #[arg(long, value_name = "MODE", default_value = "auto")]
    sqlite: SqliteArg,
    /// Capture this file as a SQLite database even when its header cannot
    /// be read as the backup reaches it, and even with --sqlite off
    /// (repeatable).
    #[arg(long = "sqlite-db", value_name = "PATH")]
    sqlite_dbs: Vec<PathBuf>,
}

/// `backup --sqlite`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SqliteArg {
    Auto,
    Off,
}

pub(super) fn open_or_create_default(g: &Global, out: &Out) -> Result<Repository> {
    open_or_create(g, out, true)
}

/// As [`open_or_create_default`]; `create_named` also creates the
/// repository a profile names (a command a person runs; not the daemon,
/// which at boot could find a backup disk not mounted yet and create a
/// new repository in its empty mount point).
pub(super) fn open_or_create(g: &Global, out: &Out, create_named: bool) -> Result<Repository> {
    let loc = location(g)?;
    match Repository::open_cached(
        backend(g, &loc)?,
        password::cache_dir(g).as_deref(),
        &mut || password::password(g, &loc),
    ) {
        Ok(r) => {
            password::refuse_downgrade(g, &r)?;
            password::set_lock_wait(g, &r)?;
            Ok(r)
        }
        Err(cairn::Error::RepoNotFound { .. }) if loc.default_key.is_some() => {
            let key = loc
                .default_key
                .as_deref()
                .unwrap_or(std::path::Path::new(""));
            let pw = default_key(out, key)?;
            let repo = Repository::init(backend(g, &loc)?, Some(&pw), &InitOptions::default())?;
            out.info(format!(
                "created the default repository at {} (use --repo or CAIRN_REPO for another)",
                loc.path.display()
            ));
            Ok(repo)
        }
        // The repository the application's cairn.toml names, with the
        // password source it (or the environment) gives: created on the
        // first snapshot, as the default repository is.
        Err(cairn::Error::RepoNotFound { .. })
            if create_named
                && g.loaded
                    .as_ref()
                    .is_some_and(|p| p.repo.is_some() && p.repo == g.repo)
                && password::password_given(g) =>
        {
            let pw = password::password(g, &loc)?;
            let repo = Repository::init(backend(g, &loc)?, Some(&pw), &InitOptions::default())?;
            out.info(format!(
                "created the repository {} that {} names",
                loc.path.display(),
                g.loaded
                    .as_ref()
                    .map_or_else(String::new, |p| p.file.display().to_string())
            ));
            Ok(repo)
        }
        Err(e) => Err(e.into()),
    }
}

pub fn backup(g: &Global, out: &Out, a: &BackupArgs) -> Result<u8> {
    let repo = open_or_create_default(g, out)?;
    let mut opts = BackupOptions::new(if a.stdin || a.stdin_from_command.is_some() {
        Vec::new()
    } else {
        a.paths.clone()
    });
    cairn::check_user_tags(&a.tags)?;
    opts.tags.clone_from(&a.tags);
    opts.host.clone_from(&a.host);
    opts.excludes.clone_from(&a.excludes);
    opts.exclude_files.clone_from(&a.exclude_files);
    opts.one_file_system = a.one_file_system;
    opts.force = a.force;
    opts.cache_dir = password::cache_dir(g);
    opts.special = Some(std::sync::Arc::new(cairn::SqliteFiles::new(
        match a.sqlite {
            SqliteArg::Auto => cairn::SqliteMode::Auto,
            SqliteArg::Off => cairn::SqliteMode::Off,
        },
    )));
    opts.special_paths.clone_from(&a.sqlite_dbs);
    if let Some(t) = &a.time {
        opts.time = Some(parse_time(t)?);
    }
    if let Some(p) = &a.parent {
        opts.parent = Some(repo.find_snapshot(p)?.0);
    }
    let bar = out.progress(true, "backing up");
    let progress = BarProgress(bar.clone());
    let result = if let Some(name) = &a.stdin_from_command {
        cairn::backup_command(&repo, &opts, name.as_bytes(), &a.command, &progress)
    } else if a.stdin {
        cairn::backup_stream(
            &repo,
            &opts,
            a.stdin_name.as_bytes(),
            std::io::stdin(),
            &progress,
        )
    } else {
        cairn::backup(&repo, &opts, &progress)
    };
    bar.finish_and_clear();
    super::log::report_audit_errors(out, &repo);
    let done = result?;
    print_backup(out, &done)?;
    Ok(exit::OK)
}

/// The JSON record of a finished backup.
pub(super) fn backup_json(done: &cairn::BackupOutcome) -> serde_json::Value {
    serde_json::json!({
        "id": done.id,
        "parent": done.snapshot.parent,
        "tags": done.snapshot.tags,
        "summary": done.snapshot.summary,
        "dirs_from_cache": done.dirs_reused,
        "app": snapshot_view(done.id, &done.snapshot).app,
        "databases": done.snapshot.databases.iter().map(database_view).collect::<Vec<_>>(),
        "warnings": done.warnings,
    })
}

/// Prints a finished backup's warnings and report.
pub(super) fn print_backup(out: &Out, done: &cairn::BackupOutcome) -> Result<()> {
    for w in &done.warnings {
        out.warn(w);
    }
    let s = &done.snapshot.summary;
    if out.json {
        out.print_json(&backup_json(done))?;
    } else if !out.quiet {
        outln!("snapshot {} saved", done.id.short());
        outln!(
            // Files of the parent whose content was read again: changed,
            // or too new to trust their stat (store-format.md §snapshot
            // summary); "changed" would overstate a fresh copy's second
            // backup.
            "  files: {} new, {} re-read, {} unchanged; {} directories, {} other",
            s.files_new,
            s.files_changed,
            s.files_unchanged,
            s.dirs,
            s.others
        );
        outln!(
            "  read {}, added {} of new data to the repository ({} stored)",
            size(s.bytes_read),
            size(s.bytes_added),
            size(s.bytes_stored)
        );
        outln!(
            "  total {} in this snapshot; took {:.2}s",
            size(s.total_size),
            s.duration_ms as f64 / 1000.0
        );
        if let Some(app) = &done.snapshot.app {
            outln!("  {}", app_line(app));
        }
        for d in &done.snapshot.databases {
            outln!("  {}", database_line(d));
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    /// List only what the repository held at TIME: per host and paths, the
    /// newest snapshot taken at or before it.
    #[command(flatten)]
    at: AtArgs,
}

/// A time from the command line; local times in the system's zone.
fn parse_time(text: &str) -> Result<jiff::Timestamp> {
    Ok(cairn::parse_time(
        text,
        jiff::Timestamp::now(),
        &jiff::tz::TimeZone::system(),
    )?)
}

/// Which snapshot `--at` and its filters choose, for the commands that
/// read one snapshot.
#[derive(Debug, Args)]
pub struct AtArgs {
    /// Use the newest snapshot taken at or before TIME (RFC 3339, a local
    /// time like "2026-11-20 14:00", a date, or "2h ago"), instead of
    /// naming one.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// With `latest` or --at: only snapshots of this host.
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
    /// With `latest` or --at: only snapshots of exactly these backup paths
    /// (repeatable).
    #[arg(long = "path", value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// With `latest` or --at: only snapshots that have this tag
    /// (repeatable: all of them).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Choose `latest` (or the snapshot at --at) among the readable
    /// snapshots only. Without it a damaged snapshot file stops the
    /// command: its time cannot be read, so it may be the newest.
    #[arg(long)]
    skip_damaged: bool,
}

/// Adds, to a failure to choose the newest snapshot because a snapshot file
/// is damaged, how to choose among the readable ones.
pub(super) fn damaged_hint<T>(r: cairn::Result<T>, hint: bool) -> Result<T> {
    match r {
        Err(e) if e.is_damage() && hint => Err(anyhow::Error::new(e).context(
            "cannot choose the newest snapshot (pass --skip-damaged to choose among the readable ones)",
        )),
        r => Ok(r?),
    }
}

impl AtArgs {
    fn damaged(&self) -> cairn::DamagedSnapshots {
        if self.skip_damaged {
            cairn::DamagedSnapshots::Skip
        } else {
            cairn::DamagedSnapshots::Refuse
        }
    }

    fn keeps(&self, s: &cairn::Snapshot, want: &[PathBuf]) -> bool {
        let host_ok = self.host.as_ref().is_none_or(|h| *h == s.hostname);
        let paths_ok = want.is_empty() || {
            let mut want: Vec<&[u8]> = want.iter().map(|p| p.as_os_str().as_bytes()).collect();
            let mut have: Vec<&[u8]> = s.paths.iter().map(Vec::as_slice).collect();
            want.sort_unstable();
            have.sort_unstable();
            want == have
        };
        let tags_ok = self.tags.iter().all(|t| s.tags.contains(t));
        host_ok && paths_ok && tags_ok
    }

    /// Whether --host, --path or --tag narrow the choice.
    fn filtered(&self) -> bool {
        self.host.is_some() || !self.paths.is_empty() || !self.tags.is_empty()
    }

    /// The readable snapshots the filters keep, oldest first (a damaged
    /// file stops this unless --skip-damaged).
    fn candidates(&self, repo: &Repository) -> Result<Vec<(SnapshotId, cairn::Snapshot)>> {
        // Paths as backups record them, so that `--path .` works.
        let want = self
            .paths
            .iter()
            .map(|p| cairn::absolute_path(p))
            .collect::<cairn::Result<Vec<_>>>()?;
        Ok(damaged_hint(
            cairn::readable_snapshots(repo.snapshots()?, self.damaged()),
            !self.skip_damaged,
        )?
        .into_iter()
        .filter(|(_, s)| self.keeps(s, &want))
        .collect())
    }

    /// The snapshots `--at` chooses, one per host and paths, oldest first.
    fn chosen(&self, repo: &Repository, at: &str) -> Result<Vec<(SnapshotId, cairn::Snapshot)>> {
        let when = parse_time(at)?;
        let all = self.candidates(repo)?;
        let chosen: Vec<_> = cairn::newest_at(&all, when)
            .into_iter()
            .map(|(id, s)| (id, s.clone()))
            .collect();
        if chosen.is_empty() {
            match all.iter().map(|(_, s)| s.timestamp()).min() {
                Some(first) => bail!(
                    "no snapshot was taken at or before {} (the first matching one is from {})",
                    local_time(when),
                    local_time(first)
                ),
                None => bail!("no snapshot matches --host/--path/--tag"),
            }
        }
        Ok(chosen)
    }

    /// The one snapshot for `SNAPSHOT` or `--at`. Several groups at that
    /// time need --host/--path to choose between them.
    pub(super) fn resolve(
        &self,
        repo: &Repository,
        snapshot: Option<&str>,
    ) -> Result<(SnapshotId, cairn::Snapshot)> {
        match (snapshot, &self.at) {
            // restic's `latest --host h`: the newest of that host (and
            // paths, tags); a safety snapshot is never `latest`.
            (Some("latest"), None) if self.filtered() => self
                .candidates(repo)?
                .into_iter()
                .rev()
                .find(|(_, s)| !s.is_safety())
                .ok_or_else(|| anyhow::anyhow!("no snapshot matches --host/--path/--tag")),
            (Some("latest"), None) => damaged_hint(
                repo.find_snapshot_with("latest", self.damaged()),
                !self.skip_damaged,
            ),
            (Some(s), None) if self.filtered() => bail!(
                "--host, --path and --tag choose among snapshots for `latest` or --at; '{s}' names one snapshot already"
            ),
            (Some(s), None) => Ok(repo.find_snapshot(s)?),
            (None, Some(at)) => {
                let mut chosen = self.chosen(repo, at)?;
                if chosen.len() > 1 {
                    let list: Vec<String> = chosen
                        .iter()
                        .map(|(id, s)| {
                            format!(
                                "{} ({} {})",
                                id.short(),
                                s.hostname,
                                s.display_paths().join(" ")
                            )
                        })
                        .collect();
                    bail!(
                        "{} sources have a snapshot at that time: {}; choose one with --host and --path",
                        chosen.len(),
                        list.join(", ")
                    );
                }
                chosen
                    .pop()
                    .ok_or_else(|| anyhow::anyhow!("no snapshot at that time"))
            }
            (Some(_), Some(_)) => bail!("give a snapshot or --at, not both"),
            (None, None) => {
                bail!("give a snapshot (an id, a unique prefix or `latest`) or --at TIME")
            }
        }
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
    let mut opts = cairn::PitrRestoreOptions::default();
    opts.host.clone_from(&a.at.host);
    opts.overwrite = a.overwrite;
    opts.force = a.force;
    opts.cache_dir = password::cache_dir(g);
    let bar = out.progress(false, "rebuilding");
    let done = cairn::restore_at(repo, path.as_os_str().as_bytes(), point, target, &opts);
    bar.finish_and_clear();
    super::log::report_audit_errors(out, repo);
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
            "undo": done.undo.as_ref().map(|u| super::app::undo_command(g, u)),
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
                super::app::undo_command(g, u)
            );
        }
    }
    Ok(exit::OK)
}

pub(super) fn local_time(ts: jiff::Timestamp) -> String {
    ts.to_zoned(jiff::tz::TimeZone::system())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

#[derive(Serialize)]
struct SnapshotView<'a> {
    id: SnapshotId,
    time: String,
    hostname: &'a str,
    username: &'a str,
    paths: Vec<String>,
    tags: &'a [String],
    parent: Option<SnapshotId>,
    tree: BlobId,
    summary: &'a cairn::Summary,
    program_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    app: Option<AppView<'a>>,
    databases: Vec<DatabaseView<'a>>,
    /// For a copy (`cairn copy`): the snapshot it copies.
    #[serde(skip_serializing_if = "Option::is_none")]
    original: Option<SnapshotId>,
}

#[derive(Serialize)]
struct AppView<'a> {
    name: &'a str,
    root: String,
    components: Vec<ComponentView<'a>>,
    git: Option<&'a cairn::GitInfo>,
}

#[derive(Serialize)]
struct ComponentView<'a> {
    name: &'a str,
    kind: &'a str,
    paths: Vec<String>,
}

#[derive(Serialize)]
pub(super) struct DatabaseView<'a> {
    path: String,
    page_size: u32,
    tables: &'a [cairn::TableRows],
}

fn lossy(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

pub(super) fn database_view(d: &cairn::DatabaseInfo) -> DatabaseView<'_> {
    DatabaseView {
        path: lossy(&d.path),
        page_size: d.page_size,
        tables: &d.tables,
    }
}

/// The text line under an application snapshot: components and git state.
pub(super) fn app_line(app: &cairn::AppInfo) -> String {
    let comps: Vec<&str> = app.components.iter().map(|c| c.name.as_str()).collect();
    let git = match &app.git {
        None => "no git".to_owned(),
        Some(g) => {
            let commit = g.commit.get(..10).unwrap_or(&g.commit);
            format!(
                "git {} {}{}",
                g.branch.as_deref().unwrap_or("(detached)"),
                if commit.is_empty() {
                    "(no commit)"
                } else {
                    commit
                },
                if g.dirty { " dirty" } else { "" }
            )
        }
    };
    format!("app {} [{}]  {git}", app.name, comps.join(", "))
}

/// The text line of a captured database: its tables' row counts.
fn database_line(d: &cairn::DatabaseInfo) -> String {
    let tables: Vec<String> = d
        .tables
        .iter()
        .map(|t| format!("{} {}", t.name, t.rows))
        .collect();
    format!("database {}: {}", lossy(&d.path), tables.join(", "))
}

fn snapshot_view(id: SnapshotId, s: &cairn::Snapshot) -> SnapshotView<'_> {
    SnapshotView {
        id,
        time: s.timestamp().to_string(),
        hostname: &s.hostname,
        username: &s.username,
        paths: s.display_paths(),
        tags: &s.tags,
        parent: s.parent,
        tree: s.tree,
        summary: &s.summary,
        program_version: &s.program_version,
        app: s.app.as_ref().map(|a| AppView {
            name: &a.name,
            root: lossy(&a.root),
            components: a
                .components
                .iter()
                .map(|c| ComponentView {
                    name: &c.name,
                    kind: &c.kind,
                    paths: c.paths.iter().map(|p| lossy(p)).collect(),
                })
                .collect(),
            git: a.git.as_ref(),
        }),
        databases: s.databases.iter().map(database_view).collect(),
        original: s.original,
    }
}

pub fn snapshots(g: &Global, out: &Out, a: &SnapshotsArgs) -> Result<u8> {
    let (repo, _) = open(g)?;
    let all: Vec<(SnapshotId, cairn::Result<cairn::Snapshot>)> = match &a.at.at {
        Some(at) => {
            a.at.chosen(&repo, at)?
                .into_iter()
                .map(|(id, s)| (id, Ok(s)))
                .collect()
        }
        None if a.at.filtered() => {
            a.at.candidates(&repo)?
                .into_iter()
                .map(|(id, s)| (id, Ok(s)))
                .collect()
        }
        None => repo.snapshots()?,
    };
    let mut code = exit::OK;
    if out.json {
        let views: Vec<_> = all
            .iter()
            .filter_map(|(id, s)| s.as_ref().ok().map(|s| snapshot_view(*id, s)))
            .collect();
        for (id, s) in &all {
            if let Err(e) = s {
                out.warn(format!("snapshot {id}: {e}"));
                code = exit::INCOMPLETE;
            }
        }
        out.print_json(&views)?;
    } else {
        outln!(
            "{:<8}  {:<19}  {:<16}  {:>10}  {:<12}  paths",
            "id",
            "time",
            "host",
            "size",
            "tags"
        );
        for (id, s) in &all {
            match s {
                Ok(s) => {
                    outln!(
                        "{:<8}  {:<19}  {:<16}  {:>10}  {:<12}  {}",
                        id.short(),
                        local_time(s.timestamp()),
                        s.hostname,
                        size(s.summary.total_size),
                        s.tags.join(","),
                        s.display_paths().join(" ")
                    );
                    if let Some(app) = &s.app {
                        outln!("          {}", app_line(app));
                    }
                }
                Err(e) => {
                    out.warn(format!("snapshot {id}: {e}"));
                    code = exit::INCOMPLETE;
                }
            }
        }
        out.info(match all.len() {
            1 => "1 snapshot".to_owned(),
            n => format!("{n} snapshots"),
        });
    }
    Ok(code)
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Snapshot id (or unique prefix), or `latest`; left out with --at.
    snapshot: Option<String>,
    /// Directory or file inside the snapshot to list (default: everything).
    path: Option<PathBuf>,
    #[command(flatten)]
    at: AtArgs,
    /// Show type, mode, owner, size and time.
    #[arg(short, long)]
    long: bool,
}

#[derive(Serialize)]
struct NodeView {
    path: String,
    #[serde(rename = "type")]
    kind: &'static str,
    mode: String,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subtree: Option<BlobId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Vec<BlobId>>,
    /// For a file whose chunks are listed in list blobs: the root list and
    /// its depth.
    #[serde(skip_serializing_if = "Option::is_none")]
    content_list: Option<(BlobId, u8)>,
    /// For a captured SQLite database: its tables' row counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    tables: Option<Vec<cairn::TableRows>>,
}

fn kind_name(k: &NodeKind) -> &'static str {
    match k {
        NodeKind::File { .. } | NodeKind::ListedFile { .. } => "file",
        NodeKind::Dir { .. } => "dir",
        NodeKind::Symlink { .. } => "symlink",
        NodeKind::Fifo => "fifo",
        NodeKind::Socket => "socket",
        NodeKind::CharDevice { .. } => "chardev",
        NodeKind::BlockDevice { .. } => "blockdev",
    }
}

fn node_view(path: &[u8], n: &Node, with_content: bool) -> NodeView {
    let mtime = jiff::Timestamp::new(n.mtime, i32::try_from(n.mtime_nsec).unwrap_or(0))
        .map(|t| t.to_string())
        .unwrap_or_default();
    NodeView {
        path: String::from_utf8_lossy(path).into_owned(),
        kind: kind_name(&n.kind),
        mode: format!("{:04o}", n.mode),
        uid: n.uid,
        gid: n.gid,
        size: n.size,
        mtime,
        target: match &n.kind {
            NodeKind::Symlink { target } => Some(String::from_utf8_lossy(target).into_owned()),
            _ => None,
        },
        subtree: match &n.kind {
            NodeKind::Dir { subtree } => Some(*subtree),
            _ => None,
        },
        content: match &n.kind {
            NodeKind::File { content } if with_content => Some(content.clone()),
            _ => None,
        },
        content_list: match &n.kind {
            // One id, unlike an inline list: always shown.
            NodeKind::ListedFile { list, depth } => Some((*list, *depth)),
            _ => None,
        },
        tables: None,
    }
}

fn print_node(
    out: &Out,
    path: &[u8],
    n: &Node,
    long: bool,
    dbs: &[cairn::DatabaseInfo],
    json_items: &mut Vec<NodeView>,
) {
    let db = dbs.iter().find(|d| d.path == path);
    if out.json {
        let mut v = node_view(path, n, false);
        v.tables = db.map(|d| d.tables.clone());
        json_items.push(v);
        return;
    }
    let mut stdout = std::io::stdout().lock();
    if long {
        let v = node_view(path, n, false);
        let _ = write!(
            stdout,
            "{:<8} {} {:>5} {:>5} {:>10} {} ",
            v.kind,
            v.mode,
            v.uid,
            v.gid,
            v.size,
            local_time(jiff::Timestamp::new(n.mtime, 0).unwrap_or(jiff::Timestamp::UNIX_EPOCH))
        );
    }
    // Names are raw bytes: printed as they are but for control characters,
    // which are escaped rather than sent to the terminal.
    let _ = stdout.write_all(&super::terminal_safe_bytes(path));
    if let (true, NodeKind::Symlink { target }) = (long, &n.kind) {
        let _ = stdout.write_all(b" -> ");
        let _ = stdout.write_all(&super::terminal_safe_bytes(target));
    }
    if let Some(d) = db {
        let _ = write!(stdout, "  [{}]", super::terminal_safe(&database_line(d)));
    }
    let _ = stdout.write_all(b"\n");
}

pub fn ls(g: &Global, out: &Out, a: &LsArgs) -> Result<u8> {
    let (repo, _) = open(g)?;
    // With --at the one positional argument is the path.
    let (snapshot, path) = match (&a.at.at, &a.snapshot, &a.path) {
        (Some(_), Some(p), None) => (None, Some(PathBuf::from(p))),
        (_, s, p) => (s.as_deref(), p.clone()),
    };
    let (_, snap) = a.at.resolve(&repo, snapshot)?;
    let prefix = path
        .as_ref()
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .unwrap_or_default();
    let mut items = Vec::new();
    let start = cairn::find_node(&repo, &snap.tree, &prefix)?;
    let mut base = b"/".to_vec();
    base.extend(prefix.iter().copied().skip_while(|&b| b == b'/'));
    match &start {
        None => cairn::walk_tree(&repo, &snap.tree, b"/", &mut |p, n| {
            print_node(out, p, n, a.long, &snap.databases, &mut items);
        })?,
        Some(node) => {
            print_node(out, &base, node, a.long, &snap.databases, &mut items);
            if let NodeKind::Dir { subtree } = &node.kind {
                cairn::walk_tree(&repo, subtree, &base, &mut |p, n| {
                    print_node(out, p, n, a.long, &snap.databases, &mut items);
                })?;
            }
        }
    }
    if out.json {
        out.print_json(&items)?;
    }
    Ok(exit::OK)
}

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
    let target = match (&a.target, &a.component) {
        (Some(t), _) => t,
        (None, Some(c)) => {
            let opts = cairn::ComponentRestoreOptions {
                component: c.clone(),
                dry_run: a.dry_run,
                force: a.force,
                cache_dir: password::cache_dir(g),
                profile: g.loaded.clone(),
            };
            return super::app::restore_in_place(g, out, &repo, id, &snap, &opts);
        }
        (None, None) => bail!("give --target DIR, or --component NAME to restore in place"),
    };
    let mut opts = RestoreOptions::new(target);
    opts.includes.clone_from(&a.includes);
    opts.force = a.force;
    opts.cache_dir = password::cache_dir(g);
    opts.profile = g.loaded.as_ref().map(|p| p.file.clone());
    if let Some(c) = &a.component {
        (opts.includes, opts.excludes) =
            cairn::component_paths(&repo, id, &snap, c, g.loaded.as_ref())?;
    }
    let bar = out.progress(true, "restoring");
    let result = cairn::restore(&repo, &snap, &opts, &BarProgress(bar.clone()));
    bar.finish_and_clear();
    super::log::report_audit_errors(out, &repo);
    let done = result?;
    for w in &done.warnings {
        out.warn(w);
    }
    for e in &done.errors {
        eprintln!("cairn: not restored: {}", super::terminal_safe(e));
    }
    let undo = done.undo.as_ref().map(|u| super::app::undo_command(g, u));
    if out.json {
        out.print_json(&serde_json::json!({
            "snapshot": id,
            "target": target,
            "safety_snapshot": done.undo.as_ref().map(|u| u.snapshot),
            "undo": undo,
            "files": done.files,
            "dirs": done.dirs,
            "others": done.others,
            "bytes": done.bytes,
            "errors": done.errors,
            "warnings": done.warnings,
            "index_damaged": done.index_damaged,
        }))?;
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

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Also read, decrypt, decompress and rehash every blob.
    #[arg(long)]
    read_data: bool,
    /// Read only subset N of M of the packs (for example 1/7 on Mondays).
    #[arg(long, value_name = "N/M", value_parser = parse_subset)]
    read_data_subset: Option<(u32, u32)>,
}

fn parse_subset(s: &str) -> Result<(u32, u32), String> {
    let parsed = s
        .split_once('/')
        .and_then(|(n, m)| Some((n.trim().parse::<u32>().ok()?, m.trim().parse::<u32>().ok()?)));
    match parsed {
        Some((n, m)) if m > 0 && (1..=m).contains(&n) => Ok((n, m)),
        _ => Err(format!(
            "'{s}': expected N/M with 1 <= N <= M, for example 2/5"
        )),
    }
}

pub fn verify(g: &Global, out: &Out, a: &VerifyArgs) -> Result<u8> {
    let mut opts = VerifyOptions::default();
    opts.read_data = a.read_data || a.read_data_subset.is_some();
    opts.subset = a.read_data_subset;
    // Verify judges the repository itself, never local copies of it.
    let uncached = Global {
        no_cache: true,
        ..g.clone()
    };
    let (repo, _) = open(&uncached)?;
    let bar = out.progress(false, "verifying");
    let report = cairn::verify(&repo, &opts);
    bar.finish_and_clear();
    let report = report?;
    for w in &report.warnings {
        out.warn(w);
    }
    for e in &report.errors {
        eprintln!("cairn: damaged: {e}");
    }
    if out.json {
        out.print_json(&serde_json::json!({
            "ok": report.errors.is_empty(),
            "errors": report.errors,
            "warnings": report.warnings,
            "snapshots": report.snapshots,
            "trees": report.trees,
            "packs_read": report.packs_read,
            "blobs_read": report.blobs_read,
            "bytes_read": report.bytes_read,
            "temporary_files": report.temporary_files,
            "temporary_bytes": report.temporary_bytes,
            "without_lock": report.without_lock,
        }))?;
    } else if !out.quiet {
        outln!(
            "checked {} snapshots, {} trees{}",
            report.snapshots,
            report.trees,
            if opts.read_data {
                format!(
                    ", read {} packs ({} blobs, {})",
                    report.packs_read,
                    report.blobs_read,
                    size(report.bytes_read)
                )
            } else {
                String::new()
            }
        );
    }
    if report.errors.is_empty() {
        if !out.json && !out.quiet {
            outln!("no problems found");
        }
        Ok(exit::OK)
    } else {
        eprintln!(
            "cairn: error: verify found {} problem(s)",
            report.errors.len()
        );
        Ok(exit::INCOMPLETE)
    }
}

#[derive(Debug, Args)]
pub struct StatsArgs {}

pub fn stats(g: &Global, out: &Out, _a: &StatsArgs) -> Result<u8> {
    let (repo, _) = open(g)?;
    let s = cairn::stats(&repo)?;
    if out.json {
        out.print_json(&s)?;
    } else {
        outln!("snapshots:              {}", s.snapshots);
        outln!(
            "packs:                  {} ({})",
            s.packs,
            size(s.pack_bytes)
        );
        outln!("index:                  {}", size(s.index_bytes));
        outln!(
            "data blobs:             {} ({} unique data)",
            s.data_blobs,
            size(s.unique_data_bytes)
        );
        outln!("tree blobs:             {}", s.tree_blobs);
        outln!("files in all snapshots: {}", size(s.total_snapshot_bytes));
        outln!(
            "space saving:           {:.1}x (deduplication and compression)",
            s.space_saving_ratio
        );
        if s.temporary_files > 0 {
            outln!(
                "temporary files:        {} ({}; {} idle {} min or more, which `cairn prune` removes)",
                s.temporary_files,
                size(s.temporary_bytes),
                s.stale_temporary_files,
                cairn::TEMPORARY_STALE_AFTER.as_secs() / 60
            );
        }
    }
    Ok(exit::OK)
}

#[derive(Debug, Args)]
pub struct CatArgs {
    /// What to print.
    #[arg(value_enum)]
    kind: CatKind,
    /// The object's id (not needed for `config`).
    id: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CatKind {
    /// The repository config (JSON).
    Config,
    /// A snapshot (JSON); `latest` or an id prefix.
    Snapshot,
    /// A tree blob (JSON).
    Tree,
    /// A blob's plaintext, raw on stdout.
    Blob,
    /// An index file (JSON).
    Index,
    /// A pack's header (JSON).
    Pack,
    /// A key file's public metadata (JSON).
    Key,
}

pub fn cat(g: &Global, out: &Out, a: &CatArgs) -> Result<u8> {
    let (repo, _) = open(g)?;
    let id = || -> Result<&str> {
        a.id.as_deref()
            .context("this kind of object needs an id: see `cairn cat --help`")
    };
    match a.kind {
        CatKind::Config => {
            let c = repo.config();
            out.print_json(&serde_json::json!({
                "format_version": cairn::FORMAT_VERSION,
                "repo_id": hex::encode(c.repo_id),
                "encryption": format!("{:?}", c.encryption),
                "chunker": {
                    "algorithm": "fastcdc-v2020",
                    "min_size": c.chunker.min_size,
                    "avg_size": c.chunker.avg_size,
                    "max_size": c.chunker.max_size,
                    "normalization": c.chunker.normalization,
                },
                "compression": {"algorithm": "zstd", "level": c.compression_level},
                "pack_target_size": c.pack_target_size,
            }))?;
        }
        CatKind::Snapshot => {
            let (sid, s) = repo.find_snapshot(id()?)?;
            out.print_json(&snapshot_view(sid, &s))?;
        }
        CatKind::Tree => {
            let tid: BlobId = id()?.parse()?;
            let tree = repo.read_tree(&tid)?;
            let nodes: Vec<_> = tree
                .nodes
                .iter()
                .map(|n| node_view(&n.name, n, true))
                .collect();
            out.print_json(&nodes)?;
        }
        CatKind::Blob => {
            let bid: BlobId = id()?.parse()?;
            let data = repo.read_blob(&bid)?;
            std::io::stdout().lock().write_all(&data)?;
        }
        CatKind::Index => {
            let name = id()?;
            let file = repo.read_index_file(name)?;
            let packs: BTreeMap<String, Vec<cairn::PackEntry>> = file
                .packs
                .into_iter()
                .map(|p| (p.id.to_hex(), p.entries))
                .collect();
            out.print_json(&packs)?;
        }
        CatKind::Pack => {
            let pid: PackId = id()?.parse()?;
            let size = repo.backend().size(FileKind::Pack, &pid.to_hex())?;
            let entries = repo.read_pack_header(&pid, size)?;
            out.print_json(&serde_json::json!({"id": pid, "size": size, "blobs": entries}))?;
        }
        CatKind::Key => {
            let kid: KeyId = id()?.parse()?;
            let keys = repo.keys()?;
            let (_, file) = keys
                .into_iter()
                .find(|(k, _)| *k == kid)
                .with_context(|| format!("no key {kid} in this repository"))?;
            let f = file?;
            out.print_json(&serde_json::json!({
                "id": kid,
                "created": jiff::Timestamp::from_second(f.created).map(|t| t.to_string()).unwrap_or_default(),
                "hostname": f.hostname,
                "username": f.username,
                "kdf": f.kdf.map(|k| serde_json::json!({
                    "algorithm": "argon2id",
                    "memory_kib": k.memory_kib,
                    "iterations": k.iterations,
                    "parallelism": k.parallelism,
                })),
            }))?;
        }
    }
    Ok(exit::OK)
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List the key files (one per password).
    List,
    /// Add a password. The new one comes from --new-password-file or a
    /// prompt; the current one from the usual options.
    Add(NewPasswordArgs),
    /// Remove a key file by id (not the one in use, not the last).
    Remove {
        /// Key id or unique prefix.
        id: String,
    },
    /// Change the password: add a key for the new one, remove the current.
    Passwd(NewPasswordArgs),
}

#[derive(Debug, Args)]
pub struct NewPasswordArgs {
    /// Read the new password from the first line of this file.
    #[arg(long, value_name = "FILE")]
    new_password_file: Option<PathBuf>,
    #[command(flatten)]
    kdf: KdfArgs,
    /// Size in MiB at which packs are closed [default: 16 on a file
    /// system, 64 on object storage]
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pack_size: Option<u32>,
}

fn read_new_password(a: &NewPasswordArgs) -> Result<Vec<u8>> {
    match &a.new_password_file {
        Some(f) => {
            let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
            let line = password::first_line(&bytes);
            if line.is_empty() {
                bail!("the new password in {} is empty", f.display());
            }
            Ok(line)
        }
        None => password::new_password_prompt("new key"),
    }
}

fn resolve_key(repo: &Repository, prefix: &str) -> Result<KeyId> {
    let keys = repo.keys()?;
    let matches: Vec<KeyId> = keys
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| k.to_hex().starts_with(&prefix.to_ascii_lowercase()))
        .collect();
    match matches.as_slice() {
        [one] => Ok(*one),
        [] => bail!("no key matches '{prefix}': list them with `cairn key list`"),
        _ => bail!("'{prefix}' matches several keys: give more characters"),
    }
}

pub fn key(g: &Global, out: &Out, cmd: &KeyCommand) -> Result<u8> {
    let loc = location(g)?;
    let mut current = Vec::new();
    let repo = Repository::open(backend(g, &loc)?, &mut || {
        let pw = password::password(g, &loc)?;
        current.clone_from(&pw);
        Ok(pw)
    })?;
    password::refuse_downgrade(g, &repo)?;
    match cmd {
        KeyCommand::List => {
            let keys = repo.keys()?;
            if out.json {
                let items: Vec<_> = keys
                    .iter()
                    .map(|(id, f)| {
                        let f = f.as_ref().ok();
                        serde_json::json!({
                            "id": id,
                            "current": *id == repo.key_id(),
                            "created": f.and_then(|f| jiff::Timestamp::from_second(f.created).ok()).map(|t| t.to_string()),
                            "hostname": f.map(|f| f.hostname.clone()),
                            "username": f.map(|f| f.username.clone()),
                        })
                    })
                    .collect();
                out.print_json(&items)?;
            } else {
                outln!("   {:<8}  {:<19}  {:<16}  user", "id", "created", "host");
                for (id, f) in &keys {
                    let mark = if *id == repo.key_id() { "*" } else { " " };
                    match f {
                        Ok(f) => outln!(
                            "{mark}  {:<8}  {:<19}  {:<16}  {}",
                            id.short(),
                            jiff::Timestamp::from_second(f.created)
                                .map(local_time)
                                .unwrap_or_default(),
                            f.hostname,
                            f.username
                        ),
                        Err(e) => outln!("{mark}  {:<8}  damaged: {e}", id.short()),
                    }
                }
            }
        }
        KeyCommand::Add(a) | KeyCommand::Passwd(a) => {
            let new = read_new_password(a)?;
            let master = repo.master_key(&current)?;
            let id = repo.add_key(&new, &master, a.kdf.kdf_memory)?;
            if matches!(cmd, KeyCommand::Passwd(_)) {
                // The default repository opens with its key file: it must
                // hold the new password before the old key goes.
                if let Some(key) = password::default_key_in_use(g, &loc) {
                    password::replace_default_key(&key, &new)?;
                    out.info(format!(
                        "updated the default repository's key file {}",
                        key.display()
                    ));
                }
                // The new key is durable before the old one goes, so a crash
                // in between leaves both passwords working, never neither.
                repo.backend()
                    .delete(FileKind::Key, &repo.key_id().to_hex())?;
                out.info(format!(
                    "password changed: key {} replaces {}",
                    id.short(),
                    repo.key_id().short()
                ));
            } else {
                out.info(format!("added key {}", id.short()));
            }
            if out.json {
                out.print_json(&serde_json::json!({"id": id}))?;
            }
        }
        KeyCommand::Remove { id } => {
            let kid = resolve_key(&repo, id)?;
            repo.remove_key(&kid)?;
            out.info(format!("removed key {}", kid.short()));
        }
    }
    Ok(exit::OK)
}

#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// Remove every lock, not only stale ones: only when you know no other
    /// cairn is using the repository (for example a lock nobody can read).
    #[arg(long)]
    remove_all: bool,
}

pub fn unlock(g: &Global, out: &Out, a: &UnlockArgs) -> Result<u8> {
    let (repo, _) = open(g)?;
    let done = repo.unlock(a.remove_all)?;
    if out.json {
        let view = |v: &[(cairn::LockId, String)]| -> Vec<serde_json::Value> {
            v.iter()
                .map(|(id, what)| serde_json::json!({"id": id, "lock": what}))
                .collect()
        };
        out.print_json(&serde_json::json!({
            "removed": view(&done.removed),
            "kept": view(&done.kept),
        }))?;
    } else {
        for (id, what) in &done.removed {
            out.info(format!("removed lock {}: {what}", id.short()));
        }
        for (id, what) in &done.kept {
            out.info(format!(
                "kept lock {}: {what} (its process is alive; --remove-all removes it anyway)",
                id.short()
            ));
        }
        out.info(format!("{} lock(s) removed", done.removed.len()));
    }
    Ok(exit::OK)
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub opts: PruneOpts,
}

/// Options of prune, shared with `forget --prune`.
#[derive(Debug, Args)]
pub struct PruneOpts {
    /// Repack a pack when more than this share of it is unused (e.g. 5%,
    /// 0% to reclaim everything, 100% to only delete wholly unused packs).
    #[arg(long, value_name = "PERCENT", default_value = "5%", value_parser = parse_percent)]
    pub max_unused: f64,
    /// Leave small packs (under half the pack size) as they are, instead of
    /// repacking them together when there are two or more.
    #[arg(long)]
    pub no_repack_small: bool,
    /// Show what would be deleted and repacked; change nothing.
    #[arg(long = "dry-run", id = "prune_dry_run")]
    pub dry_run: bool,
}

pub fn parse_percent(s: &str) -> Result<f64, String> {
    let n: f64 = s
        .trim()
        .trim_end_matches('%')
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a percentage such as 5%"))?;
    if (0.0..=100.0).contains(&n) {
        Ok(n / 100.0)
    } else {
        Err(format!("'{s}' is not between 0% and 100%"))
    }
}

/// Runs prune.
pub fn prune_with(repo: &Repository, a: &PruneOpts) -> Result<cairn::PruneReport> {
    let mut opts = cairn::PruneOptions::default();
    opts.max_unused = a.max_unused;
    opts.repack_small = !a.no_repack_small;
    opts.dry_run = a.dry_run;
    Ok(cairn::prune(repo, &opts)?)
}

/// Prune's report as JSON.
pub fn prune_json(r: &cairn::PruneReport, dry_run: bool) -> serde_json::Value {
    serde_json::json!({
        "dry_run": dry_run,
        "report": r,
        "bytes_freed": r.bytes_freed(),
    })
}

/// Prints prune's report as text.
pub fn print_prune(out: &Out, r: &cairn::PruneReport, dry_run: bool) {
    if !out.quiet {
        let verb = if dry_run { "would free" } else { "freed" };
        outln!(
            "{} snapshots use {} blobs; {} of {} packs deleted, {} repacked ({} small; {} blobs copied), {} left by interrupted backups",
            r.snapshots,
            r.blobs_used,
            r.packs_deleted,
            r.packs_before,
            r.packs_repacked,
            r.packs_small,
            r.blobs_repacked,
            r.packs_unindexed
        );
        outln!(
            "{verb} {} ({} -> {}); {} unused blobs removed, {} index files rewritten; took {:.2}s",
            size(r.bytes_freed()),
            size(r.bytes_before),
            size(r.bytes_after),
            r.blobs_removed,
            r.index_files_rewritten,
            r.duration_ms as f64 / 1000.0
        );
        if r.temporaries_removed > 0 {
            outln!(
                "{} {} temporary files left by killed writers ({})",
                if dry_run { "would remove" } else { "removed" },
                r.temporaries_removed,
                size(r.temporary_bytes_removed)
            );
        }
        if r.segments_replaced + r.segments_superseded > 0 {
            outln!(
                "WAL segments of ended chains: {} written as {}{}; {} kept",
                r.segments_replaced,
                r.segments_written,
                if r.segments_superseded > 0 {
                    format!(
                        ", {} left by an interrupted compaction deleted",
                        r.segments_superseded
                    )
                } else {
                    String::new()
                },
                r.segments
            );
        }
    }
}

pub fn prune(g: &Global, out: &Out, a: &PruneArgs) -> Result<u8> {
    let (repo, _) = open(g)?;
    let r = prune_with(&repo, &a.opts);
    super::log::report_audit_errors(out, &repo);
    let r = r?;
    if out.json {
        out.print_json(&prune_json(&r, a.opts.dry_run))?;
    } else {
        print_prune(out, &r, a.opts.dry_run);
    }
    Ok(exit::OK)
}
