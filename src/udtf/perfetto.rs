//! `perfetto_trace_chunks(process_id, span_types [, begin, end])`: micromegas's function, a
//! Perfetto trace of a process in ordered chunks (written by [`crate::timeline::perfetto`]).

use super::args::{bounds_args, process_arg, string_arg};
use super::{TableFunctions, constant};
use crate::thread_spans::{Flavor, SpanTypes, ThreadSpansOf};
use crate::time_bounds::TimeBounds;
use crate::timeline::perfetto::PerfettoTraceTable;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, plan_err};
use std::sync::Arc;

/// The functions of this file, by name.
pub(super) fn functions(
    tables: &Arc<TableFunctions>,
) -> Vec<(&'static str, Arc<dyn TableFunctionImpl>)> {
    vec![(
        "perfetto_trace_chunks",
        Arc::new(PerfettoTraceChunks(tables.clone())),
    )]
}

/// `perfetto_trace_chunks(process_id, span_types [, begin, end])`.
#[derive(Debug)]
struct PerfettoTraceChunks(Arc<TableFunctions>);

impl TableFunctionImpl for PerfettoTraceChunks {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        const NAME: &str = "perfetto_trace_chunks";
        let exprs = args.exprs();
        let (pid, span_types, range) = match exprs {
            [pid, span_types] => (pid, span_types, None),
            [pid, span_types, range @ ..] if range.len() == 2 => (pid, span_types, Some(range)),
            _ => {
                return plan_err!(
                    "{NAME} takes (process_id, span_types, begin, end) or (process_id, \
                     span_types), got {} arguments",
                    exprs.len()
                );
            }
        };
        let pid = process_arg(NAME, &args, pid)?;
        let span_types = string_arg(NAME, "span_types", constant(&args, span_types))?;
        let types = match SpanTypes::parse(span_types.trim().to_ascii_lowercase().as_str()) {
            Ok(types) => types,
            Err(_) => {
                return plan_err!(
                    "span_types must be 'thread', 'async', or 'both', given: {span_types}"
                );
            }
        };
        let bounds = match range {
            Some(range) => bounds_args(NAME, &args, range)?,
            None => TimeBounds::ALL,
        };
        Ok(Arc::new(PerfettoTraceTable::with_types(
            types,
            self.0.spans_table(pid, bounds),
            self.0
                .thread_spans_table(ThreadSpansOf::Process(pid), bounds, Flavor::Process),
            self.0.lake().clone(),
            pid,
            bounds,
        )))
    }
}
