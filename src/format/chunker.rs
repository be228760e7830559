//! Content-defined chunking with FastCDC (the 2020 variant).
//!
//! The parameters live in the repository config so every client cuts the
//! same boundaries; the gear table is mixed with a secret seed from the master
//! key so that chunk lengths do not fingerprint known files.

use std::io::Read;

use std::ops::Range;

use fastcdc::v2020::{FastCDC, Normalization, StreamCDC};
use serde::{Deserialize, Serialize};

/// FastCDC parameters, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// No chunk is shorter (except a file's last).
    pub min_size: u32,
    /// The size the cut-point masks aim for.
    pub avg_size: u32,
    /// No chunk is longer.
    pub max_size: u32,
    /// FastCDC normalisation level (0–3).
    pub normalization: u8,
}

impl Default for ChunkerParams {
    /// 64 KiB / 256 KiB / 1 MiB, level 1: see "Chunker parameters" in
    /// `store-format.md` for the measurements behind the choice.
    fn default() -> Self {
        Self {
            min_size: 64 * 1024,
            avg_size: 256 * 1024,
            max_size: 1024 * 1024,
            normalization: 1,
        }
    }
}

impl ChunkerParams {
    /// Checks the parameters against FastCDC's limits.
    ///
    /// # Errors
    /// A message naming the parameter out of range.
    pub fn validate(&self) -> Result<(), String> {
        use fastcdc::v2020 as f;
        let (min, avg, max) = (
            self.min_size as usize,
            self.avg_size as usize,
            self.max_size as usize,
        );
        let ok = (f::MINIMUM_MIN..=f::MINIMUM_MAX).contains(&min)
            && (f::AVERAGE_MIN..=f::AVERAGE_MAX).contains(&avg)
            && (f::MAXIMUM_MIN..=f::MAXIMUM_MAX).contains(&max)
            && min <= avg
            && avg <= max
            && min % 2 == 0
            && avg % 2 == 0
            && max % 2 == 0
            && self.normalization <= 3;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "chunker parameters {min}/{avg}/{max} (level {}) are outside FastCDC's limits",
                self.normalization
            ))
        }
    }

    fn level(&self) -> Normalization {
        match self.normalization {
            0 => Normalization::Level0,
            1 => Normalization::Level1,
            2 => Normalization::Level2,
            _ => Normalization::Level3,
        }
    }

    /// Cut points of data already in memory. Gives the same chunks as
    /// [`ChunkerParams::chunks`] on the same bytes, without the streaming
    /// chunker's `max_size` buffer per call (small files are read whole).
    pub fn cut_points<'a>(
        &self,
        data: &'a [u8],
        seed: u64,
    ) -> impl Iterator<Item = Range<usize>> + 'a {
        FastCDC::with_level_and_seed(
            data,
            self.min_size as usize,
            self.avg_size as usize,
            self.max_size as usize,
            self.level(),
            seed,
        )
        .map(|c| c.offset..c.offset + c.length)
    }

    /// Splits `reader` into batches of whole chunks, each read into one
    /// buffer of about `target` bytes (at least twice `max_size`): see
    /// `Batches`. The chunks are exactly those of [`ChunkerParams::chunks`]
    /// on the same stream and seed.
    pub fn batches<R: Read>(&self, reader: R, seed: u64, target: usize) -> Batches<R> {
        Batches {
            params: *self,
            seed,
            reader,
            target: target.max(2 * self.max_size as usize),
            carry: Vec::new(),
            eof: false,
            pieces: None,
        }
    }

    /// Like [`ChunkerParams::batches`], but cut into pieces of exactly
    /// `piece` bytes (the last may be shorter) instead of at content-defined
    /// points: page-aware chunking of database images, whose changes
    /// happen a page at a time at fixed offsets, so that a changed page
    /// changes one chunk.
    pub fn page_batches<R: Read>(&self, reader: R, piece: usize, target: usize) -> Batches<R> {
        let piece = piece.max(1);
        Batches {
            params: *self,
            seed: 0,
            reader,
            target: target.max(piece) / piece * piece,
            carry: Vec::new(),
            eof: false,
            pieces: Some(piece),
        }
    }

    /// Splits `reader` into chunks; each item is one chunk's bytes.
    pub fn chunks<R: Read>(
        &self,
        reader: R,
        seed: u64,
    ) -> impl Iterator<Item = std::io::Result<Vec<u8>>> {
        StreamCDC::with_level_and_seed(
            reader,
            self.min_size as usize,
            self.avg_size as usize,
            self.max_size as usize,
            self.level(),
            seed,
        )
        .map(|r| r.map(|c| c.data).map_err(std::io::Error::from))
    }
}

/// A run of whole chunks read from a stream: `data` holds them back to
/// back, `cuts` their ranges in it, in stream order.
#[derive(Debug)]
pub struct Batch {
    /// The chunks' bytes.
    pub data: Vec<u8>,
    /// Each chunk's range in `data`; together they cover it.
    pub cuts: Vec<Range<usize>>,
}

/// Reads a stream in large buffers and cuts them into chunks, for callers
/// that hand the chunks of one buffer to several threads at once.
///
/// A cut point depends only on the `max_size` bytes from the chunk's start
/// (fewer at the end of the stream). A chunk is therefore cut from a batch
/// only while at least `max_size` bytes follow its start, or the stream has
/// ended; the bytes after the last such chunk are carried over to the
/// start of the next batch. The cut points are exactly the streaming
/// chunker's, and no chunk is copied out of the buffer it was read into.
#[derive(Debug)]
pub struct Batches<R> {
    params: ChunkerParams,
    seed: u64,
    reader: R,
    target: usize,
    /// Bytes read but not yet cut (fewer than `max_size`).
    carry: Vec<u8>,
    eof: bool,
    /// Fixed-size pieces instead of content-defined chunks.
    pieces: Option<usize>,
}

impl<R: Read> Batches<R> {
    /// The most bytes a batch reads into its buffer.
    pub fn buffer_size(&self) -> usize {
        self.target
    }

    /// Reads and cuts the next batch into `buf` (its contents are replaced;
    /// pass the buffer of a batch no longer needed to reuse its memory).
    /// `None` at the end of the stream.
    ///
    /// # Errors
    /// The reader's errors.
    pub fn next_batch(&mut self, mut buf: Vec<u8>) -> std::io::Result<Option<Batch>> {
        buf.clear();
        buf.reserve(self.target);
        buf.append(&mut self.carry);
        if !self.eof {
            let want = self.target.saturating_sub(buf.len());
            let got = (&mut self.reader).take(want as u64).read_to_end(&mut buf)?;
            // `take` stops early only at the end of the stream.
            self.eof = got < want;
        }
        if let Some(piece) = self.pieces {
            let cuts: Vec<Range<usize>> = (0..buf.len())
                .step_by(piece)
                .map(|start| start..(start + piece).min(buf.len()))
                .collect();
            if cuts.is_empty() {
                return Ok(None);
            }
            return Ok(Some(Batch { data: buf, cuts }));
        }
        let max = self.params.max_size as usize;
        let mut cuts = Vec::new();
        let mut end = 0;
        for c in FastCDC::with_level_and_seed(
            &buf,
            self.params.min_size as usize,
            self.params.avg_size as usize,
            max,
            self.params.level(),
            self.seed,
        ) {
            if !self.eof && buf.len() - c.offset < max {
                // Fewer than `max_size` bytes to look at: the streaming
                // chunker would see more, so this cut waits for them.
                break;
            }
            end = c.offset + c.length;
            cuts.push(c.offset..end);
        }
        self.carry
            .extend_from_slice(buf.get(end..).unwrap_or_default());
        buf.truncate(end);
        if cuts.is_empty() {
            return Ok(None);
        }
        Ok(Some(Batch { data: buf, cuts }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small chunks, so that modest test inputs span many of them.
    fn small() -> ChunkerParams {
        ChunkerParams {
            min_size: 1024,
            avg_size: 4096,
            max_size: 16384,
            normalization: 1,
        }
    }

    #[test]
    fn page_batches_cut_at_every_page() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let mut b = small().page_batches(&data[..], 4096, 6000);
        let mut pieces = Vec::new();
        while let Some(batch) = b.next_batch(Vec::new()).expect("read") {
            assert!(batch.data.len() <= 4096, "batches hold whole pages");
            for c in &batch.cuts {
                pieces.push(batch.data.get(c.clone()).expect("cut").to_vec());
            }
        }
        let lens: Vec<usize> = pieces.iter().map(Vec::len).collect();
        assert_eq!(lens, [4096, 4096, 1808]);
        assert_eq!(pieces.concat(), data);
    }

    #[test]
    fn chunks_cover_input_and_respect_bounds() {
        let p = small();
        let data: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let chunks: Vec<Vec<u8>> = p
            .chunks(&data[..], 42)
            .collect::<Result<_, _>>()
            .expect("chunk");
        assert_eq!(chunks.concat(), data);
        let n = chunks.len();
        for (i, c) in chunks.iter().enumerate() {
            assert!(c.len() <= 16384);
            if i + 1 < n {
                assert!(c.len() >= 1024);
            }
        }
    }

    #[test]
    fn slice_and_stream_chunkers_agree() {
        let p = small();
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8)
            .collect();
        let streamed: Vec<Vec<u8>> = p
            .chunks(&data[..], 7)
            .collect::<Result<_, _>>()
            .expect("chunk");
        let sliced: Vec<Vec<u8>> = p.cut_points(&data, 7).map(|r| data[r].to_vec()).collect();
        assert_eq!(streamed, sliced);
    }

    /// Gives at most `step` bytes per read, as a pipe or socket may.
    struct Dribble<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            let (head, rest) = self.data.split_at(n);
            buf[..n].copy_from_slice(head);
            self.data = rest;
            Ok(n)
        }
    }

    #[test]
    fn batches_cut_exactly_the_streaming_chunks() {
        let p = small();
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        let data: Vec<u8> = (0..300_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let lengths: std::collections::HashSet<usize> =
            p.cut_points(&data, 9).map(|r| r.len()).collect();
        assert!(lengths.len() > 10, "the cut points vary");
        for len in [0, 1, 1023, 16_384, 32_768, 32_769, 65_536, 100_001, 300_000] {
            let data = &data[..len];
            let streamed: Vec<Vec<u8>> =
                p.chunks(data, 9).collect::<Result<_, _>>().expect("chunk");
            for target in [0, 40_000, 100_000, 1 << 20] {
                for step in [usize::MAX, 4097] {
                    let mut batches = p.batches(Dribble { data, step }, 9, target);
                    assert!(batches.buffer_size() >= 2 * 16_384);
                    let mut got = Vec::new();
                    let mut buf = Vec::new();
                    while let Some(b) = batches.next_batch(buf).expect("read") {
                        assert!(!b.cuts.is_empty());
                        assert!(b.data.len() <= batches.buffer_size());
                        assert_eq!(b.cuts.last().map(|r| r.end), Some(b.data.len()));
                        got.extend(b.cuts.iter().map(|r| b.data[r.clone()].to_vec()));
                        buf = b.data;
                    }
                    assert_eq!(got, streamed, "length {len}, target {target}, step {step}");
                }
            }
        }
    }

    #[test]
    fn defaults_are_valid() {
        assert!(ChunkerParams::default().validate().is_ok());
    }
}
