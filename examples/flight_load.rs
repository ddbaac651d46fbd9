//! Load on a running `async-events serve`: concurrent Flight SQL clients over loopback, each
//! running a mix of query shapes, with latency percentiles per shape, errors and the server's
//! peak resident memory.
//!
//! ```text
//! cargo run --release --example sql_bench -- build --dir /tmp/ae-bench          # ~2 M events
//! MICROMEGAS_SQL_CONNECTION_STRING=sqlite:///tmp/ae-bench/lake/telemetry.db \
//! MICROMEGAS_OBJECT_STORE_URI=file:///tmp/ae-bench/lake/ \
//!   target/release/async-events serve --addr 127.0.0.1:50051 &
//! cargo run --release --features server --example flight_load -- \
//!   --uri http://127.0.0.1:50051 --process <pid> --server-pid $! [--clients 16 --queries 50]
//! ```

use arrow_flight::Ticket;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{ProstMessageExt, TicketStatementQuery};
use futures::StreamExt;
use prost::Message;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

type Failure = Box<dyn std::error::Error + Send + Sync>;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The shapes, with the range of the process's events they read (`{pid}`, `{t0}`, `{t1}`).
fn shapes() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "time window count",
            "SELECT count(*) FROM async_events('{pid}') WHERE time BETWEEN '{t0}' AND '{t1}'",
        ),
        (
            "order by time limit 100",
            "SELECT time, name, event_type FROM async_events('{pid}') ORDER BY time LIMIT 100",
        ),
        (
            "order by time desc limit 100",
            "SELECT time, name FROM async_events('{pid}') WHERE event_type = 'end' ORDER BY time DESC LIMIT 100",
        ),
        (
            "self-join durations in a window",
            "SELECT b.name, avg(CAST(e.time - b.time AS BIGINT)) FROM async_events('{pid}', '{t0}', '{t1}') b \
             JOIN async_events('{pid}', '{t0}', '{t1}') e ON b.span_id = e.span_id \
             WHERE b.event_type = 'begin' AND e.event_type = 'end' GROUP BY b.name",
        ),
        (
            "aggregate by name (full scan)",
            "SELECT name, count(*) FROM async_events('{pid}') WHERE event_type = 'begin' GROUP BY name",
        ),
        (
            "metadata: blocks of the process",
            "SELECT count(*), sum(payload_size) FROM blocks WHERE process_id = '{pid}'",
        ),
    ]
}

async fn run_query(
    client: &mut FlightSqlServiceClient<tonic::transport::Channel>,
    sql: &str,
) -> Result<usize, Failure> {
    let ticket = TicketStatementQuery {
        statement_handle: sql.as_bytes().to_vec().into(),
    }
    .as_any()
    .encode_to_vec();
    let mut stream = client.do_get(Ticket::new(ticket)).await?;
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        rows += batch?.num_rows();
    }
    Ok(rows)
}

fn peak_rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let uri = arg("--uri").unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let pid = arg("--process").ok_or("--process <process id> is required")?;
    let clients: usize = arg("--clients").map_or(Ok(16), |v| v.parse())?;
    let queries: usize = arg("--queries").map_or(Ok(50), |v| v.parse())?;
    let server_pid = arg("--server-pid");

    let channel = tonic::transport::Endpoint::from_shared(uri.clone())?
        .connect()
        .await?;
    let mut probe = FlightSqlServiceClient::new(channel.clone());
    // The window: the middle tenth of the process's events.
    let bounds_sql = format!(
        "SELECT CAST(min(time) AS BIGINT), CAST(max(time) AS BIGINT), count(*) FROM async_events('{pid}')"
    );
    let ticket = TicketStatementQuery {
        statement_handle: bounds_sql.into_bytes().into(),
    }
    .as_any()
    .encode_to_vec();
    let batch = probe
        .do_get(Ticket::new(ticket))
        .await?
        .next()
        .await
        .ok_or("no answer")??;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int64Type;
    let v = |i: usize| batch.column(i).as_primitive::<Int64Type>().value(0);
    let (min, max, events) = (v(0), v(1), v(2));
    let at = |ns: i64| chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339();
    let t0 = at(min + (max - min) * 45 / 100);
    let t1 = at(min + (max - min) * 55 / 100);
    println!("process {pid}: {events} events; {clients} clients x {queries} queries");

    let shapes = shapes();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = FlightSqlServiceClient::new(channel.clone());
        let sqls: Vec<(usize, String)> = (0..queries)
            .map(|q| {
                let s = (c + q) % shapes.len();
                let sql = shapes[s]
                    .1
                    .replace("{pid}", &pid)
                    .replace("{t0}", &t0)
                    .replace("{t1}", &t1);
                (s, sql)
            })
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for (s, sql) in sqls {
                let t = Instant::now();
                let r = run_query(&mut client, &sql).await;
                out.push((s, t.elapsed(), r.map_err(|e| e.to_string())));
            }
            out
        }));
    }
    let mut by_shape: BTreeMap<usize, Vec<Duration>> = BTreeMap::new();
    let mut errors = Vec::new();
    for task in tasks {
        for (s, elapsed, result) in task.await? {
            match result {
                Ok(_) => by_shape.entry(s).or_default().push(elapsed),
                Err(e) => errors.push(e),
            }
        }
    }
    let wall = started.elapsed();
    println!("| shape | queries | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    for (s, mut times) in by_shape {
        times.sort();
        println!(
            "| {} | {} | {:.1} | {:.1} |",
            shapes[s].0,
            times.len(),
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3
        );
    }
    println!(
        "total {} queries in {:.1} s; errors: {}",
        clients * queries,
        wall.as_secs_f64(),
        errors.len()
    );
    for e in errors.iter().take(5) {
        println!("  error: {e}");
    }
    if let Some(p) = server_pid {
        match peak_rss_kib(&p) {
            Some(kib) => println!("server peak RSS (VmHWM): {:.0} MiB", kib as f64 / 1024.0),
            None => println!("server peak RSS: /proc/{p}/status not readable"),
        }
    }
    Ok(())
}
