//! [`BatchMerge`]: the thread streams of an events scan merged chunk by chunk, oldest first.

use super::pairing::InputColumns;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{SchemaRef, TimestampNanosecondType};
use datafusion::common::Result;
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::StreamExt;
use std::collections::VecDeque;

/// Rows of a partition the batch merge hands over at a time. Fixed, not the session's batch
/// size, and cut at fixed row counts whatever batches the scan produced (their sizes depend on
/// timing), so that the order spans come out in depends on the events alone: a Perfetto trace
/// written twice is the same bytes.
const MERGE_ROWS: usize = 8192;

/// Reads every partition of the events scan (one per thread stream, each in time order) and
/// hands over their rows in chunks of [`MERGE_ROWS`], oldest first: of the chunks at the head of
/// each partition, the one whose first event is the earliest (the first partition on a tie).
///
/// Pairing is correct in any order (an end met before its begin waits for it); the order only
/// bounds what waits. Merging chunks rather than rows keeps that bound (a chunk's worth of time
/// per stream) without the cost of a row-by-row merge, which cost as much as the pairing
/// itself (`BENCHMARKS.md`).
pub(crate) struct BatchMerge {
    inputs: Vec<MergeInput>,
    time: usize,
}

/// A partition of the merge's input and its rows read but not handed over.
struct MergeInput {
    stream: SendableRecordBatchStream,
    buffered: VecDeque<RecordBatch>,
    rows: usize,
    exhausted: bool,
}

impl MergeInput {
    /// Reads until a whole chunk is buffered or the partition is exhausted.
    async fn fill(&mut self) -> Result<()> {
        while self.rows < MERGE_ROWS && !self.exhausted {
            match self.stream.next().await {
                Some(Ok(batch)) => {
                    if batch.num_rows() > 0 {
                        self.rows += batch.num_rows();
                        self.buffered.push_back(batch);
                    }
                }
                Some(Err(e)) => return Err(e),
                None => self.exhausted = true,
            }
        }
        Ok(())
    }

    /// The next chunk: the first [`MERGE_ROWS`] rows buffered, as slices of the batches.
    fn take_chunk(&mut self) -> Vec<RecordBatch> {
        let mut chunk = Vec::new();
        let mut wanted = MERGE_ROWS;
        while wanted > 0 {
            let Some(batch) = self.buffered.pop_front() else {
                break;
            };
            let n = batch.num_rows();
            if n > wanted {
                chunk.push(batch.slice(0, wanted));
                self.buffered.push_front(batch.slice(wanted, n - wanted));
                self.rows -= wanted;
                wanted = 0;
            } else {
                chunk.push(batch);
                self.rows -= n;
                wanted -= n;
            }
        }
        chunk
    }
}

impl BatchMerge {
    pub fn new(inputs: Vec<SendableRecordBatchStream>, schema: &SchemaRef) -> Result<Self> {
        let time = InputColumns::of(schema)?.time;
        Ok(Self {
            inputs: inputs
                .into_iter()
                .map(|stream| MergeInput {
                    stream,
                    buffered: VecDeque::new(),
                    rows: 0,
                    exhausted: false,
                })
                .collect(),
            time,
        })
    }

    fn first_time(&self, input: &MergeInput) -> Option<i64> {
        let batch = input.buffered.front()?;
        batch
            .column(self.time)
            .as_primitive::<TimestampNanosecondType>()
            .values()
            .first()
            .copied()
    }

    /// The next chunk (its rows in one or more batches); `None` once every partition is read.
    pub async fn next(&mut self) -> Option<Result<Vec<RecordBatch>>> {
        // Each partition decodes in a task of its own: filling the heads one after the other
        // waits for the slowest, while the others keep decoding ahead.
        for input in &mut self.inputs {
            if let Err(e) = input.fill().await {
                return Some(Err(e));
            }
        }
        let (i, _) = self
            .inputs
            .iter()
            .enumerate()
            .filter_map(|(i, input)| self.first_time(input).map(|t| (i, t)))
            .min_by_key(|&(i, t)| (t, i))?;
        self.inputs.get_mut(i).map(|input| Ok(input.take_chunk()))
    }
}
