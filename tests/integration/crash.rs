//! Crash safety: `cairn backup` killed with SIGKILL at random moments leaves
//! a repository that passes `verify --read-data`, and the next backup
//! succeeds and restores exactly, on a local repository and on one in the S3
//! test cluster.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use super::util::{Dir, Rng, Store, cairn, on_each_store, repo_location, run};

fn rewrite_some(src: &Path, rng: &mut Rng, count: usize) {
    for _ in 0..count {
        let i = rng.next() % 40;
        let len = 200_000 + (rng.next() % 600_000) as usize;
        fs::write(src.join(format!("f{i}.bin")), rng.bytes(len)).expect("write");
    }
}

on_each_store!(backup_killed_at_random_moments_leaves_a_valid_repository);

fn backup_killed_at_random_moments_leaves_a_valid_repository(store: Store) {
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    eprintln!("crash test seed: {seed}");
    let mut rng = Rng(seed);
    let d = Dir::new();
    let repo = repo_location(store, &d, "repo");
    let src = d.join("src");
    fs::create_dir(&src).expect("mkdir");
    for i in 0..40 {
        fs::write(src.join(format!("f{i}.bin")), rng.bytes(400_000)).expect("write");
    }
    for i in 0..300 {
        fs::write(src.join(format!("s{i}.txt")), format!("{i}\n").repeat(i)).expect("write");
    }
    assert!(run(cairn(&repo, d.path()).arg("init")).status.success());

    assert!(
        run(cairn(&repo, d.path()).arg("backup").arg(&src))
            .status
            .success()
    );
    // Kills are aimed across the duration of the last uninterrupted backup
    // of a similar change; start with a guess.
    let mut window = Duration::from_millis(300);

    let mut killed = 0;
    for round in 0..20 {
        rewrite_some(&src, &mut rng, 12);
        let mut child = cairn(&repo, d.path())
            .arg("backup")
            .arg(&src)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let delay = window.mul_f64((rng.next() % 1000) as f64 / 1000.0);
        std::thread::sleep(delay);
        if child.try_wait().expect("try_wait").is_none() {
            killed += 1;
        }
        child.kill().ok(); // SIGKILL
        child.wait().expect("wait");

        let o = run(cairn(&repo, d.path()).args(["verify", "--read-data"]));
        assert!(
            o.status.success(),
            "round {round}: verify failed after SIGKILL at {delay:?}"
        );
        rewrite_some(&src, &mut rng, 12);
        let started = Instant::now();
        let o = run(cairn(&repo, d.path()).arg("backup").arg(&src));
        window = started.elapsed();
        assert!(o.status.success(), "round {round}: the next backup failed");
    }
    assert!(
        killed >= 10,
        "only {killed} of 20 backups were killed while running"
    );

    // The last snapshot restores exactly.
    let out = d.join("out");
    assert!(
        run(cairn(&repo, d.path())
            .args(["restore", "latest", "--target"])
            .arg(&out))
        .status
        .success()
    );
    let restored = out.join(src.strip_prefix("/").expect("abs"));
    for e in fs::read_dir(&src).expect("src") {
        let p = e.expect("e").path();
        let name = p.file_name().expect("name");
        assert_eq!(
            fs::read(&p).expect("src"),
            fs::read(restored.join(name)).expect("restored"),
            "{name:?}"
        );
    }
}
