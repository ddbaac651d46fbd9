//! Filter expressions → [`ScanPredicate`]: what the scan can apply itself.
//!
//! A filter the scan understands is applied *exactly* (DataFusion drops it from the plan):
//!
//! | column | forms | applied by |
//! |---|---|---|
//! | `time` | `=`, `<`, `<=`, `>`, `>=`, `BETWEEN`, against constants (`now() - interval '5 minutes'`, timestamps, RFC 3339 strings) | block pruning in the metadata query and by tick bounds, then a per-row check |
//! | `stream_id` | `=`, `IN` (canonical lower-case hyphenated text: other spellings match no row, as in SQL) | stream selection before any block is listed |
//! | `event_type` | `=`, `<>`, `IN` | per-row check before any column work |
//! | `depth` | `=`, `<`, `<=`, `>`, `>=`, `BETWEEN` | per-row check |
//! | `span_id`, `parent_span_id` | `=`, `IN` | per-row check |
//! | `name`, `target` | `=`, `IN` | per-row check, once per span description and block |
//!
//! A comparison with `NULL` and the boolean literals `false`/`NULL` hold for no row; `true` for
//! every row. Casts are looked through only when they cannot change a value (a `Decimal128`
//! wide enough for every value of the column, not a narrower one).
//!
//! Anything else is left to DataFusion. DataFusion may rewrite a filter after the scan accepted
//! it (it simplifies `x = NULL OR …`, for example): a pushed filter the scan cannot translate is
//! handed back as a *residual* and evaluated above the scan, never dropped. This file only reads
//! expressions; it does no I/O.

use crate::format::{Column, EventType, RowFilter};
use chrono::{DateTime, Utc};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use uuid::Uuid;

/// What the scan applies: a time range, a stream set and per-row checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanPredicate {
    /// Inclusive time bounds, ns since the epoch.
    pub time: (Option<i64>, Option<i64>),
    /// Streams to read; `None` for all.
    pub streams: Option<BTreeSet<Uuid>>,
    /// Checks on each event before its row is built (its `time` field mirrors `self.time`).
    pub row: RowFilter,
    /// Whether a filter can never hold (for example `event_type = 'nope'`).
    pub impossible: bool,
}

/// One conjunct understood by the scan.
#[derive(Debug, Clone, PartialEq)]
enum Constraint {
    Time(Option<i64>, Option<i64>),
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

impl ScanPredicate {
    /// How DataFusion should treat a filter on the `async_events` table.
    pub fn support(filter: &Expr) -> TableProviderFilterPushDown {
        match translate(filter, &constants(None)) {
            Some(_) => TableProviderFilterPushDown::Exact,
            None => TableProviderFilterPushDown::Unsupported,
        }
    }

    /// The predicate of the filters DataFusion pushed into the scan (all must hold), and the
    /// *residual*: the pushed filters the scan cannot apply itself. DataFusion only pushes
    /// filters that [`support`](Self::support) accepted, but its optimizer may rewrite them
    /// afterwards (for example `x = NULL OR x = 'a'` into `NULL OR x = 'a'`); the caller must
    /// evaluate the residual above the scan. `now` is the query's start time, for `now()`.
    pub fn from_filters(filters: &[Expr], now: Option<DateTime<Utc>>) -> (Self, Vec<Expr>) {
        let evaluator = constants(now);
        let mut out = Self::default();
        let mut residual = Vec::new();
        for f in filters {
            match translate(f, &evaluator) {
                Some(c) => out.add(c),
                None => residual.push(f.clone()),
            }
        }
        out.row.time = match out.time {
            (None, None) => None,
            (lo, hi) => Some((lo.unwrap_or(i64::MIN), hi.unwrap_or(i64::MAX))),
        };
        if out.row.matches_nothing()
            || out.streams.as_ref().is_some_and(BTreeSet::is_empty)
            || matches!(out.time, (Some(lo), Some(hi)) if lo > hi)
        {
            out.impossible = true;
        }
        (out, residual)
    }

    /// Narrows the time bounds to `[begin, end]` (the table function's own range).
    pub fn with_time_bounds(mut self, begin: Option<i64>, end: Option<i64>) -> Self {
        self.add(Constraint::Time(begin, end));
        self.row.time = match self.time {
            (None, None) => None,
            (lo, hi) => Some((lo.unwrap_or(i64::MIN), hi.unwrap_or(i64::MAX))),
        };
        if matches!(self.time, (Some(lo), Some(hi)) if lo > hi) {
            self.impossible = true;
        }
        self
    }

    fn add(&mut self, c: Constraint) {
        fn intersect<T: Ord + Clone>(slot: &mut Option<Vec<T>>, set: BTreeSet<T>) {
            *slot = Some(match slot.take() {
                None => set.into_iter().collect(),
                Some(old) => old.into_iter().filter(|v| set.contains(v)).collect(),
            });
        }
        match c {
            Constraint::Time(lo, hi) => {
                self.time.0 = max_opt(self.time.0, lo);
                self.time.1 = min_opt(self.time.1, hi);
            }
            Constraint::Streams(set) => {
                self.streams = Some(match self.streams.take() {
                    None => set,
                    Some(old) => old.intersection(&set).copied().collect(),
                })
            }
            Constraint::EventTypes(set) => {
                let allowed: BTreeSet<EventType> = match self.row.event_type {
                    Some(t) => set.into_iter().filter(|s| *s == t).collect(),
                    None => set,
                };
                match allowed.len() {
                    0 => self.impossible = true,
                    1 => self.row.event_type = allowed.into_iter().next(),
                    _ => {}
                }
            }
            Constraint::Depth(lo, hi) => {
                let (old_lo, old_hi) = self.row.depth.unwrap_or((0, u32::MAX));
                self.row.depth = Some((old_lo.max(lo), old_hi.min(hi)));
            }
            Constraint::SpanIds(set) => intersect(&mut self.row.span_ids, set),
            Constraint::ParentSpanIds(set) => intersect(&mut self.row.parent_span_ids, set),
            Constraint::Names(set) => intersect(&mut self.row.names, set),
            Constraint::Targets(set) => intersect(&mut self.row.targets, set),
            Constraint::Always => {}
            Constraint::Never => self.impossible = true,
        }
    }
}

/// The larger of two optional bounds (`None`: unbounded).
pub(crate) fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// The smaller of two optional bounds (`None`: unbounded).
pub(crate) fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Evaluates column-free expressions (`now() - interval '1 hour'`, casts of literals) to a value.
struct Constants {
    simplifier: ExprSimplifier,
}

fn constants(now: Option<DateTime<Utc>>) -> Constants {
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

fn translate(expr: &Expr, constants: &Constants) -> Option<Constraint> {
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
                (Constraint::Time(a, _), Constraint::Time(_, b)) => Constraint::Time(a, b),
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
                Eq => Constraint::Time(Some(v), Some(v)),
                Lt => match v.checked_sub(1) {
                    Some(hi) => Constraint::Time(None, Some(hi)),
                    None => Constraint::Never,
                },
                LtEq => Constraint::Time(None, Some(v)),
                Gt => match v.checked_add(1) {
                    Some(lo) => Constraint::Time(Some(lo), None),
                    None => Constraint::Never,
                },
                GtEq => Constraint::Time(Some(v), None),
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

/// An RFC 3339 timestamp (`2024-05-01T10:00:00Z`, `2024-05-01 10:00:00+02:00`).
/// A time in ns since the epoch from RFC 3339 text (or `YYYY-MM-DD HH:MM:SS[.f]+hh:mm`), as
/// the table functions accept it; `None` if it is neither or out of range.
pub fn parse_time(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s.trim())
        .or_else(|_| DateTime::parse_from_str(s.trim(), "%Y-%m-%d %H:%M:%S%.f%:z"))
        .ok()?
        .timestamp_nanos_opt()
}

impl fmt::Display for ScanPredicate {
    /// The pushed filters, for EXPLAIN: `event_type=begin, depth=[0, 2], …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if self.impossible {
            parts.push("false".into());
        }
        if let Some(t) = self.row.event_type {
            parts.push(format!("event_type={}", t.as_str()));
        }
        if let Some((lo, hi)) = self.row.depth {
            parts.push(if lo == hi {
                format!("depth={lo}")
            } else {
                format!("depth=[{lo}, {hi}]")
            });
        }
        let list = |name: &str, v: &[String]| format!("{name} in ({})", v.join(", "));
        if let Some(ids) = &self.row.span_ids {
            let v: Vec<String> = ids.iter().map(i64::to_string).collect();
            parts.push(list("span_id", &v));
        }
        if let Some(ids) = &self.row.parent_span_ids {
            let v: Vec<String> = ids.iter().map(i64::to_string).collect();
            parts.push(list("parent_span_id", &v));
        }
        if let Some(names) = &self.row.names {
            let v: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
            parts.push(list("name", &v));
        }
        if let Some(targets) = &self.row.targets {
            let v: Vec<String> = targets.iter().map(|n| format!("'{n}'")).collect();
            parts.push(list("target", &v));
        }
        write!(f, "{}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{cast, col, lit};
    use datafusion::prelude::{in_list, now};
    use datafusion::scalar::ScalarValue;

    fn ts(ns: i64) -> Expr {
        lit(ScalarValue::TimestampNanosecond(
            Some(ns),
            Some("+00:00".into()),
        ))
    }

    fn pred(filters: Vec<Expr>) -> ScanPredicate {
        let (predicate, residual) = ScanPredicate::from_filters(&filters, None);
        assert!(residual.is_empty(), "not applied: {residual:?}");
        predicate
    }

    #[test]
    fn time_comparisons_become_inclusive_bounds() {
        assert_eq!(pred(vec![col("time").gt(ts(10))]).time, (Some(11), None));
        assert_eq!(pred(vec![col("time").gt_eq(ts(10))]).time, (Some(10), None));
        assert_eq!(
            pred(vec![ts(10).lt(col("time"))]).time,
            (Some(11), None),
            "literal on the left"
        );
        assert_eq!(
            pred(vec![col("time").lt(ts(10)), col("time").gt_eq(ts(3))]).time,
            (Some(3), Some(9))
        );
        assert_eq!(
            pred(vec![col("time").between(ts(3), ts(7))]).time,
            (Some(3), Some(7))
        );
        assert_eq!(pred(vec![col("time").eq(ts(5))]).row.time, Some((5, 5)));
        let p = pred(vec![col("time").gt(ts(9)), col("time").lt(ts(5))]);
        assert!(p.impossible);
        // Other units and RFC 3339 strings.
        let ms = lit(ScalarValue::TimestampMillisecond(Some(2), None));
        assert_eq!(
            pred(vec![col("time").lt_eq(ms)]).time,
            (None, Some(2_000_000))
        );
        let s = lit("1970-01-01T00:00:01Z");
        assert_eq!(
            pred(vec![col("time").gt_eq(s)]).time,
            (Some(1_000_000_000), None)
        );
    }

    #[test]
    fn now_minus_an_interval_is_a_constant_of_the_query() {
        let start = DateTime::parse_from_rfc3339("2026-01-01T00:10:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let five_minutes = lit(ScalarValue::new_interval_mdn(0, 0, 300_000_000_000));
        let f = col("time").gt(now() - five_minutes);
        assert_eq!(
            ScanPredicate::support(&f),
            TableProviderFilterPushDown::Exact
        );
        let (p, _) = ScanPredicate::from_filters(&[f], Some(start));
        let expected = DateTime::parse_from_rfc3339("2026-01-01T00:05:00Z")
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap();
        assert_eq!(p.time, (Some(expected + 1), None));
    }

    #[test]
    fn stream_ids_select_streams() {
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let p = pred(vec![col("stream_id").eq(lit(a.to_string()))]);
        assert_eq!(p.streams, Some([a].into()));
        let p = pred(vec![
            in_list(
                col("stream_id"),
                vec![lit(a.to_string()), lit(b.to_string())],
                false,
            ),
            cast(col("stream_id"), DataType::Utf8).eq(lit(b.to_string())),
        ]);
        assert_eq!(p.streams, Some([b].into()));
        assert!(pred(vec![col("stream_id").eq(lit("not-a-uuid"))]).impossible);
        // Other spellings of a UUID are other strings: SQL equality matches no stream_id.
        let upper = a.to_string().to_uppercase();
        assert!(pred(vec![col("stream_id").eq(lit(upper.clone()))]).impossible);
        assert!(pred(vec![col("stream_id").eq(lit(a.simple().to_string()))]).impossible);
        let p = pred(vec![in_list(
            col("stream_id"),
            vec![lit(upper), lit(b.to_string())],
            false,
        )]);
        assert_eq!(p.streams, Some([b].into()));
    }

    #[test]
    fn boolean_and_null_literals_are_applied_not_dropped() {
        let null = || lit(ScalarValue::Boolean(None));
        assert!(pred(vec![null()]).impossible, "NULL keeps no row");
        assert!(pred(vec![lit(false)]).impossible);
        assert!(!pred(vec![lit(true)]).impossible);
        assert!(pred(vec![lit(ScalarValue::Null)]).impossible);
        // `name IN ('a', NULL) OR 'b' = name` after simplification.
        let p = pred(vec![
            col("name")
                .eq(lit("a"))
                .or(null())
                .or(lit("b").eq(col("name"))),
        ]);
        assert_eq!(p.row.names, Some(vec!["a".into(), "b".into()]));
        assert!(!pred(vec![col("name").eq(lit("a")).or(lit(true))]).impossible);
        assert_eq!(
            pred(vec![col("name").eq(lit("a")).or(lit(true))]).row.names,
            None
        );
        // Untyped NULLs in lists.
        let p = pred(vec![in_list(
            col("name"),
            vec![lit("a"), lit(ScalarValue::Null)],
            false,
        )]);
        assert_eq!(p.row.names, Some(vec!["a".into()]));
        assert!(pred(vec![col("block_id").not_eq(lit(ScalarValue::Utf8(None)))]).impossible);
    }

    #[test]
    fn what_the_scan_cannot_apply_comes_back_as_residual() {
        let filters = vec![
            col("name").eq(lit("a")),
            col("name").like(lit("a%")),
            col("depth").eq(col("line")),
        ];
        let (p, residual) = ScanPredicate::from_filters(&filters, None);
        assert_eq!(p.row.names, Some(vec!["a".into()]));
        assert_eq!(residual, filters[1..].to_vec());
    }

    #[test]
    fn decimal_casts_are_looked_through_only_when_wide_enough() {
        let dec = |p, s| DataType::Decimal128(p, s);
        let through = |c: &str, t: DataType| {
            ScanPredicate::support(&cast(cast(col(c), t), DataType::Int64).eq(lit(5i64)))
        };
        use TableProviderFilterPushDown::{Exact, Unsupported};
        assert_eq!(through("span_id", dec(20, 0)), Exact);
        assert_eq!(through("span_id", dec(38, 10)), Exact);
        assert_eq!(through("span_id", dec(2, 0)), Unsupported);
        assert_eq!(through("span_id", dec(20, 2)), Unsupported);
        assert_eq!(through("depth", dec(10, 0)), Exact);
        assert_eq!(through("depth", dec(1, 0)), Unsupported);
        assert_eq!(
            through("depth", dec(12, -3)),
            Unsupported,
            "rounds to thousands"
        );
        let try_dec = datafusion::logical_expr::try_cast(col("depth"), dec(1, 0));
        assert_eq!(
            ScanPredicate::support(&cast(try_dec, DataType::Int64).gt_eq(lit(10i64))),
            Unsupported
        );
        assert_eq!(
            ScanPredicate::support(&cast(col("depth"), DataType::Int32).eq(lit(1i32))),
            Unsupported
        );
    }

    #[test]
    fn row_checks() {
        let p = pred(vec![
            col("event_type").eq(lit("begin")),
            col("depth").lt_eq(lit(2i64)),
        ]);
        assert_eq!(p.row.event_type, Some(EventType::Begin));
        assert_eq!(p.row.depth, Some((0, 2)));
        assert!(pred(vec![col("event_type").eq(lit("start"))]).impossible);
        assert_eq!(
            pred(vec![col("event_type").not_eq(lit("begin"))])
                .row
                .event_type,
            Some(EventType::End)
        );
        assert!(pred(vec![col("depth").lt(lit(0i64))]).impossible);
        assert_eq!(
            pred(vec![col("depth").gt(lit(-5i64))]).row.depth,
            Some((0, u32::MAX))
        );
        assert_eq!(
            pred(vec![col("depth").between(lit(1i64), lit(3i64))])
                .row
                .depth,
            Some((1, 3))
        );
        let p = pred(vec![
            in_list(col("span_id"), vec![lit(3i64), lit(1i64)], false),
            col("span_id").eq(lit(3i64)),
        ]);
        assert_eq!(p.row.span_ids, Some(vec![3]));
        let p = pred(vec![
            col("span_id")
                .eq(lit(1i64))
                .or(col("span_id").eq(lit(2i64))),
        ]);
        assert_eq!(
            p.row.span_ids,
            Some(vec![1, 2]),
            "short IN lists come as OR"
        );
        let p = pred(vec![col("name").eq(lit("x")), col("target").eq(lit("t"))]);
        assert_eq!(
            (p.row.names, p.row.targets),
            (Some(vec!["x".into()]), Some(vec!["t".into()]))
        );
        assert!(pred(vec![col("name").eq(lit(ScalarValue::Utf8(None)))]).impossible);
    }

    #[test]
    fn what_the_scan_does_not_apply_stays_with_datafusion() {
        let unsupported = [
            col("name").like(lit("a%")),
            col("depth").eq(col("line")),
            col("time").not_between(ts(1), ts(2)),
            col("span_id").gt(lit(5i64)),
            col("filename").eq(lit("x")),
            col("event_type")
                .eq(lit("begin"))
                .or(col("depth").eq(lit(1i64))),
            in_list(col("depth"), vec![lit(1i64)], false),
            cast(col("time"), DataType::Date32).eq(lit(ScalarValue::Date32(Some(1)))),
        ];
        for f in unsupported {
            assert_eq!(
                ScanPredicate::support(&f),
                TableProviderFilterPushDown::Unsupported,
                "{f}"
            );
        }
    }
}
