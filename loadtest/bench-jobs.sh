#!/usr/bin/env bash
# loadtest/bench-jobs.sh — the job runtime's benchmarks, in one run on one database:
#   1. no-op throughput of our runtime (one process) vs stock fang 0.11 (AsyncQueue +
#      AsyncWorkerPool, 1 worker: its only duplicate-free setting), same table, same binary;
#   2. pgbench: batched claim + delete of 20 on the same table (the physical reference);
#   3. our throughput with 1,000 and 300,000 pending (future-scheduled) tasks in the table;
#   4. enqueue-to-start latency with an idle worker.
# Prints one RESULT line per measure and a summary RESULT line last.
#
#   loadtest/bench-jobs.sh              (JOBS=100000 FANG_JOBS=5000 PGBENCH_SECS=10)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
# shellcheck source=ops/lib.sh
source "$ROOT/ops/lib.sh"
trap stop_private_services EXIT

JOBS=${JOBS:-100000}
FANG_JOBS=${FANG_JOBS:-5000}
PGBENCH_SECS=${PGBENCH_SECS:-10}
PGBENCH_ROWS=${PGBENCH_ROWS:-600000}
TARGET=${CARGO_TARGET_DIR:-target}
[[ $TARGET == /* ]] || TARGET="$ROOT/$TARGET"
export SQLX_OFFLINE=true

cargo build -q --bin pillivery-api --bin pillivery-jobbench
ensure_postgres
DB=pillivery_bench
pv_psql "$PV_PG_ADMIN_URL" -q -c "drop database if exists $DB" -c "create database $DB"
export PILLIVERY__DATABASE__URL
PILLIVERY__DATABASE__URL=$(db_url_for "$DB")
"$TARGET/debug/pillivery-api" migrate >/dev/null
BENCH="$TARGET/debug/pillivery-jobbench"
export RUST_LOG=warn

result() { grep '^RESULT' | tail -n 1; }
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p"; }

pv_log "our runtime: $JOBS no-op jobs"
ours=$("$BENCH" ours --jobs "$JOBS" | result)
echo "$ours"
pv_log "stock fang: $FANG_JOBS no-op jobs, 1 worker"
fang=$("$BENCH" fang --jobs "$FANG_JOBS" | result)
echo "$fang"

pv_log "pgbench: claim + delete in batches of 20, $PGBENCH_ROWS rows, ${PGBENCH_SECS}s, 2 clients"
pv_psql "$PILLIVERY__DATABASE__URL" -q -c "truncate fang_tasks" \
    -c "insert into fang_tasks (metadata) select jsonb_build_object('type','diag.noop','n',g) from generate_series(1, $PGBENCH_ROWS) g" \
    -c "vacuum analyze fang_tasks"
PGBENCH=$(_pv_find_pg_tool pgbench) || pv_die "pgbench not found (Debian: postgresql)"
tps=$("$PGBENCH" -n -c 2 -j 2 -T "$PGBENCH_SECS" -f loadtest/pgbench-claim.sql "$PILLIVERY__DATABASE__URL" |
    sed -n 's/^tps = \([0-9.]*\).*/\1/p')
left=$(pv_psql "$PILLIVERY__DATABASE__URL" -Atq -c "select count(*) from fang_tasks")
((left > 0)) || pv_warn "pgbench emptied the table: raise PGBENCH_ROWS"
pgbench_jobs=$(awk -v t="$tps" 'BEGIN { printf "%.0f", t * 20 }')
echo "RESULT pgbench_tps=$tps pgbench_batch=20 pgbench_jobs_per_sec=$pgbench_jobs"

pv_log "our runtime with a backlog of 1,000 and of 300,000 pending tasks"
b1k=$("$BENCH" ours --jobs 50000 --backlog 1000 | result)
echo "$b1k"
b300k=$("$BENCH" ours --jobs 50000 --backlog 300000 | result)
echo "$b300k"

pv_log "enqueue-to-start latency, idle worker"
lat=$("$BENCH" latency --samples 200 | result)
echo "$lat"

pv_psql "$PV_PG_ADMIN_URL" -q -c "drop database if exists $DB"

o=$(field jobs_per_sec <<<"$ours")
f=$(field fang_jobs_per_sec <<<"$fang")
ratio=$(awk -v o="$o" -v f="$f" 'BEGIN { printf "%.1f", o / f }')
of_pgbench=$(awk -v o="$o" -v p="$pgbench_jobs" 'BEGIN { printf "%.2f", o / p }')
echo "RESULT jobs_per_sec=$o fang_jobs_per_sec=$f ratio=$ratio pgbench_jobs_per_sec=$pgbench_jobs of_pgbench=$of_pgbench backlog_1k_jobs_per_sec=$(field jobs_per_sec <<<"$b1k") backlog_300k_jobs_per_sec=$(field jobs_per_sec <<<"$b300k") latency_ms_p50=$(field latency_ms_p50 <<<"$lat") latency_ms_p99=$(field latency_ms_p99 <<<"$lat")"
