//! Lakes for the tests: the embedded SQLite lake in a temporary folder, and a fresh database on
//! the PostgreSQL server named by `ASYNC_EVENTS_TEST_POSTGRES` (started by `scripts/test.sh`).

use super::producer::{RawBlock, RawProcess, RawStream, Recording};
use bytes::Bytes;
use datafusion_async_events::Lake;
use datafusion_async_events::lake::{BlockRecord, LakeOptions, ProcessRecord, StreamRecord};
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

pub async fn open_with(backend: Backend, options: LakeOptions) -> TestLake {
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

pub fn process_record(p: &RawProcess) -> ProcessRecord {
    ProcessRecord {
        process_id: p.process_id,
        exe: p.exe.clone(),
        username: p.username.clone(),
        realname: p.realname.clone(),
        computer: p.computer.clone(),
        distro: p.distro.clone(),
        cpu_brand: p.cpu_brand.clone(),
        tsc_frequency: p.tsc_frequency,
        start_time: p.start_time,
        start_ticks: p.start_ticks,
        parent_process_id: p.parent_process_id,
        properties: p.properties.clone(),
    }
}

pub fn stream_record(s: &RawStream) -> StreamRecord {
    StreamRecord {
        stream_id: s.stream_id,
        process_id: s.process_id,
        dependencies_metadata: s.dependencies_metadata.clone(),
        objects_metadata: s.objects_metadata.clone(),
        tags: s.tags.clone(),
        properties: s.properties.clone(),
    }
}

pub fn block_record(b: &RawBlock) -> BlockRecord {
    BlockRecord {
        block_id: b.block_id,
        stream_id: b.stream_id,
        process_id: b.process_id,
        begin_time: b.begin_time,
        begin_ticks: b.begin_ticks,
        end_time: b.end_time,
        end_ticks: b.end_ticks,
        nb_objects: b.nb_objects,
        object_offset: b.object_offset,
        payload_size: b.payload.len() as i64,
    }
}

/// Stores a recording the way micromegas's ingestion does: process, streams, then each block's
/// blob followed by its row.
pub async fn store(lake: &Lake, rec: &Recording) {
    lake.insert_process(&process_record(&rec.process))
        .await
        .unwrap();
    for s in &rec.streams {
        lake.insert_stream(&stream_record(s)).await.unwrap();
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
