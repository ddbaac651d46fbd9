//! `view_instance('thread_spans', stream_id)` against micromegas's own thread-span pairing
//! (micromegas-analytics 0.33: `parse_thread_block_payload` feeding a `CallTreeBuilder`, written
//! out by `SpanRecordBuilder`, as its `thread_spans` view does for a chain of blocks): on a
//! program recorded with the real micromegas-tracing into an embedded lake, each thread's rows
//! must be the same, in the same order, every column compared.

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::DataType;
use datafusion::prelude::SessionContext;
use datafusion_async_events::lake::{BlockRecord, StreamRecord, TimeRange};
use datafusion_async_events::provider::ScanOptions;
use datafusion_async_events::recorder::{RecordingOptions, start_recording};
use datafusion_async_events::{Lake, TimeBounds};
use micromegas_analytics::call_tree::CallTreeBuilder;
use micromegas_analytics::metadata::{StreamMetadata, get_thread_name_from_stream_metadata};
use micromegas_analytics::span_table::SpanRecordBuilder;
use micromegas_analytics::thread_block_processor::parse_thread_block_payload;
use micromegas_analytics::time::ConvertTicks;
use std::collections::HashMap;
use std::sync::Arc;

#[allow(dead_code)] // MODULE is for the main crate's tests
#[path = "../../tests/common/thread_workload.rs"]
mod thread_workload;

/// Calls of `outer` per thread.
const CALLS: u64 = 60;

/// micromegas's `StreamMetadata` of a stream row.
fn metadata(stream: &StreamRecord) -> StreamMetadata {
    let properties: HashMap<String, String> = stream.properties.iter().cloned().collect();
    StreamMetadata {
        process_id: stream.process_id,
        stream_id: stream.stream_id,
        dependencies_metadata: ciborium::de::from_reader(stream.dependencies_metadata.as_slice())
            .unwrap(),
        objects_metadata: ciborium::de::from_reader(stream.objects_metadata.as_slice()).unwrap(),
        tags: stream.tags.clone(),
        properties: Arc::new(
            micromegas_analytics::arrow_properties::serialize_properties_to_jsonb(&properties)
                .unwrap(),
        ),
    }
}

/// Contiguous block chains, as micromegas's `group_contiguous_block_chains` forms them.
fn chains(blocks: &[BlockRecord]) -> Vec<Vec<BlockRecord>> {
    let mut out: Vec<Vec<BlockRecord>> = Vec::new();
    let mut end: Option<i64> = None;
    for b in blocks {
        match end {
            Some(e) if b.begin_ticks > e => {
                out.push(vec![b.clone()]);
                end = Some(b.end_ticks);
            }
            Some(e) => {
                out.last_mut().unwrap().push(b.clone());
                end = Some(e.max(b.end_ticks));
            }
            None => {
                out.push(vec![b.clone()]);
                end = Some(b.end_ticks);
            }
        }
    }
    out
}

/// micromegas's rows for one stream, from its block `first` on: one call tree per chain.
async fn micromegas_rows(
    lake: &Lake,
    convert: &ConvertTicks,
    stream: &StreamRecord,
    first: usize,
) -> RecordBatch {
    let meta = metadata(stream);
    let mut blocks = lake
        .blocks(stream.process_id, &[stream.stream_id], TimeRange::all())
        .await
        .unwrap();
    blocks.sort_by_key(|b| b.begin_ticks);
    blocks.drain(..first);
    let mut rows = SpanRecordBuilder::with_capacity(1024);
    for chain in chains(&blocks) {
        let mut builder = CallTreeBuilder::new(
            convert.delta_ticks_to_ns(chain[0].begin_ticks),
            convert.delta_ticks_to_ns(chain.iter().map(|b| b.end_ticks).max().unwrap()),
            None,
            convert.clone(),
            get_thread_name_from_stream_metadata(&meta).unwrap(),
        );
        for block in &chain {
            let blob = lake.fetch_blob(block).await.unwrap().unwrap();
            let payload: micromegas_telemetry::block_wire_format::BlockPayload =
                ciborium::de::from_reader(blob.as_ref()).unwrap();
            parse_thread_block_payload(
                &block.block_id.to_string(),
                block.object_offset,
                &payload,
                &meta,
                &mut builder,
            )
            .unwrap();
        }
        rows.append_call_tree(&builder.finish()).unwrap();
    }
    rows.finish().unwrap()
}

/// A column as text, dictionaries and binary values expanded, for comparison.
fn column_text(array: &ArrayRef) -> Vec<String> {
    let plain = match array.data_type() {
        DataType::Dictionary(_, value) => cast(array, value).unwrap(),
        _ => array.clone(),
    };
    let formatter = datafusion::arrow::util::display::ArrayFormatter::try_new(
        plain.as_ref(),
        &Default::default(),
    )
    .unwrap();
    (0..plain.len())
        .map(|i| formatter.value(i).to_string())
        .collect()
}

/// Compares the rows of `sql` with micromegas's, in order; returns the values compared.
async fn same_rows(ctx: &SessionContext, sql: &str, theirs: &RecordBatch, case: &str) -> usize {
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let ours = concat_batches(&batches[0].schema(), &batches).unwrap();
    assert_eq!(ours.schema(), theirs.schema(), "schemas");
    assert_eq!(ours.num_rows(), theirs.num_rows(), "rows of {sql} ({case})");
    let mut compared = 0;
    for (i, field) in theirs.schema().fields().iter().enumerate() {
        let (a, b) = (column_text(ours.column(i)), column_text(theirs.column(i)));
        for (row, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(x, y, "{sql} ({case}): row {row}, column {}", field.name());
            compared += 1;
        }
    }
    compared
}

#[test]
fn view_instance_thread_spans_equals_micromegas() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let lake = runtime.block_on(Lake::create_embedded(dir.path())).unwrap();
    let recording = start_recording(
        lake.clone(),
        RecordingOptions {
            thread_buffer_size: 4 * 1024,
            ..RecordingOptions::default()
        },
    )
    .unwrap();
    let pid = recording.process_id();
    thread_workload::program(CALLS);
    let summary = recording.finish();
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);

    runtime.block_on(async {
        let process = lake.process(pid).await.unwrap();
        // micromegas's make_time_converter_from_latest_timing: the reported frequency, else
        // one estimated from the latest block of the process.
        let start_ns = process.start_time.timestamp_nanos_opt().unwrap();
        let frequency = match process.tsc_frequency {
            f if f > 0 => f,
            _ => {
                let latest = lake.latest_timing(pid).await.unwrap().unwrap();
                let seconds = (latest.end_time_ns - start_ns) as f64 / 1e9;
                (latest.end_ticks as f64 / seconds).round() as i64
            }
        };
        let convert =
            ConvertTicks::from_meta_data(process.start_ticks, start_ns, frequency).unwrap();
        let ctx = SessionContext::new();
        datafusion_async_events::register(&ctx, lake.clone());
        let mut compared = 0;
        let mut threads = 0;
        for stream in lake.cpu_streams(pid, None).await.unwrap() {
            let theirs = micromegas_rows(&lake, &convert, &stream, 0).await;
            if theirs.num_rows() == 0 {
                continue;
            }
            threads += 1;
            let sql = format!(
                "SELECT * FROM view_instance('thread_spans', '{}')",
                stream.stream_id
            );
            compared += same_rows(&ctx, &sql, &theirs, "whole stream").await;

            // From the middle of a block on (a query range starting there): the chain starts
            // inside scopes, whose ends come without begins.
            let mut blocks = lake
                .blocks(pid, &[stream.stream_id], TimeRange::all())
                .await
                .unwrap();
            blocks.sort_by_key(|b| b.begin_ticks);
            let k = blocks.len() / 2;
            assert!(k > 0, "several blocks per thread");
            let (b0, b1) = (
                blocks[k].begin_time.timestamp_nanos_opt().unwrap(),
                blocks[k].end_time.timestamp_nanos_opt().unwrap(),
            );
            let ranged = SessionContext::new();
            let options = ScanOptions {
                query_range: TimeBounds::new(Some(b0 + (b1 - b0) / 2), None),
                ..ScanOptions::default()
            };
            datafusion_async_events::register_with(&ranged, lake.clone(), options);
            let theirs = micromegas_rows(&lake, &convert, &stream, k).await;
            compared += same_rows(&ranged, &sql, &theirs, "from the middle").await;
        }
        assert_eq!(threads, thread_workload::THREADS);
        // The whole streams (every call's scopes, 2 open scopes, a root per thread), then the
        // second halves; 12 columns each.
        let whole = thread_workload::THREADS as usize
            * (CALLS as usize * thread_workload::SCOPES_PER_CALL + 1)
            + 2;
        assert!(compared > whole * 12, "{compared}");
        println!("compared {compared} values");
    });
}
