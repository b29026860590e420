//! The `MANIFEST` of a snapshot (docs/DR.md is its byte map; `tests/manifest_doc.rs` checks
//! that the two agree).
//!
//! ```text
//! manifest  = manifest_header | partition[partition_count] | file[file_count] | u32 crc
//! header    = [u8; 8] magic "STRASNP\0" | u32 version (1) | u32 flags (0) | u64 snapshot_id
//!           | i64 created_ms | u32 partition_count | u32 file_count
//! partition = u64 start_offset | u64 end_offset | u64 leader_epoch | u16 dir_len | u8[dir_len] dir
//! file      = u64 len | u32 crc32c | u8 how | u8 reserved (0) | u16 path_len | u8[path_len] path
//! crc       = CRC-32C of every byte before it
//! ```
//!
//! `dir` and `path` are UTF-8, relative to the snapshot directory, `/`-separated, with no empty,
//! `.` or `..` component: a manifest can never name a file outside its snapshot. `crc32c` is the
//! CRC-32C (Castagnoli, the `crc32c` crate) of the file's `len` bytes.

use zerocopy::little_endian::{I64, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{FormatError, check_bounds, check_len};

/// Magic of a snapshot's `MANIFEST`.
pub const MANIFEST_MAGIC: [u8; 8] = *b"STRASNP\0";
/// The manifest format version this build writes and reads.
pub const MANIFEST_VERSION: u32 = 1;
/// Bytes of [`ManifestHeader`].
pub const MANIFEST_HEADER_LEN: usize = 40;
/// Bytes of the fixed part of a partition entry ([`ManifestPartitionEntry`]), before its name.
pub const MANIFEST_PARTITION_LEN: usize = 26;
/// Bytes of the fixed part of a file entry ([`ManifestFileEntry`]), before its path.
pub const MANIFEST_FILE_LEN: usize = 16;
/// Bytes of the trailing CRC.
pub const MANIFEST_CRC_LEN: usize = 4;
/// Longest path (or partition directory) a manifest holds, in bytes.
pub const MAX_MANIFEST_PATH: usize = 4096;
/// Most partitions, and most files, a manifest lists.
pub const MAX_MANIFEST_ENTRIES: u32 = 1 << 24;
/// The file name of the manifest inside a snapshot directory.
pub const MANIFEST_NAME: &str = "MANIFEST";

/// The header of a `MANIFEST`.
///
/// # Examples
///
/// ```
/// use stratalog::format::{MANIFEST_HEADER_LEN, MANIFEST_MAGIC, Manifest, ManifestHeader};
/// use zerocopy::FromBytes;
///
/// let manifest = Manifest { snapshot_id: 7, created_ms: 1, partitions: vec![], files: vec![] };
/// let bytes = manifest.encode();
/// let (header, _) = ManifestHeader::read_from_prefix(&bytes).unwrap();
/// assert_eq!(header.magic, MANIFEST_MAGIC);
/// assert_eq!(header.snapshot_id.get(), 7);
/// assert_eq!(bytes.len(), MANIFEST_HEADER_LEN + 4);
/// ```
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ManifestHeader {
    /// [`MANIFEST_MAGIC`].
    pub magic: [u8; 8],
    /// [`MANIFEST_VERSION`].
    pub version: U32,
    /// Zero.
    pub flags: U32,
    /// A number drawn when the snapshot was taken (it tells two snapshots apart).
    pub snapshot_id: U64,
    /// When the snapshot was taken, in milliseconds since the Unix epoch.
    pub created_ms: I64,
    /// Number of partition entries that follow.
    pub partition_count: U32,
    /// Number of file entries that follow the partitions.
    pub file_count: U32,
}

const _: () = assert!(size_of::<ManifestHeader>() == MANIFEST_HEADER_LEN);

/// The fixed part of a partition entry; `dir_len` bytes of its directory follow.
///
/// # Examples
///
/// ```
/// use stratalog::format::{MANIFEST_PARTITION_LEN, ManifestPartitionEntry};
/// assert_eq!(size_of::<ManifestPartitionEntry>(), MANIFEST_PARTITION_LEN);
/// ```
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ManifestPartitionEntry {
    /// The log's first offset.
    pub start_offset: U64,
    /// One past the log's last offset in the snapshot (the snapshot point).
    pub end_offset: U64,
    /// The log's current leader epoch.
    pub leader_epoch: U64,
    /// Bytes of the directory name that follows.
    pub dir_len: U16,
}

const _: () = assert!(size_of::<ManifestPartitionEntry>() == MANIFEST_PARTITION_LEN);

/// The fixed part of a file entry; `path_len` bytes of its path follow.
///
/// # Examples
///
/// ```
/// use stratalog::format::{MANIFEST_FILE_LEN, ManifestFileEntry};
/// assert_eq!(size_of::<ManifestFileEntry>(), MANIFEST_FILE_LEN);
/// ```
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ManifestFileEntry {
    /// The file's length in bytes.
    pub len: U64,
    /// CRC-32C of the file's bytes.
    pub crc32c: U32,
    /// How the file was taken ([`FileCopy`]).
    pub how: u8,
    /// Zero.
    pub reserved: u8,
    /// Bytes of the path that follows.
    pub path_len: U16,
}

const _: () = assert!(size_of::<ManifestFileEntry>() == MANIFEST_FILE_LEN);

/// How a file came into the snapshot.
///
/// # Examples
///
/// ```
/// use stratalog::format::FileCopy;
/// assert_eq!(FileCopy::from_byte(FileCopy::Cut as u8), Some(FileCopy::Cut));
/// assert_eq!(FileCopy::from_byte(9), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FileCopy {
    /// Hard-linked from the store (a sealed segment and its indexes, never changed in place).
    Linked = 0,
    /// Copied whole (small files, or a sealed segment on another file system).
    Copied = 1,
    /// The active segment, copied up to the snapshot point.
    Cut = 2,
    /// Written by the snapshot (the epoch history cut at the snapshot point).
    Written = 3,
}

impl FileCopy {
    /// The value of a `how` byte, if it is one the format defines.
    pub fn from_byte(b: u8) -> Option<FileCopy> {
        Some(match b {
            0 => FileCopy::Linked,
            1 => FileCopy::Copied,
            2 => FileCopy::Cut,
            3 => FileCopy::Written,
            _ => return None,
        })
    }
}

/// One partition (or the consumer offsets log) of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestPartition {
    /// The log's directory, relative to the snapshot (`orders/0`, `__consumer_offsets`).
    pub dir: String,
    /// The log's first offset.
    pub start_offset: u64,
    /// One past its last offset in the snapshot.
    pub end_offset: u64,
    /// Its leader epoch.
    pub leader_epoch: u64,
}

/// One file of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    /// Relative to the snapshot directory, `/`-separated.
    pub path: String,
    /// Length in bytes.
    pub len: u64,
    /// CRC-32C of the bytes.
    pub crc32c: u32,
    /// How it was taken.
    pub how: FileCopy,
}

/// A decoded `MANIFEST`.
///
/// # Examples
///
/// ```
/// use stratalog::format::{FileCopy, Manifest, ManifestFile, ManifestPartition};
///
/// let manifest = Manifest {
///     snapshot_id: 42,
///     created_ms: 1_700_000_000_000,
///     partitions: vec![ManifestPartition {
///         dir: "orders/0".into(), start_offset: 0, end_offset: 10, leader_epoch: 1,
///     }],
///     files: vec![ManifestFile {
///         path: "orders/0/log.meta".into(), len: 64, crc32c: 0xdead_beef, how: FileCopy::Copied,
///     }],
/// };
/// let mut bytes = manifest.encode();
/// assert_eq!(Manifest::decode(&bytes).unwrap(), manifest);
/// // One flipped bit anywhere is refused.
/// bytes[50] ^= 1;
/// assert!(Manifest::decode(&bytes).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// See [`ManifestHeader::snapshot_id`].
    pub snapshot_id: u64,
    /// See [`ManifestHeader::created_ms`].
    pub created_ms: i64,
    /// The logs of the snapshot.
    pub partitions: Vec<ManifestPartition>,
    /// Every file of the snapshot but the manifest itself.
    pub files: Vec<ManifestFile>,
}

/// Checks a relative path of a manifest: not empty, at most [`MAX_MANIFEST_PATH`] bytes,
/// `/`-separated components that are neither empty, `.` nor `..`, and no NUL or `\`.
pub fn check_manifest_path(what: &'static str, path: &str) -> Result<(), FormatError> {
    check_bounds(what, path.len() as u64, 1, MAX_MANIFEST_PATH as u64)?;
    let bad = path.bytes().any(|b| b == 0 || b == b'\\')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(FormatError::Invalid {
            what,
            value: path.len() as u64,
        });
    }
    Ok(())
}

impl Manifest {
    /// Encodes the manifest. Paths must pass [`check_manifest_path`] (debug-asserted).
    pub fn encode(&self) -> Vec<u8> {
        let header = ManifestHeader {
            magic: MANIFEST_MAGIC,
            version: MANIFEST_VERSION.into(),
            flags: 0.into(),
            snapshot_id: self.snapshot_id.into(),
            created_ms: self.created_ms.into(),
            partition_count: (self.partitions.len() as u32).into(),
            file_count: (self.files.len() as u32).into(),
        };
        let mut out = header.as_bytes().to_vec();
        for p in &self.partitions {
            debug_assert!(check_manifest_path("partition dir", &p.dir).is_ok());
            let entry = ManifestPartitionEntry {
                start_offset: p.start_offset.into(),
                end_offset: p.end_offset.into(),
                leader_epoch: p.leader_epoch.into(),
                dir_len: (p.dir.len() as u16).into(),
            };
            out.extend_from_slice(entry.as_bytes());
            out.extend_from_slice(p.dir.as_bytes());
        }
        for f in &self.files {
            debug_assert!(check_manifest_path("file path", &f.path).is_ok());
            let entry = ManifestFileEntry {
                len: f.len.into(),
                crc32c: f.crc32c.into(),
                how: f.how as u8,
                reserved: 0,
                path_len: (f.path.len() as u16).into(),
            };
            out.extend_from_slice(entry.as_bytes());
            out.extend_from_slice(f.path.as_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and checks a manifest: magic, version, flags, CRC, counts and lengths within
    /// the bytes and the limits, every path (see [`check_manifest_path`]), `how` values, zero
    /// reserved bytes, start offsets not above end offsets, no path listed twice, and no byte
    /// left over.
    pub fn decode(buf: &[u8]) -> Result<Manifest, FormatError> {
        const WHAT: &str = "snapshot manifest";
        check_len(
            WHAT,
            (MANIFEST_HEADER_LEN + MANIFEST_CRC_LEN) as u64,
            buf.len(),
        )?;
        let (header, _) =
            ManifestHeader::read_from_prefix(buf).map_err(|_| FormatError::Truncated {
                what: WHAT,
                needed: MANIFEST_HEADER_LEN as u64,
                available: buf.len() as u64,
            })?;
        if header.magic != MANIFEST_MAGIC {
            return Err(FormatError::BadMagic {
                what: WHAT,
                found: u64::from_le_bytes(header.magic),
            });
        }
        if header.version.get() != MANIFEST_VERSION {
            return Err(FormatError::UnsupportedVersion {
                what: WHAT,
                found: header.version.get(),
                supported: MANIFEST_VERSION,
            });
        }
        let body_len = buf.len() - MANIFEST_CRC_LEN;
        let stored = u32::from_le_bytes(buf[body_len..].try_into().expect("4 bytes"));
        let computed = crc32c::crc32c(&buf[..body_len]);
        if stored != computed {
            return Err(FormatError::ChecksumMismatch {
                what: WHAT,
                stored,
                computed,
            });
        }
        if header.flags.get() != 0 {
            return Err(FormatError::Invalid {
                what: "manifest flags",
                value: header.flags.get().into(),
            });
        }
        let partitions = check_bounds(
            "manifest partition_count",
            header.partition_count.get().into(),
            0,
            MAX_MANIFEST_ENTRIES.into(),
        )? as usize;
        let files = check_bounds(
            "manifest file_count",
            header.file_count.get().into(),
            0,
            MAX_MANIFEST_ENTRIES.into(),
        )? as usize;
        let body = &buf[..body_len];
        let mut pos = MANIFEST_HEADER_LEN;
        let mut out = Manifest {
            snapshot_id: header.snapshot_id.get(),
            created_ms: header.created_ms.get(),
            // Never trust a count for an allocation: each entry is at least its fixed part.
            partitions: Vec::with_capacity(partitions.min(body_len / MANIFEST_PARTITION_LEN)),
            files: Vec::with_capacity(files.min(body_len / MANIFEST_FILE_LEN)),
        };
        for _ in 0..partitions {
            let rest = &body[pos..];
            check_len(
                "manifest partition entry",
                MANIFEST_PARTITION_LEN as u64,
                rest.len(),
            )?;
            let (entry, rest) = ManifestPartitionEntry::read_from_prefix(rest).map_err(|_| {
                FormatError::Invalid {
                    what: "manifest partition entry",
                    value: pos as u64,
                }
            })?;
            let dir = name(rest, entry.dir_len.get(), "partition dir")?;
            if entry.start_offset.get() > entry.end_offset.get() {
                return Err(FormatError::OutOfBounds {
                    what: "partition start_offset",
                    value: entry.start_offset.get(),
                    min: 0,
                    max: entry.end_offset.get(),
                });
            }
            out.partitions.push(ManifestPartition {
                dir,
                start_offset: entry.start_offset.get(),
                end_offset: entry.end_offset.get(),
                leader_epoch: entry.leader_epoch.get(),
            });
            pos += MANIFEST_PARTITION_LEN + usize::from(entry.dir_len.get());
        }
        let mut seen = std::collections::HashSet::new();
        for _ in 0..files {
            let rest = &body[pos..];
            check_len("manifest file entry", MANIFEST_FILE_LEN as u64, rest.len())?;
            let (entry, rest) =
                ManifestFileEntry::read_from_prefix(rest).map_err(|_| FormatError::Invalid {
                    what: "manifest file entry",
                    value: pos as u64,
                })?;
            let path = name(rest, entry.path_len.get(), "file path")?;
            let how = FileCopy::from_byte(entry.how).ok_or(FormatError::Invalid {
                what: "manifest file how",
                value: entry.how.into(),
            })?;
            if entry.reserved != 0 {
                return Err(FormatError::Invalid {
                    what: "manifest file reserved",
                    value: entry.reserved.into(),
                });
            }
            if !seen.insert(path.clone()) {
                return Err(FormatError::Invalid {
                    what: "manifest file listed twice, path length",
                    value: path.len() as u64,
                });
            }
            out.files.push(ManifestFile {
                path,
                len: entry.len.get(),
                crc32c: entry.crc32c.get(),
                how,
            });
            pos += MANIFEST_FILE_LEN + usize::from(entry.path_len.get());
        }
        if pos != body_len {
            return Err(FormatError::Invalid {
                what: "bytes after the manifest's last entry",
                value: (body_len - pos) as u64,
            });
        }
        Ok(out)
    }
}

/// The `len` bytes of a name at the start of `rest`, checked.
fn name(rest: &[u8], len: u16, what: &'static str) -> Result<String, FormatError> {
    let len = usize::from(len);
    check_len(what, len as u64, rest.len())?;
    let s = std::str::from_utf8(&rest[..len]).map_err(|e| FormatError::Invalid {
        what,
        value: e.valid_up_to() as u64,
    })?;
    check_manifest_path(what, s)?;
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            snapshot_id: 1,
            created_ms: 2,
            partitions: vec![ManifestPartition {
                dir: "t/0".into(),
                start_offset: 3,
                end_offset: 9,
                leader_epoch: 4,
            }],
            files: vec![ManifestFile {
                path: "t/0/log.meta".into(),
                len: 5,
                crc32c: 6,
                how: FileCopy::Copied,
            }],
        }
    }

    #[test]
    fn every_truncation_and_every_bit_flip_is_refused() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(Manifest::decode(&b).is_err(), "flip {i}.{bit}");
            }
        }
    }

    #[test]
    fn paths_that_leave_the_snapshot_are_refused() {
        for bad in ["", "/abs", "a/../b", "..", "a//b", "./a", "a\\b", "a/"] {
            assert!(check_manifest_path("p", bad).is_err(), "{bad:?}");
        }
        assert!(check_manifest_path("p", "orders/0/00000000000000000000.log").is_ok());
        // Even with a valid CRC, a path escaping the snapshot does not decode.
        let mut m = sample();
        m.files[0].path = "../x".into();
        let mut bytes = m.encode_unchecked();
        let n = bytes.len() - 4;
        let crc = crc32c::crc32c(&bytes[..n]);
        bytes[n..].copy_from_slice(&crc.to_le_bytes());
        assert!(Manifest::decode(&bytes).is_err());
    }

    impl Manifest {
        /// `encode` without the debug assertions on paths.
        fn encode_unchecked(&self) -> Vec<u8> {
            let mut m = self.clone();
            let paths: Vec<String> = m.files.iter().map(|f| f.path.clone()).collect();
            for f in &mut m.files {
                f.path = "x".repeat(f.path.len());
            }
            let mut bytes = m.encode();
            // Put the real paths back where the placeholders are.
            let mut pos = MANIFEST_HEADER_LEN;
            for p in &m.partitions {
                pos += MANIFEST_PARTITION_LEN + p.dir.len();
            }
            for p in paths {
                pos += MANIFEST_FILE_LEN;
                bytes[pos..pos + p.len()].copy_from_slice(p.as_bytes());
                pos += p.len();
            }
            bytes
        }
    }
}
