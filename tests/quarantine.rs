//! Loss accounting: a torn tail cut by recovery and a suffix removed by `truncate` are kept in
//! quarantine files and reported (API, `verify`, the CLI) instead of vanishing; quarantine is
//! bounded and cleaned by retention; `stratalog verify --dir DIR` checks every log under DIR.

mod common;

use std::path::Path;

use common::values;
use stratalog::log::{BatchScan, QUARANTINE_HEADER_LEN};
use stratalog::storage::SimStorage;
use stratalog::{
    BatchBuilder, Compression, FsyncPolicy, Log, LogConfig, LogOptions, LossKind,
    MAX_QUARANTINE_FILES,
};

fn opts(sim: &SimStorage) -> LogOptions {
    LogOptions {
        config: LogConfig {
            segment_bytes: 2048,
            index_interval_bytes: 256,
            ..Default::default()
        },
        fsync: FsyncPolicy::Always,
        storage: sim.shared(),
        ..Default::default()
    }
}

fn append(log: &Log, n: usize, tag: &str) {
    for i in 0..n {
        let mut b = BatchBuilder::new(if i % 2 == 0 {
            Compression::Lz4
        } else {
            Compression::None
        });
        b.push_value(i as i64, format!("{tag}-{i} {}", "q".repeat(60)).as_bytes())
            .unwrap();
        b.push_value(i as i64, format!("{tag}-{i}b").as_bytes())
            .unwrap();
        log.append(&b).unwrap().receipt.wait().unwrap();
    }
}

/// The kept bytes of a quarantine file (after the header and the reason).
fn kept(sim: &SimStorage, q: &stratalog::Quarantined) -> Vec<u8> {
    let file = sim.file(&q.path).unwrap();
    file[QUARANTINE_HEADER_LEN + q.reason.len()..].to_vec()
}

#[test]
fn a_torn_tail_is_quarantined_and_reported() {
    let sim = SimStorage::new(1);
    let dir = Path::new("/torn");
    let log = Log::open(dir, opts(&sim)).unwrap();
    append(&log, 5, "a");
    let end = log.end_offset();
    log.close().unwrap();
    // A crash in the middle of a write: the next batch's first 100 bytes reached the file.
    let seg = dir.join("00000000000000000000.log");
    let good = sim.file(&seg).unwrap();
    let donor = Log::open("/donor", opts(&sim)).unwrap();
    append(&donor, 6, "a");
    donor.close().unwrap();
    let donor_seg = sim
        .file(Path::new("/donor/00000000000000000000.log"))
        .unwrap();
    let torn = donor_seg[good.len()..good.len() + 100].to_vec();
    sim.set_file(&seg, [good.clone(), torn.clone()].concat());
    // Make the checkpoint not clean, as after a crash.
    sim.set_file(
        &dir.join("recovery.checkpoint"),
        sim.file(&dir.join("recovery.checkpoint")).unwrap()[..32].to_vec(),
    );

    // A read-only open serves the valid prefix and changes nothing.
    let files_before = sim.file(&seg).unwrap();
    let ro = Log::open(
        dir,
        LogOptions {
            read_only: true,
            ..opts(&sim)
        },
    )
    .unwrap();
    assert_eq!(ro.end_offset(), end);
    assert_eq!(values(&ro).unwrap().len() as u64, end);
    assert!(ro.quarantine().unwrap().is_empty());
    assert!(matches!(
        ro.append_records(&[b"x"]),
        Err(stratalog::Error::ReadOnly)
    ));
    assert!(matches!(ro.truncate(0), Err(stratalog::Error::ReadOnly)));
    drop(ro);
    assert_eq!(
        sim.file(&seg).unwrap(),
        files_before,
        "read-only changed the segment"
    );

    let log = Log::open(dir, opts(&sim)).unwrap();
    let report = log.recovery_report().clone();
    assert_eq!(log.end_offset(), end);
    assert_eq!(report.torn.len(), 1, "{report:?}");
    assert_eq!(report.quarantined.len(), 1, "{report:?}");
    let q = &report.quarantined[0];
    assert_eq!(report.torn[0].quarantine.as_ref(), Some(&q.path));
    assert_eq!(q.kind, LossKind::TornTail);
    assert_eq!(q.bytes, 100);
    assert_eq!(q.kept_bytes, 100);
    assert_eq!(q.position, good.len() as u64);
    assert_eq!(q.segment_base, 0);
    // The torn batch's header was whole: its offsets are named.
    assert_eq!(q.offsets, end..end + 2);
    assert!(!q.reason.is_empty());
    assert_eq!(
        kept(&sim, q),
        torn,
        "the quarantine keeps the exact cut bytes"
    );
    assert_eq!(log.quarantine().unwrap(), vec![q.clone()]);
    assert_eq!(sim.file(&seg).unwrap(), good, "the segment was cut");
    drop(log);
    let v = stratalog::verify_dir(&sim, dir).unwrap();
    assert!(v.is_sound(), "{:?}", v.problems);
    assert_eq!(v.quarantined, vec![q.clone()]);
    eprintln!(
        "quarantine: torn tail of {} bytes at offset {end} kept and reported: {q}",
        q.bytes
    );
}

#[test]
fn truncate_quarantines_the_removed_batches() {
    let sim = SimStorage::new(2);
    let dir = Path::new("/trunc");
    let log = Log::open(dir, opts(&sim)).unwrap();
    append(&log, 40, "t");
    let all = values(&log).unwrap();
    let end = log.end_offset();
    let to = 30; // a batch boundary (2 records per batch), several segments back
    log.truncate(to).unwrap();
    let qs = log.quarantine().unwrap();
    assert_eq!(qs.len(), 1);
    let q = &qs[0];
    assert_eq!(q.kind, LossKind::Truncation);
    assert_eq!(q.offsets, to..end);
    assert_eq!(q.kept_bytes, q.bytes);
    // The kept bytes are the removed batches, whole and in order.
    let data = kept(&sim, q);
    let mut next = to;
    let mut cut_values = Vec::new();
    for (_, batch) in BatchScan::new(data.clone().into(), 0, data.len() as u64) {
        let batch = batch.unwrap();
        assert_eq!(batch.base_offset(), next);
        for r in batch.records().unwrap() {
            cut_values.push(r.unwrap().value.to_vec());
        }
        next = batch.last_offset() + 1;
    }
    assert_eq!(next, end);
    assert_eq!(cut_values, all[to as usize..]);
    assert_eq!(values(&log).unwrap(), all[..to as usize]);
    eprintln!(
        "quarantine: truncate from {end} to {to} kept {} records ({} bytes) in quarantine",
        cut_values.len(),
        q.bytes
    );
    // Truncating the last batch away again adds a second file.
    log.truncate(28).unwrap();
    assert_eq!(log.quarantine().unwrap().len(), 2);
}

#[test]
fn quarantine_is_bounded_and_cleaned_by_retention() {
    let sim = SimStorage::new(3);
    let dir = Path::new("/bound");
    let log = Log::open(dir, opts(&sim)).unwrap();
    let mut truncations = 0;
    for _ in 0..MAX_QUARANTINE_FILES + 8 {
        append(&log, 2, "b");
        let end = log.end_offset();
        log.truncate(end - 2).unwrap();
        truncations += 1;
        assert!(log.quarantine().unwrap().len() <= MAX_QUARANTINE_FILES);
    }
    let qs = log.quarantine().unwrap();
    assert_eq!(
        qs.len(),
        MAX_QUARANTINE_FILES,
        "the oldest files were removed"
    );
    // Retention past every quarantined offset removes them all.
    append(&log, 60, "r");
    let mut config = log.config();
    config.retention_bytes = Some(2048);
    log.set_config(config).unwrap();
    assert!(log.apply_retention().unwrap() > 0);
    let start = log.start_offset();
    assert!(qs.iter().all(|q| q.offsets.end <= start));
    assert!(
        log.quarantine().unwrap().is_empty(),
        "retention removes them"
    );
    eprintln!(
        "quarantine: {truncations} truncations kept {} files (the bound); retention to start {start} removed them",
        qs.len()
    );
}

#[cfg(feature = "cli")]
#[test]
fn verify_dir_checks_every_log_under_a_data_directory() {
    use std::process::Command;
    let bin = env!("CARGO_BIN_EXE_stratalog");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    let produce = |parent: &Path, name: &str| {
        let out = Command::new(bin)
            .args(["produce", "--dir", parent.to_str().unwrap(), "--log", name])
            .args(["--count", "50", "--size", "40", "--segment-bytes", "2048"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    produce(data, "default");
    produce(&data.join("orders"), "0");
    produce(&data.join("orders"), "1");
    produce(&data.join("deep/topic"), "7");
    let verify = || {
        Command::new(bin)
            .args(["verify", "--dir", data.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = verify();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("4 log(s) checked"), "{stdout}");
    for log in ["default", "orders/0", "orders/1", "deep/topic/7"] {
        let shown = data.join(log).display().to_string();
        assert!(
            stdout.contains(&format!("{shown}: ")),
            "{log} missing in:\n{stdout}"
        );
    }
    // A fault in one log fails the whole check and names that log.
    let seg = data.join("orders/1/00000000000000000000.log");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[100] ^= 0x10;
    std::fs::write(&seg, bytes).unwrap();
    let out = verify();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("1 with problems"), "{stdout}");
    assert!(
        stdout.contains(&format!("problem: {}", seg.display())),
        "{stdout}"
    );
    // An empty directory is not a pass.
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(bin)
        .args(["verify", "--dir", empty.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    eprintln!("verify --dir: 4 logs found at depths 1 to 3; one flipped byte fails the check");
}
