//! Interleaved A/B measurement of durable appends, for a noisy shared disk.
//!
//! Criterion measures one variant after another, minutes apart; on a shared VM the fsync latency
//! drifts by 50% or more in that time, which swamps the difference between variants. Here every
//! round runs each variant back to back (stratalog with the leading writer, stratalog with the
//! flusher thread, and the plain-file baseline on the same bytes), and the figure reported is
//! the median over rounds of the per-round ratio `baseline time / stratalog time`.
//!
//! `cargo bench --bench interleaved` runs 15 rounds; `cargo test` runs 2 tiny rounds so that it
//! cannot rot.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use stratalog::{BatchBuilder, Compression, FsyncPolicy, GroupCommit, Log, LogOptions};

fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn batch(value_bytes: usize, records: usize) -> BatchBuilder {
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..records {
        b.push_value(i as i64, &vec![b'v'; value_bytes]).unwrap();
    }
    b
}

fn open(dir: &Path, group_commit: GroupCommit) -> Log {
    let options = LogOptions {
        fsync: FsyncPolicy::Always,
        group_commit,
        ..LogOptions::default()
    };
    Log::open(dir, options).expect("open the log")
}

/// `threads` writers, `per_thread` durable appends each; returns the elapsed time.
fn stratalog(
    dir: &Path,
    mode: GroupCommit,
    b: &BatchBuilder,
    threads: usize,
    per_thread: usize,
) -> Duration {
    let log = open(dir, mode);
    let barrier = Barrier::new(threads + 1);
    let start = std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                barrier.wait();
                for _ in 0..per_thread {
                    log.append(b).unwrap().receipt.wait().unwrap();
                }
            });
        }
        barrier.wait();
        Instant::now()
    }); // the scope returns once every writer is done
    let elapsed = start.elapsed();
    log.close().expect("close");
    elapsed
}

/// The baseline: the same total number of appends of the same bytes from one thread, each with
/// its own `write` + `sync_data` (what a writer without group commit does).
fn plain(dir: &Path, bytes: usize, appends: usize) -> Duration {
    let mut file = File::create(dir.join("plain.log")).unwrap();
    let buf = vec![b'p'; bytes];
    let start = Instant::now();
    for _ in 0..appends {
        file.write_all(&buf).unwrap();
        file.sync_data().unwrap();
    }
    start.elapsed()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let full = full_run();
    let rounds = if full { 15 } else { 2 };
    let base = std::env::var_os("STRATALOG_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    println!(
        "interleaved A/B, {rounds} rounds, median of per-round ratios (baseline time / stratalog time; higher is better)"
    );
    println!(
        "{:<44} {:>8} {:>8} {:>12}",
        "workload", "leader", "flusher", "baseline/op"
    );
    // (name, value bytes, records per batch, writers, appends per writer)
    let workloads: &[(&str, usize, usize, usize, usize)] = &[
        (
            "64 KiB batches of 1 KiB records, 1 writer",
            1024,
            64,
            1,
            if full { 40 } else { 3 },
        ),
        (
            "64 KiB batches of 128 B records, 1 writer",
            128,
            512,
            1,
            if full { 40 } else { 3 },
        ),
        (
            "one 1 KiB record, 1 writer",
            1024,
            1,
            1,
            if full { 200 } else { 5 },
        ),
        (
            "one 1 KiB record, 16 writers",
            1024,
            1,
            16,
            if full { 100 } else { 2 },
        ),
        (
            "one 1 KiB record, 64 writers",
            1024,
            1,
            64,
            if full { 50 } else { 2 },
        ),
    ];
    for &(name, value, records, threads, per_thread) in workloads {
        let b = batch(value, records);
        let bytes = b.encode(0).unwrap().as_bytes().len();
        let (mut leader, mut flusher, mut base_ns) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let tmp = tempfile::tempdir_in(&base).unwrap();
            let l = stratalog(
                &tmp.path().join("leader"),
                GroupCommit::Leader,
                &b,
                threads,
                per_thread,
            );
            let f = stratalog(
                &tmp.path().join("flusher"),
                GroupCommit::Flusher,
                &b,
                threads,
                per_thread,
            );
            let appends = threads * per_thread;
            // The baseline does one fsync per append: cap its count so that a round stays short,
            // and scale its time to the same number of appends.
            let plain_appends = appends.min(200);
            let p = plain(tmp.path(), bytes, plain_appends).as_secs_f64() * appends as f64
                / plain_appends as f64;
            leader.push(p / l.as_secs_f64());
            flusher.push(p / f.as_secs_f64());
            base_ns.push(p / appends as f64 * 1e6);
        }
        println!(
            "{name:<44} {:>7.2}x {:>7.2}x {:>10.1}us",
            median(leader),
            median(flusher),
            median(base_ns)
        );
    }
}
