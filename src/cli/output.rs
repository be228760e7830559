//! Output: text or JSON on stdout, messages on stderr, progress bars only on
//! a terminal; the `outln!` macros, escaping for the terminal, and the
//! formats every command shares (sizes, local times). Declared first in
//! `cli/mod.rs` with `#[macro_use]`, so that every command file can use
//! the macros.

/// A line of human output on stdout, as `println!` but: when the reader of
/// standard output has gone (`cairn snapshots | head`), the command ends
/// quietly instead of panicking; any other write error ends it with exit
/// code 1. Control characters other than newlines and tabs (a tag or a
/// file name holding a terminal escape sequence) are shown escaped, never
/// sent to the terminal.
macro_rules! outln {
    () => {
        outln_raw!()
    };
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let line = format!($($arg)*);
        if let Err(e) = writeln!(std::io::stdout().lock(), "{}", $crate::cli::output::terminal_safe(&line)) {
            $crate::cli::output::stdout_failed(&e);
        }
    }};
}

/// A line on stdout as it is: for JSON, whose strings are escaped already.
macro_rules! outln_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            $crate::cli::output::stdout_failed(&e);
        }
    }};
}

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::exit;
use super::password;

/// Where and how a command prints.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    /// JSON on stdout.
    pub json: bool,
    /// No informational messages.
    pub quiet: bool,
}

impl Out {
    pub fn new(json: bool, quiet: bool) -> Self {
        Self { json, quiet }
    }

    /// An informational message on stderr (suppressed by --quiet).
    pub fn info(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}", terminal_safe(msg.as_ref()));
        }
    }

    /// A warning on stderr (always shown).
    pub fn warn(&self, msg: impl AsRef<str>) {
        eprintln!("cairn: warning: {}", terminal_safe(msg.as_ref()));
    }

    /// Prints a value as pretty JSON on stdout. For a repository on object
    /// storage, an object gains `"requests"`: the requests made so far.
    pub fn print_json<T: Serialize>(&self, value: &T) -> anyhow::Result<()> {
        if let Some(n) = password::requests_made() {
            let mut value = serde_json::to_value(value)?;
            if let Some(map) = value.as_object_mut() {
                map.insert("requests".to_owned(), n.into());
            }
            outln_raw!("{}", serde_json::to_string_pretty(&value)?);
        } else {
            outln_raw!("{}", serde_json::to_string_pretty(value)?);
        }
        Ok(())
    }

    /// A spinner on stderr when it is a terminal and output is for a
    /// person (hidden otherwise), counting bytes when `bytes` is set.
    pub fn progress(&self, bytes: bool, what: &str) -> ProgressBar {
        if self.json || self.quiet || !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let template = if bytes {
            "{spinner} {msg} {bytes} {binary_bytes_per_sec} {elapsed}"
        } else {
            "{spinner} {msg} {elapsed}"
        };
        let bar = ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(what.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }
}

/// Adapts an indicatif bar (counting bytes) to the library's callbacks.
pub struct BarProgress(pub ProgressBar);

impl cairn::Progress for BarProgress {
    fn bytes(&self, n: u64) {
        self.0.inc(n);
    }
}

/// `1.5 GiB` style sizes.
pub fn size(n: u64) -> String {
    indicatif::BinaryBytes(n).to_string()
}

/// `s` with every control character but newline and tab escaped
/// (`\u{1b}`), for a terminal.
pub fn terminal_safe(s: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Raw bytes (a file name, which need not be UTF-8) with each ASCII
/// control character but tab escaped as [`terminal_safe`] does; other
/// bytes as they are.
pub fn terminal_safe_bytes(b: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    // UTF-8 text: every control character, C1 ones included.
    if let Ok(text) = std::str::from_utf8(b) {
        return match terminal_safe(text) {
            std::borrow::Cow::Borrowed(_) => std::borrow::Cow::Borrowed(b),
            std::borrow::Cow::Owned(t) => std::borrow::Cow::Owned(t.into_bytes()),
        };
    }
    let unsafe_byte = |c: &u8| c.is_ascii_control() && *c != b'\t';
    if !b.iter().any(unsafe_byte) {
        return std::borrow::Cow::Borrowed(b);
    }
    let mut out = Vec::with_capacity(b.len() + 8);
    for c in b {
        if unsafe_byte(c) {
            out.extend(char::from(*c).escape_default().to_string().bytes());
        } else {
            out.push(*c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Ends the process after standard output failed: quietly with success
/// for a closed pipe (the reader had enough), with an error otherwise.
pub fn stdout_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(i32::from(exit::OK));
    }
    eprintln!("cairn: error: cannot write to standard output: {e}");
    std::process::exit(i32::from(exit::ERROR));
}

/// A time on the local clock, to the second, as every table shows it.
pub fn local_time(ts: jiff::Timestamp) -> String {
    ts.to_zoned(jiff::tz::TimeZone::system())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// Prints the audit events `repo` could not write, as warnings.
pub fn report_audit_errors(out: &Out, repo: &cairn::Repository) {
    for e in repo.take_audit_errors() {
        out.warn(e);
    }
}
