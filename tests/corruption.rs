//! Every single-bit flip of a sealed segment of at least 16 KiB is detected (by `verify` and by reads, and
//! no corrupt record is served); every cut of the last two batches of the active segment
//! recovers exactly the whole batches before the cut.

mod common;

use std::path::{Path, PathBuf};

use common::{assert_sound, values};
use stratalog::log::BatchScan;
use stratalog::storage::SimStorage;
use stratalog::{BatchBuilder, Compression, FsyncPolicy, Log, LogConfig, LogOptions, Record};

fn opts(sim: &SimStorage, segment_bytes: u64) -> LogOptions {
    LogOptions {
        config: LogConfig {
            segment_bytes,
            index_interval_bytes: 128,
            ..Default::default()
        },
        fsync: FsyncPolicy::Always,
        storage: sim.shared(),
        create: true,
        ..Default::default()
    }
}

/// Appends `batches` batches of 3 records (keys, headers, every other one LZ4) and closes.
fn fill(sim: &SimStorage, dir: &Path, segment_bytes: u64, batches: usize) {
    let log = Log::open(dir, opts(sim, segment_bytes)).unwrap();
    for i in 0..batches {
        let mut b = BatchBuilder::new(if i % 2 == 0 {
            Compression::Lz4
        } else {
            Compression::None
        });
        for j in 0..3 {
            let value = format!("batch {i} record {j} {}", "payload ".repeat(4));
            let key = format!("k{j}");
            b.push(&Record {
                timestamp: 1_000 + i as i64,
                key: Some(key.as_bytes()),
                value: value.as_bytes(),
                headers: &[(b"h", b"v")],
            })
            .unwrap();
        }
        log.append(&b).unwrap().receipt.wait().unwrap();
    }
    log.close().unwrap();
}

/// Snapshot of every file of the directory, to restore between attempts.
fn snapshot(sim: &SimStorage, dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    use stratalog::storage::Storage;
    let mut names = sim.list(dir).unwrap();
    names.sort();
    names
        .into_iter()
        .filter(|n| n != ".lock")
        .map(|n| (dir.join(&n), sim.file(&dir.join(&n)).unwrap()))
        .collect()
}

fn restore(sim: &SimStorage, files: &[(PathBuf, Vec<u8>)]) {
    for (path, bytes) in files {
        sim.set_file(path, bytes.clone());
    }
}

/// Reads every record from the start, `max_bytes` at a time, stopping at the first error. Returns the values read and
/// whether an error was met.
fn read_until_error(log: &Log, max_bytes: usize) -> (Vec<Vec<u8>>, bool) {
    let mut out = Vec::new();
    let mut next = log.start_offset();
    while next < log.end_offset() {
        match log.read(next, max_bytes) {
            Err(e) => {
                assert!(e.is_corruption(), "unexpected error kind: {e}");
                return (out, true);
            }
            Ok(batches) => {
                for batch in batches {
                    for r in batch.records().unwrap() {
                        let r = r.unwrap();
                        out.push(r.value.to_vec());
                        next = r.offset + 1;
                    }
                }
            }
        }
    }
    (out, false)
}

#[test]
fn every_bit_flip_of_a_16_kib_sealed_segment_is_detected() {
    let sim = SimStorage::new(7);
    let dir = Path::new("/rot");
    // 17 KiB segments: the first one is sealed once it holds at least 16 KiB.
    let segment_bytes = 17 * 1024;
    fill(&sim, dir, segment_bytes, 80);
    let files = snapshot(&sim, dir);
    let seg = dir.join("00000000000000000000.log");
    let original = sim.file(&seg).unwrap();
    assert!(
        original.len() >= 16 * 1024,
        "the sealed segment must be at least 16 KiB: {}",
        original.len()
    );
    let mut log = Log::open(dir, opts(&sim, segment_bytes)).unwrap();
    let good = values(&log).unwrap();
    let in_first = BatchScan::new(original.clone().into(), 32, original.len() as u64)
        .map(|(_, b)| b.unwrap().record_count() as usize)
        .sum::<usize>();
    assert!(good.len() > in_first, "the first segment must be sealed");
    // One open log reads the flipped file every time (the simulated storage copies the file on
    // every map), so each read below sees the flip; every 512th flip also opens the log anew.
    let (mut flips, mut by_verify, mut by_reads, mut reopened, mut served) = (0u64, 0, 0, 0, 0);
    let mut bad = original.clone();
    for pos in 0..original.len() {
        for bit in 0..8 {
            bad[pos] ^= 1 << bit;
            sim.set_file(&seg, bad.clone());
            let report = stratalog::verify_dir(&sim, dir).unwrap();
            assert!(!report.is_sound(), "verify missed byte {pos} bit {bit}");
            by_verify += 1;
            if flips % 512 == 0 {
                drop(log);
                log = Log::open(dir, opts(&sim, segment_bytes)).unwrap();
                reopened += 1;
            }
            let (read, detected) = read_until_error(&log, 4096);
            assert!(detected, "reads missed byte {pos} bit {bit}");
            by_reads += 1;
            assert_eq!(
                &read[..],
                &good[..read.len()],
                "a corrupt record was served (byte {pos} bit {bit})"
            );
            served += read.len() as u64;
            bad[pos] ^= 1 << bit;
            flips += 1;
        }
    }
    drop(log);
    restore(&sim, &files);
    assert_sound(&sim, dir, "after the bit-rot test");
    eprintln!(
        "bit rot: {flips} single-bit flips (every bit) of a {}-byte sealed segment ({} records); \
         detected by verify {by_verify}, by reads {by_reads} ({reopened} of them through a fresh \
         open); {served} good records read before the corrupt batch, no corrupt record served",
        original.len(),
        in_first
    );
}

#[test]
fn every_cut_of_the_last_two_batches_recovers_the_whole_batches_before_it() {
    let sim = SimStorage::new(8);
    let dir = Path::new("/cut");
    fill(&sim, dir, 1 << 20, 6);
    let files = snapshot(&sim, dir);
    let seg = dir.join("00000000000000000000.log");
    let original = sim.file(&seg).unwrap();
    let ends: Vec<(u64, u64)> = BatchScan::new(original.clone().into(), 32, original.len() as u64)
        .map(|(pos, b)| {
            let b = b.unwrap();
            (pos + b.len() as u64, b.last_offset() + 1)
        })
        .collect();
    assert_eq!(ends.len(), 6);
    let log = Log::open(dir, opts(&sim, 1 << 20)).unwrap();
    let all = values(&log).unwrap();
    drop(log);
    let first_cut = ends[3].0; // start of the second-to-last batch
    let mut cuts = 0;
    for cut in first_cut..=original.len() as u64 {
        restore(&sim, &files);
        sim.set_file(&seg, original[..cut as usize].to_vec());
        let log = Log::open(dir, opts(&sim, 1 << 20)).unwrap();
        let expected_end = ends
            .iter()
            .filter(|(end, _)| *end <= cut)
            .map(|(_, next)| *next)
            .max()
            .unwrap();
        assert_eq!(log.end_offset(), expected_end, "cut at {cut}");
        assert_eq!(
            values(&log).unwrap(),
            all[..expected_end as usize],
            "cut at {cut}"
        );
        let at_boundary = ends.iter().any(|(end, _)| *end == cut);
        assert_eq!(
            log.recovery_report().torn.is_empty(),
            at_boundary,
            "cut at {cut}: {:?}",
            log.recovery_report()
        );
        log.close().unwrap();
        assert_sound(&sim, dir, &format!("cut at {cut}"));
        cuts += 1;
    }
    eprintln!(
        "torn tails: {cuts} cuts of the last two batches, each recovered exactly the whole batches before it"
    );
}

#[test]
fn a_sealed_index_that_fails_its_checks_is_rebuilt() {
    let sim = SimStorage::new(9);
    let dir = Path::new("/idx");
    fill(&sim, dir, 1024, 24);
    let files = snapshot(&sim, dir);
    let index = dir.join("00000000000000000000.index");
    let time = dir.join("00000000000000000000.timeindex");
    let good_index = sim.file(&index).unwrap();
    let good_time = sim.file(&time).unwrap();
    assert!(
        good_index.len() > 32 + 8,
        "the sealed segment must have index entries"
    );
    let log = Log::open(dir, opts(&sim, 1024)).unwrap();
    let good = values(&log).unwrap();
    let at_ts = log.offset_for_timestamp(1_010).unwrap();
    drop(log);
    let garble = |mut b: Vec<u8>| {
        let n = b.len();
        b[n - 3] ^= 0x5A;
        b[n - 7] ^= 0xA5;
        b
    };
    let damages: Vec<(&str, PathBuf, Vec<u8>)> = vec![
        ("garbled entries", index.clone(), garble(good_index.clone())),
        (
            "cut mid-entry",
            index.clone(),
            good_index[..good_index.len() - 3].to_vec(),
        ),
        (
            "zero-padded",
            index.clone(),
            [good_index.clone(), vec![0; 16]].concat(),
        ),
        (
            "bad header",
            index.clone(),
            [vec![0; 32], good_index[32..].to_vec()].concat(),
        ),
        (
            "garbled time index",
            time.clone(),
            garble(good_time.clone()),
        ),
        (
            "truncated inside the header",
            index.clone(),
            good_index[..10].to_vec(),
        ),
        ("truncated to nothing", index.clone(), Vec::new()),
        (
            "time index cut mid-entry",
            time.clone(),
            good_time[..good_time.len() - 5].to_vec(),
        ),
        (
            "zero-padded time index",
            time.clone(),
            [good_time.clone(), vec![0; 24]].concat(),
        ),
        (
            "time index without its last entry",
            time.clone(),
            good_time[..good_time.len() - 12].to_vec(),
        ),
        (
            "offset index without its last entry",
            index.clone(),
            good_index[..good_index.len() - 8].to_vec(),
        ),
        (
            "time index truncated to its header",
            time.clone(),
            good_time[..32].to_vec(),
        ),
    ];
    let mut rebuilt = 0;
    let tried = damages.len();
    for (what, path, bytes) in damages {
        restore(&sim, &files);
        sim.set_file(&path, bytes);
        let log = Log::open(dir, opts(&sim, 1024)).unwrap();
        // Reads and timestamp lookups go through the index: they must still be right.
        for from in [0, 5, 11] {
            let batch = &log.read(from, 1).unwrap()[0];
            assert!(
                batch.base_offset() <= from && from <= batch.last_offset(),
                "{what}: read from {from}"
            );
        }
        assert_eq!(values(&log).unwrap(), good, "{what}");
        assert_eq!(log.offset_for_timestamp(1_010).unwrap(), at_ts, "{what}");
        drop(log);
        assert_sound(&sim, dir, &format!("{what}: the rebuilt index"));
        // The damaged file was replaced by a rebuilt one, byte for byte the original.
        let original = if path == index {
            &good_index
        } else {
            &good_time
        };
        assert_eq!(&sim.file(&path).unwrap(), original, "{what}: not rebuilt");
        rebuilt += 1;
    }
    assert_eq!(rebuilt, tried);
    eprintln!(
        "index damage: {rebuilt} damaged sealed index files (garbled, truncated, zero-padded, bad header), each rebuilt and every read and time lookup right"
    );
}
