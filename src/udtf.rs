//! The table functions `async_events(...)`, `view_instance(...)` and `thread_streams(...)`, and
//! [`register`].
//!
//! Arguments are checked when the query is planned, without I/O: the process id must be a UUID
//! (`'global'` is refused: the view is per process), the optional time bounds timestamps or RFC
//! 3339 strings. Whether the process exists is known when the scan is planned.

use crate::lake::Lake;
use crate::provider::{
    AsyncEventsTable, AsyncSpansTable, LakeRegistry, ScanOptions, TableContext, ThreadStreamsTable,
    parse_time,
};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DFSchema, Result, ScalarValue, plan_err};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::prelude::SessionContext;
use std::sync::Arc;
use uuid::Uuid;

/// The view set of async events in `view_instance` (micromegas's name for this view).
pub const VIEW_SET: &str = "async_events";

/// The view set of async spans in `view_instance`.
pub const SPANS_VIEW_SET: &str = "async_spans";

/// Registers `async_events(process_id [, begin, end])`, `async_spans(process_id [, begin,
/// end])` (one row per span, begin and end paired), `view_instance('async_events' |
/// 'async_spans', process_id)` and `thread_streams(process_id)` (the thread names behind
/// `stream_id`) on a session.
///
/// ```no_run
/// # async fn run() -> datafusion::common::Result<()> {
/// use datafusion::prelude::SessionContext;
/// use datafusion_async_events::{Lake, register};
/// let lake = Lake::from_env().await?;
/// let ctx = SessionContext::new();
/// register(&ctx, lake);
/// ctx.sql("SELECT name, count(*) FROM async_events('6f0e6b0c-5d3c-4e7a-9a57-0e9f1a2b3c4d') \
///          WHERE event_type = 'begin' GROUP BY name").await?.show().await?;
/// # Ok(()) }
/// ```
pub fn register(ctx: &SessionContext, lake: Lake) {
    register_with(ctx, lake, ScanOptions::default());
}

/// [`register`] with explicit scan options.
///
/// The lake is also added to the process's [`LakeRegistry`], installed as an extension of the
/// session's config: a plan decoded in this process (see the `codec` feature) finds its lake
/// there by URL.
pub fn register_with(ctx: &SessionContext, lake: Lake, options: ScanOptions) {
    let registry = LakeRegistry::global();
    registry.add(&lake);
    {
        let state = ctx.state_ref();
        let mut state = state.write();
        if state.config().get_extension::<LakeRegistry>().is_none() {
            state.config_mut().set_extension(registry);
        }
    }
    for (name, function) in table_functions(lake, options) {
        ctx.register_udtf(name, function);
    }
}

/// The table functions [`register`] installs, by name, for hosts that register them
/// themselves (another engine, or datafusion-python through the FFI). The functions made by one
/// call share compiled stream layouts and per-query blocks, as registered ones do.
pub fn table_functions(
    lake: Lake,
    options: ScanOptions,
) -> Vec<(&'static str, Arc<dyn TableFunctionImpl>)> {
    let tables = Arc::new(Tables {
        lake,
        options,
        context: Arc::new(TableContext::default()),
    });
    #[allow(unused_mut)] // without the timeline feature nothing more is pushed
    let mut functions: Vec<(&'static str, Arc<dyn TableFunctionImpl>)> = vec![
        (
            "async_events",
            Arc::new(AsyncEventsFunction(tables.clone())),
        ),
        ("async_spans", Arc::new(AsyncSpansFunction(tables.clone()))),
        (
            "view_instance",
            Arc::new(ViewInstanceFunction(tables.clone())),
        ),
        (
            "thread_streams",
            Arc::new(ThreadStreamsFunction(tables.clone())),
        ),
    ];
    #[cfg(feature = "timeline")] // perfetto_trace_chunks(process_id, span_types, begin, end)
    functions.push(crate::timeline::perfetto::table_function(
        &tables.lake,
        &tables.options,
        &tables.context,
    ));
    functions
}

/// Makes the tables of the functions. They share compiled stream layouts, and the scans of one
/// query that read the same process (the two sides of a self-join) share their blocks.
#[derive(Debug)]
struct Tables {
    lake: Lake,
    options: ScanOptions,
    context: Arc<TableContext>,
}

impl Tables {
    fn spans(&self, process_id: Uuid, bounds: (Option<i64>, Option<i64>)) -> AsyncSpansTable {
        AsyncSpansTable::with_context(
            self.lake.clone(),
            process_id,
            bounds,
            self.options.clone(),
            self.context.clone(),
        )
    }

    fn table(&self, process_id: Uuid, bounds: (Option<i64>, Option<i64>)) -> AsyncEventsTable {
        AsyncEventsTable::with_context(
            self.lake.clone(),
            process_id,
            bounds,
            self.options.clone(),
            self.context.clone(),
        )
    }
}

/// `async_events(process_id [, begin, end])`.
#[derive(Debug)]
struct AsyncEventsFunction(Arc<Tables>);

/// `async_spans(process_id [, begin, end])`.
#[derive(Debug)]
struct AsyncSpansFunction(Arc<Tables>);

/// `thread_streams(process_id)`: the thread name and id of each `cpu` stream.
#[derive(Debug)]
struct ThreadStreamsFunction(Arc<Tables>);

/// `view_instance('async_events', process_id)`, for queries written for micromegas.
#[derive(Debug)]
struct ViewInstanceFunction(Arc<Tables>);

pub(crate) fn constant(args: &TableFunctionArgs, expr: &Expr) -> Option<ScalarValue> {
    if let Expr::Literal(v, _) = expr {
        return Some(v.clone());
    }
    let context = SimplifyContext::builder()
        .with_schema(Arc::new(DFSchema::empty()))
        .with_query_execution_start_time(
            args.session().execution_props().query_execution_start_time,
        )
        .build();
    match ExprSimplifier::new(context).simplify(expr.clone()) {
        Ok(Expr::Literal(v, _)) => Some(v),
        _ => None,
    }
}

pub(crate) fn string_arg(function: &str, what: &str, value: Option<ScalarValue>) -> Result<String> {
    match value {
        Some(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)),
        ) => Ok(s),
        other => plan_err!(
            "{function}: the {what} must be a string literal, got {}",
            other.map_or("an expression".to_string(), |v| format!("{v:?}"))
        ),
    }
}

/// A process id argument: a UUID string, not `'global'`.
pub(crate) fn process_arg(function: &str, args: &TableFunctionArgs, expr: &Expr) -> Result<Uuid> {
    let text = string_arg(function, "process id", constant(args, expr))?;
    parse_process_id(function, &text)
}

/// A process id given to `function` as text: a UUID; `'global'` (micromegas's view of all
/// processes) is refused with a message saying why. For hosts that build the tables themselves.
pub fn parse_process_id(function: &str, text: &str) -> Result<Uuid> {
    if text.eq_ignore_ascii_case("global") {
        return plan_err!(
            "{function}: async events are a per-process view, 'global' is not supported: \
             pass a process id (`async-events processes` lists them)"
        );
    }
    match Uuid::parse_str(text.trim()) {
        Ok(id) => Ok(id),
        Err(_) => plan_err!(
            "{function}: '{text}' is not a process id: expected a UUID such as \
             '6f0e6b0c-5d3c-4e7a-9a57-0e9f1a2b3c4d'"
        ),
    }
}

pub(crate) fn time_arg(
    function: &str,
    which: &str,
    value: Option<ScalarValue>,
) -> Result<Option<i64>> {
    let scaled = |v: Option<i64>, factor: i64| v.and_then(|v| v.checked_mul(factor));
    Ok(match value {
        Some(v) if v.is_null() => None,
        Some(ScalarValue::TimestampNanosecond(v, _)) => v,
        Some(ScalarValue::TimestampMicrosecond(v, _)) => scaled(v, 1_000),
        Some(ScalarValue::TimestampMillisecond(v, _)) => scaled(v, 1_000_000),
        Some(ScalarValue::TimestampSecond(v, _)) => scaled(v, 1_000_000_000),
        Some(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)),
        ) => match parse_time(&s) {
            Some(ns) => Some(ns),
            None => {
                return plan_err!(
                    "{function}: the {which} time '{s}' is not an RFC 3339 timestamp \
                         such as '2024-05-01T10:00:00Z'"
                );
            }
        },
        other => {
            return plan_err!(
                "{function}: the {which} time must be a timestamp or an RFC 3339 string, got {}",
                other.map_or("an expression".to_string(), |v| format!("{v:?}"))
            );
        }
    })
}

/// Inclusive time bounds, ns since the epoch; `None` for an open side.
type Bounds = (Option<i64>, Option<i64>);

/// The arguments of `async_events` and `async_spans`: `(process_id [, begin, end])`.
fn process_and_range(name: &str, args: &TableFunctionArgs) -> Result<(Uuid, Bounds)> {
    let exprs = args.exprs();
    if exprs.len() != 1 && exprs.len() != 3 {
        return plan_err!(
            "{name} takes (process_id) or (process_id, begin, end), got {} arguments",
            exprs.len()
        );
    }
    let pid = process_arg(name, args, &exprs[0])?;
    let bounds = if exprs.len() == 3 {
        (
            time_arg(name, "begin", constant(args, &exprs[1]))?,
            time_arg(name, "end", constant(args, &exprs[2]))?,
        )
    } else {
        (None, None)
    };
    Ok((pid, bounds))
}

impl TableFunctionImpl for AsyncEventsFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let (pid, bounds) = process_and_range("async_events", &args)?;
        Ok(Arc::new(self.0.table(pid, bounds)))
    }
}

impl TableFunctionImpl for AsyncSpansFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let (pid, bounds) = process_and_range("async_spans", &args)?;
        Ok(Arc::new(self.0.spans(pid, bounds)))
    }
}

impl TableFunctionImpl for ViewInstanceFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        const NAME: &str = "view_instance";
        let exprs = args.exprs();
        if exprs.len() != 2 {
            return plan_err!(
                "{NAME} takes (view_set, instance_id), got {} arguments",
                exprs.len()
            );
        }
        let view_set = string_arg(NAME, "view set", constant(&args, &exprs[0]))?;
        if view_set != VIEW_SET && view_set != SPANS_VIEW_SET {
            return plan_err!(
                "{NAME}: unknown view set '{view_set}'; supported view sets: '{VIEW_SET}', '{SPANS_VIEW_SET}'"
            );
        }
        let text = string_arg(NAME, "instance id", constant(&args, &exprs[1]))?;
        let pid = parse_process_id(NAME, &text)?;
        if view_set == SPANS_VIEW_SET {
            return Ok(Arc::new(self.0.spans(pid, (None, None))));
        }
        Ok(Arc::new(self.0.table(pid, (None, None))))
    }
}

impl TableFunctionImpl for ThreadStreamsFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        const NAME: &str = "thread_streams";
        let exprs = args.exprs();
        if exprs.len() != 1 {
            return plan_err!("{NAME} takes (process_id), got {} arguments", exprs.len());
        }
        let pid = process_arg(NAME, &args, &exprs[0])?;
        Ok(Arc::new(ThreadStreamsTable::new(self.0.lake.clone(), pid)))
    }
}
