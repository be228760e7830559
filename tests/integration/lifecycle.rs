//! Snapshot lifecycle through the CLI: recorded times, point-in-time
//! selection, locks and prune.

use std::fs;
use std::path::Path;

use super::util::{Dir, cairn, open_repo, run, stderr, stdout};

fn ok(o: &std::process::Output) -> String {
    assert!(o.status.success(), "failed: {}", stderr(o));
    stdout(o)
}

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(&ok(o)).expect("json output")
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
