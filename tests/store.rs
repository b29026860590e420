//! The store: topics created, listed, described, changed and deleted; settings persisted across
//! reopen; partitions opened lazily; background retention; a crash during deletion finished at
//! the next open; the registry's checks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stratalog::storage::{FsStorage, SimStorage, Storage};
use stratalog::store::{PartitionerKind, Store, StoreOptions, TopicConfig, partition_dir};
use stratalog::{Error, FsyncPolicy, LogConfig};

fn options(storage: Arc<dyn Storage>) -> StoreOptions {
    StoreOptions {
        storage,
        create: true,
        retention_interval: None,
        ..StoreOptions::default()
    }
}

fn small() -> TopicConfig {
    TopicConfig {
        log: LogConfig {
            segment_bytes: 2048,
            index_interval_bytes: 256,
            ..Default::default()
        },
        fsync: FsyncPolicy::Always,
    }
}

#[test]
fn topics_crud_and_settings_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options(FsStorage::shared())).unwrap();
    let a = store
        .create_topic("alpha", 3, small(), PartitionerKind::Jump)
        .unwrap();
    assert_eq!(a.partitions(), 3);
    store
        .create_topic("beta", 1, TopicConfig::default(), PartitionerKind::Modulo)
        .unwrap();
    assert!(matches!(
        store.create_topic("alpha", 1, small(), PartitionerKind::Jump),
        Err(Error::TopicExists { .. })
    ));
    for bad in ["", "a/b", "..", "__x", "sp ace", &"x".repeat(201)] {
        assert!(
            matches!(
                store.create_topic(bad, 1, small(), PartitionerKind::Jump),
                Err(Error::InvalidArgument(_))
            ),
            "{bad:?} accepted"
        );
    }
    assert!(matches!(
        store.create_topic("zero", 0, small(), PartitionerKind::Jump),
        Err(Error::InvalidArgument(_))
    ));
    let names: Vec<String> = store
        .topics()
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["alpha", "beta"]);

    // Write to two partitions; change settings; add partitions.
    for p in 0..2 {
        let log = store.partition("alpha", p).unwrap();
        for i in 0..50 {
            log.append_records(&[format!("p{p}-{i}")])
                .unwrap()
                .receipt
                .wait()
                .unwrap();
        }
    }
    assert!(matches!(
        store.partition("alpha", 3),
        Err(Error::UnknownPartition { partitions: 3, .. })
    ));
    assert!(matches!(
        store.partition("nope", 0),
        Err(Error::UnknownTopic { .. })
    ));
    let mut changed = small();
    changed.log.retention_bytes = Some(10_000);
    changed.fsync = FsyncPolicy::Interval(Duration::from_millis(5));
    store.set_topic_config("alpha", changed).unwrap();
    assert_eq!(
        store
            .partition("alpha", 0)
            .unwrap()
            .config()
            .retention_bytes,
        Some(10_000),
        "an open partition gets the new settings at once"
    );
    let grown = store.add_partitions("alpha", 5).unwrap();
    assert_eq!(grown.versions.len(), 2);
    assert_eq!(grown.current().start_offsets, vec![50, 50, 0]);
    assert!(store.add_partitions("alpha", 4).is_err(), "cannot shrink");
    store.close().unwrap();

    let store = Store::open(dir.path(), options(FsStorage::shared())).unwrap();
    let a = store.topic("alpha").unwrap();
    println!(
        "reopened: alpha has {} partitions, {} versions, config {:?}",
        a.partitions(),
        a.versions.len(),
        a.config
    );
    assert_eq!(a.config, changed);
    assert_eq!(a.partitions(), 5);
    assert_eq!(a.versions[1].start_offsets, vec![50, 50, 0]);
    assert_eq!(store.partition("alpha", 1).unwrap().end_offset(), 50);
    assert_eq!(store.partition("alpha", 4).unwrap().end_offset(), 0);

    // Delete: files gone, name free again, and the new topic starts empty.
    let p0 = partition_dir(dir.path(), "alpha", 0);
    assert!(p0.join("log.meta").exists());
    assert!(matches!(
        {
            let held = store.partition("alpha", 0).unwrap();
            let r = store.delete_topic("alpha");
            drop(held);
            r
        },
        Err(Error::InUse { .. })
    ));
    store.delete_topic("alpha").unwrap();
    assert!(!p0.exists(), "partition directory removed");
    assert!(matches!(
        store.topic("alpha"),
        Err(Error::UnknownTopic { .. })
    ));
    store
        .create_topic("alpha", 1, small(), PartitionerKind::Jump)
        .unwrap();
    assert_eq!(store.partition("alpha", 0).unwrap().end_offset(), 0);
    store.close().unwrap();
    println!("delete: partition files removed, name reusable, new topic empty");
}

#[test]
fn a_second_open_is_refused_while_the_store_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options(FsStorage::shared())).unwrap();
    let second = Store::open(dir.path(), options(FsStorage::shared()));
    assert!(matches!(second, Err(Error::Locked { .. })), "{second:?}");
    drop(store);
    Store::open(dir.path(), options(FsStorage::shared())).unwrap();
    let missing = tempfile::tempdir().unwrap();
    let refused = Store::open(
        missing.path(),
        StoreOptions {
            create: false,
            ..options(FsStorage::shared())
        },
    );
    assert!(matches!(refused, Err(Error::InvalidArgument(_))));
}

#[test]
fn background_retention_deletes_old_segments_while_appends_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        StoreOptions {
            retention_interval: Some(Duration::from_millis(20)),
            ..options(FsStorage::shared())
        },
    )
    .unwrap();
    let mut config = small();
    config.log.retention_bytes = Some(8 * 1024);
    store
        .create_topic("r", 2, config, PartitionerKind::RoundRobin)
        .unwrap();
    let value = vec![b'v'; 200];
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for p in 0..2 {
        let log = store.partition("r", p).unwrap();
        for _ in 0..400 {
            let t = Instant::now();
            log.append_records(&[&value])
                .unwrap()
                .receipt
                .wait()
                .unwrap();
            slowest = slowest.max(t.elapsed());
        }
    }
    // The thread runs a pass every 20 ms: wait until it has brought both partitions under
    // the limit (one pass may have run while the second partition was still being written).
    let size_of = |p: u32| -> u64 {
        let log = store.partition("r", p).unwrap();
        std::fs::read_dir(log.dir())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            // Retention may delete a segment between the listing and the stat: it counts 0.
            .map(|e| e.metadata().map_or(0, |m| m.len()))
            .sum()
    };
    let limit = 8 * 1024 + 2048;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut starts, mut sizes) = (vec![0; 2], vec![0; 2]);
    while Instant::now() < deadline {
        starts = (0..2)
            .map(|p| store.partition("r", p).unwrap().start_offset())
            .collect();
        sizes = (0..2).map(size_of).collect();
        if sizes.iter().all(|&s| s <= limit) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "background retention: 2 partitions x 400 appends of 200 B in {:?} (slowest append {:?}); after retention start offsets {starts:?}, segment bytes {sizes:?} (limit 8192 + one segment)",
        started.elapsed(),
        slowest
    );
    assert!(
        starts.iter().all(|&s| s > 0),
        "retention never ran: {starts:?}"
    );
    assert!(sizes.iter().all(|&s| s <= limit), "{sizes:?}");
    for p in 0..2 {
        assert_eq!(store.partition("r", p).unwrap().end_offset(), 400);
    }
    store.close().unwrap();
}

#[test]
fn retention_reaches_partitions_that_are_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = small();
    {
        let store = Store::open(dir.path(), options(FsStorage::shared())).unwrap();
        store
            .create_topic("r", 3, config, PartitionerKind::Jump)
            .unwrap();
        let log = store.partition("r", 1).unwrap();
        for _ in 0..100 {
            log.append_records(&[vec![b'x'; 200]]).unwrap();
        }
        log.flush().unwrap();
        drop(log);
        config.log.retention_bytes = Some(4096);
        store.set_topic_config("r", config).unwrap();
        store.close().unwrap();
    }
    let store = Store::open(dir.path(), options(FsStorage::shared())).unwrap();
    let pass = store.apply_retention();
    println!("retention pass over closed partitions: {pass:?}");
    assert_eq!(pass.partitions, 3);
    assert!(pass.segments_deleted > 0, "{pass:?}");
    assert!(store.partition("r", 1).unwrap().start_offset() > 0);
}

#[test]
fn registry_is_crash_safe_and_checked() {
    // A crash (power loss) at any point of create/delete leaves the old or the new registry.
    let sim = SimStorage::new(7);
    let dir = std::path::Path::new("/data");
    let store = Store::open(dir, options(sim.shared())).unwrap();
    store
        .create_topic("keep", 2, small(), PartitionerKind::Jump)
        .unwrap();
    let log = store.partition("keep", 0).unwrap();
    log.append_records(&["a", "b"])
        .unwrap()
        .receipt
        .wait()
        .unwrap();
    drop(log);
    store
        .create_topic("gone", 2, small(), PartitionerKind::Jump)
        .unwrap();
    store
        .partition("gone", 1)
        .unwrap()
        .append_records(&["z"])
        .unwrap()
        .receipt
        .wait()
        .unwrap();
    store.delete_topic("gone").unwrap();
    sim.power_loss(stratalog::storage::PowerLoss::DropUnsynced);
    drop(store); // its handles are stale now: closing fails and changes nothing
    let store = Store::open(dir, options(sim.shared())).unwrap();
    let names: Vec<String> = store
        .topics()
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["keep"]);
    assert_eq!(store.partition("keep", 0).unwrap().end_offset(), 2);
    assert!(
        sim.shared()
            .list(&partition_dir(dir, "gone", 1))
            .map_or(true, |n| n.is_empty()),
        "files of the deleted topic are gone"
    );
    println!("power loss after create/append/delete: registry {names:?}, data kept");

    // A flipped byte in the registry is reported as corruption, not ignored.
    let fs_dir = tempfile::tempdir().unwrap();
    let s = Store::open(fs_dir.path(), options(FsStorage::shared())).unwrap();
    s.create_topic("t", 1, small(), PartitionerKind::Jump)
        .unwrap();
    s.close().unwrap();
    let path = fs_dir.path().join("stratalog.store");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let err = Store::open(fs_dir.path(), options(FsStorage::shared())).unwrap_err();
    println!("corrupt registry: {err}");
    assert!(err.is_corruption(), "{err:?}");
}

fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:").map(|n| n.trim().parse().ok()))
                .flatten()
        })
        .unwrap_or(0)
}

/// Polls a future to completion on this thread (no runtime).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_secs(1));
    }
}

#[test]
fn one_shared_flusher_thread_syncs_every_partition() {
    // 300 open partitions under an interval policy: no thread per partition.
    let sim = SimStorage::new(11);
    let dir = std::path::Path::new("/shared");
    let store = Store::open(dir, options(sim.shared())).unwrap();
    let config = TopicConfig {
        fsync: FsyncPolicy::Interval(Duration::from_millis(5)),
        ..small()
    };
    store
        .create_topic("i", 300, config, PartitionerKind::Jump)
        .unwrap();
    let before = threads();
    for p in 0..300 {
        let log = store.partition("i", p).unwrap();
        log.append_records(&[format!("i{p}")]).unwrap();
    }
    let after = threads();
    // Interval: the shared thread fsyncs each partition with new bytes within about 5 ms.
    std::thread::sleep(Duration::from_millis(300));
    sim.power_loss(stratalog::storage::PowerLoss::DropUnsynced);
    drop(store);
    let store = Store::open(dir, options(sim.shared())).unwrap();
    let kept = (0..300)
        .filter(|&p| store.partition("i", p).unwrap().end_offset() == 1)
        .count();
    println!(
        "shared flusher: threads {before} before opening 300 partitions, {after} after; {kept} of 300 interval-policy appends durable after a power loss 300 ms later"
    );
    assert!(
        after <= before + 2,
        "a thread per partition: {before} -> {after}"
    );
    assert_eq!(kept, 300, "the shared thread did not sync every partition");

    // Always: a receipt awaited as a future is completed by the shared thread; a blocking
    // wait leads its own fsync.
    store
        .create_topic("a", 4, small(), PartitionerKind::Jump)
        .unwrap();
    for p in 0..4 {
        let log = store.partition("a", p).unwrap();
        block_on(log.append_records(&["f"]).unwrap().receipt).unwrap();
        log.append_records(&["w"]).unwrap().receipt.wait().unwrap();
        assert_eq!(log.end_offset(), 2);
    }
    sim.power_loss(stratalog::storage::PowerLoss::DropUnsynced);
    drop(store);
    let store = Store::open(dir, options(sim.shared())).unwrap();
    for p in 0..4 {
        assert_eq!(store.partition("a", p).unwrap().end_offset(), 2);
    }
    println!("shared flusher: receipts awaited as futures completed and durable on 4 partitions");
}

/// Opens `partitions` of the store in chunks (so that not all of them are open at once) and
/// returns the time spent in [`Store::partition`] calls alone.
fn open_every_partition(dir: &std::path::Path, topics: &[String], per_topic: u32) -> Duration {
    let mut spent = Duration::ZERO;
    for chunk in topics.chunks(10) {
        let store = Store::open(dir, options(FsStorage::shared())).unwrap();
        for t in chunk {
            for p in 0..per_topic {
                let started = Instant::now();
                drop(store.partition(t, p).unwrap());
                spent += started.elapsed();
            }
        }
        store.close().unwrap();
    }
    spent
}

/// The figures of docs/BENCHMARKS.md ("Store"): time to open a store after a clean close with
/// 10,000 empty and with 1,000 populated partitions. A measurement, not a pass/fail check:
/// `cargo test --release --test store -- --ignored --nocapture open_time`.
#[test]
#[ignore = "a measurement for docs/BENCHMARKS.md; run it explicitly"]
fn open_time() {
    for (label, topics, per_topic, records) in [
        ("10,000 empty partitions", 100usize, 100u32, 0usize),
        ("1,000 populated partitions", 10, 100, 200),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..topics).map(|i| format!("topic-{i:03}")).collect();
        {
            let store = Store::open(dir.path(), options(FsStorage::shared())).unwrap();
            for name in &names {
                store
                    .create_topic(name, per_topic, small(), PartitionerKind::Jump)
                    .unwrap();
            }
            store.close().unwrap();
        }
        // Create every partition log (and fill it), a few topics at a time.
        let value = vec![b'r'; 100];
        for chunk in names.chunks(10) {
            let store = Store::open(dir.path(), options(FsStorage::shared())).unwrap();
            for t in chunk {
                for p in 0..per_topic {
                    let log = store.partition(t, p).unwrap();
                    for _ in 0..records / 20 {
                        log.append_records(&[&value; 20]).unwrap();
                    }
                    log.flush().unwrap();
                }
            }
            store.close().unwrap();
        }
        let segments = std::fs::read_dir(partition_dir(dir.path(), &names[0], 0))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .count();
        let mut open = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            let store = Store::open(dir.path(), options(FsStorage::shared())).unwrap();
            open.push(started.elapsed());
            assert_eq!(store.topics().unwrap().len(), topics);
            store.close().unwrap();
        }
        let all = open_every_partition(dir.path(), &names, per_topic);
        let n = topics as u32 * per_topic;
        println!(
            "store open with {label} ({topics} topics x {per_topic}, {records} records of 100 B and {segments} segments per partition): \
             Store::open {:?} / {:?} / {:?} (lazy: no partition opened); then opening every partition: {:?} in total, {:?} per partition",
            open[0],
            open[1],
            open[2],
            all,
            all / n
        );
    }
}

/// The command line: `topics create|list|describe|alter|delete`, `produce --topic
/// --key-field`, `consume --topic --group`, `groups list|describe`.
#[cfg(feature = "cli")]
#[test]
fn command_line_topics_produce_by_key_consume_as_group() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    const BIN: &str = env!("CARGO_BIN_EXE_stratalog");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let run = |args: &[&str], input: Option<&str>| -> (bool, String, String) {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        if let Some(input) = input {
            stdin.write_all(input.as_bytes()).unwrap();
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let ok = |args: &[&str], input: Option<&str>| -> String {
        let (success, out, err) = run(args, input);
        assert!(success, "stratalog {args:?} failed: {err}");
        out
    };
    ok(
        &[
            "topics",
            "create",
            "--dir",
            d,
            "events",
            "--partitions",
            "4",
            "--partitioner",
            "ring:64",
            "--retention-ms",
            "86400000",
        ],
        None,
    );
    ok(&["topics", "create", "--dir", d, "other"], None);
    let (success, _, err) = run(&["topics", "create", "--dir", d, "events"], None);
    assert!(!success && err.contains("already exists"), "{err}");
    let list = ok(&["topics", "list", "--dir", d], None);
    assert_eq!(
        list,
        "events partitions=4 partitioner=ring:64 version=1\nother partitions=1 partitioner=jump version=1\n"
    );
    // 10 keys x 20 records, key in field 2.
    let input: String = (0..20)
        .flat_map(|i| (0..10).map(move |k| format!("{i},key{k},x\n")))
        .collect();
    let acks = ok(
        &[
            "produce",
            "--dir",
            d,
            "--topic",
            "events",
            "--key-field",
            "2",
            "--print-acks",
        ],
        Some(&input),
    );
    assert!(acks.lines().all(|l| l.starts_with("acked ")), "{acks}");
    let json = ok(
        &[
            "consume",
            "--dir",
            d,
            "--topic",
            "events",
            "--group",
            "g",
            "--format",
            "json",
            "--commit-every",
            "7",
        ],
        None,
    );
    let mut partition_of: std::collections::HashMap<String, String> = Default::default();
    let mut last_seq: std::collections::HashMap<String, i64> = Default::default();
    for line in json.lines() {
        // {"partition":P,"offset":...,"key":{"hex":..,"utf8":"keyK"},"value":{"hex":..,"utf8":"I,keyK,x"},...}
        let partition = line.split(',').next().unwrap().to_string();
        let key = line
            .split("\"utf8\":\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let value = line
            .split("\"utf8\":\"")
            .nth(2)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let seq: i64 = value.split(',').next().unwrap().parse().unwrap();
        assert_eq!(
            partition_of
                .entry(key.to_string())
                .or_insert(partition.clone()),
            &partition,
            "{key} in two partitions"
        );
        let last = last_seq.entry(key.to_string()).or_insert(-1);
        assert_eq!(seq, *last + 1, "{key} out of order");
        *last = seq;
    }
    assert_eq!(json.lines().count(), 200);
    let used: std::collections::BTreeSet<&String> = partition_of.values().collect();
    let groups = ok(&["groups", "list", "--dir", d], None);
    assert_eq!(groups, "g partitions=4 lag=0\n");
    // Nothing new: the group resumes at the end.
    assert_eq!(
        ok(
            &["consume", "--dir", d, "--topic", "events", "--group", "g"],
            None
        ),
        ""
    );
    ok(
        &["produce", "--dir", d, "--log", "events/3"],
        Some("late\n"),
    );
    assert_eq!(
        ok(
            &["consume", "--dir", d, "--log", "events/3", "--group", "g"],
            None
        ),
        "late\n"
    );
    let describe = ok(&["groups", "describe", "--dir", d, "g"], None);
    assert!(describe.starts_with("GROUP TOPIC PARTITION COMMITTED END LAG EPOCH\n"));
    let altered = ok(
        &[
            "topics",
            "alter",
            "--dir",
            d,
            "events",
            "--partitions",
            "6",
            "--retention-bytes",
            "1000000",
        ],
        None,
    );
    assert!(altered.contains("retention_bytes 1000000"), "{altered}");
    assert!(
        altered.contains("version 2 partitions=6 partitioner=ring:64"),
        "{altered}"
    );
    let describe = ok(&["topics", "describe", "--dir", d, "events"], None);
    assert!(describe.contains("partition 5 start=0 end=0"), "{describe}");
    let (success, _, err) = run(&["consume", "--dir", d, "--log", "events/9"], None);
    assert!(!success && err.contains("partitions 0..6"), "{err}");
    let (success, _, err) = run(&["consume", "--dir", d, "--group", "g"], None);
    assert!(!success && err.contains("--group needs a store"), "{err}");
    ok(&["topics", "delete", "--dir", d, "events"], None);
    assert_eq!(
        ok(&["topics", "list", "--dir", d], None),
        "other partitions=1 partitioner=jump version=1\n"
    );
    assert!(!dir.path().join("events").exists());
    println!(
        "command line: 200 records of 10 keys over {} partitions, each key in one partition and in order; group lag 0; alter, describe, delete as expected",
        used.len()
    );
}
