//! Measures FastCDC parameter sets on real data, for the choice recorded in
//! `store-format.md`.
//!
//! Usage: `cargo bench --bench chunker_params -- [DIR] [MAX_MIB]`
//! (default `/usr`, 1024 MiB). Files are read in path order and
//! concatenated into one stream, the way a tar archive or a database dump
//! presents data. The stream is then edited the way an application changes
//! its data between two snapshots: 1% of the files are modified (a few bytes
//! inserted at a random place) and the stream is chunked again. For each
//! parameter set it prints the number and mean size of chunks, the bytes the
//! second snapshot must store (chunks not seen in the first), and the
//! chunk+hash throughput.

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cairn::ChunkerParams;

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = rd.filter_map(Result::ok).collect();
    entries.sort_by_key(fs::DirEntry::file_name);
    for e in entries {
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            collect(&e.path(), out);
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn chunk_ids(p: &ChunkerParams, data: &[u8]) -> (Vec<([u8; 32], usize)>, f64) {
    let started = Instant::now();
    let ids: Vec<([u8; 32], usize)> = p
        .chunks(data, 0x5eed)
        .map(|c| {
            let c = c.unwrap_or_default();
            (*blake3::hash(&c).as_bytes(), c.len())
        })
        .collect();
    (ids, started.elapsed().as_secs_f64())
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let dir = PathBuf::from(args.first().map_or("/usr", String::as_str));
    let max_bytes: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1024) << 20;
    let mut files = Vec::new();
    collect(&dir, &mut files);
    let mut stream = Vec::new();
    let mut bounds = Vec::new();
    for f in &files {
        if stream.len() >= max_bytes {
            break;
        }
        let Ok(mut file) = fs::File::open(f) else {
            continue;
        };
        let start = stream.len();
        if file.read_to_end(&mut stream).is_ok() && stream.len() > start {
            bounds.push((start, stream.len()));
        } else {
            stream.truncate(start);
        }
    }
    // Second version: 1% of the files get 16 bytes inserted somewhere.
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut edited = Vec::with_capacity(stream.len() + bounds.len());
    let mut edits = 0;
    for &(start, end) in &bounds {
        let file = stream.get(start..end).unwrap_or_default();
        if rng.next().is_multiple_of(100) {
            let at = (rng.next() as usize) % file.len().max(1);
            edited.extend_from_slice(file.get(..at).unwrap_or_default());
            edited.extend_from_slice(b"EDITED-BY-CAIRN!");
            edited.extend_from_slice(file.get(at..).unwrap_or_default());
            edits += 1;
        } else {
            edited.extend_from_slice(file);
        }
    }
    println!(
        "data: {} ({} files, {:.1} MiB); {edits} files edited",
        dir.display(),
        bounds.len(),
        stream.len() as f64 / 1048576.0
    );
    println!(
        "| parameters (min/avg/max) | chunks | mean chunk | new bytes after edits | throughput |"
    );
    println!("|---|---|---|---|---|");
    let sets = [
        (64 << 10, 256 << 10, 1 << 20),
        (128 << 10, 512 << 10, 2 << 20),
        (256 << 10, 1 << 20, 4 << 20),
        (512 << 10, 1 << 20, 8 << 20),
        (512 << 10, 2 << 20, 8 << 20),
    ];
    for (min, avg, max) in sets {
        let p = ChunkerParams {
            min_size: min,
            avg_size: avg,
            max_size: max,
            normalization: 1,
        };
        let (first, secs) = chunk_ids(&p, &stream);
        let (second, _) = chunk_ids(&p, &edited);
        let known: HashSet<[u8; 32]> = first.iter().map(|(id, _)| *id).collect();
        let new_bytes: usize = second
            .iter()
            .filter(|(id, _)| !known.contains(id))
            .map(|(_, n)| n)
            .sum();
        println!(
            "| {} KiB / {} KiB / {} KiB | {} | {:.0} KiB | {:.1} MiB ({:.2}% of the data) | {:.0} MiB/s |",
            min >> 10,
            avg >> 10,
            max >> 10,
            first.len(),
            stream.len() as f64 / first.len().max(1) as f64 / 1024.0,
            new_bytes as f64 / 1048576.0,
            100.0 * new_bytes as f64 / stream.len().max(1) as f64,
            stream.len() as f64 / 1048576.0 / secs
        );
    }
}
