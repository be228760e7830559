//! Prune's options and report, shared by `cairn prune` and
//! `cairn forget --prune`: the options as clap parses them, their
//! conversion into [`cairn::PruneOptions`], and the report as JSON and
//! text.

use anyhow::Result;
use clap::Args;

use cairn::{PruneOptions, Repository};

use super::output::{Out, size};

/// Options of prune, shared with `forget --prune`.
#[derive(Debug, Args)]
pub struct PruneOpts {
    /// Repack a pack when more than this share of it is unused (e.g. 5%,
    /// 0% to reclaim everything, 100% to only delete wholly unused packs).
    #[arg(long, value_name = "PERCENT", default_value = "5%", value_parser = parse_percent)]
    pub max_unused: f64,
    /// Leave small packs (under half the pack size) as they are, instead of
    /// repacking them together when there are two or more.
    #[arg(long)]
    pub no_repack_small: bool,
    /// Show what would be deleted and repacked; change nothing.
    #[arg(long = "dry-run", id = "prune_dry_run")]
    pub dry_run: bool,
}

pub fn parse_percent(s: &str) -> Result<f64, String> {
    let n: f64 = s
        .trim()
        .trim_end_matches('%')
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a percentage such as 5%"))?;
    if (0.0..=100.0).contains(&n) {
        Ok(n / 100.0)
    } else {
        Err(format!("'{s}' is not between 0% and 100%"))
    }
}

impl From<&PruneOpts> for PruneOptions {
    fn from(a: &PruneOpts) -> Self {
        let mut opts = Self::default();
        opts.max_unused = a.max_unused;
        opts.repack_small = !a.no_repack_small;
        opts.dry_run = a.dry_run;
        opts
    }
}

/// Runs prune.
pub fn prune_with(repo: &Repository, a: &PruneOpts) -> Result<cairn::PruneReport> {
    Ok(cairn::prune(repo, &PruneOptions::from(a))?)
}

/// Prints prune's report as text.
pub fn print_prune(out: &Out, r: &cairn::PruneReport, dry_run: bool) {
    if !out.quiet {
        let verb = if dry_run { "would free" } else { "freed" };
        outln!(
            "{} snapshots use {} blobs; {} of {} packs deleted, {} repacked ({} small; {} blobs copied), {} left by interrupted backups",
            r.snapshots,
            r.blobs_used,
            r.packs_deleted,
            r.packs_before,
            r.packs_repacked,
            r.packs_small,
            r.blobs_repacked,
            r.packs_unindexed
        );
        outln!(
            "{verb} {} ({} -> {}); {} unused blobs removed, {} index files rewritten; took {:.2}s",
            size(r.bytes_freed()),
            size(r.bytes_before),
            size(r.bytes_after),
            r.blobs_removed,
            r.index_files_rewritten,
            r.duration_ms as f64 / 1000.0
        );
        if r.temporaries_removed > 0 {
            outln!(
                "{} {} temporary files left by killed writers ({})",
                if dry_run { "would remove" } else { "removed" },
                r.temporaries_removed,
                size(r.temporary_bytes_removed)
            );
        }
        if r.segments_replaced + r.segments_superseded > 0 {
            outln!(
                "WAL segments of ended chains: {} written as {}{}; {} kept",
                r.segments_replaced,
                r.segments_written,
                if r.segments_superseded > 0 {
                    format!(
                        ", {} left by an interrupted compaction deleted",
                        r.segments_superseded
                    )
                } else {
                    String::new()
                },
                r.segments
            );
        }
    }
}
