//! The table classes of one process (`AsyncEventsTable`, `AsyncSpansTable`,
//! `ThreadStreamsTable`) and their Python arguments: a process id and time bounds.

use crate::capsules::Table;
use crate::lake::Lake;
use datafusion_async_events::metadata_tables::ThreadStreamsTable;
use datafusion_async_events::provider::{AsyncEventsTable, ScanOptions};
use datafusion_async_events::spans::AsyncSpansTable;
use datafusion_async_events::udtf::parse_process_id;
use datafusion_async_events::{TimeBounds, parse_time};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::sync::Arc;
use uuid::Uuid;

/// A process id and optional inclusive time bounds, from the Python arguments of class `what`.
fn process_and_bounds(
    what: &str,
    process_id: &str,
    begin: Option<&Bound<'_, PyAny>>,
    end: Option<&Bound<'_, PyAny>>,
) -> PyResult<(Uuid, TimeBounds)> {
    let pid = parse_process_id(what, process_id)
        .map_err(|e| PyValueError::new_err(e.strip_backtrace()))?;
    Ok((
        pid,
        TimeBounds::new(time_bound("begin", begin)?, time_bound("end", end)?),
    ))
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
        pub(crate) struct $export;

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
                let table = Table::new(Arc::new(table), format!("table {}", $name))?;
                Ok(PyClassInitializer::from(table).add_subclass(Self))
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
pub(crate) struct ThreadStreamsTableExport;

#[pymethods]
impl ThreadStreamsTableExport {
    #[new]
    fn new(lake: &Lake, process_id: &str) -> PyResult<PyClassInitializer<Self>> {
        let (pid, _) = process_and_bounds("ThreadStreamsTable", process_id, None, None)?;
        let table = ThreadStreamsTable::new(lake.get()?, pid);
        let table = Table::new(Arc::new(table), "table ThreadStreamsTable".into())?;
        Ok(PyClassInitializer::from(table).add_subclass(Self))
    }
}
