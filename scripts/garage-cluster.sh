#!/usr/bin/env bash
# A three-node Garage (S3-compatible, distributed) cluster on loopback with
# replication factor 3, for testing cairn against real object storage.
#
#   scripts/garage-cluster.sh start DIR   # nodes, layout, bucket "cairn", key; writes DIR/env
#   . DIR/env                             # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
#                                         # GARAGE_S3 (http://127.0.0.1:PORT), GARAGE_BUCKET
#   scripts/garage-cluster.sh stop DIR    # stops the nodes (DIR stays; delete it yourself)
#   scripts/garage-cluster.sh stop-node DIR N   # stops node N (1..3), for fault tests
#   scripts/garage-cluster.sh start-node DIR N  # starts a stopped node N again
#
# Needs the `garage` binary (cargo install garage --locked; about 6.5 min on
# 2 cores). Each node gets a metadata and a data directory under DIR/nN, an
# RPC, S3 and admin port from a base port (GARAGE_BASE_PORT, default 39000):
# node N uses BASE+10N (S3), BASE+10N+1 (RPC), BASE+10N+3 (admin).
set -euo pipefail

garage=${GARAGE_BIN:-$(command -v garage || echo "$HOME/.cargo/bin/garage")}
[ -x "$garage" ] || { echo "garage not found: cargo install garage --locked" >&2; exit 1; }
cmd=${1:-}
dir=${2:-}
if [ -z "$cmd" ] || [ -z "$dir" ]; then
    sed -n '2,15p' "$0" >&2
    exit 2
fi
base=${GARAGE_BASE_PORT:-39000}

port() { echo $((base + 10 * $1 + $2)); }

start() {
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    local secret
    secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
    for n in 1 2 3; do
        mkdir -p "$dir/n$n"
        cat > "$dir/n$n/garage.toml" <<EOF
metadata_dir = "$dir/n$n/meta"
data_dir = "$dir/n$n/data"
db_engine = "sqlite"
replication_factor = 3
rpc_bind_addr = "127.0.0.1:$(port "$n" 1)"
rpc_public_addr = "127.0.0.1:$(port "$n" 1)"
rpc_secret = "$secret"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$(port "$n" 0)"

[admin]
api_bind_addr = "127.0.0.1:$(port "$n" 3)"
EOF
        chmod 600 "$dir/n$n/garage.toml"
        nohup "$garage" -c "$dir/n$n/garage.toml" server > "$dir/n$n/log" 2>&1 &
        echo $! > "$dir/n$n/pid"
    done
    local g=("$garage" -c "$dir/n1/garage.toml")
    # Wait for the nodes to answer, then join them to node 1.
    for n in 1 2 3; do
        for _ in $(seq 50); do
            "$garage" -c "$dir/n$n/garage.toml" node id -q > "$dir/n$n/id" 2>/dev/null && break
            sleep 0.2
        done
        [ -s "$dir/n$n/id" ] || { echo "node $n did not start; see $dir/n$n/log" >&2; exit 1; }
    done
    for n in 2 3; do
        "${g[@]}" node connect "$(cat "$dir/n$n/id")" > /dev/null
    done
    for n in 1 2 3; do
        "${g[@]}" layout assign -z dc1 -c 1G "$(cut -c1-16 "$dir/n$n/id")" > /dev/null
    done
    "${g[@]}" layout apply --version 1 > /dev/null
    "${g[@]}" bucket create cairn > /dev/null
    local key
    key=$("${g[@]}" key create cairn-key)
    "${g[@]}" bucket allow --read --write --owner cairn --key cairn-key > /dev/null
    local id secret_key
    id=$(awk '/Key ID:/ {print $3}' <<< "$key")
    secret_key=$(awk '/Secret key:/ {print $3}' <<< "$key")
    umask 077
    cat > "$dir/env" <<EOF
export AWS_ACCESS_KEY_ID=$id
export AWS_SECRET_ACCESS_KEY=$secret_key
export AWS_REGION=garage
export AWS_DEFAULT_REGION=garage
export GARAGE_S3=http://127.0.0.1:$(port 1 0)
export GARAGE_BUCKET=cairn
export GARAGE_DIR=$dir
EOF
    echo "garage cluster up: S3 at http://127.0.0.1:$(port 1 0), bucket cairn; . $dir/env"
}

stop_node() {
    local pid
    pid=$(cat "$dir/n$1/pid" 2>/dev/null || true)
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || return 0
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
}

start_node() {
    dir=$(cd "$dir" && pwd)
    nohup "$garage" -c "$dir/n$1/garage.toml" server >> "$dir/n$1/log" 2>&1 &
    echo $! > "$dir/n$1/pid"
    for _ in $(seq 50); do
        "$garage" -c "$dir/n$1/garage.toml" node id -q > /dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "node $1 did not start; see $dir/n$1/log" >&2
    exit 1
}

case "$cmd" in
    start) start ;;
    stop) for n in 1 2 3; do stop_node "$n"; done ;;
    stop-node) stop_node "${3:?node number 1..3}" ;;
    start-node) start_node "${3:?node number 1..3}" ;;
    *) sed -n '2,15p' "$0" >&2; exit 2 ;;
esac
