//! The binary as a user runs it: first use, bad input and its exit codes.

use std::fs;
use std::path::Path;

use super::util::{Dir, backup_path, cairn, init_repo, run, stderr, stdout};

fn one_line(s: &str) -> bool {
    s.trim_end().lines().count() == 1
}

/// Names and contents of every file in the repository.
/// Every file of the repository with its bytes, except the audit log,
/// where a failed operation records its failure by design.
fn repo_state(repo: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![repo.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p == repo.join("audit") {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.display().to_string(), fs::read(&p).expect("read")));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn init_backup_restore_verify() {
    let d = Dir::new();
    let repo = d.join("repo");
    fs::create_dir(d.join("src")).expect("mkdir");
    fs::write(d.join("src/a.txt"), b"hello").expect("write");
    assert!(run(cairn(&repo, d.path()).arg("init")).status.success());
    let o = run(cairn(&repo, d.path())
        .args(["backup", "--tag", "first"])
        .arg(d.join("src")));
    assert!(o.status.success());
    assert!(stdout(&o).contains("1 new"));
    let o = run(cairn(&repo, d.path()).args(["snapshots", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v[0]["tags"][0], "first");
    let o = run(cairn(&repo, d.path())
        .args(["restore", "latest", "--target"])
        .arg(d.join("out")));
    assert!(o.status.success());
    let restored = d
        .join("out")
        .join(d.join("src/a.txt").strip_prefix("/").expect("abs"));
    assert_eq!(fs::read(restored).expect("read"), b"hello");
    assert!(
        run(cairn(&repo, d.path()).args(["verify", "--read-data"]))
            .status
            .success()
    );
}

#[test]
fn default_repository_is_created_on_first_backup_with_a_private_key() {
    let d = Dir::new();
    fs::write(d.join("f"), b"data").expect("write");
    let mut c = cairn(Path::new("/unused"), d.path());
    c.env_remove("CAIRN_REPO").env_remove("CAIRN_PASSWORD");
    c.env("XDG_DATA_HOME", d.join("data"))
        .env("XDG_CONFIG_HOME", d.join("config"));
    let o = run(c.arg("backup").arg(d.join("f")));
    assert!(o.status.success());
    let key = d.join("config/cairn/repository.key");
    assert!(
        stderr(&o).contains(&key.display().to_string()),
        "cairn says where the key is"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&key).expect("key").permissions().mode() & 0o777,
        0o600
    );
    assert!(d.join("data/cairn/repository/config").exists());
    // The second run finds both on its own.
    let default = || {
        let mut c = cairn(Path::new("/unused"), d.path());
        c.env_remove("CAIRN_REPO").env_remove("CAIRN_PASSWORD");
        c.env("XDG_DATA_HOME", d.join("data"))
            .env("XDG_CONFIG_HOME", d.join("config"));
        c
    };
    assert!(
        run(default().args(["verify", "--read-data"]))
            .status
            .success()
    );
    // Changing the password rewrites the key file, which keeps opening it.
    fs::write(d.join("new-pw"), b"a new password\r\n").expect("write");
    let o = run(default()
        .args(["key", "passwd", "--new-password-file"])
        .arg(d.join("new-pw")));
    assert!(o.status.success());
    assert_eq!(fs::read(&key).expect("key"), b"a new password\n");
    assert_eq!(
        fs::metadata(&key).expect("key").permissions().mode() & 0o777,
        0o600
    );
    assert!(run(default().arg("snapshots")).status.success());
}

#[test]
fn wrong_password_is_one_clear_line_and_changes_nothing() {
    let d = Dir::new();
    let repo = d.join("repo");
    assert!(run(cairn(&repo, d.path()).arg("init")).status.success());
    let before = repo_state(&repo);
    let o = run(cairn(&repo, d.path())
        .env("CAIRN_PASSWORD", "nope")
        .arg("backup")
        .arg(d.path()));
    assert_eq!(o.status.code(), Some(12));
    assert!(one_line(&stderr(&o)));
    assert!(stderr(&o).contains("wrong password"));
    assert_eq!(repo_state(&repo), before);
}

#[test]
fn missing_repository_is_named() {
    let d = Dir::new();
    let repo = d.join("nothing-here");
    let o = run(cairn(&repo, d.path()).arg("snapshots"));
    assert_eq!(o.status.code(), Some(10));
    assert!(one_line(&stderr(&o)));
    assert!(stderr(&o).contains(&repo.display().to_string()));
    // The library names the place; the command line says how to make one.
    assert_eq!(
        stderr(&o),
        format!(
            "cairn: error: no repository at {}: create one with `cairn init`, or point --repo / CAIRN_REPO at an existing one\n",
            repo.display()
        )
    );
    assert!(!repo.exists(), "nothing is created");
}

/// No password and no terminal to ask on: exit 12, and the command line's
/// advice names its ways of giving one.
#[test]
fn missing_password_names_the_ways_to_give_one() {
    let d = Dir::new();
    let repo = d.join("repo");
    assert!(run(cairn(&repo, d.path()).arg("init")).status.success());
    let o = run(cairn(&repo, d.path())
        .env_remove("CAIRN_PASSWORD")
        .stdin(std::process::Stdio::null())
        .arg("snapshots"));
    assert_eq!(o.status.code(), Some(12), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        format!(
            "cairn: error: {} needs a password: set CAIRN_PASSWORD, or pass --password-file or --password-command\n",
            repo.display()
        )
    );
}

#[test]
fn unknown_format_version_is_named_before_any_password() {
    let d = Dir::new();
    let repo = d.join("repo");
    assert!(run(cairn(&repo, d.path()).arg("init")).status.success());
    let mut config = fs::read(repo.join("config")).expect("config");
    config[8] = 9;
    fs::write(repo.join("config"), &config).expect("write");
    let before = repo_state(&repo);
    let o = run(cairn(&repo, d.path())
        .env_remove("CAIRN_PASSWORD")
        .arg("snapshots"));
    assert_eq!(o.status.code(), Some(11));
    assert!(one_line(&stderr(&o)));
    assert!(stderr(&o).contains("version 9"));
    assert_eq!(repo_state(&repo), before);
}

#[test]
fn unreadable_source_file_is_named_and_changes_nothing() {
    let d = Dir::new();
    let repo = d.join("repo");
    assert!(run(cairn(&repo, d.path()).arg("init")).status.success());
    let src = d.join("src");
    fs::create_dir(&src).expect("mkdir");
    for i in 0..50 {
        fs::write(src.join(format!("ok-{i}")), vec![i as u8; 300_000]).expect("write");
    }
    let secret = src.join("secret");
    fs::write(&secret, b"no").expect("write");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).expect("chmod");
    let before = repo_state(&repo);
    // As root, drop the capabilities that let root read anything.
    let mut c = if nix::unistd::geteuid().is_root() {
        let mut c = std::process::Command::new("setpriv");
        c.args([
            "--bounding-set=-dac_override,-dac_read_search",
            "--inh-caps=-all",
        ]);
        c.arg(env!("CARGO_BIN_EXE_cairn"));
        c.env("CAIRN_REPO", &repo)
            .env("CAIRN_PASSWORD", super::util::PASSWORD);
        c
    } else {
        cairn(&repo, d.path())
    };
    let o = run(c.arg("backup").arg(&src));
    assert_eq!(o.status.code(), Some(1));
    assert!(one_line(&stderr(&o)));
    assert!(stderr(&o).contains(&secret.display().to_string()));
    let err = stderr(&o);
    assert!(
        err.starts_with(&format!("cairn: error: cannot read {}: ", secret.display()))
            && err.ends_with("; fix its permissions or leave it out with --exclude\n"),
        "{err}"
    );
    assert_eq!(
        repo_state(&repo),
        before,
        "the failed backup left nothing behind"
    );
    let log = run(cairn(&repo, d.path()).args(["log", "--json"]));
    let log = super::util::json_of(&log);
    let events = log["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "{log}");
    assert_eq!(events[0]["ok"], false, "the failure is in the audit log");
}

#[test]
fn encrypted_repository_never_contains_source_plaintext() {
    let d = Dir::new();
    let marker = format!("CAIRN-MARKER-{}", std::process::id());
    fs::create_dir(d.join("src")).expect("mkdir");
    // Random bytes around one marker: zstd cannot shrink it, so without
    // encryption the marker would be stored verbatim (checked below).
    let mut data: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    data.extend_from_slice(marker.as_bytes());
    fs::write(d.join("src/data.bin"), &data).expect("write");
    fs::write(d.join("src").join(&marker), b"named").expect("write");
    let found_in = |repo: &Path| {
        repo_state(repo).iter().any(|(name, bytes)| {
            name.contains(&marker) || bytes.windows(marker.len()).any(|w| w == marker.as_bytes())
        })
    };
    let enc = d.join("enc");
    assert!(run(cairn(&enc, d.path()).arg("init")).status.success());
    assert!(
        run(cairn(&enc, d.path()).arg("backup").arg(d.join("src")))
            .status
            .success()
    );
    assert!(
        !found_in(&enc),
        "plaintext found in an encrypted repository"
    );

    let plain = d.join("plain");
    let unencrypted = || {
        let mut c = cairn(&plain, d.path());
        c.env_remove("CAIRN_PASSWORD");
        c
    };
    assert!(
        run(unencrypted().args(["init", "--no-encryption"]))
            .status
            .success()
    );
    assert!(
        run(unencrypted().arg("backup").arg(d.join("src")))
            .status
            .success()
    );
    assert!(
        found_in(&plain),
        "the search would find plaintext if it were there"
    );
    assert!(
        run(unencrypted().args(["verify", "--read-data"]))
            .status
            .success()
    );
    // A user who gives a password expects encryption: an unencrypted
    // repository (perhaps swapped in by someone else) is refused.
    let o = run(cairn(&plain, d.path()).arg("backup").arg(d.join("src")));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unencrypted repository, but a password was given"));
}

#[test]
fn keys_add_change_and_remove() {
    let d = Dir::new();
    let repo = d.join("repo");
    assert!(run(cairn(&repo, d.path()).arg("init")).status.success());
    fs::write(d.join("pw2"), b"second password\n").expect("write");
    assert!(
        run(cairn(&repo, d.path())
            .args(["key", "add", "--new-password-file"])
            .arg(d.join("pw2")))
        .status
        .success()
    );
    let o = run(cairn(&repo, d.path())
        .env("CAIRN_PASSWORD", "second password")
        .args(["key", "list", "--json"]));
    assert!(o.status.success());
    let keys: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(keys.as_array().map(Vec::len), Some(2));
    // Change the first password; the old one stops working.
    fs::write(d.join("pw3"), b"third").expect("write");
    assert!(
        run(cairn(&repo, d.path())
            .args(["key", "passwd", "--new-password-file"])
            .arg(d.join("pw3")))
        .status
        .success()
    );
    assert_eq!(
        run(cairn(&repo, d.path()).arg("snapshots")).status.code(),
        Some(12)
    );
    assert!(
        run(cairn(&repo, d.path())
            .env("CAIRN_PASSWORD", "third")
            .arg("snapshots"))
        .status
        .success()
    );
    // Remove the second key using the third password.
    let second = keys
        .as_array()
        .and_then(|a| a.iter().find(|k| k["current"] == true))
        .and_then(|k| k["id"].as_str())
        .expect("second key id")
        .to_owned();
    assert!(
        run(cairn(&repo, d.path())
            .env("CAIRN_PASSWORD", "third")
            .args(["key", "remove", &second]))
        .status
        .success()
    );
    assert_eq!(
        run(cairn(&repo, d.path())
            .env("CAIRN_PASSWORD", "second password")
            .arg("snapshots"))
        .status
        .code(),
        Some(12)
    );
}

#[test]
fn kdf_memory_is_chosen_per_key_within_bounds() {
    let d = Dir::new();
    let repo = d.join("repo");
    let o = run(cairn(&repo, d.path()).args(["init", "--kdf-memory", "8"]));
    assert_eq!(o.status.code(), Some(2), "below the floor is a usage error");
    assert!(stderr(&o).contains("kdf-memory"), "{}", stderr(&o));
    assert!(
        run(cairn(&repo, d.path()).args(["init", "--kdf-memory", "19"]))
            .status
            .success()
    );
    let keys: Vec<_> = fs::read_dir(repo.join("keys"))
        .expect("keys dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let [key] = keys.as_slice() else {
        panic!("one key expected, found {keys:?}")
    };
    let o = run(cairn(&repo, d.path()).args(["cat", "key", key]));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["kdf"]["memory_kib"], 19 * 1024, "{v}");
    // The repository opens with that key.
    assert!(
        run(cairn(&repo, d.path()).arg("snapshots"))
            .status
            .success()
    );
}

#[test]
fn cli_escapes_terminal_control_characters_and_refuses_them_in_new_tags() {
    let dir = Dir::new();
    let repo_path = dir.join("repo");
    let repo = init_repo(&repo_path);
    // A directory whose name holds an escape sequence (file names are
    // anyone's to choose), backed up: the audit log records its path.
    let src = dir.join("src\u{1b}]0;owned\u{7}");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("f"), b"x").expect("write");
    let done = backup_path(&repo, &src);
    // A tag with one, as an older cairn or another tool could have stored.
    let mut snap = done.snapshot.clone();
    snap.tags = vec!["\u{1b}[2Jcleared".to_owned()];
    repo.save_snapshot(&snap).expect("save");
    for args in [&["snapshots"][..], &["log"], &["ls", "latest"]] {
        let o = run(cairn(&repo_path, dir.path()).args(args));
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert!(
            !o.stdout.iter().any(|&b| b == 0x1b || b == 0x07),
            "{args:?} printed a raw control character: {}",
            stdout(&o)
        );
        assert!(stdout(&o).contains("\\u{1b}"), "{args:?}: {}", stdout(&o));
    }
    // JSON keeps them, escaped as JSON does.
    let o = run(cairn(&repo_path, dir.path()).args(["snapshots", "--json"]));
    assert!(stdout(&o).contains("\\u001b[2Jcleared"), "{}", stdout(&o));
    // New tags with control characters or commas are refused by every door.
    for tag in ["a\u{1b}[31m", "a,b", ""] {
        let o = run(cairn(&repo_path, dir.path())
            .args(["backup", "--tag", tag])
            .arg(&src));
        assert_eq!(o.status.code(), Some(1), "{tag:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("tag '"), "{}", stderr(&o));
    }
}

#[test]
fn cli_a_password_source_that_gives_nothing_exits_12() {
    let dir = Dir::new();
    let repo = dir.join("repo");
    init_repo(&repo);
    let missing = dir.join("no-such-password-file");
    for extra in [
        vec!["--password-file".to_owned(), missing.display().to_string()],
        vec!["--password-command".to_owned(), "exit 3".to_owned()],
    ] {
        let o = run(cairn(&repo, dir.path())
            .env_remove("CAIRN_PASSWORD")
            .args(&extra)
            .arg("snapshots"));
        assert_eq!(o.status.code(), Some(12), "{extra:?}: {}", stderr(&o));
    }
}

#[test]
fn cli_latest_honours_host_path_and_tag_as_restic_users_type_it() {
    let dir = Dir::new();
    let repo = dir.join("repo");
    init_repo(&repo);
    let src = dir.join("src");
    fs::create_dir_all(&src).expect("mkdir");
    let backup = |host: &str, content: &str, tag: &str| {
        fs::write(src.join("f"), content).expect("write");
        let o = run(cairn(&repo, dir.path())
            .args(["backup", "--host", host, "--tag", tag])
            .arg(&src));
        assert!(o.status.success(), "{}", stderr(&o));
    };
    backup("h1", "from h1", "a");
    let o = run(cairn(&repo, dir.path()).arg("snapshots"));
    assert!(stderr(&o).contains("1 snapshot") && !stderr(&o).contains("1 snapshots"));
    backup("h2", "from h2", "b");
    let file = src.join("f");
    let file = file.to_str().expect("utf-8");
    for (host, want) in [("h1", "from h1"), ("h2", "from h2")] {
        let target = dir.join(&format!("t-{host}"));
        let o = run(cairn(&repo, dir.path())
            .args(["restore", "latest", "--host", host, "--target"])
            .arg(&target));
        assert!(o.status.success(), "{host}: {}", stderr(&o));
        let restored = target.join(file.trim_start_matches('/'));
        assert_eq!(fs::read_to_string(restored).expect("restored"), want);
    }
    let target = dir.join("t-tag");
    let o = run(cairn(&repo, dir.path())
        .args(["restore", "latest", "--tag", "a", "--target"])
        .arg(&target));
    assert!(o.status.success(), "{}", stderr(&o));
    let restored = target.join(file.trim_start_matches('/'));
    assert_eq!(fs::read_to_string(restored).expect("restored"), "from h1");
    let o = run(cairn(&repo, dir.path()).args(["snapshots", "--tag", "b", "--json"]));
    let listed: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["hostname"], "h2");
    let o = run(cairn(&repo, dir.path()).args(["ls", "latest", "--host", "nobody"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no snapshot matches"), "{}", stderr(&o));
}

/// A locked repository: the library's error states the fact and names no
/// flag (a program or the HTTP API has none); the command line prints it
/// with its own advice, `--retry-lock` and `cairn unlock`, and exits 13.
#[test]
fn the_locked_error_has_the_command_lines_advice_only_on_the_command_line() {
    let d = Dir::new();
    let repo_dir = d.join("repo");
    let src = d.join("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("f"), b"data").expect("write");
    let repo = init_repo(&repo_dir);
    let held = repo.lock(true, "prune").expect("exclusive lock");

    let other = super::util::open_repo(&repo_dir);
    let e = other.lock(false, "backup").expect_err("locked");
    assert!(matches!(e, cairn::Error::Locked { .. }), "{e}");
    assert_eq!(e.kind(), cairn::ErrorKind::Locked);
    let text = e.to_string();
    assert!(
        text.starts_with(
            "cannot backup: the repository is locked (an exclusive lock of `prune` by "
        ) && text.ends_with(')'),
        "{text}"
    );
    assert!(!text.contains("--"), "{text}");
    assert!(!text.contains("cairn unlock"), "{text}");

    let o = run(cairn(&repo_dir, d.path()).args(["backup", "-q"]).arg(&src));
    assert_eq!(o.status.code(), Some(13), "{}", stderr(&o));
    let err = stderr(&o);
    let holders = err
        .strip_prefix("cairn: error: cannot backup: the repository is locked (")
        .and_then(|s| s.strip_suffix(
            "); wait for it, pass --retry-lock DURATION to wait here, or if that process is gone run `cairn unlock`\n",
        ))
        .unwrap_or_else(|| panic!("not the locked error with its advice: {err}"));
    assert!(
        holders.starts_with("an exclusive lock of `prune` by ") && !holders.contains(';'),
        "{holders}"
    );
    drop(held);
}

/// Removing a key the repository does not have is a reference to nothing:
/// kind NotFound, exit code 1 as before.
#[test]
fn removing_a_key_that_is_not_there_is_not_found() {
    let d = Dir::new();
    let repo = init_repo(&d.join("repo"));
    let id: cairn::KeyId = "00".repeat(32).parse().expect("key id");
    let e = repo.remove_key(&id).expect_err("no such key");
    assert_eq!(e.kind(), cairn::ErrorKind::NotFound, "{e}");
    assert_eq!(e.to_string(), format!("no key {id} in this repository"));
}
