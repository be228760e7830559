//! Point-in-time recovery (`cairn watch`, `restore --at TIME DB`, `db
//! timeline`) against a live writer: the reference test and the fault
//! test of issue 10.
//!
//! The writer runs in this process, the watcher is the `cairn` binary. The
//! writer records, for each commit, when COMMIT was issued, when it
//! returned, and a hash of the database state it produced. A restore to
//! time T is judged against the last commit that returned at or before T:
//! the same state is **exact**; the next commit's state when that commit
//! was issued before T is **in flight** (its commit moment lies between);
//! an earlier state is **late** when the commits it lacks returned less
//! than [`PRECISION`] before T (the watcher dates a commit when a poll
//! finds it, so never before it, and later on a loaded machine). Anything
//! else fails, above all a state from after T. At least 50 samples must
//! be exact; the others are counted and the worst lateness is printed.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use rusqlite::Connection;

use super::util::{
    Deadline, Dir, Rng, assert_verifies, cairn, init_repo, json_of, open_repo, posix_locks, run,
    wait_until,
};

/// How long a test waits for the watcher to reach a state before it fails:
/// a guard against spinning forever on a loaded machine, not a timing
/// assertion.
const PATIENCE: Duration = Duration::from_secs(300);

/// Kills the process `pid` (a watcher this test started) unless `done` is
/// set within [`PATIENCE`]: a guard for a blocking read of its output.
fn kill_unless(pid: u32, done: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let deadline = Deadline::new(PATIENCE, "");
        while !deadline.passed() {
            if done.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Ok(pid) = i32::try_from(pid) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
    });
}

/// How long after a commit returned the watcher may date it: it polls
/// every 2 ms here; the rest is room for a loaded 2-core machine running
/// other tests.
const PRECISION: Duration = Duration::from_millis(300);

/// One commit as the writer saw it.
#[derive(Clone, Debug)]
struct Commit {
    issued: Timestamp,
    returned: Timestamp,
    state: String,
}

/// What the writer did.
#[derive(Default)]
struct Record {
    /// The state before the first commit, then one entry per commit.
    initial: String,
    commits: Vec<Commit>,
    /// The longest commit (VACUUM left out), before and after `watching`
    /// was set.
    longest_alone: Duration,
    longest_watched: Duration,
}

fn state(conn: &Connection) -> String {
    let mut h = blake3::Hasher::new();
    let mut stmt = conn
        .prepare("SELECT k, v, n FROM t ORDER BY k")
        .expect("prepare");
    let mut rows = stmt.query([]).expect("query");
    while let Some(r) = rows.next().expect("row") {
        let k: i64 = r.get(0).expect("k");
        let v: Vec<u8> = r.get(1).expect("v");
        let n: i64 = r.get(2).expect("n");
        h.update(&k.to_le_bytes());
        h.update(&(v.len() as u64).to_le_bytes());
        h.update(&v);
        h.update(&n.to_le_bytes());
    }
    h.finalize().to_hex().to_string()
}

fn create_db(path: &Path) {
    let conn = Connection::open(path).expect("open");
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB NOT NULL, n INTEGER NOT NULL);",
    )
    .expect("create");
}

/// Commits mixed transactions at random moments until `stop`: inserts,
/// updates and deletes, now and then a large transaction (megabytes, so
/// the log grows past the watcher's restart size) and once a VACUUM.
fn write(db: &Path, seed: u64, stop: &AtomicBool, watching: &AtomicBool, rec: &Mutex<Record>) {
    let conn = Connection::open(db).expect("open");
    conn.busy_timeout(Duration::from_secs(10)).expect("busy");
    lock(rec).initial = state(&conn);
    let mut rng = Rng::seeded(seed);
    let mut n = 0u64;
    let mut vacuumed = false;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(60 + rng.next() % 400));
        n += 1;
        let issued = Timestamp::now();
        let started = Instant::now();
        if n.is_multiple_of(150) && !vacuumed {
            conn.execute_batch("DELETE FROM t WHERE k % 3 = 0; VACUUM;")
                .expect("vacuum");
            vacuumed = true;
        } else {
            conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
            let ops = if n.is_multiple_of(40) {
                400
            } else {
                1 + rng.next() % 5
            };
            for _ in 0..ops {
                let big = n.is_multiple_of(40);
                match rng.next() % 4 {
                    0 | 1 => {
                        let len = if big {
                            4000
                        } else {
                            10 + (rng.next() % 1500) as usize
                        };
                        conn.execute(
                            "INSERT INTO t(v, n) VALUES (?1, ?2)",
                            rusqlite::params![rng.bytes(len), n as i64],
                        )
                        .expect("insert");
                    }
                    2 => {
                        let len = 20 + (rng.next() % 200) as usize;
                        conn.execute(
                            "UPDATE t SET n = n + 1, v = ?1 WHERE k = (SELECT k FROM t ORDER BY random() LIMIT 1)",
                            rusqlite::params![rng.bytes(len)],
                        )
                        .expect("update");
                    }
                    _ => {
                        conn.execute(
                            "DELETE FROM t WHERE k = (SELECT k FROM t ORDER BY random() LIMIT 1)",
                            [],
                        )
                        .expect("delete");
                    }
                }
            }
            conn.execute_batch("COMMIT").expect("commit");
        }
        let took = started.elapsed();
        let returned = Timestamp::now();
        let s = state(&conn);
        let mut r = lock(rec);
        // The VACUUM rewrites the whole database: not an ordinary commit.
        if !n.is_multiple_of(150) {
            let longest = if watching.load(Ordering::Relaxed) {
                &mut r.longest_watched
            } else {
                &mut r.longest_alone
            };
            *longest = (*longest).max(took);
        }
        r.commits.push(Commit {
            issued,
            returned,
            state: s,
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `cairn watch DB` as a child process.
fn start_watcher(repo: &Path, home: &Path, db: &Path) -> Child {
    cairn(repo, home)
        .args(["watch", "--poll", "2ms", "--heartbeat", "1s"])
        .arg(db)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start cairn watch")
}

fn stop_watcher(mut child: Child) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM).expect("SIGTERM");
    let status = child.wait().expect("wait");
    assert!(status.success(), "cairn watch ended with {status}");
}

#[test]
fn a_watcher_whose_notes_nobody_reads_stores_what_it_read_and_stops() {
    // The daemon reads its watchers' notes through a pipe; when it is
    // killed, the next note fails. The watcher must then store what it
    // has read, not exit at the failed write. A long lag keeps the commit
    // unstored, and a base every second makes notes come meanwhile.
    use std::io::BufRead as _;
    let s = setup();
    let mut child = cairn(&s.repo, &s.home)
        .args(["--json", "watch", "--poll", "2ms", "--lag", "60s"])
        .args(["--heartbeat", "60s", "--base-every", "1s"])
        .arg(&s.db)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start cairn watch");
    let mut notes = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    let based = Arc::new(AtomicBool::new(false));
    kill_unless(child.id(), Arc::clone(&based));
    while !line.contains("\"event\":\"base\"") {
        line.clear();
        assert!(
            notes.read_line(&mut line).expect("read a note") > 0,
            "the watcher ended (or was killed after waiting) before its base"
        );
    }
    based.store(true, Ordering::SeqCst);
    let conn = Connection::open(&s.db).expect("open");
    conn.execute(
        "INSERT INTO t(v, n) VALUES (?1, 1)",
        rusqlite::params![vec![1u8; 100]],
    )
    .expect("insert");
    let want = state(&conn);
    drop(notes);
    let deadline = Deadline::new(PATIENCE, "the watcher went on without readers");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        deadline.check();
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "cairn watch ended with {status}");
    let path = cairn::watched_db_path(&s.db).expect("path");
    let (_, restored) = restored(
        &open_repo(&s.repo),
        path.as_os_str().as_encoded_bytes(),
        cairn::PitrPoint::Latest,
        &s.dir.join("restored.db"),
    );
    assert_eq!(state(&restored), want, "the commit read was stored");
    assert_verifies(&open_repo(&s.repo));
}

/// Waits until the watcher has stored a chain for `db` (its base and
/// first segment).
fn wait_for_chain(repo: &Path, home: &Path, db: &Path, chains: usize) {
    let deadline = Deadline::new(PATIENCE, format!("the watcher stored {chains} chains"));
    loop {
        let out = cairn(repo, home)
            .args(["--json", "db", "timeline"])
            .arg(db)
            .output()
            .expect("timeline");
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
            if v[0]["chains"].as_array().is_some_and(|c| c.len() >= chains) {
                return;
            }
        }
        deadline.check();
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How a restored state compares with the writer's record at `at`.
#[derive(Debug, PartialEq)]
enum Verdict {
    Exact,
    InFlight,
    /// The commits it lacks returned this long before `at`.
    Late(Duration),
    Wrong,
}

fn judge(rec: &Record, at: Timestamp, got: &str) -> Verdict {
    let done = rec.commits.iter().take_while(|c| c.returned <= at).count();
    let state_after = |i: usize| match i {
        0 => rec.initial.as_str(),
        i => rec.commits[i - 1].state.as_str(),
    };
    if got == state_after(done) {
        return Verdict::Exact;
    }
    if rec.commits.get(done).is_some_and(|c| c.issued <= at) && got == state_after(done + 1) {
        return Verdict::InFlight;
    }
    for k in (0..done).rev() {
        let lacking = at.duration_since(rec.commits[k].returned).unsigned_abs();
        if lacking > PRECISION {
            break;
        }
        if got == state_after(k) {
            return Verdict::Late(lacking);
        }
    }
    Verdict::Wrong
}

/// The writer's commits around `at`, and which commit's state `got` is,
/// for failure messages.
fn around(rec: &Record, at: Timestamp, got: &str) -> String {
    let done = rec.commits.iter().take_while(|c| c.returned <= at).count();
    let near: Vec<String> = (done.saturating_sub(2)..(done + 2).min(rec.commits.len()))
        .map(|i| {
            let c = &rec.commits[i];
            format!("#{}: issued {} returned {}", i + 1, c.issued, c.returned)
        })
        .collect();
    let is = rec
        .commits
        .iter()
        .position(|c| c.state == got)
        .map_or_else(|| "no commit's".to_owned(), |i| format!("#{}'s", i + 1));
    format!("{}; the restored state is {is}", near.join("; "))
}

/// Restores `db` as of `at` and returns the state and the restore's JSON.
fn restore_at(
    repo: &Path,
    home: &Path,
    db: &Path,
    at: Timestamp,
    target: &Path,
) -> (String, serde_json::Value) {
    let _ = std::fs::remove_file(target);
    let out = run(cairn(repo, home)
        .args(["--json", "restore", "--at", &at.to_string()])
        .arg(db)
        .arg("--target")
        .arg(target));
    let v = json_of(&out);
    let conn = Connection::open(target).expect("open restored");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok", "restore to {at}: integrity_check");
    (state(&conn), v)
}

/// A time uniformly in `[from, to]`.
fn between(rng: &mut Rng, from: Timestamp, to: Timestamp) -> Timestamp {
    let span = to.duration_since(from).as_nanos().max(1);
    let offset = i128::from(rng.next()) % span;
    Timestamp::from_nanosecond(from.as_nanosecond() + offset).expect("time")
}

struct Setup {
    dir: Dir,
    repo: PathBuf,
    home: PathBuf,
    db: PathBuf,
}

fn setup() -> Setup {
    let dir = Dir::new();
    let repo = dir.join("repo");
    init_repo(&repo);
    let home = dir.join("home");
    std::fs::create_dir_all(&home).expect("home");
    let db = dir.join("app.db");
    create_db(&db);
    Setup {
        repo,
        home,
        db,
        dir,
    }
}

#[test]
fn restore_at_gives_the_last_commit_at_or_before_each_moment() {
    let s = setup();
    let stop = Arc::new(AtomicBool::new(false));
    let watching = Arc::new(AtomicBool::new(false));
    let rec = Arc::new(Mutex::new(Record::default()));
    let writer = {
        let (db, stop, watching, rec) = (s.db.clone(), stop.clone(), watching.clone(), rec.clone());
        std::thread::spawn(move || write(&db, 10, &stop, &watching, &rec))
    };
    // The writer alone first, for its commit latency without a watcher
    // (long enough for several of the large transactions).
    std::thread::sleep(Duration::from_secs(25));
    watching.store(true, Ordering::Relaxed);
    let watcher = start_watcher(&s.repo, &s.home, &s.db);
    wait_for_chain(&s.repo, &s.home, &s.db, 1);
    let watched_from = Timestamp::now();
    std::thread::sleep(Duration::from_secs(62));
    let watched_to = Timestamp::now();
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    std::thread::sleep(Duration::from_millis(500));
    stop_watcher(watcher);
    let rec = lock(&rec);
    let during = rec
        .commits
        .iter()
        .filter(|c| c.issued >= watched_from && c.returned <= watched_to)
        .count();
    assert!(during > 150, "the writer committed only {during} times");

    let mut rng = Rng::seeded(99);
    let target = s.dir.join("restored.db");
    let (mut exact, mut in_flight, mut late, mut worst) = (0, 0, 0, Duration::ZERO);
    while exact < 50 {
        assert!(exact + in_flight + late < 300, "too few exact samples");
        let at = between(&mut rng, watched_from, watched_to);
        let (got, v) = restore_at(&s.repo, &s.home, &s.db, at, &target);
        assert!(v["gap"].is_null(), "{at} is watched, not in a gap: {v}");
        match judge(&rec, at, &got) {
            Verdict::Exact => exact += 1,
            Verdict::InFlight => in_flight += 1,
            Verdict::Late(d) => {
                late += 1;
                worst = worst.max(d);
            }
            Verdict::Wrong => panic!(
                "restore to {at} gave a state the writer did not have then ({v}); writer: {}",
                around(&rec, at, &got)
            ),
        }
    }
    // The newest state (the database named alone), and a transaction
    // number.
    let newest = s.dir.join("newest.db");
    let out = run(cairn(&s.repo, &s.home)
        .args(["--json", "restore"])
        .arg(&s.db)
        .arg("--target")
        .arg(&newest));
    let last = rec.commits.last().expect("commits");
    assert_eq!(
        state(&Connection::open(&newest).expect("open newest")),
        last.state,
        "restore of the newest state: {}",
        json_of(&out)
    );
    let out = run(cairn(&s.repo, &s.home)
        .args(["--json", "restore", "--txn", "5"])
        .arg(&s.db)
        .arg("--target")
        .arg(s.dir.join("txn5.db")));
    assert_eq!(json_of(&out)["txn"], 5);
    eprintln!(
        "pitr reference: {during} commits watched; {exact} samples exact, {in_flight} in flight, {late} late (by up to {worst:?}); longest commit {:?} alone, {:?} watched",
        rec.longest_alone, rec.longest_watched
    );
    assert_verifies(&open_repo(&s.repo));
}

#[test]
fn a_killed_watcher_leaves_gaps_that_restore_to_the_last_stored_commit() {
    let s = setup();
    let stop = Arc::new(AtomicBool::new(false));
    let watching = Arc::new(AtomicBool::new(true));
    let rec = Arc::new(Mutex::new(Record::default()));
    let writer = {
        let (db, stop, watching, rec) = (s.db.clone(), stop.clone(), watching.clone(), rec.clone());
        std::thread::spawn(move || write(&db, 20, &stop, &watching, &rec))
    };
    std::thread::sleep(Duration::from_secs(1));
    let mut watcher = start_watcher(&s.repo, &s.home, &s.db);
    wait_for_chain(&s.repo, &s.home, &s.db, 1);
    let from = Timestamp::now();
    let mut kills = Vec::new();
    for round in 0..3 {
        std::thread::sleep(Duration::from_secs(8));
        watcher.kill().expect("SIGKILL");
        watcher.wait().expect("wait");
        kills.push(Timestamp::now());
        std::thread::sleep(Duration::from_millis(1500));
        watcher = start_watcher(&s.repo, &s.home, &s.db);
        wait_for_chain(&s.repo, &s.home, &s.db, round + 2);
    }
    std::thread::sleep(Duration::from_secs(6));
    let to = Timestamp::now();
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    std::thread::sleep(Duration::from_millis(500));
    stop_watcher(watcher);
    let rec = lock(&rec);

    let out = run(cairn(&s.repo, &s.home)
        .args(["--json", "db", "timeline"])
        .arg(&s.db));
    let timeline = json_of(&out);
    let gaps: Vec<(Timestamp, Timestamp)> = timeline[0]["gaps"]
        .as_array()
        .expect("gaps")
        .iter()
        .map(|g| {
            let t = |v: &serde_json::Value| {
                v.as_str()
                    .expect("time")
                    .parse::<Timestamp>()
                    .expect("time")
            };
            (t(&g["from"]), t(&g["to"]))
        })
        .collect();
    assert_eq!(gaps.len(), 3, "one gap per kill: {timeline}");
    for k in &kills {
        assert!(
            gaps.iter().any(|(a, b)| a <= k && k <= b),
            "the kill at {k} is in no gap: {gaps:?}"
        );
    }

    let mut rng = Rng::seeded(7);
    let target = s.dir.join("restored.db");
    let (mut clear, mut in_gap) = (0, 0);
    let mut samples = 0usize;
    while clear < 50 || in_gap < 6 {
        samples += 1;
        assert!(samples < 400, "too few clear samples");
        // Every other sample inside a gap, so that each is tried.
        let at = if samples.is_multiple_of(2) {
            let (a, b) = gaps[(samples / 2) % gaps.len()];
            between(&mut rng, a, b)
        } else {
            between(&mut rng, from, to)
        };
        let (got, v) = restore_at(&s.repo, &s.home, &s.db, at, &target);
        match gaps.iter().find(|(a, b)| *a < at && at < *b) {
            Some((a, _)) => {
                // The last commit that reached the repository: the one at
                // or before the gap's start.
                assert_ne!(
                    judge(&rec, *a, &got),
                    Verdict::Wrong,
                    "restore to {at} in the gap from {a}: {v}; writer: {}",
                    around(&rec, *a, &got)
                );
                assert!(!v["gap"].is_null(), "{at} should be reported in a gap: {v}");
                in_gap += 1;
            }
            None => match judge(&rec, at, &got) {
                Verdict::Exact => clear += 1,
                Verdict::Wrong => panic!(
                    "restore to {at} outside the gaps: {v}; writer: {}",
                    around(&rec, at, &got)
                ),
                _ => {}
            },
        }
    }
    eprintln!(
        "pitr faults: {} gaps, {clear} clear samples, {in_gap} in gaps",
        gaps.len()
    );
    assert_verifies(&open_repo(&s.repo));
}

/// The watched path of `db` as segments record it, and its one timeline,
/// read without problems.
fn timeline_of(repo: &cairn::Repository, db: &Path) -> (Vec<u8>, cairn::Timeline) {
    let db = cairn::watched_db_path(db).expect("path");
    let db = db.as_os_str().as_encoded_bytes().to_vec();
    let (mut timelines, problems) = cairn::timelines(repo, None, Some(&db)).expect("timeline");
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        timelines.len(),
        1,
        "one host watched {}",
        String::from_utf8_lossy(&db)
    );
    (db, timelines.remove(0))
}

/// Runs the library's watcher on `db` while `commits` small transactions
/// are made, then stops it.
fn watch_while_writing(repo: &cairn::Repository, db: &Path, commits: usize) {
    watch_while_writing_with(repo, db, commits, |_| {});
}

/// [`watch_while_writing`] with `tweak` applied to the watcher's options.
fn watch_while_writing_with(
    repo: &cairn::Repository,
    db: &Path,
    commits: usize,
    tweak: impl FnOnce(&mut cairn::WatchOptions),
) -> Vec<Timestamp> {
    let stop = AtomicBool::new(false);
    let mut opts = cairn::WatchOptions::default();
    opts.lag = Duration::from_millis(100);
    opts.poll = Duration::from_millis(2);
    tweak(&mut opts);
    let based = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            cairn::watch(repo, db, &opts, &stop, &|n| {
                if matches!(n, cairn::WatchNote::Base { .. }) {
                    based.store(true, Ordering::SeqCst);
                }
            })
        });
        // Commits from now on come after the base.
        wait_until(PATIENCE, "the watcher's first base", || {
            based.load(Ordering::SeqCst) || watcher.is_finished()
        });
        assert!(
            based.load(Ordering::SeqCst),
            "the watcher ended before its base: {:?}",
            watcher.join().expect("join")
        );
        let conn = Connection::open(db).expect("open");
        let mut times = Vec::with_capacity(commits);
        for i in 0..commits {
            std::thread::sleep(Duration::from_millis(30));
            conn.execute(
                "INSERT INTO t(v, n) VALUES (?1, ?2)",
                rusqlite::params![vec![7u8; 300], i as i64],
            )
            .expect("insert");
            times.push(Timestamp::now());
        }
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        watcher.join().expect("join").expect("watch");
        times
    })
}

#[test]
fn a_watcher_whose_storing_falls_behind_waits_and_loses_nothing() {
    // With room for a few pages only, the watcher reads no further until
    // each batch is stored: the commits wait in the log, under the pin,
    // and every one still reaches the repository in order.
    let s = setup();
    let repo = open_repo(&s.repo);
    let times = watch_while_writing_with(&repo, &s.db, 30, |o| o.max_memory = 16 << 10);
    // Read while the writer went on, not all at the stop (which comes
    // 300 ms after the last commit): by the time the writer made its last
    // commit, at least half of them were read and dated. Half, not "commit
    // 15 within a fixed precision": how far behind a throttled watcher
    // runs on a loaded machine is not for a test to time.
    let (_, v) = restore_at(
        &s.repo,
        &s.home,
        &s.db,
        *times.last().expect("30 commits"),
        &s.dir.join("middle.db"),
    );
    assert!(v["txn"].as_u64().is_some_and(|t| t >= 15), "{v}");
    let conn = Connection::open(&s.db).expect("open");
    let (got, v) = restore_at(
        &s.repo,
        &s.home,
        &s.db,
        Timestamp::now(),
        &s.dir.join("restored.db"),
    );
    assert_eq!(got, state(&conn), "{v}");
    assert_eq!(v["txn"], 30, "{v}");
    let (_, timeline) = timeline_of(&repo, &s.db);
    assert!(timeline.gaps().is_empty(), "{:?}", timeline.gaps());
    assert_verifies(&repo);
}

#[test]
fn new_bases_under_load_take_each_transaction_once() {
    // Transactions committed while a new base's image is copied are the new
    // chain's alone: each is stored once and numbered once, and a base is
    // the state after the last transaction of the chain before it.
    let s = setup();
    {
        let conn = Connection::open(&s.db).expect("open");
        // Some megabytes, so that copying a base's image takes a while.
        conn.execute_batch("BEGIN").expect("begin");
        for i in 0..3000 {
            conn.execute(
                "INSERT INTO t(v, n) VALUES (?1, ?2)",
                rusqlite::params![vec![3u8; 2000], -i],
            )
            .expect("insert");
        }
        conn.execute_batch("COMMIT").expect("commit");
    }
    let repo = open_repo(&s.repo);
    let stop = AtomicBool::new(false);
    let mut opts = cairn::WatchOptions::default();
    opts.lag = Duration::from_millis(100);
    opts.poll = Duration::from_millis(2);
    opts.base_every = Duration::from_millis(200);
    let bases = std::sync::atomic::AtomicUsize::new(0);
    let stored = std::sync::atomic::AtomicUsize::new(0);
    let ended = Mutex::new(Vec::new());
    let mut commits = 0usize;
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            cairn::watch(&repo, &s.db, &opts, &stop, &|n| match n {
                cairn::WatchNote::Base { .. } => {
                    bases.fetch_add(1, Ordering::SeqCst);
                }
                cairn::WatchNote::Segment { txns, .. } => {
                    stored.fetch_add(txns, Ordering::SeqCst);
                }
                cairn::WatchNote::ChainEnd(why) => lock(&ended).push(why),
                _ => {}
            })
        });
        wait_until(PATIENCE, "the watcher's first base", || {
            bases.load(Ordering::SeqCst) > 0 || watcher.is_finished()
        });
        // As fast as it goes, through several bases, but never more than
        // a few thousand transactions ahead of what the watcher stored: on
        // a loaded machine a writer at full speed outruns the storing, and
        // the watcher would rightly let the log go (a gap) instead of
        // storing every transaction, which is what this test checks.
        let conn = Connection::open(&s.db).expect("open");
        let deadline = Deadline::new(PATIENCE, "four bases under load");
        while bases.load(Ordering::SeqCst) < 4 && !watcher.is_finished() {
            deadline.check();
            if commits > stored.load(Ordering::SeqCst) + 2000 {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            conn.execute(
                "UPDATE t SET n = n + 1 WHERE k = ?1",
                [1 + (commits % 3000) as i64],
            )
            .expect("update");
            commits += 1;
        }
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        watcher.join().expect("join").expect("watch");
    });
    let ended = lock(&ended).clone();
    assert!(
        ended.iter().all(|e| e == "a new base is due"),
        "chains ended only for new bases: {ended:?}"
    );
    let (db, timeline) = timeline_of(&repo, &s.db);
    let chains = &timeline.chains;
    assert!(chains.len() >= 4, "{} chains", chains.len());
    // Besides the application's, the log holds the watcher's own commits
    // that restart it, which rewrite page 1 alone (the user_version).
    let stored: usize = chains
        .iter()
        .flat_map(|c| &c.segments)
        .flat_map(|(_, seg)| &seg.txns)
        .filter(|t| t.pages != [1])
        .count();
    assert_eq!(stored, commits, "transactions stored vs committed");
    let restore = |point, name: &str| {
        let (txn, conn) = restored(&repo, &db, point, &s.dir.join(name));
        (txn, state(&conn))
    };
    for (i, pair) in chains.windows(2).enumerate() {
        let [before, after] = pair else { continue };
        assert_eq!(after.base_txn, before.last_txn() + 1, "numbers run on");
        let (_, last) = restore(
            cairn::PitrPoint::Txn(before.last_txn()),
            &format!("last{i}.db"),
        );
        let (_, base) = restore(
            cairn::PitrPoint::Txn(after.base_txn),
            &format!("base{i}.db"),
        );
        assert_eq!(
            base, last,
            "the base after chain {i} is the state it ended with"
        );
    }
    let (txn, latest) = restore(cairn::PitrPoint::Latest, "latest.db");
    let conn = Connection::open(&s.db).expect("open");
    assert_eq!(latest, state(&conn), "txn {txn}");
    assert_verifies(&repo);
}

#[test]
fn prune_keeps_segment_data_and_keep_pitr_drops_old_chains_whole() {
    let s = setup();
    let repo = open_repo(&s.repo);
    watch_while_writing(&repo, &s.db, 20);
    std::thread::sleep(Duration::from_millis(50));
    let between = Timestamp::now();
    std::thread::sleep(Duration::from_millis(50));
    watch_while_writing(&repo, &s.db, 20);
    let (db, timeline) = timeline_of(&repo, &s.db);
    assert_eq!(timeline.chains.len(), 2);
    assert_eq!(
        timeline.gaps().len(),
        1,
        "the watcher was stopped in between"
    );

    // Forget without --keep-pitr keeps both bases, prune keeps the data.
    let mut last = cairn::KeepPolicy::default();
    last.last = Some(1);
    let opts = cairn::ForgetOptions::new(last.clone());
    let done = cairn::forget(&repo, &opts).expect("forget");
    assert!(
        done.removed.is_empty(),
        "bases are kept: {:?}",
        done.removed
    );
    cairn::prune(&repo, &cairn::PruneOptions::default()).expect("prune");
    assert_verifies(&repo);
    let target = s.dir.join("first.db");
    let early = cairn::restore_at(
        &repo,
        &db,
        cairn::PitrPoint::Time(between),
        &target,
        &cairn::PitrRestoreOptions::default(),
    )
    .expect("restore in the first chain");
    assert_eq!(early.txn, 20, "all 20 commits of the first run");
    assert!(early.gap.is_some(), "{between} lies between the chains");

    // --keep-pitr shorter than the second chain's age drops the first
    // chain; its base then falls to the other rules.
    let mut opts = cairn::ForgetOptions::new(last);
    opts.keep_pitr = Some(jiff::Span::new().milliseconds(200));
    let done = cairn::forget(&repo, &opts).expect("forget --keep-pitr");
    assert_eq!(done.chains_removed.len(), 1);
    assert_eq!(done.removed.len(), 1, "the first base goes too");
    cairn::prune(&repo, &cairn::PruneOptions::default()).expect("prune");
    assert_verifies(&repo);
    let latest = cairn::restore_at(
        &repo,
        &db,
        cairn::PitrPoint::Latest,
        &s.dir.join("latest.db"),
        &cairn::PitrRestoreOptions::default(),
    )
    .expect("restore latest");
    let conn = Connection::open(s.dir.join("latest.db")).expect("open");
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .expect("count");
    assert_eq!(rows, 40);
    assert_eq!(latest.applied, 20);
    drop(conn);
    let gone = cairn::restore_at(
        &repo,
        &db,
        cairn::PitrPoint::Time(between),
        &s.dir.join("gone.db"),
        &cairn::PitrRestoreOptions::default(),
    );
    let gone = gone.expect_err("the first chain is forgotten");
    assert_eq!(gone.kind(), cairn::ErrorKind::InvalidInput, "{gone}");
    let missing = cairn::restore_at(
        &repo,
        &db,
        cairn::PitrPoint::Txn(1_000_000),
        &s.dir.join("missing.db"),
        &cairn::PitrRestoreOptions::default(),
    )
    .expect_err("no such transaction");
    assert_eq!(missing.kind(), cairn::ErrorKind::NotFound, "{missing}");
    assert!(missing.to_string().contains("is not stored"), "{missing}");

    // An existing target is replaced only when asked; one with a log
    // beside it (a database in use) never.
    let again = |overwrite: bool| {
        let mut opts = cairn::PitrRestoreOptions::default();
        opts.overwrite = overwrite;
        cairn::restore_at(
            &repo,
            &db,
            cairn::PitrPoint::Latest,
            &s.dir.join("latest.db"),
            &opts,
        )
    };
    let e = again(false).expect_err("the target exists");
    // The library says what is wrong and what to change (the CLI turns
    // the hint into --overwrite; cli/advice.rs).
    assert!(e.to_string().ends_with("latest.db exists"), "{e}");
    assert_eq!(e.hint(), Some(&cairn::Hint::Overwrite), "{e}");
    assert_eq!(e.kind(), cairn::ErrorKind::InvalidInput, "{e}");
    // Replacing it is a live restore like any other: a safety snapshot of
    // the file first, and the undo; refused while another process has it
    // open (this test, here) unless forced.
    let replaced = again(true).expect("replaced when asked");
    let undo = replaced
        .undo
        .expect("a safety snapshot of the replaced file");
    let (_, safety) = repo
        .find_snapshot(&undo.snapshot.to_hex())
        .expect("the safety snapshot");
    assert!(safety.is_safety(), "{:?}", safety.tags);
    // In rollback-journal mode, so that no -wal beside it refuses first;
    // held open by another process (the sqlite3 shell, after a query).
    let conn = Connection::open(s.dir.join("latest.db")).expect("open");
    let _: String = conn
        .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
        .expect("journal mode");
    drop(conn);
    let mut holder = std::process::Command::new("sqlite3")
        .arg(s.dir.join("latest.db"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sqlite3 shell");
    let mut stdin = holder.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut stdin, b"SELECT count(*) FROM t;\n").expect("query");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("answer");
    let e = again(true).expect_err("open in another process");
    assert!(e.to_string().contains("is open in"), "{e}");
    assert_eq!(e.kind(), cairn::ErrorKind::Busy, "{e}");
    drop(stdin);
    holder.wait().expect("sqlite3 ends");
    std::fs::write(s.dir.join("latest.db-wal"), b"").expect("a log beside it");
    let e = again(true).expect_err("a database in use");
    assert!(e.to_string().contains("-wal"), "{e}");
    assert_eq!(e.kind(), cairn::ErrorKind::Busy, "{e}");

    // A chain whose base snapshot is gone cannot be restored: stored data
    // is missing, which is damage (exit code 3), not a bad request.
    let (_, timeline) = timeline_of(&repo, &s.db);
    for chain in &timeline.chains {
        std::fs::remove_file(s.repo.join("snapshots").join(chain.base.to_hex()))
            .expect("remove the base");
    }
    let repo = open_repo(&s.repo);
    let e = cairn::restore_at(
        &repo,
        &db,
        cairn::PitrPoint::Latest,
        &s.dir.join("nobase.db"),
        &cairn::PitrRestoreOptions::default(),
    )
    .expect_err("no chain can be restored");
    assert!(e.is_damage(), "{e:?}");
    assert!(e.to_string().contains("no chain of"), "{e}");
}

#[test]
fn a_database_is_watched_into_object_storage_and_restored() {
    let Some(_shared) = super::util::s3_shared() else {
        return;
    };
    let d = Dir::new();
    let repo = super::util::repo_location(super::util::Store::S3, &d, "repo");
    assert!(run(cairn(&repo, d.path()).arg("init")).status.success());
    let db = d.join("app.db");
    create_db(&db);
    let watcher = start_watcher(&repo, d.path(), &db);
    wait_for_chain(&repo, d.path(), &db, 1);
    let conn = Connection::open(&db).expect("open");
    for i in 0..10 {
        conn.execute(
            "INSERT INTO t(v, n) VALUES (?1, ?2)",
            rusqlite::params![vec![1u8; 500], i],
        )
        .expect("insert");
        std::thread::sleep(Duration::from_millis(50));
    }
    let after_all = Timestamp::now();
    std::thread::sleep(Duration::from_millis(1500));
    stop_watcher(watcher);
    let (got, v) = restore_at(&repo, d.path(), &db, after_all, &d.join("restored.db"));
    assert_eq!(got, state(&conn), "{v}");
    assert_eq!(v["txn"], 10, "{v}");
    let o = run(cairn(&repo, d.path()).args(["verify", "--read-data"]));
    assert!(o.status.success(), "verify: {}", super::util::stderr(&o));
}

#[test]
fn status_judges_a_watched_database_by_what_its_watcher_stored() {
    let s = setup();
    let repo = open_repo(&s.repo);
    watch_while_writing(&repo, &s.db, 10);
    let path = cairn::watched_db_path(&s.db).expect("path");
    let shown = path.display().to_string();

    let st = cairn::status(&repo).expect("status");
    assert!(st.problems.is_empty(), "{:?}", st.problems);
    let src = st
        .sources
        .iter()
        .find(|x| x.source.component == shown)
        .expect("the database is a source");
    let watch = src.watch.as_ref().expect("it is watched");
    let (_, base_time) = src.last.expect("a base");
    assert!(
        watch.until > base_time,
        "segments after the base: {} vs {base_time}",
        watch.until
    );
    assert_eq!(src.newest(), Some(watch.until));
    assert_eq!(watch.ended.as_deref(), Some("the watcher was stopped"));

    // Fresh within an hour; stale once the limit is shorter than its age.
    let out = run(cairn(&s.repo, &s.home).args(["--json", "status", "--max-age", "1h"]));
    let v = json_of(&out);
    let item = v["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|x| x["component"] == shown.as_str())
        .expect("source in json")
        .clone();
    assert_eq!(item["watch"]["until"], watch.until.to_string());
    assert_eq!(item["watch"]["ended"], "the watcher was stopped");
    assert_eq!(item["stale"], false);
    std::thread::sleep(Duration::from_millis(2_100));
    let out = run(cairn(&s.repo, &s.home).args(["--json", "status", "--max-age", "1s"]));
    assert_eq!(out.status.code(), Some(14), "stale: exit 14");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let alert = v["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .find(|a| a["kind"] == "stale")
        .expect("a stale alert")
        .clone();
    assert!(
        alert["message"]
            .as_str()
            .is_some_and(|m| m.contains("moment its watcher stored")),
        "{alert}"
    );

    // Text output says how the watch ended.
    let out = run(cairn(&s.repo, &s.home).args(["status"]));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("watch ended: the watcher was stopped"),
        "{text}"
    );
}

/// The name and nice value of each thread of process `pid`.
fn thread_priorities(pid: u32) -> Vec<(String, i32)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/PID/task");
    tasks
        .filter_map(|t| {
            let dir = t.ok()?.path();
            let name = std::fs::read_to_string(dir.join("comm")).ok()?;
            let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
            // Fields after the name in parentheses, from the state (field
            // 3) on: the nice value is field 19.
            let nice = stat
                .rsplit_once(") ")?
                .1
                .split_whitespace()
                .nth(16)?
                .parse()
                .ok()?;
            Some((name.trim_end().to_owned(), nice))
        })
        .collect()
}

#[test]
fn the_watcher_stores_at_a_lower_priority_than_it_follows() {
    // The application's writer should not wait for the compressing and
    // writing of what the watcher read; the thread that polls the log
    // (and briefly holds the application's write lock) keeps its priority.
    let s = setup();
    let child = start_watcher(&s.repo, &s.home, &s.db);
    wait_for_chain(&s.repo, &s.home, &s.db, 1);
    let threads = thread_priorities(child.id());
    stop_watcher(child);
    let storers: Vec<i32> = threads
        .iter()
        .filter(|(name, _)| name == "cairn-store")
        .map(|t| t.1)
        .collect();
    // Relative to the test's own priority, which a run under `nice` has
    // raised.
    let normal = threads
        .iter()
        .filter(|(name, _)| name == "cairn")
        .map(|t| t.1)
        .min()
        .expect("the watcher's own threads");
    assert!(!storers.is_empty(), "no storing thread: {threads:?}");
    assert!(
        storers.iter().all(|n| *n == (normal + 19).min(19)),
        "{threads:?}"
    );
}

#[test]
fn the_watcher_keeps_sqlites_lock_on_the_database_through_a_base() {
    // SQLite's connections hold a shared lock on a WAL database for as
    // long as they are open, so that the application's last connection to
    // close does not delete the -wal and -shm files from under them. The
    // base backup must not open and close the file itself: closing any
    // descriptor drops every POSIX lock the process holds on it.
    use std::os::unix::fs::MetadataExt;
    let s = setup();
    let child = start_watcher(&s.repo, &s.home, &s.db);
    wait_for_chain(&s.repo, &s.home, &s.db, 1);
    let ino = std::fs::metadata(&s.db).expect("stat").ino();
    let held = posix_locks(&[child.id()], ino);
    stop_watcher(child);
    assert!(
        held > 0,
        "after its base the watcher holds no lock on the database"
    );
}

/// `restore_at` of `db` as of `point` into `target` with the default
/// options: the transaction restored and the restored database, open.
fn restored(
    repo: &cairn::Repository,
    db: &[u8],
    point: cairn::PitrPoint,
    target: &Path,
) -> (u64, Connection) {
    let done = cairn::restore_at(
        repo,
        db,
        point,
        target,
        &cairn::PitrRestoreOptions::default(),
    )
    .expect("restore --at");
    (done.txn, Connection::open(target).expect("open restored"))
}

/// The state `restore_at` gives for each of `times`, with the number of
/// the transaction restored.
fn states_at(
    repo: &cairn::Repository,
    db: &[u8],
    times: &[Timestamp],
    dir: &Path,
) -> Vec<(u64, String)> {
    times
        .iter()
        .enumerate()
        .map(|(i, at)| {
            let target = dir.join(format!("at{i}.db"));
            let (txn, conn) = restored(repo, db, cairn::PitrPoint::Time(*at), &target);
            (txn, state(&conn))
        })
        .collect()
}

/// The segment files, by name.
fn wal_files(repo: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(repo.join("wal"))
        .expect("wal/")
        .map(|e| {
            let e = e.expect("entry");
            let bytes = std::fs::read(e.path()).expect("read segment");
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn prune_compacts_an_ended_chain_into_one_segment_that_restores_every_moment_alike() {
    let s = setup();
    let repo = open_repo(&s.repo);
    let times = watch_while_writing_with(&repo, &s.db, 30, |_| {});
    let (db, before) = timeline_of(&repo, &s.db);
    let old = &before.chains[0];
    let n = old.segments.len();
    assert!(n >= 5, "{n} segments: the watcher stores every 100 ms");
    std::fs::create_dir_all(s.dir.join("before")).expect("mkdir");
    let expected = states_at(&repo, &db, &times, &s.dir.join("before"));
    let old_files = wal_files(&s.repo);

    let done = json_of(&run(cairn(&s.repo, &s.home).args(["prune", "--json"])));
    let report = &done["report"];
    assert_eq!(
        report["segments_replaced"].as_u64(),
        Some(n as u64),
        "{report}"
    );
    assert_eq!(report["segments_written"], 1, "{report}");
    assert_eq!(report["segments"], 1, "{report}");
    let repo = open_repo(&s.repo);
    let (_, after) = timeline_of(&repo, &s.db);
    let new = &after.chains[0];
    assert_eq!(new.segments.len(), 1);
    assert_eq!(
        (
            new.base,
            new.base_time,
            new.base_txn,
            new.until(),
            new.last_txn(),
            new.txns()
        ),
        (
            old.base,
            old.base_time,
            old.base_txn,
            old.until(),
            old.last_txn(),
            old.txns()
        )
    );
    assert_eq!(new.end(), old.end());
    std::fs::create_dir_all(s.dir.join("after")).expect("mkdir");
    assert_eq!(
        states_at(&repo, &db, &times, &s.dir.join("after")),
        expected
    );
    assert_verifies(&repo);

    // A prune stopped before it deleted the old segments leaves both sets:
    // the chain reads as the compacted one, and the next prune deletes the
    // others.
    for (name, bytes) in &old_files {
        std::fs::write(s.repo.join("wal").join(name), bytes).expect("put back");
    }
    let (_, both) = timeline_of(&repo, &s.db);
    assert_eq!(both.chains.len(), 1);
    assert_eq!(both.chains[0].segments.len(), 1);
    assert_eq!(both.chains[0].superseded.len(), n);
    assert_eq!(both.chains[0].problem, None);
    std::fs::create_dir_all(s.dir.join("both")).expect("mkdir");
    assert_eq!(states_at(&repo, &db, &times, &s.dir.join("both")), expected);
    assert_verifies(&repo);
    let again = cairn::prune(&repo, &cairn::PruneOptions::default()).expect("prune again");
    assert_eq!(
        (
            again.segments_superseded,
            again.segments_replaced,
            again.segments
        ),
        (n, 0, 1)
    );
    assert_eq!(wal_files(&s.repo).len(), 1);
    let third = cairn::prune(&repo, &cairn::PruneOptions::default()).expect("third prune");
    assert_eq!((third.segments_superseded, third.segments_replaced), (0, 0));
    assert_verifies(&repo);
}

#[test]
fn a_page_size_change_between_watchers_restores_on_both_sides() {
    // SQLite changes a WAL database's page size only outside WAL mode,
    // which it refuses while another connection (the watcher's) reads:
    // the application stops the watcher, changes it, starts it again.
    let s = setup();
    let repo = open_repo(&s.repo);
    let page_size = |conn: &Connection| -> u32 {
        conn.query_row("PRAGMA page_size", [], |r| r.get(0))
            .expect("page_size")
    };
    watch_while_writing(&repo, &s.db, 10);
    let conn = Connection::open(&s.db).expect("open");
    let (small, small_state) = (page_size(&conn), state(&conn));
    for (pragma, want) in [
        ("PRAGMA journal_mode=DELETE", "delete"),
        ("PRAGMA page_size=8192", ""),
        ("VACUUM", ""),
        ("PRAGMA journal_mode=WAL", "wal"),
    ] {
        let got: Option<String> = conn
            .query_row(pragma, [], |r| r.get(0))
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })
            .expect(pragma);
        assert_eq!(got.unwrap_or_default(), want, "{pragma}");
    }
    assert_eq!(page_size(&conn), 8192);
    drop(conn);
    watch_while_writing(&repo, &s.db, 10);
    let conn = Connection::open(&s.db).expect("open");
    let large_state = state(&conn);
    assert_ne!(small, 8192);

    let (db, timeline) = timeline_of(&repo, &s.db);
    let sizes: Vec<u32> = timeline
        .chains
        .iter()
        .filter_map(|c| c.segments.first().map(|(_, seg)| seg.page_size))
        .collect();
    assert_eq!(sizes, vec![small, 8192], "one chain on each side");
    let restore = |point, name: &str| {
        let (_, conn) = restored(&repo, &db, point, &s.dir.join(name));
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("integrity_check");
        assert_eq!(check, "ok", "{name}");
        (page_size(&conn), state(&conn))
    };
    let last_small = timeline.chains[0].last_txn();
    assert_eq!(
        restore(cairn::PitrPoint::Txn(last_small), "small.db"),
        (small, small_state)
    );
    assert_eq!(
        restore(cairn::PitrPoint::Latest, "large.db"),
        (8192, large_state)
    );
    assert_verifies(&repo);
}

/// The notes a `cairn --json watch` child prints, gathered by a thread,
/// and whether its output has ended.
#[derive(Clone, Default)]
struct Notes {
    seen: Arc<Mutex<Vec<serde_json::Value>>>,
    ended: Arc<AtomicBool>,
}

impl Notes {
    fn follow(child: &mut Child) -> Self {
        use std::io::BufRead as _;
        let notes = Self::default();
        let out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let (seen, ended) = (Arc::clone(&notes.seen), Arc::clone(&notes.ended));
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str(&line) {
                    lock(&seen).push(v);
                }
            }
            ended.store(true, Ordering::SeqCst);
        });
        notes
    }

    fn all(&self) -> Vec<serde_json::Value> {
        lock(&self.seen).clone()
    }

    /// The notes of `event`.
    fn of(&self, event: &str) -> Vec<serde_json::Value> {
        self.all()
            .into_iter()
            .filter(|v| v["event"] == event)
            .collect()
    }

    fn ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }
}

#[test]
fn a_watcher_whose_storing_cannot_keep_up_lets_the_log_go_and_records_a_gap() {
    // A repository that takes 1 MiB/s beside a writer of incompressible
    // rows at full speed: the watcher holds at most about --max-memory of
    // pages, and once the application's log is --max-wal long it lets the
    // log go (the application's checkpoints restart it), ends the chain
    // where it stopped reading (a gap in the timeline) and takes a new
    // base once what it read is stored. Before, it read up to 1 GiB into
    // memory, then held the log, which grew until the disk was full.
    const MEMORY: u64 = 4 << 20;
    const WAL: u64 = 8 << 20;
    let s = setup();
    let conn = Connection::open(&s.db).expect("open");
    let mut rng = Rng::seeded(14);
    conn.execute_batch("BEGIN").expect("begin");
    for k in 1..=200 {
        conn.execute(
            "INSERT INTO t(k, v, n) VALUES (?1, ?2, 0)",
            rusqlite::params![k, rng.bytes(3000)],
        )
        .expect("insert");
    }
    conn.execute_batch("COMMIT").expect("commit");
    let mut child = cairn(&s.repo, &s.home)
        .args(["--json", "--limit-upload", "1024", "watch", "--poll", "2ms"])
        .args([
            "--lag",
            "100ms",
            "--max-memory",
            "4MiB",
            "--max-wal",
            "8MiB",
        ])
        .arg(&s.db)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start cairn watch");
    let notes = Notes::follow(&mut child);
    wait_until(PATIENCE, "the watcher's first base", || {
        !notes.of("base").is_empty() || notes.ended()
    });
    assert!(!notes.ended(), "the watcher ended before its base");

    let wal = s.dir.join("app.db-wal");
    let wal_peak = std::cell::Cell::new(0u64);
    let mut commit = |conn: &Connection, i: &mut i64| {
        *i += 1;
        conn.execute(
            "UPDATE t SET v = ?1, n = n + 1 WHERE k = ?2",
            rusqlite::params![rng.bytes(3000), 1 + *i % 200],
        )
        .expect("update");
        if *i % 20 == 0 {
            let len = std::fs::metadata(&wal).map_or(0, |m| m.len());
            wal_peak.set(wal_peak.get().max(len));
        }
    };
    let fell_behind = |notes: &Notes| {
        notes.of("chain-end").iter().any(|v| {
            v["reason"]
                .as_str()
                .is_some_and(|r| r.contains("fell behind"))
        })
    };
    // At full speed until the watcher lets go; the -wal must not grow far
    // past --max-wal meanwhile (before, it grew without end).
    let mut i = 0i64;
    let deadline = Deadline::new(PATIENCE, "the watcher to let the log go");
    while !fell_behind(&notes) {
        deadline.check();
        assert!(!notes.ended(), "the watcher ended");
        commit(&conn, &mut i);
        if i % 20 == 0 {
            let wal_peak = wal_peak.get();
            assert!(
                wal_peak <= 4 * WAL,
                "the -wal grew to {wal_peak} bytes: the watcher held the log"
            );
        }
    }
    let let_go = Timestamp::now();
    // Then slowly, within what the repository takes, until the watcher has
    // started again from a new base.
    let bases = notes.of("base").len();
    let deadline = Deadline::new(PATIENCE, "a new base after the gap");
    while notes.of("base").len() == bases {
        deadline.check();
        assert!(!notes.ended(), "the watcher ended");
        commit(&conn, &mut i);
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..20 {
        commit(&conn, &mut i);
        std::thread::sleep(Duration::from_millis(20));
    }
    let want = state(&conn);
    let wal_peak = wal_peak.get();
    std::thread::sleep(Duration::from_millis(1500));
    stop_watcher(child);
    wait_until(PATIENCE, "the watcher's last notes", || notes.ended());

    let peak = notes
        .of("segment")
        .iter()
        .filter_map(|v| v["peak_memory"].as_u64())
        .max()
        .expect("segments with their peak memory");
    eprintln!(
        "storing behind: {i} commits, peak memory {peak} bytes, largest -wal {wal_peak} bytes"
    );
    // Past the limit by at most what comes during one restart of the log.
    assert!(peak <= 2 * MEMORY, "{peak} bytes of pages held in memory");
    assert!(
        wal_peak <= 2 * WAL,
        "the -wal grew to {wal_peak} bytes past --max-wal"
    );

    // The gap is in the timeline, with its reason; a restore to a moment in
    // it says so, and the newest state was stored whole after it.
    let timeline = json_of(&run(cairn(&s.repo, &s.home)
        .args(["--json", "db", "timeline"])
        .arg(&s.db)));
    let gap = timeline[0]["gaps"]
        .as_array()
        .expect("gaps")
        .iter()
        .find(|g| {
            g["reason"]
                .as_str()
                .is_some_and(|r| r.contains("fell behind"))
        })
        .unwrap_or_else(|| panic!("no gap for the watcher falling behind: {timeline}"))
        .clone();
    let time =
        |v: &serde_json::Value| -> Timestamp { v.as_str().expect("time").parse().expect("time") };
    let (from, to) = (time(&gap["from"]), time(&gap["to"]));
    assert!(from <= let_go, "the gap starts before the watcher let go");
    let middle =
        Timestamp::from_nanosecond((from.as_nanosecond() + to.as_nanosecond()) / 2).expect("time");
    let (_, v) = restore_at(&s.repo, &s.home, &s.db, middle, &s.dir.join("gap.db"));
    assert!(!v["gap"].is_null(), "{middle} lies in the gap: {v}");
    let (got, v) = restore_at(
        &s.repo,
        &s.home,
        &s.db,
        Timestamp::now(),
        &s.dir.join("latest.db"),
    );
    assert_eq!(got, want, "{v}");
    assert_verifies(&open_repo(&s.repo));
}
