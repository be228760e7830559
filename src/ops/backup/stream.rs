//! Byte streams a backup stores as one file: standard input, or the output
//! of a command such as `pg_dump` (see [`crate::ops::backup::backup_stream`] and
//! [`crate::ops::backup::backup_command`]).
//!
//! A stream has no size, mtime or owner of its own, and it can fail in a
//! way a file cannot: a command may exit non-zero after writing part of a
//! dump. So a [`Source`] is opened once the backup holds its lock and is
//! closed, with its verdict, before the snapshot is written; a failed close
//! fails the backup and no snapshot names the partial stream.
//!
//! A command runs without a shell, its standard input inherited. Its
//! standard error is passed through to this process's standard error as
//! it arrives (a dump's progress or warnings stay visible), and its last
//! lines are kept to repeat in the error when it fails.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::process::{Child, ChildStderr, ChildStdout, Stdio};
use std::thread::JoinHandle;

use crate::error::{Error, Result};

/// Lines of a failed command's standard error repeated in the error.
const TAIL_LINES: usize = 10;

/// Longest line kept for the error (the rest of it is still passed through).
const TAIL_LINE_BYTES: usize = 500;

/// A byte stream to store as one file.
pub(crate) trait Source: Read + Send {
    /// Starts the stream; called once the backup holds its lock.
    ///
    /// # Errors
    /// When it cannot be started (a command that does not exist).
    fn open(&mut self) -> Result<()>;

    /// Ends the stream: `stored` says whether everything read was stored.
    /// An error here means the stream is not to be trusted (the command
    /// failed), so the backup must not be saved.
    ///
    /// # Errors
    /// [`Error::Stream`] when the command failed.
    fn close(&mut self, stored: bool) -> Result<()>;

    /// What the stream is, for messages: `standard input`, or
    /// ``command `pg_dump appdb` ``.
    fn describe(&self) -> String;
}

/// Any reader (standard input, a file, a buffer), which cannot fail on
/// close.
pub(crate) struct ReaderSource<R> {
    pub(crate) reader: R,
    pub(crate) what: String,
}

impl<R: Read> Read for ReaderSource<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

impl<R: Read + Send> Source for ReaderSource<R> {
    fn open(&mut self) -> Result<()> {
        Ok(())
    }

    fn close(&mut self, _stored: bool) -> Result<()> {
        Ok(())
    }

    fn describe(&self) -> String {
        self.what.clone()
    }
}

/// A command whose standard output is the stream.
pub(crate) struct CommandSource {
    argv: Vec<OsString>,
    /// The directory it runs in; the current one when `None`.
    dir: Option<std::path::PathBuf>,
    child: Option<Child>,
    stdout: Option<ChildStdout>,
    stderr: Option<JoinHandle<Vec<String>>>,
}

impl CommandSource {
    /// The command `argv` (program, then its arguments).
    ///
    /// # Errors
    /// [`Error::Invalid`] when `argv` is empty.
    pub(crate) fn new(argv: Vec<OsString>) -> Result<Self> {
        if argv.is_empty() {
            return Err(Error::invalid(
                "no command to back up the output of: give it after `--`, for example `cairn backup --stdin-from-command app.sql -- pg_dump appdb`",
            ));
        }
        Ok(Self {
            argv,
            dir: None,
            child: None,
            stdout: None,
            stderr: None,
        })
    }

    /// Runs the command in `dir` instead of the current directory.
    pub(crate) fn in_dir(mut self, dir: Option<std::path::PathBuf>) -> Self {
        self.dir = dir;
        self
    }

    fn shown(&self) -> String {
        self.argv
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn failed(&self, problem: String) -> Error {
        Error::Stream {
            stream: self.describe(),
            problem,
        }
    }
}

impl Read for CommandSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.stdout {
            Some(out) => out.read(buf),
            None => Ok(0),
        }
    }
}

impl Source for CommandSource {
    fn open(&mut self) -> Result<()> {
        let Some((program, args)) = self.argv.split_first() else {
            return Err(self.failed("is empty".to_owned()));
        };
        let mut command = crate::secrets::command(program);
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        let mut child = command
            .args(args)
            .stdin(Stdio::inherit())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                self.failed(format!(
                    "could not be started: {e}; check that the program is installed and on PATH"
                ))
            })?;
        self.stdout = child.stdout.take();
        self.stderr = child.stderr.take().map(forward_stderr);
        self.child = Some(child);
        Ok(())
    }

    fn close(&mut self, stored: bool) -> Result<()> {
        // Closing our end first lets a command still writing (because the
        // backup failed early) end with SIGPIPE instead of blocking.
        drop(self.stdout.take());
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if !stored {
            // The backup failed already; the command's outcome no longer
            // matters. Killing fails only if it has exited.
            let _ = child.kill();
        }
        let status = child.wait();
        let tail = self
            .stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        let status = status.map_err(|e| self.failed(format!("could not be waited for: {e}")))?;
        if !stored || status.success() {
            return Ok(());
        }
        let mut problem = format!("failed ({status})");
        if tail.is_empty() {
            problem.push_str(" and wrote nothing to stderr");
        } else {
            problem.push_str("; its stderr ended with: ");
            problem.push_str(&tail.join(" / "));
        }
        Err(self.failed(problem))
    }

    fn describe(&self) -> String {
        format!("command `{}`", self.shown())
    }
}

impl Drop for CommandSource {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.close(false);
        }
    }
}

/// Copies a command's standard error to ours as it arrives, keeping its
/// last [`TAIL_LINES`] lines for an error message.
fn forward_stderr(mut pipe: ChildStderr) -> JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut tail: VecDeque<String> = VecDeque::new();
        let mut line: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 8192];
        let mut keep = |line: &mut Vec<u8>| {
            let text = String::from_utf8_lossy(line).trim_end().to_owned();
            line.clear();
            if text.is_empty() {
                return;
            }
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(text);
        };
        loop {
            let n = match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let data = buf.get(..n).unwrap_or_default();
            // Our stderr going away must not stop the command.
            let _ = io::stderr().write_all(data);
            for &b in data {
                if b == b'\n' {
                    keep(&mut line);
                } else if line.len() < TAIL_LINE_BYTES {
                    line.push(b);
                }
            }
        }
        keep(&mut line);
        tail.into_iter().collect()
    })
}
