//! [`AsyncEventsTable`]: the `TableProvider` of one process's async events.

use super::ScanOptions;
use super::exec::{AsyncEventsExec, ScanState};
use super::plan::plan_scan;
use super::predicate::ScanPredicate;
use super::shared::SharedBlocks;
use crate::format::{ColumnSet, async_events_schema, projected_schema};
use crate::lake::Lake;
use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use std::sync::Arc;
use tokio::sync::Semaphore;
use uuid::Uuid;

/// The async span events of one process, as a table.
///
/// Built by the `async_events(...)` and `view_instance('async_events', ...)` table functions;
/// nothing is read from the lake until the query is planned (`scan`).
#[derive(Debug, Clone)]
pub struct AsyncEventsTable {
    lake: Lake,
    process_id: Uuid,
    /// Inclusive time bounds given to the table function, ns since the epoch.
    bounds: (Option<i64>, Option<i64>),
    options: ScanOptions,
    shared: Arc<SharedBlocks>,
}

impl AsyncEventsTable {
    /// The table of a process's events, optionally limited to `[begin, end]` (ns, inclusive).
    pub fn new(
        lake: Lake,
        process_id: Uuid,
        bounds: (Option<i64>, Option<i64>),
        options: ScanOptions,
    ) -> Self {
        let shared = Arc::new(SharedBlocks::new(options.shared_block_budget));
        Self::with_shared(lake, process_id, bounds, options, shared)
    }

    pub(crate) fn with_shared(
        lake: Lake,
        process_id: Uuid,
        bounds: (Option<i64>, Option<i64>),
        options: ScanOptions,
        shared: Arc<SharedBlocks>,
    ) -> Self {
        Self {
            lake,
            process_id,
            bounds,
            options,
            shared,
        }
    }

    /// The process whose events the table holds.
    pub fn process_id(&self) -> Uuid {
        self.process_id
    }
}

#[async_trait]
impl TableProvider for AsyncEventsTable {
    fn schema(&self) -> SchemaRef {
        async_events_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters.iter().map(|f| ScanPredicate::support(f)).collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let now = state.execution_props().query_execution_start_time;
        let predicate = ScanPredicate::from_filters(filters, now)
            .with_time_bounds(self.bounds.0, self.bounds.1);
        let columns = ColumnSet::from_projection(projection.map(Vec::as_slice));
        let plan = plan_scan(&self.lake, self.process_id, &predicate, &self.options).await?;
        let registration = self.shared.register(
            plan.partitions
                .iter()
                .flat_map(|p| p.blocks.iter().map(|b| b.block_id)),
        );
        let state = ScanState {
            lake: self.lake.clone(),
            process_id: self.process_id,
            plan,
            predicate,
            columns,
            schema: projected_schema(columns),
            options: self.options.clone(),
            registration,
            fetches: Arc::new(Semaphore::new(self.options.max_concurrent_fetches.max(1))),
        };
        Ok(Arc::new(AsyncEventsExec::new(state, limit)))
    }
}
