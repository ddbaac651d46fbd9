//! [`ThreadSpansTable`]: the `TableProvider` of `thread_spans(process_id [, begin, end])` and of
//! `view_instance('thread_spans', stream_id)`.
//!
//! Planning lists the process's thread streams and their blocks overlapping the range in the
//! metadata database (a `stream_id` filter narrows the streams), then hands them to a
//! [`ThreadSpansExec`]. Whole blocks are read: a scope's begin and end may be anywhere in them.

use super::columns::{Flavor, thread_spans_schema};
use super::exec::{StreamPlan, ThreadSpansExec};
use crate::format::RowFilter;
use crate::lake::{BlockWindow, Lake};
use crate::provider::{ScanCaches, ScanOptions, ScanPredicate, process_clock, tick_window};
use crate::time_bounds::TimeBounds;
use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Result, internal_err, plan_err};
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use std::sync::Arc;
use uuid::Uuid;

/// Whose thread spans a table holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadSpansOf {
    /// Every thread of a process.
    Process(Uuid),
    /// One thread stream (`view_instance('thread_spans', stream_id)`); its process is looked up.
    Stream(Uuid),
}

/// The thread spans of a process or of one thread, as a table.
#[derive(Debug, Clone)]
pub struct ThreadSpansTable {
    lake: Lake,
    of: ThreadSpansOf,
    bounds: TimeBounds,
    flavor: Flavor,
    options: ScanOptions,
    caches: Arc<ScanCaches>,
}

impl ThreadSpansTable {
    /// The spans of `of` in blocks overlapping `bounds`, with `flavor`'s columns.
    pub fn new(
        lake: Lake,
        of: ThreadSpansOf,
        bounds: TimeBounds,
        flavor: Flavor,
        options: ScanOptions,
        caches: Arc<ScanCaches>,
    ) -> Self {
        Self {
            lake,
            of,
            bounds,
            flavor,
            options,
            caches,
        }
    }

    /// The lake read.
    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    /// Whose spans the table holds.
    pub fn of(&self) -> ThreadSpansOf {
        self.of
    }

    /// The range of the blocks read.
    pub fn bounds(&self) -> TimeBounds {
        self.bounds
    }

    /// The table's columns.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// How blocks are read.
    pub fn options(&self) -> &ScanOptions {
        &self.options
    }

    /// The same spans with `flavor`'s columns.
    pub(crate) fn with_flavor(mut self, flavor: Flavor) -> Self {
        self.flavor = flavor;
        self
    }

    /// Whether a filter only names `stream_id` (then it narrows the streams listed).
    fn on_stream_id(filter: &Expr) -> bool {
        let refs = filter.column_refs();
        !refs.is_empty() && refs.iter().all(|c| c.name == "stream_id")
    }

    /// Filters on `name`, `target` and `depth` alone: applied to the rows as they are built
    /// (and by DataFusion again above), so that left-out spans are never built.
    fn on_row_columns(filter: &Expr) -> bool {
        let refs = filter.column_refs();
        !refs.is_empty()
            && refs
                .iter()
                .all(|c| matches!(c.name.as_str(), "name" | "target" | "depth"))
    }
}

#[async_trait]
impl TableProvider for ThreadSpansTable {
    fn schema(&self) -> SchemaRef {
        thread_spans_schema(self.flavor)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if Self::on_stream_id(f) || Self::on_row_columns(f) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let width = self.schema().fields().len();
        let projection: Vec<usize> = match projection {
            None => (0..width).collect(),
            Some(p) => p.clone(),
        };
        if let Some(&bad) = projection.iter().find(|&&i| i >= width) {
            return plan_err!("thread_spans has no column {bad}");
        }
        let (process_id, only) = match self.of {
            ThreadSpansOf::Process(pid) => (pid, None),
            ThreadSpansOf::Stream(sid) => match self.lake.stream_process(sid).await? {
                Some(pid) => (pid, Some(vec![sid])),
                None => {
                    return plan_err!("thread_spans: stream {sid} is not in the lake");
                }
            },
        };
        let now = state.execution_props().query_execution_start_time;
        // The filters taken (on `stream_id`, or on `name`, `target` and `depth` alone), read
        // as the events scan reads them: streams, names, targets and depth ranges (what it
        // cannot translate stays with DataFusion alone).
        let pushed: Vec<Expr> = filters
            .iter()
            .filter(|f| Self::on_stream_id(f) || Self::on_row_columns(f))
            .map(|f| unnormalize_col(f.clone()))
            .collect();
        let (predicate, _) = ScanPredicate::from_filters(&pushed, now);
        let rows = RowFilter {
            depth: predicate.row.depth,
            names: predicate.row.names.clone(),
            targets: predicate.row.targets.clone(),
            ..RowFilter::all()
        };
        let only = match (only, predicate.streams) {
            (Some(one), Some(allowed)) => {
                Some(one.into_iter().filter(|s| allowed.contains(s)).collect())
            }
            (Some(one), None) => Some(one),
            (None, Some(allowed)) => Some(allowed.into_iter().collect()),
            (None, None) => None,
        };
        if predicate.impossible
            || rows.matches_nothing()
            || only.as_ref().is_some_and(Vec::is_empty)
        {
            let schema = Arc::new(self.schema().project(&projection)?);
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        let process = self.lake.process(process_id).await?;
        let clock = process_clock(&self.lake, &process).await?;
        let streams = self.lake.cpu_streams(process_id, only.as_deref()).await?;
        let mut with_layouts = Vec::new();
        for stream in streams {
            let layout = self.caches.layouts.layout(process_id, &stream)?;
            if layout.has_thread_events() {
                with_layouts.push((stream, layout));
            }
        }
        let ids: Vec<Uuid> = with_layouts.iter().map(|(s, _)| s.stream_id).collect();
        let range = self.bounds.intersect(self.options.query_range);
        // Listed from the range's start to the stream's end: the blocks after the range say
        // whether a scope open at its end ever ended.
        let from_begin = tick_window(&clock, TimeBounds::new(range.begin, None));
        let blocks = self.lake.blocks(process_id, &ids, from_begin).await?;
        let BlockWindow::Ticks { end: last_tick, .. } = tick_window(&clock, range) else {
            return internal_err!("thread_spans: a tick window without tick bounds");
        };
        let plans: Vec<StreamPlan> = with_layouts
            .into_iter()
            .filter_map(|(stream, layout)| {
                let mut mine: Vec<_> = blocks
                    .iter()
                    .filter(|b| b.stream_id == stream.stream_id)
                    .cloned()
                    .collect();
                mine.sort_by_key(|b| (b.begin_ticks, b.object_offset));
                let listed = mine.len();
                if let Some(last) = last_tick {
                    mine.retain(|b| b.begin_ticks <= last);
                }
                let reaches_stream_end = mine.len() == listed;
                (!mine.is_empty()).then_some(StreamPlan {
                    stream,
                    layout,
                    blocks: mine,
                    reaches_stream_end,
                })
            })
            .collect();
        Ok(Arc::new(
            ThreadSpansExec::new(
                self.lake.clone(),
                process_id,
                clock,
                plans,
                state.config().target_partitions(),
                self.flavor,
                projection,
                // micromegas's views return the whole blocks read; `thread_spans(pid, begin, end)`
                // the spans overlapping its range, as `async_spans` does.
                match self.flavor {
                    Flavor::Process => range,
                    Flavor::View | Flavor::ProcessSpans | Flavor::ProcessSpansBesideAsync => {
                        TimeBounds::ALL
                    }
                },
                &self.options,
            )
            .with_row_filter(rows),
        ))
    }
}
