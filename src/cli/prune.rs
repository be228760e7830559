//! `cairn prune`: delete data no snapshot references and repack packs
//! that are mostly unused.

use anyhow::Result;
use clap::Args;

use super::exit;
use super::global::Global;
use super::output::{Out, report_audit_errors};
use super::pruning::{PruneOpts, print_prune, prune_with};
use super::repo_open::open;

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub opts: PruneOpts,
}

pub fn prune(g: &Global, out: &Out, a: &PruneArgs) -> Result<u8> {
    let (repo, _) = open(g)?;
    let r = prune_with(&repo, &a.opts);
    report_audit_errors(out, &repo);
    let r = r?;
    if out.json {
        out.print_json(&r.summary(a.opts.dry_run))?;
    } else {
        print_prune(out, &r, a.opts.dry_run);
    }
    Ok(exit::OK)
}
