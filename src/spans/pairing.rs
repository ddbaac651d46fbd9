//! [`Pairer`]: the begin and end events of async spans paired by `span_id` into spans.
//!
//! A begin opens a span; its end closes it and the span is emitted at once. An end read before
//! its begin (the batch of the begin's stream starts later) waits for it. What stays in memory
//! is the set of spans open at the current time (and the ends waiting for a begin within a
//! batch's time, or lying before the events read); when the input is exhausted, the spans still
//! open are emitted unfinished and the ends never paired with an unknown begin. The answer does
//! not depend on the order the events come in; the module documentation of [`super`] gives the
//! range rules.

use super::SpanColumn;
use super::output::{
    ColumnBuilder, Half, Properties, Span, SpanInfo, StringColumn, Strings, map_entries,
};
use super::range::PairingRange;

use crate::format::Column;
use datafusion::arrow::array::{AsArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{Int64Type, SchemaRef, TimestampNanosecondType, UInt32Type};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::MemoryReservation;
use datafusion::physical_plan::metrics::{Count, ExecutionPlanMetricsSet, Gauge, MetricBuilder};
use std::collections::{HashMap, VecDeque};

/// The pairing maps, by span id. foldhash mixes every bit of the key, with a seed of its own per
/// map: span ids come from the recorded process (a counter, or anything a producer writes), and
/// a hasher that kept only some of their bits would turn ids sharing those bits (`k << 32`) into
/// one bucket chain, quadratic pairing (`benches/pairing.rs` measures it).
type SpanMap<V> = HashMap<i64, V, foldhash::fast::RandomState>;

/// Bytes an entry of the open-span map holds (key, value and the table's slot overhead), for
/// the memory reservation.
const OPEN_ENTRY_BYTES: usize =
    std::mem::size_of::<(i64, (SpanInfo, Half))>() + std::mem::size_of::<u64>();
/// Bytes an end waiting for its begin holds, but its properties' text.
const ORPHAN_ENTRY_BYTES: usize =
    std::mem::size_of::<(i64, OrphanEnd)>() + std::mem::size_of::<u64>();

/// An end whose begin has not been seen.
#[derive(Debug, Clone)]
struct OrphanEnd {
    info: SpanInfo,
    end: Half,
    properties: Vec<(String, String)>,
}

impl OrphanEnd {
    /// Bytes of its properties' text.
    fn text_bytes(&self) -> usize {
        (self.properties.iter())
            .map(|(k, v)| k.capacity() + v.capacity() + std::mem::size_of::<(String, String)>())
            .sum()
    }
}

/// The input columns the pairer reads, by index.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InputColumns {
    pub time: usize,
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
    pub fn of(schema: &SchemaRef) -> Result<Self> {
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

#[derive(Debug, Clone)]
pub(crate) struct PairingMetrics {
    events_in: Count,
    spans_out: Count,
    spans_unfinished: Count,
    spans_begin_unknown: Count,
    span_ids_repeated: Count,
    spans_open_peak: Gauge,
}

impl PairingMetrics {
    pub fn new(set: &ExecutionPlanMetricsSet) -> Self {
        let counter = |name: &'static str| MetricBuilder::new(set).counter(name, 0);
        Self {
            events_in: counter("events_in"),
            spans_out: counter("spans_out"),
            spans_unfinished: counter("spans_unfinished"),
            spans_begin_unknown: counter("spans_begin_unknown"),
            span_ids_repeated: counter("span_ids_repeated"),
            spans_open_peak: MetricBuilder::new(set).gauge("spans_open_peak", 0),
        }
    }
}

/// The pairing state and the output being built.
pub(crate) struct Pairer {
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
    /// Bytes of properties text the waiting ends hold.
    orphan_text: usize,
    /// What the open spans and waiting ends hold, in the query's memory pool.
    reservation: MemoryReservation,
    /// The output batch being built, one builder per output column.
    builders: Vec<ColumnBuilder>,
    /// Rows in the builders.
    rows: usize,
    emitted: usize,
    /// Batches built and not yet handed out.
    pub ready: VecDeque<RecordBatch>,
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

/// What a [`Pairer`] outputs: the columns, their schema, the row limit and the batch size.
pub struct PairingOutput {
    pub schema: SchemaRef,
    pub projection: Vec<SpanColumn>,
    pub fetch: Option<usize>,
    pub batch_size: usize,
}

impl Pairer {
    pub fn new(
        input: &SchemaRef,
        output: PairingOutput,
        range: PairingRange,
        metrics: PairingMetrics,
        reservation: MemoryReservation,
    ) -> Result<Self> {
        let PairingOutput {
            schema,
            projection,
            fetch,
            batch_size,
        } = output;
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
            orphan_text: 0,
            reservation,
            builders: projection
                .iter()
                .map(|&c| ColumnBuilder::new(c, batch_size))
                .collect(),
            rows: 0,
            emitted: 0,
            ready: VecDeque::new(),
        })
    }

    pub fn limit_reached(&self) -> bool {
        self.fetch.is_some_and(|f| self.emitted >= f)
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

    pub fn push(&mut self, batch: &RecordBatch) -> Result<()> {
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
        // A span's description, read from its begin (or from an end waiting for its begin):
        // an end that closes an open span needs only its time, stream and properties.
        let info_of = |row: usize| SpanInfo {
            parent: parent.map_or(0, |v| v[row]),
            depth: depth.map_or(0, |v| v[row]),
            hash: hash.map_or(0, |v| v[row]),
            name: get(&name, row),
            filename: get(&filename, row),
            target: get(&target, row),
            line: line.map_or(0, |v| v[row]),
        };
        for row in 0..n {
            let half = Half {
                time: time[row],
                stream: get(&stream, row),
            };
            let id = span_id[row];
            if event_type.id(row) == begin_id {
                let info = info_of(row);
                if let Some(orphan) = self.orphans.remove(&id) {
                    // Its end was read first (from another stream): pair them now.
                    self.orphan_text -= orphan.text_bytes();
                    let span = Self::closed(id, info, half, orphan.end);
                    self.close(&span, Properties::Owned(&orphan.properties))?;
                } else if let Some((info, begin)) = self.open.insert(id, (info, half)) {
                    // A second begin of an open span: the id was reused (or the data is
                    // damaged). The first is kept as a row of its own, its end unknown, and
                    // counted: never overwritten.
                    self.metrics.span_ids_repeated.add(1);
                    self.emit_unpaired(id, info, Some(begin), None, None, Properties::Null)?;
                } else {
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
                    let info = info_of(row);
                    let properties = properties
                        .map(|map| {
                            map_entries(map, row)
                                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                                .collect()
                        })
                        .unwrap_or_default();
                    let orphan = OrphanEnd {
                        info,
                        end: half,
                        properties,
                    };
                    self.orphan_text += orphan.text_bytes();
                    if let Some(first) = self.orphans.insert(id, orphan) {
                        // A second end with no begin between: counted, and the first kept as a
                        // row of its own (its begin unknown).
                        self.orphan_text -= first.text_bytes();
                        self.metrics.span_ids_repeated.add(1);
                        self.emit_unpaired(
                            id,
                            first.info,
                            None,
                            Some(first.end),
                            Some(true),
                            Properties::Owned(&first.properties),
                        )?;
                    }
                }
            }
        }
        self.metrics.spans_open_peak.set_max(self.open_peak);
        self.reserve()
    }

    /// Grows (or shrinks) the reservation to what the maps hold; fails the query, naming what
    /// ran out, when the pool cannot give it.
    fn reserve(&mut self) -> Result<()> {
        let bytes = self.open.capacity() * OPEN_ENTRY_BYTES
            + self.orphans.capacity() * ORPHAN_ENTRY_BYTES
            + self.orphan_text
            + self.strings.bytes();
        self.reservation.try_resize(bytes).map_err(|e| {
            DataFusionError::ResourcesExhausted(format!(
                "async_spans: {} spans open at once and {} ends waiting for their begin need \
                 {bytes} bytes: {e}",
                self.open.len(),
                self.orphans.len()
            ))
        })
    }

    /// A row for an event whose partner is missing (a repeated id).
    fn emit_unpaired(
        &mut self,
        span_id: i64,
        info: SpanInfo,
        begin: Option<Half>,
        end: Option<Half>,
        finished: Option<bool>,
        properties: Properties,
    ) -> Result<()> {
        let span = Span {
            span_id,
            info,
            begin,
            end,
            finished,
        };
        if self
            .range
            .overlaps(span.begin.map(|h| h.time), span.end.map(|h| h.time))
        {
            self.emit(&span, properties)?;
        }
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
        if !self
            .range
            .overlaps(span.begin.map(|h| h.time), span.end.map(|h| h.time))
        {
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
    pub fn finish(&mut self) -> Result<()> {
        let mut open: Vec<(i64, (SpanInfo, Half))> = self.open.drain().collect();
        open.sort_by_key(|(id, (_, begin))| (begin.time, *id));
        let finished = if self.range.reads_to_end {
            Some(false)
        } else {
            None
        };
        for (span_id, (info, begin)) in open {
            if self.range.overlaps(Some(begin.time), None) {
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
            if self.range.overlaps(None, Some(orphan.end.time)) {
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
        self.orphan_text = 0;
        self.open.shrink_to_fit();
        self.orphans.shrink_to_fit();
        self.reserve()?;
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
    use super::super::output::properties_builder;
    use super::*;
    use crate::provider::ScanProjection;
    use crate::spans::async_spans_schema;
    use crate::time_bounds::TimeBounds;
    use datafusion::arrow::array::ArrayRef;
    use datafusion::arrow::array::{Int64Array, StringDictionaryBuilder, TimestampNanosecondArray};
    use datafusion::arrow::datatypes::Int32Type;
    use datafusion::arrow::util::display::array_value_to_string;
    use datafusion::execution::memory_pool::{MemoryConsumer, UnboundedMemoryPool};
    use std::sync::Arc;

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
        pair_counted(batches, range).0
    }

    /// The rows, and the repeated span ids counted.
    fn pair_counted(batches: &[RecordBatch], range: PairingRange) -> (Vec<String>, usize) {
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
        let set = ExecutionPlanMetricsSet::new();
        let metrics = PairingMetrics::new(&set);
        let mut pairer = Pairer::new(
            &batches[0].schema(),
            PairingOutput {
                schema,
                projection,
                fetch: None,
                batch_size: 2,
            },
            range,
            metrics,
            MemoryConsumer::new("test").register(&(Arc::new(UnboundedMemoryPool::default()) as _)),
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
        let repeated = set
            .clone_inner()
            .sum_by_name("span_ids_repeated")
            .map_or(0, |v| v.as_usize());
        (rows, repeated)
    }

    #[test]
    fn a_repeated_span_id_is_counted_and_nothing_is_overwritten() {
        let indices: Vec<usize> = INPUT.iter().map(|&c| c as usize).collect();
        let input = ScanProjection::new(Some(&indices)).unwrap().schema;
        let events: &[Event] = &[
            ("a", 10, "begin", 1, &[]),
            ("a", 20, "begin", 1, &[]), // the same id again
            ("a", 30, "end", 1, &[]),
            ("a", 40, "end", 9, &[("k", "a")]), // no begin
            ("a", 50, "end", 9, &[("k", "b")]), // no begin again
        ];
        let whole = PairingRange {
            overlap: TimeBounds::ALL,
            reads_to_end: true,
        };
        let (rows, repeated) = pair_counted(&[batch(&input, events)], whole);
        assert_eq!(repeated, 2);
        assert_eq!(rows.len(), 4, "every event is in a row: {rows:#?}");
        // The first begin of 1 keeps its own row, its end unknown; the second pairs.
        assert_eq!(
            rows.iter().filter(|r| r.starts_with("1|")).count(),
            2,
            "{rows:#?}"
        );
        assert!(
            rows.iter().any(|r| r.contains("{k: a}")) && rows.iter().any(|r| r.contains("{k: b}"))
        );
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
            overlap: TimeBounds::ALL,
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
            overlap: TimeBounds::new(Some(25), Some(45)),
            reads_to_end: false,
        };
        let cut = pair(&[a1.clone(), b1.clone(), a2.clone(), b2.clone()], ranged);
        assert_eq!(cut, pair(&[b2, a2, b1, a1], ranged));
        assert_eq!(cut.len(), 3, "spans 2, 4 and 5 overlap [25, 45]: {cut:#?}");
    }
}
