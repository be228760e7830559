//! Repository statistics from the index and snapshot summaries.

use serde::Serialize;

use crate::error::Result;
use crate::format::pack::BlobKind;
use crate::repo::Repository;
use crate::storage::FileKind;

/// Sizes and counts of a repository.
#[derive(Debug, Clone, Default, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct RepoStats {
    /// Snapshots.
    pub snapshots: u64,
    /// Pack files.
    pub packs: u64,
    /// Bytes in pack files.
    pub pack_bytes: u64,
    /// Bytes in index files.
    pub index_bytes: u64,
    /// Distinct data blobs.
    pub data_blobs: u64,
    /// Distinct tree blobs.
    pub tree_blobs: u64,
    /// Plaintext bytes of all distinct data blobs.
    pub unique_data_bytes: u64,
    /// Sum over snapshots of the size of the files they hold.
    pub total_snapshot_bytes: u64,
    /// `total_snapshot_bytes / pack_bytes`: what deduplication and
    /// compression save together.
    pub space_saving_ratio: f64,
    /// Temporary files in the repository (staged packs of running or
    /// killed backups; prune removes those idle for
    /// [`crate::ops::prune::TEMPORARY_STALE_AFTER`]).
    pub temporary_files: u64,
    /// Their bytes.
    pub temporary_bytes: u64,
    /// Of them, those idle long enough for prune to remove.
    pub stale_temporary_files: u64,
}

/// Computes [`RepoStats`].
///
/// # Errors
/// Fails when the repository cannot be listed.
pub fn stats(repo: &Repository) -> Result<RepoStats> {
    let mut s = RepoStats::default();
    for (_, size) in repo.backend().list(FileKind::Pack)? {
        s.packs += 1;
        s.pack_bytes += size;
    }
    s.index_bytes = repo
        .backend()
        .list(FileKind::Index)?
        .iter()
        .map(|(_, n)| n)
        .sum();
    for (_, loc) in repo.index().blobs() {
        match loc.kind {
            BlobKind::Data => {
                s.data_blobs += 1;
                s.unique_data_bytes += u64::from(loc.raw_length);
            }
            BlobKind::Tree => s.tree_blobs += 1,
        }
    }
    for t in repo.backend().temporaries()? {
        s.temporary_files += 1;
        s.temporary_bytes += t.size;
        if t.idle >= crate::ops::prune::TEMPORARY_STALE_AFTER {
            s.stale_temporary_files += 1;
        }
    }
    for (_, snap) in repo.snapshots()? {
        if let Ok(snap) = snap {
            s.snapshots += 1;
            s.total_snapshot_bytes += snap.summary.total_size;
        }
    }
    #[expect(clippy::cast_precision_loss, reason = "a ratio for display")]
    if s.pack_bytes > 0 {
        s.space_saving_ratio = s.total_snapshot_bytes as f64 / s.pack_bytes as f64;
    }
    Ok(s)
}
