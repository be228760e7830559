//! `cairn cat`: print a repository object, for inspection and debugging.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, Result};
use clap::Args;

use cairn::{BlobId, FileKind, KeyId, PackId};

use super::exit;
use super::global::Global;
use super::output::Out;
use super::render::node_view;
use super::repo_open::open;

#[derive(Debug, Args)]
pub struct CatArgs {
    /// What to print.
    #[arg(value_enum)]
    kind: CatKind,
    /// The object's id (not needed for `config`).
    id: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CatKind {
    /// The repository config (JSON).
    Config,
    /// A snapshot (JSON); `latest` or an id prefix.
    Snapshot,
    /// A tree blob (JSON).
    Tree,
    /// A blob's plaintext, raw on stdout.
    Blob,
    /// An index file (JSON).
    Index,
    /// A pack's header (JSON).
    Pack,
    /// A key file's public metadata (JSON).
    Key,
}

pub fn cat(g: &Global, out: &Out, a: &CatArgs) -> Result<u8> {
    let (repo, _) = open(g)?;
    let id = || -> Result<&str> {
        a.id.as_deref()
            .context("this kind of object needs an id: see `cairn cat --help`")
    };
    match a.kind {
        CatKind::Config => {
            let c = repo.config();
            out.print_json(&serde_json::json!({
                "format_version": cairn::FORMAT_VERSION,
                "repo_id": hex::encode(c.repo_id),
                "encryption": format!("{:?}", c.encryption),
                "chunker": {
                    "algorithm": "fastcdc-v2020",
                    "min_size": c.chunker.min_size,
                    "avg_size": c.chunker.avg_size,
                    "max_size": c.chunker.max_size,
                    "normalization": c.chunker.normalization,
                },
                "compression": {"algorithm": "zstd", "level": c.compression_level},
                "pack_target_size": c.pack_target_size,
            }))?;
        }
        CatKind::Snapshot => {
            let (sid, s) = repo.find_snapshot(id()?)?;
            out.print_json(&cairn::SnapshotView::new(sid, &s))?;
        }
        CatKind::Tree => {
            let tid: BlobId = id()?.parse()?;
            let tree = repo.read_tree(&tid)?;
            let nodes: Vec<_> = tree
                .nodes
                .iter()
                .map(|n| node_view(&n.name, n, true))
                .collect();
            out.print_json(&nodes)?;
        }
        CatKind::Blob => {
            let bid: BlobId = id()?.parse()?;
            let data = repo.read_blob(&bid)?;
            std::io::stdout().lock().write_all(&data)?;
        }
        CatKind::Index => {
            let name = id()?;
            let file = repo.read_index_file(name)?;
            let packs: BTreeMap<String, Vec<cairn::PackEntry>> = file
                .packs
                .into_iter()
                .map(|p| (p.id.to_hex(), p.entries))
                .collect();
            out.print_json(&packs)?;
        }
        CatKind::Pack => {
            let pid: PackId = id()?.parse()?;
            let size = repo.backend().size(FileKind::Pack, &pid.to_hex())?;
            let entries = repo.read_pack_header(&pid, size)?;
            out.print_json(&serde_json::json!({"id": pid, "size": size, "blobs": entries}))?;
        }
        CatKind::Key => {
            let kid: KeyId = id()?.parse()?;
            let keys = repo.keys()?;
            let (_, file) = keys
                .into_iter()
                .find(|(k, _)| *k == kid)
                .with_context(|| format!("no key {kid} in this repository"))?;
            let f = file?;
            out.print_json(&serde_json::json!({
                "id": kid,
                "created": jiff::Timestamp::from_second(f.created).map(|t| t.to_string()).unwrap_or_default(),
                "hostname": f.hostname,
                "username": f.username,
                "kdf": f.kdf.map(|k| serde_json::json!({
                    "algorithm": "argon2id",
                    "memory_kib": k.memory_kib,
                    "iterations": k.iterations,
                    "parallelism": k.parallelism,
                })),
            }))?;
        }
    }
    Ok(exit::OK)
}
