//! How much memory the merged index takes per blob, and how fast it answers,
//! for a repository with many indexed blobs (issue 5: at most 48 bytes a
//! blob at 10 million blobs).
//!
//! `cargo bench --bench index_scale -- [BLOBS] [DIR]`
//!
//! Writes BLOBS (default 10,000,000) index entries with random ids, 64 to
//! a pack as for 16 MiB packs of 256 KiB chunks, as real index files of an
//! encrypted repository in DIR (default: a temporary directory), then opens
//! the repository in a fresh process and reports, from /proc/self/status,
//! the resident memory the open added per blob and the peak during the open,
//! plus lookup times for present and absent ids. No pack data is written:
//! opening and looking up touch only the index.

#![allow(clippy::panic, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use cairn::internals::{IndexFile, IndexPack, encode_index_file};
use cairn::{
    Backend, BlobId, BlobKind, Compression, FileKind, InitOptions, LocalBackend, PackEntry, PackId,
    Repository,
};
use rayon::prelude::*;

const PASSWORD: &[u8] = b"index-scale-bench";
const PER_PACK: u64 = 64;
const PER_FILE: u64 = 1 << 16;

/// A deterministic, well-spread id for blob number `n`.
fn blob_id(n: u64) -> BlobId {
    BlobId(*blake3::hash(&n.to_le_bytes()).as_bytes())
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS/VmHWM line")
}

fn generate(dir: &Path, blobs: u64) {
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir));
    let repo =
        Repository::init(backend.clone(), Some(PASSWORD), &InitOptions::default()).expect("init");
    let files = blobs.div_ceil(PER_FILE);
    let started = Instant::now();
    (0..files).into_par_iter().for_each(|f| {
        let first = f * PER_FILE;
        let last = (first + PER_FILE).min(blobs);
        let packs = (first..last)
            .step_by(PER_PACK as usize)
            .map(|p| IndexPack {
                id: PackId(*blake3::hash(format!("pack {p}").as_bytes()).as_bytes()),
                size: 16 << 20,
                entries: (p..(p + PER_PACK).min(last))
                    .map(|n| PackEntry {
                        id: blob_id(n),
                        kind: BlobKind::Data,
                        compression: Compression::Zstd,
                        offset: u32::try_from((n - p) * 262_184).expect("offset"),
                        length: 262_184,
                        raw_length: 262_144,
                    })
                    .collect(),
            })
            .collect();
        let (id, bytes) =
            encode_index_file(repo.crypto(), &IndexFile { packs }).expect("encode index");
        backend
            .write(FileKind::Index, &id.to_hex(), &bytes)
            .expect("write index");
    });
    println!(
        "wrote {blobs} index entries in {files} index files in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn measure(dir: &Path, blobs: u64) {
    let before = status_kib("VmRSS:");
    let started = Instant::now();
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir));
    let repo = Repository::open(backend, &mut || Ok(PASSWORD.to_vec())).expect("open");
    let open_s = started.elapsed().as_secs_f64();
    let after = status_kib("VmRSS:");
    let peak = status_kib("VmHWM:");
    let index = repo.index();
    assert_eq!(index.len() as u64, blobs, "every blob indexed");
    let per_blob = |kib: u64| (kib * 1024) as f64 / blobs as f64;
    let lookups = 1_000_000u64.min(blobs);
    let started = Instant::now();
    let found = (0..lookups)
        .filter(|i| index.contains(&blob_id(i * (blobs / lookups))))
        .count() as u64;
    let present_ns = started.elapsed().as_nanos() as f64 / lookups as f64;
    assert_eq!(found, lookups, "every present id found");
    let started = Instant::now();
    let absent = (0..lookups)
        .filter(|i| index.contains(&blob_id(blobs + i)))
        .count();
    let absent_ns = started.elapsed().as_nanos() as f64 / lookups as f64;
    assert_eq!(absent, 0, "no absent id found");
    println!("blobs indexed:                  {blobs}");
    println!("open (KDF + load index):        {open_s:.2} s");
    println!(
        "index record bytes per blob:    {:.1}",
        index.record_bytes() as f64 / blobs as f64
    );
    println!(
        "resident added by open:         {:.1} MiB = {:.1} bytes/blob",
        (after.saturating_sub(before)) as f64 / 1024.0,
        per_blob(after.saturating_sub(before))
    );
    println!(
        "peak resident during open:      {:.1} MiB = {:.1} bytes/blob (whole process)",
        peak as f64 / 1024.0,
        per_blob(peak)
    );
    println!("lookup, present id (incl. id):  {present_ns:.0} ns");
    println!("lookup, absent id (incl. id):   {absent_ns:.0} ns");
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if let [mode, dir, blobs] = args.as_slice()
        && mode == "measure"
    {
        measure(Path::new(dir), blobs.parse().expect("blob count"));
        return;
    }
    let blobs: u64 = args
        .first()
        .map_or(10_000_000, |s| s.parse().expect("BLOBS is a number"));
    let tmp;
    let dir: PathBuf = match args.get(1) {
        Some(d) => PathBuf::from(d),
        None => {
            tmp = tempfile::tempdir().expect("temporary directory");
            tmp.path().join("repo")
        }
    };
    generate(&dir, blobs);
    // Measured in a fresh process, so the generator's memory is not counted.
    let status = std::process::Command::new(std::env::current_exe().expect("own path"))
        .args(["measure", &dir.to_string_lossy(), &blobs.to_string()])
        .status()
        .expect("run the measurement");
    assert!(status.success(), "measurement failed");
}
