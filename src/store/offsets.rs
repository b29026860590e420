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
//! Record layout (docs/FORMAT.md, "Consumer offsets"):
//! key = `u16 group_len | group | u16 topic_len | topic | u32 partition`,
//! value = `u8 version (1) | u64 offset | u64 leader_epoch | i64 commit_ms` (empty = deleted).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, IoContext, Result};
use crate::format::{BatchBuilder, Compression, FormatError, Record};
use crate::log::{FsyncPolicy, Log, LogConfig, LogOptions, now_ms};
use crate::storage::{OpenMode, Storage, read_all};

use super::topic::replace_file;

/// Directory name of the offsets log of generation 0; later generations add `.<generation>`.
pub const OFFSETS_LOG: &str = "__consumer_offsets";
/// The pointer file naming the current generation of the offsets log (absent = generation 0).
pub const GENERATION_FILE: &str = "consumer_offsets.generation";
/// Magic of the pointer file.
pub const GENERATION_MAGIC: [u8; 8] = *b"STRAOFG\0";
/// Version byte of an offset commit value.
const VALUE_VERSION: u8 = 1;
/// The offsets log is compacted only once it holds at least this many records.
pub const COMPACT_MIN_RECORDS: u64 = 10_000;

/// A group's committed position in one partition.
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

fn encode_key(group: &str, topic: &str, partition: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + group.len() + topic.len());
    k.extend_from_slice(&(group.len() as u16).to_le_bytes());
    k.extend_from_slice(group.as_bytes());
    k.extend_from_slice(&(topic.len() as u16).to_le_bytes());
    k.extend_from_slice(topic.as_bytes());
    k.extend_from_slice(&partition.to_le_bytes());
    k
}

fn decode_key(k: &[u8]) -> Option<Key> {
    let take_str = |k: &[u8], at: usize| -> Option<(String, usize)> {
        let len = u16::from_le_bytes(k.get(at..at + 2)?.try_into().ok()?) as usize;
        let s = std::str::from_utf8(k.get(at + 2..at + 2 + len)?).ok()?;
        Some((s.to_string(), at + 2 + len))
    };
    let (group, at) = take_str(k, 0)?;
    let (topic, at) = take_str(k, at)?;
    let partition = u32::from_le_bytes(k.get(at..at + 4)?.try_into().ok()?);
    (at + 4 == k.len()).then_some((group, topic, partition))
}

fn encode_value(c: &Committed) -> [u8; 25] {
    let mut v = [0u8; 25];
    v[0] = VALUE_VERSION;
    v[1..9].copy_from_slice(&c.offset.to_le_bytes());
    v[9..17].copy_from_slice(&c.leader_epoch.to_le_bytes());
    v[17..25].copy_from_slice(&c.commit_ms.to_le_bytes());
    v
}

fn decode_value(v: &[u8]) -> Option<Committed> {
    if v.len() != 25 || v[0] != VALUE_VERSION {
        return None;
    }
    Some(Committed {
        offset: u64::from_le_bytes(v[1..9].try_into().ok()?),
        leader_epoch: u64::from_le_bytes(v[9..17].try_into().ok()?),
        commit_ms: i64::from_le_bytes(v[17..25].try_into().ok()?),
    })
}

fn log_dir(dir: &Path, generation: u64) -> PathBuf {
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
    // The storage trait has no way to remove a directory: on the real file system the empty
    // directory goes too (with a simulated storage there is nothing on disk to remove).
    let _ = std::fs::remove_dir(dir);
    Ok(())
}

/// The open offsets log and the state read from it.
#[derive(Debug)]
pub(crate) struct Offsets {
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    generation: u64,
    log: Log,
    state: BTreeMap<Key, Committed>,
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
        let log = Log::open(log_dir(dir, generation), log_options(storage))?;
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
        let log = Log::open(&log_dir, options)?;
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
        let log = &self.log;
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
                    let bad = || Error::Corrupt {
                        path: path.clone(),
                        position: 0,
                        source: FormatError::Invalid {
                            what: "consumer offset record at offset",
                            value: r.offset,
                        },
                    };
                    let key = r.key.as_deref().and_then(decode_key).ok_or_else(bad)?;
                    if r.value.is_empty() {
                        self.state.remove(&key);
                    } else {
                        let c = decode_value(&r.value).ok_or_else(bad)?;
                        self.state.insert(key, c);
                    }
                }
                next = next.max(batch.last_offset() + 1);
            }
        }
        Ok(())
    }

    /// The committed state.
    pub fn state(&self) -> &BTreeMap<Key, Committed> {
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
    pub fn commit(&mut self, commits: &[(Key, Option<Committed>)]) -> Result<()> {
        if commits.is_empty() {
            return Ok(());
        }
        let keys: Vec<Vec<u8>> = commits
            .iter()
            .map(|((g, t, p), _)| encode_key(g, t, *p))
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

    /// Writes the live state to a new generation and switches to it (see the module doc).
    pub fn compact(&mut self) -> Result<()> {
        let generation = self.generation + 1;
        let new_dir = log_dir(&self.dir, generation);
        remove_dir_files(self.storage.as_ref(), &new_dir)?;
        let log = Log::open(&new_dir, log_options(&self.storage))?;
        let ts = now_ms();
        let entries: Vec<(Vec<u8>, [u8; 25])> = self
            .state
            .iter()
            .map(|((g, t, p), c)| (encode_key(g, t, *p), encode_value(c)))
            .collect();
        for chunk in entries.chunks(4096) {
            let batch = keyed_batch(chunk.iter().map(|(k, v)| (&k[..], &v[..])), ts)?;
            log.append(&batch)?.receipt.wait()?;
        }
        log.flush()?;
        write_generation(self.storage.as_ref(), &self.dir, generation)?;
        let old = std::mem::replace(&mut self.log, log);
        let old_dir = old.dir().to_path_buf();
        if let Err(e) = old.close() {
            tracing::warn!(error = %e, "closing the old consumer offsets log failed");
        }
        self.generation = generation;
        self.records = self.state.len() as u64;
        remove_dir_files(self.storage.as_ref(), &old_dir)?;
        tracing::info!(
            generation,
            live = self.records,
            "compacted the consumer offsets log"
        );
        Ok(())
    }

    /// Closes the offsets log cleanly.
    pub fn close(self) -> Result<()> {
        self.log.close()
    }
}

fn read_generation(storage: &dyn Storage, dir: &Path) -> Result<u64> {
    let path = dir.join(GENERATION_FILE);
    if !storage.exists(&path) {
        return Ok(0);
    }
    let file = storage.open(&path, OpenMode::Existing).ctx("open", &path)?;
    let bytes = read_all(file.as_ref()).ctx("read", &path)?;
    let corrupt = |source| Error::Corrupt {
        path: path.clone(),
        position: 0,
        source,
    };
    if bytes.len() != 20 {
        return Err(corrupt(FormatError::Truncated {
            what: "consumer offsets generation",
            needed: 20,
            available: bytes.len() as u64,
        }));
    }
    if bytes[..8] != GENERATION_MAGIC {
        return Err(corrupt(FormatError::BadMagic {
            what: "consumer offsets generation",
            found: u64::from_le_bytes(bytes[..8].try_into().unwrap()),
        }));
    }
    let stored = u32::from_le_bytes(bytes[16..20].try_into().unwrap());
    let computed = crc32fast::hash(&bytes[..16]);
    if stored != computed {
        return Err(corrupt(FormatError::ChecksumMismatch {
            what: "consumer offsets generation",
            stored,
            computed,
        }));
    }
    Ok(u64::from_le_bytes(bytes[8..16].try_into().unwrap()))
}

fn write_generation(storage: &dyn Storage, dir: &Path, generation: u64) -> Result<()> {
    let mut bytes = GENERATION_MAGIC.to_vec();
    bytes.extend_from_slice(&generation.to_le_bytes());
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    replace_file(storage, &dir.join(GENERATION_FILE), &bytes)
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
