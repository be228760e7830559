//! `cairn ls`: the files of a snapshot, or of a path in it.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use cairn::{Node, NodeKind};

use super::exit;
use super::global::Global;
use super::output::{Out, local_time, terminal_safe, terminal_safe_bytes};
use super::render::{NodeView, database_line, node_view};
use super::repo_open::open;
use super::select::AtArgs;

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Snapshot id (or unique prefix), or `latest`; left out with --at.
    snapshot: Option<String>,
    /// Directory or file inside the snapshot to list (default: everything).
    path: Option<PathBuf>,
    #[command(flatten)]
    at: AtArgs,
    /// Show type, mode, owner, size and time.
    #[arg(short, long)]
    long: bool,
}

fn print_node(
    out: &Out,
    path: &[u8],
    n: &Node,
    long: bool,
    dbs: &[cairn::DatabaseInfo],
    json_items: &mut Vec<NodeView>,
) {
    let db = dbs.iter().find(|d| d.path == path);
    if out.json {
        let mut v = node_view(path, n, false);
        v.tables = db.map(|d| d.tables.clone());
        json_items.push(v);
        return;
    }
    let mut stdout = std::io::stdout().lock();
    if long {
        let v = node_view(path, n, false);
        let _ = write!(
            stdout,
            "{:<8} {} {:>5} {:>5} {:>10} {} ",
            v.kind,
            v.mode,
            v.uid,
            v.gid,
            v.size,
            local_time(jiff::Timestamp::new(n.mtime, 0).unwrap_or(jiff::Timestamp::UNIX_EPOCH))
        );
    }
    // Names are raw bytes: printed as they are but for control characters,
    // which are escaped rather than sent to the terminal.
    let _ = stdout.write_all(&terminal_safe_bytes(path));
    if let (true, NodeKind::Symlink { target }) = (long, &n.kind) {
        let _ = stdout.write_all(b" -> ");
        let _ = stdout.write_all(&terminal_safe_bytes(target));
    }
    if let Some(d) = db {
        let _ = write!(stdout, "  [{}]", terminal_safe(&database_line(d)));
    }
    let _ = stdout.write_all(b"\n");
}

pub fn ls(g: &Global, out: &Out, a: &LsArgs) -> Result<u8> {
    let (repo, _) = open(g)?;
    // With --at the one positional argument is the path.
    let (snapshot, path) = match (&a.at.at, &a.snapshot, &a.path) {
        (Some(_), Some(p), None) => (None, Some(PathBuf::from(p))),
        (_, s, p) => (s.as_deref(), p.clone()),
    };
    let (_, snap) = a.at.resolve(&repo, snapshot)?;
    let prefix = path
        .as_ref()
        .map(|p| p.as_os_str().as_bytes().to_vec())
        .unwrap_or_default();
    let mut items = Vec::new();
    let start = cairn::find_node(&repo, &snap.tree, &prefix)?;
    let mut base = b"/".to_vec();
    base.extend(prefix.iter().copied().skip_while(|&b| b == b'/'));
    match &start {
        None => cairn::walk_tree(&repo, &snap.tree, b"/", &mut |p, n| {
            print_node(out, p, n, a.long, &snap.databases, &mut items);
        })?,
        Some(node) => {
            print_node(out, &base, node, a.long, &snap.databases, &mut items);
            if let NodeKind::Dir { subtree } = &node.kind {
                cairn::walk_tree(&repo, subtree, &base, &mut |p, n| {
                    print_node(out, p, n, a.long, &snap.databases, &mut items);
                })?;
            }
        }
    }
    if out.json {
        out.print_json(&items)?;
    }
    Ok(exit::OK)
}
