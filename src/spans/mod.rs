//! Spans: one row per async span, its begin and end events paired inside the scan.
//!
//! [`AsyncSpansTable`] is the `async_spans(pid [, begin, end])` table; [`AsyncSpansExec`] pairs
//! the events of an `async_events` scan, its thread streams merged batch by batch in time order,
//! by `span_id` as they stream by: memory holds the spans open at a time, not the process.
//!
//! # Time ranges
//!
//! `async_spans(pid, begin, end)` returns every span that overlaps `[begin, end]` (inclusive):
//! a span that began before `begin` and ended inside, began inside and ended after `end`, or
//! covers the whole range, comes with its real begin and end times. Partners outside the range
//! are found by reading events up to [`ScanOptions::span_margin`](crate::provider::ScanOptions::span_margin)
//! before and after it (30 s by default). Beyond the margin the scan does not look, and says so:
//! - a span whose begin lies before `begin - margin` has `begin`, `begin_stream_id`,
//!   `duration` and `migrated` NULL (its name, depth, ids come from its end event);
//! - a span still open at `end + margin` has `end` NULL and `finished` NULL (unknown), unless
//!   the scan read to the end of the recording: then `finished` is false (it never finished).
//!
//! Without bounds the whole recording is read: every `begin` is known and `finished` is false
//! exactly for the spans that never ended. `WHERE begin >= x AND begin < y` and filters on
//! `end` narrow the events read the same way (with the margin on the side that needs it) and
//! are then applied by DataFusion as written.
//!
//! | file | holds |
//! |---|---|
//! | `columns.rs` | [`SpanColumn`], the schema |
//! | `table.rs` | [`AsyncSpansTable`]: filters that select whole spans go into the events scan |
//! | `exec.rs` | [`AsyncSpansExec`], the plan node |
//! | `merge.rs` | the scan's thread streams merged chunk by chunk, oldest first |
//! | `pairing.rs` | event order and the open-span map: begin and end paired by `span_id` |
//! | `range.rs` | the range's edges and margins |
//! | `output.rs` | output batches: one row per span, dictionary keys for strings |

mod columns;
mod exec;
mod merge;
mod output;
mod pairing;
mod range;
mod table;

pub use columns::{SpanColumn, async_spans_schema};
pub use exec::AsyncSpansExec;
#[cfg_attr(not(feature = "codec"), allow(unused_imports))]
pub(crate) use range::PairingRange;
pub use table::AsyncSpansTable;
