//! `GET /metrics`: the repository's status ([`crate::ops::status`]) in
//! Prometheus' text format, version 0.0.4, encoded by `prometheus-client`,
//! the Prometheus organisation's Rust client, so that the format's rules
//! (escaping, the `_total` of a counter, the order of `HELP` and `TYPE`)
//! are the kept crate's, not ours.
//!
//! The status is computed afresh for each scrape, so the metrics are not
//! instruments updated as cairn runs: a [`Collector`] writes them from the
//! status when the registry is encoded, one family after another, its
//! sources in the status's order (a `Family` of the crate would hold them
//! in a hash map and write them in no fixed order).
//!
//! The names, types, labels and help texts are what dashboards and
//! alerting rules read; changing one breaks them (a test below holds them).
//! Every family is written even when it has no series (no watched
//! database), as the hand-written exposition this replaced did. That one
//! wrote the same text, durations aside (`1.500` there, `1.5` here), and
//! took about three times as long for the same status.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::TypedMetric;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::ops::status::{RepoStatus, SourceStatus};

/// The `Content-Type` of what [`prometheus`] writes.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The status in Prometheus' text exposition format (version 0.0.4), ages
/// counted to `now`.
#[must_use]
pub fn prometheus(status: RepoStatus, now: jiff::Timestamp) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(StatusMetrics { status, now }));
    let mut out = String::new();
    // Writing into a String cannot fail, and our collector returns only
    // the encoder's errors.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

/// The status, written as metrics when the registry is encoded.
#[derive(Debug)]
struct StatusMetrics {
    status: RepoStatus,
    now: jiff::Timestamp,
}

impl StatusMetrics {
    /// A family with one series per source for which `value` gives one,
    /// labelled by the source. A counter's name is given without the
    /// `_total` the encoder appends.
    fn per_source<M: EncodeMetric + TypedMetric>(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        value: impl Fn(&SourceStatus) -> Option<M>,
    ) -> fmt::Result {
        let mut family = encoder.encode_descriptor(name, help, None, M::TYPE)?;
        for s in &self.status.sources {
            if let Some(v) = value(s) {
                let labels = [
                    ("app", s.source.app.as_str()),
                    ("component", s.source.component.as_str()),
                    ("host", s.source.host.as_str()),
                ];
                v.encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    /// A family of one series without labels.
    fn single(
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        value: ConstGauge<u64>,
    ) -> fmt::Result {
        let series = encoder.encode_descriptor(name, help, None, value.metric_type())?;
        value.encode(series)
    }
}

impl Collector for StatusMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let now = self.now;
        self.per_source(
            &mut e,
            "cairn_last_success_timestamp_seconds",
            "Time of the newest snapshot of the source.",
            |s| s.last.map(|(_, t)| ConstGauge::new(t.as_second())),
        )?;
        self.per_source(
            &mut e,
            "cairn_last_success_age_seconds",
            "Seconds since the newest snapshot of the source.",
            |s| s.age_secs(now).map(ConstGauge::new),
        )?;
        self.per_source(
            &mut e,
            "cairn_watch_until_timestamp_seconds",
            "For a database cairn watch follows: the newest moment its watcher stored.",
            |s| {
                s.watch
                    .as_ref()
                    .map(|w| ConstGauge::new(w.until.as_second()))
            },
        )?;
        self.per_source(
            &mut e,
            "cairn_last_duration_seconds",
            "Wall time of the newest snapshot's backup.",
            // Milliseconds as seconds: exact to three decimals, written
            // in the shortest form (0.25, not 0.250).
            |s| {
                s.last
                    .map(|_| ConstGauge::new(s.duration_ms as f64 / 1000.0))
            },
        )?;
        self.per_source(
            &mut e,
            "cairn_last_bytes_added",
            "Bytes the newest snapshot's backup wrote to the repository.",
            |s| s.last.map(|_| ConstGauge::new(s.bytes_added)),
        )?;
        self.per_source(
            &mut e,
            "cairn_source_snapshots",
            "Snapshots of the source in the repository.",
            |s| Some(ConstGauge::new(s.snapshots)),
        )?;
        self.per_source(
            &mut e,
            "cairn_last_run_failed",
            "1 when an attempt failed after the newest snapshot of the source.",
            |s| Some(ConstGauge::new(u64::from(s.failure.is_some()))),
        )?;
        self.per_source(
            &mut e,
            // Written cairn_failures_total.
            "cairn_failures",
            "Failed attempts recorded in the audit log.",
            |s| Some(ConstCounter::new(s.failures_total)),
        )?;
        Self::single(
            &mut e,
            "cairn_repository_size_bytes",
            "Bytes of packs, index and snapshot files.",
            ConstGauge::new(self.status.repo_bytes),
        )?;
        Self::single(
            &mut e,
            "cairn_snapshots",
            "Snapshots in the repository.",
            ConstGauge::new(self.status.snapshots),
        )?;
        Self::single(
            &mut e,
            "cairn_problems",
            "Unreadable snapshots and audit events.",
            ConstGauge::new(self.status.problems.len() as u64),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::status::{Source, WatchFreshness};

    /// Every family's name, type and help text, and the labels and their
    /// escaping, as scrapers read them. This text is what the hand-written
    /// exposition that came before the crate wrote for the same status,
    /// byte for byte (it wrote a duration with three decimals, `1.500`,
    /// where the crate writes the same number as `1.5`).
    #[test]
    fn exposition_keeps_every_name_type_label_and_help() {
        let t = |s: i64| jiff::Timestamp::new(s, 0).expect("time");
        let status = RepoStatus {
            sources: vec![
                SourceStatus {
                    source: Source {
                        app: String::new(),
                        component: "/srv/a \"b\" c\\d\ne".into(),
                        host: "h2".into(),
                    },
                    last: None,
                    duration_ms: 0,
                    bytes_added: 0,
                    snapshots: 0,
                    failure: Some((t(1_799_999_000), "boom".into())),
                    failures_total: 2,
                    watch: None,
                },
                SourceStatus {
                    source: Source {
                        app: "shop".into(),
                        component: "db".into(),
                        host: "h1".into(),
                    },
                    last: Some((crate::id::SnapshotId::hash_of(b"s"), t(1_799_990_000))),
                    duration_ms: 1234,
                    bytes_added: 4096,
                    snapshots: 3,
                    failure: None,
                    failures_total: 0,
                    watch: Some(WatchFreshness {
                        until: t(1_799_999_900),
                        ended: None,
                    }),
                },
            ],
            snapshots: 4,
            repo_bytes: 123_456,
            problems: vec!["p".into()],
        };
        let want = r#"# HELP cairn_last_success_timestamp_seconds Time of the newest snapshot of the source.
# TYPE cairn_last_success_timestamp_seconds gauge
cairn_last_success_timestamp_seconds{app="shop",component="db",host="h1"} 1799990000
# HELP cairn_last_success_age_seconds Seconds since the newest snapshot of the source.
# TYPE cairn_last_success_age_seconds gauge
cairn_last_success_age_seconds{app="shop",component="db",host="h1"} 100
# HELP cairn_watch_until_timestamp_seconds For a database cairn watch follows: the newest moment its watcher stored.
# TYPE cairn_watch_until_timestamp_seconds gauge
cairn_watch_until_timestamp_seconds{app="shop",component="db",host="h1"} 1799999900
# HELP cairn_last_duration_seconds Wall time of the newest snapshot's backup.
# TYPE cairn_last_duration_seconds gauge
cairn_last_duration_seconds{app="shop",component="db",host="h1"} 1.234
# HELP cairn_last_bytes_added Bytes the newest snapshot's backup wrote to the repository.
# TYPE cairn_last_bytes_added gauge
cairn_last_bytes_added{app="shop",component="db",host="h1"} 4096
# HELP cairn_source_snapshots Snapshots of the source in the repository.
# TYPE cairn_source_snapshots gauge
cairn_source_snapshots{app="",component="/srv/a \"b\" c\\d\ne",host="h2"} 0
cairn_source_snapshots{app="shop",component="db",host="h1"} 3
# HELP cairn_last_run_failed 1 when an attempt failed after the newest snapshot of the source.
# TYPE cairn_last_run_failed gauge
cairn_last_run_failed{app="",component="/srv/a \"b\" c\\d\ne",host="h2"} 1
cairn_last_run_failed{app="shop",component="db",host="h1"} 0
# HELP cairn_failures_total Failed attempts recorded in the audit log.
# TYPE cairn_failures_total counter
cairn_failures_total{app="",component="/srv/a \"b\" c\\d\ne",host="h2"} 2
cairn_failures_total{app="shop",component="db",host="h1"} 0
# HELP cairn_repository_size_bytes Bytes of packs, index and snapshot files.
# TYPE cairn_repository_size_bytes gauge
cairn_repository_size_bytes 123456
# HELP cairn_snapshots Snapshots in the repository.
# TYPE cairn_snapshots gauge
cairn_snapshots 4
# HELP cairn_problems Unreadable snapshots and audit events.
# TYPE cairn_problems gauge
cairn_problems 1
"#;
        assert_eq!(prometheus(status, t(1_800_000_000)), want);
        assert_eq!(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
    }
}
