//! Blocks shared by the scans of one query ([`QueryShares`], [`SharedBlocks`]).
//!
//! The most common async-events query pairs begin and end events with a self-join, which scans
//! the same blocks twice. Each scan registers, when it is planned, the blocks it will read; a
//! block that more than one scan will read is fetched and decompressed once and kept until the
//! last of them has read it, then dropped. A block only one scan reads is never kept. What is
//! kept is bounded by a byte budget; past it, scans fetch for themselves.
//!
//! Sharing is scoped to one query ([`QueryShares`]): concurrent queries of the same process
//! (a server, notebook cells) never hold blocks for each other, and a plan that is built but
//! never run pins nothing but its own registrations, released when it is dropped.

use crate::error::Result;
use crate::format::DecompressedBlock;
use datafusion::common::alias::AliasGenerator;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use uuid::Uuid;

/// The [`SharedBlocks`] of each query being planned or run, per process.
///
/// A query is recognised by its planning state: DataFusion gives each query a fresh
/// `ExecutionProps` (`SessionContext::state()` marks the start of execution), whose alias
/// generator is a new allocation. Scans of the same process planned with the same one belong to
/// the same query. The entry keeps a weak reference to that allocation, so its address cannot
/// be reused by another query while the entry lives; entries go when the query's plans are
/// dropped.
#[derive(Debug, Default)]
pub(crate) struct QueryShares {
    entries: Mutex<Vec<QueryEntry>>,
}

#[derive(Debug)]
struct QueryEntry {
    process_id: Uuid,
    query: Weak<AliasGenerator>,
    shared: Weak<SharedBlocks>,
}

impl QueryShares {
    /// The blocks shared by the scans of `process_id` in the query planned with `query`.
    pub fn for_query(
        &self,
        process_id: Uuid,
        query: &Arc<AliasGenerator>,
        budget: usize,
    ) -> Arc<SharedBlocks> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|e| e.shared.strong_count() > 0);
        let found = entries.iter().find_map(|e| {
            (e.process_id == process_id && std::ptr::eq(e.query.as_ptr(), Arc::as_ptr(query)))
                .then(|| e.shared.upgrade())
                .flatten()
        });
        if let Some(shared) = found {
            return shared;
        }
        let shared = Arc::new(SharedBlocks::new(budget));
        entries.push(QueryEntry {
            process_id,
            query: Arc::downgrade(query),
            shared: Arc::downgrade(&shared),
        });
        shared
    }

    /// Queries with live shared blocks.
    #[cfg(test)]
    pub fn live(&self) -> usize {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .filter(|e| e.shared.strong_count() > 0)
            .count()
    }
}

/// A block loaded once for several scans; `None` when its blob was missing and skipped.
pub(crate) type SharedBlock = Option<Arc<DecompressedBlock>>;

/// The kept copy of a block: filled by the first reader, under the lock so that the others
/// wait for it instead of loading it again.
type Cell = Arc<tokio::sync::Mutex<Option<SharedBlock>>>;

#[derive(Debug)]
struct Slot {
    /// Scans that will still read the block.
    readers: usize,
    cell: Cell,
    /// Bytes kept for it (0 while nothing is kept).
    bytes: usize,
    kept: bool,
}

/// The blocks shared by the scans of one process within one query.
#[derive(Debug)]
pub(crate) struct SharedBlocks {
    slots: Mutex<HashMap<Uuid, Slot>>,
    budget: usize,
    held: AtomicUsize,
    /// The kept bytes, reserved in the query's memory pool once the query runs: a block the
    /// pool cannot hold is not kept (its readers fetch it for themselves).
    reservation: Mutex<Option<MemoryReservation>>,
}

impl SharedBlocks {
    pub fn new(budget: usize) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            budget,
            held: AtomicUsize::new(0),
            reservation: Mutex::new(None),
        }
    }

    /// Reserves what is kept in `pool` (the first running scan's pool: a query has one).
    pub fn use_pool(&self, pool: &Arc<dyn MemoryPool>) {
        let mut reservation = self.reservation.lock().unwrap_or_else(|e| e.into_inner());
        if reservation.is_none() {
            *reservation = Some(MemoryConsumer::new("async_events shared blocks").register(pool));
        }
    }

    /// Whether the pool (when there is one) holds `bytes` more.
    fn reserve(&self, bytes: usize) -> bool {
        let reservation = self.reservation.lock().unwrap_or_else(|e| e.into_inner());
        reservation
            .as_ref()
            .is_none_or(|r| r.try_grow(bytes).is_ok())
    }

    fn unreserve(&self, bytes: usize) {
        let reservation = self.reservation.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = reservation.as_ref() {
            r.shrink(bytes.min(r.size()));
        }
    }

    /// Bytes currently kept.
    pub fn held_bytes(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// A scan will read these blocks: returns its registration.
    pub fn register(self: &Arc<Self>, blocks: impl IntoIterator<Item = Uuid>) -> Registration {
        let pending: HashSet<Uuid> = blocks.into_iter().collect();
        let mut slots = self.lock();
        for id in &pending {
            slots
                .entry(*id)
                .or_insert_with(|| Slot {
                    readers: 0,
                    cell: Arc::new(tokio::sync::Mutex::new(None)),
                    bytes: 0,
                    kept: false,
                })
                .readers += 1;
        }
        drop(slots);
        Registration {
            shared: self.clone(),
            pending: Mutex::new(pending),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Another scan will read the block after this one, and it fits the budget: share it.
    fn shared_cell(&self, id: Uuid) -> Option<Cell> {
        let slots = self.lock();
        let slot = slots.get(&id)?;
        if slot.readers > 1 || slot.kept {
            Some(slot.cell.clone())
        } else {
            None
        }
    }

    fn done(&self, id: Uuid) {
        let mut slots = self.lock();
        if let Some(slot) = slots.get_mut(&id) {
            slot.readers = slot.readers.saturating_sub(1);
            if slot.readers == 0
                && let Some(slot) = slots.remove(&id)
            {
                self.held.fetch_sub(slot.bytes, Ordering::Relaxed);
                self.unreserve(slot.bytes);
            }
        }
    }

    fn note_held(&self, id: Uuid, bytes: usize) -> bool {
        let mut slots = self.lock();
        match slots.get_mut(&id) {
            Some(slot)
                if self.held.load(Ordering::Relaxed) + bytes <= self.budget
                    && self.reserve(bytes) =>
            {
                slot.bytes = bytes;
                slot.kept = true;
                self.held.fetch_add(bytes, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }
}

/// How a scan got a block from the query's shared blocks.
pub(crate) enum SharedRead<T> {
    /// This scan is its only reader (or the budget is spent): it loads the block itself.
    NotShared,
    /// Loaded by this scan, and kept for the other scans that read it.
    LoadedForOthers(T),
    /// Loaded earlier by another scan of the query.
    LoadedByAnother(T),
}

/// The blocks one scan registered; releases those it never read when dropped.
#[derive(Debug)]
pub(crate) struct Registration {
    shared: Arc<SharedBlocks>,
    pending: Mutex<HashSet<Uuid>>,
}

impl Registration {
    /// Reserves the query's shared blocks in `pool`.
    pub fn use_pool(&self, pool: &Arc<dyn MemoryPool>) {
        self.shared.use_pool(pool);
    }

    /// Bytes the query's shared blocks hold now.
    pub fn held_bytes(&self) -> usize {
        self.shared.held_bytes()
    }

    /// The block, loaded once for all the scans that read it, or [`SharedRead::NotShared`].
    pub async fn obtain<F>(&self, id: Uuid, load: F) -> Result<SharedRead<SharedBlock>>
    where
        F: Future<Output = Result<SharedBlock>>,
    {
        let registered = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&id);
        let cell = if registered {
            self.shared.shared_cell(id)
        } else {
            None
        };
        let Some(cell) = cell else {
            return Ok(SharedRead::NotShared);
        };
        let mut kept = cell.lock().await;
        if let Some(value) = kept.as_ref() {
            return Ok(SharedRead::LoadedByAnother(value.clone()));
        }
        let value = load.await?;
        let bytes = value.as_ref().map_or(0, |b| b.size());
        // Over the budget, nothing is kept: the other scans load it themselves.
        if self.shared.note_held(id, bytes) {
            *kept = Some(value.clone());
        }
        Ok(SharedRead::LoadedForOthers(value))
    }

    /// This scan is done with the block.
    pub fn release(&self, id: Uuid) {
        let was_pending = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if was_pending {
            self.shared.done(id);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        for id in pending {
            self.shared.done(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn block(n: usize) -> SharedBlock {
        Some(Arc::new(DecompressedBlock {
            dependencies: None,
            objects: vec![0; n],
        }))
    }

    #[tokio::test]
    async fn a_block_read_by_two_scans_is_loaded_once_then_dropped() {
        let shared = Arc::new(SharedBlocks::new(1 << 20));
        let id = Uuid::new_v4();
        let a = shared.register([id]);
        let b = shared.register([id]);
        let loads = AtomicUsize::new(0);
        let load = || async {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok(block(100))
        };
        assert!(matches!(
            a.obtain(id, load()).await.unwrap(),
            SharedRead::LoadedForOthers(Some(_))
        ));
        a.release(id);
        assert_eq!(shared.held_bytes(), 100);
        assert!(matches!(
            b.obtain(id, load()).await.unwrap(),
            SharedRead::LoadedByAnother(Some(_))
        ));
        b.release(id);
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(shared.held_bytes(), 0, "dropped after its last reader");
        assert!(shared.lock().is_empty());
    }

    #[tokio::test]
    async fn kept_blocks_are_reserved_and_a_full_pool_keeps_nothing() {
        use datafusion::execution::memory_pool::GreedyMemoryPool;
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(150));
        let shared = Arc::new(SharedBlocks::new(1 << 20));
        let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
        let a = shared.register([first, second]);
        let b = shared.register([first, second]);
        a.use_pool(&pool);
        a.obtain(first, async { Ok(block(100)) }).await.unwrap();
        assert_eq!(pool.reserved(), 100);
        // The pool cannot hold the second block as well: it is not kept.
        a.obtain(second, async { Ok(block(100)) }).await.unwrap();
        assert_eq!((pool.reserved(), shared.held_bytes()), (100, 100));
        assert!(matches!(
            b.obtain(second, async { Ok(block(100)) }).await.unwrap(),
            SharedRead::LoadedForOthers(_)
        ));
        for id in [first, second] {
            a.release(id);
            b.release(id);
        }
        assert_eq!(pool.reserved(), 0);
    }

    #[tokio::test]
    async fn a_block_read_by_one_scan_is_not_kept() {
        let shared = Arc::new(SharedBlocks::new(1 << 20));
        let id = Uuid::new_v4();
        let a = shared.register([id]);
        assert!(matches!(
            a.obtain(id, async { Ok(block(10)) }).await.unwrap(),
            SharedRead::NotShared
        ));
        a.release(id);
        assert!(shared.lock().is_empty());
    }

    #[tokio::test]
    async fn unread_blocks_are_released_when_a_scan_is_dropped() {
        let shared = Arc::new(SharedBlocks::new(1 << 20));
        let id = Uuid::new_v4();
        let a = shared.register([id]);
        let b = shared.register([id]);
        assert!(matches!(
            a.obtain(id, async { Ok(block(10)) }).await.unwrap(),
            SharedRead::LoadedForOthers(_)
        ));
        a.release(id);
        drop(b); // the second scan stopped early (LIMIT) or never ran
        assert_eq!(shared.held_bytes(), 0);
        assert!(shared.lock().is_empty());
    }

    #[test]
    fn each_query_has_its_own_shared_blocks() {
        let shares = QueryShares::default();
        let (p, q) = (Uuid::new_v4(), Uuid::new_v4());
        let query_a = Arc::new(AliasGenerator::new());
        let query_b = Arc::new(AliasGenerator::new());
        let a1 = shares.for_query(p, &query_a, 1);
        let a2 = shares.for_query(p, &query_a, 1);
        assert!(Arc::ptr_eq(&a1, &a2), "two scans of one query share");
        let b = shares.for_query(p, &query_b, 1);
        assert!(!Arc::ptr_eq(&a1, &b), "another query does not");
        let other_process = shares.for_query(q, &query_a, 1);
        assert!(!Arc::ptr_eq(&a1, &other_process));
        assert_eq!(shares.live(), 3);
        drop((a1, a2, b, other_process));
        assert_eq!(shares.live(), 0);
        // A query whose planning state is gone never matches a new one.
        drop(query_a);
        let c = shares.for_query(p, &Arc::new(AliasGenerator::new()), 1);
        assert_eq!(Arc::strong_count(&c), 1);
    }

    #[tokio::test]
    async fn past_the_budget_blocks_are_not_kept() {
        let shared = Arc::new(SharedBlocks::new(50));
        let id = Uuid::new_v4();
        let a = shared.register([id]);
        let _b = shared.register([id]);
        assert!(matches!(
            a.obtain(id, async { Ok(block(100)) }).await.unwrap(),
            SharedRead::LoadedForOthers(_)
        ));
        assert_eq!(shared.held_bytes(), 0);
    }
}
