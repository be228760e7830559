//! `cairn copy`: snapshots from another repository (`--from`),
//! transferring only the data this one lacks.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use clap::Args;
use serde::Serialize;

use cairn::{SnapshotFilter, SnapshotId};

use super::exit;
use super::from_repo::FromPassword;
use super::global::Global;
use super::output::{BarProgress, Out, size};
use super::repo_open::open;
use super::select::SnapshotSelect;

#[derive(Debug, Args)]
#[command(after_help = "\
Snapshots the target already holds (copied before, also along a chain of copies) are
skipped. If the target was created with `cairn init --from-repo SOURCE` (or both from the
same repository), blobs the target already has are skipped without reading them; between
unrelated repositories every blob of a copied snapshot is read and named again with the
target's key. The target is the usual repository (--repo / CAIRN_REPO and its password).")]
pub struct CopyArgs {
    /// Snapshots of the source to copy: ids, unique id prefixes or `latest`.
    #[arg(
        value_name = "SNAPSHOT",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    snapshots: Vec<String>,
    /// Copy every snapshot of the source (that the filters select).
    #[arg(long)]
    all: bool,
    /// The source repository: a directory or an s3: location.
    #[arg(long, env = "CAIRN_FROM_REPO", value_name = "LOCATION")]
    from: PathBuf,
    #[command(flatten)]
    password: FromPassword,
    #[command(flatten)]
    select: SnapshotSelect,
}

/// One snapshot in the JSON output.
#[derive(Serialize)]
struct SnapshotView {
    source: SnapshotId,
    target: SnapshotId,
    copied: bool,
}

pub fn copy(g: &Global, out: &Out, a: &CopyArgs) -> Result<u8> {
    let filter = SnapshotFilter::try_from(&a.select)?;
    // The source first: a wrong source password must fail before anything
    // (even a lock file) is written to the target.
    let src = a.password.open(g, &a.from)?;
    let (dst, loc) = open(g)?;
    let mut ids = Vec::new();
    if a.all {
        for (id, snap) in src.snapshots()? {
            let snap = snap.with_context(|| {
                format!(
                    "snapshot {id} of {} cannot be read; name the snapshots to copy instead of --all",
                    a.from.display()
                )
            })?;
            if filter.matches(&snap) {
                ids.push(id);
            }
        }
    } else {
        for r in &a.snapshots {
            let (id, snap) = src
                .find_snapshot(r)
                .with_context(|| format!("in the source repository {}", a.from.display()))?;
            if filter.matches(&snap) {
                ids.push(id);
            }
        }
    }
    if ids.is_empty() {
        out.info(format!(
            "no snapshot of {} matches the selection: nothing to copy",
            a.from.display()
        ));
    }
    let bar = out.progress(true, "copying");
    let progress = BarProgress(bar.clone());
    let done = cairn::copy(&src, &dst, &ids, &progress);
    bar.finish_and_clear();
    for e in dst.take_audit_errors() {
        out.warn(format!("could not record the copy in the audit log: {e}"));
    }
    let report = done.map_err(|e| {
        anyhow!(e).context(format!(
            "copying from {} to {}",
            a.from.display(),
            loc.path.display()
        ))
    })?;
    if out.json {
        out.print_json(&serde_json::json!({
            "from": a.from,
            "to": loc.path,
            "copied": report.copied(),
            "skipped": report.skipped(),
            "shared_ids": report.shared_ids,
            "blobs_read": report.blobs_read,
            "blobs_transferred": report.blobs_transferred,
            "bytes_transferred": report.bytes_transferred,
            "bytes_stored": report.bytes_stored,
            "snapshots": report.snapshots.iter().map(|s| SnapshotView {
                source: s.source,
                target: s.target,
                copied: s.copied,
            }).collect::<Vec<_>>(),
        }))?;
        return Ok(exit::OK);
    }
    for s in &report.snapshots {
        if s.copied {
            out.info(format!(
                "copied snapshot {} as {}",
                s.source.short(),
                s.target.short()
            ));
        } else {
            out.info(format!(
                "skipped snapshot {}: the target has it as {}",
                s.source.short(),
                s.target.short()
            ));
        }
    }
    if !report.shared_ids && report.copied() > 0 {
        out.info(
            "the repositories do not share blob ids, so every blob was read and named again; a target created with `cairn init --from-repo` avoids that",
        );
    }
    out.info(format!(
        "copied {} snapshot(s), {} already there; {} blobs ({}) added, {} written",
        report.copied(),
        report.skipped(),
        report.blobs_transferred,
        size(report.bytes_transferred),
        size(report.bytes_stored)
    ));
    Ok(exit::OK)
}
