//! Scan planning: from a process id and a [`ScanPredicate`] to the blocks each partition reads,
//! and [`ScanState`], what every partition of a planned scan shares.
//!
//! Blocks are pruned twice before any is fetched: in the metadata query, by their wall-clock
//! bounds widened by [`ScanOptions::time_margin`], then precisely by their tick bounds converted
//! with the process's clock. Each stream's blocks, in recording order, become one partition or,
//! when the scan has fewer busy streams than `target_partitions`, several contiguous runs of
//! balanced weight (events per block): every partition is sorted by time, and the partitions of
//! one stream follow each other in time order.
//!
//! Two assumptions of micromegas's producer make this pruning exact, and are stated here where
//! they are used:
//! - a block's `begin_time`/`end_time` (wall clock, read when the block was opened and closed)
//!   differ from the event times computed from ticks by less than the margin: the clock and the
//!   tick counter of one process drift apart by far less than the default 5 s over a block;
//! - a block's `begin_ticks`/`end_ticks` bound the ticks of every event it holds (the producer
//!   reads the tick counter when it opens and when it closes the block).
//!
//! A lake that breaks the first one needs a wider `time_margin`; one that breaks the second is
//! not a micromegas lake.

mod clock;
mod partitions;
mod projection;

pub use clock::process_clock;
pub(crate) use clock::{ClockParams, block_time_bounds};
pub(crate) use partitions::{Partitions, PlannedPartition};
pub(crate) use projection::ScanProjection;

use super::layout_cache::LayoutCache;
use super::options::ScanOptions;
use super::predicate::ScanPredicate;
use crate::error::Result;
use crate::format::{StreamLayout, TickConverter};
use crate::lake::{BlockRecord, Lake, LakeLocation, StreamRecord, TimeRange};
use chrono::DateTime;
use datafusion::arrow::datatypes::SchemaRef;
use std::collections::BTreeMap;
use std::sync::Arc;
use uuid::Uuid;

/// A thread stream the scan reads, with the transit metadata its layout is compiled from.
#[derive(Debug, Clone)]
pub(crate) struct PlannedStream {
    pub stream_id: Uuid,
    pub stream_id_text: String,
    pub dependencies_metadata: Vec<u8>,
    pub objects_metadata: Vec<u8>,
}

/// What a scan reads.
#[derive(Debug, Clone)]
pub(crate) struct PlannedScan {
    pub clock: TickConverter,
    #[cfg_attr(not(feature = "codec"), allow(dead_code))]
    pub clock_params: ClockParams,
    pub streams: Vec<PlannedStream>,
    pub partitions: Partitions,
}

/// What every clone and partition of a planned scan shares: the blocks and how to read them,
/// as data (what executes them is resolved when they run: see [`super::runtime`]).
#[derive(Debug)]
pub(crate) struct ScanState {
    pub location: LakeLocation,
    pub process_id: Uuid,
    pub plan: PlannedScan,
    pub predicate: ScanPredicate,
    pub projection: ScanProjection,
    pub options: ScanOptions,
}

impl ScanState {
    /// The output schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.projection.schema
    }

    /// A block's event-time bounds (see [`block_time_bounds`]).
    pub fn time_bounds(&self, block: &BlockRecord) -> (i64, i64) {
        block_time_bounds(&self.plan.clock, block)
    }
}

/// Lists and prunes the blocks a scan reads, and cuts them into about `target_partitions`
/// partitions (see [`Partitions::cut`]), each a contiguous run of one stream in time order.
pub(crate) async fn plan_scan(
    lake: &Lake,
    process_id: Uuid,
    predicate: &ScanPredicate,
    options: &ScanOptions,
    layouts: &LayoutCache,
    target_partitions: usize,
) -> Result<(PlannedScan, Vec<Arc<StreamLayout>>)> {
    let process = lake.process(process_id).await?;
    let clock = process_clock(lake, &process).await?;
    let clock_params = ClockParams {
        start_ticks: process.start_ticks,
        start_ns: process.start_time.timestamp_nanos_opt().unwrap_or_default(),
        frequency: clock.frequency(),
    };
    if predicate.impossible {
        let plan = PlannedScan {
            clock,
            clock_params,
            streams: vec![],
            partitions: Partitions::default(),
        };
        return Ok((plan, vec![]));
    }
    let only: Option<Vec<Uuid>> = predicate
        .streams
        .as_ref()
        .map(|s| s.iter().copied().collect());
    let streams = lake.cpu_streams(process_id, only.as_deref()).await?;
    // Wall-clock block bounds are compared with the range widened by the margin (first
    // assumption of the module documentation).
    let margin = options.time_margin.as_nanos().min(i64::MAX as u128) as i64;
    let widened = predicate.time.widen(margin);
    let range = TimeRange {
        begin: widened.begin.map(DateTime::from_timestamp_nanos),
        end: widened.end.map(DateTime::from_timestamp_nanos),
    };
    let ids: Vec<Uuid> = streams.iter().map(|s| s.stream_id).collect();
    let listed = lake.blocks(process_id, &ids, range).await?;
    let mut by_stream: BTreeMap<Uuid, Vec<BlockRecord>> = BTreeMap::new();
    for b in listed {
        by_stream.entry(b.stream_id).or_default().push(b);
    }
    let mut kept: Vec<(StreamRecord, Vec<BlockRecord>, usize)> = Vec::new();
    for stream in streams {
        let Some(mut blocks) = by_stream.remove(&stream.stream_id) else {
            continue;
        };
        let listed = blocks.len();
        // Tick bounds bound the events (second assumption).
        blocks.retain(|b| {
            let (first, last) = block_time_bounds(&clock, b);
            predicate.time.overlaps(first, last)
        });
        blocks.sort_by_key(|b| (b.begin_ticks, b.object_offset));
        kept.push((stream, blocks, listed));
    }
    let mut planned_streams = Vec::with_capacity(kept.len());
    let mut compiled = Vec::with_capacity(kept.len());
    let mut whole = Vec::with_capacity(kept.len());
    for (stream, blocks, listed) in kept {
        let index = planned_streams.len();
        compiled.push(layouts.layout(process_id, &stream)?);
        planned_streams.push(PlannedStream {
            stream_id: stream.stream_id,
            stream_id_text: stream.stream_id.to_string(),
            dependencies_metadata: stream.dependencies_metadata,
            objects_metadata: stream.objects_metadata,
        });
        whole.push(PlannedPartition {
            stream: index,
            blocks,
            listed,
        });
    }
    let plan = PlannedScan {
        clock,
        clock_params,
        streams: planned_streams,
        partitions: Partitions::cut(whole, target_partitions),
    };
    Ok((plan, compiled))
}
