//! Backup: walks source paths, stores new chunks and trees, and writes the
//! snapshot last.
//!
//! Directories are processed in parallel (rayon work stealing over entries,
//! nested through subdirectories). A file larger than one chunk is read and
//! cut in batches on one thread while the chunks of the previous batch are
//! stored in parallel, with a bound on the batch memory of all files.
//!
//! A directory whose entries all stat as the files cache recorded is taken
//! whole (see `filescache`); otherwise a file whose size, mtime, ctime and
//! inode equal its previous record (the cached tree's, else the parent
//! snapshot's) is not read again. A failure while
//! reading the sources or writing packs deletes the packs the run wrote,
//! which no index names yet, so the repository is left as it was. (Should
//! writing the snapshot itself fail, its packs and index stay behind as
//! unreferenced data, which verify accepts and prune will remove.)
//!
//! Files that the caller's special-file hook claims (a live SQLite
//! database, for the hook of the application layer) are stored as the
//! image the hook captures rather than their raw bytes, without their
//! companion files (see [`special`]). The walker itself names no
//! application: without a hook every file is stored as its bytes.

pub mod filescache;
pub mod special;
pub mod stream;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};

use nix::fcntl::OFlag;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::chunker::Batch;
use crate::format::pack::BlobKind;
use crate::format::snapshot::{AppInfo, DatabaseInfo, Snapshot, Summary};
use crate::format::tree::{Node, NodeKind, Tree, Xattr};
use crate::id::{BlobId, SnapshotId};
use crate::ops::backup::filescache::{Cached, FilesCache, StateHasher, dir_key};
use crate::ops::backup::special::{Capture, CaptureFailure, Claim, SpecialFiles};
use crate::ops::backup::stream::{CommandSource, ReaderSource, Source};
use crate::repo::audit::{Audited, Event};
use crate::repo::{BlobWriter, Repository, host_and_user};
use crate::sync::lock;

thread_local! {
    /// Whole-file read buffer for small files, one per worker thread.
    static SMALL_FILE_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A file larger than the chunker's `max_size` is read in batches of about
/// this many bytes (cut into chunks on the reading thread, with the
/// streaming chunker's cut points); the chunks of one batch are hashed,
/// compressed, sealed and packed in parallel while the next batch is read.
const BATCH_BYTES: usize = 2 << 20;

/// Batch memory that large files waiting on their chunks' workers may hold
/// together: room for two files' batch pairs at the default chunker
/// parameters. See [`BatchBudget`].
const BATCH_BUDGET: usize = 2 * (2 * BATCH_BYTES + (1 << 20));

/// Bounds the memory of large files' batches whatever the number of files.
///
/// A thread waiting for a batch's chunks to be stored helps with other
/// work, which may be another large file; so every batch held across such
/// a wait is reserved here first. Without a reservation a batch is stored
/// on the reading thread alone, which never waits, so besides the budget
/// each thread holds at most one batch.
struct BatchBudget {
    left: AtomicUsize,
}

impl BatchBudget {
    fn new() -> Self {
        Self {
            left: AtomicUsize::new(BATCH_BUDGET),
        }
    }

    /// Reserves `n` bytes if that many are left, or the whole budget if
    /// none of it is taken (so that chunker parameters with batches larger
    /// than the budget still pipeline one file at a time).
    fn reserve(&self, n: usize) -> Option<Reservation<'_>> {
        self.left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                if n <= left {
                    Some(left - n)
                } else if left == BATCH_BUDGET {
                    Some(0)
                } else {
                    None
                }
            })
            .ok()
            .map(|before| Reservation {
                budget: self,
                n: n.min(before),
            })
    }
}

/// Bytes taken from a [`BatchBudget`], given back when dropped.
struct Reservation<'a> {
    budget: &'a BatchBudget,
    n: usize,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.budget.left.fetch_add(self.n, Ordering::AcqRel);
    }
}

/// What to back up and how.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct BackupOptions {
    /// Source paths (files or directories).
    pub paths: Vec<PathBuf>,
    /// Tags for the snapshot.
    pub tags: Vec<String>,
    /// gitignore-style patterns to leave out.
    pub excludes: Vec<String>,
    /// Files with one pattern per line.
    pub exclude_files: Vec<PathBuf>,
    /// Do not descend into other file systems (mount points are kept as
    /// empty directories).
    pub one_file_system: bool,
    /// Use this snapshot for change detection instead of the latest one
    /// with the same host and paths.
    pub parent: Option<SnapshotId>,
    /// Read every file even when the parent says it is unchanged.
    pub force: bool,
    /// Record this as the snapshot's time instead of the end of the backup
    /// (imports of old backups, tests). It may not lie in the future: the
    /// next backup's change detection trusts files older than it.
    pub time: Option<jiff::Timestamp>,
    /// Where files caches live (each repository gets a subdirectory);
    /// `None` runs without one. See the `filescache` module.
    pub cache_dir: Option<PathBuf>,
    /// The hook that recognises and captures files that are more than
    /// their bytes (see [`SpecialFiles`]). `None` leaves the choice to
    /// the door: the library's `cairn::backup` installs the SQLite capture
    /// (`SqliteFiles`, which captures every file with a SQLite header);
    /// the engine itself (`ops::backup::backup`) then stores every file as
    /// its bytes.
    pub special: Option<Arc<dyn SpecialFiles>>,
    /// Files the hook is to treat as special whatever their content looks
    /// like when the backup reaches them (databases named by the user or a
    /// profile).
    pub special_paths: Vec<PathBuf>,
    /// The application record to store as the snapshot's `app`, verbatim;
    /// a snapshot with one is audited as a `snap` of that application.
    pub app: Option<AppInfo>,
    /// The directory [`backup_command`] runs its command in (default: the
    /// current directory).
    pub command_dir: Option<PathBuf>,
    /// The host name to record instead of this machine's (a host whose
    /// name changes, containers that stand for one service); the parent is
    /// then looked for among that host's snapshots.
    pub host: Option<String>,
}

impl BackupOptions {
    /// Options for backing up `paths`.
    #[must_use]
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Self {
            paths,
            ..Self::default()
        }
    }
}

/// Receives progress while a backup runs. Methods are called from worker
/// threads.
pub trait Progress: Sync {
    /// `n` more bytes of source data were read or skipped as unchanged.
    fn bytes(&self, _n: u64) {}
    /// One more file was handled.
    fn file(&self) {}
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// The result of a backup.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    /// The new snapshot's id.
    pub id: SnapshotId,
    /// The snapshot as stored.
    pub snapshot: Snapshot,
    /// Things skipped that the user should know about (files that vanished
    /// while the backup ran, sockets).
    pub warnings: Vec<String>,
    /// Directories taken whole from the files cache, without looking at
    /// their files' previous records.
    pub dirs_reused: u64,
}

#[derive(Default)]
struct Counters {
    files_new: AtomicU64,
    files_changed: AtomicU64,
    files_unchanged: AtomicU64,
    dirs: AtomicU64,
    others: AtomicU64,
    bytes_read: AtomicU64,
    total_size: AtomicU64,
    dirs_reused: AtomicU64,
}

/// The tree a directory had before, for per-file change detection, with
/// the time (seconds) below which its records can be trusted.
///
/// It is fetched the first time a file of the directory needs it, so a
/// directory the files cache vouches for costs no tree read. It is the
/// directory's tree in the files cache when there is one (the last backup
/// of this path on this machine), else the parent snapshot's, found through
/// the parent directory's previous tree.
struct PrevTree<'p> {
    cached: Option<Cached>,
    up: Option<(&'p PrevTree<'p>, &'p [u8])>,
    cell: OnceLock<Option<(Tree, i64)>>,
}

impl<'p> PrevTree<'p> {
    /// A tree known from the start (the parent snapshot's root), or none.
    fn known(tree: Option<(Tree, i64)>) -> Self {
        Self {
            cached: None,
            up: None,
            cell: OnceLock::from(tree),
        }
    }

    /// The previous tree of the entry `name` of the directory `up`.
    fn below(up: &'p PrevTree<'p>, name: &'p [u8]) -> Self {
        Self {
            cached: None,
            up: Some((up, name)),
            cell: OnceLock::new(),
        }
    }

    fn get(&self, repo: &Repository) -> Option<&(Tree, i64)> {
        self.cell
            .get_or_init(|| {
                if let Some(c) = &self.cached
                    && let Ok(tree) = repo.read_tree(&c.tree)
                {
                    return Some((tree, c.trusted_before));
                }
                let (up, name) = self.up?;
                let (tree, trusted_before) = up.get(repo)?;
                match &tree.find(name)?.kind {
                    NodeKind::Dir { subtree } => {
                        repo.read_tree(subtree).ok().map(|t| (t, *trusted_before))
                    }
                    _ => None,
                }
            })
            .as_ref()
    }

    /// The previous record of the entry `name`, with its trust time.
    fn node(&self, repo: &Repository, name: &[u8]) -> Option<(&Node, i64)> {
        let (tree, trusted_before) = self.get(repo)?;
        tree.find(name).map(|n| (n, *trusted_before))
    }
}

/// A directory entry's subtree, once subdirectories are stored.
enum Sub {
    /// Not a directory.
    NotDir,
    /// A directory that vanished before it could be read: left out.
    Gone,
    /// A directory stored as this tree.
    Tree(BlobId),
}

/// The files cache's digest of a directory's state: each entry's stat,
/// in name order, with its subtree for a subdirectory; a subdirectory that
/// vanished is left out, as it is from the tree.
fn dir_state(entries: &[(OsString, Metadata)], subs: &[Sub]) -> [u8; 32] {
    let mut h = StateHasher::new();
    for ((name, meta), sub) in entries.iter().zip(subs) {
        match sub {
            Sub::NotDir => h.entry(name.as_bytes(), meta, None),
            Sub::Tree(id) => h.entry(name.as_bytes(), meta, Some(id)),
            Sub::Gone => {}
        }
    }
    h.finish()
}

struct Walker<'a> {
    repo: &'a Repository,
    writer: BlobWriter<'a>,
    excludes: Gitignore,
    one_file_system: bool,
    force: bool,
    /// The files cache, unless disabled.
    cache: Option<FilesCache>,
    counters: Counters,
    warnings: Mutex<Vec<String>>,
    progress: &'a dyn Progress,
    budget: BatchBudget,
    /// `BackupOptions::special`.
    special: Option<Arc<dyn SpecialFiles>>,
    /// `BackupOptions::special_paths`, absolute.
    special_paths: HashSet<PathBuf>,
    /// Special files that could not be captured and were stored as raw
    /// bytes: their companion files are stored too.
    raw_special: Mutex<HashSet<PathBuf>>,
    /// The records of the files captured (databases with their row
    /// counts).
    records: Mutex<Vec<DatabaseInfo>>,
}

/// A directory on the way to a backup path: its real path and children.
#[derive(Default)]
struct Virtual {
    children: BTreeMap<Vec<u8>, (PathBuf, Option<Virtual>)>,
}

impl Virtual {
    /// Inserts `path`; `None` children mark a backed-up path (whole subtree).
    fn insert(&mut self, path: &Path) {
        let mut node = self;
        let mut real = PathBuf::from("/");
        let comps: Vec<_> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_owned()),
                _ => None,
            })
            .collect();
        let last = comps.len().saturating_sub(1);
        for (i, name) in comps.into_iter().enumerate() {
            real.push(&name);
            let key = name.as_bytes().to_vec();
            let entry = node
                .children
                .entry(key)
                .or_insert_with(|| (real.clone(), Some(Virtual::default())));
            if i == last {
                entry.1 = None;
                return;
            }
            match &mut entry.1 {
                Some(v) => node = v,
                // An ancestor is itself backed up whole.
                None => return,
            }
        }
    }
}

fn lstat(path: &Path) -> Result<Metadata> {
    fs::symlink_metadata(path).map_err(|e| Error::source_read(path, e))
}

/// Opens a file for reading without following a symlink and without
/// blocking on a FIFO, as the walker opens what it reads.
///
/// # Errors
/// As `open(2)`.
pub(crate) fn open_nofollow(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).bits())
        .open(path)
}

fn read_xattrs(path: &Path) -> Vec<Xattr> {
    let Ok(names) = xattr::list(path) else {
        return Vec::new();
    };
    let mut out: Vec<Xattr> = names
        .filter_map(|name| {
            let value = xattr::get(path, &name).ok().flatten()?;
            Some(Xattr {
                name: name.as_bytes().to_vec(),
                value,
            })
        })
        .collect();
    out.sort();
    out
}

fn base_node(name: Vec<u8>, kind: NodeKind, meta: &Metadata, path: &Path) -> Node {
    node_with_xattrs(name, kind, meta, read_xattrs(path))
}

fn node_with_xattrs(name: Vec<u8>, kind: NodeKind, meta: &Metadata, xattrs: Vec<Xattr>) -> Node {
    Node {
        name,
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        size: 0,
        mtime: meta.mtime(),
        mtime_nsec: u32::try_from(meta.mtime_nsec()).unwrap_or(0),
        ctime: meta.ctime(),
        ctime_nsec: u32::try_from(meta.ctime_nsec()).unwrap_or(0),
        inode: meta.ino(),
        device: meta.dev(),
        links: meta.nlink(),
        xattrs,
    }
}

/// `path` as backups record it: absolute, with `.` and `..` resolved as
/// written (symlinks in it stay what they are).
///
/// # Errors
/// When the current directory cannot be read for a relative path.
pub fn absolute(path: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(path).map_err(|e| Error::source_read(path, e))?;
    // Resolve `.` and `..` lexically, as the user typed them; symlinks in
    // the path stay what they are.
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    Ok(out)
}

impl Walker<'_> {
    fn warn(&self, msg: String) {
        lock(&self.warnings).push(msg);
    }

    fn is_excluded(&self, path: &Path, is_dir: bool) -> bool {
        self.excludes.matched(path, is_dir).is_ignore()
    }

    fn save_tree(&self, mut tree: Tree, path: &Path) -> Result<BlobId> {
        tree.sort();
        let bytes = tree.encode();
        if bytes.len() > crate::format::codec::MAX_RECORD {
            return Err(Error::invalid(format!(
                "{} has too many entries to store as one directory ({} bytes of metadata, the limit is {})",
                path.display(),
                bytes.len(),
                crate::format::codec::MAX_RECORD
            )));
        }
        Ok(self.writer.save(BlobKind::Tree, &bytes)?.0)
    }

    /// Stores a directory's contents; `None` when it vanished first.
    ///
    /// Every entry is examined (one `lstat`) and every subdirectory stored
    /// first: with their trees, the stats decide whether the files cache's
    /// tree for this directory still holds. Only when it does not are files
    /// compared with their previous records, read where they changed, and
    /// a new tree built.
    fn save_dir(
        &self,
        path: &Path,
        mut prev: PrevTree<'_>,
        root_dev: u64,
    ) -> Result<Option<BlobId>> {
        let Some(names) = self.read_names(path)? else {
            return Ok(None);
        };
        let entries = self.stat_entries(path, names)?;
        let key = self.cache.as_ref().map(|_| dir_key(path));
        prev.cached = match (&self.cache, &key) {
            (Some(cache), Some(key)) if !self.force => cache.lookup(key),
            _ => None,
        };
        let prev = prev;
        let subs = self.save_subdirs(path, &entries, &prev, root_dev)?;
        let state = key.map(|_| dir_state(&entries, &subs));
        if let (Some(cached), Some(state)) = (&prev.cached, &state)
            && self.cache_holds(cached, state, &entries)
        {
            self.reuse_dir(&entries);
            if let (Some(cache), Some(key)) = (&self.cache, key) {
                cache.record(key, *state, cached.tree);
            }
            return Ok(Some(cached.tree));
        }
        let tree = self.save_entries(path, entries, subs, &prev, root_dev)?;
        if let (Some(cache), Some(key), Some(state)) = (&self.cache, key, state) {
            cache.record(key, state, tree);
        }
        Ok(Some(tree))
    }

    /// The names in the directory `path`, sorted, without this backup's
    /// own scratch files; `None` (with a warning) when it vanished.
    fn read_names(&self, path: &Path) -> Result<Option<Vec<OsString>>> {
        let mut names: Vec<_> = match fs::read_dir(path) {
            Ok(rd) => rd
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()
                .map_err(|e| Error::source_read(path, e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.warn(format!("{} vanished during the backup", path.display()));
                return Ok(None);
            }
            Err(e) => return Err(Error::source_read(path, e)),
        };
        names.sort();
        // The images of files being captured are staged in the temporary
        // directory: when that is inside the backup, they are this
        // backup's own scratch files, not data.
        if let Some(prefix) = self.special.as_deref().and_then(|s| s.scratch_prefix())
            && path == std::env::temp_dir()
        {
            names.retain(|n| !n.as_bytes().starts_with(prefix));
        }
        Ok(Some(names))
    }

    /// The entries `names` of the directory `path` with their `lstat`, in
    /// the same (name) order, run in parallel; those excluded and those
    /// that vanished meanwhile are left out.
    fn stat_entries(&self, path: &Path, names: Vec<OsString>) -> Result<Vec<(OsString, Metadata)>> {
        Ok(names
            .into_par_iter()
            .map(|name| {
                let child = path.join(&name);
                let meta = match fs::symlink_metadata(&child) {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        // A rollback journal lives for one transaction; a
                        // captured database's companions are not stored
                        // anyway, so one that comes and goes is no news.
                        let quiet = self
                            .special
                            .as_deref()
                            .is_some_and(|s| s.vanishes_quietly(name.as_bytes()));
                        if !quiet {
                            self.warn(format!("{} vanished during the backup", child.display()));
                        }
                        return Ok(None);
                    }
                    Err(e) => return Err(Error::source_read(&child, e)),
                };
                Ok((!self.is_excluded(&child, meta.is_dir())).then_some((name, meta)))
            })
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect())
    }

    /// Stores the subdirectories among `entries` of the directory `path`
    /// (whose previous tree is `prev`), in parallel: one [`Sub`] per entry,
    /// in the entries' order.
    fn save_subdirs(
        &self,
        path: &Path,
        entries: &[(OsString, Metadata)],
        prev: &PrevTree<'_>,
        root_dev: u64,
    ) -> Result<Vec<Sub>> {
        entries
            .par_iter()
            .map(|(name, meta)| {
                if !meta.is_dir() {
                    return Ok(Sub::NotDir);
                }
                let sub =
                    self.save_subdir(&path.join(name), name.as_bytes(), meta, prev, root_dev)?;
                Ok(sub.map_or(Sub::Gone, Sub::Tree))
            })
            .collect()
    }

    /// Whether the files cache's record `cached` of a directory still
    /// holds for its entries now, whose digest is `state`: the digest is
    /// the same, no entry's mtime or ctime reaches the second the record
    /// trusts up to (a change within that second need not show in the
    /// stats), and the tree is still in the repository.
    fn cache_holds(
        &self,
        cached: &Cached,
        state: &[u8; 32],
        entries: &[(OsString, Metadata)],
    ) -> bool {
        let t = cached.trusted_before;
        cached.state == *state
            && entries.iter().all(|(_, m)| m.mtime() < t && m.ctime() < t)
            && self.repo.index().contains(&cached.tree)
    }

    /// Builds and stores the tree of the directory `path` from its
    /// `entries` and their `subs` (stored already): the other entries are
    /// compared with their records in `prev` and read where they changed,
    /// in parallel, in name order.
    ///
    /// The companions (-wal, -shm, -journal) of the databases here are
    /// left out, unless their database ends up stored as raw bytes (known
    /// only once it was saved, so they are saved after the others and
    /// added at the end, where the tree's sort puts them in place). They
    /// stay in `entries` as given, whose stats the files cache state
    /// covers.
    fn save_entries(
        &self,
        path: &Path,
        entries: Vec<(OsString, Metadata)>,
        subs: Vec<Sub>,
        prev: &PrevTree<'_>,
        root_dev: u64,
    ) -> Result<BlobId> {
        let dbs = self.databases(path, &entries);
        let (companions, entries): (Vec<_>, Vec<_>) =
            entries.into_iter().zip(subs).partition(|((name, _), sub)| {
                matches!(sub, Sub::NotDir)
                    && !dbs.is_empty()
                    && self
                        .companion_of(name.as_bytes())
                        .is_some_and(|b| dbs.contains_key(b))
            });
        let save = |((name, meta), sub): ((OsString, Metadata), Sub)| {
            let child = path.join(&name);
            let name = name.into_vec();
            match sub {
                Sub::Gone => Ok(None),
                Sub::Tree(subtree) => Ok(Some(base_node(
                    name,
                    NodeKind::Dir { subtree },
                    &meta,
                    &child,
                ))),
                Sub::NotDir => {
                    let wal = dbs.get(name.as_slice()).and_then(Option::as_ref);
                    self.save_entry(&child, name, &meta, prev, root_dev, wal)
                }
            }
        };
        let mut nodes: Vec<Option<Node>> =
            entries.into_par_iter().map(save).collect::<Result<_>>()?;
        for entry in companions {
            let base = self.companion_of(entry.0.0.as_bytes()).unwrap_or_default();
            let db = path.join(std::ffi::OsStr::from_bytes(base));
            if lock(&self.raw_special).contains(&db) {
                nodes.push(save(entry)?);
            }
        }
        self.save_tree(
            Tree {
                nodes: nodes.into_iter().flatten().collect(),
            },
            path,
        )
    }

    /// The special file a directory entry named `name` is a companion of
    /// (`app.db` for `app.db-wal`), as the hook says.
    fn companion_of<'n>(&self, name: &'n [u8]) -> Option<&'n [u8]> {
        self.special.as_deref()?.companion_of(name)
    }

    /// The special files (databases) among a directory's `entries` that
    /// have companion files beside them (the others need no special care),
    /// each with the stat of its change log (`-wal` file) if there is one.
    fn databases(
        &self,
        dir: &Path,
        entries: &[(OsString, Metadata)],
    ) -> HashMap<Vec<u8>, Option<Metadata>> {
        let mut dbs = HashMap::new();
        let Some(special) = self.special.as_deref() else {
            return dbs;
        };
        let find = |name: &[u8]| {
            entries
                .binary_search_by(|(n, _)| n.as_bytes().cmp(name))
                .ok()
                .and_then(|i| entries.get(i))
        };
        for (name, _) in entries {
            let Some(base) = special.companion_of(name.as_bytes()) else {
                continue;
            };
            let Some((base, meta)) = find(base) else {
                continue;
            };
            let base = base.as_bytes();
            if !meta.is_file() || dbs.contains_key(base) {
                continue;
            }
            let db = dir.join(std::ffi::OsStr::from_bytes(base));
            if self.claim(&db, None).is_some() {
                let wal = special
                    .change_log_suffix()
                    .and_then(|suffix| find(&[base, suffix].concat()))
                    .map(|(_, m)| m.clone());
                dbs.insert(base.to_vec(), wal);
            }
        }
        dbs
    }

    /// Whether the hook claims the regular file `path` as special (to be
    /// captured); `file` is the file opened for reading, if it is.
    fn claim(&self, path: &Path, file: Option<&fs::File>) -> Option<Claim> {
        let special = self.special.as_deref()?;
        special.classify(path, file, self.special_paths.contains(path))
    }

    /// The stat of the change log (`-wal` file) of the special file `path`
    /// (a backup path itself, not found through its directory), if both
    /// exist.
    fn wal_beside(&self, path: &Path) -> Option<Metadata> {
        let special = self.special.as_deref()?;
        if special.holds_prepared(path) {
            // Not to be opened (see `save_file`).
            return None;
        }
        let mut wal = path.as_os_str().to_owned();
        wal.push(std::ffi::OsStr::from_bytes(special.change_log_suffix()?));
        let meta = fs::symlink_metadata(wal).ok()?;
        (meta.is_file() && self.claim(path, None).is_some()).then_some(meta)
    }

    /// Counts the entries of a directory taken whole from the files cache
    /// as the walk would have, had it looked at each of them.
    fn reuse_dir(&self, entries: &[(OsString, Metadata)]) {
        let c = &self.counters;
        c.dirs_reused.fetch_add(1, Ordering::Relaxed);
        for (_, meta) in entries {
            if meta.is_file() {
                self.progress.file();
                self.progress.bytes(meta.len());
                c.files_unchanged.fetch_add(1, Ordering::Relaxed);
                c.total_size.fetch_add(meta.len(), Ordering::Relaxed);
            } else if !meta.is_dir() {
                c.others.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Stores the subdirectory `path` (entry `name` of a directory whose
    /// previous tree is `parent`); `None` when it vanished.
    fn save_subdir(
        &self,
        path: &Path,
        name: &[u8],
        meta: &Metadata,
        parent: &PrevTree<'_>,
        root_dev: u64,
    ) -> Result<Option<BlobId>> {
        self.counters.dirs.fetch_add(1, Ordering::Relaxed);
        if self.one_file_system && meta.dev() != root_dev {
            // A mount point: keep the directory, not what is mounted.
            return self.save_tree(Tree::default(), path).map(Some);
        }
        self.save_dir(path, PrevTree::below(parent, name), root_dev)
    }

    /// Stores one entry of the directory whose previous tree is `dir_prev`.
    fn save_entry(
        &self,
        path: &Path,
        name: Vec<u8>,
        meta: &Metadata,
        dir_prev: &PrevTree<'_>,
        root_dev: u64,
        wal: Option<&Metadata>,
    ) -> Result<Option<Node>> {
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            match self.save_subdir(path, &name, meta, dir_prev, root_dev)? {
                Some(subtree) => NodeKind::Dir { subtree },
                None => return Ok(None),
            }
        } else if ft.is_file() {
            let prev = if self.force {
                None
            } else {
                dir_prev.node(self.repo, &name)
            };
            return self.save_file(path, name, meta, prev, wal);
        } else if ft.is_symlink() {
            self.counters.others.fetch_add(1, Ordering::Relaxed);
            let target = fs::read_link(path).map_err(|e| Error::source_read(path, e))?;
            NodeKind::Symlink {
                target: target.as_os_str().as_bytes().to_vec(),
            }
        } else if ft.is_fifo() {
            self.counters.others.fetch_add(1, Ordering::Relaxed);
            NodeKind::Fifo
        } else if ft.is_char_device() {
            self.counters.others.fetch_add(1, Ordering::Relaxed);
            NodeKind::CharDevice { rdev: meta.rdev() }
        } else if ft.is_block_device() {
            self.counters.others.fetch_add(1, Ordering::Relaxed);
            NodeKind::BlockDevice { rdev: meta.rdev() }
        } else {
            self.counters.others.fetch_add(1, Ordering::Relaxed);
            NodeKind::Socket
        };
        Ok(Some(base_node(name, kind, meta, path)))
    }

    /// The previous content of a file that stats as recorded in `prev`.
    /// For a database with a `-wal` file (`wal`), the WAL too must have been
    /// last modified before the previous backup started: a commit in WAL
    /// mode leaves the main file untouched.
    fn unchanged(
        &self,
        meta: &Metadata,
        prev: Option<(&Node, i64)>,
        wal: Option<&Metadata>,
    ) -> Option<NodeKind> {
        let (prev, trusted_before) = prev?;
        if !prev.kind.is_file() {
            return None;
        }
        let same = !self.force
            && prev.size == meta.len()
            && prev.mtime == meta.mtime()
            && i64::from(prev.mtime_nsec) == meta.mtime_nsec()
            && prev.ctime == meta.ctime()
            && i64::from(prev.ctime_nsec) == meta.ctime_nsec()
            && prev.inode == meta.ino()
            // "Racily clean": a file changed while the parent backup ran may
            // have changed again within one timestamp tick after it was
            // examined, leaving size and times as recorded; such files are
            // read once more.
            && prev.mtime < trusted_before
            && prev.ctime < trusted_before
            // Only the WAL's mtime: SQLite running as root chowns the -wal
            // to the database's owner each time it opens it, the capture
            // included, which moves the ctime although nothing changed;
            // every commit moves the mtime.
            && wal.is_none_or(|w| w.mtime() < trusted_before);
        let index = self.repo.index();
        let present = match &prev.kind {
            NodeKind::File { content } => content.iter().all(|id| index.contains(id)),
            NodeKind::ListedFile { list, .. } => index.contains(list),
            _ => false,
        };
        (same && present).then(|| prev.kind.clone())
    }

    /// How a file's chunks are listed in its node: inline, or for a long
    /// list as a tree of list blobs (see `chunklist`).
    fn file_kind(&self, content: Vec<BlobId>) -> Result<NodeKind> {
        if content.len() <= crate::repo::chunklist::INLINE_MAX {
            return Ok(NodeKind::File { content });
        }
        let (list, depth) = crate::repo::chunklist::store(&self.writer, &content)?;
        Ok(NodeKind::ListedFile { list, depth })
    }

    fn save_file(
        &self,
        path: &Path,
        name: Vec<u8>,
        meta: &Metadata,
        prev: Option<(&Node, i64)>,
        wal: Option<&Metadata>,
    ) -> Result<Option<Node>> {
        self.progress.file();
        // A database captured beforehand through the caller's own SQLite
        // connection (cairn watch's base), which stays open: the file is
        // not opened here at all, nor judged unchanged by its stat (its
        // changes may be in the -wal). Closing any descriptor of a file
        // drops every POSIX lock the process holds on it, SQLite's shared
        // lock included; without it, the application's last connection to
        // close deletes the -wal and -shm files from under the watcher's
        // connections.
        let captured = self.special.as_deref().and_then(|s| s.take_prepared(path));
        if captured.is_none()
            && let Some(content) = self.unchanged(meta, prev, wal)
        {
            self.counters
                .files_unchanged
                .fetch_add(1, Ordering::Relaxed);
            self.counters
                .total_size
                .fetch_add(meta.len(), Ordering::Relaxed);
            self.progress.bytes(meta.len());
            // Setting or removing an extended attribute changes the ctime,
            // which matched: the recorded ones still hold, so an unchanged
            // file costs its one stat and no listxattr.
            let xattrs = prev.map(|(p, _)| p.xattrs.clone()).unwrap_or_default();
            let mut node = node_with_xattrs(name, content, meta, xattrs);
            node.size = meta.len();
            return Ok(Some(node));
        }
        let mut content = Vec::new();
        let size = match captured {
            Some(image) => {
                self.counters.files_new.fetch_add(1, Ordering::Relaxed);
                self.save_capture(path, image, &mut content)?
            }
            None => match self.read_file(path, meta, prev.is_some(), &mut content)? {
                Some(size) => size,
                None => return Ok(None),
            },
        };
        self.counters.bytes_read.fetch_add(size, Ordering::Relaxed);
        self.counters.total_size.fetch_add(size, Ordering::Relaxed);
        // The size recorded is what was read, so a file that grew or shrank
        // while being read restores to exactly the bytes stored.
        let kind = self.file_kind(content)?;
        let mut node = base_node(name, kind, meta, path);
        node.size = size;
        Ok(Some(node))
    }

    /// Opens and stores the file `path` (a database through a consistent
    /// capture), appending its chunks' ids to `content`; returns the bytes
    /// read, or `None` when it vanished.
    fn read_file(
        &self,
        path: &Path,
        meta: &Metadata,
        changed: bool,
        content: &mut Vec<BlobId>,
    ) -> Result<Option<u64>> {
        // Opened without following a symlink and without blocking on a FIFO,
        // then checked to still be a regular file: the entry may have been
        // replaced since it was examined.
        let opened = open_nofollow(path).and_then(|f| {
            if f.metadata()?.is_file() {
                Ok(f)
            } else {
                Err(io::Error::other(
                    "it was replaced by something that is not a regular file",
                ))
            }
        });
        let file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.warn(format!("{} vanished during the backup", path.display()));
                return Ok(None);
            }
            Err(e) => return Err(Error::source_read(path, e)),
        };
        if changed {
            self.counters.files_changed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counters.files_new.fetch_add(1, Ordering::Relaxed);
        }
        let claimed = self.claim(path, Some(&file));
        let size = match (self.special.as_deref(), claimed) {
            (Some(special), Some(claim)) => match special.capture(path, &file, claim, meta.len()) {
                Ok(image) => self.save_capture(path, image, content)?,
                // Named as special but not what it was named as: storing
                // it as a capture would hide that.
                Err(CaptureFailure::Fatal(e)) => return Err(e),
                Err(CaptureFailure::Raw(warning)) => {
                    self.warn(warning);
                    lock(&self.raw_special).insert(path.to_path_buf());
                    self.save_content(file, meta.len(), path, None, content)?
                }
            },
            _ => self.save_content(file, meta.len(), path, None, content)?,
        };
        Ok(Some(size))
    }

    /// Stores the image the hook captured of `path`, recording it as
    /// captured.
    fn save_capture(&self, path: &Path, image: Capture, content: &mut Vec<BlobId>) -> Result<u64> {
        let Capture {
            file,
            len,
            pieces,
            record,
            keep,
        } = image;
        if let Some(record) = record {
            lock(&self.records).push(record);
        }
        let size = self.save_content(file, len, path, pieces, content);
        // The image's scratch file goes once it is stored.
        drop(keep);
        size
    }

    /// Stores the content of `file` (expected to be `len` bytes long),
    /// appending its chunks' ids to `content`; returns the bytes read.
    /// With `pages`, the content is cut into pieces of that many bytes
    /// instead of content-defined chunks (database images).
    fn save_content(
        &self,
        mut file: fs::File,
        len: u64,
        path: &Path,
        pages: Option<usize>,
        content: &mut Vec<BlobId>,
    ) -> Result<u64> {
        let mut size = 0u64;
        let chunker = &self.repo.config().chunker;
        let seed = self.repo.chunker_seed();
        if pages.is_none() && len <= u64::from(chunker.max_size) {
            // Most files are small: read them whole into a buffer reused by
            // this thread, instead of the streaming chunker's per-file
            // `max_size` allocation. A file that grew since the stat is
            // still read to its end.
            SMALL_FILE_BUF.with_borrow_mut(|buf| -> Result<()> {
                buf.clear();
                file.read_to_end(buf)
                    .map_err(|e| Error::source_read(path, e))?;
                for range in chunker.cut_points(buf, seed) {
                    let chunk = buf.get(range).unwrap_or_default();
                    size += chunk.len() as u64;
                    content.push(self.writer.save(BlobKind::Data, chunk)?.0);
                }
                self.progress.bytes(size);
                crate::repo::shrink_scratch(buf);
                Ok(())
            })?;
        } else {
            let read_error = |e| Error::source_read(path, e);
            size = self.save_large(file, &read_error, pages, content)?;
        }
        Ok(size)
    }

    /// Stores the chunks of a file read in batches, appending their ids to
    /// `content` in file order; returns the bytes read.
    ///
    /// While one batch's chunks are stored in parallel on the pool, this
    /// thread (or one that steals the job) reads and cuts the next batch, so
    /// that the sequential part, reading and chunking, overlaps the rest.
    /// Memory: two batch buffers and the chunker's carry-over per file, and
    /// only as many files at once as [`BatchBudget`] allows; a batch that
    /// gets no reservation is stored on this thread alone.
    /// The reader is any byte stream (a file, standard input, a command's
    /// output); `read_error` turns a failure to read it into the error
    /// that names it.
    fn save_large(
        &self,
        reader: impl Read + Send,
        read_error: &(dyn Fn(io::Error) -> Error + Sync),
        pages: Option<usize>,
        content: &mut Vec<BlobId>,
    ) -> Result<u64> {
        let chunker = &self.repo.config().chunker;
        let mut batches = match pages {
            Some(page) => chunker.page_batches(reader, page, BATCH_BYTES),
            None => chunker.batches(reader, self.repo.chunker_seed(), BATCH_BYTES),
        };
        let held = 2 * batches.buffer_size() + chunker.max_size as usize;
        let mut next = |buf: Vec<u8>| batches.next_batch(buf).map_err(read_error);
        let save = |batch: &Batch, cut: &Range<usize>| {
            let chunk = batch.data.get(cut.clone()).unwrap_or_default();
            self.writer.save(BlobKind::Data, chunk).map(|(id, _)| id)
        };
        let mut size = 0u64;
        let mut spare = Vec::new();
        let mut current = next(Vec::new())?;
        while let Some(batch) = current {
            let len = batch.data.len() as u64;
            if let Some(reservation) = self.budget.reserve(held) {
                let (ids, following) = rayon::join(
                    || {
                        batch
                            .cuts
                            .par_iter()
                            .map(|cut| save(&batch, cut))
                            .collect::<Result<Vec<_>>>()
                    },
                    || next(std::mem::take(&mut spare)),
                );
                drop(reservation);
                content.extend(ids?);
                current = following?;
                spare = batch.data;
            } else {
                // Stored on this thread alone, which then never waits and
                // so never takes up other work meanwhile; one buffer is
                // enough.
                spare = Vec::new();
                for cut in &batch.cuts {
                    content.push(save(&batch, cut)?);
                }
                current = next(batch.data)?;
            }
            size += len;
            self.progress.bytes(len);
        }
        Ok(size)
    }

    /// Stores the virtual directories leading to the backup paths.
    fn save_virtual(&self, v: &Virtual, prev: &PrevTree<'_>) -> Result<BlobId> {
        let nodes: Vec<Option<Node>> = v
            .children
            .par_iter()
            .map(|(name, (real, sub))| {
                let meta = lstat(real)?;
                match sub {
                    None => {
                        let wal = if meta.is_file() {
                            self.wal_beside(real)
                        } else {
                            None
                        };
                        self.save_entry(real, name.clone(), &meta, prev, meta.dev(), wal.as_ref())
                    }
                    Some(sub) => {
                        // A directory on the way to a backup path may be a
                        // symlink; record the directory it leads to, not the
                        // link's own 0777 mode.
                        let meta = fs::metadata(real).map_err(|e| Error::source_read(real, e))?;
                        let subtree = self.save_virtual(sub, &PrevTree::below(prev, name))?;
                        Ok(Some(base_node(
                            name.clone(),
                            NodeKind::Dir { subtree },
                            &meta,
                            real,
                        )))
                    }
                }
            })
            .collect::<Result<_>>()?;
        self.save_tree(
            Tree {
                nodes: nodes.into_iter().flatten().collect(),
            },
            Path::new("/"),
        )
    }
}

fn build_excludes(opts: &BackupOptions) -> Result<(Gitignore, Vec<String>)> {
    let mut patterns = opts.excludes.clone();
    for file in &opts.exclude_files {
        let text = fs::read_to_string(file).map_err(|e| Error::source_read(file, e))?;
        patterns.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    let mut builder = GitignoreBuilder::new("/");
    for p in &patterns {
        builder
            .add_line(None, p)
            .map_err(|e| Error::invalid(format!("exclude pattern '{p}': {e}")))?;
    }
    let gi = builder
        .build()
        .map_err(|e| Error::invalid(format!("exclude patterns: {e}")))?;
    Ok((gi, patterns))
}

/// The newest snapshot with the same host and paths, for change detection.
/// The parent among the snapshots in the local cache of a remote repository,
/// without listing them (a request): for when the files cache shows that no
/// pack was deleted since this host's last backup, so every tree of a
/// snapshot this host has seen is still there, even if the snapshot was
/// forgotten since. Only a reference for finding changes: every reused
/// file's blobs are still looked up in the index.
fn find_cached_parent(
    repo: &Repository,
    host: &str,
    paths: &[Vec<u8>],
) -> Option<(SnapshotId, Snapshot)> {
    let mut want = paths.to_vec();
    want.sort();
    repo.cache()?
        .cached_names(crate::storage::FileKind::Snapshot)
        .into_iter()
        .filter_map(|n| n.parse::<SnapshotId>().ok())
        .filter_map(|id| Some((id, repo.read_snapshot(&id).ok()?)))
        .filter(|(_, s)| {
            let mut have = s.paths.clone();
            have.sort();
            s.hostname == host && have == want
        })
        .max_by_key(|(id, s)| (s.time, s.time_nsec, *id))
}

fn find_parent(repo: &Repository, host: &str, paths: &[Vec<u8>]) -> Option<(SnapshotId, Snapshot)> {
    // Without index files no tree of any snapshot can be read, so none can
    // be a parent; skipping the listing saves a request on a first backup.
    if repo.has_no_index_files() {
        return None;
    }
    let mut want = paths.to_vec();
    want.sort();
    repo.snapshots_listed_under_lock()
        .ok()?
        .into_iter()
        .rev()
        .find_map(|(id, s)| {
            let s = s.ok()?;
            let mut have = s.paths.clone();
            have.sort();
            (s.hostname == host && have == want).then_some((id, s))
        })
}

/// Takes a snapshot of `opts.paths`.
///
/// # Errors
/// [`Error::SourceRead`] for a path that cannot be read (nothing is left in
/// the repository), backend errors.
pub fn backup(
    repo: &Repository,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupOutcome> {
    crate::format::snapshot::check_tags(&opts.tags)?;
    let what = opts
        .paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" ");
    backup_event(repo, opts, what).run(|_| backup_paths(repo, opts, progress))
}

/// The audit event of a backup of `what`: `snap` of the application's
/// components when `opts.app` names one, else `backup`.
fn backup_event<'r>(repo: &'r Repository, opts: &BackupOptions, what: String) -> Event<'r> {
    match &opts.app {
        Some(app) => snap_event(
            repo,
            &app.name,
            app.components.iter().map(|c| c.name.as_str()),
        ),
        None => Event::new(repo, "backup", what),
    }
}

/// The audit event of a snap of `components` of the application `app`,
/// also for a snap that fails before its backup starts (a scheduled snap
/// that cannot start is a failure `cairn status` shows, like one that
/// fails midway).
pub(crate) fn snap_event<'r, 'c>(
    repo: &'r Repository,
    app: &str,
    components: impl Iterator<Item = &'c str>,
) -> Event<'r> {
    let names: Vec<&str> = components.collect();
    Event::new(repo, "snap", format!("app {app} [{}]", names.join(", ")))
}

impl Audited for BackupOutcome {
    fn audit(&self) -> (bool, String) {
        let s = &self.snapshot;
        let detail = format!(
            "snapshot {}{}: {} files, {} bytes added",
            self.id,
            if s.tags.is_empty() {
                String::new()
            } else {
                format!(" [{}]", s.tags.join(","))
            },
            s.summary.files_new + s.summary.files_changed + s.summary.files_unchanged,
            s.summary.bytes_added
        );
        (true, detail)
    }
}

/// Takes the snapshot for [`backup`], which records the outcome in the
/// audit log.
///
/// In order: check the request and resolve its paths; take the lock that
/// keeps prune away until the snapshot is written; load the files cache
/// and choose the parent; walk the paths into trees; write the index and
/// the snapshot ([`commit`]); save the files cache.
fn backup_paths(
    repo: &Repository,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    let start_time = jiff::Timestamp::now();
    check_request(opts, start_time)?;
    let paths = source_paths(&opts.paths)?;
    let special_paths = opts
        .special_paths
        .iter()
        .map(|p| absolute(p))
        .collect::<Result<HashSet<_>>>()?;
    let (excludes, patterns) = build_excludes(opts)?;
    // Held until the snapshot is written: prune must not remove blobs this
    // backup deduplicates against. The index is taken as it is under the
    // lock (a prune may have run since the repository was opened).
    let held = repo.lock_to_add("backup")?;
    let (hostname, username) = host_and_user();
    let hostname = opts.host.clone().unwrap_or(hostname);
    let raw_paths: Vec<Vec<u8>> = paths
        .iter()
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .collect();
    let mut warnings = Vec::new();
    let cache = opts.cache_dir.as_deref().map(|root| {
        let (cache, problem) = FilesCache::load(repo, root);
        warnings.extend(problem);
        cache
    });
    let parent = choose_parent(repo, opts, cache.as_ref(), &hostname, &raw_paths)?;
    let parent_tree = parent.as_ref().and_then(|(_, p)| parent_tree(repo, p));
    let mut virt = Virtual::default();
    for p in &paths {
        virt.insert(p);
    }
    let walker = Walker {
        repo,
        writer: repo.blob_writer(),
        excludes,
        one_file_system: opts.one_file_system,
        force: opts.force,
        cache,
        counters: Counters::default(),
        warnings: Mutex::new(warnings),
        progress,
        budget: BatchBudget::new(),
        special: opts.special.clone(),
        special_paths,
        raw_special: Mutex::new(HashSet::new()),
        records: Mutex::new(Vec::new()),
    };
    // Backing up `/` itself makes its tree the root; other paths are in it.
    let whole = if paths.iter().any(|p| p.as_os_str() == "/") {
        Some(lstat(Path::new("/"))?.dev())
    } else {
        None
    };
    let saved = walk(&walker, whole, &virt, parent_tree);
    let meta = SnapshotMeta {
        started,
        hostname,
        username,
        paths: raw_paths,
        excludes: patterns,
        parent_dbs: parent.as_ref().map(|(_, p)| (p.tree, p.databases.clone())),
        parent: parent.map(|(id, _)| id),
    };
    let (id, snapshot, walker) = commit(repo, opts, held, walker, saved, meta)?;
    Ok(finish(repo, walker, id, snapshot, start_time))
}

/// Refuses a backup of nothing, and one dated (`opts.time`) after
/// `start_time`: change detection would trust files changed before it.
fn check_request(opts: &BackupOptions, start_time: jiff::Timestamp) -> Result<()> {
    if opts.paths.is_empty() {
        return Err(Error::invalid("nothing to back up: give at least one path"));
    }
    check_not_future(
        opts,
        start_time,
        ": change detection would trust files changed before it",
    )
}

/// Refuses a snapshot dated (`opts.time`) after `now`, when the backup
/// started; `why` ends the message.
fn check_not_future(opts: &BackupOptions, now: jiff::Timestamp, why: &str) -> Result<()> {
    match opts.time {
        Some(t) if t > now => Err(Error::invalid(format!(
            "snapshot time {t} is in the future (now is {now}){why}"
        ))),
        _ => Ok(()),
    }
}

/// The paths to back up, absolute, each one checked to exist, sorted and
/// without repeats.
fn source_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        let abs = absolute(p)?;
        lstat(&abs)?;
        out.push(abs);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The snapshot to compare files with: `opts.parent` if given, else this
/// host's latest of the same paths, looked for first among the snapshots
/// in the local cache when the files `cache` shows that no pack was
/// deleted since this host's last backup ([`find_cached_parent`]).
fn choose_parent(
    repo: &Repository,
    opts: &BackupOptions,
    cache: Option<&FilesCache>,
    hostname: &str,
    raw_paths: &[Vec<u8>],
) -> Result<Option<(SnapshotId, Snapshot)>> {
    Ok(match &opts.parent {
        Some(id) => Some((*id, repo.read_snapshot(id)?)),
        None if cache.is_some_and(FilesCache::nothing_deleted) => {
            find_cached_parent(repo, hostname, raw_paths)
                .or_else(|| find_parent(repo, hostname, raw_paths))
        }
        None => find_parent(repo, hostname, raw_paths),
    })
}

/// The root tree of the parent snapshot `p`, with the time (seconds)
/// below which its records can be trusted: a second before the parent
/// backup started. `None` when the tree cannot be read.
fn parent_tree(repo: &Repository, p: &Snapshot) -> Option<(Tree, i64)> {
    let duration = i64::try_from(p.summary.duration_ms / 1000).unwrap_or(i64::MAX);
    let trusted_before = p.time.saturating_sub(duration).saturating_sub(1);
    repo.read_tree(&p.tree).ok().map(|t| (t, trusted_before))
}

/// Walks the backup paths in the repository's thread pool, storing every
/// tree; the root tree's id. With `whole` (the device of `/`, when `/`
/// itself is backed up) the walk starts at `/`; else at `virt`, the
/// directories on the way to the paths. `parent_tree` is the parent's
/// root, for finding changes.
fn walk(
    walker: &Walker<'_>,
    whole: Option<u64>,
    virt: &Virtual,
    parent_tree: Option<(Tree, i64)>,
) -> Result<BlobId> {
    let prev = PrevTree::known(parent_tree);
    crate::repo::in_pool(|| match whole {
        Some(dev) => walker
            .save_dir(Path::new("/"), prev, dev)
            // A directory that vanishes is left out; `/` cannot.
            .and_then(|t| t.ok_or_else(|| Error::internal("/ vanished during the backup"))),
        None => walker.save_virtual(virt, &prev),
    })
}

/// The outcome of a backup committed as `id`, once the files cache is
/// saved with records trusted up to a second before the backup started
/// (`start_time`); a cache that cannot be saved is a warning, the
/// snapshot stands.
fn finish(
    repo: &Repository,
    walker: Walker<'_>,
    id: SnapshotId,
    snapshot: Snapshot,
    start_time: jiff::Timestamp,
) -> BackupOutcome {
    let Walker {
        counters,
        warnings,
        cache,
        ..
    } = walker;
    let mut warnings = warnings
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(cache) = cache {
        let trusted_before = start_time.as_second().saturating_sub(1);
        if let Err(e) = cache.save(repo, id, trusted_before) {
            warnings.push(format!(
                "could not update the files cache: {e}; the snapshot is saved, the next backup compares every file with it instead"
            ));
        }
    }
    BackupOutcome {
        id,
        snapshot,
        warnings,
        dirs_reused: counters.dirs_reused.load(Ordering::Relaxed),
    }
}

/// The databases of a new snapshot whose root tree is `root`: those the
/// walker captured, and those of the parent that were not captured again
/// because they had not changed (same node content as in the parent).
fn databases(
    repo: &Repository,
    walker: &Walker<'_>,
    root: BlobId,
    parent: Option<(BlobId, Vec<DatabaseInfo>)>,
) -> Vec<DatabaseInfo> {
    let mut out = std::mem::take(&mut *lock(&walker.records));
    if let Some((parent_root, dbs)) = parent {
        for db in dbs {
            if out.iter().any(|d| d.path == db.path) {
                continue;
            }
            let now = crate::repo::walk::find_node(repo, &root, &db.path)
                .ok()
                .flatten();
            let then = crate::repo::walk::find_node(repo, &parent_root, &db.path)
                .ok()
                .flatten();
            if let (Some(now), Some(then)) = (now, then)
                && now.kind == then.kind
            {
                out.push(db);
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// What a snapshot records besides its tree and counts.
struct SnapshotMeta {
    started: Instant,
    hostname: String,
    username: String,
    paths: Vec<Vec<u8>>,
    excludes: Vec<String>,
    parent: Option<SnapshotId>,
    /// The parent's root tree and databases, carried over when unchanged.
    parent_dbs: Option<(BlobId, Vec<DatabaseInfo>)>,
}

/// Finishes a backup whose tree was stored (`saved`) or failed: on
/// success writes the index and the snapshot, on failure deletes the packs
/// the run wrote. Returns the walker for its counters and warnings.
fn commit<'a>(
    repo: &Repository,
    opts: &BackupOptions,
    held: crate::repo::lock::Lock,
    walker: Walker<'a>,
    saved: Result<BlobId>,
    meta: SnapshotMeta,
) -> Result<(SnapshotId, Snapshot, Walker<'a>)> {
    let root = match saved {
        Ok(root) => root,
        Err(e) => {
            walker.writer.abandon();
            return Err(e);
        }
    };
    let stats = match held.check().and_then(|()| walker.writer.finish()) {
        Ok(s) => s,
        Err(e) => {
            walker.writer.abandon();
            return Err(e);
        }
    };
    let now = opts.time.unwrap_or_else(jiff::Timestamp::now);
    let c = &walker.counters;
    let summary = Summary {
        files_new: c.files_new.load(Ordering::Relaxed),
        files_changed: c.files_changed.load(Ordering::Relaxed),
        files_unchanged: c.files_unchanged.load(Ordering::Relaxed),
        dirs: c.dirs.load(Ordering::Relaxed),
        others: c.others.load(Ordering::Relaxed),
        bytes_read: c.bytes_read.load(Ordering::Relaxed),
        total_size: c.total_size.load(Ordering::Relaxed),
        blobs_added: stats.blobs_added,
        bytes_added: stats.bytes_added,
        bytes_stored: stats.bytes_stored,
        duration_ms: u64::try_from(meta.started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    let snapshot = Snapshot {
        time: now.as_second(),
        time_nsec: u32::try_from(now.subsec_nanosecond()).unwrap_or(0),
        hostname: meta.hostname,
        username: meta.username,
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        paths: meta.paths,
        tags: opts.tags.clone(),
        excludes: meta.excludes,
        parent: meta.parent,
        tree: root,
        summary,
        program_version: env!("CARGO_PKG_VERSION").to_owned(),
        app: opts.app.clone(),
        databases: databases(repo, &walker, root, meta.parent_dbs),
        original: None,
    };
    held.check()?;
    let id = repo.save_snapshot(&snapshot)?;
    drop(held);
    Ok((id, snapshot, walker))
}

/// Takes a snapshot of the bytes `reader` yields (standard input, say) as
/// one file named `name` at the root of the snapshot's tree.
///
/// The stream is read and stored in batches, in the memory of one large
/// file whatever its length. The file is recorded as `/NAME`, also in the
/// snapshot's `paths`, with mode 0600, the current user and group as owner
/// and the start of the backup as its mtime (store-format.md §11).
/// `opts.paths` must be empty; its excludes and files cache do not apply.
///
/// # Errors
/// [`Error::Invalid`] for a name that is not a plain file name or when
/// `opts.paths` is not empty; [`Error::Stream`] when `reader` fails (no
/// snapshot is saved, and the packs written are deleted); backend errors.
pub fn backup_stream(
    repo: &Repository,
    opts: &BackupOptions,
    name: &[u8],
    reader: impl Read + Send,
    progress: &dyn Progress,
) -> Result<BackupOutcome> {
    crate::format::snapshot::check_tags(&opts.tags)?;
    let mut source = ReaderSource {
        reader,
        what: format!("the stream for {}", String::from_utf8_lossy(name)),
    };
    stream_backup(repo, opts, name, &mut source, progress)
}

/// Takes a snapshot of what the command `argv` (program and arguments,
/// run without a shell) writes to its standard output, stored like
/// [`backup_stream`] as the file `/NAME`.
///
/// The command starts once the backup holds its repository lock. Its
/// standard input is inherited and its standard error is passed through to
/// this process's as it arrives. A command that cannot be started, exits
/// non-zero or is killed by a signal fails the backup: no snapshot is
/// saved, and the packs written so far are deleted.
///
/// # Errors
/// As [`backup_stream`]; [`Error::Stream`] naming the command, its exit
/// status and its last lines of standard error when it failed.
pub fn backup_command(
    repo: &Repository,
    opts: &BackupOptions,
    name: &[u8],
    argv: &[OsString],
    progress: &dyn Progress,
) -> Result<BackupOutcome> {
    crate::format::snapshot::check_tags(&opts.tags)?;
    let mut source = CommandSource::new(argv.to_vec())?.in_dir(opts.command_dir.clone());
    stream_backup(repo, opts, name, &mut source, progress)
}

/// Checks that `name` can be the name of a stream's file at the root.
fn check_stream_name(name: &[u8]) -> Result<()> {
    let shown = String::from_utf8_lossy(name);
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(Error::invalid(format!(
            "'{shown}' cannot name a stream: give a plain file name such as app.sql (no '/', not '.' or '..'); the stream is stored as /NAME in the snapshot"
        )));
    }
    Ok(())
}

/// Checks a stream backup's request: a plain name, no paths, no time in
/// the future (the backup starts at `now`).
fn check_stream_request(opts: &BackupOptions, name: &[u8], now: jiff::Timestamp) -> Result<()> {
    check_stream_name(name)?;
    if !opts.paths.is_empty() {
        return Err(Error::invalid(
            "a backup stores either paths or a stream, not both: run two backups",
        ));
    }
    check_not_future(opts, now, "")
}

/// Stores what `source` gives as the file `/NAME` of a new snapshot.
fn stream_backup(
    repo: &Repository,
    opts: &BackupOptions,
    name: &[u8],
    source: &mut dyn Source,
    progress: &dyn Progress,
) -> Result<BackupOutcome> {
    let what = format!("stream /{}", String::from_utf8_lossy(name));
    backup_event(repo, opts, what).run(|_| {
        let started = Instant::now();
        let start_time = jiff::Timestamp::now();
        check_stream_request(opts, name, start_time)?;
        let held = repo.lock_to_add("backup")?;
        let (hostname, username) = host_and_user();
        let hostname = opts.host.clone().unwrap_or(hostname);
        let mut path = b"/".to_vec();
        path.extend_from_slice(name);
        let raw_paths = vec![path];
        let parent = match &opts.parent {
            Some(id) => Some((*id, repo.read_snapshot(id)?)),
            None => find_parent(repo, &hostname, &raw_paths),
        };
        let in_parent = parent.as_ref().is_some_and(|(_, p)| {
            repo.read_tree(&p.tree)
                .is_ok_and(|t| t.find(name).is_some_and(|n| n.kind.is_file()))
        });
        let walker = Walker {
            repo,
            writer: repo.blob_writer(),
            excludes: Gitignore::empty(),
            one_file_system: false,
            force: true,
            cache: None,
            // A stream is its bytes: no special files.
            special: None,
            special_paths: HashSet::new(),
            raw_special: Mutex::new(HashSet::new()),
            records: Mutex::new(Vec::new()),
            counters: Counters::default(),
            warnings: Mutex::new(Vec::new()),
            progress,
            budget: BatchBudget::new(),
        };
        let what = source.describe();
        let read_error = |e: io::Error| Error::Stream {
            stream: what.clone(),
            problem: format!("could not be read: {e}"),
        };
        let mut content = Vec::new();
        let saved = source.open().and_then(|()| {
            progress.file();
            let stored = crate::repo::in_pool(|| {
                walker.save_large(&mut *source, &read_error, None, &mut content)
            });
            let closed = source.close(stored.is_ok());
            let size = stored?;
            closed?;
            let c = &walker.counters;
            if in_parent {
                c.files_changed.fetch_add(1, Ordering::Relaxed);
            } else {
                c.files_new.fetch_add(1, Ordering::Relaxed);
            }
            c.bytes_read.fetch_add(size, Ordering::Relaxed);
            c.total_size.fetch_add(size, Ordering::Relaxed);
            // A long dump lists its chunks in list blobs, as any large file.
            let kind = walker.file_kind(content)?;
            let node = stream_node(name.to_vec(), kind, size, start_time);
            walker.save_tree(Tree { nodes: vec![node] }, Path::new("/"))
        });
        let meta = SnapshotMeta {
            started,
            hostname,
            username,
            paths: raw_paths,
            excludes: Vec::new(),
            parent_dbs: None,
            parent: parent.map(|(id, _)| id),
        };
        let (id, snapshot, _) = commit(repo, opts, held, walker, saved, meta)?;
        Ok(BackupOutcome {
            id,
            snapshot,
            warnings: Vec::new(),
            dirs_reused: 0,
        })
    })
}

/// The record of a stream stored as a file: mode 0600, owned by this
/// process's user and group, with `time` as its mtime and ctime.
fn stream_node(name: Vec<u8>, kind: NodeKind, size: u64, time: jiff::Timestamp) -> Node {
    let nsec = u32::try_from(time.subsec_nanosecond()).unwrap_or(0);
    Node {
        name,
        kind,
        mode: 0o600,
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        size,
        mtime: time.as_second(),
        mtime_nsec: nsec,
        ctime: time.as_second(),
        ctime_nsec: nsec,
        inode: 0,
        device: 0,
        links: 1,
        xattrs: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_budget_bounds_what_waiting_files_hold() {
        let budget = BatchBudget::new();
        let half = BATCH_BUDGET / 2;
        let first = budget.reserve(half).expect("first half");
        let second = budget.reserve(half).expect("second half");
        assert!(budget.reserve(1).is_none(), "nothing is left");
        drop(first);
        let third = budget.reserve(half).expect("given back");
        drop((second, third));
        assert_eq!(budget.left.load(Ordering::Acquire), BATCH_BUDGET);
        // More than the whole budget: only while none of it is taken.
        let small = budget.reserve(1).expect("small");
        assert!(budget.reserve(3 * BATCH_BUDGET).is_none());
        drop(small);
        let all = budget.reserve(3 * BATCH_BUDGET).expect("alone");
        assert!(budget.reserve(1).is_none());
        drop(all);
        assert_eq!(budget.left.load(Ordering::Acquire), BATCH_BUDGET);
    }
}
