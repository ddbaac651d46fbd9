//! Spans: one row per async span, its begin and end events paired inside the scan.
//!
//! [`AsyncSpansTable`] is the `async_spans(pid [, begin, end])` table; [`AsyncSpansExec`] pairs
//! the events of an `async_events` scan, its thread streams merged batch by batch in time order,
//! by `span_id` as they stream by: memory holds the spans open at a time, not the process.
//!
//! # Time ranges
//!
//! `async_spans(pid, begin, end)` returns every span that overlaps `[begin, end]` (inclusive):
//! a span that began before `begin` and ended inside, began inside and ended after `end`, or
//! covers the whole range, comes with its real begin and end times. Partners outside the range
//! are found by reading events up to [`ScanOptions::span_margin`](super::ScanOptions::span_margin)
//! before and after it (30 s by default). Beyond the margin the scan does not look, and says so:
//! - a span whose begin lies before `begin - margin` has `begin`, `begin_stream_id`,
//!   `duration` and `migrated` NULL (its name, depth, ids come from its end event);
//! - a span still open at `end + margin` has `end` NULL and `finished` NULL (unknown), unless
//!   the scan read to the end of the recording: then `finished` is false (it never finished).
//!
//! Without bounds the whole recording is read: every `begin` is known and `finished` is false
//! exactly for the spans that never ended. `WHERE begin >= x AND begin < y` and filters on
//! `end` narrow the events read the same way (with the margin on the side that needs it) and
//! are then applied by DataFusion as written.

mod pairing;
mod table;

pub use pairing::AsyncSpansExec;
#[cfg_attr(not(feature = "codec"), allow(unused_imports))]
pub(crate) use pairing::PairingRange;
pub use table::AsyncSpansTable;

use crate::format::{Column, async_events_schema, column_type};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use std::sync::{Arc, LazyLock};

/// A column of `async_spans`, in schema order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SpanColumn {
    /// Span id.
    SpanId,
    /// Parent span id (0 for a root).
    ParentSpanId,
    /// Nesting depth when the future was created.
    Depth,
    /// Scope hash.
    Hash,
    /// Span name.
    Name,
    /// Source file.
    Filename,
    /// Target (module path).
    Target,
    /// Source line.
    Line,
    /// Begin time; NULL when it lies before the range's margin.
    Begin,
    /// End time; NULL when the span did not end (or not within the range's margin).
    End,
    /// `end - begin`, a `Duration(ns)`; NULL when either is unknown.
    Duration,
    /// Thread stream of the begin event.
    BeginStreamId,
    /// Thread stream of the end event.
    EndStreamId,
    /// Whether the span ended on another thread than it began on.
    Migrated,
    /// Whether the span ended: false when it never did, NULL when the range cut it.
    Finished,
    /// Properties of the end event (tagged ends); NULL when there is no end.
    Properties,
}

impl SpanColumn {
    /// All columns in schema order.
    pub const ALL: [SpanColumn; 16] = [
        SpanColumn::SpanId,
        SpanColumn::ParentSpanId,
        SpanColumn::Depth,
        SpanColumn::Hash,
        SpanColumn::Name,
        SpanColumn::Filename,
        SpanColumn::Target,
        SpanColumn::Line,
        SpanColumn::Begin,
        SpanColumn::End,
        SpanColumn::Duration,
        SpanColumn::BeginStreamId,
        SpanColumn::EndStreamId,
        SpanColumn::Migrated,
        SpanColumn::Finished,
        SpanColumn::Properties,
    ];

    /// Column name.
    pub fn name(self) -> &'static str {
        match self {
            SpanColumn::SpanId => "span_id",
            SpanColumn::ParentSpanId => "parent_span_id",
            SpanColumn::Depth => "depth",
            SpanColumn::Hash => "hash",
            SpanColumn::Name => "name",
            SpanColumn::Filename => "filename",
            SpanColumn::Target => "target",
            SpanColumn::Line => "line",
            SpanColumn::Begin => "begin",
            SpanColumn::End => "end",
            SpanColumn::Duration => "duration",
            SpanColumn::BeginStreamId => "begin_stream_id",
            SpanColumn::EndStreamId => "end_stream_id",
            SpanColumn::Migrated => "migrated",
            SpanColumn::Finished => "finished",
            SpanColumn::Properties => "properties",
        }
    }

    /// The `async_events` column each span column is read from (`None`: derived from `time`).
    fn event_column(self) -> Option<Column> {
        Some(match self {
            SpanColumn::SpanId => Column::SpanId,
            SpanColumn::ParentSpanId => Column::ParentSpanId,
            SpanColumn::Depth => Column::Depth,
            SpanColumn::Hash => Column::Hash,
            SpanColumn::Name => Column::Name,
            SpanColumn::Filename => Column::Filename,
            SpanColumn::Target => Column::Target,
            SpanColumn::Line => Column::Line,
            SpanColumn::BeginStreamId | SpanColumn::EndStreamId | SpanColumn::Migrated => {
                Column::StreamId
            }
            SpanColumn::Properties => Column::Properties,
            SpanColumn::Begin | SpanColumn::End | SpanColumn::Duration | SpanColumn::Finished => {
                return None;
            }
        })
    }

    /// Columns whose value is the same on a span's begin and end events, so that a filter on
    /// them selects whole spans when applied to events.
    fn same_on_both_events(self) -> bool {
        matches!(
            self,
            SpanColumn::SpanId
                | SpanColumn::ParentSpanId
                | SpanColumn::Depth
                | SpanColumn::Name
                | SpanColumn::Target
        )
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let events = async_events_schema();
    let event = |c: Column| column_type(c);
    let time = DataType::Timestamp(TimeUnit::Nanosecond, Some("+00:00".into()));
    let fields: Vec<Field> = SpanColumn::ALL
        .iter()
        .map(|&c| match c {
            SpanColumn::Begin | SpanColumn::End => Field::new(c.name(), time.clone(), true),
            SpanColumn::Duration => {
                Field::new(c.name(), DataType::Duration(TimeUnit::Nanosecond), true)
            }
            SpanColumn::BeginStreamId | SpanColumn::EndStreamId => {
                Field::new(c.name(), event(Column::StreamId), true)
            }
            SpanColumn::Migrated | SpanColumn::Finished => {
                Field::new(c.name(), DataType::Boolean, true)
            }
            SpanColumn::Properties => Field::new(c.name(), event(Column::Properties), true),
            other => {
                let source = other.event_column().unwrap_or(Column::SpanId);
                events.field(source as usize).as_ref().clone()
            }
        })
        .collect();
    Arc::new(Schema::new(fields))
});

/// The schema of `async_spans`.
pub fn async_spans_schema() -> SchemaRef {
    SCHEMA.clone()
}
