//! `async-events quickstart`: record a real instrumented tokio service into a lake (the embedded
//! `./lake` by default), then ask it questions with SQL.
//!
//! The service handles requests on a 4-worker runtime: every request authenticates, loads a user
//! from a (simulated) database, fans out inventory RPCs on other workers, calls a slow
//! recommendation service under a deadline (so some of those futures are dropped before they
//! finish), and renders a page. Background jobs run beside it.

use datafusion::prelude::SessionContext;
use datafusion_async_events::recorder::{RecordingOptions, start_recording};
use datafusion_async_events::{Lake, register};
use micromegas_tracing::prelude::*;
use std::time::Duration;

type Failure = Box<dyn std::error::Error>;

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

const QUERIES: [(&str, &str); 5] = [
    (
        "Top-level async operations by average duration (begin and end paired on span_id)",
        "SELECT b.name, count(*) AS calls,
                round(avg(CAST(e.time - b.time AS BIGINT)) / 1e6, 3) AS avg_ms,
                round(max(CAST(e.time - b.time AS BIGINT)) / 1e6, 3) AS max_ms
         FROM async_events('{pid}') b JOIN async_events('{pid}') e ON b.span_id = e.span_id
         WHERE b.event_type = 'begin' AND e.event_type = 'end' AND b.depth = 0
         GROUP BY b.name ORDER BY avg_ms DESC",
    ),
    (
        "How deep the async call tree goes",
        "SELECT depth, count(*) AS spans, count(DISTINCT name) AS names
         FROM async_events('{pid}') WHERE event_type = 'begin'
         GROUP BY depth ORDER BY depth",
    ),
    (
        "Spans that began on one worker thread and ended on another",
        "SELECT b.name, count(*) AS spans,
                sum(CASE WHEN b.stream_id <> e.stream_id THEN 1 ELSE 0 END) AS moved
         FROM async_events('{pid}') b JOIN async_events('{pid}') e ON b.span_id = e.span_id
         WHERE b.event_type = 'begin' AND e.event_type = 'end'
         GROUP BY b.name HAVING sum(CASE WHEN b.stream_id <> e.stream_id THEN 1 ELSE 0 END) > 0
         ORDER BY moved DESC",
    ),
    (
        "Spans that never finished (futures dropped before completion)",
        "SELECT b.name, b.depth, count(*) AS never_finished
         FROM async_events('{pid}') b
         LEFT JOIN async_events('{pid}') e ON b.span_id = e.span_id AND e.event_type = 'end'
         WHERE b.event_type = 'begin' AND e.span_id IS NULL
         GROUP BY b.name, b.depth ORDER BY never_finished DESC",
    ),
    (
        "Which worker thread ran what",
        "SELECT t.thread_name, t.thread_id, count(*) AS spans_begun, count(DISTINCT e.name) AS names
         FROM async_events('{pid}') e JOIN thread_streams('{pid}') t ON e.stream_id = t.stream_id
         WHERE e.event_type = 'begin'
         GROUP BY t.thread_name, t.thread_id ORDER BY spans_begun DESC",
    ),
];

/// Records the service into `lake` and prints the answers of the example queries. Runs on the
/// caller's runtime handle for lake I/O; the service gets a runtime of its own.
pub async fn run(lake: Lake, where_: &str) -> Result<(), Failure> {
    let options = RecordingOptions {
        thread_buffer_size: 64 * 1024,
        ..RecordingOptions::default()
    };
    let recording = start_recording(lake.clone(), options)?;
    let pid = recording.process_id();
    // The service runs on its own workers, on a thread of its own (a runtime cannot be built
    // and blocked on inside another).
    tokio::task::block_in_place(|| {
        std::thread::spawn(serve_requests)
            .join()
            .map_err(|_| "the instrumented service panicked")
    })??;
    let summary = tokio::task::block_in_place(|| recording.finish());
    if !summary.errors.is_empty() {
        return Err(format!("recording failed: {:?}", summary.errors).into());
    }
    println!(
        "Recorded process {pid} into {where_}: {} blocks holding {} events of all kinds.",
        summary.blocks, summary.events
    );
    let ctx = SessionContext::new();
    register(&ctx, lake);
    for (title, sql) in QUERIES {
        let sql = sql.replace("{pid}", &pid.to_string());
        println!("\n{title}:");
        ctx.sql(&sql).await?.show().await?;
    }
    println!(
        "\nExplore further: async-events sql \"SELECT * FROM async_events('{pid}') ORDER BY time LIMIT 20\""
    );
    Ok(())
}

fn serve_requests() -> Result<(), std::io::Error> {
    let service = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .with_tracing_callbacks()
        .build()?;
    service.block_on(async {
        let mut tasks = Vec::new();
        for wave in 0..20u64 {
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
