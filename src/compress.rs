//! zstd with one reusable context per thread.
//!
//! Creating a zstd context costs more than compressing a small file, and a
//! backup compresses one blob per small file, so each worker thread keeps
//! its compressor (per level) and decompressor.

use std::cell::RefCell;
use std::io;

thread_local! {
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
        match c.compress_to_buffer(data, out) {
            Ok(n) => n < data.len(),
            Err(_) => false,
        }
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
