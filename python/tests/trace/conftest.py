"""Fixtures for the Perfetto trace tests: the lake recorded by scripts/python-tests.sh (through
the exported MICROMEGAS_* variables), the command line (ASYNC_EVENTS_CLI) to make traces and to
run SQL on that lake, and a summary of what was compared, printed at the end of the run."""

import json
import os
import subprocess
from datetime import datetime, timezone

import pytest

# Lines for the terminal summary: what each check compared, by count.
COUNTS = []


def pytest_terminal_summary(terminalreporter):
    if COUNTS:
        terminalreporter.section("Perfetto trace checks")
        for line in COUNTS:
            terminalreporter.write_line(line)


def _env(name):
    value = os.environ.get(name)
    if not value:
        pytest.exit(f"{name} is not set: run these tests with scripts/python-tests.sh", 2)
    return value


def cli(*args):
    """Runs the command line on the lake of the environment; its standard output."""
    _env("MICROMEGAS_SQL_CONNECTION_STRING")
    _env("MICROMEGAS_OBJECT_STORE_URI")
    out = subprocess.run(
        [_env("ASYNC_EVENTS_CLI"), *args], check=True, capture_output=True, text=True
    )
    return out.stdout


def sql(query):
    """The rows of `query` as dicts (`--format json`: JSON Lines, NULL columns left out)."""
    return [json.loads(line) for line in cli("sql", "--format", "json", query).splitlines()]


def rfc3339(ns):
    """Nanoseconds since the Unix epoch as RFC 3339 with nine decimals."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    day_time = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{day_time}.{fraction:09d}Z"


@pytest.fixture(scope="session")
def pid():
    rows = sql(
        "SELECT process_id FROM processes WHERE exe LIKE '%generator%' "
        "ORDER BY start_time DESC LIMIT 1"
    )
    assert len(rows) == 1, rows
    return rows[0]["process_id"]


@pytest.fixture(scope="session")
def middle(pid):
    """The middle third of the recording's spans, in ns and as RFC 3339."""
    (row,) = sql(
        'SELECT CAST(min(begin) AS BIGINT) AS lo, CAST(max("end") AS BIGINT) AS hi '
        f"FROM async_spans('{pid}')"
    )
    lo, hi = row["lo"], row["hi"]
    begin, end = lo + (hi - lo) // 3, lo + 2 * (hi - lo) // 3
    return begin, end, rfc3339(begin), rfc3339(end)
