//! [`SpanColumn`] and the schema of `async_spans`.

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
    pub(crate) fn event_column(self) -> Option<Column> {
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
    pub(crate) fn same_on_both_events(self) -> bool {
        matches!(
            self,
            SpanColumn::SpanId
                | SpanColumn::ParentSpanId
                | SpanColumn::Depth
                | SpanColumn::Name
                | SpanColumn::Target
        )
    }

    pub(crate) fn from_name(name: &str) -> Option<Self> {
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
