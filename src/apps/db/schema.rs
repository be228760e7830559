//! What a database holds, as export, import and restore read it: its
//! tables and their columns, the order that puts every table after the
//! tables it refers to (foreign keys), its indexes, triggers and views,
//! row counts and AUTOINCREMENT counters ([`describe_tables`]: stored row
//! counts on one line, for listings); and the small helpers every file of
//! `db/` shares (quoting an identifier, wording a database error, the busy
//! timeout).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::format::snapshot::TableRows;

/// How long a connection waits for another process's lock on a database.
pub(super) const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A column as `PRAGMA table_xinfo` shows it.
#[derive(Debug, Clone)]
pub(super) struct Column {
    pub(super) name: String,
    pub(super) decl: String,
    /// A generated column: not exported, not inserted.
    pub(super) generated: bool,
    /// Its position in the primary key (0: not in it).
    pub(super) pk: i64,
}

/// A table of a database (a schema of a connection).
#[derive(Debug, Clone)]
pub(super) struct Table {
    pub(super) name: String,
    /// Its `CREATE TABLE` statement.
    pub(super) sql: String,
    pub(super) columns: Vec<Column>,
    /// A name that reads the table's rowid, when it has one that is not
    /// also a column (a rowid table without an `INTEGER PRIMARY KEY`).
    pub(super) rowid: Option<&'static str>,
}

impl Table {
    pub(super) fn stored_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| !c.generated)
    }

    pub(super) fn column_list(&self) -> String {
        self.stored_columns()
            .map(|c| ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `name` as a quoted SQL identifier.
pub(super) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// SQLite's error about the database at `db`, with what was being done
/// (naming the database as the user knows it: see [`Error::Sqlite`]).
pub(super) fn db_err<'d>(
    db: &'d Path,
    what: impl std::fmt::Display + 'd,
) -> impl FnOnce(rusqlite::Error) -> Error + 'd {
    move |e| Error::sqlite(what.to_string(), db, e)
}

/// As [`db_err`], for the database of `schema` on `conn` (`main` or an
/// attached one), whose file SQLite is asked for only if there is an
/// error.
pub(super) fn conn_err<'c>(
    conn: &'c Connection,
    schema: &'c str,
    what: impl std::fmt::Display + 'c,
) -> impl FnOnce(rusqlite::Error) -> Error + 'c {
    move |e| Error::sqlite(what.to_string(), &file_of(conn, schema), e)
}

/// The file of `schema` on `conn`, for an error; empty when SQLite does
/// not say (an in-memory database).
pub(super) fn file_of(conn: &Connection, schema: &str) -> PathBuf {
    conn.query_row(
        "SELECT file FROM pragma_database_list WHERE name = ?1",
        [schema],
        |r| r.get::<_, String>(0),
    )
    .map(PathBuf::from)
    .unwrap_or_default()
}

/// The tables of `schema` on `conn`, by name (SQLite's own `sqlite_`
/// tables and virtual tables left out, as in `table_counts`).
pub(super) fn tables_of(conn: &Connection, schema: &str, what: &str) -> Result<Vec<Table>> {
    let err = || conn_err(conn, schema, format!("reading the schema of {what}"));
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
pub(super) fn rowid_name(
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
pub(super) fn choose(all: &[Table], wanted: &[String], what: &str) -> Result<Vec<Table>> {
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
                return Err(Error::NotFound(format!(
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
pub(super) fn fk_order(conn: &Connection, schema: &str, tables: Vec<Table>) -> Result<Vec<Table>> {
    let mut stmt = conn
        .prepare("SELECT DISTINCT \"table\" FROM pragma_foreign_key_list(?1, ?2)")
        .map_err(conn_err(conn, schema, "reading foreign keys"))?;
    let lower: HashMap<String, usize> = tables
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.to_lowercase(), i))
        .collect();
    let mut parents: Vec<Vec<usize>> = Vec::with_capacity(tables.len());
    for t in &tables {
        let names = stmt
            .query_map((&t.name, schema), |r| r.get::<_, String>(0))
            .map_err(conn_err(conn, schema, "reading foreign keys"))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(conn_err(conn, schema, "reading foreign keys"))?;
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
pub(super) fn other_schema(
    conn: &Connection,
    schema: &str,
    tables: &[Table],
    views: bool,
) -> Result<Vec<String>> {
    let err = || conn_err(conn, schema, "reading the schema");
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

pub(super) fn row_count(conn: &Connection, schema: &str, table: &str) -> Result<u64> {
    let n: i64 = conn
        .query_row(
            &format!("SELECT count(*) FROM {}.{}", ident(schema), ident(table)),
            [],
            |r| r.get(0),
        )
        .map_err(conn_err(
            conn,
            schema,
            format!("counting the rows of {table}"),
        ))?;
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
        .map_err(conn_err(conn, schema, "reading AUTOINCREMENT counters"))?;
    Ok(n > 0)
}

/// The AUTOINCREMENT counter `schema` keeps for `table`: the largest id
/// ever handed out, which may be above the largest id still there.
pub(super) fn sequence(conn: &Connection, schema: &str, table: &str) -> Result<Option<i64>> {
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
    .map_err(conn_err(
        conn,
        schema,
        format!("reading the AUTOINCREMENT counter of {table}"),
    ))
}

/// Raises the AUTOINCREMENT counter of `table` in `main` to at least
/// `seq`, so that ids the source handed out are not handed out again.
/// Nothing when `main` keeps no counters (no AUTOINCREMENT table).
pub(super) fn raise_sequence(conn: &Connection, table: &str, seq: i64) -> Result<()> {
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
        .map_err(conn_err(
            conn,
            "main",
            format!("setting the AUTOINCREMENT counter of {table}"),
        ))?;
    Ok(())
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
