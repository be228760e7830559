//! API tokens: random bearer secrets with a role, of which only a hash is
//! stored.
//!
//! A token is `cairn_` followed by 64 hex digits (32 random bytes). Being
//! that long and random, a plain BLAKE3 hash of it cannot be reversed or
//! guessed, so no slow password hash is needed; the secret is printed once
//! by `cairn token add` and never written anywhere by cairn. Lookups
//! compare the hash of the presented token with every stored hash in
//! constant time, so timing says nothing about how close a guess was.
//!
//! The tokens file is JSON (`{"tokens": [{"name", "role", "hash",
//! "created"}]}`), written atomically (temporary file, fsync, rename) with
//! mode 0600 in a directory created 0700.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};

/// The prefix of every token, so that a leaked one is recognisable.
pub const TOKEN_PREFIX: &str = "cairn_";

/// What a token may do. Each role may do everything the roles before it
/// may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Lists and reads: snapshots, files, stats, status, the audit log,
    /// metrics, the status page.
    Reader,
    /// Also creates snapshots and runs verify.
    Operator,
    /// Also restores and deletes snapshots.
    Admin,
}

impl Role {
    /// The role's name as written in the tokens file and on the command line.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Reader => "reader",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "reader" => Ok(Self::Reader),
            "operator" => Ok(Self::Operator),
            "admin" => Ok(Self::Admin),
            other => Err(Error::invalid(format!(
                "unknown role '{other}': give reader, operator or admin"
            ))),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One stored token: never the secret, only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenEntry {
    /// The name the audit log records (`token:NAME`).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// BLAKE3 of the token text, 64 hex digits.
    pub hash: String,
    /// When it was added (RFC 3339).
    pub created: String,
}

/// The contents of a tokens file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    /// The tokens, in the order they were added.
    pub tokens: Vec<TokenEntry>,
}

/// The stored form of a token's text.
#[must_use]
pub fn hash_token(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Tokens {
    /// Reads a tokens file; a file that does not exist holds no tokens.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file when it cannot be read,
    /// [`Error::Invalid`] naming it when it is not a tokens file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(Error::io("cannot read the tokens file", path, e)),
        };
        serde_json::from_str(&text).map_err(|e| {
            Error::invalid(format!(
                "{} is not a cairn tokens file ({e}): fix it or move it away and add the tokens again",
                path.display()
            ))
        })
    }

    /// Writes the file atomically: a temporary file in the same directory,
    /// fsynced, renamed over the old one, and the directory fsynced, so a
    /// crash leaves the old or the new file, never a mix. The file is 0600
    /// and a directory cairn creates is 0700: the hashes are not secrets,
    /// but the list of names and roles is nobody else's business.
    ///
    /// # Errors
    /// [`Error::TargetWrite`] naming the file or directory.
    pub fn save(&self, path: &Path) -> Result<()> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::target_write(dir, e))?;
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::internal(format!("cannot encode the tokens: {e}")))?;
        let mut tmp =
            tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::target_write(dir, e))?;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::target_write(tmp.path(), e))?;
        tmp.write_all(text.as_bytes())
            .and_then(|()| tmp.write_all(b"\n"))
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| Error::target_write(path, e))?;
        tmp.persist(path)
            .map_err(|e| Error::target_write(path, e.error))?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::target_write(dir, e))?;
        Ok(())
    }

    /// Adds a token named `name` with `role` and returns its secret text,
    /// which is not kept anywhere: show it to the user once.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a name that is empty, too long, has other
    /// characters than letters, digits, `-`, `_` and `.`, or is taken;
    /// [`Error::Internal`] when no random bytes are available.
    pub fn add(&mut self, name: &str, role: Role) -> Result<String> {
        if !valid_name(name) {
            return Err(Error::invalid(format!(
                "token name '{name}': use 1 to 64 letters, digits, '-', '_' or '.'"
            )));
        }
        if self.tokens.iter().any(|t| t.name == name) {
            return Err(Error::invalid(format!(
                "a token named '{name}' exists: remove it first with `cairn token remove {name}` or choose another name"
            )));
        }
        let mut raw = [0u8; 32];
        crate::format::crypto::random(&mut raw)?;
        let secret = format!("{TOKEN_PREFIX}{}", hex::encode(raw));
        self.tokens.push(TokenEntry {
            name: name.to_owned(),
            role,
            hash: hash_token(&secret),
            created: jiff::Timestamp::now().to_string(),
        });
        Ok(secret)
    }

    /// Removes the token named `name`.
    ///
    /// # Errors
    /// [`Error::NotFound`] when there is none.
    pub fn remove(&mut self, name: &str) -> Result<()> {
        let before = self.tokens.len();
        self.tokens.retain(|t| t.name != name);
        if self.tokens.len() == before {
            return Err(Error::NotFound(format!(
                "no token named '{name}': list them with `cairn token list`"
            )));
        }
        Ok(())
    }

    /// The entry whose hash is `hash`, comparing with every entry in
    /// constant time.
    #[must_use]
    pub fn by_hash(&self, hash: &str) -> Option<&TokenEntry> {
        let mut found = None;
        for t in &self.tokens {
            // No early exit: every entry is compared.
            if bool::from(t.hash.as_bytes().ct_eq(hash.as_bytes())) {
                found = Some(t);
            }
        }
        found
    }

    /// The entry of the token `presented`, if it is one of these.
    #[must_use]
    pub fn check(&self, presented: &str) -> Option<&TokenEntry> {
        self.by_hash(&hash_token(presented))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_check_remove_round_trip_through_the_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("sub/tokens.json");
        let mut t = Tokens::default();
        let secret = t.add("ci", Role::Operator).expect("add");
        assert!(secret.starts_with(TOKEN_PREFIX) && secret.len() == TOKEN_PREFIX.len() + 64);
        assert!(t.add("ci", Role::Reader).is_err(), "names are unique");
        assert!(t.add("bad name", Role::Reader).is_err());
        t.save(&path).expect("save");
        let text = fs::read_to_string(&path).expect("read");
        assert!(!text.contains(&secret), "the secret is never stored");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(path.parent().expect("dir"))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        let mut back = Tokens::load(&path).expect("load");
        assert_eq!(back.check(&secret).map(|e| e.role), Some(Role::Operator));
        assert!(back.check("cairn_0000").is_none());
        back.remove("ci").expect("remove");
        // A name that matches no token is a reference to nothing (404 on
        // the API, exit 1 on the command line), not invalid input.
        let gone = back.remove("ci").expect_err("removed already");
        assert_eq!(gone.kind(), crate::error::ErrorKind::NotFound, "{gone}");
        assert!(back.check(&secret).is_none());
    }

    #[test]
    fn roles_are_ordered_by_power() {
        assert!(Role::Reader < Role::Operator && Role::Operator < Role::Admin);
        assert_eq!("admin".parse::<Role>().expect("role"), Role::Admin);
        assert!("root".parse::<Role>().is_err());
    }
}
