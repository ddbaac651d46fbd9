//! `process_spans(process_id, span_types)` and `view_instance('process_spans', process_id)`:
//! micromegas's table of a process's thread spans and async spans together.
//!
//! Its columns are micromegas 0.33's: `stream_id`, `thread_name`, then the twelve of the
//! `thread_spans` view. The thread rows are each thread's `view_instance('thread_spans', …)`
//! (root rows included), the async rows the spans of `async_spans` that finished after they
//! began, with `stream_id` empty and `thread_name` `async`, as micromegas writes them (its
//! inner join of begin and end events with `begin < end`). The plan is built here, physical
//! from the start, so that it also runs where the session is a foreign one (datafusion-python).

use super::columns::{Flavor, thread_spans_schema};
use super::table::ThreadSpansTable;
use crate::properties::property_functions;
use crate::spans::{AsyncSpansTable, async_spans_schema};
use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, Result, plan_err};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Expr, TableType, cast, col, lit};
use datafusion::physical_expr::create_physical_expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;
use std::sync::Arc;

/// Which spans `process_spans` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanTypes {
    /// Thread (scope) spans only.
    Thread,
    /// Async spans only.
    Async,
    /// Both, the thread rows first.
    Both,
}

impl SpanTypes {
    /// Parses micromegas's `span_types` argument, with its message for anything else.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "thread" => Ok(Self::Thread),
            "async" => Ok(Self::Async),
            "both" => Ok(Self::Both),
            other => plan_err!("span_types must be 'thread', 'async', or 'both', given: {other}"),
        }
    }

    /// Whether thread spans are included.
    pub fn thread(self) -> bool {
        self != Self::Async
    }

    /// Whether async spans are included.
    pub fn async_(self) -> bool {
        self != Self::Thread
    }
}

/// The table of `process_spans`.
#[derive(Debug)]
pub struct ProcessSpansTable {
    /// A [`Flavor::ProcessSpans`] table, or [`Flavor::ProcessSpansBesideAsync`] with async spans.
    threads: ThreadSpansTable,
    spans: AsyncSpansTable,
    types: SpanTypes,
    schema: SchemaRef,
}

impl ProcessSpansTable {
    /// The spans of `types` from `threads` (built with [`Flavor::ProcessSpans`]) and `spans`.
    /// With async spans, the thread rows take [`Flavor::ProcessSpansBesideAsync`]'s schema:
    /// the async rows' times come from nullable columns (never NULL in these rows).
    pub fn new(threads: ThreadSpansTable, spans: AsyncSpansTable, types: SpanTypes) -> Self {
        let flavor = match types.async_() {
            false => Flavor::ProcessSpans,
            true => Flavor::ProcessSpansBesideAsync,
        };
        Self {
            threads: threads.with_flavor(flavor),
            spans,
            types,
            schema: thread_spans_schema(flavor),
        }
    }

    /// The table of the thread rows.
    pub fn threads(&self) -> &ThreadSpansTable {
        &self.threads
    }

    /// The table the async rows come from.
    pub fn spans(&self) -> &AsyncSpansTable {
        &self.spans
    }

    /// Which spans the table returns.
    pub fn types(&self) -> SpanTypes {
        self.types
    }

    /// The async rows: finished spans with `begin < end`, in micromegas's columns.
    async fn async_rows(&self, state: &dyn Session) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(to_jsonb) = property_functions()
            .into_iter()
            .find(|f| f.name() == "properties_to_jsonb")
        else {
            return plan_err!("process_spans: properties_to_jsonb is not available");
        };
        let to_jsonb = Arc::new(to_jsonb);
        let input = self.spans.scan(state, None, &[], None).await?;
        let input_schema = DFSchema::try_from(async_spans_schema().as_ref().clone())?;
        let props = state.execution_props();
        let planning = PhysicalPlanningContext::default();
        let physical = |e: &Expr| create_physical_expr(e, &input_schema, props, &planning);
        let finished = col("finished").is_true().and(col("begin").lt(col("end")));
        let input = Arc::new(FilterExec::try_new(physical(&finished)?, input)?);
        let of = |name: &str| -> Result<DataType> {
            Ok(self.schema.field_with_name(name)?.data_type().clone())
        };
        let columns: Vec<(Expr, &str)> = vec![
            (cast(lit(""), of("stream_id")?), "stream_id"),
            (cast(lit("async"), of("thread_name")?), "thread_name"),
            (col("span_id"), "id"),
            (col("parent_span_id"), "parent"),
            (col("depth"), "depth"),
            (col("hash"), "hash"),
            (col("begin"), "begin"),
            (col("end"), "end"),
            (cast(col("duration"), DataType::Int64), "duration"),
            (cast(col("name"), of("name")?), "name"),
            (cast(col("target"), of("target")?), "target"),
            (cast(col("filename"), of("filename")?), "filename"),
            (col("line"), "line"),
            (
                cast(to_jsonb.call(vec![col("properties")]), of("properties")?),
                "properties",
            ),
        ];
        let exprs = columns
            .iter()
            .map(|(e, name)| Ok((physical(e)?, (*name).to_owned())))
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(ProjectionExec::try_new(exprs, input)?))
    }
}

#[async_trait]
impl TableProvider for ProcessSpansTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if self.types.thread() {
            inputs.push(self.threads.scan(state, None, &[], None).await?);
        }
        if self.types.async_() {
            inputs.push(self.async_rows(state).await?);
        }
        let plan: Arc<dyn ExecutionPlan> = match inputs.len() {
            1 => inputs.remove(0),
            _ => UnionExec::try_new(inputs)?,
        };
        match projection {
            None => Ok(plan),
            Some(p) => {
                let schema = plan.schema();
                let exprs = p
                    .iter()
                    .map(|&i| {
                        let name = schema.field(i).name().clone();
                        let column = datafusion::physical_expr::expressions::col(&name, &schema)?;
                        Ok((column, name))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
            }
        }
    }
}
