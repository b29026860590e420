//! `stratalog bench`: what the engine does on this machine, next to what the machine can do.
//!
//! Every figure is measured in the same run as the baseline it is compared with (a plain file
//! written with `write` + `sync_data`, the disk's fsync latency, a memory copy, one fsync per
//! append), and printed with its ratio to that baseline, named. Each step runs for a share of a time budget, not a fixed count, so the
//! whole command takes about a minute by default (`--seconds`) whatever the disk.
//!
//! The replication rows (also alone, with `--replication-only`) compare a follower catching up
//! over 127.0.0.1 with loopback TCP and the disk moving the same bytes, the leader's CPU per
//! replicated byte with the loopback sender's, and `acks=all` with one follower with a single
//! node (docs/BENCHMARKS.md, "Replication"), and the failover time: a leader `serve` process
//! SIGKILLed under an `acks=all` producer, the follower promoted, until the first write the new
//! leader acknowledged.

use std::fs::{self, File};
use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use stratalog::replication::node::{Node, NodeOptions};
use stratalog::replication::transport::Client;
use stratalog::replication::{Acks, ErrorCode, Message, PartitionStatus};
use stratalog::storage::{IoEngine, Storage, real_storage};
use stratalog::{
    BatchBuilder, Compression, FsyncPolicy, Log, LogConfig, LogOptions, PartitionerKind,
    Preallocate, Store, StoreOptions, TopicConfig,
};

use super::{CliError, context, outln};

/// `stratalog bench`: its command line is its options.
#[derive(Debug, Args)]
pub struct Options {
    /// Directory on the disk to measure (a temporary directory is made inside it, and
    /// removed at the end, or on SIGINT/SIGTERM, after which bench exits 130).
    #[arg(short = 'd', long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The write path: `std` (pwrite + fdatasync) or `uring` (io_uring).
    #[arg(long, value_name = "ENGINE", default_value = "std")]
    pub io: IoEngine,
    /// About how long the whole run takes, in seconds (more than 0, at most 86400).
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub seconds: f64,
    /// Also write the figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Where to write the plot (default `stratalog-bench.svg` in the current directory).
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Also run the write workloads on the std and the io_uring path alternately, round by
    /// round, and print io_uring's median per-round ratio to std.
    #[arg(long)]
    pub compare_io: bool,
    /// How segments are extended ahead of the writer: `auto` (zeros while fsyncs are small,
    /// `fallocate` otherwise), `zeros` (written and fsynced in the background), `fallocate`
    /// or `off`.
    #[arg(long, value_name = "MODE", default_value = "auto")]
    pub prealloc: Preallocate,
    /// Also run the write workloads with each preallocation alternately, round by round, and
    /// print each one's median per-round ratio to `off`.
    #[arg(long)]
    pub compare_prealloc: bool,
    /// Run only the replication rows (a follower catching up over 127.0.0.1 against loopback
    /// TCP and the disk, `acks=all` with one follower against a single node, the leader's CPU
    /// per replicated byte, the failover time from a leader's SIGKILL to the first write the
    /// promoted follower acknowledged), on the whole `--seconds` budget; no plot is written.
    #[arg(long, conflicts_with_all = ["compare_io", "compare_prealloc"])]
    pub replication_only: bool,
}

/// The largest `--seconds`: a day.
const MAX_SECONDS: f64 = 86_400.0;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// Writer counts of the durable-append steps.
const WRITERS: [usize; 4] = [1, 4, 16, 64];

/// One line of the table.
struct Row {
    name: String,
    value: f64,
    unit: &'static str,
    /// The limit it is compared with, and its value in the same unit.
    bound: Option<(String, f64)>,
    /// True if smaller is better (latencies): the ratio is then bound / value.
    lower_is_better: bool,
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        let (_, bound) = self.bound.as_ref()?;
        Some(if self.lower_is_better {
            bound / self.value
        } else {
            self.value / bound
        })
    }
}

/// Durable appends from many writers.
#[derive(Debug, Clone, Copy)]
struct WriterPoint {
    writers: usize,
    per_sec: f64,
    p50: Duration,
    p99: Duration,
    p999: Duration,
}

struct Bench {
    root: PathBuf,
    storage: Arc<dyn Storage>,
    prealloc: Preallocate,
    budget: Duration,
    progress: ProgressBar,
    rows: Vec<Row>,
}

/// Runs `bench`.
pub fn run(o: Options) -> Result<(), CliError> {
    if !(o.seconds.is_finite() && o.seconds > 0.0 && o.seconds <= MAX_SECONDS) {
        return Err(format!(
            "--seconds must be a number of seconds above 0 and at most {MAX_SECONDS} (a day), not {}",
            o.seconds
        )
        .into());
    }
    // Before any other thread starts (so that they all leave the signals to it), and before
    // the scratch directory exists: a signal then removes whatever was made of it.
    let scratch_path: Arc<OnceLock<PathBuf>> = Arc::new(OnceLock::new());
    let to_remove = scratch_path.clone();
    super::on_interrupt(move |signal| remove_scratch_and_exit(signal, to_remove.get()))
        .map_err(context("cannot set up the SIGINT/SIGTERM handler"))?;
    let parent = o.dir.clone().unwrap_or_else(std::env::temp_dir);
    fs::create_dir_all(&parent).map_err(context(format!("cannot create {}", parent.display())))?;
    let scratch = tempfile::Builder::new()
        .prefix("stratalog-bench-")
        .tempdir_in(&parent)
        .map_err(context(format!(
            "cannot make a scratch directory in {}",
            parent.display()
        )))?;
    let _ = scratch_path.set(scratch.path().to_path_buf());
    let (storage, io) = real_storage(o.io);
    let steps = if o.replication_only {
        REPLICATION_STEPS
    } else {
        12 + WRITERS.len() as u64
            + REPLICATION_STEPS
            + COMPARE_ROUNDS * (u64::from(o.compare_io) + u64::from(o.compare_prealloc))
    };
    let progress = ProgressBar::new(steps);
    progress.set_style(
        ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let mut b = Bench {
        root: scratch.path().to_path_buf(),
        storage,
        prealloc: o.prealloc,
        // Shared by the steps, in proportion to how much each one needs to settle (the
        // replication rows take `REPLICATION_UNITS` of them).
        budget: Duration::from_secs_f64(if o.replication_only {
            o.seconds / REPLICATION_UNITS
        } else {
            o.seconds / (20.0 + REPLICATION_UNITS)
        }),
        progress,
        rows: Vec::new(),
    };
    let outcome = if o.replication_only {
        b.replication().map(|()| {
            let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
            (Vec::new(), json!({ "cpus": cpus }))
        })
    } else {
        b.all()
    };
    let outcome = outcome.and_then(|out| {
        if o.replication_only {
            return Ok(out);
        }
        b.replication()?;
        if o.compare_io {
            b.compare_engines()?;
        }
        if o.compare_prealloc {
            b.compare_prealloc()?;
        }
        Ok(out)
    });
    b.progress.finish_and_clear();
    let (writers, machine) = outcome?;
    print_table(&b.rows, io, &parent)?;
    let figures = json!({
        "io_engine": format!("{io:?}"),
        "preallocate": format!("{:?}", o.prealloc),
        "dir": parent.display().to_string(),
        "budget_seconds": o.seconds,
        "machine": machine,
        "rows": b.rows.iter().map(|r| json!({
            "name": r.name,
            "value": r.value,
            "unit": r.unit,
            "bound": r.bound.as_ref().map(|(n, _)| n.clone()),
            "bound_value": r.bound.as_ref().map(|(_, v)| *v),
            "ratio": r.ratio(),
        })).collect::<Vec<_>>(),
        "writers": writers.iter().map(|p| json!({
            "writers": p.writers,
            "appends_per_sec": p.per_sec,
            "p50_us": micros(p.p50),
            "p99_us": micros(p.p99),
            "p999_us": micros(p.p999),
        })).collect::<Vec<_>>(),
    });
    if let Some(path) = &o.json {
        let text = serde_json::to_string_pretty(&figures).expect("JSON of plain values");
        fs::write(path, text + "\n")
            .map_err(context(format!("cannot write {}", path.display())))?;
        outln!("figures written to {}", path.display());
    }
    if !writers.is_empty() {
        let svg = o
            .svg
            .clone()
            .unwrap_or_else(|| PathBuf::from("stratalog-bench.svg"));
        write_svg(
            &svg,
            &writers,
            machine["fsync_p50_us"].as_f64().unwrap_or(0.0),
        )
        .map_err(context(format!("cannot write the plot {}", svg.display())))?;
        outln!(
            "plot of appends/s and latency against writers written to {}",
            svg.display()
        );
    }
    scratch
        .close()
        .map_err(context("cannot remove the scratch directory"))?;
    Ok(())
}

/// On SIGINT or SIGTERM: removes the scratch directory (while the steps may still be writing
/// into it, hence the retries) and exits 130.
fn remove_scratch_and_exit(signal: i32, scratch: Option<&PathBuf>) -> ! {
    let name = if signal == libc::SIGTERM {
        "SIGTERM"
    } else {
        "SIGINT"
    };
    if let Some(path) = scratch {
        let mut removed = Ok(());
        for _ in 0..50 {
            removed = match fs::remove_dir_all(path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            };
            if removed.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        match removed {
            Ok(()) => eprintln!(
                "\nstratalog bench: interrupted by {name}; removed the scratch directory {}",
                path.display()
            ),
            Err(e) => eprintln!(
                "\nerror: stratalog bench: interrupted by {name}; cannot remove the scratch directory {}: {e}; remove it by hand",
                path.display()
            ),
        }
    } else {
        eprintln!("\nstratalog bench: interrupted by {name}");
    }
    std::process::exit(130);
}

impl Bench {
    fn step(&self, what: &str) {
        self.progress.set_message(what.to_string());
        self.progress.tick();
    }

    fn done(&self) {
        self.progress.inc(1);
    }

    fn row(&mut self, name: impl Into<String>, value: f64, unit: &'static str) -> &mut Row {
        self.rows.push(Row {
            name: name.into(),
            value,
            unit,
            bound: None,
            lower_is_better: false,
        });
        self.rows.last_mut().expect("just pushed")
    }

    fn open(&self, name: &str, fsync: FsyncPolicy) -> Result<Log, CliError> {
        let dir = self.root.join(name);
        Log::open(
            &dir,
            LogOptions {
                config: LogConfig {
                    segment_bytes: 256 * MIB as u64,
                    ..LogConfig::default()
                },
                fsync,
                storage: self.storage.clone(),
                preallocate: self.prealloc,
                ..Default::default()
            },
        )
        .map_err(context(format!("cannot open a log in {}", dir.display())))
    }

    fn all(&mut self) -> Result<(Vec<WriterPoint>, Value), CliError> {
        // --- the machine's limits
        self.step("memory copy");
        let memcpy = memcpy_rate(self.budget);
        self.row("memory copy", memcpy / 1e6, "MB/s");
        self.done();

        self.step("disk fsync latency");
        let fsync = fsync_latency(&self.root.join("fsync.probe"), self.budget)?;
        let fsync_rate = 1.0 / fsync.mean.as_secs_f64();
        self.row(
            "fsync (1 KiB append + sync_data) p50",
            micros(fsync.p50),
            "us",
        );
        self.row(
            "fsync (1 KiB append + sync_data) p99",
            micros(fsync.p99),
            "us",
        );
        self.row("one fsync per append", fsync_rate, "appends/s");
        self.done();

        self.step("plain file: write + sync_data per MiB");
        let plain_path = self.root.join("plain.file");
        let plain = plain_rate(&plain_path, 64 * MIB, self.budget * 2)?;
        self.row("plain file, 1 MiB write + sync_data", plain / 1e6, "MB/s");
        self.done();

        for (size, name) in [(100, "100 B"), (KIB, "1 KiB")] {
            self.step(&format!(
                "produce --count: {name} records, fsync never, against a plain write"
            ));
            let batch = super::produce::count_batch(size);
            let f = produce_vs_write(self, self.budget, size, batch)?;
            let row = self.row(
                format!(
                    "produce --count ({name} records, default batch {batch}), fsync never, \
                     bytes written"
                ),
                f.produce / 1e6,
                "MB/s",
            );
            row.bound = Some((
                "plain write of the same bytes (the log's batches)".into(),
                f.write_batches / 1e6,
            ));
            self.row(
                format!("produce --count {name} / plain write of its batches, median"),
                f.median_batches,
                "x",
            );
            self.row(
                format!("produce --count {name} / plain write of its batches, CPU, median"),
                f.median_batches_cpu,
                "x",
            );
            self.row(
                format!("produce --count {name} / plain write of its values only, median"),
                f.median_values,
                "x",
            );
            self.row(
                format!("produce --count {name} / plain write of its values only, CPU, median"),
                f.median_values_cpu,
                "x",
            );
            self.row(
                format!("produce --count {name}: bytes written per byte of value"),
                f.overhead,
                "x",
            );
            self.done();
        }

        // --- stratalog appends
        let mut batched = Vec::new();
        for (size, name) in [(128, "batched128"), (KIB, "batched1k")] {
            self.step(&format!("durable 1 MiB batches of {size} B records"));
            let log = self.open(name, FsyncPolicy::Always)?;
            let rate = batched_rate(&log, size, 64 * MIB, self.budget * 2)?;
            let row = self.row(
                format!("append {size} B records, 1 MiB batch + fsync"),
                rate / 1e6,
                "MB/s",
            );
            row.bound = Some(("plain file".into(), plain / 1e6));
            batched.push(log);
            self.done();
        }

        let mut points = Vec::new();
        for &writers in &WRITERS {
            self.step(&format!("durable 1 KiB appends from {writers} threads"));
            let log = self.open(&format!("writers{writers}"), FsyncPolicy::Always)?;
            let point = durable_writers(&log, writers, None, self.budget * 2)?;
            log.close().map_err(context("closing a log failed"))?;
            let row = self.row(
                format!("{writers} durable writers, 1 KiB"),
                point.per_sec,
                "appends/s",
            );
            row.bound = Some(("one fsync per append".into(), fsync_rate));
            self.row(
                format!("{writers} writers p50 latency"),
                micros(point.p50),
                "us",
            );
            let row = self.row(
                format!("{writers} writers p99 latency"),
                micros(point.p99),
                "us",
            );
            row.bound = Some(("fsync p99".into(), micros(fsync.p99)));
            row.lower_is_better = true;
            self.row(
                format!("{writers} writers p99.9 latency"),
                micros(point.p999),
                "us",
            );
            points.push(point);
            self.done();
        }

        self.step("64 writers at half their peak rate");
        let peak = points.last().map_or(1.0, |p| p.per_sec);
        let log = self.open("paced", FsyncPolicy::Always)?;
        let paced = durable_writers(&log, 64, Some(peak / 2.0), self.budget * 2)?;
        log.close().map_err(context("closing a log failed"))?;
        let row = self.row(
            format!("64 writers at {:.0}/s (half peak) p99", paced.per_sec),
            micros(paced.p99),
            "us",
        );
        row.bound = Some(("fsync p99".into(), micros(fsync.p99)));
        row.lower_is_better = true;
        let row = self.row("64 writers at half peak p50", micros(paced.p50), "us");
        row.bound = Some(("fsync p50".into(), micros(fsync.p50)));
        row.lower_is_better = true;
        self.row("64 writers at half peak p99.9", micros(paced.p999), "us");
        self.done();

        // --- reads of the 1 KiB log (warm: just written)
        let log = batched.pop().expect("the 1 KiB log");
        drop(batched);
        self.step("sequential read");
        let seq = sequential_rate(&log, self.budget)?;
        self.row("sequential read, warm", seq / 1e6, "MB/s").bound =
            Some(("memory copy".into(), memcpy / 1e6));
        self.done();

        self.step("random read of one record");
        let random = random_reads(&log, self.budget)?;
        let pread = pread_latency(&plain_path, KIB, self.budget)?;
        let row = self.row("random read by offset p50", micros(random.p50), "us");
        row.bound = Some(("pread 1 KiB p50".into(), micros(pread.p50)));
        row.lower_is_better = true;
        self.row("random read by offset p99", micros(random.p99), "us");
        self.done();

        // --- reopen
        self.step("reopen after a clean close");
        let log_bytes = dir_bytes(&self.root.join("batched1k"));
        log.close().map_err(context("closing a log failed"))?;
        let clean = reopen_time(self, "batched1k")?;
        self.row(
            format!("reopen after clean close ({} MiB log)", log_bytes >> 20),
            millis(clean),
            "ms",
        );
        self.done();

        self.step("reopen after a crash");
        let (crash, scanned) = crash_reopen(self, 4 * MIB)?;
        let row = self.row(
            format!("reopen after crash ({} KiB unsynced tail)", scanned >> 10),
            scanned as f64 / crash.as_secs_f64() / 1e6,
            "MB/s scanned",
        );
        row.bound = Some(("memory copy".into(), memcpy / 1e6));
        self.row("reopen after crash", millis(crash), "ms");
        self.done();

        let machine = json!({
            "memcpy_bytes_per_sec": memcpy,
            "fsync_p50_us": micros(fsync.p50),
            "fsync_p99_us": micros(fsync.p99),
            "plain_write_sync_bytes_per_sec": plain,
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        });
        Ok((points, machine))
    }
}

/// Rounds of the `--compare-io` step; each runs every workload on both engines.
const COMPARE_ROUNDS: u64 = 4;

/// One side of a comparison: a write path and a preallocation.
struct Variant {
    name: String,
    storage: Arc<dyn Storage>,
    prealloc: Preallocate,
}

impl Bench {
    /// Runs the write workloads on the std and io_uring paths alternately (see `compare`).
    fn compare_engines(&mut self) -> Result<(), CliError> {
        let engines = [IoEngine::Std, IoEngine::IoUring].map(real_storage);
        if engines[1].1 != IoEngine::IoUring {
            return Err(
                "--compare-io: this kernel or build refused io_uring (see the warning)".into(),
            );
        }
        let variants = engines
            .into_iter()
            .map(|(storage, engine)| Variant {
                name: if engine == IoEngine::Std {
                    "std"
                } else {
                    "io_uring"
                }
                .into(),
                storage,
                prealloc: self.prealloc,
            })
            .collect();
        self.compare("io", variants)
    }

    /// Runs the write workloads with each preallocation (see `compare`), against none.
    fn compare_prealloc(&mut self) -> Result<(), CliError> {
        let variants = [
            Preallocate::Off,
            Preallocate::Fallocate,
            Preallocate::Zeros,
            Preallocate::Auto,
        ]
        .map(|prealloc| Variant {
            name: format!("prealloc {prealloc:?}").to_lowercase(),
            storage: self.storage.clone(),
            prealloc,
        });
        self.compare("prealloc", variants.into())
    }

    /// Runs the write workloads on each variant alternately, round by round (the disk's speed
    /// drifts, so two separate runs cannot be compared), and reports each later variant's
    /// median per-round ratio to the first one.
    fn compare(&mut self, what: &str, variants: Vec<Variant>) -> Result<(), CliError> {
        let (storage, prealloc) = (self.storage.clone(), self.prealloc);
        let budget = self.budget / variants.len() as u32;
        let workloads = [
            "1 MiB batches of 1 KiB, fsync each",
            "1 durable writer",
            "64 durable writers",
        ];
        let n = variants.len();
        let mut ratios = vec![vec![Vec::new(); n]; workloads.len()];
        let mut figures = vec![vec![0.0f64; n]; workloads.len()];
        for round in 0..COMPARE_ROUNDS {
            self.step(&format!("comparing {what}, round {}", round + 1));
            let mut this = vec![vec![0.0f64; n]; workloads.len()];
            // Rotate which variant goes first, so that a drift of the disk within a round does
            // not favour one of them.
            for k in 0..n {
                let v = (k + round as usize) % n;
                self.storage = variants[v].storage.clone();
                self.prealloc = variants[v].prealloc;
                let name = format!("cmp-{what}-{round}-{v}");
                let log = self.open(&format!("{name}-batched"), FsyncPolicy::Always)?;
                this[0][v] = batched_rate(&log, KIB, 16 * MIB, budget)? / 1e6;
                log.close().map_err(context("closing a log failed"))?;
                for (w, writers) in [(1, 1), (2, 64)] {
                    let log = self.open(&format!("{name}-w{writers}"), FsyncPolicy::Always)?;
                    this[w][v] = durable_writers(&log, writers, None, budget)?.per_sec;
                    log.close().map_err(context("closing a log failed"))?;
                }
                let _ = fs::remove_dir_all(self.root.join(&name));
            }
            for (w, row) in this.iter().enumerate() {
                for v in 0..n {
                    ratios[w][v].push(row[v] / row[0]);
                    figures[w][v] += row[v] / COMPARE_ROUNDS as f64;
                }
            }
            self.done();
        }
        (self.storage, self.prealloc) = (storage, prealloc);
        for (w, name) in workloads.iter().enumerate() {
            let unit = if w == 0 { "MB/s" } else { "appends/s" };
            self.row(
                format!("[{}] {name}", variants[0].name),
                figures[w][0],
                unit,
            );
            for v in 1..n {
                let mut r = ratios[w][v].clone();
                r.sort_by(f64::total_cmp);
                let median = r[r.len() / 2];
                let row = self.row(
                    format!("[{}] {name}", variants[v].name),
                    figures[w][v],
                    unit,
                );
                // The ratio shown is the median of the per-round ratios, not of the means.
                row.bound = Some((
                    format!("{} (median per round)", variants[0].name),
                    figures[w][v] / median,
                ));
            }
        }
        Ok(())
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Latency percentiles of a sample.
struct Latency {
    p50: Duration,
    p99: Duration,
    p999: Duration,
    mean: Duration,
}

impl Latency {
    fn of(mut sample: Vec<Duration>) -> Latency {
        if sample.is_empty() {
            sample.push(Duration::ZERO);
        }
        sample.sort_unstable();
        let at = |q: f64| sample[((sample.len() - 1) as f64 * q).round() as usize];
        Latency {
            p50: at(0.5),
            p99: at(0.99),
            p999: at(0.999),
            mean: sample.iter().sum::<Duration>() / sample.len() as u32,
        }
    }
}

/// Figures of [`produce_vs_write`].
struct ProduceFigures {
    /// Bytes the log wrote per second (batches: values and framing), over all rounds.
    produce: f64,
    /// Bytes per second of the plain write of as many bytes, over all rounds.
    write_batches: f64,
    /// Median per-round ratio of produce's rate to a plain write of the bytes the log
    /// writes, by wall-clock time.
    median_batches: f64,
    /// The same by CPU time of the process (user + system, every thread): what the load
    /// generator costs, less sensitive to other processes sharing the cores.
    median_batches_cpu: f64,
    /// Median per-round ratio of produce to a plain write of the values alone (wall clock).
    median_values: f64,
    /// The same by CPU time.
    median_values_cpu: f64,
    /// Bytes the log writes per byte of value (record and batch framing).
    overhead: f64,
}

/// Rounds of [`produce_vs_write`].
const PRODUCE_ROUNDS: usize = 6;

/// Wall-clock and CPU seconds of one measurement.
#[derive(Debug, Clone, Copy, Default)]
struct Took {
    wall: f64,
    cpu: f64,
}

impl Took {
    /// Runs `f`, timing it.
    fn measure<T>(f: impl FnOnce() -> T) -> (Took, T) {
        let (t, cpu) = (Instant::now(), cpu_seconds());
        let out = f();
        let took = Took {
            wall: t.elapsed().as_secs_f64().max(1e-9),
            cpu: (cpu_seconds() - cpu).max(1e-9),
        };
        (took, out)
    }
}

/// User and system CPU seconds used so far by this process, every thread included (0 if the
/// kernel refuses to say, which it does not for `RUSAGE_SELF`).
fn cpu_seconds() -> f64 {
    rusage_seconds(libc::RUSAGE_SELF)
}

/// User and system CPU seconds used so far by the calling thread alone.
fn thread_cpu_seconds() -> f64 {
    rusage_seconds(libc::RUSAGE_THREAD)
}

/// User and system CPU seconds of `getrusage(who)` (0 if the kernel refuses to say).
fn rusage_seconds(who: libc::c_int) -> f64 {
    // SAFETY: `getrusage` only writes the `rusage` it is given, which is a valid, writable
    // value of the right type for the duration of the call; all-zero bytes are a valid
    // `rusage` (plain integers).
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(who, &mut usage) != 0 {
            return 0.0;
        }
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// `produce --count --size SIZE` with its default batch (its own code: generation, batching,
/// appends, acks) into a new log with fsync never, against plain `write`s to a new file (no
/// fsync either) of (1) the same bytes the log writes, one write per batch of the same
/// length, and (2) the values alone, one write per batch's values; alternately round by round
/// (the machine's speed drifts), the three in a rotating order (whatever runs first after a
/// removal is measurably slower), each made durable after its timing (as closing the log
/// does) and removed, so that each starts with no dirty pages of the others. Ratios are
/// taken both by wall-clock and by CPU time.
fn produce_vs_write(
    b: &Bench,
    budget: Duration,
    size: usize,
    batch: usize,
) -> Result<ProduceFigures, CliError> {
    // A first run sizes the rounds to the budget, and tells what one round appends, so that
    // the plain writes can be measured before it too.
    let probe_count = (4 * MIB / size).max(1) as u64;
    let (took, _) = produce_once(b, probe_count, size, batch)?;
    let per_record = took.wall / probe_count as f64;
    let round = budget.as_secs_f64() / (3 * PRODUCE_ROUNDS) as f64;
    // At most 128 MiB of values a round: the log (256 MiB segments) never rolls, which would
    // fsync.
    let most = (128 * MIB / size).max(1) as u64;
    let count = ((round / per_record.max(1e-9)) as u64).clamp(1_000.min(most), most);
    let shape = produce_once(b, count, size, batch)?.1;
    let per_batch = shape.batch_bytes.div_ceil(shape.batches.max(1));
    let chunk: Vec<u8> = super::produce::Values::new(size)
        .get(0)
        .iter()
        .copied()
        .cycle()
        .take(per_batch as usize)
        .collect();
    let values_chunk = &chunk[..(size * batch).min(chunk.len())];

    let (mut produce_time, mut write_time, mut bytes) = (0.0, 0.0, 0u64);
    let mut ratios: [Vec<f64>; 4] = Default::default();
    for r in 0..PRODUCE_ROUNDS {
        let (mut produce, mut write, mut write_values) = Default::default();
        let mut produced = shape;
        for k in 0..3 {
            match (r + k) % 3 {
                0 => (produce, produced) = produce_once(b, count, size, batch)?,
                1 => write = plain_write(b, &chunk, shape.batch_bytes)?,
                _ => write_values = plain_write(b, values_chunk, shape.value_bytes)?,
            }
        }
        let (produce, write, write_values): (Took, Took, Took) = (produce, write, write_values);
        ratios[0].push(write.wall / produce.wall);
        ratios[1].push(write.cpu / produce.cpu);
        ratios[2].push(write_values.wall / produce.wall);
        ratios[3].push(write_values.cpu / produce.cpu);
        produce_time += produce.wall;
        write_time += write.wall;
        bytes += produced.batch_bytes;
    }
    let [batches, batches_cpu, values, values_cpu] = ratios.map(|mut v| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    });
    Ok(ProduceFigures {
        produce: bytes as f64 / produce_time,
        write_batches: bytes as f64 / write_time,
        median_batches: batches,
        median_batches_cpu: batches_cpu,
        median_values: values,
        median_values_cpu: values_cpu,
        overhead: shape.batch_bytes as f64 / shape.value_bytes.max(1) as f64,
    })
}

/// `produce --count` into a new log with fsync never: the time until every batch is
/// acknowledged, and what it appended. The log is closed (which fsyncs) and removed after.
fn produce_once(
    b: &Bench,
    count: u64,
    size: usize,
    batch: usize,
) -> Result<(Took, super::produce::Generated), CliError> {
    let log = b.open("produce", FsyncPolicy::Never)?;
    let (took, produced) =
        Took::measure(|| super::produce::generate_into(&log, count, size, batch));
    let produced = produced?;
    log.close().map_err(context("closing a log failed"))?;
    drop(log);
    remove_dir(&b.root.join("produce"))?;
    Ok((took, produced))
}

/// The time to write `total` bytes (rounded up to whole chunks) to a new file with one
/// `write` of `chunk` at a time, no fsync; the file is then made durable (untimed, as closing
/// a log does) and removed.
fn plain_write(b: &Bench, chunk: &[u8], total: u64) -> Result<Took, CliError> {
    let path = b.root.join("plain-write.file");
    let mut file =
        File::create(&path).map_err(context(format!("cannot create {}", path.display())))?;
    let (took, written) = Took::measure(|| -> std::io::Result<()> {
        let mut written = 0u64;
        while written < total {
            file.write_all(chunk)?;
            written += chunk.len().max(1) as u64;
        }
        Ok(())
    });
    written
        .and_then(|()| file.sync_data())
        .map_err(context("the plain-write baseline failed"))?;
    drop(file);
    fs::remove_file(&path).map_err(context(format!("cannot remove {}", path.display())))?;
    Ok(took)
}

/// Removes a scratch directory.
fn remove_dir(dir: &Path) -> Result<(), CliError> {
    fs::remove_dir_all(dir).map_err(context(format!("cannot remove {}", dir.display())))
}

/// Bytes per second of copying a 64 MiB buffer.
fn memcpy_rate(budget: Duration) -> f64 {
    let src = vec![7u8; 64 * MIB];
    let mut dst = vec![0u8; 64 * MIB];
    dst.copy_from_slice(&src);
    let started = Instant::now();
    let mut bytes = 0u64;
    while started.elapsed() < budget || bytes == 0 {
        dst.copy_from_slice(black_box(&src));
        black_box(&dst);
        bytes += src.len() as u64;
    }
    bytes as f64 / started.elapsed().as_secs_f64()
}

/// A 1 KiB append to a file and `sync_data`, repeated: one fsync per append, as a writer with
/// no group commit would do it.
fn fsync_latency(path: &Path, budget: Duration) -> Result<Latency, CliError> {
    let mut file =
        File::create(path).map_err(context(format!("cannot create {}", path.display())))?;
    let buf = vec![1u8; KIB];
    let mut sample = Vec::new();
    let started = Instant::now();
    while (started.elapsed() < budget || sample.len() < 10) && sample.len() < 100_000 {
        let t = Instant::now();
        file.write_all(&buf)
            .and_then(|()| file.sync_data())
            .map_err(context("the fsync probe failed"))?;
        sample.push(t.elapsed());
    }
    Ok(Latency::of(sample))
}

/// Bytes per second of writing `total` bytes in 1 MiB writes, each followed by `sync_data`.
fn plain_rate(path: &Path, total: usize, budget: Duration) -> Result<f64, CliError> {
    let mut file =
        File::create(path).map_err(context(format!("cannot create {}", path.display())))?;
    let buf = vec![3u8; MIB];
    let started = Instant::now();
    let mut written = 0;
    while written < total && (started.elapsed() < budget || written == 0) {
        file.write_all(&buf)
            .and_then(|()| file.sync_data())
            .map_err(context("the plain-file baseline failed"))?;
        written += buf.len();
    }
    Ok(written as f64 / started.elapsed().as_secs_f64())
}

/// Encoded bytes per second of durable appends of batches of about 1 MiB of `size`-byte
/// records (the batch is built once; encoding is timed with the append).
fn batched_rate(log: &Log, size: usize, total: usize, budget: Duration) -> Result<f64, CliError> {
    let value = vec![b'v'; size];
    let mut batch = BatchBuilder::new(Compression::None);
    while batch.records_len() + size + 22 <= MIB {
        batch
            .push_value(0, &value)
            .map_err(context("building a batch failed"))?;
    }
    // The bytes each append adds to the segment (encoded once, outside the timed loop).
    let encoded = batch
        .encode(0)
        .map_err(context("encoding a batch failed"))?
        .as_bytes()
        .len();
    let started = Instant::now();
    let mut written = 0;
    while written < total && (started.elapsed() < budget || written == 0) {
        let appended = log.append(&batch).map_err(context("append failed"))?;
        appended.receipt.wait().map_err(context("fsync failed"))?;
        written += encoded;
    }
    Ok(written as f64 / started.elapsed().as_secs_f64())
}

/// Bytes in a log's segment files.
fn log_bytes(log: &Log) -> u64 {
    dir_bytes(log.dir())
}

fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// `writers` threads each appending a one-record batch of 1 KiB and waiting for it to be
/// durable; with `pace`, the threads together start at most that many appends per second.
fn durable_writers(
    log: &Log,
    writers: usize,
    pace: Option<f64>,
    budget: Duration,
) -> Result<WriterPoint, CliError> {
    let barrier = Barrier::new(writers);
    let interval = pace.map(|rate| Duration::from_secs_f64(writers as f64 / rate));
    let results: Vec<Result<Vec<Duration>, stratalog::Error>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let barrier = &barrier;
                s.spawn(move || {
                    let mut batch = BatchBuilder::new(Compression::None);
                    batch
                        .push_value(0, &[b'w'; KIB])
                        .map_err(|e| stratalog::Error::InvalidArgument(e.to_string()))?;
                    let mut sample = Vec::new();
                    barrier.wait();
                    let started = Instant::now();
                    // Spread the paced writers' starts over one interval.
                    let mut next =
                        started + interval.unwrap_or_default() * w as u32 / writers as u32;
                    while started.elapsed() < budget {
                        if let Some(every) = interval {
                            let now = Instant::now();
                            if next > now {
                                std::thread::sleep(next - now);
                            }
                            next += every;
                        }
                        let t = Instant::now();
                        log.append(&batch)?.receipt.wait()?;
                        sample.push(t.elapsed());
                    }
                    Ok(sample)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a writer thread panicked"))
            .collect()
    });
    let mut all = Vec::new();
    for r in results {
        all.extend(r.map_err(context("a durable append failed"))?);
    }
    let count = all.len();
    let lat = Latency::of(all);
    Ok(WriterPoint {
        writers,
        per_sec: count as f64 / budget.as_secs_f64(),
        p50: lat.p50,
        p99: lat.p99,
        p999: lat.p999,
    })
}

/// Encoded bytes per second of reading the whole log in order, touching every record.
fn sequential_rate(log: &Log, budget: Duration) -> Result<f64, CliError> {
    let started = Instant::now();
    let mut bytes = 0u64;
    while started.elapsed() < budget || bytes == 0 {
        let mut next = log.start_offset();
        while next < log.end_offset() {
            let batches = log.read(next, 4 * MIB).map_err(context("read failed"))?;
            for batch in &batches {
                for record in batch.records().map_err(context("bad batch"))? {
                    let record = record.map_err(context("bad record"))?;
                    black_box(record.value.len());
                }
                bytes += batch.len() as u64;
                next = batch.last_offset() + 1;
            }
        }
    }
    Ok(bytes as f64 / started.elapsed().as_secs_f64())
}

/// Latency of reading one record at a random offset.
fn random_reads(log: &Log, budget: Duration) -> Result<Latency, CliError> {
    let (start, end) = (log.start_offset(), log.end_offset());
    if end == start {
        return Err("the log to read is empty".into());
    }
    let mut rng = SplitMix(0x5EED);
    let mut sample = Vec::new();
    let started = Instant::now();
    while started.elapsed() < budget && sample.len() < 2_000_000 {
        let offset = start + rng.next() % (end - start);
        let t = Instant::now();
        let batches = log.read(offset, 1).map_err(context("read failed"))?;
        let first = batches
            .first()
            .ok_or("a read inside the log returned nothing")?;
        let record = first
            .records()
            .map_err(context("bad batch"))?
            .nth((offset - first.base_offset()) as usize)
            .ok_or("the record is missing from its batch")?
            .map_err(context("bad record"))?;
        black_box(record.value.len());
        sample.push(t.elapsed());
    }
    Ok(Latency::of(sample))
}

/// Latency of a `pread` of `len` bytes at a random place of a (warm) file.
fn pread_latency(path: &Path, len: usize, budget: Duration) -> Result<Latency, CliError> {
    let file = File::open(path).map_err(context(format!("cannot open {}", path.display())))?;
    let size = file.metadata().map_err(context("stat failed"))?.len();
    let mut buf = vec![0u8; len];
    let mut rng = SplitMix(0xF00D);
    let mut sample = Vec::new();
    let started = Instant::now();
    while started.elapsed() < budget && sample.len() < 2_000_000 {
        let pos = rng.next() % (size - len as u64);
        let t = Instant::now();
        file.read_exact_at(&mut buf, pos)
            .map_err(context("pread failed"))?;
        black_box(buf[0]);
        sample.push(t.elapsed());
    }
    Ok(Latency::of(sample))
}

/// Median time of opening a closed log (and closing it again, untimed).
fn reopen_time(b: &Bench, name: &str) -> Result<Duration, CliError> {
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let log = b.open(name, FsyncPolicy::Always)?;
        times.push(t.elapsed());
        log.close().map_err(context("closing a log failed"))?;
    }
    Ok(Latency::of(times).p50)
}

/// Time to open a copy of a log taken while `tail` bytes had been written after its last fsync
/// (what a power loss could leave if the page cache had reached the disk), and the bytes
/// recovery scanned.
fn crash_reopen(b: &Bench, tail: usize) -> Result<(Duration, u64), CliError> {
    let log = b.open("crash-live", FsyncPolicy::Never)?;
    let mut batch = BatchBuilder::new(Compression::None);
    for _ in 0..64 {
        batch
            .push_value(0, &[b'c'; KIB])
            .map_err(context("building a batch failed"))?;
    }
    for _ in 0..64 {
        drop(log.append(&batch).map_err(context("append failed"))?);
    }
    log.flush().map_err(context("flush failed"))?;
    let synced = log_bytes(&log);
    while log_bytes(&log) - synced < tail as u64 {
        drop(log.append(&batch).map_err(context("append failed"))?);
    }
    let image = b.root.join("crash-image");
    fs::create_dir_all(&image).map_err(context("cannot create the crash image"))?;
    for entry in fs::read_dir(log.dir()).map_err(context("cannot list the log"))? {
        let path = entry.map_err(context("cannot list the log"))?.path();
        if path.extension().is_some_and(|x| x == "lock") {
            continue;
        }
        let to = image.join(path.file_name().expect("a file name"));
        fs::copy(&path, &to).map_err(context("cannot copy the crash image"))?;
    }
    log.close().map_err(context("closing a log failed"))?;
    let t = Instant::now();
    let log = b.open("crash-image", FsyncPolicy::Always)?;
    let took = t.elapsed();
    let report = log.recovery_report().clone();
    log.close().map_err(context("closing a log failed"))?;
    if report.clean {
        return Err("the crash image opened as a clean close: the bench is broken".into());
    }
    Ok((took, report.scanned_bytes))
}

/// A small deterministic generator for read positions.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn print_table(rows: &[Row], io: IoEngine, dir: &Path) -> Result<(), CliError> {
    outln!(
        "stratalog bench: {io:?} write path, scratch files in {}",
        dir.display()
    );
    outln!(
        "ratio = figure / baseline (for latencies, baseline / figure; above 1 is better), the \
         named baseline measured in this run: a limit of the machine (memory copy, plain \
         file, fsync latency), or a reference that batching is meant to beat (one fsync per \
         append)"
    );
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(10);
    outln!(
        "{:width$}  {:>12} {:<13} {:>12}  {:<22}",
        "measurement",
        "figure",
        "unit",
        "baseline",
        "ratio to baseline"
    );
    for r in rows {
        let (limit, ratio) = match (&r.bound, r.ratio()) {
            (Some((name, value)), Some(ratio)) => {
                (format!("{value:.1}"), format!("{ratio:.2}x {name}"))
            }
            _ => (String::new(), String::new()),
        };
        // Ratios (unit "x") need their second decimal.
        let precision = if r.unit == "x" { 2 } else { 1 };
        outln!(
            "{:width$}  {:>12.precision$} {:<13} {:>12}  {:<22}",
            r.name,
            r.value,
            r.unit,
            limit,
            ratio
        );
    }
    Ok(())
}

/// Appends/s and latency percentiles against the number of writers, as an SVG of two panels.
fn write_svg(path: &Path, points: &[WriterPoint], fsync_p50_us: f64) -> Result<(), CliError> {
    use plotters::prelude::*;

    let root = SVGBackend::new(path, (960, 400)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(480);
    let xs: Vec<f64> = points.iter().map(|p| (p.writers as f64).log2()).collect();
    let x_max = xs.iter().copied().fold(1.0, f64::max);

    let top = points.iter().map(|p| p.per_sec).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&left)
        .caption("durable 1 KiB appends/s", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("writers (log2)")
        .x_label_formatter(&|x| format!("{:.0}", 2f64.powf(*x)))
        .draw()?;
    chart.draw_series(LineSeries::new(
        xs.iter().zip(points).map(|(x, p)| (*x, p.per_sec)),
        &BLUE,
    ))?;
    chart.draw_series(
        xs.iter()
            .zip(points)
            .map(|(x, p)| Circle::new((*x, p.per_sec), 4, BLUE.filled())),
    )?;

    let top = points
        .iter()
        .map(|p| micros(p.p999))
        .fold(fsync_p50_us, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&right)
        .caption("commit latency (us): p50, p99, p99.9", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, 0.0..top.max(1.0))?;
    chart
        .configure_mesh()
        .x_desc("writers (log2)")
        .x_label_formatter(&|x| format!("{:.0}", 2f64.powf(*x)))
        .draw()?;
    for (label, pick, color) in [
        (
            "p50",
            Box::new(|p: &WriterPoint| p.p50) as Box<dyn Fn(&WriterPoint) -> Duration>,
            GREEN,
        ),
        ("p99", Box::new(|p: &WriterPoint| p.p99), RED),
        ("p99.9", Box::new(|p: &WriterPoint| p.p999), BLACK),
    ] {
        chart
            .draw_series(LineSeries::new(
                xs.iter().zip(points).map(|(x, p)| (*x, micros(pick(p)))),
                &color,
            ))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
    }
    chart
        .draw_series(LineSeries::new(
            [(0.0, fsync_p50_us), (x_max, fsync_p50_us)],
            &MAGENTA,
        ))?
        .label("disk fsync p50")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], MAGENTA));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

// --- replication (issue 11): a follower catching up, acks=all, the leader's CPU per byte

/// Budget units (of `Bench::budget`) the replication rows take: a quarter probing the disk,
/// about two for the catch-up rounds (and filling the leader), two for the `acks` rounds.
const REPLICATION_UNITS: f64 = 4.0;
/// Rounds of each replication comparison; the order of the contenders rotates every round
/// (the disk's speed drifts) and the ratios shown are medians of the per-round ratios.
const REPLICATION_ROUNDS: usize = 3;
/// Progress steps of the replication rows: the setup, the catch-up rounds, the `acks` rounds.
const REPLICATION_STEPS: u64 = 1 + 3 * REPLICATION_ROUNDS as u64;
/// Writer counts of the `acks=all` rows.
const REPLICATION_WRITERS: [usize; 3] = [1, 16, 64];
/// Record size of every replication row.
const REPLICATION_RECORD: usize = KIB;
/// About the size of the leader's batches in the catch-up rows (a producer's batch).
const CATCH_UP_BATCH: usize = 256 * KIB;
/// The topic every replication row uses (one partition).
const REPLICATION_TOPIC: &str = "bench";

/// Bytes moved in some wall-clock time at some CPU cost.
#[derive(Debug, Clone, Copy, Default)]
struct Moved {
    bytes: u64,
    wall: f64,
    /// CPU seconds of the side that is measured (the sender, the leader).
    cpu: f64,
}

impl Moved {
    fn rate(&self) -> f64 {
        self.bytes as f64 / self.wall.max(1e-9)
    }

    /// CPU nanoseconds per KiB moved.
    fn cpu_per_kib(&self) -> f64 {
        self.cpu * 1e9 / (self.bytes.max(1) as f64 / KIB as f64)
    }
}

/// One round of the catch-up comparison.
#[derive(Debug, Clone, Copy, Default)]
struct CatchUpRound {
    /// Bytes per second of writing the bytes to a new file in 1 MiB writes, then one
    /// `sync_data`: the disk's sequential write, made durable.
    disk: f64,
    /// Loopback TCP, memory to memory; `cpu` is the sender's.
    tcp: Moved,
    /// The follower's catch-up; `cpu` is the leader's.
    follower: Moved,
    /// A mirror's catch-up (`stratalog mirror`, reading to the high watermark).
    mirror: Moved,
}

/// The median of some per-round values.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

impl Bench {
    /// A new store in the scratch directory with one topic of one partition.
    fn replication_store(&self, name: &str, fsync: FsyncPolicy) -> Result<Arc<Store>, CliError> {
        let dir = self.root.join(name);
        let store = Store::open(
            &dir,
            StoreOptions {
                storage: self.storage.clone(),
                preallocate: self.prealloc,
                retention_interval: None,
                ..StoreOptions::default()
            },
        )
        .map_err(context(format!("cannot open a store in {}", dir.display())))?;
        store
            .create_topic(
                REPLICATION_TOPIC,
                1,
                TopicConfig {
                    fsync,
                    ..TopicConfig::default()
                },
                PartitionerKind::Jump,
            )
            .map_err(context("cannot create the bench topic"))?;
        Ok(Arc::new(store))
    }

    /// The replication rows: a follower (a `stratalog serve` child process) catching up from
    /// an in-process leader over 127.0.0.1 against loopback TCP and the disk; the leader's CPU
    /// per byte during it against the loopback sender's; `acks=all` with one follower against
    /// a single node, both through the protocol.
    fn replication(&mut self) -> Result<(), CliError> {
        let unit = self.budget;
        self.step("replication: probing the disk, filling the leader");
        let probe_path = self.root.join("replication-probe.file");
        let disk_probe = plain_rate(&probe_path, 1 << 30, unit / 4)?;
        fs::remove_file(&probe_path)
            .map_err(context(format!("cannot remove {}", probe_path.display())))?;
        // Each round writes the bytes to the disk three times (the baseline, the follower,
        // the mirror): about 1.75 units for all rounds, at the probed speed.
        let target =
            (disk_probe * unit.as_secs_f64() * 1.75 / (3 * REPLICATION_ROUNDS) as f64) as usize;
        let target = target.clamp(8 * MIB, 1 << 30) / MIB * MIB;
        let leader = CatchUpLeader::fill(self, target)?;
        self.done();

        let mut rounds = Vec::new();
        for round in 0..REPLICATION_ROUNDS {
            self.step(&format!(
                "replication: follower catch-up of {} MiB, round {}",
                leader.bytes >> 20,
                round + 1
            ));
            let mut r = CatchUpRound::default();
            for k in 0..4 {
                match (round + k) % 4 {
                    0 => {
                        r.disk = write_then_sync(
                            &self.root.join("replication-disk.file"),
                            leader.bytes,
                        )?;
                    }
                    1 => r.tcp = loopback_copy(leader.bytes)?,
                    2 => r.follower = leader.catch_up(self, round, false)?,
                    _ => r.mirror = leader.catch_up(self, round, true)?,
                }
            }
            rounds.push(r);
            self.done();
        }
        let mib = leader.bytes >> 20;
        leader.stop()?;

        let mean = |f: &dyn Fn(&CatchUpRound) -> f64| {
            rounds.iter().map(f).sum::<f64>() / rounds.len() as f64
        };
        let per_round = |f: &dyn Fn(&CatchUpRound) -> f64| median(rounds.iter().map(f).collect());
        let (tcp, disk) = (mean(&|r| r.tcp.rate()), mean(&|r| r.disk));
        let follower = mean(&|r| r.follower.rate());
        self.row(
            format!("loopback TCP, memory to memory, {mib} MiB in 1 MiB writes"),
            tcp / 1e6,
            "MB/s",
        );
        self.row(
            format!("disk, the same {mib} MiB: 1 MiB writes, then one sync_data"),
            disk / 1e6,
            "MB/s",
        );
        let vs_slower = per_round(&|r| r.follower.rate() / r.tcp.rate().min(r.disk));
        self.row(
            format!(
                "follower catch-up over 127.0.0.1 ({mib} MiB, 1 KiB records, fetched + fsynced)"
            ),
            follower / 1e6,
            "MB/s",
        )
        .bound = Some((
            "slower of loopback TCP and disk (median per round; goal 0.8x)".into(),
            follower / 1e6 / vs_slower,
        ));
        self.row(
            "follower catch-up / loopback TCP, median",
            per_round(&|r| r.follower.rate() / r.tcp.rate()),
            "x",
        );
        self.row(
            "follower catch-up / disk writes + sync_data, median",
            per_round(&|r| r.follower.rate() / r.disk),
            "x",
        );
        let mirror = mean(&|r| r.mirror.rate());
        let mirror_vs_slower = per_round(&|r| r.mirror.rate() / r.tcp.rate().min(r.disk));
        self.row(
            format!(
                "mirror catch-up over 127.0.0.1 ({mib} MiB, `stratalog mirror`, fetched + fsynced)"
            ),
            mirror / 1e6,
            "MB/s",
        )
        .bound = Some((
            "slower of loopback TCP and disk (median per round; goal 0.8x)".into(),
            mirror / 1e6 / mirror_vs_slower,
        ));
        let leader_cpu = mean(&|r| r.follower.cpu_per_kib());
        let row = self.row(
            "leader CPU per replicated KiB during catch-up",
            leader_cpu,
            "ns CPU/KiB",
        );
        // Shown as baseline / figure like every lower-is-better row: the per-round median.
        row.bound = Some((
            "loopback TCP sender CPU per KiB (median per round)".into(),
            leader_cpu * per_round(&|r| r.tcp.cpu_per_kib() / r.follower.cpu_per_kib()),
        ));
        row.lower_is_better = true;
        self.row(
            "leader CPU during catch-up, share of one core",
            mean(&|r| r.follower.cpu / r.follower.wall.max(1e-9)) * 100.0,
            "%",
        );

        self.acks_all(unit)?;
        self.failover_time()
    }

    /// The failover row: two `stratalog serve` processes, the leader SIGKILLed under an
    /// `acks=all` producer and the follower promoted (`stratalog promote`), timed from the
    /// kill to the first write the new leader acknowledged; the median of the rounds.
    fn failover_time(&mut self) -> Result<(), CliError> {
        let mut times = Vec::new();
        for round in 0..REPLICATION_ROUNDS {
            self.step(&format!("replication: failover, round {}", round + 1));
            let dir = self.root.join(format!("failover-{round}"));
            times.push(super::demo::failover_time(&dir)?.as_secs_f64() * 1e3);
            remove_dir(&dir)?;
            self.done();
        }
        self.row(
            "failover: leader SIGKILLed under acks=all, follower promoted, to the first acknowledged write (median)",
            median(times),
            "ms",
        )
        .lower_is_better = true;
        Ok(())
    }

    /// `acks=all` with one (in-process) follower against a single node without followers,
    /// `REPLICATION_WRITERS` clients each producing one 1 KiB record at a time, alternately
    /// round by round.
    ///
    /// A third contender explains the disk's part: two single nodes at once, each with the
    /// same writers. A leader and its follower on one machine share its disk, and so do these
    /// two; what each of them gets, against one node alone, is what sharing the disk costs
    /// before any replication (on separate machines it costs nothing).
    fn acks_all(&mut self, unit: Duration) -> Result<(), CliError> {
        let slice = unit * 2 / (REPLICATION_ROUNDS * REPLICATION_WRITERS.len() * 3) as u32;
        let single_store = self.replication_store("acks-single", FsyncPolicy::Always)?;
        let single = start_node(
            single_store,
            NodeOptions {
                node_id: "bench-single".into(),
                ..NodeOptions::default()
            },
        )?;
        let second_store = self.replication_store("acks-single-2", FsyncPolicy::Always)?;
        let second = start_node(
            second_store,
            NodeOptions {
                node_id: "bench-single-2".into(),
                ..NodeOptions::default()
            },
        )?;
        let leader_store = self.replication_store("acks-leader", FsyncPolicy::Always)?;
        let leader = start_node(
            leader_store,
            NodeOptions {
                node_id: "bench-leader".into(),
                replicas: 2,
                // acks=all waits for the follower, or is refused: never acknowledged alone.
                min_in_sync: 2,
                ..NodeOptions::default()
            },
        )?;
        let follower_store = self.replication_store("acks-follower", FsyncPolicy::Always)?;
        let follower = start_node(
            follower_store,
            NodeOptions {
                node_id: "bench-follower".into(),
                leader: Some(leader.addr().to_string()),
                ..NodeOptions::default()
            },
        )?;
        wait_in_sync(leader.addr())?;
        let n = REPLICATION_WRITERS.len();
        let (mut figures, mut ratios, mut shared) = (
            vec![[0.0f64; 3]; n],
            vec![Vec::new(); n],
            vec![Vec::new(); n],
        );
        for round in 0..REPLICATION_ROUNDS {
            self.step(&format!("replication: acks=all, round {}", round + 1));
            for (i, &writers) in REPLICATION_WRITERS.iter().enumerate() {
                let mut this = [0.0f64; 3];
                for k in 0..3 {
                    let which = (k + round) % 3;
                    this[which] = match which {
                        0 => produce_load(single.addr(), writers, slice)?,
                        1 => produce_load(leader.addr(), writers, slice)?,
                        _ => {
                            // Each node's own rate, while the other runs: their mean.
                            let (a, b) = std::thread::scope(|s| {
                                let a = s.spawn(|| produce_load(single.addr(), writers, slice));
                                let b = produce_load(second.addr(), writers, slice);
                                (a.join(), b)
                            });
                            let a = a.map_err(|_| CliError::from("a bench writer panicked"))??;
                            (a + b?) / 2.0
                        }
                    };
                }
                ratios[i].push(this[1] / this[0]);
                shared[i].push(this[2] / this[0]);
                for (sum, v) in figures[i].iter_mut().zip(this) {
                    *sum += v / REPLICATION_ROUNDS as f64;
                }
            }
            self.done();
        }
        follower.stop();
        leader.stop();
        single.stop();
        second.stop();
        for (i, &writers) in REPLICATION_WRITERS.iter().enumerate() {
            let [alone, replicated, beside] = figures[i];
            self.row(
                format!("single node, acks=all, {writers} writers, 1 KiB, fsync always"),
                alone,
                "appends/s",
            );
            let ratio = median(shared[i].clone());
            self.row(
                format!("two single nodes at once on this disk, {writers} writers each (per node)"),
                beside,
                "appends/s",
            )
            .bound = Some((
                "single node alone (median per round): the shared disk's cost".into(),
                beside / ratio,
            ));
            let ratio = median(ratios[i].clone());
            self.row(
                format!("acks=all + 1 follower, {writers} writers, 1 KiB, fsync always"),
                replicated,
                "appends/s",
            )
            .bound = Some((
                "single node, same writers (median per round; goal 0.7x)".into(),
                replicated / ratio,
            ));
        }
        Ok(())
    }
}

fn start_node(store: Arc<Store>, options: NodeOptions) -> Result<Node, CliError> {
    let id = options.node_id.clone();
    Node::start(store, options).map_err(context(format!("cannot start node {id}")))
}

/// The status of partition 0 of the bench topic on the node at `addr`.
fn partition_status(client: &mut Client) -> Result<PartitionStatus, CliError> {
    match client
        .call(&Message::StatusRequest)
        .map_err(context("status request failed"))?
    {
        Message::StatusResponse { partitions, .. } => partitions
            .into_iter()
            .find(|p| p.topic == REPLICATION_TOPIC && p.partition == 0)
            .ok_or_else(|| "the node does not serve the bench topic".into()),
        other => Err(format!("a status request was answered with {other:?}").into()),
    }
}

/// Waits (at most 30 s) until the leader at `addr` has a follower in sync.
fn wait_in_sync(addr: SocketAddr) -> Result<(), CliError> {
    let mut client =
        Client::connect(addr, Duration::from_secs(10)).map_err(context("cannot reach leader"))?;
    let started = Instant::now();
    while !partition_status(&mut client)?
        .followers
        .iter()
        .any(|f| f.in_sync)
    {
        if started.elapsed() > Duration::from_secs(30) {
            return Err("the follower did not join the in-sync set within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Bytes per second of writing `total` bytes to a new file at `path` in 1 MiB writes, then
/// one `sync_data` (the time until it returns); the file is removed after.
fn write_then_sync(path: &Path, total: u64) -> Result<f64, CliError> {
    let mut file =
        File::create(path).map_err(context(format!("cannot create {}", path.display())))?;
    let buf = vec![3u8; MIB];
    let started = Instant::now();
    let mut written = 0u64;
    while written < total {
        let n = (total - written).min(MIB as u64) as usize;
        file.write_all(&buf[..n])
            .map_err(context("the disk baseline failed"))?;
        written += n as u64;
    }
    file.sync_data()
        .map_err(context("the disk baseline failed"))?;
    let rate = total as f64 / started.elapsed().as_secs_f64();
    drop(file);
    fs::remove_file(path).map_err(context(format!("cannot remove {}", path.display())))?;
    Ok(rate)
}

/// `writers` clients of the node at `addr`, each producing one-record batches of 1 KiB at
/// `acks=all`, one at a time, for `slice`: acknowledged appends per second, all together.
fn produce_load(addr: SocketAddr, writers: usize, slice: Duration) -> Result<f64, CliError> {
    let mut batch = BatchBuilder::new(Compression::None);
    batch
        .push_value(stratalog::now_ms(), &[b'a'; REPLICATION_RECORD])
        .map_err(context("building a batch failed"))?;
    let mut encoded = batch
        .encode(0)
        .map_err(context("encoding a batch failed"))?;
    encoded.stamp(0);
    let request = Message::ProduceRequest {
        topic: REPLICATION_TOPIC.into(),
        partition: 0,
        acks: Acks::All,
        timeout_ms: 30_000,
        batches: Bytes::copy_from_slice(encoded.as_bytes()),
    };
    let barrier = Barrier::new(writers);
    let results: Vec<Result<f64, CliError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|_| {
                let (barrier, request) = (&barrier, &request);
                s.spawn(move || -> Result<f64, CliError> {
                    let client = Client::connect(addr, Duration::from_secs(30));
                    // Every thread reaches the barrier, connected or not.
                    barrier.wait();
                    let mut client = client.map_err(context("cannot reach the node"))?;
                    let (started, mut acked) = (Instant::now(), 0u64);
                    while started.elapsed() < slice || acked == 0 {
                        match client
                            .call(request)
                            .map_err(context("produce request failed"))?
                        {
                            Message::ProduceResponse {
                                error: ErrorCode::None,
                                ..
                            } => acked += 1,
                            Message::ProduceResponse { error, .. } => {
                                return Err(format!(
                                    "a produce at acks=all was refused: {}",
                                    error.name()
                                )
                                .into());
                            }
                            other => {
                                return Err(format!("a produce was answered with {other:?}").into());
                            }
                        }
                    }
                    Ok(acked as f64 / started.elapsed().as_secs_f64())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a producer thread panicked"))
            .collect()
    });
    results.into_iter().sum()
}

/// `total` bytes from memory to memory over a loopback TCP connection in 1 MiB writes, until
/// the receiving thread has them all; `cpu` is the sending thread's.
fn loopback_copy(total: u64) -> Result<Moved, CliError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(context("cannot listen"))?;
    let addr = listener.local_addr().map_err(context("no local address"))?;
    // The kernel completes the connection before `accept`: no thread waits on a failed one.
    let mut sender = TcpStream::connect(addr).map_err(context("cannot connect over loopback"))?;
    let (mut receiver, _) = listener.accept().map_err(context("accept failed"))?;
    for s in [&sender, &receiver] {
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .and_then(|()| s.set_write_timeout(Some(Duration::from_secs(60))))
            .map_err(context("cannot set socket timeouts"))?;
    }
    let buf = vec![5u8; MIB];
    std::thread::scope(|s| {
        let reading = s.spawn(move || -> std::io::Result<u64> {
            let mut buf = vec![0u8; MIB];
            let mut got = 0u64;
            loop {
                match receiver.read(&mut buf)? {
                    0 => return Ok(got),
                    n => got += black_box(n) as u64,
                }
            }
        });
        let (started, cpu) = (Instant::now(), thread_cpu_seconds());
        let mut sent = 0u64;
        let written = (|| -> std::io::Result<()> {
            while sent < total {
                let n = (total - sent).min(MIB as u64) as usize;
                sender.write_all(&buf[..n])?;
                sent += n as u64;
            }
            sender.shutdown(std::net::Shutdown::Write)
        })();
        let cpu = thread_cpu_seconds() - cpu;
        // On a failed write, the shutdown ends the reader too.
        let _ = sender.shutdown(std::net::Shutdown::Both);
        let got = reading.join().expect("the loopback reader panicked");
        let wall = started.elapsed().as_secs_f64();
        written.map_err(context("the loopback copy failed"))?;
        let got = got.map_err(context("the loopback copy failed"))?;
        if got != total {
            return Err(format!("the loopback copy moved {got} bytes of {total}").into());
        }
        Ok(Moved {
            bytes: total,
            wall,
            cpu,
        })
    })
}

/// A leader holding the bytes a follower catches up on, served by an in-process node.
struct CatchUpLeader {
    node: Node,
    end: u64,
    /// Bytes of its log (batches as stored).
    bytes: u64,
}

/// A `stratalog serve` child, killed and waited for when dropped (a failed step too).
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// When the follower's durable end was seen, and the CPU used so far.
#[derive(Debug, Clone, Copy)]
struct Mark {
    at: Instant,
    offset: u64,
    /// CPU seconds of this whole process (the leader, and this thread).
    process_cpu: f64,
    /// CPU seconds of this thread (which polls the follower): not the leader's.
    own_cpu: f64,
}

impl Mark {
    fn now(offset: u64) -> Mark {
        Mark {
            at: Instant::now(),
            offset,
            process_cpu: cpu_seconds(),
            own_cpu: thread_cpu_seconds(),
        }
    }
}

impl CatchUpLeader {
    /// A leader store holding about `target` bytes of 1 KiB records in batches of about
    /// 256 KiB (written with fsync never, then flushed: untimed), and its node.
    fn fill(b: &Bench, target: usize) -> Result<CatchUpLeader, CliError> {
        let store = b.replication_store("catch-up-leader", FsyncPolicy::Never)?;
        let log = store
            .partition(REPLICATION_TOPIC, 0)
            .map_err(context("cannot open the leader's partition"))?;
        let value = vec![b'r'; REPLICATION_RECORD];
        let mut batch = BatchBuilder::new(Compression::None);
        let ts = stratalog::now_ms();
        while batch.records_len() + REPLICATION_RECORD + 22 <= CATCH_UP_BATCH {
            batch
                .push_value(ts, &value)
                .map_err(context("building a batch failed"))?;
        }
        // What each append adds to the segment (the segment file may hold preallocated zeros).
        let encoded = batch
            .encode(0)
            .map_err(context("encoding a batch failed"))?
            .as_bytes()
            .len() as u64;
        let mut bytes = 0u64;
        while bytes < target as u64 {
            drop(log.append(&batch).map_err(context("append failed"))?);
            bytes += encoded;
        }
        log.flush().map_err(context("flush failed"))?;
        let end = log.end_offset();
        drop(log);
        let node = start_node(
            store,
            NodeOptions {
                node_id: "bench-catch-up-leader".into(),
                replicas: 2,
                ..NodeOptions::default()
            },
        )?;
        Ok(CatchUpLeader { node, end, bytes })
    }

    /// A new, empty follower (a `stratalog serve` child process, so that this process's CPU
    /// is the leader's) fetches the whole log; timed from the first time its end is seen
    /// above 0 until it reaches the leader's end.
    ///
    /// With `mirror`, the child is a `stratalog mirror` of the leader instead (it reads to the
    /// leader's high watermark, which a leader without followers keeps at its end).
    fn catch_up(&self, b: &Bench, round: usize, mirror: bool) -> Result<Moved, CliError> {
        let role = if mirror { "mirror" } else { "follower" };
        let name = format!("catch-up-{role}-{round}");
        let dir = b.root.join(&name);
        drop(b.replication_store(&name, FsyncPolicy::Always)?);
        let stderr_path = b.root.join(format!("{name}.stderr"));
        let stderr = File::create(&stderr_path)
            .map_err(context(format!("cannot create {}", stderr_path.display())))?;
        let exe = std::env::current_exe().map_err(context("cannot find this executable"))?;
        let mut command = std::process::Command::new(exe);
        let leader = self.node.addr().to_string();
        if mirror {
            command.arg("mirror").args(["--source", &leader]);
        } else {
            command.arg("serve").args(["--leader", &leader]);
        }
        command
            .arg("--dir")
            .arg(&dir)
            .args(["--node-id", &format!("bench-{role}-{round}")])
            .args(["--listen", "127.0.0.1:0"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(stderr);
        // SAFETY: the closure runs in the child between fork and exec, and only calls
        // `prctl`, which is async-signal-safe, allocates nothing and takes no lock.
        unsafe {
            command.pre_exec(|| {
                // Killed if bench dies (SIGINT, SIGTERM, a crash) before it can kill it.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let spawned = Mark::now(0);
        let mut child = ChildGuard(
            command
                .spawn()
                .map_err(context("cannot start a `stratalog serve` follower"))?,
        );
        let stdout = child.0.stdout.take().ok_or("no stdout of the follower")?;
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads the address line, then drains what else it prints, until it exits.
        std::thread::spawn(move || {
            let mut stdout = std::io::BufReader::new(stdout);
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut stdout, &mut line);
            let _ = tx.send(line);
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        });
        let failed = |what: String| -> CliError {
            let log = fs::read_to_string(&stderr_path).unwrap_or_default();
            format!("{what}; its stderr:\n{log}").into()
        };
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| failed("the follower did not say where it listens within 30 s".into()))?;
        let addr: SocketAddr = line
            .strip_prefix("listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| failed(format!("the follower printed {line:?}")))?;
        let mut client = Client::connect(addr, Duration::from_secs(10))
            .map_err(|e| failed(format!("cannot reach the follower: {e}")))?;
        // Generous: a slow disk writes 20 MB/s.
        let deadline = Instant::now()
            + Duration::from_secs(60)
            + Duration::from_secs_f64(self.bytes as f64 / 20e6);
        let mut first = None;
        let last = loop {
            let end = partition_status(&mut client)?.log_end;
            let mark = Mark::now(end);
            if end >= self.end {
                break mark;
            }
            if end > 0 && first.is_none() {
                first = Some(mark);
            }
            if Instant::now() > deadline {
                return Err(failed(format!(
                    "the follower reached offset {end} of {} before the deadline",
                    self.end
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        drop(client);
        drop(child);
        // Caught up in one look: the window starts at the spawn (start-up included).
        let first = first.unwrap_or(spawned);
        let moved = Moved {
            bytes: self.bytes * (last.offset - first.offset) / self.end.max(1),
            wall: last.at.duration_since(first.at).as_secs_f64(),
            cpu: ((last.process_cpu - first.process_cpu) - (last.own_cpu - first.own_cpu)).max(0.0),
        };
        remove_dir(&dir)?;
        fs::remove_file(&stderr_path)
            .map_err(context(format!("cannot remove {}", stderr_path.display())))?;
        Ok(moved)
    }

    fn stop(self) -> Result<(), CliError> {
        self.node.stop();
        Ok(())
    }
}
