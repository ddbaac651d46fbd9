"""os.fork(): the package's objects made before a fork belong to the parent. In the child each
of them raises ForkedProcessError (through a query: an exception carrying its message) instead
of hanging on the parent's runtime and connections, a lake opened again in the child works,
and the parent keeps working."""

import gc
import json
import os
import select
import time

import pytest
from datafusion import SessionContext

import datafusion_async_events as ae

# The longest a child may take: every step below answers at once, a hang is a failure.
CHILD_TIMEOUT_S = 60

SAYS = "was created in process {parent}, but is used in process {child}, a child made by fork"


def _in_child(steps):
    """Forks; the child runs each `(name, call)` of `steps` and reports what it returned or
    raised through a pipe, as JSON lines. Returns the reports, the child's pid and its exit
    code; a child that does not finish within CHILD_TIMEOUT_S is killed and fails the test."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: report through the pipe and the exit code only
        code = 0
        try:
            os.close(read)
            for name, call in steps:
                try:
                    report = {"step": name, "ok": repr(call())[:200]}
                except BaseException as e:  # noqa: BLE001 - everything is reported
                    report = {"step": name, "error": type(e).__name__, "message": str(e),
                              "mro": [c.__name__ for c in type(e).__mro__]}
                os.write(write, (json.dumps(report) + "\n").encode())
        except BaseException:  # noqa: BLE001
            code = 1
        os._exit(code)
    os.close(write)
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            os.kill(child, 9)
            os.waitpid(child, 0)
            pytest.fail(f"the child hung; it reported: {data.decode()}")
        ready, _, _ = select.select([read], [], [], left)
        if ready:
            chunk = os.read(read, 65536)
            if not chunk:
                break
            data += chunk
    os.close(read)
    _, status = os.waitpid(child, 0)
    reports = {r["step"]: r for r in map(json.loads, data.decode().splitlines())}
    return reports, child, os.waitstatus_to_exitcode(status)


def test_objects_made_before_a_fork_raise_a_clear_error_in_the_child(lake, lake_dir, pid):
    ctx = SessionContext()
    ae.register(ctx, lake)
    table = ae.AsyncEventsTable(lake, pid)
    ctx.register_table("events", table)
    counts = {
        sql: ctx.sql(sql).to_pydict()["n"]
        for sql in [
            "SELECT count(*) AS n FROM events",
            f"SELECT count(*) AS n FROM async_events('{pid}')",
            "SELECT count(*) AS n FROM blocks",
        ]
    }
    (function,) = [f for f in lake.table_functions() if f.name == "async_events"]
    functions = len(lake.table_functions())

    reports, child, code = _in_child([
        ("table_functions", lambda: lake.table_functions()),
        ("metadata_tables", lambda: lake.metadata_tables()),
        ("new table", lambda: ae.AsyncEventsTable(lake, pid)),
        ("export table", lambda: table.__datafusion_table_provider__(ctx)),
        ("export function", lambda: function.__datafusion_table_function__(ctx)),
        ("registered table", lambda: ctx.sql("SELECT count(*) AS n FROM events").collect()),
        ("table function", lambda: ctx.sql(f"SELECT count(*) FROM async_events('{pid}')").collect()),
        ("metadata table", lambda: ctx.sql("SELECT count(*) FROM blocks").collect()),
        ("open again", lambda: len(ae.Lake.embedded(str(lake_dir)).table_functions())),
        ("url", lambda: lake.database_url),
    ])
    assert code == 0, reports
    says = SAYS.format(parent=os.getpid(), child=child)

    # Our own calls raise ForkedProcessError, a RuntimeError, naming the object.
    for step, what in [
        ("table_functions", "this Lake (sqlite://"),
        ("metadata_tables", "this Lake (sqlite://"),
        ("new table", "this Lake (sqlite://"),
        ("export table", "table AsyncEventsTable"),
        ("export function", "the table function async_events"),
    ]:
        report = reports[step]
        assert report.get("error") == "ForkedProcessError", report
        assert "RuntimeError" in report["mro"], report
        assert report["message"].startswith(f"{what}"), report
        assert says in report["message"], report
        assert "Create it again in this process after the fork" in report["message"], report

    # Through datafusion-python the error crosses the FFI as text: its type is the host's.
    for step, what in [
        ("registered table", "table AsyncEventsTable"),
        ("table function", "the table function async_events"),
        ("metadata table", "table blocks"),
    ]:
        report = reports[step]
        assert "error" in report, report
        assert report["error"] not in ("PanicException", "KeyboardInterrupt"), report
        assert f"{what} {says}" in report["message"], report

    # A lake opened in the child is the child's; plain data of the parent's lake still reads.
    assert reports["open again"] == {"step": "open again", "ok": str(functions)}
    assert reports["url"]["ok"].startswith("'sqlite://"), reports["url"]

    # The parent is not disturbed.
    for sql, n in counts.items():
        assert ctx.sql(sql).to_pydict()["n"] == n


def test_the_forked_child_drops_the_parents_objects_without_hanging(lake_dir, pid):
    """Dropping the parent's objects in the child (a lake and its sqlx pool, tables, functions)
    must not wait on the parent's threads, which are not in the child: they are left alone."""
    own = {"lake": ae.Lake.embedded(str(lake_dir))}
    own["table"] = ae.AsyncEventsTable(own["lake"], pid)
    own["functions"] = own["lake"].table_functions()

    def drop_all():
        own.clear()
        gc.collect()
        return "dropped"

    reports, _, code = _in_child([("drop", drop_all)])
    assert code == 0
    assert reports["drop"] == {"step": "drop", "ok": "'dropped'"}
    ctx = SessionContext()
    ctx.register_table("events", own["table"])
    assert ctx.sql("SELECT count(*) AS n FROM events").to_pydict()["n"][0] > 0
    own.clear()
