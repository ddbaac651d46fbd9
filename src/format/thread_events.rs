//! Thread (scope) span events: what `#[span_fn]` on a plain function and `span_scope!` record
//! on the thread that runs them, in the same blocks as the async events.
//!
//! [`AsyncEventDecoder::decode_thread_blob`] walks a block's objects buffer and hands each
//! thread span event to a sink, in block order, with its stream-wide id (the block's
//! `object_offset` plus the record's index in the block, counting every record: micromegas's
//! span id), its time and its scope. Pairing begins with ends is the caller's job: a scope can
//! begin in one block and end blocks later.

use super::decoder::{AsyncEventDecoder, ResolvedScope, ScopeEntries, Stop};
use super::dependencies::{Dependencies, EntryIndex, read_u64};
use super::error::{FormatError, FormatResult};
use super::hash::scope_hash;
use super::layout::{EventType, ObjectKind, ScopeSource, StreamLayout};
use super::ticks::TickConverter;

/// One thread span event of a block, borrowed from the decoder until the sink returns.
#[derive(Debug, Clone, Copy)]
pub struct ThreadEvent<'a> {
    /// Stream-wide index of the record: the block's `object_offset` plus its index in the block.
    pub id: i64,
    /// Nanoseconds since the epoch.
    pub time: i64,
    /// Whether the scope was entered or left.
    pub event_type: EventType,
    /// The scope hash (micromegas's: name, file, target, line).
    pub hash: u32,
    /// Source line.
    pub line: u32,
    entries: ScopeEntries,
    properties: &'a [(EntryIndex, EntryIndex)],
    deps: &'a Dependencies,
}

impl<'a> ThreadEvent<'a> {
    /// Scope name (the function's path for `#[span_fn]`).
    pub fn name(&self) -> &'a str {
        self.deps.str(self.entries.name)
    }

    /// Source file.
    pub fn filename(&self) -> &'a str {
        self.deps.str(self.entries.file)
    }

    /// Target (module path).
    pub fn target(&self) -> &'a str {
        self.deps.str(self.entries.target)
    }

    /// The properties of a tagged end; none for other events.
    pub fn properties(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let deps = self.deps;
        self.properties
            .iter()
            .map(move |&(k, v)| (deps.str(k), deps.str(v)))
    }
}

/// Where a window's walk starts, whether more of the buffer follows, and the block's first
/// record's index in the stream.
#[derive(Debug, Clone, Copy)]
struct Walk {
    from: usize,
    more_input: bool,
    object_offset: i64,
}

/// What decoding one block's thread events found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadDecodeSummary {
    /// Objects in the buffer (all types).
    pub objects: usize,
    /// Thread span events handed to the sink.
    pub events: usize,
}

impl AsyncEventDecoder {
    /// Hands the thread span events of a stored blob (CBOR, then LZ4) to `sink`, in record order.
    /// `object_offset` is the block's `object_offset` (the index of its first record in the
    /// stream). Stops at the first error, the block's or the sink's.
    pub fn decode_thread_blob(
        &mut self,
        layout: &StreamLayout,
        blob: &[u8],
        object_offset: i64,
        clock: &TickConverter,
        mut sink: impl FnMut(ThreadEvent<'_>) -> FormatResult<()>,
    ) -> FormatResult<ThreadDecodeSummary> {
        // The objects are inflated a window at a time, as for async events: a 10 MiB buffer is
        // never held whole.
        self.inflate(blob, true)?;
        let mut summary = ThreadDecodeSummary::default();
        self.walk_windows(blob, |decoder, window| {
            if window.first {
                let deps = window.dependencies.unwrap_or_default();
                decoder.dependencies.read(layout, deps)?;
                decoder.thread_scopes.descriptions.clear();
                decoder.thread_scopes.named.clear();
            }
            let walk = Walk {
                from: window.from,
                more_input: window.more_input,
                object_offset,
            };
            let objects = window.objects;
            decoder.walk_thread_events(layout, objects, walk, clock, &mut sink, &mut summary)
        })?;
        Ok(summary)
    }

    fn walk_thread_events(
        &mut self,
        layout: &StreamLayout,
        buf: &[u8],
        walk: Walk,
        clock: &TickConverter,
        sink: &mut impl FnMut(ThreadEvent<'_>) -> FormatResult<()>,
        summary: &mut ThreadDecodeSummary,
    ) -> FormatResult<Stop> {
        let mut records = layout.object_records(buf).starting_at(walk.from);
        loop {
            let at = records.position();
            let record = match records.next() {
                None if walk.more_input => return Ok(Stop::NeedMore(at)),
                None => return Ok(Stop::End),
                Some(Ok(record)) => record,
                Some(Err(FormatError::Truncated { offset, .. })) if walk.more_input => {
                    return Ok(Stop::NeedMore(offset));
                }
                Some(Err(e)) => return Err(e),
            };
            // micromegas's span id: the record's index in the stream, every record counted.
            let index = summary.objects;
            summary.objects += 1;
            let ObjectKind::Thread(l) = &record.ty.kind else {
                continue;
            };
            let scope = match l.scope {
                ScopeSource::Description { desc } => {
                    let id = read_u64(record.bytes, desc);
                    match self.thread_scopes.descriptions.get(&id) {
                        Some(s) => *s,
                        None => {
                            let s = self.resolve(record.ty, l.scope, record.bytes)?;
                            self.thread_scopes.descriptions.insert(id, s);
                            s
                        }
                    }
                }
                ScopeSource::Named { location, name } => {
                    let key = (
                        read_u64(record.bytes, location),
                        read_u64(record.bytes, name),
                    );
                    match self.thread_scopes.named.get(&key) {
                        Some(s) => *s,
                        None => {
                            let s = self.resolve(record.ty, l.scope, record.bytes)?;
                            self.thread_scopes.named.insert(key, s);
                            s
                        }
                    }
                }
            };
            let properties = self.property_set(record.ty, l.properties, record.bytes)?;
            let ticks = read_u64(record.bytes, l.time) as i64;
            summary.events += 1;
            sink(ThreadEvent {
                id: walk.object_offset.saturating_add(index as i64),
                time: clock.ticks_to_ns(ticks),
                event_type: l.event_type,
                hash: scope.hash,
                line: scope.entries.line,
                entries: scope.entries,
                properties,
                deps: &self.dependencies,
            })?;
        }
    }

    fn resolve(
        &self,
        ty: &super::layout::ObjectType,
        source: ScopeSource,
        record: &[u8],
    ) -> FormatResult<ResolvedScope> {
        let entries = self.scope_entries(ty, source, record)?;
        let deps = &self.dependencies;
        let hash = scope_hash(
            deps.str(entries.name),
            deps.str(entries.file),
            deps.str(entries.target),
            entries.line,
        );
        Ok(ResolvedScope { entries, hash })
    }
}
