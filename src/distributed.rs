//! `async_events` on [datafusion-distributed](https://github.com/datafusion-contrib/datafusion-distributed)
//! 4.0 (feature `distributed`).
//!
//! The coordinating session plans a query as usual (the table functions, the metadata queries
//! and the block pruning run there) and datafusion-distributed cuts the physical plan into
//! stages run by tasks on workers. This module gives it what it needs to spread a scan:
//!
//! - [`AsyncEventsCodec`] on both sides, so a scan, a span pairing and thread spans travel as
//!   data;
//! - a task count for a scan: one task per [`DistributedScanOptions::blocks_per_task`] blocks
//!   (capped by datafusion-distributed at the number of workers), and exactly one for the
//!   operators that must see every event of the process (`async_spans`' pairing, the Perfetto
//!   trace): they run in one task with their scan, so their answers stay those of local
//!   execution;
//! - the scan cut for those tasks ([`AsyncEventsExec::task_variants`]): each task reads an equal
//!   share of the events (or of the blocks: [`DistributedScanOptions::block_cost_events`]), as
//!   contiguous runs of the streams' blocks in time order;
//! - thread spans (`thread_spans`, the thread rows of `process_spans`) cut by stream: a task per
//!   [`DistributedScanOptions::blocks_per_task`] blocks, at most one per thread stream, each
//!   stream read whole by one task (a thread's scopes pair across its blocks).
//!
//! A worker executes the scans it receives on the lake it opened under the same URLs: register
//! the lake in the worker process ([`LakeRegistry::global`](crate::lake::LakeRegistry::global)`().add(&lake)` or
//! [`register`](crate::register)), with the credentials of its own environment (plans carry
//! none). [`LocalCluster`] runs workers in this process, for trying a plan and for tests.

use crate::codec::AsyncEventsCodec;
use crate::predicate_fixes::PredicateFixes;
use crate::properties::property_functions;
use crate::provider::AsyncEventsExec;
use crate::spans::AsyncSpansExec;
use crate::thread_spans::ThreadSpansExec;
use async_trait::async_trait;
use datafusion::common::{DataFusionError, Result, extensions_options};
use datafusion::config::ConfigExtension;
use datafusion::execution::SessionStateBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;
use datafusion_distributed::{
    ChannelResolver, DesiredTaskCountEvent, DesiredTaskCountEventResponse, DistributedExt,
    DistributedLeafExec, ScaleUpLeafNodeEvent, ScaleUpLeafNodeEventResponse,
    SessionStateBuilderExt, Worker, WorkerChannel, WorkerQueryContext, WorkerResolver, grpc,
};
use std::collections::HashMap;
use std::sync::Arc;
use url::Url;

extensions_options! {
    /// How scans are spread over tasks (`SET async_events_distributed.blocks_per_task = 64`).
    pub struct DistributedScanOptions {
        /// Blocks a task should read at least: a scan of `n` blocks asks for `n / blocks_per_task`
        /// tasks (at least one; datafusion-distributed caps it at the number of workers).
        pub blocks_per_task: usize, default = 32
        /// What fetching a block costs, in events, when the blocks are shared among tasks:
        /// 1 (the default) gives each task the same number of events to decode; a large value
        /// (10⁹) the same number of blocks, i.e. of object store requests, when small blocks
        /// flushed by time sit beside full ones.
        pub block_cost_events: u64, default = 1
    }
}

impl ConfigExtension for DistributedScanOptions {
    const PREFIX: &'static str = "async_events_distributed";
}

/// How many tasks a node of this crate runs on: a scan asks for one per
/// [`DistributedScanOptions::blocks_per_task`] blocks; thread spans as many, but at most one per
/// thread stream (a thread's scopes pair in one task); a pairing of async spans (or the Perfetto
/// trace built on it) must run in one task. Other nodes are left to other handlers.
pub fn desired_task_count(
    event: DesiredTaskCountEvent,
) -> Option<Result<DesiredTaskCountEventResponse>> {
    let plan = event.plan;
    if plan.downcast_ref::<AsyncSpansExec>().is_some() || is_perfetto(plan) {
        return Some(Ok(DesiredTaskCountEventResponse::maximum(1)));
    }
    let per_task = options(event.session_config).blocks_per_task.max(1);
    if let Some(threads) = plan.downcast_ref::<ThreadSpansExec>() {
        // A thread's scopes pair in one task: at most a task per stream.
        let tasks = threads.blocks().div_ceil(per_task).min(threads.streams());
        return Some(Ok(DesiredTaskCountEventResponse::desired(tasks.max(1))));
    }
    let scan = plan.downcast_ref::<AsyncEventsExec>()?;
    let tasks = scan.planned_blocks().div_ceil(per_task).max(1);
    Some(Ok(DesiredTaskCountEventResponse::desired(tasks)))
}

fn options(config: &SessionConfig) -> DistributedScanOptions {
    (config.options().extensions)
        .get::<DistributedScanOptions>()
        .cloned()
        .unwrap_or_default()
}

#[cfg(feature = "timeline")]
fn is_perfetto(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.downcast_ref::<crate::timeline::perfetto::PerfettoTraceExec>()
        .is_some()
}

#[cfg(not(feature = "timeline"))]
fn is_perfetto(_plan: &Arc<dyn ExecutionPlan>) -> bool {
    false
}

/// Cuts a scan for `event.task_count` tasks ([`AsyncEventsExec::task_variants`]), each with about
/// `target_partitions` partitions of its own; thread spans are cut by stream, each stream read
/// whole by one task.
pub fn scale_up_scan(event: ScaleUpLeafNodeEvent) -> Option<Result<ScaleUpLeafNodeEventResponse>> {
    if event.task_count <= 1 {
        return None;
    }
    let target_partitions = event.session_config.target_partitions();
    let variants: Vec<Arc<dyn ExecutionPlan>> =
        if let Some(threads) = event.plan.downcast_ref::<ThreadSpansExec>() {
            (threads
                .task_variants(event.task_count, target_partitions)
                .into_iter())
            .map(|v| Arc::new(v) as _)
            .collect()
        } else {
            let scan = event.plan.downcast_ref::<AsyncEventsExec>()?;
            let block_cost = options(event.session_config).block_cost_events;
            (scan
                .task_variants(event.task_count, target_partitions, block_cost)
                .into_iter())
            .map(|v| Arc::new(v) as _)
            .collect()
        };
    Some(
        DistributedLeafExec::try_new(event.plan.clone(), variants)
            .map(|leaf| ScaleUpLeafNodeEventResponse::new(Arc::new(leaf))),
    )
}

/// The coordinating session's part: the codec, the task-count and scale-up handlers and
/// [`DistributedScanOptions`]. Add a worker resolver, a channel resolver and
/// `with_distributed_planner()` as datafusion-distributed documents, then register the lake
/// ([`register`](crate::register)) on the session.
pub fn coordinator(builder: SessionStateBuilder) -> SessionStateBuilder {
    builder
        .with_analyzer_rule(Arc::new(PredicateFixes))
        .with_distributed_user_codec(AsyncEventsCodec)
        .with_distributed_desired_task_count_handler(desired_task_count)
        .with_distributed_scale_up_leaf_node_handler(scale_up_scan)
        .with_distributed_option_extension(DistributedScanOptions::default())
}

/// A worker session's part: the codec (the lake is found by URL, see the module documentation)
/// and the property functions plans may call (`process_spans` computes `properties_to_jsonb`;
/// datafusion-distributed finds scalar functions in the worker's session by name).
pub fn worker(mut builder: SessionStateBuilder) -> SessionStateBuilder {
    builder
        .scalar_functions()
        .get_or_insert_with(Vec::new)
        .extend(property_functions().into_iter().map(Arc::new));
    builder.with_distributed_user_codec(AsyncEventsCodec)
}

/// Workers in this process, reached over in-memory gRPC connections (a `tokio::io::duplex`
/// each), so a distributed plan runs for real — plans and batches encoded, sent and decoded
/// between stages — without a network. Each worker is a separate [`Worker`] with its own URL
/// (`http://worker-N`); datafusion-distributed routes tasks among them.
#[derive(Clone)]
pub struct LocalCluster {
    urls: Vec<Url>,
    channels: Arc<HashMap<Url, grpc::BoxCloneSyncChannel>>,
}

impl std::fmt::Debug for LocalCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCluster")
            .field("urls", &self.urls)
            .finish()
    }
}

/// Bytes a connection buffers each way.
const DUPLEX_BUFFER: usize = 1 << 20;

impl LocalCluster {
    /// Starts `workers` workers (at least one) on the current tokio runtime.
    pub fn start(workers: usize) -> Result<Self> {
        let mut urls = Vec::new();
        let mut channels = HashMap::new();
        let mut servers = Vec::new();
        for n in 0..workers.max(1) {
            let url = Url::parse(&format!("http://worker-{n}"))
                .map_err(|e| DataFusionError::Internal(format!("worker URL: {e}")))?;
            let (client, server) = tokio::io::duplex(DUPLEX_BUFFER);
            let mut client = Some(client);
            let channel = tonic::transport::Endpoint::try_from(url.to_string())
                .map_err(|e| DataFusionError::Internal(format!("worker endpoint: {e}")))?
                .connect_with_connector_lazy(tower::service_fn(move |_| {
                    // The one connection of this channel (HTTP/2 multiplexes the calls on it).
                    let io = client
                        .take()
                        .map(hyper_util::rt::TokioIo::new)
                        .ok_or_else(|| {
                            std::io::Error::other("in-memory worker connection already used")
                        });
                    async move { io }
                }));
            channels.insert(url.clone(), grpc::BoxCloneSyncChannel::new(channel));
            urls.push(url);
            servers.push(server);
        }
        let cluster = Self {
            urls,
            channels: Arc::new(channels),
        };
        for server in servers {
            let resolver = cluster.clone();
            let worker = Worker::from_session_builder(move |ctx: WorkerQueryContext| {
                let resolver = resolver.clone();
                async move {
                    Ok(worker(ctx.builder)
                        .with_distributed_channel_resolver(resolver)
                        .build())
                }
            });
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(worker.into_worker_server())
                    .serve_with_incoming(futures::stream::iter([Ok::<_, std::io::Error>(server)])),
            );
        }
        Ok(cluster)
    }

    /// The workers' URLs.
    pub fn urls(&self) -> &[Url] {
        &self.urls
    }

    /// A coordinating session on this cluster: DataFusion's defaults, `config`, the distributed
    /// planner and [`coordinator`]'s handlers, for more datafusion-distributed options
    /// (`with_distributed_max_tasks_per_stage`, …) before `build()`.
    pub fn session_builder(&self, config: SessionConfig) -> SessionStateBuilder {
        coordinator(
            SessionStateBuilder::new()
                .with_default_features()
                .with_config(config)
                .with_distributed_worker_resolver(self.clone())
                .with_distributed_channel_resolver(self.clone())
                .with_distributed_planner(),
        )
    }

    /// [`Self::session_builder`], built. Register the lake on the context made from it.
    pub fn session_state(&self, config: SessionConfig) -> datafusion::execution::SessionState {
        self.session_builder(config).build()
    }
}

impl WorkerResolver for LocalCluster {
    fn get_urls(&self) -> Result<Vec<Url>, DataFusionError> {
        Ok(self.urls.clone())
    }
}

#[async_trait]
impl ChannelResolver for LocalCluster {
    async fn get_worker_client_for_url(
        &self,
        url: &Url,
    ) -> Result<Box<dyn WorkerChannel>, DataFusionError> {
        let channel = self.channels.get(url).ok_or_else(|| {
            DataFusionError::Execution(format!("no worker at {url} in this local cluster"))
        })?;
        Ok(grpc::create_worker_client(channel.clone()))
    }
}
