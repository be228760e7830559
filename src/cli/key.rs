//! `cairn key`: list, add, remove and change the passwords (key files)
//! that open the repository.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use cairn::{FileKind, KeyId, Repository};

use super::exit;
use super::global::Global;
use super::output::{Out, local_time};
use super::password::{self, KdfArgs, backend, location};
use super::repo_open::refuse_downgrade;

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List the key files (one per password).
    List,
    /// Add a password. The new one comes from --new-password-file or a
    /// prompt; the current one from the usual options.
    Add(NewPasswordArgs),
    /// Remove a key file by id (not the one in use, not the last).
    Remove {
        /// Key id or unique prefix.
        id: String,
    },
    /// Change the password: add a key for the new one, remove the current.
    Passwd(NewPasswordArgs),
}

#[derive(Debug, Args)]
pub struct NewPasswordArgs {
    /// Read the new password from the first line of this file.
    #[arg(long, value_name = "FILE")]
    new_password_file: Option<PathBuf>,
    #[command(flatten)]
    kdf: KdfArgs,
    /// Size in MiB at which packs are closed [default: 16 on a file
    /// system, 64 on object storage]
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pack_size: Option<u32>,
}

fn read_new_password(a: &NewPasswordArgs) -> Result<Vec<u8>> {
    match &a.new_password_file {
        Some(f) => {
            let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
            let line = password::first_line(&bytes);
            if line.is_empty() {
                bail!("the new password in {} is empty", f.display());
            }
            Ok(line)
        }
        None => password::new_password_prompt("new key"),
    }
}

fn resolve_key(repo: &Repository, prefix: &str) -> Result<KeyId> {
    let keys = repo.keys()?;
    let matches: Vec<KeyId> = keys
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| k.to_hex().starts_with(&prefix.to_ascii_lowercase()))
        .collect();
    match matches.as_slice() {
        [one] => Ok(*one),
        [] => bail!("no key matches '{prefix}': list them with `cairn key list`"),
        _ => bail!("'{prefix}' matches several keys: give more characters"),
    }
}

pub fn key(g: &Global, out: &Out, cmd: &KeyCommand) -> Result<u8> {
    let loc = location(g)?;
    let mut current = Vec::new();
    let repo = Repository::open(backend(g, &loc)?, &mut || {
        let pw = password::password(g, &loc)?;
        current.clone_from(&pw);
        Ok(pw)
    })?;
    refuse_downgrade(g, &repo)?;
    match cmd {
        KeyCommand::List => {
            let keys = repo.keys()?;
            if out.json {
                let items: Vec<_> = keys
                    .iter()
                    .map(|(id, f)| {
                        let f = f.as_ref().ok();
                        serde_json::json!({
                            "id": id,
                            "current": *id == repo.key_id(),
                            "created": f.and_then(|f| jiff::Timestamp::from_second(f.created).ok()).map(|t| t.to_string()),
                            "hostname": f.map(|f| f.hostname.clone()),
                            "username": f.map(|f| f.username.clone()),
                        })
                    })
                    .collect();
                out.print_json(&items)?;
            } else {
                outln!("   {:<8}  {:<19}  {:<16}  user", "id", "created", "host");
                for (id, f) in &keys {
                    let mark = if *id == repo.key_id() { "*" } else { " " };
                    match f {
                        Ok(f) => outln!(
                            "{mark}  {:<8}  {:<19}  {:<16}  {}",
                            id.short(),
                            jiff::Timestamp::from_second(f.created)
                                .map(local_time)
                                .unwrap_or_default(),
                            f.hostname,
                            f.username
                        ),
                        Err(e) => outln!("{mark}  {:<8}  damaged: {e}", id.short()),
                    }
                }
            }
        }
        KeyCommand::Add(a) | KeyCommand::Passwd(a) => {
            let new = read_new_password(a)?;
            let master = repo.master_key(&current)?;
            let id = repo.add_key(&new, &master, a.kdf.kdf_memory)?;
            if matches!(cmd, KeyCommand::Passwd(_)) {
                // The default repository opens with its key file: it must
                // hold the new password before the old key goes.
                if let Some(key) = password::default_key_in_use(g, &loc) {
                    password::replace_default_key(&key, &new)?;
                    out.info(format!(
                        "updated the default repository's key file {}",
                        key.display()
                    ));
                }
                // The new key is durable before the old one goes, so a crash
                // in between leaves both passwords working, never neither.
                repo.backend()
                    .delete(FileKind::Key, &repo.key_id().to_hex())?;
                out.info(format!(
                    "password changed: key {} replaces {}",
                    id.short(),
                    repo.key_id().short()
                ));
            } else {
                out.info(format!("added key {}", id.short()));
            }
            if out.json {
                out.print_json(&serde_json::json!({"id": id}))?;
            }
        }
        KeyCommand::Remove { id } => {
            let kid = resolve_key(&repo, id)?;
            repo.remove_key(&kid)?;
            out.info(format!("removed key {}", kid.short()));
        }
    }
    Ok(exit::OK)
}
