//! Blocks shared by the scans of one query.
//!
//! The most common async-events query pairs begin and end events with a self-join, which scans
//! the same blocks twice. Each scan registers, when it is planned, the blocks it will read; a
//! block that more than one scan will read is fetched and decompressed once and kept until the
//! last of them has read it, then dropped. A block only one scan reads is never kept. What is
//! kept is bounded by a byte budget; past it, scans fetch for themselves.

use crate::error::Result;
use crate::format::DecompressedBlock;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

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
}

impl SharedBlocks {
    pub fn new(budget: usize) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            budget,
            held: AtomicUsize::new(0),
        }
    }

    /// Bytes currently kept.
    #[cfg(test)]
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
            }
        }
    }

    fn note_held(&self, id: Uuid, bytes: usize) -> bool {
        let mut slots = self.lock();
        match slots.get_mut(&id) {
            Some(slot) if self.held.load(Ordering::Relaxed) + bytes <= self.budget => {
                slot.bytes = bytes;
                slot.kept = true;
                self.held.fetch_add(bytes, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }
}

/// How a scan obtained a block.
pub(crate) enum Obtained<T> {
    /// This scan is its only reader (or the budget is spent): load it yourself.
    Alone,
    /// Loaded by this scan for the others too.
    Loaded(T),
    /// Loaded earlier by another scan.
    Reused(T),
}

/// The blocks one scan registered; releases those it never read when dropped.
#[derive(Debug)]
pub(crate) struct Registration {
    shared: Arc<SharedBlocks>,
    pending: Mutex<HashSet<Uuid>>,
}

impl Registration {
    /// The block, loaded once for all the scans that read it, or [`Obtained::Alone`].
    pub async fn obtain<F>(&self, id: Uuid, load: F) -> Result<Obtained<SharedBlock>>
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
            return Ok(Obtained::Alone);
        };
        let mut kept = cell.lock().await;
        if let Some(value) = kept.as_ref() {
            return Ok(Obtained::Reused(value.clone()));
        }
        let value = load.await?;
        let bytes = value.as_ref().map_or(0, |b| b.size());
        // Over the budget, nothing is kept: the other scans load it themselves.
        if self.shared.note_held(id, bytes) {
            *kept = Some(value.clone());
        }
        Ok(Obtained::Loaded(value))
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
            Obtained::Loaded(Some(_))
        ));
        a.release(id);
        assert_eq!(shared.held_bytes(), 100);
        assert!(matches!(
            b.obtain(id, load()).await.unwrap(),
            Obtained::Reused(Some(_))
        ));
        b.release(id);
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(shared.held_bytes(), 0, "dropped after its last reader");
        assert!(shared.lock().is_empty());
    }

    #[tokio::test]
    async fn a_block_read_by_one_scan_is_not_kept() {
        let shared = Arc::new(SharedBlocks::new(1 << 20));
        let id = Uuid::new_v4();
        let a = shared.register([id]);
        assert!(matches!(
            a.obtain(id, async { Ok(block(10)) }).await.unwrap(),
            Obtained::Alone
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
            Obtained::Loaded(_)
        ));
        a.release(id);
        drop(b); // the second scan stopped early (LIMIT) or never ran
        assert_eq!(shared.held_bytes(), 0);
        assert!(shared.lock().is_empty());
    }

    #[tokio::test]
    async fn past_the_budget_blocks_are_not_kept() {
        let shared = Arc::new(SharedBlocks::new(50));
        let id = Uuid::new_v4();
        let a = shared.register([id]);
        let _b = shared.register([id]);
        assert!(matches!(
            a.obtain(id, async { Ok(block(100)) }).await.unwrap(),
            Obtained::Loaded(_)
        ));
        assert_eq!(shared.held_bytes(), 0);
    }
}
