//! [`AsyncEventsTable`]: the `TableProvider` of one process's async events.

use super::ScanOptions;
use super::exec::AsyncEventsExec;
use super::handles::{LakeLocation, ScanHandles};
use super::plan::{LayoutCache, ScanProjection, ScanState, plan_scan};
use super::predicate::ScanPredicate;
use super::shared::QueryShares;
use crate::format::async_events_schema;
use crate::lake::Lake;
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
    /// Inclusive time bounds given to the table function, ns since the epoch.
    bounds: (Option<i64>, Option<i64>),
    options: ScanOptions,
    context: Arc<TableContext>,
}

/// What the tables made by one `register` share: compiled stream layouts and the blocks each
/// query shares between its scans.
#[derive(Debug, Default)]
pub(crate) struct TableContext {
    pub layouts: LayoutCache,
    pub shares: QueryShares,
}

impl AsyncEventsTable {
    /// The table of a process's events, optionally limited to `[begin, end]` (ns, inclusive).
    pub fn new(
        lake: Lake,
        process_id: Uuid,
        bounds: (Option<i64>, Option<i64>),
        options: ScanOptions,
    ) -> Self {
        Self::with_context(
            lake,
            process_id,
            bounds,
            options,
            Arc::new(TableContext::default()),
        )
    }

    pub(crate) fn with_context(
        lake: Lake,
        process_id: Uuid,
        bounds: (Option<i64>, Option<i64>),
        options: ScanOptions,
        context: Arc<TableContext>,
    ) -> Self {
        Self {
            lake,
            process_id,
            bounds,
            options,
            context,
        }
    }

    /// The process whose events the table holds.
    pub fn process_id(&self) -> Uuid {
        self.process_id
    }

    /// The lake the table reads.
    #[cfg_attr(not(feature = "codec"), allow(dead_code))]
    pub(crate) fn lake(&self) -> &Lake {
        &self.lake
    }

    /// The time bounds given to the table function (ns, inclusive).
    #[cfg_attr(not(feature = "codec"), allow(dead_code))]
    pub(crate) fn bounds(&self) -> (Option<i64>, Option<i64>) {
        self.bounds
    }

    /// How the table's scans read blocks.
    #[cfg_attr(not(feature = "codec"), allow(dead_code))]
    pub(crate) fn options(&self) -> &ScanOptions {
        &self.options
    }

    /// Stream layouts compiled so far by the tables sharing this one's cache (each stream's
    /// metadata is compiled once).
    #[doc(hidden)]
    pub fn layouts_compiled(&self) -> usize {
        self.context.layouts.compiled()
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
            .with_time_bounds(self.bounds.0, self.bounds.1)
            .with_time_bounds(self.options.query_range.0, self.options.query_range.1);
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
            &self.options,
            &self.context.layouts,
            state.config().target_partitions(),
        )
        .await?;
        let shared = self.context.shares.for_query(
            self.process_id,
            &props.alias_generator,
            self.options.shared_block_budget,
        );
        let registration = shared.register(
            plan.partitions
                .0
                .iter()
                .flat_map(|p| p.blocks.iter().map(|b| b.block_id)),
        );
        let schema = projection.schema.clone();
        let scan_state = ScanState {
            location: LakeLocation::of(&self.lake),
            process_id: self.process_id,
            plan,
            predicate,
            projection,
            options: self.options.clone(),
        };
        // The handles this process executes the scan with; a copy of the plan decoded
        // elsewhere resolves its own.
        let handles = ScanHandles::new(self.lake.clone(), layouts, registration, &scan_state);
        let exec = AsyncEventsExec::new(scan_state, None).with_local_handles(handles);
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
