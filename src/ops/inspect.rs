//! Inspection of stored snapshots without restoring them: what changed
//! between two trees ([`diff`]), which entries of one or more snapshots
//! match glob patterns ([`find`]), and one file's content streamed out
//! ([`dump`]).
//!
//! All three read only trees and, for `dump`, the blobs of one file, each
//! through [`Repository::read_blob`], so every byte they report on has been
//! checked against its id and damage fails with the object's id rather than
//! being skipped. Both tree walks exploit content addressing: a subtree's id
//! is a hash of everything below it, so `diff` never opens a subtree whose
//! id is the same on both sides (its cost follows the size of the change,
//! not of the snapshot), and `find` searches a subtree shared by many
//! snapshots once.

use std::collections::HashMap;
use std::io::Write;
use std::rc::Rc;

use globset::{Candidate, GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind};
use crate::id::{BlobId, SnapshotId};
use crate::repo::Repository;

/// What kind of entry a node is, without the kind's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A character device.
    #[serde(rename = "chardev")]
    CharDevice,
    /// A block device.
    #[serde(rename = "blockdev")]
    BlockDevice,
}

impl EntryType {
    /// The type of `kind`.
    #[must_use]
    pub fn of(kind: &NodeKind) -> Self {
        match kind {
            NodeKind::File { .. } | NodeKind::ListedFile { .. } => Self::File,
            NodeKind::Dir { .. } => Self::Dir,
            NodeKind::Symlink { .. } => Self::Symlink,
            NodeKind::Fifo => Self::Fifo,
            NodeKind::Socket => Self::Socket,
            NodeKind::CharDevice { .. } => Self::CharDevice,
            NodeKind::BlockDevice { .. } => Self::BlockDevice,
        }
    }

    /// The name `ls --json` and `cat tree` use: `file`, `dir`, `symlink`,
    /// `fifo`, `socket`, `chardev`, `blockdev`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Dir => "dir",
            Self::Symlink => "symlink",
            Self::Fifo => "fifo",
            Self::Socket => "socket",
            Self::CharDevice => "chardev",
            Self::BlockDevice => "blockdev",
        }
    }
}

// ---------------------------------------------------------------- diff --

/// How an entry differs between the two sides of a [`diff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Only on the second side.
    Added,
    /// Only on the first side.
    Removed,
    /// Same type, different content: a file's chunk list (and so its
    /// bytes), a symlink's target or a device's number. Metadata may have
    /// changed too.
    Modified,
    /// Same type and content; only mode, owner, group, modification time
    /// or extended attributes differ.
    Metadata,
    /// A different type of entry under the same name (a file that became a
    /// symlink, a directory that became a file). What was below a former
    /// directory is reported as removed, what is below a new one as added.
    TypeChanged,
}

/// One difference found by [`diff`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Path from the compared trees' root, starting with `/`, raw bytes.
    pub path: Vec<u8>,
    /// What changed.
    pub kind: ChangeKind,
    /// The entry's type on the first side (`None` when added).
    pub type_before: Option<EntryType>,
    /// The entry's type on the second side (`None` when removed).
    pub type_after: Option<EntryType>,
    /// Size on the first side: a file's length, 0 for other types and when
    /// absent.
    pub size_before: u64,
    /// Size on the second side, as `size_before`.
    pub size_after: u64,
}

/// Counts over a list of [`Change`]s ([`DiffTotals::of`]).
///
/// Entries are counted by type: `files` are regular files, `dirs`
/// directories, `others` everything else (symlinks, FIFOs, sockets,
/// devices). `*_changed` counts entries of the same type on both sides that
/// were modified or changed only metadata; entries that changed type are
/// counted only in `type_changed`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DiffTotals {
    /// Regular files added.
    pub files_added: u64,
    /// Regular files removed.
    pub files_removed: u64,
    /// Regular files modified or with changed metadata.
    pub files_changed: u64,
    /// Directories added.
    pub dirs_added: u64,
    /// Directories removed.
    pub dirs_removed: u64,
    /// Directories whose own metadata changed (their entries are counted
    /// on their own).
    pub dirs_changed: u64,
    /// Other entries added.
    pub others_added: u64,
    /// Other entries removed.
    pub others_removed: u64,
    /// Other entries modified or with changed metadata.
    pub others_changed: u64,
    /// Entries whose type changed.
    pub type_changed: u64,
    /// Bytes of file content added: the size of every file added (or that
    /// a type change brought), plus the growth of every modified file.
    pub bytes_added: u64,
    /// Bytes of file content removed: the size of every file removed (or
    /// that a type change took away), plus the shrinkage of every modified
    /// file. So `bytes_added - bytes_removed` is how much the files' total
    /// size grew.
    pub bytes_removed: u64,
}

impl DiffTotals {
    /// Adds up `changes`.
    #[must_use]
    pub fn of(changes: &[Change]) -> Self {
        let mut t = Self::default();
        for c in changes {
            let ty = c.type_after.or(c.type_before);
            let (added, removed, changed) = match ty {
                Some(EntryType::File) => (
                    &mut t.files_added,
                    &mut t.files_removed,
                    &mut t.files_changed,
                ),
                Some(EntryType::Dir) => {
                    (&mut t.dirs_added, &mut t.dirs_removed, &mut t.dirs_changed)
                }
                _ => (
                    &mut t.others_added,
                    &mut t.others_removed,
                    &mut t.others_changed,
                ),
            };
            match c.kind {
                ChangeKind::Added => *added += 1,
                ChangeKind::Removed => *removed += 1,
                ChangeKind::Modified | ChangeKind::Metadata => *changed += 1,
                ChangeKind::TypeChanged => t.type_changed += 1,
            }
            // Sizes are 0 for everything but files and for absent sides,
            // so this covers additions, removals, type changes and
            // modifications alike.
            t.bytes_added += c.size_after.saturating_sub(c.size_before);
            t.bytes_removed += c.size_before.saturating_sub(c.size_after);
        }
        t
    }
}

/// Joins a directory path and an entry name with `/`.
fn join(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = Vec::with_capacity(prefix.len() + 1 + name.len());
    path.extend_from_slice(prefix);
    path.push(b'/');
    path.extend_from_slice(name);
    path
}

/// Metadata a user sees and restore sets. `ctime`, inode, device and link
/// count are left out on purpose: they change whenever a file is recreated
/// identically (a checkout, a copy) and mean nothing once restored.
fn same_metadata(a: &Node, b: &Node) -> bool {
    a.mode == b.mode
        && a.uid == b.uid
        && a.gid == b.gid
        && a.mtime == b.mtime
        && a.mtime_nsec == b.mtime_nsec
        && a.xattrs == b.xattrs
}

/// Content equality for two nodes of the same type. Files are equal when
/// their chunk lists are: chunk ids are keyed hashes of the bytes, so equal
/// lists mean equal bytes without reading any.
fn same_content(a: &Node, b: &Node) -> bool {
    match (&a.kind, &b.kind) {
        (NodeKind::File { content: x }, NodeKind::File { content: y }) => {
            x == y && a.size == b.size
        }
        // Lists are cut where the ids say, so equal content gives the same
        // root; a file listed inline on one side and by lists on the other
        // has a different number of chunks, so different content.
        (
            NodeKind::ListedFile { list: x, depth: dx },
            NodeKind::ListedFile { list: y, depth: dy },
        ) => x == y && dx == dy && a.size == b.size,
        (NodeKind::File { .. }, NodeKind::ListedFile { .. })
        | (NodeKind::ListedFile { .. }, NodeKind::File { .. }) => false,
        (NodeKind::Symlink { target: x }, NodeKind::Symlink { target: y }) => x == y,
        (NodeKind::CharDevice { rdev: x }, NodeKind::CharDevice { rdev: y })
        | (NodeKind::BlockDevice { rdev: x }, NodeKind::BlockDevice { rdev: y }) => x == y,
        _ => true,
    }
}

fn change(path: Vec<u8>, kind: ChangeKind, before: Option<&Node>, after: Option<&Node>) -> Change {
    Change {
        path,
        kind,
        type_before: before.map(|n| EntryType::of(&n.kind)),
        type_after: after.map(|n| EntryType::of(&n.kind)),
        size_before: before.map_or(0, |n| n.size),
        size_after: after.map_or(0, |n| n.size),
    }
}

fn subtree(n: &Node) -> Option<&BlobId> {
    match &n.kind {
        NodeKind::Dir { subtree } => Some(subtree),
        _ => None,
    }
}

/// Reports every entry below `tree` as added (`added`) or removed.
fn diff_one_side(
    repo: &Repository,
    tree: &BlobId,
    prefix: &[u8],
    added: bool,
    out: &mut Vec<Change>,
) -> Result<()> {
    for node in &repo.read_tree(tree)?.nodes {
        let path = join(prefix, &node.name);
        let sub = subtree(node);
        out.push(if added {
            change(path.clone(), ChangeKind::Added, None, Some(node))
        } else {
            change(path.clone(), ChangeKind::Removed, Some(node), None)
        });
        if let Some(sub) = sub {
            diff_one_side(repo, sub, &path, added, out)?;
        }
    }
    Ok(())
}

/// Compares two entries of the same name and descends into directories.
fn diff_nodes(
    repo: &Repository,
    a: &Node,
    b: &Node,
    path: Vec<u8>,
    out: &mut Vec<Change>,
) -> Result<()> {
    let (ta, tb) = (EntryType::of(&a.kind), EntryType::of(&b.kind));
    if ta != tb {
        out.push(change(
            path.clone(),
            ChangeKind::TypeChanged,
            Some(a),
            Some(b),
        ));
        if let Some(sub) = subtree(a) {
            diff_one_side(repo, sub, &path, false, out)?;
        }
        if let Some(sub) = subtree(b) {
            diff_one_side(repo, sub, &path, true, out)?;
        }
        return Ok(());
    }
    if !same_content(a, b) {
        out.push(change(path.clone(), ChangeKind::Modified, Some(a), Some(b)));
    } else if !same_metadata(a, b) {
        out.push(change(path.clone(), ChangeKind::Metadata, Some(a), Some(b)));
    }
    if let (Some(sa), Some(sb)) = (subtree(a), subtree(b)) {
        diff_trees(repo, sa, sb, &path, out)?;
    }
    Ok(())
}

fn diff_trees(
    repo: &Repository,
    a: &BlobId,
    b: &BlobId,
    prefix: &[u8],
    out: &mut Vec<Change>,
) -> Result<()> {
    // Equal ids mean equal trees all the way down: nothing to read.
    if a == b {
        return Ok(());
    }
    let (ta, tb) = (repo.read_tree(a)?, repo.read_tree(b)?);
    // Trees are sorted by name bytes (checked when decoded), so one merge
    // pass pairs up entries of the same name.
    let mut ia = ta.nodes.iter().peekable();
    let mut ib = tb.nodes.iter().peekable();
    loop {
        let order = match (ia.peek(), ib.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => x.name.cmp(&y.name),
        };
        match order {
            std::cmp::Ordering::Less => {
                if let Some(x) = ia.next() {
                    let path = join(prefix, &x.name);
                    out.push(change(path.clone(), ChangeKind::Removed, Some(x), None));
                    if let Some(sub) = subtree(x) {
                        diff_one_side(repo, sub, &path, false, out)?;
                    }
                }
            }
            std::cmp::Ordering::Greater => {
                if let Some(y) = ib.next() {
                    let path = join(prefix, &y.name);
                    out.push(change(path.clone(), ChangeKind::Added, None, Some(y)));
                    if let Some(sub) = subtree(y) {
                        diff_one_side(repo, sub, &path, true, out)?;
                    }
                }
            }
            std::cmp::Ordering::Equal => {
                if let (Some(x), Some(y)) = (ia.next(), ib.next()) {
                    diff_nodes(repo, x, y, join(prefix, &x.name), out)?;
                }
            }
        }
    }
    Ok(())
}

/// The differences between the trees `tree_a` (before) and `tree_b`
/// (after), in tree order: an entry comes before what is below it, names
/// in byte order. Paths start with `/` at the trees' root. Added and
/// removed directories are followed by every entry below them.
///
/// Subtrees with the same id on both sides are not read: the cost grows
/// with the change, not with the trees. Pass two snapshots' root trees to
/// compare snapshots, or two subtrees found with [`crate::repo::walk::find_node`].
///
/// # Errors
/// The first tree that cannot be read or is damaged, naming its blob.
pub fn diff(repo: &Repository, tree_a: &BlobId, tree_b: &BlobId) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    diff_trees(repo, tree_a, tree_b, b"", &mut out)?;
    Ok(out)
}

/// A table whose row count differs between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableDiff {
    /// The table.
    pub name: String,
    /// Rows in the first snapshot (`None`: no such table there).
    pub before: Option<u64>,
    /// Rows in the second snapshot (`None`: no such table there).
    pub after: Option<u64>,
}

/// For each database captured in `before` or `after` (by its path in the
/// snapshots), the tables whose recorded row counts differ, in path and
/// name order; databases whose tables all agree are left out. This is
/// what cairn recorded when it captured them, so it costs no data read.
#[must_use]
pub fn table_diff(
    before: &crate::format::snapshot::Snapshot,
    after: &crate::format::snapshot::Snapshot,
) -> Vec<(Vec<u8>, Vec<TableDiff>)> {
    use std::collections::BTreeMap;
    /// A table's rows before and after.
    type Counts = (Option<u64>, Option<u64>);
    let mut dbs: BTreeMap<&[u8], BTreeMap<&str, Counts>> = BTreeMap::new();
    for d in &before.databases {
        let tables = dbs.entry(&d.path).or_default();
        for t in &d.tables {
            tables.entry(&t.name).or_default().0 = Some(t.rows);
        }
    }
    for d in &after.databases {
        let tables = dbs.entry(&d.path).or_default();
        for t in &d.tables {
            tables.entry(&t.name).or_default().1 = Some(t.rows);
        }
    }
    dbs.into_iter()
        .filter_map(|(path, tables)| {
            let changed: Vec<TableDiff> = tables
                .into_iter()
                .filter(|(_, (b, a))| b != a)
                .map(|(name, (before, after))| TableDiff {
                    name: name.to_owned(),
                    before,
                    after,
                })
                .collect();
            (!changed.is_empty()).then(|| (path.to_vec(), changed))
        })
        .collect()
}

// ---------------------------------------------------------------- find --

/// Glob patterns for [`find`], in [globset](https://docs.rs/globset)
/// syntax (`*`, `?`, `[abc]`, `{a,b}`, `**`, `\` to escape).
///
/// As in restic, a pattern without `/` is matched against the entry's
/// **name** (`*.rs` finds every Rust file at any depth), and a pattern with
/// a `/` against its **full path** in the snapshot. A path pattern starting
/// with `/` is anchored at the snapshot's root (`/home/*/notes.txt`); any
/// other matches at any depth, as if it began with `**/` (`src/*.rs` finds
/// `/home/me/app/src/main.rs`). In path patterns `*` and `?` do not match
/// `/`; `**` does. Names are raw bytes and need not be UTF-8.
#[derive(Debug, Clone)]
pub struct FindPatterns {
    names: GlobSet,
    paths: GlobSet,
}

impl FindPatterns {
    /// Compiles `patterns`; with `ignore_case`, letters match either case.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming a pattern globset rejects, or when there
    /// is no pattern.
    pub fn new<S: AsRef<str>>(patterns: &[S], ignore_case: bool) -> Result<Self> {
        if patterns.is_empty() {
            return Err(Error::invalid("give at least one pattern to find"));
        }
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for p in patterns {
            let p = p.as_ref();
            let (set, glob) = if p.contains('/') {
                let anchored = if p.starts_with('/') {
                    p.to_owned()
                } else {
                    format!("**/{p}")
                };
                (&mut paths, anchored)
            } else {
                (&mut names, p.to_owned())
            };
            let glob = GlobBuilder::new(&glob)
                .literal_separator(true)
                .case_insensitive(ignore_case)
                .build()
                .map_err(|e| Error::invalid(format!("invalid pattern '{p}': {e}")))?;
            set.add(glob);
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::invalid(format!("invalid pattern: {e}")))
        };
        Ok(Self {
            names: build(names)?,
            paths: build(paths)?,
        })
    }

    /// True when some pattern matches the entry called `name` at `path`.
    #[must_use]
    pub fn is_match(&self, name: &[u8], path: &[u8]) -> bool {
        (!self.names.is_empty() && self.names.is_match_candidate(&Candidate::from_bytes(name)))
            || (!self.paths.is_empty()
                && self.paths.is_match_candidate(&Candidate::from_bytes(path)))
    }

    /// True when matches can depend on where an entry is, not only on its
    /// name: then a subtree's results hold only at the path it was
    /// searched at.
    fn uses_paths(&self) -> bool {
        !self.paths.is_empty()
    }
}

/// The parts of a node [`find`] reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntrySummary {
    /// Type of entry.
    #[serde(rename = "type")]
    pub entry_type: EntryType,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size of a file, 0 for other types.
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Its nanoseconds.
    pub mtime_nsec: u32,
}

impl EntrySummary {
    /// The summary of `node`.
    #[must_use]
    pub fn of(node: &Node) -> Self {
        Self {
            entry_type: EntryType::of(&node.kind),
            mode: node.mode,
            uid: node.uid,
            gid: node.gid,
            size: node.size,
            mtime: node.mtime,
            mtime_nsec: node.mtime_nsec,
        }
    }
}

/// One entry [`find`] matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The snapshot it is in.
    pub snapshot: SnapshotId,
    /// Its path in the snapshot, starting with `/`, raw bytes.
    pub path: Vec<u8>,
    /// What it is.
    pub entry: EntrySummary,
}

/// What [`find`] found, and how much it read.
#[derive(Debug, Clone, Default)]
pub struct FindOutcome {
    /// Matches, snapshot by snapshot in the order given, each snapshot's in
    /// tree order.
    pub found: Vec<Found>,
    /// Trees read. A subtree shared by several snapshots is read once
    /// (once per path it appears at, when a pattern has a `/`).
    pub trees_searched: u64,
}

/// The matches below one tree, relative to it, in tree order; `None` in
/// the memo stands for a tree with no match at all.
struct Level {
    items: Vec<Item>,
}

enum Item {
    /// An entry of this tree that matched.
    Match(Vec<u8>, EntrySummary),
    /// A subdirectory with matches below it.
    Below(Vec<u8>, Rc<Level>),
}

struct Finder<'a> {
    repo: &'a Repository,
    patterns: &'a FindPatterns,
    /// Results per searched tree, keyed by its id and, when patterns look
    /// at paths, the path it was searched at. Each level holds only its
    /// own matches and links to its children's, so memory follows the
    /// number of matches, not matches times depth.
    memo: HashMap<(BlobId, Vec<u8>), Option<Rc<Level>>>,
    trees: u64,
}

impl Finder<'_> {
    fn search(&mut self, tree: &BlobId, prefix: &[u8]) -> Result<Option<Rc<Level>>> {
        let key = (
            *tree,
            if self.patterns.uses_paths() {
                prefix.to_vec()
            } else {
                Vec::new()
            },
        );
        if let Some(hit) = self.memo.get(&key) {
            return Ok(hit.clone());
        }
        self.trees += 1;
        let mut items = Vec::new();
        for node in self.repo.read_tree(tree)?.nodes {
            let path = join(prefix, &node.name);
            if self.patterns.is_match(&node.name, &path) {
                items.push(Item::Match(node.name.clone(), EntrySummary::of(&node)));
            }
            if let NodeKind::Dir { subtree } = &node.kind
                && let Some(below) = self.search(subtree, &path)?
            {
                items.push(Item::Below(node.name, below));
            }
        }
        let level = (!items.is_empty()).then(|| Rc::new(Level { items }));
        self.memo.insert(key, level.clone());
        Ok(level)
    }
}

fn collect(snapshot: SnapshotId, level: &Level, prefix: &[u8], out: &mut Vec<Found>) {
    for item in &level.items {
        match item {
            Item::Match(name, entry) => out.push(Found {
                snapshot,
                path: join(prefix, name),
                entry: entry.clone(),
            }),
            Item::Below(name, below) => collect(snapshot, below, &join(prefix, name), out),
        }
    }
}

/// Finds the entries matching `patterns` in each of `snapshots` (a
/// snapshot id and its root tree), in the order given.
///
/// Subtrees are searched once however many snapshots share them: an
/// unchanged directory backed up daily costs one read, not one a day.
///
/// # Errors
/// The first tree that cannot be read or is damaged, naming its blob.
pub fn find(
    repo: &Repository,
    patterns: &FindPatterns,
    snapshots: &[(SnapshotId, BlobId)],
) -> Result<FindOutcome> {
    let mut finder = Finder {
        repo,
        patterns,
        memo: HashMap::new(),
        trees: 0,
    };
    let mut found = Vec::new();
    for (id, root) in snapshots {
        if let Some(level) = finder.search(root, b"")? {
            collect(*id, &level, b"", &mut found);
        }
    }
    Ok(FindOutcome {
        found,
        trees_searched: finder.trees,
    })
}

// ---------------------------------------------------------------- dump --

/// Writes the content of the regular file `node` (found at `path`, which
/// is used in messages) to `out`, one chunk at a time: memory stays at one
/// chunk whatever the file's size, and each chunk is checked against its
/// id before any of it is written. Returns the bytes written.
///
/// # Errors
/// [`Error::NotAFile`] when `node` is not a regular file (a directory,
/// say, which a restore writes); [`Error::Corrupt`] or
/// [`Error::BlobNotIndexed`] naming a damaged or missing chunk, or when
/// the chunks do not add up to the recorded size (what came before is then
/// already written); [`Error::Output`] when `out` fails, for example a
/// closed pipe.
pub fn dump(repo: &Repository, path: &[u8], node: &Node, out: &mut impl Write) -> Result<u64> {
    let shown = String::from_utf8_lossy(path);
    let mut written = 0u64;
    // Consecutive repeats of a chunk (the zeros of a sparse file, say) are
    // read and checked once.
    let mut last: Option<(BlobId, Vec<u8>)> = None;
    let mut put = |id: &BlobId| -> Result<()> {
        let data = match last.take() {
            Some((prev, data)) if prev == *id => data,
            _ => repo.read_blob(id)?,
        };
        out.write_all(&data)
            .map_err(|source| Error::Output { source })?;
        written += data.len() as u64;
        last = Some((*id, data));
        Ok(())
    };
    match &node.kind {
        NodeKind::File { content } => content.iter().try_for_each(&mut put)?,
        NodeKind::ListedFile { list, depth } => {
            crate::repo::chunklist::walk(repo, list, *depth, &mut |_| Ok(()), &mut put)?;
        }
        other => {
            return Err(Error::NotAFile {
                path: shown.into_owned(),
                entry: EntryType::of(other).name(),
            });
        }
    }
    out.flush().map_err(|source| Error::Output { source })?;
    if written != node.size {
        return Err(Error::corrupt(
            format!("file record of {shown}"),
            format!("content is {written} bytes but the tree says {}", node.size),
        ));
    }
    Ok(written)
}
