//! A backend for tests that wraps another and misbehaves on purpose: it
//! fails chosen operations with a chosen I/O error (a full disk), says it is
//! remote as object storage does, lists `index/` with `locks/` in one
//! request that may name an index file already gone, and counts every call.
//!
//! One wrapper for all of them, so a test states the fault it needs in a
//! line (`Faults::new(inner).fail_writes(None, StorageFull)`) instead of
//! forwarding every method of [`Backend`] by hand.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use super::{Backend, FileKind, LocksAndIndex, StagedFile, Temporary};
use crate::error::{Error, Result};
use crate::sync::lock;

/// The operations of [`Backend`] that [`Faults`] can fail and counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Op {
    /// [`Backend::list`].
    List,
    /// [`Backend::list_locks_and_index`]: counted without a kind, so that
    /// it is told apart from separate listings of `locks/` and `index/`.
    ListLocksAndIndex,
    /// [`Backend::read`].
    Read,
    /// [`Backend::read_range`] and [`Backend::read_range_stream`]: both are
    /// one ranged request.
    ReadRange,
    /// [`Backend::size`].
    Size,
    /// [`Backend::write`].
    Write,
    /// [`Backend::stage`].
    Stage,
    /// [`Backend::delete`].
    Delete,
}

impl Op {
    /// The `op` of the [`Error::Backend`] a failure returns: the word the
    /// real backends use, which callers match on (a verify on a full disk
    /// looks for `write`, and a staged file is a write).
    fn verb(self) -> &'static str {
        match self {
            Self::List | Self::ListLocksAndIndex => "list",
            Self::Read | Self::ReadRange => "read",
            Self::Size => "size",
            Self::Write | Self::Stage => "write",
            Self::Delete => "delete",
        }
    }
}

/// One configured failure: `op` on files of `kind` (any kind when `None`)
/// fails with `error`.
#[derive(Debug, Clone, Copy)]
struct Failure {
    op: Op,
    kind: Option<FileKind>,
    error: io::ErrorKind,
}

/// Calls counted by operation, kind (none for the combined listing) and
/// file name (empty for listings and stages).
type Calls = HashMap<(Op, Option<FileKind>, String), u64>;

/// A fault-injecting wrapper around any backend, for tests. Built with
/// [`Faults::new`] and the builder methods; everything not configured is
/// passed through to the wrapped backend unchanged.
pub(crate) struct Faults {
    inner: Arc<dyn Backend>,
    failures: Vec<Failure>,
    remote: bool,
    one_listing: bool,
    stale_index: Mutex<Option<String>>,
    calls: Mutex<Calls>,
}

impl Faults {
    /// Wraps `inner`, with no faults yet.
    pub(crate) fn new(inner: Arc<dyn Backend>) -> Self {
        Self {
            inner,
            failures: Vec::new(),
            remote: false,
            one_listing: false,
            stale_index: Mutex::new(None),
            calls: Mutex::new(HashMap::new()),
        }
    }

    /// Makes `op` on files of `kind` (every kind for `None`) fail with an
    /// I/O error of kind `error`, before reaching the wrapped backend.
    #[must_use]
    pub(crate) fn fail(
        mut self,
        op: Op,
        kind: impl Into<Option<FileKind>>,
        error: io::ErrorKind,
    ) -> Self {
        self.failures.push(Failure {
            op,
            kind: kind.into(),
            error,
        });
        self
    }

    /// Makes every way of creating a file of `kind` (every kind for `None`)
    /// fail with `error`: [`Backend::write`] and [`Backend::stage`]. With
    /// [`io::ErrorKind::StorageFull`], a disk that is full.
    #[must_use]
    pub(crate) fn fail_writes(
        self,
        kind: impl Into<Option<FileKind>>,
        error: io::ErrorKind,
    ) -> Self {
        let kind = kind.into();
        self.fail(Op::Write, kind, error)
            .fail(Op::Stage, kind, error)
    }

    /// Makes every read of a file of `kind` (every kind for `None`) fail
    /// with `error`: [`Backend::read`], ranged reads and [`Backend::size`].
    #[must_use]
    pub(crate) fn fail_reads(
        self,
        kind: impl Into<Option<FileKind>>,
        error: io::ErrorKind,
    ) -> Self {
        let kind = kind.into();
        self.fail(Op::Read, kind, error)
            .fail(Op::ReadRange, kind, error)
            .fail(Op::Size, kind, error)
    }

    /// Says the store is remote, as object storage does: it counts
    /// requests (as none, unless the wrapped backend counts them) and so
    /// [`Backend::is_remote`] is true.
    #[must_use]
    pub(crate) fn remote(mut self) -> Self {
        self.remote = true;
        self
    }

    /// Lists `index/` with `locks/` in one request, `index/` first, as
    /// object storage does (`LocksAndIndex::index_read_first`), instead of
    /// the wrapped backend's [`Backend::list_locks_and_index`]. That request
    /// is counted as [`Op::ListLocksAndIndex`], not as listings of either
    /// kind; see also [`Faults::set_stale_index`].
    #[must_use]
    pub(crate) fn one_listing(mut self) -> Self {
        self.one_listing = true;
        self
    }

    /// From now on, the one listing of [`Faults::one_listing`] also names
    /// `name` under `index/` (or stops doing so for `None`): an index file a
    /// prune deleted while the listing ran, which a reader finds gone.
    pub(crate) fn set_stale_index(&self, name: Option<String>) {
        *lock(&self.stale_index) = name;
    }

    /// The calls of `op` on files of `kind` (of every kind for `None`)
    /// since the start or the last [`Faults::reset_calls`], failed ones
    /// included.
    pub(crate) fn calls(&self, op: Op, kind: impl Into<Option<FileKind>>) -> u64 {
        let kind = kind.into();
        lock(&self.calls)
            .iter()
            .filter(|((o, k, _), _)| *o == op && (kind.is_none() || *k == kind))
            .map(|(_, n)| n)
            .sum()
    }

    /// The calls of `op` on the one file `kind`/`name`.
    pub(crate) fn calls_on(&self, op: Op, kind: FileKind, name: &str) -> u64 {
        lock(&self.calls)
            .get(&(op, Some(kind), name.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Forgets the calls counted so far.
    pub(crate) fn reset_calls(&self) {
        lock(&self.calls).clear();
    }

    /// Counts a call and returns the error configured for it, if any.
    fn enter(&self, op: Op, kind: Option<FileKind>, name: &str) -> Result<()> {
        *lock(&self.calls)
            .entry((op, kind, name.to_owned()))
            .or_default() += 1;
        let failure = self
            .failures
            .iter()
            .find(|f| f.op == op && (f.kind.is_none() || f.kind == kind));
        match failure {
            None => Ok(()),
            Some(f) => {
                let path = match kind {
                    Some(k) if name.is_empty() => k.dir().to_owned(),
                    Some(k) => format!("{}/{name}", k.dir()),
                    None => String::new(),
                };
                Err(Error::Backend {
                    op: op.verb(),
                    path,
                    source: io::Error::from(f.error),
                })
            }
        }
    }
}

impl Backend for Faults {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn create(&self) -> Result<()> {
        self.inner.create()
    }

    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        self.enter(Op::List, Some(kind), "")?;
        self.inner.list(kind)
    }

    fn list_locks_and_index(&self) -> Result<LocksAndIndex> {
        self.enter(Op::ListLocksAndIndex, None, "")?;
        if !self.one_listing {
            return self.inner.list_locks_and_index();
        }
        let mut index = self.inner.list(FileKind::Index)?;
        if let Some(stale) = lock(&self.stale_index).clone() {
            index.push((stale, 100));
        }
        Ok(LocksAndIndex {
            locks: self.inner.list(FileKind::Lock)?,
            index,
            index_read_first: true,
        })
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        self.enter(Op::Read, Some(kind), name)?;
        self.inner.read(kind, name)
    }

    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.enter(Op::ReadRange, Some(kind), name)?;
        self.inner.read_range(kind, name, offset, len)
    }

    fn read_range_stream(
        &self,
        kind: FileKind,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Box<dyn io::Read + Send>> {
        self.enter(Op::ReadRange, Some(kind), name)?;
        self.inner.read_range_stream(kind, name, offset, len)
    }

    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        self.enter(Op::Size, Some(kind), name)?;
        self.inner.size(kind, name)
    }

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        self.enter(Op::Write, Some(kind), name)?;
        self.inner.write(kind, name, data)
    }

    fn stage(&self, kind: FileKind) -> Result<Box<dyn StagedFile>> {
        self.enter(Op::Stage, Some(kind), "")?;
        self.inner.stage(kind)
    }

    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        self.enter(Op::Delete, Some(kind), name)?;
        self.inner.delete(kind, name)
    }

    fn temporaries(&self) -> Result<Vec<Temporary>> {
        self.inner.temporaries()
    }

    fn remove_temporary(&self, path: &str) -> Result<()> {
        self.inner.remove_temporary(path)
    }

    fn requests(&self) -> Option<u64> {
        match self.inner.requests() {
            None if self.remote => Some(0),
            counted => counted,
        }
    }

    fn is_remote(&self) -> bool {
        self.remote || self.inner.is_remote()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryBackend;

    fn name(c: char) -> String {
        c.to_string().repeat(64)
    }

    #[test]
    fn configured_operations_fail_and_every_call_is_counted() {
        let mem: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let faults = Faults::new(Arc::clone(&mem))
            .fail_writes(FileKind::Pack, io::ErrorKind::StorageFull)
            .fail_reads(FileKind::Snapshot, io::ErrorKind::PermissionDenied)
            .fail(Op::Delete, None, io::ErrorKind::Other);
        assert!(!faults.is_remote());
        assert_eq!(faults.requests(), None);

        // Other kinds pass through to the wrapped store.
        faults.write(FileKind::Index, &name('a'), b"index").unwrap();
        assert_eq!(mem.read(FileKind::Index, &name('a')).unwrap(), b"index");
        assert_eq!(
            faults
                .read_range(FileKind::Index, &name('a'), 1, 3)
                .unwrap(),
            b"nde"
        );
        let mut streamed = Vec::new();
        io::Read::read_to_end(
            &mut faults
                .read_range_stream(FileKind::Index, &name('a'), 0, 2)
                .unwrap(),
            &mut streamed,
        )
        .unwrap();
        assert_eq!(streamed, b"in");

        // A full disk: nothing of the failing kind reaches the store.
        let e = faults
            .write(FileKind::Pack, &name('b'), b"pack")
            .expect_err("full");
        assert!(
            matches!(&e, Error::Backend { op: "write", path, source }
                if path == &format!("data/{}", name('b')) && source.kind() == io::ErrorKind::StorageFull),
            "{e:?}"
        );
        assert!(matches!(
            faults.stage(FileKind::Pack),
            Err(Error::Backend { op: "write", .. })
        ));
        assert!(mem.list(FileKind::Pack).unwrap().is_empty());
        mem.write(FileKind::Snapshot, &name('c'), b"snap").unwrap();
        for got in [
            faults.read(FileKind::Snapshot, &name('c')).map(|_| ()),
            faults.size(FileKind::Snapshot, &name('c')).map(|_| ()),
            faults
                .read_range(FileKind::Snapshot, &name('c'), 0, 1)
                .map(|_| ()),
        ] {
            assert!(
                matches!(&got, Err(Error::Backend { op: "read" | "size", source, .. })
                    if source.kind() == io::ErrorKind::PermissionDenied),
                "{got:?}"
            );
        }
        assert!(faults.delete(FileKind::Index, &name('a')).is_err());

        // Counted whether they failed or not.
        assert_eq!(faults.calls(Op::Write, None), 2);
        assert_eq!(faults.calls(Op::Write, FileKind::Pack), 1);
        assert_eq!(faults.calls(Op::ReadRange, FileKind::Index), 2);
        assert_eq!(faults.calls_on(Op::Read, FileKind::Snapshot, &name('c')), 1);
        assert_eq!(faults.calls_on(Op::Read, FileKind::Snapshot, &name('d')), 0);
        faults.reset_calls();
        assert_eq!(faults.calls(Op::Write, None), 0);
    }

    #[test]
    fn a_remote_store_lists_index_before_locks_in_one_request() {
        let mem: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        mem.write(FileKind::Index, &name('a'), b"i").unwrap();
        mem.write(FileKind::Lock, &name('b'), b"l").unwrap();
        let faults = Faults::new(Arc::clone(&mem)).remote().one_listing();
        assert!(faults.is_remote());
        assert_eq!(faults.requests(), Some(0));

        let listed = faults.list_locks_and_index().unwrap();
        assert!(listed.index_read_first);
        assert_eq!(listed.index, vec![(name('a'), 1)]);
        assert_eq!(listed.locks, vec![(name('b'), 1)]);
        faults.set_stale_index(Some(name('c')));
        let stale = faults.list_locks_and_index().unwrap();
        assert_eq!(stale.index, vec![(name('a'), 1), (name('c'), 100)]);
        // Separate listings are as the store is.
        assert_eq!(faults.list(FileKind::Index).unwrap(), vec![(name('a'), 1)]);
        assert_eq!(faults.calls(Op::ListLocksAndIndex, None), 2);
        assert_eq!(faults.calls(Op::List, FileKind::Index), 1);
        assert_eq!(faults.calls(Op::List, FileKind::Lock), 0);

        // Without one_listing, the wrapped store's own way.
        let plain = Faults::new(mem).list_locks_and_index().unwrap();
        assert!(!plain.index_read_first);
    }
}
