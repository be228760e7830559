#!/usr/bin/env bash
# benches/sqlite_large.sh: the "large database" criterion of issue 7: "on a
# SQLite database of at least 1 GB where 0.1% of pages change between two
# snapshots, the second snapshot adds at most 3x the compressed changed-page
# bytes plus 1 MB, metadata included".
#
# Usage: benches/sqlite_large.sh [WORK_DIR]
#   WORK_DIR  empty or missing directory for the database, repositories, logs
#             and sqlite_large.md (default: a fresh mktemp dir under
#             ${TMPDIR:-/tmp}); removed at the end unless KEEP=1 (a given
#             WORK_DIR keeps its logs and report, the bulky files go)
#
# python3's sqlite3 module builds a database of 4 KiB pages until it holds
# at least TARGET_MIB MiB (default 1024): an orders-like table of text and
# numbers (names, e-mail addresses, amounts, timestamps, a note of 80-330
# bytes of words: compressible like real rows) with an index on the
# timestamp, in WAL mode. Snapshot 1 is taken with `cairn backup`. Then
# PERMILLE per mille (default 1, i.e. 0.1%) of the page count is the number
# of rows, chosen at random over the whole table, whose note, amount and
# status are rewritten in one transaction (the note keeps its length, so
# rows stay on their pages), followed by a checkpoint; snapshot 2 follows.
#
# The pages that differ between the database file before and after the
# change are counted page by page. The yardstick is their compressed size:
# each changed page compressed on its own with `zstd -3 --no-check` and the
# sizes summed, which is what cairn does (one chunk per page, zstd level 3
# per chunk); the changed pages concatenated and compressed as one stream are
# reported too. The limit is 3 x the yardstick + 1 MiB (1,048,576 bytes).
# The second snapshot's cost is the bytes of the files it added to the
# repository (packs, index file, snapshot file: `find -type f` sizes, before
# and after), split with the new index file(s) (`cairn cat index`) into data
# blobs (pages), tree blobs (chunk-list blobs and directory trees), pack
# headers, index and snapshot. Both backups run under GNU time (wall time,
# peak RSS). restic backs up the same two states too when installed (set
# RESTIC=0 to skip).
#
# Installing: cairn is built here (cargo build --release) unless CAIRN_BIN is
# set; zstd: apt-get install -y zstd; restic: apt-get install -y restic.
# Environment: TARGET_MIB, PERMILLE, SEED, CAIRN_INIT_ARGS (e.g.
# "--kdf-memory 19"), RESTIC (0 to skip), KEEP (1 keeps the work dir).
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$script_dir/lib.sh"

TARGET_MIB=${TARGET_MIB:-1024}
PERMILLE=${PERMILLE:-1}
SEED=${SEED:-1}
need_positive TARGET_MIB PERMILLE
is_uint "$SEED" || die "SEED must be a whole number"
command -v zstd >/dev/null 2>&1 || die "zstd is missing: apt-get install -y zstd"
command -v python3 >/dev/null 2>&1 || die "python3 is missing"
require_gnu_time
given_dir=${1:-}
setup_work_dir cairn-sqlite-large "$given_dir"
cleanup() {
    if [[ ${KEEP:-0} == 1 ]]; then
        say "work dir kept: $WORK_DIR"
    elif [[ -n $given_dir ]]; then
        rm -rf "$WORK_DIR/data" "$WORK_DIR/prev.db" "$WORK_DIR/changed" "$WORK_DIR/cairn-repo" \
            "$WORK_DIR/restic-repo" "$WORK_DIR/cairn-cache" "$WORK_DIR/restic-cache"
    else
        rm -rf "$WORK_DIR"
    fi
}
trap cleanup EXIT
# The database, its copy, the image cairn stages in $TMPDIR, two
# repositories: about five times the database.
need_space "$WORK_DIR" $((5 * TARGET_MIB * 1024 * 1024)) "the large SQLite bench"
REPORT_MD=$WORK_DIR/sqlite_large.md
resolve_cairn "$repo_root"
setup_cairn_env
export RESTIC_PASSWORD=cairn-bench-password RESTIC_CACHE_DIR=$WORK_DIR/restic-cache
have_restic=0
if [[ ${RESTIC:-1} != 0 ]] && command -v restic >/dev/null 2>&1; then have_restic=1; fi

DATA=$WORK_DIR/data
DB=$DATA/app.db
CREPO=$WORK_DIR/cairn-repo
RREPO=$WORK_DIR/restic-repo
mkdir -p "$DATA"

say "building a database of at least $TARGET_MIB MiB"
t0=$EPOCHREALTIME
rows=$(python3 - "$DB" "$TARGET_MIB" "$SEED" <<'EOF'
import random, sqlite3, sys
db, target_mib, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
letters = 'abcdefghijklmnopqrstuvwxyz'
words = [''.join(rng.choice(letters) for _ in range(rng.randint(2, 10))) for _ in range(8000)]
phrases = [' '.join(rng.choice(words) for _ in range(rng.randint(4, 12))) for _ in range(40000)]
first = [w.capitalize() for w in words[:600]]
last = [w.capitalize() for w in words[600:2600]]
cities = [w.capitalize() for w in words[2600:3100]]
status = ['new', 'paid', 'shipped', 'delivered', 'returned', 'cancelled']
c = sqlite3.connect(db)
c.execute('pragma page_size = 4096')
c.execute('pragma journal_mode = off')
c.execute('pragma synchronous = off')
c.execute('pragma cache_size = -262144')
c.execute('''create table orders(id integer primary key, customer text, email text, city text,
    amount real, qty integer, status text, created text, note text)''')
c.execute('create index orders_created on orders(created)')
target_pages = target_mib * 1024 * 1024 // 4096
n = 0
t = 1767225600  # 2026-01-01 UTC
def rows(count):
    global n, t
    for _ in range(count):
        n += 1
        t += rng.randint(1, 20)
        f, l = rng.choice(first), rng.choice(last)
        note = ' '.join(rng.choice(phrases) for _ in range(rng.randint(1, 5)))[:330]
        yield (n, f + ' ' + l, (f + '.' + l + '@' + rng.choice(words) + '.example').lower(),
               rng.choice(cities), round(rng.uniform(1, 5000), 2), rng.randint(1, 40),
               rng.choice(status), '%d-%02d' % (t // 86400, t % 86400 // 3600) + ':%02d:%02d' % (t % 3600 // 60, t % 60),
               note)
while c.execute('pragma page_count').fetchone()[0] < target_pages:
    c.executemany('insert into orders values (?, ?, ?, ?, ?, ?, ?, ?, ?)', rows(100000))
c.commit()
c.execute('pragma journal_mode = wal')
c.close()
print(n)
EOF
)
build_s=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
db_bytes=$(stat -c %s "$DB")
say "  $rows rows, $(mib "$db_bytes") MiB in ${build_s}s"
cp "$DB" "$WORK_DIR/prev.db"

file_bytes() { find "$1" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f\n", s }'; }
du_b() { du -sb "$1" | cut -f1; }
list_files() { (cd "$1" && find . -type f | sort); }

cairn_init "$CREPO" "$LOG_DIR/cairn-init.log"
measure cairn-backup1 "$WORK_DIR" "$LOG_DIR/cairn-backup1.json" "$CAIRN" -r "$CREPO" backup --json "$DATA"
ok cairn-backup1 || die "the first cairn backup failed (see $LOG_DIR)"
if ((have_restic)); then
    restic -r "$RREPO" init >"$LOG_DIR/restic-init.log" 2>&1
    measure restic-backup1 "$WORK_DIR" - restic -r "$RREPO" backup -q "$DATA"
fi

say "changing $PERMILLE per mille of the pages' worth of rows"
python3 - "$DB" "$rows" "$PERMILLE" "$SEED" <<'EOF'
import random, sqlite3, sys
db, rows, permille, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed + 1000)
c = sqlite3.connect(db)
pages = c.execute('pragma page_count').fetchone()[0]
letters = 'abcdefghijklmnopqrstuvwxyz     '
for i in rng.sample(range(1, rows + 1), pages * permille // 1000):
    note = ''.join(rng.choice(letters) for _ in range(400))
    c.execute('update orders set note = substr(?, 1, length(note)), amount = ?, status = ? where id = ?',
              (note, round(rng.uniform(1, 5000), 2), 'updated', i))
c.commit()
c.execute('pragma wal_checkpoint(truncate)')
c.close()
EOF
mkdir -p "$WORK_DIR/changed"
read -r changed total < <(python3 - "$WORK_DIR/prev.db" "$DB" "$WORK_DIR/changed" <<'EOF'
import os, sys
a, b, out = open(sys.argv[1], 'rb'), open(sys.argv[2], 'rb'), sys.argv[3]
ps = int.from_bytes(b.read(100)[16:18], 'big') or 65536
b.seek(0)
n = total = 0
while True:
    pa, pb = a.read(ps), b.read(ps)
    if not pb:
        break
    if pa != pb:
        with open(os.path.join(out, '%09d' % total), 'wb') as f:
            f.write(pb)
        n += 1
    total += 1
print(n, total, flush=True)
EOF
)
((changed > 0)) || die "no page changed"
yard=0
for p in "$WORK_DIR"/changed/*; do
    yard=$((yard + $(zstd -3 -q --no-check -c "$p" | wc -c)))
done
yard_concat=$(cat "$WORK_DIR"/changed/* | zstd -3 -q --no-check -c | wc -c)
raw_changed=$((changed * 4096))
say "  $changed of $total pages differ; per page zstd -3 summed: $yard bytes; concatenated: $yard_concat bytes"

list_files "$CREPO" >"$WORK_DIR/cairn-files.before"
c_files0=$(file_bytes "$CREPO") c_du0=$(du_b "$CREPO")
measure cairn-backup2 "$WORK_DIR" "$LOG_DIR/cairn-backup2.json" "$CAIRN" -r "$CREPO" backup --json "$DATA"
ok cairn-backup2 || die "the second cairn backup failed (see $LOG_DIR)"
c_files1=$(file_bytes "$CREPO") c_du1=$(du_b "$CREPO")
growth=$((c_files1 - c_files0)) growth_du=$((c_du1 - c_du0))
list_files "$CREPO" >"$WORK_DIR/cairn-files.after"
comm -13 "$WORK_DIR/cairn-files.before" "$WORK_DIR/cairn-files.after" >"$WORK_DIR/cairn-files.new"
# The breakdown of what snapshot 2 added, from its new files and the new
# index file's entries.
: >"$LOG_DIR/new-index.json"
while read -r f; do
    case $f in
    ./index/*) "$CAIRN" -r "$CREPO" cat index "${f##*/}" >>"$LOG_DIR/new-index.json" ;;
    esac
done <"$WORK_DIR/cairn-files.new"
read -r n_data b_data n_tree b_tree b_tree_raw n_packs b_packs b_index b_snap b_other < <(
    python3 - "$CREPO" "$WORK_DIR/cairn-files.new" "$LOG_DIR/new-index.json" <<'EOF'
import json, os, sys
repo, new, idx = sys.argv[1], sys.argv[2], sys.argv[3]
files = [l.strip()[2:] for l in open(new) if l.strip()]
size = {f: os.path.getsize(os.path.join(repo, f)) for f in files}
packs = {f.rsplit('/', 1)[1]: s for f, s in size.items() if f.startswith('data/')}
b_index = sum(s for f, s in size.items() if f.startswith('index/'))
b_snap = sum(s for f, s in size.items() if f.startswith('snapshots/'))
b_other = sum(size.values()) - sum(packs.values()) - b_index - b_snap
dec = json.JSONDecoder()
text, pos, entries = open(idx).read(), 0, []
while pos < len(text):
    while pos < len(text) and text[pos].isspace():
        pos += 1
    if pos >= len(text):
        break
    obj, pos = dec.raw_decode(text, pos)
    for pack, blobs in obj.items():
        if pack in packs:
            entries += blobs
d = [e for e in entries if e['kind'] == 'Data']
t = [e for e in entries if e['kind'] == 'Tree']
print(len(d), sum(e['length'] for e in d), len(t), sum(e['length'] for e in t),
      sum(e['raw_length'] for e in t), len(packs), sum(packs.values()), b_index, b_snap, b_other)
EOF
)
stored2=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["summary"]["bytes_stored"])' "$LOG_DIR/cairn-backup2.json")
stored1=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["summary"]["bytes_stored"])' "$LOG_DIR/cairn-backup1.json")
b_headers=$((b_packs - b_data - b_tree))
meta=$((growth - b_data))
limit=$((3 * yard + 1048576))
ratio=$(div2 "$growth" "$limit")
verdict=PASS
((growth <= limit)) || verdict=MISS
verdict_mb=PASS
((growth <= 3 * yard + 1000000)) || verdict_mb=MISS

if ((have_restic)); then
    r0=$(file_bytes "$RREPO")
    measure restic-backup2 "$WORK_DIR" - restic -r "$RREPO" backup -q "$DATA"
    r_growth=$(($(file_bytes "$RREPO") - r0))
fi
measure cairn-verify "$WORK_DIR" - "$CAIRN" -r "$CREPO" verify --read-data
ok cairn-verify && check=ok || check=FAILED

secs() { say "${WALL[$1]:-failed}"; }
rss() { if [[ -n ${RSS[$1]:-} ]]; then kib_to_mib "${RSS[$1]}"; else say "-"; fi; }
ENV_LINES=()
machine_lines "$WORK_DIR"
((have_restic)) && ENV_LINES+=("restic: $(restic version | head -n 1)")
ENV_LINES+=("database: $rows rows (orders: text and numbers, a note of words, an index on the timestamp), $(mib "$db_bytes") MiB, $total pages of 4 KiB, WAL mode, built in ${build_s}s")
ENV_LINES+=("change: $((total * PERMILLE / 1000)) rows chosen at random rewritten (note, amount, status; same note length) in one transaction, then a checkpoint")
ENV_LINES+=("yardstick: each changed page compressed on its own with zstd -3 --no-check, summed (cairn compresses each page-chunk with zstd level 3)")
{
    say "## Issue 7, large database: a $(mib "$db_bytes") MiB SQLite database, $PERMILLE per mille of its pages changed"
    say ""
    for l in "${ENV_LINES[@]}"; do say "- $l"; done
    say ""
    say "| figure | value |"
    say "| --- | ---: |"
    say "| pages that differ between the two states | $changed of $total ($(awk -v a="$changed" -v b="$total" 'BEGIN { printf "%.3f", 100 * a / b }')%), $raw_changed bytes |"
    say "| changed pages, zstd -3 per page, summed (yardstick) | $yard |"
    say "| changed pages, concatenated, zstd -3 (for reference) | $yard_concat |"
    say "| limit: 3 x yardstick + 1 MiB | $limit |"
    say "| **snapshot 2: repository growth (bytes of the files it added)** | **$growth** |"
    say "| snapshot 2: growth by du -sb (directory sizes included) | $growth_du |"
    say "| snapshot 2: \`bytes_stored\` (backup --json: new packs and index file) | $stored2 |"
    say "| - data blobs (pages): count, bytes stored | $n_data, $b_data |"
    say "| - tree blobs (chunk lists + directory trees): count, bytes stored (plaintext) | $n_tree, $b_tree ($b_tree_raw) |"
    say "| - pack headers and framing ($n_packs new packs) | $b_headers |"
    say "| - index file(s) | $b_index |"
    say "| - snapshot file | $b_snap |"
    say "| - other new files | $b_other |"
    say "| metadata (growth - data blobs) | $meta |"
    say "| growth / yardstick | $(div2 "$growth" "$yard") |"
    say "| **growth / limit** | **$ratio** |"
    say "| snapshot 1: \`bytes_stored\`; wall s; peak RSS MiB | $stored1; $(secs cairn-backup1); $(rss cairn-backup1) |"
    say "| snapshot 2: wall s; peak RSS MiB | $(secs cairn-backup2); $(rss cairn-backup2) |"
    if ((have_restic)); then
        say "| restic snapshot 1: wall s; peak RSS MiB | $(secs restic-backup1); $(rss restic-backup1) |"
        say "| restic snapshot 2: growth bytes; growth / yardstick; wall s; peak RSS MiB | $r_growth; $(div2 "$r_growth" "$yard"); $(secs restic-backup2); $(rss restic-backup2) |"
    fi
    say ""
    say "Result: **$verdict** (growth $growth <= limit $limit: ${ratio}x the limit; with 1 MB = 10^6 bytes instead of 1 MiB: $verdict_mb). cairn verify --read-data afterwards: $check."
} | tee "$REPORT_MD"
say_warnings
