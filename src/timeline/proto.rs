//! The few Perfetto trace messages the writer emits, as prost messages.
//!
//! Field numbers are those of Perfetto's `protos/perfetto/trace/` definitions (`trace.proto`,
//! `trace_packet.proto`, `track_event/track_descriptor.proto`, `track_event/track_event.proto`,
//! `track_event/debug_annotation.proto`, `track_event/{process,thread}_descriptor.proto`). Only
//! the fields used here are declared; a `oneof` of Perfetto is declared as its one member used
//! (the wire encoding is the same). Decoding a full Perfetto trace with these messages skips
//! the other fields.

/// A whole trace: a sequence of packets (`Trace.packet = 1`). A trace file is the
/// concatenation of its packets, each written as field 1.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Trace {
    /// The packets.
    #[prost(message, repeated, tag = "1")]
    pub packet: Vec<TracePacket>,
}

/// One packet of a trace.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TracePacket {
    /// Timestamp in ns (boot clock by default; here, ns since the Unix epoch).
    #[prost(uint64, optional, tag = "8")]
    pub timestamp: Option<u64>,
    /// The writer sequence of the packet (`optional_trusted_packet_sequence_id`).
    #[prost(uint32, optional, tag = "10")]
    pub trusted_packet_sequence_id: Option<u32>,
    /// A track event (the `data` oneof's `track_event`).
    #[prost(message, optional, tag = "11")]
    pub track_event: Option<TrackEvent>,
    /// Sequence flags: 1 = incremental state cleared, 2 = needs incremental state.
    #[prost(uint32, optional, tag = "13")]
    pub sequence_flags: Option<u32>,
    /// A track descriptor (the `data` oneof's `track_descriptor`).
    #[prost(message, optional, tag = "60")]
    pub track_descriptor: Option<TrackDescriptor>,
}

/// Declares a track: process, thread or a plain (async) track under a parent.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TrackDescriptor {
    /// Unique id of the track in the trace.
    #[prost(uint64, optional, tag = "1")]
    pub uuid: Option<u64>,
    /// Track name (the `static_or_dynamic_name` oneof's `name`).
    #[prost(string, optional, tag = "2")]
    pub name: Option<String>,
    /// Set on a process track.
    #[prost(message, optional, tag = "3")]
    pub process: Option<ProcessDescriptor>,
    /// Set on a thread track.
    #[prost(message, optional, tag = "4")]
    pub thread: Option<ThreadDescriptor>,
    /// The parent track.
    #[prost(uint64, optional, tag = "5")]
    pub parent_uuid: Option<u64>,
    /// How the UI orders this track's children (`ChildTracksOrdering`: 3 = explicit).
    #[prost(int32, optional, tag = "11")]
    pub child_ordering: Option<i32>,
    /// Rank among siblings when the parent's ordering is explicit.
    #[prost(int32, optional, tag = "12")]
    pub sibling_order_rank: Option<i32>,
}

/// Describes a process track.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProcessDescriptor {
    /// Process id (synthetic: micromegas records a UUID, not the OS pid).
    #[prost(int32, optional, tag = "1")]
    pub pid: Option<i32>,
    /// Process name.
    #[prost(string, optional, tag = "6")]
    pub process_name: Option<String>,
}

/// Describes a thread track.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ThreadDescriptor {
    /// The process id of the process track.
    #[prost(int32, optional, tag = "1")]
    pub pid: Option<i32>,
    /// Thread id (int64 in Perfetto: OS thread ids do not fit 32 bits).
    #[prost(int64, optional, tag = "2")]
    pub tid: Option<i64>,
    /// Thread name.
    #[prost(string, optional, tag = "5")]
    pub thread_name: Option<String>,
}

/// `TrackEvent.Type`: a slice begins.
pub const SLICE_BEGIN: i32 = 1;
/// `TrackEvent.Type`: a slice ends.
pub const SLICE_END: i32 = 2;

/// An event on a track.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TrackEvent {
    /// Arguments shown with the slice.
    #[prost(message, repeated, tag = "4")]
    pub debug_annotations: Vec<DebugAnnotation>,
    /// Event type: [`SLICE_BEGIN`], [`SLICE_END`].
    #[prost(int32, optional, tag = "9")]
    pub r#type: Option<i32>,
    /// The track of the event.
    #[prost(uint64, optional, tag = "11")]
    pub track_uuid: Option<u64>,
    /// Event name (the `name_field` oneof's `name`).
    #[prost(string, optional, tag = "23")]
    pub name: Option<String>,
}

/// A named argument of an event.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DebugAnnotation {
    /// A boolean value (the `value` oneof's `bool_value`).
    #[prost(bool, optional, tag = "2")]
    pub bool_value: Option<bool>,
    /// An integer value (`int_value`).
    #[prost(int64, optional, tag = "4")]
    pub int_value: Option<i64>,
    /// A string value (`string_value`).
    #[prost(string, optional, tag = "6")]
    pub string_value: Option<String>,
    /// The argument's name (the `name_field` oneof's `name`).
    #[prost(string, optional, tag = "10")]
    pub name: Option<String>,
}
