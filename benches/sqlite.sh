#!/usr/bin/env bash
# benches/sqlite.sh: page-aware dedup of an evolving SQLite database, cairn
# next to restic (issue 7: "on an evolving database of at least 50 MB where
# each step changes about 1-3% of pages, the repository grows per snapshot
# by at most 3x the compressed size of the changed pages").
#
# Usage: benches/sqlite.sh [WORK_DIR]
#   WORK_DIR  empty or missing directory for the database, repositories, logs
#             and sqlite.md (default: a fresh mktemp dir under ${TMPDIR:-/tmp})
#
# python3's sqlite3 module builds a database of ROWS rows (default 60000) of
# 900 bytes of text-like data (compressible, like real rows), about 60 MB.
# Then STEPS times (default 10) it rewrites PERMILLE per mille of the rows
# chosen at random (default 4: about 2% of the pages) in one transaction and
# checkpoints. After each step the
# pages that differ from the previous step's copy are counted, and their
# size compressed with `zstd -3` (the changed pages concatenated) is the
# yardstick. Each step is backed up by cairn and by restic (same data, same
# run); the growth of each repository (du -sb) is divided by the yardstick.
#
# Installing: cairn is built here (cargo build --release) unless CAIRN_BIN is
# set; restic: apt-get update && apt-get install -y restic; zstd: apt-get
# install -y zstd. restic is skipped when not installed.
# Environment: ROWS, STEPS, PERMILLE, CAIRN_INIT_ARGS (e.g. "--kdf-memory 19").
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$script_dir/lib.sh"

ROWS=${ROWS:-60000}
STEPS=${STEPS:-10}
PERMILLE=${PERMILLE:-4}
for v in ROWS STEPS PERMILLE; do
    is_uint "${!v}" || die "$v must be a whole number"
done
command -v zstd >/dev/null 2>&1 || die "zstd is missing: apt-get install -y zstd"
setup_work_dir cairn-sqlite "${1:-}"
REPORT_MD=$WORK_DIR/sqlite.md
resolve_cairn "$repo_root"
setup_cairn_env
export RESTIC_PASSWORD=cairn-bench-password RESTIC_CACHE_DIR=$WORK_DIR/restic-cache
have_restic=0
command -v restic >/dev/null 2>&1 && have_restic=1

DATA=$WORK_DIR/data
DB=$DATA/app.db
mkdir -p "$DATA"
python3 - "$DB" "$ROWS" <<'EOF'
import random, sqlite3, sys
db, rows = sys.argv[1], int(sys.argv[2])
rng = random.Random(1)
words = [''.join(rng.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(rng.randint(3, 9))) for _ in range(5000)]
def text():
    out = []
    while sum(len(w) + 1 for w in out) < 900:
        out.append(rng.choice(words))
    return ' '.join(out)[:900]
c = sqlite3.connect(db)
c.execute('pragma journal_mode=wal')
c.execute('create table t(id integer primary key, v text)')
c.executemany('insert into t values (?, ?)', ((i, text()) for i in range(rows)))
c.commit()
c.execute('pragma wal_checkpoint(truncate)')
EOF
cp "$DB" "$WORK_DIR/prev.db"

cairn_init "$WORK_DIR/cairn-repo" "$LOG_DIR/cairn-init.log"
((have_restic)) && restic -r "$WORK_DIR/restic-repo" init >"$LOG_DIR/restic-init.log" 2>&1
du_b() { du -sb "$1" | cut -f1; }
backup_all() {
    "$CAIRN" -r "$WORK_DIR/cairn-repo" backup -q "$DATA" >>"$LOG_DIR/cairn.log" 2>&1
    if ((have_restic)); then restic -r "$WORK_DIR/restic-repo" backup -q "$DATA" >>"$LOG_DIR/restic.log" 2>&1; fi
}
backup_all
db_bytes=$(stat -c %s "$DB")
rows_md=()
sum_cairn=0 sum_restic=0 sum_yard=0
for ((s = 1; s <= STEPS; s++)); do
    python3 - "$DB" "$ROWS" "$PERMILLE" "$s" <<'EOF'
import random, sqlite3, sys
db, rows, permille, step = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(1000 + step)
c = sqlite3.connect(db)
for i in rng.sample(range(rows), rows * permille // 1000):
    c.execute('update t set v = ? where id = ?', (''.join(rng.choice('abcdefghij klmnop') for _ in range(900)), i))
c.commit()
c.execute('pragma wal_checkpoint(truncate)')
EOF
    read -r changed total < <(python3 - "$WORK_DIR/prev.db" "$DB" "$WORK_DIR/changed.pages" <<'EOF'
import sys
a, b, out = open(sys.argv[1], 'rb').read(), open(sys.argv[2], 'rb').read(), open(sys.argv[3], 'wb')
ps = int.from_bytes(b[16:18], 'big') or 65536
n = 0
for off in range(0, len(b), ps):
    if a[off:off + ps] != b[off:off + ps]:
        out.write(b[off:off + ps]); n += 1
out.close()  # before the caller, which reads the line below, compresses it
print(n, (len(b) + ps - 1) // ps, flush=True)
EOF
)
    yard=$(zstd -3 -q -c "$WORK_DIR/changed.pages" | wc -c)
    c0=$(du_b "$WORK_DIR/cairn-repo")
    r0=0
    ((have_restic)) && r0=$(du_b "$WORK_DIR/restic-repo")
    backup_all
    cg=$(($(du_b "$WORK_DIR/cairn-repo") - c0))
    rg=0
    ((have_restic)) && rg=$(($(du_b "$WORK_DIR/restic-repo") - r0))
    sum_cairn=$((sum_cairn + cg)) sum_restic=$((sum_restic + rg)) sum_yard=$((sum_yard + yard))
    ratio_c=$(awk -v a="$cg" -v b="$yard" 'BEGIN { printf "%.2f", a / b }')
    ratio_r=$(awk -v a="$rg" -v b="$yard" 'BEGIN { printf "%.2f", a / b }')
    rows_md+=("| $s | $changed of $total ($(awk -v a="$changed" -v b="$total" 'BEGIN { printf "%.1f", 100 * a / b }')%) | $yard | $cg | $ratio_c | $rg | $ratio_r |")
    say "step $s: $changed pages changed, $yard bytes compressed; cairn +$cg (x$ratio_c), restic +$rg (x$ratio_r)"
    cp "$DB" "$WORK_DIR/prev.db"
done
"$CAIRN" -r "$WORK_DIR/cairn-repo" verify --read-data >"$LOG_DIR/cairn-verify.log" 2>&1 && check=ok || check=FAILED

ENV_LINES=()
machine_lines "$WORK_DIR"
((have_restic)) && ENV_LINES+=("restic: $(restic version | head -n 1)")
ENV_LINES+=("database: $ROWS rows of 900 bytes of text, $(mib "$db_bytes") MiB, WAL mode; $STEPS steps each rewriting $PERMILLE per mille of the rows at random, then a checkpoint")
ENV_LINES+=("yardstick: the pages that differ from the previous step, concatenated, compressed with zstd -3")
{
    say "## Page-aware dedup of an evolving SQLite database (issue 7)"
    say ""
    for l in "${ENV_LINES[@]}"; do say "- $l"; done
    say ""
    say "| step | pages changed | changed pages, zstd bytes | cairn growth bytes | cairn / changed | restic growth bytes | restic / changed |"
    say "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for r in "${rows_md[@]}"; do say "$r"; done
    say ""
    say "Over all steps: cairn $(awk -v a="$sum_cairn" -v b="$sum_yard" 'BEGIN { printf "%.2f", a / b }')x the changed pages (target <= 3), restic $(awk -v a="$sum_restic" -v b="$sum_yard" 'BEGIN { printf "%.2f", a / b }')x; cairn verify --read-data afterwards: $check."
} | tee "$REPORT_MD"
say_warnings
