//! Forget: deciding which snapshots a retention policy keeps, and deleting
//! the snapshot files of the others. Nothing else is deleted: the blobs a
//! forgotten snapshot named stay in their packs until a prune removes what
//! no snapshot uses.
//!
//! The rules follow restic's `forget`. Snapshots are first put in groups
//! (by default one per host and set of paths, see [`GroupBy`]) and each
//! group is judged on its own, newest snapshot first:
//!
//! * `last N` keeps the N newest snapshots.
//! * `hourly`, `daily`, `weekly`, `monthly`, `yearly N` walk from newest to
//!   oldest and keep a snapshot whenever its period differs from that of
//!   the last snapshot this rule kept, until N periods are kept: the newest
//!   snapshot of each of the N newest periods that have snapshots.
//! * `within D` keeps every snapshot taken at or after the group's newest
//!   snapshot's time minus D. It is measured from the newest snapshot, not
//!   from now, as restic does: a machine that stopped backing up a year ago
//!   keeps its last D of history instead of losing everything.
//! * `within-hourly D` (and daily, weekly, monthly, yearly) keeps the newest
//!   snapshot of every period among the snapshots `within D` keeps.
//! * `tag T` keeps every snapshot that has tag T.
//! * `rollback D` keeps every rollback point (tag `pre`, the state before
//!   `cairn run`'s command, whose restore command it printed) and every
//!   safety snapshot (tag `safety`, the state an in-place restore replaced)
//!   taken at or after now minus D (not the group's newest: a group of
//!   safety snapshots alone would keep its newest forever). It is
//!   always in force: [`DEFAULT_ROLLBACK_DAYS`] unless the policy sets it, and
//!   a span of zero turns it off.
//!
//! Safety snapshots hold the state a restore threw away, usually a broken
//! one: they never take a place in the other rules. `last` counts, and the
//! hourly to yearly and `within-<period>` rules bucket, only the other
//! snapshots, so a safety snapshot never displaces the good snapshot of
//! its day; and "newest in group" is never a safety snapshot.
//!
//! A count of [`UNLIMITED`] (-1) has no limit; 0 turns a rule off. A
//! snapshot is kept when any rule keeps it, and its [`Decision`] lists every
//! rule that did. The newest snapshot of a group is never removed by a
//! policy: when no rule keeps it (say, only `tag` rules that it does not
//! match), it is kept as "newest in group". A policy without any rule is
//! refused rather than read as "keep nothing".
//!
//! Two differences from restic: a snapshot exactly D older than the newest
//! is `within D` (restic keeps only strictly newer ones), and a count rule
//! that finds fewer than N periods does not also keep the group's oldest
//! snapshot (restic does since 0.16).
//!
//! Periods are read in **civil local time** in the given time zone: hour
//! (year, month, day, hour), day, ISO 8601 week (week-based year and week
//! number, so the days of week 1 that fall in December belong to the next
//! year's week), month and year. When clocks fall back and an hour repeats,
//! both passes through that hour are one hourly period; when clocks spring
//! forward the skipped hour simply has no snapshots. Durations with
//! calendar units (days, weeks, months, years) are subtracted on the
//! calendar in that zone, so `within 1mo` from 31 March reaches back to the
//! end of February and `within 1d` across a DST change is 23 or 25 hours;
//! hours and smaller units are absolute time.
//!
//! Planning ([`plan`]) is a pure function of the snapshots, the policy and
//! the zone; [`forget`] lists, filters, groups, plans and deletes. Applying
//! a plan and planning again keeps everything, so running `forget` twice
//! removes nothing the second time. Damaged snapshot files are reported and
//! never removed: their time and host cannot be read, so no rule can judge
//! them.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;

use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, Zoned};

use crate::error::{Error, Hint, Result};
use crate::format::snapshot::Snapshot;
use crate::id::SnapshotId;
use crate::repo::Repository;
use crate::repo::audit::{Audited, Event};
use crate::storage::FileKind;

/// A count meaning "no limit", as restic's `-1`.
pub const UNLIMITED: i64 = -1;

/// How many days rollback points and safety snapshots are kept when a
/// policy does not say ([`KeepPolicy::rollback`]): the window in which the
/// restore command `cairn run` or an in-place restore printed still works.
pub const DEFAULT_ROLLBACK_DAYS: i64 = 7;

/// The message for a policy without rules: forgetting with it would remove
/// every snapshot but the newest of each group, which is never what was
/// meant.
const EMPTY_POLICY: &str = "no keep rule given; refusing to remove every snapshot";

/// Which snapshots to keep. A snapshot is kept when any rule keeps it.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct KeepPolicy {
    /// Keep the N newest snapshots.
    pub last: Option<i64>,
    /// Keep the newest snapshot of each of the N newest hours.
    pub hourly: Option<i64>,
    /// Keep the newest snapshot of each of the N newest days.
    pub daily: Option<i64>,
    /// Keep the newest snapshot of each of the N newest ISO weeks.
    pub weekly: Option<i64>,
    /// Keep the newest snapshot of each of the N newest months.
    pub monthly: Option<i64>,
    /// Keep the newest snapshot of each of the N newest years.
    pub yearly: Option<i64>,
    /// Keep every snapshot within this span of the group's newest snapshot.
    pub within: Option<Span>,
    /// Keep the newest snapshot of every hour within this span.
    pub within_hourly: Option<Span>,
    /// Keep the newest snapshot of every day within this span.
    pub within_daily: Option<Span>,
    /// Keep the newest snapshot of every ISO week within this span.
    pub within_weekly: Option<Span>,
    /// Keep the newest snapshot of every month within this span.
    pub within_monthly: Option<Span>,
    /// Keep the newest snapshot of every year within this span.
    pub within_yearly: Option<Span>,
    /// Keep every snapshot that has any of these tags.
    pub tags: Vec<String>,
    /// Keep rollback points (tag `pre`) and safety snapshots (tag
    /// `safety`) taken within this span before now; `None`
    /// is [`DEFAULT_ROLLBACK_DAYS`], a zero span keeps none by this rule.
    pub rollback: Option<Span>,
}

/// A calendar period that snapshots are bucketed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Period {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

/// A period's identity in civil time: fields that do not apply are zero.
type Bucket = (i16, i8, i8, i8);

impl Period {
    fn name(self) -> &'static str {
        match self {
            Self::Hour => "hourly",
            Self::Day => "daily",
            Self::Week => "weekly",
            Self::Month => "monthly",
            Self::Year => "yearly",
        }
    }

    /// The period `t` falls in, read on the local wall clock: the two
    /// passes through a repeated hour share a bucket.
    fn bucket(self, t: &Zoned) -> Bucket {
        match self {
            Self::Hour => (t.year(), t.month(), t.day(), t.hour()),
            Self::Day => (t.year(), t.month(), t.day(), 0),
            Self::Week => {
                let w = t.date().iso_week_date();
                (w.year(), w.week(), 0, 0)
            }
            Self::Month => (t.year(), t.month(), 0, 0),
            Self::Year => (t.year(), 0, 0, 0),
        }
    }
}

impl KeepPolicy {
    /// The counted period rules, in the order their reasons are listed.
    fn counts(&self) -> [(Period, Option<i64>); 5] {
        [
            (Period::Hour, self.hourly),
            (Period::Day, self.daily),
            (Period::Week, self.weekly),
            (Period::Month, self.monthly),
            (Period::Year, self.yearly),
        ]
    }

    /// The `within-<period>` rules.
    fn withins(&self) -> [(Period, Option<Span>); 5] {
        [
            (Period::Hour, self.within_hourly),
            (Period::Day, self.within_daily),
            (Period::Week, self.within_weekly),
            (Period::Month, self.within_monthly),
            (Period::Year, self.within_yearly),
        ]
    }

    /// True when no rule is set (counts of 0 are no rule): such a policy
    /// would keep only the newest snapshot of each group, so [`plan`] and
    /// [`forget`] refuse it.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        let counted = std::iter::once(self.last)
            .chain(self.counts().iter().map(|(_, n)| *n))
            .any(|n| n.is_some_and(|n| n != 0));
        let spans = self.within.is_some() || self.withins().iter().any(|(_, s)| s.is_some());
        !counted && !spans && self.tags.is_empty()
    }

    /// Checks counts (at least 0, or [`UNLIMITED`]) and spans (not
    /// negative).
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the rule.
    pub fn validate(&self) -> Result<()> {
        let counts = std::iter::once(("last", self.last))
            .chain(self.counts().into_iter().map(|(p, n)| (p.name(), n)));
        for (name, n) in counts {
            if let Some(n) = n
                && n < UNLIMITED
            {
                return Err(Error::invalid(format!(
                    "keep {name} {n}: a count is 0 or more, or -1 for no limit"
                )));
            }
        }
        let spans = [
            ("within".to_owned(), self.within),
            ("rollback".to_owned(), self.rollback),
        ]
        .into_iter()
        .chain(
            self.withins()
                .into_iter()
                .map(|(p, s)| (format!("within-{}", p.name()), s)),
        );
        for (name, span) in spans {
            if let Some(span) = span
                && span.is_negative()
            {
                return Err(Error::invalid(format!(
                    "keep {name} {span:#}: a duration cannot be negative"
                )));
            }
        }
        Ok(())
    }
}

/// What the plan says about one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The snapshot.
    pub id: SnapshotId,
    /// Kept (true) or removed.
    pub keep: bool,
    /// Every rule that kept it, such as `last`, `daily`, `within 30d`,
    /// `tag release` or `newest in group`; empty when it is removed.
    pub reasons: Vec<String>,
}

/// The earliest time `within span` keeps, measured back from `newest` on
/// the calendar of its zone. `None` when the span reaches back beyond the
/// times jiff can represent: then every snapshot is within it.
fn cutoff(newest: &Zoned, span: Span) -> Option<Timestamp> {
    newest.checked_sub(span).ok().map(|z| z.timestamp())
}

/// A counted period rule while the group is walked.
struct Counted {
    period: Period,
    /// Periods it may still keep; `None` without limit.
    left: Option<u64>,
    /// The period of the last snapshot it kept.
    last: Option<Bucket>,
}

/// A `within-<period>` rule while the group is walked.
struct Within {
    period: Period,
    reason: String,
    cutoff: Option<Timestamp>,
    last: Option<Bucket>,
}

/// Decides, for one group of snapshots, which ones `policy` keeps, with
/// periods read in `tz`. Returns one decision per snapshot, newest first
/// (ties in time are ordered by id, so the result does not depend on the
/// order of `group`).
///
/// # Errors
/// [`Error::Invalid`] when the policy is empty or not valid
/// ([`KeepPolicy::validate`]).
pub fn plan(
    policy: &KeepPolicy,
    group: &[(SnapshotId, &Snapshot)],
    tz: &TimeZone,
) -> Result<Vec<Decision>> {
    plan_at(policy, group, tz, Timestamp::now())
}

/// [`plan`] as of `now`, from which the rollback window is measured (the
/// other rules measure from the group's newest ordinary snapshot).
///
/// # Errors
/// As [`plan`].
pub fn plan_at(
    policy: &KeepPolicy,
    group: &[(SnapshotId, &Snapshot)],
    tz: &TimeZone,
    now: Timestamp,
) -> Result<Vec<Decision>> {
    policy.validate()?;
    if policy.is_empty() {
        return Err(Error::invalid(EMPTY_POLICY).hinted(Hint::KeepRules));
    }
    let mut items: Vec<(SnapshotId, &Snapshot, Zoned)> = group
        .iter()
        .map(|(id, s)| (*id, *s, s.timestamp().to_zoned(tz.clone())))
        .collect();
    items.sort_by_key(|(id, _, t)| std::cmp::Reverse((t.timestamp(), *id)));
    if items.is_empty() {
        return Ok(Vec::new());
    }
    // `within` rules count back from the newest snapshot that is not a
    // safety snapshot: a restore's safety snapshot must not move them.
    let Some((_, _, newest)) = items
        .iter()
        .find(|(_, s, _)| !s.is_safety())
        .or_else(|| items.first())
    else {
        return Ok(Vec::new());
    };

    let mut rules = Rules::new(policy, newest, tz, now);
    let mut out = Vec::with_capacity(items.len());
    for (id, snap, time) in &items {
        let reasons = rules.judge(snap, time);
        out.push(Decision {
            id: *id,
            keep: !reasons.is_empty(),
            reasons,
        });
    }
    // The newest snapshot is the one a restore most likely needs; no rule
    // set that names anything may leave a group without it. A safety
    // snapshot is not that one (it holds the state a restore replaced).
    if let Some(first) = out
        .iter_mut()
        .zip(&items)
        .find(|(_, (_, s, _))| !s.is_safety())
        .map(|(d, _)| d)
        && !first.keep
    {
        first.keep = true;
        first.reasons.push("newest in group".to_owned());
    }
    Ok(out)
}

/// The rules of a policy, ready to judge one group's snapshots newest
/// first: the counting rules remember which periods they have kept.
struct Rules<'p> {
    /// `last`: `Ok(n)` keeps the n newest; `Err` is a negative count, i.e.
    /// unlimited (validation allows only -1).
    last: Option<Result<u64, std::num::TryFromIntError>>,
    counted: Vec<Counted>,
    within: Option<(String, Option<Timestamp>)>,
    withins: Vec<Within>,
    tags: Vec<&'p String>,
    rollback: Option<(String, Option<Timestamp>)>,
    /// Ordinary snapshots seen so far: `last` counts only those.
    seen: u64,
}

impl<'p> Rules<'p> {
    /// The rules of `policy` for a group whose newest ordinary snapshot was
    /// taken at `newest`; the rollback window counts back from `now`.
    fn new(policy: &'p KeepPolicy, newest: &Zoned, tz: &TimeZone, now: Timestamp) -> Self {
        let last = policy.last.filter(|&n| n != 0).map(u64::try_from);
        let counted: Vec<Counted> = policy
            .counts()
            .iter()
            .filter_map(|&(period, n)| {
                let n = n.filter(|&n| n != 0)?;
                Some(Counted {
                    period,
                    left: u64::try_from(n).ok(),
                    last: None,
                })
            })
            .collect();
        let within = policy
            .within
            .map(|span| (format!("within {span:#}"), cutoff(newest, span)));
        let withins: Vec<Within> = policy
            .withins()
            .iter()
            .filter_map(|&(period, span)| {
                let span = span?;
                Some(Within {
                    period,
                    reason: format!("within-{} {span:#}", period.name()),
                    cutoff: cutoff(newest, span),
                    last: None,
                })
            })
            .collect();
        let mut tags: Vec<&String> = Vec::new();
        for t in &policy.tags {
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        let rollback_span = policy
            .rollback
            .unwrap_or_else(|| Span::new().days(DEFAULT_ROLLBACK_DAYS));
        let rollback = (!rollback_span.is_zero()).then(|| {
            (
                format!("rollback {rollback_span:#}"),
                // From now: a rollback point survives the window whatever
                // comes after it, and a group of safety snapshots alone does
                // not keep its newest forever.
                cutoff(&now.to_zoned(tz.clone()), rollback_span),
            )
        });
        Self {
            last,
            counted,
            within,
            withins,
            tags,
            rollback,
            seen: 0,
        }
    }

    /// Why the snapshot `snap`, taken at `time`, is kept (no reason: it is
    /// removed). Called for each snapshot of the group, newest first.
    fn judge(&mut self, snap: &Snapshot, time: &Zoned) -> Vec<String> {
        let mut reasons = Vec::new();
        let ts = time.timestamp();
        for t in &self.tags {
            if snap.tags.contains(t) {
                reasons.push(format!("tag {t}"));
            }
        }
        if let Some((reason, cutoff)) = &self.rollback
            && (snap.is_safety()
                || snap
                    .tags
                    .iter()
                    .any(|t| t == crate::format::snapshot::PRE_TAG))
            && cutoff.is_none_or(|c| ts >= c)
        {
            reasons.push(reason.clone());
        }
        if snap.is_safety() {
            // Kept by its tag or the rollback window only (see the module
            // doc): it takes no place from the snapshots the rules count.
            return reasons;
        }
        let mut counts = Vec::new();
        // Ok(n): keep the n newest; Err: a negative count, i.e. unlimited
        // (validation allows only -1).
        match self.last {
            Some(Ok(n)) if self.seen < n => counts.push("last".to_owned()),
            Some(Err(_)) => counts.push("last".to_owned()),
            _ => {}
        }
        self.seen += 1;
        for rule in &mut self.counted {
            if rule.left == Some(0) {
                continue;
            }
            let bucket = rule.period.bucket(time);
            if rule.last != Some(bucket) {
                rule.last = Some(bucket);
                if let Some(left) = &mut rule.left {
                    *left -= 1;
                }
                counts.push(rule.period.name().to_owned());
            }
        }
        if let Some((reason, cutoff)) = &self.within
            && cutoff.is_none_or(|c| ts >= c)
        {
            counts.push(reason.clone());
        }
        for rule in &mut self.withins {
            if rule.cutoff.is_none_or(|c| ts >= c) {
                let bucket = rule.period.bucket(time);
                if rule.last != Some(bucket) {
                    rule.last = Some(bucket);
                    counts.push(rule.reason.clone());
                }
            }
        }
        // The rules' reasons first, then tags and the rollback window.
        counts.append(&mut reasons);
        counts
    }
}

/// Which snapshot fields make up a group: snapshots are judged against the
/// others of their group only. With no field set, all snapshots form one
/// group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    /// Group by host name.
    pub host: bool,
    /// Group by the set of backed-up paths.
    pub paths: bool,
    /// Group by the set of tags.
    pub tags: bool,
}

impl Default for GroupBy {
    /// Host and paths, as restic.
    fn default() -> Self {
        Self {
            host: true,
            paths: true,
            tags: false,
        }
    }
}

impl FromStr for GroupBy {
    type Err = Error;

    /// A comma-separated list of `host`, `paths` and `tags`; the empty
    /// string groups nothing apart.
    fn from_str(s: &str) -> Result<Self> {
        let mut g = Self {
            host: false,
            paths: false,
            tags: false,
        };
        for field in s.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            match field {
                "host" | "hosts" => g.host = true,
                "path" | "paths" => g.paths = true,
                "tag" | "tags" => g.tags = true,
                other => {
                    return Err(Error::invalid(format!(
                        "cannot group by '{other}': expected a comma-separated list of host, paths and tags"
                    )));
                }
            }
        }
        Ok(g)
    }
}

impl GroupBy {
    /// The group `snap` belongs to.
    #[must_use]
    pub fn key(&self, snap: &Snapshot) -> GroupKey {
        GroupKey {
            host: self.host.then(|| snap.hostname.clone()),
            paths: self.paths.then(|| {
                let mut p = snap.paths.clone();
                p.sort();
                p.dedup();
                p
            }),
            tags: self.tags.then(|| {
                let mut t = snap.tags.clone();
                t.sort();
                t.dedup();
                t
            }),
        }
    }
}

/// A group's identity: the fields [`GroupBy`] selected, `None` for the
/// others. Paths are raw bytes, so paths that differ only in bytes that
/// are not UTF-8 are different groups.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    /// The host name.
    pub host: Option<String>,
    /// The sorted backed-up paths.
    pub paths: Option<Vec<Vec<u8>>>,
    /// The sorted tags.
    pub tags: Option<Vec<String>>,
}

impl GroupKey {
    /// The paths as lossy UTF-8, for display.
    #[must_use]
    pub fn display_paths(&self) -> Option<Vec<String>> {
        self.paths.as_ref().map(|p| {
            p.iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect()
        })
    }
}

impl fmt::Display for GroupKey {
    /// `host h, paths /a /b, tags x,y`, or `all snapshots`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(h) = &self.host {
            parts.push(format!("host {h}"));
        }
        if let Some(p) = self.display_paths() {
            parts.push(format!("paths {}", p.join(" ")));
        }
        if let Some(t) = &self.tags {
            if t.is_empty() {
                parts.push("no tags".to_owned());
            } else {
                parts.push(format!("tags {}", t.join(",")));
            }
        }
        if parts.is_empty() {
            f.write_str("all snapshots")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// Which snapshots `forget` looks at; the others are neither kept nor
/// removed, just left alone. An empty list does not filter.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SnapshotFilter {
    /// Only snapshots of any of these hosts.
    pub hosts: Vec<String>,
    /// Only snapshots that have all tags of at least one of these lists
    /// (restic's `--tag a,b --tag c`: a and b, or c).
    pub tags: Vec<Vec<String>>,
    /// Only snapshots that include every one of these absolute paths.
    pub paths: Vec<Vec<u8>>,
    /// Only application snapshots of any of these applications.
    pub apps: Vec<String>,
}

impl SnapshotFilter {
    /// True when `snap` passes the filter.
    #[must_use]
    pub fn matches(&self, snap: &Snapshot) -> bool {
        let host = self.hosts.is_empty() || self.hosts.contains(&snap.hostname);
        let tags = self.tags.is_empty()
            || self
                .tags
                .iter()
                .any(|list| list.iter().all(|t| snap.tags.contains(t)));
        let paths = self.paths.iter().all(|p| snap.paths.contains(p));
        let app = self.apps.is_empty()
            || snap
                .app
                .as_ref()
                .is_some_and(|a| self.apps.contains(&a.name));
        host && tags && paths && app
    }
}

/// What to forget.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ForgetOptions {
    /// The rules; must not be empty unless `ids` names snapshots.
    pub policy: KeepPolicy,
    /// How snapshots are grouped.
    pub group_by: GroupBy,
    /// Which snapshots are considered at all.
    pub filter: SnapshotFilter,
    /// Snapshots to remove by id, unique id prefix or `latest`, instead of
    /// applying a policy (the two cannot be combined).
    pub ids: Vec<String>,
    /// Plan and report, but delete nothing.
    pub dry_run: bool,
    /// The zone whose wall clock defines hours, days, weeks, months and
    /// years.
    pub tz: TimeZone,
    /// Keep the WAL segments (`cairn watch`) of each database only as far
    /// back as this span before its newest segment: whole chains that end
    /// before that are removed. `None` leaves segments alone.
    pub keep_pitr: Option<Span>,
    /// The time the rollback window is measured from (`None`: now).
    pub now: Option<Timestamp>,
}

impl Default for ForgetOptions {
    fn default() -> Self {
        Self {
            policy: KeepPolicy::default(),
            group_by: GroupBy::default(),
            filter: SnapshotFilter::default(),
            ids: Vec::new(),
            dry_run: false,
            tz: TimeZone::system(),
            keep_pitr: None,
            now: None,
        }
    }
}

impl ForgetOptions {
    /// Options applying `policy` in the system's time zone (which honours
    /// `TZ`), grouped by host and paths.
    #[must_use]
    pub fn new(policy: KeepPolicy) -> Self {
        Self {
            policy,
            ..Self::default()
        }
    }
}

/// The plan for one group, with each snapshot.
#[derive(Debug, Clone)]
pub struct GroupPlan {
    /// The group.
    pub key: GroupKey,
    /// Every considered snapshot of the group, newest first, with what
    /// happens to it. With explicit ids, only the named snapshots.
    pub snapshots: Vec<(Decision, Snapshot)>,
}

/// What `forget` did (or, in a dry run, would do).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ForgetOutcome {
    /// The groups, in key order.
    pub groups: Vec<GroupPlan>,
    /// The snapshots removed (in a dry run: that would be removed).
    pub removed: Vec<SnapshotId>,
    /// Snapshot files that could not be read, with the reason; never
    /// removed.
    pub damaged: Vec<(SnapshotId, String)>,
    /// True when nothing was deleted because of `dry_run`.
    pub dry_run: bool,
    /// Chains of WAL segments removed by `keep_pitr` (base snapshot, and
    /// the end of the time the chain covered).
    pub chains_removed: Vec<(SnapshotId, Timestamp)>,
    /// WAL segment files removed.
    pub segments_removed: usize,
}

/// Resolves the snapshots named in `refs` among the considered ones:
/// full ids, unique prefixes or `latest`. All are resolved before anything
/// is deleted, so a typo removes nothing.
fn resolve(
    refs: &[String],
    considered: &[(SnapshotId, Snapshot)],
    damaged: &[(SnapshotId, String)],
    listed: &HashSet<SnapshotId>,
    lost: &dyn Fn(&SnapshotId) -> bool,
) -> Result<HashSet<SnapshotId>> {
    let mut chosen = HashSet::new();
    for r in refs {
        if r == "latest" {
            let newest = considered
                .iter()
                .filter(|(_, s)| !s.is_safety())
                .max_by_key(|(id, s)| (s.timestamp(), *id))
                .ok_or_else(|| Error::NotFound("there are no snapshots to forget".into()))?;
            chosen.insert(newest.0);
            continue;
        }
        let prefix = r.to_ascii_lowercase();
        if prefix.is_empty() {
            return Err(Error::Ambiguous(
                "an empty snapshot id matches every snapshot: give at least one character".into(),
            ));
        }
        let mut matches = considered
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| id.to_hex().starts_with(&prefix));
        let broken = damaged
            .iter()
            .find(|(id, _)| id.to_hex().starts_with(&prefix));
        let full = prefix.len() == 64;
        match (matches.next(), matches.next(), broken) {
            (Some(id), None, None) => {
                chosen.insert(id);
            }
            // Named in full: the user means this very file, whatever it
            // holds. A damaged snapshot cannot be judged by rules, but it
            // can be removed on purpose (and the audit log says so).
            (None, _, Some((id, _))) if full => {
                chosen.insert(*id);
            }
            (None, _, Some((id, why))) => {
                return Err(Error::Invalid(format!(
                    "snapshot {id} is damaged ({why}); no rule removes a damaged snapshot: to remove it on purpose, give its full id"
                )));
            }
            // A full id with no file at all that the audit log saved: a
            // snapshot verify reports missing.
            // Forgetting it records that it is gone for good.
            (None, _, None)
                if full
                    && prefix
                        .parse::<SnapshotId>()
                        .is_ok_and(|id| !listed.contains(&id) && lost(&id)) =>
            {
                if let Ok(id) = prefix.parse::<SnapshotId>() {
                    chosen.insert(id);
                }
            }
            (None, _, None) => {
                return Err(Error::NotFound(format!(
                    "no snapshot matches '{r}': list them with `cairn snapshots`"
                )));
            }
            _ => {
                return Err(Error::Ambiguous(format!(
                    "'{r}' matches several snapshots: give more characters of the id"
                )));
            }
        }
    }
    Ok(chosen)
}

/// Applies `opts.keep_pitr` to the WAL segments: removes the chains that
/// end more than that span before their database's newest segment, the
/// newest segment of a chain first, so a chain cut short by a crash still
/// links from its base. Returns the chains and segment files removed and
/// the base snapshots the remaining segments need.
#[allow(clippy::type_complexity)]
fn forget_segments(
    repo: &Repository,
    opts: &ForgetOptions,
) -> Result<(Vec<(SnapshotId, Timestamp)>, usize, HashSet<SnapshotId>)> {
    let (segments, _) = crate::repo::segments::read_segments(repo)?;
    let mut bases: HashSet<SnapshotId> = segments.iter().map(|(_, s)| s.base).collect();
    let Some(span) = opts.keep_pitr else {
        return Ok((Vec::new(), 0, bases));
    };
    // Chains by database, each with its segments and the end it covers.
    let mut chains: BTreeMap<
        (String, Vec<u8>),
        BTreeMap<SnapshotId, Vec<(crate::id::SegmentId, i64, u64)>>,
    > = BTreeMap::new();
    for (id, s) in &segments {
        chains
            .entry((s.host.clone(), s.db.clone()))
            .or_default()
            .entry(s.base)
            .or_default()
            .push((*id, s.until, s.seq));
    }
    let mut removed = Vec::new();
    let mut files = 0;
    for per_base in chains.values() {
        let newest = per_base
            .values()
            .flatten()
            .map(|(_, until, _)| *until)
            .max()
            .unwrap_or(0);
        let newest = crate::format::segment::timestamp(newest).to_zoned(opts.tz.clone());
        let Some(cut) = cutoff(&newest, span) else {
            continue;
        };
        let cut = crate::format::segment::nanos(cut);
        for (base, segs) in per_base {
            let end = segs.iter().map(|(_, until, _)| *until).max().unwrap_or(0);
            if end >= cut {
                continue;
            }
            let mut segs = segs.clone();
            segs.sort_by_key(|(id, _, seq)| std::cmp::Reverse((*seq, *id)));
            if !opts.dry_run {
                for (id, _, _) in &segs {
                    repo.backend().delete(FileKind::Wal, &id.to_hex())?;
                }
            }
            files += segs.len();
            bases.remove(base);
            removed.push((*base, crate::format::segment::timestamp(end)));
        }
    }
    Ok((removed, files, bases))
}

/// Lists the snapshots, keeps those that pass the filter, groups them and
/// decides per group with [`plan`] (or removes exactly the snapshots named
/// in `opts.ids`), then deletes the snapshot files of the removed ones
/// unless `opts.dry_run`.
///
/// # Errors
/// [`Error::Invalid`] for an empty or invalid policy, or ids combined with
/// a policy; [`Error::NotFound`] for an id that matches no snapshot,
/// several, or a damaged one; backend errors. When a delete fails, the
/// snapshots deleted before it stay deleted: running `forget` again
/// finishes the job.
pub fn forget(repo: &Repository, opts: &ForgetOptions) -> Result<ForgetOutcome> {
    Event::new(repo, "forget", "")
        .unless_dry_run(opts.dry_run)
        .run(|event| {
            check_request(opts)?;
            // Taken before listing, so that the plan is made from the same
            // set of snapshots the deletes act on; a dry run changes
            // nothing and only needs the set to hold still.
            let _held = repo.lock(!opts.dry_run, "forget")?;
            let (chains_removed, segments_removed, bases) = forget_segments(repo, opts)?;
            let mut outcome = ForgetOutcome {
                groups: Vec::new(),
                removed: Vec::new(),
                damaged: Vec::new(),
                dry_run: opts.dry_run,
                chains_removed,
                segments_removed,
            };
            if opts.ids.is_empty() && opts.policy.is_empty() {
                return Ok(outcome);
            }
            let (considered, mut damaged, listed) = consider(repo, opts)?;
            let chosen = if opts.ids.is_empty() {
                None
            } else {
                // A full id with no file is forgotten only if the audit
                // log saved it (a typo or another repository's id is an
                // error).
                let log = std::cell::OnceCell::new();
                let lost = |id: &SnapshotId| {
                    log.get_or_init(|| crate::repo::audit::read_log(repo, None).ok())
                        .as_ref()
                        .is_some_and(|l| crate::repo::audit::records_saved(l, id))
                };
                Some(resolve(&opts.ids, &considered, &damaged, &listed, &lost)?)
            };
            let mut groups: BTreeMap<GroupKey, Vec<(SnapshotId, Snapshot)>> = BTreeMap::new();
            for (id, s) in considered {
                if chosen.as_ref().is_none_or(|c| c.contains(&id)) {
                    groups
                        .entry(opts.group_by.key(&s))
                        .or_default()
                        .push((id, s));
                }
            }
            // Named in full but damaged, or with no file: removed (or
            // recorded as forgotten) outside any group.
            let mut unread: Vec<SnapshotId> = chosen
                .iter()
                .flatten()
                .filter(|id| !listed.contains(id) || damaged.iter().any(|(d, _)| d == *id))
                .copied()
                .collect();
            unread.sort();
            let explicit = chosen.is_some();
            outcome.groups = plan_groups(opts, groups, explicit, &bases, &mut outcome.removed)?;
            if !opts.dry_run {
                delete_forgotten(repo, event, &outcome.removed, &unread, &damaged)?;
            }
            // Removed on purpose: no longer left in place.
            damaged.retain(|(id, _)| !unread.contains(id));
            outcome.removed.extend(unread);
            outcome.damaged = damaged;
            Ok(outcome)
        })
}

impl Audited for ForgetOutcome {
    fn audit(&self) -> (bool, String) {
        (true, format!("removed {} snapshots", self.removed.len()))
    }
}

/// Refuses a request that names snapshots and rules together, or neither.
fn check_request(opts: &ForgetOptions) -> Result<()> {
    if opts.ids.is_empty() {
        opts.policy.validate()?;
        if opts.policy.is_empty() && opts.keep_pitr.is_none() {
            return Err(Error::invalid(EMPTY_POLICY).hinted(Hint::KeepRules));
        }
    } else if !opts.policy.is_empty() {
        return Err(Error::invalid(
            "give either snapshots to remove or keep rules, not both",
        ));
    }
    Ok(())
}

/// The snapshots `opts.filter` considers, the snapshot files that could
/// not be read (with the reason), and every listed id.
#[allow(clippy::type_complexity)]
fn consider(
    repo: &Repository,
    opts: &ForgetOptions,
) -> Result<(
    Vec<(SnapshotId, Snapshot)>,
    Vec<(SnapshotId, String)>,
    HashSet<SnapshotId>,
)> {
    let mut considered = Vec::new();
    let mut damaged = Vec::new();
    let mut listed = HashSet::new();
    for (id, snap) in repo.snapshots()? {
        listed.insert(id);
        match snap {
            Ok(s) if opts.filter.matches(&s) => considered.push((id, s)),
            Ok(_) => {}
            Err(e) => damaged.push((id, e.to_string())),
        }
    }
    Ok((considered, damaged, listed))
}

/// Each group's decisions: all removed when snapshots were named, else by
/// the policy. A snapshot that WAL segments apply to is kept as their
/// base. The ids to remove are added to `removed`.
fn plan_groups(
    opts: &ForgetOptions,
    groups: BTreeMap<GroupKey, Vec<(SnapshotId, Snapshot)>>,
    explicit: bool,
    bases: &HashSet<SnapshotId>,
    removed: &mut Vec<SnapshotId>,
) -> Result<Vec<GroupPlan>> {
    let mut plans = Vec::with_capacity(groups.len());
    for (key, mut members) in groups {
        let decisions = if explicit {
            members.sort_by_key(|(id, s)| std::cmp::Reverse((s.timestamp(), *id)));
            members
                .iter()
                .map(|(id, _)| Decision {
                    id: *id,
                    keep: false,
                    reasons: Vec::new(),
                })
                .collect()
        } else {
            let refs: Vec<(SnapshotId, &Snapshot)> =
                members.iter().map(|(id, s)| (*id, s)).collect();
            plan_at(
                &opts.policy,
                &refs,
                &opts.tz,
                opts.now.unwrap_or_else(Timestamp::now),
            )?
        };
        let mut by_id: BTreeMap<SnapshotId, Snapshot> = members.into_iter().collect();
        let mut snapshots = Vec::with_capacity(decisions.len());
        for mut d in decisions {
            // A base stays as long as segments apply to it: without it
            // they could not be replayed.
            if !d.keep && bases.contains(&d.id) {
                d.keep = true;
                d.reasons.push("base of WAL segments".to_owned());
            }
            if !d.keep {
                removed.push(d.id);
            }
            if let Some(s) = by_id.remove(&d.id) {
                snapshots.push((d, s));
            }
        }
        plans.push(GroupPlan { key, snapshots });
    }

    Ok(plans)
}

/// Deletes the snapshot files of `removed`, and of the named `unread`
/// ones that are damaged, after the audit log names them all: a forget
/// killed midway leaves snapshots the log says were forgotten, never ones
/// verify would report as lost.
fn delete_forgotten(
    repo: &Repository,
    event: &Event<'_>,
    removed: &[SnapshotId],
    unread: &[SnapshotId],
    damaged: &[(SnapshotId, String)],
) -> Result<()> {
    if !removed.is_empty() || !unread.is_empty() {
        // The audit log names the snapshots before any is deleted: a
        // forget killed midway leaves snapshots the log says were
        // forgotten, never ones verify would report as lost.
        let all: Vec<String> = removed
            .iter()
            .chain(unread)
            .map(ToString::to_string)
            .collect();
        event.record_ahead(&all.join(" "), &format!("removed {} snapshots", all.len()));
        for id in removed {
            repo.backend().delete(FileKind::Snapshot, &id.to_hex())?;
        }
        for id in unread {
            if damaged.iter().any(|(d, _)| d == id) {
                repo.backend().delete(FileKind::Snapshot, &id.to_hex())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::BlobId;

    fn snap(time: i64, tags: &[&str]) -> Snapshot {
        Snapshot {
            time,
            time_nsec: 0,
            hostname: "h".into(),
            username: "u".into(),
            uid: 0,
            gid: 0,
            paths: vec![b"/p".to_vec()],
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            excludes: Vec::new(),
            parent: None,
            tree: BlobId::default(),
            summary: crate::format::snapshot::Summary::default(),
            program_version: String::new(),
            app: None,
            databases: Vec::new(),
            original: None,
        }
    }

    fn id(n: u8) -> SnapshotId {
        SnapshotId([n; 32])
    }

    #[test]
    fn forget_policy_emptiness_and_validation() {
        let mut p = KeepPolicy::default();
        assert!(p.is_empty());
        p.daily = Some(0);
        assert!(p.is_empty(), "a count of 0 is no rule");
        p.daily = Some(UNLIMITED);
        assert!(!p.is_empty());
        assert!(p.validate().is_ok());
        p.daily = Some(-2);
        assert!(p.validate().is_err());
        let p = KeepPolicy {
            within: Some("-3d".parse().expect("span")),
            ..KeepPolicy::default()
        };
        assert!(p.validate().is_err());
        let s = snap(0, &[]);
        assert!(plan(&KeepPolicy::default(), &[(id(1), &s)], &TimeZone::UTC).is_err());
    }

    #[test]
    fn forget_spans_parse_in_the_friendly_and_iso_forms() {
        for (text, friendly) in [
            ("30d", "30d"),
            ("7 days", "7d"),
            ("1y6mo", "1y 6mo"),
            ("P1Y6M", "1y 6mo"),
            ("12h", "12h"),
        ] {
            let span: Span = text.parse().expect(text);
            assert_eq!(format!("{span:#}"), friendly, "{text}");
        }
    }

    #[test]
    fn forget_group_by_parses_comma_lists() {
        let g: GroupBy = "host,tags".parse().expect("parse");
        assert!(g.host && !g.paths && g.tags);
        let none: GroupBy = "".parse().expect("parse");
        assert!(!none.host && !none.paths && !none.tags);
        assert_eq!(none.key(&snap(0, &["x"])).to_string(), "all snapshots");
        assert!("hostname".parse::<GroupBy>().is_err());
        let key = GroupBy::default().key(&snap(0, &[]));
        assert_eq!(key.to_string(), "host h, paths /p");
    }

    #[test]
    fn forget_last_keeps_the_newest_whatever_the_input_order() {
        let (a, b, c) = (snap(100, &[]), snap(200, &[]), snap(300, &[]));
        let p = KeepPolicy {
            last: Some(2),
            ..KeepPolicy::default()
        };
        let d = plan(&p, &[(id(1), &a), (id(3), &c), (id(2), &b)], &TimeZone::UTC).expect("plan");
        let got: Vec<(SnapshotId, bool)> = d.iter().map(|d| (d.id, d.keep)).collect();
        assert_eq!(got, [(id(3), true), (id(2), true), (id(1), false)]);
        assert_eq!(
            d.first().map(|d| d.reasons.clone()),
            Some(vec!["last".into()])
        );
    }

    #[test]
    fn forget_newest_is_kept_when_no_rule_keeps_it() {
        let (old, new) = (snap(100, &["keep"]), snap(200, &[]));
        let p = KeepPolicy {
            tags: vec!["keep".into(), "keep".into()],
            ..KeepPolicy::default()
        };
        let d = plan(&p, &[(id(1), &old), (id(2), &new)], &TimeZone::UTC).expect("plan");
        assert_eq!(d[0].reasons, ["newest in group"]);
        assert_eq!(d[1].reasons, ["tag keep"], "a repeated tag is one reason");
    }

    #[test]
    fn forget_filter_tag_lists_are_and_within_or_across() {
        let mut f = SnapshotFilter {
            tags: vec![vec!["a".into(), "b".into()], vec!["c".into()]],
            ..SnapshotFilter::default()
        };
        assert!(f.matches(&snap(0, &["a", "b"])));
        assert!(f.matches(&snap(0, &["c"])));
        assert!(!f.matches(&snap(0, &["a"])));
        f.hosts = vec!["other".into()];
        assert!(!f.matches(&snap(0, &["c"])));
    }
}
