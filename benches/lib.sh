# benches/lib.sh: helpers shared by benches/hardware.sh and benches/scale.sh.
# Sourced, not run, by scripts that `set -euo pipefail`; setup_work_dir sets
# the LOG_DIR that measure writes to.
# shellcheck shell=bash

say() { printf '%s\n' "$*"; }
WARNINGS=()
warn() {
    printf 'WARNING: %s\n' "$*" >&2
    WARNINGS+=("$*")
}
die() {
    printf 'error: %s\n' "$*" >&2
    exit 2
}

# ------------------------------------------------------------- numbers ----
# All arithmetic on measured values goes through awk (they are decimals).
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }          # bytes -> MiB
kib_to_mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }      # KiB -> MiB
mb_per_s() { awk -v b="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.1f", b / 1e6 / s; else print "inf" }'; }
div2() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "inf" }'; }
add() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a + b }'; }
cpu_pct() { awk -v c="$1" -v w="$2" 'BEGIN { if (w > 0) printf "%.0f", 100 * c / w; else print "-" }'; }
# verdict_ge VALUE MIN / verdict_lt VALUE MAX: prints "pass" or "miss".
verdict_ge() { awk -v v="$1" -v t="$2" 'BEGIN { print (v != "inf" && v + 0 >= t + 0) ? "pass" : "miss" }'; }
verdict_lt() { awk -v v="$1" -v t="$2" 'BEGIN { print (v + 0 < t + 0) ? "pass" : "miss" }'; }
# A limit given in decimal MB, as KiB (what GNU time's %M reports).
mb_to_kib() { awk -v m="$1" 'BEGIN { printf "%.0f", m * 1e6 / 1024 }'; }

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

# ------------------------------------------------------------ work dir ----
# setup_work_dir PREFIX [DIR]: sets WORK_DIR (DIR, which must be empty or
# missing, or a fresh mktemp dir) and LOG_DIR.
setup_work_dir() {
    local prefix=$1 dir=${2:-}
    if [[ -n $dir ]]; then
        mkdir -p "$dir"
        if [[ -n $(ls -A "$dir") ]]; then
            die "WORK_DIR $dir is not empty"
        fi
        WORK_DIR=$(realpath -e "$dir")
    else
        WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/$prefix.XXXXXX")
    fi
    LOG_DIR=$WORK_DIR/logs
    mkdir -p "$LOG_DIR"
    # cairn's files cache lives with the run, not in the user's cache.
    export CAIRN_CACHE_DIR=$WORK_DIR/cairn-cache
}

# avail_bytes DIR: free bytes on DIR's filesystem.
avail_bytes() { df --output=avail -B1 "$1" | tail -n 1 | tr -d ' '; }

# need_space DIR BYTES WHAT: stops with an error if DIR's filesystem has not
# BYTES free plus a 2 GiB margin.
need_space() {
    local have need=$(($2 + 2 * 1024 * 1024 * 1024))
    have=$(avail_bytes "$1")
    if ((have < need)); then
        die "$3 needs about $(mib "$2") MiB (+2 GiB margin) in $1, only $(mib "$have") MiB free"
    fi
}

# ---------------------------------------------------------------- tools ----
require_gnu_time() {
    [[ -x /usr/bin/time ]] || die "/usr/bin/time (GNU time) is missing: apt-get install -y time"
}

# resolve_cairn REPO_ROOT: sets CAIRN to the binary (CAIRN_BIN, or built in
# REPO_ROOT) and CAIRN_SOURCE to a description of where it came from.
resolve_cairn() {
    local repo_root=$1
    if [[ -n ${CAIRN_BIN:-} ]]; then
        CAIRN=$(realpath -e "$CAIRN_BIN")
        CAIRN_SOURCE="CAIRN_BIN=$CAIRN (checkout here: $(git -C "$repo_root" describe --always --dirty 2>/dev/null || echo unknown))"
    else
        say "building cairn: cargo build --release (in $repo_root)"
        (cd "$repo_root" && cargo build --release --quiet)
        # cargo puts the binary under CARGO_TARGET_DIR when that is set
        # (relative to the directory cargo ran in).
        CAIRN=$(cd "$repo_root" && realpath -e "${CARGO_TARGET_DIR:-target}/release/cairn")
        CAIRN_SOURCE="built from commit $(git -C "$repo_root" describe --always --dirty 2>/dev/null || echo unknown)"
    fi
}

# Benchmark repositories get a fixed password; a stray environment must not
# point cairn at another repository or password source.
setup_cairn_env() {
    export CAIRN_PASSWORD=${CAIRN_PASSWORD:-cairn-bench-password}
    unset CAIRN_REPO CAIRN_PASSWORD_FILE CAIRN_PASSWORD_COMMAND
}

# --------------------------------------------------------------- caches ----
drop_caches() {
    sync
    { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null
}
# init_cache_mode: sets CACHE_MODE to cold (dropping is permitted and not
# turned off with BENCH_CACHE=warm) or warm.
init_cache_mode() {
    if [[ ${BENCH_CACHE:-cold} == warm ]]; then
        CACHE_MODE=warm
    elif drop_caches; then
        CACHE_MODE=cold
    else
        CACHE_MODE=warm
        warn "dropping page caches is not permitted here: cold-cache steps run warm instead (their input is read once before)"
    fi
}
# Reads every file under the given paths once, to warm the page cache.
warm() {
    find "$@" -type f -print0 | xargs -0 -r cat >/dev/null 2>&1 || true
}
# cold_step PATH...: drops the caches before a cold-cache step, or (where
# that is not possible) warms its input so that every compared command
# starts from the same state.
cold_step() {
    if [[ $CACHE_MODE == cold ]]; then
        drop_caches || warn "dropping caches failed before a step"
    else
        sync
        warm "$@"
    fi
}

# -------------------------------------------------------------- measure ----
# Per step (by key): best wall time of its runs (and that run's CPU time),
# highest peak RSS of its runs, and the exit code of the last failed run.
declare -A WALL=() RSS=() CPU=() FAIL=()

# shellcheck disable=SC2034 # WALL, RSS, CPU and FAIL are read by the callers.
# measure KEY DIR OUT CMD...: runs CMD in DIR under GNU time. Its standard
# output goes to OUT ("-": to the step's log), its standard error to the log.
# RUN (default 1) numbers the logs of repeated runs.
measure() {
    local key=$1 dir=$2 out=$3
    shift 3
    local run=${RUN:-1}
    local base=$LOG_DIR/$key.$run tf rc=0
    tf=$base.time
    say "  $key (run $run; load average $(cut -d' ' -f1-3 /proc/loadavg))"
    if [[ $out == - ]]; then
        (cd "$dir" && /usr/bin/time -o "$tf" -f '%e %M %U %S' "$@") >"$base.log" 2>&1 || rc=$?
    else
        (cd "$dir" && /usr/bin/time -o "$tf" -f '%e %M %U %S' "$@") >"$out" 2>"$base.log" || rc=$?
    fi
    local wall rss user sys cpu
    # On failure GNU time writes "Command exited with non-zero status N" first.
    read -r wall rss user sys < <(tail -n 1 "$tf")
    cpu=$(add "$user" "$sys")
    say "    wall ${wall}s, peak RSS $(kib_to_mib "$rss") MiB, CPU ${cpu}s ($(cpu_pct "$cpu" "$wall")%), exit $rc"
    if [[ $rc != 0 ]]; then
        FAIL[$key]=$rc
        warn "$key failed with exit code $rc (see $base.log)"
        tail -n 5 "$base.log" | sed 's/^/    | /' >&2
        return 0
    fi
    if [[ -z ${WALL[$key]:-} ]] || awk -v a="$wall" -v b="${WALL[$key]}" 'BEGIN { exit !(a < b) }'; then
        WALL[$key]=$wall
        CPU[$key]=$cpu
    fi
    if [[ -z ${RSS[$key]:-} ]] || ((rss > RSS[$key])); then
        RSS[$key]=$rss
    fi
}
ok() { [[ -n ${WALL[$1]:-} && -z ${FAIL[$1]:-} ]]; }

# sync_time: runs sync and prints how long it took (seconds).
sync_time() {
    local t0=$EPOCHREALTIME
    sync
    awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'
}

# ----------------------------------------------------------------- data ----
# tree_stats DIR: prints "files dirs symlinks bytes" (regular files' bytes).
tree_stats() {
    find "$1" -mindepth 1 \( -type f -printf 'f %s\n' \) -o \( -type d -printf 'd 0\n' \) \
        -o \( -type l -printf 'l 0\n' \) |
        awk '{ n[$1]++; if ($1 == "f") b += $2 } END { printf "%d %d %d %.0f\n", n["f"], n["d"], n["l"], b }'
}

# random_file PATH BYTES: incompressible data from the kernel's CSPRNG.
random_file() {
    head -c "$2" /dev/urandom >"$1"
}

# ---------------------------------------------------------- environment ----
# machine_lines: appends the machine description to ENV_LINES.
machine_lines() {
    local wd=$1
    ENV_LINES+=("date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')")
    ENV_LINES+=("uname: $(uname -a)")
    ENV_LINES+=("cpu: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo); nproc: $(nproc); memory: $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)")
    ENV_LINES+=("work dir filesystem: $(df --output=fstype,source "$wd" | tail -n 1 | awk '{ print $1 " on " $2 }')")
    ENV_LINES+=("cairn: $("$CAIRN" --version 2>&1 | head -n 1), $CAIRN_SOURCE")
}

# cairn_init REPO LOG: creates a cairn repository, with CAIRN_INIT_ARGS
# (e.g. "--kdf-memory 19") if set; dies naming LOG on failure.
cairn_init() {
    local -a extra
    read -r -a extra <<< "${CAIRN_INIT_ARGS:-}"
    "$CAIRN" -r "$1" init "${extra[@]}" >"$2" 2>&1 || die "cairn init failed (see $2)"
}

# say_warnings: the WARNINGS collected so far, as a markdown list.
say_warnings() {
    if [[ ${#WARNINGS[@]} -gt 0 ]]; then
        say ""
        say "Warnings:"
        local w
        for w in "${WARNINGS[@]}"; do say "- $w"; done
    fi
}

# need_positive VAR...: dies unless each named variable is a positive integer.
need_positive() {
    local v
    for v in "$@"; do
        if ! is_uint "${!v}" || ((${!v} == 0)); then
            die "$v must be a positive integer, not '${!v}'"
        fi
    done
}
