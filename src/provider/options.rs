//! [`ScanOptions`]: how scans read blocks.

use super::prefetch::DEFAULT_PREFETCH_BYTES;
use crate::format::DEFAULT_INFLATE_LIMIT;
use crate::time_bounds::TimeBounds;
use std::time::Duration;

/// How scans read blocks.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Skip (and count) blocks that fail to decode instead of failing the query.
    pub skip_corrupt_blocks: bool,
    /// Fetches in flight at once over all the partitions of a scan.
    pub max_concurrent_fetches: usize,
    /// Bytes of decompressed blocks kept for other scans of the same query (self-joins).
    pub shared_block_budget: usize,
    /// Declare each partition sorted by `time` (one thread stream, blocks in recording order),
    /// which lets `ORDER BY time LIMIT n` merge the streams instead of sorting everything. The
    /// order is checked while reading: a stream whose events go back in time fails the query
    /// with an error naming the block; turn this off to read such a lake.
    pub declare_time_order: bool,
    /// How far before and after a time range `async_spans` reads events to find the other
    /// event of the spans crossing the range's edges (see [`AsyncSpansTable`]). Spans longer
    /// than this that cross an edge come with a NULL `begin` or `end`.
    pub span_margin: Duration,
    /// Inclusive time range (ns since the epoch) bounding every scan, on top of the query's own
    /// filters and the table function's bounds: the Flight SQL server sets it from a request's
    /// `query_range_begin`/`query_range_end` headers. [`TimeBounds::ALL`]: unbounded.
    pub query_range: TimeBounds,
    /// Largest size one buffer of a block may inflate to (LZ4): a block beyond it is refused
    /// before the memory is allocated, with an error naming it (or skipped and counted with
    /// `skip_corrupt_blocks`). The default, [`DEFAULT_INFLATE_LIMIT`] (64 MiB), is six times
    /// the largest buffer micromegas producers write by default (10 MiB).
    pub max_inflated_bytes: usize,
    /// Bytes of stored blobs each partition holds at once: the block it decodes (whose
    /// objects are inflated a window at a time, so the blob is kept until its last record) and
    /// the blocks it fetches ahead (at most two). A partition holding nothing always fetches,
    /// so a blob larger than this is read alone, without fetching ahead. The default,
    /// [`DEFAULT_PREFETCH_BYTES`] (4 MiB), lets 64 KiB to 1 MiB buffers (blobs of 20 to 400 KB)
    /// be fetched two ahead and reads micromegas's default 10 MiB buffers (blobs of about
    /// 3 MB) one at a time per partition; raise it against a slow object store.
    pub prefetch_bytes: usize,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            skip_corrupt_blocks: false,
            max_concurrent_fetches: 8,
            shared_block_budget: 512 * 1024 * 1024,
            declare_time_order: true,
            span_margin: Duration::from_secs(30),
            query_range: TimeBounds::ALL,
            max_inflated_bytes: DEFAULT_INFLATE_LIMIT,
            prefetch_bytes: DEFAULT_PREFETCH_BYTES,
        }
    }
}
