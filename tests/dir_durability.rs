//! Directory entries are durable: a log, store, topic or partition directory the engine
//! creates survives a power loss once a record in it was acknowledged.
//!
//! `SimStorage` loses every directory created or removed since its parent's last fsync (and
//! everything in it), so each test here fails if the engine forgets one parent fsync.

mod common;

use std::path::Path;

use common::values;
use stratalog::storage::{PowerLoss, SimStorage, Storage};
use stratalog::{
    BatchBuilder, Compression, FsyncPolicy, GroupCommit, Log, LogOptions, PartitionerKind, Store,
    StoreOptions, TopicConfig,
};

fn batch(values: &[&str]) -> BatchBuilder {
    let mut b = BatchBuilder::new(Compression::None);
    for (i, v) in values.iter().enumerate() {
        b.push_value(i as i64, v.as_bytes()).unwrap();
    }
    b
}

fn log_options(sim: &SimStorage, group_commit: GroupCommit) -> LogOptions {
    LogOptions {
        fsync: FsyncPolicy::Always,
        storage: sim.shared(),
        create: true,
        group_commit,
        ..LogOptions::default()
    }
}

/// A log created in a fresh nested directory, one durable append, a power loss: the records
/// are there after reopening, in both power-loss modes and both group-commit modes.
#[test]
fn new_log_directory_survives_power_loss() {
    for (seed, mode) in [(1, PowerLoss::DropUnsynced), (2, PowerLoss::Torn)] {
        for group_commit in [GroupCommit::Leader, GroupCommit::Flusher] {
            let sim = SimStorage::new(seed);
            let dir = Path::new("/data/brokers/b1/log");
            let log = Log::open(dir, log_options(&sim, group_commit)).unwrap();
            let a = log.append(&batch(&["a", "b", "c"])).unwrap();
            a.receipt.wait().unwrap();
            sim.power_loss(mode);
            drop(log);
            let log = Log::open(
                dir,
                LogOptions {
                    create: false,
                    ..log_options(&sim, group_commit)
                },
            )
            .unwrap_or_else(|e| panic!("{mode:?} {group_commit:?}: reopen: {e}"));
            assert_eq!(
                values(&log).unwrap(),
                [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()],
                "{mode:?} {group_commit:?}"
            );
            log.close().unwrap();
        }
    }
}

/// A log opened in a directory that existed but whose entry was never made durable (someone
/// ran `mkdir`; the engine did not create it): creating the log makes it durable.
#[test]
fn log_in_a_directory_made_by_someone_else_survives_power_loss() {
    let sim = SimStorage::new(3);
    let dir = Path::new("/d/log");
    sim.create_dir_all(dir).unwrap();
    sim.sync_dir(Path::new("/")).unwrap(); // `/d` is durable, `/d/log` is not
    let log = Log::open(dir, log_options(&sim, GroupCommit::Leader)).unwrap();
    log.append(&batch(&["x"])).unwrap().receipt.wait().unwrap();
    sim.power_loss(PowerLoss::DropUnsynced);
    drop(log);
    let log = Log::open(dir, log_options(&sim, GroupCommit::Leader)).unwrap();
    assert_eq!(values(&log).unwrap(), [b"x".to_vec()]);
}

fn store_options(sim: &SimStorage) -> StoreOptions {
    StoreOptions {
        storage: sim.shared(),
        create: true,
        retention_interval: None,
        ..StoreOptions::default()
    }
}

/// A store created in a fresh directory, a topic, an acknowledged append to a partition and an
/// acknowledged offset commit, a power loss: the topic, the records and the commit are there.
#[test]
fn new_store_topic_and_partition_survive_power_loss() {
    for mode in [PowerLoss::DropUnsynced, PowerLoss::Torn] {
        let sim = SimStorage::new(4);
        let dir = Path::new("/var/lib/stratalog/store");
        let store = Store::open(dir, store_options(&sim)).unwrap();
        store
            .create_topic(
                "events",
                2,
                TopicConfig {
                    fsync: FsyncPolicy::Always,
                    ..TopicConfig::default()
                },
                PartitionerKind::default(),
            )
            .unwrap();
        let log = store.partition("events", 1).unwrap();
        log.append(&batch(&["p", "q"]))
            .unwrap()
            .receipt
            .wait()
            .unwrap();
        store.commit("g", "events", 1, 2, 0).unwrap();
        sim.power_loss(mode);
        drop(log);
        drop(store);
        let store = Store::open(
            dir,
            StoreOptions {
                create: false,
                ..store_options(&sim)
            },
        )
        .unwrap_or_else(|e| panic!("{mode:?}: reopen: {e}"));
        assert_eq!(store.topics().unwrap().len(), 1, "{mode:?}");
        let log = store.partition("events", 1).unwrap();
        assert_eq!(
            values(&log).unwrap(),
            [b"p".to_vec(), b"q".to_vec()],
            "{mode:?}"
        );
        assert_eq!(
            store.committed("g", "events", 1).map(|c| c.offset),
            Some(2),
            "{mode:?}"
        );
    }
}

/// Deleting a topic removes its directories through `Storage` (the simulator sees it): after
/// the deletion and a power loss, no directory of it is left.
#[test]
fn deleted_topic_directories_go_through_storage() {
    let sim = SimStorage::new(5);
    let dir = Path::new("/s");
    let store = Store::open(dir, store_options(&sim)).unwrap();
    store
        .create_topic("t", 1, TopicConfig::default(), PartitionerKind::default())
        .unwrap();
    let log = store.partition("t", 0).unwrap();
    log.append(&batch(&["v"])).unwrap().receipt.wait().unwrap();
    drop(log);
    store.delete_topic("t").unwrap();
    assert!(
        !sim.exists(&dir.join("t")),
        "the topic directory is removed"
    );
    sim.power_loss(PowerLoss::DropUnsynced);
    assert!(!sim.exists(&dir.join("t")), "and its removal is durable");
    drop(store);
    let store = Store::open(dir, store_options(&sim)).unwrap();
    assert!(store.topics().unwrap().is_empty());
}

/// An active segment's index files that are missing at open (deleted, or lost) are created
/// again by recovery, durably: after a power loss they are still there.
#[test]
fn recreated_index_files_survive_power_loss() {
    let sim = SimStorage::new(6);
    let dir = Path::new("/idx");
    let log = Log::open(dir, log_options(&sim, GroupCommit::Leader)).unwrap();
    log.append(&batch(&["a"])).unwrap().receipt.wait().unwrap();
    log.close().unwrap();
    let index = dir.join("00000000000000000000.index");
    let time = dir.join("00000000000000000000.timeindex");
    sim.remove(&index).unwrap();
    sim.remove(&time).unwrap();
    sim.sync_dir(dir).unwrap();
    let log = Log::open(dir, log_options(&sim, GroupCommit::Leader)).unwrap();
    assert!(sim.exists(&index) && sim.exists(&time));
    sim.power_loss(PowerLoss::DropUnsynced);
    drop(log);
    assert!(
        sim.exists(&index) && sim.exists(&time),
        "the recreated index files' entries were not made durable"
    );
    let log = Log::open(dir, log_options(&sim, GroupCommit::Leader)).unwrap();
    assert_eq!(values(&log).unwrap(), [b"a".to_vec()]);
}
