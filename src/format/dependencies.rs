//! The dependencies buffer of one block, read in one forward pass into an id → value table.
//!
//! Producers write every record after everything it refers to (strings before the span
//! descriptions that use them), so one pass resolves all references. Ids are opaque u64 keys
//! (producer addresses, or block-scoped dynamic ids): they mean nothing outside their block.

use super::error::{FormatError, FormatResult};
use super::layout::{DependencyKind, PropertyLayout, StreamLayout};
use super::records::Record;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A hasher for u64 ids: one folded multiply. Ids are pointers (low bits zero) or tagged
/// offsets, so the full 128-bit product is folded to mix every input bit into the low bits.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }
    #[inline]
    fn write_u64(&mut self, x: u64) {
        let product = u128::from(x ^ self.0) * 0x9E37_79B9_7F4A_7C15_u128;
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }
}

pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Index of an entry in [`Dependencies`].
pub(crate) type EntryIndex = u32;

/// A resolved dependency record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A string: a byte range of [`Dependencies::text`].
    Str { start: u32, end: u32 },
    /// A `SpanRecord`: static name and location.
    Description {
        name: EntryIndex,
        target: EntryIndex,
        file: EntryIndex,
        line: u32,
    },
    /// A `SpanLocationRecord`.
    Location {
        target: EntryIndex,
        file: EntryIndex,
        line: u32,
    },
    /// A property set: a range of [`Dependencies::properties`], sorted by name.
    PropertySet { start: u32, end: u32 },
}

/// The dependency table of one block. Kept between blocks to reuse its allocations.
#[derive(Debug, Default)]
pub(crate) struct Dependencies {
    ids: IdMap<u64, EntryIndex>,
    entries: Vec<Entry>,
    text: String,
    properties: Vec<(EntryIndex, EntryIndex)>,
}

const BUFFER: &str = "dependencies";

impl Dependencies {
    /// Reads a decompressed dependencies buffer, replacing the previous content.
    pub fn read(&mut self, layout: &StreamLayout, buf: &[u8]) -> FormatResult<()> {
        self.ids.clear();
        self.entries.clear();
        self.text.clear();
        self.properties.clear();
        for record in layout.dependency_records(buf) {
            let Record { ty, offset, bytes } = record?;
            let malformed = |detail: String| FormatError::MalformedRecord {
                buffer: BUFFER,
                type_name: ty.name.clone(),
                offset,
                detail,
            };
            match &ty.kind {
                DependencyKind::Skip => {}
                DependencyKind::StaticString => {
                    let (id, text) = split_id(bytes).ok_or_else(|| {
                        malformed(format!("{} bytes cannot hold the 8-byte id", bytes.len()))
                    })?;
                    let s = std::str::from_utf8(text).map_err(|_| FormatError::InvalidString {
                        type_name: "StaticString",
                        encoding: "UTF-8",
                        offset,
                    })?;
                    self.insert_str(id, s, offset)?;
                }
                DependencyKind::StaticStringDependency => {
                    self.read_codec_string(bytes, offset, &malformed)?;
                }
                DependencyKind::PropertySet => {
                    let property = layout.property.ok_or_else(|| {
                        malformed("the stream metadata has no Property type".into())
                    })?;
                    self.read_property_set(bytes, offset, property, &malformed)?;
                }
                DependencyKind::SpanRecord(l) => {
                    let referrer = "SpanRecord";
                    let entry = Entry::Description {
                        name: self.string_ref(read_u64(bytes, l.name), referrer, "name")?,
                        target: self.string_ref(read_u64(bytes, l.target), referrer, "target")?,
                        file: self.string_ref(read_u64(bytes, l.file), referrer, "file")?,
                        line: read_u32(bytes, l.line).unwrap_or(0),
                    };
                    self.insert(read_u64(bytes, l.id), entry, offset)?;
                }
                DependencyKind::SpanLocationRecord(l) => {
                    let referrer = "SpanLocationRecord";
                    let entry = Entry::Location {
                        target: self.string_ref(read_u64(bytes, l.target), referrer, "target")?,
                        file: self.string_ref(read_u64(bytes, l.file), referrer, "file")?,
                        line: read_u32(bytes, l.line).unwrap_or(0),
                    };
                    self.insert(read_u64(bytes, l.id), entry, offset)?;
                }
            }
        }
        Ok(())
    }

    fn read_codec_string(
        &mut self,
        record: &[u8],
        offset: usize,
        malformed: &dyn Fn(String) -> FormatError,
    ) -> FormatResult<()> {
        let (id, rest) =
            split_id(record).ok_or_else(|| malformed("too short for its 13-byte header".into()))?;
        let (&codec, rest) = rest
            .split_first()
            .ok_or_else(|| malformed("too short for its 13-byte header".into()))?;
        let len = read_u32(rest, 0)
            .ok_or_else(|| malformed("too short for its 13-byte header".into()))?
            as usize;
        let bytes = rest[4..].get(..len).ok_or_else(|| {
            malformed(format!(
                "declares {len} string bytes, the record holds {}",
                rest.len() - 4
            ))
        })?;
        let start = self.text.len();
        match codec {
            // Ansi: bytes of an 8-bit code page, read as UTF-8 with replacement like micromegas.
            0 => self.text.push_str(&String::from_utf8_lossy(bytes)),
            1 => {
                if !len.is_multiple_of(2) {
                    return Err(malformed(format!("UTF-16 string of odd length {len}")));
                }
                let units = bytes
                    .chunks_exact(2)
                    .map(|pair| u16::from_le_bytes([pair[0], pair[1]]));
                self.text.extend(
                    char::decode_utf16(units).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)),
                );
            }
            2 => {
                let s = std::str::from_utf8(bytes).map_err(|_| FormatError::InvalidString {
                    type_name: "StaticStringDependency",
                    encoding: "UTF-8",
                    offset,
                })?;
                self.text.push_str(s);
            }
            other => return Err(malformed(format!("unknown string codec {other}"))),
        }
        self.push_text_entry(id, start, offset)
    }

    fn read_property_set(
        &mut self,
        record: &[u8],
        offset: usize,
        property: PropertyLayout,
        malformed: &dyn Fn(String) -> FormatError,
    ) -> FormatResult<()> {
        let (id, rest) =
            split_id(record).ok_or_else(|| malformed("too short for its 12-byte header".into()))?;
        let count = read_u32(rest, 0)
            .ok_or_else(|| malformed("too short for its 12-byte header".into()))?
            as usize;
        let items = &rest[4..];
        if property.size == 0 || count > items.len() / property.size {
            return Err(malformed(format!(
                "declares {count} properties of {} bytes in {} bytes",
                property.size,
                items.len()
            )));
        }
        let start = self.properties.len();
        for item in items.chunks_exact(property.size).take(count) {
            let name = self.string_ref(read_u64(item, property.name), "Property", "name")?;
            let value = self.string_ref(read_u64(item, property.value), "Property", "value")?;
            self.properties.push((name, value));
        }
        // Sorted by name, the last duplicate winning: the order of micromegas's JSON objects.
        let text = &self.text;
        let entries = &self.entries;
        let set = &mut self.properties[start..];
        set.sort_by(|a, b| str_of(text, entries, a.0).cmp(str_of(text, entries, b.0)));
        let mut kept = start;
        for i in start..self.properties.len() {
            let same_as_next = i + 1 < self.properties.len()
                && str_of(text, entries, self.properties[i].0)
                    == str_of(text, entries, self.properties[i + 1].0);
            if !same_as_next {
                self.properties[kept] = self.properties[i];
                kept += 1;
            }
        }
        self.properties.truncate(kept);
        let entry = Entry::PropertySet {
            start: stored_u32(start, offset)?,
            end: stored_u32(kept, offset)?,
        };
        self.insert(id, entry, offset)
    }

    fn insert_str(&mut self, id: u64, s: &str, offset: usize) -> FormatResult<()> {
        let start = self.text.len();
        self.text.push_str(s);
        self.push_text_entry(id, start, offset)
    }

    fn push_text_entry(&mut self, id: u64, start: usize, offset: usize) -> FormatResult<()> {
        let entry = Entry::Str {
            start: stored_u32(start, offset)?,
            end: stored_u32(self.text.len(), offset)?,
        };
        self.insert(id, entry, offset)
    }

    fn insert(&mut self, id: u64, entry: Entry, offset: usize) -> FormatResult<()> {
        let index = EntryIndex::try_from(self.entries.len()).map_err(|_| {
            FormatError::Metadata(format!(
                "the dependencies buffer defines more than {} entries (at byte {offset})",
                EntryIndex::MAX
            ))
        })?;
        if self.ids.insert(id, index).is_some() {
            return Err(FormatError::DuplicateDependency { id, offset });
        }
        self.entries.push(entry);
        Ok(())
    }

    /// The entry of an id, if the block defines it.
    #[inline]
    pub fn lookup(&self, id: u64) -> Option<(EntryIndex, Entry)> {
        let &index = self.ids.get(&id)?;
        self.entries.get(index as usize).map(|e| (index, *e))
    }

    /// The entry index of a string id, or an error naming the referrer.
    pub fn string_ref(&self, id: u64, type_name: &str, member: &str) -> FormatResult<EntryIndex> {
        match self.lookup(id) {
            Some((index, Entry::Str { .. })) => Ok(index),
            found => Err(dangling(type_name, member, id, found.is_some(), "string")),
        }
    }

    /// The text of a string entry (empty for any other entry).
    #[inline]
    pub fn str(&self, index: EntryIndex) -> &str {
        str_of(&self.text, &self.entries, index)
    }

    /// The (name, value) string entries of a property set entry.
    pub fn property_set(&self, start: u32, end: u32) -> &[(EntryIndex, EntryIndex)] {
        self.properties
            .get(start as usize..end as usize)
            .unwrap_or(&[])
    }
}

fn str_of<'a>(text: &'a str, entries: &[Entry], index: EntryIndex) -> &'a str {
    match entries.get(index as usize) {
        Some(Entry::Str { start, end }) => text.get(*start as usize..*end as usize).unwrap_or(""),
        _ => "",
    }
}

/// A dangling or mistyped reference.
pub(crate) fn dangling(
    type_name: &str,
    member: &str,
    id: u64,
    exists: bool,
    kind: &str,
) -> FormatError {
    FormatError::DanglingReference {
        referrer: format!("{type_name}.{member}"),
        id,
        expected: if exists {
            format!(" as a {kind}")
        } else {
            String::new()
        },
    }
}

fn split_id(record: &[u8]) -> Option<(u64, &[u8])> {
    let (id, rest) = record.split_first_chunk::<8>()?;
    Some((u64::from_le_bytes(*id), rest))
}

/// Reads a little-endian u64 at `offset`; 0 if out of bounds (offsets are validated by the
/// layout against the record size, so this does not happen).
#[inline(always)]
pub(crate) fn read_u64(buf: &[u8], offset: usize) -> u64 {
    match buf.get(offset..).and_then(|s| s.first_chunk::<8>()) {
        Some(b) => u64::from_le_bytes(*b),
        None => 0,
    }
}

/// Reads a little-endian u32 at `offset`.
#[inline(always)]
pub(crate) fn read_u32(buf: &[u8], offset: usize) -> Option<u32> {
    buf.get(offset..)
        .and_then(|s| s.first_chunk::<4>())
        .map(|b| u32::from_le_bytes(*b))
}

/// A position in the block's dependency tables as the `u32` they keep: a buffer that makes them
/// outgrow it (only possible with an inflate limit above 4 GiB) is an error, not a wrap.
fn stored_u32(position: usize, offset: usize) -> FormatResult<u32> {
    u32::try_from(position).map_err(|_| {
        FormatError::Metadata(format!(
            "the dependencies buffer's strings outgrow 4 GiB (at byte {offset})"
        ))
    })
}
