//! Opening a log: lock, settings, segments, and recovery of the tail.
//!
//! After a clean close (a checkpoint slot with `clean = 1` whose position is the active
//! segment's length) nothing is scanned. After a crash, recovery starts at the last fsync
//! checkpoint and scans only what follows it: every batch there is checked (header, CRC,
//! offsets follow on); in the active segment the first bad batch and everything after it is a
//! torn tail and is cut; in a sealed segment a bad batch is corruption and opening fails with
//! an error naming the file and position. The active segment's index keeps its entries below
//! the checkpoint and gets new ones from the scan; an index whose header is bad is rebuilt.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use zerocopy::{FromBytes, IntoBytes};

use super::checkpoint::{Checkpoint, CheckpointFile, Meta};
use super::commit::Commit;
use super::index::{IndexBuilder, IndexState, index_file_bytes};
use super::quarantine::{self, Quarantined};
use super::segment::{BatchScan, Segment, SegmentPaths};
use super::{Inner, LogOptions, Writer};
use crate::error::{Error, IoContext, Result};
use crate::format::parse_segment_name;
use crate::format::{
    FILE_HEADER_LEN, FileHeader, FileKind, FormatError, OffsetIndexEntry, TimeIndexEntry,
};
use crate::storage::{OpenMode, Storage, StorageFile, read_all};

/// A torn tail cut from the active segment by recovery.
///
/// # Examples
///
/// ```
/// use stratalog::{Log, LogOptions, Preallocate};
///
/// # fn main() -> stratalog::Result<()> {
/// let tmp = tempfile::tempdir().unwrap();
/// let log = Log::open(tmp.path(), LogOptions { preallocate: Preallocate::Off, ..Default::default() })?;
/// log.append_records(&["a"])?.receipt.wait()?;
/// std::mem::forget(log); // a crash: never closed
/// // Half a batch after the last one, as a write cut short by the crash leaves it.
/// let segment = tmp.path().join(stratalog::format::segment_file_name(0, stratalog::format::SegmentFile::Log));
/// let mut bytes = std::fs::read(&segment).unwrap();
/// bytes.extend_from_slice(&[0xab; 40]);
/// std::fs::write(&segment, &bytes).unwrap();
/// // A read-only open sees the torn tail (a writable one would cut and quarantine it).
/// let reader = Log::open(tmp.path(), LogOptions { read_only: true, ..Default::default() })?;
/// let torn = &reader.recovery_report().torn;
/// assert_eq!(torn.len(), 1);
/// assert_eq!((torn[0].offset, torn[0].bytes), (1, 40));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file.
    pub path: PathBuf,
    /// Byte position of the cut.
    pub position: u64,
    /// Bytes removed.
    pub bytes: u64,
    /// The first offset that was not recovered (the log's end after recovery).
    pub offset: u64,
    /// Why the bytes at `position` were not a valid batch.
    pub reason: String,
    /// The quarantine file holding the cut bytes (`None` if it could not be written, for
    /// example on a full disk; the error is logged).
    pub quarantine: Option<PathBuf>,
}

/// What recovery found and did when a log was opened.
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
/// log.close()?;
/// // After a clean close, the next open trusts the checkpoint and cuts nothing.
/// let log = Log::open(tmp.path(), LogOptions::default())?;
/// let report = log.recovery_report();
/// assert!(report.clean);
/// assert!(report.torn.is_empty() && report.quarantined.is_empty());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// The log had been closed cleanly: nothing was scanned.
    pub clean: bool,
    /// Bytes of batches read and checked.
    pub scanned_bytes: u64,
    /// Torn tails that were cut.
    pub torn: Vec<TornTail>,
    /// Zeros past the last batch of the active segment: space preallocated ahead of the writer
    /// (see [`crate::Preallocate`]), not data. A writable open trims them.
    pub preallocated_bytes: u64,
    /// Index files that failed their checks and were rebuilt.
    pub rebuilt_indexes: usize,
    /// Bytes cut by this recovery and kept in quarantine files (see [`Log::quarantine`]).
    ///
    /// [`Log::quarantine`]: super::Log::quarantine
    pub quarantined: Vec<Quarantined>,
    /// Time taken to open.
    pub duration: Duration,
}

/// Where the scan of the tail starts.
struct ScanStart {
    segment: u64,
    position: u64,
    next_offset: u64,
    max_ts: i64,
}

pub(super) fn open(dir: &Path, options: LogOptions) -> Result<Inner> {
    let started = Instant::now();
    let read_only = options.read_only;
    // Whether this open created the directory (and made its entry durable in its parent).
    let mut created_dir = false;
    // A read-only open reads through a storage that refuses every change (see `readonly`),
    // and takes no lock: a writer may hold the log open meanwhile.
    let storage: Arc<dyn Storage> = if read_only {
        Arc::new(super::readonly::ReadOnlyStorage(options.storage.clone()))
    } else {
        options.storage.clone()
    };
    if options.create && !read_only {
        created_dir = crate::storage::create_dir_durable(storage.as_ref(), dir)
            .ctx("create directory", dir)?;
    }
    let lock = if read_only {
        None
    } else {
        let lock_path = dir.join(".lock");
        Some(storage.lock(&lock_path).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => Error::Locked {
                path: lock_path.clone(),
            },
            _ => Error::io("lock", &lock_path, e),
        })?)
    };
    let mut meta = match Meta::read(storage.as_ref(), dir)? {
        Some(meta) => meta,
        None if options.create && !read_only => {
            options.config.check()?;
            super::check_start_offset(options.initial_offset, "initial_offset")?;
            if !created_dir {
                // The log is born in a directory someone else made (`mkdir`, or a crash after
                // our own mkdir): its entry must be durable before a record in it is
                // acknowledged, and only an fsync of the parent makes it so.
                let parent = crate::storage::parent_dir(dir);
                storage.sync_dir(parent).ctx("fsync directory", parent)?;
            }
            let meta = Meta {
                start_offset: options.initial_offset,
                config: options.config,
            };
            meta.write(storage.as_ref(), dir)?;
            meta
        }
        None => {
            return Err(Error::InvalidArgument(format!(
                "no log in {}",
                dir.display()
            )));
        }
    };
    // A crash during `Log::reset_to` is finished before any segment is looked at.
    super::reset::finish_at_open(storage.as_ref(), dir, &mut meta, read_only)?;
    let bases = list_segments(storage.as_ref(), dir, meta.start_offset, read_only)?;
    let (checkpoint_file, checkpoint) = if read_only {
        CheckpointFile::open_read_only(storage.as_ref(), dir)?
    } else {
        CheckpointFile::open(storage.as_ref(), dir)?
    };
    let mut report = RecoveryReport::default();
    let mut recovery = Recovery {
        storage: storage.clone(),
        dir,
        interval: u64::from(meta.config.index_interval_bytes),
        report: &mut report,
        read_only,
    };
    let (segments, mut writer) = recovery.segments(&bases, checkpoint, &meta)?;
    writer.fill_zeros = options.preallocate == super::Preallocate::Zeros;
    let mut epochs = super::EpochHistory::load(storage.as_ref(), dir)?;
    // A crash between a truncation (or retention) and the rewrite of the history leaves
    // epochs that start past the log's end (or before its start): cut them as the
    // interrupted operation would have.
    let cut =
        epochs.truncate_end(writer.next_offset + 1) | epochs.truncate_start(meta.start_offset);
    if cut && !read_only {
        epochs.store(storage.as_ref(), dir)?;
    }
    let inner = Inner {
        dir: dir.to_path_buf(),
        storage,
        config: Mutex::new(meta.config),
        start_offset: AtomicU64::new(meta.start_offset),
        end_offset: AtomicU64::new(writer.next_offset),
        written_end: AtomicU64::new(writer.next_offset),
        epoch: AtomicU64::new(epochs.current()),
        epochs: Mutex::new(epochs),
        high_watermark: AtomicU64::new(writer.next_offset),
        hw_managed: AtomicBool::new(false),
        data_waiters: AtomicU64::new(0),
        data_signal: Default::default(),
        commit: Arc::new(Commit::new(options.fsync, options.group_commit)),
        checkpoint: Mutex::new(checkpoint_file),
        maintenance: Mutex::new(()),
        sync_gate: Mutex::new(()),
        group_syncs: AtomicU64::new(0),
        closed: AtomicBool::new(false),
        read_only,
        preallocate: options.preallocate,
        this: std::sync::OnceLock::new(),
        segments: RwLock::new(segments.into_iter().map(|s| (s.base, s)).collect()),
        writer: Mutex::new(writer),
        report: RecoveryReport::default(),
        dir_lock: Mutex::new(lock),
    };
    // From here on a crash must not be taken for a clean close.
    if !read_only {
        let w = super::lock(&inner.writer);
        super::lock(&inner.checkpoint).write(w.checkpoint(false), 0, true, true)?;
    }
    report.duration = started.elapsed();
    if read_only && (!report.torn.is_empty() || report.rebuilt_indexes > 0) {
        // Usually a writer in the middle of an append, not a crash: nothing was changed.
        tracing::debug!(dir = %dir.display(), ?report, "read-only open: serving the valid prefix");
    } else if !report.torn.is_empty() || report.rebuilt_indexes > 0 {
        tracing::warn!(dir = %dir.display(), ?report, "recovered the log after a crash");
    }
    Ok(Inner { report, ..inner })
}

/// Base offsets of the segments, oldest first. Removes temporary files and finishes a
/// retention that a crash interrupted (segments that end at or below the start offset).
fn list_segments(
    storage: &dyn Storage,
    dir: &Path,
    start_offset: u64,
    read_only: bool,
) -> Result<Vec<u64>> {
    let names = storage.list(dir).ctx("list", dir)?;
    let mut changed = false;
    for name in names.iter().filter(|n| n.ends_with(".tmp") && !read_only) {
        storage
            .remove(&dir.join(name))
            .ctx("remove", &dir.join(name))?;
        changed = true;
    }
    let mut bases: Vec<u64> = names.iter().filter_map(|n| parse_segment_name(n)).collect();
    bases.sort_unstable();
    let mut doomed = Vec::new();
    while bases.len() >= 2 && bases[1] <= start_offset {
        doomed.push(SegmentPaths::new(dir, bases.remove(0)));
    }
    if (changed || !doomed.is_empty()) && !read_only {
        super::segment::remove_segment_files(storage, dir, &doomed)?;
    }
    Ok(bases)
}

struct Recovery<'a> {
    storage: Arc<dyn Storage>,
    dir: &'a Path,
    interval: u64,
    report: &'a mut RecoveryReport,
    /// Change nothing: no cut, no rewrite, no fsync (a full disk, a copy being examined).
    read_only: bool,
}

impl Recovery<'_> {
    fn segments(
        &mut self,
        bases: &[u64],
        checkpoint: Option<Checkpoint>,
        meta: &Meta,
    ) -> Result<(Vec<Arc<Segment>>, Writer)> {
        let map_hint = meta.config.segment_bytes + u64::from(crate::format::MAX_BATCH_BYTES);
        if bases.is_empty() {
            if self.read_only {
                return Err(Error::NoSegment {
                    dir: self.dir.to_path_buf(),
                });
            }
            return self.fresh(meta.start_offset, map_hint);
        }
        let (sealed_bases, last) = (&bases[..bases.len() - 1], bases[bases.len() - 1]);
        let mut lens = Vec::with_capacity(bases.len());
        let mut files = Vec::with_capacity(bases.len());
        for &base in bases {
            let path = SegmentPaths::new(self.dir, base).log;
            let file = self
                .storage
                .open(&path, OpenMode::Existing)
                .ctx("open", &path)?;
            lens.push(file.len().ctx("stat", &path)?);
            files.push(file);
        }
        let start = self.scan_start(bases, &lens, checkpoint);
        let clean = checkpoint.is_some_and(|c| {
            c.clean && c.segment_base == last && c.position == lens[bases.len() - 1]
        });
        self.report.clean = clean;
        let mut segments = Vec::with_capacity(bases.len());
        for (i, &base) in sealed_bases.iter().enumerate() {
            let next = bases[i + 1];
            let segment = Arc::new(Segment::new(
                self.storage.clone(),
                self.dir,
                base,
                files[i].clone(),
                lens[i],
                next,
                0,
                self.interval,
                IndexState::Unloaded,
            ));
            if !clean && base >= start.segment {
                let from = if base == start.segment {
                    start.position
                } else {
                    FILE_HEADER_LEN as u64
                };
                let expected = if base == start.segment {
                    start.next_offset
                } else {
                    base
                };
                self.check_sealed(&segment, from, expected, next)?;
            }
            // Keep the mapping, not the descriptor (see `MappedFile`).
            let segment = match super::segment::MappedFile::of(
                files[i].as_ref(),
                &segment.paths.log,
                lens[i],
            )? {
                Some(mapped) => Arc::new(Segment::new(
                    self.storage.clone(),
                    self.dir,
                    base,
                    Arc::new(mapped),
                    lens[i],
                    next,
                    0,
                    self.interval,
                    IndexState::Unloaded,
                )),
                None => segment,
            };
            segments.push(segment);
        }
        let file = files.pop().expect("at least one segment");
        let len = lens.pop().expect("at least one segment");
        drop(files); // the sealed segments' descriptors
        let (active, writer) = self.active(last, file, len, &start, clean, map_hint)?;
        segments.push(active);
        Ok((segments, writer))
    }

    fn fresh(&mut self, base: u64, map_hint: u64) -> Result<(Vec<Arc<Segment>>, Writer)> {
        let files = super::segment::create_segment_files(self.storage.as_ref(), self.dir, base)?;
        self.storage
            .sync_dir(self.dir)
            .ctx("fsync directory", self.dir)?;
        self.report.clean = true;
        let builder = IndexBuilder::new(self.interval);
        let segment = Arc::new(Segment::new(
            self.storage.clone(),
            self.dir,
            base,
            files[0].clone(),
            FILE_HEADER_LEN as u64,
            base,
            map_hint,
            self.interval,
            IndexState::Active(builder),
        ));
        let writer = new_writer(
            segment.clone(),
            files[1].clone(),
            files[2].clone(),
            FILE_HEADER_LEN as u64,
            base,
        );
        Ok((vec![segment], writer))
    }

    /// The checkpoint if it names a segment that exists and a position inside it; otherwise
    /// the start of the last segment (sealed segments were fsynced when they were sealed).
    fn scan_start(&self, bases: &[u64], lens: &[u64], checkpoint: Option<Checkpoint>) -> ScanStart {
        let last = bases[bases.len() - 1];
        let fallback = ScanStart {
            segment: last,
            position: FILE_HEADER_LEN as u64,
            next_offset: last,
            max_ts: i64::MIN,
        };
        let Some(c) = checkpoint else { return fallback };
        let Ok(i) = bases.binary_search(&c.segment_base) else {
            return fallback;
        };
        if c.position < FILE_HEADER_LEN as u64
            || c.position > lens[i]
            || c.next_offset < c.segment_base
        {
            return fallback;
        }
        ScanStart {
            segment: c.segment_base,
            position: c.position,
            next_offset: c.next_offset,
            max_ts: c.max_ts,
        }
    }

    /// Checks the part of a sealed segment that came after the checkpoint. It was fsynced before
    /// the next segment was created, so any bad byte here is corruption, not a torn write.
    fn check_sealed(
        &mut self,
        segment: &Segment,
        from: u64,
        expected: u64,
        next_base: u64,
    ) -> Result<()> {
        let len = segment.visible_len();
        let bytes = segment.bytes(len)?;
        check_header(&bytes, FileKind::Segment, segment)?;
        let mut expected = expected;
        for (pos, batch) in BatchScan::new(bytes, from, len) {
            let corrupt = |source| Error::Corrupt {
                path: segment.paths.log.clone(),
                position: pos,
                source,
            };
            let batch = batch.map_err(corrupt)?;
            if batch.base_offset() != expected {
                return Err(corrupt(FormatError::Invalid {
                    what: "batch base offset",
                    value: batch.base_offset(),
                }));
            }
            self.report.scanned_bytes += batch.len() as u64;
            expected = batch.last_offset() + 1;
        }
        if expected != next_base {
            let source = FormatError::Invalid {
                what: "segment end offset (next segment starts elsewhere)",
                value: expected,
            };
            return Err(Error::Corrupt {
                path: segment.paths.log.clone(),
                position: len,
                source,
            });
        }
        if self.read_only {
            return Ok(());
        }
        segment.file.sync().ctx("fsync", &segment.paths.log)
    }

    fn active(
        &mut self,
        base: u64,
        file: Arc<dyn StorageFile>,
        len: u64,
        start: &ScanStart,
        clean: bool,
        map_hint: u64,
    ) -> Result<(Arc<Segment>, Writer)> {
        let paths = SegmentPaths::new(self.dir, base);
        // A segment object used only to read the file during recovery; dropped before any cut.
        let probe_of = |visible| {
            Arc::new(Segment::new(
                self.storage.clone(),
                self.dir,
                base,
                file.clone(),
                visible,
                base,
                0,
                self.interval,
                IndexState::Unloaded,
            ))
        };
        // A last segment too short for its header was created by a roll that did not finish.
        if len < FILE_HEADER_LEN as u64
            || FileHeader::parse(
                &read_prefix(file.as_ref(), &paths.log)?,
                FileKind::Segment,
                base,
            )
            .is_err()
        {
            if len > FILE_HEADER_LEN as u64 {
                let probe = probe_of(len);
                check_header(&probe.bytes(len)?, FileKind::Segment, &probe)?;
            }
            if self.read_only {
                // Nothing in it was ever acknowledged: serve it as empty, change nothing.
                return self.finish_active(
                    base,
                    file,
                    FILE_HEADER_LEN as u64,
                    base,
                    IndexBuilder::new(self.interval),
                    false,
                    map_hint,
                );
            }
            file.set_len(0).ctx("truncate", &paths.log)?;
            file.write_at(FileHeader::new(FileKind::Segment, base).as_bytes(), 0)
                .ctx("write", &paths.log)?;
            file.sync().ctx("fsync", &paths.log)?;
            return self.finish_active(
                base,
                file,
                FILE_HEADER_LEN as u64,
                base,
                IndexBuilder::new(self.interval),
                true,
                map_hint,
            );
        }
        let (from, next, max_ts) = if start.segment == base {
            (start.position, start.next_offset, start.max_ts)
        } else {
            (FILE_HEADER_LEN as u64, base, i64::MIN)
        };
        let kept = self.kept_index(&paths, base, from, next, max_ts)?;
        let (builder, from, next) = match kept {
            Some(builder) => (builder, from, next),
            None => {
                self.report.rebuilt_indexes += 1;
                (
                    IndexBuilder::new(self.interval),
                    FILE_HEADER_LEN as u64,
                    base,
                )
            }
        };
        if clean && from == len {
            return self.finish_active(base, file, len, next, builder, false, map_hint);
        }
        if self.read_only {
            return self.active_read_only(base, file, len, from, next, builder, map_hint);
        }
        // Scan the tail: before any mapping of this file exists, so cutting it is safe.
        let probe = probe_of(len);
        let bytes = probe.bytes(len)?;
        let mut builder = builder;
        let mut expected = next;
        let mut end = from;
        let mut torn = None;
        for (pos, batch) in BatchScan::new(bytes.clone(), from, len) {
            let batch = match batch {
                Ok(b) if b.base_offset() == expected => b,
                Ok(b) => {
                    torn = Some(format!(
                        "batch base offset {} where {expected} was expected",
                        b.base_offset()
                    ));
                    break;
                }
                Err(e) => {
                    torn = Some(e.to_string());
                    break;
                }
            };
            builder.observe(
                (expected - base) as u32,
                (batch.last_offset() - base) as u32,
                pos,
                batch.max_timestamp(),
            );
            self.report.scanned_bytes += batch.len() as u64;
            expected = batch.last_offset() + 1;
            end = pos + batch.len() as u64;
        }
        // Zeros at the very end are preallocated space (never data: a batch header is not all
        // zero), not a torn write; only what precedes them was cut from a batch.
        let data_end = end + super::prealloc::trim_zeros(&bytes[end as usize..len as usize]) as u64;
        self.report.preallocated_bytes += len - data_end;
        let cut = (end < data_end).then(|| bytes[end as usize..data_end as usize].to_vec());
        drop(bytes);
        drop(probe);
        if let Some(cut) = cut {
            let reason = torn.unwrap_or_else(|| "incomplete batch".into());
            tracing::warn!(segment = %paths.log.display(), position = end, bytes = data_end - end, %reason, "cutting a torn tail");
            // Keep the cut bytes before they go. If that fails (a full disk), the cut still
            // happens (the log must open) and the loss is reported without a file.
            let loss = quarantine::Loss {
                kind: quarantine::LossKind::TornTail,
                first_offset: expected,
                end_offset: quarantine::end_offset_of(&cut, expected),
                segment_base: base,
                position: end,
                cut_bytes: data_end - end,
                reason: &reason,
            };
            let saved = if self.read_only {
                None
            } else {
                match quarantine::save(self.storage.as_ref(), self.dir, &loss, &cut) {
                    Ok(q) => {
                        let path = q.path.clone();
                        self.report.quarantined.push(q);
                        Some(path)
                    }
                    Err(e) => {
                        tracing::error!(segment = %paths.log.display(), error = %e, "could not quarantine a torn tail; its bytes are lost");
                        None
                    }
                }
            };
            self.report.torn.push(TornTail {
                path: paths.log.clone(),
                position: end,
                bytes: data_end - end,
                offset: expected,
                reason,
                quarantine: saved,
            });
            if self.read_only {
                // The torn tail stays in the file, past what is served; a writable open cuts it.
                return self.finish_active(base, file, end, expected, builder, false, map_hint);
            }
        }
        if !self.read_only {
            if len > end {
                file.set_len(end).ctx("truncate", &paths.log)?;
            }
            file.sync().ctx("fsync", &paths.log)?;
        }
        let rewrite = !self.read_only;
        self.finish_active(base, file, end, expected, builder, rewrite, map_hint)
    }

    /// The active segment of a read-only open: its tail scanned with positional reads (a
    /// writer may be appending to it, or trimming its preallocated space, meanwhile), nothing
    /// cut; the valid prefix is served.
    #[expect(
        clippy::too_many_arguments,
        reason = "the same state as `active`, which calls it"
    )]
    fn active_read_only(
        &mut self,
        base: u64,
        file: Arc<dyn StorageFile>,
        len: u64,
        from: u64,
        next: u64,
        mut builder: IndexBuilder,
        map_hint: u64,
    ) -> Result<(Arc<Segment>, Writer)> {
        let (found, stopped) = super::readonly::read_batches(file.as_ref(), from, len, next);
        let (mut end, mut expected) = (from, next);
        for &(pos, first, last, max_ts, size) in &found {
            builder.observe((first - base) as u32, (last - base) as u32, pos, max_ts);
            self.report.scanned_bytes += size;
            end = pos + size;
            expected = last + 1;
        }
        if let Some(reason) = stopped {
            if super::readonly::zeros_to(file.as_ref(), end, len) {
                self.report.preallocated_bytes += len - end;
            } else {
                // Not cut (nothing is changed); a writer may also be in the middle of it.
                self.report.torn.push(TornTail {
                    path: SegmentPaths::new(self.dir, base).log,
                    position: end,
                    bytes: len - end,
                    offset: expected,
                    reason,
                    quarantine: None,
                });
            }
        }
        self.finish_active(base, file, end, expected, builder, false, map_hint)
    }

    /// Writes the active segment's index files from `builder` (if `rewrite`) and makes the
    /// active segment and the writer.
    #[expect(
        clippy::too_many_arguments,
        reason = "the active segment's file, index builder and positions found by recovery, each needed"
    )]
    fn finish_active(
        &mut self,
        base: u64,
        file: Arc<dyn StorageFile>,
        len: u64,
        next: u64,
        builder: IndexBuilder,
        rewrite: bool,
        map_hint: u64,
    ) -> Result<(Arc<Segment>, Writer)> {
        let paths = SegmentPaths::new(self.dir, base);
        let (index_file, time_file): (Arc<dyn StorageFile>, Arc<dyn StorageFile>) = if self
            .read_only
        {
            // Never written: the index of a read-only log lives in memory.
            (
                Arc::new(super::readonly::NoFile(paths.index.clone())),
                Arc::new(super::readonly::NoFile(paths.time.clone())),
            )
        } else {
            let missing = !self.storage.exists(&paths.index) || !self.storage.exists(&paths.time);
            let files = (
                self.storage
                    .open(&paths.index, OpenMode::CreateOrOpen)
                    .ctx("open", &paths.index)?,
                self.storage
                    .open(&paths.time, OpenMode::CreateOrOpen)
                    .ctx("open", &paths.time)?,
            );
            if missing {
                // Recreated index files: their directory entries must be durable like
                // those of a new segment, or the next power loss loses them (and their
                // entries) again.
                self.storage
                    .sync_dir(self.dir)
                    .ctx("fsync directory", self.dir)?;
            }
            files
        };
        if rewrite {
            for (file, path, kind, entries) in [
                (
                    &index_file,
                    &paths.index,
                    FileKind::OffsetIndex,
                    builder.offsets.as_bytes(),
                ),
                (
                    &time_file,
                    &paths.time,
                    FileKind::TimeIndex,
                    builder.times.as_bytes(),
                ),
            ] {
                // The active segment's index files are never mapped, so rewriting them is safe.
                file.set_len(0).ctx("truncate", path)?;
                file.write_at(&index_file_bytes(kind, base, entries), 0)
                    .ctx("write", path)?;
                file.sync().ctx("fsync", path)?;
            }
        }
        let segment = Arc::new(Segment::new(
            self.storage.clone(),
            self.dir,
            base,
            file,
            len,
            next,
            map_hint,
            self.interval,
            IndexState::Active(builder),
        ));
        let writer = new_writer(segment.clone(), index_file, time_file, len, next);
        Ok((segment, writer))
    }

    /// The active segment's index entries that can be trusted: those below the scan start.
    /// `None` if a header is bad (the index is rebuilt from a scan of the whole segment).
    fn kept_index(
        &self,
        paths: &SegmentPaths,
        base: u64,
        below_pos: u64,
        next: u64,
        max_ts: i64,
    ) -> Result<Option<IndexBuilder>> {
        let read = |path: &Path| -> Result<Option<Vec<u8>>> {
            if !self.storage.exists(path) {
                return Ok(None);
            }
            let file = self
                .storage
                .open(path, OpenMode::Existing)
                .ctx("open", path)?;
            Ok(Some(read_all(file.as_ref()).ctx("read", path)?))
        };
        let (Some(offsets), Some(times)) = (read(&paths.index)?, read(&paths.time)?) else {
            return Ok(None);
        };
        if FileHeader::parse(&offsets, FileKind::OffsetIndex, base).is_err()
            || FileHeader::parse(&times, FileKind::TimeIndex, base).is_err()
        {
            return Ok(None);
        }
        let whole =
            |b: &[u8], size: usize| (b.len() - FILE_HEADER_LEN) / size * size + FILE_HEADER_LEN;
        let offsets =
            <[OffsetIndexEntry]>::ref_from_bytes(&offsets[FILE_HEADER_LEN..whole(&offsets, 8)])
                .unwrap_or(&[]);
        let times = <[TimeIndexEntry]>::ref_from_bytes(&times[FILE_HEADER_LEN..whole(&times, 12)])
            .unwrap_or(&[]);
        let rel_limit = next - base;
        let mut kept_offsets: Vec<OffsetIndexEntry> = Vec::new();
        for e in offsets {
            let pos = u64::from(e.position.get());
            let ordered = kept_offsets.last().is_none_or(|p| {
                e.relative_offset.get() > p.relative_offset.get()
                    && e.position.get() > p.position.get()
            });
            if !ordered
                || pos <= FILE_HEADER_LEN as u64
                || pos >= below_pos
                || u64::from(e.relative_offset.get()) >= rel_limit
            {
                break;
            }
            kept_offsets.push(*e);
        }
        let mut kept_times: Vec<TimeIndexEntry> = Vec::new();
        for e in times {
            let ordered = kept_times.last().is_none_or(|p| {
                e.timestamp.get() > p.timestamp.get()
                    && e.relative_offset.get() >= p.relative_offset.get()
            });
            if !ordered
                || u64::from(e.relative_offset.get()) >= rel_limit
                || e.timestamp.get() > max_ts
            {
                break;
            }
            kept_times.push(*e);
        }
        Ok(Some(IndexBuilder::resume(
            self.interval,
            kept_offsets,
            kept_times,
            max_ts,
            rel_limit as u32,
        )))
    }
}

fn new_writer(
    active: Arc<Segment>,
    index_file: Arc<dyn StorageFile>,
    time_file: Arc<dyn StorageFile>,
    written: u64,
    next_offset: u64,
) -> Writer {
    Writer {
        active,
        index_file,
        time_file,
        written,
        allocated: written,
        fill_pending: false,
        fill_mark: (0, 0),
        fill_zeros: false,
        next_offset,
        seq: 0,
        generation: 0,
        first_append: None,
    }
}

fn read_prefix(file: &dyn StorageFile, path: &Path) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; FILE_HEADER_LEN];
    file.read_at(&mut buf, 0).ctx("read", path)?;
    Ok(buf)
}

fn check_header(bytes: &[u8], kind: FileKind, segment: &Segment) -> Result<()> {
    FileHeader::parse(bytes, kind, segment.base)
        .map(|_| ())
        .map_err(|source| Error::Corrupt {
            path: segment.paths.log.clone(),
            position: 0,
            source,
        })
}
