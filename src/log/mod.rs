//! One append-only log: segments, indexes, group commit, recovery, retention and truncation.
//!
//! This file holds the log's state (`Inner`, `Writer`) and its read path; the rest is split by
//! role: `writer` (append, roll, seal, preallocation fill, group-commit fsync, close),
//! `truncate`, `retention`, `replica` and `reset` (what a replica needs), `recovery` (open),
//! `readonly` and `verify`.
//!
//! Locks, always taken in this order: `maintenance` (truncation, retention) → `writer` (appends,
//! rolls) → `commit` (durability state) → `segments` / a segment's index. Readers take only the
//! `segments` read lock and a segment's index read lock, briefly; they never wait for a write
//! or an fsync.

mod checkpoint;
mod commit;
mod epochs;
mod fetch;
mod index;
mod prealloc;
mod quarantine;
pub(crate) mod readonly;
mod recovery;
mod replica;
mod reset;
mod retention;
mod segment;
mod truncate;
mod verify;
mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use checkpoint::{Checkpoint, CheckpointFile, Meta};
use commit::{Commit, Syncer};
pub use commit::{FsyncPolicy, GroupCommit, Receipt};
pub use epochs::EpochHistory;
pub use fetch::FileRange;
use index::{IndexBuilder, IndexState};
pub use prealloc::Preallocate;
#[cfg(feature = "test-support")]
pub use prealloc::{AUTO_WINDOW, CHUNK as PREALLOCATE_CHUNK, ZEROS_BELOW};
pub use quarantine::{LossKind, MAX_QUARANTINE_BYTES, MAX_QUARANTINE_FILES, Quarantined};
#[cfg(feature = "test-support")]
pub use quarantine::{
    QUARANTINE_HEADER_LEN, QUARANTINE_MAGIC, QUARANTINE_VERSION, QuarantineHeader,
};
pub use recovery::{RecoveryReport, TornTail};
#[cfg(feature = "test-support")]
pub use segment::BatchScan;
use segment::Segment;
pub use verify::{Problem, VerifyReport, verify_dir};

use crate::error::{Error, IoContext, Result};
use crate::format::{Batch, BatchBuilder, Compression, FILE_HEADER_LEN, MAX_BATCH_BYTES};
use crate::storage::{FsStorage, LockGuard, OpenMode, Storage, StorageFile};

/// Settings of a log, persisted in its `log.meta` when the log is created.
///
/// # Examples
///
/// ```
/// use stratalog::{Compression, Log, LogConfig, LogOptions};
///
/// # fn main() -> stratalog::Result<()> {
/// let tmp = tempfile::tempdir().unwrap();
/// let config = LogConfig { segment_bytes: 64 << 10, compression: Compression::Lz4, ..Default::default() };
/// let log = Log::open(tmp.path(), LogOptions { config, ..Default::default() })?;
/// // A new log takes the settings, and keeps them in its `log.meta`.
/// assert_eq!(log.config().segment_bytes, 64 << 10);
/// // A segment size out of bounds is refused, not clamped.
/// let tiny = LogConfig { segment_bytes: LogConfig::MIN_SEGMENT_BYTES - 1, ..config };
/// assert!(log.set_config(tiny).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll the active segment before it would grow past this many bytes (default 1 GiB).
    pub segment_bytes: u64,
    /// Roll the active segment when its first append since the log was opened is older than
    /// this many milliseconds.
    pub segment_ms: Option<u64>,
    /// Delete the oldest sealed segments while the log is larger than this.
    pub retention_bytes: Option<u64>,
    /// Delete sealed segments whose newest record is older than this many milliseconds.
    pub retention_ms: Option<u64>,
    /// Bytes of log between two entries of the sparse offset index (default 4 KiB).
    pub index_interval_bytes: u32,
    /// Compression of batches appended with [`Log::append_records`].
    pub compression: Compression,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: None,
            retention_bytes: None,
            retention_ms: None,
            index_interval_bytes: 4096,
            compression: Compression::None,
        }
    }
}

impl LogConfig {
    /// Smallest allowed `segment_bytes`.
    pub const MIN_SEGMENT_BYTES: u64 = 1024;
    /// Largest allowed `segment_bytes` (index positions are 32-bit and a batch may overshoot).
    pub const MAX_SEGMENT_BYTES: u64 = (u32::MAX - MAX_BATCH_BYTES) as u64;

    pub(crate) fn check(&self) -> Result<()> {
        if !(Self::MIN_SEGMENT_BYTES..=Self::MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return Err(Error::InvalidArgument(format!(
                "segment_bytes {} is outside {}..={}",
                self.segment_bytes,
                Self::MIN_SEGMENT_BYTES,
                Self::MAX_SEGMENT_BYTES
            )));
        }
        if self.index_interval_bytes == 0 {
            return Err(Error::InvalidArgument(
                "index_interval_bytes must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// How to open a log.
///
/// # Examples
///
/// ```
/// use stratalog::{Error, Log, LogOptions};
///
/// # fn main() -> stratalog::Result<()> {
/// let tmp = tempfile::tempdir().unwrap();
/// let dir = tmp.path().join("events");
/// // `create: false` opens only a log that exists.
/// let missing = Log::open(&dir, LogOptions { create: false, ..Default::default() });
/// assert!(missing.is_err());
/// Log::open(&dir, LogOptions::default())?.close()?;
/// // A read-only open writes nothing and refuses appends.
/// let reader = Log::open(&dir, LogOptions { read_only: true, ..Default::default() })?;
/// assert!(reader.is_read_only());
/// assert!(matches!(reader.append_records(&["x"]), Err(Error::ReadOnly)));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Settings for a log that does not exist yet (an existing log keeps its own).
    pub config: LogConfig,
    /// When appends are made durable.
    pub fsync: FsyncPolicy,
    /// The file system: [`FsStorage`] or, in tests, the simulated storage of the
    /// `test-support` feature.
    pub storage: Arc<dyn Storage>,
    /// Create the log if it does not exist (default true).
    pub create: bool,
    /// Who runs the group-commit fsync (see [`GroupCommit`]).
    pub group_commit: GroupCommit,
    /// Open without changing anything (default false): no directory lock is taken (a writer
    /// may have the log open meanwhile), every file is opened read-only, recovery serves the
    /// valid prefix of a torn tail but does not cut or quarantine it, no index or checkpoint
    /// is written, no thread is started, and appends, truncation, retention and `set_config`
    /// fail with [`Error::ReadOnly`]. [`Log::refresh`] takes in what a writer appended since.
    /// For inspecting a log a producer is writing, a log on a full disk (where a writable
    /// open may fail with [`Error::NoSpace`]) or on a read-only mount. See docs/SAFETY.md.
    pub read_only: bool,
    /// How the active segment's file is extended ahead of the writer (see [`Preallocate`]).
    pub preallocate: Preallocate,
    /// Where a log this open creates starts (default 0): it is created empty at this offset,
    /// its first segment named by it, so that `start_offset() == end_offset() ==
    /// initial_offset` and the first record appended gets this offset. For a replica created
    /// while the leader's log no longer starts at 0. Kept in the log's `log.meta`: an existing
    /// log keeps its own start and ignores this. At most `i64::MAX` (Kafka's offsets are
    /// signed); a higher one is refused with [`Error::InvalidArgument`].
    ///
    /// ```
    /// use stratalog::{Log, LogOptions};
    ///
    /// # fn main() -> stratalog::Result<()> {
    /// let tmp = tempfile::tempdir().unwrap();
    /// let log = Log::open(tmp.path(), LogOptions { initial_offset: 1000, ..Default::default() })?;
    /// assert_eq!((log.start_offset(), log.end_offset()), (1000, 1000));
    /// assert_eq!(log.append_records(&["a"])?.base_offset, 1000);
    /// # Ok(())
    /// # }
    /// ```
    pub initial_offset: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            config: LogConfig::default(),
            fsync: FsyncPolicy::Always,
            storage: FsStorage::shared(),
            create: true,
            group_commit: GroupCommit::default(),
            read_only: false,
            preallocate: Preallocate::default(),
            initial_offset: 0,
        }
    }
}

/// The highest offset a log may start at ([`LogOptions::initial_offset`]):
/// offsets are signed 64-bit numbers in Kafka's protocol, and a start at `i64::MAX` still
/// leaves room for `i64::MAX` records before `u64` arithmetic could overflow.
const MAX_START_OFFSET: u64 = i64::MAX as u64;

/// Refuses a start offset above [`MAX_START_OFFSET`].
fn check_start_offset(offset: u64, what: &str) -> Result<()> {
    if offset > MAX_START_OFFSET {
        return Err(Error::InvalidArgument(format!(
            "{what} {offset} is above the highest start offset {MAX_START_OFFSET} \
             (offsets are signed 64-bit in Kafka's protocol); choose a lower one"
        )));
    }
    Ok(())
}

/// What [`Log::append`] returns.
///
/// # Examples
///
/// ```
/// use stratalog::{Log, LogOptions};
///
/// # fn main() -> stratalog::Result<()> {
/// let tmp = tempfile::tempdir().unwrap();
/// let log = Log::open(tmp.path(), LogOptions::default())?;
/// let first = log.append_records(&["a", "b", "c"])?;
/// assert_eq!((first.base_offset, first.last_offset), (0, 2));
/// first.receipt.wait()?;
/// // The next batch starts where the last one ended.
/// let next = log.append_records(&["d"])?;
/// assert_eq!(next.base_offset, first.last_offset + 1);
/// next.receipt.wait()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Appended {
    /// Offset of the first record of the batch.
    pub base_offset: u64,
    /// Offset of the last record of the batch.
    pub last_offset: u64,
    /// Completes when the batch is acknowledged under the log's fsync policy.
    pub receipt: Receipt,
}

/// A segment just created, with its index files open for appending.
type NewSegment = (Arc<Segment>, Arc<dyn StorageFile>, Arc<dyn StorageFile>);

/// The writer's state, behind the `writer` lock.
struct Writer {
    active: Arc<Segment>,
    index_file: Arc<dyn StorageFile>,
    time_file: Arc<dyn StorageFile>,
    /// Bytes of batches (and the header) in the active `.log` file.
    written: u64,
    /// The active file's known length: past `written` it holds preallocated zeros.
    allocated: u64,
    /// A preallocation request for the active segment is queued or running.
    fill_pending: bool,
    /// `seq` and the count of group-commit fsyncs when [`Preallocate::Auto`] last decided.
    fill_mark: (u64, u64),
    /// Preallocate by writing zeros (else `fallocate`); what `Auto` last decided.
    fill_zeros: bool,
    next_offset: u64,
    /// Bytes written since open (group commit counts in these).
    seq: u64,
    /// Bumped by truncation.
    generation: u64,
    first_append: Option<Instant>,
}

impl Writer {
    /// Where the log stands now, as a checkpoint (valid once everything written is fsynced).
    fn checkpoint(&self, clean: bool) -> Checkpoint {
        Checkpoint {
            clean,
            segment_base: self.active.base,
            position: self.written,
            next_offset: self.next_offset,
            max_ts: Inner::active_max_ts(self),
        }
    }
}

struct Inner {
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    config: Mutex<LogConfig>,
    /// Poisoning: a panic while holding it fails the log (`Inner::lock_or_fail`), like
    /// `checkpoint`, `maintenance` and `sync_gate`.
    writer: Mutex<Writer>,
    /// Poisoning: the map is only assigned whole or filtered with `retain` (under the writer or
    /// maintenance lock), so whatever a panic leaves is a map of real segments of the log; its
    /// users recover the guard, and reads check every batch they serve.
    segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    start_offset: AtomicU64,
    /// One past the last offset readers may see.
    end_offset: AtomicU64,
    /// One past the last offset written, durable or not (at least `end_offset` on a writable
    /// log): how far a read past the durable end may go.
    written_end: AtomicU64,
    epoch: AtomicU64,
    /// Which epoch started where (the `log.epochs` file); changed under the `writer` lock
    /// through `lock_or_fail`. Readers recover a poisoned guard: each change is one `Vec`
    /// operation, which a panic cannot leave half-done.
    epochs: Mutex<EpochHistory>,
    /// The high watermark set by the replication layer, if it manages one (see
    /// [`Log::high_watermark`]).
    high_watermark: AtomicU64,
    hw_managed: AtomicBool,
    /// Readers waiting in [`Log::wait_for_data`], woken when `end_offset` rises.
    data_waiters: AtomicU64,
    data_signal: (Mutex<()>, std::sync::Condvar),
    commit: Arc<Commit>,
    checkpoint: Mutex<CheckpointFile>,
    maintenance: Mutex<()>,
    /// Held around every fsync of a segment file and the recording of its failure: an fsync
    /// that fails may have consumed the kernel's write-back error (the lost pages are marked
    /// clean), so a later fsync of the same file would succeed. With the gate, the failure is
    /// sticky before any other fsync of the log can start, and none that starts after it is
    /// trusted.
    sync_gate: Mutex<()>,
    /// Group-commit fsyncs that succeeded since open.
    group_syncs: AtomicU64,
    closed: AtomicBool,
    read_only: bool,
    preallocate: Preallocate,
    /// This log, for the shared preallocation thread (set right after the log is built).
    this: OnceLock<Weak<dyn prealloc::Filler>>,
    report: RecoveryReport,
    /// The directory lock, released when the log is closed (the shared preallocation thread
    /// may hold this `Inner` a moment longer, but no longer writes once `closed` is set).
    dir_lock: Mutex<Option<Box<dyn LockGuard>>>,
}

/// An append-only log of record batches in one directory.
///
/// `Log` is `Send + Sync`: share it between threads with an `Arc`. Dropping it closes it
/// (cleanly, if it can); call [`Log::close`] to see the error if closing fails.
///
/// # Examples
///
/// ```
/// use stratalog::{Log, LogOptions};
///
/// # fn main() -> stratalog::Result<()> {
/// let tmp = tempfile::tempdir().unwrap();
/// let log = Log::open(tmp.path(), LogOptions::default())?;
/// log.append_records(&["a", "b"])?.receipt.wait()?;
/// assert_eq!((log.start_offset(), log.end_offset()), (0, 2));
/// assert_eq!(log.read_one(1)?.value, &b"b"[..]);
/// log.close()?;
/// // Reopened, it holds what was appended.
/// let log = Log::open(tmp.path(), LogOptions::default())?;
/// assert_eq!(log.record_count(), 2);
/// # Ok(())
/// # }
/// ```
pub struct Log {
    inner: Arc<Inner>,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.inner.dir)
            .field("start_offset", &self.start_offset())
            .field("end_offset", &self.end_offset())
            .finish()
    }
}

/// Milliseconds since the Unix epoch, for record timestamps.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The lock-poisoning policy (docs/SAFETY.md): this recovers the guard, so it is only for
    // state a panic cannot leave half-updated: the config (a `Copy` value assigned whole), the
    // flusher's join handle and the directory lock (slots taken whole), and, in recovery, locks
    // of a log no other thread has seen yet. State a panic can leave half-updated goes through
    // `Inner::lock_or_fail`.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Log {
    /// Opens the log in `dir`, creating it if asked, and recovers it: after a clean close
    /// nothing is scanned; after a crash only what was written after the last fsync checkpoint.
    pub fn open(dir: impl AsRef<Path>, options: LogOptions) -> Result<Log> {
        let inner = Arc::new(recovery::open(dir.as_ref(), options)?);
        let syncer: std::sync::Weak<dyn Syncer> = Arc::downgrade(&inner) as _;
        inner.commit.set_syncer(syncer);
        let filler: Weak<dyn prealloc::Filler> = Arc::downgrade(&inner) as _;
        let _ = inner.this.set(filler);
        if inner.commit.mode() == GroupCommit::External || inner.read_only {
            // A read-only log never fsyncs: no flusher thread.
            // A shared thread does the flusher's work (see `Log::sync_due`).
            return Ok(Log {
                inner,
                flusher: Mutex::new(None),
            });
        }
        let flusher = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("stratalog-flusher".into())
                .spawn(move || {
                    while inner.commit.wait_for_work() {
                        inner.commit.run_flusher_sync(|| inner.sync_now());
                    }
                })
                .map_err(|e| Error::io("spawn flusher thread", dir.as_ref(), e))?
        };
        Ok(Log {
            inner,
            flusher: Mutex::new(Some(flusher)),
        })
    }

    /// Appends a batch; returns its offsets and a receipt that completes when it is acknowledged
    /// under the fsync policy. Many threads may append at once.
    ///
    /// An uncompressed batch is written straight from the builder's buffer behind its header
    /// (one `pwritev`, no copy); a compressed one is compressed into a new buffer first.
    pub fn append(&self, batch: &BatchBuilder) -> Result<Appended> {
        let bad = |e: crate::FormatError| Error::InvalidArgument(e.to_string());
        let epoch = self.leader_epoch();
        if batch.compression() == crate::format::Compression::None {
            return self.inner.append_parts(batch.parts(epoch).map_err(bad)?);
        }
        self.inner.append_encoded(batch.encode(epoch).map_err(bad)?)
    }

    /// Appends `values` as one batch with the log's default compression and the current time.
    pub fn append_records<V: AsRef<[u8]>>(&self, values: &[V]) -> Result<Appended> {
        self.append_values(values.iter().map(AsRef::as_ref))
    }

    /// Appends borrowed values as one batch with the log's default compression and the current
    /// time. The values are framed once, into a buffer this thread reuses from one append to
    /// the next (no allocation once it has grown), and written from it behind their header.
    ///
    /// # Examples
    ///
    /// ```
    /// use stratalog::{Log, LogOptions};
    ///
    /// # fn main() -> stratalog::Result<()> {
    /// let tmp = tempfile::tempdir().unwrap();
    /// let log = Log::open(tmp.path(), LogOptions::default())?;
    /// let (a, b): (&[u8], &[u8]) = (b"first", b"second");
    /// let appended = log.append_values([a, b])?;
    /// assert_eq!((appended.base_offset, appended.last_offset), (0, 1));
    /// appended.receipt.wait()?;
    /// assert_eq!(log.read_one(1)?.value, &b"second"[..]);
    /// // An empty batch is refused, not written.
    /// assert!(log.append_values(std::iter::empty()).is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn append_values<'v>(
        &self,
        values: impl IntoIterator<Item = &'v [u8]>,
    ) -> Result<Appended> {
        thread_local! {
            static BUILDER: std::cell::RefCell<BatchBuilder> = std::cell::RefCell::default();
        }
        let compression = lock(&self.inner.config).compression;
        let fill = |batch: &mut BatchBuilder| -> Result<Appended> {
            batch.clear();
            batch.set_compression(compression);
            let ts = now_ms();
            for v in values {
                batch
                    .push_value(ts, v)
                    .map_err(|e| Error::InvalidArgument(e.to_string()))?;
            }
            self.append(batch)
        };
        BUILDER.with(|cell| match cell.try_borrow_mut() {
            Ok(mut batch) => {
                let appended = fill(&mut batch);
                // Keep the buffer for the next append, unless one huge batch grew it.
                if batch.capacity() > 4 << 20 {
                    *batch = BatchBuilder::default();
                }
                appended
            }
            // Re-entered from this thread (a waker appending, say): a buffer of its own.
            Err(_) => fill(&mut BatchBuilder::default()),
        })
    }

    /// Reads batches holding offsets from `from` on, up to about `max_bytes` (at least one batch
    /// if any is there). The batches point into the mapped segment files (no copy) and were
    /// checked (CRC) before they are returned. Reading at [`Log::end_offset`] returns nothing.
    pub fn read(&self, from: u64, max_bytes: usize) -> Result<Vec<Batch>> {
        self.read_placed(from, max_bytes, None, false)
    }

    /// [`Log::read`], also giving, if `placed` is given, each batch's segment and byte
    /// position in it (for [`Log::read_file_ranges`]).
    fn read_placed(
        &self,
        from: u64,
        max_bytes: usize,
        mut placed: Option<&mut Vec<(Arc<Segment>, u64)>>,
        unsynced: bool,
    ) -> Result<Vec<Batch>> {
        let mut positions = Vec::new();
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let end = if unsynced {
            // A failed log's unsynced bytes may be gone from the page cache already (a failed
            // fsync can mark them clean): serve none of them.
            self.inner.commit.check_failed()?;
            self.written_end()
        } else {
            self.end_offset()
        };
        let start = self.start_offset();
        if from < start || from > end {
            return Err(Error::OffsetOutOfRange {
                offset: from,
                start,
                end,
            });
        }
        let mut out = Vec::new();
        let mut taken = 0;
        // One segment at a time: a read costs the same however many segments follow.
        let mut segment = match self.inner.segment_holding(from) {
            Some(s) => Some(s),
            None => {
                // No segment starts at or below `from`. Retention raises the start offset
                // before it drops segments, so if it ran since `start` was loaded, the start
                // read now is above `from`: the offset is gone, which is not corruption.
                let start = self.start_offset();
                if from < start {
                    return Err(Error::OffsetOutOfRange {
                        offset: from,
                        start,
                        end: self.end_offset(),
                    });
                }
                self.inner.first_segment()
            }
        };
        while let Some(s) = segment {
            let wanted = placed.is_some().then_some(&mut positions);
            let full = s.read_into(from, max_bytes, &mut taken, &mut out, wanted, unsynced)?;
            if let Some(placed) = placed.as_mut() {
                placed.extend(positions.drain(..).map(|p| (s.clone(), p)));
            }
            if full {
                break;
            }
            // Everything this read may return is read. A later segment need not follow on from
            // what this one showed when it was looked at: a roll racing this read may have
            // appended to it and started the next meanwhile (reading on, that next segment
            // was taken for corruption by a consumer reading at the end offset).
            if out.last().map_or(from, |b| b.last_offset() + 1) >= end {
                break;
            }
            segment = self.inner.segment_after(s.base);
            if segment
                .as_ref()
                .is_some_and(|next| next.base != s.next_offset())
                && self.start_offset() > s.base
            {
                // Retention removed `s` and the segments after it while this read was in it:
                // what was read is still a valid answer, and the next segment does not follow
                // on (reading it would be taken for corruption).
                break;
            }
        }
        if out.is_empty() {
            let start = self.start_offset();
            if from < start {
                return Err(Error::OffsetOutOfRange {
                    offset: from,
                    start,
                    end: self.end_offset(),
                });
            }
        }
        // Batches are in offset order: those at or past `end` are a suffix.
        let keep = out.partition_point(|b| b.base_offset() < end);
        out.truncate(keep);
        if let Some(placed) = placed {
            placed.truncate(keep);
        }
        debug_assert!(
            out.windows(2)
                .all(|p| p[1].base_offset() == p[0].last_offset() + 1),
            "a read returns contiguous offsets"
        );
        debug_assert!(
            out.first()
                .is_none_or(|b| b.base_offset() <= from && from <= b.last_offset()),
            "a read's first batch holds the offset asked for"
        );
        Ok(out)
    }

    /// The record at `offset`, or [`Error::OffsetOutOfRange`] if the log does not hold it
    /// (below [`Log::start_offset`], deleted by retention; at or past [`Log::end_offset`]).
    /// Reads the one batch that holds it, checked (CRC) like every read.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use stratalog::{Error, Log, LogOptions};
    ///
    /// let log = Log::open(dir.path(), LogOptions::default())?;
    /// log.append_records(&["a", "b", "c"])?.receipt.wait()?;
    /// assert_eq!(&log.read_one(1)?.value[..], b"b");
    /// assert!(matches!(log.read_one(3), Err(Error::OffsetOutOfRange { end: 3, .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_one(&self, offset: u64) -> Result<crate::RecordView> {
        let (start, end) = (self.start_offset(), self.end_offset());
        if offset < start || offset >= end {
            return Err(Error::OffsetOutOfRange { offset, start, end });
        }
        let batches = self.read(offset, 1)?;
        let batch = batches
            .first()
            .filter(|b| b.base_offset() <= offset && offset <= b.last_offset())
            .ok_or(Error::OffsetOutOfRange { offset, start, end })?;
        let corrupt = |source| Error::Corrupt {
            path: self.dir().to_path_buf(),
            position: 0,
            source,
        };
        batch
            .records()
            .map_err(corrupt)?
            .nth((offset - batch.base_offset()) as usize)
            .ok_or(Error::OffsetOutOfRange { offset, start, end })?
            .map_err(corrupt)
    }

    /// How many records the log holds: those at offsets [`Log::start_offset`] to
    /// [`Log::end_offset`] (exclusive), the ones a reader can read now. Every record has its
    /// own offset and the log never has holes (retention and truncation remove whole
    /// segments or suffixes), so this is `end_offset - start_offset`. Records written but
    /// not yet acknowledged under [`FsyncPolicy::Always`] are not counted.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use stratalog::{Log, LogOptions};
    ///
    /// let log = Log::open(dir.path(), LogOptions::default())?;
    /// log.append_records(&["a", "b"])?.receipt.wait()?;
    /// log.append_records(&["c"])?.receipt.wait()?;
    /// assert_eq!(log.record_count(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn record_count(&self) -> u64 {
        // The start first: both only grow, so the count is never negative.
        let start = self.start_offset();
        self.end_offset().saturating_sub(start)
    }

    /// For a log opened read-only ([`LogOptions::read_only`]): takes in what a writer (another
    /// process, or another `Log` in this one) appended since the open or the last refresh,
    /// and returns the new [`Log::end_offset`]. Only whole batches that pass their checks
    /// (CRC, offsets following on) are taken; a batch the writer is still writing is taken
    /// by a later call. Follows the writer's segment rolls and retention (the start offset
    /// rises). A truncation by the writer is not followed: reopen the log after one. Cheap
    /// when nothing changed (a `stat` and a directory listing): call it in a loop to tail a
    /// log. On a writable log it does nothing and returns the end offset.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use stratalog::{Log, LogOptions};
    ///
    /// let writer = Log::open(dir.path(), LogOptions::default())?;
    /// writer.append_records(&["a"])?.receipt.wait()?;
    /// // No lock is taken: the writer keeps the log open.
    /// let reader = Log::open(dir.path(), LogOptions { read_only: true, ..Default::default() })?;
    /// assert_eq!(reader.end_offset(), 1);
    /// writer.append_records(&["b", "c"])?.receipt.wait()?;
    /// assert_eq!(reader.refresh()?, 3);
    /// assert_eq!(&reader.read_one(2)?.value[..], b"c");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn refresh(&self) -> Result<u64> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if self.inner.read_only {
            self.inner.refresh()?;
        }
        Ok(self.end_offset())
    }

    /// True if the log was opened read-only ([`LogOptions::read_only`]).
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    /// Offset of the first record whose timestamp is at or above `ts`, if any.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<u64>> {
        for segment in self.inner.segments_from(self.start_offset()) {
            if let Some(offset) = segment.offset_for_timestamp(ts)? {
                return Ok(Some(offset));
            }
        }
        Ok(None)
    }

    /// Reads from the first record whose timestamp is at or above `ts` (see [`Log::read`]).
    pub fn read_from_timestamp(&self, ts: i64, max_bytes: usize) -> Result<Vec<Batch>> {
        match self.offset_for_timestamp(ts)? {
            Some(offset) => self.read(offset, max_bytes),
            None => Ok(Vec::new()),
        }
    }

    /// First offset the log holds.
    pub fn start_offset(&self) -> u64 {
        self.inner.start_offset.load(Ordering::Acquire)
    }

    /// True once the log failed (an fsync or write error): it refuses appends until it is
    /// opened again, and what it wrote but had not made durable may be gone.
    pub fn has_failed(&self) -> bool {
        self.inner.commit.check_failed().is_err()
    }

    /// One past the last offset readers can see: under [`FsyncPolicy::Always`], the last durable
    /// offset; under other policies, the last written one.
    pub fn end_offset(&self) -> u64 {
        self.inner.end_offset.load(Ordering::Acquire)
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The log's settings.
    pub fn config(&self) -> LogConfig {
        *lock(&self.inner.config)
    }

    /// Changes the log's settings (persisted). `segment_bytes` applies from the next roll.
    pub fn set_config(&self, config: LogConfig) -> Result<()> {
        config.check()?;
        if self.inner.read_only {
            return Err(Error::ReadOnly);
        }
        let _m = self
            .inner
            .lock_or_fail(&self.inner.maintenance, "maintenance")?;
        let mut current = lock(&self.inner.config);
        Meta {
            start_offset: self.start_offset(),
            config,
        }
        .write(self.inner.storage.as_ref(), &self.inner.dir)?;
        *current = config;
        Ok(())
    }

    /// What recovery found and did when the log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.report
    }

    /// The quarantine files of the log, oldest first: bytes that recovery cut (torn tails) or
    /// that [`Log::truncate`] removed, kept instead of deleted (see [`Quarantined`]). Files
    /// are bounded ([`MAX_QUARANTINE_FILES`], [`MAX_QUARANTINE_BYTES`]) and removed by
    /// retention once their offsets are below the start offset.
    pub fn quarantine(&self) -> Result<Vec<Quarantined>> {
        quarantine::list(self.inner.storage.as_ref(), &self.inner.dir)
    }

    /// The leader epoch stamped into batches appended from now on.
    pub fn leader_epoch(&self) -> u64 {
        self.inner.epoch.load(Ordering::Acquire)
    }

    /// Starts leader epoch `epoch` at the log's next offset: it is stamped into the batches
    /// appended from now on and recorded durably in the log's epoch history (the `log.epochs` file)
    /// before this returns. The epoch only rises: a lower one is refused with
    /// [`Error::InvalidArgument`]; the current one again changes nothing.
    pub fn set_leader_epoch(&self, epoch: u64) -> Result<()> {
        let w = self.inner.lock_or_fail(&self.inner.writer, "writer")?;
        self.inner.check_writable()?;
        self.inner.start_epoch(epoch, w.next_offset)
    }

    /// With [`GroupCommit::External`]: runs the group-commit fsync if the fsync policy wants
    /// one now, and returns how long the shared thread may wait before calling again (`None`:
    /// until the notifier fires). Harmless, and usually `None`, in the other modes.
    pub fn sync_due(&self) -> Option<std::time::Duration> {
        if self.inner.closed.load(Ordering::Acquire) {
            return None;
        }
        let inner = &self.inner;
        inner.commit.poll_external(|| inner.sync_now())
    }

    /// With [`GroupCommit::External`]: sets the function called when the log may need
    /// [`Log::sync_due`] (first write after everything was durable, a byte threshold crossed, a
    /// receipt polled as a future). It is called with an internal lock held: it must only
    /// record the log and wake the shared thread. Set once; later calls are ignored.
    pub fn set_sync_notifier(&self, notifier: impl Fn() + Send + Sync + 'static) {
        self.inner
            .commit
            .set_notifier(commit::Notifier(Box::new(notifier)));
    }

    /// Makes everything appended so far durable, whatever the fsync policy.
    pub fn flush(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        self.inner.commit.flush()
    }

    /// Removes every record at or above `offset`. `offset` must be a batch boundary at or above
    /// the log start. Everything that remains is durable when this returns.
    pub fn truncate(&self, offset: u64) -> Result<()> {
        self.inner.truncate(offset)
    }

    /// Deletes the oldest sealed segments beyond the retention limits of the log's config.
    /// Returns how many segments were deleted.
    pub fn apply_retention(&self) -> Result<usize> {
        self.inner.apply_retention(now_ms())
    }

    /// Syncs everything and marks the log cleanly closed, so the next open scans nothing, and
    /// releases the directory lock. Takes `&self`, so a log shared in an `Arc` can be closed
    /// by any holder: afterwards appends, reads and flushes fail with [`Error::Closed`], and
    /// further calls return `Ok(())` (the first call reports whether closing succeeded).
    /// Dropping the last handle closes an open log too, but can only log a failure.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use std::sync::Arc;
    /// use stratalog::{Error, Log, LogOptions};
    ///
    /// let log = Arc::new(Log::open(dir.path(), LogOptions::default())?);
    /// let other = log.clone();
    /// log.append_records(&["a"])?.receipt.wait()?;
    /// log.close()?;
    /// assert!(matches!(other.append_records(&["b"]), Err(Error::Closed)));
    /// // The directory is unlocked: it can be opened again while `other` still exists.
    /// let again = Log::open(dir.path(), LogOptions::default())?;
    /// assert_eq!(again.end_offset(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(&self) -> Result<()> {
        self.close_inner()
    }

    fn close_inner(&self) -> Result<()> {
        let result = self.inner.close();
        self.inner.commit.shutdown();
        if let Some(handle) = lock(&self.flusher).take() {
            let _ = handle.join();
        }
        lock(&self.inner.dir_lock).take();
        result
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if let Err(e) = self.close_inner() {
            tracing::warn!(dir = %self.inner.dir.display(), error = %e, "closing the log failed; the next open will recover");
        }
    }
}

impl Inner {
    /// [`Log::refresh`] of a read-only log: takes in the writer's retention, then the batches
    /// appended to the active segment and to the segments it rolled to since.
    fn refresh(&self) -> Result<()> {
        let _m = lock(&self.maintenance);
        let mut w = lock(&self.writer);
        // Retention: the writer raises the start in log.meta before it deletes segments.
        let meta_start = match Meta::read(self.storage.as_ref(), &self.dir)? {
            Some(meta) => {
                *lock(&self.config) = meta.config;
                meta.start_offset
            }
            None => 0,
        };
        let follow_start = |w: &Writer| {
            let start = self.start_offset.load(Ordering::Acquire);
            if meta_start > start && meta_start <= w.active.base {
                self.start_offset.store(meta_start, Ordering::Release);
                let mut segments = self.segments.write().unwrap_or_else(|e| e.into_inner());
                let keep_from = segments
                    .range(..=meta_start)
                    .next_back()
                    .map_or(0, |(b, _)| *b);
                segments.retain(|base, _| *base >= keep_from);
            }
        };
        follow_start(&w);
        loop {
            // List before reading the tail: a segment the writer rolled to exists only after
            // the one before it was sealed, so the tail read below is then complete.
            let later: Option<u64> = self
                .storage
                .list(&self.dir)
                .ctx("list", &self.dir)?
                .iter()
                .filter_map(|n| crate::format::parse_segment_name(n))
                .filter(|&b| b > w.active.base)
                .min();
            self.refresh_active(&mut w)?;
            // The next segment follows on, or retention deleted those in between (they are
            // below the new start).
            let Some(next_base) =
                later.filter(|&b| b == w.next_offset || (b > w.next_offset && b <= meta_start))
            else {
                // Nothing rolled (or the files do not follow on: a truncation; not followed).
                return Ok(());
            };
            let paths = segment::SegmentPaths::new(&self.dir, next_base);
            let file = self
                .storage
                .open(&paths.log, OpenMode::Read)
                .ctx("open", &paths.log)?;
            let mut header = [0u8; FILE_HEADER_LEN];
            if file.read_at(&mut header, 0).is_err()
                || crate::format::FileHeader::parse(
                    &header,
                    crate::format::FileKind::Segment,
                    next_base,
                )
                .is_err()
            {
                // The writer is creating it: a later refresh takes it.
                return Ok(());
            }
            let config = *lock(&self.config);
            let interval = u64::from(config.index_interval_bytes);
            let segment = Arc::new(Segment::new(
                self.storage.clone(),
                &self.dir,
                next_base,
                file,
                FILE_HEADER_LEN as u64,
                next_base,
                config.segment_bytes + u64::from(MAX_BATCH_BYTES),
                interval,
                IndexState::Active(IndexBuilder::new(interval)),
            ));
            // The one before is sealed now: its index files are complete; load them on use.
            *w.active.index.write().unwrap_or_else(|e| e.into_inner()) = IndexState::Unloaded;
            self.segments
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(next_base, segment.clone());
            w.active = segment;
            w.written = FILE_HEADER_LEN as u64;
            w.allocated = w.written;
            w.next_offset = next_base;
            // After a gap left by retention, the end is at least the new segment's base.
            self.end_offset.fetch_max(next_base, Ordering::AcqRel);
            follow_start(&w);
        }
    }

    /// Takes in the whole, sound batches past what a read-only log serves of its active
    /// segment (read with positional reads: see `readonly::read_batches`).
    fn refresh_active(&self, w: &mut Writer) -> Result<()> {
        let active = w.active.clone();
        let len = active.file.len().ctx("stat", &active.paths.log)?;
        if len <= w.written {
            return Ok(());
        }
        let (found, _stopped) =
            readonly::read_batches(active.file.as_ref(), w.written, len, w.next_offset);
        let Some(&(pos, _, last, _, size)) = found.last() else {
            return Ok(());
        };
        let max_ts = {
            let mut index = active.index.write().unwrap_or_else(|e| e.into_inner());
            let IndexState::Active(builder) = &mut *index else {
                unreachable!("the active segment's index is always the in-memory one");
            };
            for &(pos, first, last, max_ts, _) in &found {
                builder.observe(
                    (first - active.base) as u32,
                    (last - active.base) as u32,
                    pos,
                    max_ts,
                );
            }
            builder.max_ts
        };
        w.written = pos + size;
        w.allocated = w.written;
        w.next_offset = last + 1;
        active.publish(w.written, w.next_offset, max_ts);
        self.end_offset.fetch_max(w.next_offset, Ordering::AcqRel);
        Ok(())
    }

    /// The segment whose offsets include `offset` (or the first one, if `offset` is below it).
    /// The segment holding `offset`: the last one that starts at or below it, if any.
    fn segment_holding(&self, offset: u64) -> Option<Arc<Segment>> {
        let segments = self.segments.read().unwrap_or_else(|e| e.into_inner());
        let found = segments.range(..=offset).next_back();
        found.map(|(_, s)| s.clone())
    }

    /// The oldest segment.
    fn first_segment(&self) -> Option<Arc<Segment>> {
        let segments = self.segments.read().unwrap_or_else(|e| e.into_inner());
        segments.values().next().cloned()
    }

    /// The segment after the one starting at `base`.
    fn segment_after(&self, base: u64) -> Option<Arc<Segment>> {
        let segments = self.segments.read().unwrap_or_else(|e| e.into_inner());
        segments.range(base + 1..).next().map(|(_, s)| s.clone())
    }

    fn segments_from(&self, offset: u64) -> Vec<Arc<Segment>> {
        let segments = self.segments.read().unwrap_or_else(|e| e.into_inner());
        let first = segments.range(..=offset).next_back().map_or(0, |(b, _)| *b);
        segments.range(first..).map(|(_, s)| s.clone()).collect()
    }

    fn check_writable(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        self.commit.check_failed()
    }

    /// Fails the log (sticky) with `error` unless it is a full disk, which leaves the log usable.
    fn fail(&self, error: Error) -> Error {
        match error {
            Error::NoSpace { .. } | Error::Failed(_) => error,
            other => Error::Failed(self.commit.fail(other)),
        }
    }

    /// Locks state a panic may leave half-updated: the writer, the checkpoint file, the sync
    /// gate and the maintenance lock (held across multi-step changes of files and memory). If a
    /// thread panicked while holding it, the log is latched as failed ([`Error::Poisoned`]
    /// inside [`Error::Failed`]) and that error is returned: nothing carries on from a
    /// half-updated writer, and reopening the log rebuilds the state from the files.
    fn lock_or_fail<'a, T>(
        &self,
        m: &'a Mutex<T>,
        what: &'static str,
    ) -> Result<MutexGuard<'a, T>> {
        m.lock().map_err(|_| {
            let e = Error::Failed(self.commit.fail(Error::Poisoned { what }));
            tracing::error!(
                what,
                "a thread panicked while holding a log lock; the log is failed until reopened"
            );
            e
        })
    }
}
