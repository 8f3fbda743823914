# shellcheck shell=bash
# ops/lib.sh — shared helpers for the Pillivery operations scripts.
#
# Source it from bash (it is `set -euo pipefail` friendly):
#
#     source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Functions (progress lines go to stderr, prefixed with "==>"):
#   pv_root                 print the repository root
#   ensure_postgres         find or start a Postgres; exports PV_PG_ADMIN_URL
#   ensure_redis            find or start a Redis;    exports PV_REDIS_URL
#   stop_private_services   stop only what ensure_* started in this shell
#   ensure_nextest          make `cargo nextest` available
#   ensure_browser          make chromium + chromedriver available (browser tests);
#                           returns 1 (with a warning) when they can't be installed
#   db_url_for NAME         PV_PG_ADMIN_URL with the database replaced by NAME
#   pv_psql URL ARGS...     psql (from PATH or the Postgres bin dir), no psqlrc
#   pv_http METHOD URL [JSON_BODY [OUT_FILE]]
#                           HTTP request via curl or bash /dev/tcp; prints the
#                           status code, writes the body to OUT_FILE (or drops it)
#   pv_tcp_open HOST PORT   true when something accepts TCP connections there
#
# Variables set:
#   PV_ROOT                 repository root (exported)
#   PV_PG_ADMIN_URL         URL of the `postgres` maintenance db on the chosen server (exported)
#   PV_PG_STARTED           1 when ensure_postgres started a private instance (shell variable)
#   PV_PG_BASE, PV_PG_DATA  private instance directories (only when it is used)
#   PV_REDIS_URL            URL of the chosen Redis (exported)
#   PV_REDIS_STARTED        1 when ensure_redis started a private instance (shell variable)
#
# Knobs (environment):
#   DATABASE_URL / REDIS_URL   tried first when set
#   PV_FORCE_PRIVATE=1         skip DATABASE_URL/REDIS_URL and the default ports;
#                              always use the private instances (tests of this file)
#   PV_PG_PORT (55432), PV_REDIS_PORT (56379)   ports of the private instances
#
# Private state lives under "$(pv_root)/.local/" (gitignored).

# The STARTED flags belong to the shell that sourced this file: never inherit
# them, so a child script can't stop services its parent started.
PV_PG_STARTED=0
PV_REDIS_STARTED=0

pv_log() { printf '==> %s\n' "$*" >&2; }
pv_warn() { printf '==> WARNING: %s\n' "$*" >&2; }
pv_die() {
    printf '==> ERROR: %s\n' "$*" >&2
    exit 1
}

pv_root() {
    (cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
}
PV_ROOT="$(pv_root)"
export PV_ROOT

# ---------------------------------------------------------------------------
# small utilities

# _pv_url_hostport URL DEFAULT_PORT -> "host port"
_pv_url_hostport() {
    local url=$1 defport=$2 auth host port=""
    if [[ $url =~ ^[A-Za-z0-9+.-]+://([^/?#]*) ]]; then
        auth=${BASH_REMATCH[1]}
    else
        auth=""
    fi
    auth=${auth##*@}
    if [[ $auth =~ ^\[([^]]*)\](:([0-9]+))?$ ]]; then
        host=${BASH_REMATCH[1]}
        port=${BASH_REMATCH[3]}
    elif [[ $auth == *:* ]]; then
        host=${auth%:*}
        port=${auth##*:}
    else
        host=$auth
    fi
    printf '%s %s\n' "${host:-127.0.0.1}" "${port:-$defport}"
}

# _pv_url_password URL -> password from the userinfo part (may be empty)
_pv_url_password() {
    local url=$1 auth
    [[ $url =~ ^[A-Za-z0-9+.-]+://([^/?#]*) ]] || return 0
    auth=${BASH_REMATCH[1]}
    [[ $auth == *@* ]] || return 0
    auth=${auth%@*}
    [[ $auth == *:* ]] || return 0
    printf '%s\n' "${auth#*:}"
}

# _pv_url_with_db URL NAME -> URL whose path (database) is NAME; query kept
_pv_url_with_db() {
    local url=$1 name=$2
    if [[ $url =~ ^([A-Za-z0-9+.-]+://[^/?#]*)(/[^?#]*)?(\?[^#]*)?$ ]]; then
        printf '%s/%s%s\n' "${BASH_REMATCH[1]}" "$name" "${BASH_REMATCH[3]}"
    else
        pv_die "can't parse database URL: $url"
    fi
}

db_url_for() {
    [[ $# -eq 1 && -n $1 ]] || pv_die "usage: db_url_for NAME"
    [[ -n ${PV_PG_ADMIN_URL:-} ]] || pv_die "db_url_for: call ensure_postgres first"
    _pv_url_with_db "$PV_PG_ADMIN_URL" "$1"
}

pv_tcp_open() {
    local host=$1 port=$2
    # shellcheck disable=SC2016
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$host" "$port" 2>/dev/null
}

# pv_http METHOD URL [JSON_BODY [OUT_FILE]] -> prints the HTTP status ("000" when
# nothing answered); the response body goes to OUT_FILE when given.
pv_http() {
    local method=$1 url=$2 body=${3-} out=${4:-/dev/null}
    if command -v curl >/dev/null 2>&1; then
        local args=(-s -o "$out" -w '%{http_code}' --max-time 10 -X "$method")
        if [[ -n $body ]]; then
            args+=(-H 'content-type: application/json' --data-binary "$body")
        fi
        curl "${args[@]}" "$url" 2>/dev/null || true
        return 0
    fi
    # No curl: speak HTTP/1.0 over bash's /dev/tcp (HTTP/1.0 -> no chunking,
    # the server closes the connection after the response).
    local rest hostport host port path raw
    [[ $url =~ ^http://([^/]+)(/.*)?$ ]] || pv_die "pv_http: only http:// URLs: $url"
    hostport=${BASH_REMATCH[1]}
    path=${BASH_REMATCH[2]:-/}
    read -r host port <<<"$(_pv_url_hostport "http://$hostport" 80)"
    raw=$(mktemp)
    # shellcheck disable=SC2016
    timeout 10 bash -c '
        exec 3<>"/dev/tcp/$1/$2" || exit 1
        len=$(printf %s "$6" | wc -c)
        {
            printf "%s %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n" "$4" "$5" "$3"
            if [ -n "$6" ]; then
                printf "Content-Type: application/json\r\nContent-Length: %s\r\n" "$len"
            fi
            printf "\r\n%s" "$6"
        } >&3
        cat <&3
    ' _ "$host" "$port" "$hostport" "$method" "$path" "$body" >"$raw" 2>/dev/null || true
    rest=$(head -n1 "$raw" | awk '{print $2}')
    # body = everything after the first empty (CRLF) line
    awk 'found { print; next } /^\r?$/ { found = 1 }' "$raw" >"$out" 2>/dev/null || true
    rm -f "$raw"
    printf '%s' "${rest:-000}"
}

_pv_sudo() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        pv_die "need root to run: $*"
    fi
}

# _pv_apt_install PKG... (runs `apt-get update` once if the first try fails)
_pv_apt_install() {
    command -v apt-get >/dev/null 2>&1 || pv_die "apt-get not available; install manually: $*"
    pv_log "installing $* with apt-get"
    local log
    log=$(mktemp)
    if _pv_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >"$log" 2>&1; then
        rm -f "$log"
        return 0
    fi
    pv_log "apt-get install failed; running apt-get update and retrying"
    if _pv_sudo env DEBIAN_FRONTEND=noninteractive apt-get update >"$log" 2>&1 &&
        _pv_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >"$log" 2>&1; then
        rm -f "$log"
        return 0
    fi
    tail -n 20 "$log" >&2
    rm -f "$log"
    pv_die "could not install $*"
}

# _pv_alive PID: process exists and is not a zombie
_pv_alive() {
    local pid=$1 state
    kill -0 "$pid" 2>/dev/null || return 1
    if [[ -r /proc/$pid/stat ]]; then
        state=$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$pid/stat" 2>/dev/null || true)
        [[ $state != Z ]] || return 1
    fi
    return 0
}

# _pv_adopt OWNER_FILE: a private service is running; take it over (and
# succeed) unless the script that started it (pid in OWNER_FILE) still runs.
_pv_adopt() {
    local file=$1 pid
    pid=$(cat "$file" 2>/dev/null || true)
    if [[ -n $pid && $pid != "$$" ]] && kill -0 "$pid" 2>/dev/null; then
        return 1
    fi
    echo "$$" >"$file"
}

# ---------------------------------------------------------------------------
# Postgres

# directory with initdb/pg_ctl/postgres (newest major version wins)
_pv_pg_bindir() {
    local d best=""
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x $d/initdb && -x $d/pg_ctl ]] || continue
        if [[ -z $best ]] || [[ $(printf '%s\n%s\n' "$best" "$d" | sort -V | tail -n1) == "$d" ]]; then
            best=$d
        fi
    done
    if [[ -z $best ]] && command -v initdb >/dev/null 2>&1; then
        best=$(dirname "$(readlink -f "$(command -v initdb)")")
        [[ -x $best/pg_ctl ]] || best=""
    fi
    [[ -n $best ]] && printf '%s\n' "$best"
}

_pv_find_pg_tool() { # NAME -> path (PATH first, then the Postgres bin dirs)
    local name=$1 d
    if command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
        return 0
    fi
    d=$(_pv_pg_bindir || true)
    if [[ -n $d && -x $d/$name ]]; then
        printf '%s\n' "$d/$name"
        return 0
    fi
    return 1
}

pv_psql() {
    local url=$1 psql
    shift
    psql=$(_pv_find_pg_tool psql) || pv_die "psql not found"
    PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-5} "$psql" -X -v ON_ERROR_STOP=1 "$url" "$@"
}

# _pv_pg_answers URL: the server accepts us (psql select 1), or at least it is
# ready (pg_isready), or at least the port is open (/dev/tcp) — best tool wins.
_pv_pg_answers() {
    local url=$1 tool host port
    if tool=$(_pv_find_pg_tool psql); then
        PGCONNECT_TIMEOUT=3 timeout 10 "$tool" -X -Atq "$url" -c 'select 1' >/dev/null 2>&1
        return
    fi
    if tool=$(_pv_find_pg_tool pg_isready); then
        timeout 10 "$tool" -q -t 3 -d "$url" >/dev/null 2>&1
        return
    fi
    read -r host port <<<"$(_pv_url_hostport "$url" 5432)"
    pv_tcp_open "$host" "$port"
}

# run a command as the `postgres` OS user (Postgres refuses to run as root)
_pv_as_pg() {
    if [[ $EUID -ne 0 ]]; then
        "$@"
    elif command -v runuser >/dev/null 2>&1; then
        runuser -u postgres -- "$@"
    else
        su postgres -s /bin/bash -c "$(printf '%q ' "$@")"
    fi
}

_pv_pg_owner() { if [[ $EUID -eq 0 ]]; then echo postgres; else id -un; fi; }

# choose (and prepare) the directory of the private instance: $ROOT/.local/pg
# when the postgres user can reach it, else a directory under /var/tmp, whose
# location is recorded in $ROOT/.local/pg.location.
_pv_pg_prepare_base() {
    local local_dir="$PV_ROOT/.local" base record owner
    record="$local_dir/pg.location"
    owner=$(_pv_pg_owner)
    mkdir -p "$local_dir"
    if [[ -s $record ]]; then
        base=$(cat "$record")
    else
        base="$local_dir/pg"
        mkdir -p "$base"
        if [[ $EUID -eq 0 ]]; then
            chown "$owner:" "$base"
            chmod 700 "$base"
            # postgres needs to traverse .local (ours, gitignored) ...
            _pv_as_pg test -x "$local_dir" 2>/dev/null || chmod a+x "$local_dir"
        fi
        # ... and every directory above it, which we leave alone.
        if ! _pv_as_pg test -w "$base" 2>/dev/null; then
            base="/var/tmp/pillivery-pg-$(printf '%s' "$PV_ROOT" | cksum | cut -d' ' -f1)"
            pv_log "user $owner can't reach $local_dir; private Postgres lives in $base"
            printf '%s\n' "$base" >"$record"
        fi
    fi
    mkdir -p "$base"
    if [[ $EUID -eq 0 ]]; then
        chown "$owner:" "$base"
        chmod 700 "$base"
    fi
    _pv_as_pg mkdir -p "$base/log" "$base/run"
    _pv_as_pg test -w "$base" || pv_die "user $owner can't write $base"
    PV_PG_BASE=$base
    PV_PG_DATA=$base/data
}

# unix socket dir: inside the base unless the path would be too long
_pv_pg_sockdir() {
    local dir="$PV_PG_BASE/run"
    if ((${#dir} > 90)); then
        dir="/tmp/pillivery-pg-$(printf '%s' "$PV_ROOT" | cksum | cut -d' ' -f1)"
        mkdir -p "$dir"
        [[ $EUID -ne 0 ]] || chown "$(_pv_pg_owner):" "$dir"
    fi
    printf '%s\n' "$dir"
}

_pv_pg_start_private() {
    local port=${PV_PG_PORT:-55432} bindir sockdir url v
    bindir=$(_pv_pg_bindir || true)
    if [[ -z $bindir ]]; then
        _pv_apt_install postgresql postgresql-client
        bindir=$(_pv_pg_bindir || true)
        [[ -n $bindir ]] || pv_die "postgresql installed but initdb/pg_ctl not found"
    fi
    if [[ $EUID -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
        pv_log "creating the postgres OS user"
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin postgres
    fi
    _pv_pg_prepare_base
    sockdir=$(_pv_pg_sockdir)
    url="postgres://postgres@127.0.0.1:$port/postgres"

    # a previous data dir of another major version: set it aside
    v=$("$bindir/pg_ctl" --version | sed -nE 's/^[^0-9]*([0-9]+).*/\1/p')
    if [[ -f $PV_PG_DATA/PG_VERSION && $(cat "$PV_PG_DATA/PG_VERSION") != "$v" ]]; then
        pv_warn "private data dir is from Postgres $(cat "$PV_PG_DATA/PG_VERSION"); moving it aside"
        mv "$PV_PG_DATA" "$PV_PG_DATA.old-$(date +%s)"
    fi
    if [[ ! -f $PV_PG_DATA/PG_VERSION ]]; then
        pv_log "initdb $PV_PG_DATA (Postgres $v)"
        rm -rf "$PV_PG_DATA"
        (cd "$PV_PG_BASE" && _pv_as_pg "$bindir/initdb" -D "$PV_PG_DATA" -U postgres \
            --auth=trust --encoding=UTF8 --no-locale >"$PV_PG_BASE/log/initdb.log" 2>&1) ||
            {
                tail -n 20 "$PV_PG_BASE/log/initdb.log" >&2
                pv_die "initdb failed"
            }
        printf "include_if_exists = 'pillivery.conf'\n" >>"$PV_PG_DATA/postgresql.conf"
    fi

    if (cd "$PV_PG_BASE" && _pv_as_pg "$bindir/pg_ctl" -D "$PV_PG_DATA" status >/dev/null 2>&1); then
        if _pv_pg_answers "$url"; then
            PV_PG_ADMIN_URL=$url
            export PV_PG_ADMIN_URL
            if _pv_adopt "$PV_PG_BASE/owner"; then
                pv_log "private Postgres on port $port left over by an earlier run: adopting it"
                PV_PG_STARTED=1
                _PV_PG_BINDIR=$bindir
            else
                pv_log "private Postgres on port $port belongs to a running script (pid $(cat "$PV_PG_BASE/owner")): sharing it"
            fi
            return 0
        fi
        pv_die "a private Postgres runs from $PV_PG_DATA but does not answer on $url"
    fi
    pv_tcp_open 127.0.0.1 "$port" && pv_die "port $port is taken by something else (set PV_PG_PORT)"

    # settings of the private (throw-away, dev/test) instance
    cat >"$PV_PG_DATA/pillivery.conf" <<EOF
# written by ops/lib.sh on every start
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$sockdir'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    [[ $EUID -ne 0 ]] || chown postgres: "$PV_PG_DATA/pillivery.conf"

    pv_log "starting private Postgres on 127.0.0.1:$port (log: $PV_PG_BASE/log/postgres.log)"
    if ! (cd "$PV_PG_BASE" && _pv_as_pg "$bindir/pg_ctl" -D "$PV_PG_DATA" \
        -l "$PV_PG_BASE/log/postgres.log" -w -t 60 start >/dev/null 2>&1); then
        tail -n 20 "$PV_PG_BASE/log/postgres.log" >&2 || true
        pv_die "private Postgres did not start"
    fi
    PV_PG_STARTED=1
    _PV_PG_BINDIR=$bindir
    echo "$$" >"$PV_PG_BASE/owner"
    local i
    for ((i = 0; i < 60; i++)); do
        _pv_pg_answers "$url" && break
        sleep 0.5
    done
    _pv_pg_answers "$url" || pv_die "private Postgres started but does not answer on $url"
    PV_PG_ADMIN_URL=$url
    export PV_PG_ADMIN_URL
}

ensure_postgres() {
    local url
    if [[ ${PV_FORCE_PRIVATE:-0} != 1 ]]; then
        if [[ -n ${DATABASE_URL:-} ]]; then
            url=$(_pv_url_with_db "$DATABASE_URL" postgres)
            if _pv_pg_answers "$DATABASE_URL" || _pv_pg_answers "$url"; then
                pv_log "Postgres: using DATABASE_URL's server"
                PV_PG_ADMIN_URL=$url
                export PV_PG_ADMIN_URL
                return 0
            fi
            pv_warn "DATABASE_URL does not answer; looking elsewhere"
        fi
        url="postgres://postgres@127.0.0.1:5432/postgres"
        if _pv_pg_answers "$url"; then
            pv_log "Postgres: using 127.0.0.1:5432"
            PV_PG_ADMIN_URL=$url
            export PV_PG_ADMIN_URL
            return 0
        fi
    fi
    _pv_pg_start_private
}

_pv_pg_stop_private() {
    [[ ${PV_PG_STARTED:-0} == 1 ]] || return 0
    local bindir=${_PV_PG_BINDIR:-}
    [[ -n $bindir ]] || bindir=$(_pv_pg_bindir)
    pv_log "stopping private Postgres"
    (cd "$PV_PG_BASE" && _pv_as_pg "$bindir/pg_ctl" -D "$PV_PG_DATA" -m fast -w -t 30 stop >/dev/null 2>&1) ||
        (cd "$PV_PG_BASE" && _pv_as_pg "$bindir/pg_ctl" -D "$PV_PG_DATA" -m immediate -w -t 30 stop >/dev/null 2>&1) ||
        pv_warn "could not stop private Postgres ($PV_PG_DATA)"
    rm -f "$PV_PG_BASE/owner"
    PV_PG_STARTED=0
}

# ---------------------------------------------------------------------------
# Redis

# _pv_redis_answers URL: PING -> PONG (redis-cli, else raw RESP over /dev/tcp)
_pv_redis_answers() {
    local url=$1 host port pass reply
    if command -v redis-cli >/dev/null 2>&1; then
        reply=$(timeout 5 redis-cli -u "$url" ping 2>/dev/null || true)
        [[ $reply == PONG* ]]
        return
    fi
    read -r host port <<<"$(_pv_url_hostport "$url" 6379)"
    pass=$(_pv_url_password "$url")
    # shellcheck disable=SC2016
    reply=$(timeout 5 bash -c '
        exec 3<>"/dev/tcp/$1/$2" || exit 1
        if [ -n "$3" ]; then
            n=$(printf %s "$3" | wc -c)
            printf "*2\r\n\$4\r\nAUTH\r\n\$%s\r\n%s\r\n" "$n" "$3" >&3
            IFS= read -r line <&3
        fi
        printf "PING\r\n" >&3
        IFS= read -r line <&3
        printf "%s\n" "$line"
    ' _ "$host" "$port" "$pass" 2>/dev/null || true)
    [[ $reply == +PONG* ]]
}

_pv_redis_start_private() {
    local port=${PV_REDIS_PORT:-56379} dir="$PV_ROOT/.local/redis" url server pid i
    url="redis://127.0.0.1:$port"
    if ! server=$(command -v redis-server); then
        _pv_apt_install redis-server
        server=$(command -v redis-server) || pv_die "redis-server installed but not found"
    fi
    mkdir -p "$dir"
    if [[ -s $dir/redis.pid ]] && pid=$(cat "$dir/redis.pid") && _pv_alive "$pid" &&
        _pv_redis_answers "$url"; then
        PV_REDIS_URL=$url
        export PV_REDIS_URL
        if _pv_adopt "$dir/owner"; then
            pv_log "private Redis on port $port left over by an earlier run: adopting it"
            PV_REDIS_STARTED=1
            _PV_REDIS_DIR=$dir
        else
            pv_log "private Redis on port $port belongs to a running script (pid $(cat "$dir/owner")): sharing it"
        fi
        return 0
    fi
    pv_tcp_open 127.0.0.1 "$port" && pv_die "port $port is taken by something else (set PV_REDIS_PORT)"
    rm -f "$dir/redis.pid"
    pv_log "starting private Redis on 127.0.0.1:$port (log: $dir/redis.log)"
    "$server" --bind 127.0.0.1 --port "$port" --daemonize yes --save "" --appendonly no \
        --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null ||
        pv_die "redis-server failed to start (log: $dir/redis.log)"
    PV_REDIS_STARTED=1
    _PV_REDIS_DIR=$dir
    echo "$$" >"$dir/owner"
    for ((i = 0; i < 40; i++)); do
        _pv_redis_answers "$url" && break
        sleep 0.25
    done
    if ! _pv_redis_answers "$url"; then
        tail -n 20 "$dir/redis.log" >&2 || true
        pv_die "private Redis does not answer on $url"
    fi
    PV_REDIS_URL=$url
    export PV_REDIS_URL
}

ensure_redis() {
    local url
    if [[ ${PV_FORCE_PRIVATE:-0} != 1 ]]; then
        if [[ -n ${REDIS_URL:-} ]]; then
            if _pv_redis_answers "$REDIS_URL"; then
                pv_log "Redis: using REDIS_URL"
                PV_REDIS_URL=$REDIS_URL
                export PV_REDIS_URL
                return 0
            fi
            pv_warn "REDIS_URL does not answer PING; looking elsewhere"
        fi
        url="redis://127.0.0.1:6379"
        if _pv_redis_answers "$url"; then
            pv_log "Redis: using 127.0.0.1:6379"
            PV_REDIS_URL=$url
            export PV_REDIS_URL
            return 0
        fi
    fi
    _pv_redis_start_private
}

_pv_redis_stop_private() {
    [[ ${PV_REDIS_STARTED:-0} == 1 ]] || return 0
    local dir=${_PV_REDIS_DIR:-$PV_ROOT/.local/redis} pid i
    pv_log "stopping private Redis"
    PV_REDIS_STARTED=0
    rm -f "$dir/owner"
    pid=$(cat "$dir/redis.pid" 2>/dev/null || true)
    [[ -n $pid ]] || {
        pv_warn "no pid file $dir/redis.pid"
        return 0
    }
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 40; i++)); do
        _pv_alive "$pid" || return 0
        sleep 0.25
    done
    kill -KILL "$pid" 2>/dev/null || true
}

stop_private_services() {
    _pv_redis_stop_private
    _pv_pg_stop_private
}

# ---------------------------------------------------------------------------
# cargo-nextest

ensure_nextest() {
    if cargo nextest --version >/dev/null 2>&1; then
        return 0
    fi
    pv_log "installing cargo-nextest (cargo install --locked)"
    cargo install cargo-nextest --locked
}

# ---------------------------------------------------------------------------
# headless browser (tests/it/browser: the operator console in Chromium)

# the major version a `--version` line names ("Chromium 156.0…", "ChromeDriver 156.0…")
_pv_major_version() {
    "$@" --version 2>/dev/null | sed -nE 's/^[^0-9]*([0-9]+)\..*/\1/p' | head -n1
}

ensure_browser() {
    local browser="" driver="" bv dv
    browser=$(command -v chromium || command -v chromium-browser || true)
    driver=$(command -v chromedriver || true)
    if [[ -z $browser || -z $driver ]]; then
        # Debian's packages come in step (chromedriver drives its own chromium version);
        # fonts-liberation so screenshots have the usual metric-compatible fonts, and
        # fonts-nanum for the Korean of customers' and products' names.
        (_pv_apt_install --no-install-recommends chromium chromium-driver fonts-liberation fonts-nanum) || {
            pv_warn "could not install chromium + chromium-driver: the browser tests will fail"
            return 1
        }
        browser=$(command -v chromium || command -v chromium-browser || true)
        driver=$(command -v chromedriver || true)
        if [[ -z $browser || -z $driver ]]; then
            pv_warn "chromium-driver installed, but chromium or chromedriver is not on PATH"
            return 1
        fi
    fi
    if [[ ! -d /usr/share/fonts/truetype/nanum ]]; then
        # Only the screenshots need it: a failure here fails no test.
        (_pv_apt_install --no-install-recommends fonts-nanum) ||
            pv_warn "could not install fonts-nanum: Korean shows as boxes in screenshots"
    fi
    bv=$(_pv_major_version "$browser")
    dv=$(_pv_major_version "$driver")
    if [[ -n $bv && -n $dv && $bv != "$dv" ]]; then
        pv_warn "chromium $bv and chromedriver $dv differ: chromedriver refuses other majors"
        return 1
    fi
}
