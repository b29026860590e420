//! The node protocol's frames: bytes to messages and back, with no I/O.
//!
//! `docs/REPLICATION.md` ("The protocol") is the byte map of everything here, and
//! `tests/protocol_doc.rs` checks that the two agree. All multi-byte integers are little-endian.
//!
//! ```text
//! frame  = { u32 len | u8 version | u8 kind | u16 flags (0) | u32 correlation | body[len - 8] }
//! str    = { u16 n | n bytes of UTF-8 }          (n <= MAX_STR_BYTES)
//! bytes  = { u32 n | n bytes }                   (n <= MAX_FRAME_BYTES)
//! ```
//!
//! Decoding never trusts a length: the frame length is checked against [`MAX_FRAME_BYTES`]
//! before anything is allocated, and every field is checked against the bytes of the frame at
//! hand. Bad bytes give a [`FrameError`], never a panic; the server closes that connection and
//! nothing else.
//!
//! A fetch response carries batch bytes exactly as they lie in a segment file, so a leader can
//! write its frame head ([`Message::encode_fetch_head`]) and then `sendfile` the batch bytes
//! behind it without copying them through user space.

use bytes::Bytes;

use crate::format::Compression;
use crate::log::{FsyncPolicy, LogConfig};
use crate::store::TopicConfig;

/// The protocol version this build speaks (the `version` byte of every frame).
pub const PROTOCOL_VERSION: u8 = 4;

/// Bytes of the frame head: `len`, `version`, `kind`, `flags`, `correlation`.
pub const FRAME_HEAD_LEN: usize = 12;

/// Largest frame body accepted (`len` field): a fetch or produce of up to 64 MiB of batches plus
/// its fields. A peer announcing more is refused before anything is allocated.
pub const MAX_FRAME_BYTES: u32 = (64 << 20) + (64 << 10);

/// Longest string field (topic, group, node id, address, message).
pub const MAX_STR_BYTES: usize = 4096;

/// Longest list (partitions in a status or metadata answer, followers of a partition).
pub const MAX_LIST_LEN: u32 = 1 << 20;

/// Why bytes are not a valid frame.
///
/// # Examples
///
/// ```
/// use bytes::Bytes;
/// use stratalog::replication::{FrameError, Message};
///
/// let err = Message::decode(200, Bytes::new()).unwrap_err();
/// assert_eq!(err, FrameError::UnknownKind(200));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame announces a body larger than [`MAX_FRAME_BYTES`] (or smaller than its head).
    #[error("frame length {len} is outside 8..={max}")]
    BadLength {
        /// The announced length.
        len: u64,
        /// The largest accepted.
        max: u64,
    },
    /// The peer speaks a protocol version this build does not.
    #[error("protocol version {found}; this build speaks version {supported}")]
    UnsupportedVersion {
        /// The version found.
        found: u8,
        /// The version this build speaks.
        supported: u8,
    },
    /// The frame kind is not one this build knows.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// A field runs past the end of the frame.
    #[error("frame of kind {kind} ends inside field {field}")]
    Truncated {
        /// The frame kind.
        kind: u8,
        /// The field being read.
        field: &'static str,
    },
    /// A field holds a value that is not allowed.
    #[error("frame of kind {kind}: bad {field}: {why}")]
    BadField {
        /// The frame kind.
        kind: u8,
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// Bytes are left over after the last field of the frame.
    #[error("frame of kind {kind} has {extra} bytes after its last field")]
    TrailingBytes {
        /// The frame kind.
        kind: u8,
        /// How many bytes are left.
        extra: usize,
    },
}

/// Stable wire error codes. A code, once given a meaning, keeps it; a retired code stays retired.
///
/// # Examples
///
/// ```
/// use stratalog::replication::ErrorCode;
///
/// assert_eq!(ErrorCode::from_u16(1), Some(ErrorCode::NotLeader));
/// assert_eq!(ErrorCode::NotLeader.name(), "NotLeader");
/// assert_eq!(ErrorCode::from_u16(999), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u16)]
pub enum ErrorCode {
    /// No error.
    None = 0,
    /// This node does not lead the partition; the answer names the leader if it knows one.
    NotLeader = 1,
    /// The request carries an older leader epoch than this node's: its sender was deposed.
    FencedEpoch = 2,
    /// The request carries a newer leader epoch than this node knows: retry later.
    UnknownEpoch = 3,
    /// The offset is outside the partition's retained range.
    OffsetOutOfRange = 4,
    /// No such topic or partition on this node.
    UnknownTopicOrPartition = 5,
    /// Fewer replicas are in sync than the acknowledgement level needs.
    NotEnoughReplicas = 6,
    /// The acknowledgement level was not reached in time; the records may still be committed.
    Timeout = 7,
    /// A batch failed its checks.
    CorruptMessage = 8,
    /// The request does not make sense (bad argument).
    InvalidRequest = 9,
    /// The node's storage failed.
    StorageError = 10,
    /// The peer speaks another protocol version.
    UnsupportedVersion = 11,
    /// The leader stopped leading while the request waited (its acknowledgement is unknown).
    LeadershipLost = 12,
    /// The fetch names another incarnation of the topic than the leader's (the topic was
    /// deleted and created again): the fetcher takes the leader's topics anew.
    InconsistentTopicId = 13,
}

impl ErrorCode {
    /// Every code, in number order (for the documentation test).
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::None,
        ErrorCode::NotLeader,
        ErrorCode::FencedEpoch,
        ErrorCode::UnknownEpoch,
        ErrorCode::OffsetOutOfRange,
        ErrorCode::UnknownTopicOrPartition,
        ErrorCode::NotEnoughReplicas,
        ErrorCode::Timeout,
        ErrorCode::CorruptMessage,
        ErrorCode::InvalidRequest,
        ErrorCode::StorageError,
        ErrorCode::UnsupportedVersion,
        ErrorCode::LeadershipLost,
        ErrorCode::InconsistentTopicId,
    ];

    /// The code for a number read from the wire.
    pub fn from_u16(n: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.get(usize::from(n)).copied()
    }

    /// The name used in `docs/REPLICATION.md`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::None => "None",
            ErrorCode::NotLeader => "NotLeader",
            ErrorCode::FencedEpoch => "FencedEpoch",
            ErrorCode::UnknownEpoch => "UnknownEpoch",
            ErrorCode::OffsetOutOfRange => "OffsetOutOfRange",
            ErrorCode::UnknownTopicOrPartition => "UnknownTopicOrPartition",
            ErrorCode::NotEnoughReplicas => "NotEnoughReplicas",
            ErrorCode::Timeout => "Timeout",
            ErrorCode::CorruptMessage => "CorruptMessage",
            ErrorCode::InvalidRequest => "InvalidRequest",
            ErrorCode::StorageError => "StorageError",
            ErrorCode::UnsupportedVersion => "UnsupportedVersion",
            ErrorCode::LeadershipLost => "LeadershipLost",
            ErrorCode::InconsistentTopicId => "InconsistentTopicId",
        }
    }
}

/// How many replicas must have a produced batch durable before it is acknowledged.
///
/// # Examples
///
/// ```
/// use stratalog::replication::{Acks, Message};
///
/// let request = Message::PromoteRequest { min_epoch: 0 };
/// assert_ne!(Acks::All, Acks::Leader);
/// assert_eq!(request.kind(), 13);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Acks {
    /// Durable on the leader (under its fsync policy).
    Leader = 0,
    /// Durable on a majority of the replicas (leader included).
    Quorum = 1,
    /// Durable on every in-sync replica, refused while fewer than the minimum are in sync.
    All = 2,
}

impl Acks {
    fn from_u8(n: u8) -> Option<Acks> {
        [Acks::Leader, Acks::Quorum, Acks::All]
            .get(usize::from(n))
            .copied()
    }
}

/// Who sends a fetch: what it may read and whether it counts toward acknowledgements.
///
/// # Examples
///
/// ```
/// use stratalog::replication::FetchRole;
///
/// // Only a follower's fetch moves the in-sync set and the high watermark.
/// assert_ne!(FetchRole::Mirror, FetchRole::Follower);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FetchRole {
    /// A consumer: reads up to the high watermark, counts for nothing.
    Consumer = 0,
    /// A follower: reads to the log end; its fetch offset reports its durable end.
    Follower = 1,
    /// A mirror: reads to the high watermark, never counts toward acknowledgements.
    Mirror = 2,
}

impl FetchRole {
    fn from_u8(n: u8) -> Option<FetchRole> {
        [FetchRole::Consumer, FetchRole::Follower, FetchRole::Mirror]
            .get(usize::from(n))
            .copied()
    }
}

/// A node's role for a partition, or for the whole node in a status answer.
///
/// # Examples
///
/// ```
/// use stratalog::replication::Role;
///
/// assert_eq!(Role::Leader.name(), "leader");
/// assert_eq!(Role::Mirror.name(), "mirror");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Role {
    /// Accepts produces and serves fetches.
    Leader = 0,
    /// Copies a leader's log and counts toward acknowledgements while in sync.
    Follower = 1,
    /// Copies a leader's log and never counts toward acknowledgements.
    Mirror = 2,
}

impl Role {
    fn from_u8(n: u8) -> Option<Role> {
        [Role::Leader, Role::Follower, Role::Mirror]
            .get(usize::from(n))
            .copied()
    }

    /// `leader`, `follower` or `mirror`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Mirror => "mirror",
        }
    }
}

/// One follower as the leader sees it, in a status answer.
///
/// # Examples
///
/// ```
/// use stratalog::replication::FollowerStatus;
///
/// let f = FollowerStatus { node_id: "b".into(), log_end: 8, lag: 2, in_sync: true };
/// assert_eq!(f.log_end + f.lag, 10);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerStatus {
    /// The follower's node id.
    pub node_id: String,
    /// The follower's durable log end, as its last fetch reported it.
    pub log_end: u64,
    /// Records the follower is behind the leader's log end.
    pub lag: u64,
    /// Whether the follower is in the in-sync set.
    pub in_sync: bool,
}

/// One partition in a status answer.
///
/// # Examples
///
/// ```
/// use stratalog::replication::{PartitionStatus, Role};
///
/// let p = PartitionStatus {
///     topic: "t".into(), partition: 0, role: Role::Leader, epoch: 1,
///     log_start: 0, log_end: 10, high_watermark: 8,
///     lag_records: 0, lag_bytes: 0, lag_ms: 0, followers: vec![],
/// };
/// assert!(p.high_watermark <= p.log_end);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStatus {
    /// The topic (or log name).
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// This node's role for it.
    pub role: Role,
    /// The current leader epoch.
    pub epoch: u64,
    /// First retained offset.
    pub log_start: u64,
    /// One past the last offset written here.
    pub log_end: u64,
    /// The high watermark as this node knows it.
    pub high_watermark: u64,
    /// On a follower or mirror: records it lacks of what its leader (source) had at its last
    /// fetch answer (the leader's log end for a follower, its high watermark for a mirror);
    /// 0 on a leader.
    pub lag_records: u64,
    /// [`PartitionStatus::lag_records`] in bytes, estimated from this log's average batch
    /// bytes per record (the leader does not send its byte positions).
    pub lag_bytes: u64,
    /// Milliseconds since this follower or mirror last held everything its leader had, as
    /// of a fetch answer (0 while caught up, and on a leader).
    pub lag_ms: u64,
    /// The followers (on a leader; empty elsewhere).
    pub followers: Vec<FollowerStatus>,
}

/// One topic in a metadata answer.
///
/// # Examples
///
/// ```
/// use stratalog::replication::TopicMetadata;
/// use stratalog::{FsyncPolicy, TopicConfig};
///
/// let mut config = TopicConfig::default();
/// config.log.retention_ms = Some(86_400_000);
/// config.fsync = FsyncPolicy::Never;
/// let t = TopicMetadata {
///     topic: "orders".into(),
///     topic_id: [1; 16],
///     partitions: 4,
///     partitioner: "jump".into(),
///     config,
/// };
/// assert_eq!(t.config.log.retention_ms, Some(86_400_000));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    /// The topic.
    pub topic: String,
    /// The topic's incarnation (a re-created topic gets a new one).
    pub topic_id: [u8; 16],
    /// How many partitions it has.
    pub partitions: u32,
    /// How producers spread keyed records over them (`PartitionerKind`'s text form:
    /// `jump`, `ring:<vnodes>`, `modulo`, `round-robin`, `random`).
    pub partitioner: String,
    /// The topic's settings (segment size and age, retention, index interval, compression,
    /// fsync policy): a follower or mirror keeps the topic as its leader does (protocol
    /// version 4 on; see docs/REPLICATION.md, "Followers take their leader's topics").
    pub config: TopicConfig,
}

/// Every message of the protocol. Requests and their answers are matched by the correlation id
/// of the frame that carries them.
///
/// # Examples
///
/// ```
/// use bytes::Bytes;
/// use stratalog::replication::Message;
///
/// let mut frame = Vec::new();
/// Message::StatusRequest.encode(7, &mut frame)?;
/// let (correlation, message, used) = Message::decode_frame(&Bytes::from(frame))?;
/// assert_eq!((correlation, message, used), (7, Message::StatusRequest, 12));
/// # Ok::<(), stratalog::replication::FrameError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// Append batches (offsets are assigned by the leader) and wait for `acks`.
    ProduceRequest {
        /// The topic (or log name).
        topic: String,
        /// The partition.
        partition: u32,
        /// The acknowledgement level asked for.
        acks: Acks,
        /// How long the leader may wait for the level before answering `Timeout`.
        timeout_ms: u32,
        /// One or more encoded batches.
        batches: Bytes,
    },
    /// The answer to a produce.
    ProduceResponse {
        /// `None` on success.
        error: ErrorCode,
        /// The first offset given to the batches.
        base_offset: u64,
        /// The last offset given to the batches.
        last_offset: u64,
        /// The level reached (it may be higher than asked).
        acks: Acks,
        /// The leader epoch the batches were written in.
        epoch: u64,
    },
    /// Read batches from `offset` on, waiting up to `max_wait_ms` for any.
    FetchRequest {
        /// Who fetches.
        role: FetchRole,
        /// The fetcher's node id (empty for a consumer).
        node_id: String,
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The first offset wanted; a follower's written log end.
        offset: u64,
        /// The epoch of the fetcher's last batch (for divergence checks), 0 if it has none.
        last_epoch: u64,
        /// The leader epoch the fetcher believes current (fencing), 0 if it does not know.
        leader_epoch: u64,
        /// At most this many bytes of batches (at least one whole batch is always sent).
        max_bytes: u32,
        /// How long the leader may hold the request when it has nothing new.
        max_wait_ms: u32,
        /// A follower's durable log end (what it has made durable, at most `offset`: it may
        /// fetch on while its last records are being made durable); what moves the high
        /// watermark. 0 from consumers and mirrors.
        durable_end: u64,
        /// The incarnation of the topic the fetcher holds (KIP-516): a leader whose topic of
        /// that name has another id answers `InconsistentTopicId`. All zeros: not checked
        /// (consumers, and the consumer offsets log).
        topic_id: [u8; 16],
    },
    /// The answer to a fetch: the frame ends with the batch bytes, as stored.
    FetchResponse {
        /// `None` on success.
        error: ErrorCode,
        /// The leader's current epoch.
        epoch: u64,
        /// The leader's high watermark.
        high_watermark: u64,
        /// The leader's first retained offset.
        log_start: u64,
        /// The leader's log end.
        log_end: u64,
        /// When the fetcher's last epoch diverges: the end offset of that epoch on the leader
        /// (the fetcher truncates to it); `u64::MAX` when there is no divergence.
        diverging_end: u64,
        /// Whole batches from the fetch offset on.
        batches: Bytes,
    },
    /// Where does `epoch` end on the leader (KIP-101's OffsetsForLeaderEpoch)?
    EpochEndRequest {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The epoch asked about.
        epoch: u64,
    },
    /// The largest epoch at or below the one asked about, and the offset where it ends.
    EpochEndResponse {
        /// `None` on success.
        error: ErrorCode,
        /// The largest epoch the leader has at or below the asked one.
        epoch: u64,
        /// One past that epoch's last offset (the start of the next epoch, or the log end).
        end_offset: u64,
    },
    /// A consumer group commits that it processed everything below `offset`.
    OffsetCommitRequest {
        /// The group.
        group: String,
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// One past the last record processed.
        offset: u64,
        /// The leader epoch the records were read in.
        epoch: u64,
    },
    /// The answer to an offset commit.
    OffsetCommitResponse {
        /// `None` on success.
        error: ErrorCode,
    },
    /// Where did a group stop?
    OffsetFetchRequest {
        /// The group.
        group: String,
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },
    /// The group's committed position, if any.
    OffsetFetchResponse {
        /// `None` on success.
        error: ErrorCode,
        /// The committed offset and its epoch; `None` when the group never committed here.
        committed: Option<(u64, u64)>,
    },
    /// What does this node hold and lead?
    StatusRequest,
    /// The answer to a status request.
    StatusResponse {
        /// This node's id.
        node_id: String,
        /// The node's role.
        role: Role,
        /// The node's current epoch.
        epoch: u64,
        /// The leader's address, as this node knows it (empty if unknown).
        leader: String,
        /// Every partition the node holds.
        partitions: Vec<PartitionStatus>,
    },
    /// Make this node the leader of a new epoch, greater than `min_epoch` and than every
    /// epoch it has seen.
    PromoteRequest {
        /// The new epoch must exceed this.
        min_epoch: u64,
    },
    /// The answer to a promote.
    PromoteResponse {
        /// `None` on success.
        error: ErrorCode,
        /// The epoch the node now leads in.
        epoch: u64,
    },
    /// Which topics are there?
    MetadataRequest,
    /// The answer to a metadata request.
    MetadataResponse {
        /// The leader's address (empty if unknown).
        leader: String,
        /// Every topic.
        topics: Vec<TopicMetadata>,
    },
    /// A request failed as a whole.
    ErrorResponse {
        /// Why.
        error: ErrorCode,
        /// The leader's address when `error` is `NotLeader` and it is known; else empty.
        leader: String,
        /// For people.
        message: String,
    },
    /// A newly promoted leader tells a node that it leads `epoch`: a node in an older epoch
    /// (a deposed leader included) follows it from then on.
    LeaderChangeRequest {
        /// The new leader's epoch.
        epoch: u64,
        /// The new leader's address.
        leader: String,
    },
    /// The answer to a leader change.
    LeaderChangeResponse {
        /// `None` if the node follows the new leader; `FencedEpoch` if it knows a newer epoch.
        error: ErrorCode,
        /// The node's epoch after the change.
        epoch: u64,
    },
    /// Stream a snapshot of the store (docs/DR.md, "Snapshots from a node"): the leader cuts
    /// every log at its high watermark and answers with [`Message::SnapshotChunk`]s, then one
    /// [`Message::SnapshotEnd`] (or an [`Message::ErrorResponse`], `NotLeader` on a follower).
    SnapshotRequest {
        /// At most this many bytes of file data in one chunk (the node clamps it to 64 KiB..=
        /// 16 MiB).
        chunk_bytes: u32,
    },
    /// Bytes of one file of a streamed snapshot. Every file of the snapshot comes as one or
    /// more chunks in a row, from offset 0, in order (an empty file as one empty chunk).
    SnapshotChunk {
        /// The file, relative to the snapshot directory, `/`-separated.
        path: String,
        /// Where in the file `data` starts.
        offset: u64,
        /// The bytes.
        data: Bytes,
    },
    /// The end of a streamed snapshot: its `MANIFEST` (which lists every file sent with its
    /// length and CRC-32C), or why the snapshot failed.
    SnapshotEnd {
        /// `None` if the snapshot is whole.
        error: ErrorCode,
        /// For people, when `error` is set; else empty.
        message: String,
        /// The encoded `MANIFEST` (empty on error).
        manifest: Bytes,
    },
    /// Which is the first offset of a partition whose record has a timestamp at or after
    /// `timestamp` (Kafka's ListOffsets by timestamp)? Served by the leader, from the log's
    /// time index, for consumers: the answer is bounded by the high watermark.
    OffsetForTimeRequest {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// Milliseconds since the Unix epoch.
        timestamp: i64,
    },
    /// The answer to an offset-for-time request.
    OffsetForTimeResponse {
        /// `None` on success.
        error: ErrorCode,
        /// The first offset below the high watermark whose record's timestamp is at or after
        /// the one asked about; the high watermark if no such record is there yet (a consumer
        /// starting there reads only records committed later).
        offset: u64,
    },
}

/// The frame kinds, in number order with their names (for the documentation test).
pub const KINDS: [(u8, &str); 24] = [
    (1, "ProduceRequest"),
    (2, "ProduceResponse"),
    (3, "FetchRequest"),
    (4, "FetchResponse"),
    (5, "EpochEndRequest"),
    (6, "EpochEndResponse"),
    (7, "OffsetCommitRequest"),
    (8, "OffsetCommitResponse"),
    (9, "OffsetFetchRequest"),
    (10, "OffsetFetchResponse"),
    (11, "StatusRequest"),
    (12, "StatusResponse"),
    (13, "PromoteRequest"),
    (14, "PromoteResponse"),
    (15, "MetadataRequest"),
    (16, "MetadataResponse"),
    (17, "ErrorResponse"),
    (18, "LeaderChangeRequest"),
    (19, "LeaderChangeResponse"),
    (20, "SnapshotRequest"),
    (21, "SnapshotChunk"),
    (22, "SnapshotEnd"),
    (23, "OffsetForTimeRequest"),
    (24, "OffsetForTimeResponse"),
];

/// A decoded frame head.
///
/// # Examples
///
/// ```
/// use stratalog::replication::{FrameHead, Message};
///
/// let mut frame = Vec::new();
/// Message::PromoteRequest { min_epoch: 3 }.encode(1, &mut frame)?;
/// let head = FrameHead::decode(frame[..12].try_into().unwrap())?;
/// assert_eq!((head.kind, head.correlation, head.body_len()), (13, 1, 8));
/// // A peer announcing 4 GiB is refused before anything is allocated.
/// frame[..4].copy_from_slice(&u32::MAX.to_le_bytes());
/// assert!(FrameHead::decode(frame[..12].try_into().unwrap()).is_err());
/// # Ok::<(), stratalog::replication::FrameError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    /// Bytes after the `len` field (`version` .. end of body).
    pub len: u32,
    /// The message kind.
    pub kind: u8,
    /// Matches a request with its answer.
    pub correlation: u32,
}

impl FrameHead {
    /// Decodes and checks a frame head: length bounds and version. The body that follows has
    /// `len - 8` bytes.
    pub fn decode(head: &[u8; FRAME_HEAD_LEN]) -> Result<FrameHead, FrameError> {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        if !(8..=MAX_FRAME_BYTES).contains(&len) {
            return Err(FrameError::BadLength {
                len: len.into(),
                max: MAX_FRAME_BYTES.into(),
            });
        }
        if head[4] != PROTOCOL_VERSION {
            return Err(FrameError::UnsupportedVersion {
                found: head[4],
                supported: PROTOCOL_VERSION,
            });
        }
        let flags = u16::from_le_bytes([head[6], head[7]]);
        if flags != 0 {
            return Err(FrameError::BadField {
                kind: head[5],
                field: "flags",
                why: format!("{flags:#x} set; version {PROTOCOL_VERSION} defines none"),
            });
        }
        Ok(FrameHead {
            len,
            kind: head[5],
            correlation: u32::from_le_bytes([head[8], head[9], head[10], head[11]]),
        })
    }

    /// Bytes of body that follow the head.
    pub fn body_len(&self) -> usize {
        self.len as usize - (FRAME_HEAD_LEN - 4)
    }
}

impl Message {
    /// The frame kind of this message.
    pub fn kind(&self) -> u8 {
        match self {
            Message::ProduceRequest { .. } => 1,
            Message::ProduceResponse { .. } => 2,
            Message::FetchRequest { .. } => 3,
            Message::FetchResponse { .. } => 4,
            Message::EpochEndRequest { .. } => 5,
            Message::EpochEndResponse { .. } => 6,
            Message::OffsetCommitRequest { .. } => 7,
            Message::OffsetCommitResponse { .. } => 8,
            Message::OffsetFetchRequest { .. } => 9,
            Message::OffsetFetchResponse { .. } => 10,
            Message::StatusRequest => 11,
            Message::StatusResponse { .. } => 12,
            Message::PromoteRequest { .. } => 13,
            Message::PromoteResponse { .. } => 14,
            Message::MetadataRequest => 15,
            Message::MetadataResponse { .. } => 16,
            Message::ErrorResponse { .. } => 17,
            Message::LeaderChangeRequest { .. } => 18,
            Message::LeaderChangeResponse { .. } => 19,
            Message::SnapshotRequest { .. } => 20,
            Message::SnapshotChunk { .. } => 21,
            Message::SnapshotEnd { .. } => 22,
            Message::OffsetForTimeRequest { .. } => 23,
            Message::OffsetForTimeResponse { .. } => 24,
        }
    }

    /// Appends the whole frame (head and body) to `out`.
    ///
    /// Fails only if a field is over its limit (a string over [`MAX_STR_BYTES`], a frame over
    /// [`MAX_FRAME_BYTES`]): nothing is appended then.
    pub fn encode(&self, correlation: u32, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let start = out.len();
        let result = self.encode_unchecked(correlation, out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn encode_unchecked(&self, correlation: u32, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        out.push(PROTOCOL_VERSION);
        out.push(self.kind());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&correlation.to_le_bytes());
        let mut w = Writer {
            out,
            kind: self.kind(),
        };
        self.encode_body(&mut w)?;
        let len = out.len() - start - 4;
        if len > MAX_FRAME_BYTES as usize {
            return Err(FrameError::BadLength {
                len: len as u64,
                max: MAX_FRAME_BYTES.into(),
            });
        }
        out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
        Ok(())
    }

    /// Appends the frame of a `FetchResponse` without its batch bytes: everything up to and
    /// including the batches' `u32` length, with the frame length counting `batches_len` more
    /// bytes. The sender then writes exactly `batches_len` bytes of batches (with `sendfile`).
    #[expect(clippy::too_many_arguments, reason = "one argument per wire field")]
    pub fn encode_fetch_head(
        correlation: u32,
        error: ErrorCode,
        epoch: u64,
        high_watermark: u64,
        log_start: u64,
        log_end: u64,
        diverging_end: u64,
        batches_len: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), FrameError> {
        let head = Message::FetchResponse {
            error,
            epoch,
            high_watermark,
            log_start,
            log_end,
            diverging_end,
            batches: Bytes::new(),
        };
        let start = out.len();
        head.encode(correlation, out)?;
        let mut head_len = [0u8; 4];
        head_len.copy_from_slice(&out[start..start + 4]);
        let len = u64::from(u32::from_le_bytes(head_len)) + u64::from(batches_len);
        if len > u64::from(MAX_FRAME_BYTES) {
            out.truncate(start);
            return Err(FrameError::BadLength {
                len,
                max: MAX_FRAME_BYTES.into(),
            });
        }
        out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
        let at = out.len() - 4;
        out[at..].copy_from_slice(&batches_len.to_le_bytes());
        Ok(())
    }

    fn encode_body(&self, w: &mut Writer<'_>) -> Result<(), FrameError> {
        match self {
            Message::ProduceRequest {
                topic,
                partition,
                acks,
                timeout_ms,
                batches,
            } => {
                w.str("topic", topic)?;
                w.u32(*partition);
                w.u8(*acks as u8);
                w.u32(*timeout_ms);
                w.bytes(batches);
            }
            Message::ProduceResponse {
                error,
                base_offset,
                last_offset,
                acks,
                epoch,
            } => {
                w.u16(*error as u16);
                w.u64(*base_offset);
                w.u64(*last_offset);
                w.u8(*acks as u8);
                w.u64(*epoch);
            }
            Message::FetchRequest {
                role,
                node_id,
                topic,
                partition,
                offset,
                last_epoch,
                leader_epoch,
                max_bytes,
                max_wait_ms,
                durable_end,
                topic_id,
            } => {
                w.u8(*role as u8);
                w.str("node_id", node_id)?;
                w.str("topic", topic)?;
                w.u32(*partition);
                w.u64(*offset);
                w.u64(*last_epoch);
                w.u64(*leader_epoch);
                w.u32(*max_bytes);
                w.u32(*max_wait_ms);
                w.u64(*durable_end);
                w.out.extend_from_slice(topic_id);
            }
            Message::FetchResponse {
                error,
                epoch,
                high_watermark,
                log_start,
                log_end,
                diverging_end,
                batches,
            } => {
                w.u16(*error as u16);
                w.u64(*epoch);
                w.u64(*high_watermark);
                w.u64(*log_start);
                w.u64(*log_end);
                w.u64(*diverging_end);
                w.bytes(batches);
            }
            Message::EpochEndRequest {
                topic,
                partition,
                epoch,
            } => {
                w.str("topic", topic)?;
                w.u32(*partition);
                w.u64(*epoch);
            }
            Message::EpochEndResponse {
                error,
                epoch,
                end_offset,
            } => {
                w.u16(*error as u16);
                w.u64(*epoch);
                w.u64(*end_offset);
            }
            Message::OffsetCommitRequest {
                group,
                topic,
                partition,
                offset,
                epoch,
            } => {
                w.str("group", group)?;
                w.str("topic", topic)?;
                w.u32(*partition);
                w.u64(*offset);
                w.u64(*epoch);
            }
            Message::OffsetCommitResponse { error } => w.u16(*error as u16),
            Message::OffsetFetchRequest {
                group,
                topic,
                partition,
            } => {
                w.str("group", group)?;
                w.str("topic", topic)?;
                w.u32(*partition);
            }
            Message::OffsetFetchResponse { error, committed } => {
                w.u16(*error as u16);
                let (offset, epoch) = committed.unwrap_or((0, 0));
                w.u8(u8::from(committed.is_some()));
                w.u64(offset);
                w.u64(epoch);
            }
            Message::StatusRequest | Message::MetadataRequest => {}
            Message::StatusResponse {
                node_id,
                role,
                epoch,
                leader,
                partitions,
            } => {
                w.str("node_id", node_id)?;
                w.u8(*role as u8);
                w.u64(*epoch);
                w.str("leader", leader)?;
                w.len("partitions", partitions.len())?;
                for p in partitions {
                    encode_partition_status(w, p)?;
                }
            }
            Message::PromoteRequest { min_epoch } => w.u64(*min_epoch),
            Message::LeaderChangeRequest { epoch, leader } => {
                w.u64(*epoch);
                w.str("leader", leader)?;
            }
            Message::LeaderChangeResponse { error, epoch } => {
                w.u16(*error as u16);
                w.u64(*epoch);
            }
            Message::SnapshotRequest { chunk_bytes } => w.u32(*chunk_bytes),
            Message::SnapshotChunk { path, offset, data } => {
                w.str("path", path)?;
                w.u64(*offset);
                w.bytes(data);
            }
            Message::SnapshotEnd {
                error,
                message,
                manifest,
            } => {
                w.u16(*error as u16);
                w.str("message", message)?;
                w.bytes(manifest);
            }
            Message::PromoteResponse { error, epoch } => {
                w.u16(*error as u16);
                w.u64(*epoch);
            }
            Message::MetadataResponse { leader, topics } => {
                w.str("leader", leader)?;
                w.len("topics", topics.len())?;
                for t in topics {
                    w.str("topic", &t.topic)?;
                    w.out.extend_from_slice(&t.topic_id);
                    w.u32(t.partitions);
                    w.str("partitioner", &t.partitioner)?;
                    encode_topic_config(w, &t.config);
                }
            }
            Message::ErrorResponse {
                error,
                leader,
                message,
            } => {
                w.u16(*error as u16);
                w.str("leader", leader)?;
                w.str("message", message)?;
            }
            Message::OffsetForTimeRequest {
                topic,
                partition,
                timestamp,
            } => {
                w.str("topic", topic)?;
                w.u32(*partition);
                w.u64(*timestamp as u64);
            }
            Message::OffsetForTimeResponse { error, offset } => {
                w.u16(*error as u16);
                w.u64(*offset);
            }
        }
        Ok(())
    }

    /// Decodes the body of a frame whose head was checked by [`FrameHead::decode`]. `body` holds
    /// exactly the frame's body; batch bytes are sliced from it without copying.
    pub fn decode(kind: u8, body: Bytes) -> Result<Message, FrameError> {
        let mut r = Reader { body, at: 0, kind };
        let message = match kind {
            1 => Message::ProduceRequest {
                topic: r.str("topic")?,
                partition: r.u32("partition")?,
                acks: Acks::from_u8(r.u8("acks")?).ok_or_else(|| r.bad("acks", "not 0..=2"))?,
                timeout_ms: r.u32("timeout_ms")?,
                batches: r.bytes("batches")?,
            },
            2 => Message::ProduceResponse {
                error: r.error()?,
                base_offset: r.u64("base_offset")?,
                last_offset: r.u64("last_offset")?,
                acks: Acks::from_u8(r.u8("acks")?).ok_or_else(|| r.bad("acks", "not 0..=2"))?,
                epoch: r.u64("epoch")?,
            },
            3 => Message::FetchRequest {
                role: FetchRole::from_u8(r.u8("role")?)
                    .ok_or_else(|| r.bad("role", "not 0..=2"))?,
                node_id: r.str("node_id")?,
                topic: r.str("topic")?,
                partition: r.u32("partition")?,
                offset: r.u64("offset")?,
                last_epoch: r.u64("last_epoch")?,
                leader_epoch: r.u64("leader_epoch")?,
                max_bytes: r.u32("max_bytes")?,
                max_wait_ms: r.u32("max_wait_ms")?,
                durable_end: r.u64("durable_end")?,
                topic_id: r.array("topic_id")?,
            },
            4 => Message::FetchResponse {
                error: r.error()?,
                epoch: r.u64("epoch")?,
                high_watermark: r.u64("high_watermark")?,
                log_start: r.u64("log_start")?,
                log_end: r.u64("log_end")?,
                diverging_end: r.u64("diverging_end")?,
                batches: r.bytes("batches")?,
            },
            5 => Message::EpochEndRequest {
                topic: r.str("topic")?,
                partition: r.u32("partition")?,
                epoch: r.u64("epoch")?,
            },
            6 => Message::EpochEndResponse {
                error: r.error()?,
                epoch: r.u64("epoch")?,
                end_offset: r.u64("end_offset")?,
            },
            7 => Message::OffsetCommitRequest {
                group: r.str("group")?,
                topic: r.str("topic")?,
                partition: r.u32("partition")?,
                offset: r.u64("offset")?,
                epoch: r.u64("epoch")?,
            },
            8 => Message::OffsetCommitResponse { error: r.error()? },
            9 => Message::OffsetFetchRequest {
                group: r.str("group")?,
                topic: r.str("topic")?,
                partition: r.u32("partition")?,
            },
            10 => {
                let error = r.error()?;
                let present = r.u8("present")?;
                let offset = r.u64("offset")?;
                let epoch = r.u64("epoch")?;
                let committed = match present {
                    0 if (offset, epoch) == (0, 0) => None,
                    0 => return Err(r.bad("offset", "not 0 when absent")),
                    1 => Some((offset, epoch)),
                    _ => return Err(r.bad("present", "not 0 or 1")),
                };
                Message::OffsetFetchResponse { error, committed }
            }
            11 => Message::StatusRequest,
            12 => Message::StatusResponse {
                node_id: r.str("node_id")?,
                role: r.role()?,
                epoch: r.u64("epoch")?,
                leader: r.str("leader")?,
                partitions: r.list("partitions", decode_partition_status)?,
            },
            13 => Message::PromoteRequest {
                min_epoch: r.u64("min_epoch")?,
            },
            18 => Message::LeaderChangeRequest {
                epoch: r.u64("epoch")?,
                leader: r.str("leader")?,
            },
            19 => Message::LeaderChangeResponse {
                error: r.error()?,
                epoch: r.u64("epoch")?,
            },
            20 => Message::SnapshotRequest {
                chunk_bytes: r.u32("chunk_bytes")?,
            },
            21 => Message::SnapshotChunk {
                path: r.str("path")?,
                offset: r.u64("offset")?,
                data: r.bytes("data")?,
            },
            22 => Message::SnapshotEnd {
                error: r.error()?,
                message: r.str("message")?,
                manifest: r.bytes("manifest")?,
            },
            14 => Message::PromoteResponse {
                error: r.error()?,
                epoch: r.u64("epoch")?,
            },
            15 => Message::MetadataRequest,
            16 => Message::MetadataResponse {
                leader: r.str("leader")?,
                topics: r.list("topics", |r| {
                    Ok(TopicMetadata {
                        topic: r.str("topic")?,
                        topic_id: r.array("topic_id")?,
                        partitions: r.u32("partitions")?,
                        partitioner: r.str("partitioner")?,
                        config: decode_topic_config(r)?,
                    })
                })?,
            },
            17 => Message::ErrorResponse {
                error: r.error()?,
                leader: r.str("leader")?,
                message: r.str("message")?,
            },
            23 => Message::OffsetForTimeRequest {
                topic: r.str("topic")?,
                partition: r.u32("partition")?,
                timestamp: r.u64("timestamp")? as i64,
            },
            24 => Message::OffsetForTimeResponse {
                error: r.error()?,
                offset: r.u64("offset")?,
            },
            other => return Err(FrameError::UnknownKind(other)),
        };
        r.finish()?;
        Ok(message)
    }

    /// Decodes one whole frame (head and body) from the front of `frame`; returns the
    /// correlation id, the message, and how many bytes it took.
    pub fn decode_frame(frame: &Bytes) -> Result<(u32, Message, usize), FrameError> {
        let head: &[u8; FRAME_HEAD_LEN] = frame
            .get(..FRAME_HEAD_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(FrameError::Truncated {
                kind: 0,
                field: "frame head",
            })?;
        let head = FrameHead::decode(head)?;
        let end = FRAME_HEAD_LEN + head.body_len();
        if frame.len() < end {
            return Err(FrameError::Truncated {
                kind: head.kind,
                field: "frame body",
            });
        }
        let message = Message::decode(head.kind, frame.slice(FRAME_HEAD_LEN..end))?;
        Ok((head.correlation, message, end))
    }
}

/// A topic's settings in a [`TopicMetadata`], laid out as its table in docs/REPLICATION.md.
fn encode_topic_config(w: &mut Writer<'_>, c: &TopicConfig) {
    let log = &c.log;
    w.u64(log.segment_bytes);
    w.u64(log.segment_ms.unwrap_or(0));
    w.u64(log.retention_bytes.unwrap_or(u64::MAX));
    w.u64(log.retention_ms.unwrap_or(u64::MAX));
    w.u32(log.index_interval_bytes);
    w.u8(match log.compression {
        Compression::None => 0,
        Compression::Lz4 => 1,
    });
    let (kind, value) = match c.fsync {
        FsyncPolicy::Always => (0, 0),
        FsyncPolicy::Never => (1, 0),
        FsyncPolicy::Interval(d) => (2, u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        FsyncPolicy::Bytes(n) => (3, n),
    };
    w.u8(kind);
    w.u64(value);
}

/// Reads and checks a topic's settings: every value must be one the store accepts, and have
/// one encoding only (a value that means nothing is refused, not ignored).
fn decode_topic_config(r: &mut Reader) -> Result<TopicConfig, FrameError> {
    let segment_bytes = r.u64("segment_bytes")?;
    let segment_ms = r.u64("segment_ms")?;
    let retention_bytes = r.u64("retention_bytes")?;
    let retention_ms = r.u64("retention_ms")?;
    let index_interval_bytes = r.u32("index_interval_bytes")?;
    let compression = match r.u8("compression")? {
        0 => Compression::None,
        1 => Compression::Lz4,
        n => return Err(r.bad("compression", &format!("{n} is not 0 or 1"))),
    };
    let kind = r.u8("fsync")?;
    let value = r.u64("fsync_value")?;
    let fsync = match (kind, value) {
        (0, 0) => FsyncPolicy::Always,
        (1, 0) => FsyncPolicy::Never,
        (0 | 1, _) => return Err(r.bad("fsync_value", "not 0 with fsync always or never")),
        (2, ms) => FsyncPolicy::Interval(std::time::Duration::from_millis(ms)),
        (3, bytes) => FsyncPolicy::Bytes(bytes),
        (n, _) => return Err(r.bad("fsync", &format!("{n} is not 0..=3"))),
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
    log.check()
        .map_err(|e| r.bad("segment_bytes", &e.to_string()))?;
    Ok(TopicConfig { log, fsync })
}

fn encode_partition_status(w: &mut Writer<'_>, p: &PartitionStatus) -> Result<(), FrameError> {
    w.str("topic", &p.topic)?;
    w.u32(p.partition);
    w.u8(p.role as u8);
    w.u64(p.epoch);
    w.u64(p.log_start);
    w.u64(p.log_end);
    w.u64(p.high_watermark);
    w.u64(p.lag_records);
    w.u64(p.lag_bytes);
    w.u64(p.lag_ms);
    w.len("followers", p.followers.len())?;
    for f in &p.followers {
        w.str("node_id", &f.node_id)?;
        w.u64(f.log_end);
        w.u64(f.lag);
        w.u8(u8::from(f.in_sync));
    }
    Ok(())
}

fn decode_partition_status(r: &mut Reader) -> Result<PartitionStatus, FrameError> {
    Ok(PartitionStatus {
        topic: r.str("topic")?,
        partition: r.u32("partition")?,
        role: r.role()?,
        epoch: r.u64("epoch")?,
        log_start: r.u64("log_start")?,
        log_end: r.u64("log_end")?,
        high_watermark: r.u64("high_watermark")?,
        lag_records: r.u64("lag_records")?,
        lag_bytes: r.u64("lag_bytes")?,
        lag_ms: r.u64("lag_ms")?,
        followers: r.list("followers", |r| {
            Ok(FollowerStatus {
                node_id: r.str("node_id")?,
                log_end: r.u64("log_end")?,
                lag: r.u64("lag")?,
                in_sync: match r.u8("in_sync")? {
                    0 => false,
                    1 => true,
                    _ => return Err(r.bad("in_sync", "not 0 or 1")),
                },
            })
        })?,
    })
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
    kind: u8,
}

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, field: &'static str, s: &str) -> Result<(), FrameError> {
        if s.len() > MAX_STR_BYTES {
            return Err(FrameError::BadField {
                kind: self.kind,
                field,
                why: format!("{} bytes, more than {MAX_STR_BYTES}", s.len()),
            });
        }
        self.u16(s.len() as u16);
        self.out.extend_from_slice(s.as_bytes());
        Ok(())
    }
    fn bytes(&mut self, b: &[u8]) {
        // A body over the frame limit is refused by `encode` once the frame is complete.
        self.u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
        self.out.extend_from_slice(b);
    }
    fn len(&mut self, field: &'static str, n: usize) -> Result<(), FrameError> {
        match u32::try_from(n) {
            Ok(n) if n <= MAX_LIST_LEN => {
                self.u32(n);
                Ok(())
            }
            _ => Err(FrameError::BadField {
                kind: self.kind,
                field,
                why: format!("{n} entries, more than {MAX_LIST_LEN}"),
            }),
        }
    }
}

struct Reader {
    body: Bytes,
    at: usize,
    kind: u8,
}

impl Reader {
    fn take(&mut self, field: &'static str, n: usize) -> Result<&[u8], FrameError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.body.len())
            .ok_or(FrameError::Truncated {
                kind: self.kind,
                field,
            })?;
        let bytes = &self.body[self.at..end];
        self.at = end;
        Ok(bytes)
    }
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], FrameError> {
        let kind = self.kind;
        self.take(field, N)?
            .try_into()
            .map_err(|_| FrameError::Truncated { kind, field })
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, FrameError> {
        Ok(self.array::<1>(field)?[0])
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, FrameError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, FrameError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, FrameError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }
    fn str(&mut self, field: &'static str) -> Result<String, FrameError> {
        let n = usize::from(self.u16(field)?);
        if n > MAX_STR_BYTES {
            return Err(self.bad(field, &format!("{n} bytes, more than {MAX_STR_BYTES}")));
        }
        let kind = self.kind;
        let bytes = self.take(field, n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| FrameError::BadField {
            kind,
            field,
            why: "not UTF-8".into(),
        })
    }
    fn bytes(&mut self, field: &'static str) -> Result<Bytes, FrameError> {
        let n = self.u32(field)? as usize;
        let start = self.at;
        self.take(field, n)?;
        Ok(self.body.slice(start..start + n))
    }
    fn error(&mut self) -> Result<ErrorCode, FrameError> {
        let n = self.u16("error")?;
        ErrorCode::from_u16(n).ok_or_else(|| self.bad("error", &format!("unknown code {n}")))
    }
    fn role(&mut self) -> Result<Role, FrameError> {
        let n = self.u8("role")?;
        Role::from_u8(n).ok_or_else(|| self.bad("role", "not 0..=2"))
    }
    fn list<T>(
        &mut self,
        field: &'static str,
        mut item: impl FnMut(&mut Reader) -> Result<T, FrameError>,
    ) -> Result<Vec<T>, FrameError> {
        let n = self.u32(field)?;
        // Every entry takes at least one byte, so a count beyond the bytes left is a lie; check
        // it before allocating.
        if n > MAX_LIST_LEN || n as usize > self.body.len() - self.at {
            return Err(self.bad(field, &format!("{n} entries do not fit in the frame")));
        }
        (0..n).map(|_| item(self)).collect()
    }
    fn bad(&self, field: &'static str, why: &str) -> FrameError {
        FrameError::BadField {
            kind: self.kind,
            field,
            why: why.into(),
        }
    }
    fn finish(self) -> Result<(), FrameError> {
        match self.body.len() - self.at {
            0 => Ok(()),
            extra => Err(FrameError::TrailingBytes {
                kind: self.kind,
                extra,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn samples() -> Vec<Message> {
        vec![
            Message::ProduceRequest {
                topic: "orders".into(),
                partition: 3,
                acks: Acks::All,
                timeout_ms: 5000,
                batches: Bytes::from_static(b"batch bytes"),
            },
            Message::ProduceResponse {
                error: ErrorCode::None,
                base_offset: 10,
                last_offset: 12,
                acks: Acks::Quorum,
                epoch: 4,
            },
            Message::FetchRequest {
                role: FetchRole::Follower,
                node_id: "n2".into(),
                topic: "orders".into(),
                partition: 0,
                offset: 99,
                last_epoch: 3,
                leader_epoch: 4,
                max_bytes: 1 << 20,
                max_wait_ms: 500,
                durable_end: 97,
                topic_id: [7; 16],
            },
            Message::FetchResponse {
                error: ErrorCode::None,
                epoch: 4,
                high_watermark: 90,
                log_start: 0,
                log_end: 120,
                diverging_end: u64::MAX,
                batches: Bytes::from_static(b"some batches"),
            },
            Message::EpochEndRequest {
                topic: "t".into(),
                partition: 1,
                epoch: 2,
            },
            Message::EpochEndResponse {
                error: ErrorCode::None,
                epoch: 2,
                end_offset: 77,
            },
            Message::OffsetCommitRequest {
                group: "billing".into(),
                topic: "t".into(),
                partition: 0,
                offset: 5,
                epoch: 1,
            },
            Message::OffsetCommitResponse {
                error: ErrorCode::FencedEpoch,
            },
            Message::OffsetFetchRequest {
                group: "g".into(),
                topic: "t".into(),
                partition: 2,
            },
            Message::OffsetFetchResponse {
                error: ErrorCode::None,
                committed: Some((5, 1)),
            },
            Message::OffsetFetchResponse {
                error: ErrorCode::None,
                committed: None,
            },
            Message::StatusRequest,
            Message::StatusResponse {
                node_id: "n1".into(),
                role: Role::Leader,
                epoch: 4,
                leader: "127.0.0.1:9000".into(),
                partitions: vec![PartitionStatus {
                    topic: "t".into(),
                    partition: 0,
                    role: Role::Leader,
                    epoch: 4,
                    log_start: 0,
                    log_end: 10,
                    high_watermark: 8,
                    lag_records: 3,
                    lag_bytes: 300,
                    lag_ms: 40,
                    followers: vec![FollowerStatus {
                        node_id: "n2".into(),
                        log_end: 8,
                        lag: 2,
                        in_sync: true,
                    }],
                }],
            },
            Message::PromoteRequest { min_epoch: 4 },
            Message::PromoteResponse {
                error: ErrorCode::None,
                epoch: 5,
            },
            Message::LeaderChangeRequest {
                epoch: 6,
                leader: "127.0.0.1:9002".into(),
            },
            Message::LeaderChangeResponse {
                error: ErrorCode::FencedEpoch,
                epoch: 7,
            },
            Message::SnapshotRequest {
                chunk_bytes: 1 << 20,
            },
            Message::SnapshotChunk {
                path: "t/0/00000000000000000000.log".into(),
                offset: 4096,
                data: Bytes::from_static(b"segment bytes"),
            },
            Message::SnapshotEnd {
                error: ErrorCode::None,
                message: String::new(),
                manifest: Bytes::from_static(b"STRASNP\0..."),
            },
            Message::MetadataRequest,
            Message::MetadataResponse {
                leader: "127.0.0.1:9000".into(),
                topics: vec![TopicMetadata {
                    topic: "t".into(),
                    topic_id: [7; 16],
                    partitions: 4,
                    partitioner: "ring:64".into(),
                    config: TopicConfig {
                        log: LogConfig {
                            segment_bytes: 1 << 20,
                            segment_ms: Some(60_000),
                            retention_bytes: Some(1 << 30),
                            retention_ms: None,
                            index_interval_bytes: 1024,
                            compression: Compression::Lz4,
                        },
                        fsync: FsyncPolicy::Interval(std::time::Duration::from_millis(250)),
                    },
                }],
            },
            Message::ErrorResponse {
                error: ErrorCode::NotLeader,
                leader: "127.0.0.1:9001".into(),
                message: "not the leader".into(),
            },
            Message::OffsetForTimeRequest {
                topic: "t".into(),
                partition: 1,
                timestamp: -5,
            },
            Message::OffsetForTimeResponse {
                error: ErrorCode::None,
                offset: 42,
            },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        let mut kinds = std::collections::BTreeSet::new();
        for (i, m) in samples().into_iter().enumerate() {
            let mut out = Vec::new();
            m.encode(i as u32, &mut out).unwrap();
            let frame = Bytes::from(out);
            let (correlation, back, used) = Message::decode_frame(&frame).unwrap();
            assert_eq!((correlation, &back, used), (i as u32, &m, frame.len()));
            kinds.insert(m.kind());
        }
        assert_eq!(kinds.len(), KINDS.len(), "a sample of every kind");
    }

    #[test]
    fn every_strict_prefix_of_a_frame_is_refused() {
        for m in samples() {
            let mut out = Vec::new();
            m.encode(7, &mut out).unwrap();
            for cut in 0..out.len() {
                let frame = Bytes::copy_from_slice(&out[..cut]);
                assert!(Message::decode_frame(&frame).is_err(), "{m:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn a_huge_length_is_refused_before_allocating() {
        let mut head = [0u8; FRAME_HEAD_LEN];
        head[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        head[4] = PROTOCOL_VERSION;
        assert!(matches!(
            FrameHead::decode(&head),
            Err(FrameError::BadLength { .. })
        ));
        // A list count larger than the bytes left is refused, not allocated.
        let mut out = Vec::new();
        Message::MetadataResponse {
            leader: String::new(),
            topics: vec![],
        }
        .encode(1, &mut out)
        .unwrap();
        let at = out.len() - 4;
        out[at..].copy_from_slice(&(MAX_LIST_LEN - 1).to_le_bytes());
        assert!(matches!(
            Message::decode_frame(&Bytes::from(out)),
            Err(FrameError::BadField { .. })
        ));
    }

    #[test]
    fn trailing_bytes_and_bad_enums_are_refused() {
        let mut out = Vec::new();
        Message::PromoteRequest { min_epoch: 1 }
            .encode(1, &mut out)
            .unwrap();
        out.push(0);
        let len = u32::from_le_bytes(out[..4].try_into().unwrap()) + 1;
        out[..4].copy_from_slice(&len.to_le_bytes());
        assert!(matches!(
            Message::decode_frame(&Bytes::from(out)),
            Err(FrameError::TrailingBytes { extra: 1, .. })
        ));
        let mut out = Vec::new();
        Message::OffsetCommitResponse {
            error: ErrorCode::None,
        }
        .encode(1, &mut out)
        .unwrap();
        out[FRAME_HEAD_LEN] = 200;
        assert!(Message::decode_frame(&Bytes::from(out)).is_err());
    }

    #[test]
    fn fetch_head_then_batches_is_a_fetch_response() {
        let batches = b"0123456789abcdef";
        let mut out = Vec::new();
        Message::encode_fetch_head(
            9,
            ErrorCode::None,
            3,
            40,
            0,
            50,
            u64::MAX,
            batches.len() as u32,
            &mut out,
        )
        .unwrap();
        out.extend_from_slice(batches);
        let (correlation, m, _) = Message::decode_frame(&Bytes::from(out)).unwrap();
        assert_eq!(correlation, 9);
        assert_eq!(
            m,
            Message::FetchResponse {
                error: ErrorCode::None,
                epoch: 3,
                high_watermark: 40,
                log_start: 0,
                log_end: 50,
                diverging_end: u64::MAX,
                batches: Bytes::from_static(batches),
            }
        );
    }

    #[test]
    fn a_frame_of_an_older_version_is_refused_with_both_versions_named() {
        let mut out = Vec::new();
        Message::MetadataRequest.encode(1, &mut out).unwrap();
        out[4] = 3;
        let err = Message::decode_frame(&Bytes::from(out)).unwrap_err();
        assert_eq!(
            err,
            FrameError::UnsupportedVersion {
                found: 3,
                supported: 4
            }
        );
        assert!(err.to_string().contains("version 3"), "{err}");
    }

    /// The bytes of a metadata answer with one topic, and where its settings start.
    fn metadata_frame() -> (Vec<u8>, usize) {
        let m = samples()
            .into_iter()
            .find(|m| matches!(m, Message::MetadataResponse { .. }))
            .unwrap();
        let mut out = Vec::new();
        m.encode(1, &mut out).unwrap();
        // The settings are the last 8 * 4 + 4 + 1 + 1 + 8 bytes of the frame.
        let at = out.len() - (8 * 4 + 4 + 1 + 1 + 8);
        (out, at)
    }

    #[test]
    fn topic_settings_that_mean_nothing_are_refused() {
        let (good, at) = metadata_frame();
        assert!(Message::decode_frame(&Bytes::from(good.clone())).is_ok());
        let bad = |patch: &dyn Fn(&mut Vec<u8>)| {
            let mut out = good.clone();
            patch(&mut out);
            Message::decode_frame(&Bytes::from(out))
        };
        // A segment size below the store's minimum.
        assert!(bad(&|o| o[at..at + 8].copy_from_slice(&10u64.to_le_bytes())).is_err());
        // An index interval of 0.
        assert!(bad(&|o| o[at + 32..at + 36].copy_from_slice(&0u32.to_le_bytes())).is_err());
        // An unknown compression and fsync kind.
        assert!(bad(&|o| o[at + 36] = 2).is_err());
        assert!(bad(&|o| o[at + 37] = 4).is_err());
        // fsync `always` with a value: two encodings of one setting.
        assert!(
            bad(&|o| {
                o[at + 37] = 0;
                o[at + 38..at + 46].copy_from_slice(&1u64.to_le_bytes());
            })
            .is_err()
        );
    }

    #[test]
    fn an_overlong_string_is_refused_on_encode() {
        let mut out = vec![1, 2, 3];
        let err = Message::ErrorResponse {
            error: ErrorCode::InvalidRequest,
            leader: String::new(),
            message: "x".repeat(MAX_STR_BYTES + 1),
        }
        .encode(1, &mut out);
        assert!(err.is_err());
        assert_eq!(out, vec![1, 2, 3], "nothing appended on failure");
    }
}
