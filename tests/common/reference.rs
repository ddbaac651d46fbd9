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

/// Walks every object of a block, in buffer order, through micromegas-transit's parser; checks
/// that there are `nb_objects` of them.
fn walk_objects(
    stream: &RawStream,
    block: &RawBlock,
    mut each: impl FnMut(&Value) -> anyhow::Result<bool>,
) {
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
    let mut count = 0usize;
    parse_object_buffer(&bump, &readers, &deps, &obj_udts, &obj_buf, |value| {
        count += 1;
        each(&value)
    })
    .unwrap();
    assert_eq!(
        count as i32, block.nb_objects,
        "objects in the buffer = nb_objects"
    );
}

/// A span event's name, its scope object (description or location, read by name as
/// micromegas-analytics does: `{prefix}span_desc` or `{prefix}span_location`) and a tagged
/// end's properties, sorted.
/// Name, scope object, sorted properties.
type Scope<'a> = (
    String,
    &'a micromegas_transit::value::Object<'a>,
    Vec<(String, String)>,
);

fn scope_of<'a>(
    obj: &'a micromegas_transit::value::Object<'a>,
    prefix: &str,
) -> anyhow::Result<Scope<'a>> {
    let (name, scope) = if obj.type_name.contains("Named") {
        let field = format!("{prefix}span_location");
        let Value::Object(loc) = *obj.get_ref(&field)? else {
            anyhow::bail!("{field} is not an object")
        };
        (obj.get::<&str>("name")?.to_owned(), loc)
    } else {
        let field = format!("{prefix}span_desc");
        let Value::Object(desc) = *obj.get_ref(&field)? else {
            anyhow::bail!("{field} is not an object")
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
    Ok((name, scope, properties))
}

/// A thread (scope) event as micromegas-analytics's thread block processor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefThreadEvent {
    /// Index of the object in its block (all object types counted).
    pub index: i64,
    pub begin: bool,
    pub ticks: i64,
    pub name: String,
    pub filename: String,
    pub target: String,
    pub line: u32,
    /// Sorted by name.
    pub properties: Vec<(String, String)>,
}

/// Every thread span event of a block, in buffer order, through micromegas-transit.
pub fn reference_thread_events(stream: &RawStream, block: &RawBlock) -> Vec<RefThreadEvent> {
    let mut out = Vec::new();
    let mut index = -1i64;
    walk_objects(stream, block, |value| {
        index += 1;
        let Value::Object(obj) = value else {
            return Ok(true);
        };
        let begin = match obj.type_name {
            "BeginThreadSpanEvent"
            | "BeginThreadNamedSpanEvent"
            | "BeginThreadDynNamedSpanEvent" => true,
            "EndThreadSpanEvent"
            | "TaggedEndThreadSpanEvent"
            | "EndThreadNamedSpanEvent"
            | "EndThreadDynNamedSpanEvent"
            | "TaggedEndThreadNamedSpanEvent" => false,
            _ => return Ok(true),
        };
        let (name, scope, properties) = scope_of(obj, "thread_")?;
        out.push(RefThreadEvent {
            index,
            begin,
            ticks: obj.get::<i64>("time")?,
            name,
            filename: scope.get::<&str>("file")?.to_owned(),
            target: scope.get::<&str>("target")?.to_owned(),
            line: scope.get::<u32>("line")?,
            properties,
        });
        Ok(true)
    });
    out
}

/// Every async event of a block, in buffer order, through micromegas-transit.
pub fn reference_events(stream: &RawStream, block: &RawBlock) -> Vec<RefEvent> {
    let mut out = Vec::new();
    walk_objects(stream, block, |value| {
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
        let (name, scope, properties) = scope_of(obj, "")?;
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
    });
    out
}
