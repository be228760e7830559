//! `cairn log`: the repository's audit log.

use anyhow::Result;
use clap::Args;

use super::exit;
use super::global::Global;
use super::output::{Out, local_time};
use super::repo_open::open;

#[derive(Debug, Args)]
#[command(after_help = "\
Every backup, snap, restore, forget, prune and key change is recorded in the repository
(audit/), by whom (user@host, token:NAME for the HTTP API) and with its result. cairn never
changes or deletes an event; one removed from the middle of the log is reported.")]
pub struct LogArgs {
    /// Show only the N newest events.
    #[arg(short = 'n', long, value_name = "N")]
    last: Option<usize>,
}

pub fn log(g: &Global, out: &Out, a: &LogArgs) -> Result<u8> {
    let (repo, _) = open(g)?;
    let log = cairn::audit_log(&repo, a.last)?;
    if out.json {
        // Through a Value, whose keys sort, as `GET /api/log` renders it.
        out.print_json(&serde_json::to_value(cairn::LogView::new(&log))?)?;
    } else {
        for (_, e) in &log.events {
            outln!(
                "{}  {:<24}  {:<17}  {:<6}  {}{}",
                local_time(e.timestamp()),
                e.actor,
                e.action,
                if e.ok { "ok" } else { "FAILED" },
                e.target,
                if e.detail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", e.detail)
                }
            );
        }
        out.info(format!("{} events", log.events.len()));
    }
    for p in &log.problems {
        out.warn(p);
    }
    Ok(if log.problems.is_empty() {
        exit::OK
    } else {
        exit::INCOMPLETE
    })
}
