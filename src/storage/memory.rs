//! A repository held in memory, for tests and fuzzing.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

use super::{Backend, FileKind, StagedFile, check_name};
use crate::error::{Error, Result};

/// An in-memory repository.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    files: Arc<Mutex<Files>>,
}

type Files = BTreeMap<(FileKind, String), Vec<u8>>;

fn lock_files(files: &Mutex<Files>) -> std::sync::MutexGuard<'_, Files> {
    // A panic while holding the lock leaves the map intact (every mutation
    // is a single insert or remove), so poisoning is ignored.
    files
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl MemoryBackend {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn files(&self) -> std::sync::MutexGuard<'_, Files> {
        lock_files(&self.files)
    }

    /// Replaces the bytes of a stored file, bypassing every check: for tests
    /// that damage a repository.
    pub fn tamper(&self, kind: FileKind, name: &str, f: impl FnOnce(&mut Vec<u8>)) {
        if let Some(data) = self.files().get_mut(&(kind, name.to_owned())) {
            f(data);
        }
    }
}

fn missing(kind: FileKind, name: &str) -> Error {
    Error::Backend {
        op: "read",
        path: format!("memory:{}/{name}", kind.dir()),
        source: io::Error::from(io::ErrorKind::NotFound),
    }
}

impl Backend for MemoryBackend {
    fn location(&self) -> String {
        "memory".to_owned()
    }

    fn create(&self) -> Result<()> {
        if self
            .files()
            .contains_key(&(FileKind::Config, super::CONFIG_NAME.to_owned()))
        {
            return Err(Error::RepoExists {
                location: self.location(),
            });
        }
        Ok(())
    }

    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        Ok(self
            .files()
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, n), d)| (n.clone(), d.len() as u64))
            .collect())
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        check_name(kind, name)?;
        self.files()
            .get(&(kind, name.to_owned()))
            .cloned()
            .ok_or_else(|| missing(kind, name))
    }

    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let files = self.files();
        let data = files
            .get(&(kind, name.to_owned()))
            .ok_or_else(|| missing(kind, name))?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
        data.get(start..end)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| Error::Backend {
                op: "read",
                path: format!("memory:{}/{name}", kind.dir()),
                source: io::Error::from(io::ErrorKind::UnexpectedEof),
            })
    }

    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        self.files()
            .get(&(kind, name.to_owned()))
            .map(|d| d.len() as u64)
            .ok_or_else(|| missing(kind, name))
    }

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        check_name(kind, name)?;
        self.files().insert((kind, name.to_owned()), data.to_vec());
        Ok(())
    }

    fn stage(&self, kind: FileKind) -> Result<Box<dyn StagedFile>> {
        Ok(Box::new(MemoryStaged {
            files: Arc::clone(&self.files),
            kind,
            data: Vec::new(),
        }))
    }

    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        self.files().remove(&(kind, name.to_owned()));
        Ok(())
    }
}

/// A file staged in memory.
struct MemoryStaged {
    files: Arc<Mutex<Files>>,
    kind: FileKind,
    data: Vec<u8>,
}

impl io::Write for MemoryStaged {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.data.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl StagedFile for MemoryStaged {
    fn commit(self: Box<Self>, name: &str) -> Result<()> {
        check_name(self.kind, name)?;
        let Self { files, kind, data } = *self;
        lock_files(&files).insert((kind, name.to_owned()), data);
        Ok(())
    }
}
