//! Snapshot lifecycle through the CLI: recorded times, point-in-time
//! selection, locks and prune.

use std::fs;
use std::path::Path;

use super::util::{
    Dir, cairn, copy_tree, files_under, json_of as json, open_repo, run, stderr, stdout,
};

fn ok(o: &std::process::Output) -> String {
    assert!(o.status.success(), "failed: {}", stderr(o));
    stdout(o)
}

#[test]
fn at_picks_the_newest_snapshot_per_source_at_or_before_a_time() {
    let d = Dir::new();
    let repo = d.join("repo");
    let home = d.join("home");
    let (one, two) = (d.join("one"), d.join("two"));
    fs::create_dir_all(&one).expect("mkdir");
    fs::create_dir_all(&two).expect("mkdir");
    ok(&run(cairn(&repo, &home).args([
        "init",
        "--kdf-memory",
        "19",
    ])));
    let backup_at = |src: &Path, content: &str, time: &str| {
        fs::write(src.join("v"), content).expect("write");
        ok(&run(cairn(&repo, &home)
            .args(["backup", "-q", "--time", time])
            .arg(src)));
    };
    backup_at(&one, "one at 10:00", "2026-01-01T10:00:00Z");
    backup_at(&one, "one next day", "2026-01-02T10:00:00Z");
    backup_at(&two, "two on the 2nd", "2026-01-02T11:00:00Z");
    backup_at(&one, "one on the 3rd", "2026-01-03T10:00:00Z");

    let listed = json(&run(cairn(&repo, &home).args([
        "snapshots",
        "--json",
        "--at",
        "2026-01-02T12:00:00Z",
    ])));
    let times: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|s| s["time"].as_str().expect("time"))
        .collect();
    assert_eq!(times, ["2026-01-02T10:00:00Z", "2026-01-02T11:00:00Z"]);
    let host = listed[0]["hostname"].as_str().expect("host").to_owned();

    let restore_at = |at: &str, target: &str| {
        run(cairn(&repo, &home)
            .args(["restore", "--at", at, "--host", &host, "--path"])
            .arg(&one)
            .args(["--target"])
            .arg(d.join(target)))
    };
    let content = |target: &str| {
        fs::read_to_string(
            d.join(target)
                .join(one.strip_prefix("/").expect("abs"))
                .join("v"),
        )
        .expect("restored file")
    };
    ok(&restore_at("2026-01-02T12:00:00Z", "r1"));
    assert_eq!(content("r1"), "one next day");
    ok(&restore_at("2026-01-01T10:00:00Z", "r2"));
    assert_eq!(content("r2"), "one at 10:00", "at the very second");
    ok(&restore_at("2030-01-01 00:00", "r3"));
    assert_eq!(content("r3"), "one on the 3rd", "after the last");

    let before = restore_at("2025-12-31T23:59:59Z", "r4");
    assert!(!before.status.success());
    assert!(
        stderr(&before).contains("no snapshot was taken at or before"),
        "{}",
        stderr(&before)
    );
    // Two sources had a snapshot then: the command asks which.
    let ambiguous = run(cairn(&repo, &home)
        .args(["restore", "--at", "2026-01-02T12:00:00Z", "--target"])
        .arg(d.join("r5")));
    assert!(!ambiguous.status.success());
    assert!(
        stderr(&ambiguous).contains("--path"),
        "{}",
        stderr(&ambiguous)
    );

    let listing = ok(&run(cairn(&repo, &home)
        .args(["ls", "--at", "2026-01-02T10:30:00Z", "--path"])
        .arg(&one)
        .arg(&one)));
    assert!(listing.contains("/v"), "{listing}");

    let future = run(cairn(&repo, &home)
        .args(["backup", "-q", "--time", "2099-01-01T00:00:00Z"])
        .arg(&one));
    assert!(!future.status.success());
    assert!(stderr(&future).contains("future"), "{}", stderr(&future));
    let bad = run(cairn(&repo, &home).args(["snapshots", "--at", "the other day"]));
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("RFC 3339"), "{}", stderr(&bad));
    super::util::assert_verifies(&open_repo(&repo));
}

/// Bytes of every file under `dir`.
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    for e in fs::read_dir(dir).expect("read dir") {
        let e = e.expect("entry");
        let m = e.metadata().expect("stat");
        total += if m.is_dir() { du(&e.path()) } else { m.len() };
    }
    total
}

/// Rewrites about a fifth of the files, adds a few and removes a few.
fn evolve(src: &Path, rng: &mut super::util::Rng, round: usize) {
    for i in 0..40 {
        let f = src.join(format!("f{i}"));
        if round == 0 || rng.next().is_multiple_of(5) {
            let len = 2000 + (rng.next() % 30_000) as usize;
            fs::write(&f, rng.bytes(len)).expect("write");
        }
    }
    fs::write(src.join(format!("new{round}")), rng.bytes(10_000)).expect("write");
    if round >= 2 {
        let _ = fs::remove_file(src.join(format!("new{}", round - 2)));
    }
}

#[test]
fn prune_after_keeping_one_snapshot_leaves_about_a_fresh_repository() {
    let d = Dir::new();
    let src = d.join("src");
    fs::create_dir_all(&src).expect("mkdir");
    let repo_dir = d.join("repo");
    let repo = super::util::init_repo(&repo_dir);
    let mut rng = super::util::Rng::seeded(7);
    let mut last = None;
    for round in 0..12 {
        evolve(&src, &mut rng, round);
        last = Some(super::util::backup_path(&repo, &src).id);
    }
    let last = last.expect("snapshots");
    let home = d.join("home");
    // A dry run of both changes nothing, and says what it would free.
    let before = du(&repo_dir);
    let dry = json(&run(cairn(&repo_dir, &home).args([
        "forget",
        "--keep-last",
        "1",
        "--prune",
        "--dry-run",
        "--json",
    ])));
    assert_eq!(du(&repo_dir), before, "a dry run changes nothing");
    assert_eq!(dry["removed"].as_array().map(Vec::len), Some(11));
    assert_eq!(repo.snapshots().expect("list").len(), 12);
    let done = json(&run(cairn(&repo_dir, &home).args([
        "forget",
        "--keep-last",
        "1",
        "--prune",
        "--json",
    ])));
    let listed: Vec<_> = repo
        .snapshots()
        .expect("list")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(listed, [last]);
    let report = &done["prune"]["report"];
    assert_eq!(report["snapshots"], 1);
    assert!(
        report["packs_repacked"].as_u64().unwrap_or(0)
            + report["packs_deleted"].as_u64().unwrap_or(0)
            > 0,
        "{report}"
    );
    assert!(done["prune"]["bytes_freed"].as_u64().unwrap_or(0) > 0);
    let after = du(&repo_dir);

    let fresh_dir = d.join("fresh");
    let fresh = super::util::init_repo(&fresh_dir);
    super::util::backup_path(&fresh, &src);
    let fresh_size = du(&fresh_dir);
    eprintln!("repository {before} bytes before prune, {after} after; fresh {fresh_size}");
    assert!(
        after as f64 <= 1.1 * fresh_size as f64,
        "pruned {after} bytes, fresh {fresh_size} (before prune {before})"
    );
    super::util::assert_verifies(&repo);
    // What is left restores exactly, and a second prune finds nothing.
    let snap = repo.read_snapshot(&last).expect("snapshot");
    let out = d.join("out");
    let r = cairn::restore(
        &repo,
        &snap,
        &cairn::RestoreOptions::new(&out),
        &cairn::NoProgress,
    )
    .expect("restore");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let back = out.join(src.strip_prefix("/").expect("abs"));
    for e in fs::read_dir(&src).expect("src") {
        let e = e.expect("entry");
        assert_eq!(
            fs::read(e.path()).expect("src file"),
            fs::read(back.join(e.file_name())).expect("restored file")
        );
    }
    let again = cairn::prune(&repo, &cairn::PruneOptions::default()).expect("prune again");
    assert_eq!(again.bytes_freed(), 0, "{again:?}");
    assert_eq!(again.packs_deleted + again.packs_repacked, 0);
}

#[test]
fn locks_make_conflicting_commands_wait_or_fail_clearly() {
    let d = Dir::new();
    let repo_dir = d.join("repo");
    let home = d.join("home");
    let src = d.join("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("f"), b"data").expect("write");
    let repo = super::util::init_repo(&repo_dir);
    let held = repo.lock(true, "prune").expect("exclusive lock");
    let busy = run(cairn(&repo_dir, &home).args(["backup", "-q"]).arg(&src));
    assert_eq!(busy.status.code(), Some(13), "{}", stderr(&busy));
    let msg = stderr(&busy);
    assert!(
        msg.contains("locked") && msg.contains("prune") && msg.contains("cairn unlock"),
        "{msg}"
    );
    assert!(
        repo.snapshots().expect("list").is_empty(),
        "nothing was written"
    );
    // --no-lock reads past it (read-only media), and only reads.
    ok(&run(cairn(&repo_dir, &home).args(["--no-lock", "verify"])));
    let refused = run(cairn(&repo_dir, &home)
        .args(["--no-lock", "backup", "-q"])
        .arg(&src));
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("--no-lock"),
        "{}",
        stderr(&refused)
    );
    // unlock leaves a live lock alone.
    ok(&run(cairn(&repo_dir, &home).args(["unlock"])));
    assert_eq!(repo.locks().expect("locks").len(), 1);
    // A waiting backup gets the repository once the lock is released.
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(700));
        drop(held);
    });
    ok(&run(cairn(&repo_dir, &home)
        .args(["backup", "-q", "--retry-lock", "30s"])
        .arg(&src)));
    releaser.join().expect("join");
    assert_eq!(repo.snapshots().expect("list").len(), 1);
    assert!(
        repo.locks().expect("locks").is_empty(),
        "the backup released its lock"
    );
    let pruned = json(&run(cairn(&repo_dir, &home).args(["prune", "--json"])));
    assert_eq!(pruned["report"]["snapshots"], 1);
    super::util::assert_verifies(&repo);
}

/// Every regular file a restore of each snapshot gives, by snapshot and path.
fn restored_contents(
    repo: &cairn::Repository,
    into: &Path,
) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut all = std::collections::BTreeMap::new();
    for (id, snap) in repo.snapshots().expect("list") {
        let snap = snap.expect("snapshot");
        let out = into.join(id.to_string());
        let r = cairn::restore(
            repo,
            &snap,
            &cairn::RestoreOptions::new(&out),
            &cairn::NoProgress,
        )
        .expect("restore");
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        for name in files_under(&out) {
            all.insert(
                format!("{id}/{}", name.display()),
                fs::read(out.join(&name)).expect("read"),
            );
        }
    }
    all
}

#[test]
fn prune_gathers_small_packs_into_full_ones_and_then_has_nothing_to_do() {
    let d = Dir::new();
    let src = d.join("src");
    fs::create_dir_all(&src).expect("mkdir");
    let repo_dir = d.join("repo");
    let repo = super::util::init_repo(&repo_dir);
    let mut rng = super::util::Rng::seeded(11);
    // Each backup ends in a small data pack, a small tree pack and an
    // index file of its own, as frequent snapshots and `cairn watch` do.
    for round in 0..12 {
        evolve(&src, &mut rng, round);
        super::util::backup_path(&repo, &src);
    }
    let (packs, indexes) = (
        files_under(&repo_dir.join("data")).len(),
        files_under(&repo_dir.join("index")).len(),
    );
    assert!(packs >= 24, "{packs} packs");
    let before = restored_contents(&repo, &d.join("before"));
    let home = d.join("home");

    // Asked to leave them, prune has nothing to do: no snapshot was forgotten.
    let left = json(&run(cairn(&repo_dir, &home).args([
        "prune",
        "--no-repack-small",
        "--json",
    ])));
    assert_eq!(left["report"]["packs_repacked"], 0, "{left}");
    assert_eq!(files_under(&repo_dir.join("data")).len(), packs);

    let done = json(&run(cairn(&repo_dir, &home).args(["prune", "--json"])));
    let report = &done["report"];
    assert_eq!(
        report["packs_small"].as_u64(),
        Some(packs as u64),
        "{report}"
    );
    assert_eq!(report["packs_repacked"], report["packs_small"]);
    assert_eq!(report["blobs_removed"], 0, "nothing was garbage");
    let (packs_after, indexes_after) = (
        files_under(&repo_dir.join("data")).len(),
        files_under(&repo_dir.join("index")).len(),
    );
    eprintln!(
        "{packs} packs and {indexes} index files before, {packs_after} and {indexes_after} after"
    );
    assert!(
        packs_after <= 2,
        "one data and one tree pack: {packs_after}"
    );
    assert!(indexes_after < indexes, "{indexes_after} index files");

    // The same data, verified, and every snapshot restores as before.
    let repo = open_repo(&repo_dir);
    super::util::assert_verifies(&repo);
    assert_eq!(restored_contents(&repo, &d.join("after")), before);
    let again = cairn::prune(&repo, &cairn::PruneOptions::default()).expect("prune again");
    assert_eq!(again.packs_repacked, 0, "{again:?}");
    assert_eq!(files_under(&repo_dir.join("data")).len(), packs_after);
}

#[test]
fn prune_keeps_a_pack_that_its_repack_writes_again_byte_for_byte() {
    // An unencrypted repository seals deterministically, so a pack that an
    // interrupted prune wrote (before any index named it) is exactly what
    // the next prune's repack writes again. That prune finds the file
    // there and names it in its new index: it must not then delete it as
    // a pack no index describes.
    let d = Dir::new();
    let (repo_dir, copy_dir, home, src) = (
        d.join("repo"),
        d.join("copy"),
        d.join("home"),
        d.join("src"),
    );
    fs::create_dir_all(&src).expect("mkdir");
    let plain = |repo: &Path| {
        let mut c = cairn(repo, &home);
        c.env_remove("CAIRN_PASSWORD");
        c
    };
    ok(&run(plain(&repo_dir).args(["init", "--no-encryption"])));
    let mut rng = super::util::Rng::seeded(5);
    fs::write(src.join("keep"), rng.bytes(300_000)).expect("write");
    fs::write(src.join("drop"), rng.bytes(300_000)).expect("write");
    ok(&run(plain(&repo_dir).args(["backup", "-q"]).arg(&src)));
    fs::remove_file(src.join("drop")).expect("rm");
    ok(&run(plain(&repo_dir).args(["backup", "-q"]).arg(&src)));
    ok(&run(plain(&repo_dir).args(["forget", "--keep-last", "1"])));
    copy_tree(&repo_dir, &copy_dir);

    // The prune that gets to write its packs...
    ok(&run(plain(&repo_dir).arg("prune")));
    let (before, after) = (
        files_under(&copy_dir.join("data")),
        files_under(&repo_dir.join("data")),
    );
    let written: Vec<_> = after.difference(&before).collect();
    assert!(!written.is_empty(), "the prune repacked nothing");
    // ...and the same prune stopped right after them, then run again.
    for name in &written {
        let to = copy_dir.join("data").join(name);
        fs::create_dir_all(to.parent().expect("in a folder")).expect("mkdir");
        fs::copy(repo_dir.join("data").join(name), to).expect("copy");
    }
    ok(&run(plain(&copy_dir).arg("prune")));
    assert_eq!(files_under(&copy_dir.join("data")), after);
    ok(&run(plain(&copy_dir).args(["verify", "--read-data"])));
    let restored = d.join("restored");
    ok(&run(plain(&copy_dir)
        .args(["restore", "latest", "--target"])
        .arg(&restored)));
    let keep = fs::read(src.join("keep")).expect("read");
    let got = fs::read(restored.join(src.join("keep").strip_prefix("/").expect("absolute")))
        .expect("restored keep");
    assert_eq!(got, keep);
}

#[test]
fn prune_removes_staged_packs_left_by_killed_backups_and_stats_and_verify_count_them() {
    let d = Dir::new();
    let repo = d.join("repo");
    let src = d.join("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("f"), b"data").expect("write");
    ok(&run(cairn(&repo, d.path()).arg("init")));
    ok(&run(cairn(&repo, d.path())
        .args(["backup", "-q"])
        .arg(&src)));
    // What a backup killed while staging a pack leaves, two days ago, and
    // one being staged right now.
    let old = repo.join("data/.tmp-Ab12Cd");
    fs::write(&old, vec![7u8; 3000]).expect("write");
    let two_days_ago =
        filetime::FileTime::from_unix_time(jiff::Timestamp::now().as_second() - 2 * 24 * 3600, 0);
    filetime::set_file_mtime(&old, two_days_ago).expect("mtime");
    let fresh = repo.join("data/.tmp-Ef34Gh");
    fs::write(&fresh, vec![7u8; 1000]).expect("write");

    let stats = json(&run(cairn(&repo, d.path()).args(["stats", "--json"])));
    assert_eq!(stats["temporary_files"], 2, "{stats}");
    assert_eq!(stats["temporary_bytes"], 4000, "{stats}");
    let verified = json(&run(cairn(&repo, d.path()).args(["verify", "--json"])));
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(verified["temporary_files"], 2, "{verified}");
    assert_eq!(verified["temporary_bytes"], 4000, "{verified}");
    assert!(
        verified["warnings"].to_string().contains("temporary files"),
        "{verified}"
    );

    let dry = json(&run(cairn(&repo, d.path()).args([
        "prune",
        "--dry-run",
        "--json",
    ])));
    assert_eq!(dry["report"]["temporaries_removed"], 1, "{dry}");
    assert!(old.exists(), "a dry run removes nothing");
    let pruned = json(&run(cairn(&repo, d.path()).args(["prune", "--json"])));
    assert_eq!(pruned["report"]["temporaries_removed"], 1, "{pruned}");
    assert_eq!(
        pruned["report"]["temporary_bytes_removed"], 3000,
        "{pruned}"
    );
    assert!(!old.exists(), "the stale staged pack is gone");
    assert!(fresh.exists(), "a pack being staged now is left alone");
    super::util::assert_verifies(&open_repo(&repo));
}

/// A process id that was in use a moment ago and is not any more.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().expect("spawn");
    let pid = child.id();
    child.wait().expect("wait");
    pid
}

#[test]
fn a_restore_removes_the_temporaries_a_killed_restore_left_in_its_directories() {
    let d = Dir::new();
    let repo = d.join("repo");
    let src = d.join("src");
    fs::create_dir_all(src.join("dir")).expect("mkdir");
    fs::write(src.join("dir/f"), b"content").expect("write");
    ok(&run(cairn(&repo, d.path()).arg("init")));
    ok(&run(cairn(&repo, d.path())
        .args(["backup", "-q"])
        .arg(&src)));
    let target = d.join("target");
    ok(&run(cairn(&repo, d.path())
        .args(["restore", "latest", "--target"])
        .arg(&target)));
    let dir = target.join(src.strip_prefix("/").expect("abs")).join("dir");
    // Temporary files as restores name them: `.cairn-restore-`, a tag of
    // the host, the process id and random characters.
    let host = nix::unistd::gethostname().expect("hostname");
    let tag = blake3::hash(host.as_encoded_bytes()).to_hex()[..8].to_owned();
    let killed = dir.join(format!(".cairn-restore-{tag}-{}-Ab12Cd", dead_pid()));
    fs::write(&killed, vec![1u8; 5000]).expect("write");
    let running = dir.join(format!(
        ".cairn-restore-{tag}-{}-Ef34Gh",
        std::process::id()
    ));
    fs::write(&running, b"being written").expect("write");
    // Whose this one is its name does not say; it changed just now.
    let unknown = dir.join(".cairn-restore-Ij56Kl");
    fs::write(&unknown, b"of an older cairn").expect("write");

    let o = run(cairn(&repo, d.path())
        .args(["restore", "latest", "--target"])
        .arg(&target));
    ok(&o);
    assert!(
        !killed.exists(),
        "the killed restore's temporary is removed"
    );
    assert!(
        stderr(&o).contains("left by an interrupted restore"),
        "{}",
        stderr(&o)
    );
    assert!(running.exists(), "a running restore's temporary stays");
    assert!(
        unknown.exists(),
        "a recent temporary of unknown origin stays"
    );
    assert_eq!(fs::read(dir.join("f")).expect("restored"), b"content");
}

#[test]
fn a_lock_taker_removes_the_locks_of_killed_processes_of_its_host() {
    use std::process::Stdio;
    let d = Dir::new();
    let repo = d.join("repo");
    ok(&run(cairn(&repo, d.path()).arg("init")));
    let locks = repo.join("locks");
    let count = || {
        fs::read_dir(&locks).map_or(0, |entries| {
            entries
                .filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| !e.file_name().to_string_lossy().starts_with('.'))
                })
                .count()
        })
    };
    // A backup of standard input holds its lock while it waits for input;
    // killed there, it leaves its lock file behind.
    let mut child = cairn(&repo, d.path())
        .args(["backup", "--stdin", "--stdin-name", "x"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while count() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the backup never took its lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    assert_eq!(count(), 1, "the killed backup's lock is left");
    // The next command that takes a lock removes them: their processes are
    // gone from this host.
    ok(&run(cairn(&repo, d.path()).arg("verify")));
    assert_eq!(count(), 0, "the stale lock is removed");
}
