"""What micromegas's own Python integration tests (python/micromegas/tests in its repository:
test_jsonb, test_blocks, test_processes, test_queries) exercise, through the micromegas client
0.32.0 against `async-events serve`, with our own workload and asserts: the JSONB functions on
literals, the property functions on the metadata tables, and thread spans. Answers are compared
with the same SQL through the command line where they are data."""

from conftest import as_strings, cli_rows


def one(client, sql):
    df = client.query(sql)
    assert len(df) == 1, df
    return df.iloc[0, 0]


def test_jsonb_parse_writes_micromegas_bytes(client):
    # JSONB (databend's encoding, as micromegas stores properties) of {"name": "value"}: an
    # object header, one key entry, one string value entry, then the key and value bytes.
    got = one(client, """SELECT jsonb_parse('{ "name" : "value" }') AS j""")
    assert got == b"@\x00\x00\x01\x10\x00\x00\x04\x10\x00\x00\x05namevalue"
    assert one(client, "SELECT jsonb_parse('{ not json... }') AS j") is None


def test_jsonb_accessors(client):
    parse = """jsonb_parse('{ "name" : "value", "f" : 2.3, "i" : 321321321321 }')"""
    # JSONB objects keep their keys sorted.
    assert one(client, f"SELECT jsonb_format_json({parse}) AS s") == (
        '{"f":2.3,"i":321321321321,"name":"value"}'
    )
    assert one(client, f"SELECT jsonb_format_json(jsonb_get({parse}, 'name')) AS s") == '"value"'
    assert one(client, f"SELECT jsonb_as_string(jsonb_get({parse}, 'name')) AS s") == "value"
    assert one(client, f"SELECT jsonb_as_f64(jsonb_get({parse}, 'f')) AS s") == 2.3
    assert one(client, f"SELECT jsonb_as_i64(jsonb_get({parse}, 'i')) AS s") == 321321321321
    assert one(client, "SELECT jsonb_format_json(jsonb_parse('{ test }')) AS s") is None


def test_property_functions_on_blocks(client, pid):
    sql = (
        "SELECT block_id, property_get(\"streams.properties\", 'thread-name') AS thread, "
        "property_get(\"processes.properties\", 'build-version') AS build, "
        "properties_length(\"processes.properties\") AS n, "
        "jsonb_format_json(properties_to_jsonb(\"streams.properties\")) AS j "
        f"FROM blocks WHERE process_id = '{pid}' AND array_has(\"streams.tags\", 'cpu') "
        "ORDER BY block_id"
    )
    df = client.query(sql)
    header, rows = cli_rows(sql)
    assert list(df.columns) == header
    assert as_strings(df) == rows
    assert len(df) > 0
    assert set(df["build"]) == {"generator-7"}
    assert set(df["n"]) == {2}
    assert all('"thread-name":"tokio-rt-worker"' in j for j in df["j"])


def test_property_functions_on_processes(client, pid):
    sql = (
        "SELECT property_get(properties, 'version') AS version, "
        "property_get(properties, 'build-version') AS build, "
        "property_get(properties, 'missing') AS missing, properties_length(properties) AS n "
        f"FROM processes WHERE process_id = '{pid}' AND properties_length(properties) > 0"
    )
    df = client.query(sql)
    assert as_strings(df) == [["1.2.3", "generator-7", "None", "2"]]


def test_thread_spans_of_the_cpu_streams(client, pid):
    """micromegas's test_spans: a cpu stream of the process, then its thread_spans view."""
    streams = client.query(
        f"SELECT stream_id FROM blocks WHERE process_id = '{pid}' "
        "AND array_has(\"streams.tags\", 'cpu') GROUP BY stream_id ORDER BY stream_id"
    )
    assert len(streams) >= 2
    sid = streams["stream_id"][0]
    sql = (
        f"SELECT name, depth, count(*) AS n FROM view_instance('thread_spans', '{sid}') "
        "GROUP BY name, depth ORDER BY depth, name"
    )
    df = client.query(sql)
    header, rows = cli_rows(sql)
    assert as_strings(df) == rows
    assert list(df["depth"])[0] == 0, "the thread's root row"


def test_metadata_properties_have_micromegas_type(client, pid):
    """micromegas 0.33's properties: JSONB objects in a dictionary (what test_blocks checks)."""
    sql = (
        'SELECT arrow_typeof("streams.properties") AS s, arrow_typeof("processes.properties") AS p '
        f"FROM blocks WHERE process_id = '{pid}' LIMIT 1"
    )
    assert as_strings(client.query(sql)) == [["Dictionary(Int32, Binary)"] * 2]
    sql = f"SELECT arrow_typeof(properties) AS t FROM processes WHERE process_id = '{pid}'"
    assert as_strings(client.query(sql)) == [["Dictionary(Int32, Binary)"]]
