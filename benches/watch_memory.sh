#!/usr/bin/env bash
# Peak resident memory of `cairn watch` (at nice 10) and peak size of the
# application's -wal, beside a python3 writer at full speed on a database
# of about 5 MB and two busy CPUs (issue 24, defect 14):
#
#   CAIRN_BIN=target/release/cairn DURATION=60 bash benches/watch_memory.sh [WATCH OPTIONS...]
#
# Prints the writer's transactions, the largest -wal it saw, the watcher's
# maximum resident set (GNU time) and the gaps in its timeline.
set -euo pipefail
BIN=$(realpath "${CAIRN_BIN:-target/release/cairn}")
DUR=${DURATION:-60}
W=$(mktemp -d)
busy=()
cleanup() {
    for p in "${busy[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$W"
}
trap cleanup EXIT
export CAIRN_PASSWORD=bench CAIRN_REPO=$W/repo HOME=$W
"$BIN" init >/dev/null
python3 - "$W/app.db" <<'PY'
import random, sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA journal_mode=WAL")
c.execute("CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)")
r = random.Random(1)
c.execute("BEGIN")
for _ in range(8000):
    c.execute("INSERT INTO t(v) VALUES (?)", (r.randbytes(r.randint(200, 1000)),))
c.execute("COMMIT")
PY
for _ in 1 2; do
    (while :; do :; done) &
    busy+=($!)
done
nice -n 10 /usr/bin/time -v "$BIN" --json watch "$@" "$W/app.db" >"$W/notes" 2>"$W/time" &
timer=$!
until grep -q '"event":"base"' "$W/notes" 2>/dev/null; do sleep 0.2; done
python3 - "$W/app.db" "$DUR" <<'PY'
import os, random, sqlite3, sys, time
db, dur = sys.argv[1], float(sys.argv[2])
c = sqlite3.connect(db, isolation_level=None)
c.execute("PRAGMA synchronous=NORMAL")
r = random.Random(2)
top = c.execute("SELECT max(k) FROM t").fetchone()[0]
n, peak, end = 0, 0, time.time() + dur
while time.time() < end:
    c.execute("BEGIN")
    for _ in range(2):
        c.execute("INSERT INTO t(v) VALUES (?)", (r.randbytes(r.randint(200, 1000)),))
    top += 2
    c.execute("UPDATE t SET v = ? WHERE k = ?", (r.randbytes(300), r.randint(top - 7000, top)))
    c.execute("DELETE FROM t WHERE k <= ?", (top - 8000,))
    c.execute("COMMIT")
    n += 1
    if n % 200 == 0:
        peak = max(peak, os.path.getsize(db + "-wal"))
print(f"writer: {n} transactions in {dur:.0f} s ({n / dur:.0f}/s); largest -wal {peak / 2**20:.1f} MiB")
PY
watcher=$(pgrep -P "$timer")
kill -TERM "$watcher"
# A watcher that has not stored what it read within 3 minutes is killed.
for _ in $(seq 900); do kill -0 "$watcher" 2>/dev/null || break; sleep 0.2; done
if kill -0 "$watcher" 2>/dev/null; then
    echo "the watcher had not stopped 3 minutes after SIGTERM: killed"
    kill -KILL "$watcher"
fi
wait "$timer" || true
grep -E "Maximum resident|Elapsed|Exit status" "$W/time" || tail -5 "$W/time"
python3 - "$W/notes" <<'PY'
import collections, json, sys
notes = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
peak = max((n.get("peak_memory", 0) for n in notes if n.get("event") == "segment"), default=None)
ends = collections.Counter(n["reason"][:40] for n in notes if n.get("event") == "chain-end")
print("notes:", len(notes), "bases:", sum(n.get("event") == "base" for n in notes), "peak_memory:", peak, "chain ends:", dict(ends))
PY
"$BIN" --json db timeline "$W/app.db" | python3 -c '
import json, sys
t = json.load(sys.stdin)[0]
print("chains:", len(t["chains"]), "gaps:", [g["reason"][:60] if g["reason"] else None for g in t["gaps"]])'
