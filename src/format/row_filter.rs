//! [`RowFilter`]: which async events become rows, judged on an event's raw fields before any
//! column work ([`admit`]).

use super::builder::{EventRow, ScopeKeys};
use super::dependencies::{read_u32, read_u64};
use super::layout::{AsyncEventLayout, EventType};
use super::ticks::TickConverter;

/// Which rows to keep. Checked on the raw fields, before any column work. Bounds are inclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowFilter {
    /// Only `begin` or only `end` rows.
    pub event_type: Option<EventType>,
    /// Inclusive depth range.
    pub depth: Option<(u32, u32)>,
    /// Inclusive time range, ns since the epoch.
    pub time: Option<(i64, i64)>,
    /// Allowed span ids, sorted.
    pub span_ids: Option<Vec<i64>>,
    /// Allowed parent span ids, sorted.
    pub parent_span_ids: Option<Vec<i64>>,
    /// Allowed names.
    pub names: Option<Vec<String>>,
    /// Allowed targets.
    pub targets: Option<Vec<String>>,
}

impl RowFilter {
    /// A filter that keeps every row.
    pub fn all() -> Self {
        Self::default()
    }

    /// Whether the filter needs span names or targets.
    pub fn needs_strings(&self) -> bool {
        self.names.is_some() || self.targets.is_some()
    }

    /// Whether no row can pass (an empty set or an empty range).
    pub fn matches_nothing(&self) -> bool {
        let empty_range = |r: Option<(i64, i64)>| r.is_some_and(|(lo, hi)| lo > hi);
        empty_range(self.time)
            || self.depth.is_some_and(|(lo, hi)| lo > hi)
            || self.span_ids.as_ref().is_some_and(Vec::is_empty)
            || self.parent_span_ids.as_ref().is_some_and(Vec::is_empty)
            || self.names.as_ref().is_some_and(Vec::is_empty)
            || self.targets.as_ref().is_some_and(Vec::is_empty)
    }

    /// Whether a scope of this name and target passes the filter's names and targets.
    pub fn keeps_scope(&self, name: &str, target: &str) -> bool {
        self.names
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == name))
            && self
                .targets
                .as_ref()
                .is_none_or(|targets| targets.iter().any(|t| t == target))
    }
}

/// The fixed fields of an async event record, read at its layout's offsets.
#[derive(Debug, Clone, Copy)]
pub(super) struct RawEvent {
    pub event_type: EventType,
    pub depth: u32,
    pub span_id: i64,
    pub parent_span_id: i64,
    pub ticks: i64,
}

impl RawEvent {
    #[inline(always)]
    pub(super) fn read(l: &AsyncEventLayout, record: &[u8]) -> Self {
        Self {
            event_type: l.event_type,
            depth: read_u32(record, l.depth).unwrap_or(0),
            span_id: read_u64(record, l.span_id) as i64,
            parent_span_id: read_u64(record, l.parent_span_id) as i64,
            ticks: read_u64(record, l.time) as i64,
        }
    }
}

/// Filtering: the row of an async event if it passes `filter` on its own fields (names and
/// targets are judged once per scope). The time is converted from ticks only when the column
/// or the filter needs it, and after the cheaper tests.
#[inline(always)]
pub(super) fn admit(
    filter: &RowFilter,
    raw: RawEvent,
    clock: &TickConverter,
    need_time: bool,
) -> Option<EventRow> {
    if filter.event_type.is_some_and(|t| t != raw.event_type)
        || filter
            .depth
            .is_some_and(|(lo, hi)| raw.depth < lo || raw.depth > hi)
        || filter
            .span_ids
            .as_ref()
            .is_some_and(|s| s.binary_search(&raw.span_id).is_err())
        || filter
            .parent_span_ids
            .as_ref()
            .is_some_and(|s| s.binary_search(&raw.parent_span_id).is_err())
    {
        return None;
    }
    let time = if need_time {
        clock.ticks_to_ns(raw.ticks)
    } else {
        0
    };
    if filter.time.is_some_and(|(lo, hi)| time < lo || time > hi) {
        return None;
    }
    Some(EventRow {
        time,
        event_type: raw.event_type,
        span_id: raw.span_id,
        parent_span_id: raw.parent_span_id,
        depth: raw.depth,
        scope: ScopeKeys::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admit_judges_the_raw_fields_and_converts_time_only_when_needed() {
        let clock = TickConverter::new(0, 1_000, 1_000_000_000, None).unwrap();
        let raw = RawEvent {
            event_type: EventType::End,
            depth: 3,
            span_id: 7,
            parent_span_id: 5,
            ticks: 2_000,
        };
        let all = RowFilter::all();
        let row = admit(&all, raw, &clock, false).unwrap();
        assert_eq!((row.time, row.span_id, row.depth), (0, 7, 3));
        assert_eq!(admit(&all, raw, &clock, true).unwrap().time, 1_000 + 2_000);

        let keeps = |filter: RowFilter| admit(&filter, raw, &clock, true).is_some();
        assert!(keeps(RowFilter {
            event_type: Some(EventType::End),
            depth: Some((3, 3)),
            time: Some((3_000, 3_000)),
            span_ids: Some(vec![1, 7]),
            parent_span_ids: Some(vec![5]),
            ..RowFilter::all()
        }));
        assert!(!keeps(RowFilter {
            event_type: Some(EventType::Begin),
            ..RowFilter::all()
        }));
        assert!(!keeps(RowFilter {
            depth: Some((4, 9)),
            ..RowFilter::all()
        }));
        assert!(!keeps(RowFilter {
            span_ids: Some(vec![6, 8]),
            ..RowFilter::all()
        }));
        assert!(!keeps(RowFilter {
            parent_span_ids: Some(vec![]),
            ..RowFilter::all()
        }));
        assert!(!keeps(RowFilter {
            time: Some((3_001, i64::MAX)),
            ..RowFilter::all()
        }));
    }
}
