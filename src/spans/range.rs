//! The range rules of span tables (see the module documentation of [`super`]): which spans a
//! range asks for ([`PairingRange`]) and which events must be read to find both ends of those
//! spans ([`EventsRead`]: the range widened by the span margin, narrowed by filters on `begin`
//! and `end`).

use crate::time_bounds::TimeBounds;

/// How the events read relate to the spans asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct PairingRange {
    /// Only spans overlapping this inclusive range are emitted.
    pub overlap: TimeBounds,
    /// Whether the events read reach the end of the recording: a span with no end then never
    /// finished (`false`); otherwise its end may lie beyond what was read (`NULL`).
    pub reads_to_end: bool,
}

impl PairingRange {
    /// Whether a span with these ends (`None`: not read) overlaps the range asked for.
    pub fn overlaps(&self, begin: Option<i64>, end: Option<i64>) -> bool {
        begin.is_none_or(|b| b <= self.overlap.hi()) && end.is_none_or(|e| e >= self.overlap.lo())
    }
}

/// The events a span table reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventsRead {
    bounds: TimeBounds,
    margin: i64,
}

impl EventsRead {
    /// The events around the spans overlapping `overlap`: `margin` ns before and after it.
    pub fn around(overlap: TimeBounds, margin: i64) -> Self {
        Self {
            bounds: overlap.widen(margin),
            margin,
        }
    }

    /// Only spans beginning within `range` are wanted: both their events lie in
    /// `[range.begin, range.end + margin]`.
    pub fn begin_within(&mut self, range: TimeBounds) {
        let read = TimeBounds::new(
            range.begin,
            range.end.map(|e| e.saturating_add(self.margin)),
        );
        self.bounds = self.bounds.intersect(read);
    }

    /// Only spans ending within `range` are wanted: both their events lie in
    /// `[range.begin - margin, range.end]`.
    pub fn end_within(&mut self, range: TimeBounds) {
        let read = TimeBounds::new(
            range.begin.map(|b| b.saturating_sub(self.margin)),
            range.end,
        );
        self.bounds = self.bounds.intersect(read);
    }

    /// The time range of the events to read.
    pub fn bounds(&self) -> TimeBounds {
        self.bounds
    }
}
