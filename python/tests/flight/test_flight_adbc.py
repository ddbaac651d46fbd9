"""The ADBC Flight SQL driver (adbc-driver-flightsql 1.13, the Go driver SQL tools, notebooks and
dataframe libraries use) against `async-events serve`: catalog browsing, server info, bound
parameters of each type, DB-API errors, pandas and polars. Answers are compared with the same
SQL, parameters written as literals, through the command line on the same lake."""

import datetime
import subprocess

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager.dbapi as dbapi
import polars
import pyarrow
import pytest

from conftest import _env, as_strings, cli_rows

UTC = datetime.timezone.utc


@pytest.fixture(scope="module")
def conn(uri):
    # The server has no transactions (GetSqlInfo says so): autocommit, as the driver then
    # does not warn that it cannot turn it off.
    with flightsql.connect(uri, autocommit=True) as conn:
        yield conn


def rows(conn, sql, parameters=None):
    with conn.cursor() as cur:
        cur.execute(sql, parameters=parameters)
        return [[str(v) for v in row] for row in cur.fetchall()]


def test_get_info_names_this_server(conn):
    info = conn.adbc_get_info()
    version = subprocess.run(
        [_env("ASYNC_EVENTS_CLI"), "--version"], check=True, capture_output=True, text=True
    ).stdout.split()[-1]
    assert info["vendor_name"] == "datafusion-async-events"
    assert info["vendor_version"] == version
    assert info["vendor_arrow_version"] == "59"


def test_get_objects_browses_catalog_schemas_tables_and_columns(conn):
    objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
    assert [c["catalog_name"] for c in objects] == ["datafusion"]
    schemas = {s["db_schema_name"]: s for s in objects[0]["catalog_db_schemas"]}
    assert set(schemas) == {"public"}
    tables = {t["table_name"]: t for t in schemas["public"]["db_schema_tables"]}
    assert set(tables) == {"processes", "streams", "blocks", "table_functions"}
    # Each table's columns, in order, are those a query of it returns.
    for name, table in tables.items():
        with conn.cursor() as cur:
            cur.execute(f"SELECT * FROM {name} LIMIT 0")
            queried = cur.fetch_arrow_table().schema.names
        listed = sorted(table["table_columns"], key=lambda c: c["ordinal_position"])
        assert [c["column_name"] for c in listed] == queried, name
    # Patterns filter on the server.
    filtered = conn.adbc_get_objects(depth="tables", table_name_filter="proc%").read_all()
    names = [
        t["table_name"]
        for c in filtered.to_pylist()
        for s in c["catalog_db_schemas"]
        for t in s["db_schema_tables"] or []
    ]
    assert names == ["processes"]


def test_get_table_schema_equals_a_querys_schema(conn):
    schema = conn.adbc_get_table_schema("processes")
    with conn.cursor() as cur:
        cur.execute("SELECT * FROM processes")
        queried = cur.fetch_arrow_table().schema
    assert schema.names == queried.names
    assert [f.type for f in schema] == [f.type for f in queried]


def test_get_table_types_cover_every_table(conn):
    types = conn.adbc_get_table_types()
    objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
    used = {
        t["table_type"]
        for c in objects
        for s in c["catalog_db_schemas"]
        for t in s["db_schema_tables"] or []
    }
    assert used and used <= set(types), (used, types)


def test_table_functions_are_listed_and_their_examples_run(conn, pid):
    listed = rows(conn, "SELECT function_name, example FROM table_functions")
    names = [name for name, _ in listed]
    assert {"async_events", "async_spans", "view_instance", "thread_streams"} <= set(names)
    for name, example in listed:
        assert rows(conn, example.replace("<process_id>", pid)), name


# Each parameter type, bound with `$n` and with `?`, against the SQL with the value written in.
# The values come from the recording, so that each filter keeps some rows and not all.
BOUND = {
    "int": "SELECT count(*) FROM async_events('{pid}') WHERE depth = {p}",
    "float": "SELECT count(*) FROM async_spans('{pid}') WHERE CAST(duration AS DOUBLE) > {p}",
    "string": "SELECT count(*) FROM async_events('{pid}') WHERE name = {p}",
    "bool": "SELECT count(*) FROM async_spans('{pid}') WHERE finished = {p}",
    "timestamp": "SELECT count(*) FROM async_events('{pid}') WHERE time >= {p}",
}


def value_and_literal(conn, pid, kind):
    """A value of `kind` from the recording, and the same value as an SQL literal."""
    if kind == "int":
        return 1, "1"
    if kind == "string":
        return "telemetry_generator::commit", "'telemetry_generator::commit'"
    if kind == "bool":
        return False, "false"
    with conn.cursor() as cur:
        if kind == "float":
            cur.execute(f"SELECT avg(CAST(duration AS DOUBLE)) FROM async_spans('{pid}')")
            (mean,) = cur.fetchone()
            return mean, repr(mean)
        cur.execute(f"SELECT min(time), max(time) FROM async_events('{pid}')")
        first, last = cur.fetchone()
    middle = first + (last - first) / 2
    # The driver binds microseconds (a pandas Timestamp's nanoseconds are dropped): take a value
    # it can bind exactly, so that the literal says the same instant.
    if hasattr(middle, "floor"):
        middle = middle.floor("us").to_pydatetime()
    return middle, f"TIMESTAMP '{middle.isoformat()}'"


@pytest.mark.parametrize("kind", BOUND)
@pytest.mark.parametrize("placeholder", ["$1", "?"])
def test_bound_parameters_equal_literals(conn, pid, kind, placeholder):
    template = BOUND[kind]
    value, literal = value_and_literal(conn, pid, kind)
    bound = rows(conn, template.format(pid=pid, p=placeholder), (value,))
    _, expected = cli_rows(template.format(pid=pid, p=literal))
    assert bound == expected
    # The filter keeps some rows but not all, or the comparison would prove little.
    _, everything = cli_rows(template.split(" WHERE ")[0].format(pid=pid))
    assert 0 < int(bound[0][0]) < int(everything[0][0]), (kind, bound, everything)


def test_table_function_arguments_can_be_parameters(conn, pid):
    """A dashboard's process variable: `async_events(?)`, bound when the query runs."""
    begin = datetime.datetime(2000, 1, 1, tzinfo=UTC)
    end = datetime.datetime.now(UTC) + datetime.timedelta(hours=1)
    got = rows(conn, "SELECT count(*) FROM async_spans(?, ?, ?) WHERE depth = ?",
               (pid, begin, end, 1))
    _, expected = cli_rows(f"SELECT count(*) FROM async_spans('{pid}') WHERE depth = 1")
    assert got == expected and int(got[0][0]) > 0


def test_several_parameters_bind_in_order(conn, pid):
    got = rows(
        conn,
        f"SELECT count(*) FROM async_events('{pid}') WHERE depth = ? AND name = ?",
        (2, "store.write_manifest"),
    )
    _, expected = cli_rows(
        f"SELECT count(*) FROM async_events('{pid}') "
        "WHERE depth = 2 AND name = 'store.write_manifest'"
    )
    assert got == expected and int(got[0][0]) > 0


@pytest.mark.parametrize(
    "sql,parameters,exception,message",
    [
        ("SELEC 1", None, dbapi.ProgrammingError, "INVALID_ARGUMENT"),
        ("SELECT * FROM no_such_table", None, dbapi.ProgrammingError, "not found"),
        ("SELECT count(*) FROM async_events('nope')", None, dbapi.ProgrammingError,
         "is not a process id"),
        ("SELECT count(*) FROM async_events('00000000-0000-0000-0000-000000000001')", None,
         dbapi.ProgrammingError, "NOT_FOUND"),
        ("SELECT $1 + $2", (1,), dbapi.ProgrammingError, "$2"),
        ("CREATE TABLE t AS SELECT 1", None, dbapi.ProgrammingError, "not supported"),
        ("COPY (SELECT 1) TO '/tmp/async-events-adbc.csv'", None, dbapi.ProgrammingError,
         "not supported"),
    ],
)
def test_errors_are_the_right_db_api_exceptions(conn, sql, parameters, exception, message):
    with conn.cursor() as cur:
        with pytest.raises(exception, match=message.replace("$", r"\$")):
            cur.execute(sql, parameters=parameters)
            cur.fetchall()


def test_writes_through_adbc_are_not_supported(conn):
    with conn.cursor() as cur:
        with pytest.raises(dbapi.NotSupportedError):
            cur.adbc_ingest("t", pyarrow.table({"a": [1]}))
        with pytest.raises(dbapi.NotSupportedError):
            cur.executemany("SELECT ? AS x", [(1,), (2,)])


def test_fetch_df_equals_the_command_line(conn, pid):
    sql = (
        f"SELECT name, count(*) AS n FROM async_events('{pid}') "
        "WHERE event_type = 'end' GROUP BY name ORDER BY name"
    )
    with conn.cursor() as cur:
        cur.execute(sql)
        df = cur.fetch_df()
    header, expected = cli_rows(sql)
    assert list(df.columns) == header
    assert as_strings(df) == expected and expected


def test_polars_read_database_over_adbc(conn, pid):
    sql = (
        f"SELECT span_id, name, depth FROM async_events('{pid}') "
        "WHERE event_type = 'begin' ORDER BY time, span_id LIMIT 50"
    )
    frame = polars.read_database(sql, conn)
    header, expected = cli_rows(sql)
    assert frame.columns == header
    assert [[str(v) for v in row] for row in frame.iter_rows()] == expected
    assert len(expected) == 50
