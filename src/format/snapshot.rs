//! Snapshots: the small record that names a root tree and says when, where
//! and from what it was taken.
//!
//! ```text
//! "CAIRNSNP" ‖ sealed(Domain::Snapshot, Snapshot)
//! ```

use serde::{Deserialize, Serialize};

use crate::format::codec;
use crate::format::crypto::{Crypto, Domain};
use crate::id::{BlobId, SnapshotId};

/// Magic at the start of every snapshot file.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"CAIRNSNP";

/// Counts recorded when a snapshot is taken.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Summary {
    /// Files not in the parent snapshot.
    pub files_new: u64,
    /// Files in the parent whose content was read again.
    pub files_changed: u64,
    /// Files reused from the parent without reading.
    pub files_unchanged: u64,
    /// Directories.
    pub dirs: u64,
    /// Symlinks, FIFOs, devices and sockets.
    pub others: u64,
    /// Bytes read from source files.
    pub bytes_read: u64,
    /// Total size of all files in the snapshot.
    pub total_size: u64,
    /// Blobs added to the repository.
    pub blobs_added: u64,
    /// Plaintext bytes of the blobs added.
    pub bytes_added: u64,
    /// Bytes written to the repository (packs, index).
    pub bytes_stored: u64,
    /// Wall time of the backup in milliseconds.
    pub duration_ms: u64,
}

/// One snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Seconds since the epoch (UTC).
    pub time: i64,
    /// Nanoseconds.
    pub time_nsec: u32,
    /// Host name.
    pub hostname: String,
    /// User name.
    pub username: String,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// The absolute paths backed up, raw bytes.
    pub paths: Vec<Vec<u8>>,
    /// Tags.
    pub tags: Vec<String>,
    /// Exclude patterns in force.
    pub excludes: Vec<String>,
    /// The snapshot used for change detection.
    pub parent: Option<SnapshotId>,
    /// The root tree.
    pub tree: BlobId,
    /// Counts.
    pub summary: Summary,
    /// cairn version that wrote it.
    pub program_version: String,
    /// The application this is a snapshot of (`cairn snap`, `cairn run`),
    /// or `None` for a plain backup.
    pub app: Option<AppInfo>,
    /// The SQLite databases captured as consistent images, with their
    /// per-table row counts, sorted by path.
    pub databases: Vec<DatabaseInfo>,
    /// For a snapshot made by `cairn copy`: the snapshot it is a copy of,
    /// in the repository where that was first taken (a copy of a copy
    /// names the first), so that a later copy recognises it. `None` for a
    /// snapshot taken here.
    pub original: Option<SnapshotId>,
}

/// What an application snapshot records about the application.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppInfo {
    /// The application's name (from its `cairn.toml`).
    pub name: String,
    /// The application's root directory, absolute, raw bytes.
    pub root: Vec<u8>,
    /// The components stored, sorted by name.
    pub components: Vec<ComponentInfo>,
    /// The git state of the root, when it is a git work tree.
    pub git: Option<GitInfo>,
}

/// One component of an application snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentInfo {
    /// Its name in `cairn.toml` (`db`, `code`, `config`, ...).
    pub name: String,
    /// What it is: `sqlite`, `files`.
    pub kind: String,
    /// Its paths, absolute, raw bytes, sorted.
    pub paths: Vec<Vec<u8>>,
}

/// The git state of an application's root when it was snapshotted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct GitInfo {
    /// The checked-out branch, `None` on a detached HEAD.
    pub branch: Option<String>,
    /// The full commit id of HEAD (empty before the first commit).
    pub commit: String,
    /// Whether the work tree had uncommitted changes (untracked files
    /// included).
    pub dirty: bool,
}

/// A SQLite database captured by a backup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseInfo {
    /// Its absolute path, raw bytes, as in the snapshot's tree.
    pub path: Vec<u8>,
    /// Its page size in bytes.
    pub page_size: u32,
    /// Row counts of its tables (`sqlite_schema` type `table`, internal
    /// `sqlite_` tables left out), sorted by name.
    pub tables: Vec<TableRows>,
}

/// The number of rows of one table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct TableRows {
    /// Table name.
    pub name: String,
    /// Rows.
    pub rows: u64,
}

impl Snapshot {
    /// The paths as lossy UTF-8, for display.
    #[must_use]
    pub fn display_paths(&self) -> Vec<String> {
        self.paths
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    }

    /// The snapshot time.
    #[must_use]
    pub fn timestamp(&self) -> jiff::Timestamp {
        jiff::Timestamp::new(self.time, i32::try_from(self.time_nsec).unwrap_or(0))
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    /// Whether this is a safety snapshot: the state an in-place restore
    /// was about to throw away (tag [`SAFETY_TAG`]). It is kept to undo
    /// that restore, but it is not a backup anyone chose to take: `latest`,
    /// `--at`, freshness and the retention rules' buckets pass over it.
    #[must_use]
    pub fn is_safety(&self) -> bool {
        self.tags.iter().any(|t| t == SAFETY_TAG)
    }
}

/// Checks tags as every door that sets them must: not empty, no comma
/// (lists of tags are written `a,b`), no control characters (they would
/// reach terminals that list snapshots).
///
/// # Errors
/// [`crate::error::Error::Invalid`] naming the first bad tag.
pub fn check_tags(tags: &[String]) -> crate::error::Result<()> {
    for t in tags {
        if t.is_empty() || t.contains(',') || t.chars().any(char::is_control) {
            return Err(crate::error::Error::invalid(format!(
                "tag '{}': a tag is not empty and has no comma or control character",
                t.escape_default()
            )));
        }
    }
    Ok(())
}

/// `check_tags` for tags a user gives (options, the API, profile jobs):
/// [`SAFETY_TAG`] is cairn's own, since `latest`, freshness and retention
/// treat its snapshots apart.
///
/// # Errors
/// As `check_tags`; [`crate::error::Error::Invalid`] for the safety tag.
pub fn check_user_tags(tags: &[String]) -> crate::error::Result<()> {
    check_tags(tags)?;
    if tags.iter().any(|t| t == SAFETY_TAG) {
        return Err(crate::error::Error::invalid(format!(
            "tag '{SAFETY_TAG}' is cairn's own, for the state a restore replaced: choose another"
        )));
    }
    Ok(())
}

/// The tag of the snapshot taken before a restore replaces live data.
pub const SAFETY_TAG: &str = "safety";

/// The tag `cairn run` gives the snapshot it takes before the command:
/// the point a failed migration rolls back to.
pub const PRE_TAG: &str = "pre";

/// For each group of snapshots with the same host and paths, the newest
/// one taken at or before `at` (groups with none are left out), oldest
/// first: what the repository held for each source at that time. Safety
/// snapshots ([`Snapshot::is_safety`]) are passed over.
#[must_use]
pub fn newest_at(
    snapshots: &[(SnapshotId, Snapshot)],
    at: jiff::Timestamp,
) -> Vec<(SnapshotId, &Snapshot)> {
    /// Host and sorted paths.
    type Source<'s> = (&'s str, Vec<&'s [u8]>);
    let mut best: std::collections::BTreeMap<Source<'_>, (SnapshotId, &Snapshot)> =
        std::collections::BTreeMap::new();
    for (id, s) in snapshots {
        if s.timestamp() > at || s.is_safety() {
            continue;
        }
        let mut paths: Vec<&[u8]> = s.paths.iter().map(Vec::as_slice).collect();
        paths.sort_unstable();
        let slot = best.entry((s.hostname.as_str(), paths)).or_insert((*id, s));
        if (s.timestamp(), *id) > (slot.1.timestamp(), slot.0) {
            *slot = (*id, s);
        }
    }
    let mut chosen: Vec<_> = best.into_values().collect();
    chosen.sort_by_key(|(id, s)| (s.timestamp(), *id));
    chosen
}

/// Encodes a snapshot file.
///
/// # Errors
/// Fails only when sealing fails.
pub fn encode_file(
    crypto: &Crypto,
    snap: &Snapshot,
) -> crate::error::Result<(SnapshotId, Vec<u8>)> {
    let mut out = SNAPSHOT_MAGIC.to_vec();
    out.extend_from_slice(&crypto.seal(Domain::Snapshot, &codec::encode(snap))?);
    Ok((SnapshotId::hash_of(&out), out))
}

/// Decodes a snapshot file.
///
/// # Errors
/// A reason string when the magic, tag or encoding is wrong.
pub fn decode_file(crypto: &Crypto, bytes: &[u8]) -> Result<Snapshot, String> {
    let sealed = bytes
        .strip_prefix(SNAPSHOT_MAGIC.as_slice())
        .ok_or("not a cairn snapshot file (bad magic)")?;
    let plain = crypto
        .open(Domain::Snapshot, sealed)
        .map_err(|e| e.to_string())?;
    codec::decode(&plain).map_err(|e| e.to_string())
}
