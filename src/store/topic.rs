//! Topic settings, partitioner versions and the store's registry file (`stratalog.store`).
//!
//! The registry holds every topic of a store in one small file, replaced whole on every change
//! (write `stratalog.store.tmp`, fsync, rename, fsync the directory), so that a crash leaves
//! either the old or the new registry. Its layout is in docs/FORMAT.md ("Store").

use std::path::Path;
use std::time::Duration;

use crate::error::{Error, IoContext, Result};
use crate::format::store as fs;
use crate::format::{Compression, FormatError};
use crate::log::{FsyncPolicy, LogConfig};
use crate::storage::{OpenMode, Storage, read_all};

use super::partitioner::{Partitioner, PartitionerKind};

/// Name of the registry file in the store's directory.
pub const REGISTRY_NAME: &str = "stratalog.store";
/// Longest topic name.
pub const MAX_TOPIC_NAME: usize = 200;
/// Most partitions a topic may have.
pub const MAX_PARTITIONS: u32 = 1 << 20;

/// Settings of a topic, applied to each of its partitions.
///
/// # Examples
///
/// ```
/// use stratalog::{FsyncPolicy, PartitionerKind, Store, StoreOptions, TopicConfig};
///
/// # fn main() -> stratalog::Result<()> {
/// let tmp = tempfile::tempdir().unwrap();
/// let store = Store::open(tmp.path(), StoreOptions::default())?;
/// store.create_topic("metrics", 1, TopicConfig::default(), PartitionerKind::Jump)?;
/// // Change a setting of an existing topic; the others stay.
/// let mut config = store.topic("metrics")?.config;
/// config.fsync = FsyncPolicy::Never;
/// config.log.retention_ms = Some(3_600_000);
/// let info = store.set_topic_config("metrics", config)?;
/// assert_eq!(info.config.fsync, FsyncPolicy::Never);
/// assert_eq!(info.config.log.segment_bytes, TopicConfig::default().log.segment_bytes);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicConfig {
    /// Segment size, segment age, retention, index interval and compression of every partition.
    pub log: LogConfig,
    /// When appends to the topic's partitions are made durable. A change applies to partitions
    /// opened after it (the next time the store is opened for partitions already open).
    pub fsync: FsyncPolicy,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            log: LogConfig::default(),
            fsync: FsyncPolicy::Always,
        }
    }
}

/// One version of a topic's partitioning: created with the topic (version 1) and each time
/// partitions are added or the partitioner changes.
///
/// # Examples
///
/// ```
/// use stratalog::{PartitionerKind, Store, StoreOptions, TopicConfig};
///
/// # fn main() -> stratalog::Result<()> {
/// let tmp = tempfile::tempdir().unwrap();
/// let store = Store::open(tmp.path(), StoreOptions::default())?;
/// store.create_topic("orders", 2, TopicConfig::default(), PartitionerKind::Jump)?;
/// store.partition("orders", 0)?.append_records(&["a", "b"])?.receipt.wait()?;
/// let info = store.add_partitions("orders", 3)?;
/// let v2 = info.current();
/// assert_eq!((v2.version, v2.partitions), (2, 3));
/// // Partition 0's records from offset 2 on were produced under version 2.
/// assert_eq!(v2.start_offsets, vec![2, 0]);
/// assert_eq!(v2.partitioner().partitions(), 3);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionerVersion {
    /// 1 for the topic's creation, then +1 per change.
    pub version: u32,
    /// The number of partitions from this version on.
    pub partitions: u32,
    /// The strategy from this version on.
    pub kind: PartitionerKind,
    /// When the version was made (milliseconds since the Unix epoch).
    pub created_ms: i64,
    /// For each partition that existed before this version, its end offset when the version
    /// was made: records at or above it were produced under this version, records below it
    /// under an earlier one. Empty for version 1.
    pub start_offsets: Vec<u64>,
}

impl PartitionerVersion {
    /// A partitioner for this version.
    pub fn partitioner(&self) -> Partitioner {
        Partitioner::new(self.kind, self.partitions).expect("checked when the version was made")
    }
}

/// A topic's id: which incarnation of a topic name this is (as Kafka's KIP-516 topic ids). A
/// topic deleted and created again under the same name gets a new id, and a consumer offset
/// commit names the id it was made for, so it never applies to a later topic of that name.
///
/// # Examples
///
/// ```
/// use stratalog::{PartitionerKind, Store, StoreOptions, TopicConfig};
/// use stratalog::store::TopicId;
///
/// # fn main() -> stratalog::Result<()> {
/// assert_ne!(TopicId::generate(), TopicId::LEGACY);
/// let tmp = tempfile::tempdir().unwrap();
/// let store = Store::open(tmp.path(), StoreOptions::default())?;
/// let first = store.create_topic("orders", 1, TopicConfig::default(), PartitionerKind::Jump)?.id;
/// store.delete_topic("orders")?;
/// // The same name again is another topic, with another id.
/// let second = store.create_topic("orders", 1, TopicConfig::default(), PartitionerKind::Jump)?.id;
/// assert_ne!(first, second);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TopicId(pub [u8; 16]);

impl TopicId {
    /// The id of topics created before topics had ids (read from a version 1 registry), and of
    /// the offset commits made before then.
    pub const LEGACY: TopicId = TopicId([0; 16]);

    /// A new random id (never [`TopicId::LEGACY`]).
    pub fn generate() -> TopicId {
        use std::hash::{BuildHasher, Hasher};
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut id = [0u8; 16];
        for (i, half) in id.chunks_mut(8).enumerate() {
            // `RandomState` keys come from the operating system's random source.
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(nanos);
            h.write_u64(count);
            h.write_u32(std::process::id());
            h.write_usize(i);
            half.copy_from_slice(&h.finish().to_le_bytes());
        }
        if id == [0; 16] {
            id[0] = 1;
        }
        TopicId(id)
    }
}

impl std::fmt::Display for TopicId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A topic: its name, id, settings and partitioner history.
///
/// # Examples
///
/// ```
/// use stratalog::{PartitionerKind, Store, StoreOptions, TopicConfig};
///
/// # fn main() -> stratalog::Result<()> {
/// let tmp = tempfile::tempdir().unwrap();
/// let store = Store::open(tmp.path(), StoreOptions::default())?;
/// store.create_topic("orders", 2, TopicConfig::default(), PartitionerKind::Modulo)?;
/// store.set_partitioner("orders", PartitionerKind::Jump)?;
/// let info = store.topic("orders")?;
/// assert_eq!(info.name, "orders");
/// assert_eq!(info.partitions(), 2);
/// // Every partitioner version is kept, oldest first.
/// assert_eq!(info.versions.len(), 2);
/// assert_eq!(info.version(1).map(|v| v.kind), Some(PartitionerKind::Modulo));
/// assert_eq!(info.current().kind, PartitionerKind::Jump);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// The topic's name.
    pub name: String,
    /// The topic's id: a topic deleted and created again under its name gets a new one.
    pub id: TopicId,
    /// Its settings.
    pub config: TopicConfig,
    /// Every partitioner version, oldest first (never empty).
    pub versions: Vec<PartitionerVersion>,
}

impl TopicInfo {
    /// The current number of partitions.
    pub fn partitions(&self) -> u32 {
        self.current().partitions
    }

    /// The current partitioner version.
    pub fn current(&self) -> &PartitionerVersion {
        self.versions.last().expect("a topic has a version")
    }

    /// The partitioner version `version`, if there is one.
    pub fn version(&self, version: u32) -> Option<&PartitionerVersion> {
        self.versions.iter().find(|v| v.version == version)
    }
}

/// Checks a topic name: 1 to 200 characters of `[A-Za-z0-9._-]`, not `.` or `..`, not starting
/// with `__` (reserved for the store's own logs).
pub fn check_topic_name(name: &str) -> Result<()> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if name.is_empty()
        || name.len() > MAX_TOPIC_NAME
        || !ok_chars
        || name == "."
        || name == ".."
        || name.starts_with("__")
    {
        return Err(Error::InvalidArgument(format!(
            "invalid topic name {name:?}: use 1 to {MAX_TOPIC_NAME} characters of A-Z a-z 0-9 . _ - \
             (not \".\", \"..\", and not starting with \"__\")"
        )));
    }
    Ok(())
}

/// A topic as stored in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub info: TopicInfo,
    /// Deletion started: the partition files are being removed. Such a topic is invisible; the
    /// next open finishes the deletion.
    pub deleting: bool,
}

fn fsync_encode(p: FsyncPolicy) -> (u8, u64) {
    match p {
        FsyncPolicy::Always => (0, 0),
        FsyncPolicy::Never => (1, 0),
        FsyncPolicy::Interval(d) => (2, d.as_millis().min(u128::from(u64::MAX)) as u64),
        FsyncPolicy::Bytes(n) => (3, n),
    }
}

fn fsync_decode(kind: u8, value: u64) -> Option<FsyncPolicy> {
    Some(match kind {
        0 => FsyncPolicy::Always,
        1 => FsyncPolicy::Never,
        2 => FsyncPolicy::Interval(Duration::from_millis(value)),
        3 => FsyncPolicy::Bytes(value),
        _ => return None,
    })
}

/// Encodes the registry (in the current version, see [`crate::format::store`]).
pub(crate) fn encode(entries: &[Entry]) -> Vec<u8> {
    let topics: Vec<fs::RegistryTopic> = entries
        .iter()
        .map(|e| {
            let t = &e.info;
            let (fsync_kind, fsync_value) = fsync_encode(t.config.fsync);
            let c = &t.config.log;
            fs::RegistryTopic {
                name: t.name.clone(),
                settings: fs::TopicSettings {
                    state: u8::from(e.deleting),
                    fsync_kind,
                    fsync_value: fsync_value.into(),
                    segment_bytes: c.segment_bytes.into(),
                    segment_ms: c.segment_ms.unwrap_or(0).into(),
                    retention_bytes: c.retention_bytes.unwrap_or(u64::MAX).into(),
                    retention_ms: c.retention_ms.unwrap_or(u64::MAX).into(),
                    index_interval_bytes: c.index_interval_bytes.into(),
                    compression: u8::from(c.compression == Compression::Lz4),
                },
                topic_id: t.id.0,
                versions: t
                    .versions
                    .iter()
                    .map(|v| {
                        let (kind, vnodes) = v.kind.encode();
                        fs::RegistryVersion {
                            fixed: fs::PartitionerVersionFixed {
                                version: v.version.into(),
                                partitions: v.partitions.into(),
                                kind,
                                vnodes: vnodes.into(),
                                created_ms: v.created_ms.into(),
                                start_count: (v.start_offsets.len() as u32).into(),
                            },
                            start_offsets: v.start_offsets.clone(),
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    fs::encode_registry(&topics)
}

/// Decodes and checks a registry file (version 1 or 2): the layout in the format layer, then
/// every value (names, settings, partitioner history). Errors carry the byte position where
/// the layout is wrong, 0 for a value that is wrong.
pub(crate) fn decode(buf: &[u8]) -> Result<Vec<Entry>, (u64, FormatError)> {
    let registry = fs::decode_registry(buf)?;
    let invalid = |what: &'static str, value: u64| (0, FormatError::Invalid { what, value });
    let mut entries = Vec::with_capacity(registry.topics.len());
    for t in registry.topics {
        if check_topic_name(&t.name).is_err() {
            return Err(invalid("topic name", t.name.len() as u64));
        }
        let s = t.settings;
        let deleting = match s.state {
            0 => false,
            1 => true,
            other => return Err(invalid("topic state", other.into())),
        };
        let fsync = fsync_decode(s.fsync_kind, s.fsync_value.get())
            .ok_or_else(|| invalid("fsync kind", s.fsync_kind.into()))?;
        let compression = match s.compression {
            0 => Compression::None,
            1 => Compression::Lz4,
            other => return Err(invalid("compression", other.into())),
        };
        let limit = |v: u64| (v != u64::MAX).then_some(v);
        let log = LogConfig {
            segment_bytes: s.segment_bytes.get(),
            segment_ms: (s.segment_ms.get() != 0).then_some(s.segment_ms.get()),
            retention_bytes: limit(s.retention_bytes.get()),
            retention_ms: limit(s.retention_ms.get()),
            index_interval_bytes: s.index_interval_bytes.get(),
            compression,
        };
        if log.check().is_err() {
            return Err(invalid("topic log settings", s.segment_bytes.get()));
        }
        if t.versions.is_empty() {
            return Err(invalid("partitioner version count", 0));
        }
        let mut versions: Vec<PartitionerVersion> = Vec::with_capacity(t.versions.len());
        for v in t.versions {
            let f = v.fixed;
            let (version, partitions) = (f.version.get(), f.partitions.get());
            let kind = PartitionerKind::decode(f.kind, f.vnodes.get())
                .ok_or_else(|| invalid("partitioner kind", f.kind.into()))?;
            let n = v.start_offsets.len() as u32;
            let sound = (1..=MAX_PARTITIONS).contains(&partitions)
                && match versions.last().map(|v| (v.version, v.partitions)) {
                    None => version == 1 && n == 0,
                    Some((pv, pp)) => {
                        pv.checked_add(1) == Some(version) && partitions >= pp && n == pp
                    }
                };
            if !sound {
                return Err(invalid("partitioner version", version.into()));
            }
            versions.push(PartitionerVersion {
                version,
                partitions,
                kind,
                created_ms: f.created_ms.get(),
                start_offsets: v.start_offsets,
            });
        }
        entries.push(Entry {
            info: TopicInfo {
                name: t.name,
                id: TopicId(t.topic_id),
                config: TopicConfig { log, fsync },
                versions,
            },
            deleting,
        });
    }
    Ok(entries)
}

/// Reads the registry in `dir`; `None` if there is none.
pub(crate) fn read(storage: &dyn Storage, dir: &Path) -> Result<Option<Vec<Entry>>> {
    let path = dir.join(REGISTRY_NAME);
    if !storage.exists(&path) {
        return Ok(None);
    }
    let file = storage.open(&path, OpenMode::Existing).ctx("open", &path)?;
    let bytes = read_all(file.as_ref()).ctx("read", &path)?;
    decode(&bytes)
        .map(Some)
        .map_err(|(position, source)| Error::Corrupt {
            path,
            position,
            source,
        })
}

/// Replaces the registry in `dir` durably.
pub(crate) fn write(storage: &dyn Storage, dir: &Path, entries: &[Entry]) -> Result<()> {
    replace_file(storage, &dir.join(REGISTRY_NAME), &encode(entries))
}

/// Replaces a file whole: `{name}.tmp`, fsync, rename, fsync the directory.
pub(crate) fn replace_file(storage: &dyn Storage, path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let file = storage
        .open(&tmp, OpenMode::CreateOrOpen)
        .ctx("create", &tmp)?;
    file.set_len(0).ctx("truncate", &tmp)?;
    file.write_at(bytes, 0).ctx("write", &tmp)?;
    file.sync().ctx("fsync", &tmp)?;
    storage.rename(&tmp, path).ctx("rename", path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    storage.sync_dir(dir).ctx("fsync directory", dir)
}
