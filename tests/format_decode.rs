//! The decoder against real producer data: blocks written by micromegas-tracing 0.33 and 0.30,
//! and a real multi-thread tokio workload, checked field by field against exact expectations and
//! against micromegas-transit's own generic parser.

mod common;

use common::reference::{RefEvent, reference_events, reference_thread_events};
use common::scripted::{Scripted, scripted_030, scripted_033};
use common::workload::{self, record_workload};
use common::{Row, expected_hash, producer::Recording, rows};
use datafusion_async_events::format::{
    AsyncEventDecoder, BlockIds, Column, ColumnSet, DecompressedBlock, EventBatchBuilder,
    EventType, RowFilter,
};
use serial_test::serial;
use std::collections::{BTreeMap, HashMap};

fn expected_rows(s: &Scripted) -> Vec<Row> {
    let start = s
        .recording
        .process
        .start_time
        .timestamp_nanos_opt()
        .unwrap();
    let stream_id = s.recording.streams[0].stream_id.to_string();
    s.expected
        .iter()
        .map(|e| Row {
            stream_id: stream_id.clone(),
            block_id: s.recording.blocks[e.block].block_id.to_string(),
            time: start + e.ticks,
            event_type: e.event_type.into(),
            span_id: e.span_id,
            parent_span_id: e.parent_span_id,
            depth: e.depth,
            hash: expected_hash(e.name, e.filename, e.target, e.line),
            name: e.name.into(),
            filename: e.filename.into(),
            target: e.target.into(),
            line: e.line,
            properties: e
                .properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
        .collect()
}

#[test]
fn every_033_async_event_type_decodes_exactly() {
    let s = scripted_033();
    let got = rows(&s.recording.decode(ColumnSet::all(), &RowFilter::all()));
    assert_eq!(got, expected_rows(&s));
}

#[test]
fn blocks_of_a_030_producer_decode_exactly() {
    let s = scripted_030();
    let layout = common::producer::layout(&s.recording.streams[0]);
    assert_eq!(
        layout.async_event_types().len(),
        4,
        "0.30 has four async types"
    );
    let got = rows(&s.recording.decode(ColumnSet::all(), &RowFilter::all()));
    assert_eq!(got, expected_rows(&s));
}

#[test]
fn metadata_declares_async_types_at_their_indices() {
    let s = scripted_033();
    let layout = common::producer::layout(&s.recording.streams[0]);
    let types: Vec<_> = layout
        .async_event_types()
        .into_iter()
        .map(|(i, name, t)| (i, name.to_owned(), t))
        .collect();
    use EventType::{Begin, End};
    let expect = [
        (4, "BeginAsyncSpanEvent", Begin),
        (5, "EndAsyncSpanEvent", End),
        (6, "BeginAsyncNamedSpanEvent", Begin),
        (7, "EndAsyncNamedSpanEvent", End),
        (10, "BeginAsyncDynNamedSpanEvent", Begin),
        (11, "EndAsyncDynNamedSpanEvent", End),
        (14, "TaggedEndAsyncSpanEvent", End),
        (15, "TaggedEndAsyncNamedSpanEvent", End),
    ];
    let expect: Vec<_> = expect
        .iter()
        .map(|(i, n, t)| (*i, n.to_string(), *t))
        .collect();
    assert_eq!(types, expect);
}

#[test]
fn projection_builds_only_the_requested_columns_without_strings() {
    let s = scripted_033();
    let columns = ColumnSet::none().with(Column::Time).with(Column::SpanId);
    let out = EventBatchBuilder::new(columns);
    assert!(!AsyncEventDecoder::needs_dependencies(
        &out,
        &RowFilter::all()
    ));
    // The dependencies buffer is not even decompressed: a corrupt one is never noticed.
    let mut rec = s.recording.clone();
    let mut payload =
        datafusion_async_events::format::BlockPayload::from_cbor(&rec.blocks[0].payload).unwrap();
    payload.dependencies = b"not an lz4 frame".to_vec();
    rec.blocks[0].payload = payload.to_cbor();
    let batches = rec.decode(columns, &RowFilter::all());
    assert_eq!(batches[0].num_columns(), 2);
    assert_eq!(batches[0].schema().field(0).name(), "time");
    let got: Vec<(i64, i64)> = rows(&batches).iter().map(|r| (r.time, r.span_id)).collect();
    let want: Vec<(i64, i64)> = expected_rows(&s)
        .iter()
        .map(|r| (r.time, r.span_id))
        .collect();
    assert_eq!(got, want);

    // No column at all (count(*)): only row counts.
    let counts: usize = s
        .recording
        .decode(ColumnSet::none(), &RowFilter::all())
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(counts, s.expected.len());
}

#[test]
fn row_filters_keep_exactly_the_matching_rows() {
    let s = scripted_033();
    let all = expected_rows(&s);
    let start = s
        .recording
        .process
        .start_time
        .timestamp_nanos_opt()
        .unwrap();
    type Case = (RowFilter, Box<dyn Fn(&Row) -> bool>);
    let cases: Vec<Case> = vec![
        (
            RowFilter {
                event_type: Some(EventType::End),
                ..RowFilter::all()
            },
            Box::new(|r: &Row| r.event_type == "end"),
        ),
        (
            RowFilter {
                depth: Some((1, 1)),
                ..RowFilter::all()
            },
            Box::new(|r: &Row| r.depth == 1),
        ),
        (
            RowFilter {
                time: Some((start + 40, start + 1010)),
                ..RowFilter::all()
            },
            Box::new(move |r: &Row| r.time >= start + 40 && r.time <= start + 1010),
        ),
        (
            RowFilter {
                span_ids: Some(vec![3, 5]),
                ..RowFilter::all()
            },
            Box::new(|r: &Row| r.span_id == 3 || r.span_id == 5),
        ),
        (
            RowFilter {
                parent_span_ids: Some(vec![0]),
                ..RowFilter::all()
            },
            Box::new(|r: &Row| r.parent_span_id == 0),
        ),
        (
            RowFilter {
                names: Some(vec!["dyn_named_é".into(), "nope".into()]),
                ..RowFilter::all()
            },
            Box::new(|r: &Row| r.name == "dyn_named_é"),
        ),
        (
            RowFilter {
                targets: Some(vec!["scripted".into()]),
                event_type: Some(EventType::Begin),
                ..RowFilter::all()
            },
            Box::new(|r: &Row| r.target == "scripted" && r.event_type == "begin"),
        ),
        (
            RowFilter {
                span_ids: Some(vec![]),
                ..RowFilter::all()
            },
            Box::new(|_: &Row| false),
        ),
    ];
    for (filter, keep) in cases {
        let got = rows(&s.recording.decode(ColumnSet::all(), &filter));
        let want: Vec<Row> = all.iter().filter(|r| keep(r)).cloned().collect();
        assert!(
            !want.is_empty() || filter.matches_nothing(),
            "{filter:?} selects something"
        );
        assert_eq!(got, want, "{filter:?}");
    }
}

fn ours_as_reference(rec: &Recording) -> Vec<Vec<RefEvent>> {
    let clock = rec.converter();
    rec.blocks
        .iter()
        .map(|b| {
            let layout = common::producer::layout(rec.stream(b.stream_id));
            let block = DecompressedBlock::from_blob(&b.payload, true).unwrap();
            let mut out = EventBatchBuilder::new(ColumnSet::all());
            let mut decoder = AsyncEventDecoder::new();
            let (sid, bid) = (b.stream_id.to_string(), b.block_id.to_string());
            let summary = decoder
                .decode(
                    &layout,
                    &block,
                    BlockIds {
                        stream_id: &sid,
                        block_id: &bid,
                    },
                    &clock,
                    &RowFilter::all(),
                    &mut out,
                )
                .unwrap();
            assert_eq!(summary.objects as i32, b.nb_objects);
            let batch = out.finish().unwrap();
            let got = rows(&[batch]);
            assert!(got.iter().all(|r| r.stream_id == sid && r.block_id == bid));
            got.into_iter()
                .map(|r| {
                    assert_eq!(
                        r.hash,
                        expected_hash(&r.name, &r.filename, &r.target, r.line)
                    );
                    RefEvent {
                        event_type: r.event_type,
                        span_id: r.span_id,
                        parent_span_id: r.parent_span_id,
                        depth: r.depth,
                        ticks: 0,
                        name: r.name,
                        filename: r.filename,
                        target: r.target,
                        line: r.line,
                        properties: r.properties,
                    }
                })
                .collect()
        })
        .collect()
}

/// Field by field, block by block: our decoder sees what micromegas-transit sees.
fn assert_same_as_transit(rec: &Recording) -> usize {
    let ours = ours_as_reference(rec);
    let clock = rec.converter();
    let mut total = 0;
    for (block, ours) in rec.blocks.iter().zip(ours) {
        let theirs: Vec<RefEvent> = reference_events(rec.stream(block.stream_id), block)
            .into_iter()
            .map(|e| RefEvent { ticks: 0, ..e })
            .collect();
        assert_eq!(ours, theirs, "block {}", block.block_id);
        total += theirs.len();
    }
    // Times: ours equal the documented conversion of the transit tick values.
    let decoded = rows(&rec.decode(ColumnSet::none().with(Column::Time), &RowFilter::all()));
    let reference_times: Vec<i64> = rec
        .blocks
        .iter()
        .flat_map(|b| reference_events(rec.stream(b.stream_id), b))
        .map(|e| clock.ticks_to_ns(e.ticks))
        .collect();
    let start = rec.process.start_time.timestamp_nanos_opt().unwrap();
    let freq = clock.frequency() as f64;
    let independent: Vec<i64> = rec
        .blocks
        .iter()
        .flat_map(|b| reference_events(rec.stream(b.stream_id), b))
        .map(|e| {
            start + (((e.ticks - rec.process.start_ticks) as f64) * (1e9 / freq)).round() as i64
        })
        .collect();
    assert_eq!(reference_times, independent);
    assert_eq!(
        decoded.iter().map(|r| r.time).collect::<Vec<_>>(),
        independent
    );
    total
}

#[test]
fn scripted_blocks_match_micromegas_transit() {
    assert_eq!(assert_same_as_transit(&scripted_033().recording), 11);
    assert_eq!(assert_same_as_transit(&scripted_030().recording), 4);
}

#[test]
#[serial]
fn blocks_decoded_in_parts_give_the_rows_of_whole_blocks() {
    // Exact expectations: every part is at most its size, together they are the block.
    let s = scripted_033();
    let expected = expected_rows(&s);
    for max_rows in [1, 2, 3, 5, 1_000] {
        let parts = s
            .recording
            .decode_in_parts(ColumnSet::all(), &RowFilter::all(), max_rows);
        assert!(parts.iter().all(|b| b.num_rows() <= max_rows));
        assert_eq!(rows(&parts), expected, "parts of {max_rows} rows");
    }
    // A real tokio workload: the same rows as whole blocks, whatever the part size, for all
    // the columns and for a projection without strings (no dependencies inflated).
    let rec = record_workload(4);
    for columns in [
        ColumnSet::all(),
        ColumnSet::none().with(Column::Time).with(Column::SpanId),
    ] {
        let whole = rec.decode(columns, &RowFilter::all());
        let n: usize = whole.iter().map(|b| b.num_rows()).sum();
        assert!(n > 100, "{n} rows");
        for max_rows in [1, 7, 64] {
            let parts = rec.decode_in_parts(columns, &RowFilter::all(), max_rows);
            assert!(parts.len() * max_rows >= n);
            let (a, b) = (concat(&whole), concat(&parts));
            assert_eq!(a, b, "{max_rows} rows per part");
        }
    }
}

#[test]
fn a_block_larger_than_the_inflate_window_streams_to_the_same_rows() {
    // 3 MiB thread buffers: the objects buffer is inflated a 1 MiB window at a time, records
    // cut at a window's end are completed from the next one.
    let rec = common::realistic::three_mib_blocks(2, 7);
    for b in &rec.blocks {
        let block = DecompressedBlock::from_blob(&b.payload, false).unwrap();
        assert!(
            block.objects.len() > 2 << 20,
            "{} bytes",
            block.objects.len()
        );
    }
    // The whole buffers (decoded at once, checked against micromegas-transit by the tests
    // above) are the reference.
    let whole = concat(&rec.decode(ColumnSet::all(), &RowFilter::all()));
    for max_rows in [usize::MAX, 8_192, 777] {
        let streamed = rec.decode_in_parts(ColumnSet::all(), &RowFilter::all(), max_rows);
        assert_eq!(concat(&streamed), whole, "{max_rows} rows per part");
    }
}

#[test]
fn thread_events_of_a_block_larger_than_the_inflate_window_are_micromegas_transits() {
    // The thread events of 3 MiB buffers, walked a 1 MiB window at a time, against
    // micromegas-transit's own reading of the whole buffer: ids, times, scopes, properties.
    let rec = common::realistic::three_mib_blocks(2, 5);
    let clock = rec.converter();
    let mut decoder = AsyncEventDecoder::new();
    for block in &rec.blocks {
        let stream = rec.stream(block.stream_id);
        let layout = common::producer::layout(stream);
        let offset = block.record.object_offset;
        let mut got = Vec::new();
        let summary = decoder
            .decode_thread_blob(&layout, &block.payload, offset, &clock, |e| {
                let mut properties: Vec<(String, String)> = e
                    .properties()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                properties.sort();
                got.push((
                    e.id,
                    e.event_type == EventType::Begin,
                    e.time,
                    (
                        e.name().to_owned(),
                        e.filename().to_owned(),
                        e.target().to_owned(),
                    ),
                    e.line,
                    properties,
                ));
                Ok(())
            })
            .unwrap();
        let want: Vec<_> = reference_thread_events(stream, block)
            .into_iter()
            .map(|r| {
                (
                    offset + r.index,
                    r.begin,
                    clock.ticks_to_ns(r.ticks),
                    (r.name, r.filename, r.target),
                    r.line,
                    r.properties,
                )
            })
            .collect();
        assert!(want.len() > 10_000, "{} thread events", want.len());
        assert_eq!(summary.events, want.len());
        assert_eq!(got, want);
    }
}

/// The rows of `batches` as one batch (dictionaries compare by value).
fn concat(
    batches: &[datafusion::arrow::array::RecordBatch],
) -> datafusion::arrow::array::RecordBatch {
    let schema = batches[0].schema();
    datafusion::arrow::compute::concat_batches(&schema, batches).unwrap()
}

#[test]
#[serial]
fn tokio_workload_decodes_like_micromegas_transit() {
    let tops = 12;
    let rec = record_workload(tops);
    assert!(rec.blocks.len() > 10, "1 KiB buffers give many blocks");
    let events = assert_same_as_transit(&rec);
    assert_eq!(events, workload::emitted_events(tops));
}

#[test]
#[serial]
fn tokio_workload_has_the_structure_the_program_created() {
    let tops = 4u32;
    let rec = record_workload(tops);
    let all = rows(&rec.decode(ColumnSet::all(), &RowFilter::all()));
    // Sync spans are thread events: never rows.
    assert!(all.iter().all(|r| r.name != "sync_work"));
    let begins: HashMap<i64, &Row> = all
        .iter()
        .filter(|r| r.event_type == "begin")
        .map(|r| (r.span_id, r))
        .collect();
    let ends: HashMap<i64, &Row> = all
        .iter()
        .filter(|r| r.event_type == "end")
        .map(|r| (r.span_id, r))
        .collect();
    assert_eq!(begins.len(), workload::spans(tops), "one begin per span");
    assert_eq!(
        all.iter().filter(|r| r.event_type == "begin").count(),
        begins.len(),
        "span ids are unique"
    );
    // Every end has its begin; begin and end agree on everything but time and properties.
    for (id, e) in &ends {
        let b = begins[id];
        assert_eq!(
            (
                b.parent_span_id,
                b.depth,
                &b.name,
                &b.filename,
                &b.target,
                b.line
            ),
            (
                e.parent_span_id,
                e.depth,
                &e.name,
                &e.filename,
                &e.target,
                e.line
            )
        );
        assert!(e.time >= b.time, "span {id} ends before it begins");
    }
    let unfinished: Vec<_> = begins
        .values()
        .filter(|b| !ends.contains_key(&b.span_id))
        .collect();
    assert_eq!(
        unfinished.len(),
        tops as usize * workload::UNFINISHED_PER_TOP
    );
    assert!(unfinished.iter().all(|b| b.name == workload::leaf_name()));

    let by_name = |name: &str| -> Vec<&Row> {
        let mut v: Vec<&Row> = begins
            .values()
            .copied()
            .filter(|r| r.name == name)
            .collect();
        v.sort_by_key(|r| r.span_id);
        v
    };
    let tops_rows = by_name(workload::top_name());
    assert_eq!(tops_rows.len(), tops as usize);
    for t in &tops_rows {
        assert_eq!(
            (t.depth, t.parent_span_id, t.line),
            (0, 0, workload::TOP_LINE)
        );
        assert_eq!(
            t.filename,
            workload::file(),
            "0.33 keeps relative paths as they are"
        );
        assert_eq!(t.target, workload::target());
    }
    let top_ids: Vec<i64> = tops_rows.iter().map(|r| r.span_id).collect();
    for m in by_name(workload::middle_name()) {
        assert_eq!(m.depth, 1);
        assert!(top_ids.contains(&m.parent_span_id));
        assert_eq!(m.line, workload::MIDDLE_LINE);
    }
    // Parents of leaves: middle (depth 2), the dyn span (depth 2), or top (depth 1, for leaves
    // created in top's context: instrument_named!, spawn_with_context, tokio::spawn(leaf(..)),
    // the dropped one), or none (created inside a plain spawned task).
    let mut leaf_parents: BTreeMap<(String, u32), usize> = BTreeMap::new();
    for l in by_name(workload::leaf_name()) {
        assert_eq!(l.line, workload::LEAF_LINE);
        let parent_name = if l.parent_span_id == 0 {
            "<root>".to_string()
        } else {
            let p = begins[&l.parent_span_id];
            if p.name == workload::handed_name() {
                // Created at the root, polled inside `wrapper`: the child is deeper than its
                // parent's depth + 1.
                assert_eq!((p.depth, l.depth), (0, 2));
            } else {
                assert_eq!(l.depth, p.depth + 1, "leaf created in its parent's context");
            }
            if p.name.starts_with("dyn_") {
                "dyn".into()
            } else {
                p.name.clone()
            }
        };
        *leaf_parents.entry((parent_name, l.depth)).or_default() += 1;
    }
    let n = tops as usize;
    let want: BTreeMap<(String, u32), usize> = [
        (("<root>".to_string(), 0), n),
        ((workload::middle_name().to_string(), 2), 2 * n),
        (("dyn".to_string(), 2), n),
        ((workload::top_name().to_string(), 1), 5 * n),
        ((workload::handed_name().to_string(), 2), n),
    ]
    .into_iter()
    .collect();
    assert_eq!(leaf_parents, want);
    for h in by_name(workload::handed_name()) {
        assert_eq!(
            (h.depth, h.parent_span_id, h.line),
            (0, 0, workload::HANDED_LINE)
        );
    }
    for w in by_name(workload::wrapper_name()) {
        assert_eq!((w.depth, w.parent_span_id), (0, 0));
    }
    // Named, dynamically named and tagged spans.
    assert_eq!(by_name("named_leaf").len(), n);
    assert_eq!(by_name("named_tagged").len(), n);
    assert_eq!(by_name("tagged_work").len(), n);
    for i in 0..tops {
        let d = by_name(&format!("dyn_{i}"));
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].depth, d[0].target.as_str()), (1, workload::target()));
    }
    let tagged_ends: Vec<&Row> = ends
        .values()
        .copied()
        .filter(|r| !r.properties.is_empty())
        .collect();
    assert_eq!(tagged_ends.len(), 2 * n);
    for e in tagged_ends {
        match e.name.as_str() {
            "tagged_work" => assert_eq!(e.properties, vec![("rows".to_string(), "3".to_string())]),
            "named_tagged" => assert_eq!(e.properties, vec![("kind".to_string(), "x".to_string())]),
            other => panic!("unexpected tagged end {other}"),
        }
    }
    // Durations: a leaf sleeping 2 ms lasts at least 2 ms; all times are after the start.
    let start = rec.process.start_time.timestamp_nanos_opt().unwrap();
    assert!(all.iter().all(|r| r.time >= start));
    let long_leaves = by_name(workload::leaf_name())
        .into_iter()
        .filter(|l| ends.contains_key(&l.span_id))
        .filter(|l| ends[&l.span_id].time - l.time >= 2_000_000)
        .count();
    assert!(long_leaves >= n, "the 2 ms leaves last 2 ms");
    // Begin and end of some spans ran on different worker threads (streams).
    let streams: std::collections::HashSet<&str> =
        all.iter().map(|r| r.stream_id.as_str()).collect();
    assert!(streams.len() >= 2, "two workers recorded events");
}
