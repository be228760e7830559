//! Verify: checks that every snapshot can be restored.
//!
//! Structure (always): every index file opens; every indexed pack exists,
//! has the indexed size and a header that agrees with the index; every
//! snapshot opens and every tree it reaches opens and is canonical; every
//! blob a tree names is indexed in a pack that is present. With `read_data`,
//! every pack (or a subset) is read whole, its name checked against its hash,
//! and every blob opened, decompressed and rehashed. Each problem names the
//! object and the pack file; the files that a damaged blob breaks are named
//! with the snapshot they belong to.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::Result;
use crate::format::index::IndexPack;
use crate::format::pack::PackEntry;
use crate::format::tree::NodeKind;
use crate::id::{BlobId, PackId, SnapshotId};
use crate::repo::Repository;
use crate::storage::FileKind;

/// What to check.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct VerifyOptions {
    /// Read and check every blob's content.
    pub read_data: bool,
    /// Read only subset `n` of `m` (1-based) of the packs.
    pub subset: Option<(u32, u32)>,
}

/// What verify found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Problems that make data unrestorable. Non-empty means failure.
    pub errors: Vec<String>,
    /// Things worth knowing that lose no data (unindexed packs left by an
    /// interrupted backup).
    pub warnings: Vec<String>,
    /// Snapshots checked.
    pub snapshots: u64,
    /// WAL segments (`cairn watch`) checked.
    pub segments: u64,
    /// Distinct trees checked.
    pub trees: u64,
    /// Packs whose data was read.
    pub packs_read: u64,
    /// Blobs whose data was read and rehashed.
    pub blobs_read: u64,
    /// Bytes read with `read_data`.
    pub bytes_read: u64,
    /// Temporary files in the repository (staged packs of running or
    /// killed backups), and their bytes.
    pub temporary_files: u64,
    /// See `temporary_files`.
    pub temporary_bytes: u64,
    /// Checked without a repository lock: none could be written (a full
    /// or read-only disk) or none was asked for (`--no-lock`). A prune
    /// running meanwhile would then show as missing data.
    pub without_lock: bool,
}

/// Whether `e`, from taking a lock, means the repository cannot be written
/// (full, read-only, not permitted), which verify can work without.
fn cannot_write(e: &crate::error::Error) -> bool {
    matches!(e, crate::error::Error::Backend { op, .. } if matches!(*op, "write" | "fsync" | "rename" | "mkdir"))
}

fn pack_file(id: &PackId) -> String {
    let hex = id.to_hex();
    format!("data/{}/{hex}", hex.get(..2).unwrap_or(""))
}

/// True when the pack belongs to subset `n` of `m`.
fn in_subset(id: &PackId, subset: Option<(u32, u32)>) -> bool {
    match subset {
        None => true,
        Some((n, m)) => {
            let head = u32::from_le_bytes([id.0[0], id.0[1], id.0[2], id.0[3]]);
            m > 0 && head % m == n.saturating_sub(1)
        }
    }
}

struct PackCheck {
    pack: PackId,
    errors: Vec<String>,
    bad_blobs: Vec<BlobId>,
    blobs: u64,
    bytes: u64,
}

/// Reads a pack front to back, one blob at a time (memory stays at one
/// blob, whatever the pack size), checking every indexed blob, the header,
/// and the hash of the whole file against its name.
fn read_pack(repo: &Repository, id: &PackId, size: u64, indexed: &[PackEntry]) -> PackCheck {
    let mut check = PackCheck {
        pack: *id,
        errors: Vec::new(),
        bad_blobs: Vec::new(),
        blobs: 0,
        bytes: 0,
    };
    let file = pack_file(id);
    let name = id.to_hex();
    // From object storage the pack comes in one request rather than one per
    // blob (a pack is tens of MiB at most); the checks below are the same.
    let whole = if repo.backend().is_remote() {
        repo.backend().read(FileKind::Pack, &name).ok()
    } else {
        None
    };
    let read = |offset: u64, len: u64| match &whole {
        Some(bytes) => usize::try_from(offset)
            .ok()
            .zip(usize::try_from(offset.saturating_add(len)).ok())
            .and_then(|(a, b)| bytes.get(a..b))
            .map(|b: &[u8]| b.to_vec())
            .ok_or_else(|| {
                crate::error::Error::corrupt(
                    format!("pack {id} ({file})"),
                    format!("it ends before byte {}", offset.saturating_add(len)),
                )
            }),
        None => repo
            .backend()
            .read_range(FileKind::Pack, &name, offset, len),
    };
    let mut hasher = blake3::Hasher::new();
    // The hash covers every byte once, in order; `pos` is how far it got.
    // It stays valid only while nothing fails to read.
    let mut pos = 0u64;
    let mut hash_ok = true;
    let mut entries: Vec<&PackEntry> = indexed.iter().collect();
    entries.sort_by_key(|e| e.offset);
    for e in entries {
        check.blobs += 1;
        let start = u64::from(e.offset);
        let end = start + u64::from(e.length);
        if end > size {
            check.errors.push(format!(
                "blob {} in pack {id} lies beyond the end of the pack, which is truncated to {size} bytes ({file})",
                e.id
            ));
            check.bad_blobs.push(e.id);
            continue;
        }
        if hash_ok && start > pos {
            match read(pos, start - pos) {
                Ok(gap) => {
                    hasher.update(&gap);
                    pos = start;
                }
                Err(_) => hash_ok = false,
            }
        }
        let result = read(start, u64::from(e.length)).and_then(|sealed| {
            check.bytes += sealed.len() as u64;
            if hash_ok && start == pos {
                hasher.update(&sealed);
                pos = end;
            }
            repo.open_blob(&e.id, id, e.compression, e.raw_length, &sealed)
                .map(|_| ())
        });
        if let Err(err) = result {
            check.errors.push(format!("{err} ({file})"));
            check.bad_blobs.push(e.id);
        }
    }
    // The rest: header and trailer (and anything the index does not list).
    while hash_ok && pos < size {
        let len = (size - pos).min(4 << 20);
        match read(pos, len) {
            Ok(bytes) => {
                hasher.update(&bytes);
                check.bytes += bytes.len() as u64;
                pos += len;
            }
            Err(_) => hash_ok = false,
        }
    }
    if !hash_ok || PackId(*hasher.finalize().as_bytes()) != *id {
        check.errors.push(format!(
            "pack {id} ({file}): content does not match its name (the file is damaged)"
        ));
    }
    if let Err(e) = repo.read_pack_header(id, size) {
        check.errors.push(format!("{e} ({file})"));
    }
    check
}

/// Checks the repository.
///
/// # Errors
/// Fails only when the repository cannot be listed at all; every problem
/// with its contents goes into the report.
pub fn verify(repo: &Repository, opts: &VerifyOptions) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let _held = lock_shared(repo, &mut report)?;
    repo.refresh_index()?;
    note_temporaries(repo, &mut report)?;
    let lost = check_packs(repo, opts, &mut report)?;
    check_snapshots(repo, &lost, &mut report)?;
    check_segments(repo, &lost, &mut report)?;
    Ok(report)
}

/// A shared lock: packs a prune deletes meanwhile would look like damage.
/// A repository that cannot be written (a full disk) is still checked,
/// read-only, saying so.
fn lock_shared(
    repo: &Repository,
    report: &mut VerifyReport,
) -> Result<Option<crate::repo::lock::Lock>> {
    Ok(match repo.lock(false, "verify") {
        Ok(held) => {
            report.without_lock = !held.is_held();
            Some(held)
        }
        Err(e) if cannot_write(&e) => {
            report.without_lock = true;
            report.warnings.push(format!(
                "checked without a lock, read-only, since none could be written ({e}): a prune running meanwhile would show as missing data"
            ));
            None
        }
        Err(e) => return Err(e),
    })
}

/// Temporary files in the repository: staged by running writers or left
/// by killed ones; counted and named, never damage.
fn note_temporaries(repo: &Repository, report: &mut VerifyReport) -> Result<()> {
    let temporaries = repo.backend().temporaries()?;
    if let Some(first) = temporaries.first() {
        report.temporary_files = temporaries.len() as u64;
        report.temporary_bytes = temporaries.iter().map(|t| t.size).sum();
        let stale = temporaries
            .iter()
            .filter(|t| t.idle >= crate::ops::prune::TEMPORARY_STALE_AFTER)
            .count();
        report.warnings.push(format!(
            "{} temporary files ({} bytes, for example {}) are in the repository: staged by running backups or left by killed ones; {stale} not written for {} min or more, which prune removes",
            report.temporary_files,
            report.temporary_bytes,
            first.path,
            crate::ops::prune::TEMPORARY_STALE_AFTER.as_secs() / 60
        ));
    }
    Ok(())
}

/// The packs: each indexed one present, of the size the index says, with
/// the header the index says; with `read_data`, every blob of the selected
/// packs read and checked. Returns the blobs a reader would lose, and why,
/// for naming the files they belong to.
fn check_packs(
    repo: &Repository,
    opts: &VerifyOptions,
    report: &mut VerifyReport,
) -> Result<HashMap<BlobId, String>> {
    for (id, e) in repo.index_errors() {
        report.errors.push(format!("index {id} (index/{id}): {e}"));
    }
    // Re-read the index files for their per-pack lists (the merged index
    // keeps one location per blob).
    let mut packs: BTreeMap<PackId, IndexPack> = BTreeMap::new();
    let mut names = repo.backend().list(FileKind::Index)?;
    names.sort();
    for (name, _) in names {
        if let Ok(file) = repo.read_index_file(&name) {
            for p in file.packs {
                packs.entry(p.id).or_insert(p);
            }
        }
    }
    let present: HashMap<PackId, u64> = repo
        .backend()
        .list(FileKind::Pack)?
        .into_iter()
        .filter_map(|(n, s)| Some((n.parse().ok()?, s)))
        .collect();

    // Blobs that cannot be read, and why (for naming affected files).
    let mut lost: HashMap<BlobId, String> = HashMap::new();
    let structural: Vec<(PackId, Vec<String>)> = packs
        .par_iter()
        .map(|(id, p)| {
            let mut errs = Vec::new();
            let file = pack_file(id);
            match present.get(id) {
                None => errs.push(format!(
                    "pack {id} ({file}) is missing: {} blobs in it are lost",
                    p.entries.len()
                )),
                Some(&size) if size != p.size => errs.push(format!(
                    "pack {id} ({file}) is {size} bytes but the index says {} (truncated or damaged)",
                    p.size
                )),
                Some(&size) => match repo.read_pack_header(id, size) {
                    Ok(entries) if entries == p.entries => {}
                    Ok(_) => errs.push(format!(
                        "pack {id} ({file}): its header does not agree with the index"
                    )),
                    Err(e) => errs.push(format!("{e} ({file})")),
                },
            }
            (*id, errs)
        })
        .collect();
    // A blob is lost when the copy reads would use lies in a bad pack;
    // another healthy copy elsewhere does not help a reader that is not
    // directed to it.
    let read_from = |blob: &BlobId| {
        let index = repo.index();
        index.get(blob).and_then(|loc| index.pack_id(loc.pack))
    };
    for (id, errs) in structural {
        if !errs.is_empty() {
            if let Some(p) = packs.get(&id) {
                for e in p.entries.iter().filter(|e| read_from(&e.id) == Some(id)) {
                    lost.insert(e.id, format!("pack {id} is damaged or missing"));
                }
            }
            report.errors.extend(errs);
        }
    }
    for (id, _) in present.iter().filter(|(id, _)| !packs.contains_key(*id)) {
        report.warnings.push(format!(
            "pack {id} ({}) is in no index: left by an interrupted backup, or its index was lost; its blobs are used only when no index has them",
            pack_file(id)
        ));
    }

    if opts.read_data {
        let selected: Vec<&IndexPack> = packs
            .values()
            .filter(|p| present.contains_key(&p.id) && in_subset(&p.id, opts.subset))
            .collect();
        // More workers than cores, as for backup and restore, so a core is
        // not idle while a worker waits for a read; bounded by the whole
        // packs they hold when reading from object storage.
        let pack_size = repo.config().pack_target_size;
        let checks: Vec<PackCheck> = crate::repo::in_pool_holding_packs(pack_size, || {
            selected
                .par_iter()
                .map(|p| {
                    read_pack(
                        repo,
                        &p.id,
                        present.get(&p.id).copied().unwrap_or(0),
                        &p.entries,
                    )
                })
                .collect()
        });
        report.packs_read = checks.len() as u64;
        for c in checks {
            report.blobs_read += c.blobs;
            report.bytes_read += c.bytes;
            report.errors.extend(c.errors);
            for b in c
                .bad_blobs
                .into_iter()
                .filter(|b| read_from(b) == Some(c.pack))
            {
                lost.insert(b, "its data is damaged".into());
            }
        }
    }

    Ok(lost)
}

/// The audit log, the snapshots it says must exist, and every snapshot's
/// trees, naming the files that lost data.
fn check_snapshots(
    repo: &Repository,
    lost: &HashMap<BlobId, String>,
    report: &mut VerifyReport,
) -> Result<()> {
    // The audit log: damaged events and events removed from its middle.
    let log = crate::repo::audit::read_log(repo, None)?;
    report.errors.extend(log.problems.iter().cloned());

    // Walk every snapshot; name the files that lost data.
    let mut seen_trees: HashSet<BlobId> = HashSet::new();
    let snapshots = repo.snapshots()?;
    // Snapshots the audit log says were saved and not forgotten must be
    // there (a deleted snapshot file leaves no other trace).
    let listed: HashSet<SnapshotId> = snapshots.iter().map(|(id, _)| *id).collect();
    let (missing, maybe_missing) = crate::repo::audit::missing_snapshots(&log, &listed);
    report.errors.extend(missing);
    report.warnings.extend(maybe_missing);
    for (sid, snap) in snapshots {
        let snap = match snap {
            Ok(s) => s,
            Err(e) => {
                report
                    .errors
                    .push(format!("snapshot {sid} (snapshots/{sid}): {e}"));
                continue;
            }
        };
        report.snapshots += 1;
        walk(
            repo,
            &sid,
            &snap.tree,
            Path::new("/"),
            &mut seen_trees,
            lost,
            report,
        );
    }
    report.trees = seen_trees.len() as u64;
    Ok(())
}

/// Checks the WAL segments: each readable, each data blob indexed and
/// not found damaged, each chain linked from its base snapshot.
fn check_segments(
    repo: &Repository,
    lost: &HashMap<BlobId, String>,
    report: &mut VerifyReport,
) -> Result<()> {
    let (segments, problems) = crate::repo::segments::read_segments(repo)?;
    report.errors.extend(problems);
    report.segments = segments.len() as u64;
    {
        let index = repo.index();
        for (id, s) in &segments {
            for blob in &s.data {
                if let Some(why) = lost.get(blob) {
                    report.errors.push(format!(
                        "WAL segment {id} (wal/{id}): data blob {blob}: {why}"
                    ));
                } else if !index.contains(blob) {
                    report.errors.push(format!(
                        "WAL segment {id} (wal/{id}): data blob {blob} is in no index"
                    ));
                }
            }
            if let Err(bytes) = s.data_fits(&index) {
                report.errors.push(format!(
                    "WAL segment {id} (wal/{id}): its data holds {bytes} bytes, its {} pages {}",
                    s.pages(),
                    s.pages().saturating_mul(u64::from(s.page_size))
                ));
            }
        }
    }
    let timelines = crate::repo::segments::link_timelines(repo, segments, None, None)?;
    for t in &timelines {
        for c in &t.chains {
            if let Some(p) = &c.problem {
                report.errors.push(format!(
                    "WAL chain of {} on {} (base {}): {p}",
                    String::from_utf8_lossy(&t.db),
                    t.host,
                    c.base.short()
                ));
            }
        }
    }
    Ok(())
}

fn walk(
    repo: &Repository,
    sid: &SnapshotId,
    tree_id: &BlobId,
    path: &Path,
    seen: &mut HashSet<BlobId>,
    lost: &HashMap<BlobId, String>,
    report: &mut VerifyReport,
) {
    if !seen.insert(*tree_id) {
        return;
    }
    if !repo.index().contains(tree_id) {
        report.errors.push(format!(
            "snapshot {}: tree {tree_id} of directory {} is in no index",
            sid.short(),
            path.display()
        ));
    }
    let tree = match repo.read_tree(tree_id) {
        Ok(t) => t,
        Err(e) => {
            report.errors.push(format!(
                "snapshot {}: directory {} cannot be read: {e}",
                sid.short(),
                path.display()
            ));
            return;
        }
    };
    // Chunk lists are read before the index is held: reading takes it too.
    let mut expanded: HashMap<usize, Result<Vec<BlobId>>> = HashMap::new();
    for (i, node) in tree.nodes.iter().enumerate() {
        if let NodeKind::ListedFile { list, depth } = &node.kind {
            expanded.insert(i, crate::repo::chunklist::expand(repo, list, *depth));
        }
    }
    let index = repo.index();
    let mut subdirs: Vec<(PathBuf, BlobId)> = Vec::new();
    for (i, node) in tree.nodes.iter().enumerate() {
        let child = path.join(std::ffi::OsStr::from_bytes(&node.name));
        let content = match &node.kind {
            NodeKind::File { content } => Some(content.as_slice()),
            NodeKind::ListedFile { .. } => match expanded.get(&i) {
                Some(Ok(ids)) => Some(ids.as_slice()),
                Some(Err(e)) => {
                    report.errors.push(format!(
                        "snapshot {}: file {} is damaged: its chunk list cannot be read: {e}",
                        sid.short(),
                        child.display()
                    ));
                    None
                }
                None => None,
            },
            _ => None,
        };
        match &node.kind {
            NodeKind::File { .. } | NodeKind::ListedFile { .. } => {
                let content = content.unwrap_or_default();
                let bad: Vec<(&BlobId, String)> = content
                    .iter()
                    .filter_map(|id| {
                        if let Some(why) = lost.get(id) {
                            Some((id, why.clone()))
                        } else if !index.contains(id) {
                            Some((id, "it is in no index".to_owned()))
                        } else {
                            None
                        }
                    })
                    .collect();
                if let Some((first, why)) = bad.first() {
                    report.errors.push(format!(
                        "snapshot {}: file {} is damaged: {} of its {} blobs unreadable (blob {first}: {why})",
                        sid.short(),
                        child.display(),
                        bad.len(),
                        content.len()
                    ));
                }
            }
            NodeKind::Dir { subtree } => subdirs.push((child, *subtree)),
            _ => {}
        }
    }
    drop(index);
    for (child, sub) in subdirs {
        walk(repo, sid, &sub, &child, seen, lost, report);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::error::Error;
    use crate::ops::backup::BackupOptions;
    use crate::ops::backup::NoProgress;
    use crate::repo::InitOptions;
    use crate::repo::Repository;
    use crate::storage::faults::Faults;
    use crate::storage::{Backend, MemoryBackend};

    #[test]
    fn verify_checks_a_repository_on_a_full_disk_without_a_lock_and_says_so() {
        let src = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        std::fs::write(src.path().join("f"), b"data").unwrap_or_else(|e| panic!("write: {e}"));
        let inner = Arc::new(MemoryBackend::new());
        let repo = Repository::init(
            Arc::clone(&inner) as Arc<dyn Backend>,
            Some(b"pw"),
            &InitOptions::default(),
        )
        .unwrap_or_else(|e| panic!("init: {e}"));
        crate::ops::backup::backup(
            &repo,
            &BackupOptions::new(vec![src.path().to_path_buf()]),
            &NoProgress,
        )
        .unwrap_or_else(|e| panic!("backup: {e}"));
        let good = super::verify(&repo, &super::VerifyOptions::default())
            .unwrap_or_else(|e| panic!("verify: {e}"));
        assert!(!good.without_lock);

        // A store whose disk is full: nothing new can be written to it.
        let full = Faults::new(inner).fail_writes(None, std::io::ErrorKind::StorageFull);
        let on_full_disk = Repository::open(Arc::new(full), &mut || Ok(b"pw".to_vec()))
            .unwrap_or_else(|e| panic!("open: {e}"));
        let opts = super::VerifyOptions {
            read_data: true,
            ..super::VerifyOptions::default()
        };
        let report = super::verify(&on_full_disk, &opts).unwrap_or_else(|e| panic!("verify: {e}"));
        assert!(report.without_lock);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(report.snapshots, 1);
        assert!(report.blobs_read > 0);
        assert!(
            report.warnings.iter().any(|w| w.contains("without a lock")),
            "{:?}",
            report.warnings
        );
        // Other failures to take the lock still stop it.
        let busy = repo
            .lock(true, "prune")
            .unwrap_or_else(|e| panic!("lock: {e}"));
        let e =
            super::verify(&repo, &super::VerifyOptions::default()).expect_err("locked by a prune");
        assert!(matches!(e, Error::Locked { .. }), "{e}");
        drop(busy);
    }
}
