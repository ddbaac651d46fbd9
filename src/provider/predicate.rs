//! [`ScanPredicate`]: what the scan applies itself, combined from the filters DataFusion pushed
//! (each translated by [`super::filter_translation`]).
//!
//! A filter the scan understands is applied *exactly* (DataFusion drops it from the plan):
//!
//! | column | forms | applied by |
//! |---|---|---|
//! | `time` | `=`, `<`, `<=`, `>`, `>=`, `BETWEEN`, against constants (`now() - interval '5 minutes'`, timestamps, RFC 3339 strings) | block pruning in the metadata query and by tick bounds, then a per-row check |
//! | `stream_id` | `=`, `IN` (canonical lower-case hyphenated text: other spellings match no row, as in SQL) | stream selection before any block is listed |
//! | `event_type` | `=`, `<>`, `IN` | per-row check before any column work |
//! | `depth` | `=`, `<`, `<=`, `>`, `>=`, `BETWEEN` | per-row check |
//! | `span_id`, `parent_span_id` | `=`, `IN` | per-row check |
//! | `name`, `target` | `=`, `IN` | per-row check, once per span description and block |
//!
//! A comparison with `NULL` and the boolean literals `false`/`NULL` hold for no row; `true` for
//! every row. Casts are looked through only when they cannot change a value (a `Decimal128`
//! wide enough for every value of the column, not a narrower one).
//!
//! Anything else is left to DataFusion. DataFusion may rewrite a filter after the scan accepted
//! it (it simplifies `x = NULL OR …`, for example): a pushed filter the scan cannot translate is
//! handed back as a *residual* and evaluated above the scan, never dropped. This file only reads
//! expressions; it does no I/O.

use super::filter_translation::{Constraint, constants, translate};
use crate::format::{EventType, RowFilter};
use crate::time_bounds::TimeBounds;
use chrono::{DateTime, Utc};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use std::collections::BTreeSet;
use std::fmt;
use uuid::Uuid;

/// What the scan applies: a time range, a stream set and per-row checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanPredicate {
    /// Inclusive time bounds, ns since the epoch.
    pub time: TimeBounds,
    /// Streams to read; `None` for all.
    pub streams: Option<BTreeSet<Uuid>>,
    /// Checks on each event before its row is built (its `time` field mirrors `self.time`).
    pub row: RowFilter,
    /// Whether a filter can never hold (for example `event_type = 'nope'`).
    pub impossible: bool,
}

impl ScanPredicate {
    /// How DataFusion should treat a filter on the `async_events` table.
    pub fn support(filter: &Expr) -> TableProviderFilterPushDown {
        match translate(filter, &constants(None)) {
            Some(_) => TableProviderFilterPushDown::Exact,
            None => TableProviderFilterPushDown::Unsupported,
        }
    }

    /// The predicate of the filters DataFusion pushed into the scan (all must hold), and the
    /// *residual*: the pushed filters the scan cannot apply itself. DataFusion only pushes
    /// filters that [`support`](Self::support) accepted, but its optimizer may rewrite them
    /// afterwards (for example `x = NULL OR x = 'a'` into `NULL OR x = 'a'`); the caller must
    /// evaluate the residual above the scan. `now` is the query's start time, for `now()`.
    pub fn from_filters(filters: &[Expr], now: Option<DateTime<Utc>>) -> (Self, Vec<Expr>) {
        let evaluator = constants(now);
        let mut out = Self::default();
        let mut residual = Vec::new();
        for f in filters {
            match translate(f, &evaluator) {
                Some(c) => out.add(c),
                None => residual.push(f.clone()),
            }
        }
        out.row.time = out.time.closed();
        if out.row.matches_nothing()
            || out.streams.as_ref().is_some_and(BTreeSet::is_empty)
            || out.time.is_empty()
        {
            out.impossible = true;
        }
        (out, residual)
    }

    /// Narrows the time bounds to `bounds` (the table function's own range).
    pub fn with_time_bounds(mut self, bounds: TimeBounds) -> Self {
        self.add(Constraint::Time(bounds));
        self.row.time = self.time.closed();
        if self.time.is_empty() {
            self.impossible = true;
        }
        self
    }

    fn add(&mut self, c: Constraint) {
        fn intersect<T: Ord + Clone>(slot: &mut Option<Vec<T>>, set: BTreeSet<T>) {
            *slot = Some(match slot.take() {
                None => set.into_iter().collect(),
                Some(old) => old.into_iter().filter(|v| set.contains(v)).collect(),
            });
        }
        match c {
            Constraint::Time(bounds) => self.time = self.time.intersect(bounds),
            Constraint::Streams(set) => {
                self.streams = Some(match self.streams.take() {
                    None => set,
                    Some(old) => old.intersection(&set).copied().collect(),
                })
            }
            Constraint::EventTypes(set) => {
                let allowed: BTreeSet<EventType> = match self.row.event_type {
                    Some(t) => set.into_iter().filter(|s| *s == t).collect(),
                    None => set,
                };
                match allowed.len() {
                    0 => self.impossible = true,
                    1 => self.row.event_type = allowed.into_iter().next(),
                    _ => {}
                }
            }
            Constraint::Depth(lo, hi) => {
                let (old_lo, old_hi) = self.row.depth.unwrap_or((0, u32::MAX));
                self.row.depth = Some((old_lo.max(lo), old_hi.min(hi)));
            }
            Constraint::SpanIds(set) => intersect(&mut self.row.span_ids, set),
            Constraint::ParentSpanIds(set) => intersect(&mut self.row.parent_span_ids, set),
            Constraint::Names(set) => intersect(&mut self.row.names, set),
            Constraint::Targets(set) => intersect(&mut self.row.targets, set),
            Constraint::Always => {}
            Constraint::Never => self.impossible = true,
        }
    }
}

impl fmt::Display for ScanPredicate {
    /// The pushed filters, for EXPLAIN: `event_type=begin, depth=[0, 2], …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if self.impossible {
            parts.push("false".into());
        }
        if let Some(t) = self.row.event_type {
            parts.push(format!("event_type={}", t.as_str()));
        }
        if let Some((lo, hi)) = self.row.depth {
            parts.push(if lo == hi {
                format!("depth={lo}")
            } else {
                format!("depth=[{lo}, {hi}]")
            });
        }
        let list = |name: &str, v: &[String]| format!("{name} in ({})", v.join(", "));
        if let Some(ids) = &self.row.span_ids {
            let v: Vec<String> = ids.iter().map(i64::to_string).collect();
            parts.push(list("span_id", &v));
        }
        if let Some(ids) = &self.row.parent_span_ids {
            let v: Vec<String> = ids.iter().map(i64::to_string).collect();
            parts.push(list("parent_span_id", &v));
        }
        if let Some(names) = &self.row.names {
            let v: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
            parts.push(list("name", &v));
        }
        if let Some(targets) = &self.row.targets {
            let v: Vec<String> = targets.iter().map(|n| format!("'{n}'")).collect();
            parts.push(list("target", &v));
        }
        write!(f, "{}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{cast, col, lit};
    use datafusion::prelude::{in_list, now};
    use datafusion::scalar::ScalarValue;

    fn ts(ns: i64) -> Expr {
        lit(ScalarValue::TimestampNanosecond(
            Some(ns),
            Some("+00:00".into()),
        ))
    }

    fn pred(filters: Vec<Expr>) -> ScanPredicate {
        let (predicate, residual) = ScanPredicate::from_filters(&filters, None);
        assert!(residual.is_empty(), "not applied: {residual:?}");
        predicate
    }

    #[test]
    fn time_comparisons_become_inclusive_bounds() {
        assert_eq!(
            pred(vec![col("time").gt(ts(10))]).time,
            TimeBounds::new(Some(11), None)
        );
        assert_eq!(
            pred(vec![col("time").gt_eq(ts(10))]).time,
            TimeBounds::new(Some(10), None)
        );
        assert_eq!(
            pred(vec![ts(10).lt(col("time"))]).time,
            TimeBounds::new(Some(11), None),
            "literal on the left"
        );
        assert_eq!(
            pred(vec![col("time").lt(ts(10)), col("time").gt_eq(ts(3))]).time,
            TimeBounds::new(Some(3), Some(9))
        );
        assert_eq!(
            pred(vec![col("time").between(ts(3), ts(7))]).time,
            TimeBounds::new(Some(3), Some(7))
        );
        assert_eq!(pred(vec![col("time").eq(ts(5))]).row.time, Some((5, 5)));
        let p = pred(vec![col("time").gt(ts(9)), col("time").lt(ts(5))]);
        assert!(p.impossible);
        // Other units and RFC 3339 strings.
        let ms = lit(ScalarValue::TimestampMillisecond(Some(2), None));
        assert_eq!(
            pred(vec![col("time").lt_eq(ms)]).time,
            TimeBounds::new(None, Some(2_000_000))
        );
        let s = lit("1970-01-01T00:00:01Z");
        assert_eq!(
            pred(vec![col("time").gt_eq(s)]).time,
            TimeBounds::new(Some(1_000_000_000), None)
        );
    }

    #[test]
    fn now_minus_an_interval_is_a_constant_of_the_query() {
        let start = DateTime::parse_from_rfc3339("2026-01-01T00:10:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let five_minutes = lit(ScalarValue::new_interval_mdn(0, 0, 300_000_000_000));
        let f = col("time").gt(now() - five_minutes);
        assert_eq!(
            ScanPredicate::support(&f),
            TableProviderFilterPushDown::Exact
        );
        let (p, _) = ScanPredicate::from_filters(&[f], Some(start));
        let expected = DateTime::parse_from_rfc3339("2026-01-01T00:05:00Z")
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap();
        assert_eq!(p.time, TimeBounds::new(Some(expected + 1), None));
    }

    #[test]
    fn stream_ids_select_streams() {
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let p = pred(vec![col("stream_id").eq(lit(a.to_string()))]);
        assert_eq!(p.streams, Some([a].into()));
        let p = pred(vec![
            in_list(
                col("stream_id"),
                vec![lit(a.to_string()), lit(b.to_string())],
                false,
            ),
            cast(col("stream_id"), DataType::Utf8).eq(lit(b.to_string())),
        ]);
        assert_eq!(p.streams, Some([b].into()));
        assert!(pred(vec![col("stream_id").eq(lit("not-a-uuid"))]).impossible);
        // Other spellings of a UUID are other strings: SQL equality matches no stream_id.
        let upper = a.to_string().to_uppercase();
        assert!(pred(vec![col("stream_id").eq(lit(upper.clone()))]).impossible);
        assert!(pred(vec![col("stream_id").eq(lit(a.simple().to_string()))]).impossible);
        let p = pred(vec![in_list(
            col("stream_id"),
            vec![lit(upper), lit(b.to_string())],
            false,
        )]);
        assert_eq!(p.streams, Some([b].into()));
    }

    #[test]
    fn boolean_and_null_literals_are_applied_not_dropped() {
        let null = || lit(ScalarValue::Boolean(None));
        assert!(pred(vec![null()]).impossible, "NULL keeps no row");
        assert!(pred(vec![lit(false)]).impossible);
        assert!(!pred(vec![lit(true)]).impossible);
        assert!(pred(vec![lit(ScalarValue::Null)]).impossible);
        // `name IN ('a', NULL) OR 'b' = name` after simplification.
        let p = pred(vec![
            col("name")
                .eq(lit("a"))
                .or(null())
                .or(lit("b").eq(col("name"))),
        ]);
        assert_eq!(p.row.names, Some(vec!["a".into(), "b".into()]));
        assert!(!pred(vec![col("name").eq(lit("a")).or(lit(true))]).impossible);
        assert_eq!(
            pred(vec![col("name").eq(lit("a")).or(lit(true))]).row.names,
            None
        );
        // Untyped NULLs in lists.
        let p = pred(vec![in_list(
            col("name"),
            vec![lit("a"), lit(ScalarValue::Null)],
            false,
        )]);
        assert_eq!(p.row.names, Some(vec!["a".into()]));
        assert!(pred(vec![col("block_id").not_eq(lit(ScalarValue::Utf8(None)))]).impossible);
    }

    #[test]
    fn what_the_scan_cannot_apply_comes_back_as_residual() {
        let filters = vec![
            col("name").eq(lit("a")),
            col("name").like(lit("a%")),
            col("depth").eq(col("line")),
        ];
        let (p, residual) = ScanPredicate::from_filters(&filters, None);
        assert_eq!(p.row.names, Some(vec!["a".into()]));
        assert_eq!(residual, filters[1..].to_vec());
    }

    #[test]
    fn decimal_casts_are_looked_through_only_when_wide_enough() {
        let dec = |p, s| DataType::Decimal128(p, s);
        let through = |c: &str, t: DataType| {
            ScanPredicate::support(&cast(cast(col(c), t), DataType::Int64).eq(lit(5i64)))
        };
        use TableProviderFilterPushDown::{Exact, Unsupported};
        assert_eq!(through("span_id", dec(20, 0)), Exact);
        assert_eq!(through("span_id", dec(38, 10)), Exact);
        assert_eq!(through("span_id", dec(2, 0)), Unsupported);
        assert_eq!(through("span_id", dec(20, 2)), Unsupported);
        assert_eq!(through("depth", dec(10, 0)), Exact);
        assert_eq!(through("depth", dec(1, 0)), Unsupported);
        assert_eq!(
            through("depth", dec(12, -3)),
            Unsupported,
            "rounds to thousands"
        );
        let try_dec = datafusion::logical_expr::try_cast(col("depth"), dec(1, 0));
        assert_eq!(
            ScanPredicate::support(&cast(try_dec, DataType::Int64).gt_eq(lit(10i64))),
            Unsupported
        );
        assert_eq!(
            ScanPredicate::support(&cast(col("depth"), DataType::Int32).eq(lit(1i32))),
            Unsupported
        );
    }

    #[test]
    fn row_checks() {
        let p = pred(vec![
            col("event_type").eq(lit("begin")),
            col("depth").lt_eq(lit(2i64)),
        ]);
        assert_eq!(p.row.event_type, Some(EventType::Begin));
        assert_eq!(p.row.depth, Some((0, 2)));
        assert!(pred(vec![col("event_type").eq(lit("start"))]).impossible);
        assert_eq!(
            pred(vec![col("event_type").not_eq(lit("begin"))])
                .row
                .event_type,
            Some(EventType::End)
        );
        assert!(pred(vec![col("depth").lt(lit(0i64))]).impossible);
        assert_eq!(
            pred(vec![col("depth").gt(lit(-5i64))]).row.depth,
            Some((0, u32::MAX))
        );
        assert_eq!(
            pred(vec![col("depth").between(lit(1i64), lit(3i64))])
                .row
                .depth,
            Some((1, 3))
        );
        let p = pred(vec![
            in_list(col("span_id"), vec![lit(3i64), lit(1i64)], false),
            col("span_id").eq(lit(3i64)),
        ]);
        assert_eq!(p.row.span_ids, Some(vec![3]));
        let p = pred(vec![
            col("span_id")
                .eq(lit(1i64))
                .or(col("span_id").eq(lit(2i64))),
        ]);
        assert_eq!(
            p.row.span_ids,
            Some(vec![1, 2]),
            "short IN lists come as OR"
        );
        let p = pred(vec![col("name").eq(lit("x")), col("target").eq(lit("t"))]);
        assert_eq!(
            (p.row.names, p.row.targets),
            (Some(vec!["x".into()]), Some(vec!["t".into()]))
        );
        assert!(pred(vec![col("name").eq(lit(ScalarValue::Utf8(None)))]).impossible);
    }

    #[test]
    fn what_the_scan_does_not_apply_stays_with_datafusion() {
        let unsupported = [
            col("name").like(lit("a%")),
            col("depth").eq(col("line")),
            col("time").not_between(ts(1), ts(2)),
            col("span_id").gt(lit(5i64)),
            col("filename").eq(lit("x")),
            col("event_type")
                .eq(lit("begin"))
                .or(col("depth").eq(lit(1i64))),
            in_list(col("depth"), vec![lit(1i64)], false),
            cast(col("time"), DataType::Date32).eq(lit(ScalarValue::Date32(Some(1)))),
        ];
        for f in unsupported {
            assert_eq!(
                ScanPredicate::support(&f),
                TableProviderFilterPushDown::Unsupported,
                "{f}"
            );
        }
    }
}
