//! The columns of `thread_spans` and `view_instance('thread_spans', …)`, and the builder of
//! their batches.

use super::call_tree::{Node, Place, RowSink};
use crate::format::RowFilter;
use crate::properties::JsonbSets;
use crate::time_bounds::TimeBounds;
use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Int32Array, Int64Builder, RecordBatch,
    StringDictionaryBuilder, TimestampNanosecondBuilder, UInt32Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit};
use datafusion::common::Result;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

/// Which table the rows are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `view_instance('thread_spans', stream_id)`: micromegas 0.33's twelve columns, where a span
    /// cut by the blocks read begins or ends at their edge, as micromegas's do.
    View,
    /// `thread_spans(process_id)`: the twelve, then `stream_id`, `thread_name` and `finished`; an
    /// unknown `begin` or `end` is NULL, as in `async_spans`.
    Process,
    /// The thread rows of micromegas's `process_spans(process_id, …)`: `stream_id`, then
    /// `thread_name` (the root's name, `name-id`), then the twelve of [`Flavor::View`].
    ProcessSpans,
    /// The thread rows of `process_spans(process_id, 'both')`: those of [`Flavor::ProcessSpans`],
    /// with `begin`, `end`, `duration` and `properties` nullable in the schema as the async
    /// rows' are (the thread rows hold no NULL there), so that the union of the two needs no
    /// casts: DataFusion's physical codec loses the nullability a cast adds, and a decoded union
    /// would stack a new cast at every trip.
    ProcessSpansBesideAsync,
}

impl Flavor {
    /// For each column of the flavor's schema, the index of the column built (in [`COLUMNS`]
    /// order, then the display name).
    pub(crate) fn sources(self) -> &'static [usize] {
        const VIEW: [usize; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
        const PROCESS: [usize; 15] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14];
        const PROCESS_SPANS: [usize; 14] = [12, DISPLAY_NAME, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
        match self {
            Flavor::View => &VIEW,
            Flavor::Process => &PROCESS,
            Flavor::ProcessSpans | Flavor::ProcessSpansBesideAsync => &PROCESS_SPANS,
        }
    }

    /// Whether a span cut by the blocks read begins or ends at their edge (micromegas's values)
    /// rather than NULL.
    fn clips(self) -> bool {
        self != Flavor::Process
    }
}

/// Index of the display name (`thread-name`-`thread-id`) among the columns built.
const DISPLAY_NAME: usize = 15;

/// Column names, in schema order: micromegas's twelve then ours.
pub const COLUMNS: [&str; 15] = [
    "id",
    "parent",
    "depth",
    "hash",
    "begin",
    "end",
    "duration",
    "name",
    "target",
    "filename",
    "line",
    "properties",
    "stream_id",
    "thread_name",
    "finished",
];

fn schema(flavor: Flavor) -> SchemaRef {
    let dict = |t: DataType| DataType::Dictionary(Box::new(DataType::Int32), Box::new(t));
    let time = DataType::Timestamp(TimeUnit::Nanosecond, Some("+00:00".into()));
    let beside_async = flavor == Flavor::ProcessSpansBesideAsync;
    let nullable = !flavor.clips() || beside_async;
    let built = [
        (DataType::Int64, false),
        (DataType::Int64, false),
        (DataType::UInt32, false),
        (DataType::UInt32, false),
        (time.clone(), nullable),
        (time, nullable),
        (DataType::Int64, nullable),
        (dict(DataType::Utf8), false),
        (dict(DataType::Utf8), false),
        (dict(DataType::Utf8), false),
        (DataType::UInt32, false),
        (dict(DataType::Binary), beside_async),
        (dict(DataType::Utf8), false),
        (dict(DataType::Utf8), true),
        (DataType::Boolean, true),
        (dict(DataType::Utf8), false),
    ];
    let name = |i: usize| match i {
        DISPLAY_NAME => "thread_name",
        i => COLUMNS[i],
    };
    Arc::new(Schema::new(
        flavor
            .sources()
            .iter()
            .map(|&i| Field::new(name(i), built[i].0.clone(), built[i].1))
            .collect::<Vec<_>>(),
    ))
}

static VIEW: LazyLock<SchemaRef> = LazyLock::new(|| schema(Flavor::View));
static PROCESS: LazyLock<SchemaRef> = LazyLock::new(|| schema(Flavor::Process));
static PROCESS_SPANS: LazyLock<SchemaRef> = LazyLock::new(|| schema(Flavor::ProcessSpans));
static BESIDE_ASYNC: LazyLock<SchemaRef> =
    LazyLock::new(|| schema(Flavor::ProcessSpansBesideAsync));

/// The schema of a flavor.
pub fn thread_spans_schema(flavor: Flavor) -> SchemaRef {
    match flavor {
        Flavor::View => VIEW.clone(),
        Flavor::Process => PROCESS.clone(),
        Flavor::ProcessSpans => PROCESS_SPANS.clone(),
        Flavor::ProcessSpansBesideAsync => BESIDE_ASYNC.clone(),
    }
}

/// A scope's strings, kept once per stream.
#[derive(Debug, Clone)]
pub(crate) struct ScopeStrings {
    pub name: Box<str>,
    pub target: Box<str>,
    pub filename: Box<str>,
    pub line: u32,
}

/// What the rows of one chain share.
#[derive(Debug)]
pub(crate) struct Chain<'a> {
    pub scopes: &'a HashMap<u32, ScopeStrings>,
    pub stream_id: &'a str,
    pub thread_name: Option<&'a str>,
    /// The root row's name (micromegas's: `thread-name`-`thread-id`).
    pub root_name: &'a str,
    /// The chain's time range: the first block's begin, the last block's end.
    pub begin: i64,
    pub end: i64,
    /// Whether the chain's last block is the stream's last: scopes open at its end never ended
    /// in the recording (`finished` false) rather than being cut by the range (NULL).
    pub reaches_stream_end: bool,
    /// The range the spans must overlap (inclusive ns; `thread_spans(pid, begin, end)`): the
    /// blocks at its edges hold scopes entirely outside it, which are left out.
    pub overlap: TimeBounds,
}

/// The rows of a partition, built column by column.
pub(crate) struct SpanRows {
    flavor: Flavor,
    /// Rows kept: those the filters pushed on `name`, `target` and `depth` pass.
    filter: RowFilter,
    /// Rows the filter left out since [`take_filtered`](Self::take_filtered).
    filtered: usize,
    ids: Int64Builder,
    parents: Int64Builder,
    depths: UInt32Builder,
    hashes: UInt32Builder,
    begins: TimestampNanosecondBuilder,
    ends: TimestampNanosecondBuilder,
    durations: Int64Builder,
    names: StringDictionaryBuilder<Int32Type>,
    targets: StringDictionaryBuilder<Int32Type>,
    filenames: StringDictionaryBuilder<Int32Type>,
    lines: UInt32Builder,
    property_keys: Vec<i32>,
    /// Key 0 is the empty set.
    property_sets: JsonbSets,
    stream_ids: StringDictionaryBuilder<Int32Type>,
    thread_names: StringDictionaryBuilder<Int32Type>,
    finished: BooleanBuilder,
    display_names: StringDictionaryBuilder<Int32Type>,
}

impl SpanRows {
    pub fn new(flavor: Flavor, filter: RowFilter) -> Self {
        let mut property_sets = JsonbSets::default();
        property_sets.intern([]);
        Self {
            flavor,
            filter,
            filtered: 0,
            ids: Int64Builder::new(),
            parents: Int64Builder::new(),
            depths: UInt32Builder::new(),
            hashes: UInt32Builder::new(),
            begins: TimestampNanosecondBuilder::new(),
            ends: TimestampNanosecondBuilder::new(),
            durations: Int64Builder::new(),
            names: StringDictionaryBuilder::new(),
            targets: StringDictionaryBuilder::new(),
            filenames: StringDictionaryBuilder::new(),
            lines: UInt32Builder::new(),
            property_keys: Vec::new(),
            property_sets,
            stream_ids: StringDictionaryBuilder::new(),
            thread_names: StringDictionaryBuilder::new(),
            finished: BooleanBuilder::new(),
            display_names: StringDictionaryBuilder::new(),
        }
    }

    /// Rows the filter left out since the last call.
    pub fn take_filtered(&mut self) -> usize {
        std::mem::take(&mut self.filtered)
    }

    /// Rows appended since the last batch.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// The sink that appends the rows of one chain.
    pub fn chain<'a>(&'a mut self, chain: &'a Chain<'a>) -> ChainRows<'a> {
        ChainRows { rows: self, chain }
    }

    /// The rows appended so far as a batch of `schema` (the flavor's, projected by
    /// `projection`: indices of the columns built, see [`Flavor::sources`]), the builders
    /// emptied.
    pub fn finish(&mut self, projection: &[usize], schema: &SchemaRef) -> Result<RecordBatch> {
        let keys = Int32Array::from(std::mem::take(&mut self.property_keys));
        let properties = self.property_sets.column(keys)?;
        let utc = |b: &mut TimestampNanosecondBuilder| b.finish().with_timezone("+00:00");
        let all: [ArrayRef; 16] = [
            Arc::new(self.ids.finish()),
            Arc::new(self.parents.finish()),
            Arc::new(self.depths.finish()),
            Arc::new(self.hashes.finish()),
            Arc::new(utc(&mut self.begins)),
            Arc::new(utc(&mut self.ends)),
            Arc::new(self.durations.finish()),
            Arc::new(self.names.finish()),
            Arc::new(self.targets.finish()),
            Arc::new(self.filenames.finish()),
            Arc::new(self.lines.finish()),
            Arc::new(properties),
            Arc::new(self.stream_ids.finish()),
            Arc::new(self.thread_names.finish()),
            Arc::new(self.finished.finish()),
            Arc::new(self.display_names.finish()),
        ];
        let columns = projection.iter().map(|&i| all[i].clone()).collect();
        Ok(RecordBatch::try_new_with_options(
            schema.clone(),
            columns,
            &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(all[0].len())),
        )?)
    }

    /// Whether a row passes the filter on its name, target and depth (a root row is named after
    /// its thread and has no target).
    fn keeps(&self, node: &Node, place: Place, chain: &Chain<'_>) -> bool {
        let f = &self.filter;
        if f.depth
            .is_some_and(|(lo, hi)| place.depth < lo || place.depth > hi)
        {
            return false;
        }
        if !f.needs_strings() {
            return true;
        }
        if node.id.is_none() {
            return f.keeps_scope(chain.root_name, "");
        }
        chain
            .scopes
            .get(&node.hash)
            .is_none_or(|s| f.keeps_scope(&s.name, &s.target))
    }

    fn intern_properties(&mut self, node: &Node) -> i32 {
        if node.properties.is_empty() {
            return 0;
        }
        self.property_sets
            .intern(node.properties.iter().map(|(k, v)| (&**k, &**v)))
    }
}

/// Appends the rows of one chain.
pub(crate) struct ChainRows<'a> {
    rows: &'a mut SpanRows,
    chain: &'a Chain<'a>,
}

impl RowSink for ChainRows<'_> {
    fn row(&mut self, node: &Node, place: Place) -> Result<()> {
        let chain = self.chain;
        let r = &mut *self.rows;
        let root = node.id.is_none();
        let outside = node
            .end
            .is_some_and(|e| chain.overlap.begin.is_some_and(|lo| e < lo))
            || node
                .begin
                .is_some_and(|b| chain.overlap.end.is_some_and(|hi| b > hi));
        if !root && outside {
            return Ok(());
        }
        if !r.keeps(node, place, chain) {
            r.filtered += 1;
            return Ok(());
        }
        let (begin, end) = if root {
            (Some(chain.begin), Some(chain.end))
        } else {
            (node.begin, node.end)
        };
        let (begin, end) = match r.flavor.clips() {
            true => (
                Some(begin.unwrap_or(chain.begin)),
                Some(end.unwrap_or(chain.end)),
            ),
            false => (begin, end),
        };
        r.ids.append_value(node.id.unwrap_or(-1));
        r.parents.append_value(place.parent);
        r.depths.append_value(place.depth);
        r.hashes.append_value(node.hash);
        r.begins.append_option(begin);
        r.ends.append_option(end);
        r.durations
            .append_option(begin.zip(end).map(|(b, e)| e - b));
        if root {
            r.names.append(chain.root_name)?;
            r.targets.append("")?;
            r.filenames.append("")?;
            r.lines.append_value(0);
        } else {
            match chain.scopes.get(&node.hash) {
                Some(s) => {
                    r.names.append(&*s.name)?;
                    r.targets.append(&*s.target)?;
                    r.filenames.append(&*s.filename)?;
                    r.lines.append_value(s.line);
                }
                None => {
                    return datafusion::common::internal_err!(
                        "thread span {} has no scope for hash {}",
                        node.id.unwrap_or(-1),
                        node.hash
                    );
                }
            }
        }
        let key = r.intern_properties(node);
        r.property_keys.push(key);
        r.stream_ids.append(chain.stream_id)?;
        r.thread_names.append_option(chain.thread_name);
        r.display_names.append(chain.root_name)?;
        r.finished.append_option(match (root, node.end) {
            (true, _) => None,
            (false, Some(_)) => Some(true),
            (false, None) if chain.reaches_stream_end => Some(false),
            (false, None) => None,
        });
        Ok(())
    }
}
