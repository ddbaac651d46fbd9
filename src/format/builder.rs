//! [`EventBatchBuilder`]: columns of async event rows, built straight from decoded fields.
//!
//! Only the requested columns are filled. String columns are dictionaries whose keys index one
//! string table per batch, shared by `name`, `filename` and `target`: a string is copied once per
//! batch, not once per row. `stream_id` and `block_id` hold one dictionary value per block.

use super::layout::EventType;
use super::schema::{Column, ColumnSet, projected_schema, properties_entries};
use datafusion::arrow::array::{
    ArrayRef, DictionaryArray, Int32Array, Int64Array, MapArray, StringArray, StructArray,
    TimestampNanosecondArray, UInt32Array,
};
use datafusion::arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::{DataType, Int32Type, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use std::collections::HashMap;
use std::sync::Arc;

/// Growable UTF-8 storage with i32 offsets: the parts of an Arrow `StringArray`, truncatable.
#[derive(Debug)]
struct Strings {
    offsets: Vec<i32>,
    bytes: Vec<u8>,
}

impl Default for Strings {
    fn default() -> Self {
        Self {
            offsets: vec![0],
            bytes: Vec::new(),
        }
    }
}

impl Strings {
    fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    fn push(&mut self, s: &str) -> Result<(), ArrowError> {
        self.bytes.extend_from_slice(s.as_bytes());
        let end = i32::try_from(self.bytes.len())
            .map_err(|_| ArrowError::ComputeError("string column exceeds 2 GiB".into()))?;
        self.offsets.push(end);
        Ok(())
    }

    fn truncate(&mut self, len: usize) {
        self.offsets.truncate(len + 1);
        let end = self.offsets.last().copied().unwrap_or(0) as usize;
        self.bytes.truncate(end);
    }

    fn take(&mut self) -> Result<StringArray, ArrowError> {
        let strings = std::mem::take(self);
        StringArray::try_new(
            OffsetBuffer::new(ScalarBuffer::from(strings.offsets)),
            Buffer::from_vec(strings.bytes),
            None,
        )
    }
}

/// Interned strings of one batch: each distinct string once, keyed by position. Hashed with
/// foldhash: SipHash's resistance to chosen keys buys nothing for a table this small, rebuilt
/// for every batch, and cost 3% of decoding (`benches/decode.rs`, profiled).
#[derive(Debug, Default)]
struct StringTable {
    keys: HashMap<Box<str>, i32, foldhash::fast::RandomState>,
    values: Strings,
}

impl StringTable {
    /// The dictionary key of `s`, adding it on first use.
    fn intern(&mut self, s: &str) -> Result<i32, ArrowError> {
        if let Some(&k) = self.keys.get(s) {
            return Ok(k);
        }
        let k = i32::try_from(self.values.len())
            .map_err(|_| ArrowError::ComputeError("too many distinct strings".into()))?;
        self.values.push(s)?;
        self.keys.insert(s.into(), k);
        Ok(k)
    }

    fn take(&mut self) -> Result<StringArray, ArrowError> {
        self.keys.clear();
        self.values.take()
    }
}

/// A column of UUID text with one dictionary value per block.
#[derive(Debug, Default)]
struct IdColumn {
    values: Strings,
    keys: Vec<i32>,
    current: i32,
}

impl IdColumn {
    fn start(&mut self, id: &str) -> Result<(), ArrowError> {
        let n = self.values.len();
        let key = |n: usize| i32::try_from(n).map_err(|_| ArrowError::DictionaryKeyOverflowError);
        if n == 0 || self.last_value() != Some(id) {
            self.values.push(id)?;
            self.current = key(n)?;
        } else {
            self.current = key(n - 1)?;
        }
        Ok(())
    }

    fn last_value(&self) -> Option<&str> {
        let n = self.values.offsets.len();
        if n < 2 {
            return None;
        }
        let (a, b) = (self.values.offsets[n - 2], self.values.offsets[n - 1]);
        std::str::from_utf8(self.values.bytes.get(a as usize..b as usize)?).ok()
    }
}

/// The fields of one kept async event: what [`EventBatchBuilder::push_row`] appends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventRow {
    /// ns since the epoch (0 when neither the column nor the filter needs it).
    pub time: i64,
    pub event_type: EventType,
    pub span_id: i64,
    pub parent_span_id: i64,
    pub depth: u32,
    /// The span's scope: resolved whenever a scope column is built (zeros otherwise, which no
    /// built column reads).
    pub scope: ScopeKeys,
}

/// A span's scope as the builder stores it: string table keys, line and hash.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ScopeKeys {
    /// Key in the string table (0 when the column is not built).
    pub name: i32,
    pub filename: i32,
    pub target: i32,
    pub line: u32,
    /// [`scope_hash`](super::hash::scope_hash) (0 when the column is not built).
    pub hash: u32,
}

/// Builds [`RecordBatch`]es of async events for a set of columns.
///
/// Every built column holds [`len`](Self::len) rows: rows are only added by `push_row`, and
/// removed by `truncate` and `finish`.
#[derive(Debug)]
pub struct EventBatchBuilder {
    columns: ColumnSet,
    schema: SchemaRef,
    len: usize,
    stream_id: IdColumn,
    block_id: IdColumn,
    time: Vec<i64>,
    event_type: Vec<i32>,
    span_id: Vec<i64>,
    parent_span_id: Vec<i64>,
    depth: Vec<u32>,
    hash: Vec<u32>,
    name: Vec<i32>,
    filename: Vec<i32>,
    target: Vec<i32>,
    line: Vec<u32>,
    strings: StringTable,
    property_offsets: Vec<i32>,
    property_keys: Strings,
    property_values: Strings,
}

impl EventBatchBuilder {
    /// A builder for these columns (in schema order).
    pub fn new(columns: ColumnSet) -> Self {
        Self {
            columns,
            schema: projected_schema(columns),
            len: 0,
            stream_id: IdColumn::default(),
            block_id: IdColumn::default(),
            time: Vec::new(),
            event_type: Vec::new(),
            span_id: Vec::new(),
            parent_span_id: Vec::new(),
            depth: Vec::new(),
            hash: Vec::new(),
            name: Vec::new(),
            filename: Vec::new(),
            target: Vec::new(),
            line: Vec::new(),
            strings: StringTable::default(),
            property_offsets: vec![0],
            property_keys: Strings::default(),
            property_values: Strings::default(),
        }
    }

    /// The schema of the batches this builder makes.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The columns this builder fills.
    pub fn columns(&self) -> ColumnSet {
        self.columns
    }

    /// Rows added since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no row was added since the last [`finish`](Self::finish).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Starts the rows of a block: sets the `stream_id` and `block_id` of the rows that follow.
    pub(crate) fn start_block(
        &mut self,
        stream_id: &str,
        block_id: &str,
    ) -> Result<(), ArrowError> {
        if self.columns.contains(Column::StreamId) {
            self.stream_id.start(stream_id)?;
        }
        if self.columns.contains(Column::BlockId) {
            self.block_id.start(block_id)?;
        }
        Ok(())
    }

    /// The key of a string of the `name`, `filename` and `target` columns in this batch.
    pub(crate) fn intern(&mut self, s: &str) -> Result<i32, ArrowError> {
        self.strings.intern(s)
    }

    /// Appends one row to every built column: the fields of `row`, and `properties` (which
    /// are only read when the `properties` column is built).
    ///
    /// On error (a column outgrew Arrow's limits), the builder is left as it was.
    #[inline]
    pub(crate) fn push_row<'s>(
        &mut self,
        row: EventRow,
        properties: impl Iterator<Item = (&'s str, &'s str)>,
    ) -> Result<(), ArrowError> {
        let c = self.columns;
        if c.is_empty() {
            // `count(*)`: rows without columns.
            self.len += 1;
            return Ok(());
        }
        if c.contains(Column::Properties)
            && let Err(e) = self.push_properties(properties)
        {
            self.truncate(self.len);
            return Err(e);
        }
        if c.contains(Column::StreamId) {
            self.stream_id.keys.push(self.stream_id.current);
        }
        if c.contains(Column::BlockId) {
            self.block_id.keys.push(self.block_id.current);
        }
        if c.contains(Column::Time) {
            self.time.push(row.time);
        }
        if c.contains(Column::EventType) {
            self.event_type.push(row.event_type as i32);
        }
        if c.contains(Column::SpanId) {
            self.span_id.push(row.span_id);
        }
        if c.contains(Column::ParentSpanId) {
            self.parent_span_id.push(row.parent_span_id);
        }
        if c.contains(Column::Depth) {
            self.depth.push(row.depth);
        }
        let s = row.scope;
        if c.contains(Column::Hash) {
            self.hash.push(s.hash);
        }
        if c.contains(Column::Name) {
            self.name.push(s.name);
        }
        if c.contains(Column::Filename) {
            self.filename.push(s.filename);
        }
        if c.contains(Column::Target) {
            self.target.push(s.target);
        }
        if c.contains(Column::Line) {
            self.line.push(s.line);
        }
        self.len += 1;
        Ok(())
    }

    /// Adds the properties of one row. Inlined: most rows have none, and then this is the
    /// offset push alone.
    #[inline(always)]
    fn push_properties<'a>(
        &mut self,
        pairs: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), ArrowError> {
        for (key, value) in pairs {
            self.push_property(key, value)?;
        }
        let end = i32::try_from(self.property_keys.len())
            .map_err(|_| ArrowError::ComputeError("too many properties in one batch".into()))?;
        self.property_offsets.push(end);
        Ok(())
    }

    fn push_property(&mut self, key: &str, value: &str) -> Result<(), ArrowError> {
        self.property_keys.push(key)?;
        self.property_values.push(value)
    }

    /// Reserves room for `rows` more rows in the requested columns.
    pub(crate) fn reserve(&mut self, rows: usize) {
        let c = self.columns;
        let reserve = |v: &mut Vec<i32>, col: Column| {
            if c.contains(col) {
                v.reserve(rows)
            }
        };
        reserve(&mut self.stream_id.keys, Column::StreamId);
        reserve(&mut self.block_id.keys, Column::BlockId);
        reserve(&mut self.event_type, Column::EventType);
        reserve(&mut self.name, Column::Name);
        reserve(&mut self.filename, Column::Filename);
        reserve(&mut self.target, Column::Target);
        for (v, col) in [
            (&mut self.time, Column::Time),
            (&mut self.span_id, Column::SpanId),
            (&mut self.parent_span_id, Column::ParentSpanId),
        ] {
            if c.contains(col) {
                v.reserve(rows);
            }
        }
        for (v, col) in [
            (&mut self.depth, Column::Depth),
            (&mut self.hash, Column::Hash),
            (&mut self.line, Column::Line),
        ] {
            if c.contains(col) {
                v.reserve(rows);
            }
        }
    }

    /// Removes the rows added after the first `len` (used when a block fails half way).
    pub(crate) fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
        self.stream_id.keys.truncate(len);
        self.block_id.keys.truncate(len);
        for v in [&mut self.time, &mut self.span_id, &mut self.parent_span_id] {
            v.truncate(len);
        }
        for v in [
            &mut self.event_type,
            &mut self.name,
            &mut self.filename,
            &mut self.target,
        ] {
            v.truncate(len);
        }
        for v in [&mut self.depth, &mut self.hash, &mut self.line] {
            v.truncate(len);
        }
        if self.columns.contains(Column::Properties) {
            self.property_offsets.truncate(len + 1);
            let n = self.property_offsets.last().copied().unwrap_or(0) as usize;
            self.property_keys.truncate(n);
            self.property_values.truncate(n);
        }
    }

    /// Builds a batch of the rows added so far and starts an empty one.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let len = std::mem::take(&mut self.len);
        let strings: Option<ArrayRef> = if [Column::Name, Column::Filename, Column::Target]
            .iter()
            .any(|c| self.columns.contains(*c))
        {
            Some(Arc::new(self.strings.take()?))
        } else {
            None
        };
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(13);
        for column in self.columns.iter() {
            let array: ArrayRef = match column {
                Column::StreamId => id_array(&mut self.stream_id)?,
                Column::BlockId => id_array(&mut self.block_id)?,
                Column::Time => Arc::new(
                    TimestampNanosecondArray::from(std::mem::take(&mut self.time))
                        .with_timezone("+00:00"),
                ),
                Column::EventType => {
                    let values: ArrayRef = Arc::new(StringArray::from(vec!["begin", "end"]));
                    dict(std::mem::take(&mut self.event_type), values)?
                }
                Column::SpanId => Arc::new(Int64Array::from(std::mem::take(&mut self.span_id))),
                Column::ParentSpanId => {
                    Arc::new(Int64Array::from(std::mem::take(&mut self.parent_span_id)))
                }
                Column::Depth => Arc::new(UInt32Array::from(std::mem::take(&mut self.depth))),
                Column::Hash => Arc::new(UInt32Array::from(std::mem::take(&mut self.hash))),
                Column::Line => Arc::new(UInt32Array::from(std::mem::take(&mut self.line))),
                Column::Name | Column::Filename | Column::Target => {
                    let keys = match column {
                        Column::Name => &mut self.name,
                        Column::Filename => &mut self.filename,
                        _ => &mut self.target,
                    };
                    let values = strings
                        .clone()
                        .ok_or_else(|| ArrowError::ComputeError("string table missing".into()))?;
                    dict(std::mem::take(keys), values)?
                }
                Column::Properties => Arc::new(self.take_properties()?),
            };
            arrays.push(array);
        }
        RecordBatch::try_new_with_options(
            self.schema.clone(),
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(len)),
        )
    }

    fn take_properties(&mut self) -> Result<MapArray, ArrowError> {
        let offsets = std::mem::replace(&mut self.property_offsets, vec![0]);
        let entries = properties_entries();
        let DataType::Struct(fields) = entries.data_type().clone() else {
            return Err(ArrowError::SchemaError(
                "properties entries are not a struct".into(),
            ));
        };
        let keys: ArrayRef = Arc::new(self.property_keys.take()?);
        let values: ArrayRef = Arc::new(self.property_values.take()?);
        let entries_array = StructArray::try_new(fields, vec![keys, values], None)?;
        MapArray::try_new(
            entries,
            OffsetBuffer::new(ScalarBuffer::from(offsets)),
            entries_array,
            None,
            false,
        )
    }
}

fn dict(keys: Vec<i32>, values: ArrayRef) -> Result<ArrayRef, ArrowError> {
    Ok(Arc::new(DictionaryArray::<Int32Type>::try_new(
        Int32Array::from(keys),
        values,
    )?))
}

fn id_array(column: &mut IdColumn) -> Result<ArrayRef, ArrowError> {
    let values: ArrayRef = Arc::new(column.values.take()?);
    column.current = 0;
    dict(std::mem::take(&mut column.keys), values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Int64Type, UInt32Type};

    fn row(span_id: i64, scope: ScopeKeys) -> EventRow {
        EventRow {
            time: 1_000 + span_id,
            event_type: EventType::End,
            span_id,
            parent_span_id: 1,
            depth: 2,
            scope,
        }
    }

    #[test]
    fn push_row_fills_every_built_column_and_truncate_undoes_it() {
        let mut out = EventBatchBuilder::new(ColumnSet::all());
        out.start_block("s", "b").unwrap();
        let scope = ScopeKeys {
            name: out.intern("poll").unwrap(),
            filename: out.intern("a.rs").unwrap(),
            target: out.intern("app").unwrap(),
            line: 12,
            hash: 99,
        };
        out.push_row(row(10, scope), [("k", "v")].into_iter())
            .unwrap();
        out.push_row(row(11, scope), std::iter::empty()).unwrap();
        out.push_row(row(12, scope), [("x", "y"), ("z", "w")].into_iter())
            .unwrap();
        assert_eq!(out.len(), 3);
        out.truncate(2);
        let batch = out.finish().unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert!(batch.columns().iter().all(|c| c.len() == 2));
        let span = batch.column(4).as_primitive::<Int64Type>();
        assert_eq!(span.values(), &[10, 11]);
        assert_eq!(batch.column(11).as_primitive::<UInt32Type>().value(1), 12);
        let properties = batch.column(12).as_map();
        assert_eq!(properties.value_offsets(), &[0, 1, 1]);
        assert!(out.is_empty());
    }

    #[test]
    fn push_row_without_scope_columns_needs_no_scope() {
        let columns = ColumnSet::none().with(Column::SpanId).with(Column::Time);
        let mut out = EventBatchBuilder::new(columns);
        out.start_block("s", "b").unwrap();
        out.push_row(row(5, ScopeKeys::default()), [("ignored", "")].into_iter())
            .unwrap();
        let batch = out.finish().unwrap();
        assert_eq!(batch.num_columns(), 2);
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.column(1).as_primitive::<Int64Type>().value(0), 5);
    }
}
