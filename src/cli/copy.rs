//! `cairn copy` and the source repository options it shares with `cairn
//! init --from-repo`: where the other repository is and how its password is
//! found (`--from-password-file`, `--from-password-command`,
//! `CAIRN_FROM_PASSWORD`, a prompt on a terminal, in that order, as for the
//! main repository). The source is opened through the same backend
//! constructor as the target, so `--limit-upload`/`--limit-download` and
//! the local cache apply to it too.

use std::io::IsTerminal;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use serde::Serialize;

use cairn::{Repository, SnapshotFilter, SnapshotId};

use super::output::{BarProgress, size};
use super::password::{self, Location};
use super::{Global, Out, exit};

/// How the source repository's password is found.
#[derive(Debug, Clone, Args)]
pub struct FromPassword {
    /// Read the source repository's password from the first line of this
    /// file.
    #[arg(long, env = "CAIRN_FROM_PASSWORD_FILE", value_name = "FILE")]
    from_password_file: Option<PathBuf>,
    /// Run this shell command and use the first line it prints as the
    /// source repository's password.
    #[arg(long, env = "CAIRN_FROM_PASSWORD_COMMAND", value_name = "CMD")]
    from_password_command: Option<String>,
}

impl FromPassword {
    /// True when a password for the source was given explicitly.
    fn given(&self) -> bool {
        self.from_password_file.is_some()
            || self.from_password_command.is_some()
            || std::env::var_os("CAIRN_FROM_PASSWORD").is_some()
    }

    /// The source's password: options, environment, then a prompt.
    fn password(&self, location: &Path) -> Result<Vec<u8>> {
        if let Some(f) = &self.from_password_file {
            return password::from_file(f, "the source repository's password file");
        }
        if let Some(cmd) = &self.from_password_command {
            return password::from_command(cmd, "--from-password-command");
        }
        if let Some(pw) = std::env::var_os("CAIRN_FROM_PASSWORD") {
            return Ok(pw.as_bytes().to_vec());
        }
        if std::io::stdin().is_terminal() {
            let pw = rpassword::prompt_password(format!(
                "password for the source repository {}: ",
                location.display()
            ))
            .context("cannot read the password from the terminal")?;
            return Ok(pw.into_bytes());
        }
        bail!(
            "it is encrypted and no password for it was given: set CAIRN_FROM_PASSWORD or pass --from-password-file or --from-password-command"
        )
    }

    /// Opens the repository at `location` as a source: through
    /// [`password::backend`] (rate limits, request counts) with the local
    /// cache, and with `--retry-lock`/`--no-lock` applied.
    pub fn open(&self, g: &Global, location: &Path) -> Result<Repository> {
        let loc = Location {
            path: location.to_path_buf(),
            default_key: None,
        };
        let backend = password::backend(g, &loc)?;
        let repo = Repository::open_cached(backend, password::cache_dir(g).as_deref(), &mut || {
            self.password(location)
                .map_err(|e| cairn::Error::invalid(format!("{e:#}")))
        })
        .with_context(|| format!("cannot open the source repository {}", location.display()))?;
        // As for the main repository: a password was expected, so an
        // unencrypted source may have been tampered with.
        if self.given() && repo.config().encryption == cairn::Encryption::None {
            bail!(
                "the source repository {} is unencrypted, but a password for it was given: if it was not created with --no-encryption it may have been tampered with; otherwise drop the --from-password option",
                location.display()
            );
        }
        password::set_lock_wait(g, &repo)?;
        Ok(repo)
    }
}

/// `init --from-repo`: the repository the new one is related to.
#[derive(Debug, Args)]
pub struct InitFrom {
    /// Create the repository related to this one: it takes that
    /// repository's blob id key, chunker seed and chunker parameters (not
    /// its encryption key or password), so that `cairn copy` between the
    /// two transfers only missing data without reading the rest, and
    /// backups into either deduplicate against copied data.
    #[arg(long, env = "CAIRN_FROM_REPO", value_name = "LOCATION")]
    from_repo: Option<PathBuf>,
    #[command(flatten)]
    password: FromPassword,
}

impl InitFrom {
    /// Makes `opts` related to the `--from-repo` repository, if one is
    /// given; returns its location for the message.
    pub fn apply(&self, g: &Global, opts: &mut cairn::InitOptions) -> Result<Option<PathBuf>> {
        let Some(location) = &self.from_repo else {
            return Ok(None);
        };
        let other = self.password.open(g, location)?;
        opts.related_to(&other);
        Ok(Some(location.clone()))
    }
}

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
    select: super::forget::SnapshotSelect,
}

fn filter(a: &CopyArgs) -> Result<SnapshotFilter> {
    let mut f = SnapshotFilter::default();
    a.select.apply(&mut f)?;
    Ok(f)
}

/// One snapshot in the JSON output.
#[derive(Serialize)]
struct SnapshotView {
    source: SnapshotId,
    target: SnapshotId,
    copied: bool,
}

pub fn copy(g: &Global, out: &Out, a: &CopyArgs) -> Result<u8> {
    let filter = filter(a)?;
    // The source first: a wrong source password must fail before anything
    // (even a lock file) is written to the target.
    let src = a.password.open(g, &a.from)?;
    let (dst, loc) = password::open(g)?;
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
