//! Fixtures shared by the integration tests: blocks recorded by the real micromegas producers,
//! encoded the way micromegas's sink and ingestion store them.
#![allow(dead_code, unused_macros)]

/// Runs the same async test body on the SQLite and the PostgreSQL lake, as `name::sqlite` and
/// `name::postgres` (use `#[macro_use] mod common;`).
macro_rules! on_both {
    ($(async fn $name:ident($backend:ident: Backend) $body:block)*) => {$(
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() { run(Backend::Sqlite).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() { run(Backend::Postgres).await }
            async fn run($backend: Backend) $body
        }
    )*};
}

pub mod counted_store;
pub mod lakes;
pub mod logs;
pub mod producer;
pub mod realistic;
pub mod reference;
pub mod rng;
pub mod scripted;
pub mod spans_workload;
pub mod sql;
pub mod thread_workload;
pub mod workload;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type, TimestampNanosecondType, UInt32Type};

/// One output row, read back from Arrow by column name (columns absent from the batch are
/// left at their defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Row {
    pub stream_id: String,
    pub block_id: String,
    pub time: i64,
    pub event_type: String,
    pub span_id: i64,
    pub parent_span_id: i64,
    pub depth: u32,
    pub hash: u32,
    pub name: String,
    pub filename: String,
    pub target: String,
    pub line: u32,
    pub properties: Vec<(String, String)>,
}

fn strings(batch: &RecordBatch, name: &str) -> Option<Vec<String>> {
    let col = batch.column_by_name(name)?;
    let col = cast(col, &DataType::Utf8).unwrap();
    let col = col.as_string::<i32>();
    Some((0..col.len()).map(|i| col.value(i).to_owned()).collect())
}

fn u32s(batch: &RecordBatch, name: &str) -> Option<Vec<u32>> {
    let col = batch.column_by_name(name)?;
    Some(col.as_primitive::<UInt32Type>().values().to_vec())
}

fn i64s(batch: &RecordBatch, name: &str) -> Option<Vec<i64>> {
    let col = batch.column_by_name(name)?;
    match col.data_type() {
        DataType::Timestamp(..) => Some(
            col.as_primitive::<TimestampNanosecondType>()
                .values()
                .to_vec(),
        ),
        _ => Some(col.as_primitive::<Int64Type>().values().to_vec()),
    }
}

/// Reads batches back into rows.
pub fn rows(batches: &[RecordBatch]) -> Vec<Row> {
    let mut out = Vec::new();
    for batch in batches {
        let n = batch.num_rows();
        let s = |name| strings(batch, name);
        let (stream_id, block_id, event_type, name, filename, target) = (
            s("stream_id"),
            s("block_id"),
            s("event_type"),
            s("name"),
            s("filename"),
            s("target"),
        );
        let (time, span_id, parent) = (
            i64s(batch, "time"),
            i64s(batch, "span_id"),
            i64s(batch, "parent_span_id"),
        );
        let (depth, hash, line) = (
            u32s(batch, "depth"),
            u32s(batch, "hash"),
            u32s(batch, "line"),
        );
        let props = batch
            .column_by_name("properties")
            .map(|c| c.as_map().clone());
        for i in 0..n {
            let get_s =
                |v: &Option<Vec<String>>| v.as_ref().map(|v| v[i].clone()).unwrap_or_default();
            out.push(Row {
                stream_id: get_s(&stream_id),
                block_id: get_s(&block_id),
                time: time.as_ref().map_or(0, |v| v[i]),
                event_type: get_s(&event_type),
                span_id: span_id.as_ref().map_or(0, |v| v[i]),
                parent_span_id: parent.as_ref().map_or(0, |v| v[i]),
                depth: depth.as_ref().map_or(0, |v| v[i]),
                hash: hash.as_ref().map_or(0, |v| v[i]),
                name: get_s(&name),
                filename: get_s(&filename),
                target: get_s(&target),
                line: line.as_ref().map_or(0, |v| v[i]),
                properties: props
                    .as_ref()
                    .map(|m| {
                        let entries = m.value(i);
                        let keys = entries.column(0).as_string::<i32>();
                        let values = entries.column(1).as_string::<i32>();
                        (0..entries.len())
                            .map(|j| (keys.value(j).to_owned(), values.value(j).to_owned()))
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
    }
    out
}

/// The scope hash as micromegas documents it, computed independently of the crate.
pub fn expected_hash(name: &str, filename: &str, target: &str, line: u32) -> u32 {
    use xxhash_rust::xxh32::xxh32;
    let h = xxh32(name.as_bytes(), 0);
    let h = xxh32(filename.as_bytes(), h);
    let h = xxh32(target.as_bytes(), h);
    xxh32(&line.to_le_bytes(), h)
}
