//! Checks that "The protocol" section of `docs/REPLICATION.md` and the code agree.
//!
//! - the kinds table against `frame::KINDS` and `Message::kind`;
//! - the error-code table against `ErrorCode` (numbers and names);
//! - the frame head table against the bytes `Message::encode` writes;
//! - every message table (`#### Name`): one sample of each message is encoded by the code, and
//!   its body is walked field by field with the types the document gives (`u8`..`u64`, `str`,
//!   `bytes`, `error`, `list<X>` with `X`'s own table). Every field's value is compared with the
//!   sample's, and the walk must end exactly at the end of the frame.

use std::collections::BTreeMap;

use bytes::Bytes;
use stratalog::replication::frame::{FRAME_HEAD_LEN, KINDS, PROTOCOL_VERSION};
use stratalog::replication::{
    Acks, ErrorCode, FetchRole, FollowerStatus, Message, PartitionStatus, Role, TopicMetadata,
};
use stratalog::{Compression, FsyncPolicy, LogConfig, TopicConfig};

const DOC: &str = include_str!("../docs/REPLICATION.md");

/// Cells of a markdown table row, trimmed, backticks removed.
fn cells(line: &str) -> Vec<String> {
    let line = line.trim().trim_start_matches('|').trim_end_matches('|');
    line.split('|').map(|c| c.trim().replace('`', "")).collect()
}

/// The rows of the first table under the heading `heading` (exact line), without the header
/// and separator rows. `None` if the heading is missing; an empty list if it has no table.
fn table_under(heading: &str) -> Option<Vec<Vec<String>>> {
    let mut lines = DOC.lines().skip_while(|l| l.trim() != heading);
    lines.next()?;
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in lines {
        let t = line.trim();
        if t.starts_with('#') {
            break;
        }
        if t.starts_with('|') {
            in_table = true;
            rows.push(cells(t));
        } else if in_table {
            break;
        }
    }
    // Header and separator.
    Some(rows.into_iter().skip(2).collect())
}

#[test]
fn kinds_table_matches_the_code() {
    let rows = table_under("### Kinds").expect("### Kinds");
    let doc: Vec<(u8, String)> = rows
        .iter()
        .map(|r| (r[0].parse().unwrap(), r[1].clone()))
        .collect();
    let code: Vec<(u8, String)> = KINDS.iter().map(|(k, n)| (*k, n.to_string())).collect();
    assert_eq!(doc, code);
    for m in samples() {
        let name = format!("{m:?}");
        let (_, kind_name) = KINDS.iter().find(|(k, _)| *k == m.kind()).unwrap();
        assert!(name.starts_with(kind_name), "{name} has kind {}", m.kind());
    }
}

#[test]
fn error_code_table_matches_the_code() {
    let rows = table_under("### Error codes").expect("### Error codes");
    assert_eq!(rows.len(), ErrorCode::ALL.len());
    for (row, code) in rows.iter().zip(ErrorCode::ALL) {
        assert_eq!(row[0].parse::<u16>().unwrap(), code as u16);
        assert_eq!(row[1], code.name());
        assert_eq!(ErrorCode::from_u16(code as u16), Some(code));
    }
    assert_eq!(ErrorCode::from_u16(ErrorCode::ALL.len() as u16), None);
}

#[test]
fn frame_head_table_matches_the_bytes() {
    let rows = table_under("### Frame").expect("### Frame");
    let fields: Vec<(usize, String)> = rows
        .iter()
        .filter(|r| r[3] != "body")
        .map(|r| (r[0].parse().unwrap(), r[3].clone()))
        .collect();
    assert_eq!(
        fields,
        [
            (0, "len"),
            (4, "version"),
            (5, "kind"),
            (6, "flags"),
            (8, "correlation")
        ]
        .map(|(o, f)| (o, f.to_string()))
    );
    let body_row = rows.iter().find(|r| r[3] == "body").unwrap();
    assert_eq!(body_row[0].parse::<usize>().unwrap(), FRAME_HEAD_LEN);
    let mut out = Vec::new();
    Message::PromoteRequest { min_epoch: 7 }
        .encode(0xabcd, &mut out)
        .unwrap();
    assert_eq!(
        u32::from_le_bytes(out[0..4].try_into().unwrap()) as usize,
        out.len() - 4
    );
    assert_eq!(out[4], PROTOCOL_VERSION);
    assert_eq!(out[5], 13);
    assert_eq!(&out[6..8], &[0, 0]);
    assert_eq!(u32::from_le_bytes(out[8..12].try_into().unwrap()), 0xabcd);
}

/// A field value read from the bytes by the document's type.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Int(u64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<BTreeMap<String, Value>>),
}

struct Walk<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Walk<'_> {
    fn take(&mut self, n: usize, what: &str) -> &[u8] {
        assert!(
            self.at + n <= self.bytes.len(),
            "{what} runs past the frame"
        );
        let b = &self.bytes[self.at..self.at + n];
        self.at += n;
        b
    }
    fn int(&mut self, n: usize, what: &str) -> u64 {
        let mut buf = [0u8; 8];
        buf[..n].copy_from_slice(self.take(n, what));
        u64::from_le_bytes(buf)
    }
    /// Reads the fields of table `name` in the document's order.
    fn table(&mut self, name: &str) -> BTreeMap<String, Value> {
        let rows = table_under(&format!("#### {name}"))
            .unwrap_or_else(|| panic!("no #### {name} in docs/REPLICATION.md"));
        let mut fields = BTreeMap::new();
        for row in rows {
            let (ty, field) = (row[0].as_str(), row[1].clone());
            let value = match ty {
                "u8" => Value::Int(self.int(1, &field)),
                "u16" | "error" => Value::Int(self.int(2, &field)),
                "u32" => Value::Int(self.int(4, &field)),
                "u64" | "i64" => Value::Int(self.int(8, &field)),
                "[u8; 16]" => Value::Bytes(self.take(16, &field).to_vec()),
                "str" => {
                    let n = self.int(2, &field) as usize;
                    Value::Str(String::from_utf8(self.take(n, &field).to_vec()).unwrap())
                }
                "bytes" => {
                    let n = self.int(4, &field) as usize;
                    Value::Bytes(self.take(n, &field).to_vec())
                }
                list if list.starts_with("list<") => {
                    let inner = &list[5..list.len() - 1];
                    let n = self.int(4, &field);
                    Value::List((0..n).map(|_| self.table(inner)).collect())
                }
                other => panic!("unknown type {other:?} in table {name}"),
            };
            fields.insert(field, value);
        }
        fields
    }
}

fn int(v: impl Into<u64>) -> Value {
    Value::Int(v.into())
}

fn s(v: &str) -> Value {
    Value::Str(v.to_string())
}

fn map(pairs: Vec<(&str, Value)>) -> BTreeMap<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The fields a message should show when walked with the document's tables.
fn expected(m: &Message) -> BTreeMap<String, Value> {
    match m {
        Message::ProduceRequest {
            topic,
            partition,
            acks,
            timeout_ms,
            batches,
        } => map(vec![
            ("topic", s(topic)),
            ("partition", int(*partition)),
            ("acks", int(*acks as u8)),
            ("timeout_ms", int(*timeout_ms)),
            ("batches", Value::Bytes(batches.to_vec())),
        ]),
        Message::ProduceResponse {
            error,
            base_offset,
            last_offset,
            acks,
            epoch,
        } => map(vec![
            ("error", int(*error as u16)),
            ("base_offset", int(*base_offset)),
            ("last_offset", int(*last_offset)),
            ("acks", int(*acks as u8)),
            ("epoch", int(*epoch)),
        ]),
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
        } => map(vec![
            ("role", int(*role as u8)),
            ("node_id", s(node_id)),
            ("topic", s(topic)),
            ("partition", int(*partition)),
            ("offset", int(*offset)),
            ("last_epoch", int(*last_epoch)),
            ("leader_epoch", int(*leader_epoch)),
            ("max_bytes", int(*max_bytes)),
            ("max_wait_ms", int(*max_wait_ms)),
            ("durable_end", int(*durable_end)),
            ("topic_id", Value::Bytes(topic_id.to_vec())),
        ]),
        Message::FetchResponse {
            error,
            epoch,
            high_watermark,
            log_start,
            log_end,
            diverging_end,
            batches,
        } => map(vec![
            ("error", int(*error as u16)),
            ("epoch", int(*epoch)),
            ("high_watermark", int(*high_watermark)),
            ("log_start", int(*log_start)),
            ("log_end", int(*log_end)),
            ("diverging_end", int(*diverging_end)),
            ("batches", Value::Bytes(batches.to_vec())),
        ]),
        Message::EpochEndRequest {
            topic,
            partition,
            epoch,
        } => map(vec![
            ("topic", s(topic)),
            ("partition", int(*partition)),
            ("epoch", int(*epoch)),
        ]),
        Message::EpochEndResponse {
            error,
            epoch,
            end_offset,
        } => map(vec![
            ("error", int(*error as u16)),
            ("epoch", int(*epoch)),
            ("end_offset", int(*end_offset)),
        ]),
        Message::OffsetCommitRequest {
            group,
            topic,
            partition,
            offset,
            epoch,
        } => map(vec![
            ("group", s(group)),
            ("topic", s(topic)),
            ("partition", int(*partition)),
            ("offset", int(*offset)),
            ("epoch", int(*epoch)),
        ]),
        Message::OffsetCommitResponse { error } => map(vec![("error", int(*error as u16))]),
        Message::OffsetFetchRequest {
            group,
            topic,
            partition,
        } => map(vec![
            ("group", s(group)),
            ("topic", s(topic)),
            ("partition", int(*partition)),
        ]),
        Message::OffsetFetchResponse { error, committed } => {
            let (offset, epoch) = committed.unwrap_or((0, 0));
            map(vec![
                ("error", int(*error as u16)),
                ("present", int(u8::from(committed.is_some()))),
                ("offset", int(offset)),
                ("epoch", int(epoch)),
            ])
        }
        Message::StatusRequest | Message::MetadataRequest => BTreeMap::new(),
        Message::StatusResponse {
            node_id,
            role,
            epoch,
            leader,
            partitions,
        } => map(vec![
            ("node_id", s(node_id)),
            ("role", int(*role as u8)),
            ("epoch", int(*epoch)),
            ("leader", s(leader)),
            (
                "partitions",
                Value::List(
                    partitions
                        .iter()
                        .map(|p| {
                            map(vec![
                                ("topic", s(&p.topic)),
                                ("partition", int(p.partition)),
                                ("role", int(p.role as u8)),
                                ("epoch", int(p.epoch)),
                                ("log_start", int(p.log_start)),
                                ("log_end", int(p.log_end)),
                                ("high_watermark", int(p.high_watermark)),
                                ("lag_records", int(p.lag_records)),
                                ("lag_bytes", int(p.lag_bytes)),
                                ("lag_ms", int(p.lag_ms)),
                                (
                                    "followers",
                                    Value::List(
                                        p.followers
                                            .iter()
                                            .map(|f| {
                                                map(vec![
                                                    ("node_id", s(&f.node_id)),
                                                    ("log_end", int(f.log_end)),
                                                    ("lag", int(f.lag)),
                                                    ("in_sync", int(u8::from(f.in_sync))),
                                                ])
                                            })
                                            .collect(),
                                    ),
                                ),
                            ])
                        })
                        .collect(),
                ),
            ),
        ]),
        Message::PromoteRequest { min_epoch } => map(vec![("min_epoch", int(*min_epoch))]),
        Message::LeaderChangeRequest { epoch, leader } => {
            map(vec![("epoch", int(*epoch)), ("leader", s(leader))])
        }
        Message::LeaderChangeResponse { error, epoch } => {
            map(vec![("error", int(*error as u16)), ("epoch", int(*epoch))])
        }
        Message::PromoteResponse { error, epoch } => {
            map(vec![("error", int(*error as u16)), ("epoch", int(*epoch))])
        }
        Message::MetadataResponse { leader, topics } => map(vec![
            ("leader", s(leader)),
            (
                "topics",
                Value::List(
                    topics
                        .iter()
                        .map(|t| {
                            map(vec![
                                ("topic", s(&t.topic)),
                                ("topic_id", Value::Bytes(t.topic_id.to_vec())),
                                ("partitions", int(t.partitions)),
                                ("partitioner", Value::Str(t.partitioner.clone())),
                                ("segment_bytes", int(t.config.log.segment_bytes)),
                                ("segment_ms", int(t.config.log.segment_ms.unwrap_or(0))),
                                (
                                    "retention_bytes",
                                    int(t.config.log.retention_bytes.unwrap_or(u64::MAX)),
                                ),
                                (
                                    "retention_ms",
                                    int(t.config.log.retention_ms.unwrap_or(u64::MAX)),
                                ),
                                (
                                    "index_interval_bytes",
                                    int(t.config.log.index_interval_bytes),
                                ),
                                (
                                    "compression",
                                    int(u8::from(t.config.log.compression == Compression::Lz4)),
                                ),
                                ("fsync", int(fsync_kind(t.config.fsync).0)),
                                ("fsync_value", int(fsync_kind(t.config.fsync).1)),
                            ])
                        })
                        .collect(),
                ),
            ),
        ]),
        Message::ErrorResponse {
            error,
            leader,
            message,
        } => map(vec![
            ("error", int(*error as u16)),
            ("leader", s(leader)),
            ("message", s(message)),
        ]),
        Message::SnapshotRequest { chunk_bytes } => map(vec![("chunk_bytes", int(*chunk_bytes))]),
        Message::SnapshotChunk { path, offset, data } => map(vec![
            ("path", s(path)),
            ("offset", int(*offset)),
            ("data", Value::Bytes(data.to_vec())),
        ]),
        Message::SnapshotEnd {
            error,
            message,
            manifest,
        } => map(vec![
            ("error", int(*error as u16)),
            ("message", s(message)),
            ("manifest", Value::Bytes(manifest.to_vec())),
        ]),
        Message::OffsetForTimeRequest {
            topic,
            partition,
            timestamp,
        } => map(vec![
            ("topic", s(topic)),
            ("partition", int(*partition)),
            ("timestamp", int(*timestamp as u64)),
        ]),
        Message::OffsetForTimeResponse { error, offset } => map(vec![
            ("error", int(*error as u16)),
            ("offset", int(*offset)),
        ]),
        other => panic!("no expectation for {other:?}: add it to this test"),
    }
}

/// The `fsync` and `fsync_value` fields of a policy, as the document's table gives them.
fn fsync_kind(p: FsyncPolicy) -> (u8, u64) {
    match p {
        FsyncPolicy::Always => (0, 0),
        FsyncPolicy::Never => (1, 0),
        FsyncPolicy::Interval(d) => (2, d.as_millis() as u64),
        FsyncPolicy::Bytes(n) => (3, n),
    }
}

fn samples() -> Vec<Message> {
    vec![
        Message::ProduceRequest {
            topic: "orders".into(),
            partition: 3,
            acks: Acks::All,
            timeout_ms: 5000,
            batches: Bytes::from_static(b"batch bytes"),
        },
        Message::ProduceResponse {
            error: ErrorCode::NotEnoughReplicas,
            base_offset: 10,
            last_offset: 12,
            acks: Acks::Quorum,
            epoch: 4,
        },
        Message::FetchRequest {
            role: FetchRole::Mirror,
            node_id: "dr-1".into(),
            topic: "orders".into(),
            partition: 2,
            offset: 99,
            last_epoch: 3,
            leader_epoch: 4,
            max_bytes: 1 << 20,
            max_wait_ms: 500,
            durable_end: 0,
            topic_id: [0; 16],
        },
        Message::FetchResponse {
            error: ErrorCode::None,
            epoch: 4,
            high_watermark: 90,
            log_start: 1,
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
            partition: 5,
            offset: 6,
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
        Message::StatusRequest,
        Message::StatusResponse {
            node_id: "n1".into(),
            role: Role::Leader,
            epoch: 4,
            leader: "127.0.0.1:9000".into(),
            partitions: vec![PartitionStatus {
                topic: "t".into(),
                partition: 7,
                role: Role::Leader,
                epoch: 4,
                log_start: 2,
                log_end: 10,
                high_watermark: 8,
                lag_records: 2,
                lag_bytes: 2048,
                lag_ms: 15,
                followers: vec![
                    FollowerStatus {
                        node_id: "n2".into(),
                        log_end: 8,
                        lag: 2,
                        in_sync: true,
                    },
                    FollowerStatus {
                        node_id: "n3".into(),
                        log_end: 1,
                        lag: 9,
                        in_sync: false,
                    },
                ],
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
            error: ErrorCode::None,
            epoch: 6,
        },
        Message::MetadataRequest,
        Message::MetadataResponse {
            leader: "127.0.0.1:9000".into(),
            topics: vec![
                TopicMetadata {
                    topic: "t".into(),
                    topic_id: [7; 16],
                    partitions: 4,
                    partitioner: "jump".into(),
                    config: TopicConfig {
                        log: LogConfig {
                            segment_bytes: 1 << 20,
                            segment_ms: Some(3_600_000),
                            retention_bytes: Some(1 << 30),
                            retention_ms: Some(86_400_000),
                            index_interval_bytes: 512,
                            compression: Compression::Lz4,
                        },
                        fsync: FsyncPolicy::Bytes(1 << 16),
                    },
                },
                TopicMetadata {
                    topic: "u".into(),
                    topic_id: [8; 16],
                    partitions: 1,
                    partitioner: "ring:64".into(),
                    config: TopicConfig {
                        fsync: FsyncPolicy::Interval(std::time::Duration::from_millis(200)),
                        ..TopicConfig::default()
                    },
                },
            ],
        },
        Message::ErrorResponse {
            error: ErrorCode::NotLeader,
            leader: "127.0.0.1:9001".into(),
            message: "not the leader".into(),
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
            error: ErrorCode::StorageError,
            message: "a segment could not be read".into(),
            manifest: Bytes::new(),
        },
        Message::OffsetForTimeRequest {
            topic: "orders".into(),
            partition: 3,
            timestamp: 1_700_000_000_000,
        },
        Message::OffsetForTimeResponse {
            error: ErrorCode::None,
            offset: 1234,
        },
    ]
}

#[test]
fn every_message_table_matches_the_encoded_bytes() {
    let mut seen = std::collections::BTreeSet::new();
    for m in samples() {
        let mut out = Vec::new();
        m.encode(1, &mut out).unwrap();
        let (_, name) = KINDS.iter().find(|(k, _)| *k == m.kind()).unwrap();
        let mut walk = Walk {
            bytes: &out,
            at: FRAME_HEAD_LEN,
        };
        let fields = walk.table(name);
        assert_eq!(
            walk.at,
            out.len(),
            "{name}: the document's fields end early"
        );
        assert_eq!(fields, expected(&m), "{name}");
        seen.insert(m.kind());
    }
    assert_eq!(seen.len(), KINDS.len(), "a sample of every kind");
}

/// Writes one frame of every kind to `fuzz/seeds/frame_decode/` (the committed seeds of the
/// `frame_decode` fuzz target): `cargo test --release --test protocol_doc -- --ignored
/// write_fuzz_seeds`.
#[test]
#[ignore = "writes the fuzz seeds; run by hand after a protocol change"]
fn write_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/frame_decode");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, m) in samples().into_iter().enumerate() {
        let mut out = Vec::new();
        m.encode(i as u32, &mut out).unwrap();
        std::fs::write(dir.join(format!("kind-{:02}", m.kind())), out).unwrap();
    }
}
