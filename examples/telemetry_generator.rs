//! An instrumented multi-worker tokio workload recorded into a lake, to serve and query.
//!
//! ```text
//! cargo run --features recorder --example telemetry_generator -- [JOBS]
//! ```
//! The lake comes from the environment (`MICROMEGAS_SQL_CONNECTION_STRING` and
//! `MICROMEGAS_OBJECT_STORE_URI`, else the embedded `./lake`). A 4-worker runtime processes
//! `JOBS` upload jobs (default 400): each job reads chunks, compresses them on whichever worker
//! is free (spawned in the job's context, so spans begin on one thread and end on another),
//! uploads them under a deadline (slow uploads are dropped, leaving spans that never end) and
//! commits; compressing hashes on the worker thread (`hash_block`, a thread span with a nested
//! scope). A background flusher and a heartbeat run beside them. The last line printed is
//! `process_id=<uuid>`.

use datafusion_async_events::Lake;
use datafusion_async_events::lake::LakeOptions;
use datafusion_async_events::recorder::{RecordingOptions, start_recording};
use micromegas_tracing::prelude::*;
use std::time::Duration;

type Failure = Box<dyn std::error::Error>;

/// A cheap deterministic spread of delays.
fn spread(seed: u64, max_us: u64) -> Duration {
    let mixed = (seed ^ 0x5DEE_CE66D).wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
    Duration::from_micros(mixed % max_us.max(1))
}

#[span_fn]
async fn read_chunk(job: u64, chunk: u64) -> u64 {
    tokio::time::sleep(Duration::from_micros(150) + spread(job * 31 + chunk, 400)).await;
    job * 1_000 + chunk
}

/// Synchronous work on the worker: a thread span (scope), with a nested named scope.
#[span_fn]
fn hash_block(data: u64) -> u64 {
    let mut h = data;
    for _ in 0..5_000 {
        h = h.wrapping_mul(0x100_0000_01B3) ^ (h >> 29);
    }
    span_scope!("hash.finish");
    std::hint::black_box(h)
}

#[span_fn]
async fn compress(data: u64) -> u64 {
    // CPU work between awaits.
    let h = hash_block(data);
    tokio::task::yield_now().await;
    h
}

#[span_fn]
async fn upload(data: u64) {
    // One upload in eleven is far slower than the caller's deadline.
    let slow = data.is_multiple_of(11);
    let delay = if slow {
        Duration::from_millis(15)
    } else {
        Duration::from_micros(300) + spread(data, 900)
    };
    tokio::time::sleep(delay).await;
}

#[span_fn]
async fn commit(job: u64) {
    static_span_desc!(WRITE, "store.write_manifest");
    async {
        tokio::time::sleep(Duration::from_micros(200) + spread(job, 300)).await;
        job % 5 + 1
    }
    .instrument_with(&WRITE, |entries, span| {
        span.set_property("entries", *entries)
    })
    .await;
}

#[span_fn]
async fn process_job(job: u64) {
    let chunks = 2 + job % 3;
    for chunk in 0..chunks {
        let data = read_chunk(job, chunk).await;
        // Compression runs wherever a worker is free, in this job's context.
        let compressed = spawn_with_context(compress(data)).await.unwrap_or(0);
        let _ = tokio::time::timeout(Duration::from_millis(4), upload(compressed + chunk)).await;
    }
    commit(job).await;
}

#[span_fn]
async fn flush_buffers(round: u64) {
    for i in 0..3 {
        instrument_named!(
            tokio::time::sleep(Duration::from_micros(100) + spread(round + i, 200)),
            "flush.segment"
        )
        .await;
    }
}

#[span_fn]
async fn heartbeat() {
    tokio::time::sleep(Duration::from_micros(50)).await;
}

fn run_workload(jobs: u64) -> Result<(), std::io::Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .with_tracing_callbacks()
        .build()?;
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for job in 0..jobs {
            tasks.push(tokio::spawn(process_job(job)));
            if job % 20 == 0 {
                tasks.push(tokio::spawn(flush_buffers(job)));
                tasks.push(tokio::spawn(heartbeat()));
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        for task in tasks {
            let _ = task.await;
        }
    });
    drop(runtime); // workers flush their thread streams as they stop
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Failure> {
    let jobs: u64 = match std::env::args().nth(1) {
        Some(text) => text
            .parse()
            .map_err(|_| format!("JOBS must be a number, got {text:?}"))?,
        None => 400,
    };
    let lake = Lake::from_env_with(LakeOptions::writable()).await?;
    let recording = start_recording(
        lake,
        RecordingOptions {
            thread_buffer_size: 64 * 1024,
            // Process properties, as micromegas's generator and notebooks read them.
            process_properties: [("version", "1.2.3"), ("build-version", "generator-7")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into(),
            ..RecordingOptions::default()
        },
    )?;
    let pid = recording.process_id();
    std::thread::spawn(move || run_workload(jobs))
        .join()
        .map_err(|_| "the workload panicked")??;
    let summary = tokio::task::spawn_blocking(move || recording.finish()).await?;
    if !summary.errors.is_empty() {
        return Err(format!("recording failed: {:?}", summary.errors).into());
    }
    println!(
        "recorded {jobs} jobs: {} blocks, {} events",
        summary.blocks, summary.events
    );
    println!("process_id={pid}");
    Ok(())
}
