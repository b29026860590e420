//! Snapshots (src/snapshot/, docs/DR.md): taken under a producer's load and restored, the
//! restored store holds exactly the source's records up to the snapshot point, byte for byte,
//! consumer groups included; a damaged snapshot (a flipped byte, a missing, truncated or extra
//! file, a MANIFEST from another snapshot) is refused by verify and by restore, which leaves
//! nothing behind.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use stratalog::format::{FileCopy, MANIFEST_NAME, Manifest};
use stratalog::{
    Error, FsyncPolicy, Log, LogConfig, LogOptions, PartitionerKind, Store, StoreOptions,
    TopicConfig, snapshot,
};

const PARTITIONS: u32 = 2;

fn store_options() -> StoreOptions {
    StoreOptions {
        retention_interval: None,
        ..Default::default()
    }
}

fn small_topic(store: &Store) {
    let config = TopicConfig {
        log: LogConfig {
            // A few KiB: every cycle rolls segments, so sealed (linked) and active (cut)
            // segments are both in the snapshot.
            segment_bytes: 4096,
            ..Default::default()
        },
        fsync: FsyncPolicy::Never,
    };
    store
        .create_topic("t", PARTITIONS, config, PartitionerKind::Jump)
        .unwrap();
}

/// Every batch of `log` in `start..end`, as raw bytes.
fn batches(log: &stratalog::Log, start: u64, end: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut next = start;
    while next < end {
        let got = log.read(next, 1 << 20).unwrap();
        assert!(!got.is_empty(), "no batch at {next} below {end}");
        for b in got {
            if b.base_offset() >= end {
                return out;
            }
            assert!(
                b.last_offset() < end,
                "a batch straddles the snapshot point {end}"
            );
            out.extend_from_slice(b.as_bytes());
            next = b.last_offset() + 1;
        }
    }
    out
}

/// One snapshot of a store under load, restored and compared. Returns the bytes compared.
fn cycle(root: &Path, rng: &mut impl Rng) -> u64 {
    let store = Arc::new(Store::open(root.join("src"), store_options()).unwrap());
    small_topic(&store);
    for p in 0..PARTITIONS {
        store
            .partition("t", p)
            .unwrap()
            .append_records(&["seed"])
            .unwrap();
    }
    // Commits that returned, in order: (partition, offset).
    let done: Arc<Mutex<Vec<(u32, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (store, done, stop) = (store.clone(), done.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let p = (i % u64::from(PARTITIONS)) as u32;
                let log = store.partition("t", p).unwrap();
                let values: Vec<String> = (0..1 + i % 5)
                    .map(|j| format!("r{i}-{j}-{}", "x".repeat((i % 97) as usize)))
                    .collect();
                let appended = log.append_records(&values).unwrap();
                if i.is_multiple_of(3) {
                    let offset = appended.last_offset + 1;
                    store
                        .commit("g", "t", p, offset, log.leader_epoch())
                        .unwrap();
                    done.lock().unwrap().push((p, offset));
                }
                i += 1;
                if i.is_multiple_of(64) {
                    std::thread::yield_now();
                }
            }
        })
    };
    std::thread::sleep(Duration::from_micros(rng.random_range(0..3000)));
    let before = done.lock().unwrap().clone();
    let snap = root.join("snap");
    let report = snapshot::create(&store, &snap).unwrap();
    std::thread::sleep(Duration::from_micros(rng.random_range(0..1000)));
    stop.store(true, Ordering::Relaxed);
    producer.join().unwrap();
    let all = done.lock().unwrap().clone();

    snapshot::verify(&snap).unwrap();
    let restored_dir = root.join("restored");
    snapshot::restore(&snap, &restored_dir).unwrap();
    let restored = Store::open(&restored_dir, store_options()).unwrap();
    let mut compared = 0;
    for part in &report.manifest.partitions {
        let (source, copy) = if part.dir.starts_with("__consumer_offsets") {
            // The store's own log: read beside the store, without a lock.
            let ro = |dir: &Path| {
                let options = LogOptions {
                    read_only: true,
                    ..Default::default()
                };
                Arc::new(Log::open(dir.join(&part.dir), options).unwrap())
            };
            (ro(&root.join("src")), ro(&restored_dir))
        } else {
            let p: u32 = part.dir.strip_prefix("t/").unwrap().parse().unwrap();
            (
                store.partition("t", p).unwrap(),
                restored.partition("t", p).unwrap(),
            )
        };
        assert_eq!(
            (copy.start_offset(), copy.end_offset()),
            (part.start_offset, part.end_offset)
        );
        assert!(source.end_offset() >= part.end_offset);
        let want = batches(&source, part.start_offset, part.end_offset);
        let got = batches(&copy, part.start_offset, part.end_offset);
        assert!(
            want == got,
            "{}: the restored bytes differ from the source's",
            part.dir
        );
        compared += got.len() as u64;
    }
    for p in 0..PARTITIONS {
        let end = report
            .manifest
            .partitions
            .iter()
            .find(|m| m.dir == format!("t/{p}"))
            .unwrap()
            .end_offset;
        let committed = restored.committed("g", "t", p).map(|c| c.offset);
        // Every commit that returned before the snapshot began is in it...
        let floor = before.iter().filter(|c| c.0 == p).map(|c| c.1).max();
        assert!(
            committed >= floor,
            "partition {p}: restored commit {committed:?} lost {floor:?}"
        );
        // ... and what it holds is a commit that was made, within the snapshot's records.
        if let Some(c) = committed {
            assert!(
                all.contains(&(p, c)),
                "partition {p}: {c} was never committed"
            );
            assert!(
                c <= end,
                "partition {p}: commit {c} past the snapshot end {end}"
            );
        }
    }
    restored.close().unwrap();
    drop(store);
    compared
}

#[test]
fn snapshots_under_load_restore_exactly_the_records_up_to_the_snapshot_point() {
    let cycles: u64 = std::env::var("SNAPSHOT_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let mut rng = rand::rng();
    let mut bytes = 0;
    for _ in 0..cycles {
        let tmp = tempfile::tempdir().unwrap();
        bytes += cycle(tmp.path(), &mut rng);
    }
    println!("{cycles} snapshot/restore cycles under load, {bytes} batch bytes compared");
}

/// A store with sealed segments, consumer offsets and an active segment, and its snapshot.
fn sample(root: &Path) -> (PathBuf, Manifest) {
    let store = Store::open(root.join("src"), store_options()).unwrap();
    small_topic(&store);
    let log = store.partition("t", 0).unwrap();
    // An epoch history too (a `Written` file of the snapshot).
    store.set_leader_epoch("t", 0, 3).unwrap();
    for i in 0..200 {
        log.append_records(&[format!("value {i} {}", "y".repeat(50))])
            .unwrap();
    }
    store.commit("g", "t", 0, 150, log.leader_epoch()).unwrap();
    let snap = root.join("snap");
    let report = snapshot::create(&store, &snap).unwrap();
    assert!(
        report.linked_files > 0,
        "the sample has sealed segments to link"
    );
    (snap, report.manifest)
}

fn find(manifest: &Manifest, how: FileCopy) -> String {
    let found = manifest
        .files
        .iter()
        .find(|f| f.how == how && f.path.starts_with("t/"));
    found
        .unwrap_or_else(|| panic!("no {how:?} file"))
        .path
        .clone()
}

/// Verify and restore both refuse `snap` naming `file`, and restore leaves `target` as it was
/// (absent, or empty) and no temporary directory.
fn refused(snap: &Path, file: &Path, target: &Path, target_existed: bool) {
    for (what, result) in [
        ("verify", snapshot::verify(snap).map(|_| ())),
        ("restore", snapshot::restore(snap, target).map(|_| ())),
    ] {
        match result {
            Err(Error::SnapshotDamaged { path, .. }) => {
                assert_eq!(path, file, "{what} named the wrong file")
            }
            other => panic!(
                "{what}: expected SnapshotDamaged for {}, got {other:?}",
                file.display()
            ),
        }
    }
    if target_existed {
        assert_eq!(
            std::fs::read_dir(target).unwrap().count(),
            0,
            "the empty target was filled"
        );
    } else {
        assert!(
            !target.exists(),
            "a refused restore created {}",
            target.display()
        );
    }
    let parent = target.parent().unwrap();
    for e in std::fs::read_dir(parent).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains("restore-tmp"), "left behind: {name}");
    }
}

#[test]
fn a_flipped_byte_in_any_kind_of_file_is_refused() {
    for how in [
        FileCopy::Linked,
        FileCopy::Cut,
        FileCopy::Copied,
        FileCopy::Written,
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let (snap, manifest) = sample(tmp.path());
        let rel = find(&manifest, how);
        let path = snap.join(&rel);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x01;
        // A linked file is the store's own inode: write a new file, as a damaged copy would be.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        refused(&snap, &path, &tmp.path().join("restored"), false);
    }
}

#[test]
fn a_missing_or_truncated_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (snap, manifest) = sample(tmp.path());
    let rel = find(&manifest, FileCopy::Cut);
    let path = snap.join(&rel);
    let saved = std::fs::read(&path).unwrap();
    std::fs::write(&path, &saved[..saved.len() - 1]).unwrap();
    // Into an existing empty directory: it stays empty.
    let target = tmp.path().join("restored");
    std::fs::create_dir(&target).unwrap();
    refused(&snap, &path, &target, true);
    std::fs::remove_file(&path).unwrap();
    refused(&snap, &path, &target, true);
    // Put back, it restores.
    std::fs::write(&path, &saved).unwrap();
    snapshot::restore(&snap, &target).unwrap();
    // The restored store takes appends where the snapshot ended, and reopens cleanly.
    let restored = Store::open(&target, store_options()).unwrap();
    let log = restored.partition("t", 0).unwrap();
    let end = log.end_offset();
    assert_eq!(end, 200);
    let appended = log.append_records(&["after the restore"]).unwrap();
    assert_eq!(appended.base_offset, end);
    drop(log);
    restored.close().unwrap();
    let reopened = Store::open(&target, store_options()).unwrap();
    let log = reopened.partition("t", 0).unwrap();
    assert_eq!(log.end_offset(), end + 1);
    assert_eq!(&log.read_one(end).unwrap().value[..], b"after the restore");
    assert_eq!(reopened.committed("g", "t", 0).map(|c| c.offset), Some(150));
}

#[test]
fn a_manifest_from_another_snapshot_or_an_extra_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("src"), store_options()).unwrap();
    small_topic(&store);
    let log = store.partition("t", 0).unwrap();
    log.append_records(&["a", "b"]).unwrap();
    let first = tmp.path().join("first");
    snapshot::create(&store, &first).unwrap();
    log.append_records(&["c"]).unwrap();
    let second = tmp.path().join("second");
    let report = snapshot::create(&store, &second).unwrap();
    // The later MANIFEST in the earlier snapshot: the active segment differs.
    std::fs::copy(second.join(MANIFEST_NAME), first.join(MANIFEST_NAME)).unwrap();
    let cut = find(&report.manifest, FileCopy::Cut);
    refused(&first, &first.join(&cut), &tmp.path().join("r1"), false);

    // A file no MANIFEST lists.
    let stray = second.join("t/0/00000000000000000099.log");
    std::fs::write(&stray, b"stray").unwrap();
    refused(&second, &stray, &tmp.path().join("r2"), false);
    std::fs::remove_file(&stray).unwrap();

    // A damaged MANIFEST names the MANIFEST.
    let manifest = second.join(MANIFEST_NAME);
    let mut bytes = std::fs::read(&manifest).unwrap();
    bytes[10] ^= 0x80;
    std::fs::write(&manifest, &bytes).unwrap();
    refused(&second, &manifest, &tmp.path().join("r3"), false);
}

#[test]
fn sealed_segments_are_hard_links_and_the_active_one_a_copy_cut_at_the_point() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let (snap, manifest) = sample(tmp.path());
    let source = tmp.path().join("src");
    for f in &manifest.files {
        let copy = std::fs::metadata(snap.join(&f.path)).unwrap();
        let orig = std::fs::metadata(source.join(&f.path)).unwrap();
        let same = (copy.dev(), copy.ino()) == (orig.dev(), orig.ino());
        assert_eq!(same, f.how == FileCopy::Linked, "{}: {:?}", f.path, f.how);
        if f.how == FileCopy::Cut {
            // The source's active segment is preallocated past its data; the copy is not.
            assert!(copy.len() <= orig.len());
        }
    }
    // A snapshot of an open store, then one more into the same name, is refused.
    let store = Store::open(tmp.path().join("other"), store_options()).unwrap();
    assert!(matches!(
        snapshot::create(&store, &snap),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn an_offline_snapshot_of_a_store_held_by_another_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("src"), store_options()).unwrap();
    let out = tmp.path().join("snap");
    assert!(matches!(
        snapshot::create_offline(&tmp.path().join("src"), &out),
        Err(Error::Locked { .. })
    ));
    assert!(!out.exists());
    store.close().unwrap();
    snapshot::create_offline(&tmp.path().join("src"), &out).unwrap();
    snapshot::verify(&out).unwrap();
}

/// The snapshot point of the consumer offsets log is read before the partitions': a commit
/// made between the two reads (here, deterministically, in the pause) is not in the snapshot,
/// while the records it covers may be; read the other way round, the snapshot would hold a
/// commit past its partition's snapshot point.
#[test]
fn no_commit_in_a_snapshot_is_past_its_partitions_snapshot_point() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("src"), store_options()).unwrap();
    small_topic(&store);
    let log = store.partition("t", 0).unwrap();
    log.append_records(&["a", "b"]).unwrap();
    store.commit("g", "t", 0, 1, log.leader_epoch()).unwrap();
    let snap = tmp.path().join("snap");
    let report = snapshot::create_with_pause(&store, &snap, &mut || {
        let appended = log.append_records(&["c", "d", "e"]).unwrap();
        let end = appended.last_offset + 1;
        store.commit("g", "t", 0, end, log.leader_epoch()).unwrap();
    })
    .unwrap();
    let restored = tmp.path().join("restored");
    snapshot::restore(&snap, &restored).unwrap();
    let restored = Store::open(&restored, store_options()).unwrap();
    let end = restored.partition("t", 0).unwrap().end_offset();
    let committed = restored.committed("g", "t", 0).unwrap().offset;
    let point = report
        .manifest
        .partitions
        .iter()
        .find(|p| p.dir == "t/0")
        .unwrap();
    assert_eq!(end, point.end_offset);
    assert!(
        committed <= end,
        "commit {committed} past the restored end {end}"
    );
    assert_eq!((committed, end), (1, 5));
}

/// After a compaction the consumer offsets live in `__consumer_offsets.<gen>`, named by
/// `consumer_offsets.generation`: both are taken, and the restored groups are the source's.
#[test]
fn a_compacted_consumer_offsets_log_is_taken_with_its_generation() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("src"), store_options()).unwrap();
    small_topic(&store);
    let log = store.partition("t", 1).unwrap();
    log.append_records(&["a", "b", "c"]).unwrap();
    for offset in 1..=3 {
        store
            .commit("g", "t", 1, offset, log.leader_epoch())
            .unwrap();
    }
    let compacted = store.compact_offsets().unwrap();
    let name = compacted
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_ne!(name, "__consumer_offsets", "the compaction moved the log");
    let snap = tmp.path().join("snap");
    let report = snapshot::create(&store, &snap).unwrap();
    assert!(report.manifest.partitions.iter().any(|p| p.dir == name));
    assert!(
        report
            .manifest
            .files
            .iter()
            .any(|f| f.path == "consumer_offsets.generation")
    );
    snapshot::restore(&snap, &tmp.path().join("r")).unwrap();
    let restored = Store::open(tmp.path().join("r"), store_options()).unwrap();
    assert_eq!(restored.committed("g", "t", 1).map(|c| c.offset), Some(3));
}

/// A MANIFEST rewritten (with a valid CRC) to leave out a log's settings file, with the file
/// removed: refused, naming the file the log needs.
#[test]
fn a_manifest_naming_a_log_without_its_files_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (snap, mut manifest) = sample(tmp.path());
    manifest.files.retain(|f| f.path != "t/0/log.meta");
    std::fs::remove_file(snap.join("t/0/log.meta")).unwrap();
    std::fs::write(snap.join(MANIFEST_NAME), manifest.encode()).unwrap();
    refused(
        &snap,
        &snap.join("t/0/log.meta"),
        &tmp.path().join("r"),
        false,
    );
}
