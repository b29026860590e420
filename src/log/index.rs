//! The sparse offset and time indexes of a segment.
//!
//! Both are arrays of fixed-size entries after a file header, read in place with `zerocopy`.
//! The active segment keeps its entries in memory as well (they are appended to the files as
//! they are made); a sealed segment's index files are mapped when first needed and checked
//! before use. One rule decides where entries go, whether the writer or a rebuild makes them
//! (the one exception: a clean close seals the active segment, and if appends continue after
//! the next open, the entry made at the close stays in the middle, still true):
//!
//! - an offset entry for a batch that starts at least `index_interval_bytes` after the last
//!   indexed batch (the first batch of a segment needs none: a lookup with no entry starts at
//!   the first batch);
//! - with it, a time entry if the segment's largest timestamp so far grew since the last one,
//!   naming the batch's last offset: no record up to it has a larger timestamp;
//! - when the segment is sealed, a last time entry (for the segment's last offset) if the
//!   largest timestamp grew since.

use bytes::Bytes;
use zerocopy::{FromBytes, IntoBytes};

use crate::format::{
    FILE_HEADER_LEN, FileHeader, FileKind, FormatError, OffsetIndexEntry, TimeIndexEntry,
};

/// Entries being built for a segment, by the writer or by a scan.
#[derive(Debug, Clone)]
pub(crate) struct IndexBuilder {
    pub offsets: Vec<OffsetIndexEntry>,
    pub times: Vec<TimeIndexEntry>,
    interval: u64,
    last_indexed_pos: u64,
    last_time_ts: i64,
    /// Largest timestamp in the segment so far.
    pub max_ts: i64,
    /// Relative offset of the last record seen.
    last_rel: u32,
}

impl IndexBuilder {
    pub fn new(interval: u64) -> Self {
        IndexBuilder {
            offsets: Vec::new(),
            times: Vec::new(),
            interval: interval.max(1),
            last_indexed_pos: FILE_HEADER_LEN as u64,
            last_time_ts: i64::MIN,
            max_ts: i64::MIN,
            last_rel: 0,
        }
    }

    /// Continues from entries that are already known to be right, for a segment whose next
    /// record gets relative offset `next_rel`.
    pub fn resume(
        interval: u64,
        offsets: Vec<OffsetIndexEntry>,
        times: Vec<TimeIndexEntry>,
        max_ts: i64,
        next_rel: u32,
    ) -> Self {
        let mut b = IndexBuilder::new(interval);
        b.last_rel = next_rel.saturating_sub(1);
        if let Some(last) = offsets.last() {
            b.last_indexed_pos = last.position.get().into();
        }
        if let Some(last) = times.last() {
            b.last_time_ts = last.timestamp.get();
        }
        b.max_ts = max_ts.max(b.last_time_ts);
        b.offsets = offsets;
        b.times = times;
        b
    }

    /// The entries a batch at byte `pos` whose records have relative offsets `rel..=last_rel`
    /// would add, without adding them: the writer writes them to the files first and calls
    /// [`IndexBuilder::apply`] once the batch itself is written.
    pub fn plan(&self, rel: u32, last_rel: u32, pos: u64, batch_max_ts: i64) -> Planned {
        let max_ts = self.max_ts.max(batch_max_ts);
        let indexed = pos >= self.last_indexed_pos + self.interval;
        let offset = indexed.then(|| OffsetIndexEntry {
            relative_offset: rel.into(),
            position: (pos as u32).into(),
        });
        let time = (indexed && max_ts > self.last_time_ts).then(|| TimeIndexEntry {
            timestamp: max_ts.into(),
            relative_offset: last_rel.into(),
        });
        Planned {
            offset,
            time,
            max_ts,
            last_rel,
        }
    }

    /// Adds what [`IndexBuilder::plan`] planned.
    pub fn apply(&mut self, planned: &Planned) {
        debug_assert!(
            self.offsets
                .last()
                .zip(planned.offset)
                .is_none_or(|(last, e)| {
                    e.relative_offset.get() > last.relative_offset.get()
                        && e.position.get() > last.position.get()
                }),
            "offset index entries rise in offset and position"
        );
        debug_assert!(
            self.times
                .last()
                .zip(planned.time)
                .is_none_or(|(last, e)| e.timestamp.get() > last.timestamp.get()),
            "time index entries rise in timestamp"
        );
        self.max_ts = planned.max_ts;
        self.last_rel = planned.last_rel;
        if let Some(e) = planned.offset {
            self.last_indexed_pos = e.position.get().into();
            self.offsets.push(e);
        }
        if let Some(e) = planned.time {
            self.last_time_ts = e.timestamp.get();
            self.times.push(e);
        }
    }

    /// Plans and applies at once (scans, where nothing can fail in between).
    pub fn observe(&mut self, rel: u32, last_rel: u32, pos: u64, batch_max_ts: i64) {
        let planned = self.plan(rel, last_rel, pos, batch_max_ts);
        self.apply(&planned);
    }

    /// The last time entry of a segment being sealed, if one is needed.
    pub fn seal(&mut self) -> Option<TimeIndexEntry> {
        self.time_entry()
    }

    fn time_entry(&mut self) -> Option<TimeIndexEntry> {
        if self.max_ts <= self.last_time_ts {
            return None;
        }
        self.last_time_ts = self.max_ts;
        let entry = TimeIndexEntry {
            timestamp: self.max_ts.into(),
            relative_offset: self.last_rel.into(),
        };
        self.times.push(entry);
        Some(entry)
    }
}

/// The largest entry at or below `rel`.
pub(crate) fn lookup_offset(entries: &[OffsetIndexEntry], rel: u32) -> Option<OffsetIndexEntry> {
    let n = entries.partition_point(|e| e.relative_offset.get() <= rel);
    n.checked_sub(1).map(|i| entries[i])
}

/// The largest entry whose timestamp is below `ts`: every batch up to it is older than `ts`.
pub(crate) fn lookup_time(entries: &[TimeIndexEntry], ts: i64) -> Option<TimeIndexEntry> {
    let n = entries.partition_point(|e| e.timestamp.get() < ts);
    n.checked_sub(1).map(|i| entries[i])
}

/// File bytes for an index: header, then entries.
pub(crate) fn index_file_bytes(kind: FileKind, base: u64, entries: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FILE_HEADER_LEN + entries.len());
    out.extend_from_slice(FileHeader::new(kind, base).as_bytes());
    out.extend_from_slice(entries);
    out
}

/// The entries of an offset index file, checked: header, whole entries, offsets and positions
/// strictly increasing, every position inside `log_len` and every offset below `next_offset`.
pub(crate) fn parse_offsets(
    bytes: &[u8],
    base: u64,
    log_len: u64,
    next_offset: u64,
) -> Result<&[OffsetIndexEntry], FormatError> {
    FileHeader::parse(bytes, FileKind::OffsetIndex, base)?;
    let entries =
        <[OffsetIndexEntry]>::ref_from_bytes(&bytes[FILE_HEADER_LEN..]).map_err(|_| {
            FormatError::Invalid {
                what: "offset index length",
                value: bytes.len() as u64,
            }
        })?;
    let mut prev: Option<&OffsetIndexEntry> = None;
    for e in entries {
        let pos = u64::from(e.position.get());
        let ordered = prev.is_none_or(|p| {
            e.relative_offset.get() > p.relative_offset.get() && e.position.get() > p.position.get()
        });
        if !ordered || pos <= FILE_HEADER_LEN as u64 || pos >= log_len {
            return Err(FormatError::Invalid {
                what: "offset index entry position",
                value: pos,
            });
        }
        check_relative(e.relative_offset.get(), base, next_offset)?;
        prev = Some(e);
    }
    Ok(entries)
}

/// An entry's relative offset must name an offset the segment holds.
fn check_relative(rel: u32, base: u64, next_offset: u64) -> Result<(), FormatError> {
    if base + u64::from(rel) >= next_offset {
        return Err(FormatError::Invalid {
            what: "index entry offset beyond the segment",
            value: base + u64::from(rel),
        });
    }
    Ok(())
}

/// The entries of a time index file, checked: header, whole entries, timestamps strictly
/// increasing, offsets not decreasing and inside the segment (below `next_offset`).
pub(crate) fn parse_times(
    bytes: &[u8],
    base: u64,
    next_offset: u64,
) -> Result<&[TimeIndexEntry], FormatError> {
    FileHeader::parse(bytes, FileKind::TimeIndex, base)?;
    let entries = <[TimeIndexEntry]>::ref_from_bytes(&bytes[FILE_HEADER_LEN..]).map_err(|_| {
        FormatError::Invalid {
            what: "time index length",
            value: bytes.len() as u64,
        }
    })?;
    for e in entries {
        check_relative(e.relative_offset.get(), base, next_offset)?;
    }
    for pair in entries.windows(2) {
        if pair[1].timestamp.get() <= pair[0].timestamp.get()
            || pair[1].relative_offset.get() < pair[0].relative_offset.get()
        {
            return Err(FormatError::Invalid {
                what: "time index order",
                value: pair[1].timestamp.get() as u64,
            });
        }
    }
    Ok(entries)
}

/// The index of a segment as readers see it.
#[derive(Debug)]
pub(crate) enum IndexState {
    /// The active segment: entries in memory (and appended to the files).
    Active(IndexBuilder),
    /// A sealed segment whose files were mapped and checked.
    Sealed { offsets: Bytes, times: Bytes },
    /// A sealed segment whose files were not looked at yet.
    Unloaded,
}

impl IndexState {
    pub fn offsets(&self) -> &[OffsetIndexEntry] {
        match self {
            IndexState::Active(b) => &b.offsets,
            IndexState::Sealed { offsets, .. } => {
                <[OffsetIndexEntry]>::ref_from_bytes(&offsets[FILE_HEADER_LEN..]).unwrap_or(&[])
            }
            IndexState::Unloaded => &[],
        }
    }

    pub fn times(&self) -> &[TimeIndexEntry] {
        match self {
            IndexState::Active(b) => &b.times,
            IndexState::Sealed { times, .. } => {
                <[TimeIndexEntry]>::ref_from_bytes(&times[FILE_HEADER_LEN..]).unwrap_or(&[])
            }
            IndexState::Unloaded => &[],
        }
    }
}

/// Index entries planned for one batch (see [`IndexBuilder::plan`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Planned {
    pub offset: Option<OffsetIndexEntry>,
    pub time: Option<TimeIndexEntry>,
    max_ts: i64,
    last_rel: u32,
}

/// Checks a sealed segment's index against the batches after its last offset entry (at most
/// about one index interval of them, so this is cheap): an index cut short by whole entries
/// passes the structural checks of [`parse_offsets`] and [`parse_times`] but would leave a tail
/// without the entries the rule above gives it, or a largest timestamp the time index does not
/// hold (and time lookups would then skip the segment). `bytes` are the segment's bytes up to
/// `log_len`. False means: rebuild the index.
pub(crate) fn sealed_tail_matches(
    offsets: &[OffsetIndexEntry],
    times: &[TimeIndexEntry],
    bytes: &[u8],
    log_len: u64,
    interval: u64,
) -> bool {
    let last_indexed = offsets
        .last()
        .map_or(FILE_HEADER_LEN as u64, |e| u64::from(e.position.get()));
    let mut pos = last_indexed;
    let mut tail_max_ts = i64::MIN;
    while pos < log_len {
        let Ok(header) = crate::format::BatchHeader::parse(&bytes[pos as usize..]) else {
            return false;
        };
        if pos >= last_indexed + interval.max(1) {
            return false; // this batch should have had an offset entry
        }
        tail_max_ts = tail_max_ts.max(header.max_timestamp.get());
        pos += u64::from(header.length.get());
    }
    if pos != log_len {
        return false;
    }
    let last_time = times.last().map_or(i64::MIN, |e| e.timestamp.get());
    tail_max_ts <= last_time
}
