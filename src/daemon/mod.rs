//! `cairn daemon`: runs the `[[jobs]]` of application profiles on their
//! schedules (see `crate::apps::profile::schedule`).
//!
//! A job run is an application snapshot ([`crate::apps::profile::snap`]) of the job's
//! components, then, if the job asks, the profile's `[retention]` applied
//! to the application's snapshots (as `cairn forget --app`), a prune, and a
//! verify. Each profile has a scheduler thread of its own; profiles run
//! independently of each other.
//!
//! # No overlap
//!
//! The runs of one profile never overlap: its scheduler runs one job at a
//! time, and holds an exclusive `flock` on the profile's lock file while it
//! does, so two daemons (or a `cairn daemon --once` from cron beside a
//! running daemon) serialize too, and the second re-reads the state before
//! running, so a job the first just ran is not run again. A job that falls
//! due while another of its profile's runs is going waits for it; however
//! many of its occurrences pass meanwhile, it then runs once.
//!
//! # Catching up
//!
//! The state records when each job last started. When the daemon starts
//! (or a run ends) and a job's next occurrence after that start is in the
//! past, the runs missed while the daemon was down (or busy) are made up
//! by **one** run, at once; the next occurrence is then counted from that
//! run. A job the state has never seen is tracked from the moment the
//! daemon first sees it: a cron job waits for its next occurrence, an
//! interval job runs at once. A run that fails still counts as the job's
//! run (the error is logged and recorded), so a failing job is retried at
//! its next occurrence rather than in a loop.
//!
//! # Stopping
//!
//! [`DaemonOptions::stop`] (set by SIGTERM or SIGINT in the CLI) stops the
//! daemon from starting runs; a run in progress finishes, its outcome is
//! recorded, and [`daemon`] returns. Killing the process mid-run instead is
//! safe for the repository too: a snapshot is written only after all its
//! data is, and prune deletes packs only after the index no longer needs
//! them, so an interrupted run leaves at worst unreferenced data that the
//! next prune removes, and a stale lock that expires. The interrupted run
//! is not recorded, so the job is caught up when the daemon starts again.
//!
//! # The state file
//!
//! One JSON file per profile, in `DaemonOptions::state_dir` (the CLI uses
//! `daemon/` in cairn's cache directory), named after the application and
//! a hash of the profile's absolute path: `NAME-HASH.json`, with its lock
//! file `NAME-HASH.lock` beside it. It is written atomically (a temporary
//! file, fsynced, renamed over it, the directory fsynced), mode 0600:
//!
//! ```json
//! {
//!   "version": 1,
//!   "profile": "/srv/shop/cairn.toml",
//!   "jobs": {
//!     "nightly": {"since": "2026-01-01T00:00:00Z", "last_start": "2026-01-02T02:00:00.01Z", "runs": 1}
//!   },
//!   "history": [
//!     {"job": "nightly", "due": "…", "start": "…", "end": "…", "duration_ms": 5210,
//!      "catch_up": false, "missed": 1, "ok": true, "error": null,
//!      "snapshots": ["4f…"], "forgotten": 2, "pruned_bytes": 1048576,
//!      "verified": "structure and data subset 1/7", "warnings": []}
//!   ]
//! }
//! ```
//!
//! `since` is when the daemon began tracking the job, `last_start` when
//! its last run started, `runs` how many runs it had (which subset a
//! rotating verify reads next). `history` keeps the last
//! [`HISTORY_LEN`] runs of the profile, oldest first. Deleting the file
//! makes every job new again. It is local bookkeeping, not part of the
//! repository.

pub mod notify;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::apps::profile::schedule::{Job, VerifyPlan};
use crate::apps::profile::{Profile, SnapOptions};
use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::ops::backup::NoProgress;
use crate::ops::forget::ForgetOptions;
use crate::ops::prune::PruneOptions;
use crate::repo::Repository;

/// How many runs the state file of a profile remembers.
pub const HISTORY_LEN: usize = 100;

/// The version of the state file's format.
const STATE_VERSION: u32 = 1;

/// How often a sleeping scheduler looks at the stop flag and the clock. A
/// wall clock that jumps (a suspended machine, a corrected clock) is
/// noticed within this time, as is SIGTERM.
const TICK: Duration = Duration::from_millis(200);

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Where the state files go.
    pub state_dir: PathBuf,
    /// As [`crate::ops::backup::BackupOptions::cache_dir`], for the snapshots.
    pub cache_dir: Option<PathBuf>,
    /// Run the jobs that are due (or were missed) now, each at most once,
    /// then return instead of waiting for the next ones.
    pub once: bool,
    /// Set to stop: no run starts after it is set; a run in progress
    /// finishes first.
    pub stop: Arc<AtomicBool>,
}

/// What the daemon needs from its caller.
pub trait DaemonHost: Sync {
    /// Opens the repository of `profile` for a run (password and lock
    /// waiting are the caller's business).
    ///
    /// # Errors
    /// Any: the run fails with it.
    fn open(&self, profile: &Profile) -> Result<Repository>;

    /// Follows `db` of `profile`'s `[watch]` ([`crate::apps::sqlite::watcher::watch`]) until
    /// `stop` is set, passing its notes to `notify`.
    ///
    /// The watcher must run in a process of its own, not in the daemon's.
    /// SQLite's locks are POSIX locks, which belong to a process: a
    /// snapshot job that opens and closes the database file in the same
    /// process drops every lock the watcher's connections hold on it.
    /// Without its shared lock, the application's last connection to
    /// close may delete `-wal` and `-shm` from under the watcher.
    ///
    /// # Errors
    /// Why the watcher could not start or stopped; the daemon starts it
    /// again after a pause.
    fn watch(
        &self,
        profile: &Profile,
        db: &Path,
        stop: &AtomicBool,
        notify: &(dyn Fn(crate::apps::sqlite::watcher::WatchNote) + Sync),
    ) -> Result<()>;

    /// Reports what the daemon does, for the log.
    fn event(&self, event: &Event<'_>);

    /// How an error is worded in the run records, the log and the
    /// summary: its message, unless the host adds advice of its own (the
    /// command line names its flags: `--retry-lock` for a locked
    /// repository).
    fn describe(&self, e: &Error) -> String {
        e.to_string()
    }
}

/// Something the daemon reports.
#[derive(Debug)]
pub enum Event<'a> {
    /// The profile's next run: `job` at `at`.
    Next {
        /// The profile.
        profile: &'a Profile,
        /// The job.
        job: &'a Job,
        /// When it is due.
        at: Timestamp,
    },
    /// A run of another process (another daemon, a `--once`) holds the
    /// profile's lock; this one waits for it.
    Waiting {
        /// The profile.
        profile: &'a Profile,
        /// The lock file.
        lock: &'a Path,
    },
    /// A run starts.
    Start {
        /// The profile.
        profile: &'a Profile,
        /// The job.
        job: &'a Job,
        /// When it was due.
        due: Timestamp,
        /// How many of its occurrences passed since it last ran (more than
        /// one: they are made up by this one run).
        missed: usize,
        /// True when it was due before this daemon started: a run missed
        /// while the daemon was down.
        catch_up: bool,
    },
    /// A run ended.
    End {
        /// The profile.
        profile: &'a Profile,
        /// What happened.
        record: &'a RunRecord,
    },
    /// A watcher of the profile's `[watch]` reports (`cairn watch`).
    Watch {
        /// The profile.
        profile: &'a Profile,
        /// The database followed.
        db: &'a Path,
        /// What happened.
        note: &'a crate::apps::sqlite::watcher::WatchNote,
    },
    /// The profile's scheduler stopped on an error (its state cannot be
    /// written): its jobs no longer run; other profiles go on.
    Failed {
        /// The profile.
        profile: &'a Profile,
        /// Why.
        error: &'a Error,
    },
}

/// The outcome of one run, as the state file keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The job.
    pub job: String,
    /// When the run was due.
    #[serde(with = "ts")]
    pub due: Timestamp,
    /// When it started.
    #[serde(with = "ts")]
    pub start: Timestamp,
    /// When it ended.
    #[serde(with = "ts")]
    pub end: Timestamp,
    /// `end - start` in milliseconds.
    pub duration_ms: u64,
    /// True when it made up for runs missed while the daemon was down.
    pub catch_up: bool,
    /// How many occurrences it stood for (1 when it ran on time).
    pub missed: usize,
    /// True when every step succeeded.
    pub ok: bool,
    /// The error of the step that failed.
    pub error: Option<String>,
    /// The snapshots taken (even when a later step failed).
    pub snapshots: Vec<SnapshotId>,
    /// How many snapshots the retention rules removed.
    pub forgotten: usize,
    /// Bytes prune freed, when the job prunes.
    pub pruned_bytes: Option<u64>,
    /// What verify checked, when the job verifies.
    pub verified: Option<String>,
    /// Warnings of the snapshot, forget and verify.
    pub warnings: Vec<String>,
}

/// A profile's state file (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonState {
    /// The format version, 1.
    pub version: u32,
    /// The profile file.
    pub profile: PathBuf,
    /// Per job name.
    pub jobs: BTreeMap<String, JobState>,
    /// The last runs, oldest first.
    pub history: Vec<RunRecord>,
}

/// What the state file knows about one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobState {
    /// When the daemon began tracking the job.
    #[serde(with = "ts")]
    pub since: Timestamp,
    /// When its last run started.
    #[serde(with = "ts_opt")]
    pub last_start: Option<Timestamp>,
    /// How many runs it had.
    pub runs: u64,
}

/// What a daemon did.
#[derive(Debug, Clone, Default)]
pub struct DaemonSummary {
    /// Runs made.
    pub runs: usize,
    /// Runs that failed.
    pub failed: usize,
    /// Profiles whose scheduler stopped on an error, with the error.
    pub errors: Vec<(PathBuf, String)>,
}

/// The state file of the profile `file` in `state_dir`.
#[must_use]
pub fn state_file(state_dir: &Path, profile: &Profile) -> PathBuf {
    let hash = blake3::hash(profile.file.as_os_str().as_encoded_bytes());
    let hex = hash.to_hex();
    let short = hex.as_str().get(..16).unwrap_or(hex.as_str());
    let name: String = profile
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    state_dir.join(format!("{name}-{short}.json"))
}

/// Reads a state file; a missing file is a fresh state for `profile`.
///
/// # Errors
/// [`Error::Io`] naming the file when it cannot be read; [`Error::Invalid`]
/// naming it when it cannot be parsed or has another version (a file this
/// host keeps, not repository data: not [`Error::Damaged`]).
pub fn load_state(path: &Path, profile: &Path) -> Result<DaemonState> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(DaemonState {
                version: STATE_VERSION,
                profile: profile.to_path_buf(),
                jobs: BTreeMap::new(),
                history: Vec::new(),
            });
        }
        Err(e) => return Err(Error::io("cannot read the daemon state", path, e)),
    };
    let state: DaemonState = serde_json::from_slice(&bytes).map_err(|e| {
        Error::invalid(format!(
            "the daemon state {} is damaged ({e}): delete it to start afresh (every job is then new)",
            path.display()
        ))
    })?;
    if state.version != STATE_VERSION {
        return Err(Error::invalid(format!(
            "the daemon state {} has version {}, this cairn knows {STATE_VERSION}: delete it to start afresh",
            path.display(),
            state.version
        )));
    }
    Ok(state)
}

/// Writes `state` to `path` atomically, mode 0600 (see the module doc).
///
/// # Errors
/// [`Error::Io`] naming the file; [`Error::Invalid`] for a path without a
/// directory.
pub fn save_state(path: &Path, state: &DaemonState) -> Result<()> {
    let fail = |e: std::io::Error| Error::io("cannot write the daemon state", path, e);
    let dir = path
        .parent()
        .ok_or_else(|| Error::invalid(format!("{} has no parent directory", path.display())))?;
    let json = serde_json::to_vec_pretty(state)
        .map_err(|e| Error::internal(format!("cannot encode the daemon state: {e}")))?;
    // tempfile creates the file 0600: the state names snapshots and paths.
    let mut tmp = tempfile::Builder::new()
        .prefix(".state-")
        .tempfile_in(dir)
        .map_err(fail)?;
    tmp.write_all(&json).map_err(fail)?;
    tmp.write_all(b"\n").map_err(fail)?;
    tmp.as_file().sync_all().map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(fail)
}

/// Runs the jobs of `profiles` until `opts.stop` is set (or, with
/// `opts.once`, until the jobs due now have run); see the module doc.
///
/// # Errors
/// [`Error::Invalid`] when a profile has no jobs or is given twice;
/// [`Error::Io`] when the state directory cannot be created. Failed runs
/// are not errors: they are
/// reported, recorded and counted in the summary, as are profiles whose
/// scheduler stopped.
pub fn daemon(
    profiles: &[Profile],
    opts: &DaemonOptions,
    host: &dyn DaemonHost,
) -> Result<DaemonSummary> {
    if profiles.is_empty() {
        return Err(Error::invalid("no profiles to run"));
    }
    let mut seen = BTreeSet::new();
    for p in profiles {
        if p.jobs.is_empty() && (p.watch.is_none() || opts.once) {
            return Err(Error::invalid(format!(
                "the profile {} has no [[jobs]] to run: add one, e.g.\n[[jobs]]\nname = \"nightly\"\ncron = \"0 2 * * *\"",
                p.file.display()
            )));
        }
        if !seen.insert(p.file.clone()) {
            return Err(Error::invalid(format!(
                "the profile {} is given twice",
                p.file.display()
            )));
        }
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&opts.state_dir)
        .map_err(|e| {
            Error::io(
                "cannot create the daemon's state directory",
                &opts.state_dir,
                e,
            )
        })?;
    let started = Timestamp::now();
    let results: Vec<(PathBuf, ThreadOutcome)> = std::thread::scope(|s| {
        // Watchers run beside the scheduled jobs until stopped (not for
        // --once, which runs what is due and returns).
        for p in profiles.iter().filter(|_| !opts.once) {
            for db in p.watch.iter().flat_map(|w| &w.dbs) {
                let spawned = std::thread::Builder::new()
                    .name(format!("cairn-watch {}", p.name))
                    .spawn_scoped(s, move || run_watch(p, db, opts, host));
                if let Err(e) = spawned {
                    host.event(&Event::Failed {
                        profile: p,
                        error: &Error::internal(format!(
                            "cannot start a thread to watch {}: {e}",
                            db.display()
                        )),
                    });
                }
            }
        }
        let handles: Vec<_> = profiles
            .iter()
            .filter(|p| !p.jobs.is_empty())
            .map(|p| {
                let handle = std::thread::Builder::new()
                    .name(format!("cairn-daemon {}", p.name))
                    .spawn_scoped(s, move || Scheduler::new(p, opts, host, started)?.run());
                (p, handle)
            })
            .collect();
        handles
            .into_iter()
            .map(|(p, h)| {
                let r = match h {
                    Ok(h) => h.join(),
                    Err(e) => Ok(Err(Error::internal(format!(
                        "cannot start a thread for {}: {e}",
                        p.file.display()
                    )))),
                };
                (p.file.clone(), r)
            })
            .collect()
    });
    let mut summary = DaemonSummary::default();
    for (file, r) in results {
        match r {
            Ok(Ok((runs, failed))) => {
                summary.runs += runs;
                summary.failed += failed;
            }
            Ok(Err(e)) => summary.errors.push((file, host.describe(&e))),
            Err(_) => summary
                .errors
                .push((file, "its scheduler thread panicked".to_owned())),
        }
    }
    Ok(summary)
}

/// Follows `db` of `p`'s `[watch]` until `opts.stop` is set, starting
/// again (after a pause that grows to five minutes) when the watcher cannot
/// start or stops on an error.
fn run_watch(p: &Profile, db: &Path, opts: &DaemonOptions, host: &dyn DaemonHost) {
    let mut pause = Duration::from_secs(10);
    while !opts.stop.load(Ordering::SeqCst) {
        let done = host.watch(p, db, &opts.stop, &|note| {
            host.event(&Event::Watch {
                profile: p,
                db,
                note: &note,
            });
        });
        let Err(e) = done else { return };
        host.event(&Event::Watch {
            profile: p,
            db,
            note: &crate::apps::sqlite::watcher::WatchNote::Problem(format!(
                "{}; starting again in {} s",
                host.describe(&e),
                pause.as_secs()
            )),
        });
        let until = std::time::Instant::now() + pause;
        while std::time::Instant::now() < until && !opts.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
        }
        pause = (pause * 2).min(Duration::from_secs(300));
    }
}

/// What a profile's scheduler thread returned: (runs, failed runs), or its
/// error, or its panic.
type ThreadOutcome = std::thread::Result<Result<(usize, usize)>>;

/// The scheduler of one profile.
struct Scheduler<'a> {
    profile: &'a Profile,
    opts: &'a DaemonOptions,
    host: &'a dyn DaemonHost,
    /// When the daemon started: a job due before then was missed while it
    /// was down.
    started: Timestamp,
    path: PathBuf,
    lock_path: PathBuf,
    /// The state as last read or written.
    state: DaemonState,
}

impl<'a> Scheduler<'a> {
    fn new(
        profile: &'a Profile,
        opts: &'a DaemonOptions,
        host: &'a dyn DaemonHost,
        started: Timestamp,
    ) -> Result<Self> {
        let path = state_file(&opts.state_dir, profile);
        let lock_path = path.with_extension("lock");
        let state = load_state(&path, &profile.file)?;
        Ok(Self {
            profile,
            opts,
            host,
            started,
            path,
            lock_path,
            state,
        })
    }

    /// Runs the profile's jobs; returns (runs, failed runs). On an error
    /// it reports it before returning it.
    fn run(mut self) -> Result<(usize, usize)> {
        let r = self.run_loop();
        if let Err(e) = &r {
            self.host.event(&Event::Failed {
                profile: self.profile,
                error: e,
            });
        }
        r
    }

    fn stopping(&self) -> bool {
        self.opts.stop.load(Ordering::SeqCst)
    }

    fn run_loop(&mut self) -> Result<(usize, usize)> {
        let (mut runs, mut failed) = (0, 0);
        // Record when each new job began to be tracked, under the lock so
        // that a concurrent daemon's record is not overwritten.
        {
            let Some(_lock) = self.lock()? else {
                return Ok((runs, failed));
            };
            self.reload()?;
            save_state(&self.path, &self.state)?;
        }
        let mut ran_once: BTreeSet<&str> = BTreeSet::new();
        let mut announced: Option<(String, Timestamp)> = None;
        while !self.stopping() {
            let Some((due, job)) = self.next_due(&ran_once) else {
                break;
            };
            if due > Timestamp::now() {
                if self.opts.once {
                    break;
                }
                if announced.as_ref() != Some(&(job.name.clone(), due)) {
                    self.host.event(&Event::Next {
                        profile: self.profile,
                        job,
                        at: due,
                    });
                    announced = Some((job.name.clone(), due));
                }
                self.sleep_until(due);
                continue;
            }
            let Some(lock) = self.lock()? else {
                break;
            };
            // Another process may have run the job while this one waited
            // or slept: decide on the state as it is now.
            self.reload()?;
            let Some(due) = self.due(job).filter(|d| *d <= Timestamp::now()) else {
                continue;
            };
            let record = self.run_job(job, due);
            let js = self
                .state
                .jobs
                .entry(job.name.clone())
                .or_insert_with(|| JobState {
                    since: record.start,
                    last_start: None,
                    runs: 0,
                });
            js.last_start = Some(record.start);
            js.runs += 1;
            self.state.history.push(record.clone());
            let excess = self.state.history.len().saturating_sub(HISTORY_LEN);
            self.state.history.drain(..excess);
            save_state(&self.path, &self.state)?;
            drop(lock);
            self.host.event(&Event::End {
                profile: self.profile,
                record: &record,
            });
            runs += 1;
            if !record.ok {
                failed += 1;
            }
            if self.opts.once {
                ran_once.insert(job.name.as_str());
            }
        }
        Ok((runs, failed))
    }

    /// Re-reads the state file, adding the jobs it does not know yet as
    /// tracked from now.
    fn reload(&mut self) -> Result<()> {
        self.state = load_state(&self.path, &self.profile.file)?;
        let now = Timestamp::now();
        for j in &self.profile.jobs {
            self.state
                .jobs
                .entry(j.name.clone())
                .or_insert_with(|| JobState {
                    since: now,
                    last_start: None,
                    runs: 0,
                });
        }
        Ok(())
    }

    fn due(&self, job: &Job) -> Option<Timestamp> {
        let js = self.state.jobs.get(&job.name)?;
        job.schedule.due(js.last_start, js.since)
    }

    /// The job due first (the earlier in the profile on a tie), skipping
    /// those in `skip`.
    fn next_due(&self, skip: &BTreeSet<&str>) -> Option<(Timestamp, &'a Job)> {
        let mut best: Option<(Timestamp, &'a Job)> = None;
        for job in &self.profile.jobs {
            if skip.contains(job.name.as_str()) {
                continue;
            }
            if let Some(d) = self.due(job)
                && best.is_none_or(|(b, _)| d < b)
            {
                best = Some((d, job));
            }
        }
        best
    }

    fn sleep_until(&self, t: Timestamp) {
        while !self.stopping() {
            let left = t.duration_since(Timestamp::now());
            let Ok(left) = Duration::try_from(left) else {
                return;
            };
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(TICK));
        }
    }

    /// Takes the profile's lock, waiting while another process holds it;
    /// `None` when told to stop meanwhile.
    fn lock(&self) -> Result<Option<nix::fcntl::Flock<fs::File>>> {
        use nix::fcntl::{Flock, FlockArg};
        let mut told = false;
        loop {
            let file = fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&self.lock_path)
                .map_err(|e| Error::io("cannot open the daemon's lock file", &self.lock_path, e))?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(l) => return Ok(Some(l)),
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    if !told {
                        self.host.event(&Event::Waiting {
                            profile: self.profile,
                            lock: &self.lock_path,
                        });
                        told = true;
                    }
                    if self.stopping() {
                        return Ok(None);
                    }
                    std::thread::sleep(TICK);
                }
                Err((_, e)) => {
                    // `other`: the message stays flock's (`EBADF: …`).
                    return Err(Error::io(
                        "cannot lock",
                        &self.lock_path,
                        std::io::Error::other(e),
                    ));
                }
            }
        }
    }

    /// Runs `job`, due at `due`, and records what happened.
    fn run_job(&self, job: &'a Job, due: Timestamp) -> RunRecord {
        let start = Timestamp::now();
        let runs = self.state.jobs.get(&job.name).map_or(0, |j| j.runs);
        // The occurrences this run stands for: the one that is due, and
        // those after it that passed before it could start.
        let missed = 1 + job.schedule.missed(due, start, 10_000);
        let catch_up = due < self.started;
        self.host.event(&Event::Start {
            profile: self.profile,
            job,
            due,
            missed,
            catch_up,
        });
        let mut record = RunRecord {
            job: job.name.clone(),
            due,
            start,
            end: start,
            duration_ms: 0,
            catch_up,
            missed,
            ok: true,
            error: None,
            snapshots: Vec::new(),
            forgotten: 0,
            pruned_bytes: None,
            verified: None,
            warnings: Vec::new(),
        };
        let result = self.host.open(self.profile).and_then(|repo| {
            let done = self.steps(&repo, job, runs, &mut record);
            // Audit events that could not be written do not fail the run
            // (as in the other commands), but are worth a warning.
            record.warnings.extend(repo.take_audit_errors());
            done
        });
        if let Err(e) = result {
            record.ok = false;
            record.error = Some(self.host.describe(&e));
        }
        record.end = Timestamp::now();
        record.duration_ms =
            u64::try_from(record.end.duration_since(start).as_millis()).unwrap_or(0);
        record
    }

    /// Snapshot, forget, prune, verify: each step that the job asks for,
    /// filling `record` as they succeed; the first error ends the run.
    fn steps(&self, repo: &Repository, job: &Job, runs: u64, record: &mut RunRecord) -> Result<()> {
        let p = self.profile;
        let snap = SnapOptions {
            components: job.components.clone(),
            tags: job.tags.clone(),
            cache_dir: self.opts.cache_dir.clone(),
            force: false,
        };
        for done in crate::apps::profile::snap(repo, p, &snap, &NoProgress)? {
            record.snapshots.push(done.id);
            record.warnings.extend(done.warnings);
        }
        if job.forget {
            // Checked when the profile was parsed; a profile without rules
            // cannot have a job that forgets.
            let policy = p.retention.clone().ok_or_else(|| {
                Error::invalid(format!(
                    "job {} forgets, but the profile {} has no [retention]",
                    job.name,
                    p.file.display()
                ))
            })?;
            let mut opts = ForgetOptions::new(policy.clone());
            opts.filter.apps.push(p.name.clone());
            opts.keep_pitr = p.watch.as_ref().and_then(|w| w.keep);
            let mut runs = vec![opts];
            // The bases of the profile's watched databases are snapshots
            // of their own (tag `watch`, the database's path): the same
            // rules judge them once no segment needs them.
            for db in p.watch.iter().flat_map(|w| &w.dbs) {
                let mut opts = ForgetOptions::new(policy.clone());
                opts.filter.tags = vec![vec![crate::repo::segments::BASE_TAG.to_owned()]];
                opts.filter.paths = vec![db.as_os_str().as_encoded_bytes().to_vec()];
                runs.push(opts);
            }
            for opts in &runs {
                let done = crate::ops::forget::forget(repo, opts)?;
                record.forgotten += done.removed.len();
                for (id, e) in done.damaged {
                    record
                        .warnings
                        .push(format!("snapshot {id}: {e} (left in place)"));
                }
            }
        }
        if job.prune {
            let report = crate::ops::prune::prune(repo, &PruneOptions::default())?;
            record.pruned_bytes = Some(report.bytes_freed());
        }
        if let Some(plan) = job.verify {
            let opts = plan.options(runs);
            let report = crate::ops::verify::verify(repo, &opts)?;
            record.warnings.extend(report.warnings);
            record.verified = Some(match (plan, opts.subset) {
                (VerifyPlan::Structure, _) => "structure".to_owned(),
                (_, Some((n, m))) => format!("structure and data subset {n}/{m}"),
                (_, None) => "structure and all data".to_owned(),
            });
            if let Some(first) = report.errors.first() {
                return Err(Error::Damaged(format!(
                    "verify found {} problem(s), the first: {first}; run `cairn verify --read-data` and see its advice",
                    report.errors.len()
                )));
            }
        }
        Ok(())
    }
}

/// Serde of a [`Timestamp`] as RFC 3339 text.
mod ts {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(t)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Serde of an optional [`Timestamp`] as RFC 3339 text or null.
mod ts_opt {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    // serde's `with` passes a reference to the field.
    #[allow(clippy::ref_option)]
    pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.collect_str(t),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| t.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn daemon_state_round_trips_atomically_with_mode_0600() {
        let dir = tempfile::tempdir().expect("tmp");
        let profile = Profile::parse(
            "app = \"my shop\"\n[components.a]\npaths = [\".\"]\n[[jobs]]\nname = \"j\"\nevery = \"1h\"\n",
            Path::new("/srv/shop/cairn.toml"),
        )
        .expect("profile");
        let path = state_file(dir.path(), &profile);
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(
            name.starts_with("my_shop-") && name.ends_with(".json"),
            "{name}"
        );
        let fresh = load_state(&path, &profile.file).expect("missing is fresh");
        assert!(fresh.jobs.is_empty() && fresh.history.is_empty());
        let t: Timestamp = "2026-01-02T03:04:05.678Z".parse().expect("t");
        let mut state = fresh;
        state.jobs.insert(
            "j".into(),
            JobState {
                since: t,
                last_start: Some(t),
                runs: 3,
            },
        );
        state.history.push(RunRecord {
            job: "j".into(),
            due: t,
            start: t,
            end: t,
            duration_ms: 0,
            catch_up: true,
            missed: 2,
            ok: false,
            error: Some("boom".into()),
            snapshots: Vec::new(),
            forgotten: 0,
            pruned_bytes: None,
            verified: None,
            warnings: Vec::new(),
        });
        save_state(&path, &state).expect("save");
        assert_eq!(load_state(&path, &profile.file).expect("load"), state);
        let mode = fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let left: Vec<_> = fs::read_dir(dir.path()).expect("dir").collect();
        assert_eq!(left.len(), 1, "no temporary file left behind");
        fs::write(&path, b"{").expect("damage");
        let e = load_state(&path, &profile.file)
            .expect_err("damaged")
            .to_string();
        assert!(e.contains("delete it to start afresh"), "{e}");
    }
}
