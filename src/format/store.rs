//! The store's own files, bytes to structs and back: the registry (`stratalog.store`), the
//! consumer offset records and the offsets generation pointer (`consumer_offsets.generation`).
//! docs/FORMAT.md ("Store") is their byte map.
//!
//! Every fixed part is a zerocopy struct read in place; every length and count is checked
//! against the bytes at hand before it is used, so bad bytes give a [`FormatError`] (with the
//! byte position where that applies), never a panic.
//!
//! Versions: registry version 2 adds a 16-byte topic id (the topic's incarnation) to each
//! topic; version 1 registries are still read (their topics get the id 0). Offset commit value
//! version 2 adds the topic id the commit was made for; version 1 values are still read.

use zerocopy::little_endian::{I64, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::FormatError;

/// Magic of the registry file.
pub const REGISTRY_MAGIC: [u8; 8] = *b"STRASTO\0";
/// Registry version this build writes (it reads this one and [`REGISTRY_VERSION_V1`]).
pub const REGISTRY_VERSION: u32 = 2;
/// The first registry version (no topic ids), still read.
pub const REGISTRY_VERSION_V1: u32 = 1;
/// Length of the registry's header.
pub const REGISTRY_HEADER_LEN: usize = 32;
/// Magic of the offsets generation pointer file.
pub const GENERATION_MAGIC: [u8; 8] = *b"STRAOFG\0";
/// Length of the offsets generation pointer file.
pub const GENERATION_LEN: usize = 20;
/// Version byte of an offset commit value this build writes.
pub const OFFSET_VALUE_VERSION: u8 = 2;
/// Version byte of the first offset commit value layout (no topic id), still read.
pub const OFFSET_VALUE_VERSION_V1: u8 = 1;
/// Length of a version 1 offset commit value.
pub const OFFSET_VALUE_V1_LEN: usize = 25;
/// Length of a version 2 offset commit value.
pub const OFFSET_VALUE_LEN: usize = 41;

/// The header of the registry file.
///
/// # Examples
///
/// ```
/// use stratalog::format::store::{REGISTRY_MAGIC, REGISTRY_VERSION, RegistryHeader};
/// use stratalog::{PartitionerKind, Store, StoreOptions, TopicConfig};
/// use zerocopy::FromBytes;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let tmp = tempfile::tempdir()?;
/// let store = Store::open(tmp.path(), StoreOptions::default())?;
/// store.create_topic("a", 1, TopicConfig::default(), PartitionerKind::Jump)?;
/// store.create_topic("b", 1, TopicConfig::default(), PartitionerKind::Jump)?;
/// store.close()?;
/// let bytes = std::fs::read(tmp.path().join("stratalog.store"))?;
/// let (header, body) = RegistryHeader::read_from_prefix(&bytes).unwrap();
/// assert_eq!((header.magic, header.version.get()), (REGISTRY_MAGIC, REGISTRY_VERSION));
/// assert_eq!(header.topic_count.get(), 2);
/// assert_eq!(header.body_len.get(), body.len() as u64);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RegistryHeader {
    /// [`REGISTRY_MAGIC`].
    pub magic: [u8; 8],
    /// [`REGISTRY_VERSION`] (or [`REGISTRY_VERSION_V1`] in an old file).
    pub version: U32,
    /// Number of topic entries in the body.
    pub topic_count: U32,
    /// Bytes after the header.
    pub body_len: U64,
    /// CRC-32 of the body.
    pub body_crc: U32,
    /// CRC-32 of header bytes 0..28.
    pub header_crc: U32,
}

const _: () = assert!(size_of::<RegistryHeader>() == REGISTRY_HEADER_LEN);

/// The fixed part of a topic entry that follows its name: state and settings.
///
/// # Examples
///
/// ```
/// use stratalog::format::store::decode_registry;
/// use stratalog::{FsyncPolicy, LogConfig, PartitionerKind, Store, StoreOptions, TopicConfig};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let tmp = tempfile::tempdir()?;
/// let store = Store::open(tmp.path(), StoreOptions::default())?;
/// let log = LogConfig { segment_bytes: 1 << 20, ..Default::default() };
/// let config = TopicConfig { log, fsync: FsyncPolicy::Never };
/// store.create_topic("a", 1, config, PartitionerKind::Jump)?;
/// store.close()?;
/// let registry = decode_registry(&std::fs::read(tmp.path().join("stratalog.store"))?).unwrap();
/// let settings = registry.topics[0].settings;
/// assert_eq!((settings.state, settings.fsync_kind), (0, 1)); // live, never
/// assert_eq!(settings.segment_bytes.get(), 1 << 20);
/// assert_eq!(settings.retention_bytes.get(), u64::MAX); // no limit
/// # Ok(())
/// # }
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct TopicSettings {
    /// 0 live, 1 being deleted.
    pub state: u8,
    /// Fsync policy: 0 always, 1 never, 2 interval (ms in `fsync_value`), 3 bytes.
    pub fsync_kind: u8,
    /// The interval or the byte count of the fsync policy.
    pub fsync_value: U64,
    /// Segment size.
    pub segment_bytes: U64,
    /// Segment age (0: none).
    pub segment_ms: U64,
    /// Retention by size (`u64::MAX`: none).
    pub retention_bytes: U64,
    /// Retention by age (`u64::MAX`: none).
    pub retention_ms: U64,
    /// Bytes between index entries.
    pub index_interval_bytes: U32,
    /// 0 none, 1 LZ4.
    pub compression: u8,
}

const _: () = assert!(size_of::<TopicSettings>() == 47);

/// The fixed part of a partitioner version, followed by `start_count` u64 start offsets.
///
/// # Examples
///
/// ```
/// use stratalog::format::store::decode_registry;
/// use stratalog::{PartitionerKind, Store, StoreOptions, TopicConfig};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let tmp = tempfile::tempdir()?;
/// let store = Store::open(tmp.path(), StoreOptions::default())?;
/// store.create_topic("a", 3, TopicConfig::default(), PartitionerKind::Ring { vnodes: 16 })?;
/// store.close()?;
/// let registry = decode_registry(&std::fs::read(tmp.path().join("stratalog.store"))?).unwrap();
/// let fixed = registry.topics[0].versions[0].fixed;
/// assert_eq!((fixed.version.get(), fixed.partitions.get()), (1, 3));
/// assert_eq!((fixed.vnodes.get(), fixed.start_count.get()), (16, 0));
/// # Ok(())
/// # }
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct PartitionerVersionFixed {
    /// 1, 2, ...
    pub version: U32,
    /// Partitions from this version on.
    pub partitions: U32,
    /// Partitioner kind code.
    pub kind: u8,
    /// Virtual nodes of a ring partitioner (0 otherwise).
    pub vnodes: U32,
    /// When the version was made (ms since the Unix epoch).
    pub created_ms: I64,
    /// Number of start offsets that follow.
    pub start_count: U32,
}

const _: () = assert!(size_of::<PartitionerVersionFixed>() == 25);

/// One partitioner version as stored.
///
/// # Examples
///
/// ```
/// use stratalog::format::store::decode_registry;
/// use stratalog::{PartitionerKind, Store, StoreOptions, TopicConfig};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let tmp = tempfile::tempdir()?;
/// let store = Store::open(tmp.path(), StoreOptions::default())?;
/// store.create_topic("a", 2, TopicConfig::default(), PartitionerKind::Jump)?;
/// store.partition("a", 1)?.append_records(&["x"])?.receipt.wait()?;
/// store.add_partitions("a", 4)?;
/// store.close()?;
/// let registry = decode_registry(&std::fs::read(tmp.path().join("stratalog.store"))?).unwrap();
/// let v2 = &registry.topics[0].versions[1];
/// assert_eq!(v2.fixed.partitions.get(), 4);
/// // The end offsets of the two partitions that existed before version 2.
/// assert_eq!(v2.start_offsets, vec![0, 1]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryVersion {
    /// The fixed part.
    pub fixed: PartitionerVersionFixed,
    /// One start offset per partition of the previous version.
    pub start_offsets: Vec<u64>,
}

/// One topic entry as stored.
///
/// # Examples
///
/// ```
/// use stratalog::format::store::decode_registry;
/// use stratalog::{PartitionerKind, Store, StoreOptions, TopicConfig};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let tmp = tempfile::tempdir()?;
/// let store = Store::open(tmp.path(), StoreOptions::default())?;
/// let info = store.create_topic("orders", 1, TopicConfig::default(), PartitionerKind::Jump)?;
/// store.close()?;
/// let registry = decode_registry(&std::fs::read(tmp.path().join("stratalog.store"))?).unwrap();
/// let topic = &registry.topics[0];
/// assert_eq!(topic.name, "orders");
/// assert_eq!(topic.topic_id, info.id.0);
/// assert_eq!(topic.versions.len(), 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryTopic {
    /// The topic's name (UTF-8, at most `u16::MAX` bytes).
    pub name: String,
    /// State and settings.
    pub settings: TopicSettings,
    /// The topic's id (its incarnation); all zeros in a version 1 registry.
    pub topic_id: [u8; 16],
    /// Partitioner versions, oldest first.
    pub versions: Vec<RegistryVersion>,
}

/// A decoded registry.
///
/// # Examples
///
/// ```
/// use stratalog::format::store::{REGISTRY_VERSION, decode_registry, encode_registry};
/// use stratalog::{PartitionerKind, Store, StoreOptions, TopicConfig};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let tmp = tempfile::tempdir()?;
/// let store = Store::open(tmp.path(), StoreOptions::default())?;
/// store.create_topic("orders", 2, TopicConfig::default(), PartitionerKind::Modulo)?;
/// store.close()?;
/// let bytes = std::fs::read(tmp.path().join("stratalog.store"))?;
/// let registry = decode_registry(&bytes).unwrap();
/// assert_eq!((registry.version, registry.topics.len()), (REGISTRY_VERSION, 1));
/// // Encoding what was decoded gives the file's bytes back.
/// assert_eq!(encode_registry(&registry.topics), bytes);
/// // A cut file is an error with the byte position where decoding stopped.
/// let (position, _) = decode_registry(&bytes[..bytes.len() - 1]).unwrap_err();
/// assert!(position <= bytes.len() as u64);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    /// The version the file was written in.
    pub version: u32,
    /// Its topics.
    pub topics: Vec<RegistryTopic>,
}

/// Reads fixed-size parts off a byte slice, every length checked first.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn fail(&self, e: FormatError) -> (u64, FormatError) {
        (self.pos as u64, e)
    }

    fn truncated(&self, what: &'static str, needed: usize) -> (u64, FormatError) {
        self.fail(FormatError::Truncated {
            what,
            needed: needed as u64,
            available: self.remaining() as u64,
        })
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn get<T: FromBytes + KnownLayout + Immutable + Unaligned>(
        &mut self,
        what: &'static str,
    ) -> Result<T, (u64, FormatError)> {
        match T::read_from_prefix(&self.buf[self.pos..]) {
            Ok((value, _)) => {
                self.pos += size_of::<T>();
                Ok(value)
            }
            Err(_) => Err(self.truncated(what, size_of::<T>())),
        }
    }

    fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], (u64, FormatError)> {
        if n > self.remaining() {
            return Err(self.truncated(what, n));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn name(&mut self, what: &'static str) -> Result<String, (u64, FormatError)> {
        let len = usize::from(self.get::<U16>(what)?.get());
        let at = self.pos;
        let raw = self.bytes(len, what)?;
        std::str::from_utf8(raw).map(str::to_string).map_err(|_| {
            (
                at as u64,
                FormatError::Invalid {
                    what,
                    value: len as u64,
                },
            )
        })
    }
}

fn push_name(out: &mut Vec<u8>, name: &str) {
    // Names are checked (at most a few hundred bytes) before they reach the format layer.
    let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(U16::new(len).as_bytes());
    out.extend_from_slice(&name.as_bytes()[..usize::from(len)]);
}

/// Encodes a registry in the current version ([`REGISTRY_VERSION`]).
pub fn encode_registry(topics: &[RegistryTopic]) -> Vec<u8> {
    let mut body = Vec::new();
    for t in topics {
        push_name(&mut body, &t.name);
        body.extend_from_slice(t.settings.as_bytes());
        body.extend_from_slice(&t.topic_id);
        body.extend_from_slice(U32::new(t.versions.len() as u32).as_bytes());
        for v in &t.versions {
            let mut fixed = v.fixed;
            fixed.start_count = (v.start_offsets.len() as u32).into();
            body.extend_from_slice(fixed.as_bytes());
            for o in &v.start_offsets {
                body.extend_from_slice(U64::new(*o).as_bytes());
            }
        }
    }
    let mut header = RegistryHeader {
        magic: REGISTRY_MAGIC,
        version: REGISTRY_VERSION.into(),
        topic_count: (topics.len() as u32).into(),
        body_len: (body.len() as u64).into(),
        body_crc: crc32fast::hash(&body).into(),
        header_crc: 0.into(),
    };
    header.header_crc = crc32fast::hash(&header.as_bytes()[..28]).into();
    let mut out = Vec::with_capacity(REGISTRY_HEADER_LEN + body.len());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes a registry of version 1 or 2: checks magic, header CRC, version, body length and
/// body CRC, then reads every entry. Errors carry the byte position.
pub fn decode_registry(buf: &[u8]) -> Result<Registry, (u64, FormatError)> {
    let what = "store registry header";
    let mut r = Reader { buf, pos: 0 };
    let header: RegistryHeader = r.get(what)?;
    if header.magic != REGISTRY_MAGIC {
        return Err((
            0,
            FormatError::BadMagic {
                what,
                found: u64::from_le_bytes(header.magic),
            },
        ));
    }
    let computed = crc32fast::hash(&buf[..28]);
    if header.header_crc.get() != computed {
        return Err((
            28,
            FormatError::ChecksumMismatch {
                what,
                stored: header.header_crc.get(),
                computed,
            },
        ));
    }
    let version = header.version.get();
    if version != REGISTRY_VERSION && version != REGISTRY_VERSION_V1 {
        return Err((
            8,
            FormatError::UnsupportedVersion {
                what: "store registry",
                found: version,
                supported: REGISTRY_VERSION,
            },
        ));
    }
    let body = &buf[REGISTRY_HEADER_LEN..];
    if header.body_len.get() != body.len() as u64 {
        return Err((
            16,
            FormatError::Invalid {
                what: "store registry body length",
                value: header.body_len.get(),
            },
        ));
    }
    let computed = crc32fast::hash(body);
    if computed != header.body_crc.get() {
        return Err((
            REGISTRY_HEADER_LEN as u64,
            FormatError::ChecksumMismatch {
                what: "store registry body",
                stored: header.body_crc.get(),
                computed,
            },
        ));
    }
    let mut topics = Vec::new();
    for _ in 0..header.topic_count.get() {
        let name = r.name("topic name")?;
        let settings: TopicSettings = r.get("topic settings")?;
        let topic_id = if version == REGISTRY_VERSION_V1 {
            [0; 16]
        } else {
            r.get::<[u8; 16]>("topic id")?
        };
        let count = r.get::<U32>("partitioner version count")?.get();
        let mut versions = Vec::new();
        for _ in 0..count {
            let fixed: PartitionerVersionFixed = r.get("partitioner version")?;
            let n = fixed.start_count.get() as usize;
            if n.saturating_mul(8) > r.remaining() {
                return Err(r.truncated("start offsets", n.saturating_mul(8)));
            }
            let mut start_offsets = Vec::with_capacity(n);
            for _ in 0..n {
                start_offsets.push(r.get::<U64>("start offset")?.get());
            }
            versions.push(RegistryVersion {
                fixed,
                start_offsets,
            });
        }
        topics.push(RegistryTopic {
            name,
            settings,
            topic_id,
            versions,
        });
    }
    if r.remaining() != 0 {
        return Err(r.fail(FormatError::Invalid {
            what: "store registry trailing bytes",
            value: r.remaining() as u64,
        }));
    }
    Ok(Registry { version, topics })
}

/// The fixed layout of a version 1 offset commit value.
///
/// # Examples
///
/// ```
/// use stratalog::format::store::{OFFSET_VALUE_VERSION_V1, OffsetValueV1, decode_offset_value};
/// use zerocopy::IntoBytes;
///
/// # fn main() -> Result<(), stratalog::FormatError> {
/// let v1 = OffsetValueV1 {
///     version: OFFSET_VALUE_VERSION_V1,
///     offset: 7.into(),
///     leader_epoch: 1.into(),
///     commit_ms: 1_700_000_000_000.into(),
/// };
/// // Old values are still read; they name no topic id.
/// let value = decode_offset_value(v1.as_bytes())?;
/// assert_eq!((value.offset, value.leader_epoch, value.topic_id), (7, 1, [0; 16]));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct OffsetValueV1 {
    /// [`OFFSET_VALUE_VERSION_V1`].
    pub version: u8,
    /// The committed offset.
    pub offset: U64,
    /// The leader epoch of the commit.
    pub leader_epoch: U64,
    /// When it was committed (ms since the Unix epoch).
    pub commit_ms: I64,
}

const _: () = assert!(size_of::<OffsetValueV1>() == OFFSET_VALUE_V1_LEN);

/// The fixed layout of a version 2 offset commit value.
///
/// # Examples
///
/// ```
/// use stratalog::format::store::{
///     OFFSET_VALUE_VERSION, OffsetValue, OffsetValueV2, encode_offset_value,
/// };
/// use zerocopy::FromBytes;
///
/// let value = OffsetValue { offset: 7, leader_epoch: 1, commit_ms: 5, topic_id: [9; 16] };
/// let bytes = encode_offset_value(&value);
/// let raw = OffsetValueV2::read_from_bytes(&bytes).unwrap();
/// assert_eq!((raw.version, raw.offset.get(), raw.topic_id), (OFFSET_VALUE_VERSION, 7, [9; 16]));
/// ```
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct OffsetValueV2 {
    /// [`OFFSET_VALUE_VERSION`].
    pub version: u8,
    /// The committed offset.
    pub offset: U64,
    /// The leader epoch of the commit.
    pub leader_epoch: U64,
    /// When it was committed (ms since the Unix epoch).
    pub commit_ms: I64,
    /// The id of the topic (its incarnation) the commit was made for.
    pub topic_id: [u8; 16],
}

const _: () = assert!(size_of::<OffsetValueV2>() == OFFSET_VALUE_LEN);

/// A decoded offset commit value.
///
/// # Examples
///
/// ```
/// use stratalog::FormatError;
/// use stratalog::format::store::{OffsetValue, decode_offset_value, encode_offset_value};
///
/// # fn main() -> Result<(), FormatError> {
/// let value = OffsetValue { offset: 42, leader_epoch: 3, commit_ms: 1_700_000_000_000, topic_id: [1; 16] };
/// assert_eq!(decode_offset_value(&encode_offset_value(&value))?, value);
/// // An unknown version byte is refused.
/// let mut bytes = encode_offset_value(&value);
/// bytes[0] = 9;
/// assert!(matches!(decode_offset_value(&bytes), Err(FormatError::UnsupportedVersion { .. })));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetValue {
    /// The committed offset.
    pub offset: u64,
    /// The leader epoch of the commit.
    pub leader_epoch: u64,
    /// When it was committed (ms since the Unix epoch).
    pub commit_ms: i64,
    /// The topic id; all zeros for a version 1 value (made before topics had ids).
    pub topic_id: [u8; 16],
}

/// Encodes an offset commit key: `u16 group_len | group | u16 topic_len | topic | u32 partition`.
pub fn encode_offset_key(group: &str, topic: &str, partition: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + group.len() + topic.len());
    push_name(&mut k, group);
    push_name(&mut k, topic);
    k.extend_from_slice(U32::new(partition).as_bytes());
    k
}

/// Decodes an offset commit key into (group, topic, partition).
pub fn decode_offset_key(k: &[u8]) -> Result<(String, String, u32), FormatError> {
    let mut r = Reader { buf: k, pos: 0 };
    let group = r.name("offset key group").map_err(|(_, e)| e)?;
    let topic = r.name("offset key topic").map_err(|(_, e)| e)?;
    let partition = r.get::<U32>("offset key partition").map_err(|(_, e)| e)?;
    if r.remaining() != 0 {
        return Err(FormatError::Invalid {
            what: "offset key trailing bytes",
            value: r.remaining() as u64,
        });
    }
    Ok((group, topic, partition.get()))
}

/// Encodes an offset commit value in the current version.
pub fn encode_offset_value(v: &OffsetValue) -> [u8; OFFSET_VALUE_LEN] {
    let raw = OffsetValueV2 {
        version: OFFSET_VALUE_VERSION,
        offset: v.offset.into(),
        leader_epoch: v.leader_epoch.into(),
        commit_ms: v.commit_ms.into(),
        topic_id: v.topic_id,
    };
    let mut out = [0; OFFSET_VALUE_LEN];
    out.copy_from_slice(raw.as_bytes());
    out
}

/// Decodes an offset commit value of version 1 or 2 (an empty value is a deletion and is not
/// passed here).
pub fn decode_offset_value(v: &[u8]) -> Result<OffsetValue, FormatError> {
    let what = "offset commit value";
    match v.first() {
        Some(&OFFSET_VALUE_VERSION_V1) => {
            let raw = OffsetValueV1::read_from_bytes(v).map_err(|_| FormatError::Invalid {
                what: "offset commit value length",
                value: v.len() as u64,
            })?;
            Ok(OffsetValue {
                offset: raw.offset.get(),
                leader_epoch: raw.leader_epoch.get(),
                commit_ms: raw.commit_ms.get(),
                topic_id: [0; 16],
            })
        }
        Some(&OFFSET_VALUE_VERSION) => {
            let raw = OffsetValueV2::read_from_bytes(v).map_err(|_| FormatError::Invalid {
                what: "offset commit value length",
                value: v.len() as u64,
            })?;
            Ok(OffsetValue {
                offset: raw.offset.get(),
                leader_epoch: raw.leader_epoch.get(),
                commit_ms: raw.commit_ms.get(),
                topic_id: raw.topic_id,
            })
        }
        Some(&other) => Err(FormatError::UnsupportedVersion {
            what,
            found: other.into(),
            supported: OFFSET_VALUE_VERSION.into(),
        }),
        None => Err(FormatError::Truncated {
            what,
            needed: 1,
            available: 0,
        }),
    }
}

/// The offsets generation pointer file.
///
/// # Examples
///
/// ```
/// use stratalog::format::store::{
///     GENERATION_MAGIC, GenerationFile, decode_generation, encode_generation,
/// };
/// use zerocopy::FromBytes;
///
/// # fn main() -> Result<(), stratalog::FormatError> {
/// let bytes = encode_generation(3);
/// let file = GenerationFile::read_from_bytes(&bytes).unwrap();
/// assert_eq!((file.magic, file.generation.get()), (GENERATION_MAGIC, 3));
/// assert_eq!(decode_generation(&bytes)?, 3);
/// let mut torn = bytes;
/// torn[10] ^= 1;
/// assert!(decode_generation(&torn).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct GenerationFile {
    /// [`GENERATION_MAGIC`].
    pub magic: [u8; 8],
    /// The current generation of the offsets log.
    pub generation: U64,
    /// CRC-32 of bytes 0..16.
    pub crc: U32,
}

const _: () = assert!(size_of::<GenerationFile>() == GENERATION_LEN);

/// Encodes the generation pointer file.
pub fn encode_generation(generation: u64) -> [u8; GENERATION_LEN] {
    let mut file = GenerationFile {
        magic: GENERATION_MAGIC,
        generation: generation.into(),
        crc: 0.into(),
    };
    file.crc = crc32fast::hash(&file.as_bytes()[..16]).into();
    let mut out = [0; GENERATION_LEN];
    out.copy_from_slice(file.as_bytes());
    out
}

/// Decodes and checks the generation pointer file.
pub fn decode_generation(bytes: &[u8]) -> Result<u64, FormatError> {
    let what = "consumer offsets generation";
    let file = GenerationFile::read_from_bytes(bytes).map_err(|_| FormatError::Truncated {
        what,
        needed: GENERATION_LEN as u64,
        available: bytes.len() as u64,
    })?;
    if file.magic != GENERATION_MAGIC {
        return Err(FormatError::BadMagic {
            what,
            found: u64::from_le_bytes(file.magic),
        });
    }
    let computed = crc32fast::hash(&bytes[..16]);
    if file.crc.get() != computed {
        return Err(FormatError::ChecksumMismatch {
            what,
            stored: file.crc.get(),
            computed,
        });
    }
    Ok(file.generation.get())
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    fn topic(name: &str) -> RegistryTopic {
        RegistryTopic {
            name: name.into(),
            settings: TopicSettings::new_zeroed(),
            topic_id: [7; 16],
            versions: vec![RegistryVersion {
                fixed: PartitionerVersionFixed {
                    version: 1.into(),
                    partitions: 3.into(),
                    kind: 0,
                    vnodes: 0.into(),
                    created_ms: 5.into(),
                    start_count: 0.into(),
                },
                start_offsets: vec![],
            }],
        }
    }

    #[test]
    fn registry_round_trips_and_every_cut_is_an_error() {
        let topics = vec![topic("a"), topic("bb")];
        let bytes = encode_registry(&topics);
        let back = decode_registry(&bytes).unwrap();
        assert_eq!((back.version, back.topics), (REGISTRY_VERSION, topics));
        for cut in 0..bytes.len() {
            assert!(decode_registry(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn offset_values_of_both_versions_decode_and_bad_ones_do_not() {
        let v = OffsetValue {
            offset: 9,
            leader_epoch: 2,
            commit_ms: 3,
            topic_id: [1; 16],
        };
        assert_eq!(decode_offset_value(&encode_offset_value(&v)).unwrap(), v);
        let mut v1 = vec![1u8];
        for x in [9u64, 2, 3] {
            v1.extend_from_slice(&x.to_le_bytes());
        }
        let old = decode_offset_value(&v1).unwrap();
        assert_eq!((old.offset, old.topic_id), (9, [0; 16]));
        assert!(decode_offset_value(&v1[..24]).is_err());
        assert!(decode_offset_value(&[3; 41]).is_err());
        let key = encode_offset_key("g", "t", 4);
        assert_eq!(
            decode_offset_key(&key).unwrap(),
            ("g".into(), "t".into(), 4)
        );
        for cut in 0..key.len() {
            assert!(decode_offset_key(&key[..cut]).is_err());
        }
        assert_eq!(decode_generation(&encode_generation(7)).unwrap(), 7);
        assert!(decode_generation(&[0; 19]).is_err());
    }
}
