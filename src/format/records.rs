//! [`RecordIter`]: the framing of a transit buffer, shared by the objects walk and the
//! dependencies walk.
//!
//! A buffer is a sequence of records, each a one-byte type index, then (for types of dynamic
//! size) a u32 LE payload size, then the payload. This module only cuts the buffer into records
//! and reports framing defects at the byte; what a record means is the walker's business.

use super::error::FormatError;

/// How records of a type are framed, packed small for the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Framing {
    /// Payload bytes of every record (0 when `dynamic`).
    pub size: u32,
    /// Each record starts with a u32 LE payload size.
    pub dynamic: bool,
}

/// One type index of a buffer's metadata list: `K` says what the walker does with its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordType<K> {
    /// The type's name, as declared in the metadata (for errors).
    pub name: String,
    /// How its records are framed.
    pub framing: Framing,
    /// What its records mean to the walker.
    pub kind: K,
}

/// One record of a buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record<'a, K> {
    /// The record's type in the metadata list.
    pub ty: &'a RecordType<K>,
    /// Byte offset of the record (of its type index) in the buffer.
    pub offset: usize,
    /// The payload.
    pub bytes: &'a [u8],
}

/// The records of a buffer, in order. Stops after the first error.
#[derive(Debug, Clone)]
pub(crate) struct RecordIter<'a, K> {
    /// `dependencies` or `objects`, for errors.
    buffer: &'static str,
    /// Per type index: the metadata type.
    types: &'a [RecordType<K>],
    buf: &'a [u8],
    pos: usize,
}

impl<'a, K> RecordIter<'a, K> {
    /// The records of `buf`, whose type indices index `types`.
    pub fn new(buffer: &'static str, types: &'a [RecordType<K>], buf: &'a [u8]) -> Self {
        Self {
            buffer,
            types,
            buf,
            pos: 0,
        }
    }

    /// The same walk, going on from byte `pos` of the buffer (a record's start, as
    /// [`position`](Self::position) returned it).
    pub fn starting_at(mut self, pos: usize) -> Self {
        self.pos = pos.min(self.buf.len());
        self
    }

    /// Where the next record starts (the buffer's length once the walk is over).
    pub fn position(&self) -> usize {
        self.pos
    }

    #[inline(always)]
    fn frame(&mut self, index: u8) -> Result<Record<'a, K>, FormatError> {
        // Locals, not `self`, go to the error paths: the iterator stays in registers.
        let (buffer, buf, types) = (self.buffer, self.buf, self.types);
        let offset = self.pos;
        let Some(ty) = types.get(usize::from(index)) else {
            // Nothing after a framing error can be trusted: the walk ends.
            self.pos = buf.len();
            return Err(unknown_type(buffer, index, offset, types.len()));
        };
        let framing = ty.framing;
        let mut pos = offset + 1;
        let size = if framing.dynamic {
            let Some(n) = buf
                .get(pos..)
                .and_then(|rest| rest.first_chunk::<4>())
                .map(|b| u32::from_le_bytes(*b))
            else {
                self.pos = buf.len();
                return Err(truncated(buffer, ty, offset, 4, buf.len() - pos));
            };
            pos += 4;
            n as usize
        } else {
            framing.size as usize
        };
        let Some(bytes) = buf.get(pos..).and_then(|rest| rest.get(..size)) else {
            self.pos = buf.len();
            return Err(truncated(buffer, ty, offset, size, buf.len() - pos));
        };
        self.pos = pos + size;
        Ok(Record { ty, offset, bytes })
    }
}

#[cold]
fn unknown_type(buffer: &'static str, index: u8, offset: usize, known: usize) -> FormatError {
    FormatError::UnknownTypeIndex {
        buffer,
        index,
        offset,
        known,
    }
}

#[cold]
fn truncated<K>(
    buffer: &'static str,
    ty: &RecordType<K>,
    offset: usize,
    needed: usize,
    available: usize,
) -> FormatError {
    FormatError::Truncated {
        buffer,
        type_name: ty.name.clone(),
        offset,
        needed,
        available,
    }
}

impl<'a, K> Iterator for RecordIter<'a, K> {
    type Item = Result<Record<'a, K>, FormatError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let &index = self.buf.get(self.pos)?;
        Some(self.frame(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types() -> [RecordType<()>; 2] {
        let ty = |name: &str, size, dynamic| RecordType {
            name: name.into(),
            framing: Framing { size, dynamic },
            kind: (),
        };
        [ty("Fixed3", 3, false), ty("Dynamic", 0, true)]
    }

    fn walk(buf: &[u8]) -> Vec<Result<(usize, Vec<u8>), FormatError>> {
        RecordIter::new("objects", &types(), buf)
            .map(|r| r.map(|r| (r.offset, r.bytes.to_vec())))
            .collect()
    }

    #[test]
    fn fixed_and_dynamic_records_are_framed() {
        let buf = [0, 1, 2, 3, 1, 2, 0, 0, 0, 9, 8, 0, 4, 5, 6];
        assert_eq!(
            walk(&buf),
            vec![
                Ok((0, vec![1, 2, 3])),
                Ok((4, vec![9, 8])),
                Ok((11, vec![4, 5, 6])),
            ]
        );
        assert!(walk(&[]).is_empty());
    }

    #[test]
    fn framing_defects_point_at_the_record_and_end_the_walk() {
        assert_eq!(
            walk(&[0, 1, 2, 3, 7, 0]),
            vec![
                Ok((0, vec![1, 2, 3])),
                Err(FormatError::UnknownTypeIndex {
                    buffer: "objects",
                    index: 7,
                    offset: 4,
                    known: 2,
                }),
            ]
        );
        assert_eq!(
            walk(&[0, 1]),
            vec![Err(FormatError::Truncated {
                buffer: "objects",
                type_name: "Fixed3".into(),
                offset: 0,
                needed: 3,
                available: 1,
            })]
        );
        assert_eq!(
            walk(&[0, 1, 2, 3, 1, 5, 0]),
            vec![
                Ok((0, vec![1, 2, 3])),
                Err(FormatError::Truncated {
                    buffer: "objects",
                    type_name: "Dynamic".into(),
                    offset: 4,
                    needed: 4,
                    available: 2,
                }),
            ]
        );
        assert_eq!(
            walk(&[1, 200, 0, 0, 0, 1]),
            vec![Err(FormatError::Truncated {
                buffer: "objects",
                type_name: "Dynamic".into(),
                offset: 0,
                needed: 200,
                available: 1,
            })]
        );
    }
}
