//! The operations on an open repository: back up, restore, verify, forget,
//! prune, copy, inspect, and report statistics and status.
//!
//! Each operation takes a [`Repository`](crate::repo::Repository) and
//! options and returns a typed outcome; none of them prints, knows a
//! terminal or speaks HTTP. The protections of a restore that replaces
//! live data live here ([`protect`]) so that every door (CLI, API,
//! daemon, profile) gets them by calling the operation.
//!
//! May use: `repo/`, `format/`, `storage/`. Must not use `apps/`,
//! `daemon/`, `server/`: what is special about applications and databases
//! reaches the operations through hooks that `apps/` implements (the
//! special-file hook of [`backup::special`], which the walker and
//! [`protect`] call). The doors call backup and restore through
//! `apps/engine.rs`, which installs the SQLite hook; the restore here
//! takes its hook as a required parameter, so no caller can drop it.

pub mod backup;
pub mod copy;
pub mod forget;
pub mod inspect;
pub mod protect;
pub mod prune;
pub mod report;
pub mod restore;
pub mod stats;
pub mod status;
pub mod verify;

#[cfg(test)]
mod tests;
