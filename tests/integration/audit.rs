//! The audit log: every changing command leaves an event with who, what
//! and the result; dry runs leave none; a changed or removed event is
//! reported by `log` and `verify`.

use std::fs;

use super::util::{Dir, cairn, json_of, run, stderr};

fn actions(repo: &std::path::Path, home: &std::path::Path) -> Vec<(String, bool)> {
    let o = run(cairn(repo, home).args(["log", "--json"]));
    assert!(o.status.success(), "{}", stderr(&o));
    json_of(&o)["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["action"].as_str().expect("action").to_owned(),
                e["ok"].as_bool().expect("ok"),
            )
        })
        .collect()
}

#[test]
fn audit_log_records_changes_with_actor_and_result_and_reports_tampering() {
    let d = Dir::new();
    let repo = d.join("repo");
    let src = d.join("src");
    fs::create_dir_all(&src).expect("src");
    fs::write(src.join("a.txt"), b"hello").expect("write");
    let ok = |args: &[&str]| {
        let o = run(cairn(&repo, d.path()).args(args));
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        o
    };
    ok(&["init"]);
    let s = src.to_str().expect("utf-8");
    ok(&["backup", s]);
    fs::write(src.join("b.txt"), b"world").expect("write");
    ok(&["backup", s]);
    let o = run(cairn(&repo, d.path()).args(["backup", "/no/such/path"]));
    assert_eq!(o.status.code(), Some(1));
    let out = d.join("out");
    ok(&[
        "restore",
        "latest",
        "--target",
        out.to_str().expect("utf-8"),
    ]);
    ok(&["forget", "--keep-last", "1", "--dry-run"]);
    ok(&["prune", "--dry-run"]);
    ok(&["forget", "--keep-last", "1"]);
    ok(&["prune"]);
    assert_eq!(
        actions(&repo, d.path()),
        [
            ("backup".to_owned(), true),
            ("backup".to_owned(), true),
            ("backup".to_owned(), false),
            ("restore".to_owned(), true),
            ("forget".to_owned(), true),
            ("prune".to_owned(), true),
        ],
        "dry runs are not recorded"
    );
    let log = json_of(&ok(&["log", "--json"]));
    let events = log["events"].as_array().expect("events");
    let first = &events[0];
    assert!(
        first["actor"].as_str().expect("actor").contains('@'),
        "{first}"
    );
    assert!(
        first["detail"]
            .as_str()
            .expect("detail")
            .starts_with("snapshot ")
    );
    assert!(
        events[2]["detail"]
            .as_str()
            .expect("detail")
            .contains("/no/such/path")
    );
    assert!(events[1]["prev"] == first["id"], "events chain");
    let text = String::from_utf8_lossy(&ok(&["log", "-n", "2"]).stdout).into_owned();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains("forget") && text.contains("prune"), "{text}");
    ok(&["verify"]);

    // A changed event and a removed one are both reported.
    let dir = repo.join("audit");
    let name = |i: usize| events[i]["id"].as_str().expect("id").to_owned();
    let mut bytes = fs::read(dir.join(name(3))).expect("read");
    if let Some(b) = bytes.last_mut() {
        *b ^= 1;
    }
    fs::write(dir.join(name(3)), bytes).expect("tamper");
    fs::remove_file(dir.join(name(1))).expect("remove");
    let o = run(cairn(&repo, d.path()).args(["log"]));
    assert_eq!(o.status.code(), Some(3));
    let e = stderr(&o);
    assert!(e.contains(&name(3)) && e.contains("authentication"), "{e}");
    assert!(e.contains(&name(1)) && e.contains("missing"), "{e}");
    let o = run(cairn(&repo, d.path()).args(["verify"]));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
}

#[test]
fn status_max_age_fails_for_stale_and_failing_sources_and_passes_for_fresh() {
    let d = Dir::new();
    let repo = d.join("repo");
    let src = d.join("src");
    fs::create_dir_all(&src).expect("src");
    fs::write(src.join("a.txt"), b"hello").expect("write");
    let s = src.to_str().expect("utf-8");
    assert!(run(cairn(&repo, d.path()).arg("init")).status.success());
    let o = run(cairn(&repo, d.path()).args(["backup", s, "--time", "3 days ago"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let status = |args: &[&str]| run(cairn(&repo, d.path()).arg("status").args(args));
    let o = status(&["--max-age", "1d", "--json"]);
    assert_eq!(o.status.code(), Some(14), "stale: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["ok"], false);
    assert_eq!(v["sources"][0]["stale"], true);
    assert!(v["sources"][0]["age_seconds"].as_i64().expect("age") >= 3 * 86_400 - 60);
    assert_eq!(
        status(&["--max-age", "4d"]).status.code(),
        Some(0),
        "fresh enough"
    );
    fs::write(src.join("b.txt"), b"new").expect("write");
    assert!(
        run(cairn(&repo, d.path()).args(["backup", s]))
            .status
            .success()
    );
    assert_eq!(status(&["--max-age", "1h"]).status.code(), Some(0), "fresh");
    assert_eq!(status(&[]).status.code(), Some(0), "no limit");

    // The same source failing after its newest snapshot.
    let gone = d.join("gone");
    fs::create_dir_all(&gone).expect("gone");
    let g = gone.to_str().expect("utf-8");
    assert!(
        run(cairn(&repo, d.path()).args(["backup", g]))
            .status
            .success()
    );
    fs::remove_dir(&gone).expect("rm");
    assert_eq!(
        run(cairn(&repo, d.path()).args(["backup", g]))
            .status
            .code(),
        Some(1)
    );
    let o = status(&["--max-age", "1h", "--json"]);
    assert_eq!(o.status.code(), Some(14));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let failing: Vec<&serde_json::Value> = v["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .filter(|s| !s["failure"].is_null())
        .collect();
    assert_eq!(failing.len(), 1, "{v}");
    assert_eq!(failing[0]["component"], g);
    assert!(
        failing[0]["failure"]["error"]
            .as_str()
            .expect("error")
            .contains("gone")
    );
}
