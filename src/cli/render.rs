//! Renderings several commands share: tree nodes (`ls`, `cat tree`), the
//! text lines of applications and databases, a finished backup (`backup`,
//! `snap`), and the command that undoes a restore. Snapshots and reports
//! as JSON are the library's own types (`cairn::SnapshotView`, the
//! reports), which the HTTP API serializes too.

use anyhow::Result;
use serde::Serialize;

use cairn::{BlobId, Node, NodeKind};

use super::global::Global;
use super::output::{Out, size};

fn lossy(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

/// The text line under an application snapshot: components and git state.
pub fn app_line(app: &cairn::AppInfo) -> String {
    let comps: Vec<&str> = app.components.iter().map(|c| c.name.as_str()).collect();
    let git = match &app.git {
        None => "no git".to_owned(),
        Some(g) => {
            let commit = g.commit.get(..10).unwrap_or(&g.commit);
            format!(
                "git {} {}{}",
                g.branch.as_deref().unwrap_or("(detached)"),
                if commit.is_empty() {
                    "(no commit)"
                } else {
                    commit
                },
                if g.dirty { " dirty" } else { "" }
            )
        }
    };
    format!("app {} [{}]  {git}", app.name, comps.join(", "))
}

/// The text line of a captured database: its tables' row counts.
pub fn database_line(d: &cairn::DatabaseInfo) -> String {
    let tables: Vec<String> = d
        .tables
        .iter()
        .map(|t| format!("{} {}", t.name, t.rows))
        .collect();
    format!("database {}: {}", lossy(&d.path), tables.join(", "))
}

#[derive(Serialize)]
pub struct NodeView {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subtree: Option<BlobId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<Vec<BlobId>>,
    /// For a file whose chunks are listed in list blobs: the root list and
    /// its depth.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_list: Option<(BlobId, u8)>,
    /// For a captured SQLite database: its tables' row counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tables: Option<Vec<cairn::TableRows>>,
}

fn kind_name(k: &NodeKind) -> &'static str {
    match k {
        NodeKind::File { .. } | NodeKind::ListedFile { .. } => "file",
        NodeKind::Dir { .. } => "dir",
        NodeKind::Symlink { .. } => "symlink",
        NodeKind::Fifo => "fifo",
        NodeKind::Socket => "socket",
        NodeKind::CharDevice { .. } => "chardev",
        NodeKind::BlockDevice { .. } => "blockdev",
    }
}

pub fn node_view(path: &[u8], n: &Node, with_content: bool) -> NodeView {
    let mtime = jiff::Timestamp::new(n.mtime, i32::try_from(n.mtime_nsec).unwrap_or(0))
        .map(|t| t.to_string())
        .unwrap_or_default();
    NodeView {
        path: String::from_utf8_lossy(path).into_owned(),
        kind: kind_name(&n.kind),
        mode: format!("{:04o}", n.mode),
        uid: n.uid,
        gid: n.gid,
        size: n.size,
        mtime,
        target: match &n.kind {
            NodeKind::Symlink { target } => Some(String::from_utf8_lossy(target).into_owned()),
            _ => None,
        },
        subtree: match &n.kind {
            NodeKind::Dir { subtree } => Some(*subtree),
            _ => None,
        },
        content: match &n.kind {
            NodeKind::File { content } if with_content => Some(content.clone()),
            _ => None,
        },
        content_list: match &n.kind {
            // One id, unlike an inline list: always shown.
            NodeKind::ListedFile { list, depth } => Some((*list, *depth)),
            _ => None,
        },
        tables: None,
    }
}

/// The JSON record of a finished backup.
/// Prints a finished backup's warnings and report.
pub fn print_backup(out: &Out, done: &cairn::BackupOutcome) -> Result<()> {
    for w in &done.warnings {
        out.warn(w);
    }
    let s = &done.snapshot.summary;
    if out.json {
        out.print_json(&done.report())?;
    } else if !out.quiet {
        outln!("snapshot {} saved", done.id.short());
        outln!(
            // Files of the parent whose content was read again: changed,
            // or too new to trust their stat (store-format.md §snapshot
            // summary); "changed" would overstate a fresh copy's second
            // backup.
            "  files: {} new, {} re-read, {} unchanged; {} directories, {} other",
            s.files_new,
            s.files_changed,
            s.files_unchanged,
            s.dirs,
            s.others
        );
        outln!(
            "  read {}, added {} of new data to the repository ({} stored)",
            size(s.bytes_read),
            size(s.bytes_added),
            size(s.bytes_stored)
        );
        outln!(
            "  total {} in this snapshot; took {:.2}s",
            size(s.total_size),
            s.duration_ms as f64 / 1000.0
        );
        if let Some(app) = &done.snapshot.app {
            outln!("  {}", app_line(app));
        }
        for d in &done.snapshot.databases {
            outln!("  {}", database_line(d));
        }
    }
    Ok(())
}

/// The command that undoes a restore, as it runs from any directory: the
/// repository named unless the profile names it (a relative location made
/// absolute), the profile named so that its password source applies.
pub fn undo_command(g: &Global, undo: &cairn::Undo) -> String {
    let from_profile = g
        .loaded
        .as_ref()
        .is_some_and(|p| p.repo.is_some() && p.repo == g.repo && undo.profile.is_some());
    let repo = g.repo.as_ref().filter(|_| !from_profile).map(|r| {
        let s = r.to_string_lossy().into_owned();
        if cairn::is_url(r) {
            s
        } else {
            cairn::absolute_path(r).map_or(s, |a| a.to_string_lossy().into_owned())
        }
    });
    undo.command(repo.as_deref())
}
