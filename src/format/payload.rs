//! The stored blob of a block: CBOR `BlockPayload { dependencies, objects }`, each an LZ4 frame.
//!
//! Two CBOR encodings of the byte fields exist in real lakes: a byte string (current producers)
//! and an array of small integers, one per byte (older clients). Both are accepted.

use super::error::{FormatError, FormatResult};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::io::{Read, Write};

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

/// Decompresses one LZ4 frame into `out` (cleared first), reusing its allocation.
///
/// `buffer` names the buffer (`dependencies` or `objects`) in errors.
pub fn decompress_frame(frame: &[u8], out: &mut Vec<u8>, buffer: &'static str) -> FormatResult<()> {
    out.clear();
    lz4_flex::frame::FrameDecoder::new(frame)
        .read_to_end(out)
        .map_err(|e| FormatError::Lz4 {
            buffer,
            detail: e.to_string(),
        })?;
    Ok(())
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
        let mut out = Vec::new();
        decompress_frame(&back.objects, &mut out, "objects").unwrap();
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
    }

    #[test]
    fn garbage_is_an_error() {
        for blob in [&b""[..], b"\xff\xff", b"\xa2\x63abc", b"\x80"] {
            let err = BlockPayload::from_cbor(blob).unwrap_err();
            assert!(matches!(err, FormatError::Cbor { .. }), "{err}");
        }
        let mut out = Vec::new();
        let err = decompress_frame(b"\x04\x22\x4d\x18garbage", &mut out, "objects").unwrap_err();
        assert!(err.to_string().contains("objects"), "{err}");
    }
}
