//! Exit codes, documented in the README, and the table from kinds of
//! library failure to them.

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

/// The exit code of each kind of library failure: the one table of them
/// (the README's list). Chosen by kind, never by a message's text.
pub fn of_kind(kind: cairn::ErrorKind) -> u8 {
    use cairn::ErrorKind as K;
    match kind {
        K::NoRepository => NO_REPO,
        K::UnsupportedVersion => VERSION,
        K::Password => PASSWORD,
        K::Locked => LOCKED,
        K::Damaged => INCOMPLETE,
        // This process's own lock ran out (the machine slept): running
        // again is the fix, not waiting for another process, so it is not
        // `LOCKED`.
        K::LockLost => ERROR,
        // Another process has the database open or holds its lock: the
        // database's application, not a cairn process, so not `LOCKED`
        // (whose advice is `cairn unlock`).
        K::Busy => ERROR,
        K::InvalidInput
        | K::NotFound
        | K::Ambiguous
        | K::AlreadyExists
        | K::Storage
        | K::Io
        | K::Database
        | K::Stream
        | K::Notify
        | K::Internal => ERROR,
        // A kind added to the library later: a plain failure until it is
        // given a code of its own here.
        _ => ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn::ErrorKind as K;

    /// The README's table of exit codes, kind by kind.
    #[test]
    fn kinds_map_to_the_documented_codes() {
        let cases = [
            (K::NoRepository, 10),
            (K::UnsupportedVersion, 11),
            (K::Password, 12),
            (K::Locked, 13),
            (K::LockLost, 1),
            (K::Busy, 1),
            (K::Damaged, 3),
            (K::InvalidInput, 1),
            (K::NotFound, 1),
            (K::Ambiguous, 1),
            (K::AlreadyExists, 1),
            (K::Storage, 1),
            (K::Io, 1),
            (K::Database, 1),
            (K::Stream, 1),
            (K::Notify, 1),
            (K::Internal, 1),
        ];
        for (kind, code) in cases {
            assert_eq!(of_kind(kind), code, "{kind:?}");
        }
    }
}
