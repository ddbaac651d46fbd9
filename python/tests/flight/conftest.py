"""Fixtures for the Flight SQL tests: a running `async-events serve` (started by
scripts/python-tests.sh), the micromegas client, and the same SQL through the command line
(`async-events sql --format csv`) on the same lake, to compare answers with."""

import csv
import io
import os
import subprocess
from datetime import datetime, timedelta, timezone

import micromegas
import pytest


def _env(name):
    value = os.environ.get(name)
    if not value:
        pytest.exit(f"{name} is not set: run these tests with scripts/python-tests.sh", 2)
    return value


@pytest.fixture(scope="session")
def uri():
    return _env("ASYNC_EVENTS_FLIGHT_URI")


@pytest.fixture(scope="session")
def client(uri):
    return micromegas.connect(uri)


@pytest.fixture(scope="session")
def pid(client):
    df = client.query(
        "SELECT process_id FROM processes WHERE exe LIKE '%generator%' "
        "ORDER BY start_time DESC LIMIT 1"
    )
    assert len(df) == 1, df
    return df["process_id"][0]


@pytest.fixture(scope="session")
def window():
    """A range holding the whole recording (it ran minutes ago at most)."""
    now = datetime.now(timezone.utc)
    return now - timedelta(days=1), now + timedelta(hours=1)


def cli_rows(sql):
    """The rows of `sql` through `async-events sql --format csv` on the same lake: a header
    and lists of strings."""
    out = subprocess.run(
        [_env("ASYNC_EVENTS_CLI"), "sql", "--format", "csv", sql],
        check=True,
        capture_output=True,
        text=True,
    )
    csv.field_size_limit(1 << 30)  # Perfetto chunks are long hex fields
    rows = list(csv.reader(io.StringIO(out.stdout)))
    return rows[0], rows[1:]


def as_strings(df):
    """A DataFrame's rows as lists of strings, like the CSV of the command line."""
    return [[str(v) for v in row] for row in df.itertuples(index=False)]
