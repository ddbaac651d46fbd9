//! [`MetadataTable`]: the `processes`, `streams` and `blocks` tables of a lake.
//!
//! Filters on the id columns (`=`, `IN` with canonical lower-case UUID strings) and comparisons
//! of `start_time` (processes) or `begin_time`/`end_time` (blocks) with whole-microsecond
//! timestamps are applied in the metadata query, exactly; other filters are left to DataFusion,
//! and then so is a `LIMIT` (a limit in the metadata query would count rows those filters drop).
//! One difference from micromegas: `properties` columns are `Map<Utf8, Utf8>` instead of JSONB
//! bytes, as in `async_events`.

use super::exec::MetadataScanExec;
use super::filters::{Condition, IdColumn, add_ids, condition};
use super::schema::{Kind, PROCESS_PREFIX, STREAM_PREFIX, schema};
use crate::lake::{BlockJoins, Lake, MetadataFilter};
use async_trait::async_trait;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use std::sync::Arc;

/// One of the `processes`, `streams` and `blocks` tables of a lake. A scan reads the listing as
/// the database sends it, in batches of the session's `batch_size` rows held within the
/// query's memory pool.
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

    /// The `blocks` table: every block row, with its stream's (`"streams.*"`) and process's
    /// (`"processes.*"`) columns. A block whose stream or process row is missing from the lake
    /// (an orphan, as retention or a failed ingestion leaves) is listed too, with those columns
    /// NULL: `count(*)`, `SELECT *` and every projection see the same rows. (micromegas's view,
    /// an inner join, hides such blocks; find them with `WHERE "streams.format" IS NULL` or
    /// `WHERE "processes.exe" IS NULL`.)
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
        let mut filter = MetadataFilter::default();
        // Whether the metadata query applies every filter: only then may it apply the limit.
        let mut all_applied = true;
        for expr in filters {
            match condition(self.kind, expr) {
                Some(Condition::Ids(IdColumn::Process, ids)) => {
                    add_ids(&mut filter.process_ids, ids)
                }
                Some(Condition::Ids(IdColumn::Stream, ids)) => add_ids(&mut filter.stream_ids, ids),
                Some(Condition::Ids(IdColumn::Block, ids)) => add_ids(&mut filter.block_ids, ids),
                Some(Condition::Time(t)) => filter.times.push(t),
                // Not accepted as exact: DataFusion applies it above the scan.
                None => all_applied = false,
            }
        }
        filter.limit = limit.filter(|_| all_applied);
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let joins = match self.kind {
            Kind::Blocks => {
                let reads = |prefix| schema.fields().iter().any(|f| f.name().starts_with(prefix));
                BlockJoins {
                    streams: reads(STREAM_PREFIX),
                    processes: reads(PROCESS_PREFIX),
                }
            }
            Kind::Processes | Kind::Streams => BlockJoins::default(),
        };
        Ok(Arc::new(MetadataScanExec::new(
            self.lake.clone(),
            self.kind,
            filter,
            joins,
            schema,
        )))
    }
}
