//! Output batches of the pairing: one row per [`Span`], appended straight to Arrow builders of
//! the projected columns; string columns are dictionary keys into one interned value array
//! ([`Strings`]), never copied per row.

use super::SpanColumn;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, DictionaryArray, Int32Array, Int64Array, MapArray,
    MapBuilder, MapFieldNames, PrimitiveBuilder, StringArray, StringBuilder, UInt32Array,
};
use datafusion::arrow::buffer::ScalarBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, DurationNanosecondType, Field, Int32Type, TimestampNanosecondType,
};
use datafusion::common::{DataFusionError, Result, internal_err};
use std::collections::HashMap;
use std::sync::Arc;

/// What a span's begin and end events share.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SpanInfo {
    pub parent: i64,
    pub depth: u32,
    pub hash: u32,
    pub name: i32,
    pub filename: i32,
    pub target: i32,
    pub line: u32,
}

/// One event's time and thread stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Half {
    pub time: i64,
    pub stream: i32,
}

/// One output row, but its properties.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    pub span_id: i64,
    pub info: SpanInfo,
    pub begin: Option<Half>,
    pub end: Option<Half>,
    pub finished: Option<bool>,
}

/// The properties of a span's row.
pub(crate) enum Properties<'a> {
    /// No end: NULL.
    Null,
    /// Kept from an end met before its begin.
    Owned(&'a [(String, String)]),
    /// The end event's, in an input batch (a NULL there is an empty map).
    Input(&'a MapArray, usize),
}

/// The map entries of an input row (a NULL map has none).
pub(crate) fn map_entries(map: &MapArray, row: usize) -> impl Iterator<Item = (&str, &str)> {
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
pub(crate) enum ColumnBuilder {
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

pub(crate) fn properties_builder() -> MapBuilder<StringBuilder, StringBuilder> {
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
    pub fn new(column: SpanColumn, capacity: usize) -> Self {
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

    pub fn append(&mut self, span: &Span, properties: &Properties) -> Result<()> {
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
    pub fn finish(&mut self, strings: &ArrayRef, capacity: usize) -> Result<ArrayRef> {
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

/// Interned strings shared by every string column of the output: each output dictionary column
/// indexes the same values array, rebuilt only when new strings appear.
#[derive(Debug, Default)]
pub(crate) struct Strings {
    ids: HashMap<Box<str>, i32>,
    values: Vec<Box<str>>,
    array: Option<ArrayRef>,
}

impl Strings {
    /// Bytes held: each string twice (the lookup key and the value), and the array.
    pub fn bytes(&self) -> usize {
        let text: usize = self.values.iter().map(|v| v.len()).sum();
        2 * text
            + self.values.capacity() * std::mem::size_of::<Box<str>>()
            + self.ids.capacity() * (std::mem::size_of::<(Box<str>, i32)>() + 8)
            + self.array.as_ref().map_or(0, |a| a.get_array_memory_size())
    }

    pub fn intern(&mut self, s: &str) -> Result<i32> {
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

    pub fn array(&mut self) -> ArrayRef {
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
    pub fn column(&mut self, array: &ArrayRef) -> Result<StringColumn> {
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
pub(crate) struct StringColumn {
    keys: ScalarBuffer<i32>,
    ids: Vec<i32>,
}

impl StringColumn {
    pub fn id(&self, row: usize) -> i32 {
        self.keys
            .get(row)
            .and_then(|&k| self.ids.get(k as usize))
            .copied()
            .unwrap_or(0)
    }
}
