//! Scan planning: from a process id and a [`ScanPredicate`] to the blocks each partition reads,
//! and [`ScanState`], what every partition of a planned scan shares.
//!
//! Blocks are pruned in ticks before any is fetched: the query's time range is converted to the
//! process's tick counter with its clock, the metadata query lists only the blocks whose tick
//! bounds meet it (widened by a tick and a microsecond for rounding), then the listed blocks are
//! checked again with their tick bounds converted to times, exactly as their events will be. Each stream's blocks, in recording order, become one partition or,
//! when the scan has fewer busy streams than `target_partitions`, several contiguous runs of
//! balanced weight (events per block): every partition is sorted by time, and the partitions of
//! one stream follow each other in time order.
//!
//! Event times come from ticks, so pruning in ticks is exact however far the process's wall clock
//! drifted from its tick counter (a tick frequency off by 100 ppm is 8.6 s a day): the
//! wall-clock `begin_time`/`end_time` of a block are never compared. One assumption of
//! micromegas's producer makes it exact: a block's `begin_ticks`/`end_ticks` bound the ticks of
//! every event it holds (the producer reads the tick counter when it opens and when it closes
//! the block). A lake that breaks it is not a micromegas lake.

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
use crate::lake::{BlockRecord, BlockWindow, Lake, LakeLocation, StreamRecord};
use crate::time_bounds::TimeBounds;
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
    layouts: &LayoutCache,
    target_partitions: usize,
) -> Result<(PlannedScan, Vec<Arc<StreamLayout>>)> {
    let process = lake.process(process_id).await?;
    let clock = process_clock(lake, &process).await?;
    let clock_params = ClockParams::of(&clock);
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
    let ids: Vec<Uuid> = streams.iter().map(|s| s.stream_id).collect();
    let listed = lake
        .blocks(process_id, &ids, tick_window(&clock, predicate.time))
        .await?;
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
        // Tick bounds bound the events (the assumption of the module documentation).
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

/// The tick window that lists every block [`block_time_bounds`] keeps for `time`: each bound
/// widened by the microsecond of `block_time_bounds` and by one tick for the rounding of
/// [`TickConverter::ns_to_delta`], so the listing never drops a block the exact check keeps.
pub(crate) fn tick_window(clock: &TickConverter, time: TimeBounds) -> BlockWindow {
    BlockWindow::Ticks {
        begin: time
            .begin
            .map(|b| clock.ns_to_delta(b.saturating_sub(1_000)).saturating_sub(1)),
        end: time
            .end
            .map(|e| clock.ns_to_delta(e.saturating_add(1_000)).saturating_add(1)),
    }
}
