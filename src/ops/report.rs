//! What the operations report, in the one shape both doors show: the
//! CLI's `--json` and the HTTP API serialize these same types, so the two
//! agree on every field name by construction (a test in
//! `tests/integration/serve.rs` compares them for backup, restore, prune
//! and verify).
//!
//! A report is built from an operation's outcome and the request it
//! answered; it holds only data, nothing a terminal or HTTP adds. Byte
//! strings (paths in a snapshot) are shown as UTF-8, lossily, and times as
//! RFC 3339.
//!
//! The status and audit log views ([`StatusView`], [`LogView`]) replaced
//! `json!` objects whose keys came out sorted; both doors render them
//! through a `serde_json::Value`, whose keys sort too, so their output did
//! not change by a byte.

use std::path::PathBuf;

use serde::Serialize;

use crate::format::snapshot::{GitInfo, Snapshot, Summary, TableRows};
use crate::id::{AuditId, BlobId, SnapshotId};
use crate::ops::backup::BackupOutcome;
use crate::ops::prune::PruneReport;
use crate::ops::restore::RestoreOutcome;
use crate::ops::status::{RepoStatus, SourceStatus};
use crate::ops::verify::{VerifyOptions, VerifyReport};
use crate::repo::audit::{AuditEvent, AuditLog};

fn lossy(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

/// A snapshot as `cairn snapshots --json` and `GET /api/snapshots` show it.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct SnapshotView {
    /// Its id.
    pub id: SnapshotId,
    /// The first 8 hexadecimal digits of its id.
    pub short_id: String,
    /// When it was taken (RFC 3339).
    pub time: String,
    /// The host that took it.
    pub hostname: String,
    /// The user who took it.
    pub username: String,
    /// The paths it holds.
    pub paths: Vec<String>,
    /// Its tags.
    pub tags: Vec<String>,
    /// The snapshot it was compared with to find unchanged files.
    pub parent: Option<SnapshotId>,
    /// Its root tree.
    pub tree: BlobId,
    /// What the backup counted.
    pub summary: Summary,
    /// The cairn that took it.
    pub program_version: String,
    /// For an application snapshot: the application.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<AppView>,
    /// The SQLite databases captured, with their tables' row counts.
    pub databases: Vec<DatabaseView>,
    /// For a copy (`cairn copy`): the snapshot it copies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original: Option<SnapshotId>,
}

/// The application of an application snapshot.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct AppView {
    /// The application's name.
    pub name: String,
    /// Its root directory.
    pub root: String,
    /// The components this snapshot holds.
    pub components: Vec<ComponentView>,
    /// The git state of the root, where it is a repository.
    pub git: Option<GitInfo>,
}

/// One component of an application snapshot.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct ComponentView {
    /// The component's name.
    pub name: String,
    /// Its kind: `code`, `config`, `db`, `sqlite`, `dump`.
    pub kind: String,
    /// Its paths.
    pub paths: Vec<String>,
}

/// A SQLite database captured in a snapshot.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct DatabaseView {
    /// Its path in the snapshot.
    pub path: String,
    /// Its page size.
    pub page_size: u32,
    /// Its tables' row counts, taken with the data.
    pub tables: Vec<TableRows>,
}

impl DatabaseView {
    /// The view of one captured database.
    #[must_use]
    pub fn new(d: &crate::format::snapshot::DatabaseInfo) -> Self {
        Self {
            path: lossy(&d.path),
            page_size: d.page_size,
            tables: d.tables.clone(),
        }
    }
}

impl SnapshotView {
    /// The view of snapshot `id`.
    #[must_use]
    pub fn new(id: SnapshotId, s: &Snapshot) -> Self {
        Self {
            id,
            short_id: id.short(),
            time: s.timestamp().to_string(),
            hostname: s.hostname.clone(),
            username: s.username.clone(),
            paths: s.display_paths(),
            tags: s.tags.clone(),
            parent: s.parent,
            tree: s.tree,
            summary: s.summary.clone(),
            program_version: s.program_version.clone(),
            app: s.app.as_ref().map(|a| AppView {
                name: a.name.clone(),
                root: lossy(&a.root),
                components: a
                    .components
                    .iter()
                    .map(|c| ComponentView {
                        name: c.name.clone(),
                        kind: c.kind.clone(),
                        paths: c.paths.iter().map(|p| lossy(p)).collect(),
                    })
                    .collect(),
                git: a.git.clone(),
            }),
            databases: s.databases.iter().map(DatabaseView::new).collect(),
            original: s.original,
        }
    }
}

/// A snapshot a backup (`backup`, `snap`, `POST /api/snapshots`) saved.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct BackupReport {
    /// The snapshot saved.
    #[serde(flatten)]
    pub snapshot: SnapshotView,
    /// Directories whose entries came from the files cache unread.
    pub dirs_from_cache: u64,
    /// Files that could not be stored as asked (named), for example a
    /// database stored as raw bytes.
    pub warnings: Vec<String>,
}

impl BackupOutcome {
    /// What both doors report of this backup.
    #[must_use]
    pub fn report(&self) -> BackupReport {
        BackupReport {
            snapshot: SnapshotView::new(self.id, &self.snapshot),
            dirs_from_cache: self.dirs_reused,
            warnings: self.warnings.clone(),
        }
    }
}

/// A restore into a directory (`restore --target`, `POST /api/restore`
/// with a target).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct RestoreReport {
    /// The snapshot restored.
    pub snapshot: SnapshotId,
    /// Where to.
    #[cfg_attr(feature = "server", schema(value_type = String))]
    pub target: PathBuf,
    /// The component restored, for an application's component.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// Regular files restored.
    pub files: u64,
    /// Directories restored.
    pub dirs: u64,
    /// Other entries restored (links, devices, FIFOs).
    pub others: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Whether every file was restored and the index was whole.
    pub complete: bool,
    /// Data was found only by reading pack headers: the index is damaged.
    pub index_damaged: bool,
    /// The safety snapshot of the live files replaced, if any were.
    pub safety_snapshot: Option<SnapshotId>,
    /// The command that puts the replaced files back.
    pub undo: Option<String>,
    /// Files that could not be restored, each named with the reason.
    pub errors: Vec<String>,
    /// Things restored otherwise than asked (ownership, attributes).
    pub warnings: Vec<String>,
}

impl RestoreOutcome {
    /// What both doors report of restoring `snapshot` into `target`;
    /// `undo` is the command that undoes it, written for the door's user.
    #[must_use]
    pub fn report(
        &self,
        snapshot: SnapshotId,
        target: PathBuf,
        component: Option<String>,
        undo: Option<String>,
    ) -> RestoreReport {
        RestoreReport {
            snapshot,
            target,
            component,
            files: self.files,
            dirs: self.dirs,
            others: self.others,
            bytes: self.bytes,
            complete: self.errors.is_empty() && !self.index_damaged,
            index_damaged: self.index_damaged,
            safety_snapshot: self.undo.as_ref().map(|u| u.snapshot),
            undo,
            errors: self.errors.clone(),
            warnings: self.warnings.clone(),
        }
    }
}

/// What a prune did, or in a dry run would do.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct PruneSummary {
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// The counts.
    pub report: PruneReport,
    /// Bytes freed (or that would be).
    pub bytes_freed: u64,
}

impl PruneReport {
    /// What both doors report of this prune.
    #[must_use]
    pub fn summary(&self, dry_run: bool) -> PruneSummary {
        PruneSummary {
            dry_run,
            report: self.clone(),
            bytes_freed: self.bytes_freed(),
        }
    }
}

/// What a verify found.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct VerifySummary {
    /// No damage found.
    pub ok: bool,
    /// Whether pack contents were read, not only their presence checked.
    pub read_data: bool,
    /// The subset of packs read, `N/M`.
    pub subset: Option<String>,
    /// Damage found, each naming the object and file.
    pub errors: Vec<String>,
    /// Things worth knowing that are not damage.
    pub warnings: Vec<String>,
    /// Snapshots checked.
    pub snapshots: u64,
    /// Trees checked.
    pub trees: u64,
    /// Packs read.
    pub packs_read: u64,
    /// Blobs read and checked.
    pub blobs_read: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Temporary files interrupted writers left.
    pub temporary_files: u64,
    /// Their size.
    pub temporary_bytes: u64,
    /// Verify ran without taking a lock (the repository could not be
    /// written, for example a full disk).
    pub without_lock: bool,
}

impl VerifyReport {
    /// What both doors report of a verify run with `opts`.
    #[must_use]
    pub fn summary(&self, opts: &VerifyOptions) -> VerifySummary {
        VerifySummary {
            ok: self.errors.is_empty(),
            read_data: opts.read_data,
            subset: opts.subset.map(|(n, m)| format!("{n}/{m}")),
            errors: self.errors.clone(),
            warnings: self.warnings.clone(),
            snapshots: self.snapshots,
            trees: self.trees,
            packs_read: self.packs_read,
            blobs_read: self.blobs_read,
            bytes_read: self.bytes_read,
            temporary_files: self.temporary_files,
            temporary_bytes: self.temporary_bytes,
            without_lock: self.without_lock,
        }
    }
}

/// The freshness of every source (`GET /api/status`; `cairn status --json`
/// shows the same sources, each with whether it is stale by `--max-age`).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct StatusView {
    /// Every source, sorted by application, component and host.
    pub sources: Vec<SourceView>,
    /// Snapshots in the repository.
    pub snapshots: u64,
    /// Bytes of packs, index files and snapshot files.
    pub repo_bytes: u64,
    /// Snapshots and audit events that could not be read, each with the
    /// reason.
    pub problems: Vec<String>,
}

impl StatusView {
    /// The view of `status` at `now` (which ages are counted to).
    #[must_use]
    pub fn new(status: &RepoStatus, now: jiff::Timestamp) -> Self {
        Self {
            sources: status
                .sources
                .iter()
                .map(|s| SourceView::new(s, now))
                .collect(),
            snapshots: status.snapshots,
            repo_bytes: status.repo_bytes,
            problems: status.problems.clone(),
        }
    }
}

/// One source: an application's component on a host, or a plain backup's
/// host and paths.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct SourceView {
    /// The application, empty for plain backups.
    pub app: String,
    /// The component, or for plain backups the paths (space-separated).
    pub component: String,
    /// The host.
    pub host: String,
    /// Its newest snapshot.
    pub last_snapshot: Option<SnapshotId>,
    /// When that snapshot was taken (RFC 3339).
    pub last_time: Option<String>,
    /// Seconds since the newest moment stored of the source: its newest
    /// snapshot or, for a watched database, what its watcher stored.
    pub age_seconds: Option<i64>,
    /// Wall time of the newest snapshot's backup, milliseconds.
    pub duration_ms: u64,
    /// Bytes the newest snapshot's backup added to the repository.
    pub bytes_added: u64,
    /// Snapshots of the source.
    pub snapshots: u64,
    /// An attempt that failed after the newest snapshot.
    pub failure: Option<FailureView>,
    /// Failed attempts in the audit log, ever.
    pub failures_total: u64,
    /// For a database `cairn watch` follows: what its watcher stored.
    pub watch: Option<WatchView>,
}

/// A failed attempt at backing up a source.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct FailureView {
    /// When it failed (RFC 3339).
    pub time: String,
    /// The error.
    pub error: String,
}

/// What the watcher of a database has stored.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct WatchView {
    /// The newest moment `restore --at` can give (RFC 3339).
    pub until: String,
    /// Why the newest chain of WAL segments ended, when it has.
    pub ended: Option<String>,
}

impl SourceView {
    /// The view of one source's status at `now`.
    #[must_use]
    pub fn new(s: &SourceStatus, now: jiff::Timestamp) -> Self {
        Self {
            app: s.source.app.clone(),
            component: s.source.component.clone(),
            host: s.source.host.clone(),
            last_snapshot: s.last.map(|(id, _)| id),
            last_time: s.last.map(|(_, t)| t.to_string()),
            age_seconds: s.age_secs(now),
            duration_ms: s.duration_ms,
            bytes_added: s.bytes_added,
            snapshots: s.snapshots,
            failure: s.failure.as_ref().map(|(t, e)| FailureView {
                time: t.to_string(),
                error: e.clone(),
            }),
            failures_total: s.failures_total,
            watch: s.watch.as_ref().map(|w| WatchView {
                until: w.until.to_string(),
                ended: w.ended.clone(),
            }),
        }
    }
}

/// The audit log, oldest event first (`cairn log --json`, `GET /api/log`).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct LogView {
    /// The events.
    pub events: Vec<AuditEventView>,
    /// Damaged event files, and events whose `prev` is missing (an event
    /// was removed), with the reason.
    pub problems: Vec<String>,
}

impl LogView {
    /// The view of `log`.
    #[must_use]
    pub fn new(log: &AuditLog) -> Self {
        Self {
            events: log
                .events
                .iter()
                .map(|(id, e)| AuditEventView::new(*id, e))
                .collect(),
            problems: log.problems.clone(),
        }
    }
}

/// One recorded operation.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct AuditEventView {
    /// The event's name in the repository.
    pub id: AuditId,
    /// When the operation ended (RFC 3339).
    pub time: String,
    /// The host it ran on.
    pub host: String,
    /// Who: `user@host` for the command line, `token:NAME` for an API
    /// caller, `daemon:PROFILE` for a scheduled run.
    pub actor: String,
    /// What: `backup`, `restore`, `forget`, `prune`, `key-add`, ...
    pub action: String,
    /// What it acted on: snapshot ids, paths, a component.
    pub target: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// A short summary, or the error.
    pub detail: String,
    /// The newest event its writer saw, if any.
    pub prev: Option<AuditId>,
}

impl AuditEventView {
    /// The view of the event named `id`.
    #[must_use]
    pub fn new(id: AuditId, e: &AuditEvent) -> Self {
        Self {
            id,
            time: e.timestamp().to_string(),
            host: e.host.clone(),
            actor: e.actor.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            ok: e.ok,
            detail: e.detail.clone(),
            prev: e.prev,
        }
    }
}
