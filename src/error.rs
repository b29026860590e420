//! Typed errors. Every error that comes from the file system keeps its `io::Error` source and
//! names the file; every message says what the caller can do about it.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::format::FormatError;

/// The result type of every fallible stratalog operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong.
///
/// # Examples
///
/// ```
/// use stratalog::{Error, Log, LogOptions};
///
/// # fn main() -> stratalog::Result<()> {
/// let tmp = tempfile::tempdir().unwrap();
/// let log = Log::open(tmp.path(), LogOptions::default())?;
/// log.append_records(&["a"])?.receipt.wait()?;
/// // Reading past the end is a typed error, not a panic: the caller can match on it.
/// let err = log.read_one(5).unwrap_err();
/// assert!(matches!(err, Error::OffsetOutOfRange { offset: 5, start: 0, end: 1 }));
/// // A second writer on the same directory is refused while the first holds it.
/// let second = Log::open(tmp.path(), LogOptions::default());
/// assert!(matches!(second, Err(Error::Locked { .. })));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file-system operation failed.
    #[error("{op} failed on {path}: {source}")]
    Io {
        /// The operation that failed (for example `write`, `fsync`, `rename`).
        op: &'static str,
        /// The file or directory it was applied to.
        path: PathBuf,
        /// The error the operating system returned.
        #[source]
        source: io::Error,
    },

    /// The disk is full. Nothing of the failed append became visible; free space (retention,
    /// deleting other data) and append again.
    #[error("out of disk space writing {path}; free space and retry the append")]
    NoSpace {
        /// The file that could not be written.
        path: PathBuf,
        /// The error the operating system returned (`ENOSPC`).
        #[source]
        source: io::Error,
    },

    /// Stored bytes failed their checks. The data at this position is never served.
    #[error("corrupt data in {path} at byte {position}: {source}")]
    Corrupt {
        /// The file holding the bad bytes.
        path: PathBuf,
        /// Byte position in the file where the bad structure starts.
        position: u64,
        /// What check failed.
        #[source]
        source: FormatError,
    },

    /// An earlier write or fsync failed, so the page cache can no longer be trusted, or a
    /// thread panicked while it held the writer ([`Error::Poisoned`]). The log refuses writes
    /// until it is closed and reopened (which runs recovery).
    #[error("the log failed after an earlier error and refuses writes; close and reopen it: {0}")]
    Failed(#[source] Arc<Error>),

    /// A thread panicked while it held one of the log's locks that guard state a panic may
    /// leave half-updated (the writer, the checkpoint, the sync gate, maintenance). The log is
    /// latched as failed (returned inside [`Error::Failed`]): close and reopen it, and recovery
    /// rebuilds the state from the files.
    #[error(
        "a thread panicked while holding the log's {what} lock, which may be half-updated; close and reopen the log"
    )]
    Poisoned {
        /// Which lock.
        what: &'static str,
    },

    /// The offset is below the log start (deleted by retention) or beyond its end.
    #[error("offset {offset} is out of range: the log holds offsets {start}..{end}")]
    OffsetOutOfRange {
        /// The offset that was asked for.
        offset: u64,
        /// The first offset the log holds.
        start: u64,
        /// One past the last offset the log holds.
        end: u64,
    },

    /// An argument does not make sense (for example an empty batch, or a truncation point that
    /// splits a batch).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// Another process has the log open.
    #[error("{path} is locked by another process; stop it or use another directory")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },

    /// The log was opened read-only ([`crate::LogOptions::read_only`]); open it again without
    /// that option to change it (on a full disk: free space first).
    #[error("the log was opened read-only; reopen it writable to change it")]
    ReadOnly,

    /// The log was closed; open it again to use it.
    #[error("the log is closed")]
    Closed,

    /// A read-only open found a log whose creation never finished (a writer stopped between
    /// writing `log.meta` and its first segment): it holds no record. A writable open creates
    /// the segment.
    #[error("{} has no segment: it holds no record (its creation did not finish); open it writable once to create one", dir.display())]
    NoSegment {
        /// The log's directory.
        dir: PathBuf,
    },

    /// The store has no topic of this name.
    #[error("no topic {topic:?} in the store; create it first (`stratalog topics create`)")]
    UnknownTopic {
        /// The topic asked for.
        topic: String,
    },

    /// A topic of this name already exists.
    #[error("topic {topic:?} already exists; delete it first or use another name")]
    TopicExists {
        /// The topic.
        topic: String,
    },

    /// The topic has no such partition.
    #[error("topic {topic:?} has partitions 0..{partitions}, not {partition}")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// How many partitions the topic has.
        partitions: u32,
    },

    /// Something is still using a resource that an operation needs for itself (for example a
    /// partition log that is shared with another holder while its topic is deleted).
    #[error("{what} is in use; drop the other handles to it and retry")]
    InUse {
        /// What is in use.
        what: String,
    },

    /// A thread panicked while it changed the store's state (its topic registry, open
    /// partitions or consumer offsets), which may be half-changed in memory. Nothing more is
    /// done with it; the files are sound (every change is written before it is installed).
    #[error(
        "the store's state ({what}) was left half-changed by a panicking thread; close the store and open it again"
    )]
    StorePoisoned {
        /// Which part of the store's state.
        what: &'static str,
    },

    /// A consumer offset commit names an offset past the end of the partition: the group
    /// cannot have processed records that do not exist. Nothing was committed.
    #[error(
        "group {group:?} cannot commit offset {offset} for {topic}/{partition}: the partition ends at {end}; commit at most the offset after the last record processed"
    )]
    CommitBeyondEnd {
        /// The consumer group.
        group: String,
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The offset the group tried to commit.
        offset: u64,
        /// The partition's end offset (one past its last record).
        end: u64,
    },

    /// A replica append does not continue the log: its first offset is not the log's end, or its
    /// leader epoch is below the log's current one. Nothing of it was appended; a follower asks
    /// the leader where its last epoch ends, truncates there and fetches again.
    #[error(
        "replica batch at offset {} (epoch {}) does not continue the log, which ends at {} in epoch {}; truncate to the leader's epoch end and fetch again",
        .0.offset, .0.epoch, .0.end, .0.current_epoch
    )]
    NotContiguous(ReplicaGap),

    /// A consumer offset commit was made in a leader epoch that is not the partition's current
    /// one (older: a stale leader or consumer; newer: an epoch the partition does not know).
    /// Nothing was committed: read the current epoch and the data again, then commit.
    #[error(
        "group {group:?} cannot commit for {topic}/{partition} in leader epoch {epoch}: the partition's current leader epoch is {current}"
    )]
    StaleEpoch {
        /// The consumer group.
        group: String,
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The epoch the commit was made in.
        epoch: u64,
        /// The partition's current leader epoch.
        current: u64,
    },

    /// A snapshot failed its checks (`MANIFEST` unreadable, a file missing, extra, shorter,
    /// longer or with other bytes than the `MANIFEST` says). Nothing was restored: take a new
    /// snapshot, or restore from another copy of this one.
    #[error(
        "snapshot {snapshot} is damaged: {path}: {reason}; nothing was restored, take a new snapshot or use another copy"
    )]
    SnapshotDamaged {
        /// The snapshot directory.
        snapshot: PathBuf,
        /// The file that failed (the `MANIFEST`, or a file it lists).
        path: PathBuf,
        /// What check failed.
        reason: String,
        /// The underlying error, if any (a format error in the `MANIFEST`, an I/O error).
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// A snapshot streamed from a node failed: no node answered, none leads, the connection
    /// broke, the node could not cut its store, or what it sent did not match its `MANIFEST`.
    /// Nothing was written at the target: check the addresses and that a leader runs, then
    /// take it again.
    #[error(
        "snapshot from {node} failed: {reason}; nothing was written, check that a leader serves there and take it again"
    )]
    SnapshotFromNode {
        /// The node (or the addresses tried).
        node: String,
        /// What failed.
        reason: String,
        /// The underlying error, if any (a connection error, a frame error).
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The coordinator (etcd, `replication::coordinator`) could not be set up: a bad
    /// `etcd://` address, a build without the `etcd` feature, or its thread could not start.
    /// Check the `--coordinator` address and that etcd answers there.
    #[error("coordinator: {what}")]
    Coordinator {
        /// What failed, and what to check.
        what: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// Part of [`Error`]: why a replica append was refused.
///
/// # Examples
///
/// ```
/// use stratalog::{Error, Log, LogOptions};
///
/// # fn main() -> stratalog::Result<()> {
/// let tmp = tempfile::tempdir().unwrap();
/// let leader = Log::open(tmp.path().join("leader"), LogOptions::default())?;
/// leader.append_records(&["a"])?.receipt.wait()?;
/// leader.append_records(&["b"])?.receipt.wait()?;
/// let batches = leader.read(0, 1 << 20)?;
/// let follower = Log::open(tmp.path().join("follower"), LogOptions::default())?;
/// // The second batch alone leaves a gap at offset 0: refused, and the gap is described.
/// match follower.append_replica(&batches[1..]) {
///     Err(Error::NotContiguous(gap)) => assert_eq!((gap.offset, gap.end), (1, 0)),
///     other => panic!("expected a gap, got {other:?}"),
/// }
/// follower.append_replica(&batches)?.receipt.wait()?;
/// assert_eq!(follower.end_offset(), 2);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaGap {
    /// The first offset of the refused batch.
    pub offset: u64,
    /// Its leader epoch.
    pub epoch: u64,
    /// The log's end offset, where the batch had to start.
    pub end: u64,
    /// The log's current leader epoch, which the batch's must not be below.
    pub current_epoch: u64,
}

impl Error {
    /// Wraps an `io::Error` from operation `op` on `path`, recognising a full disk.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if source.raw_os_error() == Some(libc::ENOSPC)
            || source.kind() == io::ErrorKind::StorageFull
        {
            Error::NoSpace { path, source }
        } else {
            Error::Io { op, path, source }
        }
    }

    /// True if the disk was full: the append can be retried once space is freed.
    pub fn is_no_space(&self) -> bool {
        matches!(self, Error::NoSpace { .. })
    }

    /// True if the error reports corrupt stored data.
    pub fn is_corruption(&self) -> bool {
        match self {
            Error::Corrupt { .. } => true,
            Error::Failed(inner) => inner.is_corruption(),
            _ => false,
        }
    }
}

/// Adds the operation and path to an `io::Result`.
pub(crate) trait IoContext<T> {
    /// Converts the error into [`Error::Io`] (or [`Error::NoSpace`]) naming `op` and `path`.
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e))
    }
}
