//! Consumer offsets: commits are durable, carry their leader epoch, survive reopen and power
//! loss; commits past the end or from another epoch are refused; the offsets log is compacted.

use std::path::Path;
use std::sync::Arc;

use stratalog::storage::{FsStorage, PowerLoss, SimStorage, Storage};
use stratalog::store::{PartitionerKind, Store, StoreOptions, TopicConfig};
use stratalog::{Error, FsyncPolicy};

fn open(dir: &Path, storage: Arc<dyn Storage>) -> Store {
    Store::open(
        dir,
        StoreOptions {
            storage,
            create: true,
            retention_interval: None,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

fn fill(store: &Store, topic: &str, partition: u32, n: usize) {
    let log = store.partition(topic, partition).unwrap();
    for i in 0..n {
        log.append_records(&[format!("{topic}/{partition}/{i}")])
            .unwrap()
            .receipt
            .wait()
            .unwrap();
    }
}

#[test]
fn commit_resume_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), FsStorage::shared());
    store
        .create_topic("t", 2, TopicConfig::default(), PartitionerKind::Jump)
        .unwrap();
    fill(&store, "t", 0, 10);
    fill(&store, "t", 1, 4);
    assert_eq!(store.committed("g", "t", 0), None);
    store.commit("g", "t", 0, 7, 0).unwrap();
    store.commit("g", "t", 1, 4, 0).unwrap();
    store.commit("other", "t", 0, 2, 0).unwrap();

    // Past the end: refused, nothing changes.
    let err = store.commit("g", "t", 1, 5, 0).unwrap_err();
    println!("commit past the end: {err}");
    assert!(matches!(
        err,
        Error::CommitBeyondEnd {
            offset: 5,
            end: 4,
            ..
        }
    ));
    assert_eq!(store.committed("g", "t", 1).unwrap().offset, 4);

    // A new leader epoch: commits from the old one are refused, from the new one accepted.
    store.set_leader_epoch("t", 0, 3).unwrap();
    let err = store.commit("g", "t", 0, 8, 2).unwrap_err();
    println!("commit from an older epoch: {err}");
    assert!(matches!(
        err,
        Error::StaleEpoch {
            epoch: 2,
            current: 3,
            ..
        }
    ));
    assert!(matches!(
        store.commit("g", "t", 0, 8, 4),
        Err(Error::StaleEpoch { .. })
    ));
    assert_eq!(store.committed("g", "t", 0).unwrap().offset, 7);
    store.commit("g", "t", 0, 9, 3).unwrap();
    // All or none: one bad entry refuses the whole commit.
    assert!(
        store
            .commit_many("g", &[("t", 0, 10, 3), ("t", 1, 99, 0)])
            .is_err()
    );
    assert_eq!(store.committed("g", "t", 0).unwrap().offset, 9);
    assert!(matches!(
        store.commit("g", "nope", 0, 0, 0),
        Err(Error::UnknownTopic { .. })
    ));
    assert!(matches!(
        store.commit("", "t", 0, 0, 0),
        Err(Error::InvalidArgument(_))
    ));

    let lag: Vec<(String, u32, u64, Option<u64>)> = store
        .group_offsets(None)
        .unwrap()
        .into_iter()
        .map(|o| (o.group.clone(), o.partition, o.committed.offset, o.lag()))
        .collect();
    println!("offsets and lag: {lag:?}");
    assert_eq!(
        lag,
        [
            ("g".to_string(), 0, 9, Some(1)),
            ("g".to_string(), 1, 4, Some(0)),
            ("other".to_string(), 0, 2, Some(8)),
        ]
    );
    store.close().unwrap();

    // Reopen: the state comes back from the offsets log, and the partition's epoch from it
    // (no batch was appended in epoch 3).
    let store = open(dir.path(), FsStorage::shared());
    let c = store.committed("g", "t", 0).unwrap();
    assert_eq!((c.offset, c.leader_epoch), (9, 3));
    assert_eq!(store.partition("t", 0).unwrap().leader_epoch(), 3);
    assert!(matches!(
        store.commit("g", "t", 0, 10, 0),
        Err(Error::StaleEpoch { current: 3, .. })
    ));
    store.commit("g", "t", 0, 10, 3).unwrap();
    assert_eq!(store.groups().unwrap(), ["g", "other"]);
    store.delete_group("other").unwrap();
    store.close().unwrap();
    let store = open(dir.path(), FsStorage::shared());
    assert_eq!(store.groups().unwrap(), ["g"]);
    assert_eq!(store.committed("g", "t", 0).unwrap().offset, 10);
    println!("reopen: commits, epochs and a deleted group as they were");
}

#[test]
fn acknowledged_commits_survive_power_loss() {
    for seed in 0..20u64 {
        let sim = SimStorage::new(seed);
        let dir = Path::new("/store");
        let store = open(dir, sim.shared());
        let config = TopicConfig {
            fsync: FsyncPolicy::Always,
            ..Default::default()
        };
        store
            .create_topic("t", 1, config, PartitionerKind::Jump)
            .unwrap();
        fill(&store, "t", 0, 50);
        let acked = 1 + seed * 2;
        for offset in 1..=acked {
            store.commit("g", "t", 0, offset, 0).unwrap();
        }
        let mode = if seed % 2 == 0 {
            PowerLoss::Torn
        } else {
            PowerLoss::DropUnsynced
        };
        sim.power_loss(mode);
        drop(store);
        let store = open(dir, sim.shared());
        let c = store
            .committed("g", "t", 0)
            .expect("the acknowledged commit");
        assert_eq!(c.offset, acked, "seed {seed}: acknowledged commit lost");
        assert_eq!(store.partition("t", 0).unwrap().end_offset(), 50);
        store.close().unwrap();
    }
    println!(
        "power loss (20 seeds, torn and drop-unsynced, 1 to 39 commits each): the last acknowledged commit was the committed offset after every reopen"
    );
}

#[test]
fn offsets_log_is_compacted_and_keeps_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), FsStorage::shared());
    store
        .create_topic("t", 4, TopicConfig::default(), PartitionerKind::Jump)
        .unwrap();
    for p in 0..4 {
        fill(&store, "t", p, 3);
    }
    let mut max_records = 0;
    let commits = 6_000u64;
    for i in 0..commits {
        let p = (i % 4) as u32;
        store
            .commit_many(
                &format!("g{}", i % 3),
                &[("t", p, (i / 4) % 4, 0), ("t", (p + 1) % 4, 3, 0)],
            )
            .unwrap();
        max_records = max_records.max(store.offsets_log_records().unwrap());
    }
    let now = store.offsets_log_records().unwrap();
    println!(
        "{commits} commits of 2 partitions: offsets log peaked at {max_records} records, holds {now} now"
    );
    assert!(max_records <= 10_002, "never compacted: {max_records}");
    let before: Vec<_> = store.group_offsets(None).unwrap();
    let compacted_dir = store.compact_offsets().unwrap();
    assert_eq!(
        store.offsets_log_records().unwrap(),
        12,
        "3 groups x 4 partitions"
    );
    store.close().unwrap();
    let store = open(dir.path(), FsStorage::shared());
    let after: Vec<_> = store.group_offsets(None).unwrap();
    assert_eq!(
        before
            .iter()
            .map(|o| (&o.group, o.partition, o.committed.offset))
            .collect::<Vec<_>>(),
        after
            .iter()
            .map(|o| (&o.group, o.partition, o.committed.offset))
            .collect::<Vec<_>>()
    );
    let dirs: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("__consumer_offsets"))
        .collect();
    println!(
        "after compaction and reopen: {} entries equal, offsets dirs {dirs:?}, current {}",
        after.len(),
        compacted_dir.display()
    );
    assert_eq!(dirs.len(), 1, "old generations removed: {dirs:?}");
    // The store's own check follows the generation pointer to the compacted log, while the
    // store is open (it takes no lock).
    let report = stratalog::store::verify_store(dir.path()).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.offset_records, 12);
    store.close().unwrap();
}
