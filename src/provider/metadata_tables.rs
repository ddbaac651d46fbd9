//! The `processes`, `streams` and `blocks` tables: the lake's metadata with the column names and
//! types of micromegas's views of the same names, so that queries written for micromegas (and
//! the Python client's `find_process`, `query_streams`, `query_blocks`) run unchanged.
//!
//! Filters on the id columns (`=`, `IN` with canonical lower-case UUID strings) and comparisons
//! of `start_time` (processes) or `begin_time`/`end_time` (blocks) with whole-microsecond
//! timestamps are applied in the metadata query, exactly; other filters are left to DataFusion.
//! One difference from micromegas: `properties` columns are `Map<Utf8, Utf8>` instead of JSONB
//! bytes, as in `async_events`.

use crate::format::{Column, column_type};
use crate::lake::{
    BlockListing, Comparison, Lake, MetadataFilter, ProcessListing, StreamListing, TimeColumn,
    TimeCondition,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    ArrayRef, BinaryArray, Int32Array, Int64Array, ListBuilder, MapBuilder, RecordBatch,
    StringArray, StringBuilder, TimestampNanosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Result, ScalarValue};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::{
    BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use uuid::Uuid;

/// Which metadata table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Processes,
    Streams,
    Blocks,
}

/// One of the `processes`, `streams` and `blocks` tables of a lake.
#[derive(Debug, Clone)]
pub struct MetadataTable {
    lake: Lake,
    kind: Kind,
    schema: SchemaRef,
}

/// Registers the `processes`, `streams` and `blocks` tables of `lake` on a session.
pub fn register_metadata_tables(ctx: &SessionContext, lake: Lake) -> Result<()> {
    ctx.register_table(
        "processes",
        Arc::new(MetadataTable::processes(lake.clone())),
    )?;
    ctx.register_table("streams", Arc::new(MetadataTable::streams(lake.clone())))?;
    ctx.register_table("blocks", Arc::new(MetadataTable::blocks(lake)))?;
    Ok(())
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("+00:00".into()))
}

fn properties_type() -> DataType {
    column_type(Column::Properties)
}

fn tags_type() -> DataType {
    DataType::List(Arc::new(Field::new("tag", DataType::Utf8, false)))
}

fn process_fields(prefix: &str) -> Vec<Field> {
    let f = |name: &str, t: DataType, nullable: bool| {
        Field::new(format!("{prefix}{name}"), t, nullable)
    };
    vec![
        f("start_time", timestamp(), false),
        f("start_ticks", DataType::Int64, false),
        f("tsc_frequency", DataType::Int64, false),
        f("exe", DataType::Utf8, false),
        f("username", DataType::Utf8, false),
        f("realname", DataType::Utf8, false),
        f("computer", DataType::Utf8, false),
        f("distro", DataType::Utf8, false),
        f("cpu_brand", DataType::Utf8, false),
        f("insert_time", timestamp(), true),
        f("parent_process_id", DataType::Utf8, true),
        f("properties", properties_type(), false),
    ]
}

fn processes_schema() -> Schema {
    let mut fields = vec![Field::new("process_id", DataType::Utf8, false)];
    // micromegas's order: exe … cpu_brand, tsc_frequency, start_time, start_ticks, insert_time,
    // parent_process_id, properties.
    let by_name: HashMap<String, Field> = process_fields("")
        .into_iter()
        .map(|f| (f.name().clone(), f))
        .collect();
    for name in [
        "exe",
        "username",
        "realname",
        "computer",
        "distro",
        "cpu_brand",
        "tsc_frequency",
        "start_time",
        "start_ticks",
        "insert_time",
        "parent_process_id",
        "properties",
    ] {
        fields.push(by_name[name].clone());
    }
    fields.push(Field::new("last_update_time", timestamp(), true));
    fields.push(Field::new("last_block_end_ticks", DataType::Int64, false));
    fields.push(Field::new("last_block_end_time", timestamp(), false));
    Schema::new(fields)
}

fn stream_fields(prefix: &str) -> Vec<Field> {
    let f = |name: &str, t: DataType, nullable: bool| {
        Field::new(format!("{prefix}{name}"), t, nullable)
    };
    vec![
        f("dependencies_metadata", DataType::Binary, false),
        f("objects_metadata", DataType::Binary, false),
        f("tags", tags_type(), true),
        f("properties", properties_type(), false),
        f("insert_time", timestamp(), true),
        f("format", DataType::Utf8, false),
    ]
}

fn streams_schema() -> Schema {
    let mut fields = vec![
        Field::new("stream_id", DataType::Utf8, false),
        Field::new("process_id", DataType::Utf8, false),
    ];
    fields.extend(stream_fields(""));
    fields.push(Field::new("last_update_time", timestamp(), true));
    Schema::new(fields)
}

fn blocks_schema() -> Schema {
    let mut fields = vec![
        Field::new("block_id", DataType::Utf8, false),
        Field::new("stream_id", DataType::Utf8, false),
        Field::new("process_id", DataType::Utf8, false),
        Field::new("begin_time", timestamp(), false),
        Field::new("begin_ticks", DataType::Int64, false),
        Field::new("end_time", timestamp(), false),
        Field::new("end_ticks", DataType::Int64, false),
        Field::new("nb_objects", DataType::Int32, false),
        Field::new("object_offset", DataType::Int64, false),
        Field::new("payload_size", DataType::Int64, false),
        Field::new("insert_time", timestamp(), true),
    ];
    fields.extend(stream_fields("streams."));
    fields.extend(process_fields("processes."));
    Schema::new(fields)
}

impl MetadataTable {
    /// The `processes` table: processes that have blocks, with their latest block's times.
    pub fn processes(lake: Lake) -> Self {
        Self::new(lake, Kind::Processes, processes_schema())
    }

    /// The `streams` table: every stream.
    pub fn streams(lake: Lake) -> Self {
        Self::new(lake, Kind::Streams, streams_schema())
    }

    /// The `blocks` table: every block with its stream's and process's columns.
    pub fn blocks(lake: Lake) -> Self {
        Self::new(lake, Kind::Blocks, blocks_schema())
    }

    fn new(lake: Lake, kind: Kind, schema: Schema) -> Self {
        Self {
            lake,
            kind,
            schema: Arc::new(schema),
        }
    }

    fn id_column(&self, name: &str) -> Option<IdColumn> {
        match (self.kind, name) {
            (_, "process_id") => Some(IdColumn::Process),
            (Kind::Streams | Kind::Blocks, "stream_id") => Some(IdColumn::Stream),
            (Kind::Blocks, "block_id") => Some(IdColumn::Block),
            _ => None,
        }
    }

    fn time_column(&self, name: &str) -> Option<TimeColumn> {
        match (self.kind, name) {
            (Kind::Processes, "start_time") => Some(TimeColumn::ProcessStart),
            (Kind::Blocks, "begin_time") => Some(TimeColumn::BlockBegin),
            (Kind::Blocks, "end_time") => Some(TimeColumn::BlockEnd),
            _ => None,
        }
    }

    /// The condition a filter becomes in the metadata query, if it is applied there exactly.
    fn condition(&self, expr: &Expr) -> Option<Condition> {
        match expr {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (column, value, op) = match (left.as_ref(), right.as_ref()) {
                    (Expr::Column(c), Expr::Literal(v, _)) => (c, v, *op),
                    (Expr::Literal(v, _), Expr::Column(c)) => (c, v, op.swap()?),
                    _ => return None,
                };
                if let Some(id) = self.id_column(&column.name) {
                    return (op == Operator::Eq)
                        .then(|| canonical_id(value))
                        .flatten()
                        .map(|ids| Condition::Ids(id, ids));
                }
                let time = self.time_column(&column.name)?;
                let op = match op {
                    Operator::Lt => Comparison::Lt,
                    Operator::LtEq => Comparison::LtEq,
                    Operator::Eq => Comparison::Eq,
                    Operator::GtEq => Comparison::GtEq,
                    Operator::Gt => Comparison::Gt,
                    _ => return None,
                };
                let value = whole_micros(value)?;
                Some(Condition::Time(TimeCondition {
                    column: time,
                    op,
                    value,
                }))
            }
            Expr::InList(list) if !list.negated => {
                let Expr::Column(column) = list.expr.as_ref() else {
                    return None;
                };
                let id = self.id_column(&column.name)?;
                let mut ids = Vec::new();
                for item in &list.list {
                    let Expr::Literal(v, _) = item else {
                        return None;
                    };
                    ids.extend(canonical_id(v)?);
                }
                Some(Condition::Ids(id, ids))
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum IdColumn {
    Process,
    Stream,
    Block,
}

enum Condition {
    Ids(IdColumn, Vec<Uuid>),
    Time(TimeCondition),
}

/// A UUID string literal as the tables show ids (lower case, hyphenated): then comparing in the
/// database is exact. Any other string can never equal an id: no id. Not a string: `None`.
fn canonical_id(value: &ScalarValue) -> Option<Vec<Uuid>> {
    let text = match value {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => s,
        _ => return None,
    };
    Some(match Uuid::parse_str(text) {
        Ok(id) if id.to_string() == *text => vec![id],
        _ => Vec::new(),
    })
}

/// A timestamp literal in whole microseconds (PostgreSQL's precision, so that the database
/// compares exactly as DataFusion would).
fn whole_micros(value: &ScalarValue) -> Option<DateTime<Utc>> {
    let ns = match value {
        ScalarValue::TimestampNanosecond(Some(v), _) => *v,
        ScalarValue::TimestampMicrosecond(Some(v), _) => v.checked_mul(1_000)?,
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000_000)?,
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000_000)?,
        _ => return None,
    };
    (ns % 1_000 == 0).then(|| DateTime::from_timestamp_nanos(ns))
}

fn add_ids(slot: &mut Option<Vec<Uuid>>, ids: Vec<Uuid>) {
    *slot = Some(match slot.take() {
        None => ids,
        Some(old) => {
            let new: HashSet<Uuid> = ids.into_iter().collect();
            old.into_iter().filter(|id| new.contains(id)).collect()
        }
    });
}

fn ns(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

fn strings<T>(rows: &[T], f: impl Fn(&T) -> String) -> ArrayRef {
    Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
}

fn opt_strings<T>(rows: &[T], f: impl Fn(&T) -> Option<String>) -> ArrayRef {
    Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
}

fn i64s<T>(rows: &[T], f: impl Fn(&T) -> i64) -> ArrayRef {
    Arc::new(Int64Array::from(rows.iter().map(f).collect::<Vec<_>>()))
}

fn times<T>(rows: &[T], f: impl Fn(&T) -> Option<DateTime<Utc>>) -> ArrayRef {
    Arc::new(
        TimestampNanosecondArray::from(rows.iter().map(|r| f(r).map(ns)).collect::<Vec<_>>())
            .with_timezone("+00:00"),
    )
}

fn binaries<T>(rows: &[T], f: impl Fn(&T) -> &[u8]) -> ArrayRef {
    Arc::new(BinaryArray::from(rows.iter().map(f).collect::<Vec<_>>()))
}

fn property_maps<T>(rows: &[T], f: impl Fn(&T) -> &[(String, String)]) -> Result<ArrayRef> {
    let DataType::Map(entries, _) = properties_type() else {
        unreachable!("properties are a map")
    };
    let DataType::Struct(kv) = entries.data_type() else {
        unreachable!("map entries are a struct")
    };
    let mut builder = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new())
        .with_keys_field(kv[0].clone())
        .with_values_field(kv[1].clone());
    for row in rows {
        for (k, v) in f(row) {
            builder.keys().append_value(k);
            builder.values().append_value(v);
        }
        builder.append(true)?;
    }
    let map = builder.finish();
    // Same entries field name and types as `async_events.properties`.
    let (_, offsets, columns, nulls, ordered) = map.into_parts();
    Ok(Arc::new(datafusion::arrow::array::MapArray::try_new(
        entries, offsets, columns, nulls, ordered,
    )?))
}

fn tag_lists<T>(rows: &[T], f: impl Fn(&T) -> &[String]) -> ArrayRef {
    let mut builder = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new(
        "tag",
        DataType::Utf8,
        false,
    )));
    for row in rows {
        for tag in f(row) {
            builder.values().append_value(tag);
        }
        builder.append(true);
    }
    Arc::new(builder.finish())
}

/// The columns of a process, in `process_fields` order.
fn process_columns<T>(rows: &[T], p: impl Fn(&T) -> &ProcessListing) -> Result<Vec<ArrayRef>> {
    Ok(vec![
        times(rows, |r| Some(p(r).process.start_time)),
        i64s(rows, |r| p(r).process.start_ticks),
        i64s(rows, |r| p(r).process.tsc_frequency),
        strings(rows, |r| p(r).process.exe.clone()),
        strings(rows, |r| p(r).process.username.clone()),
        strings(rows, |r| p(r).process.realname.clone()),
        strings(rows, |r| p(r).process.computer.clone()),
        strings(rows, |r| p(r).process.distro.clone()),
        strings(rows, |r| p(r).process.cpu_brand.clone()),
        times(rows, |r| p(r).insert_time),
        opt_strings(rows, |r| {
            p(r).process.parent_process_id.map(|id| id.to_string())
        }),
        property_maps(rows, |r| &p(r).process.properties)?,
    ])
}

/// The columns of a stream, in `stream_fields` order.
fn stream_columns<T>(rows: &[T], s: impl Fn(&T) -> &StreamListing) -> Result<Vec<ArrayRef>> {
    Ok(vec![
        binaries(rows, |r| &s(r).stream.dependencies_metadata),
        binaries(rows, |r| &s(r).stream.objects_metadata),
        tag_lists(rows, |r| &s(r).stream.tags),
        property_maps(rows, |r| &s(r).stream.properties)?,
        times(rows, |r| s(r).insert_time),
        strings(rows, |r| s(r).format.clone()),
    ])
}

impl MetadataTable {
    async fn processes_batch(&self, filter: &MetadataFilter) -> Result<RecordBatch> {
        let rows = self.lake.list_processes(filter).await?;
        let schema = self.schema.clone();
        let mut by_name: HashMap<String, ArrayRef> = process_fields("")
            .iter()
            .map(|f| f.name().clone())
            .zip(process_columns(&rows, |r| r)?)
            .collect();
        by_name.insert(
            "process_id".into(),
            strings(&rows, |r| r.process.process_id.to_string()),
        );
        by_name.insert(
            "last_update_time".into(),
            times(&rows, |r| r.last_update_time),
        );
        by_name.insert(
            "last_block_end_ticks".into(),
            i64s(&rows, |r| r.last_block_end_ticks),
        );
        by_name.insert(
            "last_block_end_time".into(),
            times(&rows, |r| Some(r.last_block_end_time)),
        );
        let columns = schema
            .fields()
            .iter()
            .map(|f| by_name.remove(f.name()).expect("every column is built"))
            .collect();
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    async fn streams_batch(&self, filter: &MetadataFilter) -> Result<RecordBatch> {
        let rows = self.lake.list_streams(filter).await?;
        let mut columns = vec![
            strings(&rows, |r| r.stream.stream_id.to_string()),
            strings(&rows, |r| r.stream.process_id.to_string()),
        ];
        columns.extend(stream_columns(&rows, |r| r)?);
        columns.push(times(&rows, |r| r.last_update_time));
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    async fn blocks_batch(
        &self,
        filter: &MetadataFilter,
        projection: Option<&Vec<usize>>,
    ) -> Result<RecordBatch> {
        let blocks = self.lake.list_blocks(filter).await?;
        // The stream and process columns, read only when projected.
        let joined = projection.is_none_or(|p| p.iter().any(|&i| i >= 11));
        let (streams, processes) = if joined && !blocks.is_empty() {
            let ids = |f: fn(&BlockListing) -> Uuid| {
                let set: HashSet<Uuid> = blocks.iter().map(f).collect();
                Some(set.into_iter().collect::<Vec<_>>())
            };
            let streams = self
                .lake
                .list_streams(&MetadataFilter {
                    stream_ids: ids(|b| b.block.stream_id),
                    ..MetadataFilter::default()
                })
                .await?;
            let processes = self
                .lake
                .list_processes(&MetadataFilter {
                    process_ids: ids(|b| b.block.process_id),
                    ..MetadataFilter::default()
                })
                .await?;
            (
                streams
                    .into_iter()
                    .map(|s| (s.stream.stream_id, s))
                    .collect(),
                processes
                    .into_iter()
                    .map(|p| (p.process.process_id, p))
                    .collect(),
            )
        } else {
            (HashMap::new(), HashMap::new())
        };
        // As micromegas's view (an inner join): a block whose stream or process row is missing
        // is not listed.
        let rows: Vec<(
            &BlockListing,
            Option<&StreamListing>,
            Option<&ProcessListing>,
        )> = blocks
            .iter()
            .filter_map(|b| {
                if !joined {
                    return Some((b, None, None));
                }
                let s = streams.get(&b.block.stream_id)?;
                let p = processes.get(&b.block.process_id)?;
                Some((b, Some(s), Some(p)))
            })
            .collect();
        let mut columns = vec![
            strings(&rows, |r| r.0.block.block_id.to_string()),
            strings(&rows, |r| r.0.block.stream_id.to_string()),
            strings(&rows, |r| r.0.block.process_id.to_string()),
            times(&rows, |r| Some(r.0.block.begin_time)),
            i64s(&rows, |r| r.0.block.begin_ticks),
            times(&rows, |r| Some(r.0.block.end_time)),
            i64s(&rows, |r| r.0.block.end_ticks),
            Arc::new(Int32Array::from(
                rows.iter()
                    .map(|r| r.0.block.nb_objects)
                    .collect::<Vec<_>>(),
            )),
            i64s(&rows, |r| r.0.block.object_offset),
            i64s(&rows, |r| r.0.block.payload_size),
            times(&rows, |r| r.0.insert_time),
        ];
        if joined {
            columns.extend(stream_columns(&rows, |r| r.1.expect("joined"))?);
            columns.extend(process_columns(&rows, |r| r.2.expect("joined"))?);
            return Ok(RecordBatch::try_new(self.schema.clone(), columns)?);
        }
        // Only block columns are projected: the others are never read, so any array of the
        // right type and length will do.
        for field in &self.schema.fields()[columns.len()..] {
            columns.push(datafusion::arrow::array::new_null_array(
                field.data_type(),
                rows.len(),
            ));
        }
        let schema = Arc::new(Schema::new(
            self.schema
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| f.as_ref().clone().with_nullable(f.is_nullable() || i >= 11))
                .collect::<Vec<_>>(),
        ));
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

#[async_trait]
impl TableProvider for MetadataTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| match self.condition(f) {
                Some(_) => TableProviderFilterPushDown::Exact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut filter = MetadataFilter {
            limit,
            ..MetadataFilter::default()
        };
        for expr in filters {
            match self.condition(expr) {
                Some(Condition::Ids(IdColumn::Process, ids)) => {
                    add_ids(&mut filter.process_ids, ids)
                }
                Some(Condition::Ids(IdColumn::Stream, ids)) => add_ids(&mut filter.stream_ids, ids),
                Some(Condition::Ids(IdColumn::Block, ids)) => add_ids(&mut filter.block_ids, ids),
                Some(Condition::Time(t)) => filter.times.push(t),
                // Only filters accepted as exact are passed here.
                None => {
                    return datafusion::common::internal_err!(
                        "{:?} table: filter {expr} was not accepted",
                        self.kind
                    );
                }
            }
        }
        let batch = match self.kind {
            Kind::Processes => self.processes_batch(&filter).await?,
            Kind::Streams => self.streams_batch(&filter).await?,
            Kind::Blocks => self.blocks_batch(&filter, projection).await?,
        };
        let schema = batch.schema();
        let exec = MemorySourceConfig::try_new_exec(&[vec![batch]], schema, projection.cloned())?;
        Ok(exec)
    }
}
