//! Export of a database file as an SQL script, one JSON document or CSV
//! files ([`export`], [`export_to_path`]), and the layout of those files,
//! which `import` reads back. Each value in them is encoded as `cells`
//! says.
//!
//! # Formats
//!
//! - **sql**: `PRAGMA foreign_keys=OFF; BEGIN TRANSACTION;`, each table's
//!   `CREATE TABLE` and `INSERT`s (parents first), then indexes, triggers
//!   and views, `COMMIT;` — a script `sqlite3 NEW.db < FILE` runs
//!   (AUTOINCREMENT counters as statements on `sqlite_sequence`). Values
//!   are SQL literals of their storage class.
//! - **json**: one document [`JSON_FORMAT`] version [`JSON_VERSION`]:
//!   `{"format","version","tables":[{"name","schema","columns","rows",
//!   "sequence"?}],"other_schema":[…]}` (`sequence`: the AUTOINCREMENT
//!   counter, for such tables); a row is an array of JSON values.
//! - **csv**: one file per table with a header row of column names
//!   (generated columns left out), then a record per row. A directory
//!   export holds `TABLE.csv` per table (bytes other than ASCII letters,
//!   digits, `_`, `-` and a non-leading `.` written `%XX`) and
//!   [`CSV_SCHEMA_FILE`], the schema as an SQL script (a schema-only sql
//!   export).
//!
//! Exports do not carry the hidden rowids of tables without an `INTEGER
//! PRIMARY KEY`: rows are written in rowid order and get new rowids in
//! that order. Restores from a snapshot keep them.

use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::cells::{Cell, csv_field, json_value, sql_literal};
use super::schema::{
    BUSY_TIMEOUT, Table, choose, conn_err, db_err, fk_order, ident, other_schema, sequence,
    tables_of,
};
use crate::error::{Error, Hint, Result};
use crate::format::snapshot::TableRows;

/// The `format` member of a JSON export.
pub const JSON_FORMAT: &str = "cairn-db-export";

/// The `version` member of a JSON export this build writes and reads.
pub const JSON_VERSION: u32 = 1;

/// The file of a CSV directory export that holds the schema.
pub const CSV_SCHEMA_FILE: &str = "schema.sql";

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
    .map_err(db_err(db, format!("cannot open {}", db.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(db_err(db, format!("cannot open {}", db.display())))?;
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
    let err = || conn_err(conn, "main", format!("reading table {}", table.name));
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
/// [`Error::NotFound`] for an unknown table (listing the tables there
/// are); [`Error::Invalid`] for a CSV export of other than one table;
/// [`Error::Sqlite`] for a database SQLite cannot read; [`Error::Output`]
/// when `out` fails.
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
                "a CSV export holds one table and {} has {}",
                opts.name_of(db),
                tables.len()
            ))
            .hinted(Hint::ChooseTable)),
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
        // Records of one length, of bytes: nothing else can fail.
        other => Error::internal(format!("writing CSV: {other:?}")),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dbexport_export_counts_that_differ_from_the_recorded_ones_fail() {
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
            expected: Some(wrong),
            ..ExportOptions::default()
        };
        let out = dir.path().join("out.sql");
        let e = export_to_path(&src, DbFormat::Sql, &opts, &out).expect_err("mismatch");
        assert!(e.is_damage(), "{e}");
        assert!(e.to_string().contains("2 rows"), "{e}");
        assert!(!out.exists(), "a failed export leaves no file");
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
