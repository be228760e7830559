//! Restore of tables from a database file, a snapshot's database image
//! ([`restore_from_snapshot`]) or an export ([`restore_from_export`]) into
//! another database, with the protections of a restore into a live
//! database (`crate::ops::protect`: the open-database check and the safety
//! snapshot), and the restored row counts checked against the source's
//! and, from a snapshot, against the ones backup recorded.
//!
//! The source is attached to a connection on the target and everything
//! happens in **one transaction**: a failure at any step (a target table
//! whose columns differ, a non-empty target table without
//! `drop_existing`, a foreign key violation, a row count that does not
//! match) rolls all of it back, and a target file that did not exist before
//! is removed again, so a failed restore changes nothing. Tables are copied
//! with `INSERT … SELECT`, which moves SQLite's typed values as they are,
//! parents before children (foreign key order; foreign key enforcement is
//! off for the transaction, so cycles need no order, and
//! `PRAGMA foreign_key_check` runs before the commit instead). A target
//! table that exists must have the source's columns (names and declared
//! types, in order); one that does not is created from the source's
//! `CREATE TABLE`, and then gets the source's indexes and triggers after
//! its rows are in. AUTOINCREMENT counters are raised to the source's,
//! so ids the source handed out are not handed out again. Triggers of
//! existing target tables are dropped for the copy and re-created before
//! the commit, so they do not fire on restored rows. Rowid tables keep
//! their rowids.
//!
//! An export is restored by loading it into a scratch database in a
//! temporary directory first (`import`; the SQL script is run there with
//! `ATTACH` disabled, so it cannot change other databases), then restoring
//! from that.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::export::DbFormat;
use super::image::materialize;
use super::import;
use super::schema::{
    BUSY_TIMEOUT, Column, Table, choose, conn_err, db_err, describe_tables, file_of, fk_order,
    ident, other_schema, raise_sequence, row_count, rowid_name, sequence, tables_of,
};
use crate::error::{Error, Hint, Result};
use crate::format::snapshot::{Snapshot, TableRows};
use crate::repo::Repository;
use crate::repo::audit::{Audited, Event};

/// The schema name the source is attached under during a restore.
const SRC: &str = "cairn_src";

/// How to restore tables into a database.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DbRestoreOptions {
    /// Only these tables (all when empty); an unknown name is an error.
    pub tables: Vec<String>,
    /// Empty existing target tables first. Without it a target table that
    /// has rows makes the restore fail.
    pub drop_existing: bool,
    /// Commit even when `PRAGMA foreign_key_check` finds rows of the
    /// restored tables (or of tables referring to them) whose parent row is
    /// missing.
    pub ignore_foreign_keys: bool,
    /// Row counts the restored tables must end up with besides the
    /// source's own (a snapshot's stored counts).
    pub expected: Option<Vec<TableRows>>,
    /// Restore into a database another process has open.
    pub force: bool,
    /// For the safety snapshot, as [`crate::ops::backup::BackupOptions::cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// The application profile: when the database restored into is one
    /// of its `sqlite` components, the safety snapshot is a snapshot of
    /// that component and the undo command restores it in place.
    pub profile: Option<crate::apps::profile::Profile>,
}

/// What a table-level restore did.
#[derive(Debug, Clone)]
pub struct DbRestored {
    /// The source: the snapshot's database path, or the export.
    pub database: String,
    /// Rows restored per table, in the order restored.
    pub tables: Vec<TableRows>,
    /// When `into` existed: its safety snapshot and how to put it back.
    pub undo: Option<crate::ops::protect::Undo>,
}

/// The protections of a restore into a live database (see
/// [`crate::ops::protect`]), before anything is written: an existing `into`
/// may not be open in another process (unless forced) and is saved in a
/// safety snapshot first.
fn protect_into(
    repo: Option<&Repository>,
    into: &Path,
    opts: &DbRestoreOptions,
) -> Result<Option<crate::ops::protect::Undo>> {
    if std::fs::symlink_metadata(into).is_err() {
        return Ok(None);
    }
    // The file itself, not a symlink to it: the safety snapshot must hold
    // the database SQLite writes into, and the profile names real paths.
    let path = std::fs::canonicalize(into).map_err(|e| Error::target_write(into, e))?;
    let Some(repo) = repo else {
        return Err(Error::invalid(format!(
            "{} exists: restoring tables into it first saves it in a safety snapshot, which needs a repository; name one (or restore into a new file)",
            into.display()
        )));
    };
    let component = opts.profile.as_ref().and_then(|p| {
        p.components.iter().find_map(|c| match &c.kind {
            crate::apps::profile::ComponentKind::Sqlite { path: db }
                if *db == path || std::fs::canonicalize(db).is_ok_and(|d| d == path) =>
            {
                Some((p, c.name.clone()))
            }
            _ => None,
        })
    });
    let app = component.as_ref().map(|(p, name)| {
        let app = crate::format::snapshot::AppInfo {
            name: p.name.clone(),
            root: p.root.as_os_str().as_encoded_bytes().to_vec(),
            components: Vec::new(),
            git: None,
        };
        crate::ops::protect::component_app(
            &app,
            name,
            "sqlite",
            std::slice::from_ref(&path),
            crate::apps::profile::git_info(&p.root),
        )
    });
    let what = crate::ops::protect::Replacing {
        files: vec![path.clone()],
        databases: vec![path],
        app,
        profile: component.as_ref().map(|(p, _)| p.file.clone()),
        undo_component: component.map(|(_, n)| n),
        force: opts.force,
        cache_dir: opts.cache_dir.clone(),
        whole_files: false,
    };
    let (undo, _) = crate::ops::protect::guard(
        repo,
        &what,
        &crate::apps::sqlite::special::SqliteFiles::hook(),
        &crate::ops::backup::NoProgress,
    )?;
    Ok(undo)
}

/// Restores tables of the database at `source` (described as
/// `source_name` in messages) into the database at `into`, created if it
/// does not exist, in one transaction (see the module doc). Returns the
/// rows restored per table, in the order restored.
///
/// # Errors
/// [`Error::Invalid`] naming the table and the problem: a target table
/// whose columns differ or that has rows (without `drop_existing`), a
/// foreign key violation, a row count that differs from the source's;
/// [`Error::NotFound`] for an unknown table; [`Error::Sqlite`] for a file
/// SQLite cannot use or a step it refuses (a row the target's constraints
/// reject, say); [`Error::Corrupt`] when a count differs from the
/// expected one (the snapshot's record).
/// Nothing is changed then, and a target file that did not exist is
/// removed.
fn restore_db(
    source: &Path,
    source_name: &str,
    into: &Path,
    opts: &DbRestoreOptions,
) -> Result<Vec<TableRows>> {
    let existed = std::fs::symlink_metadata(into).is_ok();
    let result = restore_into(source, source_name, into, opts);
    if result.is_err() && !existed {
        for p in std::iter::once(into.to_path_buf())
            .chain(crate::apps::sqlite::special::companions(into))
        {
            let _ = std::fs::remove_file(p);
        }
    }
    result
}

fn restore_into(
    source: &Path,
    source_name: &str,
    into: &Path,
    opts: &DbRestoreOptions,
) -> Result<Vec<TableRows>> {
    let target = into.display().to_string();
    let mut conn = Connection::open(into).map_err(db_err(into, format!("cannot open {target}")))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(db_err(into, format!("cannot open {target}")))?;
    conn.query_row("SELECT count(*) FROM main.sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(db_err(
        into,
        format!("{target} is not a usable SQLite database"),
    ))?;
    let src = source
        .to_str()
        .ok_or_else(|| Error::invalid(format!("{} is not a UTF-8 path", source.display())))?;
    // Outside any transaction, as both statements must be.
    conn.execute(&format!("ATTACH DATABASE ?1 AS {SRC}"), [src])
        .map_err(db_err(source, format!("cannot open {source_name}")))?;
    conn.execute_batch("PRAGMA foreign_keys = OFF")
        .map_err(db_err(into, format!("cannot use {target}")))?;
    let done = {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_err(into, format!("cannot lock {target}")))?;
        let done = restore_tables(&tx, source_name, &target, opts)?;
        tx.commit()
            .map_err(db_err(into, format!("cannot commit to {target}")))?;
        done
    };
    let _ = conn.execute_batch(&format!("DETACH DATABASE {SRC}"));
    conn.close()
        .map_err(|(_, e)| db_err(into, format!("cannot close {target}"))(e))?;
    Ok(done)
}

/// Compares the columns of the same table in source and target; the
/// difference, worded for a message: the first column that differs, and
/// both lists.
fn column_difference(src: &Table, dst: &Table) -> Option<String> {
    let col = |c: &Column| {
        if c.decl.is_empty() {
            c.name.clone()
        } else {
            format!("{} {}", c.name, c.decl)
        }
    };
    let show = |t: &Table| t.columns.iter().map(col).collect::<Vec<_>>().join(", ");
    let same = |a: &Column, b: &Column| {
        a.name.eq_ignore_ascii_case(&b.name) && a.decl.trim().eq_ignore_ascii_case(b.decl.trim())
    };
    let first = src
        .columns
        .iter()
        .zip(&dst.columns)
        .position(|(a, b)| !same(a, b));
    let what = match first {
        Some(i) => format!(
            "column {} is `{}` in the source but `{}` in the target",
            i + 1,
            src.columns.get(i).map(col).unwrap_or_default(),
            dst.columns.get(i).map(col).unwrap_or_default()
        ),
        None if src.columns.len() != dst.columns.len() => format!(
            "the source has {} columns, the target {}",
            src.columns.len(),
            dst.columns.len()
        ),
        None => return None,
    };
    Some(format!(
        "{what} (source: {}; target: {})",
        show(src),
        show(dst)
    ))
}

/// The end of every message that refuses a restore: the transaction is
/// rolled back.
const NOTHING: &str = "nothing was restored";

/// SQLite's refusal of a step of the copy into the target (`main` on
/// `conn`), while `doing`: the transaction is rolled back, which the
/// message says after SQLite's error, as the refusals above do.
fn refused(conn: &Connection, doing: String, e: rusqlite::Error) -> Error {
    Error::Sqlite {
        doing,
        database: file_of(conn, "main"),
        source: Box::new(e),
        // "; " and NOTHING.
        outcome: "; nothing was restored",
    }
}

/// The restore proper, inside the transaction on `conn`, in the steps of
/// the module doc: every check first, then the copy, then the schema that
/// follows the rows, then the foreign key check.
fn restore_tables(
    conn: &Connection,
    source_name: &str,
    target: &str,
    opts: &DbRestoreOptions,
) -> Result<Vec<TableRows>> {
    let src_all = tables_of(conn, SRC, source_name)?;
    let chosen = choose(&src_all, &opts.tables, source_name)?;
    let chosen = fk_order(conn, SRC, chosen)?;
    let dst_all = tables_of(conn, "main", target)?;
    check_targets(conn, &chosen, &dst_all, source_name, target, opts)?;
    let dropped_triggers = clear_targets(conn, &chosen, &dst_all, target, opts)?;
    let (done, created) = copy_tables(conn, &chosen, &dst_all, source_name, target, opts)?;
    create_later(conn, &created, dropped_triggers, source_name, target, opts)?;
    if !opts.ignore_foreign_keys {
        check_foreign_keys(conn, &chosen, target)?;
    }
    Ok(done)
}

/// The target's table of the same name as the source's `name`, if any.
fn existing<'t>(dst_all: &'t [Table], name: &str) -> Option<&'t Table> {
    dst_all.iter().find(|t| t.name.eq_ignore_ascii_case(name))
}

/// Every check before any change (the transaction would undo them all
/// the same, but a clean refusal is clearer): a target table must have
/// the source's columns, and be empty unless `drop_existing`.
fn check_targets(
    conn: &Connection,
    chosen: &[Table],
    dst_all: &[Table],
    source_name: &str,
    target: &str,
    opts: &DbRestoreOptions,
) -> Result<()> {
    for t in chosen {
        if let Some(d) = existing(dst_all, &t.name) {
            if let Some(diff) = column_difference(t, d) {
                return Err(Error::invalid(format!(
                    "table {} of {target} does not match {source_name}: {diff}; {NOTHING}",
                    t.name
                )));
            }
            if !opts.drop_existing {
                let n = row_count(conn, "main", &d.name)?;
                if n > 0 {
                    return Err(Error::invalid(format!(
                        "table {} of {target} already has {n} rows; {NOTHING}",
                        d.name
                    ))
                    .hinted(Hint::DropExisting));
                }
            }
        }
    }
    Ok(())
}

/// Drops the triggers of the existing target tables, which would fire on
/// the restored rows, and with `drop_existing` empties those tables.
/// Returns the dropped triggers' `CREATE` statements, to run again after
/// the copy.
fn clear_targets(
    conn: &Connection,
    chosen: &[Table],
    dst_all: &[Table],
    target: &str,
    opts: &DbRestoreOptions,
) -> Result<Vec<String>> {
    let mut dropped_triggers: Vec<String> = Vec::new();
    let err = || conn_err(conn, "main", format!("reading the triggers of {target}"));
    for t in chosen {
        if let Some(d) = existing(dst_all, &t.name) {
            let mut stmt = conn
                .prepare("SELECT name, sql FROM main.sqlite_schema WHERE type = 'trigger' AND lower(tbl_name) = lower(?1) AND sql IS NOT NULL")
                .map_err(err())?;
            let triggers = stmt
                .query_map([&d.name], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(err())?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(err())?;
            for (name, sql) in triggers {
                conn.execute_batch(&format!("DROP TRIGGER main.{}", ident(&name)))
                    .map_err(conn_err(
                        conn,
                        "main",
                        format!("dropping trigger {name} of {target}"),
                    ))?;
                dropped_triggers.push(sql);
            }
            if opts.drop_existing {
                conn.execute_batch(&format!("DELETE FROM main.{}", ident(&d.name)))
                    .map_err(conn_err(
                        conn,
                        "main",
                        format!("emptying table {} of {target}", d.name),
                    ))?;
            }
        }
    }
    Ok(dropped_triggers)
}

/// Copies the rows of `chosen` into the target, creating the tables it
/// lacks, checks each table's row count against the source's and the
/// expected one, and raises AUTOINCREMENT counters. Returns the rows
/// restored per table and the tables created.
fn copy_tables(
    conn: &Connection,
    chosen: &[Table],
    dst_all: &[Table],
    source_name: &str,
    target: &str,
    opts: &DbRestoreOptions,
) -> Result<(Vec<TableRows>, Vec<Table>)> {
    let mut created: Vec<Table> = Vec::new();
    let mut done = Vec::with_capacity(chosen.len());
    for t in chosen {
        let dst = match existing(dst_all, &t.name) {
            Some(d) => d.clone(),
            None => {
                // An unqualified CREATE TABLE creates in `main`.
                conn.execute_batch(&t.sql).map_err(conn_err(
                    conn,
                    "main",
                    format!("creating table {} in {target}", t.name),
                ))?;
                created.push(t.clone());
                let mut fresh = t.clone();
                fresh.rowid = rowid_name(conn, "main", &t.name, &t.columns);
                fresh
            }
        };
        let (rowid_dst, rowid_src) = match (dst.rowid, t.rowid) {
            (Some(d), Some(s)) => (format!("{d}, "), format!("{s}, ")),
            _ => (String::new(), String::new()),
        };
        let cols = t.column_list();
        conn.execute_batch(&format!(
            "INSERT INTO main.{} ({rowid_dst}{cols}) SELECT {rowid_src}{cols} FROM {SRC}.{}",
            ident(&dst.name),
            ident(&t.name)
        ))
        .map_err(|e| refused(conn, format!("restoring table {} into {target}", t.name), e))?;
        let restored = row_count(conn, "main", &dst.name)?;
        let source_rows = row_count(conn, SRC, &t.name)?;
        if restored != source_rows {
            return Err(Error::invalid(format!(
                "table {} of {target} has {restored} rows after the restore but {source_name} has {source_rows}; {NOTHING}",
                t.name
            )));
        }
        if let Some(expected) = &opts.expected
            && let Some(e) = expected.iter().find(|e| e.name == t.name)
            && e.rows != restored
        {
            // The image read does not hold what backup recorded: damage
            // (exit code 3), as for a chunk that fails its check.
            return Err(Error::corrupt(
                source_name,
                format!(
                    "table {} has {restored} rows but the snapshot recorded {}; {NOTHING}",
                    t.name, e.rows
                ),
            ));
        }
        if let Some(seq) = sequence(conn, SRC, &t.name)? {
            raise_sequence(conn, &dst.name, seq)?;
        }
        done.push(TableRows {
            name: t.name.clone(),
            rows: restored,
        });
    }
    Ok((done, created))
}

/// The schema that follows the rows: indexes and triggers of the tables
/// `created`, views the target lacks when every table is restored, and
/// the `dropped_triggers` of existing tables again.
fn create_later(
    conn: &Connection,
    created: &[Table],
    dropped_triggers: Vec<String>,
    source_name: &str,
    target: &str,
    opts: &DbRestoreOptions,
) -> Result<()> {
    let mut later = other_schema(conn, SRC, created, false)?;
    if opts.tables.is_empty() {
        let err = || conn_err(conn, SRC, format!("reading the views of {source_name}"));
        let mut stmt = conn
            .prepare(&format!(
                "SELECT sql FROM {SRC}.sqlite_schema WHERE type = 'view' AND sql IS NOT NULL AND lower(name) NOT IN (SELECT lower(name) FROM main.sqlite_schema) ORDER BY rowid"
            ))
            .map_err(err())?;
        let views = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(err())?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(err())?;
        later.extend(views);
    }
    later.extend(dropped_triggers);
    for sql in &later {
        conn.execute_batch(sql).map_err(|e| {
            refused(
                conn,
                format!(
                    "creating `{}` in {target}",
                    sql.lines().next().unwrap_or_default()
                ),
                e,
            )
        })?;
    }
    Ok(())
}

/// Fails when a row of a restored table, or of a table referring to one,
/// refers to a parent row that is not there. Violations elsewhere in the
/// target predate the restore and are not its business.
fn check_foreign_keys(conn: &Connection, restored: &[Table], target: &str) -> Result<()> {
    let names: HashSet<String> = restored.iter().map(|t| t.name.to_lowercase()).collect();
    let err = || {
        conn_err(
            conn,
            "main",
            format!("checking the foreign keys of {target}"),
        )
    };
    let mut stmt = conn
        .prepare("PRAGMA main.foreign_key_check")
        .map_err(err())?;
    let violations = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(err())?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(err())?;
    let relevant: Vec<_> = violations
        .into_iter()
        .filter(|(child, _, parent)| {
            names.contains(&child.to_lowercase()) || names.contains(&parent.to_lowercase())
        })
        .collect();
    match relevant.first() {
        None => Ok(()),
        Some((child, rowid, parent)) => Err(Error::invalid(format!(
            "after the restore {} row(s) of {target} would refer to missing rows, the first {} of table {child} to table {parent}; nothing was restored",
            relevant.len(),
            rowid.map_or_else(|| "one".to_owned(), |r| format!("rowid {r}")),
        ))
        .hinted(Hint::IgnoreForeignKeys {
            parent: parent.clone(),
        })),
    }
}

/// Restores tables of database `db` of `snap` into `into` (see
/// `restore_db`); the restored tables must also have the row counts the
/// snapshot recorded. Returns the image's path in the snapshot and the
/// rows restored per table.
///
/// # Errors
/// As [`materialize`] and `restore_db`.
pub fn restore_from_snapshot(
    repo: &Repository,
    snap: &Snapshot,
    db: Option<&[u8]>,
    into: &Path,
    opts: &DbRestoreOptions,
) -> Result<DbRestored> {
    let what = format!(
        "tables of {} from the snapshot of {} into {}",
        db.map_or_else(
            || "its database".to_owned(),
            |d| String::from_utf8_lossy(d).into_owned()
        ),
        snap.timestamp(),
        into.display()
    );
    Event::new(repo, "db-restore", what).run(|_| {
        let image = materialize(repo, snap, db)?;
        let mut opts = opts.clone();
        opts.expected = Some(image.info.tables.clone());
        let name = image.name();
        let undo = protect_into(Some(repo), into, &opts)?;
        let tables = restore_db(
            &image.path(),
            &format!("the snapshot's database {name}"),
            into,
            &opts,
        )?;
        Ok(DbRestored {
            database: name,
            tables,
            undo,
        })
    })
}

impl Audited for DbRestored {
    fn audit(&self) -> (bool, String) {
        let detail = match &self.undo {
            Some(u) => format!(
                "{}; safety snapshot {}",
                describe_tables(&self.tables),
                u.snapshot
            ),
            None => describe_tables(&self.tables),
        };
        (true, detail)
    }
}

/// Restores tables from an export (a file, or a CSV directory) into the
/// database at `into` (see `restore_db`). The export is loaded into a
/// scratch database in a temporary directory first. A lone CSV file holds
/// one table, named by `opts.tables` if it names exactly one, else by the
/// file's name; its schema is the table's in `into`, which must exist.
///
/// # Errors
/// As `import::load` (an export that cannot be read or is not a valid
/// export of `format`) and `restore_db`.
pub fn restore_from_export(
    export: &Path,
    format: DbFormat,
    into: &Path,
    opts: &DbRestoreOptions,
    repo: Option<&Repository>,
) -> Result<DbRestored> {
    let scratch = import::load(export, format, into, &opts.tables)?;
    let undo = protect_into(repo, into, opts)?;
    let tables = restore_db(
        &scratch.path(),
        &format!("the export {}", export.display()),
        into,
        opts,
    )?;
    Ok(DbRestored {
        database: export.display().to_string(),
        tables,
        undo,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dbexport_restore_counts_that_differ_from_the_recorded_ones_fail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src.db");
        Connection::open(&src)
            .expect("open")
            .execute_batch("CREATE TABLE t (a); INSERT INTO t VALUES (1), (2);")
            .expect("fill");
        let wrong = vec![TableRows {
            name: "t".into(),
            rows: 3,
        }];

        let into = dir.path().join("into.db");
        let mut ropts = DbRestoreOptions {
            expected: Some(wrong),
            ..DbRestoreOptions::default()
        };
        let e = restore_db(&src, "src", &into, &ropts).expect_err("mismatch");
        assert!(e.is_damage() && e.to_string().contains("recorded 3"), "{e}");
        assert!(!into.exists(), "a failed restore leaves no new file");
        ropts.expected = None;
        let done = restore_db(&src, "src", &into, &ropts).expect("restore");
        assert_eq!(
            done,
            vec![TableRows {
                name: "t".into(),
                rows: 2
            }]
        );
    }

    /// Each refusal is of its kind, SQLite's with SQLite's error as the
    /// source and the database it had open, in the words they always had.
    #[test]
    fn dbexport_restore_refusals_are_typed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src.db");
        Connection::open(&src)
            .expect("open")
            .execute_batch("CREATE TABLE t (a); INSERT INTO t VALUES (1), (-2);")
            .expect("fill");
        let into = dir.path().join("into.db");
        let only = |t: &str| DbRestoreOptions {
            tables: vec![t.to_owned()],
            ..DbRestoreOptions::default()
        };

        let e = restore_db(&src, "src", &into, &only("nope")).expect_err("no such table");
        assert_eq!(e.kind(), crate::error::ErrorKind::NotFound, "{e}");
        assert_eq!(e.to_string(), "src has no table 'nope'; its tables are: t");

        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, vec![b'x'; 4096]).expect("junk");
        let e = restore_db(&src, "src", &junk, &only("t")).expect_err("not a database");
        assert_eq!(
            e.to_string(),
            format!(
                "{} is not a usable SQLite database: file is not a database",
                junk.display()
            )
        );
        let Error::Sqlite {
            database, source, ..
        } = &e
        else {
            panic!("{e:?}");
        };
        assert_eq!(database, &junk);
        assert_eq!(
            source.sqlite_error_code(),
            Some(rusqlite::ErrorCode::NotADatabase)
        );

        // A target whose constraint refuses a row: rolled back, and said so.
        Connection::open(&into)
            .expect("open")
            .execute_batch("CREATE TABLE t (a CHECK (a > 0));")
            .expect("target");
        let e = restore_db(&src, "src", &into, &only("t")).expect_err("refused");
        assert_eq!(e.kind(), crate::error::ErrorKind::Database, "{e}");
        assert_eq!(
            e.to_string(),
            format!(
                "restoring table t into {}: CHECK constraint failed: a > 0; nothing was restored",
                into.display()
            )
        );
    }
}
