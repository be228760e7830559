//! The audit log: an append-only record, in the repository, of every
//! operation that changes something (backup, restore, forget, prune, key
//! changes, and the API calls that run them), saying when, who, what and
//! with what result.
//!
//! Each event is one file under `audit/`, written once and never changed
//! or deleted by cairn (forget and prune leave `audit/` alone):
//!
//! ```text
//! "CAIRNAUD" ‖ sealed(Domain::Audit, enc(AuditEvent))
//! name = 16 hex digits of the event time in nanoseconds since the epoch
//!        ‖ the first 48 hex digits of BLAKE3(whole file)
//! ```
//!
//! so that names sort by time: the newest event, which the next one
//! chains to, and the last N events are found from a listing alone.
//!
//! Being sealed and content-addressed, an event cannot be altered without
//! the change being detected. Each event also names the newest event its
//! writer could see (`prev`: the newest in a listing or, for a cached remote
//! repository, the newest this host listed or wrote), so the events form a chain (a tree, where
//! writers run concurrently): an event deleted from the middle of the log
//! leaves a `prev` that points nowhere, which [`read_log`] reports. Only
//! the very newest events could be removed unnoticed, by someone with
//! write access to the storage itself; no cairn command or API route
//! removes or rewrites one.
//!
//! Recording never fails the operation it records: the operation has
//! already happened. A failure to write the event is kept and reported by
//! [`Repository::take_audit_errors`].

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::codec;
use crate::format::crypto::Domain;
use crate::id::AuditId;
use crate::repo::{Repository, host_and_user};
use crate::storage::FileKind;
use crate::sync::lock;

/// Magic at the start of every audit event file.
pub const AUDIT_MAGIC: &[u8; 8] = b"CAIRNAUD";

/// One recorded operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When it ended, seconds since the epoch (UTC).
    pub time: i64,
    /// Nanoseconds.
    pub time_nsec: u32,
    /// The host it ran on.
    pub host: String,
    /// Who: `user@host` for the command line, `token:NAME` for an API
    /// caller, `daemon:PROFILE` for a scheduled run.
    pub actor: String,
    /// What: `backup`, `restore`, `forget`, `prune`, `key-add`, ...
    pub action: String,
    /// What it acted on: snapshot ids, paths, a component.
    pub target: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// A short summary, or the error.
    pub detail: String,
    /// The newest event the writer saw, if any (see the module doc).
    pub prev: Option<AuditId>,
}

impl AuditEvent {
    /// The event time.
    #[must_use]
    pub fn timestamp(&self) -> jiff::Timestamp {
        jiff::Timestamp::new(self.time, i32::try_from(self.time_nsec).unwrap_or(0))
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }
}

/// The name of the event file `bytes` holding `event` (see the module
/// doc).
fn name_of(event: &AuditEvent, bytes: &[u8]) -> Option<AuditId> {
    let nanos = u64::try_from(event.time)
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(u64::from(event.time_nsec))?;
    let hash = blake3::hash(bytes).to_hex();
    format!("{nanos:016x}{}", hash.get(..48)?).parse().ok()
}

/// Encodes an event file and its name.
///
/// # Errors
/// [`Error::Internal`] for an event dated before 1970 or after 2554 (its
/// name could not sort by time: the clock is wrong); sealing errors.
pub fn encode_file(
    crypto: &crate::format::crypto::Crypto,
    event: &AuditEvent,
) -> Result<(AuditId, Vec<u8>)> {
    let mut out = AUDIT_MAGIC.to_vec();
    out.extend_from_slice(&crypto.seal(Domain::Audit, &codec::encode(event))?);
    let id = name_of(event, &out).ok_or_else(|| {
        Error::internal(format!("audit event time {} is out of range", event.time))
    })?;
    Ok((id, out))
}

/// Decodes an event file named `id`, checking name, magic and seal.
///
/// # Errors
/// [`Error::Corrupt`] naming the file and what is wrong.
pub fn decode_file(
    crypto: &crate::format::crypto::Crypto,
    id: &AuditId,
    bytes: &[u8],
) -> Result<AuditEvent> {
    let what = format!("audit event {id}");
    let body = bytes
        .strip_prefix(AUDIT_MAGIC.as_slice())
        .ok_or_else(|| Error::corrupt(what.clone(), "bad magic"))?;
    let plain = crypto
        .open(Domain::Audit, body)
        .map_err(|_| Error::corrupt(what.clone(), "authentication failed"))?;
    let event: AuditEvent =
        codec::decode(&plain).map_err(|e| Error::corrupt(what.clone(), e.to_string()))?;
    if name_of(&event, bytes) != Some(*id) {
        return Err(Error::corrupt(
            what,
            "content does not match its name (time and hash)",
        ));
    }
    Ok(event)
}

/// The log as read: events oldest first, and what is wrong with it.
#[derive(Debug, Clone, Default)]
pub struct AuditLog {
    /// The readable events, by time (then id).
    pub events: Vec<(AuditId, AuditEvent)>,
    /// Damaged event files, and events whose `prev` is missing (an event
    /// was removed), with the reason.
    pub problems: Vec<String>,
}

/// The names of the audit event files, oldest first.
fn names(repo: &Repository) -> Result<Vec<String>> {
    let mut names: Vec<String> = repo
        .backend()
        .list(FileKind::Audit)?
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n.parse::<AuditId>().is_ok())
        .collect();
    names.sort_unstable();
    Ok(names)
}

/// Reads the audit log: all of it, or its `last` newest events.
///
/// # Errors
/// Backend errors listing `audit/`; damaged files are in
/// [`AuditLog::problems`], not errors.
pub fn read_log(repo: &Repository, last: Option<usize>) -> Result<AuditLog> {
    let mut log = AuditLog::default();
    let all = names(repo)?;
    let known: std::collections::HashSet<AuditId> =
        all.iter().filter_map(|n| n.parse().ok()).collect();
    let skip = last.map_or(0, |n| all.len().saturating_sub(n));
    for name in all.into_iter().skip(skip) {
        let Ok(id) = name.parse::<AuditId>() else {
            continue;
        };
        match repo
            .backend()
            .read(FileKind::Audit, &name)
            .and_then(|b| decode_file(repo.crypto(), &id, &b))
        {
            Ok(e) => log.events.push((id, e)),
            Err(e) => log.problems.push(e.to_string()),
        }
    }
    for (id, e) in &log.events {
        if let Some(prev) = e.prev
            && !known.contains(&prev)
        {
            log.problems.push(format!(
                "audit event {id} follows event {prev}, which is missing: an event was removed from the log (or is damaged)"
            ));
        }
    }
    Ok(log)
}

/// The snapshot a successful `backup` or `snap` event says it saved
/// (detail `snapshot ID…`).
fn saved_id(e: &AuditEvent) -> Option<crate::id::SnapshotId> {
    if !e.ok || !matches!(e.action.as_str(), "backup" | "snap") {
        return None;
    }
    e.detail
        .strip_prefix("snapshot ")
        .and_then(|rest| rest.get(..64))
        .and_then(|hex| hex.parse().ok())
}

/// Whether the log records snapshot `id` as saved.
pub(crate) fn records_saved(log: &AuditLog, id: &crate::id::SnapshotId) -> bool {
    log.events
        .iter()
        .any(|(_, e)| saved_id(e).as_ref() == Some(id))
}

/// Snapshots the log says were saved and never forgotten but that
/// `present` (a listing of `snapshots/`) lacks: as errors naming each id
/// and the event that recorded it, or as warnings when a forget that failed
/// after the save (and so names no snapshot it removed) may have removed it.
/// Saved snapshots are read from successful `backup` and `snap` events
/// (detail `snapshot ID…`), forgotten ones from every `forget` event's
/// target (the ids it removed).
pub(crate) fn missing_snapshots(
    log: &AuditLog,
    present: &std::collections::HashSet<crate::id::SnapshotId>,
) -> (Vec<String>, Vec<String>) {
    let mut saved: Vec<(crate::id::SnapshotId, &AuditId, &AuditEvent)> = Vec::new();
    let mut forgotten = std::collections::HashSet::new();
    let mut failed_forgets: Vec<jiff::Timestamp> = Vec::new();
    for (id, e) in &log.events {
        match e.action.as_str() {
            "backup" | "snap" if e.ok => {
                if let Some(sid) = saved_id(e) {
                    saved.push((sid, id, e));
                }
            }
            "forget" => {
                forgotten.extend(
                    e.target
                        .split_whitespace()
                        .filter_map(|t| t.parse::<crate::id::SnapshotId>().ok()),
                );
                if !e.ok {
                    failed_forgets.push(e.timestamp());
                }
            }
            _ => {}
        }
    }
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    for (sid, event, e) in saved {
        if present.contains(&sid) || forgotten.contains(&sid) {
            continue;
        }
        let what = format!(
            "snapshot {sid} (snapshots/{sid}) is missing: audit event {event} records it saved by {} `{}` at {}",
            e.actor,
            e.action,
            e.timestamp()
        );
        if failed_forgets.iter().any(|t| *t >= e.timestamp()) {
            warnings.push(format!(
                "{what}, and a forget that failed later may have removed it before failing"
            ));
        } else {
            errors.push(format!(
                "{what}, and no forget removed it: its file was deleted or lost outside cairn"
            ));
        }
    }
    (errors, warnings)
}

/// The newest event in `audit/`, to chain the next one to: for a cached
/// remote repository the newest this host knows of (which saves a listing),
/// else the newest listed.
fn newest(repo: &Repository) -> Option<AuditId> {
    if let Some(known) = repo.cache().and_then(|c| c.newest_audit())
        && let Ok(id) = known.parse()
    {
        return Some(id);
    }
    names(repo).ok()?.last()?.parse().ok()
}

/// How a finished operation's outcome reads in its audit event: whether
/// it counts as done and the event's detail. Implemented by each
/// operation's outcome type, next to it; an error is always recorded as a
/// failure with the error's message.
pub(crate) trait Audited {
    /// `(ok, detail)`: `ok` is false for an outcome that did not do all it
    /// was asked (a restore that left files out).
    fn audit(&self) -> (bool, String);
}

impl Audited for () {
    fn audit(&self) -> (bool, String) {
        (true, String::new())
    }
}

/// One operation's audit event: every operation that changes something
/// runs its body through [`Event::run`], the one place that records the
/// outcome, so no entry point (CLI, API, daemon, profile) can leave the
/// event out.
pub(crate) struct Event<'r> {
    repo: &'r Repository,
    action: &'static str,
    target: String,
    /// False for a dry run, which changes nothing and records nothing.
    recorded: bool,
    /// The target of an event the body wrote itself before its effects
    /// ([`Event::record_ahead`]); the outcome then adds only a failure.
    ahead: std::cell::RefCell<Option<String>>,
}

impl<'r> Event<'r> {
    /// The event of `action` on `target` in `repo`.
    pub(crate) fn new(
        repo: &'r Repository,
        action: &'static str,
        target: impl Into<String>,
    ) -> Self {
        Event {
            repo,
            action,
            target: target.into(),
            recorded: true,
            ahead: std::cell::RefCell::new(None),
        }
    }

    /// Records nothing when `dry_run`: a dry run changes nothing.
    pub(crate) fn unless_dry_run(mut self, dry_run: bool) -> Self {
        self.recorded = !dry_run;
        self
    }

    /// Runs `body`, then records its outcome (see [`Audited`]). Recording
    /// never changes the outcome.
    pub(crate) fn run<T: Audited>(self, body: impl FnOnce(&Self) -> Result<T>) -> Result<T> {
        let done = body(&self);
        if !self.recorded {
            return done;
        }
        let ahead = self.ahead.borrow_mut().take();
        match (&done, ahead) {
            // The event was written before the effects and the body ended
            // well: nothing to add.
            (Ok(_), Some(_)) => {}
            (Ok(outcome), None) => {
                let (ok, detail) = outcome.audit();
                record_event(self.repo, self.action, &self.target, ok, &detail);
            }
            (Err(e), ahead) => {
                let target = ahead.unwrap_or_else(|| self.target.clone());
                record_event(self.repo, self.action, &target, false, &e.to_string());
            }
        }
        done
    }

    /// Records `error` as the outcome of an operation that failed before
    /// its body could start, and gives it back.
    pub(crate) fn fail(self, error: Error) -> Error {
        if self.recorded {
            record_event(
                self.repo,
                self.action,
                &self.target,
                false,
                &error.to_string(),
            );
        }
        error
    }

    /// Writes the event now, as a success on `target` with `detail`, for a
    /// body whose effects must follow a record of them (forget names the
    /// snapshots before deleting any, so a forget killed midway never looks
    /// like lost data). A later failure is recorded as a second event on
    /// the same target.
    pub(crate) fn record_ahead(&self, target: &str, detail: &str) {
        if self.recorded {
            record_event(self.repo, self.action, target, true, detail);
        }
        *self.ahead.borrow_mut() = Some(target.to_owned());
    }
}

/// Records that `action` on `target` ended as `ok` says, with `detail`,
/// by the repository's actor. Never fails: a failure to write is kept for
/// [`Repository::take_audit_errors`]. Operations record through
/// `Event::run`; this is for events that are not one operation's
/// outcome (a watcher starting and stopping).
pub fn record_event(repo: &Repository, action: &str, target: &str, ok: bool, detail: &str) {
    let now = jiff::Timestamp::now();
    let (host, _) = crate::repo::host_and_user();
    let event = AuditEvent {
        time: now.as_second(),
        time_nsec: u32::try_from(now.subsec_nanosecond()).unwrap_or(0),
        host,
        actor: repo.actor(),
        action: action.to_owned(),
        target: target.to_owned(),
        ok,
        detail: detail.to_owned(),
        prev: newest(repo),
    };
    let written = encode_file(repo.crypto(), &event)
        .and_then(|(id, bytes)| repo.backend().write(FileKind::Audit, &id.to_hex(), &bytes));
    if let Err(e) = written {
        repo.note_audit_error(format!(
            "could not record {action} of {target} in the audit log: {e}"
        ));
    }
}

impl Repository {
    /// Runs `f` with `actor` (`token:NAME`) named in the audit events it
    /// records, then names the handle's own actor again, even when `f`
    /// panics. For the server, whose one handle runs operations for many
    /// callers: it runs changing operations one at a time, so no other
    /// operation that records events runs meanwhile. Everyone else gives
    /// the actor when opening ([`crate::repo::OpenOptions::actor`]).
    #[cfg(feature = "server")]
    pub(crate) fn acting_as<T>(&self, actor: String, f: impl FnOnce() -> T) -> T {
        /// Puts the previous actor back when dropped.
        struct Restore<'a>(&'a Repository, Option<String>);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                *lock(&self.0.actor) = self.1.take();
            }
        }
        let previous = lock(&self.actor).replace(actor);
        let _restore = Restore(self, previous);
        f()
    }

    /// Who the audit log names for this handle's operations.
    #[must_use]
    pub fn actor(&self) -> String {
        lock(&self.actor).clone().unwrap_or_else(|| {
            let (host, user) = host_and_user();
            format!("{user}@{host}")
        })
    }

    /// Keeps a failure to write an audit event, for the caller to report.
    pub(crate) fn note_audit_error(&self, message: String) {
        lock(&self.audit_errors).push(message);
    }

    /// The audit events that could not be written since the last call.
    #[must_use]
    pub fn take_audit_errors(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.audit_errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(prev: Option<AuditId>) -> AuditEvent {
        AuditEvent {
            time: 1_800_000_000,
            time_nsec: 5,
            host: "h".into(),
            actor: "me@h".into(),
            action: "backup".into(),
            target: "abc".into(),
            ok: true,
            detail: "3 files".into(),
            prev,
        }
    }

    #[test]
    fn audit_event_round_trips_and_damage_is_named() {
        let crypto = crate::format::crypto::Crypto::with_fixed_key(true);
        let e = event(Some(AuditId([7; 32])));
        let (id, bytes) = encode_file(&crypto, &e).expect("encode");
        assert_eq!(decode_file(&crypto, &id, &bytes).expect("decode"), e);
        let mut bad = bytes.clone();
        if let Some(b) = bad.last_mut() {
            *b ^= 1;
        }
        let err = decode_file(&crypto, &id, &bad)
            .expect_err("damaged")
            .to_string();
        assert!(err.contains(&id.to_string()), "{err}");
        let err = decode_file(&crypto, &AuditId([1; 32]), &bytes)
            .expect_err("renamed")
            .to_string();
        assert!(err.contains("does not match its name"), "{err}");
        let later = AuditEvent {
            time: e.time + 1,
            ..e.clone()
        };
        let (later_id, _) = encode_file(&crypto, &later).expect("encode");
        assert!(later_id.to_string() > id.to_string(), "names sort by time");
    }

    /// A repository without encryption (no key derivation to wait for),
    /// opened with `open`.
    fn unencrypted(open: &crate::repo::OpenOptions) -> Repository {
        let backend: std::sync::Arc<dyn crate::storage::Backend> =
            std::sync::Arc::new(crate::storage::MemoryBackend::new());
        let init = crate::repo::InitOptions {
            encryption: false,
            ..crate::repo::InitOptions::default()
        };
        Repository::init(std::sync::Arc::clone(&backend), None, &init).expect("init");
        Repository::open_with(backend, open, &mut || Ok(Vec::new())).expect("open")
    }

    #[test]
    fn the_actor_given_at_open_names_the_events_recorded() {
        let repo = unencrypted(&crate::repo::OpenOptions::new().actor("daemon:app"));
        assert_eq!(repo.actor(), "daemon:app");
        record_event(&repo, "backup", "/srv", true, "");
        let log = read_log(&repo, None).expect("log");
        let actors: Vec<&str> = log.events.iter().map(|(_, e)| e.actor.as_str()).collect();
        assert_eq!(actors, ["daemon:app"]);
        let plain = unencrypted(&crate::repo::OpenOptions::new());
        let (host, user) = host_and_user();
        assert_eq!(plain.actor(), format!("{user}@{host}"));
    }

    #[cfg(feature = "server")]
    #[test]
    fn acting_as_names_the_actor_for_one_operation_only() {
        let repo = unencrypted(&crate::repo::OpenOptions::new().actor("daemon:app"));
        let inside = repo.acting_as("token:ci".into(), || {
            record_event(&repo, "forget", "abc", true, "");
            repo.actor()
        });
        assert_eq!(inside, "token:ci");
        assert_eq!(repo.actor(), "daemon:app", "the handle's own actor is back");
        let log = read_log(&repo, None).expect("log");
        assert_eq!(log.events.len(), 1);
        assert!(log.events.iter().all(|(_, e)| e.actor == "token:ci"));
        // A panicking operation puts the actor back too.
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            repo.acting_as("token:x".into(), || panic!("the operation failed"))
        }));
        assert!(panicked.is_err());
        assert_eq!(repo.actor(), "daemon:app");
    }
}
