//! datafusion-distributed 4.0: queries run on a cluster of in-process workers (plans and batches
//! really encoded and sent between stages) give exactly the answers of local execution; scans
//! are spread over the tasks, each reading an equal share; the pairing of spans runs in one
//! task; the distributed plan is a snapshot.

#[macro_use]
mod common;

use common::lakes::{Backend, TestLake, open, store};
use common::producer::Recording;
use common::realistic::an_hour_ago;
use common::sql::{context_with, lines, physical_plan, query, query_err, redact, sorted_lines};
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_async_events::distributed::LocalCluster;
use datafusion_async_events::provider::AsyncEventsExec;
use datafusion_async_events::thread_spans::ThreadSpansExec;
use datafusion_distributed::{
    DistributedLeafExec, DistributedMetricsFormat, display_plan_ascii,
    rewrite_distributed_plan_with_metrics,
};
use std::sync::Arc;

const WORKERS: usize = 3;

fn recording() -> Recording {
    an_hour_ago(3, 10, 11)
}

/// A coordinating session on a cluster of three in-process workers, a scan asking for a task
/// per 4 blocks.
async fn distributed(lake: &datafusion_async_events::Lake) -> SessionContext {
    let cluster = LocalCluster::start(WORKERS).unwrap();
    let state = cluster.session_state(SessionConfig::new().with_target_partitions(2));
    let ctx = SessionContext::new_with_state(state);
    datafusion_async_events::register(&ctx, lake.clone());
    datafusion_async_events::register_metadata_tables(&ctx, lake.clone()).unwrap();
    query(&ctx, "SET async_events_distributed.blocks_per_task = 4").await;
    ctx
}

/// `recording()` in a SQLite lake, and a cluster session on it.
async fn recorded_on_cluster() -> (TestLake, Recording, SessionContext) {
    let rec = recording();
    let t = open(Backend::Sqlite).await;
    store(&t.lake, &rec).await;
    let ctx = distributed(&t.lake).await;
    (t, rec, ctx)
}

fn collect_nodes<'a>(plan: &'a Arc<dyn ExecutionPlan>, out: &mut Vec<&'a Arc<dyn ExecutionPlan>>) {
    out.push(plan);
    for child in plan.children() {
        collect_nodes(child, out);
    }
}

/// The first `DistributedLeafExec` of a plan: its original node and its task variants.
fn leaf_of(plan: &Arc<dyn ExecutionPlan>) -> (Arc<dyn ExecutionPlan>, Vec<Arc<dyn ExecutionPlan>>) {
    let mut nodes = Vec::new();
    collect_nodes(plan, &mut nodes);
    let leaf = nodes
        .iter()
        .find_map(|n| n.downcast_ref::<DistributedLeafExec>())
        .unwrap_or_else(|| {
            panic!(
                "no DistributedLeafExec in\n{}",
                display_plan_ascii(plan.as_ref(), false)
            )
        });
    (leaf.original().clone(), leaf.variants().to_vec())
}

/// Runs `plan` and checks that rows went through network boundaries from `tasks` tasks.
async fn assert_ran_on_workers(plan: Arc<dyn ExecutionPlan>, ctx: &SessionContext, tasks: usize) {
    let batches = collect(plan.clone(), ctx.task_ctx()).await.unwrap();
    assert!(batches.iter().map(|b| b.num_rows()).sum::<usize>() > 0);
    let plan = rewrite_distributed_plan_with_metrics(plan, DistributedMetricsFormat::Aggregated)
        .await
        .unwrap();
    let text = display_plan_ascii(plan.as_ref(), true);
    assert!(text.contains("bytes_transferred="), "{text}");
    assert!(text.contains(&format!("tasks={tasks}")), "{text}");
}

/// The query shapes of the README and the tests, each with a total order where it has a LIMIT.
fn shapes(pid: &str) -> Vec<String> {
    let events = format!("async_events('{pid}')");
    let spans = format!("async_spans('{pid}')");
    let mut shapes = vec![
        format!("SELECT count(*) FROM {events}"),
        format!("SELECT * FROM {events}"),
        format!(
            "SELECT time, event_type, depth, name FROM {events} ORDER BY time, span_id, event_type LIMIT 5"
        ),
        format!(
            "SELECT time, name, span_id FROM {events} ORDER BY time DESC, span_id, event_type LIMIT 7"
        ),
        format!("SELECT name, count(*), min(time), max(time) FROM {events} GROUP BY name"),
        format!(
            "SELECT stream_id, depth, count(*) FROM {events} \
             WHERE event_type = 'begin' AND depth <= 1 GROUP BY stream_id, depth"
        ),
        format!(
            "SELECT name, properties FROM {events} WHERE event_type = 'end' AND properties IS NOT NULL"
        ),
        format!(
            "SELECT count(*) FROM view_instance('async_events', '{pid}') WHERE length(name) > 8"
        ),
        format!(
            "SELECT b.name, count(*) AS calls, sum(CAST(e.time - b.time AS BIGINT)) AS ns \
             FROM {events} b JOIN {events} e ON b.span_id = e.span_id \
             WHERE b.event_type = 'begin' AND e.event_type = 'end' GROUP BY b.name"
        ),
        format!(
            "SELECT b.span_id, b.name, e.time - b.time AS duration \
             FROM {events} b LEFT JOIN {events} e ON b.span_id = e.span_id AND e.event_type = 'end' \
             WHERE b.event_type = 'begin'"
        ),
        format!(
            "SELECT t.thread_name, count(*) FROM {events} e JOIN thread_streams('{pid}') t \
             ON e.stream_id = t.stream_id GROUP BY t.thread_name"
        ),
        format!("SELECT * FROM {spans}"),
        format!(
            "SELECT name, count(*), avg(duration), max(duration), sum(CASE WHEN finished THEN 0 ELSE 1 END) \
             FROM {spans} GROUP BY name"
        ),
        format!(
            "SELECT name, duration, migrated FROM {spans} WHERE depth = 1 AND finished \
             ORDER BY duration DESC, span_id LIMIT 3"
        ),
        format!("SELECT count(*) FROM view_instance('async_spans', '{pid}') WHERE depth >= 2"),
        format!("SELECT * FROM thread_spans('{pid}')"),
        format!(
            "SELECT name, depth, count(*), sum(duration) FROM thread_spans('{pid}') GROUP BY name, depth"
        ),
        format!(
            "SELECT name, depth, count(*), max(duration) FROM thread_spans('{pid}') \
             WHERE depth >= 1 AND name <> '' GROUP BY name, depth"
        ),
        // Thread rows below a union with the async rows: both sides run on the workers.
        format!("SELECT * FROM process_spans('{pid}', 'both')"),
        format!("SELECT * FROM process_spans('{pid}', 'thread')"),
        format!("SELECT * FROM process_spans('{pid}', 'async')"),
        format!(
            "SELECT thread_name, depth, count(*), sum(duration) \
             FROM view_instance('process_spans', '{pid}') GROUP BY thread_name, depth"
        ),
        format!("SELECT exe, count(*) FROM processes GROUP BY exe"),
        format!("SELECT count(*) FROM blocks WHERE process_id = '{pid}'"),
    ];
    // The trace is one byte stream: chunk by chunk, in order, the same bytes.
    #[cfg(feature = "timeline")]
    shapes.push(format!(
        "SELECT chunk_id, chunk_data FROM perfetto_trace_chunks('{pid}', 'async', NULL, NULL) \
         ORDER BY chunk_id"
    ));
    #[cfg(feature = "timeline")]
    shapes.push(format!(
        "SELECT chunk_id, chunk_data FROM perfetto_trace_chunks('{pid}', 'both', NULL, NULL) \
         ORDER BY chunk_id"
    ));
    let pid = uuid::Uuid::parse_str(pid).unwrap();
    shapes.extend(
        datafusion_async_events::lints::lints(pid, None, None)
            .into_iter()
            .map(|l| l.sql),
    );
    shapes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_shape_gives_the_answers_of_local_execution() {
    // A synthetic service of three busy threads, and a real tokio program whose spans move
    // between worker threads, are dropped unfinished and outlive their parents: split over
    // tasks, its pairs cross task boundaries.
    let realistic = recording();
    let troubled = std::thread::spawn(common::spans_workload::troubled)
        .join()
        .unwrap();
    let t = open(Backend::Sqlite).await;
    store(&t.lake, &realistic).await;
    store(&t.lake, &troubled).await;
    let local = context_with(&t.lake, SessionConfig::new().with_target_partitions(2));
    datafusion_async_events::register_metadata_tables(&local, t.lake.clone()).unwrap();
    let cluster = distributed(&t.lake).await;
    query(&cluster, "SET async_events_distributed.blocks_per_task = 1").await;
    let troubled_pid = troubled.process.process_id;
    let sql =
        format!("SELECT span_id, count(*) FROM async_events('{troubled_pid}') GROUP BY span_id");
    let plan = physical_plan(&cluster, &sql).await;
    let text = display_plan_ascii(plan.as_ref(), false);
    assert!(
        text.contains("t1: AsyncEventsExec"),
        "split over tasks:\n{text}"
    );
    for rec in [&realistic, &troubled] {
        check_shapes(&local, &cluster, rec).await;
    }
    let pid = realistic.process.process_id;
    // A LIMIT without order: as many rows, all of them rows of the process.
    let limited = query(
        &cluster,
        &format!("SELECT * FROM async_events('{pid}') LIMIT 9"),
    )
    .await;
    assert_eq!(limited.iter().map(|b| b.num_rows()).sum::<usize>(), 9);
}

async fn check_shapes(local: &SessionContext, cluster: &SessionContext, rec: &Recording) {
    let pid = rec.process.process_id.to_string();
    let lints = datafusion_async_events::lints::lints(rec.process.process_id, None, None);
    let mut all = shapes(&pid);
    // micromegas's view of one thread: the one with the most spans (some threads of the tokio
    // program enter no scope).
    let busiest = format!(
        "SELECT stream_id FROM thread_spans('{pid}') GROUP BY stream_id \
         ORDER BY count(*) DESC, stream_id LIMIT 1"
    );
    let thread = lines(&query(local, &busiest).await).remove(0);
    all.push(format!(
        "SELECT * FROM view_instance('thread_spans', '{thread}')"
    ));
    for sql in all {
        let want = query(local, &sql).await;
        let rows: usize = want.iter().map(|b| b.num_rows()).sum();
        // A lint may find nothing in a workload; every other shape has rows.
        assert!(rows > 0 || lints.iter().any(|l| l.sql == sql), "{sql}");
        let got = query(cluster, &sql).await;
        if sql.contains("ORDER BY") {
            assert_eq!(lines(&got), lines(&want), "{sql}");
        } else {
            assert_eq!(sorted_lines(&got), sorted_lines(&want), "{sql}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scan_is_spread_over_tasks_with_equal_shares() {
    let (_t, rec, ctx) = recorded_on_cluster().await;
    let pid = rec.process.process_id;
    let sql = format!("SELECT name, count(*) FROM async_events('{pid}') GROUP BY name");
    let plan = physical_plan(&ctx, &sql).await;
    let (original, variants) = leaf_of(&plan);
    assert_eq!(
        variants.len(),
        WORKERS,
        "one task per worker (30 blocks, 4 per task)"
    );
    let original = original.downcast_ref::<AsyncEventsExec>().unwrap();
    let events =
        |scan: &AsyncEventsExec| -> u64 { scan.partition_sizes().iter().map(|p| p.1).sum() };
    let shares: Vec<u64> = variants
        .iter()
        .map(|v| events(v.downcast_ref::<AsyncEventsExec>().unwrap()))
        .collect();
    assert_eq!(shares.iter().sum::<u64>(), events(original), "{shares:?}");
    let (max, min) = (*shares.iter().max().unwrap(), *shares.iter().min().unwrap());
    // Equal to a block (a block holds a few hundred events here).
    let largest_block = rec
        .blocks
        .iter()
        .map(|b| b.nb_objects as u64)
        .max()
        .unwrap();
    assert!(max - min <= largest_block, "{shares:?}");

    // It ran on the workers: rows went through the network boundaries.
    assert_ran_on_workers(plan, &ctx, WORKERS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_spans_are_spread_over_tasks_by_stream() {
    let (t, rec, ctx) = recorded_on_cluster().await;
    let pid = rec.process.process_id;
    let sql = format!("SELECT name, count(*) FROM thread_spans('{pid}') GROUP BY name");
    let local = context_with(&t.lake, SessionConfig::new().with_target_partitions(2));
    let want = sorted_lines(&query(&local, &sql).await);
    let plan = physical_plan(&ctx, &sql).await;
    let text = display_plan_ascii(plan.as_ref(), false);
    let (original, variants) = leaf_of(&plan);
    let original = original.downcast_ref::<ThreadSpansExec>().unwrap();
    let shapes: Vec<(usize, usize, usize)> = (variants.iter())
        .map(|v| {
            let v = v.downcast_ref::<ThreadSpansExec>().unwrap();
            (
                v.streams(),
                v.blocks(),
                v.properties().partitioning.partition_count(),
            )
        })
        .collect();
    // Three thread streams of ten blocks, four blocks a task: a task per stream, one partition
    // each (datafusion-distributed requires as many in every variant).
    assert_eq!(original.streams(), 3);
    assert_eq!(shapes.len(), 3, "{text}");
    assert!(shapes.iter().all(|&(s, _, p)| s == 1 && p == 1), "{text}");
    assert_eq!(shapes.iter().map(|s| s.1).sum::<usize>(), original.blocks());
    assert_ran_on_workers(plan, &ctx, 3).await;
    assert_eq!(sorted_lines(&query(&ctx, &sql).await), want);

    // Two tasks for three streams: one task reads two, the other one and an empty partition.
    query(&ctx, "SET async_events_distributed.blocks_per_task = 15").await;
    let (_, variants) = leaf_of(&physical_plan(&ctx, &sql).await);
    let mut shapes: Vec<(usize, usize)> = (variants.iter())
        .map(|v| {
            let v = v.downcast_ref::<ThreadSpansExec>().unwrap();
            (v.streams(), v.properties().partitioning.partition_count())
        })
        .collect();
    shapes.sort_unstable();
    assert_eq!(shapes, [(1, 2), (2, 2)]);
    assert_eq!(sorted_lines(&query(&ctx, &sql).await), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_paired_in_one_task() {
    let (_t, rec, ctx) = recorded_on_cluster().await;
    let pid = rec.process.process_id;
    let sql =
        format!("SELECT name, count(*), max(duration) FROM async_spans('{pid}') GROUP BY name");
    let plan = physical_plan(&ctx, &sql).await;
    let mut nodes = Vec::new();
    collect_nodes(&plan, &mut nodes);
    assert!(
        nodes
            .iter()
            .all(|n| n.downcast_ref::<DistributedLeafExec>().is_none()),
        "the scan under a pairing is not split:\n{}",
        display_plan_ascii(plan.as_ref(), false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_distributed_plan() {
    let (_t, rec, ctx) = recorded_on_cluster().await;
    let pid = rec.process.process_id;
    let sql = format!(
        "SELECT name, count(*) AS n FROM async_events('{pid}') \
         WHERE event_type = 'begin' GROUP BY name ORDER BY n DESC LIMIT 3"
    );
    let plan = physical_plan(&ctx, &sql).await;
    insta::assert_snapshot!(redact(&display_plan_ascii(plan.as_ref(), false)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_stay_errors() {
    let (_t, _rec, ctx) = recorded_on_cluster().await;
    let unknown = "00000000-0000-4000-8000-000000000001";
    let message = query_err(
        &ctx,
        &format!("SELECT count(*) FROM async_events('{unknown}')"),
    )
    .await;
    assert!(message.contains(unknown), "{message}");
}
