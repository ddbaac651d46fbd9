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
//! What cannot run under Ballista: `thread_streams(pid)` and the metadata tables
//! ([`register_metadata_tables`](crate::register_metadata_tables)): their table providers have
//! no codec, so a plan reading them fails when the client encodes it.
//!
//! A cluster of separate processes takes the same codecs (Ballista's `SchedulerConfig` and
//! `ExecutorProcessConfig` have `override_logical_codec` / `override_physical_codec`), and each
//! scheduler and executor process must open the lake and add it to its
//! [`LakeRegistry::global`] (what [`register`](crate::register) does) before running plans.

use crate::lake::Lake;
use crate::provider::{AsyncEventsCodec, LakeRegistry, ScanOptions};
use ::ballista::prelude::{SessionConfigExt, SessionContextExt};
use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::{Result, TableReference};
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::execution::{SessionStateBuilder, TaskContext};
use datafusion::logical_expr::{
    AggregateUDF, Extension, HigherOrderUDF, LogicalPlan, ScalarUDF, WindowUDF,
};
use datafusion::physical_expr_common::physical_expr::proto_decode::PhysicalExprDecodeCtx;
use datafusion::physical_expr_common::physical_expr::proto_encode::PhysicalExprEncodeCtx;
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use std::sync::Arc;

/// The bytes in front of everything [`AsyncEventsCodec`] encodes inside a Ballista plan. The
/// first byte is zero: a protobuf field tag is never zero, so Ballista's own (non-empty)
/// messages never start like this.
pub const PREFIX: &[u8] = b"\0async_events:1\0";

/// Encodes with this crate's codec (behind [`PREFIX`]) if it takes the node, else with the
/// wrapped codec. When both refuse, the error is the wrapped codec's, with ours as context.
fn encode_either(
    buf: &mut Vec<u8>,
    ours: impl FnOnce(&mut Vec<u8>) -> Result<()>,
    theirs: impl FnOnce(&mut Vec<u8>) -> Result<()>,
) -> Result<()> {
    let mut bytes = PREFIX.to_vec();
    match ours(&mut bytes) {
        Ok(()) => {
            buf.extend_from_slice(&bytes);
            Ok(())
        }
        Err(our_error) => theirs(buf)
            .map_err(|e| e.context(format!("not encodable by async_events either: {our_error}"))),
    }
}

/// Ballista's logical codec with `async_events` tables (and any other table
/// [`AsyncEventsCodec`] encodes) added.
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
        match buf.strip_prefix(PREFIX) {
            Some(ours) => LogicalExtensionCodec::try_decode(&AsyncEventsCodec, ours, inputs, ctx),
            None => self.inner.try_decode(buf, inputs, ctx),
        }
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        encode_either(
            buf,
            |b| LogicalExtensionCodec::try_encode(&AsyncEventsCodec, node, b),
            |b| self.inner.try_encode(node, b),
        )
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
        let ours = node.clone();
        encode_either(
            buf,
            |b| AsyncEventsCodec.try_encode_table_provider(table_ref, ours, b),
            |b| self.inner.try_encode_table_provider(table_ref, node, b),
        )
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
        self.inner.try_decode_udf(name, buf)
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

/// Ballista's physical codec with `async_events` scans (and any other node
/// [`AsyncEventsCodec`] encodes) added.
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
        let ours = node.clone();
        encode_either(
            buf,
            |b| PhysicalExtensionCodec::try_encode(&AsyncEventsCodec, ours, b, proto_converter),
            |b| self.inner.try_encode(node, b, proto_converter),
        )
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        self.inner.try_decode_udf(name, buf)
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
/// functions registered ([`register_with`](crate::register_with)).
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
pub async fn standalone_context_with(
    lake: Lake,
    options: ScanOptions,
    config: SessionConfig,
) -> Result<SessionContext> {
    // The scheduler and the executor decode plans in this process: they find the lake here.
    LakeRegistry::global().add(&lake);
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .build();
    let ctx = SessionContext::standalone_with_state(state).await?;
    crate::register_with(&ctx, lake, options);
    Ok(ctx)
}
