//! Logical export and table-level restore of SQLite databases, above all of
//! the database images that backup captured (src/apps/sqlite/mod.rs).
//!
//! This module owns three things: the **value encodings** of the export
//! formats ([`Cell`] and its `sql`/`json`/`csv` encoders and decoders, each
//! exact for every SQLite storage class), **export** of a database file as
//! an SQL script, one JSON document or CSV files ([`export`],
//! [`export_to_path`]), and **restore** of tables from a database file, a
//! snapshot's database image ([`materialize`]) or an export
//! ([`restore_from_export`]) into another database ([`restore_db`]).
//!
//! # Restore
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
//! temporary directory first (the SQL script is run there with `ATTACH`
//! disabled, so it cannot change other databases), then restoring from
//! that. Exports are loaded as they are read, a statement (SQL) or a row
//! (JSON, CSV) at a time, so memory does not grow with their size.
//!
//! # Formats
//!
//! - **sql**: `PRAGMA foreign_keys=OFF; BEGIN TRANSACTION;`, each table's
//!   `CREATE TABLE` and `INSERT`s (parents first), then indexes, triggers
//!   and views, `COMMIT;` — a script `sqlite3 NEW.db < FILE` runs
//!   (AUTOINCREMENT counters as statements on `sqlite_sequence`). Values
//!   are literals of their storage class: integers in decimal (`i64::MIN`
//!   as `(-9223372036854775807-1)`, which SQLite would otherwise read as a
//!   real), reals in Rust's shortest round-trip form (`0.1`, `1e-300`,
//!   `1.0`; infinities as `9e999`/`-9e999`), text quoted with `'`
//!   doubled (text that is not UTF-8 or holds NUL as
//!   `CAST(X'…' AS TEXT)`), blobs as `X'…'`, `NULL`.
//! - **json**: one document [`JSON_FORMAT`] version [`JSON_VERSION`]:
//!   `{"format","version","tables":[{"name","schema","columns","rows",
//!   "sequence"?}],"other_schema":[…]}` (`sequence`: the AUTOINCREMENT
//!   counter, for such tables); a value is `null`, an integer, a real (a JSON
//!   number that always has a `.` or an exponent; `{"real":"inf"}` and
//!   `{"real":"-inf"}`), a string, `{"blob_hex":"…"}`, or
//!   `{"text_hex":"…"}` for text that is not UTF-8.
//! - **csv**: one file per table with a header row of column names
//!   (generated columns left out). A field is decoded on its own: empty is
//!   NULL; `\x` followed by hex is a blob; any other field starting with
//!   `\` is text, the rest after the `\`; a field Rust reads as an `i64`
//!   is an integer, else one it reads as an `f64` is a real (written in
//!   the shortest round-trip form, always with `.` or `e`, or `inf`);
//!   everything else is text as it stands. Text is written with a leading
//!   `\` exactly when it would otherwise read back as something else
//!   (empty, starting with `\`, or looking like a number: `\007`, `\1e5`).
//!   A directory export holds `TABLE.csv` per table (bytes other than
//!   ASCII letters, digits, `_`, `-` and a non-leading `.` written `%XX`)
//!   and [`CSV_SCHEMA_FILE`], the schema as an SQL script (a schema-only
//!   sql export).
//!
//! Exports do not carry the hidden rowids of tables without an `INTEGER
//! PRIMARY KEY`: rows are written in rowid order and get new rowids in
//! that order. Restores from a snapshot keep them.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Result};
use crate::format::snapshot::{DatabaseInfo, Snapshot, TableRows};
use crate::repo::Repository;

/// The `format` member of a JSON export.
pub const JSON_FORMAT: &str = "cairn-db-export";

/// The `version` member of a JSON export this build writes and reads.
pub const JSON_VERSION: u32 = 1;

/// The file of a CSV directory export that holds the schema.
pub const CSV_SCHEMA_FILE: &str = "schema.sql";

/// How long a connection waits for another process's lock on a database.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The schema name the source is attached under during a restore.
const SRC: &str = "cairn_src";

// -------------------------------------------------------------- formats --

/// An export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbFormat {
    /// An SQL script.
    Sql,
    /// One JSON document.
    Json,
    /// CSV, one file per table.
    Csv,
}

impl DbFormat {
    /// The format's name on the command line.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Sql => "sql",
            Self::Json => "json",
            Self::Csv => "csv",
        }
    }

    /// The format an export at `path` is in, by its extension (a directory
    /// is a CSV export); `None` when that does not tell.
    #[must_use]
    pub fn guess(path: &Path) -> Option<Self> {
        if path.is_dir() {
            return Some(Self::Csv);
        }
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "sql" => Some(Self::Sql),
            "json" => Some(Self::Json),
            "csv" => Some(Self::Csv),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------- values --

/// One SQLite value, owned. Text is bytes: SQLite does not insist on valid
/// UTF-8 and neither do the encodings.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// NULL.
    Null,
    /// A 64-bit signed integer.
    Integer(i64),
    /// An IEEE 754 double.
    Real(f64),
    /// Text (normally UTF-8).
    Text(Vec<u8>),
    /// A blob.
    Blob(Vec<u8>),
}

impl Cell {
    /// An owned copy of a value SQLite returned.
    #[must_use]
    pub fn from_ref(v: ValueRef<'_>) -> Self {
        match v {
            ValueRef::Null => Self::Null,
            ValueRef::Integer(i) => Self::Integer(i),
            ValueRef::Real(f) => Self::Real(f),
            ValueRef::Text(t) => Self::Text(t.to_vec()),
            ValueRef::Blob(b) => Self::Blob(b.to_vec()),
        }
    }

    fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Self::Null => ValueRef::Null,
            Self::Integer(i) => ValueRef::Integer(*i),
            Self::Real(f) => ValueRef::Real(*f),
            Self::Text(t) => ValueRef::Text(t),
            Self::Blob(b) => ValueRef::Blob(b),
        }
    }
}

impl ToSql for Cell {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(self.as_ref()))
    }
}

/// Rust's shortest representation that reads back as the same double
/// (`{:?}` always has a `.` or an exponent, so it never looks like an
/// integer).
fn real_text(f: f64) -> String {
    format!("{f:?}")
}

/// The SQL literal of a value (see the module doc).
#[must_use]
pub fn sql_literal(v: &Cell) -> String {
    match v {
        Cell::Null => "NULL".to_owned(),
        // SQLite reads `-9223372036854775808` as minus a too-large
        // integer, which becomes a real.
        Cell::Integer(i64::MIN) => "(-9223372036854775807-1)".to_owned(),
        Cell::Integer(i) => i.to_string(),
        Cell::Real(f) if f.is_nan() => "NULL".to_owned(),
        Cell::Real(f) if f.is_infinite() => if *f > 0.0 { "9e999" } else { "-9e999" }.to_owned(),
        Cell::Real(f) => real_text(*f),
        Cell::Text(t) => match std::str::from_utf8(t) {
            Ok(s) if !s.contains('\0') => format!("'{}'", s.replace('\'', "''")),
            _ => format!("CAST(X'{}' AS TEXT)", hex::encode_upper(t)),
        },
        Cell::Blob(b) => format!("X'{}'", hex::encode_upper(b)),
    }
}

/// The JSON form of a value (see the module doc).
#[must_use]
pub fn json_value(v: &Cell) -> serde_json::Value {
    use serde_json::{Value, json};
    match v {
        Cell::Null => Value::Null,
        Cell::Integer(i) => Value::from(*i),
        Cell::Real(f) if f.is_infinite() => {
            json!({"real": if *f > 0.0 { "inf" } else { "-inf" }})
        }
        // NaN cannot be stored in SQLite (it becomes NULL).
        Cell::Real(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Cell::Text(t) => match std::str::from_utf8(t) {
            Ok(s) => Value::String(s.to_owned()),
            Err(_) => json!({"text_hex": hex::encode(t)}),
        },
        Cell::Blob(b) => json!({"blob_hex": hex::encode(b)}),
    }
}

/// Reads back a value [`json_value`] wrote. The error says what is wrong.
///
/// # Errors
/// A JSON value that is not one of the forms of the module doc.
pub fn json_cell(v: &serde_json::Value) -> Result<Cell, String> {
    use serde_json::Value;
    match v {
        Value::Null => Ok(Cell::Null),
        Value::Bool(_) => Err("true/false is not a SQLite value".to_owned()),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(Cell::Integer(i))
            } else if n.is_u64() {
                Err(format!("integer {n} is larger than SQLite's largest"))
            } else {
                n.as_f64()
                    .map(Cell::Real)
                    .ok_or_else(|| format!("{n} is not a number SQLite can store"))
            }
        }
        Value::String(s) => Ok(Cell::Text(s.as_bytes().to_vec())),
        Value::Object(m) => {
            let mut entries = m.iter();
            let (Some((key, Value::String(s))), None) = (entries.next(), entries.next()) else {
                return Err(format!(
                    "{v} is not a value: an object must be {{\"blob_hex\": \"…\"}}, {{\"text_hex\": \"…\"}} or {{\"real\": \"…\"}}"
                ));
            };
            match key.as_str() {
                "blob_hex" => hex::decode(s)
                    .map(Cell::Blob)
                    .map_err(|e| format!("blob_hex {s:?}: {e}")),
                "text_hex" => hex::decode(s)
                    .map(Cell::Text)
                    .map_err(|e| format!("text_hex {s:?}: {e}")),
                "real" => s
                    .parse::<f64>()
                    .map(Cell::Real)
                    .map_err(|e| format!("real {s:?}: {e}")),
                other => Err(format!(
                    "unknown value form \"{other}\": expected blob_hex, text_hex or real"
                )),
            }
        }
        Value::Array(_) => Err(format!("{v} is not a value")),
    }
}

/// How a CSV field reads when it is not escaped: an integer, a real, or
/// text.
fn csv_plain(field: &[u8]) -> Cell {
    if let Ok(s) = std::str::from_utf8(field) {
        if let Ok(i) = s.parse::<i64>() {
            return Cell::Integer(i);
        }
        if let Ok(f) = s.parse::<f64>() {
            return Cell::Real(f);
        }
    }
    Cell::Text(field.to_vec())
}

/// The CSV field of a value (see the module doc).
#[must_use]
pub fn csv_field(v: &Cell) -> Vec<u8> {
    match v {
        Cell::Null => Vec::new(),
        Cell::Integer(i) => i.to_string().into_bytes(),
        Cell::Real(f) if f.is_nan() => Vec::new(),
        Cell::Real(f) => real_text(*f).into_bytes(),
        Cell::Text(t) => {
            let plain_ok =
                !t.is_empty() && t.first() != Some(&b'\\') && matches!(csv_plain(t), Cell::Text(_));
            if plain_ok {
                t.clone()
            } else {
                let mut escaped = Vec::with_capacity(t.len() + 1);
                escaped.push(b'\\');
                escaped.extend_from_slice(t);
                escaped
            }
        }
        Cell::Blob(b) => {
            let mut f = b"\\x".to_vec();
            f.extend_from_slice(hex::encode(b).as_bytes());
            f
        }
    }
}

/// Reads back a CSV field [`csv_field`] wrote.
///
/// # Errors
/// A `\x` field whose rest is not hex.
pub fn csv_cell(field: &[u8]) -> Result<Cell, String> {
    match field {
        [] => Ok(Cell::Null),
        [b'\\', b'x', hexits @ ..] => hex::decode(hexits)
            .map(Cell::Blob)
            .map_err(|e| format!("{:?} is not a blob: {e}", String::from_utf8_lossy(field))),
        [b'\\', rest @ ..] => Ok(Cell::Text(rest.to_vec())),
        _ => Ok(csv_plain(field)),
    }
}

// ---------------------------------------------------------------- schema --

/// A column as `PRAGMA table_xinfo` shows it.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    decl: String,
    /// A generated column: not exported, not inserted.
    generated: bool,
    /// Its position in the primary key (0: not in it).
    pk: i64,
}

/// A table of a database (a schema of a connection).
#[derive(Debug, Clone)]
struct Table {
    name: String,
    /// Its `CREATE TABLE` statement.
    sql: String,
    columns: Vec<Column>,
    /// A name that reads the table's rowid, when it has one that is not
    /// also a column (a rowid table without an `INTEGER PRIMARY KEY`).
    rowid: Option<&'static str>,
}

impl Table {
    fn stored_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| !c.generated)
    }

    fn column_list(&self) -> String {
        self.stored_columns()
            .map(|c| ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `name` as a quoted SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An error about a database, with what was being done.
fn db_err(what: impl std::fmt::Display) -> impl FnOnce(rusqlite::Error) -> Error {
    move |e| Error::invalid(format!("{what}: {e}"))
}

/// The tables of `schema` on `conn`, by name (SQLite's own `sqlite_`
/// tables and virtual tables left out, as in `table_counts`).
fn tables_of(conn: &Connection, schema: &str, what: &str) -> Result<Vec<Table>> {
    let err = || db_err(format!("reading the schema of {what}"));
    let mut stmt = conn
        .prepare(&format!(
            "SELECT name, sql FROM {}.sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND sql NOT LIKE 'CREATE VIRTUAL%' ORDER BY name",
            ident(schema)
        ))
        .map_err(err())?;
    let named = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(err())?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(err())?;
    let mut cols = conn
        .prepare("SELECT name, type, hidden, pk FROM pragma_table_xinfo(?1, ?2) ORDER BY cid")
        .map_err(err())?;
    let mut tables = Vec::with_capacity(named.len());
    for (name, sql) in named {
        let columns = cols
            .query_map((&name, schema), |r| {
                Ok(Column {
                    name: r.get(0)?,
                    decl: r.get(1)?,
                    // 2 and 3: virtual and stored generated columns.
                    generated: matches!(r.get::<_, i64>(2)?, 2 | 3),
                    pk: r.get(3)?,
                })
            })
            .map_err(err())?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(err())?;
        let rowid = rowid_name(conn, schema, &name, &columns);
        tables.push(Table {
            name,
            sql,
            columns,
            rowid,
        });
    }
    Ok(tables)
}

/// The name to read a table's own rowid by, if it has one that no column
/// stands for. A lone `INTEGER PRIMARY KEY` column *is* the rowid (and is
/// copied as a column); a `WITHOUT ROWID` table has none, which the probe
/// query finds.
fn rowid_name(
    conn: &Connection,
    schema: &str,
    table: &str,
    columns: &[Column],
) -> Option<&'static str> {
    let pks: Vec<&Column> = columns.iter().filter(|c| c.pk > 0).collect();
    if let [only] = pks.as_slice()
        && only.decl.eq_ignore_ascii_case("INTEGER")
    {
        return None;
    }
    let name = ["rowid", "_rowid_", "oid"]
        .into_iter()
        .find(|n| !columns.iter().any(|c| c.name.eq_ignore_ascii_case(n)))?;
    conn.prepare(&format!(
        "SELECT {name} FROM {}.{} LIMIT 0",
        ident(schema),
        ident(table)
    ))
    .ok()
    .map(|_| name)
}

/// The tables named in `wanted` (all of them when it is empty), each name
/// matched exactly or else ignoring case, as SQLite does.
fn choose(all: &[Table], wanted: &[String], what: &str) -> Result<Vec<Table>> {
    if wanted.is_empty() {
        return Ok(all.to_vec());
    }
    let mut chosen: Vec<Table> = Vec::new();
    for w in wanted {
        let found = all
            .iter()
            .find(|t| t.name == *w)
            .or_else(|| all.iter().find(|t| t.name.eq_ignore_ascii_case(w)));
        match found {
            Some(t) if chosen.iter().any(|c| c.name == t.name) => {}
            Some(t) => chosen.push(t.clone()),
            None => {
                let names: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
                return Err(Error::invalid(format!(
                    "{what} has no table '{w}'; its tables are: {}",
                    if names.is_empty() {
                        "(none)".to_owned()
                    } else {
                        names.join(", ")
                    }
                )));
            }
        }
    }
    Ok(chosen)
}

/// `tables` in foreign key order: every table after the tables it refers
/// to (among `tables`), otherwise by name. A cycle is cut where it is
/// found; restores defer foreign key checks, so order is a courtesy there.
fn fk_order(conn: &Connection, schema: &str, tables: Vec<Table>) -> Result<Vec<Table>> {
    let mut stmt = conn
        .prepare("SELECT DISTINCT \"table\" FROM pragma_foreign_key_list(?1, ?2)")
        .map_err(db_err("reading foreign keys"))?;
    let lower: HashMap<String, usize> = tables
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.to_lowercase(), i))
        .collect();
    let mut parents: Vec<Vec<usize>> = Vec::with_capacity(tables.len());
    for t in &tables {
        let names = stmt
            .query_map((&t.name, schema), |r| r.get::<_, String>(0))
            .map_err(db_err("reading foreign keys"))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_err("reading foreign keys"))?;
        parents.push(
            names
                .iter()
                .filter_map(|n| lower.get(&n.to_lowercase()).copied())
                .collect(),
        );
    }
    // Depth-first, parents first; 1 = being visited (a cycle), 2 = placed.
    fn visit(i: usize, parents: &[Vec<usize>], state: &mut [u8], order: &mut Vec<usize>) {
        if state.get(i).copied().unwrap_or(2) != 0 {
            return;
        }
        if let Some(s) = state.get_mut(i) {
            *s = 1;
        }
        for &p in parents.get(i).map_or(&[][..], Vec::as_slice) {
            visit(p, parents, state, order);
        }
        if let Some(s) = state.get_mut(i) {
            *s = 2;
        }
        order.push(i);
    }
    let mut state = vec![0u8; tables.len()];
    let mut order = Vec::with_capacity(tables.len());
    for i in 0..tables.len() {
        visit(i, &parents, &mut state, &mut order);
    }
    let mut slots: Vec<Option<Table>> = tables.into_iter().map(Some).collect();
    Ok(order
        .into_iter()
        .filter_map(|i| slots.get_mut(i).and_then(Option::take))
        .collect())
}

/// The `CREATE` statements of the indexes and triggers of `tables`, and
/// with `views` of every view, in `sqlite_schema` order.
fn other_schema(
    conn: &Connection,
    schema: &str,
    tables: &[Table],
    views: bool,
) -> Result<Vec<String>> {
    let err = || db_err("reading the schema");
    let mut stmt = conn
        .prepare(&format!(
            "SELECT type, tbl_name, sql FROM {}.sqlite_schema WHERE type IN ('index', 'trigger', 'view') AND sql IS NOT NULL ORDER BY rowid",
            ident(schema)
        ))
        .map_err(err())?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(err())?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(err())?;
    let names: HashSet<String> = tables.iter().map(|t| t.name.to_lowercase()).collect();
    Ok(rows
        .into_iter()
        .filter(|(kind, table, _)| {
            if kind == "view" {
                views
            } else {
                names.contains(&table.to_lowercase())
            }
        })
        .map(|(_, _, sql)| sql)
        .collect())
}

fn row_count(conn: &Connection, schema: &str, table: &str) -> Result<u64> {
    let n: i64 = conn
        .query_row(
            &format!("SELECT count(*) FROM {}.{}", ident(schema), ident(table)),
            [],
            |r| r.get(0),
        )
        .map_err(db_err(format!("counting the rows of {table}")))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Whether `schema` has `sqlite_sequence`, the table of AUTOINCREMENT
/// counters (it exists once an AUTOINCREMENT table was created).
fn has_sequences(conn: &Connection, schema: &str) -> Result<bool> {
    let n: i64 = conn
        .query_row(
            &format!(
                "SELECT count(*) FROM {}.sqlite_schema WHERE type = 'table' AND name = 'sqlite_sequence'",
                ident(schema)
            ),
            [],
            |r| r.get(0),
        )
        .map_err(db_err("reading AUTOINCREMENT counters"))?;
    Ok(n > 0)
}

/// The AUTOINCREMENT counter `schema` keeps for `table`: the largest id
/// ever handed out, which may be above the largest id still there.
fn sequence(conn: &Connection, schema: &str, table: &str) -> Result<Option<i64>> {
    if !has_sequences(conn, schema)? {
        return Ok(None);
    }
    conn.query_row(
        &format!(
            "SELECT max(seq) FROM {}.sqlite_sequence WHERE name = ?1",
            ident(schema)
        ),
        [table],
        |r| r.get(0),
    )
    .map_err(db_err(format!(
        "reading the AUTOINCREMENT counter of {table}"
    )))
}

/// Raises the AUTOINCREMENT counter of `table` in `main` to at least
/// `seq`, so that ids the source handed out are not handed out again.
/// Nothing when `main` keeps no counters (no AUTOINCREMENT table).
fn raise_sequence(conn: &Connection, table: &str, seq: i64) -> Result<()> {
    if !has_sequences(conn, "main")? {
        return Ok(());
    }
    let now = sequence(conn, "main", table)?;
    if now.is_some_and(|n| n >= seq) {
        return Ok(());
    }
    conn.execute("DELETE FROM main.sqlite_sequence WHERE name = ?1", [table])
        .and_then(|_| {
            conn.execute(
                "INSERT INTO main.sqlite_sequence (name, seq) VALUES (?1, ?2)",
                (table, seq),
            )
        })
        .map_err(db_err(format!(
            "setting the AUTOINCREMENT counter of {table}"
        )))?;
    Ok(())
}

// ---------------------------------------------------------------- export --

/// What to export.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ExportOptions {
    /// Only these tables (all when empty); an unknown name is an error.
    pub tables: Vec<String>,
    /// The schema only, no rows.
    pub schema_only: bool,
    /// How messages name the database (default: its path), for example
    /// its path in a snapshot rather than that of a temporary image.
    pub name: Option<String>,
    /// Row counts the exported tables must have (a snapshot's stored
    /// counts); a table whose rows differ fails the export.
    pub expected: Option<Vec<TableRows>>,
    /// With `schema_only`: still write the AUTOINCREMENT counters (the
    /// schema file of a CSV directory, whose rows are in the CSV files).
    pub(crate) sequences_too: bool,
}

impl ExportOptions {
    fn name_of(&self, db: &Path) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| db.display().to_string())
    }

    /// `rows`, the rows exported of `table`, if they are as expected.
    fn checked(&self, table: &str, rows: u64) -> Result<u64> {
        match self
            .expected
            .as_ref()
            .and_then(|e| e.iter().find(|t| t.name == table))
        {
            Some(e) if e.rows != rows => Err(Error::corrupt(
                format!(
                    "database {}",
                    self.name.as_deref().unwrap_or("of the snapshot")
                ),
                format!(
                    "table {table} has {rows} rows but the snapshot recorded {}",
                    e.rows
                ),
            )),
            _ => Ok(rows),
        }
    }
}

/// Opens a database file for reading. Read-write, because a database
/// image in WAL mode needs its `-shm` file created to be read at all; the
/// callers only read.
fn open_source(db: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_err(format!("cannot open {}", db.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(db_err(format!("cannot open {}", db.display())))?;
    Ok(conn)
}

fn out_err(source: std::io::Error) -> Error {
    Error::Output { source }
}

/// The chosen tables of the database at `db`, in foreign key order.
fn export_tables(conn: &Connection, db: &Path, opts: &ExportOptions) -> Result<Vec<Table>> {
    let what = opts.name_of(db);
    let all = tables_of(conn, "main", &what)?;
    let chosen = choose(&all, &opts.tables, &what)?;
    fk_order(conn, "main", chosen)
}

/// Calls `row` with each row of `table` (its stored columns), in rowid
/// order for rowid tables and primary key order otherwise.
fn each_row(
    conn: &Connection,
    table: &Table,
    row: &mut dyn FnMut(&[Cell]) -> Result<()>,
) -> Result<u64> {
    let order = match table.rowid {
        Some(r) => format!(" ORDER BY {r}"),
        None => String::new(),
    };
    let err = || db_err(format!("reading table {}", table.name));
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {} FROM main.{}{order}",
            table.column_list(),
            ident(&table.name)
        ))
        .map_err(err())?;
    let width = stmt.column_count();
    let mut rows = stmt.query([]).map_err(err())?;
    let mut cells = Vec::with_capacity(width);
    let mut n = 0u64;
    while let Some(r) = rows.next().map_err(err())? {
        cells.clear();
        for i in 0..width {
            cells.push(Cell::from_ref(r.get_ref(i).map_err(err())?));
        }
        row(&cells)?;
        n += 1;
    }
    Ok(n)
}

/// Exports the database at `db` to `out` as `format` (see the module doc);
/// CSV takes exactly one table. Returns the rows exported per table, in
/// export order.
///
/// # Errors
/// [`Error::Invalid`] for an unknown table (listing the tables there are),
/// a CSV export of other than one table, or a database SQLite cannot read;
/// [`Error::Output`] when `out` fails.
pub fn export(
    db: &Path,
    format: DbFormat,
    opts: &ExportOptions,
    out: &mut dyn Write,
) -> Result<Vec<TableRows>> {
    let conn = open_source(db)?;
    let tables = export_tables(&conn, db, opts)?;
    match format {
        DbFormat::Sql => export_sql(&conn, &tables, opts, out),
        DbFormat::Json => export_json(&conn, &tables, opts, out),
        DbFormat::Csv => match tables.as_slice() {
            [one] => Ok(vec![export_csv(&conn, one, opts, out)?]),
            _ => Err(Error::invalid(format!(
                "a CSV export holds one table and {} has {}: choose one with --table, or write one file per table with --output DIR",
                opts.name_of(db),
                tables.len()
            ))),
        },
    }
}

/// Exports the database at `db` to `path`: an SQL or JSON export to the
/// file `path`, a CSV export to the directory `path` (created if need be;
/// `TABLE.csv` per table and [`CSV_SCHEMA_FILE`]). Each file is written
/// under a temporary name and renamed into place, so it is never seen
/// half-written.
///
/// # Errors
/// As [`export`]; [`Error::TargetWrite`] naming a file that cannot be
/// written.
pub fn export_to_path(
    db: &Path,
    format: DbFormat,
    opts: &ExportOptions,
    path: &Path,
) -> Result<Vec<TableRows>> {
    if format != DbFormat::Csv {
        return write_atomic(path, &mut |w| export(db, format, opts, w));
    }
    let conn = open_source(db)?;
    let tables = export_tables(&conn, db, opts)?;
    std::fs::create_dir_all(path).map_err(|e| Error::target_write(path, e))?;
    let mut schema_opts = opts.clone();
    schema_opts.sequences_too = !opts.schema_only;
    schema_opts.schema_only = true;
    write_atomic(&path.join(CSV_SCHEMA_FILE), &mut |w| {
        export_sql(&conn, &tables, &schema_opts, w)
    })?;
    let mut done = Vec::with_capacity(tables.len());
    for t in &tables {
        let file = path.join(format!("{}.csv", csv_file_stem(&t.name)));
        done.push(write_atomic(&file, &mut |w| export_csv(&conn, t, opts, w))?);
    }
    Ok(done)
}

/// Writes `path` through `fill` under a temporary name in its directory,
/// renamed into place once complete.
fn write_atomic<T>(path: &Path, fill: &mut dyn FnMut(&mut dyn Write) -> Result<T>) -> Result<T> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".cairn-export-")
        .tempfile_in(dir)
        .map_err(|e| Error::target_write(path, e))?;
    let mut w = BufWriter::new(tmp);
    let done = fill(&mut w).map_err(|e| match e {
        Error::Output { source } => Error::target_write(path, source),
        other => other,
    })?;
    let tmp = w
        .into_inner()
        .map_err(|e| Error::target_write(path, e.into_error()))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::target_write(path, e))?;
    tmp.persist(path)
        .map_err(|e| Error::target_write(path, e.error))?;
    Ok(done)
}

/// The file name stem of a table's CSV file (see the module doc).
#[must_use]
pub fn csv_file_stem(table: &str) -> String {
    let mut s = String::with_capacity(table.len());
    for (i, b) in table.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0) {
            s.push(char::from(b));
        } else {
            let _ = write!(s, "%{b:02X}");
        }
    }
    s
}

/// The table name a CSV file stem stands for: [`csv_file_stem`] undone.
#[must_use]
pub fn table_of_csv_stem(stem: &str) -> String {
    let bytes = stem.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let decoded = (b == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match decoded {
            Some(d) => {
                out.push(d);
                i += 3;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn export_sql(
    conn: &Connection,
    tables: &[Table],
    opts: &ExportOptions,
    out: &mut dyn Write,
) -> Result<Vec<TableRows>> {
    writeln!(out, "PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;").map_err(out_err)?;
    let mut done = Vec::with_capacity(tables.len());
    for t in tables {
        writeln!(out, "{};", t.sql).map_err(out_err)?;
        let rows = if opts.schema_only {
            0
        } else {
            let head = format!(
                "INSERT INTO {} ({}) VALUES(",
                ident(&t.name),
                t.column_list()
            );
            let n = each_row(conn, t, &mut |cells| {
                let values: Vec<String> = cells.iter().map(sql_literal).collect();
                writeln!(out, "{head}{});", values.join(",")).map_err(out_err)
            })?;
            opts.checked(&t.name, n)?
        };
        // Not in a schema-only export (a counter is data), but in the
        // schema of a CSV directory: rows inserted later only ever raise
        // the counter.
        let counters = !opts.schema_only || opts.sequences_too;
        if counters && let Some(seq) = sequence(conn, "main", &t.name)? {
            let name = sql_literal(&Cell::Text(t.name.clone().into_bytes()));
            writeln!(
                out,
                "DELETE FROM sqlite_sequence WHERE name = {name};\nINSERT INTO sqlite_sequence (name, seq) VALUES ({name}, {seq});"
            )
            .map_err(out_err)?;
        }
        done.push(TableRows {
            name: t.name.clone(),
            rows,
        });
    }
    for sql in other_schema(conn, "main", tables, opts.tables.is_empty())? {
        writeln!(out, "{sql};").map_err(out_err)?;
    }
    writeln!(out, "COMMIT;").map_err(out_err)?;
    out.flush().map_err(out_err)?;
    Ok(done)
}

fn export_json(
    conn: &Connection,
    tables: &[Table],
    opts: &ExportOptions,
    out: &mut dyn Write,
) -> Result<Vec<TableRows>> {
    // Written piecewise so that rows stream: only one row is in memory.
    write!(
        out,
        "{{\"format\":{},\"version\":{JSON_VERSION},\"tables\":[",
        json(&JSON_FORMAT)
    )
    .map_err(out_err)?;
    let mut done = Vec::with_capacity(tables.len());
    for (i, t) in tables.iter().enumerate() {
        let columns: Vec<&str> = t.stored_columns().map(|c| c.name.as_str()).collect();
        write!(
            out,
            "{}\n{{\"name\":{},\"schema\":{},\"columns\":{},\"rows\":[",
            if i == 0 { "" } else { "," },
            json(&t.name),
            json(&t.sql),
            json(&columns)
        )
        .map_err(out_err)?;
        let mut first = true;
        let rows = if opts.schema_only {
            0
        } else {
            let n = each_row(conn, t, &mut |cells| {
                let values: Vec<serde_json::Value> = cells.iter().map(json_value).collect();
                write!(out, "{}\n{}", if first { "" } else { "," }, json(&values))
                    .map_err(out_err)?;
                first = false;
                Ok(())
            })?;
            opts.checked(&t.name, n)?
        };
        write!(out, "]").map_err(out_err)?;
        if let Some(seq) = sequence(conn, "main", &t.name)? {
            write!(out, ",\"sequence\":{seq}").map_err(out_err)?;
        }
        write!(out, "}}").map_err(out_err)?;
        done.push(TableRows {
            name: t.name.clone(),
            rows,
        });
    }
    let other = other_schema(conn, "main", tables, opts.tables.is_empty())?;
    writeln!(out, "\n],\"other_schema\":{}}}", json(&other)).map_err(out_err)?;
    out.flush().map_err(out_err)?;
    Ok(done)
}

/// JSON text of strings, numbers and vectors of them, which cannot fail
/// to serialise; `null` in the impossible case would make the export fail
/// loudly on import, never silently.
fn json<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

fn export_csv(
    conn: &Connection,
    table: &Table,
    opts: &ExportOptions,
    out: &mut dyn Write,
) -> Result<TableRows> {
    let csv_err = |e: csv::Error| match e.into_kind() {
        csv::ErrorKind::Io(source) => Error::Output { source },
        other => Error::invalid(format!("writing CSV: {other:?}")),
    };
    let mut w = csv::WriterBuilder::new().from_writer(out);
    w.write_record(table.stored_columns().map(|c| c.name.as_bytes()))
        .map_err(csv_err)?;
    let rows = if opts.schema_only {
        0
    } else {
        let n = each_row(conn, table, &mut |cells| {
            w.write_record(cells.iter().map(csv_field)).map_err(csv_err)
        })?;
        opts.checked(&table.name, n)?
    };
    w.flush().map_err(out_err)?;
    Ok(TableRows {
        name: table.name.clone(),
        rows,
    })
}

// --------------------------------------------------------------- restore --

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
/// [`Error::Invalid`] naming the table and the problem: an unknown table,
/// a target table whose columns differ or that has rows (without
/// `drop_existing`), a foreign key violation, a row count that differs
/// from the source's, or a file SQLite cannot use; [`Error::Corrupt`]
/// when a count differs from the expected one (the snapshot's record).
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
    let mut conn = Connection::open(into).map_err(db_err(format!("cannot open {target}")))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(db_err(format!("cannot open {target}")))?;
    conn.query_row("SELECT count(*) FROM main.sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(db_err(format!("{target} is not a usable SQLite database")))?;
    let src = source
        .to_str()
        .ok_or_else(|| Error::invalid(format!("{} is not a UTF-8 path", source.display())))?;
    // Outside any transaction, as both statements must be.
    conn.execute(&format!("ATTACH DATABASE ?1 AS {SRC}"), [src])
        .map_err(db_err(format!("cannot open {source_name}")))?;
    conn.execute_batch("PRAGMA foreign_keys = OFF")
        .map_err(db_err(format!("cannot use {target}")))?;
    let done = {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_err(format!("cannot lock {target}")))?;
        let done = restore_tables(&tx, source_name, &target, opts)?;
        tx.commit()
            .map_err(db_err(format!("cannot commit to {target}")))?;
        done
    };
    let _ = conn.execute_batch(&format!("DETACH DATABASE {SRC}"));
    conn.close()
        .map_err(|(_, e)| db_err(format!("cannot close {target}"))(e))?;
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
    let existing = |name: &str| dst_all.iter().find(|t| t.name.eq_ignore_ascii_case(name));
    let nothing = "nothing was restored";

    // Every check before any change (the transaction would undo them all
    // the same, but a clean refusal is clearer).
    for t in &chosen {
        if let Some(d) = existing(&t.name) {
            if let Some(diff) = column_difference(t, d) {
                return Err(Error::invalid(format!(
                    "table {} of {target} does not match {source_name}: {diff}; {nothing}",
                    t.name
                )));
            }
            if !opts.drop_existing {
                let n = row_count(conn, "main", &d.name)?;
                if n > 0 {
                    return Err(Error::invalid(format!(
                        "table {} of {target} already has {n} rows: pass --drop-existing to replace them; {nothing}",
                        d.name
                    )));
                }
            }
        }
    }

    // Triggers of existing tables would fire on the restored rows.
    let mut dropped_triggers: Vec<String> = Vec::new();
    for t in &chosen {
        if let Some(d) = existing(&t.name) {
            let mut stmt = conn
                .prepare("SELECT name, sql FROM main.sqlite_schema WHERE type = 'trigger' AND lower(tbl_name) = lower(?1) AND sql IS NOT NULL")
                .map_err(db_err(format!("reading the triggers of {target}")))?;
            let triggers = stmt
                .query_map([&d.name], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(db_err(format!("reading the triggers of {target}")))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db_err(format!("reading the triggers of {target}")))?;
            for (name, sql) in triggers {
                conn.execute_batch(&format!("DROP TRIGGER main.{}", ident(&name)))
                    .map_err(db_err(format!("dropping trigger {name} of {target}")))?;
                dropped_triggers.push(sql);
            }
            if opts.drop_existing {
                conn.execute_batch(&format!("DELETE FROM main.{}", ident(&d.name)))
                    .map_err(db_err(format!("emptying table {} of {target}", d.name)))?;
            }
        }
    }

    let mut created: Vec<Table> = Vec::new();
    let mut done = Vec::with_capacity(chosen.len());
    for t in &chosen {
        let dst = match existing(&t.name) {
            Some(d) => d.clone(),
            None => {
                // An unqualified CREATE TABLE creates in `main`.
                conn.execute_batch(&t.sql)
                    .map_err(db_err(format!("creating table {} in {target}", t.name)))?;
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
        .map_err(|e| {
            Error::invalid(format!(
                "restoring table {} into {target}: {e}; {nothing}",
                t.name
            ))
        })?;
        let restored = row_count(conn, "main", &dst.name)?;
        let source_rows = row_count(conn, SRC, &t.name)?;
        if restored != source_rows {
            return Err(Error::invalid(format!(
                "table {} of {target} has {restored} rows after the restore but {source_name} has {source_rows}; {nothing}",
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
                    "table {} has {restored} rows but the snapshot recorded {}; {nothing}",
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

    // Indexes and triggers of the new tables, after their rows, and views
    // the target lacks when every table is restored.
    let mut later = other_schema(conn, SRC, &created, false)?;
    if opts.tables.is_empty() {
        let mut stmt = conn
            .prepare(&format!(
                "SELECT sql FROM {SRC}.sqlite_schema WHERE type = 'view' AND sql IS NOT NULL AND lower(name) NOT IN (SELECT lower(name) FROM main.sqlite_schema) ORDER BY rowid"
            ))
            .map_err(db_err(format!("reading the views of {source_name}")))?;
        let views = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(db_err(format!("reading the views of {source_name}")))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_err(format!("reading the views of {source_name}")))?;
        later.extend(views);
    }
    later.extend(dropped_triggers);
    for sql in &later {
        conn.execute_batch(sql).map_err(|e| {
            Error::invalid(format!(
                "creating `{}` in {target}: {e}; {nothing}",
                sql.lines().next().unwrap_or_default()
            ))
        })?;
    }

    if !opts.ignore_foreign_keys {
        check_foreign_keys(conn, &chosen, target)?;
    }
    Ok(done)
}

/// Fails when a row of a restored table, or of a table referring to one,
/// refers to a parent row that is not there. Violations elsewhere in the
/// target predate the restore and are not its business.
fn check_foreign_keys(conn: &Connection, restored: &[Table], target: &str) -> Result<()> {
    let names: HashSet<String> = restored.iter().map(|t| t.name.to_lowercase()).collect();
    let err = || db_err(format!("checking the foreign keys of {target}"));
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
            "after the restore {} row(s) of {target} would refer to missing rows, the first {} of table {child} to table {parent}: restore {parent} too, or pass --ignore-foreign-keys; nothing was restored",
            relevant.len(),
            rowid.map_or_else(|| "one".to_owned(), |r| format!("rowid {r}")),
        ))),
    }
}

// -------------------------------------------------------------- snapshots --

/// The database `db` (its path in the snapshot; a missing leading `/` is
/// added) of `snap`, or its only one.
///
/// # Errors
/// [`Error::Invalid`] when the snapshot has no captured database, `db` is
/// none of them, or `db` is not given and there are several (each listing
/// the databases there are).
pub fn database_of<'a>(snap: &'a Snapshot, db: Option<&[u8]>) -> Result<&'a DatabaseInfo> {
    let list = || {
        snap.databases
            .iter()
            .map(|d| String::from_utf8_lossy(&d.path).into_owned())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if snap.databases.is_empty() {
        return Err(Error::invalid(
            "this snapshot holds no captured SQLite database: name a database stored as a plain file (`backup --sqlite off`, or a snapshot from before databases were recorded) with --db PATH",
        ));
    }
    match db {
        Some(path) => {
            let mut slashed = b"/".to_vec();
            slashed.extend_from_slice(path);
            snap.databases
                .iter()
                .find(|d| d.path == path || d.path == slashed)
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "this snapshot has no captured database {}; it has: {}",
                        String::from_utf8_lossy(path),
                        list()
                    ))
                })
        }
        None => match snap.databases.as_slice() {
            [only] => Ok(only),
            _ => Err(Error::invalid(format!(
                "this snapshot has {} databases: choose one with --db PATH: {}",
                snap.databases.len(),
                list()
            ))),
        },
    }
}

/// A snapshot's database image written out to a temporary directory,
/// deleted with the value.
#[derive(Debug)]
pub struct DbImage {
    dir: tempfile::TempDir,
    /// What the snapshot records about the database.
    pub info: DatabaseInfo,
}

impl DbImage {
    /// The image's file.
    #[must_use]
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("image.db")
    }

    /// The database's path in the snapshot, for messages.
    #[must_use]
    pub fn name(&self) -> String {
        String::from_utf8_lossy(&self.info.path).into_owned()
    }
}

/// Writes the image of database `db` of `snap` (see [`database_of`]) to a
/// temporary directory (`$TMPDIR`), each chunk checked against its id as
/// it is read, under a shared repository lock.
///
/// `db` may also name a file the snapshot does not list as a captured
/// database (a snapshot from before databases were recorded, or a backup
/// with `--sqlite off`), used if it has SQLite's header; there are no
/// stored row counts to check against then (`info.tables` is empty).
///
/// # Errors
/// As [`database_of`]; [`Error::Invalid`] for a file that is not a SQLite
/// database; [`Error::Locked`]; damaged or missing data;
/// [`Error::TargetWrite`] when the temporary file cannot be written.
pub fn materialize(repo: &Repository, snap: &Snapshot, db: Option<&[u8]>) -> Result<DbImage> {
    let _held = repo.lock(false, "read a database")?;
    let (info, node) = match (database_of(snap, db), db) {
        (Ok(info), _) => {
            let node =
                crate::repo::walk::find_node(repo, &snap.tree, &info.path)?.ok_or_else(|| {
                    Error::invalid("the snapshot's root is not a database".to_owned())
                })?;
            (info.clone(), node)
        }
        (Err(listed), Some(path)) => match crate::repo::walk::find_node(repo, &snap.tree, path) {
            Ok(Some(node))
                if !matches!(
                    node.kind,
                    crate::format::tree::NodeKind::File { .. }
                        | crate::format::tree::NodeKind::ListedFile { .. }
                ) =>
            {
                return Err(Error::invalid(format!(
                    "{} in this snapshot is a {}, not a SQLite database",
                    String::from_utf8_lossy(path),
                    crate::ops::inspect::EntryType::of(&node.kind).name()
                )));
            }
            Ok(Some(node)) => (
                DatabaseInfo {
                    path: path.to_vec(),
                    ..DatabaseInfo::default()
                },
                node,
            ),
            // Not in the snapshot either: the list of captured databases
            // is the more useful answer.
            _ => return Err(listed),
        },
        (Err(e), None) => return Err(e),
    };
    let dir = tempfile::Builder::new()
        .prefix(".cairn-db-")
        .tempdir()
        .map_err(|e| Error::target_write(&std::env::temp_dir(), e))?;
    let image = DbImage { dir, info };
    let path = image.path();
    let file = File::create(&path).map_err(|e| Error::target_write(&path, e))?;
    let mut w = BufWriter::new(file);
    crate::ops::inspect::dump(repo, &image.info.path, &node, &mut w).map_err(|e| match e {
        Error::Output { source } => Error::target_write(&path, source),
        other => other,
    })?;
    drop(
        w.into_inner()
            .map_err(|e| Error::target_write(&path, e.into_error()))?,
    );
    // Opened again: the file written is write-only.
    let file = File::open(&path).map_err(|e| Error::target_write(&path, e))?;
    if crate::apps::sqlite::sniff(&file).is_none() {
        return Err(Error::invalid(format!(
            "{} in this snapshot is not a SQLite database",
            image.name()
        )));
    }
    Ok(image)
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
    let done = restore_from_snapshot_inner(repo, snap, db, into, opts);
    let detail = done.as_ref().map_or_else(
        |_| String::new(),
        |d| match &d.undo {
            Some(u) => format!(
                "{}; safety snapshot {}",
                describe_tables(&d.tables),
                u.snapshot
            ),
            None => describe_tables(&d.tables),
        },
    );
    crate::repo::audit::record(
        repo,
        "db-restore",
        &format!(
            "tables of {} from the snapshot of {} into {}",
            db.map_or_else(
                || "its database".to_owned(),
                |d| String::from_utf8_lossy(d).into_owned()
            ),
            snap.timestamp(),
            into.display()
        ),
        &done,
        &detail,
    );
    done
}

fn restore_from_snapshot_inner(
    repo: &Repository,
    snap: &Snapshot,
    db: Option<&[u8]>,
    into: &Path,
    opts: &DbRestoreOptions,
) -> Result<DbRestored> {
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
}

/// One line for a database's stored row counts, for listings:
/// `accounts 50, log 3000`.
#[must_use]
pub fn describe_tables(tables: &[TableRows]) -> String {
    if tables.is_empty() {
        return "no tables".to_owned();
    }
    tables
        .iter()
        .map(|t| format!("{} {}", t.name, t.rows))
        .collect::<Vec<_>>()
        .join(", ")
}

// ------------------------------------------------------------ import --

/// Restores tables from an export (a file, or a CSV directory) into the
/// database at `into` (see `restore_db`). The export is loaded into a
/// scratch database in a temporary directory first. A lone CSV file holds
/// one table, named by `opts.tables` if it names exactly one, else by the
/// file's name; its schema is the table's in `into`, which must exist.
///
/// # Errors
/// [`Error::Invalid`] naming the export for a file that cannot be read or
/// is not a valid export of `format` (with the line, table or row);
/// as `restore_db`.
pub fn restore_from_export(
    export: &Path,
    format: DbFormat,
    into: &Path,
    opts: &DbRestoreOptions,
    repo: Option<&Repository>,
) -> Result<DbRestored> {
    let scratch_dir = tempfile::Builder::new()
        .prefix(".cairn-import-")
        .tempdir()
        .map_err(|e| Error::target_write(&std::env::temp_dir(), e))?;
    let scratch = scratch_dir.path().join("import.db");
    {
        let conn = Connection::open(&scratch)
            .map_err(db_err("cannot create a scratch database".to_owned()))?;
        // The scratch database is thrown away: no journal, no syncs. An
        // export's SQL may touch no other file.
        conn.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")
            .map_err(db_err("cannot create a scratch database".to_owned()))?;
        conn.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_ATTACHED, 0)
            .map_err(db_err("cannot create a scratch database".to_owned()))?;
        match format {
            DbFormat::Sql => load_sql(&conn, export)?,
            DbFormat::Json => load_json(&conn, export)?,
            DbFormat::Csv => load_csv(&conn, export, into, &opts.tables)?,
        }
        conn.close()
            .map_err(|(_, e)| db_err("cannot write the scratch database".to_owned())(e))?;
    }
    let undo = protect_into(repo, into, opts)?;
    let tables = restore_db(
        &scratch,
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

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::invalid(format!("cannot read {}: {e}", path.display()))
}

/// Whether `sql` ends with a complete statement: a port of SQLite's
/// `sqlite3_complete()` (`complete.c`), which the `sqlite3` shell uses the
/// same way, since rusqlite does not expose it. A `;` counts only outside
/// quotes, brackets and comments, and inside `CREATE TRIGGER … END` only
/// after `END`.
fn sql_complete(sql: &[u8]) -> bool {
    // Tokens and the states of `complete.c`.
    const SEMI: usize = 0;
    const WS: usize = 1;
    const OTHER: usize = 2;
    const EXPLAIN: usize = 3;
    const CREATE: usize = 4;
    const TEMP: usize = 5;
    const TRIGGER: usize = 6;
    const END: usize = 7;
    const TRANS: [[u8; 8]; 8] = [
        /* 0 INVALID */ [1, 0, 2, 3, 4, 2, 2, 2],
        /* 1 START   */ [1, 1, 2, 3, 4, 2, 2, 2],
        /* 2 NORMAL  */ [1, 2, 2, 2, 2, 2, 2, 2],
        /* 3 EXPLAIN */ [1, 3, 3, 2, 4, 2, 2, 2],
        /* 4 CREATE  */ [1, 4, 2, 2, 2, 4, 5, 2],
        /* 5 TRIGGER */ [6, 5, 5, 5, 5, 5, 5, 5],
        /* 6 SEMI    */ [6, 6, 5, 5, 5, 5, 5, 7],
        /* 7 END     */ [1, 7, 5, 5, 5, 5, 5, 5],
    ];
    let id_char = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
    let mut state = 0u8;
    let mut i = 0;
    while let Some(&c) = sql.get(i) {
        let token = match c {
            b';' => SEMI,
            b' ' | b'\r' | b'\t' | b'\n' | 0x0c => WS,
            b'/' if sql.get(i + 1) == Some(&b'*') => {
                let Some(end) = find(sql, i + 2, b"*/") else {
                    return false;
                };
                i = end + 1;
                WS
            }
            b'-' if sql.get(i + 1) == Some(&b'-') => match find(sql, i, b"\n") {
                Some(end) => {
                    i = end;
                    WS
                }
                None => return state == 1,
            },
            b'[' => match find(sql, i + 1, b"]") {
                Some(end) => {
                    i = end;
                    OTHER
                }
                None => return false,
            },
            b'`' | b'"' | b'\'' => match find(sql, i + 1, &[c]) {
                Some(end) => {
                    i = end;
                    OTHER
                }
                None => return false,
            },
            c if id_char(c) => {
                let start = i;
                while sql.get(i + 1).is_some_and(|&b| id_char(b)) {
                    i += 1;
                }
                let word = sql.get(start..=i).unwrap_or_default();
                let is = |kw: &str| word.eq_ignore_ascii_case(kw.as_bytes());
                if is("create") {
                    CREATE
                } else if is("trigger") {
                    TRIGGER
                } else if is("temp") || is("temporary") {
                    TEMP
                } else if is("end") {
                    END
                } else if is("explain") {
                    EXPLAIN
                } else {
                    OTHER
                }
            }
            _ => OTHER,
        };
        state = TRANS
            .get(usize::from(state))
            .and_then(|row| row.get(token))
            .copied()
            .unwrap_or(2);
        i += 1;
    }
    state == 1
}

/// The position of `needle` in `hay` at or after `from`.
fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Runs an SQL script a statement at a time as it is read, as the
/// `sqlite3` shell does: lines are gathered until they end a complete
/// statement ([`sql_complete`]), which then runs. Memory holds one
/// statement, and each `prepare` sees only it (SQLite copies the whole
/// rest of a string it is given, which made one `execute_batch` of a large
/// script quadratic).
fn load_sql(conn: &Connection, export: &Path) -> Result<()> {
    use std::io::BufRead as _;
    let shown = export.display();
    let file = File::open(export).map_err(read_err(export))?;
    let mut reader = BufReader::new(file);
    let mut statement: Vec<u8> = Vec::new();
    let mut line = Vec::new();
    let (mut line_no, mut first_line) = (0u64, 1u64);
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(read_err(export))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if statement.iter().all(u8::is_ascii_whitespace) {
            statement.clear();
            first_line = line_no;
        }
        statement.extend_from_slice(&line);
        let ends_with_semi = line.trim_ascii_end().last() == Some(&b';');
        if ends_with_semi && sql_complete(&statement) {
            run_statements(conn, &statement, export, first_line)?;
            statement.clear();
        }
    }
    if !statement.iter().all(u8::is_ascii_whitespace) {
        // Comments alone, or an unfinished statement, which SQLite reports.
        run_statements(conn, &statement, export, first_line)?;
    }
    if !conn.is_autocommit() {
        return Err(Error::invalid(format!(
            "the SQL script {shown} ends inside a transaction (no COMMIT): it is incomplete"
        )));
    }
    Ok(())
}

/// Runs the complete statement(s) of `sql`, which start at line `line` of
/// `export`.
fn run_statements(conn: &Connection, sql: &[u8], export: &Path, line: u64) -> Result<()> {
    let text = std::str::from_utf8(sql).map_err(|e| {
        Error::invalid(format!(
            "the SQL script {} is not UTF-8 in the statement at line {line} (byte {})",
            export.display(),
            e.valid_up_to()
        ))
    })?;
    conn.execute_batch(text).map_err(db_err(format!(
        "running the SQL script {}, the statement at line {line}",
        export.display()
    )))
}

/// Inserts rows, one at a time, into a table of the scratch database.
struct Inserter<'c> {
    stmt: rusqlite::Statement<'c>,
    table: String,
    columns: usize,
    rows: u64,
}

impl<'c> Inserter<'c> {
    /// For table `table`, its stored columns `columns` in row order.
    fn new(conn: &'c Connection, table: &str, columns: &[String]) -> Result<Self, String> {
        let cols: Vec<String> = columns.iter().map(|c| ident(c)).collect();
        let marks: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
        let stmt = conn
            .prepare(&format!(
                "INSERT INTO main.{} ({}) VALUES ({})",
                ident(table),
                cols.join(", "),
                marks.join(", ")
            ))
            .map_err(|e| format!("table {table}: {e}"))?;
        Ok(Self {
            stmt,
            table: table.to_owned(),
            columns: columns.len(),
            rows: 0,
        })
    }

    /// Inserts one row; the error names its table and number.
    fn insert(&mut self, row: &[Cell]) -> Result<(), String> {
        self.rows += 1;
        if row.len() != self.columns {
            return Err(format!(
                "row {} of table {} has {} values for {} columns",
                self.rows,
                self.table,
                row.len(),
                self.columns
            ));
        }
        self.stmt
            .execute(rusqlite::params_from_iter(row.iter()))
            .map(|_| ())
            .map_err(|e| format!("row {} of table {}: {e}", self.rows, self.table))
    }
}

/// A JSON export is loaded as it is parsed (serde's `DeserializeSeed`):
/// each row goes into the scratch database when it has been read, so
/// memory holds one row, never the document. The writer puts `format` and
/// `version` before `tables`, and a table's `name`, `schema` and `columns`
/// before its `rows`; the loader insists on that order.
mod json_load {
    use std::fmt;

    use rusqlite::Connection;
    use serde::de::{
        self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
    };

    use super::{Cell, Inserter, JSON_FORMAT, JSON_VERSION, json_cell, raise_sequence};

    /// The whole document; yields its `other_schema` statements.
    pub(super) struct Doc<'a> {
        pub conn: &'a Connection,
    }

    impl<'de> DeserializeSeed<'de> for Doc<'_> {
        type Value = Vec<String>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }

    fn check(format: Option<&str>, version: Option<u32>) -> Result<(), String> {
        match (format, version) {
            (Some(JSON_FORMAT), Some(JSON_VERSION)) => Ok(()),
            (Some(f), Some(v)) => Err(format!(
                "this is format \"{f}\" version {v}, but this cairn reads \"{JSON_FORMAT}\" version {JSON_VERSION}"
            )),
            _ => Err(format!(
                "not a cairn database export: \"format\": \"{JSON_FORMAT}\" and \"version\" must come before \"tables\""
            )),
        }
    }

    impl<'de> Visitor<'de> for Doc<'_> {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a cairn database export (a JSON object)")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
            let mut format: Option<String> = None;
            let mut version: Option<u32> = None;
            let mut other: Vec<String> = Vec::new();
            let mut tables = false;
            while let Some(key) = map.next_key::<String>()? {
                match key.as_str() {
                    "format" => format = Some(map.next_value()?),
                    "version" => version = Some(map.next_value()?),
                    "tables" => {
                        check(format.as_deref(), version).map_err(de::Error::custom)?;
                        map.next_value_seed(Tables { conn: self.conn })?;
                        tables = true;
                    }
                    "other_schema" => other = map.next_value()?,
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            check(format.as_deref(), version).map_err(de::Error::custom)?;
            if !tables {
                return Err(de::Error::missing_field("tables"));
            }
            Ok(other)
        }
    }

    struct Tables<'a> {
        conn: &'a Connection,
    }

    impl<'de> DeserializeSeed<'de> for Tables<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }

    impl<'de> Visitor<'de> for Tables<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of tables")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(Table { conn: self.conn })?.is_some() {}
            Ok(())
        }
    }

    struct Table<'a> {
        conn: &'a Connection,
    }

    impl<'de> DeserializeSeed<'de> for Table<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de> Visitor<'de> for Table<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a table object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut name: Option<String> = None;
            let mut schema: Option<String> = None;
            let mut columns: Option<Vec<String>> = None;
            let mut sequence: Option<i64> = None;
            let mut created = false;
            let create =
                |name: &Option<String>, schema: &Option<String>| -> Result<String, String> {
                    let (Some(name), Some(schema)) = (name, schema) else {
                        return Err(
                            "a table's \"name\" and \"schema\" must come before its \"rows\""
                                .to_owned(),
                        );
                    };
                    self.conn
                        .execute_batch(schema)
                        .map_err(|e| format!("the schema of table {name}: {e}"))?;
                    Ok(name.clone())
                };
            while let Some(key) = map.next_key::<String>()? {
                match key.as_str() {
                    "name" => name = Some(map.next_value()?),
                    "schema" => schema = Some(map.next_value()?),
                    "columns" => columns = Some(map.next_value()?),
                    "sequence" => sequence = map.next_value()?,
                    "rows" => {
                        let table = create(&name, &schema).map_err(de::Error::custom)?;
                        created = true;
                        let Some(columns) = &columns else {
                            return Err(de::Error::custom(format!(
                                "table {table}: \"columns\" must come before \"rows\""
                            )));
                        };
                        let inserter =
                            Inserter::new(self.conn, &table, columns).map_err(de::Error::custom)?;
                        map.next_value_seed(Rows { inserter })?;
                    }
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            // A table without "rows" is created empty.
            if !created {
                create(&name, &schema).map_err(de::Error::custom)?;
            }
            if let (Some(seq), Some(name)) = (sequence, &name) {
                raise_sequence(self.conn, name, seq).map_err(de::Error::custom)?;
            }
            Ok(())
        }
    }

    struct Rows<'c> {
        inserter: Inserter<'c>,
    }

    impl<'de> DeserializeSeed<'de> for Rows<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }

    impl<'de> Visitor<'de> for Rows<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of rows")
        }
        fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
            let mut cells: Vec<Cell> = Vec::new();
            while let Some(row) = seq.next_element::<Vec<serde_json::Value>>()? {
                cells.clear();
                for v in &row {
                    cells.push(json_cell(v).map_err(|e| {
                        de::Error::custom(format!(
                            "row {} of table {}: {e}",
                            self.inserter.rows + 1,
                            self.inserter.table
                        ))
                    })?);
                }
                self.inserter.insert(&cells).map_err(de::Error::custom)?;
            }
            Ok(())
        }
    }
}

fn load_json(conn: &Connection, export: &Path) -> Result<()> {
    use serde::de::DeserializeSeed as _;
    let what = format!("the export {}", export.display());
    let file = File::open(export).map_err(read_err(export))?;
    conn.execute_batch("BEGIN")
        .map_err(db_err("writing the scratch database".to_owned()))?;
    let mut de = serde_json::Deserializer::from_reader(BufReader::new(file));
    let other = json_load::Doc { conn }
        .deserialize(&mut de)
        .and_then(|other| de.end().map(|()| other))
        .map_err(|e| Error::invalid(format!("{what}: {e}")))?;
    for sql in &other {
        conn.execute_batch(sql)
            .map_err(db_err(format!("{what}: `{sql}`")))?;
    }
    conn.execute_batch("COMMIT")
        .map_err(db_err("writing the scratch database".to_owned()))
}

fn load_csv(conn: &Connection, export: &Path, into: &Path, wanted: &[String]) -> Result<()> {
    let what = format!("the export {}", export.display());
    // (table, file) pairs, and the statements that go in after the rows.
    let mut later: Vec<String> = Vec::new();
    let files: Vec<(String, PathBuf)> = if export.is_dir() {
        let schema = export.join(CSV_SCHEMA_FILE);
        if !schema.is_file() {
            return Err(Error::invalid(format!(
                "{what} is a directory without {CSV_SCHEMA_FILE}, so not a CSV export of cairn's"
            )));
        }
        load_sql(conn, &schema)?;
        // Triggers would fire on the rows loaded: dropped now, re-created
        // after them. Restore reads tables only, but keeps source triggers
        // for tables it creates.
        let mut stmt = conn
            .prepare("SELECT name, sql FROM main.sqlite_schema WHERE type = 'trigger' AND sql IS NOT NULL")
            .map_err(db_err(format!("{what}: reading its schema")))?;
        let triggers = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(db_err(format!("{what}: reading its schema")))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db_err(format!("{what}: reading its schema")))?;
        for (name, sql) in triggers {
            conn.execute_batch(&format!("DROP TRIGGER {}", ident(&name)))
                .map_err(db_err(format!("{what}: reading its schema")))?;
            later.push(sql);
        }
        tables_of(conn, "main", &what)?
            .into_iter()
            .map(|t| {
                let file = export.join(format!("{}.csv", csv_file_stem(&t.name)));
                (t.name, file)
            })
            .collect()
    } else {
        let name = match wanted {
            [one] => one.clone(),
            _ => table_of_csv_stem(
                &export
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
        };
        // A lone CSV file has no schema: the target's table gives it.
        let sql: Option<String> = if into.exists() {
            let target = Connection::open_with_flags(into, OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(db_err(format!("cannot open {}", into.display())))?;
            target
                .query_row(
                    "SELECT sql FROM main.sqlite_schema WHERE type = 'table' AND lower(name) = lower(?1)",
                    [&name],
                    |r| r.get(0),
                )
                .ok()
        } else {
            None
        };
        let sql = sql.ok_or_else(|| {
            Error::invalid(format!(
                "{what} is one CSV file, which holds no schema, and {} has no table {name} to take it from: create the table first, or export with --output DIR, which writes {CSV_SCHEMA_FILE} too",
                into.display()
            ))
        })?;
        conn.execute_batch(&sql)
            .map_err(db_err(format!("creating table {name}")))?;
        vec![(name, export.to_path_buf())]
    };
    conn.execute_batch("BEGIN")
        .map_err(db_err("writing the scratch database".to_owned()))?;
    for (table, file) in &files {
        let shown = format!("the CSV file {}", file.display());
        let f = File::open(file).map_err(read_err(file))?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(BufReader::new(f));
        let csv_err = |e: csv::Error| Error::invalid(format!("{shown}: {e}"));
        let header: Vec<String> = reader
            .byte_headers()
            .map_err(csv_err)?
            .iter()
            .map(|h| String::from_utf8_lossy(h).into_owned())
            .collect();
        let mut inserter = Inserter::new(conn, table, &header)
            .map_err(|e| Error::invalid(format!("{shown}: {e}")))?;
        let mut record = csv::ByteRecord::new();
        let mut cells: Vec<Cell> = Vec::new();
        while reader.read_byte_record(&mut record).map_err(csv_err)? {
            cells.clear();
            for field in &record {
                cells.push(csv_cell(field).map_err(|e| Error::invalid(format!("{shown}: {e}")))?);
            }
            inserter
                .insert(&cells)
                .map_err(|e| Error::invalid(format!("{shown}: {e}")))?;
        }
    }
    for sql in &later {
        conn.execute_batch(sql)
            .map_err(db_err(format!("{what}: `{sql}`")))?;
    }
    conn.execute_batch("COMMIT")
        .map_err(db_err("writing the scratch database".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cell() -> impl Strategy<Value = Cell> {
        prop_oneof![
            Just(Cell::Null),
            any::<i64>().prop_map(Cell::Integer),
            any::<f64>()
                .prop_filter("SQLite stores no NaN", |f| !f.is_nan())
                .prop_map(Cell::Real),
            prop::collection::vec(any::<u8>(), 0..20).prop_map(Cell::Text),
            ".{0,12}".prop_map(|s: String| Cell::Text(s.into_bytes())),
            "[-+0-9.eE\\\\x ]{0,8}".prop_map(|s: String| Cell::Text(s.into_bytes())),
            prop::collection::vec(any::<u8>(), 0..20).prop_map(Cell::Blob),
        ]
    }

    /// Equality that tells reals by their bits (so -0.0 from 0.0).
    fn same(a: &Cell, b: &Cell) -> bool {
        match (a, b) {
            (Cell::Real(x), Cell::Real(y)) => x.to_bits() == y.to_bits(),
            _ => a == b,
        }
    }

    proptest! {
        #[test]
        fn dbexport_csv_fields_round_trip(v in cell()) {
            let back = csv_cell(&csv_field(&v)).expect("decodes");
            prop_assert!(same(&back, &v), "{v:?} came back as {back:?}");
        }

        #[test]
        fn dbexport_json_values_round_trip(v in cell()) {
            let text = serde_json::to_string(&json_value(&v)).expect("json");
            let parsed: serde_json::Value = serde_json::from_str(&text).expect("parse");
            let back = json_cell(&parsed).expect("decodes");
            prop_assert!(same(&back, &v), "{v:?} came back as {back:?} via {text}");
        }

        #[test]
        fn dbexport_sql_literals_round_trip(v in cell()) {
            let conn = Connection::open_in_memory().expect("db");
            let back: Cell = conn
                .query_row(&format!("SELECT {}", sql_literal(&v)), [], |r| {
                    Ok(Cell::from_ref(r.get_ref(0)?))
                })
                .expect("select");
            // SQLite may not keep the sign of a zero.
            let zeros = matches!((&back, &v), (Cell::Real(0.0), Cell::Real(0.0)));
            prop_assert!(zeros || same(&back, &v), "{v:?} came back as {back:?}");
        }

        #[test]
        fn dbexport_decoders_never_panic(field in prop::collection::vec(any::<u8>(), 0..40)) {
            let _ = csv_cell(&field);
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&field) {
                let _ = json_cell(&v);
            }
        }
    }

    #[test]
    fn dbexport_csv_escapes_text_that_would_read_as_something_else() {
        assert_eq!(csv_field(&Cell::Text(b"007".to_vec())), b"\\007");
        assert_eq!(csv_field(&Cell::Text(Vec::new())), b"\\");
        assert_eq!(csv_field(&Cell::Text(b"\\x00".to_vec())), b"\\\\x00");
        assert_eq!(csv_field(&Cell::Text(b"inf".to_vec())), b"\\inf");
        assert_eq!(csv_field(&Cell::Text(b"hello".to_vec())), b"hello");
        assert_eq!(csv_field(&Cell::Real(1.0)), b"1.0");
        assert_eq!(csv_field(&Cell::Blob(vec![0, 255])), b"\\x00ff");
        assert_eq!(csv_field(&Cell::Null), b"");
    }

    #[test]
    fn dbexport_counts_that_differ_from_the_recorded_ones_fail() {
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

        let opts = ExportOptions {
            expected: Some(wrong.clone()),
            ..ExportOptions::default()
        };
        let out = dir.path().join("out.sql");
        let e = export_to_path(&src, DbFormat::Sql, &opts, &out).expect_err("mismatch");
        assert!(e.is_damage(), "{e}");
        assert!(e.to_string().contains("2 rows"), "{e}");
        assert!(!out.exists(), "a failed export leaves no file");

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

    #[test]
    fn dbexport_sql_completeness_follows_sqlite() {
        let complete = |s: &str| sql_complete(s.as_bytes());
        assert!(complete("SELECT 1;"));
        assert!(complete("SELECT 1;  -- done\n"));
        assert!(!complete("SELECT 1"));
        assert!(!complete("INSERT INTO t VALUES('a;"));
        assert!(complete("INSERT INTO t VALUES('a;\nb');"));
        assert!(complete("INSERT INTO t VALUES('it''s;');"));
        assert!(!complete("SELECT \"x;"));
        assert!(!complete("SELECT [x;"));
        assert!(!complete("/* ; */"));
        assert!(complete("/* ; */ SELECT 1;"));
        assert!(!complete("SELECT 1; /* open"));
        assert!(!complete(
            "CREATE TRIGGER t AFTER INSERT ON x BEGIN SELECT 1;"
        ));
        assert!(complete(
            "CREATE TRIGGER t AFTER INSERT ON x BEGIN SELECT 1; END;"
        ));
        assert!(complete(
            "create temp trigger t after insert on x begin select 1; select 2; end ;"
        ));
        assert!(complete("CREATE TABLE trig (end_ INT);"));
        assert!(!complete(""));
        assert!(complete(";"));
    }

    #[test]
    fn dbexport_csv_stems_round_trip() {
        for name in ["plain", "with space", "a/b", ".hidden", "x%y", "ünï", "a.b"] {
            let stem = csv_file_stem(name);
            assert!(!stem.contains('/') && !stem.starts_with('.'), "{stem}");
            assert_eq!(table_of_csv_stem(&stem), name);
        }
    }
}
