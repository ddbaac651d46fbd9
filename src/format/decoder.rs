//! The async-event decoder: walks a block's objects buffer and appends every async span event
//! that passes the [`RowFilter`] to an [`EventBatchBuilder`].
//!
//! Each record goes through three steps: framing (`RecordIter`, shared with the dependencies
//! walk), filtering (`admit`, on the raw fields) and column filling (`EventBatchBuilder::push_row`).
//! Records that are not async events (thread span events, anything else) are skipped by their
//! size alone. Fields are read at the offsets of the stream's [`StreamLayout`]. Strings are
//! resolved once per span description per block, and only when a string column, the hash, the
//! properties or a name/target filter needs them; otherwise the dependencies buffer is not even
//! decompressed.

use super::builder::{EventBatchBuilder, ScopeKeys};
use super::dependencies::{Dependencies, Entry, EntryIndex, IdMap, dangling, read_u64};
use super::error::{FormatError, FormatResult};
use super::hash::scope_hash;
use super::layout::{AsyncEventLayout, ObjectKind, ObjectType, ScopeSource, StreamLayout};
use super::lz4::{DEFAULT_INFLATE_LIMIT, FrameReader, WINDOW as LZ4_WINDOW, decompress_frame_into};
use super::payload::{BlockPayload, PayloadView};
use super::row_filter::{RawEvent, RowFilter, admit};
use super::schema::Column;
use super::ticks::TickConverter;
use datafusion::arrow::error::ArrowError;

/// The two decompressed transit buffers of a block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecompressedBlock {
    /// The dependencies buffer; `None` when it was not needed and left compressed.
    pub dependencies: Option<Vec<u8>>,
    /// The objects buffer.
    pub objects: Vec<u8>,
}

impl DecompressedBlock {
    /// Decompresses a payload; the dependencies only when `with_dependencies`.
    pub fn from_payload(payload: &BlockPayload, with_dependencies: bool) -> FormatResult<Self> {
        Self::from_payload_limited(payload, with_dependencies, DEFAULT_INFLATE_LIMIT)
    }

    /// [`from_payload`](Self::from_payload), each buffer inflating to at most `limit` bytes.
    pub fn from_payload_limited(
        payload: &BlockPayload,
        with_dependencies: bool,
        limit: usize,
    ) -> FormatResult<Self> {
        let inflate = |frame: &[u8], buffer| -> FormatResult<Vec<u8>> {
            let mut out = Vec::new();
            let n = decompress_frame_into(frame, &mut out, buffer, limit)?;
            out.truncate(n);
            Ok(out)
        };
        let objects = inflate(&payload.objects, "objects")?;
        let dependencies = if with_dependencies {
            Some(inflate(&payload.dependencies, "dependencies")?)
        } else {
            None
        };
        Ok(Self {
            dependencies,
            objects,
        })
    }

    /// Decodes the CBOR blob then decompresses it.
    pub fn from_blob(blob: &[u8], with_dependencies: bool) -> FormatResult<Self> {
        Self::from_blob_limited(blob, with_dependencies, DEFAULT_INFLATE_LIMIT)
    }

    /// [`from_blob`](Self::from_blob), each buffer inflating to at most `limit` bytes.
    pub fn from_blob_limited(
        blob: &[u8],
        with_dependencies: bool,
        limit: usize,
    ) -> FormatResult<Self> {
        Self::from_payload_limited(&BlockPayload::from_cbor(blob)?, with_dependencies, limit)
    }

    /// Bytes held.
    pub fn size(&self) -> usize {
        self.objects.len() + self.dependencies.as_ref().map_or(0, Vec::len)
    }
}

/// The text ids of the block being decoded, for the `stream_id` and `block_id` columns.
#[derive(Debug, Clone, Copy)]
pub struct BlockIds<'a> {
    /// Stream UUID, lower-case hyphenated.
    pub stream_id: &'a str,
    /// Block UUID, lower-case hyphenated.
    pub block_id: &'a str,
}

/// What decoding one block found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeSummary {
    /// Objects in the buffer (all types).
    pub objects: usize,
    /// Async span events in the buffer (before filtering).
    pub events: usize,
    /// Rows appended.
    pub rows: usize,
    /// Earliest time of the appended rows (times are only known when the `time` column is
    /// built or filtered on; otherwise they read as 0).
    pub min_time: Option<i64>,
    /// Latest time of the appended rows.
    pub max_time: Option<i64>,
    /// Whether the appended rows are in non-decreasing time order.
    pub time_ordered: bool,
}

impl DecodeSummary {
    /// The summary of these rows followed by `next`'s.
    fn then(self, next: DecodeSummary) -> DecodeSummary {
        let ordered_between = match (self.max_time, next.min_time) {
            (Some(last), Some(first)) => first >= last,
            _ => true,
        };
        DecodeSummary {
            objects: self.objects + next.objects,
            events: self.events + next.events,
            rows: self.rows + next.rows,
            min_time: self.min_time.into_iter().chain(next.min_time).min(),
            max_time: self.max_time.into_iter().chain(next.max_time).max(),
            time_ordered: self.time_ordered && next.time_ordered && ordered_between,
        }
    }

    /// Counts an appended row of this time.
    #[inline]
    fn add_row(&mut self, time: i64) {
        if self.max_time.is_some_and(|last| time < last) {
            self.time_ordered = false;
        }
        self.rows += 1;
        self.min_time = Some(self.min_time.map_or(time, |m| m.min(time)));
        self.max_time = Some(self.max_time.map_or(time, |m| m.max(time)));
    }
}

/// Where the decoding of a block goes on: the start of its next record in the objects buffer.
///
/// [`Resume::START`] begins a block; [`AsyncEventDecoder::decode_part`] returns the next one
/// when it stopped at its row limit before the block's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    offset: usize,
}

impl Resume {
    /// The start of a block.
    pub const START: Resume = Resume { offset: 0 };
}

/// Where [`AsyncEventDecoder::decode_part`] reads a block.
#[derive(Debug, Clone, Copy)]
pub enum BlockSource<'a> {
    /// A stored blob (CBOR, then LZ4), the one last given to
    /// [`inflate`](AsyncEventDecoder::inflate): its objects buffer is inflated a window at a
    /// time as the parts go, so that a large block is never held whole.
    Blob(&'a [u8]),
    /// Buffers decompressed whole (a block shared by several scans).
    Decompressed(&'a DecompressedBlock),
}

/// Bytes of a blob's objects buffer inflated at a time (plus the 64 KiB before them that the
/// next LZ4 block may refer to, and the start of a record cut at the window's end).
const OBJECTS_WINDOW: usize = 1 << 20;

/// The objects buffer of the blob being decoded, inflated a window at a time into the
/// decoder's `objects_buf`.
#[derive(Debug)]
pub(super) struct Streamed {
    frame: FrameReader,
    /// Where the objects frame lies in the blob.
    at: std::ops::Range<usize>,
    /// Bytes of `objects_buf` holding content.
    len: usize,
    /// Where, in `objects_buf`, the next record starts.
    pos: usize,
    /// Offset in the block's whole objects buffer of `objects_buf[0]`.
    base: usize,
    /// Bytes of `dependencies_buf` inflated (`None`: left compressed).
    deps_len: Option<usize>,
    /// Whether the first part was decoded (the dependencies read).
    started: bool,
}

impl Streamed {
    /// Moves the window on: keeps the record starting at `at` (cut at the window's end) and the
    /// 64 KiB before the next LZ4 block, which it may refer to, then inflates the next window
    /// of `frame` after them.
    pub(super) fn slide(
        &mut self,
        frame: &[u8],
        objects: &mut Vec<u8>,
        at: usize,
    ) -> FormatResult<()> {
        let cut = at.min(self.len.saturating_sub(LZ4_WINDOW));
        objects.copy_within(cut..self.len, 0);
        (self.len, self.base, self.pos) = (self.len - cut, self.base + cut, at - cut);
        self.frame
            .read_into(frame, objects, &mut self.len, OBJECTS_WINDOW)
    }
}

/// One window of the objects buffer being walked (see [`AsyncEventDecoder::walk_windows`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Window<'a> {
    /// The block's dependencies buffer (`None`: left compressed).
    pub dependencies: Option<&'a [u8]>,
    /// The inflated window.
    pub objects: &'a [u8],
    /// Where in the window the walk goes on.
    pub from: usize,
    /// Whether more of the buffer follows the window.
    pub more_input: bool,
    /// The first walk of the block (its dependencies are read then).
    pub first: bool,
}

/// Why [`AsyncEventDecoder::decode_inner`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// The buffer is done.
    End,
    /// `max_rows` were appended; the next record starts here.
    Limit(usize),
    /// The record starting here goes past the end of the buffer, which has more content.
    NeedMore(usize),
}

/// What decoding part of a block did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodedPart {
    /// The rows appended by this part.
    pub summary: DecodeSummary,
    /// Where the block goes on; `None` when it is done.
    pub next: Option<Resume>,
}

/// Where a scope's strings are in the block's dependencies, and its line.
#[derive(Debug, Clone, Copy)]
pub(super) struct ScopeEntries {
    pub name: EntryIndex,
    pub file: EntryIndex,
    pub target: EntryIndex,
    pub line: u32,
}

/// A thread event's scope resolved once per block: where its strings are, and its hash.
#[derive(Debug, Clone, Copy)]
pub(super) struct ResolvedScope {
    pub entries: ScopeEntries,
    pub hash: u32,
}

/// The thread event scopes of the block being decoded, by span description id or (location,
/// name) ids (see `thread_events.rs`).
#[derive(Debug, Default)]
pub(super) struct ThreadScopes {
    pub descriptions: IdMap<u64, ResolvedScope>,
    pub named: IdMap<(u64, u64), ResolvedScope>,
}

/// The records one call decodes: from byte `from` of the objects buffer, at most `max_rows` rows.
#[derive(Debug, Clone, Copy)]
struct Part {
    from: usize,
    max_rows: usize,
    /// The first records of the block: its dependencies are read first.
    start_block: bool,
    /// The buffer is a window with more content after it.
    more_input: bool,
}

/// A resolved span scope, cached per block.
#[derive(Debug, Clone, Copy)]
struct Scope {
    keys: ScopeKeys,
    /// Whether the scope passes the filter's names and targets.
    keep: bool,
}

/// Decodes blocks into an [`EventBatchBuilder`]. Keeps its tables between blocks to reuse their
/// allocations; one decoder serves blocks of any stream.
#[derive(Debug)]
pub struct AsyncEventDecoder {
    pub(super) dependencies: Dependencies,
    descriptions: IdMap<u64, Scope>,
    named: IdMap<(u64, u64), Scope>,
    /// The thread event scopes of the block, by span description or (location, name) ids.
    pub(super) thread_scopes: ThreadScopes,
    /// Direct-mapped cache in front of `descriptions` (most events name a few descriptions).
    recent: [Option<(u64, Scope)>; RECENT],
    /// Decompression buffers reused from block to block.
    dependencies_buf: Vec<u8>,
    objects_buf: Vec<u8>,
    /// The blob last [`inflate`](Self::inflate)d, while it has records left.
    streamed: Option<Streamed>,
    /// Largest inflated size of one buffer of a block.
    inflate_limit: usize,
}

impl Default for AsyncEventDecoder {
    fn default() -> Self {
        Self {
            dependencies: Dependencies::default(),
            descriptions: IdMap::default(),
            named: IdMap::default(),
            thread_scopes: ThreadScopes::default(),
            recent: [None; RECENT],
            dependencies_buf: Vec::new(),
            objects_buf: Vec::new(),
            streamed: None,
            inflate_limit: DEFAULT_INFLATE_LIMIT,
        }
    }
}

const RECENT: usize = 32;

/// A failure to build the batch (a column past Arrow's 2 GiB, too many strings): not a defect of
/// the block, so never counted as a corrupt one.
fn arrow_err(e: ArrowError) -> FormatError {
    FormatError::Output {
        detail: e.to_string(),
    }
}

impl AsyncEventDecoder {
    /// A decoder with empty tables.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes held by the decompression buffers reused from block to block.
    pub fn buffer_bytes(&self) -> usize {
        self.dependencies_buf.capacity() + self.objects_buf.capacity()
    }

    /// The decoder refusing a block whose buffers inflate beyond `limit` bytes each (see
    /// [`DEFAULT_INFLATE_LIMIT`]).
    pub fn with_inflate_limit(mut self, limit: usize) -> Self {
        self.inflate_limit = limit;
        self
    }

    /// Whether decoding for these columns and this filter needs the dependencies buffer.
    pub fn needs_dependencies(out: &EventBatchBuilder, filter: &RowFilter) -> bool {
        out.columns().iter().any(Column::needs_dependencies) || filter.needs_strings()
    }

    /// Appends the async events of a stored blob (CBOR, then LZ4) that pass `filter` to `out`,
    /// decompressing into the decoder's own reused buffers. The dependencies buffer is only
    /// decompressed when the columns or the filter need strings.
    ///
    /// On error, `out` is left as it was before the call.
    pub fn decode_blob(
        &mut self,
        layout: &StreamLayout,
        blob: &[u8],
        ids: BlockIds<'_>,
        clock: &TickConverter,
        filter: &RowFilter,
        out: &mut EventBatchBuilder,
    ) -> FormatResult<DecodeSummary> {
        self.inflate(blob, Self::needs_dependencies(out, filter))?;
        self.decode_whole(layout, BlockSource::Blob(blob), ids, clock, filter, out)
    }

    fn decode_whole(
        &mut self,
        layout: &StreamLayout,
        source: BlockSource<'_>,
        ids: BlockIds<'_>,
        clock: &TickConverter,
        filter: &RowFilter,
        out: &mut EventBatchBuilder,
    ) -> FormatResult<DecodeSummary> {
        let start = Resume::START;
        let part = self.decode_part(layout, source, start, ids, clock, filter, out, usize::MAX)?;
        Ok(part.summary)
    }

    /// Starts decoding a stored blob (CBOR, then LZ4) with [`decode_part`](Self::decode_part)
    /// and [`BlockSource::Blob`]: its dependencies buffer is inflated (only when
    /// `with_dependencies`, see [`needs_dependencies`](Self::needs_dependencies)) and the first
    /// window of its objects buffer, into the decoder's own buffers, reused from block to block.
    pub fn inflate(&mut self, blob: &[u8], with_dependencies: bool) -> FormatResult<()> {
        self.streamed = None;
        let payload = PayloadView::parse(blob)?;
        let limit = self.inflate_limit;
        let deps_len = if with_dependencies {
            let deps = &mut self.dependencies_buf;
            Some(decompress_frame_into(
                &payload.dependencies,
                deps,
                "dependencies",
                limit,
            )?)
        } else {
            None
        };
        let objects = &payload.objects[..];
        let offset = (objects.as_ptr() as usize).wrapping_sub(blob.as_ptr() as usize);
        let at = offset..offset.saturating_add(objects.len());
        if blob.get(at.clone()) != Some(objects) {
            return Err(FormatError::Metadata(
                "the objects frame is not in the blob".into(),
            ));
        }
        let mut frame = FrameReader::new(objects, "objects", limit)?;
        let mut len = 0;
        frame.read_into(objects, &mut self.objects_buf, &mut len, OBJECTS_WINDOW)?;
        self.streamed = Some(Streamed {
            frame,
            at,
            len,
            pos: 0,
            base: 0,
            deps_len,
            started: false,
        });
        Ok(())
    }

    /// Appends at most `max_rows` rows of a block to `out`, from `from` on. A block is decoded
    /// in parts by passing each returned [`DecodedPart::next`] to the next call, with the same
    /// source and no other block decoded in between; `out` may be finished between parts.
    ///
    /// On error, `out` is left as it was before the call (the rows of earlier parts stay).
    #[allow(clippy::too_many_arguments)]
    pub fn decode_part(
        &mut self,
        layout: &StreamLayout,
        source: BlockSource<'_>,
        from: Resume,
        ids: BlockIds<'_>,
        clock: &TickConverter,
        filter: &RowFilter,
        out: &mut EventBatchBuilder,
        max_rows: usize,
    ) -> FormatResult<DecodedPart> {
        let before = out.len();
        let result = match source {
            BlockSource::Blob(blob) => {
                self.decode_streamed(layout, blob, from, ids, clock, filter, out, max_rows)
            }
            BlockSource::Decompressed(block) => {
                let part = Part {
                    from: from.offset,
                    max_rows,
                    start_block: from == Resume::START,
                    more_input: false,
                };
                let deps = block.dependencies.as_deref();
                self.decode_inner(layout, deps, &block.objects, ids, clock, filter, out, part)
                    .map(|(summary, stop)| DecodedPart {
                        summary,
                        next: match stop {
                            Stop::Limit(offset) => Some(Resume { offset }),
                            Stop::End | Stop::NeedMore(_) => None,
                        },
                    })
            }
        };
        if result.is_err() {
            out.truncate(before);
        }
        result
    }

    /// [`decode_part`](Self::decode_part) of the blob being streamed: windows of its objects
    /// buffer are inflated as the records need them.
    #[allow(clippy::too_many_arguments)]
    fn decode_streamed(
        &mut self,
        layout: &StreamLayout,
        blob: &[u8],
        from: Resume,
        ids: BlockIds<'_>,
        clock: &TickConverter,
        filter: &RowFilter,
        out: &mut EventBatchBuilder,
        max_rows: usize,
    ) -> FormatResult<DecodedPart> {
        let Some(s) = &self.streamed else {
            return Err(FormatError::Metadata("no block was inflated".into()));
        };
        if from.offset != s.base + s.pos {
            return Err(FormatError::Metadata(format!(
                "a block's decoding resumed at byte {} instead of {}",
                from.offset,
                s.base + s.pos
            )));
        }
        let mut total: Option<DecodeSummary> = None;
        let next = self.walk_windows(blob, |decoder, window| {
            let part = Part {
                from: window.from,
                max_rows: max_rows.saturating_sub(total.map_or(0, |t| t.rows)),
                start_block: window.first,
                more_input: window.more_input,
            };
            let (deps, objects) = (window.dependencies, window.objects);
            let (summary, stop) =
                decoder.decode_inner(layout, deps, objects, ids, clock, filter, out, part)?;
            total = Some(total.map_or(summary, |t| t.then(summary)));
            Ok(stop)
        })?;
        let summary = total.unwrap_or(DecodeSummary {
            time_ordered: true,
            ..DecodeSummary::default()
        });
        Ok(DecodedPart {
            summary,
            next: next.map(|offset| Resume { offset }),
        })
    }

    /// Runs `walk` over the objects of the blob last [`inflate`](Self::inflate)d (`blob`), a
    /// window at a time: `walk` reads the records of a [`Window`] from its `from` and says where
    /// it stopped. At [`Stop::NeedMore`] the window moves on and `walk` goes on from the cut
    /// record; at [`Stop::Limit`] the walk is kept for the next call, which goes on there, and
    /// its offset in the whole buffer is returned; at [`Stop::End`] the blob is done (`None`).
    /// Error offsets are made ones of the whole buffer.
    pub(super) fn walk_windows(
        &mut self,
        blob: &[u8],
        mut walk: impl FnMut(&mut Self, Window<'_>) -> FormatResult<Stop>,
    ) -> FormatResult<Option<usize>> {
        let Some(mut s) = self.streamed.take() else {
            return Err(FormatError::Metadata("no block was inflated".into()));
        };
        let frame = blob
            .get(s.at.clone())
            .ok_or_else(|| FormatError::Metadata("not the blob that was inflated".into()))?;
        let mut objects = std::mem::take(&mut self.objects_buf);
        let deps = std::mem::take(&mut self.dependencies_buf);
        let result = loop {
            let window = Window {
                dependencies: s.deps_len.map(|n| &deps[..n]),
                objects: &objects[..s.len],
                from: s.pos,
                more_input: !s.frame.is_done(),
                first: !s.started,
            };
            let stop = walk(self, window);
            s.started = true;
            match stop {
                Ok(Stop::NeedMore(at)) => {
                    if let Err(e) = s.slide(frame, &mut objects, at) {
                        break Err(e);
                    }
                }
                Ok(Stop::Limit(at)) => {
                    s.pos = at;
                    break Ok(Some(s.base + at));
                }
                Ok(Stop::End) => break Ok(None),
                Err(e) => break Err(shifted(e, s.base)),
            }
        };
        self.objects_buf = objects;
        self.dependencies_buf = deps;
        if let Ok(Some(_)) = result {
            self.streamed = Some(s);
        }
        result
    }

    /// Appends the async events of a decompressed block that pass `filter` to `out`.
    ///
    /// On error, `out` is left as it was before the call.
    pub fn decode(
        &mut self,
        layout: &StreamLayout,
        block: &DecompressedBlock,
        ids: BlockIds<'_>,
        clock: &TickConverter,
        filter: &RowFilter,
        out: &mut EventBatchBuilder,
    ) -> FormatResult<DecodeSummary> {
        let source = BlockSource::Decompressed(block);
        self.decode_whole(layout, source, ids, clock, filter, out)
    }

    #[allow(clippy::too_many_arguments)]
    fn decode_inner(
        &mut self,
        layout: &StreamLayout,
        deps: Option<&[u8]>,
        buf: &[u8],
        ids: BlockIds<'_>,
        clock: &TickConverter,
        filter: &RowFilter,
        out: &mut EventBatchBuilder,
        part: Part,
    ) -> FormatResult<(DecodeSummary, Stop)> {
        let mut summary = DecodeSummary {
            time_ordered: true,
            ..DecodeSummary::default()
        };
        let with_scope = Self::needs_dependencies(out, filter);
        if with_scope {
            let deps = deps.ok_or_else(|| {
                FormatError::Metadata("the dependencies buffer was not decompressed".into())
            })?;
            if part.start_block {
                self.dependencies.read(layout, deps)?;
            }
            // The cached scopes hold keys of the builder's string table, which a batch
            // finished between two parts starts afresh.
            self.descriptions.clear();
            self.named.clear();
        }
        out.start_block(ids.stream_id, ids.block_id)
            .map_err(arrow_err)?;
        let cols = out.columns();
        let need_time = cols.contains(Column::Time) || filter.time.is_some();
        let want_properties = cols.contains(Column::Properties);
        self.recent.fill(None);

        let rest = buf.len().saturating_sub(part.from);
        out.reserve((rest / 48).min(part.max_rows));
        let mut records = layout.object_records(buf).starting_at(part.from);
        loop {
            let at = records.position();
            if summary.rows >= part.max_rows && (at < buf.len() || part.more_input) {
                return Ok((summary, Stop::Limit(at)));
            }
            // Framing.
            let record = match records.next() {
                None if part.more_input => return Ok((summary, Stop::NeedMore(at))),
                None => break,
                Some(Ok(record)) => record,
                Some(Err(FormatError::Truncated { offset, .. })) if part.more_input => {
                    return Ok((summary, Stop::NeedMore(offset)));
                }
                Some(Err(e)) => return Err(e),
            };
            summary.objects += 1;
            let ObjectKind::Async(l) = &record.ty.kind else {
                continue;
            };
            summary.events += 1;

            // Filtering.
            let raw = RawEvent::read(l, record.bytes);
            let Some(mut row) = admit(filter, raw, clock, need_time) else {
                continue;
            };
            if with_scope {
                let scope = self.scope(record.ty, l, record.bytes, filter, out)?;
                if !scope.keep {
                    continue;
                }
                row.scope = scope.keys;
            }

            // Column filling.
            let properties = if want_properties {
                self.property_set(record.ty, l.properties, record.bytes)?
            } else {
                &[]
            };
            let deps = &self.dependencies;
            out.push_row(
                row,
                properties.iter().map(|&(k, v)| (deps.str(k), deps.str(v))),
            )
            .map_err(arrow_err)?;

            summary.add_row(row.time);
        }
        Ok((summary, Stop::End))
    }

    /// Resolves (and caches) the name, file, target, line and hash of an event's span.
    fn scope(
        &mut self,
        ty: &ObjectType,
        l: &AsyncEventLayout,
        record: &[u8],
        filter: &RowFilter,
        out: &mut EventBatchBuilder,
    ) -> FormatResult<Scope> {
        match l.scope {
            ScopeSource::Description { desc } => {
                let id = read_u64(record, desc);
                let slot = ((id >> 3) ^ (id >> 11)) as usize % RECENT;
                if let Some((cached, scope)) = self.recent[slot]
                    && cached == id
                {
                    return Ok(scope);
                }
                if let Some(s) = self.descriptions.get(&id) {
                    self.recent[slot] = Some((id, *s));
                    return Ok(*s);
                }
                let entries = self.scope_entries(ty, l.scope, record)?;
                let scope = make_scope(&self.dependencies, entries, filter, out)?;
                self.descriptions.insert(id, scope);
                Ok(scope)
            }
            ScopeSource::Named { location, name } => {
                let key = (read_u64(record, location), read_u64(record, name));
                if let Some(s) = self.named.get(&key) {
                    return Ok(*s);
                }
                let entries = self.scope_entries(ty, l.scope, record)?;
                let scope = make_scope(&self.dependencies, entries, filter, out)?;
                self.named.insert(key, scope);
                Ok(scope)
            }
        }
    }

    /// The name, file and target strings and the line of an event's scope, looked up in the
    /// block's dependencies (a [`SpanRecord`](ScopeSource::Description), or a span location
    /// plus a name string).
    pub(super) fn scope_entries(
        &self,
        ty: &ObjectType,
        source: ScopeSource,
        record: &[u8],
    ) -> FormatResult<ScopeEntries> {
        match source {
            ScopeSource::Description { desc } => {
                let id = read_u64(record, desc);
                match self.dependencies.lookup(id) {
                    Some((
                        _,
                        Entry::Description {
                            name,
                            target,
                            file,
                            line,
                        },
                    )) => Ok(ScopeEntries {
                        name,
                        file,
                        target,
                        line,
                    }),
                    found => Err(dangling(
                        &ty.name,
                        "span_desc",
                        id,
                        found.is_some(),
                        "SpanRecord",
                    )),
                }
            }
            ScopeSource::Named { location, name } => {
                let loc_id = read_u64(record, location);
                let name_id = read_u64(record, name);
                let (target, file, line) = match self.dependencies.lookup(loc_id) {
                    Some((_, Entry::Location { target, file, line })) => (target, file, line),
                    found => {
                        return Err(dangling(
                            &ty.name,
                            "span_location",
                            loc_id,
                            found.is_some(),
                            "SpanLocationRecord",
                        ));
                    }
                };
                let name = self.dependencies.string_ref(name_id, &ty.name, "name")?;
                Ok(ScopeEntries {
                    name,
                    file,
                    target,
                    line,
                })
            }
        }
    }

    /// The (name, value) entries of a tagged end's property set; none for other events.
    pub(super) fn property_set(
        &self,
        ty: &ObjectType,
        properties: Option<usize>,
        record: &[u8],
    ) -> FormatResult<&[(EntryIndex, EntryIndex)]> {
        let Some(offset) = properties else {
            return Ok(&[]);
        };
        let id = read_u64(record, offset);
        match self.dependencies.lookup(id) {
            Some((_, Entry::PropertySet { start, end })) => {
                Ok(self.dependencies.property_set(start, end))
            }
            found => Err(dangling(
                &ty.name,
                "properties",
                id,
                found.is_some(),
                "PropertySetDependency",
            )),
        }
    }
}

/// A framing error of a window of the objects buffer, its offset made one in the whole buffer.
fn shifted(e: FormatError, base: usize) -> FormatError {
    match e {
        FormatError::Truncated {
            buffer,
            type_name,
            offset,
            needed,
            available,
        } => FormatError::Truncated {
            buffer,
            type_name,
            offset: offset + base,
            needed,
            available,
        },
        FormatError::UnknownTypeIndex {
            buffer,
            index,
            offset,
            known,
        } => FormatError::UnknownTypeIndex {
            buffer,
            index,
            offset: offset + base,
            known,
        },
        other => other,
    }
}

fn make_scope(
    deps: &Dependencies,
    entries: ScopeEntries,
    filter: &RowFilter,
    out: &mut EventBatchBuilder,
) -> FormatResult<Scope> {
    let (name, filename, target, line) = (
        deps.str(entries.name),
        deps.str(entries.file),
        deps.str(entries.target),
        entries.line,
    );
    let cols = out.columns();
    let mut intern = |wanted: Column, s: &str| -> FormatResult<i32> {
        if cols.contains(wanted) {
            out.intern(s).map_err(arrow_err)
        } else {
            Ok(0)
        }
    };
    let keys = ScopeKeys {
        name: intern(Column::Name, name)?,
        filename: intern(Column::Filename, filename)?,
        target: intern(Column::Target, target)?,
        line,
        hash: if cols.contains(Column::Hash) {
            scope_hash(name, filename, target, line)
        } else {
            0
        },
    };
    Ok(Scope {
        keys,
        keep: filter.keeps_scope(name, target),
    })
}
