//! The module's tokio runtime and the process that owns it: one runtime per OS process (a child
//! made by `fork` makes its own), on which lake I/O runs while datafusion-python drives queries
//! from its own.
//!
//! Three duties follow from living inside a Python process:
//! - **Ctrl-C**: [`block_on`] runs our own blocking calls (opening a lake) while checking for
//!   Python signals, and cancels the future when one raises (`KeyboardInterrupt`).
//! - **Drops**: objects holding tokio resources (sqlx pools and their connections, spawned
//!   tasks) are dropped by whoever holds them last: Python's garbage collector, datafusion-python
//!   cancelling a query, the FFI releasing a stream. sqlx panics when it is dropped outside a
//!   tokio runtime, and a panic in an FFI release aborts the process, so [`Home::drop_here`]
//!   and [`DropInRuntime`] drop them inside the runtime, catching any panic.
//! - **fork**: a child made by `fork` has none of the parent's threads, so the parent's runtime
//!   and connections would wait forever there. Every object remembers its [`Home`] and refuses
//!   to be used in another process ([`ForkedProcessError`]); in such a child its resources are
//!   leaked rather than dropped (dropping them could wait on the parent's threads).

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use std::any::Any;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::runtime::{EnterGuard, Handle, Runtime};

pyo3::create_exception!(
    _native,
    ForkedProcessError,
    PyRuntimeError,
    "An object of the package was used in a process forked from the one that created it: its \
     tokio runtime and database connections do not survive a fork. Create it again (open the \
     Lake, make its tables and functions, register them) in the child."
);

/// How often a blocking call of ours checks for Python signals (Ctrl-C). Short enough that
/// Ctrl-C feels immediate, long enough that taking the GIL back costs nothing measurable.
const SIGNAL_CHECK_INTERVAL: Duration = Duration::from_millis(50);

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

/// Where an object was made: the OS process and the module runtime of that process. Objects
/// holding tokio resources keep it to check, on every use, that they are still in that process,
/// and to drop those resources inside that runtime.
#[derive(Debug, Clone)]
pub(crate) struct Home {
    pid: u32,
    handle: Handle,
}

/// The error of using an object in a process forked from the one that made it (the message is
/// the same through Python and through DataFusion).
#[derive(Debug)]
pub(crate) struct Forked(String);

impl std::fmt::Display for Forked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Forked {}

impl From<Forked> for PyErr {
    fn from(e: Forked) -> PyErr {
        ForkedProcessError::new_err(e.0)
    }
}

impl From<Forked> for datafusion::error::DataFusionError {
    fn from(e: Forked) -> Self {
        datafusion::error::DataFusionError::External(Box::new(e))
    }
}

impl Home {
    /// This process and its module runtime (started if needed).
    pub(crate) fn current() -> PyResult<Self> {
        let rt = runtime()?;
        Ok(Self {
            pid: rt.pid,
            handle: rt.runtime.handle().clone(),
        })
    }

    /// The handle of the runtime, for the FFI (which enters it around `execute` and polls).
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    fn is_here(&self) -> bool {
        self.pid == std::process::id()
    }

    /// Ok in the process that made the object; else the error saying that `what` must be made
    /// again in this process.
    pub(crate) fn check(&self, what: impl std::fmt::Display) -> Result<(), Forked> {
        if self.is_here() {
            return Ok(());
        }
        Err(Forked(format!(
            "{what} was created in process {}, but is used in process {}, a child made by fork: \
             its tokio runtime and database connections do not survive a fork. Create it again \
             in this process after the fork (open the Lake again, then make its tables and \
             functions from the new Lake and register them on a new SessionContext)",
            self.pid,
            std::process::id()
        )))
    }

    /// Enters the runtime (in the process that made the object; nothing in another).
    pub(crate) fn enter(&self) -> Option<EnterGuard<'_>> {
        self.is_here().then(|| self.handle.enter())
    }

    /// Drops `value` inside the runtime, turning a panic of its drop into a warning on stderr;
    /// in a process forked from the one that made it, leaks it (its threads are not here).
    pub(crate) fn drop_here<T>(&self, value: T) {
        let Some(_entered) = self.enter() else {
            std::mem::forget(value);
            return;
        };
        if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(value))) {
            // The default panic hook has already printed where it happened.
            let message = panic_message(payload.as_ref());
            forget_payload(payload);
            eprintln!("datafusion_async_events: a drop panicked (ignored): {message}");
        }
    }
}

/// A value dropped inside its [`Home`]'s runtime (see [`Home::drop_here`]).
pub(crate) struct DropInRuntime<T> {
    value: ManuallyDrop<T>,
    home: Home,
}

impl<T> DropInRuntime<T> {
    pub(crate) fn new(value: T, home: Home) -> Self {
        Self {
            value: ManuallyDrop::new(value),
            home,
        }
    }

    pub(crate) fn home(&self) -> &Home {
        &self.home
    }
}

impl<T> Deref for DropInRuntime<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> std::ops::DerefMut for DropInRuntime<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for DropInRuntime<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.value.fmt(f)
    }
}

impl<T> Drop for DropInRuntime<T> {
    fn drop(&mut self) {
        // SAFETY: `value` is taken once, here, and never used again.
        let value = unsafe { ManuallyDrop::take(&mut self.value) };
        self.home.drop_here(value);
    }
}

/// The text of a panic's payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}

/// Drops a panic's payload, whose own drop may panic (rust-lang/rust#86027): leaked then.
pub(crate) fn forget_payload(payload: Box<dyn Any + Send>) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}

/// Runs `future` to completion on the module runtime with the GIL released, checking for
/// Python signals every [`SIGNAL_CHECK_INTERVAL`]: when a signal handler raises (Ctrl-C:
/// `KeyboardInterrupt`), the future is dropped inside the runtime (cancelling its I/O) and the
/// exception is returned. A panic of the future is a `RuntimeError`, not an abort.
pub(crate) fn block_on<F>(py: Python<'_>, future: F) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let rt = runtime()?;
    let mut future = Box::pin(future);
    loop {
        let step = py.detach(|| {
            catch_unwind(AssertUnwindSafe(|| {
                rt.runtime.block_on(async {
                    tokio::time::timeout(SIGNAL_CHECK_INTERVAL, future.as_mut())
                        .await
                        .ok()
                })
            }))
        });
        let failure = match step {
            Ok(Some(output)) => return Ok(output),
            Ok(None) => py.check_signals().err(),
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                forget_payload(payload);
                Some(PyRuntimeError::new_err(format!(
                    "datafusion_async_events: an internal error (a panic): {message}"
                )))
            }
        };
        if let Some(error) = failure {
            // Cancelled: its connections and tasks are released inside the runtime.
            let _entered = rt.runtime.enter();
            if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(future))) {
                let message = panic_message(payload.as_ref());
                forget_payload(payload);
                eprintln!("datafusion_async_events: dropping a cancelled call panicked: {message}");
            }
            return Err(error);
        }
    }
}
