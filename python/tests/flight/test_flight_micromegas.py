"""The micromegas Python client (0.32.0) against `async-events serve`: answers compared with the
same SQL through the command line on the same lake."""

import os

import micromegas
import pyarrow
import pyarrow.flight
import pytest
from micromegas.auth import StaticTokenAuthProvider
from micromegas.flightsql.client import FlightSQLClient

from conftest import as_strings, cli_rows


def test_first_events_of_the_process(client, pid, window):
    sql = (
        f"SELECT span_id, event_type, name FROM view_instance('async_events', '{pid}') "
        "ORDER BY time, span_id, event_type LIMIT 10"
    )
    df = client.query(sql, *window)
    header, rows = cli_rows(sql)
    assert list(df.columns) == header
    assert len(df) == 10
    assert as_strings(df) == rows


def test_begin_events_per_stream(client, pid, window):
    sql = (
        f"SELECT stream_id, count(*) AS begins FROM view_instance('async_events', '{pid}') "
        "WHERE event_type = 'begin' GROUP BY stream_id ORDER BY stream_id"
    )
    df = client.query(sql, *window)
    _, rows = cli_rows(sql)
    assert len(df) >= 4  # the 4 workers, and the thread that ran the main task
    assert as_strings(df) == rows


def test_parent_and_child_spans(client, pid, window):
    sql = (
        "SELECT p.name AS parent, c.name AS child, count(*) AS n "
        f"FROM view_instance('async_events', '{pid}') c "
        f"JOIN view_instance('async_events', '{pid}') p ON c.parent_span_id = p.span_id "
        "WHERE c.event_type = 'begin' AND p.event_type = 'begin' "
        "GROUP BY p.name, c.name ORDER BY p.name, c.name"
    )
    df = client.query(sql, *window)
    _, rows = cli_rows(sql)
    assert as_strings(df) == rows
    pairs = set(zip(df["parent"], df["child"]))
    assert ("telemetry_generator::process_job", "telemetry_generator::commit") in pairs
    assert ("telemetry_generator::commit", "store.write_manifest") in pairs


def test_durations(client, pid, window):
    sql = (
        "SELECT b.name, b.stream_id AS began_on, e.stream_id AS ended_on, "
        "CAST(e.time - b.time AS BIGINT) AS duration_ns "
        f"FROM view_instance('async_events', '{pid}') b "
        f"JOIN view_instance('async_events', '{pid}') e ON b.span_id = e.span_id "
        "WHERE b.event_type = 'begin' AND e.event_type = 'end'"
    )
    df = client.query(sql, *window)
    _, rows = cli_rows(sql)
    assert len(df) == len(rows) > 1000
    assert (df["duration_ns"] > 0).all()
    moved = df[df["began_on"] != df["ended_on"]]
    assert len(moved) > 0, "no span ended on another thread than it began on"
    # Uploads slower than their deadline were dropped: begun, never ended.
    never = client.query(
        f"SELECT count(*) AS n FROM async_events('{pid}') b "
        f"LEFT JOIN async_events('{pid}') e ON b.span_id = e.span_id AND e.event_type = 'end' "
        "WHERE b.event_type = 'begin' AND b.name = 'telemetry_generator::upload' AND e.span_id IS NULL"
    )
    assert never["n"][0] > 0


def test_the_query_range_bounds_the_rows(client, pid):
    first = client.query(f"SELECT min(time) AS t0, max(time) AS t1 FROM async_events('{pid}')")
    t0, t1 = first["t0"][0], first["t1"][0]
    begin = t0 + (t1 - t0) / 4
    end = t0 + (t1 - t0) / 2
    sql = f"SELECT count(*) AS n FROM async_events('{pid}')"
    total = client.query(sql)["n"][0]
    bounded = client.query(sql, begin, end)["n"][0]
    _, rows = cli_rows(
        f"{sql} WHERE time BETWEEN '{begin.isoformat()}' AND '{end.isoformat()}'"
    )
    assert 0 < bounded < total
    assert bounded == int(rows[0][0])
    # Rows come back inside the range only.
    df = client.query(f"SELECT time FROM async_events('{pid}')", begin, end)
    assert len(df) == bounded
    assert df["time"].min() >= begin and df["time"].max() <= end


def test_async_events_directly(client, pid):
    sql = f"SELECT count(*) AS n, count(DISTINCT name) AS names FROM async_events('{pid}')"
    df = client.query(sql)
    _, rows = cli_rows(sql)
    assert as_strings(df) == rows
    assert df["names"][0] >= 8


def test_an_unknown_process_is_not_found(client):
    unknown = "00000000-0000-4000-8000-000000000001"
    # NotFound arrives as pyarrow's ArrowKeyError.
    with pytest.raises(pyarrow.lib.ArrowKeyError, match=f"process {unknown} is not in the lake"):
        client.query(f"SELECT * FROM async_events('{unknown}')")


def test_dictionaries_preserved_only_on_request(uri, pid):
    sql = (
        f"SELECT name, event_type FROM async_events('{pid}') "
        "ORDER BY time, span_id, event_type LIMIT 100"
    )
    plain = micromegas.connect(uri).query_arrow(sql)
    kept = micromegas.connect(uri, preserve_dictionary=True).query_arrow(sql)
    assert plain.schema.field("name").type == pyarrow.string()
    assert pyarrow.types.is_dictionary(kept.schema.field("name").type)
    assert plain.num_rows == kept.num_rows == 100
    assert plain["name"].to_pylist() == kept["name"].to_pylist()


def test_a_million_rows_stream_through(client, pid):
    events = client.query(f"SELECT count(*) AS n FROM async_events('{pid}')")["n"][0]
    copies = -(-1_000_000 // int(events))  # ceil
    sql = (
        f"SELECT e.span_id, e.time, g.value FROM async_events('{pid}') e "
        f"CROSS JOIN generate_series(1, {copies}) g"
    )
    rows = 0
    batches = 0
    span_sum = 0
    for batch in client.query_stream(sql):
        rows += batch.num_rows
        batches += 1
        span_sum += pyarrow.compute.sum(batch["span_id"]).as_py() or 0
    assert rows == events * copies >= 1_000_000
    assert batches > 10  # streamed, batch by batch
    _, expected = cli_rows(
        f"SELECT count(*), sum(e.span_id) FROM async_events('{pid}') e "
        f"CROSS JOIN generate_series(1, {copies}) g"
    )
    assert [str(rows), str(span_sum)] == expected[0]


def test_prepared_statements(client, pid):
    sql = f"SELECT time, name FROM async_events('{pid}') ORDER BY time LIMIT 5"
    statement = client.prepare_statement(sql)
    assert statement.query == sql
    assert statement.dataset_schema.names == ["time", "name"]
    batches = list(client.prepared_statement_stream(statement))
    assert sum(b.num_rows for b in batches) == 5


def test_metadata_helpers(client, pid, window):
    process = client.find_process(pid)
    assert len(process) == 1
    assert "generator" in process["exe"][0]
    streams = client.query_streams(*window, 100, process_id=pid)
    cpu = client.query_streams(*window, 100, process_id=pid, tag_filter="cpu")
    assert 4 <= len(cpu) <= len(streams)
    stream_id = cpu["stream_id"][0]
    blocks = client.query_blocks(*window, 1000, stream_id)
    _, rows = cli_rows(f"SELECT count(*) FROM blocks WHERE stream_id = '{stream_id}'")
    assert len(blocks) == int(rows[0][0]) >= 1
    assert (blocks["stream_id"] == stream_id).all()


def test_the_token_is_enforced(pid):
    uri = os.environ["ASYNC_EVENTS_FLIGHT_TOKEN_URI"]
    with open(os.environ["ASYNC_EVENTS_TOKEN_FILE"]) as f:
        token = f.read().strip()
    sql = f"SELECT count(*) AS n FROM async_events('{pid}')"
    with pytest.raises(pyarrow.flight.FlightUnauthenticatedError, match="authorization"):
        micromegas.connect(uri).query(sql)
    wrong = FlightSQLClient(uri, auth_provider=StaticTokenAuthProvider(token + "x"))
    with pytest.raises(pyarrow.flight.FlightUnauthenticatedError):
        wrong.query(sql)
    right = FlightSQLClient(uri, auth_provider=StaticTokenAuthProvider(token))
    assert right.query(sql)["n"][0] > 0


def test_thread_spans_view_instance(client, pid, window):
    streams = client.query(
        f"SELECT stream_id FROM thread_streams('{pid}') ORDER BY stream_id", *window
    )
    assert len(streams) >= 2
    seen = 0
    for sid in streams["stream_id"]:
        sql = (
            f"SELECT id, parent, depth, name, duration FROM view_instance('thread_spans', '{sid}') "
            "ORDER BY id"
        )
        df = client.query(sql, *window)
        header, rows = cli_rows(sql)
        assert list(df.columns) == header
        assert as_strings(df) == rows
        seen += int((df["name"] == "hash.finish").sum())
    # One hash_block (with its hash.finish scope) per compressed chunk, on some worker.
    chunks = client.query(
        f"SELECT count(*) AS n FROM async_spans('{pid}') WHERE name LIKE '%::compress'", *window
    )
    assert seen == int(chunks["n"][0]) > 0


def test_process_spans_both(client, pid, window):
    sql = (
        f"SELECT thread_name, count(*) AS spans FROM process_spans('{pid}', 'both') "
        "GROUP BY thread_name ORDER BY thread_name"
    )
    df = client.query(sql, *window)
    header, rows = cli_rows(sql)
    assert as_strings(df) == rows
    assert "async" in list(df["thread_name"])


def test_write_process_trace_with_its_default_span_types(client, pid, window, tmp_path):
    """micromegas's Perfetto helper with its default, span_types='both'."""
    import micromegas.perfetto

    path = tmp_path / "trace.pftrace"
    micromegas.perfetto.write_process_trace(client, pid, window[0], window[1], str(path))
    data = path.read_bytes()
    sql = (
        f"SELECT chunk_id, chunk_data FROM perfetto_trace_chunks('{pid}', 'both', "
        f"TIMESTAMP '{window[0].isoformat()}', TIMESTAMP '{window[1].isoformat()}') ORDER BY chunk_id"
    )
    header, rows = cli_rows(sql)
    assert data == b"".join(bytes.fromhex(r[1]) for r in rows)
    assert b"scopes" in data and b"hash_block" in data
