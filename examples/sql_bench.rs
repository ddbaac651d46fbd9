//! SQL benchmarks on a lake of one process with about 2 million async events.
//!
//! ```text
//! cargo run --release --example sql_bench -- build --dir /tmp/ae-bench [--events 2000000] [--buffer-kib 256]
//! cargo run --release --example sql_bench -- run --dir /tmp/ae-bench
//! cargo run --release --example sql_bench -- scan --dir /tmp/ae-bench   # peak RSS of a full scan
//! cargo run --release --example sql_bench -- spans --dir /tmp/ae-bench [--runs 9]  # async_spans vs self-join
//! cargo run --release --example sql_bench -- spans-rss --dir /tmp/ae-bench --query spans|join|floor|thread
//!     [--repeat N] [--explain]   # N runs in one process (profiling); EXPLAIN ANALYZE
//! cargo run --release --example sql_bench -- one-stream --dir /tmp/ae-one [--events 1000000]
//! cargo run --release --example sql_bench -- export-rss --dir /tmp/ae-export \
//!     --cli target/release/async-events [--runs 3]   # peak RSS of CSV exports by buffer size
//! ```
//! `export-rss` records (once) three lakes of about `--events` async events with 64 KiB, 1 MiB
//! and 10 MiB thread buffers (`<dir>-64`, `<dir>-1024`, `<dir>-10240`), then runs
//! `async-events sql --format csv "SELECT * FROM async_events('…')"` on each, `--runs` times,
//! each a fresh process whose output this program counts, and prints its peak RSS (`wait4`'s
//! `ru_maxrss`) and wall time.
//! `one-stream` builds (once) a lake of one process with a single thread stream and times the
//! same queries read by 1 partition and by 2 (`target_partitions`): the speed-up of cutting a
//! busy stream's blocks into runs.
//! `build` writes realistic thread blocks (256 KiB buffers unless `--buffer-kib`, 5 worker threads, a third of the
//! records sync span events) with micromegas-tracing's own `ThreadStream`, encoded by
//! micromegas's sink, into an embedded lake (SQLite + folder). `run` times the queries (median
//! of 5) and prints the scan counters. `scan` runs one full scan in a fresh process and prints
//! its peak resident memory.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use common::lakes::store;
use common::realistic::{Shape, realistic};
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Int64Type;
use datafusion::physical_plan::{ExecutionPlan, collect, execute_stream};
use datafusion::prelude::SessionContext;
use datafusion_async_events::provider::AsyncEventsExec;
use datafusion_async_events::{Lake, register};
use futures::StreamExt;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    mode: String,
    dir: PathBuf,
    events: usize,
    /// `build`: the thread buffer size (micromegas flushes a block when it is full).
    buffer_kib: usize,
    query: String,
    /// `spans`: runs of each query.
    runs: usize,
    /// `spans-rss`: runs of the query (for profiling a warm process).
    repeat: usize,
    /// `spans-rss`: print EXPLAIN ANALYZE of the query instead.
    explain: bool,
    /// `export-rss`: the `async-events` command line to measure.
    cli: PathBuf,
}

fn args() -> Args {
    let mut it = std::env::args().skip(1);
    let mode = it.next().unwrap_or_else(|| "run".into());
    let mut out = Args {
        mode,
        dir: std::env::temp_dir().join("async-events-bench"),
        events: 2_000_000,
        buffer_kib: 256,
        query: "spans".into(),
        runs: 9,
        repeat: 1,
        explain: false,
        cli: PathBuf::from("target/release/async-events"),
    };
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--dir" => out.dir = PathBuf::from(value()),
            "--events" => out.events = value().parse().expect("--events N"),
            "--buffer-kib" => out.buffer_kib = value().parse().expect("--buffer-kib N"),
            "--query" => out.query = value(),
            "--runs" => out.runs = value().parse().expect("--runs N"),
            "--repeat" => out.repeat = value().parse().expect("--repeat N"),
            "--explain" => out.explain = true,
            "--cli" => out.cli = PathBuf::from(value()),
            other => panic!("unknown argument {other}"),
        }
    }
    out
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn current_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU time run by all threads of this process so far (Linux `schedstat`, ns).
fn cpu_time() -> Duration {
    let ns: u64 = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
}

fn scan_metrics(plan: &Arc<dyn ExecutionPlan>, out: &mut HashMap<String, usize>) {
    if plan.downcast_ref::<AsyncEventsExec>().is_some()
        && let Some(m) = plan.metrics()
    {
        for metric in m.iter() {
            *out.entry(metric.value().name().to_string()).or_default() += metric.value().as_usize();
        }
    }
    for child in plan.children() {
        scan_metrics(child, out);
    }
}

/// Runs a query, consuming its output as a stream; returns the rows, time and scan counters.
async fn measure(ctx: &SessionContext, sql: &str) -> (usize, Duration, HashMap<String, usize>) {
    let started = Instant::now();
    let plan = ctx
        .sql(sql)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let mut stream = execute_stream(plan.clone(), ctx.task_ctx()).unwrap();
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        rows += batch.unwrap().num_rows();
    }
    let elapsed = started.elapsed();
    let mut m = HashMap::new();
    scan_metrics(&plan, &mut m);
    (rows, elapsed, m)
}

fn lake_paths(dir: &std::path::Path) -> PathBuf {
    dir.join("lake")
}

async fn process_id(ctx: &Lake) -> uuid::Uuid {
    ctx.processes(1).await.unwrap()[0].process.process_id
}

/// Adds to the lake a process (recorded three hours ago, so that the benchmark's own process
/// stays the latest) whose one block is an LZ4 bomb: its objects buffer is a 1 GiB run of zeros
/// compressed to a few MiB. For `flight_load --bomb-process`.
async fn bomb(args: &Args) {
    use common::producer::RawBlock;
    use datafusion_async_events::format::{BlockPayload, compress_frame};
    use datafusion_async_events::lake::LakeOptions;
    let lake = Lake::embedded_with(lake_paths(&args.dir), LakeOptions::writable())
        .await
        .unwrap();
    let shape = Shape {
        streams: 1,
        blocks_per_stream: 1,
        buffer_bytes: 64 * 1024,
        block_duration: chrono::Duration::seconds(6),
    };
    let mut rec = realistic(shape, chrono::Utc::now() - chrono::Duration::hours(3), 7);
    let block = &mut rec.blocks[0];
    let mut payload = BlockPayload::from_cbor(&block.payload).unwrap();
    payload.objects = compress_frame(&vec![0u8; 1 << 30]);
    *block = RawBlock::new(block.record.clone(), payload.to_cbor());
    let size = block.payload.len();
    store(&lake, &rec).await;
    println!(
        "bomb process {}: one block of {:.1} MiB whose objects inflate to 1 GiB",
        rec.process.process_id,
        size as f64 / (1 << 20) as f64
    );
}

/// Records a lake of one process with about `events` async events in `buffer_kib` thread
/// buffers into `dir`.
async fn build(dir: &std::path::Path, events: usize, buffer_kib: usize) {
    let shape = Shape {
        streams: 5,
        // about 4 540 async events per 256 KiB of buffer
        blocks_per_stream: (events * 256 / buffer_kib / 5 / 4_540).max(1),
        buffer_bytes: buffer_kib * 1024,
        block_duration: chrono::Duration::seconds(6),
    };
    let start = chrono::Utc::now() - chrono::Duration::hours(2);
    let t = Instant::now();
    let rec = realistic(shape, start, 2026);
    let generated = t.elapsed();
    let _ = std::fs::remove_dir_all(dir);
    let lake = Lake::create_embedded(lake_paths(dir)).await.unwrap();
    let t = Instant::now();
    store(&lake, &rec).await;
    let bytes: usize = rec.blocks.iter().map(|b| b.payload.len()).sum();
    println!(
        "lake {}: process {}, {} streams, {} blocks, {:.1} MiB of blobs (generated in {:.1}s, stored in {:.1}s)",
        dir.display(),
        rec.process.process_id,
        rec.streams.len(),
        rec.blocks.len(),
        bytes as f64 / (1 << 20) as f64,
        generated.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
}

/// Peak RSS and wall time of CSV exports of a whole process by the command line, one fresh
/// process per run, for lakes of 64 KiB, 1 MiB and 10 MiB thread buffers.
async fn export_rss(args: &Args) {
    use std::io::Read;
    for kib in [64, 1024, 10240] {
        let dir = PathBuf::from(format!("{}-{kib}", args.dir.display()));
        if !dir.join("lake").exists() {
            build(&dir, args.events, kib).await;
        }
        let lake_dir = lake_paths(&dir);
        let lake = Lake::embedded(lake_dir.clone()).await.unwrap();
        let pid = process_id(&lake).await;
        let blocks = lake.processes(1).await.unwrap()[0].cpu_blocks;
        let db = format!("sqlite://{}", lake_dir.join("telemetry.db").display());
        let store = url::Url::from_directory_path(&lake_dir)
            .unwrap()
            .to_string();
        let mut peaks = Vec::new();
        let mut walls = Vec::new();
        let mut lines = 0;
        for _ in 0..args.runs {
            let t = Instant::now();
            // Reaped by `wait4` below, which also gives its peak RSS.
            #[allow(clippy::zombie_processes)]
            let mut child = std::process::Command::new(&args.cli)
                .args(["--db", &db, "--store", &store, "sql", "--format", "csv"])
                .arg(format!("SELECT * FROM async_events('{pid}')"))
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("the command line runs");
            let mut out = child.stdout.take().unwrap();
            let mut buf = vec![0u8; 1 << 16];
            lines = 0;
            loop {
                let n = out.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                lines += buf[..n].iter().filter(|&&b| b == b'\n').count();
            }
            let mut status = 0;
            // SAFETY: an empty rusage for wait4 to fill, for a child of this process.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            let waited = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
            assert_eq!(waited, child.id() as i32, "wait4");
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "export failed"
            );
            walls.push(t.elapsed().as_secs_f64());
            peaks.push(usage.ru_maxrss as f64 / 1024.0);
        }
        let show = |v: &[f64], unit: &str| {
            v.iter()
                .map(|x| format!("{x:.0}{unit}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "{kib} KiB buffers: {blocks} blocks, {} rows; peak RSS {}; wall {}",
            lines.saturating_sub(1),
            show(&peaks, " MiB"),
            walls
                .iter()
                .map(|x| format!("{x:.2} s"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

#[tokio::main]
async fn main() {
    let args = args();
    match args.mode.as_str() {
        "build" => build(&args.dir, args.events, args.buffer_kib).await,
        "export-rss" => export_rss(&args).await,
        "bomb" => bomb(&args).await,
        "one-stream" => one_stream(&args).await,
        "scan" => {
            let lake = Lake::embedded(lake_paths(&args.dir)).await.unwrap();
            let pid = process_id(&lake).await;
            let ctx = SessionContext::new();
            register(&ctx, lake);
            let before = current_rss_mib();
            let (rows, elapsed, m) =
                measure(&ctx, &format!("SELECT * FROM async_events('{pid}')")).await;
            println!(
                "full scan: {rows} rows in {:.2}s ({:.2} M events/s), blocks fetched {}; RSS before {:.0} MiB, peak {:.0} MiB",
                elapsed.as_secs_f64(),
                rows as f64 / elapsed.as_secs_f64() / 1e6,
                m.get("blocks_fetched").unwrap_or(&0),
                before,
                peak_rss_mib()
            );
        }
        "run" => {
            let lake = Lake::embedded(lake_paths(&args.dir)).await.unwrap();
            let summary = &lake.processes(1).await.unwrap()[0];
            let pid = summary.process.process_id;
            let ctx = SessionContext::new();
            register(&ctx, lake.clone());
            let total: i64 = {
                let batches = collect(
                    ctx.sql(&format!("SELECT count(*) FROM async_events('{pid}')"))
                        .await
                        .unwrap()
                        .create_physical_plan()
                        .await
                        .unwrap(),
                    ctx.task_ctx(),
                )
                .await
                .unwrap();
                batches[0].column(0).as_primitive::<Int64Type>().value(0)
            };
            let start = summary.process.start_time;
            let end = summary.last_block_end.unwrap();
            let span = end - start;
            let mid = start + span / 2;
            let window = (mid, mid + span / 100);
            let fmt = |t: chrono::DateTime<chrono::Utc>| {
                t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
            };
            let streams = lake.cpu_streams(pid, None).await.unwrap();
            let stream = streams[0].stream_id;
            println!(
                "process {pid}: {total} async events, {} blocks in {} streams, lifetime {:.0}s",
                summary.cpu_blocks,
                summary.cpu_streams,
                span.num_milliseconds() as f64 / 1e3
            );
            let queries = [
                ("full scan (all columns)", format!("SELECT * FROM async_events('{pid}')")),
                ("count(*)", format!("SELECT count(*) FROM async_events('{pid}')")),
                ("1% time window", format!("SELECT * FROM async_events('{pid}') WHERE time BETWEEN '{}' AND '{}'", fmt(window.0), fmt(window.1))),
                ("one stream_id", format!("SELECT * FROM async_events('{pid}') WHERE stream_id = '{stream}'")),
                ("ORDER BY time LIMIT 10", format!("SELECT * FROM async_events('{pid}') ORDER BY time LIMIT 10")),
                ("ORDER BY time DESC LIMIT 10", format!("SELECT * FROM async_events('{pid}') ORDER BY time DESC LIMIT 10")),
                (
                    "begin/end duration self-join",
                    format!(
                        "SELECT b.name, count(*), avg(CAST(e.time - b.time AS BIGINT)) FROM async_events('{pid}') b
                         JOIN async_events('{pid}') e ON b.span_id = e.span_id
                         WHERE b.event_type = 'begin' AND e.event_type = 'end' GROUP BY b.name"
                    ),
                ),
            ];
            println!(
                "| query | median time | rows | blocks fetched / listed | shared | events decoded | M events/s |"
            );
            println!("|---|---|---|---|---|---|---|");
            for (name, sql) in &queries {
                let mut runs = Vec::new();
                for _ in 0..5 {
                    runs.push(measure(&ctx, sql).await);
                }
                runs.sort_by_key(|r| r.1);
                let (rows, time, m) = &runs[runs.len() / 2];
                let get = |k: &str| m.get(k).copied().unwrap_or(0);
                println!(
                    "| {name} | {:.1} ms | {rows} | {} / {} | {} | {} | {:.2} |",
                    time.as_secs_f64() * 1e3,
                    get("blocks_fetched"),
                    get("blocks_listed"),
                    get("blocks_shared"),
                    get("events_decoded"),
                    get("events_decoded") as f64 / time.as_secs_f64() / 1e6,
                );
            }
        }
        "spans" | "spans-rss" => {
            let lake = Lake::embedded(lake_paths(&args.dir)).await.unwrap();
            let pid = process_id(&lake).await;
            let ctx = SessionContext::new();
            register(&ctx, lake);
            // The same answer two ways: spans paired by the scan, and the LEFT JOIN it replaces.
            let spans = format!(
                "SELECT name, count(*), avg(duration), max(duration) FROM async_spans('{pid}') GROUP BY name"
            );
            let join = format!(
                "SELECT b.name, count(*), avg(e.time - b.time), max(e.time - b.time) \
                 FROM async_events('{pid}') b LEFT JOIN async_events('{pid}') e \
                 ON b.span_id = e.span_id AND e.event_type = 'end' \
                 WHERE b.event_type = 'begin' GROUP BY b.name"
            );
            // The thread scopes of the same blocks, paired into spans.
            let thread = format!(
                "SELECT name, count(*), avg(duration), max(duration) FROM thread_spans('{pid}') GROUP BY name"
            );
            // The floor: the events scan reading the same columns as async_spans, no pairing.
            let floor = format!(
                "SELECT count(name), count(event_type), max(time), max(span_id) \
                 FROM async_events('{pid}')"
            );
            if args.mode == "spans-rss" {
                let sql = match args.query.as_str() {
                    "join" => &join,
                    "floor" => &floor,
                    "thread" => &thread,
                    _ => &spans,
                };
                if args.explain {
                    let batches = ctx
                        .sql(&format!("EXPLAIN ANALYZE {sql}"))
                        .await
                        .unwrap()
                        .collect()
                        .await
                        .unwrap();
                    println!(
                        "{}",
                        datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap()
                    );
                    return;
                }
                let before = current_rss_mib();
                for _ in 0..args.repeat {
                    let (rows, elapsed, _) = measure(&ctx, sql).await;
                    println!(
                        "{}: {rows} rows in {:.2}s; RSS before {before:.0} MiB, peak {:.0} MiB",
                        args.query,
                        elapsed.as_secs_f64(),
                        peak_rss_mib()
                    );
                }
                return;
            }
            let answer = |sql: String| {
                let ctx = ctx.clone();
                async move {
                    let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
                    let mut rows = common::sql::lines(&batches);
                    rows.sort();
                    rows
                }
            };
            assert_eq!(
                answer(spans.clone()).await,
                answer(join.clone()).await,
                "same answer"
            );
            // Interleaved (spans, join, spans, …) so that both see the same load; CPU time is
            // what all threads of the process ran, less sensitive to other work on the machine.
            let queries = [
                ("async_spans", &spans),
                ("LEFT JOIN", &join),
                ("scan alone (floor)", &floor),
                ("thread_spans", &thread),
            ];
            let mut times: Vec<Vec<(Duration, Duration)>> = vec![Vec::new(); queries.len()];
            for _ in 0..args.runs {
                for (i, (_, sql)) in queries.iter().enumerate() {
                    let cpu = cpu_time();
                    let wall = measure(&ctx, sql).await.1;
                    times[i].push((wall, cpu_time().saturating_sub(cpu)));
                }
            }
            let mut medians = Vec::new();
            for ((name, _), runs) in queries.iter().zip(&mut times) {
                let mut cpu: Vec<Duration> = runs.iter().map(|r| r.1).collect();
                cpu.sort();
                runs.sort();
                let median = runs[runs.len() / 2].0;
                println!(
                    "{name}: median {:.1} ms, CPU {:.1} ms (runs: {:?} ms)",
                    median.as_secs_f64() * 1e3,
                    cpu[cpu.len() / 2].as_secs_f64() * 1e3,
                    runs.iter().map(|t| t.0.as_millis()).collect::<Vec<_>>()
                );
                medians.push((median, cpu[cpu.len() / 2]));
            }
            println!(
                "async_spans is {:.2}x faster than the self-join ({:.2}x less CPU)",
                medians[1].0.as_secs_f64() / medians[0].0.as_secs_f64(),
                medians[1].1.as_secs_f64() / medians[0].1.as_secs_f64()
            );
            for (name, i) in [("async_spans", 0), ("thread_spans", 3)] {
                println!(
                    "{name} / floor: {:.2}x wall, {:.2}x CPU",
                    medians[i].0.as_secs_f64() / medians[2].0.as_secs_f64(),
                    medians[i].1.as_secs_f64() / medians[2].1.as_secs_f64()
                );
            }
        }
        other => panic!("unknown mode {other}: build, run, scan, spans or spans-rss"),
    }
}

/// A process with one thread stream, read by 1 and by 2 partitions.
async fn one_stream(args: &Args) {
    let dir = lake_paths(&args.dir);
    if !dir
        .join(datafusion_async_events::lake::EMBEDDED_DB_FILE)
        .exists()
    {
        let shape = Shape {
            streams: 1,
            // about 4 540 async events per 256 KiB block
            blocks_per_stream: (args.events / 4_540).max(2),
            buffer_bytes: 256 * 1024,
            block_duration: chrono::Duration::seconds(6),
        };
        let rec = realistic(shape, chrono::Utc::now() - chrono::Duration::hours(2), 2027);
        let lake = Lake::create_embedded(&dir).await.unwrap();
        store(&lake, &rec).await;
        println!("built {}: {} blocks", dir.display(), rec.blocks.len());
    }
    let lake = Lake::embedded(&dir).await.unwrap();
    let pid = process_id(&lake).await;
    let queries = [
        ("full scan", format!("SELECT * FROM async_events('{pid}')")),
        (
            "aggregate",
            format!(
                "SELECT name, count(*), max(depth) FROM async_events('{pid}') \
                 WHERE event_type = 'begin' GROUP BY name"
            ),
        ),
    ];
    println!("| query | rows | 1 partition | 2 partitions | speed-up |");
    println!("|---|---|---|---|---|");
    for (what, sql) in &queries {
        let mut medians = Vec::new();
        let mut rows = 0;
        for partitions in [1, 2] {
            let config =
                datafusion::prelude::SessionConfig::new().with_target_partitions(partitions);
            let ctx = SessionContext::new_with_config(config);
            register(&ctx, lake.clone());
            measure(&ctx, sql).await; // warm-up: the page cache, compiled layouts
            let mut times = Vec::new();
            for _ in 0..5 {
                let (n, elapsed, _) = measure(&ctx, sql).await;
                rows = n;
                times.push(elapsed);
            }
            times.sort();
            medians.push(times[times.len() / 2]);
        }
        println!(
            "| {what} | {rows} | {:.0} ms | {:.0} ms | {:.2}× |",
            medians[0].as_secs_f64() * 1e3,
            medians[1].as_secs_f64() * 1e3,
            medians[0].as_secs_f64() / medians[1].as_secs_f64()
        );
    }
}
