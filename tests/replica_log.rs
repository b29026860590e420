//! A log as a replica: a leader's batches appended unchanged at the same offsets, the durable
//! epoch history, divergence found and cut exactly (Kafka's KIP-101 / KIP-279 cases, at the log
//! level), the high watermark and the wait for new data.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use stratalog::storage::{PowerLoss, SimStorage};
use stratalog::{Batch, Error, FsyncPolicy, Log, LogOptions};

fn open(dir: &Path) -> Log {
    Log::open(
        dir,
        common::options(stratalog::storage::FsStorage::shared(), FsyncPolicy::Always),
    )
    .unwrap()
}

fn append(log: &Log, n: usize, tag: &str) {
    for i in 0..n {
        let a = log.append_records(&[format!("{tag}-{i}")]).unwrap();
        a.receipt.wait().unwrap();
    }
}

fn batches_from(log: &Log, from: u64) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut next = from;
    while next < log.end_offset() {
        let got = log.read(next, 1 << 20).unwrap();
        next = got.last().unwrap().last_offset() + 1;
        out.extend(got);
    }
    out
}

/// Every batch of `a` and `b`, byte for byte, from `from` on.
fn assert_identical(a: &Log, b: &Log, from: u64) {
    assert_eq!(a.end_offset(), b.end_offset());
    let (x, y) = (batches_from(a, from), batches_from(b, from));
    assert_eq!(x.len(), y.len());
    for (p, q) in x.iter().zip(&y) {
        assert_eq!(p.as_bytes(), q.as_bytes(), "batch at {}", p.base_offset());
    }
}

#[test]
fn a_follower_holds_the_leaders_bytes_and_epochs() {
    let tmp = tempfile::tempdir().unwrap();
    let leader = open(&tmp.path().join("leader"));
    let follower = open(&tmp.path().join("follower"));
    leader.set_leader_epoch(1).unwrap();
    append(&leader, 30, "a");
    leader.set_leader_epoch(4).unwrap();
    append(&leader, 30, "b");
    // Shipped in pieces, as fetches would.
    let all = batches_from(&leader, 0);
    for chunk in all.chunks(7) {
        let appended = follower.append_replica(chunk).unwrap();
        appended.receipt.wait().unwrap();
        assert_eq!(appended.base_offset, chunk[0].base_offset());
    }
    assert_identical(&leader, &follower, 0);
    assert_eq!(follower.epoch_history(), leader.epoch_history());
    assert_eq!(leader.epoch_history().entries(), &[(1, 0), (4, 30)]);
    assert_eq!(follower.leader_epoch(), 4);
    assert_eq!(follower.epoch_end(1), Some((1, 30)));
    assert_eq!(follower.epoch_end(3), Some((1, 30)));
    assert_eq!(follower.epoch_end(4), Some((4, 60)));
    common::assert_sound(
        stratalog::storage::FsStorage::shared().as_ref(),
        &tmp.path().join("follower"),
        "follower",
    );
}

#[test]
fn replica_appends_that_do_not_continue_the_log_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let leader = open(&tmp.path().join("leader"));
    let follower = open(&tmp.path().join("follower"));
    leader.set_leader_epoch(2).unwrap();
    append(&leader, 10, "a");
    let all = batches_from(&leader, 0);
    // A gap: the first batch is missing.
    match follower.append_replica(&all[1..]) {
        Err(Error::NotContiguous(gap)) => assert_eq!((gap.offset, gap.end), (1, 0)),
        other => panic!("{other:?}"),
    }
    assert_eq!(follower.end_offset(), 0);
    follower
        .append_replica(&all)
        .unwrap()
        .receipt
        .wait()
        .unwrap();
    // The same batches again: they do not start at the end.
    assert!(matches!(
        follower.append_replica(&all[..1]),
        Err(Error::NotContiguous(_))
    ));
    // A batch of an older epoch than the log's newest records: refused, nothing appended.
    follower.set_leader_epoch(3).unwrap();
    let old_epoch = Log::open(tmp.path().join("old"), LogOptions::default()).unwrap();
    old_epoch.set_leader_epoch(1).unwrap();
    append(&old_epoch, 11, "c");
    let stale = old_epoch.read(10, 1).unwrap();
    match follower.append_replica(&stale) {
        Err(Error::NotContiguous(gap)) => assert_eq!((gap.epoch, gap.current_epoch), (1, 3)),
        other => panic!("{other:?}"),
    }
    assert_eq!(follower.end_offset(), 10);
    // And the epoch of a log only rises.
    assert!(follower.set_leader_epoch(2).is_err());
}

#[test]
fn the_epoch_survives_a_restart_before_any_append_and_a_power_loss() {
    // The bug this fixes: a promoted leader that restarted before its first append came back in
    // the old epoch, so it could not be fenced.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let log = open(&dir);
    append(&log, 3, "a");
    log.set_leader_epoch(7).unwrap();
    drop(log);
    let log = open(&dir);
    assert_eq!(log.leader_epoch(), 7);
    // The three records before it are in epoch 0.
    assert_eq!(log.epoch_history().entries(), &[(0, 0), (7, 3)]);
    drop(log);

    let sim = SimStorage::new(11);
    let options = || common::options(sim.shared(), FsyncPolicy::Always);
    let log = Log::open("/log", options()).unwrap();
    log.set_leader_epoch(3).unwrap();
    append(&log, 5, "x");
    log.set_leader_epoch(9).unwrap();
    sim.power_loss(PowerLoss::DropUnsynced);
    drop(log);
    let log = Log::open("/log", options()).unwrap();
    assert_eq!(log.leader_epoch(), 9);
    assert_eq!(log.epoch_history().entries(), &[(3, 0), (9, 5)]);
}

#[test]
fn truncation_and_retention_cut_the_epoch_history() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let log = open(&dir);
    for epoch in 1..=4 {
        log.set_leader_epoch(epoch).unwrap();
        append(&log, 40, &format!("e{epoch}"));
    }
    assert_eq!(
        log.epoch_history().entries(),
        &[(1, 0), (2, 40), (3, 80), (4, 120)]
    );
    log.truncate(90).unwrap();
    assert_eq!(log.epoch_history().entries(), &[(1, 0), (2, 40), (3, 80)]);
    let mut config = log.config();
    config.retention_bytes = Some(4096);
    log.set_config(config).unwrap();
    log.apply_retention().unwrap();
    let start = log.start_offset();
    assert!(start > 0);
    let history = log.epoch_history();
    assert_eq!(
        history.entries()[0].1,
        start,
        "the oldest kept epoch starts at the log start"
    );
    drop(log);
    assert_eq!(open(&dir).epoch_history(), history, "and it is durable");
}

/// A leader elected just before it died holds its epoch in its history with no record in it.
/// As a follower of a leader that never heard of that epoch, it is told to cut at its own
/// end: the truncation must drop the empty epoch, or the node asks with it again and again
/// (seen: a restarted node looping on "truncating a divergent suffix from=738 to=738").
#[test]
fn a_truncation_at_the_end_drops_an_epoch_that_holds_no_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let log = open(&dir);
    log.set_leader_epoch(1).unwrap();
    append(&log, 10, "e1");
    log.set_leader_epoch(3).unwrap();
    assert_eq!(log.epoch_history().entries(), &[(1, 0), (3, 10)]);
    assert_eq!(log.last_record_epoch(), Some(1), "epoch 3 holds no record");
    log.truncate(10).unwrap();
    assert_eq!(log.epoch_history().entries(), &[(1, 0)]);
    assert_eq!(log.last_record_epoch(), Some(1));
    assert_eq!(log.end_offset(), 10, "no record was cut");
    assert_eq!(log.leader_epoch(), 3, "the epoch seen is kept");
    drop(log);
    let log = open(&dir);
    assert_eq!(
        log.epoch_history().entries(),
        &[(1, 0)],
        "and it is durable"
    );
    assert_eq!(log.leader_epoch(), 3);
}

#[test]
fn an_interrupted_truncation_is_finished_on_the_history_at_open() {
    // A crash after the log was truncated but before the history was rewritten leaves epochs
    // that start past the end: open cuts them.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let log = open(&dir);
    log.set_leader_epoch(1).unwrap();
    append(&log, 10, "a");
    drop(log);
    stratalog::EpochHistory::from_entries(vec![(1, 0), (2, 10), (5, 25)])
        .unwrap()
        .store(stratalog::storage::FsStorage::shared().as_ref(), &dir)
        .unwrap();
    let log = open(&dir);
    assert_eq!(log.epoch_history().entries(), &[(1, 0), (2, 10)]);
    assert_eq!(
        log.leader_epoch(),
        5,
        "the current epoch is kept: it only rises, also when its records are cut"
    );
}

/// KIP-101: a follower (B) that led in an epoch the new leader (A) never saw truncates exactly
/// the records of that epoch, found through the leader's epoch history, never the records both
/// share; KIP-279: the same after two leader changes in quick succession.
#[test]
fn divergence_is_cut_exactly_through_the_epoch_history() {
    let tmp = tempfile::tempdir().unwrap();
    let a = open(&tmp.path().join("a"));
    let b = open(&tmp.path().join("b"));
    // Epoch 1, A leads: 20 records, B copies them.
    a.set_leader_epoch(1).unwrap();
    append(&a, 20, "e1");
    b.append_replica(&batches_from(&a, 0)).unwrap();
    // A writes 5 more in epoch 1 that B never gets; then B is promoted (epoch 2) and writes 8
    // that A never gets.
    append(&a, 5, "e1-late");
    b.set_leader_epoch(2).unwrap();
    append(&b, 8, "e2");
    // B dies; A is promoted (epoch 3) and writes 10.
    a.set_leader_epoch(3).unwrap();
    append(&a, 10, "e3");
    // B rejoins as A's follower: where does B's last epoch (2) end on A?
    let (epoch, end) = a.epoch_end(b.last_record_epoch().unwrap()).unwrap();
    assert_eq!(
        (epoch, end),
        (1, 25),
        "A never had epoch 2: epoch 1 ends at 25 there"
    );
    // B truncates to the smaller of that and its own end of that epoch (KIP-279), never below.
    let own_end = b.epoch_end(epoch).unwrap().1;
    let cut = end.min(own_end);
    assert_eq!(
        cut, 20,
        "B's epoch 1 ends at 20: everything both have is kept"
    );
    b.truncate(cut).unwrap();
    b.append_replica(&batches_from(&a, cut))
        .unwrap()
        .receipt
        .wait()
        .unwrap();
    assert_identical(&a, &b, 0);
    // The divergent epoch 2 is gone from B's history; A's epochs are there.
    assert_eq!(b.epoch_history().entries(), &[(1, 0), (3, 25)]);
}

#[test]
fn the_high_watermark_and_the_wait_for_new_data() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Arc::new(open(&tmp.path().join("log")));
    append(&log, 5, "a");
    assert_eq!(log.high_watermark(), 5, "a log alone is its own quorum");
    log.set_high_watermark(3);
    assert_eq!(log.high_watermark(), 3);
    log.set_high_watermark(99);
    assert_eq!(log.high_watermark(), 5, "never above the end");
    log.truncate(2).unwrap();
    assert_eq!(log.high_watermark(), 2, "a truncation lowers it");

    assert!(log.wait_for_data(1, Duration::ZERO), "offset 1 is there");
    assert!(
        !log.wait_for_data(2, Duration::from_millis(20)),
        "nothing new"
    );
    let appender = {
        let log = log.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            append(&log, 1, "late");
        })
    };
    // Bounded: a generous timeout that only a lost wake-up would reach.
    assert!(log.wait_for_data(2, Duration::from_secs(30)));
    appender.join().unwrap();
}

/// A leader's follower fetches read past the durable end, up to the written end
/// (`Log::written_end`), so that the leader's fsync and the follower's overlap; consumers
/// never see those records. A failed log (an fsync error) serves none of them: their pages may
/// already be gone.
#[test]
fn reads_past_the_durable_end_reach_the_written_end_until_the_log_fails() {
    let sim = SimStorage::new(5);
    let dir = Path::new("/w");
    let options = LogOptions {
        group_commit: stratalog::GroupCommit::External,
        ..common::options(sim.shared(), FsyncPolicy::Always)
    };
    let log = Log::open(dir, options).unwrap();
    // External group commit, and no shared thread: nothing is synced until a receipt is awaited.
    let first = log.append_records(&["a", "b"]).unwrap();
    assert_eq!((log.end_offset(), log.written_end()), (0, 2));
    assert!(
        log.read(0, 1 << 20).unwrap().is_empty(),
        "readers see durable records only"
    );
    assert!(log.read_file_ranges(0, 0, 1 << 20).unwrap().is_empty());
    let ranges = log.read_file_ranges(0, log.written_end(), 1 << 20).unwrap();
    assert_eq!(ranges.len(), 1);
    assert_eq!((ranges[0].base_offset(), ranges[0].last_offset()), (0, 1));
    assert!(log.wait_for_written(0, Duration::ZERO));
    assert!(!log.wait_for_data(0, Duration::ZERO));
    // The newest epoch ends at the written end: a follower that fetched these is not told it
    // diverged.
    assert_eq!(
        log.epoch_end(log.leader_epoch()).map(|(_, end)| end),
        Some(2)
    );
    first.receipt.wait().unwrap();
    assert_eq!((log.end_offset(), log.written_end()), (2, 2));

    // A truncation takes the written end down with the end.
    let second = log.append_records(&["c"]).unwrap();
    assert_eq!(log.written_end(), 3);
    second.receipt.wait().unwrap();
    log.truncate(2).unwrap();
    assert_eq!((log.end_offset(), log.written_end()), (2, 2));

    // A failed fsync fails the log: nothing past the durable end is served any more.
    let third = log.append_records(&["d"]).unwrap();
    sim.inject(stratalog::storage::Fault::FailSync { nth: 1 });
    assert!(third.receipt.wait().is_err());
    assert_eq!(log.written_end(), 3);
    assert!(matches!(
        log.read_file_ranges(2, 3, 1 << 20),
        Err(Error::Failed(_))
    ));
    // What was durable is still served.
    assert_eq!(log.read_file_ranges(0, 2, 1 << 20).unwrap().len(), 1);
}
