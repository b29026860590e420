//! Logs written by older builds keep opening.
//!
//! `tests/fixtures/v1/clean/` is a log in format version 1 (see `docs/FORMAT.md`), written by
//! [`make_fixture_v1`] and closed cleanly. This test copies it to a temporary directory (opening
//! a log writes to it), opens it and checks every record, that the open was clean, and that
//! `verify_dir` finds it sound. It must keep passing unchanged when the format gets a new
//! version: never regenerate the v1 fixture after a format change, add a new fixture instead.

use std::path::Path;

use stratalog::format::{BATCH_VERSION, Compression, FILE_VERSION, Record};
use stratalog::storage::FsStorage;
use stratalog::{BatchBuilder, FsyncPolicy, Log, LogConfig, LogOptions};

const V1_CLEAN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v1/clean");

/// A record as the fixture holds it.
#[derive(Debug, Clone, PartialEq)]
struct Rec {
    offset: u64,
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A batch as the fixture holds it.
#[derive(Debug, Clone)]
struct Bat {
    compression: Compression,
    leader_epoch: u64,
    records: Vec<Rec>,
}

/// The settings of the v1 fixture.
fn v1_config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        segment_ms: None,
        retention_bytes: None,
        retention_ms: None,
        index_interval_bytes: 512,
        compression: Compression::Lz4,
    }
}

/// The content of the v1 fixture: 54 batches, LZ4 and uncompressed in turn, 1 to 4 records
/// each, with and without keys (one empty key), with 0, 1 or 2 headers (one with an empty
/// value), one empty value, fixed timestamps that sometimes go back, two leader epochs.
fn v1_batches() -> Vec<Bat> {
    let mut offset = 0;
    (0..54u64)
        .map(|i| {
            let records = (0..1 + i % 4)
                .map(|j| {
                    let back = if i % 5 == 4 { 3_000 } else { 0 };
                    let timestamp = 1_700_000_000_000 + (i * 1_000 + j * 7) as i64 - back;
                    let key = match (i, j) {
                        (7, 0) => Some(Vec::new()),
                        _ if (i + j) % 3 == 0 => None,
                        _ => Some(format!("key-{i:02}-{j}").into_bytes()),
                    };
                    let value = if (i, j) == (11, 0) {
                        Vec::new()
                    } else {
                        format!("value {i}.{j} ")
                            .repeat(1 + (i * (j + 1)) as usize % 5)
                            .into_bytes()
                    };
                    let headers = match j % 3 {
                        0 => vec![],
                        1 => vec![(b"trace-id".to_vec(), format!("{i:04x}{j:04x}").into_bytes())],
                        _ => vec![
                            (b"content-type".to_vec(), b"text/plain".to_vec()),
                            (b"empty".to_vec(), Vec::new()),
                        ],
                    };
                    let rec = Rec {
                        offset,
                        timestamp,
                        key,
                        value,
                        headers,
                    };
                    offset += 1;
                    rec
                })
                .collect();
            Bat {
                compression: if i % 2 == 0 {
                    Compression::Lz4
                } else {
                    Compression::None
                },
                leader_epoch: if i < 27 { 1 } else { 2 },
                records,
            }
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if !skip.contains(&name.as_str()) {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// Regenerates `tests/fixtures/v1/clean`. Run by hand:
/// `cargo test --test fixtures_open -- --ignored make_fixture_v1`.
/// The log is written with `FsyncPolicy::Never`, so checkpoints are written only at open, at
/// each roll and at close, and the files are the same on every run.
#[test]
#[ignore = "regenerates the v1 fixture; run by hand, and never once the format has changed"]
fn make_fixture_v1() {
    assert_eq!(
        (FILE_VERSION, BATCH_VERSION),
        (1, 1),
        "this build writes another format version: the v1 fixture must stay as it is"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let log = Log::open(
        &dir,
        LogOptions {
            config: v1_config(),
            fsync: FsyncPolicy::Never,
            ..Default::default()
        },
    )
    .unwrap();
    for batch in v1_batches() {
        log.set_leader_epoch(batch.leader_epoch).unwrap();
        let headers: Vec<Vec<(&[u8], &[u8])>> = batch
            .records
            .iter()
            .map(|r| {
                r.headers
                    .iter()
                    .map(|(n, v)| (n.as_slice(), v.as_slice()))
                    .collect()
            })
            .collect();
        let mut b = BatchBuilder::new(batch.compression);
        for (r, headers) in batch.records.iter().zip(&headers) {
            b.push(&Record {
                timestamp: r.timestamp,
                key: r.key.as_deref(),
                value: &r.value,
                headers,
            })
            .unwrap();
        }
        let appended = log.append(&b).unwrap();
        assert_eq!(appended.base_offset, batch.records[0].offset);
    }
    log.close().unwrap();
    let fixture = Path::new(V1_CLEAN);
    if fixture.exists() {
        std::fs::remove_dir_all(fixture).unwrap();
    }
    copy_dir(&dir, fixture, &[".lock"]);
}

/// Opens a copy of the fixture and checks it holds exactly `v1_batches()`.
#[test]
fn v1_clean_fixture_opens() {
    let fixture = Path::new(V1_CLEAN);
    let mut names: Vec<String> = std::fs::read_dir(fixture)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut expected_names = vec!["log.meta".to_string(), "recovery.checkpoint".to_string()];
    for base in [0u64, 46, 91] {
        for ext in ["index", "log", "timeindex"] {
            expected_names.push(format!("{base:020}.{ext}"));
        }
    }
    expected_names.sort();
    assert_eq!(names, expected_names, "files of {V1_CLEAN}");

    // The fixture really is version 1: file headers (u32 at byte 8) and the first batch's
    // version (u16 at byte 32 + 8).
    for name in &names {
        let bytes = std::fs::read(fixture.join(name)).unwrap();
        assert_eq!(bytes[8..12], 1u32.to_le_bytes(), "{name}: file version");
        if name.ends_with(".log") {
            assert_eq!(bytes[40..42], 1u16.to_le_bytes(), "{name}: batch version");
        }
    }

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    copy_dir(fixture, &dir, &[]);
    let expected = v1_batches();
    let all: Vec<&Rec> = expected.iter().flat_map(|b| &b.records).collect();
    let end = all.len() as u64;

    let report = stratalog::verify_dir(&FsStorage, &dir).unwrap();
    assert!(report.is_sound(), "{:?}", report.problems);
    assert!(report.notes.is_empty(), "{:?}", report.notes);
    assert_eq!(report.segments, 3);
    assert_eq!(report.batches, expected.len() as u64);
    assert_eq!(report.records, end);
    assert_eq!(report.end_offset, end);

    let log = Log::open(
        &dir,
        LogOptions {
            create: false,
            ..Default::default()
        },
    )
    .unwrap();
    let recovery = log.recovery_report();
    assert!(recovery.clean, "{recovery:?}");
    assert_eq!(recovery.scanned_bytes, 0);
    assert!(recovery.torn.is_empty());
    assert_eq!(recovery.rebuilt_indexes, 0);
    assert_eq!(log.config(), v1_config());
    assert_eq!(log.start_offset(), 0);
    assert_eq!(log.end_offset(), end);

    // Every batch and record, exactly.
    let batches = log.read(0, usize::MAX).unwrap();
    assert_eq!(batches.len(), expected.len());
    for (batch, want) in batches.iter().zip(&expected) {
        let first = want.records[0].offset;
        assert_eq!(batch.base_offset(), first);
        assert_eq!(batch.record_count() as usize, want.records.len());
        assert_eq!(batch.leader_epoch(), want.leader_epoch, "batch {first}");
        assert_eq!(
            batch.header().compression(),
            want.compression,
            "batch {first}"
        );
        let max_ts = want.records.iter().map(|r| r.timestamp).max().unwrap();
        assert_eq!(batch.max_timestamp(), max_ts, "batch {first}");
        assert_eq!(
            batch.header().first_timestamp.get(),
            want.records[0].timestamp
        );
        let got: Vec<Rec> = batch
            .records()
            .unwrap()
            .map(|r| {
                let r = r.unwrap();
                Rec {
                    offset: r.offset,
                    timestamp: r.timestamp,
                    key: r.key.map(|k| k.to_vec()),
                    value: r.value.to_vec(),
                    headers: r
                        .headers
                        .iter()
                        .map(|h| (h.name.to_vec(), h.value.to_vec()))
                        .collect(),
                }
            })
            .collect();
        assert_eq!(got, want.records, "batch {first}");
    }

    // Reads from every offset find it (through the sparse offset index).
    for offset in 0..end {
        let batches = log.read(offset, 1).unwrap();
        let first = &batches[0];
        assert!(
            first.base_offset() <= offset && offset <= first.last_offset(),
            "read({offset}) returned {}..={}",
            first.base_offset(),
            first.last_offset()
        );
    }
    assert!(log.read(end, 1).unwrap().is_empty());

    // Timestamp lookups (through the sparse time index) agree with a scan of the records.
    let timestamps: Vec<i64> = all.iter().map(|r| r.timestamp).collect();
    let (lo, hi) = (
        *timestamps.iter().min().unwrap(),
        *timestamps.iter().max().unwrap(),
    );
    for ts in (lo - 1..=hi + 1)
        .step_by(250)
        .chain(timestamps.iter().copied())
    {
        let want = all.iter().find(|r| r.timestamp >= ts).map(|r| r.offset);
        assert_eq!(
            log.offset_for_timestamp(ts).unwrap(),
            want,
            "timestamp {ts}"
        );
    }

    log.close().unwrap();
    let report = stratalog::verify_dir(&FsStorage, &dir).unwrap();
    assert!(report.is_sound(), "{:?}", report.problems);
}
