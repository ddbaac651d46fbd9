//! Encoding of real producer data as a micromegas lake holds it: process and stream rows, and
//! per block the row fields plus the stored blob (CBOR `BlockPayload` re-encoded by ingestion).

use chrono::{DateTime, Utc};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion_async_events::format::{
    AsyncEventDecoder, BlockIds, BlockSource, ColumnSet, DecompressedBlock, EventBatchBuilder,
    LatestTiming, Resume, RowFilter, StreamLayout, TickConverter,
};
use datafusion_async_events::lake::{BlockRecord, ProcessRecord, StreamRecord};
use micromegas_telemetry_sink::stream_block::StreamBlock;
use micromegas_tracing::prelude::ProcessInfo;
use micromegas_tracing::spans::{ThreadBlock, ThreadStream};
use std::collections::HashMap;
use uuid::Uuid;

/// A `processes` row: the lake's own record.
pub type RawProcess = ProcessRecord;

/// A `streams` row: the lake's own record.
pub type RawStream = StreamRecord;

/// The compiled layout of a stream's metadata.
pub fn layout(stream: &StreamRecord) -> StreamLayout {
    StreamLayout::from_cbor(&stream.dependencies_metadata, &stream.objects_metadata).unwrap()
}

/// A `blocks` row and its blob.
#[derive(Debug, Clone)]
pub struct RawBlock {
    /// The row (its `payload_size` is the blob's length).
    pub record: BlockRecord,
    /// The stored blob: CBOR `BlockPayload`.
    pub payload: Vec<u8>,
}

impl RawBlock {
    pub fn new(record: BlockRecord, payload: Vec<u8>) -> Self {
        let record = BlockRecord {
            payload_size: payload.len() as i64,
            ..record
        };
        Self { record, payload }
    }
}

impl std::ops::Deref for RawBlock {
    type Target = BlockRecord;
    fn deref(&self) -> &BlockRecord {
        &self.record
    }
}

impl std::ops::DerefMut for RawBlock {
    fn deref_mut(&mut self) -> &mut BlockRecord {
        &mut self.record
    }
}

/// One recorded process: its rows and blobs.
#[derive(Debug, Clone)]
pub struct Recording {
    pub process: RawProcess,
    pub streams: Vec<RawStream>,
    pub blocks: Vec<RawBlock>,
}

impl Recording {
    pub fn stream(&self, id: Uuid) -> &RawStream {
        self.streams.iter().find(|s| s.stream_id == id).unwrap()
    }

    /// The process's converter, estimating the frequency from its latest block if needed.
    pub fn converter(&self) -> TickConverter {
        let latest = LatestTiming {
            end_ticks: self.blocks.iter().map(|b| b.end_ticks).max().unwrap(),
            end_time_ns: self
                .blocks
                .iter()
                .map(|b| b.end_time.timestamp_nanos_opt().unwrap())
                .max()
                .unwrap(),
        };
        TickConverter::new(
            self.process.start_ticks,
            self.process.start_time.timestamp_nanos_opt().unwrap(),
            self.process.tsc_frequency,
            Some(latest),
        )
        .unwrap()
    }

    /// Decodes every block with our decoder into one batch per block.
    pub fn decode(&self, columns: ColumnSet, filter: &RowFilter) -> Vec<RecordBatch> {
        let clock = self.converter();
        let mut decoder = AsyncEventDecoder::new();
        let mut out = EventBatchBuilder::new(columns);
        let needs_deps = AsyncEventDecoder::needs_dependencies(&out, filter);
        self.blocks
            .iter()
            .map(|b| {
                let layout = layout(self.stream(b.stream_id));
                let block = DecompressedBlock::from_blob(&b.payload, needs_deps).unwrap();
                let (sid, bid) = (b.stream_id.to_string(), b.block_id.to_string());
                let ids = BlockIds {
                    stream_id: &sid,
                    block_id: &bid,
                };
                decoder
                    .decode(&layout, &block, ids, &clock, filter, &mut out)
                    .unwrap();
                out.finish().unwrap()
            })
            .collect()
    }
}

impl Recording {
    /// Decodes every block with our decoder in parts of at most `max_rows` rows (inflated
    /// from the stored blob, as a scan does), one batch per part, the builder finished between
    /// parts as a scan finishes a full batch.
    #[allow(dead_code)]
    pub fn decode_in_parts(
        &self,
        columns: ColumnSet,
        filter: &RowFilter,
        max_rows: usize,
    ) -> Vec<RecordBatch> {
        let clock = self.converter();
        let mut decoder = AsyncEventDecoder::new();
        let mut out = EventBatchBuilder::new(columns);
        let needs_deps = AsyncEventDecoder::needs_dependencies(&out, filter);
        let mut batches = Vec::new();
        for b in &self.blocks {
            let layout = layout(self.stream(b.stream_id));
            let (sid, bid) = (b.stream_id.to_string(), b.block_id.to_string());
            let ids = BlockIds {
                stream_id: &sid,
                block_id: &bid,
            };
            decoder.inflate(&b.payload, needs_deps).unwrap();
            let mut from = Resume::START;
            loop {
                let part = decoder
                    .decode_part(
                        &layout,
                        BlockSource::Blob(&b.payload),
                        from,
                        ids,
                        &clock,
                        filter,
                        &mut out,
                        max_rows,
                    )
                    .unwrap();
                assert!(part.summary.rows <= max_rows);
                batches.push(out.finish().unwrap());
                match part.next {
                    Some(next) => from = next,
                    None => break,
                }
            }
        }
        batches
    }
}

/// CBOR of a metadata list, as ingestion stores it.
pub fn encode_udts<T: serde::Serialize>(udts: &[T]) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(udts, &mut out).unwrap();
    out
}

/// The metadata of a 0.33 thread stream, from micromegas-telemetry-sink's own builder.
pub fn thread_metadata(process_id: Uuid) -> (Vec<u8>, Vec<u8>) {
    let stream = ThreadStream::new(1024, process_id, &["cpu".to_string()], HashMap::new());
    let info = micromegas_telemetry_sink::stream_info::make_stream_info(&stream);
    (
        encode_udts(&info.dependencies_metadata),
        encode_udts(&info.objects_metadata),
    )
}

/// A 0.33 thread stream row.
pub fn thread_stream(
    process_id: Uuid,
    stream_id: Uuid,
    properties: &HashMap<String, String>,
) -> RawStream {
    let (deps, objs) = thread_metadata(process_id);
    let mut properties: Vec<_> = properties
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    properties.sort();
    RawStream {
        stream_id,
        process_id,
        dependencies_metadata: deps,
        objects_metadata: objs,
        tags: vec!["cpu".into()],
        properties,
    }
}

/// A closed 0.33 thread block encoded by micromegas's sink (`encode_bin`), then stored the way
/// micromegas's ingestion stores it: the payload re-encoded alone, the rest in the row.
pub fn encode_thread_block(block: &ThreadBlock, process: &ProcessInfo) -> RawBlock {
    let wire = block.encode_bin(process).unwrap();
    from_wire_block(&wire)
}

/// The row and blob of a CBOR `Block` as sent to ingestion.
pub fn from_wire_block(wire: &[u8]) -> RawBlock {
    let block: micromegas_telemetry::block_wire_format::Block =
        ciborium::de::from_reader(wire).unwrap();
    let payload = micromegas_telemetry::wire_format::encode_cbor(&block.payload).unwrap();
    let parse = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
    let record = BlockRecord {
        block_id: block.block_id,
        stream_id: block.stream_id,
        process_id: block.process_id,
        begin_time: parse(&block.begin_time),
        begin_ticks: block.begin_ticks,
        end_time: parse(&block.end_time),
        end_ticks: block.end_ticks,
        nb_objects: block.nb_objects,
        object_offset: block.object_offset,
        payload_size: 0,
    };
    RawBlock::new(record, payload)
}
