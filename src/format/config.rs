//! The repository config: format version, repository id and the parameters
//! every client must share (chunker, compression, pack size).
//!
//! The config is stored in the clear so that a client can tell an unknown
//! format version before asking for a password, and is protected by a keyed
//! MAC so that nobody without the key can change the parameters unnoticed.
//!
//! ```text
//! "CAIRNCFG" (8) ‖ version u32 ‖ body_len u32 ‖ body ‖ mac (32)
//! ```

use serde::{Deserialize, Serialize};

use crate::format::chunker::ChunkerParams;
use crate::format::codec;

/// The repository format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Magic at the start of the config file.
pub const CONFIG_MAGIC: &[u8; 8] = b"CAIRNCFG";

/// Whether objects are encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encryption {
    /// Sealed with a MAC only (`--no-encryption`).
    None,
    /// XChaCha20-Poly1305.
    XChaCha20Poly1305,
}

/// The shared parameters of a repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Random id of this repository.
    pub repo_id: [u8; 32],
    /// Encryption mode.
    pub encryption: Encryption,
    /// Content-defined chunking parameters.
    pub chunker: ChunkerParams,
    /// zstd level for blobs (0 = store everything raw).
    pub compression_level: i32,
    /// Packs are closed once they reach this many bytes.
    pub pack_target_size: u32,
}

impl Config {
    /// Checks every parameter against the ranges this format allows; both
    /// `init` and the decoder use it, so no client writes a config that it
    /// or another client would refuse to open.
    ///
    /// # Errors
    /// A message naming the parameter out of range.
    pub fn validate(&self) -> Result<(), String> {
        self.chunker.validate()?;
        if !(0..=22).contains(&self.compression_level) {
            return Err(format!(
                "compression level {} is outside zstd's 0..=22",
                self.compression_level
            ));
        }
        if !(1 << 20..=1 << 30).contains(&self.pack_target_size) {
            return Err(format!(
                "pack target size {} is outside 1 MiB..=1 GiB",
                self.pack_target_size
            ));
        }
        Ok(())
    }
}

/// A config as read from disk, before its MAC is checked.
#[derive(Debug, Clone)]
pub struct RawConfig {
    /// The decoded parameters.
    pub config: Config,
    /// The bytes the MAC covers (magic through body).
    pub signed: Vec<u8>,
    /// The stored MAC.
    pub mac: [u8; 32],
}

/// Why a config could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not a cairn config at all.
    #[error("not a cairn config file (bad magic)")]
    BadMagic,
    /// A version this build does not know.
    #[error("unsupported format version {0}")]
    Version(u32),
    /// Damaged.
    #[error("malformed config: {0}")]
    Malformed(String),
}

/// Encodes the config; `mac` computes the keyed MAC over the signed part.
#[must_use]
pub fn encode(config: &Config, mac: impl Fn(&[u8]) -> [u8; 32]) -> Vec<u8> {
    let body = codec::encode(config);
    let mut out = Vec::with_capacity(16 + body.len() + 32);
    out.extend_from_slice(CONFIG_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&body);
    let tag = mac(&out);
    out.extend_from_slice(&tag);
    out
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

/// Reads the config's version without decoding the rest.
///
/// # Errors
/// `ConfigError::BadMagic` for a file that is not a cairn config.
pub fn peek_version(bytes: &[u8]) -> Result<u32, ConfigError> {
    if bytes.get(..8) != Some(CONFIG_MAGIC.as_slice()) {
        return Err(ConfigError::BadMagic);
    }
    u32_at(bytes, 8).ok_or_else(|| ConfigError::Malformed("truncated header".into()))
}

/// Decodes a config file (the MAC is checked later, once a key is open).
///
/// # Errors
/// `ConfigError` for bad magic, an unknown version or malformed bytes.
pub fn decode(bytes: &[u8]) -> Result<RawConfig, ConfigError> {
    let version = peek_version(bytes)?;
    if version != FORMAT_VERSION {
        return Err(ConfigError::Version(version));
    }
    let body_len = u32_at(bytes, 12)
        .ok_or_else(|| ConfigError::Malformed("truncated header".into()))?
        as usize;
    let body_end = 16usize
        .checked_add(body_len)
        .ok_or_else(|| ConfigError::Malformed("body length overflows".into()))?;
    let body = bytes
        .get(16..body_end)
        .ok_or_else(|| ConfigError::Malformed("truncated body".into()))?;
    let mac: [u8; 32] = bytes
        .get(body_end..)
        .and_then(|m| m.try_into().ok())
        .ok_or_else(|| ConfigError::Malformed("MAC missing or wrong length".into()))?;
    let config: Config = codec::decode(body).map_err(|e| ConfigError::Malformed(e.to_string()))?;
    config.validate().map_err(ConfigError::Malformed)?;
    Ok(RawConfig {
        config,
        signed: bytes.get(..body_end).unwrap_or_default().to_vec(),
        mac,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Config {
        Config {
            repo_id: [7; 32],
            encryption: Encryption::XChaCha20Poly1305,
            chunker: ChunkerParams::default(),
            compression_level: 3,
            pack_target_size: 16 << 20,
        }
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&sample(), |_| [1; 32]);
        let raw = decode(&bytes).expect("decode");
        assert_eq!(raw.config, sample());
        assert_eq!(raw.mac, [1; 32]);
        assert_eq!(peek_version(&bytes).expect("version"), FORMAT_VERSION);
    }

    #[test]
    fn future_version_is_named() {
        let mut bytes = encode(&sample(), |_| [1; 32]);
        if let Some(v) = bytes.get_mut(8) {
            *v = 9;
        }
        assert!(matches!(decode(&bytes), Err(ConfigError::Version(9))));
    }
}
