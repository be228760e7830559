//! `cairn completions SHELL` and `cairn man`: shell completion scripts
//! (clap_complete) and roff man pages (clap_mangen), generated from the
//! same definitions as the command line itself, which `cli/mod.rs` hands
//! in as a [`clap::Command`].

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use clap_complete::Shell;

use super::exit;
use super::output::{Out, stdout_failed};

#[derive(Debug, Args)]
#[command(after_help = "\
Install, for example:
  bash:  cairn completions bash > ~/.local/share/bash-completion/completions/cairn
  zsh:   cairn completions zsh > ~/.zfunc/_cairn   (with fpath+=(~/.zfunc) before compinit)
  fish:  cairn completions fish > ~/.config/fish/completions/cairn.fish")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Without --dir, prints the main page (cairn.1) to stdout: `cairn man | man -l -`.
With --dir, writes cairn.1 and one page per command (cairn-backup.1, ...) there, for
example into ~/.local/share/man/man1.")]
pub struct ManArgs {
    /// Write cairn.1 and one page per command into this directory
    /// (created if missing) instead of printing the main page.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// `cairn completions`: the script for `cmd`, the whole command line.
pub fn completions(a: &CompletionsArgs, mut cmd: clap::Command) -> Result<u8> {
    let mut buf = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "cairn", &mut buf);
    write_stdout(&buf)?;
    Ok(exit::OK)
}

/// `cairn man`: the pages of `cmd`, the whole command line.
pub fn man(out: &Out, a: &ManArgs, cmd: clap::Command) -> Result<u8> {
    match &a.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| {
                format!(
                    "cannot create the man page directory {}: choose a writable --dir",
                    dir.display()
                )
            })?;
            clap_mangen::generate_to(cmd, dir).with_context(|| {
                format!(
                    "cannot write man pages into {}: choose a writable --dir",
                    dir.display()
                )
            })?;
            out.info(format!("man pages written to {}", dir.display()));
        }
        None => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut buf)
                .context("cannot render the man page")?;
            write_stdout(&buf)?;
        }
    }
    Ok(exit::OK)
}

/// Writes generated text to stdout, ending quietly on a closed pipe.
fn write_stdout(buf: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(buf).and_then(|()| stdout.flush()) {
        stdout_failed(&e);
    }
    Ok(())
}
