//! The quarantine file: bytes cut from a log (a torn tail, a truncated suffix), kept for loss
//! accounting (docs/FORMAT.md, "Quarantine files"). The log's `log::quarantine` module decides
//! when to write and remove them; this module is their byte layout and name.
//!
//! ```text
//! quarantine_file = QuarantineHeader (64 bytes) | reason (UTF-8, reason_len bytes)
//!                 | kept bytes (kept_bytes)
//! crc = CRC-32 of everything after the crc field
//! ```

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::FormatError;

/// Magic number of a quarantine file (`"STQ1"` as bytes on disk).
pub const QUARANTINE_MAGIC: u32 = u32::from_le_bytes(*b"STQ1");
/// The quarantine file format version.
pub const QUARANTINE_VERSION: u16 = 1;
/// Length of the [`QuarantineHeader`].
pub const QUARANTINE_HEADER_LEN: usize = 64;
/// Suffix of a quarantine file's name.
const SUFFIX: &str = ".quarantine";

/// The fixed header of a quarantine file.
///
/// # Examples
///
/// ```
/// use stratalog::format::QuarantineHeader;
/// use zerocopy::FromZeros;
///
/// # fn main() -> Result<(), stratalog::FormatError> {
/// let mut header = QuarantineHeader::new_zeroed();
/// header.kind = 2.into(); // a truncation
/// header.first_offset = 10.into();
/// header.end_offset = 12.into();
/// header.cut_bytes = 5.into();
/// let (written, file) = header.encode("truncated by the operator", b"bytes")?;
/// assert_eq!(written.kept_bytes.get(), 5);
/// let (read, reason, kept) = QuarantineHeader::parse(&file)?;
/// assert_eq!((read.first_offset.get(), reason, kept), (10, &b"truncated by the operator"[..], &b"bytes"[..]));
/// // A changed byte fails the CRC.
/// let mut bad = file.clone();
/// *bad.last_mut().unwrap() ^= 1;
/// assert!(QuarantineHeader::parse(&bad).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct QuarantineHeader {
    /// CRC-32 over bytes 4..64 of the header, the reason and the kept bytes.
    pub crc: U32,
    /// [`QUARANTINE_MAGIC`].
    pub magic: U32,
    /// [`QUARANTINE_VERSION`].
    pub version: U16,
    /// Length of the reason (UTF-8) that follows the header.
    pub reason_len: U16,
    /// 1 = a torn tail cut by recovery, 2 = a suffix removed by truncation.
    pub kind: U32,
    /// The first offset that was cut (the log's end right after the cut).
    pub first_offset: U64,
    /// One past the last offset the cut bytes held, as far as their batch headers tell;
    /// equal to `first_offset` if no header in them could be read.
    pub end_offset: U64,
    /// Base offset of the segment the cut started in.
    pub segment_base: U64,
    /// Byte position in that segment where the cut started.
    pub position: U64,
    /// Bytes removed from the log.
    pub cut_bytes: U64,
    /// Bytes of them kept in this file, after the reason.
    pub kept_bytes: U64,
}

const _: () = assert!(size_of::<QuarantineHeader>() == QUARANTINE_HEADER_LEN);

impl QuarantineHeader {
    /// The whole file: this header (with `reason_len`, `kept_bytes`, magic, version and CRC
    /// filled in), `reason` and `kept`. Returns the header as written too. Fails if the reason
    /// is longer than 65,535 bytes.
    pub fn encode(
        mut self,
        reason: &str,
        kept: &[u8],
    ) -> Result<(QuarantineHeader, Vec<u8>), FormatError> {
        let reason_len = u16::try_from(reason.len()).map_err(|_| FormatError::Invalid {
            what: "quarantine reason length",
            value: reason.len() as u64,
        })?;
        self.magic = QUARANTINE_MAGIC.into();
        self.version = QUARANTINE_VERSION.into();
        self.reason_len = reason_len.into();
        self.kept_bytes = (kept.len() as u64).into();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&self.as_bytes()[4..]);
        crc.update(reason.as_bytes());
        crc.update(kept);
        self.crc = crc.finalize().into();
        let mut bytes = Vec::with_capacity(QUARANTINE_HEADER_LEN + reason.len() + kept.len());
        bytes.extend_from_slice(self.as_bytes());
        bytes.extend_from_slice(reason.as_bytes());
        bytes.extend_from_slice(kept);
        debug_assert_eq!(
            bytes.len(),
            QUARANTINE_HEADER_LEN + reason.len() + kept.len()
        );
        Ok((self, bytes))
    }

    /// Parses a whole quarantine file: checks the magic, version, lengths and CRC, and returns
    /// the header, the reason's bytes and the kept bytes. The `kind` is not checked here.
    pub fn parse(bytes: &[u8]) -> Result<(QuarantineHeader, &[u8], &[u8]), FormatError> {
        let (header, rest) =
            QuarantineHeader::read_from_prefix(bytes).map_err(|_| FormatError::Truncated {
                what: "quarantine header",
                needed: QUARANTINE_HEADER_LEN as u64,
                available: bytes.len() as u64,
            })?;
        if header.magic.get() != QUARANTINE_MAGIC {
            return Err(FormatError::BadMagic {
                what: "quarantine file",
                found: header.magic.get().into(),
            });
        }
        if header.version.get() != QUARANTINE_VERSION {
            return Err(FormatError::UnsupportedVersion {
                what: "quarantine file",
                found: header.version.get().into(),
                supported: QUARANTINE_VERSION.into(),
            });
        }
        let reason_len = usize::from(header.reason_len.get());
        let need = reason_len as u64 + header.kept_bytes.get();
        if rest.len() as u64 != need {
            return Err(FormatError::Truncated {
                what: "quarantine file",
                needed: need,
                available: rest.len() as u64,
            });
        }
        let computed = crc32fast::hash(&bytes[4..]);
        if computed != header.crc.get() {
            return Err(FormatError::ChecksumMismatch {
                what: "quarantine file",
                stored: header.crc.get(),
                computed,
            });
        }
        let (reason, kept) = rest.split_at(reason_len);
        Ok((header, reason, kept))
    }
}

/// The name of a quarantine file: `{first_offset:020}-{sequence:06}.quarantine`.
pub fn quarantine_file_name(first_offset: u64, sequence: u64) -> String {
    format!("{first_offset:020}-{sequence:06}{SUFFIX}")
}

/// The sequence number in a quarantine file's name; `None` for any other name.
pub fn parse_quarantine_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (_, sequence) = stem.split_once('-')?;
    sequence.parse().ok()
}

#[cfg(test)]
mod tests {
    use zerocopy::FromZeros;

    use super::*;

    fn header() -> QuarantineHeader {
        QuarantineHeader::new_zeroed()
    }

    #[test]
    fn encode_then_parse_round_trips_and_every_flip_is_caught() {
        let mut h = header();
        h.kind = 2.into();
        h.first_offset = 7.into();
        let (written, bytes) = h.encode("truncated", b"abc").unwrap();
        let (parsed, reason, kept) = QuarantineHeader::parse(&bytes).unwrap();
        assert_eq!(parsed.as_bytes(), written.as_bytes());
        assert_eq!((reason, kept), (&b"truncated"[..], &b"abc"[..]));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(QuarantineHeader::parse(&bad).is_err(), "flip at byte {i}");
        }
        for len in 0..bytes.len() {
            assert!(
                QuarantineHeader::parse(&bytes[..len]).is_err(),
                "cut at {len}"
            );
        }
    }

    #[test]
    fn names() {
        let name = quarantine_file_name(42, 3);
        assert_eq!(name, "00000000000000000042-000003.quarantine");
        assert_eq!(parse_quarantine_file_name(&name), Some(3));
        assert_eq!(parse_quarantine_file_name("00000000000000000042.log"), None);
        assert_eq!(parse_quarantine_file_name("x-y.quarantine"), None);
    }
}
