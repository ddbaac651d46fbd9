//! [`ScanProjection`]: the columns a scan decodes and the order it outputs them in.

use crate::format::{Column, ColumnSet};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use std::sync::Arc;

/// The columns a scan decodes and the order in which it outputs them.
///
/// The decoder fills columns in schema order, each once; a projection may name them in any
/// order and more than once (`TableProvider::scan` must honour it exactly), so the decoded
/// batch is rearranged when they differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanProjection {
    /// Columns decoded.
    pub columns: ColumnSet,
    /// For each output column, its position in the decoded batch; `None` when the decoded batch
    /// is the output.
    pub order: Option<Vec<usize>>,
    /// The output schema.
    pub schema: SchemaRef,
}

impl ScanProjection {
    /// The projection of `TableProvider::scan` (indices into the `async_events` schema; `None`
    /// for all columns).
    pub fn new(projection: Option<&[usize]>) -> datafusion::common::Result<Self> {
        let full = crate::format::async_events_schema();
        let Some(indices) = projection else {
            return Ok(Self {
                columns: ColumnSet::all(),
                order: None,
                schema: full,
            });
        };
        let mut columns = ColumnSet::none();
        for &i in indices {
            match Column::from_index(i) {
                Some(c) => columns = columns.with(c),
                None => {
                    return datafusion::common::plan_err!(
                        "async_events has {} columns, the projection asks for column {i}",
                        Column::ALL.len()
                    );
                }
            }
        }
        let decoded: Vec<usize> = columns.iter().map(|c| c as usize).collect();
        let order: Vec<usize> = indices
            .iter()
            .filter_map(|i| decoded.iter().position(|d| d == i))
            .collect();
        let identity = order.iter().copied().eq(0..decoded.len());
        let schema = Arc::new(Schema::new(
            indices
                .iter()
                .map(|&i| full.field(i).clone())
                .collect::<Vec<_>>(),
        ));
        Ok(Self {
            columns,
            order: (!identity).then_some(order),
            schema,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projections_keep_order_and_repeats() {
        let p = ScanProjection::new(Some(&[8, 2])).unwrap();
        assert_eq!(
            p.columns.iter().collect::<Vec<_>>(),
            [Column::Time, Column::Name]
        );
        assert_eq!(p.order, Some(vec![1, 0]));
        let names: Vec<_> = p
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(names, ["name", "time"]);
        let p = ScanProjection::new(Some(&[2, 2, 8])).unwrap();
        assert_eq!(p.order, Some(vec![0, 0, 1]));
        assert_eq!(p.schema.fields().len(), 3);
        let p = ScanProjection::new(Some(&[2, 8])).unwrap();
        assert_eq!(
            p.order, None,
            "sorted and distinct: the decoded batch as is"
        );
        assert_eq!(ScanProjection::new(Some(&[])).unwrap().order, None);
        assert!(ScanProjection::new(Some(&[13])).is_err());
        assert_eq!(ScanProjection::new(None).unwrap().columns, ColumnSet::all());
    }
}
