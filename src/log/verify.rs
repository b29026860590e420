//! Read-only checks of a log directory, for `stratalog verify`: every batch of every segment,
//! offsets that follow on, and every index entry. Nothing is changed.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use zerocopy::FromBytes;

use super::checkpoint::{Checkpoint, CheckpointFile, Meta};
use super::index::{parse_offsets, parse_times};
use super::quarantine::Quarantined;
use super::segment::SegmentPaths;
use crate::error::{IoContext, Result};
use crate::format::parse_segment_name;
use crate::format::{
    BATCH_HEADER_LEN, Batch, BatchHeader, CheckpointSlot, FILE_HEADER_LEN, FileHeader, FileKind,
};
use crate::storage::{OpenMode, Storage, read_all};

/// Something wrong found by [`verify_dir`].
///
/// # Examples
///
/// ```
/// use stratalog::storage::FsStorage;
/// use stratalog::{Log, LogOptions, verify_dir};
///
/// # fn main() -> stratalog::Result<()> {
/// let tmp = tempfile::tempdir().unwrap();
/// let log = Log::open(tmp.path(), LogOptions::default())?;
/// log.append_records(&["some value"])?.receipt.wait()?;
/// log.close()?;
/// // Flip the segment's last byte (inside the batch's value).
/// let segment = tmp.path().join(stratalog::format::segment_file_name(0, stratalog::format::SegmentFile::Log));
/// let mut bytes = std::fs::read(&segment).unwrap();
/// *bytes.last_mut().unwrap() ^= 0xff;
/// std::fs::write(&segment, &bytes).unwrap();
/// let report = verify_dir(&FsStorage, tmp.path())?;
/// // The problem names the file and the byte where the bad batch starts.
/// let problem = &report.problems[0];
/// assert_eq!(problem.path, segment);
/// assert!(problem.position.is_some());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub path: PathBuf,
    /// Byte position in the file, where it applies.
    pub position: Option<u64>,
    /// For a bad range of a segment: one past its last byte (the next sound batch, or the end
    /// of the file).
    pub end: Option<u64>,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.position, self.end) {
            (Some(p), Some(e)) => write!(
                f,
                "{} at byte {p} (bad range {p}..{e}): {}",
                self.path.display(),
                self.what
            ),
            (Some(p), None) => write!(f, "{} at byte {p}: {}", self.path.display(), self.what),
            (None, _) => write!(f, "{}: {}", self.path.display(), self.what),
        }
    }
}

/// What [`verify_dir`] found.
///
/// # Examples
///
/// ```
/// use stratalog::storage::FsStorage;
/// use stratalog::{Log, LogOptions, verify_dir};
///
/// # fn main() -> stratalog::Result<()> {
/// let tmp = tempfile::tempdir().unwrap();
/// let log = Log::open(tmp.path(), LogOptions::default())?;
/// log.append_records(&["a", "b"])?.receipt.wait()?;
/// log.append_records(&["c"])?.receipt.wait()?;
/// log.close()?;
/// let report = verify_dir(&FsStorage, tmp.path())?;
/// assert!(report.problems.is_empty());
/// assert_eq!((report.batches, report.records), (2, 3));
/// assert_eq!((report.start_offset, report.end_offset), (0, 3));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Segments checked.
    pub segments: usize,
    /// Batches checked.
    pub batches: u64,
    /// Records in those batches (sound ones only).
    pub records: u64,
    /// The first offset the segment files hold (the base of the first segment at or above
    /// the log's start).
    pub start_offset: u64,
    /// One past the last offset of a sound batch.
    pub end_offset: u64,
    /// Offsets in `start_offset..end_offset` that no sound batch holds: in bad ranges, or in
    /// gaps between segments. `records + offsets_lost == end_offset - start_offset` unless
    /// segments overlap (itself a problem).
    pub offsets_lost: u64,
    /// Faults: the log is not sound if there is any.
    pub problems: Vec<Problem>,
    /// Things that are expected after a crash and that the next open repairs (a torn tail of
    /// the active segment after the last fsync, an index that lags behind).
    pub notes: Vec<String>,
    /// Bytes cut from the log earlier (torn tails, truncations) and kept in quarantine files.
    /// Not a fault of the log: an account of what it no longer holds.
    pub quarantined: Vec<Quarantined>,
}

impl VerifyReport {
    /// True if no problem was found.
    pub fn is_sound(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the log in `dir` without changing it.
pub fn verify_dir(storage: &dyn Storage, dir: &Path) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let meta = match Meta::read(storage, dir) {
        Ok(Some(meta)) => Some(meta),
        Ok(None) => {
            report.problems.push(Problem {
                path: dir.join(super::checkpoint::META_NAME),
                position: None,
                end: None,
                what: "missing".into(),
            });
            None
        }
        Err(e) => {
            report.problems.push(Problem {
                path: dir.join(super::checkpoint::META_NAME),
                position: None,
                end: None,
                what: e.to_string(),
            });
            None
        }
    };
    match super::reset::pending(storage, dir) {
        Ok(None) => {}
        Ok(Some(offset)) => report.notes.push(format!(
            "an interrupted Log::reset_to({offset}) is pending: the next writable open drops \
             every segment and starts the log empty at {offset}"
        )),
        Err(e) => report.problems.push(Problem {
            path: dir.join(super::reset::RESET_NAME),
            position: None,
            end: None,
            what: e.to_string(),
        }),
    }
    let checkpoint = read_checkpoint(storage, dir)?;
    let mut bases: Vec<u64> = storage
        .list(dir)
        .ctx("list", dir)?
        .iter()
        .filter_map(|n| parse_segment_name(n))
        .collect();
    bases.sort_unstable();
    if let Some(meta) = meta {
        while bases.len() >= 2 && bases[1] <= meta.start_offset {
            report.notes.push(format!(
                "segment {} is below the start offset {}; the next open deletes it",
                bases[0], meta.start_offset
            ));
            bases.remove(0);
        }
    }
    let mut expected: Option<u64> = None;
    for (i, &base) in bases.iter().enumerate() {
        let is_last = i + 1 == bases.len();
        let paths = SegmentPaths::new(dir, base);
        // After a crash, the active segment may end in a torn write after the last fsync.
        let durable_below = match checkpoint {
            Some(c) if c.clean => u64::MAX,
            Some(c) if c.segment_base == base => c.position,
            Some(c) if c.segment_base > base => u64::MAX,
            _ if is_last => FILE_HEADER_LEN as u64,
            _ => u64::MAX,
        };
        if i == 0 {
            report.start_offset = base;
        }
        if let Some(e) = expected.filter(|&e| e != base) {
            report.problems.push(Problem {
                path: paths.log.clone(),
                position: None,
                end: None,
                what: format!("segment starts at offset {base} but the previous one ends at {e}"),
            });
            report.offsets_lost += base.saturating_sub(e);
        }
        let next_base = bases.get(i + 1).copied();
        let end = verify_segment(storage, &paths, base, next_base, durable_below, &mut report)?;
        expected = end;
        if let Some(end) = end {
            report.end_offset = report.end_offset.max(end);
        }
        report.segments += 1;
    }
    for (path, q) in super::quarantine::list_checked(storage, dir)? {
        match q {
            Ok(q) => report.quarantined.push(q),
            Err(e) => report.notes.push(format!(
                "{}: quarantine file fails its checks ({e}); it is not part of the log",
                path.display()
            )),
        }
    }
    Ok(report)
}

pub(super) fn read_checkpoint(storage: &dyn Storage, dir: &Path) -> Result<Option<Checkpoint>> {
    let path = dir.join(CheckpointFile::NAME);
    if !storage.exists(&path) {
        return Ok(None);
    }
    let bytes = read_all(
        storage
            .open(&path, OpenMode::Read)
            .ctx("open", &path)?
            .as_ref(),
    )
    .ctx("read", &path)?;
    if FileHeader::parse(&bytes, FileKind::Checkpoint, 0).is_err() {
        return Ok(None);
    }
    let best = (0..2)
        .filter_map(|i| {
            bytes
                .get(FILE_HEADER_LEN + 64 * i..)
                .and_then(CheckpointSlot::parse)
        })
        .max_by_key(|s| s.sequence.get());
    Ok(best.map(|s| Checkpoint {
        clean: s.clean.get() == 1,
        segment_base: s.segment_base.get(),
        position: s.position.get(),
        next_offset: s.next_offset.get(),
        max_ts: s.max_timestamp.get(),
    }))
}

fn read_file(storage: &dyn Storage, path: &Path) -> Result<Option<Bytes>> {
    if !storage.exists(path) {
        return Ok(None);
    }
    let file = storage.open(path, OpenMode::Read).ctx("open", path)?;
    let len = file.len().ctx("stat", path)?;
    Ok(Some(file.map(len).ctx("mmap", path)?.bytes))
}

/// Checks one segment and its indexes; returns one past its last offset, or `None` if the
/// segment cannot be read at all (a bad file header: then its indexes and the next segment's
/// start are not judged against it, which would only repeat the same fault).
///
/// A bad batch does not end the check: the scan looks for the next sound batch after it (by
/// the bad batch's length if its header is sound, else byte by byte) and goes on from there,
/// so that every bad range of the segment is reported, each once.
fn verify_segment(
    storage: &dyn Storage,
    paths: &SegmentPaths,
    base: u64,
    next_base: Option<u64>,
    durable_below: u64,
    report: &mut VerifyReport,
) -> Result<Option<u64>> {
    let is_last = next_base.is_none();
    let Some(bytes) = read_file(storage, &paths.log)? else {
        report.problems.push(Problem {
            path: paths.log.clone(),
            position: None,
            end: None,
            what: "missing".into(),
        });
        return Ok(None);
    };
    if let Err(e) = FileHeader::parse(&bytes, FileKind::Segment, base) {
        // A crash inside a roll can leave the new last segment without its header; nothing in
        // it was ever acknowledged, and the next open writes the header.
        if is_last && durable_below != u64::MAX && bytes.len() <= FILE_HEADER_LEN {
            report.notes.push(format!(
                "{}: {e} (a roll interrupted by a crash; the next open rewrites it)",
                paths.log.display()
            ));
            return Ok(Some(base));
        }
        report.problems.push(Problem {
            path: paths.log.clone(),
            position: Some(0),
            end: None,
            what: e.to_string(),
        });
        return Ok(None);
    }
    let len = bytes.len() as u64;
    let mut expected = base;
    let mut batches = Vec::new(); // (position, base offset, last offset, running max timestamp)
    let mut max_ts = i64::MIN;
    let mut valid_end = FILE_HEADER_LEN as u64;
    let mut pos = FILE_HEADER_LEN as u64;
    // Just after a bad range (whose problem already names the offsets it lost).
    let mut after_bad = false;
    // Bad ranges (bytes) and the offsets they lost: index entries into them are not judged.
    let mut bad = Bad::default();
    while pos < len {
        let fault = match Batch::validate(bytes.slice(pos as usize..)) {
            Ok(b) if b.base_offset() >= expected => match b
                .records()
                .and_then(|records| records.collect::<Result<Vec<_>, _>>())
            {
                Err(e) => Some(format!("records of batch {}: {e}", b.base_offset())),
                Ok(_) => {
                    if b.base_offset() > expected && !after_bad {
                        report.problems.push(Problem {
                            path: paths.log.clone(),
                            position: Some(pos),
                            end: None,
                            what: format!(
                                "batch base offset {} where {expected} was expected: offsets {expected}..{} are missing",
                                b.base_offset(),
                                b.base_offset()
                            ),
                        });
                    }
                    report.offsets_lost += b.base_offset() - expected;
                    after_bad = false;
                    max_ts = max_ts.max(b.max_timestamp());
                    batches.push((pos, b.base_offset(), b.last_offset(), max_ts));
                    report.batches += 1;
                    report.records += u64::from(b.record_count());
                    expected = b.last_offset() + 1;
                    valid_end = pos + b.len() as u64;
                    pos = valid_end;
                    continue;
                }
            },
            Ok(b) => Some(format!(
                "batch base offset {} where {expected} was expected (offsets go back)",
                b.base_offset()
            )),
            Err(e) => Some(e.to_string()),
        };
        let what = fault.expect("every sound batch continues the loop");
        let zeros = super::prealloc::trim_zeros(&bytes[pos as usize..]) == 0;
        if is_last && pos >= durable_below && zeros {
            report.notes.push(format!(
                "{}: {} bytes of preallocated zeros after the last batch, at byte {pos} (the next open trims them)",
                paths.log.display(),
                len - pos
            ));
            break;
        }
        if is_last && pos >= durable_below {
            report.notes.push(format!(
                "{}: torn tail of {} bytes at byte {pos} after the last fsync ({what}); the next open cuts it",
                paths.log.display(),
                len - pos
            ));
            break;
        }
        // The bad range runs to the next sound batch (or to the end of the file).
        let next = next_sound_batch(&bytes, pos, expected);
        let bad_end = next.map_or(len, |(p, _)| p);
        let lost = match (next, next_base) {
            (Some((_, b)), _) | (None, Some(b)) => {
                format!("; offsets {expected}..{b} are not readable")
            }
            (None, None) => "; nothing after it is readable".into(),
        };
        report.problems.push(Problem {
            path: paths.log.clone(),
            position: Some(pos),
            end: Some(bad_end),
            what: format!("{} bad bytes: {what}{lost}", bad_end - pos),
        });
        bad.bytes.push((pos, bad_end));
        let lost_to = next.map(|(_, b)| b).or(next_base).unwrap_or(u64::MAX);
        bad.offsets.push((expected, lost_to));
        after_bad = true;
        pos = bad_end;
    }
    // A bad range at the end of a sealed segment lost the offsets up to the next segment:
    // counted here, so that the next segment's start is not reported again as a gap.
    if let (true, Some(next)) = (after_bad, next_base) {
        report.offsets_lost += next.saturating_sub(expected);
        expected = expected.max(next);
    }
    let unclean_active = is_last && durable_below != u64::MAX;
    verify_indexes(
        storage,
        paths,
        base,
        valid_end,
        &batches,
        max_ts,
        is_last,
        unclean_active,
        &bad,
        report,
    )?;
    Ok(Some(expected))
}

/// The bad ranges of a segment: byte ranges, and the offset ranges they lost.
#[derive(Default)]
struct Bad {
    bytes: Vec<(u64, u64)>,
    offsets: Vec<(u64, u64)>,
}

impl Bad {
    fn holds_position(&self, pos: u64) -> bool {
        self.bytes.iter().any(|&(a, b)| (a..b).contains(&pos))
    }

    fn holds_offset(&self, offset: u64) -> bool {
        self.offsets.iter().any(|&(a, b)| (a..b).contains(&offset))
    }
}

/// The position and base offset of the first sound batch after the bad one at `pos` whose
/// offsets do not go back below `expected`: at the end of the bad batch if its header is sound
/// and a sound batch starts there, else the first such batch byte by byte.
fn next_sound_batch(bytes: &Bytes, pos: u64, expected: u64) -> Option<(u64, u64)> {
    let sound_at = |p: usize| {
        Batch::validate(bytes.slice(p..))
            .ok()
            .filter(|b| b.base_offset() >= expected)
            .map(|b| (p as u64, b.base_offset()))
    };
    let pos = pos as usize;
    let by_length = BatchHeader::parse(&bytes[pos..])
        .ok()
        .map(|h| pos + h.length.get() as usize)
        .filter(|&p| p > pos && p < bytes.len());
    if let Some(found) = by_length.and_then(sound_at) {
        return Some(found);
    }
    // Cheap where no batch starts: the header's magic fails before any CRC is computed.
    (pos + 1..bytes.len().saturating_sub(BATCH_HEADER_LEN - 1)).find_map(sound_at)
}

#[expect(
    clippy::too_many_arguments,
    reason = "the segment's files, bounds and the report to fill are all needed; a struct for one call would only rename them"
)]
fn verify_indexes(
    storage: &dyn Storage,
    paths: &SegmentPaths,
    base: u64,
    log_len: u64,
    batches: &[(u64, u64, u64, i64)],
    max_ts: i64,
    is_last: bool,
    unclean_active: bool,
    bad: &Bad,
    report: &mut VerifyReport,
) -> Result<()> {
    // Entries into bad ranges are not judged: let the bounds cover them.
    let end_offset = batches
        .last()
        .map_or(base, |b| b.2 + 1)
        .max(bad.offsets.iter().map(|o| o.1).max().unwrap_or(0));
    let log_len = log_len.max(bad.bytes.iter().map(|b| b.1).max().unwrap_or(0));
    let mut complain = |path: &Path, what: String| {
        if unclean_active {
            report.notes.push(format!(
                "{}: {what} (active segment after a crash; the next open rebuilds it)",
                path.display()
            ));
        } else {
            report.problems.push(Problem {
                path: path.to_path_buf(),
                position: None,
                end: None,
                what,
            });
        }
    };
    match read_file(storage, &paths.index)? {
        None => complain(&paths.index, "missing".into()),
        Some(bytes) => match parse_offsets(&bytes, base, log_len, end_offset) {
            Err(e) => complain(&paths.index, e.to_string()),
            Ok(entries) => {
                for e in entries {
                    let pos = u64::from(e.position.get());
                    let offset = base + u64::from(e.relative_offset.get());
                    if bad.holds_position(pos) {
                        continue; // the bad range is reported already
                    }
                    if !batches.iter().any(|&(p, b, _, _)| p == pos && b == offset) {
                        complain(
                            &paths.index,
                            format!(
                                "entry for offset {offset} points at byte {pos}, where no such batch starts"
                            ),
                        );
                        break;
                    }
                }
            }
        },
    }
    match read_file(storage, &paths.time)? {
        None => complain(&paths.time, "missing".into()),
        Some(bytes) => match parse_times(&bytes, base, end_offset) {
            Err(e) => complain(&paths.time, e.to_string()),
            Ok(entries) => {
                for e in entries {
                    let offset = base + u64::from(e.relative_offset.get());
                    if bad.holds_offset(offset) {
                        continue; // the bad range is reported already
                    }
                    let sound = batches
                        .iter()
                        .any(|&(_, _, last, ts)| last == offset && ts == e.timestamp.get());
                    if !sound {
                        complain(
                            &paths.time,
                            format!(
                                "entry ({}, offset {offset}) does not match the batches",
                                e.timestamp.get()
                            ),
                        );
                        break;
                    }
                }
                let last =
                    <[crate::format::TimeIndexEntry]>::ref_from_bytes(&bytes[FILE_HEADER_LEN..])
                        .ok()
                        .and_then(|e| e.last().copied());
                if !is_last
                    && bad.bytes.is_empty()
                    && !batches.is_empty()
                    && last.is_none_or(|l| l.timestamp.get() != max_ts)
                {
                    complain(
                        &paths.time,
                        format!(
                            "last entry does not hold the segment's largest timestamp {max_ts}"
                        ),
                    );
                }
            }
        },
    }
    Ok(())
}
