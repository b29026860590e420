//! Inspection without write access: `verify_dir` and read-only opens (of a log and of a store)
//! open nothing for writing, change no byte, create no file, take no lock, and see what a
//! writer that holds the log open appends. Also the library conveniences `read_one`,
//! `record_count` and `close(&self)`.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use stratalog::storage::{FsStorage, LockGuard, OpenMode, Storage, StorageFile};
use stratalog::{
    BatchBuilder, Compression, Error, FsyncPolicy, Log, LogConfig, LogOptions, PartitionerKind,
    Store, StoreOptions, TopicConfig, verify_dir,
};

/// The real file system, refusing (and recording) every operation that could change a file:
/// any open but [`OpenMode::Read`], directory creation, removal, rename, directory fsync and
/// locking. Files opened for reading are `O_RDONLY`, so writes through them fail too.
#[derive(Debug, Default)]
struct ReadOnlyFs {
    refused: Mutex<Vec<String>>,
}

impl ReadOnlyFs {
    fn refuse(&self, what: String) -> io::Error {
        self.refused.lock().unwrap().push(what.clone());
        io::Error::new(io::ErrorKind::PermissionDenied, what)
    }

    fn refused(&self) -> Vec<String> {
        self.refused.lock().unwrap().clone()
    }
}

impl Storage for ReadOnlyFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        if mode != OpenMode::Read {
            return Err(self.refuse(format!("open {mode:?} {}", path.display())));
        }
        FsStorage.open(path, mode)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        Err(self.refuse(format!("mkdir {}", path.display())))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        FsStorage.list(dir)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        Err(self.refuse(format!("remove {}", path.display())))
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        Err(self.refuse(format!("remove directory {}", path.display())))
    }
    fn rename(&self, from: &Path, _to: &Path) -> io::Result<()> {
        Err(self.refuse(format!("rename {}", from.display())))
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        Err(self.refuse(format!("fsync dir {}", dir.display())))
    }
    fn exists(&self, path: &Path) -> bool {
        FsStorage.exists(path)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        Err(self.refuse(format!("lock {}", path.display())))
    }
}

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 256,
        ..Default::default()
    }
}

fn writable(segment_bytes: u64) -> LogOptions {
    LogOptions {
        config: config(segment_bytes),
        fsync: FsyncPolicy::Always,
        ..Default::default()
    }
}

fn read_only(storage: Arc<dyn Storage>) -> LogOptions {
    LogOptions {
        storage,
        create: false,
        read_only: true,
        ..Default::default()
    }
}

/// Appends `n` batches of 5 records `"r{offset}"`.
fn fill(log: &Log, n: usize) {
    for _ in 0..n {
        let next = log.end_offset();
        let values: Vec<String> = (next..next + 5).map(|o| format!("r{o}")).collect();
        log.append_records(&values).unwrap().receipt.wait().unwrap();
    }
}

/// Every file under `dir` (recursively) with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.insert(p.clone(), b"<dir>".to_vec());
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn assert_same(before: &BTreeMap<PathBuf, Vec<u8>>, after: &BTreeMap<PathBuf, Vec<u8>>) {
    let names = |m: &BTreeMap<PathBuf, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(before), names(after), "files were created or removed");
    for (path, bytes) in before {
        assert!(after[path] == *bytes, "{} changed", path.display());
    }
}

/// Reads every record value from `from` to the end, checking dense offsets.
fn values_from(log: &Log, from: u64) -> Vec<String> {
    let mut out = Vec::new();
    let mut next = from;
    while next < log.end_offset() {
        for batch in log.read(next, 1 << 16).unwrap() {
            for r in batch.records().unwrap() {
                let r = r.unwrap();
                if r.offset < next {
                    continue;
                }
                assert_eq!(r.offset, next);
                out.push(String::from_utf8(r.value.to_vec()).unwrap());
                next += 1;
            }
        }
    }
    out
}

fn expected(from: u64, to: u64) -> Vec<String> {
    (from..to).map(|o| format!("r{o}")).collect()
}

#[test]
fn verify_opens_nothing_for_writing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), writable(2048)).unwrap();
    fill(&log, 60);
    // A crash: no clean close, so verify judges the active segment against the checkpoint.
    let crashed = tempfile::tempdir().unwrap();
    log.flush().unwrap();
    for (from, _) in snapshot(dir.path()) {
        let to = crashed.path().join(from.strip_prefix(dir.path()).unwrap());
        std::fs::write(to, std::fs::read(&from).unwrap()).unwrap();
    }
    log.close().unwrap();
    for d in [dir.path(), crashed.path()] {
        let fs = Arc::new(ReadOnlyFs::default());
        let before = snapshot(d);
        let report = verify_dir(fs.as_ref(), d).unwrap();
        assert!(report.is_sound(), "{:#?}", report.problems);
        assert_eq!(report.records, 300);
        assert!(report.segments > 3, "several segments: {}", report.segments);
        assert_eq!(fs.refused(), Vec::<String>::new());
        assert_same(&before, &snapshot(d));
    }
}

/// Positions of the batches of a segment file.
fn batch_positions(path: &Path) -> Vec<(u64, u64)> {
    let bytes = bytes::Bytes::from(std::fs::read(path).unwrap());
    let len = bytes.len() as u64;
    stratalog::log::BatchScan::new(bytes, stratalog::format::FILE_HEADER_LEN as u64, len)
        .map(|(pos, b)| (pos, b.unwrap().len() as u64))
        .collect()
}

#[test]
fn verify_reports_every_bad_batch_and_its_counts_agree() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), writable(1 << 20)).unwrap();
    fill(&log, 40); // 200 records in one sealed segment after the roll below
    let seg = dir.path().join(format!("{:020}.log", 0));
    // Roll, so that the damaged segment is sealed (damage there is a fault, not a torn tail).
    log.set_config(LogConfig {
        segment_bytes: 1024,
        ..log.config()
    })
    .unwrap();
    fill(&log, 2);
    log.close().unwrap();
    let batches = batch_positions(&seg);
    assert_eq!(batches.len(), 40);
    let mut bytes = std::fs::read(&seg).unwrap();
    // A CRC failure (payload byte), a damaged header (magic) and two adjacent bad batches.
    let damaged = [3usize, 10, 20, 21, 39];
    for &i in &damaged {
        let (pos, len) = batches[i];
        if i == 10 {
            bytes[pos as usize + 4] ^= 0xff; // the magic
        } else {
            bytes[(pos + len - 2) as usize] ^= 0x01;
        }
    }
    std::fs::write(&seg, &bytes).unwrap();
    let fs = ReadOnlyFs::default();
    let report = verify_dir(&fs, dir.path()).unwrap();
    assert_eq!(fs.refused(), Vec::<String>::new());
    let ranges: Vec<(Option<u64>, Option<u64>)> = report
        .problems
        .iter()
        .map(|p| (p.position, p.end))
        .collect();
    // 20 and 21 are one range; the last batch's range runs to the end of the file.
    let want = vec![
        (Some(batches[3].0), Some(batches[4].0)),
        (Some(batches[10].0), Some(batches[11].0)),
        (Some(batches[20].0), Some(batches[22].0)),
        (Some(batches[39].0), Some(bytes.len() as u64)),
    ];
    assert_eq!(ranges, want, "{:#?}", report.problems);
    // 5 damaged batches of 5 records: 25 records unreadable, the rest counted once.
    assert_eq!(report.end_offset, 210);
    assert_eq!(report.start_offset, 0);
    assert_eq!(report.records, 210 - 25);
    assert_eq!(report.offsets_lost, 25);
    assert_eq!(
        report.records + report.offsets_lost,
        report.end_offset - report.start_offset
    );
}

#[test]
fn read_only_open_follows_a_writer_that_holds_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Arc::new(Log::open(dir.path(), writable(4096)).unwrap());
    fill(&writer, 3);
    let acked = Arc::new(AtomicU64::new(writer.end_offset()));
    let appender = {
        let (writer, acked) = (writer.clone(), acked.clone());
        std::thread::spawn(move || {
            for _ in 0..300 {
                fill(&writer, 1);
                acked.store(writer.end_offset(), Ordering::Release);
            }
        })
    };
    // While the writer holds the log (and its lock) open.
    let reader = Log::open(dir.path(), read_only(FsStorage::shared())).unwrap();
    assert!(reader.end_offset() >= 15);
    let mut seen = 0;
    let mut refreshes = 0;
    loop {
        let before = acked.load(Ordering::Acquire);
        let end = reader.refresh().unwrap();
        refreshes += 1;
        assert!(
            end >= before,
            "refresh missed acknowledged records: {end} < {before}"
        );
        assert_eq!(values_from(&reader, seen), expected(seen, end));
        seen = end;
        if appender.is_finished() && end == writer.end_offset() {
            break;
        }
        std::thread::yield_now();
    }
    appender.join().unwrap();
    assert_eq!(reader.refresh().unwrap(), 1515);
    assert_eq!(values_from(&reader, 0), expected(0, 1515));
    assert_eq!(reader.read_one(1514).unwrap().value, "r1514".as_bytes());
    eprintln!(
        "read-only reader followed {} records over {} segments in {refreshes} refreshes",
        1515,
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log"))
            .count()
    );
    // A read-only log refuses changes.
    assert!(matches!(
        reader.append_records(&["x"]),
        Err(Error::ReadOnly)
    ));
    assert!(matches!(reader.truncate(0), Err(Error::ReadOnly)));
}

#[test]
fn read_only_open_changes_no_byte_even_after_a_crash_with_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), writable(2048)).unwrap();
    fill(&log, 40);
    // A crash: the log is never closed (its lock and files leak until the test ends).
    std::mem::forget(log);
    let active = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .max()
        .unwrap();
    // A torn tail: half a batch header of garbage after the last batch.
    let mut bytes = std::fs::read(&active).unwrap();
    bytes.extend_from_slice(&[0xab; 40]);
    std::fs::write(&active, &bytes).unwrap();
    // A damaged index of a sealed segment: a writable open would rebuild (write) it.
    let index = dir.path().join(format!("{:020}.index", 0));
    let mut ib = std::fs::read(&index).unwrap();
    let n = ib.len();
    ib[n - 3] ^= 0xff;
    std::fs::write(&index, &ib).unwrap();

    let before = snapshot(dir.path());
    let fs = Arc::new(ReadOnlyFs::default());
    let reader = Log::open(dir.path(), read_only(fs.clone())).unwrap();
    assert_eq!(reader.end_offset(), 200, "the valid prefix is served");
    assert_eq!(
        reader.recovery_report().torn.len(),
        1,
        "the torn tail is seen, not cut"
    );
    assert_eq!(values_from(&reader, 0), expected(0, 200));
    assert_eq!(reader.read_one(3).unwrap().value, "r3".as_bytes());
    assert_eq!(reader.offset_for_timestamp(0).unwrap(), Some(0));
    assert_eq!(reader.refresh().unwrap(), 200);
    reader.close().unwrap();
    drop(reader);
    assert_eq!(fs.refused(), Vec::<String>::new(), "only read opens");
    assert_same(&before, &snapshot(dir.path()));
    // The same with the ordinary storage: still nothing written, no lock file made.
    let reader = Log::open(dir.path(), read_only(FsStorage::shared())).unwrap();
    assert_eq!(values_from(&reader, 0), expected(0, 200));
    drop(reader);
    assert_same(&before, &snapshot(dir.path()));
}

#[test]
fn read_only_store_beside_a_writer_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Store::open(
        dir.path(),
        StoreOptions {
            retention_interval: None,
            ..Default::default()
        },
    )
    .unwrap();
    writer
        .create_topic("t", 3, TopicConfig::default(), PartitionerKind::default())
        .unwrap();
    let p0 = writer.partition("t", 0).unwrap();
    fill(&p0, 2);
    writer.commit("g", "t", 0, 4, 0).unwrap();
    writer.partition("t", 1).unwrap(); // created, empty

    let before = snapshot(dir.path());
    let fs = Arc::new(ReadOnlyFs::default());
    let reader = Store::open(
        dir.path(),
        StoreOptions {
            storage: fs.clone(),
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(reader.is_read_only());
    assert_eq!(reader.topics().unwrap().len(), 1);
    let r0 = reader.partition("t", 0).unwrap();
    assert_eq!(r0.end_offset(), 10);
    assert_eq!(reader.partition("t", 1).unwrap().end_offset(), 0);
    assert!(reader.try_partition("t", 2).unwrap().is_none());
    let lag = reader.group_offsets(Some("g")).unwrap();
    assert_eq!(lag.len(), 1);
    assert_eq!(lag[0].lag(), Some(6));
    // The writer goes on; the reader's partition takes it in on refresh.
    fill(&p0, 1);
    assert_eq!(r0.refresh().unwrap(), 15);
    drop(p0);
    writer.close().unwrap();
    // From here on only the reader runs: it must change nothing.
    let closed = snapshot(dir.path());
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        closed.keys().collect::<Vec<_>>(),
        "the reader created or removed files"
    );
    assert!(matches!(
        reader.create_topic("u", 1, TopicConfig::default(), PartitionerKind::default()),
        Err(Error::ReadOnly)
    ));
    assert!(matches!(
        reader.commit("g", "t", 0, 5, 0),
        Err(Error::ReadOnly)
    ));
    assert!(matches!(r0.append_records(&["x"]), Err(Error::ReadOnly)));
    assert_eq!(values_from(&r0, 0), expected(0, 15));
    assert_eq!(reader.apply_retention().partitions, 0);
    drop(r0);
    reader.close().unwrap();
    assert_eq!(fs.refused(), Vec::<String>::new());
    assert_same(&closed, &snapshot(dir.path()));
}

#[test]
fn read_one_and_record_count() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(
        dir.path(),
        LogOptions {
            config: LogConfig {
                retention_bytes: Some(1),
                ..config(1024)
            },
            ..writable(1024)
        },
    )
    .unwrap();
    let mut b = BatchBuilder::new(Compression::Lz4);
    for i in 0..7 {
        b.push_value(100 + i, format!("r{i}").as_bytes()).unwrap();
    }
    log.append(&b).unwrap().receipt.wait().unwrap();
    fill(&log, 30); // offsets 7..157, over several segments
    for o in [0, 3, 6, 7, 80, 156] {
        let r = log.read_one(o).unwrap();
        assert_eq!(r.offset, o);
        assert_eq!(r.value, format!("r{o}").as_bytes());
    }
    assert_eq!(log.read_one(3).unwrap().timestamp, 103);
    assert!(matches!(
        log.read_one(157),
        Err(Error::OffsetOutOfRange {
            offset: 157,
            start: 0,
            end: 157
        })
    ));
    assert_eq!(log.record_count(), 157);
    assert!(log.apply_retention().unwrap() > 0);
    let start = log.start_offset();
    assert!(start > 0);
    assert_eq!(log.record_count(), 157 - start);
    assert!(matches!(
        log.read_one(start - 1),
        Err(Error::OffsetOutOfRange { .. })
    ));
    assert_eq!(log.read_one(start).unwrap().offset, start);
}

#[test]
fn close_through_a_shared_handle() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), writable(4096)).unwrap());
    let other = log.clone();
    fill(&log, 2);
    log.close().unwrap();
    assert!(matches!(other.append_records(&["x"]), Err(Error::Closed)));
    assert!(matches!(other.read(0, 100), Err(Error::Closed)));
    assert!(matches!(other.flush(), Err(Error::Closed)));
    other.close().unwrap(); // again: nothing to do
    // Closed cleanly and unlocked while `other` is alive: a new open scans nothing.
    let again = Log::open(dir.path(), writable(4096)).unwrap();
    assert!(again.recovery_report().clean);
    assert_eq!(again.record_count(), 10);
    drop(other);
}

#[test]
fn refresh_follows_the_writers_retention() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Log::open(
        dir.path(),
        LogOptions {
            config: LogConfig {
                retention_bytes: Some(1),
                ..config(1024)
            },
            ..writable(1024)
        },
    )
    .unwrap();
    fill(&writer, 20);
    let reader = Log::open(dir.path(), read_only(FsStorage::shared())).unwrap();
    assert_eq!(reader.start_offset(), 0);
    fill(&writer, 20);
    assert!(writer.apply_retention().unwrap() > 0);
    let start = writer.start_offset();
    assert_eq!(reader.refresh().unwrap(), 200);
    assert_eq!(reader.start_offset(), start);
    assert!(matches!(
        reader.read(start - 1, 100),
        Err(Error::OffsetOutOfRange { .. })
    ));
    assert_eq!(values_from(&reader, start), expected(start, 200));
    assert_eq!(reader.record_count(), 200 - start);
}
