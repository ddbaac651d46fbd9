//! [`ScanOptions`]: how scans read blocks.

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
    /// Margin added around the time range when blocks are listed by their wall-clock bounds
    /// (event times come from ticks): blocks are then pruned exactly by their tick bounds. It
    /// assumes that the process's wall clock and its tick clock drift apart by less than the
    /// margin (see the scan planning notes); widen it for a lake whose
    /// clocks jumped (an NTP step, a suspended machine).
    pub time_margin: Duration,
    /// How far before and after a time range `async_spans` reads events to find the other
    /// event of the spans crossing the range's edges (see [`AsyncSpansTable`]). Spans longer
    /// than this that cross an edge come with a NULL `begin` or `end`.
    pub span_margin: Duration,
    /// Inclusive time range (ns since the epoch) bounding every scan, on top of the query's own
    /// filters and the table function's bounds: the Flight SQL server sets it from a request's
    /// `query_range_begin`/`query_range_end` headers. [`TimeBounds::ALL`]: unbounded.
    pub query_range: TimeBounds,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            skip_corrupt_blocks: false,
            max_concurrent_fetches: 8,
            shared_block_budget: 512 * 1024 * 1024,
            declare_time_order: true,
            time_margin: Duration::from_secs(5),
            span_margin: Duration::from_secs(30),
            query_range: TimeBounds::ALL,
        }
    }
}
