//! `AsyncEventsCodec`: physical plans with `async_events` scans survive encode → decode and give
//! the same rows; the table provider survives a logical round trip; bad bytes are errors.

#[macro_use]
mod common;

use common::lakes::{Backend, open, store};
use common::producer::Recording;
use common::realistic::an_hour_ago;
use common::sql::{context_with, query, sorted_lines};
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::TimestampNanosecondType;
use datafusion::physical_plan::{ExecutionPlan, collect, displayable};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_async_events::codec::AsyncEventsCodec;
use datafusion_proto::bytes::{
    logical_plan_from_bytes_with_extension_codec, logical_plan_to_bytes_with_extension_codec,
    physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
};
use datafusion_proto::physical_plan::{DefaultPhysicalProtoConverter, PhysicalExtensionCodec};
use std::sync::Arc;

fn recording() -> Recording {
    an_hour_ago(2, 6, 5)
}

fn plan_text(plan: &Arc<dyn ExecutionPlan>) -> String {
    displayable(plan.as_ref()).indent(true).to_string()
}

async fn round_trip(ctx: &SessionContext, sql: &str) -> (String, Arc<dyn ExecutionPlan>) {
    let df = ctx.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let plan = df.create_physical_plan().await.unwrap();
    let bytes = physical_plan_to_bytes_with_extension_codec(plan.clone(), &AsyncEventsCodec)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let decoded =
        physical_plan_from_bytes_with_extension_codec(&bytes, &ctx.task_ctx(), &AsyncEventsCodec)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert_eq!(plan_text(&decoded), plan_text(&plan), "{sql}");
    (plan_text(&plan), decoded)
}

#[tokio::test]
async fn plans_survive_encode_and_decode_with_the_same_results() {
    let rec = recording();
    let t = open(Backend::Sqlite).await;
    store(&t.lake, &rec).await;
    let pid = rec.process.process_id;
    // Four partitions: the streams are cut into runs, which the plan must carry.
    let ctx = context_with(&t.lake, SessionConfig::new().with_target_partitions(4));
    let events = format!("async_events('{pid}')");
    // Two seconds into the recording: spans cut by the range.
    let first = query(&ctx, &format!("SELECT min(time) FROM {events}")).await;
    let first = first[0]
        .column(0)
        .as_primitive::<TimestampNanosecondType>()
        .value(0);
    let from = chrono::DateTime::from_timestamp_nanos(first + 2_000_000_000).to_rfc3339();
    let cases = [
        (
            "FilterExec",
            format!("SELECT time, name FROM {events} WHERE length(name) > 3"),
        ),
        (
            "TopK(fetch=7)",
            format!("SELECT time, name FROM {events} ORDER BY time DESC LIMIT 7"),
        ),
        (
            "SortPreservingMergeExec",
            format!(
                "SELECT time, span_id, event_type FROM {events} WHERE event_type = 'begin' ORDER BY time LIMIT 25"
            ),
        ),
        (
            "HashJoinExec",
            format!(
                "SELECT b.name, count(*) AS n, sum(CAST(e.time - b.time AS BIGINT)) AS ns \
                 FROM {events} b JOIN {events} e ON b.span_id = e.span_id \
                 WHERE b.event_type = 'begin' AND e.event_type = 'end' GROUP BY b.name"
            ),
        ),
        (
            "AggregateExec",
            format!(
                "SELECT stream_id, depth, count(*), min(time), max(time) FROM {events} WHERE time > '2000-01-01T00:00:00Z' GROUP BY stream_id, depth"
            ),
        ),
        (
            "AsyncSpansExec",
            format!(
                "SELECT name, count(*), avg(duration), max(duration), sum(CAST(migrated AS INT)) \
                 FROM async_spans('{pid}') GROUP BY name"
            ),
        ),
        (
            "projection=[span_id, begin, end, finished]",
            format!(
                "SELECT span_id, begin, \"end\", finished FROM async_spans('{pid}') \
                 WHERE begin > '{from}' AND depth > 0 ORDER BY begin LIMIT 40"
            ),
        ),
    ];
    for (operator, sql) in cases {
        let (text, decoded) = round_trip(&ctx, &sql).await;
        assert!(text.contains(operator), "{operator} in\n{text}");
        assert!(text.contains("AsyncEventsExec"), "{text}");
        let want = query(&ctx, &sql).await;
        let got = collect(decoded, ctx.task_ctx()).await.unwrap();
        let want = sorted_lines(&want);
        assert!(!want.is_empty(), "{sql}");
        assert_eq!(sorted_lines(&got), want, "{sql}");
    }
}

#[tokio::test]
async fn thread_span_plans_survive_encode_and_decode_and_run_where_only_the_lake_is() {
    let rec = recording();
    let t = open(Backend::Sqlite).await;
    store(&t.lake, &rec).await;
    let pid = rec.process.process_id;
    let planner = context_with(&t.lake, SessionConfig::new().with_target_partitions(2));
    // The executing session opened the same lake itself (another pool, same URLs).
    let reopened = datafusion_async_events::Lake::embedded(t.dir.path())
        .await
        .unwrap();
    let worker = context_with(&reopened, SessionConfig::new());
    let thread = rec
        .streams
        .iter()
        .find(|s| s.tags.iter().any(|t| t == "cpu"));
    let cases = [
        format!("SELECT * FROM thread_spans('{pid}')"),
        // Row filters and a projection travel with the plan.
        format!(
            "SELECT name, depth, count(*), sum(duration) FROM thread_spans('{pid}') \
             WHERE depth BETWEEN 1 AND 2 GROUP BY name, depth"
        ),
        format!(
            "SELECT id, parent, begin, \"end\" FROM view_instance('thread_spans', '{}')",
            thread.unwrap().stream_id
        ),
        // Thread rows and async rows: a union of both plans.
        format!("SELECT * FROM process_spans('{pid}', 'both')"),
    ];
    for sql in cases {
        let (text, decoded) = round_trip(&planner, &sql).await;
        assert!(text.contains("ThreadSpansExec"), "{text}");
        let want = sorted_lines(&query(&planner, &sql).await);
        assert!(!want.is_empty(), "{sql}");
        let got = collect(decoded, worker.task_ctx()).await.unwrap();
        assert_eq!(sorted_lines(&got), want, "{sql}");
    }
}

#[tokio::test]
async fn a_decoded_plan_runs_in_a_session_that_only_registered_the_lake() {
    let rec = recording();
    let t = open(Backend::Sqlite).await;
    store(&t.lake, &rec).await;
    let pid = rec.process.process_id;
    let planner = context_with(&t.lake, SessionConfig::new().with_target_partitions(2));
    let sql = format!("SELECT count(*), max(time) FROM async_events('{pid}')");
    let (_, decoded) = round_trip(&planner, &sql).await;
    // The executing session opened the same lake itself (another pool, same URLs).
    let reopened = datafusion_async_events::Lake::embedded(t.dir.path())
        .await
        .unwrap();
    let worker = context_with(&reopened, SessionConfig::new());
    let got = collect(decoded, worker.task_ctx()).await.unwrap();
    assert_eq!(
        sorted_lines(&got),
        sorted_lines(&query(&planner, &sql).await)
    );
}

#[tokio::test]
async fn the_table_survives_a_logical_round_trip() {
    let rec = recording();
    let t = open(Backend::Sqlite).await;
    store(&t.lake, &rec).await;
    let pid = rec.process.process_id;
    let ctx = context_with(&t.lake, SessionConfig::new());
    let thread = (rec.streams.iter())
        .find(|s| s.tags.iter().any(|t| t == "cpu"))
        .unwrap()
        .stream_id;
    for sql in [
        format!("SELECT name, count(*) FROM async_events('{pid}') WHERE depth = 1 GROUP BY name"),
        format!(
            "SELECT name, count(*), max(duration), sum(CAST(finished AS INT)) \
             FROM async_spans('{pid}') WHERE depth = 1 GROUP BY name"
        ),
        format!("SELECT name, count(*) FROM thread_spans('{pid}') WHERE depth = 1 GROUP BY name"),
        format!("SELECT count(*) FROM view_instance('thread_spans', '{thread}')"),
        format!(
            "SELECT thread_name, count(*) FROM process_spans('{pid}', 'both') GROUP BY thread_name"
        ),
        format!(
            "SELECT thread_name, count(*) FROM process_spans('{pid}', 'async') GROUP BY thread_name"
        ),
    ] {
        let plan = ctx.sql(&sql).await.unwrap().logical_plan().clone();
        let bytes = logical_plan_to_bytes_with_extension_codec(&plan, &AsyncEventsCodec).unwrap();
        let decoded = logical_plan_from_bytes_with_extension_codec(
            &bytes,
            &ctx.task_ctx(),
            &AsyncEventsCodec,
        )
        .unwrap();
        let got = ctx
            .execute_logical_plan(decoded)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let want = sorted_lines(&query(&ctx, &sql).await);
        assert!(!want.is_empty(), "{sql}");
        assert_eq!(sorted_lines(&got), want, "{sql}");
    }
}

#[tokio::test]
async fn garbage_bytes_are_errors() {
    let ctx = SessionContext::new();
    let converter = DefaultPhysicalProtoConverter {};
    for bytes in [
        &b"garbage"[..],
        &[0xff; 64][..],
        &[0x0a, 0x05, 0x01][..],
        // A process id of 3 bytes.
        &[0x12, 0x03, 1, 2, 3][..],
        &[],
    ] {
        let result = PhysicalExtensionCodec::try_decode(
            &AsyncEventsCodec,
            bytes,
            &[],
            &ctx.task_ctx(),
            &converter,
        );
        assert!(result.is_err(), "{bytes:?}");
        assert!(
            physical_plan_from_bytes_with_extension_codec(
                bytes,
                &ctx.task_ctx(),
                &AsyncEventsCodec
            )
            .is_err(),
            "{bytes:?}"
        );
    }
}
