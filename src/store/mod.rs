//! A store: one data directory holding many logs, organised as topics with partitions, plus the
//! consumer offsets of consumer groups.
//!
//! ```text
//! DIR/
//!   .store.lock                  locked while a process has the store open
//!   stratalog.store              the registry: every topic, its settings and partitioner versions
//!   <topic>/<partition>/         one log per partition (created on first use)
//!   __consumer_offsets[.<gen>]/  the consumer offsets log
//!   consumer_offsets.generation  which generation of the offsets log is current (after a compaction)
//! ```
//!
//! Partitions are opened lazily, on first use ([`Store::partition`]), and then stay open until
//! the store is closed, so opening a store reads one registry file whatever the number of
//! partitions. A background thread ([`StoreOptions::retention_interval`]) applies retention to
//! every partition; it never holds a lock an append needs.
//!
//! One process at a time opens a store (the directory is locked), as with a single log.
//!
//! Each topic has an id ([`TopicId`]), new each time a topic is created: a consumer group's
//! commit names the id it was made for, so a topic deleted and created again under the same
//! name starts with no committed offsets (deleting a topic also deletes its offsets).
//! [`verify_store`] checks the store's own files without opening it. Names starting with `__`
//! are the store's own ([`check_log_name`]).
//!
//! Poisoning: see [`Error::StorePoisoned`]; a panic while the store's state was being changed
//! makes every later call fail until the store is opened again.

mod offsets;
mod partitioner;
mod topic;
mod verify;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use offsets::{Committed, OFFSETS_LOG};
use offsets::{Offsets, Stored};
pub use partitioner::{Partitioner, PartitionerKind, jump_hash, key_hash};
use topic::Entry;
pub use topic::{PartitionerVersion, TopicConfig, TopicId, TopicInfo, check_topic_name};
pub use verify::{StoreProblem, StoreVerifyReport, verify_store};

use crate::error::{Error, IoContext, Result};
use crate::log::{GroupCommit, Log, LogOptions, Preallocate, now_ms};
use crate::storage::{FsStorage, LockGuard, Storage};

/// Name of the store's lock file.
pub const STORE_LOCK: &str = ".store.lock";

/// How to open a store.
///
/// # Examples
///
/// ```
/// use stratalog::{Error, Store, StoreOptions};
///
/// # fn main() -> stratalog::Result<()> {
/// let tmp = tempfile::tempdir().unwrap();
/// // `create: false` opens only a store that exists.
/// assert!(Store::open(tmp.path(), StoreOptions { create: false, ..Default::default() }).is_err());
/// // No background retention thread: apply retention when it suits the caller.
/// let options = StoreOptions { retention_interval: None, ..Default::default() };
/// Store::open(tmp.path(), options)?.close()?;
/// // Read-only: inspect without a lock; every change is refused.
/// let reader = Store::open(tmp.path(), StoreOptions { read_only: true, ..Default::default() })?;
/// assert!(reader.is_read_only());
/// assert!(matches!(reader.commit("g", "t", 0, 1, 0), Err(Error::ReadOnly)));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The file system ([`FsStorage`] or, in tests, the simulated storage of the `test-support`
    /// feature).
    pub storage: Arc<dyn Storage>,
    /// Create the store if the directory holds none (default true).
    pub create: bool,
    /// How often the background thread applies retention to every partition (default 60 s);
    /// `None` starts no thread (call [`Store::apply_retention`] yourself).
    pub retention_interval: Option<Duration>,
    /// How partitions preallocate their active segments (default [`Preallocate::Auto`]).
    /// Each busy partition taking small durable appends keeps up to 4 MiB of zeros ahead of
    /// its writer; with very many such partitions, [`Preallocate::Off`] saves that space.
    pub preallocate: Preallocate,
    /// Open for inspection only (default false), while another process may have the store
    /// open for writing: no store lock is taken, no thread is started, nothing is created,
    /// repaired or written, and partitions open read-only ([`LogOptions::read_only`]: they
    /// serve what the writer had published when they were opened; [`Log::refresh`] takes in
    /// what it appended since). Every change (topics, commits, appends) fails with
    /// [`Error::ReadOnly`]. `create`, `retention_interval` and `preallocate` are ignored.
    pub read_only: bool,
    /// At most this many partition logs are kept open; opening one more first closes
    /// (cleanly) the least recently used ones that no one else holds. `None` (the default)
    /// sizes it from the open-file limit ([`crate::limits::default_max_open_partitions`]).
    /// A partition handle kept by the caller ([`Store::partition`]) stays open whatever the
    /// bound: hold handles briefly when a topic has many partitions.
    pub max_open_partitions: Option<usize>,
}

/// The most partitions a topic may have. Each partition is a directory of its own and an
/// entry in every partitioner version of the registry, and adding partitions records the end
/// offset of every existing one; beyond this the registry and directory grow past what one
/// store serves well.
pub const MAX_TOPIC_PARTITIONS: u32 = 10_000;

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            storage: FsStorage::shared(),
            create: true,
            retention_interval: Some(Duration::from_secs(60)),
            preallocate: Preallocate::default(),
            read_only: false,
            max_open_partitions: None,
        }
    }
}

/// A consumer group's position in one partition, with the partition's end for the lag.
///
/// # Examples
///
/// ```
/// use stratalog::{PartitionerKind, Store, StoreOptions, TopicConfig};
///
/// # fn main() -> stratalog::Result<()> {
/// let tmp = tempfile::tempdir().unwrap();
/// let store = Store::open(tmp.path(), StoreOptions::default())?;
/// store.create_topic("orders", 1, TopicConfig::default(), PartitionerKind::Jump)?;
/// let log = store.partition("orders", 0)?;
/// log.append_records(&["a", "b", "c"])?.receipt.wait()?;
/// store.commit("billing", "orders", 0, 1, log.leader_epoch())?;
/// let offsets = store.group_offsets(Some("billing"))?;
/// assert_eq!(offsets.len(), 1);
/// assert_eq!((offsets[0].committed.offset, offsets[0].end_offset), (1, Some(3)));
/// // Two records appended and not yet processed.
/// assert_eq!(offsets[0].lag(), Some(2));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOffset {
    /// The group.
    pub group: String,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// What the group committed.
    pub committed: Committed,
    /// The partition's end offset now (`None` if the topic no longer exists).
    pub end_offset: Option<u64>,
}

impl GroupOffset {
    /// Records not yet processed: end offset minus committed offset.
    pub fn lag(&self) -> Option<u64> {
        self.end_offset
            .map(|end| end.saturating_sub(self.committed.offset))
    }
}

/// Where [`Store::reset_group`] moves a group's position.
///
/// # Examples
///
/// ```
/// use stratalog::store::ResetTo;
/// use stratalog::{PartitionerKind, Store, StoreOptions, TopicConfig};
///
/// # fn main() -> stratalog::Result<()> {
/// assert_eq!("latest".parse(), Ok(ResetTo::Latest));
/// assert_eq!("42".parse(), Ok(ResetTo::Offset(42)));
/// assert_eq!("time:1700000000000".parse(), Ok(ResetTo::Time(1_700_000_000_000)));
/// let tmp = tempfile::tempdir().unwrap();
/// let store = Store::open(tmp.path(), StoreOptions::default())?;
/// store.create_topic("orders", 1, TopicConfig::default(), PartitionerKind::Jump)?;
/// store.partition("orders", 0)?.append_records(&["a", "b"])?.receipt.wait()?;
/// // Skip everything produced so far.
/// let moved = store.reset_group("billing", "orders", None, ResetTo::Latest)?;
/// assert_eq!(moved[0].committed.offset, 2);
/// assert_eq!(store.committed("billing", "orders", 0).map(|c| c.offset), Some(2));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The partition's first offset (everything still held is read again).
    Earliest,
    /// The partition's end (everything produced so far is skipped).
    Latest,
    /// This offset (within the partition's start and end).
    Offset(u64),
    /// The first record whose timestamp (milliseconds since the Unix epoch) is at or above
    /// this one, found with the time index; the end if there is none.
    Time(i64),
}

impl std::str::FromStr for ResetTo {
    type Err = String;

    /// `earliest`, `latest`, `OFFSET` (a number) or `time:MS` (a millisecond timestamp).
    fn from_str(s: &str) -> std::result::Result<ResetTo, String> {
        let bad = || {
            format!(
                "invalid position {s:?}: use earliest, latest, an offset, or time:MS (a timestamp in milliseconds since the Unix epoch)"
            )
        };
        match s {
            "earliest" => Ok(ResetTo::Earliest),
            "latest" => Ok(ResetTo::Latest),
            _ => match s.strip_prefix("time:") {
                Some(ms) => ms.parse().map(ResetTo::Time).map_err(|_| bad()),
                None => s.parse().map(ResetTo::Offset).map_err(|_| bad()),
            },
        }
    }
}

/// What [`Store::apply_retention`] did.
///
/// # Examples
///
/// ```
/// use stratalog::{LogConfig, PartitionerKind, Store, StoreOptions, TopicConfig};
///
/// # fn main() -> stratalog::Result<()> {
/// let tmp = tempfile::tempdir().unwrap();
/// let options = StoreOptions { retention_interval: None, ..Default::default() };
/// let store = Store::open(tmp.path(), options)?;
/// // Small segments, and at most about one of them kept.
/// let log = LogConfig { segment_bytes: 1024, retention_bytes: Some(1024), ..Default::default() };
/// let config = TopicConfig { log, ..Default::default() };
/// store.create_topic("events", 2, config, PartitionerKind::Jump)?;
/// let p0 = store.partition("events", 0)?;
/// for _ in 0..20 {
///     p0.append_records(&[[0u8; 200]])?.receipt.wait()?;
/// }
/// let pass = store.apply_retention();
/// assert_eq!((pass.partitions, pass.errors), (2, 0));
/// assert!(pass.segments_deleted > 0);
/// assert!(p0.start_offset() > 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPass {
    /// Partitions looked at.
    pub partitions: usize,
    /// Segments deleted.
    pub segments_deleted: usize,
    /// Partitions whose retention failed (logged as warnings).
    pub errors: usize,
}

type PartitionKey = (String, u32);

/// What the partitions' notifiers tell the shared flusher thread.
#[derive(Default)]
struct FlushQueue {
    keys: Mutex<HashSet<PartitionKey>>,
    signal: Condvar,
}

/// Counts the partition logs that the store's own threads (the shared flusher, retention) hold
/// for a moment, so that [`Store::delete_topic`] can tell them from handles held by the
/// application (which make it fail with [`Error::InUse`]) and wait for them instead.
#[derive(Default)]
struct Holds {
    count: Mutex<HashMap<PartitionKey, usize>>,
    released: Condvar,
}

impl Holds {
    /// Waits until no hold of the store's own threads is left on any of `keys` (taken out of
    /// the partitions map first, so no new hold can start).
    fn wait_released<'a>(&self, keys: impl Iterator<Item = &'a PartitionKey> + Clone) {
        let mut count = lock(&self.count);
        while keys.clone().any(|k| count.contains_key(k)) {
            count = self.released.wait(count).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A partition's log held by one of the store's own threads, counted in [`Holds`].
struct Held<'a> {
    holds: &'a Holds,
    key: PartitionKey,
    log: Option<Arc<Log>>,
}

impl std::ops::Deref for Held<'_> {
    type Target = Log;

    fn deref(&self) -> &Log {
        self.log.as_ref().expect("set until dropped")
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        // The clone goes first, then the count: a deleter that sees the count at zero can
        // unwrap the log.
        drop(self.log.take());
        let mut count = lock(&self.holds.count);
        if let Some(n) = count.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                count.remove(&self.key);
            }
        }
        drop(count);
        self.holds.released.notify_all();
    }
}

/// The shared flusher never sleeps less than this between two looks at one partition.
const MIN_FLUSH_WAIT: Duration = Duration::from_micros(100);

struct Inner {
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    /// Every topic, including those being deleted. Lock order: `registry` → `partitions` →
    /// `offsets`.
    registry: Mutex<Vec<Entry>>,
    partitions: Mutex<HashMap<PartitionKey, Arc<Log>>>,
    /// The id of every live topic, checked by [`Inner::partition`] under the `partitions` lock
    /// so that a partition is never opened for a topic whose deletion has begun. Lock order:
    /// `partitions` → `live`.
    live: Mutex<HashMap<String, TopicId>>,
    /// Partition logs held for a moment by the store's own threads (see [`Held`]).
    holds: Holds,
    offsets: Mutex<Option<Offsets>>,
    /// Set when the store closes; the retention thread waits on it.
    stop: Mutex<bool>,
    stop_signal: Condvar,
    /// Partitions that may need a group-commit fsync from the shared flusher thread.
    flush: Arc<FlushQueue>,
    preallocate: Preallocate,
    /// Opened with [`StoreOptions::read_only`].
    read_only: bool,
    /// [`StoreOptions::max_open_partitions`], resolved.
    max_open: usize,
    /// When each open partition was last handed out (a tick of `clock`), for closing the least
    /// recently used. Only touched with `partitions` locked.
    used: Mutex<HashMap<PartitionKey, u64>>,
    clock: std::sync::atomic::AtomicU64,
    /// Partitions closed while their log had failed, until they are opened again.
    failed_closed: Mutex<HashSet<PartitionKey>>,
    /// How many partitions were opened again after their log failed.
    reopened_after_failure: std::sync::atomic::AtomicU64,
    /// The store directory's lock (none for a read-only store), released by `close` itself: a thread that still holds
    /// this `Inner` a moment after close must not keep the next open out.
    dir_lock: Mutex<Option<Box<dyn LockGuard>>>,
}

/// Topics, partitions and consumer offsets in one directory. `Send + Sync`: share it with an
/// `Arc`. Dropping it closes it; call [`Store::close`] to see errors.
///
/// # Examples
///
/// ```
/// use stratalog::{PartitionerKind, Store, StoreOptions, TopicConfig};
///
/// # fn main() -> stratalog::Result<()> {
/// let tmp = tempfile::tempdir().unwrap();
/// let store = Store::open(tmp.path(), StoreOptions::default())?;
/// store.create_topic("orders", 3, TopicConfig::default(), PartitionerKind::Jump)?;
/// assert_eq!(store.topic("orders")?.partitions(), 3);
/// // Partitions are only added.
/// store.add_partitions("orders", 4)?;
/// assert!(store.add_partitions("orders", 2).is_err());
/// store.delete_topic("orders")?;
/// assert!(store.topics()?.is_empty());
/// store.close()?;
/// # Ok(())
/// # }
/// ```
pub struct Store {
    inner: Arc<Inner>,
    retention: Mutex<Option<JoinHandle<()>>>,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

/// Locks one of the mutexes that only signal (the stop flag, the flush queue, the holds of the
/// store's own threads). Every change made under them is a single step that leaves them
/// consistent, so a panic elsewhere while one was held is ignored.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Locks one of the store's state mutexes (the topic registry and live topics, the open
/// partitions, the consumer offsets). The poisoning policy: a thread that panicked while it
/// held one may have left the state half-changed (a registry written but not installed, an
/// offsets state ahead of its log), so every later use fails with [`Error::StorePoisoned`]
/// and the store must be closed and opened again, which rebuilds the state from the files.
/// This matches the log, which latches itself failed when its writer is poisoned. Only
/// closing the store goes on through a poisoned lock: it flushes and closes each log, whose
/// own state is not behind these locks.
fn state<'a, T>(m: &'a Mutex<T>, what: &'static str) -> Result<MutexGuard<'a, T>> {
    m.lock().map_err(|_| Error::StorePoisoned { what })
}

const REGISTRY: &str = "topic registry";
const PARTITIONS: &str = "open partitions";
const OFFSETS: &str = "consumer offsets";

/// The directory of a partition's log.
pub fn partition_dir(dir: &Path, topic: &str, partition: u32) -> PathBuf {
    dir.join(topic).join(partition.to_string())
}

impl Store {
    /// Opens the store in `dir` (creating it if asked). Reads the registry and the consumer
    /// offsets; opens no partition (they open on first use). Finishes a topic deletion that a
    /// crash interrupted.
    pub fn open(dir: impl AsRef<Path>, options: StoreOptions) -> Result<Store> {
        if options.read_only {
            return Self::open_read_only_with(
                dir.as_ref(),
                options.storage,
                options.max_open_partitions,
            );
        }
        let dir = dir.as_ref().to_path_buf();
        let storage = options.storage.clone();
        let registry = topic::read(storage.as_ref(), &dir)?;
        let registry = match registry {
            Some(r) => r,
            None if options.create => Vec::new(),
            None => {
                return Err(Error::InvalidArgument(format!(
                    "no store in {} (no {} file); create it first",
                    dir.display(),
                    topic::REGISTRY_NAME
                )));
            }
        };
        crate::storage::create_dir_durable(storage.as_ref(), &dir).ctx("create directory", &dir)?;
        let lock_path = dir.join(STORE_LOCK);
        let guard = storage.lock(&lock_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                Error::Locked {
                    path: lock_path.clone(),
                }
            } else {
                Error::io("lock", &lock_path, e)
            }
        })?;
        if !storage.exists(&dir.join(topic::REGISTRY_NAME)) {
            topic::write(storage.as_ref(), &dir, &registry)?;
        }
        let offsets = Offsets::open(&storage, &dir)?;
        let live = registry
            .iter()
            .filter(|e| !e.deleting)
            .map(|e| (e.info.name.clone(), e.info.id))
            .collect();
        let inner = Arc::new(Inner {
            dir: dir.clone(),
            storage,
            registry: Mutex::new(registry),
            partitions: Mutex::new(HashMap::new()),
            live: Mutex::new(live),
            holds: Holds::default(),
            offsets: Mutex::new(Some(offsets)),
            stop: Mutex::new(false),
            stop_signal: Condvar::new(),
            flush: Arc::new(FlushQueue::default()),
            preallocate: options.preallocate,
            read_only: false,
            max_open: max_open(options.max_open_partitions),
            used: Mutex::new(HashMap::new()),
            clock: Default::default(),
            failed_closed: Mutex::new(HashSet::new()),
            reopened_after_failure: Default::default(),
            dir_lock: Mutex::new(Some(guard)),
        });
        let deleting: Vec<TopicInfo> = state(&inner.registry, REGISTRY)?
            .iter()
            .filter(|e| e.deleting)
            .map(|e| e.info.clone())
            .collect();
        for t in deleting {
            tracing::info!(topic = %t.name, "finishing the deletion of a topic");
            inner.finish_delete(&t)?;
        }
        // Housekeeping only: every read already ignores a commit whose topic id is not the
        // topic's, so a failure here (a full disk) does not keep the store from opening.
        if let Err(e) = inner.drop_stale_offsets() {
            tracing::warn!(error = %e, "could not remove the consumer offsets of deleted topics; they are ignored");
        }
        let retention = match options.retention_interval {
            Some(every) => {
                let inner = inner.clone();
                Some(
                    std::thread::Builder::new()
                        .name("stratalog-retention".into())
                        .spawn(move || inner.retention_loop(every))
                        .map_err(|e| Error::io("spawn retention thread", &dir, e))?,
                )
            }
            None => None,
        };
        let flusher = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("stratalog-store-flusher".into())
                .spawn(move || inner.flush_loop())
                .map_err(|e| Error::io("spawn flusher thread", &dir, e))?
        };
        Ok(Store {
            inner,
            retention: Mutex::new(retention),
            flusher: Mutex::new(Some(flusher)),
        })
    }

    /// Opens the store in `dir` for inspection only, beside a writer that may have it open
    /// (see [`StoreOptions::read_only`]). The same as [`Store::open`] with `read_only: true`.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use stratalog::{PartitionerKind, Store, StoreOptions, TopicConfig};
    ///
    /// let writer = Store::open(dir.path(), StoreOptions::default())?;
    /// writer.create_topic("t", 2, TopicConfig::default(), PartitionerKind::default())?;
    /// writer.partition("t", 0)?.append_records(&["a"])?.receipt.wait()?;
    /// let reader = Store::open_read_only(dir.path(), stratalog::storage::FsStorage::shared())?;
    /// assert_eq!(reader.partition("t", 0)?.end_offset(), 1);
    /// // Never produced to: no log yet.
    /// assert!(reader.try_partition("t", 1)?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_read_only(dir: impl AsRef<Path>, storage: Arc<dyn Storage>) -> Result<Store> {
        Self::open_read_only_with(dir.as_ref(), storage, None)
    }

    fn open_read_only_with(
        dir: &Path,
        storage: Arc<dyn Storage>,
        max_open_partitions: Option<usize>,
    ) -> Result<Store> {
        let dir = dir.to_path_buf();
        // Every file opened read-only, every change refused, whatever code path asks.
        let storage: Arc<dyn Storage> = Arc::new(crate::log::readonly::ReadOnlyStorage(storage));
        let Some(registry) = topic::read(storage.as_ref(), &dir)? else {
            return Err(Error::InvalidArgument(format!(
                "no store in {} (no {} file)",
                dir.display(),
                topic::REGISTRY_NAME
            )));
        };
        let offsets = Offsets::open_read_only(&storage, &dir)?;
        let live = registry
            .iter()
            .filter(|e| !e.deleting)
            .map(|e| (e.info.name.clone(), e.info.id))
            .collect();
        let inner = Arc::new(Inner {
            dir,
            storage,
            registry: Mutex::new(registry),
            partitions: Mutex::new(HashMap::new()),
            live: Mutex::new(live),
            holds: Holds::default(),
            offsets: Mutex::new(offsets),
            stop: Mutex::new(false),
            stop_signal: Condvar::new(),
            flush: Arc::new(FlushQueue::default()),
            preallocate: Preallocate::Off,
            read_only: true,
            max_open: max_open(max_open_partitions),
            used: Mutex::new(HashMap::new()),
            clock: Default::default(),
            failed_closed: Mutex::new(HashSet::new()),
            reopened_after_failure: Default::default(),
            dir_lock: Mutex::new(None),
        });
        Ok(Store {
            inner,
            retention: Mutex::new(None),
            flusher: Mutex::new(None),
        })
    }

    /// True if the store was opened read-only ([`StoreOptions::read_only`]).
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    /// Like [`Store::partition`], but `Ok(None)` for a partition of a read-only store that has
    /// no log yet (nothing was ever produced to it, so it holds no record). On a writable
    /// store it is [`Store::partition`] (which creates the log).
    pub fn try_partition(&self, topic: &str, partition: u32) -> Result<Option<Arc<Log>>> {
        if self.inner.read_only {
            self.inner.topic(topic)?;
            let dir = partition_dir(&self.inner.dir, topic, partition);
            if partition < self.inner.topic(topic)?.partitions()
                && !self.inner.storage.exists(&dir.join("log.meta"))
            {
                return Ok(None);
            }
        }
        self.inner.partition(topic, partition).map(Some)
    }

    /// How many partitions were opened again, in this process, after their log had failed (an
    /// fsync or write error) and the store closed it as idle. What such a log had written but
    /// not made durable may be gone; a replication leader starts a new epoch when this count
    /// moves, so that followers that fetched that tail cut it.
    pub fn reopened_after_failure(&self) -> u64 {
        self.inner
            .reopened_after_failure
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// The id of a live topic (a cheap lookup, without copying its [`TopicInfo`]); a topic
    /// being deleted has none.
    pub fn topic_id(&self, name: &str) -> Result<TopicId> {
        state(&self.inner.live, REGISTRY)?
            .get(name)
            .copied()
            .ok_or_else(|| Error::UnknownTopic {
                topic: name.to_string(),
            })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Creates a topic with `partitions` partitions (at least 1), its settings and its
    /// partitioner (version 1). Its partition logs are created on first use.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        config: TopicConfig,
        partitioner: PartitionerKind,
    ) -> Result<TopicInfo> {
        self.create_topic_as(name, partitions, config, partitioner, None)
    }

    /// [`Store::create_topic`] with a given id: a follower creating the topics of its leader
    /// (replicated consumer offsets name topics by id).
    pub(crate) fn create_topic_as(
        &self,
        name: &str,
        partitions: u32,
        config: TopicConfig,
        partitioner: PartitionerKind,
        given: Option<TopicId>,
    ) -> Result<TopicInfo> {
        self.inner.check_writable()?;
        check_topic_name(name)?;
        config.log.check()?;
        check_partitions(partitions)?;
        Partitioner::new(partitioner, partitions)?;
        let mut registry = state(&self.inner.registry, REGISTRY)?;
        if let Some(e) = registry.iter().find(|e| e.info.name == name) {
            if !e.deleting {
                return Err(Error::TopicExists {
                    topic: name.to_string(),
                });
            }
            let t = e.info.clone();
            drop(registry);
            self.inner.finish_delete(&t)?;
            registry = state(&self.inner.registry, REGISTRY)?;
        }
        // A new incarnation: an id no topic of the store has (a crash may have left commits of
        // a deleted one behind; they name its id, never this one).
        let id = loop {
            let id = given.unwrap_or_else(TopicId::generate);
            if registry.iter().all(|e| e.info.id != id) {
                break id;
            }
            if given.is_some() {
                return Err(Error::InvalidArgument(format!(
                    "topic id {id:?} is taken by another topic of the store"
                )));
            }
        };
        let info = TopicInfo {
            name: name.to_string(),
            id,
            config,
            versions: vec![PartitionerVersion {
                version: 1,
                partitions,
                kind: partitioner,
                created_ms: now_ms(),
                start_offsets: Vec::new(),
            }],
        };
        // Partition logs of an earlier topic of this name whose deletion left files behind
        // would be taken for this topic's: there are none, since deletion removes them before
        // it drops the topic from the registry.
        let mut next = registry.clone();
        next.push(Entry {
            info: info.clone(),
            deleting: false,
        });
        topic::write(self.inner.storage.as_ref(), &self.inner.dir, &next)?;
        *registry = next;
        state(&self.inner.live, REGISTRY)?.insert(info.name.clone(), info.id);
        Ok(info)
    }

    /// Every topic, sorted by name.
    pub fn topics(&self) -> Result<Vec<TopicInfo>> {
        let mut topics: Vec<TopicInfo> = state(&self.inner.registry, REGISTRY)?
            .iter()
            .filter(|e| !e.deleting)
            .map(|e| e.info.clone())
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    /// One topic.
    pub fn topic(&self, name: &str) -> Result<TopicInfo> {
        self.inner.topic(name)
    }

    /// Changes a topic's settings (persisted). Segment size, retention and compression apply at
    /// once to open partitions (the segment size from their next roll); the fsync policy applies
    /// to partitions opened from now on (partitions already open keep theirs until the store is
    /// closed).
    pub fn set_topic_config(&self, name: &str, config: TopicConfig) -> Result<TopicInfo> {
        self.inner.check_writable()?;
        config.log.check()?;
        let info = self.inner.update_topic(name, |t| {
            t.config = config;
            Ok(())
        })?;
        let open: Vec<Arc<Log>> = state(&self.inner.partitions, PARTITIONS)?
            .iter()
            .filter(|((t, _), _)| t == name)
            .map(|(_, l)| l.clone())
            .collect();
        for log in open {
            log.set_config(config.log)?;
        }
        Ok(info)
    }

    /// Adds partitions (to `partitions` in total) and makes a new partitioner version that
    /// records, for every existing partition, its end offset at this moment: records at or
    /// above it were produced under the new version. With a consistent partitioner about
    /// `added / partitions` of the keys move, all to the new partitions.
    pub fn add_partitions(&self, name: &str, partitions: u32) -> Result<TopicInfo> {
        self.inner.check_writable()?;
        check_partitions(partitions)?;
        let current = self.topic(name)?.partitions();
        if partitions <= current {
            return Err(Error::InvalidArgument(format!(
                "topic {name:?} has {current} partitions; partitions can only be added (ask for more than {current})"
            )));
        }
        let kind = self.topic(name)?.current().kind;
        self.new_version(name, partitions, kind)
    }

    /// Changes the partitioner of a topic (a new version; no data moves).
    pub fn set_partitioner(&self, name: &str, kind: PartitionerKind) -> Result<TopicInfo> {
        self.inner.check_writable()?;
        let partitions = self.topic(name)?.partitions();
        Partitioner::new(kind, partitions)?;
        self.new_version(name, partitions, kind)
    }

    fn new_version(&self, name: &str, partitions: u32, kind: PartitionerKind) -> Result<TopicInfo> {
        let before = self.topic(name)?;
        let mut start_offsets = Vec::with_capacity(before.partitions() as usize);
        for p in 0..before.partitions() {
            start_offsets.push(self.partition(name, p)?.end_offset());
        }
        self.inner.update_topic(name, |t| {
            if t.partitions() != before.partitions() {
                return Err(Error::InvalidArgument(format!(
                    "topic {name:?} changed meanwhile; retry"
                )));
            }
            let version = t.current().version + 1;
            t.versions.push(PartitionerVersion {
                version,
                partitions,
                kind,
                created_ms: now_ms(),
                start_offsets: start_offsets.clone(),
            });
            Ok(())
        })
    }

    /// The partitioner of the topic's current version.
    pub fn partitioner(&self, name: &str) -> Result<Partitioner> {
        Ok(self.topic(name)?.current().partitioner())
    }

    /// Deletes a topic and every file of its partitions. From the call on, no new lookup of
    /// its partitions succeeds ([`Store::partition`] answers [`Error::UnknownTopic`]), and the
    /// partition logs handed out before are waited for, up to a second; fails with
    /// [`Error::InUse`] (and the topic is whole again) if one is still held elsewhere then.
    /// The deletion is first recorded in the registry, so a crash half way is finished at the
    /// next open.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        self.inner.check_writable()?;
        let info = self.topic(name)?;
        // Close the open partitions, all or none. A clone held by the store's own flusher or
        // retention thread is not a use: it is waited for below. A clone held elsewhere is:
        // no new one is handed out from here on, and those held are given a moment to be let
        // go (a replication leader's fetches hold partitions while they wait for records)
        // before the deletion is refused.
        let deadline = Instant::now() + Duration::from_secs(1);
        {
            let mut live = state(&self.inner.live, REGISTRY)?;
            if live.get(name) != Some(&info.id) {
                return Err(Error::UnknownTopic {
                    topic: name.to_string(),
                });
            }
            live.remove(name);
        }
        let taken: Vec<(PartitionKey, Arc<Log>)> = loop {
            let mut partitions = state(&self.inner.partitions, PARTITIONS)?;
            let keys: Vec<PartitionKey> = partitions
                .keys()
                .filter(|(t, _)| t == name)
                .cloned()
                .collect();
            let busy = {
                let holds = lock(&self.inner.holds.count);
                keys.iter()
                    .find(|k| {
                        let own = holds.get(*k).copied().unwrap_or(0);
                        Arc::strong_count(&partitions[*k]) > 1 + own
                    })
                    .cloned()
            };
            match busy {
                Some(_) if Instant::now() < deadline => {
                    drop(partitions);
                    std::thread::sleep(Duration::from_millis(1));
                }
                Some(k) => {
                    drop(partitions);
                    state(&self.inner.live, REGISTRY)?.insert(info.name.clone(), info.id);
                    return Err(Error::InUse {
                        what: format!("partition {}/{}", k.0, k.1),
                    });
                }
                None => {
                    break keys
                        .into_iter()
                        .filter_map(|k| partitions.remove(&k).map(|log| (k, log)))
                        .collect();
                }
            }
        };
        self.inner.holds.wait_released(taken.iter().map(|(k, _)| k));
        for ((t, p), log) in taken {
            match Arc::try_unwrap(log) {
                Ok(log) => log.close()?,
                Err(_) => {
                    tracing::warn!(topic = %t, partition = p, "a deleted partition was still held; it closes when dropped");
                }
            }
        }
        if let Err(e) = self.inner.update_entry(name, |e| {
            e.deleting = true;
            Ok(())
        }) {
            state(&self.inner.live, REGISTRY)?.insert(info.name.clone(), info.id);
            return Err(e);
        }
        // The groups' offsets go with the topic (a crash before this is made up for at the
        // next open, and a commit names the topic's id, so it could never apply to a topic
        // created later under the name anyway).
        self.inner.with_offsets(|o| {
            let keys: Vec<(offsets::Key, Option<Stored>)> = o
                .state()
                .keys()
                .filter(|(_, t, _)| t == name)
                .map(|k| (k.clone(), None))
                .collect();
            o.commit(&keys)
        })?;
        self.inner.finish_delete(&info)
    }

    /// The log of one partition, opened (and created) on first use. The log stays open until
    /// the store closes. Appending to it directly is how records are produced; the topic's
    /// settings are its settings.
    pub fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Log>> {
        self.inner.partition(topic, partition)
    }

    /// Sets the leader epoch of a partition (the replication layer calls this): batches
    /// appended from now on carry it, and consumer offset commits must be made in it.
    pub fn set_leader_epoch(&self, topic: &str, partition: u32, epoch: u64) -> Result<()> {
        self.partition(topic, partition)?.set_leader_epoch(epoch)
    }

    /// Commits, for consumer group `group`, that every record of `topic/partition` below
    /// `offset` was processed. `leader_epoch` is the partition's leader epoch the consumer
    /// read in ([`Log::leader_epoch`]). Durable when this returns.
    ///
    /// Refused, and nothing is committed, if `offset` is past the end of the partition
    /// ([`Error::CommitBeyondEnd`]) or the epoch is not the partition's current one
    /// ([`Error::StaleEpoch`]).
    pub fn commit(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
        leader_epoch: u64,
    ) -> Result<()> {
        self.commit_many(group, &[(topic, partition, offset, leader_epoch)])
    }

    /// Commits several partitions at once (one durable write, all or none): each entry is
    /// `(topic, partition, offset, leader_epoch)` as in [`Store::commit`].
    pub fn commit_many(&self, group: &str, commits: &[(&str, u32, u64, u64)]) -> Result<()> {
        self.inner.check_writable()?;
        check_group_name(group)?;
        let now = now_ms();
        let mut checked = Vec::with_capacity(commits.len());
        for &(topic, partition, offset, epoch) in commits {
            let id = self.topic(topic)?.id;
            let log = self.partition(topic, partition)?;
            let end = log.end_offset();
            if offset > end {
                return Err(Error::CommitBeyondEnd {
                    group: group.to_string(),
                    topic: topic.to_string(),
                    partition,
                    offset,
                    end,
                });
            }
            let current = log.leader_epoch();
            if epoch != current {
                return Err(Error::StaleEpoch {
                    group: group.to_string(),
                    topic: topic.to_string(),
                    partition,
                    epoch,
                    current,
                });
            }
            checked.push((
                (group.to_string(), topic.to_string(), partition),
                Some(Stored {
                    committed: Committed {
                        offset,
                        leader_epoch: epoch,
                        commit_ms: now,
                    },
                    topic: id,
                }),
            ));
        }
        self.inner.with_offsets(|o| o.commit(&checked))
    }

    /// What `group` committed for `topic/partition`, if anything. A commit made for an earlier
    /// topic of the same name (deleted since) is never returned. `None` also when the store
    /// is closed or its state poisoned: [`Store::try_committed`] tells those apart.
    pub fn committed(&self, group: &str, topic: &str, partition: u32) -> Option<Committed> {
        self.try_committed(group, topic, partition).ok().flatten()
    }

    /// [`Store::committed`], failing if the store is closed ([`Error::Closed`]) or poisoned
    /// ([`Error::StorePoisoned`]) instead of answering `None`. An unknown topic has no commits.
    pub fn try_committed(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<Committed>> {
        let id = match self.topic(topic) {
            Ok(info) => info.id,
            Err(Error::UnknownTopic { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        self.inner.with_offsets(|o| {
            Ok(o.state()
                .get(&(group.to_string(), topic.to_string(), partition))
                .filter(|s| s.topic == id)
                .map(|s| s.committed))
        })
    }

    /// Names of the groups that have committed offsets, sorted.
    pub fn groups(&self) -> Result<Vec<String>> {
        let mut groups: Vec<String> = self
            .inner
            .with_offsets(|o| Ok(o.state().keys().map(|(g, _, _)| g.clone()).collect()))?;
        groups.dedup();
        Ok(groups)
    }

    /// Every committed offset of `group` (or of every group), with the partitions' end
    /// offsets for the lag. Opens the partitions it reports on.
    pub fn group_offsets(&self, group: Option<&str>) -> Result<Vec<GroupOffset>> {
        if self.inner.read_only && lock(&self.inner.offsets).is_none() {
            // A read-only store whose offsets log was never created: no commit yet.
            return Ok(Vec::new());
        }
        let entries: Vec<(offsets::Key, Stored)> = self.inner.with_offsets(|o| {
            Ok(o.state()
                .iter()
                .filter(|((g, _, _), _)| group.is_none_or(|want| g == want))
                .map(|(k, c)| (k.clone(), *c))
                .collect())
        })?;
        let mut out = Vec::with_capacity(entries.len());
        for ((group, topic, partition), stored) in entries {
            let committed = stored.committed;
            match self.topic(&topic) {
                // A commit for an earlier topic of this name: not this topic's.
                Ok(info) if info.id != stored.topic => continue,
                _ => {}
            }
            let end_offset = match self.try_partition(&topic, partition) {
                Ok(Some(log)) => Some(log.end_offset()),
                // A read-only store's partition with no log yet holds nothing.
                Ok(None) => Some(0),
                Err(Error::UnknownTopic { .. } | Error::UnknownPartition { .. }) => None,
                Err(e) => return Err(e),
            };
            out.push(GroupOffset {
                group,
                topic,
                partition,
                committed,
                end_offset,
            });
        }
        Ok(out)
    }

    /// Removes every committed offset of `group` (durably). Returns how many partitions'
    /// offsets were removed (0: the group had none).
    pub fn delete_group(&self, group: &str) -> Result<usize> {
        self.inner.check_writable()?;
        check_group_name(group)?;
        self.inner.with_offsets(|o| {
            let keys: Vec<(offsets::Key, Option<Stored>)> = o
                .state()
                .keys()
                .filter(|(g, _, _)| g == group)
                .map(|k| (k.clone(), None))
                .collect();
            o.commit(&keys)?;
            Ok(keys.len())
        })
    }

    /// Sets the committed offset of `group` on `topic` (one partition, or every partition with
    /// `None`) to the position `to` names, durably and in one write. Each commit is made in the
    /// partition's current leader epoch for the topic's current incarnation. Returns the new
    /// positions. Refused ([`Error::OffsetOutOfRange`]) if an explicit offset is outside a
    /// partition's `start..=end`.
    pub fn reset_group(
        &self,
        group: &str,
        topic: &str,
        partition: Option<u32>,
        to: ResetTo,
    ) -> Result<Vec<GroupOffset>> {
        check_group_name(group)?;
        let info = self.topic(topic)?;
        let partitions: Vec<u32> = match partition {
            Some(p) if p >= info.partitions() => {
                return Err(Error::UnknownPartition {
                    topic: topic.to_string(),
                    partition: p,
                    partitions: info.partitions(),
                });
            }
            Some(p) => vec![p],
            None => (0..info.partitions()).collect(),
        };
        let now = now_ms();
        let mut commits = Vec::with_capacity(partitions.len());
        let mut out = Vec::with_capacity(partitions.len());
        for p in partitions {
            let log = self.partition(topic, p)?;
            let (start, end) = (log.start_offset(), log.end_offset());
            let offset = match to {
                ResetTo::Earliest => start,
                ResetTo::Latest => end,
                ResetTo::Offset(o) if (start..=end).contains(&o) => o,
                ResetTo::Offset(o) => {
                    return Err(Error::OffsetOutOfRange {
                        offset: o,
                        start,
                        end,
                    });
                }
                // No record at or after the time: the group has nothing left to read.
                ResetTo::Time(ts) => log.offset_for_timestamp(ts)?.unwrap_or(end).max(start),
            };
            let committed = Committed {
                offset,
                leader_epoch: log.leader_epoch(),
                commit_ms: now,
            };
            commits.push((
                (group.to_string(), topic.to_string(), p),
                Some(Stored {
                    committed,
                    topic: info.id,
                }),
            ));
            out.push(GroupOffset {
                group: group.to_string(),
                topic: topic.to_string(),
                partition: p,
                committed,
                end_offset: Some(end),
            });
        }
        self.inner.with_offsets(|o| o.commit(&commits))?;
        Ok(out)
    }

    /// Records in the consumer offsets log (grows with every commit until it is compacted).
    pub fn offsets_log_records(&self) -> Result<u64> {
        self.inner.with_offsets(|o| Ok(o.records()))
    }

    /// Compacts the consumer offsets log now (it is also compacted automatically, see
    /// the module docs). Returns the directory of the new log.
    pub fn compact_offsets(&self) -> Result<PathBuf> {
        self.inner.check_writable()?;
        self.inner.with_offsets(|o| {
            o.compact()?;
            Ok(o.log_dir().to_path_buf())
        })
    }

    /// Gives topic `name` the id `id` (a follower taking its leader's ids, so that the
    /// replicated consumer offsets, which name topics by id, apply to it). The offsets state
    /// is read again from its log, since commits for `id` were ignored until now.
    pub(crate) fn adopt_topic_id(&self, name: &str, id: TopicId) -> Result<()> {
        self.inner.check_writable()?;
        if self.topic(name)?.id == id {
            return Ok(());
        }
        {
            // The registry and the live ids change together, under the registry lock (in the
            // order `create_topic` takes them): a partition lookup that read the old id sees a
            // mismatch and reads again, never an unknown topic.
            let mut registry = state(&self.inner.registry, REGISTRY)?;
            let mut next = registry.clone();
            let entry = next
                .iter_mut()
                .find(|e| e.info.name == name && !e.deleting)
                .ok_or_else(|| Error::UnknownTopic {
                    topic: name.to_string(),
                })?;
            entry.info.id = id;
            topic::write(self.inner.storage.as_ref(), &self.inner.dir, &next)?;
            *registry = next;
            state(&self.inner.live, REGISTRY)?.insert(name.to_string(), id);
        }
        self.inner.with_offsets(|o| o.reload())
    }

    /// The consumer offsets log in use: a leader serves it to its followers as the partition
    /// `__consumer_offsets/0`, so that commits replicate with the data.
    pub(crate) fn offsets_log(&self) -> Result<Arc<Log>> {
        self.inner.with_offsets(|o| Ok(o.log().clone()))
    }

    /// A follower's append to the consumer offsets log: the leader's batches, unchanged at the
    /// leader's offsets; the committed state follows.
    pub(crate) fn append_offsets_replica(&self, batches: &[crate::format::Batch]) -> Result<()> {
        self.inner.check_writable()?;
        self.inner.with_offsets(|o| o.append_replica(batches))
    }

    /// A follower's cut of a divergent suffix of the consumer offsets log.
    pub(crate) fn truncate_offsets(&self, at: u64) -> Result<()> {
        self.inner.check_writable()?;
        self.inner.with_offsets(|o| o.truncate(at))
    }

    /// A follower below the leader's start of the consumer offsets log (the leader compacted
    /// it): starts over, empty, at `start`.
    pub(crate) fn restart_offsets_at(&self, start: u64) -> Result<()> {
        self.inner.check_writable()?;
        self.inner.with_offsets(|o| o.restart_at(start))
    }

    /// Sets the leader epoch of the consumer offsets log (with every partition's, on a
    /// promote).
    pub(crate) fn set_offsets_epoch(&self, epoch: u64) -> Result<()> {
        self.inner.check_writable()?;
        self.inner.with_offsets(|o| o.set_leader_epoch(epoch))
    }

    /// Applies retention to every partition of every topic with a retention limit once: open
    /// partitions directly; a partition not open yet only if it has more than one segment (a
    /// partition's only segment is never deleted), which opens it. Never holds a lock an append
    /// needs. The background thread calls this every [`StoreOptions::retention_interval`].
    pub fn apply_retention(&self) -> RetentionPass {
        self.inner.apply_retention()
    }

    /// Closes every partition and the offsets log cleanly. The first error is returned; every
    /// log is closed anyway.
    pub fn close(self) -> Result<()> {
        self.close_inner()
    }

    fn close_inner(&self) -> Result<()> {
        *lock(&self.inner.stop) = true;
        self.inner.stop_signal.notify_all();
        {
            let _queue = lock(&self.inner.flush.keys);
            self.inner.flush.signal.notify_all();
        }
        for thread in [&self.retention, &self.flusher] {
            if let Some(h) = lock(thread).take() {
                let _ = h.join();
            }
        }
        let mut first = Ok(());
        // Closing goes on through a poisoned lock (see `state`): each log closes on its own.
        let logs: Vec<(PartitionKey, Arc<Log>)> = lock(&self.inner.partitions).drain().collect();
        for ((t, p), log) in logs {
            let result = match Arc::try_unwrap(log) {
                Ok(log) => log.close(),
                // Held elsewhere: it closes when the last holder drops it.
                Err(log) => log.flush(),
            };
            if let Err(e) = result {
                tracing::warn!(topic = %t, partition = p, error = %e, "closing a partition failed");
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        if let Some(o) = lock(&self.inner.offsets).take()
            && let Err(e) = o.close()
            && first.is_ok()
        {
            first = Err(e);
        }
        lock(&self.inner.dir_lock).take();
        first
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.close_inner() {
            tracing::warn!(dir = %self.inner.dir.display(), error = %e, "closing the store failed");
        }
    }
}

fn check_partitions(partitions: u32) -> Result<()> {
    let cap = MAX_TOPIC_PARTITIONS.min(topic::MAX_PARTITIONS);
    if !(1..=cap).contains(&partitions) {
        return Err(Error::InvalidArgument(format!(
            "a topic has 1..={cap} partitions (the store's cap, MAX_TOPIC_PARTITIONS), not {partitions}; use fewer partitions or more topics"
        )));
    }
    Ok(())
}

/// Checks the name of a log that a tool creates in a store's directory (or any data
/// directory): names starting with `__` are reserved for the store's own logs (the consumer
/// offsets log `__consumer_offsets`), whose records a plain append would make unreadable.
/// Tools that open a plain log `DIR/NAME` for writing call this first.
pub fn check_log_name(name: &str) -> Result<()> {
    if name.starts_with("__") {
        return Err(Error::InvalidArgument(format!(
            "log name {name:?} is reserved: names starting with \"__\" are the store's own logs \
             (consumer offsets); use another name, and `stratalog groups` for the offsets"
        )));
    }
    Ok(())
}

/// [`StoreOptions::max_open_partitions`], resolved (at least 1).
fn max_open(option: Option<usize>) -> usize {
    option
        .unwrap_or_else(crate::limits::default_max_open_partitions)
        .max(1)
}

fn check_group_name(group: &str) -> Result<()> {
    if group.is_empty() || group.len() > 255 {
        return Err(Error::InvalidArgument(format!(
            "invalid group name {group:?}: use 1 to 255 bytes"
        )));
    }
    Ok(())
}

impl Inner {
    /// [`Error::ReadOnly`] for a read-only store.
    fn check_writable(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        Ok(())
    }

    fn topic(&self, name: &str) -> Result<TopicInfo> {
        state(&self.registry, REGISTRY)?
            .iter()
            .find(|e| e.info.name == name && !e.deleting)
            .map(|e| e.info.clone())
            .ok_or_else(|| Error::UnknownTopic {
                topic: name.to_string(),
            })
    }

    fn update_entry(&self, name: &str, f: impl FnOnce(&mut Entry) -> Result<()>) -> Result<Entry> {
        let mut registry = state(&self.registry, REGISTRY)?;
        let mut next = registry.clone();
        let entry = next
            .iter_mut()
            .find(|e| e.info.name == name && !e.deleting)
            .ok_or_else(|| Error::UnknownTopic {
                topic: name.to_string(),
            })?;
        f(entry)?;
        let updated = entry.clone();
        topic::write(self.storage.as_ref(), &self.dir, &next)?;
        *registry = next;
        Ok(updated)
    }

    fn update_topic(
        &self,
        name: &str,
        f: impl FnOnce(&mut TopicInfo) -> Result<()>,
    ) -> Result<TopicInfo> {
        Ok(self.update_entry(name, |e| f(&mut e.info))?.info)
    }

    fn with_offsets<T>(&self, f: impl FnOnce(&mut Offsets) -> Result<T>) -> Result<T> {
        match state(&self.offsets, OFFSETS)?.as_mut() {
            Some(o) => f(o),
            None => Err(Error::Closed),
        }
    }

    fn partition(self: &Arc<Self>, topic: &str, partition: u32) -> Result<Arc<Log>> {
        // A topic whose id changed under this lookup (a follower taking its leader's id) is
        // looked up once more: the change is whole by then.
        match self.partition_once(topic, partition) {
            Err(Error::UnknownTopic { .. }) => self.partition_once(topic, partition),
            other => other,
        }
    }

    fn partition_once(self: &Arc<Self>, topic: &str, partition: u32) -> Result<Arc<Log>> {
        let info = self.topic(topic)?;
        if partition >= info.partitions() {
            return Err(Error::UnknownPartition {
                topic: topic.to_string(),
                partition,
                partitions: info.partitions(),
            });
        }
        let key = (topic.to_string(), partition);
        let mut partitions = state(&self.partitions, PARTITIONS)?;
        if *lock(&self.stop) {
            return Err(Error::Closed);
        }
        if state(&self.live, REGISTRY)?.get(topic) != Some(&info.id) {
            // Deleted (and perhaps created again) since `info` was read.
            return Err(Error::UnknownTopic {
                topic: topic.to_string(),
            });
        }
        let tick = self
            .clock
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(log) = partitions.get(&key) {
            lock(&self.used).insert(key, tick);
            return Ok(log.clone());
        }
        self.close_idle(&mut partitions);
        lock(&self.used).insert(key.clone(), tick);
        if lock(&self.failed_closed).remove(&key) {
            // Counted before the open: a reader of the count that then finds the log open
            // again never misses it.
            self.reopened_after_failure
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        if self.read_only {
            let log = Arc::new(Log::open(
                partition_dir(&self.dir, topic, partition),
                LogOptions {
                    storage: self.storage.clone(),
                    create: false,
                    read_only: true,
                    ..Default::default()
                },
            )?);
            partitions.insert(key, log.clone());
            return Ok(log);
        }
        let log = Log::open(
            partition_dir(&self.dir, topic, partition),
            LogOptions {
                config: info.config.log,
                fsync: info.config.fsync,
                storage: self.storage.clone(),
                create: true,
                // No flusher thread per partition: the store's one thread does that work.
                group_commit: GroupCommit::External,
                preallocate: self.preallocate,
                ..Default::default()
            },
        )?;
        {
            let (queue, key) = (self.flush.clone(), key.clone());
            log.set_sync_notifier(move || {
                lock(&queue.keys).insert(key.clone());
                queue.signal.notify_one();
            });
        }
        if log.config() != info.config.log {
            // Changed while the partition was closed.
            log.set_config(info.config.log)?;
        }
        // The log keeps its epoch durably (its `log.epochs` file). A log written before it did has
        // none: its epoch is that of its last batch, or of the last offset commit made for the
        // partition, whichever is newer, recorded from here on.
        if log.epoch_history().latest().is_some() {
            let log = Arc::new(log);
            partitions.insert(key, log.clone());
            return Ok(log);
        }
        let last_batch_epoch = match log.end_offset() {
            end if end > log.start_offset() => {
                log.read(end - 1, 1)?.last().map_or(0, |b| b.leader_epoch())
            }
            _ => 0,
        };
        let commit_epoch = self
            .with_offsets(|o| {
                Ok(o.state()
                    .iter()
                    .filter(|((_, t, p), s)| t == topic && *p == partition && s.topic == info.id)
                    .map(|(_, s)| s.committed.leader_epoch)
                    .max()
                    .unwrap_or(0))
            })
            .unwrap_or(0);
        let epoch = last_batch_epoch.max(commit_epoch);
        if epoch > 0 && !self.read_only {
            log.set_leader_epoch(epoch)?;
        }
        let log = Arc::new(log);
        partitions.insert(key, log.clone());
        Ok(log)
    }

    /// Makes room for one more open partition: closes the least recently used partitions that
    /// no one else holds while `max_open` or more are open. With the `partitions` lock held,
    /// so that no one reopens a partition while it is being closed (its directory lock is
    /// released by the close).
    fn close_idle(&self, partitions: &mut HashMap<PartitionKey, Arc<Log>>) {
        if partitions.len() < self.max_open {
            return;
        }
        let mut used = lock(&self.used);
        let mut idle: Vec<(u64, PartitionKey)> = partitions
            .iter()
            .filter(|(_, log)| Arc::strong_count(log) == 1)
            .map(|(k, _)| (used.get(k).copied().unwrap_or(0), k.clone()))
            .collect();
        idle.sort_unstable();
        let excess = partitions.len() + 1 - self.max_open;
        for (_, key) in idle.into_iter().take(excess) {
            used.remove(&key);
            if let Some(log) = partitions.remove(&key)
                && let Err(e) = {
                    if log.has_failed() {
                        lock(&self.failed_closed).insert(key.clone());
                    }
                    log.close()
                }
            {
                tracing::warn!(topic = %key.0, partition = key.1, error = %e, "closing an idle partition failed; the next open recovers it");
            }
        }
    }

    /// Removes the files of every partition of a topic marked deleting, then the topic.
    fn finish_delete(&self, info: &TopicInfo) -> Result<()> {
        let max = info
            .versions
            .iter()
            .map(|v| v.partitions)
            .max()
            .unwrap_or(0);
        for p in 0..max {
            offsets::remove_dir_files(
                self.storage.as_ref(),
                &partition_dir(&self.dir, &info.name, p),
            )?;
        }
        let _ = self.storage.remove_dir(&self.dir.join(&info.name));
        let mut registry = state(&self.registry, REGISTRY)?;
        let next: Vec<Entry> = registry
            .iter()
            .filter(|e| !(e.info.name == info.name && e.deleting))
            .cloned()
            .collect();
        topic::write(self.storage.as_ref(), &self.dir, &next)?;
        *registry = next;
        Ok(())
    }

    /// The open log of a partition, held as the store's own (`None` if it is not open, or if
    /// the partitions lock is poisoned: the background threads then leave the partition
    /// alone, and the store's calls report the poisoning).
    fn hold(&self, key: &PartitionKey) -> Option<Held<'_>> {
        let partitions = state(&self.partitions, PARTITIONS).ok()?;
        let log = partitions.get(key)?.clone();
        *lock(&self.holds.count).entry(key.clone()).or_default() += 1;
        Some(Held {
            holds: &self.holds,
            key: key.clone(),
            log: Some(log),
        })
    }

    /// Removes the committed offsets that belong to no live topic: commits for a topic deleted
    /// by a run that crashed before removing them, or by a version that kept them.
    fn drop_stale_offsets(&self) -> Result<()> {
        let live: HashMap<String, TopicId> = state(&self.registry, REGISTRY)?
            .iter()
            .filter(|e| !e.deleting)
            .map(|e| (e.info.name.clone(), e.info.id))
            .collect();
        self.with_offsets(|o| {
            let stale: Vec<(offsets::Key, Option<Stored>)> = o
                .state()
                .iter()
                .filter(|((_, t, _), s)| live.get(t) != Some(&s.topic))
                .map(|(k, _)| (k.clone(), None))
                .collect();
            if !stale.is_empty() {
                tracing::info!(
                    commits = stale.len(),
                    "removing consumer offsets of deleted topics"
                );
            }
            o.commit(&stale)
        })
    }

    fn stopping(&self) -> bool {
        *lock(&self.stop)
    }

    /// The shared group-commit thread: syncs the partitions whose notifier fired once their
    /// fsync policy wants it (one fsync per partition with new bytes), and looks again after
    /// the delay each one asks for.
    fn flush_loop(self: &Arc<Self>) {
        let mut watch: HashMap<PartitionKey, Instant> = HashMap::new();
        loop {
            let wait = watch.values().min().map_or(Duration::from_secs(1), |t| {
                t.saturating_duration_since(Instant::now())
            });
            let new: Vec<PartitionKey> = {
                let queue = lock(&self.flush.keys);
                let (mut queue, _) = self
                    .flush
                    .signal
                    .wait_timeout_while(queue, wait, |q| q.is_empty() && !self.stopping())
                    .unwrap_or_else(|e| e.into_inner());
                queue.drain().collect()
            };
            if self.stopping() {
                return;
            }
            let now = Instant::now();
            for k in new {
                watch.insert(k, now);
            }
            let due: Vec<PartitionKey> = watch
                .iter()
                .filter(|(_, t)| **t <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for k in due {
                match self.hold(&k).and_then(|log| log.sync_due()) {
                    Some(d) => {
                        watch.insert(k, Instant::now() + d.max(MIN_FLUSH_WAIT));
                    }
                    None => {
                        watch.remove(&k);
                    }
                }
            }
        }
    }

    fn retention_loop(self: &Arc<Self>, every: Duration) {
        loop {
            {
                let stop = lock(&self.stop);
                let (stop, _) = self
                    .stop_signal
                    .wait_timeout_while(stop, every, |s| !*s)
                    .unwrap_or_else(|e| e.into_inner());
                if *stop {
                    return;
                }
            }
            let pass = self.apply_retention();
            if pass.segments_deleted > 0 || pass.errors > 0 {
                tracing::info!(?pass, "background retention pass");
            }
        }
    }

    fn apply_retention(self: &Arc<Self>) -> RetentionPass {
        if self.read_only {
            return RetentionPass::default();
        }
        let mut pass = RetentionPass::default();
        let topics: Vec<TopicInfo> = match state(&self.registry, REGISTRY) {
            Ok(registry) => registry
                .iter()
                .filter(|e| !e.deleting)
                .map(|e| e.info.clone())
                .collect(),
            Err(e) => {
                pass.errors += 1;
                tracing::warn!(error = %e, "retention skipped");
                return pass;
            }
        };
        for t in topics {
            let c = t.config.log;
            if c.retention_bytes.is_none() && c.retention_ms.is_none() {
                continue;
            }
            for p in 0..t.partitions() {
                if *lock(&self.stop) {
                    return pass;
                }
                pass.partitions += 1;
                let key = (t.name.clone(), p);
                let log = match self.hold(&key) {
                    Some(log) => Ok(log),
                    None if self.segment_count(&t.name, p) > 1 => {
                        match self.partition(&t.name, p).map(drop) {
                            Ok(()) => match self.hold(&key) {
                                Some(log) => Ok(log),
                                None => continue,
                            },
                            Err(e) => Err(e),
                        }
                    }
                    None => continue,
                };
                match log.and_then(|log| log.apply_retention()) {
                    Ok(n) => pass.segments_deleted += n,
                    Err(e) => {
                        pass.errors += 1;
                        tracing::warn!(topic = %t.name, partition = p, error = %e, "retention failed");
                    }
                }
            }
        }
        pass
    }

    /// Segment files in a partition's directory (0 if it has none yet).
    fn segment_count(&self, topic: &str, partition: u32) -> usize {
        self.storage
            .list(&partition_dir(&self.dir, topic, partition))
            .map(|names| {
                names
                    .iter()
                    .filter(|n| crate::format::parse_segment_name(n).is_some())
                    .count()
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poison<T>(m: &Mutex<T>) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _guard = m.lock();
            panic!("poisoning the lock on purpose");
        }));
        assert!(m.is_poisoned());
    }

    /// A follower takes its leader's topic ids while its fetchers and status look partitions
    /// up: no lookup may find the topic unknown in between (the bench's follower status once
    /// missed its partition that way).
    #[test]
    fn lookups_never_miss_a_topic_whose_id_is_taken_over() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(store(tmp.path()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let looker = {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut lookups = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    store
                        .partition("t", 0)
                        .expect("a lookup during an id change");
                    lookups += 1;
                }
                lookups
            })
        };
        for _ in 0..300 {
            store.adopt_topic_id("t", TopicId::generate()).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Release);
        assert!(looker.join().expect("no lookup failed") > 0);
    }

    fn store(dir: &Path) -> Store {
        let store = Store::open(
            dir,
            StoreOptions {
                retention_interval: None,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        store
            .create_topic("t", 1, TopicConfig::default(), PartitionerKind::Jump)
            .unwrap();
        store
    }

    /// The poisoning policy: once a state lock is poisoned every call that needs it fails with
    /// `StorePoisoned` (none carries on with half-changed state); closing still works, and a
    /// reopened store is whole.
    #[test]
    fn a_poisoned_state_lock_fails_every_use_until_reopened() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        s.partition("t", 0)
            .unwrap()
            .append_records(&["a"])
            .unwrap()
            .receipt
            .wait()
            .unwrap();
        s.commit("g", "t", 0, 1, 0).unwrap();
        poison(&s.inner.registry);
        let poisoned = |r: Result<()>| matches!(r, Err(Error::StorePoisoned { .. }));
        assert!(poisoned(s.topics().map(drop)));
        assert!(poisoned(s.partition("t", 0).map(drop)));
        assert!(poisoned(s.try_committed("g", "t", 0).map(drop)));
        assert_eq!(s.committed("g", "t", 0), None);
        assert!(poisoned(
            s.create_topic("u", 1, TopicConfig::default(), PartitionerKind::Jump)
                .map(drop)
        ));
        assert!(poisoned(s.delete_topic("t")));
        assert_eq!(s.apply_retention().errors, 1);
        s.close().unwrap();

        let s = store(&tmp.path().join("other"));
        poison(&s.inner.offsets);
        assert!(matches!(
            s.groups(),
            Err(Error::StorePoisoned {
                what: "consumer offsets"
            })
        ));
        assert!(poisoned(s.commit("g", "t", 0, 0, 0)));
        drop(s);

        let s = Store::open(tmp.path(), StoreOptions::default()).unwrap();
        assert_eq!(s.committed("g", "t", 0).unwrap().offset, 1);
        s.close().unwrap();
    }
}
