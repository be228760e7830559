//! When the jobs of `cairn daemon` fall due: cron expressions in a time
//! zone, and fixed intervals.
//!
//! The `[[jobs]]` of a profile are part of what `cairn.toml` declares, so
//! they are parsed and checked here, when the profile is read: every
//! command that reads a profile reports a bad job, not only the daemon.
//! The daemon (`crate::daemon`) runs the jobs it is handed; it keeps the
//! state of their runs and depends on this module, never the other way.
//!
//! A [`Schedule`] is either a five-field cron expression (`0 2 * * *`:
//! minute, hour, day of month, month, day of week; also `@daily` and the
//! other nicknames, `L`, `W` and `#`) read on the wall clock of a time
//! zone, or an interval (`every = "6h"`).
//!
//! Parsing and matching cron expressions is the `croner` crate's work; the
//! zone, and so daylight saving time, is jiff's. Their behaviour across
//! DST transitions, which this module's tests pin down for Europe/London:
//!
//! - A time the clock skips (spring forward: 01:30 in London on the last
//!   Sunday of March) belongs to a **fixed-time** expression (`30 1 * * *`)
//!   runs once, at the first instant after the gap (02:00 BST); a
//!   wildcard or stepped expression (`*/15 * * * *`) just skips the times
//!   that do not exist.
//! - A time the clock repeats (fall back: 01:00–02:00 in London on the
//!   last Sunday of October) runs a fixed-time expression **once**, at its
//!   first occurrence; a wildcard or stepped expression runs in both passes,
//!   since its interval is the point.
//! - London changes its clocks at 01:00 UTC, so a daily 02:00 job is never
//!   skipped nor doubled: it runs every day at 02:00 local time, which is
//!   23 or 25 hours after the previous run on the transition days.
//!
//! An interval counts real (elapsed) time from the start of the job's
//! previous run, so it is unaffected by DST, and runs that take longer
//! than the interval follow each other back to back, never overlapping
//! (see `crate::daemon::daemon`).
//!
//! # Catching up
//!
//! [`Schedule::due`] is when a job next falls due, given when it last
//! started (or, if it never ran, since when it has been scheduled). A due
//! time in the past means runs were missed: however many occurrences lie
//! between then and now, the job runs **once** (the daemon then counts
//! from that run's start), and [`Schedule::missed`] says how many there
//! were, for the log.

use std::str::FromStr;

use croner::Cron;
use croner::parser::{CronParser, Seconds};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Span, SpanRelativeTo, Timestamp};

use crate::error::{Error, Result};

/// The shortest interval accepted: the daemon's clock has a resolution of
/// a fraction of a second, and a shorter interval would only mean "always".
pub const MIN_INTERVAL: SignedDuration = SignedDuration::from_secs(1);

/// When a job runs.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// A cron expression on the wall clock of a time zone.
    Cron {
        /// The expression as written (without a `TZ=` prefix).
        expr: String,
        /// The parsed expression.
        cron: Box<Cron>,
        /// The zone's name (`Europe/London`), or `system` for the
        /// machine's zone.
        zone: String,
        /// The zone.
        tz: TimeZone,
    },
    /// A fixed interval of elapsed time between the starts of runs.
    Every {
        /// The interval as written.
        text: String,
        /// The interval, at least [`MIN_INTERVAL`].
        interval: SignedDuration,
    },
}

impl Schedule {
    /// A cron schedule: five fields, optionally preceded by `TZ=ZONE` (or
    /// `CRON_TZ=ZONE`), in `timezone` (an IANA name such as
    /// `Europe/London`), else in the system's zone.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an expression croner rejects, one that never
    /// matches (`0 0 30 2 *`), an unknown zone, or a zone given both ways.
    pub fn cron(text: &str, timezone: Option<&str>) -> Result<Self> {
        let text = text.trim();
        let (prefix_zone, expr) = match text
            .strip_prefix("TZ=")
            .or_else(|| text.strip_prefix("CRON_TZ="))
        {
            Some(rest) => {
                let (zone, expr) = rest.split_once(char::is_whitespace).ok_or_else(|| {
                    Error::invalid(format!(
                        "cron '{text}': the expression is missing after the zone, e.g. \"TZ=Europe/London 0 2 * * *\""
                    ))
                })?;
                (Some(zone), expr.trim())
            }
            None => (None, text),
        };
        let zone_name = match (prefix_zone, timezone) {
            (Some(a), Some(b)) => {
                return Err(Error::invalid(format!(
                    "cron '{text}' names the zone {a} and `timezone` names {b}: give it once"
                )));
            }
            (Some(z), None) | (None, Some(z)) => Some(z),
            (None, None) => None,
        };
        let (zone, tz) = match zone_name {
            Some(name) => (
                name.to_owned(),
                TimeZone::get(name).map_err(|e| {
                    Error::invalid(format!(
                        "time zone '{name}': {e}; give an IANA name such as \"Europe/London\" or \"UTC\""
                    ))
                })?,
            ),
            None => ("system".to_owned(), TimeZone::system()),
        };
        let fields = expr.split_whitespace().count();
        if !expr.starts_with('@') && fields != 5 {
            return Err(Error::invalid(format!(
                "cron '{expr}' has {fields} fields: give five (minute hour day-of-month month day-of-week), e.g. \"0 2 * * *\""
            )));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| {
                Error::invalid(format!(
                    "cron '{expr}': {e}; give five fields (minute hour day-of-month month day-of-week), e.g. \"0 2 * * *\" or \"*/15 * * * *\""
                ))
            })?;
        let schedule = Self::Cron {
            expr: expr.to_owned(),
            cron: Box::new(cron),
            zone,
            tz,
        };
        if schedule.next_after(Timestamp::now()).is_none() {
            return Err(Error::invalid(format!(
                "cron '{expr}' never matches a date that exists"
            )));
        }
        Ok(schedule)
    }

    /// An interval schedule: `30s`, `10m`, `6h`, `1d`, `2h30m`, `6 hours`
    /// (jiff's friendly or ISO 8601 durations; days are 24 hours).
    ///
    /// # Errors
    /// [`Error::Invalid`] for text that is no duration, one in months or
    /// years (use a cron expression for calendar schedules), or one shorter
    /// than [`MIN_INTERVAL`].
    pub fn every(text: &str) -> Result<Self> {
        let hint = "give a duration such as \"30s\", \"10m\", \"6h\" or \"1d\"";
        let span = Span::from_str(text.trim())
            .map_err(|e| Error::invalid(format!("every '{text}': {e}; {hint}")))?;
        let interval = span
            .to_duration(SpanRelativeTo::days_are_24_hours())
            .map_err(|e| {
                Error::invalid(format!(
                    "every '{text}': {e}; months and years vary in length: use a cron expression (e.g. \"0 2 1 * *\") for calendar schedules"
                ))
            })?;
        if interval < MIN_INTERVAL {
            return Err(Error::invalid(format!(
                "every '{text}' is shorter than one second; {hint}"
            )));
        }
        Ok(Self::Every {
            text: text.trim().to_owned(),
            interval,
        })
    }

    /// The first time strictly after `t` the schedule names; for an
    /// interval, `t` plus the interval. `None` when there is none before
    /// the year 5000 (croner's limit) or the sum overflows.
    #[must_use]
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        match self {
            Self::Cron { cron, tz, .. } => cron
                .find_next_occurrence(&t.to_zoned(tz.clone()), false)
                .ok()
                .map(|z| z.timestamp()),
            Self::Every { interval, .. } => t.checked_add(*interval).ok(),
        }
    }

    /// When a job on this schedule is next due: the first occurrence after
    /// its last start, or, when it never ran, after `since` (when the daemon
    /// began scheduling it). An interval job that never ran is due at
    /// `since`: its first run is right away.
    ///
    /// A result at or before now means the job is due now, however many
    /// occurrences were missed: it runs once.
    #[must_use]
    pub fn due(&self, last_start: Option<Timestamp>, since: Timestamp) -> Option<Timestamp> {
        match (self, last_start) {
            (Self::Every { .. }, None) => Some(since),
            (_, Some(last)) => self.next_after(last),
            (Self::Cron { .. }, None) => self.next_after(since),
        }
    }

    /// How many occurrences lie in `(after, now]`, counting up to `cap`.
    #[must_use]
    pub fn missed(&self, after: Timestamp, now: Timestamp, cap: usize) -> usize {
        let mut n = 0;
        let mut t = after;
        while n < cap {
            match self.next_after(t) {
                Some(next) if next <= now => {
                    n += 1;
                    t = next;
                }
                _ => break,
            }
        }
        n
    }

    /// True for an interval schedule.
    #[must_use]
    pub fn is_interval(&self) -> bool {
        matches!(self, Self::Every { .. })
    }
}

/// One job of a profile's `[[jobs]]`: when it runs and what it does.
#[derive(Debug, Clone)]
pub struct Job {
    /// Its name, unique in the profile; the daemon's state is kept by it.
    pub name: String,
    /// When it runs.
    pub schedule: Schedule,
    /// The components it snapshots (all of the profile's when empty).
    pub components: Vec<String>,
    /// Tags given to its snapshots.
    pub tags: Vec<String>,
    /// Apply the profile's `[retention]` to the application's snapshots
    /// after the snapshot (`cairn forget --app`).
    pub forget: bool,
    /// Then prune.
    pub prune: bool,
    /// Then verify.
    pub verify: Option<VerifyPlan>,
}

/// What a job verifies after its snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyPlan {
    /// The structure only: every snapshot's trees and the index
    /// (`"structure"`).
    Structure,
    /// Every byte (`"all"`).
    All,
    /// The structure and subset N of M of the packs' data (`"1/7"`).
    Subset(u32, u32),
    /// The structure and the next subset of M in turn, one per run, so
    /// that M runs read all data (`"*/7"`).
    Rotate(u32),
}

impl VerifyPlan {
    /// Parses `structure`, `all`, `N/M` or `*/M`.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the forms there are.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(format!(
                "verify '{text}': give \"structure\", \"all\", a subset \"N/M\" with 1 <= N <= M (e.g. \"1/7\"), or \"*/M\" to read the next subset each run"
            ))
        };
        let text = text.trim();
        match text {
            "structure" => return Ok(Self::Structure),
            "all" => return Ok(Self::All),
            _ => {}
        }
        let (n, m) = text.split_once('/').ok_or_else(bad)?;
        let m: u32 = m.trim().parse().map_err(|_| bad())?;
        if m == 0 {
            return Err(bad());
        }
        if n.trim() == "*" {
            return Ok(Self::Rotate(m));
        }
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        if (1..=m).contains(&n) {
            Ok(Self::Subset(n, m))
        } else {
            Err(bad())
        }
    }

    /// The verify options of the job's `run`-th run (0-based).
    #[must_use]
    pub fn options(self, run: u64) -> crate::ops::verify::VerifyOptions {
        let mut opts = crate::ops::verify::VerifyOptions::default();
        match self {
            Self::Structure => {}
            Self::All => opts.read_data = true,
            Self::Subset(n, m) => {
                opts.read_data = true;
                opts.subset = Some((n, m));
            }
            Self::Rotate(m) => {
                opts.read_data = true;
                // m > 0 by construction; the remainder fits in u32.
                let n = u32::try_from(run % u64::from(m.max(1))).unwrap_or(0) + 1;
                opts.subset = Some((n, m));
            }
        }
        opts
    }
}

/// A `[[jobs]]` table as written; every key is checked.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobFile {
    name: Option<String>,
    cron: Option<String>,
    timezone: Option<String>,
    every: Option<String>,
    #[serde(default)]
    components: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    forget: bool,
    #[serde(default)]
    prune: bool,
    verify: Option<String>,
}

/// Checks the `[[jobs]]` of a profile with these component names and
/// (`retention`) rules; `bad` adds the profile file to a message.
pub(crate) fn jobs(
    raw: Vec<JobFile>,
    components: &[String],
    retention: bool,
    bad: &dyn Fn(String) -> Error,
) -> Result<Vec<Job>> {
    let mut out: Vec<Job> = Vec::new();
    for (i, j) in raw.into_iter().enumerate() {
        let name = match j.name {
            Some(n) if !n.trim().is_empty() => n.trim().to_owned(),
            _ => {
                return Err(bad(format!(
                    "job {} has no `name`: give each [[jobs]] a name, e.g. name = \"nightly\"",
                    i + 1
                )));
            }
        };
        let job_err = |e: Error| bad(format!("job {name}: {e}"));
        if out.iter().any(|o| o.name == name) {
            return Err(bad(format!(
                "two jobs are called {name}: job names must differ"
            )));
        }
        let schedule = match (&j.cron, &j.every) {
            (Some(c), None) => Schedule::cron(c, j.timezone.as_deref()).map_err(job_err)?,
            (None, Some(e)) => {
                if j.timezone.is_some() {
                    return Err(bad(format!(
                        "job {name}: `timezone` goes with `cron`; an interval counts elapsed time"
                    )));
                }
                Schedule::every(e).map_err(job_err)?
            }
            _ => {
                return Err(bad(format!(
                    "job {name}: give one of `cron = \"0 2 * * *\"` or `every = \"6h\"`"
                )));
            }
        };
        for c in &j.components {
            if !components.contains(c) {
                return Err(bad(format!(
                    "job {name}: no component '{c}'; the profile has: {}",
                    components.join(", ")
                )));
            }
        }
        if j.forget && !retention {
            return Err(bad(format!(
                "job {name}: `forget = true` applies the profile's [retention] rules, and there are none: add a [retention] table"
            )));
        }
        let verify = j
            .verify
            .as_deref()
            .map(VerifyPlan::parse)
            .transpose()
            .map_err(job_err)?;
        crate::format::snapshot::check_user_tags(&j.tags).map_err(job_err)?;
        out.push(Job {
            name,
            schedule,
            components: j.components,
            tags: j.tags,
            forget: j.forget,
            prune: j.prune,
            verify,
        });
    }
    Ok(out)
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cron { expr, zone, .. } => write!(f, "cron \"{expr}\" ({zone})"),
            Self::Every { text, .. } => write!(f, "every {text}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;
    use proptest::prelude::*;

    fn london(expr: &str) -> Schedule {
        Schedule::cron(expr, Some("Europe/London")).expect("parses")
    }

    fn at(y: i16, mo: i8, d: i8, h: i8, mi: i8, zone: &str) -> Timestamp {
        date(y, mo, d)
            .at(h, mi, 0, 0)
            .in_tz(zone)
            .expect("zone")
            .timestamp()
    }

    /// All occurrences in `[from, to)`.
    fn all(s: &Schedule, from: Timestamp, to: Timestamp) -> Vec<Timestamp> {
        let mut out = Vec::new();
        let mut t = from.checked_sub(SignedDuration::from_nanos(1)).expect("t");
        while let Some(next) = s.next_after(t) {
            if next >= to {
                break;
            }
            out.push(next);
            t = next;
        }
        out
    }

    #[test]
    fn schedule_parses_cron_with_zone_prefix_and_nicknames() {
        let s = Schedule::cron("TZ=Europe/London 0 2 * * *", None).expect("prefix");
        assert_eq!(s.to_string(), "cron \"0 2 * * *\" (Europe/London)");
        let s = Schedule::cron("CRON_TZ=UTC @daily", None).expect("nickname");
        let t = at(2026, 5, 1, 12, 0, "UTC");
        assert_eq!(s.next_after(t), Some(at(2026, 5, 2, 0, 0, "UTC")));
        assert!(Schedule::cron("0 2 * * *", None).is_ok(), "system zone");
    }

    #[test]
    fn schedule_rejects_bad_cron_zones_and_intervals() {
        for (cron, zone, says) in [
            ("0 2 * *", None, "has 4 fields"),
            ("0 0 2 * * *", None, "has 6 fields"),
            ("61 2 * * *", None, "cron '61 2 * * *'"),
            (
                "0 2 * * *",
                Some("Mars/Olympus"),
                "time zone 'Mars/Olympus'",
            ),
            ("TZ=UTC 0 2 * * *", Some("UTC"), "give it once"),
            ("TZ=UTC", None, "missing after the zone"),
            ("0 0 30 2 *", Some("UTC"), "never matches"),
        ] {
            let e = Schedule::cron(cron, zone).expect_err(cron).to_string();
            assert!(e.contains(says), "{cron}: {e}");
        }
        for (every, says) in [
            ("soon", "every 'soon'"),
            ("1mo", "months and years"),
            ("500ms", "shorter than one second"),
            ("-5m", "shorter than one second"),
        ] {
            let e = Schedule::every(every).expect_err(every).to_string();
            assert!(e.contains(says), "{every}: {e}");
        }
        let s = Schedule::every("1d 2h").expect("days");
        let t = at(2026, 1, 1, 0, 0, "UTC");
        assert_eq!(s.next_after(t), Some(at(2026, 1, 2, 2, 0, "UTC")));
    }

    #[test]
    fn schedule_daily_0200_in_london_runs_once_every_day_across_dst() {
        let s = london("0 2 * * *");
        let from = at(2026, 1, 1, 0, 0, "Europe/London");
        let to = at(2027, 1, 1, 0, 0, "Europe/London");
        let runs = all(&s, from, to);
        assert_eq!(runs.len(), 365, "one run a day, none skipped or doubled");
        for r in &runs {
            let z = r.to_zoned(TimeZone::get("Europe/London").expect("tz"));
            assert_eq!((z.hour(), z.minute()), (2, 0), "{z}");
        }
        // Spring forward (29 March 2026): 23 hours after the previous run;
        // fall back (25 October 2026): 25 hours.
        let gap = |d: i8, m: i8| {
            let a = at(2026, m, d - 1, 2, 0, "Europe/London");
            s.next_after(a).expect("next").duration_since(a)
        };
        assert_eq!(gap(29, 3), SignedDuration::from_hours(23));
        assert_eq!(gap(25, 10), SignedDuration::from_hours(25));
    }

    #[test]
    fn schedule_times_the_clock_skips_or_repeats_run_once() {
        // 01:30 does not exist on 29 March 2026 in London: the run moves to
        // the end of the gap, 02:00 BST.
        let s = london("30 1 * * *");
        let day = all(
            &s,
            at(2026, 3, 29, 0, 0, "UTC"),
            at(2026, 3, 30, 0, 0, "UTC"),
        );
        assert_eq!(day, [at(2026, 3, 29, 1, 0, "UTC")], "02:00 BST = 01:00 UTC");
        // 01:30 happens twice on 25 October 2026: one run, the first
        // (01:30 BST = 00:30 UTC).
        let day = all(
            &s,
            at(2026, 10, 25, 0, 0, "UTC"),
            at(2026, 10, 26, 0, 0, "UTC"),
        );
        assert_eq!(day, [at(2026, 10, 25, 0, 30, "UTC")]);
        // A stepped expression keeps its interval through the repeated
        // hour: 00:00 to 03:00 local on that day is four real hours.
        let s = london("*/30 * * * *");
        let runs = all(
            &s,
            at(2026, 10, 25, 0, 0, "Europe/London"),
            at(2026, 10, 25, 3, 0, "Europe/London"),
        );
        assert_eq!(runs.len(), 8, "{runs:?}");
    }

    #[test]
    fn schedule_due_and_missed_count_catch_up_once() {
        let s = Schedule::cron("0 2 * * *", Some("UTC")).expect("cron");
        let since = at(2026, 6, 1, 12, 0, "UTC");
        assert_eq!(s.due(None, since), Some(at(2026, 6, 2, 2, 0, "UTC")));
        let last = at(2026, 6, 2, 2, 0, "UTC");
        assert_eq!(s.due(Some(last), since), Some(at(2026, 6, 3, 2, 0, "UTC")));
        // Down for a week: seven occurrences missed, one run due.
        let now = at(2026, 6, 9, 12, 0, "UTC");
        assert_eq!(s.missed(last, now, 1000), 7);
        assert_eq!(s.missed(last, now, 3), 3, "capped");
        let every = Schedule::every("6h").expect("every");
        assert_eq!(every.due(None, since), Some(since), "first run right away");
        assert_eq!(
            every.due(Some(last), since),
            Some(at(2026, 6, 2, 8, 0, "UTC"))
        );
        // 178 hours at 6 hours each.
        assert_eq!(every.missed(last, now, 1000), 29);
    }

    #[test]
    fn schedule_verify_plans_parse_and_rotate() {
        assert_eq!(
            VerifyPlan::parse("structure").ok(),
            Some(VerifyPlan::Structure)
        );
        assert_eq!(VerifyPlan::parse("all").ok(), Some(VerifyPlan::All));
        assert_eq!(
            VerifyPlan::parse("2/7").ok(),
            Some(VerifyPlan::Subset(2, 7))
        );
        assert_eq!(VerifyPlan::parse("*/3").ok(), Some(VerifyPlan::Rotate(3)));
        for bad in ["0/7", "8/7", "1/0", "*/0", "some", "1-7"] {
            assert!(VerifyPlan::parse(bad).is_err(), "{bad}");
        }
        let structure = VerifyPlan::Structure.options(5);
        assert!(!structure.read_data);
        let subsets: Vec<_> = (0..4)
            .map(|run| VerifyPlan::Rotate(3).options(run).subset)
            .collect();
        assert_eq!(
            subsets,
            [Some((1, 3)), Some((2, 3)), Some((3, 3)), Some((1, 3))]
        );
    }

    proptest! {
        #[test]
        fn schedule_next_is_later_and_matches(
            secs in 0i64..4_000_000_000,
            minute in prop::sample::select(vec!["0", "*/7", "15,45", "*"]),
            hour in prop::sample::select(vec!["2", "*", "1-3", "*/6"]),
            dom in prop::sample::select(vec!["*", "1", "L", "15"]),
            dow in prop::sample::select(vec!["*", "1-5", "0"]),
            zone in prop::sample::select(vec!["Europe/London", "America/New_York", "UTC", "Australia/Lord_Howe"]),
        ) {
            let expr = format!("{minute} {hour} {dom} * {dow}");
            let s = Schedule::cron(&expr, Some(zone)).expect("parses");
            let t = Timestamp::from_second(secs).expect("t");
            let next = s.next_after(t).expect("next");
            prop_assert!(next > t, "{expr} {zone}: {next} after {t}");
            let Schedule::Cron { cron, tz, .. } = &s else { unreachable!() };
            let z = next.to_zoned(tz.clone());
            // A time skipped by a DST gap runs at the first instant after
            // the gap (module docs), which the expression need not match.
            let just_before = next
                .checked_sub(SignedDuration::from_secs(1))
                .expect("t")
                .to_zoned(tz.clone());
            let gap_end = just_before.offset() < z.offset();
            prop_assert!(
                gap_end || cron.is_time_matching(&z).expect("match"),
                "{expr} {zone}: {z}"
            );
            // Nothing in between is skipped: no occurrence lies between t
            // and next, so asking again from just before next finds it.
            let before = next.checked_sub(SignedDuration::from_secs(1)).expect("t");
            prop_assert_eq!(s.next_after(before.max(t)), Some(next));
        }

        #[test]
        fn schedule_interval_next_is_exactly_one_interval_later(
            secs in 0i64..4_000_000_000,
            every in 1i64..1_000_000,
        ) {
            let s = Schedule::every(&format!("{every}s")).expect("every");
            let t = Timestamp::from_second(secs).expect("t");
            prop_assert_eq!(s.next_after(t), Some(t.checked_add(SignedDuration::from_secs(every)).expect("sum")));
        }
    }
}
