//! [`MetadataScanExec`]: a metadata listing read as a stream of record batches.
//!
//! The listing's rows come as the database sends them and are gathered into batches of the
//! session's `batch_size` rows at most ([`ListingBatcher`]); a task reads ahead by a couple of
//! batches. Only the projected columns are built.

use super::batcher::{BATCH_TEXT_BYTES, BatchShape, ListingBatcher};
use super::columns::MetadataRow;
use super::schema::Kind;
use crate::lake::{BlockJoins, Lake, Listing, MetadataFilter, TimeColumn};
use chrono::SecondsFormat;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, internal_err};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;
use std::fmt;
use std::sync::Arc;
use tokio::sync::mpsc::Sender;

/// Batches a scan builds ahead of its reader: enough for the database to keep sending while the
/// reader works on a batch; few, since batches waiting here are no longer reserved.
const READ_AHEAD_BATCHES: usize = 2;

/// The scan of a metadata table: one partition, the listing's rows in the database's order.
#[derive(Debug)]
pub(super) struct MetadataScanExec {
    lake: Lake,
    kind: Kind,
    filter: MetadataFilter,
    joins: BlockJoins,
    /// The projected schema.
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl MetadataScanExec {
    /// The scan of `kind`'s rows meeting `filter`, with the columns of `schema` (a projection
    /// of the table's schema); `joins` says which rows a block listing joins.
    pub(super) fn new(
        lake: Lake,
        kind: Kind,
        filter: MetadataFilter,
        joins: BlockJoins,
        schema: SchemaRef,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            lake,
            kind,
            filter,
            joins,
            schema,
            properties,
        }
    }
}

impl DisplayAs for MetadataScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "MetadataScanExec: table={}", self.kind.name())?;
        let filter = &self.filter;
        for (name, ids) in [
            ("process_id", &filter.process_ids),
            ("stream_id", &filter.stream_ids),
            ("block_id", &filter.block_ids),
        ] {
            if let Some(ids) = ids {
                write!(f, ", {name} in {} ids", ids.len())?;
            }
        }
        for t in &filter.times {
            let column = match t.column {
                TimeColumn::ProcessStart => "start_time",
                TimeColumn::BlockBegin => "begin_time",
                TimeColumn::BlockEnd => "end_time",
            };
            let value = t.value.to_rfc3339_opts(SecondsFormat::AutoSi, true);
            write!(f, ", {column} {} {value}", t.op.sql())?;
        }
        if let Some(limit) = filter.limit {
            write!(f, ", limit={limit}")?;
        }
        if self.joins.streams {
            write!(f, ", join=streams")?;
        }
        if self.joins.processes {
            write!(f, ", join=processes")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for MetadataScanExec {
    fn name(&self) -> &str {
        "MetadataScanExec"
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

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return internal_err!("MetadataScanExec has no children");
        }
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("MetadataScanExec has one partition, asked for {partition}");
        }
        let table = self.kind.name();
        let reservation = MemoryConsumer::new(format!("MetadataScanExec[{table}]"))
            .register(context.memory_pool());
        let mut builder =
            RecordBatchReceiverStream::builder(self.schema.clone(), READ_AHEAD_BATCHES);
        let tx = builder.tx();
        let (lake, kind, filter, joins) = (
            self.lake.clone(),
            self.kind,
            self.filter.clone(),
            self.joins,
        );
        let shape = BatchShape {
            schema: self.schema.clone(),
            table,
            batch_size: context.session_config().batch_size(),
            text_bytes: BATCH_TEXT_BYTES,
        };
        builder.spawn(async move {
            match kind {
                Kind::Processes => {
                    let rows = lake.list_processes(&filter);
                    send_batches(rows, ListingBatcher::new(shape, reservation), &tx).await
                }
                Kind::Streams => {
                    let rows = lake.list_streams(&filter);
                    send_batches(rows, ListingBatcher::new(shape, reservation), &tx).await
                }
                Kind::Blocks => {
                    let rows = lake.list_blocks(&filter, joins);
                    send_batches(rows, ListingBatcher::new(shape, reservation), &tx).await
                }
            }
        });
        Ok(builder.build())
    }
}

/// Sends the batches of a listing until it ends or the reader goes away.
async fn send_batches<R: MetadataRow>(
    mut rows: Listing<'_, R>,
    mut batcher: ListingBatcher<R>,
    tx: &Sender<Result<RecordBatch>>,
) -> Result<()> {
    while let Some(row) = rows.next().await {
        if let Some(batch) = batcher.push(row?)?
            && tx.send(Ok(batch)).await.is_err()
        {
            return Ok(());
        }
    }
    if let Some(batch) = batcher.finish()? {
        // The reader may have gone away: nothing left to do either way.
        let _ = tx.send(Ok(batch)).await;
    }
    Ok(())
}
