//! The stream of one partition: blocks of one thread stream, fetched a few ahead, decoded into
//! bounded batches.
//!
//! Before each block is fetched, the filters pushed from above (the TopK threshold of
//! `ORDER BY time DESC LIMIT n`, join filters) are checked against the block's time bounds. The
//! partition stops fetching once it has produced `fetch` rows, and dropping the stream drops the
//! fetches in flight.

use super::boundaries::Backwards;
use super::handles::ScanHandles;
use super::plan::{Partitions, ScanState};
use super::shared::Obtained;
use crate::error::Error;
use crate::format::{
    AsyncEventDecoder, BlockIds, DecodeSummary, DecompressedBlock, EventBatchBuilder,
};
use crate::lake::BlockRecord;
use bytes::Bytes;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, RecordBatch, TimestampNanosecondArray, UInt64Array,
};
use datafusion::arrow::compute::{sort_to_indices, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatchOptions;
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr_common::physical_expr::snapshot_generation;
use datafusion::physical_optimizer::pruning::{PruningPredicate, PruningPredicateBuilder};
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricType, Time,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// The scan's metrics for one partition, under the names EXPLAIN ANALYZE shows.
#[derive(Debug, Clone)]
pub(crate) struct PartitionMetrics {
    pub blocks_listed: Count,
    pub blocks_pruned: Count,
    pub blocks_fetched: Count,
    pub blocks_shared: Count,
    pub blocks_missing: Count,
    pub blocks_corrupt: Count,
    pub bytes_fetched: Count,
    pub events_decoded: Count,
    pub rows_out: Count,
    pub fetch_time: Time,
    pub decode_time: Time,
}

impl PartitionMetrics {
    pub fn new(set: &ExecutionPlanMetricsSet, partition: usize) -> Self {
        let counter = |name: &'static str| {
            MetricBuilder::new(set)
                .with_type(MetricType::Summary)
                .counter(name, partition)
        };
        let time = |name: &'static str| {
            MetricBuilder::new(set)
                .with_type(MetricType::Summary)
                .subset_time(name, partition)
        };
        Self {
            blocks_listed: counter("blocks_listed"),
            blocks_pruned: counter("blocks_pruned"),
            blocks_fetched: counter("blocks_fetched"),
            blocks_shared: counter("blocks_shared"),
            blocks_missing: counter("blocks_missing"),
            blocks_corrupt: counter("blocks_corrupt"),
            bytes_fetched: counter("bytes_fetched"),
            events_decoded: counter("events_decoded"),
            rows_out: counter("rows_out"),
            fetch_time: time("fetch_time"),
            decode_time: time("decode_time"),
        }
    }
}

pub(crate) struct PartitionArgs {
    pub state: Arc<ScanState>,
    pub handles: Arc<ScanHandles>,
    pub partitions: Arc<Partitions>,
    pub partition: usize,
    pub reversed: bool,
    /// Whether the partition declared `time` ordering (then it is checked).
    pub ordered: bool,
    pub fetch: Option<usize>,
    pub pushed: Option<Arc<dyn PhysicalExpr>>,
    pub batch_size: usize,
    pub metrics: PartitionMetrics,
}

/// A fetched block: its blob, or its buffers decompressed once for several scans.
enum Payload {
    Blob(Bytes),
    Decompressed(Arc<DecompressedBlock>),
}

struct Fetched {
    block: BlockRecord,
    /// `None`: the blob was missing and the lake skips missing blobs.
    payload: Option<Payload>,
}

type FetchFuture = Pin<Box<dyn Future<Output = Result<Fetched, Error>> + Send>>;

/// A block fetch running as a task of its own, aborted when dropped.
///
/// Fetches hold resources shared beyond their partition: a permit of the scan's fetch
/// semaphore, and the lock of a block shared with another scan of the query while it loads.
/// Consumers poll partitions unevenly (a sort-preserving merge polls one partition at a time, a
/// join reads one side before the other), so a fetch that only ran when its partition is polled
/// could hold them while nobody polls it, and stall every other partition: as a task it
/// finishes, and releases them, on its own.
struct SpawnedFetch(tokio::task::JoinHandle<Result<Fetched, Error>>);

impl Future for SpawnedFetch {
    type Output = Result<Fetched, Error>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|joined| match joined {
            Ok(result) => result,
            Err(e) => Err(Error::Internal(format!("a block fetch task failed: {e}"))),
        })
    }
}

impl Drop for SpawnedFetch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Prefetched blocks per partition.
const AHEAD: usize = 2;

struct Reader {
    args: PartitionArgs,
    blocks: VecDeque<BlockRecord>,
    pending: FuturesOrdered<FetchFuture>,
    decoder: AsyncEventDecoder,
    builder: EventBatchBuilder,
    ready: VecDeque<RecordBatch>,
    /// Rows handed downstream.
    emitted: usize,
    /// Highest event time decoded so far (ordering check).
    last_time: Option<(i64, uuid::Uuid)>,
    needs_sort: bool,
    pruning: TimePruning,
    done: bool,
}

pub(crate) fn partition_stream(args: PartitionArgs) -> SendableRecordBatchStream {
    let schema = args.state.schema().clone();
    let mut blocks: VecDeque<BlockRecord> = args
        .partitions
        .get(args.partition)
        .map(|p| p.blocks.iter().cloned().collect())
        .unwrap_or_default();
    if args.reversed {
        blocks.make_contiguous().reverse();
    }
    let pruning = TimePruning::new(args.pushed.clone(), schema.clone());
    let reader = Reader {
        builder: EventBatchBuilder::new(args.state.projection.columns),
        pruning,
        args,
        blocks,
        pending: FuturesOrdered::new(),
        decoder: AsyncEventDecoder::new(),
        ready: VecDeque::new(),
        emitted: 0,
        last_time: None,
        needs_sort: false,
        done: false,
    };
    let stream = futures::stream::unfold(Box::new(reader), |mut reader| async move {
        reader.next().await.map(|item| (item, reader))
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, stream))
}

fn block_error(
    state: &ScanState,
    block: &BlockRecord,
    source: crate::format::FormatError,
) -> Error {
    Error::Block {
        process_id: state.process_id,
        stream_id: block.stream_id,
        block_id: block.block_id,
        source,
    }
}

/// Fetches a block, or obtains it from another scan of the same query that reads it too.
async fn fetch(
    state: Arc<ScanState>,
    handles: Arc<ScanHandles>,
    block: BlockRecord,
    metrics: PartitionMetrics,
) -> Result<Fetched, Error> {
    let _permit = handles
        .fetches
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| Error::Internal("the scan's fetch semaphore was closed".into()))?;
    let get = || async {
        let timer = metrics.fetch_time.timer();
        let blob = handles.lake.fetch_blob(&block).await?;
        drop(timer);
        match &blob {
            Some(b) => {
                metrics.blocks_fetched.add(1);
                metrics.bytes_fetched.add(b.len());
            }
            None => {
                log::warn!(
                    "skipped block {} of stream {} (process {}): its blob is missing from the object store",
                    block.block_id,
                    block.stream_id,
                    state.process_id
                );
                metrics.blocks_missing.add(1)
            }
        }
        Ok::<_, Error>(blob)
    };
    let load = async {
        let Some(blob) = get().await? else {
            return Ok(None);
        };
        let _timer = metrics.decode_time.timer();
        DecompressedBlock::from_blob(&blob, true)
            .map(|d| Some(Arc::new(d)))
            .map_err(|e| block_error(&state, &block, e))
    };
    let payload = match handles.registration.obtain(block.block_id, load).await? {
        Obtained::Alone => get().await?.map(Payload::Blob),
        Obtained::Loaded(shared) => shared.map(Payload::Decompressed),
        Obtained::Reused(shared) => {
            metrics.blocks_shared.add(1);
            shared.map(Payload::Decompressed)
        }
    };
    handles.registration.release(block.block_id);
    Ok(Fetched { block, payload })
}

/// Time bounds of one block, for a pruning predicate on `time`.
struct BlockStats {
    min: i64,
    max: i64,
}

impl BlockStats {
    fn time(&self, column: &datafusion::common::Column, v: i64) -> Option<ArrayRef> {
        (column.name == "time").then(|| {
            Arc::new(TimestampNanosecondArray::from(vec![v]).with_timezone("+00:00")) as ArrayRef
        })
    }
}

impl PruningStatistics for BlockStats {
    fn min_values(&self, column: &datafusion::common::Column) -> Option<ArrayRef> {
        self.time(column, self.min)
    }
    fn max_values(&self, column: &datafusion::common::Column) -> Option<ArrayRef> {
        self.time(column, self.max)
    }
    fn num_containers(&self) -> usize {
        1
    }
    fn null_counts(&self, column: &datafusion::common::Column) -> Option<ArrayRef> {
        (column.name == "time").then(|| Arc::new(UInt64Array::from(vec![0u64])) as ArrayRef)
    }
    fn row_counts(&self) -> Option<ArrayRef> {
        None
    }
    fn contained(
        &self,
        _column: &datafusion::common::Column,
        _values: &HashSet<ScalarValue>,
    ) -> Option<BooleanArray> {
        None
    }
}

/// Prunes blocks by their time bounds with the filters pushed from above.
///
/// The scan keeps only the pushed conjuncts on `time` alone (the statistics of a block are its
/// time bounds). The pruning predicate is built once, and again only when a dynamic filter
/// among them (the TopK threshold) has changed since.
struct TimePruning {
    /// The pushed filters on `time`, if any.
    filter: Option<Arc<dyn PhysicalExpr>>,
    generation: u64,
    predicate: Option<PruningPredicate>,
    schema: SchemaRef,
    /// Pruning predicates built so far.
    builds: usize,
}

impl TimePruning {
    fn new(filter: Option<Arc<dyn PhysicalExpr>>, schema: SchemaRef) -> Self {
        let mut pruning = Self {
            filter,
            generation: 0,
            predicate: None,
            schema,
            builds: 0,
        };
        pruning.rebuild();
        pruning
    }

    fn rebuild(&mut self) {
        let Some(filter) = &self.filter else {
            return;
        };
        self.generation = snapshot_generation(filter);
        self.builds += 1;
        self.predicate = PruningPredicateBuilder::new()
            .with_file_schema(self.schema.clone())
            .try_build(filter.clone())
            .ok()
            .filter(|p| !p.always_true());
    }

    /// Whether the filters prove that no row of a block with these time bounds can pass.
    fn cannot_match(&mut self, min: i64, max: i64) -> bool {
        let Some(filter) = &self.filter else {
            return false;
        };
        if snapshot_generation(filter) != self.generation {
            self.rebuild();
        }
        self.predicate
            .as_ref()
            .is_some_and(|p| matches!(p.prune(&BlockStats { min, max }).as_deref(), Ok([false])))
    }
}

impl Reader {
    fn limit_reached(&self) -> bool {
        self.args
            .fetch
            .is_some_and(|f| self.emitted + self.builder.len() >= f)
    }

    /// Starts fetches up to `AHEAD` in flight, skipping blocks the pushed filters exclude.
    fn refill(&mut self) {
        while self.pending.len() < AHEAD && !self.limit_reached() {
            let Some(block) = self.blocks.pop_front() else {
                return;
            };
            let (min, max) = self.args.state.time_bounds(&block);
            if self.pruning.cannot_match(min, max) {
                self.args.metrics.blocks_pruned.add(1);
                self.args.handles.registration.release(block.block_id);
                continue;
            }
            let future = fetch(
                self.args.state.clone(),
                self.args.handles.clone(),
                block,
                self.args.metrics.clone(),
            );
            self.pending
                .push_back(Box::pin(SpawnedFetch(tokio::spawn(future))));
        }
    }

    /// Decodes a fetched block into the current batch.
    fn decode(&mut self, fetched: Fetched) -> Result<(), Error> {
        let Some(payload) = fetched.payload else {
            return Ok(());
        };
        let state = &self.args.state;
        let Some((stream, layout)) =
            (self.args.partitions.get(self.args.partition)).and_then(|p| {
                Some((
                    state.plan.streams.get(p.stream)?,
                    self.args.handles.layouts.get(p.stream)?,
                ))
            })
        else {
            return Ok(());
        };
        let block = &fetched.block;
        let block_id = block.block_id.to_string();
        let ids = BlockIds {
            stream_id: &stream.stream_id_text,
            block_id: &block_id,
        };
        let (clock, filter) = (&state.plan.clock, &state.predicate.row);
        let timer = self.args.metrics.decode_time.timer();
        let result = match &payload {
            Payload::Blob(blob) => {
                self.decoder
                    .decode_blob(layout, blob, ids, clock, filter, &mut self.builder)
            }
            Payload::Decompressed(d) => {
                self.decoder
                    .decode(layout, d, ids, clock, filter, &mut self.builder)
            }
        };
        drop(timer);
        match result {
            Ok(summary) => {
                self.args.metrics.events_decoded.add(summary.events);
                self.check_order(block, &summary)
            }
            Err(e) if state.options.skip_corrupt_blocks && e.is_corrupt_data() => {
                log::warn!(
                    "skipped corrupt block {} of stream {} (process {}): {e}",
                    block.block_id,
                    block.stream_id,
                    state.process_id
                );
                self.args.metrics.blocks_corrupt.add(1);
                Ok(())
            }
            Err(e) => Err(block_error(state, block, e)),
        }
    }

    /// Keeps the declared `time` order true: rows of a block are sorted if they came out of
    /// order; a block whose events start before the previous block's last one is an error, in
    /// this partition or, for the first rows of a partition, in the one before it of the same
    /// stream (see [`super::boundaries`]).
    fn check_order(&mut self, block: &BlockRecord, summary: &DecodeSummary) -> Result<(), Error> {
        if !self.args.ordered || summary.rows == 0 {
            return Ok(());
        }
        let (Some(min), Some(max)) = (summary.min_time, summary.max_time) else {
            return Ok(());
        };
        if !summary.time_ordered {
            self.needs_sort = true;
        }
        if let Some((last, previous)) = self.last_time
            && min < last
        {
            return Err(self.out_of_order(
                block.stream_id,
                Backwards {
                    first: (min, block.block_id),
                    previous_last: (last, previous),
                },
            ));
        }
        let first_rows = self.last_time.is_none();
        self.last_time = Some((max, block.block_id));
        if first_rows
            && self
                .args
                .partitions
                .previous_in_stream(self.args.partition)
                .is_some()
            && let Some(step) =
                (self.args.handles.boundaries).started(self.args.partition, (min, block.block_id))
        {
            return Err(self.out_of_order(block.stream_id, step));
        }
        Ok(())
    }

    /// This partition read all its blocks: its last rows meet the next partition's first.
    fn check_end_order(&mut self) -> Result<(), Error> {
        let (Some(last), true) = (self.last_time, self.args.ordered) else {
            return Ok(());
        };
        let (partitions, partition) = (&self.args.partitions, self.args.partition);
        if !partitions.has_next_in_stream(partition) {
            return Ok(());
        }
        match self.args.handles.boundaries.ended(partition + 1, last) {
            Some(step) => {
                let stream_id = partitions
                    .get(partition)
                    .and_then(|p| p.blocks.first())
                    .map_or(uuid::Uuid::nil(), |b| b.stream_id);
                Err(self.out_of_order(stream_id, step))
            }
            None => Ok(()),
        }
    }

    fn out_of_order(&self, stream_id: uuid::Uuid, step: Backwards) -> Error {
        Error::OutOfOrder {
            process_id: self.args.state.process_id,
            stream_id,
            block_id: step.first.1,
            previous_block_id: step.previous_last.1,
            first: step.first.0,
            previous_last: step.previous_last.0,
        }
    }

    /// Ends the current batch: sorted if needed, cut into `batch_size` slices.
    fn flush(&mut self) -> Result<(), DataFusionError> {
        if self.builder.is_empty() {
            return Ok(());
        }
        let mut batch = self.builder.finish()?;
        if std::mem::take(&mut self.needs_sort)
            && let Ok(i) = batch.schema().index_of("time")
        {
            let order = sort_to_indices(batch.column(i), None, None)?;
            batch = take_record_batch(&batch, &order)?;
        }
        if let Some(order) = &self.args.state.projection.order {
            // The projection's order and repeats, from the columns decoded in schema order.
            batch = RecordBatch::try_new_with_options(
                self.args.state.schema().clone(),
                order.iter().map(|&i| batch.column(i).clone()).collect(),
                &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
            )?;
        }
        let size = self.args.batch_size.max(1);
        let mut offset = 0;
        while offset < batch.num_rows() {
            let len = size.min(batch.num_rows() - offset);
            self.ready.push_back(batch.slice(offset, len));
            offset += len;
        }
        Ok(())
    }

    /// Hands a batch downstream, cut to what `fetch` still allows.
    fn emit(&mut self, batch: RecordBatch) -> RecordBatch {
        let allowed = self.args.fetch.map_or(usize::MAX, |f| f - self.emitted);
        let batch = if batch.num_rows() > allowed {
            batch.slice(0, allowed)
        } else {
            batch
        };
        self.emitted += batch.num_rows();
        self.args.metrics.rows_out.add(batch.num_rows());
        batch
    }

    fn stop(&mut self) {
        self.done = true;
        self.pending = FuturesOrdered::new();
        self.ready.clear();
        for block in self.blocks.drain(..) {
            self.args.handles.registration.release(block.block_id);
        }
    }

    async fn next(&mut self) -> Option<Result<RecordBatch, DataFusionError>> {
        loop {
            if self.args.fetch.is_some_and(|f| self.emitted >= f) {
                self.stop();
                return None;
            }
            if let Some(batch) = self.ready.pop_front() {
                return Some(Ok(self.emit(batch)));
            }
            if self.done {
                return None;
            }
            self.refill();
            // Keep filling the current batch only with blocks that are already here, and not at
            // all when filters are pushed from above: a TopK threshold only tightens when it
            // sees rows, so blocks are handed over one by one.
            let next = if self.builder.is_empty() || self.args.pushed.is_some() {
                self.pending.next().await
            } else {
                match self.pending.next().now_or_never() {
                    Some(next) => next,
                    None => {
                        if let Err(e) = self.flush() {
                            self.stop();
                            return Some(Err(e));
                        }
                        continue;
                    }
                }
            };
            let result = match next {
                None => {
                    self.done = true;
                    self.check_end_order()
                        .map_err(DataFusionError::from)
                        .and_then(|()| self.flush())
                }
                Some(Ok(fetched)) => self
                    .decode(fetched)
                    .map_err(DataFusionError::from)
                    .and_then(|()| {
                        if self.builder.len() >= self.args.batch_size
                            || self.limit_reached()
                            || self.args.pushed.is_some()
                        {
                            self.flush()
                        } else {
                            Ok(())
                        }
                    }),
                Some(Err(e)) => Err(e.into()),
            };
            if let Err(e) = result {
                self.stop();
                return Some(Err(e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{
        BinaryExpr, Column as ColumnExpr, DynamicFilterPhysicalExpr, lit,
    };

    fn time_schema() -> SchemaRef {
        crate::provider::plan::ScanProjection::new(Some(&[2]))
            .unwrap()
            .schema
    }

    fn time_gt(ns: i64) -> Arc<dyn PhysicalExpr> {
        let time: Arc<dyn PhysicalExpr> = Arc::new(ColumnExpr::new("time", 0));
        let value = ScalarValue::TimestampNanosecond(Some(ns), Some("+00:00".into()));
        Arc::new(BinaryExpr::new(time, Operator::Gt, lit(value)))
    }

    #[test]
    fn a_static_filter_is_compiled_once() {
        let mut pruning = TimePruning::new(Some(time_gt(100)), time_schema());
        for i in 0..50 {
            assert!(pruning.cannot_match(i, i + 10));
            assert!(!pruning.cannot_match(90, 110 + i));
        }
        assert_eq!(pruning.builds, 1);
        let mut none = TimePruning::new(None, time_schema());
        assert!(!none.cannot_match(0, 1));
        assert_eq!(none.builds, 0);
    }

    #[test]
    fn a_dynamic_filter_is_recompiled_only_when_it_changes() {
        let time: Arc<dyn PhysicalExpr> = Arc::new(ColumnExpr::new("time", 0));
        let dynamic = Arc::new(DynamicFilterPhysicalExpr::new(
            vec![time],
            lit(ScalarValue::Boolean(Some(true))),
        ));
        let mut pruning = TimePruning::new(Some(dynamic.clone()), time_schema());
        assert!(!pruning.cannot_match(0, 10));
        assert!(!pruning.cannot_match(0, 10));
        let builds = pruning.builds;
        dynamic.update(time_gt(100)).unwrap();
        assert!(pruning.cannot_match(0, 10), "the new threshold prunes");
        assert!(pruning.cannot_match(20, 30));
        assert!(!pruning.cannot_match(50, 150));
        assert_eq!(pruning.builds, builds + 1);
        dynamic.update(time_gt(200)).unwrap();
        assert!(pruning.cannot_match(50, 150));
        assert_eq!(pruning.builds, builds + 2);
    }
}
