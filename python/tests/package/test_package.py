"""The package in datafusion-python: the same answers as the command line on the same lake,
filter pushdown on the table path, and errors as Python exceptions (never a PanicException)."""

import datetime
import os
import re
import shutil
import subprocess
import sys

import datafusion
import pytest
from datafusion import SessionContext

import datafusion_async_events as ae
from conftest import rows

QUERIES = [
    "SELECT event_type, count(*) AS n FROM async_events('{pid}') GROUP BY event_type ORDER BY event_type",
    "SELECT name, depth, count(*) AS n FROM async_events('{pid}') WHERE event_type = 'begin' "
    "GROUP BY name, depth ORDER BY name, depth",
    "SELECT count(*) AS n FROM view_instance('async_events', '{pid}')",
    "SELECT t.thread_name, count(*) AS n FROM async_events('{pid}') e "
    "JOIN thread_streams('{pid}') t ON e.stream_id = t.stream_id "
    "GROUP BY t.thread_name ORDER BY t.thread_name",
    "SELECT name, count(*) AS spans, sum(CASE WHEN finished THEN 1 ELSE 0 END) AS finished, "
    "sum(CASE WHEN migrated THEN 1 ELSE 0 END) AS migrated "
    "FROM async_spans('{pid}') GROUP BY name ORDER BY name",
    "SELECT count(*) AS n FROM view_instance('async_spans', '{pid}') WHERE NOT finished",
    "SELECT count(*) AS n FROM processes WHERE process_id = '{pid}'",
    "SELECT name, property_get(properties, 'ROWS') AS r, properties_length(properties) AS n, "
    "jsonb_format_json(properties_to_jsonb(properties)) AS j FROM async_events('{pid}') "
    "WHERE event_type = 'end' AND properties_length(properties) > 0 ORDER BY name, r, j",
]


@pytest.mark.parametrize("sql", QUERIES)
def test_answers_equal_the_command_line(ctx, cli, pid, sql):
    sql = sql.format(pid=pid)
    header, expected = cli(sql)
    got_header, got = rows(ctx, sql)
    assert got_header == header
    assert got == expected
    assert got, "every query has rows on the demo recording"


def test_the_recording_has_what_the_tests_rely_on(ctx, pid):
    df = ctx.sql(
        f"SELECT count(*) AS spans, sum(CASE WHEN finished THEN 0 ELSE 1 END) AS unfinished, "
        f"sum(CASE WHEN migrated THEN 1 ELSE 0 END) AS migrated, count(DISTINCT begin_stream_id) AS threads "
        f"FROM async_spans('{pid}')"
    ).to_pydict()
    assert df["spans"][0] > 1000
    assert df["unfinished"][0] > 0  # recommendations dropped at their deadline
    assert df["migrated"][0] > 0
    assert df["threads"][0] >= 2


def _window(ctx, pid):
    """The middle third of the recording, as RFC 3339 strings and as ns."""
    t = ctx.sql(
        f"SELECT CAST(min(time) AS BIGINT) AS lo, CAST(max(time) AS BIGINT) AS hi "
        f"FROM async_events('{pid}')"
    ).to_pydict()
    lo, hi = t["lo"][0], t["hi"][0]
    third = (hi - lo) // 3
    return lo + third, hi - third


def _rfc3339(ns):
    seconds, rest = divmod(ns, 1_000_000_000)
    t = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{rest:09d}Z"


def test_begin_and_end_arguments_bound_the_scan(ctx, cli, pid):
    lo, hi = _window(ctx, pid)
    sql = (
        f"SELECT count(*) AS n, CAST(min(time) AS BIGINT) AS lo, CAST(max(time) AS BIGINT) AS hi "
        f"FROM async_events('{pid}', '{_rfc3339(lo)}', '{_rfc3339(hi)}')"
    )
    _, got = rows(ctx, sql)
    _, expected = cli(sql)
    assert got == expected
    n, first, last = (int(v) for v in got[0])
    assert 0 < n
    assert lo <= first and last <= hi
    total = ctx.sql(f"SELECT count(*) AS n FROM async_events('{pid}')").to_pydict()["n"][0]
    inside = ctx.sql(
        f"SELECT count(*) AS n FROM async_events('{pid}') "
        f"WHERE CAST(time AS BIGINT) BETWEEN {lo} AND {hi}"
    ).to_pydict()["n"][0]
    assert n == inside < total


@pytest.mark.parametrize(
    "bounds",
    [
        lambda lo, hi: (_rfc3339(lo), _rfc3339(hi)),
        lambda lo, hi: (lo, hi),
        lambda lo, hi: (
            datetime.datetime.fromtimestamp(lo // 1000 / 1e6, datetime.timezone.utc),
            datetime.datetime.fromtimestamp((hi // 1000 + 1) / 1e6, datetime.timezone.utc),
        ),
    ],
    ids=["rfc3339", "ns", "datetime"],
)
def test_table_bounds_in_python_types(ctx, lake, pid, bounds):
    lo, hi = _window(ctx, pid)
    begin, end = bounds(lo, hi)
    ctx.register_table("window", ae.AsyncEventsTable(lake, pid, begin=begin, end=end))
    got = ctx.sql("SELECT count(*) AS n FROM window").to_pydict()["n"][0]
    lo_us, hi_us = lo // 1000 * 1000, (hi // 1000 + 1) * 1000
    if isinstance(begin, datetime.datetime):
        lo, hi = lo_us, hi_us
    expected = ctx.sql(
        f"SELECT count(*) AS n FROM async_events('{pid}') "
        f"WHERE CAST(time AS BIGINT) BETWEEN {lo} AND {hi}"
    ).to_pydict()["n"][0]
    assert got == expected > 0


def test_naive_datetime_is_refused(lake, pid):
    with pytest.raises(ValueError, match="naive datetime"):
        ae.AsyncEventsTable(lake, pid, begin=datetime.datetime(2024, 1, 1), end=None)


def _explain(ctx, sql):
    table = ctx.sql("EXPLAIN " + sql).to_pydict()
    return dict(zip(table["plan_type"], table["plan"]))


def _scan_metrics(ctx, sql):
    """The counters of the scan's line in EXPLAIN ANALYZE (the FFI forwards the metrics)."""
    plan = "\n".join(ctx.sql("EXPLAIN ANALYZE " + sql).to_pydict()["plan"])
    line = next(l for l in plan.splitlines() if "FFI_ExecutionPlan: AsyncEventsExec" in l)
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)\b", line.split("metrics=")[1])}


def test_table_pushes_filters_into_the_scan(ctx, lake, pid):
    lo, hi = _window(ctx, pid)
    ctx.register_table("events", ae.AsyncEventsTable(lake, pid))
    where = (
        f"WHERE time >= to_timestamp_nanos({lo}) AND time <= to_timestamp_nanos({hi}) "
        f"AND event_type = 'begin'"
    )
    sql = f"SELECT name, count(*) AS n FROM events {where} GROUP BY name ORDER BY name"
    plans = _explain(ctx, sql)
    pushed = re.search(r"full_filters=\[(.*)\]", plans["logical_plan"])
    assert pushed, plans["logical_plan"]
    assert "events.event_type = " in pushed.group(1) and '"begin"' in pushed.group(1)
    assert "events.time >= " in pushed.group(1)
    assert "FilterExec" not in plans["physical_plan"]
    assert "FFI_ExecutionPlan: AsyncEventsExec" in plans["physical_plan"]
    # Same answer as the table function, whose WHERE runs above the scan (no pushdown through
    # the FFI for table functions).
    udtf_sql = f"SELECT name, count(*) AS n FROM async_events('{pid}') {where} GROUP BY name ORDER BY name"
    assert "FilterExec" in _explain(ctx, udtf_sql)["physical_plan"]
    assert ctx.sql(sql).to_pydict() == ctx.sql(udtf_sql).to_pydict()
    # The pushed time range prunes blocks: the scan lists fewer blocks than the full scan.
    pushed = _scan_metrics(ctx, sql)
    full = _scan_metrics(ctx, udtf_sql)
    assert pushed["blocks_listed"] + pushed["blocks_pruned"] < full["blocks_listed"] + full["blocks_pruned"] or (
        pushed["blocks_fetched"] < full["blocks_fetched"]
    ), (pushed, full)
    assert pushed["events_decoded"] < full["events_decoded"]


def test_spans_table_and_thread_streams_table(ctx, lake, pid):
    ctx.register_table("spans", ae.AsyncSpansTable(lake, pid))
    ctx.register_table("threads", ae.ThreadStreamsTable(lake, pid))
    got = ctx.sql(
        "SELECT t.thread_name, count(*) AS n FROM spans s JOIN threads t "
        "ON s.begin_stream_id = t.stream_id GROUP BY t.thread_name ORDER BY t.thread_name"
    ).to_pydict()
    expected = ctx.sql(
        f"SELECT t.thread_name, count(*) AS n FROM async_spans('{pid}') s "
        f"JOIN thread_streams('{pid}') t ON s.begin_stream_id = t.stream_id "
        f"GROUP BY t.thread_name ORDER BY t.thread_name"
    ).to_pydict()
    assert got == expected and sum(got["n"]) > 0
    slow = ctx.sql("SELECT name FROM spans WHERE finished ORDER BY duration DESC LIMIT 1").to_pydict()
    assert slow["name"]


def test_table_functions_lists_each_registered_function(ctx, pid):
    listed = ctx.sql("SELECT function_name, example FROM table_functions").to_pydict()
    assert "async_events" in listed["function_name"], listed
    # Each listed function is one the session can call: its example runs.
    for name, example in zip(listed["function_name"], listed["example"]):
        rows = ctx.sql(example.replace("<process_id>", str(pid))).to_pydict()
        assert any(len(v) for v in rows.values()), (name, example)


def test_results_arrive_as_arrow_and_pandas(ctx, pid):
    table = ctx.sql(f"SELECT * FROM async_events('{pid}') LIMIT 5").to_arrow_table()
    assert str(table.schema.field("time").type) == "timestamp[ns, tz=+00:00]"
    frame = ctx.sql(f"SELECT name, duration FROM async_spans('{pid}') WHERE finished").to_pandas()
    assert len(frame) > 0 and str(frame["duration"].dtype).startswith("timedelta64")


UNKNOWN = "00000000-0000-4000-8000-000000000001"


def test_unknown_process_is_an_exception_naming_it(ctx, lake):
    with pytest.raises(Exception, match=f"process {UNKNOWN} is not in the lake"):
        ctx.sql(f"SELECT count(*) FROM async_events('{UNKNOWN}')").collect()
    ctx.register_table("nothing", ae.AsyncEventsTable(lake, UNKNOWN))
    with pytest.raises(Exception, match=f"process {UNKNOWN} is not in the lake"):
        ctx.sql("SELECT count(*) FROM nothing").collect()


def test_global_is_refused(ctx, lake):
    with pytest.raises(ValueError, match="'global' is not supported"):
        ctx.sql("SELECT * FROM view_instance('async_events', 'global')").collect()
    with pytest.raises(ValueError, match="global"):
        ae.AsyncEventsTable(lake, "global")


# Each bad call, the exception it must raise and a part of its message.
BAD = [
    (lambda ctx, lake, pid: ctx.sql("SELECT * FROM async_events('not a uuid')").collect(),
     ValueError, "'not a uuid' is not a process id"),
    (lambda ctx, lake, pid: ctx.sql(f"SELECT * FROM async_events('{pid}', 1)").collect(),
     ValueError, r"takes \(process_id\) or \(process_id, begin, end\), got 2 arguments"),
    (lambda ctx, lake, pid: ctx.sql(f"SELECT * FROM async_events('{pid}', 'yesterday', 'now')").collect(),
     ValueError, "the begin time 'yesterday' is not an RFC 3339 timestamp"),
    (lambda ctx, lake, pid: ctx.sql(f"SELECT * FROM view_instance('log_entries', '{pid}')").collect(),
     ValueError, "unknown view set 'log_entries'"),
    (lambda ctx, lake, pid: ctx.sql(f"SELECT no_such_column FROM async_events('{pid}')").collect(),
     ValueError, "No field named no_such_column"),
    (lambda ctx, lake, pid: ae.AsyncEventsTable(lake, pid, begin=object()),
     ValueError, "begin: expected None, ns since the epoch"),
    (lambda ctx, lake, pid: ae.AsyncEventsTable(lake, 42), TypeError, "'int' object"),
    (lambda ctx, lake, pid: ae.Lake.open("postgres://nobody@127.0.0.1:1/none", "file:///nonexistent"),
     ae.LakeError, "cannot connect to the metadata database postgres://nobody@127.0.0.1:1/none"),
    (lambda ctx, lake, pid: ae.Lake.open("mysql://x", "file:///tmp"),
     ae.LakeError, "unsupported database URL mysql://x"),
    (lambda ctx, lake, pid: ae.Lake.open("sqlite:///nonexistent/dir/telemetry.db", "file:///tmp"),
     ae.LakeError, "sqlite:///nonexistent/dir/telemetry.db"),
    (lambda ctx, lake, pid: ae.Lake.embedded("/nonexistent/lake"),
     ae.LakeError, "no micromegas lake in /nonexistent/lake .*point MICROMEGAS_SQL_CONNECTION_STRING"),
    # A second recording in one process: micromegas's dispatch is process-wide.
    (lambda ctx, lake, pid: lake.record_demo(1), ae.LakeError, "cannot start recording"),
    (lambda ctx, lake, pid: lake.table_functions(span_margin_s=-1.0),
     ValueError, "span_margin_s: -1 is not a duration in seconds"),
    (lambda ctx, lake, pid: ae.LakeFunction(), TypeError, "cannot create"),
    (lambda ctx, lake, pid: ae.AsyncEventsTable(lake, pid).__datafusion_table_provider__(object()),
     ImportError, "expected a datafusion SessionContext"),
]


@pytest.mark.parametrize("call, kind, message", BAD, ids=range(len(BAD)))
def test_bad_input_raises_a_python_exception_not_a_panic(ctx, lake, pid, call, kind, message):
    # A pyo3 PanicException derives from BaseException, not from the kinds expected here: a
    # panic fails this test.
    with pytest.raises(kind, match=message) as caught:
        call(ctx, lake, pid)
    assert "panicked" not in str(caught.value)


def test_a_missing_blob_is_an_error_naming_the_block(ctx, lake_dir, pid, tmp_path):
    """A copy of the lake whose payload of one block is gone: the query fails with an error
    naming that block (not fewer rows), and the metadata queries still answer."""
    copy = tmp_path / "lake"
    shutil.copytree(lake_dir, copy)
    block = ctx.sql(
        f"SELECT CAST(stream_id AS STRING) AS s, CAST(block_id AS STRING) AS b "
        f"FROM async_events('{pid}') LIMIT 1"
    ).to_pydict()
    blob = copy / "blobs" / pid / block["s"][0] / block["b"][0]
    blob.unlink()
    ctx = SessionContext()
    ae.register(ctx, ae.Lake.embedded(str(copy)))
    with pytest.raises(Exception, match=blob.name):
        ctx.sql(f"SELECT count(*) FROM async_events('{pid}')").collect()
    assert ctx.sql(f"SELECT count(*) AS n FROM blocks WHERE block_id = '{blob.name}'").to_pydict()["n"] == [1]


def test_a_host_of_another_major_version_is_refused(monkeypatch):
    monkeypatch.setattr(datafusion, "__version__", "54.0.0")
    with pytest.raises(ImportError, match="datafusion==55"):
        ae._check_host()


def test_imports_in_a_fresh_environment_with_only_datafusion(tmp_path):
    """The built wheel in a new virtual environment holding only datafusion 55.0.0 (and its
    pyarrow): it imports, records the demo, and answers a query."""
    wheel = os.environ.get("ASYNC_EVENTS_WHEEL")
    if not wheel:
        pytest.skip("ASYNC_EVENTS_WHEEL is not set (scripts/python-tests.sh sets it)")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "--disable-pip-version-check"]

    def installed():
        out = subprocess.run(pip + ["list", "--format=freeze"], check=True, capture_output=True, text=True)
        return {line.split("==")[0].lower() for line in out.stdout.split()}

    subprocess.run(pip + ["install", "-q", "datafusion==55.0.0"], check=True)
    with_datafusion = installed()
    subprocess.run(pip + ["install", "-q", wheel], check=True)
    # The wheel brings nothing but itself: datafusion is its only dependency.
    assert installed() - with_datafusion == {"datafusion-async-events"}
    assert "micromegas" not in with_datafusion and "pandas" not in with_datafusion
    script = (
        "import datafusion, datafusion_async_events as ae, sys\n"
        "lake = ae.Lake.embedded(sys.argv[1], writable=True)\n"
        "pid = lake.record_demo(2)\n"
        "ctx = datafusion.SessionContext()\n"
        "ae.register(ctx, lake)\n"
        "n = ctx.sql(f\"SELECT count(*) AS n FROM async_events('{pid}')\").to_pydict()['n'][0]\n"
        "assert n > 0, n\n"
        "print(n)\n"
    )
    out = subprocess.run(
        [python, "-c", script, str(tmp_path / "lake")], check=True, capture_output=True, text=True
    )
    assert int(out.stdout.strip()) > 0


# Predicates DataFusion 55 answers wrongly, and the same question asked the way it answers
# right: `register` makes `ctx.sql()` correct the first kind (the answers equal the command
# line's, whose sessions carry the crate's analyzer rule).
CORRECTED = [
    (
        "SELECT count(*) AS n FROM async_events('{pid}') WHERE event_type = 'begin' AND 'begin' = event_type",
        "SELECT count(*) AS n FROM async_events('{pid}') WHERE event_type = 'begin'",
    ),
    (
        "SELECT count(*) AS n FROM async_spans('{pid}') WHERE 'render:cart' = name AND name = 'render:cart'",
        "SELECT count(*) AS n FROM async_spans('{pid}') WHERE name = 'render:cart'",
    ),
    (
        "SELECT count(*) AS n FROM async_events('{pid}') "
        "WHERE (span_id = 10 OR span_id = 11) AND NOT (span_id IN (12, 13, NULL))",
        "SELECT CAST(0 AS BIGINT) AS n",
    ),
    (
        "SELECT count(*) AS n FROM async_events('{pid}') WHERE depth NOT IN (0, NULL) OR depth = 1",
        "SELECT count(*) AS n FROM async_events('{pid}') WHERE depth = 1",
    ),
]


@pytest.mark.parametrize("wrong, right", CORRECTED)
def test_the_predicates_datafusion_answers_wrongly_are_corrected(ctx, cli, pid, wrong, right):
    wrong, right = wrong.format(pid=pid), right.format(pid=pid)
    _, got = rows(ctx, wrong)
    _, want = rows(ctx, right)
    assert got == want
    assert got == cli(wrong)[1]


def test_without_the_correction_datafusion_answers_wrongly(lake, pid):
    # When this fails, datafusion-python answers right: drop the correction (and this test).
    ctx = SessionContext()
    ae.register(ctx, lake, correct=False)
    sql = f"SELECT count(*) AS n FROM async_events('{pid}') WHERE event_type = 'begin' AND 'begin' = event_type"
    assert ctx.sql(sql).to_pydict()["n"] == [0]
    ae.correct_predicates(ctx)
    assert ctx.sql(sql).to_pydict()["n"][0] > 0


def test_correct_sql_keeps_what_needs_no_correction():
    plain = "select name, count(*) from t where depth = 1 group by name"
    assert ae.correct_sql(plain) == plain
    assert ae.correct_sql("SELECT * FROM t WHERE 'a' = d") == "SELECT * FROM t WHERE d = 'a'"
