//! Harnesses for cairn's decoders of on-disk data, shared by the fuzz targets
//! (`fuzz/fuzz_targets/*.rs`) and the regression tests in
//! `tests/integration/decoders.rs`, which compiles this file with `#[path]`.
//!
//! Each harness takes arbitrary bytes and feeds them to one decoder. It never
//! panics by itself: a panic means the decoder panicked, or it accepted bytes
//! that break its contract. cairn's codec gives every record exactly one
//! encoding, so a decoded record must re-encode to the very bytes it came
//! from (which also gives `decode(encode(x)) == x`).
//!
//! The sealed formats (pack headers, index files, snapshots) are reached with
//! the unencrypted mode of [`cairn::internals::test_crypto`], in which a sealed
//! object is `nonce (24 zero bytes) ‖ plaintext ‖ tag (16)`. Random bytes
//! never carry a valid tag, so the harnesses seal their input (or re-seal a
//! pack's header) with that key first: fuzzed bytes get past authentication
//! to the record decoders.

use std::sync::OnceLock;

use cairn::internals::{self, Crypto, Domain};
use cairn::{AppInfo, ComponentInfo, DatabaseInfo, GitInfo, TableRows, Tree, Xattr};
use cairn::{BlobId, BlobKind, ChunkerParams, Compression, Config, Encryption, FORMAT_VERSION};
use cairn::{KeyFile, KeyId, Node, NodeKind, PackEntry, PackId, Snapshot, SnapshotId, Summary};
use serde::Serialize;

/// Every fuzz target; `fuzz_<name>` is the cargo-fuzz target and the
/// directory under `fuzz/corpus/` and `fuzz/artifacts/`.
pub const TARGETS: [&str; 13] = [
    "fuzz_config",
    "fuzz_key",
    "fuzz_pack_header",
    "fuzz_pack",
    "fuzz_index",
    "fuzz_tree",
    "fuzz_snapshot",
    "fuzz_files_cache",
    "fuzz_chunk_list",
    "fuzz_profile",
    "fuzz_audit",
    "fuzz_wal",
    "fuzz_segment",
];

/// Runs the harness of fuzz target `target` on `data`; `false` for an
/// unknown target.
pub fn run(target: &str, data: &[u8]) -> bool {
    match target {
        "fuzz_config" => config(data),
        "fuzz_key" => key(data),
        "fuzz_pack_header" => pack_header(data),
        "fuzz_pack" => pack(data),
        "fuzz_index" => index(data),
        "fuzz_tree" => tree(data),
        "fuzz_snapshot" => snapshot(data),
        "fuzz_files_cache" => files_cache(data),
        "fuzz_chunk_list" => chunk_list(data),
        "fuzz_profile" => profile(data),
        "fuzz_audit" => audit(data),
        "fuzz_wal" => wal(data),
        "fuzz_segment" => segment(data),
        _ => return false,
    }
    true
}

// ---------------------------------------------------------------------------
// The on-disk layout, as `store-format.md` and the crate's sources give it.

const CONFIG_MAGIC: &[u8; 8] = b"CAIRNCFG";
const KEY_MAGIC: &[u8; 8] = b"CAIRNKEY";
const INDEX_MAGIC: &[u8; 8] = b"CAIRNIDX";
const SNAPSHOT_MAGIC: &[u8; 8] = b"CAIRNSNP";
const FILES_CACHE_MAGIC: &[u8; 8] = b"CAIRNFCA";
const FILES_CACHE_VERSION: u32 = 2;
const PACK_MAGIC: &[u8; 8] = b"CAIRNPAK";
const PACK_TRAILER_LEN: usize = 12;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// `test_crypto(false)`: the fixed test key, unencrypted mode.
fn plain_crypto() -> &'static Crypto {
    static CRYPTO: OnceLock<Crypto> = OnceLock::new();
    CRYPTO.get_or_init(|| internals::test_crypto(false))
}

/// `test_crypto(true)`: the fixed test key, XChaCha20-Poly1305.
fn encrypted_crypto() -> &'static Crypto {
    static CRYPTO: OnceLock<Crypto> = OnceLock::new();
    CRYPTO.get_or_init(|| internals::test_crypto(true))
}

/// cairn's codec: bincode 2, little-endian, fixed-width integers, 256 MiB
/// limit (`src/format/codec.rs`).
fn codec() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<{ 256 * 1024 * 1024 }>()
}

/// Encodes a record as cairn's codec does.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, codec()).unwrap_or_default()
}

fn u32_le(n: usize) -> [u8; 4] {
    u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes()
}

/// Seals `plain` in `domain` with `test_crypto(false)` (which needs no
/// randomness, so cannot fail).
pub fn seal(domain: Domain, plain: &[u8]) -> Vec<u8> {
    plain_crypto().seal(domain, plain).unwrap_or_default()
}

/// `magic ‖ sealed(domain, plain)`: an index or snapshot file.
fn sealed_file(magic: &[u8; 8], domain: Domain, plain: &[u8]) -> Vec<u8> {
    let mut out = magic.to_vec();
    out.extend_from_slice(&seal(domain, plain));
    out
}

/// Where the sealed header of a pack lies, if its trailer is well formed.
fn pack_header_range(pack: &[u8]) -> Option<std::ops::Range<usize>> {
    let trailer_at = pack.len().checked_sub(PACK_TRAILER_LEN)?;
    let (len_bytes, magic) = pack.get(trailer_at..)?.split_at(4);
    if magic != PACK_MAGIC.as_slice() {
        return None;
    }
    let len = u32::from_le_bytes(len_bytes.try_into().ok()?) as usize;
    Some(trailer_at.checked_sub(len)?..trailer_at)
}

/// The plaintext of a sealed object in unencrypted mode (tag not checked).
fn plain_body(sealed: &[u8]) -> Option<&[u8]> {
    sealed.get(NONCE_LEN..sealed.len().checked_sub(TAG_LEN)?)
}

/// Blobs lie in order, without overlap, before `header_at`.
fn assert_entries_fit(entries: &[PackEntry], header_at: u64) {
    let mut end = 0u64;
    for e in entries {
        let start = u64::from(e.offset);
        assert!(start >= end, "blob at {start} overlaps the previous one");
        end = start + u64::from(e.length);
        assert!(end <= header_at, "blob ends at {end}, after the header");
    }
}

// ---------------------------------------------------------------------------
// Harnesses.

/// `fuzz_config`: `data` is a whole config file. It is also decoded as the
/// body of a config file with a valid header and a zero MAC.
pub fn config(data: &[u8]) {
    check_config_file(data);
    check_config_file(&config_file_with_body(data, &[0; 32]));
}

fn config_file_with_body(body: &[u8], mac: &[u8; 32]) -> Vec<u8> {
    let mut f = CONFIG_MAGIC.to_vec();
    f.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    f.extend_from_slice(&u32_le(body.len()));
    f.extend_from_slice(body);
    f.extend_from_slice(mac);
    f
}

/// A config file as cairn writes it, with `mac` as its MAC.
pub fn config_file(config: &Config, mac: &[u8; 32]) -> Vec<u8> {
    internals::encode_config(config, |_| *mac)
}

fn check_config_file(bytes: &[u8]) {
    let peeked = internals::peek_version(bytes);
    let Ok(raw) = internals::config(bytes) else {
        return;
    };
    assert!(matches!(peeked, Ok(FORMAT_VERSION)), "version disagrees");
    let body_end = raw.signed.len();
    assert_eq!(bytes.get(..body_end), Some(raw.signed.as_slice()));
    assert_eq!(bytes.get(body_end..), Some(raw.mac.as_slice()));
    assert_eq!(
        config_file(&raw.config, &raw.mac),
        bytes,
        "config is not canonical"
    );
    let again = internals::config(&config_file(&raw.config, &raw.mac));
    assert_eq!(again.ok().map(|r| r.config), Some(raw.config));
}

/// `fuzz_key`: `data` is a whole key file; it is also decoded with the
/// magic put in front. Unwraps the master key when that is cheap.
pub fn key(data: &[u8]) {
    check_key_file(data);
    let mut with_magic = KEY_MAGIC.to_vec();
    with_magic.extend_from_slice(data);
    check_key_file(&with_magic);
}

fn check_key_file(bytes: &[u8]) {
    let Ok(key) = KeyFile::decode(bytes) else {
        return;
    };
    let (id, encoded) = key.encode();
    assert_eq!(encoded, bytes, "key file is not canonical");
    assert_eq!(id, KeyId::hash_of(bytes));
    assert_eq!(KeyFile::decode(&encoded).as_ref(), Ok(&key));
    // Without a KDF this decodes the master key; with one it runs argon2,
    // which is only affordable with tiny parameters.
    let cheap = key
        .kdf
        .as_ref()
        .is_none_or(|k| k.memory_kib <= 256 && k.iterations <= 2 && k.parallelism <= 4);
    if cheap {
        let _ = key.open(b"password");
    }
}

/// `fuzz_pack_header`: `trailer (12) ‖ file_size (u64 LE) ‖ plaintext`.
/// The trailer is parsed against `file_size`; the plaintext is decoded as
/// the pack's header, placed where the trailer says (or at `file_size` when
/// the trailer is rejected).
pub fn pack_header(data: &[u8]) {
    let Some((trailer, rest)) = data.split_at_checked(PACK_TRAILER_LEN) else {
        let _ = internals::pack_trailer(data, data.len() as u64);
        return;
    };
    let Some((size, plain)) = rest.split_at_checked(8) else {
        let _ = internals::pack_trailer(trailer, rest.len() as u64);
        return;
    };
    let file_size = u64::from_le_bytes(size.try_into().unwrap_or_default());
    let header_at = match internals::pack_trailer(trailer, file_size) {
        Ok(len) => {
            let room = file_size.checked_sub(PACK_TRAILER_LEN as u64);
            assert!(
                room.is_some_and(|r| u64::from(len) <= r),
                "trailer accepted a header of {len} bytes in a {file_size}-byte pack"
            );
            file_size - PACK_TRAILER_LEN as u64 - u64::from(len)
        }
        Err(_) => file_size,
    };
    check_header_plain(plain, header_at);
}

fn check_header_plain(plain: &[u8], header_at: u64) {
    let Ok(header) = internals::pack_header(plain, header_at) else {
        return;
    };
    assert_entries_fit(&header.entries, header_at);
    // A header is a struct holding one vector: it encodes as that vector.
    let encoded = encode(&header.entries);
    assert_eq!(encoded, plain, "pack header is not canonical");
    let again = internals::pack_header(&encoded, header_at);
    assert_eq!(again.ok().map(|h| h.entries), Some(header.entries));
}

/// `fuzz_pack`: `data` is a whole pack file. It is read as is, in both
/// modes, then again after its header is re-sealed with the test key (same
/// length: the body between nonce and tag is taken as the plaintext), so
/// that a damaged header still reaches the header decoder.
pub fn pack(data: &[u8]) {
    let _ = internals::pack(encrypted_crypto(), data);
    check_pack(data);
    if let Some(range) = pack_header_range(data) {
        let sealed = data.get(range.clone()).unwrap_or_default();
        if let Some(body) = plain_body(sealed) {
            let mut fixed = data.to_vec();
            fixed.splice(range, seal(Domain::PackHeader, body));
            check_pack(&fixed);
        }
    }
}

fn check_pack(pack: &[u8]) {
    let Ok(header) = internals::pack(plain_crypto(), pack) else {
        return;
    };
    let range = pack_header_range(pack);
    assert!(range.is_some(), "pack without a valid trailer was accepted");
    let range = range.unwrap_or_default();
    assert_entries_fit(&header.entries, range.start as u64);
    let body = pack.get(range).and_then(plain_body);
    assert_eq!(
        body,
        Some(encode(&header.entries).as_slice()),
        "pack header is not canonical"
    );
}

/// An index file as cairn encodes it (`index::IndexFile` is not public).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexFileRecord {
    /// Packs described.
    pub packs: Vec<IndexPackRecord>,
}

/// One pack of an [`IndexFileRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexPackRecord {
    /// The pack.
    pub id: PackId,
    /// Its size.
    pub size: u64,
    /// Its blobs.
    pub entries: Vec<PackEntry>,
}

/// Decodes an index file with the test key, as the public record.
pub fn decode_index_file(bytes: &[u8]) -> Result<IndexFileRecord, String> {
    let file = internals::index_file(plain_crypto(), bytes)?;
    Ok(IndexFileRecord {
        packs: file
            .packs
            .into_iter()
            .map(|p| IndexPackRecord {
                id: p.id,
                size: p.size,
                entries: p.entries,
            })
            .collect(),
    })
}

/// An index file sealed with the test key.
pub fn index_file(record: &IndexFileRecord) -> Vec<u8> {
    sealed_file(INDEX_MAGIC, Domain::Index, &encode(record))
}

/// `fuzz_index`: `data` is the plaintext of an index file; it is sealed
/// with the test key and decoded. `data` is also decoded as a whole file.
pub fn index(data: &[u8]) {
    let _ = internals::index_file(encrypted_crypto(), data);
    let _ = decode_index_file(data);
    let file = sealed_file(INDEX_MAGIC, Domain::Index, data);
    // Sealing binds the domain: the same object is no snapshot.
    let mut as_snapshot = SNAPSHOT_MAGIC.to_vec();
    as_snapshot.extend_from_slice(file.get(INDEX_MAGIC.len()..).unwrap_or_default());
    assert!(internals::snapshot_file(plain_crypto(), &as_snapshot).is_err());
    let Ok(record) = decode_index_file(&file) else {
        return;
    };
    assert_eq!(encode(&record), data, "index file is not canonical");
    assert_eq!(decode_index_file(&index_file(&record)), Ok(record));
}

/// `fuzz_tree`: `data` is a tree blob's plaintext.
pub fn tree(data: &[u8]) {
    let Ok(tree) = Tree::decode(data) else {
        return;
    };
    let encoded = tree.encode();
    assert_eq!(encoded, data, "tree is not canonical");
    for node in &tree.nodes {
        assert_eq!(tree.find(&node.name), Some(node));
    }
    let mut sorted = tree.clone();
    sorted.sort();
    assert_eq!(sorted, tree, "a decoded tree is already sorted");
    assert_eq!(Tree::decode(&encoded).ok(), Some(tree));
}

/// A snapshot file sealed with the test key.
pub fn snapshot_file(snap: &Snapshot) -> Vec<u8> {
    sealed_file(SNAPSHOT_MAGIC, Domain::Snapshot, &encode(snap))
}

/// `fuzz_snapshot`: `data` is the plaintext of a snapshot file; it is sealed
/// with the test key and decoded. `data` is also decoded as a whole file.
pub fn snapshot(data: &[u8]) {
    let _ = internals::snapshot_file(encrypted_crypto(), data);
    let _ = internals::snapshot_file(plain_crypto(), data);
    let file = sealed_file(SNAPSHOT_MAGIC, Domain::Snapshot, data);
    let Ok(snap) = internals::snapshot_file(plain_crypto(), &file) else {
        return;
    };
    assert_eq!(encode(&snap), data, "snapshot is not canonical");
    let _ = snap.timestamp();
    let _ = snap.display_paths();
    let again = internals::snapshot_file(plain_crypto(), &snapshot_file(&snap));
    assert_eq!(again, Ok(snap));
}

/// `fuzz_chunk_list`: `data` is the plaintext of a list blob
/// (store-format.md §11.1). A list that decodes encodes back to `data`.
pub fn chunk_list(data: &[u8]) {
    if let Ok(ids) = internals::chunk_list(data) {
        assert!(!ids.is_empty() && ids.len() <= 256);
        assert_eq!(
            internals::encode_chunk_list(&ids),
            data,
            "list is not canonical"
        );
    }
}

/// A files cache as cairn writes it (store-format.md §20).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FilesCacheRecord {
    /// Snapshots the entries name.
    pub snapshots: Vec<SnapshotId>,
    /// Directories, sorted by key.
    pub entries: Vec<FilesCacheEntryRecord>,
    /// The repository's index files when it was written, sorted.
    pub index_files: Vec<[u8; 32]>,
}

/// One directory of a [`FilesCacheRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FilesCacheEntryRecord {
    /// BLAKE3 of the path, first 16 bytes.
    pub key: [u8; 16],
    /// Digest of the entries' stats.
    pub state: [u8; 32],
    /// The tree stored.
    pub tree: BlobId,
    /// Trust time, seconds.
    pub trusted_before: i64,
    /// Index into `snapshots`.
    pub snapshot: u32,
    /// Backups since last seen.
    pub age: u32,
}

/// A files cache file sealed with the test key.
pub fn files_cache_file(plain: &[u8]) -> Vec<u8> {
    let mut out = FILES_CACHE_MAGIC.to_vec();
    out.extend_from_slice(&FILES_CACHE_VERSION.to_le_bytes());
    out.extend_from_slice(&seal(Domain::FilesCache, plain));
    out
}

/// `fuzz_files_cache`: `data` is the plaintext of a files cache; it is
/// sealed with the test key and checked. `data` is also checked as a whole
/// file.
pub fn files_cache(data: &[u8]) {
    let _ = internals::files_cache(encrypted_crypto(), data);
    let _ = internals::files_cache(plain_crypto(), data);
    let _ = internals::files_cache(plain_crypto(), &files_cache_file(data));
}

/// `fuzz_profile`: `data` is the text of an application profile
/// (`cairn.toml`), parsed and checked as if it were `/srv/app/cairn.toml`.
pub fn profile(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = cairn::Profile::parse(text, std::path::Path::new("/srv/app/cairn.toml"));
    }
}

/// `fuzz_audit`: `data` is the plaintext of an audit event, sealed with
/// the test key into an event file and decoded (the name never matches,
/// so a decoded event is then refused by the name check); `data` is also
/// decoded as a whole file.
pub fn audit(data: &[u8]) {
    let id = cairn::AuditId([0; 32]);
    let _ = internals::audit_file(
        plain_crypto(),
        &id,
        &sealed_file(b"CAIRNAUD", Domain::Audit, data),
    );
    let _ = internals::audit_file(plain_crypto(), &id, data);
    let _ = internals::audit_file(encrypted_crypto(), &id, data);
}

/// `fuzz_segment`: `data` is the plaintext of a WAL segment. It is sealed
/// into a segment file and decoded under a name that cannot match, and as
/// a whole file; when it decodes as a record, that record is written as
/// cairn writes it and decoded under its own name, which runs the
/// segment's checks, and must then come back unchanged (and re-encode to
/// `data` when `data` was exactly one record).
pub fn segment(data: &[u8]) {
    let zero = cairn::SegmentId([0; 32]);
    let _ = internals::segment_file(
        plain_crypto(),
        &zero,
        &sealed_file(b"CAIRNWAL", Domain::Wal, data),
    );
    let _ = internals::segment_file(plain_crypto(), &zero, data);
    let _ = internals::segment_file(encrypted_crypto(), &zero, data);
    let Ok((seg, used)) = bincode::serde::decode_from_slice::<cairn::Segment, _>(data, codec())
    else {
        return;
    };
    if used == data.len() {
        assert_eq!(encode(&seg), data, "segment is not canonical");
    }
    let Ok((id, file)) = internals::encode_segment_file(plain_crypto(), &seg) else {
        return;
    };
    if let Ok(back) = internals::segment_file(plain_crypto(), &id, &file) {
        assert_eq!(back, seg, "segment does not round-trip");
    }
}

/// A WAL segment with every field set: two transactions.
pub fn sample_segment() -> cairn::Segment {
    cairn::Segment {
        host: "host".into(),
        db: b"/srv/shop/data.db".to_vec(),
        base: SnapshotId([0x51; 32]),
        base_time: 1_800_000_000_000_000_000,
        base_txn: 40,
        seq: 3,
        prev: Some(cairn::SegmentId([0x52; 32])),
        from: 1_800_000_100_000_000_000,
        until: 1_800_000_101_000_000_000,
        page_size: 4096,
        first_txn: 77,
        txns: vec![
            cairn::SegmentTxn {
                time: 1_800_000_100_200_000_000,
                db_pages: 9,
                pages: vec![1, 9, 4],
            },
            cairn::SegmentTxn {
                time: 1_800_000_100_900_000_000,
                db_pages: 8,
                pages: vec![1],
            },
        ],
        data: vec![BlobId([0x53; 32])],
        end: Some("the watcher was stopped".into()),
    }
}

/// An audit event with every field set.
pub fn sample_audit_event() -> cairn::AuditEvent {
    cairn::AuditEvent {
        time: 1_800_000_000,
        time_nsec: 7,
        host: "host".into(),
        actor: "token:ops".into(),
        action: "restore".into(),
        target: "component db of app shop".into(),
        ok: false,
        detail: "refused: open in process 12".into(),
        prev: Some(cairn::AuditId([0x18; 32])),
    }
}

/// A profile with every kind of component and every key.
pub const SAMPLE_PROFILE: &str = r#"app = "shop"
repo = "../backups"
password_file = "/etc/cairn/shop.pass"

[components.db]
sqlite = "prisma/dev.db"

[components.code]
paths = ["."]
exclude = ["backups/", "coverage/"]
default_excludes = true

[components.config]
paths = [".env", "package.json"]

[components.pg]
dump = ["pg_dump", "--clean", "shop"]
restore = ["psql", "-v", "ON_ERROR_STOP=1", "shop"]
name = "shop.sql"

[retention]
keep_last = 10
keep_daily = 7
keep_within = "2w"
keep_tags = ["release"]
"#;

/// A valid files cache: two directories from two snapshots.
pub fn sample_files_cache() -> FilesCacheRecord {
    FilesCacheRecord {
        snapshots: vec![SnapshotId([0x31; 32]), SnapshotId([0x32; 32])],
        entries: vec![
            FilesCacheEntryRecord {
                key: [0x01; 16],
                state: [0x02; 32],
                tree: BlobId([0x03; 32]),
                trusted_before: 1_795_000_000,
                snapshot: 0,
                age: 0,
            },
            FilesCacheEntryRecord {
                key: [0x0f; 16],
                state: [0x04; 32],
                tree: BlobId([0x05; 32]),
                trusted_before: 1_794_000_000,
                snapshot: 1,
                age: 7,
            },
        ],
        index_files: vec![[0x41; 32], [0x42; 32]],
    }
}

// ---------------------------------------------------------------------------
// Valid encodings: the seed corpus and the starting points of mutation tests.

/// A valid config.
pub fn sample_config() -> Config {
    Config {
        repo_id: [0x5a; 32],
        encryption: Encryption::XChaCha20Poly1305,
        chunker: ChunkerParams::default(),
        compression_level: 3,
        pack_target_size: 16 << 20,
    }
}

/// A key file's fields with their argon2 parameters (`crypto::KdfParams` is
/// not public).
#[derive(Serialize)]
struct KeyFileRecord {
    created: i64,
    hostname: String,
    username: String,
    kdf: Option<KdfRecord>,
    master: Vec<u8>,
}

#[derive(Serialize)]
struct KdfRecord {
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
    salt: [u8; 16],
}

/// `crypto::MasterKey`.
#[derive(Serialize)]
struct MasterKeyRecord {
    encryption: [u8; 32],
    id: [u8; 32],
    chunker_seed: u64,
}

/// A key file of an unencrypted repository: the master key in the clear.
pub fn sample_plain_key() -> KeyFile {
    KeyFile {
        created: 1_700_000_000,
        hostname: "host".into(),
        username: "user".into(),
        kdf: None,
        master: encode(&MasterKeyRecord {
            encryption: [7; 32],
            id: [9; 32],
            chunker_seed: 42,
        }),
    }
}

/// A password-protected key file with the smallest argon2 parameters (its
/// wrapped key is random bytes, so no password opens it).
pub fn sample_kdf_key_bytes() -> Vec<u8> {
    let mut out = KEY_MAGIC.to_vec();
    out.extend_from_slice(&encode(&KeyFileRecord {
        created: 1_700_000_000,
        hostname: "host".into(),
        username: "user".into(),
        kdf: Some(KdfRecord {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
            salt: [3; 16],
        }),
        master: vec![0x11; 24 + 72 + 16],
    }));
    out
}

/// Blob plaintexts for sample packs.
fn sample_blobs() -> Vec<(Vec<u8>, BlobKind)> {
    let mut tree = sample_tree();
    tree.sort();
    vec![
        (b"hello, world\n".to_vec(), BlobKind::Data),
        (vec![0xab; 300], BlobKind::Data),
        (tree.encode(), BlobKind::Tree),
    ]
}

/// A pack holding `blobs`, sealed with the test key (blobs are stored
/// uncompressed).
pub fn sample_pack(blobs: &[(Vec<u8>, BlobKind)]) -> (Vec<u8>, Vec<PackEntry>) {
    let mut out = Vec::new();
    let mut entries = Vec::new();
    for (plain, kind) in blobs {
        let sealed = seal(Domain::Blob, plain);
        entries.push(PackEntry {
            id: plain_crypto().blob_id(plain),
            kind: *kind,
            compression: Compression::None,
            offset: u32::try_from(out.len()).unwrap_or(u32::MAX),
            length: u32::try_from(sealed.len()).unwrap_or(u32::MAX),
            raw_length: u32::try_from(plain.len()).unwrap_or(u32::MAX),
        });
        out.extend_from_slice(&sealed);
    }
    let header = seal(Domain::PackHeader, &encode(&entries));
    out.extend_from_slice(&header);
    out.extend_from_slice(&u32_le(header.len()));
    out.extend_from_slice(PACK_MAGIC);
    (out, entries)
}

/// A directory with one entry of every kind.
pub fn sample_tree() -> Tree {
    let node = |name: &[u8], kind: NodeKind| Node {
        name: name.to_vec(),
        kind,
        mode: 0o644,
        uid: 1000,
        gid: 1000,
        size: 0,
        mtime: 1_700_000_000,
        mtime_nsec: 123_456_789,
        ctime: 1_700_000_001,
        ctime_nsec: 5,
        inode: 77,
        device: 2049,
        links: 1,
        xattrs: Vec::new(),
    };
    let mut file = node(
        b"file.txt",
        NodeKind::File {
            content: vec![BlobId([1; 32]), BlobId([2; 32])],
        },
    );
    file.size = 13;
    file.xattrs = vec![
        Xattr {
            name: b"user.a".to_vec(),
            value: b"1".to_vec(),
        },
        Xattr {
            name: b"user.b".to_vec(),
            value: Vec::new(),
        },
    ];
    Tree {
        nodes: vec![
            node(b"block", NodeKind::BlockDevice { rdev: 0x0801 }),
            node(
                b"listed",
                NodeKind::ListedFile {
                    list: BlobId([0x77; 32]),
                    depth: 2,
                },
            ),
            node(b"char", NodeKind::CharDevice { rdev: 0x0103 }),
            node(
                b"dir",
                NodeKind::Dir {
                    subtree: BlobId([3; 32]),
                },
            ),
            node(b"fifo", NodeKind::Fifo),
            file,
            node(
                b"link",
                NodeKind::Symlink {
                    target: b"../elsewhere".to_vec(),
                },
            ),
            node(b"sock", NodeKind::Socket),
            node(b"\xff\xfenot-utf8", NodeKind::File { content: vec![] }),
        ],
    }
}

/// A snapshot with every field set.
pub fn sample_snapshot() -> Snapshot {
    Snapshot {
        time: 1_700_000_000,
        time_nsec: 999_999_999,
        hostname: "host".into(),
        username: "user".into(),
        uid: 1000,
        gid: 1000,
        paths: vec![b"/home/user".to_vec(), b"/etc/\xff".to_vec()],
        tags: vec!["daily".into()],
        excludes: vec!["*.tmp".into()],
        parent: Some(SnapshotId([4; 32])),
        tree: BlobId([5; 32]),
        summary: Summary {
            files_new: 1,
            files_changed: 2,
            files_unchanged: 3,
            dirs: 4,
            others: 5,
            bytes_read: 6,
            total_size: 7,
            blobs_added: 8,
            bytes_added: 9,
            bytes_stored: 10,
            duration_ms: 11,
        },
        program_version: "0.1.0".into(),
        app: Some(AppInfo {
            name: "shop".into(),
            root: b"/home/user/shop".to_vec(),
            components: vec![ComponentInfo {
                name: "db".into(),
                kind: "sqlite".into(),
                paths: vec![b"/home/user/shop/dev.db".to_vec()],
            }],
            git: Some(GitInfo {
                branch: Some("main".into()),
                commit: "0123456789abcdef0123456789abcdef01234567".into(),
                dirty: true,
            }),
        }),
        databases: vec![DatabaseInfo {
            path: b"/home/user/shop/dev.db".to_vec(),
            page_size: 4096,
            tables: vec![TableRows {
                name: "users".into(),
                rows: 3,
            }],
        }],
        original: Some(SnapshotId([6; 32])),
    }
}

/// An index describing two packs.
pub fn sample_index() -> IndexFileRecord {
    let (pack, entries) = sample_pack(&sample_blobs());
    IndexFileRecord {
        packs: vec![
            IndexPackRecord {
                id: PackId::hash_of(&pack),
                size: pack.len() as u64,
                entries,
            },
            IndexPackRecord {
                id: PackId([6; 32]),
                size: 52,
                entries: Vec::new(),
            },
        ],
    }
}

/// Valid inputs for every target: `(target, file name, bytes)`. The file
/// names start with `seed-` (see `fuzz/.gitignore`).
pub fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut plain_config = sample_config();
    plain_config.encryption = Encryption::None;
    plain_config.compression_level = 0;
    plain_config.pack_target_size = 1 << 20;
    plain_config.chunker = ChunkerParams {
        min_size: 64,
        avg_size: 256,
        max_size: 1024,
        normalization: 3,
    };
    let (pack, entries) = sample_pack(&sample_blobs());
    let (empty_pack, _) = sample_pack(&[]);
    let header_seed = |pack: &[u8], entries: &[PackEntry]| {
        let mut seed = pack
            .get(pack.len().saturating_sub(PACK_TRAILER_LEN)..)
            .unwrap_or_default()
            .to_vec();
        seed.extend_from_slice(&(pack.len() as u64).to_le_bytes());
        seed.extend_from_slice(&encode(&entries));
        seed
    };
    let mut minimal_snapshot = sample_snapshot();
    minimal_snapshot.paths = vec![b"/".to_vec()];
    minimal_snapshot.tags.clear();
    minimal_snapshot.excludes.clear();
    minimal_snapshot.parent = None;
    vec![
        (
            "fuzz_config",
            "seed-encrypted",
            config_file(&sample_config(), &[0xcc; 32]),
        ),
        (
            "fuzz_config",
            "seed-unencrypted",
            config_file(&plain_config, &[0; 32]),
        ),
        ("fuzz_key", "seed-plain", sample_plain_key().encode().1),
        ("fuzz_key", "seed-argon2", sample_kdf_key_bytes()),
        (
            "fuzz_pack_header",
            "seed-three",
            header_seed(&pack, &entries),
        ),
        (
            "fuzz_pack_header",
            "seed-empty",
            header_seed(&empty_pack, &[]),
        ),
        ("fuzz_pack", "seed-three", pack),
        ("fuzz_pack", "seed-empty", empty_pack),
        ("fuzz_index", "seed-two", encode(&sample_index())),
        (
            "fuzz_index",
            "seed-empty",
            encode(&IndexFileRecord { packs: Vec::new() }),
        ),
        ("fuzz_tree", "seed-every-kind", {
            let mut t = sample_tree();
            t.sort();
            t.encode()
        }),
        ("fuzz_tree", "seed-empty", Tree::default().encode()),
        ("fuzz_snapshot", "seed-full", encode(&sample_snapshot())),
        ("fuzz_snapshot", "seed-minimal", encode(&minimal_snapshot)),
        (
            "fuzz_files_cache",
            "seed-two",
            encode(&sample_files_cache()),
        ),
        (
            "fuzz_files_cache",
            "seed-empty",
            encode(&FilesCacheRecord {
                snapshots: Vec::new(),
                entries: Vec::new(),
                index_files: Vec::new(),
            }),
        ),
        (
            "fuzz_chunk_list",
            "seed-three",
            [[0x11u8; 32], [0x22; 32], [0x33; 32]].concat(),
        ),
        (
            "fuzz_profile",
            "seed-every-key",
            SAMPLE_PROFILE.as_bytes().to_vec(),
        ),
        ("fuzz_audit", "seed-event", encode(&sample_audit_event())),
        ("fuzz_wal", "seed-two-transactions", sample_wal()),
        (
            "fuzz_segment",
            "seed-two-transactions",
            encode(&sample_segment()),
        ),
    ]
}

/// A write-ahead log of 512-byte pages holding two transactions (pages 1
/// and 2, then page 3) and the first frame of a third, unfinished one.
#[must_use]
#[allow(clippy::big_endian_bytes)]
pub fn sample_wal() -> Vec<u8> {
    let header = internals::WalHeader {
        big_endian: false,
        page_size: 512,
        checkpoint_seq: 3,
        salt: [0x0102_0304, 0x0506_0708],
        checksum: [0, 0],
    };
    let mut out = header.encode().to_vec();
    let mut chain = internals::WalHeader::parse(&out).map_or([0, 0], |h| h.checksum);
    for (page, commit) in [(1u32, 0u32), (2, 2), (3, 3), (4, 0)] {
        let mut frame = Vec::new();
        for word in [page, commit, header.salt[0], header.salt[1]] {
            frame.extend_from_slice(&word.to_be_bytes());
        }
        let image = vec![u8::try_from(page).unwrap_or(0); 512];
        chain = internals::wal_checksum(false, chain, frame.get(..8).unwrap_or_default());
        chain = internals::wal_checksum(false, chain, &image);
        frame.extend_from_slice(&chain[0].to_be_bytes());
        frame.extend_from_slice(&chain[1].to_be_bytes());
        out.extend_from_slice(&frame);
        out.extend_from_slice(&image);
    }
    out
}

/// `fuzz_wal`: `data` is an SQLite write-ahead log, read as `cairn watch`
/// reads one: the header, then every frame, whole and in two pieces split
/// at a point taken from the data; both readings must agree.
pub fn wal(data: &[u8]) {
    let Ok(header) = internals::WalHeader::parse(data) else {
        return;
    };
    let body = data.get(32..).unwrap_or_default();
    let mut whole = internals::WalCursor::new(header);
    let all = whole.read(body).len();
    let split = usize::from(data.get(33).copied().unwrap_or(0)) * 97 % (body.len() + 1);
    let mut pieces = internals::WalCursor::new(header);
    let mut found = pieces.read(&body[..split]).len();
    let from = usize::try_from(pieces.offset()).unwrap_or(usize::MAX) - 32;
    found += pieces.read(body.get(from..).unwrap_or_default()).len();
    assert_eq!(found, all);
    assert_eq!(pieces, whole);
}
