//! Malformed blocks and metadata: every defect is an error that says what is wrong, never a
//! panic, and a property test mutates real blocks at random.

mod common;

use common::scripted::{scripted_030, scripted_033};
use datafusion_async_events::format::{
    AsyncEventDecoder, BlockIds, BlockPayload, ColumnSet, DecompressedBlock, EventBatchBuilder,
    FormatError, RowFilter, StreamLayout, TickConverter, compress_frame,
};
use proptest::prelude::*;

struct Subject {
    layout: StreamLayout,
    dependencies: Vec<u8>,
    objects: Vec<u8>,
    clock: TickConverter,
}

fn subject() -> Subject {
    let s = scripted_033();
    let rec = &s.recording;
    let block = DecompressedBlock::from_blob(&rec.blocks[0].payload, true).unwrap();
    Subject {
        layout: common::producer::layout(&rec.streams[0]),
        dependencies: block.dependencies.unwrap(),
        objects: block.objects,
        clock: rec.converter(),
    }
}

fn decode(s: &Subject, deps: &[u8], objects: &[u8]) -> Result<usize, FormatError> {
    let block = DecompressedBlock {
        dependencies: Some(deps.to_vec()),
        objects: objects.to_vec(),
    };
    let mut out = EventBatchBuilder::new(ColumnSet::all());
    let ids = BlockIds {
        stream_id: "s",
        block_id: "b",
    };
    let summary = AsyncEventDecoder::new().decode(
        &s.layout,
        &block,
        ids,
        &s.clock,
        &RowFilter::all(),
        &mut out,
    )?;
    let batch = out.finish().unwrap();
    assert_eq!(batch.num_rows(), summary.rows);
    Ok(summary.rows)
}

#[test]
fn the_subject_decodes() {
    let s = subject();
    assert_eq!(decode(&s, &s.dependencies, &s.objects), Ok(8));
}

#[test]
fn truncated_or_garbage_cbor() {
    let blob = &scripted_033().recording.blocks[0].payload;
    for bad in [
        &blob[..blob.len() / 2],
        &blob[..1],
        b"\x00\x01\x02",
        b"{\"json\": 1}",
    ] {
        let err = BlockPayload::from_cbor(bad).unwrap_err();
        assert!(
            matches!(
                err,
                FormatError::Cbor {
                    what: "block payload",
                    ..
                }
            ),
            "{err}"
        );
    }
}

#[test]
fn corrupt_lz4() {
    let blob = &scripted_033().recording.blocks[0].payload;
    let mut payload = BlockPayload::from_cbor(blob).unwrap();
    let n = payload.objects.len();
    payload.objects[n / 2] ^= 0x5A; // caught by the block checksum
    let err = DecompressedBlock::from_payload(&payload, true).unwrap_err();
    assert!(
        matches!(
            err,
            FormatError::Lz4 {
                buffer: "objects",
                ..
            }
        ),
        "{err}"
    );
    let mut payload = BlockPayload::from_cbor(blob).unwrap();
    payload.dependencies.truncate(9);
    let err = DecompressedBlock::from_payload(&payload, true).unwrap_err();
    assert!(
        matches!(
            err,
            FormatError::Lz4 {
                buffer: "dependencies",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn unknown_type_index() {
    let s = subject();
    let mut objects = s.objects.clone();
    objects[0] = 200;
    let err = decode(&s, &s.dependencies, &objects).unwrap_err();
    assert_eq!(
        err,
        FormatError::UnknownTypeIndex {
            buffer: "objects",
            index: 200,
            offset: 0,
            known: 18
        }
    );
    assert!(err.to_string().contains("unknown type index 200"));
    let mut deps = s.dependencies.clone();
    deps[0] = 99;
    let err = decode(&s, &deps, &s.objects).unwrap_err();
    assert!(
        matches!(
            err,
            FormatError::UnknownTypeIndex {
                buffer: "dependencies",
                index: 99,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn record_running_past_the_buffer() {
    let s = subject();
    let cut = &s.objects[..s.objects.len() - 3];
    let err = decode(&s, &s.dependencies, cut).unwrap_err();
    // The block ends with a 56-byte TaggedEndAsyncNamedSpanEvent.
    match &err {
        FormatError::Truncated {
            buffer,
            type_name,
            needed,
            available,
            ..
        } => {
            assert_eq!(
                (*buffer, type_name.as_str(), *needed, *available),
                ("objects", "TaggedEndAsyncNamedSpanEvent", 56, 53)
            );
        }
        other => panic!("{other}"),
    }
    let cut = &s.dependencies[..s.dependencies.len() - 1];
    let err = decode(&s, cut, &s.objects).unwrap_err();
    assert!(
        matches!(
            err,
            FormatError::Truncated {
                buffer: "dependencies",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn dangling_dependency_reference() {
    let s = subject();
    // Without its dependencies, the first async event's span description is unknown.
    let err = decode(&s, &[], &s.objects).unwrap_err();
    match &err {
        FormatError::DanglingReference { referrer, .. } => {
            assert_eq!(referrer, "BeginAsyncSpanEvent.span_desc")
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("does not define"), "{err}");
}

#[test]
fn metadata_that_does_not_match_the_payload() {
    // 0.33 blocks read with the 0.30 metadata: 0.33-only type indices are unknown.
    let s = subject();
    let old = scripted_030();
    let old_layout = common::producer::layout(&old.recording.streams[0]);
    let wrong = Subject {
        layout: old_layout,
        ..s
    };
    let err = decode(&wrong, &wrong.dependencies, &wrong.objects).unwrap_err();
    assert!(
        matches!(
            err,
            FormatError::UnknownTypeIndex { .. }
                | FormatError::Truncated { .. }
                | FormatError::DanglingReference { .. }
        ),
        "{err}"
    );
    // Metadata whose CBOR is not a list of types.
    let err = StreamLayout::from_cbor(b"\xa1\x61a\x01", b"\x80").unwrap_err();
    assert!(err.to_string().contains("dependencies metadata"), "{err}");
}

#[test]
fn invalid_utf8() {
    let s = subject();
    let mut deps = s.dependencies.clone();
    // The first record is a StaticString: type, u32 size, u64 id, then its text.
    assert!(deps.len() > 14);
    deps[13] = 0xFF;
    let err = decode(&s, &deps, &s.objects).unwrap_err();
    assert!(
        matches!(
            err,
            FormatError::InvalidString {
                encoding: "UTF-8",
                offset: 0,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_failed_block_leaves_the_batch_as_it_was() {
    let s = subject();
    let mut out = EventBatchBuilder::new(ColumnSet::all());
    let mut decoder = AsyncEventDecoder::new();
    let ids = BlockIds {
        stream_id: "s",
        block_id: "b",
    };
    let good = DecompressedBlock {
        dependencies: Some(s.dependencies.clone()),
        objects: s.objects.clone(),
    };
    decoder
        .decode(&s.layout, &good, ids, &s.clock, &RowFilter::all(), &mut out)
        .unwrap();
    let mut objects = s.objects.clone();
    objects.truncate(objects.len() - 3); // the last record is cut: earlier rows were appended
    let bad = DecompressedBlock {
        dependencies: Some(s.dependencies.clone()),
        objects,
    };
    assert!(
        decoder
            .decode(&s.layout, &bad, ids, &s.clock, &RowFilter::all(), &mut out)
            .is_err()
    );
    let batch = out.finish().unwrap();
    assert_eq!(batch.num_rows(), 8);
}

#[test]
fn a_defect_past_the_first_inflate_window_is_the_same_error_as_in_the_whole_buffer() {
    // A 3 MiB objects buffer, inflated 1 MiB at a time when decoded from its blob: defects at
    // its end and in its middle are reported as if it were decoded whole, offsets included,
    // and no row of the failed call is left behind.
    let rec = common::realistic::three_mib_blocks(1, 11);
    let layout = common::producer::layout(&rec.streams[0]);
    let clock = rec.converter();
    let good = DecompressedBlock::from_blob(&rec.blocks[0].payload, true).unwrap();
    let ids = BlockIds {
        stream_id: "s",
        block_id: "b",
    };
    let deps = good.dependencies.clone().unwrap();
    let n = good.objects.len();
    let mut cut = good.objects.clone();
    cut.truncate(n - 3);
    let mut unknown_type = good.objects.clone();
    unknown_type[n / 2..].fill(0xEE); // type indices far past the metadata's from there on
    for objects in [cut, unknown_type] {
        let whole = DecompressedBlock {
            dependencies: Some(deps.clone()),
            objects: objects.clone(),
        };
        let blob = BlockPayload::compress(&deps, &objects).to_cbor();
        let mut out = EventBatchBuilder::new(ColumnSet::all());
        let expected = AsyncEventDecoder::new()
            .decode(&layout, &whole, ids, &clock, &RowFilter::all(), &mut out)
            .unwrap_err();
        assert!(out.is_empty());
        let streamed = AsyncEventDecoder::new()
            .decode_blob(&layout, &blob, ids, &clock, &RowFilter::all(), &mut out)
            .unwrap_err();
        assert_eq!(streamed.to_string(), expected.to_string());
        assert!(out.is_empty(), "the failed call's rows are removed");
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, xor: u8 },
    Truncate { at: usize },
    Insert { at: usize, bytes: Vec<u8> },
}

fn apply(data: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        if data.is_empty() {
            return;
        }
        match m {
            Mutation::Flip { at, xor } => {
                let i = at % data.len();
                data[i] ^= xor.max(&1);
            }
            Mutation::Truncate { at } => data.truncate(at % data.len()),
            Mutation::Insert { at, bytes } => {
                let i = at % data.len();
                data.splice(i..i, bytes.iter().copied());
            }
        }
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(at, xor)| Mutation::Flip { at, xor }),
        1 => any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..12)).prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
    ]
}

/// Layout, objects metadata, stored blob, dependencies, objects and clock of a real block.
type Fixture = (
    StreamLayout,
    Vec<u8>,
    Vec<u8>,
    Vec<u8>,
    Vec<u8>,
    TickConverter,
);

fn fixtures() -> Vec<Fixture> {
    let mut out = Vec::new();
    for s in [scripted_033(), scripted_030()] {
        let rec = &s.recording;
        for b in &rec.blocks {
            let d = DecompressedBlock::from_blob(&b.payload, true).unwrap();
            let st = rec.stream(b.stream_id);
            out.push((
                common::producer::layout(st),
                st.objects_metadata.clone(),
                b.payload.clone(),
                d.dependencies.unwrap(),
                d.objects,
                rec.converter(),
            ));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Random damage anywhere (stored blob, either decompressed buffer, metadata) gives a
    /// result, never a panic.
    #[test]
    fn mutated_real_blocks_never_panic(
        pick in any::<usize>(),
        target in 0..4usize,
        mutations in prop::collection::vec(mutation(), 1..6),
        columns in any::<u16>(),
    ) {
        let fixtures = fixtures();
        let (layout, objects_meta, blob, deps, objects, clock) = &fixtures[pick % fixtures.len()];
        let (mut blob, mut deps, mut objects, mut meta) = (blob.clone(), deps.clone(), objects.clone(), objects_meta.clone());
        match target {
            0 => apply(&mut blob, &mutations),
            1 => apply(&mut deps, &mutations),
            2 => apply(&mut objects, &mutations),
            _ => apply(&mut meta, &mutations),
        }
        let columns = (0..13).filter(|i| columns & (1 << i) != 0).collect::<Vec<usize>>();
        let columns = ColumnSet::from_projection(Some(&columns));
        let block = if target == 0 {
            match DecompressedBlock::from_blob(&blob, true) {
                Ok(b) => b,
                Err(_) => return Ok(()),
            }
        } else {
            DecompressedBlock { dependencies: Some(deps), objects }
        };
        let layout = if target == 3 {
            // Recompile the damaged metadata; an error there is fine too.
            match StreamLayout::from_cbor(&[0x80], &meta) {
                Ok(l) => l,
                Err(_) => return Ok(()),
            }
        } else {
            layout.clone()
        };
        let mut out = EventBatchBuilder::new(columns);
        let ids = BlockIds { stream_id: "s", block_id: "b" };
        let before = out.len();
        match AsyncEventDecoder::new().decode(&layout, &block, ids, clock, &RowFilter::all(), &mut out) {
            Ok(summary) => prop_assert_eq!(out.len(), before + summary.rows),
            // Damage is reported as damage (never as an internal or resource error), at an offset.
            Err(e) => prop_assert!(e.is_corrupt_data(), "{e}"),
        }
        let batch = out.finish();
        prop_assert!(batch.is_ok());
    }

    /// Recompressed damage reaches the decoder through the whole blob path.
    #[test]
    fn damaged_buffers_behind_valid_frames_never_panic(
        pick in any::<usize>(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let fixtures = fixtures();
        let (layout, _, _, deps, objects, clock) = &fixtures[pick % fixtures.len()];
        let mut objects = objects.clone();
        apply(&mut objects, &mutations);
        let blob = BlockPayload { dependencies: compress_frame(deps), objects: compress_frame(&objects) }.to_cbor();
        let block = DecompressedBlock::from_blob(&blob, true).unwrap();
        let mut out = EventBatchBuilder::new(ColumnSet::all());
        let ids = BlockIds { stream_id: "s", block_id: "b" };
        let _ = AsyncEventDecoder::new().decode(layout, &block, ids, clock, &RowFilter::all(), &mut out);
        prop_assert!(out.finish().is_ok());
    }
}
