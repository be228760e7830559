//! Index files and the merged in-memory index.
//!
//! An index file is immutable and lists, for some packs, every blob they hold
//! (the same records as the pack headers). A reader merges all index files;
//! a blob found in several packs may be read from any of them.
//!
//! ```text
//! "CAIRNIDX" ‖ sealed(Domain::Index, IndexFile)
//! ```

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::crypto::{Crypto, Domain};
use crate::id::{BlobId, IndexId, PackId};
use crate::pack::{BlobKind, Compression, PackEntry};

/// Magic at the start of every index file.
pub const INDEX_MAGIC: &[u8; 8] = b"CAIRNIDX";

/// One pack as an index file describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexPack {
    /// The pack.
    pub id: PackId,
    /// Its size in bytes.
    pub size: u64,
    /// Its blobs, as in its header.
    pub entries: Vec<PackEntry>,
}

/// The decoded contents of one index file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFile {
    /// Packs described by this file.
    pub packs: Vec<IndexPack>,
}

/// Encodes an index file.
///
/// # Errors
/// Fails only when sealing fails.
pub fn encode_file(crypto: &Crypto, file: &IndexFile) -> crate::Result<(IndexId, Vec<u8>)> {
    let mut out = INDEX_MAGIC.to_vec();
    out.extend_from_slice(&crypto.seal(Domain::Index, &codec::encode(file))?);
    Ok((IndexId::hash_of(&out), out))
}

/// Decodes an index file.
///
/// # Errors
/// A reason string when the magic, tag or encoding is wrong.
pub fn decode_file(crypto: &Crypto, bytes: &[u8]) -> Result<IndexFile, String> {
    let sealed = bytes
        .strip_prefix(INDEX_MAGIC.as_slice())
        .ok_or("not a cairn index file (bad magic)")?;
    let plain = crypto
        .open(Domain::Index, sealed)
        .map_err(|e| e.to_string())?;
    codec::decode(&plain).map_err(|e| e.to_string())
}

/// Where a blob lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Position of the pack in [`Index::packs`].
    pub pack: u32,
    /// Data or tree.
    pub kind: BlobKind,
    /// How it is compressed.
    pub compression: Compression,
    /// Offset of the sealed blob.
    pub offset: u32,
    /// Length of the sealed blob.
    pub length: u32,
    /// Plaintext length.
    pub raw_length: u32,
}

/// All index files merged.
#[derive(Debug, Default)]
pub struct Index {
    packs: Vec<PackId>,
    pack_pos: HashMap<PackId, u32>,
    blobs: HashMap<BlobId, Location>,
}

impl Index {
    /// Adds one pack's blobs. A blob already known keeps its first location.
    pub fn add_pack(&mut self, pack: &IndexPack) {
        let pos = match self.pack_pos.get(&pack.id) {
            Some(&p) => p,
            None => {
                let p = u32::try_from(self.packs.len()).unwrap_or(u32::MAX);
                self.packs.push(pack.id);
                self.pack_pos.insert(pack.id, p);
                p
            }
        };
        for e in &pack.entries {
            self.blobs.entry(e.id).or_insert(Location {
                pack: pos,
                kind: e.kind,
                compression: e.compression,
                offset: e.offset,
                length: e.length,
                raw_length: e.raw_length,
            });
        }
    }

    /// Where `id` is, if indexed.
    #[must_use]
    pub fn get(&self, id: &BlobId) -> Option<Location> {
        self.blobs.get(id).copied()
    }

    /// True when `id` is indexed.
    #[must_use]
    pub fn contains(&self, id: &BlobId) -> bool {
        self.blobs.contains_key(id)
    }

    /// The pack at position `pos`.
    #[must_use]
    pub fn pack_id(&self, pos: u32) -> Option<PackId> {
        self.packs.get(pos as usize).copied()
    }

    /// True when some index describes the pack.
    #[must_use]
    pub fn has_pack(&self, id: &PackId) -> bool {
        self.pack_pos.contains_key(id)
    }

    /// Every indexed blob.
    pub fn blobs(&self) -> impl Iterator<Item = (&BlobId, &Location)> {
        self.blobs.iter()
    }
}
