//! LZ4 frame decoding, strict: the frame must be complete, with its end mark, and every
//! checksum it declares must match. Blocks are decompressed with `lz4_flex` straight into the
//! output buffer; linked blocks use the preceding 64 KiB of output as their dictionary.
//!
//! A frame cut at a block boundary is an error here, where a lenient stream decoder would
//! return the first blocks as if they were all the data. [`FrameReader`] reads a frame a few
//! blocks at a time, so that a large buffer need not be held whole.

use super::error::{FormatError, FormatResult};
use xxhash_rust::xxh32::{Xxh32, xxh32};

const MAGIC: u32 = 0x184D_2204;
/// The history a linked LZ4 block may refer to.
pub(crate) const WINDOW: usize = 64 * 1024;

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.data.get(self.pos..)?.get(..n)?;
        self.pos += n;
        Some(out)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|b| b.first_chunk::<4>())
            .map(|b| u32::from_le_bytes(*b))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|b| b.first_chunk::<8>())
            .map(|b| u64::from_le_bytes(*b))
    }
}

/// The default limit on the inflated size of one buffer of a block: 64 MiB. micromegas producers
/// flush a thread block when its buffer reaches its configured size (10 MiB by default, 64 KiB
/// to 1 MiB in most deployments), so a buffer of a real block stays near that size; 64 MiB
/// leaves six times the default, and refuses a frame that inflates a few MB into gigabytes.
pub const DEFAULT_INFLATE_LIMIT: usize = 64 * 1024 * 1024;

/// Decompresses one LZ4 frame into `out` (cleared first), reusing its allocation, up to
/// [`DEFAULT_INFLATE_LIMIT`] bytes.
///
/// `buffer` names the buffer (`dependencies` or `objects`) in errors.
pub fn decompress_frame(frame: &[u8], out: &mut Vec<u8>, buffer: &'static str) -> FormatResult<()> {
    let result = decompress_frame_into(frame, out, buffer, DEFAULT_INFLATE_LIMIT);
    out.truncate(*result.as_ref().unwrap_or(&0));
    result.map(|_| ())
}

/// Decompresses one LZ4 frame into the start of `out` and returns its length. Bytes of `out`
/// past that length are left as they were: a buffer reused from block to block is only
/// zero-filled when it grows, never again. A frame whose content would pass `limit` bytes is
/// refused before the memory is allocated ([`FormatError::Inflated`]).
pub(crate) fn decompress_frame_into(
    frame: &[u8],
    out: &mut Vec<u8>,
    buffer: &'static str,
    limit: usize,
) -> FormatResult<usize> {
    let mut reader = FrameReader::new(frame, buffer, limit)?;
    let mut len = 0;
    reader.read_into(frame, out, &mut len, usize::MAX)?;
    Ok(len)
}

/// An LZ4 frame decompressed a few blocks at a time, with the checks of
/// [`decompress_frame_into`]: the caller keeps as little of the content as it needs (at least the
/// last 64 KiB before the next block, which a linked block may refer to).
#[derive(Clone)]
pub(crate) struct FrameReader {
    buffer: &'static str,
    limit: usize,
    /// Where the next block (or the end mark) starts in the frame.
    pos: usize,
    linked: bool,
    block_checksums: bool,
    content_checksum: bool,
    content_size: Option<u64>,
    max_block: usize,
    /// Bytes of content produced so far.
    produced: usize,
    /// The hash of the content, when the frame checks it without block checksums.
    hasher: Option<Xxh32>,
    done: bool,
}

impl std::fmt::Debug for FrameReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameReader")
            .field("buffer", &self.buffer)
            .field("pos", &self.pos)
            .field("produced", &self.produced)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl FrameReader {
    /// Reads the frame's header; `buffer` names the buffer (`dependencies` or `objects`) in
    /// errors, `limit` is the most content the frame may hold.
    pub fn new(frame: &[u8], buffer: &'static str, limit: usize) -> FormatResult<Self> {
        let err = |detail: String| FormatError::Lz4 { buffer, detail };
        let mut r = Cursor {
            data: frame,
            pos: 0,
        };
        let truncated =
            |what: &str, at: usize| err(format!("frame truncated at byte {at}: missing {what}"));
        let magic = r.u32().ok_or_else(|| truncated("magic number", 0))?;
        if magic != MAGIC {
            return Err(err(format!("not an LZ4 frame (magic {magic:#010x})")));
        }
        let flags = r.u8().ok_or_else(|| truncated("frame descriptor", r.pos))?;
        let block_descriptor = r.u8().ok_or_else(|| truncated("frame descriptor", r.pos))?;
        if flags >> 6 != 1 {
            return Err(err(format!("unsupported frame version {}", flags >> 6)));
        }
        if flags & 0x02 != 0 || block_descriptor & 0x8F != 0 {
            return Err(err("reserved bits are set in the frame descriptor".into()));
        }
        if flags & 0x01 != 0 {
            return Err(err("frames with a dictionary id are not supported".into()));
        }
        let max_block = match (block_descriptor >> 4) & 0x07 {
            4 => 64 * 1024,
            5 => 256 * 1024,
            6 => 1024 * 1024,
            7 => 4 * 1024 * 1024,
            other => return Err(err(format!("invalid block size code {other}"))),
        };
        let content_size = if flags & 0x08 != 0 {
            Some(r.u64().ok_or_else(|| truncated("content size", r.pos))?)
        } else {
            None
        };
        if content_size.is_some_and(|n| n > limit as u64) {
            return Err(FormatError::Inflated { buffer, limit });
        }
        let descriptor_end = r.pos;
        let header_checksum = r.u8().ok_or_else(|| truncated("header checksum", r.pos))?;
        let expected = (xxh32(&frame[4..descriptor_end], 0) >> 8) as u8;
        if header_checksum != expected {
            return Err(err("header checksum mismatch".into()));
        }
        let block_checksums = flags & 0x10 != 0;
        let content_checksum = flags & 0x04 != 0;
        Ok(Self {
            buffer,
            limit,
            pos: r.pos,
            linked: flags & 0x20 == 0,
            block_checksums,
            content_checksum,
            content_size,
            max_block,
            produced: 0,
            // Block checksums already cover every stored byte of every block; hashing the
            // decompressed content again only when there are none halves the hashing cost.
            hasher: (content_checksum && !block_checksums).then(|| Xxh32::new(0)),
            done: false,
        })
    }

    /// Whether the end of the frame was read (and its checks passed).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Decompresses blocks of `frame` (the one given to [`new`](Self::new)) after the first
    /// `*len` bytes of `out`, the last 64 KiB of which are the content just before them, until
    /// at least `want` bytes were added or the frame ends; `*len` grows by what was added.
    pub fn read_into(
        &mut self,
        frame: &[u8],
        out: &mut Vec<u8>,
        len: &mut usize,
        want: usize,
    ) -> FormatResult<()> {
        let start = *len;
        while !self.done && *len - start < want {
            self.read_block(frame, out, len)?;
        }
        Ok(())
    }

    /// Decompresses the next block after `out[..*len]`, or checks the end of the frame.
    fn read_block(&mut self, frame: &[u8], out: &mut Vec<u8>, len: &mut usize) -> FormatResult<()> {
        let buffer = self.buffer;
        let inflated = || FormatError::Inflated {
            buffer,
            limit: self.limit,
        };
        let err = |detail: String| FormatError::Lz4 { buffer, detail };
        let truncated =
            |what: &str, at: usize| err(format!("frame truncated at byte {at}: missing {what}"));
        let mut r = Cursor {
            data: frame,
            pos: self.pos,
        };
        let at = r.pos;
        let word = r.u32().ok_or_else(|| truncated("end mark", at))?;
        if word == 0 {
            return self.end(frame, r);
        }
        let stored = word & 0x8000_0000 != 0;
        let size = (word & 0x7FFF_FFFF) as usize;
        if size > self.max_block {
            return Err(err(format!(
                "block at byte {at} declares {size} bytes, more than the frame's {}-byte blocks",
                self.max_block
            )));
        }
        let data = r.take(size).ok_or_else(|| truncated("block data", at))?;
        if self.block_checksums {
            let sum = r.u32().ok_or_else(|| truncated("block checksum", at))?;
            if xxh32(data, 0) != sum {
                return Err(err(format!("checksum mismatch in the block at byte {at}")));
            }
        }
        self.pos = r.pos;
        let full = if stored { data.len() } else { self.max_block };
        // No more room than the limit leaves: a block that needs more is refused below.
        let room = full.min(self.limit.saturating_sub(self.produced));
        if room < full && (stored || room == 0) {
            return Err(inflated());
        }
        let begin = *len;
        if out.len() < begin + room {
            out.resize(begin + room, 0);
        }
        let (previous, rest) = out.split_at_mut(begin);
        let dst = &mut rest[..room];
        let n = if stored {
            dst.copy_from_slice(data);
            room
        } else {
            let dict = if self.linked {
                &previous[begin.saturating_sub(WINDOW)..]
            } else {
                &[][..]
            };
            match lz4_flex::block::decompress_into_with_dict(data, dst, dict) {
                Ok(n) => n,
                // Cut short by the limit, not damaged (the checksums held).
                Err(_) if room < full => return Err(inflated()),
                Err(e) => return Err(err(format!("block at byte {at}: {e}"))),
            }
        };
        *len = begin + n;
        self.produced += n;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&out[begin..begin + n]);
        }
        Ok(())
    }

    /// The end mark was read: the content checksum, size and the frame's end are checked.
    fn end(&mut self, frame: &[u8], mut r: Cursor<'_>) -> FormatResult<()> {
        let buffer = self.buffer;
        let err = |detail: String| FormatError::Lz4 { buffer, detail };
        if self.content_checksum {
            let sum = r.u32().ok_or_else(|| {
                err(format!(
                    "frame truncated at byte {}: missing content checksum",
                    r.pos
                ))
            })?;
            if let Some(hasher) = &self.hasher
                && hasher.digest() != sum
            {
                return Err(err("content checksum mismatch".into()));
            }
        }
        if let Some(n) = self.content_size
            && n != self.produced as u64
        {
            return Err(err(format!(
                "frame declares {n} bytes of content, holds {}",
                self.produced
            )));
        }
        if r.pos != frame.len() {
            return Err(err(format!(
                "{} unexpected bytes after the end of the frame",
                frame.len() - r.pos
            )));
        }
        self.pos = r.pos;
        self.done = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::payload::compress_frame;
    use std::io::Read;

    fn sample(n: usize) -> Vec<u8> {
        // Compressible but not trivial: repeated records with a counter, like transit buffers.
        (0..n)
            .map(|i| ((i / 7) as u8).wrapping_mul(31) ^ (i % 13) as u8)
            .collect()
    }

    #[test]
    fn round_trips_multi_block_linked_frames() {
        for n in [0, 1, 1000, 64 * 1024, 200_000, 1_000_003] {
            let data = sample(n);
            let frame = compress_frame(&data);
            let mut out = Vec::new();
            decompress_frame(&frame, &mut out, "objects").unwrap();
            assert_eq!(out, data, "{n} bytes");
            let mut reference = Vec::new();
            lz4_flex::frame::FrameDecoder::new(frame.as_slice())
                .read_to_end(&mut reference)
                .unwrap();
            assert_eq!(reference, data);
        }
    }

    #[test]
    fn a_frame_read_a_few_blocks_at_a_time_gives_the_same_content() {
        // Linked 64 KiB blocks (as micromegas writes them): each block may refer to the 64 KiB
        // before it, which is all the reader keeps between steps.
        for n in [0, 1000, 64 * 1024, 200_000, 1_000_003] {
            let data = sample(n);
            let frame = compress_frame(&data);
            for want in [1, 70_000, 300_000] {
                let mut reader =
                    FrameReader::new(&frame, "objects", DEFAULT_INFLATE_LIMIT).unwrap();
                let (mut window, mut len, mut got) = (Vec::new(), 0, Vec::new());
                while !reader.is_done() {
                    let before = len;
                    reader
                        .read_into(&frame, &mut window, &mut len, want)
                        .unwrap();
                    got.extend_from_slice(&window[before..len]);
                    // Keep only the dictionary of the next block.
                    let cut = len.saturating_sub(WINDOW);
                    window.copy_within(cut..len, 0);
                    len -= cut;
                    assert!(len <= WINDOW);
                }
                assert_eq!(got, data, "{n} bytes, {want} at a time");
            }
        }
        // A bomb is refused however it is read.
        let frame = compress_frame(&vec![0u8; 3 * 1024 * 1024]);
        let mut reader = FrameReader::new(&frame, "objects", 1024 * 1024).unwrap();
        let (mut window, mut len) = (Vec::new(), 0);
        let e = loop {
            match reader.read_into(&frame, &mut window, &mut len, 100_000) {
                Ok(()) => {
                    assert!(!reader.is_done(), "read past the limit");
                    let cut = len.saturating_sub(WINDOW);
                    window.copy_within(cut..len, 0);
                    len -= cut;
                }
                Err(e) => break e,
            }
        };
        assert!(matches!(e, FormatError::Inflated { .. }), "{e}");
    }

    #[test]
    fn a_frame_inflating_beyond_the_limit_is_refused_before_allocation() {
        // 5 MiB of zeros compress to a few KiB: a small bomb.
        let frame = compress_frame(&vec![0u8; 5 * 1024 * 1024]);
        assert!(frame.len() < 64 * 1024);
        let limit = 1024 * 1024 + 17;
        let mut out = Vec::new();
        let e = decompress_frame_into(&frame, &mut out, "objects", limit).unwrap_err();
        assert!(
            matches!(e, FormatError::Inflated { buffer: "objects", limit: l } if l == limit),
            "{e}"
        );
        assert!(out.len() <= limit, "{} bytes allocated", out.len());
        assert!(e.is_corrupt_data(), "skippable like damage");
        // At the limit exactly, it is read.
        let frame = compress_frame(&vec![7u8; limit]);
        assert_eq!(
            decompress_frame_into(&frame, &mut out, "objects", limit).unwrap(),
            limit
        );
        // A declared content size beyond the limit is refused at once.
        let mut declared = MAGIC.to_le_bytes().to_vec();
        let descriptor = [0x40 | 0x20 | 0x08, 0x40]; // version 1, independent, content size
        declared.extend(descriptor);
        declared.extend((1u64 << 40).to_le_bytes());
        declared.push((xxh32(&declared[4..], 0) >> 8) as u8);
        declared.extend(0u32.to_le_bytes());
        assert!(matches!(
            decompress_frame_into(&declared, &mut out, "objects", limit),
            Err(FormatError::Inflated { .. })
        ));
    }

    #[test]
    fn truncation_at_any_byte_is_an_error() {
        let frame = compress_frame(&sample(70_000));
        let mut out = Vec::new();
        for cut in 0..frame.len() {
            let err = decompress_frame(&frame[..cut], &mut out, "objects").unwrap_err();
            assert!(err.to_string().contains("objects"), "{err}");
        }
        let mut longer = frame.clone();
        longer.push(0);
        assert!(decompress_frame(&longer, &mut out, "objects").is_err());
    }

    #[test]
    fn reused_buffers_hold_exactly_the_new_content() {
        let big = sample(300_000);
        let small = sample(5_000);
        let mut out = Vec::new();
        decompress_frame(&compress_frame(&big), &mut out, "objects").unwrap();
        decompress_frame(&compress_frame(&small), &mut out, "objects").unwrap();
        assert_eq!(out, small);
        let n = decompress_frame_into(
            &compress_frame(&big),
            &mut out,
            "objects",
            DEFAULT_INFLATE_LIMIT,
        )
        .unwrap();
        assert_eq!(&out[..n], big.as_slice());
    }

    #[test]
    fn no_flipped_bit_goes_unnoticed_into_the_data() {
        let data = sample(10_000);
        let frame = compress_frame(&data);
        let mut out = Vec::new();
        for i in 0..frame.len() {
            let mut bad = frame.clone();
            bad[i] ^= 0x10;
            match decompress_frame(&bad, &mut out, "objects") {
                Err(_) => {}
                // Block checksums cover every stored block byte; only a flip in the trailing
                // content checksum, which is then not needed, leaves the data intact.
                Ok(()) => {
                    assert!(i >= frame.len() - 4, "byte {i} flipped unnoticed");
                    assert_eq!(out, data);
                }
            }
        }
    }
}
