"""Query the async span events recorded by micromegas-instrumented programs with SQL in
datafusion-python.

    from datafusion import SessionContext
    import datafusion_async_events as ae

    lake = ae.Lake.from_env()       # or ae.Lake.open(db_url, store_url), ae.Lake.embedded("./lake")
                                    # (read-only; writable=True to record into it)
    ctx = SessionContext()
    ae.register(ctx, lake)
    ctx.sql("SELECT name, count(*) FROM async_events('<process id>') GROUP BY name").to_pandas()

Table functions get no filter pushdown through the DataFusion FFI (datafusion-python 55): a
`WHERE` on `async_events(...)` is applied above the scan, after every block of the process was
read. Bound the scan with the functions' `begin`/`end` arguments, or register a table
(`AsyncEventsTable`, `AsyncSpansTable`), whose `WHERE` filters prune blocks.

DataFusion 55 answers two kinds of predicates wrongly (`c = 'v' AND 'v' = c` on dictionary
columns gives no rows; a `NOT IN` list holding NULL next to an `OR` is dropped). `register` makes
`ctx.sql()` correct them (`correct_sql`, the same rewrite the crate's analyzer rule does in Rust):
see `register`'s `correct` and `correct_predicates`.

Ctrl-C. Opening a lake (`Lake.from_env`, `Lake.open`, `Lake.embedded`) raises
`KeyboardInterrupt` within a tenth of a second and cancels the connection. Queries are run by
datafusion-python: its `collect()`, `to_pydict()`, `to_arrow_table()`, `to_pandas()` and the
batches of `execute_stream()` check for Ctrl-C once a second, then raise `KeyboardInterrupt`
and drop the query, which cancels our scans and releases their connections (inside this
package's tokio runtime, so the interpreter stays usable for the next query). A query whose
operators run for long without reading a batch (a hash join producing billions of rows from
one) keeps datafusion-python from noticing Ctrl-C until it does: that is datafusion-python's
own behaviour.

fork. A `Lake`, the tables and functions made from it, and a `SessionContext` they are
registered on belong to the process that made them: used in a child made by `os.fork()` (or
`multiprocessing` with the 'fork' start method), ours raise `ForkedProcessError` (a
`RuntimeError`; through a query, an exception carrying its message) instead of hanging. Open
the lake again in the child. datafusion-python's own runtime does not survive a fork either:
once the parent has run a query, a query in the child may hang whatever its tables. Prefer the
'spawn' or 'forkserver' start methods, or fork before the first query.
"""

import datafusion as _datafusion

from ._native import (
    AsyncEventsTable,
    AsyncSpansTable,
    ForkedProcessError,
    Lake,
    LakeError,
    LakeFunction,
    PropertyFunction,
    Table,
    ThreadStreamsTable,
    __version__,
    correct_sql,
    ffi_major_version,
    property_functions,
)


def _check_host():
    version = getattr(_datafusion, "__version__", "")
    major = version.split(".")[0]
    if major.isdigit() and int(major) != ffi_major_version():
        raise ImportError(
            f"datafusion_async_events {__version__} was built for datafusion "
            f"{ffi_major_version()}.x (DataFusion FFI major version {ffi_major_version()}), "
            f"but datafusion {version} is installed: install datafusion=={ffi_major_version()}.*"
        )


_check_host()

__all__ = [
    "AsyncEventsTable",
    "AsyncSpansTable",
    "ForkedProcessError",
    "Lake",
    "LakeError",
    "LakeFunction",
    "Table",
    "ThreadStreamsTable",
    "correct_predicates",
    "correct_sql",
    "register",
]


def correct_predicates(ctx):
    """Makes `ctx.sql()` (and `ctx.sql_with_options()`, which calls it) rewrite the predicates
    DataFusion 55 answers wrongly into equivalent forms it answers right, before planning them
    (`correct_sql`). The DataFusion FFI cannot carry the crate's analyzer rule into a
    datafusion-python session, so the correction is made on the SQL text; the DataFrame API
    (`ctx.table(...).filter(...)`) is not corrected. Idempotent."""
    if getattr(ctx, "_async_events_corrects_sql", False):
        return
    plain_sql = type(ctx).sql

    def sql(query, *args, **kwargs):
        return plain_sql(ctx, correct_sql(query), *args, **kwargs)

    sql.__doc__ = plain_sql.__doc__
    ctx.sql = sql
    ctx._async_events_corrects_sql = True


def register(ctx, lake, *, metadata_tables=True, span_margin_s=None,
             skip_corrupt_blocks=False, correct=True):
    """Registers on `ctx` (a `datafusion.SessionContext`) the table functions
    `async_events(process_id [, begin, end])`, `async_spans(process_id [, begin, end])`,
    `view_instance('async_events' | 'async_spans', process_id)` and
    `thread_streams(process_id)`, the `table_functions` table that lists them, the functions on
    properties micromegas users know (`property_get`, `properties_length`, `jsonb_get`, …, see
    `property_functions`), and, unless `metadata_tables=False`, the lake's `processes`,
    `streams` and `blocks` tables.

    `span_margin_s`: how far (seconds, default 30) `async_spans`
    reads around a range for the other event of the spans crossing its edges;
    `skip_corrupt_blocks`: skip (and count) blocks that fail to decode instead of failing;
    `correct`: make `ctx.sql()` correct the predicates DataFusion 55 answers wrongly
    (`correct_predicates`).
    """
    functions = lake.table_functions(
        span_margin_s=span_margin_s,
        skip_corrupt_blocks=skip_corrupt_blocks,
    )
    for function in functions:
        # TableFunction(name, f, ctx) ties expression decoding to the context that runs the query.
        ctx.register_udtf(_datafusion.TableFunction(function.name, function, ctx))
    ctx.register_table("table_functions", lake.functions_table())
    for function in property_functions():
        ctx.register_udf(_datafusion.ScalarUDF.from_pycapsule(function))
    if metadata_tables:
        for name, table in lake.metadata_tables():
            ctx.register_table(name, table)
    if correct:
        correct_predicates(ctx)
