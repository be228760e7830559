//! `cairn verify`: check the repository's structure and, with
//! `--read-data`, every byte.

use anyhow::Result;
use clap::Args;

use cairn::VerifyOptions;

use super::exit;
use super::global::Global;
use super::output::{Out, size};
use super::repo_open::open;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Also read, decrypt, decompress and rehash every blob.
    #[arg(long)]
    read_data: bool,
    /// Read only subset N of M of the packs (for example 1/7 on Mondays).
    #[arg(long, value_name = "N/M", value_parser = parse_subset)]
    read_data_subset: Option<(u32, u32)>,
}

fn parse_subset(s: &str) -> Result<(u32, u32), String> {
    let parsed = s
        .split_once('/')
        .and_then(|(n, m)| Some((n.trim().parse::<u32>().ok()?, m.trim().parse::<u32>().ok()?)));
    match parsed {
        Some((n, m)) if m > 0 && (1..=m).contains(&n) => Ok((n, m)),
        _ => Err(format!(
            "'{s}': expected N/M with 1 <= N <= M, for example 2/5"
        )),
    }
}

impl From<&VerifyArgs> for VerifyOptions {
    fn from(a: &VerifyArgs) -> Self {
        let mut opts = Self::default();
        opts.read_data = a.read_data || a.read_data_subset.is_some();
        opts.subset = a.read_data_subset;
        opts
    }
}

pub fn verify(g: &Global, out: &Out, a: &VerifyArgs) -> Result<u8> {
    let opts = VerifyOptions::from(a);
    // Verify judges the repository itself, never local copies of it.
    let uncached = Global {
        no_cache: true,
        ..g.clone()
    };
    let (repo, _) = open(&uncached)?;
    let bar = out.progress(false, "verifying");
    let report = cairn::verify(&repo, &opts);
    bar.finish_and_clear();
    let report = report?;
    for w in &report.warnings {
        out.warn(w);
    }
    for e in &report.errors {
        eprintln!("cairn: damaged: {e}");
    }
    if out.json {
        out.print_json(&report.summary(&opts))?;
    } else if !out.quiet {
        outln!(
            "checked {} snapshots, {} trees{}",
            report.snapshots,
            report.trees,
            if opts.read_data {
                format!(
                    ", read {} packs ({} blobs, {})",
                    report.packs_read,
                    report.blobs_read,
                    size(report.bytes_read)
                )
            } else {
                String::new()
            }
        );
    }
    if report.errors.is_empty() {
        if !out.json && !out.quiet {
            outln!("no problems found");
        }
        Ok(exit::OK)
    } else {
        eprintln!(
            "cairn: error: verify found {} problem(s)",
            report.errors.len()
        );
        Ok(exit::INCOMPLETE)
    }
}
