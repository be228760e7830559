//! cairn: a content-addressed, deduplicating, encrypted snapshot store.
//!
//! Files are split into chunks with FastCDC, each chunk is identified by its
//! keyed BLAKE3 hash, compressed with zstd, sealed with XChaCha20-Poly1305 and
//! stored once in packs; directories become tree blobs and a snapshot names a
//! root tree. `store-format.md` documents every byte on disk.
//!
//! The library owns all behaviour; the `cairn` binary and `cairn serve`
//! parse requests, call it and render what it returns. Back up, restore,
//! check:
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use cairn::{BackupOptions, InitOptions, MemoryBackend, NoProgress, Repository};
//! use cairn::{RestoreOptions, VerifyOptions};
//!
//! let src = tempfile::tempdir()?;
//! std::fs::write(src.path().join("hello.txt"), b"hello")?;
//! let repo = Repository::init(Arc::new(MemoryBackend::new()), Some(b"pw"), &InitOptions::default())?;
//! let done = cairn::backup(&repo, &BackupOptions::new(vec![src.path().into()]), &NoProgress)?;
//!
//! let (_, snapshot) = repo.find_snapshot("latest")?;
//! let target = tempfile::tempdir()?;
//! let restored = cairn::restore(&repo, &snapshot, &RestoreOptions::new(target.path().to_path_buf()), &NoProgress)?;
//! assert_eq!(restored.files, 1);
//! assert!(cairn::verify(&repo, &VerifyOptions::default())?.errors.is_empty());
//! # let _ = done;
//! # Ok(()) }
//! ```
//!
//! # Layers
//!
//! The modules are layered, and each uses only the ones below it (a test,
//! `tests/integration/layers.rs`, keeps it so): `format` (pure encoders
//! and decoders), `storage` (bytes by name: local, S3, memory), `repo` (an
//! open repository), `ops` (backup, restore, verify, forget, prune, copy,
//! inspect, status), `apps` (SQLite, database export and import,
//! application profiles), and the two long-running callers, `daemon` and
//! [`server`]. The names below are the API a program needs. Every
//! operation returns a typed outcome; its report ([`BackupReport`],
//! [`RestoreReport`], [`PruneSummary`], [`VerifySummary`],
//! [`SnapshotView`]) is what both the CLI's `--json` and the HTTP API
//! show. Errors carry an [`ErrorKind`], from which the CLI picks its exit
//! code and the server its HTTP status.
//!
//! # Features
//!
//! `s3` (S3-compatible object storage) and `server` (`cairn serve`) are on
//! by default; without them the engine and the CLI build with fewer
//! dependencies. `internals` adds the hooks of the fuzz targets, decoder
//! tests and benchmarks (`internals`); no program needs it.

mod apps;
mod daemon;
mod error;
mod format;
mod id;
mod ops;
mod repo;
mod secrets;
#[cfg(feature = "server")]
pub mod server;
mod storage;
mod sync;
mod timespec;

pub use daemon::notify;

pub use apps::db::cells::Cell;
pub use apps::db::export::{CSV_SCHEMA_FILE, DbFormat, ExportOptions, export, export_to_path};
pub use apps::db::image::{DbImage, materialize};
pub use apps::db::restore::{
    DbRestoreOptions, DbRestored, restore_from_export, restore_from_snapshot,
};
pub use apps::engine::{backup, restore};
pub use apps::profile::schedule::{Job, MIN_INTERVAL, Schedule, VerifyPlan};
pub use apps::profile::{
    Component, ComponentKind, ComponentRestore, ComponentRestoreOptions, FileAction, FileChange,
    PROFILE_FILE, Profile, SAFETY_TAG, SnapOptions, TableChange, WatchPlan, component_paths,
    restore_component, snap,
};
pub use apps::sqlite::SqliteMode;
pub use apps::sqlite::pitr::{PitrPoint, PitrRestoreOptions, PitrRestored, restore_at};
pub use apps::sqlite::special::SqliteFiles;
pub use apps::sqlite::watcher::{WatchNote, WatchOptions, db_path as watched_db_path, watch};
pub use daemon::{
    DaemonHost, DaemonOptions, DaemonState, DaemonSummary, Event as DaemonEvent, JobState,
    RunRecord, daemon,
};
pub use error::{Error, ErrorKind, Hint, Result};
pub use format::chunker::ChunkerParams;
pub use format::config::{Config, Encryption, FORMAT_VERSION};
pub use format::crypto::{DEFAULT_KDF_MEMORY_MIB, MAX_KDF_MEMORY_MIB, MIN_KDF_MEMORY_MIB};
pub use format::keyfile::KeyFile;
pub use format::pack::{BlobKind, Compression, PackEntry};
pub use format::segment::{Segment, SegmentTxn, timestamp as segment_time};
pub use format::snapshot::{
    AppInfo, ComponentInfo, DatabaseInfo, GitInfo, PRE_TAG, Snapshot, Summary, TableRows,
    check_user_tags, newest_at,
};
pub use format::tree::{Node, NodeKind, Tree, Xattr};
pub use id::{
    AuditId, BlobId, IndexId, KeyId, LockId, PackId, ParseIdError, SegmentId, SnapshotId,
};
pub use ops::backup::special::{Capture, CaptureFailure, Claim, SpecialFiles};
pub use ops::backup::{
    BackupOptions, BackupOutcome, NoProgress, Progress, absolute as absolute_path, backup_command,
    backup_stream,
};
pub use ops::copy::{CopiedSnapshot, CopyReport, copy};
pub use ops::forget::{
    DEFAULT_ROLLBACK_DAYS, Decision, ForgetOptions, ForgetOutcome, GroupBy, GroupKey, GroupPlan,
    KeepPolicy, SnapshotFilter, UNLIMITED, forget, plan, plan_at,
};
pub use ops::inspect::{
    Change, ChangeKind, DiffTotals, EntrySummary, EntryType, FindOutcome, FindPatterns, Found,
    TableDiff, diff, dump, find, table_diff,
};
pub use ops::protect::Undo;
pub use ops::prune::{PruneOptions, PruneReport, TEMPORARY_STALE_AFTER, prune};
pub use ops::report::{
    AppView, AuditEventView, BackupReport, ComponentView, DatabaseView, FailureView, LogView,
    PruneSummary, RestoreReport, SnapshotView, SourceView, StatusView, VerifySummary, WatchView,
};
pub use ops::restore::{RestoreOptions, RestoreOutcome};
pub use ops::stats::{RepoStats, stats};
pub use ops::status::{RepoStatus, Source, SourceStatus, WatchFreshness, status};
pub use ops::verify::{VerifyOptions, VerifyReport, verify};
pub use repo::audit::{AuditEvent, AuditLog, read_log as audit_log, record_event as audit_record};
pub use repo::lock::{Lock, LockRecord, Unlocked};
pub use repo::segments::{Chain, Gap, Timeline, timelines};
pub use repo::walk::{file_content, find_node, walk_tree};
pub use repo::{
    DamagedSnapshots, InitOptions, OpenOptions, Repository, create_key_file, readable_snapshots,
};
pub use secrets::command as child_command;
#[cfg(feature = "s3")]
pub use storage::{AddressStyle, S3Backend, S3Location};
pub use storage::{
    Backend, FileKind, LocalBackend, MemoryBackend, Temporary, Throttled, is_url, open_location,
};
pub use timespec::{parse_duration, parse_size, parse_time};

/// Hooks for the fuzz targets, the decoder tests and the benchmarks, with
/// the `internals` feature only: the decoders of on-disk data (each takes
/// arbitrary bytes and returns an error, never panics), a sealer with a
/// fixed key, and the SQLite WAL follower. Not a stable API.
#[cfg(feature = "internals")]
pub mod internals {
    pub use crate::apps::sqlite::follower::{
        Base as WatchBase, Commit, DEFAULT_RESTART_BYTES as WAL_RESTART_BYTES, Event as WatchEvent,
        Follower,
    };
    pub use crate::apps::sqlite::wal::{Cursor as WalCursor, WalHeader, checksum as wal_checksum};
    pub use crate::format::config::{decode as config, encode as encode_config, peek_version};
    pub use crate::format::crypto::{Crypto, Domain};
    pub use crate::format::index::decode_file as index_file;
    /// The merged in-memory index and the index file records, for the
    /// index benchmarks.
    pub use crate::format::index::{Index, IndexFile, IndexPack, encode_file as encode_index_file};
    pub use crate::format::keyfile::KeyFile;
    pub use crate::format::pack::{
        decode_header as pack_header, parse_trailer as pack_trailer, read_header as pack,
    };
    pub use crate::format::segment::{
        decode_file as segment_file, encode_file as encode_segment_file,
    };
    pub use crate::format::snapshot::decode_file as snapshot_file;
    pub use crate::format::tree::Tree;
    pub use crate::ops::backup::filescache::check_file as files_cache;
    pub use crate::repo::audit::{decode_file as audit_file, encode_file as encode_audit_file};
    pub use crate::repo::chunklist::{decode as chunk_list, encode as encode_chunk_list};

    /// A sealer with a fixed key, for fuzzing decoders behind encryption.
    #[must_use]
    pub fn test_crypto(encrypted: bool) -> crate::format::crypto::Crypto {
        crate::format::crypto::Crypto::with_fixed_key(encrypted)
    }
}
