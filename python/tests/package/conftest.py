"""Fixtures for the package tests: an embedded lake in a temporary folder holding the demo
service recorded through the module (`Lake.record_demo`), a session with the package's functions
registered, and the same SQL through the command line (`async-events sql --format csv`) on the
same lake, to compare answers with. Run by scripts/python-tests.sh, which builds and installs
the package and the command line."""

import csv
import io
import os
import subprocess

import pytest
from datafusion import SessionContext

import datafusion_async_events as ae


@pytest.fixture(scope="session")
def lake_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("lake")


@pytest.fixture(scope="session")
def lake(lake_dir):
    return ae.Lake.embedded(str(lake_dir), writable=True)


@pytest.fixture(scope="session")
def pid(lake):
    # Recorded once: micromegas's tracing dispatch is process-wide.
    return lake.record_demo(20)


@pytest.fixture()
def ctx(lake):
    ctx = SessionContext()
    ae.register(ctx, lake)
    return ctx


@pytest.fixture(scope="session")
def cli(lake_dir):
    """Runs `sql` through `async-events sql --format csv` on the same lake: a header and lists
    of strings."""
    binary = os.environ.get("ASYNC_EVENTS_CLI")
    if not binary:
        pytest.exit("ASYNC_EVENTS_CLI is not set: run these tests with scripts/python-tests.sh", 2)

    def run(sql):
        out = subprocess.run(
            [binary, "--db", f"sqlite://{lake_dir}/telemetry.db", "--store", f"file://{lake_dir}/",
             "sql", "--format", "csv", sql],
            check=True,
            capture_output=True,
            text=True,
        )
        rows = list(csv.reader(io.StringIO(out.stdout)))
        return rows[0], rows[1:]

    return run


def rows(ctx, sql):
    """The rows of `sql` in datafusion-python, as lists of strings like the CLI's csv."""
    table = ctx.sql(sql).to_arrow_table()
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return table.column_names, [
        ["" if v is None else str(v) for v in row] for row in zip(*columns)
    ]
