#!/usr/bin/env bash
# loadtest/bench-orders.sh — order placement, in one run on one database:
#   1. the API: CLIENTS (32) closed-loop clients placing one-time orders
#      (`POST /api/orders`, Bearer token, 1–3 random lines) as random users of a pool of
#      USERS (256) logged-in users, for SECONDS_PER_RUN (10) s, after 200 warm-up orders
#      (pillivery-loadgen orders), with the API's CPU time per order. No worker runs: the
#      payment.ready jobs accumulate;
#   2. the API again with LOW_CLIENTS (4) clients: the latency of an order when requests
#      hardly queue (with 32 closed-loop clients, Little's law puts the mean latency at
#      32 / throughput, so a p99 ≤ 20 ms there needs well over 1,600 orders/s);
#   3. the reference, with the API stopped: pgbench, CLIENTS clients, the same SQL
#      transaction (loadtest/pgbench-order.sql: price lines, order, lines, payment,
#      job), prepared like sqlx, for the same time;
#   4. the same pgbench script plus the read-back the API's 201 answer does
#      (-D readback=1), at CLIENTS and at LOW_CLIENTS clients;
#   5. the transaction with the job's pg_notify inside it (-D notify=1), as the API sent
#      it before wake-ups moved after the commit: what Postgres' notify lock costs.
# On the reference data set (seed 42), with every item put on sale so that random ids
# 1–40,000 are all orderable. Prints a RESULT line per measure, and a summary RESULT line
# last: orders/s of the API and of pgbench, their ratio (goal ≥ 0.5) and the API's
# latency percentiles (goal p99 ≤ 20 ms).
#
#   loadtest/bench-orders.sh            (SECONDS_PER_RUN=10 CLIENTS=32 LOW_CLIENTS=4 USERS=256
#                                        POOL=20 PROFILE=dev|release)
#   REUSE_DB=1 loadtest/bench-orders.sh (keep the generated database of an earlier run)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
# shellcheck source=ops/lib.sh
source "$ROOT/ops/lib.sh"
# shellcheck source=loadtest/lib.sh
source "$ROOT/loadtest/lib.sh"

SECS=${SECONDS_PER_RUN:-10}
CLIENTS=${CLIENTS:-32}
LOW_CLIENTS=${LOW_CLIENTS:-4}
USERS=${USERS:-256}
POOL=${POOL:-20}
PROFILE=${PROFILE:-dev}
PORT=${PORT:-18081}
TARGET=${CARGO_TARGET_DIR:-target}
[[ $TARGET == /* ]] || TARGET="$ROOT/$TARGET"
export SQLX_OFFLINE=true
bench_build --bin pillivery-api --bin pillivery-loadgen
PGBENCH=$(_pv_find_pg_tool pgbench) || pv_die "pgbench not found (Debian: postgresql-contrib / postgresql)"

API_PID=""
stop_api() {
    if [[ -n $API_PID ]]; then
        kill "$API_PID" 2>/dev/null || true
        wait "$API_PID" 2>/dev/null || true
        API_PID=""
    fi
}
cleanup() {
    stop_api
    stop_private_services
}
trap cleanup EXIT

ensure_postgres
ensure_redis
mkdir -p "$ROOT/.local"
bench_reference_db pillivery_orders_bench
bench_orderable
ITEMS=$(pv_psql "$URL" -Atq -c "select max(id) from items")
USER_RANGE=$(pv_psql "$URL" -Atq -c "select max(id) from users")
orders_before=$(pv_psql "$URL" -Atq -c "select count(*) from orders")

export PILLIVERY__DATABASE__URL=$URL PILLIVERY__REDIS__URL=$PV_REDIS_URL
export PILLIVERY__REDIS__PREFIX="bench-orders-$$:" PILLIVERY__API__LISTEN="127.0.0.1:$PORT"
export PILLIVERY__API__PUBLIC_URL="http://127.0.0.1:$PORT"
export PILLIVERY__RATE_LIMIT__PER_IP_PER_SEC=1000000 PILLIVERY__RATE_LIMIT__PER_IP_BURST=1000000
export PILLIVERY__RATE_LIMIT__LOGIN_PER_MIN=1000000 PILLIVERY__RATE_LIMIT__LOGIN_BURST=1000000
export PILLIVERY__DATABASE__MAX_CONNECTIONS=$POOL PILLIVERY__LOG__LEVEL=warn
export PILLIVERY__KAKAOPAY__SECRET_KEY=unused-no-worker-runs
"$BIN/pillivery-api" serve >"$ROOT/.local/bench-orders-api.log" 2>&1 &
API_PID=$!
for _ in $(seq 150); do
    [[ $(pv_http GET "http://127.0.0.1:$PORT/health/ready") == 200 ]] && break
    kill -0 "$API_PID" 2>/dev/null || pv_die "the API exited (see .local/bench-orders-api.log)"
    sleep 0.2
done

result() { grep '^RESULT' | tail -n 1; }
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p"; }

loadgen() { # NAME CLIENTS
    "$BIN/pillivery-loadgen" orders --name "$1" --base "http://127.0.0.1:$PORT" --clients "$2" \
        --seconds "$SECS" --users "$USERS" --user-range "$USER_RANGE" --items "$ITEMS" | result
}
pv_log "API: $CLIENTS clients, ${SECS}s, $USERS users, items 1..$ITEMS ($PROFILE build, pool $POOL)"
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$API_PID/stat"; }
ticks0=$(cpu_ticks)
api=$(loadgen orders "$CLIENTS")
ticks1=$(cpu_ticks)
echo "$api"
api_cpu_ms=$(awk -v t="$((ticks1 - ticks0))" -v hz="$(getconf CLK_TCK)" -v n="$(field requests <<<"$api")" \
    'BEGIN { printf "%.3f", t * 1000 / hz / n }')
pv_log "the API used ${api_cpu_ms} ms of CPU per order (both cores: 2,000 ms/s)"
pv_log "API: $LOW_CLIENTS clients, ${SECS}s (latency without queueing)"
low=$(loadgen orders_low "$LOW_CLIENTS")
echo "$low"
stop_api
orders_after=$(pv_psql "$URL" -Atq -c "select count(*) from orders")
jobs=$(pv_psql "$URL" -Atq -c "select count(*) from fang_tasks where metadata->>'type' = 'payment.ready'")
pv_log "the API wrote $((orders_after - orders_before)) orders (warm-up included); $jobs payment.ready jobs queued"

pgbench_run() { # NAME READBACK CLIENTS [NOTIFY] -> a RESULT line
    local out tps lat
    out=$("$PGBENCH" -n -M prepared -c "$3" -j 2 -T "$SECS" -D users="$USER_RANGE" \
        -D items="$ITEMS" -D readback="$2" -D notify="${4:-0}" -f loadtest/pgbench-order.sql "$URL" \
        2>"$ROOT/.local/bench-orders-pgbench.err") ||
        pv_die "pgbench failed: $(tail -n 5 "$ROOT/.local/bench-orders-pgbench.err")"
    tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out")
    lat=$(sed -n 's/^latency average = \([0-9.]*\).*/\1/p' <<<"$out")
    [[ -n $tps ]] || pv_die "pgbench printed no tps: $out"
    echo "RESULT name=$1 clients=$3 seconds=$SECS tps=$(printf '%.1f' "$tps") latency_avg_ms=$lat"
}
pv_log "pgbench: the same transaction, $CLIENTS clients, ${SECS}s"
pg=$(pgbench_run pgbench_order 0 "$CLIENTS")
echo "$pg"
pv_log "pgbench: the transaction plus the read-back of the answer, $CLIENTS clients, ${SECS}s"
pg_rb=$(pgbench_run pgbench_order_readback 1 "$CLIENTS")
echo "$pg_rb"
pv_log "pgbench: the transaction plus the read-back, $LOW_CLIENTS clients, ${SECS}s"
pg_low=$(pgbench_run pgbench_order_readback_low 1 "$LOW_CLIENTS")
echo "$pg_low"
pv_log "pgbench: the transaction with pg_notify inside it, $CLIENTS clients, ${SECS}s"
pg_notify=$(pgbench_run pgbench_order_notify 0 "$CLIENTS" 1)
echo "$pg_notify"
tps=$(field tps <<<"$pg")
tps_rb=$(field tps <<<"$pg_rb")

ops=$(field orders_per_sec <<<"$api")
ratio=$(awk -v a="$ops" -v p="$tps" 'BEGIN { printf "%.2f", a / p }')
ratio_rb=$(awk -v a="$ops" -v p="$tps_rb" 'BEGIN { printf "%.2f", a / p }')
echo "RESULT orders_per_sec=$ops pgbench_tps=$tps ratio=$ratio pgbench_readback_tps=$tps_rb ratio_readback=$ratio_rb p50_ms=$(field p50_ms <<<"$api") p95_ms=$(field p95_ms <<<"$api") p99_ms=$(field p99_ms <<<"$api") pgbench_latency_avg_ms=$(field latency_avg_ms <<<"$pg") api_cpu_ms_per_order=$api_cpu_ms low_clients=$LOW_CLIENTS low_p50_ms=$(field p50_ms <<<"$low") low_p99_ms=$(field p99_ms <<<"$low") pgbench_low_latency_avg_ms=$(field latency_avg_ms <<<"$pg_low") pgbench_notify_tps=$(field tps <<<"$pg_notify") errors=$(field errors <<<"$api") clients=$CLIENTS pool=$POOL profile=$PROFILE"
