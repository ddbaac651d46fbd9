//! A small instrumented tokio service to record: what `async-events quickstart` and the Python
//! package's `record_demo` put into a lake, so that a new user has real data to query at once.
//!
//! The service handles requests on a 4-worker runtime: every request authenticates, loads a user
//! from a (simulated) database, fans out inventory RPCs on other workers, calls a slow
//! recommendation service under a deadline (so some of those futures are dropped before they
//! finish), and renders a page. Background jobs run beside it.

use super::{RecorderSummary, RecordingOptions, start_recording};
use crate::error::{Error, Result};
use crate::lake::Lake;
use micromegas_tracing::prelude::*;
use std::time::Duration;

/// Records the demo service into `lake`: `waves` waves of 25 requests and two background jobs
/// each (20 waves take about a second and write some 13 000 events in a dozen blocks). Returns the
/// recorded process id and what was written.
///
/// Blocking, and it installs micromegas-tracing's process-wide dispatch for the duration: call
/// it outside async code (or inside `tokio::task::block_in_place`), and not while another
/// recording runs.
pub fn record(lake: Lake, waves: u64) -> Result<(uuid::Uuid, RecorderSummary)> {
    let options = RecordingOptions {
        thread_buffer_size: 64 * 1024,
        ..RecordingOptions::default()
    };
    let recording = start_recording(lake, options)?;
    let pid = recording.process_id();
    // The service runs on its own workers, on a thread of its own (a runtime cannot be built
    // and blocked on inside another).
    let served = std::thread::spawn(move || serve_requests(waves))
        .join()
        .map_err(|_| Error::Recorder("the demo service panicked".into()))?;
    let summary = recording.finish();
    served.map_err(|e| Error::Recorder(format!("the demo service failed: {e}")))?;
    if !summary.errors.is_empty() {
        return Err(Error::Recorder(format!(
            "recording failed: {}",
            summary.errors.join("; ")
        )));
    }
    Ok((pid, summary))
}

fn jitter(seed: u64, max_us: u64) -> Duration {
    let x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        >> 33;
    Duration::from_micros(x % max_us.max(1))
}

#[span_fn]
async fn authenticate(user: u64) {
    tokio::time::sleep(Duration::from_micros(200) + jitter(user, 300)).await;
}

#[span_fn]
async fn query_db(key: u64) -> usize {
    tokio::time::sleep(Duration::from_millis(1) + jitter(key, 2_000)).await;
    (key % 7) as usize + 1
}

#[span_fn]
async fn load_user(user: u64) -> usize {
    static_span_desc!(ROWS, "db.load_user_rows");
    query_db(user)
        .instrument_with(&ROWS, |rows, span| span.set_property("rows", *rows))
        .await
}

#[span_fn]
async fn fetch_inventory(request: u64) -> usize {
    let calls = (0..3).map(|i| {
        let key = request * 10 + i;
        instrument_named!(
            async move {
                tokio::time::sleep(Duration::from_micros(300) + jitter(key, 1_500)).await;
                1usize
            },
            "inventory.rpc"
        )
    });
    let mut found = 0;
    for call in calls {
        // Each RPC runs on whichever worker is free, in the request's context.
        found += spawn_with_context(call).await.unwrap_or(0);
    }
    found
}

#[span_fn]
async fn recommendations(request: u64) {
    // Usually fast, sometimes far slower than the caller is willing to wait.
    let slow = if request.is_multiple_of(9) { 20 } else { 1 };
    tokio::time::sleep(Duration::from_millis(slow)).await;
}

#[span_fn]
async fn render_page(request: u64) {
    {
        span_scope!("render.template");
        let mut h = request;
        for _ in 0..20_000 {
            h = h.rotate_left(5) ^ 0x9E37_79B9;
        }
        std::hint::black_box(h);
    }
    tokio::task::yield_now().await;
}

#[span_fn]
async fn handle_request(request: u64) {
    authenticate(request % 50).await;
    load_user(request).await;
    fetch_inventory(request).await;
    let _ = tokio::time::timeout(Duration::from_millis(5), recommendations(request)).await;
    span_async_named_dyn!(
        format!(
            "render:{}",
            ["home", "cart", "search"][request as usize % 3]
        ),
        render_page(request)
    )
    .await;
}

#[span_fn]
async fn refresh_cache(round: u64) {
    for key in 0..5 {
        query_db(round * 100 + key).await;
    }
}

#[span_fn]
async fn health_check() {
    tokio::time::sleep(Duration::from_micros(100)).await;
}

fn serve_requests(waves: u64) -> std::io::Result<()> {
    let service = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .with_tracing_callbacks()
        .build()?;
    service.block_on(async {
        let mut tasks = Vec::new();
        for wave in 0..waves {
            for i in 0..25 {
                tasks.push(tokio::spawn(handle_request(wave * 25 + i)));
            }
            tasks.push(tokio::spawn(refresh_cache(wave)));
            tasks.push(tokio::spawn(health_check()));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    drop(service); // workers flush their thread streams as they stop
    Ok(())
}
