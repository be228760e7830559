//! Alerts from `cairn status` (`--notify-command`, `--notify-url`,
//! `--min-free`) and the generated shell completions and man pages.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use super::util::{Dir, cairn, json_of, run, stderr, stdout};

/// A repository with one plain backup of `src` taken three days ago.
fn stale_repo(d: &Dir) -> (PathBuf, String) {
    let repo = d.join("repo");
    let src = d.join("src");
    fs::create_dir_all(&src).expect("src");
    fs::write(src.join("a.txt"), b"hello").expect("write");
    let s = src.to_str().expect("utf-8").to_owned();
    assert!(run(cairn(&repo, d.path()).arg("init")).status.success());
    let o = run(cairn(&repo, d.path()).args(["backup", &s, "--time", "3 days ago"]));
    assert!(o.status.success(), "{}", stderr(&o));
    (repo, s)
}

/// A shell command appending each alert it reads on stdin, and its
/// environment's view of it, to files in `dir`.
fn recorder(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "cat >> '{d}/alerts.jsonl'; \
         printf '%s|%s|%s\\n' \"$CAIRN_ALERT_KIND\" \"$CAIRN_ALERT_MESSAGE\" \"${{CAIRN_PASSWORD:-no password}}\" >> '{d}/env.txt'; \
         printf '%s\\n' \"$CAIRN_ALERT_JSON\" >> '{d}/env_json.jsonl'"
    )
}

fn read_alerts(path: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("alert json"))
        .collect()
}

/// One HTTP request as the receiver saw it.
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A webhook receiver on 127.0.0.1 that answers one request with 200.
fn receiver() -> (String, JoinHandle<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut line = String::new();
        reader.read_line(&mut line).expect("request line");
        let mut parts = line.split_whitespace();
        let method = parts.next().expect("method").to_owned();
        let path = parts.next().expect("path").to_owned();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).expect("header");
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (n, v) = h.split_once(':').expect("header line");
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().expect("length"))
            .expect("content-length");
        let mut body = vec![0; len];
        reader.read_exact(&mut body).expect("body");
        let mut w = stream;
        w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .expect("reply");
        Request {
            method,
            path,
            headers,
            body,
        }
    });
    (
        format!("http://127.0.0.1:{port}/hooks/cairn?token=s3cret"),
        handle,
    )
}

/// A URL on 127.0.0.1 where nothing listens.
fn closed_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}/hooks/s3cret")
}

#[test]
fn notify_command_gets_stale_alert_as_json_on_stdin_and_in_env() {
    let d = Dir::new();
    let (repo, s) = stale_repo(&d);
    let o = run(cairn(&repo, d.path()).args([
        "status",
        "--max-age",
        "1d",
        "--notify-command",
        &recorder(d.path()),
    ]));
    assert_eq!(o.status.code(), Some(14), "{}", stderr(&o));
    assert!(!stderr(&o).contains("cannot deliver"), "{}", stderr(&o));
    let alerts = read_alerts(&d.join("alerts.jsonl"));
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let a = &alerts[0];
    assert_eq!(a["kind"], "stale");
    assert_eq!(a["app"], "");
    assert_eq!(a["component"], s.as_str());
    assert!(!a["host"].as_str().expect("host").is_empty());
    assert_eq!(a["repository"], repo.to_str().expect("utf-8"));
    assert!(a["age_seconds"].as_i64().expect("age") >= 3 * 86_400 - 60);
    assert!(a["time"].as_str().expect("time").ends_with('Z'));
    assert!(a["last_snapshot_time"].is_string());
    assert!(
        a["message"]
            .as_str()
            .expect("message")
            .contains("newest snapshot is 3d"),
        "{a}"
    );
    // The same alert in the environment, without the password.
    assert_eq!(read_alerts(&d.join("env_json.jsonl")), alerts);
    let env = fs::read_to_string(d.join("env.txt")).expect("env");
    assert_eq!(
        env.trim_end(),
        format!("stale|{}|no password", a["message"].as_str().expect("msg"))
    );
    // Failing: a source whose backup failed after its newest snapshot.
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
    fs::remove_file(d.join("alerts.jsonl")).expect("rm");
    let o = run(cairn(&repo, d.path())
        .args(["status", "--max-age", "4d", "--json"])
        .env("CAIRN_NOTIFY_COMMAND", recorder(d.path())));
    assert_eq!(o.status.code(), Some(14), "{}", stderr(&o));
    let alerts = read_alerts(&d.join("alerts.jsonl"));
    assert_eq!(alerts.len(), 1, "only the failing source: {alerts:?}");
    assert_eq!(alerts[0]["kind"], "failure");
    assert_eq!(alerts[0]["component"], g);
    assert!(alerts[0]["error"].is_string() && alerts[0]["failed_at"].is_string());
    // The JSON output lists the alerts sent, and stays parseable.
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["alerts"][0]["kind"], "failure");
}

#[test]
fn notify_url_posts_stale_alert_as_json() {
    let d = Dir::new();
    let (repo, s) = stale_repo(&d);
    let (url, got) = receiver();
    let o = run(cairn(&repo, d.path())
        .args(["status", "--max-age", "1d"])
        .env("CAIRN_NOTIFY_URL", &url));
    assert_eq!(o.status.code(), Some(14), "{}", stderr(&o));
    assert!(!stderr(&o).contains("cannot deliver"), "{}", stderr(&o));
    let req = got.join().expect("receiver");
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/hooks/cairn?token=s3cret");
    assert_eq!(req.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&req.body).expect("json body");
    assert_eq!(v["kind"], "stale");
    assert_eq!(v["component"], s.as_str());
    assert_eq!(v["repository"], repo.to_str().expect("utf-8"));
    assert!(v["message"].as_str().expect("message").contains("limit 1d"));
}

#[test]
fn notify_nothing_for_a_fresh_repository() {
    let d = Dir::new();
    let (repo, s) = stale_repo(&d);
    fs::write(d.join("src/b.txt"), b"new").expect("write");
    assert!(
        run(cairn(&repo, d.path()).args(["backup", &s]))
            .status
            .success()
    );
    // Were anything sent, the command would leave a file and the closed
    // URL a warning.
    let o = run(cairn(&repo, d.path()).args([
        "status",
        "--max-age",
        "1h",
        "--min-free",
        "1B",
        "--notify-command",
        &recorder(d.path()),
        "--notify-url",
        &closed_url(),
        "--json",
    ]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!d.join("alerts.jsonl").exists());
    assert!(!stderr(&o).contains("cannot deliver"), "{}", stderr(&o));
    let v = json_of(&o);
    assert_eq!(v["ok"], true);
    assert_eq!(v["alerts"].as_array().map(Vec::len), Some(0));
    assert_eq!(v["free_space"]["low"], false);
}

#[test]
fn notify_min_free_low_space_alert_and_exit_code() {
    let d = Dir::new();
    let (repo, _) = stale_repo(&d);
    let o = run(cairn(&repo, d.path()).args([
        "status",
        "--min-free",
        "1000PiB",
        "--notify-command",
        &recorder(d.path()),
    ]));
    assert_eq!(o.status.code(), Some(14), "{}", stderr(&o));
    assert!(stdout(&o).contains("LOW SPACE"), "{}", stdout(&o));
    let alerts = read_alerts(&d.join("alerts.jsonl"));
    assert_eq!(
        alerts.len(),
        1,
        "no --max-age, so only low space: {alerts:?}"
    );
    let a = &alerts[0];
    assert_eq!(a["kind"], "low_space");
    assert_eq!(a["min_free_bytes"], 1000u64 << 50);
    assert!(a["free_bytes"].as_u64().expect("free") < 1000u64 << 50);
    assert!(a["total_bytes"].as_u64().expect("total") > 0);
    let o = run(cairn(&repo, d.path()).args(["status", "--min-free", "1B"]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = run(cairn(&repo, d.path()).args(["status", "--min-free", "0.1%", "--json"]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // A bad size names the option and the fix.
    let o = run(cairn(&repo, d.path()).args(["status", "--min-free", "lots"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("--min-free 'lots'") && stderr(&o).contains("10GiB"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn notify_failing_url_warns_and_keeps_the_status_exit_code() {
    let d = Dir::new();
    let (repo, _) = stale_repo(&d);
    let o = run(cairn(&repo, d.path()).args([
        "status",
        "--max-age",
        "1d",
        "--notify-url",
        &closed_url(),
        "--notify-command",
        &recorder(d.path()),
    ]));
    assert_eq!(o.status.code(), Some(14), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("cannot deliver the stale alert"), "{err}");
    assert!(err.contains("after 3 attempts"), "{err}");
    assert!(
        !err.contains("s3cret"),
        "the URL's path is not printed: {err}"
    );
    // The command still got the alert.
    assert_eq!(read_alerts(&d.join("alerts.jsonl")).len(), 1);
    // A failing command likewise; and a URL that is not http(s) is refused
    // before anything runs.
    let o = run(cairn(&repo, d.path()).args([
        "status",
        "--max-age",
        "1d",
        "--notify-command",
        "exit 3",
    ]));
    assert_eq!(o.status.code(), Some(14), "{}", stderr(&o));
    assert!(stderr(&o).contains("exit status: 3"), "{}", stderr(&o));
    let o = run(cairn(&repo, d.path()).args(["status", "--notify-url", "ftp://x/y"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--notify-url"), "{}", stderr(&o));
}

#[test]
fn notify_completions_name_cairn_and_its_commands() {
    let d = Dir::new();
    let repo = d.join("repo");
    let o = run(cairn(&repo, d.path()).args(["completions", "bash"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let bash = stdout(&o);
    for word in [
        "cairn",
        "backup",
        "restore",
        "status",
        "--notify-url",
        "completions",
    ] {
        assert!(bash.contains(word), "{word}");
    }
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let o = run(cairn(&repo, d.path()).args(["completions", shell]));
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        assert!(stdout(&o).contains("backup"), "{shell}");
    }
    assert!(!repo.exists(), "no repository is needed or made");
    let o = run(cairn(&repo, d.path()).args(["completions", "tcsh"]));
    assert_eq!(o.status.code(), Some(2));
    let o = run(cairn(&repo, d.path()).args(["completions", "--help"]));
    assert!(o.status.success() && stdout(&o).contains("bash"));
}

#[test]
fn notify_man_prints_roff_and_writes_one_page_per_command() {
    let d = Dir::new();
    let repo = d.join("repo");
    let o = run(cairn(&repo, d.path()).arg("man"));
    assert!(o.status.success(), "{}", stderr(&o));
    let page = stdout(&o);
    assert!(
        page.lines().take(5).any(|l| l.starts_with(".TH cairn 1")),
        "{}",
        &page[..page.len().min(300)]
    );
    assert!(page.contains("status"));
    let dir = d.join("man/man1");
    let o = run(cairn(&repo, d.path()).args(["man", "--dir", dir.to_str().expect("utf-8")]));
    assert!(o.status.success(), "{}", stderr(&o));
    for name in [
        "cairn.1",
        "cairn-backup.1",
        "cairn-status.1",
        "cairn-key-add.1",
    ] {
        let text = fs::read_to_string(dir.join(name)).expect(name);
        assert!(text.contains(".TH"), "{name}");
    }
    let status = fs::read_to_string(dir.join("cairn-status.1")).expect("status page");
    assert!(status.contains("min\\-free"), "options are documented");
    let o = run(cairn(&repo, d.path()).args(["man", "--help"]));
    assert!(o.status.success() && stdout(&o).contains("--dir"));
}
