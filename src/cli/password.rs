//! Finding the repository and its password, as restic users expect:
//! `--repo`/`CAIRN_REPO`, then `--password-file`, `--password-command`,
//! `CAIRN_PASSWORD`, and a prompt on a terminal. Without a repository
//! option, a default local repository lives in the user's data directory
//! and its generated key in the user's config directory (0600). Also the
//! backend of a location (rate limits, request counts) and the key
//! derivation options of a new password (`--kdf-memory`, for `init` and
//! `key add`/`passwd`). Opening the repository with all this is
//! `repo_open`'s.

use std::fs;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;

use cairn::{Backend, Throttled};

use super::global::Global;

/// A resolved repository location.
pub struct Location {
    pub path: PathBuf,
    /// For the default repository: the file holding its generated key.
    pub default_key: Option<PathBuf>,
}

fn dirs() -> Result<directories::ProjectDirs> {
    directories::ProjectDirs::from("", "", "cairn").ok_or_else(|| {
        anyhow!("cannot find your home directory for the default repository: pass --repo or set CAIRN_REPO")
    })
}

/// Where local caches go: `--cache-dir`, else the user's cache directory;
/// `None` with `--no-cache` or when there is no home directory.
pub fn cache_dir(g: &Global) -> Option<PathBuf> {
    if g.no_cache {
        return None;
    }
    g.cache_dir
        .clone()
        .or_else(|| dirs().ok().map(|d| d.cache_dir().to_path_buf()))
}

pub fn location(g: &Global) -> Result<Location> {
    if let Some(p) = &g.repo {
        return Ok(Location {
            path: p.clone(),
            default_key: None,
        });
    }
    let d = dirs()?;
    Ok(Location {
        path: d.data_dir().join("repository"),
        default_key: Some(d.config_dir().join("repository.key")),
    })
}

/// The first line of a password file, without its line ending.
pub fn first_line(bytes: &[u8]) -> Vec<u8> {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    line.strip_suffix(b"\r").unwrap_or(line).to_vec()
}

/// The password from options or environment, without prompting.
/// The first line of a password file; `what` names it in the error.
pub fn from_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    let bytes = fs::read(path)
        .map_err(|e| PasswordUnavailable(format!("cannot read {what} {}: {e}", path.display())))?;
    Ok(first_line(&bytes))
}

/// The password source the user named cannot give a password (a missing
/// file, a failing command): exit code 12, as for a wrong password.
#[derive(Debug)]
pub struct PasswordUnavailable(pub String);

impl std::fmt::Display for PasswordUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PasswordUnavailable {}

/// The first line a password command prints (run by `sh -c`, its stderr
/// shown); `option` names it in the error.
pub fn from_command(cmd: &str, option: &str) -> Result<Vec<u8>> {
    let out = cairn::child_command("sh")
        .arg("-c")
        .arg(cmd)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| PasswordUnavailable(format!("cannot run the {option}: {e}")))?;
    if !out.status.success() {
        return Err(PasswordUnavailable(format!("the {option} failed ({})", out.status)).into());
    }
    Ok(first_line(&out.stdout))
}

fn given(g: &Global, loc: &Location) -> Result<Option<Vec<u8>>> {
    if let Some(f) = &g.password_file {
        return from_file(f, "the password file").map(Some);
    }
    if let Some(cmd) = &g.password_command {
        return from_command(cmd, "--password-command").map(Some);
    }
    if let Some(pw) = std::env::var_os("CAIRN_PASSWORD") {
        return Ok(Some(
            std::os::unix::ffi::OsStrExt::as_bytes(pw.as_os_str()).to_vec(),
        ));
    }
    if let Some(key) = &loc.default_key
        && key.exists()
    {
        return read_key_file(key).map(Some);
    }
    Ok(None)
}

/// The password in the default repository's key file.
pub fn read_key_file(key: &Path) -> Result<Vec<u8>> {
    let bytes = fs::read(key)
        .with_context(|| format!("cannot read the default repository's key {}", key.display()))?;
    Ok(first_line(&bytes))
}

/// True when the user supplied a password explicitly (option or
/// environment), which then takes precedence over the default key file.
pub fn password_given(g: &Global) -> bool {
    g.password_file.is_some()
        || g.password_command.is_some()
        || std::env::var_os("CAIRN_PASSWORD").is_some()
}

fn prompt(label: &str) -> Result<Vec<u8>> {
    let pw =
        rpassword::prompt_password(label).context("cannot read the password from the terminal")?;
    Ok(pw.into_bytes())
}

/// The password for an existing repository.
pub fn password(g: &Global, loc: &Location) -> cairn::Result<Vec<u8>> {
    match given(g, loc) {
        Ok(Some(pw)) => return Ok(pw),
        Ok(None) => {}
        Err(e) if e.downcast_ref::<PasswordUnavailable>().is_some() => {
            return Err(cairn::Error::PasswordSource(format!("{e:#}")));
        }
        Err(e) => return Err(cairn::Error::invalid(format!("{e:#}"))),
    }
    if std::io::stdin().is_terminal() {
        return prompt(&format!("password for {}: ", loc.path.display()))
            .map_err(|e| cairn::Error::invalid(format!("{e:#}")));
    }
    Err(cairn::Error::NoPassword {
        location: loc.path.display().to_string(),
    })
}

/// A new password: from options, or asked twice on a terminal.
pub fn new_password(g: &Global, loc: &Location, what: &str) -> Result<Vec<u8>> {
    if let Some(pw) = given(g, loc)? {
        if pw.is_empty() {
            bail!("the password is empty: choose a non-empty one");
        }
        return Ok(pw);
    }
    new_password_prompt(what)
}

/// Asks twice for a new password on the terminal.
pub fn new_password_prompt(what: &str) -> Result<Vec<u8>> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "{what} needs a new password: set CAIRN_PASSWORD or pass --password-file (or run on a terminal)"
        );
    }
    let a = prompt(&format!("{what}: enter new password: "))?;
    let b = prompt(&format!("{what}: enter it again: "))?;
    if a != b {
        bail!("the passwords do not match");
    }
    if a.is_empty() {
        bail!("the password is empty: choose a non-empty one");
    }
    Ok(a)
}

/// Every backend this process opened, so that the requests they made can be
/// reported when the command ends.
static OPENED: Mutex<Vec<Arc<dyn Backend>>> = Mutex::new(Vec::new());

/// The backend of `loc` (local directory or object storage), held to
/// `--limit-upload` / `--limit-download`.
pub fn backend(g: &Global, loc: &Location) -> Result<Arc<dyn Backend>> {
    let inner = cairn::open_location(&loc.path)?;
    let b = Throttled::wrap(inner, g.limit_upload, g.limit_download);
    OPENED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Arc::clone(&b));
    Ok(b)
}

/// The requests made so far by every remote backend opened; `None` when
/// none was remote.
pub fn requests_made() -> Option<u64> {
    OPENED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter_map(|b| b.requests())
        .reduce(|a, b| a.saturating_add(b))
}

/// The default repository's key file, when it is what opened the repository
/// (no password option or variable overrides it).
pub fn default_key_in_use(g: &Global, loc: &Location) -> Option<PathBuf> {
    loc.default_key
        .clone()
        .filter(|k| !password_given(g) && k.exists())
}

/// Replaces the default key file's password atomically: a temporary file
/// (0600) in the same directory, fsynced, renamed over it, directory fsynced.
pub fn replace_default_key(path: &Path, password: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", path.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".repository.key-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    tmp.write_all(password)
        .and_then(|()| tmp.write_all(b"\n"))
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", tmp.path().display()))?;
    tmp.persist(path)
        .map_err(|e| anyhow!("cannot replace {}: {}", path.display(), e.error))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}

/// How hard a new key is to guess.
#[derive(Debug, Args)]
pub struct KdfArgs {
    /// Memory, in MiB, argon2id uses to derive the key from the password
    /// (19 to 1024). More is harder to brute-force; it is also the peak
    /// memory of every command that opens the repository with this key.
    #[arg(long, value_name = "MIB", default_value_t = cairn::DEFAULT_KDF_MEMORY_MIB,
          value_parser = clap::value_parser!(u32).range(i64::from(cairn::MIN_KDF_MEMORY_MIB)..=i64::from(cairn::MAX_KDF_MEMORY_MIB)))]
    pub kdf_memory: u32,
}
