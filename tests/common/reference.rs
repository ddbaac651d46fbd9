//! The reference reading of a block: micromegas-transit's own generic parser, with the async
//! fields read by name the way micromegas-analytics reads them.

use super::producer::{RawBlock, RawStream};
use bumpalo::Bump;
use micromegas_transit::value::Value;
use micromegas_transit::{UserDefinedType, parse_object_buffer, read_dependencies};

/// An async event as micromegas-analytics sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RefEvent {
    pub event_type: String,
    pub span_id: i64,
    pub parent_span_id: i64,
    pub depth: u32,
    pub ticks: i64,
    pub name: String,
    pub filename: String,
    pub target: String,
    pub line: u32,
    /// Sorted by name.
    pub properties: Vec<(String, String)>,
}

/// Every async event of a block, in buffer order, through micromegas-transit.
pub fn reference_events(stream: &RawStream, block: &RawBlock) -> Vec<RefEvent> {
    let deps_udts: Vec<UserDefinedType> =
        ciborium::de::from_reader(stream.dependencies_metadata.as_slice()).unwrap();
    let obj_udts: Vec<UserDefinedType> =
        ciborium::de::from_reader(stream.objects_metadata.as_slice()).unwrap();
    let payload: micromegas_telemetry::block_wire_format::BlockPayload =
        ciborium::de::from_reader(block.payload.as_slice()).unwrap();
    let deps_buf = micromegas_telemetry::compression::decompress(&payload.dependencies).unwrap();
    let obj_buf = micromegas_telemetry::compression::decompress(&payload.objects).unwrap();
    let readers = micromegas_tracing::parsing::make_custom_readers();
    let bump = Bump::new();
    let deps = read_dependencies(&bump, &readers, &deps_udts, &deps_buf).unwrap();
    let mut out = Vec::new();
    let mut count = 0usize;
    parse_object_buffer(&bump, &readers, &deps, &obj_udts, &obj_buf, |value| {
        count += 1;
        let Value::Object(obj) = value else {
            return Ok(true);
        };
        let event_type = match obj.type_name {
            "BeginAsyncSpanEvent" | "BeginAsyncNamedSpanEvent" | "BeginAsyncDynNamedSpanEvent" => {
                "begin"
            }
            "EndAsyncSpanEvent"
            | "TaggedEndAsyncSpanEvent"
            | "EndAsyncNamedSpanEvent"
            | "EndAsyncDynNamedSpanEvent"
            | "TaggedEndAsyncNamedSpanEvent" => "end",
            _ => return Ok(true),
        };
        let named = obj.type_name.contains("Named");
        let (name, scope) = if named {
            let Value::Object(loc) = *obj.get_ref("span_location")? else {
                anyhow::bail!("span_location is not an object")
            };
            (obj.get::<&str>("name")?.to_owned(), loc)
        } else {
            let Value::Object(desc) = *obj.get_ref("span_desc")? else {
                anyhow::bail!("span_desc is not an object")
            };
            (desc.get::<&str>("name")?.to_owned(), desc)
        };
        let mut properties = Vec::new();
        if obj.type_name.starts_with("TaggedEnd") {
            let Value::Object(set) = *obj.get_ref("properties")? else {
                anyhow::bail!("properties is not an object")
            };
            for (k, v) in set.members {
                properties.push((k.to_string(), v.as_str().unwrap().to_owned()));
            }
            properties.sort();
        }
        out.push(RefEvent {
            event_type: event_type.into(),
            span_id: obj.get::<u64>("span_id")? as i64,
            parent_span_id: obj.get::<u64>("parent_span_id")? as i64,
            depth: obj.get::<u32>("depth")?,
            ticks: obj.get::<i64>("time")?,
            name,
            filename: scope.get::<&str>("file")?.to_owned(),
            target: scope.get::<&str>("target")?.to_owned(),
            line: scope.get::<u32>("line")?,
            properties,
        });
        Ok(true)
    })
    .unwrap();
    assert_eq!(
        count as i32, block.nb_objects,
        "objects in the buffer = nb_objects"
    );
    out
}
