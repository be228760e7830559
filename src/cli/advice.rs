//! What the command line adds to a library error when it prints it: advice
//! naming cairn's own flags and commands (`--retry-lock`, `cairn unlock`,
//! `--force`, `--target DIR`).
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
        E::InUse { .. } => ", or pass --force".into(),
        E::NotADatabase { .. } => "; fix the path in the profile or --sqlite-db".into(),
        E::NotAppSnapshot { in_place: true, .. } => {
            " (taken with `cairn snap`): restore it with --target DIR".into()
        }
        E::NotAppSnapshot { .. } => " (taken with `cairn snap`)".into(),
        E::NoComponent {
            component,
            sibling: Some(sibling),
            ..
        } => format!(": restore {} --component {component}", sibling.short()),
        E::InPlaceDirectory { .. } => "; restore it with --target DIR and copy what you need".into(),
        E::Hinted { error, hint } => {
            return Some(format!("{}{}", advice(error).unwrap_or_default(), hint_advice(hint)));
        }
        E::NoProfile { .. } => {
            "; run cairn in the application's directory or pass --profile FILE".into()
        }
        E::NotADumpCommand { snapshot, .. } => format!(
            ": restore the dump by hand with `cairn dump {} /NAME`",
            snapshot.short()
        ),
        E::NoRestoreCommand { snapshot, dump, .. } => format!(
            ", or load the dump by hand from `cairn dump {} {dump}`",
            snapshot.short()
        ),
        _ => return None,
    })
}

/// How to change the command line to get past an error the library gave
/// with a [`cairn::Hint`], with the separator that joins it to the message.
fn hint_advice(hint: &cairn::Hint) -> String {
    use cairn::Hint as H;
    match hint {
        H::ChooseHost => ": choose one with --host".into(),
        H::Overwrite => ": pass --overwrite to replace it (it is replaced atomically), or restore to another file".into(),
        H::NameRawDatabase => ": name a database stored as a plain file (`backup --sqlite off`, or a snapshot from before databases were recorded) with --db PATH".into(),
        H::ChooseDatabase => "; choose one with --db PATH".into(),
        H::DropExisting => "; pass --drop-existing to replace them".into(),
        H::IgnoreForeignKeys { parent } => {
            format!("; restore {parent} too, or pass --ignore-foreign-keys")
        }
        H::ChooseTable => ": choose one with --table, or write one file per table with --output DIR".into(),
        H::ExportWithSchema => format!(
            ", or export with --output DIR, which writes {} too",
            cairn::CSV_SCHEMA_FILE
        ),
        H::KeepRules => ": give one or more --keep-* rules (see `cairn forget --help`)".into(),
        H::TakeLock => "; run it without --no-lock".into(),
        _ => String::new(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines the command line printed when the library's messages
    /// still named its flags: the message and the advice together give
    /// them byte for byte.
    #[test]
    fn advice_completes_the_messages_as_they_were() {
        let id = cairn::SnapshotId([0xab; 32]);
        let other = cairn::SnapshotId([0xcd; 32]);
        let cases = [
            (
                cairn::Error::InUse {
                    path: "/srv/app.db".into(),
                    users: "process 42 (node)".into(),
                },
                "/srv/app.db is open in process 42 (node): stop the application first (it would go on using the old database), or pass --force",
            ),
            (
                cairn::Error::NotADatabase {
                    path: "/srv/notes.txt".into(),
                    why: "opening: file is not a database".into(),
                },
                "/srv/notes.txt is named as a SQLite database but is not one (its header is not SQLite's: opening: file is not a database); fix the path in the profile or --sqlite-db",
            ),
            (
                cairn::Error::NotAppSnapshot {
                    snapshot: id,
                    in_place: true,
                },
                "snapshot abababab is not an application snapshot (taken with `cairn snap`): restore it with --target DIR",
            ),
            (
                cairn::Error::NotAppSnapshot {
                    snapshot: id,
                    in_place: false,
                },
                "snapshot abababab is not an application snapshot (taken with `cairn snap`)",
            ),
            (
                cairn::Error::NoComponent {
                    snapshot: id,
                    component: "notes".into(),
                    has: vec!["code".into(), "db".into()],
                    sibling: Some(other),
                },
                "snapshot abababab has no component 'notes'; it has: code, db; snapshot cdcdcdcd of the same application, taken with it, has it: restore cdcdcdcd --component notes",
            ),
            (
                cairn::Error::NoComponent {
                    snapshot: id,
                    component: "cache".into(),
                    has: vec!["code".into(), "db".into()],
                    sibling: None,
                },
                "snapshot abababab has no component 'cache'; it has: code, db",
            ),
            (
                cairn::Error::InPlaceDirectory {
                    path: "/srv/shop/src".into(),
                    snapshot: id,
                },
                "/srv/shop/src is a directory in snapshot abababab: in-place restore replaces files only; restore it with --target DIR and copy what you need",
            ),
            (
                cairn::Error::NotADumpCommand {
                    component: "notes".into(),
                    profile: "/srv/shop/cairn.toml".into(),
                    snapshot: id,
                },
                "component notes is no longer a dump command in /srv/shop/cairn.toml: restore the dump by hand with `cairn dump abababab /NAME`",
            ),
            (
                cairn::Error::NoRestoreCommand {
                    component: "notes".into(),
                    profile: "/srv/shop/cairn.toml".into(),
                    snapshot: id,
                    dump: "/notes.txt".into(),
                },
                "component notes has no `restore` command in /srv/shop/cairn.toml: add one (e.g. restore = [\"psql\", \"shop\"]), or load the dump by hand from `cairn dump abababab /notes.txt`",
            ),
            (
                cairn::Error::NoProfile {
                    component: "db".into(),
                },
                "component db is a database dump: restoring it runs the restore command of the application's cairn.toml; run cairn in the application's directory or pass --profile FILE",
            ),
            (
                cairn::Error::invalid("/srv/app.db exists").hinted(cairn::Hint::Overwrite),
                "/srv/app.db exists: pass --overwrite to replace it (it is replaced atomically), or restore to another file",
            ),
            (
                cairn::Error::Ambiguous("app.db was watched on several hosts (a, b)".into())
                    .hinted(cairn::Hint::ChooseHost),
                "app.db was watched on several hosts (a, b): choose one with --host",
            ),
            (
                cairn::Error::invalid("after the restore 1 row(s) of x would refer to missing rows; nothing was restored")
                    .hinted(cairn::Hint::IgnoreForeignKeys { parent: "users".into() }),
                "after the restore 1 row(s) of x would refer to missing rows; nothing was restored; restore users too, or pass --ignore-foreign-keys",
            ),
        ];
        for (e, line) in cases {
            assert_eq!(describe(&e), line);
            assert!(!e.to_string().contains("--"), "{e}");
            assert!(!e.to_string().contains("`cairn "), "{e}");
        }
    }
}
