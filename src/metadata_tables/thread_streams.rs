//! [`ThreadStreamsTable`]: the thread streams of a process, to name the threads behind the
//! `stream_id` of async events (`thread_streams('<process id>')`).

use crate::lake::{Lake, TimeRange};
use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, TimestampNanosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use uuid::Uuid;

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let time = DataType::Timestamp(TimeUnit::Nanosecond, Some("+00:00".into()));
    Arc::new(Schema::new(vec![
        Field::new("stream_id", DataType::Utf8, false),
        Field::new("thread_name", DataType::Utf8, true),
        Field::new("thread_id", DataType::Utf8, true),
        Field::new("blocks", DataType::Int64, false),
        Field::new("events", DataType::Int64, false),
        Field::new("begin", time.clone(), true),
        Field::new("end", time, true),
    ]))
});

/// One row per `cpu` stream of a process: its thread's name and id, its blocks and events
/// (of all kinds), and the time its blocks cover.
#[derive(Debug, Clone)]
pub struct ThreadStreamsTable {
    lake: Lake,
    process_id: Uuid,
}

impl ThreadStreamsTable {
    /// The thread streams of `process_id`.
    pub fn new(lake: Lake, process_id: Uuid) -> Self {
        Self { lake, process_id }
    }
}

#[async_trait]
impl TableProvider for ThreadStreamsTable {
    fn schema(&self) -> SchemaRef {
        SCHEMA.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.lake.process(self.process_id).await?;
        let streams = self.lake.cpu_streams(self.process_id, None).await?;
        let ids: Vec<Uuid> = streams.iter().map(|s| s.stream_id).collect();
        let blocks = self
            .lake
            .blocks(self.process_id, &ids, TimeRange::all())
            .await?;
        let mut per_stream: HashMap<Uuid, (i64, i64, Option<i64>, Option<i64>)> = HashMap::new();
        for b in &blocks {
            let e = per_stream.entry(b.stream_id).or_insert((0, 0, None, None));
            e.0 += 1;
            e.1 += i64::from(b.nb_objects);
            let (begin, end) = (
                b.begin_time.timestamp_nanos_opt(),
                b.end_time.timestamp_nanos_opt(),
            );
            e.2 = match (e.2, begin) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            e.3 = match (e.3, end) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        let stat = |s: &Uuid| per_stream.get(s).copied().unwrap_or((0, 0, None, None));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                streams.iter().map(|s| s.stream_id.to_string()),
            )),
            Arc::new(StringArray::from_iter(
                streams.iter().map(|s| s.property("thread-name")),
            )),
            Arc::new(StringArray::from_iter(
                streams.iter().map(|s| s.property("thread-id")),
            )),
            Arc::new(Int64Array::from_iter_values(
                streams.iter().map(|s| stat(&s.stream_id).0),
            )),
            Arc::new(Int64Array::from_iter_values(
                streams.iter().map(|s| stat(&s.stream_id).1),
            )),
            Arc::new(
                TimestampNanosecondArray::from_iter(streams.iter().map(|s| stat(&s.stream_id).2))
                    .with_timezone("+00:00"),
            ),
            Arc::new(
                TimestampNanosecondArray::from_iter(streams.iter().map(|s| stat(&s.stream_id).3))
                    .with_timezone("+00:00"),
            ),
        ];
        let batch = RecordBatch::try_new(SCHEMA.clone(), columns)?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            SCHEMA.clone(),
            projection.cloned(),
        )?)
    }
}
