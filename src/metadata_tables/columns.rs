//! Arrow columns of metadata rows.

use super::schema::properties_type;
use crate::lake::{ProcessListing, StreamListing};
use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    ArrayRef, BinaryArray, Int64Array, ListBuilder, MapBuilder, StringArray, StringBuilder,
    TimestampNanosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::Result;
use std::sync::Arc;

fn ns(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

pub(super) fn strings<T>(rows: &[T], f: impl Fn(&T) -> String) -> ArrayRef {
    Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
}

pub(super) fn opt_strings<T>(rows: &[T], f: impl Fn(&T) -> Option<String>) -> ArrayRef {
    Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
}

pub(super) fn i64s<T>(rows: &[T], f: impl Fn(&T) -> i64) -> ArrayRef {
    Arc::new(Int64Array::from(rows.iter().map(f).collect::<Vec<_>>()))
}

pub(super) fn times<T>(rows: &[T], f: impl Fn(&T) -> Option<DateTime<Utc>>) -> ArrayRef {
    Arc::new(
        TimestampNanosecondArray::from(rows.iter().map(|r| f(r).map(ns)).collect::<Vec<_>>())
            .with_timezone("+00:00"),
    )
}

pub(super) fn binaries<T>(rows: &[T], f: impl Fn(&T) -> &[u8]) -> ArrayRef {
    Arc::new(BinaryArray::from(rows.iter().map(f).collect::<Vec<_>>()))
}

pub(super) fn property_maps<T>(
    rows: &[T],
    f: impl Fn(&T) -> &[(String, String)],
) -> Result<ArrayRef> {
    let DataType::Map(entries, _) = properties_type() else {
        unreachable!("properties are a map")
    };
    let DataType::Struct(kv) = entries.data_type() else {
        unreachable!("map entries are a struct")
    };
    let mut builder = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new())
        .with_keys_field(kv[0].clone())
        .with_values_field(kv[1].clone());
    for row in rows {
        for (k, v) in f(row) {
            builder.keys().append_value(k);
            builder.values().append_value(v);
        }
        builder.append(true)?;
    }
    let map = builder.finish();
    // Same entries field name and types as `async_events.properties`.
    let (_, offsets, columns, nulls, ordered) = map.into_parts();
    Ok(Arc::new(datafusion::arrow::array::MapArray::try_new(
        entries, offsets, columns, nulls, ordered,
    )?))
}

pub(super) fn tag_lists<T>(rows: &[T], f: impl Fn(&T) -> &[String]) -> ArrayRef {
    let mut builder = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new(
        "tag",
        DataType::Utf8,
        false,
    )));
    for row in rows {
        for tag in f(row) {
            builder.values().append_value(tag);
        }
        builder.append(true);
    }
    Arc::new(builder.finish())
}

/// The columns of a process, in `process_fields` order.
pub(super) fn process_columns<T>(
    rows: &[T],
    p: impl Fn(&T) -> &ProcessListing,
) -> Result<Vec<ArrayRef>> {
    Ok(vec![
        times(rows, |r| Some(p(r).process.start_time)),
        i64s(rows, |r| p(r).process.start_ticks),
        i64s(rows, |r| p(r).process.tsc_frequency),
        strings(rows, |r| p(r).process.exe.clone()),
        strings(rows, |r| p(r).process.username.clone()),
        strings(rows, |r| p(r).process.realname.clone()),
        strings(rows, |r| p(r).process.computer.clone()),
        strings(rows, |r| p(r).process.distro.clone()),
        strings(rows, |r| p(r).process.cpu_brand.clone()),
        times(rows, |r| p(r).insert_time),
        opt_strings(rows, |r| {
            p(r).process.parent_process_id.map(|id| id.to_string())
        }),
        property_maps(rows, |r| &p(r).process.properties)?,
    ])
}

/// The columns of a stream, in `stream_fields` order.
pub(super) fn stream_columns<T>(
    rows: &[T],
    s: impl Fn(&T) -> &StreamListing,
) -> Result<Vec<ArrayRef>> {
    Ok(vec![
        binaries(rows, |r| &s(r).stream.dependencies_metadata),
        binaries(rows, |r| &s(r).stream.objects_metadata),
        tag_lists(rows, |r| &s(r).stream.tags),
        property_maps(rows, |r| &s(r).stream.properties)?,
        times(rows, |r| s(r).insert_time),
        strings(rows, |r| s(r).format.clone()),
    ])
}
