#!/usr/bin/env bash
# The Python tests, in a virtual environment with the pinned packages of python/tests/*/
# requirements*.txt:
# 1. the Python package (python/, a datafusion-python plugin): builds its wheel with maturin
#    (dev profile, the shared cargo target folder), installs it, and runs
#    python/tests/package (which compares answers with `async-events sql` and installs the
#    wheel into a fresh environment holding only datafusion);
# 2. the Flight SQL server with the real micromegas Python client: records the telemetry
#    generator into a temporary embedded lake, starts `async-events serve` (and a second
#    instance that requires a bearer token) on free loopback ports, runs python/tests/flight,
#    and stops the servers;
# 3. the Perfetto traces of the command line on that lake, parsed with Perfetto's own
#    definitions (python/tests/trace), in a second environment (they need protobuf 6).
# Arguments are passed to the three pytest runs.
#
# ASYNC_EVENTS_VENV: the environment's folder (default /var/tmp/async-events-venv);
# ASYNC_EVENTS_TRACE_VENV: the second one's (default /var/tmp/async-events-trace-venv).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/datafusion-async-events-target}"
VENV="${ASYNC_EVENTS_VENV:-/var/tmp/async-events-venv}"

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check \
  -r python/tests/flight/requirements-flight.txt -r python/tests/package/requirements.txt

# One build for both (the same features, so neither overwrites the other).
cargo build -q --features "${ASYNC_EVENTS_TEST_FEATURES:-server}" --bin async-events --example telemetry_generator
BIN="$CARGO_TARGET_DIR/debug/async-events"
GENERATOR="$CARGO_TARGET_DIR/debug/examples/telemetry_generator"

WORK=$(mktemp -d /tmp/async-events-pytest.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# The package's Rust unit tests (its FFI guards: panics become errors, drops happen inside its
# runtime), then a dev-profile wheel (the release profile is for publishing), installed over any
# previous build.
cargo test -q -p datafusion-async-events-python
"$VENV/bin/maturin" build --quiet --profile dev -m python/Cargo.toml -i "$VENV/bin/python" \
  --out "$WORK/dist"
WHEEL=$(ls "$WORK"/dist/datafusion_async_events-*.whl)
"$VENV/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps "$WHEEL"
(cd "$ROOT/python/tests/package" && ASYNC_EVENTS_CLI="$BIN" ASYNC_EVENTS_WHEEL="$WHEEL" \
  "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@" .)

# The lake, as micromegas's services name it: every process below reads the same one.
mkdir -p "$WORK/lake"
export MICROMEGAS_SQL_CONNECTION_STRING="sqlite://$WORK/lake/telemetry.db"
export MICROMEGAS_OBJECT_STORE_URI="file://$WORK/lake/"
"$GENERATOR" 600 | tail -2

# Starts a server on a free port (in this shell, so that cleanup knows its process id) and
# waits for the grpc:// address it prints into its log.
serve() {
  local log="$1"; shift
  "$BIN" serve --addr 127.0.0.1:0 "$@" >"$log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 100); do
    if grep -q "over Flight SQL on" "$log"; then return 0; fi
    sleep 0.1
  done
  echo "the server did not start:" >&2; cat "$log" >&2; return 1
}
address() { grep -o 'grpc://[0-9.:]*' "$1"; }

export ASYNC_EVENTS_TOKEN_FILE="$WORK/token"
# The server refuses a token file others can read.
(umask 077 && : >"$ASYNC_EVENTS_TOKEN_FILE")
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$ASYNC_EVENTS_TOKEN_FILE"
serve "$WORK/server.log"
serve "$WORK/server-token.log" --token-file "$ASYNC_EVENTS_TOKEN_FILE"
ASYNC_EVENTS_FLIGHT_URI=$(address "$WORK/server.log")
ASYNC_EVENTS_FLIGHT_TOKEN_URI=$(address "$WORK/server-token.log")
export ASYNC_EVENTS_FLIGHT_URI ASYNC_EVENTS_FLIGHT_TOKEN_URI
export ASYNC_EVENTS_CLI="$BIN"

cd "$ROOT/python/tests/flight"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@" .

# 3. The Perfetto traces, read with Perfetto's own definitions (python/tests/trace): an
# environment of their own, as perfetto's generated code needs protobuf 6 and micromegas pins
# protobuf 5. The same lake, through the exported MICROMEGAS_* variables and ASYNC_EVENTS_CLI.
TRACE_VENV="${ASYNC_EVENTS_TRACE_VENV:-/var/tmp/async-events-trace-venv}"
if [ ! -x "$TRACE_VENV/bin/python" ]; then
  python3 -m venv "$TRACE_VENV"
fi
"$TRACE_VENV/bin/pip" install -q --disable-pip-version-check \
  -r "$ROOT/python/tests/trace/requirements-trace.txt"
cd "$ROOT/python/tests/trace"
"$TRACE_VENV/bin/python" -m pytest -q -p no:cacheprovider "$@" .
