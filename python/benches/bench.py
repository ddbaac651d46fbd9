"""Times queries of the Python package on a lake, for BENCHMARKS.md.

    python python/benches/bench.py --lake /tmp/ae-bench/lake [--runs 5] [--cli target/release/async-events]

Each shape runs in a fresh Python process (so that its peak RSS is its own): the lake is opened,
the functions registered, the query run `--runs` times, each result consumed as a stream of
record batches; it prints the median and every run, and the process's peak RSS. With `--cli`,
the same SQL also runs through `async-events sql` (one process per run, wall time and peak RSS
from /usr/bin/time). The lake's process and its 1% window (in the middle of the recording) are
found by the script.
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def shapes(pid, lo, hi):
    window = f"time BETWEEN to_timestamp_nanos({lo}) AND to_timestamp_nanos({hi})"
    return {
        "count(*), full scan": ("udtf", f"SELECT count(*) FROM async_events('{pid}')"),
        "aggregate by name, full scan": (
            "udtf",
            f"SELECT name, count(*) AS n, max(depth) AS d FROM async_events('{pid}') GROUP BY name",
        ),
        "all 13 columns, full scan (streamed)": ("udtf", f"SELECT * FROM async_events('{pid}')"),
        "1% window, table function bounds": (
            "udtf",
            f"SELECT count(*) FROM async_events('{pid}', to_timestamp_nanos({lo}), to_timestamp_nanos({hi}))",
        ),
        "1% window, WHERE on AsyncEventsTable": ("table", f"SELECT count(*) FROM events WHERE {window}"),
        "1% window, WHERE on the table function (not pushed)": (
            "udtf",
            f"SELECT count(*) FROM async_events('{pid}') WHERE {window}",
        ),
    }


def child(lake_dir, pid, kind, sql, runs):
    """One shape in this process: prints a JSON line."""
    import datafusion

    import datafusion_async_events as ae

    lake = ae.Lake.embedded(lake_dir)
    ctx = datafusion.SessionContext()
    ae.register(ctx, lake)
    if kind == "table":
        ctx.register_table("events", ae.AsyncEventsTable(lake, pid))
    times, rows = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        rows = sum(b.to_pyarrow().num_rows for b in ctx.sql(sql).execute_stream())
        times.append((time.perf_counter() - start) * 1000)
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"times": times, "rows": rows, "rss_mib": rss_mib}))


def probe(lake_dir):
    import datafusion

    import datafusion_async_events as ae

    ctx = datafusion.SessionContext()
    ae.register(ctx, ae.Lake.embedded(lake_dir))
    pid = ctx.sql("SELECT process_id FROM processes LIMIT 1").to_pydict()["process_id"][0]
    t = ctx.sql(
        f"SELECT CAST(min(time) AS BIGINT) AS lo, CAST(max(time) AS BIGINT) AS hi FROM async_events('{pid}')"
    ).to_pydict()
    lo, hi = t["lo"][0], t["hi"][0]
    start = lo + (hi - lo) // 2
    return pid, start, start + (hi - lo) // 100


def cli_run(cli, lake_dir, sql):
    out = subprocess.run(
        ["/usr/bin/time", "-f", "%e %M", cli, "--db", f"sqlite://{lake_dir}/telemetry.db",
         "--store", f"file://{lake_dir}/", "sql", "--format", "csv", sql],
        check=True, capture_output=True, text=True,
    )
    seconds, kib = out.stderr.strip().splitlines()[-1].split()
    return float(seconds) * 1000, int(kib) / 1024


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lake", required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cli")
    parser.add_argument("--child", nargs=4, metavar=("PID", "KIND", "SQL", "RUNS"))
    args = parser.parse_args()
    if args.child:
        pid, kind, sql, runs = args.child
        return child(args.lake, pid, kind, sql, int(runs))
    pid, lo, hi = probe(args.lake)
    print(f"process {pid}, 1% window [{lo}, {hi}] ns, {args.runs} runs per shape")
    for name, (kind, sql) in shapes(pid, lo, hi).items():
        out = subprocess.run(
            [sys.executable, __file__, "--lake", args.lake, "--child", pid, kind, sql, str(args.runs)],
            check=True, capture_output=True, text=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        runs = ", ".join(f"{t:.0f}" for t in r["times"])
        line = (f"python  {name}: median {statistics.median(r['times']):.1f} ms ({runs}), "
                f"{r['rows']} rows, peak RSS {r['rss_mib']:.0f} MiB")
        print(line)
        if args.cli and kind == "udtf" and "streamed" not in name:
            cli_runs = [cli_run(args.cli, args.lake, sql) for _ in range(args.runs)]
            walls = [w for w, _ in cli_runs]
            print(f"cli     {name}: median {statistics.median(walls):.1f} ms per process "
                  f"({', '.join(f'{w:.0f}' for w in walls)}), peak RSS {max(m for _, m in cli_runs):.0f} MiB")


if __name__ == "__main__":
    main()
