//! Criterion benchmarks of the log, each next to a plain-file baseline doing the same I/O.
//!
//! Groups (see `docs/BENCHMARKS.md` for the figures and how to read them):
//!
//! - `append`: 64 KiB batches of 128 B and of 1 KiB records, durable (`FsyncPolicy::Always`,
//!   one receipt waited per batch) and non-durable (`FsyncPolicy::Never`), against
//!   `File::write_all` of the same encoded batch bytes (+ `sync_data` per batch when durable).
//! - `durable_writers`: 1, 4, 16, 64 threads each appending a one-record batch (1 KiB value) and
//!   waiting for its receipt, against one thread doing `write_all` + `sync_data` per append.
//! - `read`: a sequential pass over a warm log (every record visited) against `memcpy` of the
//!   same byte count, and a random read of one record against a `pread` of one record's bytes.
//! - `reopen`: `Log::open` after a clean close and of a crash image whose last ~4 MiB were
//!   written after the last fsync, against opening the same files, reading the bytes recovery
//!   has to scan and one `write` + `sync_data`.
//!
//! Every `Throughput::Bytes` figure is in encoded bytes as stored (batch headers and record
//! framing included), the same bytes the baseline writes or reads, so the two can be compared
//! directly. Temporary logs go under `$STRATALOG_BENCH_DIR` if set, else `std::env::temp_dir()`
//! (which must be on a real disk, not tmpfs, for the fsync figures to mean anything).
//!
//! Under `cargo test` criterion runs every benchmark once; the logs are then kept small so the
//! whole file runs in a few seconds. Only `cargo bench` (which passes `--bench`) gets full sizes.

use std::cell::OnceCell;
use std::fs::{self, File};
use std::hint::black_box;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use stratalog::format::BATCH_HEADER_LEN;
use stratalog::{BatchBuilder, Compression, FsyncPolicy, GroupCommit, Log, LogConfig, LogOptions};
use tempfile::TempDir;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// Records of one batch in the `append` group add up to this many value bytes.
const BATCH_VALUE_BYTES: usize = 64 << 10;

/// Sizes of the pre-filled logs; small unless this is a real `cargo bench` run.
struct Sizes {
    /// `segment_bytes` of the pre-filled logs (`read`, `reopen`), so they have several segments.
    segment_bytes: u64,
    /// Bytes pre-filled for `read` and `reopen/clean`.
    prefill: u64,
    /// Sealed segments in front of the active one in the crash image.
    crash_sealed_segments: usize,
    /// Batches in the crash image's active segment before its last fsync.
    crash_synced_batches: u64,
    /// Bytes written after the last fsync in the crash image.
    crash_tail: u64,
}

fn sizes() -> Sizes {
    if full_run() {
        Sizes {
            segment_bytes: 15 * MIB,
            prefill: 64 * MIB,
            crash_sealed_segments: 4,
            crash_synced_batches: 8,
            crash_tail: 4 * MIB,
        }
    } else {
        Sizes {
            segment_bytes: MIB,
            prefill: 2 * MIB,
            crash_sealed_segments: 2,
            crash_synced_batches: 2,
            crash_tail: 192 * KIB,
        }
    }
}

/// True under `cargo bench` (criterion gets `--bench`), false under `cargo test` (test mode).
fn full_run() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test")
}

fn configure<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g
}

/// A fresh directory on the benchmark file system, removed when dropped.
fn scratch() -> TempDir {
    let base = std::env::var_os("STRATALOG_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    fs::create_dir_all(&base).expect("create the benchmark directory");
    tempfile::Builder::new()
        .prefix("stratalog-bench-")
        .tempdir_in(base)
        .expect("create a temporary directory")
}

fn open_log(dir: &Path, fsync: FsyncPolicy, segment_bytes: u64) -> Log {
    open_log_with(dir, fsync, segment_bytes, GroupCommit::default())
}

fn open_log_with(
    dir: &Path,
    fsync: FsyncPolicy,
    segment_bytes: u64,
    group_commit: GroupCommit,
) -> Log {
    Log::open(
        dir,
        LogOptions {
            config: LogConfig {
                segment_bytes,
                ..LogConfig::default()
            },
            fsync,
            group_commit,
            ..LogOptions::default()
        },
    )
    .expect("open the log")
}

/// A batch of `records` records of `value_bytes` bytes each.
fn batch(value_bytes: usize, records: usize) -> BatchBuilder {
    let value: Vec<u8> = (0..value_bytes).map(|i| (i * 31 + 7) as u8).collect();
    let ts = stratalog::now_ms();
    let mut b = BatchBuilder::new(Compression::None);
    for _ in 0..records {
        b.push_value(ts, &value).expect("push a record");
    }
    b
}

/// The batch exactly as the log stores it (so a baseline writes the same bytes).
fn encoded(b: &BatchBuilder) -> Vec<u8> {
    b.encode(0).expect("encode the batch").as_bytes().to_vec()
}

fn append_wait(log: &Log, b: &BatchBuilder) {
    log.append(b)
        .expect("append")
        .receipt
        .wait()
        .expect("receipt");
}

/// The baseline: `iters` writes of `bytes` to a fresh plain file, each followed by `sync_data`
/// if `durable`.
fn plain_writes(bytes: &[u8], iters: u64, durable: bool) -> Duration {
    let dir = scratch();
    let mut file = File::create(dir.path().join("plain.log")).expect("create");
    let start = Instant::now();
    for _ in 0..iters {
        file.write_all(bytes).expect("write");
        if durable {
            file.sync_data().expect("sync_data");
        }
    }
    start.elapsed()
}

fn segment_logs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("list the log directory")
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .into_string()
                .unwrap()
        })
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    names
}

fn sync_path(path: &Path) {
    File::open(path).and_then(|f| f.sync_all()).expect("fsync");
}

// ---------------------------------------------------------------------------------------------
// append

fn bench_append(c: &mut Criterion) {
    let mut g = configure(c, "append");
    for value_bytes in [128usize, 1024] {
        let builder = batch(value_bytes, BATCH_VALUE_BYTES / value_bytes);
        let bytes = encoded(&builder);
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        for (mode, policy) in [
            ("durable", FsyncPolicy::Always),
            ("nondurable", FsyncPolicy::Never),
        ] {
            let durable = policy == FsyncPolicy::Always;
            let param = format!("{mode}/{value_bytes}B_records");
            // A fresh log per sample; closing it (it syncs what `Never` left unsynced) is not
            // timed, just as the baseline's file is deleted unsynced.
            let modes: &[(&str, GroupCommit)] = if durable {
                &[
                    ("stratalog_flusher", GroupCommit::Flusher),
                    ("stratalog_leader", GroupCommit::Leader),
                ]
            } else {
                &[("stratalog", GroupCommit::Flusher)]
            };
            for &(name, group_commit) in modes {
                g.bench_function(BenchmarkId::new(name, &param), |b| {
                    b.iter_custom(|iters| {
                        let dir = scratch();
                        let log = open_log_with(
                            dir.path(),
                            policy,
                            LogConfig::default().segment_bytes,
                            group_commit,
                        );
                        let start = Instant::now();
                        for _ in 0..iters {
                            append_wait(&log, &builder);
                        }
                        let elapsed = start.elapsed();
                        log.close().expect("close");
                        elapsed
                    })
                });
            }
            g.bench_function(BenchmarkId::new("plain_file", &param), |b| {
                b.iter_custom(|iters| plain_writes(&bytes, iters, durable))
            });
        }
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// durable_writers

fn bench_durable_writers(c: &mut Criterion) {
    let mut g = configure(c, "durable_writers");
    let builder = batch(1024, 1);
    let bytes = encoded(&builder);
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    for (threads, (name, group_commit)) in [1u64, 4, 16, 64].into_iter().flat_map(|t| {
        [
            ("stratalog_flusher", GroupCommit::Flusher),
            ("stratalog_leader", GroupCommit::Leader),
        ]
        .map(|m| (t, m))
    }) {
        g.bench_function(BenchmarkId::new(name, threads), |b| {
            b.iter_custom(|iters| {
                let dir = scratch();
                let log = open_log_with(
                    dir.path(),
                    FsyncPolicy::Always,
                    LogConfig::default().segment_bytes,
                    group_commit,
                );
                let barrier = Barrier::new(threads as usize + 1);
                // `iters` appends in total, shared out between the threads.
                let elapsed = std::thread::scope(|s| {
                    let handles: Vec<_> = (0..threads)
                        .map(|i| {
                            let n = iters / threads + u64::from(i < iters % threads);
                            let (log, builder, barrier) = (&log, &builder, &barrier);
                            s.spawn(move || {
                                barrier.wait();
                                for _ in 0..n {
                                    append_wait(log, builder);
                                }
                            })
                        })
                        .collect();
                    barrier.wait();
                    let start = Instant::now();
                    for h in handles {
                        h.join().expect("writer thread");
                    }
                    start.elapsed()
                });
                log.close().expect("close");
                elapsed
            })
        });
    }
    // What every append would cost without group commit: its own fsync.
    g.bench_function("fsync_per_append", |b| {
        b.iter_custom(|iters| plain_writes(&bytes, iters, true))
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// read

/// A warm log of 1 KiB records in 64-record batches, and a plain file of the same bytes.
struct ReadFixture {
    _dir: TempDir,
    log: Log,
    end: u64,
    plain: File,
    plain_len: u64,
    record_len: usize,
}

fn read_fixture(builder: &BatchBuilder, batches: u64, segment_bytes: u64) -> ReadFixture {
    let dir = scratch();
    let log = open_log(&dir.path().join("log"), FsyncPolicy::Never, segment_bytes);
    let bytes = encoded(builder);
    let plain_path = dir.path().join("plain.log");
    let mut plain = File::create(&plain_path).expect("create");
    for _ in 0..batches {
        append_wait(&log, builder);
        plain.write_all(&bytes).expect("write");
    }
    log.flush().expect("flush");
    plain.sync_data().expect("sync_data");
    let end = log.end_offset();
    let segments = segment_logs(log.dir()).len();
    // One pass so that the first sample does not pay for mapping and loading indexes.
    let sum = read_all_records(&log, end);
    eprintln!(
        "read fixture: {batches} batches, {} bytes, {end} records, {segments} segments, \
         {sum} value bytes",
        batches * bytes.len() as u64
    );
    ReadFixture {
        _dir: dir,
        log,
        end,
        plain: File::open(plain_path).expect("open"),
        plain_len: batches * bytes.len() as u64,
        record_len: (bytes.len() - BATCH_HEADER_LEN) / builder.len(),
    }
}

/// Reads every batch from offset 0, visits every record and sums the value lengths.
fn read_all_records(log: &Log, end: u64) -> u64 {
    let mut from = 0;
    let mut sum = 0u64;
    while from < end {
        let batches = log.read(from, MIB as usize).expect("read");
        for batch in &batches {
            for record in batch.records().expect("records") {
                sum += record.expect("record").value.len() as u64;
            }
        }
        from = batches.last().expect("a batch").last_offset() + 1;
    }
    sum
}

fn bench_read(c: &mut Criterion) {
    let s = sizes();
    let mut g = configure(c, "read");
    let builder = batch(1024, 64);
    let batch_len = encoded(&builder).len() as u64;
    let batches = s.prefill / batch_len;
    let total = batches * batch_len;
    let fixture = OnceCell::new();
    let fixture = || fixture.get_or_init(|| read_fixture(&builder, batches, s.segment_bytes));

    g.throughput(Throughput::Bytes(total));
    g.bench_function("sequential/stratalog", |b| {
        let f = fixture();
        b.iter(|| black_box(read_all_records(&f.log, f.end)))
    });
    g.bench_function("sequential/memcpy", |b| {
        let src: Vec<u8> = (0..total).map(|i| i as u8).collect();
        let mut dst = vec![0u8; total as usize];
        b.iter(|| {
            dst.copy_from_slice(black_box(&src));
            black_box(&dst);
        })
    });

    g.throughput(Throughput::Bytes(1024));
    let mut rng = StdRng::seed_from_u64(0x5EED);
    g.bench_function("random_record/stratalog", |b| {
        let f = fixture();
        b.iter(|| {
            let offset = rng.random_range(0..f.end);
            let batches = f.log.read(offset, 1).expect("read");
            let first = &batches[0];
            let record = first
                .records()
                .expect("records")
                .nth((offset - first.base_offset()) as usize)
                .expect("the record is in the first batch")
                .expect("record");
            debug_assert_eq!(record.offset, offset);
            black_box(record.value.len())
        })
    });
    let mut rng = StdRng::seed_from_u64(0x5EED);
    g.bench_function("random_record/pread", |b| {
        let f = fixture();
        let mut buf = vec![0u8; f.record_len];
        b.iter(|| {
            let pos = rng.random_range(0..f.plain_len - f.record_len as u64);
            f.plain.read_exact_at(&mut buf, pos).expect("pread");
            black_box(buf[0])
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// reopen

/// A closed log for `reopen/clean`.
struct CleanFixture {
    _root: TempDir,
    dir: PathBuf,
}

fn clean_fixture(builder: &BatchBuilder, batches: u64, segment_bytes: u64) -> CleanFixture {
    let root = scratch();
    let dir = root.path().join("log");
    let log = open_log(&dir, FsyncPolicy::Never, segment_bytes);
    for _ in 0..batches {
        append_wait(&log, builder);
    }
    log.close().expect("close");
    eprintln!(
        "reopen/clean fixture: {} segments, {} log bytes",
        segment_logs(&dir).len(),
        dir_bytes(&dir)
    );
    CleanFixture { _root: root, dir }
}

/// A copy of a log's files taken while it was open, with `tail` bytes appended after its last
/// fsync: what the disk could hold after a crash, with a checkpoint that is not clean.
struct CrashImage {
    _root: TempDir,
    image: PathBuf,
    /// Name of the active segment's `.log` file.
    active: String,
    tail: u64,
}

fn crash_image(builder: &BatchBuilder, s: &Sizes) -> CrashImage {
    let root = scratch();
    let live = root.path().join("live");
    let image = root.path().join("image");
    let log = open_log(&live, FsyncPolicy::Never, s.segment_bytes);
    let batch_len = encoded(builder).len() as u64;
    // Fill the sealed segments; the append that rolls puts the first batch into the next one.
    while segment_logs(&live).len() <= s.crash_sealed_segments {
        append_wait(&log, builder);
    }
    for _ in 1..s.crash_synced_batches {
        append_wait(&log, builder);
    }
    log.flush().expect("flush");
    let before = segment_logs(&live);
    let tail_batches = s.crash_tail / batch_len;
    for _ in 0..tail_batches {
        append_wait(&log, builder);
    }
    assert_eq!(
        segment_logs(&live),
        before,
        "the unsynced tail crossed a segment roll (which fsyncs); change the sizes"
    );
    // The crash: the files as they are now, page cache included, unsynced tail and all.
    copy_dir(&live, &image, None);
    log.close().expect("close");
    let active = before.last().expect("a segment").clone();
    let tail = tail_batches * batch_len;
    // Check that opening the image really recovers the tail, and only it.
    let probe = scratch();
    copy_dir(&image, probe.path(), Some(&active));
    let log = open_log(probe.path(), FsyncPolicy::Always, s.segment_bytes);
    let report = log.recovery_report().clone();
    log.close().expect("close");
    assert!(!report.clean, "the crash image opened as a clean close");
    assert_eq!(report.scanned_bytes, tail, "recovery scanned {report:?}");
    eprintln!(
        "reopen/crash fixture: {} segments, {} log bytes, {tail} bytes after the last fsync, \
         first recovery: {report:?}",
        before.len(),
        dir_bytes(&image)
    );
    CrashImage {
        _root: root,
        image,
        active,
        tail,
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    segment_logs(dir)
        .iter()
        .map(|n| fs::metadata(dir.join(n)).expect("stat").len())
        .sum()
}

/// Copies the files of a log directory (not its lock file) and syncs them. With `active`, the
/// files of the other segments are hard-linked instead: recovery only opens sealed segments
/// whose data is older than the checkpoint, so sharing them is safe and keeps setup short.
fn copy_dir(from: &Path, to: &Path, active: Option<&str>) {
    fs::create_dir_all(to).expect("create directory");
    let active_stem = active.map(|a| a.trim_end_matches(".log"));
    for entry in fs::read_dir(from).expect("list") {
        let name = entry.expect("directory entry").file_name();
        let name = name.to_str().expect("file name");
        if name == ".lock" {
            continue;
        }
        let (src, dst) = (from.join(name), to.join(name));
        let is_segment_file =
            name.ends_with(".log") || name.ends_with(".index") || name.ends_with(".timeindex");
        let sealed = is_segment_file && active_stem.is_some_and(|a| !name.starts_with(a));
        if sealed {
            fs::hard_link(&src, &dst).expect("hard link");
        } else {
            fs::copy(&src, &dst).expect("copy");
            sync_path(&dst);
        }
    }
    sync_path(to);
}

/// The least any open must do: open the files, read what it has to scan, make one durable write.
fn plain_open(dir: &Path, active: &str, tail: u64, marker: &File, buf: &mut [u8]) {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).expect("list") {
        files.push(File::open(entry.expect("directory entry").path()).expect("open"));
    }
    if tail > 0 {
        let file = File::open(dir.join(active)).expect("open");
        let len = file.metadata().expect("stat").len();
        file.read_exact_at(&mut buf[..tail as usize], len - tail)
            .expect("read");
    }
    marker.write_all_at(&[1u8; 64], 0).expect("write");
    marker.sync_data().expect("sync_data");
    black_box(files.len());
}

fn bench_reopen(c: &mut Criterion) {
    let s = sizes();
    let mut g = configure(c, "reopen");
    let builder = batch(1024, 64);
    let batch_len = encoded(&builder).len() as u64;
    let batches = s.prefill / batch_len;
    let clean = OnceCell::new();
    let clean = || clean.get_or_init(|| clean_fixture(&builder, batches, s.segment_bytes));
    let crash = OnceCell::new();
    let crash = || crash.get_or_init(|| crash_image(&builder, &s));
    let marker_dir = scratch();
    let marker = File::create(marker_dir.path().join("marker")).expect("create");
    let mut buf = vec![0u8; (s.crash_tail + batch_len) as usize];

    g.bench_function("clean/stratalog", |b| {
        let f = clean();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let log = open_log(&f.dir, FsyncPolicy::Always, s.segment_bytes);
                total += start.elapsed();
                assert!(log.recovery_report().clean, "not a clean open");
                log.close().expect("close");
            }
            total
        })
    });
    g.bench_function("clean/plain_open_sync", |b| {
        let f = clean();
        let active = segment_logs(&f.dir).pop().expect("a segment");
        b.iter(|| plain_open(&f.dir, &active, 0, &marker, &mut buf))
    });

    // Known without building the image (whole batches of the tail, as `crash_image` writes).
    g.throughput(Throughput::Bytes(s.crash_tail / batch_len * batch_len));
    g.bench_function("crash/stratalog", |b| {
        let f = crash();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let work = scratch();
                copy_dir(&f.image, work.path(), Some(&f.active));
                let start = Instant::now();
                let log = open_log(work.path(), FsyncPolicy::Always, s.segment_bytes);
                total += start.elapsed();
                assert_eq!(log.recovery_report().scanned_bytes, f.tail);
                log.close().expect("close");
            }
            total
        })
    });
    g.bench_function("crash/plain_open_read_sync", |b| {
        let f = crash();
        b.iter(|| plain_open(&f.image, &f.active, f.tail, &marker, &mut buf))
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_append,
    bench_durable_writers,
    bench_read,
    bench_reopen
);
criterion_main!(benches);
