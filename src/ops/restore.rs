//! Restore: recreates a snapshot's files under a target directory.
//!
//! Data is read pack by pack: the blobs all wanted files need are grouped by
//! the pack that holds them, each pack's needed ranges are read once (nearby
//! blobs in one read), and every blob is checked and then written to each
//! place that uses it, in parallel across packs. Every file is written to a
//! temporary name in its final directory, sized up front and filled in place
//! (all-zero chunks stay holes), and renamed into place only when complete,
//! with its metadata already set, so an existing file is replaced atomically
//! or not at all; a file that replaces an existing one is synced first. Damaged or missing
//! blobs fail only the files that need them: the rest are restored and the
//! damaged ones are named in the outcome. Directory metadata is applied last,
//! deepest first, so that writing children does not disturb it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, Permissions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use filetime::FileTime;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::index::Location;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use crate::id::{BlobId, PackId};
use crate::ops::backup::Progress;
use crate::ops::backup::special::SpecialFiles;
use crate::repo::audit::{Audited, Event};
use crate::repo::{Repository, check_claim};
use crate::storage::FileKind;
use crate::sync::lock;

/// Where and what to restore.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RestoreOptions {
    /// Directory to restore into (created if missing).
    pub target: PathBuf,
    /// Restore only these paths of the snapshot (and what is below them).
    pub includes: Vec<PathBuf>,
    /// Leave out these paths of the snapshot and what is below them (the
    /// other components of an application snapshot, for example).
    pub excludes: Vec<PathBuf>,
    /// When the target puts files back where they were (`/`): replace
    /// databases even though another process has them open.
    pub force: bool,
    /// For the safety snapshot of a restore into `/`, as
    /// [`crate::ops::backup::BackupOptions::cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// The profile of the snapshot's application, for the undo command.
    pub profile: Option<PathBuf>,
}

impl RestoreOptions {
    /// Restore everything into `target`.
    #[must_use]
    pub fn new(target: impl Into<PathBuf>) -> Self {
        Self {
            target: target.into(),
            includes: Vec::new(),
            excludes: Vec::new(),
            force: false,
            cache_dir: None,
            profile: None,
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, Default)]
pub struct RestoreOutcome {
    /// Regular files restored.
    pub files: u64,
    /// Directories created or updated.
    pub dirs: u64,
    /// Symlinks, FIFOs and devices.
    pub others: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Files and directories that could not be restored, with the reason.
    /// Non-empty means the restore is incomplete.
    pub errors: Vec<String>,
    /// Metadata that could not be applied (ownership as non-root, xattrs
    /// the target file system refuses).
    pub warnings: Vec<String>,
    /// Some data was found only by scanning packs that no index lists: the
    /// files are complete, but the repository's index is damaged.
    pub index_damaged: bool,
    /// A restore into `/` that replaced existing files: the safety
    /// snapshot of what they were, and how to put it back.
    pub undo: Option<crate::ops::protect::Undo>,
}

struct Item {
    rel: PathBuf,
    node: Node,
}

/// Blobs of one pack closer than this are fetched in one read (the gap is
/// read and thrown away: cheaper than another request)...
const MERGE_GAP: u64 = 256 << 10;
/// ...as long as the read stays below this size. Reads are also the unit
/// of parallel work, so they are kept small enough for a repository of a
/// few packs to keep every core busy.
const MAX_READ: u64 = 2 << 20;
/// On object storage a request costs far more than the bytes it carries
/// (BENCHMARKS.md, issue 9: 2 MiB reads made a restore of /usr/share take
/// 134 GETs where restic, reading whole packs, took 17), so there a pack's
/// wanted blobs are fetched in one read across gaps up to this size...
const REMOTE_MERGE_GAP: u64 = 8 << 20;
/// ...up to this size: a whole pack of the largest size cairn makes. The
/// read is a stream (`Restorer::stream_from_pack`), never held whole.
const REMOTE_MAX_READ: u64 = 1 << 30;
/// Restore workers for a remote repository, at least.
const REMOTE_WORKERS: usize = 6;

/// One place a blob's bytes go: a file being filled, and an offset in it.
#[derive(Debug, Clone, Copy)]
struct Use {
    file: usize,
    offset: u64,
}

/// A blob that some files need, where it is, and where it goes.
struct Wanted {
    id: BlobId,
    loc: Location,
    uses: Vec<Use>,
}

/// A file being filled from packs, in any order.
/// What [`Restorer::set_meta`] works on: a path (not followed if it is a
/// symlink) or an open file.
#[derive(Clone, Copy)]
enum Meta<'a> {
    Path(&'a Path),
    File(&'a File),
}

struct Filling<'i> {
    item: &'i Item,
    dest: PathBuf,
    /// The temporary file, created (at its final size) on first write.
    tmp: Mutex<Option<tempfile::TempPath>>,
    /// Blob uses not yet delivered; whoever delivers the last finishes it.
    remaining: AtomicUsize,
    failed: AtomicBool,
    /// End of the furthest write: below `size` when the file ends in a
    /// hole, which only `set_len` can make.
    written_end: AtomicU64,
    /// Its directory was created by this restore, so nothing can be at
    /// `dest` yet (no stat needed to decide on an fsync).
    fresh_dir: bool,
}

fn components(p: &Path) -> Vec<Vec<u8>> {
    p.components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n.as_bytes().to_vec()),
            _ => None,
        })
        .collect()
}

/// Relation of a path to the include list.
fn included(rel: &[Vec<u8>], includes: &[Vec<Vec<u8>>]) -> (bool, bool) {
    if includes.is_empty() {
        return (true, true);
    }
    // (take this entry, descend into it)
    let mut take = false;
    let mut descend = false;
    for inc in includes {
        if rel.starts_with(inc) {
            return (true, true);
        }
        if inc.starts_with(rel) {
            take = true;
            descend = true;
        }
    }
    (take, descend)
}

struct Restorer<'a> {
    repo: &'a Repository,
    target: PathBuf,
    errors: Mutex<Vec<String>>,
    warnings: Mutex<Vec<String>>,
    bytes: AtomicU64,
    is_root: bool,
    progress: &'a dyn Progress,
    /// Files restored one by one that failed.
    failed_files: Mutex<Vec<PathBuf>>,
    /// `RestoreOptions::excludes`, as components.
    excludes: Vec<Vec<Vec<u8>>>,
}

/// Temporary files a killed restore left behind: found and removed by the
/// next restore into the same directories.
mod stale {
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;
    use std::sync::OnceLock;
    use std::time::Duration;

    /// The start of every temporary file's name.
    const BASE: &str = ".cairn-restore-";

    /// A temporary file whose name does not say which process wrote it
    /// (one of an older cairn, or of another host) is removed once its
    /// inode has not changed for this long: no restore leaves a file it
    /// writes untouched for a day.
    pub(super) const UNNAMED_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

    fn host_tag() -> String {
        let (host, _) = crate::repo::host_and_user();
        let mut tag = blake3::hash(host.as_bytes()).to_hex().to_string();
        tag.truncate(8);
        tag
    }

    /// The prefix of this process's temporary files: `.cairn-restore-`,
    /// a tag of the host and the process id, so that a later restore can
    /// tell a killed restore's leftover from a file a running one writes.
    pub(super) fn prefix() -> &'static str {
        static PREFIX: OnceLock<String> = OnceLock::new();
        PREFIX.get_or_init(|| format!("{BASE}{}-{}-", host_tag(), std::process::id()))
    }

    /// Whether the temporary file `name` with metadata `meta` is stale:
    /// written by a process of this host that no longer exists, or (when
    /// its name does not say whose it is) unchanged for [`UNNAMED_AFTER`].
    fn is_stale(name: &str, meta: &std::fs::Metadata, host: &str) -> bool {
        let Some(rest) = name.strip_prefix(BASE) else {
            return false;
        };
        let mut parts = rest.splitn(3, '-');
        if let (Some(tag), Some(pid), Some(_)) = (parts.next(), parts.next(), parts.next())
            && tag == host
            && let Ok(pid) = pid.parse::<i32>()
        {
            if u32::try_from(pid).is_ok_and(|p| p == std::process::id()) {
                return false;
            }
            // Signal 0 only asks whether the process exists.
            return matches!(
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
                Err(nix::errno::Errno::ESRCH)
            );
        }
        // The change time, which restoring a file's times does not set.
        let changed =
            std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(meta.ctime()).unwrap_or(0));
        std::time::SystemTime::now()
            .duration_since(changed)
            .is_ok_and(|idle| idle >= UNNAMED_AFTER)
    }

    /// Removes the stale temporary files (see [`is_stale`]) directly in
    /// each of `dirs`; returns how many and their bytes, and the files
    /// that could not be removed.
    pub(super) fn remove<'a>(
        dirs: impl IntoIterator<Item = &'a Path>,
    ) -> (usize, u64, Vec<String>) {
        let host = host_tag();
        let (mut removed, mut bytes, mut failed) = (0, 0, Vec::new());
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str().filter(|n| n.starts_with(BASE)) else {
                    continue;
                };
                // Regular files only, never followed.
                let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
                    continue;
                };
                if !meta.is_file() || !is_stale(name, &meta, &host) {
                    continue;
                }
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => {
                        removed += 1;
                        bytes += meta.len();
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => failed.push(format!("{}: {e}", entry.path().display())),
                }
            }
        }
        (removed, bytes, failed)
    }
}

/// A short random name in `dir` (short, so that it fits wherever the final
/// name fits).
fn tmp_name(dir: &Path) -> PathBuf {
    let mut r = [0u8; 8];
    let _ = crate::format::crypto::random(&mut r);
    dir.join(format!(".cairn-{}", hex::encode(r)))
}

impl Restorer<'_> {
    fn error(&self, msg: String) {
        lock(&self.errors).push(msg);
    }

    fn warn(&self, msg: String) {
        lock(&self.warnings).push(msg);
    }

    fn collect(&self, tree: &BlobId, rel: &Path, includes: &[Vec<Vec<u8>>], out: &mut Vec<Item>) {
        let tree = match self.repo.read_tree(tree) {
            Ok(t) => t,
            Err(e) => {
                self.error(format!("{}/: contents lost: {e}", display_rel(rel)));
                return;
            }
        };
        for node in tree.nodes {
            let child = rel.join(OsStr::from_bytes(&node.name));
            let comps = components(&child);
            let (take, descend) = included(&comps, includes);
            if !take || self.excludes.iter().any(|e| comps.starts_with(e)) {
                continue;
            }
            let sub = match &node.kind {
                NodeKind::Dir { subtree } if descend => Some(*subtree),
                _ => None,
            };
            out.push(Item {
                rel: child.clone(),
                node,
            });
            if let Some(sub) = sub {
                self.collect(&sub, &child, includes, out);
            }
        }
    }

    fn write_content(
        &self,
        file: &mut File,
        dest: &Path,
        content: &[BlobId],
        size: u64,
    ) -> Result<()> {
        let io_err = |e| Error::target_write(dest, e);
        let mut pos = 0u64;
        let mut sparse_tail = false;
        for id in content {
            let data = self.repo.read_blob(id)?;
            // All-zero chunks become holes: sparse files stay sparse, and
            // nothing is lost for files that were not sparse.
            if data.iter().all(|&b| b == 0) {
                sparse_tail = true;
            } else {
                file.seek(SeekFrom::Start(pos)).map_err(io_err)?;
                file.write_all(&data).map_err(io_err)?;
                sparse_tail = false;
            }
            pos += data.len() as u64;
            self.progress.bytes(data.len() as u64);
        }
        if pos != size {
            return Err(Error::corrupt(
                "file record",
                format!("content is {pos} bytes but the tree says {size}"),
            ));
        }
        if sparse_tail || pos == 0 {
            file.set_len(size).map_err(io_err)?;
        }
        self.bytes.fetch_add(size, Ordering::Relaxed);
        Ok(())
    }

    /// Applies owner, extended attributes, mode and times, in that order:
    /// chown clears set-id bits so it goes before chmod, and xattrs may need
    /// write permission that the final mode takes away.
    fn apply_meta(&self, path: &Path, node: &Node, rel: &Path) {
        self.set_meta(Meta::Path(path), node, rel);
    }

    /// Sets a node's owner, extended attributes, mode and times, in that
    /// order (a change of owner clears set-id bits), on an open file when
    /// there is one: no path lookups, and nothing between the checks and
    /// the file.
    fn set_meta(&self, target: Meta<'_>, node: &Node, rel: &Path) {
        let symlink = matches!(node.kind, NodeKind::Symlink { .. });
        let mut owned = false;
        if self.is_root {
            let chown = match target {
                Meta::Path(p) => std::os::unix::fs::lchown(p, Some(node.uid), Some(node.gid)),
                Meta::File(f) => std::os::unix::fs::fchown(f, Some(node.uid), Some(node.gid)),
            };
            match chown {
                Ok(()) => owned = true,
                Err(e) => self.warn(format!("{}: cannot set owner: {e}", display_rel(rel))),
            }
        }
        for x in &node.xattrs {
            let name = OsStr::from_bytes(&x.name);
            let set = match target {
                Meta::Path(p) => xattr::set(p, name, &x.value),
                Meta::File(f) => xattr::FileExt::set_xattr(f, name, &x.value),
            };
            if let Err(e) = set {
                self.warn(format!(
                    "{}: cannot set extended attribute {}: {e}",
                    display_rel(rel),
                    String::from_utf8_lossy(&x.name)
                ));
            }
        }
        if !symlink {
            // Set-id bits are kept only on a file owned as recorded, as tar
            // does: otherwise they would grant the restoring user's rights.
            let mode = if owned {
                node.mode
            } else {
                node.mode & !0o6000
            };
            let perms = Permissions::from_mode(mode);
            let chmod = match target {
                Meta::Path(p) => fs::set_permissions(p, perms),
                Meta::File(f) => f.set_permissions(perms),
            };
            if let Err(e) = chmod {
                self.warn(format!("{}: cannot set mode: {e}", display_rel(rel)));
            }
        }
        let mtime = FileTime::from_unix_time(node.mtime, node.mtime_nsec);
        let times = match target {
            Meta::Path(p) => filetime::set_symlink_file_times(p, mtime, mtime),
            Meta::File(f) => filetime::set_file_handle_times(f, Some(mtime), Some(mtime)),
        };
        if let Err(e) = times {
            self.warn(format!("{}: cannot set times: {e}", display_rel(rel)));
        }
    }

    fn restore_file(&self, item: &Item, content: &[BlobId]) -> Result<()> {
        let dest = self.target.join(&item.rel);
        let dir = dest.parent().unwrap_or(&self.target);
        let mut tmp = tempfile::Builder::new()
            .prefix(stale::prefix())
            .tempfile_in(dir)
            .map_err(|e| Error::target_write(&dest, e))?;
        self.write_content(tmp.as_file_mut(), &dest, content, item.node.size)?;
        self.set_meta(Meta::File(tmp.as_file()), &item.node, &item.rel);
        tmp.persist(&dest)
            .map_err(|e| Error::target_write(&dest, e.error))?;
        Ok(())
    }

    /// Records the first error of a file being filled; it will not be
    /// renamed into place.
    fn fail(&self, f: &Filling<'_>, why: &str) {
        if !f.failed.swap(true, Ordering::AcqRel) {
            self.error(format!("{}: {why}", display_rel(&f.item.rel)));
        }
    }

    /// The temporary file of `f`, created when the first blob arrives.
    /// Blobs land in any order (a write past the end leaves a hole) and
    /// all-zero ones are never written; `finish_file` sets the final size
    /// when the file ends in a hole.
    fn open_tmp(&self, f: &Filling<'_>) -> Result<File> {
        let io_err = |e| Error::target_write(&f.dest, e);
        let mut tmp = lock(&f.tmp);
        if let Some(path) = tmp.as_ref() {
            let path = path.to_path_buf();
            drop(tmp);
            return fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io_err);
        }
        let dir = f.dest.parent().unwrap_or(&self.target);
        let named = tempfile::Builder::new()
            .prefix(stale::prefix())
            .tempfile_in(dir)
            .map_err(io_err)?;
        let (file, path) = named.into_parts();
        *tmp = Some(path);
        Ok(file)
    }

    /// Hands one checked blob (or the reason it could not be had) to every
    /// place that uses it.
    fn deliver(&self, files: &[Filling<'_>], w: &Wanted, data: Result<Vec<u8>>) {
        let zero = data.as_ref().is_ok_and(|d| d.iter().all(|&b| b == 0));
        for u in &w.uses {
            let Some(f) = files.get(u.file) else { continue };
            // Kept open for `finish_file` when this is the file's last blob.
            let mut opened = None;
            match &data {
                // All-zero chunks stay holes: the file already has its size.
                Ok(_) if zero || f.failed.load(Ordering::Acquire) => {}
                Ok(d) => {
                    use std::os::unix::fs::FileExt;
                    let written = self.open_tmp(f).and_then(|file| {
                        file.write_all_at(d, u.offset)
                            .map_err(|e| Error::target_write(&f.dest, e))?;
                        Ok(file)
                    });
                    f.written_end
                        .fetch_max(u.offset + d.len() as u64, Ordering::AcqRel);
                    match written {
                        Ok(file) => opened = Some(file),
                        Err(e) => self.fail(f, &e.to_string()),
                    }
                }
                Err(e) => self.fail(f, &e.to_string()),
            }
            if let Ok(d) = &data {
                self.progress.bytes(d.len() as u64);
            }
            if f.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                self.finish_file(f, opened);
            }
        }
    }

    /// Sets the metadata of a completely filled file and renames it into
    /// place; a failed one is deleted instead.
    fn finish_file(&self, f: &Filling<'_>, file: Option<File>) {
        let tmp = lock(&f.tmp).take();
        self.progress.file();
        if f.failed.load(Ordering::Acquire) {
            return;
        }
        let done = (|| -> Result<()> {
            let io_err = |e| Error::target_write(&f.dest, e);
            let (path, file) = match (tmp, file) {
                (Some(path), Some(file)) => (path, file),
                (Some(path), None) => {
                    let file = fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(io_err)?;
                    (path, file)
                }
                (None, _) => {
                    // Empty, or all holes: nothing was written.
                    let file = self.open_tmp(f)?;
                    let path = lock(&f.tmp)
                        .take()
                        // open_tmp has just set it.
                        .ok_or_else(|| Error::internal("temporary file vanished"))?;
                    (path, file)
                }
            };
            if f.written_end.load(Ordering::Acquire) < f.item.node.size {
                file.set_len(f.item.node.size).map_err(io_err)?;
            }
            // Replacing an existing file: make the new content durable
            // first, so a crash cannot leave an empty file in its place.
            if !f.fresh_dir && fs::symlink_metadata(&f.dest).is_ok() {
                file.sync_all().map_err(io_err)?;
            }
            self.set_meta(Meta::File(&file), &f.item.node, &f.item.rel);
            drop(file);
            path.persist(&f.dest).map_err(|e| io_err(e.error))?;
            Ok(())
        })();
        match done {
            Ok(()) => {
                self.bytes.fetch_add(f.item.node.size, Ordering::Relaxed);
            }
            Err(e) => self.fail(f, &e.to_string()),
        }
    }

    /// Reads one run of nearby blobs of `pack` in one read and delivers
    /// each blob. A read that fails is retried blob by blob, so each file
    /// learns exactly which blob it lost and why.
    fn fill_from_pack(&self, files: &[Filling<'_>], pack: PackId, run: &[&Wanted]) {
        let name = pack.to_hex();
        let (Some(first), Some(last)) = (run.first(), run.last()) else {
            return;
        };
        let start = u64::from(first.loc.offset);
        let end = u64::from(last.loc.offset) + u64::from(last.loc.length);
        if self.repo.backend().is_remote() {
            self.stream_from_pack(files, pack, run, start, end);
            return;
        }
        let bytes = match self
            .repo
            .backend()
            .read_range(FileKind::Pack, &name, start, end - start)
        {
            Ok(b) => b,
            Err(_) => return self.deliver_singly(files, run),
        };
        for w in run {
            let at = (u64::from(w.loc.offset) - start) as usize;
            let data = bytes
                .get(at..at + w.loc.length as usize)
                .ok_or_else(|| {
                    Error::corrupt(format!("pack {name}"), "shorter than its index says")
                })
                .and_then(|sealed| {
                    self.repo
                        .open_blob(&w.id, &pack, w.loc.compression, w.loc.raw_length, sealed)
                });
            self.deliver(files, w, data);
        }
    }

    /// Reads each blob of `run` on its own (after a failed read of the
    /// whole run), so each file learns exactly which blob it lost and why.
    fn deliver_singly(&self, files: &[Filling<'_>], run: &[&Wanted]) {
        for w in run {
            self.deliver(files, w, self.repo.read_blob(&w.id));
        }
    }

    /// As [`Restorer::fill_from_pack`], reading the run as one stream: on
    /// object storage a run spans most of a pack (one request), which is
    /// never held in memory whole. After a failed read the blobs not yet
    /// delivered are read one by one.
    fn stream_from_pack(
        &self,
        files: &[Filling<'_>],
        pack: PackId,
        run: &[&Wanted],
        start: u64,
        end: u64,
    ) {
        let name = pack.to_hex();
        let mut stream =
            match self
                .repo
                .backend()
                .read_range_stream(FileKind::Pack, &name, start, end - start)
            {
                Ok(s) => s,
                Err(_) => return self.deliver_singly(files, run),
            };
        let mut at = start;
        let mut sealed = Vec::new();
        for (i, w) in run.iter().enumerate() {
            let off = u64::from(w.loc.offset);
            let read = io::copy(&mut stream.by_ref().take(off - at), &mut io::sink())
                .and_then(|skipped| {
                    if skipped == off - at {
                        Ok(())
                    } else {
                        Err(io::ErrorKind::UnexpectedEof.into())
                    }
                })
                .and_then(|()| {
                    sealed.resize(w.loc.length as usize, 0);
                    stream.read_exact(&mut sealed)
                });
            if read.is_err() {
                return self.deliver_singly(files, run.get(i..).unwrap_or_default());
            }
            at = off + u64::from(w.loc.length);
            let data =
                self.repo
                    .open_blob(&w.id, &pack, w.loc.compression, w.loc.raw_length, &sealed);
            self.deliver(files, w, data);
        }
    }

    /// Restores regular files: those whose blobs are all indexed pack by
    /// pack in parallel, the others (found only by scanning packs) one by
    /// one. Returns the files that failed.
    fn restore_files(
        &self,
        files: &[(&Item, &[BlobId])],
        fresh_dirs: &std::collections::HashSet<PathBuf>,
    ) -> Vec<PathBuf> {
        let (filling, wanted, singly) = self.plan_fills(files, fresh_dirs);
        let (runs, bad) = self.read_runs(&wanted);
        // From object storage each worker mostly waits for its download:
        // more of them keep the cores busy (each streams its pack, so
        // memory holds a few buffers per worker, not a pack).
        let workers = if self.repo.backend().is_remote() {
            REMOTE_WORKERS
        } else {
            0
        };
        crate::repo::in_pool_of(workers, || {
            // Files with no content have nothing to wait for.
            filling
                .par_iter()
                .filter(|f| f.remaining.load(Ordering::Acquire) == 0)
                .for_each(|f| self.finish_file(f, None));
            for (w, e) in bad {
                self.deliver(&filling, w, Err(e));
            }
            runs.par_iter()
                .for_each(|(pack, run)| self.fill_from_pack(&filling, *pack, run));
            singly.par_iter().for_each(|(item, content)| {
                if let Err(e) = self.restore_file(item, content) {
                    self.error(format!("{}: {e}", display_rel(&item.rel)));
                    lock(&self.failed_files).push(item.rel.clone());
                }
                self.progress.file();
            });
        });
        let mut failed = std::mem::take(&mut *lock(&self.failed_files));
        failed.extend(
            filling
                .iter()
                .filter(|f| {
                    f.failed.load(Ordering::Acquire) || f.remaining.load(Ordering::Acquire) > 0
                })
                .map(|f| f.item.rel.clone()),
        );
        failed
    }

    /// Which blob goes where: a file being filled per regular file whose
    /// blobs are all indexed (each blob wanted once, with every place it is
    /// used), and the files with a blob no index lists, restored one by one
    /// by scanning packs. A file whose blobs do not add up to its size
    /// fails here.
    #[allow(clippy::type_complexity)]
    fn plan_fills<'i>(
        &self,
        files: &[(&'i Item, &'i [BlobId])],
        fresh_dirs: &std::collections::HashSet<PathBuf>,
    ) -> (Vec<Filling<'i>>, Vec<Wanted>, Vec<(&'i Item, &'i [BlobId])>) {
        let mut filling: Vec<Filling<'i>> = Vec::new();
        let mut wanted: Vec<Wanted> = Vec::new();
        let mut slot: HashMap<BlobId, usize> = HashMap::new();
        let mut singly: Vec<(&'i Item, &'i [BlobId])> = Vec::new();
        {
            let index = self.repo.index();
            for &(item, content) in files {
                let locs: Option<Vec<Location>> = content.iter().map(|id| index.get(id)).collect();
                let Some(locs) = locs else {
                    singly.push((item, content));
                    continue;
                };
                let dest = self.target.join(&item.rel);
                let total: u64 = locs.iter().map(|l| u64::from(l.raw_length)).sum();
                if total != item.node.size {
                    self.error(format!(
                        "{}: {}",
                        display_rel(&item.rel),
                        Error::corrupt(
                            "file record",
                            format!(
                                "content is {total} bytes but the tree says {}",
                                item.node.size
                            ),
                        )
                    ));
                    lock(&self.failed_files).push(item.rel.clone());
                    continue;
                }
                let file = filling.len();
                let mut offset = 0;
                for (id, loc) in content.iter().zip(&locs) {
                    let w = *slot.entry(*id).or_insert_with(|| {
                        wanted.push(Wanted {
                            id: *id,
                            loc: *loc,
                            uses: Vec::new(),
                        });
                        wanted.len() - 1
                    });
                    if let Some(w) = wanted.get_mut(w) {
                        w.uses.push(Use { file, offset });
                    }
                    offset += u64::from(loc.raw_length);
                }
                filling.push(Filling {
                    item,
                    dest,
                    tmp: Mutex::new(None),
                    remaining: AtomicUsize::new(content.len()),
                    failed: AtomicBool::new(false),
                    written_end: AtomicU64::new(0),
                    fresh_dir: item.rel.parent().is_some_and(|d| fresh_dirs.contains(d)),
                });
            }
        }
        (filling, wanted, singly)
    }

    /// The wanted blobs grouped into reads: per pack, in pack order and by
    /// offset, blobs closer than the merge gap up to the largest read go in
    /// one run. A blob whose index entry claims an impossible size fails on
    /// its own (returned with its error).
    #[allow(clippy::type_complexity)]
    fn read_runs<'w>(
        &self,
        wanted: &'w [Wanted],
    ) -> (Vec<(PackId, Vec<&'w Wanted>)>, Vec<(&'w Wanted, Error)>) {
        // Group by pack, in pack order and by offset within each.
        let mut by_pack: HashMap<u32, Vec<&Wanted>> = HashMap::new();
        for w in wanted {
            by_pack.entry(w.loc.pack).or_default().push(w);
        }
        // Split each pack's blobs into runs read in one go: blobs closer
        // than MERGE_GAP, up to MAX_READ bytes. A blob whose index entry
        // claims an impossible size fails on its own.
        let mut runs: Vec<(PackId, Vec<&Wanted>)> = Vec::new();
        let mut bad: Vec<(&Wanted, Error)> = Vec::new();
        let (merge_gap, max_read) = if self.repo.backend().is_remote() {
            (REMOTE_MERGE_GAP, REMOTE_MAX_READ)
        } else {
            (MERGE_GAP, MAX_READ)
        };
        {
            let index = self.repo.index();
            let mut by_pack: Vec<(u32, Vec<&Wanted>)> = by_pack.into_iter().collect();
            // Pack positions follow the index, roughly the order packs were
            // written, so restore reads them in about that order.
            by_pack.sort_unstable_by_key(|(pos, _)| *pos);
            for (pos, mut ws) in by_pack {
                let Some(pack) = index.pack_id(pos) else {
                    continue;
                };
                ws.sort_unstable_by_key(|w| w.loc.offset);
                let mut run: Vec<&Wanted> = Vec::new();
                let (mut start, mut end) = (0u64, 0u64);
                for w in ws {
                    if let Err(e) = check_claim(&w.id, &pack, &w.loc) {
                        bad.push((w, e));
                        continue;
                    }
                    let (off, len) = (u64::from(w.loc.offset), u64::from(w.loc.length));
                    let joins = !run.is_empty()
                        && off >= end
                        && off - end <= merge_gap
                        && off + len - start <= max_read;
                    if !joins && !run.is_empty() {
                        runs.push((pack, std::mem::take(&mut run)));
                    }
                    if run.is_empty() {
                        start = off;
                    }
                    end = off + len;
                    run.push(w);
                }
                if !run.is_empty() {
                    runs.push((pack, run));
                }
            }
        }
        (runs, bad)
    }

    fn restore_special(&self, item: &Item) -> Result<bool> {
        let dest = self.target.join(&item.rel);
        let dir = dest.parent().unwrap_or(&self.target);
        let tmp = tmp_name(dir);
        let made = match &item.node.kind {
            NodeKind::Symlink { target } => {
                std::os::unix::fs::symlink(OsStr::from_bytes(target), &tmp)
            }
            NodeKind::Fifo => {
                nix::unistd::mkfifo(&tmp, nix::sys::stat::Mode::from_bits_truncate(0o600))
                    .map_err(std::io::Error::from)
            }
            NodeKind::CharDevice { rdev } | NodeKind::BlockDevice { rdev } => {
                let kind = if matches!(item.node.kind, NodeKind::CharDevice { .. }) {
                    nix::sys::stat::SFlag::S_IFCHR
                } else {
                    nix::sys::stat::SFlag::S_IFBLK
                };
                nix::sys::stat::mknod(
                    &tmp,
                    kind,
                    nix::sys::stat::Mode::from_bits_truncate(0o600),
                    *rdev,
                )
                .map_err(std::io::Error::from)
            }
            _ => return Ok(false),
        };
        made.map_err(|e| Error::target_write(&dest, e))?;
        self.apply_meta(&tmp, &item.node, &item.rel);
        rename_into_place(&tmp, &dest)?;
        Ok(true)
    }

    fn link(&self, item: &Item, primary: &Path) -> Result<()> {
        let dest = self.target.join(&item.rel);
        let dir = dest.parent().unwrap_or(&self.target);
        let tmp = tmp_name(dir);
        fs::hard_link(self.target.join(primary), &tmp)
            .map_err(|e| Error::target_write(&dest, e))?;
        rename_into_place(&tmp, &dest)
    }
}

/// Renames a finished temporary entry over `dest` (atomically replacing
/// whatever is there), removing the temporary on failure.
fn rename_into_place(tmp: &Path, dest: &Path) -> Result<()> {
    fs::rename(tmp, dest).map_err(|e| {
        let _ = fs::remove_file(tmp);
        Error::target_write(dest, e)
    })
}

fn display_rel(rel: &Path) -> String {
    format!("/{}", rel.display())
}

/// Restores `snapshot` according to `opts`.
///
/// A target that puts files back where they were (`/`) replaces live
/// data: the restore first applies the protections of
/// [`crate::ops::protect`], with `special` telling which files are
/// databases and how to settle them. `special` is a parameter rather than
/// an option so that no caller leaves it out by accident; the library's
/// `cairn::restore` passes the SQLite hook (src/apps/engine.rs).
///
/// Returns an outcome whose `errors` list every file that could not be
/// restored; the caller decides how to report an incomplete restore.
///
/// # Errors
/// [`Error::NotFound`] when none of `opts.includes` is in the snapshot;
/// the protections' errors of a restore into `/` (`crate::ops::protect`);
/// otherwise only when the target directory cannot be created at all.
pub fn restore(
    repo: &Repository,
    snapshot: &Snapshot,
    opts: &RestoreOptions,
    special: &Arc<dyn SpecialFiles>,
    progress: &dyn Progress,
) -> Result<RestoreOutcome> {
    let target = format!(
        "snapshot of {} from {} into {}",
        snapshot.timestamp(),
        snapshot.hostname,
        opts.target.display()
    );
    Event::new(repo, "restore", target).run(|_| {
        // Shared: a prune must wait until the data is out.
        let _held = repo.lock(false, "restore")?;
        repo.refresh_index()?;
        fs::create_dir_all(&opts.target).map_err(|e| Error::target_write(&opts.target, e))?;
        let includes: Vec<Vec<Vec<u8>>> = opts.includes.iter().map(|p| components(p)).collect();
        let r = Restorer {
            repo,
            target: opts.target.clone(),
            errors: Mutex::new(Vec::new()),
            warnings: Mutex::new(Vec::new()),
            bytes: AtomicU64::new(0),
            is_root: nix::unistd::geteuid().is_root(),
            progress,
            failed_files: Mutex::new(Vec::new()),
            excludes: opts.excludes.iter().map(|p| components(p)).collect(),
        };
        let mut items = Vec::new();
        r.collect(&snapshot.tree, Path::new(""), &includes, &mut items);
        if !includes.is_empty() && items.is_empty() {
            return Err(Error::NotFound(format!(
                "none of {} is in the snapshot",
                opts.includes
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let mut out = RestoreOutcome::default();
        if let Some(replacing) = live_files(snapshot, &items, opts, special.as_ref()) {
            // Files go back where they were: live data, protected as every
            // in-place restore is (crate::ops::protect).
            let (undo, warnings) = crate::ops::protect::guard(
                repo,
                &replacing,
                special,
                &crate::ops::backup::NoProgress,
            )?;
            out.undo = undo;
            lock(&r.warnings).extend(warnings);
        }
        r.restore_items(&items, &mut out);
        out.index_damaged = repo.used_unindexed_packs();
        out.bytes = r.bytes.load(Ordering::Relaxed);
        out.errors = r.errors.into_inner().unwrap_or_default();
        out.warnings = r.warnings.into_inner().unwrap_or_default();
        Ok(out)
    })
}

impl Audited for RestoreOutcome {
    fn audit(&self) -> (bool, String) {
        match self.errors.first() {
            None => (true, format!("{} files, {} bytes", self.files, self.bytes)),
            Some(first) => (
                false,
                format!(
                    "incomplete: {} files restored, {} not: {first}",
                    self.files,
                    self.errors.len(),
                ),
            ),
        }
    }
}

/// When `opts.target` is the root directory, so that every file goes back
/// where it was backed up from: the existing files the restore replaces,
/// and which of them are databases (recorded in the snapshot, or special
/// by their content as `special` says: SQLite's header). `None` for any
/// other target.
fn live_files(
    snapshot: &Snapshot,
    items: &[Item],
    opts: &RestoreOptions,
    special: &dyn SpecialFiles,
) -> Option<crate::ops::protect::Replacing> {
    if !fs::canonicalize(&opts.target).is_ok_and(|t| t == Path::new("/")) {
        return None;
    }
    let mut what = crate::ops::protect::Replacing {
        profile: opts.profile.clone(),
        force: opts.force,
        cache_dir: opts.cache_dir.clone(),
        whole_files: true,
        ..crate::ops::protect::Replacing::default()
    };
    for item in items {
        if matches!(item.node.kind, NodeKind::Dir { .. }) {
            continue;
        }
        let dest = Path::new("/").join(&item.rel);
        let Ok(meta) = fs::symlink_metadata(&dest) else {
            continue;
        };
        if meta.is_dir() {
            continue;
        }
        let recorded = snapshot
            .databases
            .iter()
            .any(|d| d.path == dest.as_os_str().as_bytes());
        if recorded || (meta.is_file() && special.is_special(&dest)) {
            what.databases.push(dest.clone());
        }
        what.files.push(dest);
    }
    what.app = snapshot
        .app
        .as_ref()
        .map(|a| crate::ops::protect::component_app(a, "restored", "files", &what.files, None));
    Some(what)
}

/// What a restore writes, sorted by how: regular files, hard links to a
/// file restored first (with that file's path), and everything else that
/// is not a directory.
struct Sorted<'i> {
    files: Vec<(&'i Item, &'i [BlobId])>,
    links: Vec<(&'i Item, PathBuf)>,
    specials: Vec<&'i Item>,
}

/// Directories a restore made: those that could not be made (nothing is
/// written below them) and those it created (fresh, so files in them
/// cannot exist yet).
struct Dirs {
    failed: Vec<PathBuf>,
    fresh: std::collections::HashSet<PathBuf>,
}

impl Dirs {
    /// True for a path strictly below a directory that could not be made.
    fn under_failed(&self, rel: &Path) -> bool {
        self.failed.iter().any(|d| rel.starts_with(d) && rel != d)
    }
}

impl Restorer<'_> {
    /// Writes `items` (in tree order) under the target: directories first,
    /// then stale temporary files go, then file contents, hard links,
    /// special files, and directory metadata last (writing into a
    /// directory would change its times). Counts go to `out`; failures to
    /// the restorer's errors.
    fn restore_items(&self, items: &[Item], out: &mut RestoreOutcome) {
        let dirs = self.make_dirs(items, out);
        self.remove_stale(items, &dirs);
        let lists = self.read_lists(items, &dirs);
        let sorted = self.sort(items, &lists, &dirs);
        let failed_files = self.restore_files(&sorted.files, &dirs.fresh);
        out.files = sorted.files.len() as u64 - failed_files.len() as u64;
        for (item, primary) in sorted.links {
            if failed_files.contains(&primary) {
                self.error(format!(
                    "{}: not linked, because {} failed",
                    display_rel(&item.rel),
                    display_rel(&primary)
                ));
                continue;
            }
            match self.link(item, &primary) {
                Ok(()) => out.files += 1,
                Err(e) => self.error(format!("{}: {e}", display_rel(&item.rel))),
            }
        }
        for item in sorted.specials {
            match self.restore_special(item) {
                Ok(true) => out.others += 1,
                Ok(false) => {}
                Err(e) => self.error(format!("{}: {e}", display_rel(&item.rel))),
            }
        }
        // Directory metadata last, deepest first.
        for item in items
            .iter()
            .rev()
            .filter(|i| matches!(i.node.kind, NodeKind::Dir { .. }))
        {
            if !dirs.failed.contains(&item.rel) {
                self.apply_meta(&self.target.join(&item.rel), &item.node, &item.rel);
            }
        }
    }

    /// Creates the directories of `items` in tree order (parents before
    /// children), private (0700) until their metadata is applied last.
    fn make_dirs(&self, items: &[Item], out: &mut RestoreOutcome) -> Dirs {
        let mut dirs = Dirs {
            failed: Vec::new(),
            fresh: std::collections::HashSet::new(),
        };
        for item in items
            .iter()
            .filter(|i| matches!(i.node.kind, NodeKind::Dir { .. }))
        {
            if dirs.failed.iter().any(|d| item.rel.starts_with(d)) {
                // Never create anything below a directory that could not be
                // made: that path may lead outside the target.
                dirs.failed.push(item.rel.clone());
                continue;
            }
            let dest = self.target.join(&item.rel);
            // An existing directory is reused, but never an existing
            // symlink: following it would write outside the target.
            match fs::DirBuilder::new().mode(0o700).create(&dest) {
                Ok(()) => {
                    dirs.fresh.insert(item.rel.clone());
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::AlreadyExists
                        && fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) => {}
                Err(e) => {
                    let e = if e.kind() == std::io::ErrorKind::AlreadyExists {
                        std::io::Error::new(
                            std::io::ErrorKind::AlreadyExists,
                            "exists and is not a directory (a symlink is not followed); move it away and restore again",
                        )
                    } else {
                        e
                    };
                    self.error(format!(
                        "{}: {}",
                        display_rel(&item.rel),
                        Error::target_write(&dest, e)
                    ));
                    dirs.failed.push(item.rel.clone());
                }
            }
            out.dirs += 1;
        }
        dirs
    }

    /// Removes temporary files of killed restores from the directories this
    /// one writes, before writing (they may be what fills the disk).
    fn remove_stale(&self, items: &[Item], dirs: &Dirs) {
        let writes: Vec<PathBuf> = std::iter::once(self.target.clone())
            .chain(
                items
                    .iter()
                    .filter(|i| matches!(i.node.kind, NodeKind::Dir { .. }))
                    .filter(|i| !dirs.failed.contains(&i.rel))
                    .map(|i| self.target.join(&i.rel)),
            )
            .collect();
        let (removed, bytes, failed) = stale::remove(writes.iter().map(PathBuf::as_path));
        if removed > 0 {
            self.warn(format!(
                "removed {removed} temporary files ({bytes} bytes) left by an interrupted restore"
            ));
        }
        for f in failed {
            self.warn(format!(
                "cannot remove a temporary file left by an interrupted restore: {f}"
            ));
        }
    }

    /// The chunk lists of the files whose chunks are listed in list blobs,
    /// by item number, read before any content: a file whose list cannot
    /// be read is not restored, and says why.
    fn read_lists(&self, items: &[Item], dirs: &Dirs) -> HashMap<usize, Vec<BlobId>> {
        let mut lists = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            if let NodeKind::ListedFile { list, depth } = &item.node.kind
                && !dirs.under_failed(&item.rel)
            {
                match crate::repo::chunklist::expand(self.repo, list, *depth) {
                    Ok(ids) => {
                        lists.insert(i, ids);
                    }
                    Err(e) => self.error(format!("{}: {e}", display_rel(&item.rel))),
                }
            }
        }
        lists
    }

    /// Sorts the items outside failed directories by how they are written.
    /// Of several paths of one inode (hard links) the first is restored
    /// and the rest link to it; a listed file without its list in `lists`
    /// is left out.
    fn sort<'i>(
        &self,
        items: &'i [Item],
        lists: &'i HashMap<usize, Vec<BlobId>>,
        dirs: &Dirs,
    ) -> Sorted<'i> {
        let mut primaries: HashMap<(u64, u64), PathBuf> = HashMap::new();
        let mut sorted = Sorted {
            files: Vec::new(),
            links: Vec::new(),
            specials: Vec::new(),
        };
        for (i, item) in items.iter().enumerate() {
            if dirs.under_failed(&item.rel) {
                continue;
            }
            let content = match &item.node.kind {
                NodeKind::File { content } => content.as_slice(),
                NodeKind::ListedFile { .. } => match lists.get(&i) {
                    Some(ids) => ids.as_slice(),
                    None => continue,
                },
                NodeKind::Dir { .. } => continue,
                _ => {
                    sorted.specials.push(item);
                    continue;
                }
            };
            if item.node.links > 1 {
                let key = (item.node.device, item.node.inode);
                if let Some(p) = primaries.get(&key) {
                    sorted.links.push((item, p.clone()));
                    continue;
                }
                primaries.insert(key, item.rel.clone());
            }
            sorted.files.push((item, content));
        }
        sorted
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::ops::backup::BackupOptions;
    use crate::ops::backup::NoProgress;
    use crate::ops::restore::RestoreOptions;
    use crate::repo::InitOptions;
    use crate::repo::Repository;
    use crate::storage::faults::{Faults, Op};
    use crate::storage::{Backend, FileKind, MemoryBackend};

    #[test]
    fn a_remote_pack_is_read_in_one_request() {
        let src = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut files = Vec::new();
        // 40 files of 300 KiB of noise: 12 MiB in one data pack, which
        // local reads (at most MAX_READ each) fetch in 6 or more pieces.
        let mut x: u64 = 7;
        for i in 0..40 {
            let data: Vec<u8> = (0..300 << 10)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x.to_le_bytes()[0]
                })
                .collect();
            let name = format!("f{i:02}");
            std::fs::write(src.path().join(&name), &data).unwrap_or_else(|e| panic!("write: {e}"));
            files.push((name, data));
        }
        // A store in memory that says it is remote, as object storage
        // does, and counts the ranged reads of each pack.
        let backend = Arc::new(Faults::new(Arc::new(MemoryBackend::new())).remote());
        let repo = Repository::init(
            Arc::clone(&backend) as Arc<dyn Backend>,
            Some(b"pw"),
            &InitOptions::default(),
        )
        .unwrap_or_else(|e| panic!("init: {e}"));
        let done = crate::ops::backup::backup(
            &repo,
            &BackupOptions::new(vec![src.path().to_path_buf()]),
            &NoProgress,
        )
        .unwrap_or_else(|e| panic!("backup: {e}"));
        let mut data_packs = Vec::new();
        for (name, _) in repo.backend().list(FileKind::Index).unwrap_or_default() {
            let file = repo
                .read_index_file(&name)
                .unwrap_or_else(|e| panic!("index: {e}"));
            for p in file.packs {
                if p.entries
                    .iter()
                    .all(|e| e.kind == crate::format::pack::BlobKind::Data)
                {
                    data_packs.push(p.id.to_hex());
                }
            }
        }
        assert_eq!(data_packs.len(), 1, "one data pack");
        backend.reset_calls();
        let out = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let restored = super::restore(
            &repo,
            &done.snapshot,
            &RestoreOptions::new(out.path()),
            &(Arc::new(crate::ops::backup::special::PlainFiles)
                as Arc<dyn crate::ops::backup::special::SpecialFiles>),
            &NoProgress,
        )
        .unwrap_or_else(|e| panic!("restore: {e}"));
        assert!(restored.errors.is_empty(), "{:?}", restored.errors);
        let reads = data_packs
            .first()
            .map(|p| backend.calls_on(Op::ReadRange, FileKind::Pack, p));
        assert_eq!(reads, Some(1), "ranged reads of the data pack");
        let below = out.path().join(
            src.path()
                .strip_prefix("/")
                .unwrap_or_else(|e| panic!("absolute: {e}")),
        );
        for (name, data) in &files {
            let got = std::fs::read(below.join(name)).unwrap_or_else(|e| panic!("read: {e}"));
            assert!(&got == data, "{name} restored differently");
        }
    }
}
