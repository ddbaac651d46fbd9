//! Realistic thread blocks, written with micromegas-tracing's own `ThreadStream`: full buffers
//! (the dispatch's flush rule) of a service-like mix of async spans (plain, named, dynamically
//! named, tagged ends) nested a few levels deep, with about a third of the records being sync
//! thread span events. Deterministic (seeded), so benchmarks compare the same bytes.
//!
//! The process clock is pinned to 1 GHz: one tick is one nanosecond after `start_time`.

use super::producer::{RawProcess, Recording, encode_thread_block, thread_stream};
use super::rng::Rng;
use chrono::{DateTime, Duration, Utc};
use micromegas_tracing::dispatch::make_process_info;
use micromegas_tracing::event::TracingBlock;
use micromegas_tracing::levels::Verbosity;
use micromegas_tracing::property_set::{DynProperty, Property, PropertySet};
use micromegas_tracing::spans::*;
use micromegas_tracing::string_id::StringId;
use micromegas_tracing::time::DualTime;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

macro_rules! desc {
    ($name:literal, $target:literal, $file:literal, $line:literal) => {
        SpanMetadata {
            name: $name,
            location: SpanLocation {
                lod: Verbosity::Max,
                target: $target,
                module_path: $target,
                file: $file,
                line: $line,
            },
        }
    };
}

static DESCS: [SpanMetadata; 8] = [
    desc!("api::handle_request", "api", "src/api/mod.rs", 41),
    desc!("api::authenticate", "api::auth", "src/api/auth.rs", 17),
    desc!("store::load_user", "store", "src/store/user.rs", 88),
    desc!("store::query", "store::sql", "src/store/sql.rs", 120),
    desc!("cache::get", "cache", "src/cache.rs", 9),
    desc!("cache::put", "cache", "src/cache.rs", 31),
    desc!("render::page", "render", "src/render/page.rs", 64),
    desc!("net::send", "net", "src/net/send.rs", 12),
];
static SYNC: [SpanMetadata; 3] = [
    desc!("json::serialize", "json", "src/json.rs", 5),
    desc!("crypto::hash", "crypto", "src/crypto.rs", 77),
    desc!("compress::deflate", "compress", "src/compress.rs", 23),
];
static LOCS: [SpanLocation; 2] = [
    SpanLocation {
        lod: Verbosity::Max,
        target: "jobs",
        module_path: "jobs",
        file: "src/jobs.rs",
        line: 200,
    },
    SpanLocation {
        lod: Verbosity::Max,
        target: "rpc",
        module_path: "rpc",
        file: "src/rpc/client.rs",
        line: 56,
    },
];
static NAMES: [&str; 4] = ["flush_batch", "compact", "rpc.get_item", "rpc.put_item"];

/// Shape of a generated process.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub streams: usize,
    pub blocks_per_stream: usize,
    /// Thread buffer size (the block's capacity).
    pub buffer_bytes: usize,
    /// Wall-clock span of each block.
    pub block_duration: Duration,
}

struct Open {
    span_id: u64,
    parent: u64,
    depth: u32,
    kind: usize,
}

/// A realistic process that began an hour ago: `streams` threads of `blocks_per_stream` blocks
/// of 8 KiB, one second each.
pub fn an_hour_ago(streams: usize, blocks_per_stream: usize, seed: u64) -> Recording {
    realistic(
        Shape {
            streams,
            blocks_per_stream,
            buffer_bytes: 8 * 1024,
            block_duration: Duration::seconds(1),
        },
        Utc::now() - Duration::hours(1),
        seed,
    )
}

/// One thread stream of `blocks` blocks of 3 MiB buffers, starting now: objects buffers larger
/// than the decoder's 1 MiB inflate window.
#[allow(dead_code)]
pub fn three_mib_blocks(blocks: usize, seed: u64) -> Recording {
    let shape = Shape {
        streams: 1,
        blocks_per_stream: blocks,
        buffer_bytes: 3 << 20,
        block_duration: Duration::seconds(5),
    };
    realistic(shape, Utc::now(), seed)
}

/// A process of `shape.streams` thread streams whose blocks tile time back to back from
/// `start_time`; async span ids are unique in the process.
pub fn realistic(shape: Shape, start_time: DateTime<Utc>, seed: u64) -> Recording {
    let pid = Uuid::new_v4();
    let mut info = make_process_info(pid, None, HashMap::new());
    info.tsc_frequency = 1_000_000_000;
    info.start_time = start_time;
    let start_ticks = info.start_ticks;
    let tagged_set: &'static PropertySet =
        PropertySet::find_or_create(vec![Property::new("component", "store")]);
    let mut rng = Rng(seed | 1);
    let mut next_span = 1u64;
    let mut streams = Vec::new();
    let mut blocks = Vec::new();
    let duration = shape.block_duration.num_nanoseconds().unwrap();
    for s in 0..shape.streams {
        let mut stream = ThreadStream::new(
            shape.buffer_bytes,
            pid,
            &["cpu".to_string()],
            HashMap::new(),
        );
        streams.push(thread_stream(
            pid,
            stream.stream_id(),
            &HashMap::from([
                (
                    "thread-name".to_string(),
                    format!("tokio-runtime-worker-{s}"),
                ),
                ("thread-id".to_string(), format!("{}", 1000 + s)),
            ]),
        ));
        let mut open: Vec<Open> = Vec::new();
        for b in 0..shape.blocks_per_stream {
            let begin = b as i64 * duration;
            let end = begin + duration;
            let mut tick = begin;
            // Average record size ~40 bytes: spread the block's records over its duration.
            let step = (duration / (shape.buffer_bytes as i64 / 40).max(1)).max(1);
            while !stream.is_full() {
                tick += 1 + rng.below(2 * step as u64) as i64;
                let t = start_ticks + tick.min(end - 1);
                let r = rng.below(10);
                if r < 2 {
                    // sync thread span, begin + end: a third of the records
                    let d = &SYNC[rng.below(3) as usize];
                    stream.get_events_mut().push(BeginThreadSpanEvent {
                        thread_span_desc: d,
                        time: t,
                    });
                    stream.get_events_mut().push(EndThreadSpanEvent {
                        thread_span_desc: d,
                        time: t,
                    });
                } else if r < 6 || open.is_empty() {
                    if open.len() >= 5 {
                        continue;
                    }
                    let (parent, depth) = open.last().map_or((0, 0), |o| (o.span_id, o.depth + 1));
                    let span_id = next_span;
                    next_span += 1;
                    let kind = rng.below(10) as usize;
                    match kind {
                        0..=5 => stream.get_events_mut().push(BeginAsyncSpanEvent {
                            span_desc: &DESCS[(kind + depth as usize) % 8],
                            span_id,
                            parent_span_id: parent,
                            depth,
                            time: t,
                        }),
                        6 | 7 => stream.get_events_mut().push(BeginAsyncNamedSpanEvent {
                            span_location: &LOCS[kind - 6],
                            name: StringId::from(NAMES[kind - 6]),
                            span_id,
                            parent_span_id: parent,
                            depth,
                            time: t,
                        }),
                        _ => {
                            let name = format!("job_{}", span_id % 40);
                            stream.push_dyn_named(&name, |name| BeginAsyncDynNamedSpanEvent {
                                span_location: &LOCS[0],
                                name,
                                span_id,
                                parent_span_id: parent,
                                depth,
                                time: t,
                            })
                        }
                    }
                    open.push(Open {
                        span_id,
                        parent,
                        depth,
                        kind,
                    });
                } else {
                    let o = open.pop().unwrap();
                    let (span_id, parent_span_id, depth) = (o.span_id, o.parent, o.depth);
                    match o.kind {
                        0 => {
                            let rows = (span_id % 97).to_string();
                            stream.push_tagged(
                                tagged_set,
                                &[DynProperty::new("rows", &rows)],
                                |properties| TaggedEndAsyncSpanEvent {
                                    span_desc: &DESCS[depth as usize % 8],
                                    properties,
                                    span_id,
                                    parent_span_id,
                                    depth,
                                    time: t,
                                },
                            )
                        }
                        k @ 1..=5 => stream.get_events_mut().push(EndAsyncSpanEvent {
                            span_desc: &DESCS[(k + depth as usize) % 8],
                            span_id,
                            parent_span_id,
                            depth,
                            time: t,
                        }),
                        k @ (6 | 7) => stream.get_events_mut().push(EndAsyncNamedSpanEvent {
                            span_location: &LOCS[k - 6],
                            name: StringId::from(NAMES[k - 6]),
                            span_id,
                            parent_span_id,
                            depth,
                            time: t,
                        }),
                        _ => {
                            let name = format!("job_{}", span_id % 40);
                            stream.push_dyn_named(&name, |name| EndAsyncDynNamedSpanEvent {
                                span_location: &LOCS[0],
                                name,
                                span_id,
                                parent_span_id,
                                depth,
                                time: t,
                            })
                        }
                    }
                }
            }
            let offset =
                stream.get_block_ref().object_offset() + stream.get_block_ref().nb_objects();
            let mut next = ThreadBlock::new(shape.buffer_bytes, pid, stream.stream_id(), offset);
            next.begin = at(&info, end);
            let mut block = stream.replace_block(Arc::new(next));
            let blk = Arc::get_mut(&mut block).unwrap();
            blk.begin = at(&info, begin);
            blk.close_at(at(&info, end));
            blocks.push(encode_thread_block(&block, &info));
        }
    }
    Recording {
        process: RawProcess::from(&info),
        streams,
        blocks,
    }
}

fn at(info: &micromegas_tracing::prelude::ProcessInfo, ticks: i64) -> DualTime {
    DualTime {
        ticks: info.start_ticks + ticks,
        time: info.start_time + Duration::nanoseconds(ticks),
    }
}
