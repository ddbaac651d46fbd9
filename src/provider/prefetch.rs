//! How far a reader fetches ahead of the block it decodes: a byte budget on the blobs it holds,
//! and a block count.
//!
//! Counting blocks alone made memory follow the block size: two 10 MiB-buffer blocks ahead
//! hold many times what two 256 KiB ones do. The budget
//! ([`ScanOptions::prefetch_bytes`](super::ScanOptions::prefetch_bytes)) is in bytes of stored
//! blobs, counting the blob being decoded (held until its last record is read, since its
//! objects are inflated a window at a time) and those being fetched; a reader holding nothing
//! always fetches, so a blob larger than the budget is read alone.

use crate::lake::BlockRecord;
use futures::future::{Join, Ready, join, ready};
use futures::stream::{FuturesOrdered, Stream, StreamExt};
use std::collections::VecDeque;
use std::future::Future;

/// The default of [`ScanOptions::prefetch_bytes`](super::ScanOptions::prefetch_bytes): 4 MiB.
pub const DEFAULT_PREFETCH_BYTES: usize = 4 << 20;

/// Fetches one reader runs at most: filters pushed from above (a TopK threshold) tighten only
/// as rows arrive, so reading far ahead would fetch blocks they could skip.
pub(crate) const AHEAD_BLOCKS: usize = 2;

/// The blobs one reader holds: being fetched, and being decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ahead {
    budget: usize,
    fetching: usize,
    bytes: usize,
}

impl Ahead {
    /// A reader holding nothing, with a budget of `budget` bytes.
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            fetching: 0,
            bytes: 0,
        }
    }

    /// Whether a fetch of a blob of `bytes` may start now: always when nothing is held (so a
    /// blob larger than the budget is read alone), otherwise while the fetches stay within
    /// [`AHEAD_BLOCKS`] and the bytes held within the budget.
    pub fn admits(&self, bytes: usize) -> bool {
        self.bytes == 0
            || (self.fetching < AHEAD_BLOCKS && self.bytes.saturating_add(bytes) <= self.budget)
    }

    /// A fetch of a blob of `bytes` started.
    pub fn started(&mut self, bytes: usize) {
        self.fetching += 1;
        self.bytes = self.bytes.saturating_add(bytes);
    }

    /// A fetch arrived: its blob is now the reader's to decode.
    pub fn arrived(&mut self) {
        self.fetching = self.fetching.saturating_sub(1);
    }

    /// A blob of `bytes` is no longer held (its block is done with, or its fetch dropped).
    pub fn released(&mut self, bytes: usize) {
        self.bytes = self.bytes.saturating_sub(bytes);
    }
}

/// The bytes a block's blob takes, as its metadata row says.
pub(crate) fn blob_bytes(block: &BlockRecord) -> usize {
    usize::try_from(block.payload_size).unwrap_or(0)
}

/// `blocks` fetched by `fetch` within `budget` bytes (see [`Ahead`]), each handed over in
/// order with its block, as the stream is polled (nothing runs ahead of the consumer's polls).
/// A block handed over counts as held until the stream is polled again.
pub(crate) fn fetch_in_order<F, Fut, T>(
    blocks: impl IntoIterator<Item = BlockRecord>,
    budget: usize,
    fetch: F,
) -> impl Stream<Item = (BlockRecord, T)>
where
    F: FnMut(BlockRecord) -> Fut,
    Fut: Future<Output = T>,
{
    let state = InOrder {
        queue: blocks.into_iter().collect(),
        running: FuturesOrdered::new(),
        ahead: Ahead::new(budget),
        handed: 0,
        fetch,
    };
    futures::stream::unfold(state, |mut state| async move {
        // The consumer is done with the block it was handed.
        state.ahead.released(std::mem::take(&mut state.handed));
        while let Some(block) = state.queue.front() {
            let bytes = blob_bytes(block);
            if !state.ahead.admits(bytes) {
                break;
            }
            let block = state.queue.pop_front()?;
            state.ahead.started(bytes);
            let fetched = (state.fetch)(block.clone());
            state.running.push_back(join(ready(block), fetched));
        }
        let (block, fetched) = state.running.next().await?;
        state.ahead.arrived();
        state.handed = blob_bytes(&block);
        Some(((block, fetched), state))
    })
}

struct InOrder<F, Fut: Future> {
    queue: VecDeque<BlockRecord>,
    running: FuturesOrdered<Join<Ready<BlockRecord>, Fut>>,
    ahead: Ahead,
    /// The blob of the block last handed over.
    handed: usize,
    fetch: F,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_blobs_are_limited_by_count_and_large_ones_read_alone() {
        let budget = DEFAULT_PREFETCH_BYTES;
        let mut ahead = Ahead::new(budget);
        let small = 64 << 10;
        assert!(ahead.admits(small));
        ahead.started(small);
        assert!(ahead.admits(small));
        ahead.started(small);
        assert!(!ahead.admits(small), "{AHEAD_BLOCKS} fetches at most");
        // One arrives and is decoded: a fetch may start beside it.
        ahead.arrived();
        assert!(ahead.admits(small));

        // A blob being decoded counts: beside it, only what the budget leaves.
        let mut ahead = Ahead::new(budget);
        let large = budget / 2 + 1;
        ahead.started(large);
        ahead.arrived();
        assert!(!ahead.admits(large), "two of them exceed the budget");
        assert!(ahead.admits(budget / 4));
        ahead.released(large);
        assert_eq!(ahead, Ahead::new(budget));

        let huge = 10 * budget;
        assert!(ahead.admits(huge), "a blob beyond the budget is read alone");
        ahead.started(huge);
        assert!(!ahead.admits(1), "nothing beside it");
        ahead.arrived();
        assert!(!ahead.admits(1), "nor while it is decoded");
        ahead.released(huge);
        assert!(ahead.admits(1));
    }
}
