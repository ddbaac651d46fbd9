//! The filters on `processes`, `streams` and `blocks` applied in the metadata query, exactly: ids
//! (`=`, `IN` with canonical lower-case UUID strings) and comparisons of `start_time`,
//! `begin_time` or `end_time` with whole-microsecond timestamps.

use super::schema::Kind;
use crate::lake::{Comparison, TimeColumn, TimeCondition};
use chrono::{DateTime, Utc};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use std::collections::HashSet;
use uuid::Uuid;

pub(super) fn id_column(kind: Kind, name: &str) -> Option<IdColumn> {
    match (kind, name) {
        (_, "process_id") => Some(IdColumn::Process),
        (Kind::Streams | Kind::Blocks, "stream_id") => Some(IdColumn::Stream),
        (Kind::Blocks, "block_id") => Some(IdColumn::Block),
        _ => None,
    }
}

pub(super) fn time_column(kind: Kind, name: &str) -> Option<TimeColumn> {
    match (kind, name) {
        (Kind::Processes, "start_time") => Some(TimeColumn::ProcessStart),
        (Kind::Blocks, "begin_time") => Some(TimeColumn::BlockBegin),
        (Kind::Blocks, "end_time") => Some(TimeColumn::BlockEnd),
        _ => None,
    }
}

/// The condition a filter becomes in the metadata query, if it is applied there exactly.
pub(super) fn condition(kind: Kind, expr: &Expr) -> Option<Condition> {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (column, value, op) = match (left.as_ref(), right.as_ref()) {
                (Expr::Column(c), Expr::Literal(v, _)) => (c, v, *op),
                (Expr::Literal(v, _), Expr::Column(c)) => (c, v, op.swap()?),
                _ => return None,
            };
            if let Some(id) = id_column(kind, &column.name) {
                return (op == Operator::Eq)
                    .then(|| canonical_id(value))
                    .flatten()
                    .map(|ids| Condition::Ids(id, ids));
            }
            let time = time_column(kind, &column.name)?;
            let op = match op {
                Operator::Lt => Comparison::Lt,
                Operator::LtEq => Comparison::LtEq,
                Operator::Eq => Comparison::Eq,
                Operator::GtEq => Comparison::GtEq,
                Operator::Gt => Comparison::Gt,
                _ => return None,
            };
            let value = whole_micros(value)?;
            Some(Condition::Time(TimeCondition {
                column: time,
                op,
                value,
            }))
        }
        Expr::InList(list) if !list.negated => {
            let Expr::Column(column) = list.expr.as_ref() else {
                return None;
            };
            let id = id_column(kind, &column.name)?;
            let mut ids = Vec::new();
            for item in &list.list {
                let Expr::Literal(v, _) = item else {
                    return None;
                };
                ids.extend(canonical_id(v)?);
            }
            Some(Condition::Ids(id, ids))
        }
        _ => None,
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) enum IdColumn {
    Process,
    Stream,
    Block,
}

pub(super) enum Condition {
    Ids(IdColumn, Vec<Uuid>),
    Time(TimeCondition),
}

/// A UUID string literal as the tables show ids (lower case, hyphenated): then comparing in the
/// database is exact. Any other string can never equal an id: no id. Not a string: `None`.
fn canonical_id(value: &ScalarValue) -> Option<Vec<Uuid>> {
    let text = match value {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => s,
        _ => return None,
    };
    Some(match Uuid::parse_str(text) {
        Ok(id) if id.to_string() == *text => vec![id],
        _ => Vec::new(),
    })
}

/// A timestamp literal in whole microseconds (PostgreSQL's precision, so that the database
/// compares exactly as DataFusion would).
fn whole_micros(value: &ScalarValue) -> Option<DateTime<Utc>> {
    let ns = match value {
        ScalarValue::TimestampNanosecond(Some(v), _) => *v,
        ScalarValue::TimestampMicrosecond(Some(v), _) => v.checked_mul(1_000)?,
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000_000)?,
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000_000)?,
        _ => return None,
    };
    (ns % 1_000 == 0).then(|| DateTime::from_timestamp_nanos(ns))
}

pub(super) fn add_ids(slot: &mut Option<Vec<Uuid>>, ids: Vec<Uuid>) {
    *slot = Some(match slot.take() {
        None => ids,
        Some(old) => {
            let new: HashSet<Uuid> = ids.into_iter().collect();
            old.into_iter().filter(|id| new.contains(id)).collect()
        }
    });
}
