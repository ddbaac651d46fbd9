//! Where blocks live: a [`Lake`] is a metadata database plus an object store.
//!
//! - A real micromegas lake: PostgreSQL (every schema a published release writes) and an object
//!   store (`file://`, `s3://`, `gs://`, `az://`), configured like micromegas's own services with
//!   `MICROMEGAS_SQL_CONNECTION_STRING` and `MICROMEGAS_OBJECT_STORE_URI`.
//! - The embedded lake: SQLite and a local folder, no server needed.
//!
//! Opening a lake never changes it: a lake is opened read-only (SQLite in `mode=ro`, no table
//! created anywhere) unless [`LakeOptions::writable`] asks for writes, as the recorder does;
//! only then is a missing embedded lake, or the telemetry tables of an empty PostgreSQL
//! database, created.
//!
//! This module knows nothing of SQL expressions or DataFusion: it finds processes, streams and
//! blocks, fetches blobs, and writes all three (for the recorder).

mod blobs;
mod listing;
mod location;
mod postgres;
mod records;
mod sqlite;

pub use listing::{
    BlockJoins, BlockListing, BlockProcess, BlockStream, Comparison, Listing, MetadataFilter,
    ProcessListing, StreamListing, TimeColumn, TimeCondition,
};
pub use location::{LakeLocation, LakeRegistry};
pub use postgres::PgSchema;
pub use records::{
    BlockRecord, BlockWindow, LatestTiming, ProcessRecord, ProcessSummary, StreamRecord, TimeRange,
    blob_key,
};

use crate::error::{Error, Result};
use blobs::BlobStore;
use bytes::Bytes;
use futures::StreamExt;
use postgres::PgMeta;
use sqlite::SqliteMeta;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use uuid::Uuid;

/// Environment variable holding the metadata database URL (as micromegas's services use it).
pub const SQL_CONNECTION_STRING_VAR: &str = "MICROMEGAS_SQL_CONNECTION_STRING";
/// Environment variable holding the object store URL (as micromegas's services use it).
pub const OBJECT_STORE_URI_VAR: &str = "MICROMEGAS_OBJECT_STORE_URI";
/// Folder of the embedded lake when no environment variable is set.
pub const DEFAULT_EMBEDDED_DIR: &str = "lake";
/// File name of the embedded lake's SQLite database, inside its folder.
pub const EMBEDDED_DB_FILE: &str = "telemetry.db";

/// What to do with a block whose row exists but whose blob does not (retention deletes rows
/// and blobs separately, so a reader can meet one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingBlobPolicy {
    /// Fail with an error naming the block.
    #[default]
    Fail,
    /// Skip the block and count it.
    Skip,
}

/// Connection settings of a lake.
#[derive(Debug, Clone)]
pub struct LakeOptions {
    /// Longest wait for the metadata database to answer when opening.
    pub connect_timeout: Duration,
    /// Connections in the metadata pool.
    pub max_connections: u32,
    /// Blocks whose blob is missing.
    pub missing_blobs: MissingBlobPolicy,
    /// Open for recording: create the embedded lake or PostgreSQL's telemetry tables when
    /// missing, and allow the `insert_*` calls. Off by default: a reader never changes a lake.
    pub writable: bool,
}

impl LakeOptions {
    /// The default options, writable (what the recorder uses).
    pub fn writable() -> Self {
        Self {
            writable: true,
            ..Self::default()
        }
    }
}

impl Default for LakeOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            max_connections: 8,
            missing_blobs: MissingBlobPolicy::Fail,
            writable: false,
        }
    }
}

#[derive(Debug, Clone)]
enum Metadata {
    Postgres(PgMeta),
    Sqlite(SqliteMeta),
}

/// Runs the same call on whichever backend the lake has.
macro_rules! meta {
    ($self:expr, $m:ident => $call:expr) => {
        match &$self.inner.meta {
            Metadata::Postgres($m) => $call,
            Metadata::Sqlite($m) => $call,
        }
    };
}

#[derive(Debug)]
struct Inner {
    meta: Metadata,
    blobs: BlobStore,
    options: LakeOptions,
    skipped_missing_blobs: AtomicU64,
}

/// A micromegas data lake: metadata database plus object store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Lake {
    inner: Arc<Inner>,
}

/// Wraps a driver error with what was being done.
pub(crate) fn db_err(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> Error {
    let context = context.into();
    move |source| Error::Database { context, source }
}

/// The error of reading a column of a metadata row. The message is only built on failure:
/// getters run for every column of every row (a block listing reads millions of them).
pub(crate) fn column_err(column: &str) -> impl FnOnce(sqlx::Error) -> Error + '_ {
    move |source| Error::Database {
        context: format!("reading {column}"),
        source,
    }
}

/// The URL with its password removed, for messages.
pub(crate) fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparsable URL>".into(),
    }
}

impl Lake {
    /// Opens, read-only, the lake of `MICROMEGAS_SQL_CONNECTION_STRING` and
    /// `MICROMEGAS_OBJECT_STORE_URI`, or, when neither is set, the embedded lake in `./lake`
    /// (an error saying how to point at a lake when there is none).
    pub async fn from_env() -> Result<Self> {
        Self::from_env_with(LakeOptions::default()).await
    }

    /// [`from_env`](Self::from_env) with explicit options.
    pub async fn from_env_with(options: LakeOptions) -> Result<Self> {
        let db = std::env::var(SQL_CONNECTION_STRING_VAR)
            .ok()
            .filter(|s| !s.is_empty());
        let store = std::env::var(OBJECT_STORE_URI_VAR)
            .ok()
            .filter(|s| !s.is_empty());
        match (db, store) {
            (Some(db), Some(store)) => Self::open_with(&db, &store, options).await,
            (None, None) => Self::embedded_with(DEFAULT_EMBEDDED_DIR, options).await,
            (Some(_), None) => Err(Error::Config(format!(
                "{SQL_CONNECTION_STRING_VAR} is set but {OBJECT_STORE_URI_VAR} is not: set both, or neither for the embedded lake"
            ))),
            (None, Some(_)) => Err(Error::Config(format!(
                "{OBJECT_STORE_URI_VAR} is set but {SQL_CONNECTION_STRING_VAR} is not: set both, or neither for the embedded lake"
            ))),
        }
    }

    /// Opens, read-only, a lake from its metadata database URL (`postgres://…` or `sqlite:…`)
    /// and its object store URL.
    pub async fn open(db_url: &str, store_url: &str) -> Result<Self> {
        Self::open_with(db_url, store_url, LakeOptions::default()).await
    }

    /// [`open`](Self::open) with explicit options.
    pub async fn open_with(db_url: &str, store_url: &str, options: LakeOptions) -> Result<Self> {
        let blobs = BlobStore::from_url(store_url)?;
        let meta = if db_url.starts_with("postgres://") || db_url.starts_with("postgresql://") {
            Metadata::Postgres(PgMeta::connect(db_url, &options).await?)
        } else if db_url.starts_with("sqlite:") {
            Metadata::Sqlite(SqliteMeta::connect(db_url, &options).await?)
        } else {
            return Err(Error::Config(format!(
                "unsupported database URL {}: use postgres://… or sqlite:…",
                redact(db_url)
            )));
        };
        Ok(Self::from_parts(meta, blobs, options))
    }

    /// Opens, read-only, the embedded lake in a folder: a SQLite database (`telemetry.db`) and
    /// the blobs under `blobs/`.
    pub async fn embedded(dir: impl AsRef<Path>) -> Result<Self> {
        Self::embedded_with(dir, LakeOptions::default()).await
    }

    /// Opens the embedded lake in a folder for recording, creating it if needed.
    pub async fn create_embedded(dir: impl AsRef<Path>) -> Result<Self> {
        Self::embedded_with(dir, LakeOptions::writable()).await
    }

    /// [`embedded`](Self::embedded) with explicit options: the lake is created if missing
    /// only when they are [`writable`](LakeOptions::writable).
    pub async fn embedded_with(dir: impl AsRef<Path>, options: LakeOptions) -> Result<Self> {
        let dir = dir.as_ref();
        if options.writable {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::Config(format!(
                    "cannot create the lake folder {}: {e}",
                    dir.display()
                ))
            })?;
        } else if !dir.join(EMBEDDED_DB_FILE).is_file() {
            return Err(Error::NoLake(format!(
                "in {} (no {EMBEDDED_DB_FILE})",
                dir.display()
            )));
        }
        let dir: PathBuf = dir.canonicalize().map_err(|e| {
            Error::Config(format!(
                "cannot resolve the lake folder {}: {e}",
                dir.display()
            ))
        })?;
        let db = format!("sqlite://{}", dir.join(EMBEDDED_DB_FILE).display());
        let store = url::Url::from_directory_path(&dir)
            .map_err(|_| Error::Config(format!("{} is not an absolute folder", dir.display())))?;
        Self::open_with(&db, store.as_str(), options).await
    }

    fn from_parts(meta: Metadata, blobs: BlobStore, options: LakeOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                meta,
                blobs,
                options,
                skipped_missing_blobs: AtomicU64::new(0),
            }),
        }
    }

    /// The same lake for use on another tokio runtime: the PostgreSQL pool is rebuilt (its
    /// connections belong to the runtime that opened them); SQLite and the object store are
    /// shared.
    pub fn rebind(&self) -> Self {
        let meta = match &self.inner.meta {
            Metadata::Postgres(m) => Metadata::Postgres(m.rebind()),
            Metadata::Sqlite(m) => Metadata::Sqlite(m.clone()),
        };
        Self::from_parts(meta, self.inner.blobs.clone(), self.inner.options.clone())
    }

    /// The object store the lake reads its blobs from, rooted at the lake's root (keys are
    /// `blobs/{process_id}/{stream_id}/{block_id}`).
    pub fn object_store(&self) -> Arc<dyn object_store::ObjectStore> {
        self.inner.blobs.store().clone()
    }

    /// The same lake (the same metadata connections and location) reading and writing its blobs
    /// through `store`, rooted like [`object_store`](Self::object_store): a cache or a wrapper in
    /// front of the lake's own store. Plans keep naming the lake by its URLs.
    pub fn with_object_store(&self, store: Arc<dyn object_store::ObjectStore>) -> Self {
        let blobs = BlobStore::with_store(self.inner.blobs.url(), store);
        Self::from_parts(self.inner.meta.clone(), blobs, self.inner.options.clone())
    }

    /// The metadata database URL (without password).
    pub fn database_url(&self) -> &str {
        meta!(self, m => m.url())
    }

    /// The object store URL.
    pub fn store_url(&self) -> &str {
        self.inner.blobs.url()
    }

    /// The detected PostgreSQL schema, for a PostgreSQL lake.
    pub fn postgres_schema(&self) -> Option<&PgSchema> {
        match &self.inner.meta {
            Metadata::Postgres(m) => Some(m.schema()),
            Metadata::Sqlite(_) => None,
        }
    }

    /// The options the lake was opened with.
    pub fn options(&self) -> &LakeOptions {
        &self.inner.options
    }

    /// A process by id; [`Error::UnknownProcess`] if the lake does not have it.
    pub async fn process(&self, process_id: Uuid) -> Result<ProcessRecord> {
        meta!(self, m => m.process(process_id).await)?.ok_or(Error::UnknownProcess { process_id })
    }

    /// The most recently started processes that have thread (`cpu`) streams, newest first.
    pub async fn processes(&self, limit: i64) -> Result<Vec<ProcessSummary>> {
        meta!(self, m => m.processes(limit).await)
    }

    /// The process's `cpu` streams in micromegas-transit format, optionally only these ids.
    pub async fn cpu_streams(
        &self,
        process_id: Uuid,
        only: Option<&[Uuid]>,
    ) -> Result<Vec<StreamRecord>> {
        meta!(self, m => m.cpu_streams(process_id, only).await)
    }

    /// The blocks of these streams of the process whose wall-clock bounds overlap `range`
    /// (inclusive), ordered by stream then time.
    pub async fn blocks(
        &self,
        process_id: Uuid,
        streams: &[Uuid],
        window: impl Into<BlockWindow>,
    ) -> Result<Vec<BlockRecord>> {
        if streams.is_empty() {
            return Ok(Vec::new());
        }
        let window = window.into();
        meta!(self, m => m.blocks(process_id, streams, window).await)
    }

    /// The process a stream belongs to; `None` when the lake has no such stream.
    pub async fn stream_process(&self, stream_id: Uuid) -> Result<Option<Uuid>> {
        let filter = MetadataFilter {
            stream_ids: Some(vec![stream_id]),
            limit: Some(1),
            ..MetadataFilter::default()
        };
        match self.list_streams(&filter).next().await {
            Some(row) => Ok(Some(row?.stream.process_id)),
            None => Ok(None),
        }
    }

    /// How many blocks the process's `cpu` streams hold.
    pub async fn count_cpu_blocks(&self, process_id: Uuid) -> Result<i64> {
        meta!(self, m => m.count_cpu_blocks(process_id).await)
    }

    /// `max(end_ticks)` and `max(end_time)` over all the process's blocks, every stream
    /// included: what estimates the tick frequency when the process did not report it.
    pub async fn latest_timing(&self, process_id: Uuid) -> Result<Option<LatestTiming>> {
        let latest = meta!(self, m => m.latest_timing(process_id).await)?;
        Ok(latest.map(|(end_ticks, end_time)| LatestTiming {
            end_ticks,
            end_time_ns: end_time.timestamp_nanos_opt().unwrap_or(i64::MAX),
        }))
    }

    /// The blob of a block. A missing blob is an error naming the block, or, under
    /// [`MissingBlobPolicy::Skip`], `Ok(None)` and counted.
    pub async fn fetch_blob(&self, block: &BlockRecord) -> Result<Option<Bytes>> {
        let key = blob_key(block.process_id, block.stream_id, block.block_id);
        match self.inner.blobs.get(&key).await? {
            Some(bytes) => Ok(Some(bytes)),
            None if self.inner.options.missing_blobs == MissingBlobPolicy::Skip => {
                self.inner
                    .skipped_missing_blobs
                    .fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
            None => Err(Error::MissingBlob {
                process_id: block.process_id,
                stream_id: block.stream_id,
                block_id: block.block_id,
                path: key,
            }),
        }
    }

    /// Blocks skipped so far because their blob was missing.
    pub fn skipped_missing_blobs(&self) -> u64 {
        self.inner.skipped_missing_blobs.load(Ordering::Relaxed)
    }

    /// The processes that have blocks, with the times of their latest block, newest start
    /// first; id and time conditions are applied in the database. Rows are read as the
    /// database sends them.
    pub fn list_processes(&self, filter: &MetadataFilter) -> Listing<'_, ProcessListing> {
        if filter.matches_nothing() {
            return futures::stream::empty().boxed();
        }
        meta!(self, m => m.list_processes(filter))
    }

    /// Every stream (all kinds, not only thread streams) matching the filter.
    pub fn list_streams(&self, filter: &MetadataFilter) -> Listing<'_, StreamListing> {
        if filter.matches_nothing() {
            return futures::stream::empty().boxed();
        }
        meta!(self, m => m.list_streams(filter))
    }

    /// Every block (all kinds of streams) matching the filter, by begin time, with the rows of
    /// its stream and process that `joins` asks for. A block whose stream or process row is
    /// missing is listed too, without that row.
    pub fn list_blocks(
        &self,
        filter: &MetadataFilter,
        joins: BlockJoins,
    ) -> Listing<'_, BlockListing> {
        if filter.matches_nothing() {
            return futures::stream::empty().boxed();
        }
        meta!(self, m => m.list_blocks(filter, joins))
    }

    /// Inserts a process row (kept as is if it exists). Properties whose name starts with
    /// `micromegas.` are dropped, as micromegas's ingestion does.
    pub async fn insert_process(&self, process: &ProcessRecord) -> Result<()> {
        self.check_writable()?;
        let mut process = process.clone();
        process
            .properties
            .retain(|(k, _)| !k.starts_with("micromegas."));
        meta!(self, m => m.insert_process(&process).await)
    }

    /// Inserts a stream row (kept as is if it exists).
    pub async fn insert_stream(&self, stream: &StreamRecord) -> Result<()> {
        self.check_writable()?;
        meta!(self, m => m.insert_stream(stream).await)
    }

    /// Stores a block: its blob first, then its row, so that a reader never sees a row without
    /// its blob. Both writes keep what exists.
    pub async fn insert_block(&self, block: &BlockRecord, payload: Bytes) -> Result<()> {
        self.check_writable()?;
        let key = blob_key(block.process_id, block.stream_id, block.block_id);
        let mut block = block.clone();
        block.payload_size = payload.len() as i64;
        self.inner.blobs.put_new(&key, payload).await?;
        meta!(self, m => m.insert_block(&block).await)
    }

    fn check_writable(&self) -> Result<()> {
        if self.inner.options.writable {
            Ok(())
        } else {
            Err(Error::ReadOnly(format!(
                "{} ({})",
                self.database_url(),
                self.store_url()
            )))
        }
    }
}
