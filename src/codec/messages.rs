//! The codec's messages, declared with `prost`'s derive (no build script), and their
//! conversion from and to the crate's plan data. Nothing decoded is trusted: ids, indices and
//! bounds are checked, and bad bytes are an error.

use crate::format::{EventType, RowFilter, TickConverter};
use crate::lake::{BlockRecord, LakeLocation};
use crate::provider::{ClockParams, ScanOptions, ScanPredicate};
use crate::time_bounds::TimeBounds;
use chrono::DateTime;
use datafusion::common::{DataFusionError, Result};
use datafusion_proto::protobuf::PhysicalExprNode;
use prost::Message;
use std::collections::BTreeSet;
use std::time::Duration;
use uuid::Uuid;

#[derive(Clone, PartialEq, Message)]
pub(super) struct LocationProto {
    #[prost(string, tag = "1")]
    pub database_url: String,
    #[prost(string, tag = "2")]
    pub store_url: String,
}

#[derive(Clone, PartialEq, Message)]
pub(super) struct OptionsProto {
    #[prost(bool, tag = "1")]
    pub skip_corrupt_blocks: bool,
    #[prost(uint64, tag = "2")]
    pub max_concurrent_fetches: u64,
    #[prost(uint64, tag = "3")]
    pub shared_block_budget: u64,
    #[prost(bool, tag = "4")]
    pub declare_time_order: bool,
    // Tag 5 held a wall-clock pruning margin, gone since blocks are pruned in ticks.
    #[prost(uint64, tag = "6")]
    pub span_margin_ns: u64,
    #[prost(int64, optional, tag = "7")]
    pub query_range_begin: Option<i64>,
    #[prost(int64, optional, tag = "8")]
    pub query_range_end: Option<i64>,
    #[prost(uint64, tag = "9")]
    pub max_inflated_bytes: u64,
    /// 0 (absent): the default.
    #[prost(uint64, tag = "10")]
    pub prefetch_bytes: u64,
}

/// `async_events(process_id [, begin, end])` with its options.
#[derive(Clone, PartialEq, Message)]
pub(super) struct TableProto {
    #[prost(message, optional, tag = "1")]
    pub location: Option<LocationProto>,
    #[prost(bytes = "vec", tag = "2")]
    pub process_id: Vec<u8>,
    #[prost(int64, optional, tag = "3")]
    pub begin: Option<i64>,
    #[prost(int64, optional, tag = "4")]
    pub end: Option<i64>,
    #[prost(message, optional, tag = "5")]
    pub options: Option<OptionsProto>,
    /// `async_spans` rather than `async_events`.
    #[prost(bool, tag = "6")]
    pub spans: bool,
    /// A `thread_spans` table of this flavor (see `ThreadSpansProto::flavor`).
    #[prost(uint32, optional, tag = "7")]
    pub thread_flavor: Option<u32>,
    /// The thread spans of one stream, whose id is in `process_id`.
    #[prost(bool, tag = "8")]
    pub of_stream: bool,
    /// A `process_spans` table: 1 thread spans, 2 async spans, 3 both.
    #[prost(uint32, optional, tag = "9")]
    pub span_types: Option<u32>,
}

#[derive(Clone, PartialEq, Message)]
pub(super) struct StreamProto {
    #[prost(bytes = "vec", tag = "1")]
    pub stream_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub dependencies_metadata: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub objects_metadata: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub(super) struct BlockProto {
    #[prost(bytes = "vec", tag = "1")]
    pub block_id: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub begin_time_ns: i64,
    #[prost(int64, tag = "3")]
    pub begin_ticks: i64,
    #[prost(int64, tag = "4")]
    pub end_time_ns: i64,
    #[prost(int64, tag = "5")]
    pub end_ticks: i64,
    #[prost(int32, tag = "6")]
    pub nb_objects: i32,
    #[prost(int64, tag = "7")]
    pub object_offset: i64,
    #[prost(int64, tag = "8")]
    pub payload_size: i64,
}

#[derive(Clone, PartialEq, Message)]
pub(super) struct PartitionProto {
    #[prost(uint32, tag = "1")]
    pub stream: u32,
    #[prost(uint64, tag = "2")]
    pub listed: u64,
    #[prost(message, repeated, tag = "3")]
    pub blocks: Vec<BlockProto>,
}

/// A set that may be absent (`None`: no restriction), as opposed to empty.
#[derive(Clone, PartialEq, Message)]
pub(super) struct IntSet {
    #[prost(int64, repeated, tag = "1")]
    pub values: Vec<i64>,
}

#[derive(Clone, PartialEq, Message)]
pub(super) struct StringSet {
    #[prost(string, repeated, tag = "1")]
    pub values: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
pub(super) struct BytesSet {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub values: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub(super) struct PredicateProto {
    #[prost(int64, optional, tag = "1")]
    pub time_begin: Option<i64>,
    #[prost(int64, optional, tag = "2")]
    pub time_end: Option<i64>,
    #[prost(message, optional, tag = "3")]
    pub streams: Option<BytesSet>,
    #[prost(bool, tag = "4")]
    pub impossible: bool,
    /// 0: any, 1: begin, 2: end.
    #[prost(uint32, tag = "5")]
    pub event_type: u32,
    #[prost(uint32, optional, tag = "6")]
    pub depth_min: Option<u32>,
    #[prost(uint32, optional, tag = "7")]
    pub depth_max: Option<u32>,
    #[prost(int64, optional, tag = "8")]
    pub row_time_begin: Option<i64>,
    #[prost(int64, optional, tag = "9")]
    pub row_time_end: Option<i64>,
    #[prost(message, optional, tag = "10")]
    pub span_ids: Option<IntSet>,
    #[prost(message, optional, tag = "11")]
    pub parent_span_ids: Option<IntSet>,
    #[prost(message, optional, tag = "12")]
    pub names: Option<StringSet>,
    #[prost(message, optional, tag = "13")]
    pub targets: Option<StringSet>,
}

/// An `AsyncEventsExec`.
#[derive(Clone, PartialEq, Message)]
pub(super) struct ScanProto {
    #[prost(message, optional, tag = "1")]
    pub location: Option<LocationProto>,
    #[prost(bytes = "vec", tag = "2")]
    pub process_id: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub start_ticks: i64,
    #[prost(int64, tag = "4")]
    pub start_ns: i64,
    #[prost(int64, tag = "5")]
    pub frequency: i64,
    #[prost(message, repeated, tag = "6")]
    pub streams: Vec<StreamProto>,
    #[prost(message, repeated, tag = "7")]
    pub partitions: Vec<PartitionProto>,
    /// Indices into the `async_events` schema, in output order.
    #[prost(uint32, repeated, tag = "8")]
    pub projection: Vec<u32>,
    #[prost(message, optional, tag = "9")]
    pub predicate: Option<PredicateProto>,
    #[prost(message, optional, tag = "10")]
    pub options: Option<OptionsProto>,
    #[prost(bool, tag = "11")]
    pub reversed: bool,
    #[prost(uint64, optional, tag = "12")]
    pub fetch: Option<u64>,
    /// The filters pushed from above, bound to the output schema.
    #[prost(message, optional, tag = "13")]
    pub pushed: Option<PhysicalExprNode>,
}

/// An `AsyncSpansExec` (its input, the events scan, is a child of the node).
#[derive(Clone, PartialEq, Message)]
pub(super) struct SpansProto {
    #[prost(int64, optional, tag = "1")]
    pub overlap_begin: Option<i64>,
    #[prost(int64, optional, tag = "2")]
    pub overlap_end: Option<i64>,
    #[prost(bool, tag = "3")]
    pub reads_to_end: bool,
    /// Indices into the `async_spans` schema, in output order.
    #[prost(uint32, repeated, tag = "4")]
    pub columns: Vec<u32>,
    #[prost(uint64, optional, tag = "5")]
    pub fetch: Option<u64>,
    /// Whether the input's time order is required (it is whenever the scan declares it).
    #[prost(bool, tag = "6")]
    pub input_ordered: bool,
}

#[derive(Clone, PartialEq, Message)]
pub(super) struct PropertyProto {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// One thread stream a `ThreadSpansExec` reads: its record and blocks in recording order.
#[derive(Clone, PartialEq, Message)]
pub(super) struct ThreadStreamProto {
    #[prost(message, optional, tag = "1")]
    pub stream: Option<StreamProto>,
    #[prost(string, repeated, tag = "2")]
    pub tags: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    pub properties: Vec<PropertyProto>,
    #[prost(message, repeated, tag = "4")]
    pub blocks: Vec<BlockProto>,
    #[prost(bool, tag = "5")]
    pub reaches_stream_end: bool,
}

#[derive(Clone, PartialEq, Message)]
pub(super) struct ThreadPartitionProto {
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<ThreadStreamProto>,
}

/// A `ThreadSpansExec`.
#[derive(Clone, PartialEq, Message)]
pub(super) struct ThreadSpansProto {
    #[prost(message, optional, tag = "1")]
    pub location: Option<LocationProto>,
    #[prost(bytes = "vec", tag = "2")]
    pub process_id: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub start_ticks: i64,
    #[prost(int64, tag = "4")]
    pub start_ns: i64,
    #[prost(int64, tag = "5")]
    pub frequency: i64,
    #[prost(message, repeated, tag = "6")]
    pub partitions: Vec<ThreadPartitionProto>,
    /// 0: `view_instance('thread_spans', …)`, 1: `thread_spans(…)`, 2: `process_spans`' thread
    /// rows, 3: the same beside async rows.
    #[prost(uint32, tag = "7")]
    pub flavor: u32,
    /// Indices into the flavor's schema, in output order.
    #[prost(uint32, repeated, tag = "8")]
    pub columns: Vec<u32>,
    #[prost(message, optional, tag = "9")]
    pub options: Option<OptionsProto>,
    #[prost(int64, optional, tag = "10")]
    pub overlap_begin: Option<i64>,
    #[prost(int64, optional, tag = "11")]
    pub overlap_end: Option<i64>,
    /// The rows kept, as a scan predicate's row checks (names, targets and depths only).
    #[prost(message, optional, tag = "12")]
    pub rows: Option<PredicateProto>,
}

/// One of the physical nodes of this codec.
#[derive(Clone, PartialEq, Message)]
pub(super) struct NodeProto {
    #[prost(oneof = "Node", tags = "1, 2, 3")]
    pub node: Option<Node>,
}

// One node is decoded per plan node: the size of the enum does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, PartialEq, prost::Oneof)]
pub(super) enum Node {
    #[prost(message, tag = "1")]
    Scan(ScanProto),
    #[prost(message, tag = "2")]
    Spans(SpansProto),
    #[prost(message, tag = "3")]
    ThreadSpans(ThreadSpansProto),
}

pub(super) fn bad(what: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Plan(format!("async_events codec: {what}"))
}

pub(super) fn uuid(bytes: &[u8], what: &str) -> Result<Uuid> {
    Uuid::from_slice(bytes).map_err(|_| bad(format_args!("{what} is not a 16-byte UUID")))
}

/// A process's clock, checked: its [`ClockParams`] and converter.
pub(super) fn clock_from_proto(
    start_ticks: i64,
    start_ns: i64,
    frequency: i64,
) -> Result<(ClockParams, TickConverter)> {
    let params = ClockParams {
        start_ticks,
        start_ns,
        frequency,
    };
    let clock = params
        .converter()
        .map_err(|e| bad(format_args!("clock: {e}")))?;
    Ok((params, clock))
}

pub(super) fn location_to_proto(l: &LakeLocation) -> LocationProto {
    LocationProto {
        database_url: l.database_url.clone(),
        store_url: l.store_url.clone(),
    }
}

pub(super) fn location_from_proto(l: Option<LocationProto>) -> Result<LakeLocation> {
    let l = l.ok_or_else(|| bad("no lake location"))?;
    Ok(LakeLocation {
        database_url: l.database_url,
        store_url: l.store_url,
    })
}

pub(super) fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

pub(super) fn options_to_proto(o: &ScanOptions) -> OptionsProto {
    OptionsProto {
        skip_corrupt_blocks: o.skip_corrupt_blocks,
        max_concurrent_fetches: o.max_concurrent_fetches as u64,
        shared_block_budget: o.shared_block_budget as u64,
        declare_time_order: o.declare_time_order,
        span_margin_ns: nanos(o.span_margin),
        query_range_begin: o.query_range.begin,
        query_range_end: o.query_range.end,
        max_inflated_bytes: o.max_inflated_bytes as u64,
        prefetch_bytes: o.prefetch_bytes as u64,
    }
}

pub(super) fn options_from_proto(o: Option<OptionsProto>) -> Result<ScanOptions> {
    let o = o.ok_or_else(|| bad("no scan options"))?;
    let size = |v: u64, what: &str| usize::try_from(v).map_err(|_| bad(format_args!("{what} {v}")));
    Ok(ScanOptions {
        skip_corrupt_blocks: o.skip_corrupt_blocks,
        max_concurrent_fetches: size(o.max_concurrent_fetches, "max_concurrent_fetches")?,
        shared_block_budget: size(o.shared_block_budget, "shared_block_budget")?,
        declare_time_order: o.declare_time_order,
        span_margin: Duration::from_nanos(o.span_margin_ns),
        query_range: TimeBounds::new(o.query_range_begin, o.query_range_end),
        max_inflated_bytes: size(o.max_inflated_bytes, "max_inflated_bytes")?,
        prefetch_bytes: match o.prefetch_bytes {
            0 => crate::provider::DEFAULT_PREFETCH_BYTES,
            n => size(n, "prefetch_bytes")?,
        },
    })
}

pub(super) fn predicate_to_proto(p: &ScanPredicate) -> PredicateProto {
    let r = &p.row;
    let ints = |v: &Option<Vec<i64>>| v.as_ref().map(|v| IntSet { values: v.clone() });
    let strings = |v: &Option<Vec<String>>| v.as_ref().map(|v| StringSet { values: v.clone() });
    PredicateProto {
        time_begin: p.time.begin,
        time_end: p.time.end,
        streams: p.streams.as_ref().map(|s| BytesSet {
            values: s.iter().map(|id| id.as_bytes().to_vec()).collect(),
        }),
        impossible: p.impossible,
        event_type: match r.event_type {
            None => 0,
            Some(EventType::Begin) => 1,
            Some(EventType::End) => 2,
        },
        depth_min: r.depth.map(|d| d.0),
        depth_max: r.depth.map(|d| d.1),
        row_time_begin: r.time.map(|t| t.0),
        row_time_end: r.time.map(|t| t.1),
        span_ids: ints(&r.span_ids),
        parent_span_ids: ints(&r.parent_span_ids),
        names: strings(&r.names),
        targets: strings(&r.targets),
    }
}

pub(super) fn pair<T>(a: Option<T>, b: Option<T>, what: &str) -> Result<Option<(T, T)>> {
    match (a, b) {
        (Some(a), Some(b)) => Ok(Some((a, b))),
        (None, None) => Ok(None),
        _ => Err(bad(format_args!("{what} has one bound"))),
    }
}

pub(super) fn predicate_from_proto(p: Option<PredicateProto>) -> Result<ScanPredicate> {
    let p = p.ok_or_else(|| bad("no predicate"))?;
    let streams = match p.streams {
        None => None,
        Some(s) => Some(
            s.values
                .iter()
                .map(|b| uuid(b, "a stream id"))
                .collect::<Result<BTreeSet<Uuid>>>()?,
        ),
    };
    let sorted = |s: Option<IntSet>| {
        s.map(|s| {
            let mut v = s.values;
            v.sort_unstable();
            v
        })
    };
    Ok(ScanPredicate {
        time: TimeBounds::new(p.time_begin, p.time_end),
        streams,
        impossible: p.impossible,
        row: RowFilter {
            event_type: match p.event_type {
                0 => None,
                1 => Some(EventType::Begin),
                2 => Some(EventType::End),
                other => return Err(bad(format_args!("event type {other}"))),
            },
            depth: pair(p.depth_min, p.depth_max, "the depth range")?,
            time: pair(p.row_time_begin, p.row_time_end, "the row time range")?,
            span_ids: sorted(p.span_ids),
            parent_span_ids: sorted(p.parent_span_ids),
            names: p.names.map(|s| s.values),
            targets: p.targets.map(|s| s.values),
        },
    })
}

pub(super) fn block_to_proto(b: &BlockRecord) -> BlockProto {
    let ns = |t: DateTime<chrono::Utc>| t.timestamp_nanos_opt().unwrap_or(i64::MAX);
    BlockProto {
        block_id: b.block_id.as_bytes().to_vec(),
        begin_time_ns: ns(b.begin_time),
        begin_ticks: b.begin_ticks,
        end_time_ns: ns(b.end_time),
        end_ticks: b.end_ticks,
        nb_objects: b.nb_objects,
        object_offset: b.object_offset,
        payload_size: b.payload_size,
    }
}

pub(super) fn block_from_proto(
    b: BlockProto,
    stream_id: Uuid,
    process_id: Uuid,
) -> Result<BlockRecord> {
    Ok(BlockRecord {
        block_id: uuid(&b.block_id, "a block id")?,
        stream_id,
        process_id,
        begin_time: DateTime::from_timestamp_nanos(b.begin_time_ns),
        begin_ticks: b.begin_ticks,
        end_time: DateTime::from_timestamp_nanos(b.end_time_ns),
        end_ticks: b.end_ticks,
        nb_objects: b.nb_objects,
        object_offset: b.object_offset,
        payload_size: b.payload_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_options_round_trip_and_old_messages_get_the_default_prefetch() {
        let options = ScanOptions {
            skip_corrupt_blocks: true,
            max_concurrent_fetches: 3,
            shared_block_budget: 1234,
            declare_time_order: false,
            span_margin: Duration::from_millis(1500),
            query_range: TimeBounds::new(Some(10), Some(20)),
            max_inflated_bytes: 99,
            prefetch_bytes: 777,
        };
        let back = options_from_proto(Some(options_to_proto(&options))).unwrap();
        assert_eq!(format!("{back:?}"), format!("{options:?}"));
        // A message from before the field: the default, not a budget of nothing.
        let mut old = options_to_proto(&options);
        old.prefetch_bytes = 0;
        let back = options_from_proto(Some(old)).unwrap();
        assert_eq!(back.prefetch_bytes, crate::provider::DEFAULT_PREFETCH_BYTES);
    }
}
