//! `cairn backup`: files and directories, standard input, or a command's
//! output, into a new snapshot.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use cairn::BackupOptions;

use super::exit;
use super::global::Global;
use super::output::{BarProgress, Out, report_audit_errors};
use super::password;
use super::render::print_backup;
use super::repo_open::open_or_create_default;
use super::select::parse_time;

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

/// What the arguments say about the backup: all of [`BackupOptions`] but
/// the parent (an id found in the repository) and the cache directory (a
/// global option), which [`backup`] sets. Fails on a tag cairn reserves
/// or a `--time` that cannot be read.
impl TryFrom<&BackupArgs> for BackupOptions {
    type Error = anyhow::Error;

    fn try_from(a: &BackupArgs) -> Result<Self> {
        let mut opts = Self::new(if a.stdin || a.stdin_from_command.is_some() {
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
        // How SQLite databases are captured: the only lines that name them.
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
        Ok(opts)
    }
}

pub fn backup(g: &Global, out: &Out, a: &BackupArgs) -> Result<u8> {
    let repo = open_or_create_default(g, out)?;
    let mut opts = BackupOptions::try_from(a)?;
    opts.cache_dir = password::cache_dir(g);
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
    report_audit_errors(out, &repo);
    let done = result?;
    print_backup(out, &done)?;
    Ok(exit::OK)
}
