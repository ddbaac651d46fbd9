//! [`LayoutCache`]: compiled stream layouts, by stream id, shared by every scan of a
//! registration (and, in a server, by every request).
//!
//! A stream's transit metadata is written once, when the stream is created, and never changes,
//! so it is compiled once and reused. The metadata bytes are kept with the layout to check that
//! a cached id still describes the same stream (two lakes may hold copies of one stream). The
//! cache is bounded: past [`LAYOUT_CACHE_STREAMS`] streams the least recently used layout goes.

use crate::error::{Error, Result};
use crate::format::StreamLayout;
use crate::lake::StreamRecord;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Streams whose layouts are kept. A layout is a few KiB (its metadata bytes and offsets), so
/// this bounds the cache near 20 MiB however long a server runs; a fleet of processes with
/// more live threads than this recompiles (about 50 µs per stream) rather than growing.
pub const LAYOUT_CACHE_STREAMS: usize = 4096;

/// Compiled stream layouts, by stream id (see the module documentation).
#[derive(Debug)]
pub struct LayoutCache {
    inner: Mutex<Entries>,
    capacity: usize,
    compiled: AtomicUsize,
}

#[derive(Debug, Default)]
struct Entries {
    layouts: HashMap<Uuid, CachedLayout>,
    /// Incremented at every use: the entry with the smallest stamp is the least recently used.
    clock: u64,
}

#[derive(Debug)]
struct CachedLayout {
    dependencies_metadata: Vec<u8>,
    objects_metadata: Vec<u8>,
    layout: Arc<StreamLayout>,
    used: u64,
}

impl Default for LayoutCache {
    fn default() -> Self {
        Self::with_capacity(LAYOUT_CACHE_STREAMS)
    }
}

impl LayoutCache {
    /// A cache keeping at most `capacity` layouts.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Entries::default()),
            capacity: capacity.max(1),
            compiled: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The compiled layout of a stream of `process_id`.
    pub fn layout(&self, process_id: Uuid, stream: &StreamRecord) -> Result<Arc<StreamLayout>> {
        self.layout_of(
            process_id,
            stream.stream_id,
            &stream.dependencies_metadata,
            &stream.objects_metadata,
        )
    }

    /// The compiled layout of the stream with this metadata.
    pub fn layout_of(
        &self,
        process_id: Uuid,
        stream_id: Uuid,
        dependencies_metadata: &[u8],
        objects_metadata: &[u8],
    ) -> Result<Arc<StreamLayout>> {
        {
            let mut entries = self.lock();
            entries.clock += 1;
            let now = entries.clock;
            if let Some(c) = entries.layouts.get_mut(&stream_id)
                && c.dependencies_metadata == dependencies_metadata
                && c.objects_metadata == objects_metadata
            {
                c.used = now;
                return Ok(c.layout.clone());
            }
        }
        let layout = Arc::new(
            StreamLayout::from_cbor(dependencies_metadata, objects_metadata).map_err(|source| {
                Error::StreamMetadata {
                    process_id,
                    stream_id,
                    source,
                }
            })?,
        );
        self.compiled.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.lock();
        if entries.layouts.len() >= self.capacity
            && !entries.layouts.contains_key(&stream_id)
            && let Some(oldest) = (entries.layouts.iter())
                .min_by_key(|(_, c)| c.used)
                .map(|(id, _)| *id)
        {
            entries.layouts.remove(&oldest);
        }
        entries.clock += 1;
        let used = entries.clock;
        entries.layouts.insert(
            stream_id,
            CachedLayout {
                dependencies_metadata: dependencies_metadata.to_vec(),
                objects_metadata: objects_metadata.to_vec(),
                layout: layout.clone(),
                used,
            },
        );
        Ok(layout)
    }

    /// Layouts compiled so far (cache misses).
    pub fn compiled(&self) -> usize {
        self.compiled.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::encode_udt_list;

    fn stream(id: u128) -> StreamRecord {
        StreamRecord {
            stream_id: Uuid::from_u128(id),
            process_id: Uuid::nil(),
            dependencies_metadata: encode_udt_list(&[]),
            objects_metadata: encode_udt_list(&[]),
            tags: vec![],
            properties: vec![],
        }
    }

    #[test]
    fn the_least_recently_used_layout_goes_first() {
        let cache = LayoutCache::with_capacity(2);
        let (a, b, c) = (stream(1), stream(2), stream(3));
        cache.layout(Uuid::nil(), &a).unwrap();
        cache.layout(Uuid::nil(), &b).unwrap();
        cache.layout(Uuid::nil(), &a).unwrap(); // a is now the most recent
        assert_eq!(cache.compiled(), 2);
        cache.layout(Uuid::nil(), &c).unwrap(); // evicts b
        assert_eq!(cache.lock().layouts.len(), 2, "bounded");
        cache.layout(Uuid::nil(), &a).unwrap();
        assert_eq!(cache.compiled(), 3, "a stayed");
        cache.layout(Uuid::nil(), &b).unwrap();
        assert_eq!(cache.compiled(), 4, "b was evicted and is compiled again");
    }

    #[test]
    fn a_stream_id_with_other_metadata_is_compiled_again() {
        let cache = LayoutCache::default();
        let a = stream(1);
        cache.layout(Uuid::nil(), &a).unwrap();
        let mut changed = stream(1);
        changed.objects_metadata = encode_udt_list(&[crate::format::UserDefinedType {
            name: "Other".into(),
            size: 0,
            members: vec![],
            is_reference: false,
        }]);
        cache.layout(Uuid::nil(), &changed).unwrap();
        assert_eq!(cache.compiled(), 2);
        cache.layout(Uuid::nil(), &changed).unwrap();
        assert_eq!(cache.compiled(), 2);
    }
}
