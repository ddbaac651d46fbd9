//! `async_spans`: one row per span, paired inside the scan. Equal, row for row, to the LEFT JOIN
//! of begin and end events it replaces (on recordings of the real producer, both lakes); range
//! semantics at block and range edges; pushdown into the events scan, proved by its counters.

#[macro_use]
mod common;

use common::lakes::{Backend, open, store};
use common::producer::Recording;
use common::spans_workload::troubled;
use common::sql::{context, context_with, lines, query, reference, run_measured, sorted_lines};
use common::workload::shared_recording;
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Int64Type;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_async_events::provider::ScanOptions;
use std::time::Duration;

fn ts(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// A session whose functions read `margin_ms` around ranges.
fn with_margin(lake: &datafusion_async_events::Lake, margin_ms: u64) -> SessionContext {
    let ctx = SessionContext::new_with_config(SessionConfig::new());
    datafusion_async_events::register_with(
        &ctx,
        lake.clone(),
        ScanOptions {
            span_margin: Duration::from_millis(margin_ms),
            ..ScanOptions::default()
        },
    );
    ctx
}

/// What `async_spans` must return when it reads the events of `[lo, hi]`, computed from the
/// whole-process LEFT JOIN on the reference table: partners outside are NULL, a missing end is
/// `false` only if the events read reach the end of the recording. `keep` selects the spans.
fn expected_sql(lo: i64, hi: i64, reads_to_end: bool, keep: &str) -> String {
    let (lo, hi) = (
        format!("to_timestamp_nanos({lo})"),
        format!("to_timestamp_nanos({hi})"),
    );
    let no_end = if reads_to_end { "false" } else { "NULL" };
    format!(
        "WITH f AS ({join}) SELECT span_id, parent_span_id, depth, hash, name, filename, target, line, \
         CASE WHEN begin >= {lo} THEN begin END AS begin, \
         CASE WHEN \"end\" <= {hi} THEN \"end\" END AS \"end\", \
         CASE WHEN begin >= {lo} AND \"end\" <= {hi} THEN duration END AS duration, \
         CASE WHEN begin >= {lo} THEN begin_stream_id END AS begin_stream_id, \
         CASE WHEN \"end\" <= {hi} THEN end_stream_id END AS end_stream_id, \
         CASE WHEN begin >= {lo} AND \"end\" <= {hi} THEN migrated END AS migrated, \
         CASE WHEN \"end\" <= {hi} THEN true WHEN \"end\" IS NULL THEN {no_end} END AS finished, \
         CASE WHEN \"end\" <= {hi} THEN properties END AS properties \
         FROM f WHERE ((begin >= {lo} AND begin <= {hi}) OR (\"end\" >= {lo} AND \"end\" <= {hi})) AND ({keep})",
        join = LEFT_JOIN.replace("{T}", "ref")
    )
}
use std::sync::OnceLock;

fn troubled_recording() -> &'static Recording {
    static REC: OnceLock<Recording> = OnceLock::new();
    REC.get_or_init(|| std::thread::spawn(troubled).join().unwrap())
}

/// The documented LEFT JOIN that `async_spans` replaces (README), over a table `{T}` of events.
const LEFT_JOIN: &str = "SELECT b.span_id, b.parent_span_id, b.depth, b.hash, b.name, b.filename, b.target, b.line, \
     b.time AS begin, e.time AS \"end\", e.time - b.time AS duration, \
     b.stream_id AS begin_stream_id, e.stream_id AS end_stream_id, \
     b.stream_id <> e.stream_id AS migrated, e.span_id IS NOT NULL AS finished, e.properties \
     FROM {T} b LEFT JOIN {T} e ON b.span_id = e.span_id AND e.event_type = 'end' \
     WHERE b.event_type = 'begin'";

const ALL_COLUMNS: &str = "span_id, parent_span_id, depth, hash, name, filename, target, line, begin, \"end\", duration, begin_stream_id, end_stream_id, migrated, finished, properties";

fn count(batches: &[datafusion::arrow::array::RecordBatch]) -> i64 {
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

on_both! {
    async fn spans_equal_the_left_join_of_begin_and_end_events(backend: Backend) {
        for rec in [shared_recording(), troubled_recording()] {
            let t = open(backend).await;
            store(&t.lake, rec).await;
            let pid = rec.process.process_id;
            let reference = reference(backend, rec);
            // Also with the busy streams cut into runs read by partitions of their own.
            for partitions in [None, Some(8)] {
                let config = partitions.map_or(SessionConfig::new(), |n| SessionConfig::new().with_target_partitions(n));
                let ctx = context_with(&t.lake, config);
                let got = query(&ctx, &format!("SELECT {ALL_COLUMNS} FROM async_spans('{pid}')")).await;
                let want = query(&reference, &LEFT_JOIN.replace("{T}", "ref")).await;
                assert_eq!(got[0].schema().field(10).data_type(), want[0].schema().field(10).data_type(), "duration types");
                let (got, want) = (sorted_lines(&got), sorted_lines(&want));
                assert!(got.len() > 100, "{}", got.len());
                assert_eq!(got.len(), want.len());
                assert_eq!(got, want);
                // view_instance, and the join through our own scan, say the same.
                let via_view = query(&ctx, &format!("SELECT {ALL_COLUMNS} FROM view_instance('async_spans', '{pid}')")).await;
                assert_eq!(sorted_lines(&via_view), want);
                let ours = query(&ctx, &LEFT_JOIN.replace("{T}", &format!("async_events('{pid}')"))).await;
                assert_eq!(sorted_lines(&ours), want);
            }
        }
    }
}

/// Event times of the reference: every begin and end, the first and last event of each block.
async fn edges(reference: &SessionContext) -> (Vec<i64>, Vec<i64>) {
    let ints = |b: Vec<datafusion::arrow::array::RecordBatch>| -> Vec<i64> {
        b.iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect()
    };
    let events = ints(query(reference, "SELECT CAST(time AS BIGINT) FROM ref ORDER BY 1").await);
    let blocks = ints(
        query(
            reference,
            "SELECT CAST(t AS BIGINT) FROM (SELECT min(time) AS t FROM ref GROUP BY block_id \
             UNION ALL SELECT max(time) FROM ref GROUP BY block_id) ORDER BY 1",
        )
        .await,
    );
    (events, blocks)
}

on_both! {
    async fn ranges_return_the_spans_that_overlap_them_with_partners_within_the_margin(backend: Backend) {
        let rec = troubled_recording();
        let t = open(backend).await;
        store(&t.lake, rec).await;
        let pid = rec.process.process_id;
        let reference = reference(backend, rec);
        let (events, block_edges) = edges(&reference).await;
        let (first, last) = (events[0], events[events.len() - 1]);
        let margin_ms = 20;
        let m = margin_ms as i64 * 1_000_000;
        let ctx = with_margin(&t.lake, margin_ms);
        let at = |f: f64| events[((events.len() - 1) as f64 * f) as usize];
        // Ranges: event times (inclusive edges), block edges, a range past the end (the end of
        // the recording is read: a missing end means never finished), one before the start.
        let ranges = [
            (at(0.3), at(0.6)),
            (at(0.5), at(0.5)),
            (block_edges[1], block_edges[block_edges.len() / 2]),
            (block_edges[2] + 1, block_edges[3] - 1),
            (at(0.8), last + 10 * m),
            (first - 10 * m, at(0.1)),
            // The slow requests began at the start and end in here.
            (first + 5 * m, first + 10 * m),
        ];
        let mut cut = [0i64; 3];
        for (r0, r1) in ranges {
            let (lo, hi) = (r0 - m, r1 + m);
            let counts = query(&ctx, &format!(
                "SELECT count(*) FILTER (WHERE begin IS NULL), count(*) FILTER (WHERE \"end\" IS NULL AND finished IS NULL), \
                 count(*) FILTER (WHERE finished = false) FROM async_spans('{pid}', '{}', '{}')", ts(r0), ts(r1))).await;
            for (i, c) in cut.iter_mut().enumerate() {
                *c += counts[0].column(i).as_primitive::<Int64Type>().value(0);
            }
            let reads_to_end = hi >= last + m;
            let got = query(&ctx, &format!("SELECT {ALL_COLUMNS} FROM async_spans('{pid}', '{}', '{}')", ts(r0), ts(r1))).await;
            let keep = format!(
                "(begin IS NULL OR begin <= to_timestamp_nanos({r1})) AND (\"end\" IS NULL OR \"end\" >= to_timestamp_nanos({r0}))"
            );
            let want = query(&reference, &expected_sql(lo, hi, reads_to_end, &keep)).await;
            let (got, want) = (sorted_lines(&got), sorted_lines(&want));
            assert!(!want.is_empty(), "[{r0}, {r1}]");
            assert_eq!(got, want, "[{}, {}]", ts(r0), ts(r1));
        }
        let [begin_cut, end_cut, never] = cut;
        assert!(begin_cut > 0 && end_cut > 0 && never > 0, "every rule exercised: {cut:?}");
        // A filter on begin reads the ends up to the margin after its upper bound.
        let (x, y) = (at(0.2), at(0.7));
        let got = query(&ctx, &format!(
            "SELECT {ALL_COLUMNS} FROM async_spans('{pid}') WHERE begin >= '{}' AND begin < '{}'", ts(x), ts(y))).await;
        let keep = format!("begin >= to_timestamp_nanos({x}) AND begin < to_timestamp_nanos({y})");
        let want = query(&reference, &expected_sql(x, y - 1 + m, false, &keep)).await;
        assert_eq!(sorted_lines(&got), sorted_lines(&want));
        // …and one on end the begins up to the margin before its lower bound.
        let got = query(&ctx, &format!(
            "SELECT {ALL_COLUMNS} FROM async_spans('{pid}') WHERE \"end\" BETWEEN '{}' AND '{}'", ts(x), ts(y))).await;
        let keep = format!("\"end\" BETWEEN to_timestamp_nanos({x}) AND to_timestamp_nanos({y})");
        let want = query(&reference, &expected_sql(x - m, y, false, &keep)).await;
        assert_eq!(sorted_lines(&got), sorted_lines(&want));
    }

    async fn filters_prune_the_events_scan_and_sql_on_spans_works(backend: Backend) {
        let rec = troubled_recording();
        let t = open(backend).await;
        store(&t.lake, rec).await;
        let pid = rec.process.process_id;
        let ctx = context(&t.lake);
        let reference = reference(backend, rec);
        let total_events = rec.decode(
            datafusion_async_events::format::ColumnSet::none(),
            &datafusion_async_events::format::RowFilter::all(),
        ).iter().map(|b| b.num_rows()).sum::<usize>();
        let request = common::spans_workload::name("request");
        for (filter, join_filter) in [
            (format!("name = '{request}'"), format!("b.name = '{request}'")),
            ("depth >= 4".to_string(), "b.depth >= 4".to_string()),
            ("span_id IN (3, 5, 8)".to_string(), "b.span_id IN (3, 5, 8)".to_string()),
            (format!("target = '{}' AND parent_span_id = 0", common::workload::target()), format!("b.target = '{}' AND b.parent_span_id = 0", common::workload::target())),
        ] {
            let (rows, m) = run_measured(&ctx, &format!("SELECT {ALL_COLUMNS} FROM async_spans('{pid}') WHERE {filter}")).await;
            let want = query(&reference, &format!("{} AND {join_filter}", LEFT_JOIN.replace("{T}", "ref"))).await;
            assert_eq!(sorted_lines(&rows), sorted_lines(&want), "{filter}");
            // Only the events of the selected spans left the scan.
            let spans = sorted_lines(&want).len();
            assert!(m.get("rows_out") <= 2 * spans && m.get("rows_out") < total_events / 2, "{filter}: {m:?}");
        }
        // Durations order and aggregate in SQL.
        let got = query(&ctx, &format!(
            "SELECT name, count(*), avg(duration), max(duration) FROM async_spans('{pid}') GROUP BY name ORDER BY name")).await;
        let want = query(&reference, &format!(
            "SELECT name, count(*), avg(duration), max(duration) FROM ({}) GROUP BY name ORDER BY name", LEFT_JOIN.replace("{T}", "ref"))).await;
        assert_eq!(lines(&got), lines(&want));
        let got = query(&ctx, &format!("SELECT span_id, duration FROM async_spans('{pid}') WHERE finished ORDER BY duration DESC, span_id LIMIT 5")).await;
        let want = query(&reference, &format!("SELECT span_id, duration FROM ({}) WHERE finished ORDER BY duration DESC, span_id LIMIT 5", LEFT_JOIN.replace("{T}", "ref"))).await;
        assert_eq!(lines(&got), lines(&want));
        // The two slow requests sleep 150 ms (a sleep never ends early).
        let request = common::spans_workload::name("request");
        let slowest = query(&ctx, &format!(
            "SELECT CAST(duration AS BIGINT) AS ns FROM async_spans('{pid}') WHERE name = '{request}' AND finished ORDER BY ns DESC LIMIT 2")).await;
        let slowest = slowest[0].column(0).as_primitive::<Int64Type>();
        assert!(slowest.values().iter().all(|&ns| ns >= 150_000_000), "{slowest:?}");
        // LIMIT stops the pairing early.
        let got = query(&ctx, &format!("SELECT count(*) FROM (SELECT * FROM async_spans('{pid}') LIMIT 7)")).await;
        assert_eq!(count(&got), 7);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_pairing_operator_and_its_counters() {
    let rec = troubled_recording();
    let t = open(Backend::Sqlite).await;
    store(&t.lake, rec).await;
    let pid = rec.process.process_id;
    let ctx = context_with(&t.lake, SessionConfig::new());
    let plan = lines(
        &query(
            &ctx,
            &format!("EXPLAIN SELECT name, duration FROM async_spans('{pid}') WHERE depth = 1"),
        )
        .await,
    )
    .join("\n");
    assert!(plan.contains("AsyncSpansExec: pairing begin/end by span_id, no end=[never finished], projection=[name, duration]"), "{plan}");
    // The operator reads the stream partitions itself, merging whole batches: no row merge.
    assert!(!plan.contains("SortPreservingMergeExec"), "{plan}");
    assert!(!plan.contains("CoalescePartitionsExec"), "{plan}");
    assert!(plan.contains("filter=[depth=1]"), "{plan}");
    let analyzed = lines(
        &query(
            &ctx,
            &format!("EXPLAIN ANALYZE SELECT count(*) FROM async_spans('{pid}')"),
        )
        .await,
    )
    .join("\n");
    for counter in [
        "events_in=",
        "spans_out=",
        "spans_unfinished=",
        "spans_open_peak=",
        "spans_begin_unknown=",
    ] {
        assert!(analyzed.contains(counter), "{counter}: {analyzed}");
    }
    let spans = query(
        &ctx,
        &format!(
            "SELECT count(*), sum(CASE WHEN finished THEN 0 ELSE 1 END) FROM async_spans('{pid}')"
        ),
    )
    .await;
    let unfinished = spans[0].column(1).as_primitive::<Int64Type>().value(0);
    assert!(unfinished >= 8, "timeouts and select! losers: {unfinished}");
    assert!(
        analyzed.contains(&format!("spans_unfinished={unfinished}")),
        "{analyzed}"
    );
}

/// Runs the lints on a lake holding `rec` and returns the rows each found.
async fn lint_rows(rec: &Recording) -> Vec<(&'static str, Vec<String>)> {
    let t = open(Backend::Sqlite).await;
    store(&t.lake, rec).await;
    let ctx = context(&t.lake);
    let mut out = Vec::new();
    for lint in datafusion_async_events::lints::lints(rec.process.process_id, None, None) {
        out.push((lint.name, lines(&query(&ctx, &lint.sql).await)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lints_find_what_the_troubled_workload_does_and_nothing_in_a_clean_one() {
    use common::spans_workload::name;
    let found = lint_rows(troubled_recording()).await;
    let [(_, never), (_, outliving), _, (_, repeated)] = found.as_slice() else {
        panic!("four lints: {found:?}")
    };
    // 4 races lose a step each, 4 tops drop a leaf on timeout.
    assert_eq!(never.len(), 8, "{never:?}");
    assert_eq!(
        never
            .iter()
            .filter(|l| l.starts_with(&format!("{}|", name("step"))))
            .count(),
        4
    );
    // The step spawned by fire_and_forget outlives it.
    assert_eq!(outliving.len(), 1, "{outliving:?}");
    assert!(
        outliving[0].starts_with(&format!("{}|{}|", name("step"), name("fire_and_forget"))),
        "{outliving:?}"
    );
    assert!(
        repeated.is_empty(),
        "micromegas's ids are unique: {repeated:?}"
    );
    // The clean workload trips neither of these.
    let clean = std::thread::spawn(common::spans_workload::clean)
        .join()
        .unwrap();
    for (lint, rows) in lint_rows(&clean).await.into_iter().take(2) {
        assert!(rows.is_empty(), "{lint}: {rows:?}");
    }
}

/// The slow-outlier lint on durations written exactly (real sleeps stretch on a loaded
/// machine): 40 spans of 3 ms and two of 150 ms, then 40 spans of 5 ms ± 0.5 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slow_lint_finds_exactly_the_outliers() {
    let ms = |v: f64| (v * 1e6) as i64;
    let mut durations = vec![ms(3.0); 40];
    durations[7] = ms(150.0);
    durations[33] = ms(150.2);
    let slow = lint_rows(&common::scripted::latencies(&durations)).await;
    let (_, rows) = &slow[2];
    let ids: Vec<&str> = rows.iter().map(|r| r.split('|').nth(1).unwrap()).collect();
    assert_eq!(
        ids,
        ["34", "8"],
        "the two slow spans, slowest first: {rows:?}"
    );
    assert!(
        rows[0].contains("|150.2|3.0|"),
        "duration and the name's p50: {rows:?}"
    );
    // Two spans of id 5: the fourth lint lists the id (twice begun, twice ended), and the
    // pairing keeps all four events.
    let reused = common::scripted::spans_with_ids(&[(4, 10), (5, 20), (5, 30), (6, 40)]);
    let found = lint_rows(&reused).await;
    assert_eq!(
        found[3].1,
        ["5|begin|2|", "5|end|2|"].map(|p| found[3]
            .1
            .iter()
            .find(|r| r.starts_with(p))
            .cloned()
            .unwrap_or_default())
    );
    assert_eq!(found[3].1.len(), 2, "{:?}", found[3]);
    let steady: Vec<i64> = (0..40).map(|i| ms(4.5 + (i % 11) as f64 / 10.0)).collect();
    let slow = lint_rows(&common::scripted::latencies(&steady)).await;
    assert!(slow[2].1.is_empty(), "{:?}", slow[2]);
}

/// A query range (what a Flight SQL request's headers set) selects the spans overlapping it,
/// like the function's own bounds: it does not cut the margin the partners are read in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_range_bounds_spans_like_the_functions_arguments() {
    let rec = troubled_recording();
    let t = open(Backend::Sqlite).await;
    store(&t.lake, rec).await;
    let pid = rec.process.process_id;
    let reference = reference(Backend::Sqlite, rec);
    let (events, _) = edges(&reference).await;
    let (r0, r1) = (events[events.len() / 3], events[events.len() / 2]);
    let margin = Duration::from_millis(20);
    let ranged = SessionContext::new();
    datafusion_async_events::register_with(
        &ranged,
        t.lake.clone(),
        ScanOptions {
            span_margin: margin,
            query_range: datafusion_async_events::TimeBounds::new(Some(r0), Some(r1)),
            ..ScanOptions::default()
        },
    );
    let got = query(
        &ranged,
        &format!("SELECT {ALL_COLUMNS} FROM async_spans('{pid}')"),
    )
    .await;
    let want = query(
        &with_margin(&t.lake, 20),
        &format!(
            "SELECT {ALL_COLUMNS} FROM async_spans('{pid}', '{}', '{}')",
            ts(r0),
            ts(r1)
        ),
    )
    .await;
    assert!(!want.is_empty());
    assert_eq!(sorted_lines(&got), sorted_lines(&want));
}
