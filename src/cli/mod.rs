//! The command line of the `cairn` binary. cli/ owns four things: parsing
//! arguments (clap), calling the library, rendering what it returns (text
//! or `--json`), and mapping failures to the documented exit codes. It has
//! no behaviour of its own: every decision about a repository, a snapshot
//! or a file is the library's, reached only through `cairn::` public
//! names; cli/ may not reach into the library's modules, keep state
//! between commands, or decide what a command does beyond choosing the
//! library call and its options.
//!
//! Layout, each file importing only the files listed after it:
//! - `mod.rs` (this file): the clap definitions of the commands, dispatch,
//!   and printing the error a command ends with.
//! - One file per command or small family (`init`, `backup`, `app` (snap,
//!   run), `daemon`, `watch` (watch, db timeline), `snapshots`, `ls`,
//!   `restore`, `copy`, `inspect` (diff, find, dump), `db`, `verify`,
//!   `stats`, `cat`, `forget`, `prune`, `unlock`, `log`, `status`, `key`,
//!   `docs` (completions, man), `serve` (serve, token)): its arguments,
//!   their conversion into the library's options (`From`/`TryFrom`), the
//!   call and its rendering. Command files never import one another.
//! - Shared files below them: `select` (which snapshots the arguments
//!   choose), `render` (snapshot, node and backup renderings, undo
//!   commands), `pruning` (prune's options and report, also used by
//!   `forget --prune`), `watch_notes` (a watcher's notes, read back by the
//!   daemon), `from_repo` (the other repository of `copy` and `init`),
//!   `notify` (alert options), `repo_open` (opening the repository),
//!   `password` (finding the repository and its password), `output`
//!   (stdout/stderr, `outln!`, terminal escaping, sizes and times),
//!   `global` (the options every command takes), `advice` (what the
//!   command line adds to the library's error messages: its flags) and
//!   `exit` (exit codes, and the table from kinds of failure to them).

// First: its `outln!` macros are used by the files declared after it.
#[macro_use]
mod output;

mod advice;
mod app;
mod backup;
mod cat;
mod copy;
mod daemon;
mod db;
mod docs;
mod exit;
mod forget;
mod from_repo;
mod global;
mod init;
mod inspect;
mod key;
mod log;
mod ls;
mod notify;
mod password;
mod prune;
mod pruning;
mod render;
mod repo_open;
mod restore;
mod select;
#[cfg(feature = "server")]
mod serve;
mod snapshots;
mod stats;
mod status;
mod unlock;
mod verify;
mod watch;
mod watch_notes;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use global::Global;
use output::{Out, terminal_safe};

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

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new repository.
    Init(init::InitArgs),
    /// Take a snapshot of files and directories.
    Backup(backup::BackupArgs),
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
    Snapshots(snapshots::SnapshotsArgs),
    /// List the files in a snapshot.
    Ls(ls::LsArgs),
    /// Restore a snapshot (or part of it) into a directory.
    Restore(restore::RestoreArgs),
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
    Db(DbCommand),
    /// Check the repository's structure and, with --read-data, every byte.
    Verify(verify::VerifyArgs),
    /// Show repository sizes and deduplication.
    Stats(stats::StatsArgs),
    /// Print a repository object, for inspection and debugging.
    Cat(cat::CatArgs),
    /// Remove snapshots by retention rules (--keep-*) or by id; their data
    /// stays until prune.
    // Boxed: its many options would make every command's value this large.
    Forget(Box<forget::ForgetArgs>),
    /// Delete data no snapshot references and repack packs that are mostly
    /// unused.
    Prune(prune::PruneArgs),
    /// Remove stale locks left by processes that are gone.
    Unlock(unlock::UnlockArgs),
    /// Show the audit log: who backed up, restored, forgot or pruned what,
    /// and when.
    Log(log::LogArgs),
    /// Show how fresh each source's newest snapshot is; exit 14 when one
    /// is stale (--max-age) or failing or space is low (--min-free).
    Status(status::StatusArgs),
    /// Manage the passwords that open the repository.
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish,
    /// powershell).
    Completions(docs::CompletionsArgs),
    /// Print the man page, or write one page per command into a directory.
    Man(docs::ManArgs),
    /// Serve the HTTP API, /metrics and the status page.
    #[cfg(feature = "server")]
    Serve(serve::ServeArgs),
    /// Manage the bearer tokens of `cairn serve`.
    #[cfg(feature = "server")]
    #[command(subcommand)]
    Token(serve::TokenCommand),
}

/// `cairn db`'s subcommands.
#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Write a snapshot's SQLite database as SQL, JSON or CSV.
    Export(db::ExportArgs),
    /// Restore tables of a snapshot's SQLite database, or of an export,
    /// into a database, in one transaction.
    Restore(db::RestoreArgs),
    /// Show the moments a database followed by `cairn watch` can be
    /// restored to, and the gaps.
    Timeline(watch::TimelineArgs),
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
        Command::Init(a) => init::init(&cli.global, &out, &a),
        Command::Backup(a) => backup::backup(&cli.global, &out, &a),
        Command::Snap(a) => app::snap(&cli.global, &out, &a),
        Command::Run(a) => app::run(&cli.global, &out, &a),
        Command::Daemon(a) => daemon::daemon(&cli.global, &out, &a),
        Command::Watch(a) => watch::watch(&cli.global, &out, &a),
        Command::Snapshots(a) => snapshots::snapshots(&cli.global, &out, &a),
        Command::Ls(a) => ls::ls(&cli.global, &out, &a),
        Command::Restore(a) => restore::restore(&cli.global, &out, &a),
        Command::Copy(a) => copy::copy(&cli.global, &out, &a),
        Command::Diff(a) => inspect::diff(&cli.global, &out, &a),
        Command::Find(a) => inspect::find(&cli.global, &out, &a),
        Command::Dump(a) => inspect::dump(&cli.global, &out, &a),
        Command::Db(DbCommand::Export(a)) => db::export(&cli.global, &out, &a),
        Command::Db(DbCommand::Restore(a)) => db::restore(&cli.global, &out, &a),
        Command::Db(DbCommand::Timeline(a)) => watch::timeline(&cli.global, &out, &a),
        Command::Verify(a) => verify::verify(&cli.global, &out, &a),
        Command::Stats(a) => stats::stats(&cli.global, &out, &a),
        Command::Cat(a) => cat::cat(&cli.global, &out, &a),
        Command::Key(a) => key::key(&cli.global, &out, &a),
        Command::Forget(a) => forget::forget(&cli.global, &out, &a),
        Command::Unlock(a) => unlock::unlock(&cli.global, &out, &a),
        Command::Log(a) => log::log(&cli.global, &out, &a),
        Command::Status(a) => status::status(&cli.global, &out, &a),
        Command::Prune(a) => prune::prune(&cli.global, &out, &a),
        Command::Completions(a) => docs::completions(&a, Cli::command()),
        Command::Man(a) => docs::man(&out, &a, Cli::command()),
        #[cfg(feature = "server")]
        Command::Serve(a) => serve::serve(&cli.global, &out, &a),
        #[cfg(feature = "server")]
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

/// The error and its causes on one line, the library's errors with the
/// command line's advice ([`advice::describe`]).
fn one_line(e: &anyhow::Error) -> String {
    let mut s = String::new();
    for (i, cause) in e.chain().enumerate() {
        let library = cause.downcast_ref::<cairn::Error>();
        let c = library.map_or_else(|| cause.to_string(), advice::describe);
        if i == 0 {
            s = c;
        } else if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        // A SQLite error's message holds SQLite's; the causes after it are
        // SQLite's again, as its code ("Error code 275: …").
        if matches!(library, Some(cairn::Error::Sqlite { .. })) {
            break;
        }
    }
    s.replace('\n', " ")
}

/// The exit code of a failed command: by the kind of the library's error
/// ([`exit::of_kind`]), 12 for a password source of the command line's
/// own that failed, else 1.
fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<password::PasswordUnavailable>().is_some() {
        return exit::PASSWORD;
    }
    let error = e
        .downcast_ref::<cairn::Error>()
        .or_else(|| e.downcast_ref::<advice::Advised>().map(|a| &a.error));
    error.map_or(exit::ERROR, |e| exit::of_kind(e.kind()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SQLite error is printed as the library words it, without
    /// SQLite's own cause (its code) after it.
    #[test]
    fn a_sqlite_error_is_one_line_without_its_code() {
        let e = cairn::Error::sqlite(
            "restoring table t into /srv/app.db",
            std::path::Path::new("/srv/app.db"),
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(275),
                Some("CHECK constraint failed: a > 0".into()),
            ),
        );
        assert_eq!(
            one_line(&anyhow::Error::new(e)),
            "restoring table t into /srv/app.db: CHECK constraint failed: a > 0"
        );
    }
}
