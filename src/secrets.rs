//! Keeping cairn's secrets out of the processes it starts.
//!
//! cairn runs other programs: dump and restore commands of a profile,
//! `backup --stdin-from-command`, the command `cairn run` wraps, password
//! commands, notify commands, `git`. None of them needs the repository's
//! password, and any of them may log its environment, pass it on, or be
//! compromised. Every such child is made with [`command`], which leaves
//! out [`SECRET_VARS`]; a test checks no other `Command::new` exists but
//! the daemon's own watcher processes (cairn itself, which needs them).

use std::ffi::OsStr;
use std::process::Command;

/// The environment variables holding cairn's secrets.
pub const SECRET_VARS: [&str; 2] = ["CAIRN_PASSWORD", "CAIRN_FROM_PASSWORD"];

/// A command for `program` whose environment is cairn's without
/// `SECRET_VARS`.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for var in SECRET_VARS {
        cmd.env_remove(var);
    }
    cmd
}

#[cfg(test)]
mod tests {
    /// Every process cairn starts goes through [`super::command`]: a new
    /// `Command::new` elsewhere would hand the password to a child.
    #[test]
    fn every_child_process_is_made_without_the_secrets() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut stack = vec![src];
        let mut offenders = Vec::new();
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read src") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") || path.ends_with("secrets.rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("read");
                // Test modules may start what they like.
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                for (nr, line) in code.lines().enumerate() {
                    let allowed = line.contains("cairn's own watcher");
                    if line.contains("Command::new(") && !allowed {
                        offenders.push(format!("{}:{}", path.display(), nr + 1));
                    }
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "child processes made without secrets::command: {offenders:?}"
        );
    }
}
