//! The schemas of `processes`, `streams` and `blocks`, with the column names and order of
//! micromegas's views of the same names. The `streams.*` and `processes.*` columns of `blocks`
//! are nullable: they are NULL for a block whose stream or process row is missing.

use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use std::collections::HashMap;
use std::sync::Arc;

/// Which metadata table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Processes,
    Streams,
    Blocks,
}

impl Kind {
    /// The table's name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Processes => "processes",
            Kind::Streams => "streams",
            Kind::Blocks => "blocks",
        }
    }
}

/// The prefix of the `blocks` columns read from the block's stream row.
pub(super) const STREAM_PREFIX: &str = "streams.";
/// The prefix of the `blocks` columns read from the block's process row.
pub(super) const PROCESS_PREFIX: &str = "processes.";

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("+00:00".into()))
}

/// micromegas 0.33's type of `properties` in `processes`, `streams` and `blocks`: JSONB
/// objects, dictionary-encoded (`property_get`, `jsonb_get` and the other functions read them).
pub(super) fn properties_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Binary))
}

pub(super) fn tags_type() -> DataType {
    DataType::List(Arc::new(Field::new("tag", DataType::Utf8, false)))
}

/// The columns of a process row, named `{prefix}{column}`; with a prefix (the `processes.*`
/// columns of `blocks`, NULL for a block without its process row) all nullable.
pub(super) fn process_fields(prefix: &str) -> Vec<Field> {
    let f = |name: &str, t: DataType, nullable: bool| {
        Field::new(format!("{prefix}{name}"), t, nullable || !prefix.is_empty())
    };
    vec![
        f("start_time", timestamp(), false),
        f("start_ticks", DataType::Int64, false),
        f("tsc_frequency", DataType::Int64, false),
        f("exe", DataType::Utf8, false),
        f("username", DataType::Utf8, false),
        f("realname", DataType::Utf8, false),
        f("computer", DataType::Utf8, false),
        f("distro", DataType::Utf8, false),
        f("cpu_brand", DataType::Utf8, false),
        f("insert_time", timestamp(), true),
        f("parent_process_id", DataType::Utf8, true),
        f("properties", properties_type(), false),
    ]
}

pub(super) fn processes_schema() -> Schema {
    let mut fields = vec![Field::new("process_id", DataType::Utf8, false)];
    // micromegas's order: exe … cpu_brand, tsc_frequency, start_time, start_ticks, insert_time,
    // parent_process_id, properties.
    let by_name: HashMap<String, Field> = process_fields("")
        .into_iter()
        .map(|f| (f.name().clone(), f))
        .collect();
    for name in [
        "exe",
        "username",
        "realname",
        "computer",
        "distro",
        "cpu_brand",
        "tsc_frequency",
        "start_time",
        "start_ticks",
        "insert_time",
        "parent_process_id",
        "properties",
    ] {
        fields.push(by_name[name].clone());
    }
    fields.push(Field::new("last_update_time", timestamp(), true));
    fields.push(Field::new("last_block_end_ticks", DataType::Int64, false));
    fields.push(Field::new("last_block_end_time", timestamp(), false));
    Schema::new(fields)
}

/// The columns of a stream row, named `{prefix}{column}`; with a prefix (the `streams.*` columns
/// of `blocks`, NULL for a block without its stream row) all nullable.
pub(super) fn stream_fields(prefix: &str) -> Vec<Field> {
    let f = |name: &str, t: DataType, nullable: bool| {
        Field::new(format!("{prefix}{name}"), t, nullable || !prefix.is_empty())
    };
    vec![
        f("dependencies_metadata", DataType::Binary, false),
        f("objects_metadata", DataType::Binary, false),
        f("tags", tags_type(), true),
        f("properties", properties_type(), false),
        f("insert_time", timestamp(), true),
        f("format", DataType::Utf8, false),
    ]
}

pub(super) fn streams_schema() -> Schema {
    let mut fields = vec![
        Field::new("stream_id", DataType::Utf8, false),
        Field::new("process_id", DataType::Utf8, false),
    ];
    fields.extend(stream_fields(""));
    fields.push(Field::new("last_update_time", timestamp(), true));
    Schema::new(fields)
}

pub(super) fn blocks_schema() -> Schema {
    let mut fields = vec![
        Field::new("block_id", DataType::Utf8, false),
        Field::new("stream_id", DataType::Utf8, false),
        Field::new("process_id", DataType::Utf8, false),
        Field::new("begin_time", timestamp(), false),
        Field::new("begin_ticks", DataType::Int64, false),
        Field::new("end_time", timestamp(), false),
        Field::new("end_ticks", DataType::Int64, false),
        Field::new("nb_objects", DataType::Int32, false),
        Field::new("object_offset", DataType::Int64, false),
        Field::new("payload_size", DataType::Int64, false),
        Field::new("insert_time", timestamp(), true),
    ];
    fields.extend(stream_fields(STREAM_PREFIX));
    fields.extend(process_fields(PROCESS_PREFIX));
    Schema::new(fields)
}

/// The schema of a table.
pub(super) fn schema(kind: Kind) -> Schema {
    match kind {
        Kind::Processes => processes_schema(),
        Kind::Streams => streams_schema(),
        Kind::Blocks => blocks_schema(),
    }
}
