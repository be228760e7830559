//! zstd with one reusable context per thread.
//!
//! Creating a zstd context costs more than compressing a small file, and a
//! backup compresses one blob per small file, so each worker thread keeps
//! its compressor (per level) and decompressor.
//!
//! A large chunk is first sampled: three 4 KiB slices (start, middle, end)
//! are compressed, and when together they do not shrink by at least 3%, the
//! chunk is taken as incompressible (already compressed media, archives,
//! encrypted data) and stored as is without running zstd over all of it.
//! That costs about 5% of a full compression on compressible data and saves
//! most of it on incompressible data; a chunk misjudged this way is merely
//! stored uncompressed.

use std::cell::RefCell;
use std::io;

/// Chunks at least this large are sampled before being compressed.
const SAMPLE_FROM: usize = 64 << 10;
/// Bytes in each of the three samples.
const SAMPLE: usize = 4 << 10;

thread_local! {
    static SAMPLE_OUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Compresses `data` into `out` (replacing its contents) if that makes it
/// smaller; returns false, leaving `out` unspecified, when it would not.
/// `out` is meant to be reused, so no allocation happens per call.
#[must_use]
pub fn compress_smaller(data: &[u8], level: i32, out: &mut Vec<u8>) -> bool {
    out.clear();
    // A frame must come out strictly smaller to be worth it; zstd stops
    // with "destination too small" as soon as it cannot.
    let limit = data.len().saturating_sub(1);
    out.reserve(limit);
    COMPRESSOR.with_borrow_mut(|slot| {
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            match zstd::bulk::Compressor::new(level) {
                Ok(c) => *slot = Some((level, c)),
                Err(_) => return false,
            }
        }
        let Some((_, c)) = slot else { return false };
        if data.len() >= SAMPLE_FROM && !looks_compressible(c, data) {
            return false;
        }
        match c.compress_to_buffer(data, out) {
            Ok(n) => n < data.len(),
            Err(_) => false,
        }
    })
}

/// True when three samples of `data` shrink by at least 3% together.
fn looks_compressible(c: &mut zstd::bulk::Compressor<'static>, data: &[u8]) -> bool {
    let mid = data.len() / 2 - SAMPLE / 2;
    let end = data.len() - SAMPLE;
    SAMPLE_OUT.with_borrow_mut(|out| {
        let mut packed = 0usize;
        for at in [0, mid, end] {
            let Some(sample) = data.get(at..at + SAMPLE) else {
                return true;
            };
            out.clear();
            out.reserve(SAMPLE + 128);
            match c.compress_to_buffer(sample, out) {
                Ok(n) => packed += n,
                Err(_) => return true,
            }
        }
        packed * 100 < 3 * SAMPLE * 97
    })
}

/// Decompresses a frame that must expand to exactly `len` bytes or fewer.
///
/// # Errors
/// A damaged frame, or one larger than `len`.
pub fn decompress(data: &[u8], len: usize) -> io::Result<Vec<u8>> {
    DECOMPRESSOR.with_borrow_mut(|slot| {
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        match slot {
            Some(d) => d.decompress(data, len),
            None => zstd::bulk::decompress(data, len),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(len: usize) -> Vec<u8> {
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect()
    }

    #[test]
    fn incompressible_chunks_are_stored_as_is_and_text_is_compressed() -> io::Result<()> {
        let mut out = Vec::new();
        assert!(!compress_smaller(&noise(256 << 10), 3, &mut out));
        let text = b"fn main() { println!(\"hello\"); }\n".repeat(8000);
        assert!(compress_smaller(&text, 3, &mut out));
        assert_eq!(decompress(&out, text.len())?, text);
        // Small inputs are not sampled: a short compressible one still is.
        assert!(compress_smaller(&text[..2000], 3, &mut out));
        Ok(())
    }
}
