//! The stored blob of a block: CBOR `BlockPayload { dependencies, objects }`, each an LZ4 frame.
//!
//! Two CBOR encodings of the byte fields exist in real lakes: a byte string (current producers)
//! and an array of small integers, one per byte (older clients). Both are accepted.

use super::error::{FormatError, FormatResult};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;
use std::io::Write;

/// The two compressed buffers of one block, as stored in the object store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlockPayload {
    /// LZ4 frame of the dependencies buffer (strings, span descriptions, property sets).
    pub dependencies: Vec<u8>,
    /// LZ4 frame of the objects buffer (the events).
    pub objects: Vec<u8>,
}

#[derive(Deserialize)]
struct WirePayload {
    #[serde(deserialize_with = "byte_buf")]
    dependencies: Vec<u8>,
    #[serde(deserialize_with = "byte_buf")]
    objects: Vec<u8>,
}

#[derive(Serialize)]
struct WirePayloadRef<'a> {
    #[serde(serialize_with = "bytes")]
    dependencies: &'a [u8],
    #[serde(serialize_with = "bytes")]
    objects: &'a [u8],
}

fn bytes<S: Serializer>(value: &&[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(value)
}

/// Reads a CBOR byte string, or the legacy array of integers (one per byte).
///
/// `deserialize_byte_buf` (not `deserialize_bytes`) lets ciborium hand over byte strings of any
/// size without its 4 KiB borrowing scratch buffer.
fn byte_buf<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    struct ByteBufVisitor;
    impl<'de> Visitor<'de> for ByteBufVisitor {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a byte string or an array of bytes")
        }
        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            // The size hint comes from the untrusted input: cap what it may reserve.
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(byte) = seq.next_element::<u8>()? {
                out.push(byte);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_byte_buf(ByteBufVisitor)
}

/// The two compressed buffers of a stored blob, borrowed from it when the blob uses the
/// current encoding (definite-length byte strings), owned when it had to be converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadView<'a> {
    /// LZ4 frame of the dependencies buffer.
    pub dependencies: Cow<'a, [u8]>,
    /// LZ4 frame of the objects buffer.
    pub objects: Cow<'a, [u8]>,
}

impl<'a> PayloadView<'a> {
    /// Reads a stored blob. The common encoding (a map of two byte strings) is read in place,
    /// without copying; anything else (legacy integer arrays, indefinite lengths, extra keys)
    /// goes through the general CBOR reader.
    pub fn parse(blob: &'a [u8]) -> FormatResult<Self> {
        if let Some(view) = Self::parse_in_place(blob) {
            return Ok(view);
        }
        let owned = BlockPayload::from_cbor(blob)?;
        Ok(Self {
            dependencies: Cow::Owned(owned.dependencies),
            objects: Cow::Owned(owned.objects),
        })
    }

    fn parse_in_place(blob: &'a [u8]) -> Option<Self> {
        let (&header, mut rest) = blob.split_first()?;
        if header != 0xA2 {
            return None;
        }
        let (mut dependencies, mut objects) = (None, None);
        for _ in 0..2 {
            let (key, after_key) = cbor_item(rest, 3)?;
            let (value, after_value) = cbor_item(after_key, 2)?;
            match key {
                b"dependencies" if dependencies.is_none() => dependencies = Some(value),
                b"objects" if objects.is_none() => objects = Some(value),
                _ => return None,
            }
            rest = after_value;
        }
        if !rest.is_empty() {
            return None;
        }
        Some(Self {
            dependencies: Cow::Borrowed(dependencies?),
            objects: Cow::Borrowed(objects?),
        })
    }
}

/// A definite-length CBOR string of major type `major` (2 = bytes, 3 = text): its content and
/// what follows it.
fn cbor_item(data: &[u8], major: u8) -> Option<(&[u8], &[u8])> {
    let (&head, rest) = data.split_first()?;
    if head >> 5 != major {
        return None;
    }
    let (len, rest) = match head & 0x1F {
        n @ 0..=23 => (u64::from(n), rest),
        24 => (u64::from(*rest.first()?), rest.get(1..)?),
        25 => (
            u64::from(u16::from_be_bytes(*rest.first_chunk::<2>()?)),
            rest.get(2..)?,
        ),
        26 => (
            u64::from(u32::from_be_bytes(*rest.first_chunk::<4>()?)),
            rest.get(4..)?,
        ),
        27 => (
            u64::from_be_bytes(*rest.first_chunk::<8>()?),
            rest.get(8..)?,
        ),
        _ => return None,
    };
    let len = usize::try_from(len).ok()?;
    Some((rest.get(..len)?, rest.get(len..)?))
}

impl BlockPayload {
    /// Decodes the CBOR blob stored at `blobs/{process_id}/{stream_id}/{block_id}`.
    pub fn from_cbor(blob: &[u8]) -> FormatResult<Self> {
        let wire: WirePayload = ciborium::de::from_reader(blob).map_err(|e| FormatError::Cbor {
            what: "block payload",
            detail: e.to_string(),
        })?;
        Ok(Self {
            dependencies: wire.dependencies,
            objects: wire.objects,
        })
    }

    /// Encodes the payload as micromegas's ingestion stores it (byte strings).
    pub fn to_cbor(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.dependencies.len() + self.objects.len() + 32);
        let wire = WirePayloadRef {
            dependencies: &self.dependencies,
            objects: &self.objects,
        };
        // Writing to a Vec cannot fail, and the value has no map keys that could be rejected.
        if let Err(e) = ciborium::ser::into_writer(&wire, &mut out) {
            unreachable!("serializing a byte payload into memory failed: {e}");
        }
        out
    }

    /// Compresses the two raw transit buffers into a payload.
    pub fn compress(dependencies: &[u8], objects: &[u8]) -> Self {
        Self {
            dependencies: compress_frame(dependencies),
            objects: compress_frame(objects),
        }
    }
}

/// Compresses `data` as an LZ4 frame with the options micromegas's producer uses: 64 KiB linked
/// blocks with block and content checksums.
pub fn compress_frame(data: &[u8]) -> Vec<u8> {
    let info = lz4_flex::frame::FrameInfo::new()
        .block_size(lz4_flex::frame::BlockSize::Max64KB)
        .block_mode(lz4_flex::frame::BlockMode::Linked)
        .block_checksums(true)
        .content_checksum(true);
    let mut encoder =
        lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::with_capacity(data.len() / 2));
    // The sink is a Vec: writes cannot fail.
    if let Err(e) = encoder.write_all(data) {
        unreachable!("compressing into memory failed: {e}");
    }
    match encoder.finish() {
        Ok(out) => out,
        Err(e) => unreachable!("finishing an in-memory LZ4 frame failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_byte_strings() {
        let payload = BlockPayload::compress(b"deps bytes", &[7u8; 100_000]);
        let blob = payload.to_cbor();
        assert_eq!(blob[0], 0xA2, "a CBOR map of two entries");
        let back = BlockPayload::from_cbor(&blob).unwrap();
        assert_eq!(back, payload);
        let view = PayloadView::parse(&blob).unwrap();
        assert!(matches!(view.objects, Cow::Borrowed(_)), "read in place");
        assert_eq!(view.objects.as_ref(), payload.objects.as_slice());
        assert_eq!(view.dependencies.as_ref(), payload.dependencies.as_slice());
        let mut out = Vec::new();
        super::super::lz4::decompress_frame(&back.objects, &mut out, "objects").unwrap();
        assert_eq!(out, vec![7u8; 100_000]);
        assert_eq!(
            &back.objects[..4],
            &[0x04, 0x22, 0x4D, 0x18],
            "LZ4 frame magic"
        );
    }

    #[test]
    fn legacy_integer_arrays_are_accepted() {
        #[derive(Serialize)]
        struct Legacy {
            dependencies: Vec<u8>,
            objects: Vec<u8>,
        }
        let mut blob = Vec::new();
        ciborium::ser::into_writer(
            &Legacy {
                dependencies: vec![1, 2, 3, 250],
                objects: vec![],
            },
            &mut blob,
        )
        .unwrap();
        // serde serializes Vec<u8> as an array of integers: major type 4.
        assert!(blob.windows(1).any(|w| w[0] == 0x84));
        let back = BlockPayload::from_cbor(&blob).unwrap();
        assert_eq!(back.dependencies, vec![1, 2, 3, 250]);
        assert!(back.objects.is_empty());
        let view = PayloadView::parse(&blob).unwrap();
        assert_eq!(view.dependencies.as_ref(), &[1, 2, 3, 250]);
    }

    #[test]
    fn garbage_is_an_error() {
        for blob in [&b""[..], b"\xff\xff", b"\xa2\x63abc", b"\x80"] {
            let err = BlockPayload::from_cbor(blob).unwrap_err();
            assert!(matches!(err, FormatError::Cbor { .. }), "{err}");
            assert!(PayloadView::parse(blob).is_err());
        }
        // A byte string claiming more bytes than the blob holds.
        let mut blob = BlockPayload::compress(b"d", b"o").to_cbor();
        blob.truncate(blob.len() - 2);
        assert!(PayloadView::parse(&blob).is_err());
    }
}
