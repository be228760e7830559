//! Snapshot files: listing, reading and writing them, and resolving a
//! reference (`latest`, an id prefix) to one.

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::format::snapshot::{self, Snapshot};
use crate::id::SnapshotId;
use crate::repo::Repository;
use crate::storage::FileKind;
use crate::sync::lock;

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

impl Repository {
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
}
