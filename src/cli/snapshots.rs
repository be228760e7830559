//! `cairn snapshots`: the list of snapshots, or what the repository held
//! at a time (`--at`).

use anyhow::Result;
use clap::Args;

use cairn::SnapshotId;

use super::exit;
use super::global::Global;
use super::output::{Out, local_time, size};
use super::render::app_line;
use super::repo_open::open;
use super::select::AtArgs;

#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    /// List only what the repository held at TIME: per host and paths, the
    /// newest snapshot taken at or before it.
    #[command(flatten)]
    at: AtArgs,
}

pub fn snapshots(g: &Global, out: &Out, a: &SnapshotsArgs) -> Result<u8> {
    let (repo, _) = open(g)?;
    let all: Vec<(SnapshotId, cairn::Result<cairn::Snapshot>)> = match &a.at.at {
        Some(at) => {
            a.at.chosen(&repo, at)?
                .into_iter()
                .map(|(id, s)| (id, Ok(s)))
                .collect()
        }
        None if a.at.filtered() => {
            a.at.candidates(&repo)?
                .into_iter()
                .map(|(id, s)| (id, Ok(s)))
                .collect()
        }
        None => repo.snapshots()?,
    };
    let mut code = exit::OK;
    if out.json {
        let views: Vec<_> = all
            .iter()
            .filter_map(|(id, s)| s.as_ref().ok().map(|s| cairn::SnapshotView::new(*id, s)))
            .collect();
        for (id, s) in &all {
            if let Err(e) = s {
                out.warn(format!("snapshot {id}: {e}"));
                code = exit::INCOMPLETE;
            }
        }
        out.print_json(&views)?;
    } else {
        outln!(
            "{:<8}  {:<19}  {:<16}  {:>10}  {:<12}  paths",
            "id",
            "time",
            "host",
            "size",
            "tags"
        );
        for (id, s) in &all {
            match s {
                Ok(s) => {
                    outln!(
                        "{:<8}  {:<19}  {:<16}  {:>10}  {:<12}  {}",
                        id.short(),
                        local_time(s.timestamp()),
                        s.hostname,
                        size(s.summary.total_size),
                        s.tags.join(","),
                        s.display_paths().join(" ")
                    );
                    if let Some(app) = &s.app {
                        outln!("          {}", app_line(app));
                    }
                }
                Err(e) => {
                    out.warn(format!("snapshot {id}: {e}"));
                    code = exit::INCOMPLETE;
                }
            }
        }
        out.info(match all.len() {
            1 => "1 snapshot".to_owned(),
            n => format!("{n} snapshots"),
        });
    }
    Ok(code)
}
