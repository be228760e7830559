//! SQLite write-ahead logs (`DB-wal` files), read frame by frame, for
//! following a live database transaction by transaction (`cairn watch`).
//!
//! This module owns the parsing of SQLite's WAL format
//! (<https://www.sqlite.org/fileformat2.html#walformat>) and nothing else:
//! it never writes a log and never opens a database. A log is a 32-byte
//! header followed by frames of a 24-byte frame header and one page image.
//! A frame belongs to the log's current *generation* only when its salts
//! equal the header's and its checksum continues the running checksum of
//! the header and every frame before it; the first frame that fails either
//! test ends the generation (what follows is left over from an older one,
//! or being written). A frame whose "database size" field is not zero is a
//! commit frame: it and the frames since the previous commit frame are one
//! transaction. So a reader that stops at the last commit frame it can
//! validate sees exactly the committed transactions, in order, whatever
//! else the file holds, and a torn or damaged tail is never mistaken for
//! data.

// SQLite's WAL format is big-endian by specification (its checksums may
// read words either way, as the magic says).
#![allow(clippy::big_endian_bytes)]

use std::ops::Range;

/// Magic of a log whose checksums read words little-endian.
pub const MAGIC_LE: u32 = 0x377f_0682;
/// Magic of a log whose checksums read words big-endian.
pub const MAGIC_BE: u32 = 0x377f_0683;
/// The only WAL format version there is.
pub const FORMAT_VERSION: u32 = 3_007_000;
/// Length of the log header.
pub const HEADER_LEN: usize = 32;
/// Length of a frame header.
pub const FRAME_HEADER_LEN: usize = 24;

/// Why a log header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalError {
    /// Fewer than [`HEADER_LEN`] bytes: the log is empty or being created.
    #[error("the log is shorter than its 32-byte header")]
    Short,
    /// Not a WAL file.
    #[error("bad magic {0:#010x} (not an SQLite write-ahead log)")]
    Magic(u32),
    /// A format this reader does not know.
    #[error("unknown WAL format version {0}")]
    Version(u32),
    /// Not a power of two from 512 to 65536.
    #[error("invalid page size {0}")]
    PageSize(u32),
    /// The header's own checksum does not match: torn or damaged.
    #[error("the header checksum does not match")]
    Checksum,
}

/// A log header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WalHeader {
    /// Whether checksums read 32-bit words big-endian (`MAGIC_BE`).
    pub big_endian: bool,
    /// Database page size in bytes.
    pub page_size: u32,
    /// Incremented by SQLite each time the log restarts from its start.
    pub checkpoint_seq: u32,
    /// Salts, changed at every restart: they tell generations apart.
    pub salt: [u32; 2],
    /// Checksum of the first 24 header bytes; the frames' chain starts
    /// from it.
    pub checksum: [u32; 2],
}

/// The big-endian word at `at`; callers pass slices long enough, and a
/// short one reads as 0 (which no check accepts).
fn be32(bytes: &[u8], at: usize) -> u32 {
    word(bytes.get(at..), true)
}

fn word(bytes: Option<&[u8]>, big_endian: bool) -> u32 {
    let w = bytes
        .and_then(|b| b.get(..4))
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .unwrap_or_default();
    if big_endian {
        u32::from_be_bytes(w)
    } else {
        u32::from_le_bytes(w)
    }
}

/// SQLite's WAL checksum: continues `chain` over `data`, whose length is a
/// multiple of 8, two 32-bit words at a time.
#[must_use]
pub fn checksum(big_endian: bool, chain: [u32; 2], data: &[u8]) -> [u32; 2] {
    // One loop per byte order, so the order is not decided per word: the
    // watcher sums every page the application writes.
    if big_endian {
        sum_words(chain, data, u32::from_be_bytes)
    } else {
        sum_words(chain, data, u32::from_le_bytes)
    }
}

#[inline(always)]
fn sum_words(chain: [u32; 2], data: &[u8], word: impl Fn([u8; 4]) -> u32) -> [u32; 2] {
    let [mut s0, mut s1] = chain;
    for pair in data.chunks_exact(8) {
        let (x0, x1) = pair.split_at(4);
        let (Ok(x0), Ok(x1)) = (<[u8; 4]>::try_from(x0), <[u8; 4]>::try_from(x1)) else {
            continue;
        };
        s0 = s0.wrapping_add(word(x0)).wrapping_add(s1);
        s1 = s1.wrapping_add(word(x1)).wrapping_add(s0);
    }
    [s0, s1]
}

impl WalHeader {
    /// Parses and checks the header at the start of `bytes`.
    ///
    /// # Errors
    /// `WalError` saying what is wrong.
    pub fn parse(bytes: &[u8]) -> Result<Self, WalError> {
        let bytes = bytes.get(..HEADER_LEN).ok_or(WalError::Short)?;
        let big_endian = match be32(bytes, 0) {
            MAGIC_LE => false,
            MAGIC_BE => true,
            other => return Err(WalError::Magic(other)),
        };
        let version = be32(bytes, 4);
        if version != FORMAT_VERSION {
            return Err(WalError::Version(version));
        }
        let page_size = be32(bytes, 8);
        if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(WalError::PageSize(page_size));
        }
        let header = Self {
            big_endian,
            page_size,
            checkpoint_seq: be32(bytes, 12),
            salt: [be32(bytes, 16), be32(bytes, 20)],
            checksum: [be32(bytes, 24), be32(bytes, 28)],
        };
        if checksum(big_endian, [0, 0], bytes.get(..24).unwrap_or_default()) != header.checksum {
            return Err(WalError::Checksum);
        }
        Ok(header)
    }

    /// The header's 32 bytes, with its checksum computed afresh (for tests
    /// and tools that build logs; cairn itself never writes one).
    #[must_use]
    #[cfg(any(test, feature = "internals"))]
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let magic = if self.big_endian { MAGIC_BE } else { MAGIC_LE };
        let [salt1, salt2] = self.salt;
        let mut words = vec![
            magic,
            FORMAT_VERSION,
            self.page_size,
            self.checkpoint_seq,
            salt1,
            salt2,
        ];
        let bytes = |words: &[u32]| {
            words
                .iter()
                .flat_map(|w| w.to_be_bytes())
                .collect::<Vec<u8>>()
        };
        words.extend(checksum(self.big_endian, [0, 0], &bytes(&words)));
        let mut out = [0u8; HEADER_LEN];
        for (slot, byte) in out.iter_mut().zip(bytes(&words)) {
            *slot = byte;
        }
        out
    }

    /// Bytes of one frame: header and page.
    #[must_use]
    pub fn frame_len(&self) -> usize {
        FRAME_HEADER_LEN + self.page_size as usize
    }

    /// The file offset of frame `index` (0-based).
    #[must_use]
    pub fn frame_offset(&self, index: u64) -> u64 {
        HEADER_LEN as u64 + index * self.frame_len() as u64
    }
}

/// One committed transaction found in a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The page images it wrote, in log order (a page written twice
    /// appears twice; the later image wins): page number (from 1) and
    /// where the image lies in the bytes given to [`Cursor::read`].
    pub pages: Vec<(u32, Range<usize>)>,
    /// The database's size in pages after it.
    pub db_pages: u32,
    /// Index of the frame after its commit frame: the log holds this many
    /// frames of the generation up to and including this transaction.
    pub end_frame: u64,
}

/// Where a reader is in one generation of a log: after the commit frame of
/// the last transaction it returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    header: WalHeader,
    chain: [u32; 2],
    frames: u64,
}

impl Cursor {
    /// A reader at the start of the generation `header` begins.
    #[must_use]
    pub fn new(header: WalHeader) -> Self {
        Self {
            header,
            chain: header.checksum,
            frames: 0,
        }
    }

    /// The generation followed.
    #[must_use]
    pub fn header(&self) -> &WalHeader {
        &self.header
    }

    /// Frames of committed transactions read so far.
    #[must_use]
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// The running checksum after the last committed frame read: two
    /// cursors with equal headers, frame counts and chains have read the
    /// same frames.
    #[must_use]
    #[cfg(any(test, feature = "internals"))]
    pub fn chain(&self) -> [u32; 2] {
        self.chain
    }

    /// The file offset the next frame starts at; [`Cursor::read`] takes
    /// the log's bytes from here on.
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.header.frame_offset(self.frames)
    }

    /// Reads the frames in `bytes` (the log from [`Cursor::offset`] on) and
    /// returns the transactions they complete, moving past the last commit
    /// frame. Frames after it, valid or not, are left: the rest of a
    /// transaction still being written, or the end of the generation.
    #[must_use]
    #[cfg(any(test, feature = "internals"))]
    pub fn read(&mut self, bytes: &[u8]) -> Vec<Transaction> {
        self.read_more(bytes).0
    }

    /// As [`Cursor::read`], and whether every whole frame of `bytes` was
    /// valid: then the log may go on past them, and a caller reading it in
    /// pieces reads on from [`Cursor::offset`].
    #[must_use]
    pub fn read_more(&mut self, bytes: &[u8]) -> (Vec<Transaction>, bool) {
        let mut done = Vec::new();
        let mut pending = Vec::new();
        let start = self.frames;
        let mut frames = start;
        let mut committed = None;
        let mut probe = *self;
        probe.scan(bytes, |page, db_pages, image| {
            pending.push((page, image));
            frames += 1;
            if db_pages != 0 {
                done.push(Transaction {
                    pages: std::mem::take(&mut pending),
                    db_pages,
                    end_frame: frames,
                });
                committed = Some(frames);
            }
        });
        if let Some(frames) = committed {
            // The chain as it stood after the last commit frame: scanned
            // again up to it, so the state never includes frames after.
            let mut upto = *self;
            let len = usize::try_from(frames - self.frames)
                .unwrap_or(usize::MAX)
                .saturating_mul(self.header.frame_len());
            upto.scan(bytes.get(..len).unwrap_or_default(), |_, _, _| {});
            *self = upto;
        }
        let whole = bytes.len() / self.header.frame_len();
        let all_valid = usize::try_from(frames - start).is_ok_and(|n| n == whole);
        (done, all_valid)
    }

    /// Calls `found(page, db_pages, image range)` for each valid frame of
    /// `bytes` (the log from [`Cursor::offset`] on), advancing over every
    /// one, committed or not.
    fn scan(&mut self, bytes: &[u8], mut found: impl FnMut(u32, u32, Range<usize>)) {
        let frame_len = self.header.frame_len();
        for (i, frame) in bytes.chunks_exact(frame_len).enumerate() {
            let salt = [be32(frame, 8), be32(frame, 12)];
            if salt != self.header.salt {
                break;
            }
            let (head, page) = frame.split_at(FRAME_HEADER_LEN);
            let (summed, _) = head.split_at(8);
            let mut chain = checksum(self.header.big_endian, self.chain, summed);
            chain = checksum(self.header.big_endian, chain, page);
            let number = be32(head, 0);
            if chain != [be32(head, 16), be32(head, 20)] || number == 0 {
                break;
            }
            self.chain = chain;
            self.frames += 1;
            let start = i * frame_len + FRAME_HEADER_LEN;
            found(
                number,
                be32(head, 4),
                start..start + self.header.page_size as usize,
            );
        }
    }
}

/// How many frames of `header`'s generation `body` (the log from its
/// first frame on) holds, committed or not.
#[must_use]
pub fn valid_frames(header: &WalHeader, body: &[u8]) -> u64 {
    let mut cursor = Cursor::new(*header);
    let mut n = 0;
    cursor.scan(body, |_, _, _| n += 1);
    n
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Builds a log: `txns` are lists of (page number, fill byte); the
    /// last frame of each is its commit frame, with `db_pages` the largest
    /// page number so far.
    fn build(header: &WalHeader, txns: &[Vec<(u32, u8)>]) -> Vec<u8> {
        let mut out = header.encode().to_vec();
        let mut chain = header.checksum;
        let mut size = 0;
        for txn in txns {
            for (i, &(page, fill)) in txn.iter().enumerate() {
                size = size.max(page);
                let mut frame = vec![0u8; header.frame_len()];
                frame[0..4].copy_from_slice(&page.to_be_bytes());
                let commit = if i + 1 == txn.len() { size } else { 0 };
                frame[4..8].copy_from_slice(&commit.to_be_bytes());
                frame[8..12].copy_from_slice(&header.salt[0].to_be_bytes());
                frame[12..16].copy_from_slice(&header.salt[1].to_be_bytes());
                frame[FRAME_HEADER_LEN..].fill(fill);
                chain = checksum(header.big_endian, chain, &frame[..8]);
                chain = checksum(header.big_endian, chain, &frame[FRAME_HEADER_LEN..]);
                frame[16..20].copy_from_slice(&chain[0].to_be_bytes());
                frame[20..24].copy_from_slice(&chain[1].to_be_bytes());
                out.extend_from_slice(&frame);
            }
        }
        out
    }

    fn header(big_endian: bool, salt: [u32; 2]) -> WalHeader {
        let mut h = WalHeader {
            big_endian,
            page_size: 512,
            checkpoint_seq: 7,
            salt,
            checksum: [0, 0],
        };
        h = WalHeader::parse(&h.encode()).unwrap_or_else(|e| panic!("parse: {e}"));
        h
    }

    fn txn_strategy() -> impl Strategy<Value = Vec<Vec<(u32, u8)>>> {
        prop::collection::vec(prop::collection::vec((1u32..40, any::<u8>()), 1..5), 0..8)
    }

    proptest! {
        #[test]
        fn every_committed_transaction_and_nothing_else(
            txns in txn_strategy(),
            big_endian in any::<bool>(),
            cut in any::<prop::sample::Index>(),
            flip in any::<Option<prop::sample::Index>>(),
        ) {
            let h = header(big_endian, [0x1234_5678, 0x9abc_def0]);
            let mut log = build(&h, &txns);
            // Damage one byte after the header, and cut the log anywhere.
            let body = log.len() - HEADER_LEN;
            let damaged = flip.filter(|_| body > 0).map(|f| HEADER_LEN + f.index(body));
            if let Some(at) = damaged {
                log[at] ^= 0x40;
            }
            let end = HEADER_LEN + cut.index(body + 1);
            let limit = damaged.map_or(end, |d| d.min(end));
            // Expected: the transactions whose frames all lie before the
            // first damaged byte and the cut.
            let mut expected = Vec::new();
            let mut frames = 0u64;
            for txn in &txns {
                let txn_end = h.frame_offset(frames + txn.len() as u64);
                if txn_end > limit as u64 {
                    break;
                }
                frames += txn.len() as u64;
                expected.push((txn.iter().map(|(p, _)| *p).collect::<Vec<_>>(), frames));
            }
            let mut cursor = Cursor::new(WalHeader::parse(&log).unwrap_or_else(|e| panic!("{e}")));
            let found = cursor.read(&log[HEADER_LEN..end]);
            let got: Vec<(Vec<u32>, u64)> = found
                .iter()
                .map(|t| (t.pages.iter().map(|(p, _)| *p).collect(), t.end_frame))
                .collect();
            prop_assert_eq!(&got, &expected);
            prop_assert_eq!(cursor.frames(), frames);
            // The images are the ones written.
            let mut i = 0;
            for (t, txn) in found.iter().zip(&txns) {
                for ((_, range), (_, fill)) in t.pages.iter().zip(txn) {
                    prop_assert!(log[HEADER_LEN..][range.clone()].iter().all(|b| b == fill));
                    i += 1;
                }
            }
            prop_assert_eq!(i as u64, frames);
        }

        #[test]
        fn reading_in_pieces_finds_the_same(txns in txn_strategy(), step in 1usize..3000) {
            let h = header(false, [1, 2]);
            let log = build(&h, &txns);
            let mut whole = Cursor::new(h);
            let all = whole.read(&log[HEADER_LEN..]);
            let mut piecewise = Cursor::new(h);
            let mut count = 0;
            let mut end = HEADER_LEN;
            while end < log.len() {
                end = (end + step).min(log.len());
                let from = usize::try_from(piecewise.offset()).unwrap_or(usize::MAX);
                count += piecewise.read(&log[from..end]).len();
            }
            prop_assert_eq!(count, all.len());
            prop_assert_eq!(piecewise, whole);
        }

        #[test]
        fn read_more_says_whether_the_log_may_go_on(
            txns in txn_strategy(),
            stale in 0usize..4,
            cut in any::<prop::sample::Index>(),
        ) {
            // SQLite leaves an older generation's frames past the current
            // one's end: those end the log.
            let h = header(false, [1, 2]);
            let mut log = build(&h, &txns);
            let valid = (log.len() - HEADER_LEN) / h.frame_len();
            let old = build(&header(false, [0, 7]), &[vec![(1, 1); stale]]);
            log.extend_from_slice(&old[HEADER_LEN..]);
            let end = HEADER_LEN + cut.index(log.len() - HEADER_LEN + 1);
            let bytes = &log[HEADER_LEN..end];
            let (_, more) = Cursor::new(h).read_more(bytes);
            prop_assert_eq!(more, bytes.len() / h.frame_len() <= valid);
        }

        #[test]
        fn headers_round_trip(
            big_endian in any::<bool>(),
            shift in 9u32..=16,
            seq in any::<u32>(),
            salt in any::<[u32; 2]>(),
        ) {
            let h = WalHeader { big_endian, page_size: 1 << shift, checkpoint_seq: seq, salt, checksum: [0, 0] };
            let parsed = WalHeader::parse(&h.encode()).unwrap_or_else(|e| panic!("{e}"));
            prop_assert_eq!(parsed.page_size, 1 << shift);
            prop_assert_eq!((parsed.big_endian, parsed.checkpoint_seq, parsed.salt), (big_endian, seq, salt));
        }
    }

    #[test]
    fn frames_of_another_generation_end_the_log() {
        let old = header(false, [5, 6]);
        let new = header(false, [6, 99]);
        let old_log = build(&old, &[vec![(1, 1), (2, 2)], vec![(3, 3)], vec![(4, 4)]]);
        let new_log = build(&new, &[vec![(1, 9)]]);
        // A restarted log: the new generation overwrote the start of the
        // old one, whose later frames are still in the file.
        let mut file = old_log.clone();
        file[..new_log.len()].copy_from_slice(&new_log);
        let mut cursor = Cursor::new(WalHeader::parse(&file).unwrap_or_else(|e| panic!("{e}")));
        let found = cursor.read(&file[HEADER_LEN..]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].pages.len(), 1);
        // The old generation's reader, past what was overwritten, still
        // validates the old frames that remain.
        let mut old_cursor = Cursor::new(old);
        let _ = old_cursor.read(&old_log[HEADER_LEN..HEADER_LEN + 2 * old.frame_len()]);
        let from = usize::try_from(old_cursor.offset()).unwrap_or(usize::MAX);
        assert_eq!(old_cursor.read(&file[from..]).len(), 2);
    }

    #[test]
    fn bad_headers_are_refused() {
        let h = header(true, [1, 2]).encode();
        assert_eq!(WalHeader::parse(&h[..31]), Err(WalError::Short));
        let mut bad = h;
        bad[0] = 0;
        assert!(matches!(WalHeader::parse(&bad), Err(WalError::Magic(_))));
        let mut bad = h;
        bad[20] ^= 1;
        assert_eq!(WalHeader::parse(&bad), Err(WalError::Checksum));
        let mut bad = h;
        bad[8..12].copy_from_slice(&1000u32.to_be_bytes());
        assert_eq!(WalHeader::parse(&bad), Err(WalError::PageSize(1000)));
        let mut bad = h;
        bad[4..8].copy_from_slice(&1u32.to_be_bytes());
        assert_eq!(WalHeader::parse(&bad), Err(WalError::Version(1)));
    }

    /// The log of a real database, replayed onto the database file as it
    /// was before those transactions, gives back every intermediate state.
    #[test]
    fn a_real_log_replays_to_every_committed_state() {
        use rusqlite::Connection;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let path = dir.path().join("app.db");
        let conn = Connection::open(&path).unwrap_or_else(|e| panic!("open: {e}"));
        let state = |conn: &Connection| -> String {
            conn.query_row(
                "SELECT count(*) || ':' || coalesce(sum(length(v)), 0) || ':' || coalesce(group_concat(k || v, ','), '') FROM t",
                [],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| panic!("state: {e}"))
        };
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
             CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT);
             PRAGMA wal_checkpoint(TRUNCATE);",
        )
        .unwrap_or_else(|e| panic!("setup: {e}"));
        let base = std::fs::read(&path).unwrap_or_else(|e| panic!("read: {e}"));
        let mut states = Vec::new();
        for i in 0..30i64 {
            let v = "x".repeat(usize::try_from(i * 137 % 3000).unwrap_or(0));
            conn.execute(
                "INSERT INTO t(k, v) VALUES (?1, ?2)",
                rusqlite::params![i, v],
            )
            .unwrap_or_else(|e| panic!("insert: {e}"));
            if i % 7 == 3 {
                conn.execute("DELETE FROM t WHERE k % 5 = 1", [])
                    .unwrap_or_else(|e| panic!("delete: {e}"));
            }
            states.push(state(&conn));
        }
        conn.execute_batch("VACUUM")
            .unwrap_or_else(|e| panic!("vacuum: {e}"));
        states.push(state(&conn));
        let log =
            std::fs::read(dir.path().join("app.db-wal")).unwrap_or_else(|e| panic!("wal: {e}"));
        let header = WalHeader::parse(&log).unwrap_or_else(|e| panic!("header: {e}"));
        let mut cursor = Cursor::new(header);
        let txns = cursor.read(&log[HEADER_LEN..]);
        assert!(txns.len() >= states.len(), "{} transactions", txns.len());
        // Every transaction applied in turn; the states after the ones
        // that ended a statement above must appear in order.
        let page = header.page_size as usize;
        let mut image = base;
        let mut seen = Vec::new();
        let replay = dir.path().join("replay.db");
        for txn in &txns {
            for (pgno, range) in &txn.pages {
                let at = (*pgno as usize - 1) * page;
                if image.len() < at + page {
                    image.resize(at + page, 0);
                }
                image[at..at + page].copy_from_slice(&log[HEADER_LEN..][range.clone()]);
            }
            image.truncate(txn.db_pages as usize * page);
            std::fs::write(&replay, &image).unwrap_or_else(|e| panic!("write: {e}"));
            let copy = Connection::open(&replay).unwrap_or_else(|e| panic!("open copy: {e}"));
            let ok: String = copy
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .unwrap_or_else(|e| panic!("check: {e}"));
            assert_eq!(ok, "ok");
            seen.push(state(&copy));
        }
        let mut want = states.iter();
        let mut next = want.next();
        for s in &seen {
            if Some(s) == next {
                next = want.next();
            }
        }
        assert!(next.is_none(), "state {next:?} never replayed");
        assert_eq!(seen.last(), states.last());
    }
}
