//! [`StreamLayout`]: a stream's transit metadata compiled, once, into what the decoder reads.
//!
//! For every type index of the objects buffer: its record size and whether it is an async or a
//! thread (scope) span event (and which kind), with the byte offset of every field the decoders
//! read. For every type index of the dependencies buffer: which dependency record it is and its
//! field offsets. Anything else is skipped by its size alone.

use super::error::{FormatError, FormatResult};
use super::metadata::{Member, UserDefinedType, parse_udt_list};
use super::records::{Framing, RecordIter, RecordType};

/// Whether an async event opens or closes a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    /// The future was first polled.
    Begin,
    /// The future completed.
    End,
}

impl EventType {
    /// The value of the `event_type` column: `begin` or `end`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Begin => "begin",
            EventType::End => "end",
        }
    }
}

/// Where an async event's name, file, target and line come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScopeSource {
    /// A `SpanRecord` reference (name and location together).
    Description { desc: usize },
    /// A `SpanLocationRecord` reference plus a name string reference held by the event.
    Named { location: usize, name: usize },
}

/// Field offsets of one async span event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AsyncEventLayout {
    pub event_type: EventType,
    pub scope: ScopeSource,
    /// Offset of the property set reference of tagged ends.
    pub properties: Option<usize>,
    pub span_id: usize,
    pub parent_span_id: usize,
    pub time: usize,
    pub depth: usize,
    /// Record size (all async events are fixed-size).
    pub size: usize,
}

/// Field offsets of one thread (scope) span event type: a function or scope entered or left
/// on the thread that writes the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ThreadEventLayout {
    pub event_type: EventType,
    pub scope: ScopeSource,
    /// Offset of the property set reference of tagged ends.
    pub properties: Option<usize>,
    pub time: usize,
}

/// What the decoders do with a record of the objects buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ObjectKind {
    /// Not a span event: skipped.
    Skip,
    /// An async span event.
    Async(AsyncEventLayout),
    /// A thread span event.
    Thread(ThreadEventLayout),
}

/// One type index of the objects buffer.
pub(crate) type ObjectType = RecordType<ObjectKind>;

/// Field offsets of a `SpanRecord` (a static span description).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpanRecordLayout {
    pub id: usize,
    pub name: usize,
    pub target: usize,
    pub file: usize,
    pub line: usize,
}

/// Field offsets of a `SpanLocationRecord` (a static span location).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpanLocationLayout {
    pub id: usize,
    pub target: usize,
    pub file: usize,
    pub line: usize,
}

/// Layout of one `Property` inside a `PropertySetDependency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PropertyLayout {
    pub size: usize,
    pub name: usize,
    pub value: usize,
}

/// What the dependency pass does with a record of the dependencies buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DependencyKind {
    /// `u64 id` then UTF-8 bytes (`Utf8StaticStringDependency`).
    StaticString,
    /// `u64 id, u8 codec, u32 len` then the bytes.
    StaticStringDependency,
    /// `u64 id, u32 n` then `n` properties.
    PropertySet,
    SpanRecord(SpanRecordLayout),
    SpanLocationRecord(SpanLocationLayout),
    /// Anything else: skipped by its size.
    Skip,
}

/// One type index of the dependencies buffer.
pub(crate) type DependencyType = RecordType<DependencyKind>;

/// A stream's metadata compiled for the async-event decoder.
///
/// Built once per stream from `streams.dependencies_metadata` and `streams.objects_metadata`;
/// every block of the stream is decoded with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamLayout {
    pub(crate) objects: Vec<ObjectType>,
    pub(crate) dependencies: Vec<DependencyType>,
    pub(crate) property: Option<PropertyLayout>,
}

impl StreamLayout {
    /// Compiles the CBOR metadata of a stream.
    pub fn from_cbor(dependencies_metadata: &[u8], objects_metadata: &[u8]) -> FormatResult<Self> {
        let deps = parse_udt_list(dependencies_metadata, "dependencies metadata")?;
        let objects = parse_udt_list(objects_metadata, "objects metadata")?;
        Self::new(&deps, &objects)
    }

    /// Compiles already-decoded metadata lists.
    pub fn new(
        dependencies: &[UserDefinedType],
        objects: &[UserDefinedType],
    ) -> FormatResult<Self> {
        let objects_out = objects
            .iter()
            .map(|udt| compile_object(udt, objects))
            .collect::<FormatResult<Vec<_>>>()?;
        let deps_out = dependencies
            .iter()
            .map(|udt| compile_dependency(udt, dependencies))
            .collect::<FormatResult<Vec<_>>>()?;
        let property = match dependencies.iter().find(|t| t.name == "Property") {
            Some(udt) => Some(PropertyLayout {
                size: fixed_size(udt)?,
                name: reference(udt, "name", dependencies)?,
                value: reference(udt, "value", dependencies)?,
            }),
            None => None,
        };
        Ok(Self {
            objects: objects_out,
            dependencies: deps_out,
            property,
        })
    }

    /// The records of a decompressed objects buffer.
    pub(crate) fn object_records<'a>(&'a self, buf: &'a [u8]) -> RecordIter<'a, ObjectKind> {
        RecordIter::new("objects", &self.objects, buf)
    }

    /// The records of a decompressed dependencies buffer.
    pub(crate) fn dependency_records<'a>(
        &'a self,
        buf: &'a [u8],
    ) -> RecordIter<'a, DependencyKind> {
        RecordIter::new("dependencies", &self.dependencies, buf)
    }

    /// Whether any object type of the stream is an async span event.
    pub fn has_async_events(&self) -> bool {
        self.objects
            .iter()
            .any(|t| matches!(t.kind, ObjectKind::Async(_)))
    }

    /// Whether any object type of the stream is a thread span event.
    pub fn has_thread_events(&self) -> bool {
        self.objects
            .iter()
            .any(|t| matches!(t.kind, ObjectKind::Thread(_)))
    }

    /// Names of the object types that decode as async span events, by type index.
    pub fn async_event_types(&self) -> Vec<(usize, &str, EventType)> {
        self.objects
            .iter()
            .enumerate()
            .filter_map(|(i, t)| match &t.kind {
                ObjectKind::Async(l) => Some((i, t.name.as_str(), l.event_type)),
                ObjectKind::Skip | ObjectKind::Thread(_) => None,
            })
            .collect()
    }
}

fn framing(udt: &UserDefinedType) -> FormatResult<Framing> {
    match udt.size {
        0 => Ok(Framing {
            size: 0,
            dynamic: true,
        }),
        n => Ok(Framing {
            size: u32::try_from(n)
                .map_err(|_| meta_err(udt, format_args!("has a size of {n} bytes")))?,
            dynamic: false,
        }),
    }
}

fn fixed_size(udt: &UserDefinedType) -> FormatResult<usize> {
    match udt.size {
        0 => Err(meta_err(udt, "is declared with a dynamic size")),
        n => Ok(n),
    }
}

fn meta_err(udt: &UserDefinedType, detail: impl std::fmt::Display) -> FormatError {
    FormatError::Metadata(format!("type {} {detail}", udt.name))
}

fn member<'a>(udt: &'a UserDefinedType, name: &str) -> FormatResult<&'a Member> {
    udt.member(name)
        .ok_or_else(|| meta_err(udt, format_args!("has no member {name}")))
}

fn check_bounds(udt: &UserDefinedType, m: &Member, offset: usize, len: usize) -> FormatResult<()> {
    match offset.checked_add(len) {
        Some(end) if end <= udt.size => Ok(()),
        _ => Err(meta_err(
            udt,
            format_args!(
                "member {} at offset {offset} with {len} bytes exceeds the record size {}",
                m.name, udt.size
            ),
        )),
    }
}

/// Offset of a scalar member of exactly `size` bytes.
fn scalar(udt: &UserDefinedType, name: &str, size: usize) -> FormatResult<usize> {
    let m = member(udt, name)?;
    if m.size != size {
        return Err(meta_err(
            udt,
            format_args!("member {name} has {} bytes, expected {size}", m.size),
        ));
    }
    check_bounds(udt, m, m.offset, size)?;
    Ok(m.offset)
}

/// Offset of the u64 id that a member refers to.
///
/// A member marked `is_reference` holds the id itself (`& 'static SpanMetadata`, `PropertySetId`).
/// Otherwise its type is a reference type of the same list (`StringId`, `DynStringId`,
/// `StaticStringRef`), whose own `id` member holds the id.
fn reference(udt: &UserDefinedType, name: &str, list: &[UserDefinedType]) -> FormatResult<usize> {
    let m = member(udt, name)?;
    let offset = if m.is_reference {
        if m.size < 8 {
            return Err(meta_err(
                udt,
                format_args!("reference member {name} has only {} bytes", m.size),
            ));
        }
        m.offset
    } else {
        let target = list
            .iter()
            .find(|t| t.name == m.type_name && t.is_reference)
            .ok_or_else(|| {
                meta_err(
                    udt,
                    format_args!(
                        "member {name} of type {} is neither a reference nor a reference type",
                        m.type_name
                    ),
                )
            })?;
        let id = member(target, "id")?;
        if id.size < 8 || id.offset.checked_add(8).is_none_or(|end| end > m.size) {
            return Err(meta_err(
                target,
                format_args!("id member does not fit in the {} bytes of {name}", m.size),
            ));
        }
        m.offset + id.offset
    };
    check_bounds(udt, m, offset, 8)?;
    Ok(offset)
}

/// Where a span event's scope comes from (`{prefix}span_desc`, or `{prefix}span_location` and
/// `name`), and the offset of a tagged end's property set reference.
fn scope_and_properties(
    udt: &UserDefinedType,
    list: &[UserDefinedType],
    prefix: &str,
    named: bool,
    tagged: bool,
) -> FormatResult<(ScopeSource, Option<usize>)> {
    let scope = if named {
        ScopeSource::Named {
            location: reference(udt, &format!("{prefix}span_location"), list)?,
            name: reference(udt, "name", list)?,
        }
    } else {
        ScopeSource::Description {
            desc: reference(udt, &format!("{prefix}span_desc"), list)?,
        }
    };
    let properties = match tagged {
        true => Some(reference(udt, "properties", list)?),
        false => None,
    };
    Ok((scope, properties))
}

/// A thread span event type: `BeginThreadSpanEvent` and its named, dynamically named and tagged
/// forms (micromegas-tracing's `spans/span_events.rs`).
fn compile_thread_event(
    udt: &UserDefinedType,
    list: &[UserDefinedType],
) -> FormatResult<Option<ThreadEventLayout>> {
    use EventType::{Begin, End};
    let (event_type, named, tagged) = match udt.name.as_str() {
        "BeginThreadSpanEvent" => (Begin, false, false),
        "EndThreadSpanEvent" => (End, false, false),
        "TaggedEndThreadSpanEvent" => (End, false, true),
        "BeginThreadNamedSpanEvent" | "BeginThreadDynNamedSpanEvent" => (Begin, true, false),
        "EndThreadNamedSpanEvent" | "EndThreadDynNamedSpanEvent" => (End, true, false),
        "TaggedEndThreadNamedSpanEvent" => (End, true, true),
        _ => return Ok(None),
    };
    fixed_size(udt)?;
    let (scope, properties) = scope_and_properties(udt, list, "thread_", named, tagged)?;
    Ok(Some(ThreadEventLayout {
        event_type,
        scope,
        properties,
        time: scalar(udt, "time", 8)?,
    }))
}

fn compile_object(udt: &UserDefinedType, list: &[UserDefinedType]) -> FormatResult<ObjectType> {
    use EventType::{Begin, End};
    if let Some(thread) = compile_thread_event(udt, list)? {
        return Ok(ObjectType {
            name: udt.name.clone(),
            framing: framing(udt)?,
            kind: ObjectKind::Thread(thread),
        });
    }
    let (event_type, named, tagged) = match udt.name.as_str() {
        "BeginAsyncSpanEvent" => (Begin, false, false),
        "EndAsyncSpanEvent" => (End, false, false),
        "TaggedEndAsyncSpanEvent" => (End, false, true),
        "BeginAsyncNamedSpanEvent" | "BeginAsyncDynNamedSpanEvent" => (Begin, true, false),
        "EndAsyncNamedSpanEvent" | "EndAsyncDynNamedSpanEvent" => (End, true, false),
        "TaggedEndAsyncNamedSpanEvent" => (End, true, true),
        _ => {
            return Ok(ObjectType {
                name: udt.name.clone(),
                framing: framing(udt)?,
                kind: ObjectKind::Skip,
            });
        }
    };
    let size = fixed_size(udt)?;
    let (scope, properties) = scope_and_properties(udt, list, "", named, tagged)?;
    let layout = AsyncEventLayout {
        event_type,
        scope,
        properties,
        span_id: scalar(udt, "span_id", 8)?,
        parent_span_id: scalar(udt, "parent_span_id", 8)?,
        time: scalar(udt, "time", 8)?,
        depth: scalar(udt, "depth", 4)?,
        size,
    };
    Ok(ObjectType {
        name: udt.name.clone(),
        framing: framing(udt)?,
        kind: ObjectKind::Async(layout),
    })
}

fn compile_dependency(
    udt: &UserDefinedType,
    list: &[UserDefinedType],
) -> FormatResult<DependencyType> {
    let kind = match udt.name.as_str() {
        "StaticString" => DependencyKind::StaticString,
        "StaticStringDependency" => DependencyKind::StaticStringDependency,
        "PropertySetDependency" => DependencyKind::PropertySet,
        "SpanRecord" => {
            fixed_size(udt)?;
            DependencyKind::SpanRecord(SpanRecordLayout {
                id: scalar(udt, "id", 8)?,
                name: reference(udt, "name", list)?,
                target: reference(udt, "target", list)?,
                file: reference(udt, "file", list)?,
                line: scalar(udt, "line", 4)?,
            })
        }
        "SpanLocationRecord" => {
            fixed_size(udt)?;
            DependencyKind::SpanLocationRecord(SpanLocationLayout {
                id: scalar(udt, "id", 8)?,
                target: reference(udt, "target", list)?,
                file: reference(udt, "file", list)?,
                line: scalar(udt, "line", 4)?,
            })
        }
        _ => DependencyKind::Skip,
    };
    if matches!(
        kind,
        DependencyKind::StaticString
            | DependencyKind::StaticStringDependency
            | DependencyKind::PropertySet
    ) && udt.size != 0
    {
        return Err(meta_err(udt, "must have a dynamic size"));
    }
    Ok(DependencyType {
        name: udt.name.clone(),
        framing: framing(udt)?,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, type_name: &str, offset: usize, size: usize, r: bool) -> Member {
        Member {
            name: name.into(),
            type_name: type_name.into(),
            offset,
            size,
            is_reference: r,
        }
    }

    fn udt(name: &str, size: usize, members: Vec<Member>, r: bool) -> UserDefinedType {
        UserDefinedType {
            name: name.into(),
            size,
            members,
            is_reference: r,
        }
    }

    fn begin_async() -> UserDefinedType {
        // Field order deliberately differs from declaration order, as rustc lays it out.
        udt(
            "BeginAsyncSpanEvent",
            40,
            vec![
                m("span_desc", "& 'static SpanMetadata", 0, 8, true),
                m("span_id", "u64", 8, 8, false),
                m("parent_span_id", "u64", 16, 8, false),
                m("depth", "u32", 32, 4, false),
                m("time", "i64", 24, 8, false),
            ],
            false,
        )
    }

    #[test]
    fn offsets_come_from_the_metadata() {
        let objects = vec![udt("LogStaticStrEvent", 16, vec![], false), begin_async()];
        let layout = StreamLayout::new(&[], &objects).unwrap();
        assert_eq!(layout.objects[0].kind, ObjectKind::Skip);
        let ObjectKind::Async(a) = &layout.objects[1].kind else {
            panic!("not async")
        };
        assert_eq!((a.time, a.depth, a.span_id), (24, 32, 8));
        assert_eq!(a.scope, ScopeSource::Description { desc: 0 });
        assert_eq!(a.event_type, EventType::Begin);
    }

    #[test]
    fn reference_types_resolve_through_their_id_member() {
        let objects = vec![
            udt(
                "BeginAsyncNamedSpanEvent",
                56,
                vec![
                    m("span_location", "& 'static SpanLocation", 0, 8, true),
                    m("name", "StringId", 8, 16, false),
                    m("span_id", "u64", 24, 8, false),
                    m("parent_span_id", "u64", 32, 8, false),
                    m("time", "i64", 40, 8, false),
                    m("depth", "u32", 48, 4, false),
                ],
                false,
            ),
            udt("StringId", 16, vec![m("id", "usize", 0, 8, true)], true),
        ];
        let layout = StreamLayout::new(&[], &objects).unwrap();
        let ObjectKind::Async(a) = &layout.objects[0].kind else {
            panic!("not async")
        };
        assert_eq!(
            a.scope,
            ScopeSource::Named {
                location: 0,
                name: 8
            }
        );
    }

    #[test]
    fn inconsistent_metadata_is_rejected() {
        let mut bad = begin_async();
        bad.members[3].offset = 38; // depth would end at byte 42 of a 40-byte record
        let err = StreamLayout::new(&[], &[bad]).unwrap_err();
        assert!(err.to_string().contains("depth"), "{err}");

        let mut missing = begin_async();
        missing.members.retain(|m| m.name != "time");
        let err = StreamLayout::new(&[], &[missing]).unwrap_err();
        assert!(err.to_string().contains("no member time"), "{err}");

        let mut dynamic = begin_async();
        dynamic.size = 0;
        assert!(StreamLayout::new(&[], &[dynamic]).is_err());

        let err = StreamLayout::from_cbor(b"\x80", b"\xff").unwrap_err();
        assert!(matches!(err, FormatError::Cbor { .. }), "{err}");
    }
}
