//! The notes a watcher prints (`cairn watch`): as JSON lines, read back
//! from them (`cairn daemon` runs each watcher as a child process), and as
//! text for people.

use std::time::Duration;

use cairn::WatchNote;

use super::output::local_time;

/// A note's fields as JSON (`event` and what it says).
pub fn note_json(db: &str, n: &WatchNote) -> serde_json::Value {
    match n {
        WatchNote::Base {
            id,
            time,
            bytes_added,
        } => {
            serde_json::json!({"db": db, "event": "base", "snapshot": id, "time": time.to_string(), "bytes_added": bytes_added})
        }
        WatchNote::Segment {
            id,
            txns,
            pages,
            lag,
            peak_memory,
        } => {
            serde_json::json!({"db": db, "event": "segment", "segment": id, "txns": txns, "pages": pages, "lag_ms": lag.as_millis(), "peak_memory": peak_memory})
        }
        WatchNote::ChainEnd(why) => {
            serde_json::json!({"db": db, "event": "chain-end", "reason": why})
        }
        WatchNote::Problem(why) => {
            serde_json::json!({"db": db, "event": "problem", "message": why})
        }
        _ => serde_json::json!({"db": db}),
    }
}

/// The note [`note_json`] wrote, `None` for a line that is not one.
pub fn note_of_json(v: &serde_json::Value) -> Option<WatchNote> {
    let text = |k: &str| v[k].as_str().map(str::to_owned);
    match v["event"].as_str()? {
        "base" => Some(WatchNote::Base {
            id: v["snapshot"].as_str()?.parse().ok()?,
            time: v["time"].as_str()?.parse().ok()?,
            bytes_added: v["bytes_added"].as_u64()?,
        }),
        "segment" => Some(WatchNote::Segment {
            id: v["segment"].as_str()?.parse().ok()?,
            txns: usize::try_from(v["txns"].as_u64()?).ok()?,
            pages: v["pages"].as_u64()?,
            lag: Duration::from_millis(v["lag_ms"].as_u64()?),
            // Absent from the notes of watchers before it was added.
            peak_memory: v["peak_memory"].as_u64().unwrap_or(0),
        }),
        "chain-end" => Some(WatchNote::ChainEnd(text("reason")?)),
        "problem" => Some(WatchNote::Problem(text("message")?)),
        _ => None,
    }
}

/// A note as a line for people, `None` for what is not shown.
pub fn note_text(db: &str, n: &WatchNote, quiet: bool) -> Option<String> {
    match n {
        WatchNote::Base {
            id,
            time,
            bytes_added,
        } if !quiet => Some(format!(
            "{db}: base {} as of {} ({} added)",
            id.short(),
            local_time(*time),
            bytesize::ByteSize(*bytes_added).display().iec()
        )),
        WatchNote::ChainEnd(why) if !quiet => Some(format!("{db}: chain ends: {why}")),
        WatchNote::Problem(why) => Some(format!("warning: {db}: {why}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemon_reads_back_every_note_a_watcher_prints() {
        let notes = [
            WatchNote::Base {
                id: "11".repeat(32).parse().expect("id"),
                time: "2026-11-24T10:00:00.5Z".parse().expect("time"),
                bytes_added: 123,
            },
            WatchNote::Segment {
                id: "22".repeat(32).parse().expect("id"),
                txns: 7,
                pages: 9,
                lag: Duration::from_millis(250),
                peak_memory: 1 << 20,
            },
            WatchNote::ChainEnd("the database was replaced".into()),
            WatchNote::Problem("cannot read".into()),
        ];
        for n in notes {
            let line = note_json("/srv/app.db", &n).to_string();
            let back = serde_json::from_str(&line)
                .ok()
                .and_then(|v| note_of_json(&v));
            assert_eq!(format!("{back:?}"), format!("{:?}", Some(n)), "{line}");
        }
    }
}
