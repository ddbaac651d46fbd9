//! SQL through a SessionContext on SQLite and PostgreSQL lakes filled by the real producer:
//! every query pattern micromegas documents for its async_events view, with what the producer
//! really records.

#[macro_use]
mod common;

use common::lakes::{Backend, open, store};
use common::sql::{context, lines, query, reference, sorted_lines};
use common::workload::{self, SHARED_TOPS, shared_recording};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Float64Type, Int64Type, UInt32Type};

async fn lake_with_workload(backend: Backend) -> (common::lakes::TestLake, uuid::Uuid) {
    let t = open(backend).await;
    let rec = shared_recording();
    store(&t.lake, rec).await;
    (t, rec.process.process_id)
}

fn int(batches: &[datafusion::arrow::array::RecordBatch]) -> i64 {
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

on_both! {
    async fn listing_ordered_by_time_with_limit(backend: Backend) {
        let (t, pid) = lake_with_workload(backend).await;
        let ctx = context(&t.lake);
        let cols = "stream_id, block_id, time, event_type, span_id, parent_span_id, depth, name, target, filename, line";
        let got = query(&ctx, &format!("SELECT {cols} FROM view_instance('async_events', '{pid}') ORDER BY time, span_id, event_type LIMIT 25")).await;
        let want = query(&reference(backend, shared_recording()), &format!("SELECT {cols} FROM ref ORDER BY time, span_id, event_type LIMIT 25")).await;
        assert_eq!(lines(&got), lines(&want));
        assert_eq!(lines(&got).len(), 25);
        let types = query(&ctx, &format!("SELECT DISTINCT event_type FROM async_events('{pid}') ORDER BY 1")).await;
        assert_eq!(lines(&types), ["begin", "end"]);
    }

    async fn parent_child_self_join(backend: Backend) {
        let (t, pid) = lake_with_workload(backend).await;
        let ctx = context(&t.lake);
        let sql = format!(
            "SELECT parent.name AS parent, child.name AS child, parent.depth AS parent_depth, child.depth AS child_depth
             FROM async_events('{pid}') parent JOIN async_events('{pid}') child ON parent.span_id = child.parent_span_id
             WHERE parent.event_type = 'begin' AND child.event_type = 'begin'"
        );
        let pairs = query(&ctx, &sql).await;
        let rows: usize = pairs.iter().map(|b| b.num_rows()).sum();
        let n = SHARED_TOPS as usize;
        // Every span but the roots (top, the plain-spawn leaf, wrapper, handed) has its parent.
        assert_eq!(rows, workload::spans(SHARED_TOPS) - 4 * n);
        let broken = query(&ctx, &format!("SELECT count(*) FROM ({sql}) WHERE child_depth <> parent_depth + 1")).await;
        // Real programs break `child.depth = parent.depth + 1`: here the leaf of a future created
        // at the root and polled inside another span.
        assert_eq!(int(&broken), n as i64);
        let broken_parent = query(&ctx, &format!("SELECT DISTINCT parent FROM ({sql}) WHERE child_depth <> parent_depth + 1")).await;
        assert_eq!(lines(&broken_parent), [workload::handed_name()]);
    }

    async fn durations_by_joining_begin_and_end(backend: Backend) {
        let (t, pid) = lake_with_workload(backend).await;
        let ctx = context(&t.lake);
        let inner = format!(
            "SELECT b.name, CAST((e.time - b.time) AS BIGINT) / 1000000 AS duration_ms, CAST((e.time - b.time) AS BIGINT) AS duration_ns
             FROM async_events('{pid}') b INNER JOIN async_events('{pid}') e ON b.span_id = e.span_id
             WHERE b.event_type = 'begin' AND e.event_type = 'end'"
        );
        let left = format!(
            "SELECT b.name FROM async_events('{pid}') b LEFT JOIN async_events('{pid}') e
             ON b.span_id = e.span_id AND e.event_type = 'end'
             WHERE b.event_type = 'begin' AND e.span_id IS NOT NULL"
        );
        let complete = workload::spans(SHARED_TOPS) - SHARED_TOPS as usize * workload::UNFINISHED_PER_TOP;
        let count = |sql: String| {
            let ctx = ctx.clone();
            async move { int(&query(&ctx, &format!("SELECT count(*) FROM ({sql})")).await) }
        };
        assert_eq!(count(inner.clone()).await, complete as i64);
        assert_eq!(count(left).await, complete as i64);
        let negative = query(&ctx, &format!("SELECT count(*) FROM ({inner}) WHERE duration_ns < 0")).await;
        assert_eq!(int(&negative), 0, "durations are never negative");
        // The 2 ms leaves last at least 2 ms.
        let stats = query(&ctx, &format!(
            "SELECT max(duration_ns) AS max_ns, CAST(approx_percentile_cont(duration_ns, 0.5) AS BIGINT) AS p50, CAST(approx_percentile_cont(duration_ns, 0.95) AS BIGINT) AS p95,
                    avg(duration_ns) AS avg_ns, stddev(duration_ns) AS sd, min(duration_ms) AS min_ms
             FROM ({inner}) WHERE name = '{}'", workload::middle_name())).await;
        let b = &stats[0];
        let max = b.column(0).as_primitive::<Int64Type>().value(0);
        let p50 = b.column(1).as_primitive::<Int64Type>().value(0);
        let p95 = b.column(2).as_primitive::<Int64Type>().value(0);
        assert!(p50 <= p95 && p95 <= max, "{p50} {p95} {max}");
        assert!(b.column(3).as_primitive::<Float64Type>().value(0) >= 3e6, "middle sleeps 2 + 1 ms");
        // The statistics of SQL equal the same computed here from the durations themselves.
        let all = query(&ctx, &format!(
            "SELECT duration_ns FROM ({inner}) WHERE name = '{}'", workload::middle_name())).await;
        let ns: Vec<f64> = all.iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().iter().map(|&v| v as f64).collect::<Vec<_>>()).collect();
        assert!(ns.len() >= 2);
        let mean = ns.iter().sum::<f64>() / ns.len() as f64;
        let sample_sd = (ns.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (ns.len() - 1) as f64).sqrt();
        let (sql_mean, sql_sd) = (b.column(3).as_primitive::<Float64Type>().value(0), b.column(4).as_primitive::<Float64Type>().value(0));
        assert!((sql_mean - mean).abs() <= 1e-6 * mean, "{sql_mean} vs {mean}");
        assert!((sql_sd - sample_sd).abs() <= 1e-6 * sample_sd.max(1.0), "{sql_sd} vs {sample_sd}");
        assert_eq!(max as f64, ns.iter().cloned().fold(f64::MIN, f64::max));
        assert!(b.column(5).as_primitive::<Int64Type>().value(0) >= 3);
        // Tagged ends carry their properties.
        let props = query(&ctx, &format!(
            "SELECT e.properties['rows'] FROM async_events('{pid}') b JOIN async_events('{pid}') e ON b.span_id = e.span_id
             WHERE b.event_type = 'begin' AND e.event_type = 'end' AND b.name = 'tagged_work'")).await;
        assert_eq!(lines(&props), vec!["3"; SHARED_TOPS as usize]);
    }

    async fn spans_that_never_finished(backend: Backend) {
        let (t, pid) = lake_with_workload(backend).await;
        let ctx = context(&t.lake);
        let got = query(&ctx, &format!(
            "SELECT b.name, b.depth, count(*) AS n FROM async_events('{pid}') b
             LEFT JOIN (SELECT span_id FROM async_events('{pid}') WHERE event_type = 'end') e ON b.span_id = e.span_id
             WHERE b.event_type = 'begin' AND e.span_id IS NULL GROUP BY b.name, b.depth")).await;
        assert_eq!(lines(&got), [format!("{}|1|{}", workload::leaf_name(), SHARED_TOPS)]);
    }

    async fn per_stream_counts_and_cross_thread_spans(backend: Backend) {
        let (t, pid) = lake_with_workload(backend).await;
        let ctx = context(&t.lake);
        let per_stream = query(&ctx, &format!("SELECT stream_id, COUNT(*) AS n FROM async_events('{pid}') WHERE event_type = 'begin' GROUP BY stream_id")).await;
        let total: i64 = per_stream.iter().map(|b| b.column(1).as_primitive::<Int64Type>().values().iter().sum::<i64>()).sum();
        assert_eq!(total as usize, workload::spans(SHARED_TOPS));
        let want = query(&reference(backend, shared_recording()), "SELECT stream_id, COUNT(*) AS n FROM ref WHERE event_type = 'begin' GROUP BY stream_id").await;
        assert_eq!(sorted_lines(&per_stream), sorted_lines(&want));
        let moved = String::from(
            "SELECT count(*) FROM {t} b JOIN {t} e ON b.span_id = e.span_id
             WHERE b.event_type = 'begin' AND e.event_type = 'end' AND b.stream_id <> e.stream_id");
        let got = query(&ctx, &moved.replace("{t}", &format!("async_events('{pid}')"))).await;
        let want = query(&reference(backend, shared_recording()), &moved.replace("{t}", "ref")).await;
        assert_eq!(lines(&got), lines(&want));
    }

    async fn depth_filters_and_named_spans(backend: Backend) {
        let (t, pid) = lake_with_workload(backend).await;
        let ctx = context(&t.lake);
        let reference = reference(backend, shared_recording());
        for (filter, group) in [
            ("depth = 0", "name"),
            ("depth <= 2", "depth"),
            ("depth >= 3", "depth"),
            ("depth > 0 AND depth < 3", "name"),
            ("name IN ('named_leaf', 'named_tagged', 'nope')", "name, event_type"),
        ] {
            let q = |t: &str| format!("SELECT {group}, count(*) FROM {t} WHERE {filter} GROUP BY {group}");
            let got = query(&ctx, &q(&format!("async_events('{pid}')"))).await;
            let want = query(&reference, &q("ref")).await;
            assert_eq!(sorted_lines(&got), sorted_lines(&want), "{filter}");
        }
        let depths = query(&ctx, &format!("SELECT MIN(depth), MAX(depth), COUNT(DISTINCT depth) FROM async_events('{pid}')")).await;
        assert_eq!(depths[0].column(0).as_primitive::<UInt32Type>().value(0), 0);
        assert_eq!(depths[0].column(1).as_primitive::<UInt32Type>().value(0), 2);
        let named = query(&ctx, &format!("SELECT event_type, count(*) FROM async_events('{pid}') WHERE name IN ('named_leaf', 'named_tagged') GROUP BY event_type ORDER BY 1")).await;
        let n = 2 * SHARED_TOPS;
        assert_eq!(lines(&named), [format!("begin|{n}"), format!("end|{n}")]);
        let timeline = query(&ctx, &format!(
            "SELECT REPEAT('  ', CAST(depth AS BIGINT)) || name AS scope, date_trunc('minute', time) AS minute
             FROM async_events('{pid}') WHERE time >= NOW() - INTERVAL '10 minutes' AND event_type = 'begin' ORDER BY time LIMIT 5")).await;
        assert_eq!(lines(&timeline).len(), 5);
    }

    async fn thread_streams_name_the_threads_behind_stream_ids(backend: Backend) {
        let (t, pid) = lake_with_workload(backend).await;
        let ctx = context(&t.lake);
        let per_thread = query(&ctx, &format!(
            "SELECT t.thread_name, count(*) AS spans, count(DISTINCT t.thread_id) AS threads
             FROM async_events('{pid}') e JOIN thread_streams('{pid}') t ON e.stream_id = t.stream_id
             WHERE e.event_type = 'begin' GROUP BY t.thread_name")).await;
        assert_eq!(lines(&per_thread), [format!("tokio-rt-worker|{}|2", workload::spans(SHARED_TOPS))]);
        let streams = query(&ctx, &format!("SELECT sum(blocks), sum(events), min(begin) <= max(\"end\") FROM thread_streams('{pid}')")).await;
        let rec = shared_recording();
        let events: i64 = rec.blocks.iter().map(|b| i64::from(b.nb_objects)).sum();
        assert_eq!(lines(&streams), [format!("{}|{events}|true", rec.blocks.len())]);
        let err = common::sql::query_err(&ctx, "SELECT * FROM thread_streams('global')").await;
        assert!(err.contains("'global' is not supported"), "{err}");
    }

    async fn table_functions_lists_every_function_with_an_example_that_runs(backend: Backend) {
        let (t, pid) = lake_with_workload(backend).await;
        let ctx = context(&t.lake);
        let docs = query(&ctx, "SELECT function_name, arguments, example FROM table_functions").await;
        let names: Vec<String> = docs.iter().flat_map(|b| {
            let c = b.column(0).as_string::<i32>();
            (0..c.len()).map(|i| c.value(i).to_owned()).collect::<Vec<_>>()
        }).collect();
        // Exactly the table functions DataFusion has registered, beyond its own.
        let own = datafusion::prelude::SessionContext::new().state().table_functions().len();
        let registered = ctx.state().table_functions().keys().cloned().collect::<std::collections::BTreeSet<_>>();
        assert_eq!(registered.len() - own, names.len(), "{registered:?} against {names:?}");
        for name in &names {
            assert!(registered.contains(name), "{name} is listed but not registered");
        }
        assert!(names.contains(&"async_spans".to_owned()), "{names:?}");
        // Every example runs as written, once given a process id.
        for b in &docs {
            let examples = b.column(2).as_string::<i32>();
            for i in 0..examples.len() {
                let sql = examples.value(i).replace("<process_id>", &pid.to_string());
                let rows = query(&ctx, &sql).await;
                let n: usize = rows.iter().map(|r| r.num_rows()).sum();
                assert!(n > 0, "{sql} gave no rows");
            }
        }
    }

    async fn property_functions_read_the_end_properties(backend: Backend) {
        let (t, pid) = lake_with_workload(backend).await;
        let ctx = context(&t.lake);
        // Against DataFusion's own map access of the same column.
        let by_function = query(&ctx, &format!(
            "SELECT name, property_get(properties, 'ROWS') AS r, property_get(properties, 'kind') AS k,
                    properties_length(properties) AS n,
                    jsonb_as_string(jsonb_get(properties, 'rows')) AS j,
                    jsonb_format_json(properties_to_jsonb(properties)) AS json
             FROM async_events('{pid}') WHERE event_type = 'end' AND properties_length(properties) > 0
             ORDER BY name, r, k")).await;
        let by_map = query(&ctx, &format!(
            "SELECT name, properties['rows'] AS r, properties['kind'] AS k,
                    cardinality(map_keys(properties)) AS n, properties['rows'] AS j,
                    CASE WHEN properties['rows'] IS NOT NULL THEN '{{\"rows\":\"' || properties['rows'] || '\"}}'
                         ELSE '{{\"kind\":\"' || properties['kind'] || '\"}}' END AS json
             FROM async_events('{pid}') WHERE event_type = 'end' AND cardinality(map_keys(properties)) > 0
             ORDER BY name, r, k")).await;
        let got = lines(&by_function);
        assert_eq!(got, lines(&by_map));
        assert!(got.iter().any(|l| l.starts_with("tagged_work|")), "{got:?}");
        assert!(got.iter().any(|l| l.contains("|x|")), "{got:?}");
    }

    async fn global_access_fails(backend: Backend) {
        let (t, _pid) = lake_with_workload(backend).await;
        let ctx = context(&t.lake);
        let err = common::sql::query_err(&ctx, "SELECT COUNT(*) FROM async_events").await;
        assert!(err.contains("async_events"), "{err}");
        let err = common::sql::query_err(&ctx, "SELECT COUNT(*) FROM view_instance('async_events', 'global')").await;
        assert!(err.contains("'global' is not supported"), "{err}");
    }
}
