//! [`AsyncEventsCodec`] (feature `codec`): `async_events` scans, `async_spans` pairings and both
//! tables as bytes, for engines that ship plans to other processes (Ballista,
//! datafusion-distributed).
//!
//! The scan is plain data (see [`super::handles`]), so the messages hold only what a plan says:
//! the lake's URLs (no credentials), the clock, the streams' transit metadata, each partition's
//! blocks, the projection, the filters and the read order. The process that decodes a plan
//! executes it on the lake it registered under the same URLs. The messages are declared here
//! with `prost`'s derive (no build script); nothing decoded is trusted: ids, indices and the
//! clock are checked, and bad bytes are an error.

use super::ScanOptions;
use super::exec::AsyncEventsExec;
use super::handles::{LakeLocation, LakeRegistry};
use super::plan::{ClockParams, Partitions, PlannedPartition, PlannedScan, PlannedStream};
use super::plan::{ScanProjection, ScanState};
use super::predicate::ScanPredicate;
use super::spans::{AsyncSpansExec, AsyncSpansTable, PairingRange, SpanColumn};
use super::table::AsyncEventsTable;
use crate::format::{EventType, RowFilter, async_events_schema};
use crate::lake::BlockRecord;
use chrono::DateTime;
use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, Result, TableReference, exec_err, internal_err};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Extension;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::from_proto::parse_physical_expr;
use datafusion_proto::physical_plan::to_proto::serialize_physical_expr_with_converter;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use datafusion_proto::protobuf::PhysicalExprNode;
use prost::Message;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Encodes and decodes [`AsyncEventsExec`] and [`AsyncSpansExec`] (physical plans) and
/// [`AsyncEventsTable`] and [`AsyncSpansTable`] (logical plans). Other nodes are not its
/// business: an engine with codecs of its own wraps this one.
#[derive(Debug, Default, Clone, Copy)]
pub struct AsyncEventsCodec;

#[derive(Clone, PartialEq, Message)]
struct LocationProto {
    #[prost(string, tag = "1")]
    database_url: String,
    #[prost(string, tag = "2")]
    store_url: String,
}

#[derive(Clone, PartialEq, Message)]
struct OptionsProto {
    #[prost(bool, tag = "1")]
    skip_corrupt_blocks: bool,
    #[prost(uint64, tag = "2")]
    max_concurrent_fetches: u64,
    #[prost(uint64, tag = "3")]
    shared_block_budget: u64,
    #[prost(bool, tag = "4")]
    declare_time_order: bool,
    #[prost(uint64, tag = "5")]
    time_margin_ns: u64,
    #[prost(uint64, tag = "6")]
    span_margin_ns: u64,
    #[prost(int64, optional, tag = "7")]
    query_range_begin: Option<i64>,
    #[prost(int64, optional, tag = "8")]
    query_range_end: Option<i64>,
}

/// `async_events(process_id [, begin, end])` with its options.
#[derive(Clone, PartialEq, Message)]
struct TableProto {
    #[prost(message, optional, tag = "1")]
    location: Option<LocationProto>,
    #[prost(bytes = "vec", tag = "2")]
    process_id: Vec<u8>,
    #[prost(int64, optional, tag = "3")]
    begin: Option<i64>,
    #[prost(int64, optional, tag = "4")]
    end: Option<i64>,
    #[prost(message, optional, tag = "5")]
    options: Option<OptionsProto>,
    /// `async_spans` rather than `async_events`.
    #[prost(bool, tag = "6")]
    spans: bool,
}

#[derive(Clone, PartialEq, Message)]
struct StreamProto {
    #[prost(bytes = "vec", tag = "1")]
    stream_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    dependencies_metadata: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    objects_metadata: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct BlockProto {
    #[prost(bytes = "vec", tag = "1")]
    block_id: Vec<u8>,
    #[prost(int64, tag = "2")]
    begin_time_ns: i64,
    #[prost(int64, tag = "3")]
    begin_ticks: i64,
    #[prost(int64, tag = "4")]
    end_time_ns: i64,
    #[prost(int64, tag = "5")]
    end_ticks: i64,
    #[prost(int32, tag = "6")]
    nb_objects: i32,
    #[prost(int64, tag = "7")]
    object_offset: i64,
    #[prost(int64, tag = "8")]
    payload_size: i64,
}

#[derive(Clone, PartialEq, Message)]
struct PartitionProto {
    #[prost(uint32, tag = "1")]
    stream: u32,
    #[prost(uint64, tag = "2")]
    listed: u64,
    #[prost(message, repeated, tag = "3")]
    blocks: Vec<BlockProto>,
}

/// A set that may be absent (`None`: no restriction), as opposed to empty.
#[derive(Clone, PartialEq, Message)]
struct IntSet {
    #[prost(int64, repeated, tag = "1")]
    values: Vec<i64>,
}

#[derive(Clone, PartialEq, Message)]
struct StringSet {
    #[prost(string, repeated, tag = "1")]
    values: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct BytesSet {
    #[prost(bytes = "vec", repeated, tag = "1")]
    values: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct PredicateProto {
    #[prost(int64, optional, tag = "1")]
    time_begin: Option<i64>,
    #[prost(int64, optional, tag = "2")]
    time_end: Option<i64>,
    #[prost(message, optional, tag = "3")]
    streams: Option<BytesSet>,
    #[prost(bool, tag = "4")]
    impossible: bool,
    /// 0: any, 1: begin, 2: end.
    #[prost(uint32, tag = "5")]
    event_type: u32,
    #[prost(uint32, optional, tag = "6")]
    depth_min: Option<u32>,
    #[prost(uint32, optional, tag = "7")]
    depth_max: Option<u32>,
    #[prost(int64, optional, tag = "8")]
    row_time_begin: Option<i64>,
    #[prost(int64, optional, tag = "9")]
    row_time_end: Option<i64>,
    #[prost(message, optional, tag = "10")]
    span_ids: Option<IntSet>,
    #[prost(message, optional, tag = "11")]
    parent_span_ids: Option<IntSet>,
    #[prost(message, optional, tag = "12")]
    names: Option<StringSet>,
    #[prost(message, optional, tag = "13")]
    targets: Option<StringSet>,
}

/// An `AsyncEventsExec`.
#[derive(Clone, PartialEq, Message)]
struct ScanProto {
    #[prost(message, optional, tag = "1")]
    location: Option<LocationProto>,
    #[prost(bytes = "vec", tag = "2")]
    process_id: Vec<u8>,
    #[prost(int64, tag = "3")]
    start_ticks: i64,
    #[prost(int64, tag = "4")]
    start_ns: i64,
    #[prost(int64, tag = "5")]
    frequency: i64,
    #[prost(message, repeated, tag = "6")]
    streams: Vec<StreamProto>,
    #[prost(message, repeated, tag = "7")]
    partitions: Vec<PartitionProto>,
    /// Indices into the `async_events` schema, in output order.
    #[prost(uint32, repeated, tag = "8")]
    projection: Vec<u32>,
    #[prost(message, optional, tag = "9")]
    predicate: Option<PredicateProto>,
    #[prost(message, optional, tag = "10")]
    options: Option<OptionsProto>,
    #[prost(bool, tag = "11")]
    reversed: bool,
    #[prost(uint64, optional, tag = "12")]
    fetch: Option<u64>,
    /// The filters pushed from above, bound to the output schema.
    #[prost(message, optional, tag = "13")]
    pushed: Option<PhysicalExprNode>,
}

/// An `AsyncSpansExec` (its input, the events scan, is a child of the node).
#[derive(Clone, PartialEq, Message)]
struct SpansProto {
    #[prost(int64, optional, tag = "1")]
    overlap_begin: Option<i64>,
    #[prost(int64, optional, tag = "2")]
    overlap_end: Option<i64>,
    #[prost(bool, tag = "3")]
    reads_to_end: bool,
    /// Indices into the `async_spans` schema, in output order.
    #[prost(uint32, repeated, tag = "4")]
    columns: Vec<u32>,
    #[prost(uint64, optional, tag = "5")]
    fetch: Option<u64>,
    /// Whether the input's time order is required (it is whenever the scan declares it).
    #[prost(bool, tag = "6")]
    input_ordered: bool,
}

/// One of the physical nodes of this codec.
#[derive(Clone, PartialEq, Message)]
struct NodeProto {
    #[prost(oneof = "Node", tags = "1, 2")]
    node: Option<Node>,
}

// One node is decoded per plan node: the size of the enum does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, PartialEq, prost::Oneof)]
enum Node {
    #[prost(message, tag = "1")]
    Scan(ScanProto),
    #[prost(message, tag = "2")]
    Spans(SpansProto),
}

fn bad(what: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Plan(format!("async_events codec: {what}"))
}

fn uuid(bytes: &[u8], what: &str) -> Result<Uuid> {
    Uuid::from_slice(bytes).map_err(|_| bad(format_args!("{what} is not a 16-byte UUID")))
}

fn location_to_proto(l: &LakeLocation) -> LocationProto {
    LocationProto {
        database_url: l.database_url.clone(),
        store_url: l.store_url.clone(),
    }
}

fn location_from_proto(l: Option<LocationProto>) -> Result<LakeLocation> {
    let l = l.ok_or_else(|| bad("no lake location"))?;
    Ok(LakeLocation {
        database_url: l.database_url,
        store_url: l.store_url,
    })
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

fn options_to_proto(o: &ScanOptions) -> OptionsProto {
    OptionsProto {
        skip_corrupt_blocks: o.skip_corrupt_blocks,
        max_concurrent_fetches: o.max_concurrent_fetches as u64,
        shared_block_budget: o.shared_block_budget as u64,
        declare_time_order: o.declare_time_order,
        time_margin_ns: nanos(o.time_margin),
        span_margin_ns: nanos(o.span_margin),
        query_range_begin: o.query_range.0,
        query_range_end: o.query_range.1,
    }
}

fn options_from_proto(o: Option<OptionsProto>) -> Result<ScanOptions> {
    let o = o.ok_or_else(|| bad("no scan options"))?;
    let size = |v: u64, what: &str| usize::try_from(v).map_err(|_| bad(format_args!("{what} {v}")));
    Ok(ScanOptions {
        skip_corrupt_blocks: o.skip_corrupt_blocks,
        max_concurrent_fetches: size(o.max_concurrent_fetches, "max_concurrent_fetches")?,
        shared_block_budget: size(o.shared_block_budget, "shared_block_budget")?,
        declare_time_order: o.declare_time_order,
        time_margin: Duration::from_nanos(o.time_margin_ns),
        span_margin: Duration::from_nanos(o.span_margin_ns),
        query_range: (o.query_range_begin, o.query_range_end),
    })
}

fn predicate_to_proto(p: &ScanPredicate) -> PredicateProto {
    let r = &p.row;
    let ints = |v: &Option<Vec<i64>>| v.as_ref().map(|v| IntSet { values: v.clone() });
    let strings = |v: &Option<Vec<String>>| v.as_ref().map(|v| StringSet { values: v.clone() });
    PredicateProto {
        time_begin: p.time.0,
        time_end: p.time.1,
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

fn pair<T>(a: Option<T>, b: Option<T>, what: &str) -> Result<Option<(T, T)>> {
    match (a, b) {
        (Some(a), Some(b)) => Ok(Some((a, b))),
        (None, None) => Ok(None),
        _ => Err(bad(format_args!("{what} has one bound"))),
    }
}

fn predicate_from_proto(p: Option<PredicateProto>) -> Result<ScanPredicate> {
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
        time: (p.time_begin, p.time_end),
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

fn block_to_proto(b: &BlockRecord) -> BlockProto {
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

fn block_from_proto(b: BlockProto, stream_id: Uuid, process_id: Uuid) -> Result<BlockRecord> {
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

fn encode_spans(spans: &AsyncSpansExec) -> SpansProto {
    let (range, columns, fetch, input_ordered) = spans.parts();
    SpansProto {
        overlap_begin: range.overlap.0,
        overlap_end: range.overlap.1,
        reads_to_end: range.reads_to_end,
        columns: columns.iter().map(|&c| c as u32).collect(),
        fetch: fetch.map(|f| f as u64),
        input_ordered,
    }
}

fn decode_spans(
    proto: SpansProto,
    input: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let columns = (proto.columns.iter())
        .map(|&i| {
            let column = usize::try_from(i).ok().and_then(|i| SpanColumn::ALL.get(i));
            column
                .copied()
                .ok_or_else(|| bad(format_args!("async_spans has no column {i}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let input_order = match (proto.input_ordered, input.output_ordering()) {
        (false, _) => None,
        (true, Some(order)) => Some(order.clone()),
        (true, None) => return Err(bad("the spans' input is not in time order")),
    };
    let fetch = proto
        .fetch
        .map(|f| usize::try_from(f).map_err(|_| bad("fetch")))
        .transpose()?;
    let range = PairingRange {
        overlap: (proto.overlap_begin, proto.overlap_end),
        reads_to_end: proto.reads_to_end,
    };
    Ok(Arc::new(AsyncSpansExec::new(
        input,
        input_order,
        range,
        columns,
        fetch,
    )))
}

impl AsyncEventsCodec {
    fn encode_scan(
        &self,
        scan: &AsyncEventsExec,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<ScanProto> {
        let state = scan.state();
        let full = async_events_schema();
        let projection = state
            .schema()
            .fields()
            .iter()
            .map(|f| full.index_of(f.name()).map(|i| i as u32))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let pushed = scan
            .pushed()
            .map(|e| serialize_physical_expr_with_converter(e, self, proto_converter))
            .transpose()?;
        let clock = state.plan.clock_params;
        Ok(ScanProto {
            location: Some(location_to_proto(&state.location)),
            process_id: state.process_id.as_bytes().to_vec(),
            start_ticks: clock.start_ticks,
            start_ns: clock.start_ns,
            frequency: clock.frequency,
            streams: (state.plan.streams.iter())
                .map(|s| StreamProto {
                    stream_id: s.stream_id.as_bytes().to_vec(),
                    dependencies_metadata: s.dependencies_metadata.clone(),
                    objects_metadata: s.objects_metadata.clone(),
                })
                .collect(),
            partitions: (scan.partitions().0.iter())
                .map(|p| PartitionProto {
                    stream: p.stream as u32,
                    listed: p.listed as u64,
                    blocks: p.blocks.iter().map(block_to_proto).collect(),
                })
                .collect(),
            projection,
            predicate: Some(predicate_to_proto(&state.predicate)),
            options: Some(options_to_proto(&state.options)),
            reversed: scan.is_reversed(),
            fetch: scan.fetch().map(|f| f as u64),
            pushed,
        })
    }

    fn decode_scan(&self, proto: ScanProto, ctx: &TaskContext) -> Result<AsyncEventsExec> {
        let process_id = uuid(&proto.process_id, "the process id")?;
        let clock_params = ClockParams {
            start_ticks: proto.start_ticks,
            start_ns: proto.start_ns,
            frequency: proto.frequency,
        };
        let clock = clock_params
            .converter()
            .map_err(|e| bad(format_args!("clock: {e}")))?;
        let streams = (proto.streams.into_iter())
            .map(|s| {
                let stream_id = uuid(&s.stream_id, "a stream id")?;
                Ok(PlannedStream {
                    stream_id,
                    stream_id_text: stream_id.to_string(),
                    dependencies_metadata: s.dependencies_metadata,
                    objects_metadata: s.objects_metadata,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let partitions = (proto.partitions.into_iter())
            .map(|p| {
                let stream = usize::try_from(p.stream).unwrap_or(usize::MAX);
                let Some(s) = streams.get(stream) else {
                    return Err(bad(format_args!("partition of unknown stream {stream}")));
                };
                let blocks = (p.blocks.into_iter())
                    .map(|b| block_from_proto(b, s.stream_id, process_id))
                    .collect::<Result<Vec<_>>>()?;
                let listed = usize::try_from(p.listed).map_err(|_| bad("listed blocks"))?;
                if listed < blocks.len() {
                    return Err(bad("a partition lists fewer blocks than it reads"));
                }
                Ok(PlannedPartition {
                    stream,
                    blocks,
                    listed,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let partitions = Partitions(partitions);
        let indices: Vec<usize> = proto.projection.iter().map(|&i| i as usize).collect();
        let projection = ScanProjection::new(Some(&indices))?;
        let pushed = proto
            .pushed
            .as_ref()
            .map(|e| parse_physical_expr(e, ctx, &projection.schema, self))
            .transpose()?;
        let state = ScanState {
            location: location_from_proto(proto.location)?,
            process_id,
            plan: PlannedScan {
                clock,
                clock_params,
                streams,
                partitions: partitions.clone(),
            },
            predicate: predicate_from_proto(proto.predicate)?,
            projection,
            options: options_from_proto(proto.options)?,
        };
        let fetch = proto
            .fetch
            .map(|f| usize::try_from(f).map_err(|_| bad("fetch")))
            .transpose()?;
        Ok(AsyncEventsExec::from_parts(
            state,
            partitions,
            proto.reversed,
            fetch,
            pushed,
        ))
    }
}

impl PhysicalExtensionCodec for AsyncEventsCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let proto = NodeProto::decode(buf).map_err(|e| bad(format_args!("{e}")))?;
        match (proto.node, inputs) {
            (Some(Node::Scan(scan)), []) => Ok(Arc::new(self.decode_scan(scan, ctx)?)),
            (Some(Node::Spans(spans)), [input]) => decode_spans(spans, input.clone()),
            (Some(Node::Scan(_)), _) => exec_err!(
                "async_events codec: a scan has no inputs, got {}",
                inputs.len()
            ),
            (Some(Node::Spans(_)), _) => exec_err!(
                "async_events codec: a spans pairing has one input, got {}",
                inputs.len()
            ),
            (None, _) => Err(bad("no node")),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let node = if let Some(scan) = node.downcast_ref::<AsyncEventsExec>() {
            Node::Scan(self.encode_scan(scan, proto_converter)?)
        } else if let Some(spans) = node.downcast_ref::<AsyncSpansExec>() {
            Node::Spans(encode_spans(spans))
        } else {
            return internal_err!("async_events codec: cannot encode {}", node.name());
        };
        NodeProto { node: Some(node) }
            .encode(buf)
            .map_err(|e| bad(format_args!("{e}")))
    }
}

impl LogicalExtensionCodec for AsyncEventsCodec {
    fn try_decode(
        &self,
        _buf: &[u8],
        _inputs: &[LogicalPlan],
        _ctx: &TaskContext,
    ) -> Result<Extension> {
        internal_err!("async_events codec: no logical extension nodes")
    }

    fn try_encode(&self, _node: &Extension, _buf: &mut Vec<u8>) -> Result<()> {
        internal_err!("async_events codec: no logical extension nodes")
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        _table_ref: &TableReference,
        _schema: datafusion::arrow::datatypes::SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        let proto = TableProto::decode(buf).map_err(|e| bad(format_args!("{e}")))?;
        let location = location_from_proto(proto.location)?;
        let registries = [
            ctx.session_config().get_extension::<LakeRegistry>(),
            Some(LakeRegistry::global()),
        ];
        let Some(lake) = registries
            .into_iter()
            .flatten()
            .find_map(|r| r.find(&location))
        else {
            return exec_err!(
                "async_events: no lake at {} (metadata) and {} (blobs) in this process: \
                 register it (datafusion_async_events::register) before decoding the plan",
                location.database_url,
                location.store_url
            );
        };
        let process_id = uuid(&proto.process_id, "the process id")?;
        let bounds = (proto.begin, proto.end);
        let options = options_from_proto(proto.options)?;
        Ok(if proto.spans {
            Arc::new(AsyncSpansTable::new(lake, process_id, bounds, options))
        } else {
            Arc::new(AsyncEventsTable::new(lake, process_id, bounds, options))
        })
    }

    fn try_encode_table_provider(
        &self,
        _table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let proto = if let Some(table) = node.downcast_ref::<AsyncEventsTable>() {
            let (begin, end) = table.bounds();
            TableProto {
                location: Some(location_to_proto(&LakeLocation::of(table.lake()))),
                process_id: table.process_id().as_bytes().to_vec(),
                begin,
                end,
                options: Some(options_to_proto(table.options())),
                spans: false,
            }
        } else if let Some(table) = node.downcast_ref::<AsyncSpansTable>() {
            let (lake, (begin, end), options) = table.parts();
            TableProto {
                location: Some(location_to_proto(&LakeLocation::of(lake))),
                process_id: table.process_id().as_bytes().to_vec(),
                begin,
                end,
                options: Some(options_to_proto(options)),
                spans: true,
            }
        } else {
            return internal_err!(
                "async_events codec: cannot encode this table provider (only async_events and \
                 async_spans tables)"
            );
        };
        proto.encode(buf).map_err(|e| bad(format_args!("{e}")))
    }
}
