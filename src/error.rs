//! The crate's error: every variant names the process, stream or block at fault.

use crate::format::FormatError;
use uuid::Uuid;

/// Errors of the lake, the recorder and the DataFusion integration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No process with this id in the lake.
    #[error("process {process_id} is not in the lake")]
    UnknownProcess {
        /// The process id that was asked for.
        process_id: Uuid,
    },
    /// A block's bytes could not be decoded.
    #[error("block {block_id} of stream {stream_id} (process {process_id}): {source}")]
    Block {
        /// Process of the block.
        process_id: Uuid,
        /// Stream of the block.
        stream_id: Uuid,
        /// The block at fault.
        block_id: Uuid,
        /// What is wrong with it.
        source: FormatError,
    },
    /// A stream's transit metadata could not be compiled.
    #[error("stream {stream_id} (process {process_id}): {source}")]
    StreamMetadata {
        /// Process of the stream.
        process_id: Uuid,
        /// The stream at fault.
        stream_id: Uuid,
        /// What is wrong with its metadata.
        source: FormatError,
    },
    /// A thread stream's events are not in time order, although the scan declared it.
    #[error(
        "block {block_id} of stream {stream_id} (process {process_id}) has an event at {first} ns, before the last event ({previous_last} ns) of block {previous_block_id} of the same stream: the stream is not in time order (scan with ScanOptions::declare_time_order = false to read it)"
    )]
    OutOfOrder {
        /// Process of the stream.
        process_id: Uuid,
        /// The stream.
        stream_id: Uuid,
        /// The block with the early event.
        block_id: Uuid,
        /// The block before it.
        previous_block_id: Uuid,
        /// Earliest event time of the block.
        first: i64,
        /// Latest event time of the previous block.
        previous_last: i64,
    },
    /// The process's clock cannot convert ticks to time.
    #[error("process {process_id}: {source}")]
    Clock {
        /// The process at fault.
        process_id: Uuid,
        /// Why.
        source: FormatError,
    },
    /// A block row whose blob is not in the object store.
    #[error(
        "blob of block {block_id} of stream {stream_id} (process {process_id}) is missing from the object store at {path}"
    )]
    MissingBlob {
        /// Process of the block.
        process_id: Uuid,
        /// Stream of the block.
        stream_id: Uuid,
        /// The block whose blob is missing.
        block_id: Uuid,
        /// Key of the blob in the store.
        path: String,
    },
    /// The object store failed.
    #[error("object store: {context}: {source}")]
    ObjectStore {
        /// What was being done (names the object).
        context: String,
        /// The store's error.
        source: object_store::Error,
    },
    /// The metadata database failed.
    #[error("metadata database: {context}: {source}")]
    Database {
        /// What was being done.
        context: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// The metadata database could not be reached.
    #[error("cannot connect to the metadata database {url}: {detail}")]
    Unreachable {
        /// The database URL, without its password.
        url: String,
        /// Why.
        detail: String,
    },
    /// The database holds tables that are not a micromegas telemetry schema this crate reads.
    #[error("unsupported metadata schema: {0}")]
    Schema(String),
    /// A plan names a lake this process has not registered.
    #[error(
        "no lake at {database_url} (metadata) and {store_url} (blobs) in this process: register it (datafusion_async_events::register) before executing or decoding the plan"
    )]
    UnregisteredLake {
        /// The metadata database URL the plan names (without password).
        database_url: String,
        /// The object store URL the plan names.
        store_url: String,
    },
    /// No lake where one was looked for: nothing was created there.
    #[error(
        "no micromegas lake {0}: point MICROMEGAS_SQL_CONNECTION_STRING and MICROMEGAS_OBJECT_STORE_URI (or --db and --store) at one, or record one with `async-events quickstart`"
    )]
    NoLake(String),
    /// A write to a lake opened for reading (see `LakeOptions::writable`).
    #[error(
        "the lake {0} was opened read-only: open it with LakeOptions::writable to record into it"
    )]
    ReadOnly(String),
    /// A configuration value (URL, environment variable) is not usable.
    #[error("configuration: {0}")]
    Config(String),
    /// A metadata row has a value this crate cannot use.
    #[error("bad metadata row: {0}")]
    BadRow(String),
    /// The recorder could not start or write.
    #[error("recorder: {0}")]
    Recorder(String),
    /// A failure of this crate's own machinery (not of the data or the lake).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for datafusion::error::DataFusionError {
    fn from(e: Error) -> Self {
        datafusion::error::DataFusionError::External(Box::new(e))
    }
}
