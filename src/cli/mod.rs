//! Command-line front end: argument parsing, repository and password
//! resolution, output rendering and exit codes. No engine logic lives here.

/// `println!` for command output: when the reader of standard output has
/// gone (`cairn snapshots | head`), the command ends quietly instead of
/// panicking; any other write error ends it with exit code 1.
/// A line of human output on stdout. Control characters other than
/// newlines and tabs (a tag or a file name holding a terminal escape
/// sequence) are shown escaped, never sent to the terminal.
macro_rules! outln {
    () => {
        outln_raw!()
    };
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let line = format!($($arg)*);
        if let Err(e) = writeln!(std::io::stdout().lock(), "{}", $crate::cli::terminal_safe(&line)) {
            $crate::cli::stdout_failed(&e);
        }
    }};
}

/// A line on stdout as it is: for JSON, whose strings are escaped already.
macro_rules! outln_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            $crate::cli::stdout_failed(&e);
        }
    }};
}

mod app;
mod commands;
mod copy;
mod daemon;
mod db;
mod docs;
mod forget;
mod inspect;
mod log;
mod notify;
mod output;
mod password;
mod serve;
mod status;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

pub use output::Out;

/// Exit codes, documented in the README.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// A fatal error: nothing (more) was done.
    pub const ERROR: u8 = 1;
    /// Bad command-line usage (clap's code).
    pub const USAGE: u8 = 2;
    /// The command ran but found damage or could not finish every item:
    /// verify found problems, restore skipped damaged files.
    pub const INCOMPLETE: u8 = 3;
    /// The repository does not exist.
    pub const NO_REPO: u8 = 10;
    /// The repository's format version is not supported by this build.
    pub const VERSION: u8 = 11;
    /// Wrong or missing password.
    pub const PASSWORD: u8 = 12;
    /// Another process holds a conflicting repository lock.
    pub const LOCKED: u8 = 13;
    /// `status`: a source is stale (older than --max-age), its last
    /// attempt failed, or free space is below --min-free.
    pub const STALE: u8 = 14;
}

/// cairn: deduplicating, encrypted, verifiable snapshots.
#[derive(Debug, Parser)]
#[command(
    name = "cairn",
    version,
    about,
    long_about = None,
    propagate_version = true,
    after_help = "\
Password: CAIRN_PASSWORD, --password-file, --password-command, or a prompt on a terminal.
Without --repo or CAIRN_REPO, cairn uses a default repository in your data directory,
created on the first backup with a generated key in your config directory.

Exit codes: 0 success, 1 error, 2 invalid command line, 3 damage found or restore
incomplete, 10 no repository, 11 unsupported format version, 12 wrong or missing password,
13 repository locked by another process, 14 (status) a source is stale or failing, or
free space is low."
)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Repository location: a directory, or S3-compatible object storage as
    /// s3:https://HOST[:PORT]/BUCKET[/PREFIX] (credentials from
    /// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or ~/.aws, region from
    /// AWS_REGION; add ?style=virtual or ?style=path to choose the bucket
    /// addressing). Without it and without CAIRN_REPO, cairn uses a default
    /// repository in your data directory.
    #[arg(
        short = 'r',
        long = "repo",
        env = "CAIRN_REPO",
        global = true,
        value_name = "LOCATION"
    )]
    repo: Option<PathBuf>,
    /// Limit uploads to the repository to this many KiB/s (on average).
    #[arg(
        long,
        env = "CAIRN_LIMIT_UPLOAD",
        global = true,
        value_name = "KIB_PER_S"
    )]
    limit_upload: Option<u32>,
    /// Limit downloads from the repository to this many KiB/s (on average).
    #[arg(
        long,
        env = "CAIRN_LIMIT_DOWNLOAD",
        global = true,
        value_name = "KIB_PER_S"
    )]
    limit_download: Option<u32>,
    /// Print more: for a repository on object storage, the number of
    /// requests the command made.
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Read the repository password from the first line of this file.
    #[arg(long, env = "CAIRN_PASSWORD_FILE", global = true, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Run this shell command and use the first line it prints as the password.
    #[arg(
        long,
        env = "CAIRN_PASSWORD_COMMAND",
        global = true,
        value_name = "CMD"
    )]
    password_command: Option<String>,
    /// Directory for local caches (the files cache of each repository).
    /// Default: cairn's directory in your cache directory (~/.cache/cairn).
    #[arg(long, env = "CAIRN_CACHE_DIR", global = true, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// If another process holds a conflicting repository lock, wait up to
    /// this long for it (e.g. 30s, 10m) instead of failing at once.
    #[arg(long, global = true, value_name = "DURATION")]
    retry_lock: Option<String>,
    /// Take no repository lock: for restore and verify of a repository on
    /// read-only media (a concurrent prune could then remove data they read).
    #[arg(long, global = true)]
    no_lock: bool,
    /// Use no local cache: every file is compared with the parent snapshot.
    #[arg(long, global = true)]
    no_cache: bool,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Print only errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// The application profile to use. Default: the nearest cairn.toml in
    /// the current directory or above, which then also names the
    /// repository and password source unless options or the environment do.
    #[arg(long, env = "CAIRN_PROFILE", global = true, value_name = "FILE")]
    profile: Option<PathBuf>,
    /// The profile loaded, if any.
    #[arg(skip)]
    loaded: Option<cairn::Profile>,
}

impl Global {
    /// These options as a command line for another cairn process (the
    /// daemon's watchers): where the repository is and how to open it, not
    /// how to print.
    fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        let mut pair = |name: &str, value: Option<std::ffi::OsString>| {
            if let Some(v) = value {
                args.push(name.into());
                args.push(v);
            }
        };
        pair("--repo", self.repo.clone().map(Into::into));
        pair(
            "--limit-upload",
            self.limit_upload.map(|v| v.to_string().into()),
        );
        pair(
            "--limit-download",
            self.limit_download.map(|v| v.to_string().into()),
        );
        pair(
            "--password-file",
            self.password_file.clone().map(Into::into),
        );
        pair(
            "--password-command",
            self.password_command.clone().map(Into::into),
        );
        pair("--cache-dir", self.cache_dir.clone().map(Into::into));
        pair("--retry-lock", self.retry_lock.clone().map(Into::into));
        pair("--profile", self.profile.clone().map(Into::into));
        for (set, flag) in [(self.no_lock, "--no-lock"), (self.no_cache, "--no-cache")] {
            if set {
                args.push(flag.into());
            }
        }
        args
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new repository.
    Init(commands::InitArgs),
    /// Take a snapshot of files and directories.
    Backup(commands::BackupArgs),
    /// Take an application snapshot of the components in cairn.toml
    /// (database, code, config) with git state.
    Snap(app::SnapArgs),
    /// Snapshot the application, run a command (a migration, a deploy),
    /// snapshot again; print the restore command if it fails.
    Run(app::RunArgs),
    /// Run the scheduled jobs ([[jobs]]) of application profiles: snapshot,
    /// retention, prune and verify, until SIGTERM.
    Daemon(daemon::DaemonArgs),
    /// Follow SQLite databases commit by commit for point-in-time restore
    /// (`restore --at TIME DB`), until SIGTERM.
    Watch(watch::WatchArgs),
    /// List snapshots.
    Snapshots(commands::SnapshotsArgs),
    /// List the files in a snapshot.
    Ls(commands::LsArgs),
    /// Restore a snapshot (or part of it) into a directory.
    Restore(commands::RestoreArgs),
    /// Copy snapshots from another repository (--from), transferring only
    /// the data this one lacks.
    Copy(copy::CopyArgs),
    /// Show what changed between two snapshots.
    Diff(inspect::DiffArgs),
    /// Find files and directories by name or path in snapshots.
    Find(inspect::FindArgs),
    /// Write one file of a snapshot to stdout.
    Dump(inspect::DumpArgs),
    /// Export a snapshot's SQLite database as SQL, JSON or CSV, or restore
    /// its tables into a database.
    #[command(subcommand)]
    Db(db::DbCommand),
    /// Check the repository's structure and, with --read-data, every byte.
    Verify(commands::VerifyArgs),
    /// Show repository sizes and deduplication.
    Stats(commands::StatsArgs),
    /// Print a repository object, for inspection and debugging.
    Cat(commands::CatArgs),
    /// Remove snapshots by retention rules (--keep-*) or by id; their data
    /// stays until prune.
    // Boxed: its many options would make every command's value this large.
    Forget(Box<forget::ForgetArgs>),
    /// Delete data no snapshot references and repack packs that are mostly
    /// unused.
    Prune(commands::PruneArgs),
    /// Remove stale locks left by processes that are gone.
    Unlock(commands::UnlockArgs),
    /// Show the audit log: who backed up, restored, forgot or pruned what,
    /// and when.
    Log(log::LogArgs),
    /// Show how fresh each source's newest snapshot is; exit 14 when one
    /// is stale (--max-age) or failing or space is low (--min-free).
    Status(status::StatusArgs),
    /// Manage the passwords that open the repository.
    #[command(subcommand)]
    Key(commands::KeyCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish,
    /// powershell).
    Completions(docs::CompletionsArgs),
    /// Print the man page, or write one page per command into a directory.
    Man(docs::ManArgs),
    /// Serve the HTTP API, /metrics and the status page.
    Serve(serve::ServeArgs),
    /// Manage the bearer tokens of `cairn serve`.
    #[command(subcommand)]
    Token(serve::TokenCommand),
}

/// Parses the command line, runs the command and returns its exit code.
pub fn main() -> ExitCode {
    let mut cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let out = Out::new(cli.global.json, cli.global.quiet);
    if let Err(e) = app::apply_profile(&mut cli.global) {
        eprintln!("cairn: error: {}", terminal_safe(&one_line(&e)));
        return ExitCode::from(exit::ERROR);
    }
    let result = match cli.command {
        Command::Init(a) => commands::init(&cli.global, &out, &a),
        Command::Backup(a) => commands::backup(&cli.global, &out, &a),
        Command::Snap(a) => app::snap(&cli.global, &out, &a),
        Command::Run(a) => app::run(&cli.global, &out, &a),
        Command::Daemon(a) => daemon::daemon(&cli.global, &out, &a),
        Command::Watch(a) => watch::watch(&cli.global, &out, &a),
        Command::Snapshots(a) => commands::snapshots(&cli.global, &out, &a),
        Command::Ls(a) => commands::ls(&cli.global, &out, &a),
        Command::Restore(a) => commands::restore(&cli.global, &out, &a),
        Command::Copy(a) => copy::copy(&cli.global, &out, &a),
        Command::Diff(a) => inspect::diff(&cli.global, &out, &a),
        Command::Find(a) => inspect::find(&cli.global, &out, &a),
        Command::Dump(a) => inspect::dump(&cli.global, &out, &a),
        Command::Db(a) => db::db(&cli.global, &out, &a),
        Command::Verify(a) => commands::verify(&cli.global, &out, &a),
        Command::Stats(a) => commands::stats(&cli.global, &out, &a),
        Command::Cat(a) => commands::cat(&cli.global, &out, &a),
        Command::Key(a) => commands::key(&cli.global, &out, &a),
        Command::Forget(a) => forget::forget(&cli.global, &out, &a),
        Command::Unlock(a) => commands::unlock(&cli.global, &out, &a),
        Command::Log(a) => log::log(&cli.global, &out, &a),
        Command::Status(a) => status::status(&cli.global, &out, &a),
        Command::Prune(a) => commands::prune(&cli.global, &out, &a),
        Command::Completions(a) => docs::completions(&out, &a),
        Command::Man(a) => docs::man(&out, &a),
        Command::Serve(a) => serve::serve(&cli.global, &out, &a),
        Command::Token(a) => serve::token(&out, &a),
    };
    if cli.global.verbose
        && let Some(n) = password::requests_made()
    {
        eprintln!("cairn: {n} requests to the repository");
    }
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = exit_code(&e);
            eprintln!("cairn: error: {}", terminal_safe(&one_line(&e)));
            ExitCode::from(code)
        }
    }
}

/// `s` with every control character but newline and tab escaped
/// (`\u{1b}`), for a terminal.
pub fn terminal_safe(s: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Raw bytes (a file name, which need not be UTF-8) with each ASCII
/// control character but tab escaped as [`terminal_safe`] does; other
/// bytes as they are.
pub fn terminal_safe_bytes(b: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    // UTF-8 text: every control character, C1 ones included.
    if let Ok(text) = std::str::from_utf8(b) {
        return match terminal_safe(text) {
            std::borrow::Cow::Borrowed(_) => std::borrow::Cow::Borrowed(b),
            std::borrow::Cow::Owned(t) => std::borrow::Cow::Owned(t.into_bytes()),
        };
    }
    let unsafe_byte = |c: &u8| c.is_ascii_control() && *c != b'\t';
    if !b.iter().any(unsafe_byte) {
        return std::borrow::Cow::Borrowed(b);
    }
    let mut out = Vec::with_capacity(b.len() + 8);
    for c in b {
        if unsafe_byte(c) {
            out.extend(char::from(*c).escape_default().to_string().bytes());
        } else {
            out.push(*c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Ends the process after standard output failed: quietly with success
/// for a closed pipe (the reader had enough), with an error otherwise.
pub fn stdout_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(i32::from(exit::OK));
    }
    eprintln!("cairn: error: cannot write to standard output: {e}");
    std::process::exit(i32::from(exit::ERROR));
}

/// The error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    let mut s = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
    }
    s.replace('\n', " ")
}

fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<password::PasswordUnavailable>().is_some() {
        return exit::PASSWORD;
    }
    match e.downcast_ref::<cairn::Error>() {
        Some(cairn::Error::RepoNotFound { .. }) => exit::NO_REPO,
        Some(cairn::Error::UnsupportedVersion { .. }) => exit::VERSION,
        Some(
            cairn::Error::WrongPassword { .. }
            | cairn::Error::NoPassword { .. }
            | cairn::Error::PasswordSource(_),
        ) => exit::PASSWORD,
        Some(cairn::Error::Locked { .. }) => exit::LOCKED,
        Some(e) if e.is_damage() => exit::INCOMPLETE,
        _ => exit::ERROR,
    }
}
