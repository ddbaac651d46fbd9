//! What can be wrong with the bytes of one block or one stream's metadata.
//!
//! These errors know nothing of process, stream or block ids: the `format` layer only sees bytes.
//! The layers above wrap them in [`crate::Error`] with the ids of the thing at fault.

/// A defect found while decoding a block payload or a stream's transit metadata.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    /// The CBOR of a block payload or of a metadata list could not be read.
    #[error("invalid CBOR in {what}: {detail}")]
    Cbor {
        /// Which document was being read.
        what: &'static str,
        /// What the CBOR reader reported.
        detail: String,
    },
    /// An LZ4 frame could not be decompressed.
    #[error("invalid LZ4 frame in the {buffer} buffer: {detail}")]
    Lz4 {
        /// `dependencies` or `objects`.
        buffer: &'static str,
        /// What the LZ4 reader reported.
        detail: String,
    },
    /// An LZ4 frame inflates beyond the limit set for one buffer (a decompression bomb, or a
    /// producer configured far beyond micromegas's defaults): refused before it is allocated.
    #[error("the {buffer} buffer inflates beyond {limit} bytes (ScanOptions::max_inflated_bytes)")]
    Inflated {
        /// `dependencies` or `objects`.
        buffer: &'static str,
        /// The limit.
        limit: usize,
    },
    /// The stream's transit metadata does not describe a layout this reader can use.
    #[error("invalid stream metadata: {0}")]
    Metadata(String),
    /// A record's type index is not in the stream's metadata list.
    #[error(
        "unknown type index {index} at byte {offset} of the {buffer} buffer ({known} types declared)"
    )]
    UnknownTypeIndex {
        /// `dependencies` or `objects`.
        buffer: &'static str,
        /// The type index read from the buffer.
        index: u8,
        /// Byte offset of the record in the decompressed buffer.
        offset: usize,
        /// How many types the metadata declares.
        known: usize,
    },
    /// A record claims more bytes than the buffer holds.
    #[error(
        "record of type {type_name} at byte {offset} of the {buffer} buffer needs {needed} bytes, only {available} left"
    )]
    Truncated {
        /// `dependencies` or `objects`.
        buffer: &'static str,
        /// Name of the record's type.
        type_name: String,
        /// Byte offset of the record in the decompressed buffer.
        offset: usize,
        /// Bytes the record needs.
        needed: usize,
        /// Bytes left in the buffer.
        available: usize,
    },
    /// A record's content is inconsistent with its own type.
    #[error("malformed {type_name} record at byte {offset} of the {buffer} buffer: {detail}")]
    MalformedRecord {
        /// `dependencies` or `objects`.
        buffer: &'static str,
        /// Name of the record's type.
        type_name: String,
        /// Byte offset of the record in the decompressed buffer.
        offset: usize,
        /// What is wrong.
        detail: String,
    },
    /// An event or record refers to a dependency id that the block does not define (before it).
    #[error(
        "{referrer} refers to dependency id {id:#x}, which the block does not define{expected}"
    )]
    DanglingReference {
        /// What holds the reference (for example `BeginAsyncSpanEvent.span_desc`).
        referrer: String,
        /// The id that could not be resolved.
        id: u64,
        /// Empty, or `" as a <kind>"` when the id exists but is of the wrong kind.
        expected: String,
    },
    /// Two dependency records of one block have the same id.
    #[error("duplicate dependency id {id:#x} at byte {offset} of the dependencies buffer")]
    DuplicateDependency {
        /// The repeated id.
        id: u64,
        /// Byte offset of the second record.
        offset: usize,
    },
    /// A string is not valid in its declared encoding.
    #[error(
        "invalid {encoding} string in {type_name} record at byte {offset} of the dependencies buffer"
    )]
    InvalidString {
        /// Name of the record's type.
        type_name: &'static str,
        /// `UTF-8` or `UTF-16`.
        encoding: &'static str,
        /// Byte offset of the record in the decompressed buffer.
        offset: usize,
    },
    /// The process's clock parameters cannot convert ticks to time.
    #[error("invalid tick frequency: {0}")]
    InvalidFrequency(String),
    /// The decoded rows could not be added to the Arrow batch (a column past 2 GiB, too many
    /// distinct strings): a limit of the output, not a defect of the block.
    #[error("building the Arrow batch failed: {detail}")]
    Output {
        /// What Arrow reported.
        detail: String,
    },
}

impl FormatError {
    /// Whether the error says the bytes or the metadata are bad (a block that may be skipped
    /// and counted as corrupt), rather than a limit of the reader or of the process's clock.
    pub fn is_corrupt_data(&self) -> bool {
        !matches!(
            self,
            FormatError::Output { .. } | FormatError::InvalidFrequency(_)
        )
    }
}

/// Result of the `format` layer.
pub type FormatResult<T> = std::result::Result<T, FormatError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bad_bytes_are_corrupt_data() {
        let output = FormatError::Output {
            detail: "string column exceeds 2 GiB".into(),
        };
        assert!(!output.is_corrupt_data());
        assert!(!FormatError::InvalidFrequency("0".into()).is_corrupt_data());
        let truncated = FormatError::Truncated {
            buffer: "objects",
            type_name: "BeginAsyncSpanEvent".into(),
            offset: 3,
            needed: 40,
            available: 2,
        };
        assert!(truncated.is_corrupt_data());
        assert!(FormatError::Metadata("x".into()).is_corrupt_data());
    }
}
