//! The `cairn` command: parses arguments, calls the library, prints, and
//! maps failures to documented exit codes.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
