//! Pushdown: every filter the scan applies gives the same rows as the same query on a MemTable
//! of the same rows (no pushdown), counters prove the pruning, and plans are snapshots.

#[macro_use]
mod common;

use chrono::{Duration, Utc};
use common::counted_store::CountedStore;
use common::lakes::{Backend, open, store, stored_time};
use common::producer::Recording;
use common::realistic::{Shape, realistic};
use common::scripted::{drifting, span_ticks};
use common::sql::{
    context, context_with, lines, plan_text, query, reference, run_measured, sorted_lines,
};
use common::workload::shared_recording;
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Int64Type;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use datafusion::prelude::SessionConfig;
use std::sync::{Arc, OnceLock};

/// 3 thread streams of 20 blocks each, every block 1 s long, back to back from the start.
fn tiled() -> &'static Recording {
    static REC: OnceLock<Recording> = OnceLock::new();
    REC.get_or_init(|| {
        let start = Utc::now() - Duration::hours(3);
        realistic(
            Shape {
                streams: 3,
                blocks_per_stream: 20,
                buffer_bytes: 8 * 1024,
                block_duration: Duration::seconds(1),
            },
            start,
            11,
        )
    })
}

fn ts(rec: &Recording, offset_ms: i64) -> String {
    (rec.process.start_time + Duration::milliseconds(offset_ms))
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn count(batches: &[datafusion::arrow::array::RecordBatch]) -> i64 {
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

on_both! {
    async fn every_pushed_filter_gives_the_rows_of_a_plain_table(backend: Backend) {
        for rec in [shared_recording(), tiled()] {
            let t = open(backend).await;
            store(&t.lake, rec).await;
            let pid = rec.process.process_id;
            let ctx = context(&t.lake);
            let reference = reference(backend, rec);
            let stream = rec.streams[0].stream_id;
            let other = rec.streams[1 % rec.streams.len()].stream_id;
            let filters = [
                format!("time BETWEEN '{}' AND '{}'", ts(rec, 150), ts(rec, 450)),
                format!("time > '{}'", ts(rec, 1_000)),
                format!("time <= '{}'", ts(rec, 300)),
                "time = (SELECT min(time) FROM ref)".to_string(),
                "time > now() - interval '1 day'".to_string(),
                "time < now() - interval '1 day'".to_string(),
                format!("stream_id = '{stream}'"),
                format!("stream_id IN ('{stream}', '{other}', 'not-a-uuid')"),
                "event_type = 'end'".into(),
                "event_type <> 'end'".into(),
                "event_type IN ('begin', 'nope')".into(),
                "depth = 0".into(),
                "depth BETWEEN 1 AND 2".into(),
                "depth > 1".into(),
                "span_id IN (1, 2, 3, 50, 51)".into(),
                "span_id = 7".into(),
                "parent_span_id = 1".into(),
                "name IN ('store::query', 'named_leaf', 'rpc.get_item')".into(),
                "name = 'cache::get' AND event_type = 'begin'".into(),
                "target = 'store::sql'".into(),
                "event_type = 'begin' AND depth = 0 AND time > now() - interval '7 days'".into(),
                "depth = 1 AND depth = 2".into(),
                "name LIKE 'cache%'".into(),
                "event_type = 'begin' OR depth = 2".into(),
            ];
            for filter in &filters {
                let q = |t: &str| format!("SELECT * FROM {t} WHERE {}", filter.replace("ref", t));
                let ours = q(&format!("async_events('{pid}')"));
                let theirs = q("ref");
                // `ref` inside a filter (a subquery) names the table of each side.
                let got = query(&ctx, &ours).await;
                let want = query(&reference, &theirs).await;
                assert_eq!(sorted_lines(&got), sorted_lines(&want), "{backend:?} {filter}");
            }
            // Table-function bounds are inclusive, like micromegas's `time BETWEEN begin AND end`.
            let (lo, hi) = (ts(rec, 200), ts(rec, 700));
            let got = query(&ctx, &format!("SELECT * FROM async_events('{pid}', '{lo}', '{hi}')")).await;
            let want = query(&reference, &format!("SELECT * FROM ref WHERE time BETWEEN '{lo}' AND '{hi}'")).await;
            assert_eq!(sorted_lines(&got), sorted_lines(&want));
            // Ordered listings, both directions, and limits.
            for q in [
                "SELECT time, span_id, event_type, name FROM {t} ORDER BY time, span_id, event_type LIMIT 17",
                "SELECT time, span_id, event_type, name FROM {t} ORDER BY time DESC, span_id, event_type LIMIT 17",
                "SELECT time, name FROM {t} WHERE depth = 1 ORDER BY time DESC LIMIT 5",
                "SELECT count(*) FROM {t}",
                "SELECT count(*) FROM (SELECT * FROM {t} LIMIT 13)",
                "SELECT count(*), min(time), max(time) FROM {t} WHERE event_type = 'begin'",
            ] {
                let got = query(&ctx, &q.replace("{t}", &format!("async_events('{pid}')"))).await;
                let want = query(&reference, &q.replace("{t}", "ref")).await;
                assert_eq!(lines(&got), lines(&want), "{q}");
            }
        }
    }

    async fn pruning_reads_only_the_blocks_it_needs(backend: Backend) {
        let rec = tiled();
        let t = open(backend).await;
        store(&t.lake, rec).await;
        let pid = rec.process.process_id;
        let ctx = context(&t.lake);
        let total = rec.blocks.len();
        // A window inside one 1 s block of each stream: the metadata query lists blocks by their
        // tick bounds, so about the one block of each stream, which the exact check keeps.
        let (lo, hi) = (ts(rec, 10_100), ts(rec, 10_200));
        let (rows, m) = run_measured(&ctx, &format!("SELECT * FROM async_events('{pid}') WHERE time BETWEEN '{lo}' AND '{hi}'")).await;
        assert_eq!(m.get("blocks_fetched"), 3, "{m:?}");
        assert!(m.get("blocks_listed") <= 3 * 2, "the metadata query pruned: {m:?}");
        assert_eq!(m.get("blocks_listed"), m.get("blocks_pruned") + m.get("blocks_fetched"), "{m:?}");
        assert_eq!(m.get("rows_out"), rows.iter().map(|b| b.num_rows()).sum::<usize>());
        // One stream: its blocks only.
        let stream = rec.streams[2].stream_id;
        let (_, m) = run_measured(&ctx, &format!("SELECT count(*) FROM async_events('{pid}') WHERE stream_id = '{stream}'")).await;
        assert_eq!(m.get("blocks_fetched"), 20, "{m:?}");
        assert_eq!(m.get("blocks_listed"), 20, "{m:?}");
        // ORDER BY time LIMIT: a merge that reads the first blocks of each stream.
        let (rows, m) = run_measured(&ctx, &format!("SELECT time, name FROM async_events('{pid}') ORDER BY time LIMIT 10")).await;
        assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 10);
        assert!(m.get("blocks_fetched") <= 3 * 2, "a few blocks per stream: {m:?}");
        // ORDER BY time DESC LIMIT: newest first, the TopK filter skips older blocks.
        let (rows, m) = run_measured(&ctx, &format!("SELECT time, name FROM async_events('{pid}') WHERE stream_id = '{stream}' ORDER BY time DESC LIMIT 10")).await;
        assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 10);
        assert!(m.get("blocks_fetched") <= 3, "{m:?}");
        assert!(m.get("blocks_pruned") >= 15, "{m:?}");
        let (_, m) = run_measured(&ctx, &format!("SELECT time, name FROM async_events('{pid}') ORDER BY time DESC LIMIT 10")).await;
        assert!(m.get("blocks_fetched") <= 3 * 3, "{m:?}");
        // LIMIT without order stops fetching.
        let (rows, m) = run_measured(&ctx, &format!("SELECT * FROM async_events('{pid}') LIMIT 5")).await;
        assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 5);
        assert!(m.get("blocks_fetched") <= 3 * 2, "{m:?}");
        // count(*) builds no column and does not decompress the dependencies.
        let (rows, m) = run_measured(&ctx, &format!("SELECT count(*) FROM async_events('{pid}')")).await;
        assert_eq!(count(&rows) as usize, m.get("rows_out"));
        assert_eq!(m.get("blocks_fetched"), total);
        // A contradiction reads nothing.
        let (rows, m) = run_measured(&ctx, &format!("SELECT count(*) FROM async_events('{pid}') WHERE event_type = 'start'")).await;
        assert_eq!((count(&rows), m.get("blocks_fetched"), m.get("blocks_listed")), (0, 0, 0));
    }

    async fn time_pruning_stays_exact_when_the_tick_frequency_is_off(backend: Backend) {
        // A day-long process whose tick frequency is 200 ppm off: after a day its blocks'
        // wall-clock bounds are 17 s behind their events' times, more than any fixed margin.
        let rec = drifting(24, 200);
        let t = open(backend).await;
        store(&t.lake, &rec).await;
        let pid = rec.process.process_id;
        let ctx = context(&t.lake);
        let start = stored_time(backend, rec.process.start_time);
        let at = |ticks: i64| start + Duration::nanoseconds(ticks);
        let text = |time: chrono::DateTime<Utc>| time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let events: Vec<i64> = (0..24 * 360).flat_map(|i| { let (b, e) = span_ticks(i); [b, e] }).collect();
        let mut compared = 0;
        // Windows whose edges sit on events or a nanosecond beside them, one across a block
        // edge, late in the day where the drift is largest, and early where it is smallest.
        for (first, last) in [(8_000, 8_003), (8_630, 8_639), (17_000, 17_279), (71, 74), (17_158, 17_161)] {
            for (lo_shift, hi_shift) in [(0, 0), (1, -1), (-1, 1)] {
                let (lo, hi) = (events[first] + lo_shift, events[last] + hi_shift);
                let want: Vec<i64> = events.iter().copied().filter(|&e| lo <= e && e <= hi).collect();
                let sql = format!(
                    "SELECT count(*), CAST(min(time) AS BIGINT), CAST(max(time) AS BIGINT) FROM async_events('{pid}') WHERE time BETWEEN '{}' AND '{}'",
                    text(at(lo)), text(at(hi))
                );
                let got = query(&ctx, &sql).await;
                let rows = lines(&got);
                let ns = |ticks: i64| at(ticks).timestamp_nanos_opt().unwrap();
                let expected = format!("{}|{}|{}", want.len(), ns(want[0]), ns(*want.last().unwrap()));
                assert_eq!(rows, [expected], "{backend:?} {sql}");
                compared += 1;
            }
        }
        assert_eq!(compared, 15);
    }

    async fn a_self_join_reads_each_block_once(backend: Backend) {
        let rec = tiled();
        let t = open(backend).await;
        store(&t.lake, rec).await;
        let pid = rec.process.process_id;
        let ctx = context(&t.lake);
        let sql = format!(
            "SELECT b.name, count(*) AS n, avg(CAST(e.time - b.time AS BIGINT)) AS avg_ns
             FROM async_events('{pid}') b JOIN async_events('{pid}') e ON b.span_id = e.span_id
             WHERE b.event_type = 'begin' AND e.event_type = 'end' GROUP BY b.name"
        );
        let (rows, m) = run_measured(&ctx, &sql).await;
        assert_eq!(m.scans, 2);
        assert_eq!(m.get("blocks_fetched"), rec.blocks.len(), "each block fetched once: {m:?}");
        assert_eq!(m.get("blocks_shared"), rec.blocks.len(), "and reused by the other side: {m:?}");
        let want = query(&reference(backend, rec), &sql.replace(&format!("async_events('{pid}')"), "ref")).await;
        assert_eq!(sorted_lines(&rows), sorted_lines(&want));
        // Two separate queries each read the blocks themselves: nothing is kept between queries.
        let (_, m) = run_measured(&ctx, &format!("SELECT count(*) FROM async_events('{pid}')")).await;
        assert_eq!((m.get("blocks_fetched"), m.get("blocks_shared")), (rec.blocks.len(), 0));
    }

    async fn a_busy_stream_is_read_by_several_partitions_in_time_order(backend: Backend) {
        let rec = tiled();
        let t = open(backend).await;
        store(&t.lake, rec).await;
        let pid = rec.process.process_id;
        let stream = rec.streams[1].stream_id;
        let one_stream = format!("async_events('{pid}') WHERE stream_id = '{stream}'");
        let ctx = context_with(&t.lake, SessionConfig::new().with_target_partitions(4));
        let serial = context_with(&t.lake, SessionConfig::new().with_target_partitions(1));
        let df = ctx.sql(&format!("SELECT time, span_id, event_type FROM {one_stream}")).await.unwrap();
        let plan = df.create_physical_plan().await.unwrap();
        assert_eq!(plan.output_partitioning().partition_count(), 4, "one stream, four runs of its blocks");
        // The partitions one after the other are the stream in time order: what one partition reads.
        let mut concatenated = Vec::new();
        for p in 0..4 {
            let stream = plan.execute(p, ctx.task_ctx()).unwrap();
            let batches: Vec<_> = futures::StreamExt::collect::<Vec<_>>(stream).await.into_iter().map(Result::unwrap).collect();
            assert!(batches.iter().map(|b| b.num_rows()).sum::<usize>() > 0, "balanced: partition {p} has rows");
            concatenated.extend(batches);
        }
        let whole = query(&serial, &format!("SELECT time, span_id, event_type FROM {one_stream}")).await;
        assert_eq!(lines(&concatenated), lines(&whole));
        // Ordered queries stay merges, and answer as the reference does.
        let reference = reference(backend, rec);
        for q in [
            "SELECT time, span_id, event_type FROM {t} ORDER BY time, span_id, event_type LIMIT 30",
            "SELECT time, span_id, event_type FROM {t} ORDER BY time DESC, span_id, event_type LIMIT 30",
            "SELECT count(*), min(time), max(time) FROM {t}",
        ] {
            let got = query(&ctx, &q.replace("{t}", &one_stream)).await;
            let want = query(&reference, &q.replace("{t}", &format!("ref WHERE stream_id = '{stream}'"))).await;
            assert_eq!(lines(&got), lines(&want), "{q}");
        }
        // Newest first reads the stream in one partition: the TopK filter still skips the rest.
        let (rows, m) = run_measured(&ctx, &format!("SELECT time, name FROM {one_stream} ORDER BY time DESC LIMIT 10")).await;
        assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 10);
        assert!(m.get("blocks_fetched") <= 3, "{m:?}");
    }

    async fn batches_are_bounded_and_time_ordered_per_partition(backend: Backend) {
        let rec = tiled();
        let t = open(backend).await;
        store(&t.lake, rec).await;
        let pid = rec.process.process_id;
        let ctx = context_with(&t.lake, SessionConfig::new().with_batch_size(100));
        let df = ctx.sql(&format!("SELECT time, stream_id FROM async_events('{pid}')")).await.unwrap();
        let plan = df.create_physical_plan().await.unwrap();
        assert_eq!(plan.output_partitioning().partition_count(), 3, "one partition per stream");
        for p in 0..3 {
            let stream = plan.execute(p, ctx.task_ctx()).unwrap();
            let batches: Vec<_> = futures::StreamExt::collect::<Vec<_>>(stream).await.into_iter().map(Result::unwrap).collect();
            let mut last = i64::MIN;
            let mut n = 0;
            for b in &batches {
                assert!(b.num_rows() <= 100, "batch of {} rows", b.num_rows());
                for &t in b.column(0).as_primitive::<datafusion::arrow::datatypes::TimestampNanosecondType>().values() {
                    assert!(t >= last, "partition {p} is in time order");
                    last = t;
                    n += 1;
                }
            }
            assert!(n > 0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_fetched_before_the_first_poll_and_dropping_stops_fetching() {
    let rec = tiled();
    let t = open(Backend::Sqlite).await;
    store(&t.lake, rec).await;
    let pid = rec.process.process_id;
    // Every blob read waits for the test's permission: what is asked for, and when, is counted.
    let blobs = CountedStore::gated(t.lake.object_store());
    let lake = t.lake.with_object_store(Arc::new(blobs.clone()));
    // Small batches: the first one is out after the first block.
    let ctx = context_with(&lake, SessionConfig::new().with_batch_size(8));
    let plan = ctx
        .sql(&format!(
            "SELECT * FROM async_events('{pid}') WHERE stream_id = '{}'",
            rec.streams[0].stream_id
        ))
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    // Lazy: `execute` runs on a thread without a tokio runtime, where spawning a task or any
    // I/O would panic.
    let (p, task_ctx) = (plan.clone(), ctx.task_ctx());
    let stream = std::thread::spawn(move || p.execute(0, task_ctx))
        .join()
        .expect("execute did no async work")
        .unwrap();
    assert_eq!(blobs.started(), 0, "nothing read before the first poll");
    // Polled, the partition asks for a few blocks ahead while none is delivered: two (the
    // prefetch depth), never the 20 of the stream.
    let consumer = tokio::spawn(async move {
        let mut stream = stream;
        let first = futures::StreamExt::next(&mut stream).await;
        (first, stream)
    });
    blobs
        .wait_for("two blocks asked for", |b| b.started() >= 2)
        .await;
    assert_eq!(blobs.started(), 2, "a few blocks ahead");
    // The two delivered (in whichever order the store answers): the first batch.
    blobs.allow(2);
    let (first, stream) = consumer.await.unwrap();
    assert!(first.unwrap().unwrap().num_rows() > 0);
    let asked = blobs.started();
    assert!(asked <= 4, "still a few ahead: {asked}");
    // Dropped, the scan abandons the reads in flight and asks for nothing more, whatever the
    // store would now deliver.
    drop(stream);
    blobs
        .wait_for("reads in flight abandoned", |b| {
            b.finished() + b.abandoned() == b.started()
        })
        .await;
    let (asked, read) = (blobs.started(), blobs.finished());
    assert!(read <= 2, "only what was let through: {read}");
    blobs.allow(1_000);
    assert_eq!(blobs.started(), asked, "then nothing");
    assert_eq!(blobs.finished(), read);
    // A read the store answered may still have been dropped before the scan counted it.
    let fetched = scan_metric(&plan, "blocks_fetched");
    assert!((1..=read).contains(&fetched), "{fetched} of {read}");
}

/// A metric of the scans of an executed plan, summed.
fn scan_metric(plan: &Arc<dyn ExecutionPlan>, name: &str) -> usize {
    let own = plan
        .metrics()
        .and_then(|m| m.sum_by_name(name))
        .map_or(0, |v| v.as_usize());
    own + plan
        .children()
        .into_iter()
        .map(|c| scan_metric(c, name))
        .sum::<usize>()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_show_what_was_pushed() {
    let rec = tiled();
    let t = open(Backend::Sqlite).await;
    store(&t.lake, rec).await;
    let pid = rec.process.process_id;
    let ctx = context(&t.lake);
    let stream = rec.streams[1].stream_id;
    let (lo, hi) = (ts(rec, 1_000), ts(rec, 1_050));
    let cases = [
        (
            "listing",
            format!(
                "SELECT time, name, depth FROM async_events('{pid}') WHERE event_type = 'begin' AND depth <= 1 ORDER BY time LIMIT 20"
            ),
        ),
        (
            "newest_first",
            format!("SELECT time, name FROM async_events('{pid}') ORDER BY time DESC LIMIT 10"),
        ),
        (
            "time_window",
            format!(
                "SELECT count(*) FROM async_events('{pid}') WHERE time BETWEEN '{lo}' AND '{hi}' AND stream_id = '{stream}'"
            ),
        ),
        (
            "durations",
            format!(
                "SELECT b.name, CAST(e.time - b.time AS BIGINT) AS ns FROM async_events('{pid}') b JOIN async_events('{pid}') e ON b.span_id = e.span_id WHERE b.event_type = 'begin' AND e.event_type = 'end' AND b.depth = 0"
            ),
        ),
        (
            "unsupported_filter_stays_above",
            format!(
                "SELECT name FROM view_instance('async_events', '{pid}') WHERE name LIKE 'cache%' AND span_id IN (1, 2)"
            ),
        ),
    ];
    for (name, sql) in cases {
        insta::assert_snapshot!(name, plan_text(&ctx, &sql).await);
    }
}
