//! Lints: SQL recipes over `async_spans` that find what usually goes wrong in async code.
//!
//! Each lint is plain SQL (the README prints them, so notebook users can run them as they are);
//! `async-events lint` runs them all and prints one table per lint.
//!
//! - **never finished**: spans with no end in a recording read to its end — futures dropped
//!   before completion (`select!` losers, timeouts, cancelled tasks) — with their age at the end
//!   of the recording (the last begin or end of any span read);
//! - **children outliving their parent**: a span that ended after its parent span ended (work
//!   spawned with the parent's context and left running);
//! - **slow outliers**: spans at least 10 times slower than their name's median (and 1 ms
//!   slower), for names with at least 10 finished spans, the 5 slowest per name, with the name's
//!   p50 and p99;
//! - **repeated span ids**: a span id begun or ended more than once (ids reused by a producer,
//!   or damaged data). `async_spans` never merges such events: it keeps every begin and end in a
//!   row of its own and counts them (`span_ids_repeated` in EXPLAIN ANALYZE).

use uuid::Uuid;

/// One lint: a title and the SQL that lists what it found (no row: nothing found).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lint {
    /// Short name (`never_finished`, `outliving_children`, `slow_outliers`).
    pub name: &'static str,
    /// What the rows are.
    pub title: &'static str,
    /// The query.
    pub sql: String,
}

/// The `async_spans(...)` call of a process and optional range (RFC 3339 strings).
fn spans(process_id: Uuid, begin: Option<&str>, end: Option<&str>) -> String {
    match (begin, end) {
        (None, None) => format!("async_spans('{process_id}')"),
        (b, e) => {
            let arg = |t: Option<&str>| t.map_or("NULL".to_string(), |t| format!("'{t}'"));
            format!("async_spans('{process_id}', {}, {})", arg(b), arg(e))
        }
    }
}

/// The lints of a process, optionally within a range (RFC 3339 `begin`/`end`).
pub fn lints(process_id: Uuid, begin: Option<&str>, end: Option<&str>) -> Vec<Lint> {
    let events = spans(process_id, begin, end).replacen("async_spans", "async_events", 1);
    let spans = spans(process_id, begin, end);
    vec![
        Lint {
            name: "never_finished",
            title: "Spans that never finished (futures dropped before completion)",
            sql: format!(
                "WITH s AS (SELECT * FROM {spans}), \
                 last AS (SELECT max(coalesce(\"end\", begin)) AS t FROM s) \
                 SELECT s.name, s.depth, s.span_id, s.parent_span_id, s.begin, \
                        round(CAST(last.t - s.begin AS BIGINT) / 1e6, 3) AS age_ms \
                 FROM s CROSS JOIN last WHERE s.finished = false \
                 ORDER BY age_ms DESC, s.span_id"
            ),
        },
        Lint {
            name: "outliving_children",
            title: "Children that ended after their parent ended",
            sql: format!(
                "SELECT c.name AS child, p.name AS parent, c.span_id, p.span_id AS parent_span_id, \
                        round(CAST(c.\"end\" - p.\"end\" AS BIGINT) / 1e6, 3) AS outlived_parent_by_ms \
                 FROM {spans} c JOIN {spans} p ON c.parent_span_id = p.span_id \
                 WHERE c.\"end\" > p.\"end\" \
                 ORDER BY outlived_parent_by_ms DESC, c.span_id"
            ),
        },
        Lint {
            name: "slow_outliers",
            title: "Slow outliers: at least 10 times their name's median",
            sql: format!(
                "WITH s AS (SELECT name, span_id, CAST(duration AS BIGINT) AS ns \
                            FROM {spans} WHERE duration IS NOT NULL), \
                 stats AS (SELECT name, count(*) AS spans, median(ns) AS p50, \
                                  approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY ns) AS p99 \
                           FROM s GROUP BY name), \
                 ranked AS (SELECT s.name, s.span_id, s.ns, stats.spans, stats.p50, stats.p99, \
                                   row_number() OVER (PARTITION BY s.name ORDER BY s.ns DESC, s.span_id) AS rank \
                            FROM s JOIN stats ON s.name = stats.name \
                            WHERE stats.spans >= 10 AND s.ns >= 10 * stats.p50 AND s.ns >= stats.p50 + 1000000) \
                 SELECT name, span_id, round(ns / 1e6, 3) AS duration_ms, \
                        round(p50 / 1e6, 3) AS name_p50_ms, round(p99 / 1e6, 3) AS name_p99_ms, \
                        round(CAST(ns AS DOUBLE) / p50, 1) AS times_p50, spans AS name_spans \
                 FROM ranked WHERE rank <= 5 ORDER BY times_p50 DESC, span_id"
            ),
        },
        Lint {
            name: "repeated_span_ids",
            title: "Span ids begun or ended more than once",
            sql: format!(
                "SELECT span_id, event_type, count(*) AS events, min(time) AS first, \
                        max(time) AS last, count(DISTINCT name) AS names \
                 FROM {events} GROUP BY span_id, event_type HAVING count(*) > 1 \
                 ORDER BY events DESC, span_id, event_type"
            ),
        },
    ]
}
