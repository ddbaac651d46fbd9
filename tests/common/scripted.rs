//! Blocks written event by event with the producers' own `ThreadStream` (micromegas-tracing 0.33
//! and 0.30): deterministic, parallel-safe fixtures with exact expectations.
//!
//! The process clock is pinned to 1 GHz, so one tick is one nanosecond after `start_time`.

use super::producer::{
    RawBlock, RawProcess, RawStream, Recording, encode_thread_block, thread_stream,
};
use chrono::Duration;
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

pub const FREQUENCY: i64 = 1_000_000_000;

/// One row the decoder must produce.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub block: usize,
    pub event_type: &'static str,
    pub span_id: i64,
    pub parent_span_id: i64,
    pub depth: u32,
    pub name: &'static str,
    pub filename: &'static str,
    pub target: &'static str,
    pub line: u32,
    /// Ticks (= ns) after the process start.
    pub ticks: i64,
    pub properties: Vec<(&'static str, &'static str)>,
}

pub struct Scripted {
    pub recording: Recording,
    pub expected: Vec<Expected>,
}

static TOP: SpanMetadata = SpanMetadata {
    name: "scripted::top",
    location: SpanLocation {
        lod: Verbosity::Max,
        target: "scripted",
        module_path: "scripted::module",
        file: "src/top.rs",
        line: 11,
    },
};
static NAMED_AT: SpanLocation = SpanLocation {
    lod: Verbosity::Max,
    target: "scripted::named",
    module_path: "scripted::named",
    file: "src/named.rs",
    line: 22,
};
static SYNC: SpanMetadata = SpanMetadata {
    name: "scripted::sync",
    location: SpanLocation {
        lod: Verbosity::Max,
        target: "scripted",
        module_path: "scripted",
        file: "src/sync.rs",
        line: 33,
    },
};

fn process_info(pid: Uuid) -> micromegas_tracing::prelude::ProcessInfo {
    let mut info = make_process_info(pid, None, HashMap::new());
    info.tsc_frequency = FREQUENCY;
    info
}

fn dual(info: &micromegas_tracing::prelude::ProcessInfo, ticks: i64) -> DualTime {
    DualTime {
        ticks: info.start_ticks + ticks,
        time: info.start_time + Duration::nanoseconds(ticks),
    }
}

/// Two 0.33 blocks holding every async event type (plain, named, dyn-named, tagged ends with
/// interned and dynamic properties), sync thread events in between, and a span that never ends.
pub fn scripted_033() -> Scripted {
    let pid = Uuid::new_v4();
    let info = process_info(pid);
    let t = |d: i64| info.start_ticks + d;
    let mut stream = ThreadStream::new(64 * 1024, pid, &["cpu".to_string()], HashMap::new());
    let rows_set: &'static PropertySet =
        PropertySet::find_or_create(vec![Property::new("rows", "3")]);
    let kind_set: &'static PropertySet =
        PropertySet::find_or_create(vec![Property::new("kind", "root")]);
    let named_name: &'static str = "static_named";

    // block 0: ticks [0, 1000]
    stream.get_events_mut().push(BeginThreadSpanEvent {
        thread_span_desc: &SYNC,
        time: t(10),
    });
    stream.get_events_mut().push(BeginAsyncSpanEvent {
        span_desc: &TOP,
        span_id: 1,
        parent_span_id: 0,
        depth: 0,
        time: t(20),
    });
    stream.get_events_mut().push(BeginAsyncNamedSpanEvent {
        span_location: &NAMED_AT,
        name: StringId::from(named_name),
        span_id: 2,
        parent_span_id: 1,
        depth: 1,
        time: t(30),
    });
    stream.push_dyn_named("dyn_named_é", |name| BeginAsyncDynNamedSpanEvent {
        span_location: &NAMED_AT,
        name,
        span_id: 3,
        parent_span_id: 1,
        depth: 1,
        time: t(40),
    });
    stream.get_events_mut().push(EndThreadSpanEvent {
        thread_span_desc: &SYNC,
        time: t(50),
    });
    stream.push_dyn_named("dyn_named_é", |name| EndAsyncDynNamedSpanEvent {
        span_location: &NAMED_AT,
        name,
        span_id: 3,
        parent_span_id: 1,
        depth: 1,
        time: t(60),
    });
    stream.get_events_mut().push(EndAsyncNamedSpanEvent {
        span_location: &NAMED_AT,
        name: StringId::from(named_name),
        span_id: 2,
        parent_span_id: 1,
        depth: 1,
        time: t(70),
    });
    stream.get_events_mut().push(BeginAsyncSpanEvent {
        span_desc: &TOP,
        span_id: 4,
        parent_span_id: 1,
        depth: 1,
        time: t(80),
    });
    stream.push_dyn_named("tagged_named", |name| BeginAsyncDynNamedSpanEvent {
        span_location: &NAMED_AT,
        name,
        span_id: 5,
        parent_span_id: 1,
        depth: 1,
        time: t(85),
    });
    stream.push_tagged_named(
        "tagged_named",
        rows_set,
        &[DynProperty::new("note", "a,\"b\" ü")],
        |name, properties| TaggedEndAsyncNamedSpanEvent {
            span_location: &NAMED_AT,
            name,
            properties,
            span_id: 5,
            parent_span_id: 1,
            depth: 1,
            time: t(90),
        },
    );
    let mut blocks = Vec::new();
    blocks.push(close(&mut stream, &info, 0, 1000));

    // block 1: ticks [1000, 2000]
    stream.get_events_mut().push(EndAsyncSpanEvent {
        span_desc: &TOP,
        span_id: 4,
        parent_span_id: 1,
        depth: 1,
        time: t(1010),
    });
    stream.push_tagged(kind_set, &[], |properties| TaggedEndAsyncSpanEvent {
        span_desc: &TOP,
        properties,
        span_id: 1,
        parent_span_id: 0,
        depth: 0,
        time: t(1020),
    });
    stream.push_dyn_named("sync_dyn", |name| BeginThreadDynNamedSpanEvent {
        thread_span_location: &NAMED_AT,
        name,
        time: t(1030),
    });
    stream.get_events_mut().push(BeginAsyncSpanEvent {
        span_desc: &TOP,
        span_id: 6,
        parent_span_id: 0,
        depth: 0,
        time: t(1040),
    });
    stream.push_dyn_named("sync_dyn", |name| EndThreadDynNamedSpanEvent {
        thread_span_location: &NAMED_AT,
        name,
        time: t(1050),
    });
    blocks.push(close(&mut stream, &info, 1000, 2000));

    let top = |block, event_type, span_id, parent_span_id, depth, ticks, properties| Expected {
        block,
        event_type,
        span_id,
        parent_span_id,
        depth,
        name: "scripted::top",
        filename: "src/top.rs",
        target: "scripted",
        line: 11,
        ticks,
        properties,
    };
    let named = |block, event_type, name, span_id, ticks, properties| Expected {
        block,
        event_type,
        span_id,
        parent_span_id: 1,
        depth: 1,
        name,
        filename: "src/named.rs",
        target: "scripted::named",
        line: 22,
        ticks,
        properties,
    };
    let expected = vec![
        top(0, "begin", 1, 0, 0, 20, vec![]),
        named(0, "begin", "static_named", 2, 30, vec![]),
        named(0, "begin", "dyn_named_é", 3, 40, vec![]),
        named(0, "end", "dyn_named_é", 3, 60, vec![]),
        named(0, "end", "static_named", 2, 70, vec![]),
        top(0, "begin", 4, 1, 1, 80, vec![]),
        named(0, "begin", "tagged_named", 5, 85, vec![]),
        named(
            0,
            "end",
            "tagged_named",
            5,
            90,
            vec![("note", "a,\"b\" ü"), ("rows", "3")],
        ),
        top(1, "end", 4, 1, 1, 1010, vec![]),
        top(1, "end", 1, 0, 0, 1020, vec![("kind", "root")]),
        top(1, "begin", 6, 0, 0, 1040, vec![]),
    ];
    let streams = vec![thread_stream(
        pid,
        stream.stream_id(),
        &HashMap::from([
            ("thread-name".to_string(), "scripted-worker".to_string()),
            ("thread-id".to_string(), "7".to_string()),
        ]),
    )];
    Scripted {
        recording: Recording {
            process: RawProcess::from(&info),
            streams,
            blocks,
        },
        expected,
    }
}

fn close(
    stream: &mut ThreadStream,
    info: &micromegas_tracing::prelude::ProcessInfo,
    begin: i64,
    end: i64,
) -> RawBlock {
    let offset = stream.get_block_ref().object_offset() + stream.get_block_ref().nb_objects();
    let mut next = ThreadBlock::new(64 * 1024, info.process_id, stream.stream_id(), offset);
    next.begin = dual(info, end);
    let mut block = stream.replace_block(Arc::new(next));
    let b = Arc::get_mut(&mut block).unwrap();
    b.begin = dual(info, begin);
    b.close_at(dual(info, end));
    encode_thread_block(&block, info)
}

/// The same process shape written by the micromegas-tracing 0.30 producer, which knows only the
/// eight older thread-stream event types and sends raw `file!()` paths.
pub fn scripted_030() -> Scripted {
    use micromegas_tracing_030::event::{ExtractDeps, TracingBlock};
    use micromegas_tracing_030::spans as s30;
    use micromegas_transit_030::HeterogeneousQueue;

    static TOP30: s30::SpanMetadata = s30::SpanMetadata {
        name: "old::top",
        location: s30::SpanLocation {
            lod: micromegas_tracing_030::levels::Verbosity::Max,
            target: "old",
            module_path: "old",
            file: "/home/dev/old/src/top.rs",
            line: 5,
        },
    };
    static NAMED30: s30::SpanLocation = s30::SpanLocation {
        lod: micromegas_tracing_030::levels::Verbosity::Max,
        target: "old::named",
        module_path: "old::named",
        file: "/home/dev/old/src/named.rs",
        line: 9,
    };
    static SYNC30: s30::SpanMetadata = s30::SpanMetadata {
        name: "old::sync",
        location: s30::SpanLocation {
            lod: micromegas_tracing_030::levels::Verbosity::Max,
            target: "old",
            module_path: "old",
            file: "/home/dev/old/src/sync.rs",
            line: 1,
        },
    };
    let pid = Uuid::new_v4();
    let info = process_info(pid);
    let t = |d: i64| info.start_ticks + d;
    let mut stream = s30::ThreadStream::new(64 * 1024, pid, &["cpu".to_string()], HashMap::new());
    let name: &'static str = "old_named";
    let events = stream.get_events_mut();
    events.push(s30::BeginThreadSpanEvent {
        thread_span_desc: &SYNC30,
        time: t(5),
    });
    events.push(s30::BeginAsyncSpanEvent {
        span_desc: &TOP30,
        span_id: 10,
        parent_span_id: 0,
        depth: 0,
        time: t(10),
    });
    events.push(s30::BeginAsyncNamedSpanEvent {
        span_location: &NAMED30,
        name: micromegas_tracing_030::string_id::StringId::from(name),
        span_id: 11,
        parent_span_id: 10,
        depth: 1,
        time: t(20),
    });
    events.push(s30::EndAsyncNamedSpanEvent {
        span_location: &NAMED30,
        name: micromegas_tracing_030::string_id::StringId::from(name),
        span_id: 11,
        parent_span_id: 10,
        depth: 1,
        time: t(30),
    });
    events.push(s30::EndThreadSpanEvent {
        thread_span_desc: &SYNC30,
        time: t(35),
    });
    events.push(s30::EndAsyncSpanEvent {
        span_desc: &TOP30,
        span_id: 10,
        parent_span_id: 0,
        depth: 0,
        time: t(40),
    });

    let next = s30::ThreadBlock::new(64 * 1024, pid, stream.stream_id(), 6);
    let mut block = stream.replace_block(Arc::new(next));
    let b = Arc::get_mut(&mut block).unwrap();
    b.begin = micromegas_tracing_030::time::DualTime {
        ticks: t(0),
        time: info.start_time,
    };
    b.end = Some(micromegas_tracing_030::time::DualTime {
        ticks: t(100),
        time: info.start_time + Duration::nanoseconds(100),
    });

    let compress = micromegas_telemetry::compression::compress;
    let payload = micromegas_telemetry::block_wire_format::BlockPayload {
        dependencies: compress(b.events.extract().as_bytes()).unwrap(),
        objects: compress(b.events.as_bytes()).unwrap(),
    };
    let record = datafusion_async_events::lake::BlockRecord {
        block_id: Uuid::new_v4(),
        stream_id: stream.stream_id(),
        process_id: pid,
        begin_time: info.start_time,
        begin_ticks: 0,
        end_time: info.start_time + Duration::nanoseconds(100),
        end_ticks: 100,
        nb_objects: b.nb_objects() as i32,
        object_offset: b.object_offset() as i64,
        payload_size: 0,
    };
    let raw = RawBlock::new(
        record,
        micromegas_telemetry::wire_format::encode_cbor(&payload).unwrap(),
    );
    let flatten = |udts: Vec<micromegas_transit_030::UserDefinedType>| {
        let mut out = udts.clone();
        let mut stack: Vec<_> = udts.iter().flat_map(|u| u.secondary_udts.clone()).collect();
        while let Some(u) = stack.pop() {
            stack.extend(u.secondary_udts.clone());
            if !out.iter().any(|o| o.name == u.name) {
                out.push(u);
            }
        }
        super::producer::encode_udts(&out)
    };
    let stream_row = RawStream {
        stream_id: stream.stream_id(),
        process_id: pid,
        dependencies_metadata: flatten(s30::ThreadDepsQueue::reflect_contained()),
        objects_metadata: flatten(s30::ThreadEventQueue::reflect_contained()),
        tags: vec!["cpu".into()],
        properties: vec![],
    };
    let top = |event_type, ticks| Expected {
        block: 0,
        event_type,
        span_id: 10,
        parent_span_id: 0,
        depth: 0,
        name: "old::top",
        filename: "/home/dev/old/src/top.rs",
        target: "old",
        line: 5,
        ticks,
        properties: vec![],
    };
    let named = |event_type, ticks| Expected {
        block: 0,
        event_type,
        span_id: 11,
        parent_span_id: 10,
        depth: 1,
        name: "old_named",
        filename: "/home/dev/old/src/named.rs",
        target: "old::named",
        line: 9,
        ticks,
        properties: vec![],
    };
    Scripted {
        recording: Recording {
            process: RawProcess::from(&info),
            streams: vec![stream_row],
            blocks: vec![raw],
        },
        expected: vec![
            top("begin", 10),
            named("begin", 20),
            named("end", 30),
            top("end", 40),
        ],
    }
}

/// One block whose events are not in time order: spans 1 to `spans` begin at ticks 100 × (a
/// permutation of 1..=spans) and end 10 000 ticks later, all recorded in span order.
#[allow(dead_code)]
pub fn shuffled_in_block(spans: u64) -> Recording {
    let pid = Uuid::new_v4();
    let info = process_info(pid);
    let t = |d: i64| info.start_ticks + d;
    let mut stream = ThreadStream::new(64 * 1024, pid, &["cpu".to_string()], HashMap::new());
    for id in 1..=spans {
        // 7 is prime to every span count the tests use: a permutation.
        let begin = 100 * (((id * 7) % spans) + 1) as i64;
        stream.get_events_mut().push(BeginAsyncSpanEvent {
            span_desc: &TOP,
            span_id: id,
            parent_span_id: 0,
            depth: 0,
            time: t(begin),
        });
        stream.get_events_mut().push(EndAsyncSpanEvent {
            span_desc: &TOP,
            span_id: id,
            parent_span_id: 0,
            depth: 0,
            time: t(begin + 10_000),
        });
    }
    let block = close(&mut stream, &info, 0, 20_000);
    Recording {
        process: RawProcess::from(&info),
        streams: vec![thread_stream(pid, stream.stream_id(), &HashMap::new())],
        blocks: vec![block],
    }
}

/// A thread stream whose second block holds an event earlier than the first block's events
/// (what a clock going backwards would record).
pub fn out_of_order() -> Recording {
    let pid = Uuid::new_v4();
    let info = process_info(pid);
    let t = |d: i64| info.start_ticks + d;
    let mut stream = ThreadStream::new(64 * 1024, pid, &["cpu".to_string()], HashMap::new());
    stream.get_events_mut().push(BeginAsyncSpanEvent {
        span_desc: &TOP,
        span_id: 1,
        parent_span_id: 0,
        depth: 0,
        time: t(500),
    });
    stream.get_events_mut().push(EndAsyncSpanEvent {
        span_desc: &TOP,
        span_id: 1,
        parent_span_id: 0,
        depth: 0,
        time: t(600),
    });
    let first = close(&mut stream, &info, 0, 1000);
    stream.get_events_mut().push(BeginAsyncSpanEvent {
        span_desc: &TOP,
        span_id: 2,
        parent_span_id: 0,
        depth: 0,
        time: t(100),
    });
    stream.get_events_mut().push(EndAsyncSpanEvent {
        span_desc: &TOP,
        span_id: 2,
        parent_span_id: 0,
        depth: 0,
        time: t(1500),
    });
    let second = close(&mut stream, &info, 1000, 2000);
    Recording {
        process: RawProcess::from(&info),
        streams: vec![thread_stream(pid, stream.stream_id(), &HashMap::new())],
        blocks: vec![first, second],
    }
}

/// A process whose `scripted::top` spans last exactly `durations` (ns), one after the other in
/// one block: durations a test can state exactly, whatever the machine's load.
pub fn latencies(durations: &[i64]) -> Recording {
    let spans: Vec<(u64, i64)> = (1..).zip(durations.iter().copied()).collect();
    spans_with_ids(&spans)
}

/// Like [`latencies`], each span with the id given (ids may repeat).
pub fn spans_with_ids(spans: &[(u64, i64)]) -> Recording {
    let pid = Uuid::new_v4();
    let info = process_info(pid);
    let t = |d: i64| info.start_ticks + d;
    let mut stream = ThreadStream::new(1024 * 1024, pid, &["cpu".to_string()], HashMap::new());
    let mut at = 1_000;
    for &(span_id, duration) in spans {
        stream.get_events_mut().push(BeginAsyncSpanEvent {
            span_desc: &TOP,
            span_id,
            parent_span_id: 0,
            depth: 0,
            time: t(at),
        });
        stream.get_events_mut().push(EndAsyncSpanEvent {
            span_desc: &TOP,
            span_id,
            parent_span_id: 0,
            depth: 0,
            time: t(at + duration),
        });
        at += duration + 1_000;
    }
    let block = close(&mut stream, &info, 0, at);
    Recording {
        process: RawProcess::from(&info),
        streams: vec![thread_stream(pid, stream.stream_id(), &HashMap::new())],
        blocks: vec![block],
    }
}

/// `ids.len()` spans all open at once: every begin (1 ns apart), then every end, one block. The
/// pairing's open-span map holds them all, so how their ids hash shows.
pub fn all_open(ids: &[u64]) -> Recording {
    let pid = Uuid::new_v4();
    let info = process_info(pid);
    let t = |d: i64| info.start_ticks + d;
    let mut stream = ThreadStream::new(1024 * 1024, pid, &["cpu".to_string()], HashMap::new());
    let n = ids.len() as i64;
    for (i, &span_id) in ids.iter().enumerate() {
        stream.get_events_mut().push(BeginAsyncSpanEvent {
            span_desc: &TOP,
            span_id,
            parent_span_id: 0,
            depth: 0,
            time: t(1 + i as i64),
        });
    }
    for (i, &span_id) in ids.iter().enumerate() {
        stream.get_events_mut().push(EndAsyncSpanEvent {
            span_desc: &TOP,
            span_id,
            parent_span_id: 0,
            depth: 0,
            time: t(1 + n + i as i64),
        });
    }
    let block = close(&mut stream, &info, 0, 2 * n + 2);
    Recording {
        process: RawProcess::from(&info),
        streams: vec![thread_stream(pid, stream.stream_id(), &HashMap::new())],
        blocks: vec![block],
    }
}

/// A process that ran `hours` hours whose reported tick frequency is `ppm` parts per million
/// too low: its blocks' wall-clock bounds fall behind the tick-based times of their events by
/// `ppm` µs per second of run time (17 s after a day at 200 ppm). One 10-minute block per
/// stretch, one 100 ms `scripted::top` span every 10 s; event `i` of the run is at tick
/// `span_ticks(i)`.
pub fn drifting(hours: i64, ppm: i64) -> Recording {
    let pid = Uuid::new_v4();
    let info = process_info(pid);
    let wall = |ticks: i64| DualTime {
        ticks: info.start_ticks + ticks,
        time: info.start_time + Duration::nanoseconds(ticks - ticks / 1_000_000 * ppm),
    };
    let mut stream = ThreadStream::new(64 * 1024, pid, &["cpu".to_string()], HashMap::new());
    let block_ticks = 600 * FREQUENCY;
    let mut blocks = Vec::new();
    let mut span = 0u64;
    for b in 0..hours * 6 {
        let (begin, end) = (b * block_ticks, (b + 1) * block_ticks);
        while span_ticks(span).0 < end {
            let (at, until) = span_ticks(span);
            for (time, begin_event) in [(at, true), (until, false)] {
                let time = info.start_ticks + time;
                if begin_event {
                    stream.get_events_mut().push(BeginAsyncSpanEvent {
                        span_desc: &TOP,
                        span_id: span + 1,
                        parent_span_id: 0,
                        depth: 0,
                        time,
                    });
                } else {
                    stream.get_events_mut().push(EndAsyncSpanEvent {
                        span_desc: &TOP,
                        span_id: span + 1,
                        parent_span_id: 0,
                        depth: 0,
                        time,
                    });
                }
            }
            span += 1;
        }
        let offset = stream.get_block_ref().object_offset() + stream.get_block_ref().nb_objects();
        let mut next = ThreadBlock::new(64 * 1024, info.process_id, stream.stream_id(), offset);
        next.begin = wall(end);
        let mut block = stream.replace_block(Arc::new(next));
        let raw = Arc::get_mut(&mut block).unwrap();
        raw.begin = wall(begin);
        raw.close_at(wall(end));
        blocks.push(encode_thread_block(&block, &info));
    }
    Recording {
        process: RawProcess::from(&info),
        streams: vec![thread_stream(pid, stream.stream_id(), &HashMap::new())],
        blocks,
    }
}

/// The begin and end ticks (relative to the process start) of span `i` of [`drifting`].
pub fn span_ticks(i: u64) -> (i64, i64) {
    let at = 5 * FREQUENCY + i as i64 * 10 * FREQUENCY;
    (at, at + FREQUENCY / 10)
}
