//! The store's own logs and group offsets (issue 10, items 2, 3 and 11): the `__` names are
//! reserved and `verify_store` refuses what the store refuses; a commit names the topic's
//! incarnation, so a deleted and re-created topic never inherits old offsets; `groups delete`
//! and `groups reset`; old (version 1) stores keep opening with their offsets; `delete_topic`
//! is not refused because the store's own threads hold a partition for a moment.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use stratalog::store::{
    PartitionerKind, ResetTo, Store, StoreOptions, TopicConfig, TopicId, check_log_name,
    verify_store,
};
use stratalog::{BatchBuilder, Compression, Error, FsyncPolicy, Log, LogConfig, LogOptions};

fn open(dir: &Path) -> Store {
    Store::open(
        dir,
        StoreOptions {
            retention_interval: None,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

fn fill(store: &Store, topic: &str, partition: u32, values: &[&str]) {
    store
        .partition(topic, partition)
        .unwrap()
        .append_records(values)
        .unwrap()
        .receipt
        .wait()
        .unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn reserved_log_names_are_refused() {
    assert!(check_log_name("__consumer_offsets").is_err());
    assert!(check_log_name("__anything").is_err());
    assert!(check_log_name("orders").is_ok());
    assert!(check_log_name("_single").is_ok());
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let e = store
        .create_topic(
            "__consumer_offsets",
            1,
            TopicConfig::default(),
            PartitionerKind::Jump,
        )
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    assert!(matches!(
        store.partition("__consumer_offsets", 0),
        Err(Error::UnknownTopic { .. })
    ));
}

/// The reproduction: a plain append to the offsets log (what `produce --log
/// __consumer_offsets` did) makes the store refuse to open; `verify_store` must say so, naming
/// the file, and must pass a sound store, also while it is open (it takes no lock).
#[test]
fn verify_store_reports_what_the_store_refuses() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    store
        .create_topic("t", 1, TopicConfig::default(), PartitionerKind::Jump)
        .unwrap();
    fill(&store, "t", 0, &["a", "b"]);
    store.commit("g", "t", 0, 2, 0).unwrap();
    let report = verify_store(tmp.path()).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!((report.topics, report.offset_records), (1, 1));
    store.close().unwrap();

    let offsets = Log::open(tmp.path().join("__consumer_offsets"), LogOptions::default()).unwrap();
    offsets
        .append_records(&["not an offset record"])
        .unwrap()
        .receipt
        .wait()
        .unwrap();
    offsets.close().unwrap();

    let refused = Store::open(tmp.path(), StoreOptions::default()).unwrap_err();
    assert!(matches!(refused, Error::Corrupt { .. }), "{refused}");
    let report = verify_store(tmp.path()).unwrap();
    assert_eq!(report.problems.len(), 1, "{report:?}");
    let p = &report.problems[0];
    assert!(
        p.path.starts_with(tmp.path().join("__consumer_offsets")) && p.what.contains("offset 1"),
        "{p}"
    );

    // A damaged registry is named too.
    let registry = tmp.path().join("stratalog.store");
    let mut bytes = std::fs::read(&registry).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&registry, bytes).unwrap();
    let report = verify_store(tmp.path()).unwrap();
    assert!(
        report.problems.iter().any(|p| p.path == registry),
        "{report:?}"
    );
    assert!(verify_store(tmp.path().join("nothing")).is_err());
}

/// The reproduction of item 3: commit 5 on `t`, delete `t`, create `t` again with two
/// records. The group must start the new topic from its beginning, not at 5.
#[test]
fn recreated_topic_does_not_inherit_group_offsets() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let first = store
        .create_topic("t", 1, TopicConfig::default(), PartitionerKind::Jump)
        .unwrap();
    fill(&store, "t", 0, &["1", "2", "3", "4", "5"]);
    store.commit("g", "t", 0, 5, 0).unwrap();
    store.delete_topic("t").unwrap();
    assert_eq!(store.group_offsets(None).unwrap(), vec![]);
    let second = store
        .create_topic("t", 1, TopicConfig::default(), PartitionerKind::Jump)
        .unwrap();
    assert_ne!(first.id, second.id);
    assert_ne!(second.id, TopicId::LEGACY);
    fill(&store, "t", 0, &["101", "102"]);
    assert_eq!(store.committed("g", "t", 0), None);
    store.close().unwrap();
    let store = open(tmp.path());
    assert_eq!(store.committed("g", "t", 0), None);
    assert_eq!(
        store.topic("t").unwrap().id,
        second.id,
        "the id is persisted"
    );
    store.close().unwrap();
}

/// A crash after a topic was deleted but before its offsets were: the old commits are still in
/// the offsets log (restored here from a copy), and must not apply to the new topic.
#[test]
fn commits_left_behind_by_a_deleted_topic_never_apply() {
    let tmp = tempfile::tempdir().unwrap();
    let saved = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    store
        .create_topic("t", 1, TopicConfig::default(), PartitionerKind::Jump)
        .unwrap();
    fill(&store, "t", 0, &["1", "2", "3", "4", "5"]);
    store.commit("g", "t", 0, 5, 0).unwrap();
    store.close().unwrap();
    copy_dir(
        &tmp.path().join("__consumer_offsets"),
        &saved.path().join("o"),
    );
    let store = open(tmp.path());
    store.delete_topic("t").unwrap();
    store
        .create_topic("t", 1, TopicConfig::default(), PartitionerKind::Jump)
        .unwrap();
    fill(&store, "t", 0, &["101", "102"]);
    store.close().unwrap();
    std::fs::remove_dir_all(tmp.path().join("__consumer_offsets")).unwrap();
    copy_dir(
        &saved.path().join("o"),
        &tmp.path().join("__consumer_offsets"),
    );
    let store = open(tmp.path());
    assert_eq!(store.committed("g", "t", 0), None);
    assert_eq!(store.group_offsets(Some("g")).unwrap(), vec![]);
    // A commit for the new topic works and is kept.
    store.commit("g", "t", 0, 1, 0).unwrap();
    assert_eq!(store.committed("g", "t", 0).unwrap().offset, 1);
    store.close().unwrap();
}

#[test]
fn groups_delete_and_reset() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    store
        .create_topic("t", 2, TopicConfig::default(), PartitionerKind::Jump)
        .unwrap();
    for p in 0..2 {
        let log = store.partition("t", p).unwrap();
        for ts in [1000, 2000, 3000, 4000] {
            let mut b = BatchBuilder::new(Compression::None);
            b.push_value(ts, b"v").unwrap();
            log.append(&b).unwrap().receipt.wait().unwrap();
        }
    }
    store.commit("g", "t", 0, 3, 0).unwrap();
    store.commit("g", "t", 1, 1, 0).unwrap();
    store.commit("other", "t", 0, 2, 0).unwrap();

    let moved = store
        .reset_group("g", "t", None, ResetTo::Time(2500))
        .unwrap();
    assert_eq!(
        moved.iter().map(|o| o.committed.offset).collect::<Vec<_>>(),
        [2, 2]
    );
    assert_eq!(store.committed("g", "t", 1).unwrap().offset, 2);
    store
        .reset_group("g", "t", Some(0), ResetTo::Earliest)
        .unwrap();
    assert_eq!(store.committed("g", "t", 0).unwrap().offset, 0);
    assert_eq!(store.committed("g", "t", 1).unwrap().offset, 2);
    store.reset_group("g", "t", None, ResetTo::Latest).unwrap();
    assert_eq!(store.committed("g", "t", 0).unwrap().offset, 4);
    store
        .reset_group("g", "t", Some(1), ResetTo::Offset(3))
        .unwrap();
    assert_eq!(store.committed("g", "t", 1).unwrap().offset, 3);
    // After the last record's time: the end.
    store
        .reset_group("g", "t", Some(1), ResetTo::Time(9999))
        .unwrap();
    assert_eq!(store.committed("g", "t", 1).unwrap().offset, 4);
    assert!(matches!(
        store.reset_group("g", "t", Some(1), ResetTo::Offset(5)),
        Err(Error::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        store.reset_group("g", "t", Some(2), ResetTo::Earliest),
        Err(Error::UnknownPartition { .. })
    ));
    assert!(matches!(
        store.reset_group("g", "nope", None, ResetTo::Earliest),
        Err(Error::UnknownTopic { .. })
    ));
    assert_eq!("time:5".parse::<ResetTo>(), Ok(ResetTo::Time(5)));
    assert_eq!("7".parse::<ResetTo>(), Ok(ResetTo::Offset(7)));
    assert!("soon".parse::<ResetTo>().is_err());

    assert_eq!(store.delete_group("g").unwrap(), 2);
    assert_eq!(store.delete_group("g").unwrap(), 0);
    assert_eq!(store.groups().unwrap(), ["other"]);
    store.close().unwrap();
    let store = open(tmp.path());
    assert_eq!(store.committed("g", "t", 0), None);
    assert_eq!(store.committed("other", "t", 0).unwrap().offset, 2);
    store.close().unwrap();
}

/// `tests/fixtures/store-v1/` was written by the build before topic ids (registry version 1,
/// offset values version 1): topic `orders` (2 partitions, 5 and 2 records), group `billing`
/// committed 3 on partition 0. It must open with its offsets, and be rewritten in version 2.
#[test]
fn version_1_store_fixture_opens_with_its_offsets() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1");
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture, tmp.path());
    assert!(verify_store(tmp.path()).unwrap().is_ok());
    let store = open(tmp.path());
    let orders = store.topic("orders").unwrap();
    assert_eq!((orders.partitions(), orders.id), (2, TopicId::LEGACY));
    assert_eq!(store.committed("billing", "orders", 0).unwrap().offset, 3);
    assert_eq!(store.partition("orders", 0).unwrap().end_offset(), 5);
    store
        .create_topic("fresh", 1, TopicConfig::default(), PartitionerKind::Jump)
        .unwrap();
    store.close().unwrap();
    let registry = std::fs::read(tmp.path().join("stratalog.store")).unwrap();
    assert_eq!(u32::from_le_bytes(registry[8..12].try_into().unwrap()), 2);
    let store = open(tmp.path());
    assert_eq!(store.topic("orders").unwrap().id, TopicId::LEGACY);
    assert_eq!(store.committed("billing", "orders", 0).unwrap().offset, 3);
    store.close().unwrap();
}

/// Item 11: the shared flusher and the retention thread take a clone of a partition's log for
/// a moment; `delete_topic` must not report that as the partition being in use. Appends with
/// an interval fsync keep the flusher busy on the partition, a retention pass every
/// millisecond keeps cloning it, and the topic is deleted right after the last append.
#[test]
fn delete_topic_is_not_refused_for_the_stores_own_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(
        tmp.path(),
        StoreOptions {
            retention_interval: Some(Duration::from_millis(1)),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let config = TopicConfig {
        log: LogConfig {
            segment_bytes: 4096,
            retention_bytes: Some(1 << 30),
            ..LogConfig::default()
        },
        fsync: FsyncPolicy::Bytes(1),
    };
    let mut refused = 0;
    for round in 0..30 {
        store
            .create_topic("t", 2, config, PartitionerKind::Jump)
            .unwrap();
        for p in 0..2 {
            let log: Arc<Log> = store.partition("t", p).unwrap();
            for i in 0..3 {
                log.append_records(&[format!("{round}-{i}-{}", "x".repeat(1500))])
                    .unwrap();
            }
        }
        match store.delete_topic("t") {
            Ok(()) => {}
            Err(Error::InUse { .. }) => {
                refused += 1;
                // Let go of it the slow way so the next round can start.
                while store.delete_topic("t").is_err() {
                    std::thread::yield_now();
                }
            }
            Err(e) => panic!("{e}"),
        }
    }
    println!("delete_topic refused {refused} of 30 times");
    assert_eq!(refused, 0, "a false InUse");
    store.close().unwrap();
}

/// The reproduction of item 3 on the command line, then `groups reset` and `groups
/// delete`: after `topics delete` and `topics create` of the same name, `consume --group`
/// prints the new topic's records (101 and 102) instead of skipping them.
#[cfg(feature = "cli")]
#[test]
fn command_line_recreated_topic_groups_reset_and_delete() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    const BIN: &str = env!("CARGO_BIN_EXE_stratalog");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let run = |args: &[&str], input: &str| -> (bool, String, String) {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let ok = |args: &[&str], input: &str| -> String {
        let (success, out, err) = run(args, input);
        assert!(success, "stratalog {args:?} failed: {err}");
        out
    };
    ok(&["topics", "create", "--dir", d, "t"], "");
    ok(&["produce", "--dir", d, "--log", "t/0"], "1\n2\n3\n4\n5\n");
    assert_eq!(
        ok(&["consume", "--dir", d, "--log", "t/0", "--group", "g"], ""),
        "1\n2\n3\n4\n5\n"
    );
    ok(&["topics", "delete", "--dir", d, "t"], "");
    ok(&["topics", "create", "--dir", d, "t"], "");
    ok(&["produce", "--dir", d, "--log", "t/0"], "101\n102\n");
    assert_eq!(
        ok(&["consume", "--dir", d, "--log", "t/0", "--group", "g"], ""),
        "101\n102\n"
    );
    let described = ok(&["groups", "describe", "--dir", d, "g"], "");
    assert!(described.contains("\ng t 0 2 2 0 "), "{described}");

    let reset = ok(
        &[
            "groups", "reset", "--dir", d, "g", "--topic", "t", "--to", "earliest",
        ],
        "",
    );
    assert!(reset.contains("\ng t 0 0 2 2\n"), "{reset}");
    assert_eq!(
        ok(&["consume", "--dir", d, "--log", "t/0", "--group", "g"], ""),
        "101\n102\n"
    );
    ok(
        &[
            "groups",
            "reset",
            "--dir",
            d,
            "g",
            "--topic",
            "t",
            "--partition",
            "0",
            "--to",
            "1",
        ],
        "",
    );
    assert_eq!(
        ok(&["consume", "--dir", d, "--log", "t/0", "--group", "g"], ""),
        "102\n"
    );
    let (success, _, err) = run(
        &[
            "groups", "reset", "--dir", d, "g", "--topic", "t", "--to", "9",
        ],
        "",
    );
    assert!(!success && err.contains("out of range"), "{err}");
    let (success, _, err) = run(
        &[
            "groups", "reset", "--dir", d, "g", "--topic", "t", "--to", "soon",
        ],
        "",
    );
    assert!(!success && err.contains("time:MS"), "{err}");
    ok(&["groups", "delete", "--dir", d, "g"], "");
    assert_eq!(ok(&["groups", "list", "--dir", d], ""), "");
    let (success, _, err) = run(&["groups", "delete", "--dir", d, "g"], "");
    assert!(!success && err.contains("no committed offsets"), "{err}");
}
