//! [`TimePruning`]: skips a block whose time bounds cannot match the filters pushed from above
//! (the TopK threshold of `ORDER BY time DESC LIMIT n`, join filters), just before it is
//! fetched.

use datafusion::arrow::array::{ArrayRef, BooleanArray, TimestampNanosecondArray, UInt64Array};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use datafusion::common::pruning::PruningStatistics;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr_common::physical_expr::snapshot_generation;
use datafusion::physical_optimizer::pruning::{PruningPredicate, PruningPredicateBuilder};
use std::collections::HashSet;
use std::sync::Arc;

/// Time bounds of one block, for a pruning predicate on `time`.
struct BlockStats {
    min: i64,
    max: i64,
}

impl BlockStats {
    fn time(&self, column: &datafusion::common::Column, v: i64) -> Option<ArrayRef> {
        (column.name == "time").then(|| {
            Arc::new(TimestampNanosecondArray::from(vec![v]).with_timezone("+00:00")) as ArrayRef
        })
    }
}

impl PruningStatistics for BlockStats {
    fn min_values(&self, column: &datafusion::common::Column) -> Option<ArrayRef> {
        self.time(column, self.min)
    }
    fn max_values(&self, column: &datafusion::common::Column) -> Option<ArrayRef> {
        self.time(column, self.max)
    }
    fn num_containers(&self) -> usize {
        1
    }
    fn null_counts(&self, column: &datafusion::common::Column) -> Option<ArrayRef> {
        (column.name == "time").then(|| Arc::new(UInt64Array::from(vec![0u64])) as ArrayRef)
    }
    fn row_counts(&self) -> Option<ArrayRef> {
        None
    }
    fn contained(
        &self,
        _column: &datafusion::common::Column,
        _values: &HashSet<ScalarValue>,
    ) -> Option<BooleanArray> {
        None
    }
}

/// Prunes blocks by their time bounds with the filters pushed from above.
///
/// The scan keeps only the pushed conjuncts on `time` alone (the statistics of a block are its
/// time bounds). The pruning predicate is built once, and again only when a dynamic filter
/// among them (the TopK threshold) has changed since.
pub(crate) struct TimePruning {
    /// The pushed filters on `time`, if any.
    filter: Option<Arc<dyn PhysicalExpr>>,
    generation: u64,
    predicate: Option<PruningPredicate>,
    schema: SchemaRef,
    /// Pruning predicates built so far.
    builds: usize,
}

impl TimePruning {
    pub fn new(filter: Option<Arc<dyn PhysicalExpr>>, schema: SchemaRef) -> Self {
        let mut pruning = Self {
            filter,
            generation: 0,
            predicate: None,
            schema,
            builds: 0,
        };
        pruning.rebuild();
        pruning
    }

    fn rebuild(&mut self) {
        let Some(filter) = &self.filter else {
            return;
        };
        self.generation = snapshot_generation(filter);
        self.builds += 1;
        self.predicate = PruningPredicateBuilder::new()
            .with_file_schema(self.schema.clone())
            .try_build(filter.clone())
            .ok()
            .filter(|p| !p.always_true());
    }

    /// Whether the filters prove that no row of a block with these time bounds can pass.
    pub fn cannot_match(&mut self, min: i64, max: i64) -> bool {
        let Some(filter) = &self.filter else {
            return false;
        };
        if snapshot_generation(filter) != self.generation {
            self.rebuild();
        }
        self.predicate
            .as_ref()
            .is_some_and(|p| matches!(p.prune(&BlockStats { min, max }).as_deref(), Ok([false])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{
        BinaryExpr, Column as ColumnExpr, DynamicFilterPhysicalExpr, lit,
    };

    fn time_schema() -> SchemaRef {
        crate::provider::ScanProjection::new(Some(&[2]))
            .unwrap()
            .schema
    }

    fn time_gt(ns: i64) -> Arc<dyn PhysicalExpr> {
        let time: Arc<dyn PhysicalExpr> = Arc::new(ColumnExpr::new("time", 0));
        let value = ScalarValue::TimestampNanosecond(Some(ns), Some("+00:00".into()));
        Arc::new(BinaryExpr::new(time, Operator::Gt, lit(value)))
    }

    #[test]
    fn a_static_filter_is_compiled_once() {
        let mut pruning = TimePruning::new(Some(time_gt(100)), time_schema());
        for i in 0..50 {
            assert!(pruning.cannot_match(i, i + 10));
            assert!(!pruning.cannot_match(90, 110 + i));
        }
        assert_eq!(pruning.builds, 1);
        let mut none = TimePruning::new(None, time_schema());
        assert!(!none.cannot_match(0, 1));
        assert_eq!(none.builds, 0);
    }

    #[test]
    fn a_dynamic_filter_is_recompiled_only_when_it_changes() {
        let time: Arc<dyn PhysicalExpr> = Arc::new(ColumnExpr::new("time", 0));
        let dynamic = Arc::new(DynamicFilterPhysicalExpr::new(
            vec![time],
            lit(ScalarValue::Boolean(Some(true))),
        ));
        let mut pruning = TimePruning::new(Some(dynamic.clone()), time_schema());
        assert!(!pruning.cannot_match(0, 10));
        assert!(!pruning.cannot_match(0, 10));
        let builds = pruning.builds;
        dynamic.update(time_gt(100)).unwrap();
        assert!(pruning.cannot_match(0, 10), "the new threshold prunes");
        assert!(pruning.cannot_match(20, 30));
        assert!(!pruning.cannot_match(50, 150));
        assert_eq!(pruning.builds, builds + 1);
        dynamic.update(time_gt(200)).unwrap();
        assert!(pruning.cannot_match(50, 150));
        assert_eq!(pruning.builds, builds + 2);
    }
}
