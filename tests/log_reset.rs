//! `Log::reset_to` (Kafka's truncateFullyAndStartAt): every record dropped, the log empty at an
//! offset above or below its end, the current epoch kept; and after a crash or a failed disk
//! operation at any point, the log opens either as it was or empty at the offset.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use stratalog::storage::{Fault, PowerLoss, SimStorage, Storage};
use stratalog::{Error, FsyncPolicy, Log, LogOptions};

fn opts(sim: &SimStorage) -> LogOptions {
    common::options(sim.shared(), FsyncPolicy::Always)
}

/// A log with records 0..60 over several segments, epochs 1 (from 0) and 2 (from 30).
fn filled(sim: &SimStorage, dir: &Path) -> Log {
    let log = Log::open(dir, opts(sim)).unwrap();
    log.set_leader_epoch(1).unwrap();
    for i in 0..60 {
        if i == 30 {
            log.set_leader_epoch(2).unwrap();
        }
        log.append_records(&[format!("v{i}")])
            .unwrap()
            .receipt
            .wait()
            .unwrap();
    }
    log
}

/// What a reopened log holds: (start, end, values, epoch entries, current epoch).
type State = (u64, u64, Vec<Vec<u8>>, Vec<(u64, u64)>, u64);

fn state(log: &Log) -> State {
    (
        log.start_offset(),
        log.end_offset(),
        common::values(log).unwrap(),
        log.epoch_history().entries().to_vec(),
        log.leader_epoch(),
    )
}

fn empty_at(offset: u64, epoch: u64) -> State {
    (offset, offset, Vec::new(), Vec::new(), epoch)
}

/// The log after a reset works like any log: appends from the offset, a reopen keeps it.
fn check_usable(sim: &SimStorage, dir: &Path, log: Log, context: &str) {
    let end = log.end_offset();
    let a = log.append_records(&["after"]).unwrap();
    a.receipt.wait().unwrap();
    assert_eq!(a.base_offset, end, "{context}");
    log.close().unwrap();
    common::assert_sound(sim, dir, context);
    let log = Log::open(dir, opts(sim)).unwrap();
    assert_eq!(log.end_offset(), end + 1, "{context}");
    assert_eq!(&log.read_one(end).unwrap().value[..], b"after", "{context}");
}

#[test]
fn reset_above_and_below_the_end_leaves_the_log_empty_there() {
    // Above the end (a follower behind the leader's start), inside the log, at its start, and
    // below its start (after retention).
    for offset in [1000, 45, 30, 0, 7] {
        let sim = SimStorage::new(offset);
        let dir = Path::new("/reset");
        let log = filled(&sim, dir);
        if offset == 7 {
            // Raise the start first: retention of the oldest segments.
            log.set_config(stratalog::LogConfig {
                retention_bytes: Some(2500),
                ..log.config()
            })
            .unwrap();
            assert!(log.apply_retention().unwrap() > 0);
            assert!(log.start_offset() > 7);
        }
        log.set_high_watermark(50);
        log.reset_to(offset).unwrap();
        assert_eq!(state(&log), empty_at(offset, 2), "reset to {offset}");
        assert_eq!(log.high_watermark(), offset);
        assert_eq!(log.record_count(), 0);
        assert!(log.read(offset, 1 << 20).unwrap().is_empty());
        if offset > 0 {
            assert!(matches!(
                log.read(offset - 1, 1 << 20),
                Err(Error::OffsetOutOfRange { .. })
            ));
        }
        // The epoch only rises: the old one is refused, a new one starts at the offset.
        assert!(log.set_leader_epoch(1).is_err());
        log.set_leader_epoch(5).unwrap();
        assert_eq!(log.epoch_history().entries(), &[(5, offset)]);
        // A power loss right after the reset does not bring anything back.
        sim.power_loss(PowerLoss::DropUnsynced);
        drop(log);
        let log = Log::open(dir, opts(&sim)).unwrap();
        assert_eq!(
            (log.start_offset(), log.end_offset(), log.leader_epoch()),
            (offset, offset, 5)
        );
        assert!(!sim.exists(&dir.join("log.reset")));
        let names = sim.list(dir).unwrap();
        let segments: Vec<_> = names.iter().filter(|n| n.ends_with(".log")).collect();
        assert_eq!(segments, [&format!("{offset:020}.log")], "{names:?}");
        check_usable(&sim, dir, log, &format!("reset to {offset}"));
    }
}

#[test]
fn a_follower_below_the_leaders_start_resets_and_takes_its_batches() {
    let sim = SimStorage::new(21);
    let leader = Log::open(
        "/leader",
        LogOptions {
            initial_offset: 100,
            ..opts(&sim)
        },
    )
    .unwrap();
    leader.set_leader_epoch(4).unwrap();
    for i in 0..10 {
        leader.append_records(&[format!("l{i}")]).unwrap();
    }
    leader.flush().unwrap();
    let follower = filled(&sim, Path::new("/follower"));
    let batches = leader.read(100, 1 << 20).unwrap();
    assert!(matches!(
        follower.append_replica(&batches),
        Err(Error::NotContiguous(_))
    ));
    follower.reset_to(leader.start_offset()).unwrap();
    follower
        .append_replica(&batches)
        .unwrap()
        .receipt
        .wait()
        .unwrap();
    assert_eq!((follower.start_offset(), follower.end_offset()), (100, 110));
    assert_eq!(follower.epoch_history().entries(), &[(4, 100)]);
    assert_eq!(follower.epoch_end(4), Some((4, 110)));
}

#[test]
fn refused_resets_change_nothing() {
    let sim = SimStorage::new(2);
    let dir = Path::new("/refused");
    let log = filled(&sim, dir);
    let before = state(&log);
    assert!(matches!(
        log.reset_to(i64::MAX as u64 + 1),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(state(&log), before);
    log.close().unwrap();
    let reader = Log::open(
        dir,
        LogOptions {
            read_only: true,
            ..opts(&sim)
        },
    )
    .unwrap();
    assert!(matches!(reader.reset_to(5), Err(Error::ReadOnly)));
    drop(reader);
    let log = Log::open(dir, opts(&sim)).unwrap();
    assert_eq!(state(&log), before);
    log.close().unwrap();
    assert!(matches!(log.reset_to(5), Err(Error::Closed)));
}

const POINTS: &[&str] = &[
    "reset.after_marker",
    "reset.after_remove",
    "reset.after_epochs",
    "reset.after_meta",
    "dir_fsync.before",
    "dir_fsync.after",
    "reset.after_create",
];

#[test]
fn a_crash_at_any_reset_point_opens_as_it_was_or_empty_at_the_offset() {
    for (i, &point) in POINTS.iter().enumerate() {
        for mode in [PowerLoss::DropUnsynced, PowerLoss::Torn] {
            for offset in [1000, 20] {
                let context = format!("{point}, {mode:?}, reset to {offset}");
                let sim = SimStorage::new(100 + i as u64);
                let dir = Path::new("/crash");
                let log = filled(&sim, dir);
                let before = state(&log);
                stratalog::crash::panic_at(point);
                let panicked = catch_unwind(AssertUnwindSafe(|| log.reset_to(offset)));
                assert!(panicked.is_err(), "{context}: the panic point did not fire");
                drop(log);
                if point == "reset.after_remove" && mode == PowerLoss::DropUnsynced {
                    // A reader must not serve the old segments of a pending reset, and verify
                    // says what the next open will do.
                    let refused = Log::open(
                        dir,
                        LogOptions {
                            read_only: true,
                            ..opts(&sim)
                        },
                    );
                    assert!(
                        matches!(refused, Err(Error::InvalidArgument(_))),
                        "{context}"
                    );
                    let report = stratalog::verify_dir(&sim, dir).unwrap();
                    assert!(
                        report.notes.iter().any(|n| n.contains("reset_to(")),
                        "{context}: {:?}",
                        report.notes
                    );
                }
                sim.power_loss(mode);
                let log = Log::open(dir, opts(&sim)).unwrap();
                let after = state(&log);
                // The marker is durable before the first point: always the new state.
                assert_eq!(after, empty_at(offset, before.4), "{context}");
                assert!(!sim.exists(&dir.join("log.reset")), "{context}");
                check_usable(&sim, dir, log, &context);
            }
        }
    }
}

#[test]
fn a_disk_failure_at_any_step_of_a_reset_opens_as_it_was_or_empty_at_the_offset() {
    // Every sync, directory sync and write the reset makes, failed in turn, then a torn power
    // loss: the log is one or the other, sound, and takes appends.
    let faults = |n: u64| {
        [
            Fault::FailSync { nth: n },
            Fault::FailDirSync { nth: n },
            Fault::FailWrite {
                nth: n,
                enospc: false,
            },
        ]
    };
    let (mut old, mut new, mut ok) = (0, 0, 0);
    for n in 1..=12 {
        for (k, fault) in faults(n).into_iter().enumerate() {
            for offset in [1000, 20] {
                let context = format!("{fault:?}, reset to {offset}");
                let sim = SimStorage::new(n * 10 + k as u64);
                let dir = Path::new("/fault");
                let log = filled(&sim, dir);
                let before = state(&log);
                sim.inject(fault);
                let result = log.reset_to(offset);
                ok += u64::from(result.is_ok());
                drop(log);
                sim.clear_faults();
                sim.power_loss(PowerLoss::Torn);
                let log = Log::open(dir, opts(&sim)).unwrap();
                let after = state(&log);
                if after == before {
                    assert!(result.is_err(), "{context}: reset returned Ok but was lost");
                    old += 1;
                } else {
                    assert_eq!(after, empty_at(offset, before.4), "{context}");
                    new += 1;
                }
                check_usable(&sim, dir, log, &context);
            }
        }
    }
    println!(
        "disk faults during a reset: {old} opened as before, {new} reset ({ok} calls succeeded)"
    );
    assert!(old > 0 && new > 0, "both outcomes must be exercised");
}
