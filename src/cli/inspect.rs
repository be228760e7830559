//! `diff`, `find` and `dump`: arguments and rendering for the library's
//! inspection functions ([`cairn::diff`], [`cairn::find`], [`cairn::dump`]).
//!
//! These commands write their results to stdout, often into a pipe that
//! closes early (`| head`): a reader that went away ends the output quietly
//! with exit code 0, as it does for other Unix tools, instead of a panic or
//! an error message.

use std::collections::{HashMap, HashSet};
use std::io::{ErrorKind, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::{Result, anyhow};
use clap::Args;
use serde::Serialize;

use cairn::{Change, ChangeKind, DiffTotals, EntryType, Found, Snapshot, SnapshotId};

use super::exit;
use super::global::Global;
use super::output::{Out, local_time, size, terminal_safe};
use super::repo_open::open;
use super::select::damaged_hint;

/// Writes through a buffer to stdout. A closed pipe is not an error: the
/// reader has what it wanted.
fn to_stdout(write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<()> {
    let mut w = std::io::BufWriter::new(std::io::stdout().lock());
    match write(&mut w).and_then(|()| w.flush()) {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        done => Ok(done?),
    }
}

fn json_to_stdout<T: Serialize>(value: &T) -> Result<()> {
    to_stdout(|w| {
        serde_json::to_writer_pretty(&mut *w, value).map_err(std::io::Error::from)?;
        writeln!(w)
    })
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn rfc3339(secs: i64, nsec: u32) -> String {
    jiff::Timestamp::new(secs, i32::try_from(nsec).unwrap_or(0))
        .map(|t| t.to_string())
        .unwrap_or_default()
}

// ---------------------------------------------------------------- diff --

#[derive(Debug, Args)]
#[command(after_help = "\
Each line is one entry, an entry before what is below it:
  +  added            -  removed
  M  content changed (file bytes, symlink target or device number), with size before → after
  U  only metadata changed (mode, owner, group, modification time, extended attributes)
  T  type changed (for example a file that became a symlink)
Directories end in /. The entries below an added or removed directory are listed too.
A last line adds them up; 'data' counts file sizes added and removed.")]
pub struct DiffArgs {
    /// The older snapshot: id (or unique prefix), or `latest`.
    #[arg(value_name = "SNAPSHOT1")]
    before: String,
    /// The newer snapshot: id (or unique prefix), or `latest`.
    #[arg(value_name = "SNAPSHOT2")]
    after: String,
}

#[derive(Serialize)]
struct ChangeView {
    path: String,
    change: ChangeKind,
    type_before: Option<EntryType>,
    type_after: Option<EntryType>,
    size_before: u64,
    size_after: u64,
    /// For a captured database: the tables whose recorded row counts
    /// differ.
    #[serde(skip_serializing_if = "Option::is_none")]
    tables: Option<Vec<cairn::TableDiff>>,
}

/// `  table NAME: 3000 → 0 rows` (`-` for a table that is not there).
fn table_line(t: &cairn::TableDiff) -> String {
    let n = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    format!(
        "   {:>10}    table {}: {} → {} rows",
        "",
        t.name,
        n(t.before),
        n(t.after)
    )
}

/// Paths of directories end in `/`, as in `restic diff`, so that an added
/// directory is told from an added file at a glance.
fn shown_path(c: &Change) -> String {
    let mut p = lossy(&c.path);
    if c.type_after.or(c.type_before) == Some(EntryType::Dir) {
        p.push('/');
    }
    p
}

/// A size column: files only, blank for other types.
fn size_col(t: Option<EntryType>, n: u64) -> String {
    if t == Some(EntryType::File) {
        size(n)
    } else {
        String::new()
    }
}

fn type_name(t: Option<EntryType>) -> &'static str {
    t.map_or("nothing", EntryType::name)
}

fn change_line(c: &Change) -> String {
    let path = shown_path(c);
    match c.kind {
        ChangeKind::Added => format!("+  {:>10}  {path}", size_col(c.type_after, c.size_after)),
        ChangeKind::Removed => format!("-  {:>10}  {path}", size_col(c.type_before, c.size_before)),
        ChangeKind::Modified if c.type_after == Some(EntryType::File) => format!(
            "M  {:>10}  {path} ({} → {})",
            size(c.size_after),
            size(c.size_before),
            size(c.size_after)
        ),
        ChangeKind::Modified => format!("M  {:>10}  {path}", ""),
        ChangeKind::Metadata => format!("U  {:>10}  {path}", size_col(c.type_after, c.size_after)),
        ChangeKind::TypeChanged => format!(
            "T  {:>10}  {path} ({} → {})",
            size_col(c.type_after, c.size_after),
            type_name(c.type_before),
            type_name(c.type_after)
        ),
    }
}

fn totals_line(t: &DiffTotals) -> String {
    format!(
        "files: {} added, {} removed, {} changed; dirs: {} added, {} removed, {} changed; \
         others: {} added, {} removed, {} changed; type changed: {}; data: {} added, {} removed",
        t.files_added,
        t.files_removed,
        t.files_changed,
        t.dirs_added,
        t.dirs_removed,
        t.dirs_changed,
        t.others_added,
        t.others_removed,
        t.others_changed,
        t.type_changed,
        size(t.bytes_added),
        size(t.bytes_removed)
    )
}

pub fn diff(g: &Global, out: &Out, a: &DiffArgs) -> Result<u8> {
    let (repo, _) = open(g)?;
    let (id_a, snap_a) = repo.find_snapshot(&a.before)?;
    let (id_b, snap_b) = repo.find_snapshot(&a.after)?;
    let bar = out.progress(false, "comparing");
    let changes = cairn::diff(&repo, &snap_a.tree, &snap_b.tree);
    bar.finish_and_clear();
    let changes = changes?;
    let totals = DiffTotals::of(&changes);
    let mut tables: HashMap<Vec<u8>, Vec<cairn::TableDiff>> =
        cairn::table_diff(&snap_a, &snap_b).into_iter().collect();
    if out.json {
        let views: Vec<ChangeView> = changes
            .iter()
            .map(|c| ChangeView {
                path: lossy(&c.path),
                change: c.kind,
                type_before: c.type_before,
                type_after: c.type_after,
                size_before: c.size_before,
                size_after: c.size_after,
                tables: tables.remove(&c.path),
            })
            .collect();
        json_to_stdout(&serde_json::json!({
            "before": id_a,
            "after": id_b,
            "changes": views,
            "totals": totals,
        }))?;
        return Ok(exit::OK);
    }
    out.info(format!(
        "comparing snapshot {} ({}) with {} ({})",
        id_a.short(),
        local_time(snap_a.timestamp()),
        id_b.short(),
        local_time(snap_b.timestamp())
    ));
    to_stdout(|w| {
        for c in &changes {
            writeln!(w, "{}", terminal_safe(&change_line(c)))?;
            for t in tables.remove(&c.path).unwrap_or_default() {
                writeln!(w, "{}", terminal_safe(&table_line(&t)))?;
            }
        }
        if out.quiet {
            Ok(())
        } else if changes.is_empty() {
            writeln!(w, "no differences")
        } else {
            writeln!(w, "{}", totals_line(&totals))
        }
    })?;
    Ok(exit::OK)
}

// ---------------------------------------------------------------- find --

#[derive(Debug, Args)]
#[command(after_help = "\
Patterns use glob syntax: * ? [abc] {a,b} and ** (any number of directories); \\ escapes.
A pattern without / matches entry names at any depth: '*.sql' finds every .sql file.
A pattern with / matches full paths: '/home/*/notes.txt' from the snapshot's root,
'src/*.rs' at any depth. In them * does not match /, ** does. Quote patterns for the shell.")]
pub struct FindArgs {
    /// Glob patterns; an entry matching any of them is listed.
    #[arg(required = true, value_name = "PATTERN")]
    patterns: Vec<String>,
    /// Search only this snapshot: id (or unique prefix), or `latest`
    /// (repeatable). Default: every snapshot, newest first.
    #[arg(short, long = "snapshot", value_name = "SNAPSHOT")]
    snapshots: Vec<String>,
    /// Search only snapshots taken on this host (repeatable).
    #[arg(long = "host", value_name = "HOST")]
    hosts: Vec<String>,
    /// Let letters match in either case.
    #[arg(short, long)]
    ignore_case: bool,
}

#[derive(Serialize)]
struct FoundView<'a> {
    snapshot: SnapshotId,
    snapshot_time: String,
    hostname: &'a str,
    path: String,
    #[serde(rename = "type")]
    entry_type: EntryType,
    mode: String,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: String,
}

/// The snapshots to search, newest first: those named, or all. A damaged
/// snapshot file is named in a warning and makes the exit code 3; the
/// others are still searched.
fn snapshots_to_search(
    repo: &cairn::Repository,
    out: &Out,
    a: &FindArgs,
) -> Result<(Vec<(SnapshotId, Snapshot)>, u8)> {
    let mut code = exit::OK;
    let mut chosen: Vec<(SnapshotId, Snapshot)> = if a.snapshots.is_empty() {
        let mut all = Vec::new();
        for (id, s) in repo.snapshots()? {
            match s {
                Ok(s) => all.push((id, s)),
                Err(e) => {
                    out.warn(format!("snapshot {id} not searched: {e}"));
                    code = exit::INCOMPLETE;
                }
            }
        }
        all
    } else {
        let mut seen = HashSet::new();
        let mut named = Vec::new();
        for r in &a.snapshots {
            let (id, s) = repo.find_snapshot(r)?;
            if seen.insert(id) {
                named.push((id, s));
            }
        }
        named
    };
    if !a.hosts.is_empty() {
        chosen.retain(|(_, s)| a.hosts.contains(&s.hostname));
    }
    chosen.sort_by_key(|(id, s)| (std::cmp::Reverse((s.time, s.time_nsec)), *id));
    Ok((chosen, code))
}

pub fn find(g: &Global, out: &Out, a: &FindArgs) -> Result<u8> {
    let patterns = cairn::FindPatterns::new(&a.patterns, a.ignore_case)?;
    let (repo, _) = open(g)?;
    let (snaps, code) = snapshots_to_search(&repo, out, a)?;
    let roots: Vec<(SnapshotId, cairn::BlobId)> =
        snaps.iter().map(|(id, s)| (*id, s.tree)).collect();
    let by_id: HashMap<SnapshotId, &Snapshot> = snaps.iter().map(|(id, s)| (*id, s)).collect();
    let bar = out.progress(false, "searching");
    let done = cairn::find(&repo, &patterns, &roots);
    bar.finish_and_clear();
    let found = done?.found;
    let snap_of = |f: &Found| by_id.get(&f.snapshot).copied();
    if out.json {
        let views: Vec<FoundView<'_>> = found
            .iter()
            .filter_map(|f| {
                let s = snap_of(f)?;
                Some(FoundView {
                    snapshot: f.snapshot,
                    snapshot_time: s.timestamp().to_string(),
                    hostname: &s.hostname,
                    path: lossy(&f.path),
                    entry_type: f.entry.entry_type,
                    mode: format!("{:04o}", f.entry.mode),
                    uid: f.entry.uid,
                    gid: f.entry.gid,
                    size: f.entry.size,
                    mtime: rfc3339(f.entry.mtime, f.entry.mtime_nsec),
                })
            })
            .collect();
        json_to_stdout(&views)?;
    } else if !found.is_empty() {
        to_stdout(|w| {
            writeln!(
                w,
                "{:<8}  {:<19}  {:<8}  {:>10}  {:<19}  path",
                "snapshot", "snapshot time", "type", "size", "modified"
            )?;
            for f in &found {
                let Some(s) = snap_of(f) else { continue };
                let mtime = jiff::Timestamp::from_second(f.entry.mtime)
                    .map(local_time)
                    .unwrap_or_default();
                writeln!(
                    w,
                    "{:<8}  {:<19}  {:<8}  {:>10}  {:<19}  {}",
                    f.snapshot.short(),
                    local_time(s.timestamp()),
                    f.entry.entry_type.name(),
                    size_col(Some(f.entry.entry_type), f.entry.size),
                    mtime,
                    terminal_safe(&String::from_utf8_lossy(&f.path))
                )?;
            }
            Ok(())
        })?;
    }
    let in_snaps: HashSet<SnapshotId> = found.iter().map(|f| f.snapshot).collect();
    if found.is_empty() {
        out.info(format!("no matches in {} snapshot(s)", snaps.len()));
    } else {
        out.info(format!(
            "{} match(es) in {} of {} snapshot(s)",
            found.len(),
            in_snaps.len(),
            snaps.len()
        ));
    }
    Ok(code)
}

// ---------------------------------------------------------------- dump --

#[derive(Debug, Args)]
#[command(after_help = "\
The bytes go to stdout as they are, binary or not: redirect them to a file or a pipe,
for example `cairn dump latest /srv/db.sql | psql`. A stream saved with
`cairn backup --stdin-from-command NAME` or `--stdin --stdin-name NAME` is the file NAME
(or /NAME): `cairn dump latest app.sql | psql appdb`. Every chunk is checked before it is
written: a damaged one stops the dump with exit code 3, after the chunks before it.
For a directory, use `cairn restore SNAPSHOT --target DIR --include PATH`.")]
pub struct DumpArgs {
    /// Snapshot id (or unique prefix), or `latest`.
    snapshot: String,
    /// Path of a regular file in the snapshot, as `cairn ls` shows it (a
    /// stream's NAME, with or without its leading `/`).
    path: PathBuf,
    /// Choose `latest` among the readable snapshots only. Without it a
    /// damaged snapshot file stops the command: it may be the newest.
    #[arg(long)]
    skip_damaged: bool,
}

pub fn dump(g: &Global, _out: &Out, a: &DumpArgs) -> Result<u8> {
    let (repo, _) = open(g)?;
    let damaged = if a.skip_damaged {
        cairn::DamagedSnapshots::Skip
    } else {
        cairn::DamagedSnapshots::Refuse
    };
    let (_, snap) = damaged_hint(
        repo.find_snapshot_with(&a.snapshot, damaged),
        !a.skip_damaged && a.snapshot == "latest",
    )?;
    let path = a.path.as_os_str().as_bytes();
    let node = cairn::find_node(&repo, &snap.tree, path)?.ok_or_else(|| {
        anyhow!(
            "{} is the snapshot's root directory, and dump writes one file: use `cairn restore {} --target DIR`",
            a.path.display(),
            a.snapshot
        )
    })?;
    // Chunks are hundreds of KiB, far larger than any useful buffer: they
    // go to stdout as they are, without another copy.
    let mut stdout = std::io::stdout().lock();
    match cairn::dump(&repo, path, &node, &mut stdout) {
        Ok(_) => Ok(exit::OK),
        Err(cairn::Error::Output { source }) if source.kind() == ErrorKind::BrokenPipe => {
            Ok(exit::OK)
        }
        Err(e) => Err(e.into()),
    }
}
