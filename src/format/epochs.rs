//! The epoch history file (`log.epochs`): which leader epoch started at which offset.
//!
//! ```text
//! epoch_file   = epoch_header | epoch_entry[count]
//! epoch_header = [u8; 8] magic "STRAEPO\0" | u32 version (1) | u32 count | u64 current_epoch
//!              | u32 crc | u32 reserved (0)      crc = CRC-32 of header bytes 0..24, then the entries
//! epoch_entry  = u64 epoch | u64 start_offset    (epochs strictly rising, start offsets non-decreasing,
//!                                                 none above current_epoch)
//! ```
//!
//! `current_epoch` is the highest epoch the log has known (it only rises, also when a truncation
//! removes the records of that epoch); the entries are the epochs of the records it holds.
//!
//! The file is small (one entry per leadership change still in the log) and is always replaced
//! whole (temporary file, fsync, rename, fsync of the directory), so it is never torn.

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{FormatError, check_bounds, check_len};

/// Magic of the epoch history file.
pub const EPOCHS_MAGIC: [u8; 8] = *b"STRAEPO\0";
/// The epoch history format version this build writes and reads.
pub const EPOCHS_VERSION: u32 = 1;
/// Bytes of [`EpochFileHeader`].
pub const EPOCHS_HEADER_LEN: usize = 32;
/// Most entries an epoch history file may hold (a leadership change per entry still in the log;
/// older entries are dropped with the segments that held them).
pub const MAX_EPOCH_ENTRIES: u32 = 1 << 20;

/// The header of the epoch history file.
///
/// # Examples
///
/// ```
/// use stratalog::format::{EPOCHS_HEADER_LEN, EPOCHS_MAGIC, EpochFileHeader, encode_epochs};
/// use zerocopy::FromBytes;
///
/// let bytes = encode_epochs(3, &[(1, 0), (3, 10)]);
/// let (header, _) = EpochFileHeader::read_from_prefix(&bytes).unwrap();
/// assert_eq!(header.magic, EPOCHS_MAGIC);
/// assert_eq!((header.count.get(), header.current_epoch.get()), (2, 3));
/// assert!(bytes.len() > EPOCHS_HEADER_LEN);
/// ```
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct EpochFileHeader {
    /// [`EPOCHS_MAGIC`].
    pub magic: [u8; 8],
    /// [`EPOCHS_VERSION`].
    pub version: U32,
    /// Number of entries that follow.
    pub count: U32,
    /// The highest epoch the log has known (at least every entry's epoch).
    pub current_epoch: U64,
    /// CRC-32 of header bytes 0..24, then of every entry.
    pub crc: U32,
    /// Zero.
    pub reserved: U32,
}

const _: () = assert!(size_of::<EpochFileHeader>() == EPOCHS_HEADER_LEN);

/// One entry: `epoch` started at `start_offset`.
///
/// # Examples
///
/// ```
/// use stratalog::format::{
///     EPOCH_ENTRY_LEN, EPOCHS_HEADER_LEN, EpochEntry, decode_epochs, encode_epochs,
/// };
/// use zerocopy::FromBytes;
///
/// # fn main() -> Result<(), stratalog::FormatError> {
/// let bytes = encode_epochs(3, &[(1, 0), (3, 10)]);
/// assert_eq!(bytes.len(), EPOCHS_HEADER_LEN + 2 * EPOCH_ENTRY_LEN);
/// // The entries follow the header, 16 bytes each.
/// let second = EpochEntry::read_from_bytes(&bytes[EPOCHS_HEADER_LEN + EPOCH_ENTRY_LEN..]).unwrap();
/// assert_eq!((second.epoch.get(), second.start_offset.get()), (3, 10));
/// assert_eq!(decode_epochs(&bytes)?, (3, vec![(1, 0), (3, 10)]));
/// # Ok(())
/// # }
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct EpochEntry {
    /// The leader epoch.
    pub epoch: U64,
    /// The first offset written in it.
    pub start_offset: U64,
}

/// Bytes of [`EpochEntry`].
pub const EPOCH_ENTRY_LEN: usize = 16;
const _: () = assert!(size_of::<EpochEntry>() == EPOCH_ENTRY_LEN);

/// Encodes an epoch history: the current epoch, and `entries` as `(epoch, start_offset)`, which
/// must rise and not exceed `current_epoch`.
pub fn encode_epochs(current_epoch: u64, entries: &[(u64, u64)]) -> Vec<u8> {
    debug_assert!(entries.iter().all(|&(e, _)| e <= current_epoch));
    debug_assert!(
        entries
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
    );
    let mut header = EpochFileHeader {
        magic: EPOCHS_MAGIC,
        version: EPOCHS_VERSION.into(),
        count: (entries.len() as u32).into(),
        current_epoch: current_epoch.into(),
        crc: 0.into(),
        reserved: 0.into(),
    };
    let mut body = Vec::with_capacity(entries.len() * EPOCH_ENTRY_LEN);
    for &(epoch, start) in entries {
        body.extend_from_slice(
            EpochEntry {
                epoch: epoch.into(),
                start_offset: start.into(),
            }
            .as_bytes(),
        );
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header.as_bytes()[..24]);
    hasher.update(&body);
    header.crc = hasher.finalize().into();
    let mut out = header.as_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// Decodes and checks an epoch history file: magic, version, count within the bytes and the
/// limit, CRC, zero reserved field, epochs strictly rising and not above the current epoch,
/// start offsets non-decreasing. Returns the current epoch and the entries.
pub fn decode_epochs(buf: &[u8]) -> Result<(u64, Vec<(u64, u64)>), FormatError> {
    const WHAT: &str = "epoch history";
    check_len(WHAT, EPOCHS_HEADER_LEN as u64, buf.len())?;
    let header =
        EpochFileHeader::read_from_bytes(&buf[..EPOCHS_HEADER_LEN]).expect("length checked");
    if header.magic != EPOCHS_MAGIC {
        return Err(FormatError::BadMagic {
            what: WHAT,
            found: u64::from_le_bytes(header.magic),
        });
    }
    if header.version.get() != EPOCHS_VERSION {
        return Err(FormatError::UnsupportedVersion {
            what: WHAT,
            found: header.version.get(),
            supported: EPOCHS_VERSION,
        });
    }
    let count = header.count.get();
    check_bounds(
        "epoch history entry count",
        count.into(),
        0,
        MAX_EPOCH_ENTRIES.into(),
    )?;
    let body_len = count as usize * EPOCH_ENTRY_LEN;
    check_len(WHAT, (EPOCHS_HEADER_LEN + body_len) as u64, buf.len())?;
    if buf.len() != EPOCHS_HEADER_LEN + body_len {
        return Err(FormatError::Invalid {
            what: "epoch history length (bytes past its entries)",
            value: buf.len() as u64,
        });
    }
    let body = &buf[EPOCHS_HEADER_LEN..];
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&buf[..24]);
    hasher.update(body);
    let computed = hasher.finalize();
    if computed != header.crc.get() {
        return Err(FormatError::ChecksumMismatch {
            what: WHAT,
            stored: header.crc.get(),
            computed,
        });
    }
    if header.reserved.get() != 0 {
        return Err(FormatError::Invalid {
            what: "epoch history reserved field",
            value: header.reserved.get().into(),
        });
    }
    let entries: Vec<(u64, u64)> = body
        .chunks_exact(EPOCH_ENTRY_LEN)
        .map(|c| {
            let e = EpochEntry::read_from_bytes(c).expect("chunk of the entry size");
            (e.epoch.get(), e.start_offset.get())
        })
        .collect();
    if let Some(i) = entries
        .windows(2)
        .position(|w| w[0].0 >= w[1].0 || w[0].1 > w[1].1)
    {
        return Err(FormatError::Invalid {
            what: "epoch history order (this entry's epoch or start falls)",
            value: i as u64 + 1,
        });
    }
    let current = header.current_epoch.get();
    if let Some(&(epoch, _)) = entries.last()
        && epoch > current
    {
        return Err(FormatError::Invalid {
            what: "epoch history (an entry's epoch above the current epoch)",
            value: epoch,
        });
    }
    Ok((current, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_damage_is_refused() {
        let entries = vec![(0, 0), (3, 10), (4, 10), (9, 250)];
        let bytes = encode_epochs(11, &entries);
        assert_eq!(bytes.len(), EPOCHS_HEADER_LEN + 4 * EPOCH_ENTRY_LEN);
        assert_eq!(decode_epochs(&bytes).unwrap(), (11, entries));
        assert_eq!(decode_epochs(&encode_epochs(2, &[])).unwrap(), (2, vec![]));
        for cut in 0..bytes.len() {
            assert!(decode_epochs(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(decode_epochs(&bad).is_err(), "flip at byte {i}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_epochs(&longer).is_err());
    }

    #[test]
    fn falling_epochs_are_refused_even_with_a_good_crc() {
        let mut raw = encode_epochs(2, &[(1, 0), (2, 5)]);
        // Swap the two entries and re-seal: the CRC is right, the order is not.
        let (a, b) = (
            raw[EPOCHS_HEADER_LEN..EPOCHS_HEADER_LEN + 16].to_vec(),
            raw[EPOCHS_HEADER_LEN + 16..].to_vec(),
        );
        raw[EPOCHS_HEADER_LEN..EPOCHS_HEADER_LEN + 16].copy_from_slice(&b);
        raw[EPOCHS_HEADER_LEN + 16..].copy_from_slice(&a);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&raw[..24]);
        hasher.update(&raw[EPOCHS_HEADER_LEN..]);
        let crc = hasher.finalize();
        raw[24..28].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            decode_epochs(&raw),
            Err(FormatError::Invalid { .. })
        ));
    }
}
