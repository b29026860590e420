//! Snapshots streamed from a serving node (`snapshot::create_from_node`, `stratalog snapshot
//! --node`, docs/DR.md): taken from a two-node cluster under an `acks=all` producer that also
//! commits a consumer group, asked first of the follower (which names the leader), verified
//! and restored: the restored store holds exactly the leader's batches up to the snapshot's
//! high watermarks, byte for byte, its group included. And while retention deletes the
//! leader's oldest segments under the snapshot, every snapshot is whole.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;
use stratalog::replication::frame::Acks;
use stratalog::replication::node::{Node, NodeOptions};
use stratalog::replication::transport::Client;
use stratalog::replication::{ErrorCode, Message};
use stratalog::{
    BatchBuilder, Compression, FsyncPolicy, Log, LogConfig, LogOptions, PartitionerKind, Store,
    StoreOptions, TopicConfig, snapshot,
};

const PARTITIONS: u32 = 2;
const TIMEOUT: Duration = Duration::from_secs(30);

fn topic_config(retention_bytes: Option<u64>) -> TopicConfig {
    TopicConfig {
        log: LogConfig {
            // A few KiB: snapshots hold sealed segments and a cut active one.
            segment_bytes: 4096,
            retention_bytes,
            ..Default::default()
        },
        fsync: FsyncPolicy::Never,
    }
}

fn open_store(dir: &Path, retention: Option<Duration>, retention_bytes: Option<u64>) -> Arc<Store> {
    let store = Store::open(
        dir,
        StoreOptions {
            retention_interval: retention,
            ..Default::default()
        },
    )
    .unwrap();
    store
        .create_topic(
            "t",
            PARTITIONS,
            topic_config(retention_bytes),
            PartitionerKind::Jump,
        )
        .unwrap();
    Arc::new(store)
}

fn options(id: &str, leader: Option<String>) -> NodeOptions {
    NodeOptions {
        node_id: id.into(),
        leader,
        replicas: 2,
        min_in_sync: 2,
        replica_lag_timeout: Duration::from_secs(5),
        fetch_wait: Duration::from_millis(100),
        ..Default::default()
    }
}

fn batch(values: &[String]) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    for v in values {
        b.push_value(1_700_000_000_000, v.as_bytes()).unwrap();
    }
    let mut encoded = b.encode(0).unwrap();
    encoded.stamp(0);
    Bytes::copy_from_slice(encoded.as_bytes())
}

/// Every batch of `log` in `start..end`, as raw bytes.
fn batches(log: &Log, start: u64, end: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut next = start;
    while next < end {
        let got = log.read(next, 1 << 20).unwrap();
        assert!(!got.is_empty(), "no batch at {next} below {end}");
        for b in got {
            if b.base_offset() >= end {
                return out;
            }
            assert!(b.last_offset() < end, "a batch straddles the point {end}");
            out.extend_from_slice(b.as_bytes());
            next = b.last_offset() + 1;
        }
    }
    out
}

fn read_only(dir: &Path) -> Log {
    Log::open(
        dir,
        LogOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap()
}

/// What the producer had acknowledged: per partition the end of its acknowledged records, and
/// every acknowledged commit (partition, offset) in order.
#[derive(Default, Clone)]
struct Acked {
    ends: [u64; PARTITIONS as usize],
    commits: Vec<(u32, u64)>,
    /// Every commit sent, acknowledged or not.
    tried: Vec<(u32, u64)>,
}

/// An `acks=all` producer through the leader, committing group "g" every third batch, until
/// `stop`.
fn producer(
    addr: std::net::SocketAddr,
    acked: Arc<Mutex<Acked>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut client = Client::connect(addr, TIMEOUT).unwrap();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let p = (i % u64::from(PARTITIONS)) as u32;
            let values: Vec<String> = (0..1 + i % 5)
                .map(|j| format!("r{i}-{j}-{}", "x".repeat((i % 97) as usize)))
                .collect();
            let answer = client
                .call(&Message::ProduceRequest {
                    topic: "t".into(),
                    partition: p,
                    acks: Acks::All,
                    timeout_ms: 10_000,
                    batches: batch(&values),
                })
                .unwrap();
            let Message::ProduceResponse {
                error: ErrorCode::None,
                last_offset,
                ..
            } = answer
            else {
                // The follower not in sync yet (at the start): try again.
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            acked.lock().unwrap().ends[p as usize] = last_offset + 1;
            if i.is_multiple_of(3) {
                acked.lock().unwrap().tried.push((p, last_offset + 1));
                let answer = client
                    .call(&Message::OffsetCommitRequest {
                        group: "g".into(),
                        topic: "t".into(),
                        partition: p,
                        offset: last_offset + 1,
                        epoch: 0,
                    })
                    .unwrap();
                if let Message::OffsetCommitResponse {
                    error: ErrorCode::None,
                } = answer
                {
                    acked.lock().unwrap().commits.push((p, last_offset + 1));
                }
            }
            i += 1;
        }
    })
}

fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < TIMEOUT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One snapshot from a two-node cluster under load, restored and compared with the leader.
/// Returns the batch bytes compared.
fn cycle(root: &Path, rng: &mut impl Rng) -> u64 {
    let (a, b) = (
        open_store(&root.join("a"), None, None),
        open_store(&root.join("b"), None, None),
    );
    let leader = Node::start(a.clone(), options("a", None)).unwrap();
    let follower = Node::start(b.clone(), options("b", Some(leader.addr().to_string()))).unwrap();
    let acked: Arc<Mutex<Acked>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let producing = producer(leader.addr(), acked.clone(), stop.clone());
    eventually("a first acknowledged write", || {
        acked.lock().unwrap().ends.iter().any(|&e| e > 0)
    });
    std::thread::sleep(Duration::from_micros(rng.random_range(0..30_000)));
    let before = acked.lock().unwrap().clone();
    let snap = root.join("snap");
    // The follower first: it answers NotLeader with the leader's address, which is followed.
    let report = snapshot::create_from_node(
        &[follower.addr().to_string(), leader.addr().to_string()],
        &snap,
    )
    .unwrap();
    assert_eq!(report.node, leader.addr().to_string());
    std::thread::sleep(Duration::from_micros(rng.random_range(0..5_000)));
    stop.store(true, Ordering::Relaxed);
    producing.join().unwrap();
    let all = acked.lock().unwrap().clone();

    snapshot::verify(&snap).unwrap();
    let restored_dir = root.join("restored");
    snapshot::restore(&snap, &restored_dir).unwrap();
    let restored = Store::open(
        &restored_dir,
        StoreOptions {
            retention_interval: None,
            ..Default::default()
        },
    )
    .unwrap();
    let mut compared = 0;
    for part in &report.manifest.partitions {
        let (source, copy): (Arc<Log>, Arc<Log>) = if part.dir.starts_with("__consumer_offsets") {
            (
                Arc::new(read_only(&root.join("a").join(&part.dir))),
                Arc::new(read_only(&restored_dir.join(&part.dir))),
            )
        } else {
            let p: u32 = part.dir.strip_prefix("t/").unwrap().parse().unwrap();
            // Every write acknowledged at `all` before the snapshot began is below the high
            // watermark it was cut at; the cut is never past what the leader has.
            assert!(
                part.end_offset >= before.ends[p as usize],
                "{}: cut at {}, below the acknowledged {}",
                part.dir,
                part.end_offset,
                before.ends[p as usize]
            );
            (
                a.partition("t", p).unwrap(),
                restored.partition("t", p).unwrap(),
            )
        };
        assert_eq!(
            (copy.start_offset(), copy.end_offset()),
            (part.start_offset, part.end_offset),
            "{}",
            part.dir
        );
        assert!(source.end_offset() >= part.end_offset);
        let want = batches(&source, part.start_offset, part.end_offset);
        let got = batches(&copy, part.start_offset, part.end_offset);
        assert!(want == got, "{}: the restored bytes differ", part.dir);
        compared += got.len() as u64;
    }
    for p in 0..PARTITIONS {
        let end = report
            .manifest
            .partitions
            .iter()
            .find(|m| m.dir == format!("t/{p}"))
            .unwrap()
            .end_offset;
        let committed = restored.committed("g", "t", p).map(|c| c.offset);
        let floor = before
            .commits
            .iter()
            .filter(|c| c.0 == p)
            .map(|c| c.1)
            .max();
        assert!(
            committed >= floor,
            "partition {p}: restored commit {committed:?} lost the acknowledged {floor:?}"
        );
        if let Some(c) = committed {
            assert!(
                all.tried.contains(&(p, c)),
                "partition {p}: {c} was never committed"
            );
            assert!(c <= end, "partition {p}: commit {c} past the cut {end}");
        }
    }
    assert_eq!(restored.topic("t").unwrap().id, a.topic("t").unwrap().id);
    restored.close().unwrap();
    follower.stop();
    leader.stop();
    compared
}

#[test]
fn snapshots_from_a_node_under_acks_all_load_restore_the_leaders_bytes_up_to_the_cut() {
    let cycles: u64 = std::env::var("SNAPSHOT_NODE_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut rng = rand::rng();
    let mut bytes = 0;
    for _ in 0..cycles {
        let tmp = tempfile::tempdir().unwrap();
        bytes += cycle(tmp.path(), &mut rng);
    }
    println!(
        "{cycles} streamed snapshot/restore cycles under acks=all load, {bytes} batch bytes compared"
    );
}

/// Retention runs every millisecond on the leader and keeps about 3 segments per partition
/// while a producer writes: segments are deleted under the snapshot's plan and copy. Every
/// snapshot must still come whole (its files held open, its plan started over when a segment
/// went away between listing and opening), verify, and restore with the leader's bytes.
#[test]
fn snapshots_from_a_node_stay_whole_while_retention_deletes_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let a = open_store(
        &root.join("a"),
        Some(Duration::from_millis(1)),
        Some(12 << 10),
    );
    let mut leader_options = options("a", None);
    leader_options.replicas = 1;
    leader_options.min_in_sync = 1;
    let leader = Node::start(a.clone(), leader_options).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (a, stop) = (a.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let log = a.partition("t", (i % 2) as u32).unwrap();
                log.append_records(&[format!("{i:0>200}")]).unwrap();
                i += 1;
            }
        })
    };
    let mut starts_moved = 0;
    let mut first_start = None;
    for round in 0..20 {
        let snap = root.join(format!("snap{round}"));
        let report = snapshot::create_from_node(&[leader.addr().to_string()], &snap).unwrap();
        snapshot::verify(&snap).unwrap();
        let restored_dir = root.join(format!("restored{round}"));
        snapshot::restore(&snap, &restored_dir).unwrap();
        let restored = Store::open(
            &restored_dir,
            StoreOptions {
                retention_interval: None,
                ..Default::default()
            },
        )
        .unwrap();
        let part = report
            .manifest
            .partitions
            .iter()
            .find(|p| p.dir == "t/0")
            .unwrap();
        if first_start.is_some_and(|s| s != part.start_offset) {
            starts_moved += 1;
        }
        first_start.get_or_insert(part.start_offset);
        let copy = restored.partition("t", 0).unwrap();
        assert_eq!(
            (copy.start_offset(), copy.end_offset()),
            (part.start_offset, part.end_offset)
        );
        // The leader may have deleted the start since: compare what it still has.
        let source = a.partition("t", 0).unwrap();
        let from = source.start_offset().max(part.start_offset);
        if from < part.end_offset {
            assert!(
                batches(&source, from, part.end_offset) == batches(&copy, from, part.end_offset),
                "round {round}: the restored bytes differ"
            );
        }
        restored.close().unwrap();
        std::fs::remove_dir_all(&snap).unwrap();
        std::fs::remove_dir_all(&restored_dir).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    leader.stop();
    assert!(
        starts_moved > 0,
        "retention never moved the start: the test did not test it"
    );
    println!("20 snapshots while retention ran; the start had moved in {starts_moved}");
}

/// `stratalog snapshot --node ADDR --out SNAP` against a running node: the snapshot verifies
/// (`verify --snapshot`), restores, and holds the node's records and group; `--dir` with
/// `--node` is refused.
#[test]
fn the_snapshot_command_takes_one_from_a_node() {
    let bin = env!("CARGO_BIN_EXE_stratalog");
    let tmp = tempfile::tempdir().unwrap();
    let a = open_store(&tmp.path().join("a"), None, None);
    let log = a.partition("t", 1).unwrap();
    for i in 0..100 {
        log.append_records(&[format!("v{i}")]).unwrap();
    }
    a.commit("g", "t", 1, 60, log.leader_epoch()).unwrap();
    let node = Node::start(a.clone(), NodeOptions::default()).unwrap();
    let snap = tmp.path().join("snap");
    let run = |args: &[&str]| std::process::Command::new(bin).args(args).output().unwrap();
    let out = run(&[
        "snapshot",
        "--node",
        &node.addr().to_string(),
        "--out",
        snap.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("t/1: offsets 0..100"), "{text}");
    let out = run(&["verify", "--snapshot", snap.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = tmp.path().join("restored");
    let out = run(&[
        "restore",
        "--snapshot",
        snap.to_str().unwrap(),
        "--dir",
        restored.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = Store::open(&restored, StoreOptions::default()).unwrap();
    let copy = store.partition("t", 1).unwrap();
    assert_eq!(batches(&copy, 0, 100), batches(&log, 0, 100));
    assert_eq!(store.committed("g", "t", 1).map(|c| c.offset), Some(60));
    let out = run(&[
        "snapshot",
        "--node",
        &node.addr().to_string(),
        "--dir",
        tmp.path().join("a").to_str().unwrap(),
        "--out",
        tmp.path().join("both").to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "--dir with --node accepted");
    node.stop();
}

/// A node whose stream does not match the `MANIFEST` it ends with (a file's bytes differ from
/// its CRC-32C) is refused, naming the file, and nothing is left: no `out`, no temporary
/// directory.
#[test]
fn a_stream_that_does_not_match_its_manifest_is_refused() {
    use stratalog::format::{FileCopy, Manifest, ManifestFile};
    use stratalog::replication::{read_frame, write_frame};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        // One connection: a chunk, then a MANIFEST with another CRC for it.
        let (mut conn, _) = listener.accept().unwrap();
        let (corr, request) = read_frame(&mut conn).unwrap().unwrap();
        assert!(matches!(request, Message::SnapshotRequest { .. }));
        let data = b"registry bytes".to_vec();
        write_frame(
            &mut conn,
            corr,
            &Message::SnapshotChunk {
                path: "stratalog.store".into(),
                offset: 0,
                data: Bytes::from(data.clone()),
            },
        )
        .unwrap();
        let manifest = Manifest {
            snapshot_id: 1,
            created_ms: 0,
            partitions: vec![],
            files: vec![ManifestFile {
                path: "stratalog.store".into(),
                len: data.len() as u64,
                crc32c: crc32c::crc32c(&data) ^ 1,
                how: FileCopy::Copied,
            }],
        };
        write_frame(
            &mut conn,
            corr,
            &Message::SnapshotEnd {
                error: ErrorCode::None,
                message: String::new(),
                manifest: Bytes::from(manifest.encode()),
            },
        )
        .unwrap();
    });
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("snap");
    // A node that sent a snapshot which does not check is not asked again: its error is the
    // answer (the listener is gone by then; a retry would report a refused connection).
    let err = snapshot::create_from_node(std::slice::from_ref(&addr), &out).unwrap_err();
    server.join().unwrap();
    let text = err.to_string();
    assert!(
        text.contains("stratalog.store") && text.contains("CRC-32C"),
        "{text}"
    );
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "a temporary directory was left"
    );
}
