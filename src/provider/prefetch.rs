//! How far a reader fetches ahead of the block it decodes: a byte budget on the blobs in
//! flight, and a block count.
//!
//! Counting blocks alone made memory follow the block size: two 10 MiB-buffer blocks ahead
//! hold many times what two 256 KiB ones do. The budget is in bytes of stored blobs (what a
//! fetch holds until its block is inflated); a blob larger than the budget is fetched alone,
//! once nothing else is in flight.

use crate::lake::BlockRecord;
use futures::future::{Join, Ready, join, ready};
use futures::stream::{FuturesOrdered, Stream, StreamExt};
use std::collections::VecDeque;
use std::future::Future;

/// Bytes of stored blobs one reader fetches ahead.
pub(crate) const AHEAD_BYTES: usize = 4 << 20;

/// Blocks one reader fetches ahead at most: filters pushed from above (a TopK threshold)
/// tighten only as rows arrive, so reading far ahead would fetch blocks they could skip.
pub(crate) const AHEAD_BLOCKS: usize = 2;

/// The blobs in flight of one reader.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ahead {
    blocks: usize,
    bytes: usize,
}

impl Ahead {
    /// Whether a fetch of a blob of `bytes` may start now: always when nothing is in flight
    /// (so a blob larger than the budget is read alone), otherwise while both the block count
    /// and the bytes stay within [`AHEAD_BLOCKS`] and [`AHEAD_BYTES`].
    pub fn admits(&self, bytes: usize) -> bool {
        self.blocks == 0
            || (self.blocks < AHEAD_BLOCKS && self.bytes.saturating_add(bytes) <= AHEAD_BYTES)
    }

    /// A fetch of `bytes` started.
    pub fn started(&mut self, bytes: usize) {
        self.blocks += 1;
        self.bytes = self.bytes.saturating_add(bytes);
    }

    /// A fetch of `bytes` arrived (or was dropped).
    pub fn arrived(&mut self, bytes: usize) {
        self.blocks = self.blocks.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(bytes);
    }
}

/// The bytes a block's blob takes, as its metadata row says.
pub(crate) fn blob_bytes(block: &BlockRecord) -> usize {
    usize::try_from(block.payload_size).unwrap_or(0)
}

/// `blocks` fetched by `fetch` within the [`Ahead`] budget, each handed over in order with its
/// block, as the stream is polled (nothing runs ahead of the consumer's polls).
pub(crate) fn fetch_in_order<F, Fut, T>(
    blocks: impl IntoIterator<Item = BlockRecord>,
    fetch: F,
) -> impl Stream<Item = (BlockRecord, T)>
where
    F: FnMut(BlockRecord) -> Fut,
    Fut: Future<Output = T>,
{
    let state = InOrder {
        queue: blocks.into_iter().collect(),
        running: FuturesOrdered::new(),
        ahead: Ahead::default(),
        fetch,
    };
    futures::stream::unfold(state, |mut state| async move {
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
        state.ahead.arrived(blob_bytes(&block));
        Some(((block, fetched), state))
    })
}

struct InOrder<F, Fut: Future> {
    queue: VecDeque<BlockRecord>,
    running: FuturesOrdered<Join<Ready<BlockRecord>, Fut>>,
    ahead: Ahead,
    fetch: F,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_blobs_are_limited_by_count_and_large_ones_read_alone() {
        let mut ahead = Ahead::default();
        let small = 64 << 10;
        assert!(ahead.admits(small));
        ahead.started(small);
        assert!(ahead.admits(small));
        ahead.started(small);
        assert!(!ahead.admits(small), "{AHEAD_BLOCKS} blocks ahead at most");

        let mut ahead = Ahead::default();
        let large = AHEAD_BYTES / 2 + 1;
        assert!(ahead.admits(large));
        ahead.started(large);
        assert!(!ahead.admits(large), "two of them exceed the budget");
        ahead.arrived(large);
        assert_eq!(ahead, Ahead::default());

        let huge = 10 * AHEAD_BYTES;
        assert!(ahead.admits(huge), "a blob beyond the budget is read alone");
        ahead.started(huge);
        assert!(!ahead.admits(1), "nothing beside it");
    }
}
