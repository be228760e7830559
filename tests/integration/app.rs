//! Application snapshots: the sample application in tests/fixtures goes
//! through `cairn snap`, `cairn snapshots`, `cairn restore --component db`
//! (safety snapshot, atomic replace, undo), `cairn run` and `forget --app`,
//! as a user runs them in the application's directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rusqlite::Connection;
use serde_json::Value;

use super::util::{Dir, PASSWORD, json_of, open_repo, run, stderr, stdout};

/// The sample application, copied to a temporary directory with its
/// database built from `prisma/seed.sql`.
struct App {
    dir: Dir,
}

impl App {
    fn new() -> Self {
        let dir = Dir::new();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sample-app");
        super::util::copy_tree(&fixture, &dir.join("app"));
        let app = Self { dir };
        let db = Connection::open(app.db()).expect("db");
        db.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .expect("wal");
        let seed = fs::read_to_string(app.root().join("prisma/seed.sql")).expect("seed");
        db.execute_batch(&seed).expect("seed");
        // Enough rows for the database to span many pages.
        db.execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
             INSERT INTO appointments (user_id, starts_at, note)
             SELECT 1 + i % 3, '2027-01-01T00:00:00Z', printf('booking %d %s', i, hex(randomblob(40))) FROM n;",
        )
        .expect("rows");
        drop(db);
        app.git(&["init", "-q", "-b", "main"]);
        fs::write(
            app.root().join(".gitignore"),
            "node_modules/\n.next/\n*.log\n*.db\n*.db-*\n.env\n",
        )
        .expect("gitignore");
        app.git(&["add", "-A"]);
        app.git(&["commit", "-q", "-m", "sample app"]);
        app
    }

    fn root(&self) -> PathBuf {
        self.dir.join("app")
    }

    fn db(&self) -> PathBuf {
        self.root().join("prisma/dev.db")
    }

    fn repo(&self) -> PathBuf {
        self.dir.join("repo")
    }

    fn git(&self, args: &[&str]) -> String {
        let o = Command::new("git")
            .arg("-C")
            .arg(self.root())
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .output()
            .expect("git");
        assert!(o.status.success(), "git {args:?}: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    }

    /// `cairn` run in the application's directory: the repository comes
    /// from its cairn.toml, not from CAIRN_REPO.
    fn cairn(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cairn"));
        c.current_dir(self.root())
            .env_remove("CAIRN_REPO")
            .env_remove("CAIRN_PROFILE")
            .env("CAIRN_PASSWORD", PASSWORD)
            .env("CAIRN_CACHE_DIR", self.dir.join("cache"))
            .env("HOME", self.dir.path());
        c
    }

    fn ok(&self, args: &[&str]) -> Output {
        let o = run(self.cairn().args(args));
        assert!(o.status.success(), "cairn {args:?}: {}", stderr(&o));
        o
    }

    /// `cairn snap` with `args`: the new snapshot's id.
    fn snap(&self, args: &[&str]) -> String {
        let o = self.ok(&[&["snap", "--json"][..], args].concat());
        json_of(&o)["id"].as_str().expect("id").to_owned()
    }

    fn verify(&self) {
        let o = self.ok(&["verify", "--read-data"]);
        assert!(stdout(&o).contains("no problems found"), "{}", stdout(&o));
    }
}

/// Every row of every table, typed, for comparing databases.
fn rows(db: &Path) -> Vec<(String, Vec<Vec<rusqlite::types::Value>>)> {
    let c =
        Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open");
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("check");
    assert_eq!(ok, "ok", "{}", db.display());
    let mut names: Vec<String> = c
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
        .expect("schema")
        .query_map([], |r| r.get(0))
        .expect("names")
        .map(|n| n.expect("name"))
        .collect();
    names.retain(|n| !n.starts_with("sqlite_"));
    names
        .into_iter()
        .map(|t| {
            let mut stmt = c
                .prepare(&format!("SELECT * FROM \"{t}\" ORDER BY rowid"))
                .expect("select");
            let n = stmt.column_count();
            let all = stmt
                .query_map([], |r| (0..n).map(|i| r.get(i)).collect())
                .expect("rows")
                .map(|r| r.expect("row"))
                .collect();
            (t, all)
        })
        .collect()
}

fn snapshot<'a>(list: &'a Value, id: &str) -> &'a Value {
    list.as_array()
        .expect("list")
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("snapshot {id} not listed"))
}

#[test]
fn app_snap_lists_components_git_and_row_counts_and_excludes_dependencies() {
    let app = App::new();
    let head = app.git(&["rev-parse", "HEAD"]);
    let o = app.ok(&["init"]);
    assert!(app.repo().join("config").exists(), "{}", stdout(&o));
    let id = app.snap(&[]);

    let list = json_of(&app.ok(&["snapshots", "--json"]));
    let s = snapshot(&list, &id);
    assert_eq!(s["app"]["name"], "sample-shop");
    let comps: Vec<&str> = s["app"]["components"]
        .as_array()
        .expect("components")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(comps, ["code", "config", "db"]);
    assert_eq!(s["app"]["git"]["commit"], head.as_str());
    assert_eq!(s["app"]["git"]["branch"], "main");
    assert_eq!(s["app"]["git"]["dirty"], false, "cairn.toml is committed");
    assert!(!s["hostname"].as_str().unwrap_or_default().is_empty());
    let db = app.db().canonicalize().expect("db path");
    assert_eq!(s["databases"][0]["path"], db.to_str().expect("utf-8"));
    let tables = &s["databases"][0]["tables"];
    assert_eq!(tables[0]["name"], "appointments");
    assert_eq!(tables[0]["rows"], 3003);
    assert_eq!(tables[1]["name"], "users");
    assert_eq!(tables[1]["rows"], 3);

    let text = stdout(&app.ok(&["snapshots"]));
    assert!(
        text.contains("app sample-shop [code, config, db]")
            && text.contains(&format!("git main {}", &head[..10])),
        "{text}"
    );

    // node_modules, .next and logs are not stored; code, config and the
    // database are, the database without its -wal and -shm files.
    let ls = json_of(&app.ok(&["ls", &id, "--json"]));
    let paths: Vec<String> = ls
        .as_array()
        .expect("ls")
        .iter()
        .map(|n| n["path"].as_str().expect("path").to_owned())
        .collect();
    let root = app.root().canonicalize().expect("root");
    let has = |rel: &str| paths.iter().any(|p| Path::new(p) == root.join(rel));
    for stored in [
        "src/index.js",
        "src/lib/db.js",
        "public/robots.txt",
        ".env",
        "package.json",
        "cairn.toml",
        "prisma/dev.db",
        "prisma/seed.sql",
    ] {
        assert!(has(stored), "{stored} missing from {paths:?}");
    }
    for left_out in [
        "node_modules",
        ".next",
        "server.log",
        ".git",
        "prisma/dev.db-wal",
    ] {
        assert!(!has(left_out), "{left_out} stored: {paths:?}");
    }
    let db_node = ls
        .as_array()
        .expect("ls")
        .iter()
        .find(|n| Path::new(n["path"].as_str().unwrap_or_default()) == db)
        .expect("db node");
    assert_eq!(db_node["tables"][1]["rows"], 3, "{db_node}");
    let text = stdout(&app.ok(&["ls", &id]));
    assert!(
        text.contains("[database ") && text.contains("appointments 3003, users 3"),
        "{text}"
    );

    // One component alone; a component that does not exist is an error
    // listing those that do.
    let only = json_of(&app.ok(&["snap", "--component", "db", "--json"]));
    assert_eq!(only["app"]["components"].as_array().map(Vec::len), Some(1));
    let o = run(app.cairn().args(["snap", "--component", "cache"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no component 'cache'") && stderr(&o).contains("code, config, db"),
        "{}",
        stderr(&o)
    );
    app.verify();
}

#[test]
fn app_restore_component_db_takes_a_safety_snapshot_replaces_atomically_and_undoes() {
    let app = App::new();
    app.ok(&["init"]);
    let before = rows(&app.db());
    let id = app.snap(&[]);

    // The application goes on: rows deleted, a table added, and a config
    // change that a database restore must not touch.
    let c = Connection::open(app.db()).expect("open");
    c.execute_batch(
        "DELETE FROM appointments WHERE id > 100; CREATE TABLE audit (x); INSERT INTO audit VALUES (1);",
    )
    .expect("change");
    drop(c);
    let changed = rows(&app.db());
    assert_ne!(before, changed);
    fs::write(app.root().join(".env"), "DATABASE_URL=changed\n").expect("env");

    // A dry run says what would change and changes nothing.
    let bytes = fs::read(app.db()).expect("db");
    let dry = json_of(&app.ok(&["restore", &id, "--component", "db", "--dry-run", "--json"]));
    assert_eq!(dry["files"][0]["action"], "replace", "{dry}");
    assert!(dry["safety_snapshot"].is_null(), "{dry}");
    let appts = dry["files"][0]["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| t["name"] == "appointments")
        .expect("appointments")
        .clone();
    assert_eq!(
        (appts["now"].as_u64(), appts["snapshot"].as_u64()),
        (Some(100), Some(3003))
    );
    assert_eq!(
        fs::read(app.db()).expect("db"),
        bytes,
        "dry run changed the db"
    );
    let count = |app: &App| {
        json_of(&app.ok(&["snapshots", "--json"]))
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!(count(&app), 1, "dry run took a snapshot");

    // A process holding the database open keeps it from being replaced.
    let holder = Connection::open(app.db()).expect("hold");
    holder
        .query_row("SELECT count(*) FROM users", [], |_| Ok(()))
        .expect("read");
    let o = run(app.cairn().args(["restore", &id, "--component", "db"]));
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("is open in process")
            && stderr(&o).contains(
                ": stop the application first (it would go on using the old database), or pass --force\n"
            ),
        "{}",
        stderr(&o)
    );
    drop(holder);
    assert_eq!(rows(&app.db()), changed, "refused restore changed the db");

    let o = app.ok(&["restore", &id, "--component", "db"]);
    let text = stdout(&o);
    assert!(text.contains("safety snapshot"), "{text}");
    let undo = text
        .lines()
        .find_map(|l| l.strip_prefix("to undo: "))
        .unwrap_or_else(|| panic!("no undo command in {text}"))
        .to_owned();
    // The old database's log went with it.
    for leftover in ["prisma/dev.db-wal", "prisma/dev.db-shm"] {
        assert!(
            !app.root().join(leftover).exists(),
            "{leftover} left behind"
        );
    }

    // The restored database equals the snapshot, byte for byte with a
    // plain restore of it, and holds the rows it had.
    assert_eq!(rows(&app.db()), before);
    let out = app.dir.join("out");
    app.ok(&[
        "restore",
        &id,
        "--target",
        out.to_str().expect("utf-8"),
        "--include",
        app.db()
            .canonicalize()
            .expect("db")
            .to_str()
            .expect("utf-8"),
    ]);
    let plain = out.join(
        app.db()
            .canonicalize()
            .expect("db")
            .strip_prefix("/")
            .expect("absolute"),
    );
    assert_eq!(
        fs::read(&plain).expect("plain"),
        fs::read(app.db()).expect("db")
    );
    assert!(
        fs::read_dir(app.root().join("prisma"))
            .expect("dir")
            .all(|e| !e
                .expect("e")
                .file_name()
                .to_string_lossy()
                .starts_with(".cairn")),
        "temporary files left behind"
    );
    assert_eq!(
        fs::read_to_string(app.root().join(".env")).expect("env"),
        "DATABASE_URL=changed\n",
        "a database restore touched the config"
    );

    // The safety snapshot holds the database as it was before.
    let list = json_of(&app.ok(&["snapshots", "--json"]));
    let safety = list
        .as_array()
        .expect("list")
        .iter()
        .find(|s| {
            s["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == "safety"))
        })
        .expect("safety snapshot");
    assert_eq!(safety["app"]["components"][0]["name"], "db");

    // The printed command undoes the restore.
    let args: Vec<&str> = undo.split_whitespace().skip(1).collect();
    app.ok(&args);
    assert_eq!(rows(&app.db()), changed);

    // Config comes back only when asked for.
    app.ok(&["restore", &id, "--component", "config"]);
    assert_eq!(
        fs::read_to_string(app.root().join(".env")).expect("env"),
        fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sample-app/.env")
        )
        .expect("fixture env")
    );
    // Code is a directory: it is restored into a target, without the other
    // components' files.
    let o = run(app.cairn().args(["restore", &id, "--component", "code"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--target"), "{}", stderr(&o));
    let code = app.dir.join("code");
    app.ok(&[
        "restore",
        &id,
        "--component",
        "code",
        "--target",
        code.to_str().expect("utf-8"),
    ]);
    let root = code.join(
        app.root()
            .canonicalize()
            .expect("root")
            .strip_prefix("/")
            .expect("abs"),
    );
    assert!(root.join("src/index.js").exists());
    assert!(!root.join(".env").exists() && !root.join("prisma/dev.db").exists());
    app.verify();
    let repo = open_repo(&app.repo());
    super::util::assert_verifies(&repo);
}

#[test]
fn app_run_wraps_a_command_with_pre_and_post_snapshots_and_prints_the_restore_command() {
    let app = App::new();
    app.ok(&["init"]);
    let before = rows(&app.db());
    let ok = json_of(&app.ok(&["run", "--json", "--component", "db", "--", "true"]));
    assert_eq!(ok["success"], true);

    // A migration that changes the database and then fails.
    let migrate = "sqlite3 prisma/dev.db 'DROP TABLE appointments' && exit 7";
    let o = run(app
        .cairn()
        .args(["run", "--component", "db", "--", "sh", "-c", migrate]));
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let err = stderr(&o);
    let cmd = err
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("cairn") && l.contains("restore") && l.contains("--component db"))
        .unwrap_or_else(|| panic!("no restore command in {err}"))
        .to_owned();
    let list = json_of(&app.ok(&["snapshots", "--json"]));
    let tags: Vec<String> = list
        .as_array()
        .expect("list")
        .iter()
        .map(|s| {
            s["tags"]
                .as_array()
                .expect("tags")
                .iter()
                .map(|t| t.as_str().expect("tag"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    assert_eq!(tags, ["pre", "post", "pre", "post,failed"]);
    assert_ne!(rows(&app.db()), before);
    let args: Vec<&str> = cmd.split_whitespace().skip(1).collect();
    app.ok(&args);
    assert_eq!(
        rows(&app.db()),
        before,
        "the printed command did not restore"
    );

    // Retention from the profile, for this application's snapshots.
    let plan = json_of(&app.ok(&["forget", "--app", "--dry-run", "--json"]));
    assert_eq!(plan["dry_run"], true, "{plan}");

    // The audit log records the command each run wrapped, and how it ended.
    let log = json_of(&app.ok(&["log", "--json"]));
    let runs: Vec<&Value> = log["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["action"] == "run")
        .collect();
    assert_eq!(runs.len(), 2, "{log}");
    assert_eq!(runs[0]["target"], "true");
    assert_eq!(runs[0]["ok"], true);
    assert!(
        runs[1]["target"]
            .as_str()
            .is_some_and(|t| t.contains("DROP TABLE appointments"))
    );
    assert_eq!(runs[1]["ok"], false);
    app.verify();
}

#[test]
fn app_retention_keeps_the_rollback_point_run_printed_in_forget_and_daemon_jobs() {
    let app = App::new();
    let toml = app.root().join("cairn.toml");
    let profile = fs::read_to_string(&toml)
        .expect("profile")
        .replace("keep_last = 5\nkeep_daily = 7", "keep_hourly = 28");
    assert!(profile.contains("keep_hourly = 28"), "{profile}");
    fs::write(
        &toml,
        format!("{profile}\n[[jobs]]\nname = \"tidy\"\nevery = \"1h\"\ncomponents = [\"db\"]\nforget = true\n"),
    )
    .expect("profile");
    app.ok(&["init"]);
    let run_once = json_of(&app.ok(&["run", "--json", "--component", "db", "--", "true"]));
    let pre = run_once["pre"][0].as_str().expect("pre").to_owned();
    // keep_hourly keeps the newest of the hour: the post snapshot. The
    // pre snapshot, whose restore command run printed, stays for the
    // rollback window.
    let plan = json_of(&app.ok(&["forget", "--app", "--dry-run", "--json"]));
    let decision = plan["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["snapshots"].as_array().expect("snapshots").iter())
        .find(|s| s["id"] == pre.as_str())
        .expect("the pre snapshot is judged");
    assert_eq!(decision["keep"], true, "{plan}");
    assert!(
        decision["reasons"].to_string().contains("rollback 7d"),
        "{plan}"
    );
    // The daemon's job with forget = true applies the same rules.
    let o = run(app.cairn().args(["daemon", "--once", "--json"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let ids: Vec<String> = json_of(&app.ok(&["snapshots", "--json"]))
        .as_array()
        .expect("list")
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_owned())
        .collect();
    assert!(
        ids.contains(&pre),
        "the daemon's forget removed the rollback point"
    );
    app.verify();
}

#[test]
fn app_profile_errors_name_the_file_and_the_fix() {
    let app = App::new();
    let toml = app.root().join("cairn.toml");
    fs::write(
        &toml,
        "app = \"x\"\n[components.db]\nsqlite = \"a.db\"\npaths = [\"b\"]\n",
    )
    .expect("write");
    let o = run(app.cairn().args(["snap"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(toml.to_str().expect("utf-8")) && stderr(&o).contains("give one of"),
        "{}",
        stderr(&o)
    );
    fs::write(&toml, "app = \"x\"\ncomponents = 3\n").expect("write");
    let o = run(app.cairn().args(["snapshots"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cairn.toml"), "{}", stderr(&o));
    fs::write(
        &toml,
        "app = \"x\"\n[components.code]\npaths = [\"../elsewhere\"]\n",
    )
    .expect("write");
    let o = run(app.cairn().args(["snap"]));
    assert!(
        stderr(&o).contains("outside the application's root"),
        "{}",
        stderr(&o)
    );
    fs::write(
        &toml,
        "app = \"x\"\n[components.a]\npaths = [\".env\"]\n[components.b]\npaths = [\"./.env\"]\n",
    )
    .expect("write");
    let o = run(app.cairn().args(["snap"]));
    assert!(
        stderr(&o).contains("in both components a and b"),
        "{}",
        stderr(&o)
    );
    fs::write(
        &toml,
        "app = \"x\"\n[components.db]\nsqlite = \"missing.db\"\n",
    )
    .expect("write");
    let o = run(app
        .cairn()
        .args(["--repo", app.repo().to_str().expect("utf-8"), "init"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(app
        .cairn()
        .args(["--repo", app.repo().to_str().expect("utf-8"), "snap"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("missing.db does not exist"),
        "{}",
        stderr(&o)
    );
    // A sqlite component that names a text file: an error, not a snapshot
    // with a warning that it "looks like a SQLite database".
    fs::write(app.root().join("notes.txt"), "not a database\n").expect("write");
    fs::write(
        &toml,
        "app = \"x\"\n[components.db]\nsqlite = \"notes.txt\"\n",
    )
    .expect("write");
    let before = fs::read_dir(app.repo().join("snapshots")).map_or(0, Iterator::count);
    let o = run(app
        .cairn()
        .args(["--repo", app.repo().to_str().expect("utf-8"), "snap"]));
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("notes.txt is named as a SQLite database but is not one"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        fs::read_dir(app.repo().join("snapshots")).map_or(0, Iterator::count),
        before
    );
    // Without a profile, snap says how to make one.
    let o = run(app.cairn().current_dir(app.dir.path()).args([
        "--repo",
        app.repo().to_str().expect("utf-8"),
        "snap",
    ]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no application profile"),
        "{}",
        stderr(&o)
    );
}

/// The paths stored in snapshot `id`, relative to the application's root.
fn stored_paths(app: &App, id: &str) -> Vec<PathBuf> {
    let root = app.root().canonicalize().expect("root");
    json_of(&app.ok(&["ls", id, "--json"]))
        .as_array()
        .expect("ls")
        .iter()
        .filter_map(|n| {
            let p = Path::new(n["path"].as_str().unwrap_or_default());
            p.strip_prefix(&root).ok().map(Path::to_path_buf)
        })
        .collect()
}

#[test]
fn app_snap_of_some_components_leaves_the_other_components_paths_out() {
    let app = App::new();
    app.ok(&["init"]);
    // The database has a -wal beside it while the application runs.
    let live = Connection::open(app.db()).expect("db");
    live.execute_batch("INSERT INTO users (email, name) VALUES ('w@example.com', 'w')")
        .expect("write");
    let leaks = |paths: &[PathBuf]| -> Vec<PathBuf> {
        paths
            .iter()
            .filter(|p| {
                let s = p.to_string_lossy();
                s.starts_with("prisma/dev.db") || s == ".env" || s == "package.json"
            })
            .cloned()
            .collect()
    };

    // The CLI: code alone stores the code, not the database or config.
    let code = json_of(&app.ok(&["snap", "--component", "code", "--json"]));
    let paths = stored_paths(&app, code["id"].as_str().expect("id"));
    assert!(
        paths.iter().any(|p| p == Path::new("src/index.js")),
        "{paths:?}"
    );
    assert_eq!(
        leaks(&paths),
        Vec::<PathBuf>::new(),
        "code snapshot holds other components"
    );

    // code and config together: config's files, still no database.
    let two = json_of(&app.ok(&["snap", "-c", "code", "-c", "config", "--json"]));
    let paths = stored_paths(&app, two["id"].as_str().expect("id"));
    assert!(paths.iter().any(|p| p == Path::new(".env")), "{paths:?}");
    assert!(
        !paths.iter().any(|p| p.starts_with("prisma/dev.db")),
        "{paths:?}"
    );

    // A daemon job that snapshots code only follows the same rule.
    let toml = app.root().join("cairn.toml");
    let mut profile = fs::read_to_string(&toml).expect("profile");
    profile.push_str("\n[[jobs]]\nname = \"code\"\nevery = \"1h\"\ncomponents = [\"code\"]\n");
    fs::write(&toml, profile).expect("profile");
    let o = run(app.cairn().args(["daemon", "--once", "--json"]));
    assert!(o.status.success(), "daemon: {}", stderr(&o));
    let list = json_of(&app.ok(&["snapshots", "--json"]));
    let newest = list
        .as_array()
        .and_then(|l| l.last())
        .and_then(|s| s["id"].as_str())
        .expect("newest")
        .to_owned();
    let paths = stored_paths(&app, &newest);
    assert!(
        paths.iter().any(|p| p == Path::new("src/index.js")),
        "{paths:?}"
    );
    assert_eq!(
        leaks(&paths),
        Vec::<PathBuf>::new(),
        "daemon job's code snapshot"
    );
    drop(live);

    // A code snapshot as older versions took it, holding the database
    // and .env (here: taken while the profile had code alone): restoring
    // its code still leaves out what the profile now says is another
    // component's.
    let full = fs::read_to_string(&toml).expect("profile");
    fs::write(
        &toml,
        "app = \"sample-shop\"\nrepo = \"../repo\"\n[components.code]\npaths = [\".\"]\n",
    )
    .expect("profile");
    let old = app.snap(&["--component", "code"]);
    assert!(
        !leaks(&stored_paths(&app, &old)).is_empty(),
        "the old-style snapshot holds them"
    );
    fs::write(&toml, full).expect("profile");
    let target = app.dir.join("code-only");
    app.ok(&[
        "restore",
        &old,
        "--component",
        "code",
        "--target",
        target.to_str().expect("utf-8"),
    ]);
    let restored = super::util::files_under(&target);
    assert!(
        restored.iter().any(|p| p.ends_with("src/index.js")),
        "{restored:?}"
    );
    assert!(
        !restored
            .iter()
            .any(|p| p.ends_with(".env") || p.to_string_lossy().contains("dev.db")),
        "{restored:?}"
    );
    app.verify();
}

#[test]
fn app_latest_and_freshness_pass_over_the_safety_snapshot_of_a_restore() {
    let app = App::new();
    app.ok(&["init"]);
    let good = json_of(&app.ok(&["snap", "--json"]));
    let good = good["id"].as_str().expect("id").to_owned();
    // The database goes wrong; restoring the good snapshot in place takes
    // a safety snapshot of the broken state, now the newest snapshot.
    let db = Connection::open(app.db()).expect("db");
    db.execute_batch(
        "DELETE FROM appointments; INSERT INTO users (email) VALUES ('x@example.com')",
    )
    .expect("break");
    drop(db);
    let restored = json_of(&app.ok(&["restore", &good, "--component", "db", "--json"]));
    let safety = restored["safety_snapshot"]
        .as_str()
        .expect("safety")
        .to_owned();
    let list = json_of(&app.ok(&["snapshots", "--json"]));
    assert_eq!(
        list.as_array().and_then(|l| l.last()).map(|s| &s["id"]),
        Some(&Value::from(safety.clone()))
    );

    // `latest` is the newest ordinary snapshot: the good one.
    let out = app.dir.join("latest.json");
    app.ok(&[
        "db",
        "export",
        "latest",
        "--format",
        "json",
        "-o",
        out.to_str().expect("utf-8"),
    ]);
    let export: Value = serde_json::from_slice(&fs::read(&out).expect("export")).expect("json");
    let text = export.to_string();
    assert!(
        text.contains("booking 1 ") && !text.contains("x@example.com"),
        "exported the safety snapshot"
    );
    let ls = json_of(&app.ok(&["ls", "latest", "--json"]));
    assert!(
        ls.to_string().contains("\"rows\":3003"),
        "ls latest is not the good snapshot"
    );

    // Freshness: the database's newest backup is the good snapshot.
    let status = json_of(&app.ok(&["status", "--json"]));
    let sources = status["sources"].as_array().expect("sources");
    let db_source = sources
        .iter()
        .find(|s| s["component"] == "db")
        .expect("db source");
    assert_eq!(db_source["last_snapshot"], good.as_str(), "{status}");
    // The safety snapshot is still there, to undo the restore by id.
    app.ok(&["ls", &safety]);
    app.verify();
}

/// Runs a printed undo command (`cairn ... restore ...`) from `dir`.
fn run_undo(app: &App, cmd: &str, dir: &Path) -> Output {
    let args: Vec<&str> = cmd.split_whitespace().collect();
    assert_eq!(args.first(), Some(&"cairn"), "{cmd}");
    run(app.cairn().current_dir(dir).args(&args[1..]))
}

#[test]
fn app_db_restore_into_a_live_database_is_protected_like_restore_component() {
    let app = App::new();
    app.ok(&["init"]);
    let id = app.snap(&[]);
    let db = app.db();
    let c = Connection::open(&db).expect("db");
    c.execute_batch("UPDATE users SET name = 'changed since'")
        .expect("change");
    drop(c);
    let before = rows(&db);
    let count = |app: &App| {
        json_of(&app.ok(&["snapshots", "--json"]))
            .as_array()
            .map_or(0, Vec::len)
    };
    let snapshots = count(&app);

    // Open in another process (this test): refused, nothing changed.
    let holder = Connection::open(&db).expect("open");
    let args = [
        "db",
        "restore",
        &id,
        "--into",
        "prisma/dev.db",
        "--table",
        "users",
        "--drop-existing",
    ];
    let o = run(app.cairn().args(args));
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stderr(&o).contains("is open in"), "{}", stderr(&o));
    assert_eq!(rows(&db), before);
    assert_eq!(count(&app), snapshots, "a refused restore took a snapshot");

    // --force goes ahead, after a safety snapshot, and says how to undo.
    let o = app.ok(&[&args[..], &["--force", "--json"]].concat());
    drop(holder);
    let done = json_of(&o);
    let safety = done["safety_snapshot"].as_str().expect("safety").to_owned();
    let undo = done["undo"].as_str().expect("undo").to_owned();
    assert!(
        undo.contains(&safety[..8])
            && undo.contains("--component db")
            && undo.contains("--profile"),
        "{undo}"
    );
    assert_ne!(rows(&db), before, "the users table was restored");
    let listed = json_of(&app.ok(&["snapshots", "--json"]));
    let s = snapshot(&listed, &safety);
    assert!(s["tags"].to_string().contains("safety"), "{s}");

    // The undo command works from any directory: the password and the
    // repository come from the profile it names.
    let elsewhere = app.dir.join("elsewhere");
    fs::create_dir_all(&elsewhere).expect("mkdir");
    let o = run_undo(&app, &undo, &elsewhere);
    assert!(o.status.success(), "{undo}: {}", stderr(&o));
    assert_eq!(rows(&db), before, "undo brought the changed state back");

    // Text output names the safety snapshot and the command too.
    let o = app.ok(&args);
    assert!(
        stdout(&o).contains("safety snapshot") && stdout(&o).contains("to undo, run:"),
        "{}",
        stdout(&o)
    );
    app.verify();
}

#[test]
fn app_restore_to_the_root_replaces_live_files_only_after_a_safety_snapshot() {
    let app = App::new();
    app.ok(&["init"]);
    let id = app.snap(&[]);
    let index = app.root().join("src/index.js");
    let original = fs::read(&index).expect("index.js");
    fs::write(&index, b"edited\n").expect("edit");

    let o = app.ok(&[
        "restore",
        &id,
        "--component",
        "code",
        "--target",
        "/",
        "--json",
    ]);
    let done = json_of(&o);
    assert_eq!(fs::read(&index).expect("index.js"), original);
    let undo = done["undo"].as_str().expect("undo").to_owned();
    assert!(undo.contains("--target /"), "{undo}");
    let o = run_undo(&app, &undo, &app.dir.join("repo"));
    assert!(o.status.success(), "{undo}: {}", stderr(&o));
    assert_eq!(fs::read(&index).expect("index.js"), b"edited\n");

    // A database put back by a restore into / is protected as in place.
    let db = app.db().canonicalize().expect("db");
    let holder = Connection::open(&db).expect("open");
    let o = run(app.cairn().args([
        "restore",
        &id,
        "--target",
        "/",
        "--include",
        db.to_str().expect("utf-8"),
    ]));
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stderr(&o).contains("is open in"), "{}", stderr(&o));
    drop(holder);
    let c = Connection::open(&db).expect("db");
    c.execute_batch("DELETE FROM appointments").expect("change");
    drop(c);
    app.ok(&[
        "restore",
        &id,
        "--target",
        "/",
        "--include",
        db.to_str().expect("utf-8"),
    ]);
    let mut companions = fs::read_dir(db.parent().expect("dir"))
        .expect("ls")
        .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("dev.db-"));
    assert_eq!(
        companions.next(),
        None,
        "an old -wal was left beside the new database"
    );
    let n: i64 = Connection::open(&db)
        .expect("db")
        .query_row("SELECT count(*) FROM appointments", [], |r| r.get(0))
        .expect("count");
    assert_eq!(n, 3003);
    app.verify();
}

#[test]
fn app_children_never_see_the_repository_password() {
    let app = App::new();
    app.ok(&["init"]);
    // backup --stdin-from-command: the command's output is stored.
    app.ok(&["backup", "--stdin-from-command", "env.txt", "--", "env"]);
    let o = app.ok(&["dump", "latest", "/env.txt"]);
    let env = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(env.contains("HOME="), "{env}");
    assert!(
        !env.contains("CAIRN_PASSWORD") && !env.contains(PASSWORD),
        "{env}"
    );
    // cairn run: the wrapped command.
    let out = app.dir.join("run-env.txt");
    let script = format!("env > {}", out.display());
    app.ok(&["run", "--component", "config", "--", "sh", "-c", &script]);
    let env = fs::read_to_string(&out).expect("env");
    assert!(env.contains("HOME="), "{env}");
    assert!(
        !env.contains("CAIRN_PASSWORD") && !env.contains(PASSWORD),
        "{env}"
    );
}

#[test]
fn app_diff_shows_what_changed_in_a_captured_databases_tables() {
    let app = App::new();
    app.ok(&["init"]);
    let a = json_of(&app.ok(&["snap", "--component", "db", "--json"]));
    let c = Connection::open(app.db()).expect("db");
    c.execute_batch(
        "DELETE FROM appointments; CREATE TABLE audit (x); INSERT INTO audit VALUES (1)",
    )
    .expect("change");
    drop(c);
    let b = json_of(&app.ok(&["snap", "--component", "db", "--json"]));
    let (a, b) = (a["id"].as_str().expect("id"), b["id"].as_str().expect("id"));
    let text = stdout(&app.ok(&["diff", a, b]));
    assert!(text.contains("dev.db"), "{text}");
    assert!(text.contains("table appointments: 3003 → 0 rows"), "{text}");
    assert!(text.contains("table audit: - → 1 rows"), "{text}");
    assert!(
        !text.contains("table users"),
        "unchanged tables are not listed: {text}"
    );
    let json = json_of(&app.ok(&["diff", a, b, "--json"]));
    let db = json["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .find(|c| c["path"].as_str().is_some_and(|p| p.ends_with("dev.db")))
        .expect("the database changed");
    assert_eq!(db["tables"][0]["name"], "appointments");
    assert_eq!(db["tables"][0]["before"], 3003);
    assert_eq!(db["tables"][0]["after"], 0);
}

#[test]
fn app_first_snap_creates_the_repository_its_profile_names() {
    let app = App::new();
    assert!(!app.repo().exists());
    let o = app.ok(&["snap"]);
    assert!(
        stderr(&o).contains("created the repository") && stderr(&o).contains("cairn.toml"),
        "{}",
        stderr(&o)
    );
    assert!(app.repo().join("config").exists());
    // With the password the profile's source gives: it opens again.
    app.ok(&["snapshots"]);
    app.verify();
}

#[test]
fn app_a_component_in_the_other_snapshot_of_a_snap_is_named() {
    let app = App::new();
    let toml = app.root().join("cairn.toml");
    let mut profile = fs::read_to_string(&toml).expect("profile");
    profile.push_str(
        "\n[components.notes]\ndump = [\"sh\", \"-c\", \"echo notes\"]\nrestore = [\"sh\", \"-c\", \"cat > /dev/null\"]\nname = \"notes.txt\"\n",
    );
    fs::write(&toml, profile).expect("profile");
    app.ok(&["init"]);
    let done = json_of(&app.ok(&["snap", "--json"]));
    let list = done.as_array().expect("two snapshots");
    assert_eq!(list.len(), 2, "{done}");
    let files = list[0]["id"].as_str().expect("id");
    let dump = list[1]["id"].as_str().expect("id");
    let o = run(app
        .cairn()
        .args(["restore", files, "--component", "notes", "--dry-run"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no component 'notes'")
            && stderr(&o).ends_with(&format!(
                "; snapshot {d} of the same application, taken with it, has it: restore {d} --component notes\n",
                d = &dump[..8]
            )),
        "{}",
        stderr(&o)
    );
}

/// What keeps a component from being restored in place, by kind: a
/// restore command that fails (Stream), a component the snapshot lacks
/// (NotFound), a directory (invalid for in place), a database read back
/// that is not sound (Damaged: exit code 3, as for other unreadable data).
#[test]
fn app_in_place_restore_failures_have_their_kinds() {
    let app = App::new();
    let toml = app.root().join("cairn.toml");
    let mut profile = fs::read_to_string(&toml).expect("profile");
    profile.push_str(
        "\n[components.notes]\ndump = [\"sh\", \"-c\", \"echo notes\"]\nrestore = [\"false\"]\nname = \"notes.txt\"\n\n[components.junk]\nsqlite = \"junk.db\"\n",
    );
    fs::write(&toml, profile).expect("profile");
    // SQLite's header, then nothing SQLite can read: stored raw, with a
    // warning.
    let junk = app.root().join("junk.db");
    let mut bytes = b"SQLite format 3\0\x10\x00".to_vec();
    bytes.resize(4096, 0xee);
    fs::write(&junk, &bytes).expect("junk");
    app.ok(&["init"]);
    let done = json_of(&app.ok(&["snap", "--json"]));
    let list = done.as_array().expect("two snapshots");
    let files = list[0]["id"].as_str().expect("id").to_owned();
    let dump = list[1]["id"].as_str().expect("id").to_owned();

    let repo = open_repo(&app.repo());
    let profile = cairn::Profile::load(&toml).expect("profile");
    let restore = |id: &str, component: &str| {
        let (id, snap) = repo.find_snapshot(id).expect("snapshot");
        let opts = cairn::ComponentRestoreOptions {
            component: component.to_owned(),
            cache_dir: Some(app.dir.join("cache")),
            profile: Some(profile.clone()),
            ..cairn::ComponentRestoreOptions::default()
        };
        cairn::restore_component(&repo, id, &snap, &opts, &cairn::NoProgress).expect_err("refused")
    };
    let e = restore(&dump, "notes");
    assert_eq!(e.kind(), cairn::ErrorKind::Stream, "{e}");
    assert!(
        e.to_string()
            .starts_with("restoring component notes with `false` failed: it exited with exit status: 1; safety snapshot "),
        "{e}"
    );
    let e = restore(&files, "notes");
    assert_eq!(e.kind(), cairn::ErrorKind::NotFound, "{e}");
    let e = restore(&files, "code");
    assert_eq!(e.kind(), cairn::ErrorKind::InvalidInput, "{e}");

    // Changed since (still with the header: the safety snapshot captures
    // it as a named database).
    bytes.resize(8192, 0xdd);
    fs::write(&junk, &bytes).expect("change");
    let e = restore(&files, "junk");
    assert!(e.is_damage(), "{e:?}");
    let o = run(app.cairn().args(["restore", &files, "--component", "junk"]));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is not a sound database")
            && stderr(&o).contains("nothing was replaced"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        fs::read(&junk).expect("junk"),
        bytes,
        "nothing was replaced"
    );
}
