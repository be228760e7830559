//! Trees: one blob per directory listing its entries with their metadata.
//!
//! The encoding is deterministic: entries are sorted by the raw bytes of
//! their names, extended attributes by name, and every field has exactly one
//! encoding, so the same directory state always gives the same tree id.
//! Decoding rejects anything a restore must not trust: empty names, names
//! containing `/` or NUL, `.` and `..`, duplicates and unsorted entries.

use serde::{Deserialize, Serialize};

use crate::format::codec;
use crate::id::BlobId;

/// What a directory entry is, with what only that kind has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    /// A regular file: its chunks in order.
    File {
        /// Data blob ids; concatenated plaintexts give the content.
        content: Vec<BlobId>,
    },
    /// A directory: its tree blob.
    Dir {
        /// Tree blob id.
        subtree: BlobId,
    },
    /// A symbolic link: its target as raw bytes.
    Symlink {
        /// Link target.
        target: Vec<u8>,
    },
    /// A named pipe.
    Fifo,
    /// A Unix socket (recorded, not restored).
    Socket,
    /// A character device.
    CharDevice {
        /// `st_rdev`.
        rdev: u64,
    },
    /// A block device.
    BlockDevice {
        /// `st_rdev`.
        rdev: u64,
    },
    /// A regular file with more than `chunklist::INLINE_MAX` chunks, whose
    /// chunk ids are stored as a tree of list blobs.
    ListedFile {
        /// The root list blob.
        list: BlobId,
        /// Levels of lists: 1 when the root lists data blobs.
        depth: u8,
    },
}

impl NodeKind {
    /// A regular file, whichever way its chunks are listed.
    #[must_use]
    pub fn is_file(&self) -> bool {
        matches!(self, Self::File { .. } | Self::ListedFile { .. })
    }
}

/// An extended attribute.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Xattr {
    /// Attribute name, raw bytes.
    pub name: Vec<u8>,
    /// Attribute value.
    pub value: Vec<u8>,
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// File name, raw bytes (need not be UTF-8).
    pub name: Vec<u8>,
    /// Kind and kind-specific data.
    pub kind: NodeKind,
    /// Permission bits and set-id/sticky bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (files; 0 otherwise).
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Nanoseconds of the modification time.
    pub mtime_nsec: u32,
    /// Status-change time, seconds (for change detection only).
    pub ctime: i64,
    /// Nanoseconds of the status-change time.
    pub ctime_nsec: u32,
    /// Inode number (change detection and hard links).
    pub inode: u64,
    /// Device number of the file system.
    pub device: u64,
    /// Number of hard links.
    pub links: u64,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<Xattr>,
}

/// A directory listing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    /// Entries sorted by name bytes.
    pub nodes: Vec<Node>,
}

/// Why a tree blob is not acceptable.
#[derive(Debug, thiserror::Error)]
#[error("malformed tree: {0}")]
pub struct TreeError(String);

fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

impl Tree {
    /// Sorts entries by name; call before encoding.
    pub fn sort(&mut self) {
        self.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        for n in &mut self.nodes {
            n.xattrs.sort();
        }
    }

    /// The canonical encoding (call [`Tree::sort`] first).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes and validates a tree blob's plaintext.
    ///
    /// # Errors
    /// `TreeError` when the bytes are not a canonical tree.
    pub fn decode(bytes: &[u8]) -> Result<Self, TreeError> {
        let tree: Self = codec::decode(bytes).map_err(|e| TreeError(e.to_string()))?;
        let mut prev: Option<&[u8]> = None;
        for n in &tree.nodes {
            if !valid_name(&n.name) {
                return Err(TreeError(format!(
                    "invalid entry name {:?}",
                    String::from_utf8_lossy(&n.name)
                )));
            }
            if prev.is_some_and(|p| p >= n.name.as_slice()) {
                return Err(TreeError("entries are not sorted or repeat a name".into()));
            }
            if n.xattrs
                .windows(2)
                .any(|w| matches!(w, [a, b] if a.name >= b.name))
            {
                return Err(TreeError(
                    "extended attributes are not sorted or repeat a name".into(),
                ));
            }
            prev = Some(&n.name);
        }
        Ok(tree)
    }

    /// The entry called `name`.
    #[must_use]
    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .and_then(|i| self.nodes.get(i))
    }
}
