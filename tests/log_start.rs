//! A log that starts empty at an offset (`LogOptions::initial_offset`): what a replica needs
//! when it is created while the leader's log no longer starts at 0.

mod common;

use std::path::Path;

use stratalog::format::{SegmentFile, segment_file_name};
use stratalog::storage::{PowerLoss, SimStorage, Storage};
use stratalog::{Batch, Error, FsyncPolicy, Log, LogOptions};

fn options_at(storage: std::sync::Arc<dyn Storage>, initial_offset: u64) -> LogOptions {
    LogOptions {
        initial_offset,
        ..common::options(storage, FsyncPolicy::Always)
    }
}

fn append(log: &Log, n: usize, tag: &str) {
    for i in 0..n {
        log.append_records(&[format!("{tag}-{i}")])
            .unwrap()
            .receipt
            .wait()
            .unwrap();
    }
}

#[test]
fn a_new_log_starts_empty_at_its_initial_offset_and_keeps_it() {
    let sim = SimStorage::new(3);
    let dir = Path::new("/at1000");
    let log = Log::open(dir, options_at(sim.shared(), 1000)).unwrap();
    assert_eq!((log.start_offset(), log.end_offset()), (1000, 1000));
    assert_eq!(log.high_watermark(), 1000);
    assert_eq!(log.record_count(), 0);
    assert!(log.epoch_history().entries().is_empty());
    assert_eq!(log.epoch_end(0), None);
    // Its first segment is named by the offset: there is no segment 0.
    assert!(sim.exists(&dir.join(segment_file_name(1000, SegmentFile::Log))));
    assert!(!sim.exists(&dir.join(segment_file_name(0, SegmentFile::Log))));
    // Reading below the start is out of range; at the end returns nothing.
    assert!(matches!(
        log.read(999, 1 << 20),
        Err(Error::OffsetOutOfRange {
            offset: 999,
            start: 1000,
            end: 1000
        })
    ));
    assert!(log.read(1000, 1 << 20).unwrap().is_empty());
    common::assert_sound(&sim, dir, "new log at 1000");

    // Empty, it survives a power loss and a reopen that asks for another start.
    sim.power_loss(PowerLoss::DropUnsynced);
    drop(log);
    let log = Log::open(dir, options_at(sim.shared(), 5)).unwrap();
    assert_eq!((log.start_offset(), log.end_offset()), (1000, 1000));

    // Appends get offsets from there, across segment rolls.
    append(&log, 60, "a");
    assert_eq!((log.start_offset(), log.end_offset()), (1000, 1060));
    assert_eq!(&log.read_one(1000).unwrap().value[..], b"a-0");
    assert_eq!(&log.read_one(1059).unwrap().value[..], b"a-59");
    assert_eq!(common::values(&log).unwrap().len(), 60);
    let report = stratalog::verify_dir(&sim, dir).unwrap();
    assert!(report.is_sound(), "{:#?}", report.problems);
    assert!(report.segments > 1, "the test must roll segments");
    assert_eq!((report.start_offset, report.end_offset), (1000, 1060));
    log.close().unwrap();

    let log = Log::open(dir, options_at(sim.shared(), 0)).unwrap();
    assert_eq!((log.start_offset(), log.end_offset()), (1000, 1060));
    assert_eq!(common::values(&log).unwrap()[59], b"a-59");
    drop(log);
    let reader = Log::open(
        dir,
        LogOptions {
            read_only: true,
            ..options_at(sim.shared(), 0)
        },
    )
    .unwrap();
    assert_eq!((reader.start_offset(), reader.end_offset()), (1000, 1060));
}

#[test]
fn the_epoch_history_of_a_log_started_at_an_offset_begins_there() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Log::open(
        tmp.path(),
        options_at(stratalog::storage::FsStorage::shared(), 77),
    )
    .unwrap();
    log.set_leader_epoch(4).unwrap();
    append(&log, 3, "x");
    // No epoch-0 entry for records the log never held.
    assert_eq!(log.epoch_history().entries(), &[(4, 77)]);
    assert_eq!(log.epoch_end(4), Some((4, 80)));
    assert_eq!(log.epoch_end(3), None);
    drop(log);
    let log = Log::open(tmp.path(), LogOptions::default()).unwrap();
    assert_eq!(log.leader_epoch(), 4);
    assert_eq!(log.epoch_history().entries(), &[(4, 77)]);
}

#[test]
fn a_follower_created_at_the_leaders_start_takes_its_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = stratalog::storage::FsStorage::shared;
    let leader = Log::open(tmp.path().join("leader"), options_at(fs(), 0)).unwrap();
    leader.set_leader_epoch(2).unwrap();
    append(&leader, 50, "l");
    // The follower only needs the leader's log from 30 on (say retention removed the rest).
    let follower = Log::open(tmp.path().join("follower"), options_at(fs(), 30)).unwrap();
    let mut batches: Vec<Batch> = Vec::new();
    let mut next = 30;
    while next < leader.end_offset() {
        let got = leader.read(next, 1 << 20).unwrap();
        next = got.last().unwrap().last_offset() + 1;
        batches.extend(got);
    }
    let appended = follower.append_replica(&batches).unwrap();
    appended.receipt.wait().unwrap();
    assert_eq!((appended.base_offset, appended.last_offset), (30, 49));
    assert_eq!((follower.start_offset(), follower.end_offset()), (30, 50));
    assert_eq!(follower.epoch_history().entries(), &[(2, 30)]);
    for offset in 30..50 {
        assert_eq!(
            follower.read_one(offset).unwrap().value,
            leader.read_one(offset).unwrap().value
        );
    }
    // A batch that does not start at the follower's start is refused.
    let other = Log::open(tmp.path().join("other"), options_at(fs(), 31)).unwrap();
    assert!(matches!(
        other.append_replica(&batches[..1]),
        Err(Error::NotContiguous(_))
    ));
}

#[test]
fn an_initial_offset_above_i64_max_is_refused() {
    let sim = SimStorage::new(5);
    let err = Log::open("/big", options_at(sim.shared(), i64::MAX as u64 + 1)).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    let log = Log::open("/max", options_at(sim.shared(), i64::MAX as u64)).unwrap();
    assert_eq!(log.start_offset(), i64::MAX as u64);
    assert_eq!(
        log.append_records(&["z"]).unwrap().base_offset,
        i64::MAX as u64
    );
}
