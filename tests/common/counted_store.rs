//! An object store in front of a lake's own that counts the blob reads it is asked for, and can
//! hold them until the test lets them through: what a scan fetches, and when, becomes an
//! observable event instead of a matter of timing.

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Counts of blob reads.
#[derive(Debug, Default)]
pub struct Counts {
    /// Reads asked for.
    pub started: AtomicUsize,
    /// Reads answered.
    pub finished: AtomicUsize,
    /// Reads abandoned before their answer (the reader was dropped).
    pub abandoned: AtomicUsize,
}

/// The store (see the module documentation). Reads wait for a permit of `gate` (none are given
/// until the test adds them) unless the store was made open.
#[derive(Debug, Clone)]
pub struct CountedStore {
    inner: Arc<dyn ObjectStore>,
    pub counts: Arc<Counts>,
    gate: Option<Arc<Semaphore>>,
}

impl fmt::Display for CountedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CountedStore({})", self.inner)
    }
}

/// Marks a read abandoned unless it was answered.
struct ReadGuard {
    counts: Arc<Counts>,
    done: bool,
}

impl Drop for ReadGuard {
    fn drop(&mut self) {
        if !self.done {
            self.counts.abandoned.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl CountedStore {
    /// Counts the reads of `inner`, letting them through.
    pub fn open(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            counts: Arc::default(),
            gate: None,
        }
    }

    /// Counts the reads of `inner`, each held until [`allow`](Self::allow) lets it through.
    pub fn gated(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            gate: Some(Arc::new(Semaphore::new(0))),
            ..Self::open(inner)
        }
    }

    /// Lets `n` more reads through.
    pub fn allow(&self, n: usize) {
        if let Some(gate) = &self.gate {
            gate.add_permits(n);
        }
    }

    pub fn started(&self) -> usize {
        self.counts.started.load(Ordering::SeqCst)
    }

    pub fn finished(&self) -> usize {
        self.counts.finished.load(Ordering::SeqCst)
    }

    pub fn abandoned(&self) -> usize {
        self.counts.abandoned.load(Ordering::SeqCst)
    }

    /// Waits until `condition` holds on the counts, at most `WAIT`; panics with `what` after.
    pub async fn wait_for(&self, what: &str, condition: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !condition(self) {
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "{what}: not reached in {WAIT:?} (started {}, finished {}, abandoned {})",
                    self.started(),
                    self.finished(),
                    self.abandoned()
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// How long an awaited event may take on a loaded machine before the test fails: a deadline,
/// not a pause (the wait ends as soon as the event happens).
pub const WAIT: Duration = Duration::from_secs(30);

#[async_trait]
impl ObjectStore for CountedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.counts.started.fetch_add(1, Ordering::SeqCst);
        let mut guard = ReadGuard {
            counts: self.counts.clone(),
            done: false,
        };
        if let Some(gate) = &self.gate {
            gate.acquire()
                .await
                .expect("the gate is never closed")
                .forget();
        }
        let result = self.inner.get_opts(location, options).await;
        guard.done = true;
        self.counts.finished.fetch_add(1, Ordering::SeqCst);
        result
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}
