//! [`AsyncEventsCodec`] (feature `codec`): `async_events` scans, `async_spans` pairings and both
//! tables as bytes, for engines that ship plans to other processes (Ballista,
//! datafusion-distributed).
//!
//! The scan is plain data (see [`crate::provider::AsyncEventsExec`]), so the messages
//! ([`messages`]) hold only what a plan says: the lake's URLs (no credentials), the clock, the
//! streams' transit metadata, each partition's blocks, the projection, the filters and the read
//! order. The process that decodes a plan executes it on the lake it registered under the same
//! URLs ([`LakeRegistry::resolve`]).

mod messages;

use crate::format::async_events_schema;
use crate::lake::{LakeLocation, LakeRegistry};
use crate::properties::property_functions;
use crate::provider::{
    AsyncEventsExec, AsyncEventsTable, ClockParams, Partitions, PlannedPartition, PlannedScan,
    PlannedStream, ScanProjection, ScanState,
};
use crate::spans::{AsyncSpansExec, AsyncSpansTable, PairingRange, SpanColumn};
use crate::time_bounds::TimeBounds;
use datafusion::catalog::TableProvider;
use datafusion::common::{Result, TableReference, exec_err, internal_err, not_impl_err};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Extension;
use datafusion::logical_expr::LogicalPlan;
use datafusion::logical_expr::ScalarUDF;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::from_proto::parse_physical_expr;
use datafusion_proto::physical_plan::to_proto::serialize_physical_expr_with_converter;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use messages::*;
use prost::Message;
use std::sync::Arc;

/// Encodes and decodes [`AsyncEventsExec`] and [`AsyncSpansExec`] (physical plans) and
/// [`AsyncEventsTable`] and [`AsyncSpansTable`] (logical plans). Other nodes are not its
/// business: an engine with codecs of its own wraps this one.
#[derive(Debug, Default, Clone, Copy)]
pub struct AsyncEventsCodec;

fn encode_spans(spans: &AsyncSpansExec) -> SpansProto {
    let range = spans.range();
    SpansProto {
        overlap_begin: range.overlap.begin,
        overlap_end: range.overlap.end,
        reads_to_end: range.reads_to_end,
        columns: spans.columns().iter().map(|&c| c as u32).collect(),
        fetch: spans.fetch().map(|f| f as u64),
        input_ordered: spans.requires_input_order(),
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
        overlap: TimeBounds::new(proto.overlap_begin, proto.overlap_end),
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
            partitions: (scan.partitions().iter())
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
        let partitions = Partitions::new(partitions);
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

    /// The property and JSONB functions travel by name (`process_spans` computes
    /// `properties_to_jsonb` in its plan); they carry no state.
    fn try_decode_udf(&self, name: &str, _buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        match property_functions().into_iter().find(|f| f.name() == name) {
            Some(f) => Ok(Arc::new(f)),
            None => not_impl_err!("async_events codec: no scalar function {name}"),
        }
    }

    fn try_encode_udf(&self, _node: &ScalarUDF, _buf: &mut Vec<u8>) -> Result<()> {
        // By name, as DataFusion's own functions (found in the decoding session's registry).
        Ok(())
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
        let lake = LakeRegistry::resolve(
            ctx.session_config().get_extension::<LakeRegistry>(),
            &location,
        )?;
        let process_id = uuid(&proto.process_id, "the process id")?;
        let bounds = TimeBounds::new(proto.begin, proto.end);
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
            TableProto {
                location: Some(location_to_proto(&LakeLocation::of(table.lake()))),
                process_id: table.process_id().as_bytes().to_vec(),
                begin: table.bounds().begin,
                end: table.bounds().end,
                options: Some(options_to_proto(table.options())),
                spans: false,
            }
        } else if let Some(table) = node.downcast_ref::<AsyncSpansTable>() {
            TableProto {
                location: Some(location_to_proto(&LakeLocation::of(table.lake()))),
                process_id: table.process_id().as_bytes().to_vec(),
                begin: table.bounds().begin,
                end: table.bounds().end,
                options: Some(options_to_proto(table.options())),
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
