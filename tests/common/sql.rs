//! SQL helpers: sessions with the functions registered, a reference table with the same rows
//! (decoded by the format layer, no pushdown), and the scan metrics of an executed query.

use super::lakes::{Backend, stored_time};
use super::producer::Recording;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::datasource::MemTable;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_async_events::Lake;
use datafusion_async_events::format::{ColumnSet, RowFilter, async_events_schema};
use datafusion_async_events::provider::AsyncEventsExec;
use std::collections::HashMap;
use std::sync::Arc;

pub fn context(lake: &Lake) -> SessionContext {
    context_with(lake, SessionConfig::new())
}

pub fn context_with(lake: &Lake, config: SessionConfig) -> SessionContext {
    let ctx = SessionContext::new_with_config(config);
    datafusion_async_events::register(&ctx, lake.clone());
    ctx
}

/// A session whose table `ref` holds every row of the recording, decoded by the format layer:
/// the same data with no pushdown at all. Times are those of a lake of `backend` (PostgreSQL
/// keeps microseconds, which moves the clock a little).
pub fn reference(backend: Backend, rec: &Recording) -> SessionContext {
    let ctx = SessionContext::new();
    // The same logical rewrites as the scan's sessions: the comparisons are of the scan.
    datafusion_async_events::install_predicate_fixes(&ctx);
    let mut rec = rec.clone();
    rec.process.start_time = stored_time(backend, rec.process.start_time);
    for b in &mut rec.blocks {
        b.begin_time = stored_time(backend, b.begin_time);
        b.end_time = stored_time(backend, b.end_time);
    }
    let batches = rec.decode(ColumnSet::all(), &RowFilter::all());
    let table = MemTable::try_new(async_events_schema(), vec![batches]).unwrap();
    ctx.register_table("ref", Arc::new(table)).unwrap();
    ctx
}

pub async fn query(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
    ctx.sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

pub async fn query_err(ctx: &SessionContext, sql: &str) -> String {
    match ctx.sql(sql).await {
        Err(e) => e.to_string(),
        Ok(df) => match df.collect().await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{sql} succeeded"),
        },
    }
}

/// Rows as text, one string per row (cells joined by `|`).
pub fn lines(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        for row in 0..b.num_rows() {
            let cells: Vec<String> = b
                .columns()
                .iter()
                .map(|c| array_value_to_string(c, row).unwrap())
                .collect();
            out.push(cells.join("|"));
        }
    }
    out
}

pub fn sorted_lines(batches: &[RecordBatch]) -> Vec<String> {
    let mut v = lines(batches);
    v.sort();
    v
}

/// The metrics of every AsyncEventsExec of an executed plan, summed by name.
#[derive(Debug, Default, Clone)]
pub struct ScanMetrics {
    pub values: HashMap<String, usize>,
    pub scans: usize,
}

impl ScanMetrics {
    pub fn get(&self, name: &str) -> usize {
        self.values.get(name).copied().unwrap_or(0)
    }
}

fn gather(plan: &Arc<dyn ExecutionPlan>, out: &mut ScanMetrics) {
    if plan.downcast_ref::<AsyncEventsExec>().is_some() {
        out.scans += 1;
        if let Some(m) = plan.metrics() {
            for metric in m.iter() {
                *out.values
                    .entry(metric.value().name().to_string())
                    .or_default() += metric.value().as_usize();
            }
        }
    }
    for child in plan.children() {
        gather(child, out);
    }
}

/// Runs a query and returns its rows and the scan metrics.
pub async fn run_measured(ctx: &SessionContext, sql: &str) -> (Vec<RecordBatch>, ScanMetrics) {
    let df = ctx.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let plan = df.create_physical_plan().await.unwrap();
    let batches = collect(plan.clone(), ctx.task_ctx())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut metrics = ScanMetrics::default();
    gather(&plan, &mut metrics);
    (batches, metrics)
}

/// The physical plan of a query.
pub async fn physical_plan(ctx: &SessionContext, sql: &str) -> Arc<dyn ExecutionPlan> {
    let df = ctx.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    df.create_physical_plan()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The physical plan as EXPLAIN prints it, with ids and times replaced for snapshots.
pub async fn plan_text(ctx: &SessionContext, sql: &str) -> String {
    let plan = physical_plan(ctx, sql).await;
    let text = datafusion::physical_plan::displayable(plan.as_ref())
        .indent(true)
        .to_string();
    redact(&text)
}

pub fn redact(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        // Ids and times are ASCII (byte offsets below are char offsets).
        let rest: String = chars[i..chars.len().min(i + 40)]
            .iter()
            .take_while(|c| c.is_ascii())
            .collect();
        if rest.len() >= 36
            && uuid::Uuid::parse_str(&rest[..36]).is_ok()
            && rest.as_bytes()[8] == b'-'
        {
            out.push_str("[uuid]");
            i += 36;
            continue;
        }
        // RFC 3339 times as the plan prints them: 2026-11-27T08:31:49.724606519Z
        if chars[i].is_ascii_digit()
            && rest.len() >= 20
            && rest.as_bytes()[4] == b'-'
            && rest.as_bytes()[10] == b'T'
            && let Some(end) = rest.find('Z')
            && chrono::DateTime::parse_from_rfc3339(&rest[..=end]).is_ok()
        {
            out.push_str("[time]");
            i += end + 1;
            continue;
        }
        if chars[i].is_ascii_digit() && (i == 0 || !chars[i - 1].is_ascii_alphanumeric()) {
            let n = chars[i..].iter().take_while(|c| c.is_ascii_digit()).count();
            if n >= 16 {
                out.push_str("[ns]");
                i += n;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}
