//! A repository in a local directory.
//!
//! Writes go to a temporary file in the destination directory, are fsynced,
//! renamed over the final name and the directory is fsynced, so a crash leaves
//! either the old state or the complete new file. Temporary files start with a
//! dot and are never listed. Files are created 0600 and directories 0700.

use std::fs::{self, DirBuilder, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::{Backend, CONFIG_NAME, FileKind, StagedFile, Temporary, check_name};
use crate::error::{Error, Result};

/// A repository rooted at a local directory.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    root: PathBuf,
}

fn err(op: &'static str, path: &Path, source: io::Error) -> Error {
    Error::Backend {
        op,
        path: path.display().to_string(),
        source,
    }
}

impl LocalBackend {
    /// A backend for the directory `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The repository directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir_of(&self, kind: FileKind, name: &str) -> PathBuf {
        match kind {
            FileKind::Config => self.root.clone(),
            // Packs fan out over 256 directories by their first two hex
            // digits, so no directory grows beyond a few thousand entries.
            FileKind::Pack => self
                .root
                .join(kind.dir())
                .join(name.get(..2).unwrap_or("00")),
            _ => self.root.join(kind.dir()),
        }
    }

    fn path_of(&self, kind: FileKind, name: &str) -> Result<PathBuf> {
        check_name(kind, name)?;
        Ok(self.dir_of(kind, name).join(name))
    }

    fn mkdir(path: &Path) -> Result<()> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| err("mkdir", path, e))
    }

    fn sync_dir(path: &Path) -> Result<()> {
        File::open(path)
            .and_then(|d| d.sync_all())
            .map_err(|e| err("fsync", path, e))
    }

    /// The directories writers put temporary files in, relative to the
    /// root: the root (the config), each kind's directory and each
    /// `data/XX/`.
    fn temporary_dirs(&self) -> Result<Vec<String>> {
        let mut dirs = vec![String::new()];
        for kind in FileKind::DIRS {
            dirs.push(kind.dir().to_owned());
        }
        let data = self.root.join(FileKind::Pack.dir());
        match fs::read_dir(&data) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(|e| err("list", &data, e))?;
                    if let Some(name) = entry.file_name().to_str()
                        && is_fan_out(name)
                        && entry.file_type().is_ok_and(|t| t.is_dir())
                    {
                        dirs.push(format!("{}/{name}", FileKind::Pack.dir()));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err("list", &data, e)),
        }
        Ok(dirs)
    }

    fn list_dir(dir: &Path, out: &mut Vec<(String, u64)>) -> Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(err("list", dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| err("list", dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            let meta = match entry.metadata() {
                Ok(m) => m,
                // Deleted between listing and stat (by a concurrent writer
                // abandoning its packs, say): it is simply not there.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(err("stat", &entry.path(), e)),
            };
            if meta.is_file() {
                out.push((name.to_owned(), meta.len()));
            }
        }
        Ok(())
    }
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn create(&self) -> Result<()> {
        if self.root.join(CONFIG_NAME).exists() {
            return Err(Error::RepoExists {
                location: self.location(),
            });
        }
        Self::mkdir(&self.root)?;
        for kind in FileKind::DIRS {
            Self::mkdir(&self.root.join(kind.dir()))?;
        }
        Self::sync_dir(&self.root)?;
        if let Some(parent) = self.root.parent().filter(|p| !p.as_os_str().is_empty()) {
            Self::sync_dir(parent)?;
        }
        Ok(())
    }

    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        match kind {
            FileKind::Config => {
                let path = self.root.join(CONFIG_NAME);
                match fs::metadata(&path) {
                    Ok(m) => out.push((CONFIG_NAME.to_owned(), m.len())),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(err("stat", &path, e)),
                }
            }
            FileKind::Pack => {
                let dir = self.root.join(kind.dir());
                let subdirs = match fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
                    Err(e) => return Err(err("list", &dir, e)),
                };
                for sub in subdirs {
                    let sub = sub.map_err(|e| err("list", &dir, e))?;
                    if sub.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        Self::list_dir(&sub.path(), &mut out)?;
                    }
                }
            }
            _ => Self::list_dir(&self.root.join(kind.dir()), &mut out)?,
        }
        Ok(out)
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        let path = self.path_of(kind, name)?;
        fs::read(&path).map_err(|e| err("read", &path, e))
    }

    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let path = self.path_of(kind, name)?;
        let mut file = File::open(&path).map_err(|e| err("read", &path, e))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| err("read", &path, e))?;
        let len = usize::try_from(len)
            .map_err(|_| err("read", &path, io::Error::other("range too large")))?;
        let mut buf = vec![0u8; len];
        file.read_exact(&mut buf).map_err(|e| {
            let e = if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "file ends before byte {}",
                        offset.saturating_add(len as u64)
                    ),
                )
            } else {
                e
            };
            err("read", &path, e)
        })?;
        Ok(buf)
    }

    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        let path = self.path_of(kind, name)?;
        fs::metadata(&path)
            .map(|m| m.len())
            .map_err(|e| err("stat", &path, e))
    }

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        let path = self.path_of(kind, name)?;
        let dir = self.dir_of(kind, name);
        if !dir.is_dir() {
            Self::mkdir(&dir)?;
            if let Some(parent) = dir.parent() {
                Self::sync_dir(parent)?;
            }
        }
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&dir)
            .map_err(|e| err("write", &dir, e))?;
        tmp.write_all(data).map_err(|e| err("write", &path, e))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| err("fsync", &path, e))?;
        if kind == FileKind::Config {
            // The config is written once, at init: never replace one that a
            // concurrent init created in the meantime.
            tmp.persist_noclobber(&path)
                .map_err(|e| err("rename", &path, e.error))?;
        } else {
            tmp.persist(&path)
                .map_err(|e| err("rename", &path, e.error))?;
        }
        Self::sync_dir(&dir)
    }

    fn stage(&self, kind: FileKind) -> Result<Box<dyn StagedFile>> {
        // Staged in the kind's top directory (never listed: the name starts
        // with a dot) so that the final rename stays on one file system.
        let dir = self.root.join(kind.dir());
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&dir)
            .map_err(|e| err("write", &dir, e))?;
        Ok(Box::new(LocalStaged {
            backend: self.clone(),
            kind,
            file: io::BufWriter::with_capacity(1 << 20, tmp),
        }))
    }

    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        let path = self.path_of(kind, name)?;
        match fs::remove_file(&path) {
            Ok(()) => Self::sync_dir(&self.dir_of(kind, name)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err("delete", &path, e)),
        }
    }

    fn temporaries(&self) -> Result<Vec<Temporary>> {
        let now = std::time::SystemTime::now();
        let mut out = Vec::new();
        for rel in self.temporary_dirs()? {
            let dir = self.root.join(&rel);
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(err("list", &dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| err("list", &dir, e))?;
                let name = entry.file_name();
                let Some(name) = name.to_str().filter(|n| is_temporary(n)) else {
                    continue;
                };
                // Not followed: only regular files are a writer's.
                let meta = match fs::symlink_metadata(entry.path()) {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(err("stat", &entry.path(), e)),
                };
                if !meta.is_file() {
                    continue;
                }
                let idle = meta
                    .modified()
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .unwrap_or_default();
                out.push(Temporary {
                    path: if rel.is_empty() {
                        name.to_owned()
                    } else {
                        format!("{rel}/{name}")
                    },
                    size: meta.len(),
                    idle,
                });
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn remove_temporary(&self, path: &str) -> Result<()> {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let known_dir = dir.is_empty()
            || FileKind::DIRS.iter().any(|k| k.dir() == dir)
            || dir.strip_prefix("data/").is_some_and(is_fan_out);
        if !known_dir || !is_temporary(name) {
            return Err(Error::invalid(format!(
                "{path} is not a temporary file of the repository at {}",
                self.location()
            )));
        }
        let dir = self.root.join(dir);
        let file = dir.join(name);
        if fs::symlink_metadata(&file).is_ok_and(|m| !m.is_file()) {
            return Err(Error::invalid(format!(
                "{} is not a regular file: not removed",
                file.display()
            )));
        }
        match fs::remove_file(&file) {
            Ok(()) => Self::sync_dir(&dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err("delete", &file, e)),
        }
    }
}

/// Whether `name` is a temporary file's: writers name them `.tmp-` and six
/// random characters.
fn is_temporary(name: &str) -> bool {
    name.strip_prefix(".tmp-")
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Whether `name` is one of the 256 `data/XX` directories.
fn is_fan_out(name: &str) -> bool {
    name.len() == 2 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A file staged in the repository directory.
struct LocalStaged {
    backend: LocalBackend,
    kind: FileKind,
    file: io::BufWriter<tempfile::NamedTempFile>,
}

impl Write for LocalStaged {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl StagedFile for LocalStaged {
    fn commit(self: Box<Self>, name: &str) -> Result<()> {
        let Self {
            backend,
            kind,
            file,
        } = *self;
        let path = backend.path_of(kind, name)?;
        let dir = backend.dir_of(kind, name);
        let tmp = file
            .into_inner()
            .map_err(|e| err("write", &path, e.into_error()))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| err("fsync", &path, e))?;
        if !dir.is_dir() {
            LocalBackend::mkdir(&dir)?;
            if let Some(parent) = dir.parent() {
                LocalBackend::sync_dir(parent)?;
            }
        }
        tmp.persist(&path)
            .map_err(|e| err("rename", &path, e.error))?;
        LocalBackend::sync_dir(&dir)
    }
}
