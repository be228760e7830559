//! `cairn status`: how fresh every source's newest snapshot is, and
//! whether a later attempt failed, with an exit code for cron and
//! Nagios-style checks.

use anyhow::{Result, anyhow};
use clap::Args;

use super::commands::local_time;
use super::output::size;
use super::password::open;
use super::{Global, Out, exit};

#[derive(Debug, Args)]
#[command(after_help = "\
Sources are the components of applications (per host) and, for plain backups, each host
and set of paths. A source is stale when its newest snapshot is older than --max-age, and
failing when a snapshot attempt after it failed (from the audit log). The exit code is 14
when any source considered is stale or failing, 0 otherwise.")]
pub struct StatusArgs {
    /// A source whose newest snapshot is older than this is stale (e.g.
    /// 7h, 2d).
    #[arg(long, value_name = "DURATION")]
    max_age: Option<String>,
    /// Only the sources of this application (repeatable); with a profile
    /// loaded and no --app, its application.
    #[arg(long = "app", value_name = "NAME")]
    apps: Vec<String>,
}

pub fn status(g: &Global, out: &Out, a: &StatusArgs) -> Result<u8> {
    let max_age = a
        .max_age
        .as_deref()
        .map(|text| {
            let span: jiff::SignedDuration = text
                .parse::<jiff::Span>()
                .and_then(|s| s.to_duration(jiff::SpanRelativeTo::days_are_24_hours()))
                .map_err(|e| {
                    anyhow!("--max-age '{text}': {e}; give a duration such as 7h or 2d")
                })?;
            Ok::<_, anyhow::Error>(span.as_secs())
        })
        .transpose()?;
    let mut apps = a.apps.clone();
    if apps.is_empty()
        && let Some(p) = &g.loaded
    {
        apps.push(p.name.clone());
    }
    let (repo, _) = open(g)?;
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
    let bad = sources.iter().any(|s| stale(s) || s.failure.is_some());
    if out.json {
        let items: Vec<_> = sources
            .iter()
            .map(|s| {
                serde_json::json!({
                    "app": s.source.app,
                    "component": s.source.component,
                    "host": s.source.host,
                    "last_snapshot": s.last.map(|(id, _)| id),
                    "last_time": s.last.map(|(_, t)| t.to_string()),
                    "age_seconds": s.age_secs(now),
                    "duration_ms": s.duration_ms,
                    "bytes_added": s.bytes_added,
                    "snapshots": s.snapshots,
                    "stale": stale(s),
                    "failure": s.failure.as_ref().map(|(t, e)| serde_json::json!({"time": t.to_string(), "error": e})),
                    "failures_total": s.failures_total,
                })
            })
            .collect();
        out.print_json(&serde_json::json!({
            "ok": !bad,
            "sources": items,
            "snapshots": st.snapshots,
            "repository_bytes": st.repo_bytes,
            "problems": st.problems,
        }))?;
    } else {
        outln!(
            "{:<14}  {:<28}  {:<12}  {:<19}  {:>9}  state",
            "app",
            "component",
            "host",
            "newest",
            "age"
        );
        for s in &sources {
            let state = match (&s.failure, stale(s)) {
                (Some((t, e)), _) => format!("FAILING since {}: {e}", local_time(*t)),
                (None, true) => "STALE".to_owned(),
                (None, false) => "ok".to_owned(),
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
                s.last
                    .map_or_else(|| "never".to_owned(), |(_, t)| local_time(t)),
                s.age_secs(now).map_or_else(|| "-".to_owned(), age)
            );
        }
        out.info(format!(
            "{} sources, {} snapshots, repository {}",
            sources.len(),
            st.snapshots,
            size(st.repo_bytes)
        ));
    }
    for p in &st.problems {
        out.warn(p);
    }
    Ok(if bad { exit::STALE } else { exit::OK })
}

/// `3d 4h`, `5h 2m`, `40s` style ages.
fn age(secs: i64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m")
    } else {
        format!("{secs}s")
    }
}
