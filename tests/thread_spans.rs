//! `thread_spans` and `view_instance('thread_spans', …)`: the scopes of threads recorded with the
//! real micromegas-tracing (nested `#[span_fn]`, `span_scope!` with properties, named and
//! dynamically named scopes, 1 KiB buffers so scopes cross block boundaries, a thread whose
//! recording stops inside scopes), compared on both lakes with a pairing computed here from
//! micromegas-transit's own reading of the blocks.

#[macro_use]
mod common;

use common::lakes::{Backend, open, store};
use common::producer::Recording;
use common::reference::reference_thread_events;
use common::sql::{context, query, query_err};
use common::workload::record;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type, TimeUnit};
use datafusion_async_events::provider::process_clock;
use std::collections::BTreeMap;

const CALLS: u64 = 40;
const MODULE: &str = common::thread_workload::MODULE;

fn recording() -> &'static Recording {
    static REC: std::sync::OnceLock<Recording> = std::sync::OnceLock::new();
    REC.get_or_init(|| {
        std::thread::spawn(|| record(|| common::thread_workload::program(CALLS)))
            .join()
            .unwrap()
    })
}

/// One span row as compared: id, parent, depth, name, target, filename, line, begin, end,
/// finished, properties (sorted `k=v`).
type SpanKey = (
    i64,
    i64,
    u32,
    String,
    String,
    String,
    u32,
    Option<i64>,
    Option<i64>,
    Option<bool>,
    Vec<String>,
);

/// The spans of each thread stream, paired here from micromegas-transit's reading: a stack per
/// stream over its blocks in order (the recording starts with each thread, so every end has
/// its begin); ids are `object_offset` plus the index of the begin event in its block.
fn expected(
    rec: &Recording,
    clock: &datafusion_async_events::format::TickConverter,
) -> BTreeMap<String, Vec<SpanKey>> {
    let mut out = BTreeMap::new();
    for stream in &rec.streams {
        let mut blocks: Vec<_> = rec
            .blocks
            .iter()
            .filter(|b| b.stream_id == stream.stream_id)
            .collect();
        blocks.sort_by_key(|b| b.begin_ticks);
        let mut stack: Vec<(i64, String, String, String, u32, i64)> = Vec::new();
        let mut spans = Vec::new();
        for block in blocks {
            for e in reference_thread_events(stream, block) {
                let id = block.object_offset + e.index;
                let time = clock.ticks_to_ns(e.ticks);
                if e.begin {
                    stack.push((id, e.name, e.target, e.filename, e.line, time));
                    continue;
                }
                let (id, name, target, filename, line, begin) = stack.pop().unwrap();
                assert_eq!(name, e.name, "the workload's scopes nest");
                let parent = stack.last().map_or(-1, |s| s.0);
                let properties = e
                    .properties
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                spans.push((
                    id,
                    parent,
                    stack.len() as u32 + 1,
                    name,
                    target,
                    filename,
                    line,
                    Some(begin),
                    Some(time),
                    Some(true),
                    properties,
                ));
            }
        }
        while let Some((id, name, target, filename, line, begin)) = stack.pop() {
            let parent = stack.last().map_or(-1, |s| s.0);
            spans.push((
                id,
                parent,
                stack.len() as u32 + 1,
                name,
                target,
                filename,
                line,
                Some(begin),
                None,
                Some(false),
                Vec::new(),
            ));
        }
        spans.sort();
        out.insert(stream.stream_id.to_string(), spans);
    }
    out
}

fn strings(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let col = cast(batch.column_by_name(name).unwrap(), &DataType::Utf8).unwrap();
    let col = col.as_string::<i32>();
    (0..col.len())
        .map(|i| col.is_valid(i).then(|| col.value(i).to_owned()))
        .collect()
}

fn ints(batch: &RecordBatch, name: &str) -> Vec<Option<i64>> {
    let col = cast(batch.column_by_name(name).unwrap(), &DataType::Int64).unwrap();
    let col = col.as_primitive::<Int64Type>();
    (0..col.len())
        .map(|i| col.is_valid(i).then(|| col.value(i)))
        .collect()
}

/// The rows of `thread_spans`, by stream, below the root.
fn actual(batches: &[RecordBatch]) -> BTreeMap<String, Vec<SpanKey>> {
    let mut out: BTreeMap<String, Vec<SpanKey>> = BTreeMap::new();
    for b in batches {
        let (ids, parents, depths) = (ints(b, "id"), ints(b, "parent"), ints(b, "depth"));
        let (names, targets, files) = (
            strings(b, "name"),
            strings(b, "target"),
            strings(b, "filename"),
        );
        let (lines, begins, ends) = (ints(b, "line"), ints(b, "begin"), ints(b, "end"));
        let streams = strings(b, "stream_id");
        let props = strings(b, "props");
        let finished = b.column_by_name("finished").unwrap().as_boolean();
        for i in 0..b.num_rows() {
            let properties: Vec<String> = match props[i].as_deref() {
                None | Some("{}") => Vec::new(),
                Some(json) => {
                    let map: BTreeMap<String, String> = serde_json::from_str(json).unwrap();
                    map.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
                }
            };
            out.entry(streams[i].clone().unwrap()).or_default().push((
                ids[i].unwrap(),
                parents[i].unwrap(),
                depths[i].unwrap() as u32,
                names[i].clone().unwrap(),
                targets[i].clone().unwrap(),
                files[i].clone().unwrap(),
                lines[i].unwrap() as u32,
                begins[i],
                ends[i],
                finished.is_valid(i).then(|| finished.value(i)),
                properties,
            ));
        }
    }
    for spans in out.values_mut() {
        spans.sort();
    }
    out
}

const SELECT: &str = "SELECT id, parent, depth, name, target, filename, line, \
    CAST(\"begin\" AS BIGINT) AS \"begin\", CAST(\"end\" AS BIGINT) AS \"end\", finished, \
    stream_id, jsonb_format_json(properties) AS props";

on_both! {
    async fn thread_spans_equal_an_independent_pairing(backend: Backend) {
        let rec = recording();
        let t = open(backend).await;
        store(&t.lake, rec).await;
        let pid = rec.process.process_id;
        let process = t.lake.process(pid).await.unwrap();
        let clock = process_clock(&t.lake, &process).await.unwrap();
        let want = expected(rec, &clock);
        let ctx = context(&t.lake);
        let got = actual(&query(&ctx, &format!("{SELECT} FROM thread_spans('{pid}') WHERE depth > 0")).await);
        assert_eq!(got.len(), 3, "one entry per worker thread");
        let mut compared = 0;
        for (stream, spans) in &want {
            assert_eq!(got.get(stream), Some(spans), "stream {stream}");
            compared += spans.len();
        }
        // Per thread: outer, middle, tagged, 3 × inner, named_scope, dyn_* per call.
        assert_eq!(compared, 3 * CALLS as usize * 8 + 2, "spans compared");

        // The workload's own shape, without the reference: depths, names, the open scopes.
        let outer_name = format!("{MODULE}::outer");
        let batches = query(&ctx, &format!(
            "SELECT name, min(depth) AS lo, max(depth) AS hi, count(*) AS n, \
             count(*) FILTER (WHERE finished = false) AS open \
             FROM thread_spans('{pid}') GROUP BY name ORDER BY name")).await;
        let b = &batches[0];
        let names = strings(b, "name");
        let row = |n: &str| names.iter().position(|x| x.as_deref() == Some(n)).unwrap_or_else(|| panic!("{n} in {names:?}"));
        let (lo, hi, n, open) = (ints(b, "lo"), ints(b, "hi"), ints(b, "n"), ints(b, "open"));
        let o = row(&outer_name);
        assert_eq!((lo[o], hi[o], n[o], open[o]), (Some(1), Some(1), Some(3 * CALLS as i64), Some(0)));
        let inner = row(&format!("{MODULE}::inner"));
        assert_eq!((lo[inner], hi[inner], n[inner]), (Some(4), Some(4), Some(9 * CALLS as i64)));
        let held = row("held");
        assert_eq!((lo[held], n[held], open[held]), (Some(2), Some(1), Some(1)));

        // Exactly the blocks that hold thread events were read, each once.
        let plan = query(&ctx, &format!("EXPLAIN ANALYZE SELECT count(*) FROM thread_spans('{pid}')")).await;
        let text = common::sql::lines(&plan).join("\n");
        let blocks = rec.blocks.len();
        assert!(text.contains(&format!("blocks_read={blocks}")), "{text}");
        assert!(text.contains("unmatched_ends_dropped=0"), "{text}");
    }

    async fn view_instance_has_micromegas_columns_and_values(backend: Backend) {
        let rec = recording();
        let t = open(backend).await;
        store(&t.lake, rec).await;
        let pid = rec.process.process_id;
        let ctx = context(&t.lake);
        for stream in &rec.streams {
            let sid = stream.stream_id;
            let batches = query(&ctx, &format!(
                "SELECT * FROM view_instance('thread_spans', '{sid}') ORDER BY id")).await;
            let schema = batches[0].schema();
            let fields: Vec<(String, DataType, bool)> = schema
                .fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable()))
                .collect();
            let dict = |t| DataType::Dictionary(Box::new(DataType::Int32), Box::new(t));
            let ts = DataType::Timestamp(TimeUnit::Nanosecond, Some("+00:00".into()));
            // micromegas-analytics 0.33 span_table.rs get_spans_schema().
            assert_eq!(fields, vec![
                ("id".into(), DataType::Int64, false),
                ("parent".into(), DataType::Int64, false),
                ("depth".into(), DataType::UInt32, false),
                ("hash".into(), DataType::UInt32, false),
                ("begin".into(), ts.clone(), false),
                ("end".into(), ts, false),
                ("duration".into(), DataType::Int64, false),
                ("name".into(), dict(DataType::Utf8), false),
                ("target".into(), dict(DataType::Utf8), false),
                ("filename".into(), dict(DataType::Utf8), false),
                ("line".into(), DataType::UInt32, false),
                ("properties".into(), dict(DataType::Binary), false),
            ]);
            let b = datafusion::arrow::compute::concat_batches(&schema, &batches).unwrap();
            // The root: id -1, depth 0, named after the thread as micromegas names it.
            let (ids, depths) = (ints(&b, "id"), ints(&b, "depth"));
            assert_eq!((ids[0], depths[0]), (Some(-1), Some(0)));
            let root_name = strings(&b, "name")[0].clone().unwrap();
            let thread = stream.properties.iter().find(|(k, _)| k == "thread-name").unwrap().1.clone();
            let thread_id = stream.properties.iter().find(|(k, _)| k == "thread-id").unwrap().1.clone();
            assert_eq!(root_name, format!("{thread}-{thread_id}"));
            let hashes = ints(&b, "hash");
            assert_eq!(hashes[0], Some(common::expected_hash(&root_name, "", "", 0) as i64));
            // The same spans as thread_spans, open ones ending with the chain, as micromegas's.
            let same = query(&ctx, &format!(
                "WITH r AS (SELECT \"end\" AS chain_end FROM view_instance('thread_spans', '{sid}') WHERE id = -1) \
                 SELECT count(*) AS n FROM view_instance('thread_spans', '{sid}') v \
                 CROSS JOIN r JOIN thread_spans('{pid}') t ON v.id = t.id AND t.stream_id = '{sid}' \
                 WHERE v.parent = t.parent AND v.depth = t.depth AND v.hash = t.hash \
                 AND v.name = t.name AND v.\"begin\" = t.\"begin\" \
                 AND v.\"end\" = coalesce(t.\"end\", r.chain_end) \
                 AND v.duration = CAST(v.\"end\" AS BIGINT) - CAST(v.\"begin\" AS BIGINT)")).await;
            assert_eq!(ints(&same[0], "n")[0], Some(b.num_rows() as i64), "stream {sid}");
            assert!(b.num_rows() > 100);
            let ends = query(&ctx, &format!(
                "SELECT CAST(max(\"end\") AS BIGINT) AS hi FROM view_instance('thread_spans', '{sid}')")).await;
            assert_eq!(ints(&ends[0], "hi")[0], ints(&b, "end")[0], "the root ends last");
            let hashes_ok = query(&ctx, &format!(
                "SELECT name, filename, target, line, hash FROM view_instance('thread_spans', '{sid}') WHERE id <> -1")).await;
            for hb in &hashes_ok {
                let (n, f, tg, l, h) = (strings(hb, "name"), strings(hb, "filename"), strings(hb, "target"), ints(hb, "line"), ints(hb, "hash"));
                for i in 0..hb.num_rows() {
                    let want = common::expected_hash(n[i].as_deref().unwrap(), f[i].as_deref().unwrap(), tg[i].as_deref().unwrap(), l[i].unwrap() as u32);
                    assert_eq!(h[i], Some(want as i64));
                }
            }
        }
    }

    async fn name_target_and_depth_filters_leave_spans_unbuilt_with_the_same_answer(backend: Backend) {
        let rec = recording();
        let t = open(backend).await;
        store(&t.lake, rec).await;
        let pid = rec.process.process_id;
        let ctx = context(&t.lake);
        // The reference: every span, in a plain memory table, filtered by DataFusion alone.
        let all = query(&ctx, &format!("SELECT * FROM thread_spans('{pid}')")).await;
        let table = datafusion::datasource::MemTable::try_new(all[0].schema(), vec![all]).unwrap();
        ctx.register_table("all_spans", std::sync::Arc::new(table)).unwrap();
        let target = strings(&query(&ctx, "SELECT target FROM all_spans WHERE depth > 1 LIMIT 1").await[0], "target")[0].clone().unwrap();
        let filters = [
            format!("name = '{MODULE}::inner'"),
            format!("name IN ('{MODULE}::outer', 'held')"),
            "depth = 0".to_string(),
            "depth BETWEEN 2 AND 3".to_string(),
            format!("target = '{target}' AND depth >= 2"),
            "name = 'no such scope'".to_string(),
            format!("depth > 1 AND name <> '{MODULE}::inner'"),
            "name LIKE '%inner%'".to_string(),
        ];
        for f in &filters {
            let cols = "stream_id, id, depth, name, target";
            let got = query(&ctx, &format!("SELECT {cols} FROM thread_spans('{pid}') WHERE {f} ORDER BY stream_id, id")).await;
            let want = query(&ctx, &format!("SELECT {cols} FROM all_spans WHERE {f} ORDER BY stream_id, id")).await;
            assert_eq!(common::sql::lines(&got), common::sql::lines(&want), "{f}");
        }
        // A name filter builds only the spans it keeps: the others are counted, not built.
        let inner = format!("{MODULE}::inner");
        let plan = query(&ctx, &format!("EXPLAIN ANALYZE SELECT count(*) FROM thread_spans('{pid}') WHERE name = '{inner}'")).await;
        let text = common::sql::lines(&plan).join("\n");
        let kept = 3 * 3 * CALLS as usize;
        assert!(text.contains(&format!("spans={kept}")), "{text}");
        let total = query(&ctx, "SELECT count(*) AS n FROM all_spans").await;
        let total = ints(&total[0], "n")[0].unwrap() as usize;
        assert!(text.contains(&format!("rows_filtered={}", total - kept)), "{text}");
    }

    async fn a_range_cuts_spans_and_a_stream_filter_narrows_streams(backend: Backend) {
        let rec = recording();
        let t = open(backend).await;
        store(&t.lake, rec).await;
        let pid = rec.process.process_id;
        let ctx = context(&t.lake);
        let sid = rec.streams[0].stream_id;
        let plan = query(&ctx, &format!(
            "EXPLAIN SELECT count(*) FROM thread_spans('{pid}') WHERE stream_id = '{sid}'")).await;
        let text = common::sql::lines(&plan).join("\n");
        let blocks = rec.blocks.iter().filter(|b| b.stream_id == sid).count();
        assert!(text.contains(&format!("streams=1, blocks={blocks}")), "{text}");

        // The middle third of a thread that ended every scope: spans cut by the range have a
        // NULL begin or end, and none is `finished = false` (the thread goes on after it).
        let closed = query(&ctx, &format!(
            "SELECT stream_id, CAST(min(\"begin\") AS BIGINT) AS lo, CAST(max(\"end\") AS BIGINT) AS hi \
             FROM thread_spans('{pid}') WHERE depth > 0 GROUP BY stream_id \
             HAVING count(*) FILTER (WHERE finished = false) = 0 ORDER BY stream_id LIMIT 1")).await;
        let (sid, lo, hi) = (
            strings(&closed[0], "stream_id")[0].clone().unwrap(),
            ints(&closed[0], "lo")[0].unwrap(),
            ints(&closed[0], "hi")[0].unwrap(),
        );
        let (a, b) = (lo + (hi - lo) / 3, lo + 2 * (hi - lo) / 3);
        let ts = |ns: i64| chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let cut = query(&ctx, &format!(
            "SELECT count(*) AS n, count(*) FILTER (WHERE \"begin\" IS NULL) AS no_begin, \
             count(*) FILTER (WHERE \"end\" IS NULL) AS no_end, \
             count(*) FILTER (WHERE finished = false) AS never \
             FROM thread_spans('{pid}', '{}', '{}') WHERE depth > 0 AND stream_id = '{sid}'", ts(a), ts(b))).await;
        let n = ints(&cut[0], "n")[0].unwrap();
        let (no_begin, no_end) = (ints(&cut[0], "no_begin")[0].unwrap(), ints(&cut[0], "no_end")[0].unwrap());
        assert!(n > 0 && n < CALLS as i64 * 8, "{n}");
        assert_eq!(ints(&cut[0], "never")[0], Some(0));
        // Every span the cut leaves whole has the times of the full query.
        let whole = query(&ctx, &format!(
            "SELECT count(*) AS n FROM thread_spans('{pid}', '{}', '{}') c JOIN thread_spans('{pid}') f \
             ON c.id = f.id AND c.stream_id = f.stream_id \
             WHERE c.depth > 0 AND c.stream_id = '{sid}' AND c.\"begin\" = f.\"begin\" AND c.\"end\" = f.\"end\" \
             AND c.name = f.name", ts(a), ts(b))).await;
        // Only spans overlapping the range, though the blocks at its edges hold others.
        let outside = query(&ctx, &format!(
            "SELECT count(*) AS n FROM thread_spans('{pid}', '{a}', '{b}') WHERE depth > 0 \
             AND (\"end\" < TIMESTAMP '{a}' OR \"begin\" > TIMESTAMP '{b}')", a = ts(a), b = ts(b))).await;
        assert_eq!(ints(&outside[0], "n")[0], Some(0));
        let overlapping = query(&ctx, &format!(
            "SELECT count(*) AS n FROM thread_spans('{pid}') WHERE depth > 0 AND stream_id = '{sid}' \
             AND (\"end\" IS NULL OR \"end\" >= TIMESTAMP '{a}') AND \"begin\" <= TIMESTAMP '{b}'",
            a = ts(a), b = ts(b))).await;
        assert_eq!(ints(&overlapping[0], "n")[0], Some(n), "the spans of the full query overlapping the range");
        let cut_off = no_begin + no_end;
        assert!(ints(&whole[0], "n")[0].unwrap() >= n - cut_off);
    }

    async fn bad_ids_are_refused_with_their_name(backend: Backend) {
        let t = open(backend).await;
        store(&t.lake, recording()).await;
        let ctx = context(&t.lake);
        let err = query_err(&ctx, "SELECT * FROM view_instance('thread_spans', 'nope')").await;
        assert!(err.contains("'nope' is not a stream id"), "{err}");
        let missing = uuid::Uuid::new_v4();
        let err = query_err(&ctx, &format!("SELECT * FROM view_instance('thread_spans', '{missing}')")).await;
        assert!(err.contains(&format!("stream {missing} is not in the lake")), "{err}");
        let err = query_err(&ctx, &format!("SELECT * FROM thread_spans('{missing}')")).await;
        assert!(err.contains(&missing.to_string()), "{err}");
    }
}

on_both! {
    async fn process_spans_holds_both_kinds_with_micromegas_columns(backend: Backend) {
        static REC: std::sync::OnceLock<Recording> = std::sync::OnceLock::new();
        let rec = REC.get_or_init(|| {
            std::thread::spawn(|| common::workload::record_workload(4)).join().unwrap()
        });
        let t = open(backend).await;
        store(&t.lake, rec).await;
        let pid = rec.process.process_id;
        let ctx = context(&t.lake);
        let both = query(&ctx, &format!("SELECT * FROM process_spans('{pid}', 'both')")).await;
        let schema = both[0].schema();
        let fields: Vec<(String, DataType)> = schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect();
        let dict = |t| DataType::Dictionary(Box::new(DataType::Int32), Box::new(t));
        let ts = DataType::Timestamp(TimeUnit::Nanosecond, Some("+00:00".into()));
        // micromegas-analytics 0.33 process_spans_table_function.rs output_schema().
        assert_eq!(fields, vec![
            ("stream_id".into(), dict(DataType::Utf8)),
            ("thread_name".into(), dict(DataType::Utf8)),
            ("id".into(), DataType::Int64),
            ("parent".into(), DataType::Int64),
            ("depth".into(), DataType::UInt32),
            ("hash".into(), DataType::UInt32),
            ("begin".into(), ts.clone()),
            ("end".into(), ts),
            ("duration".into(), DataType::Int64),
            ("name".into(), dict(DataType::Utf8)),
            ("target".into(), dict(DataType::Utf8)),
            ("filename".into(), dict(DataType::Utf8)),
            ("line".into(), DataType::UInt32),
            ("properties".into(), dict(DataType::Binary)),
        ]);
        let count = |sql: String| {
            let ctx = ctx.clone();
            async move { ints(&query(&ctx, &sql).await[0], "n")[0].unwrap() }
        };
        // The thread rows are each thread's view_instance rows, named as its root is.
        let thread_rows = count(format!(
            "SELECT count(*) AS n FROM process_spans('{pid}', 'thread') p JOIN thread_spans('{pid}') t \
             ON p.stream_id = t.stream_id AND p.id = t.id AND p.depth = t.depth AND p.name = t.name \
             AND p.\"begin\" = coalesce(t.\"begin\", p.\"begin\")")).await;
        let threads_all = count(format!("SELECT count(*) AS n FROM thread_spans('{pid}')")).await;
        assert_eq!(thread_rows, threads_all);
        let sync_work = count(format!(
            "SELECT count(*) AS n FROM process_spans('{pid}', 'thread') WHERE name = 'sync_work'")).await;
        assert_eq!(sync_work, 4);
        let display = count(format!(
            "SELECT count(*) AS n FROM process_spans('{pid}', 'thread') p \
             JOIN (SELECT stream_id, name FROM thread_spans('{pid}') WHERE id = -1) r \
             ON p.stream_id = r.stream_id WHERE p.thread_name <> r.name")).await;
        assert_eq!(display, 0, "thread_name is the root's name-id");
        // The async rows: async spans that finished after they began, on no stream.
        let finished = count(format!(
            "SELECT count(*) AS n FROM async_spans('{pid}') WHERE finished AND \"begin\" < \"end\"")).await;
        let async_rows = count(format!(
            "SELECT count(*) AS n FROM process_spans('{pid}', 'async') p JOIN async_spans('{pid}') a \
             ON p.id = a.span_id AND p.parent = a.parent_span_id AND p.\"begin\" = a.\"begin\" \
             AND p.\"end\" = a.\"end\" AND p.duration = CAST(a.duration AS BIGINT) AND p.name = a.name \
             AND p.hash = a.hash WHERE p.stream_id = '' AND p.thread_name = 'async'")).await;
        assert_eq!(async_rows, finished);
        assert!(finished > 40, "{finished}");
        let tagged = count(format!(
            "SELECT count(*) AS n FROM process_spans('{pid}', 'async') \
             WHERE jsonb_as_string(jsonb_get(properties, 'rows')) = '3'")).await;
        assert_eq!(tagged, 4, "tagged_work's property, as JSONB");
        let total = both.iter().map(|b| b.num_rows() as i64).sum::<i64>();
        assert_eq!(total, threads_all + finished);
        let view = count(format!("SELECT count(*) AS n FROM view_instance('process_spans', '{pid}')")).await;
        assert_eq!(view, total);
        let err = query_err(&ctx, &format!("SELECT * FROM process_spans('{pid}', 'sync')")).await;
        assert!(err.contains("span_types must be 'thread', 'async', or 'both', given: sync"), "{err}");
    }
}
