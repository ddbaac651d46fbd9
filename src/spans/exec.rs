//! [`AsyncSpansExec`]: the plan node that pairs the begin and end events of async spans as they
//! stream out of an `async_events` scan into one row per span.
//!
//! It reads every partition of the scan itself ([`super::merge`]) and hands the events to a
//! [`Pairer`](super::pairing::Pairer); its output is one partition.

use super::merge::BatchMerge;
use super::pairing::{Pairer, PairingMetrics, PairingOutput};
use super::range::PairingRange;
use super::{SpanColumn, async_spans_schema};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, internal_err};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::{
    Distribution, EquivalenceProperties, LexOrdering, OrderingRequirements,
};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties, SendableRecordBatchStream,
};
use std::fmt;
use std::sync::Arc;

/// Pairs begin and end events into spans.
#[derive(Debug, Clone)]
pub struct AsyncSpansExec {
    input: Arc<dyn ExecutionPlan>,
    /// The order of each partition of the events scan (by `time`), required of the input: then
    /// the batch merge reads ends after their begins, but for a chunk's worth, and memory holds
    /// only the spans open at a time.
    input_order: Option<LexOrdering>,
    range: PairingRange,
    /// Output columns, in output order.
    projection: Vec<SpanColumn>,
    schema: SchemaRef,
    fetch: Option<usize>,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl AsyncSpansExec {
    pub(crate) fn new(
        input: Arc<dyn ExecutionPlan>,
        input_order: Option<LexOrdering>,
        range: PairingRange,
        projection: Vec<SpanColumn>,
        fetch: Option<usize>,
    ) -> Self {
        let full = async_spans_schema();
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(
            projection
                .iter()
                .map(|&c| full.field(c as usize).clone())
                .collect::<Vec<_>>(),
        ));
        let props = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            input,
            input_order,
            range,
            projection,
            schema,
            fetch,
            props,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl AsyncSpansExec {
    /// Which spans it emits and whether a missing end means "never finished".
    #[cfg_attr(not(feature = "codec"), allow(dead_code))]
    pub(crate) fn range(&self) -> PairingRange {
        self.range
    }

    /// The output columns, in output order.
    pub fn columns(&self) -> &[SpanColumn] {
        &self.projection
    }

    /// Whether the input's time order is required (it is whenever the scan declares it).
    pub fn requires_input_order(&self) -> bool {
        self.input_order.is_some()
    }
}

impl DisplayAs for AsyncSpansExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "AsyncSpansExec: pairing begin/end by span_id")?;
        if !self.range.overlap.is_all() {
            write!(f, ", overlapping={}", self.range.overlap)?;
        }
        let missing_end = if self.range.reads_to_end {
            "never finished"
        } else {
            "unknown"
        };
        write!(f, ", no end=[{missing_end}]")?;
        if self.projection.len() < SpanColumn::ALL.len() {
            let names: Vec<&str> = self.projection.iter().map(|c| c.name()).collect();
            write!(f, ", projection=[{}]", names.join(", "))?;
        }
        if let Some(fetch) = self.fetch {
            write!(f, ", fetch={fetch}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for AsyncSpansExec {
    fn name(&self) -> &str {
        "AsyncSpansExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        // All partitions are read here, batch-merged (see [`BatchMerge`]).
        vec![Distribution::UnspecifiedDistribution]
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        vec![self.input_order.clone().map(OrderingRequirements::from)]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match <[_; 1]>::try_from(children) {
            Ok([input]) => Ok(Arc::new(Self::new(
                input,
                self.input_order.clone(),
                self.range,
                self.projection.clone(),
                self.fetch,
            ))),
            Err(_) => internal_err!("AsyncSpansExec has one child"),
        }
    }

    fn fetch(&self) -> Option<usize> {
        self.fetch
    }

    fn with_fetch(&self, limit: Option<usize>) -> Option<Arc<dyn ExecutionPlan>> {
        let mut plan = self.clone();
        plan.fetch = limit;
        Some(Arc::new(plan))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("AsyncSpansExec has one partition, asked for {partition}");
        }
        let inputs = (0..self.input.output_partitioning().partition_count())
            .map(|p| self.input.execute(p, context.clone()))
            .collect::<Result<Vec<_>>>()?;
        let input = BatchMerge::new(inputs, &self.input.schema())?;
        let metrics = PairingMetrics::new(&self.metrics);
        let pairer = Pairer::new(
            &self.input.schema(),
            PairingOutput {
                schema: self.schema.clone(),
                projection: self.projection.clone(),
                fetch: self.fetch,
                batch_size: context.session_config().batch_size(),
            },
            self.range,
            metrics,
            MemoryConsumer::new(format!("AsyncSpansExec[{partition}]"))
                .register(context.memory_pool()),
        )?;
        // (input, pairer, input exhausted or failed)
        let state = (input, pairer, false);
        let stream =
            futures::stream::unfold(state, |(mut input, mut pairer, mut done)| async move {
                loop {
                    if let Some(batch) = pairer.ready.pop_front() {
                        return Some((Ok(batch), (input, pairer, done)));
                    }
                    if done || pairer.limit_reached() {
                        return None;
                    }
                    let step = match input.next().await {
                        Some(Ok(chunk)) => chunk.iter().try_for_each(|b| pairer.push(b)),
                        Some(Err(e)) => Err(e),
                        None => {
                            done = true;
                            pairer.finish()
                        }
                    };
                    if let Err(e) = step {
                        return Some((Err(e), (input, pairer, true)));
                    }
                }
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}
