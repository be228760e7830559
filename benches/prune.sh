#!/usr/bin/env bash
# benches/prune.sh: forget + prune on a repository of many snapshots, cairn
# next to restic (issue 6: "prune time and peak memory on a repository of at
# least 100 snapshots, next to restic forget --prune on the same series").
#
# Usage: benches/prune.sh [WORK_DIR]
#   WORK_DIR  empty or missing directory for the data, repositories, logs and
#             prune.md (default: a fresh mktemp dir under ${TMPDIR:-/tmp})
#
# A python3 script builds a tree of FILES files (default 4000, 1-64 KiB of
# random bytes each, 100 per directory). Then SNAPSHOTS rounds (default 120)
# each change CHANGE_PCT percent of the files (default 3: new random
# content), add 20 files and delete 20, and back the tree up with every tool,
# so both repositories hold the same series. Then, timed under GNU time:
#   cairn  forget --keep-last KEEP --prune --max-unused 5%
#   restic forget --keep-last KEEP --prune --max-unused 5%
# (KEEP default 10), each on its own repository, page caches dropped first
# when permitted (else warm). Repository sizes before and after are
# recorded, and afterwards both repositories are checked (cairn verify
# --read-data, restic check --read-data; not timed).
#
# Installing: cairn is built here (cargo build --release) unless CAIRN_BIN is
# set; restic: apt-get update && apt-get install -y restic; GNU time:
# apt-get install -y time. A tool that is not installed is skipped.
# Environment: FILES, SNAPSHOTS, CHANGE_PCT, KEEP, TOOLS="cairn restic",
# CAIRN_INIT_ARGS (e.g. "--kdf-memory 19"), BENCH_CACHE=warm.
#
# Output: a table (and WORK_DIR/prune.md) with wall time, peak RSS and
# repository size before and after per tool, and cairn's ratios to restic.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$script_dir/lib.sh"

FILES=${FILES:-4000}
SNAPSHOTS=${SNAPSHOTS:-120}
CHANGE_PCT=${CHANGE_PCT:-3}
KEEP=${KEEP:-10}
TOOLS=${TOOLS:-cairn restic}
for v in FILES SNAPSHOTS CHANGE_PCT KEEP; do
    is_uint "${!v}" || die "$v must be a whole number"
done

require_gnu_time
setup_work_dir cairn-prune "${1:-}"
REPORT_MD=$WORK_DIR/prune.md
resolve_cairn "$repo_root"
setup_cairn_env
export RESTIC_PASSWORD=cairn-bench-password RESTIC_CACHE_DIR=$WORK_DIR/restic-cache
init_cache_mode
declare -A WALL RSS CPU FAIL SIZE_BEFORE SIZE_AFTER CHECK

have() { command -v "$1" >/dev/null 2>&1; }
active=()
for t in $TOOLS; do
    case $t in
        cairn) active+=(cairn) ;;
        restic) if have restic; then active+=(restic); else warn "restic not installed: skipped"; fi ;;
        *) die "unknown tool $t" ;;
    esac
done

DATA=$WORK_DIR/data
mkdir -p "$DATA"
evolve() { # round
    python3 - "$DATA" "$FILES" "$CHANGE_PCT" "$1" <<'EOF'
import os, random, sys
root, files, pct, rnd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(rnd)
def path(i):
    d = os.path.join(root, "d%03d" % (i // 100))
    os.makedirs(d, exist_ok=True)
    return os.path.join(d, "f%06d" % i)
def write(i):
    with open(path(i), "wb") as f:
        f.write(os.urandom(rng.randint(1024, 65536)))
if rnd == 0:
    for i in range(files):
        write(i)
else:
    for i in rng.sample(range(files), files * pct // 100):
        write(i)
    for i in range(20):
        write(files + rnd * 20 + i)
        old = files + (rnd - 1) * 20 + i
        if rnd > 1 and os.path.exists(path(old)):
            os.remove(path(old))
EOF
}

for t in "${active[@]}"; do
    case $t in
        cairn) cairn_init "$WORK_DIR/cairn-repo" "$LOG_DIR/cairn-init.log" ;;
        restic) restic -r "$WORK_DIR/restic-repo" init >"$LOG_DIR/restic-init.log" 2>&1 ;;
    esac
done
say "building the series: $SNAPSHOTS snapshots of $FILES files, $CHANGE_PCT% changed each time"
series_start=$(date +%s)
for ((r = 0; r < SNAPSHOTS; r++)); do
    evolve "$r"
    for t in "${active[@]}"; do
        case $t in
            cairn) "$CAIRN" -r "$WORK_DIR/cairn-repo" backup -q "$DATA" >>"$LOG_DIR/cairn-series.log" 2>&1 ;;
            restic) restic -r "$WORK_DIR/restic-repo" backup -q "$DATA" >>"$LOG_DIR/restic-series.log" 2>&1 ;;
        esac
    done
done
series_s=$(($(date +%s) - series_start))

du_b() { du -sb "$1" | cut -f1; }
for t in "${active[@]}"; do
    repo=$WORK_DIR/$t-repo
    SIZE_BEFORE[$t]=$(du_b "$repo")
    cold_step "$repo"
    case $t in
        cairn) measure cairn "$WORK_DIR" - "$CAIRN" -r "$repo" forget --keep-last "$KEEP" --prune --max-unused 5% ;;
        restic) measure restic "$WORK_DIR" - restic -r "$repo" forget --keep-last "$KEEP" --prune --max-unused 5% ;;
    esac
    SIZE_AFTER[$t]=$(du_b "$repo")
    case $t in
        cairn) "$CAIRN" -r "$repo" verify --read-data >"$LOG_DIR/cairn-verify.log" 2>&1 && CHECK[$t]=ok || CHECK[$t]=FAILED ;;
        restic) restic -r "$repo" check --read-data >"$LOG_DIR/restic-check.log" 2>&1 && CHECK[$t]=ok || CHECK[$t]=FAILED ;;
    esac
done

ENV_LINES=()
machine_lines "$WORK_DIR"
have restic && ENV_LINES+=("restic: $(restic version | head -n 1)")
ENV_LINES+=("series: $SNAPSHOTS snapshots of $FILES files (1-64 KiB random), $CHANGE_PCT% rewritten, 20 added and 20 removed per snapshot; built in ${series_s}s")
ENV_LINES+=("step: forget --keep-last $KEEP --prune --max-unused 5% (both tools); cache: $CACHE_MODE")
{
    say "## forget + prune: cairn next to restic (issue 6)"
    say ""
    for l in "${ENV_LINES[@]}"; do say "- $l"; done
    say ""
    say "| tool | wall s | peak RSS MiB | CPU s | repository before | after | check after |"
    say "| --- | ---: | ---: | ---: | ---: | ---: | --- |"
    for t in "${active[@]}"; do
        if ok "$t"; then
            say "| $t | ${WALL[$t]} | $(kib_to_mib "${RSS[$t]}") | ${CPU[$t]} | $(mib "${SIZE_BEFORE[$t]}") MiB | $(mib "${SIZE_AFTER[$t]}") MiB | ${CHECK[$t]} |"
        else
            say "| $t | failed (exit ${FAIL[$t]}) | | | | | |"
        fi
    done
    if ok cairn && ok restic; then
        say ""
        say "cairn / restic: wall $(awk -v a="${WALL[cairn]}" -v b="${WALL[restic]}" 'BEGIN { printf "%.2f", a / b }'), peak RSS $(awk -v a="${RSS[cairn]}" -v b="${RSS[restic]}" 'BEGIN { printf "%.2f", a / b }')"
    fi
} | tee "$REPORT_MD"
say_warnings
