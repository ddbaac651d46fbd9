//! The `processes`, `streams` and `blocks` tables on both lakes: orphan blocks are listed by
//! every query shape alike, a `LIMIT` above a filter the metadata query cannot apply counts the
//! rows that filter keeps, and listings come in batches of the session's `batch_size` rows held
//! within the query's memory limit.

#[macro_use]
mod common;

use bytes::Bytes;
use common::lakes::{Backend, TestLake, open, store};
use common::producer::Recording;
use common::realistic::an_hour_ago;
use common::sql::{lines, plan_text, query, sorted_lines};
use datafusion::arrow::array::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::execute_stream;
use datafusion::prelude::{SessionConfig, SessionContext, col, lit, lower};
use datafusion_async_events::lake::{BlockRecord, StreamRecord};
use datafusion_async_events::metadata_tables::MetadataTable;
use datafusion_async_events::register_metadata_tables;
use futures::TryStreamExt;
use uuid::Uuid;

fn metadata_context(t: &TestLake, config: SessionConfig) -> SessionContext {
    let ctx = SessionContext::new_with_config(config);
    register_metadata_tables(&ctx, t.lake.clone()).unwrap();
    ctx
}

/// The single number a query returns.
async fn number(ctx: &SessionContext, sql: &str) -> i64 {
    let rows = lines(&query(ctx, sql).await);
    assert_eq!(rows.len(), 1, "{sql}");
    rows[0]
        .parse()
        .unwrap_or_else(|e| panic!("{sql}: {rows:?}: {e}"))
}

async fn row_count(ctx: &SessionContext, sql: &str) -> usize {
    query(ctx, sql)
        .await
        .iter()
        .map(RecordBatch::num_rows)
        .sum()
}

/// `n` recordings of three thread streams of two blocks, stored.
async fn stored(backend: Backend, n: u64) -> (TestLake, Vec<Recording>) {
    let t = open(backend).await;
    let recordings: Vec<Recording> = (0..n).map(|seed| an_hour_ago(3, 2, seed)).collect();
    for rec in &recordings {
        store(&t.lake, rec).await;
    }
    (t, recordings)
}

/// A block row of `rec`'s first block, moved to another stream and process.
fn moved_block(rec: &Recording, stream_id: Uuid, process_id: Uuid) -> BlockRecord {
    BlockRecord {
        block_id: Uuid::new_v4(),
        stream_id,
        process_id,
        ..rec.blocks[0].record.clone()
    }
}

on_both! {
    async fn orphan_blocks_are_listed_with_null_stream_and_process_columns(backend: Backend) {
        let (t, recordings) = stored(backend, 1).await;
        let rec = &recordings[0];
        let pid = rec.process.process_id;
        // One block whose stream row is missing (its process is there), one whose stream and
        // process rows are both missing.
        let no_stream = moved_block(rec, Uuid::new_v4(), pid);
        let no_process = moved_block(rec, Uuid::new_v4(), Uuid::new_v4());
        for b in [&no_stream, &no_process] {
            t.lake.insert_block(b, Bytes::from_static(b"orphan")).await.unwrap();
        }
        let ctx = metadata_context(&t, SessionConfig::new());
        let all = rec.blocks.len() + 2;
        assert_eq!(number(&ctx, "SELECT count(*) FROM blocks").await, all as i64);
        for sql in [
            "SELECT * FROM blocks",
            "SELECT block_id FROM blocks",
            "SELECT \"streams.format\" FROM blocks",
            "SELECT \"processes.exe\", begin_time FROM blocks",
        ] {
            assert_eq!(row_count(&ctx, sql).await, all, "{sql}");
        }
        // A LIMIT in the metadata query sees the orphans too.
        assert_eq!(row_count(&ctx, &format!("SELECT * FROM blocks LIMIT {all}")).await, all);
        // Filters agree with count(*) as well.
        let of_process = format!("FROM blocks WHERE process_id = '{pid}'");
        assert_eq!(number(&ctx, &format!("SELECT count(*) {of_process}")).await, all as i64 - 1);
        assert_eq!(row_count(&ctx, &format!("SELECT * {of_process}")).await, all - 1);
        // The orphans show as NULL stream or process columns.
        let orphans = query(&ctx, "SELECT block_id, \"processes.exe\" IS NULL FROM blocks \
                                    WHERE \"streams.format\" IS NULL ORDER BY block_id").await;
        let mut want = vec![format!("{}|false", no_stream.block_id), format!("{}|true", no_process.block_id)];
        want.sort();
        assert_eq!(lines(&orphans), want);
        assert_eq!(
            number(&ctx, "SELECT count(\"streams.tags\") + count(\"processes.properties\") FROM blocks").await,
            2 * rec.blocks.len() as i64 + 1
        );
        // Joined rows are those of the streams and processes tables.
        let joined = query(&ctx, "SELECT b.stream_id, b.\"streams.insert_time\", b.\"processes.exe\" \
            FROM blocks b WHERE b.\"streams.format\" IS NOT NULL").await;
        let direct = query(&ctx, "SELECT s.stream_id, s.insert_time, p.exe FROM blocks b \
            JOIN streams s ON s.stream_id = b.stream_id JOIN processes p ON p.process_id = b.process_id").await;
        assert_eq!(sorted_lines(&joined), sorted_lines(&direct));
    }

    async fn a_limit_above_a_filter_left_to_datafusion_counts_the_rows_it_keeps(backend: Backend) {
        let (t, recordings) = stored(backend, 3).await;
        let ctx = metadata_context(&t, SessionConfig::new());
        // `lower(…)` is not applied in the metadata query: DataFusion filters above the scan.
        for rec in &recordings {
            let pid = rec.process.process_id;
            let stream = rec.streams[1].stream_id;
            for (sql, n) in [
                (format!("SELECT * FROM streams WHERE lower(process_id) = '{pid}' LIMIT 2"), 2),
                (format!("SELECT block_id FROM blocks WHERE lower(stream_id) = '{stream}' LIMIT 2"), 2),
                (format!("SELECT * FROM blocks WHERE lower(process_id) = '{pid}' LIMIT 5"), 5),
                (format!("SELECT exe FROM processes WHERE lower(process_id) = '{pid}' LIMIT 1"), 1),
            ] {
                assert_eq!(row_count(&ctx, &sql).await, n, "{sql}");
            }
        }
        // The same from the provider: a scan given a limit with a filter it does not apply
        // itself (as DataFusion passes an inexact filter) must not cut the listing.
        let table = MetadataTable::streams(t.lake.clone());
        let pid = recordings[2].process.process_id.to_string();
        let filter = lower(col("process_id")).eq(lit(pid));
        let state = ctx.state();
        let plan = table.scan(&state, None, &[filter], Some(1)).await.unwrap();
        let batches: Vec<RecordBatch> =
            execute_stream(plan, ctx.task_ctx()).unwrap().try_collect().await.unwrap();
        let streams: usize = recordings.iter().map(|r| r.streams.len()).sum();
        assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), streams);
    }

    async fn listings_come_in_batches_of_batch_size_rows(backend: Backend) {
        let (t, recordings) = stored(backend, 3).await;
        let ctx = metadata_context(&t, SessionConfig::new().with_batch_size(4));
        let streams: usize = recordings.iter().map(|r| r.streams.len()).sum();
        let blocks: usize = recordings.iter().map(|r| r.blocks.len()).sum();
        for (sql, rows) in [
            ("SELECT * FROM blocks", blocks),
            ("SELECT block_id FROM blocks", blocks),
            ("SELECT * FROM streams", streams),
            ("SELECT process_id, exe FROM processes", recordings.len()),
        ] {
            let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
            let batches: Vec<RecordBatch> =
                execute_stream(plan, ctx.task_ctx()).unwrap().try_collect().await.unwrap();
            let sizes: Vec<usize> = batches.iter().map(RecordBatch::num_rows).collect();
            assert_eq!(sizes.iter().sum::<usize>(), rows, "{sql}: {sizes:?}");
            assert!(sizes.iter().all(|&n| n <= 4), "{sql}: {sizes:?}");
            assert_eq!(sizes.len(), rows.div_ceil(4), "{sql}: {sizes:?}");
        }
    }

    async fn a_listing_beyond_the_memory_limit_is_resources_exhausted(backend: Backend) {
        let t = open(backend).await;
        let rec = an_hour_ago(1, 1, 5);
        store(&t.lake, &rec).await;
        // Eight streams of 256 KiB of metadata: 2 MiB to list, against a 1 MiB limit.
        for _ in 0..8 {
            t.lake.insert_stream(&StreamRecord {
                stream_id: Uuid::new_v4(),
                dependencies_metadata: vec![0x80; 256 << 10],
                ..rec.streams[0].clone()
            }).await.unwrap();
        }
        let sql = "SELECT * FROM streams";
        // Without a limit, the listing is read.
        let unlimited = metadata_context(&t, SessionConfig::new());
        assert_eq!(row_count(&unlimited, sql).await, 9);
        let runtime = RuntimeEnvBuilder::new().with_memory_limit(1 << 20, 1.0).build_arc().unwrap();
        let limited = SessionContext::new_with_config_rt(SessionConfig::new(), runtime);
        register_metadata_tables(&limited, t.lake.clone()).unwrap();
        let err = limited.sql(sql).await.unwrap().collect().await.unwrap_err();
        assert!(matches!(err.find_root(), DataFusionError::ResourcesExhausted(_)), "{err}");
        assert!(err.to_string().contains("MetadataScanExec[streams]"), "{err}");
        // Blocks read their stream's metadata only when a stream column is projected.
        assert_eq!(row_count(&limited, "SELECT block_id FROM blocks").await, rec.blocks.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_shows_what_the_metadata_query_applies() {
    let (t, recordings) = stored(Backend::Sqlite, 1).await;
    let ctx = metadata_context(&t, SessionConfig::new().with_target_partitions(2));
    let pid = recordings[0].process.process_id;
    let exact = plan_text(
        &ctx,
        &format!(
            "SELECT block_id, \"streams.tags\" FROM blocks WHERE process_id = '{pid}' \
             AND begin_time >= TIMESTAMP '2024-05-01T10:00:00Z' LIMIT 3"
        ),
    )
    .await;
    assert_eq!(
        exact.trim_end(),
        "GlobalLimitExec: skip=0, fetch=3
  CooperativeExec
    MetadataScanExec: table=blocks, process_id in 1 ids, begin_time >= [time], limit=3, join=streams"
    );
    // A filter left to DataFusion keeps the limit above it, out of the metadata query.
    let inexact = plan_text(
        &ctx,
        &format!("SELECT exe FROM processes WHERE lower(process_id) = '{pid}' LIMIT 3"),
    )
    .await;
    assert_eq!(
        inexact.trim_end(),
        "CoalescePartitionsExec: fetch=3
  FilterExec: lower(process_id@0) = [uuid], projection=[exe@1], fetch=3
    RepartitionExec: partitioning=RoundRobinBatch(2), input_partitions=1
      MetadataScanExec: table=processes"
    );
}
