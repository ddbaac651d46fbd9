//! Pictures of a process's async spans: a Perfetto trace ([`perfetto`], also the table function
//! `perfetto_trace_chunks(process_id, span_types, begin, end)`) and an SVG/PNG timeline
//! ([`svg`]). Built with the `timeline` feature (enabled by `cli`).
//!
//! Both read `async_spans(process_id [, begin, end])`: every span overlapping the range, with
//! its real begin and end. A span the range cut or that never finished is drawn up to the end
//! of the range (or of the last span seen) and marked: `finished` = `false` (never finished) or
//! `unknown` (open at the end of the events read).

pub mod perfetto;
pub mod proto;
pub mod svg;

use crate::time_bounds::TimeBounds;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Int64Type, TimeUnit, TimestampNanosecondType, UInt32Type,
};
use datafusion::common::{Result, exec_err};
use datafusion::prelude::SessionContext;

pub use crate::thread_spans::SpanTypes;

/// The `async_spans` columns the pictures read, in this order.
pub const SPAN_COLUMNS: [&str; 8] = [
    "span_id",
    "name",
    "depth",
    "begin",
    "end",
    "begin_stream_id",
    "end_stream_id",
    "finished",
];

/// Whether a span is a thread's scope or an async span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SpanKind {
    /// An async span (`async_spans`).
    #[default]
    Async,
    /// A thread scope (`thread_spans`).
    Thread,
}

/// The `thread_spans` columns the pictures read, in this order.
pub const THREAD_SPAN_COLUMNS: [&str; 7] = [
    "id",
    "name",
    "depth",
    "begin",
    "end",
    "stream_id",
    "finished",
];

/// One span as the pictures draw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// Thread scope or async span.
    pub kind: SpanKind,
    /// Span id.
    pub span_id: i64,
    /// Span name.
    pub name: String,
    /// Nesting depth.
    pub depth: u32,
    /// Begin time (ns since the epoch); `None` when it lies before the range's margin.
    pub begin: Option<i64>,
    /// End time; `None` when the span did not end within what was read.
    pub end: Option<i64>,
    /// The thread stream it is drawn on: where it began, else where it ended.
    pub stream_id: String,
    /// `Some(true)` finished, `Some(false)` never finished, `None` cut by the range.
    pub finished: Option<bool>,
}

impl Span {
    /// `"true"`, `"false"` or `"unknown"`.
    pub fn finished_text(&self) -> &'static str {
        match self.finished {
            Some(true) => "true",
            Some(false) => "false",
            None => "unknown",
        }
    }

    /// Whether the span is drawn with an end it does not have (or a begin it does not have).
    pub fn is_partial(&self) -> bool {
        self.finished != Some(true) || self.begin.is_none() || self.end.is_none()
    }
}

/// A thread stream of the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thread {
    /// The stream id.
    pub stream_id: String,
    /// The thread name (the stream id when the stream has none).
    pub name: String,
    /// The thread id as recorded, if any.
    pub thread_id: Option<String>,
}

/// The `SELECT` list reading [`SPAN_COLUMNS`] from `async_spans`.
pub fn span_select_list() -> String {
    SPAN_COLUMNS
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a dyn Array> {
    match batch.column_by_name(name) {
        Some(c) => Ok(c.as_ref()),
        None => exec_err!("timeline: the spans have no column '{name}'"),
    }
}

fn strings(batch: &RecordBatch, name: &str) -> Result<Vec<Option<String>>> {
    let plain = cast(column(batch, name)?, &DataType::Utf8)?;
    Ok(plain
        .as_string::<i32>()
        .iter()
        .map(|s| s.map(str::to_owned))
        .collect())
}

/// The spans of a batch with [`SPAN_COLUMNS`] (other columns are ignored).
pub fn spans_of_batch(batch: &RecordBatch) -> Result<Vec<Span>> {
    spans_of(batch, SpanKind::Async)
}

/// The spans of a batch of [`THREAD_SPAN_COLUMNS`] from `thread_spans`, without the root rows
/// (the thread itself).
pub fn thread_spans_of_batch(batch: &RecordBatch) -> Result<Vec<Span>> {
    let mut spans = spans_of(batch, SpanKind::Thread)?;
    spans.retain(|s| s.depth > 0);
    Ok(spans)
}

fn spans_of(batch: &RecordBatch, kind: SpanKind) -> Result<Vec<Span>> {
    let (id, begin_stream, end_stream) = match kind {
        SpanKind::Async => ("span_id", "begin_stream_id", "end_stream_id"),
        SpanKind::Thread => ("id", "stream_id", "stream_id"),
    };
    let ts = DataType::Timestamp(TimeUnit::Nanosecond, None);
    let span_id = cast(column(batch, id)?, &DataType::Int64)?;
    let depth = cast(column(batch, "depth")?, &DataType::UInt32)?;
    let begin = cast(column(batch, "begin")?, &ts)?;
    let end = cast(column(batch, "end")?, &ts)?;
    let finished = cast(column(batch, "finished")?, &DataType::Boolean)?;
    let (span_id, depth) = (
        span_id.as_primitive::<Int64Type>(),
        depth.as_primitive::<UInt32Type>(),
    );
    let (begin, end) = (
        begin.as_primitive::<TimestampNanosecondType>(),
        end.as_primitive::<TimestampNanosecondType>(),
    );
    let finished = finished.as_boolean();
    let names = strings(batch, "name")?;
    let begin_streams = strings(batch, begin_stream)?;
    let end_streams = strings(batch, end_stream)?;
    let get = |a: &dyn Array, i: usize| !a.is_null(i);
    Ok((0..batch.num_rows())
        .map(|i| Span {
            kind,
            span_id: if get(span_id, i) { span_id.value(i) } else { 0 },
            name: names[i].clone().unwrap_or_default(),
            depth: if get(depth, i) { depth.value(i) } else { 0 },
            begin: get(begin, i).then(|| begin.value(i)),
            end: get(end, i).then(|| end.value(i)),
            stream_id: begin_streams[i]
                .clone()
                .or_else(|| end_streams[i].clone())
                .unwrap_or_default(),
            finished: get(finished, i).then(|| finished.value(i)),
        })
        .collect())
}

/// The time range as SQL arguments: `''` or `, TIMESTAMP 'begin', TIMESTAMP 'end'`.
fn range_args(begin: Option<&str>, end: Option<&str>) -> Result<String> {
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    Ok(match (begin, end) {
        (None, None) => String::new(),
        (Some(b), Some(e)) => format!(", {}, {}", quote(b), quote(e)),
        (Some(b), None) => format!(", {}, NULL", quote(b)),
        (None, Some(e)) => format!(", NULL, {}", quote(e)),
    })
}

/// The spans and threads of a process read from a session where the crate's functions are
/// registered ([`register`](crate::register)); `begin`/`end` are RFC 3339 times.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Spans overlapping the range: the thread spans, then the async spans, each in the order
    /// their table returned them.
    pub spans: Vec<Span>,
    /// The thread streams of the process.
    pub threads: Vec<Thread>,
    /// The range asked for (ns since the epoch), `None` for an open side.
    pub range: TimeBounds,
}

impl Timeline {
    /// Reads the thread and async spans of `process_id` overlapping `[begin, end]`.
    pub async fn load(
        ctx: &SessionContext,
        process_id: &str,
        begin: Option<&str>,
        end: Option<&str>,
    ) -> Result<Self> {
        Self::load_types(ctx, process_id, SpanTypes::Both, begin, end).await
    }

    /// Reads the spans of `types` of `process_id` overlapping `[begin, end]` (thread spans
    /// first, their root rows left out).
    pub async fn load_types(
        ctx: &SessionContext,
        process_id: &str,
        types: SpanTypes,
        begin: Option<&str>,
        end: Option<&str>,
    ) -> Result<Self> {
        let pid = process_id.replace('\'', "''");
        let range = range_args(begin, end)?;
        let parse = |s: Option<&str>| -> Result<Option<i64>> {
            match s {
                None => Ok(None),
                Some(s) => match crate::time_bounds::parse_time(s) {
                    Some(ns) => Ok(Some(ns)),
                    None => exec_err!("timeline: '{s}' is not an RFC 3339 time"),
                },
            }
        };
        let range_ns = TimeBounds::new(parse(begin)?, parse(end)?);
        let mut spans = Vec::new();
        if types.thread() {
            let batches = ctx
                .sql(&format!(
                    "SELECT {} FROM thread_spans('{pid}'{range}) WHERE depth > 0",
                    THREAD_SPAN_COLUMNS.map(|c| format!("\"{c}\"")).join(", ")
                ))
                .await?
                .collect()
                .await?;
            for b in &batches {
                spans.extend(thread_spans_of_batch(b)?);
            }
        }
        if types.async_() {
            let batches = ctx
                .sql(&format!(
                    "SELECT {} FROM async_spans('{pid}'{range})",
                    span_select_list()
                ))
                .await?
                .collect()
                .await?;
            for b in &batches {
                spans.extend(spans_of_batch(b)?);
            }
        }
        let batches = ctx
            .sql(&format!(
                "SELECT stream_id, thread_name, thread_id FROM thread_streams('{pid}')"
            ))
            .await?
            .collect()
            .await?;
        let mut threads = Vec::new();
        for b in &batches {
            let (ids, names, tids) = (
                strings(b, "stream_id")?,
                strings(b, "thread_name")?,
                strings(b, "thread_id")?,
            );
            for ((id, name), tid) in ids.into_iter().zip(names).zip(tids) {
                let id = id.unwrap_or_default();
                threads.push(Thread {
                    name: name.unwrap_or_else(|| id.clone()),
                    stream_id: id,
                    thread_id: tid,
                });
            }
        }
        Ok(Self {
            spans,
            threads,
            range: range_ns,
        })
    }
}

/// A stable 64-bit hash of a string (xxh32 of two seeds), for track ids and colours.
pub(crate) fn stable_hash(text: &str) -> u64 {
    let h = |seed| u64::from(xxhash_rust::xxh32::xxh32(text.as_bytes(), seed));
    (h(0) << 32) | h(0x9e37_79b9)
}
