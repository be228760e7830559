//! What cairn knows about applications and their databases: SQLite capture
//! and continuous WAL following (`sqlite/`), database export, import and
//! table restore (`db/`), and application profiles from `cairn.toml`
//! (`profile/`). What `ops/` must treat specially reaches it through the
//! special-file hook that `sqlite/` implements; [`engine`] is the backup
//! and restore every door calls, with that hook installed.
//!
//! May use: `ops/`, `repo/`, `format/`, `storage/`. Must not use
//! `daemon/` or `server/`, which call into this layer.

pub mod db;
pub mod engine;
pub mod profile;
pub mod sqlite;
