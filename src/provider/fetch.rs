//! Fetching one block: from the object store, or from another scan of the same query that
//! reads it too ([`super::block_sharing`]), each fetch a task of its own.

use super::block_sharing::SharedRead;
use super::metrics::PartitionMetrics;
use super::planning::ScanState;
use super::runtime::ScanRuntime;
use crate::error::Error;
use crate::format::DecompressedBlock;
use crate::lake::BlockRecord;
use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A fetched block: its blob, or its buffers decompressed once for several scans.
pub(crate) enum Payload {
    Blob(Bytes),
    Decompressed(Arc<DecompressedBlock>),
}

pub(crate) struct Fetched {
    pub block: BlockRecord,
    /// `None`: the blob was missing and the lake skips missing blobs.
    pub payload: Option<Payload>,
}

pub(crate) type FetchFuture = Pin<Box<dyn Future<Output = Result<Fetched, Error>> + Send>>;

/// A block fetch running as a task of its own, aborted when dropped.
///
/// Fetches hold resources shared beyond their partition: a permit of the scan's fetch
/// semaphore, and the lock of a block shared with another scan of the query while it loads.
/// Consumers poll partitions unevenly (a sort-preserving merge polls one partition at a time, a
/// join reads one side before the other), so a fetch that only ran when its partition is polled
/// could hold them while nobody polls it, and stall every other partition: as a task it
/// finishes, and releases them, on its own.
pub(crate) struct SpawnedFetch(pub tokio::task::JoinHandle<Result<Fetched, Error>>);

impl Future for SpawnedFetch {
    type Output = Result<Fetched, Error>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|joined| match joined {
            Ok(result) => result,
            Err(e) => Err(Error::Internal(format!("a block fetch task failed: {e}"))),
        })
    }
}

impl Drop for SpawnedFetch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) fn block_error(
    state: &ScanState,
    block: &BlockRecord,
    source: crate::format::FormatError,
) -> Error {
    Error::Block {
        process_id: state.process_id,
        stream_id: block.stream_id,
        block_id: block.block_id,
        source,
    }
}

/// Fetches a block, or obtains it from another scan of the same query that reads it too.
pub(crate) async fn fetch(
    state: Arc<ScanState>,
    runtime: Arc<ScanRuntime>,
    block: BlockRecord,
    metrics: PartitionMetrics,
) -> Result<Fetched, Error> {
    let _permit = runtime
        .fetches
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| Error::Internal("the scan's fetch semaphore was closed".into()))?;
    let get = || async {
        let timer = metrics.fetch_time.timer();
        let blob = runtime.lake.fetch_blob(&block).await?;
        drop(timer);
        match &blob {
            Some(b) => {
                metrics.blocks_fetched.add(1);
                metrics.bytes_fetched.add(b.len());
            }
            None => {
                log::warn!(
                    "skipped block {} of stream {} (process {}): its blob is missing from the object store",
                    block.block_id,
                    block.stream_id,
                    state.process_id
                );
                metrics.blocks_missing.add(1)
            }
        }
        Ok::<_, Error>(blob)
    };
    let load = async {
        let Some(blob) = get().await? else {
            return Ok(None);
        };
        let _timer = metrics.decode_time.timer();
        DecompressedBlock::from_blob_limited(&blob, true, state.options.max_inflated_bytes)
            .map(|d| Some(Arc::new(d)))
            .map_err(|e| block_error(&state, &block, e))
    };
    let payload = match runtime.registration.obtain(block.block_id, load).await? {
        SharedRead::NotShared => get().await?.map(Payload::Blob),
        SharedRead::LoadedForOthers(shared) => shared.map(Payload::Decompressed),
        SharedRead::LoadedByAnother(shared) => {
            metrics.blocks_shared.add(1);
            shared.map(Payload::Decompressed)
        }
    };
    runtime.registration.release(block.block_id);
    Ok(Fetched { block, payload })
}
