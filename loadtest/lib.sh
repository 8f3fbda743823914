# loadtest/lib.sh — what the benchmark scripts share (sourced after ops/lib.sh; the
# helpers below bench_build expect $BIN, the directory of the built binaries).

# bench_build CARGO_ARGS...: builds the given binaries (e.g. `--bin pillivery-api`) in
# $PROFILE (`release`, else the dev profile) under $TARGET, and sets BIN to their directory.
bench_build() {
    if [[ ${PROFILE:-dev} == release ]]; then
        cargo build -q --release "$@"
        BIN="$TARGET/release"
    else
        cargo build -q "$@"
        BIN="$TARGET/debug"
    fi
}

# bench_reference_db NAME: sets URL to database NAME holding the reference data set
# (loadtest/generate --seed 42), generated afresh unless REUSE_DB=1 and it exists.
bench_reference_db() {
    URL=$(db_url_for "$1")
    local exists
    exists=$(pv_psql "$PV_PG_ADMIN_URL" -Atq -c "select 1 from pg_database where datname = '$1'")
    if [[ ${REUSE_DB:-0} != 1 || $exists != 1 ]]; then
        pv_psql "$PV_PG_ADMIN_URL" -q -c "drop database if exists $1" -c "create database $1"
        PILLIVERY__DATABASE__URL=$URL "$BIN/pillivery-api" migrate >/dev/null
        pv_log "generating the reference data set (seed 42)"
        loadtest/generate --seed 42 --database-url "$URL" | grep '^RESULT'
    fi
}

# bench_orderable: every item of $URL orderable (the generator leaves ~2 % off sale and
# ~1 % deleted), no jobs left from an earlier run, fresh statistics.
bench_orderable() {
    pv_psql "$URL" -q \
        -c "update items set selling = true, deleted_at = null where not selling or deleted_at is not null" \
        -c "truncate fang_tasks" -c "vacuum analyze"
}
