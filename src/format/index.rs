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

use crate::format::codec;
use crate::format::crypto::{Crypto, Domain};
use crate::format::pack::{BlobKind, Compression, PackEntry};
use crate::id::{BlobId, IndexId, PackId};

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
pub fn encode_file(crypto: &Crypto, file: &IndexFile) -> crate::error::Result<(IndexId, Vec<u8>)> {
    let mut out = INDEX_MAGIC.to_vec();
    out.extend_from_slice(&crypto.seal(Domain::Index, &codec::encode(file))?);
    Ok((IndexId::hash_of(&out), out))
}

/// Decodes an index file.
///
/// # Errors
/// A reason string when the magic, tag or encoding is wrong.
#[cfg(any(test, feature = "internals"))]
pub fn decode_file(crypto: &Crypto, bytes: &[u8]) -> Result<IndexFile, String> {
    decode_file_owned(crypto, bytes.to_vec())
}

/// Decodes an index file, opening it in place.
///
/// # Errors
/// As [`decode_file`].
pub fn decode_file_owned(crypto: &Crypto, bytes: Vec<u8>) -> Result<IndexFile, String> {
    if !bytes.starts_with(INDEX_MAGIC) {
        return Err("not a cairn index file (bad magic)".into());
    }
    let plain = crypto
        .open_owned(Domain::Index, bytes, INDEX_MAGIC.len())
        .map_err(|e| e.to_string())?;
    codec::decode(&plain).map_err(|e| e.to_string())
}

/// Where a blob lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Position of the pack in [`Index::pack_id`].
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

/// Bits of a pack position; the two above it hold kind and compression.
const PACK_BITS: u32 = 30;
const PACK_MASK: u32 = (1 << PACK_BITS) - 1;
const TREE_FLAG: u32 = 1 << 31;
const ZSTD_FLAG: u32 = 1 << 30;
/// The most packs one index can address.
pub const MAX_PACKS: usize = 1 << PACK_BITS;

/// A record while the index is built: the whole blob id, then the packed
/// location (pack position and flags, offset, length, plaintext length),
/// all little-endian.
const WIDE: usize = 48;
/// A record once built: the id without its first two bytes, which the
/// bucket it sits in already says, then the same 16 location bytes.
const SLIM: usize = 46;
/// The first two id bytes choose one of this many buckets.
const BUCKETS: usize = 1 << 16;

impl Location {
    fn pack_bytes(self) -> [u8; 16] {
        let mut flags = self.pack & PACK_MASK;
        if self.kind == BlobKind::Tree {
            flags |= TREE_FLAG;
        }
        if self.compression == Compression::Zstd {
            flags |= ZSTD_FLAG;
        }
        let mut out = [0; 16];
        for (dst, v) in
            out.chunks_exact_mut(4)
                .zip([flags, self.offset, self.length, self.raw_length])
        {
            dst.copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    fn unpack(bytes: &[u8; 16]) -> Self {
        let mut words = bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap_or_default()));
        let mut next = || words.next().unwrap_or_default();
        let flags = next();
        Self {
            pack: flags & PACK_MASK,
            kind: if flags & TREE_FLAG == 0 {
                BlobKind::Data
            } else {
                BlobKind::Tree
            },
            compression: if flags & ZSTD_FLAG == 0 {
                Compression::None
            } else {
                Compression::Zstd
            },
            offset: next(),
            length: next(),
            raw_length: next(),
        }
    }

    fn of(pack: u32, e: &PackEntry) -> Self {
        Self {
            pack,
            kind: e.kind,
            compression: e.compression,
            offset: e.offset,
            length: e.length,
            raw_length: e.raw_length,
        }
    }
}

fn bucket_of(id: &BlobId) -> usize {
    // Most significant byte first, so bucket order is id order.
    usize::from(id.0[0]) << 8 | usize::from(id.0[1])
}

/// Finds `key` (the 30 id bytes after the bucket's two) in one bucket.
///
/// Ids are uniformly distributed hashes, so the next two id bytes (`next`,
/// 0..65,536) predict the position; the search gallops outwards from that
/// guess and finishes with a binary search of the bracket. That touches a
/// few neighbouring records instead of the log2(n) scattered cache lines
/// of a plain binary search, which matters once the array is hundreds of
/// megabytes.
fn search(records: &[[u8; SLIM]], key: &[u8], next: u32) -> Option<usize> {
    let n = records.len();
    let cmp = |i: usize| records.get(i).map(|r| r.get(..30).cmp(&Some(key)));
    let guess = ((next as usize * n) >> 16).min(n.checked_sub(1)?);
    let (lo, hi) = match cmp(guess)? {
        std::cmp::Ordering::Equal => return Some(guess),
        std::cmp::Ordering::Less => {
            // The key is after `guess`: find a record at or past it.
            let (mut lo, mut step) = (guess + 1, 1);
            loop {
                let probe = guess + step;
                match cmp(probe) {
                    None => break (lo, n),
                    Some(std::cmp::Ordering::Less) => lo = probe + 1,
                    Some(_) => break (lo, probe + 1),
                }
                step *= 2;
            }
        }
        std::cmp::Ordering::Greater => {
            let (mut hi, mut step) = (guess, 1);
            loop {
                let Some(probe) = guess.checked_sub(step) else {
                    break (0, hi);
                };
                match cmp(probe) {
                    Some(std::cmp::Ordering::Greater) => hi = probe,
                    _ => break (probe, hi),
                }
                step *= 2;
            }
        }
    };
    let found = records
        .get(lo..hi)?
        .binary_search_by(|r| r.get(..30).cmp(&Some(key)))
        .ok()?;
    Some(lo + found)
}

/// All index files merged.
///
/// Blobs loaded from index files sit in one sorted array of 46-byte records
/// behind a table of 65,536 bucket starts, so a lookup is one binary search
/// in a bucket of (on average) n / 65,536 records and memory is 46 bytes a
/// blob plus about 256 KiB. Blobs added by this process (new index files
/// written by a backup, packs found without an index) go to a hash map;
/// they are bounded by what one process writes.
#[derive(Debug)]
pub struct Index {
    packs: Vec<PackId>,
    /// Positions of the packs loaded by [`Index::build`], sorted by pack
    /// id (4 bytes a pack instead of a hash map entry's ~45).
    loaded_packs: Vec<u32>,
    /// Positions of packs added since.
    pack_pos: HashMap<PackId, u32>,
    /// `SLIM`-byte records sorted by id, bucket by bucket.
    records: Vec<u8>,
    /// `starts[b]..starts[b + 1]` are the records of bucket `b`.
    starts: Vec<u32>,
    recent: HashMap<BlobId, Location>,
}

impl Default for Index {
    fn default() -> Self {
        Self {
            packs: Vec::new(),
            loaded_packs: Vec::new(),
            pack_pos: HashMap::new(),
            records: Vec::new(),
            starts: vec![0; BUCKETS + 1],
            recent: HashMap::new(),
        }
    }
}

/// Error when an index would address more than [`MAX_PACKS`] packs.
fn too_many_packs() -> crate::error::Error {
    crate::error::Error::internal(format!(
        "the index lists more than {MAX_PACKS} packs, more than cairn can address"
    ))
}

impl Index {
    /// Numbers a pack not seen before; `None` for a known pack, whose
    /// first description is the one that counts.
    fn new_pack_position(&mut self, id: PackId) -> crate::error::Result<Option<u32>> {
        if self.position_of(&id).is_some() {
            return Ok(None);
        }
        if self.packs.len() >= MAX_PACKS {
            return Err(too_many_packs());
        }
        let p = u32::try_from(self.packs.len()).map_err(|_| too_many_packs())?;
        self.packs.push(id);
        self.pack_pos.insert(id, p);
        Ok(Some(p))
    }

    /// Adds one pack's blobs, unless the pack is known already. A blob
    /// already known keeps its location.
    ///
    /// # Errors
    /// When the index would address more than `MAX_PACKS` packs.
    pub fn add_pack(&mut self, pack: &IndexPack) -> crate::error::Result<()> {
        let Some(pos) = self.new_pack_position(pack.id)? else {
            return Ok(());
        };
        for e in &pack.entries {
            if self.get_loaded(&e.id).is_none() {
                self.recent.entry(e.id).or_insert(Location::of(pos, e));
            }
        }
        // A hash map costs over twice the bytes of a record: a long backup
        // folds what it added into the sorted records now and then (when
        // the map reaches an eighth of them, at least 65,536), which keeps
        // the amortised cost linear.
        if self.recent.len() >= (self.records.len() / SLIM / 8).max(1 << 16) {
            self.merge_recent();
        }
        Ok(())
    }

    /// Merges the blobs added since loading into the sorted records,
    /// bucket by bucket, into a new array (the old one goes right after).
    fn merge_recent(&mut self) {
        let mut recent: Vec<(BlobId, Location)> = self.recent.drain().collect();
        self.recent.shrink_to_fit();
        recent.sort_unstable_by_key(|(id, _)| *id);
        let total = self.records.len() / SLIM + recent.len();
        let mut merged: Vec<u8> = Vec::with_capacity(total * SLIM);
        let mut starts = Vec::with_capacity(BUCKETS + 1);
        let mut added = recent.iter().peekable();
        for b in 0..BUCKETS {
            starts.push(u32::try_from(merged.len() / SLIM).unwrap_or(u32::MAX));
            let lo = self.starts.get(b).map_or(0, |&s| s as usize);
            let hi = self.starts.get(b + 1).map_or(lo, |&s| s as usize);
            let (old, _) = self
                .records
                .get(lo * SLIM..hi * SLIM)
                .unwrap_or_default()
                .as_chunks::<SLIM>();
            let mut old = old.iter().peekable();
            loop {
                let new_here = added.peek().filter(|(id, _)| bucket_of(id) == b);
                match (old.peek(), new_here) {
                    (None, None) => break,
                    (Some(o), Some((id, loc)))
                        if id.0.get(2..).is_some_and(|k| Some(k) < o.get(..30)) =>
                    {
                        merged.extend_from_slice(id.0.get(2..).unwrap_or_default());
                        merged.extend_from_slice(&loc.pack_bytes());
                        added.next();
                    }
                    (Some(o), _) => {
                        merged.extend_from_slice(o.as_slice());
                        old.next();
                    }
                    (None, Some((id, loc))) => {
                        merged.extend_from_slice(id.0.get(2..).unwrap_or_default());
                        merged.extend_from_slice(&loc.pack_bytes());
                        added.next();
                    }
                }
            }
        }
        starts.push(u32::try_from(merged.len() / SLIM).unwrap_or(u32::MAX));
        self.records = merged;
        self.starts = starts;
    }

    /// Builds the index from whole index files, streaming: each file's
    /// entries are appended to one array and the file is dropped before
    /// the next is taken, so memory stays near the final size.
    ///
    /// # Errors
    /// The first error `files` yields, or too many packs.
    pub fn build<I>(files: I) -> crate::error::Result<Self>
    where
        I: IntoIterator<Item = crate::error::Result<IndexFile>>,
    {
        let mut index = Self::default();
        let mut wide: Vec<u8> = Vec::new();
        for file in files {
            for pack in file?.packs {
                let Some(pos) = index.new_pack_position(pack.id)? else {
                    continue;
                };
                wide.reserve(pack.entries.len() * WIDE);
                for e in &pack.entries {
                    wide.extend_from_slice(&e.id.0);
                    wide.extend_from_slice(&Location::of(pos, e).pack_bytes());
                }
            }
        }
        index.seal(wide);
        let mut order: Vec<u32> = std::mem::take(&mut index.pack_pos).into_values().collect();
        order.sort_unstable_by_key(|&p| index.packs.get(p as usize).copied());
        index.loaded_packs = order;
        index.packs.shrink_to_fit();
        Ok(index)
    }

    /// Sorts `WIDE` records, drops repeated ids (keeping the first
    /// location the merge met), and narrows them to `SLIM` records in
    /// place, so no second copy of the array is ever made.
    fn seal(&mut self, mut bytes: Vec<u8>) {
        let (records, _) = bytes.as_chunks_mut::<WIDE>();
        // Ties are broken by pack position, then offset: packs are numbered
        // in the order the merge first meets them, only a pack's first
        // description counts, and its entries are in file order, so the
        // first location seen for an id sorts first and wins, as
        // store-format.md §10 requires.
        let key = |r: &[u8; WIDE]| {
            let word = |at: usize| {
                r.get(at..at + 4)
                    .and_then(|w| <[u8; 4]>::try_from(w).ok())
                    .map_or(0, u32::from_le_bytes)
            };
            (
                r.first_chunk::<32>().copied(),
                word(32) & PACK_MASK,
                word(36),
            )
        };
        records.sort_unstable_by_key(key);
        let n = records.len();
        let mut counts = vec![0u32; BUCKETS];
        let mut kept = 0usize;
        let mut prev: Option<[u8; 32]> = None;
        for r in 0..n {
            let src = r * WIDE;
            let Some(id) = bytes
                .get(src..src + 32)
                .and_then(|s| <[u8; 32]>::try_from(s).ok())
            else {
                break;
            };
            // Sorted, so a repeated id follows its first occurrence.
            if prev == Some(id) {
                continue;
            }
            prev = Some(id);
            if let Some(c) = counts.get_mut(bucket_of(&BlobId(id))) {
                *c += 1;
            }
            bytes.copy_within(src + 2..src + WIDE, kept * SLIM);
            kept += 1;
        }
        bytes.truncate(kept * SLIM);
        bytes.shrink_to_fit();
        let mut at = 0u32;
        for (start, count) in self.starts.iter_mut().zip(counts.iter().chain([&0])) {
            *start = at;
            at += count;
        }
        self.records = bytes;
    }

    fn get_loaded(&self, id: &BlobId) -> Option<Location> {
        let b = bucket_of(id);
        let lo = *self.starts.get(b)? as usize;
        let hi = *self.starts.get(b + 1)? as usize;
        let (records, _) = self.records.get(lo * SLIM..hi * SLIM)?.as_chunks::<SLIM>();
        let key = id.0.get(2..)?;
        let i = search(records, key, u32::from(id.0[2]) << 8 | u32::from(id.0[3]))?;
        let loc: &[u8; 16] = records.get(i)?.last_chunk::<16>()?;
        Some(Location::unpack(loc))
    }

    /// Where `id` is, if indexed.
    #[must_use]
    pub fn get(&self, id: &BlobId) -> Option<Location> {
        self.get_loaded(id).or_else(|| self.recent.get(id).copied())
    }

    /// True when `id` is indexed.
    #[must_use]
    pub fn contains(&self, id: &BlobId) -> bool {
        self.get(id).is_some()
    }

    /// The pack at position `pos`.
    #[must_use]
    pub fn pack_id(&self, pos: u32) -> Option<PackId> {
        self.packs.get(pos as usize).copied()
    }

    fn position_of(&self, id: &PackId) -> Option<u32> {
        let loaded = self
            .loaded_packs
            .binary_search_by(|&p| self.packs.get(p as usize).cmp(&Some(id)))
            .ok()
            .and_then(|i| self.loaded_packs.get(i).copied());
        loaded.or_else(|| self.pack_pos.get(id).copied())
    }

    #[cfg(test)]
    fn pack_position_of(&self, id: &PackId) -> u32 {
        self.position_of(id).unwrap_or(u32::MAX)
    }

    /// True when some index describes the pack.
    #[must_use]
    pub fn has_pack(&self, id: &PackId) -> bool {
        self.position_of(id).is_some()
    }

    /// How many blobs are indexed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.records.len() / SLIM + self.recent.len()
    }

    /// True when nothing is indexed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the loaded blob records and bucket table take (not counting
    /// the per-pack table and blobs added since loading).
    #[must_use]
    pub fn record_bytes(&self) -> usize {
        self.records.capacity() + self.starts.capacity() * 4
    }

    /// Every indexed blob, in no particular order.
    pub fn blobs(&self) -> impl Iterator<Item = (BlobId, Location)> + '_ {
        let loaded = self.starts.windows(2).enumerate().flat_map(move |(b, w)| {
            let (lo, hi) = match w {
                [lo, hi] => (*lo as usize, *hi as usize),
                _ => (0, 0),
            };
            let slice = self.records.get(lo * SLIM..hi * SLIM).unwrap_or_default();
            let prefix = [
                u8::try_from(b >> 8).unwrap_or_default(),
                u8::try_from(b & 0xff).unwrap_or_default(),
            ];
            slice.as_chunks::<SLIM>().0.iter().map(move |r| {
                let mut id = [0u8; 32];
                id[..2].copy_from_slice(&prefix);
                id[2..].copy_from_slice(r.first_chunk::<30>().map_or(&[0; 30], |c| c));
                let loc = r.last_chunk::<16>().map_or(&[0; 16], |c| c);
                (BlobId(id), Location::unpack(loc))
            })
        });
        loaded.chain(self.recent.iter().map(|(id, loc)| (*id, *loc)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(id: [u8; 32], n: u32) -> PackEntry {
        PackEntry {
            id: BlobId(id),
            kind: if n.is_multiple_of(2) {
                BlobKind::Data
            } else {
                BlobKind::Tree
            },
            compression: if n.is_multiple_of(3) {
                Compression::Zstd
            } else {
                Compression::None
            },
            offset: n.wrapping_mul(7),
            length: n.wrapping_add(40),
            raw_length: n ^ 0xdead_beef,
        }
    }

    proptest! {
        /// Every id of every file is found with the location of one of its
        /// entries, absent ids are not found, and `blobs` lists each id once.
        #[test]
        fn built_index_finds_exactly_what_was_added(
            files in prop::collection::vec(
                prop::collection::vec(
                    (any::<[u8; 32]>(), prop::option::of(0u8..6), 0u8..4, any::<u32>()),
                    0..40,
                ),
                0..6,
            ),
            absent in prop::collection::vec(any::<[u8; 32]>(), 0..20),
        ) {
            let mut expected: HashMap<BlobId, Vec<Location>> = HashMap::new();
            let mut decoded = Vec::new();
            let mut next_pack = 0u8;
            for file in &files {
                let mut packs: Vec<IndexPack> = Vec::new();
                for (id, repeated, pack, n) in file {
                    // A few shared first bytes put several ids in one
                    // bucket, and a small pool of ids repeats across packs
                    // and files.
                    let mut id = repeated.map_or(*id, |k| [k; 32]);
                    id[0] &= 0x03;
                    let pid = PackId([pack.wrapping_add(next_pack); 32]);
                    let mut e = entry(id, *n);
                    match packs.iter_mut().find(|p| p.id == pid) {
                        Some(p) => {
                            // Offsets grow in file order, as in a real pack.
                            e.offset = p.entries.last().map_or(0, |l| l.offset + 1);
                            p.entries.push(e);
                        }
                        None => {
                            e.offset = 0;
                            packs.push(IndexPack { id: pid, size: 1, entries: vec![e] });
                        }
                    }
                }
                next_pack = next_pack.wrapping_add(2);
                decoded.push(IndexFile { packs });
            }
            let index = Index::build(decoded.iter().cloned().map(Ok)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut described = std::collections::HashSet::new();
            for file in &decoded {
                for p in file.packs.iter().filter(|p| described.insert(p.id)) {
                    let pos = index.pack_position_of(&p.id);
                    for e in &p.entries {
                        expected.entry(e.id).or_default().push(Location::of(pos, e));
                    }
                }
            }
            prop_assert_eq!(index.len(), expected.len());
            for (id, locs) in &expected {
                let got = index.get(id);
                prop_assert_eq!(got, locs.first().copied(), "{}: the first location seen wins", id);
            }
            for id in absent {
                let id = BlobId(id);
                prop_assert_eq!(index.contains(&id), expected.contains_key(&id));
            }
            let mut listed: Vec<BlobId> = index.blobs().map(|(id, _)| id).collect();
            listed.sort();
            let mut want: Vec<BlobId> = expected.keys().copied().collect();
            want.sort();
            prop_assert_eq!(listed, want);
        }
    }

    proptest! {
        /// The galloping search finds exactly the keys present, whatever
        /// its starting guess.
        #[test]
        fn search_finds_present_keys_from_any_guess(
            keys in prop::collection::btree_set(prop::collection::vec(0u8..4, 30), 0..300),
            probes in prop::collection::vec((prop::collection::vec(0u8..4, 30), any::<u16>()), 0..50),
            hints in prop::collection::vec(any::<u16>(), 1..8),
        ) {
            let records: Vec<[u8; SLIM]> = keys
                .iter()
                .map(|k| {
                    let mut r = [0u8; SLIM];
                    r[..30].copy_from_slice(k);
                    r
                })
                .collect();
            for (i, k) in keys.iter().enumerate() {
                for &h in &hints {
                    prop_assert_eq!(search(&records, k, u32::from(h)), Some(i));
                }
            }
            for (k, h) in probes {
                let want = keys.iter().position(|x| *x == k);
                prop_assert_eq!(search(&records, &k, u32::from(h)), want);
            }
        }
    }

    #[test]
    fn blobs_added_later_are_found_and_do_not_replace_loaded_ones() -> crate::error::Result<()> {
        let first = IndexPack {
            id: PackId([1; 32]),
            size: 1,
            entries: vec![entry([5; 32], 1)],
        };
        let mut index = Index::build([Ok(IndexFile { packs: vec![first] })])?;
        let second = IndexPack {
            id: PackId([2; 32]),
            size: 1,
            entries: vec![entry([5; 32], 2), entry([6; 32], 3)],
        };
        index.add_pack(&second)?;
        assert_eq!(index.get(&BlobId([5; 32])).map(|l| l.pack), Some(0));
        assert_eq!(index.get(&BlobId([6; 32])).map(|l| l.pack), Some(1));
        assert_eq!(index.len(), 2);
        assert!(index.has_pack(&PackId([2; 32])));
        assert_eq!(index.pack_id(1), Some(PackId([2; 32])));
        Ok(())
    }

    #[test]
    fn many_added_blobs_are_folded_into_the_records() -> crate::error::Result<()> {
        let id_of = |n: u32| {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&n.wrapping_mul(2_654_435_761).to_le_bytes());
            id[4] = 1;
            id
        };
        let loaded = (0..1000u32).map(|n| entry(id_of(n), n)).collect();
        let mut index = Index::build([Ok(IndexFile {
            packs: vec![IndexPack {
                id: PackId([1; 32]),
                size: 1,
                entries: loaded,
            }],
        })])?;
        let count = (1u32 << 16) + 500;
        for chunk in (0..count).collect::<Vec<_>>().chunks(1000) {
            let p = chunk.first().copied().unwrap_or_default();
            let mut pid = [2u8; 32];
            pid[..4].copy_from_slice(&p.to_le_bytes());
            index.add_pack(&IndexPack {
                id: PackId(pid),
                size: 1,
                // Ids 500.. are new; 0..1000 overlap the loaded ones.
                entries: chunk.iter().map(|&n| entry(id_of(n + 500), n)).collect(),
            })?;
        }
        assert!(index.recent.len() < 1 << 16, "the map was folded in");
        assert_eq!(index.len(), (count + 500) as usize);
        for n in 0..count + 500 {
            let loc = index.get(&BlobId(id_of(n)));
            assert!(loc.is_some(), "blob {n} lost");
            if n < 1000 {
                assert_eq!(
                    loc.map(|l| l.pack),
                    Some(0),
                    "a loaded blob keeps its place"
                );
            }
        }
        assert!(!index.contains(&BlobId(id_of(count + 500))));
        let mut listed: Vec<BlobId> = index.blobs().map(|(id, _)| id).collect();
        listed.sort();
        listed.dedup();
        assert_eq!(listed.len(), index.len());
        Ok(())
    }

    #[test]
    fn a_loaded_blob_costs_46_bytes() -> crate::error::Result<()> {
        let entries = (0..10_000u32)
            .map(|n| {
                let mut id = [0u8; 32];
                id[..4].copy_from_slice(&n.wrapping_mul(2_654_435_761).to_le_bytes());
                entry(id, n)
            })
            .collect();
        let index = Index::build([Ok(IndexFile {
            packs: vec![IndexPack {
                id: PackId([1; 32]),
                size: 1,
                entries,
            }],
        })])?;
        assert_eq!(index.len(), 10_000);
        assert_eq!(index.record_bytes(), 10_000 * 46 + (BUCKETS + 1) * 4);
        Ok(())
    }
}
