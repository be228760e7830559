//! The other repository of `cairn copy --from` and `cairn init
//! --from-repo`: where it is and how its password is found
//! (`--from-password-file`, `--from-password-command`,
//! `CAIRN_FROM_PASSWORD`, a prompt on a terminal, in that order, as for the
//! main repository). The source is opened through the same backend
//! constructor as the target, so `--limit-upload`/`--limit-download` and
//! the local cache apply to it too.

use std::io::IsTerminal;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use cairn::Repository;

use super::global::Global;
use super::password::{self, Location};
use super::repo_open::open_options;

/// How the source repository's password is found.
#[derive(Debug, Clone, Args)]
pub struct FromPassword {
    /// Read the source repository's password from the first line of this
    /// file.
    #[arg(long, env = "CAIRN_FROM_PASSWORD_FILE", value_name = "FILE")]
    from_password_file: Option<PathBuf>,
    /// Run this shell command and use the first line it prints as the
    /// source repository's password.
    #[arg(long, env = "CAIRN_FROM_PASSWORD_COMMAND", value_name = "CMD")]
    from_password_command: Option<String>,
}

impl FromPassword {
    /// True when a password for the source was given explicitly.
    fn given(&self) -> bool {
        self.from_password_file.is_some()
            || self.from_password_command.is_some()
            || std::env::var_os("CAIRN_FROM_PASSWORD").is_some()
    }

    /// The source's password: options, environment, then a prompt.
    fn password(&self, location: &Path) -> Result<Vec<u8>> {
        if let Some(f) = &self.from_password_file {
            return password::from_file(f, "the source repository's password file");
        }
        if let Some(cmd) = &self.from_password_command {
            return password::from_command(cmd, "--from-password-command");
        }
        if let Some(pw) = std::env::var_os("CAIRN_FROM_PASSWORD") {
            return Ok(pw.as_bytes().to_vec());
        }
        if std::io::stdin().is_terminal() {
            let pw = rpassword::prompt_password(format!(
                "password for the source repository {}: ",
                location.display()
            ))
            .context("cannot read the password from the terminal")?;
            return Ok(pw.into_bytes());
        }
        bail!(
            "it is encrypted and no password for it was given: set CAIRN_FROM_PASSWORD or pass --from-password-file or --from-password-command"
        )
    }

    /// Opens the repository at `location` as a source: through
    /// [`password::backend`] (rate limits, request counts) with the local
    /// cache, and with `--retry-lock`/`--no-lock` applied.
    pub fn open(&self, g: &Global, location: &Path) -> Result<Repository> {
        let loc = Location {
            path: location.to_path_buf(),
            default_key: None,
        };
        let opts = open_options(g)?;
        let backend = password::backend(g, &loc)?;
        let repo = Repository::open_with(backend, &opts, &mut || {
            self.password(location)
                .map_err(|e| cairn::Error::invalid(format!("{e:#}")))
        })
        .with_context(|| format!("cannot open the source repository {}", location.display()))?;
        // As for the main repository: a password was expected, so an
        // unencrypted source may have been tampered with.
        if self.given() && repo.config().encryption == cairn::Encryption::None {
            bail!(
                "the source repository {} is unencrypted, but a password for it was given: if it was not created with --no-encryption it may have been tampered with; otherwise drop the --from-password option",
                location.display()
            );
        }
        Ok(repo)
    }
}

/// `init --from-repo`: the repository the new one is related to.
#[derive(Debug, Args)]
pub struct InitFrom {
    /// Create the repository related to this one: it takes that
    /// repository's blob id key, chunker seed and chunker parameters (not
    /// its encryption key or password), so that `cairn copy` between the
    /// two transfers only missing data without reading the rest, and
    /// backups into either deduplicate against copied data.
    #[arg(long, env = "CAIRN_FROM_REPO", value_name = "LOCATION")]
    from_repo: Option<PathBuf>,
    #[command(flatten)]
    password: FromPassword,
}

impl InitFrom {
    /// Makes `opts` related to the `--from-repo` repository, if one is
    /// given; returns its location for the message.
    pub fn apply(&self, g: &Global, opts: &mut cairn::InitOptions) -> Result<Option<PathBuf>> {
        let Some(location) = &self.from_repo else {
            return Ok(None);
        };
        let other = self.password.open(g, location)?;
        opts.related_to(&other);
        Ok(Some(location.clone()))
    }
}
