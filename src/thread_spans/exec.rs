//! [`ThreadSpansExec`]: reads the blocks of thread streams in recording order and pairs their
//! scope events into spans ([`CallTree`]), one chain of blocks at a time.
//!
//! Each partition reads whole streams (a stack is per thread), its blocks fetched two ahead and
//! decoded one by one: memory holds one block, the open scopes and the completed spans waiting
//! for their tree (at most [`CallTree::DEFAULT_BUDGET`]).

use super::call_tree::{CallTree, Repairs, ScopeEvent};
use super::columns::{Chain, Flavor, ScopeStrings, SpanRows};
use crate::error::Error;
use crate::format::{
    AsyncEventDecoder, FormatError, RowFilter, StreamLayout, TickConverter, scope_hash,
};
use crate::lake::{BlockRecord, Lake, LakeLocation, LakeRegistry, StreamRecord};
use crate::provider::ScanOptions;
use crate::provider::prefetch::fetch_in_order;
use crate::time_bounds::TimeBounds;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, Time,
};
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};
use uuid::Uuid;

/// One thread stream to read: its metadata, compiled layout and blocks in recording order.
#[derive(Debug, Clone)]
pub(crate) struct StreamPlan {
    pub stream: StreamRecord,
    pub layout: Arc<StreamLayout>,
    pub blocks: Vec<BlockRecord>,
    /// Whether the last block listed is the stream's last.
    pub reaches_stream_end: bool,
}

impl StreamPlan {
    /// The `thread-name` property, if the stream has one.
    fn thread_name(&self) -> Option<&str> {
        self.stream.property("thread-name")
    }

    /// micromegas's name for the thread's root span: `name-id`, or the thread id, or the
    /// stream id.
    fn root_name(&self) -> String {
        let id = self
            .stream
            .property("thread-id")
            .map_or_else(|| self.stream.stream_id.to_string(), str::to_owned);
        match self.thread_name() {
            Some(name) => format!("{name}-{id}"),
            None => id,
        }
    }
}

/// Pairs the scope events of thread streams into spans.
///
/// The plan is data (the lake's URLs, the clock, the streams' metadata and blocks of each
/// partition), so the codec can send it to other processes; the lake is the one the table was
/// planned on, or, for a plan decoded elsewhere, the one registered there under the same URLs
/// ([`LakeRegistry::resolve`]), found when the plan first executes.
#[derive(Debug)]
pub struct ThreadSpansExec {
    location: LakeLocation,
    lake: OnceLock<Lake>,
    process_id: Uuid,
    clock: TickConverter,
    partitions: Vec<Vec<StreamPlan>>,
    flavor: Flavor,
    /// Output columns, as indices of the flavor's schema.
    columns: Vec<usize>,
    /// Output columns, as indices of the columns built ([`Flavor::sources`]).
    projection: Vec<usize>,
    schema: SchemaRef,
    options: ScanOptions,
    /// The rows kept by the filters on `name`, `target` and `depth` pushed into the scan.
    rows: RowFilter,
    /// The range rows must overlap ([`Chain::overlap`]).
    overlap: TimeBounds,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

/// What a [`ThreadSpansExec`] is made of, apart from what executes it.
#[derive(Debug, Clone)]
pub(crate) struct ThreadSpansParts {
    pub location: LakeLocation,
    pub process_id: Uuid,
    pub clock: TickConverter,
    /// The streams each partition reads, in order.
    pub partitions: Vec<Vec<StreamPlan>>,
    pub flavor: Flavor,
    /// Output columns, as indices of the flavor's schema.
    pub columns: Vec<usize>,
    pub overlap: TimeBounds,
    pub options: ScanOptions,
    pub rows: RowFilter,
}

/// Streams dealt to at most `n` groups (at least one), the largest (in payload bytes) first,
/// each to the least loaded group.
fn deal(mut streams: Vec<StreamPlan>, n: usize) -> Vec<Vec<StreamPlan>> {
    let size = |s: &StreamPlan| s.blocks.iter().map(|b| b.payload_size).sum::<i64>();
    let n = n.clamp(1, streams.len().max(1));
    let mut groups: Vec<Vec<StreamPlan>> = vec![Vec::new(); n];
    let mut load = vec![0i64; n];
    streams.sort_by_key(|s| std::cmp::Reverse(size(s)));
    for s in streams {
        let i = (0..n).min_by_key(|&i| load[i]).unwrap_or(0);
        load[i] += size(&s);
        groups[i].push(s);
    }
    groups
}

/// Counters of one partition, shown by `EXPLAIN ANALYZE`.
#[derive(Debug, Clone)]
struct ThreadMetrics {
    blocks_read: Count,
    blocks_skipped: Count,
    bytes_fetched: Count,
    thread_events: Count,
    chains: Count,
    spans: Count,
    rows_filtered: Count,
    closed_by_outer_end: Count,
    dropped_ends: Count,
    unmatched_after_flush: Count,
    decode_time: Time,
}

impl ThreadMetrics {
    fn new(set: &ExecutionPlanMetricsSet, partition: usize) -> Self {
        let count = |name: &'static str| MetricBuilder::new(set).counter(name, partition);
        Self {
            blocks_read: count("blocks_read"),
            blocks_skipped: count("blocks_skipped"),
            bytes_fetched: count("bytes_fetched"),
            thread_events: count("thread_events"),
            chains: count("chains"),
            spans: count("spans"),
            rows_filtered: count("rows_filtered"),
            closed_by_outer_end: count("scopes_closed_by_outer_end"),
            dropped_ends: count("unmatched_ends_dropped"),
            unmatched_after_flush: count("unmatched_ends_after_flush"),
            decode_time: MetricBuilder::new(set).subset_time("decode_time", partition),
        }
    }

    fn add(&self, repairs: Repairs) {
        self.closed_by_outer_end
            .add(repairs.closed_by_outer_end as usize);
        self.dropped_ends.add(repairs.dropped_ends as usize);
        self.unmatched_after_flush
            .add(repairs.unmatched_after_flush as usize);
    }
}

impl ThreadSpansExec {
    /// The plan keeping only the rows `rows` passes on its names, targets and depths (its other
    /// fields do not apply to thread spans and must be empty).
    pub(crate) fn with_row_filter(mut self, rows: RowFilter) -> Self {
        self.rows = rows;
        self
    }

    /// The plan of `streams`, dealt to at most `target_partitions` partitions ([`deal`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        lake: Lake,
        process_id: Uuid,
        clock: TickConverter,
        streams: Vec<StreamPlan>,
        target_partitions: usize,
        flavor: Flavor,
        columns: Vec<usize>,
        overlap: TimeBounds,
        options: &ScanOptions,
    ) -> Self {
        let parts = ThreadSpansParts {
            location: LakeLocation::of(&lake),
            process_id,
            clock,
            partitions: deal(streams, target_partitions),
            flavor,
            columns,
            overlap,
            options: options.clone(),
            rows: RowFilter::all(),
        };
        let plan = Self::from_parts(parts);
        let _ = plan.lake.set(lake);
        plan
    }

    /// A plan rebuilt from its data (a decoded plan): its lake is found when it executes.
    pub(crate) fn from_parts(parts: ThreadSpansParts) -> Self {
        let ThreadSpansParts {
            location,
            process_id,
            clock,
            partitions,
            flavor,
            columns,
            overlap,
            options,
            rows,
        } = parts;
        let partitions = match partitions.is_empty() {
            true => vec![Vec::new()],
            false => partitions,
        };
        let full = super::thread_spans_schema(flavor);
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(
            columns
                .iter()
                .map(|&i| full.field(i).clone())
                .collect::<Vec<_>>(),
        ));
        // From indices of the flavor's schema to indices of the columns built.
        let projection = columns.iter().map(|&i| flavor.sources()[i]).collect();
        let props = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(partitions.len()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            location,
            lake: OnceLock::new(),
            process_id,
            clock,
            partitions,
            flavor,
            columns,
            projection,
            schema,
            options,
            rows,
            overlap,
            props,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The plan's data, as [`Self::from_parts`] takes it.
    #[cfg_attr(not(feature = "codec"), allow(dead_code))]
    pub(crate) fn parts(&self) -> ThreadSpansParts {
        self.parts_with(self.partitions.clone())
    }

    /// The plan's data with other partitions.
    fn parts_with(&self, partitions: Vec<Vec<StreamPlan>>) -> ThreadSpansParts {
        ThreadSpansParts {
            location: self.location.clone(),
            process_id: self.process_id,
            clock: self.clock,
            partitions,
            flavor: self.flavor,
            columns: self.columns.clone(),
            overlap: self.overlap,
            options: self.options.clone(),
            rows: self.rows.clone(),
        }
    }

    /// The same plan cut for `tasks` tasks of a distributed engine: the streams dealt to the
    /// tasks as to partitions ([`deal`]), each task's streams dealt again to its partitions. A
    /// stream is read by one task, whole. Every variant has as many partitions (at most
    /// `target_partitions`), some of them empty where a task has fewer streams.
    #[cfg_attr(not(feature = "distributed"), allow(dead_code))]
    pub(crate) fn task_variants(&self, tasks: usize, target_partitions: usize) -> Vec<Self> {
        let streams = self.partitions.iter().flatten().cloned().collect();
        let per_task = deal(streams, tasks);
        let most = per_task.iter().map(Vec::len).max().unwrap_or(0);
        let width = target_partitions.clamp(1, most.max(1));
        per_task
            .into_iter()
            .map(|mine| {
                let mut partitions = deal(mine, width);
                partitions.resize_with(width, Vec::new);
                let variant = Self::from_parts(self.parts_with(partitions));
                if let Some(lake) = self.lake.get() {
                    let _ = variant.lake.set(lake.clone());
                }
                variant
            })
            .collect()
    }

    /// The lake the table was planned on, or the one registered under the plan's location.
    fn lake(&self, context: &TaskContext) -> Result<Lake> {
        if let Some(lake) = self.lake.get() {
            return Ok(lake.clone());
        }
        let registry = context.session_config().get_extension::<LakeRegistry>();
        let lake = LakeRegistry::resolve(registry, &self.location)?;
        Ok(self.lake.get_or_init(|| lake).clone())
    }

    /// Thread streams read, over all partitions.
    pub fn streams(&self) -> usize {
        self.partitions.iter().map(Vec::len).sum()
    }

    /// Blocks read, over all partitions.
    pub fn blocks(&self) -> usize {
        self.partitions
            .iter()
            .flatten()
            .map(|s| s.blocks.len())
            .sum()
    }
}

impl DisplayAs for ThreadSpansExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "ThreadSpansExec: process={}, streams={}, blocks={}, partitions={}",
            self.process_id,
            self.streams(),
            self.blocks(),
            self.partitions.len()
        )
    }
}

impl ExecutionPlan for ThreadSpansExec {
    fn name(&self) -> &str {
        "ThreadSpansExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            internal_err!("ThreadSpansExec has no children")
        }
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let Some(streams) = self.partitions.get(partition) else {
            return internal_err!(
                "ThreadSpansExec has {} partitions, asked for {partition}",
                self.partitions.len()
            );
        };
        let reader = PartitionReader {
            lake: self.lake(&context)?,
            process_id: self.process_id,
            clock: self.clock,
            streams: streams.clone(),
            flavor: self.flavor,
            projection: self.projection.clone(),
            schema: self.schema.clone(),
            batch_size: context.session_config().batch_size(),
            skip_corrupt_blocks: self.options.skip_corrupt_blocks,
            inflate_limit: self.options.max_inflated_bytes,
            prefetch_bytes: self.options.prefetch_bytes,
            rows: self.rows.clone(),
            overlap: self.overlap,
            metrics: ThreadMetrics::new(&self.metrics, partition),
        };
        let mut builder = RecordBatchReceiverStreamBuilder::new(self.schema.clone(), 2);
        let tx = builder.tx();
        builder.spawn(async move {
            reader
                .run(|batch| {
                    let tx = tx.clone();
                    async move { tx.send(Ok(batch)).await.is_ok() }
                })
                .await
        });
        Ok(builder.build())
    }
}

/// What one partition reads and how it builds its rows.
struct PartitionReader {
    lake: Lake,
    process_id: Uuid,
    clock: TickConverter,
    streams: Vec<StreamPlan>,
    flavor: Flavor,
    projection: Vec<usize>,
    schema: SchemaRef,
    batch_size: usize,
    skip_corrupt_blocks: bool,
    inflate_limit: usize,
    prefetch_bytes: usize,
    rows: RowFilter,
    overlap: TimeBounds,
    metrics: ThreadMetrics,
}

/// The chain being paired: its tree and time range.
struct OpenChain {
    tree: CallTree,
    root_name: String,
    begin: i64,
    end: i64,
}

/// For each block of a stream, the end (ticks) of its chain: blocks chain while each begins
/// before the latest end so far (micromegas's contiguous block chains).
fn chain_ends(blocks: &[BlockRecord]) -> Vec<i64> {
    let mut ends = vec![0; blocks.len()];
    let mut start = 0;
    let mut end: Option<i64> = None;
    for (i, block) in blocks.iter().enumerate() {
        if let Some(e) = end
            && block.begin_ticks > e
        {
            ends[start..i].fill(e);
            start = i;
            end = None;
        }
        end = Some(end.map_or(block.end_ticks, |e| e.max(block.end_ticks)));
    }
    if let Some(e) = end {
        ends[start..].fill(e);
    }
    ends
}

impl PartitionReader {
    /// Reads every stream; `send` takes each batch and says whether to go on.
    async fn run<F, Fut>(self, send: F) -> Result<()>
    where
        F: Fn(datafusion::arrow::array::RecordBatch) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let mut decoder = AsyncEventDecoder::new().with_inflate_limit(self.inflate_limit);
        let mut rows = SpanRows::new(self.flavor, self.rows.clone());
        for plan in &self.streams {
            let stream_id = plan.stream.stream_id.to_string();
            let thread_name = plan.thread_name();
            let root_name = plan.root_name();
            let root_hash = scope_hash(&root_name, "", "", 0);
            let chain_end = chain_ends(&plan.blocks);
            let mut chain_of: Option<i64> = None;
            let mut scopes: HashMap<u32, ScopeStrings> = HashMap::new();
            let mut chain: Option<OpenChain> = None;
            let lake = self.lake.clone();
            let blocks = plan.blocks.iter().cloned();
            let fetches = fetch_in_order(blocks, self.prefetch_bytes, |block| {
                let lake = lake.clone();
                async move { lake.fetch_blob(&block).await }
            });
            let mut fetches = std::pin::pin!(fetches);
            let last = plan.blocks.len();
            let mut index = 0;
            while let Some((block, blob)) = fetches.next().await {
                let this_chain = chain_end[index];
                index += 1;
                // A block that does not touch the chain's end starts a new chain (micromegas's
                // contiguous block chains); so does a block that could not be read.
                let blob = match blob.map_err(DataFusionError::from)? {
                    Some(blob) => blob,
                    None => {
                        self.metrics.blocks_skipped.add(1);
                        self.close_chain(
                            chain.take(),
                            plan,
                            &stream_id,
                            &scopes,
                            &mut rows,
                            false,
                        )?;
                        continue;
                    }
                };
                self.metrics.blocks_read.add(1);
                self.metrics.bytes_fetched.add(blob.len());
                if chain_of != Some(this_chain) {
                    self.close_chain(chain.take(), plan, &stream_id, &scopes, &mut rows, false)?;
                    chain_of = Some(this_chain);
                }
                let open = chain.get_or_insert_with(|| {
                    self.metrics.chains.add(1);
                    OpenChain {
                        tree: CallTree::new(root_hash, CallTree::DEFAULT_BUDGET),
                        root_name: root_name.clone(),
                        begin: self.clock.delta_to_ns(block.begin_ticks),
                        end: self.clock.delta_to_ns(this_chain),
                    }
                });
                let decoded = {
                    let _timer = self.metrics.decode_time.timer();
                    decode_block(
                        &mut decoder,
                        plan,
                        &block,
                        &blob,
                        &self.clock,
                        open,
                        &mut scopes,
                        &mut rows,
                        &stream_id,
                        thread_name,
                        self.overlap,
                    )
                };
                match decoded {
                    Ok(events) => self.metrics.thread_events.add(events),
                    Err(BlockFailure::Format(source)) if self.skip_corrupt_blocks => {
                        log::warn!(
                            "skipped block {} of stream {} (process {}): {source}",
                            block.block_id,
                            block.stream_id,
                            self.process_id
                        );
                        self.metrics.blocks_skipped.add(1);
                        // What the block held before the defect is in the tree: end the chain.
                        self.close_chain(
                            chain.take(),
                            plan,
                            &stream_id,
                            &scopes,
                            &mut rows,
                            false,
                        )?;
                    }
                    Err(BlockFailure::Format(source)) => {
                        return Err(Error::Block {
                            process_id: self.process_id,
                            stream_id: block.stream_id,
                            block_id: block.block_id,
                            source,
                        }
                        .into());
                    }
                    Err(BlockFailure::Rows(e)) => {
                        return Err(e.context(format!(
                            "block {} of stream {} (process {})",
                            block.block_id, block.stream_id, self.process_id
                        )));
                    }
                }
                if index == last {
                    let end = plan.reaches_stream_end;
                    self.close_chain(chain.take(), plan, &stream_id, &scopes, &mut rows, end)?;
                }
                self.metrics.rows_filtered.add(rows.take_filtered());
                if rows.len() >= self.batch_size {
                    self.metrics.spans.add(rows.len());
                    if !send(rows.finish(&self.projection, &self.schema)?).await {
                        return Ok(());
                    }
                }
            }
            self.close_chain(chain.take(), plan, &stream_id, &scopes, &mut rows, false)?;
        }
        self.metrics.rows_filtered.add(rows.take_filtered());
        if rows.len() > 0 {
            self.metrics.spans.add(rows.len());
            send(rows.finish(&self.projection, &self.schema)?).await;
        }
        Ok(())
    }

    /// Ends a chain: its open scopes end with it, its remaining rows are appended.
    fn close_chain(
        &self,
        chain: Option<OpenChain>,
        plan: &StreamPlan,
        stream_id: &str,
        scopes: &HashMap<u32, ScopeStrings>,
        rows: &mut SpanRows,
        reaches_stream_end: bool,
    ) -> Result<()> {
        let Some(open) = chain else {
            return Ok(());
        };
        let context = Chain {
            scopes,
            stream_id,
            thread_name: plan.thread_name(),
            root_name: &open.root_name,
            begin: open.begin,
            end: open.end,
            reaches_stream_end,
            overlap: self.overlap,
        };
        let repairs = open.tree.finish(&mut rows.chain(&context))?;
        self.metrics.add(repairs);
        Ok(())
    }
}

/// Why a block's events could not be paired.
enum BlockFailure {
    /// The block itself is malformed.
    Format(FormatError),
    /// Pairing or building the rows failed.
    Rows(DataFusionError),
}

/// Pairs the thread events of one block into the open chain; returns how many there were.
#[allow(clippy::too_many_arguments)]
fn decode_block(
    decoder: &mut AsyncEventDecoder,
    plan: &StreamPlan,
    block: &BlockRecord,
    blob: &[u8],
    clock: &TickConverter,
    open: &mut OpenChain,
    scopes: &mut HashMap<u32, ScopeStrings>,
    rows: &mut SpanRows,
    stream_id: &str,
    thread_name: Option<&str>,
    overlap: TimeBounds,
) -> std::result::Result<usize, BlockFailure> {
    let mut failure: Option<DataFusionError> = None;
    let (begin, end) = (open.begin, open.end);
    let OpenChain {
        tree, root_name, ..
    } = open;
    let summary =
        decoder.decode_thread_blob(&plan.layout, blob, block.object_offset, clock, |event| {
            scopes.entry(event.hash).or_insert_with(|| ScopeStrings {
                name: event.name().into(),
                target: event.target().into(),
                filename: event.filename().into(),
                line: event.line,
            });
            let context = Chain {
                scopes,
                stream_id,
                thread_name,
                root_name: root_name.as_str(),
                begin,
                end,
                reaches_stream_end: false,
                overlap,
            };
            let fields = ScopeEvent {
                id: event.id,
                time: event.time,
                event_type: event.event_type,
                hash: event.hash,
            };
            let properties = || {
                event
                    .properties()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect()
            };
            tree.push(fields, properties, &mut rows.chain(&context))
                .map_err(|e| {
                    let detail = e.to_string();
                    failure = Some(e);
                    FormatError::Output { detail }
                })
        });
    match (summary, failure) {
        (_, Some(e)) => Err(BlockFailure::Rows(e)),
        (Ok(summary), None) => Ok(summary.events),
        (Err(e), None) => Err(BlockFailure::Format(e)),
    }
}
