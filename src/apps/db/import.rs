//! The three importers: an export (an SQL script, a JSON document, CSV
//! files) loaded into a scratch database, from which `restore` restores
//! tables as from any other database.
//!
//! The scratch database lives in a temporary directory ([`Scratch`],
//! deleted with the value) and is thrown away, so it has no journal and
//! no syncs; `ATTACH` is disabled on it, so an SQL script cannot change
//! other databases. Exports are loaded as they are read, a statement
//! (SQL) or a row (JSON, CSV) at a time, so memory does not grow with
//! their size.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::cells::{Cell, csv_cell, json_cell};
use super::export::{
    CSV_SCHEMA_FILE, DbFormat, JSON_FORMAT, JSON_VERSION, csv_file_stem, table_of_csv_stem,
};
use super::schema::{conn_err, db_err, ident, raise_sequence, tables_of};
use crate::error::{Error, Hint, Result};

/// An export loaded into a scratch database in a temporary directory
/// (`$TMPDIR`), deleted with the value.
pub(super) struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// The scratch database's file.
    pub(super) fn path(&self) -> PathBuf {
        self.dir.path().join("import.db")
    }
}

/// Loads `export`, an export in `format`, into a new scratch database.
/// A lone CSV file holds one table, named by `wanted` if it names exactly
/// one, else by the file's name; its schema is the table's in `into`,
/// which must exist.
///
/// # Errors
/// [`Error::Io`] naming a file of the export that cannot be read;
/// [`Error::Invalid`] naming the export when it is not a valid export of
/// `format` (with the line, table or row); [`Error::Sqlite`] when SQLite
/// refuses a statement of an SQL script or a schema, or the scratch
/// database cannot be written; [`Error::TargetWrite`] when the temporary
/// directory cannot be created.
pub(super) fn load(
    export: &Path,
    format: DbFormat,
    into: &Path,
    wanted: &[String],
) -> Result<Scratch> {
    let scratch_dir = tempfile::Builder::new()
        .prefix(".cairn-import-")
        .tempdir()
        .map_err(|e| Error::target_write(&std::env::temp_dir(), e))?;
    let scratch = Scratch { dir: scratch_dir };
    {
        let path = scratch.path();
        let create = || db_err(&path, "cannot create a scratch database");
        let conn = Connection::open(&path).map_err(create())?;
        // The scratch database is thrown away: no journal, no syncs. An
        // export's SQL may touch no other file.
        conn.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;")
            .map_err(create())?;
        conn.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_ATTACHED, 0)
            .map_err(create())?;
        match format {
            DbFormat::Sql => load_sql(&conn, export)?,
            DbFormat::Json => load_json(&conn, export)?,
            DbFormat::Csv => load_csv(&conn, export, into, wanted)?,
        }
        conn.close()
            .map_err(|(_, e)| db_err(&path, "cannot write the scratch database")(e))?;
    }
    Ok(scratch)
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::io("cannot read", path, e)
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
    conn.execute_batch(text).map_err(conn_err(
        conn,
        "main",
        format!(
            "running the SQL script {}, the statement at line {line}",
            export.display()
        ),
    ))
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
        .map_err(conn_err(conn, "main", "writing the scratch database"))?;
    let mut de = serde_json::Deserializer::from_reader(BufReader::new(file));
    let other = json_load::Doc { conn }
        .deserialize(&mut de)
        .and_then(|other| de.end().map(|()| other))
        .map_err(|e| Error::invalid(format!("{what}: {e}")))?;
    for sql in &other {
        conn.execute_batch(sql)
            .map_err(conn_err(conn, "main", format!("{what}: `{sql}`")))?;
    }
    conn.execute_batch("COMMIT")
        .map_err(conn_err(conn, "main", "writing the scratch database"))
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
        let schema_err = || conn_err(conn, "main", format!("{what}: reading its schema"));
        // Triggers would fire on the rows loaded: dropped now, re-created
        // after them. Restore reads tables only, but keeps source triggers
        // for tables it creates.
        let mut stmt = conn
            .prepare("SELECT name, sql FROM main.sqlite_schema WHERE type = 'trigger' AND sql IS NOT NULL")
            .map_err(schema_err())?;
        let triggers = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(schema_err())?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(schema_err())?;
        for (name, sql) in triggers {
            conn.execute_batch(&format!("DROP TRIGGER {}", ident(&name)))
                .map_err(schema_err())?;
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
                .map_err(db_err(into, format!("cannot open {}", into.display())))?;
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
                "{what} is one CSV file, which holds no schema, and {} has no table {name} to take it from: create the table first",
                into.display()
            ))
            .hinted(Hint::ExportWithSchema)
        })?;
        conn.execute_batch(&sql).map_err(conn_err(
            conn,
            "main",
            format!("creating table {name}"),
        ))?;
        vec![(name, export.to_path_buf())]
    };
    conn.execute_batch("BEGIN")
        .map_err(conn_err(conn, "main", "writing the scratch database"))?;
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
            .map_err(conn_err(conn, "main", format!("{what}: `{sql}`")))?;
    }
    conn.execute_batch("COMMIT")
        .map_err(conn_err(conn, "main", "writing the scratch database"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
