mod common;
use common::lakes::{Backend, open, store};
use common::scripted::scripted_033;
use datafusion::prelude::SessionContext;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke() {
    let t = open(Backend::Sqlite).await;
    let rec = scripted_033().recording;
    store(&t.lake, &rec).await;
    let ctx = SessionContext::new();
    datafusion_async_events::register(&ctx, t.lake.clone());
    let pid = rec.process.process_id;
    for q in [
        format!("SELECT * FROM async_events('{pid}')"),
        format!(
            "EXPLAIN SELECT time, name FROM async_events('{pid}') WHERE event_type = 'begin' AND depth <= 1 ORDER BY time LIMIT 3"
        ),
        format!(
            "SELECT time, name FROM async_events('{pid}') WHERE event_type = 'begin' AND depth <= 1 ORDER BY time LIMIT 3"
        ),
        format!("EXPLAIN SELECT time, name FROM async_events('{pid}') ORDER BY time DESC LIMIT 3"),
        format!(
            "EXPLAIN ANALYZE SELECT time, name FROM async_events('{pid}') ORDER BY time DESC LIMIT 3"
        ),
        format!("SELECT count(*) FROM async_events('{pid}')"),
        format!(
            "EXPLAIN SELECT b.name, CAST(e.time - b.time AS BIGINT) AS d FROM async_events('{pid}') b JOIN async_events('{pid}') e ON b.span_id = e.span_id WHERE b.event_type='begin' AND e.event_type='end'"
        ),
        format!(
            "SELECT b.name, CAST(e.time - b.time AS BIGINT) AS d, e.properties FROM async_events('{pid}') b JOIN async_events('{pid}') e ON b.span_id = e.span_id WHERE b.event_type='begin' AND e.event_type='end'"
        ),
        format!(
            "SELECT name, properties['rows'] FROM view_instance('async_events', '{pid}') WHERE event_type = 'end'"
        ),
        format!(
            "EXPLAIN ANALYZE SELECT * FROM async_events('{pid}') WHERE time > now() - interval '1 day' LIMIT 2"
        ),
    ] {
        println!("{q}");
        match ctx.sql(&q).await {
            Ok(df) => match df.show().await {
                Ok(()) => {}
                Err(e) => println!("ERROR {e}"),
            },
            Err(e) => println!("ERROR {e}"),
        }
    }
}
