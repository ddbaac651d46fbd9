//! [`AsyncEventsExec`]: the leaf execution plan that reads blocks lazily into Arrow batches.
//!
//! A partition per thread stream, or per contiguous run of a busy stream's blocks, in recording
//! order, so each partition is sorted by `time` (declared when `time` is in the output, and
//! checked while decoding, across the partitions of a stream too). Nothing happens
//! before the first poll; a few blocks per partition are fetched ahead; dropping the stream stops
//! all fetching. `ORDER BY time DESC` makes the partitions read newest blocks first, so that the
//! TopK dynamic filter can skip the older ones.

use super::metrics::PartitionMetrics;
use super::planning::{Partitions, PlannedScan, ScanState};
use super::runtime::ScanRuntime;
use super::stream::{PartitionArgs, partition_stream};
use crate::format::Column;
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::physical_expr::expressions::Column as ColumnExpr;
use datafusion::physical_expr::utils::{collect_columns, split_conjunction};
use datafusion::physical_expr::{
    EquivalenceProperties, LexOrdering, PhysicalExpr, PhysicalSortExpr, conjunction,
};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::filter_pushdown::{
    ChildPushdownResult, FilterPushdownPhase, FilterPushdownPropagation, PushedDown,
};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::{
    RecordBatchReceiverStreamBuilder, RecordBatchStreamAdapter,
};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    ReplaceChildrenOptions, SendableRecordBatchStream, SortOrderPushdownResult,
    apply_expression_roots,
};
use futures::StreamExt;
use std::fmt;
use std::sync::{Arc, OnceLock};
use uuid::Uuid;

/// Batches a partition's task may have ready ahead of its consumer.
const READY_AHEAD: usize = 2;

/// Runs a partition's reading (fetching, decompressing, decoding) in a task of its own, started
/// on the first poll, its batches handed over through a channel of [`READY_AHEAD`] batches.
///
/// Consumers such as a sort-preserving merge poll their input partitions from one task: were the
/// decoding done inside the poll, every stream would be decoded on one core. Dropping the stream
/// aborts the task.
fn in_own_task(schema: SchemaRef, args: PartitionArgs) -> SendableRecordBatchStream {
    let task_schema = schema.clone();
    let started = futures::stream::once(async move {
        let mut builder = RecordBatchReceiverStreamBuilder::new(task_schema, READY_AHEAD);
        let tx = builder.tx();
        builder.spawn(async move {
            let mut stream = partition_stream(args);
            while let Some(batch) = stream.next().await {
                if tx.send(batch).await.is_err() {
                    break; // the consumer went away
                }
            }
            Ok(())
        });
        builder.build()
    })
    .flatten();
    Box::pin(RecordBatchStreamAdapter::new(schema, started))
}

/// Leaf plan reading the async events of one process: a partition per thread stream (or per
/// run of a busy stream's blocks), blocks
/// fetched a few ahead and decoded lazily, pushed filters used to skip blocks.
#[derive(Debug, Clone)]
pub struct AsyncEventsExec {
    state: Arc<ScanState>,
    /// The blocks of each partition: the planned runs, or one partition per stream when
    /// reading newest first (see `try_pushdown_sort`).
    partitions: Arc<Partitions>,
    /// Newest blocks first (for `ORDER BY time DESC`).
    reversed: bool,
    fetch: Option<usize>,
    /// The filters pushed down from above (static and dynamic) that read `time` alone, bound to
    /// the output schema: used to skip blocks whose time bounds cannot match. Others cannot
    /// prune (a block's only statistics are its time bounds) and are not kept.
    pushed: Option<Arc<dyn PhysicalExpr>>,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
    /// What executes the partitions: made by the table that planned the scan, or resolved on
    /// the first execution (see [`super::runtime`]). Never part of the plan's data.
    runtime: Arc<OnceLock<Arc<ScanRuntime>>>,
}

impl AsyncEventsExec {
    pub(crate) fn new(state: ScanState, fetch: Option<usize>) -> Self {
        let state = Arc::new(state);
        let partitions = Arc::new(state.plan.partitions.clone());
        let props = Arc::new(properties(&state, &partitions, false));
        Self {
            state,
            partitions,
            reversed: false,
            fetch,
            pushed: None,
            props,
            metrics: ExecutionPlanMetricsSet::new(),
            runtime: Arc::new(OnceLock::new()),
        }
    }

    /// The scan executed with the runtime of the table that planned it.
    pub(crate) fn with_local_runtime(self, runtime: ScanRuntime) -> Self {
        let _ = self.runtime.set(Arc::new(runtime));
        self
    }

    pub(crate) fn with_limit(mut self, fetch: Option<usize>) -> Self {
        self.fetch = fetch;
        self
    }

    #[cfg_attr(not(feature = "codec"), allow(dead_code))]
    pub(crate) fn state(&self) -> &Arc<ScanState> {
        &self.state
    }

    #[cfg_attr(not(feature = "codec"), allow(dead_code))]
    pub(crate) fn partitions(&self) -> &Arc<Partitions> {
        &self.partitions
    }

    #[cfg_attr(not(feature = "codec"), allow(dead_code))]
    pub(crate) fn pushed(&self) -> Option<&Arc<dyn PhysicalExpr>> {
        self.pushed.as_ref()
    }

    /// A scan rebuilt from its data (a decoded plan): its runtime is resolved when it runs.
    pub(crate) fn from_parts(
        state: ScanState,
        partitions: Partitions,
        reversed: bool,
        fetch: Option<usize>,
        pushed: Option<Arc<dyn PhysicalExpr>>,
    ) -> Self {
        let state = Arc::new(state);
        let partitions = Arc::new(partitions);
        let props = Arc::new(properties(&state, &partitions, reversed));
        Self {
            state,
            partitions,
            reversed,
            fetch,
            pushed,
            props,
            metrics: ExecutionPlanMetricsSet::new(),
            runtime: Arc::new(OnceLock::new()),
        }
    }

    fn runtime(&self, context: &TaskContext) -> Result<Arc<ScanRuntime>> {
        if let Some(r) = self.runtime.get() {
            return Ok(r.clone());
        }
        let resolved = Arc::new(ScanRuntime::resolve(&self.state, context)?);
        Ok(self.runtime.get_or_init(|| resolved).clone())
    }

    /// The process this scan reads.
    pub fn process_id(&self) -> Uuid {
        self.state.process_id
    }

    /// Blocks the scan reads after planning-time pruning.
    pub fn planned_blocks(&self) -> usize {
        self.partitions.block_count()
    }

    /// Whether blocks are read newest first.
    pub fn is_reversed(&self) -> bool {
        self.reversed
    }

    fn time_index(&self) -> Option<usize> {
        self.state.schema().index_of(Column::Time.name()).ok()
    }

    /// Blocks and events (`nb_objects`) of each partition, in partition order: what the
    /// planning benchmark (`examples/plan_bench.rs`) checks the balance of.
    #[doc(hidden)]
    pub fn partition_sizes(&self) -> Vec<(usize, u64)> {
        self.partitions
            .iter()
            .map(|p| {
                let events = p
                    .blocks
                    .iter()
                    .map(|b| u64::try_from(b.nb_objects).unwrap_or(0));
                (p.blocks.len(), events.sum())
            })
            .collect()
    }

    /// This scan cut for `tasks` tasks of a distributed engine: one scan per task, each reading
    /// an equal share of the weight (contiguous slices of the streams' blocks, to a block), in
    /// the same number of partitions (about `per_task`; padded with empty ones), every partition
    /// one stream's blocks in time order. The variants are plain data: each resolves its lake
    /// where it runs and shares nothing with the others (time order is checked within a task).
    ///
    /// A block weighs its events plus `block_cost` (what fetching it costs, in events): 1
    /// balances decoding, a large value (10⁹) the blocks, i.e. the object store requests.
    pub fn task_variants(&self, tasks: usize, per_task: usize, block_cost: u64) -> Vec<Self> {
        self.partitions
            .split_for_tasks(tasks, per_task, self.reversed, block_cost)
            .into_iter()
            .map(|mut partitions| {
                // A task carries the metadata of the streams it reads, no other.
                let kept = partitions.renumber_streams();
                let s = &self.state;
                let state = ScanState {
                    location: s.location.clone(),
                    process_id: s.process_id,
                    plan: PlannedScan {
                        clock: s.plan.clock,
                        clock_params: s.plan.clock_params,
                        streams: (kept.iter())
                            .filter_map(|&i| s.plan.streams.get(i).cloned())
                            .collect(),
                        partitions: partitions.clone(),
                    },
                    predicate: s.predicate.clone(),
                    projection: s.projection.clone(),
                    options: s.options.clone(),
                };
                Self::from_parts(
                    state,
                    partitions,
                    self.reversed,
                    self.fetch,
                    self.pushed.clone(),
                )
            })
            .collect()
    }

    /// Bytes of decompressed blocks the query's scans of this process hold for each other now
    /// (0 once every scan of the query has read its blocks).
    #[doc(hidden)]
    pub fn shared_bytes_held(&self) -> usize {
        self.runtime
            .get()
            .map_or(0, |r| r.registration.held_bytes())
    }
}

fn properties(state: &ScanState, partitions: &Partitions, reversed: bool) -> PlanProperties {
    let schema = state.schema().clone();
    let ordering = match schema.index_of(Column::Time.name()) {
        Ok(i) if !reversed && state.options.declare_time_order => {
            LexOrdering::new([PhysicalSortExpr::new(
                Arc::new(ColumnExpr::new(Column::Time.name(), i)),
                SortOptions {
                    descending: false,
                    nulls_first: false,
                },
            )])
        }
        _ => None,
    };
    let eq = match ordering {
        Some(o) => EquivalenceProperties::new_with_orderings(schema, [o]),
        None => EquivalenceProperties::new(schema),
    };
    PlanProperties::new(
        eq,
        Partitioning::UnknownPartitioning(partitions.len().max(1)),
        EmissionType::Incremental,
        Boundedness::Bounded,
    )
}

impl DisplayAs for AsyncEventsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let s = &self.state;
        write!(
            f,
            "AsyncEventsExec: process={}, streams={}, blocks={}/{}",
            s.process_id,
            s.plan.streams.len(),
            self.partitions.block_count(),
            self.partitions.listed_count()
        )?;
        if self.partitions.len() != s.plan.streams.len() {
            write!(f, ", partitions={}", self.partitions.len())?;
        }
        if !s.predicate.time.is_all() {
            write!(f, ", time={}", s.predicate.time)?;
        }
        let filter = s.predicate.to_string();
        if !filter.is_empty() {
            write!(f, ", filter=[{filter}]")?;
        }
        if s.projection.order.is_some() || s.schema().fields().len() < Column::ALL.len() {
            let projected: Vec<&str> = s
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            write!(f, ", projection=[{}]", projected.join(", "))?;
        }
        if let Some(fetch) = self.fetch {
            write!(f, ", fetch={fetch}")?;
        }
        if self.reversed {
            write!(f, ", order=newest first")?;
        }
        if let Some(pushed) = &self.pushed {
            write!(f, ", pruning=[{pushed}]")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for AsyncEventsExec {
    fn name(&self) -> &str {
        "AsyncEventsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        apply_expression_roots(self.pushed.iter(), f)
    }

    fn replace_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn fetch(&self) -> Option<usize> {
        self.fetch
    }

    fn with_fetch(&self, limit: Option<usize>) -> Option<Arc<dyn ExecutionPlan>> {
        let mut plan = self.clone();
        plan.fetch = limit;
        Some(Arc::new(plan))
    }

    fn try_pushdown_sort(
        &self,
        order: &[PhysicalSortExpr],
    ) -> Result<SortOrderPushdownResult<Arc<dyn ExecutionPlan>>> {
        let (Some(first), Some(time)) = (order.first(), self.time_index()) else {
            return Ok(SortOrderPushdownResult::Unsupported);
        };
        let on_time = first
            .expr
            .downcast_ref::<ColumnExpr>()
            .is_some_and(|c| c.index() == time && c.name() == Column::Time.name());
        if !on_time || !first.options.descending {
            // Ascending order is already declared per partition.
            return Ok(SortOrderPushdownResult::Unsupported);
        }
        let mut plan = self.clone();
        plan.reversed = !self.reversed;
        if plan.reversed {
            // Newest first serves a TopK (`ORDER BY time DESC LIMIT n`), whose threshold only
            // tightens as it sees rows: each partition reads its newest block before it is
            // known, so a stream read by one partition reads the fewest blocks.
            plan.partitions = Arc::new(self.state.plan.partitions.per_stream());
        }
        plan.props = Arc::new(properties(&self.state, &plan.partitions, plan.reversed));
        Ok(SortOrderPushdownResult::Inexact {
            inner: Arc::new(plan),
        })
    }

    fn handle_child_pushdown_result(
        &self,
        _phase: FilterPushdownPhase,
        result: ChildPushdownResult,
        _config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn ExecutionPlan>>> {
        let filters: Vec<Arc<dyn PhysicalExpr>> = result
            .parent_filters
            .into_iter()
            .map(|f| f.filter)
            .collect();
        if filters.is_empty() {
            return Ok(FilterPushdownPropagation::with_parent_pushdown_result(
                vec![],
            ));
        }
        let n = filters.len();
        let on_time: Vec<Arc<dyn PhysicalExpr>> = filters
            .iter()
            .flat_map(split_conjunction)
            .filter(|e| {
                let columns = collect_columns(e);
                !columns.is_empty() && columns.iter().all(|c| c.name() == Column::Time.name())
            })
            .cloned()
            .collect();
        if on_time.is_empty() {
            return Ok(FilterPushdownPropagation::with_parent_pushdown_result(
                vec![PushedDown::No; n],
            ));
        }
        let mut plan = self.clone();
        plan.pushed = Some(conjunction(self.pushed.iter().cloned().chain(on_time)));
        // Only used to skip blocks: the filters stay above, where they are applied exactly.
        Ok(
            FilterPushdownPropagation::with_parent_pushdown_result(vec![PushedDown::No; n])
                .with_updated_node(Arc::new(plan) as Arc<dyn ExecutionPlan>),
        )
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let metrics = PartitionMetrics::new(&self.metrics, partition);
        let planned = self.partitions.get(partition);
        if let Some(p) = planned {
            metrics.blocks_listed.add(p.listed);
            metrics.blocks_pruned.add(p.listed - p.blocks.len());
        }
        let ordered =
            !self.reversed && self.time_index().is_some() && self.state.options.declare_time_order;
        let runtime = self.runtime(&context)?;
        runtime.registration.use_pool(context.memory_pool());
        let args = PartitionArgs {
            runtime,
            state: self.state.clone(),
            partitions: self.partitions.clone(),
            partition,
            reversed: self.reversed,
            ordered,
            fetch: self.fetch,
            pushed: self.pushed.clone(),
            batch_size: context.session_config().batch_size(),
            metrics,
            memory: MemoryConsumer::new(format!(
                "async_events({}) partition {partition}",
                self.state.process_id
            ))
            .register(context.memory_pool()),
        };
        if self.pushed.is_some() {
            // Filters pushed from above (a TopK threshold) tighten only as they see rows: read
            // in step with the consumer, a block at a time, rather than ahead of it.
            return Ok(partition_stream(args));
        }
        Ok(in_own_task(self.state.schema().clone(), args))
    }
}
