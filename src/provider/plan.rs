//! Scan planning: from a process id and a [`ScanPredicate`] to the blocks each partition reads.
//!
//! Blocks are pruned twice before any is fetched: in the metadata query, by their wall-clock
//! bounds widened by a safety margin (event times come from ticks, block bounds from the wall
//! clock), then precisely by their tick bounds converted with the process's clock. Each stream
//! becomes one partition whose blocks are in recording order, so every partition is sorted by
//! time.

use super::ScanOptions;
use super::predicate::ScanPredicate;
use crate::error::{Error, Result};
use crate::format::{StreamLayout, TickConverter};
use crate::lake::{BlockRecord, Lake, TimeRange};
use chrono::DateTime;
use std::collections::BTreeMap;
use std::sync::Arc;
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
    /// All `cpu` blocks of the process (for EXPLAIN's `blocks=k/n`).
    pub total_blocks: i64,
}

impl PlannedScan {
    /// Blocks the scan will read.
    pub fn block_count(&self) -> usize {
        self.partitions.iter().map(|p| p.blocks.len()).sum()
    }
}

/// A block's event-time bounds, from its tick bounds, widened by a microsecond on each side for
/// rounding.
pub(crate) fn block_time_bounds(clock: &TickConverter, block: &BlockRecord) -> (i64, i64) {
    (
        clock.delta_to_ns(block.begin_ticks).saturating_sub(1_000),
        clock.delta_to_ns(block.end_ticks).saturating_add(1_000),
    )
}

pub(crate) async fn plan_scan(
    lake: &Lake,
    process_id: Uuid,
    predicate: &ScanPredicate,
    options: &ScanOptions,
) -> Result<PlannedScan> {
    let process = lake.process(process_id).await?;
    let clock = lake.tick_converter(&process).await?;
    if predicate.impossible {
        return Ok(PlannedScan {
            clock,
            partitions: vec![],
            total_blocks: lake.count_cpu_blocks(process_id).await?,
        });
    }
    let only: Option<Vec<Uuid>> = predicate
        .streams
        .as_ref()
        .map(|s| s.iter().copied().collect());
    let streams = lake.cpu_streams(process_id, only.as_deref()).await?;
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
        blocks.retain(|b| {
            let (first, last) = block_time_bounds(&clock, b);
            first <= hi && last >= lo
        });
        blocks.sort_by_key(|b| (b.begin_ticks, b.object_offset));
        let layout =
            StreamLayout::from_cbor(&stream.dependencies_metadata, &stream.objects_metadata)
                .map_err(|source| Error::StreamMetadata {
                    process_id,
                    stream_id: stream.stream_id,
                    source,
                })?;
        partitions.push(PlannedStream {
            stream_id_text: stream.stream_id.to_string(),
            layout: Arc::new(layout),
            blocks,
            listed,
        });
    }
    Ok(PlannedScan {
        clock,
        partitions,
        total_blocks: lake.count_cpu_blocks(process_id).await?,
    })
}
