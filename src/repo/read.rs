//! Reading blobs: pack headers, sealed blobs checked against their ids,
//! and trees, through the local cache for tree packs of a remote
//! repository.

use crate::error::{Error, Result};
use crate::format::crypto::Domain;
use crate::format::index::Location;
use crate::format::pack::{self, BlobKind, Compression, PackEntry, TRAILER_LEN};
use crate::format::tree::Tree;
use crate::id::{BlobId, PackId};
use crate::repo::Repository;
use crate::storage::FileKind;

/// Refuses an index entry claiming more bytes than any blob cairn writes
/// (a record plus its seal), so a damaged or forged index cannot make a
/// reader allocate gigabytes.
///
/// # Errors
/// [`Error::Corrupt`] naming the index entry.
pub(crate) fn check_claim(id: &BlobId, pack: &PackId, loc: &Location) -> Result<()> {
    let limit = crate::format::codec::MAX_RECORD + crate::format::crypto::SEAL_OVERHEAD + 1024;
    if loc.length as usize > limit || loc.raw_length as usize > crate::format::codec::MAX_RECORD {
        return Err(Error::corrupt(
            format!("index entry of blob {id} in pack {pack}"),
            format!("claims {} bytes, more than any blob", loc.length),
        ));
    }
    Ok(())
}

impl Repository {
    /// Reads a pack's header from its tail.
    ///
    /// # Errors
    /// Backend errors, or [`Error::Corrupt`] for a truncated pack or a
    /// damaged header.
    pub fn read_pack_header(&self, id: &PackId, size: u64) -> Result<Vec<PackEntry>> {
        let name = id.to_hex();
        let what = || format!("pack {name}");
        if size < TRAILER_LEN {
            return Err(Error::corrupt(what(), format!("truncated to {size} bytes")));
        }
        let trailer =
            self.backend
                .read_range(FileKind::Pack, &name, size - TRAILER_LEN, TRAILER_LEN)?;
        let header_len = pack::parse_trailer(&trailer, size)
            .map_err(|e| Error::corrupt(what(), e.to_string()))?;
        let header_at = size - TRAILER_LEN - u64::from(header_len);
        let sealed =
            self.backend
                .read_range(FileKind::Pack, &name, header_at, u64::from(header_len))?;
        let plain = self
            .crypto
            .open(Domain::PackHeader, &sealed)
            .map_err(|e| Error::corrupt(what(), format!("header: {e}")))?;
        Ok(pack::decode_header(&plain, header_at)
            .map_err(|e| Error::corrupt(what(), e.to_string()))?
            .entries)
    }

    /// Opens a sealed blob and checks it against its id.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the blob and pack when any check fails.
    pub fn open_blob(
        &self,
        id: &BlobId,
        pack: &PackId,
        compression: Compression,
        raw_length: u32,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        let what = || format!("blob {id} in pack {pack}");
        let payload = self
            .crypto
            .open(Domain::Blob, sealed)
            .map_err(|e| Error::corrupt(what(), e.to_string()))?;
        let plain = match compression {
            Compression::None => payload,
            Compression::Zstd => crate::format::compress::decompress(&payload, raw_length as usize)
                .map_err(|e| Error::corrupt(what(), format!("zstd: {e}")))?,
        };
        if plain.len() != raw_length as usize {
            return Err(Error::corrupt(
                what(),
                format!("length {} instead of {raw_length}", plain.len()),
            ));
        }
        if self.crypto.blob_id(&plain) != *id {
            return Err(Error::corrupt(what(), "content does not match its id"));
        }
        Ok(plain)
    }

    /// Reads a blob, checking it against its id.
    ///
    /// # Errors
    /// [`Error::BlobNotIndexed`], backend errors, or [`Error::Corrupt`].
    pub fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        let (pack, loc) = self.locate(id)?;
        check_claim(id, &pack, &loc)?;
        // Trees are read again by every backup, ls and restore: from a
        // remote repository their packs come whole into the cache. A copy
        // that fails the checks is dropped and the blob read afresh.
        if loc.kind == BlobKind::Tree
            && let Some(cache) = &self.cache
        {
            let name = pack.to_hex();
            // Twice at most: a damaged copy is replaced by a fresh download.
            for _ in 0..2 {
                let Ok(sealed) =
                    cache.read_pack_range(&name, u64::from(loc.offset), u64::from(loc.length))
                else {
                    break;
                };
                match self.open_blob(id, &pack, loc.compression, loc.raw_length, &sealed) {
                    Ok(plain) => return Ok(plain),
                    Err(_) => cache.forget_pack(&name),
                }
            }
        }
        let sealed = self.backend.read_range(
            FileKind::Pack,
            &pack.to_hex(),
            u64::from(loc.offset),
            u64::from(loc.length),
        )?;
        self.open_blob(id, &pack, loc.compression, loc.raw_length, &sealed)
    }

    /// Reads and decodes a tree blob.
    ///
    /// # Errors
    /// As [`Repository::read_blob`], or [`Error::Corrupt`] for a malformed tree.
    pub fn read_tree(&self, id: &BlobId) -> Result<Tree> {
        let bytes = self.read_blob(id)?;
        Tree::decode(&bytes).map_err(|e| Error::corrupt(format!("tree {id}"), e.to_string()))
    }
}
