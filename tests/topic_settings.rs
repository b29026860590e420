//! Issue 11's two last gaps, with real nodes on 127.0.0.1 (in this process, over loopback TCP)
//! and the `stratalog` binary as a client:
//! - a topic's settings (segment size and age, retention, index interval, compression, fsync
//!   policy) reach a follower and a mirror, at creation and when they change, and are kept
//!   after a promote (a mirror keeps its own fsync policy once it created the topic);
//! - `consume --node FOLLOWER --from-time MS` prints what `consume --dir LEADER --from-time MS`
//!   prints, for a time before the first record, inside, on a record, and after the last.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use stratalog::replication::frame::Acks;
use stratalog::replication::node::{Node, NodeOptions};
use stratalog::replication::transport::Client;
use stratalog::replication::{ErrorCode, Message};
use stratalog::{
    BatchBuilder, Compression, FsyncPolicy, LogConfig, PartitionerKind, Store, StoreOptions,
    TopicConfig,
};

const TIMEOUT: Duration = Duration::from_secs(30);

fn open(dir: &std::path::Path) -> Arc<Store> {
    Arc::new(Store::open(dir, StoreOptions::default()).unwrap())
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

/// Waits until `cond` holds, or fails after the timeout.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < TIMEOUT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Settings where every field differs from `TopicConfig::default()`.
fn unusual() -> TopicConfig {
    let config = TopicConfig {
        log: LogConfig {
            segment_bytes: 64 << 10,
            segment_ms: Some(600_000),
            retention_bytes: Some(10 << 20),
            retention_ms: Some(7 * 86_400_000),
            index_interval_bytes: 1024,
            compression: Compression::Lz4,
        },
        fsync: FsyncPolicy::Interval(Duration::from_millis(100)),
    };
    let d = TopicConfig::default();
    assert!(
        config.log.segment_bytes != d.log.segment_bytes
            && config.log.segment_ms != d.log.segment_ms
            && config.log.retention_bytes != d.log.retention_bytes
            && config.log.retention_ms != d.log.retention_ms
            && config.log.index_interval_bytes != d.log.index_interval_bytes
            && config.log.compression != d.log.compression
            && config.fsync != d.fsync,
        "every setting differs from the default"
    );
    config
}

fn config_of(store: &Store, topic: &str) -> Option<TopicConfig> {
    store.topic(topic).ok().map(|t| t.config)
}

#[test]
fn topic_settings_reach_followers_and_mirrors_and_survive_a_promote() {
    let tmp = tempfile::tempdir().unwrap();
    let (store_a, store_b, store_m) = (
        open(&tmp.path().join("a")),
        open(&tmp.path().join("b")),
        open(&tmp.path().join("m")),
    );
    let a = Node::start(store_a.clone(), options("a", None)).unwrap();
    let b = Node::start(store_b.clone(), options("b", Some(a.addr().to_string()))).unwrap();
    let m = Node::start(
        store_m.clone(),
        NodeOptions {
            mirror: true,
            ..options("m", Some(a.addr().to_string()))
        },
    )
    .unwrap();

    // Created on the running leader: the follower and the mirror create it with its settings.
    let created = unusual();
    store_a
        .create_topic("s", 2, created, PartitionerKind::Modulo)
        .unwrap();
    eventually("the topic on the follower and the mirror", || {
        config_of(&store_b, "s").is_some() && config_of(&store_m, "s").is_some()
    });
    assert_eq!(config_of(&store_b, "s"), Some(created), "follower");
    assert_eq!(config_of(&store_m, "s"), Some(created), "mirror");
    assert_eq!(store_b.topic("s").unwrap().partitions(), 2);
    // In effect, not only recorded: 300 KiB of records roll the 64 KiB segments of every copy.
    let mut client = Client::connect(a.addr(), TIMEOUT).unwrap();
    eventually("the follower in sync on s/0", || {
        match client.call(&Message::StatusRequest).unwrap() {
            Message::StatusResponse { partitions, .. } => partitions.iter().any(|p| {
                p.topic == "s" && p.partition == 0 && p.followers.iter().any(|f| f.in_sync)
            }),
            _ => false,
        }
    });
    for i in 0..30 {
        let mut batch = BatchBuilder::new(Compression::None);
        for j in 0..10 {
            batch
                .push_value(
                    1_700_000_000_000,
                    format!("{i}-{j}-{}", "x".repeat(1000)).as_bytes(),
                )
                .unwrap();
        }
        let mut encoded = batch.encode(0).unwrap();
        encoded.stamp(0);
        match client
            .call(&Message::ProduceRequest {
                topic: "s".into(),
                partition: 0,
                acks: Acks::All,
                timeout_ms: 10_000,
                batches: Bytes::copy_from_slice(encoded.as_bytes()),
            })
            .unwrap()
        {
            Message::ProduceResponse {
                error: ErrorCode::None,
                ..
            } => {}
            other => panic!("produce to s/0: {other:?}"),
        }
    }
    let end = store_a.partition("s", 0).unwrap().end_offset();
    assert_eq!(end, 300);
    for (who, store) in [
        ("leader", &store_a),
        ("follower", &store_b),
        ("mirror", &store_m),
    ] {
        eventually("every record on every copy", || {
            store.partition("s", 0).unwrap().end_offset() == end
        });
        let dir = stratalog::store::partition_dir(store.dir(), "s", 0);
        let segments = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                stratalog::format::parse_segment_name(name.to_str().unwrap()).is_some()
            })
            .count();
        assert!(
            segments >= 4,
            "{who}: {segments} segment files for 300 KiB of records"
        );
    }

    // Changed on the leader: the follower takes every change; the mirror every change but the
    // fsync policy, which it keeps from the topic's creation.
    let mut changed = created;
    changed.log.segment_bytes = 128 << 10;
    changed.log.segment_ms = None;
    changed.log.retention_bytes = None;
    changed.log.retention_ms = Some(3_600_000);
    changed.log.index_interval_bytes = 2048;
    changed.log.compression = Compression::None;
    changed.fsync = FsyncPolicy::Bytes(1 << 20);
    store_a.set_topic_config("s", changed).unwrap();
    let mirrored = TopicConfig {
        fsync: created.fsync,
        ..changed
    };
    eventually("the change on the follower and the mirror", || {
        config_of(&store_b, "s") == Some(changed) && config_of(&store_m, "s") == Some(mirrored)
    });
    // The leader still takes records into the changed topic.
    let mut batch = BatchBuilder::new(Compression::None);
    batch.push_value(1_700_000_000_000, b"x").unwrap();
    let mut encoded = batch.encode(0).unwrap();
    encoded.stamp(0);
    eventually("a produce at acks=all", || {
        matches!(
            client.call(&Message::ProduceRequest {
                topic: "s".into(),
                partition: 0,
                acks: Acks::All,
                timeout_ms: 5_000,
                batches: Bytes::copy_from_slice(encoded.as_bytes()),
            }),
            Ok(Message::ProduceResponse {
                error: ErrorCode::None,
                ..
            })
        )
    });
    drop(client);

    // The leader goes, the follower is promoted: the topic is kept as it was.
    a.stop();
    b.promote(0).unwrap();
    assert_eq!(config_of(&store_b, "s"), Some(changed), "after the promote");
    // A topic the new leader creates reaches the old leader, back as its follower.
    let mut later = unusual();
    later.log.retention_bytes = Some(1 << 30);
    later.fsync = FsyncPolicy::Never;
    store_b
        .create_topic("s2", 1, later, PartitionerKind::Jump)
        .unwrap();
    let a = Node::start(store_a.clone(), options("a", Some(b.addr().to_string()))).unwrap();
    eventually("the new leader's topic on the old leader", || {
        config_of(&store_a, "s2") == Some(later)
    });
    assert_eq!(config_of(&store_a, "s"), Some(changed));
    a.stop();
    m.stop();
    b.stop();
}

/// Runs the `stratalog` binary, bounded in time (the process is killed if it overruns or the
/// test fails); returns its stdout, failing on a non-zero exit.
fn cli(args: &[&str]) -> String {
    let child = Command::new(cluster::BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut proc = cluster::Proc(child);
    let mut stdout = proc.0.stdout.take().unwrap();
    let mut stderr = proc.0.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).unwrap();
        out
    });
    let err_reader = std::thread::spawn(move || {
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        err
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = proc.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "stratalog {args:?} did not finish in {TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let (out, err) = (reader.join().unwrap(), err_reader.join().unwrap());
    assert!(status.success(), "stratalog {args:?} failed: {err}");
    out
}

const BASE_MS: i64 = 1_700_000_000_000;

#[test]
fn consume_node_from_time_through_a_follower_prints_what_the_dir_form_prints() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let (store_a, store_b) = (open(&dir_a), open(&dir_b));
    // Small segments and a dense time index, so that the lookup crosses segments.
    let config = TopicConfig {
        log: LogConfig {
            segment_bytes: 4096,
            index_interval_bytes: 256,
            ..LogConfig::default()
        },
        ..TopicConfig::default()
    };
    for s in [&store_a, &store_b] {
        s.create_topic("t", 2, config, PartitionerKind::Jump)
            .unwrap();
    }
    // A lag timeout longer than the test: the follower stays in the in-sync set once stopped,
    // so that the leader holds records above its high watermark at the end.
    let slow = |o: NodeOptions| NodeOptions {
        replica_lag_timeout: Duration::from_secs(120),
        ..o
    };
    let a = Node::start(store_a.clone(), slow(options("a", None))).unwrap();
    let b = Node::start(
        store_b.clone(),
        slow(options("b", Some(a.addr().to_string()))),
    )
    .unwrap();

    // 40 batches of 5 records per partition, timestamps rising by 10 ms per record (each
    // partition interleaved with the other), acknowledged at `all`.
    let mut client = Client::connect(a.addr(), TIMEOUT).unwrap();
    // A produce refused at `all` (the follower not in sync yet) is still appended: wait for
    // the follower first, then produce each batch once.
    eventually("the follower in sync on both partitions", || {
        match client.call(&Message::StatusRequest).unwrap() {
            Message::StatusResponse { partitions, .. } => partitions
                .iter()
                .all(|p| p.followers.iter().any(|f| f.in_sync)),
            _ => false,
        }
    });
    let mut ts = BASE_MS;
    for i in 0..80u32 {
        let partition = i % 2;
        let mut batch = BatchBuilder::new(Compression::None);
        for j in 0..5 {
            batch
                .push_value(ts, format!("p{partition}-b{i}-r{j}").as_bytes())
                .unwrap();
            ts += 10;
        }
        let mut encoded = batch.encode(0).unwrap();
        encoded.stamp(0);
        let request = Message::ProduceRequest {
            topic: "t".into(),
            partition,
            acks: Acks::All,
            timeout_ms: 5_000,
            batches: Bytes::copy_from_slice(encoded.as_bytes()),
        };
        match client.call(&request).unwrap() {
            Message::ProduceResponse {
                error: ErrorCode::None,
                ..
            } => {}
            other => panic!("produce of batch {i}: {other:?}"),
        }
    }
    let last_ms = ts - 10;
    // The `--dir` form reads to the log end, the `--node` form to the high watermark: the same
    // once both are there.
    for p in 0..2 {
        let log = store_a.partition("t", p).unwrap();
        eventually("the high watermark at the log end", || {
            log.high_watermark() == log.end_offset()
        });
        assert_eq!(log.end_offset(), 200);
    }

    let dir_a = dir_a.to_str().unwrap().to_string();
    let follower = b.addr().to_string();
    let times: [(&str, i64); 7] = [
        ("long before the first record", 0),
        ("just before the first record", BASE_MS - 1),
        ("on the first record", BASE_MS),
        ("between two records", BASE_MS + 123 * 10 + 5),
        ("on a record in a later segment", BASE_MS + 300 * 10),
        ("on the last record", last_ms),
        ("after the last record", last_ms + 1),
    ];
    let mut checked_records = 0;
    for (what, t) in times {
        let t = t.to_string();
        for (select, name) in [("--topic", "t"), ("--log", "t/1")] {
            let from_dir = cli(&[
                "consume",
                "--dir",
                &dir_a,
                select,
                name,
                "--from-time",
                &t,
                "--format",
                "json",
            ]);
            let from_node = cli(&[
                "consume",
                "--node",
                &follower,
                select,
                name,
                "--from-time",
                &t,
                "--format",
                "json",
            ]);
            assert_eq!(
                from_node, from_dir,
                "consume {select} {name} --from-time {t} ({what}): --node (through the follower) \
                 and --dir (on the leader) differ"
            );
            checked_records += from_dir.lines().count();
            // The first line (if any) is the first record at or after the time.
            if let Some(first) = from_dir.lines().next() {
                let v: serde_json::Value = serde_json::from_str(first).unwrap();
                assert!(v["timestamp"].as_i64().unwrap() >= t.parse::<i64>().unwrap());
            }
            match what {
                "after the last record" => assert_eq!(from_dir, "", "{what}"),
                "long before the first record" | "just before the first record" => {
                    let want = if select == "--topic" { 400 } else { 200 };
                    assert_eq!(from_dir.lines().count(), want, "{what}: every record");
                }
                _ => {}
            }
        }
    }
    println!("--from-time: --node and --dir agree over {checked_records} records printed");

    // A follower does not answer itself: it names its leader.
    let ask = |client: &mut Client, partition: u32, timestamp: i64| {
        client
            .call(&Message::OffsetForTimeRequest {
                topic: "t".into(),
                partition,
                timestamp,
            })
            .unwrap()
    };
    let mut to_follower = Client::connect(b.addr(), TIMEOUT).unwrap();
    match ask(&mut to_follower, 0, BASE_MS) {
        Message::ErrorResponse {
            error: ErrorCode::NotLeader,
            leader,
            ..
        } => assert_eq!(leader, a.addr().to_string()),
        other => panic!("a follower answered {other:?}"),
    }
    drop(to_follower);
    // Records above the high watermark are not found: the follower is gone (still in the
    // in-sync set), and a batch acknowledged at `leader` stays above it.
    b.stop();
    let mut batch = BatchBuilder::new(Compression::None);
    batch.push_value(last_ms + 1_000, b"uncommitted").unwrap();
    batch
        .push_value(last_ms + 2_000, b"uncommitted too")
        .unwrap();
    let mut encoded = batch.encode(0).unwrap();
    encoded.stamp(0);
    match client
        .call(&Message::ProduceRequest {
            topic: "t".into(),
            partition: 0,
            acks: Acks::Leader,
            timeout_ms: 5_000,
            batches: Bytes::copy_from_slice(encoded.as_bytes()),
        })
        .unwrap()
    {
        Message::ProduceResponse {
            error: ErrorCode::None,
            base_offset: 200,
            ..
        } => {}
        other => panic!("produce at leader: {other:?}"),
    }
    let log = store_a.partition("t", 0).unwrap();
    assert_eq!((log.end_offset(), log.high_watermark()), (202, 200));
    assert_eq!(
        log.offset_for_timestamp(last_ms + 2_000).unwrap(),
        Some(201)
    );
    for (t, want) in [
        (last_ms + 2_000, 200),
        (last_ms + 1_000, 200),
        (last_ms + 1, 200),
        (BASE_MS + 10, 1),
    ] {
        match ask(&mut client, 0, t) {
            Message::OffsetForTimeResponse {
                error: ErrorCode::None,
                offset,
            } => assert_eq!(offset, want, "offset for time {t}"),
            other => panic!("offset for time {t}: {other:?}"),
        }
    }
    // The `--node` form prints nothing there yet; the `--dir` form reads the leader's log end.
    let t = (last_ms + 2_000).to_string();
    let addr = a.addr().to_string();
    let args = ["--log", "t/0", "--from-time", &t, "--format", "json"];
    let from_node = cli(&[&["consume", "--node", &addr][..], &args].concat());
    assert_eq!(from_node, "");
    let from_dir = cli(&[&["consume", "--dir", &dir_a][..], &args].concat());
    assert!(from_dir.contains("uncommitted too"), "{from_dir}");
    drop(client);
    a.stop();
}
