//! SQLite capture: live databases, written to all the while, restore as
//! consistent, self-contained databases; companions are left out; a change
//! only in the WAL is seen; `--sqlite off` and unreadable databases store
//! raw bytes.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cairn::{BackupOptions, BackupOutcome, NoProgress, Repository, RestoreOptions};
use rusqlite::Connection;

use super::util::{Dir, Rng, assert_verifies, cairn, init_repo, run, stderr, stdout};

const ACCOUNTS: i64 = 50;
const START_BALANCE: i64 = 1000;
const BACKUPS: usize = 20;
/// See the files cache tests: sources written this long before a backup
/// are trusted by the next one.
const SETTLE: Duration = Duration::from_millis(2100);

fn backup(repo: &Repository, src: &Path) -> BackupOutcome {
    cairn::backup(
        repo,
        &BackupOptions::new(vec![src.to_path_buf()]),
        &NoProgress,
    )
    .expect("backup")
}

/// Restores `done` under `out` and returns where `src` came back.
fn restored(repo: &Repository, done: &BackupOutcome, out: &Path, src: &Path) -> PathBuf {
    let r = cairn::restore(repo, &done.snapshot, &RestoreOptions::new(out), &NoProgress)
        .expect("restore");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    out.join(src.strip_prefix("/").expect("absolute"))
}

/// A bank: accounts whose balances always add up to the same total, and a
/// log of transfers with padding, so that the database spans several
/// backup steps.
fn create_bank(path: &Path, journal_mode: &str) -> Connection {
    let c = Connection::open(path).expect("open");
    let mode: String = c
        .query_row(&format!("PRAGMA journal_mode = {journal_mode}"), [], |r| {
            r.get(0)
        })
        .expect("journal mode");
    assert_eq!(mode, journal_mode);
    c.execute_batch(
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
         CREATE TABLE log (id INTEGER PRIMARY KEY, src INTEGER, dst INTEGER, amount INTEGER, pad BLOB);",
    )
    .expect("schema");
    c.execute_batch("BEGIN").expect("begin");
    for id in 0..ACCOUNTS {
        c.execute("INSERT INTO accounts VALUES (?1, ?2)", (id, START_BALANCE))
            .expect("account");
    }
    // About 6 MB: more than one 4 MiB backup step.
    for _ in 0..3000 {
        c.execute(
            "INSERT INTO log (src, dst, amount, pad) VALUES (0, 0, 0, randomblob(2000))",
            [],
        )
        .expect("log");
    }
    c.execute_batch("COMMIT").expect("commit");
    c
}

/// One transaction keeping the invariant: a transfer, a log insert, and
/// now and then deletes of old log rows. Busy errors (a backup holding a
/// lock longer than the busy timeout) roll back and are retried later.
fn transfer(c: &Connection, rng: &mut Rng) -> bool {
    let from = (rng.next() % ACCOUNTS as u64) as i64;
    let to = (rng.next() % ACCOUNTS as u64) as i64;
    let amount = (rng.next() % 100) as i64;
    let purge = rng.next().is_multiple_of(8);
    let run = || -> rusqlite::Result<()> {
        c.execute_batch("BEGIN IMMEDIATE")?;
        c.execute(
            "UPDATE accounts SET balance = balance - ?1 WHERE id = ?2",
            (amount, from),
        )?;
        c.execute(
            "UPDATE accounts SET balance = balance + ?1 WHERE id = ?2",
            (amount, to),
        )?;
        c.execute(
            "INSERT INTO log (src, dst, amount, pad) VALUES (?1, ?2, ?3, randomblob(1500))",
            (from, to, amount),
        )?;
        // As many rows go as come, so the database keeps its size.
        c.execute(
            "DELETE FROM log WHERE id IN (SELECT id FROM log ORDER BY id LIMIT ?1)",
            [if purge { 2 } else { 1 }],
        )?;
        if purge {
            c.execute(
                "INSERT INTO log (src, dst, amount, pad) VALUES (0, 0, 0, randomblob(100))",
                [],
            )?;
        }
        c.execute_batch("COMMIT")
    };
    match run() {
        Ok(()) => true,
        Err(_) => {
            let _ = c.execute_batch("ROLLBACK");
            false
        }
    }
}

/// Checks a restored database: intact, the invariant holds, and it needs
/// no WAL. Returns its newest log id.
fn check_restored(db: &Path, journal_mode: &str) -> i64 {
    let dir = db.parent().expect("parent");
    let names: Vec<String> = fs::read_dir(dir)
        .expect("read restored dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["app.db"], "only the database, no companions");
    let c = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
        .expect("open restored");
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok", "{}", db.display());
    let (n, total): (i64, i64) = c
        .query_row("SELECT count(*), sum(balance) FROM accounts", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("sum");
    assert_eq!(n, ACCOUNTS);
    assert_eq!(total, ACCOUNTS * START_BALANCE, "{}", db.display());
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal mode");
    assert_eq!(
        mode, journal_mode,
        "the database's own journal mode persists"
    );
    c.query_row("SELECT max(id) FROM log", [], |r| r.get(0))
        .expect("max")
}

fn live_writer(journal_mode: &str) {
    let d = Dir::new();
    let src = d.join("src");
    fs::create_dir(&src).expect("mkdir");
    fs::create_dir(src.join("data")).expect("mkdir");
    let db = src.join("data/app.db");
    drop(create_bank(&db, journal_mode));
    fs::write(src.join("notes.txt"), b"not a database").expect("write");
    let repo = init_repo(&d.join("repo"));

    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, commits, db) = (stop.clone(), commits.clone(), db.clone());
        std::thread::spawn(move || {
            let c = Connection::open(&db).expect("writer open");
            c.busy_timeout(Duration::from_secs(10))
                .expect("busy timeout");
            let mut rng = Rng::seeded(7);
            while !stop.load(Ordering::Relaxed) {
                if transfer(&c, &mut rng) {
                    commits.fetch_add(1, Ordering::Relaxed);
                }
                // An application committing all the time, but not in a
                // loop so tight that no reader ever gets the lock in
                // rollback-journal mode.
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let mut snapshots = Vec::new();
    let mut seen_commits = Vec::new();
    for _ in 0..BACKUPS {
        let done = backup(&repo, &src);
        assert!(done.warnings.is_empty(), "{:?}", done.warnings);
        snapshots.push(done);
        seen_commits.push(commits.load(Ordering::Relaxed));
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    assert!(
        seen_commits.last() > seen_commits.first(),
        "the writer committed while the backups ran: {seen_commits:?}"
    );

    let mut newest = Vec::new();
    for (i, done) in snapshots.iter().enumerate() {
        let out = d.join(&format!("restore-{i}"));
        let restored = restored(&repo, done, &out, &db);
        newest.push(check_restored(&restored, journal_mode));
    }
    assert!(
        newest.windows(2).all(|w| w[0] <= w[1]),
        "each snapshot is at least as new as the one before: {newest:?}"
    );
    assert!(
        newest.last() > newest.first(),
        "the snapshots saw the writer's commits: {newest:?}"
    );
    assert_verifies(&repo);
}

#[test]
fn sqlite_live_writer_wal_snapshots_are_consistent() {
    live_writer("wal");
}

#[test]
fn sqlite_live_writer_rollback_journal_snapshots_are_consistent() {
    live_writer("delete");
}

#[test]
fn sqlite_change_only_in_the_wal_is_captured() {
    let d = Dir::new();
    let src = d.join("src");
    fs::create_dir(&src).expect("mkdir");
    let db = src.join("app.db");
    let c = Connection::open(&db).expect("open");
    c.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
         CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);
         PRAGMA wal_checkpoint(TRUNCATE);",
    )
    .expect("fill");
    // Checkpointed: the main file holds the whole database, so it is as
    // large as the image, and only the WAL's stat can tell a change.
    let repo = init_repo(&d.join("repo"));
    std::thread::sleep(SETTLE);
    let first = backup(&repo, &src);
    let main_before = fs::metadata(&db).expect("stat");

    // Committed in WAL mode: only the -wal (and -shm) file changes.
    c.execute("INSERT INTO t VALUES (2)", []).expect("insert");
    let main_after = fs::metadata(&db).expect("stat");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (
            main_before.len(),
            main_before.mtime(),
            main_before.mtime_nsec(),
            main_before.ctime_nsec()
        ),
        (
            main_after.len(),
            main_after.mtime(),
            main_after.mtime_nsec(),
            main_after.ctime_nsec()
        ),
        "the main file is untouched by a WAL commit"
    );
    let second = backup(&repo, &src);
    assert_eq!(second.snapshot.parent, Some(first.id));
    let out = restored(&repo, &second, &d.join("r2"), &db);
    let r = Connection::open(&out).expect("open restored");
    let sum: i64 = r
        .query_row("SELECT sum(x) FROM t", [], |r| r.get(0))
        .expect("sum");
    assert_eq!(
        sum, 3,
        "the row that lives only in the WAL is in the snapshot"
    );

    // Once the WAL is quiet, the database is unchanged and not read again.
    std::thread::sleep(SETTLE);
    backup(&repo, &src);
    std::thread::sleep(SETTLE);
    let fourth = backup(&repo, &src);
    assert_eq!(fourth.snapshot.summary.files_unchanged, 1);
    assert_eq!(fourth.snapshot.summary.bytes_read, 0);
    drop(c);
    assert_verifies(&repo);
}

/// A WAL database with a live connection and committed data in its WAL.
fn wal_db(path: &Path) -> Connection {
    let c = Connection::open(path).expect("open");
    c.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
         CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1), (2);",
    )
    .expect("fill");
    c
}

#[test]
fn sqlite_cli_leaves_out_companions_and_off_stores_raw_bytes() {
    let d = Dir::new();
    let repo = d.join("repo");
    let src = d.join("src");
    fs::create_dir(&src).expect("mkdir");
    let db = src.join("app.db");
    let _c = wal_db(&db);
    assert!(src.join("app.db-wal").exists() && src.join("app.db-shm").exists());
    assert!(run(cairn(&repo, d.path()).arg("init")).status.success());

    let o = run(cairn(&repo, d.path()).arg("backup").arg(&src));
    assert!(o.status.success());
    let o = run(cairn(&repo, d.path()).args(["ls", "latest"]).arg(&src));
    let listed = stdout(&o);
    assert!(listed.contains("app.db"), "{listed}");
    assert!(
        !listed.contains("app.db-wal") && !listed.contains("app.db-shm"),
        "{listed}"
    );

    // Off: every file as raw bytes, the WAL included.
    let o = run(cairn(&repo, d.path())
        .args(["backup", "--sqlite", "off"])
        .arg(&src));
    assert!(o.status.success());
    let o = run(cairn(&repo, d.path()).args(["ls", "latest"]).arg(&src));
    let listed = stdout(&o);
    assert!(
        listed.contains("app.db-wal") && listed.contains("app.db-shm"),
        "{listed}"
    );
    let o = run(cairn(&repo, d.path()).args(["dump", "latest"]).arg(&db));
    assert_eq!(o.stdout, fs::read(&db).expect("read"), "the raw main file");

    // Named explicitly, a database is captured even with --sqlite off.
    let o = run(cairn(&repo, d.path())
        .args(["backup", "--force", "--sqlite", "off", "--sqlite-db"])
        .arg(&db)
        .arg(&src));
    assert!(o.status.success());
    let o = run(cairn(&repo, d.path()).args(["ls", "latest"]).arg(&src));
    let listed = stdout(&o);
    assert!(!listed.contains("app.db-wal"), "{listed}");
    let restored = d.join("out.db");
    let o = run(cairn(&repo, d.path()).args(["dump", "latest"]).arg(&db));
    fs::write(&restored, &o.stdout).expect("write");
    let r = Connection::open(&restored).expect("open");
    let sum: i64 = r
        .query_row("SELECT sum(x) FROM t", [], |r| r.get(0))
        .expect("sum");
    assert_eq!(sum, 3);
}

#[test]
fn sqlite_unreadable_database_falls_back_to_raw_bytes_with_a_warning() {
    let d = Dir::new();
    let src = d.join("src");
    fs::create_dir(&src).expect("mkdir");
    // SQLite's header and a valid page size, then noise.
    let mut bytes = b"SQLite format 3\0\x10\x00".to_vec();
    bytes.extend(Rng::seeded(3).bytes(8190));
    let bad = src.join("bad.db");
    fs::write(&bad, &bytes).expect("write");
    fs::write(src.join("bad.db-journal"), b"journal").expect("write");
    let repo = init_repo(&d.join("repo"));
    let done = backup(&repo, &src);
    assert!(
        done.warnings
            .iter()
            .any(|w| w.contains(&bad.display().to_string()) && w.contains("raw bytes")),
        "{:?}",
        done.warnings
    );
    let out = restored(&repo, &done, &d.join("r"), &src);
    assert_eq!(fs::read(out.join("bad.db")).expect("read"), bytes);
    assert_eq!(
        fs::read(out.join("bad.db-journal")).expect("read"),
        b"journal",
        "the companions of a database stored raw are stored too"
    );
    assert_verifies(&repo);

    // The command line prints the warning.
    let cli_repo = d.join("cli-repo");
    assert!(run(cairn(&cli_repo, d.path()).arg("init")).status.success());
    let o = run(cairn(&cli_repo, d.path()).arg("backup").arg(&src));
    assert!(o.status.success());
    assert!(stderr(&o).contains("bad.db"), "{}", stderr(&o));
}

/// When the temporary directory is inside the backup, the staged images of
/// databases (and any left over from a killed capture) are not stored.
#[test]
fn sqlite_images_staged_in_a_backed_up_tmpdir_are_left_out() {
    let d = Dir::new();
    let repo = d.join("repo");
    let src = d.join("src");
    let tmp = src.join("tmp");
    fs::create_dir_all(src.join("data")).expect("mkdir");
    fs::create_dir_all(&tmp).expect("mkdir");
    let _c = wal_db(&src.join("data/app.db"));
    fs::write(tmp.join(".cairn-sqlite-left0ver"), b"half an image").expect("leftover");
    fs::write(tmp.join("notes.txt"), b"kept").expect("notes");
    assert!(run(cairn(&repo, d.path()).arg("init")).status.success());
    let o = run(cairn(&repo, d.path())
        .env("TMPDIR", &tmp)
        .arg("backup")
        .arg(&src));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(cairn(&repo, d.path()).args(["ls", "latest"]).arg(&src));
    let listed = stdout(&o);
    assert!(
        listed.contains("notes.txt") && listed.contains("app.db"),
        "{listed}"
    );
    assert!(!listed.contains(".cairn-sqlite-"), "{listed}");
}
