//! The record batch: the unit of append, compression, checksum, index, replication and read.
//!
//! ```text
//! batch  = header (64 bytes) | records section (uncompressed, or one LZ4 block)
//! header = u32 crc | u32 magic | u16 version | u16 attributes | u32 length
//!        | u64 base_offset | u64 leader_epoch | i64 first_timestamp | i64 max_timestamp
//!        | u32 record_count | u32 records_len | u64 reserved
//! ```
//!
//! `crc` is CRC-32 (IEEE, `crc32fast`) over every byte of the batch after the crc field: the rest
//! of the header and the records section as stored. `length` counts the whole batch, header
//! included. `records_len` is the length of the records section before compression.

use std::sync::Arc;

use bytes::Bytes;
use zerocopy::little_endian::{I64, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::record::{MIN_RECORD_LEN, Record, RecordIter, encode_record};
use super::{FormatError, check_bounds, check_len};

/// Magic number of a batch header (`"STB1"` as bytes on disk).
pub const BATCH_MAGIC: u32 = u32::from_le_bytes(*b"STB1");
/// The batch format version this build writes and reads.
pub const BATCH_VERSION: u16 = 1;
/// Length of the fixed batch header.
pub const BATCH_HEADER_LEN: usize = 64;
/// The largest batch (header included) that is written or accepted when read.
pub const MAX_BATCH_BYTES: u32 = 64 << 20;
/// The largest records section, before compression, that is written or decompressed.
pub const MAX_RECORDS_BYTES: u32 = 128 << 20;

const COMPRESSION_MASK: u16 = 0x0007;

/// The fixed batch header, read and written in place.
///
/// # Examples
///
/// ```
/// use stratalog::format::{BATCH_HEADER_LEN, BatchBuilder, BatchHeader, Compression};
///
/// # fn main() -> Result<(), stratalog::FormatError> {
/// let mut builder = BatchBuilder::new(Compression::None);
/// builder.push_value(1_000, b"a")?.push_value(2_000, b"b")?;
/// let mut encoded = builder.encode(7)?;
/// encoded.stamp(100);
/// let header = BatchHeader::parse(encoded.as_bytes())?;
/// assert_eq!((header.base_offset.get(), header.last_offset()), (100, 101));
/// assert_eq!((header.leader_epoch.get(), header.max_timestamp.get()), (7, 2_000));
/// assert_eq!(header.length.get() as usize, encoded.as_bytes().len());
/// // Fewer bytes than a header is an error, not a panic.
/// assert!(BatchHeader::parse(&encoded.as_bytes()[..BATCH_HEADER_LEN - 1]).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BatchHeader {
    /// CRC-32 over bytes 4..length of the batch.
    pub crc: U32,
    /// [`BATCH_MAGIC`].
    pub magic: U32,
    /// [`BATCH_VERSION`].
    pub version: U16,
    /// Bits 0-2: compression (0 none, 1 LZ4); other bits zero.
    pub attributes: U16,
    /// Length of the whole batch in bytes, header included.
    pub length: U32,
    /// Offset of the first record.
    pub base_offset: U64,
    /// Epoch of the leader that appended the batch.
    pub leader_epoch: U64,
    /// Timestamp of the first record (milliseconds since the Unix epoch).
    pub first_timestamp: I64,
    /// Largest record timestamp in the batch.
    pub max_timestamp: I64,
    /// Number of records (at least 1).
    pub record_count: U32,
    /// Length of the records section before compression.
    pub records_len: U32,
    /// Zero.
    pub reserved: U64,
}

const _: () = assert!(size_of::<BatchHeader>() == BATCH_HEADER_LEN);

/// How the records section of a batch is stored.
///
/// # Examples
///
/// ```
/// use stratalog::format::{Batch, BatchBuilder, Compression};
///
/// # fn main() -> Result<(), stratalog::FormatError> {
/// assert_eq!("lz4".parse(), Ok(Compression::Lz4));
/// assert_eq!(Compression::Lz4.name(), "lz4");
/// let value = vec![b'x'; 4096];
/// let mut sizes = Vec::new();
/// for compression in [Compression::None, Compression::Lz4] {
///     let mut builder = BatchBuilder::new(compression);
///     builder.push_value(0, &value)?;
///     let mut encoded = builder.encode(0)?;
///     encoded.stamp(0);
///     let batch = Batch::validate(encoded.as_bytes().to_vec().into())?;
///     assert_eq!(batch.header().compression(), compression);
///     // Either way the record reads back the same.
///     assert_eq!(batch.records()?.next().unwrap()?.value, &value[..]);
///     sizes.push(batch.len());
/// }
/// assert!(sizes[1] < sizes[0], "repetitive bytes compress");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Stored as encoded.
    #[default]
    None,
    /// One LZ4 block (`lz4_flex` block format, no size prefix).
    Lz4,
}

impl Compression {
    fn from_attributes(attributes: u16) -> Result<Self, FormatError> {
        if attributes & !COMPRESSION_MASK != 0 {
            return Err(FormatError::Invalid {
                what: "batch attributes",
                value: attributes.into(),
            });
        }
        match attributes & COMPRESSION_MASK {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Lz4),
            other => Err(FormatError::Invalid {
                what: "compression",
                value: other.into(),
            }),
        }
    }

    fn attributes(self) -> u16 {
        match self {
            Compression::None => 0,
            Compression::Lz4 => 1,
        }
    }

    /// The name used on the command line and in dumps (`none`, `lz4`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            other => Err(format!("unknown compression {other:?}; use none or lz4")),
        }
    }
}

/// Collects records into a batch. Encoding happens in [`BatchBuilder::encode`], which the log
/// calls outside its write lock.
///
/// # Examples
///
/// ```
/// use stratalog::format::{BatchBuilder, Compression, Record};
///
/// # fn main() -> Result<(), stratalog::FormatError> {
/// let mut builder = BatchBuilder::new(Compression::None);
/// assert!(builder.is_empty());
/// let headers: &[(&[u8], &[u8])] = &[(b"trace", b"42")];
/// builder
///     .push(&Record { timestamp: 1, key: Some(b"k"), value: b"v", headers })?
///     .push_value(2, b"w")?;
/// assert_eq!(builder.len(), 2);
/// let encoded = builder.encode(0)?;
/// assert_eq!(encoded.record_count(), 2);
/// builder.clear();
/// assert!(builder.is_empty());
/// // An empty batch cannot be encoded.
/// assert!(builder.encode(0).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct BatchBuilder {
    records: Vec<u8>,
    count: u32,
    first_timestamp: i64,
    max_timestamp: i64,
    compression: Compression,
}

impl BatchBuilder {
    /// An empty batch whose records section will be stored with `compression`.
    pub fn new(compression: Compression) -> Self {
        BatchBuilder {
            compression,
            ..Default::default()
        }
    }

    /// Adds a record. Fails if the batch would exceed [`MAX_RECORDS_BYTES`] or a key, value or
    /// header exceeds its length field.
    pub fn push(&mut self, record: &Record<'_>) -> Result<&mut Self, FormatError> {
        let before = self.records.len();
        // A record that fails half-way must leave nothing behind.
        if let Err(e) = encode_record(record, &mut self.records) {
            self.records.truncate(before);
            return Err(e);
        }
        if self.records.len() > MAX_RECORDS_BYTES as usize {
            self.records.truncate(before);
            return Err(FormatError::OutOfBounds {
                what: "records section",
                value: (before + record.encoded_len()) as u64,
                min: 0,
                max: MAX_RECORDS_BYTES.into(),
            });
        }
        if self.count == 0 {
            self.first_timestamp = record.timestamp;
            self.max_timestamp = record.timestamp;
        }
        self.max_timestamp = self.max_timestamp.max(record.timestamp);
        self.count += 1;
        Ok(self)
    }

    /// Adds a record with only a value.
    pub fn push_value(&mut self, timestamp: i64, value: &[u8]) -> Result<&mut Self, FormatError> {
        self.push(&Record {
            timestamp,
            key: None,
            value,
            headers: &[],
        })
    }

    /// Number of records so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True if no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Length of the encoded records before compression.
    pub fn records_len(&self) -> usize {
        self.records.len()
    }

    /// Removes every record, keeping the allocation.
    pub fn clear(&mut self) {
        self.records.clear();
        self.count = 0;
    }

    /// How the records section will be stored.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Changes how the records section will be stored (the records pushed so far are kept).
    pub fn set_compression(&mut self, compression: Compression) {
        self.compression = compression;
    }

    /// Bytes the records buffer can hold without growing.
    pub fn capacity(&self) -> usize {
        self.records.capacity()
    }

    /// Encodes the batch with `leader_epoch`, compressing if asked. The base offset is filled in
    /// by [`EncodedBatch::stamp`] when the log assigns it.
    pub fn encode(&self, leader_epoch: u64) -> Result<EncodedBatch, FormatError> {
        self.check_not_empty()?;
        let mut bytes = vec![0u8; BATCH_HEADER_LEN];
        match self.compression {
            Compression::None => bytes.extend_from_slice(&self.records),
            Compression::Lz4 => {
                let bound = lz4_flex::block::get_maximum_output_size(self.records.len());
                bytes.resize(BATCH_HEADER_LEN + bound, 0);
                let n =
                    lz4_flex::block::compress_into(&self.records, &mut bytes[BATCH_HEADER_LEN..])
                        .map_err(|e| FormatError::Decompress(format!("compressing: {e}")))?;
                bytes.truncate(BATCH_HEADER_LEN + n);
            }
        }
        let header = self.header(leader_epoch, bytes.len())?;
        bytes[..BATCH_HEADER_LEN].copy_from_slice(header.as_bytes());
        debug_assert!(bytes.len() >= BATCH_HEADER_LEN);
        let payload_crc = payload_crc(&bytes[BATCH_HEADER_LEN..]);
        Ok(EncodedBatch {
            bytes,
            payload_crc,
            count: self.count,
        })
    }

    /// The batch as a header and the builder's own records section, borrowed, for a write of
    /// the two pieces (`pwritev`) without copying the records behind the header: what
    /// [`crate::Log::append`] does with an uncompressed builder. The bytes are the same as
    /// [`BatchBuilder::encode`]'s. Fails on an empty builder and on a compressed one (whose
    /// stored records are not the builder's: use [`BatchBuilder::encode`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use stratalog::format::{BatchBuilder, Compression};
    ///
    /// # fn main() -> Result<(), stratalog::FormatError> {
    /// let mut builder = BatchBuilder::new(Compression::None);
    /// builder.push_value(1, b"a")?.push_value(2, b"b")?;
    /// let mut parts = builder.parts(4)?;
    /// parts.stamp(10);
    /// let mut encoded = builder.encode(4)?;
    /// encoded.stamp(10);
    /// // Header then payload: byte for byte the encoded batch.
    /// assert_eq!([parts.header_bytes(), parts.payload()].concat(), encoded.as_bytes());
    /// assert!(BatchBuilder::new(Compression::Lz4).parts(0).is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn parts(&self, leader_epoch: u64) -> Result<BatchParts<'_>, FormatError> {
        self.check_not_empty()?;
        if self.compression != Compression::None {
            return Err(FormatError::Invalid {
                what: "compression of a batch written in parts",
                value: self.compression.attributes().into(),
            });
        }
        let header = self.header(leader_epoch, BATCH_HEADER_LEN + self.records.len())?;
        Ok(BatchParts::new(header, &self.records, self.count))
    }

    fn check_not_empty(&self) -> Result<(), FormatError> {
        if self.count == 0 {
            return Err(FormatError::Invalid {
                what: "record_count",
                value: 0,
            });
        }
        Ok(())
    }

    /// The header of this batch stored in `length` bytes (header included), unstamped.
    fn header(&self, leader_epoch: u64, length: usize) -> Result<BatchHeader, FormatError> {
        check_bounds("batch length", length as u64, 0, MAX_BATCH_BYTES.into())?;
        Ok(BatchHeader {
            crc: 0.into(),
            magic: BATCH_MAGIC.into(),
            version: BATCH_VERSION.into(),
            attributes: self.compression.attributes().into(),
            length: (length as u32).into(),
            base_offset: 0.into(),
            leader_epoch: leader_epoch.into(),
            first_timestamp: self.first_timestamp.into(),
            max_timestamp: self.max_timestamp.into(),
            record_count: self.count.into(),
            records_len: (self.records.len() as u32).into(),
            reserved: 0.into(),
        })
    }
}

/// The CRC of a payload that [`stamp_crc`] will combine rather than hash again (see
/// [`REHASH_BELOW`]); computed outside the log's lock.
fn payload_crc(payload: &[u8]) -> Option<crc32fast::Hasher> {
    (payload.len() >= REHASH_BELOW).then(|| {
        let mut crc = crc32fast::Hasher::new();
        crc.update(payload);
        crc
    })
}

/// Sets `header`'s base offset and its CRC over the header's bytes after the crc field and
/// `payload`. For a large payload only the 60 header bytes are hashed here and the payload's
/// CRC (`payload_crc`, computed outside the log's lock) is combined. Combining costs a fixed
/// ~0.25 µs, more than hashing a small payload again, so below [`REHASH_BELOW`] the payload is
/// hashed instead.
fn stamp_crc(
    header: &mut BatchHeader,
    payload: &[u8],
    payload_crc: Option<&crc32fast::Hasher>,
    base_offset: u64,
) {
    debug_assert_eq!(
        BATCH_HEADER_LEN + payload.len(),
        header.length.get() as usize,
        "a stamped batch keeps its encoded length"
    );
    debug_assert!(
        base_offset
            .checked_add(u64::from(header.record_count.get()))
            .is_some(),
        "the batch's offsets fit in a u64"
    );
    header.base_offset = base_offset.into();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header.as_bytes()[4..]);
    match payload_crc {
        Some(p) if payload.len() >= REHASH_BELOW => crc.combine(p),
        _ => crc.update(payload),
    }
    header.crc = crc.finalize().into();
}

/// A batch to be written as two pieces: its 64-byte header, stamped under the log's lock, and
/// its records section, borrowed from where it already is (a [`BatchBuilder`]'s buffer, or a
/// [`Batch`] received from a producer). Written together (`pwritev`), the two are byte for byte
/// the batch [`BatchBuilder::encode`] would have made, without copying the records.
///
/// # Examples
///
/// ```
/// use stratalog::format::{Batch, BatchBuilder, BatchParts, Compression};
///
/// # fn main() -> Result<(), stratalog::FormatError> {
/// let mut builder = BatchBuilder::new(Compression::None);
/// builder.push_value(5, b"hello")?;
/// let mut encoded = builder.encode(1)?;
/// encoded.stamp(0);
/// let received = Batch::validate(encoded.as_bytes().to_vec().into())?;
/// // A producer's batch, re-stamped under this log's offsets and epoch, payload borrowed.
/// let mut parts = BatchParts::from_batch(&received, 9);
/// parts.stamp(70);
/// assert_eq!((parts.record_count(), parts.max_timestamp(), parts.encoded_len()), (1, 5, received.len()));
/// let stored = Batch::validate([parts.header_bytes(), parts.payload()].concat().into())?;
/// assert_eq!((stored.base_offset(), stored.leader_epoch()), (70, 9));
/// assert_eq!(stored.records()?.next().unwrap()?.value, &b"hello"[..]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct BatchParts<'a> {
    header: BatchHeader,
    payload: &'a [u8],
    payload_crc: Option<crc32fast::Hasher>,
}

impl<'a> BatchParts<'a> {
    fn new(header: BatchHeader, payload: &'a [u8], count: u32) -> Self {
        debug_assert_eq!(header.record_count.get(), count);
        BatchParts {
            header,
            payload,
            payload_crc: payload_crc(payload),
        }
    }

    /// A checked batch ([`Batch::validate`]) to be appended under this log's offsets in
    /// `leader_epoch`: its records section is borrowed, not copied; the header's base offset,
    /// leader epoch and CRC are replaced when it is stamped.
    pub fn from_batch(batch: &'a Batch, leader_epoch: u64) -> Self {
        let bytes: &'a [u8] = batch.as_bytes();
        let mut header = *batch.header();
        header.leader_epoch = leader_epoch.into();
        BatchParts::new(header, &bytes[BATCH_HEADER_LEN..], batch.record_count())
    }

    /// Sets the base offset and the CRC (see [`EncodedBatch::stamp`]).
    pub fn stamp(&mut self, base_offset: u64) {
        stamp_crc(
            &mut self.header,
            self.payload,
            self.payload_crc.as_ref(),
            base_offset,
        );
    }

    /// The 64 header bytes (valid once stamped).
    pub fn header_bytes(&self) -> &[u8] {
        self.header.as_bytes()
    }

    /// The records section as stored, borrowed.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// Length of the whole batch, header included.
    pub fn encoded_len(&self) -> usize {
        BATCH_HEADER_LEN + self.payload.len()
    }

    /// Number of records.
    pub fn record_count(&self) -> u32 {
        self.header.record_count.get()
    }

    /// The batch's largest timestamp.
    pub fn max_timestamp(&self) -> i64 {
        self.header.max_timestamp.get()
    }
}

/// An encoded batch waiting for its base offset.
///
/// # Examples
///
/// ```
/// use stratalog::format::{Batch, BatchBuilder, Compression};
///
/// # fn main() -> Result<(), stratalog::FormatError> {
/// let mut builder = BatchBuilder::new(Compression::None);
/// builder.push_value(5, b"a")?.push_value(9, b"b")?;
/// let mut encoded = builder.encode(3)?;
/// assert_eq!((encoded.record_count(), encoded.max_timestamp()), (2, 9));
/// // Stamping gives the batch its offsets and its CRC: then it validates.
/// encoded.stamp(40);
/// let batch = Batch::validate(encoded.as_bytes().to_vec().into())?;
/// assert_eq!((batch.base_offset(), batch.last_offset(), batch.leader_epoch()), (40, 41, 3));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct EncodedBatch {
    bytes: Vec<u8>,
    /// Set only for payloads whose CRC is combined ([`REHASH_BELOW`]).
    payload_crc: Option<crc32fast::Hasher>,
    count: u32,
}

/// Payloads shorter than this are hashed again under the lock rather than CRC-combined.
const REHASH_BELOW: usize = 16 << 10;

impl EncodedBatch {
    /// A batch encoded elsewhere (by a producer across the network), to be appended under this
    /// log's offsets in `leader_epoch`: its records are kept byte for byte; the header's base
    /// offset and leader epoch are replaced (and the CRC with them) when it is stamped. `batch`
    /// was checked ([`Batch::validate`]).
    pub fn from_batch(batch: &Batch, leader_epoch: u64) -> EncodedBatch {
        let mut bytes = batch.as_bytes().to_vec();
        let header = BatchHeader::mut_from_bytes(&mut bytes[..BATCH_HEADER_LEN])
            .expect("header slice has the header's size");
        header.leader_epoch = leader_epoch.into();
        let payload_crc = payload_crc(&bytes[BATCH_HEADER_LEN..]);
        EncodedBatch {
            bytes,
            payload_crc,
            count: batch.record_count(),
        }
    }

    /// Sets the base offset and the CRC. For a large batch only the 60 header bytes are hashed
    /// here: the CRC of the payload was computed in [`BatchBuilder::encode`], outside the log's
    /// lock, and is combined. Combining costs a fixed ~0.25 µs, more than hashing a small
    /// payload again, so below 16 KiB of payload the whole batch is hashed instead.
    pub fn stamp(&mut self, base_offset: u64) {
        let (head, payload) = self.bytes.split_at_mut(BATCH_HEADER_LEN);
        let header = BatchHeader::mut_from_bytes(head).expect("header slice has the header's size");
        stamp_crc(header, payload, self.payload_crc.as_ref(), base_offset);
    }

    /// The encoded bytes (valid once stamped).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Number of records.
    pub fn record_count(&self) -> u32 {
        self.count
    }

    /// The batch's largest timestamp.
    pub fn max_timestamp(&self) -> i64 {
        self.header().max_timestamp.get()
    }

    fn header(&self) -> &BatchHeader {
        BatchHeader::ref_from_bytes(&self.bytes[..BATCH_HEADER_LEN]).expect("header size")
    }
}

/// CRC-32 of a batch as stored in its header: over every byte after the crc field.
pub fn crc_of(batch: &[u8]) -> u32 {
    crc32fast::hash(&batch[4..])
}

impl BatchHeader {
    /// Reads and checks a header at the start of `buf` without looking at the payload: magic,
    /// version, attributes, length and count bounds. The CRC is checked by [`Batch::validate`].
    pub fn parse(buf: &[u8]) -> Result<&BatchHeader, FormatError> {
        check_len("batch header", BATCH_HEADER_LEN as u64, buf.len())?;
        let (header, _) =
            BatchHeader::ref_from_prefix(buf).map_err(|_| FormatError::Truncated {
                what: "batch header",
                needed: BATCH_HEADER_LEN as u64,
                available: buf.len() as u64,
            })?;
        header.check()?;
        Ok(header)
    }

    fn check(&self) -> Result<(), FormatError> {
        if self.magic.get() != BATCH_MAGIC {
            return Err(FormatError::BadMagic {
                what: "batch",
                found: self.magic.get().into(),
            });
        }
        if self.version.get() != BATCH_VERSION {
            return Err(FormatError::UnsupportedVersion {
                what: "batch",
                found: self.version.get().into(),
                supported: BATCH_VERSION.into(),
            });
        }
        let compression = Compression::from_attributes(self.attributes.get())?;
        let length = self.length.get() as u64;
        check_bounds(
            "batch length",
            length,
            BATCH_HEADER_LEN as u64 + 1,
            MAX_BATCH_BYTES.into(),
        )?;
        let records_len = self.records_len.get() as u64;
        check_bounds(
            "records_len",
            records_len,
            MIN_RECORD_LEN as u64,
            MAX_RECORDS_BYTES.into(),
        )?;
        if compression == Compression::None && records_len != length - BATCH_HEADER_LEN as u64 {
            return Err(FormatError::Invalid {
                what: "records_len of uncompressed batch",
                value: records_len,
            });
        }
        let count = self.record_count.get() as u64;
        check_bounds(
            "record_count",
            count,
            1,
            records_len / MIN_RECORD_LEN as u64,
        )?;
        check_bounds("base_offset", self.base_offset.get(), 0, u64::MAX - count)?;
        if self.reserved.get() != 0 {
            return Err(FormatError::Invalid {
                what: "reserved header field",
                value: self.reserved.get(),
            });
        }
        Ok(())
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> u64 {
        self.base_offset.get() + self.record_count.get() as u64 - 1
    }

    /// How the records section is stored.
    pub fn compression(&self) -> Compression {
        Compression::from_attributes(self.attributes.get()).unwrap_or(Compression::None)
    }
}

/// A batch whose header and CRC were checked. Cloning is cheap: the bytes are shared (for a
/// batch read from a segment, they point into the mapped file).
///
/// # Examples
///
/// ```
/// use stratalog::FormatError;
/// use stratalog::format::{Batch, BatchBuilder, Compression};
///
/// # fn main() -> Result<(), FormatError> {
/// let mut builder = BatchBuilder::new(Compression::None);
/// builder.push_value(1, b"hello")?;
/// let mut encoded = builder.encode(0)?;
/// encoded.stamp(0);
/// let mut bytes = encoded.as_bytes().to_vec();
/// let batch = Batch::validate(bytes.clone().into())?;
/// assert_eq!(batch.record_count(), 1);
/// assert_eq!(batch.records()?.next().unwrap()?.value, &b"hello"[..]);
/// // One flipped bit fails the CRC: corrupt bytes never become a batch.
/// *bytes.last_mut().unwrap() ^= 1;
/// assert!(matches!(Batch::validate(bytes.into()), Err(FormatError::ChecksumMismatch { .. })));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Batch {
    bytes: Bytes,
    /// Positions in the records section of every [`SKIP_EVERY`]th record, when known (see
    /// [`Batch::skip_table`]): finding one record then walks at most `SKIP_EVERY - 1` others.
    skips: Option<Arc<[u32]>>,
}

impl PartialEq for Batch {
    fn eq(&self, other: &Batch) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for Batch {}

/// One entry of a batch's skip table per this many records.
pub(crate) const SKIP_EVERY: usize = 4;

impl Batch {
    /// Checks the batch at the start of `bytes` (header, length, CRC) and returns it, sliced to
    /// its own length.
    pub fn validate(bytes: Bytes) -> Result<Batch, FormatError> {
        let header = BatchHeader::parse(&bytes)?;
        let length = header.length.get() as usize;
        check_len("batch", length as u64, bytes.len())?;
        let stored = header.crc.get();
        let computed = crc_of(&bytes[..length]);
        if stored != computed {
            return Err(FormatError::ChecksumMismatch {
                what: "batch",
                stored,
                computed,
            });
        }
        debug_assert!(
            length >= BATCH_HEADER_LEN,
            "a parsed header bounds the length"
        );
        Ok(Batch {
            bytes: bytes.slice(..length),
            skips: None,
        })
    }

    /// Like [`Batch::validate`] but without computing the CRC: for bytes whose CRC was already
    /// checked (the header, lengths and bounds are still checked, and the stored CRC must equal
    /// `crc`, the value that was checked).
    pub(crate) fn validated_before(bytes: Bytes, crc: u32) -> Result<Batch, FormatError> {
        let header = BatchHeader::parse(&bytes)?;
        let length = header.length.get() as usize;
        check_len("batch", length as u64, bytes.len())?;
        let stored = header.crc.get();
        if stored != crc {
            return Err(FormatError::ChecksumMismatch {
                what: "batch",
                stored,
                computed: crc,
            });
        }
        Ok(Batch {
            bytes: bytes.slice(..length),
            skips: None,
        })
    }

    /// The positions of every [`SKIP_EVERY`]th record of an uncompressed batch, found by
    /// walking the records' length prefixes (None for a compressed batch, or if the prefixes do
    /// not add up, in which case iterating will report the error).
    pub(crate) fn skip_table(&self) -> Option<Arc<[u32]>> {
        let header = self.header();
        if header.compression() != Compression::None {
            return None;
        }
        let section = &self.bytes[BATCH_HEADER_LEN..];
        let count = header.record_count.get() as usize;
        let mut table = Vec::with_capacity(count.div_ceil(SKIP_EVERY));
        let mut pos = 0usize;
        for i in 0..count {
            if i % SKIP_EVERY == 0 {
                table.push(u32::try_from(pos).ok()?);
            }
            let len = section.get(pos..pos + 4)?;
            let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
            pos = pos.checked_add(4 + len).filter(|&p| p <= section.len())?;
        }
        Some(table.into())
    }

    /// The batch with a skip table from [`Batch::skip_table`] of the same bytes.
    pub(crate) fn with_skips(mut self, skips: Option<Arc<[u32]>>) -> Batch {
        self.skips = skips;
        self
    }

    /// The CRC stored in the header (checked by [`Batch::validate`]).
    pub(crate) fn stored_crc(&self) -> u32 {
        self.header().crc.get()
    }

    /// The header.
    pub fn header(&self) -> &BatchHeader {
        BatchHeader::ref_from_bytes(&self.bytes[..BATCH_HEADER_LEN]).expect("validated header")
    }

    /// Offset of the first record.
    pub fn base_offset(&self) -> u64 {
        self.header().base_offset.get()
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> u64 {
        self.header().last_offset()
    }

    /// Number of records.
    pub fn record_count(&self) -> u32 {
        self.header().record_count.get()
    }

    /// Epoch of the leader that appended the batch.
    pub fn leader_epoch(&self) -> u64 {
        self.header().leader_epoch.get()
    }

    /// Largest record timestamp.
    pub fn max_timestamp(&self) -> i64 {
        self.header().max_timestamp.get()
    }

    /// The batch exactly as stored and replicated.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Stored length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: a batch holds at least its header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Iterates the records, decompressing first if the batch is compressed. Uncompressed
    /// records are slices of the batch's bytes (no copy).
    pub fn records(&self) -> Result<RecordIter, FormatError> {
        let header = self.header();
        let records_len = header.records_len.get() as usize;
        let section = self.bytes.slice(BATCH_HEADER_LEN..);
        let section = match header.compression() {
            Compression::None => section,
            Compression::Lz4 => {
                let mut out = vec![0u8; records_len];
                let n = lz4_flex::block::decompress_into(&section, &mut out)
                    .map_err(|e| FormatError::Decompress(e.to_string()))?;
                if n != records_len {
                    return Err(FormatError::Decompress(format!(
                        "{n} bytes decompressed, header says {records_len}"
                    )));
                }
                Bytes::from(out)
            }
        };
        let skips = match header.compression() {
            Compression::None => self.skips.clone(),
            Compression::Lz4 => None,
        };
        Ok(
            RecordIter::new(section, self.base_offset(), header.record_count.get())
                .with_skips(skips),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamped_crc_is_the_batch_crc_on_both_sides_of_the_rehash_size() {
        for value_len in [
            0,
            100,
            REHASH_BELOW - 200,
            REHASH_BELOW,
            REHASH_BELOW + 5,
            300_000,
        ] {
            let mut b = BatchBuilder::new(Compression::None);
            b.push_value(1, &vec![7u8; value_len]).unwrap();
            let mut encoded = b.encode(3).unwrap();
            encoded.stamp(42);
            let batch = Batch::validate(Bytes::copy_from_slice(encoded.as_bytes())).unwrap();
            assert_eq!(batch.base_offset(), 42);
            assert_eq!(batch.stored_crc(), crc_of(encoded.as_bytes()));
        }
    }

    #[test]
    fn nth_record_matches_a_full_walk() {
        for compression in [Compression::None, Compression::Lz4] {
            let mut b = BatchBuilder::new(compression);
            for i in 0..20u8 {
                let key = [i; 3];
                let value = vec![i; usize::from(i) * 7];
                let record = Record {
                    timestamp: i64::from(i),
                    key: (i % 2 == 0).then_some(&key[..]),
                    value: &value,
                    headers: &[(b"h", b"v")],
                };
                b.push(&record).unwrap();
            }
            let mut encoded = b.encode(0).unwrap();
            encoded.stamp(100);
            let batch = Batch::validate(Bytes::copy_from_slice(encoded.as_bytes())).unwrap();
            let all: Vec<_> = batch.records().unwrap().collect::<Result<_, _>>().unwrap();
            let skips = batch.skip_table();
            assert_eq!(skips.is_some(), compression == Compression::None);
            let skipping = batch.clone().with_skips(skips);
            for b in [&batch, &skipping] {
                for (n, want) in all.iter().enumerate() {
                    let got = b.records().unwrap().nth(n).unwrap().unwrap();
                    assert_eq!(&got, want);
                    assert_eq!(got.offset, 100 + n as u64);
                }
                assert!(b.records().unwrap().nth(20).is_none());
                // After some records were consumed, nth counts from there.
                for first in 0..20 {
                    for n in 0..(20 - first) {
                        let mut it = b.records().unwrap();
                        if first > 0 {
                            assert_eq!(it.nth(first - 1).unwrap().unwrap(), all[first - 1]);
                        }
                        assert_eq!(it.nth(n).unwrap().unwrap(), all[first + n]);
                        let rest: Vec<_> = it.map(Result::unwrap).collect();
                        assert_eq!(rest, all[first + n + 1..]);
                    }
                }
            }
        }
    }

    #[test]
    fn a_failed_push_leaves_the_batch_as_it_was() {
        let mut b = BatchBuilder::new(Compression::None);
        b.push_value(1, b"kept").unwrap();
        let long_name = vec![b'n'; u16::MAX as usize + 1];
        let bad = Record {
            timestamp: 2,
            key: None,
            value: b"v",
            headers: &[(&long_name, b"x")],
        };
        assert!(b.push(&bad).is_err());
        assert_eq!(b.len(), 1);
        let mut encoded = b.encode(0).unwrap();
        encoded.stamp(0);
        let batch = Batch::validate(Bytes::copy_from_slice(encoded.as_bytes())).unwrap();
        let records: Vec<_> = batch.records().unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(&records[0].value[..], b"kept");
    }

    #[test]
    fn lz4_batches_round_trip_and_every_truncation_is_an_error() {
        let mut b = BatchBuilder::new(Compression::Lz4);
        for i in 0..20 {
            b.push_value(i, format!("value {i} value {i}").as_bytes())
                .unwrap();
        }
        let mut encoded = b.encode(3).unwrap();
        encoded.stamp(100);
        let bytes = Bytes::copy_from_slice(encoded.as_bytes());
        let batch = Batch::validate(bytes.clone()).unwrap();
        assert_eq!(
            (
                batch.base_offset(),
                batch.last_offset(),
                batch.leader_epoch()
            ),
            (100, 119, 3)
        );
        let values: Vec<_> = batch.records().unwrap().map(|r| r.unwrap().value).collect();
        assert_eq!(&values[19][..], b"value 19 value 19");
        for cut in 0..bytes.len() {
            assert!(Batch::validate(bytes.slice(..cut)).is_err(), "cut at {cut}");
        }
    }
}
