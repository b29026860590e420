//! Topic settings, partitioner versions and the store's registry file (`stratalog.store`).
//!
//! The registry holds every topic of a store in one small file, replaced whole on every change
//! (write `stratalog.store.tmp`, fsync, rename, fsync the directory), so that a crash leaves
//! either the old or the new registry. Its layout is in docs/FORMAT.md ("Store").

use std::path::Path;
use std::time::Duration;

use crate::error::{Error, IoContext, Result};
use crate::format::{Compression, FormatError};
use crate::log::{FsyncPolicy, LogConfig};
use crate::storage::{OpenMode, Storage, read_all};

use super::partitioner::{Partitioner, PartitionerKind};

/// Name of the registry file in the store's directory.
pub const REGISTRY_NAME: &str = "stratalog.store";
/// Magic of the registry file.
pub const REGISTRY_MAGIC: [u8; 8] = *b"STRASTO\0";
/// Registry format version this build writes and reads.
pub const REGISTRY_VERSION: u32 = 1;
/// Length of the registry's header.
const HEADER_LEN: usize = 32;
/// Longest topic name.
pub const MAX_TOPIC_NAME: usize = 200;
/// Most partitions a topic may have.
pub const MAX_PARTITIONS: u32 = 1 << 20;

/// Settings of a topic, applied to each of its partitions.
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

/// A topic: its name, settings and partitioner history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// The topic's name.
    pub name: String,
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

/// Encodes the registry: header, then one entry per topic.
pub(crate) fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut body = Vec::new();
    for e in entries {
        let t = &e.info;
        body.extend_from_slice(&(t.name.len() as u16).to_le_bytes());
        body.extend_from_slice(t.name.as_bytes());
        body.push(u8::from(e.deleting));
        let (fk, fv) = fsync_encode(t.config.fsync);
        body.push(fk);
        body.extend_from_slice(&fv.to_le_bytes());
        let c = &t.config.log;
        for v in [
            c.segment_bytes,
            c.segment_ms.unwrap_or(0),
            c.retention_bytes.unwrap_or(u64::MAX),
            c.retention_ms.unwrap_or(u64::MAX),
        ] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        body.extend_from_slice(&c.index_interval_bytes.to_le_bytes());
        body.push(u8::from(c.compression == Compression::Lz4));
        body.extend_from_slice(&(t.versions.len() as u32).to_le_bytes());
        for v in &t.versions {
            let (kind, vnodes) = v.kind.encode();
            body.extend_from_slice(&v.version.to_le_bytes());
            body.extend_from_slice(&v.partitions.to_le_bytes());
            body.push(kind);
            body.extend_from_slice(&vnodes.to_le_bytes());
            body.extend_from_slice(&v.created_ms.to_le_bytes());
            body.extend_from_slice(&(v.start_offsets.len() as u32).to_le_bytes());
            for o in &v.start_offsets {
                body.extend_from_slice(&o.to_le_bytes());
            }
        }
    }
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&REGISTRY_MAGIC);
    out.extend_from_slice(&REGISTRY_VERSION.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    let header_crc = crc32fast::hash(&out[..28]);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Reads fields from a byte slice, failing with the position of a short read.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], (u64, FormatError)> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err((
                self.pos as u64,
                FormatError::Truncated {
                    what,
                    needed: n as u64,
                    available: (self.buf.len() - self.pos) as u64,
                },
            ));
        };
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, (u64, FormatError)> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, (u64, FormatError)> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, (u64, FormatError)> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, (u64, FormatError)> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }
    fn invalid(&self, what: &'static str, value: u64) -> (u64, FormatError) {
        (self.pos as u64, FormatError::Invalid { what, value })
    }
}

/// Decodes and checks a registry file.
pub(crate) fn decode(buf: &[u8]) -> Result<Vec<Entry>, (u64, FormatError)> {
    let mut c = Cursor { buf, pos: 0 };
    let magic = c.take(8, "store registry header")?;
    if magic != REGISTRY_MAGIC {
        return Err((
            0,
            FormatError::BadMagic {
                what: "store registry header",
                found: u64::from_le_bytes(magic.try_into().unwrap()),
            },
        ));
    }
    let header_crc = crc32fast::hash(&buf[..28.min(buf.len())]);
    let version = c.u32("store registry header")?;
    let count = c.u32("store registry header")?;
    let body_len = c.u64("store registry header")?;
    let body_crc = c.u32("store registry header")?;
    let stored = c.u32("store registry header")?;
    if stored != header_crc {
        return Err((
            28,
            FormatError::ChecksumMismatch {
                what: "store registry header",
                stored,
                computed: header_crc,
            },
        ));
    }
    if version != REGISTRY_VERSION {
        return Err((
            8,
            FormatError::UnsupportedVersion {
                what: "store registry",
                found: version,
                supported: REGISTRY_VERSION,
            },
        ));
    }
    if body_len != (buf.len() - HEADER_LEN) as u64 {
        return Err((
            16,
            FormatError::Invalid {
                what: "store registry body length",
                value: body_len,
            },
        ));
    }
    let computed = crc32fast::hash(&buf[HEADER_LEN..]);
    if computed != body_crc {
        return Err((
            HEADER_LEN as u64,
            FormatError::ChecksumMismatch {
                what: "store registry body",
                stored: body_crc,
                computed,
            },
        ));
    }
    let mut entries = Vec::new();
    for _ in 0..count {
        let name_len = c.u16("topic name length")? as usize;
        let name = c.take(name_len, "topic name")?;
        let name = std::str::from_utf8(name)
            .ok()
            .filter(|n| check_topic_name(n).is_ok())
            .ok_or_else(|| c.invalid("topic name", name_len as u64))?
            .to_string();
        let deleting = match c.u8("topic state")? {
            0 => false,
            1 => true,
            other => return Err(c.invalid("topic state", other.into())),
        };
        let fk = c.u8("fsync kind")?;
        let fv = c.u64("fsync value")?;
        let fsync = fsync_decode(fk, fv).ok_or_else(|| c.invalid("fsync kind", fk.into()))?;
        let segment_bytes = c.u64("segment_bytes")?;
        let segment_ms = c.u64("segment_ms")?;
        let retention_bytes = c.u64("retention_bytes")?;
        let retention_ms = c.u64("retention_ms")?;
        let index_interval_bytes = c.u32("index_interval_bytes")?;
        let compression = match c.u8("compression")? {
            0 => Compression::None,
            1 => Compression::Lz4,
            other => return Err(c.invalid("compression", other.into())),
        };
        let limit = |v: u64| (v != u64::MAX).then_some(v);
        let log = LogConfig {
            segment_bytes,
            segment_ms: (segment_ms != 0).then_some(segment_ms),
            retention_bytes: limit(retention_bytes),
            retention_ms: limit(retention_ms),
            index_interval_bytes,
            compression,
        };
        if log.check().is_err() {
            return Err(c.invalid("topic log settings", segment_bytes));
        }
        let n_versions = c.u32("partitioner version count")?;
        if n_versions == 0 {
            return Err(c.invalid("partitioner version count", 0));
        }
        let mut versions: Vec<PartitionerVersion> = Vec::new();
        for _ in 0..n_versions {
            let version = c.u32("partitioner version")?;
            let partitions = c.u32("partition count")?;
            let kind = c.u8("partitioner kind")?;
            let vnodes = c.u32("partitioner vnodes")?;
            let created_ms = c.u64("partitioner version time")? as i64;
            let n = c.u32("start offset count")?;
            let kind = PartitionerKind::decode(kind, vnodes)
                .ok_or_else(|| c.invalid("partitioner kind", kind.into()))?;
            let previous = versions.last().map(|v| (v.version, v.partitions));
            let sound = (1..=MAX_PARTITIONS).contains(&partitions)
                && match previous {
                    None => version == 1 && n == 0,
                    Some((pv, pp)) => version == pv + 1 && partitions >= pp && n == pp,
                };
            if !sound {
                return Err(c.invalid("partitioner version", version.into()));
            }
            let mut start_offsets = Vec::with_capacity(n as usize);
            for _ in 0..n {
                start_offsets.push(c.u64("start offset")?);
            }
            versions.push(PartitionerVersion {
                version,
                partitions,
                kind,
                created_ms,
                start_offsets,
            });
        }
        entries.push(Entry {
            info: TopicInfo {
                name,
                config: TopicConfig { log, fsync },
                versions,
            },
            deleting,
        });
    }
    if c.pos != buf.len() {
        return Err(c.invalid("store registry trailing bytes", (buf.len() - c.pos) as u64));
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
