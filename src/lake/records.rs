//! Rows of the telemetry tables, as this crate reads and writes them.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A `processes` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRecord {
    /// Process id (chosen by the producer).
    pub process_id: Uuid,
    /// Path of the executable.
    pub exe: String,
    /// User name.
    pub username: String,
    /// User's real name.
    pub realname: String,
    /// Host name.
    pub computer: String,
    /// Operating system.
    pub distro: String,
    /// CPU brand string.
    pub cpu_brand: String,
    /// Ticks per second; 0 when the producer could not tell (then estimated).
    pub tsc_frequency: i64,
    /// Wall clock at process start.
    pub start_time: DateTime<Utc>,
    /// Tick counter at process start.
    pub start_ticks: i64,
    /// The process that started this one, if it was instrumented.
    pub parent_process_id: Option<Uuid>,
    /// Process properties.
    pub properties: Vec<(String, String)>,
}

/// A `streams` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRecord {
    /// Stream id; one thread stream per OS thread.
    pub stream_id: Uuid,
    /// Owning process.
    pub process_id: Uuid,
    /// CBOR list of the dependency record types.
    pub dependencies_metadata: Vec<u8>,
    /// CBOR list of the object (event) record types.
    pub objects_metadata: Vec<u8>,
    /// `cpu` for thread streams, `log`, `metrics`, `image`.
    pub tags: Vec<String>,
    /// `thread-id`, `thread-name` for thread streams.
    pub properties: Vec<(String, String)>,
}

impl StreamRecord {
    /// The value of a stream property.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A `blocks` row: where and when a block is, not its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRecord {
    /// Block id.
    pub block_id: Uuid,
    /// Stream of the block.
    pub stream_id: Uuid,
    /// Process of the block.
    pub process_id: Uuid,
    /// Wall clock when the block was opened.
    pub begin_time: DateTime<Utc>,
    /// Ticks when the block was opened, relative to the process's `start_ticks`.
    pub begin_ticks: i64,
    /// Wall clock when the block was closed.
    pub end_time: DateTime<Utc>,
    /// Ticks when the block was closed, relative to the process's `start_ticks`.
    pub end_ticks: i64,
    /// Events in the block.
    pub nb_objects: i32,
    /// Index of the block's first event in its stream.
    pub object_offset: i64,
    /// Bytes of the stored blob.
    pub payload_size: i64,
}

/// An inclusive wall-clock range; an absent bound is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeRange {
    /// Earliest time, inclusive.
    pub begin: Option<DateTime<Utc>>,
    /// Latest time, inclusive.
    pub end: Option<DateTime<Utc>>,
}

impl TimeRange {
    /// Every time.
    pub fn all() -> Self {
        Self::default()
    }

    /// `[begin, end]`.
    pub fn between(begin: DateTime<Utc>, end: DateTime<Utc>) -> Self {
        Self {
            begin: Some(begin),
            end: Some(end),
        }
    }

    /// Whether the block's wall-clock bounds overlap the range (bounds inclusive).
    pub fn overlaps(&self, begin: DateTime<Utc>, end: DateTime<Utc>) -> bool {
        self.end.is_none_or(|e| begin <= e) && self.begin.is_none_or(|b| end >= b)
    }
}

/// Which blocks a listing returns: those whose bounds meet a window, on the wall clock
/// (`begin_time`/`end_time`) or on the process's tick counter (`begin_ticks`/`end_ticks`,
/// relative to the process start), both inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockWindow {
    /// Wall-clock bounds.
    Time(TimeRange),
    /// Tick bounds, relative to the process start; an absent bound is open.
    Ticks {
        /// Earliest tick, inclusive.
        begin: Option<i64>,
        /// Latest tick, inclusive.
        end: Option<i64>,
    },
}

impl From<TimeRange> for BlockWindow {
    fn from(range: TimeRange) -> Self {
        Self::Time(range)
    }
}

impl BlockWindow {
    /// The columns compared and the bound values, as SQL parameters: `(column, value)` for the
    /// upper bound (`begin_* <= value`) then the lower one (`end_* >= value`).
    pub(crate) fn conditions(&self) -> Vec<(&'static str, &'static str, BoundValue)> {
        let mut out = Vec::new();
        match *self {
            Self::Time(range) => {
                if let Some(end) = range.end {
                    out.push(("begin_time", "<=", BoundValue::Time(end)));
                }
                if let Some(begin) = range.begin {
                    out.push(("end_time", ">=", BoundValue::Time(begin)));
                }
            }
            Self::Ticks { begin, end } => {
                if let Some(end) = end {
                    out.push(("begin_ticks", "<=", BoundValue::Ticks(end)));
                }
                if let Some(begin) = begin {
                    out.push(("end_ticks", ">=", BoundValue::Ticks(begin)));
                }
            }
        }
        out
    }
}

/// A bound of a [`BlockWindow`], bound to a query.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BoundValue {
    Time(DateTime<Utc>),
    Ticks(i64),
}

/// The end of a process's most recent block, over all its streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatestTiming {
    /// `max(end_ticks)`.
    pub end_ticks: i64,
    /// `max(end_time)`, ns since the epoch.
    pub end_time_ns: i64,
}

/// One process of the lake with the size of its thread telemetry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSummary {
    /// The process row.
    pub process: ProcessRecord,
    /// Its `cpu` streams.
    pub cpu_streams: i64,
    /// Blocks of its `cpu` streams.
    pub cpu_blocks: i64,
    /// End of its latest `cpu` block, if any.
    pub last_block_end: Option<DateTime<Utc>>,
}

/// The key of a block's blob in the object store: `blobs/{process_id}/{stream_id}/{block_id}`.
pub fn blob_key(process_id: Uuid, stream_id: Uuid, block_id: Uuid) -> String {
    format!("blobs/{process_id}/{stream_id}/{block_id}")
}
