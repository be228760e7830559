//! Decoders of on-disk data reject arbitrary bytes with an error, never a panic.
//!
//! Every decoder in `cairn::internals` gets arbitrary bytes and mutations of
//! valid encodings (bit flips, inserted and removed bytes, truncation,
//! overwritten length fields) through the same harnesses as the fuzz targets
//! (`fuzz/src/harness.rs`, compiled here with `#[path]`): a harness panics
//! when its decoder panics or accepts bytes that are not the one encoding of
//! what it returned. Sealed formats are fuzzed behind the authentication layer
//! with `cairn::internals::test_crypto(false)`. Every crash the fuzzers saved
//! under `fuzz/artifacts/<target>/`, and every seed under
//! `fuzz/corpus/<target>/seed-*`, replays as a regression test. Encoders
//! reachable from the public API round-trip through their decoders.
//!
//! The seed corpus is written by the ignored test `write_fuzz_seeds`:
//! `CAIRN_WRITE_FUZZ_SEEDS=fuzz/corpus cargo test --test integration
//! write_fuzz_seeds -- --ignored`.

use std::fs;
use std::panic::catch_unwind;
use std::path::{Path, PathBuf};

use cairn::internals;
use cairn::{AppInfo, ComponentInfo, DatabaseInfo, GitInfo, TableRows};
use cairn::{BlobId, BlobKind, ChunkerParams, Compression, Config, Encryption, KeyFile, KeyId};
use cairn::{Node, NodeKind, PackEntry, PackId, Snapshot, SnapshotId, Summary, Tree, Xattr};
use proptest::prelude::*;

#[path = "../../fuzz/src/harness.rs"]
mod harness;

use harness::{IndexFileRecord, IndexPackRecord, TARGETS};

/// Runs the harness of `target` on `data`; `Err` with the input when it
/// panicked (the panic message is printed by the panic hook above it).
fn no_panic(target: &str, data: &[u8]) -> Result<(), String> {
    match catch_unwind(|| harness::run(target, data)) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("unknown fuzz target {target}")),
        Err(_) => Err(format!(
            "{target} panicked on {} bytes: {}",
            data.len(),
            hex::encode(data)
        )),
    }
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn seeds_of(target: &str) -> Vec<Vec<u8>> {
    harness::seeds()
        .into_iter()
        .filter(|(t, _, _)| *t == target)
        .map(|(_, _, bytes)| bytes)
        .collect()
}

// ---------------------------------------------------------------------------
// Mutations of valid encodings.

#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        mask: u8,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Remove {
        at: usize,
        len: usize,
    },
    Truncate {
        len: usize,
    },
    /// Overwrites 4 bytes (u32 lengths and enum tags).
    SetU32 {
        at: usize,
        value: u32,
    },
    /// Overwrites 8 bytes (u64 lengths of vectors and strings).
    SetU64 {
        at: usize,
        value: u64,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let u32s = prop_oneof![
        Just(0u32),
        Just(1),
        Just(2),
        Just(7),
        Just(u32::MAX),
        Just(1 << 31),
        any::<u32>(),
    ];
    let u64s = prop_oneof![
        Just(0u64),
        Just(1),
        Just(2),
        Just(u64::MAX),
        Just(1 << 32),
        Just(256 << 20),
        Just((256 << 20) + 1),
        any::<u64>(),
    ];
    prop_oneof![
        3 => (any::<usize>(), 1..=255u8).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..9))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        1 => (any::<usize>(), 1..9usize).prop_map(|(at, len)| Mutation::Remove { at, len }),
        1 => any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        1 => (any::<usize>(), u32s).prop_map(|(at, value)| Mutation::SetU32 { at, value }),
        1 => (any::<usize>(), u64s).prop_map(|(at, value)| Mutation::SetU64 { at, value }),
    ]
}

fn overwrite(data: &mut [u8], at: usize, bytes: &[u8]) {
    if data.len() >= bytes.len() {
        let at = at % (data.len() - bytes.len() + 1);
        data[at..at + bytes.len()].copy_from_slice(bytes);
    }
}

fn apply(data: &mut Vec<u8>, m: &Mutation) {
    match m {
        Mutation::Flip { at, mask } => {
            if !data.is_empty() {
                let at = at % data.len();
                data[at] ^= mask;
            }
        }
        Mutation::Insert { at, bytes } => {
            let at = at % (data.len() + 1);
            data.splice(at..at, bytes.iter().copied());
        }
        Mutation::Remove { at, len } => {
            if !data.is_empty() {
                let at = at % data.len();
                let end = (at + len).min(data.len());
                data.drain(at..end);
            }
        }
        Mutation::Truncate { len } => data.truncate(len % (data.len() + 1)),
        Mutation::SetU32 { at, value } => overwrite(data, *at, &value.to_le_bytes()),
        Mutation::SetU64 { at, value } => overwrite(data, *at, &value.to_le_bytes()),
    }
}

/// A valid encoding for `target` with a few mutations applied.
fn mutated(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(seeds_of(target)),
        prop::collection::vec(mutation(), 1..6),
    )
        .prop_map(|(mut data, muts)| {
            for m in &muts {
                apply(&mut data, m);
            }
            data
        })
}

macro_rules! never_panics {
    ($($name:ident => $target:literal),* $(,)?) => {
        mod never_panics {
            use super::*;
            $(
                mod $name {
                    use super::*;
                    proptest! {
                        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

                        #[test]
                        fn on_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..4096)) {
                            if let Err(e) = no_panic($target, &data) {
                                return Err(TestCaseError::fail(e));
                            }
                        }

                        #[test]
                        fn on_mutated_encodings(data in mutated($target)) {
                            if let Err(e) = no_panic($target, &data) {
                                return Err(TestCaseError::fail(e));
                            }
                        }
                    }
                }
            )*
        }
    };
}

never_panics! {
    config => "fuzz_config",
    key => "fuzz_key",
    pack_header => "fuzz_pack_header",
    pack => "fuzz_pack",
    index => "fuzz_index",
    tree => "fuzz_tree",
    snapshot => "fuzz_snapshot",
}

// ---------------------------------------------------------------------------
// Fuzz artifacts and seeds as regression tests.

/// Every crash, timeout or out-of-memory input a fuzzer saved under
/// `fuzz/artifacts/<target>/`, and every committed seed, replays without a
/// panic through the harness of its target.
#[test]
fn fuzz_artifacts_and_seeds_replay() {
    let mut failures = Vec::new();
    let mut replayed = 0;
    for (dir, only_seeds) in [("artifacts", false), ("corpus", true)] {
        let Ok(targets) = fs::read_dir(fuzz_dir().join(dir)) else {
            continue;
        };
        for target in targets {
            let target = target.expect("read_dir entry").path();
            if !target.is_dir() {
                continue;
            }
            let name = target
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            assert!(
                TARGETS.contains(&name.as_str()),
                "{} is not named after a fuzz target (one of {TARGETS:?})",
                target.display()
            );
            for file in fs::read_dir(&target).expect("read_dir") {
                let path = file.expect("read_dir entry").path();
                let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if !path.is_file()
                    || file_name.starts_with('.')
                    || (only_seeds && !file_name.starts_with("seed-"))
                {
                    continue;
                }
                let data = fs::read(&path).expect("read input");
                replayed += 1;
                if let Err(e) = no_panic(&name, &data) {
                    failures.push(format!("{}: {e}", path.display()));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "replays panicked:\n{}",
        failures.join("\n")
    );
    eprintln!("replayed {replayed} fuzz inputs");
}

/// Writes the seed corpus when `CAIRN_WRITE_FUZZ_SEEDS` names a directory
/// (normally `fuzz/corpus`).
#[test]
#[ignore = "writes the fuzz seed corpus: set CAIRN_WRITE_FUZZ_SEEDS=fuzz/corpus"]
fn write_fuzz_seeds() {
    let Some(dir) = std::env::var_os("CAIRN_WRITE_FUZZ_SEEDS") else {
        eprintln!("CAIRN_WRITE_FUZZ_SEEDS is not set; nothing written");
        return;
    };
    let dir = PathBuf::from(dir);
    for (target, name, bytes) in harness::seeds() {
        let target_dir = dir.join(target);
        fs::create_dir_all(&target_dir).expect("create corpus directory");
        fs::write(target_dir.join(name), bytes).expect("write seed");
    }
}

/// The seeds are valid encodings that each decoder accepts, which also
/// checks that the harnesses seal objects exactly as cairn does.
#[test]
fn seeds_are_accepted() {
    let plain = internals::test_crypto(false);

    let raw = internals::config(&harness::config_file(&harness::sample_config(), &[1; 32]))
        .expect("config decodes");
    assert_eq!(raw.config, harness::sample_config());
    assert_eq!(raw.mac, [1; 32]);

    let key = harness::sample_plain_key();
    let (id, bytes) = key.encode();
    assert_eq!(id, KeyId::hash_of(&bytes));
    assert_eq!(KeyFile::decode(&bytes).expect("key decodes"), key);
    assert!(
        key.open(b"any").expect("open").is_some(),
        "the clear master key decodes"
    );
    let kdf_key = KeyFile::decode(&harness::sample_kdf_key_bytes()).expect("key decodes");
    assert_eq!(kdf_key.kdf.map(|k| k.memory_kib), Some(8));
    assert!(kdf_key.open(b"password").expect("argon2 runs").is_none());

    let (pack, entries) = harness::sample_pack(&[
        (b"one".to_vec(), BlobKind::Data),
        (b"two".to_vec(), BlobKind::Tree),
    ]);
    let header = internals::pack(&plain, &pack).expect("pack header opens");
    assert_eq!(header.entries, entries);
    assert!(
        internals::pack(&internals::test_crypto(true), &pack).is_err(),
        "the encrypted mode rejects a plain seal"
    );

    let index = harness::sample_index();
    assert_eq!(
        harness::decode_index_file(&harness::index_file(&index)),
        Ok(index)
    );

    let wal = harness::sample_wal();
    let header = internals::WalHeader::parse(&wal).expect("log header");
    let txns = internals::WalCursor::new(header).read(&wal[32..]);
    assert_eq!(
        txns.iter()
            .map(|t| (t.pages.len(), t.db_pages))
            .collect::<Vec<_>>(),
        [(2, 2), (1, 3)],
        "two transactions; the unfinished third is not one"
    );

    let seg = harness::sample_segment();
    let (id, bytes) = internals::encode_segment_file(&plain, &seg).expect("segment encodes");
    assert_eq!(
        internals::segment_file(&plain, &id, &bytes).expect("segment decodes"),
        seg
    );

    let snap = harness::sample_snapshot();
    assert_eq!(
        internals::snapshot_file(&plain, &harness::snapshot_file(&snap)),
        Ok(snap)
    );

    let mut tree = harness::sample_tree();
    tree.sort();
    assert_eq!(Tree::decode(&tree.encode()).expect("tree decodes"), tree);

    let event = harness::sample_audit_event();
    let (id, bytes) = internals::encode_audit_file(&plain, &event).expect("audit encodes");
    assert_eq!(
        internals::audit_file(&plain, &id, &bytes).expect("audit decodes"),
        event
    );

    let profile = cairn::Profile::parse(harness::SAMPLE_PROFILE, Path::new("/srv/app/cairn.toml"))
        .expect("sample profile parses");
    assert_eq!(profile.components.len(), 4);
    assert_eq!(profile.repo.as_deref(), Some(Path::new("/srv/backups")));

    let cache = harness::files_cache_file(&harness::encode(&harness::sample_files_cache()));
    assert_eq!(internals::files_cache(&plain, &cache), Ok(2));
    assert!(internals::files_cache(&internals::test_crypto(true), &cache).is_err());

    for (target, name, bytes) in harness::seeds() {
        no_panic(target, &bytes).unwrap_or_else(|e| panic!("seed {name}: {e}"));
    }
}

// ---------------------------------------------------------------------------
// Round trips of the encoders reachable from the public API.

fn blob_id() -> impl Strategy<Value = BlobId> {
    any::<[u8; 32]>().prop_map(BlobId)
}

fn entry_name() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        any::<u8>().prop_filter("no NUL or /", |b| *b != 0 && *b != b'/'),
        1..12,
    )
    .prop_filter("not . or ..", |n| n != b"." && n != b"..")
}

fn node_kind() -> impl Strategy<Value = NodeKind> {
    prop_oneof![
        prop::collection::vec(blob_id(), 0..4).prop_map(|content| NodeKind::File { content }),
        blob_id().prop_map(|subtree| NodeKind::Dir { subtree }),
        prop::collection::vec(any::<u8>(), 0..32).prop_map(|target| NodeKind::Symlink { target }),
        Just(NodeKind::Fifo),
        Just(NodeKind::Socket),
        any::<u64>().prop_map(|rdev| NodeKind::CharDevice { rdev }),
        any::<u64>().prop_map(|rdev| NodeKind::BlockDevice { rdev }),
        (blob_id(), 1u8..=8).prop_map(|(list, depth)| NodeKind::ListedFile { list, depth }),
    ]
}

fn node() -> impl Strategy<Value = Node> {
    let xattr = (
        prop::collection::vec(any::<u8>(), 0..8),
        prop::collection::vec(any::<u8>(), 0..8),
    )
        .prop_map(|(name, value)| Xattr { name, value });
    (
        entry_name(),
        node_kind(),
        any::<(u32, u32, u32)>(),
        any::<u64>(),
        any::<(i64, u32, i64, u32)>(),
        any::<(u64, u64, u64)>(),
        prop::collection::vec(xattr, 0..3),
    )
        .prop_map(
            |(name, kind, (mode, uid, gid), size, times, (inode, device, links), xattrs)| Node {
                name,
                kind,
                mode,
                uid,
                gid,
                size,
                mtime: times.0,
                mtime_nsec: times.1,
                ctime: times.2,
                ctime_nsec: times.3,
                inode,
                device,
                links,
                xattrs,
            },
        )
}

/// A canonical tree: unique names, sorted entries and attributes.
fn sorted_tree() -> impl Strategy<Value = Tree> {
    prop::collection::vec(node(), 0..8).prop_map(|mut nodes| {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes.dedup_by(|a, b| a.name == b.name);
        for n in &mut nodes {
            n.xattrs.sort_by(|a, b| a.name.cmp(&b.name));
            n.xattrs.dedup_by(|a, b| a.name == b.name);
        }
        let mut tree = Tree { nodes };
        tree.sort();
        tree
    })
}

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..12).prop_map(|c| c.into_iter().collect())
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    (
        (
            any::<i64>(),
            any::<u32>(),
            text(),
            text(),
            any::<(u32, u32)>(),
        ),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..16), 0..4),
        prop::collection::vec(text(), 0..3),
        prop::collection::vec(text(), 0..3),
        prop::option::of(any::<[u8; 32]>().prop_map(SnapshotId)),
        blob_id(),
        any::<[u64; 11]>(),
        text(),
        prop::option::of(app_info()),
        prop::collection::vec(database_info(), 0..3),
        prop::option::of(any::<[u8; 32]>().prop_map(SnapshotId)),
    )
        .prop_map(
            |(
                (time, time_nsec, hostname, username, (uid, gid)),
                paths,
                tags,
                excludes,
                parent,
                tree,
                s,
                program_version,
                app,
                databases,
                original,
            )| {
                Snapshot {
                    time,
                    time_nsec,
                    hostname,
                    username,
                    uid,
                    gid,
                    paths,
                    tags,
                    excludes,
                    parent,
                    tree,
                    summary: Summary {
                        files_new: s[0],
                        files_changed: s[1],
                        files_unchanged: s[2],
                        dirs: s[3],
                        others: s[4],
                        bytes_read: s[5],
                        total_size: s[6],
                        blobs_added: s[7],
                        bytes_added: s[8],
                        bytes_stored: s[9],
                        duration_ms: s[10],
                    },
                    program_version,
                    app,
                    databases,
                    original,
                }
            },
        )
}

/// Any application record.
fn app_info() -> impl Strategy<Value = AppInfo> {
    (
        text(),
        prop::collection::vec(any::<u8>(), 0..20),
        prop::collection::vec(
            (
                text(),
                text(),
                prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 0..3),
            )
                .prop_map(|(name, kind, paths)| ComponentInfo { name, kind, paths }),
            0..4,
        ),
        prop::option::of((prop::option::of(text()), text(), any::<bool>()).prop_map(
            |(branch, commit, dirty)| GitInfo {
                branch,
                commit,
                dirty,
            },
        )),
    )
        .prop_map(|(name, root, components, git)| AppInfo {
            name,
            root,
            components,
            git,
        })
}

/// Any database record.
fn database_info() -> impl Strategy<Value = DatabaseInfo> {
    (
        prop::collection::vec(any::<u8>(), 0..20),
        any::<u32>(),
        prop::collection::vec(
            (text(), any::<u64>()).prop_map(|(name, rows)| TableRows { name, rows }),
            0..4,
        ),
    )
        .prop_map(|(path, page_size, tables)| DatabaseInfo {
            path,
            page_size,
            tables,
        })
}

/// Chunker parameters within FastCDC's limits (min ≤ avg ≤ max, all even).
fn chunker() -> impl Strategy<Value = ChunkerParams> {
    (32u32..=(1 << 19))
        .prop_flat_map(|min| (Just(min), min.max(128)..=(1 << 21)))
        .prop_flat_map(|(min, avg)| (Just(min), Just(avg), avg.max(512)..=(1 << 23), 0u8..=3))
        .prop_map(|(min, avg, max, normalization)| ChunkerParams {
            min_size: min * 2,
            avg_size: avg * 2,
            max_size: max * 2,
            normalization,
        })
}

fn config() -> impl Strategy<Value = Config> {
    (
        any::<[u8; 32]>(),
        any::<bool>(),
        chunker(),
        0i32..=22,
        (1u32 << 20)..=(1 << 30),
    )
        .prop_map(
            |(repo_id, encrypted, chunker, compression_level, pack_target_size)| Config {
                repo_id,
                encryption: if encrypted {
                    Encryption::XChaCha20Poly1305
                } else {
                    Encryption::None
                },
                chunker,
                compression_level,
                pack_target_size,
            },
        )
}

/// Pack entries laid out in order with gaps; returns them and their end.
fn pack_entries() -> impl Strategy<Value = (Vec<PackEntry>, u64)> {
    prop::collection::vec(
        (
            blob_id(),
            any::<bool>(),
            any::<bool>(),
            any::<u8>(),
            any::<u16>(),
            any::<u32>(),
        ),
        0..12,
    )
    .prop_map(|raw| {
        let mut at = 0u32;
        let entries = raw
            .into_iter()
            .map(|(id, tree, zstd, gap, length, raw_length)| {
                let offset = at + u32::from(gap);
                at = offset + u32::from(length);
                PackEntry {
                    id,
                    kind: if tree { BlobKind::Tree } else { BlobKind::Data },
                    compression: if zstd {
                        Compression::Zstd
                    } else {
                        Compression::None
                    },
                    offset,
                    length: u32::from(length),
                    raw_length,
                }
            })
            .collect();
        (entries, u64::from(at))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn tree_round_trips(tree in sorted_tree()) {
        let bytes = tree.encode();
        prop_assert_eq!(Tree::decode(&bytes).ok(), Some(tree.clone()));
        if tree.nodes.len() >= 2 {
            let mut swapped = tree.clone();
            swapped.nodes.swap(0, 1);
            prop_assert!(Tree::decode(&swapped.encode()).is_err(), "unsorted tree accepted");
            let mut repeated = tree.clone();
            repeated.nodes[1].name = repeated.nodes[0].name.clone();
            prop_assert!(Tree::decode(&repeated.encode()).is_err(), "repeated name accepted");
        }
        if let Some(n) = tree.nodes.iter().position(|n| !n.xattrs.is_empty()) {
            let mut t = tree.clone();
            let first = t.nodes[n].xattrs[0].clone();
            t.nodes[n].xattrs.insert(1, Xattr { value: vec![0xff; 9], ..first });
            prop_assert!(Tree::decode(&t.encode()).is_err(), "repeated attribute name accepted");
        }
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0"] {
            if let Some(first) = tree.nodes.first() {
                let mut t = tree.clone();
                t.nodes[0] = Node { name: bad.to_vec(), ..first.clone() };
                prop_assert!(Tree::decode(&t.encode()).is_err(), "name {:?} accepted", bad);
            }
        }
    }

    #[test]
    fn snapshot_round_trips(snap in snapshot()) {
        let crypto = internals::test_crypto(false);
        let file = harness::snapshot_file(&snap);
        prop_assert_eq!(internals::snapshot_file(&crypto, &file), Ok(snap.clone()));
        let _ = snap.timestamp();
        // The same object is neither an index nor readable with another key.
        let mut as_index = b"CAIRNIDX".to_vec();
        as_index.extend_from_slice(&file[8..]);
        prop_assert!(internals::index_file(&crypto, &as_index).is_err());
        prop_assert!(internals::snapshot_file(&internals::test_crypto(true), &file).is_err());
    }

    #[test]
    fn config_round_trips(config in config(), mac in any::<[u8; 32]>(), bad_level in 23i32..) {
        let bytes = harness::config_file(&config, &mac);
        let raw = internals::config(&bytes).expect("valid config decodes");
        prop_assert_eq!(&raw.config, &config);
        prop_assert_eq!(raw.mac, mac);
        prop_assert_eq!(raw.signed.len() + 32, bytes.len());
        prop_assert_eq!(internals::peek_version(&bytes).ok(), Some(cairn::FORMAT_VERSION));
        let bad = Config { compression_level: bad_level, ..config };
        prop_assert!(internals::config(&harness::config_file(&bad, &mac)).is_err());
    }

    #[test]
    fn key_file_round_trips(
        created in any::<i64>(),
        hostname in text(),
        username in text(),
        master in prop::collection::vec(any::<u8>(), 0..128),
    ) {
        let key = KeyFile { created, hostname, username, kdf: None, master };
        let (id, bytes) = key.encode();
        prop_assert_eq!(id, KeyId::hash_of(&bytes));
        prop_assert_eq!(KeyFile::decode(&bytes), Ok(key));
    }

    #[test]
    fn pack_header_round_trips((entries, end) in pack_entries(), slack in 0u64..1000) {
        let plain = harness::encode(&entries);
        let header = internals::pack_header(&plain, end + slack).expect("valid header decodes");
        prop_assert_eq!(&header.entries, &entries);
        if end > 0 {
            prop_assert!(internals::pack_header(&plain, end - 1).is_err(), "blob past the header accepted");
        }
    }

    #[test]
    fn pack_round_trips(blobs in prop::collection::vec(
        (prop::collection::vec(any::<u8>(), 0..64), any::<bool>()), 0..6)
    ) {
        let blobs: Vec<_> = blobs
            .into_iter()
            .map(|(b, tree)| (b, if tree { BlobKind::Tree } else { BlobKind::Data }))
            .collect();
        let (pack, entries) = harness::sample_pack(&blobs);
        let header = internals::pack(&internals::test_crypto(false), &pack).expect("pack opens");
        prop_assert_eq!(header.entries, entries);
        // The trailer agrees with the file it ends.
        let size = pack.len() as u64;
        let len = internals::pack_trailer(&pack[pack.len() - 12..], size).expect("trailer");
        prop_assert!(internals::pack_trailer(&pack[pack.len() - 12..], u64::from(len) + 11).is_err());
    }

    #[test]
    fn index_round_trips(packs in prop::collection::vec(
        (any::<[u8; 32]>(), any::<u64>(), pack_entries()), 0..4)
    ) {
        let record = IndexFileRecord {
            packs: packs
                .into_iter()
                .map(|(id, size, (entries, _))| IndexPackRecord { id: PackId(id), size, entries })
                .collect(),
        };
        prop_assert_eq!(harness::decode_index_file(&harness::index_file(&record)), Ok(record));
    }
}
