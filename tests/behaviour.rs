//! The log's API promises, one by one.

mod common;

use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use common::{options, values};
use stratalog::storage::{Fault, SimStorage, Storage};
use stratalog::{BatchBuilder, Error, FsyncPolicy, Log, LogConfig, LogOptions};

fn sim_log(sim: &SimStorage, dir: &str, fsync: FsyncPolicy, config: LogConfig) -> Log {
    Log::open(
        dir,
        LogOptions {
            config,
            fsync,
            storage: sim.shared(),
            create: true,
            ..Default::default()
        },
    )
    .unwrap()
}

fn segment_count(sim: &SimStorage, dir: &str) -> usize {
    sim.list(Path::new(dir))
        .unwrap()
        .iter()
        .filter(|n| n.ends_with(".log"))
        .count()
}

/// A minimal executor: polls a future, parking the thread until its waker is called.
fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

#[test]
fn receipt_is_a_future() {
    let sim = SimStorage::new(1);
    let log = sim_log(&sim, "/f", FsyncPolicy::Always, LogConfig::default());
    let a = log.append_records(&["one"]).unwrap();
    block_on(a.receipt).unwrap();
    assert_eq!(log.end_offset(), 1, "a durable record is visible");
}

#[test]
fn concurrent_writers_get_dense_unique_offsets() {
    let sim = SimStorage::new(2);
    let log = Arc::new(sim_log(
        &sim,
        "/c",
        FsyncPolicy::Always,
        common::small_config(),
    ));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| {
                        let a = log.append_records(&[format!("t{t}-{i}")]).unwrap();
                        a.receipt.wait().unwrap();
                        a.base_offset
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut offsets: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    offsets.sort_unstable();
    assert_eq!(offsets, (0..400).collect::<Vec<_>>());
    let got = values(&log).unwrap();
    for t in 0..8 {
        // Each thread's records keep their order.
        let mine: Vec<_> = got
            .iter()
            .filter(|v| v.starts_with(format!("t{t}-").as_bytes()))
            .cloned()
            .collect();
        let want: Vec<_> = (0..50).map(|i| format!("t{t}-{i}").into_bytes()).collect();
        assert_eq!(mine, want);
    }
}

#[test]
fn segments_roll_by_size_and_by_age() {
    let sim = SimStorage::new(3);
    let log = sim_log(
        &sim,
        "/r",
        FsyncPolicy::Never,
        LogConfig {
            segment_bytes: 1024,
            ..Default::default()
        },
    );
    for _ in 0..20 {
        log.append_records(&["x".repeat(200)]).unwrap();
    }
    assert!(segment_count(&sim, "/r") >= 4, "size rolls");
    let sim = SimStorage::new(4);
    let log = sim_log(
        &sim,
        "/a",
        FsyncPolicy::Never,
        LogConfig {
            segment_ms: Some(20),
            ..Default::default()
        },
    );
    log.append_records(&["a"]).unwrap();
    log.append_records(&["b"]).unwrap();
    assert_eq!(segment_count(&sim, "/a"), 1);
    std::thread::sleep(Duration::from_millis(40));
    log.append_records(&["c"]).unwrap();
    assert_eq!(segment_count(&sim, "/a"), 2, "age roll");
    assert_eq!(
        values(&log).unwrap(),
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
}

#[test]
fn retention_by_size_and_age_persists_the_start_offset() {
    let sim = SimStorage::new(5);
    let config = LogConfig {
        segment_bytes: 1024,
        retention_bytes: Some(3000),
        ..Default::default()
    };
    let log = sim_log(&sim, "/ret", FsyncPolicy::Never, config);
    for i in 0..60 {
        log.append_records(&[format!("{i:0>150}")]).unwrap();
    }
    let deleted = log.apply_retention().unwrap();
    assert!(deleted > 0);
    let start = log.start_offset();
    assert!(start > 0);
    assert!(matches!(
        log.read(0, 100),
        Err(Error::OffsetOutOfRange { .. })
    ));
    assert_eq!(values(&log).unwrap().len() as u64, 60 - start);
    log.close().unwrap();
    let log = sim_log(&sim, "/ret", FsyncPolicy::Never, LogConfig::default());
    assert_eq!(log.start_offset(), start, "start offset persisted");
    assert_eq!(
        log.config().retention_bytes,
        Some(3000),
        "config persisted at creation"
    );

    // By age: every sealed segment holds records from 1970.
    let sim = SimStorage::new(6);
    let log = sim_log(
        &sim,
        "/age",
        FsyncPolicy::Never,
        LogConfig {
            segment_bytes: 1024,
            retention_ms: Some(1000),
            ..Default::default()
        },
    );
    for i in 0..20 {
        let mut b = BatchBuilder::default();
        b.push_value(i, &[b'y'; 200]).unwrap();
        log.append(&b).unwrap();
    }
    assert!(log.apply_retention().unwrap() > 0);
    assert_eq!(
        segment_count(&sim, "/age"),
        1,
        "only the active segment is left"
    );
}

#[test]
fn read_from_timestamp_uses_the_time_index() {
    let sim = SimStorage::new(7);
    let log = sim_log(&sim, "/t", FsyncPolicy::Never, common::small_config());
    for i in 0..300i64 {
        let mut b = BatchBuilder::default();
        b.push_value(1000 + i * 10, format!("{i}").as_bytes())
            .unwrap();
        log.append(&b).unwrap();
    }
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some(0));
    assert_eq!(log.offset_for_timestamp(1000 + 1234).unwrap(), Some(124));
    assert_eq!(log.offset_for_timestamp(1000 + 2990).unwrap(), Some(299));
    assert_eq!(log.offset_for_timestamp(1000 + 2991).unwrap(), None);
    let batches = log.read_from_timestamp(1000 + 500, 1).unwrap();
    assert_eq!(batches[0].base_offset(), 50);
    log.close().unwrap();
    let log = sim_log(&sim, "/t", FsyncPolicy::Never, common::small_config());
    assert_eq!(
        log.offset_for_timestamp(1000 + 1234).unwrap(),
        Some(124),
        "sealed indexes after reopen"
    );
}

#[test]
fn interval_policy_acks_at_once_and_syncs_soon() {
    let sim = SimStorage::new(8);
    let log = sim_log(
        &sim,
        "/i",
        FsyncPolicy::Interval(Duration::from_millis(10)),
        LogConfig::default(),
    );
    let syncs = sim.counters().syncs;
    let a = log.append_records(&["now"]).unwrap();
    assert!(a.receipt.is_complete(), "acknowledged when written");
    assert_eq!(log.end_offset(), 1, "visible when written");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while sim.counters().syncs == syncs {
        assert!(
            std::time::Instant::now() < deadline,
            "no fsync within 5 s under a 10 ms interval"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn an_fsync_error_fails_the_log_until_reopen() {
    let sim = SimStorage::new(9);
    let dir = "/eio";
    let log = sim_log(&sim, dir, FsyncPolicy::Always, LogConfig::default());
    log.append_records(&["kept"])
        .unwrap()
        .receipt
        .wait()
        .unwrap();
    sim.inject(Fault::FailSync { nth: 1 });
    let a = log.append_records(&["lost"]).unwrap();
    assert!(matches!(a.receipt.wait(), Err(Error::Failed(_))));
    assert!(matches!(
        log.append_records(&["refused"]),
        Err(Error::Failed(_))
    ));
    assert_eq!(
        log.end_offset(),
        1,
        "the unsynced batch never became visible"
    );
    assert!(log.close().is_err(), "close reports the failure");
    let log = sim_log(&sim, dir, FsyncPolicy::Always, LogConfig::default());
    log.append_records(&["again"])
        .unwrap()
        .receipt
        .wait()
        .unwrap();
    assert_eq!(values(&log).unwrap()[0], b"kept");
}

#[test]
fn a_directory_is_opened_by_one_log_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Log::open(tmp.path(), LogOptions::default()).unwrap();
    assert!(matches!(
        Log::open(tmp.path(), LogOptions::default()),
        Err(Error::Locked { .. })
    ));
    drop(log);
    Log::open(tmp.path(), LogOptions::default()).unwrap();
}

#[test]
fn bad_requests_get_clear_errors() {
    let sim = SimStorage::new(10);
    let log = Log::open("/bad", options(sim.shared(), FsyncPolicy::Never)).unwrap();
    let mut b = BatchBuilder::default();
    for i in 0..3 {
        b.push_value(i, b"v").unwrap();
    }
    log.append(&b).unwrap();
    log.append(&b).unwrap();
    assert!(matches!(
        log.read(7, 10),
        Err(Error::OffsetOutOfRange {
            offset: 7,
            start: 0,
            end: 6
        })
    ));
    assert!(log.read(6, 10).unwrap().is_empty());
    let e = log.truncate(4).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    assert!(e.to_string().contains("batch boundary"), "{e}");
    assert!(matches!(
        log.append(&BatchBuilder::default()),
        Err(Error::InvalidArgument(_))
    ));
    log.truncate(3).unwrap();
    assert_eq!(log.end_offset(), 3);
    let config = LogConfig {
        segment_bytes: 10,
        ..Default::default()
    };
    let e = Log::open(
        "/bad2",
        LogOptions {
            config,
            storage: sim.shared(),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("segment_bytes"), "{e}");
}

#[test]
fn after_a_power_loss_recovery_scans_only_the_active_segment() {
    let sim = SimStorage::new(11);
    let dir = "/scan";
    let config = LogConfig {
        segment_bytes: 4096,
        ..Default::default()
    };
    let log = sim_log(&sim, dir, FsyncPolicy::Always, config);
    for i in 0..200 {
        log.append_records(&[format!("{i:0>300}")])
            .unwrap()
            .receipt
            .wait()
            .unwrap();
    }
    assert!(segment_count(&sim, dir) > 10);
    sim.power_loss(stratalog::storage::PowerLoss::DropUnsynced);
    drop(log);
    let log = sim_log(&sim, dir, FsyncPolicy::Always, config);
    let report = log.recovery_report();
    assert!(!report.clean);
    // The checkpoint is fsynced at every roll, so the scan starts in the active segment.
    assert!(
        report.scanned_bytes <= 4096,
        "scanned {} bytes: {report:?}",
        report.scanned_bytes
    );
    assert_eq!(values(&log).unwrap().len(), 200);
}
