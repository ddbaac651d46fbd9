//! What a scan resolves when its partitions execute: the lake's connections, the compiled
//! stream layouts, the fetch semaphore, the blocks shared with the other scans of the query and
//! the time-order checks between partitions ([`ScanHandles`]).
//!
//! The plan itself ([`AsyncEventsExec`](super::AsyncEventsExec)) holds only data: the lake's
//! URLs, the stream metadata, the blocks of each partition. A scan planned here carries the
//! handles its table captured; a scan decoded elsewhere (another process, a worker of a
//! distributed engine) finds its lake by URL in the session's [`LakeRegistry`] (a `SessionConfig`
//! extension), else in the process's own ([`LakeRegistry::global`]), which [`register`]
//! (crate::register) fills.

use super::boundaries::StreamBoundaries;
use super::plan::{LayoutCache, ScanState};
use super::shared::{Registration, SharedBlocks};
use crate::format::StreamLayout;
use crate::lake::{Lake, StreamRecord};
use datafusion::common::{Result, exec_err};
use datafusion::execution::TaskContext;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::Semaphore;

/// Where a lake is: its metadata database URL (without password) and object store URL.
/// Credentials never travel with a plan: the process that executes it opens the lake itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LakeLocation {
    /// `postgres://…` or `sqlite:…`, password removed.
    pub database_url: String,
    /// `file://…`, `s3://…`, `gs://…`, `az://…`, `memory://…`.
    pub store_url: String,
}

impl LakeLocation {
    /// The location of an open lake.
    pub fn of(lake: &Lake) -> Self {
        Self {
            database_url: lake.database_url().to_string(),
            store_url: lake.store_url().to_string(),
        }
    }
}

/// The lakes a process can execute scans on, by location, and the stream layouts they compiled.
#[derive(Debug, Default)]
pub struct LakeRegistry {
    lakes: Mutex<HashMap<LakeLocation, Lake>>,
    layouts: LayoutCache,
}

impl LakeRegistry {
    /// The registry of this process, which [`register`](crate::register) fills.
    pub fn global() -> Arc<Self> {
        static GLOBAL: OnceLock<Arc<LakeRegistry>> = OnceLock::new();
        GLOBAL.get_or_init(Default::default).clone()
    }

    /// Makes a lake available to the scans that name its location (the first one opened for a
    /// location is kept: one pool per URL per process).
    pub fn add(&self, lake: &Lake) {
        let mut lakes = self.lakes.lock().unwrap_or_else(|e| e.into_inner());
        lakes
            .entry(LakeLocation::of(lake))
            .or_insert_with(|| lake.clone());
    }

    /// The lake at a location, if one was added.
    pub fn find(&self, location: &LakeLocation) -> Option<Lake> {
        let lakes = self.lakes.lock().unwrap_or_else(|e| e.into_inner());
        lakes.get(location).cloned()
    }
}

/// What the partitions of one scan share while they execute.
#[derive(Debug)]
pub(crate) struct ScanHandles {
    pub lake: Lake,
    /// The compiled layout of each stream of [`PlannedScan::streams`](super::plan::PlannedScan).
    pub layouts: Vec<Arc<StreamLayout>>,
    pub registration: Registration,
    /// Bounds concurrent fetches over all partitions (memory stays bounded whatever the number
    /// of streams).
    pub fetches: Arc<Semaphore>,
    /// Where the partitions of one stream meet (their time order is checked there).
    pub boundaries: StreamBoundaries,
}

impl ScanHandles {
    /// The handles of a scan planned in this process.
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
            boundaries: StreamBoundaries::default(),
        }
    }

    /// The handles of a scan that came as data: its lake found by location in the session's
    /// registry or the process's, its layouts compiled from the stream metadata it carries.
    /// Its blocks are not shared with other scans (they register when they are planned).
    pub fn resolve(state: &ScanState, context: &TaskContext) -> Result<Self> {
        let registries = [
            context.session_config().get_extension::<LakeRegistry>(),
            Some(LakeRegistry::global()),
        ];
        let Some((registry, lake)) = registries
            .into_iter()
            .flatten()
            .find_map(|r| r.find(&state.location).map(|lake| (r, lake)))
        else {
            return exec_err!(
                "async_events: no lake at {} (metadata) and {} (blobs) in this process: \
                 register it (datafusion_async_events::register) before executing the plan",
                state.location.database_url,
                state.location.store_url
            );
        };
        let layouts = state
            .plan
            .streams
            .iter()
            .map(|s| {
                let record = StreamRecord {
                    stream_id: s.stream_id,
                    process_id: state.process_id,
                    dependencies_metadata: s.dependencies_metadata.clone(),
                    objects_metadata: s.objects_metadata.clone(),
                    tags: vec![],
                    properties: vec![],
                };
                registry.layouts.layout(state.process_id, &record)
            })
            .collect::<crate::Result<Vec<_>>>()?;
        let shared = Arc::new(SharedBlocks::new(state.options.shared_block_budget));
        let registration = shared.register(std::iter::empty());
        Ok(Self::new(lake, layouts, registration, state))
    }
}
