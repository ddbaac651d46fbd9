//! Planning a fleet-sized process: how a scan of 1 000 thread streams and 100 000 blocks is cut
//! into partitions for several `target_partitions`, and how long planning takes.
//!
//! Metadata only: an embedded lake (SQLite) holds the process, its streams (with the real
//! metadata of a micromegas 0.33 thread stream, so that their layouts compile) and the rows of
//! its blocks, but no blob. Planning `SELECT * FROM async_events(pid)` runs the real path (the
//! metadata queries, pruning, the split of busy streams into runs, layouts) and fetches nothing.
//!
//! ```text
//! cargo run --release --features recorder --example plan_bench -- [--runs 7] [--targets 2,8,32,128,1024]
//! ```
//!
//! Three processes of 1 000 streams and exactly 100 000 blocks each:
//! - `uniform`: every stream 100 full blocks (about 4 500 events each);
//! - `8 busy`: 8 streams of 6 000 full blocks, 992 light streams sharing the other 52 000
//!   (52 ± 32 blocks each, flushed by time rather than full: 50 to 1 500 events);
//! - `1 hot`: one stream (a current-thread runtime) of 50 000 full blocks, 999 light streams
//!   sharing the other 50 000 (50 ± 32 blocks each).
//!
//! For each target it prints the partitions planned, the largest partition over the mean (blocks
//! and events), the same ratio of events for `target` workers that take the partitions largest
//! first (how evenly they can keep `target` cores busy) and for `target` tasks that take equal
//! counts of consecutive partitions (as datafusion-distributed's partition isolator does), and
//! the planning time (median of `--runs` after one cold run, which also compiles the layouts).
//! A last table cuts each scan for 2 to 256 tasks of a distributed engine as the `distributed`
//! feature does (`AsyncEventsExec::task_variants`), weighing blocks by their events (block cost 1)
//! or alone (cost 10⁹), and prints the largest task over the mean.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use chrono::{DateTime, Utc};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_async_events::lake::{EMBEDDED_DB_FILE, ProcessRecord, TimeRange};
use datafusion_async_events::provider::AsyncEventsExec;
use datafusion_async_events::{Lake, register};
use micromegas_tracing::dispatch::make_process_info;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

const STREAMS: usize = 1_000;
const BLOCKS: usize = 100_000;
/// The process's lifetime: every stream's blocks tile it (a busy stream's blocks are short).
const LIFETIME_NS: i64 = 100_000 * 1_000_000_000;

struct Args {
    runs: usize,
    targets: Vec<usize>,
}

fn args() -> Args {
    let mut out = Args {
        runs: 7,
        targets: vec![2, 8, 32, 128, 1024],
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--runs" => out.runs = value().parse().expect("--runs N"),
            "--targets" => {
                out.targets = value()
                    .split(',')
                    .map(|t| t.parse().expect("--targets N,N,..."))
                    .collect()
            }
            other => panic!("unknown argument {other}"),
        }
    }
    out
}

/// splitmix64: a deterministic sequence, so every run plans the same process.
struct Sequence(u64);

impl Sequence {
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        lo + (z ^ (z >> 31)) % (hi - lo + 1)
    }
}

/// A stream of the simulated process: its block count and the events of each of its blocks.
struct StreamShape {
    blocks: usize,
    events: (u64, u64),
}

const FULL: (u64, u64) = (4_000, 5_000);
const LIGHT: (u64, u64) = (50, 1_500);

/// `n` light streams sharing `blocks` blocks, `blocks / n` ± 32 each (a pair's counts move in
/// opposite directions, so the total stays exact).
fn light_streams(n: usize, blocks: usize, seq: &mut Sequence) -> Vec<StreamShape> {
    let mut counts: Vec<usize> = (0..n)
        .map(|i| blocks / n + usize::from(i < blocks % n))
        .collect();
    for pair in counts.chunks_mut(2) {
        if let [a, b] = pair {
            let d = seq.between(0, 32) as usize;
            *a -= d;
            *b += d;
        }
    }
    counts
        .into_iter()
        .map(|blocks| StreamShape {
            blocks,
            events: LIGHT,
        })
        .collect()
}

fn cases(seq: &mut Sequence) -> Vec<(&'static str, Vec<StreamShape>)> {
    let full = |blocks| StreamShape {
        blocks,
        events: FULL,
    };
    let uniform = (0..STREAMS).map(|_| full(BLOCKS / STREAMS)).collect();
    let mut busy: Vec<StreamShape> = (0..8).map(|_| full(6_000)).collect();
    busy.extend(light_streams(STREAMS - 8, BLOCKS - 48_000, seq));
    let mut hot = vec![full(50_000)];
    hot.extend(light_streams(STREAMS - 1, BLOCKS - 50_000, seq));
    vec![("uniform", uniform), ("8 busy", busy), ("1 hot", hot)]
}

/// Writes the process, its streams and its block rows; returns the process id.
async fn fill(
    lake: &Lake,
    dir: &std::path::Path,
    shapes: &[StreamShape],
    seq: &mut Sequence,
) -> Uuid {
    // 2026-11-29T00:00:00Z
    let start: DateTime<Utc> = DateTime::from_timestamp(1_795_910_400, 0).unwrap();
    let mut info = make_process_info(Uuid::new_v4(), None, HashMap::new());
    info.tsc_frequency = 1_000_000_000;
    info.start_time = start;
    info.start_ticks = 0;
    let process = ProcessRecord::from(&info);
    lake.insert_process(&process).await.expect("process");
    let pool = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.join(EMBEDDED_DB_FILE).display()
    ))
    .await
    .expect("open the lake's database");
    let mut stream_ids = Vec::with_capacity(shapes.len());
    for s in 0..shapes.len() {
        let stream_id = Uuid::new_v4();
        let properties = HashMap::from([
            ("thread-name".to_string(), format!("worker-{s}")),
            ("thread-id".to_string(), format!("{}", 1000 + s)),
        ]);
        let stream = common::producer::thread_stream(process.process_id, stream_id, &properties);
        lake.insert_stream(&stream).await.expect("stream");
        stream_ids.push(stream_id);
    }
    // The block rows in one transaction (through the lake, a commit per row: 12 s per 100 000).
    let mut tx = pool.begin().await.expect("transaction");
    for (s, (shape, stream_id)) in shapes.iter().zip(&stream_ids).enumerate() {
        let duration = LIFETIME_NS / shape.blocks as i64;
        // Threads flush at different moments: each stream's blocks are offset a little.
        let offset = s as i64 * 1_000_000;
        let mut object_offset = 0i64;
        for k in 0..shape.blocks {
            let begin = k as i64 * duration + offset;
            let end = begin + duration;
            let events = seq.between(shape.events.0, shape.events.1) as i64;
            sqlx::query(
                "INSERT INTO blocks (block_id, stream_id, process_id, begin_time, begin_ticks,
                    end_time, end_ticks, nb_objects, object_offset, payload_size)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(Uuid::new_v4().to_string())
            .bind(stream_id.to_string())
            .bind(process.process_id.to_string())
            .bind(start.timestamp_nanos_opt().unwrap() + begin)
            .bind(begin)
            .bind(start.timestamp_nanos_opt().unwrap() + end)
            .bind(end)
            .bind(events)
            .bind(object_offset)
            .bind(256 * 1024i64)
            .execute(&mut *tx)
            .await
            .expect("block row");
            object_offset += events;
        }
    }
    tx.commit().await.expect("commit");
    process.process_id
}

fn find_scan(plan: &Arc<dyn ExecutionPlan>) -> Option<&AsyncEventsExec> {
    if let Some(scan) = plan.downcast_ref::<AsyncEventsExec>() {
        return Some(scan);
    }
    plan.children().into_iter().find_map(find_scan)
}

async fn plan_of(ctx: &SessionContext, sql: &str) -> Arc<dyn ExecutionPlan> {
    ctx.sql(sql)
        .await
        .expect("SQL")
        .create_physical_plan()
        .await
        .expect("plan")
}

fn max_over_mean(values: impl IntoIterator<Item = u64>) -> f64 {
    let values: Vec<u64> = values.into_iter().collect();
    let max = values.iter().copied().max().unwrap_or(0) as f64;
    let mean = values.iter().sum::<u64>() as f64 / values.len().max(1) as f64;
    max / mean
}

/// The load of `workers` workers that each take the largest partition left when they are free
/// (events, as the scan weighs blocks): how evenly the partitions can keep them busy.
fn worker_loads(partition_events: &[u64], workers: usize) -> Vec<u64> {
    let mut sorted = partition_events.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let mut free: BinaryHeap<Reverse<(u64, usize)>> =
        (0..workers).map(|w| Reverse((0, w))).collect();
    let mut loads = vec![0u64; workers];
    for events in sorted {
        let Reverse((load, w)) = free.pop().expect("at least one worker");
        loads[w] = load + events;
        free.push(Reverse((loads[w], w)));
    }
    loads
}

/// The load of `tasks` tasks that each take an equal count of consecutive partitions, as
/// datafusion-distributed's partition isolator hands a leaf's partitions to its tasks.
fn task_loads(partition_events: &[u64], tasks: usize) -> Vec<u64> {
    let n = partition_events.len();
    (0..tasks)
        .map(|k| {
            partition_events[k * n / tasks..(k + 1) * n / tasks]
                .iter()
                .sum()
        })
        .collect()
}

fn median_ms(mut times: Vec<std::time::Duration>) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let args = args();
    let dir = tempfile::tempdir().expect("temp dir");
    let lake = Lake::create_embedded(dir.path())
        .await
        .expect("embedded lake");
    let mut seq = Sequence(20_261_130);
    let mut processes = Vec::new();
    for (name, shapes) in cases(&mut seq) {
        let filled = Instant::now();
        let pid = fill(&lake, dir.path(), &shapes, &mut seq).await;
        let blocks: usize = shapes.iter().map(|s| s.blocks).sum();
        println!(
            "{name}: {} streams, {blocks} blocks written in {:.1} s",
            shapes.len(),
            filled.elapsed().as_secs_f64()
        );
        processes.push((name, pid));
    }
    println!();
    // The metadata queries alone, the floor of planning.
    println!("| process | listing the streams and blocks (median) |");
    println!("|---|---|");
    for (name, pid) in &processes {
        let mut times = Vec::new();
        for _ in 0..args.runs {
            let t = Instant::now();
            let streams = lake.cpu_streams(*pid, None).await.expect("streams");
            let ids: Vec<Uuid> = streams.iter().map(|s| s.stream_id).collect();
            let listed = lake
                .blocks(*pid, &ids, TimeRange::all())
                .await
                .expect("blocks");
            assert_eq!(listed.len(), BLOCKS);
            times.push(t.elapsed());
        }
        println!("| {name} | {:.0} ms |", median_ms(times));
    }
    println!();
    println!(
        "| process | target | partitions | largest/mean partition: blocks | events | \
         `target` workers, largest first | `target` tasks, consecutive slices | \
         planning: median (cold) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, pid) in &processes {
        for &target in &args.targets {
            let ctx = SessionContext::new_with_config(
                SessionConfig::new().with_target_partitions(target),
            );
            register(&ctx, lake.clone());
            let sql = format!("SELECT * FROM async_events('{pid}')");
            let mut times = Vec::new();
            let mut sizes = Vec::new();
            let mut cold = None;
            for _ in 0..=args.runs {
                let t = Instant::now();
                let plan = plan_of(&ctx, &sql).await;
                let elapsed = t.elapsed();
                sizes = find_scan(&plan)
                    .expect("an AsyncEventsExec")
                    .partition_sizes();
                match cold {
                    None => cold = Some(elapsed),
                    Some(_) => times.push(elapsed),
                }
            }
            let blocks: usize = sizes.iter().map(|s| s.0).sum();
            assert_eq!(blocks, BLOCKS, "every block planned once");
            let events: Vec<u64> = sizes.iter().map(|s| s.1).collect();
            println!(
                "| {name} | {target} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} ms ({:.0} ms) |",
                sizes.len(),
                max_over_mean(sizes.iter().map(|s| s.0 as u64)),
                max_over_mean(events.iter().copied()),
                max_over_mean(worker_loads(&events, target)),
                max_over_mean(task_loads(&events, target)),
                median_ms(times),
                cold.unwrap_or_default().as_secs_f64() * 1e3,
            );
        }
    }
    // What the `distributed` feature hands to the tasks of datafusion-distributed:
    // `AsyncEventsExec::task_variants`, equal shares of events as contiguous slices.
    println!();
    println!(
        "| process | tasks | block cost (events) | partitions per task | \
         largest/mean task: events | blocks | splitting (median) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, pid) in &processes {
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(8));
        register(&ctx, lake.clone());
        let sql = format!("SELECT * FROM async_events('{pid}')");
        let plan = plan_of(&ctx, &sql).await;
        let scan = find_scan(&plan).expect("an AsyncEventsExec");
        for (tasks, block_cost) in [2, 4, 16, 64, 256]
            .into_iter()
            .flat_map(|t| [(t, 1), (t, 1_000_000_000)])
        // events, or blocks alone
        {
            let mut times = Vec::new();
            let mut variants = Vec::new();
            for _ in 0..args.runs {
                let t = Instant::now();
                variants = scan.task_variants(tasks, 8, block_cost);
                times.push(t.elapsed());
            }
            let loads: Vec<(u64, u64)> = variants
                .iter()
                .map(|v| {
                    let sizes = v.partition_sizes();
                    (
                        sizes.iter().map(|s| s.1).sum(),
                        sizes.iter().map(|s| s.0 as u64).sum(),
                    )
                })
                .collect();
            let blocks: u64 = loads.iter().map(|l| l.1).sum();
            assert_eq!(blocks as usize, BLOCKS, "every block in one task");
            println!(
                "| {name} | {tasks} | {block_cost} | {} | {:.3} | {:.3} | {:.1} ms |",
                variants[0].partition_sizes().len(),
                max_over_mean(loads.iter().map(|l| l.0)),
                max_over_mean(loads.iter().map(|l| l.1)),
                median_ms(times),
            );
        }
    }
}
