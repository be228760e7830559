//! cairn as a library, the way an application's own backup code uses it
//! (the "programmatic usage" of a hand-written backup module): create a
//! repository, snapshot a directory that holds a SQLite database, list the
//! snapshots, export one table as CSV from the newest snapshot, and
//! restore that table into a database without touching the others.
//!
//! Run it with `cargo run --example table_restore`; it works in a
//! temporary directory and removes it afterwards.

use std::sync::Arc;

use cairn::{
    BackupOptions, DbFormat, DbRestoreOptions, ExportOptions, InitOptions, LocalBackend,
    NoProgress, Repository, VerifyOptions,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let work = tempfile::tempdir()?;
    let app = work.path().join("app");
    std::fs::create_dir(&app)?;

    // The application's data: a SQLite database with two tables.
    let db = app.join("shop.db");
    let conn = rusqlite::Connection::open(&db)?;
    conn.execute_batch(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL);
         CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id), total REAL);
         INSERT INTO users (email) VALUES ('ada@example.com'), ('grace@example.com'), ('linus@example.com');
         INSERT INTO orders (user_id, total) VALUES (1, 12.5), (2, 99.0);",
    )?;
    std::fs::write(app.join("config.json"), br#"{"currency": "EUR"}"#)?;

    // An encrypted repository in a local directory.
    let repo = Repository::init(
        Arc::new(LocalBackend::new(work.path().join("repo"))),
        Some(b"correct horse battery staple"),
        &InitOptions::default(),
    )?;

    // A snapshot: files are chunked and stored once; the database is
    // captured as a consistent image, with its tables' row counts.
    let done = cairn::backup(&repo, &BackupOptions::new(vec![app.clone()]), &NoProgress)?;
    println!("snapshot {} stored", done.id.short());

    // Later, someone deletes a user by mistake.
    conn.execute("DELETE FROM users WHERE id = 3", [])?;
    drop(conn);

    // Every snapshot, newest last.
    let mut snapshots: Vec<_> = repo
        .snapshots()?
        .into_iter()
        .filter_map(|(id, snap)| Some((id, snap.ok()?)))
        .collect();
    snapshots.sort_by_key(|(_, s)| s.timestamp());
    for (id, snap) in &snapshots {
        let rows: Vec<String> = snap
            .databases
            .iter()
            .flat_map(|d| d.tables.iter().map(|t| format!("{} {}", t.name, t.rows)))
            .collect();
        println!("{} {} ({})", id.short(), snap.timestamp(), rows.join(", "));
    }
    let (_, newest) = snapshots.last().ok_or("no snapshot")?;

    // One table, as CSV, straight from the snapshot.
    let image = cairn::materialize(&repo, newest, None)?;
    let mut export = ExportOptions::default();
    export.tables = vec!["users".into()];
    let mut csv = Vec::new();
    cairn::export(&image.path(), DbFormat::Csv, &export, &mut csv)?;
    print!("{}", String::from_utf8_lossy(&csv));

    // Put the users table back into the live database, leaving orders as
    // they are; the restore checks the row counts the snapshot recorded.
    let mut restore = DbRestoreOptions::default();
    restore.tables = vec!["users".into()];
    restore.drop_existing = true;
    let restored = cairn::restore_from_snapshot(&repo, newest, None, &db, &restore)?;
    for t in &restored.tables {
        println!("restored {} rows of {}", t.rows, t.name);
    }
    let users: i64 =
        rusqlite::Connection::open(&db)?
            .query_row("SELECT count(*) FROM users", [], |r| r.get(0))?;
    assert_eq!(users, 3, "the deleted user is back");

    // verify reads every pack back and checks it.
    let report = cairn::verify(&repo, &VerifyOptions::default())?;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    println!("verify: no errors");
    Ok(())
}
