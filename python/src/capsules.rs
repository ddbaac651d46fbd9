//! The FFI capsules datafusion-python takes: [`LakeFunction`] (a table function) and [`Table`]
//! (a table provider with pushdown), each bound to the host's codec ([`host_codec`]), and
//! [`PropertyFunction`] (a scalar function on properties).

use crate::in_runtime::InRuntime;
use crate::runtime::Home;
use datafusion::catalog::{TableFunctionImpl, TableProvider};
use datafusion::logical_expr::ScalarUDF;
use datafusion_ffi::proto::logical_extension_codec::FFI_LogicalExtensionCodec;
use datafusion_ffi::table_provider::FFI_TableProvider;
use datafusion_ffi::udf::FFI_ScalarUDF;
use datafusion_ffi::udtf::FFI_TableFunction;
use pyo3::exceptions::PyImportError;
use pyo3::prelude::*;
use pyo3::types::PyCapsule;
use std::ptr::NonNull;
use std::sync::Arc;

/// The host's logical codec, from what a capsule getter receives: a `SessionContext` (Python
/// or Rust object), or the codec capsule itself. Refuses a host of another FFI major version.
pub(crate) fn host_codec(session: &Bound<'_, PyAny>) -> PyResult<FFI_LogicalExtensionCodec> {
    let capsule = if session.hasattr("__datafusion_logical_extension_codec__")? {
        session.call_method0("__datafusion_logical_extension_codec__")?
    } else {
        session.clone()
    };
    let capsule = capsule.cast::<PyCapsule>().map_err(|_| {
        PyImportError::new_err(
            "datafusion_async_events: expected a datafusion SessionContext (datafusion 55) or its \
             logical extension codec",
        )
    })?;
    let pointer: NonNull<FFI_LogicalExtensionCodec> = capsule
        .pointer_checked(Some(c"datafusion_logical_extension_codec"))?
        .cast();
    // SAFETY: the capsule is named as datafusion's logical codec capsules are, and holds an
    // `FFI_LogicalExtensionCodec` for as long as the capsule lives (we hold it here).
    let codec = unsafe { pointer.as_ref() };
    // SAFETY: `version` is a plain `extern "C" fn() -> u64` of every FFI version.
    let host = unsafe { (codec.version)() };
    let ours = datafusion_ffi::version();
    if host != ours {
        return Err(PyImportError::new_err(format!(
            "datafusion_async_events was built for DataFusion FFI major version {ours}, but the \
             datafusion package in use has FFI major version {host}: install datafusion=={ours}.* \
             or a datafusion_async_events built for it"
        )));
    }
    Ok(codec.clone())
}

/// One of the crate's table functions, exportable to datafusion-python:
/// `ctx.register_udtf(datafusion.TableFunction(f.name, f, ctx))`.
#[pyclass(frozen, module = "datafusion_async_events")]
pub(crate) struct LakeFunction {
    pub(crate) name: &'static str,
    /// An `InRuntimeFunction`: it drops what it holds inside the module runtime.
    pub(crate) function: Arc<dyn TableFunctionImpl>,
    pub(crate) home: Home,
}

#[pymethods]
impl LakeFunction {
    /// The SQL name of the function.
    #[getter]
    fn name(&self) -> &'static str {
        self.name
    }

    fn __repr__(&self) -> String {
        format!("<datafusion_async_events table function {}>", self.name)
    }

    fn __datafusion_table_function__<'py>(
        &self,
        py: Python<'py>,
        session: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        self.home
            .check(format_args!("the table function {}", self.name))?;
        let codec = host_codec(&session)?;
        let function = FFI_TableFunction::new_with_ffi_codec(
            self.function.clone(),
            Some(self.home.handle().clone()),
            codec,
        );
        PyCapsule::new_with_value(py, function, c"datafusion_table_function")
    }
}

/// A table provider exportable to datafusion-python with filter pushdown:
/// `ctx.register_table(name, table)`.
#[pyclass(frozen, subclass, module = "datafusion_async_events")]
pub(crate) struct Table {
    /// An [`InRuntime`]: it drops what it holds inside the module runtime.
    provider: Arc<dyn TableProvider>,
    home: Home,
    /// What it is, for errors: `table AsyncEventsTable`, `table blocks`.
    what: String,
}

impl Table {
    /// `provider`, made in this process, exported as the table `what` names.
    pub(crate) fn new(provider: Arc<dyn TableProvider>, what: String) -> PyResult<Self> {
        let home = Home::current()?;
        Ok(Self {
            provider: Arc::new(InRuntime::new(provider, home.clone(), what.clone())),
            home,
            what,
        })
    }
}

#[pymethods]
impl Table {
    fn __datafusion_table_provider__<'py>(
        &self,
        py: Python<'py>,
        session: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        self.home.check(&self.what)?;
        let codec = host_codec(&session)?;
        let provider = FFI_TableProvider::new_with_ffi_codec(
            self.provider.clone(),
            true,
            Some(self.home.handle().clone()),
            codec,
        );
        PyCapsule::new_with_value(py, provider, c"datafusion_table_provider")
    }

    fn __repr__(&self) -> String {
        format!("<datafusion_async_events table {}>", self.provider.schema())
    }
}

/// One of the crate's functions on properties (`property_get`, `jsonb_get`, …), exportable to
/// datafusion-python: `ctx.register_udf(datafusion.ScalarUDF.from_pycapsule(f))`. Pure
/// functions of their arguments: they need neither the lake nor the module runtime.
#[pyclass(frozen, module = "datafusion_async_events")]
pub(crate) struct PropertyFunction {
    udf: Arc<ScalarUDF>,
}

#[pymethods]
impl PropertyFunction {
    /// The SQL name of the function.
    #[getter]
    fn name(&self) -> String {
        self.udf.name().to_owned()
    }

    fn __repr__(&self) -> String {
        format!("<datafusion_async_events function {}>", self.udf.name())
    }

    /// The capsule datafusion-python's `ScalarUDF.from_pycapsule` reads; a session, when the
    /// host passes one, is checked for the FFI major version.
    #[pyo3(signature = (session=None))]
    fn __datafusion_scalar_udf__<'py>(
        &self,
        py: Python<'py>,
        session: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        if let Some(session) = &session {
            host_codec(session)?;
        }
        let udf = FFI_ScalarUDF::from(self.udf.clone());
        PyCapsule::new_with_value(py, udf, c"datafusion_scalar_udf")
    }
}

/// The functions on properties (see `register`).
#[pyfunction]
pub(crate) fn property_functions() -> Vec<PropertyFunction> {
    datafusion_async_events::properties::property_functions()
        .into_iter()
        .map(|udf| PropertyFunction { udf: Arc::new(udf) })
        .collect()
}
