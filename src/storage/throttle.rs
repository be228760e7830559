//! `--limit-upload` / `--limit-download`: a backend wrapper that keeps the
//! average transfer rate to and from the repository under a limit, for
//! links shared with other traffic.
//!
//! Rates are token buckets (the `governor` crate) counted in KiB with one
//! second of burst. A transfer waits for its tokens before it starts, so the
//! rate holds on average over any stretch longer than the largest single
//! transfer (a pack), not within it.

use std::io::{self, Write};
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::{Backend, FileKind, StagedFile};
use crate::error::Result;

/// One direction's limit.
struct Limit {
    limiter: DefaultDirectRateLimiter,
    burst: u32,
}

impl Limit {
    fn new(kib_per_sec: Option<u32>) -> Option<Arc<Self>> {
        let rate = NonZeroU32::new(kib_per_sec?)?;
        Some(Arc::new(Self {
            limiter: RateLimiter::direct(Quota::per_second(rate).allow_burst(rate)),
            burst: rate.get(),
        }))
    }

    /// Waits until `bytes` may pass.
    fn take(&self, bytes: u64) {
        let clock = DefaultClock::default();
        let mut kib = bytes.div_ceil(1024);
        while kib > 0 {
            let step = u32::try_from(kib).unwrap_or(u32::MAX).min(self.burst);
            let Some(n) = NonZeroU32::new(step) else {
                return;
            };
            loop {
                match self.limiter.check_n(n) {
                    Ok(Ok(())) => break,
                    Ok(Err(not_until)) => std::thread::sleep(not_until.wait_time_from(clock.now())),
                    // `step` never exceeds the burst.
                    Err(_) => return,
                }
            }
            kib -= u64::from(step);
        }
    }
}

/// A backend whose transfers are held to upload and download rates.
pub struct Throttled {
    inner: Arc<dyn Backend>,
    up: Option<Arc<Limit>>,
    down: Option<Arc<Limit>>,
}

impl Throttled {
    /// Wraps `inner`; a rate of `None` (or 0) leaves that direction free.
    /// Rates are in KiB/s, as restic's options of the same names.
    #[must_use]
    pub fn wrap(
        inner: Arc<dyn Backend>,
        upload_kib: Option<u32>,
        download_kib: Option<u32>,
    ) -> Arc<dyn Backend> {
        let up = Limit::new(upload_kib);
        let down = Limit::new(download_kib);
        if up.is_none() && down.is_none() {
            return inner;
        }
        Arc::new(Self { inner, up, down })
    }

    fn download(&self, bytes: u64) {
        if let Some(l) = &self.down {
            l.take(bytes);
        }
    }

    fn upload(&self, bytes: u64) {
        if let Some(l) = &self.up {
            l.take(bytes);
        }
    }
}

impl Backend for Throttled {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn create(&self) -> Result<()> {
        self.inner.create()
    }

    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        self.inner.list(kind)
    }

    fn list_locks_and_index(&self) -> Result<super::LocksAndIndex> {
        self.inner.list_locks_and_index()
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        let data = self.inner.read(kind, name)?;
        self.download(data.len() as u64);
        Ok(data)
    }

    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.download(len);
        self.inner.read_range(kind, name, offset, len)
    }

    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        self.inner.size(kind, name)
    }

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        self.upload(data.len() as u64);
        self.inner.write(kind, name, data)
    }

    fn stage(&self, kind: FileKind) -> Result<Box<dyn StagedFile>> {
        Ok(Box::new(ThrottledStaged {
            inner: self.inner.stage(kind)?,
            up: self.up.clone(),
        }))
    }

    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        self.inner.delete(kind, name)
    }

    fn temporaries(&self) -> Result<Vec<super::Temporary>> {
        self.inner.temporaries()
    }

    fn remove_temporary(&self, path: &str) -> Result<()> {
        self.inner.remove_temporary(path)
    }

    fn requests(&self) -> Option<u64> {
        self.inner.requests()
    }

    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }
}

/// A staged file whose bytes are paid for as they are written.
struct ThrottledStaged {
    inner: Box<dyn StagedFile>,
    up: Option<Arc<Limit>>,
}

impl Write for ThrottledStaged {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(l) = &self.up {
            l.take(buf.len() as u64);
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl StagedFile for ThrottledStaged {
    fn commit(self: Box<Self>, name: &str) -> Result<()> {
        self.inner.commit(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryBackend;
    use std::time::{Duration, Instant};

    #[test]
    fn transfers_wait_for_their_rate_and_pass_through_unchanged() {
        let mem: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        // 1 MiB/s with one second of burst: 3 MiB take at least two seconds.
        let limited = Throttled::wrap(Arc::clone(&mem), Some(1024), Some(1024));
        let data = vec![7u8; 3 << 20];
        let name = "a".repeat(64);
        let started = Instant::now();
        limited.write(FileKind::Index, &name, &data).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(1800));
        let started = Instant::now();
        assert_eq!(limited.read(FileKind::Index, &name).unwrap(), data);
        assert!(started.elapsed() >= Duration::from_millis(1800));

        let mut staged = limited.stage(FileKind::Pack).unwrap();
        staged.write_all(&data[..1000]).unwrap();
        staged.commit(&name).unwrap();
        assert_eq!(mem.read(FileKind::Pack, &name).unwrap(), data[..1000]);
    }

    #[test]
    fn no_limit_means_the_backend_itself() {
        let mem: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let same = Throttled::wrap(Arc::clone(&mem), None, Some(0));
        assert!(Arc::ptr_eq(&mem, &same));
    }
}
