//! Bytes to structs and back, with no I/O: record batches, records, index entries, file headers
//! and checkpoints. `docs/FORMAT.md` is the byte map of everything here; `tests/format_doc.rs`
//! checks that the two agree.
//!
//! All multi-byte integers are little-endian. Decoding never trusts a length: every length is
//! checked against the bytes at hand and against a fixed limit before it is used or allocated,
//! and bad bytes give a [`FormatError`], never a panic.

mod batch;
mod epochs;
mod files;
mod quarantine;
mod record;
mod snapshot;
pub mod store;

pub use batch::{
    BATCH_HEADER_LEN, BATCH_MAGIC, BATCH_VERSION, Batch, BatchBuilder, BatchHeader, BatchParts,
    Compression, EncodedBatch, MAX_BATCH_BYTES, MAX_RECORDS_BYTES, crc_of,
};
pub use epochs::{
    EPOCH_ENTRY_LEN, EPOCHS_HEADER_LEN, EPOCHS_MAGIC, EPOCHS_VERSION, EpochEntry, EpochFileHeader,
    MAX_EPOCH_ENTRIES, decode_epochs, encode_epochs,
};
pub use files::{
    CHECKPOINT_MAGIC, CheckpointSlot, FILE_HEADER_LEN, FILE_VERSION, FileHeader, FileKind,
    META_MAGIC, MetaBody, OFFSET_INDEX_MAGIC, OffsetIndexEntry, SEGMENT_MAGIC, TIME_INDEX_MAGIC,
    TimeIndexEntry,
};
pub use files::{SegmentFile, parse_segment_file_name, parse_segment_name, segment_file_name};
pub use quarantine::{
    QUARANTINE_HEADER_LEN, QUARANTINE_MAGIC, QUARANTINE_VERSION, QuarantineHeader,
    parse_quarantine_file_name, quarantine_file_name,
};
pub use record::{Header, HeaderRefs, Record, RecordIter, RecordRef, RecordView};
pub use snapshot::{
    FileCopy, MANIFEST_CRC_LEN, MANIFEST_FILE_LEN, MANIFEST_HEADER_LEN, MANIFEST_MAGIC,
    MANIFEST_NAME, MANIFEST_PARTITION_LEN, MANIFEST_VERSION, MAX_MANIFEST_ENTRIES,
    MAX_MANIFEST_PATH, Manifest, ManifestFile, ManifestFileEntry, ManifestHeader,
    ManifestPartition, ManifestPartitionEntry, check_manifest_path,
};

/// Why a sequence of bytes is not a valid stratalog structure.
///
/// # Examples
///
/// ```
/// use stratalog::FormatError;
/// use stratalog::format::{BATCH_HEADER_LEN, BatchHeader};
///
/// // Ten bytes cannot hold a batch header: the error says what and how much.
/// let err = BatchHeader::parse(&[0u8; 10]).unwrap_err();
/// assert_eq!(
///     err,
///     FormatError::Truncated { what: "batch header", needed: BATCH_HEADER_LEN as u64, available: 10 }
/// );
/// assert!(err.to_string().contains("needs 64 bytes"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Fewer bytes are present than the structure needs (a torn or cut write).
    #[error("truncated {what}: needs {needed} bytes, {available} present")]
    Truncated {
        /// The structure being read.
        what: &'static str,
        /// Bytes it needs.
        needed: u64,
        /// Bytes present.
        available: u64,
    },
    /// The magic number is wrong: this is not the structure expected here.
    #[error("bad magic in {what}: found {found:#x}")]
    BadMagic {
        /// The structure being read.
        what: &'static str,
        /// The magic found (first bytes, little-endian).
        found: u64,
    },
    /// The format version is not one this build reads.
    #[error("unsupported {what} version {found}; this build reads version {supported}")]
    UnsupportedVersion {
        /// The structure being read.
        what: &'static str,
        /// The version found.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The stored checksum does not match the bytes.
    #[error("checksum mismatch in {what}: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// The structure being read.
        what: &'static str,
        /// The CRC stored in the bytes.
        stored: u32,
        /// The CRC computed over the bytes.
        computed: u32,
    },
    /// A length or count field is outside what the format allows.
    #[error("{what} is {value}, outside the allowed {min}..={max}")]
    OutOfBounds {
        /// The field.
        what: &'static str,
        /// Its value.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// A field holds a value the format does not define.
    #[error("invalid {what}: {value}")]
    Invalid {
        /// The field.
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// LZ4 decompression failed or did not give the promised length.
    #[error("lz4 decompression failed: {0}")]
    Decompress(String),
}

/// Checks `value` against `min..=max`.
pub(crate) fn check_bounds(
    what: &'static str,
    value: u64,
    min: u64,
    max: u64,
) -> Result<u64, FormatError> {
    if value < min || value > max {
        return Err(FormatError::OutOfBounds {
            what,
            value,
            min,
            max,
        });
    }
    Ok(value)
}

/// Checks that `available` bytes hold at least `needed`.
pub(crate) fn check_len(
    what: &'static str,
    needed: u64,
    available: usize,
) -> Result<(), FormatError> {
    if (available as u64) < needed {
        return Err(FormatError::Truncated {
            what,
            needed,
            available: available as u64,
        });
    }
    Ok(())
}
