//! One segment: a `.log` file of batches after a file header, with its offset and time index.
//!
//! Invariants:
//! - bytes below `visible` are whole, checked-at-write batches; readers never look past it;
//! - the `.log` file is never shrunk below `visible` while a mapping of it may exist
//!   (truncation writes a new file and renames it over this one; sealing trims only
//!   preallocated zeros past the last batch), so no byte handed to a reader lies past the end
//!   of its file;
//! - `next_offset` is one past the last visible record.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use bytes::Bytes;
use zerocopy::IntoBytes;

use super::index::{
    IndexBuilder, IndexState, index_file_bytes, lookup_offset, lookup_time, parse_offsets,
    parse_times, sealed_tail_matches,
};
use crate::error::{Error, IoContext, Result};
use crate::format::{
    Batch, BatchHeader, FILE_HEADER_LEN, FileHeader, FileKind, FormatError, SegmentFile,
    segment_file_name,
};
use crate::storage::{OpenMode, Storage, StorageFile};

/// The three files of a segment.
#[derive(Debug, Clone)]
pub(crate) struct SegmentPaths {
    pub log: PathBuf,
    pub index: PathBuf,
    pub time: PathBuf,
}

impl SegmentPaths {
    pub fn new(dir: &Path, base: u64) -> Self {
        SegmentPaths {
            log: dir.join(segment_file_name(base, SegmentFile::Log)),
            index: dir.join(segment_file_name(base, SegmentFile::OffsetIndex)),
            time: dir.join(segment_file_name(base, SegmentFile::TimeIndex)),
        }
    }
}

impl SegmentPaths {
    /// The three paths.
    pub fn all(&self) -> [&PathBuf; 3] {
        [&self.log, &self.index, &self.time]
    }
}

/// Creates (or empties a leftover of) the three files of an empty segment starting at `base`,
/// each with its header, fsynced. The caller fsyncs the directory. A leftover from a failed
/// roll is never in the segment map, so nothing maps it while it is emptied.
pub(crate) fn create_segment_files(
    storage: &dyn Storage,
    dir: &Path,
    base: u64,
) -> Result<[Arc<dyn StorageFile>; 3]> {
    let paths = SegmentPaths::new(dir, base);
    let create = |path: &Path, kind| -> Result<Arc<dyn StorageFile>> {
        let file = storage
            .open(path, OpenMode::CreateOrOpen)
            .ctx("create", path)?;
        file.set_len(0).ctx("truncate", path)?;
        file.write_and_sync(FileHeader::new(kind, base).as_bytes(), 0)
            .ctx("write and fsync", path)?;
        Ok(file)
    };
    Ok([
        create(&paths.log, FileKind::Segment)?,
        create(&paths.index, FileKind::OffsetIndex)?,
        create(&paths.time, FileKind::TimeIndex)?,
    ])
}

/// Removes the files of `segments` (those that exist) and fsyncs the directory.
pub(crate) fn remove_segment_files<'a>(
    storage: &dyn Storage,
    dir: &Path,
    segments: impl IntoIterator<Item = &'a SegmentPaths>,
) -> Result<()> {
    for paths in segments {
        for path in paths.all() {
            if storage.exists(path) {
                storage.remove(path).ctx("remove", path)?;
            }
        }
    }
    storage.sync_dir(dir).ctx("fsync directory", dir)
}

/// Iterates the batches of a segment's bytes from a position, checking each one (header,
/// length, CRC). Stops after the first bad batch.
pub struct BatchScan {
    bytes: Bytes,
    pos: u64,
    end: u64,
    done: bool,
}

impl BatchScan {
    /// Scans `bytes[pos..end]`.
    pub fn new(bytes: Bytes, pos: u64, end: u64) -> Self {
        let end = end.min(bytes.len() as u64);
        BatchScan {
            bytes,
            pos,
            end,
            done: false,
        }
    }
}

impl Iterator for BatchScan {
    /// The batch's position and the batch, or what is wrong at that position.
    type Item = (u64, Result<Batch, FormatError>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos >= self.end {
            return None;
        }
        let pos = self.pos;
        match Batch::validate(self.bytes.slice(pos as usize..self.end as usize)) {
            Ok(batch) => {
                self.pos += batch.len() as u64;
                Some((pos, Ok(batch)))
            }
            Err(e) => {
                self.done = true;
                Some((pos, Err(e)))
            }
        }
    }
}

/// A segment shared by the writer and readers.
#[derive(Debug)]
pub(crate) struct Segment {
    pub base: u64,
    pub paths: SegmentPaths,
    pub file: Arc<dyn StorageFile>,
    storage: Arc<dyn Storage>,
    visible: AtomicU64,
    next_offset: AtomicU64,
    /// Bytes written (not necessarily durable), at least `visible`: what a read past the
    /// durable end ([`Log::read_file_ranges`] with an upper bound above the end offset) may
    /// serve. Raised by the writer after each write, never lowered (a truncation replaces the
    /// segment).
    ///
    /// [`Log::read_file_ranges`]: super::Log::read_file_ranges
    written: AtomicU64,
    written_next: AtomicU64,
    max_ts: AtomicI64,
    /// The cached mapping. Poisoning: the slot is assigned whole, so a panic cannot leave it
    /// half-updated and its users recover the guard.
    mapping: Mutex<Option<Bytes>>,
    /// How much to map at once (the active segment maps its whole roll size).
    map_hint: u64,
    interval: u64,
    /// The index entries. Poisoning: the active segment's index is appended to only under the
    /// log's writer lock, so a panic there also poisons the writer and fails the log; a sealed
    /// index is assigned whole. Users recover the guard: a half-updated index can only send a
    /// read to a wrong position, and every batch is checked there (header, CRC, offsets follow
    /// on) before it is served, so the worst is an error, never wrong data.
    pub index: RwLock<IndexState>,
    /// For the active segment: how many of its in-memory offset and time index entries are in
    /// its index files (the writer writes them in runs, see `Inner::flush_index`). Changed only
    /// under the writer lock.
    pub index_flushed: [AtomicUsize; 2],
    /// Batches whose CRC a read already checked, as `position << 32 | crc`: a later read of
    /// the same batch checks its header and bounds but not its CRC again (a random read of one
    /// record would otherwise checksum its whole batch). Each holds the batch's skip table,
    /// so that finding one record in it walks a few records, not all before it. Bounded by
    /// [`MAX_VERIFIED`]. Poisoning: a cache of whole entries; users recover the guard (a lost
    /// entry only costs a CRC check).
    verified: RwLock<HashMap<u64, Option<Arc<[u32]>>>>,
}

/// At most this many checked batches are remembered per segment (about 1 MiB); when the set is
/// full it is emptied and batches are checked again on their next read.
const MAX_VERIFIED: usize = 1 << 16;

/// Reads asking for at least this many bytes map the pages of unchecked batches in one call
/// ([`crate::storage::populate`]); shorter reads fault them in as they touch them.
const POPULATE_MIN: usize = 256 << 10;

impl Segment {
    #[expect(
        clippy::too_many_arguments,
        reason = "a segment is made from its storage, place, files and limits, each needed"
    )]
    pub fn new(
        storage: Arc<dyn Storage>,
        dir: &Path,
        base: u64,
        file: Arc<dyn StorageFile>,
        visible: u64,
        next_offset: u64,
        map_hint: u64,
        interval: u64,
        index: IndexState,
    ) -> Self {
        let (max_ts, flushed) = match &index {
            // A segment is made active with its index files holding every entry it has.
            IndexState::Active(b) => (b.max_ts, [b.offsets.len(), b.times.len()]),
            _ => (i64::MIN, [0, 0]),
        };
        Segment {
            base,
            paths: SegmentPaths::new(dir, base),
            file,
            storage,
            visible: AtomicU64::new(visible),
            next_offset: AtomicU64::new(next_offset),
            written: AtomicU64::new(visible),
            written_next: AtomicU64::new(next_offset),
            max_ts: AtomicI64::new(max_ts),
            mapping: Mutex::new(None),
            map_hint,
            interval,
            index: RwLock::new(index),
            index_flushed: flushed.map(AtomicUsize::new),
            verified: RwLock::new(HashMap::new()),
        }
    }

    /// Whether the batch at `pos` with stored CRC `crc` was checked since the open.
    fn is_verified(&self, pos: u64, crc: u32) -> bool {
        self.verified
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&((pos << 32) | u64::from(crc)))
    }

    /// The batch at `pos` of `bytes[..end]`, its CRC checked unless an earlier read checked it.
    fn checked_batch(&self, bytes: &Bytes, pos: u64, end: u64, crc: u32) -> Result<Batch> {
        let key = (pos << 32) | u64::from(crc);
        let slice = bytes.slice(pos as usize..end as usize);
        let seen = self
            .verified
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        if let Some(skips) = seen {
            return Batch::validated_before(slice, crc)
                .map(|b| b.with_skips(skips))
                .map_err(|e| self.corrupt(pos, e));
        }
        let batch = Batch::validate(slice).map_err(|e| self.corrupt(pos, e))?;
        let skips = batch.skip_table();
        let mut verified = self.verified.write().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= MAX_VERIFIED {
            verified.clear();
        }
        verified.insert((pos << 32) | u64::from(batch.stored_crc()), skips.clone());
        Ok(batch.with_skips(skips))
    }

    pub fn visible_len(&self) -> u64 {
        self.visible.load(Ordering::Acquire)
    }

    pub fn next_offset(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }

    /// Makes bytes up to `len` visible (never lowers what readers already see).
    pub fn publish(&self, len: u64, next_offset: u64, max_ts: i64) {
        self.note_written(len, next_offset);
        self.max_ts.fetch_max(max_ts, Ordering::AcqRel);
        self.next_offset.fetch_max(next_offset, Ordering::AcqRel);
        self.visible.fetch_max(len, Ordering::AcqRel);
    }

    /// Records that whole batches up to byte `len` (offsets below `next_offset`) are written,
    /// durable or not, for reads past the durable end.
    pub fn note_written(&self, len: u64, next_offset: u64) {
        // The offset first: a reader that sees the length also sees an offset that covers it.
        self.written_next.fetch_max(next_offset, Ordering::AcqRel);
        self.written.fetch_max(len, Ordering::AcqRel);
    }

    fn corrupt(&self, position: u64, source: FormatError) -> Error {
        Error::Corrupt {
            path: self.paths.log.clone(),
            position,
            source,
        }
    }

    /// The segment's bytes, covering at least `0..need`.
    pub fn bytes(&self, need: u64) -> Result<Bytes> {
        let mut cached = self.mapping.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = cached.as_ref().filter(|b| b.len() as u64 >= need) {
            return Ok(b.clone());
        }
        let len = need.max(self.map_hint);
        let mapping = self.file.map(len).ctx("mmap", &self.paths.log)?;
        if (mapping.bytes.len() as u64) < need {
            let e = FormatError::Truncated {
                what: "segment",
                needed: need,
                available: mapping.bytes.len() as u64,
            };
            return Err(self.corrupt(mapping.bytes.len() as u64, e));
        }
        // A damaged file header means the file is not what its name says: serve nothing from it.
        FileHeader::parse(&mapping.bytes, FileKind::Segment, self.base)
            .map_err(|e| self.corrupt(0, e))?;
        if mapping.live {
            *cached = Some(mapping.bytes.clone());
        }
        Ok(mapping.bytes)
    }

    /// Index entries, loading (and if needed rebuilding) a sealed segment's index first.
    fn index(&self) -> Result<RwLockReadGuard<'_, IndexState>> {
        {
            let state = self.index.read().unwrap_or_else(|e| e.into_inner());
            if !matches!(*state, IndexState::Unloaded) {
                return Ok(state);
            }
        }
        self.load_sealed_index()?;
        Ok(self.index.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn load_sealed_index(&self) -> Result<()> {
        let mut state = self.index.write().unwrap_or_else(|e| e.into_inner());
        if !matches!(*state, IndexState::Unloaded) {
            return Ok(());
        }
        let log_len = self.visible_len();
        let loaded = self.map_index(&self.paths.index).and_then(|offsets| {
            let times = self.map_index(&self.paths.time)?;
            let next = self.next_offset();
            let ok = match (
                parse_offsets(&offsets, self.base, log_len, next),
                parse_times(&times, self.base, next),
            ) {
                (Ok(o), Ok(t)) => {
                    let bytes = self.bytes(log_len)?;
                    sealed_tail_matches(o, t, &bytes, log_len, self.interval)
                }
                _ => false,
            };
            Ok(ok.then_some((offsets, times)))
        });
        let (offsets, times) = match loaded {
            Ok(Some(pair)) => pair,
            Ok(None) | Err(_) => {
                tracing::warn!(segment = %self.paths.log.display(), "index failed its checks; rebuilding it");
                match self.rebuild_index() {
                    Ok(pair) => pair,
                    // A read-only log (or a full disk) cannot write the new files: serve from
                    // an index built in memory; a later writable open writes it.
                    Err(e) => {
                        tracing::warn!(segment = %self.paths.log.display(), error = %e, "could not write the rebuilt index; keeping it in memory");
                        self.index_in_memory()?
                    }
                }
            }
        };
        let max_ts = IndexState::Sealed {
            offsets: offsets.clone(),
            times: times.clone(),
        }
        .times()
        .last()
        .map_or(i64::MIN, |e| e.timestamp.get());
        self.max_ts.fetch_max(max_ts, Ordering::AcqRel);
        *state = IndexState::Sealed { offsets, times };
        Ok(())
    }

    fn map_index(&self, path: &Path) -> Result<Bytes> {
        let file = self
            .storage
            .open(path, OpenMode::Existing)
            .ctx("open", path)?;
        let len = file.len().ctx("stat", path)?;
        Ok(file.map(len).ctx("mmap", path)?.bytes)
    }

    /// The bytes of fresh index files for the whole segment, from a scan, written nowhere.
    fn index_in_memory(&self) -> Result<(Bytes, Bytes)> {
        let mut builder = self.scan_index(self.visible_len())?;
        let offsets =
            index_file_bytes(FileKind::OffsetIndex, self.base, builder.offsets.as_bytes());
        builder.seal();
        let times = index_file_bytes(FileKind::TimeIndex, self.base, builder.times.as_bytes());
        Ok((Bytes::from(offsets), Bytes::from(times)))
    }

    /// Scans the whole segment and writes fresh index files (to a temporary file, fsynced and
    /// renamed over the old one, so that a mapping of the old file stays valid).
    pub fn rebuild_index(&self) -> Result<(Bytes, Bytes)> {
        let builder = self.scan_index(self.visible_len())?;
        let offsets =
            index_file_bytes(FileKind::OffsetIndex, self.base, builder.offsets.as_bytes());
        let mut builder = builder;
        builder.seal();
        let times = index_file_bytes(FileKind::TimeIndex, self.base, builder.times.as_bytes());
        for (path, bytes) in [(&self.paths.index, &offsets), (&self.paths.time, &times)] {
            replace_file(self.storage.as_ref(), path, bytes)?;
        }
        Ok((Bytes::from(offsets), Bytes::from(times)))
    }

    /// The index entries of `[header, end)`, from a full checked scan.
    pub fn scan_index(&self, end: u64) -> Result<IndexBuilder> {
        let bytes = self.bytes(end)?;
        let mut builder = IndexBuilder::new(self.interval);
        let mut expected = self.base;
        for (pos, batch) in BatchScan::new(bytes, FILE_HEADER_LEN as u64, end) {
            let batch = batch.map_err(|e| self.corrupt(pos, e))?;
            if batch.base_offset() != expected {
                return Err(self.corrupt(
                    pos,
                    FormatError::Invalid {
                        what: "batch base offset",
                        value: batch.base_offset(),
                    },
                ));
            }
            builder.observe(
                (expected - self.base) as u32,
                (batch.last_offset() - self.base) as u32,
                pos,
                batch.max_timestamp(),
            );
            expected = batch.last_offset() + 1;
        }
        Ok(builder)
    }

    /// Byte position from which to scan for `offset`: the indexed batch at or before it.
    fn position_for(&self, offset: u64, bytes: &[u8]) -> Result<u64> {
        let rel = u32::try_from(offset - self.base).unwrap_or(u32::MAX);
        let entry = lookup_offset(self.index()?.offsets(), rel);
        let Some(entry) = entry else {
            return Ok(FILE_HEADER_LEN as u64);
        };
        let pos = u64::from(entry.position.get());
        // An entry that does not point at the batch it names means a bad index, not a bad log:
        // fall back to a scan from the start rather than blame the segment.
        let sound = BatchHeader::parse(bytes.get(pos as usize..).unwrap_or(&[])).is_ok_and(|h| {
            h.base_offset.get() == self.base + u64::from(entry.relative_offset.get())
        });
        if sound {
            return Ok(pos);
        }
        tracing::warn!(segment = %self.paths.log.display(), "offset index entry is wrong; scanning");
        Ok(FILE_HEADER_LEN as u64)
    }

    /// Appends to `out` the visible batches that hold offsets at or above `from`, while `taken`
    /// stays within `max_bytes` (at least one batch when `out` is empty). Returns true if it
    /// stopped because the budget ran out: the caller must then not read later segments, or
    /// the result would have a gap.
    pub fn read_into(
        &self,
        from: u64,
        max_bytes: usize,
        taken: &mut usize,
        out: &mut Vec<Batch>,
        mut positions: Option<&mut Vec<u64>>,
        unsynced: bool,
    ) -> Result<bool> {
        let (visible, next) = if unsynced {
            // The length after the offset: the writer raises the offset first.
            let len = self.written.load(Ordering::Acquire);
            (len, self.written_next.load(Ordering::Acquire))
        } else {
            (self.visible_len(), self.next_offset())
        };
        if visible <= FILE_HEADER_LEN as u64 || from >= next {
            return Ok(false);
        }
        let bytes = self.bytes(visible)?;
        let mut pos = self.position_for(from.max(self.base), &bytes)?;
        // A long read of batches not checked yet (a scan after an open) maps their pages in one
        // call instead of a page fault per few pages as their CRCs are checked.
        let mut populated = max_bytes < POPULATE_MIN;
        while pos < visible {
            let slice = &bytes[pos as usize..visible as usize];
            let header = BatchHeader::parse(slice).map_err(|e| self.corrupt(pos, e))?;
            let len = header.length.get() as usize;
            if header.last_offset() >= from {
                if !out.is_empty() && *taken + len > max_bytes {
                    return Ok(true);
                }
                // Offsets must follow on: a batch that does not hold `from`, or that leaves a gap
                // after the previous one, is a misplaced or damaged file, never served.
                let want = out.last().map_or(from, |b| b.last_offset() + 1);
                let base = header.base_offset.get();
                if base > want || (!out.is_empty() && base != want) {
                    let what = "batch base offset (offsets do not follow on)";
                    return Err(self.corrupt(pos, FormatError::Invalid { what, value: base }));
                }
                if !populated && !self.is_verified(pos, header.crc.get()) {
                    populated = true;
                    // `max_bytes` may be `usize::MAX` (no limit): saturate, never wrap.
                    let room = max_bytes.saturating_sub(*taken) as u64;
                    let end = pos.saturating_add(room).min(visible);
                    crate::storage::populate(&bytes[pos as usize..end as usize]);
                }
                let batch = self.checked_batch(&bytes, pos, visible, header.crc.get())?;
                *taken += len;
                out.push(batch);
                if let Some(p) = positions.as_mut() {
                    p.push(pos);
                }
                if *taken >= max_bytes {
                    return Ok(true);
                }
            }
            pos += len as u64;
        }
        Ok(false)
    }

    /// Largest timestamp of the visible batches.
    pub fn max_timestamp(&self) -> Result<i64> {
        drop(self.index()?);
        Ok(self.max_ts.load(Ordering::Acquire))
    }

    /// Offset of the first record with a timestamp at or above `ts`, if this segment has one.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<u64>> {
        if self.max_timestamp()? < ts {
            return Ok(None);
        }
        let start = lookup_time(self.index()?.times(), ts).map_or(self.base, |e| {
            self.base + u64::from(e.relative_offset.get())
        });
        let mut batches = Vec::new();
        let mut from = start;
        loop {
            batches.clear();
            self.read_into(from, 1 << 20, &mut 0, &mut batches, None, false)?;
            if batches.is_empty() {
                return Ok(None);
            }
            for batch in &batches {
                if batch.max_timestamp() < ts {
                    continue;
                }
                for record in batch.records().map_err(|e| self.corrupt(0, e))? {
                    let record = record.map_err(|e| self.corrupt(0, e))?;
                    if record.timestamp >= ts {
                        return Ok(Some(record.offset));
                    }
                }
            }
            from = batches.last().map_or(from, |b| b.last_offset() + 1);
        }
    }
}

/// A sealed segment's file once mapped: serves the mapping and holds no file descriptor
/// (a store of many partitions would otherwise hold one per sealed segment). A sealed
/// segment is never written again (truncation writes a new file), so nothing is lost.
#[derive(Debug)]
pub(crate) struct MappedFile {
    path: PathBuf,
    bytes: Bytes,
    /// Device and inode of the file that was mapped, if the storage has descriptors: a file
    /// opened again by path for `sendfile` is used only if it is this one.
    identity: Option<(u64, u64)>,
}

impl MappedFile {
    /// The segment's file, mapped whole, if the storage maps files live (the real one); else
    /// `None` and the caller keeps the descriptor.
    pub fn of(file: &dyn StorageFile, path: &Path, len: u64) -> Result<Option<MappedFile>> {
        let mapping = file.map(len).ctx("mmap", path)?;
        Ok(
            (mapping.live && mapping.bytes.len() as u64 >= len).then(|| MappedFile {
                path: path.to_path_buf(),
                bytes: mapping.bytes.slice(..len as usize),
                identity: file
                    .send_fd()
                    .and_then(|fd| file_identity(&std::fs::File::from(fd))),
            }),
        )
    }

    fn sealed(&self) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is sealed and mapped: not written again",
                self.path.display()
            ),
        )
    }
}

/// Device and inode of an open file.
fn file_identity(file: &std::fs::File) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    file.metadata().ok().map(|m| (m.dev(), m.ino()))
}

impl StorageFile for MappedFile {
    fn write_at(&self, _buf: &[u8], _pos: u64) -> std::io::Result<()> {
        Err(self.sealed())
    }

    fn read_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<()> {
        let src = usize::try_from(pos)
            .ok()
            .and_then(|p| self.bytes.get(p..)?.get(..buf.len()))
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    /// Nothing to do: the file was fsynced before it was sealed and mapped.
    fn sync(&self) -> std::io::Result<()> {
        Ok(())
    }

    fn len(&self) -> std::io::Result<u64> {
        Ok(self.bytes.len() as u64)
    }

    fn set_len(&self, _len: u64) -> std::io::Result<()> {
        Err(self.sealed())
    }

    fn map(&self, _len: u64) -> std::io::Result<crate::storage::Mapping> {
        Ok(crate::storage::Mapping {
            bytes: self.bytes.clone(),
            live: true,
        })
    }

    /// The sealed segment's descriptor was closed (bounded descriptors): the file is opened
    /// again by path, and used only if it is still the file that was mapped (same device and
    /// inode), not another that truncation or a reset put at the same path.
    fn send_fd(&self) -> Option<std::os::fd::OwnedFd> {
        let identity = self.identity?;
        let file = std::fs::File::open(&self.path).ok()?;
        let same = file_identity(&file) == Some(identity)
            && file
                .metadata()
                .is_ok_and(|m| m.len() >= self.bytes.len() as u64);
        same.then(|| file.into())
    }
}

/// Writes `bytes` to `path` atomically: a temporary file, fsync, rename, fsync of the directory.
pub(crate) fn replace_file(storage: &dyn Storage, path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let file = storage
        .open(&tmp, OpenMode::CreateOrOpen)
        .ctx("create", &tmp)?;
    file.set_len(0).ctx("truncate", &tmp)?;
    file.write_and_sync(bytes, 0).ctx("write and fsync", &tmp)?;
    storage.rename(&tmp, path).ctx("rename", path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    storage.sync_dir(dir).ctx("fsync directory", dir)
}
