//! Read-only checks of a log directory, for `stratalog verify`: every batch of every segment,
//! offsets that follow on, and every index entry. Nothing is changed.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use zerocopy::FromBytes;

use super::checkpoint::{Checkpoint, CheckpointFile, Meta};
use super::index::{parse_offsets, parse_times};
use super::quarantine::Quarantined;
use super::segment::{BatchScan, SegmentPaths};
use crate::error::{IoContext, Result};
use crate::format::parse_segment_name;
use crate::format::{CheckpointSlot, FILE_HEADER_LEN, FileHeader, FileKind};
use crate::storage::{OpenMode, Storage, read_all};

/// Something wrong found by [`verify_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub path: PathBuf,
    /// Byte position in the file, where it applies.
    pub position: Option<u64>,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.position {
            Some(p) => write!(f, "{} at byte {p}: {}", self.path.display(), self.what),
            None => write!(f, "{}: {}", self.path.display(), self.what),
        }
    }
}

/// What [`verify_dir`] found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Segments checked.
    pub segments: usize,
    /// Batches checked.
    pub batches: u64,
    /// Records in those batches.
    pub records: u64,
    /// One past the last offset found.
    pub end_offset: u64,
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
                what: "missing".into(),
            });
            None
        }
        Err(e) => {
            report.problems.push(Problem {
                path: dir.join(super::checkpoint::META_NAME),
                position: None,
                what: e.to_string(),
            });
            None
        }
    };
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
        if let Some(e) = expected.filter(|&e| e != base) {
            report.problems.push(Problem {
                path: paths.log.clone(),
                position: None,
                what: format!("segment starts at offset {base} but the previous one ends at {e}"),
            });
        }
        let end = verify_segment(storage, &paths, base, is_last, durable_below, &mut report)?;
        expected = end;
        report.end_offset = end.unwrap_or(report.end_offset);
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

fn read_checkpoint(storage: &dyn Storage, dir: &Path) -> Result<Option<Checkpoint>> {
    let path = dir.join(CheckpointFile::NAME);
    if !storage.exists(&path) {
        return Ok(None);
    }
    let bytes = read_all(
        storage
            .open(&path, OpenMode::Existing)
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
    let file = storage.open(path, OpenMode::Existing).ctx("open", path)?;
    let len = file.len().ctx("stat", path)?;
    Ok(Some(file.map(len).ctx("mmap", path)?.bytes))
}

/// Checks one segment and its indexes; returns one past its last offset, or `None` if the
/// segment has a problem (then its indexes and the next segment's start are not judged
/// against it, which would only repeat the same fault).
fn verify_segment(
    storage: &dyn Storage,
    paths: &SegmentPaths,
    base: u64,
    is_last: bool,
    durable_below: u64,
    report: &mut VerifyReport,
) -> Result<Option<u64>> {
    let problem = |report: &mut VerifyReport, path: &Path, position: Option<u64>, what: String| {
        report.problems.push(Problem {
            path: path.to_path_buf(),
            position,
            what,
        })
    };
    let Some(bytes) = read_file(storage, &paths.log)? else {
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
        problem(report, &paths.log, Some(0), e.to_string());
        return Ok(None);
    }
    let len = bytes.len() as u64;
    let mut expected = base;
    let mut batches = Vec::new(); // (position, base offset, last offset, running max timestamp)
    let mut max_ts = i64::MIN;
    let mut scan = BatchScan::new(bytes.clone(), FILE_HEADER_LEN as u64, len);
    let mut valid_end = FILE_HEADER_LEN as u64;
    for (pos, batch) in scan.by_ref() {
        let fault = match batch {
            Ok(b) if b.base_offset() == expected => {
                if let Err(e) = b
                    .records()
                    .and_then(|records| records.collect::<Result<Vec<_>, _>>())
                {
                    Some(format!("records of batch {}: {e}", b.base_offset()))
                } else {
                    max_ts = max_ts.max(b.max_timestamp());
                    batches.push((pos, b.base_offset(), b.last_offset(), max_ts));
                    report.batches += 1;
                    report.records += u64::from(b.record_count());
                    expected = b.last_offset() + 1;
                    valid_end = pos + b.len() as u64;
                    None
                }
            }
            Ok(b) => Some(format!(
                "batch base offset {} where {expected} was expected",
                b.base_offset()
            )),
            Err(e) => Some(e.to_string()),
        };
        if let Some(what) = fault {
            let zeros = super::prealloc::trim_zeros(&bytes[pos as usize..]) == 0;
            if is_last && pos >= durable_below && zeros {
                report.notes.push(format!(
                    "{}: {} bytes of preallocated zeros after the last batch, at byte {pos} (the next open trims them)",
                    paths.log.display(),
                    len - pos
                ));
            } else if is_last && pos >= durable_below {
                report.notes.push(format!(
                    "{}: torn tail of {} bytes at byte {pos} after the last fsync ({what}); the next open cuts it",
                    paths.log.display(),
                    len - pos
                ));
            } else {
                problem(report, &paths.log, Some(pos), what);
                return Ok(None);
            }
            break;
        }
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
        report,
    )?;
    Ok(Some(expected))
}

#[allow(clippy::too_many_arguments)]
fn verify_indexes(
    storage: &dyn Storage,
    paths: &SegmentPaths,
    base: u64,
    log_len: u64,
    batches: &[(u64, u64, u64, i64)],
    max_ts: i64,
    is_last: bool,
    unclean_active: bool,
    report: &mut VerifyReport,
) -> Result<()> {
    let end_offset = batches.last().map_or(base, |b| b.2 + 1);
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
