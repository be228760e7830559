//! An open repository: its keys, the merged index, writing packs and
//! reading blobs, walking trees, WAL segments, locks, the audit log and
//! chunk lists. Objects are written in the documented order (packs, then
//! index, then snapshot: store-format.md §14).
//!
//! [`Repository`] is defined here with its fields; each file adds the
//! methods of one job: `open` (init, open, the config, keys and passwords),
//! `index` (loading and refreshing the merged index, packs no index
//! describes), `read` (pack headers, blobs, trees), `writer` (the blob and
//! pack writer, index files), `snapshots` (listing, reading, writing and
//! finding snapshots), `lock` (the lock protocol and the handle's locks),
//! `audit` (the audit log and its actor), `pool` (the worker pools), and
//! `walk`, `segments`, `chunklist` for trees, WAL segments and chunk lists.
//!
//! May use: `storage/`, `format/` and the base modules (`id`, `error`,
//! `sync`, `timespec`, `secrets`). Must not use `ops/`, `apps/`, `daemon/`
//! or `server/`: they are built on this, and prune, forget, verify and
//! status reach WAL segments through here rather than through the watcher.

pub mod audit;
pub mod chunklist;
mod index;
pub mod lock;
mod open;
mod pool;
mod read;
pub mod segments;
mod snapshots;
pub mod walk;
mod writer;

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};

use crate::format::config::Config;
use crate::format::crypto::Crypto;
use crate::format::index::Index;
use crate::id::{IndexId, KeyId, SnapshotId};
use crate::storage::cache::CachedBackend;
use crate::storage::{Backend, FileKind};

pub(crate) use open::host_and_user;
pub use open::{InitOptions, OpenOptions, create_key_file};
pub(crate) use pool::{in_pool, in_pool_holding_packs, in_pool_of};
pub(crate) use read::check_claim;
pub use snapshots::{DamagedSnapshots, readable_snapshots};
pub use writer::BlobWriter;
pub(crate) use writer::shrink_scratch;

/// An open repository. How it behaves (cache, locks, audit actor) is
/// given when it is opened ([`OpenOptions`]); what changes while it is
/// open is the index it loads and what it caches of listings.
pub struct Repository {
    backend: Arc<dyn Backend>,
    /// The local cache in front of a remote `backend` (which then is this
    /// cache), for reading tree packs whole.
    cache: Option<Arc<CachedBackend>>,
    config: Config,
    crypto: Crypto,
    chunker_seed: u64,
    key_id: KeyId,
    index: RwLock<Index>,
    /// Index files that could not be read when the index was loaded.
    index_errors: Mutex<Vec<(IndexId, String)>>,
    /// Names of the index files the index was loaded from, sorted.
    index_names: Mutex<Vec<String>>,
    /// Whether `index` has been loaded (it is loaded on first need).
    index_loaded: AtomicBool,
    /// How long taking a lock waits for conflicting holders
    /// ([`OpenOptions::lock_wait`]).
    lock_wait: std::time::Duration,
    /// Read without locking (read-only media, [`OpenOptions::no_lock`]).
    no_lock: bool,
    /// Headers of packs no index describes, read on first need so that data
    /// whose index was lost can still be restored.
    unindexed: Mutex<Option<Index>>,
    /// Set when a blob was found only through `unindexed`.
    used_unindexed: AtomicBool,
    /// Who the audit log names for this handle's operations; `None` for
    /// `user@host`. Given at open ([`OpenOptions::actor`]); behind a mutex
    /// only because the server names each request's caller for the one
    /// operation it runs ([`Repository::acting_as`]).
    actor: Mutex<Option<String>>,
    /// Audit events that could not be written.
    audit_errors: Mutex<Vec<String>>,
    /// The snapshot names of the last listing, for [`Repository::listed_snapshot_ids`].
    snapshot_listing: Mutex<Option<HashSet<SnapshotId>>>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("location", &self.backend.location())
            .finish_non_exhaustive()
    }
}

impl Repository {
    /// The local cache in front of a remote repository, if there is one.
    pub(crate) fn cache(&self) -> Option<&CachedBackend> {
        self.cache.as_deref()
    }

    /// The storage backend.
    #[must_use]
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The repository's parameters.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The sealer.
    #[must_use]
    pub fn crypto(&self) -> &Crypto {
        &self.crypto
    }

    /// The chunker seed.
    #[must_use]
    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }

    /// The key file this session opened.
    #[must_use]
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Whether a file that was listed but could not be found has really
    /// gone: the listing, asked again a few times over three seconds, no longer
    /// names it. (Object stores may list a deleted object for a moment;
    /// a file that stays listed but cannot be read is damage.)
    fn vanished(&self, kind: FileKind, name: &str) -> bool {
        for attempt in 0..5u64 {
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_millis(300 * attempt));
            }
            match self.backend.list(kind) {
                Ok(names) if !names.iter().any(|(n, _)| n == name) => return true,
                _ => {}
            }
        }
        false
    }
}
