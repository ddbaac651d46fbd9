//! Thread spans: the scopes (`#[span_fn]` on plain functions, `span_scope!`) each thread entered
//! and left, paired into one row per span, as micromegas's `thread_spans` view has them.
//!
//! - [`ThreadSpansTable`] (`table.rs`): `thread_spans(process_id [, begin, end])` (every thread,
//!   with `stream_id`, `thread_name` and `finished`) and `view_instance('thread_spans',
//!   stream_id)` (micromegas 0.33's twelve columns);
//! - [`ThreadSpansExec`] (`exec.rs`): each partition reads whole streams, block by block;
//! - `process_spans(process_id, span_types)` (`process_spans.rs`): thread and async spans
//!   together, as micromegas's table function has them;
//! - the stack pairing (`call_tree.rs`) and the rows (`columns.rs`).
//!
//! Span ids are micromegas's: the stream-wide index of the begin event (the block's
//! `object_offset` plus the event's index in the block); each chain of contiguous blocks has a
//! root row (id -1, depth 0) standing for the thread.

mod call_tree;
mod columns;
mod exec;
mod process_spans;
mod table;

pub use call_tree::Repairs;
pub use columns::{Flavor, thread_spans_schema};
pub use exec::ThreadSpansExec;
#[cfg_attr(not(feature = "codec"), allow(unused_imports))]
pub(crate) use exec::{StreamPlan, ThreadSpansParts};
pub use process_spans::{ProcessSpansTable, SpanTypes};
pub use table::{ThreadSpansOf, ThreadSpansTable};
