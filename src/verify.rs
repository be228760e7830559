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

use crate::Result;
use crate::backend::FileKind;
use crate::id::{BlobId, PackId, SnapshotId};
use crate::index::IndexPack;
use crate::pack::{self, PackEntry};
use crate::repo::Repository;
use crate::tree::NodeKind;

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
    /// Distinct trees checked.
    pub trees: u64,
    /// Packs whose data was read.
    pub packs_read: u64,
    /// Blobs whose data was read and rehashed.
    pub blobs_read: u64,
    /// Bytes read with `read_data`.
    pub bytes_read: u64,
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

fn read_pack(repo: &Repository, id: &PackId, indexed: &[PackEntry]) -> PackCheck {
    let mut check = PackCheck {
        pack: *id,
        errors: Vec::new(),
        bad_blobs: Vec::new(),
        blobs: 0,
        bytes: 0,
    };
    let file = pack_file(id);
    let bytes = match repo.backend().read(FileKind::Pack, &id.to_hex()) {
        Ok(b) => b,
        Err(e) => {
            check
                .errors
                .push(format!("pack {id} ({file}): cannot be read: {e}"));
            check.bad_blobs.extend(indexed.iter().map(|e| e.id));
            return check;
        }
    };
    check.bytes = bytes.len() as u64;
    if PackId::hash_of(&bytes) != *id {
        check.errors.push(format!(
            "pack {id} ({file}): content does not match its name (the file is damaged)"
        ));
    }
    // Check each blob where the index says it is, so that one damaged blob
    // does not hide the others, even when the header itself is damaged.
    for e in indexed {
        let start = e.offset as usize;
        let sealed = bytes.get(start..start + e.length as usize);
        let result = match sealed {
            Some(s) => repo
                .open_blob(&e.id, id, e.compression, e.raw_length, s)
                .map(|_| ()),
            None => Err(crate::Error::corrupt(
                format!("blob {} in pack {id}", e.id),
                "lies beyond the end of the pack (truncated)",
            )),
        };
        check.blobs += 1;
        if let Err(err) = result {
            check.errors.push(format!("{err} ({file})"));
            check.bad_blobs.push(e.id);
        }
    }
    if let Err(e) = pack::read_header(repo.crypto(), &bytes) {
        check.errors.push(format!("pack {id} ({file}): {e}"));
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
        let checks: Vec<PackCheck> = selected
            .par_iter()
            .map(|p| read_pack(repo, &p.id, &p.entries))
            .collect();
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

    // Walk every snapshot; name the files that lost data.
    let mut seen_trees: HashSet<BlobId> = HashSet::new();
    let snapshots = repo.snapshots()?;
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
            &lost,
            &mut report,
        );
    }
    report.trees = seen_trees.len() as u64;
    Ok(report)
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
    let index = repo.index();
    let mut subdirs: Vec<(PathBuf, BlobId)> = Vec::new();
    for node in &tree.nodes {
        let child = path.join(std::ffi::OsStr::from_bytes(&node.name));
        match &node.kind {
            NodeKind::File { content } => {
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
