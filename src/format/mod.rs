//! The on-disk formats: pure encoders and decoders, and the cryptography
//! that seals them.
//!
//! Everything here turns bytes into records and records into bytes and
//! does no I/O: ids and their keyed hashes, the record codec, compression,
//! sealing, key files, the repository config, the chunker, pack headers,
//! index files (and the merged in-memory index built from them), trees,
//! snapshots and WAL segments. `store-format.md` documents each byte.
//!
//! May use: the crate's [`Error`](crate::error::Error) only. Because nothing here
//! touches a disk, every decoder can be fuzzed and property-tested alone
//! (`fuzz/`, `tests/integration/roundtrip.rs`).

pub mod chunker;
pub mod codec;
pub mod compress;
pub mod config;
pub mod crypto;
pub mod index;
pub mod keyfile;
pub mod pack;
pub mod segment;
pub mod snapshot;
pub mod tree;
