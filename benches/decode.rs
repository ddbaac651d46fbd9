//! Decoding blocks to Arrow: our decoder (a batch per block, and batched as a scan does) against
//! the generic micromegas path, with LZ4 decompression alone as the floor. All three read the same stored blobs of realistic 64 KiB
//! thread blocks (about a third of the records are sync thread events).
//!
//! `cargo bench --bench decode`

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use bumpalo::Bump;
use common::producer::Recording;
use common::realistic::{Shape, realistic};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use datafusion::arrow::array::{
    ArrayRef, Int64Builder, MapBuilder, StringBuilder, StringDictionaryBuilder,
    TimestampNanosecondBuilder, UInt32Builder,
};
use datafusion::arrow::datatypes::Int32Type;
use datafusion_async_events::format::{
    AsyncEventDecoder, BlockIds, ColumnSet, EventBatchBuilder, RowFilter, StreamLayout,
    TickConverter,
};
use micromegas_transit::value::Value;
use micromegas_transit::{UserDefinedType, parse_object_buffer, read_dependencies};
use std::hint::black_box;
use std::io::Read;
use std::sync::Arc;

struct Input {
    rec: Recording,
    clock: TickConverter,
    layout: StreamLayout,
    deps_udts: Vec<UserDefinedType>,
    obj_udts: Vec<UserDefinedType>,
    ids: Vec<(String, String)>,
    events: u64,
}

fn input() -> Input {
    let shape = Shape {
        streams: 4,
        blocks_per_stream: 8,
        buffer_bytes: 64 * 1024,
        block_duration: chrono::Duration::milliseconds(100),
    };
    let rec = realistic(shape, chrono::Utc::now(), 42);
    let stream = &rec.streams[0];
    let events = rec
        .decode(ColumnSet::none(), &RowFilter::all())
        .iter()
        .map(|b| b.num_rows() as u64)
        .sum();
    Input {
        clock: rec.converter(),
        layout: common::producer::layout(stream),
        deps_udts: ciborium::de::from_reader(stream.dependencies_metadata.as_slice()).unwrap(),
        obj_udts: ciborium::de::from_reader(stream.objects_metadata.as_slice()).unwrap(),
        ids: rec
            .blocks
            .iter()
            .map(|b| (b.stream_id.to_string(), b.block_id.to_string()))
            .collect(),
        events,
        rec,
    }
}

/// Ours: blob → CBOR → LZ4 → transit records at compiled offsets → Arrow, all 13 columns, a
/// batch finished at every block.
fn ours(input: &Input, decoder: &mut AsyncEventDecoder) -> usize {
    decode_batched(input, decoder, 1)
}

/// Ours as a scan batches it: blocks decoded into one builder, a batch finished at every 8 192
/// rows (the session's default batch size) rather than at every block, so that what a batch
/// costs (its arrays, the dictionaries' validation) is spread as in a query.
fn ours_scan_batches(input: &Input, decoder: &mut AsyncEventDecoder) -> usize {
    decode_batched(input, decoder, 8192)
}

/// Every block decoded into one builder, a batch finished once it holds `batch_rows` rows.
fn decode_batched(input: &Input, decoder: &mut AsyncEventDecoder, batch_rows: usize) -> usize {
    let mut rows = 0;
    let mut out = EventBatchBuilder::new(ColumnSet::all());
    for (block, (sid, bid)) in input.rec.blocks.iter().zip(&input.ids) {
        let ids = BlockIds {
            stream_id: sid,
            block_id: bid,
        };
        decoder
            .decode_blob(
                &input.layout,
                &block.payload,
                ids,
                &input.clock,
                &RowFilter::all(),
                &mut out,
            )
            .unwrap();
        if out.len() >= batch_rows {
            rows += out.finish().unwrap().num_rows();
        }
    }
    rows + out.finish().unwrap().num_rows()
}

/// The micromegas-analytics way: micromegas's own payload decoding and decompression, the
/// generic transit parse into `Value` objects, fields looked up by name, and every row appended
/// to Arrow builders (string dictionaries appended per row, hash computed per row).
fn micromegas_transit(input: &Input) -> usize {
    let readers = micromegas_tracing::parsing::make_custom_readers();
    let mut rows = 0;
    for (block, (sid, bid)) in input.rec.blocks.iter().zip(&input.ids) {
        let payload: micromegas_telemetry::block_wire_format::BlockPayload =
            ciborium::de::from_reader(block.payload.as_slice()).unwrap();
        let deps_buf =
            micromegas_telemetry::compression::decompress(&payload.dependencies).unwrap();
        let obj_buf = micromegas_telemetry::compression::decompress(&payload.objects).unwrap();
        let bump = Bump::new();
        let deps = read_dependencies(&bump, &readers, &input.deps_udts, &deps_buf).unwrap();
        let mut stream_id = StringDictionaryBuilder::<Int32Type>::new();
        let mut block_id = StringDictionaryBuilder::<Int32Type>::new();
        let mut time = TimestampNanosecondBuilder::new().with_timezone("+00:00");
        let mut event_type = StringDictionaryBuilder::<Int32Type>::new();
        let mut span_id = Int64Builder::new();
        let mut parent_span_id = Int64Builder::new();
        let mut depth = UInt32Builder::new();
        let mut hash = UInt32Builder::new();
        let mut name = StringDictionaryBuilder::<Int32Type>::new();
        let mut filename = StringDictionaryBuilder::<Int32Type>::new();
        let mut target = StringDictionaryBuilder::<Int32Type>::new();
        let mut line = UInt32Builder::new();
        let mut properties = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        parse_object_buffer(&bump, &readers, &deps, &input.obj_udts, &obj_buf, |value| {
            let Value::Object(obj) = value else {
                return Ok(true);
            };
            let (is_begin, named) = match obj.type_name {
                "BeginAsyncSpanEvent" => (true, false),
                "EndAsyncSpanEvent" | "TaggedEndAsyncSpanEvent" => (false, false),
                "BeginAsyncNamedSpanEvent" | "BeginAsyncDynNamedSpanEvent" => (true, true),
                "EndAsyncNamedSpanEvent"
                | "EndAsyncDynNamedSpanEvent"
                | "TaggedEndAsyncNamedSpanEvent" => (false, true),
                _ => return Ok(true),
            };
            let (n, scope) = if named {
                let Value::Object(loc) = *obj.get_ref("span_location")? else {
                    anyhow::bail!("location")
                };
                (obj.get::<&str>("name")?, loc)
            } else {
                let Value::Object(desc) = *obj.get_ref("span_desc")? else {
                    anyhow::bail!("desc")
                };
                (desc.get::<&str>("name")?, desc)
            };
            let (f, t, l) = (
                scope.get::<&str>("file")?,
                scope.get::<&str>("target")?,
                scope.get::<u32>("line")?,
            );
            stream_id.append_value(sid);
            block_id.append_value(bid);
            time.append_value(input.clock.ticks_to_ns(obj.get::<i64>("time")?));
            event_type.append_value(if is_begin { "begin" } else { "end" });
            span_id.append_value(obj.get::<u64>("span_id")? as i64);
            parent_span_id.append_value(obj.get::<u64>("parent_span_id")? as i64);
            depth.append_value(obj.get::<u32>("depth")?);
            hash.append_value(common::expected_hash(n, f, t, l));
            name.append_value(n);
            filename.append_value(f);
            target.append_value(t);
            line.append_value(l);
            if obj.type_name.starts_with("TaggedEnd") {
                let Value::Object(set) = *obj.get_ref("properties")? else {
                    anyhow::bail!("properties")
                };
                for (k, v) in set.members {
                    properties.keys().append_value(k);
                    properties
                        .values()
                        .append_value(v.as_str().unwrap_or_default());
                }
            }
            properties.append(true)?;
            Ok(true)
        })
        .unwrap();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(stream_id.finish()),
            Arc::new(block_id.finish()),
            Arc::new(time.finish()),
            Arc::new(event_type.finish()),
            Arc::new(span_id.finish()),
            Arc::new(parent_span_id.finish()),
            Arc::new(depth.finish()),
            Arc::new(hash.finish()),
            Arc::new(name.finish()),
            Arc::new(filename.finish()),
            Arc::new(target.finish()),
            Arc::new(line.finish()),
            Arc::new(properties.finish()),
        ];
        rows += columns[0].len();
        black_box(columns);
    }
    rows
}

/// The floor: LZ4 decompression alone (lz4_flex's frame decoder) of both buffers.
fn lz4_only(payloads: &[(Vec<u8>, Vec<u8>)], buf: &mut Vec<u8>) -> usize {
    let mut bytes = 0;
    for (deps, objects) in payloads {
        for frame in [deps, objects] {
            buf.clear();
            lz4_flex::frame::FrameDecoder::new(frame.as_slice())
                .read_to_end(buf)
                .unwrap();
            bytes += buf.len();
        }
    }
    bytes
}

fn bench(c: &mut Criterion) {
    let input = input();
    let payloads: Vec<(Vec<u8>, Vec<u8>)> = input
        .rec
        .blocks
        .iter()
        .map(|b| {
            let p = datafusion_async_events::format::BlockPayload::from_cbor(&b.payload).unwrap();
            (p.dependencies, p.objects)
        })
        .collect();
    let mut decoder = AsyncEventDecoder::new();
    assert_eq!(ours(&input, &mut decoder) as u64, input.events);
    assert_eq!(ours_scan_batches(&input, &mut decoder) as u64, input.events);
    assert_eq!(micromegas_transit(&input) as u64, input.events);
    let raw: usize = input.rec.blocks.iter().map(|b| b.payload.len()).sum();
    eprintln!(
        "{} blocks, {} async events, {} stored bytes",
        input.rec.blocks.len(),
        input.events,
        raw
    );
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(input.events));
    group.bench_function("ours", |b| b.iter(|| black_box(ours(&input, &mut decoder))));
    group.bench_function("ours_scan_batches", |b| {
        b.iter(|| black_box(ours_scan_batches(&input, &mut decoder)))
    });
    group.bench_function("micromegas_transit", |b| {
        b.iter(|| black_box(micromegas_transit(&input)))
    });
    let mut buf = Vec::new();
    group.bench_function("lz4_only", |b| {
        b.iter(|| black_box(lz4_only(&payloads, &mut buf)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
