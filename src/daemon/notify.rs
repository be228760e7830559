//! Alerts and their delivery: a backup that failed, a source whose newest
//! snapshot is too old, a repository running out of space, told to a
//! command (`--notify-command`) and to a webhook (`--notify-url`).
//!
//! An [`Alert`] is a small JSON object:
//!
//! ```json
//! {"kind": "stale", "app": "shop", "component": "db", "host": "web1",
//!  "message": "shop/db on web1: newest snapshot is 3d 0h old (limit 1d 0h)",
//!  "time": "2026-11-24T03:00:00Z", "repository": "/srv/backup",
//!  "last_snapshot_time": "2026-11-21T03:00:00Z", "age_seconds": 259200}
//! ```
//!
//! `kind` is `failure`, `stale` or `low_space`; `app` is empty for plain
//! backups, and `app`, `component` and `host` are empty for `low_space`.
//! Alerts carry no secrets: no password, and the command run for one gets
//! an environment without `CAIRN_PASSWORD`.
//!
//! A command runs through `sh -c` with the alert as JSON on standard input
//! and in `CAIRN_ALERT_JSON`, and its kind and message in
//! `CAIRN_ALERT_KIND` and `CAIRN_ALERT_MESSAGE`. A URL gets an HTTP(S)
//! `POST` of the JSON (`Content-Type: application/json`), with a timeout
//! and retries. [`send`] tries every configured target and fails if any
//! failed; callers report that and keep their own exit code.
//!
//! Free space ([`free_space`], [`MinFree`]) is what an unprivileged user
//! may still write on the file system holding a local repository.

use std::fmt;
use std::io::Write as _;
use std::os::fd::AsFd as _;
use std::path::Path;
use std::process::Stdio;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::ops::status::{Source, SourceStatus};

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A backup or snapshot attempt failed after the source's newest
    /// snapshot.
    Failure,
    /// The source's newest snapshot is older than the limit, or there is
    /// none.
    Stale,
    /// Free space at the repository is below the limit.
    LowSpace,
}

impl AlertKind {
    /// `failure`, `stale` or `low_space`, as in the JSON.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failure => "failure",
            Self::Stale => "stale",
            Self::LowSpace => "low_space",
        }
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing to tell someone about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    /// What it is about.
    pub kind: AlertKind,
    /// The application, empty for plain backups and `low_space`.
    pub app: String,
    /// The component (for plain backups, the paths), empty for
    /// `low_space`.
    pub component: String,
    /// The host, empty for `low_space`.
    pub host: String,
    /// One line for a person.
    pub message: String,
    /// When the alert was raised (RFC 3339).
    #[serde(serialize_with = "rfc3339")]
    pub time: jiff::Timestamp,
    /// The repository's location.
    pub repository: String,
    /// The source's newest snapshot, if any.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_rfc3339"
    )]
    pub last_snapshot_time: Option<jiff::Timestamp>,
    /// Seconds since that snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<i64>,
    /// For `failure`: when the attempt failed.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_rfc3339"
    )]
    pub failed_at: Option<jiff::Timestamp>,
    /// For `failure`: its error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For `low_space`: bytes an unprivileged user can still write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
    /// For `low_space`: the file system's size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<u64>,
    /// For `low_space`: the limit, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_free_bytes: Option<u64>,
}

/// A timestamp as an RFC 3339 string (`2026-11-24T03:00:00Z`).
fn rfc3339<S: serde::Serializer>(t: &jiff::Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(t)
}

/// An optional timestamp as an RFC 3339 string or null.
// serde's `serialize_with` hands over `&Option<T>`.
#[allow(clippy::ref_option)]
fn opt_rfc3339<S: serde::Serializer>(t: &Option<jiff::Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.collect_str(t),
        None => s.serialize_none(),
    }
}

/// `shop/db on web1`, or `/etc /srv on web1` for plain backups.
fn describe(s: &Source) -> String {
    if s.app.is_empty() {
        format!("{} on {}", s.component, s.host)
    } else {
        format!("{}/{} on {}", s.app, s.component, s.host)
    }
}

/// `3d 4h`, `5h 2m`, `40s` style ages.
#[must_use]
pub fn human_age(secs: i64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m")
    } else {
        format!("{secs}s")
    }
}

impl Alert {
    fn blank(kind: AlertKind, message: String, now: jiff::Timestamp, repository: &str) -> Self {
        Self {
            kind,
            app: String::new(),
            component: String::new(),
            host: String::new(),
            message,
            time: now,
            repository: repository.to_owned(),
            last_snapshot_time: None,
            age_seconds: None,
            failed_at: None,
            error: None,
            free_bytes: None,
            total_bytes: None,
            min_free_bytes: None,
        }
    }

    fn for_source(
        kind: AlertKind,
        s: &SourceStatus,
        message: String,
        now: jiff::Timestamp,
        repository: &str,
    ) -> Self {
        Self {
            app: s.source.app.clone(),
            component: s.source.component.clone(),
            host: s.source.host.clone(),
            last_snapshot_time: s.last.map(|(_, t)| t),
            age_seconds: s.age_secs(now),
            ..Self::blank(kind, message, now, repository)
        }
    }

    /// A `failure` alert for a source whose last attempt failed, or `None`
    /// when it did not.
    #[must_use]
    pub fn failure(s: &SourceStatus, now: jiff::Timestamp, repository: &str) -> Option<Self> {
        let (when, error) = s.failure.as_ref()?;
        Some(Self {
            failed_at: Some(*when),
            error: Some(error.clone()),
            ..Self::for_source(
                AlertKind::Failure,
                s,
                format!(
                    "{}: backup failed at {}: {error}",
                    describe(&s.source),
                    when.strftime("%Y-%m-%d %H:%M:%S UTC")
                ),
                now,
                repository,
            )
        })
    }

    /// A `failure` alert for an attempt that just failed, for callers that
    /// run backups themselves (a scheduler, the daemon) and have no
    /// [`SourceStatus`] at hand.
    #[must_use]
    pub fn run_failed(
        source: &Source,
        error: &str,
        now: jiff::Timestamp,
        repository: &str,
    ) -> Self {
        Self {
            app: source.app.clone(),
            component: source.component.clone(),
            host: source.host.clone(),
            failed_at: Some(now),
            error: Some(error.to_owned()),
            ..Self::blank(
                AlertKind::Failure,
                format!("{}: backup failed: {error}", describe(source)),
                now,
                repository,
            )
        }
    }

    /// A `stale` alert for a source whose newest snapshot is older than
    /// `max_age_secs` (or that has none), or `None` when it is fresh.
    #[must_use]
    pub fn stale(
        s: &SourceStatus,
        max_age_secs: i64,
        now: jiff::Timestamp,
        repository: &str,
    ) -> Option<Self> {
        let message = match s.age_secs(now) {
            Some(age) if age <= max_age_secs => return None,
            Some(age) => format!(
                "{}: newest {} is {} old (limit {})",
                describe(&s.source),
                if s.watch.is_some() {
                    "moment its watcher stored"
                } else {
                    "snapshot"
                },
                human_age(age),
                human_age(max_age_secs)
            ),
            None => format!("{}: no snapshot yet", describe(&s.source)),
        };
        Some(Self::for_source(
            AlertKind::Stale,
            s,
            message,
            now,
            repository,
        ))
    }

    /// A `low_space` alert when `free` is below `min`, else `None`.
    #[must_use]
    pub fn low_space(
        free: &FreeSpace,
        min: &MinFree,
        now: jiff::Timestamp,
        repository: &str,
    ) -> Option<Self> {
        let limit = min.bytes(free);
        if free.available >= limit {
            return None;
        }
        Some(Self {
            free_bytes: Some(free.available),
            total_bytes: Some(free.total),
            min_free_bytes: Some(limit),
            ..Self::blank(
                AlertKind::LowSpace,
                format!(
                    "{repository}: {} free of {}, below the limit of {min}",
                    bytesize::ByteSize(free.available).display().iec(),
                    bytesize::ByteSize(free.total).display().iec(),
                ),
                now,
                repository,
            )
        })
    }

    /// The alert as one line of JSON.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            // Serializing plain strings, numbers and timestamps cannot fail;
            // keep the kind and message if it somehow does.
            serde_json::json!({
                "kind": self.kind,
                "message": self.message,
                "serialize_error": e.to_string(),
            })
            .to_string()
        })
    }
}

/// Where alerts go. Both targets may be set; neither means alerts are only
/// reported by the caller.
#[derive(Debug, Clone)]
pub struct Notifier {
    /// A shell command run for every alert.
    pub command: Option<String>,
    /// An `http://` or `https://` URL every alert is POSTed to.
    pub url: Option<String>,
    /// How long one POST may take.
    pub timeout: Duration,
    /// How long the command may run before it is killed.
    pub command_timeout: Duration,
    /// How many times a failed POST is tried again.
    pub retries: u32,
    /// The pause before the first retry; it doubles for each further one.
    pub retry_pause: Duration,
}

impl Default for Notifier {
    fn default() -> Self {
        Self {
            command: None,
            url: None,
            timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(60),
            retries: 2,
            retry_pause: Duration::from_secs(1),
        }
    }
}

impl Notifier {
    /// A notifier for a command and/or a URL, with the default timeout and
    /// retries.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the URL is not an `http://` or `https://`
    /// URL, or the command is empty.
    pub fn new(command: Option<String>, url: Option<String>) -> Result<Self> {
        if let Some(c) = &command
            && c.trim().is_empty()
        {
            return Err(Error::invalid(
                "--notify-command is empty: give a shell command, such as 'mail -s cairn ops@example.com'",
            ));
        }
        if let Some(u) = &url {
            check_url(u)?;
        }
        Ok(Self {
            command,
            url,
            ..Self::default()
        })
    }

    /// True when there is nowhere to send alerts.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.command.is_none() && self.url.is_none()
    }
}

/// Checks that `url` is an absolute `http`/`https` URL with a host.
fn check_url(url: &str) -> Result<()> {
    let bad = |why: &str| {
        Error::invalid(format!(
            "--notify-url '{}': {why}; give an http:// or https:// URL such as https://hooks.example.com/cairn",
            redact(url)
        ))
    };
    let uri: ureq::http::Uri = url.parse().map_err(|e| bad(&format!("{e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(bad(&format!("scheme {other} is not supported"))),
        None => return Err(bad("it has no scheme")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    Ok(())
}

/// The URL without user information, path or query, which may hold
/// tokens (webhook URLs often do): `https://hooks.example.com/…`.
#[must_use]
pub fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    let more = if rest.len() > authority.len() {
        "/…"
    } else {
        ""
    };
    if scheme.is_empty() {
        format!("{host}{more}")
    } else {
        format!("{scheme}://{host}{more}")
    }
}

/// Delivers `alert` to every target of `notifier`: the command, then the
/// URL. Both are tried even if the first fails.
///
/// # Errors
/// [`Error::Notify`] naming each target that failed and why.
pub fn send(notifier: &Notifier, alert: &Alert) -> Result<()> {
    let json = alert.to_json();
    let mut problems = Vec::new();
    if let Some(cmd) = &notifier.command
        && let Err(e) = run_command(cmd, alert, &json, notifier.command_timeout)
    {
        problems.push(format!("--notify-command '{cmd}': {e}"));
    }
    if let Some(url) = &notifier.url
        && let Err(e) = post(url, &json, notifier)
    {
        problems.push(format!("--notify-url {}: {e}", redact(url)));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Notify {
            kind: alert.kind.as_str(),
            problem: problems.join("; "),
        })
    }
}

/// Runs `cmd` with the alert on stdin and in the environment; its standard
/// output goes to cairn's standard error so that cairn's own output (JSON)
/// stays clean.
fn run_command(
    cmd: &str,
    alert: &Alert,
    json: &str,
    timeout: Duration,
) -> std::result::Result<(), String> {
    let stdout = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null());
    let mut child = crate::secrets::command("sh")
        .arg("-c")
        .arg(cmd)
        .env("CAIRN_ALERT_KIND", alert.kind.as_str())
        .env("CAIRN_ALERT_MESSAGE", &alert.message)
        .env("CAIRN_ALERT_JSON", json)
        .env("CAIRN_ALERT_APP", &alert.app)
        .env("CAIRN_ALERT_COMPONENT", &alert.component)
        .env("CAIRN_ALERT_HOST", &alert.host)
        .env("CAIRN_ALERT_REPOSITORY", &alert.repository)
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run sh: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input closes the pipe early:
        // not an error.
        match stdin
            .write_all(json.as_bytes())
            .and_then(|()| stdin.write_all(b"\n"))
        {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(e) => return Err(format!("cannot write the alert to its input: {e}")),
        }
    }
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("it failed ({status})")),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "it was still running after {}s and was killed",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("cannot wait for it: {e}")),
        }
    }
}

/// POSTs `json` to `url`, retrying transport errors, 429 and 5xx answers.
fn post(url: &str, json: &str, n: &Notifier) -> std::result::Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(n.timeout))
        .http_status_as_error(true)
        .user_agent(concat!("cairn/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut pause = n.retry_pause;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = agent
            .post(url)
            .header("Content-Type", "application/json")
            .send(json);
        let err = match result {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let retry = match &err {
            ureq::Error::StatusCode(code) => *code == 429 || *code >= 500,
            _ => true,
        };
        if !retry || attempt > n.retries {
            let tries = if attempt == 1 {
                String::new()
            } else {
                format!(" (after {attempt} attempts)")
            };
            return Err(match err {
                ureq::Error::StatusCode(code) => {
                    format!("the server answered HTTP {code}{tries}")
                }
                other => format!("{other}{tries}"),
            });
        }
        std::thread::sleep(pause);
        pause = pause.saturating_mul(2);
    }
}

/// Space on the file system holding a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreeSpace {
    /// Bytes an unprivileged user can still write (`f_bavail × f_frsize`).
    pub available: u64,
    /// The file system's size in bytes (`f_blocks × f_frsize`).
    pub total: u64,
}

/// The free space of the file system holding `path`, as available to
/// unprivileged users.
///
/// # Errors
/// [`Error::Invalid`] naming the path when it cannot be examined.
pub fn free_space(path: &Path) -> Result<FreeSpace> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|e| {
        Error::invalid(format!(
            "cannot find the free space at {}: {e}; check that the repository exists and is a local directory",
            path.display()
        ))
    })?;
    // The field types are c_ulong / fsblkcnt_t: u64 on 64-bit Linux, u32
    // on some 32-bit targets; `from` widens portably.
    #[allow(clippy::useless_conversion)]
    let frsize = u64::from(st.fragment_size());
    #[allow(clippy::useless_conversion)]
    let (avail, blocks) = (u64::from(st.blocks_available()), u64::from(st.blocks()));
    Ok(FreeSpace {
        available: avail.saturating_mul(frsize),
        total: blocks.saturating_mul(frsize),
    })
}

/// A free-space limit: an absolute size or a share of the file system.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinFree {
    /// At least this many bytes.
    Bytes(u64),
    /// At least this percentage (0–100) of the file system's size.
    Percent(f64),
}

impl MinFree {
    /// The limit in bytes for a file system of `free.total` bytes.
    #[must_use]
    pub fn bytes(&self, free: &FreeSpace) -> u64 {
        match *self {
            Self::Bytes(n) => n,
            // Exact enough: a percentage of a size, rounded up.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Self::Percent(p) => (free.total as f64 * p / 100.0).ceil() as u64,
        }
    }
}

impl fmt::Display for MinFree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bytes(n) => write!(f, "{}", bytesize::ByteSize(*n).display().iec()),
            Self::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl FromStr for MinFree {
    type Err = Error;

    /// `10GiB`, `500 MB`, `1048576` (bytes) or `5%`.
    fn from_str(text: &str) -> Result<Self> {
        let bad = |why: String| {
            Error::invalid(format!(
                "--min-free '{text}': {why}; give a size such as 10GiB or 500MB, or a share such as 5%"
            ))
        };
        let t = text.trim();
        if let Some(p) = t.strip_suffix('%') {
            let p: f64 = p
                .trim()
                .parse()
                .map_err(|e| bad(format!("not a percentage ({e})")))?;
            if !(0.0..=100.0).contains(&p) {
                return Err(bad("a percentage is between 0 and 100".to_owned()));
            }
            return Ok(Self::Percent(p));
        }
        t.parse::<bytesize::ByteSize>()
            .map(|b| Self::Bytes(b.as_u64()))
            .map_err(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_min_free_parses_sizes_and_percentages() {
        assert_eq!("1B".parse::<MinFree>().ok(), Some(MinFree::Bytes(1)));
        assert_eq!(
            "10GiB".parse::<MinFree>().ok(),
            Some(MinFree::Bytes(10 << 30))
        );
        assert_eq!(
            "500 MB".parse::<MinFree>().ok(),
            Some(MinFree::Bytes(500_000_000))
        );
        assert_eq!("5%".parse::<MinFree>().ok(), Some(MinFree::Percent(5.0)));
        assert!("1000PiB".parse::<MinFree>().is_ok());
        for bad in ["", "lots", "10 parsecs", "150%", "-3%"] {
            let e = bad.parse::<MinFree>().err().map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|e| e.contains("--min-free")),
                "{bad}: {e:?}"
            );
        }
        let fs = FreeSpace {
            available: 10,
            total: 1000,
        };
        assert_eq!(MinFree::Percent(5.0).bytes(&fs), 50);
        assert_eq!(MinFree::Bytes(7).bytes(&fs), 7);
    }

    #[test]
    fn notify_urls_are_checked_and_redacted() {
        assert!(Notifier::new(None, Some("https://h.example/x".into())).is_ok());
        assert!(Notifier::new(None, Some("http://127.0.0.1:9/".into())).is_ok());
        for bad in ["ftp://h/x", "h.example/x", "https://", "not a url"] {
            assert!(Notifier::new(None, Some(bad.into())).is_err(), "{bad}");
        }
        assert!(Notifier::new(Some("  ".into()), None).is_err());
        assert_eq!(
            redact("https://user:tok@hooks.example.com/services/SECRET?x=1"),
            "https://hooks.example.com/…"
        );
        assert_eq!(redact("http://127.0.0.1:80"), "http://127.0.0.1:80");
    }

    #[test]
    fn notify_alerts_only_for_stale_failing_or_low_space() {
        let now = jiff::Timestamp::from_second(1_000_000).expect("time");
        let old = jiff::Timestamp::from_second(1_000_000 - 3 * 86_400).expect("time");
        let s = SourceStatus {
            source: Source {
                app: "shop".into(),
                component: "db".into(),
                host: "web1".into(),
            },
            last: Some((crate::id::SnapshotId([1; 32]), old)),
            duration_ms: 0,
            bytes_added: 0,
            snapshots: 1,
            failure: None,
            failures_total: 0,
            watch: None,
        };
        assert!(Alert::stale(&s, 4 * 86_400, now, "/r").is_none());
        assert!(Alert::failure(&s, now, "/r").is_none());
        let a = Alert::stale(&s, 86_400, now, "/r").expect("stale");
        assert_eq!(a.kind, AlertKind::Stale);
        assert_eq!(a.age_seconds, Some(3 * 86_400));
        let v: serde_json::Value = serde_json::from_str(&a.to_json()).expect("json");
        assert_eq!(v["kind"], "stale");
        assert_eq!(v["app"], "shop");
        assert_eq!(v["repository"], "/r");
        assert!(v.get("error").is_none());
        let f = Alert::run_failed(&s.source, "disk on fire", now, "/r");
        assert_eq!(f.kind, AlertKind::Failure);
        assert!(f.message.contains("shop/db on web1") && f.message.contains("disk on fire"));
        let fs = FreeSpace {
            available: 10,
            total: 100,
        };
        assert!(Alert::low_space(&fs, &MinFree::Bytes(10), now, "/r").is_none());
        let low = Alert::low_space(&fs, &MinFree::Percent(50.0), now, "/r").expect("low");
        assert_eq!(low.min_free_bytes, Some(50));
        assert_eq!(low.kind.as_str(), "low_space");
    }
}
