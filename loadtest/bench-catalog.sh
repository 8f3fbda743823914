#!/usr/bin/env bash
# loadtest/bench-catalog.sh — catalog latency on the reference data set, 30 concurrent
# clients (the seed's test): category pages 1–5 (sizes 20 and 8), pages 6–10, keyword
# search (the eight benchmark words, then 24 words with 2-character ones over pages 1–3,
# sizes 8 and 20 and three sorts), item detail. Generates the data set (seed 42) into a
# fresh database, starts the API against it, runs pillivery-loadgen per scenario, prints a
# RESULT line per scenario and a summary RESULT line last.
#
# The reference in the same run: the API restarted with `catalog.snapshot = false` (the
# SQL path behind the Redis page cache, as before the snapshot) for the pages of both
# sizes and both searches; the summary gives our p99 against it. API CPU per request comes from
# loadgen's --cpu accounting.
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
start_api() { # SNAPSHOT (true|false)
    [[ -z $API_PID ]] || { kill "$API_PID" 2>/dev/null || true; wait "$API_PID" 2>/dev/null || true; }
    PILLIVERY__CATALOG__SNAPSHOT=$1 "$BIN/pillivery-api" serve \
        >>"$ROOT/.local/bench-catalog-api.log" 2>&1 &
    API_PID=$!
    for _ in $(seq 100); do
        pv_http GET "http://127.0.0.1:$PORT/health/ready" >/dev/null 2>&1 && break
        sleep 0.2
    done
}

run() { # NAME PATH
    "$BIN/pillivery-loadgen" --name "$1" --base "http://127.0.0.1:$PORT" --path "$2" \
        --clients "$CLIENTS" --seconds "$SECS" --cpu "api=$API_PID" | grep '^RESULT'
}
CATS='{EYE|BONE|BRAIN|INTESTINE|LIVER|SKIN|ANTIOXIDANT|FATIGUE|ETC}'
# 루테인 홍삼 오메가 비타민 유산균 밀크씨슬 콜라겐 프로폴리스, URL-encoded
KW='{%EB%A3%A8%ED%85%8C%EC%9D%B8|%ED%99%8D%EC%82%BC|%EC%98%A4%EB%A9%94%EA%B0%80|%EB%B9%84%ED%83%80%EB%AF%BC|%EC%9C%A0%EC%82%B0%EA%B7%A0|%EB%B0%80%ED%81%AC%EC%94%A8%EC%8A%AC|%EC%BD%9C%EB%9D%BC%EA%B2%90|%ED%94%84%EB%A1%9C%ED%8F%B4%EB%A6%AC%EC%8A%A4}'
# 24 words, eight of two characters (홍삼 비타 칼슘 아연 철분 녹용 효소 엽산), brands and
# Latin words too: the search box as customers use it.
KW_VARIED=$(python3 -c 'import urllib.parse as u; print("{"+"|".join(u.quote(w) for w in "홍삼 비타 칼슘 아연 철분 녹용 효소 엽산 루테인 오메가 비타민 유산균 콜라겐 마그네슘 프로바이오틱스 밀크씨슬 글루코사민 코엔자임 프로폴리스 쏘팔메토 종근당 뉴트리 omega vita".split())+"}")')

P_CACHED8="/api/items?category=$CATS&page={1..5}&size=8"
P_SEARCH="/api/items?keyword=$KW"
P_VARIED="/api/items?keyword=$KW_VARIED&page={1..3}&size={8|20}&sort={sales|price_asc|newest}"

start_api true
cached=$(run cached_pages "/api/items?category=$CATS&page={1..5}")
echo "$cached"
cached8=$(run cached_pages_size8 "$P_CACHED8")
echo "$cached8"
uncached=$(run uncached_pages "/api/items?category=$CATS&page={6..10}")
echo "$uncached"
search=$(run keyword_search "$P_SEARCH")
echo "$search"
varied=$(run keyword_search_varied "$P_VARIED")
echo "$varied"
detail=$(run item_detail "/api/items/{1..40000}")
echo "$detail"

# The reference: the SQL path (catalog.snapshot = false) on the same data, same machine.
start_api false
ref_cached=$(run sql_cached_pages "/api/items?category=$CATS&page={1..5}")
ref_cached8=$(run sql_cached_pages_size8 "$P_CACHED8")
ref_search=$(run sql_keyword_search "$P_SEARCH")
ref_varied=$(run sql_keyword_search_varied "$P_VARIED")
printf '%s\n' "$ref_cached" "$ref_cached8" "$ref_search" "$ref_varied"

field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p"; }
ratio() { python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print(f'{a / b:.3f}' if b else 'nan')" "$1" "$2"; }
search_p99=$(field p99_ms <<<"$search")
ref_search_p99=$(field p99_ms <<<"$ref_search")
varied_p99=$(field p99_ms <<<"$varied")
ref_varied_p99=$(field p99_ms <<<"$ref_varied")
cached8_p99=$(field p99_ms <<<"$cached8")
ref_cached8_p99=$(field p99_ms <<<"$ref_cached8")
echo "RESULT cached_p99_ms=$(field p99_ms <<<"$cached") cached_rps=$(field rps <<<"$cached") sql_cached_p99_ms=$(field p99_ms <<<"$ref_cached") sql_cached_rps=$(field rps <<<"$ref_cached") cached8_p99_ms=$cached8_p99 cached8_rps=$(field rps <<<"$cached8") sql_cached8_p99_ms=$ref_cached8_p99 cached8_vs_sql=$(ratio "$cached8_p99" "$ref_cached8_p99") uncached_p99_ms=$(field p99_ms <<<"$uncached") uncached_rps=$(field rps <<<"$uncached") search_p99_ms=$search_p99 search_rps=$(field rps <<<"$search") sql_search_p99_ms=$ref_search_p99 sql_search_rps=$(field rps <<<"$ref_search") search_vs_sql=$(ratio "$search_p99" "$ref_search_p99") varied_p99_ms=$varied_p99 varied_rps=$(field rps <<<"$varied") sql_varied_p99_ms=$ref_varied_p99 sql_varied_rps=$(field rps <<<"$ref_varied") varied_vs_sql=$(ratio "$varied_p99" "$ref_varied_p99") detail_p99_ms=$(field p99_ms <<<"$detail") detail_rps=$(field rps <<<"$detail") clients=$CLIENTS profile=$PROFILE"
