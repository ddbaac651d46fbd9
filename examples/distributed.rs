//! A query on datafusion-distributed workers started in this process, against the same query run
//! locally: the distributed plan, the rows (they must be equal), the time and the bytes shipped.
//!
//! ```text
//! cargo run --release --features distributed,recorder --example distributed               # records a demo lake
//! cargo run --release --features distributed,recorder --example distributed -- --dir /tmp/ae-bench --rounds 7
//! ```
//!
//! Without `--dir` it records the quickstart's demo service into a temporary embedded lake.
//! `--dir` opens an embedded lake there (`DIR/lake`, as `sql_bench build` writes it) and queries
//! its newest process. Four workers run in this process ([`LocalCluster`]: gRPC over in-memory
//! connections, so plans and batches are encoded, sent and decoded between stages as between
//! machines); each query runs locally and with 2 and 4 tasks per stage. On one machine a
//! distributed run cannot beat a local one (the same cores, plus the encoding): the figures
//! show what distribution costs, and how little an aggregate ships.

use datafusion::arrow::array::RecordBatch;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_async_events::distributed::LocalCluster;
use datafusion_async_events::{Lake, register};
use datafusion_distributed::{
    DistributedExt, DistributedMetricsFormat, display_plan_ascii,
    rewrite_distributed_plan_with_metrics,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WORKERS: usize = 4;

struct Args {
    dir: Option<String>,
    rounds: usize,
}

fn args() -> Args {
    let mut out = Args {
        dir: None,
        rounds: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--dir" => out.dir = Some(value()),
            "--rounds" => out.rounds = value().parse().expect("--rounds N"),
            other => panic!("unknown argument {other}"),
        }
    }
    out
}

/// Sums a metric over every node of an executed plan (the stages under the network boundaries
/// included).
fn metric_sum(plan: &Arc<dyn ExecutionPlan>, name: &str) -> usize {
    let own: usize = plan.metrics().map_or(0, |m| {
        m.iter()
            .filter(|m| m.value().name() == name)
            .map(|m| m.value().as_usize())
            .sum()
    });
    own + plan
        .children()
        .into_iter()
        .map(|c| metric_sum(c, name))
        .sum::<usize>()
}

fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut lines: Vec<String> = datafusion::arrow::util::pretty::pretty_format_batches(batches)
        .expect("format")
        .to_string()
        .lines()
        .filter(|l| l.starts_with("| "))
        .skip(1)
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

async fn run(ctx: &SessionContext, sql: &str) -> (Arc<dyn ExecutionPlan>, Vec<RecordBatch>) {
    let plan = ctx
        .sql(sql)
        .await
        .expect("SQL")
        .create_physical_plan()
        .await
        .expect("plan");
    let batches = collect(plan.clone(), ctx.task_ctx()).await.expect("query");
    (plan, batches)
}

fn median(mut times: Vec<Duration>) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args();
    let temp = tempfile::tempdir()?;
    let (lake, pid) = match &args.dir {
        Some(dir) => {
            let lake = Lake::embedded(std::path::Path::new(dir).join("lake")).await?;
            let pid = lake.processes(1).await?[0].process.process_id;
            (lake, pid)
        }
        None => {
            let lake = Lake::create_embedded(temp.path()).await?;
            let recorder = lake.clone();
            let (pid, _) = tokio::task::spawn_blocking(move || {
                datafusion_async_events::recorder::demo::record(recorder, 40)
            })
            .await??;
            (lake, pid)
        }
    };
    let local = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
    register(&local, lake.clone());
    let cluster = LocalCluster::start(WORKERS)?;
    let mut sessions = vec![("local".to_string(), local)];
    for tasks in [2, 4] {
        let state = cluster
            .session_builder(SessionConfig::new().with_target_partitions(2))
            .with_distributed_max_tasks_per_stage(tasks)?
            .build();
        let ctx = SessionContext::new_with_state(state);
        register(&ctx, lake.clone());
        // Every task reads a few blocks at least, so the stage takes all `tasks`.
        ctx.sql("SET async_events_distributed.blocks_per_task = 1")
            .await?
            .collect()
            .await?;
        sessions.push((format!("{tasks} tasks"), ctx));
    }
    let events = format!("async_events('{pid}')");
    let queries = [
        ("count", format!("SELECT count(*) FROM {events}")),
        (
            "aggregate",
            format!(
                "SELECT name, count(*), min(time), max(time) FROM {events} \
                 WHERE event_type = 'begin' GROUP BY name"
            ),
        ),
        (
            "self-join",
            format!(
                "SELECT b.name, count(*), avg(CAST(e.time - b.time AS BIGINT)) \
                 FROM {events} b JOIN {events} e ON b.span_id = e.span_id \
                 WHERE b.event_type = 'begin' AND e.event_type = 'end' GROUP BY b.name"
            ),
        ),
        (
            "spans",
            format!(
                "SELECT name, count(*), avg(duration), max(duration) \
                 FROM async_spans('{pid}') GROUP BY name"
            ),
        ),
        (
            "thread spans",
            format!(
                "SELECT name, count(*), avg(duration), max(duration) \
                 FROM thread_spans('{pid}') GROUP BY name"
            ),
        ),
        (
            "process spans",
            format!(
                "SELECT thread_name, count(*), sum(duration) \
                 FROM process_spans('{pid}', 'both') GROUP BY thread_name"
            ),
        ),
    ];
    let (plan, _) = run(&sessions[2].1, &queries[1].1).await;
    println!("The aggregate on {WORKERS} workers, 4 tasks per stage:\n");
    println!("{}", display_plan_ascii(plan.as_ref(), false));
    println!(
        "| query | run | median of {} | bytes shipped between stages | plan bytes sent |",
        args.rounds
    );
    println!("|---|---|---|---|---|");
    for (name, sql) in &queries {
        let (_, want) = run(&sessions[0].1, sql).await;
        for (label, ctx) in &sessions {
            // Interleaved rounds would mix the sessions' caches; each runs its rounds in a row
            // after one warm-up that also checks the rows.
            let (plan, got) = run(ctx, sql).await;
            assert_eq!(rows(&got), rows(&want), "{name} ({label}): other rows");
            let plan =
                rewrite_distributed_plan_with_metrics(plan, DistributedMetricsFormat::Aggregated)
                    .await?;
            let shipped = metric_sum(&plan, "bytes_transferred");
            let sent = metric_sum(&plan, "plan_bytes_sent");
            let mut times = Vec::new();
            for _ in 0..args.rounds {
                let t = Instant::now();
                run(ctx, sql).await;
                times.push(t.elapsed());
            }
            println!(
                "| {name} | {label} | {:.1} ms | {:.1} kB | {:.1} kB |",
                median(times),
                shipped as f64 / 1e3,
                sent as f64 / 1e3
            );
        }
    }
    Ok(())
}
