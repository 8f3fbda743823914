#!/usr/bin/env bash
# loadtest/bench-redis-down.sh — catalog latency with Redis stopped (issue 18): category
# pages 1–5 (the Redis page cache) read while Redis is down against pages 6–10 (Postgres)
# read while it is up, in the same run, on the reference data set; then Redis is started
# again and the cache must be used again without restarting the API. Uses a private
# redis-server of its own (stopped and started by this script; never the shared one),
# pillivery-loadgen for the load. Prints a RESULT line per phase and a summary RESULT
# line last.
#
#   loadtest/bench-redis-down.sh        (SECONDS_PER_RUN=10 CLIENTS=30 PROFILE=dev|release)
#   REUSE_DB=1 loadtest/bench-redis-down.sh    keep the generated database of an earlier run
#   API_BIN=path/to/pillivery-api ...          measure another build (e.g. the one before
#                                              the breaker) with the same phases
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
# shellcheck source=ops/lib.sh
source "$ROOT/ops/lib.sh"
# shellcheck source=loadtest/lib.sh
source "$ROOT/loadtest/lib.sh"

SECS=${SECONDS_PER_RUN:-10}
CLIENTS=${CLIENTS:-30}
PROFILE=${PROFILE:-dev}
PORT=${PORT:-18083}
REDIS_PORT=${REDIS_PORT:-56483}
TARGET=${CARGO_TARGET_DIR:-target}
[[ $TARGET == /* ]] || TARGET="$ROOT/$TARGET"
export SQLX_OFFLINE=true
bench_build --bin pillivery-api --bin pillivery-loadgen
API=${API_BIN:-$BIN/pillivery-api}
command -v redis-server >/dev/null || pv_die "redis-server is not installed"
pv_tcp_open 127.0.0.1 "$REDIS_PORT" && pv_die "port $REDIS_PORT is taken (set REDIS_PORT)"
pv_tcp_open 127.0.0.1 "$PORT" && pv_die "port $PORT is taken (set PORT)"

API_PID=""
REDIS_PID=""
REDIS_DIR=$(mktemp -d)
cleanup() {
    [[ -z $API_PID ]] || kill "$API_PID" 2>/dev/null || true
    [[ -z $REDIS_PID ]] || kill "$REDIS_PID" 2>/dev/null || true
    rm -rf "$REDIS_DIR"
    stop_private_services
}
trap cleanup EXIT

redis_start() {
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
        --dir "$REDIS_DIR" >"$REDIS_DIR/redis.log" 2>&1 &
    REDIS_PID=$!
    for _ in $(seq 100); do
        pv_tcp_open 127.0.0.1 "$REDIS_PORT" && return 0
        sleep 0.1
    done
    pv_die "the private redis-server did not start"
}
redis_stop() {
    kill "$REDIS_PID"
    wait "$REDIS_PID" 2>/dev/null || true
    REDIS_PID=""
}
# ready_until STATUS: polls /health/ready until it answers STATUS; prints the seconds taken.
ready_until() {
    local t0 status
    t0=$(date +%s%N)
    for _ in $(seq 600); do
        status=$(pv_http GET "http://127.0.0.1:$PORT/health/ready" "" "$REDIS_DIR/ready.json")
        if [[ $status == "$1" ]]; then
            awk -v a="$(date +%s%N)" -v b="$t0" 'BEGIN { printf "%.2f\n", (a - b) / 1e9 }'
            return 0
        fi
        sleep 0.05
    done
    pv_die "/health/ready never answered $1"
}
# metric NAME LABEL...: the sum of the API's /metrics samples of NAME carrying every LABEL.
metric() {
    local name=$1
    shift
    pv_http GET "http://127.0.0.1:$PORT/metrics" "" "$REDIS_DIR/metrics.txt" >/dev/null
    awk -v name="$name" -v labels="$*" '
        BEGIN { n = split(labels, want, " ") }
        { split($1, head, "{") }
        head[1] == name {
            ok = 1
            for (i = 1; i <= n; i++) if (index($1, want[i]) == 0) ok = 0
            if (ok) sum += $NF
        }
        END { printf "%d\n", sum }' "$REDIS_DIR/metrics.txt"
}

ensure_postgres
bench_reference_db pillivery_redis_down_bench
ITEMS=$(pv_psql "$URL" -Atq -c "select count(*) from items")
redis_start

export PILLIVERY__DATABASE__URL=$URL PILLIVERY__REDIS__URL="redis://127.0.0.1:$REDIS_PORT"
export PILLIVERY__REDIS__PREFIX="bench-$$:" PILLIVERY__API__LISTEN="127.0.0.1:$PORT"
export PILLIVERY__RATE_LIMIT__PER_IP_PER_SEC=1000000 PILLIVERY__RATE_LIMIT__PER_IP_BURST=1000000
export PILLIVERY__DATABASE__MAX_CONNECTIONS=20 PILLIVERY__LOG__LEVEL=warn
# What this measures is the SQL path's Redis page cache going away; the catalog snapshot
# (SNAPSHOT=true) answers without Redis and would hide it.
export PILLIVERY__CATALOG__SNAPSHOT=${SNAPSHOT:-false}
mkdir -p "$ROOT/.local"
"$API" serve >"$ROOT/.local/bench-redis-down-api.log" 2>&1 &
API_PID=$!
ready_until 200 >/dev/null

run() { # NAME PATH [WARMUP]
    "$BIN/pillivery-loadgen" --name "$1" --base "http://127.0.0.1:$PORT" --path "$2" \
        --clients "$CLIENTS" --seconds "$SECS" --warmup "${3:-200}" | grep '^RESULT'
}
CATS='{EYE|BONE|BRAIN|INTESTINE|LIVER|SKIN|ANTIOXIDANT|FATIGUE|ETC}'
CACHED="/api/items?category=$CATS&page={1..5}"
UNCACHED="/api/items?category=$CATS&page={6..10}"

pv_log "Redis up: cached pages 1-5, then uncached pages 6-10 (the reference)"
cached_up=$(run cached_up "$CACHED")
echo "$cached_up"
uncached_up=$(run uncached_up "$UNCACHED")
echo "$uncached_up"

pv_log "stopping Redis"
redis_stop
ready_until 503 >/dev/null
pv_log "/health/ready: $(cat "$REDIS_DIR/ready.json")"
grep -q '"redis":"redis unavailable' "$REDIS_DIR/ready.json" || pv_die "/health/ready does not name Redis"
# The breaker is open by now (the readiness polls failed); a short warm-up only fills pools.
cached_down=$(run cached_down "$CACHED" 20)
echo "$cached_down"
uncached_down=$(run uncached_down "$UNCACHED" 20)
echo "$uncached_down"

pv_log "starting Redis again"
redis_start
recovered_s=$(ready_until 200)
hit='cache="page" result="hit"'
hits_before=$(metric cache_requests_total "$hit")
cached_again=$(run cached_recovered "$CACHED")
echo "$cached_again"
recovered_hits=$(($(metric cache_requests_total "$hit") - hits_before))

field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p"; }
down_p99=$(field p99_ms <<<"$cached_down")
ref_p99=$(field p99_ms <<<"$uncached_up")
ratio=$(awk -v a="$down_p99" -v b="$ref_p99" 'BEGIN { printf "%.2f", a / b }')
echo "RESULT cached_down_p99_ms=$down_p99 uncached_up_p99_ms=$ref_p99 down_vs_uncached_p99=$ratio cached_down_p50_ms=$(field p50_ms <<<"$cached_down") cached_down_rps=$(field rps <<<"$cached_down") cached_down_errors=$(field errors <<<"$cached_down") uncached_down_p99_ms=$(field p99_ms <<<"$uncached_down") cached_up_p99_ms=$(field p99_ms <<<"$cached_up") recovered_s=$recovered_s recovered_cached_p99_ms=$(field p99_ms <<<"$cached_again") recovered_hits=$recovered_hits items=$ITEMS clients=$CLIENTS profile=$PROFILE"
