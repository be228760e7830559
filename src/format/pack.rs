//! Data packs: many sealed blobs in one file, with a sealed header at the end
//! listing them, so that a pack can be read and checked on its own.
//!
//! ```text
//! blob_0 ‖ … ‖ blob_n-1 ‖ sealed header ‖ header_len u32 ‖ "CAIRNPAK"
//! ```
//!
//! A pack's name is the BLAKE3 hash of its bytes. Offsets and lengths are
//! u32, so a pack is smaller than 4 GiB; cairn closes packs at the configured
//! target size (16 MiB by default).

use serde::{Deserialize, Serialize};

use crate::format::codec;
use crate::format::crypto::{Crypto, Domain};
use crate::id::BlobId;

/// Magic at the very end of every pack.
pub const PACK_MAGIC: &[u8; 8] = b"CAIRNPAK";
/// Bytes after the sealed header: its length (u32) and the magic.
pub const TRAILER_LEN: u64 = 12;

/// What a blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BlobKind {
    /// A chunk of file content.
    Data,
    /// An encoded directory tree.
    Tree,
}

/// How a blob's plaintext was transformed before sealing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compression {
    /// Stored as is (compression would not have made it smaller).
    None,
    /// zstd frame.
    Zstd,
}

/// One blob's place in a pack. Indexes store the same records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackEntry {
    /// Keyed BLAKE3 of the plaintext.
    pub id: BlobId,
    /// Data or tree.
    pub kind: BlobKind,
    /// How the sealed bytes were compressed.
    pub compression: Compression,
    /// Offset of the sealed blob in the pack.
    pub offset: u32,
    /// Length of the sealed blob.
    pub length: u32,
    /// Length of the plaintext.
    pub raw_length: u32,
}

/// The list of blobs at the end of a pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackHeader {
    /// Blobs in file order.
    pub entries: Vec<PackEntry>,
}

/// Why a pack could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// Too short or wrong magic: not a whole pack.
    #[error("pack is truncated or not a cairn pack ({0})")]
    Truncated(String),
    /// The header did not authenticate or decode.
    #[error("pack header is damaged: {0}")]
    Header(String),
}

/// Reads the trailer; returns the sealed header's length.
///
/// # Errors
/// `PackError::Truncated` when the trailer is not a cairn trailer or the
/// header would not fit in the file.
pub fn parse_trailer(trailer: &[u8], file_size: u64) -> Result<u32, PackError> {
    if file_size < TRAILER_LEN || trailer.len() != TRAILER_LEN as usize {
        return Err(PackError::Truncated(format!("{file_size} bytes")));
    }
    if trailer.get(4..) != Some(PACK_MAGIC.as_slice()) {
        return Err(PackError::Truncated("no end magic".into()));
    }
    let len_bytes: [u8; 4] = trailer
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| PackError::Truncated("short trailer".into()))?;
    let len = u32::from_le_bytes(len_bytes);
    if u64::from(len) > file_size - TRAILER_LEN {
        return Err(PackError::Truncated(format!(
            "header length {len} exceeds the file"
        )));
    }
    Ok(len)
}

/// Decodes an opened (decrypted) header and checks it against the pack size:
/// blobs must lie in order, without overlap, before the header.
///
/// # Errors
/// `PackError::Header` when the header is malformed or inconsistent.
pub fn decode_header(plain: &[u8], header_offset: u64) -> Result<PackHeader, PackError> {
    let header: PackHeader = codec::decode(plain).map_err(|e| PackError::Header(e.to_string()))?;
    let mut end = 0u64;
    for e in &header.entries {
        let start = u64::from(e.offset);
        if start < end || start + u64::from(e.length) > header_offset {
            return Err(PackError::Header(format!(
                "blob {} at {}+{} overlaps or lies outside the pack",
                e.id.short(),
                e.offset,
                e.length
            )));
        }
        end = start + u64::from(e.length);
    }
    Ok(header)
}

/// Parses a whole pack file: trailer, then sealed header.
///
/// # Errors
/// `PackError` when the pack is truncated or its header is damaged.
#[cfg(any(test, feature = "internals"))]
pub fn read_header(crypto: &Crypto, pack: &[u8]) -> Result<PackHeader, PackError> {
    let size = pack.len() as u64;
    let trailer_at = size
        .checked_sub(TRAILER_LEN)
        .ok_or_else(|| PackError::Truncated(format!("{size} bytes")))?;
    let trailer = pack.get(trailer_at as usize..).unwrap_or_default();
    let header_len = u64::from(parse_trailer(trailer, size)?);
    let header_at = trailer_at - header_len;
    let sealed = pack
        .get(header_at as usize..trailer_at as usize)
        .unwrap_or_default();
    let plain = crypto
        .open(Domain::PackHeader, sealed)
        .map_err(|e| PackError::Header(e.to_string()))?;
    decode_header(&plain, header_at)
}

/// The bytes that end a pack listing `entries`: sealed header, its length
/// and the magic.
///
/// # Errors
/// Fails only when sealing fails (no randomness).
pub fn header_and_trailer(crypto: &Crypto, entries: &[PackEntry]) -> crate::error::Result<Vec<u8>> {
    let header = PackHeader {
        entries: entries.to_vec(),
    };
    let mut out = crypto.seal(Domain::PackHeader, &codec::encode(&header))?;
    let len = u32::try_from(out.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(PACK_MAGIC);
    Ok(out)
}
