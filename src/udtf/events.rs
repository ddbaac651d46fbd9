//! `async_events`, `async_spans`, `thread_spans`, `process_spans`, `view_instance` and
//! `thread_streams`.

use super::args::{parse_process_id, process_and_range, process_arg, string_arg};
use super::{
    PROCESS_SPANS_VIEW_SET, SPANS_VIEW_SET, THREAD_SPANS_VIEW_SET, TableFunctions, VIEW_SET,
    constant,
};
use crate::metadata_tables::ThreadStreamsTable;
use crate::thread_spans::{Flavor, SpanTypes, ThreadSpansOf};
use crate::time_bounds::TimeBounds;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, plan_err};
use std::sync::Arc;

/// The functions of this file, by name.
pub(super) fn functions(
    tables: &Arc<TableFunctions>,
) -> Vec<(&'static str, Arc<dyn TableFunctionImpl>)> {
    vec![
        ("async_events", Arc::new(AsyncEvents(tables.clone()))),
        ("async_spans", Arc::new(AsyncSpans(tables.clone()))),
        ("view_instance", Arc::new(ViewInstance(tables.clone()))),
        ("thread_streams", Arc::new(ThreadStreams(tables.clone()))),
        ("thread_spans", Arc::new(ThreadSpans(tables.clone()))),
        ("process_spans", Arc::new(ProcessSpans(tables.clone()))),
    ]
}

/// `async_events(process_id [, begin, end])`.
#[derive(Debug)]
struct AsyncEvents(Arc<TableFunctions>);

/// `async_spans(process_id [, begin, end])`.
#[derive(Debug)]
struct AsyncSpans(Arc<TableFunctions>);

/// `thread_spans(process_id [, begin, end])`: the scopes every thread entered and left.
#[derive(Debug)]
struct ThreadSpans(Arc<TableFunctions>);

impl TableFunctionImpl for ThreadSpans {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let (pid, bounds) = process_and_range("thread_spans", &args)?;
        Ok(Arc::new(self.0.thread_spans_table(
            ThreadSpansOf::Process(pid),
            bounds,
            Flavor::Process,
        )))
    }
}

/// `process_spans(process_id, span_types)`: micromegas's thread and async spans together.
#[derive(Debug)]
struct ProcessSpans(Arc<TableFunctions>);

impl TableFunctionImpl for ProcessSpans {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        const NAME: &str = "process_spans";
        let exprs = args.exprs();
        let [pid, types] = exprs else {
            return plan_err!(
                "{NAME} takes (process_id, span_types), got {} arguments",
                exprs.len()
            );
        };
        let pid = process_arg(NAME, &args, pid)?;
        let types = SpanTypes::parse(&string_arg(NAME, "span_types", constant(&args, types))?)?;
        self.0.process_spans(pid, types)
    }
}

/// `thread_streams(process_id)`: the thread name and id of each `cpu` stream.
#[derive(Debug)]
struct ThreadStreams(Arc<TableFunctions>);

/// `view_instance(view_set, process_id)`, for queries written for micromegas.
#[derive(Debug)]
struct ViewInstance(Arc<TableFunctions>);

impl TableFunctionImpl for AsyncEvents {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let (pid, bounds) = process_and_range("async_events", &args)?;
        Ok(Arc::new(self.0.events_table(pid, bounds)))
    }
}

impl TableFunctionImpl for AsyncSpans {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let (pid, bounds) = process_and_range("async_spans", &args)?;
        Ok(Arc::new(self.0.spans_table(pid, bounds)))
    }
}

impl TableFunctionImpl for ViewInstance {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        const NAME: &str = "view_instance";
        let exprs = args.exprs();
        let [view_set, instance] = exprs else {
            return plan_err!(
                "{NAME} takes (view_set, instance_id), got {} arguments",
                exprs.len()
            );
        };
        let view_set = string_arg(NAME, "view set", constant(&args, view_set))?;
        const SETS: [&str; 4] = [
            VIEW_SET,
            SPANS_VIEW_SET,
            THREAD_SPANS_VIEW_SET,
            PROCESS_SPANS_VIEW_SET,
        ];
        if !SETS.contains(&view_set.as_str()) {
            return plan_err!(
                "{NAME}: unknown view set '{view_set}'; supported view sets: '{}'",
                SETS.join("', '")
            );
        }
        let text = string_arg(NAME, "instance id", constant(&args, instance))?;
        if view_set == THREAD_SPANS_VIEW_SET {
            let Ok(stream_id) = uuid::Uuid::parse_str(text.trim()) else {
                return plan_err!(
                    "{NAME}: '{text}' is not a stream id: the instances of '{THREAD_SPANS_VIEW_SET}' \
                     are thread streams (`thread_streams('<process id>')` lists them)"
                );
            };
            return Ok(Arc::new(self.0.thread_spans_table(
                ThreadSpansOf::Stream(stream_id),
                TimeBounds::ALL,
                Flavor::View,
            )));
        }
        let pid = parse_process_id(NAME, &text)?;
        if view_set == PROCESS_SPANS_VIEW_SET {
            return self.0.process_spans(pid, SpanTypes::Both);
        }
        if view_set == SPANS_VIEW_SET {
            return Ok(Arc::new(self.0.spans_table(pid, TimeBounds::ALL)));
        }
        Ok(Arc::new(self.0.events_table(pid, TimeBounds::ALL)))
    }
}

impl TableFunctionImpl for ThreadStreams {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        const NAME: &str = "thread_streams";
        let exprs = args.exprs();
        let [pid] = exprs else {
            return plan_err!("{NAME} takes (process_id), got {} arguments", exprs.len());
        };
        let pid = process_arg(NAME, &args, pid)?;
        Ok(Arc::new(ThreadStreamsTable::new(
            self.0.lake().clone(),
            pid,
        )))
    }
}
