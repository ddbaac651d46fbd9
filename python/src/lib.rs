//! `datafusion_async_events._native`: the crate's table functions and tables exported to
//! datafusion-python through the DataFusion FFI (PyCapsules), plus the lake handle they read.
//!
//! Three rules of the FFI shape this module (see the README's "From Python"):
//! - The host never enters our tokio runtime around `TableProvider::scan`, and it enters it
//!   around `execute` and stream polls only when we hand it our runtime's handle. Every exported
//!   function and table therefore carries the handle, and every provider is wrapped so that its
//!   `scan` is polled inside the runtime (`in_runtime::InRuntime`).
//! - The host sees a plan's children but not what they require of their inputs, so every plan
//!   is handed over as one leaf (`in_runtime::Sealed`).
//! - No panic may reach Python: errors are Python exceptions carrying the crate's message.
//!   Every entry point the host calls through the FFI catches panics (`in_runtime`): a panic
//!   crossing an `extern "C"` function aborts the interpreter.
//! - Everything holding tokio resources is dropped inside the module runtime, wherever the host
//!   or Python's garbage collector releases it, and every object refuses to be used in a process
//!   forked from the one that made it (`runtime::Home`, `ForkedProcessError`).
//! - Our own blocking calls (opening a lake) answer Ctrl-C with `KeyboardInterrupt` and cancel
//!   their I/O (`runtime::block_on`); queries are driven by datafusion-python, whose own Ctrl-C
//!   handling cancels them (see the package's docstring).

mod capsules;
mod in_runtime;
mod lake;
mod runtime;
mod tables;

use capsules::{LakeFunction, PropertyFunction, Table, property_functions};
use lake::{Lake, LakeError};
use pyo3::prelude::*;
use runtime::ForkedProcessError;
use tables::{AsyncEventsTableExport, AsyncSpansTableExport, ThreadStreamsTableExport};

/// `sql` with the predicates DataFusion 55 answers wrongly rewritten into equivalent forms it
/// answers right (the crate's analyzer rule cannot cross the FFI into datafusion-python).
#[pyfunction]
fn correct_sql(sql: &str) -> String {
    datafusion_async_events::correct_sql(sql)
}

/// The DataFusion FFI major version this module was built with (the host's must be equal).
#[pyfunction]
fn ffi_major_version() -> u64 {
    datafusion_ffi::version()
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Lake>()?;
    m.add_class::<LakeFunction>()?;
    m.add_class::<Table>()?;
    m.add_class::<PropertyFunction>()?;
    m.add_class::<AsyncEventsTableExport>()?;
    m.add_class::<AsyncSpansTableExport>()?;
    m.add_class::<ThreadStreamsTableExport>()?;
    m.add("LakeError", m.py().get_type::<LakeError>())?;
    m.add(
        "ForkedProcessError",
        m.py().get_type::<ForkedProcessError>(),
    )?;
    m.add_function(wrap_pyfunction!(ffi_major_version, m)?)?;
    m.add_function(wrap_pyfunction!(correct_sql, m)?)?;
    m.add_function(wrap_pyfunction!(property_functions, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
