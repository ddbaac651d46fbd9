//! [`AsyncSpansTable`]: the `TableProvider` of one process's async spans.
//!
//! Its scan is an `async_events` scan (with every filter that selects whole spans pushed into
//! it, and the time range widened by the span margin) read, one partition per thread stream, by
//! an [`AsyncSpansExec`].

use super::exec::AsyncSpansExec;
use super::range::{EventsRead, PairingRange};
use super::{SpanColumn, async_spans_schema};
use crate::format::Column;
use crate::lake::Lake;
use crate::provider::{AsyncEventsTable, ScanCaches, ScanOptions, ScanPredicate};
use crate::time_bounds::TimeBounds;
use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, plan_err};
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType, col};
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use std::collections::BTreeSet;
use std::sync::Arc;
use uuid::Uuid;

/// The async spans of one process, as a table (`async_spans(pid [, begin, end])`).
#[derive(Debug, Clone)]
pub struct AsyncSpansTable {
    lake: Lake,
    process_id: Uuid,
    /// The range whose overlapping spans are returned (inclusive).
    bounds: TimeBounds,
    options: ScanOptions,
    caches: Arc<ScanCaches>,
}

/// How a filter on `async_spans` reaches the events scan.
enum SpanFilter {
    /// On columns equal on both events of a span: applied to the events, exactly.
    Events,
    /// On `begin` or `end`: narrows the events read (inclusive ns bounds); DataFusion applies
    /// the filter itself.
    Time {
        on_begin: bool,
        bounds: TimeBounds,
    },
    Unsupported,
}

impl AsyncSpansTable {
    /// The spans of `process_id` overlapping `bounds` (inclusive).
    pub fn new(lake: Lake, process_id: Uuid, bounds: TimeBounds, options: ScanOptions) -> Self {
        Self::with_caches(lake, process_id, bounds, options, Arc::default())
    }

    /// [`new`](Self::new), sharing compiled layouts and per-query blocks with other tables.
    pub fn with_caches(
        lake: Lake,
        process_id: Uuid,
        bounds: TimeBounds,
        options: ScanOptions,
        caches: Arc<ScanCaches>,
    ) -> Self {
        Self {
            lake,
            process_id,
            bounds,
            options,
            caches,
        }
    }

    /// The process whose spans the table holds.
    pub fn process_id(&self) -> Uuid {
        self.process_id
    }

    /// The lake the table reads.
    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    /// The range whose overlapping spans the table holds (inclusive).
    pub fn bounds(&self) -> TimeBounds {
        self.bounds
    }

    /// How the table's scans read blocks.
    pub fn options(&self) -> &ScanOptions {
        &self.options
    }

    fn classify(filter: &Expr, now: Option<chrono::DateTime<chrono::Utc>>) -> SpanFilter {
        let columns: BTreeSet<Option<SpanColumn>> = filter
            .column_refs()
            .iter()
            .map(|c| SpanColumn::from_name(&c.name))
            .collect();
        if columns.is_empty() || columns.contains(&None) {
            return SpanFilter::Unsupported;
        }
        let columns: Vec<SpanColumn> = columns.into_iter().flatten().collect();
        if columns.iter().all(|c| c.same_on_both_events()) {
            return match ScanPredicate::support(filter) {
                TableProviderFilterPushDown::Exact => SpanFilter::Events,
                _ => SpanFilter::Unsupported,
            };
        }
        let on_begin = match columns.as_slice() {
            [SpanColumn::Begin] => true,
            [SpanColumn::End] => false,
            _ => return SpanFilter::Unsupported,
        };
        // The same comparison on `time` gives the bounds.
        let as_time = unnormalize_col(filter.clone())
            .transform(|e| {
                Ok(match e {
                    Expr::Column(c) if c.name == "begin" || c.name == "end" => {
                        Transformed::yes(col(Column::Time.name()))
                    }
                    other => Transformed::no(other),
                })
            })
            .map(|t| t.data);
        let Ok(as_time) = as_time else {
            return SpanFilter::Unsupported;
        };
        if ScanPredicate::support(&as_time) != TableProviderFilterPushDown::Exact {
            return SpanFilter::Unsupported;
        }
        let (predicate, residual) = ScanPredicate::from_filters(&[as_time], now);
        if !residual.is_empty() || predicate.time.is_all() {
            return SpanFilter::Unsupported;
        }
        SpanFilter::Time {
            on_begin,
            bounds: predicate.time,
        }
    }
}

#[async_trait]
impl TableProvider for AsyncSpansTable {
    fn schema(&self) -> SchemaRef {
        async_spans_schema()
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
            .map(|f| match Self::classify(f, None) {
                SpanFilter::Events => TableProviderFilterPushDown::Exact,
                SpanFilter::Time { .. } => TableProviderFilterPushDown::Inexact,
                SpanFilter::Unsupported => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let columns: Vec<SpanColumn> = match projection {
            None => SpanColumn::ALL.to_vec(),
            Some(indices) => indices
                .iter()
                .map(|&i| match SpanColumn::ALL.get(i) {
                    Some(c) => Ok(*c),
                    None => plan_err!("async_spans has no column {i}"),
                })
                .collect::<Result<_>>()?,
        };
        // The events read: what the output needs, plus what pairing needs.
        let mut needed: BTreeSet<Column> = [Column::Time, Column::EventType, Column::SpanId].into();
        needed.extend(columns.iter().filter_map(|c| c.event_column()));
        let event_projection: Vec<usize> = needed.iter().map(|&c| c as usize).collect();

        let now = state.execution_props().query_execution_start_time;
        let margin = self.options.span_margin.as_nanos().min(i64::MAX as u128) as i64;
        // The spans asked for overlap the table's range and the query range (a Flight SQL
        // request's headers); the events are read around it, so the query range must not cut
        // them: it becomes the spans' range instead.
        let overlap = self.bounds.intersect(self.options.query_range);
        let mut read = EventsRead::around(overlap, margin);
        let mut event_filters = Vec::new();
        for filter in filters {
            match Self::classify(filter, now) {
                SpanFilter::Events => event_filters.push(unnormalize_col(filter.clone())),
                SpanFilter::Time {
                    on_begin: true,
                    bounds,
                } => read.begin_within(bounds),
                SpanFilter::Time {
                    on_begin: false,
                    bounds,
                } => read.end_within(bounds),
                // DataFusion applies it above.
                SpanFilter::Unsupported => {}
            }
        }
        let events_read = read.bounds();
        let events = AsyncEventsTable::with_caches(
            self.lake.clone(),
            self.process_id,
            events_read,
            ScanOptions {
                query_range: TimeBounds::ALL,
                ..self.options.clone()
            },
            self.caches.clone(),
        );
        let scan = events
            .scan(state, Some(&event_projection), &event_filters, None)
            .await?;
        // The pairing operator reads every partition of the scan and merges their batches by
        // `time`, keeping each partition's order (with `declare_time_order = false` there is none
        // to keep: pairing then holds ends that arrive before their begins for longer).
        let order = scan.output_ordering().cloned();
        let reads_to_end = match events_read.end {
            None => true,
            Some(hi) => match self.lake.latest_timing(self.process_id).await? {
                Some(latest) => hi >= latest.end_time_ns,
                None => true,
            },
        };
        let range = PairingRange {
            overlap,
            reads_to_end,
        };
        Ok(Arc::new(AsyncSpansExec::new(
            scan, order, range, columns, limit,
        )))
    }
}
