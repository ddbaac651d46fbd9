//! The stream of one partition: blocks of one thread stream, fetched a few ahead within a byte
//! budget ([`super::prefetch`]), decoded into bounded batches.
//!
//! A block of more objects than a batch has rows (a 10 MiB thread buffer holds about 190 000
//! events) is decoded in parts of at most a batch, each handed downstream before the next is
//! decoded: what the partition holds is one inflated block and one batch, whatever the block
//! size. Smaller blocks are decoded whole, as are all blocks when corrupt ones are skipped (a
//! skipped block gives no rows, not the rows before its defect). A part whose rows are out of
//! time order is sorted; a part that starts before the end of the previous part of its block
//! is, like a block that starts before the end of the previous one, an error naming the block
//! when the partition declares `time` order (see `ScanOptions::declare_time_order`).
//!
//! Before each block is fetched, the filters pushed from above (the TopK threshold of
//! `ORDER BY time DESC LIMIT n`, join filters) are checked against the block's time bounds. The
//! partition stops fetching once it has produced `fetch` rows, and dropping the stream drops the
//! fetches in flight.

use super::fetch::{FetchFuture, Fetched, Payload, SpawnedFetch, block_error, fetch};
use super::metrics::PartitionMetrics;
use super::planning::{Partitions, ScanState};
use super::prefetch::{Ahead, blob_bytes};
use super::runtime::ScanRuntime;
use super::stream_edges::StepBack;
use super::time_pruning::TimePruning;
use crate::error::Error;
use crate::format::{
    AsyncEventDecoder, BlockIds, BlockSource, DecodeSummary, EventBatchBuilder, Resume,
};
use crate::lake::BlockRecord;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::{sort_to_indices, take_record_batch};
use datafusion::arrow::record_batch::RecordBatchOptions;
use datafusion::common::DataFusionError;
use datafusion::execution::memory_pool::MemoryReservation;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use std::collections::VecDeque;
use std::sync::Arc;

pub(crate) struct PartitionArgs {
    pub state: Arc<ScanState>,
    pub runtime: Arc<ScanRuntime>,
    pub partitions: Arc<Partitions>,
    pub partition: usize,
    pub reversed: bool,
    /// Whether the partition declared `time` ordering (then it is checked).
    pub ordered: bool,
    pub fetch: Option<usize>,
    pub pushed: Option<Arc<dyn PhysicalExpr>>,
    pub batch_size: usize,
    pub metrics: PartitionMetrics,
    /// The partition's share of the query's memory pool: the blobs of its fetches in flight
    /// and its decompression buffers.
    pub memory: MemoryReservation,
}

struct Reader {
    args: PartitionArgs,
    blocks: VecDeque<BlockRecord>,
    pending: FuturesOrdered<FetchFuture>,
    /// The blobs of `pending`.
    ahead: Ahead,
    /// The block being decoded, when it has rows left for the next batch.
    current: Option<Current>,
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
    /// Bytes reserved for the decoder's reused buffers.
    decoder_reserved: usize,
}

/// The block a partition is decoding, part by part.
struct Current {
    block: BlockRecord,
    /// Its blob, inflated a window at a time by the decoder; or its buffers decompressed for
    /// several scans.
    payload: Payload,
    next: Resume,
    /// Decode the rest in one part (see the module's documentation).
    whole: bool,
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
    let decoder =
        AsyncEventDecoder::new().with_inflate_limit(args.state.options.max_inflated_bytes);
    let budget = args.state.options.prefetch_bytes;
    let reader = Reader {
        builder: EventBatchBuilder::new(args.state.projection.columns),
        pruning,
        args,
        blocks,
        pending: FuturesOrdered::new(),
        ahead: Ahead::new(budget),
        current: None,
        decoder,
        ready: VecDeque::new(),
        emitted: 0,
        last_time: None,
        needs_sort: false,
        done: false,
        decoder_reserved: 0,
    };
    let stream = futures::stream::unfold(Box::new(reader), |mut reader| async move {
        reader.next().await.map(|item| (item, reader))
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, stream))
}

impl Reader {
    fn limit_reached(&self) -> bool {
        self.args
            .fetch
            .is_some_and(|f| self.emitted + self.builder.len() >= f)
    }

    /// Starts fetches within the [`Ahead`] budget, skipping blocks the pushed filters exclude.
    /// Each fetch reserves its blob's size first; when the pool cannot hold it, fewer fetches
    /// run ahead, and a block that does not fit even alone fails the query, named.
    fn refill(&mut self) -> Result<(), DataFusionError> {
        while !self.limit_reached() {
            let Some(block) = self.blocks.pop_front() else {
                return Ok(());
            };
            // A reader holding nothing always fetches (whatever the budget's accounting says),
            // so that it never waits for nothing.
            let idle = self.pending.is_empty() && self.current.is_none();
            if !idle && !self.ahead.admits(blob_bytes(&block)) {
                self.blocks.push_front(block);
                return Ok(());
            }
            let (min, max) = self.args.state.time_bounds(&block);
            if self.pruning.cannot_match(min, max) {
                self.args.metrics.blocks_pruned.add(1);
                self.args.runtime.registration.release(block.block_id);
                continue;
            }
            if let Err(e) = self.args.memory.try_grow(blob_bytes(&block)) {
                if self.pending.is_empty() {
                    return Err(DataFusionError::ResourcesExhausted(format!(
                        "block {} of stream {} (process {}) needs {} bytes to be read, more than \
                         the query's memory has left: {e}",
                        block.block_id,
                        block.stream_id,
                        self.args.state.process_id,
                        blob_bytes(&block)
                    )));
                }
                self.args.metrics.fetches_deferred.add(1);
                self.blocks.push_front(block);
                return Ok(());
            }
            self.ahead.started(blob_bytes(&block));
            let future = fetch(
                self.args.state.clone(),
                self.args.runtime.clone(),
                block,
                self.args.metrics.clone(),
            );
            self.pending
                .push_back(Box::pin(SpawnedFetch(tokio::spawn(future))));
        }
        Ok(())
    }

    /// A block is done with (read, skipped or missing): its blob's reservation goes.
    fn release(&mut self, block: &BlockRecord) {
        self.args.memory.shrink(blob_bytes(block));
        self.ahead.released(blob_bytes(block));
    }

    /// The decoder's buffers accounted as they now are (they grow to the largest window or
    /// dependencies buffer read so far).
    fn account_buffers(&mut self, block: &BlockRecord) -> Result<(), DataFusionError> {
        let now = self.decoder.buffer_bytes();
        if now > self.decoder_reserved {
            self.args
                .memory
                .try_grow(now - self.decoder_reserved)
                .map_err(|e| {
                    DataFusionError::ResourcesExhausted(format!(
                        "decompressing block {} of stream {} (process {}) took {now} bytes, more \
                         than the query's memory has left: {e}",
                        block.block_id, block.stream_id, self.args.state.process_id
                    ))
                })?;
            self.decoder_reserved = now;
        }
        Ok(())
    }

    /// Takes a fetched block as the one to decode: a blob's dependencies and first window
    /// are inflated into the decoder's buffers.
    fn start(&mut self, fetched: Fetched) -> Result<(), Error> {
        let block = fetched.block;
        let Some(payload) = fetched.payload else {
            self.release(&block);
            return Ok(());
        };
        // Parts only for blocks of more objects than a batch has rows: smaller ones go whole
        // (into this batch or the next), as do all blocks when corrupt ones are skipped.
        let whole = self.args.state.options.skip_corrupt_blocks
            || usize::try_from(block.nb_objects).is_ok_and(|n| n <= self.args.batch_size);
        if let Payload::Blob(blob) = &payload {
            let with_dependencies = AsyncEventDecoder::needs_dependencies(
                &self.builder,
                &self.args.state.predicate.row,
            );
            let timer = self.args.metrics.decode_time.timer();
            let inflated = self.decoder.inflate(blob, with_dependencies);
            drop(timer);
            if let Err(e) = inflated {
                self.release(&block);
                return self.failed(&block, e);
            }
        }
        self.current = Some(Current {
            block,
            payload,
            next: Resume::START,
            whole,
        });
        Ok(())
    }

    /// A block failed to decode: skipped and counted, or the query's error.
    fn failed(&mut self, block: &BlockRecord, e: crate::format::FormatError) -> Result<(), Error> {
        let state = &self.args.state;
        if state.options.skip_corrupt_blocks && e.is_corrupt_data() {
            log::warn!(
                "skipped corrupt block {} of stream {} (process {}): {e}",
                block.block_id,
                block.stream_id,
                state.process_id
            );
            self.args.metrics.blocks_corrupt.add(1);
            return Ok(());
        }
        Err(block_error(state, block, e))
    }

    /// Decodes the next part of the current block into the batch being built: what the batch
    /// (and `fetch`) still has room for.
    fn decode_part(&mut self) -> Result<(), DataFusionError> {
        let Some(mut current) = self.current.take() else {
            return Ok(());
        };
        let (state, runtime) = (self.args.state.clone(), self.args.runtime.clone());
        let Some((stream, layout)) =
            (self.args.partitions.get(self.args.partition)).and_then(|p| {
                Some((
                    state.plan.streams.get(p.stream)?,
                    runtime.layouts.get(p.stream)?,
                ))
            })
        else {
            self.release(&current.block);
            return Err(DataFusionError::Internal(format!(
                "async_events: partition {} has no stream layout",
                self.args.partition
            )));
        };
        let block_id = current.block.block_id.to_string();
        let ids = BlockIds {
            stream_id: &stream.stream_id_text,
            block_id: &block_id,
        };
        let room = self
            .args
            .batch_size
            .max(1)
            .saturating_sub(self.builder.len())
            .max(1);
        let room = match self.args.fetch {
            Some(f) => room.min(f.saturating_sub(self.emitted + self.builder.len()).max(1)),
            None => room,
        };
        let max_rows = if current.whole { usize::MAX } else { room };
        let (clock, filter) = (&state.plan.clock, &state.predicate.row);
        let source = match &current.payload {
            Payload::Blob(blob) => BlockSource::Blob(blob),
            Payload::Decompressed(d) => BlockSource::Decompressed(d),
        };
        let timer = self.args.metrics.decode_time.timer();
        let result = self.decoder.decode_part(
            layout,
            source,
            current.next,
            ids,
            clock,
            filter,
            &mut self.builder,
            max_rows,
        );
        drop(timer);
        let block = current.block.clone();
        match result {
            Ok(part) => {
                self.args.metrics.events_decoded.add(part.summary.events);
                match part.next {
                    Some(next) => {
                        current.next = next;
                        self.current = Some(current);
                    }
                    None => self.release(&block),
                }
                self.check_order(&block, &part.summary)?;
                self.account_buffers(&block)
            }
            Err(e) => {
                self.release(&block);
                Ok(self.failed(&block, e)?)
            }
        }
    }

    /// Keeps the declared `time` order true: rows of a block are sorted if they came out of
    /// order; a block whose events start before the previous block's last one is an error, in
    /// this partition or, for the first rows of a partition, in the one before it of the same
    /// stream (see [`super::stream_edges`]).
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
                StepBack {
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
                (self.args.runtime.edges).started(self.args.partition, (min, block.block_id))
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
        match self.args.runtime.edges.ended(partition + 1, last) {
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

    fn out_of_order(&self, stream_id: uuid::Uuid, step: StepBack) -> Error {
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

    /// Ends the batch once it is full, or at once when filters are pushed from above or
    /// `fetch` is reached.
    fn flush_if_full(&mut self) -> Result<(), DataFusionError> {
        if self.builder.len() >= self.args.batch_size
            || self.limit_reached()
            || self.args.pushed.is_some()
        {
            self.flush()
        } else {
            Ok(())
        }
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
        self.current = None;
        self.pending = FuturesOrdered::new();
        self.args.memory.free();
        self.ready.clear();
        for block in self.blocks.drain(..) {
            self.args.runtime.registration.release(block.block_id);
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
            if let Err(e) = self.refill() {
                self.stop();
                return Some(Err(e));
            }
            if self.current.is_some() {
                let result = self.decode_part().and_then(|()| self.flush_if_full());
                if let Err(e) = result {
                    self.stop();
                    return Some(Err(e));
                }
                continue;
            }
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
                Some(Ok(fetched)) => {
                    self.ahead.arrived();
                    self.start(fetched)
                        .map_err(DataFusionError::from)
                        .and_then(|()| self.decode_part())
                        .and_then(|()| self.flush_if_full())
                }
                Some(Err(e)) => Err(e.into()),
            };
            if let Err(e) = result {
                self.stop();
                return Some(Err(e));
            }
        }
    }
}
