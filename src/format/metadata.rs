//! Transit metadata: the CBOR lists of user-defined types stored in `streams.*_metadata`.
//!
//! A type's position in its list is its type index in the buffer. Field offsets are the real
//! in-memory layout of the producer's structs (the compiler reorders fields), so they are read
//! from here, never assumed.

use super::error::{FormatError, FormatResult};
use serde::{Deserialize, Serialize};

/// One field of a [`UserDefinedType`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Field name, for example `span_id`.
    pub name: String,
    /// Rust type of the field as written in the producer (`u64`, `StringId`, `& 'static SpanMetadata`).
    pub type_name: String,
    /// Byte offset of the field inside the record.
    pub offset: usize,
    /// Byte size of the field.
    pub size: usize,
    /// Whether the field holds a u64 id to resolve in the block's dependencies.
    pub is_reference: bool,
}

/// A record type of a transit buffer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDefinedType {
    /// Type name, for example `BeginAsyncSpanEvent`.
    pub name: String,
    /// Fixed record size in bytes; 0 means each record is prefixed by a u32 size.
    pub size: usize,
    /// Fields of fixed-size records.
    pub members: Vec<Member>,
    /// Whether a value of this type is itself a reference (its `id` member is the key).
    pub is_reference: bool,
}

impl UserDefinedType {
    /// The member called `name`, if any.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }
}

/// Decodes a CBOR list of user-defined types, as stored in `streams.dependencies_metadata` or
/// `streams.objects_metadata`.
pub fn parse_udt_list(cbor: &[u8], what: &'static str) -> FormatResult<Vec<UserDefinedType>> {
    ciborium::de::from_reader(cbor).map_err(|e| FormatError::Cbor {
        what,
        detail: e.to_string(),
    })
}

/// Encodes a list of user-defined types as micromegas's ingestion stores it.
pub fn encode_udt_list(udts: &[UserDefinedType]) -> Vec<u8> {
    let mut out = Vec::new();
    if let Err(e) = ciborium::ser::into_writer(udts, &mut out) {
        unreachable!("serializing metadata into memory failed: {e}");
    }
    out
}
