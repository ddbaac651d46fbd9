//! [`ScanRuntime`]: what a scan's partitions use while they execute: the lake's connections,
//! the compiled stream layouts, the fetch semaphore, the blocks shared with the other scans of
//! the query and the edges between the partitions of one stream.
//!
//! The plan itself ([`AsyncEventsExec`](super::AsyncEventsExec)) holds only data: the lake's
//! URLs, the stream metadata, the blocks of each partition. A scan planned here carries the
//! runtime its table made; a scan decoded elsewhere (another process, a worker of a distributed
//! engine) finds its lake by URL ([`LakeRegistry::resolve`]) and compiles its layouts in the
//! session's [`ScanCaches`] (or the process's).

use super::block_sharing::{Registration, SharedBlocks};
use super::caches::ScanCaches;
use super::planning::ScanState;
use super::stream_edges::StreamEdges;
use crate::format::StreamLayout;
use crate::lake::{Lake, LakeRegistry};
use datafusion::common::Result;
use datafusion::execution::TaskContext;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// What the partitions of one scan share while they execute.
#[derive(Debug)]
pub(crate) struct ScanRuntime {
    pub lake: Lake,
    /// The compiled layout of each stream of the scan, in [`PlannedScan::streams`] order.
    ///
    /// [`PlannedScan::streams`]: super::planning::PlannedScan::streams
    pub layouts: Vec<Arc<StreamLayout>>,
    pub registration: Registration,
    /// Bounds concurrent fetches over all partitions (memory stays bounded whatever the number
    /// of streams).
    pub fetches: Arc<Semaphore>,
    /// Where the partitions of one stream meet (their time order is checked there).
    pub edges: StreamEdges,
}

impl ScanRuntime {
    /// The runtime of a scan planned in this process.
    pub fn new(
        lake: Lake,
        layouts: Vec<Arc<StreamLayout>>,
        registration: Registration,
        state: &ScanState,
    ) -> Self {
        Self {
            lake,
            layouts,
            registration,
            fetches: Arc::new(Semaphore::new(state.options.max_concurrent_fetches.max(1))),
            edges: StreamEdges::default(),
        }
    }

    /// The runtime of a scan that came as data: its lake found by location, its layouts
    /// compiled from the stream metadata it carries. Its blocks are not shared with other scans
    /// (they register when they are planned).
    pub fn resolve(state: &ScanState, context: &TaskContext) -> Result<Self> {
        let config = context.session_config();
        let lake = LakeRegistry::resolve(config.get_extension::<LakeRegistry>(), &state.location)?;
        let caches = config
            .get_extension::<ScanCaches>()
            .unwrap_or_else(ScanCaches::global);
        let layouts = (state.plan.streams.iter())
            .map(|s| {
                caches.layouts.layout_of(
                    state.process_id,
                    s.stream_id,
                    &s.dependencies_metadata,
                    &s.objects_metadata,
                )
            })
            .collect::<crate::error::Result<Vec<_>>>()?;
        let shared = Arc::new(SharedBlocks::new(state.options.shared_block_budget));
        let registration = shared.register(std::iter::empty());
        Ok(Self::new(lake, layouts, registration, state))
    }
}
