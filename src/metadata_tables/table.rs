//! [`MetadataTable`]: the `processes`, `streams` and `blocks` tables of a lake.
//!
//! Filters on the id columns (`=`, `IN` with canonical lower-case UUID strings) and comparisons
//! of `start_time` (processes) or `begin_time`/`end_time` (blocks) with whole-microsecond
//! timestamps are applied in the metadata query, exactly; other filters are left to DataFusion.
//! One difference from micromegas: `properties` columns are `Map<Utf8, Utf8>` instead of JSONB
//! bytes, as in `async_events`.

use super::columns::{i64s, process_columns, stream_columns, strings, times};
use super::filters::{Condition, IdColumn, add_ids, condition};
use super::schema::{Kind, process_fields, schema};
use crate::lake::{BlockListing, Lake, MetadataFilter, ProcessListing, StreamListing};
use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Int32Array, RecordBatch};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use uuid::Uuid;

/// One of the `processes`, `streams` and `blocks` tables of a lake.
#[derive(Debug, Clone)]
pub struct MetadataTable {
    lake: Lake,
    kind: Kind,
    schema: SchemaRef,
}

impl MetadataTable {
    /// The `processes` table: processes that have blocks, with their latest block's times.
    pub fn processes(lake: Lake) -> Self {
        Self::new(lake, Kind::Processes, schema(Kind::Processes))
    }

    /// The `streams` table: every stream.
    pub fn streams(lake: Lake) -> Self {
        Self::new(lake, Kind::Streams, schema(Kind::Streams))
    }

    /// The `blocks` table: every block with its stream's and process's columns.
    pub fn blocks(lake: Lake) -> Self {
        Self::new(lake, Kind::Blocks, schema(Kind::Blocks))
    }

    fn new(lake: Lake, kind: Kind, schema: Schema) -> Self {
        Self {
            lake,
            kind,
            schema: Arc::new(schema),
        }
    }
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
            .map(|f| match condition(self.kind, f) {
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
            match condition(self.kind, expr) {
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
