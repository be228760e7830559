//! The one place that turns records into bytes and back.
//!
//! Every structured record cairn stores (pack headers, index files, trees,
//! snapshots, key files, the config body) goes through [`encode`] and
//! [`decode`], so the serialisation library can be replaced without touching
//! any other module. The encoding is bincode 2 in its fixed-width,
//! little-endian configuration; `store-format.md` spells out what that means
//! byte for byte. Decoding is bounded: a length prefix that claims more than
//! [`MAX_RECORD`] bytes is rejected before anything is allocated, and trailing
//! bytes are an error, so a record has exactly one encoding.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest record cairn will decode (256 MiB). A tree of a directory
/// with about two million entries reaches this; nothing else comes close.
pub const MAX_RECORD: usize = 256 * 1024 * 1024;

fn config() -> impl bincode::config::Config {
    limited::<MAX_RECORD>()
}

fn limited<const LIMIT: usize>() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<LIMIT>()
}

fn decode_limited<const LIMIT: usize, T: DeserializeOwned>(
    bytes: &[u8],
) -> Result<(T, usize), DecodeError> {
    bincode::serde::decode_from_slice(bytes, limited::<LIMIT>())
        .map_err(|e| DecodeError(e.to_string()))
}

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(String);

/// Encodes a record.
///
/// Encoding into a vector fails only for types bincode cannot express
/// (sequences of unknown length, maps with complex keys); cairn's records
/// are structs of integers, byte vectors, strings and vectors of those, so
/// a failure is a programming error. It yields an empty encoding, which no
/// decoder accepts, so it surfaces as a damaged object rather than being
/// stored as something plausible; debug builds stop at once.
#[must_use]
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, config()).unwrap_or_else(|e| {
        debug_assert!(false, "encoding a record failed: {e}");
        Vec::new()
    })
}

/// Decodes a record, rejecting trailing bytes.
///
/// # Errors
/// Returns [`DecodeError`] when the bytes are not exactly one valid record.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    // bincode allocates a byte vector of the claimed length before reading
    // it, checking only the limit; a limit near the input's size keeps a
    // short hostile input from allocating hundreds of MiB.
    let (value, used) = match bytes.len() {
        0..=0x1_0000 => decode_limited::<0x1_0000, T>(bytes)?,
        0x1_0001..=0x10_0000 => decode_limited::<0x10_0000, T>(bytes)?,
        0x10_0001..=0x100_0000 => decode_limited::<0x100_0000, T>(bytes)?,
        _ => decode_limited::<MAX_RECORD, T>(bytes)?,
    };
    if used != bytes.len() {
        return Err(DecodeError(format!(
            "{} trailing bytes after the record",
            bytes.len() - used
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_width_little_endian() {
        let bytes = encode(&(1u32, vec![7u8, 8], String::from("a")));
        assert_eq!(
            bytes,
            [
                1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 7, 8, 1, 0, 0, 0, 0, 0, 0, 0, b'a'
            ]
        );
    }

    #[test]
    fn trailing_bytes_rejected() {
        let mut bytes = encode(&5u32);
        bytes.push(0);
        assert!(decode::<u32>(&bytes).is_err());
    }

    #[test]
    fn huge_length_rejected_without_allocation() {
        let bytes = [0xff; 16];
        assert!(decode::<Vec<u64>>(&bytes).is_err());
    }
}
