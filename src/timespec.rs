//! Times as users write them on the command line (`backup --time`,
//! `--at`): an RFC 3339 instant, a local date and time, a local date, or a
//! span before now; and the durations and sizes of options (`--lag 1s`,
//! `--base-size 256MiB`, the same keys in `cairn.toml`).
//!
//! All parsing is jiff's; this module only decides the order in which the
//! forms are tried and the zone that gives local times their meaning. A
//! local time that does not exist (skipped by a DST change) or exists twice
//! (repeated by one) is resolved as jiff's "compatible" disambiguation does,
//! as RFC 5545 and Temporal do: a skipped time moves forward by the gap, a
//! repeated time takes its earlier instant.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};

use crate::error::{Error, Result};

/// Reads `text` as a time, local times in `tz`, relative ones from `now`.
///
/// Accepted: `2026-11-20T14:00:00Z` or with an offset (RFC 3339);
/// `2026-11-20 14:00`, `2026-11-20 14:00:30` or with a `T` (local time);
/// `2026-11-20` (local midnight); `now`; `2h ago`, `3 days ago`,
/// `1 week ago`, `90 minutes ago`, `1y 2mo ago` (jiff's friendly spans,
/// calendar units counted in `tz`).
///
/// # Errors
/// [`Error::Invalid`] naming the text and the accepted forms.
pub fn parse_time(text: &str, now: Timestamp, tz: &TimeZone) -> Result<Timestamp> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("now") {
        return Ok(now);
    }
    if let Ok(ts) = t.parse::<Timestamp>() {
        return Ok(ts);
    }
    if let Ok(dt) = t.parse::<DateTime>() {
        return local(dt, tz, text);
    }
    if let Ok(d) = t.parse::<Date>() {
        return local(d.to_datetime(jiff::civil::Time::midnight()), tz, text);
    }
    if t.ends_with("ago")
        && let Ok(span) = t.parse::<Span>()
    {
        // jiff reads "2h ago" as a negative span.
        return now
            .to_zoned(tz.clone())
            .checked_add(span)
            .map(|z| z.timestamp())
            .map_err(|e| Error::invalid(format!("time '{text}': {e}")));
    }
    Err(Error::invalid(format!(
        "cannot read '{text}' as a time: give an RFC 3339 time (2026-11-20T14:00:00Z), \
         a local time (2026-11-20 14:00), a date (2026-11-20), or a span before now (2h ago, 3 days ago)"
    )))
}

/// Reads `text` as a size in bytes (`64MiB`, `1GiB`, `500kB`, `4096`).
///
/// # Errors
/// [`Error::Invalid`] naming the text.
pub fn parse_size(text: &str) -> Result<u64> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| {
            Error::invalid(format!(
                "cannot read '{text}' as a size ({e}): give one such as 64MiB or 1GiB"
            ))
        })
}

/// Reads `text` as a fixed duration (`1s`, `500ms`, `10m`, `1h`, `2h30m`,
/// jiff's friendly format; no days or longer, whose length a calendar
/// decides).
///
/// # Errors
/// [`Error::Invalid`] naming the text.
pub fn parse_duration(text: &str) -> Result<std::time::Duration> {
    let bad = |why: String| {
        Error::invalid(format!(
            "cannot read '{text}' as a duration ({why}): give one such as 1s, 500ms, 10m or 1h"
        ))
    };
    let span: Span = text.trim().parse().map_err(|e| bad(format!("{e}")))?;
    let d = jiff::SignedDuration::try_from(span).map_err(|e| bad(format!("{e}")))?;
    std::time::Duration::try_from(d).map_err(|_| bad("it is negative".to_owned()))
}

fn local(dt: DateTime, tz: &TimeZone, text: &str) -> Result<Timestamp> {
    dt.to_zoned(tz.clone())
        .map(|z| z.timestamp())
        .map_err(|e| Error::invalid(format!("time '{text}': {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("test timestamp")
    }

    #[test]
    fn every_form_reads_as_documented() {
        let london = TimeZone::get("Europe/London").expect("zone");
        let now = at("2026-11-24T12:00:00Z");
        let p = |s: &str| parse_time(s, now, &london).expect(s);
        assert_eq!(p("now"), now);
        assert_eq!(p("2026-11-20T14:00:00Z"), at("2026-11-20T14:00:00Z"));
        assert_eq!(p("2026-11-20T14:00:00+02:00"), at("2026-11-20T12:00:00Z"));
        // London is on GMT in November, on BST (UTC+1) in July.
        assert_eq!(p("2026-11-20 14:00"), at("2026-11-20T14:00:00Z"));
        assert_eq!(p("2026-07-20 14:00:30"), at("2026-07-20T13:00:30Z"));
        assert_eq!(p("2026-07-20T14:00"), at("2026-07-20T13:00:00Z"));
        assert_eq!(p("2026-07-20"), at("2026-07-19T23:00:00Z"));
        assert_eq!(p("2h ago"), at("2026-11-24T10:00:00Z"));
        assert_eq!(p("90 minutes ago"), at("2026-11-24T10:30:00Z"));
        assert_eq!(p("3 days ago"), at("2026-11-21T12:00:00Z"));
        // A month back from 24 November in London crosses no DST change;
        // from 2026-04-10 it does, and stays at 12:00 local.
        assert_eq!(p("1mo ago"), at("2026-10-24T11:00:00Z"));
        let spring = at("2026-04-10T11:00:00Z");
        assert_eq!(
            parse_time("1 month ago", spring, &london).expect("span"),
            at("2026-03-10T12:00:00Z")
        );
    }

    #[test]
    fn dst_gaps_and_folds_resolve_compatibly() {
        let ny = TimeZone::get("America/New_York").expect("zone");
        let now = at("2026-12-01T00:00:00Z");
        // 2026-03-08 02:30 does not exist in New York: 03:30 EDT.
        assert_eq!(
            parse_time("2026-03-08 02:30", now, &ny).expect("gap"),
            at("2026-03-08T07:30:00Z")
        );
        // 2026-11-01 01:30 happens twice: the first (EDT) is taken.
        assert_eq!(
            parse_time("2026-11-01 01:30", now, &ny).expect("fold"),
            at("2026-11-01T05:30:00Z")
        );
    }

    #[test]
    fn nonsense_is_refused_with_the_forms_named() {
        let tz = TimeZone::UTC;
        let now = at("2026-11-24T12:00:00Z");
        for bad in ["", "yesterday-ish", "2026-13-01", "2h", "14:00", "ago"] {
            let e = parse_time(bad, now, &tz).expect_err(bad).to_string();
            assert!(e.contains(bad) && e.contains("RFC 3339"), "{bad}: {e}");
        }
    }
}
