//! Wrappers that keep the crate's plans and scans right behind the FFI: [`InRuntime`] polls
//! `scan` inside the module runtime, [`Sealed`] hands a plan over as one leaf.

use crate::runtime::Entered;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result as DfResult, Statistics, internal_err};
use datafusion::datasource::TableType;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::{MetricValue, MetricsSet};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, displayable,
};
use std::sync::Arc;
use tokio::runtime::Handle;

/// A table provider whose `scan` runs inside the module runtime (lake I/O needs it).
#[derive(Debug)]
pub(crate) struct InRuntime {
    pub(crate) inner: Arc<dyn TableProvider>,
    pub(crate) handle: Handle,
}

#[async_trait::async_trait]
impl TableProvider for InRuntime {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    fn statistics(&self) -> Option<Statistics> {
        self.inner.statistics()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let future = self.inner.scan(state, projection, filters, limit);
        let plan = Entered {
            handle: &self.handle,
            future,
        }
        .await?;
        Ok(Arc::new(Sealed { inner: plan }))
    }
}

/// A scan's physical plan shown to the host as one leaf.
///
/// The FFI exposes a plan's children but not their requirements (required input distribution
/// and ordering), so the host's optimizer would rewrite the inside of our plans blindly: seen
/// with `async_spans`, whose pairing needs its input merged into one partition in time order,
/// and whose merge the host split again with a round-robin repartition. Sealed, the plan runs
/// exactly as the crate built it; the host optimizes what lies above it.
#[derive(Debug)]
pub(crate) struct Sealed {
    pub(crate) inner: Arc<dyn ExecutionPlan>,
}

impl DisplayAs for Sealed {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}", displayable(self.inner.as_ref()).one_line())
    }
}

impl ExecutionPlan for Sealed {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            return Ok(self);
        }
        internal_err!(
            "{} is a leaf for its host: it takes no children",
            self.name()
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        self.inner.execute(partition, context)
    }

    /// The metrics of the whole plan, so that EXPLAIN ANALYZE in the host shows the scan's
    /// counters: every metric of the top operator, and the named counters, gauges and times of
    /// the operators below (`blocks_pruned`, `events_decoded`, …) whose names are not taken by
    /// an operator above. Baseline metrics (`output_rows`, `elapsed_compute`, …) stay the top's.
    fn metrics(&self) -> Option<MetricsSet> {
        let mut set = MetricsSet::new();
        let mut taken = std::collections::HashSet::new();
        let mut level = vec![&self.inner];
        let mut top = true;
        while !level.is_empty() {
            let mut names = Vec::new();
            for plan in &level {
                for metric in plan.metrics().iter().flat_map(|m| m.iter()) {
                    let named = matches!(
                        metric.value(),
                        MetricValue::Count { .. }
                            | MetricValue::Gauge { .. }
                            | MetricValue::Time { .. }
                    );
                    let name = metric.value().name();
                    if top || (named && !taken.contains(name)) {
                        names.push(name.to_string());
                        set.push(metric.clone());
                    }
                }
            }
            taken.extend(names);
            level = level.iter().flat_map(|p| p.children()).collect();
            top = false;
        }
        Some(set)
    }
}

/// A table function whose tables scan inside the module runtime.
#[derive(Debug)]
pub(crate) struct InRuntimeFunction {
    pub(crate) inner: Arc<dyn TableFunctionImpl>,
    pub(crate) handle: Handle,
}

impl TableFunctionImpl for InRuntimeFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let inner = self.inner.call_with_args(args)?;
        Ok(Arc::new(InRuntime {
            inner,
            handle: self.handle.clone(),
        }))
    }
}
