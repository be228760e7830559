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

    #[test]
    fn defaults_are_valid() {
        assert!(ChunkerParams::default().validate().is_ok());
    }
}
