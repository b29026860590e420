mod common;

use stratalog::{BatchBuilder, Compression, Log, LogConfig, LogOptions};

#[test]
fn append_read_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        config: LogConfig {
            segment_bytes: 4096,
            index_interval_bytes: 256,
            ..Default::default()
        },
        ..Default::default()
    };
    let log = Log::open(dir.path(), opts.clone()).unwrap();
    for i in 0..200u32 {
        let mut b = BatchBuilder::new(if i % 2 == 0 {
            Compression::Lz4
        } else {
            Compression::None
        });
        b.push_value(i as i64, format!("value-{i}").as_bytes())
            .unwrap();
        b.push_value(i as i64, format!("second-{i}").as_bytes())
            .unwrap();
        let a = log.append(&b).unwrap();
        assert_eq!(a.base_offset, 2 * i as u64);
        a.receipt.wait().unwrap();
    }
    assert_eq!(log.end_offset(), 400);
    let batches = log.read(151, 1 << 20).unwrap();
    let first = batches[0].records().unwrap().next().unwrap().unwrap();
    assert_eq!(first.offset, 150);
    assert_eq!(common::values(&log).unwrap().len(), 400);
    assert_eq!(log.offset_for_timestamp(100).unwrap(), Some(200));
    log.close().unwrap();
    let log = Log::open(dir.path(), opts).unwrap();
    assert!(log.recovery_report().clean, "{:?}", log.recovery_report());
    assert_eq!(log.end_offset(), 400);
    let all = common::values(&log).unwrap();
    assert_eq!(all.len(), 400);
    assert_eq!(&all[399][..], b"second-199");
    log.truncate(300).unwrap();
    assert_eq!(log.end_offset(), 300);
    let a = log.append_records(&["x"]).unwrap();
    assert_eq!(a.base_offset, 300);
    a.receipt.wait().unwrap();
    let report = stratalog::verify_dir(&stratalog::storage::FsStorage, dir.path()).unwrap();
    assert!(report.is_sound(), "{:?}", report.problems);
}
