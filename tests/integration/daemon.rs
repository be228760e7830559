//! `cairn daemon` as a service runs it: the real binary, a small
//! application with a `[[jobs]]` profile, SIGTERM to stop it. Intervals
//! are one second and bounds generous, so the tests do not depend on how
//! fast the machine is; the state file's run history is the oracle for
//! counts, overlap and catch-up.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde_json::Value;

use super::util::{Dir, json_of, posix_locks, run, stderr};

/// A small application: `data/` (a files component) and `slow` (a dump
/// command that takes two seconds), with the jobs given.
struct App {
    dir: Dir,
}

/// A running daemon and the JSON lines it logged so far.
struct Daemon {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl App {
    fn new(jobs: &str) -> Self {
        let dir = Dir::new();
        let app = Self { dir };
        fs::create_dir_all(app.root().join("data")).expect("mkdir");
        fs::write(app.root().join("data/a.txt"), b"hello").expect("write");
        fs::write(
            app.root().join("cairn.toml"),
            format!(
                "app = \"svc\"\nrepo = \"../repo\"\n\n[components.data]\npaths = [\"data\"]\n\n\
                 [components.slow]\ndump = [\"sh\", \"-c\", \"sleep 2; echo dump\"]\n\n\
                 [retention]\nkeep_last = 1000\n\n{jobs}"
            ),
        )
        .expect("profile");
        let o = run(app.cairn().args(["init", "--kdf-memory", "19"]));
        assert!(o.status.success(), "init: {}", stderr(&o));
        app
    }

    fn root(&self) -> PathBuf {
        self.dir.join("app")
    }

    /// `cairn` in the application's directory; its repository comes from
    /// the profile.
    fn cairn(&self) -> Command {
        let mut c = super::util::cairn(&self.dir.join("repo"), self.dir.path());
        c.current_dir(self.root())
            .env_remove("CAIRN_REPO")
            .env("CAIRN_CACHE_DIR", self.dir.join("cache"));
        c
    }

    fn daemon(&self, args: &[&str]) -> Daemon {
        let mut child = self
            .cairn()
            .args(["daemon", "--json"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the daemon");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let pipe = child.stderr.take().expect("stderr");
        let seen = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("daemon: {line}");
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    seen.lock().expect("lines").push(v);
                }
            }
        });
        Daemon { child, lines }
    }

    /// `cairn daemon --once`: its exit status and JSON lines.
    fn once(&self) -> (bool, Vec<Value>) {
        let o = run(self.cairn().args(["daemon", "--once", "--json"]));
        let lines = String::from_utf8_lossy(&o.stderr)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (o.status.success(), lines)
    }

    fn state_path(&self) -> PathBuf {
        let dir = self.dir.join("cache/daemon");
        let files: Vec<PathBuf> = fs::read_dir(&dir)
            .expect("state dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        assert_eq!(files.len(), 1, "one state file: {files:?}");
        files.into_iter().next().expect("state")
    }

    fn state(&self) -> Value {
        serde_json::from_slice(&fs::read(self.state_path()).expect("read state")).expect("json")
    }

    /// The runs the state file recorded.
    fn history(&self) -> Vec<Value> {
        self.state()["history"].as_array().expect("history").clone()
    }

    fn snapshots(&self) -> usize {
        json_of(&run(self.cairn().args(["snapshots", "--json"])))
            .as_array()
            .expect("list")
            .len()
    }

    /// `cairn db timeline --json` of the application's database.
    fn timeline(&self) -> Value {
        json_of(&run(self.cairn().args([
            "--json",
            "db",
            "timeline",
            "db/app.db",
        ])))
    }

    fn verify(&self) {
        let o = run(self.cairn().args(["verify", "--read-data"]));
        assert!(o.status.success(), "verify: {}", stderr(&o));
    }
}

impl Daemon {
    fn events(&self, kind: &str, job: &str) -> usize {
        self.lines
            .lock()
            .expect("lines")
            .iter()
            .filter(|v| v["event"] == kind && (v["job"] == job || v["run"]["job"] == job))
            .count()
    }

    /// Waits (at most a minute) until `cond` holds.
    fn wait_for(&self, what: &str, cond: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cond(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn sigterm(&self) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("kill");
    }

    /// Waits for the daemon to exit (at most a minute) and says whether it
    /// succeeded.
    fn wait(mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the daemon did not stop within a minute of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn time(v: &Value) -> Timestamp {
    v.as_str().expect("time").parse().expect("timestamp")
}

/// Asserts that no two recorded runs overlap: sorted by start, each starts
/// at or after the previous one ended.
fn assert_no_overlap(history: &[Value]) {
    let mut runs: Vec<(Timestamp, Timestamp, String)> = history
        .iter()
        .map(|r| {
            (
                time(&r["start"]),
                time(&r["end"]),
                r["job"].as_str().expect("job").to_owned(),
            )
        })
        .collect();
    runs.sort();
    for pair in runs.windows(2) {
        let [(_, end, a), (start, _, b)] = pair else {
            unreachable!()
        };
        assert!(
            start >= end,
            "run of {b} started at {start} before the run of {a} ended at {end}"
        );
    }
}

fn ok(history: &[Value]) {
    for r in history {
        assert_eq!(r["ok"], true, "run failed: {r}");
    }
}

#[test]
fn daemon_runs_an_interval_job_repeatedly_and_exits_0_on_sigterm() {
    let app = App::new("[[jobs]]\nname = \"often\"\nevery = \"1s\"\ncomponents = [\"data\"]\n");
    let d = app.daemon(&[]);
    std::thread::sleep(Duration::from_secs(4));
    d.sigterm();
    assert!(d.wait(), "exit code 0 after SIGTERM");
    let history = app.history();
    // About one run a second for four seconds; generous bounds.
    assert!(
        (2..=8).contains(&history.len()),
        "{} runs in 4 s with every = 1s",
        history.len()
    );
    ok(&history);
    assert_no_overlap(&history);
    assert_eq!(app.snapshots(), history.len(), "one snapshot per run");
    assert_eq!(
        app.state()["jobs"]["often"]["runs"].as_u64(),
        Some(history.len() as u64)
    );
    app.verify();
}

#[test]
fn daemon_never_overlaps_runs_of_a_profile_and_finishes_the_current_one_on_sigterm() {
    // A two-second job every second and a quick one every second: due
    // times pile up behind the slow run and must be served one at a time,
    // also across two daemons running the same profile.
    let app = App::new(
        "[[jobs]]\nname = \"slow\"\nevery = \"1s\"\ncomponents = [\"slow\"]\n\n\
         [[jobs]]\nname = \"quick\"\nevery = \"1s\"\ncomponents = [\"data\"]\nforget = true\nprune = true\nverify = \"*/2\"\n",
    );
    let first = app.daemon(&[]);
    let second = app.daemon(&[]);
    // Either daemon may win the profile's lock for any run.
    let count = |kind: &str, job: &str| first.events(kind, job) + second.events(kind, job);
    // SIGTERM both while a run of the slow job is in progress (the second
    // slow run: due times have piled up behind the first by then).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(count("start", "slow") >= 2 && count("end", "slow") + 1 == count("start", "slow")) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for a second slow run"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let signalled = Timestamp::now();
    first.sigterm();
    second.sigterm();
    let slow_runs = count("start", "slow");
    assert!(first.wait(), "first daemon: exit code 0 after SIGTERM");
    assert!(second.wait(), "second daemon: exit code 0 after SIGTERM");
    let history = app.history();
    ok(&history);
    assert_no_overlap(&history);
    // The run SIGTERM interrupted was finished and recorded, not cut short.
    let last_slow = history
        .iter()
        .filter(|r| r["job"] == "slow")
        .max_by_key(|r| time(&r["start"]))
        .expect("slow runs");
    assert!(
        time(&last_slow["end"]) > signalled,
        "the slow run in progress at SIGTERM ended after it: {last_slow}"
    );
    assert!(slow_runs >= 2);
    assert!(
        history.iter().any(|r| r["missed"].as_u64() > Some(1)),
        "occurrences that passed during other runs were coalesced"
    );
    assert_eq!(
        app.snapshots(),
        history.len(),
        "forget keeps them all (keep_last = 1000)"
    );
    app.verify();
}

#[test]
fn daemon_catches_up_missed_runs_once_after_a_restart() {
    // A cron job that occurs only on 29 February at 03:00 UTC, and an
    // hourly one: neither would fall due during the test on its own.
    let app = App::new(
        "[[jobs]]\nname = \"leap\"\ncron = \"0 3 29 2 *\"\ntimezone = \"UTC\"\ncomponents = [\"data\"]\n\n\
         [[jobs]]\nname = \"hourly\"\nevery = \"1h\"\ncomponents = [\"data\"]\n",
    );
    // First start: a new interval job runs at once; a new cron job waits
    // for its next occurrence.
    let (success, lines) = app.once();
    assert!(success);
    let history = app.history();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0]["job"], "hourly");
    assert_eq!(history[0]["catch_up"], false);
    assert!(lines.iter().any(|l| l["event"] == "end"));
    // Nothing is due right after.
    let (success, _) = app.once();
    assert!(success);
    assert_eq!(app.history().len(), 1, "nothing due: no run");
    // The daemon was "down" since 2020 for the leap job (two 29 Februaries
    // passed: 2020 and 2024) and five hours for the hourly one.
    let mut state = app.state();
    state["jobs"]["leap"]["since"] = "2020-01-01T00:00:00Z".into();
    let five_hours_ago = Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_hours(5))
        .expect("time");
    state["jobs"]["hourly"]["last_start"] = five_hours_ago.to_string().into();
    fs::write(
        app.state_path(),
        serde_json::to_vec_pretty(&state).expect("json"),
    )
    .expect("write state");
    // Restart as a daemon: each job is caught up exactly once, then
    // nothing more happens while it waits for the next occurrences.
    let d = app.daemon(&[]);
    d.wait_for("both catch-up runs", |d| {
        d.events("end", "leap") >= 1 && d.events("end", "hourly") >= 1
    });
    std::thread::sleep(Duration::from_secs(2));
    d.sigterm();
    assert!(d.wait());
    let history = app.history();
    ok(&history);
    let runs = |job: &str| -> Vec<Value> {
        history
            .iter()
            .filter(|r| r["job"] == job)
            .cloned()
            .collect()
    };
    let leap = runs("leap");
    assert_eq!(
        leap.len(),
        1,
        "one catch-up run, not one per missed occurrence"
    );
    assert_eq!(leap[0]["catch_up"], true);
    assert_eq!(leap[0]["missed"], 2, "2020-02-29 and 2024-02-29");
    let hourly = runs("hourly");
    assert_eq!(hourly.len(), 2, "the first run, and one catch-up");
    assert_eq!(hourly[1]["catch_up"], true);
    assert_eq!(hourly[1]["missed"], 5);
    assert_no_overlap(&history);
    // Caught up: a --once now has nothing to do.
    let (success, _) = app.once();
    assert!(success);
    assert_eq!(app.history().len(), 3);
    assert_eq!(app.snapshots(), 3);
    app.verify();
}

#[test]
fn daemon_once_records_a_failing_run_and_exits_1() {
    let app = App::new(
        "[components.broken]\ndump = [\"sh\", \"-c\", \"echo no database >&2; exit 3\"]\n\n\
         [[jobs]]\nname = \"bad\"\nevery = \"1h\"\ncomponents = [\"broken\"]\n",
    );
    // The failure is also an alert, through --notify-command.
    let alert = app.dir.join("alert.json");
    let o = run(app
        .cairn()
        .args(["daemon", "--once", "--json", "--notify-command"])
        .arg(format!("cat > '{}'", alert.display())));
    let success = o.status.success();
    let lines: Vec<Value> = String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(!success, "a failed run makes --once exit non-zero");
    let sent: Value = serde_json::from_slice(&fs::read(&alert).expect("alert sent")).expect("json");
    assert_eq!(sent["kind"], "failure", "{sent}");
    assert_eq!(sent["component"], "broken", "{sent}");
    assert!(
        sent["error"]
            .as_str()
            .unwrap_or_default()
            .contains("no database"),
        "{sent}"
    );
    let end = lines
        .iter()
        .find(|l| l["event"] == "end")
        .expect("an end line");
    assert_eq!(end["run"]["ok"], false);
    let history = app.history();
    assert_eq!(history.len(), 1);
    let error = history[0]["error"].as_str().expect("error");
    assert!(error.contains("no database"), "{error}");
    // The failure counts as the job's run: it is not retried in a loop.
    let (success, _) = app.once();
    assert!(success, "nothing due");
    assert_eq!(app.history().len(), 1);
}

#[test]
fn daemon_refuses_a_profile_without_jobs_or_with_bad_ones() {
    let app = App::new("");
    let o = run(app.cairn().arg("daemon"));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("has no [[jobs]]"), "{}", stderr(&o));
    let bad: &Path = &app.root().join("cairn.toml");
    let text = fs::read_to_string(bad).expect("read");
    fs::write(
        bad,
        format!("{text}[[jobs]]\nname = \"n\"\ncron = \"0 25 * * *\"\n"),
    )
    .expect("write");
    let o = run(app.cairn().arg("daemon"));
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("cairn.toml") && e.contains("job n: cron '0 25 * * *'"),
        "{e}"
    );
    // The profile is checked once, when read, the same way for every
    // command: a tag the API refuses, a negative count.
    for (extra, what) in [
        (
            "[[jobs]]\nname = \"t\"\nevery = \"1h\"\ntags = [\"a,b\"]\n",
            "tag 'a,b'",
        ),
        ("", "keep last -3"),
    ] {
        let text = text.replace(
            "keep_last = 1000",
            if extra.is_empty() {
                "keep_last = -3"
            } else {
                "keep_last = 1000"
            },
        );
        fs::write(bad, format!("{text}{extra}")).expect("write");
        for args in [&["daemon"][..], &["snap"]] {
            let o = run(app.cairn().args(args));
            assert_eq!(o.status.code(), Some(1), "{args:?} with {what}");
            assert!(stderr(&o).contains(what), "{args:?}: {}", stderr(&o));
        }
    }
}

#[test]
fn daemon_runs_several_profiles_at_once_each_into_its_own_repository() {
    let jobs = "[[jobs]]\nname = \"slow\"\nevery = \"1h\"\ncomponents = [\"slow\"]\n";
    let a = App::new(jobs);
    let b = App::new(jobs);
    let o = run(a
        .cairn()
        .args(["daemon", "--once", "--json"])
        .arg(a.root().join("cairn.toml"))
        .arg(b.root().join("cairn.toml")));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(a.snapshots(), 1, "a's run went to a's repository");
    assert_eq!(b.snapshots(), 1, "b's run went to b's repository");
    let runs: Vec<Value> = stderr(&o)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["event"] == "end")
        .map(|l| l["run"].clone())
        .collect();
    assert_eq!(runs.len(), 2);
    // Two-second runs started together: the profiles did not wait for
    // each other.
    let latest_start = runs.iter().map(|r| time(&r["start"])).max();
    let earliest_end = runs.iter().map(|r| time(&r["end"])).min();
    assert!(latest_start < earliest_end, "{runs:?}");
}

/// An application whose `db` component, a WAL-mode database with a table
/// `t(v)`, is watched (`[watch]`), with `jobs` besides; and the
/// application's connection to it.
fn watched_app(jobs: &str) -> (App, rusqlite::Connection) {
    let app = App::new(&format!(
        "[components.db]\nsqlite = \"db/app.db\"\n\n[watch]\nlag = \"200ms\"\n\n{jobs}"
    ));
    fs::create_dir_all(app.root().join("db")).expect("mkdir");
    let conn = rusqlite::Connection::open(app.root().join("db/app.db")).expect("open");
    conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(v TEXT);")
        .expect("create");
    (app, conn)
}

#[test]
fn daemon_runs_the_watchers_of_a_profile_without_jobs() {
    let (app, conn) = watched_app("");
    let d = app.daemon(&[]);
    d.wait_for("the watcher's base", |d| {
        d.lines
            .lock()
            .expect("lines")
            .iter()
            .any(|v| v["event"] == "watch" && v["watch"] == "base")
    });
    for i in 0..5 {
        conn.execute("INSERT INTO t VALUES (?1)", [i])
            .expect("insert");
    }
    d.wait_for("a segment with the commits", |d| {
        d.lines
            .lock()
            .expect("lines")
            .iter()
            .any(|v| v["watch"] == "segment" && v["txns"].as_u64().is_some_and(|n| n > 0))
    });
    d.sigterm();
    assert!(d.wait(), "exit code 0 after SIGTERM");
    let timeline = app.timeline();
    let chain = &timeline[0]["chains"][0];
    assert_eq!(chain["last_txn"], 5, "{timeline}");
    assert_eq!(chain["end"], "the watcher was stopped");
    app.verify();
}

/// The processes `pid` and its descendants, from /proc.
fn process_tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while let Some(&p) = all.get(i) {
        i += 1;
        let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.map_while(Result::ok) {
            let children = fs::read_to_string(t.path().join("children")).unwrap_or_default();
            all.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    all
}

#[test]
fn a_snapshot_job_of_a_watched_database_leaves_the_watcher_its_lock() {
    // The watcher's SQLite connections hold a shared POSIX lock on the
    // database so that the application's last connection to close does not
    // delete -wal and -shm from under them. A snapshot job that opened and
    // closed the file in the watcher's process would drop that lock.
    use std::os::unix::fs::MetadataExt;
    let (app, conn) =
        watched_app("[[jobs]]\nname = \"db\"\nevery = \"1s\"\ncomponents = [\"db\"]\n");
    conn.execute("INSERT INTO t VALUES ('a')", [])
        .expect("insert");
    let db = app.root().join("db/app.db");
    let ino = fs::metadata(&db).expect("stat").ino();
    let d = app.daemon(&[]);
    d.wait_for("the watcher's base and two snapshot runs", |d| {
        let lines = d.lines.lock().expect("lines");
        lines.iter().any(|v| v["watch"] == "base")
            && lines.iter().filter(|v| v["event"] == "end").count() >= 2
    });
    let held = posix_locks(&process_tree(d.child.id()), ino);
    d.sigterm();
    assert!(d.wait(), "exit code 0 after SIGTERM");
    assert!(
        held > 0,
        "after a snapshot job the watcher holds no lock on the database"
    );
    app.verify();
}

/// True while process `pid` runs (not a zombie waiting to be reaped).
fn running(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().to_owned()))
        .is_some_and(|r| !r.starts_with('Z') && !r.starts_with('X'))
}

#[test]
fn the_watcher_of_a_killed_daemon_stores_what_it_read_and_stops() {
    let (app, conn) = watched_app("");
    let mut d = app.daemon(&[]);
    d.wait_for("the watcher's base", |d| {
        d.lines
            .lock()
            .expect("lines")
            .iter()
            .any(|v| v["watch"] == "base")
    });
    conn.execute("INSERT INTO t VALUES ('a')", [])
        .expect("insert");
    let watchers: Vec<u32> = process_tree(d.child.id())
        .into_iter()
        .filter(|&p| p != d.child.id())
        .collect();
    assert!(
        !watchers.is_empty(),
        "the watcher runs in a process of its own"
    );
    d.child.kill().expect("SIGKILL the daemon");
    let _ = d.child.wait();
    let deadline = Instant::now() + Duration::from_secs(60);
    while watchers.iter().any(|&p| running(p)) {
        assert!(Instant::now() < deadline, "the watcher outlived its daemon");
        std::thread::sleep(Duration::from_millis(50));
    }
    let timeline = app.timeline();
    let chain = &timeline[0]["chains"][0];
    assert_eq!(
        chain["last_txn"], 1,
        "the commit read was stored: {timeline}"
    );
    assert_eq!(chain["end"], "the watcher was stopped");
    app.verify();
}
