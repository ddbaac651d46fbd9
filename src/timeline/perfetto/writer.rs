//! A Perfetto trace of a process's thread and async spans, written as a stream of chunks.
//!
//! Layout: one process track; under it one thread track per thread that has spans (a
//! `ThreadDescriptor` with the thread's name and id from its stream); under each thread, first
//! a `scopes` track holding its scopes (thread spans) as nested slices, as its call stack nested
//! them (written parents first, so that at equal times a parent opens before its child), then
//! the async spans that began on it (a span that migrated stays on the thread it began on) as
//! slices on tracks named `depth N`. Perfetto requires the slices of one track to nest properly, and
//! async spans of the same depth overlap (concurrent futures), so each `depth N` is a set of
//! tracks (lanes) whose slices never overlap: a span goes to the first lane of its thread and
//! depth it does not overlap, else to a new one. The lanes of a depth share the name, so the UI
//! shows them as one `depth N` track with as many rows as needed, the depths in order under the
//! thread: nesting reads top to bottom. Lanes are chosen as spans stream by; what is kept is
//! the first begin and last end of each lane, not the spans.
//!
//! A span that did not end is drawn to the end of the range (else to the last time seen) with
//! ` [unfinished]` (never finished) or ` [open at range end]` (cut by the range) after its name,
//! one that began before the events read starts at the range's begin (` [began before range]`);
//! every slice has the debug annotations `finished` (`true`, `false`, `unknown`), `span_id` and
//! `depth`.
//!
//! [`TraceWriter`] turns `thread_spans` and `async_spans` batches into the bytes of a `Trace`
//! message: packets, each as field 1, so that any cut between packets is a valid prefix and the
//! concatenation of the chunks is the trace. `perfetto_trace_chunks` is the table function of
//! micromegas with the same arguments and schema (`chunk_id` Int32, `chunk_data` Binary).

use crate::time_bounds::TimeBounds;
use crate::timeline::proto::{
    DebugAnnotation, ProcessDescriptor, SLICE_BEGIN, SLICE_END, ThreadDescriptor, TracePacket,
    TrackDescriptor, TrackEvent,
};
use crate::timeline::{Span, SpanKind, Thread, stable_hash};
use datafusion::common::Result;
use prost::Message;
use std::collections::{HashMap, VecDeque};

/// The size a chunk of `perfetto_trace_chunks` reaches before it is emitted (the last one is
/// smaller): 256 KiB.
pub const CHUNK_SIZE: usize = 256 * 1024;

/// The packet sequence of every packet of the trace.
const SEQUENCE: u32 = 1;
/// `sequence_flags`: incremental state cleared (first packet).
const SEQ_INCREMENTAL_STATE_CLEARED: u32 = 1;
/// `sequence_flags`: the packet needs the sequence's incremental state.
const SEQ_NEEDS_INCREMENTAL_STATE: u32 = 2;
/// `ChildTracksOrdering.EXPLICIT`.
const EXPLICIT_ORDER: i32 = 3;

/// One lane: a track holding non-overlapping slices of one thread and depth.
#[derive(Debug, Clone, Copy)]
struct Lane {
    uuid: u64,
    first_begin: i64,
    last_end: i64,
}

#[derive(Debug)]
struct ThreadTracks {
    uuid: u64,
    /// The track of the thread's scopes, nested (declared with the first scope).
    scopes: Option<u64>,
    /// Async lanes per depth.
    lanes: HashMap<u32, Vec<Lane>>,
}

/// Writes the packets of a Perfetto trace of async spans, chunk by chunk.
///
/// ```
/// # use datafusion_async_events::timeline::perfetto::TraceWriter;
/// # use datafusion_async_events::TimeBounds;
/// let mut writer = TraceWriter::new("my-service", 42, vec![], TimeBounds::ALL, 64 * 1024);
/// // writer.push_spans(&spans) for each batch, taking writer.take_chunk() as they fill
/// let last = writer.finish();
/// assert!(!last.is_empty()); // the process track
/// ```
#[derive(Debug)]
pub struct TraceWriter {
    buf: Vec<u8>,
    chunk_size: usize,
    ready: VecDeque<Vec<u8>>,
    pid: i32,
    process_uuid: u64,
    threads: HashMap<String, Thread>,
    tracks: HashMap<String, ThreadTracks>,
    range: TimeBounds,
    last_time: i64,
    next_lane_uuid: u64,
}

impl TraceWriter {
    /// A trace of the process named `process_name` (with the synthetic id `pid`), whose threads
    /// are `threads`, for spans read over `range` (ns; `None` for an open side). Chunks are
    /// cut once `chunk_size` bytes are buffered.
    pub fn new(
        process_name: &str,
        pid: i32,
        threads: Vec<Thread>,
        range: TimeBounds,
        chunk_size: usize,
    ) -> Self {
        let process_uuid = stable_hash(&format!("process {pid} {process_name}")) | 1;
        let mut writer = Self {
            buf: Vec::new(),
            chunk_size: chunk_size.max(1),
            ready: VecDeque::new(),
            pid,
            process_uuid,
            threads: threads
                .into_iter()
                .map(|t| (t.stream_id.clone(), t))
                .collect(),
            tracks: HashMap::new(),
            range,
            last_time: range.begin.unwrap_or(0),
            next_lane_uuid: process_uuid.wrapping_add(1) | (1 << 63),
        };
        writer.packet(TracePacket {
            sequence_flags: Some(SEQ_INCREMENTAL_STATE_CLEARED),
            track_descriptor: Some(TrackDescriptor {
                uuid: Some(process_uuid),
                name: Some(process_name.to_owned()),
                process: Some(ProcessDescriptor {
                    pid: Some(pid),
                    process_name: Some(process_name.to_owned()),
                }),
                child_ordering: Some(EXPLICIT_ORDER),
                ..Default::default()
            }),
            ..Default::default()
        });
        writer
    }

    fn packet(&mut self, mut packet: TracePacket) {
        packet.trusted_packet_sequence_id = Some(SEQUENCE);
        prost::encoding::message::encode(1, &packet, &mut self.buf);
        if self.buf.len() >= self.chunk_size {
            self.ready.push_back(std::mem::take(&mut self.buf));
        }
    }

    /// The next full chunk, if one is ready.
    pub fn take_chunk(&mut self) -> Option<Vec<u8>> {
        self.ready.pop_front()
    }

    /// The rest of the trace (may be empty when every packet was taken in chunks).
    pub fn finish(mut self) -> Vec<u8> {
        let mut rest: Vec<u8> = self.ready.drain(..).flatten().collect();
        rest.append(&mut self.buf);
        rest
    }

    fn thread_track(&mut self, stream_id: &str) -> u64 {
        if let Some(t) = self.tracks.get(stream_id) {
            return t.uuid;
        }
        let uuid = stable_hash(&format!("thread {stream_id}")) | 1;
        let thread = self.threads.get(stream_id).cloned().unwrap_or(Thread {
            stream_id: stream_id.to_owned(),
            name: stream_id.to_owned(),
            thread_id: None,
        });
        let tid = thread
            .thread_id
            .as_deref()
            .and_then(|t| t.trim().parse::<i64>().ok())
            .unwrap_or_else(|| (stable_hash(stream_id) & 0x7fff_ffff) as i64);
        let rank = i32::try_from(self.tracks.len()).unwrap_or(i32::MAX);
        self.tracks.insert(
            stream_id.to_owned(),
            ThreadTracks {
                uuid,
                scopes: None,
                lanes: HashMap::new(),
            },
        );
        self.packet(TracePacket {
            track_descriptor: Some(TrackDescriptor {
                uuid: Some(uuid),
                name: Some(thread.name.clone()),
                parent_uuid: Some(self.process_uuid),
                thread: Some(ThreadDescriptor {
                    pid: Some(self.pid),
                    tid: Some(tid),
                    thread_name: Some(thread.name),
                }),
                child_ordering: Some(EXPLICIT_ORDER),
                sibling_order_rank: Some(rank),
                ..Default::default()
            }),
            ..Default::default()
        });
        uuid
    }

    /// The track of a thread's scopes, declaring it when new: its slices nest as the scopes did
    /// (a thread runs one call stack), so Perfetto sees parents, children and self time.
    fn scopes_track(&mut self, stream_id: &str) -> u64 {
        let parent = self.thread_track(stream_id);
        if let Some(uuid) = self.tracks.get(stream_id).and_then(|t| t.scopes) {
            return uuid;
        }
        let uuid = self.next_lane_uuid;
        self.next_lane_uuid = self.next_lane_uuid.wrapping_add(1);
        if let Some(tracks) = self.tracks.get_mut(stream_id) {
            tracks.scopes = Some(uuid);
        }
        self.packet(TracePacket {
            track_descriptor: Some(TrackDescriptor {
                uuid: Some(uuid),
                name: Some("scopes".to_owned()),
                parent_uuid: Some(parent),
                // Above the async depths.
                sibling_order_rank: Some(-1),
                ..Default::default()
            }),
            ..Default::default()
        });
        uuid
    }

    /// The track of a slice `[begin, end]`: its thread's scopes track for a thread span, else
    /// the lane of its thread and depth it does not overlap, declared when new.
    fn lane(&mut self, span: &Span, begin: i64, end: i64) -> u64 {
        if span.kind == SpanKind::Thread {
            return self.scopes_track(&span.stream_id);
        }
        let (stream_id, depth) = (span.stream_id.as_str(), span.depth);
        let parent = self.thread_track(stream_id);
        let Some(tracks) = self.tracks.get_mut(stream_id) else {
            return parent;
        };
        let lanes = tracks.lanes.entry(depth).or_default();
        // Strict: a slice that ends exactly when the next begins would nest at equal times.
        if let Some(lane) = lanes
            .iter_mut()
            .find(|l| begin > l.last_end || end < l.first_begin)
        {
            lane.first_begin = lane.first_begin.min(begin);
            lane.last_end = lane.last_end.max(end);
            return lane.uuid;
        }
        let uuid = self.next_lane_uuid;
        self.next_lane_uuid = self.next_lane_uuid.wrapping_add(1);
        let lane_index = lanes.len();
        lanes.push(Lane {
            uuid,
            first_begin: begin,
            last_end: end,
        });
        let rank =
            i64::from(depth) * 10_000 + i64::try_from(lane_index).unwrap_or(9_999).min(9_999);
        self.packet(TracePacket {
            track_descriptor: Some(TrackDescriptor {
                uuid: Some(uuid),
                name: Some(format!("depth {depth}")),
                parent_uuid: Some(parent),
                sibling_order_rank: Some(i32::try_from(rank).unwrap_or(i32::MAX)),
                ..Default::default()
            }),
            ..Default::default()
        });
        uuid
    }

    /// Adds spans as slices.
    pub fn push_spans(&mut self, spans: &[Span]) {
        for span in spans {
            for t in [span.begin, span.end].into_iter().flatten() {
                self.last_time = self.last_time.max(t);
            }
        }
        for span in spans {
            self.push_span(span);
        }
    }

    fn push_span(&mut self, span: &Span) {
        let begin = span
            .begin
            .or(self.range.begin)
            .or(span.end)
            .unwrap_or(self.last_time);
        let end = span
            .end
            .unwrap_or_else(|| self.range.end.unwrap_or(self.last_time).max(begin))
            .max(begin);
        let mut name = span.name.clone();
        if span.end.is_none() {
            name.push_str(if span.finished == Some(false) {
                " [unfinished]"
            } else {
                " [open at range end]"
            });
        }
        if span.begin.is_none() {
            name.push_str(" [began before range]");
        }
        let track = self.lane(span, begin, end);
        let annotation = |n: &str| DebugAnnotation {
            name: Some(n.to_owned()),
            ..Default::default()
        };
        let annotations = vec![
            DebugAnnotation {
                string_value: Some(span.finished_text().to_owned()),
                ..annotation("finished")
            },
            DebugAnnotation {
                int_value: Some(span.span_id),
                ..annotation("span_id")
            },
            DebugAnnotation {
                int_value: Some(i64::from(span.depth)),
                ..annotation("depth")
            },
        ];
        let event = |kind: i32| TrackEvent {
            r#type: Some(kind),
            track_uuid: Some(track),
            ..Default::default()
        };
        let at = |t: i64| Some(u64::try_from(t).unwrap_or(0));
        self.packet(TracePacket {
            timestamp: at(begin),
            sequence_flags: Some(SEQ_NEEDS_INCREMENTAL_STATE),
            track_event: Some(TrackEvent {
                name: Some(name),
                debug_annotations: annotations,
                ..event(SLICE_BEGIN)
            }),
            ..Default::default()
        });
        self.packet(TracePacket {
            timestamp: at(end),
            sequence_flags: Some(SEQ_NEEDS_INCREMENTAL_STATE),
            track_event: Some(event(SLICE_END)),
            ..Default::default()
        });
    }
}

/// Decodes a trace written by [`TraceWriter`] (or any Perfetto trace, keeping the fields of
/// [`crate::timeline::proto`]).
pub fn decode_trace(bytes: &[u8]) -> Result<crate::timeline::proto::Trace> {
    crate::timeline::proto::Trace::decode(bytes).map_err(|e| {
        datafusion::error::DataFusionError::Execution(format!("not a Perfetto trace: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(
        id: i64,
        depth: u32,
        begin: Option<i64>,
        end: Option<i64>,
        finished: Option<bool>,
    ) -> Span {
        Span {
            kind: SpanKind::Async,
            span_id: id,
            name: format!("s{id}"),
            depth,
            begin,
            end,
            stream_id: "a".into(),
            finished,
        }
    }

    #[test]
    fn lanes_chunks_and_marks() {
        let threads = vec![Thread {
            stream_id: "a".into(),
            name: "worker <1>".into(),
            thread_id: Some("77".into()),
        }];
        let mut writer =
            TraceWriter::new("p", 3, threads, TimeBounds::new(Some(100), Some(1_000)), 64);
        let spans = vec![
            span(1, 0, Some(100), Some(200), Some(true)),
            span(2, 0, Some(150), Some(300), Some(true)), // overlaps 1: another lane
            span(3, 0, Some(201), Some(250), Some(true)), // fits after 1
            span(4, 1, None, Some(400), Some(true)),      // began before the range
            span(5, 1, Some(500), None, None),            // cut by the range
            span(6, 2, Some(600), None, Some(false)),     // never finished
        ];
        let mut bytes = Vec::new();
        writer.push_spans(&spans);
        let mut chunks = 0;
        while let Some(chunk) = writer.take_chunk() {
            assert!(chunk.len() >= 64);
            bytes.extend(chunk);
            chunks += 1;
        }
        bytes.extend(writer.finish());
        assert!(chunks > 3);
        let trace = decode_trace(&bytes).unwrap();
        let tracks: HashMap<u64, &TrackDescriptor> = trace
            .packet
            .iter()
            .filter_map(|p| p.track_descriptor.as_ref())
            .map(|t| (t.uuid.unwrap_or(0), t))
            .collect();
        let thread = tracks.values().find(|t| t.thread.is_some()).unwrap();
        assert_eq!(thread.name.as_deref(), Some("worker <1>"));
        assert_eq!(thread.thread.as_ref().unwrap().tid, Some(77));
        let mut slices: Vec<(String, u64, u64, String)> = Vec::new();
        let packets: Vec<_> = trace
            .packet
            .iter()
            .filter(|p| p.track_event.is_some())
            .collect();
        for pair in packets.chunks(2) {
            let (b, e) = (
                pair[0].track_event.as_ref().unwrap(),
                pair[1].track_event.as_ref().unwrap(),
            );
            assert_eq!((b.r#type, e.r#type), (Some(SLICE_BEGIN), Some(SLICE_END)));
            assert_eq!(b.track_uuid, e.track_uuid);
            let lane = tracks[&b.track_uuid.unwrap()];
            assert_eq!(lane.parent_uuid, thread.uuid);
            let finished = b.debug_annotations[0].string_value.clone().unwrap();
            slices.push((
                format!(
                    "{} on {}",
                    b.name.clone().unwrap(),
                    lane.name.clone().unwrap()
                ),
                pair[0].timestamp.unwrap(),
                pair[1].timestamp.unwrap(),
                finished,
            ));
        }
        let lane_of = |i: usize| packets[2 * i].track_event.as_ref().unwrap().track_uuid;
        assert_ne!(lane_of(0), lane_of(1));
        assert_eq!(lane_of(0), lane_of(2));
        assert_eq!(
            slices,
            vec![
                ("s1 on depth 0".into(), 100, 200, "true".into()),
                ("s2 on depth 0".into(), 150, 300, "true".into()),
                ("s3 on depth 0".into(), 201, 250, "true".into()),
                (
                    "s4 [began before range] on depth 1".into(),
                    100,
                    400,
                    "true".into()
                ),
                (
                    "s5 [open at range end] on depth 1".into(),
                    500,
                    1_000,
                    "unknown".into()
                ),
                (
                    "s6 [unfinished] on depth 2".into(),
                    600,
                    1_000,
                    "false".into()
                ),
            ]
        );
    }
}
