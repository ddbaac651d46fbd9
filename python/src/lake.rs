//! `Lake`: a micromegas data lake opened from Python, and the functions and tables it exports.

use crate::capsules::{LakeFunction, Table};
use crate::in_runtime::InRuntimeFunction;
use crate::runtime::{DropInRuntime, Home, block_on};
use datafusion_async_events::metadata_tables::MetadataTable;
use datafusion_async_events::provider::ScanOptions;
use pyo3::exceptions::PyException;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::sync::Arc;

pyo3::create_exception!(
    _native,
    LakeError,
    PyException,
    "A lake could not be opened or read (the message names the database, store or process)."
);

pub(crate) fn lake_error(e: impl std::fmt::Display) -> PyErr {
    LakeError::new_err(e.to_string())
}

/// A micromegas data lake: the metadata database and the object store of block payloads.
///
/// Open it with `Lake.from_env()` (micromegas's `MICROMEGAS_SQL_CONNECTION_STRING` and
/// `MICROMEGAS_OBJECT_STORE_URI`, else the embedded `./lake`), `Lake.open(db_url, store_url)` or
/// `Lake.embedded(folder)`. Ctrl-C while one of them waits for the database raises
/// `KeyboardInterrupt` and cancels the connection.
///
/// A `Lake` (and every table and function made from it) belongs to the process that opened it:
/// used in a child made by `os.fork()` it raises `ForkedProcessError`; open the lake again in
/// the child.
#[pyclass(frozen, module = "datafusion_async_events")]
pub(crate) struct Lake {
    /// Dropped inside the module runtime of the process that opened it (its sqlx pool needs
    /// one), which it also remembers: connections do not survive a fork.
    lake: DropInRuntime<datafusion_async_events::Lake>,
}

impl Lake {
    fn opened(lake: datafusion_async_events::Lake) -> PyResult<Self> {
        Ok(Self {
            lake: DropInRuntime::new(lake, Home::current()?),
        })
    }

    /// The lake, if this process opened it (else a `ForkedProcessError`).
    pub(crate) fn get(&self) -> PyResult<datafusion_async_events::Lake> {
        self.lake
            .home()
            .check(format_args!("this Lake ({})", self.lake.database_url()))?;
        Ok((*self.lake).clone())
    }
}

#[pymethods]
impl Lake {
    /// The lake named by micromegas's environment variables, else the embedded `./lake`.
    /// Read-only unless `writable` (for `record_demo`).
    #[staticmethod]
    #[pyo3(signature = (*, writable = false))]
    fn from_env(py: Python<'_>, writable: bool) -> PyResult<Self> {
        let options = lake_options(writable);
        let lake = block_on(py, datafusion_async_events::Lake::from_env_with(options))?;
        Self::opened(lake.map_err(lake_error)?)
    }

    /// A lake from its metadata database URL (`postgres://…` or `sqlite://…`) and object store
    /// URL (`file://…`, or `s3://…`/`gs://…`/`az://…` when built with those features).
    /// Read-only unless `writable`.
    #[staticmethod]
    #[pyo3(signature = (db_url, store_url, *, writable = false))]
    fn open(py: Python<'_>, db_url: &str, store_url: &str, writable: bool) -> PyResult<Self> {
        let options = lake_options(writable);
        let open = datafusion_async_events::Lake::open_with(db_url, store_url, options);
        let lake = block_on(py, open)?;
        Self::opened(lake.map_err(lake_error)?)
    }

    /// The embedded lake in `folder` (SQLite `telemetry.db` and the blobs beside it): read-only,
    /// or, when `writable`, created if missing.
    #[staticmethod]
    #[pyo3(signature = (folder, *, writable = false))]
    fn embedded(py: Python<'_>, folder: std::path::PathBuf, writable: bool) -> PyResult<Self> {
        let open = datafusion_async_events::Lake::embedded_with(folder, lake_options(writable));
        let lake = block_on(py, open)?;
        Self::opened(lake.map_err(lake_error)?)
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
    /// Once per Python process: micromegas's tracing dispatch is process-wide. It cannot be
    /// cancelled: Ctrl-C raises `KeyboardInterrupt` when the recording has finished.
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
    #[pyo3(signature = (*, span_margin_s = None, skip_corrupt_blocks = false))]
    fn table_functions(
        &self,
        span_margin_s: Option<f64>,
        skip_corrupt_blocks: bool,
    ) -> PyResult<Vec<LakeFunction>> {
        let options = scan_options(span_margin_s, skip_corrupt_blocks)?;
        let lake = self.get()?;
        let home = Home::current()?;
        Ok(datafusion_async_events::table_functions(lake, options)
            .into_iter()
            .map(|(name, function)| LakeFunction {
                name,
                function: Arc::new(InRuntimeFunction::new(function, home.clone(), name)),
                home: home.clone(),
            })
            .collect())
    }

    /// The `table_functions` table: each table function with its arguments, results and an
    /// example (see `register`).
    fn functions_table(&self) -> PyResult<Table> {
        let names: Vec<&str> =
            datafusion_async_events::table_functions(self.get()?, ScanOptions::default())
                .into_iter()
                .map(|(name, _)| name)
                .collect();
        let table = datafusion_async_events::udtf::table_functions_table(&names)
            .map_err(|e| PyException::new_err(e.to_string()))?;
        Table::new(table, "table table_functions".to_owned())
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
            .map(|(name, table)| Ok((name, Table::new(Arc::new(table), format!("table {name}"))?)))
            .collect()
    }
}

fn scan_options(span_margin_s: Option<f64>, skip_corrupt_blocks: bool) -> PyResult<ScanOptions> {
    let seconds = |name: &str, s: f64| {
        std::time::Duration::try_from_secs_f64(s)
            .map_err(|_| PyValueError::new_err(format!("{name}: {s} is not a duration in seconds")))
    };
    let mut options = ScanOptions {
        skip_corrupt_blocks,
        ..ScanOptions::default()
    };
    if let Some(s) = span_margin_s {
        options.span_margin = seconds("span_margin_s", s)?;
    }
    Ok(options)
}

fn lake_options(writable: bool) -> datafusion_async_events::lake::LakeOptions {
    datafusion_async_events::lake::LakeOptions {
        writable,
        ..Default::default()
    }
}
