//! cairn: a content-addressed, deduplicating, encrypted snapshot store.
//!
//! Files are split into chunks with FastCDC, each chunk is identified by its
//! keyed BLAKE3 hash, compressed with zstd, sealed with XChaCha20-Poly1305 and
//! stored once in packs; directories become tree blobs and a snapshot names a
//! root tree. `store-format.md` documents every byte on disk.
//!
//! The library owns all behaviour; the `cairn` binary parses arguments and
//! prints. A round trip:
//!
//! ```
//! # fn main() -> cairn::Result<()> {
//! use std::sync::Arc;
//! use cairn::{BackupOptions, InitOptions, MemoryBackend, NoProgress, Repository};
//! let src = tempfile::tempdir().map_err(|e| cairn::Error::invalid(e.to_string()))?;
//! std::fs::write(src.path().join("hello.txt"), b"hello").map_err(|e| cairn::Error::invalid(e.to_string()))?;
//! let repo = Repository::init(Arc::new(MemoryBackend::new()), Some(b"pw"), &InitOptions::default())?;
//! let done = cairn::backup(&repo, &BackupOptions::new(vec![src.path().into()]), &NoProgress)?;
//! let report = cairn::verify(&repo, &cairn::VerifyOptions::default())?;
//! assert!(report.errors.is_empty());
//! # let _ = done;
//! # Ok(()) }
//! ```

mod audit;
mod backend;
mod backup;
mod cache;
mod chunker;
mod chunklist;
mod codec;
mod compact;
mod compress;
mod config;
mod copy;
mod crypto;
mod daemon;
mod dbexport;
mod error;
mod filescache;
mod forget;
mod id;
mod index;
mod inspect;
mod keyfile;
mod lock;
pub mod notify;
mod pack;
mod pitr;
mod profile;
mod protect;
mod prune;
mod repo;
mod restore;
mod schedule;
mod secrets;
mod segment;
pub mod server;
mod snapshot;
mod sqlite;
mod stats;
mod status;
mod stream;
mod timespec;
mod tree;
mod verify;
mod wal;
mod watch;

pub use audit::{AuditEvent, AuditLog, read_log as audit_log, record_event as audit_record};
pub use backend::{
    AddressStyle, Backend, FileKind, LocalBackend, MemoryBackend, S3Backend, S3Location, Temporary,
    Throttled, is_url, open_location,
};
pub use backup::{
    BackupOptions, BackupOutcome, NoProgress, Progress, absolute as absolute_path, backup,
    backup_command, backup_stream,
};
pub use chunker::ChunkerParams;
pub use config::{Config, Encryption, FORMAT_VERSION};
pub use copy::{CopiedSnapshot, CopyReport, copy, shares_blob_ids};
pub use crypto::random as random_bytes;
pub use crypto::{DEFAULT_KDF_MEMORY_MIB, MAX_KDF_MEMORY_MIB, MIN_KDF_MEMORY_MIB};
pub use daemon::{
    DaemonHost, DaemonOptions, DaemonState, DaemonSummary, Event as DaemonEvent, HISTORY_LEN,
    JobState, RunRecord, daemon, load_state, save_state, state_file,
};
pub use dbexport::{
    CSV_SCHEMA_FILE, Cell, DbFormat, DbImage, DbRestoreOptions, DbRestored, ExportOptions,
    JSON_FORMAT, JSON_VERSION, csv_cell, csv_field, database_of, describe_tables, export,
    export_to_path, json_cell, json_value, materialize, restore_from_export, restore_from_snapshot,
    sql_literal,
};
pub use error::{Error, Result};
pub use forget::{
    DEFAULT_ROLLBACK_DAYS, Decision, ForgetOptions, ForgetOutcome, GroupBy, GroupKey, GroupPlan,
    KeepPolicy, SnapshotFilter, UNLIMITED, forget, plan, plan_at,
};
pub use id::{AuditId, BlobId, IndexId, KeyId, LockId, PackId, SegmentId, SnapshotId};
pub use inspect::{
    Change, ChangeKind, DiffTotals, EntrySummary, EntryType, FindOutcome, FindPatterns, Found,
    TableDiff, diff, dump, find, table_diff,
};
pub use keyfile::KeyFile;
pub use lock::{Lock, LockRecord, Unlocked};
pub use pack::{BlobKind, Compression, PackEntry};
pub use pitr::{
    BASE_TAG, Chain, Gap, PitrPoint, PitrRestoreOptions, PitrRestored, Timeline, WatchNote,
    WatchOptions, db_path as watched_db_path, read_segments, restore_at, timelines, watch,
};
pub use profile::{
    Component, ComponentKind, ComponentRestore, ComponentRestoreOptions, DEFAULT_EXCLUDES,
    FileAction, FileChange, PROFILE_FILE, Profile, SAFETY_TAG, SnapOptions, TableChange, WatchPlan,
    component_paths, git_info, restore_component, snap,
};
pub use protect::Undo;
pub use prune::{PruneOptions, PruneReport, TEMPORARY_STALE_AFTER, prune};
pub use repo::{DamagedSnapshots, InitOptions, Repository, needs_password, readable_snapshots};
pub use restore::{RestoreOptions, RestoreOutcome, restore};
pub use schedule::{Job, MIN_INTERVAL, Schedule, VerifyPlan};
pub use secrets::command as child_command;
pub use segment::{Segment, SegmentTxn, timestamp as segment_time};
pub use snapshot::{
    AppInfo, ComponentInfo, DatabaseInfo, GitInfo, PRE_TAG, Snapshot, Summary, TableRows,
    check_user_tags, newest_at,
};
pub use sqlite::SqliteMode;
pub use stats::{RepoStats, stats};
pub use status::{RepoStatus, Source, SourceStatus, WatchFreshness, prometheus, status};
pub use timespec::{parse_duration, parse_size, parse_time};
pub use tree::{Node, NodeKind, Tree, Xattr};
pub use verify::{VerifyOptions, VerifyReport, verify};
pub use watch::{
    Base as WatchBase, Commit, DEFAULT_RESTART_BYTES as WAL_RESTART_BYTES, Event as WatchEvent,
    Follower,
};

/// Decoders of on-disk data, exposed for the fuzz targets and `cairn cat`.
/// Each takes arbitrary bytes and returns an error, never panics.
pub mod decode {
    pub use crate::audit::{decode_file as audit_file, encode_file as encode_audit_file};
    pub use crate::chunklist::{decode as chunk_list, encode as encode_chunk_list};
    pub use crate::config::{decode as config, encode as encode_config, peek_version};
    pub use crate::crypto::{Crypto, Domain};
    pub use crate::filescache::check_file as files_cache;
    pub use crate::index::decode_file as index_file;
    /// The merged in-memory index and the index file records, for the
    /// index benchmarks.
    pub use crate::index::{Index, IndexFile, IndexPack, encode_file as encode_index_file};
    pub use crate::keyfile::KeyFile;
    pub use crate::pack::{
        decode_header as pack_header, parse_trailer as pack_trailer, read_header as pack,
    };
    pub use crate::segment::{decode_file as segment_file, encode_file as encode_segment_file};
    pub use crate::snapshot::decode_file as snapshot_file;
    pub use crate::tree::Tree;
    pub use crate::wal::{Cursor as WalCursor, WalHeader, checksum as wal_checksum};

    /// A sealer with a fixed key, for fuzzing decoders behind encryption.
    #[must_use]
    pub fn test_crypto(encrypted: bool) -> crate::crypto::Crypto {
        crate::crypto::Crypto::new(
            &crate::crypto::MasterKey {
                encryption: [7; 32],
                id: [9; 32],
                chunker_seed: 0,
            },
            encrypted,
        )
    }
}

/// Finds the node at `path` (components separated by `/`) below `root`;
/// `None` for the root itself.
///
/// # Errors
/// [`Error::Invalid`] when the path does not exist in the snapshot; read
/// errors for damaged trees.
pub fn find_node(repo: &Repository, root: &BlobId, path: &[u8]) -> Result<Option<Node>> {
    let mut tree_id = *root;
    let mut found: Option<Node> = None;
    for comp in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        if let Some(n) = &found {
            match &n.kind {
                NodeKind::Dir { subtree } => tree_id = *subtree,
                _ => {
                    return Err(Error::invalid(format!(
                        "{} is not a directory in this snapshot",
                        String::from_utf8_lossy(path)
                    )));
                }
            }
        }
        let tree = repo.read_tree(&tree_id)?;
        found = Some(tree.find(comp).cloned().ok_or_else(|| {
            Error::invalid(format!(
                "{} is not in this snapshot",
                String::from_utf8_lossy(path)
            ))
        })?);
    }
    Ok(found)
}

/// Calls `visit(path, node)` for every entry below `tree`, depth first,
/// with `path` starting from `prefix`.
///
/// # Errors
/// The data blob ids of a regular file's node, in file order: its inline
/// list, or the leaves of its chunk lists (each list read and checked).
///
/// # Errors
/// [`Error::Invalid`] when `node` is not a regular file; reading a list.
pub fn file_content(repo: &Repository, node: &Node) -> Result<Vec<BlobId>> {
    match &node.kind {
        NodeKind::File { content } => Ok(content.clone()),
        NodeKind::ListedFile { list, depth } => chunklist::expand(repo, list, *depth),
        _ => Err(Error::invalid(format!(
            "{} is not a regular file",
            String::from_utf8_lossy(&node.name)
        ))),
    }
}

/// The first tree that cannot be read.
pub fn walk_tree(
    repo: &Repository,
    tree: &BlobId,
    prefix: &[u8],
    visit: &mut dyn FnMut(&[u8], &Node),
) -> Result<()> {
    let t = repo.read_tree(tree)?;
    for node in &t.nodes {
        let mut path = prefix.to_vec();
        if path.last() != Some(&b'/') {
            path.push(b'/');
        }
        path.extend_from_slice(&node.name);
        visit(&path, node);
        if let NodeKind::Dir { subtree } = &node.kind {
            walk_tree(repo, subtree, &path, visit)?;
        }
    }
    Ok(())
}
