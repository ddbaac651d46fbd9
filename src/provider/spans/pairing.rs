//! [`AsyncSpansExec`]: pairs the begin and end events of async spans as they stream out of an
//! `async_events` scan (its thread streams merged batch by batch, oldest first) into one row per
//! span.
//!
//! A begin opens a span; its end closes it and the span is emitted at once. An end read before
//! its begin (the batch of the begin's stream starts later) waits for it. What stays in memory
//! is the set of spans open at the current time (and the ends waiting for a begin within a
//! batch's time, or lying before the events read); when the input is exhausted, the spans still
//! open are emitted unfinished and the ends never paired with an unknown begin. The answer does
//! not depend on the order the events come in; the module documentation of [`super`] gives the
//! range rules.

use super::{SpanColumn, async_spans_schema};
use crate::format::Column;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, DictionaryArray, Int32Array, Int64Array, MapArray,
    MapBuilder, MapFieldNames, PrimitiveBuilder, RecordBatch, RecordBatchOptions, StringArray,
    StringBuilder, UInt32Array,
};
use datafusion::arrow::buffer::ScalarBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, DurationNanosecondType, Field, Int32Type, Int64Type, SchemaRef,
    TimestampNanosecondType, UInt32Type,
};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::{
    Distribution, EquivalenceProperties, LexOrdering, OrderingRequirements,
};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, Gauge, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// How the events read relate to the spans asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct PairingRange {
    /// Only spans overlapping this inclusive range are emitted (ns; `None`: open side).
    pub overlap: (Option<i64>, Option<i64>),
    /// Whether the events read reach the end of the recording: a span with no end then never
    /// finished (`false`); otherwise its end may lie beyond what was read (`NULL`).
    pub reads_to_end: bool,
}

/// Pairs begin and end events into spans.
#[derive(Debug, Clone)]
pub struct AsyncSpansExec {
    input: Arc<dyn ExecutionPlan>,
    /// The order of each partition of the events scan (by `time`), required of the input: then
    /// the batch merge reads ends after their begins, but for a chunk's worth, and memory holds
    /// only the spans open at a time.
    input_order: Option<LexOrdering>,
    range: PairingRange,
    /// Output columns, in output order.
    projection: Vec<SpanColumn>,
    schema: SchemaRef,
    fetch: Option<usize>,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl AsyncSpansExec {
    pub(crate) fn new(
        input: Arc<dyn ExecutionPlan>,
        input_order: Option<LexOrdering>,
        range: PairingRange,
        projection: Vec<SpanColumn>,
        fetch: Option<usize>,
    ) -> Self {
        let full = async_spans_schema();
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(
            projection
                .iter()
                .map(|&c| full.field(c as usize).clone())
                .collect::<Vec<_>>(),
        ));
        let props = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            input,
            input_order,
            range,
            projection,
            schema,
            fetch,
            props,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl AsyncSpansExec {
    /// What the plan says, for the codec: the range, the output columns, the limit and whether
    /// the input's time order is required.
    #[cfg_attr(not(feature = "codec"), allow(dead_code))]
    pub(crate) fn parts(&self) -> (PairingRange, &[SpanColumn], Option<usize>, bool) {
        (
            self.range,
            &self.projection,
            self.fetch,
            self.input_order.is_some(),
        )
    }
}

fn format_ns(ns: Option<i64>) -> String {
    ns.map_or("..".into(), |ns| {
        chrono::DateTime::from_timestamp_nanos(ns)
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    })
}

impl DisplayAs for AsyncSpansExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "AsyncSpansExec: pairing begin/end by span_id")?;
        if self.range.overlap != (None, None) {
            write!(
                f,
                ", overlapping=[{}, {}]",
                format_ns(self.range.overlap.0),
                format_ns(self.range.overlap.1)
            )?;
        }
        let missing_end = if self.range.reads_to_end {
            "never finished"
        } else {
            "unknown"
        };
        write!(f, ", no end=[{missing_end}]")?;
        if self.projection.len() < SpanColumn::ALL.len() {
            let names: Vec<&str> = self.projection.iter().map(|c| c.name()).collect();
            write!(f, ", projection=[{}]", names.join(", "))?;
        }
        if let Some(fetch) = self.fetch {
            write!(f, ", fetch={fetch}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for AsyncSpansExec {
    fn name(&self) -> &str {
        "AsyncSpansExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        // All partitions are read here, batch-merged (see [`BatchMerge`]).
        vec![Distribution::UnspecifiedDistribution]
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        vec![self.input_order.clone().map(OrderingRequirements::from)]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match <[_; 1]>::try_from(children) {
            Ok([input]) => Ok(Arc::new(Self::new(
                input,
                self.input_order.clone(),
                self.range,
                self.projection.clone(),
                self.fetch,
            ))),
            Err(_) => internal_err!("AsyncSpansExec has one child"),
        }
    }

    fn fetch(&self) -> Option<usize> {
        self.fetch
    }

    fn with_fetch(&self, limit: Option<usize>) -> Option<Arc<dyn ExecutionPlan>> {
        let mut plan = self.clone();
        plan.fetch = limit;
        Some(Arc::new(plan))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("AsyncSpansExec has one partition, asked for {partition}");
        }
        let inputs = (0..self.input.output_partitioning().partition_count())
            .map(|p| self.input.execute(p, context.clone()))
            .collect::<Result<Vec<_>>>()?;
        let input = BatchMerge::new(inputs, &self.input.schema())?;
        let metrics = PairingMetrics::new(&self.metrics);
        let pairer = Pairer::new(
            &self.input.schema(),
            self.schema.clone(),
            self.projection.clone(),
            self.range,
            self.fetch,
            context.session_config().batch_size(),
            metrics,
        )?;
        // (input, pairer, input exhausted or failed)
        let state = (input, pairer, false);
        let stream =
            futures::stream::unfold(state, |(mut input, mut pairer, mut done)| async move {
                loop {
                    if let Some(batch) = pairer.ready.pop_front() {
                        return Some((Ok(batch), (input, pairer, done)));
                    }
                    if done || pairer.limit_reached() {
                        return None;
                    }
                    let step = match input.next().await {
                        Some(Ok(chunk)) => chunk.iter().try_for_each(|b| pairer.push(b)),
                        Some(Err(e)) => Err(e),
                        None => {
                            done = true;
                            pairer.finish()
                        }
                    };
                    if let Err(e) = step {
                        return Some((Err(e), (input, pairer, true)));
                    }
                }
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}

/// Rows of a partition the batch merge hands over at a time. Fixed, not the session's batch
/// size, and cut at fixed row counts whatever batches the scan produced (their sizes depend on
/// timing), so that the order spans come out in depends on the events alone: a Perfetto trace
/// written twice is the same bytes.
const MERGE_ROWS: usize = 8192;

/// Reads every partition of the events scan (one per thread stream, each in time order) and
/// hands over their rows in chunks of [`MERGE_ROWS`], oldest first: of the chunks at the head of
/// each partition, the one whose first event is the earliest (the first partition on a tie).
///
/// Pairing is correct in any order (an end met before its begin waits for it); the order only
/// bounds what waits. Merging chunks rather than rows keeps that bound (a chunk's worth of time
/// per stream) without the cost of a row-by-row merge, which cost as much as the pairing
/// itself (`BENCHMARKS.md`).
struct BatchMerge {
    inputs: Vec<MergeInput>,
    time: usize,
}

/// A partition of the merge's input and its rows read but not handed over.
struct MergeInput {
    stream: SendableRecordBatchStream,
    buffered: VecDeque<RecordBatch>,
    rows: usize,
    exhausted: bool,
}

impl MergeInput {
    /// Reads until a whole chunk is buffered or the partition is exhausted.
    async fn fill(&mut self) -> Result<()> {
        while self.rows < MERGE_ROWS && !self.exhausted {
            match self.stream.next().await {
                Some(Ok(batch)) => {
                    if batch.num_rows() > 0 {
                        self.rows += batch.num_rows();
                        self.buffered.push_back(batch);
                    }
                }
                Some(Err(e)) => return Err(e),
                None => self.exhausted = true,
            }
        }
        Ok(())
    }

    /// The next chunk: the first [`MERGE_ROWS`] rows buffered, as slices of the batches.
    fn take_chunk(&mut self) -> Vec<RecordBatch> {
        let mut chunk = Vec::new();
        let mut wanted = MERGE_ROWS;
        while wanted > 0 {
            let Some(batch) = self.buffered.pop_front() else {
                break;
            };
            let n = batch.num_rows();
            if n > wanted {
                chunk.push(batch.slice(0, wanted));
                self.buffered.push_front(batch.slice(wanted, n - wanted));
                self.rows -= wanted;
                wanted = 0;
            } else {
                chunk.push(batch);
                self.rows -= n;
                wanted -= n;
            }
        }
        chunk
    }
}

impl BatchMerge {
    fn new(inputs: Vec<SendableRecordBatchStream>, schema: &SchemaRef) -> Result<Self> {
        let time = InputColumns::of(schema)?.time;
        Ok(Self {
            inputs: inputs
                .into_iter()
                .map(|stream| MergeInput {
                    stream,
                    buffered: VecDeque::new(),
                    rows: 0,
                    exhausted: false,
                })
                .collect(),
            time,
        })
    }

    fn first_time(&self, input: &MergeInput) -> Option<i64> {
        let batch = input.buffered.front()?;
        batch
            .column(self.time)
            .as_primitive::<TimestampNanosecondType>()
            .values()
            .first()
            .copied()
    }

    /// The next chunk (its rows in one or more batches); `None` once every partition is read.
    async fn next(&mut self) -> Option<Result<Vec<RecordBatch>>> {
        // Each partition decodes in a task of its own: filling the heads one after the other
        // waits for the slowest, while the others keep decoding ahead.
        for input in &mut self.inputs {
            if let Err(e) = input.fill().await {
                return Some(Err(e));
            }
        }
        let (i, _) = self
            .inputs
            .iter()
            .enumerate()
            .filter_map(|(i, input)| self.first_time(input).map(|t| (i, t)))
            .min_by_key(|&(i, t)| (t, i))?;
        self.inputs.get_mut(i).map(|input| Ok(input.take_chunk()))
    }
}

#[derive(Debug, Clone)]
struct PairingMetrics {
    events_in: Count,
    spans_out: Count,
    spans_unfinished: Count,
    spans_begin_unknown: Count,
    spans_open_peak: Gauge,
}

impl PairingMetrics {
    fn new(set: &ExecutionPlanMetricsSet) -> Self {
        let counter = |name: &'static str| MetricBuilder::new(set).counter(name, 0);
        Self {
            events_in: counter("events_in"),
            spans_out: counter("spans_out"),
            spans_unfinished: counter("spans_unfinished"),
            spans_begin_unknown: counter("spans_begin_unknown"),
            spans_open_peak: MetricBuilder::new(set).gauge("spans_open_peak", 0),
        }
    }
}

/// Interned strings shared by every string column of the output: each output dictionary column
/// indexes the same values array, rebuilt only when new strings appear.
#[derive(Debug, Default)]
struct Strings {
    ids: HashMap<Box<str>, i32>,
    values: Vec<Box<str>>,
    array: Option<ArrayRef>,
}

impl Strings {
    fn intern(&mut self, s: &str) -> Result<i32> {
        if let Some(&id) = self.ids.get(s) {
            return Ok(id);
        }
        let id = i32::try_from(self.values.len())
            .map_err(|_| DataFusionError::ResourcesExhausted("too many distinct strings".into()))?;
        self.values.push(s.into());
        self.ids.insert(s.into(), id);
        self.array = None;
        Ok(id)
    }

    fn array(&mut self) -> ArrayRef {
        self.array
            .get_or_insert_with(|| {
                Arc::new(StringArray::from_iter_values(
                    self.values.iter().map(|s| s.as_ref()),
                ))
            })
            .clone()
    }

    /// A batch's string column as dictionary keys and, for each of its values, the global id:
    /// strings are interned once per value of the batch's dictionary, not once per row.
    fn column(&mut self, array: &ArrayRef) -> Result<StringColumn> {
        let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let array = if array.data_type() == &dictionary {
            array.clone()
        } else {
            cast(array, &dictionary)?
        };
        let dict = array.as_dictionary::<Int32Type>();
        let values = dict.values().as_string::<i32>();
        let mut ids = Vec::with_capacity(values.len());
        for i in 0..values.len() {
            ids.push(self.intern(values.value(i))?);
        }
        let keys = dict.keys().values().clone();
        if keys
            .iter()
            .any(|&k| usize::try_from(k).map_or(true, |k| k >= ids.len()))
        {
            return internal_err!("AsyncSpansExec: dictionary key out of range");
        }
        Ok(StringColumn { keys, ids })
    }
}

/// A string column of an input batch: its dictionary keys (checked in range) and the global id
/// of each dictionary value.
struct StringColumn {
    keys: ScalarBuffer<i32>,
    ids: Vec<i32>,
}

impl StringColumn {
    fn id(&self, row: usize) -> i32 {
        self.keys
            .get(row)
            .and_then(|&k| self.ids.get(k as usize))
            .copied()
            .unwrap_or(0)
    }
}

/// Hashes span ids (integers from a counter) with one multiplication: the pairing maps see
/// every event, and SipHash's resistance to chosen keys buys nothing here.
#[derive(Debug, Default, Clone, Copy)]
struct SpanIdHasher(u64);

impl Hasher for SpanIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_i64(&mut self, v: i64) {
        self.0 = (v as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type SpanMap<V> = HashMap<i64, V, BuildHasherDefault<SpanIdHasher>>;

/// What a span's begin and end events share.
#[derive(Debug, Clone, Copy, Default)]
struct SpanInfo {
    parent: i64,
    depth: u32,
    hash: u32,
    name: i32,
    filename: i32,
    target: i32,
    line: u32,
}

/// One event's time and thread stream.
#[derive(Debug, Clone, Copy)]
struct Half {
    time: i64,
    stream: i32,
}

/// An end whose begin has not been seen.
#[derive(Debug, Clone)]
struct OrphanEnd {
    info: SpanInfo,
    end: Half,
    properties: Vec<(String, String)>,
}

/// The input columns the pairer reads, by index.
#[derive(Debug, Clone, Copy)]
struct InputColumns {
    time: usize,
    event_type: usize,
    span_id: usize,
    parent: Option<usize>,
    depth: Option<usize>,
    hash: Option<usize>,
    name: Option<usize>,
    filename: Option<usize>,
    target: Option<usize>,
    line: Option<usize>,
    stream: Option<usize>,
    properties: Option<usize>,
}

impl InputColumns {
    fn of(schema: &SchemaRef) -> Result<Self> {
        let find = |c: Column| schema.index_of(c.name()).ok();
        let need = |c: Column| {
            find(c).ok_or_else(|| {
                DataFusionError::Internal(format!("AsyncSpansExec: input has no {}", c.name()))
            })
        };
        Ok(Self {
            time: need(Column::Time)?,
            event_type: need(Column::EventType)?,
            span_id: need(Column::SpanId)?,
            parent: find(Column::ParentSpanId),
            depth: find(Column::Depth),
            hash: find(Column::Hash),
            name: find(Column::Name),
            filename: find(Column::Filename),
            target: find(Column::Target),
            line: find(Column::Line),
            stream: find(Column::StreamId),
            properties: find(Column::Properties),
        })
    }
}

/// One output row, but its properties.
#[derive(Debug, Clone, Copy)]
struct Span {
    span_id: i64,
    info: SpanInfo,
    begin: Option<Half>,
    end: Option<Half>,
    finished: Option<bool>,
}

/// The properties of a span's row.
enum Properties<'a> {
    /// No end: NULL.
    Null,
    /// Kept from an end met before its begin.
    Owned(&'a [(String, String)]),
    /// The end event's, in an input batch (a NULL there is an empty map).
    Input(&'a MapArray, usize),
}

/// The map entries of an input row (a NULL map has none).
fn map_entries(map: &MapArray, row: usize) -> impl Iterator<Item = (&str, &str)> {
    let (keys, values) = (
        map.keys().as_string::<i32>(),
        map.values().as_string::<i32>(),
    );
    let range = if map.is_null(row) {
        0..0
    } else {
        let offsets = map.value_offsets();
        let start = offsets.get(row).map_or(0, |&o| o as usize);
        let end = offsets.get(row + 1).map_or(start, |&o| o as usize);
        start..end
    };
    range.map(move |j| (keys.value(j), values.value(j)))
}

/// The output columns being built, each appended to as spans are emitted: no row is stored.
enum ColumnBuilder {
    SpanId(Vec<i64>),
    ParentSpanId(Vec<i64>),
    Depth(Vec<u32>),
    Hash(Vec<u32>),
    Line(Vec<u32>),
    Name(Vec<i32>),
    Filename(Vec<i32>),
    Target(Vec<i32>),
    Begin(PrimitiveBuilder<TimestampNanosecondType>),
    End(PrimitiveBuilder<TimestampNanosecondType>),
    Duration(PrimitiveBuilder<DurationNanosecondType>),
    BeginStreamId(PrimitiveBuilder<Int32Type>),
    EndStreamId(PrimitiveBuilder<Int32Type>),
    Migrated(BooleanBuilder),
    Finished(BooleanBuilder),
    Properties(Box<MapBuilder<StringBuilder, StringBuilder>>),
}

fn properties_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    let names = MapFieldNames {
        entry: "entries".into(),
        key: "key".into(),
        value: "value".into(),
    };
    MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new())
        .with_keys_field(Arc::new(Field::new("key", DataType::Utf8, false)))
        .with_values_field(Arc::new(Field::new("value", DataType::Utf8, false)))
}

impl ColumnBuilder {
    fn new(column: SpanColumn, capacity: usize) -> Self {
        match column {
            SpanColumn::SpanId => Self::SpanId(Vec::with_capacity(capacity)),
            SpanColumn::ParentSpanId => Self::ParentSpanId(Vec::with_capacity(capacity)),
            SpanColumn::Depth => Self::Depth(Vec::with_capacity(capacity)),
            SpanColumn::Hash => Self::Hash(Vec::with_capacity(capacity)),
            SpanColumn::Line => Self::Line(Vec::with_capacity(capacity)),
            SpanColumn::Name => Self::Name(Vec::with_capacity(capacity)),
            SpanColumn::Filename => Self::Filename(Vec::with_capacity(capacity)),
            SpanColumn::Target => Self::Target(Vec::with_capacity(capacity)),
            SpanColumn::Begin => Self::Begin(PrimitiveBuilder::with_capacity(capacity)),
            SpanColumn::End => Self::End(PrimitiveBuilder::with_capacity(capacity)),
            SpanColumn::Duration => Self::Duration(PrimitiveBuilder::with_capacity(capacity)),
            SpanColumn::BeginStreamId => {
                Self::BeginStreamId(PrimitiveBuilder::with_capacity(capacity))
            }
            SpanColumn::EndStreamId => Self::EndStreamId(PrimitiveBuilder::with_capacity(capacity)),
            SpanColumn::Migrated => Self::Migrated(BooleanBuilder::with_capacity(capacity)),
            SpanColumn::Finished => Self::Finished(BooleanBuilder::with_capacity(capacity)),
            SpanColumn::Properties => Self::Properties(Box::new(properties_builder())),
        }
    }

    fn append(&mut self, span: &Span, properties: &Properties) -> Result<()> {
        let both = span.begin.zip(span.end);
        match self {
            Self::SpanId(v) => v.push(span.span_id),
            Self::ParentSpanId(v) => v.push(span.info.parent),
            Self::Depth(v) => v.push(span.info.depth),
            Self::Hash(v) => v.push(span.info.hash),
            Self::Line(v) => v.push(span.info.line),
            Self::Name(v) => v.push(span.info.name),
            Self::Filename(v) => v.push(span.info.filename),
            Self::Target(v) => v.push(span.info.target),
            Self::Begin(b) => b.append_option(span.begin.map(|h| h.time)),
            Self::End(b) => b.append_option(span.end.map(|h| h.time)),
            Self::Duration(b) => b.append_option(both.map(|(b, e)| e.time.saturating_sub(b.time))),
            Self::BeginStreamId(b) => b.append_option(span.begin.map(|h| h.stream)),
            Self::EndStreamId(b) => b.append_option(span.end.map(|h| h.stream)),
            Self::Migrated(b) => b.append_option(both.map(|(b, e)| b.stream != e.stream)),
            Self::Finished(b) => b.append_option(span.finished),
            Self::Properties(b) => match properties {
                Properties::Null => b.append(false)?,
                Properties::Owned(pairs) => {
                    for (k, v) in pairs.iter() {
                        b.keys().append_value(k);
                        b.values().append_value(v);
                    }
                    b.append(true)?;
                }
                Properties::Input(map, row) => {
                    for (k, v) in map_entries(map, *row) {
                        b.keys().append_value(k);
                        b.values().append_value(v);
                    }
                    b.append(true)?;
                }
            },
        }
        Ok(())
    }

    /// The column of the rows appended so far; the builder starts over with `capacity`.
    fn finish(&mut self, strings: &ArrayRef, capacity: usize) -> Result<ArrayRef> {
        let dict = |keys: Int32Array| -> Result<ArrayRef> {
            Ok(Arc::new(DictionaryArray::<Int32Type>::try_new(
                keys,
                strings.clone(),
            )?))
        };
        Ok(match self {
            Self::SpanId(v) | Self::ParentSpanId(v) => Arc::new(Int64Array::from(
                std::mem::replace(v, Vec::with_capacity(capacity)),
            )),
            Self::Depth(v) | Self::Hash(v) | Self::Line(v) => Arc::new(UInt32Array::from(
                std::mem::replace(v, Vec::with_capacity(capacity)),
            )),
            Self::Name(v) | Self::Filename(v) | Self::Target(v) => dict(Int32Array::from(
                std::mem::replace(v, Vec::with_capacity(capacity)),
            ))?,
            Self::Begin(b) | Self::End(b) => Arc::new(b.finish().with_timezone("+00:00")),
            Self::Duration(b) => Arc::new(b.finish()),
            Self::BeginStreamId(b) | Self::EndStreamId(b) => dict(b.finish())?,
            Self::Migrated(b) | Self::Finished(b) => Arc::new(b.finish()),
            Self::Properties(b) => Arc::new(b.finish()),
        })
    }
}

/// The pairing state and the output being built.
struct Pairer {
    columns: InputColumns,
    schema: SchemaRef,
    range: PairingRange,
    fetch: Option<usize>,
    batch_size: usize,
    metrics: PairingMetrics,
    strings: Strings,
    open: SpanMap<(SpanInfo, Half)>,
    open_peak: usize,
    orphans: SpanMap<OrphanEnd>,
    /// The output batch being built, one builder per output column.
    builders: Vec<ColumnBuilder>,
    /// Rows in the builders.
    rows: usize,
    emitted: usize,
    /// Batches built and not yet handed out.
    ready: VecDeque<RecordBatch>,
}

fn u32_ids(batch: &RecordBatch, index: Option<usize>) -> Option<&[u32]> {
    index.map(|i| {
        batch
            .column(i)
            .as_primitive::<UInt32Type>()
            .values()
            .as_ref()
    })
}

impl Pairer {
    fn new(
        input: &SchemaRef,
        schema: SchemaRef,
        projection: Vec<SpanColumn>,
        range: PairingRange,
        fetch: Option<usize>,
        batch_size: usize,
        metrics: PairingMetrics,
    ) -> Result<Self> {
        let batch_size = batch_size.max(1);
        Ok(Self {
            columns: InputColumns::of(input)?,
            schema,
            range,
            fetch,
            batch_size,
            metrics,
            strings: Strings::default(),
            open: SpanMap::default(),
            open_peak: 0,
            orphans: SpanMap::default(),
            builders: projection
                .iter()
                .map(|&c| ColumnBuilder::new(c, batch_size))
                .collect(),
            rows: 0,
            emitted: 0,
            ready: VecDeque::new(),
        })
    }

    fn limit_reached(&self) -> bool {
        self.fetch.is_some_and(|f| self.emitted >= f)
    }

    fn overlaps(&self, begin: Option<i64>, end: Option<i64>) -> bool {
        let (lo, hi) = self.range.overlap;
        let begins_in_time = match (begin, hi) {
            (Some(b), Some(hi)) => b <= hi,
            _ => true,
        };
        let ends_in_time = match (end, lo) {
            (Some(e), Some(lo)) => e >= lo,
            _ => true,
        };
        begins_in_time && ends_in_time
    }

    /// Appends a span to the output; a batch is ready every `batch_size` spans.
    fn emit(&mut self, span: &Span, properties: Properties) -> Result<()> {
        if self.limit_reached() {
            return Ok(());
        }
        if span.end.is_none() {
            self.metrics.spans_unfinished.add(1);
        }
        if span.begin.is_none() {
            self.metrics.spans_begin_unknown.add(1);
        }
        for builder in &mut self.builders {
            builder.append(span, &properties)?;
        }
        self.rows += 1;
        self.emitted += 1;
        if self.rows >= self.batch_size || self.limit_reached() {
            let batch = self.build()?;
            self.ready.push_back(batch);
        }
        Ok(())
    }

    fn push(&mut self, batch: &RecordBatch) -> Result<()> {
        let c = self.columns;
        let n = batch.num_rows();
        self.metrics.events_in.add(n);
        let time = batch
            .column(c.time)
            .as_primitive::<TimestampNanosecondType>()
            .values();
        let span_id = batch.column(c.span_id).as_primitive::<Int64Type>().values();
        let event_type = self.strings.column(batch.column(c.event_type))?;
        let begin_id = self.strings.intern("begin")?;
        let parent = c
            .parent
            .map(|i| batch.column(i).as_primitive::<Int64Type>().values());
        let depth = u32_ids(batch, c.depth);
        let hash = u32_ids(batch, c.hash);
        let line = u32_ids(batch, c.line);
        let name = self.strings_of(batch, c.name)?;
        let filename = self.strings_of(batch, c.filename)?;
        let target = self.strings_of(batch, c.target)?;
        let stream = self.strings_of(batch, c.stream)?;
        let properties = c.properties.map(|i| batch.column(i).as_map());
        let get = |v: &Option<StringColumn>, row: usize| v.as_ref().map_or(0, |v| v.id(row));
        for row in 0..n {
            let info = SpanInfo {
                parent: parent.map_or(0, |v| v[row]),
                depth: depth.map_or(0, |v| v[row]),
                hash: hash.map_or(0, |v| v[row]),
                name: get(&name, row),
                filename: get(&filename, row),
                target: get(&target, row),
                line: line.map_or(0, |v| v[row]),
            };
            let half = Half {
                time: time[row],
                stream: get(&stream, row),
            };
            let id = span_id[row];
            if event_type.id(row) == begin_id {
                if let Some(orphan) = self.orphans.remove(&id) {
                    // Its end was read first (from another stream): pair them now.
                    let span = Self::closed(id, info, half, orphan.end);
                    self.close(&span, Properties::Owned(&orphan.properties))?;
                } else {
                    self.open.insert(id, (info, half));
                    self.open_peak = self.open_peak.max(self.open.len());
                }
                continue;
            }
            match self.open.remove(&id) {
                Some((begin_info, begin)) => {
                    let span = Self::closed(id, begin_info, begin, half);
                    let props = match properties {
                        Some(map) => Properties::Input(map, row),
                        None => Properties::Owned(&[]),
                    };
                    self.close(&span, props)?;
                }
                None => {
                    let properties = properties
                        .map(|map| {
                            map_entries(map, row)
                                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                                .collect()
                        })
                        .unwrap_or_default();
                    self.orphans.insert(
                        id,
                        OrphanEnd {
                            info,
                            end: half,
                            properties,
                        },
                    );
                }
            }
        }
        self.metrics.spans_open_peak.set_max(self.open_peak);
        Ok(())
    }

    fn closed(span_id: i64, info: SpanInfo, begin: Half, end: Half) -> Span {
        Span {
            span_id,
            info,
            begin: Some(begin),
            end: Some(end),
            finished: Some(true),
        }
    }

    fn close(&mut self, span: &Span, properties: Properties) -> Result<()> {
        if !self.overlaps(span.begin.map(|h| h.time), span.end.map(|h| h.time)) {
            return Ok(());
        }
        self.emit(span, properties)
    }

    fn strings_of(
        &mut self,
        batch: &RecordBatch,
        index: Option<usize>,
    ) -> Result<Option<StringColumn>> {
        index
            .map(|i| self.strings.column(batch.column(i)))
            .transpose()
    }

    /// The input is exhausted: spans still open are unfinished, ends never paired have an
    /// unknown begin. Queues them (by time) and the last partial batch.
    fn finish(&mut self) -> Result<()> {
        let mut open: Vec<(i64, (SpanInfo, Half))> = self.open.drain().collect();
        open.sort_by_key(|(id, (_, begin))| (begin.time, *id));
        let finished = if self.range.reads_to_end {
            Some(false)
        } else {
            None
        };
        for (span_id, (info, begin)) in open {
            if self.overlaps(Some(begin.time), None) {
                let span = Span {
                    span_id,
                    info,
                    begin: Some(begin),
                    end: None,
                    finished,
                };
                self.emit(&span, Properties::Null)?;
            }
        }
        let mut orphans: Vec<(i64, OrphanEnd)> = self.orphans.drain().collect();
        orphans.sort_by_key(|(id, o)| (o.end.time, *id));
        for (span_id, orphan) in orphans {
            if self.overlaps(None, Some(orphan.end.time)) {
                let span = Span {
                    span_id,
                    info: orphan.info,
                    begin: None,
                    end: Some(orphan.end),
                    finished: Some(true),
                };
                self.emit(&span, Properties::Owned(&orphan.properties))?;
            }
        }
        if self.rows > 0 {
            let batch = self.build()?;
            self.ready.push_back(batch);
        }
        Ok(())
    }

    /// Ends the batch being built.
    fn build(&mut self) -> Result<RecordBatch> {
        let rows = std::mem::take(&mut self.rows);
        self.metrics.spans_out.add(rows);
        let strings = self.strings.array();
        let arrays = self
            .builders
            .iter_mut()
            .map(|b| b.finish(&strings, self.batch_size))
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::plan::ScanProjection;
    use datafusion::arrow::array::{Int64Array, StringDictionaryBuilder, TimestampNanosecondArray};
    use datafusion::arrow::util::display::array_value_to_string;

    /// The events columns of the test batches.
    const INPUT: [Column; 5] = [
        Column::StreamId,
        Column::Time,
        Column::EventType,
        Column::SpanId,
        Column::Properties,
    ];

    /// (stream, time, event type, span id, properties of the end)
    type Event = (
        &'static str,
        i64,
        &'static str,
        i64,
        &'static [(&'static str, &'static str)],
    );

    fn batch(schema: &SchemaRef, events: &[Event]) -> RecordBatch {
        let mut streams = StringDictionaryBuilder::<Int32Type>::new();
        let mut types = StringDictionaryBuilder::<Int32Type>::new();
        let mut properties = properties_builder();
        for (stream, _, event_type, _, props) in events {
            streams.append_value(stream);
            types.append_value(event_type);
            for (k, v) in props.iter() {
                properties.keys().append_value(k);
                properties.values().append_value(v);
            }
            properties.append(true).unwrap();
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(streams.finish()),
            Arc::new(
                TimestampNanosecondArray::from_iter_values(events.iter().map(|e| e.1))
                    .with_timezone("+00:00"),
            ),
            Arc::new(types.finish()),
            Arc::new(Int64Array::from_iter_values(events.iter().map(|e| e.3))),
            Arc::new(properties.finish()),
        ];
        RecordBatch::try_new(schema.clone(), columns).unwrap()
    }

    /// The spans paired from these batches, read in this order, as sorted text rows.
    fn pair(batches: &[RecordBatch], range: PairingRange) -> Vec<String> {
        // The columns the input of the test has (no scope columns).
        let projection: Vec<SpanColumn> = SpanColumn::ALL
            .into_iter()
            .filter(|c| !matches!(c.event_column(), Some(e) if !INPUT.contains(&e)))
            .collect();
        let full = async_spans_schema();
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(
            projection
                .iter()
                .map(|&c| full.field(c as usize).clone())
                .collect::<Vec<_>>(),
        ));
        let metrics = PairingMetrics::new(&ExecutionPlanMetricsSet::new());
        let mut pairer = Pairer::new(
            &batches[0].schema(),
            schema,
            projection,
            range,
            None,
            2,
            metrics,
        )
        .unwrap();
        for b in batches {
            pairer.push(b).unwrap();
        }
        pairer.finish().unwrap();
        let mut rows: Vec<String> = pairer
            .ready
            .iter()
            .flat_map(|b| {
                (0..b.num_rows()).map(|r| {
                    b.columns()
                        .iter()
                        .map(|c| array_value_to_string(c, r).unwrap())
                        .collect::<Vec<_>>()
                        .join("|")
                })
            })
            .collect();
        rows.sort();
        rows
    }

    #[test]
    fn pairing_does_not_depend_on_the_order_batches_come_in() {
        let indices: Vec<usize> = INPUT.iter().map(|&c| c as usize).collect();
        let input = ScanProjection::new(Some(&indices)).unwrap().schema;
        let a1: &[Event] = &[
            ("a", 10, "begin", 1, &[]),
            ("a", 12, "end", 3, &[("k", "3")]),
            ("a", 15, "begin", 2, &[]),
        ];
        let a2: &[Event] = &[
            ("a", 20, "end", 1, &[("k", "1")]),
            ("a", 50, "end", 5, &[("x", "y")]),
        ];
        let b1: &[Event] = &[("b", 5, "begin", 3, &[]), ("b", 30, "end", 2, &[])];
        let b2: &[Event] = &[("b", 40, "begin", 4, &[]), ("b", 60, "begin", 6, &[])];
        let batches: Vec<RecordBatch> = [a1, a2, b1, b2].iter().map(|e| batch(&input, e)).collect();
        let [a1, a2, b1, b2] = <[_; 4]>::try_from(batches).unwrap();
        let whole = PairingRange {
            overlap: (None, None),
            reads_to_end: true,
        };
        let in_time_order = pair(&[b1.clone(), a1.clone(), a2.clone(), b2.clone()], whole);
        assert_eq!(in_time_order.len(), 6, "{in_time_order:#?}");
        for order in [
            [a1.clone(), a2.clone(), b1.clone(), b2.clone()],
            [b2.clone(), b1.clone(), a2.clone(), a1.clone()],
            [a2.clone(), b2.clone(), a1.clone(), b1.clone()],
        ] {
            assert_eq!(pair(&order, whole), in_time_order);
        }
        // Span 3 began on b and ended on a, read before its begin in the first order.
        assert!(
            in_time_order
                .iter()
                .any(|r| r.starts_with("3|") && r.ends_with("|b|a|true|true|{k: 3}")),
            "{in_time_order:#?}"
        );
        // Span 5 has no begin; span 4 and 6 never ended.
        assert!(
            in_time_order.iter().any(|r| r.starts_with("5||")),
            "{in_time_order:#?}"
        );
        let ranged = PairingRange {
            overlap: (Some(25), Some(45)),
            reads_to_end: false,
        };
        let cut = pair(&[a1.clone(), b1.clone(), a2.clone(), b2.clone()], ranged);
        assert_eq!(cut, pair(&[b2, a2, b1, a1], ranged));
        assert_eq!(cut.len(), 3, "spans 2, 4 and 5 overlap [25, 45]: {cut:#?}");
    }
}
