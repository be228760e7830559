//! `cairn unlock`: remove stale locks left by processes that are gone.

use anyhow::Result;
use clap::Args;

use super::exit;
use super::global::Global;
use super::output::Out;
use super::repo_open::open;

#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// Remove every lock, not only stale ones: only when you know no other
    /// cairn is using the repository (for example a lock nobody can read).
    #[arg(long)]
    remove_all: bool,
}

pub fn unlock(g: &Global, out: &Out, a: &UnlockArgs) -> Result<u8> {
    let (repo, _) = open(g)?;
    let done = repo.unlock(a.remove_all)?;
    if out.json {
        let view = |v: &[(cairn::LockId, String)]| -> Vec<serde_json::Value> {
            v.iter()
                .map(|(id, what)| serde_json::json!({"id": id, "lock": what}))
                .collect()
        };
        out.print_json(&serde_json::json!({
            "removed": view(&done.removed),
            "kept": view(&done.kept),
        }))?;
    } else {
        for (id, what) in &done.removed {
            out.info(format!("removed lock {}: {what}", id.short()));
        }
        for (id, what) in &done.kept {
            out.info(format!(
                "kept lock {}: {what} (its process is alive; --remove-all removes it anyway)",
                id.short()
            ));
        }
        out.info(format!("{} lock(s) removed", done.removed.len()));
    }
    Ok(exit::OK)
}
