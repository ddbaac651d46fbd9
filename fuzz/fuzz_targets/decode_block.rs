//! Fuzzes the block decoder with the real metadata of a micromegas-tracing 0.33 thread stream:
//! stored blobs (CBOR, LZ4, records), decompressed buffers, and metadata lists. Any input must
//! give a result, never a panic.
#![no_main]

use datafusion_async_events::format::{
    AsyncEventDecoder, BlockIds, ColumnSet, DecompressedBlock, EventBatchBuilder, RowFilter,
    StreamLayout, TickConverter,
};
use libfuzzer_sys::fuzz_target;
use micromegas_tracing::spans::{ThreadDepsQueue, ThreadEventQueue};
use micromegas_transit::{HeterogeneousQueue, UserDefinedType};
use std::sync::LazyLock;

fn flatten(udts: Vec<UserDefinedType>) -> Vec<u8> {
    let mut out = udts.clone();
    let mut pending: Vec<UserDefinedType> = udts.iter().flat_map(|u| u.secondary_udts.clone()).collect();
    while let Some(u) = pending.pop() {
        pending.extend(u.secondary_udts.clone());
        if !out.iter().any(|o| o.name == u.name) {
            out.push(u);
        }
    }
    let mut cbor = Vec::new();
    ciborium::ser::into_writer(&out, &mut cbor).expect("metadata to CBOR");
    cbor
}

static LAYOUT: LazyLock<StreamLayout> = LazyLock::new(|| {
    let deps = flatten(ThreadDepsQueue::reflect_contained());
    let objects = flatten(ThreadEventQueue::reflect_contained());
    StreamLayout::from_cbor(&deps, &objects).expect("the real metadata compiles")
});

fn decode(f: impl FnOnce(&mut AsyncEventDecoder, &TickConverter, &mut EventBatchBuilder)) {
    let clock = TickConverter::new(0, 0, 1_000_000_000, None).expect("clock");
    let mut out = EventBatchBuilder::new(ColumnSet::all());
    f(&mut AsyncEventDecoder::new(), &clock, &mut out);
    out.finish().expect("a batch can always be built from what was appended");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let ids = BlockIds { stream_id: "s", block_id: "b" };
    match mode % 3 {
        0 => decode(|decoder, clock, out| {
            let _ = decoder.decode_blob(&LAYOUT, rest, ids, clock, &RowFilter::all(), out);
        }),
        1 => {
            let split = rest.first().map_or(0, |&b| usize::from(b) * rest.len() / 256);
            let (deps, objects) = rest.split_at(split.min(rest.len()));
            let block = DecompressedBlock {
                dependencies: Some(deps.to_vec()),
                objects: objects.to_vec(),
            };
            decode(|decoder, clock, out| {
                let _ = decoder.decode(&LAYOUT, &block, ids, clock, &RowFilter::all(), out);
            });
        }
        _ => {
            let split = rest.first().map_or(0, |&b| usize::from(b) * rest.len() / 256);
            let (deps, objects) = rest.split_at(split.min(rest.len()));
            let _ = StreamLayout::from_cbor(deps, objects);
        }
    }
});
