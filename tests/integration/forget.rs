//! Forget: the retention plan against an independent model over years of
//! snapshot times and DST changes, hand-picked calendar edge cases, and
//! `forget` on real repositories through the library and the binary.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use cairn::{
    BackupOptions, BlobId, Decision, ForgetOptions, GroupBy, KeepPolicy, NoProgress, Repository,
    Snapshot, SnapshotFilter, SnapshotId, Summary,
};
use jiff::civil::{DateTime, date};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Span, Timestamp};
use proptest::prelude::*;

use super::util::{Dir, assert_verifies, backup_path, cairn, init_repo, open_repo, run, stdout};

fn tz(name: &str) -> TimeZone {
    TimeZone::get(name).expect("time zone")
}

fn snap_at(ts: Timestamp, tags: &[&str]) -> Snapshot {
    Snapshot {
        time: ts.as_second(),
        time_nsec: 0,
        hostname: "host".into(),
        username: "user".into(),
        uid: 0,
        gid: 0,
        paths: vec![b"/data".to_vec()],
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        excludes: Vec::new(),
        parent: None,
        tree: BlobId::default(),
        summary: Summary::default(),
        program_version: "test".into(),
        app: None,
        databases: Vec::new(),
        original: None,
    }
}

/// The instant of a wall-clock time in `zone`; `later` picks the second
/// pass through a repeated time.
fn at(zone: &TimeZone, dt: DateTime, later: bool) -> Timestamp {
    let amb = zone.to_ambiguous_timestamp(dt);
    if later {
        amb.later().expect("time")
    } else {
        amb.earlier().expect("time")
    }
}

fn sid(n: usize) -> SnapshotId {
    let mut b = [0u8; 32];
    b[0] = (n >> 8) as u8;
    b[1] = n as u8;
    SnapshotId(b)
}

/// Plans `snaps` (ids in order) and returns the kept ids with reasons.
fn kept(
    policy: &KeepPolicy,
    snaps: &[Snapshot],
    zone: &TimeZone,
) -> Vec<(SnapshotId, Vec<String>)> {
    let group: Vec<(SnapshotId, &Snapshot)> =
        snaps.iter().enumerate().map(|(i, s)| (sid(i), s)).collect();
    cairn::plan(policy, &group, zone)
        .expect("plan")
        .into_iter()
        .filter(|d| d.keep)
        .map(|d| (d.id, d.reasons))
        .collect()
}

/// As [`kept`], with the rollback window measured from `now`.
fn kept_at(
    policy: &KeepPolicy,
    snaps: &[Snapshot],
    zone: &TimeZone,
    now: Timestamp,
) -> Vec<(SnapshotId, Vec<String>)> {
    let group: Vec<(SnapshotId, &Snapshot)> =
        snaps.iter().enumerate().map(|(i, s)| (sid(i), s)).collect();
    cairn::plan_at(policy, &group, zone, now)
        .expect("plan")
        .into_iter()
        .filter(|d| d.keep)
        .map(|d| (d.id, d.reasons))
        .collect()
}

// ---------------------------------------------------------------------------
// The reference model.
//
// It is written rule by rule rather than snapshot by snapshot, names periods
// by formatting the wall-clock time, counts a rule's periods as a set of
// distinct names, and does month arithmetic by hand. (Keeping the first
// snapshot of each new name is the same as the library's "period differs
// from the last kept one" because periods never go back in time in these
// zones: the repeated hour of a fall-back is one name.)

/// A duration by its parts, so the model can do the arithmetic itself.
#[derive(Debug, Clone, Copy)]
struct Parts {
    years: i64,
    months: i64,
    weeks: i64,
    days: i64,
    hours: i64,
}

impl Parts {
    fn span(self) -> Span {
        Span::new()
            .years(self.years)
            .months(self.months)
            .weeks(self.weeks)
            .days(self.days)
            .hours(self.hours)
    }

    /// The earliest time kept by `within self` from `newest`: months and
    /// years back on the calendar (the day clamped to the month's length),
    /// then weeks and days back on the calendar, at the same wall-clock
    /// time (resolved as RFC 5545 does: the later side of a gap, the
    /// earlier pass of a fold), then hours back in absolute time.
    fn cutoff(self, newest: Timestamp, zone: &TimeZone) -> Timestamp {
        let mut ts = newest;
        if self.years != 0 || self.months != 0 || self.weeks != 0 || self.days != 0 {
            let wall = zone.to_datetime(newest);
            let month_index = i64::from(wall.year()) * 12 + i64::from(wall.month())
                - 1
                - (self.years * 12 + self.months);
            let year = i16::try_from(month_index.div_euclid(12)).expect("year");
            let month = i8::try_from(month_index.rem_euclid(12) + 1).expect("month");
            let day = wall.day().min(date(year, month, 1).days_in_month());
            let day = date(year, month, day)
                .checked_sub(Span::new().days(self.weeks * 7 + self.days))
                .expect("date");
            ts = zone
                .to_ambiguous_timestamp(day.to_datetime(wall.time()))
                .compatible()
                .expect("time");
        }
        ts.checked_sub(SignedDuration::from_hours(self.hours))
            .expect("time")
    }
}

/// A rule set the model understands.
#[derive(Debug, Clone)]
struct Rules {
    last: Option<i64>,
    /// hourly, daily, weekly, monthly, yearly
    counts: [Option<i64>; 5],
    within: Option<Parts>,
    withins: [Option<Parts>; 5],
    tags: Vec<String>,
}

const PERIODS: [(&str, &str); 5] = [
    ("hourly", "%Y-%m-%d %H"),
    ("daily", "%Y-%m-%d"),
    ("weekly", "%G-W%V"),
    ("monthly", "%Y-%m"),
    ("yearly", "%Y"),
];

impl Rules {
    fn policy(&self) -> KeepPolicy {
        let mut p = KeepPolicy::default();
        p.last = self.last;
        [p.hourly, p.daily, p.weekly, p.monthly, p.yearly] = self.counts;
        p.within = self.within.map(Parts::span);
        let [h, d, w, m, y] = self.withins.map(|w| w.map(Parts::span));
        (
            p.within_hourly,
            p.within_daily,
            p.within_weekly,
            p.within_monthly,
            p.within_yearly,
        ) = (h, d, w, m, y);
        p.tags.clone_from(&self.tags);
        p
    }

    fn is_empty(&self) -> bool {
        let no_count = |n: &Option<i64>| n.is_none() || *n == Some(0);
        no_count(&self.last)
            && self.counts.iter().all(no_count)
            && self.within.is_none()
            && self.withins.iter().all(Option::is_none)
            && self.tags.is_empty()
    }

    /// The kept snapshots with their reasons, newest first; `None` for an
    /// empty rule set.
    fn model(&self, snaps: &[Snapshot], zone: &TimeZone) -> Option<Vec<(SnapshotId, Vec<String>)>> {
        if self.is_empty() {
            return None;
        }
        let mut order: Vec<usize> = (0..snaps.len()).collect();
        order.sort_by(|&a, &b| (snaps[b].time, sid(b)).cmp(&(snaps[a].time, sid(a))));
        let newest = order.first().map(|&i| snaps[i].time)?;
        let newest = Timestamp::from_second(newest).expect("time");
        let name = |i: usize, format: &str| {
            Timestamp::from_second(snaps[i].time)
                .expect("time")
                .to_zoned(zone.clone())
                .strftime(format)
                .to_string()
        };
        let mut reasons: HashMap<usize, Vec<String>> = HashMap::new();
        let mut add = |i: usize, r: String| reasons.entry(i).or_default().push(r);

        if let Some(n) = self.last.filter(|&n| n != 0) {
            let take = if n == -1 { order.len() } else { n as usize };
            for &i in order.iter().take(take) {
                add(i, "last".into());
            }
        }
        for (&(rule, format), n) in PERIODS.iter().zip(self.counts) {
            let Some(n) = n.filter(|&n| n != 0) else {
                continue;
            };
            let mut names: Vec<String> = Vec::new();
            for &i in &order {
                let p = name(i, format);
                if !names.contains(&p) && (n == -1 || names.len() < n as usize) {
                    names.push(p);
                    add(i, rule.into());
                }
            }
        }
        let within =
            |i: usize, parts: Parts| snaps[i].time >= parts.cutoff(newest, zone).as_second();
        if let Some(parts) = self.within {
            for &i in &order {
                if within(i, parts) {
                    add(i, format!("within {:#}", parts.span()));
                }
            }
        }
        for (&(rule, format), parts) in PERIODS.iter().zip(self.withins) {
            let Some(parts) = parts else {
                continue;
            };
            let mut names: Vec<String> = Vec::new();
            for &i in order.iter().filter(|&&i| within(i, parts)) {
                let p = name(i, format);
                if !names.contains(&p) {
                    names.push(p);
                    add(i, format!("within-{rule} {:#}", parts.span()));
                }
            }
        }
        let mut tags: Vec<&String> = Vec::new();
        for t in &self.tags {
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        for &i in &order {
            for t in tags.iter().filter(|t| snaps[i].tags.contains(t)) {
                add(i, format!("tag {t}"));
            }
        }
        if let Some(&first) = order.first() {
            reasons
                .entry(first)
                .or_insert_with(|| vec!["newest in group".into()]);
        }
        Some(
            order
                .iter()
                .filter_map(|&i| reasons.remove(&i).map(|r| (sid(i), r)))
                .collect(),
        )
    }
}

const ZONES: [&str; 2] = ["America/New_York", "Europe/London"];

/// Times worth crowding snapshots around: every DST change of the zone from
/// 2019 to 2026, and every new year.
fn anchors(zone: &TimeZone) -> Vec<Timestamp> {
    let start = date(2019, 1, 1).to_zoned(zone.clone()).expect("start");
    let end = date(2026, 1, 1)
        .to_zoned(zone.clone())
        .expect("end")
        .timestamp();
    let mut out: Vec<Timestamp> = zone
        .following(start.timestamp())
        .map(|t| t.timestamp())
        .take_while(|&t| t < end)
        .collect();
    for y in 2019..=2025 {
        out.push(
            date(y, 1, 1)
                .to_zoned(zone.clone())
                .expect("new year")
                .timestamp(),
        );
    }
    out
}

/// How one snapshot's time is drawn.
#[derive(Debug, Clone)]
struct TimeDraw {
    kind: u8,
    anchor: prop::sample::Index,
    offset: i64,
    tags: u8,
}

fn time_draw() -> impl Strategy<Value = TimeDraw> {
    (
        0u8..4,
        any::<prop::sample::Index>(),
        0i64..(6 * 366 * 86_400),
        any::<u8>(),
    )
        .prop_map(|(kind, anchor, offset, tags)| TimeDraw {
            kind,
            anchor,
            offset,
            tags,
        })
}

/// Snapshots from draws: spread over six years, within days of an anchor,
/// or within two hours of one in whole minutes (so that some share a time
/// and many share an hour, including a repeated one).
fn snapshots(draws: &[TimeDraw], zone: &TimeZone) -> Vec<Snapshot> {
    let anchors = anchors(zone);
    let base = date(2019, 6, 1)
        .to_zoned(zone.clone())
        .expect("base")
        .timestamp();
    draws
        .iter()
        .map(|d| {
            let anchor = *d.anchor.get(&anchors);
            let t = match d.kind {
                0 => base.as_second() + d.offset,
                1 => anchor.as_second() + d.offset % (6 * 86_400) - 3 * 86_400,
                _ => anchor.as_second() + (d.offset % 240 - 120) * 60,
            };
            let tags: Vec<&str> = ["a", "b", "c"]
                .into_iter()
                .enumerate()
                .filter(|(bit, _)| d.tags & (1 << bit) != 0)
                .map(|(_, t)| t)
                .collect();
            snap_at(Timestamp::from_second(t).expect("time"), &tags)
        })
        .collect()
}

fn count() -> impl Strategy<Value = Option<i64>> {
    prop_oneof![
        4 => Just(None),
        1 => Just(Some(0)),
        1 => Just(Some(-1)),
        3 => (1i64..8).prop_map(Some),
    ]
}

fn parts() -> impl Strategy<Value = Option<Parts>> {
    let calendar = (0i64..3, 0i64..15, 0i64..3, 0i64..40);
    prop_oneof![
        5 => Just(None),
        2 => calendar.clone().prop_map(|(years, months, weeks, days)| Some(Parts { years, months, weeks, days, hours: 0 })),
        1 => (0i64..100).prop_map(|hours| Some(Parts { years: 0, months: 0, weeks: 0, days: 0, hours })),
        1 => (calendar, 0i64..30).prop_map(|((years, months, weeks, days), hours)| Some(Parts { years, months, weeks, days, hours })),
    ]
}

fn rules() -> impl Strategy<Value = Rules> {
    (
        count(),
        [count(), count(), count(), count(), count()],
        parts(),
        [parts(), parts(), parts(), parts(), parts()],
        prop::collection::vec(prop::sample::select(vec!["a", "b", "d"]), 0..3),
    )
        .prop_map(|(last, counts, within, withins, tags)| Rules {
            last,
            counts,
            within,
            withins,
            tags: tags.into_iter().map(str::to_owned).collect(),
        })
}

/// Adds snapshots just around the model's cutoff of every `within` rule,
/// (never after the newest, which would move the cutoffs), so that an
/// hour's error in span arithmetic across a DST change, or a `>` for a
/// `>=`, keeps or drops one of them.
fn probe_cutoffs(snaps: &mut Vec<Snapshot>, rules: &Rules, zone: &TimeZone) {
    let Some(newest) = snaps.iter().map(|s| s.time).max() else {
        return;
    };
    let newest_ts = Timestamp::from_second(newest).expect("time");
    for parts in std::iter::once(rules.within).chain(rules.withins).flatten() {
        let cutoff = parts.cutoff(newest_ts, zone).as_second();
        for delta in [-3601, -3600, -1800, -1, 0, 1, 1800, 3599, 3600] {
            let t = cutoff + delta;
            if t <= newest {
                snaps.push(snap_at(Timestamp::from_second(t).expect("time"), &[]));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The plan keeps exactly what the model keeps, for the same reasons;
    /// the newest is always kept; and planning the kept snapshots again
    /// keeps all of them for the same reasons (forget is idempotent).
    #[test]
    fn forget_plan_matches_the_model_and_is_idempotent(
        zone in 0..ZONES.len(),
        draws in prop::collection::vec(time_draw(), 1..40),
        rules in rules(),
        probe in prop::bool::weighted(0.8),
    ) {
        let zone = tz(ZONES[zone]);
        let mut snaps = snapshots(&draws, &zone);
        if probe {
            probe_cutoffs(&mut snaps, &rules, &zone);
        }
        let policy = rules.policy();
        let group: Vec<(SnapshotId, &Snapshot)> =
            snaps.iter().enumerate().map(|(i, s)| (sid(i), s)).collect();
        let planned = cairn::plan(&policy, &group, &zone);
        let Some(expected) = rules.model(&snaps, &zone) else {
            prop_assert!(planned.is_err(), "an empty rule set must be refused");
            return Ok(());
        };
        let planned: Vec<Decision> = planned.expect("plan");
        prop_assert_eq!(planned.len(), snaps.len());
        let got: Vec<(SnapshotId, Vec<String>)> = planned
            .iter()
            .filter(|d| d.keep)
            .map(|d| (d.id, d.reasons.clone()))
            .collect();
        prop_assert_eq!(&got, &expected);
        prop_assert!(planned.iter().all(|d| d.keep != d.reasons.is_empty()));

        let newest = snaps.iter().map(|s| s.time).max().expect("newest");
        let first = planned.first().expect("first");
        prop_assert!(first.keep);
        let first_index = (0..snaps.len()).find(|&i| sid(i) == first.id).expect("index");
        prop_assert_eq!(snaps[first_index].time, newest);

        let survivors: Vec<(SnapshotId, &Snapshot)> = group
            .iter()
            .filter(|(id, _)| got.iter().any(|(k, _)| k == id))
            .copied()
            .collect();
        let again = cairn::plan(&policy, &survivors, &zone).expect("plan again");
        let again: Vec<(SnapshotId, Vec<String>)> = again
            .into_iter()
            .map(|d| {
                assert!(d.keep, "a second plan removed {:?}", d.id);
                (d.id, d.reasons)
            })
            .collect();
        prop_assert_eq!(again, got);
    }
}

// ---------------------------------------------------------------------------
// Hand-picked cases.

#[test]
fn forget_hourly_counts_a_repeated_fall_back_hour_once() {
    // New York, 3 November 2024: 01:00-01:59 happens twice, first in EDT
    // (UTC-4) and then in EST (UTC-5).
    let ny = tz("America/New_York");
    let wall = |h, m| date(2024, 11, 3).at(h, m, 0, 0);
    let snaps = [
        snap_at(at(&ny, wall(0, 30), false), &[]), // 0: 00:30 EDT
        snap_at(at(&ny, wall(1, 15), false), &[]), // 1: 01:15 EDT
        snap_at(at(&ny, wall(1, 45), false), &[]), // 2: 01:45 EDT
        snap_at(at(&ny, wall(1, 15), true), &[]),  // 3: 01:15 EST
        snap_at(at(&ny, wall(1, 45), true), &[]),  // 4: 01:45 EST
        snap_at(at(&ny, wall(2, 15), false), &[]), // 5: 02:15 EST
    ];
    assert!(snaps[3].time - snaps[1].time == 3600, "the hour repeats");
    let mut p = KeepPolicy::default();
    p.hourly = Some(10);
    let ids: Vec<SnapshotId> = kept(&p, &snaps, &ny)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        ids,
        [sid(5), sid(4), sid(0)],
        "the repeated hour is one bucket"
    );

    // In UTC the same instants are four different hours.
    let ids: Vec<SnapshotId> = kept(&p, &snaps, &TimeZone::UTC)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, [sid(5), sid(4), sid(2), sid(0)]);

    // Two hourly buckets are 02:00 and the repeated 01:00.
    p.hourly = Some(2);
    let ids: Vec<SnapshotId> = kept(&p, &snaps, &ny)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, [sid(5), sid(4)]);
}

#[test]
fn forget_weekly_uses_iso_weeks_across_the_new_year() {
    // ISO week 1 of 2025 runs from Monday 30 December 2024 to Sunday
    // 5 January 2025.
    let london = tz("Europe/London");
    let day = |y, m, d| snap_at(at(&london, date(y, m, d).at(12, 0, 0, 0), false), &[]);
    let snaps = [
        day(2024, 12, 29), // 0: 2024-W52
        day(2024, 12, 30), // 1: 2025-W01
        day(2024, 12, 31), // 2: 2025-W01
        day(2025, 1, 1),   // 3: 2025-W01
        day(2025, 1, 5),   // 4: 2025-W01
        day(2025, 1, 6),   // 5: 2025-W02
    ];
    let mut p = KeepPolicy::default();
    p.weekly = Some(10);
    let ids: Vec<SnapshotId> = kept(&p, &snaps, &london)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        ids,
        [sid(5), sid(4), sid(0)],
        "30 December 2024 is in 2025's week 1"
    );

    // Years, by contrast, are calendar years.
    let mut p = KeepPolicy::default();
    p.yearly = Some(10);
    let ids: Vec<SnapshotId> = kept(&p, &snaps, &london)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, [sid(5), sid(2)]);
}

#[test]
fn forget_within_a_month_clamps_to_the_month_end_in_local_time() {
    // From 31 March 2024 12:00 in New York (EDT), one month back is
    // 29 February 2024 12:00 (EST): 30 days and 23 hours earlier, so the
    // span is not a fixed number of seconds.
    let ny = tz("America/New_York");
    let wall = |m, d, h, min| at(&ny, date(2024, m, d).at(h, min, 0, 0), false);
    let snaps = [
        snap_at(wall(2, 29, 11, 59), &[]), // 0: a minute too old
        snap_at(wall(2, 29, 12, 0), &[]),  // 1: exactly a month: kept
        snap_at(wall(3, 1, 0, 0), &[]),    // 2
        snap_at(wall(3, 31, 12, 0), &[]),  // 3: newest
    ];
    let mut p = KeepPolicy::default();
    p.within = Some("1mo".parse().expect("span"));
    let got = kept(&p, &snaps, &ny);
    let ids: Vec<SnapshotId> = got.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [sid(3), sid(2), sid(1)]);
    assert_eq!(got[0].1, ["within 1mo"]);

    // 30 days back is 1 March 12:00.
    p.within = Some("30 days".parse().expect("span"));
    let ids: Vec<SnapshotId> = kept(&p, &snaps, &ny)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, [sid(3)]);

    // Hours are absolute time: 743 hours (31 days less the hour that DST
    // took) reach back to 12:00 EST on 29 February, a minute more to 11:59.
    p.within = Some("743h".parse().expect("span"));
    let ids: Vec<SnapshotId> = kept(&p, &snaps, &ny)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, [sid(3), sid(2), sid(1)]);
    p.within = Some("743h 1m".parse().expect("span"));
    let ids: Vec<SnapshotId> = kept(&p, &snaps, &ny)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, [sid(3), sid(2), sid(1), sid(0)]);
}

#[test]
fn forget_within_counts_from_the_newest_snapshot_not_from_now() {
    let utc = TimeZone::UTC;
    let t = |d| {
        date(2020, 1, d)
            .at(0, 0, 0, 0)
            .to_zoned(utc.clone())
            .expect("t")
            .timestamp()
    };
    let snaps = [snap_at(t(1), &[]), snap_at(t(9), &[]), snap_at(t(10), &[])];
    let mut p = KeepPolicy::default();
    p.within = Some("1d".parse().expect("span"));
    let ids: Vec<SnapshotId> = kept(&p, &snaps, &utc)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        ids,
        [sid(2), sid(1)],
        "years ago, yet kept: within is relative"
    );
}

#[test]
fn forget_lists_every_reason_and_keeps_the_newest_of_a_tag_only_policy() {
    let utc = TimeZone::UTC;
    let t = |d, h| {
        date(2024, 5, d)
            .at(h, 0, 0, 0)
            .to_zoned(utc.clone())
            .expect("t")
            .timestamp()
    };
    let snaps = [
        snap_at(t(1, 9), &["release"]),
        snap_at(t(2, 9), &[]),
        snap_at(t(2, 18), &[]),
    ];
    let mut p = KeepPolicy::default();
    p.last = Some(1);
    p.daily = Some(2);
    p.within_daily = Some("1d".parse().expect("span"));
    p.tags = vec!["release".into()];
    let got = kept(&p, &snaps, &utc);
    assert_eq!(
        got,
        [
            (
                sid(2),
                vec!["last".into(), "daily".into(), "within-daily 1d".into()]
            ),
            (sid(0), vec!["daily".into(), "tag release".into()]),
        ]
    );

    let mut tags_only = KeepPolicy::default();
    tags_only.tags = vec!["release".into()];
    let got = kept(&tags_only, &snaps, &utc);
    assert_eq!(
        got,
        [
            (sid(2), vec!["newest in group".into()]),
            (sid(0), vec!["tag release".into()]),
        ]
    );

    assert!(cairn::plan(&KeepPolicy::default(), &[(sid(0), &snaps[0])], &utc).is_err());
}

#[test]
fn forget_keeps_rollback_points_for_the_window_and_safety_takes_no_bucket() {
    let utc = TimeZone::UTC;
    let t = |d, h, m| {
        date(2024, 5, d)
            .at(h, m, 0, 0)
            .to_zoned(utc.clone())
            .expect("t")
            .timestamp()
    };
    // `cairn run` on 20 May: pre at 10:00, post at 10:05, then hourly
    // snapshots. keep_hourly 28 keeps post (the newest of its hour), and
    // used to drop pre, whose restore command `run` printed.
    let mut snaps = vec![
        snap_at(t(20, 10, 0), &["pre"]),
        snap_at(t(20, 10, 5), &["post"]),
    ];
    for h in 11..14 {
        snaps.push(snap_at(t(20, h, 0), &[]));
    }
    let mut p = KeepPolicy::default();
    p.hourly = Some(28);
    let got = kept_at(&p, &snaps, &utc, t(20, 13, 0));
    assert!(
        got.iter()
            .any(|(id, why)| *id == sid(0) && why == &vec!["rollback 7d".to_owned()]),
        "{got:?}"
    );
    // Past the window (here 8 days later) only the rules decide, even
    // when no snapshot came after it.
    let later = t(28, 12, 0);
    let has_pre = |got: Vec<(SnapshotId, Vec<String>)>| got.iter().any(|(id, _)| *id == sid(0));
    assert!(!has_pre(kept_at(&p, &snaps, &utc, later)));
    snaps.push(snap_at(later, &[]));
    assert!(!has_pre(kept_at(&p, &snaps, &utc, later)));
    // The window is the user's to set; zero turns it off.
    p.rollback = Some("30d".parse().expect("span"));
    assert!(has_pre(kept_at(&p, &snaps, &utc, later)));
    p.rollback = Some(Span::new());
    assert!(!has_pre(kept_at(&p, &snaps[..5], &utc, t(20, 13, 0))));

    // keep_daily 30: the good dump of 3 May and the safety snapshot an
    // in-place restore took that afternoon (the broken state). The safety
    // snapshot took the day's bucket and the good one was removed.
    let snaps = [
        snap_at(t(3, 9, 0), &[]),
        snap_at(t(3, 15, 0), &["safety"]),
        snap_at(t(20, 9, 0), &[]),
    ];
    let mut p = KeepPolicy::default();
    p.daily = Some(30);
    let got = kept_at(&p, &snaps, &utc, t(20, 9, 0));
    assert_eq!(
        got,
        [
            (sid(2), vec!["daily".into()]),
            (sid(0), vec!["daily".into()])
        ],
        "the safety snapshot is past the window, the good one keeps its day"
    );
    // Within the window it is kept by that rule alone, the day's bucket
    // still going to the good snapshot; `last` does not count it either.
    let snaps = [
        snap_at(t(19, 9, 0), &[]),
        snap_at(t(19, 15, 0), &["safety"]),
        snap_at(t(20, 9, 0), &[]),
    ];
    p.last = Some(2);
    let got = kept_at(&p, &snaps, &utc, t(20, 9, 0));
    assert_eq!(
        got,
        [
            (sid(2), vec!["last".into(), "daily".into()]),
            (sid(1), vec!["rollback 7d".into()]),
            (sid(0), vec!["last".into(), "daily".into()]),
        ]
    );
    // A safety snapshot is never the "newest in group" a policy keeps.
    let mut tags_only = KeepPolicy::default();
    tags_only.tags = vec!["release".into()];
    tags_only.rollback = Some(Span::new());
    let got = kept(&tags_only, &snaps, &utc);
    assert_eq!(got, [(sid(2), vec!["newest in group".into()])]);
    let newest_is_safety = [
        snap_at(t(19, 9, 0), &[]),
        snap_at(t(20, 15, 0), &["safety"]),
    ];
    let got = kept(&tags_only, &newest_is_safety, &utc);
    assert_eq!(got, [(sid(0), vec!["newest in group".into()])]);
    // A group of safety snapshots alone keeps none past the window.
    let alone = [
        snap_at(t(1, 9, 0), &["safety"]),
        snap_at(t(2, 9, 0), &["safety"]),
    ];
    p = KeepPolicy::default();
    p.daily = Some(30);
    assert!(kept_at(&p, &alone, &utc, t(20, 9, 0)).is_empty());
    assert_eq!(kept_at(&p, &alone, &utc, t(3, 9, 0)).len(), 2);
}

// ---------------------------------------------------------------------------
// Real repositories.

fn snapshot_files(repo: &Path) -> usize {
    fs::read_dir(repo.join("snapshots"))
        .expect("snapshots")
        .count()
}

/// Backs up `src` once per tag list, changing a file each time.
fn backups(repo: &Repository, src: &Path, tags: &[&[&str]]) -> Vec<SnapshotId> {
    tags.iter()
        .enumerate()
        .map(|(i, tags)| {
            fs::write(src.join("f"), format!("version {i}")).expect("write");
            let mut opts = BackupOptions::new(vec![src.to_path_buf()]);
            opts.tags = tags.iter().map(|t| (*t).to_owned()).collect();
            cairn::backup(repo, &opts, &NoProgress).expect("backup").id
        })
        .collect()
}

#[test]
fn forget_deletes_snapshot_files_leaves_damaged_ones_and_verifies() {
    let d = Dir::new();
    let src = d.join("src");
    fs::create_dir(&src).expect("mkdir");
    let repo = init_repo(&d.join("repo"));
    let ids = backups(&repo, &src, &[&[], &[], &[], &[]]);
    // Damage the oldest: it can no longer be read, so no rule can judge it.
    let damaged = d.join("repo/snapshots").join(ids[0].to_hex());
    fs::write(&damaged, b"not a snapshot").expect("damage");

    let mut policy = KeepPolicy::default();
    policy.last = Some(1);
    let mut opts = ForgetOptions::new(policy);
    opts.dry_run = true;
    let done = cairn::forget(&repo, &opts).expect("dry run");
    assert_eq!(done.removed, [ids[2], ids[1]]);
    assert_eq!(
        snapshot_files(&d.join("repo")),
        4,
        "a dry run deletes nothing"
    );

    opts.dry_run = false;
    let done = cairn::forget(&repo, &opts).expect("forget");
    assert_eq!(done.removed, [ids[2], ids[1]]);
    assert_eq!(done.damaged.len(), 1);
    assert_eq!(done.damaged[0].0, ids[0]);
    assert!(damaged.exists(), "damaged snapshots are never removed");
    let group = &done.groups[0];
    assert_eq!(group.snapshots.len(), 3);
    assert_eq!(group.snapshots[0].0.reasons, ["last"]);

    let again = cairn::forget(&repo, &opts).expect("again");
    assert!(again.removed.is_empty(), "forget is idempotent");

    // Removed by hand, it is still a snapshot the audit log saved and no
    // forget removed: verify reports it missing, and nothing else.
    fs::remove_file(&damaged).expect("remove damaged");
    let report = cairn::verify(
        &open_repo(&d.join("repo")),
        &cairn::VerifyOptions::default(),
    )
    .expect("verify");
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(
        report.errors[0].contains(&ids[0].to_hex()) && report.errors[0].contains("missing"),
        "{:?}",
        report.errors
    );
    let left: Vec<SnapshotId> = repo
        .snapshots()
        .expect("list")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(left, [ids[3]]);
}

#[test]
fn forget_groups_and_filters_by_tags() {
    let d = Dir::new();
    let src = d.join("src");
    fs::create_dir(&src).expect("mkdir");
    let repo = init_repo(&d.join("repo"));
    let ids = backups(&repo, &src, &[&["a"], &["b"], &["a"], &["b"], &["a", "x"]]);

    let mut policy = KeepPolicy::default();
    policy.last = Some(1);
    let mut opts = ForgetOptions::new(policy.clone());
    opts.dry_run = true;
    opts.group_by = "host,paths,tags".parse::<GroupBy>().expect("group by");
    let done = cairn::forget(&repo, &opts).expect("forget");
    assert_eq!(done.groups.len(), 3, "tags a, tags a+x, tags b");
    let mut removed = done.removed.clone();
    removed.sort();
    let mut expected = vec![ids[0], ids[1]];
    expected.sort();
    assert_eq!(removed, expected, "the newest of each tag set stays");

    // Only snapshots tagged b are considered: the others are left alone.
    let mut filter = SnapshotFilter::default();
    filter.tags = vec![vec!["b".into()]];
    let mut opts = ForgetOptions::new(policy);
    opts.filter = filter;
    let done = cairn::forget(&repo, &opts).expect("forget");
    assert_eq!(done.removed, [ids[1]]);
    assert_eq!(repo.snapshots().expect("list").len(), 4);
}

#[test]
fn forget_by_id_resolves_everything_before_deleting() {
    let d = Dir::new();
    let src = d.join("src");
    fs::create_dir(&src).expect("mkdir");
    let repo = init_repo(&d.join("repo"));
    let ids = backups(&repo, &src, &[&[], &[], &[]]);

    let mut opts = ForgetOptions::default();
    opts.ids = vec![ids[0].short(), "ffffffffffffffffffffff".into()];
    assert!(cairn::forget(&repo, &opts).is_err());
    assert_eq!(
        repo.snapshots().expect("list").len(),
        3,
        "a bad id removes nothing"
    );

    opts.ids = vec![String::new()];
    assert!(
        cairn::forget(&repo, &opts).is_err(),
        "an empty prefix is refused"
    );

    let mut with_policy = ForgetOptions::default();
    with_policy.ids = vec![ids[0].short()];
    with_policy.policy.last = Some(1);
    assert!(
        cairn::forget(&repo, &with_policy).is_err(),
        "ids and rules do not mix"
    );

    opts.ids = vec![ids[0].short(), "latest".into()];
    let done = cairn::forget(&repo, &opts).expect("forget");
    let mut removed = done.removed.clone();
    removed.sort();
    let mut expected = vec![ids[0], ids[2]];
    expected.sort();
    assert_eq!(removed, expected);
    let left: Vec<SnapshotId> = repo
        .snapshots()
        .expect("list")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(left, [ids[1]], "explicit ids may remove the newest");
}

#[test]
fn forget_cli_dry_run_keep_last_and_ids() {
    let d = Dir::new();
    let repo_path = d.join("repo");
    let src = d.join("src");
    fs::create_dir(&src).expect("mkdir");
    let repo = init_repo(&repo_path);
    let mut ids = Vec::new();
    for i in 0..4 {
        fs::write(src.join("f"), format!("version {i}")).expect("write");
        ids.push(backup_path(&repo, &src).id);
    }

    let o = run(cairn(&repo_path, d.path()).args([
        "forget",
        "--keep-last",
        "2",
        "--dry-run",
        "--json",
    ]));
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["dry_run"], true);
    let removed: Vec<String> = v["removed"]
        .as_array()
        .expect("removed")
        .iter()
        .map(|x| x.as_str().expect("id").to_owned())
        .collect();
    assert_eq!(removed, [ids[1].to_hex(), ids[0].to_hex()]);
    let group = &v["groups"][0]["snapshots"];
    assert_eq!(group.as_array().expect("snapshots").len(), 4);
    assert_eq!(group[0]["keep"], true);
    assert_eq!(group[0]["reasons"][0], "last");
    assert_eq!(group[3]["keep"], false);
    assert_eq!(snapshot_files(&repo_path), 4, "a dry run removes nothing");

    let o = run(cairn(&repo_path, d.path()).args(["forget", "--keep-last", "2"]));
    assert!(o.status.success());
    assert!(stdout(&o).contains("removed 2 snapshots"));
    let o = run(cairn(&repo_path, d.path()).args(["snapshots", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let listed: Vec<&str> = v
        .as_array()
        .expect("list")
        .iter()
        .map(|s| s["id"].as_str().expect("id"))
        .collect();
    assert_eq!(listed, [ids[2].to_hex(), ids[3].to_hex()]);

    let o = run(cairn(&repo_path, d.path()).args(["forget", "--keep-last", "2"]));
    assert!(stdout(&o).contains("removed 0 snapshots"), "idempotent");

    let o = run(cairn(&repo_path, d.path()).arg("forget"));
    assert_eq!(o.status.code(), Some(1), "no rules: refused");
    assert!(String::from_utf8_lossy(&o.stderr).contains("refusing"));
    assert_eq!(snapshot_files(&repo_path), 2);

    let o = run(cairn(&repo_path, d.path()).args(["forget", &ids[2].short()]));
    assert!(o.status.success());
    assert!(stdout(&o).contains("removed 1 snapshot"));
    assert_eq!(snapshot_files(&repo_path), 1);

    assert_verifies(&open_repo(&repo_path));
}

/// The model itself: its hand-made month arithmetic clamps to the end of
/// a short month, as the hand-written month-end case above expects.
#[test]
fn forget_model_clamps_months_like_the_calendar() {
    let ny = tz("America/New_York");
    let newest = at(&ny, date(2024, 3, 31).at(12, 0, 0, 0), false);
    let parts = Parts {
        years: 0,
        months: 1,
        weeks: 0,
        days: 0,
        hours: 0,
    };
    assert_eq!(
        parts.cutoff(newest, &ny),
        at(&ny, date(2024, 2, 29).at(12, 0, 0, 0), false)
    );
    let by_zoned = newest
        .to_zoned(ny.clone())
        .checked_sub(parts.span())
        .expect("sub");
    assert_eq!(parts.cutoff(newest, &ny), by_zoned.timestamp());
}
