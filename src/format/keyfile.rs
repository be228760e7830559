//! Key files: the master key wrapped under a password.
//!
//! Each file under `keys/` holds the same master key, wrapped under a key
//! derived from its own password with argon2id, so several passwords open one
//! repository and a password changes without rewriting any data. In an
//! unencrypted repository the single key file holds the master key in the
//! clear (it still provides the MAC and id keys).
//!
//! ```text
//! "CAIRNKEY" ‖ KeyFile
//! ```

use serde::{Deserialize, Serialize};

use crate::format::codec;
use crate::format::crypto::{KdfParams, MasterKey, unwrap_master, wrap_master};
use crate::id::KeyId;

/// Magic at the start of every key file.
pub const KEY_MAGIC: &[u8; 8] = b"CAIRNKEY";

/// One key file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFile {
    /// Creation time, seconds since the epoch.
    pub created: i64,
    /// Host that created it.
    pub hostname: String,
    /// User that created it.
    pub username: String,
    /// argon2id parameters; `None` in an unencrypted repository.
    pub kdf: Option<KdfParams>,
    /// The wrapped master key (or, without a KDF, its plain encoding).
    pub master: Vec<u8>,
}

impl KeyFile {
    /// Wraps `master` under `password` (or stores it plain when `None`),
    /// deriving the wrapping key with `kdf_memory_mib` MiB of argon2id.
    ///
    /// # Errors
    /// Fails when no randomness can be had.
    pub fn create(
        master: &MasterKey,
        password: Option<&[u8]>,
        kdf_memory_mib: u32,
        hostname: String,
        username: String,
    ) -> crate::error::Result<Self> {
        let (kdf, wrapped) = match password {
            Some(pw) => {
                let kdf = KdfParams::generate(kdf_memory_mib)?;
                let kek = kdf.derive(pw)?;
                (Some(kdf), wrap_master(&kek, master)?)
            }
            None => (None, codec::encode(master)),
        };
        Ok(Self {
            created: jiff::Timestamp::now().as_second(),
            hostname,
            username,
            kdf,
            master: wrapped,
        })
    }

    /// Opens the master key: `Ok(None)` for a wrong password.
    ///
    /// # Errors
    /// Fails when the KDF parameters are damaged.
    pub fn open(&self, password: &[u8]) -> crate::error::Result<Option<MasterKey>> {
        match &self.kdf {
            Some(kdf) => {
                let kek = kdf.derive(password)?;
                Ok(unwrap_master(&kek, &self.master))
            }
            None => Ok(codec::decode(&self.master).ok()),
        }
    }

    /// The file's bytes and id.
    #[must_use]
    pub fn encode(&self) -> (KeyId, Vec<u8>) {
        let mut out = KEY_MAGIC.to_vec();
        out.extend_from_slice(&codec::encode(self));
        (KeyId::hash_of(&out), out)
    }

    /// Decodes a key file.
    ///
    /// # Errors
    /// A reason string for bad magic or encoding.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let body = bytes
            .strip_prefix(KEY_MAGIC.as_slice())
            .ok_or("not a cairn key file (bad magic)")?;
        codec::decode(body).map_err(|e| e.to_string())
    }
}
