//! Filter expressions → [`Constraint`]s: one pushed conjunct at a time, what the scan can apply
//! of it (see [`super::predicate`] for the table of forms). Column-free parts are evaluated
//! here (`now() - interval '1 hour'`, casts of literals); a cast is looked through only when it
//! cannot change a value. Reads expressions only.

use crate::format::{Column, EventType};
use crate::time_bounds::{TimeBounds, parse_time};
use chrono::{DateTime, Utc};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use std::collections::BTreeSet;
use std::sync::Arc;
use uuid::Uuid;

/// One conjunct understood by the scan.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Constraint {
    Time(TimeBounds),
    Streams(BTreeSet<Uuid>),
    EventTypes(BTreeSet<EventType>),
    Depth(u32, u32),
    SpanIds(BTreeSet<i64>),
    ParentSpanIds(BTreeSet<i64>),
    Names(BTreeSet<String>),
    Targets(BTreeSet<String>),
    /// Holds for every row (`TRUE`).
    Always,
    /// Holds for no row (`FALSE`, `NULL`, a comparison with `NULL`, an impossible value).
    Never,
}

/// Evaluates column-free expressions (`now() - interval '1 hour'`, casts of literals) to a value.
pub(crate) struct Constants {
    simplifier: ExprSimplifier,
}

pub(crate) fn constants(now: Option<DateTime<Utc>>) -> Constants {
    let context = SimplifyContext::builder()
        .with_schema(Arc::new(DFSchema::empty()))
        .with_query_execution_start_time(Some(now.unwrap_or_else(Utc::now)))
        .build();
    Constants {
        simplifier: ExprSimplifier::new(context),
    }
}

impl Constants {
    fn value(&self, expr: &Expr) -> Option<ScalarValue> {
        if let Expr::Literal(v, _) = expr {
            return Some(v.clone());
        }
        if expr.any_column_refs() {
            return None;
        }
        match self.simplifier.simplify(expr.clone()) {
            Ok(Expr::Literal(v, _)) => Some(v),
            _ => None,
        }
    }
}

/// The table column an expression reads, looking through casts that keep values unchanged.
fn column_of(expr: &Expr) -> Option<Column> {
    match expr {
        Expr::Column(c) => Column::from_name(&c.name),
        Expr::Cast(cast) => lossless_cast(&cast.expr, cast.field.data_type()),
        Expr::TryCast(cast) => lossless_cast(&cast.expr, cast.field.data_type()),
        _ => None,
    }
}

/// The column read through a cast to `to`, if the cast keeps every value of the column exactly
/// (so that comparing the cast value is comparing the column's value).
fn lossless_cast(inner: &Expr, to: &DataType) -> Option<Column> {
    let column = column_of(inner)?;
    // Integer digits a decimal type holds exactly (a negative scale rounds to tens, hundreds…).
    let decimal_digits = |to: &DataType| match to {
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s)
            if *s >= 0 =>
        {
            Some(i16::from(*p) - i16::from(*s))
        }
        _ => None,
    };
    let keeps = match column {
        Column::StreamId
        | Column::BlockId
        | Column::EventType
        | Column::Name
        | Column::Filename
        | Column::Target => match to {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
            // Any key type: a narrower one fails the cast rather than changing a value.
            DataType::Dictionary(_, value) => matches!(
                value.as_ref(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ),
            _ => false,
        },
        // i64 values have up to 19 digits, u32 values up to 10.
        Column::SpanId | Column::ParentSpanId => {
            matches!(to, DataType::Int64) || decimal_digits(to).is_some_and(|d| d >= 19)
        }
        Column::Depth | Column::Line | Column::Hash => {
            matches!(to, DataType::UInt32 | DataType::UInt64 | DataType::Int64)
                || decimal_digits(to).is_some_and(|d| d >= 10)
        }
        Column::Time => matches!(to, DataType::Timestamp(TimeUnit::Nanosecond, _)),
        Column::Properties => false,
    };
    keeps.then_some(column)
}

fn flip(op: Operator) -> Option<Operator> {
    Some(match op {
        Operator::Eq => Operator::Eq,
        Operator::NotEq => Operator::NotEq,
        Operator::Lt => Operator::Gt,
        Operator::LtEq => Operator::GtEq,
        Operator::Gt => Operator::Lt,
        Operator::GtEq => Operator::LtEq,
        _ => return None,
    })
}

/// `a OR b` on the same column, both lists of values (`span_id = 1 OR span_id = 2`, which is
/// how DataFusion rewrites short `IN` lists): the union of the two.
fn union(a: Constraint, b: Constraint) -> Option<Constraint> {
    Some(match (a, b) {
        (Constraint::Always, _) | (_, Constraint::Always) => Constraint::Always,
        (Constraint::Never, other) | (other, Constraint::Never) => other,
        (Constraint::Streams(mut a), Constraint::Streams(b)) => {
            a.extend(b);
            Constraint::Streams(a)
        }
        (Constraint::EventTypes(mut a), Constraint::EventTypes(b)) => {
            a.extend(b);
            Constraint::EventTypes(a)
        }
        (Constraint::SpanIds(mut a), Constraint::SpanIds(b)) => {
            a.extend(b);
            Constraint::SpanIds(a)
        }
        (Constraint::ParentSpanIds(mut a), Constraint::ParentSpanIds(b)) => {
            a.extend(b);
            Constraint::ParentSpanIds(a)
        }
        (Constraint::Names(mut a), Constraint::Names(b)) => {
            a.extend(b);
            Constraint::Names(a)
        }
        (Constraint::Targets(mut a), Constraint::Targets(b)) => {
            a.extend(b);
            Constraint::Targets(a)
        }
        _ => return None,
    })
}

pub(crate) fn translate(expr: &Expr, constants: &Constants) -> Option<Constraint> {
    match expr {
        // What the simplifier leaves of `x = NULL`, `x NOT IN (…, NULL)`, `a AND false`.
        Expr::Literal(value, _) => match value {
            ScalarValue::Boolean(Some(true)) => Some(Constraint::Always),
            ScalarValue::Boolean(_) | ScalarValue::Null => Some(Constraint::Never),
            _ => None,
        },
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Or,
            right,
        }) => union(translate(left, constants)?, translate(right, constants)?),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            if let Some(column) = column_of(left) {
                compare(column, *op, &constants.value(right)?)
            } else if let Some(column) = column_of(right) {
                compare(column, flip(*op)?, &constants.value(left)?)
            } else {
                None
            }
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) => {
            let column = column_of(expr)?;
            let (low, high) = (constants.value(low)?, constants.value(high)?);
            let lo = compare(column, Operator::GtEq, &low)?;
            let hi = compare(column, Operator::LtEq, &high)?;
            Some(match (lo, hi) {
                (Constraint::Time(a), Constraint::Time(b)) => {
                    Constraint::Time(TimeBounds::new(a.begin, b.end))
                }
                (Constraint::Depth(a, _), Constraint::Depth(_, b)) => Constraint::Depth(a, b),
                (Constraint::Never, _) | (_, Constraint::Never) => Constraint::Never,
                _ => return None,
            })
        }
        Expr::InList(list) if !list.negated => {
            let column = column_of(&list.expr)?;
            let values = list
                .list
                .iter()
                .map(|e| constants.value(e))
                .collect::<Option<Vec<_>>>()?;
            in_list(column, &values)
        }
        _ => None,
    }
}

fn in_list(column: Column, values: &[ScalarValue]) -> Option<Constraint> {
    let strings = || -> Option<Vec<Option<String>>> { values.iter().map(as_string).collect() };
    let ints = || -> Option<Vec<Option<i128>>> { values.iter().map(as_int).collect() };
    Some(match column {
        Column::StreamId => Constraint::Streams(
            strings()?
                .into_iter()
                .flatten()
                .filter_map(|s| canonical_uuid(&s))
                .collect(),
        ),
        Column::EventType => Constraint::EventTypes(
            strings()?
                .into_iter()
                .flatten()
                .filter_map(|s| event_type(&s))
                .collect(),
        ),
        Column::Name => Constraint::Names(strings()?.into_iter().flatten().collect()),
        Column::Target => Constraint::Targets(strings()?.into_iter().flatten().collect()),
        Column::SpanId => Constraint::SpanIds(i64s(ints()?)),
        Column::ParentSpanId => Constraint::ParentSpanIds(i64s(ints()?)),
        _ => return None,
    })
}

fn i64s(values: Vec<Option<i128>>) -> BTreeSet<i64> {
    values
        .into_iter()
        .flatten()
        .filter_map(|v| i64::try_from(v).ok())
        .collect()
}

/// The stream id whose text is exactly `s`: `stream_id` holds lower-case hyphenated UUIDs, so
/// another spelling of the same UUID (upper case, no hyphens, braces) equals no row.
fn canonical_uuid(s: &str) -> Option<Uuid> {
    Uuid::parse_str(s).ok().filter(|u| u.to_string() == s)
}

fn event_type(s: &str) -> Option<EventType> {
    match s {
        "begin" => Some(EventType::Begin),
        "end" => Some(EventType::End),
        _ => None,
    }
}

/// `column op value`, or `None` if the scan cannot apply it exactly.
fn compare(column: Column, op: Operator, value: &ScalarValue) -> Option<Constraint> {
    use Operator::*;
    if !matches!(op, Eq | NotEq | Lt | LtEq | Gt | GtEq) {
        return None;
    }
    // A comparison with NULL is never true.
    if value.is_null() {
        return Some(Constraint::Never);
    }
    match column {
        Column::Time => {
            let v = as_time(value)?;
            Some(match op {
                Eq => Constraint::Time(TimeBounds::new(Some(v), Some(v))),
                Lt => match v.checked_sub(1) {
                    Some(hi) => Constraint::Time(TimeBounds::new(None, Some(hi))),
                    None => Constraint::Never,
                },
                LtEq => Constraint::Time(TimeBounds::new(None, Some(v))),
                Gt => match v.checked_add(1) {
                    Some(lo) => Constraint::Time(TimeBounds::new(Some(lo), None)),
                    None => Constraint::Never,
                },
                GtEq => Constraint::Time(TimeBounds::new(Some(v), None)),
                _ => return None,
            })
        }
        Column::Depth => {
            let v = as_int(value)??;
            let max = i128::from(u32::MAX);
            let (lo, hi) = match op {
                Eq => (v, v),
                Lt => (0, v - 1),
                LtEq => (0, v),
                Gt => (v + 1, max),
                GtEq => (v, max),
                _ => return None,
            };
            if hi < 0 || lo > max || lo > hi {
                return Some(Constraint::Never);
            }
            Some(Constraint::Depth(lo.max(0) as u32, hi.min(max) as u32))
        }
        Column::StreamId | Column::EventType | Column::Name | Column::Target => {
            let s = as_string(value)??;
            match (column, op) {
                (Column::StreamId, Eq) => Some(Constraint::Streams(
                    canonical_uuid(&s).into_iter().collect(),
                )),
                (Column::EventType, Eq) => {
                    Some(Constraint::EventTypes(event_type(&s).into_iter().collect()))
                }
                (Column::EventType, NotEq) => Some(Constraint::EventTypes(
                    [EventType::Begin, EventType::End]
                        .into_iter()
                        .filter(|t| t.as_str() != s)
                        .collect(),
                )),
                (Column::Name, Eq) => Some(Constraint::Names([s].into())),
                (Column::Target, Eq) => Some(Constraint::Targets([s].into())),
                _ => None,
            }
        }
        Column::SpanId | Column::ParentSpanId if op == Eq => {
            let set = i64s(vec![as_int(value)?]);
            Some(if column == Column::SpanId {
                Constraint::SpanIds(set)
            } else {
                Constraint::ParentSpanIds(set)
            })
        }
        _ => None,
    }
}

/// A string value; `Some(None)` for a string-typed NULL.
fn as_string(value: &ScalarValue) -> Option<Option<String>> {
    match value {
        ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s) => {
            Some(s.clone())
        }
        ScalarValue::Dictionary(_, inner) => as_string(inner),
        ScalarValue::Null => Some(None),
        _ => None,
    }
}

/// An integer value; `Some(None)` for an integer-typed NULL.
fn as_int(value: &ScalarValue) -> Option<Option<i128>> {
    Some(match value {
        ScalarValue::Int8(v) => v.map(i128::from),
        ScalarValue::Int16(v) => v.map(i128::from),
        ScalarValue::Int32(v) => v.map(i128::from),
        ScalarValue::Int64(v) => v.map(i128::from),
        ScalarValue::UInt8(v) => v.map(i128::from),
        ScalarValue::UInt16(v) => v.map(i128::from),
        ScalarValue::UInt32(v) => v.map(i128::from),
        ScalarValue::UInt64(v) => v.map(i128::from),
        ScalarValue::Dictionary(_, inner) => return as_int(inner),
        ScalarValue::Null => None,
        _ => return None,
    })
}

/// A point in time, ns since the epoch.
fn as_time(value: &ScalarValue) -> Option<i64> {
    let scaled = |v: &Option<i64>, factor: i64| v.and_then(|v| v.checked_mul(factor));
    match value {
        ScalarValue::TimestampNanosecond(v, _) => *v,
        ScalarValue::TimestampMicrosecond(v, _) => scaled(v, 1_000),
        ScalarValue::TimestampMillisecond(v, _) => scaled(v, 1_000_000),
        ScalarValue::TimestampSecond(v, _) => scaled(v, 1_000_000_000),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => parse_time(s),
        ScalarValue::Dictionary(_, inner) => as_time(inner),
        _ => None,
    }
}
