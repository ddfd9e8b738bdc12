#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for the test suite and print where it is.
#
#   eval "$(bash .ci/postgres.sh)"          # start (or reuse) it; exports FLEET_TEST_PG_URL
#   bash .ci/postgres.sh stop               # stop it and delete its files
#
# stdout carries exactly one line, `export FLEET_TEST_PG_URL=...`, and nothing else; progress
# and errors go to stderr. Any failure prints its reason to stderr and exits non-zero.
# NB: a bare `eval "$(bash .ci/postgres.sh)"` succeeds even when the script fails (eval of
# empty output is true), so in a `set -e` script capture it first, which does fail:
#   pg_env="$(bash .ci/postgres.sh)"; eval "$pg_env"
#
# Installs the PostgreSQL server with apt when it is missing (needs root), initialises a
# cluster owned by the `postgres` user (root cannot run postgres) in $FLEET_PG_DIR (default
# /tmp/fleetbridge-ci-pg), starts it on a free 127.0.0.1 port with trust authentication and
# fsync off, and creates the database `fleet_test`. Running it again reuses a server that is
# still up, so it is idempotent; a dead or half-made one is wiped and made afresh.

set -Eeuo pipefail

DIR="${FLEET_PG_DIR:-/tmp/fleetbridge-ci-pg}"
DATA="$DIR/data"
LOG="$DIR/server.log"
PORT_FILE="$DIR/port"
DB_NAME="fleet_test"
SUPERUSER="postgres"

say() { echo "postgres.sh: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}
trap 'die "command failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

# --- who runs the server -----------------------------------------------------------------
if [[ $EUID -eq 0 ]]; then
    as_owner() { runuser -u postgres -- "$@"; }
else
    as_owner() { "$@"; }
fi

# --- the server binaries -------------------------------------------------------------------
find_bindir() {
    local dir best=""
    # Debian/Ubuntu keep the server out of PATH, under /usr/lib/postgresql/<major>/bin.
    for dir in /usr/lib/postgresql/*/bin; do
        [[ -x "$dir/initdb" && -x "$dir/postgres" && -x "$dir/pg_ctl" ]] || continue
        if [[ -z "$best" ]] || (($(basename "$(dirname "$dir")") > $(basename "$(dirname "$best")"))); then
            best="$dir"
        fi
    done
    if [[ -z "$best" ]] && command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
        best="$(dirname "$(command -v initdb)")"
    fi
    [[ -n "$best" ]] && echo "$best"
}

install_server() {
    [[ $EUID -eq 0 ]] || die "PostgreSQL server not found and not root, so cannot apt-get install it"
    command -v apt-get >/dev/null || die "PostgreSQL server not found and apt-get is not available"
    say "installing PostgreSQL server with apt-get (quiet)..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null 2>"$DIR/apt.err" ||
        {
            cat "$DIR/apt.err" >&2
            die "apt-get install postgresql failed"
        }
}

stop_server() {
    local bindir
    if [[ -f "$DATA/postmaster.pid" ]] && bindir="$(find_bindir)"; then
        as_owner "$bindir/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
}

if [[ "${1:-}" == "stop" ]]; then
    trap - ERR
    stop_server
    rm -rf "$DIR"
    say "stopped and removed $DIR"
    exit 0
fi
[[ $# -eq 0 ]] || die "usage: $0 [stop]"

mkdir -p "$DIR"
BINDIR="$(find_bindir)" || {
    install_server
    BINDIR="$(find_bindir)" ||
        die "apt-get install postgresql succeeded but no initdb/postgres/pg_ctl under /usr/lib/postgresql/*/bin"
}
if [[ $EUID -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || die "no 'postgres' user to own the cluster (root cannot run postgres)"
    chown postgres: "$DIR"
fi
cd "$DIR" # the server user must be able to stat its working directory

psql_admin() {
    "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U "$SUPERUSER" \
        -d postgres "$@"
}

create_db_and_print() {
    local exists
    exists="$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" ||
        die "cannot connect to the server on 127.0.0.1:$PORT (see $LOG)"
    if [[ "$exists" != "1" ]]; then
        psql_admin -c "CREATE DATABASE $DB_NAME" || die "CREATE DATABASE $DB_NAME failed"
    fi
    echo "export FLEET_TEST_PG_URL=postgresql+asyncpg://$SUPERUSER@127.0.0.1:$PORT/$DB_NAME"
}

# --- reuse a server that is already up -----------------------------------------------------
if [[ -f "$PORT_FILE" && -f "$DATA/postmaster.pid" ]]; then
    PORT="$(cat "$PORT_FILE")"
    if "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PORT" -U "$SUPERUSER" -t 2; then
        say "reusing the server already running on 127.0.0.1:$PORT ($DATA)"
        create_db_and_print
        exit 0
    fi
fi

# --- otherwise make a fresh one ------------------------------------------------------------
stop_server
rm -rf "$DATA" "$PORT_FILE" "$LOG"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null ||
        echo $((20000 + RANDOM % 20000))
}

say "initdb with $BINDIR ..."
as_owner "$BINDIR/initdb" -D "$DATA" -U "$SUPERUSER" --auth=trust --no-locale -E UTF8 \
    --no-sync >"$DIR/initdb.log" 2>&1 ||
    {
        cat "$DIR/initdb.log" >&2
        die "initdb failed"
    }
cat >>"$DATA/postgresql.conf" <<EOF

# fleetbridge CI: a throwaway server, speed over durability
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 100
EOF

started=""
for _attempt in 1 2 3; do
    PORT="$(free_port)"
    if as_owner "$BINDIR/pg_ctl" -D "$DATA" -l "$LOG" -o "-p $PORT" -w -t 60 start >/dev/null; then
        started=1
        break
    fi
    say "start on port $PORT failed; server log:"
    tail -n 20 "$LOG" >&2 || true
done
[[ -n "$started" ]] || die "postgres would not start (log: $LOG)"
echo "$PORT" >"$PORT_FILE"
say "$("$BINDIR/postgres" -V) on 127.0.0.1:$PORT, data in $DATA"
create_db_and_print

