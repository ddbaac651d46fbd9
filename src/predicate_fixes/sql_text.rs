//! [`correct_sql`]: the corrections of [`super::PredicateFixes`] made on SQL text, for hosts in
//! which no analyzer rule can be installed (datafusion-python's own sessions: the DataFusion FFI
//! carries table functions and tables, not logical rules).
//!
//! The text is parsed with DataFusion's SQL parser and rewritten as the rule rewrites plans, minus
//! what needs types: comparisons get their constant on the right, NULLs leave IN lists, `NOT`
//! goes down to the leaves, every `NOT IN` gets its NULL guard (`AND (x IS NOT NULL OR NULL)`,
//! which DataFusion removes again for a column that cannot be NULL), and a pair of `IN`s on one
//! operand, where its value is observed, gets `OR (x IS NULL AND NULL)`. Each rewrite keeps the
//! value of the expression. Text that does not parse, or that needs no correction, is
//! returned unchanged.

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, CastKind, Expr, JoinConstraint, JoinOperator, Query, SetExpr, UnaryOperator,
    Value, ValueWithSpan, VisitMut, VisitorMut, visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use std::ops::ControlFlow;

/// `sql` with the predicates DataFusion 55.2 answers wrongly rewritten into equivalent forms it
/// answers right (see the module documentation).
pub fn correct_sql(sql: &str) -> String {
    let Ok(mut statements) = Parser::parse_sql(&GenericDialect {}, sql) else {
        return sql.to_string();
    };
    let mut changed = false;
    let _ = visit_expressions_mut(&mut statements, |expr| {
        let taken = std::mem::replace(expr, null());
        let (fixed, c) = fix(taken);
        // In place of the node: an `AND` or `OR` it became needs its own parentheses.
        *expr = if c { nested(fixed) } else { fixed };
        changed |= c;
        ControlFlow::<()>::Continue(())
    });
    // The `IN` pairs guarded everywhere above need no guard at the top of a WHERE, HAVING or
    // JOIN ON condition, where NULL and false keep the same rows.
    let _ = statements.visit(&mut FilterTops);
    if !changed {
        return sql.to_string();
    }
    statements
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(";\n")
}

fn null() -> Expr {
    Expr::Value(ValueWithSpan::from(Value::Null))
}

/// Parentheses around an `AND` or `OR` (everything else binds tighter inside them).
fn nested(expr: Expr) -> Expr {
    match expr {
        Expr::BinaryOp {
            op: BinaryOperator::And | BinaryOperator::Or | BinaryOperator::Xor,
            ..
        } => Expr::Nested(Box::new(expr)),
        other => other,
    }
}

fn binary(left: Expr, op: BinaryOperator, right: Expr) -> Expr {
    Expr::BinaryOp {
        left: Box::new(nested(left)),
        op,
        right: Box::new(nested(right)),
    }
}

fn is_null(expr: &Expr) -> bool {
    match expr {
        Expr::Value(v) => v.value == Value::Null,
        Expr::Nested(e) | Expr::Cast { expr: e, .. } => is_null(e),
        _ => false,
    }
}

/// A constant: a literal, a typed string, an interval, or casts, signs and parentheses of one.
fn is_constant(expr: &Expr) -> bool {
    match expr {
        Expr::Value(_) | Expr::TypedString(_) | Expr::Interval(_) => true,
        Expr::Nested(e) | Expr::Cast { expr: e, .. } => is_constant(e),
        Expr::UnaryOp {
            op: UnaryOperator::Minus | UnaryOperator::Plus,
            expr,
        } => is_constant(expr),
        _ => false,
    }
}

fn boolean(expr: &Expr) -> Option<bool> {
    match expr {
        Expr::Value(v) => match v.value {
            Value::Boolean(b) => Some(b),
            _ => None,
        },
        Expr::Nested(e) => boolean(e),
        _ => None,
    }
}

fn swapped(op: &BinaryOperator) -> Option<BinaryOperator> {
    use BinaryOperator::*;
    Some(match op {
        Eq => Eq,
        NotEq => NotEq,
        Lt => Gt,
        LtEq => GtEq,
        Gt => Lt,
        GtEq => LtEq,
        _ => return None,
    })
}

fn negated(op: &BinaryOperator) -> Option<BinaryOperator> {
    use BinaryOperator::*;
    Some(match op {
        Eq => NotEq,
        NotEq => Eq,
        Lt => GtEq,
        LtEq => Gt,
        Gt => LtEq,
        GtEq => Lt,
        _ => return None,
    })
}

/// One node, its children already corrected. Returns whether it changed.
fn fix(expr: Expr) -> (Expr, bool) {
    match expr {
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => (negate(*expr), true),
        Expr::BinaryOp { left, op, right }
            if swapped(&op).is_some() && is_constant(&left) && !is_constant(&right) =>
        {
            let op = swapped(&op).unwrap_or(op);
            (
                Expr::BinaryOp {
                    left: right,
                    op,
                    right: left,
                },
                true,
            )
        }
        Expr::BinaryOp { left, op, right }
            if matches!(op, BinaryOperator::Eq | BinaryOperator::NotEq)
                && boolean(&right).is_some()
                && !is_constant(&left) =>
        {
            let value = boolean(&right).unwrap_or(true);
            if value == (op == BinaryOperator::Eq) {
                (nested(*left), true)
            } else {
                (negate(*left), true)
            }
        }
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } if in_pair(&left, &right).is_some() => {
            let operand = in_pair(&left, &right).cloned().unwrap_or_else(null);
            let pair = binary(*left, BinaryOperator::And, *right);
            let guard = binary(
                Expr::IsNull(Box::new(nested(operand))),
                BinaryOperator::And,
                null(),
            );
            (binary(pair, BinaryOperator::Or, guard), true)
        }
        Expr::InList {
            expr,
            list,
            negated,
        } => {
            let had_null = list.iter().any(is_null);
            let values: Vec<Expr> = list.into_iter().filter(|e| !is_null(e)).collect();
            if values.is_empty() {
                return (null(), true);
            }
            let rest = in_list(*expr, values, negated);
            match (had_null, negated) {
                (false, false) => (rest, false),
                (false, true) => (rest, true),
                (true, false) => (binary(rest, BinaryOperator::Or, null()), true),
                (true, true) => (binary(rest, BinaryOperator::And, null()), true),
            }
        }
        other => (other, false),
    }
}

/// The operand of a positive IN-style test: `x IN (…)`, `x = constant`, or an OR of them.
fn in_operand(expr: &Expr) -> Option<&Expr> {
    match expr {
        Expr::Nested(e) => in_operand(e),
        Expr::InList {
            expr,
            negated: false,
            ..
        } => Some(expr),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } if is_constant(right) => Some(left),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Or,
            right,
        } => {
            let (l, r) = (in_operand(left)?, in_operand(right)?);
            (l == r).then_some(l)
        }
        _ => None,
    }
}

/// The shared operand of two IN-style tests joined by `AND`, which DataFusion 55.2 folds into one
/// list (to `false` when they have no value in common, where SQL says NULL for a NULL operand).
fn in_pair<'a>(left: &'a Expr, right: &Expr) -> Option<&'a Expr> {
    let (l, r) = (in_operand(left)?, in_operand(right)?);
    (l == r).then_some(l)
}

/// The guard of [`fix`] on an `IN` pair, if `expr` is one: the pair.
fn unguarded(expr: &Expr) -> Option<Expr> {
    let Expr::BinaryOp {
        left,
        op: BinaryOperator::Or,
        right,
    } = strip(expr)
    else {
        return None;
    };
    let Expr::BinaryOp {
        left: is_null,
        op: BinaryOperator::And,
        right: null_value,
    } = strip(right)
    else {
        return None;
    };
    let (Expr::IsNull(operand), true) = (strip(is_null), is_null_value(null_value)) else {
        return None;
    };
    let Expr::BinaryOp {
        left: a,
        op: BinaryOperator::And,
        right: b,
    } = strip(left)
    else {
        return None;
    };
    (in_pair(a, b) == Some(strip(operand))).then(|| strip(left).clone())
}

fn strip(expr: &Expr) -> &Expr {
    match expr {
        Expr::Nested(e) => strip(e),
        other => other,
    }
}

fn is_null_value(expr: &Expr) -> bool {
    matches!(strip(expr), Expr::Value(v) if v.value == Value::Null)
}

/// Takes the guards off the `IN` pairs at the top of the WHERE, HAVING and JOIN ON conditions
/// (under their `AND`s and `OR`s), where false and NULL keep the same rows.
fn unguard_top(expr: &mut Expr) {
    if let Some(pair) = unguarded(expr) {
        *expr = nested(pair);
        return;
    }
    match expr {
        Expr::Nested(e) => unguard_top(e),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And | BinaryOperator::Or,
            right,
        } => {
            unguard_top(left);
            unguard_top(right);
        }
        _ => {}
    }
}

/// Visits every query and takes the guards off its filters' tops (see [`unguard_top`]).
struct FilterTops;

impl VisitorMut for FilterTops {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        unguard_set(&mut query.body);
        ControlFlow::Continue(())
    }
}

fn unguard_set(set: &mut SetExpr) {
    match set {
        SetExpr::Select(select) => {
            for condition in select.selection.iter_mut().chain(select.having.iter_mut()) {
                unguard_top(condition);
            }
            for join in select.from.iter_mut().flat_map(|t| t.joins.iter_mut()) {
                if let Some(JoinConstraint::On(on)) = join_constraint(&mut join.join_operator) {
                    unguard_top(on);
                }
            }
        }
        SetExpr::SetOperation { left, right, .. } => {
            unguard_set(left);
            unguard_set(right);
        }
        _ => {}
    }
}

fn join_constraint(op: &mut JoinOperator) -> Option<&mut JoinConstraint> {
    use JoinOperator::*;
    match op {
        Join(c) | Inner(c) | Left(c) | LeftOuter(c) | Right(c) | RightOuter(c) | FullOuter(c)
        | Semi(c) | LeftSemi(c) | RightSemi(c) | Anti(c) | LeftAnti(c) | RightAnti(c)
        | StraightJoin(c) => Some(c),
        _ => None,
    }
}

/// `x IN (values)`, with the NULL guard when negated.
fn in_list(expr: Expr, values: Vec<Expr>, negated: bool) -> Expr {
    let list = Expr::InList {
        expr: Box::new(expr.clone()),
        list: values,
        negated,
    };
    if !negated {
        return list;
    }
    let guard = binary(
        Expr::IsNotNull(Box::new(nested(expr))),
        BinaryOperator::Or,
        null(),
    );
    binary(list, BinaryOperator::And, guard)
}

/// `NOT expr`, pushed down to the leaves (`expr` is already corrected).
fn negate(expr: Expr) -> Expr {
    match expr {
        Expr::Nested(inner) => nested(negate(*inner)),
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => *expr,
        Expr::BinaryOp {
            left,
            op: op @ (BinaryOperator::And | BinaryOperator::Or),
            right,
        } => {
            let flipped = if op == BinaryOperator::And {
                BinaryOperator::Or
            } else {
                BinaryOperator::And
            };
            binary(negate(*left), flipped, negate(*right))
        }
        Expr::BinaryOp { left, op, right } if negated(&op).is_some() => Expr::BinaryOp {
            left,
            op: negated(&op).unwrap_or(op),
            right,
        },
        Expr::InList {
            expr,
            list,
            negated,
        } => in_list(*expr, list, !negated),
        Expr::IsNull(e) => Expr::IsNotNull(e),
        Expr::IsNotNull(e) => Expr::IsNull(e),
        Expr::IsTrue(e) => Expr::IsNotTrue(e),
        Expr::IsNotTrue(e) => Expr::IsTrue(e),
        Expr::IsFalse(e) => Expr::IsNotFalse(e),
        Expr::IsNotFalse(e) => Expr::IsFalse(e),
        Expr::IsUnknown(e) => Expr::IsNotUnknown(e),
        Expr::IsNotUnknown(e) => Expr::IsUnknown(e),
        Expr::IsDistinctFrom(a, b) => Expr::IsNotDistinctFrom(a, b),
        Expr::IsNotDistinctFrom(a, b) => Expr::IsDistinctFrom(a, b),
        Expr::Between {
            expr,
            negated,
            low,
            high,
        } => Expr::Between {
            expr,
            negated: !negated,
            low,
            high,
        },
        Expr::Like {
            negated,
            any,
            expr,
            pattern,
            escape_char,
        } => Expr::Like {
            negated: !negated,
            any,
            expr,
            pattern,
            escape_char,
        },
        Expr::ILike {
            negated,
            any,
            expr,
            pattern,
            escape_char,
        } => Expr::ILike {
            negated: !negated,
            any,
            expr,
            pattern,
            escape_char,
        },
        Expr::Value(v) => match v.value {
            Value::Boolean(b) => Expr::Value(ValueWithSpan::from(Value::Boolean(!b))),
            Value::Null => null(),
            other => Expr::UnaryOp {
                op: UnaryOperator::Not,
                expr: Box::new(Expr::Value(ValueWithSpan::from(other))),
            },
        },
        // A cast of NULL to boolean is still NULL.
        Expr::Cast {
            kind: CastKind::Cast,
            expr,
            ..
        } if is_null(&expr) => null(),
        other => Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr: Box::new(nested(other)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn where_of(sql: &str) -> String {
        let fixed = correct_sql(&format!("SELECT * FROM t WHERE {sql}"));
        fixed
            .split_once(" WHERE ")
            .map_or(fixed.clone(), |(_, w)| w.to_string())
    }

    #[test]
    fn the_rewrites() {
        assert_eq!(where_of("d = 'a' AND 'a' = d"), "(d = 'a' AND d = 'a')");
        assert_eq!(
            correct_sql("SELECT d IN ('a') AND d = 'b' AS p FROM t"),
            "SELECT ((d IN ('a') AND d = 'b') OR (d IS NULL AND NULL)) AS p FROM t",
            "a pair whose value is observed keeps its NULL"
        );
        assert_eq!(where_of("'b' < v"), "v > 'b'");
        assert_eq!(
            where_of("(i = 1 OR i = 4) AND NOT (i IN (0, 5, NULL))"),
            "(i = 1 OR i = 4) AND ((i NOT IN (0, 5) AND (i IS NOT NULL OR NULL)) AND NULL)"
        );
        assert_eq!(where_of("i IN (1, NULL)"), "(i IN (1) OR NULL)");
        assert_eq!(
            where_of("x = 2 AND i IN (1, NULL)"),
            "x = 2 AND (i IN (1) OR NULL)",
            "the OR keeps its place under the AND"
        );
        assert_eq!(where_of("i NOT IN (NULL)"), "NULL");
        assert_eq!(
            where_of("NOT (a > 1 OR b IS NULL)"),
            "(a <= 1 AND b IS NOT NULL)"
        );
        assert_eq!(where_of("b = false"), "NOT b");
        assert_eq!(where_of("NOT NOT (x LIKE 'a%')"), "x LIKE 'a%'");
    }

    #[test]
    fn text_without_these_shapes_or_that_does_not_parse_is_kept() {
        let plain = "select  name,count(*) from async_events('x') where depth = 1 group by name";
        assert_eq!(correct_sql(plain), plain);
        let broken = "SELECT FROM WHERE (";
        assert_eq!(correct_sql(broken), broken);
    }
}
