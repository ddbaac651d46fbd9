//! `async-events quickstart`: record a real instrumented tokio service into a lake (the embedded
//! `./lake` by default), then ask it questions with SQL.
//!
//! The service is the library's `recorder::demo` (a tokio service on 4 workers with requests, fan-outs,
//! deadlines and background jobs).

use datafusion::prelude::SessionContext;
use datafusion_async_events::recorder::demo;
use datafusion_async_events::{Lake, register};

type Failure = Box<dyn std::error::Error>;

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
    let (pid, summary) = tokio::task::block_in_place(|| demo::record(lake.clone(), 20))?;
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
