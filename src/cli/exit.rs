//! Exit codes, documented in the README.

/// Success.
pub const OK: u8 = 0;
/// A fatal error: nothing (more) was done.
pub const ERROR: u8 = 1;
/// Bad command-line usage (clap's code).
pub const USAGE: u8 = 2;
/// The command ran but found damage or could not finish every item:
/// verify found problems, restore skipped damaged files.
pub const INCOMPLETE: u8 = 3;
/// The repository does not exist.
pub const NO_REPO: u8 = 10;
/// The repository's format version is not supported by this build.
pub const VERSION: u8 = 11;
/// Wrong or missing password.
pub const PASSWORD: u8 = 12;
/// Another process holds a conflicting repository lock.
pub const LOCKED: u8 = 13;
/// `status`: a source is stale (older than --max-age), its last
/// attempt failed, or free space is below --min-free.
pub const STALE: u8 = 14;
