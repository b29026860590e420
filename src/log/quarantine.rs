//! Loss accounting: bytes that recovery cuts (a torn tail) or that [`crate::Log::truncate`]
//! removes are kept in a quarantine file in the log directory instead of vanishing, and
//! reported through [`crate::Log::quarantine`], [`crate::RecoveryReport::quarantined`],
//! `stratalog verify` and a `warn` log line.
//!
//! A quarantine file is `{first_offset:020}-{sequence:06}.quarantine`: a 64-byte
//! [`QuarantineHeader`], the reason as UTF-8, then the cut bytes exactly as they were in the
//! segment(s) (for a truncation spanning segments, each segment's batches after its file
//! header, back to back). See docs/FORMAT.md.
//!
//! Quarantine is bounded: one file keeps at most [`MAX_QUARANTINE_BYTES`] of the cut (the
//! first ones; the header still counts every cut byte), and after a new file is written the
//! oldest files are removed while the directory holds more than [`MAX_QUARANTINE_FILES`] files
//! or more than [`MAX_QUARANTINE_BYTES`] kept bytes. Retention removes the files whose offsets
//! all lie below the new start offset.

use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};
#[cfg(feature = "test-support")]
pub use crate::format::QUARANTINE_HEADER_LEN;
use crate::format::{FormatError, parse_quarantine_file_name, quarantine_file_name};
pub use crate::format::{QUARANTINE_MAGIC, QUARANTINE_VERSION, QuarantineHeader};
use crate::storage::{OpenMode, Storage, read_all};

/// Most cut bytes kept, in one file and in all quarantine files of a log together.
pub const MAX_QUARANTINE_BYTES: u64 = 64 << 20;
/// Most quarantine files kept in a log directory.
pub const MAX_QUARANTINE_FILES: usize = 32;

/// Why bytes were quarantined.
///
/// # Examples
///
/// ```
/// use stratalog::{Log, LogOptions, LossKind};
///
/// # fn main() -> stratalog::Result<()> {
/// let tmp = tempfile::tempdir().unwrap();
/// let log = Log::open(tmp.path(), LogOptions::default())?;
/// log.append_records(&["a"])?.receipt.wait()?;
/// log.append_records(&["b", "c"])?.receipt.wait()?;
/// log.truncate(1)?; // a batch boundary
/// // What `truncate` removed is kept, and says it was a truncation.
/// assert_eq!(log.quarantine()?[0].kind, LossKind::Truncation);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossKind {
    /// Recovery cut a torn tail of the active segment after a crash: bytes written after the
    /// last fsync that did not form whole, valid batches (never acknowledged under
    /// [`crate::FsyncPolicy::Always`]).
    TornTail,
    /// [`crate::Log::truncate`] removed a suffix of the log.
    Truncation,
}

impl LossKind {
    fn code(self) -> u32 {
        match self {
            LossKind::TornTail => 1,
            LossKind::Truncation => 2,
        }
    }

    fn from_code(code: u32) -> Option<LossKind> {
        match code {
            1 => Some(LossKind::TornTail),
            2 => Some(LossKind::Truncation),
            _ => None,
        }
    }
}

/// One quarantine file: what was cut from the log, where, and why.
///
/// # Examples
///
/// ```
/// use stratalog::{Log, LogOptions};
///
/// # fn main() -> stratalog::Result<()> {
/// let tmp = tempfile::tempdir().unwrap();
/// let log = Log::open(tmp.path(), LogOptions::default())?;
/// log.append_records(&["a"])?.receipt.wait()?;
/// log.append_records(&["b", "c"])?.receipt.wait()?;
/// log.truncate(1)?; // a batch boundary
/// let kept = log.quarantine()?;
/// assert_eq!(kept.len(), 1);
/// // Offsets 1 and 2 were cut; their bytes are in the quarantine file.
/// assert_eq!(kept[0].offsets, 1..3);
/// assert!(kept[0].path.exists());
/// assert_eq!(log.end_offset(), 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// The quarantine file.
    pub path: PathBuf,
    /// Torn tail or truncation.
    pub kind: LossKind,
    /// The offsets the cut bytes held: from the log's end after the cut to one past the last
    /// offset their batch headers name (empty if no header could be read, as in most torn
    /// tails).
    pub offsets: Range<u64>,
    /// Base offset of the segment the cut started in.
    pub segment_base: u64,
    /// Byte position in that segment where the cut started.
    pub position: u64,
    /// Bytes removed from the log.
    pub bytes: u64,
    /// Bytes of them kept in the file (fewer than `bytes` only past the size bound).
    pub kept_bytes: u64,
    /// Why the bytes were cut.
    pub reason: String,
}

impl std::fmt::Display for Quarantined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            LossKind::TornTail => "torn tail",
            LossKind::Truncation => "truncation",
        };
        write!(
            f,
            "{kind}: {} bytes cut at offsets {}..{} (segment {} byte {}), {} kept in {}: {}",
            self.bytes,
            self.offsets.start,
            self.offsets.end,
            self.segment_base,
            self.position,
            self.kept_bytes,
            self.path.display(),
            self.reason
        )
    }
}

/// What is about to be cut.
pub(crate) struct Loss<'a> {
    pub kind: LossKind,
    pub first_offset: u64,
    pub end_offset: u64,
    pub segment_base: u64,
    pub position: u64,
    pub cut_bytes: u64,
    pub reason: &'a str,
}

/// One past the last offset named by the batch headers that can be read at the start of
/// `bytes` (headers only: torn or rotten batches may still name their offsets).
pub(crate) fn end_offset_of(bytes: &[u8], first_offset: u64) -> u64 {
    let mut end = first_offset;
    let mut pos = 0usize;
    while let Ok(h) = crate::format::BatchHeader::parse(&bytes[pos.min(bytes.len())..]) {
        end = end.max(h.last_offset().saturating_add(1));
        pos += h.length.get() as usize;
    }
    end
}

/// Writes a quarantine file for `loss` holding `data` (the first bytes of the cut; at most
/// [`MAX_QUARANTINE_BYTES`] are kept), durable, then enforces the bounds.
pub(crate) fn save(
    storage: &dyn Storage,
    dir: &Path,
    loss: &Loss<'_>,
    data: &[u8],
) -> Result<Quarantined> {
    let kept = &data[..data.len().min(MAX_QUARANTINE_BYTES as usize)];
    let reason: String = loss.reason.chars().take(1000).collect();
    let (header, bytes) = QuarantineHeader {
        crc: 0.into(),
        magic: QUARANTINE_MAGIC.into(),
        version: QUARANTINE_VERSION.into(),
        reason_len: 0.into(),
        kind: loss.kind.code().into(),
        first_offset: loss.first_offset.into(),
        end_offset: loss.end_offset.max(loss.first_offset).into(),
        segment_base: loss.segment_base.into(),
        position: loss.position.into(),
        cut_bytes: loss.cut_bytes.into(),
        kept_bytes: 0.into(),
    }
    .encode(&reason, kept)
    .map_err(|e| crate::Error::InvalidArgument(format!("quarantine header: {e}")))?;
    let existing = names(storage, dir)?;
    let sequence = existing.iter().map(|(_, s)| s + 1).max().unwrap_or(0);
    let path = dir.join(quarantine_file_name(loss.first_offset, sequence));
    super::segment::replace_file(storage, &path, &bytes)?;
    let q = describe(&path, &header, reason);
    tracing::warn!(dir = %dir.display(), quarantine = %q, "bytes cut from the log were quarantined");
    enforce_bounds(storage, dir)?;
    Ok(q)
}

/// Quarantine file names in `dir` with their sequence numbers, oldest first.
fn names(storage: &dyn Storage, dir: &Path) -> Result<Vec<(String, u64)>> {
    let mut out: Vec<(String, u64)> = storage
        .list(dir)
        .ctx("list", dir)?
        .into_iter()
        .filter_map(|n| {
            let seq = parse_quarantine_file_name(&n)?;
            Some((n, seq))
        })
        .collect();
    out.sort_by_key(|(_, s)| *s);
    Ok(out)
}

fn describe(path: &Path, h: &QuarantineHeader, reason: String) -> Quarantined {
    Quarantined {
        path: path.to_path_buf(),
        kind: LossKind::from_code(h.kind.get()).unwrap_or(LossKind::TornTail),
        offsets: h.first_offset.get()..h.end_offset.get(),
        segment_base: h.segment_base.get(),
        position: h.position.get(),
        bytes: h.cut_bytes.get(),
        kept_bytes: h.kept_bytes.get(),
        reason,
    }
}

/// Reads and checks one quarantine file (header, CRC over everything).
pub(crate) fn read(storage: &dyn Storage, path: &Path) -> Result<Quarantined, String> {
    let file = storage
        .open(path, OpenMode::Read)
        .map_err(|e| format!("open: {e}"))?;
    let bytes = read_all(file.as_ref()).map_err(|e| format!("read: {e}"))?;
    parse(&bytes)
        .map(|(h, reason)| describe(path, &h, reason))
        .map_err(|e| e.to_string())
}

fn parse(bytes: &[u8]) -> Result<(QuarantineHeader, String), FormatError> {
    let (header, reason, _kept) = QuarantineHeader::parse(bytes)?;
    if LossKind::from_code(header.kind.get()).is_none() {
        return Err(FormatError::Invalid {
            what: "quarantine kind",
            value: header.kind.get().into(),
        });
    }
    Ok((header, String::from_utf8_lossy(reason).into_owned()))
}

/// Every quarantine file of the log in `dir`, oldest first. A file that fails its checks is
/// listed by [`crate::verify_dir`] as a note and skipped here.
pub(crate) fn list(storage: &dyn Storage, dir: &Path) -> Result<Vec<Quarantined>> {
    Ok(list_checked(storage, dir)?
        .into_iter()
        .filter_map(|(_, r)| r.ok())
        .collect())
}

/// Every quarantine file with the result of reading it.
pub(crate) fn list_checked(
    storage: &dyn Storage,
    dir: &Path,
) -> Result<Vec<(PathBuf, Result<Quarantined, String>)>> {
    Ok(names(storage, dir)?
        .into_iter()
        .map(|(n, _)| {
            let path = dir.join(n);
            let q = read(storage, &path);
            (path, q)
        })
        .collect())
}

/// Removes the oldest files while there are too many or they keep too many bytes.
fn enforce_bounds(storage: &dyn Storage, dir: &Path) -> Result<()> {
    let files = list_checked(storage, dir)?;
    let mut total: u64 = files
        .iter()
        .map(|(_, q)| q.as_ref().map_or(0, |q| q.kept_bytes))
        .sum();
    let mut count = files.len();
    let mut removed = false;
    for (path, q) in &files {
        if count <= MAX_QUARANTINE_FILES && total <= MAX_QUARANTINE_BYTES {
            break;
        }
        storage.remove(path).ctx("remove", path)?;
        tracing::warn!(path = %path.display(), "removed the oldest quarantine file (quarantine is bounded)");
        total -= q.as_ref().map_or(0, |q| q.kept_bytes);
        count -= 1;
        removed = true;
    }
    if removed {
        storage.sync_dir(dir).ctx("fsync directory", dir)?;
    }
    Ok(())
}

/// Removes the quarantine files whose offsets all lie below `start` (retention passed them).
pub(crate) fn remove_below(storage: &dyn Storage, dir: &Path, start: u64) -> Result<usize> {
    let mut removed = 0;
    for (path, q) in list_checked(storage, dir)? {
        if q.is_ok_and(|q| q.offsets.start < start && q.offsets.end <= start) {
            storage.remove(&path).ctx("remove", &path)?;
            removed += 1;
        }
    }
    if removed > 0 {
        storage.sync_dir(dir).ctx("fsync directory", dir)?;
    }
    Ok(removed)
}
