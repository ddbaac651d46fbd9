//! [`PartitionMetrics`]: the scan's counters for one partition, under the names EXPLAIN ANALYZE
//! shows.

use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricType, Time,
};

/// The scan's metrics for one partition, under the names EXPLAIN ANALYZE shows.
#[derive(Debug, Clone)]
pub(crate) struct PartitionMetrics {
    pub blocks_listed: Count,
    pub blocks_pruned: Count,
    pub blocks_fetched: Count,
    pub blocks_shared: Count,
    pub blocks_missing: Count,
    pub blocks_corrupt: Count,
    pub bytes_fetched: Count,
    /// Fetches put off because the query's memory pool could not hold them yet.
    pub fetches_deferred: Count,
    pub events_decoded: Count,
    pub rows_out: Count,
    pub fetch_time: Time,
    pub decode_time: Time,
}

impl PartitionMetrics {
    pub fn new(set: &ExecutionPlanMetricsSet, partition: usize) -> Self {
        let counter = |name: &'static str| {
            MetricBuilder::new(set)
                .with_type(MetricType::Summary)
                .counter(name, partition)
        };
        let time = |name: &'static str| {
            MetricBuilder::new(set)
                .with_type(MetricType::Summary)
                .subset_time(name, partition)
        };
        Self {
            blocks_listed: counter("blocks_listed"),
            blocks_pruned: counter("blocks_pruned"),
            blocks_fetched: counter("blocks_fetched"),
            blocks_shared: counter("blocks_shared"),
            blocks_missing: counter("blocks_missing"),
            blocks_corrupt: counter("blocks_corrupt"),
            bytes_fetched: counter("bytes_fetched"),
            fetches_deferred: counter("fetches_deferred"),
            events_decoded: counter("events_decoded"),
            rows_out: counter("rows_out"),
            fetch_time: time("fetch_time"),
            decode_time: time("decode_time"),
        }
    }
}
