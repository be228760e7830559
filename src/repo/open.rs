//! Creating and opening a repository, and its keys: the config, the key
//! files and the passwords that open them (store-format.md §6, §7, §15).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::chunker::ChunkerParams;
use crate::format::config::{self, Config, ConfigError, Encryption, FORMAT_VERSION};
use crate::format::crypto::{Crypto, MasterKey};
use crate::format::index::Index;
use crate::format::keyfile::KeyFile;
use crate::id::KeyId;
use crate::repo::Repository;
use crate::repo::audit::Event;
use crate::storage::cache::CachedBackend;
use crate::storage::{Backend, CONFIG_NAME, FileKind};

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

/// How a repository handle behaves, given when it is opened
/// ([`Repository::open_with`], [`Repository::init_with`]) and fixed for its
/// life: nothing changes these on an open handle.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct OpenOptions {
    /// Where the local cache of a remote repository lives (shared by all
    /// repositories, one subdirectory each); `None` for no cache. Not used
    /// for a repository on a file system, nor by `init_with`, which writes
    /// a new repository directly.
    pub cache_root: Option<PathBuf>,
    /// How long [`Repository::lock`] waits for conflicting holders
    /// (default: not at all).
    pub lock_wait: Duration,
    /// Read without taking locks (restore and verify of a repository on
    /// read-only media); operations that change the repository refuse.
    pub no_lock: bool,
    /// Who the audit log names for this handle's operations
    /// (`daemon:PROFILE`); `None` for `user@host`.
    pub actor: Option<String>,
}

impl OpenOptions {
    /// The defaults: no cache, no waiting for locks, locking, `user@host`.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps a local cache of a remote repository under `root`.
    #[must_use]
    pub fn cache_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.cache_root = Some(root.into());
        self
    }

    /// Waits up to `wait` for conflicting lock holders.
    #[must_use]
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    /// Reads without taking locks, for restore and verify of a repository
    /// on read-only media.
    #[must_use]
    pub fn no_lock(mut self, no_lock: bool) -> Self {
        self.no_lock = no_lock;
        self
    }

    /// Names `actor` (`daemon:PROFILE`) in the audit events of the
    /// handle's operations instead of `user@host`.
    #[must_use]
    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
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

/// Creates a password file at `path` holding a new random password (32
/// random bytes, hex, newline), mode 0600 in a 0700 directory, written
/// durably: the default repository's key, its only copy. Refuses a path
/// that exists. Returns the password.
///
/// # Errors
/// [`Error::Io`] when the directory or the file cannot be created or
/// written (an existing file included); a failing system random source.
pub fn create_key_file(path: &Path) -> Result<Vec<u8>> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io("cannot create", dir, e))?;
    }
    let mut raw = [0u8; 32];
    crate::format::crypto::random(&mut raw)?;
    let key = hex::encode(raw);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io("cannot create the key file", path, e))?;
    f.write_all(key.as_bytes())
        .and_then(|()| f.write_all(b"\n"))
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("cannot write the key file", path, e))?;
    // The only copy of the secret: make its directory entry durable too.
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("cannot sync", dir, e))?;
    }
    Ok(key.into_bytes())
}

pub(crate) fn host_and_user() -> (String, String) {
    (hostname(), username())
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

impl Repository {
    /// True when this repository and `other` give the same content the
    /// same blob id (one was created related to the other, or both to a
    /// third), so that `copy` between them moves blobs without re-chunking.
    /// Compares the id of a fixed probe, so no key leaves its repository.
    #[must_use]
    pub fn shares_blob_ids(&self, other: &Repository) -> bool {
        const PROBE: &[u8] = b"cairn copy probe";
        self.crypto().blob_id(PROBE) == other.crypto().blob_id(PROBE)
    }

    /// Creates a repository; `password` is required unless encryption is off.
    ///
    /// # Errors
    /// Fails when a repository exists there or the backend refuses writes.
    pub fn init(
        backend: Arc<dyn Backend>,
        password: Option<&[u8]>,
        opts: &InitOptions,
    ) -> Result<Self> {
        Self::init_with(backend, password, opts, &OpenOptions::default())
    }

    /// [`Repository::init`], returning a handle with the lock and audit
    /// options of `open` (its `cache_root` is not used: a new repository is
    /// written directly, without the local cache).
    ///
    /// # Errors
    /// As [`Repository::init`].
    pub fn init_with(
        backend: Arc<dyn Backend>,
        password: Option<&[u8]>,
        opts: &InitOptions,
        open: &OpenOptions,
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
        let repo = Self::assemble(backend, None, config, (key_id, master, crypto), open);
        // A new repository has no index file: its empty index is loaded.
        repo.index_loaded.store(true, Ordering::Release);
        Ok(repo)
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
        Self::open_with(backend, &OpenOptions::default(), password)
    }

    /// Opens a repository with `opts`: with a local cache under
    /// `opts.cache_root` when the backend is remote, and the lock and audit
    /// options the handle keeps for its life.
    ///
    /// # Errors
    /// As [`Repository::open`].
    pub fn open_with(
        backend: Arc<dyn Backend>,
        opts: &OpenOptions,
        password: &mut dyn FnMut() -> Result<Vec<u8>>,
    ) -> Result<Self> {
        let location = backend.location();
        let cache_root = opts.cache_root.as_deref().filter(|_| backend.is_remote());
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
                    opts,
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
        let opened = Self::find_key(backend.as_ref(), &location, &raw, &pw)?;
        if let (Some(root), Some(_)) = (cache_root, &cache) {
            crate::storage::cache::Identity::save(root, &location, &opened.0.to_hex(), &raw_bytes);
        }
        // The index is loaded on first need, not here: listing snapshots
        // needs none, and a backup loads it once its lock is held (on
        // object storage every listing is a request).
        Ok(Self::assemble(backend, cache, raw.config, opened, opts))
    }

    /// The key among `backend`'s key files that `pw` opens and whose
    /// master key authenticates the config `raw`.
    ///
    /// # Errors
    /// [`Error::WrongPassword`] when none opens; [`Error::Corrupt`] when a
    /// key opens but does not authenticate the config, when there is no
    /// key file, or when damaged key files may hold the one asked for.
    fn find_key(
        backend: &dyn Backend,
        location: &str,
        raw: &config::RawConfig,
        pw: &[u8],
    ) -> Result<(KeyId, MasterKey, Crypto)> {
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
            match Self::try_key(name, &bytes, raw, pw) {
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
                location: location.to_owned(),
                keys: keys.len(),
            });
        };
        Ok(opened)
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

    /// A handle on an opened (or just created) repository, its index not
    /// loaded yet.
    fn assemble(
        backend: Arc<dyn Backend>,
        cache: Option<Arc<CachedBackend>>,
        config: Config,
        (key_id, master, crypto): (KeyId, MasterKey, Crypto),
        opts: &OpenOptions,
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
            lock_wait: opts.lock_wait,
            no_lock: opts.no_lock,
            unindexed: Mutex::new(None),
            used_unindexed: AtomicBool::new(false),
            actor: Mutex::new(opts.actor.clone()),
            audit_errors: Mutex::new(Vec::new()),
            snapshot_listing: Mutex::new(None),
        }
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
        Event::new(self, "key-add", id.to_string())
            .run(|_| self.backend.write(FileKind::Key, &id.to_hex(), &bytes))?;
        Ok(id)
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
        Event::new(self, "key-remove", id.to_string())
            .run(|_| self.backend.delete(FileKind::Key, &id.to_hex()))
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
}
