#!/usr/bin/env bash
# Runs the whole test suite. The PostgreSQL tests use the server in ASYNC_EVENTS_TEST_POSTGRES
# (a postgres:// URL of a user allowed to create databases); without it, a throwaway server is
# started from the machine's PostgreSQL binaries and stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${ASYNC_EVENTS_TEST_POSTGRES:-}" ]; then
  eval "$(scripts/pg-server.sh start)"
  trap 'scripts/pg-server.sh stop "$PG_DIR"' EXIT
fi
# The library as users get it (DataFusion without its default features; `recorder` only adds
# the producer the fixtures are converted with): its unit tests and every test of the library's
# own surface (SQL, pushdown, spans, errors, lakes, format, the predicate fixes).
cargo test --features recorder "$@"
# Every feature the tests cover, in one build (Ballista turns on DataFusion's default features:
# building the CLI for the Python tests with the same set reuses it).
export ASYNC_EVENTS_TEST_FEATURES="${ASYNC_EVENTS_TEST_FEATURES:-server,distributed,ballista}"
cargo test --features "$ASYNC_EVENTS_TEST_FEATURES" "$@"
# Answers compared with micromegas's own DataFusion extensions (compat/, a workspace member).
cargo test -p datafusion-async-events-compat "$@"
# The Flight SQL server with the micromegas Python client (a virtual environment, pip).
scripts/python-tests.sh
