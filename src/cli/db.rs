//! `db export` and `db restore`: arguments and rendering for the library's
//! logical export and table-level restore of SQLite databases
//! ([`cairn::export`], [`cairn::restore_from_snapshot`],
//! [`cairn::restore_from_export`]).

use std::io::{ErrorKind, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use clap::{Args, ValueEnum};
use serde::Serialize;

use cairn::{DbFormat, DbRestoreOptions, ExportOptions, TableRows};

use super::exit;
use super::global::Global;
use super::output::Out;
use super::password;
use super::render::undo_command;
use super::repo_open::open;
use super::select::AtArgs;

/// `--format` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    /// An SQL script (`sqlite3 NEW.db < FILE` runs it).
    Sql,
    /// One JSON document with typed values.
    Json,
    /// CSV, one file per table.
    Csv,
}

impl From<FormatArg> for DbFormat {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Sql => Self::Sql,
            FormatArg::Json => Self::Json,
            FormatArg::Csv => Self::Csv,
        }
    }
}

const FORMATS_HELP: &str = "\
Formats (all exact for every SQLite value: integers, reals to the last bit, text, blobs, NULL):
  sql   BEGIN; CREATE TABLE; INSERT ...; CREATE INDEX/TRIGGER/VIEW; COMMIT (parents before
        children). Runs in sqlite3: `sqlite3 new.db < export.sql`.
  json  {\"format\":\"cairn-db-export\",\"version\":1,\"tables\":[{\"name\",\"schema\",\"columns\",
        \"rows\":[[...]]}],\"other_schema\":[...]}; blobs are {\"blob_hex\":\"..\"}, non-UTF-8 text
        {\"text_hex\":\"..\"}, infinite reals {\"real\":\"inf\"}.
  csv   one table per file with a header row. An empty field is NULL, \\x followed by hex a blob;
        text that would read as a number or is empty or starts with \\ is written with a leading
        \\ (\\007, \\). With --output DIR: DIR/TABLE.csv per table and DIR/schema.sql; to stdout
        only one table (--table).";

#[derive(Debug, Args)]
#[command(after_help = FORMATS_HELP)]
pub struct ExportArgs {
    /// Snapshot id (or unique prefix), or `latest`.
    snapshot: Option<String>,
    #[command(flatten)]
    at: AtArgs,
    /// Which database of the snapshot: its path as `cairn ls` shows it.
    /// Default: the snapshot's only captured database.
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
    /// Export only this table (repeatable).
    #[arg(long = "table", value_name = "TABLE")]
    tables: Vec<String>,
    /// The schema only, no rows.
    #[arg(long)]
    schema_only: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "sql")]
    format: FormatArg,
    /// Write to this file (for csv: this directory) instead of stdout; a
    /// file appears complete or not at all.
    #[arg(short, long, value_name = "FILE|DIR")]
    output: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(after_help = "\
The source is a snapshot (SNAPSHOT or --at; --db chooses among several databases) or an
export written by `cairn db export` (--from-export). Everything happens in one transaction
on DB (created if missing): tables in foreign key order (parents first), each checked
afterwards against the source's row count and, from a snapshot, the count the snapshot
recorded; then PRAGMA foreign_key_check. Any failure rolls everything back and leaves DB
as it was (a DB that did not exist is removed again).

An existing table must have the source's columns (names and declared types, in order);
one that does not exist is created with the source's schema, indexes and triggers.
An existing table that has rows is an error unless --drop-existing, which empties it
first; triggers of existing tables do not fire on restored rows.

A lone CSV file restores one table (named by --table or by the file name) whose schema
DB must already have; a CSV directory from `db export --output DIR` has its schema.sql.
A snapshot's database is first written to $TMPDIR, an export loaded into a scratch
database there: it needs room for the database.")]
pub struct RestoreArgs {
    /// Snapshot id (or unique prefix), or `latest`.
    #[arg(conflicts_with = "from_export")]
    snapshot: Option<String>,
    #[command(flatten)]
    at: AtArgs,
    /// Restore from an export file (or CSV directory) instead of a
    /// snapshot; the repository is opened only for the safety snapshot of
    /// an existing --into database.
    #[arg(long, value_name = "FILE|DIR", conflicts_with_all = ["at", "db"])]
    from_export: Option<PathBuf>,
    /// The export's format. Default: by its extension (.sql, .json, .csv;
    /// a directory is csv).
    #[arg(long, value_enum, requires = "from_export")]
    format: Option<FormatArg>,
    /// The database to restore into (created if it does not exist).
    #[arg(long, value_name = "DB")]
    into: PathBuf,
    /// Which database of the snapshot: its path as `cairn ls` shows it.
    /// Default: the snapshot's only captured database.
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
    /// Restore only this table (repeatable).
    #[arg(long = "table", value_name = "TABLE")]
    tables: Vec<String>,
    /// Empty existing target tables before restoring into them.
    #[arg(long)]
    drop_existing: bool,
    /// Commit even if restored rows refer to rows that are not there.
    #[arg(long)]
    ignore_foreign_keys: bool,
    /// Restore into a database another process has open.
    #[arg(long)]
    force: bool,
}

#[derive(Serialize)]
struct Summary<'a> {
    /// None for a restore from an export.
    snapshot: Option<String>,
    database: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    into: Option<String>,
    tables: &'a [TableRows],
    rows: u64,
    /// A restore into an existing database: its safety snapshot and the
    /// command that undoes the restore.
    #[serde(skip_serializing_if = "Option::is_none")]
    safety_snapshot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    undo: Option<String>,
}

fn total(tables: &[TableRows]) -> u64 {
    tables.iter().map(|t| t.rows).sum()
}

/// What the arguments choose of an export; the database's name and its
/// stored row counts, known once it is read from the snapshot, are set by
/// [`export`].
impl From<&ExportArgs> for ExportOptions {
    fn from(a: &ExportArgs) -> Self {
        let mut opts = Self::default();
        opts.tables.clone_from(&a.tables);
        opts.schema_only = a.schema_only;
        opts
    }
}

/// The arguments of a table restore; the cache directory and the profile
/// (global options) are set by [`restore`].
impl From<&RestoreArgs> for DbRestoreOptions {
    fn from(a: &RestoreArgs) -> Self {
        let mut opts = Self::default();
        opts.tables.clone_from(&a.tables);
        opts.drop_existing = a.drop_existing;
        opts.ignore_foreign_keys = a.ignore_foreign_keys;
        opts.force = a.force;
        opts
    }
}

/// `cairn db export`.
pub fn export(g: &Global, out: &Out, a: &ExportArgs) -> Result<u8> {
    let (repo, _) = open(g)?;
    let (id, snap) = a.at.resolve(&repo, a.snapshot.as_deref())?;
    let db = a.db.as_ref().map(|p| p.as_os_str().as_bytes());
    let image = cairn::materialize(&repo, &snap, db)?;
    let mut opts = ExportOptions::from(a);
    opts.name = Some(image.name());
    // Checked as a restore checks them; empty for a database the snapshot
    // does not list, which has no stored counts.
    opts.expected = Some(image.info.tables.clone());
    let format = DbFormat::from(a.format);
    let done = match &a.output {
        Some(path) => cairn::export_to_path(&image.path(), format, &opts, path)
            .with_context(|| format!("exporting {} of snapshot {}", image.name(), id.short()))?,
        None => {
            let mut w = std::io::BufWriter::new(std::io::stdout().lock());
            match cairn::export(&image.path(), format, &opts, &mut w) {
                Ok(done) => done,
                // A reader that went away (`| head`) has what it wanted.
                Err(cairn::Error::Output { source }) if source.kind() == ErrorKind::BrokenPipe => {
                    return Ok(exit::OK);
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let summary = Summary {
        snapshot: Some(id.to_string()),
        database: image.name(),
        format: Some(format.name()),
        output: a.output.as_ref().map(|p| p.display().to_string()),
        into: None,
        tables: &done,
        rows: total(&done),
        safety_snapshot: None,
        undo: None,
    };
    // With the export on stdout, only a text summary on stderr.
    if out.json && a.output.is_some() {
        out.print_json(&summary)?;
    } else {
        out.info(format!(
            "exported {} table(s), {} row(s) of {} from snapshot {} as {}{}",
            done.len(),
            summary.rows,
            summary.database,
            id.short(),
            format.name(),
            a.output
                .as_ref()
                .map(|p| format!(" to {}", p.display()))
                .unwrap_or_default()
        ));
    }
    Ok(exit::OK)
}

/// `cairn db restore`.
pub fn restore(g: &Global, out: &Out, a: &RestoreArgs) -> Result<u8> {
    let mut opts = DbRestoreOptions::from(a);
    opts.cache_dir = password::cache_dir(g);
    opts.profile.clone_from(&g.loaded);
    let (snapshot, restored) = match &a.from_export {
        Some(export) => {
            if !export.exists() {
                return Err(anyhow!("cannot read {}: no such file", export.display()));
            }
            let format = match a.format {
                Some(f) => DbFormat::from(f),
                None => DbFormat::guess(export).ok_or_else(|| {
                    anyhow!(
                        "cannot tell the format of {} by its name: pass --format sql|json|csv",
                        export.display()
                    )
                })?,
            };
            // An existing database is saved in a safety snapshot first.
            let repo = if std::fs::symlink_metadata(&a.into).is_ok() {
                Some(open(g)?.0)
            } else {
                None
            };
            let done = cairn::restore_from_export(export, format, &a.into, &opts, repo.as_ref())?;
            (None, done)
        }
        None => {
            let (repo, _) = open(g)?;
            let (id, snap) = a.at.resolve(&repo, a.snapshot.as_deref())?;
            let db = a.db.as_ref().map(|p| p.as_os_str().as_bytes());
            let done = cairn::restore_from_snapshot(&repo, &snap, db, &a.into, &opts)?;
            (Some(id.to_string()), done)
        }
    };
    let done = &restored.tables;
    let database = restored.database.clone();
    let undo = restored.undo.as_ref().map(|u| undo_command(g, u));
    let summary = Summary {
        snapshot,
        database,
        format: None,
        output: None,
        into: Some(a.into.display().to_string()),
        tables: done,
        rows: total(done),
        safety_snapshot: restored.undo.as_ref().map(|u| u.snapshot.to_string()),
        undo: undo.clone(),
    };
    if out.json {
        out.print_json(&summary)?;
    } else if !out.quiet {
        let from = match &summary.snapshot {
            None => format!("the export {}", summary.database),
            Some(id) => format!(
                "{} of snapshot {}",
                summary.database,
                id.get(..8).unwrap_or(id)
            ),
        };
        let mut text = format!(
            "restored {} table(s), {} row(s) from {from} into {}\n",
            done.len(),
            summary.rows,
            a.into.display()
        );
        for t in done {
            text.push_str(&format!("  {:<24} {:>10} rows\n", t.name, t.rows));
        }
        if let (Some(u), Some(cmd)) = (&restored.undo, &undo) {
            text.push_str(&format!(
                "safety snapshot {} saved: {} as it was before; to undo, run:\n  {cmd}\n",
                u.snapshot.short(),
                a.into.display()
            ));
        }
        let mut stdout = std::io::stdout().lock();
        match stdout.write_all(text.as_bytes()) {
            Err(e) if e.kind() == ErrorKind::BrokenPipe => {}
            r => r?,
        }
    }
    Ok(exit::OK)
}
