"""Ctrl-C from Python: a child Python process runs a call of the package, prints `started`, and
gets SIGINT while the call runs. It must raise KeyboardInterrupt (never abort), and the
interpreter must answer the next query.

Before the package dropped what it holds inside its tokio runtime, an interrupt that landed
while datafusion-python planned a query aborted about every other time (`async-ffi: abort due to
panic across the FFI boundary in Future::drop`: sqlx panicked when a cancelled scan's connection
was dropped outside a runtime). datafusion-python checks for signals once a second while it
waits, so the query here is long (a union of 300 scans of every kind of table we export: about
two seconds to plan, as long to run), each child is interrupted several times, and the
interrupts land in planning and in execution alike."""

import signal
import subprocess
import sys
import threading
import time

import pytest

# A child started from a shell job without job control inherits SIGINT ignored, and Python then
# installs no KeyboardInterrupt handler: each child puts Python's own back first.
RESTORE_SIGINT = "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"

CHILD_QUERY = RESTORE_SIGINT + r"""
import datafusion, datafusion_async_events as ae, sys, time
lake_dir, pid, how, rounds, catch = sys.argv[1:6]
lake = ae.Lake.embedded(lake_dir)
ctx = datafusion.SessionContext()
ae.register(ctx, lake)
ctx.register_table("events", ae.AsyncEventsTable(lake, pid))
ctx.register_table("spans", ae.AsyncSpansTable(lake, pid))
sources = [f"async_events('{pid}')", f"async_spans('{pid}')", "events", "spans", "blocks"]
union = " UNION ALL ".join(f"SELECT 1 AS x FROM {sources[i % len(sources)]}" for i in range(300))
sql = f"SELECT count(*) AS n FROM ({union})"

def run():
    if how == "explain":  # planning only: every scan's metadata queries, no execution
        ctx.sql("EXPLAIN " + sql).collect()
        return
    df = ctx.sql(sql)
    if how == "collect":
        df.collect()
    elif how == "arrow":
        df.to_arrow_table()
    else:
        for _ in df.execute_stream():
            pass

for round in range(int(rounds)):
    print(f"started {round}", flush=True)
    try:
        while True:
            run()
    except KeyboardInterrupt:
        if catch != "catch":
            raise
        print(f"interrupted {round}", flush=True)
n = ctx.sql(f"SELECT count(*) AS n FROM async_events('{pid}')").to_pydict()["n"][0]
print(f"next query: {n}", flush=True)
"""

# What an abort or a panic leaves on stderr.
NEVER = ["panicked", "Aborted", "abort due to panic", "core dumped", "PanicException", "SIGABRT"]

# The longest wait for a line of the child or for its end.
TIMEOUT_S = 60


def _line(child):
    """The child's next line of output; fails the test when none comes in TIMEOUT_S."""
    line = []
    reader = threading.Thread(target=lambda: line.append(child.stdout.readline()), daemon=True)
    reader.start()
    reader.join(TIMEOUT_S)
    if not line:
        child.kill()
        out, err = child.communicate()
        pytest.fail(f"the child printed nothing for {TIMEOUT_S} s: {out} {err}")
    return line[0].rstrip("\n")


def _interrupt(args, rounds=1, delay_s=1.5):
    """Runs `python -c args...`; `rounds` times, waits for its `started <round>` line and sends
    it SIGINT `delay_s` later (a little later each round, so the interrupts fall at different
    points of the query). Returns (return code, every line it printed, stderr, seconds from the
    last SIGINT to its exit)."""
    child = subprocess.Popen(
        [sys.executable, "-c", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    for round in range(rounds):
        while not (lines and lines[-1] == f"started {round}"):
            lines.append(_line(child))
            if child.poll() is not None:
                out, err = child.communicate()
                pytest.fail(f"the child ended early ({child.returncode}): {lines} {out} {err}")
        time.sleep(delay_s + 0.37 * round)
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
    try:
        out, err = child.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        out, err = child.communicate()
        pytest.fail(f"the child still ran {TIMEOUT_S} s after SIGINT: {lines} {out} {err}")
    return child.returncode, lines + out.splitlines(), err, time.monotonic() - sent


@pytest.fixture()
def events(ctx, pid):
    return ctx.sql(f"SELECT count(*) AS n FROM async_events('{pid}')").to_pydict()["n"][0]


@pytest.mark.parametrize("how", ["explain", "collect", "stream"])
def test_ctrl_c_during_a_query_raises_keyboard_interrupt_and_the_next_query_works(
    lake_dir, pid, events, how
):
    rounds = 4
    code, lines, err, after = _interrupt(
        [CHILD_QUERY, str(lake_dir), pid, how, str(rounds), "catch"], rounds
    )
    for text in NEVER:
        assert text not in err, err
    assert code == 0, (lines, err)
    assert [l for l in lines if l.startswith("interrupted")] == [
        f"interrupted {r}" for r in range(rounds)
    ], lines
    assert lines[-1] == f"next query: {events}", lines
    # datafusion-python checks for signals once a second.
    assert after < 10, after


@pytest.mark.parametrize("how", ["explain", "arrow"])
def test_uncaught_ctrl_c_ends_python_with_keyboard_interrupt_not_an_abort(lake_dir, pid, how):
    code, lines, err, _ = _interrupt([CHILD_QUERY, str(lake_dir), pid, how, "1", "raise"])
    for text in NEVER:
        assert text not in err, err
    # Python re-raises an uncaught KeyboardInterrupt as SIGINT; an abort would be SIGABRT.
    assert code == -signal.SIGINT, (code, lines, err)
    assert err.rstrip().endswith("KeyboardInterrupt"), err


CHILD_OPEN = RESTORE_SIGINT + r"""
import datafusion, datafusion_async_events as ae, socket, sys, time
lake_dir, pid = sys.argv[1:3]
# A "database" that accepts connections and never answers: opening the lake waits for it
# until the connect timeout (10 s).
silent = socket.socket()
silent.bind(("127.0.0.1", 0))
silent.listen(8)
url = f"postgres://nobody@127.0.0.1:{silent.getsockname()[1]}/none"
print("started 0", flush=True)
start = time.monotonic()
try:
    ae.Lake.open(url, "file:///nonexistent")
    print("opened", flush=True)
except KeyboardInterrupt:
    print(f"interrupted after {time.monotonic() - start:.2f} s", flush=True)
except ae.LakeError as e:
    print(f"failed after {time.monotonic() - start:.2f} s: {e}", flush=True)
ctx = datafusion.SessionContext()
ae.register(ctx, ae.Lake.embedded(lake_dir))
n = ctx.sql(f"SELECT count(*) AS n FROM async_events('{pid}')").to_pydict()["n"][0]
print(f"next query: {n}", flush=True)
"""


def test_ctrl_c_while_opening_a_lake_cancels_it(lake_dir, pid, events):
    code, lines, err, _ = _interrupt([CHILD_OPEN, str(lake_dir), pid], delay_s=1.0)
    for text in NEVER:
        assert text not in err, err
    assert code == 0, (lines, err)
    # Interrupted well before the connect timeout, not failed by it.
    (interrupted,) = [l for l in lines if l.startswith("interrupted after")]
    assert 1.0 <= float(interrupted.split()[2]) < 5.0, lines
    assert lines[-1] == f"next query: {events}", lines
