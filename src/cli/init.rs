//! `cairn init`: create a repository (encrypted unless told otherwise,
//! optionally related to another with `--from-repo`).

use anyhow::Result;
use clap::Args;

use cairn::{InitOptions, Repository};

use super::exit;
use super::from_repo::InitFrom;
use super::global::Global;
use super::output::Out;
use super::password::{self, KdfArgs, backend, location, new_password};
use super::repo_open::default_key;

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Store objects unencrypted (integrity-checked only). Anyone who can
    /// read the repository can read your data.
    #[arg(long)]
    no_encryption: bool,
    /// zstd level for stored data, 0 (off) to 22; higher is smaller and slower.
    #[arg(long, value_name = "LEVEL", default_value_t = InitOptions::default().compression_level, value_parser = clap::value_parser!(i32).range(0..=22))]
    compression_level: i32,
    #[command(flatten)]
    kdf: KdfArgs,
    /// Size in MiB at which packs are closed [default: 16 on a file
    /// system, 64 on object storage]
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pack_size: Option<u32>,
    #[command(flatten)]
    from: InitFrom,
}

/// The new repository's format, as the arguments choose it; `--from-repo`
/// is applied by [`InitFrom::apply`], which opens that repository.
impl From<&InitArgs> for InitOptions {
    fn from(a: &InitArgs) -> Self {
        let mut opts = Self::default();
        opts.encryption = !a.no_encryption;
        opts.compression_level = a.compression_level;
        opts.pack_target_size = a.pack_size.map(|m| m << 20);
        opts.kdf_memory_mib = a.kdf.kdf_memory;
        opts
    }
}

pub fn init(g: &Global, out: &Out, a: &InitArgs) -> Result<u8> {
    let loc = location(g)?;
    let mut opts = InitOptions::from(a);
    let related = a.from.apply(g, &mut opts)?;
    let pw = if a.no_encryption {
        None
    } else if let (Some(key), false) = (&loc.default_key, password::password_given(g)) {
        Some(default_key(out, key)?)
    } else {
        Some(new_password(g, &loc, "init")?)
    };
    let repo = Repository::init(backend(g, &loc)?, pw.as_deref(), &opts)?;
    if out.json {
        out.print_json(&serde_json::json!({
            "location": loc.path,
            "key": repo.key_id(),
            "encrypted": !a.no_encryption,
            "related_to": related,
        }))?;
    } else {
        out.info(format!("created repository at {}", loc.path.display()));
        if let Some(other) = &related {
            out.info(format!(
                "it shares blob ids and chunking with {}: `cairn copy` between them transfers only missing data",
                other.display()
            ));
        }
        if a.no_encryption {
            out.warn("the repository is NOT encrypted: anyone who can read it can read your data");
        } else {
            out.info("keep the password safe: without it the data cannot be read back");
        }
    }
    Ok(exit::OK)
}
