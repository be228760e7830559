//! `cairn db export` and `cairn db restore`: every export format restores
//! to the same typed rows as the source; a snapshot restore keeps rowids
//! and matches the stored row counts; a restore that cannot be done (schema
//! mismatch, rows in the way, foreign keys, unknown tables) changes
//! nothing.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use cairn::Cell;
use rusqlite::Connection;

use super::util::{Dir, assert_verifies, cairn, json_of, open_repo, run, stderr, stdout};

/// A source tree with one database and a repository beside it.
struct Fixture {
    d: Dir,
    repo: PathBuf,
    db: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let d = Dir::new();
        let repo = d.join("repo");
        let src = d.join("src");
        fs::create_dir(&src).expect("src");
        let db = src.join("app.db");
        create_app_db(&db);
        let f = Self { d, repo, db };
        assert!(f.cairn(&["init"]).status.success());
        f
    }

    fn cairn(&self, args: &[&str]) -> Output {
        run(cairn(&self.repo, self.d.path())
            .current_dir(self.d.path())
            .args(args))
    }

    fn backup(&self) {
        let o = self.cairn(&["backup", "src"]);
        assert!(o.status.success(), "{}", stderr(&o));
    }

    fn path(&self, name: &str) -> PathBuf {
        self.d.join(name)
    }

    fn s(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

/// id, name, avatar, balance, referrer.
type UserRow<'a> = (i64, &'a str, Option<&'a [u8]>, f64, Option<i64>);

/// Tables with foreign keys whose children sort before their parents
/// (`comments` → `posts` → `users`, which also refers to itself), a
/// `WITHOUT ROWID` table, a rowid table with gaps in its rowids, a typeless
/// column holding every storage class, a STRICT table and a generated
/// column; an index, a trigger and a view.
fn create_app_db(path: &Path) {
    let c = Connection::open(path).expect("open");
    c.execute_batch(
        "PRAGMA foreign_keys = ON;
         CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, avatar BLOB, balance REAL,
                             referrer INTEGER REFERENCES users(id));
         CREATE TABLE posts (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id),
                             title TEXT, score REAL);
         CREATE TABLE comments (id INTEGER PRIMARY KEY, post_id INTEGER REFERENCES posts(id),
                                user_id INTEGER REFERENCES users(id), body TEXT);
         CREATE TABLE tags (name TEXT PRIMARY KEY, post_id INTEGER REFERENCES posts(id)) WITHOUT ROWID;
         CREATE TABLE events (kind TEXT, at REAL);
         CREATE TABLE vals (v, note TEXT);
         CREATE TABLE strict_t (a INTEGER, b ANY, c TEXT) STRICT;
         CREATE TABLE gen (a INTEGER, b INTEGER GENERATED ALWAYS AS (a * 2) VIRTUAL);
         CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, what TEXT);
         CREATE INDEX posts_by_user ON posts(user_id);
         CREATE TRIGGER users_touch AFTER UPDATE ON users BEGIN
             INSERT INTO events (kind, at) VALUES ('touch', 0.5);
         END;
         CREATE VIEW rich AS SELECT name FROM users WHERE balance > 10;",
    )
    .expect("schema");
    c.execute_batch("BEGIN").expect("begin");
    let users: [UserRow<'_>; 3] = [
        (1, "O'Brien, \"Pat\"", Some(b"\0\x01\0\xff"), 0.1, None),
        (2, "ünïcödé 🎉\nsecond line\r\n", None, 1e-300, Some(1)),
        (3, "", Some(b""), -2.5e300, Some(2)),
    ];
    for u in users {
        c.execute("INSERT INTO users VALUES (?1, ?2, ?3, ?4, ?5)", u)
            .expect("user");
    }
    for (id, user, title, score) in [
        (10, 1, "first", 1.0),
        (11, 2, "007", 3.25),
        (12, 1, "\\x41", f64::INFINITY),
    ] {
        c.execute(
            "INSERT INTO posts VALUES (?1, ?2, ?3, ?4)",
            (id, user, title, score),
        )
        .expect("post");
    }
    for (id, post, user, body) in [
        (100, 10, 2, Some("nice, \"really\"")),
        (101, 11, 3, None),
        (102, 10, 1, Some("NULL")),
    ] {
        c.execute(
            "INSERT INTO comments VALUES (?1, ?2, ?3, ?4)",
            (id, post, user, body),
        )
        .expect("comment");
    }
    c.execute_batch(
        "INSERT INTO tags VALUES ('rust', 10), ('sql', 11), ('Zeta', 12);
         INSERT INTO events (kind, at) VALUES ('a', 1), ('b', 2), ('c', 3), ('d', 4), ('e', 5);
         DELETE FROM events WHERE kind IN ('b', 'd');
         INSERT INTO strict_t VALUES (1, 'any text', 'x'), (NULL, X'00', NULL), (-7, 2.5, '');
         INSERT INTO gen (a) VALUES (1), (NULL), (21);
         INSERT INTO jobs (what) VALUES ('build'), ('test'), ('ship');
         DELETE FROM jobs WHERE what = 'ship';
         INSERT INTO vals VALUES (CAST(X'610062' AS TEXT), 'text with a NUL');",
    )
    .expect("rows");
    let vals: Vec<(rusqlite::types::Value, &str)> = {
        use rusqlite::types::Value as V;
        vec![
            (V::Null, "null"),
            (V::Integer(i64::MIN), "min"),
            (V::Integer(i64::MAX), "max"),
            (V::Integer(0), "zero"),
            (V::Integer(-1), "minus one"),
            (V::Real(0.1), "0.1"),
            (V::Real(1e-300), "tiny"),
            (V::Real(1.5e300), "huge"),
            (V::Real(1.0), "real one"),
            (V::Real(-2.5), "negative"),
            (V::Real(f64::NEG_INFINITY), "-inf"),
            (V::Real(std::f64::consts::PI), "pi"),
            (
                V::Text("it's \"quoted\", with commas\nand lines".into()),
                "text",
            ),
            (V::Text(String::new()), "empty text"),
            (V::Text("12".into()), "numeric text"),
            (V::Text("\\".into()), "backslash"),
            (V::Text("1e5".into()), "exponent text"),
            // Lines of an SQL export that end in `;` inside a literal.
            (
                V::Text("ends a line;\n-- not a comment;\n/* nor this;\n".into()),
                "semicolons",
            ),
            (V::Blob(Vec::new()), "empty blob"),
            (
                V::Blob(vec![0, 1, 2, 0, 255, b'\'', b'"', b',', b'\n']),
                "blob",
            ),
        ]
    };
    for (v, note) in vals {
        c.execute("INSERT INTO vals VALUES (?1, ?2)", (v, note))
            .expect("val");
    }
    c.execute_batch("COMMIT").expect("commit");
}

/// Every table's rows as typed values (`{:?}` of a real is exact), in
/// rowid order (primary key order for `WITHOUT ROWID`), with the rowid
/// first when `rowids`.
fn contents(db: &Path, rowids: bool) -> BTreeMap<String, Vec<Vec<String>>> {
    let c = Connection::open(db).expect("open");
    let tables: Vec<(String, String)> = c
        .prepare(
            "SELECT name, sql FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite%'",
        )
        .expect("schema")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("tables")
        .collect::<rusqlite::Result<_>>()
        .expect("tables");
    let mut all = BTreeMap::new();
    for (name, sql) in tables {
        let without_rowid = sql.contains("WITHOUT ROWID");
        let q = if without_rowid {
            format!("SELECT * FROM \"{name}\" ORDER BY 1")
        } else if rowids {
            format!("SELECT rowid, * FROM \"{name}\" ORDER BY rowid")
        } else {
            format!("SELECT * FROM \"{name}\" ORDER BY rowid")
        };
        let mut stmt = c.prepare(&q).expect("select");
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                (0..n)
                    .map(|i| Ok(format!("{:?}", Cell::from_ref(r.get_ref(i)?))))
                    .collect::<rusqlite::Result<Vec<String>>>()
            })
            .expect("rows")
            .collect::<rusqlite::Result<Vec<_>>>()
            .expect("rows");
        all.insert(name, rows);
    }
    all
}

/// The AUTOINCREMENT counter of `jobs`: 3 in the source, above the
/// largest id left (2).
fn jobs_counter(db: &Path) -> Option<i64> {
    Connection::open(db)
        .expect("open")
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'jobs'",
            [],
            |r| r.get(0),
        )
        .ok()
}

/// The names of every schema object of each kind.
fn schema_names(db: &Path) -> Vec<(String, String)> {
    let c = Connection::open(db).expect("open");
    c.prepare(
        "SELECT type, name FROM sqlite_schema WHERE name NOT LIKE 'sqlite%' ORDER BY type, name",
    )
    .expect("schema")
    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
    .expect("names")
    .collect::<rusqlite::Result<_>>()
    .expect("names")
}

fn table_names(db: &Path) -> Vec<String> {
    schema_names(db)
        .into_iter()
        .filter(|(t, _)| t == "table")
        .map(|(_, n)| n)
        .collect()
}

/// A database file, with any journal beside it, byte for byte.
fn bytes_of(db: &Path) -> (Vec<u8>, bool) {
    let mut journal = db.as_os_str().to_owned();
    journal.push("-journal");
    (fs::read(db).expect("read db"), Path::new(&journal).exists())
}

fn fails_with(o: &Output, words: &[&str]) {
    assert!(!o.status.success(), "should have failed");
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(o);
    for w in words {
        assert!(e.contains(w), "{e:?} should mention {w:?}");
    }
}

#[test]
fn dbexport_every_format_round_trips_through_db_restore() {
    let f = Fixture::new();
    f.backup();
    let source = contents(&f.db, false);
    assert_eq!(source.len(), 9);

    for (format, out) in [("sql", "e.sql"), ("json", "e.json"), ("csv", "e-csv")] {
        let o = f.cairn(&["db", "export", "latest", "--format", format, "-o", out]);
        assert!(o.status.success(), "{}", stderr(&o));
        let into = f.path(&format!("from-{format}.db"));
        let o = f.cairn(&[
            "--json",
            "db",
            "restore",
            "--from-export",
            out,
            "--into",
            &into.display().to_string(),
        ]);
        let report = json_of(&o);
        assert_eq!(report["rows"], 44, "{report}");
        assert_eq!(
            jobs_counter(&into),
            Some(3),
            "{format}: AUTOINCREMENT counter"
        );
        assert_eq!(contents(&into, false), source, "{format} round trip");
        assert_eq!(schema_names(&into), schema_names(&f.db), "{format} schema");
    }

    // The SQL export is a script SQLite runs as it is, and the export to
    // stdout is the same as to a file.
    let o = f.cairn(&["db", "export", "latest"]);
    assert!(o.status.success());
    assert_eq!(o.stdout, fs::read(f.path("e.sql")).expect("e.sql"));
    let direct = f.path("direct.db");
    Connection::open(&direct)
        .expect("open")
        .execute_batch(&stdout(&o))
        .expect("run the script");
    assert_eq!(contents(&direct, false), source);

    // One table as CSV on stdout restores into a database that has it.
    let o = f.cairn(&[
        "db", "export", "latest", "--format", "csv", "--table", "vals",
    ]);
    assert!(o.status.success());
    fs::write(f.path("vals.csv"), &o.stdout).expect("vals.csv");
    let lone = f.path("lone.db");
    Connection::open(&lone)
        .expect("open")
        .execute_batch("CREATE TABLE vals (v, note TEXT)")
        .expect("create");
    let o = f.cairn(&[
        "db",
        "restore",
        "--from-export",
        "vals.csv",
        "--into",
        &f.s("lone.db"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(contents(&lone, false).get("vals"), source.get("vals"));

    // Several tables cannot go to stdout as CSV; --schema-only has no rows.
    fails_with(
        &f.cairn(&["db", "export", "latest", "--format", "csv"]),
        &["one table", "--output DIR", "app.db"],
    );
    let o = f.cairn(&["db", "export", "latest", "--schema-only"]);
    assert!(o.status.success());
    assert!(
        stdout(&o).contains("CREATE TABLE users") && !stdout(&o).contains("INSERT INTO \"vals\"")
    );
    // Nor AUTOINCREMENT counters: they are data too.
    assert!(
        !stdout(&o).contains("sqlite_sequence"),
        "schema-only export wrote counters: {}",
        stdout(&o)
    );
    assert_verifies(&open_repo(&f.repo));
}

#[test]
fn dbexport_snapshot_restore_keeps_rowids_counts_and_chosen_tables() {
    let f = Fixture::new();
    f.backup();
    let o = f.cairn(&[
        "--json",
        "db",
        "restore",
        "latest",
        "--into",
        &f.s("all.db"),
    ]);
    let report = json_of(&o);
    assert_eq!(contents(&f.path("all.db"), true), contents(&f.db, true));
    assert_eq!(jobs_counter(&f.path("all.db")), Some(3));
    assert_eq!(schema_names(&f.path("all.db")), schema_names(&f.db));

    // The counts restored are those the snapshot stored.
    let repo = open_repo(&f.repo);
    let (_, snap) = repo.find_snapshot("latest").expect("latest");
    let [db] = snap.databases.as_slice() else {
        panic!("one database: {:?}", snap.databases)
    };
    let stored: BTreeMap<String, u64> =
        db.tables.iter().map(|t| (t.name.clone(), t.rows)).collect();
    let restored: BTreeMap<String, u64> = report["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .map(|t| {
            (
                t["name"].as_str().expect("name").to_owned(),
                t["rows"].as_u64().expect("rows"),
            )
        })
        .collect();
    assert_eq!(restored, stored);
    assert_eq!(stored.get("events"), Some(&3));
    // Parents first, although their names sort after their children's.
    let order: Vec<&str> = report["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .map(|t| t["name"].as_str().expect("name"))
        .collect();
    let at = |n: &str| order.iter().position(|t| *t == n).expect("restored");
    assert!(at("users") < at("posts") && at("posts") < at("comments") && at("posts") < at("tags"));

    // --table restores only those tables (any case), and their index.
    let o = f.cairn(&[
        "db",
        "restore",
        "latest",
        "--into",
        &f.s("some.db"),
        "--table",
        "USERS",
        "--table",
        "posts",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("users") && stdout(&o).contains("posts"));
    assert_eq!(table_names(&f.path("some.db")), ["posts", "users"]);
    let some = contents(&f.path("some.db"), true);
    let all = contents(&f.db, true);
    assert_eq!(some.get("posts"), all.get("posts"));
    assert_eq!(some.get("users"), all.get("users"));
    assert!(schema_names(&f.path("some.db")).contains(&("index".into(), "posts_by_user".into())));

    // Unknown tables and snapshots are named; no target is left behind.
    fails_with(
        &f.cairn(&[
            "db",
            "restore",
            "latest",
            "--into",
            &f.s("x.db"),
            "--table",
            "nope",
        ]),
        &["no table 'nope'", "comments, events, gen"],
    );
    fails_with(
        &f.cairn(&["db", "export", "latest", "--table", "nope"]),
        &["no table 'nope'", "app.db"],
    );
    fails_with(
        &f.cairn(&["db", "restore", "ffffffff", "--into", &f.s("x.db")]),
        &["ffffffff"],
    );
    assert!(!f.path("x.db").exists());

    // A second database needs --db.
    create_app_db(&f.path("src/other.db"));
    f.backup();
    fails_with(
        &f.cairn(&["db", "export", "latest"]),
        &["2 databases", "--db", "app.db", "other.db"],
    );
    let other = f.s("src/other.db");
    let o = f.cairn(&[
        "db",
        "restore",
        "latest",
        "--db",
        &other,
        "--into",
        &f.s("other.db"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    fails_with(
        &f.cairn(&["db", "export", "latest", "--db", "/no/such.db"]),
        &["/no/such.db", "app.db"],
    );

    // A database stored as raw bytes is not listed, but --db finds it.
    fs::create_dir(f.path("raw")).expect("raw");
    fs::copy(&f.db, f.path("raw/app.db")).expect("copy");
    let o = f.cairn(&["backup", "--sqlite", "off", "raw"]);
    assert!(o.status.success(), "{}", stderr(&o));
    fails_with(
        &f.cairn(&["db", "export", "latest"]),
        &["no captured SQLite database"],
    );
    let app = f.s("raw/app.db");
    let o = f.cairn(&[
        "db",
        "restore",
        "latest",
        "--db",
        &app,
        "--into",
        &f.s("raw.db"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(contents(&f.path("raw.db"), true), contents(&f.db, true));
    fails_with(
        &f.cairn(&["db", "export", "latest", "--db", &f.s("raw")]),
        &["raw", "dir, not a SQLite database"],
    );
    assert_verifies(&open_repo(&f.repo));
}

#[test]
fn dbexport_schema_mismatch_fails_and_changes_nothing() {
    let f = Fixture::new();
    f.backup();
    let target = f.path("target.db");
    {
        let c = Connection::open(&target).expect("open");
        // `posts` matches and is empty; `users` differs in one type.
        c.execute_batch(
            "CREATE TABLE posts (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES users(id), title TEXT, score REAL);
             CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, avatar TEXT, balance REAL, referrer INTEGER);
             INSERT INTO users (id, name) VALUES (42, 'keep me');",
        )
        .expect("target");
    }
    let before = bytes_of(&target);
    let o = f.cairn(&[
        "db",
        "restore",
        "latest",
        "--into",
        &f.s("target.db"),
        "--drop-existing",
    ]);
    fails_with(
        &o,
        &[
            "users",
            "target.db",
            "does not match",
            "avatar BLOB",
            "avatar TEXT",
        ],
    );
    assert_eq!(bytes_of(&target), before, "the target changed");

    // The same from every export format.
    for (format, out) in [("sql", "e.sql"), ("json", "e.json"), ("csv", "e-csv")] {
        assert!(
            f.cairn(&["db", "export", "latest", "--format", format, "-o", out])
                .status
                .success()
        );
        let o = f.cairn(&[
            "db",
            "restore",
            "--from-export",
            out,
            "--into",
            &f.s("target.db"),
        ]);
        fails_with(&o, &["users", "does not match"]);
        assert_eq!(bytes_of(&target), before, "the target changed ({format})");
    }

    // Broken exports are named, and leave no target behind.
    fs::write(
        f.path("bad.json"),
        b"{\"format\": \"cairn-db-export\", \"version\": 1, \"tables\": [",
    )
    .expect("bad");
    fails_with(
        &f.cairn(&[
            "db",
            "restore",
            "--from-export",
            "bad.json",
            "--into",
            &f.s("new.db"),
        ]),
        &["bad.json"],
    );
    fs::write(
        f.path("short-row.json"),
        br#"{"format":"cairn-db-export","version":1,"tables":[{"name":"t","schema":"CREATE TABLE t (a, b)","columns":["a","b"],"rows":[[1,2],[3]]}]}"#,
    )
    .expect("short row");
    fails_with(
        &f.cairn(&[
            "db",
            "restore",
            "--from-export",
            "short-row.json",
            "--into",
            &f.s("new.db"),
        ]),
        &[
            "short-row.json",
            "row 2 of table t has 1 values for 2 columns",
        ],
    );
    fs::write(
        f.path("v2.json"),
        br#"{"format":"cairn-db-export","version":2,"tables":[]}"#,
    )
    .expect("v2");
    fails_with(
        &f.cairn(&[
            "db",
            "restore",
            "--from-export",
            "v2.json",
            "--into",
            &f.s("new.db"),
        ]),
        &["v2.json", "version 2"],
    );
    fs::write(
        f.path("bad.sql"),
        b"CREATE TABLE t (a); INSERT INTO nowhere VALUES (1);",
    )
    .expect("bad");
    fails_with(
        &f.cairn(&[
            "db",
            "restore",
            "--from-export",
            "bad.sql",
            "--into",
            &f.s("new.db"),
        ]),
        &["bad.sql", "nowhere"],
    );
    fails_with(
        &f.cairn(&[
            "db",
            "restore",
            "--from-export",
            "missing.sql",
            "--into",
            &f.s("new.db"),
        ]),
        &["missing.sql"],
    );
    assert!(!f.path("new.db").exists());
    assert_verifies(&open_repo(&f.repo));
}

#[test]
fn dbexport_drop_existing_replaces_rows_and_without_it_refuses() {
    let f = Fixture::new();
    f.backup();
    let target = f.path("t.db");
    assert!(
        f.cairn(&["db", "restore", "latest", "--into", &f.s("t.db")])
            .status
            .success()
    );
    {
        let c = Connection::open(&target).expect("open");
        // An audit table and trigger only the target has: a restore must
        // not fire it.
        c.execute_batch(
            "CREATE TABLE audit (what TEXT);
             CREATE TRIGGER users_audit AFTER INSERT ON users BEGIN INSERT INTO audit VALUES ('insert'); END;
             UPDATE users SET name = 'changed' WHERE id = 1;
             DELETE FROM comments;
             INSERT INTO tags VALUES ('extra', 10);",
        )
        .expect("change");
    }
    let before = bytes_of(&target);
    fails_with(
        &f.cairn(&["db", "restore", "latest", "--into", &f.s("t.db")]),
        &["already has", "--drop-existing", "t.db"],
    );
    assert_eq!(bytes_of(&target), before);

    let o = f.cairn(&[
        "db",
        "restore",
        "latest",
        "--into",
        &f.s("t.db"),
        "--drop-existing",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut want = contents(&f.db, true);
    want.insert("audit".into(), Vec::new());
    assert_eq!(contents(&target, true), want);
    // The target's own trigger is still there.
    assert!(schema_names(&target).contains(&("trigger".into(), "users_audit".into())));

    // A child table alone whose parents are missing breaks foreign keys.
    fails_with(
        &f.cairn(&[
            "db",
            "restore",
            "latest",
            "--into",
            &f.s("kids.db"),
            "--table",
            "comments",
        ]),
        &["comments", "missing rows", "--ignore-foreign-keys"],
    );
    assert!(!f.path("kids.db").exists());
    let o = f.cairn(&[
        "db",
        "restore",
        "latest",
        "--into",
        &f.s("kids.db"),
        "--table",
        "comments",
        "--ignore-foreign-keys",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(table_names(&f.path("kids.db")), ["comments"]);
    assert_verifies(&open_repo(&f.repo));
}
