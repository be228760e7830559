//! Integration tests: the library against real directories, and the `cairn`
//! binary as a user runs it. `verify` is the oracle after every mutation.

// Test helpers outside #[test] functions may panic on setup failures.
#![allow(clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod integration {
    pub mod util;

    mod app;
    mod audit;
    mod chunklist;
    mod cli;
    mod copy;
    mod corruption;
    mod crash;
    mod daemon;
    mod dbexport;
    mod decoders;
    mod filescache;
    mod forget;
    mod inspect;
    mod layers;
    mod lifecycle;
    mod notify;
    mod options;
    mod pipeline;
    mod pitr;
    mod roundtrip;
    mod s3;
    // `cairn serve` and the library's `server` module exist only with the
    // `server` feature.
    #[cfg(feature = "server")]
    mod serve;
    mod sqlite;
    mod stdin;
    mod torture;
}
