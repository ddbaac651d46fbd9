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
//!   [--abuse [--bomb-process <pid>]]
//! ```
//!
//! With `--abuse`, abusive clients run beside the normal ones until these are done, and each
//! abusive query's outcome is printed: endless queries (`generate_series` to 2^63), memory-hungry
//! ones (an `array_agg` of 400 M numbers; a 3-billion-element `range`), statements that would
//! write files (`COPY … TO`, `CREATE EXTERNAL TABLE`), a client that stops reading, and with
//! `--bomb-process` (`sql_bench bomb`) a scan of a process whose block inflates to 1 GiB.

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
        (
            "async spans in a window, by name",
            "SELECT name, count(*), max(duration) FROM async_spans('{pid}', '{t0}', '{t1}') GROUP BY name",
        ),
        (
            "thread spans in a window, by name",
            "SELECT name, count(*), max(duration) FROM thread_spans('{pid}', '{t0}', '{t1}') GROUP BY name",
        ),
        (
            "Perfetto trace of a window (thread and async)",
            "SELECT chunk_id, chunk_data FROM perfetto_trace_chunks('{pid}', 'both', '{t0}', '{t1}')",
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

/// The abusive queries, by name.
fn abusive(bomb: Option<&str>) -> Vec<(&'static str, String)> {
    let mut out = vec![
        (
            "endless generate_series",
            "SELECT count(*) FROM generate_series(1, 9223372036854775807)".to_owned(),
        ),
        (
            "array_agg of 400 M numbers",
            "SELECT cardinality(array_agg(value)) FROM generate_series(1, 400000000)".to_owned(),
        ),
        (
            "range of 3e9 elements",
            "SELECT cardinality(range(0, 3000000000))".to_owned(),
        ),
        (
            "COPY to a file",
            "COPY (SELECT 1) TO '/tmp/async-events-abuse.csv'".to_owned(),
        ),
        (
            "CREATE EXTERNAL TABLE",
            "CREATE EXTERNAL TABLE abuse STORED AS CSV LOCATION '/tmp/async-events-abuse/'"
                .to_owned(),
        ),
    ];
    if let Some(pid) = bomb {
        out.push((
            "LZ4 bomb block",
            format!("SELECT count(*) FROM async_events('{pid}')"),
        ));
    }
    out
}

/// Runs the abusive queries in turn until `done`, counting each one's outcomes; one more client
/// opens a large result and never reads it.
async fn abuse(
    channel: tonic::transport::Channel,
    bomb: Option<String>,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> BTreeMap<(String, String), usize> {
    use std::sync::atomic::Ordering;
    let mut outcomes: BTreeMap<(String, String), usize> = BTreeMap::new();
    let idle_channel = channel.clone();
    let idle = tokio::spawn(async move {
        let mut client = FlightSqlServiceClient::new(idle_channel);
        let ticket = TicketStatementQuery {
            statement_handle: b"SELECT value FROM generate_series(1, 1000000000)"
                .to_vec()
                .into(),
        }
        .as_any()
        .encode_to_vec();
        match client.do_get(Ticket::new(ticket)).await {
            // Holds the stream without reading it.
            Ok(stream) => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                drop(stream);
            }
            Err(e) => println!("  idle reader: {e}"),
        }
    });
    let queries = abusive(bomb.as_deref());
    let mut clients: Vec<_> = (0..2)
        .map(|_| FlightSqlServiceClient::new(channel.clone()))
        .collect();
    let mut round = 0;
    while !done.load(Ordering::Relaxed) {
        let mut runs = Vec::new();
        for client in clients.iter_mut() {
            let (name, sql) = &queries[round % queries.len()];
            round += 1;
            runs.push(async move {
                let t = Instant::now();
                let outcome = match run_query(client, sql).await {
                    Ok(rows) => format!("answered ({rows} rows)"),
                    Err(e) => {
                        let text = e.to_string();
                        let code = text.split(',').next().unwrap_or(&text).to_owned();
                        code.chars().take(60).collect()
                    }
                };
                ((name.to_string(), outcome), t.elapsed())
            });
        }
        for ((name, outcome), _elapsed) in futures::future::join_all(runs).await {
            *outcomes.entry((name, outcome)).or_default() += 1;
        }
    }
    idle.abort();
    outcomes
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
    let with_abuse = std::env::args().any(|a| a == "--abuse");
    let bomb = arg("--bomb-process");

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
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let abusers = with_abuse.then(|| tokio::spawn(abuse(channel.clone(), bomb, done.clone())));
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
    done.store(true, std::sync::atomic::Ordering::Relaxed);
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
    if let Some(abusers) = abusers {
        println!("abusive queries (outcome: count):");
        for ((name, outcome), n) in abusers.await? {
            println!("  {name}: {outcome}: {n}");
        }
        for path in ["/tmp/async-events-abuse.csv", "/tmp/async-events-abuse"] {
            if std::path::Path::new(path).exists() {
                println!("  WRITTEN: {path}");
            }
        }
    }
    if let Some(p) = server_pid {
        match peak_rss_kib(&p) {
            Some(kib) => println!("server peak RSS (VmHWM): {:.0} MiB", kib as f64 / 1024.0),
            None => println!("server peak RSS: /proc/{p}/status not readable"),
        }
    }
    Ok(())
}
