//! Bytes to async events: everything needed to turn one stored block into Arrow rows.
//!
//! Pure and synchronous: no I/O, no DataFusion planning. The path of a block is
//! [`BlockPayload::from_cbor`] (the stored CBOR blob) → [`DecompressedBlock`] (two LZ4 frames) →
//! [`AsyncEventDecoder::decode`] (transit records, read at the offsets of the stream's
//! [`StreamLayout`]) → [`EventBatchBuilder`] (Arrow columns, projected and filtered).
//! The thread (scope) span events of the same blocks go to a caller's sink instead
//! ([`AsyncEventDecoder::decode_thread_blob`]), for the pairing of `thread_spans`.

mod builder;
mod decoder;
mod dependencies;
mod error;
mod hash;
mod layout;
mod lz4;
mod metadata;
mod payload;
mod records;
mod row_filter;
mod schema;
mod thread_events;
mod ticks;

pub use builder::EventBatchBuilder;
pub use decoder::{
    AsyncEventDecoder, BlockIds, BlockSource, DecodeSummary, DecodedPart, DecompressedBlock, Resume,
};
pub use error::{FormatError, FormatResult};
pub use hash::scope_hash;
pub use layout::{EventType, StreamLayout};
pub use lz4::{DEFAULT_INFLATE_LIMIT, decompress_frame};
pub use metadata::{Member, UserDefinedType, encode_udt_list, parse_udt_list};
pub use payload::{BlockPayload, PayloadView, compress_frame};
pub use row_filter::RowFilter;
pub use schema::{Column, ColumnSet, async_events_schema, column_type, projected_schema};
pub use thread_events::{ThreadDecodeSummary, ThreadEvent};
pub use ticks::{LatestTiming, TickConverter};
