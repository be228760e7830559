//! Micro benchmarks of the engine's building blocks: chunking, blob ids,
//! sealing, compression, and a whole backup into memory.
//!
//! `cargo bench --bench engine`

// Setup failures in a benchmark have nobody to report to but the panic.
#![allow(clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;

use cairn::decode::{Domain, test_crypto};
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
    criterion::criterion_group!(benches, super::building_blocks, super::whole_backup);
}
criterion_main!(group::benches);
