//! Criterion benchmarks of stratalog next to the crates a user would pick instead, in the same
//! run: [`commitlog`] 0.2, [`okaywal`] 0.3 and [`raft_engine`] 0.4, plus a plain-file baseline.
//!
//! Groups (see the "Peers" section of `docs/BENCHMARKS.md` for figures and how to read them):
//!
//! - `batched_append_1k`: groups of 1024 records of 1 KiB (1 MiB of values), one fsync per group.
//!   stratalog: one 1024-record batch, `FsyncPolicy::Always`, receipt waited. plain file:
//!   `write_all` of stratalog's encoded batch + `sync_data`. okaywal: one entry of 1024 chunks,
//!   `commit` (which fsyncs). raft-engine: one `LogBatch` of 1024 entries, `write(sync = true)`.
//!   commitlog: one `append` of a 1024-message `MessageBuf` + `flush`, which is **not** durable:
//!   commitlog 0.2's `flush` msyncs the index but only calls `File::flush` (a no-op) on the
//!   segment, so the appended data is never fsynced. It is measured so that its cost is known,
//!   under a name that says so.
//! - `durable_writers_64`: 64 threads, each appending one 1 KiB record and waiting until it is
//!   durable, repeatedly. stratalog: `FsyncPolicy::Always` (group commit). okaywal: one entry
//!   per append, `commit`. raft-engine: one `LogBatch` per append (one raft group per thread),
//!   `write(sync = true)`, which batches concurrent writers into write groups. Baselines: one
//!   fsync per append, `fsync_per_append` (the 64 threads doing `write_all` + `sync_data` on a
//!   shared file under a mutex) and `fsync_per_append_1_thread` (one thread doing the same
//!   appends, as in `benches/log.rs`). commitlog is
//!   left out: its `append` takes `&mut self` (a caller-side mutex would serialise writers) and
//!   it has no durable flush of the data (see above), so it cannot do this workload.
//! - `sequential_read`: a pass over a warm log of 1 KiB records written 64 per append, every
//!   record visited, value lengths summed. stratalog `read`, commitlog `read` (which copies into
//!   a buffer and checks every message's CRC), raft-engine `fetch_entries_to` (decodes the
//!   protobuf entries), and `memcpy` of the same value bytes as the bound. okaywal is left out:
//!   it is a write-ahead log whose entries are read back only at recovery or by a saved
//!   position, not scanned in order by offset.
//! - `append_unsynced_1k`: appends that are not waited on for durability, one 1 KiB record and
//!   64 records per append. stratalog (`FsyncPolicy::Never`), commitlog (`append`), raft-engine
//!   (`write(sync = false)`), plain file (`write_all` of stratalog's encoded batch). okaywal is
//!   left out: every `commit` fsyncs.
//!
//! After the criterion groups, an interleaved A/B section (plain `println!` lines starting with
//! `interleaved`) runs the two durable workloads again with every contender back to back in each
//! round (9 rounds; `$STRATALOG_PEERS_ROUNDS` changes that, 0 skips the section) and prints the
//! median of the per-round ratios: on a shared VM the fsync latency drifts by 50% or more
//! between criterion benchmarks measured minutes apart, so the durable ratios come from there.
//! A second interleaved section does the same for reads (issue 15): a scan of a freshly opened
//! log, the same scan with `records()`, a second scan, and a plain file read of the same bytes;
//! then the first read of a record in a batch not read since the open, against raft-engine's
//! `get_entry` on a freshly opened engine (p50 and p99). `$STRATALOG_PEERS_SECTIONS` (`durable`,
//! `reads`, comma-separated) picks the sections; both run by default.
//!
//! Every throughput is in **value bytes** (1 KiB per record, framing not counted) or in appends
//! (`durable_writers_64`), the same for every member of a group, so the ratio of two figures is
//! the inverse ratio of their times. Values are incompressible (seeded random bytes) and no
//! system compresses them (raft-engine's batch compression is switched off).
//!
//! Peer settings: raft-engine `Config::default()` with `batch_compression_threshold = 0` (no
//! lz4), everything else default (128 MiB files, log recycling on, format v2). okaywal:
//! `preallocate_bytes` 32 MiB and `checkpoint_after_bytes` 24 MiB (the defaults, 1 MiB and
//! 768 KiB, are smaller than one 1 MiB group, so every group would extend its file), and a
//! `LogManager` whose checkpoint does nothing (the cheapest a user can make it); okaywal
//! preallocates a file by writing zeros, so each instance commits one empty entry before timing
//! starts (a new file started inside the timed region, every 24 MiB, still pays for its
//! zeros: that is okaywal's cost on a fresh directory, before files are recycled). commitlog:
//! `message_max_bytes` 64 MiB (the 1 MB default refuses a 1 MiB group), other options default.
//! stratalog: `LogOptions::default()` (1 GiB segments, `GroupCommit::Leader`).
//!
//! Temporary directories go under `$STRATALOG_BENCH_DIR` if set, else `std::env::temp_dir()`,
//! which must be a real disk (not tmpfs) for fsync to mean anything. Each sample of a write
//! benchmark uses a fresh directory; opening, closing and deleting are not timed.
//!
//! Under `cargo test` criterion runs every benchmark once and the read fixtures are 1 MiB, so
//! this file runs in a few seconds. Only `cargo bench` (which passes `--bench`) gets 64 MiB.

use std::cell::OnceCell;
use std::fs::{self, File};
use std::hint::black_box;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use commitlog::message::{MessageBuf, MessageSet};
use commitlog::{CommitLog, ReadLimit};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group};
use okaywal::{Entry, EntryId, LogManager, SegmentReader, WriteAheadLog};
use protobuf::well_known_types::BytesValue;
use raft_engine::{Engine, LogBatch, MessageExt, ReadableSize};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use stratalog::{BatchBuilder, Compression, FsyncPolicy, Log, LogOptions};
use tempfile::TempDir;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
/// Value bytes of every record.
const VALUE_BYTES: usize = KIB;
/// Records per fsync in `batched_append_1k` (1 MiB of values).
const GROUP_RECORDS: usize = 1024;
/// Concurrent writers in `durable_writers_64`.
const WRITERS: u64 = 64;
/// Records per append when filling the read fixtures.
const READ_BATCH_RECORDS: usize = 64;
/// How much a read call may return (stratalog, commitlog) or fetch (raft-engine).
const READ_CHUNK: usize = MIB;

/// True under `cargo bench` (criterion gets `--bench`), false under `cargo test` (test mode).
fn full_run() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test")
}

/// Value bytes of each read fixture.
fn read_bytes() -> usize {
    if full_run() { 64 * MIB } else { MIB }
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
        .prefix("stratalog-peers-")
        .tempdir_in(base)
        .expect("create a temporary directory")
}

/// `n` incompressible values of `VALUE_BYTES` each (seeded, so every run writes the same bytes).
fn values(n: usize) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(0x9EE5);
    (0..n)
        .map(|_| {
            let mut v = vec![0u8; VALUE_BYTES];
            rng.fill_bytes(&mut v);
            v
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// stratalog

fn open_stratalog(dir: &Path, fsync: FsyncPolicy) -> Log {
    Log::open(
        dir,
        LogOptions {
            fsync,
            ..LogOptions::default()
        },
    )
    .expect("open the log")
}

fn stratalog_batch(values: &[Vec<u8>]) -> BatchBuilder {
    let ts = stratalog::now_ms();
    let mut b = BatchBuilder::new(Compression::None);
    for v in values {
        b.push_value(ts, v).expect("push a record");
    }
    b
}

/// The batch exactly as stratalog stores it, for the plain-file baseline.
fn encoded(b: &BatchBuilder) -> Vec<u8> {
    b.encode(0).expect("encode the batch").as_bytes().to_vec()
}

fn stratalog_append(log: &Log, b: &BatchBuilder) {
    log.append(b)
        .expect("append")
        .receipt
        .wait()
        .expect("receipt");
}

// ---------------------------------------------------------------------------------------------
// commitlog

fn open_commitlog(dir: &Path) -> CommitLog {
    let mut opts = commitlog::LogOptions::new(dir);
    opts.message_max_bytes(64 * MIB);
    CommitLog::new(opts).expect("open commitlog")
}

fn commitlog_buf(values: &[Vec<u8>]) -> MessageBuf {
    let mut buf = MessageBuf::default();
    for v in values {
        buf.push(v).expect("push a message");
    }
    buf
}

// ---------------------------------------------------------------------------------------------
// raft-engine

/// raft-engine stores protobuf entries and asks them for their raft index: the entries here are
/// `BytesValue`s holding the record's 1 KiB value, whose first 8 bytes are overwritten with the
/// entry's index (little endian).
struct Entries;

impl MessageExt for Entries {
    type Entry = BytesValue;

    fn index(e: &BytesValue) -> u64 {
        u64::from_le_bytes(e.value[..8].try_into().expect("an entry holds its index"))
    }
}

fn open_raft_engine(dir: &Path) -> Engine {
    let cfg = raft_engine::Config {
        dir: dir.to_str().expect("a UTF-8 path").to_owned(),
        // stratalog, commitlog and okaywal do not compress; neither should raft-engine.
        batch_compression_threshold: ReadableSize(0),
        ..raft_engine::Config::default()
    };
    Engine::open(cfg).expect("open raft-engine")
}

fn raft_entries(values: &[Vec<u8>]) -> Vec<BytesValue> {
    values
        .iter()
        .map(|v| {
            let mut e = BytesValue::new();
            e.value = v.clone();
            e
        })
        .collect()
}

/// Numbers `entries` from `first` on (each entry keeps its index in its first 8 bytes).
fn set_indexes(entries: &mut [BytesValue], first: u64) {
    for (i, e) in entries.iter_mut().enumerate() {
        e.value[..8].copy_from_slice(&(first + i as u64).to_le_bytes());
    }
}

/// Appends `entries` to raft group `region` as one `LogBatch`, numbered from `*next`.
fn raft_write(
    engine: &Engine,
    region: u64,
    entries: &mut [BytesValue],
    next: &mut u64,
    sync: bool,
) {
    set_indexes(entries, *next);
    *next += entries.len() as u64;
    let mut batch = LogBatch::default();
    batch
        .add_entries::<Entries>(region, entries)
        .expect("add entries");
    engine.write(&mut batch, sync).expect("raft-engine write");
}

// ---------------------------------------------------------------------------------------------
// okaywal

/// A `LogManager` that recovers nothing and whose checkpoints do nothing: the cheapest a user
/// can make okaywal's checkpointing.
#[derive(Debug)]
struct Discard;

impl LogManager for Discard {
    fn recover(&mut self, _entry: &mut Entry<'_>) -> io::Result<()> {
        Ok(())
    }

    fn checkpoint_to(
        &mut self,
        _last_checkpointed_id: EntryId,
        _checkpointed_entries: &mut SegmentReader,
        _wal: &WriteAheadLog,
    ) -> io::Result<()> {
        Ok(())
    }
}

/// Opens okaywal in `dir` and commits one empty entry, so that the zeros okaywal writes to
/// preallocate its first file are synced before the caller starts timing.
fn open_okaywal(dir: &Path) -> WriteAheadLog {
    let wal = okaywal::Configuration::default_for(dir)
        .preallocate_bytes(32 * MIB as u32)
        .checkpoint_after_bytes(24 * MIB as u64)
        .open(Discard)
        .expect("open okaywal");
    okaywal_commit(&wal, &[]);
    wal
}

/// One okaywal entry holding `values` as chunks, committed (fsynced).
fn okaywal_commit(wal: &WriteAheadLog, values: &[Vec<u8>]) {
    let mut entry = wal.begin_entry().expect("begin entry");
    for v in values {
        entry.write_chunk(v).expect("write chunk");
    }
    entry.commit().expect("commit");
}

// ---------------------------------------------------------------------------------------------
// plain file

/// `iters` writes of `bytes` to a fresh plain file, each followed by `sync_data` if `durable`.
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

// ---------------------------------------------------------------------------------------------
// batched_append_1k: each function times `iters` groups of records into a fresh instance.

fn batched_stratalog(builder: &BatchBuilder, iters: u64) -> Duration {
    let dir = scratch();
    let log = open_stratalog(dir.path(), FsyncPolicy::Always);
    let start = Instant::now();
    for _ in 0..iters {
        stratalog_append(&log, builder);
    }
    let elapsed = start.elapsed();
    log.close().expect("close");
    elapsed
}

fn batched_okaywal(values: &[Vec<u8>], iters: u64) -> Duration {
    let dir = scratch();
    let wal = open_okaywal(dir.path());
    let start = Instant::now();
    for _ in 0..iters {
        okaywal_commit(&wal, values);
    }
    let elapsed = start.elapsed();
    wal.shutdown().expect("shutdown");
    elapsed
}

fn batched_raft_engine(entries: &mut [BytesValue], iters: u64) -> Duration {
    let dir = scratch();
    let engine = open_raft_engine(dir.path());
    let mut next = 1;
    let start = Instant::now();
    for _ in 0..iters {
        raft_write(&engine, 1, entries, &mut next, true);
    }
    let elapsed = start.elapsed();
    drop(engine);
    elapsed
}

/// Not durable: commitlog's `flush` does not fsync the segment (see the module docs).
fn batched_commitlog(buf: &mut MessageBuf, iters: u64) -> Duration {
    let dir = scratch();
    let mut log = open_commitlog(dir.path());
    let start = Instant::now();
    for _ in 0..iters {
        log.append(buf).expect("append");
        log.flush().expect("flush");
    }
    start.elapsed()
}

fn bench_batched_append(c: &mut Criterion) {
    let mut g = configure(c, "batched_append_1k");
    let values = values(GROUP_RECORDS);
    g.throughput(Throughput::Bytes((GROUP_RECORDS * VALUE_BYTES) as u64));
    let builder = stratalog_batch(&values);
    let bytes = encoded(&builder);
    let mut entries = raft_entries(&values);
    let mut buf = commitlog_buf(&values);
    eprintln!(
        "batched_append_1k: {GROUP_RECORDS} values of {VALUE_BYTES} bytes; stratalog batch {} \
         bytes encoded (what plain_file writes), commitlog message set {} bytes",
        bytes.len(),
        buf.bytes().len()
    );
    g.bench_function("stratalog", |b| {
        b.iter_custom(|iters| batched_stratalog(&builder, iters))
    });
    g.bench_function("plain_file", |b| {
        b.iter_custom(|iters| plain_writes(&bytes, iters, true))
    });
    g.bench_function("okaywal", |b| {
        b.iter_custom(|iters| batched_okaywal(&values, iters))
    });
    g.bench_function("raft_engine", |b| {
        b.iter_custom(|iters| batched_raft_engine(&mut entries, iters))
    });
    g.bench_function("commitlog_flush_not_durable", |b| {
        b.iter_custom(|iters| batched_commitlog(&mut buf, iters))
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// durable_writers_64: each function times `iters` durable appends in total, shared out between
// `WRITERS` threads (one thread for `writers_fsync_1_thread`), into a fresh instance.

/// Runs `writer(thread, appends)` on `WRITERS` threads sharing out `iters` appends; returns the
/// time from the start signal until the last thread is done.
fn run_writers<F>(iters: u64, writer: F) -> Duration
where
    F: Fn(u64, u64) + Sync,
{
    let barrier = Barrier::new(WRITERS as usize + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|i| {
                let n = iters / WRITERS + u64::from(i < iters % WRITERS);
                let (barrier, writer) = (&barrier, &writer);
                s.spawn(move || {
                    barrier.wait();
                    writer(i, n);
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for h in handles {
            h.join().expect("writer thread");
        }
        start.elapsed()
    })
}

fn writers_stratalog(builder: &BatchBuilder, iters: u64) -> Duration {
    let dir = scratch();
    let log = open_stratalog(dir.path(), FsyncPolicy::Always);
    let elapsed = run_writers(iters, |_, n| {
        for _ in 0..n {
            stratalog_append(&log, builder);
        }
    });
    log.close().expect("close");
    elapsed
}

/// What every append costs without group commit: its own write and fsync, in turn.
fn writers_fsync_mutex(bytes: &[u8], iters: u64) -> Duration {
    let dir = scratch();
    let file = Mutex::new(File::create(dir.path().join("plain.log")).expect("create"));
    run_writers(iters, |_, n| {
        for _ in 0..n {
            let mut f = file.lock().expect("file lock");
            f.write_all(bytes).expect("write");
            f.sync_data().expect("sync_data");
        }
    })
}

fn writers_okaywal(values: &[Vec<u8>], iters: u64) -> Duration {
    let dir = scratch();
    let wal = open_okaywal(dir.path());
    let elapsed = run_writers(iters, |_, n| {
        for _ in 0..n {
            okaywal_commit(&wal, values);
        }
    });
    wal.shutdown().expect("shutdown");
    elapsed
}

/// One raft group per writer (raft-engine's model: many raft groups share one engine, and the
/// entries of one group must be numbered in order); concurrent `write`s form write groups that
/// share one fsync.
fn writers_raft_engine(values: &[Vec<u8>], iters: u64) -> Duration {
    let dir = scratch();
    let engine = open_raft_engine(dir.path());
    let elapsed = run_writers(iters, |thread, n| {
        let mut entries = raft_entries(values);
        let mut next = 1;
        for _ in 0..n {
            raft_write(&engine, thread + 1, &mut entries, &mut next, true);
        }
    });
    drop(engine);
    elapsed
}

fn bench_durable_writers(c: &mut Criterion) {
    let mut g = configure(c, "durable_writers_64");
    let values = values(1);
    g.throughput(Throughput::Elements(1));
    let builder = stratalog_batch(&values);
    let bytes = encoded(&builder);
    g.bench_function("stratalog", |b| {
        b.iter_custom(|iters| writers_stratalog(&builder, iters))
    });
    g.bench_function("fsync_per_append", |b| {
        b.iter_custom(|iters| writers_fsync_mutex(&bytes, iters))
    });
    // The same appends from one thread: the baseline of `benches/log.rs` and
    // `benches/interleaved.rs`, without 64 threads queueing on a mutex.
    g.bench_function("fsync_per_append_1_thread", |b| {
        b.iter_custom(|iters| plain_writes(&bytes, iters, true))
    });
    g.bench_function("okaywal", |b| {
        b.iter_custom(|iters| writers_okaywal(&values, iters))
    });
    g.bench_function("raft_engine", |b| {
        b.iter_custom(|iters| writers_raft_engine(&values, iters))
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// Interleaved A/B of the two durable workloads

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Rounds of the interleaved section: `$STRATALOG_PEERS_ROUNDS` if set (0 skips it), else 9
/// under `cargo bench` and 1 tiny round under `cargo test`.
fn interleaved_rounds() -> usize {
    match std::env::var("STRATALOG_PEERS_ROUNDS") {
        Ok(v) => v.parse().expect("STRATALOG_PEERS_ROUNDS must be a number"),
        Err(_) if full_run() => 9,
        Err(_) => 1,
    }
}

/// A name, the operations it runs per round, and what runs (and times) that many.
type Contender<'a> = (&'a str, u64, &'a mut dyn FnMut(u64) -> Duration);

/// Runs each contender once per round, back to back, and prints per contender the median time
/// per operation and the median over rounds of `contender time / stratalog time` (how many
/// times faster stratalog was in that round; the first contender is stratalog itself).
fn interleave(workload: &str, rounds: usize, contenders: &mut [Contender<'_>]) {
    let n = contenders.len();
    let mut per_op: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut ratio: Vec<Vec<f64>> = vec![Vec::new(); n];
    for _ in 0..rounds {
        let times: Vec<f64> = contenders
            .iter_mut()
            .map(|(_, ops, run)| run(*ops).as_secs_f64() / *ops as f64)
            .collect();
        for i in 0..n {
            per_op[i].push(times[i]);
            ratio[i].push(times[i] / times[0]);
        }
    }
    for (i, (name, ops, _)) in contenders.iter().enumerate() {
        println!(
            "interleaved {workload:<18} {name:<28} {ops:>6} ops/round {:>10.1} us/op   stratalog {:>6.2}x",
            median(per_op[i].clone()) * 1e6,
            median(ratio[i].clone())
        );
    }
}

/// The durable workloads again, every contender back to back in each round: on this kind of
/// VM the fsync latency drifts by 50% or more between criterion's benchmarks, minutes apart.
fn interleaved_durable() {
    let rounds = interleaved_rounds();
    if rounds == 0 {
        return;
    }
    let full = full_run();
    println!(
        "interleaved A/B, {rounds} rounds; per contender: median time per op and median of the \
         per-round ratio contender time / stratalog time (higher = stratalog faster)"
    );
    let values_group = values(GROUP_RECORDS);
    let builder = stratalog_batch(&values_group);
    let bytes = encoded(&builder);
    let mut entries = raft_entries(&values_group);
    let groups = if full { 40 } else { 2 };
    interleave(
        "batched_append_1k",
        rounds,
        &mut [
            ("stratalog", groups, &mut |n| batched_stratalog(&builder, n)),
            ("plain_file", groups, &mut |n| plain_writes(&bytes, n, true)),
            ("okaywal", groups, &mut |n| {
                batched_okaywal(&values_group, n)
            }),
            ("raft_engine", groups, &mut |n| {
                batched_raft_engine(&mut entries, n)
            }),
        ],
    );

    let value = values(1);
    let builder = stratalog_batch(&value);
    let bytes = encoded(&builder);
    // Enough appends for every writer to do many; the slow one-fsync-each contenders do fewer
    // (their time per append does not depend on the count).
    let (many, few) = if full { (64 * 40, 400) } else { (64, 8) };
    interleave(
        "durable_writers_64",
        rounds,
        &mut [
            ("stratalog", many, &mut |n| writers_stratalog(&builder, n)),
            ("fsync_per_append", few, &mut |n| {
                writers_fsync_mutex(&bytes, n)
            }),
            ("fsync_per_append_1_thread", few, &mut |n| {
                plain_writes(&bytes, n, true)
            }),
            ("okaywal", few * 2, &mut |n| writers_okaywal(&value, n)),
            ("raft_engine", many, &mut |n| writers_raft_engine(&value, n)),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// sequential_read

struct StratalogFixture {
    _dir: TempDir,
    log: Log,
    end: u64,
}

struct CommitlogFixture {
    _dir: TempDir,
    log: CommitLog,
    end: u64,
}

struct RaftFixture {
    _dir: TempDir,
    engine: Engine,
    /// One past the last entry index.
    end: u64,
}

/// Every record visited with [`stratalog::Batch::for_each_record`] (borrowed records).
fn stratalog_read_all(log: &Log, end: u64) -> usize {
    let (mut from, mut sum) = (0, 0);
    while from < end {
        let batches = log.read(from, READ_CHUNK).expect("read");
        for batch in &batches {
            batch
                .for_each_record(|r| {
                    sum += r.value.len();
                    Ok::<(), stratalog::FormatError>(())
                })
                .expect("records");
        }
        from = batches.last().expect("a batch").last_offset() + 1;
    }
    sum
}

/// The same with [`stratalog::Batch::records`] (a `RecordView` of shared `Bytes` per record).
fn stratalog_read_all_views(log: &Log, end: u64) -> usize {
    let (mut from, mut sum) = (0, 0);
    while from < end {
        let batches = log.read(from, READ_CHUNK).expect("read");
        for batch in &batches {
            for record in batch.records().expect("records") {
                sum += record.expect("record").value.len();
            }
        }
        from = batches.last().expect("a batch").last_offset() + 1;
    }
    sum
}

fn commitlog_read_all(log: &CommitLog, end: u64) -> usize {
    let (mut from, mut sum) = (0, 0);
    while from < end {
        let buf = log
            .read(from, ReadLimit::max_bytes(READ_CHUNK))
            .expect("read");
        let mut last = None;
        for m in buf.iter() {
            sum += m.payload().len();
            last = Some(m.offset());
        }
        from = last.expect("a message") + 1;
    }
    sum
}

fn raft_read_all(engine: &Engine, end: u64, out: &mut Vec<BytesValue>) -> usize {
    let (mut from, mut sum) = (1, 0);
    while from < end {
        out.clear();
        engine
            .fetch_entries_to::<Entries>(1, from, end, Some(READ_CHUNK), out)
            .expect("fetch entries");
        sum += out.iter().map(|e| e.value.len()).sum::<usize>();
        from += out.len() as u64;
    }
    sum
}

fn bench_sequential_read(c: &mut Criterion) {
    let mut g = configure(c, "sequential_read");
    let total = read_bytes();
    let appends = total / (READ_BATCH_RECORDS * VALUE_BYTES);
    let values = values(READ_BATCH_RECORDS);
    g.throughput(Throughput::Bytes(total as u64));
    let check = |name: &str, sum: usize| {
        assert_eq!(
            sum, total,
            "{name} read back {sum} value bytes, not {total}"
        );
    };

    let fixture = OnceCell::new();
    let fixture = || {
        fixture.get_or_init(|| {
            let dir = scratch();
            let log = open_stratalog(dir.path(), FsyncPolicy::Never);
            let builder = stratalog_batch(&values);
            for _ in 0..appends {
                stratalog_append(&log, &builder);
            }
            log.flush().expect("flush");
            let end = log.end_offset();
            check("stratalog", stratalog_read_all(&log, end));
            StratalogFixture {
                _dir: dir,
                log,
                end,
            }
        })
    };
    g.bench_function("stratalog", |b| {
        let f = fixture();
        b.iter(|| black_box(stratalog_read_all(&f.log, f.end)))
    });

    let fixture = OnceCell::new();
    let fixture = || {
        fixture.get_or_init(|| {
            let dir = scratch();
            let mut log = open_commitlog(dir.path());
            let mut buf = commitlog_buf(&values);
            for _ in 0..appends {
                log.append(&mut buf).expect("append");
            }
            log.flush().expect("flush");
            let end = log.next_offset();
            check("commitlog", commitlog_read_all(&log, end));
            CommitlogFixture {
                _dir: dir,
                log,
                end,
            }
        })
    };
    g.bench_function("commitlog", |b| {
        let f = fixture();
        b.iter(|| black_box(commitlog_read_all(&f.log, f.end)))
    });

    let fixture = OnceCell::new();
    let fixture = || {
        fixture.get_or_init(|| {
            let dir = scratch();
            let engine = open_raft_engine(dir.path());
            let mut entries = raft_entries(&values);
            let mut next = 1;
            for _ in 0..appends {
                raft_write(&engine, 1, &mut entries, &mut next, false);
            }
            engine.sync().expect("sync");
            check("raft-engine", raft_read_all(&engine, next, &mut Vec::new()));
            RaftFixture {
                _dir: dir,
                engine,
                end: next,
            }
        })
    };
    g.bench_function("raft_engine", |b| {
        let f = fixture();
        let mut out = Vec::new();
        b.iter(|| black_box(raft_read_all(&f.engine, f.end, &mut out)))
    });

    g.bench_function("memcpy", |b| {
        let src: Vec<u8> = (0..total).map(|i| i as u8).collect();
        let mut dst = vec![0u8; total];
        b.iter(|| {
            dst.copy_from_slice(black_box(&src));
            black_box(&dst);
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// append_unsynced_1k

fn bench_append_unsynced(c: &mut Criterion) {
    let mut g = configure(c, "append_unsynced_1k");
    for records in [1usize, 64] {
        let values = values(records);
        let param = if records == 1 {
            "1_record".to_owned()
        } else {
            format!("{records}_records")
        };
        g.throughput(Throughput::Bytes((records * VALUE_BYTES) as u64));

        let builder = stratalog_batch(&values);
        g.bench_function(format!("stratalog/{param}"), |b| {
            b.iter_custom(|iters| {
                let dir = scratch();
                let log = open_stratalog(dir.path(), FsyncPolicy::Never);
                let start = Instant::now();
                for _ in 0..iters {
                    stratalog_append(&log, &builder);
                }
                let elapsed = start.elapsed();
                log.close().expect("close");
                elapsed
            })
        });

        let bytes = encoded(&builder);
        g.bench_function(format!("plain_file/{param}"), |b| {
            b.iter_custom(|iters| plain_writes(&bytes, iters, false))
        });

        let mut buf = commitlog_buf(&values);
        g.bench_function(format!("commitlog/{param}"), |b| {
            b.iter_custom(|iters| {
                let dir = scratch();
                let mut log = open_commitlog(dir.path());
                let start = Instant::now();
                for _ in 0..iters {
                    log.append(&mut buf).expect("append");
                }
                start.elapsed()
            })
        });

        let mut entries = raft_entries(&values);
        g.bench_function(format!("raft_engine/{param}"), |b| {
            b.iter_custom(|iters| {
                let dir = scratch();
                let engine = open_raft_engine(dir.path());
                let mut next = 1;
                let start = Instant::now();
                for _ in 0..iters {
                    raft_write(&engine, 1, &mut entries, &mut next, false);
                }
                let elapsed = start.elapsed();
                drop(engine);
                elapsed
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_batched_append,
    bench_durable_writers,
    bench_sequential_read,
    bench_append_unsynced
);
// ---------------------------------------------------------------------------------------------
// Interleaved A/B of the append rows of issue 15: unsynced appends of 128 B and 1 KiB values
// (1 and 64 records per append), and 16 and 64 durable writers with their latency percentiles.

/// `n` seeded incompressible values of `len` bytes (at least 8: raft-engine's entries keep
/// their index in the first 8).
fn sized_values(n: usize, len: usize) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(0x15A);
    (0..n)
        .map(|_| {
            let mut v = vec![0u8; len.max(8)];
            rng.fill_bytes(&mut v);
            v
        })
        .collect()
}

/// `iters` unsynced appends of `builder` (or, with `borrowed`, of its values through
/// `Log::append_records`, which frames borrowed values through `Log::append_values`) into a
/// fresh log; opening and closing are not timed.
fn unsynced_stratalog(
    builder: &BatchBuilder,
    vals: &[Vec<u8>],
    borrowed: bool,
    iters: u64,
) -> Duration {
    let dir = scratch();
    let log = open_stratalog(dir.path(), FsyncPolicy::Never);
    let start = Instant::now();
    for _ in 0..iters {
        let appended = if borrowed {
            log.append_records(vals)
        } else {
            log.append(builder)
        };
        appended.expect("append").receipt.wait().expect("receipt");
    }
    let elapsed = start.elapsed();
    log.close().expect("close");
    elapsed
}

fn unsynced_raft_engine(entries: &mut [BytesValue], iters: u64) -> Duration {
    let dir = scratch();
    let engine = open_raft_engine(dir.path());
    let mut next = 1;
    let start = Instant::now();
    for _ in 0..iters {
        raft_write(&engine, 1, entries, &mut next, false);
    }
    let elapsed = start.elapsed();
    drop(engine);
    elapsed
}

fn interleaved_unsynced(rounds: usize, full: bool) {
    for (len, records) in [(128, 1), (128, 64), (1024, 1), (1024, 64)] {
        let vals = sized_values(records, len);
        let builder = stratalog_batch(&vals);
        let bytes = encoded(&builder);
        let mut entries = raft_entries(&vals);
        // About 16 MiB (full) or 64 KiB (test) of values per contender and round.
        let n = ((if full { 16 * MIB } else { 64 * KIB }) / (len * records)).max(1) as u64;
        interleave(
            &format!("unsynced_{len}B_x{records}"),
            rounds,
            &mut [
                ("stratalog", n, &mut |n| {
                    unsynced_stratalog(&builder, &vals, false, n)
                }),
                ("stratalog_append_records", n, &mut |n| {
                    unsynced_stratalog(&builder, &vals, true, n)
                }),
                ("plain_file", n, &mut |n| plain_writes(&bytes, n, false)),
                ("raft_engine", n, &mut |n| {
                    unsynced_raft_engine(&mut entries, n)
                }),
            ],
        );
    }
}

/// `writers` threads sharing out `iters` appends, each timed; returns the elapsed time and
/// every append's latency.
fn timed_writers<'a, F>(writers: u64, iters: u64, append: F) -> (Duration, Vec<Duration>)
where
    F: Fn(u64) -> Box<dyn FnMut() + 'a> + Sync,
{
    let barrier = Barrier::new(writers as usize + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|i| {
                let n = iters / writers + u64::from(i < iters % writers);
                let (barrier, append) = (&barrier, &append);
                s.spawn(move || {
                    let mut one = append(i);
                    let mut lat = Vec::with_capacity(n as usize);
                    barrier.wait();
                    for _ in 0..n {
                        let t = Instant::now();
                        one();
                        lat.push(t.elapsed());
                    }
                    lat
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut lat = Vec::new();
        for h in handles {
            lat.extend(h.join().expect("writer thread"));
        }
        (start.elapsed(), lat)
    })
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// 16 and 64 durable writers of one 1 KiB record each, stratalog and raft-engine back to back
/// in every round: the median per-round ratio of time per append, and of p99 latency.
fn interleaved_durable_latency(rounds: usize, full: bool) {
    let value = values(1);
    let builder = stratalog_batch(&value);
    for writers in [16u64, 64] {
        let n = if full { writers * 40 } else { writers };
        let mut per_op = [Vec::new(), Vec::new()];
        let mut p50 = [Vec::new(), Vec::new()];
        let mut p99 = [Vec::new(), Vec::new()];
        let mut ratio_op = Vec::new();
        let mut ratio_p99 = Vec::new();
        for _ in 0..rounds {
            let dir = scratch();
            let log = open_stratalog(dir.path(), FsyncPolicy::Always);
            let ours = timed_writers(writers, n, |_| {
                Box::new(|| stratalog_append(&log, &builder))
            });
            log.close().expect("close");
            let dir = scratch();
            let engine = open_raft_engine(dir.path());
            let theirs = timed_writers(writers, n, |thread| {
                let mut entries = raft_entries(&value);
                let mut next = 1;
                let engine = &engine;
                Box::new(move || raft_write(engine, thread + 1, &mut entries, &mut next, true))
            });
            drop(engine);
            for (i, (elapsed, mut lat)) in [ours, theirs].into_iter().enumerate() {
                lat.sort();
                per_op[i].push(elapsed.as_secs_f64() / n as f64);
                p50[i].push(percentile(&lat, 0.5).as_secs_f64());
                p99[i].push(percentile(&lat, 0.99).as_secs_f64());
            }
            let r = per_op[1].len() - 1;
            ratio_op.push(per_op[1][r] / per_op[0][r]);
            ratio_p99.push(p99[1][r] / p99[0][r]);
        }
        for (i, name) in ["stratalog", "raft_engine"].iter().enumerate() {
            println!(
                "interleaved durable_writers_{writers:<3} {name:<12} {:>8.1} us/op  p50 {:>8.1} us  p99 {:>8.1} us (medians over rounds)",
                median(per_op[i].clone()) * 1e6,
                median(p50[i].clone()) * 1e6,
                median(p99[i].clone()) * 1e6,
            );
        }
        println!(
            "interleaved durable_writers_{writers:<3} raft_engine / stratalog: time per append {:.2}x, p99 {:.2}x (median per-round ratios; higher = stratalog better)",
            median(ratio_op),
            median(ratio_p99),
        );
    }
}

/// The interleaved rows of issue 15 (`STRATALOG_PEERS_ROUNDS` rounds, as the durable ones).
fn interleaved_appends() {
    let rounds = interleaved_rounds();
    if rounds == 0 {
        return;
    }
    let full = full_run();
    println!("interleaved A/B of the append rows (issue 15), {rounds} rounds");
    interleaved_unsynced(rounds, full);
    interleaved_durable_latency(rounds, full);
}

fn main() {
    benches();
    // `$STRATALOG_PEERS_SECTIONS` (e.g. `reads`) picks the interleaved sections to run:
    // `durable`, `appends`, `reads`.
    let sections = std::env::var("STRATALOG_PEERS_SECTIONS").unwrap_or_default();
    let wanted = |s: &str| sections.is_empty() || sections.split(',').any(|w| w == s);
    if wanted("durable") {
        interleaved_durable();
    }
    if wanted("appends") {
        interleaved_appends();
    }
    if wanted("reads") {
        interleaved_reads();
    }
    Criterion::default().configure_from_args().final_summary();
}

// ---------------------------------------------------------------------------------------------
// Interleaved reads (issue 15): scans against a plain file read of the same bytes, and the
// first read of a record in a freshly opened log against raft-engine's

/// The read fixtures of the interleaved section: a closed stratalog log, a plain file holding
/// the same bytes as its segment file, and a closed raft-engine directory with the same values.
struct ReadFixtures {
    _dir: TempDir,
    log_dir: PathBuf,
    plain: PathBuf,
    raft_dir: PathBuf,
    /// One past stratalog's last offset; raft-engine's entries are `1..=records`.
    records: u64,
}

fn read_fixtures(total: usize) -> ReadFixtures {
    let dir = scratch();
    let log_dir = dir.path().join("log");
    let raft_dir = dir.path().join("raft");
    let plain = dir.path().join("plain.file");
    let values = values(READ_BATCH_RECORDS);
    let appends = total / (READ_BATCH_RECORDS * VALUE_BYTES);
    let log = open_stratalog(&log_dir, FsyncPolicy::Never);
    let builder = stratalog_batch(&values);
    for _ in 0..appends {
        stratalog_append(&log, &builder);
    }
    let records = log.end_offset();
    log.close().expect("close");
    // The plain file: the segment's batches, byte for byte (without the preallocated tail).
    let mut segment = Vec::new();
    for entry in fs::read_dir(&log_dir).expect("list the log") {
        let path = entry.expect("a log entry").path();
        if path.extension().is_some_and(|e| e == "log") {
            segment = fs::read(&path).expect("read the segment");
        }
    }
    fs::write(&plain, &segment).expect("write the plain file");
    let engine = open_raft_engine(&raft_dir);
    let mut entries = raft_entries(&values);
    let mut next = 1;
    for _ in 0..appends {
        raft_write(&engine, 1, &mut entries, &mut next, false);
    }
    engine.sync().expect("sync");
    drop(engine);
    ReadFixtures {
        _dir: dir,
        log_dir,
        plain,
        raft_dir,
        records,
    }
}

/// The whole plain file read with `read` into one reused buffer, every byte copied out once.
fn plain_read_all(path: &Path, buf: &mut [u8]) -> usize {
    use std::io::Read;
    let mut file = File::open(path).expect("open the plain file");
    let mut n = 0;
    loop {
        match file.read(buf).expect("read the plain file") {
            0 => return n,
            k => n += black_box(&buf[..k]).len(),
        }
    }
}

/// CPU time the calling thread has used so far (it leaves out time spent waiting for a CPU).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and the clock id is a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Percentile `p` (0..=100) of `v`, sorted in place.
fn percentile_of(v: &mut [f64], p: usize) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(v.len() - 1) * p / 100]
}

/// Interleaved rounds of reads: (1) a scan of a freshly opened log (every batch CRC-checked on
/// its first read), records visited borrowed (`for_each_record`); (2) the same with
/// `records()` (a `RecordView` per record); (3) a second scan in the same open (batches already
/// checked); (4) a plain file read of the same bytes. Then the first read of one record in a
/// batch never read since the open, stratalog (`read_one` on a log just opened) against
/// raft-engine (`get_entry` on an engine just opened): per round, the p50 and p99 over the
/// reads, and the medians of those over rounds.
fn interleaved_reads() {
    let rounds = interleaved_rounds();
    if rounds == 0 {
        return;
    }
    let full = full_run();
    let total = read_bytes();
    let f = read_fixtures(total);
    let batches = f.records / READ_BATCH_RECORDS as u64;
    let mut buf = vec![0u8; READ_CHUNK];
    let opts = || LogOptions {
        fsync: FsyncPolicy::Never,
        ..LogOptions::default()
    };
    let expect = total;
    let check = |name: &str, sum: usize| assert_eq!(sum, expect, "{name} read back {sum} bytes");
    let plain_len = fs::metadata(&f.plain).expect("the plain file").len() as usize;
    let (mut cpu_fresh, mut cpu_plain) = (Vec::new(), Vec::new());
    interleave(
        "sequential_read",
        rounds,
        &mut [
            ("stratalog_fresh_open", 1, &mut |_| {
                let log = Log::open(&f.log_dir, opts()).expect("open");
                let (t, cpu) = (Instant::now(), thread_cpu());
                let sum = stratalog_read_all(&log, f.records);
                let elapsed = t.elapsed();
                cpu_fresh.push((thread_cpu() - cpu).as_secs_f64());
                check("stratalog", sum);
                log.close().expect("close");
                elapsed
            }),
            ("stratalog_fresh_open_views", 1, &mut |_| {
                let log = Log::open(&f.log_dir, opts()).expect("open");
                let t = Instant::now();
                let sum = stratalog_read_all_views(&log, f.records);
                let elapsed = t.elapsed();
                check("stratalog", sum);
                log.close().expect("close");
                elapsed
            }),
            ("stratalog_second_scan", 1, &mut |_| {
                let log = Log::open(&f.log_dir, opts()).expect("open");
                check("stratalog", stratalog_read_all(&log, f.records));
                let t = Instant::now();
                let sum = stratalog_read_all(&log, f.records);
                let elapsed = t.elapsed();
                check("stratalog", sum);
                log.close().expect("close");
                elapsed
            }),
            ("plain_file_read", 1, &mut |_| {
                let (t, cpu) = (Instant::now(), thread_cpu());
                let n = plain_read_all(&f.plain, &mut buf);
                let elapsed = t.elapsed();
                cpu_plain.push((thread_cpu() - cpu).as_secs_f64());
                assert_eq!(n, plain_len, "plain file length");
                elapsed
            }),
        ],
    );

    println!(
        "interleaved sequential_read    thread CPU time, median: stratalog_fresh_open {:.1} us, plain_file_read {:.1} us",
        median(cpu_fresh) * 1e6,
        median(cpu_plain) * 1e6
    );

    // First reads: in each round a fresh open, then one record in each of `k` distinct batches
    // (a random record of a random batch, never read since the open), each read timed.
    let k = if full { 1000.min(batches as usize) } else { 4 };
    let mut rng = StdRng::seed_from_u64(0x15);
    let (mut ours_p50, mut ours_p99, mut raft_p50, mut raft_p99, mut ratio99) =
        (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        let mut picks: Vec<u64> = (0..batches).collect();
        for i in 0..k {
            let j = i + (rng.next_u64() % (batches - i as u64)) as usize;
            picks.swap(i, j);
        }
        let offsets: Vec<u64> = picks[..k]
            .iter()
            .map(|b| b * READ_BATCH_RECORDS as u64 + rng.next_u64() % READ_BATCH_RECORDS as u64)
            .collect();

        let log = Log::open(&f.log_dir, opts()).expect("open");
        let mut ours: Vec<f64> = offsets
            .iter()
            .map(|&o| {
                let t = Instant::now();
                let r = log.read_one(o).expect("read one");
                let e = t.elapsed();
                assert_eq!(r.value.len(), VALUE_BYTES);
                e.as_secs_f64()
            })
            .collect();
        log.close().expect("close");

        let engine = open_raft_engine(&f.raft_dir);
        let mut theirs: Vec<f64> = offsets
            .iter()
            .map(|&o| {
                let t = Instant::now();
                let e = engine
                    .get_entry::<Entries>(1, o + 1)
                    .expect("get entry")
                    .expect("an entry");
                let took = t.elapsed();
                assert_eq!(Entries::index(&e), o + 1);
                took.as_secs_f64()
            })
            .collect();
        drop(engine);
        let (o99, t99) = (percentile_of(&mut ours, 99), percentile_of(&mut theirs, 99));
        ours_p50.push(percentile_of(&mut ours, 50));
        raft_p50.push(percentile_of(&mut theirs, 50));
        ours_p99.push(o99);
        raft_p99.push(t99);
        ratio99.push(t99 / o99);
    }
    println!(
        "interleaved first_read_fresh_open  stratalog p50 {:>7.1} us p99 {:>7.1} us   raft_engine p50 {:>7.1} us p99 {:>7.1} us   raft/stratalog p99 {:>5.2}x ({k} reads/round)",
        median(ours_p50) * 1e6,
        median(ours_p99) * 1e6,
        median(raft_p50) * 1e6,
        median(raft_p99) * 1e6,
        median(ratio99),
    );
}
