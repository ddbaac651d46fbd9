//! A real instrumented tokio program: a multi-thread runtime with `with_tracing_callbacks()`
//! running `#[span_fn]` async functions nested three deep, named, dynamically named and tagged
//! spans, `spawn_with_context`, plain `tokio::spawn`, sync spans in the same threads, and a future
//! dropped before it completes. Tests that run it share the global dispatch: `#[serial]`.

use super::producer::{RawProcess, Recording, encode_thread_block, thread_stream};
use micromegas_tracing::prelude::*;
use std::time::Duration;

/// Line of the `#[span_fn]` attribute of each function (what the producer records).
pub const LEAF_LINE: u32 = line!() + 1;
#[span_fn]
pub async fn leaf(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

pub const MIDDLE_LINE: u32 = line!() + 1;
#[span_fn]
pub async fn middle() {
    leaf(2).await;
    leaf(1).await;
}

pub const TOP_LINE: u32 = line!() + 1;
#[span_fn]
pub async fn top(i: u32) {
    middle().await;
    instrument_named!(leaf(1), "named_leaf").await;
    span_async_named_dyn!(format!("dyn_{i}"), async { leaf(1).await }).await;
    spawn_with_context(leaf(1)).await.unwrap();
    // Created here, in `top`'s context, then run elsewhere: keeps top as its parent.
    tokio::spawn(leaf(1)).await.unwrap();
    // Created inside a plain spawned task: a root.
    tokio::spawn(async { leaf(1).await }).await.unwrap();
    static_span_desc!(TAGGED, "tagged_work");
    let rows = async { 3usize }
        .instrument_with(&TAGGED, |out, span| span.set_property("rows", *out))
        .await;
    assert_eq!(rows, 3);
    instrument_named!(leaf(1), "named_tagged", |_, span| span
        .set_property("kind", "x"))
    .await;
    {
        span_scope!("sync_work");
        std::hint::black_box(i);
    }
    // Dropped before completion: begin without end.
    let dropped = tokio::time::timeout(Duration::from_millis(1), leaf(200)).await;
    assert!(dropped.is_err());
}

pub const HANDED_LINE: u32 = line!() + 1;
#[span_fn]
pub async fn handed() {
    leaf(1).await;
}

/// Awaits a future that was created elsewhere: `handed()` is created at the root (depth 0) but
/// polled inside `wrapper`, so the leaf it creates gets depth 2 with `handed` (depth 0) as its
/// parent: `child.depth = parent.depth + 1` does not hold.
#[span_fn]
pub async fn wrapper(f: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) {
    f.await;
}

pub fn handed_name() -> &'static str {
    concat!(module_path!(), "::handed")
}
pub fn wrapper_name() -> &'static str {
    concat!(module_path!(), "::wrapper")
}

pub fn leaf_name() -> &'static str {
    concat!(module_path!(), "::leaf")
}
pub fn middle_name() -> &'static str {
    concat!(module_path!(), "::middle")
}
pub fn top_name() -> &'static str {
    concat!(module_path!(), "::top")
}
pub fn target() -> &'static str {
    module_path!()
}
pub fn file() -> &'static str {
    file!()
}

/// Spans one `top(i)` creates: top, middle, 2 leaves in middle, named_leaf and its leaf, dyn_i
/// and its leaf, the spawn_with_context leaf, the two plain-spawn leaves, tagged_work,
/// named_tagged and its leaf, and the dropped leaf.
pub const SPANS_PER_TOP: usize = 15;
/// Spans of one handed-future task: wrapper, handed and handed's leaf.
pub const HANDED_SPANS: usize = 3;
/// Spans that never end per `top(i)`: the dropped leaf.
pub const UNFINISHED_PER_TOP: usize = 1;

/// Runs `tops` instances of `top` concurrently on a 2-worker runtime built with
/// `with_tracing_callbacks()`, under whatever dispatch is initialized; returns when the workers
/// have stopped (and flushed their streams).
pub fn run_workload(tops: u32) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .with_tracing_callbacks()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut handles: Vec<_> = (0..tops).map(|i| tokio::spawn(top(i))).collect();
        for _ in 0..tops {
            handles.push(tokio::spawn(wrapper(Box::pin(handed()))));
        }
        for h in handles {
            h.await.unwrap();
        }
    });
    drop(rt);
}

/// The async events `tops` instances of `top` emit: two per span, but for the dropped ones.
pub fn emitted_events(tops: u32) -> usize {
    tops as usize * (2 * (SPANS_PER_TOP + HANDED_SPANS) - UNFINISHED_PER_TOP)
}

/// Spans `tops` instances create (one handed-future task per top).
pub fn spans(tops: u32) -> usize {
    tops as usize * (SPANS_PER_TOP + HANDED_SPANS)
}

/// Runs the workload recording into micromegas's in-memory sink with its 1 KiB thread buffers
/// (many small blocks).
pub fn record_workload(tops: u32) -> Recording {
    record(|| run_workload(tops))
}

/// Runs `program` under micromegas's in-memory sink and returns what it recorded. Recordings
/// of one test binary run one at a time (the dispatch is global).
pub fn record(program: impl FnOnce()) -> Recording {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let guard = micromegas_tracing::test_utils::init_in_memory_tracing();
    program();
    let state = guard.sink.state.lock().unwrap();
    let info = state.process_info.clone().unwrap();
    let streams = state
        .thread_stream_descs
        .iter()
        .map(|d| thread_stream(d.process_id, d.stream_id, &d.properties))
        .collect();
    let blocks = state
        .thread_blocks
        .iter()
        .map(|b| encode_thread_block(b, &info))
        .collect();
    let recording = Recording {
        process: RawProcess::from(&*info),
        streams,
        blocks,
    };
    drop(state);
    drop(guard);
    recording
}

/// Instances of `top` in [`shared_recording`].
pub const SHARED_TOPS: u32 = 20;

/// The workload recorded once per test binary (the dispatch is global: only one recording may
/// run at a time, and this is the only one in binaries that use it).
pub fn shared_recording() -> &'static Recording {
    static RECORDING: std::sync::OnceLock<Recording> = std::sync::OnceLock::new();
    // On a thread of its own: callers may be inside a tokio runtime, the workload builds one.
    RECORDING.get_or_init(|| {
        std::thread::spawn(|| record_workload(SHARED_TOPS))
            .join()
            .expect("recording the workload")
    })
}
