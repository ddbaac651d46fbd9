//! The `async_events` schema: micromegas 0.33's 13 columns, names and types, with `properties`
//! as a DataFusion-native `Map<Utf8, Utf8>` instead of JSONB bytes.

use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use std::sync::{Arc, LazyLock};

/// One column of the `async_events` schema, in schema order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Column {
    /// Thread stream UUID (text).
    StreamId = 0,
    /// Block UUID (text).
    BlockId,
    /// Event time, ns since the epoch, UTC.
    Time,
    /// `begin` or `end`.
    EventType,
    /// Span id (unique within a process run).
    SpanId,
    /// Parent span id, 0 for a root.
    ParentSpanId,
    /// Nesting depth when the future was created (0 = top level).
    Depth,
    /// Chained xxh32 of name, filename, target and line.
    Hash,
    /// Span name.
    Name,
    /// Source file of the span.
    Filename,
    /// Target (module path) of the span.
    Target,
    /// Source line of the span.
    Line,
    /// Properties of tagged span ends; empty on other rows.
    Properties,
}

impl Column {
    /// All columns in schema order.
    pub const ALL: [Column; 13] = [
        Column::StreamId,
        Column::BlockId,
        Column::Time,
        Column::EventType,
        Column::SpanId,
        Column::ParentSpanId,
        Column::Depth,
        Column::Hash,
        Column::Name,
        Column::Filename,
        Column::Target,
        Column::Line,
        Column::Properties,
    ];

    /// The column at a schema index.
    pub fn from_index(index: usize) -> Option<Column> {
        Self::ALL.get(index).copied()
    }

    /// The column called `name`.
    pub fn from_name(name: &str) -> Option<Column> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Column name.
    pub fn name(self) -> &'static str {
        match self {
            Column::StreamId => "stream_id",
            Column::BlockId => "block_id",
            Column::Time => "time",
            Column::EventType => "event_type",
            Column::SpanId => "span_id",
            Column::ParentSpanId => "parent_span_id",
            Column::Depth => "depth",
            Column::Hash => "hash",
            Column::Name => "name",
            Column::Filename => "filename",
            Column::Target => "target",
            Column::Line => "line",
            Column::Properties => "properties",
        }
    }

    /// Whether producing this column needs the block's dependencies (strings).
    pub fn needs_dependencies(self) -> bool {
        matches!(
            self,
            Column::Hash
                | Column::Name
                | Column::Filename
                | Column::Target
                | Column::Line
                | Column::Properties
        )
    }
}

/// A set of columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ColumnSet(u16);

impl ColumnSet {
    /// Every column.
    pub fn all() -> Self {
        Self((1 << Column::ALL.len()) - 1)
    }

    /// No column (for `count(*)`).
    pub fn none() -> Self {
        Self(0)
    }

    /// The columns at these schema indices; `None` means all. Out-of-range indices are ignored.
    pub fn from_projection(projection: Option<&[usize]>) -> Self {
        match projection {
            None => Self::all(),
            Some(indices) => indices
                .iter()
                .filter_map(|&i| Column::from_index(i))
                .fold(Self::none(), Self::with),
        }
    }

    /// This set plus `column`.
    pub fn with(self, column: Column) -> Self {
        Self(self.0 | (1 << column as u8))
    }

    /// Whether `column` is in the set.
    #[inline]
    pub fn contains(self, column: Column) -> bool {
        self.0 & (1 << column as u8) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Columns of the set, in schema order.
    pub fn iter(self) -> impl Iterator<Item = Column> {
        Column::ALL.into_iter().filter(move |c| self.contains(*c))
    }

    /// Union.
    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

fn dictionary() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// The entries field of the `properties` map.
pub(crate) fn properties_entries() -> Arc<Field> {
    Arc::new(Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", DataType::Utf8, false),
        ])),
        false,
    ))
}

/// The Arrow type of a column.
pub fn column_type(column: Column) -> DataType {
    match column {
        Column::StreamId
        | Column::BlockId
        | Column::EventType
        | Column::Name
        | Column::Filename
        | Column::Target => dictionary(),
        Column::Time => DataType::Timestamp(TimeUnit::Nanosecond, Some("+00:00".into())),
        Column::SpanId | Column::ParentSpanId => DataType::Int64,
        Column::Depth | Column::Hash | Column::Line => DataType::UInt32,
        Column::Properties => DataType::Map(properties_entries(), false),
    }
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(
        Column::ALL
            .iter()
            .map(|&c| Field::new(c.name(), column_type(c), false))
            .collect::<Vec<_>>(),
    ))
});

/// The full 13-column schema of `async_events`. All fields are non-nullable.
pub fn async_events_schema() -> SchemaRef {
    SCHEMA.clone()
}

/// The schema of a column subset, in schema order.
pub fn projected_schema(columns: ColumnSet) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| SCHEMA.field(c as usize).clone())
            .collect::<Vec<_>>(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirteen_columns_in_micromegas_order() {
        let names: Vec<_> = async_events_schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names,
            [
                "stream_id",
                "block_id",
                "time",
                "event_type",
                "span_id",
                "parent_span_id",
                "depth",
                "hash",
                "name",
                "filename",
                "target",
                "line",
                "properties"
            ]
        );
        assert!(
            async_events_schema()
                .fields()
                .iter()
                .all(|f| !f.is_nullable())
        );
        for (i, c) in Column::ALL.iter().enumerate() {
            assert_eq!(Column::from_index(i), Some(*c));
            assert_eq!(Column::from_name(c.name()), Some(*c));
        }
    }

    #[test]
    fn projections() {
        let set = ColumnSet::from_projection(Some(&[8, 2, 99]));
        assert_eq!(set.iter().collect::<Vec<_>>(), [Column::Time, Column::Name]);
        assert_eq!(projected_schema(set).field(0).name(), "time");
        assert_eq!(ColumnSet::from_projection(None), ColumnSet::all());
    }
}
