//! The async-event decoder: walks a block's objects buffer and appends every async span event
//! that passes the [`RowFilter`] to an [`EventBatchBuilder`].
//!
//! Records that are not async events (thread span events, anything else) are skipped by their
//! size alone. Fields are read at the offsets of the stream's [`StreamLayout`]. Strings are
//! resolved once per span description per block, and only when a string column, the hash, the
//! properties or a name/target filter needs them; otherwise the dependencies buffer is not even
//! decompressed.

use super::builder::EventBatchBuilder;
use super::dependencies::{Dependencies, Entry, IdMap, dangling, read_u32, read_u64};
use super::error::{FormatError, FormatResult};
use super::hash::scope_hash;
use super::layout::{AsyncEventLayout, EventType, ScopeSource, Slot, StreamLayout};
use super::lz4::{decompress_frame, decompress_frame_into};
use super::payload::{BlockPayload, PayloadView};
use super::schema::Column;
use super::ticks::TickConverter;
use datafusion::arrow::error::ArrowError;

/// Which rows to keep. Checked on the raw fields, before any column work. Bounds are inclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowFilter {
    /// Only `begin` or only `end` rows.
    pub event_type: Option<EventType>,
    /// Inclusive depth range.
    pub depth: Option<(u32, u32)>,
    /// Inclusive time range, ns since the epoch.
    pub time: Option<(i64, i64)>,
    /// Allowed span ids, sorted.
    pub span_ids: Option<Vec<i64>>,
    /// Allowed parent span ids, sorted.
    pub parent_span_ids: Option<Vec<i64>>,
    /// Allowed names.
    pub names: Option<Vec<String>>,
    /// Allowed targets.
    pub targets: Option<Vec<String>>,
}

impl RowFilter {
    /// A filter that keeps every row.
    pub fn all() -> Self {
        Self::default()
    }

    /// Whether the filter needs span names or targets.
    pub fn needs_strings(&self) -> bool {
        self.names.is_some() || self.targets.is_some()
    }

    /// Whether no row can pass (an empty set or an empty range).
    pub fn matches_nothing(&self) -> bool {
        let empty_range = |r: Option<(i64, i64)>| r.is_some_and(|(lo, hi)| lo > hi);
        empty_range(self.time)
            || self.depth.is_some_and(|(lo, hi)| lo > hi)
            || self.span_ids.as_ref().is_some_and(Vec::is_empty)
            || self.parent_span_ids.as_ref().is_some_and(Vec::is_empty)
            || self.names.as_ref().is_some_and(Vec::is_empty)
            || self.targets.as_ref().is_some_and(Vec::is_empty)
    }

    fn keeps_scope(&self, name: &str, target: &str) -> bool {
        self.names
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == name))
            && self
                .targets
                .as_ref()
                .is_none_or(|targets| targets.iter().any(|t| t == target))
    }
}

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
        let mut objects = Vec::with_capacity(payload.objects.len() * 4);
        decompress_frame(&payload.objects, &mut objects, "objects")?;
        let dependencies = if with_dependencies {
            let mut deps = Vec::with_capacity(payload.dependencies.len() * 4);
            decompress_frame(&payload.dependencies, &mut deps, "dependencies")?;
            Some(deps)
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
        Self::from_payload(&BlockPayload::from_cbor(blob)?, with_dependencies)
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

/// A resolved span scope, cached per block.
#[derive(Debug, Clone, Copy)]
struct Scope {
    name: i32,
    filename: i32,
    target: i32,
    line: u32,
    hash: u32,
    keep: bool,
}

/// Decodes blocks into an [`EventBatchBuilder`]. Keeps its tables between blocks to reuse their
/// allocations; one decoder serves blocks of any stream.
#[derive(Debug, Default)]
pub struct AsyncEventDecoder {
    dependencies: Dependencies,
    descriptions: IdMap<u64, Scope>,
    named: IdMap<(u64, u64), Scope>,
    /// Direct-mapped cache in front of `descriptions` (most events name a few descriptions).
    recent: [Option<(u64, Scope)>; RECENT],
    /// Decompression buffers reused from block to block.
    dependencies_buf: Vec<u8>,
    objects_buf: Vec<u8>,
}

const OBJECTS: &str = "objects";
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
        let payload = PayloadView::parse(blob)?;
        let mut objects = std::mem::take(&mut self.objects_buf);
        let mut deps = std::mem::take(&mut self.dependencies_buf);
        let result = (|| {
            let n = decompress_frame_into(&payload.objects, &mut objects, "objects")?;
            let deps_len = if Self::needs_dependencies(out, filter) {
                Some(decompress_frame_into(
                    &payload.dependencies,
                    &mut deps,
                    "dependencies",
                )?)
            } else {
                None
            };
            let deps = deps_len.map(|len| &deps[..len]);
            self.decode_buffers(layout, deps, &objects[..n], ids, clock, filter, out)
        })();
        self.objects_buf = objects;
        self.dependencies_buf = deps;
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
        let deps = block.dependencies.as_deref();
        self.decode_buffers(layout, deps, &block.objects, ids, clock, filter, out)
    }

    #[allow(clippy::too_many_arguments)]
    fn decode_buffers(
        &mut self,
        layout: &StreamLayout,
        deps: Option<&[u8]>,
        objects: &[u8],
        ids: BlockIds<'_>,
        clock: &TickConverter,
        filter: &RowFilter,
        out: &mut EventBatchBuilder,
    ) -> FormatResult<DecodeSummary> {
        let before = out.len();
        let result = self.decode_inner(layout, deps, objects, ids, clock, filter, out);
        if result.is_err() {
            out.truncate(before);
        }
        result
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
    ) -> FormatResult<DecodeSummary> {
        let mut summary = DecodeSummary {
            time_ordered: true,
            ..DecodeSummary::default()
        };
        let with_scope = Self::needs_dependencies(out, filter);
        if with_scope {
            let deps = deps.ok_or_else(|| {
                FormatError::Metadata("the dependencies buffer was not decompressed".into())
            })?;
            self.dependencies.read(layout, deps)?;
            self.descriptions.clear();
            self.named.clear();
        }
        out.start_block(ids.stream_id, ids.block_id)
            .map_err(arrow_err)?;
        let cols = out.columns();
        let want_time = cols.contains(Column::Time);
        let want_event_type = cols.contains(Column::EventType);
        let want_span = cols.contains(Column::SpanId);
        let want_parent = cols.contains(Column::ParentSpanId);
        let want_depth = cols.contains(Column::Depth);
        let want_hash = cols.contains(Column::Hash);
        let want_name = cols.contains(Column::Name);
        let want_filename = cols.contains(Column::Filename);
        let want_target = cols.contains(Column::Target);
        let want_line = cols.contains(Column::Line);
        let want_properties = cols.contains(Column::Properties);
        let need_time = want_time || filter.time.is_some();
        self.recent.fill(None);

        out.reserve(buf.len() / 48);
        let type_name = |index: u8| -> &str {
            layout
                .objects
                .get(usize::from(index))
                .map_or("?", |t| t.name.as_str())
        };
        let mut pos = 0usize;
        let mut last_time = i64::MIN;
        while pos < buf.len() {
            let record_start = pos;
            let index = buf[pos];
            let Some(&slot) = layout.slots.get(usize::from(index)) else {
                return Err(FormatError::UnknownTypeIndex {
                    buffer: OBJECTS,
                    index,
                    offset: pos,
                    known: layout.objects.len(),
                });
            };
            pos += 1;
            let size = if slot.dynamic {
                match read_u32(buf, pos) {
                    Some(n) => {
                        pos += 4;
                        n as usize
                    }
                    None => {
                        return Err(truncated(
                            type_name(index),
                            record_start,
                            4,
                            buf.len() - pos,
                        ));
                    }
                }
            } else {
                slot.size as usize
            };
            let Some(record) = buf.get(pos..pos.saturating_add(size)) else {
                return Err(truncated(
                    type_name(index),
                    record_start,
                    size,
                    buf.len() - pos,
                ));
            };
            pos += size;
            summary.objects += 1;
            if slot.async_index == Slot::SKIP {
                continue;
            }
            let Some(l) = layout.async_layouts.get(usize::from(slot.async_index)) else {
                continue;
            };
            summary.events += 1;

            if filter.event_type.is_some_and(|t| t != l.event_type) {
                continue;
            }
            let depth = read_u32(record, l.depth).unwrap_or(0);
            if filter
                .depth
                .is_some_and(|(lo, hi)| depth < lo || depth > hi)
            {
                continue;
            }
            let span_id = read_u64(record, l.span_id) as i64;
            if filter
                .span_ids
                .as_ref()
                .is_some_and(|s| s.binary_search(&span_id).is_err())
            {
                continue;
            }
            let parent_span_id = read_u64(record, l.parent_span_id) as i64;
            if filter
                .parent_span_ids
                .as_ref()
                .is_some_and(|s| s.binary_search(&parent_span_id).is_err())
            {
                continue;
            }
            let time = if need_time {
                clock.ticks_to_ns(read_u64(record, l.time) as i64)
            } else {
                0
            };
            if filter.time.is_some_and(|(lo, hi)| time < lo || time > hi) {
                continue;
            }
            let scope = if with_scope {
                let scope = self.scope(type_name(index), l, record, filter, out)?;
                if !scope.keep {
                    continue;
                }
                Some(scope)
            } else {
                None
            };

            // The row is kept: fill the requested columns.
            if want_properties {
                self.push_properties(type_name(index), l, record, out)?;
            }
            out.push_ids();
            if want_time {
                out.time.push(time);
            }
            if want_event_type {
                out.event_type.push(l.event_type as i32);
            }
            if want_span {
                out.span_id.push(span_id);
            }
            if want_parent {
                out.parent_span_id.push(parent_span_id);
            }
            if want_depth {
                out.depth.push(depth);
            }
            if let Some(s) = scope {
                if want_hash {
                    out.hash.push(s.hash);
                }
                if want_name {
                    out.name.push(s.name);
                }
                if want_filename {
                    out.filename.push(s.filename);
                }
                if want_target {
                    out.target.push(s.target);
                }
                if want_line {
                    out.line.push(s.line);
                }
            }
            out.len += 1;

            summary.rows += 1;
            if time < last_time {
                summary.time_ordered = false;
            }
            last_time = time;
            summary.min_time = Some(summary.min_time.map_or(time, |m| m.min(time)));
            summary.max_time = Some(summary.max_time.map_or(time, |m| m.max(time)));
        }
        Ok(summary)
    }

    /// Resolves (and caches) the name, file, target, line and hash of an event's span.
    fn scope(
        &mut self,
        type_name: &str,
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
                let (name, target, file, line) = match self.dependencies.lookup(id) {
                    Some((
                        _,
                        Entry::Description {
                            name,
                            target,
                            file,
                            line,
                        },
                    )) => (name, target, file, line),
                    found => {
                        return Err(dangling(
                            type_name,
                            "span_desc",
                            id,
                            found.is_some(),
                            "SpanRecord",
                        ));
                    }
                };
                let deps = &self.dependencies;
                let scope = make_scope(
                    deps.str(name),
                    deps.str(file),
                    deps.str(target),
                    line,
                    filter,
                    out,
                )?;
                self.descriptions.insert(id, scope);
                Ok(scope)
            }
            ScopeSource::Named { location, name } => {
                let loc_id = read_u64(record, location);
                let name_id = read_u64(record, name);
                if let Some(s) = self.named.get(&(loc_id, name_id)) {
                    return Ok(*s);
                }
                let (target, file, line) = match self.dependencies.lookup(loc_id) {
                    Some((_, Entry::Location { target, file, line })) => (target, file, line),
                    found => {
                        return Err(dangling(
                            type_name,
                            "span_location",
                            loc_id,
                            found.is_some(),
                            "SpanLocationRecord",
                        ));
                    }
                };
                let name_entry = self.dependencies.string_ref(name_id, type_name, "name")?;
                let deps = &self.dependencies;
                let scope = make_scope(
                    deps.str(name_entry),
                    deps.str(file),
                    deps.str(target),
                    line,
                    filter,
                    out,
                )?;
                self.named.insert((loc_id, name_id), scope);
                Ok(scope)
            }
        }
    }

    fn push_properties(
        &self,
        type_name: &str,
        l: &AsyncEventLayout,
        record: &[u8],
        out: &mut EventBatchBuilder,
    ) -> FormatResult<()> {
        let Some(offset) = l.properties else {
            return out.push_properties(std::iter::empty()).map_err(arrow_err);
        };
        let id = read_u64(record, offset);
        let (start, end) = match self.dependencies.lookup(id) {
            Some((_, Entry::PropertySet { start, end })) => (start, end),
            found => {
                return Err(dangling(
                    type_name,
                    "properties",
                    id,
                    found.is_some(),
                    "PropertySetDependency",
                ));
            }
        };
        let deps = &self.dependencies;
        out.push_properties(
            deps.property_set(start, end)
                .iter()
                .map(|&(k, v)| (deps.str(k), deps.str(v))),
        )
        .map_err(arrow_err)
    }
}

fn make_scope(
    name: &str,
    filename: &str,
    target: &str,
    line: u32,
    filter: &RowFilter,
    out: &mut EventBatchBuilder,
) -> FormatResult<Scope> {
    let cols = out.columns();
    let mut intern = |wanted: Column, s: &str| -> FormatResult<i32> {
        if cols.contains(wanted) {
            out.strings.intern(s).map_err(arrow_err)
        } else {
            Ok(0)
        }
    };
    Ok(Scope {
        name: intern(Column::Name, name)?,
        filename: intern(Column::Filename, filename)?,
        target: intern(Column::Target, target)?,
        line,
        hash: if cols.contains(Column::Hash) {
            scope_hash(name, filename, target, line)
        } else {
            0
        },
        keep: filter.keeps_scope(name, target),
    })
}

fn truncated(type_name: &str, offset: usize, needed: usize, available: usize) -> FormatError {
    FormatError::Truncated {
        buffer: OBJECTS,
        type_name: type_name.to_owned(),
        offset,
        needed,
        available,
    }
}
