//! [`PerfettoTraceTable`], the table of `perfetto_trace_chunks`, and [`PerfettoTraceExec`], the
//! plan node that writes the trace of its input spans as chunks.

use super::writer::{CHUNK_SIZE, TraceWriter};
use crate::lake::Lake;
use crate::spans::{AsyncSpansTable, async_spans_schema};
use crate::thread_spans::{Flavor, SpanTypes, ThreadSpansTable, thread_spans_schema};
use crate::time_bounds::TimeBounds;
use crate::timeline::{
    SPAN_COLUMNS, SpanKind, THREAD_SPAN_COLUMNS, Thread, spans_of_batch, thread_spans_of_batch,
};
use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, BinaryArray, Int32Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, internal_err};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_expr::{Distribution, EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, LazyLock};
use uuid::Uuid;

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("chunk_id", DataType::Int32, false),
        Field::new("chunk_data", DataType::Binary, false),
    ]))
});

/// The schema of `perfetto_trace_chunks`: `chunk_id` Int32, `chunk_data` Binary.
pub fn chunks_schema() -> SchemaRef {
    SCHEMA.clone()
}

/// The table of `perfetto_trace_chunks`.
#[derive(Debug)]
pub struct PerfettoTraceTable {
    spans: Option<AsyncSpansTable>,
    threads: Option<ThreadSpansTable>,
    lake: Lake,
    process_id: Uuid,
    bounds: TimeBounds,
}

impl PerfettoTraceTable {
    /// The trace of the spans of `spans` (a process's, within `bounds`).
    pub fn new(spans: AsyncSpansTable, lake: Lake, process_id: Uuid, bounds: TimeBounds) -> Self {
        Self {
            spans: Some(spans),
            threads: None,
            lake,
            process_id,
            bounds,
        }
    }

    /// The trace of the span types asked for: the thread spans of `threads` (a
    /// [`Flavor::Process`] table), the async spans of `spans`, or both.
    pub fn with_types(
        types: SpanTypes,
        spans: AsyncSpansTable,
        threads: ThreadSpansTable,
        lake: Lake,
        process_id: Uuid,
        bounds: TimeBounds,
    ) -> Self {
        Self {
            spans: types.async_().then_some(spans),
            threads: types.thread().then_some(threads),
            lake,
            process_id,
            bounds,
        }
    }
}

/// A synthetic process id for Perfetto (micromegas identifies processes by UUID).
fn synthetic_pid(process_id: Uuid) -> i32 {
    let b = process_id.as_bytes();
    let n = i32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]);
    n.max(1)
}

/// The threads of a process, from its thread streams (as `thread_streams` names them).
async fn lake_threads(lake: &Lake, process_id: Uuid) -> Result<Vec<Thread>> {
    let streams = lake.cpu_streams(process_id, None).await?;
    Ok(streams
        .iter()
        .map(|s| Thread {
            stream_id: s.stream_id.to_string(),
            name: s
                .property("thread-name")
                .map_or_else(|| s.stream_id.to_string(), str::to_owned),
            thread_id: s.property("thread-id").map(str::to_owned),
        })
        .collect())
}

#[async_trait]
impl TableProvider for PerfettoTraceTable {
    fn schema(&self) -> SchemaRef {
        SCHEMA.clone()
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
        let process = self.lake.process(self.process_id).await?;
        let threads = lake_threads(&self.lake, self.process_id).await?;
        let indices = |schema: SchemaRef, names: &[&str]| {
            names
                .iter()
                .map(|c| schema.index_of(c))
                .collect::<std::result::Result<Vec<_>, _>>()
        };
        let mut inputs = Vec::new();
        if let Some(threads) = &self.threads {
            let columns = indices(thread_spans_schema(Flavor::Process), &THREAD_SPAN_COLUMNS)?;
            let plan = threads.scan(state, Some(&columns), &[], None).await?;
            inputs.push((SpanKind::Thread, plan));
        }
        if let Some(spans) = &self.spans {
            let columns = indices(async_spans_schema(), &SPAN_COLUMNS)?;
            let plan = spans.scan(state, Some(&columns), &[], None).await?;
            inputs.push((SpanKind::Async, plan));
        }
        let exe = process.exe.rsplit(['/', '\\']).next().unwrap_or_default();
        let name = if exe.is_empty() {
            self.process_id.to_string()
        } else {
            format!("{exe} {}", self.process_id)
        };
        Ok(Arc::new(PerfettoTraceExec::new(
            inputs,
            name,
            synthetic_pid(self.process_id),
            threads,
            self.bounds,
            projection.cloned(),
        )))
    }
}

/// Writes the trace of its inputs (`thread_spans` then `async_spans` rows) as chunks.
#[derive(Debug)]
pub struct PerfettoTraceExec {
    inputs: Vec<(SpanKind, Arc<dyn ExecutionPlan>)>,
    process_name: String,
    pid: i32,
    threads: Vec<Thread>,
    range: TimeBounds,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl PerfettoTraceExec {
    fn new(
        inputs: Vec<(SpanKind, Arc<dyn ExecutionPlan>)>,
        process_name: String,
        pid: i32,
        threads: Vec<Thread>,
        range: TimeBounds,
        projection: Option<Vec<usize>>,
    ) -> Self {
        let schema = match &projection {
            Some(p) => Arc::new(
                SCHEMA
                    .project(p)
                    .unwrap_or_else(|_| SCHEMA.as_ref().clone()),
            ),
            None => SCHEMA.clone(),
        };
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            inputs,
            process_name,
            pid,
            threads,
            range,
            projection,
            schema,
            properties,
        }
    }
}

impl DisplayAs for PerfettoTraceExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "PerfettoTraceExec: process={}, threads={}",
            self.process_name,
            self.threads.len()
        )
    }
}

impl ExecutionPlan for PerfettoTraceExec {
    fn name(&self) -> &str {
        "PerfettoTraceExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        // Thread spans: every partition is read here, one after the other (each holds whole
        // threads), so that the trace's bytes do not depend on which partition finishes first.
        self.inputs
            .iter()
            .map(|(kind, _)| match kind {
                SpanKind::Thread => Distribution::UnspecifiedDistribution,
                SpanKind::Async => Distribution::SinglePartition,
            })
            .collect()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.inputs.iter().map(|(_, plan)| plan).collect()
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != self.inputs.len() {
            return internal_err!(
                "PerfettoTraceExec takes {} children, got {}",
                self.inputs.len(),
                children.len()
            );
        }
        let inputs = self
            .inputs
            .iter()
            .map(|(kind, _)| *kind)
            .zip(children)
            .collect();
        Ok(Arc::new(Self::new(
            inputs,
            self.process_name.clone(),
            self.pid,
            self.threads.clone(),
            self.range,
            self.projection.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("PerfettoTraceExec has one partition, asked for {partition}");
        }
        let mut inputs = VecDeque::new();
        for (kind, plan) in &self.inputs {
            for partition in 0..plan.output_partitioning().partition_count() {
                inputs.push_back((*kind, plan.execute(partition, context.clone())?));
            }
        }
        let writer = TraceWriter::new(
            &self.process_name,
            self.pid,
            self.threads.clone(),
            self.range,
            CHUNK_SIZE,
        );
        let state = ChunkState {
            inputs,
            writer: Some(writer),
            next_id: 0,
            projection: self.projection.clone(),
            schema: self.schema.clone(),
        };
        let stream = futures::stream::unfold(state, |mut state| async move {
            let batch = state.next().await.transpose()?;
            if batch.is_err() {
                state.writer = None; // an error ends the trace
            }
            Some((batch, state))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}

/// The stream state of [`PerfettoTraceExec`]: input spans in, chunks out.
struct ChunkState {
    /// The inputs not yet exhausted, read one after the other.
    inputs: VecDeque<(SpanKind, SendableRecordBatchStream)>,
    writer: Option<TraceWriter>,
    next_id: i32,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
}

impl ChunkState {
    fn batch(&mut self, chunk: Vec<u8>) -> Result<RecordBatch> {
        let id = self.next_id;
        self.next_id = self.next_id.saturating_add(1);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(vec![id])),
            Arc::new(BinaryArray::from(vec![chunk.as_slice()])),
        ];
        let columns = match &self.projection {
            Some(p) => p.iter().filter_map(|&i| columns.get(i).cloned()).collect(),
            None => columns,
        };
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(1)),
        )?)
    }

    /// The next chunk, `None` at the end.
    async fn next(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            let Some(writer) = self.writer.as_mut() else {
                return Ok(None);
            };
            if let Some(chunk) = writer.take_chunk() {
                return self.batch(chunk).map(Some);
            }
            match self.inputs.front_mut() {
                Some((kind, input)) => match input.next().await {
                    Some(batch) => {
                        let batch = batch?;
                        writer.push_spans(&match kind {
                            SpanKind::Thread => thread_spans_of_batch(&batch)?,
                            SpanKind::Async => spans_of_batch(&batch)?,
                        })
                    }
                    None => {
                        self.inputs.pop_front();
                    }
                },
                None => {
                    let rest = self.writer.take().map(TraceWriter::finish);
                    return match rest {
                        Some(rest) if !rest.is_empty() => self.batch(rest).map(Some),
                        _ => Ok(None),
                    };
                }
            }
        }
    }
}
