//! A snapshot's database as a file: [`database_of`] finds a database of a
//! snapshot, [`materialize`] writes its image to a temporary directory
//! ([`DbImage`], deleted with the value), each chunk checked against its
//! id as it is read. Export and restore from a snapshot read that file.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;

use crate::error::{Error, Hint, Result};
use crate::format::snapshot::{DatabaseInfo, Snapshot};
use crate::repo::Repository;

/// The database `db` (its path in the snapshot; a missing leading `/` is
/// added) of `snap`, or its only one.
///
/// # Errors
/// [`Error::NotFound`] when the snapshot has no captured database or `db`
/// is none of them; [`Error::Ambiguous`] when `db` is not given and there
/// are several (each listing the databases there are).
pub fn database_of<'a>(snap: &'a Snapshot, db: Option<&[u8]>) -> Result<&'a DatabaseInfo> {
    let list = || {
        snap.databases
            .iter()
            .map(|d| String::from_utf8_lossy(&d.path).into_owned())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if snap.databases.is_empty() {
        return Err(
            Error::NotFound("this snapshot holds no captured SQLite database".into())
                .hinted(Hint::NameRawDatabase),
        );
    }
    match db {
        Some(path) => {
            let mut slashed = b"/".to_vec();
            slashed.extend_from_slice(path);
            snap.databases
                .iter()
                .find(|d| d.path == path || d.path == slashed)
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "this snapshot has no captured database {}; it has: {}",
                        String::from_utf8_lossy(path),
                        list()
                    ))
                })
        }
        None => match snap.databases.as_slice() {
            [only] => Ok(only),
            _ => Err(Error::Ambiguous(format!(
                "this snapshot has {} databases: {}",
                snap.databases.len(),
                list()
            ))
            .hinted(Hint::ChooseDatabase)),
        },
    }
}

/// A snapshot's database image written out to a temporary directory,
/// deleted with the value.
#[derive(Debug)]
pub struct DbImage {
    dir: tempfile::TempDir,
    /// What the snapshot records about the database.
    pub info: DatabaseInfo,
}

impl DbImage {
    /// The image's file.
    #[must_use]
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("image.db")
    }

    /// The database's path in the snapshot, for messages.
    #[must_use]
    pub fn name(&self) -> String {
        String::from_utf8_lossy(&self.info.path).into_owned()
    }
}

/// Writes the image of database `db` of `snap` (`None`: its only captured
/// database) to a
/// temporary directory (`$TMPDIR`), each chunk checked against its id as
/// it is read, under a shared repository lock.
///
/// `db` may also name a file the snapshot does not list as a captured
/// database (a snapshot from before databases were recorded, or a backup
/// with `--sqlite off`), used if it has SQLite's header; there are no
/// stored row counts to check against then (`info.tables` is empty).
///
/// # Errors
/// [`Error::NotFound`] or [`Error::Ambiguous`] when `db` names no captured
/// database or `None` leaves a choice of several; [`Error::Invalid`] for a file `db` names that is
/// not a SQLite database; [`Error::NotFound`] when a captured database's
/// path is not in the snapshot's tree; [`Error::Locked`]; damaged or
/// missing data, including a captured database whose image is not one;
/// [`Error::TargetWrite`] when the temporary file cannot be written.
pub fn materialize(repo: &Repository, snap: &Snapshot, db: Option<&[u8]>) -> Result<DbImage> {
    let _held = repo.lock(false, "read a database")?;
    let listed = database_of(snap, db);
    let captured = listed.is_ok();
    let (info, node) = match (listed, db) {
        (Ok(info), _) => {
            let node =
                crate::repo::walk::find_node(repo, &snap.tree, &info.path)?.ok_or_else(|| {
                    Error::NotFound("the snapshot's root is not a database".to_owned())
                })?;
            (info.clone(), node)
        }
        (Err(listed), Some(path)) => match crate::repo::walk::find_node(repo, &snap.tree, path) {
            Ok(Some(node))
                if !matches!(
                    node.kind,
                    crate::format::tree::NodeKind::File { .. }
                        | crate::format::tree::NodeKind::ListedFile { .. }
                ) =>
            {
                return Err(Error::invalid(format!(
                    "{} in this snapshot is a {}, not a SQLite database",
                    String::from_utf8_lossy(path),
                    crate::ops::inspect::EntryType::of(&node.kind).name()
                )));
            }
            Ok(Some(node)) => (
                DatabaseInfo {
                    path: path.to_vec(),
                    ..DatabaseInfo::default()
                },
                node,
            ),
            // Not in the snapshot either: the list of captured databases
            // is the more useful answer.
            _ => return Err(listed),
        },
        (Err(e), None) => return Err(e),
    };
    let dir = tempfile::Builder::new()
        .prefix(".cairn-db-")
        .tempdir()
        .map_err(|e| Error::target_write(&std::env::temp_dir(), e))?;
    let image = DbImage { dir, info };
    let path = image.path();
    let file = File::create(&path).map_err(|e| Error::target_write(&path, e))?;
    let mut w = BufWriter::new(file);
    crate::ops::inspect::dump(repo, &image.info.path, &node, &mut w).map_err(|e| match e {
        Error::Output { source } => Error::target_write(&path, source),
        other => other,
    })?;
    drop(
        w.into_inner()
            .map_err(|e| Error::target_write(&path, e.into_error()))?,
    );
    // Opened again: the file written is write-only.
    let file = File::open(&path).map_err(|e| Error::target_write(&path, e))?;
    if crate::apps::sqlite::sniff(&file).is_none() {
        let msg = format!("{} in this snapshot is not a SQLite database", image.name());
        // A file named with `db` may be anything; an image backup
        // captured is a database, unless the stored data is not what it
        // wrote.
        return Err(if captured {
            Error::Damaged(msg)
        } else {
            Error::invalid(msg)
        });
    }
    Ok(image)
}
