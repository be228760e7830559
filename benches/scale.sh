#!/usr/bin/env bash
# benches/scale.sh: cairn's memory at scale (issue 5, "Scale"):
#   A. a tree of 1,000,000 small files backs up with peak RSS under 250 MB;
#   B. a single 10 GB file backs up and restores with peak RSS under 150 MB.
#
# Usage: benches/scale.sh [WORK_DIR]
#   WORK_DIR  empty or missing directory for the generated data, the
#             repositories, the restore, logs and scale.md (default: a fresh
#             mktemp dir under ${TMPDIR:-/tmp})
#
# A. Many small files. A python3 script writes FILES files (default
#    1,000,000) of 0-4 KiB each (sizes uniform, FILES_PER_DIR per directory,
#    default 1000), cut at random offsets from a 64 MiB block of seeded
#    pseudo-random bytes: the contents are incompressible and (bar the few
#    empty files) distinct. Timed: a backup into a fresh encrypted repository,
#    then a second backup with nothing changed. Target for both: peak RSS
#    under 250 MB. The snapshot's file count is checked against FILES, and
#    the no-change backup's new/changed/unchanged counts are reported.
# B. One big file. SIZE_GIB GiB (default 10) of random data (head -c from
#    /dev/urandom) in one file. Timed: a backup into a fresh encrypted
#    repository, then a restore of it into an empty directory. Target for
#    both: peak RSS under 150 MB. The restored file is compared with the
#    source by `cmp` (timed too, for reference).
# Page caches are dropped before every timed step (`sync; echo 3 >
# /proc/sys/vm/drop_caches`) where that is permitted; elsewhere (or with
# BENCH_CACHE=warm) each step's input is read once before it, and the report
# says so. Every step runs under GNU time (`/usr/bin/time -f "%e %M"`: wall
# seconds and peak RSS, in KiB); MB in the targets are 10^6 bytes, so the
# limits are 238.4 MiB and 143.1 MiB. cairn's peak RSS includes the 64 MiB
# its Argon2 key derivation uses when it opens the repository.
#
# Space: part A needs about FILES x 6 KiB (data and repository), part B
# 3 x SIZE_GIB GiB (source, repository, restore); the script checks `df`
# before writing. Part A's data and repository are deleted before part B
# starts, and everything big at the end, unless KEEP=1.
#
# Tools: GNU time (apt-get install -y time), python3, cmp (diffutils).
# cairn is built by this script with `cargo build --release` in the
# repository root (-> target/release/cairn); set CAIRN_BIN=/path to use a
# given binary instead and skip the build.
#
# Environment knobs:
#   FILES=1000000        part A: number of files
#   FILES_PER_DIR=1000   part A: files per directory
#   MAX_FILE_SIZE=4096   part A: largest file, bytes (sizes are 0..MAX)
#   SIZE_GIB=10          part B: size of the big file, GiB
#   PARTS="files bigfile"   which parts to run
#   BENCH_CACHE=warm     do not drop caches, read each step's input instead
#   KEEP=1               keep the generated data, repositories and restore
#   CAIRN_PASSWORD       repository password (default: a fixed bench password)
#   CAIRN_INIT_ARGS      extra arguments for `cairn init`, e.g. "--kdf-memory 19"
#
# Output: the steps as they run, then a markdown report (machine, date,
# versions, a table step | wall s | peak RSS MiB | target | pass/miss, and
# details) printed and written to WORK_DIR/scale.md. Logs in WORK_DIR/logs.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$script_dir/lib.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
case ${1:-} in
    -h | --help) usage; exit 0 ;;
esac
if [[ $# -gt 1 ]]; then
    usage >&2
    exit 2
fi

FILES=${FILES:-1000000}
FILES_PER_DIR=${FILES_PER_DIR:-1000}
MAX_FILE_SIZE=${MAX_FILE_SIZE:-4096}
SIZE_GIB=${SIZE_GIB:-10}
PARTS=${PARTS:-files bigfile}
KEEP=${KEEP:-0}
need_positive FILES FILES_PER_DIR SIZE_GIB
is_uint "$MAX_FILE_SIZE" || die "MAX_FILE_SIZE must be an integer, not '$MAX_FILE_SIZE'"
for p in $PARTS; do
    case $p in
        files | bigfile) ;;
        *) die "unknown part '$p' in PARTS (files, bigfile)" ;;
    esac
done
want() { [[ " $PARTS " == *" $1 "* ]]; }

setup_work_dir cairn-scale "${1:-}"
REPORT_MD=$WORK_DIR/scale.md
require_gnu_time
command -v python3 >/dev/null || die "python3 is missing"
command -v cmp >/dev/null || die "cmp is missing: apt-get install -y diffutils"
setup_cairn_env
resolve_cairn "$repo_root"

TREE=$WORK_DIR/files
REPO_A=$WORK_DIR/repo-files
BIG_DIR=$WORK_DIR/big
BIG=$BIG_DIR/random.bin
REPO_B=$WORK_DIR/repo-big
RESTORE_B=$WORK_DIR/big-restore
cleanup_files() { rm -rf "${TREE:?}" "${REPO_A:?}"; }
cleanup_big() { rm -rf "${BIG_DIR:?}" "${REPO_B:?}" "${RESTORE_B:?}"; }
cleanup() {
    [[ $KEEP == 1 ]] && return 0
    say "cleaning up the generated data (KEEP=1 keeps it)"
    cleanup_files
    cleanup_big
}
trap cleanup EXIT

init_cache_mode
ENV_LINES=()
machine_lines "$WORK_DIR"
ENV_LINES+=("python3: $(python3 --version 2>&1); $(cmp --version | head -n 1)")
say ""
for l in "${ENV_LINES[@]}"; do say "$l"; done
say "work dir: $WORK_DIR"
say ""

# last_summary REPO FIELD...: prints the given fields of the newest
# snapshot's summary (from `cairn --json snapshots`), space-separated.
last_summary() {
    local repo=$1
    shift
    "$CAIRN" -r "$repo" --json snapshots |
        python3 -c '
import json, sys
snaps = json.load(sys.stdin)
s = max(snaps, key=lambda x: x["time"])["summary"]
print(" ".join(str(s.get(f, "?")) for f in sys.argv[1:]))
' "$@"
}

declare -A NOTE=()

# ------------------------------------------------------- A. 1M files ----
if want files; then
    dirs=$(((FILES + FILES_PER_DIR - 1) / FILES_PER_DIR))
    need_space "$WORK_DIR" $((FILES * 6 * 1024)) "part A (data + repository)"
    inodes_free=$(df --output=iavail "$WORK_DIR" | tail -n 1 | tr -d ' ')
    if is_uint "$inodes_free" && ((inodes_free > 0 && inodes_free < FILES + dirs + 100000)); then
        die "part A needs about $((FILES + dirs)) inodes, only $inodes_free free"
    fi
    say "== A. $FILES small files in $dirs directories: writing $TREE"
    t0=$SECONDS
    read -r A_FILES A_BYTES < <(python3 - "$TREE" "$FILES" "$FILES_PER_DIR" "$MAX_FILE_SIZE" <<'PY'
import os, random, sys

root, n, per_dir, max_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(20261123)
pool_size = 64 << 20
pool = memoryview(rng.randbytes(pool_size + max_size))
flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
os.makedirs(root)
total = 0
for i in range(n):
    d = os.path.join(root, "d%05d" % (i // per_dir))
    if i % per_dir == 0:
        os.mkdir(d)
    size = rng.randrange(max_size + 1)
    off = rng.randrange(pool_size)
    fd = os.open(os.path.join(d, "f%05d" % (i % per_dir)), flags, 0o644)
    os.write(fd, pool[off:off + size])
    os.close(fd)
    total += size
print(n, total)
PY
    )
    say "  $A_FILES files, $(mib "$A_BYTES") MiB written in $((SECONDS - t0))s; syncing"
    sync
    # cairn re-reads files whose mtime or ctime falls within about a second
    # of the parent backup's start ("racily clean"); let the newest files age
    # past that, so the no-change backup sees every file as unchanged.
    sleep 3
    cairn_init "$REPO_A" "$LOG_DIR/init-files.log"

    cold_step "$TREE"
    measure files-backup1 "$WORK_DIR" - "$CAIRN" -r "$REPO_A" backup "$TREE"
    if ok files-backup1; then
        A_REPO1=$(du -sb "$REPO_A" | cut -f1)
        read -r fn fc fu dirs_s < <(last_summary "$REPO_A" files_new files_changed files_unchanged dirs)
        A_SNAP_FILES=$((fn + fc + fu))
        NOTE[files-backup1]="snapshot: $A_SNAP_FILES files, $dirs_s directories; repository $(mib "$A_REPO1") MiB"
        if ((A_SNAP_FILES != A_FILES)); then
            warn "the first snapshot of $TREE has $A_SNAP_FILES files, not $A_FILES"
        fi
        say "    ${NOTE[files-backup1]}"

        cold_step "$TREE"
        measure files-backup2 "$WORK_DIR" - "$CAIRN" -r "$REPO_A" backup "$TREE"
        if ok files-backup2; then
            read -r fn fc fu bytes_read < <(last_summary "$REPO_A" files_new files_changed files_unchanged bytes_read)
            NOTE[files-backup2]="files: $fn new, $fc changed, $fu unchanged; $(mib "$bytes_read") MiB read"
            say "    ${NOTE[files-backup2]}"
        fi
    fi
    if [[ $KEEP != 1 ]]; then
        say "  deleting part A's data and repository"
        cleanup_files
    fi
fi

# ------------------------------------------------------- B. big file ----
if want bigfile; then
    big_bytes=$((SIZE_GIB * 1024 * 1024 * 1024))
    need_space "$WORK_DIR" $((3 * big_bytes)) "part B (file, repository, restore)"
    say "== B. one file of $SIZE_GIB GiB: writing $BIG"
    mkdir -p "$BIG_DIR"
    t0=$SECONDS
    random_file "$BIG" "$big_bytes"
    B_BYTES=$(stat -c %s "$BIG")
    say "  $(mib "$B_BYTES") MiB written in $((SECONDS - t0))s; syncing"
    sync
    cairn_init "$REPO_B" "$LOG_DIR/init-big.log"

    cold_step "$BIG_DIR"
    measure big-backup "$WORK_DIR" - "$CAIRN" -r "$REPO_B" backup "$BIG_DIR"
    if ok big-backup; then
        B_REPO=$(du -sb "$REPO_B" | cut -f1)
        NOTE[big-backup]="$(mb_per_s "$B_BYTES" "${WALL[big-backup]}") MB/s; repository $(mib "$B_REPO") MiB"
        say "    ${NOTE[big-backup]}"

        cold_step "$REPO_B"
        measure big-restore "$WORK_DIR" - "$CAIRN" -r "$REPO_B" restore latest --target "$RESTORE_B"
        if ok big-restore; then
            NOTE[big-restore]="$(mb_per_s "$B_BYTES" "${WALL[big-restore]}") MB/s; sync after: $(sync_time)s (not timed)"
            say "    ${NOTE[big-restore]}"
            # cairn restores the snapshot's absolute paths below the target.
            cold_step "$BIG" "$RESTORE_B$BIG"
            measure big-cmp "$WORK_DIR" - cmp "$BIG" "$RESTORE_B$BIG"
            if ok big-cmp; then CMP_RESULT=identical; else CMP_RESULT=differs; fi
            say "    restored file: $CMP_RESULT"
        fi
    fi
fi

# ------------------------------------------------------------ report ----
A_LIMIT_KIB=$(mb_to_kib 250)
B_LIMIT_KIB=$(mb_to_kib 150)
row() { # key label limit_mb limit_kib
    local k=$1 wall rss result
    if ok "$k"; then
        wall=${WALL[$k]}
        rss=$(kib_to_mib "${RSS[$k]}")
        result=$(verdict_lt "${RSS[$k]}" "$4")
    elif [[ -n ${FAIL[$k]:-} ]]; then
        wall="FAILED (exit ${FAIL[$k]})" rss="" result=miss
    else
        wall="not run" rss="" result=miss
    fi
    say "| $2 | $wall | $rss | < $3 MB ($(kib_to_mib "$4") MiB) | $result | ${NOTE[$k]:-} |"
}

report() {
    say "## cairn at scale (issue 5)"
    say ""
    for l in "${ENV_LINES[@]}"; do say "- $l"; done
    local mode="cold cache (page caches dropped before each step)"
    [[ $CACHE_MODE == warm ]] && mode="WARM cache (caches not dropped; each step's input read once before it)"
    say "- cache: $mode"
    if want files; then
        say "- part A data: ${A_FILES:-?} files of 0-$MAX_FILE_SIZE bytes, $FILES_PER_DIR per directory, $(mib "${A_BYTES:-0}") MiB, incompressible, distinct"
    fi
    if want bigfile; then
        say "- part B data: one file of $(mib "${B_BYTES:-0}") MiB from /dev/urandom"
    fi
    say "- MB = 10^6 bytes; peak RSS is GNU time's maximum resident set size"
    say "- script run time: ${SECONDS}s (with data generation and part A's clean-up, before the final clean-up)"
    say ""
    say "| step | wall s | peak RSS MiB | target | result | note |"
    say "| --- | ---: | ---: | --- | --- | --- |"
    if want files; then
        row files-backup1 "${A_FILES:-$FILES} files: initial backup" 250 "$A_LIMIT_KIB"
        row files-backup2 "${A_FILES:-$FILES} files: no-change backup" 250 "$A_LIMIT_KIB"
    fi
    if want bigfile; then
        row big-backup "$SIZE_GIB GiB file: backup" 150 "$B_LIMIT_KIB"
        row big-restore "$SIZE_GIB GiB file: restore" 150 "$B_LIMIT_KIB"
        local cmp_wall="not run" cmp_result=miss
        if [[ -n ${CMP_RESULT:-} ]]; then
            cmp_wall=${WALL[big-cmp]:-"FAILED (exit ${FAIL[big-cmp]:-?})"}
            [[ $CMP_RESULT == identical ]] && cmp_result=pass
        fi
        say "| $SIZE_GIB GiB file: restored = source (cmp) | $cmp_wall | | identical | $cmp_result | ${CMP_RESULT:-} |"
    fi
    say_warnings
}

say ""
report | tee "$REPORT_MD"
say ""
say "report written to $REPORT_MD (logs in $LOG_DIR)"
