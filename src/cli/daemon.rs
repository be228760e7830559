//! `cairn daemon`: runs the `[[jobs]]` of one or more profiles on their
//! schedules ([`cairn::daemon`]), logging a line per run start and end on
//! standard error, until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use jiff::Timestamp;
use jiff::tz::TimeZone;

use cairn::{DaemonEvent, Profile, Repository};

use super::advice::describe;
use super::exit;
use super::global::Global;
use super::notify::{NotifyArgs, send_all};
use super::output::{Out, size};
use super::password;
use super::repo_open::{open_options, open_or_create};
use super::watch_notes::{note_json, note_of_json, note_text};

/// How long a run waits for a conflicting repository lock (another
/// process's prune) unless `--retry-lock` says otherwise: a scheduled run
/// should wait its turn rather than fail.
const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(600);

#[derive(Debug, Args)]
#[command(after_help = "\
Jobs are [[jobs]] tables in cairn.toml, for example:

  [[jobs]]
  name = \"nightly\"
  cron = \"0 2 * * *\"             # minute hour day-of-month month day-of-week
  timezone = \"Europe/London\"     # default: the system's zone; or cron = \"TZ=Europe/London 0 2 * * *\"
  components = [\"db\", \"code\"]    # default: all of them
  tags = [\"nightly\"]             # added to its snapshots
  forget = true                  # then apply [retention] to the app's snapshots
  prune = true                   # then prune
  verify = \"*/7\"                 # then verify: \"structure\", \"all\", \"N/M\", or \"*/M\" (next subset each run)

  [[jobs]]
  name = \"frequent\"
  every = \"6h\"                   # an interval: 30s, 10m, 6h, 1d
  components = [\"db\"]

The runs of one profile never overlap (also across processes); a job missed while the daemon was
down runs once when it starts again. An interval job that has never run runs at once on the first
start (so a new job is tried right away); a cron job waits for its first time. SIGTERM or SIGINT lets the current run finish, then exits 0;
a second one exits at once (safe: an interrupted run leaves no partial snapshot). State (last runs)
is kept in the cache directory's daemon/ folder. With --once, the jobs due or missed now run once
and cairn exits (1 if a run failed): for cron.")]
pub struct DaemonArgs {
    /// The profiles (cairn.toml files) whose jobs to run, besides the one
    /// --profile or CAIRN_PROFILE names. Without either: the nearest
    /// cairn.toml in the current directory or above.
    #[arg(value_name = "PROFILE")]
    profiles: Vec<PathBuf>,
    /// Run the jobs that are due or were missed now, each at most once,
    /// then exit instead of waiting.
    #[arg(long)]
    once: bool,
    /// Where an alert goes when a run fails.
    #[command(flatten)]
    notify: NotifyArgs,
}

/// The options of `g` as the command line and environment gave them,
/// before the profile found for the current directory filled in its
/// repository and password source (see `app::apply_profile`, which fills
/// only what was left open).
fn without_profile(g: &Global) -> Global {
    let mut base = g.clone();
    if let Some(p) = &g.loaded {
        if p.repo.is_some() && g.repo == p.repo {
            base.repo = None;
        }
        let from_profile = (p.password_file.is_some() || p.password_command.is_some())
            && g.password_file == p.password_file
            && g.password_command == p.password_command;
        if from_profile {
            base.password_file = None;
            base.password_command = None;
        }
    }
    base.loaded = None;
    base
}

/// The options for running `profile`: its repository and password source
/// where the command line and environment leave them open.
fn for_profile(base: &Global, profile: Profile) -> Global {
    let mut g = base.clone();
    if g.repo.is_none() {
        g.repo.clone_from(&profile.repo);
    }
    if !password::password_given(&g) {
        g.password_file.clone_from(&profile.password_file);
        g.password_command.clone_from(&profile.password_command);
    }
    g.profile = Some(profile.file.clone());
    g.loaded = Some(profile);
    g
}

/// Where the daemon keeps its state: `daemon/` in the cache directory
/// (also with --no-cache, which only turns the files cache off).
fn state_dir(g: &Global) -> Result<PathBuf> {
    let cache = match &g.cache_dir {
        Some(d) => d.clone(),
        None => directories::ProjectDirs::from("", "", "cairn")
            .map(|d| d.cache_dir().to_path_buf())
            .ok_or_else(|| {
                anyhow!(
                    "cannot find your home directory for the daemon's state: pass --cache-dir DIR"
                )
            })?,
    };
    Ok(cache.join("daemon"))
}

struct Host {
    /// The options per profile file.
    globals: Vec<Global>,
    out: Out,
    /// Where a failed run's alert goes, if anywhere.
    notifier: Option<cairn::notify::Notifier>,
}

impl Host {
    /// Sends a `failure` alert for each component of a failed run.
    fn alert(&self, profile: &Profile, record: &cairn::RunRecord) {
        let Some(error) = record.error.as_deref().filter(|_| !record.ok) else {
            return;
        };
        let repository = self
            .globals
            .iter()
            .find(|g| g.loaded.as_ref().is_some_and(|p| p.file == profile.file))
            .and_then(|g| g.repo.as_ref())
            .map_or_else(
                || "the default repository".to_owned(),
                |r| r.display().to_string(),
            );
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown".to_owned());
        let chosen = profile
            .jobs
            .iter()
            .find(|j| j.name == record.job)
            .map(|j| j.components.clone())
            .unwrap_or_default();
        let alerts: Vec<cairn::notify::Alert> = profile
            .components
            .iter()
            .filter(|c| chosen.is_empty() || chosen.contains(&c.name))
            .map(|c| {
                let source = cairn::Source {
                    app: profile.name.clone(),
                    component: c.name.clone(),
                    host: host.clone(),
                };
                cairn::notify::Alert::run_failed(&source, error, Timestamp::now(), &repository)
            })
            .collect();
        send_all(self.notifier.as_ref(), &alerts, &self.out);
    }
}

impl Host {
    /// The options for running `profile`.
    fn global(&self, profile: &Profile) -> cairn::Result<&Global> {
        self.globals
            .iter()
            .find(|g| g.loaded.as_ref().is_some_and(|p| p.file == profile.file))
            .ok_or_else(|| {
                cairn::Error::invalid(format!("no options for {}", profile.file.display()))
            })
    }
}

/// How long the watcher process may take to store what it read and exit
/// after SIGTERM before it is killed.
const WATCHER_STOP_WAIT: Duration = Duration::from_secs(60);

/// Runs `cairn watch` for `db` of `profile` as a child process (see
/// [`cairn::DaemonHost::watch`] for why) with the options `g`, until
/// `stop` is set or it exits. Its JSON notes go to `notify`, its warnings
/// as problems; its error is returned.
fn watch_in_child(
    g: &Global,
    profile: &Profile,
    db: &std::path::Path,
    stop: &AtomicBool,
    notify: &(dyn Fn(cairn::WatchNote) + Sync),
) -> cairn::Result<()> {
    let failed = |what: &str, e: std::io::Error| {
        cairn::Error::invalid(format!(
            "cannot {what} the watcher process for {}: {e}",
            db.display()
        ))
    };
    let exe = std::env::current_exe().map_err(|e| failed("find the program of", e))?;
    // cairn's own watcher process: it opens the repository, so it keeps
    // the password variables the other children are made without.
    let mut cmd = std::process::Command::new(exe); // cairn's own watcher
    cmd.args(g.to_args());
    if g.retry_lock.is_none() {
        cmd.arg("--retry-lock")
            .arg(format!("{}s", DEFAULT_LOCK_WAIT.as_secs()));
    }
    cmd.arg("--json")
        .arg("watch")
        .arg("--for-daemon")
        .arg(&profile.name)
        .arg("--")
        .arg(db)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| failed("start", e))?;
    // Standard input stays open while this function runs: the watcher
    // stops when it closes, also when this process dies.
    let _alive = child.stdin.take();
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(cairn::Error::invalid("the watcher process has no pipes"));
    };
    let error = std::sync::Mutex::new(None::<String>);
    let status = std::thread::scope(|s| {
        s.spawn(|| {
            for line in
                std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok)
            {
                let note = serde_json::from_str(&line)
                    .ok()
                    .and_then(|v| note_of_json(&v));
                notify(note.unwrap_or(cairn::WatchNote::Problem(line)));
            }
        });
        s.spawn(|| {
            for line in
                std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok)
            {
                if let Some(e) = line.strip_prefix("cairn: error: ") {
                    *error
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.to_owned());
                } else {
                    let said = line.strip_prefix("cairn: warning: ").unwrap_or(&line);
                    notify(cairn::WatchNote::Problem(said.to_owned()));
                }
            }
        });
        let mut asked = None;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) => {}
                Err(e) => return Err(failed("wait for", e)),
            }
            if stop.load(Ordering::SeqCst) && asked.is_none() {
                asked = Some(std::time::Instant::now());
                if let Ok(pid) = i32::try_from(child.id()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
            }
            if asked.is_some_and(|t| t.elapsed() > WATCHER_STOP_WAIT) {
                let _ = child.kill();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })?;
    if status.success() {
        return Ok(());
    }
    let why = error
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .unwrap_or_else(|| format!("the watcher process ended with {status}"));
    Err(cairn::Error::invalid(why))
}

impl cairn::DaemonHost for Host {
    fn watch(
        &self,
        profile: &Profile,
        db: &std::path::Path,
        stop: &AtomicBool,
        notify: &(dyn Fn(cairn::WatchNote) + Sync),
    ) -> cairn::Result<()> {
        // Opened here first: a default repository is created, and a wrong
        // password is reported, as for a run.
        drop(self.open(profile)?);
        watch_in_child(self.global(profile)?, profile, db, stop, notify)
    }

    fn open(&self, profile: &Profile) -> cairn::Result<Repository> {
        let g = self.global(profile)?;
        // The repository's own messages (a default repository created)
        // are logged, not printed as command output.
        let quiet = Out::new(false, true);
        let opened = open_options(g).and_then(|mut opts| {
            if g.retry_lock.is_none() {
                opts.lock_wait = DEFAULT_LOCK_WAIT;
            }
            open_or_create(g, &quiet, false, &opts)
        });
        opened.map_err(|e| match e.downcast() {
            Ok(e) => e,
            Err(e) => cairn::Error::invalid(format!("{e:#}")),
        })
    }

    fn event(&self, event: &DaemonEvent<'_>) {
        if let DaemonEvent::End { profile, record } = event {
            self.alert(profile, record);
        }
        if self.out.json {
            eprintln!("{}", json_line(event));
        } else if let Some(line) = text_line(event, self.out.quiet) {
            eprintln!("{} {line}", local(Timestamp::now()));
        }
    }

    fn describe(&self, e: &cairn::Error) -> String {
        describe(e)
    }
}

fn local(t: Timestamp) -> String {
    t.to_zoned(TimeZone::system())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn json_line(event: &DaemonEvent<'_>) -> serde_json::Value {
    use serde_json::json;
    let (kind, profile, fields) = match event {
        DaemonEvent::Next { profile, job, at } => (
            "next",
            profile,
            json!({"job": job.name, "at": at.to_string()}),
        ),
        DaemonEvent::Waiting { profile, lock } => ("waiting", profile, json!({"lock": lock})),
        DaemonEvent::Start {
            profile,
            job,
            due,
            missed,
            catch_up,
        } => (
            "start",
            profile,
            json!({"job": job.name, "due": due.to_string(), "missed": missed, "catch_up": catch_up}),
        ),
        DaemonEvent::End { profile, record } => ("end", profile, json!({"run": record})),
        DaemonEvent::Failed { profile, error } => {
            ("failed", profile, json!({"error": describe(error)}))
        }
        DaemonEvent::Watch { profile, db, note } => {
            // The note's own kind goes under "watch": "event" is the
            // daemon's.
            let mut fields = note_json(&db.display().to_string(), note);
            if let Some(m) = fields.as_object_mut()
                && let Some(kind) = m.remove("event")
            {
                m.insert("watch".into(), kind);
            }
            ("watch", profile, fields)
        }
    };
    let mut line = serde_json::Map::new();
    line.insert("time".into(), Timestamp::now().to_string().into());
    line.insert("event".into(), kind.into());
    line.insert("app".into(), profile.name.clone().into());
    line.insert("profile".into(), json!(profile.file));
    if let serde_json::Value::Object(more) = fields {
        line.extend(more);
    }
    serde_json::Value::Object(line)
}

fn text_line(event: &DaemonEvent<'_>, quiet: bool) -> Option<String> {
    match event {
        DaemonEvent::Watch { profile, db, note } => {
            note_text(&format!("{}: {}", profile.name, db.display()), note, quiet)
        }
        DaemonEvent::Next { profile, job, at } if !quiet => Some(format!(
            "{}: next run: {} at {} ({})",
            profile.name,
            job.name,
            local(*at),
            job.schedule
        )),
        DaemonEvent::Waiting { profile, lock } if !quiet => Some(format!(
            "{}: another cairn is running a job of this profile (it holds {}); waiting for it",
            profile.name,
            lock.display()
        )),
        DaemonEvent::Start {
            profile,
            job,
            due,
            missed,
            catch_up,
        } if !quiet => {
            let why = match (catch_up, missed) {
                (true, 1) => " (catch-up: missed while the daemon was down)".to_owned(),
                (true, n) => format!(" (catch-up: {n} runs missed while the daemon was down)"),
                (false, n) if *n > 1 => format!(" ({n} occurrences passed during other runs)"),
                _ => String::new(),
            };
            Some(format!(
                "{}/{}: start, due {}{why}",
                profile.name,
                job.name,
                local(*due)
            ))
        }
        DaemonEvent::End { profile, record } if !quiet || !record.ok => {
            let secs = record.duration_ms as f64 / 1000.0;
            let mut what = Vec::new();
            if !record.snapshots.is_empty() {
                let ids: Vec<String> = record.snapshots.iter().map(|s| s.short()).collect();
                what.push(format!("snapshot {}", ids.join(" ")));
            }
            if record.forgotten > 0 {
                what.push(format!("forgot {}", record.forgotten));
            }
            if let Some(b) = record.pruned_bytes {
                what.push(format!("pruned {}", size(b)));
            }
            if let Some(v) = &record.verified {
                what.push(format!("verified {v}"));
            }
            for w in &record.warnings {
                what.push(format!("warning: {w}"));
            }
            let done = if what.is_empty() {
                String::new()
            } else {
                format!("; {}", what.join(", "))
            };
            Some(match &record.error {
                None => format!("{}/{}: ok in {secs:.2}s{done}", profile.name, record.job),
                Some(e) => format!(
                    "{}/{}: FAILED after {secs:.2}s: {e}{done}",
                    profile.name, record.job
                ),
            })
        }
        DaemonEvent::Failed { profile, error } => Some(format!(
            "{}: error: {}; its jobs no longer run (other profiles go on)",
            profile.name,
            describe(error)
        )),
        _ => None,
    }
}

/// How long after the first SIGTERM/SIGINT a second one ends the process
/// at once. Shorter gaps are one stop request delivered twice: `timeout`
/// and some supervisors signal the process and then its process group.
const SECOND_SIGNAL_AFTER: Duration = Duration::from_secs(2);

/// Sets `stop` on the first SIGTERM or SIGINT; a second one, at least
/// [`SECOND_SIGNAL_AFTER`] later, ends the process with exit code 1 (safe:
/// an interrupted run leaves no partial snapshot).
fn watch_signals(stop: &Arc<AtomicBool>) -> Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .context("cannot install the SIGTERM/SIGINT handlers")?;
    let stop = Arc::clone(stop);
    std::thread::Builder::new()
        .name("cairn-daemon signals".into())
        .spawn(move || {
            let mut first: Option<std::time::Instant> = None;
            for sig in signals.forever() {
                match first {
                    None => {
                        first = Some(std::time::Instant::now());
                        stop.store(true, Ordering::SeqCst);
                        eprintln!(
                            "{} cairn daemon: signal {sig}: stopping after the current run (send it again to stop at once)",
                            local(Timestamp::now())
                        );
                    }
                    Some(t) if t.elapsed() >= SECOND_SIGNAL_AFTER => {
                        eprintln!("cairn daemon: signal {sig} again: stopping now");
                        std::process::exit(i32::from(exit::ERROR));
                    }
                    Some(_) => {}
                }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

/// `cairn daemon`.
pub fn daemon(g: &Global, out: &Out, a: &DaemonArgs) -> Result<u8> {
    // The profile named with --profile or CAIRN_PROFILE runs too; the one
    // merely found in the current directory only when no others are named.
    let mut profiles: Vec<Profile> = Vec::new();
    if let Some(p) = g
        .loaded
        .as_ref()
        .filter(|_| g.profile.is_some() || a.profiles.is_empty())
    {
        profiles.push(p.clone());
    }
    for f in &a.profiles {
        let p = Profile::load(f)?;
        if !profiles.iter().any(|q| q.file == p.file) {
            profiles.push(p);
        }
    }
    if profiles.is_empty() {
        bail!(
            "no application profile: name one or more (cairn daemon /srv/app/{0}), pass --profile FILE, or run cairn where a {0} is",
            cairn::PROFILE_FILE
        );
    }
    let base = without_profile(g);
    let globals: Vec<Global> = profiles
        .iter()
        .map(|p| for_profile(&base, p.clone()))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(&stop)?;
    let opts = cairn::DaemonOptions {
        state_dir: state_dir(g)?,
        cache_dir: password::cache_dir(g),
        once: a.once,
        stop: Arc::clone(&stop),
    };
    if !out.json {
        let jobs: usize = profiles.iter().map(|p| p.jobs.len()).sum();
        out.info(format!(
            "cairn daemon: {jobs} job(s) of {} profile(s){}; state in {}",
            profiles.len(),
            if a.once { ", due ones once" } else { "" },
            opts.state_dir.display()
        ));
    }
    let host = Host {
        globals,
        out: *out,
        notifier: a.notify.notifier()?,
    };
    let summary = cairn::daemon(&profiles, &opts, &host)?;
    if !out.json {
        out.info(format!(
            "cairn daemon: {} run(s), {} failed{}",
            summary.runs,
            summary.failed,
            if stop.load(Ordering::SeqCst) {
                "; stopped by signal"
            } else {
                ""
            }
        ));
    }
    if !summary.errors.is_empty() {
        let list: Vec<String> = summary
            .errors
            .iter()
            .map(|(f, e)| format!("{}: {e}", f.display()))
            .collect();
        bail!("the jobs of some profiles stopped: {}", list.join("; "));
    }
    if a.once && summary.failed > 0 {
        eprintln!(
            "cairn: error: {} of {} run(s) failed (logged above)",
            summary.failed, summary.runs
        );
        return Ok(exit::ERROR);
    }
    Ok(exit::OK)
}
