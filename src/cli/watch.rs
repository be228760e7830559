//! `cairn watch` (continuous capture of SQLite databases) and
//! `cairn db timeline` (what can be restored to which moment).

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use cairn::WatchNote;

use super::advice::describe;
use super::exit;
use super::global::Global;
use super::output::{Out, local_time, report_audit_errors};
use super::repo_open::{open, open_options, open_with};
use super::watch_notes::{note_json, note_text};

#[derive(Debug, Args)]
#[command(after_help = "\
cairn watch follows each WAL-mode SQLite database while the application writes to it: it holds
a read transaction so that no commit is checkpointed away before it is read, reads every committed
transaction from the -wal file and stores it in the repository within --lag. A base (a page-aware
snapshot of the whole database, tagged `watch`) starts each chain; restore replays the chain:

  cairn restore --at '2026-11-24 14:03:07' /srv/app/data.db --target /tmp/data.db
  cairn db timeline /srv/app/data.db

It runs until SIGTERM or SIGINT, then stores what it has read. The application is never blocked
for longer than the watcher's own checkpoint of the log (see store-format.md §25).

Memory: the pages read and not yet stored take at most --max-memory (64 MiB); the rest of the
process (packs being written, a base being stored) does not grow with the log: 180 MiB resident
in all at the defaults beside a writer at full speed (BENCHMARKS.md). When the storing
cannot keep up (a slow repository, a busy machine), the commits wait in the -wal file until it
is --max-wal (256 MiB) long; past that the watcher lets the application checkpoint the log,
ends the chain where it stopped reading (a gap in `cairn db timeline`; a restore to a moment in
it says so) and takes a new base once what it read is stored.")]
pub struct WatchArgs {
    /// The databases to follow (WAL mode). Default: those of the profile's
    /// [watch] (cairn.toml).
    #[arg(value_name = "DB")]
    dbs: Vec<PathBuf>,
    /// The longest a commit waits before it is stored in the repository
    /// [default: 1s, or the profile's `lag`].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    lag: Option<Duration>,
    /// How often the log is read [default: 10ms].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    poll: Option<Duration>,
    /// While the database is idle, store a segment at least this often, so
    /// the timeline shows the watcher was following it [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    heartbeat: Option<Duration>,
    /// Take a new base this often: a restore replays at most this much log
    /// [default: 1h].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    base_every: Option<Duration>,
    /// Take a new base when the pages stored since the last one reach
    /// SIZE, or the database's size if larger: a restore reads at most
    /// about this much log past its base [default: 1GiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    base_size: Option<u64>,
    /// The most memory the pages read and not yet stored may take; when it
    /// is full the watcher reads no further until the storing catches up
    /// (the commits wait in the application's -wal file) [default: 64MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_memory: Option<u64>,
    /// How long the application's -wal may grow while the watcher is
    /// behind it; past it the watcher lets the log go (the application's
    /// checkpoints proceed), the chain ends and the timeline shows a gap
    /// until a new base, taken once what was read is stored
    /// [default: 256MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_wal: Option<u64>,
    /// The host name to record instead of this machine's.
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
    /// Run as the watcher `cairn daemon` started for the profile NAME:
    /// stop when standard input closes (also when the daemon is killed),
    /// and name the daemon in the audit log.
    #[arg(long, value_name = "NAME", hide = true)]
    for_daemon: Option<String>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    cairn::parse_duration(s).map_err(|e| e.to_string())
}

fn parse_size(s: &str) -> Result<u64, String> {
    cairn::parse_size(s).map_err(|e| e.to_string())
}

impl WatchArgs {
    /// Sets in `opts` what the arguments give. Not a `From`: what they
    /// leave out comes from the profile's `[watch]`, not from defaults.
    fn override_options(&self, opts: &mut cairn::WatchOptions) {
        let given = |v: Option<Duration>, into: &mut Duration| {
            if let Some(v) = v {
                *into = v;
            }
        };
        given(self.lag, &mut opts.lag);
        given(self.poll, &mut opts.poll);
        given(self.heartbeat, &mut opts.heartbeat);
        given(self.base_every, &mut opts.base_every);
        opts.poll = opts.poll.max(Duration::from_millis(1));
        if let Some(b) = self.base_size {
            opts.base_bytes = b;
        }
        if let Some(m) = self.max_memory {
            opts.max_memory = m;
        }
        if let Some(w) = self.max_wal {
            opts.max_wal = w;
        }
        if self.host.is_some() {
            opts.host.clone_from(&self.host);
        }
    }
}

/// Sets `stop` on SIGTERM or SIGINT.
fn stop_on_signals(stop: &Arc<AtomicBool>) -> Result<()> {
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(stop))
            .context("cannot install the SIGTERM/SIGINT handlers")?;
    }
    Ok(())
}

pub fn watch(g: &Global, out: &Out, a: &WatchArgs) -> Result<u8> {
    let plan = g.loaded.as_ref().and_then(|p| p.watch.clone());
    let dbs = if a.dbs.is_empty() {
        match &plan {
            Some(plan) => plan.dbs.clone(),
            None => anyhow::bail!(
                "name the databases to follow (cairn watch DB...), or add a [watch] section to the application's {}",
                cairn::PROFILE_FILE
            ),
        }
    } else {
        a.dbs.clone()
    };
    let mut opts = plan.map(|p| p.opts).unwrap_or_default();
    a.override_options(&mut opts);
    let mut repo_opts = open_options(g)?;
    if let Some(profile) = &a.for_daemon {
        repo_opts = repo_opts.actor(format!("daemon:{profile}"));
    }
    let (repo, _) = open_with(g, &repo_opts)?;
    let stop = Arc::new(AtomicBool::new(false));
    stop_on_signals(&stop)?;
    if a.for_daemon.is_some() {
        // The daemon holds the other end of standard input open for as
        // long as it wants this watcher: its end closes when it is gone,
        // whatever way it went.
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("cairn-watch stdin".into())
            .spawn(move || {
                let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
                stop.store(true, Ordering::SeqCst);
            })
            .context("cannot start the thread that follows standard input")?;
    }
    let json = out.json;
    let quiet = out.quiet;
    let results: Vec<(PathBuf, cairn::Result<()>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = dbs
            .iter()
            .map(|db| {
                let (repo, opts, stop) = (&repo, &opts, &stop);
                scope.spawn(move || {
                    let shown = db.display().to_string();
                    let notify = |n: WatchNote| report(&shown, &n, json, quiet, stop);
                    let done = cairn::watch(repo, db, opts, stop, &notify);
                    // One database that cannot be followed stops the others:
                    // a watcher half running is easy to miss.
                    if done.is_err() {
                        stop.store(true, Ordering::SeqCst);
                    }
                    (db.clone(), done)
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    report_audit_errors(out, &repo);
    let mut failed = None;
    for (db, r) in results {
        if let Err(e) = r {
            out.warn(format!("{}: {}", db.display(), describe(&e)));
            failed = Some(e);
        }
    }
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(exit::OK),
    }
}

/// Prints one note: a JSON line on stdout with --json, else a line on
/// stderr for bases, chain ends and problems (segments, which come every
/// second, only in JSON).
///
/// When nobody reads the notes any more (the daemon that started this
/// watcher was killed, or a pipe was closed), the watcher stops as on
/// SIGTERM: it stores what it has read first. Exiting at the failed write,
/// as other commands do on a closed pipe, lost the commits read and not
/// yet stored.
fn report(db: &str, n: &WatchNote, json: bool, quiet: bool, stop: &AtomicBool) {
    use std::io::Write as _;
    let written = if json {
        let mut v = note_json(db, n);
        if let Some(m) = v.as_object_mut() {
            m.insert("db".into(), db.into());
        }
        writeln!(std::io::stdout().lock(), "{v}")
    } else if let Some(line) = note_text(db, n, quiet) {
        let now = jiff::Timestamp::now();
        writeln!(std::io::stderr().lock(), "{} {line}", local_time(now))
    } else {
        Ok(())
    };
    if written.is_err() {
        stop.store(true, Ordering::SeqCst);
    }
}

#[derive(Debug, Args)]
pub struct TimelineArgs {
    /// The database, by the path it was watched at; all watched databases
    /// when left out.
    #[arg(value_name = "DB")]
    db: Option<PathBuf>,
    /// Only what this host's watcher stored.
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
}

pub fn timeline(g: &Global, out: &Out, a: &TimelineArgs) -> Result<u8> {
    let (repo, _) = open(g)?;
    let db =
        a.db.as_deref()
            .map(cairn::watched_db_path)
            .transpose()?
            .map(|p| p.as_os_str().as_bytes().to_vec());
    let (timelines, problems) = cairn::timelines(&repo, a.host.as_deref(), db.as_deref())?;
    for p in &problems {
        out.warn(p);
    }
    if let (Some(db), true) = (&db, timelines.is_empty()) {
        anyhow::bail!(
            "nothing was stored by cairn watch for {}{}",
            String::from_utf8_lossy(db),
            a.host
                .as_deref()
                .map(|h| format!(" on host {h}"))
                .unwrap_or_default()
        );
    }
    if out.json {
        out.print_json(&timelines_json(&timelines))?;
    } else {
        print_timelines(&timelines);
    }
    Ok(if problems.is_empty() {
        exit::OK
    } else {
        exit::INCOMPLETE
    })
}

/// Timelines as JSON: each chain of each database and the gaps between.
fn timelines_json(timelines: &[cairn::Timeline]) -> Vec<serde_json::Value> {
    let ts = cairn::segment_time;
    timelines
        .iter()
        .map(|t| {
            let chains: Vec<_> = t
                .chains
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "base": c.base,
                        "from": ts(c.base_time).to_string(),
                        "until": ts(c.until()).to_string(),
                        "first_txn": c.base_txn,
                        "last_txn": c.last_txn(),
                        "txns": c.txns(),
                        "segments": c.segments.len(),
                        "end": c.end(),
                        "problem": c.problem,
                    })
                })
                .collect();
            let gaps: Vec<_> = t
                .gaps()
                .iter()
                .map(|g| {
                    serde_json::json!({
                        "from": g.from.to_string(),
                        "to": g.to.map(|t| t.to_string()),
                        "reason": g.reason,
                    })
                })
                .collect();
            serde_json::json!({
                "host": t.host,
                "db": String::from_utf8_lossy(&t.db),
                "chains": chains,
                "gaps": gaps,
            })
        })
        .collect()
}

/// Timelines as text: a table of chains per database, its gaps, and how
/// far it can be restored.
fn print_timelines(timelines: &[cairn::Timeline]) {
    let ts = cairn::segment_time;
    for t in timelines {
        outln!("{} on {}", String::from_utf8_lossy(&t.db), t.host);
        outln!(
            "  {:<8}  {:<23}  {:<23}  {:>15}  {:>8}",
            "base",
            "from",
            "until",
            "transactions",
            "segments"
        );
        let gaps = t.gaps();
        for c in &t.chains {
            outln!(
                "  {:<8}  {:<23}  {:<23}  {:>15}  {:>8}",
                c.base.short(),
                precise(ts(c.base_time)),
                precise(ts(c.until())),
                format!("{}–{}", c.base_txn, c.last_txn()),
                c.segments.len()
            );
            if let Some(p) = &c.problem {
                outln!("            problem: {p}");
            }
            if let Some(g) = gaps.iter().find(|g| g.from == ts(c.until())) {
                outln!(
                    "  gap       {:<23}  {:<23}  {}",
                    precise(g.from),
                    g.to.map(precise).unwrap_or_default(),
                    g.reason
                        .as_deref()
                        .unwrap_or("the watcher stopped without a word (killed?)")
                );
            }
        }
        if let Some(last) = t.chains.last() {
            let age = jiff::Timestamp::now().duration_since(ts(last.until()));
            let why = last.end().map(|e| format!(": {e}")).unwrap_or_default();
            outln!(
                "  restorable up to {} ({} s ago){why}",
                precise(ts(last.until())),
                age.as_secs()
            );
        }
        outln!();
    }
}

/// A local time with milliseconds.
fn precise(t: jiff::Timestamp) -> String {
    let z = t.to_zoned(jiff::tz::TimeZone::system());
    z.strftime("%Y-%m-%d %H:%M:%S%.3f").to_string()
}
