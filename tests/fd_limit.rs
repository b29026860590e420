//! File descriptors stay bounded: one open log holds a fixed few whatever its number of
//! segments, a store keeps at most `max_open_partitions` partition logs open, and the binary
//! serves a 2,000-partition topic under `ulimit -n 256`. Topics beyond the partition cap are
//! refused with an error naming it.

use std::path::Path;
use std::process::Command;

use stratalog::limits::FDS_PER_LOG;
use stratalog::store::MAX_TOPIC_PARTITIONS;
use stratalog::{
    Error, FsyncPolicy, Log, LogConfig, LogOptions, PartitionerKind, Store, StoreOptions,
    TopicConfig,
};

const BIN: &str = env!("CARGO_BIN_EXE_stratalog");

/// Descriptors of this process open on files under `dir` (other tests' files do not count).
fn fds_under(dir: &Path) -> usize {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(&dir))
        .count()
}

#[test]
fn one_log_holds_a_fixed_few_descriptors_whatever_its_segments() {
    let dir = tempfile::tempdir().unwrap();
    let options = || LogOptions {
        config: LogConfig {
            segment_bytes: 1024,
            ..Default::default()
        },
        fsync: FsyncPolicy::Never,
        ..Default::default()
    };
    let log = Log::open(dir.path(), options()).unwrap();
    for i in 0..400 {
        log.append_records(&[format!("record {i} {}", "x".repeat(40))])
            .unwrap();
    }
    log.close().unwrap();
    drop(log);
    let segments = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log")
        })
        .count();
    assert!(segments >= 20, "{segments} segments");
    assert_eq!(fds_under(dir.path()), 0);
    let log = Log::open(dir.path(), options()).unwrap();
    let held = fds_under(dir.path());
    // Reading every sealed segment opens nothing more (their index files are mapped too).
    let mut next = 0;
    while next < log.end_offset() {
        next = log
            .read(next, 1 << 20)
            .unwrap()
            .last()
            .unwrap()
            .last_offset()
            + 1;
    }
    let after_reads = fds_under(dir.path());
    let read_only = Log::open(
        dir.path(),
        LogOptions {
            read_only: true,
            create: false,
            ..options()
        },
    )
    .unwrap();
    let with_reader = fds_under(dir.path());
    eprintln!(
        "descriptors of one log of {segments} segments: {held} open, {after_reads} after reading it all, +{} for a read-only open",
        with_reader - after_reads
    );
    assert!(held as u64 <= FDS_PER_LOG, "{held} descriptors");
    assert_eq!(after_reads, held);
    assert!(
        with_reader - after_reads <= 1,
        "read-only: the active segment only"
    );
    drop(read_only);
    log.close().unwrap();
    drop(log);
    assert_eq!(fds_under(dir.path()), 0);
}

#[test]
fn a_store_keeps_at_most_max_open_partitions_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        StoreOptions {
            retention_interval: None,
            max_open_partitions: Some(8),
            ..Default::default()
        },
    )
    .unwrap();
    store
        .create_topic("t", 100, TopicConfig::default(), PartitionerKind::default())
        .unwrap();
    let mut most = 0;
    for round in 0..2 {
        for p in 0..100 {
            let log = store.partition("t", p).unwrap();
            log.append_records(&[format!("{p}-{round}")])
                .unwrap()
                .receipt
                .wait()
                .unwrap();
            drop(log);
            most = most.max(fds_under(dir.path()));
        }
    }
    // 8 partitions, the consumer offsets log and the store lock.
    let bound = (8 + 1) * FDS_PER_LOG as usize + 1;
    eprintln!(
        "a store of 100 partitions, at most 8 open: at most {most} descriptors (bound {bound})"
    );
    assert!(most <= bound, "{most} descriptors open");
    // Every partition was closed cleanly and reopened with everything in it.
    for p in [0, 37, 99] {
        let log = store.partition("t", p).unwrap();
        assert_eq!(log.record_count(), 2);
        assert_eq!(log.read_one(1).unwrap().value, format!("{p}-1").as_bytes());
        assert!(log.recovery_report().clean, "closed cleanly when evicted");
    }
    // A leader epoch set on a partition survives its being closed as idle and reopened.
    store.set_leader_epoch("t", 3, 7).unwrap();
    for p in 50..70 {
        store.partition("t", p).unwrap();
    }
    assert_eq!(store.partition("t", 3).unwrap().leader_epoch(), 7);
    // A handle held elsewhere is never closed under its holder.
    let held = store.partition("t", 5).unwrap();
    for p in 10..40 {
        store.partition("t", p).unwrap();
    }
    held.append_records(&["still open"])
        .unwrap()
        .receipt
        .wait()
        .unwrap();
    drop(held);
    store.close().unwrap();
}

#[test]
fn partition_counts_beyond_the_cap_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let err = store
        .create_topic(
            "t",
            MAX_TOPIC_PARTITIONS + 1,
            TopicConfig::default(),
            PartitionerKind::default(),
        )
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert!(
        err.to_string().contains(&MAX_TOPIC_PARTITIONS.to_string()),
        "{err}"
    );
    store
        .create_topic("t", 2, TopicConfig::default(), PartitionerKind::default())
        .unwrap();
    let err = store
        .add_partitions("t", MAX_TOPIC_PARTITIONS + 1)
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert!(store.topics().unwrap().iter().all(|t| t.partitions() == 2));
}

/// Runs `script` with `sh` under `ulimit -n 256`, the binary as `$BIN` and the store as `$D`.
fn sh(dir: &Path, script: &str) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n 256 || exit 99\n{script}"))
        .env("BIN", BIN)
        .env("D", dir)
        .output()
        .unwrap()
}

#[test]
fn two_thousand_partitions_under_ulimit_256() {
    let dir = tempfile::tempdir().unwrap();
    let out = sh(
        dir.path(),
        r#"
set -e
"$BIN" topics create --dir "$D" --partitions 2000 --fsync never t
for p in 0 1 2 500 999 1000 1500 1998 1999; do
  printf 'a-%s\nb-%s\n' $p $p | "$BIN" produce --dir "$D" --log t/$p --fsync never
done
"$BIN" topics describe --dir "$D" t > "$D.describe"
"$BIN" consume --dir "$D" --topic t > "$D.consume"
"$BIN" topics list --dir "$D" > /dev/null
"#,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(99), "ulimit refused: {stderr}");
    assert!(out.status.success(), "{stderr}");
    let describe = std::fs::read_to_string(dir.path().with_extension("describe")).unwrap();
    let consumed = std::fs::read_to_string(dir.path().with_extension("consume")).unwrap();
    let _ = std::fs::remove_file(dir.path().with_extension("describe"));
    let _ = std::fs::remove_file(dir.path().with_extension("consume"));
    assert_eq!(describe.matches("  partition ").count(), 2000, "{describe}");
    assert!(
        describe.contains("  partition 1999 start=0 end=2 "),
        "{describe}"
    );
    assert!(
        describe.contains("  partition 3 start=0 end=0 "),
        "{describe}"
    );
    let mut lines: Vec<&str> = consumed.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines.len(), 18, "{consumed}");
    for p in [0, 1, 2, 500, 999, 1000, 1500, 1998, 1999] {
        assert!(lines.contains(&format!("a-{p}").as_str()), "{consumed}");
        assert!(lines.contains(&format!("b-{p}").as_str()), "{consumed}");
    }
    // The cap is a clear error, not a store that fails later.
    let out = sh(
        dir.path(),
        r#""$BIN" topics create --dir "$D" --partitions 1048576 big"#,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&MAX_TOPIC_PARTITIONS.to_string()),
        "{stderr}"
    );
}
