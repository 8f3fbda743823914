#!/usr/bin/env bash
# loadtest/bench-catalog.sh — catalog latency on the reference data set, 30 concurrent
# clients (the seed's test): category pages 1–5 (cached), pages 6–10 (uncached), keyword
# search, item detail. Generates the data set (seed 42) into a fresh database, starts the
# API against it, runs pillivery-loadgen per scenario, prints a RESULT line per scenario
# and a summary RESULT line last.
#
#   loadtest/bench-catalog.sh            (SECONDS_PER_RUN=10 CLIENTS=30 PROFILE=dev|release)
#   REUSE_DB=1 loadtest/bench-catalog.sh (keep the generated database of an earlier run)
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
PORT=${PORT:-18080}
TARGET=${CARGO_TARGET_DIR:-target}
[[ $TARGET == /* ]] || TARGET="$ROOT/$TARGET"
export SQLX_OFFLINE=true
bench_build --bin pillivery-api --bin pillivery-loadgen

API_PID=""
cleanup() {
    [[ -z $API_PID ]] || kill "$API_PID" 2>/dev/null || true
    stop_private_services
}
trap cleanup EXIT

ensure_postgres
ensure_redis
bench_reference_db pillivery_catalog_bench

export PILLIVERY__DATABASE__URL=$URL PILLIVERY__REDIS__URL=$PV_REDIS_URL
export PILLIVERY__REDIS__PREFIX="bench-$$:" PILLIVERY__API__LISTEN="127.0.0.1:$PORT"
export PILLIVERY__RATE_LIMIT__PER_IP_PER_SEC=1000000 PILLIVERY__RATE_LIMIT__PER_IP_BURST=1000000
export PILLIVERY__DATABASE__MAX_CONNECTIONS=20 PILLIVERY__LOG__LEVEL=warn
mkdir -p "$ROOT/.local"
"$BIN/pillivery-api" serve >"$ROOT/.local/bench-catalog-api.log" 2>&1 &
API_PID=$!
for _ in $(seq 100); do
    pv_http GET "http://127.0.0.1:$PORT/health/ready" >/dev/null 2>&1 && break
    sleep 0.2
done

run() { # NAME PATH
    "$BIN/pillivery-loadgen" --name "$1" --base "http://127.0.0.1:$PORT" --path "$2" \
        --clients "$CLIENTS" --seconds "$SECS" | grep '^RESULT'
}
CATS='{EYE|BONE|BRAIN|INTESTINE|LIVER|SKIN|ANTIOXIDANT|FATIGUE|ETC}'
# 루테인 홍삼 오메가 비타민 유산균 밀크씨슬 콜라겐 프로폴리스, URL-encoded
KW='{%EB%A3%A8%ED%85%8C%EC%9D%B8|%ED%99%8D%EC%82%BC|%EC%98%A4%EB%A9%94%EA%B0%80|%EB%B9%84%ED%83%80%EB%AF%BC|%EC%9C%A0%EC%82%B0%EA%B7%A0|%EB%B0%80%ED%81%AC%EC%94%A8%EC%8A%AC|%EC%BD%9C%EB%9D%BC%EA%B2%90|%ED%94%84%EB%A1%9C%ED%8F%B4%EB%A6%AC%EC%8A%A4}'
cached=$(run cached_pages "/api/items?category=$CATS&page={1..5}")
echo "$cached"
uncached=$(run uncached_pages "/api/items?category=$CATS&page={6..10}")
echo "$uncached"
search=$(run keyword_search "/api/items?keyword=$KW")
echo "$search"
detail=$(run item_detail "/api/items/{1..40000}")
echo "$detail"

field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p"; }
echo "RESULT cached_p99_ms=$(field p99_ms <<<"$cached") cached_rps=$(field rps <<<"$cached") uncached_p99_ms=$(field p99_ms <<<"$uncached") uncached_rps=$(field rps <<<"$uncached") search_p99_ms=$(field p99_ms <<<"$search") search_rps=$(field rps <<<"$search") detail_p99_ms=$(field p99_ms <<<"$detail") detail_rps=$(field rps <<<"$detail") clients=$CLIENTS profile=$PROFILE"
