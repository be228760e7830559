//! Choosing snapshots from the command line, for the commands that take
//! them: one snapshot by id, `latest` or `--at TIME` with `--host`,
//! `--path` and `--tag` ([`AtArgs`]: `ls`, `restore`, `snapshots`,
//! `db export`, `db restore`), or a set of them ([`SnapshotSelect`]:
//! `forget`, `copy`); and times as the command line gives them.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Args;

use cairn::{Repository, SnapshotFilter, SnapshotId};

use super::output::local_time;

/// A time from the command line; local times in the system's zone.
pub fn parse_time(text: &str) -> Result<jiff::Timestamp> {
    Ok(cairn::parse_time(
        text,
        jiff::Timestamp::now(),
        &jiff::tz::TimeZone::system(),
    )?)
}

/// Which snapshot `--at` and its filters choose, for the commands that
/// read one snapshot.
#[derive(Debug, Args)]
pub struct AtArgs {
    /// Use the newest snapshot taken at or before TIME (RFC 3339, a local
    /// time like "2026-11-20 14:00", a date, or "2h ago"), instead of
    /// naming one.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// With `latest` or --at: only snapshots of this host.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// With `latest` or --at: only snapshots of exactly these backup paths
    /// (repeatable).
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// With `latest` or --at: only snapshots that have this tag
    /// (repeatable: all of them).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Choose `latest` (or the snapshot at --at) among the readable
    /// snapshots only. Without it a damaged snapshot file stops the
    /// command: its time cannot be read, so it may be the newest.
    #[arg(long)]
    pub skip_damaged: bool,
}

/// Adds, to a failure to choose the newest snapshot because a snapshot file
/// is damaged, how to choose among the readable ones.
pub fn damaged_hint<T>(r: cairn::Result<T>, hint: bool) -> Result<T> {
    match r {
        Err(e) if e.is_damage() && hint => Err(anyhow::Error::new(e).context(
            "cannot choose the newest snapshot (pass --skip-damaged to choose among the readable ones)",
        )),
        r => Ok(r?),
    }
}

impl AtArgs {
    fn damaged(&self) -> cairn::DamagedSnapshots {
        if self.skip_damaged {
            cairn::DamagedSnapshots::Skip
        } else {
            cairn::DamagedSnapshots::Refuse
        }
    }

    fn keeps(&self, s: &cairn::Snapshot, want: &[PathBuf]) -> bool {
        let host_ok = self.host.as_ref().is_none_or(|h| *h == s.hostname);
        let paths_ok = want.is_empty() || {
            let mut want: Vec<&[u8]> = want.iter().map(|p| p.as_os_str().as_bytes()).collect();
            let mut have: Vec<&[u8]> = s.paths.iter().map(Vec::as_slice).collect();
            want.sort_unstable();
            have.sort_unstable();
            want == have
        };
        let tags_ok = self.tags.iter().all(|t| s.tags.contains(t));
        host_ok && paths_ok && tags_ok
    }

    /// Whether --host, --path or --tag narrow the choice.
    pub fn filtered(&self) -> bool {
        self.host.is_some() || !self.paths.is_empty() || !self.tags.is_empty()
    }

    /// The readable snapshots the filters keep, oldest first (a damaged
    /// file stops this unless --skip-damaged).
    pub fn candidates(&self, repo: &Repository) -> Result<Vec<(SnapshotId, cairn::Snapshot)>> {
        // Paths as backups record them, so that `--path .` works.
        let want = self
            .paths
            .iter()
            .map(|p| cairn::absolute_path(p))
            .collect::<cairn::Result<Vec<_>>>()?;
        Ok(damaged_hint(
            cairn::readable_snapshots(repo.snapshots()?, self.damaged()),
            !self.skip_damaged,
        )?
        .into_iter()
        .filter(|(_, s)| self.keeps(s, &want))
        .collect())
    }

    /// The snapshots `--at` chooses, one per host and paths, oldest first.
    pub fn chosen(
        &self,
        repo: &Repository,
        at: &str,
    ) -> Result<Vec<(SnapshotId, cairn::Snapshot)>> {
        let when = parse_time(at)?;
        let all = self.candidates(repo)?;
        let chosen: Vec<_> = cairn::newest_at(&all, when)
            .into_iter()
            .map(|(id, s)| (id, s.clone()))
            .collect();
        if chosen.is_empty() {
            match all.iter().map(|(_, s)| s.timestamp()).min() {
                Some(first) => bail!(
                    "no snapshot was taken at or before {} (the first matching one is from {})",
                    local_time(when),
                    local_time(first)
                ),
                None => bail!("no snapshot matches --host/--path/--tag"),
            }
        }
        Ok(chosen)
    }

    /// The one snapshot for `SNAPSHOT` or `--at`. Several groups at that
    /// time need --host/--path to choose between them.
    pub fn resolve(
        &self,
        repo: &Repository,
        snapshot: Option<&str>,
    ) -> Result<(SnapshotId, cairn::Snapshot)> {
        match (snapshot, &self.at) {
            // restic's `latest --host h`: the newest of that host (and
            // paths, tags); a safety snapshot is never `latest`.
            (Some("latest"), None) if self.filtered() => self
                .candidates(repo)?
                .into_iter()
                .rev()
                .find(|(_, s)| !s.is_safety())
                .ok_or_else(|| anyhow::anyhow!("no snapshot matches --host/--path/--tag")),
            (Some("latest"), None) => damaged_hint(
                repo.find_snapshot_with("latest", self.damaged()),
                !self.skip_damaged,
            ),
            (Some(s), None) if self.filtered() => bail!(
                "--host, --path and --tag choose among snapshots for `latest` or --at; '{s}' names one snapshot already"
            ),
            (Some(s), None) => Ok(repo.find_snapshot(s)?),
            (None, Some(at)) => {
                let mut chosen = self.chosen(repo, at)?;
                if chosen.len() > 1 {
                    let list: Vec<String> = chosen
                        .iter()
                        .map(|(id, s)| {
                            format!(
                                "{} ({} {})",
                                id.short(),
                                s.hostname,
                                s.display_paths().join(" ")
                            )
                        })
                        .collect();
                    bail!(
                        "{} sources have a snapshot at that time: {}; choose one with --host and --path",
                        chosen.len(),
                        list.join(", ")
                    );
                }
                chosen
                    .pop()
                    .ok_or_else(|| anyhow::anyhow!("no snapshot at that time"))
            }
            (Some(_), Some(_)) => bail!("give a snapshot or --at, not both"),
            (None, None) => {
                bail!("give a snapshot (an id, a unique prefix or `latest`) or --at TIME")
            }
        }
    }
}

/// The path as backup records it.
fn absolute(p: &Path) -> Result<Vec<u8>> {
    Ok(cairn::absolute_path(p)?.as_os_str().as_bytes().to_vec())
}

/// `--host`, `--tag` (each a comma-separated list that must all match)
/// and `--path`: which snapshots a command (forget, copy) considers.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SnapshotSelect {
    /// Only snapshots of this host (repeatable: any of them).
    #[arg(long = "host", value_name = "HOST")]
    hosts: Vec<String>,
    /// Only snapshots with all of these comma-separated tags (repeatable:
    /// any of the lists).
    #[arg(long = "tag", value_name = "TAG[,TAG...]")]
    tags: Vec<String>,
    /// Only snapshots that include this path (repeatable: all of them).
    #[arg(long = "path", value_name = "PATH")]
    paths: Vec<PathBuf>,
}

/// The filter's hosts, tags and paths (made absolute, as backups record
/// them, which fails only without a current directory).
impl TryFrom<&SnapshotSelect> for SnapshotFilter {
    type Error = anyhow::Error;

    fn try_from(a: &SnapshotSelect) -> Result<Self> {
        let mut filter = Self::default();
        filter.hosts.clone_from(&a.hosts);
        filter.tags = a
            .tags
            .iter()
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .collect();
        filter.paths = a.paths.iter().map(|p| absolute(p)).collect::<Result<_>>()?;
        Ok(filter)
    }
}
