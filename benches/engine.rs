//! Micro benchmarks of the engine's building blocks: chunking, blob ids,
//! sealing, compression, index lookups, and a whole backup into memory.
//!
//! `cargo bench --bench engine`

// Setup failures in a benchmark have nobody to report to but the panic.
#![allow(clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;

use cairn::internals::{Domain, test_crypto};
use cairn::{BackupOptions, ChunkerParams, InitOptions, MemoryBackend, NoProgress, Repository};
use criterion::{Criterion, Throughput, criterion_main};

fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn building_blocks(c: &mut Criterion) {
    let data = noise(16 << 20);
    let chunk = noise(256 << 10);
    let text: Vec<u8> = b"fn main() { println!(\"hello\"); }\n".repeat(8000);
    let crypto = test_crypto(true);
    let params = ChunkerParams::default();

    let mut g = c.benchmark_group("blocks");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("fastcdc cut points, 16 MiB", |b| {
        b.iter(|| params.cut_points(black_box(&data), 42).count());
    });
    g.throughput(Throughput::Bytes(chunk.len() as u64));
    g.bench_function("keyed blake3 blob id, 256 KiB", |b| {
        b.iter(|| crypto.blob_id(black_box(&chunk)));
    });
    g.bench_function("xchacha20poly1305 seal, 256 KiB", |b| {
        b.iter(|| crypto.seal(Domain::Blob, black_box(&chunk)));
    });
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("zstd level 3, 266 KiB of repetitive text", |b| {
        b.iter(|| zstd::bulk::compress(black_box(&text), 3));
    });
    let packed = zstd::bulk::compress(&text, 3).unwrap_or_else(|e| panic!("zstd: {e}"));
    g.bench_function("zstd decompress, 266 KiB of repetitive text", |b| {
        b.iter(|| zstd::bulk::decompress(black_box(&packed), text.len()));
    });
    g.throughput(Throughput::Bytes(chunk.len() as u64));
    g.bench_function("zstd level 3, 256 KiB of incompressible data", |b| {
        b.iter(|| zstd::bulk::compress(black_box(&chunk), 3));
    });
    g.finish();
}

/// Lookups in a merged index of one million blobs (the layout a
/// repository opened from index files has).
fn index_lookups(c: &mut Criterion) {
    use cairn::internals::{Index, IndexFile, IndexPack};
    use cairn::{BlobId, BlobKind, Compression, PackEntry, PackId};
    let id = |n: u64| BlobId(*blake3::hash(&n.to_le_bytes()).as_bytes());
    let n = 1_000_000u64;
    let packs = (0..n)
        .step_by(64)
        .map(|p| IndexPack {
            id: PackId(*blake3::hash(format!("pack {p}").as_bytes()).as_bytes()),
            size: 16 << 20,
            entries: (p..(p + 64).min(n))
                .map(|i| PackEntry {
                    id: id(i),
                    kind: BlobKind::Data,
                    compression: Compression::Zstd,
                    offset: 0,
                    length: 1,
                    raw_length: 1,
                })
                .collect(),
        })
        .collect();
    let index = Index::build([Ok(IndexFile { packs })]).unwrap_or_else(|e| panic!("build: {e}"));
    let present: Vec<BlobId> = (0..4096).map(|i| id(i * 241)).collect();
    let absent: Vec<BlobId> = (0..4096).map(|i| id(n + i)).collect();
    let mut g = c.benchmark_group("index, 1M blobs");
    g.throughput(Throughput::Elements(4096));
    g.bench_function("4096 lookups of present ids", |b| {
        b.iter(|| {
            present
                .iter()
                .filter(|i| index.contains(black_box(i)))
                .count()
        });
    });
    g.bench_function("4096 lookups of absent ids", |b| {
        b.iter(|| {
            absent
                .iter()
                .filter(|i| index.contains(black_box(i)))
                .count()
        });
    });
    g.finish();
}

fn whole_backup(c: &mut Criterion) {
    let src = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let mut total = 0u64;
    for i in 0..2000usize {
        let dir = src.path().join(format!("d{}", i % 20));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir: {e}"));
        let mut body = format!("file {i}\n").repeat(i % 300 + 1).into_bytes();
        body.extend_from_slice(&noise(i % 7 * 1000));
        total += body.len() as u64;
        std::fs::write(dir.join(format!("f{i}")), body).unwrap_or_else(|e| panic!("write: {e}"));
    }
    let mut g = c.benchmark_group("backup");
    g.throughput(Throughput::Bytes(total));
    g.sample_size(10);
    g.bench_function("initial backup of 2,000 files into memory", |b| {
        b.iter(|| {
            let repo = Repository::init(Arc::new(MemoryBackend::new()), None, &{
                let mut o = InitOptions::default();
                o.encryption = false;
                o
            })
            .unwrap_or_else(|e| panic!("init: {e}"));
            cairn::backup(
                &repo,
                &BackupOptions::new(vec![src.path().to_path_buf()]),
                &NoProgress,
            )
            .unwrap_or_else(|e| panic!("backup: {e}"))
        });
    });
    g.finish();
}

// The macro generates an undocumented function.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(
        benches,
        super::building_blocks,
        super::index_lookups,
        super::whole_backup
    );
}
criterion_main!(group::benches);
