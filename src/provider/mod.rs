//! The `async_events` table and its scan: [`AsyncEventsTable`] (a `TableProvider`), the
//! translation of filters into what the scan applies ([`ScanPredicate`]), scan planning (blocks
//! listed, pruned and cut into partitions), and [`AsyncEventsExec`], the leaf plan that reads
//! blocks lazily, a few ahead, straight into Arrow batches.
//!
//! The only module that translates DataFusion expressions for the scan; it uses
//! [`crate::format`] to decode and [`crate::lake`] to find and fetch blocks.
//!
//! | file | holds |
//! |---|---|
//! | `options.rs` | [`ScanOptions`] |
//! | `table.rs` | [`AsyncEventsTable`]: filters accepted, `scan()` |
//! | `predicate.rs`, `filter_translation.rs` | [`ScanPredicate`], and each pushed filter translated |
//! | `planning/` | blocks listed and pruned (`mod.rs`), the process's clock, partitions, projection |
//! | `exec.rs` | [`AsyncEventsExec`] |
//! | `runtime.rs` | what executing partitions share (lake, layouts, fetch permits) |
//! | `stream.rs`, `fetch.rs`, `prefetch.rs`, `time_pruning.rs`, `metrics.rs` | one partition's reading (blocks fetched ahead within a byte budget, decoded in parts of a batch) and its counters |
//! | `block_sharing.rs` | blocks shared by the scans of one query |
//! | `stream_edges.rs` | the time order where two partitions of one stream meet |
//! | `layout_cache.rs`, `caches.rs` | compiled stream layouts, what one registration shares |

mod block_sharing;
mod caches;
mod exec;
mod fetch;
mod filter_translation;
mod layout_cache;
mod metrics;
mod options;
mod planning;
mod predicate;
pub(crate) mod prefetch;
mod runtime;
mod stream;
mod stream_edges;
mod table;
mod time_pruning;

pub use caches::ScanCaches;
pub use exec::AsyncEventsExec;
pub use options::ScanOptions;
pub use planning::process_clock;
pub(crate) use planning::tick_window;
pub use predicate::ScanPredicate;
pub use prefetch::DEFAULT_PREFETCH_BYTES;
pub use table::AsyncEventsTable;

#[cfg_attr(not(feature = "codec"), allow(unused_imports))]
pub(crate) use planning::{
    ClockParams, Partitions, PlannedPartition, PlannedScan, PlannedStream, ScanProjection,
    ScanState,
};
