//! Ballista standalone (feature `ballista`): the same queries give the same rows under an
//! in-process Ballista scheduler and executor as in a local session; plans with tables that
//! have no codec, and tables on a lake the process did not register, fail with clear errors;
//! the wrapping codecs keep Ballista's bytes and ours apart and refuse bad bytes.

#[macro_use]
mod common;

use common::lakes::{Backend, TestLake, open, store};
use common::producer::Recording;
use common::realistic::an_hour_ago;
use common::sql::{context_with, lines, query, sorted_lines};
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::catalog::TableProvider;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_async_events::TimeBounds;
use datafusion_async_events::ballista::{
    LogicalCodec, OneTaskExec, PREFIX, PhysicalCodec, session_config, standalone_context_with,
};
use datafusion_async_events::provider::{AsyncEventsExec, AsyncEventsTable, ScanOptions};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{DefaultPhysicalProtoConverter, PhysicalExtensionCodec};
use std::sync::Arc;
use uuid::Uuid;

use ::ballista::prelude::SessionConfigExt;

fn recording() -> Recording {
    an_hour_ago(2, 6, 5)
}

/// A SQLite lake with the recording, a local session and a Ballista standalone session on it
/// (4 target partitions in both, so the two streams are cut into runs of blocks).
async fn sessions() -> (TestLake, Uuid, SessionContext, SessionContext) {
    let rec = recording();
    let t = open(Backend::Sqlite).await;
    store(&t.lake, &rec).await;
    let local = context_with(&t.lake, SessionConfig::new().with_target_partitions(4));
    let config = session_config()
        .with_target_partitions(4)
        .with_ballista_standalone_parallelism(2);
    let distributed = standalone_context_with(t.lake.clone(), ScanOptions::default(), config)
        .await
        .unwrap();
    (t, rec.process.process_id, local, distributed)
}

async fn try_query(
    ctx: &SessionContext,
    sql: &str,
) -> datafusion::common::Result<Vec<RecordBatch>> {
    ctx.sql(sql).await?.collect().await
}

fn single_i64(batches: &[RecordBatch]) -> i64 {
    let b = batches.iter().find(|b| b.num_rows() > 0).unwrap();
    b.column(0).as_primitive::<Int64Type>().value(0)
}

/// The query goes through Ballista (the client's plan is a `DistributedQueryExec`), and in the
/// stages the scheduler planned every scan (of events or of thread spans) is read by one task:
/// under a `OneTaskExec`, under the `async_spans` pairing, which reads all of its scan's
/// partitions, or alone when it has one partition.
async fn assert_distributed(ctx: &SessionContext, sql: &str) {
    let plan = ctx
        .sql(sql)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    assert_eq!(plan.name(), "DistributedQueryExec", "{sql}");
    let explained = lines(&query(ctx, &format!("EXPLAIN {sql}")).await);
    let stages = explained
        .iter()
        .find_map(|l| l.strip_prefix("distributed_plan|"))
        .unwrap_or_else(|| panic!("no distributed plan in {explained:?}"));
    let stage_lines: Vec<&str> = stages.lines().collect();
    let scans: Vec<usize> = (0..stage_lines.len())
        .filter(|&i| {
            let line = stage_lines[i].trim_start();
            line.starts_with("AsyncEventsExec") || line.starts_with("ThreadSpansExec")
        })
        .collect();
    assert!(!scans.is_empty(), "{stages}");
    for i in scans {
        // The operator above, past DataFusion's cooperative-scheduling wrappers.
        let above = (stage_lines[..i].iter().rev())
            .map(|l| l.trim_start())
            .find(|l| !l.starts_with("CooperativeExec"))
            .unwrap_or_default();
        assert!(
            above.starts_with("OneTaskExec")
                || above.starts_with("AsyncSpansExec")
                || stage_lines[i].split(", ").any(|f| f == "partitions=1"),
            "{sql}\n{stages}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_give_the_same_rows_under_ballista_standalone() {
    let (_t, pid, local, distributed) = sessions().await;
    let events = format!("async_events('{pid}')");
    // The middle of the recording and its most frequent name: a WHERE that keeps some rows.
    let total = single_i64(&query(&local, &format!("SELECT count(*) FROM {events}")).await);
    let mid = lines(
        &query(
            &local,
            &format!(
                "SELECT to_timestamp_nanos(CAST((CAST(min(time) AS BIGINT) + CAST(max(time) AS BIGINT)) / 2 AS BIGINT)) FROM {events}"
            ),
        )
        .await,
    )
    .remove(0);
    let name = lines(
        &query(
            &local,
            &format!(
                "SELECT name FROM {events} GROUP BY name ORDER BY count(*) DESC, name LIMIT 1"
            ),
        )
        .await,
    )
    .remove(0);
    // ORDER BY time is only deterministic if no two events share a time.
    let distinct = single_i64(
        &query(
            &local,
            &format!("SELECT count(DISTINCT time) FROM {events}"),
        )
        .await,
    );
    assert_eq!(distinct, total, "the fixture has events at the same time");

    let sorted_cases = [
        format!("SELECT count(*) FROM {events}"),
        format!(
            "SELECT time, stream_id, span_id, event_type, depth FROM {events} \
             WHERE time > '{mid}' AND name = '{name}'"
        ),
        format!(
            "SELECT name, count(*), min(time), max(time), min(depth), max(depth) FROM {events} GROUP BY name"
        ),
        format!(
            "SELECT b.name, count(*) AS n, sum(CAST(e.time - b.time AS BIGINT)) AS ns \
             FROM {events} b JOIN {events} e ON b.span_id = e.span_id \
             WHERE b.event_type = 'begin' AND e.event_type = 'end' GROUP BY b.name"
        ),
        format!(
            "SELECT event_type, count(*), max(time) FROM view_instance('async_events', '{pid}') GROUP BY event_type"
        ),
        format!(
            "SELECT name, count(*), min(duration), max(duration), sum(CAST(finished AS INT)) \
             FROM async_spans('{pid}') GROUP BY name"
        ),
        format!(
            "SELECT depth, count(*), max(\"end\") FROM view_instance('async_spans', '{pid}') \
             WHERE begin > '{mid}' GROUP BY depth"
        ),
    ];
    for sql in &sorted_cases {
        assert_distributed(&distributed, sql).await;
        let want = sorted_lines(&query(&local, sql).await);
        assert!(!want.is_empty(), "{sql}");
        let got = sorted_lines(&query(&distributed, sql).await);
        assert_eq!(got, want, "{sql}");
    }
    // The WHERE kept some rows and dropped others.
    let kept = sorted_lines(&query(&local, &sorted_cases[1]).await).len() as i64;
    assert!(kept > 0 && kept < total, "{kept} of {total}");

    // Ordered results compare in order.
    for sql in [
        format!("SELECT time, name, event_type, span_id FROM {events} ORDER BY time LIMIT 17"),
        format!("SELECT time, name, event_type, span_id FROM {events} ORDER BY time DESC LIMIT 17"),
    ] {
        assert_distributed(&distributed, &sql).await;
        let want = lines(&query(&local, &sql).await);
        assert_eq!(want.len(), 17, "{sql}");
        assert_eq!(lines(&query(&distributed, &sql).await), want, "{sql}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_and_process_spans_give_the_same_rows_under_ballista_standalone() {
    let (_t, pid, local, distributed) = sessions().await;
    let streams = lines(
        &query(
            &local,
            &format!("SELECT stream_id FROM thread_streams('{pid}') ORDER BY stream_id"),
        )
        .await,
    );
    assert_eq!(streams.len(), 2);
    let cases = [
        format!("SELECT * FROM thread_spans('{pid}')"),
        format!(
            "SELECT name, depth, count(*), sum(duration) FROM thread_spans('{pid}') \
             WHERE depth >= 1 GROUP BY name, depth"
        ),
        format!(
            "SELECT * FROM view_instance('thread_spans', '{}')",
            streams[0]
        ),
        format!("SELECT * FROM process_spans('{pid}', 'both')"),
        format!("SELECT * FROM process_spans('{pid}', 'async')"),
        // The async rows' properties go through properties_to_jsonb on the executor.
        format!(
            "SELECT thread_name, count(*), sum(duration), count(properties) \
             FROM view_instance('process_spans', '{pid}') GROUP BY thread_name"
        ),
    ];
    for sql in &cases {
        assert_distributed(&distributed, sql).await;
        let want = sorted_lines(&query(&local, sql).await);
        assert!(!want.is_empty(), "{sql}");
        let got = sorted_lines(&query(&distributed, sql).await);
        assert_eq!(got, want, "{sql}");
    }
}

/// `thread_streams(pid)` makes a `ThreadStreamsTable`, which has no codec: the client cannot
/// ship a plan that reads it to the scheduler. The error says so instead of giving wrong rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_streams_cannot_leave_the_process() {
    let (_t, pid, local, distributed) = sessions().await;
    let sql = format!("SELECT count(*) FROM thread_streams('{pid}')");
    assert_eq!(single_i64(&query(&local, &sql).await), 2);
    let err = try_query(&distributed, &sql).await.unwrap_err().to_string();
    assert!(err.contains("table thread_streams() has no codec"), "{err}");
}

/// A table on a lake that this process never registered: the scheduler cannot decode it and
/// the query fails with the lake's URLs in the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lake_the_process_did_not_register_is_a_clear_error() {
    let (_t, pid, _local, distributed) = sessions().await;
    let other = open(Backend::Sqlite).await; // never given to `register`
    store(&other.lake, &recording()).await;
    let table = AsyncEventsTable::new(
        other.lake.clone(),
        pid,
        TimeBounds::ALL,
        ScanOptions::default(),
    );
    distributed
        .register_table("elsewhere", Arc::new(table))
        .unwrap();
    let err = try_query(&distributed, "SELECT count(*) FROM elsewhere")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no lake at"), "{err}");
    assert!(err.contains(other.lake.store_url()), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_codecs_keep_ours_and_ballistas_apart() {
    let rec = recording();
    let t = open(Backend::Sqlite).await;
    store(&t.lake, &rec).await;
    let pid = rec.process.process_id;
    let ctx = context_with(&t.lake, SessionConfig::new());
    let converter = DefaultPhysicalProtoConverter {};
    let physical = PhysicalCodec::default();
    let logical = LogicalCodec::default();

    // Our scan goes behind the prefix and comes back as a scan.
    let plan = ctx
        .sql(&format!("SELECT * FROM async_events('{pid}')"))
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let scan = find_scan(&plan).expect("a scan");
    let mut buf = Vec::new();
    physical
        .try_encode(scan.clone(), &mut buf, &converter)
        .unwrap();
    assert!(buf.starts_with(PREFIX));
    let decoded = physical
        .try_decode(&buf, &[], &ctx.task_ctx(), &converter)
        .unwrap();
    assert!(decoded.downcast_ref::<AsyncEventsExec>().is_some());

    // The merge over a scan travels with the scan as its input; it takes exactly one.
    let one_task: Arc<dyn ExecutionPlan> = Arc::new(OneTaskExec::new(scan.clone()));
    let mut buf = Vec::new();
    physical.try_encode(one_task, &mut buf, &converter).unwrap();
    let decoded = physical
        .try_decode(
            &buf,
            std::slice::from_ref(&scan),
            &ctx.task_ctx(),
            &converter,
        )
        .unwrap();
    assert!(decoded.downcast_ref::<OneTaskExec>().is_some());
    assert_eq!(decoded.output_partitioning().partition_count(), 1);
    for inputs in [vec![], vec![scan.clone(), scan.clone()]] {
        assert!(
            physical
                .try_decode(&buf, &inputs, &ctx.task_ctx(), &converter)
                .is_err()
        );
    }

    // So does our table.
    let table = Arc::new(AsyncEventsTable::new(
        t.lake.clone(),
        pid,
        TimeBounds::ALL,
        ScanOptions::default(),
    ));
    let mut buf = Vec::new();
    logical
        .try_encode_table_provider(&"t".into(), table.clone(), &mut buf)
        .unwrap();
    assert!(buf.starts_with(PREFIX));
    let decoded = logical
        .try_decode_table_provider(&buf, &"t".into(), table.schema(), &ctx.task_ctx())
        .unwrap();
    assert!(decoded.downcast_ref::<AsyncEventsTable>().is_some());

    // A node that is not ours goes to Ballista's codec, which does not know this one.
    let mut buf = Vec::new();
    let empty: Arc<dyn ExecutionPlan> = Arc::new(EmptyExec::new(table.schema()));
    let err = physical
        .try_encode(empty, &mut buf, &converter)
        .unwrap_err()
        .to_string();
    assert!(err.contains("EmptyExec"), "{err}");

    // Bad bytes behind our prefix are our errors; without it, Ballista's.
    for tail in [&b""[..], b"garbage", &[0xff; 32], &[0x12, 0x03, 1, 2, 3]] {
        let bytes = [PREFIX, tail].concat();
        let err = physical
            .try_decode(&bytes, &[], &ctx.task_ctx(), &converter)
            .unwrap_err()
            .to_string();
        assert!(err.contains("async_events"), "{err}");
        let err = logical
            .try_decode_table_provider(&bytes, &"t".into(), table.schema(), &ctx.task_ctx())
            .unwrap_err()
            .to_string();
        assert!(err.contains("async_events"), "{err}");
    }
    for bytes in [&b"garbage"[..], &[0xff; 32]] {
        let err = physical
            .try_decode(bytes, &[], &ctx.task_ctx(), &converter)
            .unwrap_err()
            .to_string();
        assert!(err.contains("BallistaPhysicalPlanNode"), "{err}");
    }
}

fn find_scan(plan: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
    if plan.downcast_ref::<AsyncEventsExec>().is_some() {
        return Some(plan.clone());
    }
    plan.children().into_iter().find_map(find_scan)
}

/// Ballista hands each task of a stage a slice of its partitions but restricts only the leaves
/// it knows (files, memory, shuffles) to that slice; every task ran the whole scan before
/// `ScanInOneTask` (counts of 2 to 9 times the rows, depending on how tasks met the slots).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_once_whatever_the_partitions_and_task_slots() {
    let rec = recording();
    let t = open(Backend::Sqlite).await;
    store(&t.lake, &rec).await;
    let pid = rec.process.process_id;
    let sql = format!("SELECT count(*), count(DISTINCT time) FROM async_events('{pid}')");
    let want = lines(&query(&context_with(&t.lake, SessionConfig::new()), &sql).await);
    for (partitions, slots) in [(1, 1), (2, 1), (8, 1), (8, 4)] {
        let config = session_config()
            .with_target_partitions(partitions)
            .with_ballista_standalone_parallelism(slots);
        let ctx = standalone_context_with(t.lake.clone(), ScanOptions::default(), config)
            .await
            .unwrap();
        // The adaptive planner would drop the rule: it must have been turned off.
        let on = lines(
            &query(
                &ctx,
                "SELECT value FROM information_schema.df_settings \
                 WHERE name = 'ballista.planner.adaptive.enabled'",
            )
            .await,
        );
        assert_eq!(on, ["false"]);
        let got = lines(&query(&ctx, &sql).await);
        assert_eq!(got, want, "{partitions} partitions, {slots} slots");
    }
}
