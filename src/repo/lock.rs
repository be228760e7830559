//! Repository locks: who is using the repository right now, so that prune
//! never deletes data that a running backup will reference.
//!
//! The protocol is restic's (store-format.md §21). Every process that
//! writes or depends on the set of blobs holds a lock file in `locks/`:
//! backup, restore, verify and copy (on both repositories) a shared one,
//! forget and prune an exclusive one. To take a lock a process writes its lock file first and then lists
//! the others; if one conflicts (anything against an exclusive lock, an
//! exclusive lock against anything) it tries again later, so of two
//! processes that race, at least one always sees the other. While it waits
//! a shared lock deletes its file, but an exclusive one keeps it (unless an
//! older exclusive lock exists), so that backups arriving meanwhile step
//! aside and a prune is not starved by backups that keep overlapping. A lock is refreshed (rewritten with a new time) every
//! [`REFRESH_EVERY`]; one not refreshed for [`STALE_AFTER`], or whose
//! process is gone from this host, is stale and ignored. A holder that
//! could not refresh in time (the machine slept, the storage failed) must
//! assume others ignored it: [`Lock::check`] fails and the operation stops
//! before it writes anything that depends on the lock.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Hint, Result};
use crate::format::codec;
use crate::format::crypto::{Crypto, Domain};
use crate::id::LockId;
use crate::repo::{Repository, host_and_user};
use crate::storage::{Backend, FileKind, LocksAndIndex};
use crate::sync::lock as guard;

/// First bytes of a lock file.
const MAGIC: [u8; 8] = *b"CAIRNLCK";
/// How often a held lock is rewritten.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);
/// A lock not refreshed for this long is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

/// The record in a lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// When the lock was taken or last refreshed, seconds since the epoch.
    pub time: i64,
    /// Nanoseconds of `time`.
    pub time_nsec: u32,
    /// Exclusive (forget, prune) or shared (backup, restore, verify).
    pub exclusive: bool,
    /// Host of the holder.
    pub hostname: String,
    /// User of the holder.
    pub username: String,
    /// Process id of the holder on its host.
    pub pid: u32,
    /// What the holder is doing, for messages (`backup`, `prune`).
    pub operation: String,
}

impl LockRecord {
    /// The lock's time.
    #[must_use]
    pub fn timestamp(&self) -> Timestamp {
        Timestamp::new(self.time, i32::try_from(self.time_nsec).unwrap_or(0))
            .unwrap_or(Timestamp::UNIX_EPOCH)
    }

    /// Whether this lock no longer protects anything: not refreshed for
    /// `STALE_AFTER` (by `now`), or held by a process of this host that
    /// no longer exists.
    #[must_use]
    pub fn is_stale(&self, now: Timestamp) -> bool {
        let age = now.duration_since(self.timestamp());
        if age.as_secs() >= i64::try_from(STALE_AFTER.as_secs()).unwrap_or(i64::MAX) {
            return true;
        }
        self.holder_gone()
    }

    /// Whether this lock is provably stale, whatever its age: its holder
    /// was a process of this host that no longer exists. (A lock of another
    /// host is never judged by its process id.)
    #[must_use]
    pub fn holder_gone(&self) -> bool {
        let (host, _) = host_and_user();
        if self.hostname != host {
            return false;
        }
        let Ok(pid) = i32::try_from(self.pid) else {
            return true;
        };
        // Signal 0 only asks whether the process exists; EPERM means it
        // does, under another user.
        matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        )
    }

    /// One line naming the holder, for messages.
    #[must_use]
    pub fn describe(&self, now: Timestamp) -> String {
        let age = now.duration_since(self.timestamp()).as_secs().max(0);
        format!(
            "{} lock of `{}` by {}@{} pid {}, refreshed {}s ago",
            if self.exclusive {
                "an exclusive"
            } else {
                "a shared"
            },
            self.operation,
            self.username,
            self.hostname,
            self.pid,
            age
        )
    }
}

/// Encodes a lock file: `"CAIRNLCK" ‖ sealed(Domain::Lock, enc(LockRecord))`.
///
/// # Errors
/// Fails only when sealing fails.
pub fn encode_file(crypto: &Crypto, record: &LockRecord) -> Result<(LockId, Vec<u8>)> {
    let mut bytes = MAGIC.to_vec();
    bytes.extend(crypto.seal(Domain::Lock, &codec::encode(record))?);
    Ok((LockId::hash_of(&bytes), bytes))
}

/// Decodes and checks a lock file.
///
/// # Errors
/// A message saying what is wrong.
pub fn decode_file(crypto: &Crypto, bytes: &[u8]) -> Result<LockRecord, String> {
    let body = bytes
        .strip_prefix(&MAGIC[..])
        .ok_or_else(|| "not a lock file (wrong magic)".to_owned())?;
    let plain = crypto.open(Domain::Lock, body).map_err(|e| e.to_string())?;
    codec::decode(&plain).map_err(|e| e.to_string())
}

/// Every lock in the repository with its record, or why it could not be
/// read (a lock file being deleted while listed is simply left out).
///
/// # Errors
/// When `locks/` cannot be listed.
pub fn list(
    backend: &dyn Backend,
    crypto: &Crypto,
) -> Result<Vec<(LockId, Result<LockRecord, String>)>> {
    list_except(backend, crypto, None)
}

/// [`list`] without the lock `own` (not even read: on object storage every
/// read is a request).
fn list_except(
    backend: &dyn Backend,
    crypto: &Crypto,
    own: Option<&LockId>,
) -> Result<Vec<(LockId, Result<LockRecord, String>)>> {
    Ok(read_locks(
        backend,
        crypto,
        backend.list(FileKind::Lock)?,
        own,
    ))
}

/// The records of the listed locks other than `own`.
fn read_locks(
    backend: &dyn Backend,
    crypto: &Crypto,
    listed: Vec<(String, u64)>,
    own: Option<&LockId>,
) -> Vec<(LockId, Result<LockRecord, String>)> {
    let mut out = Vec::new();
    for (name, _) in listed {
        let Ok(id) = name.parse::<LockId>() else {
            continue;
        };
        if Some(&id) == own {
            continue;
        }
        match backend.read(FileKind::Lock, &name) {
            Ok(bytes) if LockId::hash_of(&bytes) == id => {
                out.push((id, decode_file(crypto, &bytes)));
            }
            Ok(_) => out.push((id, Err("its name is not the hash of its bytes".into()))),
            Err(e) if e.is_not_found() => {}
            Err(e) => out.push((id, Err(e.to_string()))),
        }
    }
    out
}

/// State shared with the refresher thread.
struct Held {
    id: LockId,
    /// When the lock file now in the repository was written.
    written: Timestamp,
}

/// A lock held by this process; released when dropped.
pub struct Lock {
    backend: Arc<dyn Backend>,
    /// `None` for a read-only operation run without a lock (`--no-lock`).
    held: Option<Arc<Mutex<Held>>>,
    stop: Option<mpsc::Sender<()>>,
    refresher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lock").finish_non_exhaustive()
    }
}

fn new_record(exclusive: bool, operation: &str) -> LockRecord {
    let now = Timestamp::now();
    let (hostname, username) = host_and_user();
    LockRecord {
        time: now.as_second(),
        time_nsec: u32::try_from(now.subsec_nanosecond()).unwrap_or(0),
        exclusive,
        hostname,
        username,
        pid: std::process::id(),
        operation: operation.to_owned(),
    }
}

fn write_lock(backend: &dyn Backend, crypto: &Crypto, record: &LockRecord) -> Result<LockId> {
    let (id, bytes) = encode_file(crypto, record)?;
    backend.write(FileKind::Lock, &id.to_hex(), &bytes)?;
    Ok(id)
}

/// What stands in the way of a lock.
struct Conflicts {
    /// The conflicting holders, for messages.
    found: Vec<String>,
    /// Whether the new lock must step aside (delete its file while it
    /// waits) rather than wait in place; see [`Lock::acquire`].
    yield_now: bool,
    /// Whether every conflicting holder is a `cairn watch` storing a
    /// segment, which holds its lock for moments only (see
    /// [`BRIEF_WAIT`]).
    only_brief: bool,
}

/// The operation of `cairn watch`'s locks: taken for each segment it
/// stores and released at once.
pub(crate) const BRIEF_OPERATION: &str = "watch";

/// How long any lock waits, whatever the caller's wait, for holders that
/// are all [`BRIEF_OPERATION`]s: a prune or forget next to a running
/// watcher would otherwise fail whenever it met one of its segments.
/// Waiting in place, an exclusive lock makes the watcher step aside at its
/// next segment.
const BRIEF_WAIT: Duration = Duration::from_secs(15);

/// The locks conflicting with `own` (a lock of kind `exclusive` that was
/// just written as `own_record`), among those listed after it was written.
fn conflicts(
    backend: &dyn Backend,
    crypto: &Crypto,
    listed: Vec<(String, u64)>,
    own: &LockId,
    own_record: &LockRecord,
) -> Conflicts {
    let now = Timestamp::now();
    let mut c = Conflicts {
        found: Vec::new(),
        yield_now: !own_record.exclusive,
        only_brief: true,
    };
    let own_key = (own_record.time, own_record.time_nsec, *own);
    for (id, record) in read_locks(backend, crypto, listed, Some(own)) {
        match record {
            // A lock whose holder is gone from this host protects nothing
            // and never will: removed, so that killed processes' locks do
            // not pile up until `cairn unlock`. One stale only by age is
            // left (and ignored): its host may just be asleep.
            Ok(r) if r.holder_gone() => {
                let _ = backend.delete(FileKind::Lock, &id.to_hex());
            }
            Ok(r) if r.is_stale(now) => {}
            Ok(r) if r.exclusive || own_record.exclusive => {
                // Of two exclusive locks the older (by time, then id) waits
                // in place and the younger steps aside: every process
                // reads the same records, so they agree on which is which.
                if r.exclusive && own_record.exclusive && (r.time, r.time_nsec, id) < own_key {
                    c.yield_now = true;
                }
                c.only_brief &= !r.exclusive && r.operation == BRIEF_OPERATION;
                c.found.push(r.describe(now));
            }
            Ok(_) => {}
            // A lock nobody can read might be anybody's: it conflicts
            // until `cairn unlock --remove-all` removes it.
            Err(e) => {
                c.only_brief = false;
                c.found
                    .push(format!("an unreadable lock {} ({e})", id.short()));
            }
        }
    }
    c
}

impl Lock {
    /// Takes a lock for `operation`, trying again for up to `wait` while
    /// another process holds a conflicting one.
    ///
    /// # Errors
    /// [`Error::Locked`] naming the holders when `wait` runs out; backend
    /// errors.
    pub fn acquire(
        backend: Arc<dyn Backend>,
        crypto: &Crypto,
        exclusive: bool,
        operation: &str,
        wait: Duration,
    ) -> Result<Self> {
        Self::acquire_listing(backend, crypto, exclusive, operation, wait, false).map(|(l, _)| l)
    }

    /// [`Lock::acquire`] that, with `with_index`, also lists `index/` with
    /// the listing of `locks/` that found no conflict (one request fewer
    /// on object storage; see [`Backend::list_locks_and_index`]).
    ///
    /// # Errors
    /// As [`Lock::acquire`].
    pub(crate) fn acquire_listing(
        backend: Arc<dyn Backend>,
        crypto: &Crypto,
        exclusive: bool,
        operation: &str,
        wait: Duration,
        with_index: bool,
    ) -> Result<(Self, Option<LocksAndIndex>)> {
        let started = std::time::Instant::now();
        let mut attempt = 0u32;
        // The lock file this process has in the repository while it waits
        // in place (an exclusive lock waiting for shared holders to finish).
        let mut waiting: Option<(LockId, LockRecord)> = None;
        loop {
            let (id, record) = match waiting.take() {
                // Rewritten now and then so that it never looks stale.
                Some((id, record))
                    if Timestamp::now()
                        .duration_since(record.timestamp())
                        .as_secs()
                        < i64::try_from(REFRESH_EVERY.as_secs()).unwrap_or(i64::MAX) =>
                {
                    (id, record)
                }
                old => {
                    let record = new_record(exclusive, operation);
                    let id = write_lock(backend.as_ref(), crypto, &record)?;
                    if let Some((old_id, _)) = old {
                        let _ = backend.delete(FileKind::Lock, &old_id.to_hex());
                    }
                    (id, record)
                }
            };
            let listed = if with_index {
                backend.list_locks_and_index()
            } else {
                backend.list(FileKind::Lock).map(|locks| LocksAndIndex {
                    locks,
                    ..LocksAndIndex::default()
                })
            };
            let mut listed = match listed {
                Ok(listed) => listed,
                Err(e) => {
                    let _ = backend.delete(FileKind::Lock, &id.to_hex());
                    return Err(e);
                }
            };
            let c = conflicts(
                backend.as_ref(),
                crypto,
                std::mem::take(&mut listed.locks),
                &id,
                &record,
            );
            if c.found.is_empty() {
                let index = with_index.then_some(listed);
                return Ok((Self::start(backend, crypto.clone(), record, id), index));
            }
            let waited = started.elapsed();
            let wait = if c.only_brief {
                wait.max(BRIEF_WAIT)
            } else {
                wait
            };
            if waited >= wait {
                backend.delete(FileKind::Lock, &id.to_hex())?;
                return Err(Error::Locked {
                    operation: operation.to_owned(),
                    holders: c.found.join("; "),
                });
            }
            if c.yield_now {
                backend.delete(FileKind::Lock, &id.to_hex())?;
            } else {
                // An exclusive lock waits in place: shared lockers that
                // come now see it and step aside, so a prune is not starved
                // by backups that keep overlapping.
                waiting = Some((id, record));
            }
            // Two processes that keep meeting must not keep meeting in
            // step: the pause grows and is jittered.
            attempt = attempt.saturating_add(1);
            let mut noise = [0u8; 2];
            crate::format::crypto::random(&mut noise)?;
            let base = 100u64.saturating_mul(u64::from(attempt.min(20)));
            let pause = Duration::from_millis(base + u64::from(u16::from_le_bytes(noise)) % 500)
                .min(wait - waited);
            std::thread::sleep(pause);
        }
    }

    fn start(backend: Arc<dyn Backend>, crypto: Crypto, record: LockRecord, id: LockId) -> Self {
        let held = Arc::new(Mutex::new(Held {
            id,
            written: record.timestamp(),
        }));
        let (stop, stopped) = mpsc::channel::<()>();
        let thread_backend = Arc::clone(&backend);
        let thread_held = Arc::clone(&held);
        let refresher = std::thread::Builder::new()
            .name("cairn-lock".into())
            .spawn(move || {
                loop {
                    match stopped.recv_timeout(REFRESH_EVERY) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    let fresh = new_record(record.exclusive, &record.operation);
                    // The new file first, then the old one goes: there is
                    // never a moment without a lock file.
                    if let Ok(new_id) = write_lock(thread_backend.as_ref(), &crypto, &fresh) {
                        let mut h = guard(&thread_held);
                        let old = std::mem::replace(&mut h.id, new_id);
                        h.written = fresh.timestamp();
                        drop(h);
                        let _ = thread_backend.delete(FileKind::Lock, &old.to_hex());
                    }
                }
            })
            .ok();
        Self {
            backend,
            held: Some(held),
            stop: Some(stop),
            refresher,
        }
    }

    /// No lock at all, for reading a repository that cannot be written
    /// (read-only media): nothing stops a prune from deleting what the
    /// reader needs, which then shows as missing data.
    pub(crate) fn none(backend: Arc<dyn Backend>) -> Self {
        Self {
            backend,
            held: None,
            stop: None,
            refresher: None,
        }
    }

    /// Whether a lock file is held (false for `Lock::none`).
    #[must_use]
    pub fn is_held(&self) -> bool {
        self.held.is_some()
    }

    /// Fails when the lock may have been treated as stale by others: its
    /// file was last written too long ago (the refresher could not write,
    /// or the machine slept). Called before writing anything whose safety
    /// depends on the lock.
    ///
    /// # Errors
    /// [`Error::LockLost`].
    pub fn check(&self) -> Result<()> {
        let Some(held) = &self.held else {
            return Ok(());
        };
        let written = guard(held).written;
        let age = Timestamp::now().duration_since(written);
        // A margin of a refresh period: others see the file as stale only
        // at STALE_AFTER, by their clocks.
        let limit = STALE_AFTER.saturating_sub(REFRESH_EVERY);
        if age.as_secs() >= i64::try_from(limit.as_secs()).unwrap_or(i64::MAX) {
            return Err(Error::LockLost {
                age_secs: age.as_secs(),
            });
        }
        Ok(())
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        if let Some(held) = &self.held {
            let id = guard(held).id;
            let _ = self.backend.delete(FileKind::Lock, &id.to_hex());
        }
    }
}

/// What `unlock` removed.
#[derive(Debug, Clone, Default)]
pub struct Unlocked {
    /// Lock files removed, with their holders.
    pub removed: Vec<(LockId, String)>,
    /// Live locks left in place.
    pub kept: Vec<(LockId, String)>,
}

/// Removes stale locks, or every lock with `all` (for a lock nobody can
/// read, or when the user knows its holder is gone).
///
/// # Errors
/// Backend errors.
pub fn unlock(backend: &dyn Backend, crypto: &Crypto, all: bool) -> Result<Unlocked> {
    let now = Timestamp::now();
    let mut done = Unlocked::default();
    for (id, record) in list(backend, crypto)? {
        let (stale, what) = match &record {
            Ok(r) => (r.is_stale(now), r.describe(now)),
            Err(e) => (false, format!("unreadable lock ({e})")),
        };
        if all || stale {
            match backend.delete(FileKind::Lock, &id.to_hex()) {
                Ok(()) => done.removed.push((id, what)),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        } else {
            done.kept.push((id, what));
        }
    }
    Ok(done)
}

// The handle's side: the lock a `Repository` takes for an operation, with
// the wait and `no_lock` it was opened with, and the lock files it lists or
// removes (`cairn unlock`).
impl Repository {
    /// Takes a lock for `operation` (see the `lock` module): exclusive for
    /// operations that delete data, shared for those that add or read it.
    /// An operation that relies on the index refreshes it after this.
    ///
    /// # Errors
    /// [`Error::Locked`] when another process holds a conflicting lock
    /// beyond the wait; backend errors.
    pub fn lock(&self, exclusive: bool, operation: &str) -> Result<Lock> {
        self.lock_listing(exclusive, operation, false)
            .map(|(held, _)| held)
    }

    /// [`Repository::lock`], also listing `index/` with `with_index`
    /// (`None` when no lock was taken).
    pub(super) fn lock_listing(
        &self,
        exclusive: bool,
        operation: &str,
        with_index: bool,
    ) -> Result<(Lock, Option<LocksAndIndex>)> {
        // A listing from before this lock may name snapshots a forget has
        // removed since: only listings made under the lock may be reused.
        *guard(&self.snapshot_listing) = None;
        if self.no_lock {
            if exclusive || operation == "backup" || operation == "copy" {
                return Err(Error::invalid(format!(
                    "a repository opened without its lock can only be read (restore, verify); {operation} changes the repository and needs its lock"
                ))
                .hinted(Hint::TakeLock));
            }
            return Ok((Lock::none(Arc::clone(&self.backend)), None));
        }
        Lock::acquire_listing(
            Arc::clone(&self.backend),
            &self.crypto,
            exclusive,
            operation,
            self.lock_wait,
            with_index,
        )
    }

    /// Every lock file, with its record or why it cannot be read.
    ///
    /// # Errors
    /// When `locks/` cannot be listed.
    pub fn locks(&self) -> Result<Vec<(LockId, Result<LockRecord, String>)>> {
        list(self.backend.as_ref(), &self.crypto)
    }

    /// Removes stale locks (every lock with `all`).
    ///
    /// # Errors
    /// Backend errors.
    pub fn unlock(&self, all: bool) -> Result<Unlocked> {
        unlock(self.backend.as_ref(), &self.crypto, all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryBackend;

    fn crypto() -> Crypto {
        Crypto::new(
            &crate::format::crypto::MasterKey::generate().expect("key"),
            true,
        )
    }

    #[test]
    fn lock_file_round_trips_and_rejects_damage() {
        let c = crypto();
        let r = new_record(true, "prune");
        let (id, bytes) = encode_file(&c, &r).expect("encode");
        assert_eq!(id, LockId::hash_of(&bytes));
        assert_eq!(decode_file(&c, &bytes), Ok(r));
        let mut bad = bytes.clone();
        if let Some(b) = bad.last_mut() {
            *b ^= 1;
        }
        assert!(decode_file(&c, &bad).is_err());
        assert!(decode_file(&crypto(), &bytes).is_err());
        assert!(decode_file(&c, b"CAIRNSNP").is_err());
    }

    #[test]
    fn shared_locks_coexist_and_exclusive_ones_exclude() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let c = crypto();
        let none = Duration::ZERO;
        let a = Lock::acquire(Arc::clone(&backend), &c, false, "backup", none).expect("a");
        let b = Lock::acquire(Arc::clone(&backend), &c, false, "backup", none).expect("b");
        let e = Lock::acquire(Arc::clone(&backend), &c, true, "prune", none)
            .expect_err("shared locks are held");
        assert!(matches!(e, Error::Locked { .. }), "{e}");
        assert!(e.to_string().contains("backup"), "{e}");
        drop((a, b));
        let x = Lock::acquire(Arc::clone(&backend), &c, true, "prune", none).expect("free now");
        assert!(Lock::acquire(Arc::clone(&backend), &c, false, "backup", none).is_err());
        x.check().expect("fresh lock");
        drop(x);
        assert!(
            list(backend.as_ref(), &c).expect("list").is_empty(),
            "released locks are gone"
        );
    }

    #[test]
    fn an_exclusive_lock_waits_out_a_watcher_storing_a_segment() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let c = crypto();
        let segment = Lock::acquire(
            Arc::clone(&backend),
            &c,
            false,
            BRIEF_OPERATION,
            Duration::ZERO,
        )
        .expect("watch");
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(segment);
        });
        // No --retry-lock, yet the brief holder is waited for.
        let prune = Lock::acquire(Arc::clone(&backend), &c, true, "prune", Duration::ZERO)
            .expect("the watcher's lock goes within moments");
        release.join().expect("release");
        // While the prune holds its lock, the watcher steps aside.
        let e = Lock::acquire(
            Arc::clone(&backend),
            &c,
            false,
            BRIEF_OPERATION,
            Duration::ZERO,
        )
        .expect_err("prune holds the repository");
        assert!(matches!(e, Error::Locked { .. }), "{e}");
        drop(prune);
    }

    #[test]
    fn a_waiting_exclusive_lock_turns_new_shared_ones_away() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let c = crypto();
        let backup = Lock::acquire(Arc::clone(&backend), &c, false, "backup", Duration::ZERO)
            .expect("backup");
        let pruner = {
            let (backend, c) = (Arc::clone(&backend), c.clone());
            std::thread::spawn(move || {
                Lock::acquire(backend, &c, true, "prune", Duration::from_secs(30))
            })
        };
        // Once the prune waits, its file stays and a new backup is refused,
        // although the only holder is a shared lock.
        let started = std::time::Instant::now();
        while list(backend.as_ref(), &c).expect("list").len() < 2 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "prune never waited"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let e = Lock::acquire(Arc::clone(&backend), &c, false, "backup", Duration::ZERO)
            .expect_err("a prune is waiting");
        assert!(e.to_string().contains("prune"), "{e}");
        drop(backup);
        let prune = pruner.join().expect("thread").expect("prune gets its lock");
        drop(prune);
        assert!(list(backend.as_ref(), &c).expect("list").is_empty());
    }

    #[test]
    fn of_two_waiting_exclusive_locks_the_younger_steps_aside() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let c = crypto();
        let mut older = new_record(true, "prune");
        older.time -= 10;
        let older_id = write_lock(backend.as_ref(), &c, &older).expect("write");
        let younger = new_record(true, "forget");
        let younger_id = write_lock(backend.as_ref(), &c, &younger).expect("write");
        let seen_by_younger = conflicts(
            backend.as_ref(),
            &c,
            backend.list(FileKind::Lock).expect("list"),
            &younger_id,
            &younger,
        );
        assert!(seen_by_younger.yield_now);
        let seen_by_older = conflicts(
            backend.as_ref(),
            &c,
            backend.list(FileKind::Lock).expect("list"),
            &older_id,
            &older,
        );
        assert!(!seen_by_older.yield_now);
        assert_eq!(seen_by_older.found.len(), 1);
    }

    #[test]
    fn stale_locks_are_ignored_and_unlock_removes_them() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let c = crypto();
        // An exclusive lock of a process of this host that no longer exists,
        // and one of another host refreshed an hour ago.
        let mut dead = new_record(true, "prune");
        dead.pid = i32::MAX as u32;
        write_lock(backend.as_ref(), &c, &dead).expect("write");
        let mut old = new_record(true, "prune");
        old.hostname = "elsewhere".into();
        old.time -= 3600;
        write_lock(backend.as_ref(), &c, &old).expect("write");
        let mut live = new_record(false, "backup");
        live.hostname = "elsewhere".into();
        write_lock(backend.as_ref(), &c, &live).expect("write");
        let held = Lock::acquire(Arc::clone(&backend), &c, false, "backup", Duration::ZERO)
            .expect("stale exclusive locks do not block");
        drop(held);
        // Taking the lock removed the dead process's lock, which is stale
        // for sure, and left the other host's old one (maybe only asleep).
        let left = list(backend.as_ref(), &c).expect("list");
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(
            left.iter()
                .all(|(_, r)| r.as_ref().is_ok_and(|r| r.hostname == "elsewhere")),
            "{left:?}"
        );
        let done = unlock(backend.as_ref(), &c, false).expect("unlock");
        assert_eq!(done.removed.len(), 1);
        assert_eq!(done.kept.len(), 1);
        let all = unlock(backend.as_ref(), &c, true).expect("unlock all");
        assert_eq!(all.removed.len(), 1);
    }

    #[test]
    fn waiting_for_a_lock_ends() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let c = crypto();
        let held =
            Lock::acquire(Arc::clone(&backend), &c, true, "prune", Duration::ZERO).expect("held");
        let wait = Duration::from_millis(300);
        let e = Lock::acquire(Arc::clone(&backend), &c, false, "backup", wait).expect_err("busy");
        assert!(matches!(e, Error::Locked { .. }));
        // Released while another waits: the waiter gets it.
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(held);
        });
        Lock::acquire(
            Arc::clone(&backend),
            &c,
            false,
            "backup",
            Duration::from_secs(30),
        )
        .expect("released meanwhile");
        releaser.join().expect("join");
    }

    #[test]
    fn no_lock_given_at_open_or_init_reads_without_a_lock_and_refuses_changes() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let init = crate::repo::InitOptions {
            encryption: false,
            ..crate::repo::InitOptions::default()
        };
        let no_lock = crate::repo::OpenOptions::new().no_lock(true);
        let created =
            Repository::init_with(Arc::clone(&backend), None, &init, &no_lock).expect("init");
        let opened = Repository::open_with(Arc::clone(&backend), &no_lock, &mut || Ok(Vec::new()))
            .expect("open");
        for repo in [&created, &opened] {
            let held = repo.lock(false, "restore").expect("read without a lock");
            assert!(repo.locks().expect("locks").is_empty(), "no lock file");
            drop(held);
            for (exclusive, operation) in [(true, "prune"), (false, "backup")] {
                let refused = repo
                    .lock(exclusive, operation)
                    .expect_err("a change needs its lock")
                    .to_string();
                assert!(refused.contains(operation), "{refused}");
            }
        }
        // Opened without it, the same repository is locked as usual.
        let locking = Repository::open(Arc::clone(&backend), &mut || Ok(Vec::new())).expect("open");
        let held = locking.lock(false, "restore").expect("lock");
        assert_eq!(locking.locks().expect("locks").len(), 1);
        drop(held);
    }
}
