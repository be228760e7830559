#!/usr/bin/env bash
# benches/hardware.sh: cairn against what the hardware allows (issue 5,
# "Against the hardware"):
#   A. backup throughput on incompressible data must be at least 0.60x that
#      of `b3sum` + `zstd -3` on the same bytes using both cores;
#   B. restore must reach at least 0.70x the speed of `cp -a` of the same tree.
#
# Usage: benches/hardware.sh [WORK_DIR]
#   WORK_DIR  empty or missing directory for the data, repositories,
#             restores, logs and hardware.md (default: a fresh mktemp dir
#             under ${TMPDIR:-/tmp})
#
# A. Throughput (warm cache: this compares CPU throughput, so the data is
#    read once before every timed command and no command waits on the disk
#    for its input). SIZE_MIB MiB of random data (head -c from /dev/urandom)
#    is written to DATA_FILES files in WORK_DIR/random. Timed:
#      baseline = wall(b3sum --num-threads 2 FILES)
#               + wall(zstd -3 -T2 -c FILES > /dev/null)
#      cairn    = wall(cairn -r REPO backup WORK_DIR/random), REPO a fresh
#                 encrypted repository made by `cairn init` (not timed)
#    figure = (cairn MB/s) / (baseline MB/s) = baseline wall / cairn wall,
#    target >= 0.60. cairn's time includes what the baseline does not:
#    opening the repository (Argon2 key derivation, timed separately with
#    `cairn snapshots` and shown for reference), encryption, and writing and
#    fsyncing the repository. Two reference commands separate the disk from
#    the CPU: `dd ... conv=fsync` writes the same bytes into WORK_DIR (the
#    ceiling of any backup into that file system), and cairn backs the data
#    up once more into a repository on tmpfs (SHM_DIR, default /dev/shm,
#    skipped without room for the data), whose ratio to the baseline is
#    printed as well.
# B. Restore (cold cache: page caches dropped before each timed command).
#    TREE (default /usr/share) is backed up into a fresh repository (timed
#    for reference only), then timed:
#      cp -a TREE WORK_DIR/cp-copy
#      cairn -r REPO restore latest --target WORK_DIR/cairn-restore
#    figure = speed(cairn) / speed(cp) = wall(cp) / wall(cairn), target
#    >= 0.70. Neither command fsyncs what it writes; `sync` runs after each
#    (outside the timing, its duration is shown). Both copies are checked
#    against TREE (file, directory and symlink counts and bytes).
# Every command runs under GNU time (`/usr/bin/time -f "%e %M"`: wall seconds
# and peak RSS); CPU time (user + sys) is recorded too. Where dropping the
# caches is not permitted, part B runs warm (its inputs are read once before
# each command) and the report says so.
#
# Tools (Debian):
#   time:   apt-get install -y time          (for /usr/bin/time)
#   zstd:   apt-get install -y zstd
#   b3sum:  cargo install --locked b3sum     (the script runs this itself
#           when b3sum is missing and cargo is there)
#   cairn:  built by this script with `cargo build --release` in the
#           repository root -> target/release/cairn; set CAIRN_BIN=/path to
#           use a given binary instead and skip the build.
#
# Environment knobs:
#   SIZE_MIB=2048       part A: MiB of random data
#   DATA_FILES=4        part A: number of files the data is split into
#   TREE=/usr/share     part B: tree to copy and restore
#   RUNS=1              run each timed command RUNS times, keep the fastest
#   PARTS="throughput restore"   which parts to run
#   BENCH_CACHE=warm    part B: do not drop caches, read the inputs instead
#   KEEP=1              keep the random data, repositories and copies
#   CAIRN_PASSWORD      repository password (default: a fixed bench password)
#   CAIRN_INIT_ARGS     extra arguments for `cairn init`, e.g. "--kdf-memory 19"
#
# Output: the steps as they run, then a markdown report (machine, date,
# versions, a table of each target with the measured figure and pass/miss,
# and every timed command) printed and written to WORK_DIR/hardware.md.
# Logs of each command are in WORK_DIR/logs.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$script_dir/lib.sh"

SIZE_MIB=${SIZE_MIB:-2048}
DATA_FILES=${DATA_FILES:-4}
TREE=${TREE:-/usr/share}
RUNS=${RUNS:-1}
PARTS=${PARTS:-throughput restore}
KEEP=${KEEP:-0}
need_positive SIZE_MIB DATA_FILES RUNS
for p in $PARTS; do
    case $p in
        throughput | restore) ;;
        *) die "unknown part '$p' in PARTS (throughput, restore)" ;;
    esac
done
want() { [[ " $PARTS " == *" $1 "* ]]; }

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
case ${1:-} in
    -h | --help) usage; exit 0 ;;
esac
if [[ $# -gt 1 ]]; then
    usage >&2
    exit 2
fi
setup_work_dir cairn-hardware "${1:-}"
REPORT_MD=$WORK_DIR/hardware.md
if want restore; then
    TREE=$(realpath -e "$TREE")
    [[ -d $TREE ]] || die "TREE $TREE is not a directory"
    case $WORK_DIR/ in
        "$TREE"/*) die "WORK_DIR must not be inside TREE" ;;
    esac
fi

require_gnu_time
setup_cairn_env
if want throughput; then
    command -v zstd >/dev/null || die "zstd is missing: apt-get install -y zstd"
    if ! command -v b3sum >/dev/null; then
        if [[ -x ${CARGO_HOME:-$HOME/.cargo}/bin/b3sum ]]; then
            PATH=${CARGO_HOME:-$HOME/.cargo}/bin:$PATH
        elif command -v cargo >/dev/null; then
            say "b3sum is missing: cargo install --locked b3sum"
            cargo install --locked --quiet b3sum
            PATH=${CARGO_HOME:-$HOME/.cargo}/bin:$PATH
        fi
        command -v b3sum >/dev/null || die "b3sum is missing: cargo install --locked b3sum"
    fi
fi
resolve_cairn "$repo_root"

cleanup() {
    [[ $KEEP == 1 ]] && return 0
    rm -rf "${WORK_DIR:?}/random" "${WORK_DIR:?}/repo-random" "${WORK_DIR:?}/repo-tree" \
        "${WORK_DIR:?}/cp-copy" "${WORK_DIR:?}/cairn-restore"
}
trap cleanup EXIT

init_cache_mode
ENV_LINES=()
machine_lines "$WORK_DIR"
if want throughput; then
    ENV_LINES+=("b3sum: $(b3sum --version) ($(command -v b3sum)); zstd: $(zstd -V 2>&1 | grep -o "v[0-9][0-9.]*" | head -n 1) ($(command -v zstd))")
fi
if want restore; then
    ENV_LINES+=("cp: $(cp --version | head -n 1)")
fi
say ""
for l in "${ENV_LINES[@]}"; do say "$l"; done
say "work dir: $WORK_DIR"
say ""

# ---------------------------------------------------- A. throughput ----
DATA=$WORK_DIR/random
if want throughput; then
    total=$((SIZE_MIB * 1024 * 1024))
    need_space "$WORK_DIR" $((2 * total)) "part A (data + repository)"
    avail_mem=$(awk '/MemAvailable/ { print $2 * 1024 }' /proc/meminfo)
    if ((total > avail_mem * 8 / 10)); then
        warn "SIZE_MIB=$SIZE_MIB does not fit in the page cache ($(mib "$avail_mem") MiB available): part A will read from disk"
    fi
    say "== A. throughput: writing $SIZE_MIB MiB of random data to $DATA ($DATA_FILES files)"
    mkdir -p "$DATA"
    per=$((total / DATA_FILES))
    DATA_PATHS=()
    for ((i = 1; i <= DATA_FILES; i++)); do
        size=$per
        ((i == DATA_FILES)) && size=$((total - per * (DATA_FILES - 1)))
        f=$(printf '%s/random-%03d.bin' "$DATA" "$i")
        random_file "$f" "$size"
        DATA_PATHS+=("$f")
    done
    read -r _ _ _ A_BYTES < <(tree_stats "$DATA")
    say "  $(mib "$A_BYTES") MiB written"
    sync

    REPO_A=$WORK_DIR/repo-random
    for ((RUN = 1; RUN <= RUNS; RUN++)); do
        warm "$DATA"
        measure b3sum "$WORK_DIR" - b3sum --num-threads 2 "${DATA_PATHS[@]}"
        warm "$DATA"
        measure zstd "$WORK_DIR" /dev/null zstd -3 -T2 -q -c "${DATA_PATHS[@]}"
        rm -rf "$REPO_A"
        cairn_init "$REPO_A" "$LOG_DIR/init-random.$RUN.log"
        measure cairn-open "$WORK_DIR" - "$CAIRN" -r "$REPO_A" snapshots
        sync
        warm "$DATA"
        measure cairn-backup "$WORK_DIR" - "$CAIRN" -r "$REPO_A" backup "$DATA"
        rm -rf "$WORK_DIR/dd-copy"
        mkdir -p "$WORK_DIR/dd-copy"
        warm "$DATA"
        # shellcheck disable=SC2016
        measure disk-write "$WORK_DIR" - sh -c 'd=$1; shift; for f; do dd if="$f" of="$d/${f##*/}" bs=16M conv=fsync status=none || exit 1; done' sh "$WORK_DIR/dd-copy" "${DATA_PATHS[@]}"
        rm -rf "$WORK_DIR/dd-copy"
        SHM=${SHM_DIR:-/dev/shm}
        if [[ -d $SHM && -w $SHM ]] && (($(avail_bytes "$SHM") > 2 * A_BYTES)); then
            REPO_M=$(mktemp -d "$SHM/cairn-hw.XXXXXX")
            cairn_init "$REPO_M/repo" "$LOG_DIR/init-memory.$RUN.log"
            warm "$DATA"
            measure cairn-backup-mem "$WORK_DIR" - "$CAIRN" -r "$REPO_M/repo" backup "$DATA"
            rm -rf "$REPO_M"
        fi
    done
    A_REPO_SIZE=$(du -sb "$REPO_A" | cut -f1)
    say "  repository size: $(mib "$A_REPO_SIZE") MiB"
    [[ $KEEP == 1 ]] || rm -rf "$REPO_A"
fi

# ------------------------------------------------------- B. restore ----
CP_DEST=$WORK_DIR/cp-copy
CAIRN_DEST=$WORK_DIR/cairn-restore
declare -A SYNC_AFTER=()
check_copy() { # name dir
    local f d l b
    read -r f d l b < <(tree_stats "$2")
    if [[ "$f $d $l $b" == "$B_FILES $B_DIRS $B_LINKS $B_BYTES" ]]; then
        say "    $1 check: OK ($f files, $d directories, $l symlinks, $b bytes)"
        CHECK[$1]=OK
    else
        warn "$1 differs from $TREE: files $f/$B_FILES, directories $d/$B_DIRS, symlinks $l/$B_LINKS, bytes $b/$B_BYTES (copy/source)"
        CHECK[$1]=differs
    fi
}
declare -A CHECK=()
if want restore; then
    read -r B_FILES B_DIRS B_LINKS B_BYTES < <(tree_stats "$TREE")
    say "== B. restore: $TREE: $(mib "$B_BYTES") MiB in $B_FILES files, $B_DIRS directories, $B_LINKS symlinks"
    need_space "$WORK_DIR" $((3 * B_BYTES)) "part B (repository + two copies)"
    REPO_B=$WORK_DIR/repo-tree
    cairn_init "$REPO_B" "$LOG_DIR/init-tree.log"
    RUN=1 measure cairn-backup-tree "$WORK_DIR" - "$CAIRN" -r "$REPO_B" backup "$TREE"
    ok cairn-backup-tree || die "backup of $TREE failed: cannot time the restore"
    B_REPO_SIZE=$(du -sb "$REPO_B" | cut -f1)
    say "  repository size: $(mib "$B_REPO_SIZE") MiB"
    for ((RUN = 1; RUN <= RUNS; RUN++)); do
        rm -rf "$CP_DEST" "$CAIRN_DEST"
        cold_step "$TREE"
        measure cp "$WORK_DIR" - cp -a "$TREE" "$CP_DEST"
        SYNC_AFTER[cp]=$(sync_time)
        say "    sync after: ${SYNC_AFTER[cp]}s"
        check_copy cp "$CP_DEST"
        rm -rf "$CP_DEST"

        cold_step "$REPO_B"
        measure cairn-restore "$WORK_DIR" - "$CAIRN" -r "$REPO_B" restore latest --target "$CAIRN_DEST"
        SYNC_AFTER[cairn-restore]=$(sync_time)
        say "    sync after: ${SYNC_AFTER[cairn-restore]}s"
        # cairn restores the snapshot's absolute paths below the target.
        check_copy cairn-restore "$CAIRN_DEST$TREE"
        rm -rf "$CAIRN_DEST"
    done
fi

# ------------------------------------------------------------ report ----
fig() { # key: wall s, or FAILED
    if ok "$1"; then printf '%s' "${WALL[$1]}"; else printf 'FAILED (exit %s)' "${FAIL[$1]:-?}"; fi
}
detail_row() { # key command bytes cache note
    local k=$1 speed="" rss="" cpu="" pct=""
    if ok "$k"; then
        [[ -n $3 ]] && speed=$(mb_per_s "$3" "${WALL[$k]}")
        rss=$(kib_to_mib "${RSS[$k]}")
        cpu=${CPU[$k]}
        pct="$(cpu_pct "$cpu" "${WALL[$k]}")%"
    fi
    say "| \`$2\` | $4 | $(fig "$k") | $speed | $rss | $cpu | $pct | $5 |"
}

report() {
    say "## cairn against the hardware (issue 5)"
    say ""
    for l in "${ENV_LINES[@]}"; do say "- $l"; done
    if want throughput; then
        say "- part A data: $(mib "$A_BYTES") MiB of random bytes (/dev/urandom) in $DATA_FILES files; warm cache (read once before each command)"
    fi
    if want restore; then
        local mode="cold cache (page caches dropped before each command)"
        [[ $CACHE_MODE == warm ]] && mode="WARM cache (caches not dropped; inputs read once before each command)"
        say "- part B tree: $TREE, $(mib "$B_BYTES") MiB in $B_FILES files, $B_DIRS directories, $B_LINKS symlinks; $mode"
    fi
    say "- runs per command: $RUNS (fastest kept; peak RSS is the highest of the runs); MB = 10^6 bytes"
    say "- script run time: ${SECONDS}s"
    say ""
    say "| target | measured | target | result |"
    say "| --- | --- | ---: | --- |"
    if want throughput; then
        if ok b3sum && ok zstd && ok cairn-backup; then
            local base ratio
            base=$(add "${WALL[b3sum]}" "${WALL[zstd]}")
            ratio=$(div2 "$base" "${WALL[cairn-backup]}")
            say "| backup throughput, incompressible data, vs b3sum + zstd -3 on 2 cores | $ratio (cairn $(mb_per_s "$A_BYTES" "${WALL[cairn-backup]}") MB/s, baseline $(mb_per_s "$A_BYTES" "$base") MB/s: ${base}s / ${WALL[cairn-backup]}s) | >= 0.60 | $(verdict_ge "$ratio" 0.60) |"
            if ok cairn-backup-mem; then
                ratio=$(div2 "$base" "${WALL[cairn-backup-mem]}")
                say "| (reference) the same, repository on tmpfs: no disk | $ratio (cairn $(mb_per_s "$A_BYTES" "${WALL[cairn-backup-mem]}") MB/s) | >= 0.60 | $(verdict_ge "$ratio" 0.60) |"
            fi
            if ok disk-write; then
                say "| (reference) the disk: the same bytes written with dd conv=fsync | $(mb_per_s "$A_BYTES" "${WALL[disk-write]}") MB/s, the ceiling of a backup into this file system | | |"
            fi
        else
            say "| backup throughput, incompressible data, vs b3sum + zstd -3 on 2 cores | not measured: a command failed | >= 0.60 | miss |"
        fi
    fi
    if want restore; then
        if ok cp && ok cairn-restore; then
            local ratio
            ratio=$(div2 "${WALL[cp]}" "${WALL[cairn-restore]}")
            local checks="copies checked: cp ${CHECK[cp]:-?}, cairn ${CHECK[cairn-restore]:-?}"
            say "| restore speed vs cp -a ($(basename "$TREE")) | $ratio (cp ${WALL[cp]}s / cairn ${WALL[cairn-restore]}s; $checks) | >= 0.70 | $(verdict_ge "$ratio" 0.70) |"
        else
            say "| restore speed vs cp -a ($(basename "$TREE")) | not measured: a command failed | >= 0.70 | miss |"
        fi
    fi
    say ""
    say "Every timed command:"
    say ""
    say "| command | cache | wall s | MB/s | peak RSS MiB | CPU s | CPU | note |"
    say "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"
    if want throughput; then
        detail_row b3sum "b3sum --num-threads 2 FILES" "$A_BYTES" warm ""
        detail_row zstd "zstd -3 -T2 -c FILES > /dev/null" "$A_BYTES" warm ""
        detail_row cairn-open "cairn snapshots" "" warm "opening the repository (key derivation); part of every cairn command"
        detail_row cairn-backup "cairn backup DATA" "$A_BYTES" warm "into a fresh repository; repository $(mib "$A_REPO_SIZE") MiB"
        detail_row cairn-backup-mem "cairn backup DATA (repository on tmpfs)" "$A_BYTES" warm "no disk writes: the CPU pipeline alone"
        detail_row disk-write "dd if=FILE of=WORK_DIR/... bs=16M conv=fsync" "$A_BYTES" warm "the disk's fsync'd write speed"
    fi
    if want restore; then
        detail_row cairn-backup-tree "cairn backup TREE" "$B_BYTES" "as left" "setup for the restore, for reference; repository $(mib "$B_REPO_SIZE") MiB"
        detail_row cp "cp -a TREE DEST" "$B_BYTES" "$CACHE_MODE" "sync after: ${SYNC_AFTER[cp]:-?}s (not timed)"
        detail_row cairn-restore "cairn restore latest --target DEST" "$B_BYTES" "$CACHE_MODE" "sync after: ${SYNC_AFTER[cairn-restore]:-?}s (not timed)"
    fi
    say_warnings
}

say ""
report | tee "$REPORT_MD"
say ""
say "report written to $REPORT_MD (logs in $LOG_DIR)"
