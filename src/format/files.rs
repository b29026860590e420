//! File headers, index entries, the recovery checkpoint and the log's metadata.
//!
//! Every file starts with a 32-byte [`FileHeader`]:
//!
//! ```text
//! file_header = [u8; 8] magic | u32 version | u32 flags (0) | u64 base_offset
//!             | u32 reserved (0) | u32 crc      crc = CRC-32 of header bytes 0..28
//! ```

use zerocopy::little_endian::{I64, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{FormatError, check_len};

/// Length of the header every file starts with.
pub const FILE_HEADER_LEN: usize = 32;
/// The file format version this build writes and reads (segments, indexes, checkpoint, meta).
pub const FILE_VERSION: u32 = 1;
/// Magic of a segment (`.log`) file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"STRALOG\0";
/// Magic of an offset index (`.index`) file.
pub const OFFSET_INDEX_MAGIC: [u8; 8] = *b"STRAOIX\0";
/// Magic of a time index (`.timeindex`) file.
pub const TIME_INDEX_MAGIC: [u8; 8] = *b"STRATIX\0";
/// Magic of the recovery checkpoint file.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"STRACKP\0";
/// Magic of the log metadata file.
pub const META_MAGIC: [u8; 8] = *b"STRAMET\0";

/// One of the three files of a segment, named `{base:020}` plus its suffix (docs/FORMAT.md,
/// "Files"): this and [`segment_file_name`] / [`parse_segment_file_name`] are the one place
/// segment file names are spelled.
///
/// # Examples
///
/// ```
/// use stratalog::format::{SegmentFile, parse_segment_file_name, segment_file_name};
///
/// let name = segment_file_name(42, SegmentFile::TimeIndex);
/// assert_eq!(name, "00000000000000000042.timeindex");
/// assert_eq!(parse_segment_file_name(&name), Some((42, SegmentFile::TimeIndex)));
/// assert_eq!(parse_segment_file_name("42.log"), None); // not 20 digits
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentFile {
    /// The record batches (`.log`).
    Log,
    /// The sparse offset index (`.index`).
    OffsetIndex,
    /// The sparse time index (`.timeindex`).
    TimeIndex,
}

impl SegmentFile {
    /// The three, in the order their names are listed.
    pub const ALL: [SegmentFile; 3] = [
        SegmentFile::Log,
        SegmentFile::OffsetIndex,
        SegmentFile::TimeIndex,
    ];

    /// The file name's suffix, with its dot.
    pub fn suffix(self) -> &'static str {
        match self {
            SegmentFile::Log => ".log",
            SegmentFile::OffsetIndex => ".index",
            SegmentFile::TimeIndex => ".timeindex",
        }
    }
}

/// Digits of the base offset in a segment file name (`u64::MAX` has 20).
const SEGMENT_NAME_DIGITS: usize = 20;

/// The name of a segment's `file` for base offset `base`, e.g. `00000000000000000042.log`.
pub fn segment_file_name(base: u64, file: SegmentFile) -> String {
    format!("{base:020}{}", file.suffix())
}

/// The base offset and kind of a segment file name: exactly 20 ASCII digits (a value that
/// fits in a `u64`) followed by `.log`, `.index` or `.timeindex`. `None` for any other name
/// (temporary files, quarantine files, the checkpoint, ...).
pub fn parse_segment_file_name(name: &str) -> Option<(u64, SegmentFile)> {
    SegmentFile::ALL.into_iter().find_map(|file| {
        let stem = name.strip_suffix(file.suffix())?;
        if stem.len() != SEGMENT_NAME_DIGITS || !stem.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some((stem.parse().ok()?, file))
    })
}

/// The base offset in the name of a segment's record file (`00000000000000000042.log`);
/// `None` for every other name, including a segment's index files.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    match parse_segment_file_name(name)? {
        (base, SegmentFile::Log) => Some(base),
        _ => None,
    }
}

/// Which kind of file a header belongs to.
///
/// # Examples
///
/// ```
/// use stratalog::FormatError;
/// use stratalog::format::{FileHeader, FileKind, SEGMENT_MAGIC};
/// use zerocopy::IntoBytes;
///
/// assert_eq!(FileKind::Segment.magic(), SEGMENT_MAGIC);
/// let header = FileHeader::new(FileKind::OffsetIndex, 0);
/// // An index header is not a segment header.
/// let err = FileHeader::parse(header.as_bytes(), FileKind::Segment, 0).unwrap_err();
/// assert!(matches!(err, FormatError::BadMagic { .. }));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A segment (`.log`).
    Segment,
    /// An offset index (`.index`).
    OffsetIndex,
    /// A time index (`.timeindex`).
    TimeIndex,
    /// The recovery checkpoint.
    Checkpoint,
    /// The log metadata.
    Meta,
}

impl FileKind {
    /// The magic bytes of this kind.
    pub fn magic(self) -> [u8; 8] {
        match self {
            FileKind::Segment => SEGMENT_MAGIC,
            FileKind::OffsetIndex => OFFSET_INDEX_MAGIC,
            FileKind::TimeIndex => TIME_INDEX_MAGIC,
            FileKind::Checkpoint => CHECKPOINT_MAGIC,
            FileKind::Meta => META_MAGIC,
        }
    }

    fn name(self) -> &'static str {
        match self {
            FileKind::Segment => "segment header",
            FileKind::OffsetIndex => "offset index header",
            FileKind::TimeIndex => "time index header",
            FileKind::Checkpoint => "checkpoint header",
            FileKind::Meta => "meta header",
        }
    }
}

/// The header at the start of every file.
///
/// # Examples
///
/// ```
/// use stratalog::format::{FILE_HEADER_LEN, FileHeader, FileKind, SegmentFile, segment_file_name};
/// use stratalog::{Log, LogOptions};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let tmp = tempfile::tempdir()?;
/// let log = Log::open(tmp.path(), LogOptions::default())?;
/// log.append_records(&["a"])?.receipt.wait()?;
/// log.close()?;
/// // Every segment file starts with a header naming its kind and base offset.
/// let bytes = std::fs::read(tmp.path().join(segment_file_name(0, SegmentFile::Log)))?;
/// let header = FileHeader::parse(&bytes[..FILE_HEADER_LEN], FileKind::Segment, 0)?;
/// assert_eq!(header.base_offset.get(), 0);
/// // The wrong base offset is refused.
/// assert!(FileHeader::parse(&bytes, FileKind::Segment, 7).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct FileHeader {
    /// Which file this is.
    pub magic: [u8; 8],
    /// [`FILE_VERSION`].
    pub version: U32,
    /// Zero.
    pub flags: U32,
    /// Base offset of the segment the file belongs to (0 for checkpoint and meta).
    pub base_offset: U64,
    /// Zero.
    pub reserved: U32,
    /// CRC-32 of bytes 0..28.
    pub crc: U32,
}

const _: () = assert!(size_of::<FileHeader>() == FILE_HEADER_LEN);

impl FileHeader {
    /// A header for a file of `kind` belonging to `base_offset`.
    pub fn new(kind: FileKind, base_offset: u64) -> FileHeader {
        let mut header = FileHeader {
            magic: kind.magic(),
            version: FILE_VERSION.into(),
            flags: 0.into(),
            base_offset: base_offset.into(),
            reserved: 0.into(),
            crc: 0.into(),
        };
        header.crc = crc32fast::hash(&header.as_bytes()[..28]).into();
        header
    }

    /// Reads and checks the header at the start of `buf`: magic, version, crc, zero fields, and
    /// that the base offset is `expected_base`.
    pub fn parse(
        buf: &[u8],
        kind: FileKind,
        expected_base: u64,
    ) -> Result<FileHeader, FormatError> {
        let what = kind.name();
        check_len(what, FILE_HEADER_LEN as u64, buf.len())?;
        let header = FileHeader::read_from_bytes(&buf[..FILE_HEADER_LEN]).expect("length checked");
        if header.magic != kind.magic() {
            return Err(FormatError::BadMagic {
                what,
                found: u64::from_le_bytes(header.magic),
            });
        }
        let computed = crc32fast::hash(&buf[..28]);
        if header.crc.get() != computed {
            return Err(FormatError::ChecksumMismatch {
                what,
                stored: header.crc.get(),
                computed,
            });
        }
        if header.version.get() != FILE_VERSION {
            return Err(FormatError::UnsupportedVersion {
                what,
                found: header.version.get(),
                supported: FILE_VERSION,
            });
        }
        if header.flags.get() != 0 {
            return Err(FormatError::Invalid {
                what: "file header flags",
                value: header.flags.get().into(),
            });
        }
        if header.reserved.get() != 0 {
            return Err(FormatError::Invalid {
                what: "file header reserved field",
                value: header.reserved.get().into(),
            });
        }
        if header.base_offset.get() != expected_base {
            return Err(FormatError::Invalid {
                what: "file header base offset",
                value: header.base_offset.get(),
            });
        }
        Ok(header)
    }
}

/// One entry of the sparse offset index: the batch holding `base + relative_offset` starts at
/// byte `position` of the segment.
///
/// # Examples
///
/// ```
/// use stratalog::format::OffsetIndexEntry;
/// use zerocopy::{FromBytes, IntoBytes};
///
/// let entry = OffsetIndexEntry { relative_offset: 5.into(), position: 4096.into() };
/// // 8 bytes: two little-endian u32.
/// assert_eq!(entry.as_bytes(), &[5, 0, 0, 0, 0, 0x10, 0, 0]);
/// assert_eq!(OffsetIndexEntry::read_from_bytes(entry.as_bytes()), Ok(entry));
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct OffsetIndexEntry {
    /// Base offset of the batch, minus the segment's base offset.
    pub relative_offset: U32,
    /// Byte position of the batch in the segment file.
    pub position: U32,
}

const _: () = assert!(size_of::<OffsetIndexEntry>() == 8);

/// One entry of the sparse time index: no record at or below `base + relative_offset` has a
/// timestamp above `timestamp`, and some record at or below it has exactly `timestamp`.
///
/// # Examples
///
/// ```
/// use stratalog::format::TimeIndexEntry;
/// use zerocopy::{FromBytes, IntoBytes};
///
/// let entry = TimeIndexEntry { timestamp: 1_700_000_000_000.into(), relative_offset: 9.into() };
/// // 12 bytes: a little-endian i64, then a u32.
/// assert_eq!(entry.as_bytes().len(), 12);
/// assert_eq!(&entry.as_bytes()[8..], &[9, 0, 0, 0]);
/// assert_eq!(TimeIndexEntry::read_from_bytes(entry.as_bytes()), Ok(entry));
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct TimeIndexEntry {
    /// Largest timestamp in the segment up to and including this batch.
    pub timestamp: I64,
    /// Last offset of the batch, minus the segment's base offset.
    pub relative_offset: U32,
}

const _: () = assert!(size_of::<TimeIndexEntry>() == 12);

/// One of the two slots of the recovery checkpoint file. The two slots are written in turn, so
/// a torn write of one leaves the other intact; the valid slot with the higher sequence wins.
///
/// # Examples
///
/// ```
/// use stratalog::format::CheckpointSlot;
/// use zerocopy::{FromZeros, IntoBytes};
///
/// let mut slot = CheckpointSlot::new_zeroed();
/// slot.sequence = 1.into();
/// slot.next_offset = 100.into();
/// let slot = slot.seal();
/// assert_eq!(CheckpointSlot::parse(slot.as_bytes()), Some(slot));
/// // A torn slot (any byte changed) is not used.
/// let mut torn = slot.as_bytes().to_vec();
/// torn[40] ^= 1;
/// assert_eq!(CheckpointSlot::parse(&torn), None);
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct CheckpointSlot {
    /// CRC-32 of bytes 4..64 of the slot.
    pub crc: U32,
    /// 1 if written by a clean close (nothing to scan), else 0.
    pub clean: U32,
    /// Increases with every write.
    pub sequence: U64,
    /// Base offset of the segment `position` refers to.
    pub segment_base: U64,
    /// Every byte of that segment below `position` (and every earlier segment) was fsynced.
    pub position: U64,
    /// The offset the next batch after `position` gets.
    pub next_offset: U64,
    /// Largest timestamp in the segment below `position`.
    pub max_timestamp: I64,
    /// Zero.
    pub reserved: [u8; 16],
}

const _: () = assert!(size_of::<CheckpointSlot>() == 64);

impl CheckpointSlot {
    /// Fills in the CRC.
    pub fn seal(mut self) -> Self {
        self.crc = crc32fast::hash(&self.as_bytes()[4..]).into();
        self
    }

    /// Reads a slot, returning `None` if its CRC or fields are bad (a torn or never-written slot).
    pub fn parse(buf: &[u8]) -> Option<CheckpointSlot> {
        let slot = CheckpointSlot::read_from_bytes(buf.get(..64)?).ok()?;
        let sound = slot.crc.get() == crc32fast::hash(&buf[4..64])
            && slot.clean.get() <= 1
            && slot.reserved == [0; 16]
            && slot.sequence.get() > 0;
        sound.then_some(slot)
    }
}

/// The body of the `log.meta` file, after its file header: the log's settings and its start
/// offset. It is replaced whole (write to a temporary file, fsync, rename, fsync directory).
///
/// # Examples
///
/// ```
/// use stratalog::FormatError;
/// use stratalog::format::MetaBody;
/// use zerocopy::{FromZeros, IntoBytes};
///
/// # fn main() -> Result<(), FormatError> {
/// let mut body = MetaBody::new_zeroed();
/// body.segment_bytes = (1u64 << 30).into();
/// body.retention_bytes = u64::MAX.into(); // no limit
/// let body = body.seal();
/// assert_eq!(MetaBody::parse(body.as_bytes())?, body);
/// let mut bad = body.as_bytes().to_vec();
/// bad[16] ^= 1;
/// assert!(matches!(MetaBody::parse(&bad), Err(FormatError::ChecksumMismatch { .. })));
/// # Ok(())
/// # }
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct MetaBody {
    /// CRC-32 of bytes 4..64 of the body.
    pub crc: U32,
    /// Zero.
    pub reserved0: U32,
    /// First offset the log holds (raised by retention).
    pub start_offset: U64,
    /// Roll the active segment when it would exceed this many bytes.
    pub segment_bytes: U64,
    /// Roll the active segment when its first append since the log was opened is older than
    /// this many milliseconds (0 = never).
    pub segment_ms: U64,
    /// Delete old sealed segments while the log is larger than this (`u64::MAX` = no limit).
    pub retention_bytes: U64,
    /// Delete sealed segments whose newest record is older than this (`u64::MAX` = no limit).
    pub retention_ms: U64,
    /// Bytes between offset index entries.
    pub index_interval_bytes: U32,
    /// Default compression (0 none, 1 LZ4).
    pub compression: U16,
    /// Zero.
    pub reserved1: U16,
    /// Zero.
    pub reserved2: U64,
}

const _: () = assert!(size_of::<MetaBody>() == 64);

impl MetaBody {
    /// Fills in the CRC.
    pub fn seal(mut self) -> Self {
        self.crc = crc32fast::hash(&self.as_bytes()[4..]).into();
        self
    }

    /// Reads and checks a body.
    pub fn parse(buf: &[u8]) -> Result<MetaBody, FormatError> {
        check_len("meta body", 64, buf.len())?;
        let body = MetaBody::read_from_bytes(&buf[..64]).expect("length checked");
        let computed = crc32fast::hash(&buf[4..64]);
        if body.crc.get() != computed {
            return Err(FormatError::ChecksumMismatch {
                what: "meta body",
                stored: body.crc.get(),
                computed,
            });
        }
        if body.reserved0.get() != 0 || body.reserved1.get() != 0 || body.reserved2.get() != 0 {
            return Err(FormatError::Invalid {
                what: "meta reserved field",
                value: 1,
            });
        }
        if body.compression.get() > 1 {
            return Err(FormatError::Invalid {
                what: "meta compression",
                value: body.compression.get().into(),
            });
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_file_names_round_trip() {
        for base in [0, 42, u64::MAX] {
            for file in SegmentFile::ALL {
                let name = segment_file_name(base, file);
                assert_eq!(name.len(), 20 + file.suffix().len());
                assert_eq!(parse_segment_file_name(&name), Some((base, file)));
                assert_eq!(
                    parse_segment_name(&name),
                    (file == SegmentFile::Log).then_some(base)
                );
            }
        }
        assert_eq!(
            segment_file_name(42, SegmentFile::Log),
            "00000000000000000042.log"
        );
    }

    #[test]
    fn other_names_are_not_segment_files() {
        for name in [
            "42.log",
            "000000000000000000042.log",
            "0000000000000000004x.log",
            "+0000000000000000042.log",
            "99999999999999999999.log", // above u64::MAX
            "00000000000000000042.log.tmp",
            "00000000000000000042.index.tmp",
            "00000000000000000042-000001.quarantine",
            "00000000000000000042.LOG",
            "recovery.checkpoint",
            "log.meta",
            ".lock",
            "",
        ] {
            assert_eq!(parse_segment_file_name(name), None, "{name:?}");
            assert_eq!(parse_segment_name(name), None, "{name:?}");
        }
    }
}
