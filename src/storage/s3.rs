//! S3-compatible object storage (AWS S3, Garage, MinIO, Ceph RGW…) through
//! opendal's S3 service.
//!
//! Objects are named exactly like the files of a local repository
//! (`config`, `keys/ID`, `data/XX/ID`, …, store-format.md §23) under an
//! optional prefix, so a repository directory synchronised to a bucket opens
//! as is. An object store has no rename, but it needs none: a PUT (or the
//! completion of a multipart upload) makes the whole object visible at once
//! and a failed or abandoned upload makes nothing visible, which is the
//! atomicity [`Backend::write`] promises. Staged packs are spooled locally
//! and uploaded only when committed under their final name.
//!
//! Every request has a timeout and transient failures (timeouts, 5xx,
//! connection resets) are retried with exponential backoff and jitter.
//! Credentials come from the AWS environment variables or the shared
//! profile files (`~/.aws/credentials`, `AWS_PROFILE`), as the AWS tools
//! read them. Every HTTP request, retries included, is counted for
//! [`Backend::requests`].

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::services::S3;
use opendal::{
    Buffer, ErrorKind, HttpBody, HttpTransport, HttpTransporter, OperationContext, Operator,
};
use opendal_http_transport_reqwest::ReqwestTransport;

use super::{Backend, CONFIG_NAME, FileKind, StagedFile, check_name};
use crate::error::{Error, Result};

/// Parts of a multipart upload, at least.
const PART_SIZE: usize = 64 << 20;
/// Objects up to this size go up in one PUT (one request instead of at
/// least three); every pack does (S3 takes up to 5 GiB in one PUT).
const SINGLE_PUT_MAX: usize = 2 << 30;
/// Parts of one object uploaded at the same time.
const PART_CONCURRENCY: usize = 4;
/// A staged pack is kept in memory up to this size, then spooled to disk:
/// a 64 MiB pack (the default on object storage) plus its last blob stays
/// in memory, which saves writing each pack to a temporary file and reading
/// it back for the upload.
const SPOOL_IN_MEMORY: usize = 80 << 20;
/// Attempts per request before an error is reported.
const RETRIES: usize = 6;
/// Time allowed for a request without a body (stat, list, delete).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Time allowed for each read or write of a body.
const IO_TIMEOUT: Duration = Duration::from_secs(120);

/// How the bucket is addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressStyle {
    /// `https://HOST/BUCKET/KEY`: what Garage, MinIO and most self-hosted
    /// stores expect.
    Path,
    /// `https://BUCKET.HOST/KEY`: what AWS prefers.
    VirtualHost,
}

/// A parsed `s3:` repository location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// `https://HOST[:PORT]` (or `http://` when the URL says so).
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
    /// The key prefix of the repository inside the bucket, without
    /// leading or trailing slashes; may be empty.
    pub prefix: String,
    /// Path-style or virtual-host addressing.
    pub style: AddressStyle,
}

impl S3Location {
    /// Parses `s3:https://HOST[:PORT]/BUCKET[/PREFIX]`. A URL without a
    /// scheme (`s3:HOST/BUCKET`) means https; plain http only when written.
    /// `?style=path` or `?style=virtual` chooses the addressing, otherwise
    /// virtual-host for `*.amazonaws.com` and path-style elsewhere.
    ///
    /// # Errors
    /// A message naming what is wrong with `url`.
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::invalid(format!(
                "repository '{url}': {why}; write it as s3:https://HOST[:PORT]/BUCKET[/PREFIX]"
            ))
        };
        let rest = url
            .strip_prefix("s3:")
            .ok_or_else(|| bad("not an s3: location"))?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (scheme, rest) = if let Some(r) = rest.strip_prefix("https://") {
            ("https", r)
        } else if let Some(r) = rest.strip_prefix("http://") {
            ("http", r)
        } else if rest.contains("://") {
            return Err(bad("only http:// and https:// endpoints are supported"));
        } else {
            ("https", rest.trim_start_matches('/'))
        };
        let mut parts = rest.splitn(3, '/');
        let host = parts.next().unwrap_or_default();
        let bucket = parts.next().unwrap_or_default();
        let prefix = parts.next().unwrap_or_default().trim_matches('/');
        if host.is_empty() || host.contains('@') {
            return Err(bad(
                "the host is missing (credentials belong in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, not in the URL)",
            ));
        }
        if bucket.is_empty() {
            return Err(bad("the bucket is missing"));
        }
        if prefix
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
            && !prefix.is_empty()
        {
            return Err(bad("the prefix has an empty, '.' or '..' part"));
        }
        let hostname = host.rsplit_once(':').map_or(host, |(h, _)| h);
        let mut style = if hostname.ends_with("amazonaws.com") {
            AddressStyle::VirtualHost
        } else {
            AddressStyle::Path
        };
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            style = match pair {
                "style=path" => AddressStyle::Path,
                "style=virtual" => AddressStyle::VirtualHost,
                other => {
                    return Err(bad(&format!(
                        "unknown option '{other}' (expected style=path or style=virtual)"
                    )));
                }
            };
        }
        if style == AddressStyle::VirtualHost && bucket.contains('.') {
            return Err(bad(
                "a bucket name with dots cannot be addressed virtual-host style: add ?style=path",
            ));
        }
        Ok(Self {
            endpoint: format!("{scheme}://{host}"),
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            style,
        })
    }
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3:{}/{}", self.endpoint, self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

/// The HTTP transport: reqwest on rustls, counting every request.
struct CountingTransport {
    inner: ReqwestTransport,
    count: Arc<AtomicU64>,
}

impl HttpTransport for CountingTransport {
    async fn fetch(&self, req: http::Request<Buffer>) -> opendal::Result<http::Response<HttpBody>> {
        self.count.fetch_add(1, Ordering::Relaxed);
        // A debugging aid: which requests a command makes. The URI carries
        // no credentials (requests are signed in headers).
        if std::env::var_os("CAIRN_TRACE_S3").is_some() {
            eprintln!("cairn: S3 {} {}", req.method(), req.uri());
        }
        self.inner.fetch(req).await
    }
}

/// A repository in an S3 bucket. Clones share the client and its counter.
#[derive(Clone)]
pub struct S3Backend {
    location: S3Location,
    op: Operator,
    runtime: Arc<tokio::runtime::Runtime>,
    requests: Arc<AtomicU64>,
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Backend")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

fn s3_error(op: &'static str, path: &str, e: &opendal::Error) -> Error {
    let kind = match e.kind() {
        ErrorKind::NotFound => io::ErrorKind::NotFound,
        ErrorKind::PermissionDenied => io::ErrorKind::PermissionDenied,
        ErrorKind::AlreadyExists | ErrorKind::ConditionNotMatch => io::ErrorKind::AlreadyExists,
        ErrorKind::RangeNotSatisfied => io::ErrorKind::UnexpectedEof,
        ErrorKind::ConfigInvalid => io::ErrorKind::InvalidInput,
        _ => io::ErrorKind::Other,
    };
    // opendal's own text carries a debugging context (request parts); the
    // user gets its message, the innermost cause and what to do.
    let mut message = e.message().to_owned();
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut innermost = None;
    while let Some(c) = cause {
        innermost = Some(c.to_string());
        cause = c.source();
    }
    if let Some(c) = innermost.filter(|c| !message.contains(c.as_str())) {
        message = format!("{message}: {c}");
    }
    let hint = if message.contains("failed to load signing credential") {
        " (no credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials)"
    } else if message.contains("NoSuchBucket") {
        " (the bucket does not exist: create it, or fix the bucket in the location)"
    } else if e.kind() == ErrorKind::PermissionDenied {
        " (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the profile, and the bucket's permissions)"
    } else if e.kind() == ErrorKind::Unexpected && e.message().contains("send http request") {
        " (no answer from the endpoint after several attempts: check the host and port, and that the store is running)"
    } else {
        ""
    };
    message.push_str(hint);
    Error::Backend {
        op,
        path: path.to_owned(),
        source: io::Error::new(kind, message),
    }
}

/// Installs ring as rustls' crypto provider once per process (reqwest is
/// built without a default one; see Cargo.toml).
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Fails only when another provider is already installed, which is
        // as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl S3Backend {
    /// Connects to the bucket of `location` (no request is made yet).
    ///
    /// # Errors
    /// A configuration the S3 service rejects (a bad endpoint, say).
    pub fn new(location: S3Location) -> Result<Self> {
        install_crypto_provider();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::internal(format!("cannot start the S3 client's threads: {e}")))?;
        let region = std::env::var("AWS_REGION")
            .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|_| "us-east-1".to_owned());
        let mut builder = S3::default()
            .endpoint(&location.endpoint)
            .bucket(&location.bucket)
            .root(&format!("/{}", location.prefix))
            .region(&region)
            // Instance metadata is only for code running on EC2 and makes a
            // machine without credentials wait for timeouts.
            .disable_ec2_metadata();
        if location.style == AddressStyle::VirtualHost {
            builder = builder.enable_virtual_host_style();
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::internal(format!("cannot set up the HTTP client: {e}")))?;
        let requests = Arc::new(AtomicU64::new(0));
        let transport = CountingTransport {
            inner: ReqwestTransport::new(client),
            count: Arc::clone(&requests),
        };
        let op = Operator::new(builder)
            .map_err(|e| Error::invalid(format!("repository {location}: {e}")))?
            .with_context(
                OperationContext::new().with_http_transport(HttpTransporter::new(transport)),
            )
            .layer(
                TimeoutLayer::new()
                    .with_timeout(REQUEST_TIMEOUT)
                    .with_io_timeout(IO_TIMEOUT),
            )
            .layer(
                RetryLayer::new()
                    .with_max_times(RETRIES)
                    .with_min_delay(Duration::from_millis(500))
                    .with_max_delay(Duration::from_secs(4))
                    .with_jitter(),
            );
        Ok(Self {
            location,
            op,
            runtime: Arc::new(runtime),
            requests,
        })
    }

    /// Runs `fut` on the client's runtime and waits for it. The future runs
    /// as a task and the result comes back through a channel, so this may
    /// be called from any thread, including one inside another runtime.
    fn run<T, F>(&self, fut: F) -> T
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let _ = tx.send(fut.await);
        });
        match rx.recv() {
            Ok(v) => v,
            // The task cannot be dropped unfinished while the runtime lives,
            // and this backend owns the runtime.
            Err(_) => self.run_lost(),
        }
    }

    #[cold]
    fn run_lost<T>(&self) -> T {
        // Unreachable in practice; kept out of `run` so that `run` needs no
        // panic path of its own.
        #[allow(clippy::panic)]
        {
            panic!("the S3 client task for {} vanished", self.location)
        }
    }

    /// The object key of a repository file, relative to the prefix.
    fn key(kind: FileKind, name: &str) -> Result<String> {
        check_name(kind, name)?;
        Ok(match kind {
            FileKind::Config => CONFIG_NAME.to_owned(),
            FileKind::Pack => format!("{}/{}/{name}", kind.dir(), name.get(..2).unwrap_or("00")),
            _ => format!("{}/{name}", kind.dir()),
        })
    }

    /// The full key, for messages.
    fn shown(&self, key: &str) -> String {
        format!("{}/{key}", self.location)
    }

    fn put(&self, key: &str, data: Buffer) -> Result<()> {
        // Whatever is held whole goes up in one PUT (a pack is at most
        // 1 GiB and a blob); multipart only beyond that.
        let chunk = data.len().clamp(PART_SIZE, SINGLE_PUT_MAX);
        let op = self.op.clone();
        let k = key.to_owned();
        self.run(async move {
            let mut w = op
                .writer_with(&k)
                .chunk(chunk)
                .concurrent(PART_CONCURRENCY)
                .await?;
            if let Err(e) = w.write(data).await {
                // Abandons a multipart upload so that no parts linger; the
                // object never became visible either way.
                let _ = w.abort().await;
                return Err(e);
            }
            match w.close().await {
                Ok(_) => Ok(()),
                Err(e) => {
                    let _ = w.abort().await;
                    Err(e)
                }
            }
        })
        .map_err(|e| s3_error("write", &self.shown(key), &e))
    }
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        self.location.to_string()
    }

    fn create(&self) -> Result<()> {
        // Nothing to lay out: an object store has no directories. The
        // bucket must exist (creating buckets is an administrator's call).
        match self.size(FileKind::Config, CONFIG_NAME) {
            Ok(_) => Err(Error::RepoExists {
                location: self.location(),
            }),
            Err(e) if e.is_not_found() => {
                let op = self.op.clone();
                self.run(async move { op.list("/").await.map(|_| ()) })
                    .map_err(|e| s3_error("list", &self.location(), &e))
            }
            Err(e) => Err(e),
        }
    }

    fn list(&self, kind: FileKind) -> Result<Vec<(String, u64)>> {
        if kind == FileKind::Config {
            return match self.size(kind, CONFIG_NAME) {
                Ok(size) => Ok(vec![(CONFIG_NAME.to_owned(), size)]),
                Err(e) if e.is_not_found() => Ok(Vec::new()),
                Err(e) => Err(e),
            };
        }
        let dir = format!("{}/", kind.dir());
        let op = self.op.clone();
        let d = dir.clone();
        let entries = self
            .run(async move { op.list_with(&d).recursive(true).await })
            .map_err(|e| s3_error("list", &self.shown(&dir), &e))?;
        Ok(entries
            .into_iter()
            .filter(|e| e.metadata().is_file())
            .filter_map(|e| {
                let name = e.name().to_owned();
                check_name(kind, &name)
                    .is_ok()
                    .then(|| (name, e.metadata().content_length()))
            })
            .collect())
    }

    fn list_locks_and_index(&self) -> Result<super::LocksAndIndex> {
        use futures_util::TryStreamExt;
        // Keys sort as index/ < keys/ < locks/ < snapshots/, so one listing
        // that starts just before `index/` and stops at the first key past
        // `locks/` holds both (and the few key files between): one request
        // where the repository is small, as many pages as the two listings
        // would take where it is not.
        let op = self.op.clone();
        let listed = self
            .run(async move {
                let mut lister = op
                    .lister_with("/")
                    .recursive(true)
                    .start_after(FileKind::Index.dir())
                    .await?;
                let mut out = Vec::new();
                while let Some(entry) = lister.try_next().await? {
                    if entry.path() > "locks0" {
                        break;
                    }
                    out.push(entry);
                }
                Ok::<_, opendal::Error>(out)
            })
            .map_err(|e| s3_error("list", &self.shown("index/ to locks/"), &e))?;
        let mut found = super::LocksAndIndex {
            index_read_first: true,
            ..super::LocksAndIndex::default()
        };
        for entry in listed.iter().filter(|e| e.metadata().is_file()) {
            let (kind, list) = if entry.path().starts_with("index/") {
                (FileKind::Index, &mut found.index)
            } else if entry.path().starts_with("locks/") {
                (FileKind::Lock, &mut found.locks)
            } else {
                continue;
            };
            let name = entry.name();
            if check_name(kind, name).is_ok()
                && entry.path().len() == kind.dir().len() + 1 + name.len()
            {
                list.push((name.to_owned(), entry.metadata().content_length()));
            }
        }
        Ok(found)
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        let key = Self::key(kind, name)?;
        let op = self.op.clone();
        let k = key.clone();
        self.run(async move { op.read(&k).await })
            .map(|b| b.to_vec())
            .map_err(|e| s3_error("read", &self.shown(&key), &e))
    }

    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let key = Self::key(kind, name)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let end = offset
            .checked_add(len)
            .ok_or_else(|| Error::internal(format!("range {offset}+{len} of {key} overflows")))?;
        let op = self.op.clone();
        let k = key.clone();
        let buf = self
            .run(async move { op.read_with(&k).range(offset..end).await })
            .map_err(|e| s3_error("read", &self.shown(&key), &e))?;
        if buf.len() as u64 != len {
            return Err(Error::Backend {
                op: "read",
                path: self.shown(&key),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("object ends before byte {end}"),
                ),
            });
        }
        Ok(buf.to_vec())
    }

    fn read_range_stream(
        &self,
        kind: FileKind,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Box<dyn Read + Send>> {
        use futures_util::StreamExt;
        let key = Self::key(kind, name)?;
        let end = offset
            .checked_add(len)
            .ok_or_else(|| Error::internal(format!("range {offset}+{len} of {key} overflows")))?;
        // One GET; its body is handed over piece by piece as it arrives,
        // through a few buffers, so a slow reader slows the download
        // instead of filling memory.
        let (tx, rx) = tokio::sync::mpsc::channel::<opendal::Result<Buffer>>(STREAM_BUFFERS);
        let (op, k) = (self.op.clone(), key.clone());
        if len > 0 {
            self.runtime.spawn(async move {
                let stream = match op.reader_with(&k).await {
                    Ok(r) => r.into_stream(offset..end).await,
                    Err(e) => Err(e),
                };
                let mut stream = match stream {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                while let Some(piece) = stream.next().await {
                    let failed = piece.is_err();
                    if tx.send(piece).await.is_err() || failed {
                        return;
                    }
                }
            });
        }
        Ok(Box::new(S3Stream {
            rx,
            piece: Vec::new(),
            at: 0,
            remaining: len,
            shown: self.shown(&key),
            end,
        }))
    }

    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        let key = Self::key(kind, name)?;
        let op = self.op.clone();
        let k = key.clone();
        self.run(async move { op.stat(&k).await })
            .map(|m| m.content_length())
            .map_err(|e| s3_error("stat", &self.shown(&key), &e))
    }

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        let key = Self::key(kind, name)?;
        if kind == FileKind::Config {
            // Never replace a config (see LocalBackend::write). Between this
            // check and the PUT another `init` could still slip in; the
            // loser's key then fails to authenticate the winner's config and
            // `open` reports it.
            match self.size(kind, name) {
                Ok(_) => {
                    return Err(Error::RepoExists {
                        location: self.location(),
                    });
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        self.put(&key, Buffer::from(data.to_vec()))
    }

    fn stage(&self, kind: FileKind) -> Result<Box<dyn StagedFile>> {
        Ok(Box::new(S3Staged {
            backend: self.clone(),
            kind,
            spool: tempfile::SpooledTempFile::new(SPOOL_IN_MEMORY),
        }))
    }

    fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        let key = Self::key(kind, name)?;
        let op = self.op.clone();
        let k = key.clone();
        // S3 deletes of a missing key succeed, as the trait asks.
        self.run(async move { op.delete(&k).await })
            .map_err(|e| s3_error("delete", &self.shown(&key), &e))
    }

    fn requests(&self) -> Option<u64> {
        Some(self.requests.load(Ordering::Relaxed))
    }
}

/// A pack being written: spooled locally, uploaded on commit.
/// Pieces of a streamed read waiting for the reader.
const STREAM_BUFFERS: usize = 8;

/// The reading end of [`S3Backend::read_range_stream`].
struct S3Stream {
    rx: tokio::sync::mpsc::Receiver<opendal::Result<Buffer>>,
    piece: Vec<u8>,
    at: usize,
    remaining: u64,
    shown: String,
    end: u64,
}

impl Read for S3Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at >= self.piece.len() {
            if self.remaining == 0 || buf.is_empty() {
                return Ok(0);
            }
            // Called from worker threads outside the client's runtime (the
            // API server runs engine calls with spawn_blocking).
            match self.rx.blocking_recv() {
                Some(Ok(piece)) => {
                    self.piece = piece.to_vec();
                    self.at = 0;
                }
                Some(Err(e)) => {
                    return Err(io::Error::other(
                        s3_error("read", &self.shown, &e).to_string(),
                    ));
                }
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{} ends before byte {}", self.shown, self.end),
                    ));
                }
            }
        }
        let rest = self.piece.get(self.at..).unwrap_or_default();
        let want = usize::try_from(self.remaining).unwrap_or(usize::MAX);
        let n = rest.len().min(buf.len()).min(want);
        buf.get_mut(..n)
            .unwrap_or_default()
            .copy_from_slice(rest.get(..n).unwrap_or_default());
        self.at += n;
        self.remaining -= n as u64;
        Ok(n)
    }
}

struct S3Staged {
    backend: S3Backend,
    kind: FileKind,
    spool: tempfile::SpooledTempFile,
}

impl Write for S3Staged {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.spool.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.spool.flush()
    }
}

impl StagedFile for S3Staged {
    fn commit(self: Box<Self>, name: &str) -> Result<()> {
        let Self {
            backend,
            kind,
            spool,
        } = *self;
        let key = S3Backend::key(kind, name)?;
        // An in-memory spool is handed over as it is, without a copy.
        let data = match spool.into_inner() {
            tempfile::SpooledData::InMemory(cursor) => cursor.into_inner(),
            tempfile::SpooledData::OnDisk(mut file) => {
                let mut data = Vec::new();
                file.seek(SeekFrom::Start(0))
                    .and_then(|_| file.read_to_end(&mut data))
                    .map_err(|e| Error::Backend {
                        op: "write",
                        path: format!("the local spool of {key}"),
                        source: e,
                    })?;
                data
            }
        };
        backend.put(&key, Buffer::from(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_with_tls_by_default_and_the_right_style() {
        let l = S3Location::parse("s3:https://s3.example.net:9000/bucket/some/prefix/").unwrap();
        assert_eq!(l.endpoint, "https://s3.example.net:9000");
        assert_eq!(
            (l.bucket.as_str(), l.prefix.as_str()),
            ("bucket", "some/prefix")
        );
        assert_eq!(l.style, AddressStyle::Path);
        assert_eq!(
            l.to_string(),
            "s3:https://s3.example.net:9000/bucket/some/prefix"
        );

        let l = S3Location::parse("s3:s3.eu-west-1.amazonaws.com/backups").unwrap();
        assert_eq!(l.endpoint, "https://s3.eu-west-1.amazonaws.com");
        assert_eq!(l.prefix, "");
        assert_eq!(l.style, AddressStyle::VirtualHost);

        let l = S3Location::parse("s3:http://127.0.0.1:3900/b/p?style=virtual").unwrap();
        assert_eq!(l.endpoint, "http://127.0.0.1:3900");
        assert_eq!(l.style, AddressStyle::VirtualHost);
        let l = S3Location::parse("s3:https://x.amazonaws.com/b?style=path").unwrap();
        assert_eq!(l.style, AddressStyle::Path);
    }

    #[test]
    fn bad_locations_say_what_is_wrong() {
        for (url, why) in [
            ("s3:https://host", "bucket is missing"),
            ("s3:https:///bucket", "host is missing"),
            ("s3:https://key:secret@host/bucket", "credentials belong"),
            ("s3:ftp://host/bucket", "only http"),
            ("s3:https://host/bucket/a//b", "empty, '.' or '..'"),
            ("s3:https://host/bucket/../x", "empty, '.' or '..'"),
            ("s3:https://host/bucket?style=odd", "unknown option"),
            ("s3:https://host/my.bucket?style=virtual", "with dots"),
            ("/not/s3", "not an s3: location"),
        ] {
            let e = S3Location::parse(url).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
            assert!(e.contains("s3:https://HOST"), "{url}: {e}");
        }
    }

    #[test]
    fn keys_follow_the_local_layout() {
        let id = "ab".repeat(32);
        assert_eq!(
            S3Backend::key(FileKind::Config, "config").unwrap(),
            "config"
        );
        assert_eq!(
            S3Backend::key(FileKind::Pack, &id).unwrap(),
            format!("data/ab/{id}")
        );
        assert_eq!(
            S3Backend::key(FileKind::Snapshot, &id).unwrap(),
            format!("snapshots/{id}")
        );
        assert!(S3Backend::key(FileKind::Index, "../config").is_err());
    }
}
