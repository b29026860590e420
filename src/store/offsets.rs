//! Consumer offsets: what each consumer group has processed, per partition, kept in a log of
//! its own (`__consumer_offsets`) so that replication and mirrors carry it with the data.
//!
//! Each commit appends one batch (one record per partition committed) with
//! [`FsyncPolicy::Always`]: a commit returns only once it is durable. The state (the latest
//! commit of each group, topic and partition) is rebuilt at open by reading the log from its
//! start; a later record for the same key replaces an earlier one, and a record with an empty
//! value removes the key (a deleted group).
//!
//! Compaction: when the log holds more than [`COMPACT_MIN_RECORDS`] records and more than four
//! times as many as there are live keys, the live state is written to a new log directory
//! (`__consumer_offsets.<generation>`), made durable, and then the small pointer file
//! `consumer_offsets.generation` is replaced (write, fsync, rename, fsync directory) to name
//! it; only then are the old directory's files removed. A crash before the pointer is replaced
//! leaves the old log in charge (the half-written new one is removed at the next open); after
//! it, the new one.
//!
//! Record layout (docs/FORMAT.md, "Consumer offset record", in [`crate::format::store`]):
//! key = `u16 group_len | group | u16 topic_len | topic | u32 partition`,
//! value = `u8 version (2) | u64 offset | u64 leader_epoch | i64 commit_ms | [u8; 16] topic_id`
//! (empty = deleted; version 1 values, without the topic id, are still read and name
//! [`TopicId::LEGACY`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, IoContext, Result};
use crate::format::store as fs;
use crate::format::{Batch, BatchBuilder, Compression, FormatError, Record};
use crate::log::{FsyncPolicy, Log, LogConfig, LogOptions, now_ms};
use crate::storage::{OpenMode, Storage, read_all};

use super::topic::{TopicId, replace_file};

/// Directory name of the offsets log of generation 0; later generations add `.<generation>`.
pub const OFFSETS_LOG: &str = "__consumer_offsets";
/// The pointer file naming the current generation of the offsets log (absent = generation 0).
pub const GENERATION_FILE: &str = "consumer_offsets.generation";
/// The offsets log is compacted only once it holds at least this many records.
pub const COMPACT_MIN_RECORDS: u64 = 10_000;

/// A group's committed position in one partition.
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
/// store.partition("orders", 0)?.append_records(&["a"])?.receipt.wait()?;
/// store.commit("billing", "orders", 0, 1, 0)?;
/// store.close()?;
/// // Commits are durable: a reopened store has them.
/// let store = Store::open(tmp.path(), StoreOptions::default())?;
/// let committed = store.committed("billing", "orders", 0).unwrap();
/// assert_eq!((committed.offset, committed.leader_epoch), (1, 0));
/// assert!(committed.commit_ms > 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The next offset to process: every record below it was processed.
    pub offset: u64,
    /// The leader epoch the commit was made in.
    pub leader_epoch: u64,
    /// When it was committed (milliseconds since the Unix epoch).
    pub commit_ms: i64,
}

/// (group, topic, partition).
pub(crate) type Key = (String, String, u32);

/// A commit as kept in the state: what was committed, and for which incarnation of the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stored {
    pub committed: Committed,
    /// The topic id the commit was made for ([`TopicId::LEGACY`] for a version 1 record).
    pub topic: TopicId,
}

fn encode_value(s: &Stored) -> [u8; fs::OFFSET_VALUE_LEN] {
    fs::encode_offset_value(&fs::OffsetValue {
        offset: s.committed.offset,
        leader_epoch: s.committed.leader_epoch,
        commit_ms: s.committed.commit_ms,
        topic_id: s.topic.0,
    })
}

/// Decodes one record of the offsets log: its key and its value (`None`: a deletion).
pub(crate) fn decode_record(
    key: Option<&[u8]>,
    value: &[u8],
) -> Result<(Key, Option<Stored>), FormatError> {
    let key = key.ok_or(FormatError::Invalid {
        what: "consumer offset record without a key, length",
        value: 0,
    })?;
    let key = fs::decode_offset_key(key)?;
    if value.is_empty() {
        return Ok((key, None));
    }
    let v = fs::decode_offset_value(value)?;
    Ok((
        key,
        Some(Stored {
            committed: Committed {
                offset: v.offset,
                leader_epoch: v.leader_epoch,
                commit_ms: v.commit_ms,
            },
            topic: TopicId(v.topic_id),
        }),
    ))
}

pub(crate) fn log_dir(dir: &Path, generation: u64) -> PathBuf {
    if generation == 0 {
        dir.join(OFFSETS_LOG)
    } else {
        dir.join(format!("{OFFSETS_LOG}.{generation}"))
    }
}

fn log_options(storage: &Arc<dyn Storage>) -> LogOptions {
    LogOptions {
        config: LogConfig {
            segment_bytes: 16 << 20,
            ..LogConfig::default()
        },
        fsync: FsyncPolicy::Always,
        storage: storage.clone(),
        create: true,
        ..LogOptions::default()
    }
}

/// Removes every file of a directory (and, on the real file system, the directory once empty).
pub(crate) fn remove_dir_files(storage: &dyn Storage, dir: &Path) -> Result<()> {
    let names = match storage.list(dir) {
        Ok(names) => names,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    for name in names {
        let path = dir.join(name);
        storage.remove(&path).ctx("remove", &path)?;
    }
    storage.sync_dir(dir).ctx("fsync directory", dir)?;
    // The empty directory goes too (durable with the parent's next fsync; an empty directory
    // left by a crash is harmless).
    let _ = storage.remove_dir(dir);
    Ok(())
}

/// The open offsets log and the state read from it.
#[derive(Debug)]
pub(crate) struct Offsets {
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    generation: u64,
    log: Arc<Log>,
    state: BTreeMap<Key, Stored>,
    /// Records in the log (live or replaced).
    records: u64,
}

impl Offsets {
    /// Opens (creating if needed) the offsets log of the store in `dir` and reads its state.
    pub fn open(storage: &Arc<dyn Storage>, dir: &Path) -> Result<Offsets> {
        let generation = read_generation(storage.as_ref(), dir)?;
        // A generation newer than the pointer is a compaction that did not finish; older ones
        // are compactions whose clean-up did not finish.
        for g in [generation.wrapping_sub(1), generation + 1] {
            if g != u64::MAX {
                let d = log_dir(dir, g);
                if storage.exists(&d.join("log.meta")) || storage.exists(&d.join(".lock")) {
                    remove_dir_files(storage.as_ref(), &d)?;
                }
            }
        }
        let log = Arc::new(Log::open(log_dir(dir, generation), log_options(storage))?);
        let mut offsets = Offsets {
            dir: dir.to_path_buf(),
            storage: storage.clone(),
            generation,
            log,
            state: BTreeMap::new(),
            records: 0,
        };
        offsets.load()?;
        Ok(offsets)
    }

    /// Opens the consumer offsets read-only (for a read-only store): no lock, no clean-up of
    /// unfinished compactions, nothing written; commits fail with [`Error::ReadOnly`]. A store
    /// that never had a commit has an empty state.
    pub fn open_read_only(storage: &Arc<dyn Storage>, dir: &Path) -> Result<Option<Offsets>> {
        let generation = read_generation(storage.as_ref(), dir)?;
        let log_dir = log_dir(dir, generation);
        if !storage.exists(&log_dir.join("log.meta")) {
            return Ok(None);
        }
        let options = LogOptions {
            read_only: true,
            create: false,
            ..log_options(storage)
        };
        let log = Arc::new(Log::open(&log_dir, options)?);
        let mut offsets = Offsets {
            dir: dir.to_path_buf(),
            storage: storage.clone(),
            generation,
            log,
            state: BTreeMap::new(),
            records: 0,
        };
        offsets.load()?;
        Ok(Some(offsets))
    }

    fn load(&mut self) -> Result<()> {
        self.state.clear();
        self.records = 0;
        let log = self.log.clone();
        let path = log.dir().to_path_buf();
        let mut next = log.start_offset();
        let end = log.end_offset();
        while next < end {
            let batches = log.read(next, 1 << 20)?;
            if batches.is_empty() {
                break;
            }
            for batch in &batches {
                if batch.base_offset() > next {
                    break;
                }
                let records = batch.records().map_err(|source| Error::Corrupt {
                    path: path.clone(),
                    position: 0,
                    source,
                })?;
                for r in records {
                    let r = r.map_err(|source| Error::Corrupt {
                        path: path.clone(),
                        position: 0,
                        source,
                    })?;
                    if r.offset < next {
                        continue;
                    }
                    self.records += 1;
                    self.apply(&path, r.offset, r.key.as_deref(), &r.value)?;
                }
                next = next.max(batch.last_offset() + 1);
            }
        }
        Ok(())
    }

    /// Applies one record of the offsets log to the state.
    fn apply(&mut self, path: &Path, offset: u64, key: Option<&[u8]>, value: &[u8]) -> Result<()> {
        let (key, stored) = decode_record(key, value).map_err(|_| Error::Corrupt {
            path: path.to_path_buf(),
            position: 0,
            source: FormatError::Invalid {
                what: "consumer offset record at offset",
                value: offset,
            },
        })?;
        match stored {
            Some(s) => self.state.insert(key, s),
            None => self.state.remove(&key),
        };
        Ok(())
    }

    /// Reads the state again from the log.
    pub fn reload(&mut self) -> Result<()> {
        self.load()
    }

    /// The committed state.
    pub fn state(&self) -> &BTreeMap<Key, Stored> {
        &self.state
    }

    /// Records in the offsets log (for tests and `groups describe`).
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The directory of the offsets log in use.
    pub fn log_dir(&self) -> &Path {
        self.log.dir()
    }

    /// Appends the commits (or, with `None`, deletions) as one batch and waits until durable.
    pub fn commit(&mut self, commits: &[(Key, Option<Stored>)]) -> Result<()> {
        if commits.is_empty() {
            return Ok(());
        }
        let keys: Vec<Vec<u8>> = commits
            .iter()
            .map(|((g, t, p), _)| fs::encode_offset_key(g, t, *p))
            .collect();
        let values: Vec<Vec<u8>> = commits
            .iter()
            .map(|(_, c)| c.as_ref().map_or(Vec::new(), |c| encode_value(c).to_vec()))
            .collect();
        let batch = keyed_batch(
            keys.iter().zip(&values).map(|(k, v)| (&k[..], &v[..])),
            now_ms(),
        )?;
        self.log.append(&batch)?.receipt.wait()?;
        self.records += commits.len() as u64;
        for (key, c) in commits {
            match c {
                Some(c) => self.state.insert(key.clone(), *c),
                None => self.state.remove(key),
            };
        }
        if self.records >= COMPACT_MIN_RECORDS
            && self.records > 4 * self.state.len() as u64
            && let Err(e) = self.compact()
        {
            tracing::warn!(error = %e, "compacting the consumer offsets log failed; it keeps growing until the next try");
        }
        Ok(())
    }

    /// Writes the live state to a new generation and switches to it (see the module doc). The
    /// new generation starts at the old one's end offset, so offsets only rise: a follower
    /// caught up with the old generation goes on fetching from where it is.
    pub fn compact(&mut self) -> Result<()> {
        let ts = now_ms();
        let entries: Vec<(Vec<u8>, [u8; fs::OFFSET_VALUE_LEN])> = self
            .state
            .iter()
            .map(|((g, t, p), c)| (fs::encode_offset_key(g, t, *p), encode_value(c)))
            .collect();
        let live = entries.len() as u64;
        self.switch_generation(self.log.end_offset(), |log| {
            for chunk in entries.chunks(4096) {
                let batch = keyed_batch(chunk.iter().map(|(k, v)| (&k[..], &v[..])), ts)?;
                log.append(&batch)?.receipt.wait()?;
            }
            Ok(())
        })?;
        self.records = live;
        tracing::info!(
            generation = self.generation,
            live,
            "compacted the consumer offsets log"
        );
        Ok(())
    }

    /// Creates the next generation starting at offset `start` in the current epoch, lets `fill`
    /// write it, makes it durable, then points the store at it and removes the old one. A crash
    /// before the pointer is replaced leaves the old generation in charge.
    fn switch_generation(
        &mut self,
        start: u64,
        fill: impl FnOnce(&Log) -> Result<()>,
    ) -> Result<()> {
        let generation = self.generation + 1;
        let new_dir = log_dir(&self.dir, generation);
        remove_dir_files(self.storage.as_ref(), &new_dir)?;
        let log = Log::open(
            &new_dir,
            LogOptions {
                initial_offset: start,
                ..log_options(&self.storage)
            },
        )?;
        log.set_leader_epoch(self.log.leader_epoch())?;
        fill(&log)?;
        log.flush()?;
        write_generation(self.storage.as_ref(), &self.dir, generation)?;
        let old = std::mem::replace(&mut self.log, Arc::new(log));
        let old_dir = old.dir().to_path_buf();
        if let Err(e) = old.close() {
            tracing::warn!(error = %e, "closing the old consumer offsets log failed");
        }
        self.generation = generation;
        remove_dir_files(self.storage.as_ref(), &old_dir)?;
        Ok(())
    }

    /// The offsets log in use (a leader serves it to its followers like a partition).
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// A follower's append: the leader's batches of the offsets log, unchanged at the leader's
    /// offsets ([`Log::append_replica`]), durable before the state takes them in.
    pub fn append_replica(&mut self, batches: &[Batch]) -> Result<()> {
        self.log.append_replica(batches)?.receipt.wait()?;
        let path = self.log.dir().to_path_buf();
        for batch in batches {
            let corrupt = |source| Error::Corrupt {
                path: path.clone(),
                position: 0,
                source,
            };
            for r in batch.records().map_err(corrupt)? {
                let r = r.map_err(corrupt)?;
                self.records += 1;
                self.apply(&path, r.offset, r.key.as_deref(), &r.value)?;
            }
        }
        Ok(())
    }

    /// A follower's cut of a divergent suffix at `at`; the state is read again from the log.
    pub fn truncate(&mut self, at: u64) -> Result<()> {
        self.log.truncate(at)?;
        self.load()
    }

    /// A follower whose position is below the leader's start (the leader compacted while it
    /// lagged): starts a new, empty generation at `start`; the fetches that follow fill it with
    /// the leader's compacted state. Until they do, the state is empty.
    pub fn restart_at(&mut self, start: u64) -> Result<()> {
        self.switch_generation(start, |_| Ok(()))?;
        self.state.clear();
        self.records = 0;
        Ok(())
    }

    /// Sets the leader epoch of the offsets log (a promote, like every partition's).
    pub fn set_leader_epoch(&self, epoch: u64) -> Result<()> {
        self.log.set_leader_epoch(epoch)
    }

    /// Closes the offsets log cleanly.
    pub fn close(self) -> Result<()> {
        self.log.close()
    }
}

pub(crate) fn read_generation(storage: &dyn Storage, dir: &Path) -> Result<u64> {
    let path = dir.join(GENERATION_FILE);
    if !storage.exists(&path) {
        return Ok(0);
    }
    let file = storage.open(&path, OpenMode::Existing).ctx("open", &path)?;
    let bytes = read_all(file.as_ref()).ctx("read", &path)?;
    fs::decode_generation(&bytes).map_err(|source| Error::Corrupt {
        path,
        position: 0,
        source,
    })
}

fn write_generation(storage: &dyn Storage, dir: &Path, generation: u64) -> Result<()> {
    replace_file(
        storage,
        &dir.join(GENERATION_FILE),
        &fs::encode_generation(generation),
    )
}

/// One uncompressed batch of keyed records, all stamped `ts`.
fn keyed_batch<'a>(
    records: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    ts: i64,
) -> Result<BatchBuilder> {
    let mut batch = BatchBuilder::new(Compression::None);
    for (key, value) in records {
        batch
            .push(&Record {
                timestamp: ts,
                key: Some(key),
                value,
                headers: &[],
            })
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
    }
    Ok(batch)
}
