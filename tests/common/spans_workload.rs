//! Instrumented tokio programs for the span tests and lints, recorded with the real
//! micromegas-tracing: one that trips every lint (futures dropped by `select!` and timeouts, a
//! child outliving its parent, a request far slower than the others, deep nesting, tagged ends),
//! and a clean one that trips none.

use super::producer::Recording;
use super::workload::{record, top};
use micromegas_tracing::prelude::*;
use std::time::Duration;

#[span_fn]
async fn step(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[span_fn]
async fn nest(levels: u32) {
    if levels == 0 {
        step(1).await;
    } else {
        Box::pin(nest(levels - 1)).await;
    }
}

#[span_fn]
async fn request(i: u64) {
    // One request in 40 waits far longer than the others.
    step(if i % 40 == 7 { 150 } else { 3 }).await;
    static_span_desc!(ROWS, "db.rows");
    let rows = async { i % 5 }
        .instrument_with(&ROWS, |rows, span| span.set_property("rows", *rows))
        .await;
    std::hint::black_box(rows);
}

#[span_fn]
async fn race() {
    // The loser of the select is dropped before it completes.
    tokio::select! {
        _ = step(1) => {}
        _ = step(300) => {}
    }
}

#[span_fn]
async fn fire_and_forget() -> Option<tokio::task::JoinHandle<()>> {
    // The child keeps running after its parent returned.
    Some(spawn_with_context(step(30)))
}

/// Name of a function of this module as the producer records it.
pub fn name(function: &str) -> String {
    format!("{}::{function}", module_path!())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .with_tracing_callbacks()
        .build()
        .unwrap()
}

/// Every lint trips: 2 never-finished spans per race and timeout, one child outliving its
/// parent, slow requests; plus the shared workload's shapes and 8-deep nesting.
pub fn troubled() -> Recording {
    record(|| {
        let rt = runtime();
        rt.block_on(async {
            let mut tasks = Vec::new();
            for i in 0..80u64 {
                tasks.push(tokio::spawn(request(i)));
            }
            for i in 0..4 {
                tasks.push(tokio::spawn(top(i)));
                tasks.push(tokio::spawn(race()));
            }
            tasks.push(tokio::spawn(nest(8)));
            let child = tokio::spawn(fire_and_forget()).await.unwrap();
            for t in tasks {
                t.await.unwrap();
            }
            if let Some(child) = child {
                child.await.unwrap();
            }
        });
        drop(rt);
    })
}

#[span_fn]
async fn steady() {
    step(5).await;
    step(5).await;
}

/// Nothing trips: every future completes inside its parent, durations are alike.
pub fn clean() -> Recording {
    record(|| {
        let rt = runtime();
        rt.block_on(async {
            let tasks: Vec<_> = (0..40u64).map(|_| tokio::spawn(steady())).collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        drop(rt);
    })
}
