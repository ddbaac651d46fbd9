//! [`AsyncEventsCodec`] (feature `codec`): `async_events` scans, `async_spans` pairings,
//! `thread_spans` plans, and the tables of `async_events`, `async_spans`, `thread_spans` and
//! `process_spans`, as bytes, for engines that ship plans to other processes (Ballista,
//! datafusion-distributed).
//!
//! The scan is plain data (see [`crate::provider::AsyncEventsExec`]), so the messages
//! ([`messages`]) hold only what a plan says: the lake's URLs (no credentials), the clock, the
//! streams' transit metadata, each partition's blocks, the projection, the filters and the read
//! order. The process that decodes a plan executes it on the lake it registered under the same
//! URLs ([`LakeRegistry::resolve`]).

mod messages;
mod thread_spans;

use crate::format::async_events_schema;
use crate::lake::{Lake, LakeLocation, LakeRegistry};
use crate::properties::property_functions;
use crate::provider::{
    AsyncEventsExec, AsyncEventsTable, Partitions, PlannedPartition, PlannedScan, PlannedStream,
    ScanCaches, ScanOptions, ScanProjection, ScanState,
};
use crate::spans::{AsyncSpansExec, AsyncSpansTable, PairingRange, SpanColumn};
use crate::thread_spans::{
    Flavor, ProcessSpansTable, SpanTypes, ThreadSpansExec, ThreadSpansOf, ThreadSpansTable,
};
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
use uuid::Uuid;

/// Encodes and decodes [`AsyncEventsExec`], [`AsyncSpansExec`] and [`ThreadSpansExec`]
/// (physical plans) and [`AsyncEventsTable`], [`AsyncSpansTable`], [`ThreadSpansTable`] and
/// [`ProcessSpansTable`] (logical plans). Other nodes are not its business: an engine with
/// codecs of its own wraps this one.
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
        let (clock_params, clock) =
            clock_from_proto(proto.start_ticks, proto.start_ns, proto.frequency)?;
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
            (Some(Node::ThreadSpans(spans)), []) => Ok(Arc::new(thread_spans::decode(spans, ctx)?)),
            (Some(Node::Scan(_)), _) => exec_err!(
                "async_events codec: a scan has no inputs, got {}",
                inputs.len()
            ),
            (Some(Node::Spans(_)), _) => exec_err!(
                "async_events codec: a spans pairing has one input, got {}",
                inputs.len()
            ),
            (Some(Node::ThreadSpans(_)), _) => exec_err!(
                "async_events codec: thread spans have no inputs, got {}",
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
        } else if let Some(spans) = node.downcast_ref::<ThreadSpansExec>() {
            Node::ThreadSpans(thread_spans::encode(spans))
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
        let id = uuid(&proto.process_id, "the process or stream id")?;
        let bounds = TimeBounds::new(proto.begin, proto.end);
        let options = options_from_proto(proto.options)?;
        let caches =
            (ctx.session_config().get_extension::<ScanCaches>()).unwrap_or_else(ScanCaches::global);
        let threads = |of, flavor| {
            ThreadSpansTable::new(
                lake.clone(),
                of,
                bounds,
                flavor,
                options.clone(),
                caches.clone(),
            )
        };
        if let Some(types) = proto.span_types {
            let types = match types {
                1 => SpanTypes::Thread,
                2 => SpanTypes::Async,
                3 => SpanTypes::Both,
                other => return Err(bad(format_args!("span types {other}"))),
            };
            let threads = threads(ThreadSpansOf::Process(id), Flavor::ProcessSpans);
            let spans = AsyncSpansTable::with_caches(lake, id, bounds, options, caches);
            return Ok(Arc::new(ProcessSpansTable::new(threads, spans, types)));
        }
        if let Some(flavor) = proto.thread_flavor {
            let of = match proto.of_stream {
                true => ThreadSpansOf::Stream(id),
                false => ThreadSpansOf::Process(id),
            };
            return Ok(Arc::new(threads(
                of,
                thread_spans::flavor_from_proto(flavor)?,
            )));
        }
        Ok(if proto.spans {
            Arc::new(AsyncSpansTable::new(lake, id, bounds, options))
        } else {
            Arc::new(AsyncEventsTable::new(lake, id, bounds, options))
        })
    }

    fn try_encode_table_provider(
        &self,
        _table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let table = |lake: &Lake, id: Uuid, bounds: TimeBounds, options: &ScanOptions| TableProto {
            location: Some(location_to_proto(&LakeLocation::of(lake))),
            process_id: id.as_bytes().to_vec(),
            begin: bounds.begin,
            end: bounds.end,
            options: Some(options_to_proto(options)),
            ..TableProto::default()
        };
        let threads = |t: &ThreadSpansTable| {
            let (id, of_stream) = match t.of() {
                ThreadSpansOf::Process(id) => (id, false),
                ThreadSpansOf::Stream(id) => (id, true),
            };
            TableProto {
                thread_flavor: Some(thread_spans::flavor_to_proto(t.flavor())),
                of_stream,
                ..table(t.lake(), id, t.bounds(), t.options())
            }
        };
        let proto = if let Some(t) = node.downcast_ref::<AsyncEventsTable>() {
            table(t.lake(), t.process_id(), t.bounds(), t.options())
        } else if let Some(t) = node.downcast_ref::<AsyncSpansTable>() {
            TableProto {
                spans: true,
                ..table(t.lake(), t.process_id(), t.bounds(), t.options())
            }
        } else if let Some(t) = node.downcast_ref::<ThreadSpansTable>() {
            threads(t)
        } else if let Some(t) = node.downcast_ref::<ProcessSpansTable>() {
            // Made by `process_spans`: its two tables on one lake, process, range and options.
            TableProto {
                span_types: Some(match t.types() {
                    SpanTypes::Thread => 1,
                    SpanTypes::Async => 2,
                    SpanTypes::Both => 3,
                }),
                ..threads(t.threads())
            }
        } else {
            return internal_err!(
                "async_events codec: cannot encode this table provider (only async_events, \
                 async_spans, thread_spans and process_spans tables)"
            );
        };
        proto.encode(buf).map_err(|e| bad(format_args!("{e}")))
    }
}
