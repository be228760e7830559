//! `cairn status`: how fresh every source's newest snapshot is, and
//! whether a later attempt failed, with an exit code for cron and
//! Nagios-style checks.

use anyhow::{Result, anyhow};
use clap::Args;
use serde::Serialize;

use cairn::notify::{Alert, MinFree, free_space};

use super::exit;
use super::global::Global;
use super::notify::{NotifyArgs, send_all};
use super::output::{Out, local_time, size};
use super::repo_open::open;

#[derive(Debug, Args)]
#[command(after_help = "\
Sources are the components of applications (per host) and, for plain backups, each host
and set of paths; a database `cairn watch` follows is one, whose newest moment is the newest
its watcher stored. A source is stale when its newest snapshot is older than --max-age, and
failing when a snapshot attempt after it failed (from the audit log). With --min-free,
free space on the repository's file system (as an unprivileged user may use it) below the
limit is low space. The exit code is 14 when any source considered is stale or failing or
space is low, 0 otherwise.

Every stale or failing source and low space is an alert, sent to --notify-command and
--notify-url when given (nothing is sent when all is well). An alert is JSON: kind
(failure, stale, low_space), app, component, host, message, time, repository, and
last_snapshot_time, age_seconds, error, free_bytes, min_free_bytes where they apply.
A notification that cannot be delivered is a warning; the exit code stays the status's.")]
pub struct StatusArgs {
    /// A source whose newest snapshot is older than this is stale (e.g.
    /// 7h, 2d).
    #[arg(long, value_name = "DURATION")]
    max_age: Option<String>,
    /// Only the sources of this application (repeatable); with a profile
    /// loaded and no --app, its application.
    #[arg(long = "app", value_name = "NAME")]
    apps: Vec<String>,
    /// Low space when less than this is free where the repository is:
    /// a size (10GiB, 500MB) or a share of the file system (5%).
    #[arg(long, value_name = "SIZE")]
    min_free: Option<String>,
    #[command(flatten)]
    notify: NotifyArgs,
}

/// `cairn status --json`: the sources as `GET /api/status` shows them
/// ([`cairn::SourceView`]), each with whether it is stale, and what only
/// the command line checks: free space and the alerts sent. The
/// repository's size is `repository_bytes` here and `repo_bytes` in the
/// API; each keeps the name its users read.
#[derive(Serialize)]
struct StatusJson<'a> {
    /// No source stale or failing, and space not low.
    ok: bool,
    sources: Vec<SourceJson>,
    snapshots: u64,
    repository_bytes: u64,
    /// With --min-free.
    free_space: Option<FreeSpaceJson>,
    alerts: &'a [Alert],
    /// Alerts that could not be delivered.
    notify_errors: &'a [String],
    problems: &'a [String],
}

/// One source of [`StatusJson`].
#[derive(Serialize)]
struct SourceJson {
    #[serde(flatten)]
    source: cairn::SourceView,
    /// Older than --max-age (or, with it, never backed up).
    stale: bool,
}

/// Free space where the repository is, against --min-free.
#[derive(Serialize)]
struct FreeSpaceJson {
    available_bytes: u64,
    total_bytes: u64,
    min_free_bytes: Option<u64>,
    low: bool,
}

/// `--max-age` in seconds (a day is 24 hours).
fn parse_max_age(text: &str) -> Result<i64> {
    let span: jiff::SignedDuration = text
        .parse::<jiff::Span>()
        .and_then(|s| s.to_duration(jiff::SpanRelativeTo::days_are_24_hours()))
        .map_err(|e| anyhow!("--max-age '{text}': {e}; give a duration such as 7h or 2d"))?;
    Ok(span.as_secs())
}

pub fn status(g: &Global, out: &Out, a: &StatusArgs) -> Result<u8> {
    let max_age = a.max_age.as_deref().map(parse_max_age).transpose()?;
    let min_free = a
        .min_free
        .as_deref()
        .map(str::parse::<MinFree>)
        .transpose()?;
    let notifier = a.notify.notifier()?;
    let mut apps = a.apps.clone();
    if apps.is_empty()
        && let Some(p) = &g.loaded
    {
        apps.push(p.name.clone());
    }
    let (repo, loc) = open(g)?;
    let location = repo.backend().location();
    let st = cairn::status(&repo)?;
    let now = jiff::Timestamp::now();
    let sources: Vec<&cairn::SourceStatus> = st
        .sources
        .iter()
        .filter(|s| apps.is_empty() || apps.contains(&s.source.app))
        .collect();
    let stale = |s: &cairn::SourceStatus| match (max_age, s.age_secs(now)) {
        (Some(limit), Some(age)) => age > limit,
        (Some(_), None) => true,
        (None, _) => false,
    };
    let space = min_free.map(|_| free_space(&loc.path)).transpose()?;
    let mut alerts: Vec<Alert> = Vec::new();
    for s in &sources {
        alerts.extend(Alert::failure(s, now, &location));
        if let Some(limit) = max_age {
            alerts.extend(Alert::stale(s, limit, now, &location));
        }
    }
    if let (Some(min), Some(space)) = (&min_free, &space) {
        alerts.extend(Alert::low_space(space, min, now, &location));
    }
    let low_space = alerts
        .iter()
        .any(|a| a.kind == cairn::notify::AlertKind::LowSpace);
    let bad = !alerts.is_empty();
    let notify_errors = send_all(notifier.as_ref(), &alerts, out);
    if out.json {
        let report = StatusJson {
            ok: !bad,
            sources: sources
                .iter()
                .map(|s| SourceJson {
                    source: cairn::SourceView::new(s, now),
                    stale: stale(s),
                })
                .collect(),
            snapshots: st.snapshots,
            repository_bytes: st.repo_bytes,
            free_space: space.map(|f| FreeSpaceJson {
                available_bytes: f.available,
                total_bytes: f.total,
                min_free_bytes: min_free.map(|m| m.bytes(&f)),
                low: low_space,
            }),
            alerts: &alerts,
            notify_errors: &notify_errors,
            problems: &st.problems,
        };
        // Through a Value, whose keys sort: the output stays what it was
        // when it was built with `json!`.
        out.print_json(&serde_json::to_value(&report)?)?;
    } else {
        print_sources(&sources, &stale, now);
        out.info(format!(
            "{} sources, {} snapshots, repository {}",
            sources.len(),
            st.snapshots,
            size(st.repo_bytes)
        ));
        if let (Some(min), Some(f)) = (&min_free, &space) {
            let state = if low_space { "LOW SPACE" } else { "ok" };
            outln!(
                "free space: {} of {} (limit {min}): {state}",
                size(f.available),
                size(f.total)
            );
        }
    }
    for p in &st.problems {
        out.warn(p);
    }
    Ok(if bad { exit::STALE } else { exit::OK })
}

/// The table of sources: newest snapshot, age and state of each.
fn print_sources(
    sources: &[&cairn::SourceStatus],
    stale: &dyn Fn(&cairn::SourceStatus) -> bool,
    now: jiff::Timestamp,
) {
    outln!(
        "{:<14}  {:<28}  {:<12}  {:<19}  {:>9}  state",
        "app",
        "component",
        "host",
        "newest",
        "age"
    );
    for s in sources {
        let ended = s.watch.as_ref().and_then(|w| w.ended.as_deref());
        let state = match (&s.failure, stale(s), ended) {
            (Some((t, e)), _, _) => format!("FAILING since {}: {e}", local_time(*t)),
            (None, true, _) => "STALE".to_owned(),
            (None, false, Some(why)) => format!("ok; watch ended: {why}"),
            (None, false, None) if s.watch.is_some() => "ok, watched".to_owned(),
            (None, false, None) => "ok".to_owned(),
        };
        outln!(
            "{:<14}  {:<28}  {:<12}  {:<19}  {:>9}  {state}",
            if s.source.app.is_empty() {
                "-"
            } else {
                &s.source.app
            },
            s.source.component,
            s.source.host,
            s.newest().map_or_else(|| "never".to_owned(), local_time),
            s.age_secs(now)
                .map_or_else(|| "-".to_owned(), cairn::notify::human_age)
        );
    }
}
