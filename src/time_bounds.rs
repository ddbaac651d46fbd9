//! [`TimeBounds`]: an inclusive time range in nanoseconds since the epoch, either side open.
//!
//! Every range the crate handles is one of these: the bounds given to a table function, the
//! range of a Flight SQL request, the time filters the scan applies, the range `async_spans`
//! reports overlapping spans for. Bounds are inclusive on both sides, like SQL's
//! `time BETWEEN begin AND end` and micromegas's query ranges.

use std::fmt;

/// An inclusive range of ns since the epoch; `None` leaves a side open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TimeBounds {
    /// First instant in the range, if bounded.
    pub begin: Option<i64>,
    /// Last instant in the range, if bounded.
    pub end: Option<i64>,
}

impl TimeBounds {
    /// The whole timeline.
    pub const ALL: Self = Self {
        begin: None,
        end: None,
    };

    /// `[begin, end]`.
    pub const fn new(begin: Option<i64>, end: Option<i64>) -> Self {
        Self { begin, end }
    }

    /// Whether neither side is bounded.
    pub fn is_all(self) -> bool {
        self.begin.is_none() && self.end.is_none()
    }

    /// Whether no instant is in the range (`begin > end`).
    pub fn is_empty(self) -> bool {
        matches!((self.begin, self.end), (Some(b), Some(e)) if b > e)
    }

    /// The first instant, `i64::MIN` when open.
    pub fn lo(self) -> i64 {
        self.begin.unwrap_or(i64::MIN)
    }

    /// The last instant, `i64::MAX` when open.
    pub fn hi(self) -> i64 {
        self.end.unwrap_or(i64::MAX)
    }

    /// The instants in both ranges.
    pub fn intersect(self, other: Self) -> Self {
        Self {
            begin: max_opt(self.begin, other.begin),
            end: min_opt(self.end, other.end),
        }
    }

    /// Whether `t` is in the range.
    pub fn contains(self, t: i64) -> bool {
        self.lo() <= t && t <= self.hi()
    }

    /// Whether the inclusive interval `[first, last]` has an instant in the range.
    pub fn overlaps(self, first: i64, last: i64) -> bool {
        first <= self.hi() && last >= self.lo()
    }

    /// The range widened by `margin` ns on each bounded side (saturating).
    pub fn widen(self, margin: i64) -> Self {
        Self {
            begin: self.begin.map(|b| b.saturating_sub(margin)),
            end: self.end.map(|e| e.saturating_add(margin)),
        }
    }

    /// The bounds as a pair, both sides given (`[lo, hi]`), or `None` when unbounded.
    pub fn closed(self) -> Option<(i64, i64)> {
        (!self.is_all()).then(|| (self.lo(), self.hi()))
    }
}

impl From<(Option<i64>, Option<i64>)> for TimeBounds {
    fn from((begin, end): (Option<i64>, Option<i64>)) -> Self {
        Self { begin, end }
    }
}

impl fmt::Display for TimeBounds {
    /// `[2024-05-01T10:00:00Z, ..]`: RFC 3339 ends, `..` for an open side.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = |ns: Option<i64>| match ns {
            Some(ns) => chrono::DateTime::from_timestamp_nanos(ns)
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            None => "..".into(),
        };
        write!(f, "[{}, {}]", side(self.begin), side(self.end))
    }
}

/// A time in ns since the epoch from RFC 3339 text (or `YYYY-MM-DD HH:MM:SS[.f]+hh:mm`), as
/// the table functions accept it; `None` if it is neither or out of range.
pub fn parse_time(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .or_else(|_| chrono::DateTime::parse_from_str(s.trim(), "%Y-%m-%d %H:%M:%S%.f%:z"))
        .ok()?
        .timestamp_nanos_opt()
}

/// The larger of two optional lower bounds (`None` is unbounded).
pub(crate) fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// The smaller of two optional upper bounds (`None` is unbounded).
pub(crate) fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_keep_both_ends_inclusive() {
        let r = TimeBounds::new(Some(10), Some(20));
        assert!(r.contains(10) && r.contains(20) && !r.contains(21) && !r.contains(9));
        assert!(r.overlaps(20, 30) && r.overlaps(0, 10) && !r.overlaps(21, 30));
        assert_eq!(
            r.intersect(TimeBounds::new(Some(15), None)),
            TimeBounds::new(Some(15), Some(20))
        );
        assert!(r.intersect(TimeBounds::new(Some(21), None)).is_empty());
        assert_eq!(r.widen(5), TimeBounds::new(Some(5), Some(25)));
        assert_eq!(TimeBounds::ALL.widen(5), TimeBounds::ALL);
        assert_eq!(
            TimeBounds::new(Some(i64::MIN + 1), Some(i64::MAX - 1)).widen(10),
            TimeBounds::new(Some(i64::MIN), Some(i64::MAX)),
            "saturates"
        );
        assert!(TimeBounds::ALL.contains(i64::MIN) && TimeBounds::ALL.contains(i64::MAX));
        assert_eq!(TimeBounds::ALL.closed(), None);
        assert_eq!(TimeBounds::new(None, Some(3)).closed(), Some((i64::MIN, 3)));
        assert_eq!(
            TimeBounds::new(None, Some(0)).to_string(),
            "[.., 1970-01-01T00:00:00Z]"
        );
    }
}
