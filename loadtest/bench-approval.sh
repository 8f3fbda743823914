#!/usr/bin/env bash
# loadtest/bench-approval.sh — the seed's approval test: KakaoPay answering every call in
# LATENCY_MS (2000) ms (pillivery-pgsim --latency-ms 2000 --auto-approve), BUYERS (100)
# concurrent buyers, ONE pillivery-worker process (concurrency WORKER_CONCURRENCY, 300).
# Each buyer, in a loop (pillivery-loadgen approval): places an order, waits for the
# redirect URL (payment.ready ran at the simulator), opens the simulator's buyer page
# (302 to our approval URL with a pg_token), follows it — the approve redirect, which only
# records and enqueues (timed; goal p99 ≤ 50 ms) — and waits until the order is paid
# (payment.approve ran). WARMUP_SECONDS (10) of load, then a window of SECONDS_PER_RUN
# (30) s. Then checks the simulator's ledger (one approval per order, no double charge).
#
# Reports the approve redirect's p50/p99, approvals completed per second and the goal
# 0.9 × in-flight / 2 s with its ratio — both for in-flight = BUYERS (the nominal 45/s at
# 100 buyers) and for in-flight = the approvals actually under way on average (measured:
# every buyer also spends LATENCY_MS waiting for `ready`, so fewer than BUYERS are
# approving at any moment) — and order→paid p50/p99. Summary RESULT line last.
#
#   loadtest/bench-approval.sh   (BUYERS=100 SECONDS_PER_RUN=30 WARMUP_SECONDS=10
#                                 LATENCY_MS=2000 WORKER_CONCURRENCY=300 POOL=20
#                                 PROFILE=dev|release)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
# shellcheck source=ops/lib.sh
source "$ROOT/ops/lib.sh"
# shellcheck source=loadtest/lib.sh
source "$ROOT/loadtest/lib.sh"
command -v jq >/dev/null || _pv_apt_install jq

BUYERS=${BUYERS:-100}
SECS=${SECONDS_PER_RUN:-30}
WARMUP=${WARMUP_SECONDS:-10}
LATENCY_MS=${LATENCY_MS:-2000}
WORKER_CONCURRENCY=${WORKER_CONCURRENCY:-300}
POOL=${POOL:-20}
PROFILE=${PROFILE:-dev}
PORT=${PORT:-18082}
WORKER_PORT=${WORKER_PORT:-18083}
PGSIM_PORT=${PGSIM_PORT:-18090}
TARGET=${CARGO_TARGET_DIR:-target}
[[ $TARGET == /* ]] || TARGET="$ROOT/$TARGET"
export SQLX_OFFLINE=true
BINS=(--bin pillivery-api --bin pillivery-worker --bin pillivery-pgsim --bin pillivery-loadgen)
bench_build "${BINS[@]}"

PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    stop_private_services
}
trap cleanup EXIT

wait_ready() { # NAME URL PID
    for _ in $(seq 150); do
        [[ $(pv_http GET "$2") == 200 ]] && return 0
        kill -0 "$3" 2>/dev/null || pv_die "$1 exited (see .local/bench-approval-$1.log)"
        sleep 0.2
    done
    pv_die "$1 did not become ready at $2"
}

ensure_postgres
ensure_redis
mkdir -p "$ROOT/.local"
bench_reference_db pillivery_approval_bench
bench_orderable
ITEMS=$(pv_psql "$URL" -Atq -c "select max(id) from items")
USER_RANGE=$(pv_psql "$URL" -Atq -c "select max(id) from users")
FIRST_ORDER=$(pv_psql "$URL" -Atq -c "select coalesce(max(id), 0) + 1 from orders")

SECRET=bench-approval-secret
"$BIN/pillivery-pgsim" --listen "127.0.0.1:$PGSIM_PORT" --secret-key "$SECRET" \
    --latency-ms "$LATENCY_MS" --auto-approve >"$ROOT/.local/bench-approval-pgsim.log" 2>&1 &
PIDS+=($!)
wait_ready pgsim "http://127.0.0.1:$PGSIM_PORT/__health" "${PIDS[-1]}"

export PILLIVERY__DATABASE__URL=$URL PILLIVERY__REDIS__URL=$PV_REDIS_URL
export PILLIVERY__REDIS__PREFIX="bench-approval-$$:" PILLIVERY__API__LISTEN="127.0.0.1:$PORT"
export PILLIVERY__API__PUBLIC_URL="http://127.0.0.1:$PORT"
export PILLIVERY__KAKAOPAY__BASE_URL="http://127.0.0.1:$PGSIM_PORT"
export PILLIVERY__KAKAOPAY__SECRET_KEY=$SECRET
export PILLIVERY__WORKER__LISTEN="127.0.0.1:$WORKER_PORT"
export PILLIVERY__WORKER__CONCURRENCY=$WORKER_CONCURRENCY
export PILLIVERY__RATE_LIMIT__PER_IP_PER_SEC=1000000 PILLIVERY__RATE_LIMIT__PER_IP_BURST=1000000
export PILLIVERY__RATE_LIMIT__LOGIN_PER_MIN=1000000 PILLIVERY__RATE_LIMIT__LOGIN_BURST=1000000
export PILLIVERY__DATABASE__MAX_CONNECTIONS=$POOL PILLIVERY__LOG__LEVEL=warn
"$BIN/pillivery-api" serve >"$ROOT/.local/bench-approval-api.log" 2>&1 &
PIDS+=($!)
wait_ready api "http://127.0.0.1:$PORT/health/ready" "${PIDS[-1]}"
"$BIN/pillivery-worker" run >"$ROOT/.local/bench-approval-worker.log" 2>&1 &
PIDS+=($!)
wait_ready worker "http://127.0.0.1:$WORKER_PORT/health/ready" "${PIDS[-1]}"

result() { grep '^RESULT' | tail -n 1; }
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p"; }

pv_log "$BUYERS buyers, pgsim latency ${LATENCY_MS} ms, one worker (concurrency $WORKER_CONCURRENCY), ${WARMUP}s warm-up + ${SECS}s ($PROFILE build, pools $POOL)"
run=$("$BIN/pillivery-loadgen" approval --base "http://127.0.0.1:$PORT" --buyers "$BUYERS" \
    --warmup-seconds "$WARMUP" --seconds "$SECS" --user-range "$USER_RANGE" --items "$ITEMS" | result)
echo "$run"

# The simulator's ledger: every approval once, and as many as orders paid.
ledger="$ROOT/.local/bench-approval-ledger.json"
pv_http GET "http://127.0.0.1:$PGSIM_PORT/__ledger" "" "$ledger" >/dev/null
approved=$(jq '[.entries[] | select(.kind == "approve")] | length' "$ledger")
doubles=$(jq '[.entries[] | select(.kind == "approve") | .partner_order_id] | group_by(.) | map(select(length > 1)) | length' "$ledger")
paid=$(pv_psql "$URL" -Atq -c "select count(*) from orders where status = 'paid' and id >= $FIRST_ORDER")
failed_jobs=$(pv_psql "$URL" -Atq -c "select count(*) from fang_tasks where state = 'failed'")
echo "RESULT name=ledger approvals=$approved orders_paid=$paid double_approvals=$doubles failed_jobs=$failed_jobs"
((doubles == 0)) || pv_warn "$doubles orders were approved twice at the simulator"

latency_s=$(awk -v l="$LATENCY_MS" 'BEGIN { print l / 1000 }')
aps=$(field approvals_per_sec <<<"$run")
in_flight=$(field in_flight_avg <<<"$run")
goal=$(awk -v b="$BUYERS" -v l="$latency_s" 'BEGIN { printf "%.1f", 0.9 * b / l }')
ratio=$(awk -v a="$aps" -v g="$goal" 'BEGIN { printf "%.2f", a / g }')
goal_measured=$(awk -v f="$in_flight" -v l="$latency_s" 'BEGIN { printf "%.1f", 0.9 * f / l }')
ratio_measured=$(awk -v a="$aps" -v g="$goal_measured" 'BEGIN { printf "%.2f", a / g }')
echo "RESULT approve_p50_ms=$(field approve_p50_ms <<<"$run") approve_p99_ms=$(field approve_p99_ms <<<"$run") approvals_per_sec=$aps goal_per_sec=$goal ratio=$ratio in_flight_avg=$in_flight goal_in_flight_per_sec=$goal_measured ratio_in_flight=$ratio_measured e2e_p50_ms=$(field e2e_p50_ms <<<"$run") e2e_p99_ms=$(field e2e_p99_ms <<<"$run") errors=$(field errors <<<"$run") double_approvals=$doubles buyers=$BUYERS worker_concurrency=$WORKER_CONCURRENCY profile=$PROFILE"
