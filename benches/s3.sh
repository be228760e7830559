#!/usr/bin/env bash
# benches/s3.sh: cairn against restic on object storage: the same tree, the
# same three-node Garage cluster, the same run.
#
# Usage: benches/s3.sh [DATA_DIR] [WORK_DIR]
#   DATA_DIR  tree to back up (default /usr/share, the tree of compare.sh)
#   WORK_DIR  empty or missing directory for the cluster, caches, restores,
#             logs and results.md (default: a fresh mktemp dir)
#
# The script starts its own Garage cluster (scripts/garage-cluster.sh, in
# WORK_DIR/garage, base port GARAGE_BASE_PORT, default 41000), builds cairn
# (`cargo build --release`; CAIRN_BIN=/path skips that), then, REPS times
# (default 3), for each tool (the order alternates between repetitions):
#   init a repository under its own key prefix (not timed), then
#   1. initial backup     (a fresh local cache)
#   2. no-change backup   (with the cache step 1 left, as a user would)
#   3. full restore       into an empty directory (same cache), checked
#                         against the source with diff -r
# Each step runs under GNU time (wall seconds, peak RSS). Requests are
# counted on the server, the same way for both tools: the sum over the three
# nodes of Garage's api_s3_request_counter (Prometheus metrics on each
# node's admin port), read before and after the step. cairn's own count
# (`--verbose`: "cairn: N requests to the repository") is printed next to it.
# The per-endpoint breakdown of each step is written to WORK_DIR/logs.
# Page caches are dropped before each step where permitted (else the data is
# read once before a backup).
#
# Settings: every repository is encrypted. cairn: defaults (zstd-3, default
# key). restic: defaults (`restic init` makes repository v2 with compression
# "auto"), `-o s3.region=garage`. Passwords from the environment.
#
# Environment: REPS=3, TOOLS="cairn restic", GARAGE_BASE_PORT=41000,
#   TARGET_RATIO=0.5 (cairn/restic marked pass or miss), KEEP_CLUSTER=1
#   (leave the cluster running at the end).
# Needs: garage (cargo install garage --locked), restic, GNU time, curl.
# Garage serves /metrics on each admin port without a token (no
# metrics_token in the generated garage.toml), so none is needed.
set -euo pipefail

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
fi

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/.." && pwd)
# shellcheck source=benches/lib.sh
. "$script_dir/lib.sh"

DATA_DIR=$(realpath -e "${1:-/usr/share}")
[[ -d $DATA_DIR ]] || die "$DATA_DIR is not a directory"
setup_work_dir cairn-s3 "${2:-}"
case $WORK_DIR/ in
    "$DATA_DIR"/*) die "WORK_DIR must not be inside DATA_DIR" ;;
esac
RESULTS_MD=$WORK_DIR/results.md
REPS=${REPS:-3}
TOOLS=${TOOLS:-cairn restic}
TARGET_RATIO=${TARGET_RATIO:-0.5}
export GARAGE_BASE_PORT=${GARAGE_BASE_PORT:-41000}
need_positive REPS GARAGE_BASE_PORT

require_gnu_time
command -v curl >/dev/null || die "curl is missing"
command -v restic >/dev/null || die "restic is missing: apt-get install -y restic"
RESTIC=$(command -v restic)
GARAGE=${GARAGE_BIN:-$(command -v garage || echo "$HOME/.cargo/bin/garage")}
[[ -x $GARAGE ]] || die "garage is missing: cargo install garage --locked"

setup_cairn_env
export RESTIC_PASSWORD=$CAIRN_PASSWORD
unset RESTIC_REPOSITORY RESTIC_PASSWORD_FILE RESTIC_PASSWORD_COMMAND RESTIC_CACHE_DIR 2>/dev/null || true
resolve_cairn "$repo_root"

# ------------------------------------------------------------- cluster ----
CLUSTER=$WORK_DIR/garage
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
    if [[ ${KEEP_CLUSTER:-0} != 1 ]]; then
        bash "$repo_root/scripts/garage-cluster.sh" stop "$CLUSTER" >/dev/null 2>&1 || true
    fi
    rm -rf "${WORK_DIR:?}/restore"
}
trap cleanup EXIT
bash "$repo_root/scripts/garage-cluster.sh" start "$CLUSTER" >"$LOG_DIR/garage-start.log" 2>&1 ||
    die "the Garage cluster did not start (see $LOG_DIR/garage-start.log)"
# shellcheck source=/dev/null
. "$CLUSTER/env"
say "garage cluster: $GARAGE_S3 (admin ports $((GARAGE_BASE_PORT + 13)), $((GARAGE_BASE_PORT + 23)), $((GARAGE_BASE_PORT + 33)))"

# metrics FILE: every node's api_s3_request_counter lines, appended to FILE.
metrics() {
    local n m
    : >"$1"
    for n in 1 2 3; do
        m=$(curl -fsS "http://127.0.0.1:$((GARAGE_BASE_PORT + 10 * n + 3))/metrics") ||
            die "cannot read node $n's metrics"
        # A node that has served no S3 request yet has no such line.
        grep '^api_s3_request_counter{' <<<"$m" >>"$1" || true
    done
}
# requests_between BEFORE AFTER: total S3 requests between two metric dumps.
requests_between() {
    awk 'FNR == NR { b += $NF; next } { a += $NF } END { printf "%d\n", a - b }' "$1" "$2"
}
# endpoints_between BEFORE AFTER: "Endpoint=N ..." for the endpoints used.
endpoints_between() {
    awk '{ match($0, /api_endpoint="[^"]*"/); e = substr($0, RSTART + 14, RLENGTH - 15) }
        FNR == NR { c[e] -= $NF; next } { c[e] += $NF }
        END { for (e in c) if (c[e] != 0) printf "%s=%d\n", e, c[e] }' "$1" "$2" | sort | tr '\n' ' '
}

# ----------------------------------------------------------- environment ----
init_cache_mode
read -r SRC_FILES SRC_DIRS SRC_LINKS SRC_BYTES < <(tree_stats "$DATA_DIR")
ENV_LINES=()
machine_lines "$WORK_DIR"
ENV_LINES+=("restic: $("$RESTIC" version | head -n 1)")
ENV_LINES+=("garage: $("$GARAGE" --version 2>&1 | head -n 1); 3 nodes on loopback, replication factor 3, sqlite metadata, data on the work dir's file system; both tools talk to node 1")
ENV_LINES+=("data: $DATA_DIR, $(mib "$SRC_BYTES") MiB in $SRC_FILES files, $SRC_DIRS directories, $SRC_LINKS symlinks")
ENV_LINES+=("page cache: $CACHE_MODE (dropped before each step where permitted)")
ENV_LINES+=("local caches: fresh for each repetition's initial backup (cairn: CAIRN_CACHE_DIR, restic: RESTIC_CACHE_DIR, both under the work dir); the no-change backup and the restore use what the initial backup left, as on a user's machine")
ENV_LINES+=("settings: all repositories encrypted; cairn defaults (zstd-3, default key: argon2id 64 MiB); restic defaults (repository v2, compression auto)")
ENV_LINES+=("load average at start: $(cut -d' ' -f1-3 /proc/loadavg)")
for l in "${ENV_LINES[@]}"; do say "$l"; done

# --------------------------------------------------------------- steps ----
STEPS=(backup1 backup2 restore)
declare -A STEP_NAME=([backup1]="1 initial backup" [backup2]="2 no-change backup" [restore]="3 full restore")
# Per step and tool: space-separated values of the repetitions.
declare -A S_WALL=() S_RSS=() S_REQ=() S_OWN=()
FAILED=0

# step KEY TOOL REP DIR CMD...: runs CMD in DIR under GNU time, counting the
# S3 requests the cluster served meanwhile.
step() {
    local key=$1 tool=$2 rep=$3 dir=$4
    shift 4
    local base=$LOG_DIR/$tool-$key.$rep rc=0
    say "  $tool: ${STEP_NAME[$key]} (run $rep; load average $(cut -d' ' -f1-3 /proc/loadavg))"
    metrics "$base.before"
    (cd "$dir" && /usr/bin/time -o "$base.time" -f '%e %M %U %S' "$@") >"$base.log" 2>&1 || rc=$?
    metrics "$base.after"
    local wall rss user sys req own
    read -r wall rss user sys < <(tail -n 1 "$base.time")
    req=$(requests_between "$base.before" "$base.after")
    endpoints_between "$base.before" "$base.after" | sed 's/ $//' >"$base.endpoints"
    own=$(sed -n 's/^cairn: \([0-9]*\) requests to the repository$/\1/p' "$base.log" | tail -n 1)
    local own_note=
    [[ -z $own ]] || own_note=", cairn's own count $own"
    say "    wall ${wall}s, peak RSS $(kib_to_mib "$rss") MiB, CPU $(add "$user" "$sys")s, S3 requests (server) $req$own_note, exit $rc"
    say "    endpoints: $(cat "$base.endpoints")"
    # restic exits 3 when some source files could not be read.
    if [[ $rc != 0 && ! ($tool == restic && $rc == 3) ]]; then
        warn "$tool ${STEP_NAME[$key]} (run $rep) failed with exit code $rc (see $base.log)"
        tail -n 5 "$base.log" | sed 's/^/    | /' >&2
        FAILED=1
        return 0
    fi
    [[ $rc == 0 ]] || warn "$tool ${STEP_NAME[$key]} (run $rep) finished with warnings, exit $rc (see $base.log)"
    S_WALL[$key,$tool]+="$wall "
    S_RSS[$key,$tool]+="$rss "
    S_REQ[$key,$tool]+="$req "
    S_OWN[$key,$tool]+="${own:--} "
}

check_restore() { # tool rep restore_dir
    local tree=$3$DATA_DIR f d l b
    if [[ ! -d $tree ]]; then
        warn "$1 restore (run $2): $tree does not exist"
        FAILED=1
        return 0
    fi
    read -r f d l b < <(tree_stats "$tree")
    if [[ "$f $d $l $b" != "$SRC_FILES $SRC_DIRS $SRC_LINKS $SRC_BYTES" ]]; then
        warn "$1 restore (run $2) differs: files $f/$SRC_FILES, dirs $d/$SRC_DIRS, symlinks $l/$SRC_LINKS, bytes $b/$SRC_BYTES"
        FAILED=1
    elif diff -r --no-dereference -q "$DATA_DIR" "$tree" >"$LOG_DIR/$1-restore.$2.diff" 2>&1; then
        say "    restore check: identical to the source (diff -r)"
    else
        warn "$1 restore (run $2): contents differ from the source (see $LOG_DIR/$1-restore.$2.diff)"
        FAILED=1
    fi
}

run_tool() { # tool rep
    local tool=$1 rep=$2 prefix=$1-r$2
    local url=s3:$GARAGE_S3/$GARAGE_BUCKET/$prefix cache=$WORK_DIR/cache-$prefix restore=$WORK_DIR/restore
    rm -rf "$cache" "$restore"
    mkdir -p "$cache" "$restore"
    local -a init backup restore_cmd
    case $tool in
        cairn)
            export CAIRN_CACHE_DIR=$cache
            init=("$CAIRN" -r "$url" init)
            backup=("$CAIRN" --verbose -r "$url" backup "$DATA_DIR")
            restore_cmd=("$CAIRN" --verbose -r "$url" restore latest --target "$restore")
            ;;
        restic)
            export RESTIC_CACHE_DIR=$cache
            init=("$RESTIC" -o s3.region=garage -r "$url" init)
            backup=("$RESTIC" -o s3.region=garage -r "$url" backup "$DATA_DIR")
            restore_cmd=("$RESTIC" -o s3.region=garage -r "$url" restore latest --target "$restore")
            ;;
        *) die "unknown tool $tool" ;;
    esac
    say "== $tool, run $rep: $url"
    "${init[@]}" >"$LOG_DIR/$tool-init.$rep.log" 2>&1 || die "$tool init failed (see $LOG_DIR/$tool-init.$rep.log)"
    cold_step "$DATA_DIR"
    step backup1 "$tool" "$rep" "$WORK_DIR" "${backup[@]}"
    cold_step "$DATA_DIR"
    step backup2 "$tool" "$rep" "$WORK_DIR" "${backup[@]}"
    cold_step "$CLUSTER"
    step restore "$tool" "$rep" "$restore" "${restore_cmd[@]}"
    check_restore "$tool" "$rep" "$restore"
    rm -rf "$restore"
}

START=$SECONDS
read -r -a TOOL_LIST <<<"$TOOLS"
for ((rep = 1; rep <= REPS; rep++)); do
    # Alternate the order so that neither tool always runs first.
    if ((rep % 2 == 1)); then order=("${TOOL_LIST[@]}"); else
        order=()
        for ((i = ${#TOOL_LIST[@]} - 1; i >= 0; i--)); do order+=("${TOOL_LIST[i]}"); done
    fi
    for t in "${order[@]}"; do run_tool "$t" "$rep"; done
done
ELAPSED=$((SECONDS - START))

# -------------------------------------------------------------- report ----
median() { tr ' ' '\n' | awk '$1 != "" && $1 != "-"' | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
spread() { tr ' ' '\n' | awk '$1 != ""' | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR > 1) printf "%s–%s", lo, hi; else printf "%s", lo }'; }
ratio_cell() { # cairn restic
    local r
    r=$(div2 "$1" "$2")
    if [[ $r == inf ]] || awk -v r="$r" -v t="$TARGET_RATIO" 'BEGIN { exit !(r > t) }'; then
        printf '**%s** miss' "$r"
    else
        printf '%s pass' "$r"
    fi
}

report() {
    say "## Issue 9: object storage (Garage, 3 nodes) — cairn vs restic"
    say ""
    say '```sh'
    say "REPS=$REPS bash benches/s3.sh $DATA_DIR"
    say '```'
    say ""
    for l in "${ENV_LINES[@]}"; do say "- $l"; done
    say "- repetitions: $REPS (tool order alternating); medians, with the range of the runs in brackets"
    say "- requests: counted by the Garage cluster (sum of api_s3_request_counter over the 3 nodes, before and after each step), the same way for both tools; cairn's own \`--verbose\` count alongside"
    say "- run time: ${ELAPSED}s for the steps; ${SECONDS}s for the whole script"
    say ""
    say "| step | tool | wall s | peak RSS MiB | S3 requests (server) | cairn's own count |"
    say "| --- | --- | ---: | ---: | ---: | ---: |"
    local s t w r q o
    for s in "${STEPS[@]}"; do
        for t in "${TOOL_LIST[@]}"; do
            [[ -n ${S_WALL[$s,$t]:-} ]] || { say "| ${STEP_NAME[$s]} | $t | failed | | | |"; continue; }
            w=$(median <<<"${S_WALL[$s,$t]}")
            r=$(median <<<"${S_RSS[$s,$t]}")
            q=$(median <<<"${S_REQ[$s,$t]}")
            o=$(median <<<"${S_OWN[$s,$t]}")
            say "| ${STEP_NAME[$s]} | $t | $w ($(spread <<<"${S_WALL[$s,$t]}")) | $(kib_to_mib "$r") | $q ($(spread <<<"${S_REQ[$s,$t]}")) | $o |"
        done
    done
    if [[ " ${TOOL_LIST[*]} " == *" cairn "* && " ${TOOL_LIST[*]} " == *" restic "* ]]; then
        say ""
        say "cairn / restic, medians (target: <= $TARGET_RATIO for wall time and requests on each step):"
        say ""
        say "| step | wall | requests | peak RSS |"
        say "| --- | --- | --- | ---: |"
        for s in "${STEPS[@]}"; do
            if [[ -z ${S_WALL[$s,cairn]:-} || -z ${S_WALL[$s,restic]:-} ]]; then
                say "| ${STEP_NAME[$s]} | n/a | n/a | n/a |"
                continue
            fi
            say "| ${STEP_NAME[$s]} | $(ratio_cell "$(median <<<"${S_WALL[$s,cairn]}")" "$(median <<<"${S_WALL[$s,restic]}")") | $(ratio_cell "$(median <<<"${S_REQ[$s,cairn]}")" "$(median <<<"${S_REQ[$s,restic]}")") | $(div2 "$(median <<<"${S_RSS[$s,cairn]}")" "$(median <<<"${S_RSS[$s,restic]}")") |"
        done
    fi
    say ""
    say "Requests by endpoint, run 1:"
    say ""
    for s in "${STEPS[@]}"; do
        for t in "${TOOL_LIST[@]}"; do
            [[ -f $LOG_DIR/$t-$s.1.endpoints ]] && say "- ${STEP_NAME[$s]}, $t: $(cat "$LOG_DIR/$t-$s.1.endpoints")"
        done
    done
    say_warnings
}

say ""
report | tee "$RESULTS_MD"
say ""
say "results written to $RESULTS_MD (logs in $LOG_DIR)"
exit "$FAILED"
