//! What following a database with `cairn watch`'s capture costs the
//! application (issue 10: writer throughput at most 5% lower, no commit
//! held back more than 100 ms).
//!
//! `cargo bench --bench watch_overhead -- [SECONDS] [RATE] [DIR]`
//!
//! Runs the same writer twice in a child process, for SECONDS each (default
//! 20): alone, then with a follower polling every 2 ms in this process and
//! restarting the log every 4 MiB. The writer commits one row of 1 KiB of
//! random text per transaction, RATE commits a second (default 0: as fast
//! as it can), with the settings web
//! applications use (`journal_mode=WAL`, `synchronous=NORMAL`, automatic
//! checkpoints at SQLite's default). It prints commits per second and the
//! median, 99th percentile and longest commit. Only the capture is
//! measured here: storing what is captured is the repository's cost.

#![allow(
    clippy::panic,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    missing_docs
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cairn::internals::{Follower, WatchEvent};
use rusqlite::Connection;

/// The child: commits for `seconds`, `rate` a second (0: no pause), and
/// prints "commits p50_us p99_us max_us".
fn writer(db: &Path, seconds: u64, rate: u64) {
    let conn = Connection::open(db).expect("open");
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
        .expect("pragmas");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut latencies = Vec::new();
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    while Instant::now() < end {
        if rate > 0 {
            let due = start + Duration::from_secs_f64(latencies.len() as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let row: String = (0..1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'a' + u8::try_from(x % 26).expect("letter"))
            })
            .collect();
        let started = Instant::now();
        conn.execute("INSERT INTO t(v) VALUES (?1)", [&row])
            .expect("insert");
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 - 1.0) * q) as usize;
        latencies[i].as_micros()
    };
    println!(
        "{} {} {} {}",
        latencies.len(),
        at(0.5),
        at(0.99),
        latencies.last().map_or(0, Duration::as_micros)
    );
}

fn fresh_db(dir: &Path, name: &str) -> PathBuf {
    let db = dir.join(name);
    let conn = Connection::open(&db).expect("create");
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT);
         INSERT INTO t(v) VALUES ('first');",
    )
    .expect("schema");
    db
}

fn run(db: &Path, seconds: u64, rate: u64, watch: bool) -> (f64, u128, u128, u128, u64) {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .arg("--writer")
        .arg(db)
        .arg(seconds.to_string())
        .arg(rate.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn writer");
    let mut commits_seen = 0u64;
    if watch {
        let (mut follower, _base) = Follower::start(db, 4 << 20).expect("start");
        while child.try_wait().expect("wait").is_none() {
            for event in follower.poll().expect("poll") {
                match event {
                    WatchEvent::Commit(_) => commits_seen += 1,
                    WatchEvent::Lost(why) => panic!("lost: {why}"),
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        for event in follower.poll().expect("poll") {
            if let WatchEvent::Commit(_) = event {
                commits_seen += 1;
            }
        }
    }
    let out = child.wait_with_output().expect("writer output");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<u128> = text
        .split_whitespace()
        .map(|w| w.parse().expect("number"))
        .collect();
    let per_sec = v[0] as f64 / seconds as f64;
    (per_sec, v[1], v[2], v[3], commits_seen)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("--writer") {
        writer(
            Path::new(&args[1]),
            args[2].parse().expect("seconds"),
            args[3].parse().expect("rate"),
        );
        return;
    }
    let seconds: u64 = args.first().map_or(20, |s| s.parse().expect("SECONDS"));
    let tmp;
    let rate: u64 = args.get(1).map_or(0, |s| s.parse().expect("RATE"));
    let dir = match args.get(2) {
        Some(d) => PathBuf::from(d),
        None => {
            tmp = tempfile::tempdir().expect("tempdir");
            tmp.path().to_path_buf()
        }
    };
    let alone = run(&fresh_db(&dir, "alone.db"), seconds, rate, false);
    let watched = run(&fresh_db(&dir, "watched.db"), seconds, rate, true);
    let pace = if rate == 0 {
        "as fast as it can".to_owned()
    } else {
        format!("{rate} a second")
    };
    println!("writer for {seconds} s, one 1 KiB row per commit, {pace}, synchronous=NORMAL");
    println!("| | commits/s | p50 | p99 | longest commit |");
    println!("|---|---:|---:|---:|---:|");
    for (name, r) in [("alone", alone), ("watched", watched)] {
        println!(
            "| {name} | {:.0} | {} µs | {} µs | {:.1} ms |",
            r.0,
            r.1,
            r.2,
            r.3 as f64 / 1000.0
        );
    }
    println!(
        "throughput watched/alone: {:.3}; commits the follower read: {} of {}",
        watched.0 / alone.0,
        watched.4,
        (watched.0 * seconds as f64).round()
    );
}
