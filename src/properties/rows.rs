//! `jsonb_each(jsonb)` and `jsonb_array_elements(jsonb)`: table functions that expand JSONB
//! values into rows, under micromegas 0.33's names and with its rules.
//!
//! The argument is a JSONB value (a literal, `jsonb_parse('…')`) or a subquery giving a column
//! of them, such as `(SELECT properties FROM processes WHERE process_id = '…')`; it is
//! evaluated when the table is scanned, and every non-NULL value of every row it gives is
//! expanded, in order. The column may be JSONB (`Binary`, dictionary-encoded or not) or a
//! `properties` column of another layout (read as a JSONB object, as the `jsonb_*` functions
//! read it). `jsonb_each` gives `(key, value)`: an object's members by name, an array's
//! elements by their index as text; `jsonb_array_elements` gives `value`, an array's elements.
//! Values are JSONB. A value of another kind (a scalar for `jsonb_each`, anything but an array
//! for `jsonb_array_elements`) is an error; NULL values give no rows. A subquery that gives no
//! row is an error for `jsonb_each` and no rows for `jsonb_array_elements`, as in micromegas.

use super::columns::{bad_jsonb, jsonb_values};
use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, BinaryBuilder, RecordBatch, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, TableType};
use datafusion::physical_plan::{ExecutionPlan, collect};
use jsonb::RawJsonb;
use std::sync::Arc;

/// Which expansion a [`JsonbRows`] function makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonbRowsKind {
    /// `jsonb_each`: `(key, value)` of an object's members or an array's elements.
    Each,
    /// `jsonb_array_elements`: `value` of an array's elements.
    ArrayElements,
}

impl JsonbRowsKind {
    /// The SQL name of the function.
    pub fn name(self) -> &'static str {
        match self {
            Self::Each => "jsonb_each",
            Self::ArrayElements => "jsonb_array_elements",
        }
    }

    fn schema(self) -> SchemaRef {
        let value = Field::new("value", DataType::Binary, false);
        Arc::new(match self {
            Self::Each => Schema::new(vec![Field::new("key", DataType::Utf8, false), value]),
            Self::ArrayElements => Schema::new(vec![value]),
        })
    }
}

/// The table function `jsonb_each` or `jsonb_array_elements` (see the module documentation).
#[derive(Debug, Clone, Copy)]
pub struct JsonbRows(pub JsonbRowsKind);

/// Both table functions, with their names, for `SessionContext::register_udtf`.
pub fn jsonb_row_functions() -> Vec<(&'static str, Arc<dyn TableFunctionImpl>)> {
    [JsonbRowsKind::Each, JsonbRowsKind::ArrayElements]
        .into_iter()
        .map(|kind| {
            (
                kind.name(),
                Arc::new(JsonbRows(kind)) as Arc<dyn TableFunctionImpl>,
            )
        })
        .collect()
}

impl TableFunctionImpl for JsonbRows {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let name = self.0.name();
        let [argument] = args.exprs() else {
            return plan_err!(
                "{name} takes one argument: a JSONB value, or a subquery giving a column of them"
            );
        };
        // A subquery is run as it is; any other expression as the one column of one row.
        let source = match argument {
            Expr::ScalarSubquery(subquery) => subquery.subquery.clone(),
            other => Arc::new(
                LogicalPlanBuilder::empty(true)
                    .project(vec![other.clone()])?
                    .build()?,
            ),
        };
        Ok(Arc::new(JsonbRowsTable {
            kind: self.0,
            source,
        }))
    }
}

/// The rows of one call, expanded when scanned.
#[derive(Debug)]
struct JsonbRowsTable {
    kind: JsonbRowsKind,
    source: Arc<LogicalPlan>,
}

impl JsonbRowsTable {
    /// The rows of the argument's values.
    fn expand(&self, batches: &[RecordBatch]) -> Result<RecordBatch> {
        let name = self.kind.name();
        // As in micromegas: `jsonb_each` of a subquery giving no row is an error,
        // `jsonb_array_elements` of one gives no rows.
        if self.kind == JsonbRowsKind::Each && batches.iter().all(|b| b.num_rows() == 0) {
            return exec_err!("{name}: its argument gave no row");
        }
        let mut keys = StringBuilder::new();
        let mut values = BinaryBuilder::new();
        for batch in batches {
            let [column] = batch.columns() else {
                return exec_err!(
                    "{name}: its subquery must give one column, it gives {}",
                    batch.num_columns()
                );
            };
            if column.data_type() == &DataType::Null {
                continue;
            }
            let jsonb = jsonb_values(name, column)?;
            for row in (0..jsonb.len()).filter(|&row| jsonb.is_valid(row)) {
                let raw = RawJsonb::new(jsonb.value(row));
                // An object's members (for `jsonb_each`); otherwise an array's elements.
                if self.kind == JsonbRowsKind::Each {
                    match raw.object_each() {
                        Ok(Some(members)) => {
                            for (key, value) in members {
                                keys.append_value(key);
                                values.append_value(value.as_ref());
                            }
                            continue;
                        }
                        Ok(None) => {}
                        Err(e) => return bad_jsonb(name, row, e),
                    }
                }
                match raw.array_values() {
                    Ok(Some(elements)) => {
                        for (index, value) in elements.into_iter().enumerate() {
                            keys.append_value(index.to_string());
                            values.append_value(value.as_ref());
                        }
                    }
                    Ok(None) => {
                        let expected = match self.kind {
                            JsonbRowsKind::Each => "a JSONB object or array",
                            JsonbRowsKind::ArrayElements => "a JSONB array",
                        };
                        return exec_err!("{name}: row {row} of its argument is not {expected}");
                    }
                    Err(e) => return bad_jsonb(name, row, e),
                }
            }
        }
        let values: ArrayRef = Arc::new(values.finish());
        let columns = match self.kind {
            JsonbRowsKind::Each => vec![Arc::new(keys.finish()) as ArrayRef, values],
            JsonbRowsKind::ArrayElements => vec![values],
        };
        Ok(RecordBatch::try_new(self.kind.schema(), columns)?)
    }
}

#[async_trait]
impl TableProvider for JsonbRowsTable {
    fn schema(&self) -> SchemaRef {
        self.kind.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = state.create_physical_plan(&self.source).await?;
        let batches = collect(plan, state.task_ctx()).await?;
        let rows = self.expand(&batches)?;
        let table = MemTable::try_new(self.schema(), vec![vec![rows]])?;
        table.scan(state, projection, filters, limit).await
    }
}
