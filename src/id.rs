//! Identifiers: 32-byte BLAKE3 hashes, one newtype per kind of object.
//!
//! Blob ids are *keyed* BLAKE3 of the blob's plaintext (the key is part of the
//! master key, so ids reveal nothing about content to someone without it).
//! Pack, index, snapshot and key ids are plain BLAKE3 of the stored file's
//! bytes, so any file can be checked against its name without a key.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Text that is not the full hexadecimal form of an id.
///
/// The ids are the vocabulary every layer speaks, errors included, so this
/// module depends on nothing else of the crate; the crate's
/// [`Error`](crate::error::Error) converts from this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseIdError {
    /// The text given.
    pub text: String,
    /// The kind of id expected, for example `SnapshotId`.
    pub kind: &'static str,
}

impl fmt::Display for ParseIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "'{}' is not a {}: expected 64 hexadecimal characters",
            self.text, self.kind
        )
    }
}

impl std::error::Error for ParseIdError {}

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The full lowercase hexadecimal form (64 characters).
            #[must_use]
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first 8 hex characters, as shown in listings.
            #[must_use]
            pub fn short(&self) -> String {
                let mut s = self.to_hex();
                s.truncate(8);
                s
            }

            /// The plain BLAKE3 hash of `bytes`.
            #[must_use]
            pub fn hash_of(bytes: &[u8]) -> Self {
                Self(*blake3::hash(bytes).as_bytes())
            }
        }

        /// In the HTTP API's OpenAPI document: 64 lowercase hexadecimal
        /// characters, as every id is serialized in JSON.
        #[cfg(feature = "server")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern(Some("^[0-9a-f]{64}$"))
                    .description(Some(concat!("A ", stringify!($name), ": 64 hexadecimal characters.")))
                    .into()
            }
        }

        #[cfg(feature = "server")]
        impl utoipa::ToSchema for $name {}

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        // Binary encodings store the 32 raw bytes; human-readable ones
        // (JSON output) the hex form.
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&self.to_hex())
                } else {
                    self.0.serialize(s)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = String::deserialize(d)?;
                    s.parse().map_err(serde::de::Error::custom)
                } else {
                    <[u8; 32]>::deserialize(d).map(Self)
                }
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).map_err(|_| ParseIdError {
                    text: s.to_owned(),
                    kind: stringify!($name),
                })?;
                Ok(Self(out))
            }
        }
    };
}

define_id!(
    /// A blob (file chunk or tree): keyed BLAKE3 of its plaintext.
    BlobId
);
define_id!(
    /// A data pack: BLAKE3 of the pack file.
    PackId
);
define_id!(
    /// An index file: BLAKE3 of the file.
    IndexId
);
define_id!(
    /// A snapshot: BLAKE3 of the snapshot file.
    SnapshotId
);
define_id!(
    /// A lock file: BLAKE3 of the file.
    LockId
);

define_id!(
    /// A key file: BLAKE3 of the file.
    KeyId
);

define_id!(
    /// A WAL segment file: 16 hex digits of its end time, then 48 of the
    /// BLAKE3 of the file (see `segment`).
    SegmentId
);

define_id!(
    /// An audit event: BLAKE3 of the event file.
    AuditId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = BlobId::hash_of(b"x");
        let back: BlobId = id.to_hex().parse().expect("parse");
        assert_eq!(id, back);
        assert!("zz".parse::<BlobId>().is_err());
    }
}
