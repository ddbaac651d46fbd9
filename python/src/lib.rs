//! `datafusion_async_events._native`: the crate's table functions and tables exported to
//! datafusion-python through the DataFusion FFI (PyCapsules), plus the lake handle they read.
//!
//! Three rules of the FFI shape this module (see the README's "From Python"):
//! - The host never enters our tokio runtime around `TableProvider::scan`, and it enters it
//!   around `execute` and stream polls only when we hand it our runtime's handle. Every exported
//!   function and table therefore carries the handle, and every provider is wrapped so that its
//!   `scan` is polled inside the runtime ([`InRuntime`]).
//! - The host sees a plan's children but not what they require of their inputs, so every plan
//!   is handed over as one leaf ([`Sealed`]).
//! - No panic may reach Python: errors are Python exceptions carrying the crate's message.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result as DfResult, Statistics, internal_err};
use datafusion::datasource::TableType;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::{MetricValue, MetricsSet};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, displayable,
};
use datafusion_async_events::provider::{AsyncEventsTable, AsyncSpansTable, ScanOptions};
use datafusion_async_events::provider::{MetadataTable, ThreadStreamsTable, parse_time};
use datafusion_async_events::udtf::parse_process_id;
use datafusion_ffi::proto::logical_extension_codec::FFI_LogicalExtensionCodec;
use datafusion_ffi::table_provider::FFI_TableProvider;
use datafusion_ffi::udtf::FFI_TableFunction;
use pyo3::exceptions::{PyException, PyImportError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyCapsule;
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::runtime::{Handle, Runtime};
use uuid::Uuid;

pyo3::create_exception!(
    _native,
    LakeError,
    PyException,
    "A lake could not be opened or read (the message names the database, store or process)."
);

/// The module's tokio runtime, made on first use in each OS process. A child made by `fork`
/// gets a runtime of its own: the parent's worker threads do not exist in the child.
struct ModuleRuntime {
    pid: u32,
    runtime: Runtime,
}

static RUNTIME: Mutex<Option<Arc<ModuleRuntime>>> = Mutex::new(None);

fn runtime() -> PyResult<Arc<ModuleRuntime>> {
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

fn handle() -> PyResult<Handle> {
    Ok(runtime()?.runtime.handle().clone())
}

/// Runs `future` to completion on the module runtime with the GIL released.
fn block_on<F>(py: Python<'_>, future: F) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let rt = runtime()?;
    Ok(py.detach(|| rt.runtime.block_on(future)))
}

fn lake_error(e: impl std::fmt::Display) -> PyErr {
    LakeError::new_err(e.to_string())
}

/// A micromegas data lake: the metadata database and the object store of block payloads.
///
/// Open it with `Lake.from_env()` (micromegas's `MICROMEGAS_SQL_CONNECTION_STRING` and
/// `MICROMEGAS_OBJECT_STORE_URI`, else the embedded `./lake`), `Lake.open(db_url, store_url)` or
/// `Lake.embedded(folder)`.
#[pyclass(frozen, module = "datafusion_async_events")]
struct Lake {
    lake: datafusion_async_events::Lake,
    /// The OS process that opened it: connections do not survive a fork.
    pid: u32,
}

impl Lake {
    fn opened(lake: datafusion_async_events::Lake) -> Self {
        Self {
            lake,
            pid: std::process::id(),
        }
    }

    /// The lake, if this process opened it.
    fn get(&self) -> PyResult<datafusion_async_events::Lake> {
        if self.pid != std::process::id() {
            return Err(PyRuntimeError::new_err(format!(
                "this Lake ({}) was opened in process {} before a fork; its connections do not \
                 survive a fork: open the lake again in this process",
                self.lake.database_url(),
                self.pid
            )));
        }
        Ok(self.lake.clone())
    }
}

#[pymethods]
impl Lake {
    /// The lake named by micromegas's environment variables, else the embedded `./lake`.
    #[staticmethod]
    fn from_env(py: Python<'_>) -> PyResult<Self> {
        let lake = block_on(py, datafusion_async_events::Lake::from_env())?;
        Ok(Self::opened(lake.map_err(lake_error)?))
    }

    /// A lake from its metadata database URL (`postgres://…` or `sqlite://…`) and object store
    /// URL (`file://…`, or `s3://…`/`gs://…`/`az://…` when built with those features).
    #[staticmethod]
    fn open(py: Python<'_>, db_url: &str, store_url: &str) -> PyResult<Self> {
        let lake = block_on(py, datafusion_async_events::Lake::open(db_url, store_url))?;
        Ok(Self::opened(lake.map_err(lake_error)?))
    }

    /// The embedded lake in `folder` (SQLite `telemetry.db` and the blobs beside it), created
    /// if missing.
    #[staticmethod]
    fn embedded(py: Python<'_>, folder: std::path::PathBuf) -> PyResult<Self> {
        let lake = block_on(py, datafusion_async_events::Lake::embedded(folder))?;
        Ok(Self::opened(lake.map_err(lake_error)?))
    }

    /// The metadata database URL (without password).
    #[getter]
    fn database_url(&self) -> &str {
        self.lake.database_url()
    }

    /// The object store URL.
    #[getter]
    fn store_url(&self) -> &str {
        self.lake.store_url()
    }

    fn __repr__(&self) -> String {
        format!(
            "Lake(database_url={:?}, store_url={:?})",
            self.lake.database_url(),
            self.lake.store_url()
        )
    }

    /// Records a small instrumented tokio service (the CLI's `quickstart` workload: requests,
    /// fan-outs on other workers, futures dropped at a deadline, background jobs) into the
    /// lake, and returns its process id. `waves` of 25 requests each; 20 take about a second.
    /// Once per Python process: micromegas's tracing dispatch is process-wide.
    #[pyo3(signature = (waves = 20))]
    fn record_demo(&self, py: Python<'_>, waves: u64) -> PyResult<String> {
        let lake = self.get()?;
        let (pid, _) = py
            .detach(|| datafusion_async_events::recorder::demo::record(lake, waves))
            .map_err(lake_error)?;
        Ok(pid.to_string())
    }

    /// The table functions to register on a `SessionContext` (see `register`):
    /// `async_events`, `async_spans`, `view_instance`, `thread_streams`.
    #[pyo3(signature = (*, time_margin_s = None, span_margin_s = None, skip_corrupt_blocks = false))]
    fn table_functions(
        &self,
        time_margin_s: Option<f64>,
        span_margin_s: Option<f64>,
        skip_corrupt_blocks: bool,
    ) -> PyResult<Vec<LakeFunction>> {
        let options = scan_options(time_margin_s, span_margin_s, skip_corrupt_blocks)?;
        let handle = handle()?;
        Ok(
            datafusion_async_events::table_functions(self.get()?, options)
                .into_iter()
                .map(|(name, function)| LakeFunction {
                    name,
                    function: Arc::new(InRuntimeFunction {
                        inner: function,
                        handle: handle.clone(),
                    }),
                    handle: handle.clone(),
                })
                .collect(),
        )
    }

    /// The lake's `processes`, `streams` and `blocks` tables, by name (see `register`).
    fn metadata_tables(&self) -> PyResult<Vec<(&'static str, Table)>> {
        let lake = self.get()?;
        let tables = [
            ("processes", MetadataTable::processes(lake.clone())),
            ("streams", MetadataTable::streams(lake.clone())),
            ("blocks", MetadataTable::blocks(lake)),
        ];
        tables
            .into_iter()
            .map(|(name, table)| Ok((name, Table::new(Arc::new(table))?)))
            .collect()
    }
}

fn scan_options(
    time_margin_s: Option<f64>,
    span_margin_s: Option<f64>,
    skip_corrupt_blocks: bool,
) -> PyResult<ScanOptions> {
    let seconds = |name: &str, s: f64| {
        std::time::Duration::try_from_secs_f64(s)
            .map_err(|_| PyValueError::new_err(format!("{name}: {s} is not a duration in seconds")))
    };
    let mut options = ScanOptions {
        skip_corrupt_blocks,
        ..ScanOptions::default()
    };
    if let Some(s) = time_margin_s {
        options.time_margin = seconds("time_margin_s", s)?;
    }
    if let Some(s) = span_margin_s {
        options.span_margin = seconds("span_margin_s", s)?;
    }
    Ok(options)
}

/// The host's logical codec, from what a capsule getter receives: a `SessionContext` (Python
/// or Rust object), or the codec capsule itself. Refuses a host of another FFI major version.
fn host_codec(session: &Bound<'_, PyAny>) -> PyResult<FFI_LogicalExtensionCodec> {
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
struct LakeFunction {
    name: &'static str,
    function: Arc<dyn TableFunctionImpl>,
    handle: Handle,
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
        let codec = host_codec(&session)?;
        let function = FFI_TableFunction::new_with_ffi_codec(
            self.function.clone(),
            Some(self.handle.clone()),
            codec,
        );
        PyCapsule::new_with_value(py, function, c"datafusion_table_function")
    }
}

/// A table provider exportable to datafusion-python with filter pushdown:
/// `ctx.register_table(name, table)`.
#[pyclass(frozen, subclass, module = "datafusion_async_events")]
struct Table {
    provider: Arc<dyn TableProvider>,
    handle: Handle,
}

impl Table {
    fn new(provider: Arc<dyn TableProvider>) -> PyResult<Self> {
        let handle = handle()?;
        Ok(Self {
            provider: Arc::new(InRuntime {
                inner: provider,
                handle: handle.clone(),
            }),
            handle,
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
        let codec = host_codec(&session)?;
        let provider = FFI_TableProvider::new_with_ffi_codec(
            self.provider.clone(),
            true,
            Some(self.handle.clone()),
            codec,
        );
        PyCapsule::new_with_value(py, provider, c"datafusion_table_provider")
    }

    fn __repr__(&self) -> String {
        format!("<datafusion_async_events table {}>", self.provider.schema())
    }
}

/// Inclusive time bounds, ns since the epoch; `None` for an open side.
type Bounds = (Option<i64>, Option<i64>);

/// A process id and optional inclusive time bounds, from the Python arguments of class `what`.
fn process_and_bounds(
    what: &str,
    process_id: &str,
    begin: Option<&Bound<'_, PyAny>>,
    end: Option<&Bound<'_, PyAny>>,
) -> PyResult<(Uuid, Bounds)> {
    let pid = parse_process_id(what, process_id)
        .map_err(|e| PyValueError::new_err(e.strip_backtrace()))?;
    Ok((pid, (time_bound("begin", begin)?, time_bound("end", end)?)))
}

/// A time bound in ns since the epoch: `None`, an int (ns), a string as the table functions
/// take it (RFC 3339), or a timezone-aware `datetime` (pandas `Timestamp` included).
fn time_bound(what: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<i64>> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    if let Ok(ns) = value.extract::<i64>() {
        return Ok(Some(ns));
    }
    let text: String = if let Ok(s) = value.extract::<String>() {
        s
    } else if value.hasattr("isoformat")? {
        value.call_method0("isoformat")?.extract()?
    } else {
        return Err(PyValueError::new_err(format!(
            "{what}: expected None, ns since the epoch (int), an RFC 3339 string or a \
             timezone-aware datetime, got {}",
            value.get_type().name()?
        )));
    };
    parse_time(&text).map(Some).ok_or_else(|| {
        PyValueError::new_err(format!(
            "{what}: '{text}' is not an RFC 3339 time with a UTC offset (a naive datetime \
                 has none: give it a timezone)"
        ))
    })
}

/// A Python class exporting a table of one process, optionally bounded in time:
/// `Class(lake, process_id, begin=None, end=None)`.
macro_rules! process_table {
    ($(#[$doc:meta])* $export:ident, $name:literal, $table:ident) => {
        $(#[$doc])*
        #[pyclass(frozen, extends = Table, name = $name, module = "datafusion_async_events")]
        struct $export;

        #[pymethods]
        impl $export {
            #[new]
            #[pyo3(signature = (lake, process_id, begin = None, end = None))]
            fn new(
                lake: &Lake,
                process_id: &str,
                begin: Option<&Bound<'_, PyAny>>,
                end: Option<&Bound<'_, PyAny>>,
            ) -> PyResult<PyClassInitializer<Self>> {
                let (pid, bounds) = process_and_bounds($name, process_id, begin, end)?;
                let table = $table::new(lake.get()?, pid, bounds, ScanOptions::default());
                Ok(PyClassInitializer::from(Table::new(Arc::new(table))?).add_subclass(Self))
            }
        }
    };
}

process_table!(
    /// `AsyncEventsTable(lake, process_id, begin=None, end=None)`: a process's async events as
    /// a table whose `WHERE` filters (time, event_type, name, target, depth, span_id,
    /// stream_id, …) are pushed into the scan and prune blocks.
    AsyncEventsTableExport,
    "AsyncEventsTable",
    AsyncEventsTable
);

process_table!(
    /// `AsyncSpansTable(lake, process_id, begin=None, end=None)`: a process's spans (begin and
    /// end paired) as a table with filter pushdown.
    AsyncSpansTableExport,
    "AsyncSpansTable",
    AsyncSpansTable
);

/// `ThreadStreamsTable(lake, process_id)`: the thread name and id of each `cpu` stream.
#[pyclass(frozen, extends = Table, name = "ThreadStreamsTable", module = "datafusion_async_events")]
struct ThreadStreamsTableExport;

#[pymethods]
impl ThreadStreamsTableExport {
    #[new]
    fn new(lake: &Lake, process_id: &str) -> PyResult<PyClassInitializer<Self>> {
        let (pid, _) = process_and_bounds("ThreadStreamsTable", process_id, None, None)?;
        let table = ThreadStreamsTable::new(lake.get()?, pid);
        Ok(PyClassInitializer::from(Table::new(Arc::new(table))?).add_subclass(Self))
    }
}

/// Polls a future with the module runtime entered: what the FFI does not do around `scan`.
struct Entered<'h, F> {
    handle: &'h Handle,
    future: F,
}

impl<F: Future + Unpin> Future for Entered<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _entered = self.handle.enter();
        Pin::new(&mut self.future).poll(cx)
    }
}

/// A table provider whose `scan` runs inside the module runtime (lake I/O needs it).
#[derive(Debug)]
struct InRuntime {
    inner: Arc<dyn TableProvider>,
    handle: Handle,
}

#[async_trait::async_trait]
impl TableProvider for InRuntime {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    fn statistics(&self) -> Option<Statistics> {
        self.inner.statistics()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let future = self.inner.scan(state, projection, filters, limit);
        let plan = Entered {
            handle: &self.handle,
            future,
        }
        .await?;
        Ok(Arc::new(Sealed { inner: plan }))
    }
}

/// A scan's physical plan shown to the host as one leaf.
///
/// The FFI exposes a plan's children but not their requirements (required input distribution
/// and ordering), so the host's optimizer would rewrite the inside of our plans blindly: seen
/// with `async_spans`, whose pairing needs its input merged into one partition in time order,
/// and whose merge the host split again with a round-robin repartition. Sealed, the plan runs
/// exactly as the crate built it; the host optimizes what lies above it.
#[derive(Debug)]
struct Sealed {
    inner: Arc<dyn ExecutionPlan>,
}

impl DisplayAs for Sealed {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}", displayable(self.inner.as_ref()).one_line())
    }
}

impl ExecutionPlan for Sealed {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            return Ok(self);
        }
        internal_err!(
            "{} is a leaf for its host: it takes no children",
            self.name()
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        self.inner.execute(partition, context)
    }

    /// The metrics of the whole plan, so that EXPLAIN ANALYZE in the host shows the scan's
    /// counters: every metric of the top operator, and the named counters, gauges and times of
    /// the operators below (`blocks_pruned`, `events_decoded`, …) whose names are not taken by
    /// an operator above. Baseline metrics (`output_rows`, `elapsed_compute`, …) stay the top's.
    fn metrics(&self) -> Option<MetricsSet> {
        let mut set = MetricsSet::new();
        let mut taken = std::collections::HashSet::new();
        let mut level = vec![&self.inner];
        let mut top = true;
        while !level.is_empty() {
            let mut names = Vec::new();
            for plan in &level {
                for metric in plan.metrics().iter().flat_map(|m| m.iter()) {
                    let named = matches!(
                        metric.value(),
                        MetricValue::Count { .. }
                            | MetricValue::Gauge { .. }
                            | MetricValue::Time { .. }
                    );
                    let name = metric.value().name();
                    if top || (named && !taken.contains(name)) {
                        names.push(name.to_string());
                        set.push(metric.clone());
                    }
                }
            }
            taken.extend(names);
            level = level.iter().flat_map(|p| p.children()).collect();
            top = false;
        }
        Some(set)
    }
}

/// A table function whose tables scan inside the module runtime.
#[derive(Debug)]
struct InRuntimeFunction {
    inner: Arc<dyn TableFunctionImpl>,
    handle: Handle,
}

impl TableFunctionImpl for InRuntimeFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let inner = self.inner.call_with_args(args)?;
        Ok(Arc::new(InRuntime {
            inner,
            handle: self.handle.clone(),
        }))
    }
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
    m.add_class::<AsyncEventsTableExport>()?;
    m.add_class::<AsyncSpansTableExport>()?;
    m.add_class::<ThreadStreamsTableExport>()?;
    m.add("LakeError", m.py().get_type::<LakeError>())?;
    m.add_function(wrap_pyfunction!(ffi_major_version, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
