#!/usr/bin/env bash
# loadtest/bench-console.sh — the operator console's pages on the reference data set
# (40,000 items, 100,000 orders, 20,000 subscriptions, 10,000 users): the overview (its
# live part, what the page refreshes every 5 s, and the whole page), a subscription page
# (with its timeline) and the subscription search by customer e-mail, each from CLIENTS
# concurrent operators signed in to one console session. The reference, measured in the
# same run with the same clients, is the API's cheapest answer (`/health/live`): what the
# server, the connection and the client cost before any page is built. Prints a RESULT
# line per scenario and a summary RESULT line last.
#
#   loadtest/bench-console.sh            (SECONDS_PER_RUN=10 CLIENTS=10 PROFILE=dev|release)
#   REUSE_DB=1 loadtest/bench-console.sh (keep the generated database of an earlier run)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
# shellcheck source=ops/lib.sh
source "$ROOT/ops/lib.sh"
# shellcheck source=loadtest/lib.sh
source "$ROOT/loadtest/lib.sh"

SECS=${SECONDS_PER_RUN:-10}
CLIENTS=${CLIENTS:-10}
PROFILE=${PROFILE:-dev}
PORT=${PORT:-18083}
TARGET=${CARGO_TARGET_DIR:-target}
[[ $TARGET == /* ]] || TARGET="$ROOT/$TARGET"
export SQLX_OFFLINE=true
bench_build --bin pillivery-api --bin pillivery-loadgen
command -v curl >/dev/null 2>&1 || pv_die "curl is needed to sign in to the console"

API_PID=""
TMP=$(mktemp -d)
cleanup() {
    [[ -z $API_PID ]] || kill "$API_PID" 2>/dev/null || true
    rm -rf "$TMP"
    stop_private_services
}
trap cleanup EXIT

ensure_postgres
ensure_redis
bench_reference_db pillivery_console_bench
# A database kept from an earlier run (REUSE_DB=1) gets the migrations added since.
PILLIVERY__DATABASE__URL=$URL "$BIN/pillivery-api" migrate >/dev/null
# The generator's subscriptions are all active and never charged: give one in ten a
# renewal that was declined twice (past due, in dunning), so subscription pages and the
# overview have attempts to show. Idempotent.
pv_psql "$URL" -q <<'SQL'
INSERT INTO charge_attempts (subscription_id, cycle, attempt, status, partner_order_id, amount,
                             lines, started_at, finished_at, failure_code, failure_message)
SELECT s.id, 2, a, 'declined', 'bench-' || s.id || '-2-' || a, 25000, '[]',
       now() - (3 - a) * interval '1 day', now() - (3 - a) * interval '1 day' + interval '2 seconds',
       '-781', 'insufficient balance'
FROM subscriptions s CROSS JOIN generate_series(1, 2) a
WHERE s.id % 10 = 0
ON CONFLICT DO NOTHING;
UPDATE subscriptions SET status = 'past_due' WHERE id % 10 = 0 AND status = 'active';
VACUUM ANALYZE;
SQL

export PILLIVERY__DATABASE__URL=$URL PILLIVERY__REDIS__URL=$PV_REDIS_URL
export PILLIVERY__REDIS__PREFIX="bench-$$:" PILLIVERY__API__LISTEN="127.0.0.1:$PORT"
export PILLIVERY__RATE_LIMIT__PER_IP_PER_SEC=1000000 PILLIVERY__RATE_LIMIT__PER_IP_BURST=1000000
export PILLIVERY__DATABASE__MAX_CONNECTIONS=20 PILLIVERY__LOG__LEVEL=warn
"$BIN/pillivery-api" create-admin --email bench-admin@pillivery.local --password 'Admin123!' >/dev/null
mkdir -p "$ROOT/.local"
"$BIN/pillivery-api" serve >"$ROOT/.local/bench-console-api.log" 2>&1 &
API_PID=$!
BASE="http://127.0.0.1:$PORT"
for _ in $(seq 100); do
    pv_http GET "$BASE/health/ready" >/dev/null 2>&1 && break
    sleep 0.2
done

# Sign in as a browser would: the form's cookie and token, then the session cookie.
curl -s -c "$TMP/jar" -o "$TMP/form.html" "$BASE/admin/sign-in"
token=$(sed -n 's/.*name="token" value="\([^"]*\)".*/\1/p' "$TMP/form.html")
curl -s -b "$TMP/jar" -c "$TMP/jar" -o /dev/null \
    --data-urlencode "email=bench-admin@pillivery.local" --data-urlencode "password=Admin123!" \
    --data-urlencode "token=$token" --data-urlencode "next=/admin" "$BASE/admin/sign-in"
session=$(awk '$6 == "pv_console" {print $7}' "$TMP/jar")
[[ -n $session ]] || pv_die "console sign-in failed"
COOKIE="Cookie: pv_console=$session"
status=$(curl -s -o /dev/null -w '%{http_code}' -H "$COOKIE" "$BASE/admin")
[[ $status == 200 ]] || pv_die "the overview answered $status with the session cookie"

read -r SUB_MIN SUB_MAX <<<"$(pv_psql "$URL" -Atq -F ' ' -c "select min(id), max(id) from subscriptions")"
read -r USERS <<<"$(pv_psql "$URL" -Atq -c "select count(*) from users where email like 'user%@pillivery.test'")"
pv_log "console bench: $CLIENTS clients, ${SECS}s per scenario, subscriptions $SUB_MIN..$SUB_MAX, $USERS customers"

run() { # NAME PATH
    "$BIN/pillivery-loadgen" --name "$1" --base "$BASE" --path "$2" --header "$COOKIE" \
        --clients "$CLIENTS" --seconds "$SECS" --warmup 50 | grep '^RESULT'
}
floor=$(run floor_health_live "/health/live")
echo "$floor"
live=$(run overview_live "/admin/overview/live")
echo "$live"
overview=$(run overview_page "/admin")
echo "$overview"
sub=$(run subscription_page "/admin/subscriptions/{$SUB_MIN..$SUB_MAX}")
echo "$sub"
search=$(run subscription_search "/admin/subscriptions?q=user{1..$USERS}%40pillivery.test")
echo "$search"

field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p"; }
errors=0
for r in "$live" "$overview" "$sub" "$search"; do
    errors=$((errors + $(field errors <<<"$r")))
done
fp99=$(field p99_ms <<<"$floor")
ratio() { awk -v a="$1" -v b="$fp99" 'BEGIN { printf "%.1f", (b > 0 ? a / b : 0) }'; }
echo "RESULT overview_live_p99_ms=$(field p99_ms <<<"$live") overview_page_p99_ms=$(field p99_ms <<<"$overview") subscription_page_p99_ms=$(field p99_ms <<<"$sub") search_p99_ms=$(field p99_ms <<<"$search") floor_p99_ms=$fp99 overview_page_vs_floor=$(ratio "$(field p99_ms <<<"$overview")") subscription_page_vs_floor=$(ratio "$(field p99_ms <<<"$sub")") search_vs_floor=$(ratio "$(field p99_ms <<<"$search")") errors=$errors clients=$CLIENTS profile=$PROFILE"
