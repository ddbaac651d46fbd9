//! The pictures of a process: the Perfetto trace of `perfetto_trace_chunks` and `async-events
//! trace` decoded back and compared with `async_spans` on the same lake (a real tokio workload
//! recorded with micromegas-tracing), and the SVG/PNG timeline parsed and rendered.

mod common;

use common::lakes::store;
use common::producer::Recording;
use common::spans_workload::troubled;
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::TimestampNanosecondType;
use datafusion::prelude::SessionContext;
use datafusion_async_events::Lake;
use datafusion_async_events::timeline::perfetto::decode_trace;
use datafusion_async_events::timeline::proto::{SLICE_BEGIN, SLICE_END, Trace};
use datafusion_async_events::timeline::svg::{SvgOptions, render_png, render_svg};
use datafusion_async_events::timeline::{
    Span, SpanKind, THREAD_SPAN_COLUMNS, Timeline, spans_of_batch, thread_spans_of_batch,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn recording() -> Recording {
    static REC: OnceLock<Recording> = OnceLock::new();
    // The workload runs its own runtime: record it on a thread of its own.
    REC.get_or_init(|| std::thread::spawn(troubled).join().unwrap())
        .clone()
}

/// A folder whose `./lake` is an embedded lake holding the troubled workload.
async fn folder_with_lake() -> (tempfile::TempDir, Lake, String) {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::create_embedded(dir.path().join("lake"))
        .await
        .unwrap();
    let rec = recording();
    store(&lake, &rec).await;
    (dir, lake, rec.process.process_id.to_string())
}

fn context(lake: &Lake) -> SessionContext {
    let ctx = SessionContext::new();
    datafusion_async_events::register(&ctx, lake.clone());
    ctx
}

fn cli(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_async-events"))
        .args(args)
        .current_dir(dir)
        .env_remove("MICROMEGAS_SQL_CONNECTION_STRING")
        .env_remove("MICROMEGAS_OBJECT_STORE_URI")
        .output()
        .unwrap()
}

async fn collect(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
    ctx.sql(sql).await.unwrap().collect().await.unwrap()
}

/// The chunks of `perfetto_trace_chunks`, checked to be numbered 0, 1, ...
async fn chunks(ctx: &SessionContext, args: &str) -> Vec<u8> {
    let batches = collect(
        ctx,
        &format!("SELECT chunk_id, chunk_data FROM perfetto_trace_chunks({args})"),
    )
    .await;
    let mut trace = Vec::new();
    let mut next = 0;
    for b in &batches {
        let ids = b
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::Int32Type>();
        let data = b.column(1).as_binary::<i32>();
        for i in 0..b.num_rows() {
            assert_eq!(ids.value(i), next);
            next += 1;
            trace.extend_from_slice(data.value(i));
        }
    }
    assert!(next >= 1);
    trace
}

async fn spans(ctx: &SessionContext, args: &str) -> Vec<Span> {
    let sql = format!(
        "SELECT {} FROM async_spans({args})",
        datafusion_async_events::timeline::span_select_list()
    );
    collect(ctx, &sql)
        .await
        .iter()
        .flat_map(|b| spans_of_batch(b).unwrap())
        .collect()
}

/// The spans of `thread_spans` (but the thread's own root rows), as the pictures read them.
async fn thread_spans(ctx: &SessionContext, pid: &str) -> Vec<Span> {
    let columns: Vec<String> = THREAD_SPAN_COLUMNS
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect();
    let sql = format!("SELECT {} FROM thread_spans('{pid}')", columns.join(", "));
    collect(ctx, &sql)
        .await
        .iter()
        .flat_map(|b| thread_spans_of_batch(b).unwrap())
        .collect()
}

/// One slice of the trace, paired on its track.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Slice {
    name: String,
    begin: i64,
    end: i64,
    track: u64,
    finished: String,
}

/// Tracks by uuid: name, parent, thread name.
type Tracks = HashMap<u64, (String, Option<u64>, Option<String>)>;

/// The tracks (uuid → (name, parent, thread name)) and slices of a trace; asserts that every
/// begin has its end on the same track and that the slices of a track nest properly.
fn slices(trace: &Trace) -> (Tracks, Vec<Slice>) {
    let mut tracks = HashMap::new();
    let mut events: BTreeMap<u64, Vec<(i64, i32, usize)>> = BTreeMap::new();
    let mut begins = Vec::new();
    for (i, p) in trace.packet.iter().enumerate() {
        assert_eq!(p.trusted_packet_sequence_id, Some(1));
        if let Some(t) = &p.track_descriptor {
            let uuid = t.uuid.unwrap();
            let thread = t.thread.as_ref().and_then(|th| th.thread_name.clone());
            let old = tracks.insert(
                uuid,
                (t.name.clone().unwrap_or_default(), t.parent_uuid, thread),
            );
            assert!(old.is_none(), "track {uuid} declared twice");
        }
        if let Some(e) = &p.track_event {
            let track = e.track_uuid.unwrap();
            assert!(tracks.contains_key(&track), "event on an undeclared track");
            let ts = i64::try_from(p.timestamp.unwrap()).unwrap();
            events
                .entry(track)
                .or_default()
                .push((ts, e.r#type.unwrap(), i));
            if e.r#type == Some(SLICE_BEGIN) {
                begins.push(i);
            }
        }
    }
    let mut out = Vec::new();
    for (track, mut evs) in events {
        // At equal times an end closes before a begin opens; a zero-length slice opens first.
        evs.sort_by_key(|&(ts, kind, i)| (ts, kind == SLICE_BEGIN, i));
        let mut stack: Vec<(i64, usize)> = Vec::new();
        for (ts, kind, i) in evs {
            match kind {
                SLICE_BEGIN => stack.push((ts, i)),
                SLICE_END => {
                    let (begin, at) = match stack.pop() {
                        Some(x) => x,
                        None => panic!("SLICE_END without a begin on track {track}"),
                    };
                    let e = trace.packet[at].track_event.as_ref().unwrap();
                    let finished = e
                        .debug_annotations
                        .iter()
                        .find(|a| a.name.as_deref() == Some("finished"))
                        .and_then(|a| a.string_value.clone())
                        .unwrap();
                    out.push(Slice {
                        name: e.name.clone().unwrap(),
                        begin,
                        end: ts,
                        track,
                        finished,
                    });
                }
                other => panic!("unexpected event type {other}"),
            }
        }
        assert!(stack.is_empty(), "unclosed slices on track {track}");
    }
    assert_eq!(out.len(), begins.len());
    (tracks, out)
}

/// Thread names by stream id, from `thread_streams`.
async fn thread_names(ctx: &SessionContext, pid: &str) -> HashMap<String, String> {
    let batches = collect(
        ctx,
        &format!("SELECT stream_id, thread_name FROM thread_streams('{pid}')"),
    )
    .await;
    let mut names = HashMap::new();
    for b in &batches {
        let (ids, n) = (
            b.column(0).as_string::<i32>(),
            b.column(1).as_string::<i32>(),
        );
        for i in 0..b.num_rows() {
            names.insert(ids.value(i).to_owned(), n.value(i).to_owned());
        }
    }
    names
}

/// Checks a decoded trace against the spans of `async_spans` for the same arguments.
fn check_trace(trace: &Trace, spans: &[Span], names: &HashMap<String, String>) {
    let (tracks, slices) = slices(trace);
    let processes: Vec<_> = trace
        .packet
        .iter()
        .filter_map(|p| p.track_descriptor.as_ref())
        .filter(|t| t.process.is_some())
        .collect();
    assert_eq!(processes.len(), 1);
    // One thread track per thread that has spans, named as thread_streams names it.
    let mut threads: Vec<&String> = tracks.values().filter_map(|t| t.2.as_ref()).collect();
    let streams: HashSet<&String> = spans.iter().map(|s| &s.stream_id).collect();
    let mut with_spans: Vec<&String> = streams.iter().map(|s| &names[*s]).collect();
    threads.sort();
    with_spans.sort();
    assert_eq!(threads, with_spans);
    // Every slice sits on a lane under a thread track.
    for s in &slices {
        let (_, parent, _) = &tracks[&s.track];
        let parent = parent.expect("lanes have a parent");
        assert!(
            tracks[&parent].2.is_some(),
            "a lane's parent is a thread track"
        );
    }
    // As many slices as spans, with the same names and times where they are known.
    assert_eq!(slices.len(), spans.len());
    let finished = |s: &Span| s.finished == Some(true);
    let mut expected: Vec<(String, i64, i64)> = spans
        .iter()
        .filter(|s| finished(s) && s.begin.is_some())
        .map(|s| (s.name.clone(), s.begin.unwrap(), s.end.unwrap()))
        .collect();
    let mut got: Vec<(String, i64, i64)> = slices
        .iter()
        .filter(|s| s.finished == "true" && !s.name.contains(" ["))
        .map(|s| (s.name.clone(), s.begin, s.end))
        .collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
    // Unfinished spans are marked, in name and annotation.
    let never = spans.iter().filter(|s| s.finished == Some(false)).count();
    let marked = slices
        .iter()
        .filter(|s| s.finished == "false" && s.name.ends_with(" [unfinished]"))
        .count();
    assert_eq!(marked, never);
    let cut = spans.iter().filter(|s| s.finished.is_none()).count();
    assert_eq!(
        slices.iter().filter(|s| s.finished == "unknown").count(),
        cut
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perfetto_trace_of_the_whole_recording_matches_async_spans() {
    let (_dir, lake, pid) = folder_with_lake().await;
    let ctx = context(&lake);
    let trace = decode_trace(&chunks(&ctx, &format!("'{pid}', 'async'")).await).unwrap();
    let spans = spans(&ctx, &format!("'{pid}'")).await;
    assert!(spans.len() > 300, "{}", spans.len());
    assert!(spans.iter().any(|s| s.finished == Some(false)));
    assert!(spans.iter().any(|s| s.depth >= 8));
    check_trace(&trace, &spans, &thread_names(&ctx, &pid).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perfetto_trace_of_a_range_equals_the_trace_command() {
    let (dir, lake, pid) = folder_with_lake().await;
    let ctx = context(&lake);
    // The middle third of the recording.
    let b = collect(
        &ctx,
        &format!("SELECT min(begin), max(\"end\") FROM async_spans('{pid}')"),
    )
    .await;
    let lo = b[0]
        .column(0)
        .as_primitive::<TimestampNanosecondType>()
        .value(0);
    let hi = b[0]
        .column(1)
        .as_primitive::<TimestampNanosecondType>()
        .value(0);
    let ts = |ns: i64| {
        chrono::DateTime::from_timestamp_nanos(ns)
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
    };
    let (begin, end) = (ts(lo + (hi - lo) / 3), ts(lo + 2 * (hi - lo) / 3));
    let args = format!("'{pid}', 'async', TIMESTAMP '{begin}', TIMESTAMP '{end}'");
    let bytes = chunks(&ctx, &args).await;
    let names = thread_names(&ctx, &pid).await;
    check_trace(
        &decode_trace(&bytes).unwrap(),
        &spans(&ctx, &format!("'{pid}', '{begin}', '{end}'")).await,
        &names,
    );
    // (Spans cut by a range, NULL `finished`, are checked on made-up spans in the unit tests
    // of `timeline::perfetto`: this recording's blocks hold every partner of the range.)

    drop(ctx);
    drop(lake);
    let out = cli(
        dir.path(),
        &[
            "trace",
            "--process",
            &pid,
            "--begin",
            &begin,
            "--end",
            &end,
            "--span-types",
            "async",
            "-o",
            "t.pftrace",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = std::fs::read(dir.path().join("t.pftrace")).unwrap();
    assert_eq!(file, bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_are_plan_errors() {
    let (_dir, lake, pid) = folder_with_lake().await;
    let ctx = context(&lake);
    let err = |sql: String| {
        let ctx = ctx.clone();
        async move {
            match ctx.sql(&sql).await {
                Ok(df) => df.collect().await.unwrap_err().to_string(),
                Err(e) => e.to_string(),
            }
        }
    };
    let e = err(format!(
        "SELECT * FROM perfetto_trace_chunks('{pid}', 'sync')"
    ))
    .await;
    // micromegas's message, word for word.
    assert!(
        e.contains("span_types must be 'thread', 'async', or 'both', given: sync"),
        "{e}"
    );
    let e = err("SELECT * FROM perfetto_trace_chunks('nope', 'async')".into()).await;
    assert!(e.contains("is not a process id"), "{e}");
    let e = err(format!(
        "SELECT * FROM perfetto_trace_chunks('{pid}', 'async', 'yesterday', NULL)"
    ))
    .await;
    assert!(e.contains("not an RFC 3339 timestamp"), "{e}");
    let e = err(format!("SELECT * FROM perfetto_trace_chunks('{pid}')")).await;
    assert!(
        e.contains("takes (process_id, span_types, begin, end)"),
        "{e}"
    );
    let unknown = uuid::Uuid::new_v4();
    let e = err(format!(
        "SELECT * FROM perfetto_trace_chunks('{unknown}', 'async')"
    ))
    .await;
    assert!(
        e.contains(&format!("process {unknown} is not in the lake")),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeline_svg_parses_and_renders() {
    let (dir, lake, pid) = folder_with_lake().await;
    let ctx = context(&lake);
    let timeline = Timeline::load(&ctx, &pid, None, None).await.unwrap();
    let (thread, async_) = (
        thread_spans(&ctx, &pid).await.len(),
        spans(&ctx, &format!("'{pid}'")).await.len(),
    );
    assert_eq!(timeline.spans.len(), thread + async_);
    let options = SvgOptions {
        width: 900,
        legend: 5,
        title: "a <title> & \"quotes\"".into(),
    };
    let svg = render_svg(&timeline, &options);
    assert!(svg.contains("a &lt;title&gt; &amp; &quot;quotes&quot;"));
    assert!(
        svg.contains("other ("),
        "the legend folds names past the top 5"
    );
    assert!(svg.contains("url(#hatch)"), "unfinished spans are hatched");
    let tree = resvg::usvg::Tree::from_str(&svg, &resvg::usvg::Options::default()).unwrap();
    assert_eq!(tree.size().to_int_size().width(), 900);
    let png = render_png(&svg).unwrap();
    let pixmap = resvg::tiny_skia::Pixmap::decode_png(&png).unwrap();
    assert_eq!(pixmap.width(), 900);
    assert_eq!(pixmap.height(), tree.size().to_int_size().height());
    let coloured = pixmap
        .pixels()
        .iter()
        .filter(|p| (p.red(), p.green(), p.blue()) != (255, 255, 255))
        .count();
    assert!(
        coloured > pixmap.pixels().len() / 20,
        "{coloured} coloured pixels"
    );

    drop(ctx);
    drop(lake);
    for name in ["t.svg", "t.png"] {
        let out = cli(
            dir.path(),
            &["timeline", "--process", &pid, "--width", "1000", "-o", name],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let svg = std::fs::read_to_string(dir.path().join("t.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains(r#"width="1000""#));
    let png = std::fs::read(dir.path().join("t.png")).unwrap();
    assert_eq!(
        resvg::tiny_skia::Pixmap::decode_png(&png).unwrap().width(),
        1000
    );
    let out = cli(dir.path(), &["timeline", "--process", &pid, "-o", "t.txt"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must end in .svg or .png"));
}

#[test]
fn empty_timeline_still_draws() {
    let svg = render_svg(&Timeline::default(), &SvgOptions::default());
    resvg::usvg::Tree::from_str(&svg, &resvg::usvg::Options::default()).unwrap();
}

#[test]
fn extreme_times_draw_without_panicking() {
    let span = |begin, end, finished| Span {
        kind: SpanKind::Async,
        span_id: 1,
        name: "x".into(),
        depth: 0,
        begin,
        end,
        stream_id: "s".into(),
        finished,
    };
    let timeline = Timeline {
        spans: vec![
            span(Some(i64::MIN), Some(i64::MAX), Some(true)),
            span(None, None, None),
            span(Some(5), Some(1), Some(true)),
        ],
        threads: vec![],
        range: datafusion_async_events::TimeBounds::ALL,
    };
    let svg = render_svg(&timeline, &SvgOptions::default());
    render_png(&svg).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perfetto_trace_of_thread_and_async_spans() {
    // A workload with scopes (`span_scope!` inside async functions) on its worker threads.
    let rec = std::thread::spawn(|| common::workload::record_workload(6))
        .join()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::create_embedded(dir.path().join("lake"))
        .await
        .unwrap();
    store(&lake, &rec).await;
    let pid = rec.process.process_id.to_string();
    let ctx = context(&lake);
    let names = thread_names(&ctx, &pid).await;
    let thread = thread_spans(&ctx, &pid).await;
    let async_ = spans(&ctx, &format!("'{pid}'")).await;
    assert_eq!(
        thread.iter().filter(|s| s.name == "sync_work").count(),
        6,
        "one sync_work scope per top"
    );
    for (types, expected) in [
        ("thread", thread.clone()),
        ("async", async_.clone()),
        ("both", [thread.clone(), async_.clone()].concat()),
    ] {
        let trace = decode_trace(&chunks(&ctx, &format!("'{pid}', '{types}'")).await).unwrap();
        check_trace(&trace, &expected, &names);
        // Thread scopes sit on a `scopes` track per thread, nested; async spans on `depth N`.
        let (tracks, slices) = slices(&trace);
        let on = |prefix: &str| {
            let mut v: Vec<(String, i64, i64)> = slices
                .iter()
                .filter(|s| tracks[&s.track].0.starts_with(prefix))
                .map(|s| (s.name.clone(), s.begin, s.end))
                .collect();
            v.sort();
            v
        };
        let mut want: Vec<(String, i64, i64)> = expected
            .iter()
            .filter(|s| s.kind == SpanKind::Thread)
            .map(|s| (s.name.clone(), s.begin.unwrap(), s.end.unwrap()))
            .collect();
        want.sort();
        assert_eq!(on("scopes"), want, "{types}");
        let async_slices = expected
            .iter()
            .filter(|s| s.kind == SpanKind::Async)
            .count();
        assert_eq!(on("depth ").len(), async_slices, "{types}");
    }
}
