//! Scan planning: from a process id and a [`ScanPredicate`] to the blocks each partition reads,
//! and [`ScanState`], what every partition of a planned scan shares.
//!
//! Blocks are pruned twice before any is fetched: in the metadata query, by their wall-clock
//! bounds widened by [`ScanOptions::time_margin`], then precisely by their tick bounds converted
//! with the process's clock. Each stream becomes one partition whose blocks are in recording
//! order, so every partition is sorted by time.
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
use super::predicate::ScanPredicate;
use super::shared::Registration;
use crate::error::{Error, Result};
use crate::format::{Column, ColumnSet, LatestTiming, StreamLayout, TickConverter};
use crate::lake::{BlockRecord, Lake, ProcessRecord, StreamRecord, TimeRange};
use chrono::DateTime;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;
use uuid::Uuid;

/// One partition: a stream and the blocks of it the scan reads, oldest first.
#[derive(Debug, Clone)]
pub(crate) struct PlannedStream {
    pub stream_id_text: String,
    pub layout: Arc<StreamLayout>,
    pub blocks: Vec<BlockRecord>,
    /// Blocks the metadata query returned for this stream.
    pub listed: usize,
}

/// What a scan reads.
#[derive(Debug, Clone)]
pub(crate) struct PlannedScan {
    pub clock: TickConverter,
    pub partitions: Vec<PlannedStream>,
}

impl PlannedScan {
    /// Blocks the scan will read.
    pub fn block_count(&self) -> usize {
        self.partitions.iter().map(|p| p.blocks.len()).sum()
    }

    /// Blocks the metadata query listed (before pruning by tick bounds).
    pub fn listed_count(&self) -> usize {
        self.partitions.iter().map(|p| p.listed).sum()
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

/// What every clone and partition of a planned scan shares: the blocks and how to read them.
#[derive(Debug)]
pub(crate) struct ScanState {
    pub lake: Lake,
    pub process_id: Uuid,
    pub plan: PlannedScan,
    pub predicate: ScanPredicate,
    pub projection: ScanProjection,
    pub options: ScanOptions,
    pub registration: Registration,
    /// Bounds concurrent fetches over all partitions (memory stays bounded whatever the number
    /// of streams).
    pub fetches: Arc<Semaphore>,
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

pub(crate) async fn plan_scan(
    lake: &Lake,
    process_id: Uuid,
    predicate: &ScanPredicate,
    options: &ScanOptions,
    layouts: &LayoutCache,
) -> Result<PlannedScan> {
    let process = lake.process(process_id).await?;
    let clock = process_clock(lake, &process).await?;
    if predicate.impossible {
        return Ok(PlannedScan {
            clock,
            partitions: vec![],
        });
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
    let mut partitions = Vec::new();
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
        partitions.push(PlannedStream {
            stream_id_text: stream.stream_id.to_string(),
            layout: layouts.layout(process_id, &stream)?,
            blocks,
            listed,
        });
    }
    Ok(PlannedScan { clock, partitions })
}

#[cfg(test)]
mod tests {
    use super::*;

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
