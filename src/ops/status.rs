//! Freshness and health: for every source the repository holds (each
//! component of each application per host, and each host and path set of
//! plain backups), its newest snapshot, how old it is, what the last one
//! cost, and whether a later attempt failed; rendered for `cairn status`,
//! for Prometheus (`/metrics`, in `server/metrics.rs`) and for the status
//! page.
//!
//! A database that `cairn watch` follows is a source too (its bases are
//! snapshots of the one path): its freshness is the newest moment its
//! watcher stored, the end of its newest WAL segment, not its newest base,
//! which comes only every hour or so. Only the segments since each such
//! source's newest base are read.
//!
//! Failures come from the audit log (§22 of store-format.md): a `snap` or
//! `backup` event that failed, newer than the source's newest snapshot,
//! makes the source failing. Application events name their target
//! `app NAME [COMPONENT, ...]`; plain backups name their paths.

use std::collections::{BTreeMap, HashMap};

use crate::error::Result;
use crate::format::snapshot::Snapshot;
use crate::id::SnapshotId;
use crate::repo::Repository;
use crate::repo::audit::{AuditLog, read_log};
use crate::storage::FileKind;

/// One source: an application's component on a host, or a plain backup's
/// host and paths.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Source {
    /// The application, empty for plain backups.
    pub app: String,
    /// The component, or for plain backups the paths (space-separated).
    pub component: String,
    /// The host.
    pub host: String,
}

/// What is known of one source.
#[derive(Debug, Clone)]
pub struct SourceStatus {
    /// Which source.
    pub source: Source,
    /// Its newest snapshot and when it was taken.
    pub last: Option<(SnapshotId, jiff::Timestamp)>,
    /// Wall time of that backup, milliseconds.
    pub duration_ms: u64,
    /// Bytes that backup added to the repository.
    pub bytes_added: u64,
    /// Snapshots of the source.
    pub snapshots: u64,
    /// A failed attempt after the newest snapshot: when, and the error.
    pub failure: Option<(jiff::Timestamp, String)>,
    /// Failed attempts in the audit log, ever.
    pub failures_total: u64,
    /// For a database `cairn watch` follows: what its watcher stored.
    pub watch: Option<WatchFreshness>,
}

/// What the watcher of a database has stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchFreshness {
    /// The newest moment `restore --at` can give: the end of the newest
    /// segment, or the newest base's time if no segment came after it.
    pub until: jiff::Timestamp,
    /// Why the newest chain ended, when it has (the watcher was stopped or
    /// lost its place) and no newer base began.
    pub ended: Option<String>,
}

impl SourceStatus {
    /// A source with no snapshot and no failure yet.
    fn new(source: Source) -> Self {
        Self {
            source,
            last: None,
            duration_ms: 0,
            bytes_added: 0,
            snapshots: 0,
            failure: None,
            failures_total: 0,
            watch: None,
        }
    }

    /// The newest moment stored of the source: its newest snapshot's time,
    /// or for a watched database the newest moment its watcher stored.
    #[must_use]
    pub fn newest(&self) -> Option<jiff::Timestamp> {
        self.watch
            .as_ref()
            .map(|w| w.until)
            .or(self.last.map(|(_, t)| t))
    }

    /// Seconds since [`SourceStatus::newest`], at `now`.
    #[must_use]
    pub fn age_secs(&self, now: jiff::Timestamp) -> Option<i64> {
        self.newest()
            .map(|t| now.as_second().saturating_sub(t.as_second()))
    }
}

/// The whole repository's health.
#[derive(Debug, Clone, Default)]
pub struct RepoStatus {
    /// Every source, sorted.
    pub sources: Vec<SourceStatus>,
    /// Snapshots in the repository.
    pub snapshots: u64,
    /// Bytes of packs, index files and snapshot files.
    pub repo_bytes: u64,
    /// Problems reading snapshots or the audit log.
    pub problems: Vec<String>,
}

/// The sources a snapshot is of.
fn sources_of(s: &Snapshot) -> Vec<Source> {
    match &s.app {
        Some(app) => app
            .components
            .iter()
            .map(|c| Source {
                app: app.name.clone(),
                component: c.name.clone(),
                host: s.hostname.clone(),
            })
            .collect(),
        None => vec![Source {
            app: String::new(),
            component: s.display_paths().join(" "),
            host: s.hostname.clone(),
        }],
    }
}

/// The sources a failed `snap`/`backup` audit event was for.
fn failed_sources(action: &str, target: &str, host: &str) -> Vec<Source> {
    match action {
        "snap" => {
            let Some(rest) = target.strip_prefix("app ") else {
                return Vec::new();
            };
            let Some((name, comps)) = rest.split_once(" [") else {
                return Vec::new();
            };
            comps
                .trim_end_matches(']')
                .split(", ")
                .filter(|c| !c.is_empty())
                .map(|c| Source {
                    app: name.to_owned(),
                    component: c.to_owned(),
                    host: host.to_owned(),
                })
                .collect()
        }
        "backup" => vec![Source {
            app: String::new(),
            component: target.to_owned(),
            host: host.to_owned(),
        }],
        _ => Vec::new(),
    }
}

/// Computes the status of every source.
///
/// # Errors
/// Backend errors listing the repository; unreadable snapshots and audit
/// events are in [`RepoStatus::problems`].
pub fn status(repo: &Repository) -> Result<RepoStatus> {
    let log = read_log(repo, None)?;
    let snapshots = repo.snapshots()?;
    let mut out = compute(repo, &snapshots, &log);
    watch_freshness(repo, &snapshots, &mut out);
    Ok(out)
}

/// Fills in [`SourceStatus::watch`] for the sources with watch bases.
fn watch_freshness(
    repo: &Repository,
    snapshots: &[(SnapshotId, Result<Snapshot>)],
    out: &mut RepoStatus,
) {
    let mut source_of: HashMap<SnapshotId, Source> = HashMap::new();
    let mut newest_base: BTreeMap<Source, jiff::Timestamp> = BTreeMap::new();
    for (id, s) in snapshots {
        let Ok(s) = s else { continue };
        if !s.tags.iter().any(|t| t == crate::repo::segments::BASE_TAG) {
            continue;
        }
        for source in sources_of(s) {
            let t = newest_base.entry(source.clone()).or_insert(s.timestamp());
            *t = (*t).max(s.timestamp());
            source_of.insert(*id, source);
        }
    }
    let Some(since) = newest_base.values().min() else {
        return;
    };
    // A source's newest segment ends after its newest base (segments of
    // older chains ending before it do not tell its freshness).
    let since = crate::format::segment::nanos(*since);
    let segments = match crate::repo::segments::read_segments_since(repo, since) {
        Ok((segments, problems)) => {
            out.problems.extend(problems);
            segments
        }
        Err(e) => {
            out.problems.push(format!("listing WAL segments: {e}"));
            return;
        }
    };
    let mut newest: BTreeMap<&Source, (i64, Option<String>)> = BTreeMap::new();
    for (_, seg) in &segments {
        let Some(source) = source_of.get(&seg.base) else {
            continue;
        };
        let e = newest.entry(source).or_insert((i64::MIN, None));
        if seg.until >= e.0 {
            *e = (seg.until, seg.end.clone());
        }
    }
    for st in &mut out.sources {
        let Some(base) = newest_base.get(&st.source) else {
            continue;
        };
        st.watch = Some(match newest.get(&st.source) {
            Some((until, ended)) if crate::format::segment::timestamp(*until) >= *base => {
                WatchFreshness {
                    until: crate::format::segment::timestamp(*until),
                    ended: ended.clone(),
                }
            }
            _ => WatchFreshness {
                until: *base,
                ended: None,
            },
        });
    }
}

fn compute(
    repo: &Repository,
    snapshots: &[(SnapshotId, Result<Snapshot>)],
    log: &AuditLog,
) -> RepoStatus {
    let mut out = RepoStatus {
        problems: log.problems.clone(),
        ..RepoStatus::default()
    };
    let mut by: BTreeMap<Source, SourceStatus> = BTreeMap::new();
    for (id, s) in snapshots {
        let s = match s {
            Ok(s) => s,
            Err(e) => {
                out.problems.push(format!("snapshot {id}: {e}"));
                continue;
            }
        };
        out.snapshots += 1;
        // A safety snapshot holds the state a restore threw away: not a
        // fresh backup of anything.
        if s.is_safety() {
            continue;
        }
        for source in sources_of(s) {
            let st = by
                .entry(source.clone())
                .or_insert_with(|| SourceStatus::new(source));
            st.snapshots += 1;
            if st.last.is_none_or(|(_, t)| s.timestamp() >= t) {
                st.last = Some((*id, s.timestamp()));
                st.duration_ms = s.summary.duration_ms;
                st.bytes_added = s.summary.bytes_stored;
            }
        }
    }
    for (_, e) in &log.events {
        if e.ok {
            continue;
        }
        for source in failed_sources(&e.action, &e.target, &e.host) {
            let st = by
                .entry(source.clone())
                .or_insert_with(|| SourceStatus::new(source));
            st.failures_total += 1;
            let when = e.timestamp();
            if st.last.is_none_or(|(_, t)| when > t) {
                st.failure = Some((when, e.detail.clone()));
            }
        }
    }
    out.sources = by.into_values().collect();
    for kind in [FileKind::Pack, FileKind::Index, FileKind::Snapshot] {
        match repo.backend().list(kind) {
            Ok(files) => out.repo_bytes += files.iter().map(|(_, n)| n).sum::<u64>(),
            Err(e) => out.problems.push(e.to_string()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_failed_snap_targets_name_app_components() {
        let got = failed_sources("snap", "app shop [code, db]", "h");
        assert_eq!(
            got.iter()
                .map(|s| (s.app.as_str(), s.component.as_str()))
                .collect::<Vec<_>>(),
            [("shop", "code"), ("shop", "db")]
        );
        assert!(failed_sources("snap", "bogus", "h").is_empty());
        assert!(failed_sources("restore", "app x [db]", "h").is_empty());
        assert_eq!(failed_sources("backup", "/a /b", "h")[0].component, "/a /b");
    }
}
