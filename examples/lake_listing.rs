//! How fast a lake lists the blocks of a 1% time window, on SQLite and PostgreSQL.
//!
//! Fills a lake with one process of `--blocks` blocks (default 100 000) over `--streams` thread
//! streams (default 10) that tile time back to back, then lists the blocks overlapping random
//! windows of 1% of the process's lifetime and prints the median time and the rows returned.
//!
//! ```text
//! cargo run --release --example lake_listing -- [--blocks N] [--streams N] [--postgres URL]
//! ```
//! `--postgres` (or `ASYNC_EVENTS_TEST_POSTGRES`) names a server where a fresh database is
//! created; without it only SQLite is measured.

use bytes::Bytes;
use chrono::{Duration, Utc};
use datafusion_async_events::Lake;
use datafusion_async_events::lake::{
    BlockRecord, LakeOptions, ProcessRecord, StreamRecord, TimeRange,
};
use std::time::Instant;
use uuid::Uuid;

struct Args {
    blocks: usize,
    streams: usize,
    postgres: Option<String>,
}

fn args() -> Args {
    let mut out = Args {
        blocks: 100_000,
        streams: 10,
        postgres: std::env::var("ASYNC_EVENTS_TEST_POSTGRES").ok(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--blocks" => out.blocks = value().parse().expect("--blocks N"),
            "--streams" => out.streams = value().parse().expect("--streams N"),
            "--postgres" => out.postgres = Some(value()),
            other => panic!("unknown argument {other}"),
        }
    }
    out
}

async fn fresh_database(admin: &str) -> String {
    use sqlx::Connection;
    let name = format!("listing_{}", Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .expect("connect to PostgreSQL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut conn)
        .await
        .expect("create database");
    let mut url = url::Url::parse(admin).expect("URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

async fn fill(lake: &Lake, blocks: usize, streams: usize) -> (Uuid, Vec<Uuid>, TimeRange) {
    let start = Utc::now() - Duration::days(2);
    let process = ProcessRecord {
        process_id: Uuid::new_v4(),
        exe: "bench".into(),
        username: "bench".into(),
        realname: "bench".into(),
        computer: "bench".into(),
        distro: "bench".into(),
        cpu_brand: "bench".into(),
        tsc_frequency: 1_000_000_000,
        start_time: start,
        start_ticks: 0,
        parent_process_id: None,
        properties: vec![],
    };
    lake.insert_process(&process).await.expect("process");
    let ids: Vec<Uuid> = (0..streams).map(|_| Uuid::new_v4()).collect();
    for id in &ids {
        let stream = StreamRecord {
            stream_id: *id,
            process_id: process.process_id,
            dependencies_metadata: vec![0x80],
            objects_metadata: vec![0x80],
            tags: vec!["cpu".into()],
            properties: vec![],
        };
        lake.insert_stream(&stream).await.expect("stream");
    }
    let per_stream = blocks / streams;
    let block_ns = 1_000_000_000i64; // one second per block
    for (s, id) in ids.iter().enumerate() {
        for k in 0..per_stream {
            // Streams are offset a little, as threads flush at different times.
            let begin = k as i64 * block_ns + s as i64 * 7_000_000;
            let block = BlockRecord {
                block_id: Uuid::new_v4(),
                stream_id: *id,
                process_id: process.process_id,
                begin_time: start + Duration::nanoseconds(begin),
                begin_ticks: begin,
                end_time: start + Duration::nanoseconds(begin + block_ns),
                end_ticks: begin + block_ns,
                nb_objects: 1000,
                object_offset: k as i64 * 1000,
                payload_size: 0,
            };
            lake.insert_block(&block, Bytes::from_static(b"\xa0"))
                .await
                .expect("block");
        }
    }
    let end = start + Duration::nanoseconds(per_stream as i64 * block_ns);
    (process.process_id, ids, TimeRange::between(start, end))
}

async fn measure(name: &str, lake: &Lake, blocks: usize, streams: usize) {
    let started = Instant::now();
    let (pid, ids, life) = fill(lake, blocks, streams).await;
    let fill_time = started.elapsed();
    let (begin, end) = (life.begin.unwrap(), life.end.unwrap());
    let span = (end - begin).num_nanoseconds().unwrap();
    let window = span / 100;
    let mut times = Vec::new();
    let mut rows = Vec::new();
    let mut seed = 12345u64;
    for _ in 0..41 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let at = (seed >> 11) as i64 % (span - window);
        let range = TimeRange::between(
            begin + Duration::nanoseconds(at),
            begin + Duration::nanoseconds(at + window),
        );
        let t = Instant::now();
        let listed = lake.blocks(pid, &ids, range).await.expect("list");
        times.push(t.elapsed());
        rows.push(listed.len());
    }
    times.sort();
    rows.sort();
    let t = Instant::now();
    let all = lake
        .blocks(pid, &ids, TimeRange::all())
        .await
        .expect("list all");
    let all_time = t.elapsed();
    println!(
        "{name:<10} blocks={:<7} fill={:>7.1}s  1% window: median {:>8.2} ms (min {:.2}, max {:.2}), rows median {} ({:.2}% of {})  full listing: {:.1} ms",
        all.len(),
        fill_time.as_secs_f64(),
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        rows[rows.len() / 2],
        100.0 * rows[rows.len() / 2] as f64 / all.len() as f64,
        all.len(),
        all_time.as_secs_f64() * 1e3,
    );
}

#[tokio::main]
async fn main() {
    let args = args();
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = Lake::open_with(
        &format!("sqlite://{}/telemetry.db", dir.path().display()),
        "memory://",
        LakeOptions::writable(),
    )
    .await
    .expect("SQLite lake");
    measure("sqlite", &sqlite, args.blocks, args.streams).await;
    if let Some(admin) = &args.postgres {
        let url = fresh_database(admin).await;
        let pg = Lake::open_with(&url, "memory://", LakeOptions::writable())
            .await
            .expect("PostgreSQL lake");
        measure("postgres", &pg, args.blocks, args.streams).await;
    } else {
        println!("postgres   skipped: pass --postgres URL or set ASYNC_EVENTS_TEST_POSTGRES");
    }
}
