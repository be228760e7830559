//! Output: text or JSON on stdout, messages on stderr, progress bars only on
//! a terminal.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

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
            eprintln!("{}", super::terminal_safe(msg.as_ref()));
        }
    }

    /// A warning on stderr (always shown).
    pub fn warn(&self, msg: impl AsRef<str>) {
        eprintln!("cairn: warning: {}", super::terminal_safe(msg.as_ref()));
    }

    /// Prints a value as pretty JSON on stdout. For a repository on object
    /// storage, an object gains `"requests"`: the requests made so far.
    pub fn print_json<T: Serialize>(&self, value: &T) -> anyhow::Result<()> {
        if let Some(n) = super::password::requests_made() {
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
