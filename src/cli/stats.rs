//! `cairn stats`: repository sizes and deduplication.

use anyhow::Result;
use clap::Args;

use super::exit;
use super::global::Global;
use super::output::{Out, size};
use super::repo_open::open;

#[derive(Debug, Args)]
pub struct StatsArgs {}

pub fn stats(g: &Global, out: &Out, _a: &StatsArgs) -> Result<u8> {
    let (repo, _) = open(g)?;
    let s = cairn::stats(&repo)?;
    if out.json {
        out.print_json(&s)?;
    } else {
        outln!("snapshots:              {}", s.snapshots);
        outln!(
            "packs:                  {} ({})",
            s.packs,
            size(s.pack_bytes)
        );
        outln!("index:                  {}", size(s.index_bytes));
        outln!(
            "data blobs:             {} ({} unique data)",
            s.data_blobs,
            size(s.unique_data_bytes)
        );
        outln!("tree blobs:             {}", s.tree_blobs);
        outln!("files in all snapshots: {}", size(s.total_snapshot_bytes));
        outln!(
            "space saving:           {:.1}x (deduplication and compression)",
            s.space_saving_ratio
        );
        if s.temporary_files > 0 {
            outln!(
                "temporary files:        {} ({}; {} idle {} min or more, which `cairn prune` removes)",
                s.temporary_files,
                size(s.temporary_bytes),
                s.stale_temporary_files,
                cairn::TEMPORARY_STALE_AFTER.as_secs() / 60
            );
        }
    }
    Ok(exit::OK)
}
