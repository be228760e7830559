//! Keys, sealing of stored objects, and password-based key wrapping.
//!
//! Every object cairn stores is *sealed*: `nonce (24) ‖ body ‖ tag (16)`.
//! With encryption (the default) the body is XChaCha20-Poly1305 ciphertext and
//! the tag its Poly1305 tag. With `--no-encryption` the same layout is kept:
//! the nonce is 24 zero bytes, the body is the plaintext and the tag is the
//! first 16 bytes of a keyed BLAKE3 MAC, so accidental damage is still caught.
//! A one-byte *domain* is authenticated with every object, so a pack header
//! cannot be passed off as an index or a snapshot.
//!
//! The master key never touches disk in the clear (except in unencrypted
//! repositories): key files hold it wrapped under a key derived from a
//! password with argon2id.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use crate::id::BlobId;

/// Bytes added to every sealed object: nonce plus tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// What a sealed object is; authenticated with it (see `store-format.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Domain {
    /// A blob inside a pack.
    Blob = 1,
    /// The header at the end of a pack.
    PackHeader = 2,
    /// An index file.
    Index = 3,
    /// A snapshot file.
    Snapshot = 4,
    /// The master key inside a key file.
    MasterKey = 5,
    /// The local files cache (not in the repository).
    FilesCache = 6,
    /// A lock file.
    Lock = 7,
    /// An audit event file.
    Audit = 8,
    /// A WAL segment file.
    Wal = 9,
}

/// The secret material of a repository, identical for every key file.
#[derive(Clone, Serialize, Deserialize)]
pub struct MasterKey {
    /// XChaCha20-Poly1305 key for all objects.
    pub encryption: [u8; 32],
    /// BLAKE3 key for blob ids and, in unencrypted repositories, object MACs.
    pub id: [u8; 32],
    /// Seed mixed into the chunker's gear table so that chunk boundaries do
    /// not reveal content to someone without the key.
    pub chunker_seed: u64,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A fresh random master key.
    ///
    /// # Errors
    /// Fails when the operating system has no randomness to give.
    pub fn generate() -> crate::error::Result<Self> {
        let mut encryption = [0u8; 32];
        let mut id = [0u8; 32];
        let mut seed = [0u8; 8];
        random(&mut encryption)?;
        random(&mut id)?;
        random(&mut seed)?;
        Ok(Self {
            encryption,
            id,
            chunker_seed: u64::from_le_bytes(seed),
        })
    }
}

/// Fills `buf` from the operating system's random source.
///
/// # Errors
/// Fails when the operating system has no randomness to give.
pub fn random(buf: &mut [u8]) -> crate::error::Result<()> {
    getrandom::fill(buf)
        .map_err(|e| crate::error::Error::internal(format!("the system random source failed: {e}")))
}

/// Seals and opens objects with one repository's master key.
#[derive(Clone)]
pub struct Crypto {
    cipher: Option<XChaCha20Poly1305>,
    id_key: [u8; 32],
    mac_key: [u8; 32],
}

/// Why an object could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Shorter than nonce plus tag.
    #[error("{0} bytes is too short to be a sealed object")]
    TooShort(usize),
    /// The tag did not verify: wrong key, wrong domain or damaged bytes.
    #[error("authentication failed (damaged, or not the object it claims to be)")]
    Auth,
}

impl Crypto {
    /// A sealer with a fixed, public key: for fuzzing decoders behind
    /// encryption and for tests, never for a repository.
    #[must_use]
    pub fn with_fixed_key(encrypted: bool) -> Self {
        Self::new(
            &MasterKey {
                encryption: [7; 32],
                id: [9; 32],
                chunker_seed: 0,
            },
            encrypted,
        )
    }

    /// Builds the sealer for `key`; `encrypted` selects the mode.
    #[must_use]
    pub fn new(key: &MasterKey, encrypted: bool) -> Self {
        Self {
            cipher: encrypted.then(|| XChaCha20Poly1305::new(&key.encryption.into())),
            id_key: key.id,
            mac_key: blake3::derive_key("cairn v1 object mac", &key.id),
        }
    }

    /// Whether objects are encrypted (random nonces: sealing the same
    /// bytes twice never gives the same object).
    #[must_use]
    pub fn is_encrypted(&self) -> bool {
        self.cipher.is_some()
    }

    /// The id of a blob with this plaintext.
    #[must_use]
    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        BlobId(*blake3::keyed_hash(&self.id_key, plaintext).as_bytes())
    }

    /// The key of blob ids, for creating a repository that shares it
    /// (`init --from-repo`, see `copy.rs`); nothing else may read it.
    pub(crate) fn id_key(&self) -> [u8; 32] {
        self.id_key
    }

    /// A keyed MAC over `bytes`, used to protect the config.
    #[must_use]
    pub fn mac(&self, bytes: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.mac_key, bytes).as_bytes()
    }

    /// Checks a MAC made by [`Crypto::mac`] in constant time.
    #[must_use]
    pub fn mac_matches(&self, bytes: &[u8], mac: &[u8; 32]) -> bool {
        blake3::keyed_hash(&self.mac_key, bytes) == blake3::Hash::from_bytes(*mac)
    }

    fn plain_tag(&self, domain: Domain, body: &[u8]) -> [u8; TAG_LEN] {
        let mut h = blake3::Hasher::new_keyed(&self.mac_key);
        h.update(&[domain as u8]);
        h.update(body);
        let full = h.finalize();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(full.as_bytes().get(..TAG_LEN).unwrap_or(&[0; TAG_LEN]));
        tag
    }

    /// Seals `plaintext` for storage.
    ///
    /// # Errors
    /// Fails only when no random nonce can be had.
    pub fn seal(&self, domain: Domain, plaintext: &[u8]) -> crate::error::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        self.seal_into(domain, plaintext, &mut out)?;
        Ok(out)
    }

    /// Seals `plaintext` into `out`, replacing its contents; `out` is meant
    /// to be reused so that sealing allocates nothing.
    ///
    /// # Errors
    /// Fails only when no random nonce can be had.
    pub fn seal_into(
        &self,
        domain: Domain,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> crate::error::Result<()> {
        out.clear();
        let mut nonce = [0u8; NONCE_LEN];
        if self.cipher.is_some() {
            random(&mut nonce)?;
        }
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag: [u8; TAG_LEN] = match &self.cipher {
            Some(cipher) => {
                let body = out.get_mut(NONCE_LEN..).unwrap_or_default();
                let tag = cipher
                    .encrypt_in_place_detached(XNonce::from_slice(&nonce), &[domain as u8], body)
                    .map_err(|_| crate::error::Error::internal("message too long to encrypt"))?;
                tag.into()
            }
            None => self.plain_tag(domain, plaintext),
        };
        out.extend_from_slice(&tag);
        Ok(())
    }

    /// Opens a sealed object, checking its tag.
    ///
    /// # Errors
    /// `OpenError` when the object is too short or fails authentication.
    pub fn open(&self, domain: Domain, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        self.open_owned(domain, sealed.to_vec(), 0)
    }

    /// Opens the sealed object that starts at `start` in `buf`, in place:
    /// the plaintext is returned in the same allocation, so opening a large
    /// object (an index file) does not need a second copy of it.
    ///
    /// # Errors
    /// `OpenError` when the object is too short or fails authentication.
    pub fn open_owned(
        &self,
        domain: Domain,
        mut buf: Vec<u8>,
        start: usize,
    ) -> Result<Vec<u8>, OpenError> {
        let len = buf.len().saturating_sub(start);
        if len < SEAL_OVERHEAD {
            return Err(OpenError::TooShort(len));
        }
        let body_start = start + NONCE_LEN;
        let body_end = buf.len() - TAG_LEN;
        let mut nonce = [0u8; NONCE_LEN];
        let mut tag = [0u8; TAG_LEN];
        nonce.copy_from_slice(buf.get(start..body_start).unwrap_or_default());
        tag.copy_from_slice(buf.get(body_end..).unwrap_or_default());
        let body = buf.get_mut(body_start..body_end).unwrap_or_default();
        let ok = match &self.cipher {
            Some(cipher) => cipher
                .decrypt_in_place_detached(
                    XNonce::from_slice(&nonce),
                    &[domain as u8],
                    body,
                    Tag::from_slice(&tag),
                )
                .is_ok(),
            None => {
                use subtle::ConstantTimeEq;
                let want = self.plain_tag(domain, body);
                want.ct_eq(&tag).unwrap_u8() == 1 && nonce.iter().all(|&b| b == 0)
            }
        };
        if !ok {
            return Err(OpenError::Auth);
        }
        buf.truncate(body_end);
        buf.drain(..body_start);
        Ok(buf)
    }
}

/// Parameters of the argon2id key derivation, stored in each key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Iterations.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
    /// Random salt.
    pub salt: [u8; 16],
}

/// Argon2id memory for new keys unless the user chooses: 64 MiB.
pub const DEFAULT_KDF_MEMORY_MIB: u32 = 64;
/// The least argon2id memory a new key may use: OWASP's argon2id floor
/// (19 MiB); cairn keeps 3 passes, above OWASP's 2 for that memory.
pub const MIN_KDF_MEMORY_MIB: u32 = 19;
/// The most: what readers accept (1 GiB).
pub const MAX_KDF_MEMORY_MIB: u32 = 1024;

impl KdfParams {
    /// New parameters with `memory_mib` MiB (clamped to
    /// [`MIN_KDF_MEMORY_MIB`]..=[`MAX_KDF_MEMORY_MIB`]), 3 passes, 1 lane and
    /// a random salt. At the default 64 MiB this costs about 0.2 s on a
    /// laptop core; the memory is held only while the key is derived, but
    /// it sets the peak memory of every command that opens a repository.
    ///
    /// # Errors
    /// Fails when no random salt can be had.
    pub fn generate(memory_mib: u32) -> crate::error::Result<Self> {
        let mut salt = [0u8; 16];
        random(&mut salt)?;
        Ok(Self {
            memory_kib: memory_mib.clamp(MIN_KDF_MEMORY_MIB, MAX_KDF_MEMORY_MIB) * 1024,
            iterations: 3,
            parallelism: 1,
            salt,
        })
    }

    /// Derives the 32-byte key-encryption key from `password`.
    ///
    /// # Errors
    /// Fails when the stored parameters are out of argon2's range.
    pub fn derive(&self, password: &[u8]) -> crate::error::Result<[u8; 32]> {
        // Refuse absurd parameters from a damaged or hostile key file before
        // argon2 tries to allocate them: key files are read before anything is
        // authenticated (1 GiB and 10 passes are far above what cairn writes).
        if self.memory_kib > 1024 * 1024 || self.iterations > 10 || self.parallelism > 16 {
            return Err(crate::error::Error::corrupt(
                "key file",
                "argon2 parameters out of range",
            ));
        }
        let params =
            argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
                .map_err(|e| {
                    crate::error::Error::corrupt("key file", format!("argon2 parameters: {e}"))
                })?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = [0u8; 32];
        argon
            .hash_password_into(password, &self.salt, &mut out)
            .map_err(|e| crate::error::Error::corrupt("key file", format!("argon2: {e}")))?;
        Ok(out)
    }
}

/// Seals the master key under a key-encryption key.
///
/// # Errors
/// Fails only when no random nonce can be had.
pub fn wrap_master(kek: &[u8; 32], master: &MasterKey) -> crate::error::Result<Vec<u8>> {
    let sealer = Crypto {
        cipher: Some(XChaCha20Poly1305::new(kek.into())),
        id_key: [0; 32],
        mac_key: [0; 32],
    };
    sealer.seal(Domain::MasterKey, &crate::format::codec::encode(master))
}

/// Opens a wrapped master key; `None` when the key-encryption key is wrong.
#[must_use]
pub fn unwrap_master(kek: &[u8; 32], wrapped: &[u8]) -> Option<MasterKey> {
    let sealer = Crypto {
        cipher: Some(XChaCha20Poly1305::new(kek.into())),
        id_key: [0; 32],
        mac_key: [0; 32],
    };
    let plain = sealer.open(Domain::MasterKey, wrapped).ok()?;
    crate::format::codec::decode(&plain).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey {
            encryption: [1; 32],
            id: [2; 32],
            chunker_seed: 3,
        }
    }

    #[test]
    fn seal_open_both_modes() {
        for encrypted in [true, false] {
            let c = Crypto::new(&key(), encrypted);
            let sealed = c.seal(Domain::Blob, b"hello").expect("seal");
            assert_eq!(sealed.len(), 5 + SEAL_OVERHEAD);
            assert_eq!(c.open(Domain::Blob, &sealed).expect("open"), b"hello");
            assert!(c.open(Domain::Index, &sealed).is_err(), "domain is bound");
            let mut bad = sealed.clone();
            if let Some(b) = bad.get_mut(26) {
                *b ^= 1;
            }
            assert!(c.open(Domain::Blob, &bad).is_err(), "damage is caught");
        }
    }

    #[test]
    fn encrypted_hides_plaintext() {
        let c = Crypto::new(&key(), true);
        let sealed = c.seal(Domain::Blob, b"secret-secret-secret").expect("seal");
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
    }

    #[test]
    fn wrap_unwrap() {
        let kek = [9u8; 32];
        let w = wrap_master(&kek, &key()).expect("wrap");
        assert!(unwrap_master(&kek, &w).is_some());
        assert!(unwrap_master(&[8u8; 32], &w).is_none());
    }
}
