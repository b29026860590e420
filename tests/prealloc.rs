//! Segment preallocation: the active segment is extended ahead of the writer (zeros written in
//! the background, or `fallocate`), sealing and closing trim what was not used, and recovery
//! takes an all-zero tail for preallocated space, never for a torn write or for data.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use stratalog::format::FILE_HEADER_LEN;
use stratalog::log::BatchScan;
use stratalog::storage::{FsStorage, PowerLoss, SimStorage};
use stratalog::{BatchBuilder, FsyncPolicy, Log, LogConfig, LogOptions, Preallocate};

/// Appends records from `*i` on until `done` holds, pausing between them so that the shared
/// preallocation thread gets to run. (A request for more space is made by an append, so
/// waiting without appending could wait for a request that never comes.) Gives up after a
/// generous limit: the machine may be shared and busy.
fn append_until(log: &Log, i: &mut usize, what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "gave up waiting: {what}"
        );
        append(log, *i);
        *i += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn options(prealloc: Preallocate, segment_bytes: u64, fsync: FsyncPolicy) -> LogOptions {
    LogOptions {
        config: LogConfig {
            segment_bytes,
            ..LogConfig::default()
        },
        fsync,
        preallocate: prealloc,
        ..LogOptions::default()
    }
}

fn record(i: usize) -> Vec<u8> {
    format!("{i:08}-{}", "v".repeat(1000)).into_bytes()
}

fn append(log: &Log, i: usize) {
    let mut b = BatchBuilder::default();
    b.push_value(i as i64, &record(i)).unwrap();
    log.append(&b).unwrap().receipt.wait().unwrap();
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// Where the last valid batch of a segment file ends.
fn data_end(path: &Path) -> u64 {
    data_end_of(fs::read(path).unwrap())
}

/// Where the last valid batch of a segment's bytes ends.
fn data_end_of(bytes: Vec<u8>) -> u64 {
    let bytes = bytes::Bytes::from(bytes);
    let len = bytes.len() as u64;
    BatchScan::new(bytes, FILE_HEADER_LEN as u64, len)
        .map_while(|(pos, batch)| batch.ok().map(|b| pos + b.len() as u64))
        .last()
        .unwrap_or(FILE_HEADER_LEN as u64)
}

fn len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

fn check_values(log: &Log, n: usize) {
    let got = common::values(log).unwrap();
    assert_eq!(got.len(), n);
    for (i, v) in got.iter().enumerate() {
        assert_eq!(v, &record(i), "record {i}");
    }
}

#[test]
fn the_active_segment_is_extended_ahead_of_the_writer_and_trimmed_at_close() {
    for mode in [Preallocate::Zeros, Preallocate::Fallocate, Preallocate::Off] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let log = Log::open(&dir, options(mode, 64 << 20, FsyncPolicy::Always)).unwrap();
        let mut n = 0;
        while n < 1000 {
            append(&log, n);
            n += 1;
        }
        let path = segment_files(&dir).pop().unwrap();
        if mode != Preallocate::Off {
            // At least half a chunk (as much as the segment holds) is kept ahead of the writer.
            append_until(&log, &mut n, "preallocation ahead of the writer", || {
                len(&path) >= data_end(&path) * 3 / 2
            });
            let bytes = fs::read(&path).unwrap();
            assert!(
                bytes.ends_with(&[0; 4096]),
                "{mode:?}: the space ahead reads as zeros"
            );
            // verify, while the log is open, calls the zeros preallocated space, not a fault.
            let report = stratalog::verify_dir(&FsStorage, &dir).unwrap();
            assert!(report.is_sound(), "{mode:?}: {:#?}", report.problems);
            assert!(
                report
                    .notes
                    .iter()
                    .any(|n| n.contains("preallocated zeros")),
                "{mode:?}: {:?}",
                report.notes
            );
        }
        let open_len = len(&path);
        log.close().unwrap();
        let closed_len = len(&path);
        assert_eq!(
            closed_len,
            data_end(&path),
            "{mode:?}: the file ends in a batch"
        );
        if mode == Preallocate::Off {
            assert_eq!(
                open_len, closed_len,
                "nothing to trim without preallocation"
            );
        } else {
            assert!(open_len > closed_len, "{mode:?}: close trims the zeros");
        }
        let log = Log::open(&dir, options(mode, 64 << 20, FsyncPolicy::Always)).unwrap();
        assert!(log.recovery_report().clean, "{mode:?}: reopened clean");
        check_values(&log, n);
        log.close().unwrap();
        common::assert_sound(&FsStorage, &dir, "after close");
    }
}

#[test]
fn sealed_segments_hold_no_preallocated_space() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let segment = 1 << 20;
    let log = Log::open(
        &dir,
        options(Preallocate::Zeros, segment, FsyncPolicy::Always),
    )
    .unwrap();
    let mut i = 0;
    for round in 1..=3 {
        // Fill the active segment half way, wait until zeros lie ahead of the writer, then go
        // on until it rolls: the roll must trim them.
        let active = segment_files(&dir).pop().unwrap();
        append_until(&log, &mut i, "zeros ahead of the writer", || {
            len(&active) > data_end(&active) + (32 << 10)
        });
        assert_eq!(
            segment_files(&dir).len(),
            round as usize,
            "the zeros came before the roll"
        );
        while segment_files(&dir).len() == round as usize {
            append(&log, i);
            i += 1;
        }
        let sealed = len(&active);
        assert!(
            sealed <= segment,
            "a sealed segment stays within its roll size"
        );
        assert_eq!(
            sealed,
            data_end(&active),
            "sealed segment {round} ends in a batch"
        );
    }
    log.close().unwrap();
    common::assert_sound(&FsStorage, &dir, "after close");
    let log = Log::open(
        &dir,
        options(Preallocate::Zeros, segment, FsyncPolicy::Always),
    )
    .unwrap();
    check_values(&log, i);
}

/// Closes a log of `n` records (no preallocation) and returns its directory and segment.
fn closed_log(tmp: &Path, n: usize) -> (PathBuf, PathBuf) {
    let dir = tmp.join("log");
    let log = Log::open(&dir, unpreallocated()).unwrap();
    for i in 0..n {
        append(&log, i);
    }
    log.close().unwrap();
    let path = segment_files(&dir).pop().unwrap();
    (dir, path)
}

/// Options of the hand-made recovery cases: no preallocation of their own.
fn unpreallocated() -> LogOptions {
    options(Preallocate::Off, 64 << 20, FsyncPolicy::Always)
}

/// Opens (and so recovers) the log in `dir`, with what recovery reported.
fn reopen(dir: &Path) -> (Log, stratalog::RecoveryReport) {
    let log = Log::open(dir, unpreallocated()).unwrap();
    let report = log.recovery_report().clone();
    (log, report)
}

fn append_to_file(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn recovery_trims_a_zero_tail_without_reporting_a_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, path) = closed_log(tmp.path(), 50);
    let data = len(&path);
    append_to_file(&path, &vec![0; 65536]);
    let (log, report) = reopen(&dir);
    assert!(
        !report.clean,
        "a file longer than its checkpoint is scanned"
    );
    assert_eq!(report.preallocated_bytes, 65536);
    assert!(
        report.torn.is_empty(),
        "zeros are no torn write: {report:?}"
    );
    assert!(report.quarantined.is_empty(), "nothing to keep: {report:?}");
    assert_eq!(len(&path), data, "the zeros are trimmed");
    check_values(&log, 50);
    append(&log, 50);
    log.close().unwrap();
    common::assert_sound(&FsStorage, &dir, "after the zero tail");
}

#[test]
fn a_torn_batch_before_zeros_is_cut_and_only_its_bytes_are_quarantined() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, path) = closed_log(tmp.path(), 50);
    let data = len(&path);
    // The first 200 bytes of a batch (into its first value, so not ending in a zero), then
    // preallocated zeros.
    let bytes = fs::read(&path).unwrap();
    let torn = &bytes[FILE_HEADER_LEN..FILE_HEADER_LEN + 200];
    assert_ne!(torn.last(), Some(&0));
    append_to_file(&path, torn);
    append_to_file(&path, &vec![0; 65536]);
    let (log, report) = reopen(&dir);
    assert_eq!(report.torn.len(), 1, "{report:?}");
    assert_eq!(report.torn[0].position, data);
    assert_eq!(
        report.torn[0].bytes, 200,
        "the zeros are not part of the torn write"
    );
    assert_eq!(report.preallocated_bytes, 65536);
    assert_eq!(report.quarantined.len(), 1);
    assert_eq!(report.quarantined[0].bytes, 200);
    assert_eq!(len(&path), data);
    check_values(&log, 50);
}

#[test]
fn zeros_in_the_middle_of_the_tail_are_a_torn_write() {
    // Zeros followed by data are not preallocated space: the whole tail is cut and kept.
    let tmp = tempfile::tempdir().unwrap();
    let (dir, path) = closed_log(tmp.path(), 20);
    let data = len(&path);
    append_to_file(&path, &vec![0; 4096]);
    append_to_file(&path, b"not zero");
    let (log, report) = reopen(&dir);
    assert_eq!(report.torn.len(), 1, "{report:?}");
    assert_eq!(report.torn[0].bytes, 4096 + 8);
    assert_eq!(report.preallocated_bytes, 0);
    assert_eq!(len(&path), data);
    check_values(&log, 20);
}

#[test]
fn power_loss_with_preallocated_space_loses_no_acknowledged_record() {
    for seed in 0..8 {
        let sim = SimStorage::new(seed);
        let dir = Path::new("/prealloc");
        let opts = || LogOptions {
            storage: sim.shared(),
            ..options(Preallocate::Zeros, 1 << 20, FsyncPolicy::Always)
        };
        let log = Log::open(dir, opts()).unwrap();
        let segment = dir.join(format!("{:020}.log", 0));
        let mut n = 0;
        append_until(&log, &mut n, "zeros ahead of the writer", || {
            let live = data_end_of(sim.file(&segment).unwrap());
            sim.durable_file(&segment)
                .is_some_and(|b| b.len() as u64 > live + (64 << 10))
        });
        // More acknowledged appends into the preallocated space, then the power goes.
        for i in n..n + 50 {
            append(&log, i);
        }
        sim.power_loss(if seed % 2 == 0 {
            PowerLoss::DropUnsynced
        } else {
            PowerLoss::Torn
        });
        drop(log);
        let log = Log::open(dir, opts()).unwrap();
        let report = log.recovery_report().clone();
        assert!(report.preallocated_bytes > 0, "seed {seed}: {report:?}");
        assert!(report.torn.is_empty(), "seed {seed}: {report:?}");
        check_values(&log, n + 50);
        log.close().unwrap();
        common::assert_sound(&sim, dir, "after power loss");
    }
}

#[test]
fn a_store_passes_its_preallocation_to_its_partitions() {
    use stratalog::store::{PartitionerKind, Store, StoreOptions, TopicConfig};
    for mode in [Preallocate::Zeros, Preallocate::Off] {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(
            tmp.path(),
            StoreOptions {
                preallocate: mode,
                retention_interval: None,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        store
            .create_topic("t", 1, TopicConfig::default(), PartitionerKind::Modulo)
            .unwrap();
        let log = store.partition("t", 0).unwrap();
        let path = segment_files(log.dir()).pop().unwrap();
        let mut i = 0;
        while i < 300 {
            append(&log, i);
            i += 1;
        }
        if mode == Preallocate::Zeros {
            append_until(
                &log,
                &mut i,
                "zeros ahead of the partition's writer",
                || len(&path) > data_end(&path),
            );
        } else {
            assert_eq!(len(&path), data_end(&path), "no preallocation when off");
        }
    }
}
