//! WAL segments: the on-disk record of the transactions `cairn watch`
//! captured from a live SQLite database between two base snapshots.
//!
//! This module owns the segment file format (store-format.md §25) and
//! nothing else: how segments are written while watching is the
//! watcher's business (`src/apps/sqlite/watcher.rs`), how transactions
//! are captured is the follower's (`src/apps/sqlite/watch.rs`), how
//! segments are read back and linked into chains is `repo::segments`'s.
//!
//! A *chain* is a base snapshot (a page-aware image of the database, an
//! ordinary snapshot) followed by segments numbered 0, 1, 2, … that each
//! name the one before. A segment lists the transactions committed in the
//! stretch of time it covers, in commit order, each with the pages it
//! wrote; the pages themselves are data blobs in packs, like every other
//! file's content, so they are compressed, encrypted, deduplicated and
//! pruned by the same rules. Segment files are write-once:
//!
//! ```text
//! "CAIRNWAL" ‖ sealed(Domain::Wal, enc(Segment))
//! name = 16 hex digits of `until` (nanoseconds since the epoch)
//!        ‖ the first 48 hex digits of BLAKE3(whole file)
//! ```
//!
//! so names sort by the end of the time they cover.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::codec;
use crate::format::crypto::{Crypto, Domain};
use crate::id::{BlobId, SegmentId, SnapshotId};

/// Magic at the start of every segment file.
pub const SEGMENT_MAGIC: &[u8; 8] = b"CAIRNWAL";

/// Whether `size` is a page size SQLite allows: a power of two from 512
/// to 65536. A segment's `page_size` must be one, and so must the page size
/// of a database header (read in `src/apps/sqlite/mod.rs`).
#[must_use]
pub fn valid_page_size(size: u32) -> bool {
    size.is_power_of_two() && (512..=65536).contains(&size)
}

/// One committed transaction of a segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentTxn {
    /// When the watcher read it from the log, nanoseconds since the epoch:
    /// never before the commit, at most one poll after it.
    pub time: i64,
    /// The database's size in pages after it.
    pub db_pages: u32,
    /// The pages it wrote, numbered from 1, in log order (a page may
    /// appear more than once; the last copy wins). Their images follow
    /// one another in the segment's data, after the previous
    /// transactions' pages.
    pub pages: Vec<u32>,
}

/// A segment: the transactions of one database committed in
/// `(from, until]`, as seen by one watcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// The host the watcher ran on.
    pub host: String,
    /// The database's absolute path, raw bytes.
    pub db: Vec<u8>,
    /// The snapshot holding the chain's base image of `db`.
    pub base: SnapshotId,
    /// When the base image was taken (the point of the log it stands
    /// for), nanoseconds since the epoch.
    pub base_time: i64,
    /// The number given to the base state; the chain's transactions are
    /// numbered on from it.
    pub base_txn: u64,
    /// This segment's place in the chain, from 0.
    pub seq: u64,
    /// The chain's previous segment; `None` for segment 0.
    pub prev: Option<SegmentId>,
    /// The start of the time covered: the previous segment's `until`, or
    /// `base_time` for segment 0.
    pub from: i64,
    /// The end of the time covered: every transaction committed before it
    /// and after `from` is in this segment.
    pub until: i64,
    /// The database's page size.
    pub page_size: u32,
    /// The number of the first transaction (`base_txn` + 1 + the
    /// transactions of segments before this one).
    pub first_txn: u64,
    /// The transactions, in commit order.
    pub txns: Vec<SegmentTxn>,
    /// The data blobs that together hold the pages of all transactions,
    /// back to back, `page_size` bytes each.
    pub data: Vec<BlobId>,
    /// Why the chain ends here, for its last segment: `None` while it
    /// goes on.
    pub end: Option<String>,
}

impl Segment {
    /// The number of the last transaction of this segment, or of the one
    /// before it when it has none (`base_txn` for an empty segment 0).
    #[must_use]
    pub fn last_txn(&self) -> u64 {
        (self.first_txn + self.txns.len() as u64).saturating_sub(1)
    }

    /// The number of pages in the segment's data.
    #[must_use]
    pub fn pages(&self) -> u64 {
        self.txns.iter().map(|t| t.pages.len() as u64).sum()
    }

    /// Whether its data, as `index` gives each blob's length, is exactly
    /// its pages (§25.2): restore finds a transaction's pages by their
    /// place in it. The bytes the data holds when it is not; `Ok` also
    /// when a blob is in no index (that is reported on its own).
    pub(crate) fn data_fits(
        &self,
        index: &crate::format::index::Index,
    ) -> std::result::Result<(), u64> {
        let bytes = self.data.iter().try_fold(0u64, |sum, blob| {
            index
                .get(blob)
                .and_then(|loc| sum.checked_add(u64::from(loc.raw_length)))
        });
        match bytes {
            Some(b) if Some(b) != self.pages().checked_mul(u64::from(self.page_size)) => Err(b),
            _ => Ok(()),
        }
    }
}

/// Nanoseconds since the epoch of `t` (saturating outside ±292 years).
#[must_use]
pub fn nanos(t: jiff::Timestamp) -> i64 {
    i64::try_from(t.as_nanosecond()).unwrap_or(if t.as_second() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// The timestamp of `nanos` since the epoch.
#[must_use]
pub fn timestamp(nanos: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_nanosecond(i128::from(nanos)).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

/// The end time a segment's name carries (its first 8 bytes, big-endian):
/// known from a listing, before the file is read.
#[must_use]
pub fn until_of(id: &SegmentId) -> i64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(id.0.get(..8).unwrap_or(&[0; 8]));
    // The name is the hex of the time, most significant digit first.
    #[allow(clippy::big_endian_bytes)]
    let until = u64::from_be_bytes(head);
    i64::try_from(until).unwrap_or(i64::MAX)
}

/// The name of the segment file `bytes` holding `segment`.
fn name_of(segment: &Segment, bytes: &[u8]) -> Option<SegmentId> {
    let until = u64::try_from(segment.until).ok()?;
    let hash = blake3::hash(bytes).to_hex();
    format!("{until:016x}{}", hash.get(..48)?).parse().ok()
}

/// Encodes a segment file and its name.
///
/// # Errors
/// [`Error::Internal`] for a segment ending before 1970 (the clock is
/// wrong); sealing errors.
pub fn encode_file(crypto: &Crypto, segment: &Segment) -> Result<(SegmentId, Vec<u8>)> {
    let mut out = SEGMENT_MAGIC.to_vec();
    out.extend_from_slice(&crypto.seal(Domain::Wal, &codec::encode(segment))?);
    let id = name_of(segment, &out).ok_or_else(|| {
        Error::internal(format!("WAL segment end {} is out of range", segment.until))
    })?;
    Ok((id, out))
}

/// Decodes the segment file named `id`, checking name, magic, seal and
/// that its transactions and data agree.
///
/// # Errors
/// [`Error::Corrupt`] naming the file and what is wrong.
pub fn decode_file(crypto: &Crypto, id: &SegmentId, bytes: &[u8]) -> Result<Segment> {
    let what = format!("WAL segment {id}");
    let body = bytes
        .strip_prefix(SEGMENT_MAGIC.as_slice())
        .ok_or_else(|| Error::corrupt(what.clone(), "bad magic"))?;
    let plain = crypto
        .open(Domain::Wal, body)
        .map_err(|_| Error::corrupt(what.clone(), "authentication failed"))?;
    let segment: Segment =
        codec::decode(&plain).map_err(|e| Error::corrupt(what.clone(), e.to_string()))?;
    if name_of(&segment, bytes) != Some(*id) {
        return Err(Error::corrupt(
            what,
            "content does not match its name (time and hash)",
        ));
    }
    check(&segment).map_err(|why| Error::corrupt(what, why))?;
    Ok(segment)
}

/// The invariants a decoded segment must hold before anything is replayed
/// from it.
fn check(s: &Segment) -> std::result::Result<(), String> {
    if !valid_page_size(s.page_size) {
        return Err(format!(
            "page size {} is not a SQLite page size",
            s.page_size
        ));
    }
    if s.from > s.until || s.base_time > s.from {
        return Err("its times are out of order".to_owned());
    }
    if (s.seq == 0) != s.prev.is_none() {
        return Err("its place in the chain and its previous segment disagree".to_owned());
    }
    if s.first_txn <= s.base_txn {
        return Err("its first transaction comes before its base".to_owned());
    }
    let mut last = s.from;
    for t in &s.txns {
        if t.time < last || t.pages.contains(&0) {
            return Err("a transaction is out of order or names page 0".to_owned());
        }
        last = t.time;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn crypto() -> Crypto {
        let key = crate::format::crypto::MasterKey::generate().expect("key");
        Crypto::new(&key, true)
    }

    fn segment(txns: Vec<SegmentTxn>) -> Segment {
        Segment {
            host: "h".into(),
            db: b"/srv/app.db".to_vec(),
            base: SnapshotId([7; 32]),
            base_time: 1_000,
            base_txn: 4,
            seq: 1,
            prev: Some(SegmentId([1; 32])),
            from: 2_000,
            until: 9_000,
            page_size: 4096,
            first_txn: 9,
            txns,
            data: vec![BlobId([3; 32])],
            end: None,
        }
    }

    proptest! {
        #[test]
        fn segments_round_trip(
            times in proptest::collection::vec(0i64..3_000, 0..20),
            pages in proptest::collection::vec(1u32..1_000, 0..8),
        ) {
            let mut times = times;
            times.sort_unstable();
            let txns = times
                .iter()
                .map(|t| SegmentTxn { time: 2_000 + t, db_pages: 9, pages: pages.clone() })
                .collect();
            let s = segment(txns);
            let c = crypto();
            let (id, bytes) = encode_file(&c, &s).expect("encode");
            let prefix = format!("{:016x}", s.until);
            prop_assert!(id.to_hex().starts_with(&prefix));
            prop_assert_eq!(until_of(&id), s.until);
            prop_assert_eq!(decode_file(&c, &id, &bytes).expect("decode"), s);
        }
    }

    #[test]
    fn damage_and_bad_content_are_reported() {
        let c = crypto();
        let good = segment(vec![SegmentTxn {
            time: 3_000,
            db_pages: 2,
            pages: vec![1, 2],
        }]);
        let (id, mut bytes) = encode_file(&c, &good).expect("encode");
        if let Some(b) = bytes.last_mut() {
            *b ^= 1;
        }
        let e = decode_file(&c, &id, &bytes).expect_err("damage");
        assert!(e.to_string().contains(&id.to_hex()), "{e}");
        for bad in [
            Segment {
                page_size: 1000,
                ..good.clone()
            },
            Segment {
                from: 10_000,
                ..good.clone()
            },
            Segment {
                prev: None,
                ..good.clone()
            },
            Segment {
                txns: vec![SegmentTxn {
                    time: 3_000,
                    db_pages: 1,
                    pages: vec![0],
                }],
                ..good.clone()
            },
        ] {
            let (id, bytes) = encode_file(&c, &bad).expect("encode");
            assert!(decode_file(&c, &id, &bytes).is_err(), "{bad:?}");
        }
        assert_eq!(good.last_txn(), 9);
        assert_eq!(segment(Vec::new()).last_txn(), 8);
    }
}
