#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests, from the machine's PostgreSQL binaries (Debian
# package `postgresql`): data in a temporary folder, listening on 127.0.0.1 only.
#
#   eval "$(scripts/pg-server.sh start)"   # prints the exports: ASYNC_EVENTS_TEST_POSTGRES, PG_DIR
#   scripts/pg-server.sh stop "$PG_DIR"
set -euo pipefail

pg_bin() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$bin" ]; then
    echo "no PostgreSQL server binaries under /usr/lib/postgresql: apt-get install postgresql" >&2
    exit 1
  fi
  echo "$bin"
}

# PostgreSQL refuses to run as root: run its commands as the `postgres` user when we are root.
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

case "${1:-}" in
  start)
    bin=$(pg_bin)
    dir=$(mktemp -d /tmp/async-events-pg.XXXXXX)
    chmod 755 "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
    port=${PG_PORT:-$(free_port)}
    as_owner "$bin/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=300" \
      start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    echo "export ASYNC_EVENTS_TEST_POSTGRES=postgres://postgres@127.0.0.1:$port/postgres"
    echo "export PG_DIR=$dir"
    ;;
  stop)
    dir=${2:?usage: pg-server.sh stop DIR}
    as_owner "$(pg_bin)/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start | stop DIR" >&2
    exit 2
    ;;
esac
