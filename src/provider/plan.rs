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

use super::ScanOptions;
use super::handles::LakeLocation;
use super::predicate::ScanPredicate;
use crate::error::{Error, Result};
use crate::format::{Column, ColumnSet, LatestTiming, StreamLayout, TickConverter};
use crate::lake::{BlockRecord, Lake, ProcessRecord, StreamRecord, TimeRange};
use chrono::DateTime;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// A thread stream the scan reads, with the transit metadata its layout is compiled from.
#[derive(Debug, Clone)]
pub(crate) struct PlannedStream {
    pub stream_id: Uuid,
    pub stream_id_text: String,
    pub dependencies_metadata: Vec<u8>,
    pub objects_metadata: Vec<u8>,
}

/// What the process's [`TickConverter`] is built from (a known or estimated frequency).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClockParams {
    pub start_ticks: i64,
    pub start_ns: i64,
    pub frequency: i64,
}

impl ClockParams {
    /// The converter.
    #[cfg_attr(not(feature = "codec"), allow(dead_code))]
    pub fn converter(&self) -> crate::format::FormatResult<TickConverter> {
        TickConverter::new(self.start_ticks, self.start_ns, self.frequency, None)
    }
}

/// One partition: a contiguous run of one stream's blocks, oldest first. A stream's partitions
/// are consecutive in [`PlannedScan::partitions`] and in time order.
#[derive(Debug, Clone)]
pub(crate) struct PlannedPartition {
    /// Index of the stream in [`PlannedScan::streams`].
    pub stream: usize,
    pub blocks: Vec<BlockRecord>,
    /// Blocks the metadata query returned for this partition (the blocks pruned by tick bounds
    /// are counted in the first partition of their stream).
    pub listed: usize,
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

/// The partitions of a scan, the runs of one stream next to each other in time order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Partitions(pub Vec<PlannedPartition>);

impl Partitions {
    /// The partitions.
    pub fn get(&self, partition: usize) -> Option<&PlannedPartition> {
        self.0.get(partition)
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Blocks the scan will read.
    pub fn block_count(&self) -> usize {
        self.0.iter().map(|p| p.blocks.len()).sum()
    }

    /// Blocks the metadata query listed (before pruning by tick bounds).
    pub fn listed_count(&self) -> usize {
        self.0.iter().map(|p| p.listed).sum()
    }

    /// The partition read just before `partition` in the same stream, if any: where the
    /// stream's time order crosses a partition boundary.
    pub fn previous_in_stream(&self, partition: usize) -> Option<usize> {
        let previous = partition.checked_sub(1)?;
        let (p, q) = (self.0.get(previous)?, self.0.get(partition)?);
        (p.stream == q.stream).then_some(previous)
    }

    /// Whether `partition` is followed by another partition of the same stream.
    pub fn has_next_in_stream(&self, partition: usize) -> bool {
        self.previous_in_stream(partition + 1).is_some()
    }

    /// One partition per stream: the runs of each stream joined again.
    pub fn per_stream(&self) -> Self {
        let mut joined: Vec<PlannedPartition> = Vec::new();
        for p in &self.0 {
            match joined.last_mut() {
                Some(last) if last.stream == p.stream => {
                    last.blocks.extend(p.blocks.iter().cloned());
                    last.listed += p.listed;
                }
                _ => joined.push(p.clone()),
            }
        }
        Self(joined)
    }
}

/// The weight of a block when partitions are balanced: its events (what decoding costs), plus
/// one so that empty blocks still count for their fetch.
fn block_weight(block: &BlockRecord) -> u64 {
    u64::try_from(block.nb_objects).unwrap_or(0) + 1
}

/// How many contiguous ranges each stream is cut into so that a scan has about `target`
/// partitions of balanced weight: a stream heavier than `1/target` of the total gets one range
/// per `1/target` (rounded up, at most one per block); the others stay whole. A process with
/// one busy thread then uses every core, and one with many streams is left as it is.
fn ranges_per_stream(weights: &[u64], blocks: &[usize], target: usize) -> Vec<usize> {
    let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    weights
        .iter()
        .zip(blocks)
        .map(|(&w, &n)| {
            let wanted = if total == 0 {
                1
            } else {
                (u128::from(w) * target as u128).div_ceil(total)
            };
            (wanted.min(n as u128) as usize).max(1)
        })
        .collect()
}

/// Cuts blocks (in time order) into `ranges` contiguous, non-empty runs of about equal weight;
/// returns the start index of each run.
fn split_points(blocks: &[BlockRecord], ranges: usize) -> Vec<usize> {
    let ranges = ranges.clamp(1, blocks.len().max(1));
    let total: u64 = blocks.iter().map(block_weight).sum();
    let mut starts = vec![0];
    let mut seen = 0u64;
    for (i, block) in blocks.iter().enumerate() {
        let cut = starts.len() as u64;
        if starts.len() == ranges {
            break;
        }
        // Start the next run at the block whose middle passes this run's share, and early
        // enough to leave a block for each run still to come.
        let share = u128::from(total) * u128::from(cut) / ranges as u128;
        let middle = 2 * u128::from(seen) + u128::from(block_weight(block));
        let remaining = ranges - starts.len();
        if i > 0 && (middle >= 2 * share || blocks.len() - i <= remaining) {
            starts.push(i);
        }
        seen += block_weight(block);
    }
    starts
}

/// Cuts whole stream segments (one partition each, in stream order) into runs, so that there
/// are about `target` partitions of balanced weight (see [`ranges_per_stream`]). The blocks a
/// segment's metadata query listed but pruned are counted in its first run.
fn cut_into_runs(segments: Vec<PlannedPartition>, target: usize) -> Vec<PlannedPartition> {
    let weights: Vec<u64> = segments
        .iter()
        .map(|s| s.blocks.iter().map(block_weight).sum())
        .collect();
    let counts: Vec<usize> = segments.iter().map(|s| s.blocks.len()).collect();
    let ranges = ranges_per_stream(&weights, &counts, target.max(1));
    let mut partitions = Vec::with_capacity(segments.len());
    for (segment, ranges) in segments.into_iter().zip(ranges) {
        let pruned = segment.listed.saturating_sub(segment.blocks.len());
        let mut starts = split_points(&segment.blocks, ranges);
        starts.push(segment.blocks.len());
        for (k, run) in starts.windows(2).enumerate() {
            let run = segment
                .blocks
                .get(run[0]..run[1])
                .unwrap_or_default()
                .to_vec();
            partitions.push(PlannedPartition {
                stream: segment.stream,
                listed: run.len() + if k == 0 { pruned } else { 0 },
                blocks: run,
            });
        }
    }
    partitions
}

impl Partitions {
    /// The blocks of the scan spread over `tasks` tasks of a distributed engine, each with the
    /// same number of partitions (an engine's requirement), for a task per worker.
    ///
    /// The streams' blocks, end to end in stream order, are cut into `tasks` contiguous slices
    /// of equal weight (to a block), so a task reads the same share of events whatever the skew
    /// between streams; a busy stream may be cut between tasks. Each task's slice is then cut
    /// into runs for about `per_task` partitions, as a local scan is for `target_partitions`,
    /// and the tasks with fewer partitions are padded with empty ones. Every partition still
    /// reads one stream's blocks in time order. With `whole_runs` (a scan read newest first)
    /// a task's segments are not cut further.
    ///
    /// A block weighs its events plus `block_cost` (what fetching it costs, in events): 1
    /// balances the decoding, a large value the blocks (object store requests).
    pub fn split_for_tasks(
        &self,
        tasks: usize,
        per_task: usize,
        whole_runs: bool,
        block_cost: u64,
    ) -> Vec<Self> {
        let tasks = tasks.max(1);
        let joined = self.per_stream().0;
        let weight = |b: &BlockRecord| {
            u128::from(u64::try_from(b.nb_objects).unwrap_or(0)) + u128::from(block_cost.max(1))
        };
        let total: u128 = joined.iter().flat_map(|p| &p.blocks).map(weight).sum();
        let mut slices: Vec<Vec<PlannedPartition>> = vec![Vec::new(); tasks];
        let mut seen = 0u128;
        for stream in joined {
            let pruned = stream.listed.saturating_sub(stream.blocks.len());
            if stream.blocks.is_empty() {
                // Every block pruned: nothing to read, but its listing is still counted.
                let task = (seen * tasks as u128).checked_div(total).unwrap_or(0) as usize;
                slices[task.min(tasks - 1)].push(stream);
                continue;
            }
            let mut first = true;
            for block in stream.blocks {
                let weight = weight(&block);
                // The task whose share holds the block's middle: slices are contiguous.
                let task = ((2 * seen + weight) * tasks as u128)
                    .checked_div(2 * total)
                    .unwrap_or(0) as usize;
                seen += weight;
                let slice = &mut slices[task.min(tasks - 1)];
                match slice.last_mut() {
                    Some(last) if last.stream == stream.stream && !first => {
                        last.blocks.push(block);
                        last.listed += 1;
                    }
                    _ => slice.push(PlannedPartition {
                        stream: stream.stream,
                        listed: 1 + if first { pruned } else { 0 },
                        blocks: vec![block],
                    }),
                }
                first = false;
            }
        }
        let mut variants: Vec<Vec<PlannedPartition>> = slices
            .into_iter()
            .map(|slice| {
                if whole_runs {
                    slice
                } else {
                    cut_into_runs(slice, per_task)
                }
            })
            .collect();
        let width = variants.iter().map(Vec::len).max().unwrap_or(0).max(1);
        for variant in &mut variants {
            let stream = variant.last().map_or(0, |p| p.stream);
            variant.resize_with(width, || PlannedPartition {
                stream,
                blocks: vec![],
                listed: 0,
            });
        }
        variants.into_iter().map(Self).collect()
    }
}

/// The columns a scan decodes and the order in which it outputs them.
///
/// The decoder fills columns in schema order, each once; a projection may name them in any
/// order and more than once (`TableProvider::scan` must honour it exactly), so the decoded
/// batch is rearranged when they differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanProjection {
    /// Columns decoded.
    pub columns: ColumnSet,
    /// For each output column, its position in the decoded batch; `None` when the decoded batch
    /// is the output.
    pub order: Option<Vec<usize>>,
    /// The output schema.
    pub schema: SchemaRef,
}

impl ScanProjection {
    /// The projection of `TableProvider::scan` (indices into the `async_events` schema; `None`
    /// for all columns).
    pub fn new(projection: Option<&[usize]>) -> datafusion::common::Result<Self> {
        let full = crate::format::async_events_schema();
        let Some(indices) = projection else {
            return Ok(Self {
                columns: ColumnSet::all(),
                order: None,
                schema: full,
            });
        };
        let mut columns = ColumnSet::none();
        for &i in indices {
            match Column::from_index(i) {
                Some(c) => columns = columns.with(c),
                None => {
                    return datafusion::common::plan_err!(
                        "async_events has {} columns, the projection asks for column {i}",
                        Column::ALL.len()
                    );
                }
            }
        }
        let decoded: Vec<usize> = columns.iter().map(|c| c as usize).collect();
        let order: Vec<usize> = indices
            .iter()
            .filter_map(|i| decoded.iter().position(|d| d == i))
            .collect();
        let identity = order.iter().copied().eq(0..decoded.len());
        let schema = Arc::new(Schema::new(
            indices
                .iter()
                .map(|&i| full.field(i).clone())
                .collect::<Vec<_>>(),
        ));
        Ok(Self {
            columns,
            order: (!identity).then_some(order),
            schema,
        })
    }
}

/// What every clone and partition of a planned scan shares: the blocks and how to read them,
/// as data (what executes them is resolved when they run: see [`super::handles`]).
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

/// A block's event-time bounds, from its tick bounds (which bound its events' ticks: see the
/// module documentation), widened by a microsecond on each side for rounding.
pub(crate) fn block_time_bounds(clock: &TickConverter, block: &BlockRecord) -> (i64, i64) {
    (
        clock.delta_to_ns(block.begin_ticks).saturating_sub(1_000),
        clock.delta_to_ns(block.end_ticks).saturating_add(1_000),
    )
}

/// The tick converter of a process: one per process and scan, so that all blocks agree. When
/// the process did not report its tick frequency, it is estimated from the latest block of any
/// of its streams.
pub async fn process_clock(lake: &Lake, process: &ProcessRecord) -> Result<TickConverter> {
    let latest = if process.tsc_frequency > 0 {
        None
    } else {
        lake.latest_timing(process.process_id)
            .await?
            .map(|t| LatestTiming {
                end_ticks: t.end_ticks,
                end_time_ns: t.end_time_ns,
            })
    };
    let start_ns = process.start_time.timestamp_nanos_opt().ok_or_else(|| {
        Error::BadRow(format!(
            "process {}: start_time out of range",
            process.process_id
        ))
    })?;
    TickConverter::new(process.start_ticks, start_ns, process.tsc_frequency, latest).map_err(
        |source| Error::Clock {
            process_id: process.process_id,
            source,
        },
    )
}

/// Compiled stream layouts, by stream id. A stream's transit metadata is written once, when the
/// stream is created, and never changes, so it is compiled once and reused by every scan; the
/// metadata bytes are kept to check that a cached id still describes the same stream (two lakes
/// may hold copies of one stream).
#[derive(Debug, Default)]
pub(crate) struct LayoutCache {
    layouts: Mutex<HashMap<Uuid, CachedLayout>>,
    compiled: AtomicUsize,
}

#[derive(Debug)]
struct CachedLayout {
    dependencies_metadata: Vec<u8>,
    objects_metadata: Vec<u8>,
    layout: Arc<StreamLayout>,
}

/// Streams whose layouts are kept (a layout is a few KiB; past this the cache starts over).
const LAYOUT_CACHE_STREAMS: usize = 4096;

impl LayoutCache {
    /// The compiled layout of a stream.
    pub fn layout(&self, process_id: Uuid, stream: &StreamRecord) -> Result<Arc<StreamLayout>> {
        {
            let layouts = self.layouts.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = layouts.get(&stream.stream_id)
                && c.dependencies_metadata == stream.dependencies_metadata
                && c.objects_metadata == stream.objects_metadata
            {
                return Ok(c.layout.clone());
            }
        }
        let layout = Arc::new(
            StreamLayout::from_cbor(&stream.dependencies_metadata, &stream.objects_metadata)
                .map_err(|source| Error::StreamMetadata {
                    process_id,
                    stream_id: stream.stream_id,
                    source,
                })?,
        );
        self.compiled.fetch_add(1, Ordering::Relaxed);
        let mut layouts = self.layouts.lock().unwrap_or_else(|e| e.into_inner());
        if layouts.len() >= LAYOUT_CACHE_STREAMS {
            layouts.clear();
        }
        layouts.insert(
            stream.stream_id,
            CachedLayout {
                dependencies_metadata: stream.dependencies_metadata.clone(),
                objects_metadata: stream.objects_metadata.clone(),
                layout: layout.clone(),
            },
        );
        Ok(layout)
    }

    /// Layouts compiled so far.
    pub fn compiled(&self) -> usize {
        self.compiled.load(Ordering::Relaxed)
    }
}

/// Lists and prunes the blocks a scan reads, and cuts them into about `target_partitions`
/// partitions (see [`ranges_per_stream`]), each a contiguous run of one stream in time order.
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
    let range = TimeRange {
        begin: predicate
            .time
            .0
            .map(|t| DateTime::from_timestamp_nanos(t.saturating_sub(margin))),
        end: predicate
            .time
            .1
            .map(|t| DateTime::from_timestamp_nanos(t.saturating_add(margin))),
    };
    let ids: Vec<Uuid> = streams.iter().map(|s| s.stream_id).collect();
    let listed = lake.blocks(process_id, &ids, range).await?;
    let mut by_stream: BTreeMap<Uuid, Vec<BlockRecord>> = BTreeMap::new();
    for b in listed {
        by_stream.entry(b.stream_id).or_default().push(b);
    }
    let (lo, hi) = (
        predicate.time.0.unwrap_or(i64::MIN),
        predicate.time.1.unwrap_or(i64::MAX),
    );
    let mut kept: Vec<(StreamRecord, Vec<BlockRecord>, usize)> = Vec::new();
    for stream in streams {
        let Some(mut blocks) = by_stream.remove(&stream.stream_id) else {
            continue;
        };
        let listed = blocks.len();
        // Tick bounds bound the events (second assumption).
        blocks.retain(|b| {
            let (first, last) = block_time_bounds(&clock, b);
            first <= hi && last >= lo
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
        partitions: Partitions(cut_into_runs(whole, target_partitions)),
    };
    Ok((plan, compiled))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(events: &[i32]) -> Vec<BlockRecord> {
        let at = DateTime::from_timestamp_nanos(0);
        events
            .iter()
            .enumerate()
            .map(|(i, &n)| BlockRecord {
                block_id: Uuid::new_v4(),
                stream_id: Uuid::nil(),
                process_id: Uuid::nil(),
                begin_time: at,
                begin_ticks: i as i64,
                end_time: at,
                end_ticks: i as i64 + 1,
                nb_objects: n,
                object_offset: 0,
                payload_size: 0,
            })
            .collect()
    }

    #[test]
    fn one_busy_stream_is_cut_into_target_partitions() {
        assert_eq!(ranges_per_stream(&[1000], &[10], 4), [4]);
        assert_eq!(
            ranges_per_stream(&[1000], &[3], 4),
            [3],
            "at most one per block"
        );
        // Balanced streams, as many as the target: left whole.
        assert_eq!(ranges_per_stream(&[10, 10, 10], &[5, 5, 5], 2), [1, 1, 1]);
        // One busy thread among idle ones gets the cores.
        assert_eq!(ranges_per_stream(&[900, 50, 50], &[9, 1, 1], 2), [2, 1, 1]);
        assert_eq!(ranges_per_stream(&[0, 0], &[0, 0], 8), [1, 1]);
    }

    #[test]
    fn runs_are_contiguous_non_empty_and_balanced() {
        let even = blocks(&[99; 10]);
        assert_eq!(split_points(&even, 2), [0, 5]);
        assert_eq!(split_points(&even, 3), [0, 3, 7]);
        assert_eq!(split_points(&even, 10), (0..10).collect::<Vec<_>>());
        // Heavy blocks at the start: the first run is shorter.
        let skewed = blocks(&[1000, 1000, 10, 10, 10, 10, 10, 10]);
        assert_eq!(split_points(&skewed, 2), [0, 1]);
        assert_eq!(split_points(&blocks(&[5]), 4), [0]);
        assert_eq!(split_points(&[], 3), [0]);
    }

    /// A run of `stream` whose first block starts at tick `first`.
    fn partition(stream: usize, events: &[i32], listed: usize, first: i64) -> PlannedPartition {
        let mut blocks = blocks(events);
        for b in &mut blocks {
            b.begin_ticks += first;
            b.end_ticks += first;
        }
        PlannedPartition {
            stream,
            blocks,
            listed,
        }
    }

    fn task_weights(variants: &[Partitions]) -> Vec<u64> {
        variants
            .iter()
            .map(|v| v.0.iter().flat_map(|p| &p.blocks).map(block_weight).sum())
            .collect()
    }

    #[test]
    fn tasks_get_equal_shares_of_a_skewed_scan() {
        // One hot stream (cut in four runs locally) and three light ones.
        let scan = Partitions(vec![
            partition(0, &[100; 30], 32, 0),
            partition(1, &[100; 30], 30, 0),
            partition(1, &[100; 30], 30, 30),
            partition(1, &[100; 30], 30, 60),
            partition(1, &[100; 30], 30, 90),
            partition(2, &[100; 2], 2, 0),
            partition(3, &[], 5, 0),
        ]);
        for tasks in [1, 2, 3, 4, 7] {
            let variants = scan.split_for_tasks(tasks, 2, false, 1);
            assert_eq!(variants.len(), tasks);
            let width = variants[0].len();
            assert!(variants.iter().all(|v| v.len() == width), "{tasks} tasks");
            let weights = task_weights(&variants);
            let (max, min) = (weights.iter().max().unwrap(), weights.iter().min().unwrap());
            assert!(max - min <= 101, "{tasks} tasks: {weights:?}");
            // Nothing lost or read twice, every listing counted, streams in time order.
            let mut read: Vec<Uuid> = variants
                .iter()
                .flat_map(|v| &v.0)
                .flat_map(|p| p.blocks.iter().map(|b| b.block_id))
                .collect();
            assert_eq!(read.len(), 152, "{tasks} tasks");
            let listed: usize = variants.iter().map(Partitions::listed_count).sum();
            assert_eq!(listed, scan.listed_count(), "{tasks} tasks");
            for p in variants.iter().flat_map(|v| &v.0) {
                assert!(
                    p.blocks
                        .windows(2)
                        .all(|w| w[0].begin_ticks < w[1].begin_ticks)
                );
            }
            read.sort_unstable();
            read.dedup();
            assert_eq!(read.len(), 152, "{tasks} tasks: a block read twice");
        }
        // Newest first: segments are not cut further.
        let whole = scan.split_for_tasks(2, 8, true, 1);
        assert!(whole.iter().all(|v| v.len() <= 3), "{whole:?}");
        // More tasks than blocks: the extra tasks read nothing.
        let tiny = Partitions(vec![partition(0, &[5, 5], 2, 0)]);
        let variants = tiny.split_for_tasks(4, 2, false, 1);
        assert_eq!(
            task_weights(&variants).iter().filter(|&&w| w > 0).count(),
            2
        );
        assert!(variants.iter().all(|v| v.len() == 1));
        assert_eq!(
            Partitions::default().split_for_tasks(3, 2, false, 1).len(),
            3
        );
        // Blocks of 10 and 1 000 events: balanced by events, or by blocks when a fetch costs
        // as much as a large block.
        let mixed = Partitions(vec![
            partition(0, &[1000; 10], 10, 0),
            partition(1, &[10; 100], 100, 0),
        ]);
        let blocks =
            |v: &[Partitions]| -> Vec<usize> { v.iter().map(Partitions::block_count).collect() };
        assert_eq!(blocks(&mixed.split_for_tasks(2, 1, false, 1)), [6, 104]);
        assert_eq!(
            blocks(&mixed.split_for_tasks(2, 1, false, 100_000)),
            [55, 55]
        );
    }

    #[test]
    fn projections_keep_order_and_repeats() {
        let p = ScanProjection::new(Some(&[8, 2])).unwrap();
        assert_eq!(
            p.columns.iter().collect::<Vec<_>>(),
            [Column::Time, Column::Name]
        );
        assert_eq!(p.order, Some(vec![1, 0]));
        let names: Vec<_> = p
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(names, ["name", "time"]);
        let p = ScanProjection::new(Some(&[2, 2, 8])).unwrap();
        assert_eq!(p.order, Some(vec![0, 0, 1]));
        assert_eq!(p.schema.fields().len(), 3);
        let p = ScanProjection::new(Some(&[2, 8])).unwrap();
        assert_eq!(
            p.order, None,
            "sorted and distinct: the decoded batch as is"
        );
        assert_eq!(ScanProjection::new(Some(&[])).unwrap().order, None);
        assert!(ScanProjection::new(Some(&[13])).is_err());
        assert_eq!(ScanProjection::new(None).unwrap().columns, ColumnSet::all());
    }
}
