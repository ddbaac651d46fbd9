//! A Perfetto trace of a process's spans: [`TraceWriter`] writes the packets (`writer.rs`),
//! [`PerfettoTraceTable`] and [`PerfettoTraceExec`] serve them as the chunks of
//! `perfetto_trace_chunks` (`table.rs`).

mod table;
mod writer;

pub use table::{PerfettoTraceExec, PerfettoTraceTable, chunks_schema};
pub use writer::{CHUNK_SIZE, TraceWriter, decode_trace};
