//! Exactness of everything the scan reports `Exact`: the scan's answers equal DataFusion's own
//! evaluation of the same predicate over the same rows (a MemTable, which takes no pushdown),
//! for the forms that once gave wrong answers and for random predicates over a real recording;
//! projections are honoured as asked; blocks are shared within one query only.

#[macro_use]
mod common;

use common::lakes::{Backend, open, store};
use common::producer::Recording;
use common::rng::Rng;
use common::sql::{context, lines, query, reference, run_measured, sorted_lines};
use common::workload::shared_recording;
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::catalog::TableProvider;
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::LogicalPlanBuilder;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::{SessionContext, col, lit};
use datafusion_async_events::TimeBounds;
use datafusion_async_events::provider::{AsyncEventsExec, AsyncEventsTable, ScanOptions};
use std::sync::Arc;

fn count(batches: &[RecordBatch]) -> i64 {
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

/// Distinct values of a column of the reference table, as text.
async fn distinct(reference: &SessionContext, column: &str) -> Vec<String> {
    let b = query(
        reference,
        &format!("SELECT DISTINCT CAST({column} AS VARCHAR) FROM ref ORDER BY 1"),
    )
    .await;
    lines(&b)
}

fn ns_text(ns: i64, offset_minutes: i32) -> String {
    let zone = chrono::FixedOffset::east_opt(offset_minutes * 60).unwrap();
    chrono::DateTime::from_timestamp_nanos(ns)
        .with_timezone(&zone)
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
}

/// What comparing one query found (a difference fails the test).
#[derive(Debug, PartialEq, Eq)]
enum Compared {
    /// Both sides answered: the same rows.
    Rows,
    /// Both refused the query with the same kind of error (a type error in a random predicate).
    Refused(String),
}

/// The kind of a DataFusion error: its message up to the first colon (`Error during planning`,
/// `Arrow error`, …), which names the stage that refused.
fn error_kind(e: &datafusion::error::DataFusionError) -> String {
    e.to_string()
        .split(':')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The same query on the scan (`T` → `async_events(pid)`) and on the reference (`T` → `ref`).
async fn same(
    ctx: &SessionContext,
    reference: &SessionContext,
    pid: uuid::Uuid,
    sql: &str,
) -> Compared {
    let ours = sql.replace("{T}", &format!("async_events('{pid}')"));
    let theirs = sql.replace("{T}", "ref");
    let got = async { ctx.sql(&ours).await?.collect().await }.await;
    let want = async { reference.sql(&theirs).await?.collect().await }.await;
    let (g, w) = match (got, want) {
        (Ok(g), Ok(w)) => (g, w),
        (Err(g), Err(w)) => {
            let (g, w) = (error_kind(&g), error_kind(&w));
            assert_eq!(g, w, "{sql}: both refuse it, for different reasons");
            return Compared::Refused(g);
        }
        (g, w) => panic!("{sql}: ours {:?}, DataFusion's {:?}", g.err(), w.err()),
    };
    let (g, w) = if sql.contains("LIMIT") && sql.contains("ORDER BY") {
        (lines(&g), lines(&w))
    } else {
        (sorted_lines(&g), sorted_lines(&w))
    };
    if g != w {
        let first = g
            .iter()
            .zip(&w)
            .position(|(a, b)| a != b)
            .unwrap_or(g.len().min(w.len()));
        panic!(
            "{sql}: {} rows, DataFusion's evaluation gives {}; first difference at row {first}: {:?} vs {:?}",
            g.len(),
            w.len(),
            g.get(first),
            w.get(first)
        );
    }
    Compared::Rows
}

on_both! {
    async fn the_reported_wrong_answers_are_right(backend: Backend) {
        let rec = shared_recording();
        let t = open(backend).await;
        store(&t.lake, rec).await;
        let pid = rec.process.process_id;
        let ctx = context(&t.lake);
        let reference = reference(backend, rec);
        let blocks = distinct(&reference, "block_id").await;
        let names = distinct(&reference, "name").await;
        let targets = distinct(&reference, "target").await;
        let lines_ = distinct(&reference, "line").await;
        let (a, b) = (&names[0], &names[names.len() - 1]);
        assert!(b > a);
        let stream = rec.streams[0].stream_id.to_string();
        let start = rec.process.start_time.timestamp_nanos_opt().unwrap();
        let queries = [
            format!("SELECT filename FROM {{T}} WHERE block_id NOT IN ('{}', '{}', NULL)", blocks[0], blocks[1]),
            format!("SELECT * FROM {{T}} WHERE (name IN ('{a}', NULL, NULL) OR 'step_1' = name) AND target = '{}'", targets[0]),
            format!("SELECT time, name FROM {{T}} WHERE name IN ('{b}', NULL) AND name < '{a}' ORDER BY time DESC LIMIT 50"),
            format!("SELECT count(*) FROM {{T}} b JOIN {{T}} e ON b.span_id = e.span_id WHERE b.event_type = 'begin' AND e.event_type = 'end' AND b.line NOT IN ({}, NULL)", lines_[0]),
            format!("SELECT count(*) FROM {{T}} b JOIN {{T}} e ON b.span_id = e.span_id WHERE b.event_type = 'begin' AND e.event_type = 'end' AND b.line NOT IN ({})", lines_[0]),
            format!("SELECT * FROM {{T}} WHERE stream_id = '{}'", stream.to_uppercase()),
            format!("SELECT * FROM {{T}} WHERE stream_id IN ('{}', '{stream}')", stream.replace('-', "")),
            "SELECT * FROM {T} WHERE CAST(TRY_CAST(span_id AS DECIMAL(2,0)) AS BIGINT) = 500".into(),
            "SELECT * FROM {T} WHERE CAST(TRY_CAST(depth AS DECIMAL(1,0)) AS BIGINT) >= 2".into(),
            "SELECT * FROM {T} WHERE CAST(TRY_CAST(span_id AS DECIMAL(20,0)) AS BIGINT) IN (5, 7)".into(),
            "SELECT * FROM {T} WHERE depth = NULL OR depth = 1".into(),
            "SELECT * FROM {T} WHERE event_type <> NULL".into(),
            "SELECT * FROM {T} WHERE name NOT IN ('x', NULL) OR depth = 2".into(),
        ];
        for q in &queries {
            assert_eq!(same(&ctx, &reference, pid, q).await, Compared::Rows, "{q}");
        }
        // Bounds in other zones and precisions, and a list with NULL.
        let (lo, hi) = (start + 150_000_000, start + 650_000_000);
        let lo_text = ns_text(lo, 0);
        let hi_text = ns_text(hi, -330);
        let got = query(&ctx, &format!(
            "SELECT time, name FROM async_events('{pid}', to_timestamp('{lo_text}'), '{hi_text}') \
             WHERE name IN ('{a}', '{b}', NULL) ORDER BY time LIMIT 3")).await;
        let want = query(&reference, &format!(
            "SELECT time, name FROM ref WHERE time BETWEEN to_timestamp('{lo_text}') AND to_timestamp('{hi_text}') \
             AND name IN ('{a}', '{b}', NULL) ORDER BY time LIMIT 3")).await;
        assert_eq!(lines(&got), lines(&want));
    }

    async fn random_predicates_give_datafusions_answers(backend: Backend) {
        let rec = shared_recording();
        let t = open(backend).await;
        store(&t.lake, rec).await;
        let pid = rec.process.process_id;
        let ctx = context(&t.lake);
        let reference = reference(backend, rec);
        let values = Values::of(&reference, rec).await;
        let mut rng = Rng(0x5eed_0007 ^ backend as u64);
        let mut outcomes = Vec::new();
        for i in 0..120 {
            let p = predicate(&mut rng, &values, "", 2);
            outcomes.push(same(&ctx, &reference, pid, &format!("SELECT * FROM {{T}} WHERE {p}")).await);
            let second = match i % 4 {
                0 => format!(
                    "SELECT time, span_id, event_type, name FROM {{T}} WHERE {p} ORDER BY time, span_id, event_type LIMIT 7"),
                1 => format!(
                    "SELECT time, span_id, event_type, depth FROM {{T}} WHERE {p} ORDER BY time DESC, span_id, event_type LIMIT 7"),
                2 => {
                    let p = predicate(&mut rng, &values, "b.", 2);
                    format!(
                        "SELECT b.name, count(*), sum(CAST(e.time - b.time AS BIGINT)) FROM {{T}} b JOIN {{T}} e ON b.span_id = e.span_id \
                         WHERE b.event_type = 'begin' AND e.event_type = 'end' AND {p} GROUP BY b.name")
                }
                _ => format!("SELECT count(*), min(time), max(depth) FROM {{T}} WHERE {p}"),
            };
            outcomes.push(same(&ctx, &reference, pid, &second).await);
        }
        let compared = outcomes.iter().filter(|o| **o == Compared::Rows).count();
        println!(
            "{backend:?}: {compared} of {} random queries compared on rows; refused by both: {:?}",
            outcomes.len(),
            outcomes.iter().filter(|o| **o != Compared::Rows).collect::<Vec<_>>()
        );
        assert!(compared * 10 >= outcomes.len() * 8, "only {compared} of {} compared", outcomes.len());
    }

    async fn projections_are_followed_exactly(backend: Backend) {
        let rec = shared_recording();
        let t = open(backend).await;
        store(&t.lake, rec).await;
        let pid = rec.process.process_id;
        let ctx = context(&t.lake);
        let reference = reference(backend, rec);
        let table = Arc::new(AsyncEventsTable::new(t.lake.clone(), pid, TimeBounds::ALL, ScanOptions::default()));
        for (projection, names, sql, builder) in [
            (vec![8, 2], vec!["name", "time"], "SELECT name, time FROM ref", true),
            (vec![12, 0, 4], vec!["properties", "stream_id", "span_id"], "SELECT properties, stream_id, span_id FROM ref", true),
            // DataFusion's logical plans refuse a column twice; the scan itself must not.
            (vec![2, 2, 8], vec!["time", "time", "name"], "SELECT time, time AS t2, name FROM ref", false),
        ] {
            // Through the logical plan, as other engines and plan round trips build it.
            if builder {
            let plan = LogicalPlanBuilder::scan("t", provider_as_source(table.clone()), Some(projection.clone()))
                .unwrap()
                .build()
                .unwrap();
            let batches = ctx.execute_logical_plan(plan).await.unwrap().collect().await.unwrap();
            assert_eq!(sorted_lines(&batches), sorted_lines(&query(&reference, sql).await), "{projection:?}");
            }
            // The scan itself: its schema and every batch follow the projection.
            let state = ctx.state();
            let exec = table.scan(&state, Some(&projection), &[], None).await.unwrap();
            let schema = exec.schema();
            let got: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            assert_eq!(got, names);
            let batches = collect(exec.clone(), ctx.task_ctx()).await.unwrap();
            let want = query(&reference, sql).await;
            for b in &batches {
                assert_eq!(b.schema(), exec.schema());
            }
            assert_eq!(sorted_lines(&batches), sorted_lines(&want), "{projection:?}");
        }
        // A residual filter (one the scan cannot apply) on a column outside the projection.
        let plan = LogicalPlanBuilder::scan_with_filters(
            "t",
            provider_as_source(table.clone()),
            Some(vec![8, 2]),
            vec![col("line").gt(col("depth")), col("event_type").eq(lit("end"))],
        )
        .unwrap()
        .build()
        .unwrap();
        let state = ctx.state();
        let physical = state.create_physical_plan(&plan).await.unwrap();
        let batches = collect(physical, ctx.task_ctx()).await.unwrap();
        let want = query(&reference, "SELECT name, time FROM ref WHERE line > depth AND event_type = 'end'").await;
        assert_eq!(sorted_lines(&batches), sorted_lines(&want));
        assert_eq!(batches[0].schema().field(0).name(), "name");
    }

    async fn shared_blocks_belong_to_one_query(backend: Backend) {
        let rec = shared_recording();
        let t = open(backend).await;
        store(&t.lake, rec).await;
        let pid = rec.process.process_id;
        let ctx = context(&t.lake);
        let total = rec.blocks.len();
        let join = format!(
            "SELECT count(*) FROM async_events('{pid}') b JOIN async_events('{pid}') e ON b.span_id = e.span_id \
             WHERE b.event_type = 'begin' AND e.event_type = 'end'"
        );
        // Two self-joins at once: each fetches every block once and shares it with itself only.
        let ((r1, m1), (r2, m2)) = tokio::join!(run_measured(&ctx, &join), run_measured(&ctx, &join));
        assert_eq!(count(&r1), count(&r2));
        for m in [&m1, &m2] {
            assert_eq!(m.get("blocks_fetched"), total, "{m:?}");
            assert_eq!(m.get("blocks_shared"), total, "{m:?}");
        }
        // A plan built but never run pins nothing for the queries that follow.
        let idle = ctx.sql(&join).await.unwrap().create_physical_plan().await.unwrap();
        let df = ctx.sql(&format!("SELECT count(*) FROM async_events('{pid}')")).await.unwrap();
        let plan = df.create_physical_plan().await.unwrap();
        collect(plan.clone(), ctx.task_ctx()).await.unwrap();
        let held = |plan: &Arc<dyn ExecutionPlan>| {
            let mut out = vec![];
            scans(plan, &mut out);
            out.iter().map(|s| s.shared_bytes_held()).sum::<usize>()
        };
        assert_eq!(held(&plan), 0, "the finished query keeps no block");
        assert_eq!(held(&idle), 0, "and none for the idle plan");
        drop(idle);
    }
}

fn scans<'a>(plan: &'a Arc<dyn ExecutionPlan>, out: &mut Vec<&'a AsyncEventsExec>) {
    if let Some(s) = plan.downcast_ref::<AsyncEventsExec>() {
        out.push(s);
    }
    for c in plan.children() {
        scans(c, out);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_layouts_are_compiled_once_per_stream() {
    let rec = shared_recording();
    let t = open(Backend::Sqlite).await;
    store(&t.lake, rec).await;
    let ctx = SessionContext::new();
    let table = AsyncEventsTable::new(
        t.lake.clone(),
        rec.process.process_id,
        TimeBounds::ALL,
        ScanOptions::default(),
    );
    let state = ctx.state();
    for _ in 0..3 {
        table.scan(&state, None, &[], None).await.unwrap();
    }
    assert_eq!(table.caches().layouts_compiled(), rec.streams.len());
}

/// Column values of the recording, for random predicates.
struct Values {
    names: Vec<String>,
    targets: Vec<String>,
    streams: Vec<String>,
    blocks: Vec<String>,
    lines: Vec<String>,
    span_ids: Vec<i64>,
    start: i64,
    end: i64,
}

impl Values {
    async fn of(reference: &SessionContext, rec: &Recording) -> Self {
        let ints = |b: Vec<RecordBatch>| -> Vec<i64> {
            b.iter()
                .flat_map(|b| {
                    let c = b.column(0).as_primitive::<Int64Type>();
                    (0..c.len()).map(|i| c.value(i)).collect::<Vec<_>>()
                })
                .collect()
        };
        let span_ids = ints(query(reference, "SELECT DISTINCT span_id FROM ref ORDER BY 1").await);
        let times = query(
            reference,
            "SELECT CAST(min(time) AS BIGINT), CAST(max(time) AS BIGINT) FROM ref",
        )
        .await;
        let (start, end) = (
            times[0].column(0).as_primitive::<Int64Type>().value(0),
            times[0].column(1).as_primitive::<Int64Type>().value(0),
        );
        Self {
            names: distinct(reference, "name").await,
            targets: distinct(reference, "target").await,
            streams: rec
                .streams
                .iter()
                .map(|s| s.stream_id.to_string())
                .collect(),
            blocks: distinct(reference, "block_id").await,
            lines: distinct(reference, "line").await,
            span_ids,
            start,
            end,
        }
    }
}

/// A small deterministic generator (xorshift64*).
/// A random predicate over the columns (prefixed with `q`), `depth` levels of AND/OR/NOT.
fn predicate(rng: &mut Rng, v: &Values, q: &str, depth: u32) -> String {
    if depth > 0 && rng.below(3) == 0 {
        let a = predicate(rng, v, q, depth - 1);
        let b = predicate(rng, v, q, depth - 1);
        return match rng.below(3) {
            0 => format!("({a} AND {b})"),
            1 => format!("({a} OR {b})"),
            _ => format!("NOT ({a})"),
        };
    }
    atom(rng, v, q)
}

fn atom(rng: &mut Rng, v: &Values, q: &str) -> String {
    let cmp = ["=", "<>", "<", "<=", ">", ">="];
    let op = *rng.pick(&cmp);
    let null_or = |rng: &mut Rng, s: String| {
        if rng.below(5) == 0 {
            "NULL".to_string()
        } else {
            s
        }
    };
    let list = |rng: &mut Rng, items: Vec<String>| {
        let mut items = items;
        if rng.below(3) == 0 {
            items.push("NULL".into());
        }
        let not = if rng.below(4) == 0 { "NOT " } else { "" };
        format!("{not}IN ({})", items.join(", "))
    };
    let quoted = |s: &String| format!("'{s}'");
    match rng.below(13) {
        0 | 1 => {
            // time, in several spellings
            let ns = v.start + (rng.next() % (v.end - v.start + 1) as u64) as i64;
            let lit = match rng.below(5) {
                0 => format!("'{}'", ns_text(ns, 0)),
                1 => format!("'{}'", ns_text(ns, 330)),
                2 => format!("to_timestamp_micros({})", ns / 1_000),
                3 => format!("to_timestamp_millis({})", ns / 1_000_000),
                _ => format!("arrow_cast({ns}, 'Timestamp(Nanosecond, Some(\"-08:00\"))')"),
            };
            if rng.below(4) == 0 {
                let hi = ns + (rng.next() % 400_000_000) as i64;
                format!("{q}time BETWEEN {lit} AND '{}'", ns_text(hi, -300))
            } else {
                format!("{q}time {op} {}", null_or(rng, lit))
            }
        }
        2 => {
            let s = rng.pick(&v.streams).clone();
            let spelled = match rng.below(4) {
                0 => s.to_uppercase(),
                1 => s.replace('-', ""),
                _ => s,
            };
            if rng.below(2) == 0 {
                format!("{q}stream_id = {}", null_or(rng, quoted(&spelled)))
            } else {
                let other = rng.pick(&v.streams).clone();
                format!(
                    "{q}stream_id {}",
                    list(rng, vec![quoted(&spelled), quoted(&other), "'nope'".into()])
                )
            }
        }
        3 => {
            let t = *rng.pick(&["'begin'", "'end'", "'nope'", "NULL"]);
            match rng.below(3) {
                0 => format!("{q}event_type {op} {t}"),
                1 => format!("{t} = {q}event_type"),
                _ => format!(
                    "{q}event_type {}",
                    list(rng, vec![t.into(), "'end'".into()])
                ),
            }
        }
        4 => {
            let d = *rng.pick(&[
                "0",
                "1",
                "2",
                "3",
                "-1",
                "4294967296",
                "2.5",
                "NULL",
                "CAST(2 AS TINYINT)",
            ]);
            if rng.below(4) == 0 {
                format!("{q}depth BETWEEN {d} AND 2")
            } else if rng.below(4) == 0 {
                format!("{q}depth {}", list(rng, vec![d.into(), "1".into()]))
            } else {
                format!("{q}depth {op} {d}")
            }
        }
        5 | 6 => {
            let column = *rng.pick(&["span_id", "parent_span_id"]);
            let id = rng.pick(&v.span_ids).to_string();
            let other = *rng.pick(&["-1", "0", "100000000000000000000", "7.5", "NULL"]);
            match rng.below(3) {
                0 => format!("{q}{column} {op} {id}"),
                1 => format!("{q}{column} {}", list(rng, vec![id, other.into()])),
                _ => format!("{q}{column} = {other}"),
            }
        }
        7 | 8 => {
            let (column, values) = if rng.below(2) == 0 {
                ("name", &v.names)
            } else {
                ("target", &v.targets)
            };
            let a = quoted(rng.pick(&values[..]));
            let b = quoted(rng.pick(&values[..]));
            match rng.below(4) {
                0 => format!("{q}{column} {op} {}", null_or(rng, a)),
                1 => format!("{a} = {q}{column}"),
                2 => format!("{q}{column} {}", list(rng, vec![a, b])),
                _ => format!("({q}{column} = {a} OR {q}{column} = {b})"),
            }
        }
        9 => {
            let a = quoted(rng.pick(&v.blocks[..]));
            format!("{q}block_id {}", list(rng, vec![a, "'x'".into()]))
        }
        10 => {
            let l = rng.pick(&v.lines).clone();
            format!("{q}line {}", list(rng, vec![l, "1".into()]))
        }
        11 => {
            let (p, s) = *rng.pick(&[(1, 0), (2, 0), (10, 0), (20, 0), (20, 2), (38, 10)]);
            let column = *rng.pick(&["depth", "span_id", "line"]);
            let value = if column == "span_id" {
                rng.pick(&v.span_ids).to_string()
            } else {
                "2".into()
            };
            format!("CAST(TRY_CAST({q}{column} AS DECIMAL({p},{s})) AS BIGINT) {op} {value}")
        }
        _ => {
            // Across columns, literals and casts.
            match rng.below(4) {
                0 => format!("({q}depth = 1 OR {q}event_type = 'end')"),
                1 => format!("{q}depth {op} {q}line"),
                2 => "NULL".into(),
                _ => format!(
                    "CAST({q}name AS VARCHAR) {op} {}",
                    quoted(rng.pick(&v.names[..]))
                ),
            }
        }
    }
}

/// A merge polls one partition at a time and a join one side before the other: fetches in
/// flight in a partition nobody polls must not hold what the others need (fetch permits, the
/// lock of a block shared with another scan). Eight streams, two permits, every shape that
/// merges or joins: each finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unevenly_polled_partitions_do_not_stall_the_scan() {
    use common::realistic::{Shape, realistic};
    let rec = realistic(
        Shape {
            streams: 8,
            blocks_per_stream: 6,
            buffer_bytes: 8 * 1024,
            block_duration: chrono::Duration::milliseconds(500),
        },
        chrono::Utc::now() - chrono::Duration::hours(1),
        5,
    );
    let t = open(Backend::Sqlite).await;
    store(&t.lake, &rec).await;
    let pid = rec.process.process_id;
    let ctx = SessionContext::new();
    datafusion_async_events::register_with(
        &ctx,
        t.lake.clone(),
        ScanOptions {
            max_concurrent_fetches: 2,
            ..ScanOptions::default()
        },
    );
    let reference = reference(Backend::Sqlite, &rec);
    for sql in [
        "SELECT time, span_id, event_type FROM {T} ORDER BY time, span_id, event_type",
        "SELECT count(*) FROM {T} b JOIN {T} e ON b.span_id = e.span_id WHERE b.event_type = 'begin' AND e.event_type = 'end'",
        "SELECT count(*) FROM (SELECT time FROM {T} ORDER BY time) a CROSS JOIN (SELECT max(time) FROM {T})",
    ] {
        let ours = sql.replace("{T}", &format!("async_events('{pid}')"));
        let got = tokio::time::timeout(std::time::Duration::from_secs(60), query(&ctx, &ours))
            .await
            .unwrap_or_else(|_| panic!("stalled: {ours}"));
        assert_eq!(
            lines(&got),
            lines(&query(&reference, &sql.replace("{T}", "ref")).await),
            "{sql}"
        );
    }
    let spans = format!(
        "SELECT count(*) FROM async_spans('{pid}') s CROSS JOIN (SELECT max(\"end\") FROM async_spans('{pid}'))"
    );
    tokio::time::timeout(std::time::Duration::from_secs(60), query(&ctx, &spans))
        .await
        .expect("stalled: spans cross join");
}
