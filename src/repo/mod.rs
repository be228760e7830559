//! A repository opened with its key: reading and writing objects in the
//! documented order (packs, then index, then snapshot).

pub mod audit;
pub mod chunklist;
pub mod lock;
pub mod segments;
pub mod walk;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::format::chunker::ChunkerParams;
use crate::format::config::{self, Config, ConfigError, Encryption, FORMAT_VERSION};
use crate::format::crypto::{Crypto, Domain, MasterKey};
use crate::format::index::{self, Index, IndexFile, IndexPack, Location};
use crate::format::keyfile::KeyFile;
use crate::format::pack::{self, BlobKind, Compression, PackEntry, TRAILER_LEN};
use crate::format::snapshot::{self, Snapshot};
use crate::format::tree::Tree;
use crate::id::{BlobId, IndexId, KeyId, PackId, SnapshotId};
use crate::storage::StagedFile;
use crate::storage::cache::CachedBackend;
use crate::storage::{Backend, CONFIG_NAME, FileKind};
use crate::sync::lock;
use crate::{Error, Result};

/// Runs `f` on a rayon pool sized for mixed I/O and CPU work: one thread
/// per core, plus [`BLOCKING_READERS`] + 1 so that threads blocked on
/// cold-cache reads (a backup opens files one after another) or file writes
/// do not leave the cores idle. Measured on /usr/share (45,000 files, page
/// cache dropped) with two cores: a backup took 3.9 s with 3 threads and
/// 2.9 s with 7 to a local repository, 6.1 s and 5.0 s to object storage,
/// for about 12 MiB more peak memory locally. Falls back to the global pool
/// if a pool cannot be built.
pub(crate) fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    in_pool_of(0, f)
}

/// Worker threads beyond the cores, for those waiting on the disk.
const BLOCKING_READERS: usize = 4;

/// [`in_pool`] with at least `min_threads` workers: for work that waits on
/// the network more than on the CPU (reads from object storage).
pub(crate) fn in_pool_of<R: Send>(min_threads: usize, f: impl FnOnce() -> R + Send) -> R {
    run_in_pool(pool_threads().max(min_threads), f)
}

/// [`in_pool`] for work that holds a whole pack in each thread (prune's
/// repacking, `verify --read-data` on object storage): at most as many
/// threads as keep [`PACKS_IN_MEMORY`] of packs of `pack_size`, and two.
pub(crate) fn in_pool_holding_packs<R: Send>(pack_size: u32, f: impl FnOnce() -> R + Send) -> R {
    let fit = usize::try_from(PACKS_IN_MEMORY / u64::from(pack_size.max(1))).unwrap_or(2);
    run_in_pool(pool_threads().min(fit).max(2), f)
}

/// Whole packs held at once by [`in_pool_holding_packs`].
const PACKS_IN_MEMORY: u64 = 256 << 20;

fn pool_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    (cores + 1 + BLOCKING_READERS).clamp(2, 64)
}

fn run_in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    match rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("cairn-worker-{i}"))
        // Directories are walked recursively, one frame chain per level:
        // room for trees thousands of levels deep.
        .stack_size(16 << 20)
        .build()
    {
        Ok(pool) => pool.install(f),
        Err(_) => f(),
    }
}

thread_local! {
    /// Per-thread buffers for a blob's compressed and sealed forms, reused
    /// so that storing a blob allocates nothing.
    static SCRATCH: std::cell::RefCell<(Vec<u8>, Vec<u8>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Keeps a reused buffer small between uses: a rare large chunk should not
/// pin megabytes in every worker for the rest of the run.
pub(crate) fn shrink_scratch(buf: &mut Vec<u8>) {
    const KEEP: usize = 1 << 20;
    if buf.capacity() > KEEP {
        buf.clear();
        buf.shrink_to(KEEP);
    }
}

/// A pack closes when it holds this many blobs, whatever its size.
const MAX_PACK_ENTRIES: usize = 1 << 16;

/// At most this many blob entries go into one index file (unless one pack
/// has more). A backup writes an index file whenever its packs reach this
/// many entries: memory for unindexed packs stays bounded, an interrupted
/// backup leaves most of its data indexed for the next run to reuse, and
/// readers decode index files a few at a time in little memory.
const MAX_INDEX_ENTRIES: usize = 1 << 16;

/// Options for creating a repository.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InitOptions {
    /// Encrypt objects (the default). `false` only on explicit request.
    pub encryption: bool,
    /// Chunker parameters.
    pub chunker: ChunkerParams,
    /// zstd level (0 disables compression).
    pub compression_level: i32,
    /// Pack size at which a pack is closed; `None` chooses by where the
    /// repository is: `LOCAL_PACK_SIZE` on a file system,
    /// `REMOTE_PACK_SIZE` on object storage.
    pub pack_target_size: Option<u32>,
    /// Argon2id memory of the first key, in MiB, between
    /// [`crate::format::crypto::MIN_KDF_MEMORY_MIB`] and [`crate::format::crypto::MAX_KDF_MEMORY_MIB`].
    pub kdf_memory_mib: u32,
    /// The blob id key and chunker seed taken from an existing repository
    /// ([`InitOptions::related_to`]); `None` draws fresh ones.
    pub(crate) related: Option<SharedIds>,
}

/// Default pack size of a repository on a file system.
pub const LOCAL_PACK_SIZE: u32 = 16 << 20;

/// Default pack size of a repository on object storage, where each pack is
/// one request to write and to read back whole, and where the number of
/// objects is what listings and per-request prices scale with
/// (BENCHMARKS.md, issue 9; SCALE.md). Packs are uploaded in one PUT.
pub const REMOTE_PACK_SIZE: u32 = 64 << 20;

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            encryption: true,
            chunker: ChunkerParams::default(),
            compression_level: 3,
            pack_target_size: None,
            kdf_memory_mib: crate::format::crypto::DEFAULT_KDF_MEMORY_MIB,
            related: None,
        }
    }
}

/// Why key file `name` with content `bytes` is damaged, if it is: key
/// files are named by the BLAKE3 hash of their bytes (store-format.md §2)
/// and must decode, with KDF parameters that are in range.
fn key_damage(name: &str, bytes: &[u8]) -> Option<String> {
    let Ok(id) = name.parse::<KeyId>() else {
        return Some("its name is not a key id".into());
    };
    if KeyId::hash_of(bytes) != id {
        return Some(format!(
            "its content ({} bytes) does not match its name: changed or truncated",
            bytes.len()
        ));
    }
    match KeyFile::decode(bytes) {
        Ok(_) => None,
        Err(why) => Some(format!("it does not decode: {why}")),
    }
}

/// What choosing the newest snapshot (`latest`, a snapshot at a time) does
/// with snapshot files that cannot be read. Their time is unknown, so any of
/// them may be the snapshot asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DamagedSnapshots {
    /// Fail, naming the damaged files: an older snapshot is never quietly
    /// taken for the newest.
    #[default]
    Refuse,
    /// Choose among the readable snapshots only (asked for explicitly).
    Skip,
}

/// The readable snapshots of `candidates` (as [`Repository::snapshots`]
/// lists them, oldest first), for choosing the newest or the one at a time.
/// The one place where damaged snapshot files are judged when choosing: any
/// other rule (filters, tags) applies to what this returns.
///
/// # Errors
/// With [`DamagedSnapshots::Refuse`], [`Error::Corrupt`] naming every
/// candidate that cannot be read (`snapshots/ID`) and why.
pub fn readable_snapshots(
    candidates: Vec<(SnapshotId, Result<Snapshot>)>,
    damaged: DamagedSnapshots,
) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let mut readable = Vec::with_capacity(candidates.len());
    let mut bad: Vec<(SnapshotId, Error)> = Vec::new();
    for (id, s) in candidates {
        match s {
            Ok(s) => readable.push((id, s)),
            Err(e) => bad.push((id, e)),
        }
    }
    if damaged == DamagedSnapshots::Skip || bad.is_empty() {
        return Ok(readable);
    }
    let files: Vec<String> = bad
        .iter()
        .map(|(id, _)| format!("snapshots/{}", id.to_hex()))
        .collect();
    let why = bad
        .iter()
        .map(|(id, e)| match e {
            Error::Corrupt { reason, .. } => format!("{}: {reason}", id.short()),
            other => format!("{}: {other}", id.short()),
        })
        .collect::<Vec<_>>()
        .join("; ");
    Err(Error::corrupt(
        format!(
            "snapshot file{} {}",
            if files.len() == 1 { "" } else { "s" },
            files.join(", ")
        ),
        format!(
            "{why}; its time cannot be read, so it may be newer than every readable snapshot and the newest cannot be told: name a snapshot by its id instead (`cairn snapshots` lists them)"
        ),
    ))
}

/// The parts of a master key that a related repository shares with the one
/// it was created from: the blob id key (and with it the MAC key derived
/// from it) and the chunker seed. The encryption key is never shared.
#[derive(Clone)]
pub(crate) struct SharedIds {
    id: [u8; 32],
    chunker_seed: u64,
}

impl std::fmt::Debug for SharedIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedIds(..)")
    }
}

impl SharedIds {
    /// Puts the shared parts into a freshly generated master key.
    pub(crate) fn apply(&self, master: &mut MasterKey) {
        master.id = self.id;
        master.chunker_seed = self.chunker_seed;
    }
}

impl InitOptions {
    /// Makes the new repository *related* to `other` (restic's `init
    /// --copy-chunker-params`): it takes `other`'s blob id key, chunker
    /// seed and chunker parameters, and gets its own encryption key. The
    /// same content then has the same blob ids in both, so `copy` between
    /// them transfers only what the target lacks without reading the rest,
    /// and backups into either deduplicate against copied data. Whoever
    /// holds either repository's key can tell whether the other holds a
    /// given content (store-format.md §5.4).
    pub fn related_to(&mut self, other: &Repository) -> &mut Self {
        self.chunker = other.config().chunker;
        self.related = Some(SharedIds {
            id: other.crypto().id_key(),
            chunker_seed: other.chunker_seed(),
        });
        self
    }
}

/// True when `a` and `b` give the same content the same blob id (one was
/// created related to the other, or both to a third). Compares the id of a
/// fixed probe, so no key leaves its repository.
#[must_use]
pub fn shares_blob_ids(a: &Repository, b: &Repository) -> bool {
    const PROBE: &[u8] = b"cairn copy probe";
    a.crypto().blob_id(PROBE) == b.crypto().blob_id(PROBE)
}

/// An open repository.
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
    /// How long taking a lock waits for conflicting holders.
    lock_wait: Mutex<std::time::Duration>,
    /// Read without locking (read-only media).
    no_lock: AtomicBool,
    /// Headers of packs no index describes, read on first need so that data
    /// whose index was lost can still be restored.
    unindexed: Mutex<Option<Index>>,
    /// Set when a blob was found only through `unindexed`.
    used_unindexed: AtomicBool,
    /// Who the audit log names for this process's operations; `None` for
    /// `user@host`.
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

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn username() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map_or_else(|| nix::unistd::getuid().to_string(), |u| u.name)
}

pub(crate) fn host_and_user() -> (String, String) {
    (hostname(), username())
}

fn read_config(backend: &dyn Backend) -> Result<config::RawConfig> {
    read_config_bytes(backend).map(|(raw, _)| raw)
}

/// The config, decoded and as stored.
fn read_config_bytes(backend: &dyn Backend) -> Result<(config::RawConfig, Vec<u8>)> {
    let location = backend.location();
    let bytes = match backend.read(FileKind::Config, CONFIG_NAME) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Err(Error::RepoNotFound { location }),
        Err(e) => return Err(e),
    };
    Ok((decode_config(location, &bytes)?, bytes))
}

fn decode_config(location: String, bytes: &[u8]) -> Result<config::RawConfig> {
    config::decode(bytes).map_err(|e| match e {
        ConfigError::Version(found) => Error::UnsupportedVersion {
            location,
            found,
            supported: FORMAT_VERSION,
        },
        other => Error::corrupt(format!("config of {location}"), other.to_string()),
    })
}

/// True when the repository's config says it is unencrypted, so no password
/// is needed. Fails like [`Repository::open`] for a missing repository or an
/// unknown version, before any password is asked for.
///
/// # Errors
/// [`Error::RepoNotFound`], [`Error::UnsupportedVersion`] or a damaged config.
pub fn needs_password(backend: &dyn Backend) -> Result<bool> {
    Ok(read_config(backend)?.config.encryption != Encryption::None)
}

impl Repository {
    /// Creates a repository; `password` is required unless encryption is off.
    ///
    /// # Errors
    /// Fails when a repository exists there or the backend refuses writes.
    pub fn init(
        backend: Arc<dyn Backend>,
        password: Option<&[u8]>,
        opts: &InitOptions,
    ) -> Result<Self> {
        let mut repo_id = [0u8; 32];
        crate::format::crypto::random(&mut repo_id)?;
        let config = Config {
            repo_id,
            encryption: if opts.encryption {
                Encryption::XChaCha20Poly1305
            } else {
                Encryption::None
            },
            chunker: opts.chunker,
            compression_level: opts.compression_level,
            pack_target_size: opts.pack_target_size.unwrap_or(if backend.is_remote() {
                REMOTE_PACK_SIZE
            } else {
                LOCAL_PACK_SIZE
            }),
        };
        config.validate().map_err(Error::Invalid)?;
        if opts.encryption && password.is_none() {
            return Err(Error::invalid("an encrypted repository needs a password"));
        }
        backend.create()?;
        // Without a config there is no repository. Key files alone were left
        // by an `init` that crashed before writing the config and may go;
        // but data next to them means a repository that lost its config,
        // and its keys are the only way to read that data.
        for kind in [FileKind::Pack, FileKind::Index, FileKind::Snapshot] {
            if !backend.list(kind)?.is_empty() {
                return Err(Error::corrupt(
                    format!("repository at {}", backend.location()),
                    format!(
                        "it holds {} files but no config; refusing to create a new repository over it (restore the config from a copy, or choose another location)",
                        kind.dir()
                    ),
                ));
            }
        }
        for (name, _) in backend.list(FileKind::Key)? {
            backend.delete(FileKind::Key, &name)?;
        }
        let mut master = MasterKey::generate()?;
        if let Some(shared) = &opts.related {
            shared.apply(&mut master);
        }
        let (host, user) = host_and_user();
        let key = KeyFile::create(
            &master,
            if opts.encryption { password } else { None },
            opts.kdf_memory_mib,
            host,
            user,
        )?;
        let (key_id, key_bytes) = key.encode();
        let crypto = Crypto::new(&master, opts.encryption);
        // The key goes first: a config without a key would be a repository
        // nobody can open, while a key without a config is just ignored.
        backend.write(FileKind::Key, &key_id.to_hex(), &key_bytes)?;
        backend.write(
            FileKind::Config,
            CONFIG_NAME,
            &config::encode(&config, |b| crypto.mac(b)),
        )?;
        Ok(Self {
            backend,
            cache: None,
            config,
            crypto,
            chunker_seed: master.chunker_seed,
            key_id,
            index: RwLock::new(Index::default()),
            index_loaded: AtomicBool::new(true),
            index_errors: Mutex::new(Vec::new()),
            index_names: Mutex::new(Vec::new()),
            lock_wait: Mutex::new(std::time::Duration::ZERO),
            no_lock: AtomicBool::new(false),
            unindexed: Mutex::new(None),
            used_unindexed: AtomicBool::new(false),
            actor: Mutex::new(None),
            audit_errors: Mutex::new(Vec::new()),
            snapshot_listing: Mutex::new(None),
        })
    }

    /// Opens a repository. `password` is called only when it is encrypted.
    ///
    /// # Errors
    /// [`Error::RepoNotFound`], [`Error::UnsupportedVersion`],
    /// [`Error::WrongPassword`], or a damaged config or key file.
    pub fn open(
        backend: Arc<dyn Backend>,
        password: &mut dyn FnMut() -> Result<Vec<u8>>,
    ) -> Result<Self> {
        Self::open_cached(backend, None, password)
    }

    /// Opens a repository, with a local cache under `cache_root` (shared by
    /// all repositories, one subdirectory each) when the backend is remote.
    ///
    /// # Errors
    /// As [`Repository::open`].
    pub fn open_cached(
        backend: Arc<dyn Backend>,
        cache_root: Option<&std::path::Path>,
        password: &mut dyn FnMut() -> Result<Vec<u8>>,
    ) -> Result<Self> {
        let location = backend.location();
        let cache_root = cache_root.filter(|_| backend.is_remote());
        let cached_backend = |repo_id: &[u8; 32]| {
            cache_root.map(|root| {
                Arc::new(CachedBackend::new(
                    Arc::clone(&backend),
                    root.join(hex::encode(repo_id)),
                ))
            })
        };
        let mut pw = None;
        // A remote repository this host opened within the hour opens from
        // what it remembers (config and key file): no request at all. The
        // backend then confirms it is still the same repository before it
        // writes anything (`CachedBackend::confirm`).
        if let Some(root) = cache_root
            && let Some(identity) = crate::storage::cache::Identity::load(root, &location)
            && let Ok(raw) = decode_config(location.clone(), &identity.config)
            && let Some(cached) = cached_backend(&raw.config.repo_id)
        {
            let encrypted = raw.config.encryption != Encryption::None;
            let given = if encrypted { password()? } else { Vec::new() };
            let opened = cached
                .cached_key(&identity.key)
                .and_then(|bytes| Self::try_key(&identity.key, &bytes, &raw, &given).ok()?);
            if let Some((key_id, master, crypto)) = opened {
                cached.trust_remembered(root, &location, identity);
                let dyn_backend = Arc::clone(&cached) as Arc<dyn Backend>;
                return Ok(Self::assemble(
                    dyn_backend,
                    Some(cached),
                    raw.config,
                    (key_id, master, crypto),
                ));
            }
            pw = encrypted.then_some(given);
        }
        let (raw, raw_bytes) = read_config_bytes(backend.as_ref())?;
        let (backend, cache) = match cached_backend(&raw.config.repo_id) {
            Some(cached) => (Arc::clone(&cached) as Arc<dyn Backend>, Some(cached)),
            None => (backend, None),
        };
        let encrypted = raw.config.encryption != Encryption::None;
        let pw = match pw {
            Some(pw) => pw,
            None if encrypted => password()?,
            None => Vec::new(),
        };
        let mut keys = backend.list(FileKind::Key)?;
        // Names that are not a key id are not key files (store-format.md §2).
        keys.retain(|(name, _)| name.parse::<KeyId>().is_ok());
        keys.sort();
        // Each key file is tried on its own: a damaged or foreign key file
        // must not lock out the others. A key that opens but whose master
        // key does not authenticate the config is not this repository's
        // (for example left by an interrupted `init`).
        let mut opened = None;
        let mut mismatched = 0;
        // Key files that are damaged (content not matching the name, not
        // decodable) or cannot be read, with why: when no key opens, the
        // password may be that of one of them.
        let mut damaged: Vec<(String, String)> = Vec::new();
        for (name, _) in &keys {
            let bytes = match backend.read(FileKind::Key, name) {
                Ok(bytes) => bytes,
                // Removed since it was listed (`key remove`).
                Err(e) if e.is_not_found() => continue,
                Err(e) => {
                    damaged.push((name.clone(), format!("it cannot be read: {e}")));
                    continue;
                }
            };
            if let Some(why) = key_damage(name, &bytes) {
                damaged.push((name.clone(), why));
                continue;
            }
            match Self::try_key(name, &bytes, &raw, &pw) {
                Ok(Some(found)) => {
                    opened = Some(found);
                    break;
                }
                Ok(None) => {}
                Err(()) => mismatched += 1,
            }
        }
        let Some(opened) = opened else {
            if mismatched > 0 {
                return Err(Error::corrupt(
                    format!("config of {location}"),
                    "a key opened with this password, but its MAC over the config does not match: the config was changed or damaged",
                ));
            }
            if keys.is_empty() {
                return Err(Error::corrupt(
                    format!("keys/ of {location}"),
                    "it holds no key file, so nothing can open the repository (its key files were deleted): put them back from a copy of the repository",
                ));
            }
            if !damaged.is_empty() {
                let names: Vec<String> = damaged
                    .iter()
                    .map(|(n, why)| format!("keys/{n} ({why})"))
                    .collect();
                return Err(Error::corrupt(
                    format!(
                        "key file{} {}",
                        if damaged.len() == 1 { "" } else { "s" },
                        names.join(", ")
                    ),
                    match keys.len() - damaged.len() {
                        0 => format!(
                            "no intact key file is left to open {location}: put the damaged one back from a copy of the repository"
                        ),
                        n => format!(
                            "none of the {n} intact key file(s) of {location} opens with this password: if the password is right, its key file is the damaged one; put it back from a copy of the repository"
                        ),
                    },
                ));
            }
            return Err(Error::WrongPassword {
                location,
                keys: keys.len(),
            });
        };
        if let (Some(root), Some(_)) = (cache_root, &cache) {
            crate::storage::cache::Identity::save(root, &location, &opened.0.to_hex(), &raw_bytes);
        }
        // The index is loaded on first need, not here: listing snapshots
        // needs none, and a backup loads it once its lock is held (on
        // object storage every listing is a request).
        Ok(Self::assemble(backend, cache, raw.config, opened))
    }

    /// Tries key file `name` (content `bytes`, not damaged by
    /// [`key_damage`]) with `password`: `Ok(None)`
    /// when it is not a key for it (damaged, foreign, another password),
    /// `Err(())` when it opens but its master key does not authenticate the
    /// config (a key of another repository, or a changed config).
    fn try_key(
        name: &str,
        bytes: &[u8],
        raw: &config::RawConfig,
        password: &[u8],
    ) -> std::result::Result<Option<(KeyId, MasterKey, Crypto)>, ()> {
        let encrypted = raw.config.encryption != Encryption::None;
        let Ok(id) = name.parse::<KeyId>() else {
            return Ok(None);
        };
        if KeyId::hash_of(bytes) != id {
            return Ok(None);
        }
        let Ok(file) = KeyFile::decode(bytes) else {
            return Ok(None);
        };
        if encrypted != file.kdf.is_some() {
            return Ok(None);
        }
        let Ok(Some(master)) = file.open(password) else {
            return Ok(None);
        };
        let crypto = Crypto::new(&master, encrypted);
        if crypto.mac_matches(&raw.signed, &raw.mac) {
            Ok(Some((id, master, crypto)))
        } else {
            Err(())
        }
    }

    fn assemble(
        backend: Arc<dyn Backend>,
        cache: Option<Arc<CachedBackend>>,
        config: Config,
        (key_id, master, crypto): (KeyId, MasterKey, Crypto),
    ) -> Self {
        Self {
            backend,
            cache,
            config,
            crypto,
            chunker_seed: master.chunker_seed,
            key_id,
            index: RwLock::new(Index::default()),
            index_loaded: AtomicBool::new(false),
            index_errors: Mutex::new(Vec::new()),
            index_names: Mutex::new(Vec::new()),
            lock_wait: Mutex::new(std::time::Duration::ZERO),
            no_lock: AtomicBool::new(false),
            unindexed: Mutex::new(None),
            used_unindexed: AtomicBool::new(false),
            actor: Mutex::new(None),
            audit_errors: Mutex::new(Vec::new()),
            snapshot_listing: Mutex::new(None),
        }
    }

    /// Whether the index was loaded and found no index file at all: a new
    /// repository (or one that lost every index file), whose snapshots, if
    /// any, could not serve as a parent.
    /// The names of the index files loaded, for tests.
    #[cfg(test)]
    pub(crate) fn loaded_index_names(&self) -> Vec<String> {
        lock(&self.index_names).clone()
    }

    pub(crate) fn has_no_index_files(&self) -> bool {
        self.index_loaded.load(Ordering::Acquire) && lock(&self.index_names).is_empty()
    }

    /// The ids of the index files loaded, and of those written since by
    /// this process.
    pub(crate) fn index_file_ids(&self) -> Vec<[u8; 32]> {
        lock(&self.index_names)
            .iter()
            .filter_map(|n| {
                let mut id = [0u8; 32];
                hex::decode_to_slice(n, &mut id).ok().map(|()| id)
            })
            .collect()
    }

    /// The local cache in front of a remote repository, if there is one.
    pub(crate) fn cache(&self) -> Option<&CachedBackend> {
        self.cache.as_deref()
    }

    /// Loads the index again if its files changed since it was loaded
    /// (another process wrote or pruned), or for the first time: a lock
    /// holder must work from the index as it is under the lock, not as it
    /// was before.
    ///
    /// # Errors
    /// When the index cannot be listed or read.
    pub fn refresh_index(&self) -> Result<bool> {
        self.refresh_index_from(self.backend.list(FileKind::Index)?)
    }

    fn refresh_index_from(&self, listed: Vec<(String, u64)>) -> Result<bool> {
        let mut names: Vec<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        if self.index_loaded.load(Ordering::Acquire) && *lock(&self.index_names) == names {
            return Ok(false);
        }
        self.load_index_from(listed, false)?;
        Ok(true)
    }

    /// Takes a shared lock for an operation that only adds data (backup)
    /// and loads the index as it is under the lock, from the listing that
    /// took the lock where the storage lists both at once.
    ///
    /// Such a listing may have read `index/` before `locks/`
    /// (`crate::storage::LocksAndIndex::index_read_first`). It may then
    /// miss index files written by a backup that finished meanwhile, which
    /// costs at most a blob stored twice, and it may name files deleted by
    /// a prune that finished meanwhile, which must not be trusted: so it is
    /// used only when it names no file, or when every file it names is read
    /// from the storage now and all are still there; otherwise `index/` is
    /// listed again. Where index files are already cached or loaded, those
    /// reads would be wasted: then `locks/` and `index/` are listed one
    /// after the other, as for every other lock.
    ///
    /// # Errors
    /// As [`Repository::lock`] and [`Repository::refresh_index`].
    pub fn lock_to_add(&self, operation: &str) -> Result<crate::repo::lock::Lock> {
        // Where index files are cached or loaded, the index part of a
        // combined listing would be listed again anyway: list locks/ alone
        // then, so a large index/ is not listed twice.
        let with_index = !self.index_loaded.load(Ordering::Acquire)
            && self
                .cache()
                .is_none_or(|c| c.cached_names(FileKind::Index).is_empty());
        let (held, listed) = self.lock_listing(false, operation, with_index)?;
        let Some(listed) = listed else {
            self.refresh_index()?;
            return Ok(held);
        };
        if !listed.index_read_first || listed.index.is_empty() {
            self.refresh_index_from(listed.index)?;
            return Ok(held);
        }
        // Every file is read from the store, past any copy another process
        // of this host cached meanwhile: one found gone means a prune
        // overtook the listing.
        if self.load_index_from(listed.index, true)? > 0 {
            self.refresh_index()?;
        }
        Ok(held)
    }

    /// Loads the index unless it was loaded already.
    ///
    /// # Errors
    /// When the index cannot be listed or read.
    pub fn ensure_index(&self) -> Result<()> {
        if self.index_loaded.load(Ordering::Acquire) {
            return Ok(());
        }
        self.load_index_from(self.backend.list(FileKind::Index)?, false)
            .map(|_| ())
    }

    /// Loads the index from the listed files, reading each from the
    /// storage rather than the cache with `fresh`; returns how many were
    /// listed but found gone.
    fn load_index_from(&self, mut names: Vec<(String, u64)>, fresh: bool) -> Result<usize> {
        use rayon::prelude::*;
        names.sort();
        let loaded: Vec<String> = names.iter().map(|(n, _)| n.clone()).collect();
        // A few files at a time are read and decoded in parallel, then
        // folded into the index and dropped, so memory holds the compact
        // index plus a handful of decoded files, however many there are.
        let batch = rayon::current_num_threads().max(1);
        let mut errors = Vec::new();
        let mut gone = 0usize;
        let files = names.chunks(batch).flat_map(|chunk| {
            let decoded: Vec<(String, Result<IndexFile>)> = chunk
                .par_iter()
                .map(|(name, _)| (name.clone(), self.read_index_file_from(name, fresh)))
                .collect();
            decoded
        });
        let files = files.filter_map(|(name, file)| match file {
            Ok(file) => Some(Ok(file)),
            // Deleted since it was listed (by a prune that finished just
            // before this process took its lock, on a store whose listings
            // lag behind deletions): it is simply not there.
            Err(e) if e.is_not_found() && self.vanished(FileKind::Index, &name) => {
                gone += 1;
                None
            }
            Err(e) => {
                errors.push((name.parse().unwrap_or_default(), e.to_string()));
                None
            }
        });
        let index = Index::build(files)?;
        *lock(&self.index_errors) = errors;
        *self.index.write().unwrap_or_else(PoisonError::into_inner) = index;
        *lock(&self.index_names) = loaded;
        *lock(&self.unindexed) = None;
        self.index_loaded.store(true, Ordering::Release);
        Ok(gone)
    }

    /// Reads and checks one index file.
    ///
    /// # Errors
    /// Backend errors, or [`Error::Corrupt`] naming the file.
    pub fn read_index_file(&self, name: &str) -> Result<IndexFile> {
        self.read_index_file_from(name, false)
    }

    fn read_index_file_from(&self, name: &str, fresh: bool) -> Result<IndexFile> {
        let bytes = match self.cache() {
            Some(cache) if fresh => cache.read_fresh(FileKind::Index, name)?,
            _ => self.backend.read(FileKind::Index, name)?,
        };
        if IndexId::hash_of(&bytes).to_hex() != name {
            return Err(Error::corrupt(
                format!("index {name}"),
                "its content does not match its name",
            ));
        }
        index::decode_file_owned(&self.crypto, bytes)
            .map_err(|r| Error::corrupt(format!("index {name}"), r))
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

    /// Names `actor` (`token:NAME`, `daemon:PROFILE`) in the audit events of
    /// this repository handle's operations instead of `user@host`.
    pub fn set_actor(&self, actor: impl Into<String>) {
        *lock(&self.actor) = Some(actor.into());
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

    /// Index files that could not be read (reported by `verify`).
    #[must_use]
    pub fn index_errors(&self) -> Vec<(IndexId, String)> {
        lock(&self.index_errors).clone()
    }

    /// How long [`Repository::lock`] waits for conflicting holders
    /// (default: not at all).
    pub fn set_lock_wait(&self, wait: std::time::Duration) {
        *lock(&self.lock_wait) = wait;
    }

    /// Takes a lock for `operation` (see the `lock` module): exclusive for
    /// operations that delete data, shared for those that add or read it.
    /// An operation that relies on the index refreshes it after this.
    ///
    /// # Errors
    /// [`Error::Locked`] when another process holds a conflicting lock
    /// beyond the wait; backend errors.
    pub fn lock(&self, exclusive: bool, operation: &str) -> Result<crate::repo::lock::Lock> {
        self.lock_listing(exclusive, operation, false)
            .map(|(held, _)| held)
    }

    /// [`Repository::lock`], also listing `index/` with `with_index`
    /// (`None` when no lock was taken).
    fn lock_listing(
        &self,
        exclusive: bool,
        operation: &str,
        with_index: bool,
    ) -> Result<(
        crate::repo::lock::Lock,
        Option<crate::storage::LocksAndIndex>,
    )> {
        // A listing from before this lock may name snapshots a forget has
        // removed since: only listings made under the lock may be reused.
        *lock(&self.snapshot_listing) = None;
        if self.no_lock.load(Ordering::Relaxed) {
            if exclusive || operation == "backup" || operation == "copy" {
                return Err(Error::invalid(format!(
                    "--no-lock is for reading a repository that cannot be written (restore, verify); {operation} changes the repository and needs its lock"
                )));
            }
            return Ok((
                crate::repo::lock::Lock::none(Arc::clone(&self.backend)),
                None,
            ));
        }
        let wait = *lock(&self.lock_wait);
        crate::repo::lock::Lock::acquire_listing(
            Arc::clone(&self.backend),
            &self.crypto,
            exclusive,
            operation,
            wait,
            with_index,
        )
    }

    /// Read without taking locks (restore and verify of a repository on
    /// read-only media); operations that change the repository refuse.
    pub fn set_no_lock(&self, no_lock: bool) {
        self.no_lock.store(no_lock, Ordering::Relaxed);
    }

    /// Every lock file, with its record or why it cannot be read.
    ///
    /// # Errors
    /// When `locks/` cannot be listed.
    pub fn locks(
        &self,
    ) -> Result<
        Vec<(
            crate::id::LockId,
            Result<crate::repo::lock::LockRecord, String>,
        )>,
    > {
        crate::repo::lock::list(self.backend.as_ref(), &self.crypto)
    }

    /// Removes stale locks (every lock with `all`).
    ///
    /// # Errors
    /// Backend errors.
    pub fn unlock(&self, all: bool) -> Result<crate::repo::lock::Unlocked> {
        crate::repo::lock::unlock(self.backend.as_ref(), &self.crypto, all)
    }

    /// Read access to the merged index.
    pub fn index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        // Callers that can report a failure load it first
        // (`ensure_index`, `refresh_index`); here a failure to load leaves
        // the index empty, so every blob reads as not indexed.
        let _ = self.ensure_index();
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The plaintext length of a stored blob, from the index.
    ///
    /// # Errors
    /// [`Error::BlobNotIndexed`].
    pub(crate) fn raw_length(&self, id: &BlobId) -> Result<u32> {
        self.locate(id).map(|(_, loc)| loc.raw_length)
    }

    fn locate(&self, id: &BlobId) -> Result<(PackId, Location)> {
        self.ensure_index()?;
        {
            let index = self.index();
            if let Some(loc) = index.get(id)
                && let Some(pack) = index.pack_id(loc.pack)
            {
                return Ok((pack, loc));
            }
        }
        // Fall back to packs that no index describes (their index file was
        // lost, or a backup was interrupted after writing them).
        let mut extra = lock(&self.unindexed);
        if extra.is_none() {
            *extra = Some(self.scan_unindexed_packs());
        }
        let found = extra
            .as_ref()
            .and_then(|x| x.get(id).and_then(|loc| Some((x.pack_id(loc.pack)?, loc))))
            .ok_or(Error::BlobNotIndexed { id: *id })?;
        self.used_unindexed.store(true, Ordering::Relaxed);
        Ok(found)
    }

    /// True when some blob read so far was found only by scanning packs
    /// that no index lists: the data was there, but the index is damaged
    /// or incomplete.
    #[must_use]
    pub fn used_unindexed_packs(&self) -> bool {
        self.used_unindexed.load(Ordering::Relaxed)
    }

    fn scan_unindexed_packs(&self) -> Index {
        let mut extra = Index::default();
        let Ok(packs) = self.backend.list(FileKind::Pack) else {
            return extra;
        };
        let index = self.index();
        for (name, size) in packs {
            let Ok(id) = name.parse::<PackId>() else {
                continue;
            };
            if index.has_pack(&id) {
                continue;
            }
            if let Ok(entries) = self.read_pack_header(&id, size)
                && extra.add_pack(&IndexPack { id, size, entries }).is_err()
            {
                break;
            }
        }
        extra
    }

    /// Reads a pack's header from its tail.
    ///
    /// # Errors
    /// Backend errors, or [`Error::Corrupt`] for a truncated pack or a
    /// damaged header.
    pub fn read_pack_header(&self, id: &PackId, size: u64) -> Result<Vec<PackEntry>> {
        let name = id.to_hex();
        let what = || format!("pack {name}");
        if size < TRAILER_LEN {
            return Err(Error::corrupt(what(), format!("truncated to {size} bytes")));
        }
        let trailer =
            self.backend
                .read_range(FileKind::Pack, &name, size - TRAILER_LEN, TRAILER_LEN)?;
        let header_len = pack::parse_trailer(&trailer, size)
            .map_err(|e| Error::corrupt(what(), e.to_string()))?;
        let header_at = size - TRAILER_LEN - u64::from(header_len);
        let sealed =
            self.backend
                .read_range(FileKind::Pack, &name, header_at, u64::from(header_len))?;
        let plain = self
            .crypto
            .open(Domain::PackHeader, &sealed)
            .map_err(|e| Error::corrupt(what(), format!("header: {e}")))?;
        Ok(pack::decode_header(&plain, header_at)
            .map_err(|e| Error::corrupt(what(), e.to_string()))?
            .entries)
    }

    /// Opens a sealed blob and checks it against its id.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the blob and pack when any check fails.
    pub fn open_blob(
        &self,
        id: &BlobId,
        pack: &PackId,
        compression: Compression,
        raw_length: u32,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        let what = || format!("blob {id} in pack {pack}");
        let payload = self
            .crypto
            .open(Domain::Blob, sealed)
            .map_err(|e| Error::corrupt(what(), e.to_string()))?;
        let plain = match compression {
            Compression::None => payload,
            Compression::Zstd => crate::format::compress::decompress(&payload, raw_length as usize)
                .map_err(|e| Error::corrupt(what(), format!("zstd: {e}")))?,
        };
        if plain.len() != raw_length as usize {
            return Err(Error::corrupt(
                what(),
                format!("length {} instead of {raw_length}", plain.len()),
            ));
        }
        if self.crypto.blob_id(&plain) != *id {
            return Err(Error::corrupt(what(), "content does not match its id"));
        }
        Ok(plain)
    }

    /// Reads a blob, checking it against its id.
    ///
    /// # Errors
    /// [`Error::BlobNotIndexed`], backend errors, or [`Error::Corrupt`].
    pub fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        let (pack, loc) = self.locate(id)?;
        check_claim(id, &pack, &loc)?;
        // Trees are read again by every backup, ls and restore: from a
        // remote repository their packs come whole into the cache. A copy
        // that fails the checks is dropped and the blob read afresh.
        if loc.kind == BlobKind::Tree
            && let Some(cache) = &self.cache
        {
            let name = pack.to_hex();
            // Twice at most: a damaged copy is replaced by a fresh download.
            for _ in 0..2 {
                let Ok(sealed) =
                    cache.read_pack_range(&name, u64::from(loc.offset), u64::from(loc.length))
                else {
                    break;
                };
                match self.open_blob(id, &pack, loc.compression, loc.raw_length, &sealed) {
                    Ok(plain) => return Ok(plain),
                    Err(_) => cache.forget_pack(&name),
                }
            }
        }
        let sealed = self.backend.read_range(
            FileKind::Pack,
            &pack.to_hex(),
            u64::from(loc.offset),
            u64::from(loc.length),
        )?;
        self.open_blob(id, &pack, loc.compression, loc.raw_length, &sealed)
    }

    /// Reads and decodes a tree blob.
    ///
    /// # Errors
    /// As [`Repository::read_blob`], or [`Error::Corrupt`] for a malformed tree.
    pub fn read_tree(&self, id: &BlobId) -> Result<Tree> {
        let bytes = self.read_blob(id)?;
        Tree::decode(&bytes).map_err(|e| Error::corrupt(format!("tree {id}"), e.to_string()))
    }

    /// Reads one snapshot file.
    ///
    /// # Errors
    /// Backend errors or [`Error::Corrupt`].
    pub fn read_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        let name = id.to_hex();
        let bytes = self.backend.read(FileKind::Snapshot, &name)?;
        if SnapshotId::hash_of(&bytes) != *id {
            return Err(Error::corrupt(
                format!("snapshot {name}"),
                "its content does not match its name",
            ));
        }
        snapshot::decode_file(&self.crypto, &bytes)
            .map_err(|r| Error::corrupt(format!("snapshot {name}"), r))
    }

    /// Starts a pack of `kind`; tree packs of a remote repository are also
    /// kept in the local cache, since every later backup reads them.
    fn stage_pack(&self, kind: BlobKind) -> Result<Box<dyn StagedFile>> {
        match (&self.cache, kind) {
            (Some(cache), BlobKind::Tree) => cache.stage_keeping_copy(),
            _ => self.backend.stage(FileKind::Pack),
        }
    }

    /// The snapshots the repository lists: those of the last listing this
    /// process made, else a new one. Under a shared lock snapshots can only
    /// be added (forget needs an exclusive one), so an earlier listing
    /// taken under the same lock still names every snapshot that exists,
    /// which is what the files cache asks; it saves a request.
    ///
    /// # Errors
    /// When the snapshots cannot be listed.
    pub(crate) fn listed_snapshot_ids(&self) -> Result<HashSet<SnapshotId>> {
        if let Some(ids) = lock(&self.snapshot_listing).clone() {
            return Ok(ids);
        }
        self.list_snapshot_ids()
    }

    /// Lists the snapshots, keeping the listing for
    /// [`Repository::listed_snapshot_ids`].
    fn list_snapshot_ids(&self) -> Result<HashSet<SnapshotId>> {
        let ids: HashSet<SnapshotId> = self
            .backend
            .list(FileKind::Snapshot)?
            .into_iter()
            .filter_map(|(n, _)| n.parse().ok())
            .collect();
        *lock(&self.snapshot_listing) = Some(ids.clone());
        Ok(ids)
    }

    /// Reads the snapshots `ids`, oldest first; one deleted since it was
    /// listed (by a concurrent forget) is left out.
    fn read_snapshots(&self, ids: HashSet<SnapshotId>) -> Vec<(SnapshotId, Result<Snapshot>)> {
        let mut out: Vec<(SnapshotId, Result<Snapshot>)> = ids
            .into_iter()
            .map(|id| (id, self.read_snapshot(&id)))
            .filter(|(id, s)| {
                !matches!(s, Err(e) if e.is_not_found() && self.vanished(FileKind::Snapshot, &id.to_hex()))
            })
            .collect();
        // Oldest first (damaged ones first of all), ties by id.
        out.sort_by_key(|(id, s)| {
            (
                s.as_ref()
                    .map(|s| (s.time, s.time_nsec))
                    .unwrap_or((i64::MIN, 0)),
                *id,
            )
        });
        out
    }

    /// As [`Repository::snapshots`], from the listing this process took
    /// under its current lock if there is one (see
    /// [`Repository::listed_snapshot_ids`]): it names every snapshot but
    /// those added meanwhile by others.
    ///
    /// # Errors
    /// Fails when the snapshot directory cannot be listed.
    pub(crate) fn snapshots_listed_under_lock(
        &self,
    ) -> Result<Vec<(SnapshotId, Result<Snapshot>)>> {
        Ok(self.read_snapshots(self.listed_snapshot_ids()?))
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

    /// All snapshots, oldest first. Damaged ones are returned as errors;
    /// one deleted between listing and reading (by a concurrent forget) is
    /// left out.
    ///
    /// # Errors
    /// Fails when the snapshot directory cannot be listed.
    pub fn snapshots(&self) -> Result<Vec<(SnapshotId, Result<Snapshot>)>> {
        Ok(self.read_snapshots(self.list_snapshot_ids()?))
    }

    /// Resolves `latest` (the newest snapshot that is not a safety
    /// snapshot, see [`Snapshot::is_safety`]) or a unique id prefix. A
    /// damaged snapshot file makes `latest` fail (see
    /// [`readable_snapshots`]); use [`Repository::find_snapshot_with`] to
    /// skip damaged files instead.
    ///
    /// # Errors
    /// [`Error::NotFound`] when nothing matches, [`Error::Ambiguous`] when
    /// more than one snapshot does;
    /// [`Error::Corrupt`] naming the damaged snapshot files for `latest`.
    pub fn find_snapshot(&self, reference: &str) -> Result<(SnapshotId, Snapshot)> {
        self.find_snapshot_with(reference, DamagedSnapshots::Refuse)
    }

    /// [`Repository::find_snapshot`], saying what `latest` does with
    /// snapshot files that cannot be read.
    ///
    /// # Errors
    /// As [`Repository::find_snapshot`].
    pub fn find_snapshot_with(
        &self,
        reference: &str,
        damaged: DamagedSnapshots,
    ) -> Result<(SnapshotId, Snapshot)> {
        let all = self.snapshots()?;
        if reference == "latest" {
            return readable_snapshots(all, damaged)?
                .into_iter()
                .rev()
                .find(|(_, s)| !s.is_safety())
                .ok_or_else(|| Error::NotFound("the repository has no snapshots yet".into()));
        }
        let r = reference.to_ascii_lowercase();
        let mut matches = all
            .into_iter()
            .filter(|(id, _)| id.to_hex().starts_with(&r));
        match (matches.next(), matches.next()) {
            (Some((id, s)), None) => Ok((id, s?)),
            (None, _) => Err(Error::NotFound(format!(
                "no snapshot matches '{reference}': list them with `cairn snapshots`"
            ))),
            (Some(_), Some(_)) => Err(Error::Ambiguous(format!(
                "'{reference}' matches several snapshots: give more characters of the id"
            ))),
        }
    }

    /// Writes a snapshot. Call only after the index naming all its blobs.
    ///
    /// # Errors
    /// Backend errors.
    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<SnapshotId> {
        let (id, bytes) = snapshot::encode_file(&self.crypto, snap)?;
        self.backend
            .write(FileKind::Snapshot, &id.to_hex(), &bytes)?;
        Ok(id)
    }

    /// Key files with their metadata.
    ///
    /// # Errors
    /// Backend errors.
    pub fn keys(&self) -> Result<Vec<(KeyId, Result<KeyFile>)>> {
        let mut out = Vec::new();
        for (name, _) in self.backend.list(FileKind::Key)? {
            let Ok(id) = name.parse::<KeyId>() else {
                continue;
            };
            let file = self.backend.read(FileKind::Key, &name).and_then(|b| {
                KeyFile::decode(&b).map_err(|r| Error::corrupt(format!("key {name}"), r))
            });
            out.push((id, file));
        }
        out.sort_by_key(|(id, f)| (f.as_ref().map(|f| f.created).unwrap_or(0), *id));
        Ok(out)
    }

    /// Adds a key file for `password`, wrapping the same master key.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an unencrypted repository; backend errors.
    pub fn add_key(
        &self,
        password: &[u8],
        master: &MasterKey,
        kdf_memory_mib: u32,
    ) -> Result<KeyId> {
        if self.config.encryption == Encryption::None {
            return Err(Error::invalid(
                "this repository is not encrypted: it has no passwords to add",
            ));
        }
        let (host, user) = host_and_user();
        let (id, bytes) =
            KeyFile::create(master, Some(password), kdf_memory_mib, host, user)?.encode();
        let done = self.backend.write(FileKind::Key, &id.to_hex(), &bytes);
        crate::repo::audit::record(self, "key-add", &id.to_string(), &done, "");
        done.map(|()| id)
    }

    /// Removes a key file; refuses the last one and the one in use.
    ///
    /// # Errors
    /// [`Error::Invalid`] when removal would lock everyone out;
    /// [`Error::NotFound`] for a key the repository does not have.
    pub fn remove_key(&self, id: &KeyId) -> Result<()> {
        if *id == self.key_id {
            return Err(Error::invalid(
                "refusing to remove the key this session opened the repository with; open with another password first",
            ));
        }
        let keys = self.keys()?;
        if !keys.iter().any(|(k, _)| k == id) {
            return Err(Error::NotFound(format!("no key {id} in this repository")));
        }
        let done = self.backend.delete(FileKind::Key, &id.to_hex());
        crate::repo::audit::record(self, "key-remove", &id.to_string(), &done, "");
        done
    }

    /// Re-reads the master key with `password` (used to add keys).
    ///
    /// # Errors
    /// [`Error::WrongPassword`] when the current key does not open with it.
    pub fn master_key(&self, password: &[u8]) -> Result<MasterKey> {
        let name = self.key_id.to_hex();
        let file = KeyFile::decode(&self.backend.read(FileKind::Key, &name)?)
            .map_err(|r| Error::corrupt(format!("key {name}"), r))?;
        file.open(password)?.ok_or_else(|| Error::WrongPassword {
            location: self.backend.location(),
            keys: 1,
        })
    }

    /// Starts writing blobs.
    #[must_use]
    pub fn blob_writer(&self) -> BlobWriter<'_> {
        let written = Arc::new(Mutex::new(Vec::new()));
        let bytes_stored = Arc::new(AtomicU64::new(0));
        let failure = Arc::new(Mutex::new(None));
        // A rendezvous queue: one pack being written per writer thread, one
        // handed over and one being filled at most, so memory stays at a few
        // packs while workers keep compressing during the writer's fsync.
        // A remote store gets several writers: there an upload's time is
        // mostly round trips, not local disk bandwidth.
        let (tx, rx) = std::sync::mpsc::sync_channel::<OpenPack>(0);
        let rx = Arc::new(Mutex::new(rx));
        let writers = if self.backend.is_remote() {
            remote_pack_writers(self.config.pack_target_size)
        } else {
            1
        };
        let mut handles = Vec::new();
        for n in 0..writers {
            let (backend, crypto) = (Arc::clone(&self.backend), self.crypto.clone());
            let (done, stored, failed, rx) = (
                Arc::clone(&written),
                Arc::clone(&bytes_stored),
                Arc::clone(&failure),
                Arc::clone(&rx),
            );
            let spawned = std::thread::Builder::new()
                .name(format!("cairn-pack-writer-{n}"))
                .spawn(move || {
                    loop {
                        // The guard is dropped before the pack is written,
                        // so the other writers can take the next one.
                        let next = lock(&rx).recv();
                        let Ok(open) = next else { return };
                        match open.finish(&crypto, backend.as_ref()) {
                            Ok((packed, existed)) => {
                                if !existed {
                                    stored.fetch_add(packed.size, Ordering::Relaxed);
                                }
                                lock(&done).push((packed, !existed));
                            }
                            Err(e) => {
                                lock(&failed).get_or_insert(e);
                                return;
                            }
                        }
                    }
                });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    *lock(&failure) = Some(Error::internal(format!(
                        "cannot start a pack writer thread: {e}"
                    )));
                    break;
                }
            }
        }
        let tx = (handles.len() == writers).then_some(tx);
        BlobWriter {
            repo: self,
            seen: Mutex::new(HashSet::new()),
            data_pack: Mutex::new(None),
            tree_pack: Mutex::new(None),
            written,
            indexed: Mutex::new(Vec::new()),
            blobs_added: AtomicU64::new(0),
            bytes_added: AtomicU64::new(0),
            bytes_stored,
            queue: Mutex::new(tx),
            uploader: Mutex::new(handles),
            failure,
        }
    }
}

/// Pack writer threads for a remote backend: enough uploads at once to
/// hide round trips, bounded by the memory they hold (a whole pack each
/// while it is uploaded): four for 16 MiB packs, two for 64 MiB ones.
fn remote_pack_writers(pack_size: u32) -> usize {
    usize::try_from((128 << 20) / pack_size.max(1))
        .unwrap_or(1)
        .clamp(1, 4)
}

/// Refuses an index entry claiming more bytes than any blob cairn writes
/// (a record plus its seal), so a damaged or forged index cannot make a
/// reader allocate gigabytes.
///
/// # Errors
/// [`Error::Corrupt`] naming the index entry.
pub(crate) fn check_claim(id: &BlobId, pack: &PackId, loc: &Location) -> Result<()> {
    let limit = crate::format::codec::MAX_RECORD + crate::format::crypto::SEAL_OVERHEAD + 1024;
    if loc.length as usize > limit || loc.raw_length as usize > crate::format::codec::MAX_RECORD {
        return Err(Error::corrupt(
            format!("index entry of blob {id} in pack {pack}"),
            format!("claims {} bytes, more than any blob", loc.length),
        ));
    }
    Ok(())
}

/// Adds blobs to packs, deduplicating against the index, and writes the
/// index for them when finished. Shared by worker threads.
pub struct BlobWriter<'r> {
    repo: &'r Repository,
    seen: Mutex<HashSet<BlobId>>,
    /// The packs being filled, staged in storage as they grow: one for file
    /// contents and one for trees. Trees never share a pack with file
    /// contents, so a damaged data pack leaves every directory readable
    /// (verify and restore still name and restore the other files), however
    /// the threads storing chunks interleave.
    data_pack: Mutex<Option<OpenPack>>,
    tree_pack: Mutex<Option<OpenPack>>,
    /// Packs written in this session, not yet in any index, each with
    /// whether this session created the file (and may delete it).
    written: Arc<Mutex<Vec<(IndexPack, bool)>>>,
    /// Packs this writer has put in index files, created or found already
    /// there (an unencrypted pack with the same bytes).
    indexed: Mutex<Vec<PackId>>,
    blobs_added: AtomicU64,
    bytes_added: AtomicU64,
    bytes_stored: Arc<AtomicU64>,
    /// Full packs on their way to the writer thread; `None` once closed.
    queue: Mutex<Option<std::sync::mpsc::SyncSender<OpenPack>>>,
    uploader: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// The writer thread's error, which stops it.
    failure: Arc<Mutex<Option<Error>>>,
}

/// A pack being written: blobs go straight to a staged file, so memory does
/// not grow with the pack size; the id is hashed along the way.
struct OpenPack {
    file: Box<dyn StagedFile>,
    hasher: blake3::Hasher,
    len: u64,
    entries: Vec<PackEntry>,
}

fn staged_err(e: std::io::Error) -> Error {
    Error::Backend {
        op: "write",
        path: "a new pack".into(),
        source: e,
    }
}

impl OpenPack {
    fn new(file: Box<dyn StagedFile>) -> Self {
        Self {
            file,
            hasher: blake3::Hasher::new(),
            len: 0,
            entries: Vec::new(),
        }
    }

    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        self.file.write_all(bytes).map_err(staged_err)?;
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn add(
        &mut self,
        id: BlobId,
        kind: BlobKind,
        compression: Compression,
        raw_length: u32,
        sealed: &[u8],
    ) -> Result<()> {
        let offset =
            u32::try_from(self.len).map_err(|_| Error::internal("a pack grew beyond 4 GiB"))?;
        let length = u32::try_from(sealed.len())
            .map_err(|_| Error::internal("a blob larger than 4 GiB cannot be stored"))?;
        self.append(sealed)?;
        self.entries.push(PackEntry {
            id,
            kind,
            compression,
            offset,
            length,
            raw_length,
        });
        Ok(())
    }

    /// Writes header and trailer, and commits the file under its hash.
    /// Returns `None` when an identical pack already exists (unencrypted
    /// repositories seal deterministically): that file is someone else's,
    /// so this session must not list it as its own to delete on failure.
    fn finish(mut self, crypto: &Crypto, backend: &dyn Backend) -> Result<(IndexPack, bool)> {
        let tail = pack::header_and_trailer(crypto, &self.entries)?;
        self.append(&tail)?;
        let id = PackId(*self.hasher.finalize().as_bytes());
        let name = id.to_hex();
        // Only deterministic (unencrypted) sealing can produce a pack that
        // already exists; asking costs a request per pack on object storage.
        let existed = !crypto.is_encrypted()
            && backend
                .size(FileKind::Pack, &name)
                .is_ok_and(|s| s == self.len);
        if !existed {
            self.file.commit(&name)?;
        }
        Ok((
            IndexPack {
                id,
                size: self.len,
                entries: self.entries,
            },
            existed,
        ))
    }
}

/// What a [`BlobWriter`] added.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteStats {
    /// New blobs.
    pub blobs_added: u64,
    /// Their plaintext bytes.
    pub bytes_added: u64,
    /// Bytes written to the repository.
    pub bytes_stored: u64,
}

impl BlobWriter<'_> {
    /// Stores `plain` unless the repository already has it; returns its id
    /// and whether it was new.
    ///
    /// # Errors
    /// Backend errors while writing a full pack.
    pub fn save(&self, kind: BlobKind, plain: &[u8]) -> Result<(BlobId, bool)> {
        self.store(kind, plain, true)
    }

    /// Stores `plain` again although the index has it (prune copies the
    /// used blobs out of packs it is about to delete); once per writer.
    ///
    /// # Errors
    /// As [`BlobWriter::save`].
    pub(crate) fn save_again(&self, kind: BlobKind, plain: &[u8]) -> Result<(BlobId, bool)> {
        self.store(kind, plain, false)
    }

    fn store(&self, kind: BlobKind, plain: &[u8], dedup_index: bool) -> Result<(BlobId, bool)> {
        let id = self.repo.crypto.blob_id(plain);
        let new = {
            // `seen` is locked across the index lookup: `flush_index` adds
            // ids to the index before it removes them from `seen`, so every
            // id is always in one of the two for this check.
            let mut seen = lock(&self.seen);
            !(dedup_index && self.repo.index().contains(&id)) && seen.insert(id)
        };
        if !new {
            return Ok((id, false));
        }
        let raw_length = u32::try_from(plain.len())
            .map_err(|_| Error::internal("a blob larger than 4 GiB cannot be stored"))?;
        let level = self.repo.config.compression_level;
        let full = SCRATCH.with_borrow_mut(|(compressed, sealed)| -> Result<Option<OpenPack>> {
            let compression = if level > 0
                && plain.len() > 64
                && crate::format::compress::compress_smaller(plain, level, compressed)
            {
                Compression::Zstd
            } else {
                Compression::None
            };
            let payload = match compression {
                Compression::Zstd => compressed.as_slice(),
                Compression::None => plain,
            };
            self.repo.crypto.seal_into(Domain::Blob, payload, sealed)?;
            let mut cur = lock(self.open_pack(kind));
            let open = match cur.as_mut() {
                Some(open) => open,
                None => cur.insert(OpenPack::new(self.repo.stage_pack(kind)?)),
            };
            open.add(id, kind, compression, raw_length, sealed)?;
            // Packs also close at a number of entries that keeps the header
            // (52 bytes an entry) far below the record limit.
            let full = if open.len >= u64::from(self.repo.config.pack_target_size)
                || open.entries.len() >= MAX_PACK_ENTRIES
            {
                cur.take()
            } else {
                None
            };
            drop(cur);
            shrink_scratch(compressed);
            shrink_scratch(sealed);
            Ok(full)
        })?;
        self.blobs_added.fetch_add(1, Ordering::Relaxed);
        self.bytes_added
            .fetch_add(plain.len() as u64, Ordering::Relaxed);
        if let Some(builder) = full {
            self.write_pack(builder)?;
            self.flush_index(false)?;
        }
        Ok((id, true))
    }

    /// The pack that blobs of `kind` are added to.
    fn open_pack(&self, kind: BlobKind) -> &Mutex<Option<OpenPack>> {
        match kind {
            BlobKind::Data => &self.data_pack,
            BlobKind::Tree => &self.tree_pack,
        }
    }

    /// Hands a full pack to the writer thread (waiting while it is busy
    /// with the previous two).
    fn write_pack(&self, builder: OpenPack) -> Result<()> {
        let sent = match lock(&self.queue).as_ref() {
            Some(tx) => tx.send(builder).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            Err(self.writer_failure())
        }
    }

    fn writer_failure(&self) -> Error {
        lock(&self.failure)
            .take()
            .unwrap_or_else(|| Error::internal("the pack writer stopped after an earlier error"))
    }

    /// Closes the queue and waits until every queued pack is written.
    fn drain_writer(&self) -> Result<()> {
        drop(lock(&self.queue).take());
        let handles = std::mem::take(&mut *lock(&self.uploader));
        for handle in handles {
            if handle.join().is_err() {
                return Err(Error::internal("a pack writer thread panicked"));
            }
        }
        match lock(&self.failure).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Writes the last pack and the index files for every pack of this
    /// session. Only after this returns may a snapshot refer to the blobs.
    ///
    /// # Errors
    /// Backend errors; packs not yet in an index stay listed for
    /// [`BlobWriter::abandon`].
    pub fn finish(&self) -> Result<WriteStats> {
        for kind in [BlobKind::Data, BlobKind::Tree] {
            let last = lock(self.open_pack(kind)).take();
            if let Some(last) = last {
                self.write_pack(last)?;
            }
        }
        self.drain_writer()?;
        self.flush_index(true)?;
        Ok(self.stats())
    }

    /// Writes index files for the written packs: all of them when `all`,
    /// otherwise only full index files' worth.
    fn flush_index(&self, all: bool) -> Result<()> {
        loop {
            // Take packs for one index file, keeping it far below the
            // decoder's record limit (an entry encodes to 52 bytes).
            let group: Vec<(IndexPack, bool)> = {
                let mut written = lock(&self.written);
                let mut entries = 0;
                let n = written
                    .iter()
                    .take_while(|(p, _)| {
                        entries += p.entries.len();
                        entries <= MAX_INDEX_ENTRIES || entries == p.entries.len()
                    })
                    .count();
                let total: usize = written.iter().map(|(p, _)| p.entries.len()).sum();
                if !all && n == written.len() && total < MAX_INDEX_ENTRIES {
                    // Not a full file yet.
                    return Ok(());
                }
                written.drain(..n).collect()
            };
            if group.is_empty() {
                return Ok(());
            }
            let file = IndexFile {
                packs: group.iter().map(|(p, _)| p.clone()).collect(),
            };
            let (id, bytes) = match index::encode_file(&self.repo.crypto, &file) {
                Ok(encoded) => encoded,
                Err(e) => {
                    lock(&self.written).extend(group);
                    return Err(e);
                }
            };
            let name = id.to_hex();
            if let Err(e) = self.repo.backend.write(FileKind::Index, &name, &bytes) {
                // If the index file is there after all (the failure came
                // after the rename, say while syncing the directory), its
                // packs must stay; only packs surely unindexed go back for
                // `abandon`.
                if self.repo.backend.size(FileKind::Index, &name).is_err() {
                    lock(&self.written).extend(group);
                }
                return Err(e);
            }
            self.bytes_stored
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            {
                // Kept sorted, as a listing is, so that a later
                // `refresh_index` that finds just these sees no change.
                let mut names = lock(&self.repo.index_names);
                if let Err(at) = names.binary_search(&name) {
                    names.insert(at, name.clone());
                }
            }
            {
                let mut index = self
                    .repo
                    .index
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                for p in &file.packs {
                    index.add_pack(p)?;
                }
            }
            lock(&self.indexed).extend(file.packs.iter().map(|p| p.id));
            // Only now that the index has them may `seen` forget them.
            let mut seen = lock(&self.seen);
            for p in &file.packs {
                for e in &p.entries {
                    seen.remove(&e.id);
                }
            }
        }
    }

    /// Deletes the packs this session wrote that no index file names yet.
    /// Nothing can refer to their blobs, so this is always safe.
    pub fn abandon(&self) {
        let _ = self.drain_writer();
        for (p, _) in std::mem::take(&mut *lock(&self.written))
            .into_iter()
            .filter(|(_, created)| *created)
        {
            let _ = self.repo.backend.delete(FileKind::Pack, &p.id.to_hex());
        }
    }

    /// The packs this writer has put in index files. An unencrypted
    /// repository seals deterministically, so one may be a file that was
    /// already there (say a pack an interrupted prune wrote): whoever
    /// deletes packs must keep these.
    pub(crate) fn indexed_packs(&self) -> HashSet<PackId> {
        lock(&self.indexed).iter().copied().collect()
    }

    /// Counts so far.
    #[must_use]
    pub fn stats(&self) -> WriteStats {
        WriteStats {
            blobs_added: self.blobs_added.load(Ordering::Relaxed),
            bytes_added: self.bytes_added.load(Ordering::Relaxed),
            bytes_stored: self.bytes_stored.load(Ordering::Relaxed),
        }
    }
}
