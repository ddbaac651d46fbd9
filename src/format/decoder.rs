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

use super::builder::{EventBatchBuilder, EventRow, ScopeKeys};
use super::dependencies::{Dependencies, Entry, EntryIndex, IdMap, dangling, read_u32, read_u64};
use super::error::{FormatError, FormatResult};
use super::hash::scope_hash;
use super::layout::{
    AsyncEventLayout, EventType, ObjectKind, ObjectType, ScopeSource, StreamLayout,
};
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

impl DecodeSummary {
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

/// A resolved span scope, cached per block.
#[derive(Debug, Clone, Copy)]
struct Scope {
    keys: ScopeKeys,
    /// Whether the scope passes the filter's names and targets.
    keep: bool,
}

/// The fixed fields of an async event record, read at its layout's offsets.
#[derive(Debug, Clone, Copy)]
struct RawEvent {
    event_type: EventType,
    depth: u32,
    span_id: i64,
    parent_span_id: i64,
    ticks: i64,
}

impl RawEvent {
    #[inline(always)]
    fn read(l: &AsyncEventLayout, record: &[u8]) -> Self {
        Self {
            event_type: l.event_type,
            depth: read_u32(record, l.depth).unwrap_or(0),
            span_id: read_u64(record, l.span_id) as i64,
            parent_span_id: read_u64(record, l.parent_span_id) as i64,
            ticks: read_u64(record, l.time) as i64,
        }
    }
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
        let need_time = cols.contains(Column::Time) || filter.time.is_some();
        let want_properties = cols.contains(Column::Properties);
        self.recent.fill(None);

        out.reserve(buf.len() / 48);
        for record in layout.object_records(buf) {
            // Framing.
            let record = record?;
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
                self.property_set(record.ty, l, record.bytes)?
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
        Ok(summary)
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
                            &ty.name,
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
                            &ty.name,
                            "span_location",
                            loc_id,
                            found.is_some(),
                            "SpanLocationRecord",
                        ));
                    }
                };
                let name_entry = self.dependencies.string_ref(name_id, &ty.name, "name")?;
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

    /// The (name, value) entries of a tagged end's property set; none for other events.
    fn property_set(
        &self,
        ty: &ObjectType,
        l: &AsyncEventLayout,
        record: &[u8],
    ) -> FormatResult<&[(EntryIndex, EntryIndex)]> {
        let Some(offset) = l.properties else {
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

/// Filtering: the row of an async event if it passes `filter` on its own fields (names and
/// targets are judged once per scope). The time is converted from ticks only when the column
/// or the filter needs it, and after the cheaper tests.
#[inline(always)]
fn admit(
    filter: &RowFilter,
    raw: RawEvent,
    clock: &TickConverter,
    need_time: bool,
) -> Option<EventRow> {
    if filter.event_type.is_some_and(|t| t != raw.event_type)
        || filter
            .depth
            .is_some_and(|(lo, hi)| raw.depth < lo || raw.depth > hi)
        || filter
            .span_ids
            .as_ref()
            .is_some_and(|s| s.binary_search(&raw.span_id).is_err())
        || filter
            .parent_span_ids
            .as_ref()
            .is_some_and(|s| s.binary_search(&raw.parent_span_id).is_err())
    {
        return None;
    }
    let time = if need_time {
        clock.ticks_to_ns(raw.ticks)
    } else {
        0
    };
    if filter.time.is_some_and(|(lo, hi)| time < lo || time > hi) {
        return None;
    }
    Some(EventRow {
        time,
        event_type: raw.event_type,
        span_id: raw.span_id,
        parent_span_id: raw.parent_span_id,
        depth: raw.depth,
        scope: ScopeKeys::default(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admit_judges_the_raw_fields_and_converts_time_only_when_needed() {
        let clock = TickConverter::new(0, 1_000, 1_000_000_000, None).unwrap();
        let raw = RawEvent {
            event_type: EventType::End,
            depth: 3,
            span_id: 7,
            parent_span_id: 5,
            ticks: 2_000,
        };
        let all = RowFilter::all();
        let row = admit(&all, raw, &clock, false).unwrap();
        assert_eq!((row.time, row.span_id, row.depth), (0, 7, 3));
        assert_eq!(admit(&all, raw, &clock, true).unwrap().time, 1_000 + 2_000);

        let keeps = |filter: RowFilter| admit(&filter, raw, &clock, true).is_some();
        assert!(keeps(RowFilter {
            event_type: Some(EventType::End),
            depth: Some((3, 3)),
            time: Some((3_000, 3_000)),
            span_ids: Some(vec![1, 7]),
            parent_span_ids: Some(vec![5]),
            ..RowFilter::all()
        }));
        assert!(!keeps(RowFilter {
            event_type: Some(EventType::Begin),
            ..RowFilter::all()
        }));
        assert!(!keeps(RowFilter {
            depth: Some((4, 9)),
            ..RowFilter::all()
        }));
        assert!(!keeps(RowFilter {
            span_ids: Some(vec![6, 8]),
            ..RowFilter::all()
        }));
        assert!(!keeps(RowFilter {
            parent_span_ids: Some(vec![]),
            ..RowFilter::all()
        }));
        assert!(!keeps(RowFilter {
            time: Some((3_001, i64::MAX)),
            ..RowFilter::all()
        }));
    }
}
