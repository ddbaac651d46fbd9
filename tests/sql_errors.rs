//! Bad input through SQL: each error is clear and names the thing at fault; the options to skip
//! and count instead work.

#[macro_use]
mod common;

use common::lakes::{Backend, TestLake, open, store};
use common::scripted::{out_of_order, scripted_033, shuffled_in_block};
use common::sql::{context, context_with, query, query_err, run_measured};
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{Int64Type, TimestampNanosecondType};
use datafusion::physical_plan::ExecutionPlanProperties;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_async_events::format::{BlockPayload, decompress_frame};
use datafusion_async_events::lake::{LakeOptions, MissingBlobPolicy, blob_key};
use datafusion_async_events::provider::ScanOptions;

fn blob_path(t: &TestLake, b: &common::producer::RawBlock) -> std::path::PathBuf {
    t.dir
        .path()
        .join(blob_key(b.process_id, b.stream_id, b.block_id))
}

on_both! {
    async fn arguments_are_checked_when_the_query_is_planned(backend: Backend) {
        let t = open(backend).await;
        let ctx = context(&t.lake);
        let cases = [
            ("SELECT * FROM async_events('not-a-uuid')", "'not-a-uuid' is not a process id"),
            ("SELECT * FROM async_events('global')", "'global' is not supported"),
            ("SELECT * FROM view_instance('async_events', 'global')", "'global' is not supported"),
            ("SELECT * FROM view_instance('log_entries', '6f0e6b0c-5d3c-4e7a-9a57-0e9f1a2b3c4d')", "unknown view set 'log_entries'; supported view sets: 'async_events'"),
            ("SELECT * FROM async_events(42)", "process id must be a string"),
            ("SELECT * FROM async_events()", "takes (process_id) or (process_id, begin, end)"),
            ("SELECT * FROM async_events('6f0e6b0c-5d3c-4e7a-9a57-0e9f1a2b3c4d', 'yesterday', NULL)", "'yesterday' is not an RFC 3339 timestamp"),
            ("SELECT * FROM view_instance('async_events')", "takes (view_set, instance_id)"),
        ];
        for (sql, expected) in cases {
            let err = query_err(&ctx, sql).await;
            assert!(err.contains(expected), "{sql}: {err}");
        }
        let pid = uuid::Uuid::new_v4();
        let err = query_err(&ctx, &format!("SELECT count(*) FROM async_events('{pid}')")).await;
        assert!(err.contains(&format!("process {pid} is not in the lake")), "{err}");
    }

    async fn a_corrupt_block_is_named_or_skipped_and_counted(backend: Backend) {
        let t = open(backend).await;
        let rec = scripted_033().recording;
        store(&t.lake, &rec).await;
        let pid = rec.process.process_id;
        let victim = &rec.blocks[1];
        // Flip a byte in the middle of the stored blob: a checksum catches it.
        let path = blob_path(&t, victim);
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 20] ^= 0x55;
        std::fs::write(&path, bytes).unwrap();
        let ctx = context(&t.lake);
        let err = query_err(&ctx, &format!("SELECT * FROM async_events('{pid}')")).await;
        assert!(err.contains(&format!("block {}", victim.block_id)), "{err}");
        assert!(err.contains(&format!("stream {}", victim.stream_id)), "{err}");
        assert!(err.contains("LZ4") || err.contains("CBOR"), "{err}");
        common::logs::start();
        let skipping = SessionContext::new();
        datafusion_async_events::register_with(&skipping, t.lake.clone(), ScanOptions { skip_corrupt_blocks: true, ..ScanOptions::default() });
        let (rows, m) = run_measured(&skipping, &format!("SELECT * FROM async_events('{pid}')")).await;
        assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 8, "the rows of the intact block");
        assert_eq!(m.get("blocks_corrupt"), 1);
        // The skip is logged as a warning naming the block, its stream, the process and why.
        let logged = common::logs::containing(&victim.block_id.to_string());
        assert_eq!(logged.len(), 1, "{logged:?}");
        let line = &logged[0];
        assert!(line.starts_with("WARN: skipped corrupt block"), "{line}");
        assert!(line.contains(&format!("stream {}", victim.stream_id)) && line.contains(&format!("process {pid}")), "{line}");
        assert!(line.contains("LZ4") || line.contains("CBOR"), "{line}");
    }

    async fn a_missing_blob_is_named_or_skipped_and_counted(backend: Backend) {
        common::logs::start();
        let t = open(backend).await;
        let rec = scripted_033().recording;
        store(&t.lake, &rec).await;
        let pid = rec.process.process_id;
        let victim = &rec.blocks[0];
        std::fs::remove_file(blob_path(&t, victim)).unwrap();
        let ctx = context(&t.lake);
        let err = query_err(&ctx, &format!("SELECT * FROM async_events('{pid}')")).await;
        assert!(err.contains(&format!("blob of block {}", victim.block_id)), "{err}");
        assert!(err.contains("missing"), "{err}");
        let store_url = url::Url::from_directory_path(t.dir.path()).unwrap().to_string();
        let options = LakeOptions { missing_blobs: MissingBlobPolicy::Skip, ..LakeOptions::default() };
        let skipping = datafusion_async_events::Lake::open_with(&t.db_url, &store_url, options).await.unwrap();
        let (rows, m) = run_measured(&context(&skipping), &format!("SELECT * FROM async_events('{pid}')")).await;
        assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 3, "the rows of the other block");
        assert_eq!((m.get("blocks_missing"), m.get("blocks_fetched")), (1, 1));
        let logged = common::logs::containing(&victim.block_id.to_string());
        assert_eq!(logged.len(), 1, "{logged:?}");
        assert!(logged[0].starts_with("WARN: skipped block") && logged[0].contains("missing") && logged[0].contains(&format!("process {pid}")), "{logged:?}");
    }

    async fn a_stream_going_back_in_time_is_an_error_unless_order_is_not_declared(backend: Backend) {
        let t = open(backend).await;
        let rec = out_of_order();
        store(&t.lake, &rec).await;
        let pid = rec.process.process_id;
        let err = query_err(&context(&t.lake), &format!("SELECT time, span_id FROM async_events('{pid}') ORDER BY time LIMIT 10")).await;
        assert!(err.contains(&format!("block {}", rec.blocks[1].block_id)), "{err}");
        assert!(err.contains("not in time order"), "{err}");
        // Read by one partition, or by two that meet between the two blocks.
        for partitions in [1, 2] {
            let ctx = context_with(&t.lake, SessionConfig::new().with_target_partitions(partitions));
            let sql = format!("SELECT time, span_id FROM async_events('{pid}')");
            let plan = ctx.sql(&sql).await.unwrap().create_physical_plan().await.unwrap();
            assert_eq!(plan.output_partitioning().partition_count(), partitions);
            let err = query_err(&ctx, &format!("{sql} ORDER BY time")).await;
            assert!(err.contains(&format!("block {}", rec.blocks[1].block_id)), "{partitions}: {err}");
            assert!(err.contains(&format!("{}", rec.blocks[0].block_id)), "{partitions}: {err}");
        }
        let relaxed = SessionContext::new();
        datafusion_async_events::register_with(&relaxed, t.lake.clone(), ScanOptions { declare_time_order: false, ..ScanOptions::default() });
        let rows = query(&relaxed, &format!("SELECT span_id FROM async_events('{pid}') ORDER BY time")).await;
        let ids: Vec<i64> = rows.iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec()).collect();
        assert_eq!(ids, [2, 1, 1, 2]);
    }
}

on_both! {
    async fn a_block_cut_short_is_skipped_whole_even_in_small_batches(backend: Backend) {
        // The defect is at the block's end, found only after parts of it could have been
        // handed over: skipped blocks are read whole, so none of its rows come out.
        let t = open(backend).await;
        let rec = scripted_033().recording;
        store(&t.lake, &rec).await;
        let pid = rec.process.process_id;
        let victim = &rec.blocks[1];
        let intact = query(&context(&t.lake), &format!("SELECT count(*) FROM async_events('{pid}') WHERE block_id = '{}'", rec.blocks[0].block_id)).await;
        let intact = intact[0].column(0).as_primitive::<Int64Type>().value(0) as usize;
        assert!(intact > 2, "more rows than a batch: {intact}");
        let payload = BlockPayload::from_cbor(&victim.payload).unwrap();
        let (mut deps, mut objects) = (Vec::new(), Vec::new());
        decompress_frame(&payload.dependencies, &mut deps, "dependencies").unwrap();
        decompress_frame(&payload.objects, &mut objects, "objects").unwrap();
        objects.truncate(objects.len() - 3);
        std::fs::write(blob_path(&t, victim), BlockPayload::compress(&deps, &objects).to_cbor()).unwrap();
        let small = context_with(&t.lake, SessionConfig::new().with_batch_size(2));
        let err = query_err(&small, &format!("SELECT * FROM async_events('{pid}')")).await;
        assert!(err.contains(&format!("block {}", victim.block_id)), "{err}");
        let skipping = SessionContext::new_with_config(SessionConfig::new().with_batch_size(2));
        datafusion_async_events::register_with(&skipping, t.lake.clone(), ScanOptions { skip_corrupt_blocks: true, ..ScanOptions::default() });
        let (rows, m) = run_measured(&skipping, &format!("SELECT * FROM async_events('{pid}')")).await;
        assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), intact, "the rows of the intact block alone");
        assert!(rows.iter().all(|b| b.num_rows() <= 2));
        assert_eq!(m.get("blocks_corrupt"), 1);
    }

    async fn a_block_out_of_time_order_is_sorted_or_named_when_read_in_parts(backend: Backend) {
        // One block of 20 events written out of time order.
        let t = open(backend).await;
        let rec = shuffled_in_block(10);
        store(&t.lake, &rec).await;
        let pid = rec.process.process_id;
        let block = rec.blocks[0].block_id;
        let sql = format!("SELECT time, span_id FROM async_events('{pid}')");
        // Read whole (fewer objects than a batch has rows): sorted.
        let rows = query(&context(&t.lake), &sql).await;
        let times: Vec<i64> = rows.iter().flat_map(|b| b.column(0).as_primitive::<TimestampNanosecondType>().values().to_vec()).collect();
        assert_eq!(times.len(), 20);
        assert!(times.is_sorted(), "{times:?}");
        let ids: Vec<i64> = rows.iter().flat_map(|b| b.column(1).as_primitive::<Int64Type>().values().to_vec()).collect();
        let mut want: Vec<i64> = (1..=10).collect();
        want.sort_by_key(|id| (id * 7) % 10);
        assert_eq!(ids[..10], want, "the begins in the order of their times");
        // Read in parts of 4 rows: the second part goes back before the first one's end, which
        // a partition declared in time order cannot hand over: an error naming the block.
        let small = context_with(&t.lake, SessionConfig::new().with_batch_size(4));
        let err = query_err(&small, &sql).await;
        assert!(err.contains(&format!("block {block}")) && err.contains("not in time order"), "{err}");
        // Without the declared order, every row, in batches of 4.
        let relaxed = SessionContext::new_with_config(SessionConfig::new().with_batch_size(4));
        datafusion_async_events::register_with(&relaxed, t.lake.clone(), ScanOptions { declare_time_order: false, ..ScanOptions::default() });
        let rows = query(&relaxed, &sql).await;
        assert!(rows.iter().all(|b| b.num_rows() <= 4));
        let mut got: Vec<i64> = rows.iter().flat_map(|b| b.column(0).as_primitive::<TimestampNanosecondType>().values().to_vec()).collect();
        got.sort();
        assert_eq!(got, times);
    }
}

#[tokio::test]
async fn a_stream_with_unreadable_metadata_is_named() {
    let t = open(Backend::Sqlite).await;
    let mut rec = scripted_033().recording;
    rec.streams[0].objects_metadata = b"\xa1garbage".to_vec();
    store(&t.lake, &rec).await;
    let pid = rec.process.process_id;
    let err = query_err(
        &context(&t.lake),
        &format!("SELECT * FROM async_events('{pid}')"),
    )
    .await;
    assert!(
        err.contains(&format!("stream {}", rec.streams[0].stream_id)),
        "{err}"
    );
    assert!(err.contains("objects metadata"), "{err}");
}

/// A session whose memory pool holds `bytes`.
fn bounded_context(lake: &datafusion_async_events::Lake, bytes: usize) -> SessionContext {
    let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_memory_limit(bytes, 1.0)
        .build_arc()
        .unwrap();
    let ctx = SessionContext::new_with_config_rt(SessionConfig::new(), runtime);
    datafusion_async_events::register(&ctx, lake.clone());
    ctx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scan_reserves_its_blocks_in_the_querys_memory_pool() {
    let t = open(Backend::Sqlite).await;
    let rec = scripted_033().recording;
    store(&t.lake, &rec).await;
    let pid = rec.process.process_id;
    let sql = format!("SELECT count(*) FROM async_events('{pid}')");
    let expected = query(&context(&t.lake), &sql).await[0]
        .column(0)
        .as_primitive::<Int64Type>()
        .value(0);
    // Room for the blocks: the right answer, and everything given back at the end.
    let roomy = bounded_context(&t.lake, 64 << 20);
    let got = query(&roomy, &sql).await[0]
        .column(0)
        .as_primitive::<Int64Type>()
        .value(0);
    assert_eq!(got, expected);
    assert_eq!(roomy.runtime_env().memory_pool.reserved(), 0);
    // No room for even one block: an error naming the block, not an allocation.
    let cramped = bounded_context(&t.lake, 16);
    let message = query_err(&cramped, &sql).await;
    assert!(
        message.contains("Resources exhausted") && message.contains("needs"),
        "{message}"
    );
    let named = rec
        .blocks
        .iter()
        .any(|b| message.contains(&b.record.block_id.to_string()));
    assert!(named, "{message}");
}
