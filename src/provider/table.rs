//! [`AsyncEventsTable`]: the `TableProvider` of one process's async events.

use super::caches::ScanCaches;
use super::exec::AsyncEventsExec;
use super::options::ScanOptions;
use super::planning::{ScanProjection, ScanState, plan_scan};
use super::predicate::ScanPredicate;
use super::runtime::ScanRuntime;
use crate::format::async_events_schema;
use crate::lake::{Lake, LakeLocation};
use crate::time_bounds::TimeBounds;
use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, Result};
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExecBuilder;
use std::sync::Arc;
use uuid::Uuid;

/// The async span events of one process, as a table.
///
/// Built by the `async_events(...)` and `view_instance('async_events', ...)` table functions;
/// nothing is read from the lake until the query is planned (`scan`).
#[derive(Debug, Clone)]
pub struct AsyncEventsTable {
    lake: Lake,
    process_id: Uuid,
    /// Inclusive time bounds given to the table function.
    bounds: TimeBounds,
    options: ScanOptions,
    caches: Arc<ScanCaches>,
}

impl AsyncEventsTable {
    /// The table of a process's events, optionally limited to `bounds` (inclusive).
    pub fn new(lake: Lake, process_id: Uuid, bounds: TimeBounds, options: ScanOptions) -> Self {
        Self::with_caches(lake, process_id, bounds, options, Arc::default())
    }

    /// [`new`](Self::new), sharing compiled layouts and per-query blocks with other tables.
    pub fn with_caches(
        lake: Lake,
        process_id: Uuid,
        bounds: TimeBounds,
        options: ScanOptions,
        caches: Arc<ScanCaches>,
    ) -> Self {
        Self {
            lake,
            process_id,
            bounds,
            options,
            caches,
        }
    }

    /// The process whose events the table holds.
    pub fn process_id(&self) -> Uuid {
        self.process_id
    }

    /// The lake the table reads.
    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    /// The time bounds given to the table function (inclusive).
    pub fn bounds(&self) -> TimeBounds {
        self.bounds
    }

    /// How the table's scans read blocks.
    pub fn options(&self) -> &ScanOptions {
        &self.options
    }

    /// What the table shares with the other tables of its registration.
    pub fn caches(&self) -> &Arc<ScanCaches> {
        &self.caches
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
        let props = state.execution_props();
        let (predicate, residual) =
            ScanPredicate::from_filters(filters, props.query_execution_start_time);
        let predicate = predicate
            .with_time_bounds(self.bounds)
            .with_time_bounds(self.options.query_range);
        let requested: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..async_events_schema().fields().len()).collect(),
        };
        // Filters accepted as exact but rewritten by DataFusion into a form the scan does not
        // apply are evaluated here, above the scan, on the columns they need.
        let residual = residual
            .into_iter()
            .map(unnormalize_col)
            .collect::<Vec<_>>();
        let mut scanned = requested.clone();
        for expr in &residual {
            for column in expr.column_refs() {
                let i = async_events_schema().index_of(&column.name)?;
                if !scanned.contains(&i) {
                    scanned.push(i);
                }
            }
        }
        let projection = ScanProjection::new(Some(&scanned))?;
        let (plan, layouts) = plan_scan(
            &self.lake,
            self.process_id,
            &predicate,
            &self.caches.layouts,
            state.config().target_partitions(),
        )
        .await?;
        let shared = self.caches.queries.for_query(
            self.process_id,
            &props.alias_generator,
            self.options.shared_block_budget,
        );
        let registration = shared.register(plan.partitions.blocks().map(|b| b.block_id));
        let schema = projection.schema.clone();
        let scan_state = ScanState {
            location: LakeLocation::of(&self.lake),
            process_id: self.process_id,
            plan,
            predicate,
            projection,
            options: self.options.clone(),
        };
        // The runtime this process executes the scan with; a copy of the plan decoded
        // elsewhere resolves its own.
        let runtime = ScanRuntime::new(self.lake.clone(), layouts, registration, &scan_state);
        let exec = AsyncEventsExec::new(scan_state, None).with_local_runtime(runtime);
        let Some(residual) = conjunction(residual) else {
            return Ok(Arc::new(exec.with_limit(limit)));
        };
        log::debug!(
            "async_events({}): evaluating the pushed filter {residual} above the scan",
            self.process_id
        );
        let exec = Arc::new(exec);
        let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
        let predicate = state.create_physical_expr(residual, &df_schema)?;
        let filter = FilterExecBuilder::new(predicate, exec)
            .apply_projection(Some((0..requested.len()).collect()))?
            .with_batch_size(state.config().batch_size())
            .with_fetch(limit)
            .build()?;
        Ok(Arc::new(filter))
    }
}
