//! Opening the repository a command names: its password asked only when
//! it is encrypted, the local cache, `--retry-lock` and `--no-lock`, the
//! refusal of a repository that lost its encryption, and the creation of
//! the default repository (or the one a profile names) on first use.

use anyhow::{Result, anyhow, bail};

use cairn::{InitOptions, OpenOptions, Repository};

use super::global::Global;
use super::output::Out;
use super::password::{self, Location, backend, location};

/// Opens the repository, creating it first when it is the default one or
/// the one the profile names and does not exist yet: for the commands
/// that take snapshots (`backup`, `snap`, `run`).
pub fn open_or_create_default(g: &Global, out: &Out) -> Result<Repository> {
    open_or_create(g, out, true, &open_options(g)?)
}

/// As [`open_or_create_default`], with `opts` (see [`open_options`]) for
/// the repository opened or created; `create_named` also creates the
/// repository a profile names (a command a person runs; not the daemon,
/// which at boot could find a backup disk not mounted yet and create a
/// new repository in its empty mount point).
pub fn open_or_create(
    g: &Global,
    out: &Out,
    create_named: bool,
    opts: &OpenOptions,
) -> Result<Repository> {
    let loc = location(g)?;
    match Repository::open_with(backend(g, &loc)?, opts, &mut || password::password(g, &loc)) {
        Ok(r) => {
            refuse_downgrade(g, &r)?;
            Ok(r)
        }
        Err(cairn::Error::RepoNotFound { .. }) if loc.default_key.is_some() => {
            let key = loc
                .default_key
                .as_deref()
                .unwrap_or(std::path::Path::new(""));
            let pw = default_key(out, key)?;
            let repo =
                Repository::init_with(backend(g, &loc)?, Some(&pw), &InitOptions::default(), opts)?;
            out.info(format!(
                "created the default repository at {} (use --repo or CAIRN_REPO for another)",
                loc.path.display()
            ));
            Ok(repo)
        }
        // The repository the application's cairn.toml names, with the
        // password source it (or the environment) gives: created on the
        // first snapshot, as the default repository is.
        Err(cairn::Error::RepoNotFound { .. })
            if create_named
                && g.loaded
                    .as_ref()
                    .is_some_and(|p| p.repo.is_some() && p.repo == g.repo)
                && password::password_given(g) =>
        {
            let pw = password::password(g, &loc)?;
            let repo =
                Repository::init_with(backend(g, &loc)?, Some(&pw), &InitOptions::default(), opts)?;
            out.info(format!(
                "created the repository {} that {} names",
                loc.path.display(),
                g.loaded
                    .as_ref()
                    .map_or_else(String::new, |p| p.file.display().to_string())
            ));
            Ok(repo)
        }
        Err(e) => Err(e.into()),
    }
}

/// Reads or creates the default repository's key file.
pub fn default_key(out: &Out, key: &std::path::Path) -> Result<Vec<u8>> {
    if key.exists() {
        return password::read_key_file(key);
    }
    let pw = cairn::create_key_file(key)?;
    out.info(format!(
        "generated the key of the default repository at {} (mode 0600).\n\
         Keep a copy of that file somewhere other than this machine: without it the backups cannot be read.",
        key.display()
    ));
    Ok(pw)
}

/// Opens the repository, asking for the password only if it is encrypted.
pub fn open(g: &Global) -> Result<(Repository, Location)> {
    open_with(g, &open_options(g)?)
}

/// As [`open`], with `opts` (see [`open_options`]).
pub fn open_with(g: &Global, opts: &OpenOptions) -> Result<(Repository, Location)> {
    let loc = location(g)?;
    let repo = Repository::open_with(backend(g, &loc)?, opts, &mut || password::password(g, &loc))?;
    refuse_downgrade(g, &repo)?;
    Ok((repo, loc))
}

/// The options every repository a command opens is given: the local cache
/// (`--cache-dir`, `--no-cache`), `--retry-lock` and `--no-lock`. A
/// malformed `--retry-lock` is refused here, before anything is opened.
pub fn open_options(g: &Global) -> Result<OpenOptions> {
    let mut opts = OpenOptions::new().no_lock(g.no_lock);
    opts.cache_root = password::cache_dir(g);
    if let Some(text) = &g.retry_lock {
        let d: jiff::SignedDuration = text.parse().map_err(|e| {
            anyhow!("--retry-lock '{text}': {e}; give a duration such as 30s, 10m or 1h")
        })?;
        let d = std::time::Duration::try_from(d)
            .map_err(|_| anyhow!("--retry-lock '{text}' must not be negative"))?;
        opts = opts.lock_wait(d);
    }
    Ok(opts)
}

/// A password was supplied but the repository says it is unencrypted.
/// Someone able to write the repository could have replaced its config and
/// key with unencrypted ones to make new backups readable; since the user
/// expected encryption, stop rather than write anything in the clear.
pub fn refuse_downgrade(g: &Global, repo: &Repository) -> Result<()> {
    let default_key =
        g.repo.is_none() && location(g).is_ok_and(|l| l.default_key.is_some_and(|k| k.exists()));
    let given = password::password_given(g) || default_key;
    if given && repo.config().encryption == cairn::Encryption::None {
        bail!(
            "{} is an unencrypted repository, but a password was given: if you did not create it with --no-encryption, it may have been tampered with; otherwise unset CAIRN_PASSWORD / --password-file / --password-command",
            repo.backend().location()
        );
    }
    Ok(())
}
