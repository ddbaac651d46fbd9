//! The module's tokio runtime: one per OS process (a child made by `fork` makes its own), lake
//! I/O runs on it while datafusion-python drives queries from its own.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::runtime::{Handle, Runtime};

/// The module's tokio runtime, made on first use in each OS process. A child made by `fork`
/// gets a runtime of its own: the parent's worker threads do not exist in the child.
pub(crate) struct ModuleRuntime {
    pid: u32,
    pub runtime: Runtime,
}

static RUNTIME: Mutex<Option<Arc<ModuleRuntime>>> = Mutex::new(None);

pub(crate) fn runtime() -> PyResult<Arc<ModuleRuntime>> {
    let mut slot = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    if let Some(rt) = slot.as_ref() {
        if rt.pid == pid {
            return Ok(rt.clone());
        }
        // The parent's runtime, copied by fork without its threads: dropping it would wait for
        // workers that are not there, so it is leaked.
        std::mem::forget(slot.take());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("async-events")
        .enable_all()
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start a tokio runtime: {e}")))?;
    let rt = Arc::new(ModuleRuntime { pid, runtime });
    *slot = Some(rt.clone());
    Ok(rt)
}

pub(crate) fn handle() -> PyResult<Handle> {
    Ok(runtime()?.runtime.handle().clone())
}

/// Runs `future` to completion on the module runtime with the GIL released.
pub(crate) fn block_on<F>(py: Python<'_>, future: F) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let rt = runtime()?;
    Ok(py.detach(|| rt.runtime.block_on(future)))
}

/// Polls a future with the module runtime entered: what the FFI does not do around `scan`.
pub(crate) struct Entered<'h, F> {
    pub handle: &'h Handle,
    pub future: F,
}

impl<F: Future + Unpin> Future for Entered<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _entered = self.handle.enter();
        Pin::new(&mut self.future).poll(cx)
    }
}
