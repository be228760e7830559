//! Support code for cairn's fuzz targets.
//!
//! The harnesses live in `harness.rs`, which the integration tests also
//! compile (`tests/integration/decoders.rs` includes it with `#[path]`), so
//! every crash a fuzzer finds replays through exactly the same code as a
//! regression test.

pub mod harness;
