#!/usr/bin/env bash
# benches/compare.sh: run cairn and its peers (restic, borg, rustic) on the
# same data, in the same run, and compare them step by step.
#
# Usage: benches/compare.sh [DATA_DIR] [WORK_DIR]
#   DATA_DIR  tree to back up (default /usr/share: >= 500 MB, >= 30k files)
#   WORK_DIR  empty or missing directory for repositories, restores, logs and
#             results.md (default: a fresh mktemp dir under ${TMPDIR:-/tmp})
#
# For each tool that is installed it creates an encrypted repository, then
# times four steps:
#   1. initial backup        2. no-change backup (same data again)
#   3. full restore into an empty directory
#   4. full data verification (cairn verify --read-data,
#      restic/rustic check --read-data, borg check --verify-data)
# Each step is run under GNU time (`/usr/bin/time -f "%e %M"`: wall seconds
# and peak RSS in KiB). Page caches are dropped before each step where that
# is permitted (`sync; echo 3 > /proc/sys/vm/drop_caches`); where it is not,
# the step's input (the data, or the repository) is read once beforehand so
# every tool starts from the same warm cache. The output says which.
# Repository size (du -sb) is recorded after each backup. Each restore is
# checked cheaply (file, directory and symlink count and total bytes against
# the source; set DEEP_CHECK=1 to also compare contents with diff -r).
# The table is printed and written to WORK_DIR/results.md, ready to paste into
# BENCHMARKS.md. Each tool's repository and restore are deleted before the
# next tool runs; logs stay in WORK_DIR/logs.
#
# Installing the tools (Debian; the peers that are not installed are skipped):
#   cairn:   built by this script with `cargo build --release` (in the
#            repository root) -> target/release/cairn. Set CAIRN_BIN=/path to
#            use a given binary instead and skip the build.
#   time:    apt-get install -y time            (for /usr/bin/time)
#   restic:  apt-get update && apt-get install -y restic
#   borg:    apt-get install -y pkg-config libssl-dev liblz4-dev libzstd-dev \
#                libxxhash-dev libacl1-dev
#            pip install 'borgbackup>=1.4,<1.5'
#   rustic:  cargo install rustic-rs
#            (a long compile; on a small machine run it in the background,
#            e.g. `nice -n 19 cargo install --locked rustic-rs &`)
#
# Settings: every repository is encrypted. cairn: defaults (zstd level 3).
# restic and rustic: defaults (repository format v2, compression "auto").
# borg: `borg init -e repokey-blake2`, `borg create --compression zstd,3`.
# Passwords come from CAIRN_PASSWORD, RESTIC_PASSWORD/RUSTIC_PASSWORD and
# BORG_PASSPHRASE. cairn's, restic's, rustic's and borg's local caches are kept under
# WORK_DIR (fresh for each tool) and are not counted in the repository size.
#
# Other environment knobs:
#   TOOLS="cairn restic borg rustic"   which tools to run, in that order
#   DEEP_CHECK=1                       also diff -r each restore against DATA_DIR
#   TARGET_RATIO=0.5                   cairn/best-peer ratio marked pass or miss
#   CAIRN_INIT_ARGS="--kdf-memory 19"  extra arguments for `cairn init`
#   BENCH_CACHE=warm                   do not drop caches: pre-read each step's input
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/.." && pwd)

DATA_DIR=$(realpath -e "${1:-/usr/share}")
if [[ ! -d $DATA_DIR ]]; then
    echo "error: $DATA_DIR is not a directory" >&2
    exit 2
fi
if [[ $# -ge 2 ]]; then
    WORK_DIR=$2
    mkdir -p "$WORK_DIR"
    if [[ -n $(ls -A "$WORK_DIR") ]]; then
        echo "error: WORK_DIR $WORK_DIR is not empty" >&2
        exit 2
    fi
    WORK_DIR=$(realpath -e "$WORK_DIR")
else
    WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/cairn-bench.XXXXXX")
fi
case $WORK_DIR/ in
    "$DATA_DIR"/*) echo "error: WORK_DIR must not be inside DATA_DIR" >&2; exit 2 ;;
esac
LOG_DIR=$WORK_DIR/logs
mkdir -p "$LOG_DIR"
RESULTS_MD=$WORK_DIR/results.md
TOOLS=${TOOLS:-cairn restic borg rustic}
DEEP_CHECK=${DEEP_CHECK:-0}
# Issue 5's target: cairn at most this fraction of the best peer, per step.
TARGET_RATIO=${TARGET_RATIO:-0.5}

export CAIRN_PASSWORD=cairn-bench-password
export RESTIC_PASSWORD=cairn-bench-password
export RUSTIC_PASSWORD=cairn-bench-password
export BORG_PASSPHRASE=cairn-bench-password
# Never let a stray environment point a tool at another repository.
unset CAIRN_REPO CAIRN_PASSWORD_FILE CAIRN_PASSWORD_COMMAND RESTIC_REPOSITORY \
    RESTIC_PASSWORD_FILE RESTIC_PASSWORD_COMMAND BORG_REPO RUSTIC_REPOSITORY \
    BORG_PASSCOMMAND BORG_PASSPHRASE_FD 2>/dev/null || true

say() { printf '%s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; WARNINGS+=("$*"); }
WARNINGS=()

# ----------------------------------------------------------- data stats ----
# Prints "files dirs symlinks bytes" for the tree at $1 (regular files' bytes).
tree_stats() {
    find "$1" -mindepth 1 \( -type f -printf 'f %s\n' \) -o \( -type d -printf 'd 0\n' \) \
        -o \( -type l -printf 'l 0\n' \) |
        awk '{ n[$1]++; if ($1 == "f") b += $2 } END { printf "%d %d %d %.0f\n", n["f"], n["d"], n["l"], b }'
}

mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

read -r SRC_FILES SRC_DIRS SRC_LINKS SRC_BYTES < <(tree_stats "$DATA_DIR")
say "data: $DATA_DIR: $(mib "$SRC_BYTES") MiB ($SRC_BYTES bytes) in $SRC_FILES files, $SRC_DIRS directories, $SRC_LINKS symlinks"
say "work dir: $WORK_DIR"

# ---------------------------------------------------------------- tools ----
if [[ ! -x /usr/bin/time ]]; then
    say "error: /usr/bin/time (GNU time) is missing: apt-get install -y time" >&2
    exit 2
fi

declare -A BIN=()
if [[ -n ${CAIRN_BIN:-} ]]; then
    BIN[cairn]=$(realpath -e "$CAIRN_BIN")
else
    say "building cairn: cargo build --release (in $repo_root)"
    (cd "$repo_root" && cargo build --release --quiet)
    BIN[cairn]=$repo_root/target/release/cairn
fi
if command -v restic >/dev/null; then BIN[restic]=$(command -v restic); fi
if command -v rustic >/dev/null; then BIN[rustic]=$(command -v rustic); fi
if command -v borg >/dev/null; then
    BIN[borg]=$(command -v borg)
    # Time borg itself, not a pyenv shim (a bash script) in front of it.
    if [[ ${BIN[borg]} == */shims/* ]] && command -v pyenv >/dev/null; then
        BIN[borg]=$(pyenv which borg)
    fi
fi

tool_version() {
    case $1 in
        cairn) "${BIN[cairn]}" --version ;;
        restic) "${BIN[restic]}" version ;;
        borg) "${BIN[borg]}" --version ;;
        rustic) "${BIN[rustic]}" --version ;;
    esac 2>&1 | head -n 1
}

RUN_TOOLS=()
for t in $TOOLS; do
    case $t in
        cairn | restic | borg | rustic) ;;
        *) echo "error: unknown tool $t in TOOLS" >&2; exit 2 ;;
    esac
    if [[ -n ${BIN[$t]:-} ]]; then
        RUN_TOOLS+=("$t")
    else
        say "skipping $t: not installed"
    fi
done

# --------------------------------------------------------------- caches ----
drop_caches() {
    sync
    { echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null
}
if [[ ${BENCH_CACHE:-cold} == warm ]]; then
    CACHE_MODE=warm
    CACHE_NOTE="warm cache requested (BENCH_CACHE=warm): each step's input (data or repository) is read once before it"
elif drop_caches; then
    CACHE_MODE=cold
    CACHE_NOTE="page caches dropped before each step (cold cache)"
else
    CACHE_MODE=warm
    CACHE_NOTE="dropping page caches NOT permitted here: each step's input (data or repository) is read once before it, so all tools start warm"
fi
say "cache: $CACHE_NOTE"

# Reads every file under $1 once, to warm the page cache.
warm() {
    find "$1" -type f -print0 | xargs -0 -r cat >/dev/null 2>&1 || true
}

prepare_step() { # $1: the step's input directory
    if [[ $CACHE_MODE == cold ]]; then
        drop_caches || warn "dropping caches failed before a step"
    else
        warm "$1"
    fi
}

# ------------------------------------------------------------ versions ----
ENV_LINES=()
ENV_LINES+=("date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')")
ENV_LINES+=("uname: $(uname -a)")
ENV_LINES+=("nproc: $(nproc); memory: $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)")
ENV_LINES+=("cairn commit: $(git -C "$repo_root" describe --always --dirty 2>/dev/null || echo unknown)")
for t in cairn restic borg rustic; do
    if [[ -n ${BIN[$t]:-} ]]; then
        ENV_LINES+=("$t: $(tool_version "$t") (${BIN[$t]})")
    else
        ENV_LINES+=("$t: not installed, skipped")
    fi
done
ENV_LINES+=("data: $DATA_DIR, $(mib "$SRC_BYTES") MiB in $SRC_FILES files, $SRC_DIRS directories, $SRC_LINKS symlinks")
ENV_LINES+=("cache: $CACHE_NOTE")
ENV_LINES+=("settings: all repositories encrypted; cairn defaults (zstd-3)${CAIRN_INIT_ARGS:+ with init $CAIRN_INIT_ARGS}; restic/rustic defaults (repo v2, compression auto); borg init -e repokey-blake2, create --compression zstd,3")
say ""
for l in "${ENV_LINES[@]}"; do say "$l"; done
say ""

# -------------------------------------------------------------- measure ----
STEPS=(backup1 backup2 restore verify)
declare -A STEP_NAME=(
    [backup1]="1 initial backup"
    [backup2]="2 no-change backup"
    [restore]="3 full restore"
    [verify]="4 verify all data"
)
declare -A WALL=() RSS=() CPU=() RC=() REPO_SIZE=()

# Exit codes that mean "finished, with warnings" rather than failure.
acceptable_rc() { # tool rc
    [[ $2 == 0 ]] && return 0
    case $1 in
        borg) [[ $2 == 1 ]] ;;   # borg: warning
        restic) [[ $2 == 3 ]] ;; # restic: some source files could not be read
        *) return 1 ;;
    esac
}

# measure STEP TOOL DIR CMD...: runs CMD in DIR under GNU time; records results.
measure() {
    local step=$1 tool=$2 dir=$3
    shift 3
    local tf=$LOG_DIR/$tool-$step.time log=$LOG_DIR/$tool-$step.log rc=0
    say "  $tool: ${STEP_NAME[$step]} (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    (cd "$dir" && /usr/bin/time -o "$tf" -f '%e %M %U %S' "$@") >"$log" 2>&1 || rc=$?
    local wall rss user sys
    # GNU time writes "Command exited with non-zero status N" first on failure.
    read -r wall rss user sys < <(tail -n 1 "$tf")
    WALL[$step,$tool]=$wall
    RSS[$step,$tool]=$rss
    CPU[$step,$tool]=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.1f", u + s }')
    RC[$step,$tool]=$rc
    say "    wall ${wall}s, peak RSS $(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }') MiB, CPU ${CPU[$step,$tool]}s, exit $rc"
    if ! acceptable_rc "$tool" "$rc"; then
        warn "$tool ${STEP_NAME[$step]} failed with exit code $rc (see $log)"
        tail -n 5 "$log" | sed 's/^/    | /' >&2
    elif [[ $rc != 0 ]]; then
        warn "$tool ${STEP_NAME[$step]} finished with warnings, exit code $rc (see $log)"
    fi
}

record_repo_size() { # step tool repo
    REPO_SIZE[$1,$2]=$(du -sb "$3" | cut -f1)
    say "    repository size: $(mib "${REPO_SIZE[$1,$2]}") MiB"
}

check_restore() { # tool restore_dir
    local tool=$1 dir=$2 tree
    # cairn, restic and rustic recreate the absolute path under the target;
    # borg extract recreates it relative to its working directory (= target).
    tree=$dir$DATA_DIR
    if [[ ! -d $tree ]]; then
        warn "$tool restore: $tree does not exist; checking $dir instead"
        tree=$dir
    fi
    local f d l b
    read -r f d l b < <(tree_stats "$tree")
    if [[ "$f $d $l $b" == "$SRC_FILES $SRC_DIRS $SRC_LINKS $SRC_BYTES" ]]; then
        say "    restore check: OK ($f files, $d directories, $l symlinks, $b bytes)"
    else
        warn "$tool restore differs from the source: files $f/$SRC_FILES, directories $d/$SRC_DIRS, symlinks $l/$SRC_LINKS, bytes $b/$SRC_BYTES (restored/source)"
    fi
    if [[ $DEEP_CHECK == 1 ]]; then
        if diff -r --no-dereference -q "$DATA_DIR" "$tree" >"$LOG_DIR/$tool-restore.diff" 2>&1; then
            say "    deep check (diff -r): identical"
        else
            warn "$tool restore: contents differ from the source (see $LOG_DIR/$tool-restore.diff)"
        fi
    fi
}

# ----------------------------------------------------------- per tool ----
run_tool() {
    local tool=$1 bin=${BIN[$1]}
    local repo=$WORK_DIR/$tool-repo restore=$WORK_DIR/$tool-restore cache=$WORK_DIR/$tool-cache
    rm -rf "$repo" "$restore" "$cache"
    mkdir -p "$restore" "$cache"
    say "== $tool: $(tool_version "$tool")"

    # Keep each tool's local cache inside WORK_DIR, fresh for this run.
    export RESTIC_CACHE_DIR=$cache RUSTIC_CACHE_DIR=$cache BORG_BASE_DIR=$cache CAIRN_CACHE_DIR=$cache

    local -a init backup restore_cmd verify
    case $tool in
        cairn)
            local -a extra
            read -r -a extra <<< "${CAIRN_INIT_ARGS:-}"
            init=("$bin" -r "$repo" init "${extra[@]}")
            backup=("$bin" -r "$repo" backup "$DATA_DIR")
            restore_cmd=("$bin" -r "$repo" restore latest --target "$restore")
            verify=("$bin" -r "$repo" verify --read-data)
            ;;
        restic)
            init=("$bin" -r "$repo" init)
            backup=("$bin" -r "$repo" backup "$DATA_DIR")
            restore_cmd=("$bin" -r "$repo" restore latest --target "$restore")
            verify=("$bin" -r "$repo" check --read-data)
            ;;
        rustic)
            init=("$bin" -r "$repo" init)
            backup=("$bin" -r "$repo" backup "$DATA_DIR")
            restore_cmd=("$bin" -r "$repo" restore latest "$restore")
            verify=("$bin" -r "$repo" check --read-data)
            ;;
        borg)
            init=("$bin" init -e repokey-blake2 "$repo")
            # shellcheck disable=SC2054 # "zstd,3" is one argument, not a list
            backup=("$bin" create --compression zstd,3 "$repo::{now:%Y-%m-%dT%H:%M:%S.%f}" "$DATA_DIR")
            restore_cmd=("$bin" extract "$repo::__LAST__")
            verify=("$bin" check --verify-data "$repo")
            ;;
    esac

    if ! "${init[@]}" >"$LOG_DIR/$tool-init.log" 2>&1; then
        warn "$tool init failed (see $LOG_DIR/$tool-init.log): skipping $tool"
        tail -n 5 "$LOG_DIR/$tool-init.log" | sed 's/^/    | /' >&2
        rm -rf "$repo" "$restore" "$cache"
        return 0
    fi

    prepare_step "$DATA_DIR"
    measure backup1 "$tool" "$WORK_DIR" "${backup[@]}"
    record_repo_size backup1 "$tool" "$repo"

    prepare_step "$DATA_DIR"
    measure backup2 "$tool" "$WORK_DIR" "${backup[@]}"
    record_repo_size backup2 "$tool" "$repo"

    if [[ $tool == borg ]]; then
        local last
        last=$("$bin" list --last 1 --format '{archive}' "$repo" 2>>"$LOG_DIR/borg-list.log") || true
        restore_cmd=("$bin" extract "$repo::$last")
    fi
    prepare_step "$repo"
    measure restore "$tool" "$restore" "${restore_cmd[@]}"
    check_restore "$tool" "$restore"
    rm -rf "$restore"

    prepare_step "$repo"
    measure verify "$tool" "$WORK_DIR" "${verify[@]}"

    rm -rf "$repo" "$cache"
    unset RESTIC_CACHE_DIR RUSTIC_CACHE_DIR BORG_BASE_DIR
}

cleanup() {
    for t in cairn restic borg rustic; do
        rm -rf "${WORK_DIR:?}/$t-repo" "${WORK_DIR:?}/$t-restore" "${WORK_DIR:?}/$t-cache"
    done
}
trap cleanup EXIT

START=$SECONDS
for t in "${RUN_TOOLS[@]}"; do
    run_tool "$t"
done
ELAPSED=$((SECONDS - START))

# -------------------------------------------------------------- report ----
has() { [[ -n ${WALL[$1,$2]:-} ]]; }
ok() { has "$1" "$2" && acceptable_rc "$2" "${RC[$1,$2]}"; }

report() {
    say "## cairn vs peers: $(basename "$DATA_DIR") ($(mib "$SRC_BYTES") MiB, $SRC_FILES files)"
    say ""
    for l in "${ENV_LINES[@]}"; do say "- $l"; done
    say "- run time: ${ELAPSED}s for the tools (init, four steps and restore checks each); ${SECONDS}s for the whole script (with the build and the source scan)"
    say ""
    say "| step | tool | wall s | peak RSS MiB | repo size | CPU s (user+sys) |"
    say "| --- | --- | ---: | ---: | ---: | ---: |"
    local s t wall rss repo
    for s in "${STEPS[@]}"; do
        for t in "${RUN_TOOLS[@]}"; do
            has "$s" "$t" || continue
            wall=${WALL[$s,$t]}
            if ! ok "$s" "$t"; then
                wall="$wall (FAILED, exit ${RC[$s,$t]})"
            elif [[ ${RC[$s,$t]} != 0 ]]; then
                wall="$wall (warnings, exit ${RC[$s,$t]})"
            fi
            rss=$(awk -v k="${RSS[$s,$t]}" 'BEGIN { printf "%.1f", k / 1024 }')
            repo=
            if [[ -n ${REPO_SIZE[$s,$t]:-} ]]; then repo="$(mib "${REPO_SIZE[$s,$t]}") MiB"; fi
            say "| ${STEP_NAME[$s]} | $t | $wall | $rss | $repo | ${CPU[$s,$t]} |"
        done
    done
    say ""
    say "cairn / best peer (lower is better; the target is <= $TARGET_RATIO on each):"
    say ""
    say "| step | wall: cairn/best | best peer (wall) | target | RSS: cairn/best | best peer (RSS) | target |"
    say "| --- | ---: | --- | --- | ---: | --- | --- |"
    local metric best bestt v ratio cells
    for s in "${STEPS[@]}"; do
        if ! ok "$s" cairn; then
            say "| ${STEP_NAME[$s]} | n/a | cairn did not run or failed | n/a | |"
            continue
        fi
        cells=""
        for metric in WALL RSS; do
            best="" bestt=""
            for t in "${RUN_TOOLS[@]}"; do
                [[ $t == cairn ]] && continue
                ok "$s" "$t" || continue
                if [[ $metric == WALL ]]; then v=${WALL[$s,$t]}; else v=${RSS[$s,$t]}; fi
                if [[ -z $best ]] || awk -v a="$v" -v b="$best" 'BEGIN { exit !(a < b) }'; then
                    best=$v bestt=$t
                fi
            done
            if [[ -z $best ]]; then
                cells+=" n/a | no peer | |"
                continue
            fi
            if [[ $metric == WALL ]]; then v=${WALL[$s,cairn]}; else v=${RSS[$s,cairn]}; fi
            ratio=$(awk -v a="$v" -v b="$best" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "inf" }')
            if [[ $ratio == inf ]] || awk -v r="$ratio" -v t="$TARGET_RATIO" 'BEGIN { exit !(r > t) }'; then
                cells+=" **$ratio** | $bestt | miss |"
            else
                cells+=" $ratio | $bestt | pass |"
            fi
        done
        say "| ${STEP_NAME[$s]} |$cells"
    done
    if [[ ${#WARNINGS[@]} -gt 0 ]]; then
        say ""
        say "Warnings:"
        local w
        for w in "${WARNINGS[@]}"; do say "- $w"; done
    fi
}

say ""
report | tee "$RESULTS_MD"
say ""
say "results written to $RESULTS_MD (logs in $LOG_DIR)"
