//! Reads at the log start while retention deletes segments: a read below the start is
//! `OffsetOutOfRange`, never a corruption report.
//!
//! Followers fetch at the leader's start offset all the time, and retention may raise the start
//! between the moment a read checks it and the moment it looks up its segment.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use stratalog::storage::SimStorage;
use stratalog::{Error, FsyncPolicy, Log, LogConfig, LogOptions};

/// How long the appender and readers run at most.
const RUN: Duration = Duration::from_secs(2);
/// Retention passes after which the run stops early.
const MAX_PASSES: u64 = 20_000;
const READERS: usize = 2;

#[test]
fn reads_at_start_racing_retention_never_report_corruption() {
    // The simulated storage: no real fsync at each roll and retention pass, so thousands of
    // passes fit in the time bound.
    let sim = SimStorage::new(1);
    let log = Arc::new(
        Log::open(
            "/race",
            LogOptions {
                config: LogConfig {
                    segment_bytes: LogConfig::MIN_SEGMENT_BYTES,
                    retention_bytes: Some(2 * LogConfig::MIN_SEGMENT_BYTES),
                    index_interval_bytes: 128,
                    ..LogConfig::default()
                },
                fsync: FsyncPolicy::Never,
                storage: sim.shared(),
                create: true,
                ..LogOptions::default()
            },
        )
        .unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let passes = Arc::new(AtomicU64::new(0));

    let appender = {
        let (log, stop, passes) = (log.clone(), stop.clone(), passes.clone());
        thread::spawn(move || {
            let started = Instant::now();
            let value = [7u8; 200];
            while started.elapsed() < RUN && passes.load(Ordering::Relaxed) < MAX_PASSES {
                log.append_records(&[&value[..], &value[..]]).unwrap();
                if log.apply_retention().unwrap() > 0 {
                    passes.fetch_add(1, Ordering::Relaxed);
                }
            }
            stop.store(true, Ordering::Relaxed);
        })
    };

    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (log, stop) = (log.clone(), stop.clone());
            thread::spawn(move || {
                let (mut ok, mut out_of_range) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let start = log.start_offset();
                    match log.read(start, 4096) {
                        Ok(batches) => {
                            if let Some(first) = batches.first() {
                                assert!(
                                    first.base_offset() <= start,
                                    "read at {start} returned a batch starting at {}",
                                    first.base_offset()
                                );
                            }
                            ok += 1;
                        }
                        Err(Error::OffsetOutOfRange {
                            offset, start: now, ..
                        }) => {
                            assert!(offset < now, "out of range at {offset}, start {now}");
                            out_of_range += 1;
                        }
                        Err(e) => panic!("a read at the start {start} failed: {e}"),
                    }
                }
                (ok, out_of_range)
            })
        })
        .collect();

    appender.join().unwrap();
    let (mut ok, mut out_of_range) = (0, 0);
    for r in readers {
        let (o, oor) = r.join().unwrap();
        ok += o;
        out_of_range += oor;
    }
    let passes = passes.load(Ordering::Relaxed);
    eprintln!(
        "retention race: {passes} retention passes, {ok} reads at the start ok, {out_of_range} out of range (the start moved), no corruption"
    );
    assert!(passes > 0, "retention never deleted a segment");
    assert!(ok > 0, "no read succeeded");
}
