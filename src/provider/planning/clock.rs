//! A process's clock: how event ticks become times, and the time bounds of a block.

use crate::error::{Error, Result};
use crate::format::{LatestTiming, TickConverter};
use crate::lake::{BlockRecord, Lake, ProcessRecord};

/// What the process's [`TickConverter`] is built from (a known or estimated frequency).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClockParams {
    pub start_ticks: i64,
    pub start_ns: i64,
    pub frequency: i64,
}

impl ClockParams {
    /// What `clock` was built from (its frequency as given or estimated).
    pub fn of(clock: &TickConverter) -> Self {
        Self {
            start_ticks: clock.start_ticks(),
            start_ns: clock.start_ns(),
            frequency: clock.frequency(),
        }
    }

    /// The converter.
    #[cfg_attr(not(feature = "codec"), allow(dead_code))]
    pub fn converter(&self) -> crate::format::FormatResult<TickConverter> {
        TickConverter::new(self.start_ticks, self.start_ns, self.frequency, None)
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
