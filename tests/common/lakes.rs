//! Lakes for the tests: the embedded SQLite lake in a temporary folder, and a fresh database on
//! the PostgreSQL server named by `ASYNC_EVENTS_TEST_POSTGRES` (started by `scripts/test.sh`).

use super::producer::{RawBlock, Recording};
use bytes::Bytes;
use datafusion_async_events::Lake;
use datafusion_async_events::lake::{BlockRecord, LakeOptions};
use sqlx::Connection;
use tempfile::TempDir;

/// Which metadata database a lake uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub const BACKENDS: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

/// A lake and the folder holding its files (removed on drop).
pub struct TestLake {
    pub lake: Lake,
    pub backend: Backend,
    pub dir: TempDir,
    /// The database URL (PostgreSQL) or SQLite URL.
    pub db_url: String,
}

/// The PostgreSQL server of the test run.
pub fn pg_admin_url() -> String {
    std::env::var("ASYNC_EVENTS_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!(
            "ASYNC_EVENTS_TEST_POSTGRES is not set: run the tests with scripts/test.sh, which starts \
             a PostgreSQL server, or point it at a postgres:// URL of a user allowed to create databases"
        )
    })
}

/// Creates an empty database on the test server and returns its URL.
pub async fn fresh_pg_database() -> String {
    let admin = pg_admin_url();
    let name = format!("ae_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await
        .unwrap();
    let mut url = url::Url::parse(&admin).unwrap();
    url.set_path(&format!("/{name}"));
    url.to_string()
}

pub async fn open(backend: Backend) -> TestLake {
    open_with(backend, LakeOptions::default()).await
}

/// A new lake of `backend`, opened writable (whatever `options` say) so that tests can store.
pub async fn open_with(backend: Backend, options: LakeOptions) -> TestLake {
    let options = LakeOptions {
        writable: true,
        ..options
    };
    let dir = tempfile::tempdir().unwrap();
    let store = url::Url::from_directory_path(dir.path())
        .unwrap()
        .to_string();
    let db_url = match backend {
        Backend::Sqlite => format!("sqlite://{}/telemetry.db", dir.path().display()),
        Backend::Postgres => fresh_pg_database().await,
    };
    let lake = Lake::open_with(&db_url, &store, options).await.unwrap();
    TestLake {
        lake,
        backend,
        dir,
        db_url,
    }
}

pub fn block_record(b: &RawBlock) -> BlockRecord {
    b.record.clone()
}

/// Stores a recording the way micromegas's ingestion does: process, streams, then each block's
/// blob followed by its row.
pub async fn store(lake: &Lake, rec: &Recording) {
    lake.insert_process(&rec.process).await.unwrap();
    for s in &rec.streams {
        lake.insert_stream(s).await.unwrap();
    }
    for b in &rec.blocks {
        lake.insert_block(&block_record(b), Bytes::from(b.payload.clone()))
            .await
            .unwrap();
    }
}

/// Times as PostgreSQL stores them (microseconds); SQLite keeps nanoseconds.
pub fn stored_time(
    backend: Backend,
    t: chrono::DateTime<chrono::Utc>,
) -> chrono::DateTime<chrono::Utc> {
    match backend {
        Backend::Sqlite => t,
        Backend::Postgres => {
            let ns = t.timestamp_nanos_opt().unwrap();
            chrono::DateTime::from_timestamp_nanos(ns - ns.rem_euclid(1000))
        }
    }
}

/// Every async event of a process, read through the lake (metadata, blobs, the process's
/// clock) and decoded block by block with the format layer.
pub async fn decode_from_lake(lake: &Lake, process_id: uuid::Uuid) -> Vec<super::Row> {
    use datafusion_async_events::format::{
        AsyncEventDecoder, BlockIds, ColumnSet, EventBatchBuilder, RowFilter,
    };
    use datafusion_async_events::lake::TimeRange;
    let process = lake.process(process_id).await.unwrap();
    let clock = datafusion_async_events::provider::process_clock(lake, &process)
        .await
        .unwrap();
    let streams = lake.cpu_streams(process_id, None).await.unwrap();
    let ids: Vec<uuid::Uuid> = streams.iter().map(|s| s.stream_id).collect();
    let mut decoder = AsyncEventDecoder::new();
    let mut out = EventBatchBuilder::new(ColumnSet::all());
    let mut batches = Vec::new();
    for b in lake
        .blocks(process_id, &ids, TimeRange::all())
        .await
        .unwrap()
    {
        let stream = streams.iter().find(|s| s.stream_id == b.stream_id).unwrap();
        let blob = lake.fetch_blob(&b).await.unwrap().unwrap();
        let (sid, bid) = (b.stream_id.to_string(), b.block_id.to_string());
        let ids = BlockIds {
            stream_id: &sid,
            block_id: &bid,
        };
        let layout = super::producer::layout(stream);
        decoder
            .decode_blob(&layout, &blob, ids, &clock, &RowFilter::all(), &mut out)
            .unwrap();
        batches.push(out.finish().unwrap());
    }
    super::rows(&batches)
}
