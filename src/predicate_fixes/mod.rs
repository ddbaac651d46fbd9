//! [`PredicateFixes`]: an analyzer rule that keeps two DataFusion 55.2 optimizer rewrites from
//! returning wrong rows, by putting predicates into forms those rewrites handle correctly.
//!
//! **Remove this module when the crate moves to a DataFusion release with both upstream fixes**
//! (apache/datafusion#24763 and #24258); `tests/predicate_fixes.rs` keeps a test per bug that
//! runs plain DataFusion without the rule and says when the bug is gone.
//!
//! 1. **Literal on the left** (fixed upstream by #24763). Type coercion wraps the literal of
//!    `'v' = c` in a cast when `c` is a dictionary or view string column; the simplifier folds
//!    that cast only after its one pass that moves literals to the right, so the comparison stays
//!    `Dict('v') = c`. `PushDownFilter` then compares whole expressions: `c = Dict('v') AND
//!    Dict('v') = c` reads as two different equalities on `c`, a contradiction, and the filter
//!    becomes `false` (no rows); `c >= 'v' AND 'v' < c` keeps the weaker bound (extra rows).
//!    **Fix**: every comparison with a constant on the left and something else on the right is
//!    swapped (`'v' = c` → `c = 'v'`, `'v' < c` → `c > 'v'`), which changes no value.
//! 2. **NULL in IN lists** (fixed upstream by #24258). The simplifier merges `x IN L1 AND
//!    NOT (x IN L2)` into `x IN (L1 minus L2)` as if `NOT IN` were two-valued: with a NULL in `L2`,
//!    `x NOT IN L2` is never true, yet the rows of `L1` come back. Its other set rewrites of IN
//!    lists (`x NOT IN L1 OR x NOT IN L2`, `x IN L1 AND x IN L2`) also turn SQL's NULL into
//!    `true` or `false`, which a `NOT` above them then flips. **Fixes**, each exact in SQL's
//!    three-valued logic:
//!    - NULLs leave IN lists: `x IN (a, NULL)` → `x IN (a) OR NULL`, `x NOT IN (a, NULL)` →
//!      `x NOT IN (a) AND NULL` (a list of NULLs alone is `NULL`);
//!    - `NOT` is pushed down to the leaves (`NOT (a AND b)` → `NOT a OR NOT b`, `NOT (x < 1)` →
//!      `x >= 1`, `NOT (x IN L)` → `x NOT IN L`, `b = false` → `NOT b`, …), before the
//!      simplifier can collapse what is under it;
//!    - `x NOT IN L` on a nullable `x` gets the guard `AND (x IS NOT NULL OR NULL)` (true for a
//!      value, NULL for NULL, as the `NOT IN` itself), so that two `NOT IN`s joined by `OR` keep
//!      their NULL;
//!    - where a boolean's value is observed rather than filtered on (a projection, `IS NULL`,
//!      `CASE`, …), `x IN L1 AND x IN L2` on a nullable `x` gets `OR (x IS NULL AND NULL)`, so that
//!      an empty intersection stays NULL for a NULL `x`.
//!
//! The rule runs after type coercion (an analyzer rule added to a session runs after the built-in
//! ones), rewrites every plan node and subquery, and keeps every output column's name.
//! [`register`](crate::udtf::register) installs it; a host that builds its own sessions installs
//! it with [`install_predicate_fixes`] (or `SessionStateBuilder::with_analyzer_rule(Arc::new(
//! PredicateFixes))`). Where no analyzer rule can be installed (datafusion-python's sessions),
//! [`correct_sql`] makes the same corrections on SQL text (`sql_text.rs`).

mod sql_text;

pub use sql_text::correct_sql;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{
    Between, BinaryExpr, Cast, Expr, ExprSchemable, Like, LogicalPlan, Operator, TryCast, lit,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::prelude::SessionContext;
use std::sync::Arc;

/// The name of the rule in a session's analyzer.
pub const PREDICATE_FIXES: &str = "async_events_predicate_fixes";

/// The analyzer rule (see the module documentation).
#[derive(Debug, Default, Clone, Copy)]
pub struct PredicateFixes;

/// Adds [`PredicateFixes`] to a session's analyzer, once (a session that has it is unchanged).
pub fn install_predicate_fixes(ctx: &SessionContext) {
    let state = ctx.state_ref();
    let mut state = state.write();
    if !state
        .analyzer()
        .rules
        .iter()
        .any(|r| r.name() == PREDICATE_FIXES)
    {
        state.add_analyzer_rule(Arc::new(PredicateFixes));
    }
}

impl AnalyzerRule for PredicateFixes {
    fn name(&self) -> &str {
        PREDICATE_FIXES
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        Ok(plan.transform_up_with_subqueries(fix_node)?.data)
    }
}

/// Rewrites the expressions of one plan node, keeping their output names.
fn fix_node(plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    let mut schema = merge_schema(&plan.inputs());
    if let LogicalPlan::TableScan(scan) = &plan {
        schema.merge(&DFSchema::try_from_qualified_schema(
            scan.table_name.clone(),
            &scan.source.schema(),
        )?);
    }
    // A filter's or a join's condition keeps the rows where it is true: there, `false` and
    // NULL are the same answer.
    let filters = matches!(plan, LogicalPlan::Filter(_) | LogicalPlan::Join(_));
    let names = NamePreserver::new(&plan);
    let fixed = plan.map_expressions(|expr| {
        let name = names.save(&expr);
        let fixed = fix_expr(expr, &schema, filters)?;
        Ok(fixed.update_data(|e| name.restore(e)))
    })?;
    if fixed.transformed {
        fixed.map_data(|plan| plan.recompute_schema())
    } else {
        Ok(fixed)
    }
}

/// The three passes over one expression: negations pushed down, comparisons and IN lists
/// rewritten, then the guards of observed values.
fn fix_expr(expr: Expr, schema: &DFSchema, filter: bool) -> Result<Transformed<Expr>> {
    let negations = expr.transform_down(|e| Ok(push_negation_here(e)))?;
    let leaves = negations.data.transform_up(|e| Ok(fix_leaf(e, schema)))?;
    let (guarded, changed) = guard_observed(leaves.data, schema, filter);
    Ok(Transformed::new_transformed(
        guarded,
        negations.transformed || leaves.transformed || changed,
    ))
}

fn is_null_literal(expr: &Expr) -> bool {
    match expr {
        Expr::Literal(v, _) => v.is_null(),
        Expr::Cast(Cast { expr, .. }) | Expr::TryCast(TryCast { expr, .. }) => {
            is_null_literal(expr)
        }
        _ => false,
    }
}

/// A constant: a literal, or casts of one.
fn is_constant(expr: &Expr) -> bool {
    match expr {
        Expr::Literal(..) => true,
        Expr::Cast(Cast { expr, .. }) | Expr::TryCast(TryCast { expr, .. }) => is_constant(expr),
        _ => false,
    }
}

fn null_boolean() -> Expr {
    lit(ScalarValue::Boolean(None))
}

fn is_comparison(op: Operator) -> bool {
    use Operator::*;
    matches!(
        op,
        Eq | NotEq | Lt | LtEq | Gt | GtEq | IsDistinctFrom | IsNotDistinctFrom
    )
}

fn binary(left: Expr, op: Operator, right: Expr) -> Expr {
    Expr::BinaryExpr(BinaryExpr::new(Box::new(left), op, Box::new(right)))
}

/// Pushes `NOT` down at one node until it stops there (applied top-down, so the new children
/// are visited next).
fn push_negation_here(expr: Expr) -> Transformed<Expr> {
    let mut step = push_negation(expr);
    let mut changed = false;
    while step.transformed {
        changed = true;
        step = push_negation(step.data);
    }
    Transformed::new_transformed(step.data, changed)
}

/// One step of pushing `NOT` down.
fn push_negation(expr: Expr) -> Transformed<Expr> {
    match expr {
        Expr::Not(inner) => match *inner {
            Expr::Not(x) => Transformed::yes(*x),
            Expr::BinaryExpr(BinaryExpr { left, op, right })
                if matches!(op, Operator::And | Operator::Or) =>
            {
                let flipped = if op == Operator::And {
                    Operator::Or
                } else {
                    Operator::And
                };
                Transformed::yes(binary(Expr::Not(left), flipped, Expr::Not(right)))
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right })
                if is_comparison(op) && op.negate().is_some() =>
            {
                let negated = op.negate().unwrap_or(op);
                Transformed::yes(binary(*left, negated, *right))
            }
            Expr::InList(list) => Transformed::yes(Expr::InList(InList {
                negated: !list.negated,
                ..list
            })),
            Expr::Between(between) => Transformed::yes(Expr::Between(Between {
                negated: !between.negated,
                ..between
            })),
            Expr::Like(like) => Transformed::yes(Expr::Like(Like {
                negated: !like.negated,
                ..like
            })),
            Expr::IsNull(x) => Transformed::yes(Expr::IsNotNull(x)),
            Expr::IsNotNull(x) => Transformed::yes(Expr::IsNull(x)),
            Expr::IsTrue(x) => Transformed::yes(Expr::IsNotTrue(x)),
            Expr::IsNotTrue(x) => Transformed::yes(Expr::IsTrue(x)),
            Expr::IsFalse(x) => Transformed::yes(Expr::IsNotFalse(x)),
            Expr::IsNotFalse(x) => Transformed::yes(Expr::IsFalse(x)),
            Expr::IsUnknown(x) => Transformed::yes(Expr::IsNotUnknown(x)),
            Expr::IsNotUnknown(x) => Transformed::yes(Expr::IsUnknown(x)),
            Expr::Literal(ScalarValue::Boolean(b), metadata) => {
                Transformed::yes(Expr::Literal(ScalarValue::Boolean(b.map(|b| !b)), metadata))
            }
            other => Transformed::no(Expr::Not(Box::new(other))),
        },
        // `b = true`, `b <> false` are `b`; `b = false`, `b <> true` are `NOT b` (NULL stays
        // NULL in each); the NOT is then pushed down.
        Expr::BinaryExpr(BinaryExpr { left, op, right })
            if matches!(op, Operator::Eq | Operator::NotEq)
                && (boolean_literal(&right).is_some() || boolean_literal(&left).is_some())
                && !(is_constant(&left) && is_constant(&right)) =>
        {
            let (value, other) = match boolean_literal(&right) {
                Some(v) => (v, *left),
                None => (boolean_literal(&left).unwrap_or(true), *right),
            };
            if value == (op == Operator::Eq) {
                Transformed::yes(other)
            } else {
                Transformed::yes(push_negation(Expr::Not(Box::new(other))).data)
            }
        }
        other => Transformed::no(other),
    }
}

/// `Some(b)` for a non-NULL boolean literal.
fn boolean_literal(expr: &Expr) -> Option<bool> {
    match expr {
        Expr::Literal(ScalarValue::Boolean(Some(b)), _) => Some(*b),
        _ => None,
    }
}

/// Whether `expr` may be NULL (when its schema cannot tell, it may).
fn nullable(expr: &Expr, schema: &DFSchema) -> bool {
    expr.nullable(schema).unwrap_or(true)
}

/// Comparisons with the constant on the right; NULLs out of IN lists; guards on `NOT IN`.
fn fix_leaf(expr: Expr, schema: &DFSchema) -> Transformed<Expr> {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right })
            if is_comparison(op) && is_constant(&left) && !is_constant(&right) =>
        {
            let swapped = op.swap().unwrap_or(op);
            Transformed::yes(binary(*right, swapped, *left))
        }
        Expr::InList(InList {
            expr,
            list,
            negated,
        }) if list.iter().any(is_null_literal) => {
            let values: Vec<Expr> = list.into_iter().filter(|e| !is_null_literal(e)).collect();
            if values.is_empty() {
                // `x IN (NULL)` and `x NOT IN (NULL)` are NULL whatever `x` is.
                return Transformed::yes(null_boolean());
            }
            let rest = Expr::InList(InList {
                expr: expr.clone(),
                list: values,
                negated,
            });
            let rest = if negated {
                guard_not_in(rest, &expr, schema)
            } else {
                rest
            };
            let op = if negated { Operator::And } else { Operator::Or };
            Transformed::yes(binary(rest, op, null_boolean()))
        }
        Expr::InList(list) if list.negated => {
            let operand = list.expr.clone();
            let original = Expr::InList(list);
            let guarded = guard_not_in(original.clone(), &operand, schema);
            if guarded == original {
                Transformed::no(original)
            } else {
                Transformed::yes(guarded)
            }
        }
        other => Transformed::no(other),
    }
}

/// `x NOT IN L AND (x IS NOT NULL OR NULL)` for a nullable, non-volatile `x`: the guard is true
/// for a value and NULL for NULL, as `x NOT IN L` is, so the expression keeps its value; it only
/// stops the simplifier from treating the `NOT IN` as a bare list.
fn guard_not_in(not_in: Expr, operand: &Expr, schema: &DFSchema) -> Expr {
    if !nullable(operand, schema) || operand.is_volatile() {
        return not_in;
    }
    let guard = binary(
        Expr::IsNotNull(Box::new(operand.clone())),
        Operator::Or,
        null_boolean(),
    );
    binary(not_in, Operator::And, guard)
}

/// The operand of a positive IN-style test: `x IN (…)` or `x = constant`.
fn in_operand(expr: &Expr) -> Option<&Expr> {
    match expr {
        Expr::InList(InList {
            expr,
            negated: false,
            ..
        }) => Some(expr),
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) if is_constant(right) => Some(left),
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Or,
            right,
        }) => {
            let (l, r) = (in_operand(left)?, in_operand(right)?);
            (l == r).then_some(l)
        }
        _ => None,
    }
}

/// Guards `x IN L1 AND x IN L2` on a nullable `x` where its value is observed (anywhere but
/// under the ANDs and ORs at the top of a filter or join condition): `… OR (x IS NULL AND
/// NULL)`, exact (both sides are NULL for a NULL `x`, and the guard is false otherwise).
fn guard_observed(expr: Expr, schema: &DFSchema, filter: bool) -> (Expr, bool) {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right })
            if matches!(op, Operator::And | Operator::Or) =>
        {
            let (left, l) = guard_observed(*left, schema, filter);
            let (right, r) = guard_observed(*right, schema, filter);
            let pair = match (in_operand(&left), in_operand(&right)) {
                (Some(a), Some(b)) if a == b && nullable(a, schema) && !a.is_volatile() => {
                    Some(a.clone())
                }
                _ => None,
            };
            let node = binary(left, op, right);
            match pair {
                Some(operand) if op == Operator::And && !filter => {
                    let guard = binary(
                        Expr::IsNull(Box::new(operand)),
                        Operator::And,
                        null_boolean(),
                    );
                    (binary(node, Operator::Or, guard), true)
                }
                _ => (node, l || r),
            }
        }
        other => {
            let mut changed = false;
            let rebuilt = other.map_children(|child| {
                let (child, c) = guard_observed(child, schema, false);
                changed |= c;
                Ok(Transformed::new_transformed(child, c))
            });
            match rebuilt {
                Ok(t) => (t.data, changed),
                // `map_children` with an infallible closure does not fail.
                Err(_) => unreachable!("an infallible rewrite failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::logical_expr::{col, in_list};
    use std::ops::Not;

    fn schema() -> DFSchema {
        DFSchema::try_from(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("n", DataType::Int64, false),
            Field::new("b", DataType::Boolean, true),
        ]))
        .unwrap()
    }

    fn fixed(e: Expr, filter: bool) -> String {
        fix_expr(e, &schema(), filter).unwrap().data.to_string()
    }

    #[test]
    fn constants_move_right_and_nulls_leave_in_lists() {
        assert_eq!(fixed(lit(3i64).lt(col("a")), true), "a > Int64(3)");
        assert_eq!(
            fixed(
                in_list(
                    col("n"),
                    vec![lit(1i64), lit(ScalarValue::Int64(None))],
                    false
                ),
                true
            ),
            "n IN ([Int64(1)]) OR Boolean(NULL)"
        );
        assert_eq!(
            fixed(
                in_list(col("n"), vec![lit(ScalarValue::Int64(None))], true),
                true
            ),
            "Boolean(NULL)"
        );
        // NOT IN with a NULL on a nullable column: the NULL, and the guard.
        assert_eq!(
            fixed(
                in_list(
                    col("a"),
                    vec![lit(1i64), lit(ScalarValue::Int64(None))],
                    true
                ),
                true
            ),
            "a NOT IN ([Int64(1)]) AND (a IS NOT NULL OR Boolean(NULL)) AND Boolean(NULL)"
        );
        assert_eq!(
            fixed(in_list(col("n"), vec![lit(1i64)], true), true),
            "n NOT IN ([Int64(1)])",
            "no guard on a non-nullable column"
        );
    }

    #[test]
    fn negations_go_down_to_the_leaves() {
        let e = (col("a").eq(lit(1i64)).or(col("a").eq(lit(2i64))))
            .and(in_list(col("n"), vec![lit(3i64)], false))
            .not();
        assert_eq!(
            fixed(e, true),
            "a != Int64(1) AND a != Int64(2) OR n NOT IN ([Int64(3)])"
        );
        assert_eq!(fixed(col("b").eq(lit(false)), true), "NOT b");
        assert_eq!(fixed(col("b").not_eq(lit(false)), true), "b");
        assert_eq!(
            fixed(col("a").is_null().not().not().not(), true),
            "a IS NOT NULL"
        );
        assert_eq!(
            fixed(lit(true).eq(lit(false)), true),
            "Boolean(true) = Boolean(false)"
        );
    }

    #[test]
    fn observed_in_pairs_keep_their_null() {
        let pair = in_list(col("a"), vec![lit(1i64)], false).and(in_list(
            col("a"),
            vec![lit(2i64)],
            false,
        ));
        assert_eq!(
            fixed(pair.clone(), false),
            "a IN ([Int64(1)]) AND a IN ([Int64(2)]) OR a IS NULL AND Boolean(NULL)"
        );
        assert_eq!(
            fixed(pair.clone(), true),
            "a IN ([Int64(1)]) AND a IN ([Int64(2)])",
            "a filter keeps only true rows: no guard"
        );
        // Under IS NULL the value is observed, even in a filter.
        assert!(fixed(pair.is_null(), true).contains("OR a IS NULL AND Boolean(NULL)"));
        let non_null = in_list(col("n"), vec![lit(1i64)], false).and(in_list(
            col("n"),
            vec![lit(2i64)],
            false,
        ));
        assert_eq!(
            fixed(non_null, false),
            "n IN ([Int64(1)]) AND n IN ([Int64(2)])"
        );
    }
}
