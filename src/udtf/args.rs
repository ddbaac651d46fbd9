//! Table function arguments, checked when the query is planned, without I/O: the process id
//! must be a UUID (`'global'` is refused: the views are per process), time bounds timestamps or
//! RFC 3339 strings (`NULL` leaves a side open). Placeholders (`$1`) take the values a host bound
//! ([`BoundParameters`]).

use crate::time_bounds::{TimeBounds, parse_time};
use datafusion::catalog::TableFunctionArgs;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, ParamValues, Result, ScalarValue, plan_err};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// The values bound to a statement's placeholders, for the arguments of table functions.
/// DataFusion binds parameters to a plan once it is made, but a table function is called while
/// it is made: a host that binds parameters (the Flight SQL server) puts them in the session's
/// config as this extension, so that `async_events($1)` reads the bound process id.
#[derive(Debug)]
pub enum BoundParameters {
    /// The values, by placeholder.
    Values(ParamValues),
    /// The statement is being prepared and its values come later: a placeholder process id
    /// plans a table of the right schema (of no process), a placeholder time bound an open side.
    /// The placeholders met are noted, for the statement's parameter schema.
    Pending(Mutex<BTreeSet<String>>),
}

impl BoundParameters {
    /// Values come later (see [`BoundParameters::Pending`]).
    pub fn pending() -> Self {
        Self::Pending(Mutex::default())
    }

    /// The placeholders (`$1`, …) table function arguments held while the statement was
    /// prepared: DataFusion's plan no longer has them.
    pub fn placeholders_in_arguments(&self) -> Vec<String> {
        match self {
            Self::Pending(seen) => seen
                .lock()
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default(),
            Self::Values(_) => Vec::new(),
        }
    }

    fn note(&self, id: &str) {
        if let Self::Pending(seen) = self
            && let Ok(mut seen) = seen.lock()
        {
            seen.insert(id.to_owned());
        }
    }
}

fn bound(args: &TableFunctionArgs) -> Option<Arc<BoundParameters>> {
    args.session().config().get_extension::<BoundParameters>()
}

/// `expr` with each placeholder that has a bound value replaced by that value (by NULL while
/// the statement is prepared).
fn bind(args: &TableFunctionArgs, expr: &Expr) -> Expr {
    let Some(bound) = bound(args) else {
        return expr.clone();
    };
    expr.clone()
        .transform(|e| match e {
            Expr::Placeholder(p) => Ok(match &*bound {
                BoundParameters::Values(values) => {
                    match values.get_placeholders_with_values(&p.id) {
                        Ok(v) => Transformed::yes(Expr::Literal(v.value, v.metadata)),
                        Err(_) => Transformed::no(Expr::Placeholder(p)),
                    }
                }
                BoundParameters::Pending(_) => {
                    bound.note(&p.id);
                    Transformed::yes(Expr::Literal(ScalarValue::Null, None))
                }
            }),
            other => Ok(Transformed::no(other)),
        })
        .map_or_else(|_| expr.clone(), |t| t.data)
}

/// The value of a column-free argument (DataFusion usually folds them before the call).
pub(crate) fn constant(args: &TableFunctionArgs, expr: &Expr) -> Option<ScalarValue> {
    let expr = &bind(args, expr);
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

/// A string argument of `function`, named `what` in the error.
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
    if let (Expr::Placeholder(p), Some(bound)) = (expr, bound(args))
        && matches!(*bound, BoundParameters::Pending(_))
    {
        bound.note(&p.id);
        return Ok(Uuid::nil());
    }
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

/// A time bound argument (`which`: `begin` or `end`); `NULL` leaves the side open.
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

/// The `begin` and `end` arguments at `exprs[0]` and `exprs[1]`.
pub(crate) fn bounds_args(
    function: &str,
    args: &TableFunctionArgs,
    exprs: &[Expr],
) -> Result<TimeBounds> {
    match exprs {
        [begin, end] => Ok(TimeBounds::new(
            time_arg(function, "begin", constant(args, begin))?,
            time_arg(function, "end", constant(args, end))?,
        )),
        _ => plan_err!("{function}: expected a begin and an end time"),
    }
}

/// The arguments of `async_events` and `async_spans`: `(process_id [, begin, end])`.
pub(crate) fn process_and_range(
    name: &str,
    args: &TableFunctionArgs,
) -> Result<(Uuid, TimeBounds)> {
    let exprs = args.exprs();
    match exprs {
        [pid] => Ok((process_arg(name, args, pid)?, TimeBounds::ALL)),
        [pid, range @ ..] if range.len() == 2 => Ok((
            process_arg(name, args, pid)?,
            bounds_args(name, args, range)?,
        )),
        _ => plan_err!(
            "{name} takes (process_id) or (process_id, begin, end), got {} arguments",
            exprs.len()
        ),
    }
}
