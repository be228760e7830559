//! `cairn forget`: turns `--keep-*` rules, filters and snapshot ids into
//! [`cairn::ForgetOptions`], and prints the plan of each group with the
//! reasons every kept snapshot stays.

use anyhow::Result;
use clap::Args;
use jiff::Span;
use jiff::tz::TimeZone;

use cairn::{ForgetOptions, ForgetOutcome, GroupBy, KeepPolicy, SnapshotFilter};

use super::exit;
use super::global::Global;
use super::output::{Out, report_audit_errors};
use super::pruning::{PruneOpts, parse_percent, print_prune, prune_with};
use super::repo_open::open;
use super::select::SnapshotSelect;

#[derive(Debug, Args)]
#[command(after_help = "\
Each group (by default: same host and paths) is judged on its own, newest first; a snapshot
is kept when any rule keeps it, and the newest of a group is always kept. Hours, days, ISO
weeks, months and years are read on the local clock (TZ); --keep-within durations count back
from the group's newest snapshot, not from now. Durations: 30d, 2w, 1y6mo, 12h, '7 days' or
ISO 8601 (P1Y6M); m is minutes, mo months. Counts: N, or -1 for no limit.
Only snapshot files are deleted: their data stays in the repository until prune.")]
pub struct ForgetArgs {
    /// Snapshots to remove (id, unique id prefix, or `latest`), instead of
    /// applying --keep-* rules.
    #[arg(value_name = "SNAPSHOT")]
    snapshots: Vec<String>,
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = parse_count)]
    keep_last: Option<i64>,
    /// Keep the newest snapshot of each of the N newest hours.
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = parse_count)]
    keep_hourly: Option<i64>,
    /// Keep the newest snapshot of each of the N newest days.
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = parse_count)]
    keep_daily: Option<i64>,
    /// Keep the newest snapshot of each of the N newest ISO weeks.
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = parse_count)]
    keep_weekly: Option<i64>,
    /// Keep the newest snapshot of each of the N newest months.
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = parse_count)]
    keep_monthly: Option<i64>,
    /// Keep the newest snapshot of each of the N newest years.
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = parse_count)]
    keep_yearly: Option<i64>,
    /// Keep every snapshot taken within DURATION of the group's newest.
    #[arg(long, value_name = "DURATION", value_parser = parse_span)]
    keep_within: Option<Span>,
    /// Keep the newest snapshot of every hour within DURATION.
    #[arg(long, value_name = "DURATION", value_parser = parse_span)]
    keep_within_hourly: Option<Span>,
    /// Keep the newest snapshot of every day within DURATION.
    #[arg(long, value_name = "DURATION", value_parser = parse_span)]
    keep_within_daily: Option<Span>,
    /// Keep the newest snapshot of every ISO week within DURATION.
    #[arg(long, value_name = "DURATION", value_parser = parse_span)]
    keep_within_weekly: Option<Span>,
    /// Keep the newest snapshot of every month within DURATION.
    #[arg(long, value_name = "DURATION", value_parser = parse_span)]
    keep_within_monthly: Option<Span>,
    /// Keep the newest snapshot of every year within DURATION.
    #[arg(long, value_name = "DURATION", value_parser = parse_span)]
    keep_within_yearly: Option<Span>,
    /// Keep the WAL segments of `cairn watch` (point-in-time recovery) of
    /// each database for DURATION back from its newest: older chains go,
    /// and their base snapshots then follow the other rules. Alone, it
    /// leaves snapshots as they are.
    #[arg(long, value_name = "DURATION", value_parser = parse_span)]
    keep_pitr: Option<Span>,
    /// Keep every snapshot that has this tag (repeatable: any of them).
    #[arg(long = "keep-tag", value_name = "TAG")]
    keep_tags: Vec<String>,
    /// Keep rollback points (tag pre: the state before `cairn run`'s
    /// command) and safety snapshots (tag safety: the state an in-place
    /// restore replaced) taken within DURATION of the group's newest.
    /// Always in force, 7d unless given; 0s turns it off. Safety snapshots
    /// never take a place in the other rules' counts.
    #[arg(long, value_name = "DURATION", value_parser = parse_span)]
    keep_rollback: Option<Span>,
    /// Judge snapshots per group of these fields: a comma-separated list of
    /// host, paths and tags; '' puts all snapshots in one group.
    #[arg(long, value_name = "FIELDS", default_value = "host,paths")]
    group_by: GroupBy,
    #[command(flatten)]
    select: SnapshotSelect,
    /// Only consider the snapshots of the application of the profile
    /// (cairn.toml), judged by its [retention] rules unless --keep-* rules
    /// are given.
    #[arg(long)]
    app: bool,
    /// Print what would be removed, and remove nothing (with --prune, what
    /// prune would free too).
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Run prune afterwards, deleting the data only removed snapshots used.
    #[arg(long)]
    prune: bool,
    /// With --prune: repack a pack when more than this share of it is
    /// unused.
    #[arg(long, value_name = "PERCENT", default_value = "5%", value_parser = parse_percent, requires = "prune")]
    max_unused: f64,
    /// With --prune: leave small packs as they are.
    #[arg(long, requires = "prune")]
    no_repack_small: bool,
}

fn parse_count(s: &str) -> Result<i64, String> {
    match s.trim().parse::<i64>() {
        Ok(n) if n >= cairn::UNLIMITED => Ok(n),
        _ => Err(format!(
            "'{s}': expected a count, 0 or more, or -1 for no limit"
        )),
    }
}

fn parse_span(s: &str) -> Result<Span, String> {
    let expected =
        "expected a duration such as 30d, 2w, 1y6mo, 12h or '7 days' (m is minutes, mo months)";
    match s.trim().parse::<Span>() {
        Ok(span) if span.is_negative() => Err(format!("'{s}': {expected}, not negative")),
        Ok(span) => Ok(span),
        Err(e) => Err(format!("'{s}': {expected} ({e})")),
    }
}

/// The `--keep-*` rules as given (empty when none is).
impl From<&ForgetArgs> for KeepPolicy {
    fn from(a: &ForgetArgs) -> Self {
        let mut policy = Self::default();
        policy.last = a.keep_last;
        policy.hourly = a.keep_hourly;
        policy.daily = a.keep_daily;
        policy.weekly = a.keep_weekly;
        policy.monthly = a.keep_monthly;
        policy.yearly = a.keep_yearly;
        policy.within = a.keep_within;
        policy.within_hourly = a.keep_within_hourly;
        policy.within_daily = a.keep_within_daily;
        policy.within_weekly = a.keep_within_weekly;
        policy.within_monthly = a.keep_within_monthly;
        policy.within_yearly = a.keep_within_yearly;
        policy.tags.clone_from(&a.keep_tags);
        policy.rollback = a.keep_rollback;
        policy
    }
}

/// Forget's options: the arguments and, with `--app`, the profile's
/// application, its `[retention]` rules (unless `--keep-*` rules or ids
/// are given) and its `[watch]` `keep` (unless `--keep-pitr` is). Not a
/// `TryFrom` of the arguments alone: the profile is a global option.
fn options(g: &Global, a: &ForgetArgs) -> Result<ForgetOptions> {
    let mut policy = KeepPolicy::from(a);
    let mut apps = Vec::new();
    let mut keep_pitr = a.keep_pitr;
    if a.app {
        let Some(profile) = &g.loaded else {
            anyhow::bail!(
                "--app needs an application profile: run cairn where a {} is, or pass --profile FILE",
                cairn::PROFILE_FILE
            );
        };
        apps.push(profile.name.clone());
        if a.keep_pitr.is_none() {
            keep_pitr = profile.watch.as_ref().and_then(|w| w.keep);
        }
        if policy.is_empty() && a.snapshots.is_empty() {
            policy = profile.retention.clone().ok_or_else(|| {
                anyhow::anyhow!(
                    "the profile {} has no [retention] rules: add them or give --keep-* rules",
                    profile.file.display()
                )
            })?;
            if a.keep_rollback.is_some() {
                policy.rollback = a.keep_rollback;
            }
        }
    }
    let mut filter = SnapshotFilter::try_from(&a.select)?;
    filter.apps = apps;
    let mut opts = ForgetOptions::new(policy);
    opts.group_by = a.group_by;
    opts.filter = filter;
    opts.ids.clone_from(&a.snapshots);
    opts.dry_run = a.dry_run;
    opts.tz = TimeZone::system();
    opts.keep_pitr = keep_pitr;
    Ok(opts)
}

fn local_time(ts: jiff::Timestamp, tz: &TimeZone) -> String {
    ts.to_zoned(tz.clone())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

pub fn forget(g: &Global, out: &Out, a: &ForgetArgs) -> Result<u8> {
    let opts = options(g, a)?;
    let (repo, _) = open(g)?;
    let done = cairn::forget(&repo, &opts);
    report_audit_errors(out, &repo);
    let done = done?;
    // Prune runs after forget released its lock, under its own.
    let pruning = PruneOpts {
        max_unused: a.max_unused,
        no_repack_small: a.no_repack_small,
        dry_run: a.dry_run,
    };
    let pruned = if a.prune {
        Some(prune_with(&repo, &pruning)?)
    } else {
        None
    };
    for (id, e) in &done.damaged {
        out.warn(format!("snapshot {id}: {e} (left in place)"));
    }
    if out.json {
        out.print_json(&forget_json(&done, pruned.as_ref(), a.dry_run))?;
    } else if !out.quiet {
        print_forget(out, &done, &opts, pruned.as_ref(), a.dry_run);
    }
    if done.damaged.is_empty() {
        Ok(exit::OK)
    } else {
        Ok(exit::INCOMPLETE)
    }
}

/// Forget's outcome (and prune's, with `--prune`) as JSON.
fn forget_json(
    done: &ForgetOutcome,
    pruned: Option<&cairn::PruneReport>,
    dry_run: bool,
) -> serde_json::Value {
    let groups: Vec<_> = done
        .groups
        .iter()
        .map(|grp| {
            let snapshots: Vec<_> = grp
                .snapshots
                .iter()
                .map(|(d, s)| {
                    serde_json::json!({
                        "id": d.id,
                        "time": s.timestamp().to_string(),
                        "hostname": s.hostname,
                        "paths": s.display_paths(),
                        "tags": s.tags,
                        "keep": d.keep,
                        "reasons": d.reasons,
                    })
                })
                .collect();
            serde_json::json!({
                "host": grp.key.host,
                "paths": grp.key.display_paths(),
                "tags": grp.key.tags,
                "snapshots": snapshots,
            })
        })
        .collect();
    let damaged: Vec<_> = done
        .damaged
        .iter()
        .map(|(id, e)| serde_json::json!({"id": id, "error": e}))
        .collect();
    serde_json::json!({
        "dry_run": done.dry_run,
        "groups": groups,
        "removed": done.removed,
        "damaged": damaged,
        "pitr_chains_removed": done.chains_removed.iter().map(|(base, end)| serde_json::json!({"base": base, "until": end.to_string()})).collect::<Vec<_>>(),
        "pitr_segments_removed": done.segments_removed,
        "prune": pruned.map(|r| r.summary(dry_run)),
    })
}

/// Forget's plan per group, what it removed, and prune's report (with
/// `--prune`) as text.
fn print_forget(
    out: &Out,
    done: &ForgetOutcome,
    opts: &ForgetOptions,
    pruned: Option<&cairn::PruneReport>,
    dry_run: bool,
) {
    for grp in &done.groups {
        let kept = grp.snapshots.iter().filter(|(d, _)| d.keep).count();
        outln!(
            "{}: keep {kept}, remove {}",
            grp.key,
            grp.snapshots.len() - kept
        );
        outln!("  {:<8}  {:<19}  {:<6}  reasons", "id", "time", "action");
        for (d, s) in &grp.snapshots {
            let line = format!(
                "  {:<8}  {:<19}  {:<6}  {}",
                d.id.short(),
                local_time(s.timestamp(), &opts.tz),
                if d.keep { "keep" } else { "remove" },
                d.reasons.join(", ")
            );
            outln!("{}", line.trim_end());
        }
        outln!();
    }
    for id in &done.removed {
        let grouped = done
            .groups
            .iter()
            .any(|g| g.snapshots.iter().any(|(d, _)| d.id == *id));
        if !grouped {
            outln!(
                "snapshot {id}: {} (its file was damaged or already gone)",
                if done.dry_run {
                    "would remove"
                } else {
                    "removed"
                }
            );
        }
    }
    if opts.keep_pitr.is_some() {
        for (base, end) in &done.chains_removed {
            outln!(
                "WAL chain of base {} (covering up to {}): {}",
                base.short(),
                local_time(*end, &opts.tz),
                if done.dry_run {
                    "would remove"
                } else {
                    "removed"
                }
            );
        }
        outln!(
            "{} {} WAL segments",
            if done.dry_run {
                "would remove"
            } else {
                "removed"
            },
            done.segments_removed
        );
    }
    let n = done.removed.len();
    let noun = if n == 1 { "snapshot" } else { "snapshots" };
    if done.dry_run {
        outln!("would remove {n} {noun} (dry run: nothing was removed)");
    } else {
        outln!("removed {n} {noun}");
    }
    if let Some(r) = pruned {
        print_prune(out, r, dry_run);
    }
}
