//! What the command line adds to a library error when it prints it: advice
//! naming cairn's own flags and commands (`--retry-lock`, `cairn unlock`).
//! The library's messages state what failed and nothing more, since a
//! program using the library or a client of the HTTP API has no such
//! flags. The advice is chosen here by variant, never by message text, and
//! every place that prints a library error goes through [`describe`]: the
//! final `cairn: error:` line, the daemon's log and run records, the
//! watcher's warnings.

use std::fmt;

/// `e`'s message followed by the command line's advice for it, if any.
pub fn describe(e: &cairn::Error) -> String {
    match advice(e) {
        Some(advice) => format!("{e}{advice}"),
        None => e.to_string(),
    }
}

/// The advice for `e`, with the separator that joins it to the message.
fn advice(e: &cairn::Error) -> Option<String> {
    use cairn::Error as E;
    let restore =
        |path: &str| format!("use `cairn restore SNAPSHOT --target DIR --include {path}`");
    Some(match e {
        E::RepoNotFound { .. } => {
            ": create one with `cairn init`, or point --repo / CAIRN_REPO at an existing one".into()
        }
        E::NoPassword { .. } => {
            ": set CAIRN_PASSWORD, or pass --password-file or --password-command".into()
        }
        E::SourceRead { .. } => "; fix its permissions or leave it out with --exclude".into(),
        E::Locked { .. } => "; wait for it, pass --retry-lock DURATION to wait here, or if that process is gone run `cairn unlock`".into(),
        E::Listen { .. } => "; choose another --listen address or port".into(),
        // "dir" is a directory's entry type name (as `ls --json` gives it).
        E::NotAFile { path, entry } if *entry == "dir" => {
            format!(": to get a directory, {}", restore(path))
        }
        E::NotAFile { path, .. } => format!("; {}", restore(path)),
        _ => return None,
    })
}

/// A library error with advice that only the command calling the library
/// can give, because it knows which of its options gave the input (the
/// `--tokens FILE` that cannot be read). Printed as the error's message,
/// its advice by variant, then this advice; its exit code is the error's.
#[derive(Debug)]
pub struct Advised {
    /// The library's error.
    pub error: cairn::Error,
    /// The advice, with the separator that joins it to the message.
    advice: &'static str,
}

impl Advised {
    /// `error` with `advice` (starting with its separator, such as `; `).
    // Only `serve` gives advice of its own so far.
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub fn new(error: cairn::Error, advice: &'static str) -> Self {
        Self { error, advice }
    }
}

impl fmt::Display for Advised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", describe(&self.error), self.advice)
    }
}

impl std::error::Error for Advised {
    // The error's own cause, not the error: its message is this one's.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.error)
    }
}
