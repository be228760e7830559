//! Streams as backups: `--stdin`, `--stdin-from-command`, and `dump` of the
//! stored stream, up to a real PostgreSQL dump and restore.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::util::{Dir, Rng, cairn, json_of, open_repo, run, stderr, stdout};

/// Runs `c` with `input` on its standard input (written from a thread, so
/// a large input cannot deadlock against the output).
fn run_with_stdin(c: &mut Command, input: Vec<u8>) -> Output {
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    let mut pipe = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || pipe.write_all(&input));
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("writer").expect("write stdin");
    eprintln!(
        "$ {c:?}\nstatus: {}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn snapshot_count(repo: &Path, home: &Path) -> usize {
    let o = run(cairn(repo, home).args(["snapshots", "--json"]));
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    v.as_array().expect("array").len()
}

/// The repository's pack files (what a failed backup must not leave).
fn packs(repo: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in fs::read_dir(repo.join("data")).expect("data") {
        for f in fs::read_dir(sub.expect("entry").path()).expect("subdir") {
            out.push(f.expect("entry").path());
        }
    }
    out.sort();
    out
}

fn summary(o: &Output) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("backup --json");
    v["summary"].clone()
}

#[test]
fn stdin_round_trips_through_dump_and_dedupes() {
    let d = Dir::new();
    let repo = d.join("repo");
    assert!(run(cairn(&repo, d.path()).arg("init")).status.success());
    let data = Rng::seeded(7).bytes(6 << 20);
    let o = run_with_stdin(
        cairn(&repo, d.path()).args(["--json", "backup", "--stdin", "--stdin-name", "blob.bin"]),
        data.clone(),
    );
    assert!(o.status.success());
    let s = summary(&o);
    assert_eq!(s["files_new"], 1);
    assert_eq!(s["total_size"], data.len());
    assert!(s["bytes_added"].as_u64().expect("bytes_added") >= data.len() as u64);

    // Both spellings of the name stream the same bytes back.
    for name in ["blob.bin", "/blob.bin"] {
        let o = cairn(&repo, d.path())
            .args(["dump", "latest", name])
            .output()
            .expect("dump");
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(o.stdout == data, "dump of {name} differs from the input");
    }

    // Where the stream lives and how it is recorded.
    let r = open_repo(&repo);
    let (_, snap) = r.find_snapshot("latest").expect("latest");
    assert_eq!(snap.paths, vec![b"/blob.bin".to_vec()]);
    let node = cairn::find_node(&r, &snap.tree, b"/blob.bin")
        .expect("find")
        .expect("node");
    assert_eq!(node.mode, 0o600);
    assert_eq!(node.uid, nix::unistd::getuid().as_raw());
    assert_eq!(node.size, data.len() as u64);
    let age = jiff::Timestamp::now().as_second() - node.mtime;
    assert!((0..120).contains(&age), "mtime is the backup's time");

    // The same stream again: only a new tree (its mtime differs) is added,
    // and the previous stream snapshot is its parent.
    let o = run_with_stdin(
        cairn(&repo, d.path()).args(["--json", "backup", "--stdin", "--stdin-name", "blob.bin"]),
        data.clone(),
    );
    assert!(o.status.success());
    let s = summary(&o);
    assert_eq!(s["files_changed"], 1);
    let added = s["bytes_added"].as_u64().expect("bytes_added");
    assert!(added < 4096, "a repeated stream added {added} bytes");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(
        v["parent"].is_string(),
        "the first stream snapshot is the parent"
    );

    // Restore puts it at TARGET/NAME with mode 0600.
    let o = run(cairn(&repo, d.path())
        .args(["restore", "latest", "--target"])
        .arg(d.join("out")));
    assert!(o.status.success());
    let restored = d.join("out/blob.bin");
    assert!(fs::read(&restored).expect("restored") == data);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&restored).expect("meta").permissions().mode() & 0o777,
        0o600
    );
    super::util::assert_verifies(&open_repo(&repo));
}

#[test]
fn empty_stdin_is_an_empty_file() {
    let d = Dir::new();
    let repo = d.join("repo");
    assert!(run(cairn(&repo, d.path()).arg("init")).status.success());
    let o = run_with_stdin(
        cairn(&repo, d.path()).args(["backup", "--stdin", "--stdin-name", "empty"]),
        Vec::new(),
    );
    assert!(o.status.success());
    let o = run(cairn(&repo, d.path()).args(["dump", "latest", "empty"]));
    assert!(o.status.success());
    assert!(o.stdout.is_empty());
}

#[test]
fn stdin_from_command_stores_its_output() {
    let d = Dir::new();
    let repo = d.join("repo");
    assert!(run(cairn(&repo, d.path()).arg("init")).status.success());
    let o = run(cairn(&repo, d.path()).args([
        "backup",
        "--stdin-from-command",
        "out.txt",
        "--",
        "sh",
        "-c",
        "echo hello; echo 'progress note' >&2; echo world",
    ]));
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("progress note"),
        "the command's stderr is passed through"
    );
    let o = run(cairn(&repo, d.path()).args(["dump", "latest", "out.txt"]));
    assert_eq!(o.stdout, b"hello\nworld\n");
}

#[test]
fn failing_command_saves_no_snapshot_and_no_packs() {
    let d = Dir::new();
    let repo = d.join("repo");
    assert!(run(cairn(&repo, d.path()).arg("init")).status.success());
    let before = (snapshot_count(&repo, d.path()), packs(&repo));

    let o = run(cairn(&repo, d.path()).args([
        "backup",
        "--stdin-from-command",
        "x.sql",
        "--",
        "sh",
        "-c",
        "echo partial; exit 3",
    ]));
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("exit status: 3"), "{e}");
    assert!(
        e.contains("sh -c echo partial; exit 3"),
        "names the command: {e}"
    );
    assert!(e.contains("no snapshot was saved"), "{e}");

    // Output large enough to have filled packs before the failure: they
    // are deleted again, and the command's last stderr lines are repeated.
    let o = run(cairn(&repo, d.path()).args([
        "backup",
        "--stdin-from-command",
        "x.sql",
        "--",
        "sh",
        "-c",
        "head -c 40000000 /dev/urandom; echo 'dump: disk on fire' >&2; exit 5",
    ]));
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("exit status: 5"), "{e}");
    assert!(
        e.contains("its stderr ended with: dump: disk on fire"),
        "{e}"
    );

    // Killed by a signal.
    let o = run(cairn(&repo, d.path()).args([
        "backup",
        "--stdin-from-command",
        "x.sql",
        "--",
        "sh",
        "-c",
        "echo partial; kill -9 $$",
    ]));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("SIGKILL"), "{}", stderr(&o));

    // A command that does not exist.
    let o = run(cairn(&repo, d.path()).args([
        "backup",
        "--stdin-from-command",
        "x.sql",
        "--",
        "no-such-dump-program",
        "db",
    ]));
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("`no-such-dump-program db` could not be started"),
        "{e}"
    );
    assert!(e.contains("PATH"), "says what to check: {e}");

    assert_eq!(
        (snapshot_count(&repo, d.path()), packs(&repo)),
        before,
        "failed backups left no snapshot and no packs"
    );
    super::util::assert_verifies(&open_repo(&repo));
}

#[test]
fn bad_stream_names_and_mixed_sources_are_refused() {
    let d = Dir::new();
    let repo = d.join("repo");
    assert!(run(cairn(&repo, d.path()).arg("init")).status.success());
    for name in ["a/b", "..", ".", ""] {
        let o = run_with_stdin(
            cairn(&repo, d.path()).args(["backup", "--stdin", "--stdin-name", name]),
            b"x".to_vec(),
        );
        assert_eq!(o.status.code(), Some(1), "name {name:?}");
        assert!(stderr(&o).contains("plain file name"), "{}", stderr(&o));
    }
    let o = run(cairn(&repo, d.path())
        .args(["backup", "--stdin"])
        .arg(d.path()));
    assert_eq!(o.status.code(), Some(2), "paths and a stream together");
    let o = run(cairn(&repo, d.path()).args(["backup", "--stdin-from-command", "x"]));
    assert_eq!(o.status.code(), Some(2), "no command after --");
    assert_eq!(snapshot_count(&repo, d.path()), 0);
}

// ------------------------------------------------------------ PostgreSQL --

/// A throwaway PostgreSQL cluster on loopback, in a temporary directory,
/// stopped when dropped. As root, the server runs as the `postgres` user
/// (or `nobody`), because PostgreSQL refuses to run as root.
struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    user: Option<&'static str>,
    port: u16,
    _dir: Dir,
}

impl Cluster {
    fn start() -> Self {
        let bin = postgres_bin();
        let dir = Dir::new();
        let user = if nix::unistd::geteuid().is_root() {
            let user = if nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .is_some()
            {
                "postgres"
            } else {
                "nobody"
            };
            let ok = Command::new("chown")
                .arg(format!("{user}:"))
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(ok.success(), "chown the cluster directory to {user}");
            Some(user)
        } else {
            None
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let cluster = Self {
            data: dir.join("data"),
            bin,
            user,
            port,
            _dir: dir,
        };
        let dir = cluster._dir.path().to_path_buf();
        let o = run(cluster
            .as_server("initdb")
            .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
            .arg(&cluster.data));
        assert!(o.status.success(), "initdb failed");
        let o = run(cluster
            .as_server("pg_ctl")
            .arg("-D")
            .arg(&cluster.data)
            .arg("-l")
            .arg(dir.join("log"))
            .arg("-o")
            .arg(format!(
                "-k {} -p {} -h 127.0.0.1 -c fsync=off",
                dir.display(),
                port
            ))
            .args(["-w", "start"]));
        if !o.status.success() {
            let log = fs::read_to_string(dir.join("log")).unwrap_or_default();
            panic!("pg_ctl start failed; server log:\n{log}");
        }
        cluster
    }

    /// A server program, run as the cluster's user.
    fn as_server(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        let mut c = match self.user {
            Some(user) => {
                let mut c = Command::new("setpriv");
                c.args([
                    &format!("--reuid={user}"),
                    &format!("--regid={user}"),
                    "--clear-groups",
                ])
                .arg(exe);
                c
            }
            None => Command::new(exe),
        };
        c.current_dir(self._dir.path());
        c
    }

    /// Connection arguments for the client programs.
    fn conn(&self) -> Vec<String> {
        vec![
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
            "-U".into(),
            "postgres".into(),
        ]
    }

    fn psql(&self, db: &str) -> Command {
        let mut c = Command::new(self.bin.join("psql"));
        c.args(self.conn())
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", db]);
        c
    }

    /// Runs SQL in `db`; returns its unaligned output.
    fn sql(&self, db: &str, sql: &str) -> String {
        let o = run(self.psql(db).args(["-c", sql]));
        assert!(o.status.success(), "psql failed: {sql}");
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    }

    /// Row count and a checksum of every row of each table, in id order.
    fn fingerprint(&self, db: &str) -> Vec<String> {
        ["users", "orders", "notes"]
            .iter()
            .map(|t| {
                self.sql(
                    db,
                    &format!(
                        "SELECT '{t}', count(*), md5(string_agg(x::text, ',' ORDER BY id)) FROM {t} x"
                    ),
                )
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .as_server("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// The newest installed PostgreSQL's program directory; fails the test
/// when there is none, since CI installs it.
fn postgres_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run .ci/run's apt-get line, `apt-get install -y -qq postgresql`"
        ),
    }
}

#[test]
fn postgres_dump_backs_up_and_restores() {
    let pg = Cluster::start();
    let d = Dir::new();
    let repo = d.join("repo");
    assert!(run(cairn(&repo, d.path()).arg("init")).status.success());

    pg.sql("postgres", "CREATE DATABASE appdb");
    pg.sql(
        "appdb",
        "CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL, email text);
         CREATE TABLE orders (id serial PRIMARY KEY, user_id int REFERENCES users(id),
                              amount numeric(10,2), placed timestamptz);
         CREATE TABLE notes (id int PRIMARY KEY, body text, tags text[]);
         INSERT INTO users (name, email)
           SELECT 'user ' || i, CASE WHEN i % 7 = 0 THEN NULL ELSE 'u' || i || '@example.org' END
           FROM generate_series(1, 2000) i;
         INSERT INTO orders (user_id, amount, placed)
           SELECT 1 + i % 2000, (i * 37 % 100000) / 100.0,
                  timestamptz '2026-01-01 00:00+00' + i * interval '17 minutes'
           FROM generate_series(1, 20000) i;
         INSERT INTO notes VALUES
           (1, 'tab	newline
and ''quotes'' and \\backslash', ARRAY['a', 'b']),
           (2, 'ünïcödé ✓', '{}'),
           (3, NULL, NULL);",
    );
    let original = pg.fingerprint("appdb");
    assert_eq!(original.len(), 3);
    assert!(original[1].starts_with("orders|20000|"), "{original:?}");

    let pg_dump = pg.bin.join("pg_dump");
    let o = run(cairn(&repo, d.path())
        .args(["backup", "--stdin-from-command", "db.sql", "--"])
        .arg(&pg_dump)
        .args(pg.conn())
        .arg("appdb"));
    assert!(o.status.success(), "backup of pg_dump failed");
    assert_eq!(snapshot_count(&repo, d.path()), 1);

    // Change the data after the backup.
    pg.sql(
        "appdb",
        "UPDATE users SET name = 'changed' WHERE id % 3 = 0;
         DELETE FROM orders WHERE id > 15000;
         INSERT INTO notes VALUES (4, 'after the backup', NULL);",
    );
    assert_ne!(pg.fingerprint("appdb"), original);

    // Restore the dump into a fresh database: cairn dump | psql.
    pg.sql("postgres", "CREATE DATABASE restored");
    let mut dump = cairn(&repo, d.path())
        .args(["dump", "latest", "db.sql"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("cairn dump");
    let o = pg
        .psql("restored")
        .stdin(dump.stdout.take().expect("dump stdout"))
        .output()
        .expect("psql");
    assert!(
        dump.wait().expect("wait dump").success(),
        "cairn dump failed"
    );
    assert!(
        o.status.success(),
        "psql restore failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(pg.fingerprint("restored"), original);

    // A dump of a database that does not exist fails the backup, shows
    // pg_dump's error and leaves no snapshot.
    let o = run(cairn(&repo, d.path())
        .args(["backup", "--stdin-from-command", "db.sql", "--"])
        .arg(&pg_dump)
        .args(pg.conn())
        .arg("no_such_db"));
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("no_such_db"), "{e}");
    assert!(
        e.contains("does not exist"),
        "pg_dump's error is shown: {e}"
    );
    assert!(e.contains("exit status: 1"), "{e}");
    assert!(e.contains("no snapshot was saved"), "{e}");
    assert_eq!(snapshot_count(&repo, d.path()), 1);
    super::util::assert_verifies(&open_repo(&repo));
}

/// An application whose database component is a PostgreSQL dump command:
/// `cairn snap` stores the dump, `restore --component db` takes a safety
/// dump and loads the stored one with the profile's restore command, and
/// the printed undo command puts the changed data back.
#[test]
fn postgres_app_component_snaps_and_restores_in_place() {
    let pg = Cluster::start();
    let d = Dir::new();
    let repo = d.join("repo");
    assert!(run(cairn(&repo, d.path()).arg("init")).status.success());
    pg.sql("postgres", "CREATE DATABASE shop");
    pg.sql(
        "shop",
        "CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL, email text);
         CREATE TABLE orders (id serial PRIMARY KEY, user_id int REFERENCES users(id), amount numeric(10,2));
         CREATE TABLE notes (id int PRIMARY KEY, body text);
         INSERT INTO users (name, email) SELECT 'user ' || i, 'u' || i || '@example.org' FROM generate_series(1, 500) i;
         INSERT INTO orders (user_id, amount) SELECT 1 + i % 500, i / 100.0 FROM generate_series(1, 3000) i;
         INSERT INTO notes VALUES (1, 'first');",
    );
    let original = pg.fingerprint("shop");
    let app = d.join("app");
    fs::create_dir_all(&app).expect("app dir");
    let quote = |args: Vec<String>| {
        args.iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut dump = vec![pg.bin.join("pg_dump").display().to_string()];
    dump.extend(pg.conn());
    dump.extend(["--clean".into(), "--if-exists".into(), "shop".into()]);
    let mut load = vec![pg.bin.join("psql").display().to_string()];
    load.extend(pg.conn());
    load.extend(
        ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "shop"]
            .iter()
            .map(|s| (*s).to_owned()),
    );
    let profile = app.join("cairn.toml");
    fs::write(
        &profile,
        format!(
            "app = \"pgshop\"\n[components.db]\ndump = [{}]\nrestore = [{}]\nname = \"shop.sql\"\n",
            quote(dump),
            quote(load)
        ),
    )
    .expect("profile");
    let cmd = || {
        let mut c = cairn(&repo, d.path());
        c.current_dir(&app);
        c
    };
    let o = run(cmd().args(["snap", "--json"]));
    assert!(o.status.success(), "snap: {}", stderr(&o));
    let snap = json_of(&o);
    let id = snap["id"].as_str().expect("id").to_owned();
    assert_eq!(snap["app"]["components"][0]["kind"], "command");
    assert_eq!(snap["app"]["components"][0]["paths"][0], "/shop.sql");

    pg.sql(
        "shop",
        "DELETE FROM orders WHERE id > 100; UPDATE users SET name = 'x'; INSERT INTO notes VALUES (2, 'later');",
    );
    let changed = pg.fingerprint("shop");
    assert_ne!(changed, original);

    let o = run(cmd().args(["restore", &id, "--component", "db", "--dry-run"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        pg.fingerprint("shop"),
        changed,
        "dry run changed the database"
    );
    let o = run(cmd().args(["restore", &id, "--component", "db"]));
    assert!(o.status.success(), "restore: {}", stderr(&o));
    assert_eq!(pg.fingerprint("shop"), original);
    let text = stdout(&o);
    let undo = text
        .lines()
        .find_map(|l| l.strip_prefix("to undo: "))
        .unwrap_or_else(|| panic!("no undo command in {text}"))
        .to_owned();
    let args: Vec<&str> = undo.split_whitespace().skip(1).collect();
    let o = run(cmd().args(&args));
    assert!(o.status.success(), "undo: {}", stderr(&o));
    assert_eq!(pg.fingerprint("shop"), changed, "undo did not restore");
    let o = run(cmd().args(["verify", "--read-data"]));
    assert!(o.status.success(), "verify: {}", stderr(&o));
}
