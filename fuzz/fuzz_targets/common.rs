//! Shared by the fuzz targets that work on a whole log in the simulated storage.
#![allow(
    dead_code,
    reason = "each fuzz target includes this module and uses only some of its helpers"
)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use stratalog::storage::{SimStorage, Storage};
use stratalog::{BatchBuilder, Compression, FsyncPolicy, Log, LogConfig, LogOptions};

pub const DIR: &str = "/fuzz";

pub fn options(sim: &SimStorage) -> LogOptions {
    LogOptions {
        config: LogConfig {
            segment_bytes: 1024,
            index_interval_bytes: 100,
            ..Default::default()
        },
        fsync: FsyncPolicy::Always,
        storage: sim.shared(),
        ..Default::default()
    }
}

/// A closed log of 3 segments (two sealed) with 40 records in 20 batches, every other one
/// LZ4: its files, its record values, and the offset `offset_for_timestamp(10)` gives.
pub struct Template {
    pub files: Vec<(PathBuf, Vec<u8>)>,
    pub values: Vec<Vec<u8>>,
}

pub fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| {
        let sim = SimStorage::new(1);
        let dir = Path::new(DIR);
        let log = Log::open(dir, options(&sim)).expect("open the template log");
        let mut values = Vec::new();
        for i in 0..20 {
            let mut b = BatchBuilder::new(if i % 2 == 0 {
                Compression::Lz4
            } else {
                Compression::None
            });
            for j in 0..2 {
                let v = format!("record {i}-{j} {}", "x".repeat(40));
                b.push_value(i, v.as_bytes()).unwrap();
                values.push(v.into_bytes());
            }
            log.append(&b).unwrap().receipt.wait().unwrap();
        }
        log.close().unwrap();
        let mut names = sim.list(dir).unwrap();
        names.sort();
        let files = names
            .into_iter()
            .filter(|n| n != ".lock")
            .map(|n| (dir.join(&n), sim.file(&dir.join(&n)).unwrap()))
            .collect::<Vec<_>>();
        let segments = files
            .iter()
            .filter(|(p, _)| p.extension().is_some_and(|e| e == "log"))
            .count();
        assert!(
            segments >= 3,
            "the template needs sealed segments: {segments}"
        );
        Template { files, values }
    })
}

/// A fresh simulated storage holding the template's files.
pub fn storage_with_template() -> SimStorage {
    let sim = SimStorage::new(2);
    for (path, bytes) in &template().files {
        sim.set_file(path, bytes.clone());
    }
    sim
}

/// Reads everything from the log start, checking what comes back is ordered and in range.
/// Returns the values read, or `None` if a read failed (which it may, on corrupt data).
pub fn read_all(log: &Log) -> Option<Vec<Vec<u8>>> {
    let (start, end) = (log.start_offset(), log.end_offset());
    let mut next = start;
    let mut out = Vec::new();
    while next < end {
        let batches = log.read(next, 4096).ok()?;
        assert!(!batches.is_empty(), "a read below the end returned nothing");
        for b in batches {
            assert!(
                b.base_offset() <= next && b.last_offset() >= next,
                "read at {next} returned batch {}..={}",
                b.base_offset(),
                b.last_offset()
            );
            assert!(b.last_offset() < end, "a batch past the end was served");
            let records = b.records().ok()?;
            for r in records {
                let r = r.ok()?;
                if r.offset >= next {
                    out.push(r.value.to_vec());
                    next = r.offset + 1;
                }
            }
        }
    }
    Some(out)
}

/// After recovery, the log must take a new append, serve it, close cleanly and reopen clean
/// with the same end.
pub fn check_writable(sim: &SimStorage, log: Log) {
    let end = log.end_offset();
    let appended = log
        .append_records(&[b"after recovery"])
        .expect("append after recovery");
    assert_eq!(appended.base_offset, end);
    appended.receipt.wait().expect("ack after recovery");
    // Reaching the new record may mean scanning bytes the fuzzer planted in front of it (a
    // log closed cleanly is not rescanned): that may fail, but only as detected corruption.
    match log.read(end, 1024) {
        Ok(batches) => {
            let r = batches[0].records().unwrap().next().unwrap().unwrap();
            assert_eq!(&r.value[..], b"after recovery");
        }
        Err(e) => assert!(e.is_corruption(), "reading the new record: {e}"),
    }
    log.close().expect("close after recovery");
    let log = Log::open(DIR, options(sim)).expect("reopen after a clean close");
    assert!(log.recovery_report().clean, "{:?}", log.recovery_report());
    assert_eq!(log.end_offset(), end + 1);
}
