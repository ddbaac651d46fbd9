//! Arrow columns of metadata rows: [`MetadataRow`] builds any column of a table, by name, from a
//! slice of its rows, so that a scan builds only the projected columns.

use super::schema::{PROCESS_PREFIX, STREAM_PREFIX};
use crate::lake::{BlockListing, ProcessListing, ProcessRecord, StreamListing, StreamRecord};
use crate::properties::JsonbSets;
use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    ArrayRef, BinaryArray, Int32Array, Int64Array, ListBuilder, RecordBatch, RecordBatchOptions,
    StringArray, StringBuilder, TimestampNanosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef};
use datafusion::common::{Result, internal_err};
use std::sync::Arc;
use uuid::Uuid;

/// A row of a metadata listing, turned into Arrow columns.
pub(super) trait MetadataRow: Send + Sized + 'static {
    /// Bytes of the row's strings and binaries (lists and map entries included): what the
    /// 32-bit offsets of Arrow's string and binary columns must address.
    fn text_bytes(&self) -> usize;

    /// The column `name` (a name of the table's schema) of `rows`.
    fn column(rows: &[Self], name: &str) -> Result<ArrayRef>;
}

/// The batch of `rows` with the columns of `schema` (a projection of the table's schema).
pub(super) fn record_batch<R: MetadataRow>(rows: &[R], schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| R::column(rows, f.name()))
        .collect::<Result<Vec<_>>>()?;
    // The row count, for a projection without columns (`count(*)`).
    let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &options,
    )?)
}

/// Text bytes of an id as the tables show it (hyphenated).
const ID_BYTES: usize = 36;

fn properties_bytes(properties: &[(String, String)]) -> usize {
    properties.iter().map(|(k, v)| k.len() + v.len()).sum()
}

fn process_bytes(p: &ProcessRecord) -> usize {
    2 * ID_BYTES
        + p.exe.len()
        + p.username.len()
        + p.realname.len()
        + p.computer.len()
        + p.distro.len()
        + p.cpu_brand.len()
        + properties_bytes(&p.properties)
}

fn stream_bytes(s: &StreamRecord, format: &str) -> usize {
    2 * ID_BYTES
        + s.dependencies_metadata.len()
        + s.objects_metadata.len()
        + s.tags.iter().map(String::len).sum::<usize>()
        + properties_bytes(&s.properties)
        + format.len()
}

impl MetadataRow for ProcessListing {
    fn text_bytes(&self) -> usize {
        process_bytes(&self.process)
    }

    fn column(rows: &[Self], name: &str) -> Result<ArrayRef> {
        let column = match name {
            "process_id" => ids(rows, |r| Some(r.process.process_id)),
            "last_update_time" => times(rows, |r| r.last_update_time),
            "last_block_end_ticks" => i64s(rows, |r| Some(r.last_block_end_ticks)),
            "last_block_end_time" => times(rows, |r| Some(r.last_block_end_time)),
            _ => process_column(rows, name, |r| Some((&r.process, r.insert_time)))?,
        };
        unknown_if_none(column, "processes", name)
    }
}

impl MetadataRow for StreamListing {
    fn text_bytes(&self) -> usize {
        stream_bytes(&self.stream, &self.format)
    }

    fn column(rows: &[Self], name: &str) -> Result<ArrayRef> {
        let column = match name {
            "stream_id" => ids(rows, |r| Some(r.stream.stream_id)),
            "process_id" => ids(rows, |r| Some(r.stream.process_id)),
            "last_update_time" => times(rows, |r| r.last_update_time),
            _ => stream_column(rows, name, |r| {
                Some((&r.stream, r.insert_time, r.format.as_str()))
            })?,
        };
        unknown_if_none(column, "streams", name)
    }
}

impl MetadataRow for BlockListing {
    fn text_bytes(&self) -> usize {
        3 * ID_BYTES
            + self
                .stream
                .as_ref()
                .map_or(0, |s| stream_bytes(&s.stream, &s.format))
            + self
                .process
                .as_ref()
                .map_or(0, |p| process_bytes(&p.process))
    }

    fn column(rows: &[Self], name: &str) -> Result<ArrayRef> {
        let column = if let Some(name) = name.strip_prefix(STREAM_PREFIX) {
            stream_column(rows, name, |r| {
                let s = r.stream.as_ref()?;
                Some((&s.stream, s.insert_time, s.format.as_str()))
            })?
        } else if let Some(name) = name.strip_prefix(PROCESS_PREFIX) {
            process_column(rows, name, |r| {
                let p = r.process.as_ref()?;
                Some((&p.process, p.insert_time))
            })?
        } else {
            match name {
                "block_id" => ids(rows, |r| Some(r.block.block_id)),
                "stream_id" => ids(rows, |r| Some(r.block.stream_id)),
                "process_id" => ids(rows, |r| Some(r.block.process_id)),
                "begin_time" => times(rows, |r| Some(r.block.begin_time)),
                "begin_ticks" => i64s(rows, |r| Some(r.block.begin_ticks)),
                "end_time" => times(rows, |r| Some(r.block.end_time)),
                "end_ticks" => i64s(rows, |r| Some(r.block.end_ticks)),
                "nb_objects" => Some(Arc::new(Int32Array::from_iter_values(
                    rows.iter().map(|r| r.block.nb_objects),
                )) as ArrayRef),
                "object_offset" => i64s(rows, |r| Some(r.block.object_offset)),
                "payload_size" => i64s(rows, |r| Some(r.block.payload_size)),
                "insert_time" => times(rows, |r| r.insert_time),
                _ => None,
            }
        };
        unknown_if_none(column, "blocks", name)
    }
}

fn unknown_if_none(column: Option<ArrayRef>, table: &str, name: &str) -> Result<ArrayRef> {
    match column {
        Some(column) => Ok(column),
        None => internal_err!("the {table} table has no column {name}"),
    }
}

/// A process column (`process_fields` names, without prefix) of the rows' processes; NULL
/// where a row has none.
fn process_column<'a, T>(
    rows: &'a [T],
    name: &str,
    p: impl Fn(&'a T) -> Option<(&'a ProcessRecord, Option<DateTime<Utc>>)>,
) -> Result<Option<ArrayRef>> {
    let record = |r: &'a T| p(r).map(|(record, _)| record);
    let text = |f: fn(&ProcessRecord) -> &str| strings(rows, move |r| record(r).map(f));
    Ok(match name {
        "start_time" => times(rows, |r| record(r).map(|p| p.start_time)),
        "start_ticks" => i64s(rows, |r| record(r).map(|p| p.start_ticks)),
        "tsc_frequency" => i64s(rows, |r| record(r).map(|p| p.tsc_frequency)),
        "exe" => text(|p| &p.exe),
        "username" => text(|p| &p.username),
        "realname" => text(|p| &p.realname),
        "computer" => text(|p| &p.computer),
        "distro" => text(|p| &p.distro),
        "cpu_brand" => text(|p| &p.cpu_brand),
        "insert_time" => times(rows, |r| p(r).and_then(|(_, t)| t)),
        "parent_process_id" => ids(rows, |r| record(r).and_then(|p| p.parent_process_id)),
        "properties" => Some(property_maps(rows, |r| {
            record(r).map(|p| p.properties.as_slice())
        })?),
        _ => None,
    })
}

/// A stream column (`stream_fields` names, without prefix) of the rows' streams, given as
/// (row, insert time, format); NULL where a row has none.
fn stream_column<'a, T>(
    rows: &'a [T],
    name: &str,
    s: impl Fn(&'a T) -> Option<(&'a StreamRecord, Option<DateTime<Utc>>, &'a str)>,
) -> Result<Option<ArrayRef>> {
    let record = |r: &'a T| s(r).map(|(record, _, _)| record);
    Ok(match name {
        "dependencies_metadata" => {
            binaries(rows, |r| record(r).map(|s| &s.dependencies_metadata[..]))
        }
        "objects_metadata" => binaries(rows, |r| record(r).map(|s| &s.objects_metadata[..])),
        "tags" => tag_lists(rows, |r| record(r).map(|s| s.tags.as_slice())),
        "properties" => Some(property_maps(rows, |r| {
            record(r).map(|s| s.properties.as_slice())
        })?),
        "insert_time" => times(rows, |r| s(r).and_then(|(_, t, _)| t)),
        "format" => strings(rows, |r| s(r).map(|(_, _, format)| format)),
        _ => None,
    })
}

fn ns(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

fn ids<'a, T>(rows: &'a [T], f: impl Fn(&'a T) -> Option<Uuid>) -> Option<ArrayRef> {
    let mut builder = StringBuilder::with_capacity(rows.len(), rows.len() * ID_BYTES);
    let mut buffer = Uuid::encode_buffer();
    for row in rows {
        builder.append_option(f(row).map(|id| &*id.hyphenated().encode_lower(&mut buffer)));
    }
    Some(Arc::new(builder.finish()))
}

fn strings<'a, T>(rows: &'a [T], f: impl Fn(&'a T) -> Option<&'a str>) -> Option<ArrayRef> {
    Some(Arc::new(StringArray::from_iter(rows.iter().map(f))))
}

fn i64s<'a, T>(rows: &'a [T], f: impl Fn(&'a T) -> Option<i64>) -> Option<ArrayRef> {
    Some(Arc::new(Int64Array::from_iter(rows.iter().map(f))))
}

fn times<'a, T>(rows: &'a [T], f: impl Fn(&'a T) -> Option<DateTime<Utc>>) -> Option<ArrayRef> {
    Some(Arc::new(
        TimestampNanosecondArray::from_iter(rows.iter().map(|r| f(r).map(ns)))
            .with_timezone("+00:00"),
    ))
}

fn binaries<'a, T>(rows: &'a [T], f: impl Fn(&'a T) -> Option<&'a [u8]>) -> Option<ArrayRef> {
    Some(Arc::new(BinaryArray::from_iter(rows.iter().map(f))))
}

fn tag_lists<'a, T>(rows: &'a [T], f: impl Fn(&'a T) -> Option<&'a [String]>) -> Option<ArrayRef> {
    let mut builder = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new(
        "tag",
        DataType::Utf8,
        false,
    )));
    for row in rows {
        let tags = f(row);
        for tag in tags.unwrap_or_default() {
            builder.values().append_value(tag);
        }
        builder.append(tags.is_some());
    }
    Some(Arc::new(builder.finish()))
}

fn property_maps<'a, T>(
    rows: &'a [T],
    f: impl Fn(&'a T) -> Option<&'a [(String, String)]>,
) -> Result<ArrayRef> {
    let mut sets = JsonbSets::default();
    let keys: Int32Array = rows
        .iter()
        .map(|row| {
            f(row).map(|properties| {
                sets.intern(properties.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            })
        })
        .collect();
    Ok(Arc::new(sets.column(keys)?))
}
