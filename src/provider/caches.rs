//! [`ScanCaches`]: what every table made by one registration shares, for as long as the
//! registration lives (a session, or a whole server): compiled stream layouts and the blocks
//! each query's scans share.

use super::block_sharing::QueryShares;
use super::layout_cache::LayoutCache;
use std::sync::{Arc, OnceLock};

/// Compiled stream layouts and per-query block sharing, shared by the tables of one
/// registration. Both are bounded: layouts by count (least recently used first out), block
/// shares by query (an entry lives while its query's plans do).
#[derive(Debug, Default)]
pub struct ScanCaches {
    pub(crate) layouts: LayoutCache,
    pub(crate) queries: QueryShares,
}

impl ScanCaches {
    /// The caches of scans that were not planned here (decoded from bytes): one per process.
    pub(crate) fn global() -> Arc<Self> {
        static GLOBAL: OnceLock<Arc<ScanCaches>> = OnceLock::new();
        GLOBAL.get_or_init(Default::default).clone()
    }

    /// Stream layouts compiled so far (each stream's metadata is compiled once while it stays
    /// in the cache).
    pub fn layouts_compiled(&self) -> usize {
        self.layouts.compiled()
    }
}
