//! Ballista 55 (feature `ballista`): codecs that carry this crate's scans and tables through
//! Ballista's plans, and a standalone session (scheduler and executor in this process).
//!
//! How a query runs under Ballista:
//! - the client plans it logically: the table functions make their tables there;
//! - the **logical** plan goes to the scheduler, its tables encoded by [`LogicalCodec`]; the
//!   scheduler decodes them (finding the lake by URL in the [`LakeRegistry`]) and plans the
//!   query physically: the tables' `scan()` reads the lake's metadata there;
//! - each physical stage goes to an executor, its scans encoded by [`PhysicalCodec`]; the
//!   executor decodes them and reads the blocks from the lake it finds by URL.
//!
//! A codec set on a Ballista session replaces Ballista's own, so both codecs here *wrap*
//! Ballista's default codecs: this crate's nodes and tables are encoded by
//! [`AsyncEventsCodec`] behind a short prefix ([`PREFIX`]), everything else (shuffle readers and
//! writers, file formats, functions) is left to Ballista's codec. The prefix starts with a zero
//! byte, which no non-empty protobuf message starts with, so bytes of the two codecs cannot be
//! mistaken for each other; bytes with the prefix that do not decode are an error.
//!
//! Ballista 55 runs a stage as tasks that each take a slice of its partitions, and restricts the
//! stage's leaves to the slice only for the leaves it knows (shuffle readers, file and memory
//! scans: `restrict_plan_to_partitions` in `ballista-scheduler`). Any other leaf is executed
//! whole by every task, which would repeat rows once per task. [`ScanInOneTask`] (installed by
//! [`standalone_context`]) avoids that: it puts each scan under a [`OneTaskExec`], a merge of
//! its partitions inside its stage, so the scan is read by one task (its partitions still read
//! concurrently) and the stages above it are spread over the task slots as usual. Ballista's
//! adaptive planner drops the session's physical optimizer rules, so it is turned off.
//!
//! What runs: `async_events(...)`, `async_spans(...)`, `thread_spans(...)`,
//! `process_spans(...)` and `view_instance(...)` of each, and the property and JSONB functions.
//! What does not: `thread_streams(pid)` and the metadata tables
//! ([`register_metadata_tables`](crate::register_metadata_tables)): their table providers have
//! no codec, so a plan reading them fails when the client encodes it.
//!
//! A cluster of separate processes takes the same codecs (Ballista's `SchedulerConfig` and
//! `ExecutorProcessConfig` have `override_logical_codec` / `override_physical_codec`), a
//! scheduler session with [`ScanInOneTask`] and the adaptive planner off, and each scheduler
//! and executor process must open the lake and add it to its [`LakeRegistry::global`] (what
//! [`register`](crate::register) does) before running plans. Only standalone mode is tested.

use crate::codec::AsyncEventsCodec;
use crate::lake::{Lake, LakeRegistry};
use crate::properties::property_functions;
use crate::provider::{AsyncEventsExec, AsyncEventsTable, ScanOptions};
use crate::spans::{AsyncSpansExec, AsyncSpansTable};
use crate::thread_spans::{ProcessSpansTable, ThreadSpansExec, ThreadSpansTable};
use ::ballista::prelude::{SessionConfigExt, SessionContextExt};
use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, TableReference, internal_datafusion_err, plan_err};
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::execution::{SessionStateBuilder, TaskContext};
use datafusion::logical_expr::{
    AggregateUDF, Extension, HigherOrderUDF, LogicalPlan, ScalarUDF, WindowUDF,
};
use datafusion::physical_expr_common::physical_expr::proto_decode::PhysicalExprDecodeCtx;
use datafusion::physical_expr_common::physical_expr::proto_encode::PhysicalExprEncodeCtx;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    PhysicalExpr, PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream,
};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use std::fmt;
use std::sync::Arc;

/// The bytes in front of everything [`AsyncEventsCodec`] encodes inside a Ballista plan. The
/// first byte is zero: a protobuf field tag is never zero, so Ballista's own (non-empty)
/// messages never start like this.
pub const PREFIX: &[u8] = b"\0async_events:1\0";

/// The whole encoding of a [`OneTaskExec`] (its input travels as the node's input).
const ONE_TASK: &[u8] = b"\0async_events:one_task:1\0";

/// Whether [`AsyncEventsCodec`] encodes this plan node.
fn is_our_node(node: &dyn ExecutionPlan) -> bool {
    node.is::<AsyncEventsExec>() || node.is::<AsyncSpansExec>() || node.is::<ThreadSpansExec>()
}

/// Whether [`AsyncEventsCodec`] encodes this table.
fn is_our_table(table: &dyn TableProvider) -> bool {
    table.downcast_ref::<AsyncEventsTable>().is_some()
        || table.downcast_ref::<AsyncSpansTable>().is_some()
        || table.downcast_ref::<ThreadSpansTable>().is_some()
        || table.downcast_ref::<ProcessSpansTable>().is_some()
}

/// This crate's property and JSONB functions by name (they carry no state), else `inner`'s.
fn decode_udf(
    name: &str,
    buf: &[u8],
    inner: impl FnOnce(&str, &[u8]) -> Result<Arc<ScalarUDF>>,
) -> Result<Arc<ScalarUDF>> {
    match property_functions().into_iter().find(|f| f.name() == name) {
        Some(f) => Ok(Arc::new(f)),
        None => inner(name, buf),
    }
}

/// What `encode` writes, behind [`PREFIX`].
fn prefixed(buf: &mut Vec<u8>, encode: impl FnOnce(&mut Vec<u8>) -> Result<()>) -> Result<()> {
    let mut bytes = PREFIX.to_vec();
    encode(&mut bytes)?;
    buf.extend_from_slice(&bytes);
    Ok(())
}

/// Ballista's logical codec with `async_events`, `async_spans`, `thread_spans` and
/// `process_spans` tables (behind [`PREFIX`]) and the property functions added; everything else
/// goes to the wrapped codec.
#[derive(Debug, Clone)]
pub struct LogicalCodec {
    inner: Arc<dyn LogicalExtensionCodec>,
}

impl Default for LogicalCodec {
    /// Wraps `BallistaLogicalExtensionCodec::default()`.
    fn default() -> Self {
        Self::wrapping(Arc::new(BallistaLogicalExtensionCodec::default()))
    }
}

impl LogicalCodec {
    /// Wraps another codec (one that itself wraps Ballista's, for instance).
    pub fn wrapping(inner: Arc<dyn LogicalExtensionCodec>) -> Self {
        Self { inner }
    }
}

impl LogicalExtensionCodec for LogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        self.inner.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        match buf.strip_prefix(PREFIX) {
            Some(ours) => AsyncEventsCodec.try_decode_table_provider(ours, table_ref, schema, ctx),
            None => self
                .inner
                .try_decode_table_provider(buf, table_ref, schema, ctx),
        }
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        if is_our_table(node.as_ref()) {
            return prefixed(buf, |b| {
                AsyncEventsCodec.try_encode_table_provider(table_ref, node, b)
            });
        }
        self.inner
            .try_encode_table_provider(table_ref, node, buf)
            .map_err(|e| {
                e.context(format!(
                    "table {table_ref} has no codec: of this crate's tables, only async_events, \
                     async_spans, thread_spans and process_spans tables can be sent to a \
                     Ballista scheduler"
                ))
            })
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn FileFormatFactory>> {
        self.inner.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> Result<()> {
        self.inner.try_encode_file_format(buf, node)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        decode_udf(name, buf, |name, buf| self.inner.try_decode_udf(name, buf))
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udf(node, buf)
    }

    fn try_decode_higher_order_function(
        &self,
        name: &str,
        buf: &[u8],
    ) -> Result<Arc<HigherOrderUDF>> {
        self.inner.try_decode_higher_order_function(name, buf)
    }

    fn try_encode_higher_order_function(
        &self,
        node: &HigherOrderUDF,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        self.inner.try_encode_higher_order_function(node, buf)
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        self.inner.try_decode_udaf(name, buf)
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udaf(node, buf)
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
        self.inner.try_decode_udwf(name, buf)
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udwf(node, buf)
    }
}

/// Ballista's physical codec with `async_events` scans, `async_spans` pairings and
/// `thread_spans` plans (behind [`PREFIX`]), [`OneTaskExec`] and the property functions added;
/// everything else goes to the wrapped codec.
#[derive(Debug, Clone)]
pub struct PhysicalCodec {
    inner: Arc<dyn PhysicalExtensionCodec>,
}

impl Default for PhysicalCodec {
    /// Wraps `BallistaPhysicalExtensionCodec::default()`.
    fn default() -> Self {
        Self::wrapping(Arc::new(BallistaPhysicalExtensionCodec::default()))
    }
}

impl PhysicalCodec {
    /// Wraps another codec (one that itself wraps Ballista's, for instance).
    pub fn wrapping(inner: Arc<dyn PhysicalExtensionCodec>) -> Self {
        Self { inner }
    }
}

impl PhysicalExtensionCodec for PhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if buf == ONE_TASK {
            return match inputs {
                [input] => Ok(Arc::new(OneTaskExec::new(input.clone()))),
                _ => plan_err!("OneTaskExec takes one input, got {}", inputs.len()),
            };
        }
        match buf.strip_prefix(PREFIX) {
            Some(ours) => PhysicalExtensionCodec::try_decode(
                &AsyncEventsCodec,
                ours,
                inputs,
                ctx,
                proto_converter,
            ),
            None => self.inner.try_decode(buf, inputs, ctx, proto_converter),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if node.is::<OneTaskExec>() {
            buf.extend_from_slice(ONE_TASK);
            return Ok(());
        }
        if is_our_node(node.as_ref()) {
            return prefixed(buf, |b| {
                PhysicalExtensionCodec::try_encode(&AsyncEventsCodec, node, b, proto_converter)
            });
        }
        self.inner.try_encode(node, buf, proto_converter)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        decode_udf(name, buf, |name, buf| self.inner.try_decode_udf(name, buf))
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udf(node, buf)
    }

    fn try_decode_higher_order_function(
        &self,
        name: &str,
        buf: &[u8],
    ) -> Result<Arc<HigherOrderUDF>> {
        self.inner.try_decode_higher_order_function(name, buf)
    }

    fn try_encode_higher_order_function(
        &self,
        node: &HigherOrderUDF,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        self.inner.try_encode_higher_order_function(node, buf)
    }

    fn try_decode_expr(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn PhysicalExpr>],
        ctx: &PhysicalExprDecodeCtx<'_>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        self.inner.try_decode_expr(buf, inputs, ctx)
    }

    fn try_encode_expr(
        &self,
        node: &Arc<dyn PhysicalExpr>,
        buf: &mut Vec<u8>,
        ctx: &PhysicalExprEncodeCtx<'_>,
    ) -> Result<()> {
        self.inner.try_encode_expr(node, buf, ctx)
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        self.inner.try_decode_udaf(name, buf)
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udaf(node, buf)
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
        self.inner.try_decode_udwf(name, buf)
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udwf(node, buf)
    }
}

/// A physical optimizer rule for the scheduler of a Ballista cluster: each `async_events` scan
/// (and each `thread_spans` plan) of more than one partition is put under a [`OneTaskExec`], so that one Ballista task reads
/// the whole scan (see the module docs for why). The rows are the same; the operators above see
/// one partition. The scan of an `async_spans` pairing is left alone: the pairing has one
/// partition and reads all of its scan's.
///
/// [`standalone_context`] installs it; a remote scheduler needs it in the session state its
/// `override_session_builder` makes (`SessionStateBuilder::with_physical_optimizer_rule`), and
/// Ballista's adaptive query planner off (`ballista.planner.adaptive.enabled = false`): that
/// planner replaces the session's physical optimizer rules with its own.
#[derive(Debug, Default, Clone, Copy)]
pub struct ScanInOneTask;

impl PhysicalOptimizerRule for ScanInOneTask {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_down(|node| {
            if node.is::<AsyncSpansExec>() {
                // One partition already, which reads every partition of its scan itself.
                return Ok(Transformed::new(node, false, TreeNodeRecursion::Jump));
            }
            if !(node.is::<AsyncEventsExec>() || node.is::<ThreadSpansExec>())
                || node.output_partitioning().partition_count() <= 1
            {
                return Ok(Transformed::no(node));
            }
            let merged: Arc<dyn ExecutionPlan> = Arc::new(OneTaskExec::new(node));
            // The scan under the merge is not visited again.
            Ok(Transformed::new(merged, true, TreeNodeRecursion::Jump))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "async_events_scan_in_one_task"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// All the partitions of its input as one partition, merged by DataFusion's own operator:
/// `SortPreservingMergeExec` on the input's order if it declares one, else
/// `CoalescePartitionsExec`. Ballista cuts stages at those two operators (the input would be a
/// stage of its own, its partitions spread over tasks); it does not know this one, so the input
/// stays in the stage of its consumer, which has one partition: one task.
#[derive(Debug)]
pub struct OneTaskExec {
    input: Arc<dyn ExecutionPlan>,
    merge: Arc<dyn ExecutionPlan>,
}

impl OneTaskExec {
    /// Merges `input`'s partitions.
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        let merge: Arc<dyn ExecutionPlan> = match input.output_ordering() {
            Some(ordering) => Arc::new(SortPreservingMergeExec::new(
                ordering.clone(),
                input.clone(),
            )),
            None => Arc::new(CoalescePartitionsExec::new(input.clone())),
        };
        Self { input, merge }
    }
}

impl DisplayAs for OneTaskExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "OneTaskExec: {}", self.merge.name())
    }
}

impl ExecutionPlan for OneTaskExec {
    fn name(&self) -> &str {
        "OneTaskExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.merge.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = <[_; 1]>::try_from(children).map_err(|c| {
            internal_datafusion_err!("OneTaskExec takes one input, got {}", c.len())
        })?;
        Ok(Arc::new(Self::new(input)))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn metrics(&self) -> Option<MetricsSet> {
        self.merge.metrics()
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.merge.execute(partition, context)
    }
}

/// A Ballista session config with [`LogicalCodec`] and [`PhysicalCodec`] set, to be extended
/// (target partitions, standalone parallelism, Ballista options) and given to
/// [`standalone_context_with`].
pub fn session_config() -> SessionConfig {
    SessionConfig::new_with_ballista()
        .with_ballista_logical_extension_codec(Arc::new(LogicalCodec::default()))
        .with_ballista_physical_extension_codec(Arc::new(PhysicalCodec::default()))
}

/// A Ballista standalone session on a lake: an in-process scheduler and an executor of
/// `parallelism` task slots (both on loopback ports the system picks), with the table
/// functions registered ([`register_with`](crate::register_with)) and [`ScanInOneTask`] among
/// the physical optimizer rules.
///
/// ```no_run
/// # async fn run() -> datafusion::common::Result<()> {
/// use datafusion_async_events::{Lake, ballista::standalone_context, provider::ScanOptions};
/// let lake = Lake::from_env().await?;
/// let ctx = standalone_context(lake, ScanOptions::default(), 2).await?;
/// ctx.sql("SELECT name, count(*) FROM async_events('6f0e6b0c-5d3c-4e7a-9a57-0e9f1a2b3c4d') \
///          GROUP BY name").await?.show().await?;
/// # Ok(()) }
/// ```
pub async fn standalone_context(
    lake: Lake,
    options: ScanOptions,
    parallelism: usize,
) -> Result<SessionContext> {
    let config = session_config().with_ballista_standalone_parallelism(parallelism.max(1));
    standalone_context_with(lake, options, config).await
}

/// [`standalone_context`] with a config of the caller's, which must come from
/// [`session_config`] (a config without these codecs fails on the first `async_events` plan).
///
/// Ballista's adaptive query planner is turned off: it plans stages with a fixed list of
/// physical optimizer rules, without [`ScanInOneTask`], so every task of a scan's stage would
/// read the whole scan.
pub async fn standalone_context_with(
    lake: Lake,
    options: ScanOptions,
    config: SessionConfig,
) -> Result<SessionContext> {
    let config = config.with_ballista_adaptive_query_planner(false);
    // The scheduler and the executor decode plans in this process: they find the lake here.
    LakeRegistry::global().add(&lake);
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .with_physical_optimizer_rule(Arc::new(ScanInOneTask))
        .build();
    let ctx = SessionContext::standalone_with_state(state).await?;
    crate::udtf::register_with(&ctx, lake, options);
    Ok(ctx)
}
