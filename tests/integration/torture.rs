//! Concurrency torture: backups, forgets and prunes from separate processes
//! against one repository, some killed with SIGKILL at random moments.
//! Every snapshot that reported success and was not forgotten must restore
//! byte for byte, and verify must find nothing wrong.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::util::{Dir, Rng, cairn, open_repo, run};

const ROUNDS: usize = 50;
const SOURCES: usize = 3;
/// No process may take longer than this: the locks must never make one
/// wait forever.
const DEADLINE: Duration = Duration::from_secs(120);

/// A source directory's files and contents at one moment.
type State = BTreeMap<String, Vec<u8>>;

fn change(src: &Path, rng: &mut Rng, round: usize) -> State {
    for i in 0..6 {
        let f = src.join(format!("f{i}"));
        if round == 0 || rng.next().is_multiple_of(3) {
            let len = 100 + (rng.next() % 60_000) as usize;
            fs::write(&f, rng.bytes(len)).expect("write source");
        }
    }
    fs::write(src.join(format!("r{round}")), rng.bytes(3000)).expect("write source");
    if round > 0 {
        let _ = fs::remove_file(src.join(format!("r{}", round - 1)));
    }
    fs::read_dir(src)
        .expect("list source")
        .map(|e| {
            let e = e.expect("entry");
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).expect("read source"),
            )
        })
        .collect()
}

fn read_tree(dir: &Path) -> State {
    fs::read_dir(dir)
        .expect("list restore")
        .map(|e| {
            let e = e.expect("entry");
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).expect("read restore"),
            )
        })
        .collect()
}

enum Job {
    Backup(usize),
    Forget,
    Prune,
}

/// Waits for `child`, failing the test if it outlives [`DEADLINE`].
fn finish(mut child: Child, what: &str) -> std::process::Output {
    let start = Instant::now();
    loop {
        if child.try_wait().expect("poll child").is_some() {
            return child.wait_with_output().expect("collect child");
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("{what} ran longer than {DEADLINE:?}: a lock was waited on forever?");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn backups_forgets_and_prunes_racing_and_killed_never_lose_a_snapshot() {
    let d = Dir::new();
    let repo = d.join("repo");
    let home = d.join("home");
    assert!(
        run(cairn(&repo, &home).args(["init", "--kdf-memory", "19"]))
            .status
            .success()
    );
    let sources: Vec<PathBuf> = (0..SOURCES).map(|i| d.join(&format!("src{i}"))).collect();
    for s in &sources {
        fs::create_dir_all(s).expect("mkdir");
    }
    let mut rng = Rng::seeded(0x5eed);
    // Snapshot id -> (source, content it must restore to).
    let mut expected: BTreeMap<String, (usize, State)> = BTreeMap::new();
    let mut killed = 0;
    for round in 0..ROUNDS {
        let states: Vec<State> = sources.iter().map(|s| change(s, &mut rng, round)).collect();
        let mut jobs: Vec<Job> = (0..SOURCES).map(Job::Backup).collect();
        if round % 2 == 1 {
            jobs.push(Job::Forget);
        }
        if round % 3 == 2 {
            jobs.push(Job::Prune);
        }
        let children: Vec<(Job, Child)> = jobs
            .into_iter()
            .map(|job| {
                let mut c: Command = cairn(&repo, &home);
                c.args(["--retry-lock", "60s", "--json"]);
                match &job {
                    Job::Backup(i) => c.arg("backup").arg(&sources[*i]),
                    Job::Forget => c.args(["forget", "--keep-last", "2"]),
                    Job::Prune => c.args(["prune", "--max-unused", "0%"]),
                };
                c.stdout(Stdio::piped()).stderr(Stdio::piped());
                let child = c.spawn().expect("spawn cairn");
                (job, child)
            })
            .collect();
        // Kill one process in three, at a random moment of its run.
        let mut outputs = Vec::new();
        for (job, mut child) in children {
            if rng.next().is_multiple_of(3) {
                std::thread::sleep(Duration::from_millis(rng.next() % 150));
                let _ = child.kill();
                let _ = child.wait();
                killed += 1;
                continue;
            }
            outputs.push((job, child));
        }
        for (job, child) in outputs {
            let out = finish(child, "a cairn process");
            let stderr = String::from_utf8_lossy(&out.stderr);
            match job {
                Job::Backup(i) => {
                    assert!(out.status.success(), "backup failed: {stderr}");
                    let v: serde_json::Value =
                        serde_json::from_slice(&out.stdout).expect("backup json");
                    let id = v["id"].as_str().expect("snapshot id").to_owned();
                    expected.insert(id, (i, states[i].clone()));
                }
                Job::Forget | Job::Prune => {
                    assert!(out.status.success(), "forget/prune failed: {stderr}");
                }
            }
        }
    }
    assert!(killed > 0, "the test must kill some processes");

    // Every snapshot still listed restores to what its source held.
    let repository = open_repo(&repo);
    let listed = repository.snapshots().expect("list snapshots");
    assert!(!listed.is_empty());
    for (id, snap) in listed {
        let snap = snap.expect("snapshot readable");
        let Some((src, state)) = expected.get(&id.to_hex()) else {
            // From a backup that was killed after writing its snapshot.
            continue;
        };
        let out = d.join(&format!("restore-{}", id.short()));
        let r = cairn::restore(
            &repository,
            &snap,
            &cairn::RestoreOptions::new(&out),
            &cairn::NoProgress,
        )
        .expect("restore");
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        let back = out.join(sources[*src].strip_prefix("/").expect("abs"));
        assert!(
            read_tree(&back) == *state,
            "snapshot {id} does not restore to its source"
        );
    }
    // Killed processes left only what the next prune removes.
    assert!(
        run(cairn(&repo, &home).args(["prune", "--max-unused", "0%"]))
            .status
            .success()
    );
    super::util::assert_verifies(&repository);
}
