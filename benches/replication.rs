//! Criterion benchmarks of replication (issue 11), each next to its baseline in the same run.
//!
//! Groups (see the "Replication" section of `docs/BENCHMARKS.md` for figures):
//!
//! - `catch_up`: the same bytes (a leader's log of 1 KiB records in batches of about 256 KiB)
//!   moved three ways. `loopback_tcp`: from memory to memory over a 127.0.0.1 TCP connection in
//!   1 MiB writes, until the receiving thread has them all. `disk_write_then_sync`: written to
//!   a new file in 1 MiB writes, then one `sync_data` (the disk's sequential write, made
//!   durable; a follower fsyncs after each fetch of up to 1 MiB, which this does not).
//!   `follower`: a new, empty in-process follower [`Node`] fetches the leader's whole log over
//!   127.0.0.1 and makes it durable, timed from `Node::start` until its log end is the
//!   leader's (fetches of at most 1 MiB, the default). `follower_fetch_16mib`: the same with
//!   fetches of up to 16 MiB, which shows what the per-fetch round trip and fsync cost;
//!   `follower_no_fsync`: a follower whose store never fsyncs (a diagnostic of what its fsyncs
//!   cost, not a durable copy). The
//!   goal is `follower` at 0.8x or more of the slower of `loopback_tcp` and the disk.
//! - `acks`: 16 clients each producing one 1 KiB record at a time at `acks=all` (every one
//!   durable, `FsyncPolicy::Always`). `single_node`: a leader with no follower. `one_follower`:
//!   a leader with `min_in_sync = 2` and an in-process follower, so that no acknowledgement
//!   goes out before the follower has the record durably. The goal is `one_follower` at 0.7x
//!   or more of `single_node`.
//!
//! After the criterion groups, an interleaved section (plain `println!` lines starting with
//! `interleaved`) runs each comparison again with the contenders back to back in every round
//! (7 rounds, the order rotating; `$STRATALOG_REPLICATION_ROUNDS` changes that, 0 skips it)
//! and prints the median of the per-round ratios, as criterion's groups are measured minutes
//! apart while a shared disk's speed drifts. There the follower is a `stratalog serve` child
//! process, so that the bench process's CPU time is the leader's: the leader's CPU per byte
//! during the catch-up is printed against the loopback sender thread's. The catch-up window
//! there starts when the follower is first seen with some data (its start-up is not counted)
//! and the thread polling the follower's status is taken out of the CPU figure.
//!
//! Temporary directories go under `$STRATALOG_BENCH_DIR` if set, else `std::env::temp_dir()`,
//! which must be a real disk (not tmpfs) for fsync to mean anything. Under `cargo test` every
//! benchmark runs once on a 4 MiB log and the interleaved section runs one short round; only
//! `cargo bench` (which passes `--bench`) gets 64 MiB.

use std::fs::{self, File};
use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use stratalog::replication::node::{Node, NodeOptions};
use stratalog::replication::transport::Client;
use stratalog::replication::{Acks, ErrorCode, Message};
use stratalog::{
    BatchBuilder, Compression, FsyncPolicy, PartitionerKind, Store, StoreOptions, TopicConfig,
};
use tempfile::TempDir;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const TOPIC: &str = "bench";
/// Record size of every benchmark.
const RECORD: usize = KIB;
/// About the size of the leader's batches in the catch-up benchmarks.
const CATCH_UP_BATCH: usize = 256 * KIB;
/// Clients of the `acks` benchmarks.
const WRITERS: usize = 16;
/// Generous bound on any wait for a node (a caught-up follower, an in-sync set).
const TIMEOUT: Duration = Duration::from_secs(300);

/// True under `cargo bench` (criterion gets `--bench`), false under `cargo test` (test mode).
fn full_run() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test")
}

/// Bytes of the leader's log in the catch-up benchmarks.
fn catch_up_bytes() -> usize {
    if full_run() { 64 * MIB } else { 4 * MIB }
}

/// A fresh directory on the benchmark file system, removed when dropped.
fn scratch() -> TempDir {
    let base = std::env::var_os("STRATALOG_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    fs::create_dir_all(&base).expect("create the benchmark directory");
    tempfile::Builder::new()
        .prefix("stratalog-replication-")
        .tempdir_in(base)
        .expect("create a temporary directory")
}

/// A store in `dir` with the bench topic (one partition).
fn store(dir: &Path, fsync: FsyncPolicy) -> Arc<Store> {
    let store = Store::open(
        dir,
        StoreOptions {
            retention_interval: None,
            ..StoreOptions::default()
        },
    )
    .expect("open a store");
    store
        .create_topic(
            TOPIC,
            1,
            TopicConfig {
                fsync,
                ..TopicConfig::default()
            },
            PartitionerKind::Jump,
        )
        .expect("create the topic");
    Arc::new(store)
}

/// A leader node holding about `target` bytes of 1 KiB records in ~256 KiB batches.
struct Leader {
    _dir: TempDir,
    node: Node,
    end: u64,
    bytes: u64,
}

impl Leader {
    fn fill(target: usize) -> Leader {
        let dir = scratch();
        let store = store(dir.path(), FsyncPolicy::Never);
        let log = store.partition(TOPIC, 0).expect("the partition");
        let mut batch = BatchBuilder::new(Compression::None);
        let ts = stratalog::now_ms();
        while batch.records_len() + RECORD + 22 <= CATCH_UP_BATCH {
            batch.push_value(ts, &[b'r'; RECORD]).expect("a record");
        }
        let encoded = batch.encode(0).expect("encode").as_bytes().len() as u64;
        let mut bytes = 0;
        while bytes < target as u64 {
            drop(log.append(&batch).expect("append"));
            bytes += encoded;
        }
        log.flush().expect("flush");
        let end = log.end_offset();
        drop(log);
        let node = Node::start(
            store,
            NodeOptions {
                node_id: "leader".into(),
                replicas: 2,
                ..NodeOptions::default()
            },
        )
        .expect("start the leader");
        Leader {
            _dir: dir,
            node,
            end,
            bytes,
        }
    }

    /// A new in-process follower fetching the whole log, at most `fetch_max_bytes` a fetch:
    /// the time from its start until its log end is the leader's.
    fn in_process_catch_up(&self, fetch_max_bytes: u32, fsync: FsyncPolicy) -> Duration {
        let dir = scratch();
        let store = store(dir.path(), fsync);
        let log = store.partition(TOPIC, 0).expect("the partition");
        let started = Instant::now();
        let follower = Node::start(
            store.clone(),
            NodeOptions {
                node_id: "follower".into(),
                leader: Some(self.node.addr().to_string()),
                fetch_max_bytes,
                ..NodeOptions::default()
            },
        )
        .expect("start the follower");
        while log.end_offset() < self.end {
            assert!(started.elapsed() < TIMEOUT, "the follower did not catch up");
            std::thread::sleep(Duration::from_micros(200));
        }
        let took = started.elapsed();
        follower.stop();
        took
    }

    /// A `stratalog serve` child follower fetching the whole log: the bytes moved, the wall
    /// time and this process's CPU time (the leader's, less the polling thread's), from the
    /// first time the follower is seen holding data until it is caught up.
    fn child_catch_up(&self, exe: &str) -> Moved {
        let dir = scratch();
        drop(store(dir.path(), FsyncPolicy::Always));
        let mut command = Command::new(exe);
        command
            .arg("serve")
            .arg("--dir")
            .arg(dir.path())
            .args(["--node-id", "child-follower", "--listen", "127.0.0.1:0"])
            .args(["--leader", &self.node.addr().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // SAFETY: the closure runs in the child between fork and exec, and only calls
        // `prctl`, which is async-signal-safe, allocates nothing and takes no lock.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let spawned = Mark::now(0);
        let mut child = ChildGuard(command.spawn().expect("start `stratalog serve`"));
        let mut stdout = BufReader::new(child.0.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("the follower's address");
        // Drain what else it prints until it exits.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let addr: SocketAddr = line
            .strip_prefix("listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("the follower printed {line:?}"));
        let mut client = Client::connect(addr, Duration::from_secs(10)).expect("reach it");
        let mut first = None;
        let last = loop {
            let end = match client.call(&Message::StatusRequest).expect("status") {
                Message::StatusResponse { partitions, .. } => partitions[0].log_end,
                other => panic!("status answered with {other:?}"),
            };
            let mark = Mark::now(end);
            if end >= self.end {
                break mark;
            }
            if end > 0 && first.is_none() {
                first = Some(mark);
            }
            assert!(
                spawned.at.elapsed() < TIMEOUT,
                "the follower did not catch up"
            );
            std::thread::sleep(Duration::from_millis(1));
        };
        drop(child);
        let first = first.unwrap_or(spawned);
        Moved {
            bytes: self.bytes * (last.offset - first.offset) / self.end.max(1),
            wall: last.at.duration_since(first.at).as_secs_f64(),
            cpu: ((last.process_cpu - first.process_cpu) - (last.own_cpu - first.own_cpu)).max(0.0),
        }
    }
}

/// A child process, killed and waited for when dropped (a failed benchmark too).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Bytes moved in some wall-clock time at some CPU cost (of the side measured).
#[derive(Debug, Clone, Copy, Default)]
struct Moved {
    bytes: u64,
    wall: f64,
    cpu: f64,
}

impl Moved {
    fn rate(&self) -> f64 {
        self.bytes as f64 / self.wall.max(1e-9)
    }

    fn cpu_per_kib(&self) -> f64 {
        self.cpu * 1e9 / (self.bytes.max(1) as f64 / KIB as f64)
    }
}

/// When a follower's end was seen, and the CPU used so far.
#[derive(Debug, Clone, Copy)]
struct Mark {
    at: Instant,
    offset: u64,
    process_cpu: f64,
    own_cpu: f64,
}

impl Mark {
    fn now(offset: u64) -> Mark {
        Mark {
            at: Instant::now(),
            offset,
            process_cpu: rusage_seconds(libc::RUSAGE_SELF),
            own_cpu: rusage_seconds(libc::RUSAGE_THREAD),
        }
    }
}

/// User and system CPU seconds of `getrusage(who)`.
fn rusage_seconds(who: libc::c_int) -> f64 {
    // SAFETY: `getrusage` only writes the `rusage` it is given, a valid, writable value of the
    // right type for the duration of the call; all-zero bytes are a valid `rusage`.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(who, &mut usage), 0, "getrusage");
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// `total` bytes from memory to memory over loopback TCP in 1 MiB writes; `cpu` is the
/// sending thread's.
fn loopback_copy(total: u64) -> Moved {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let mut sender = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (mut receiver, _) = listener.accept().expect("accept");
    let buf = vec![5u8; MIB];
    std::thread::scope(|s| {
        let reading = s.spawn(move || {
            let mut buf = vec![0u8; MIB];
            let mut got = 0u64;
            loop {
                match receiver.read(&mut buf).expect("read") {
                    0 => return got,
                    n => got += black_box(n) as u64,
                }
            }
        });
        let (started, cpu) = (Instant::now(), rusage_seconds(libc::RUSAGE_THREAD));
        let mut sent = 0u64;
        while sent < total {
            let n = (total - sent).min(MIB as u64) as usize;
            sender.write_all(&buf[..n]).expect("write");
            sent += n as u64;
        }
        let cpu = rusage_seconds(libc::RUSAGE_THREAD) - cpu;
        sender.shutdown(Shutdown::Write).expect("shutdown");
        assert_eq!(reading.join().expect("the reader"), total);
        Moved {
            bytes: total,
            wall: started.elapsed().as_secs_f64(),
            cpu,
        }
    })
}

/// Writes `total` bytes to a new file in 1 MiB writes, then one `sync_data`.
fn disk_write_then_sync(total: u64) -> Duration {
    let dir = scratch();
    let mut file = File::create(dir.path().join("plain")).expect("create");
    let buf = vec![3u8; MIB];
    let started = Instant::now();
    let mut written = 0u64;
    while written < total {
        let n = (total - written).min(MIB as u64) as usize;
        file.write_all(&buf[..n]).expect("write");
        written += n as u64;
    }
    file.sync_data().expect("sync_data");
    started.elapsed()
}

fn bench_catch_up(c: &mut Criterion, leader: &Leader) {
    let mut g = c.benchmark_group("catch_up");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Bytes(leader.bytes));
    g.bench_function("loopback_tcp", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| Duration::from_secs_f64(loopback_copy(leader.bytes).wall))
                .sum()
        })
    });
    g.bench_function("disk_write_then_sync", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| disk_write_then_sync(leader.bytes)).sum())
    });
    let default_fetch = NodeOptions::default().fetch_max_bytes;
    g.bench_function("follower", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| leader.in_process_catch_up(default_fetch, FsyncPolicy::Always))
                .sum()
        })
    });
    // What the per-fetch round trip and fsync cost: the same with 16 times larger fetches.
    g.bench_function("follower_fetch_16mib", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| leader.in_process_catch_up(16 << 20, FsyncPolicy::Always))
                .sum()
        })
    });
    // What the follower's fsyncs cost: the same with a follower that never fsyncs (not a
    // durable copy: a diagnostic, not a contender).
    g.bench_function("follower_no_fsync", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| leader.in_process_catch_up(default_fetch, FsyncPolicy::Never))
                .sum()
        })
    });
    g.finish();
}

/// A single node, and a leader with `min_in_sync = 2` and its in-process follower.
struct AcksNodes {
    _dirs: Vec<TempDir>,
    single: Node,
    leader: Node,
    _follower: Node,
}

impl AcksNodes {
    fn start() -> AcksNodes {
        let dirs: Vec<TempDir> = (0..3).map(|_| scratch()).collect();
        let single = Node::start(
            store(dirs[0].path(), FsyncPolicy::Always),
            NodeOptions {
                node_id: "single".into(),
                ..NodeOptions::default()
            },
        )
        .expect("start the single node");
        let leader = Node::start(
            store(dirs[1].path(), FsyncPolicy::Always),
            NodeOptions {
                node_id: "leader".into(),
                replicas: 2,
                min_in_sync: 2,
                ..NodeOptions::default()
            },
        )
        .expect("start the leader");
        let follower = Node::start(
            store(dirs[2].path(), FsyncPolicy::Always),
            NodeOptions {
                node_id: "follower".into(),
                leader: Some(leader.addr().to_string()),
                ..NodeOptions::default()
            },
        )
        .expect("start the follower");
        let mut client = Client::connect(leader.addr(), Duration::from_secs(10)).expect("reach");
        let started = Instant::now();
        loop {
            if let Message::StatusResponse { partitions, .. } =
                client.call(&Message::StatusRequest).expect("status")
                && partitions[0].followers.iter().any(|f| f.in_sync)
            {
                break;
            }
            assert!(
                started.elapsed() < TIMEOUT,
                "the follower never got in sync"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        AcksNodes {
            _dirs: dirs,
            single,
            leader,
            _follower: follower,
        }
    }
}

/// `writers` clients of `addr`, each producing `per_writer` one-record batches of 1 KiB at
/// `acks=all`, one at a time: the time until all are acknowledged.
fn produce(addr: SocketAddr, writers: usize, per_writer: u64) -> Duration {
    let mut batch = BatchBuilder::new(Compression::None);
    batch
        .push_value(stratalog::now_ms(), &[b'a'; RECORD])
        .expect("a record");
    let mut encoded = batch.encode(0).expect("encode");
    encoded.stamp(0);
    let request = Message::ProduceRequest {
        topic: TOPIC.into(),
        partition: 0,
        acks: Acks::All,
        timeout_ms: 30_000,
        batches: Bytes::copy_from_slice(encoded.as_bytes()),
    };
    let barrier = Barrier::new(writers + 1);
    std::thread::scope(|s| {
        for _ in 0..writers {
            let (barrier, request) = (&barrier, &request);
            s.spawn(move || {
                let client = Client::connect(addr, Duration::from_secs(30));
                // Every writer reaches the barrier, connected or not.
                barrier.wait();
                let mut client = client.expect("reach the node");
                for _ in 0..per_writer {
                    match client.call(request).expect("produce") {
                        Message::ProduceResponse {
                            error: ErrorCode::None,
                            ..
                        } => {}
                        other => panic!("a produce at acks=all got {other:?}"),
                    }
                }
            });
        }
        barrier.wait();
        let started = Instant::now();
        // The scope joins the writers before it returns.
        started
    })
    .elapsed()
}

fn bench_acks(c: &mut Criterion, nodes: &AcksNodes) {
    let mut g = c.benchmark_group("acks");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(WRITERS as u64));
    g.bench_function(format!("single_node/{WRITERS}_writers"), |b| {
        b.iter_custom(|iters| produce(nodes.single.addr(), WRITERS, iters))
    });
    g.bench_function(format!("one_follower/{WRITERS}_writers"), |b| {
        b.iter_custom(|iters| produce(nodes.leader.addr(), WRITERS, iters))
    });
    g.finish();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Each comparison again, contenders back to back in every round, medians of the ratios.
fn interleaved(leader: &Leader, nodes: &AcksNodes) {
    let rounds: usize = std::env::var("STRATALOG_REPLICATION_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(if full_run() { 7 } else { 1 });
    if rounds == 0 {
        return;
    }
    // The binary exists only with the `cli` feature (a default one).
    let Some(exe) = option_env!("CARGO_BIN_EXE_stratalog") else {
        println!("interleaved: skipped, no `stratalog` binary (build with the `cli` feature)");
        return;
    };
    let per_writer = if full_run() { 200 } else { 5 };
    let (mut vs_slower, mut vs_tcp, mut vs_disk, mut cpu_ratio) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut leader_cpu, mut tcp_cpu) = (Vec::new(), Vec::new());
    let mut acks = vec![Vec::new(); 2];
    for round in 0..rounds {
        let (mut tcp, mut disk, mut follower) = (Moved::default(), 0.0, Moved::default());
        for k in 0..3 {
            match (round + k) % 3 {
                0 => {
                    disk = leader.bytes as f64 / disk_write_then_sync(leader.bytes).as_secs_f64();
                }
                1 => tcp = loopback_copy(leader.bytes),
                _ => follower = leader.child_catch_up(exe),
            }
        }
        vs_slower.push(follower.rate() / tcp.rate().min(disk));
        vs_tcp.push(follower.rate() / tcp.rate());
        vs_disk.push(follower.rate() / disk);
        leader_cpu.push(follower.cpu_per_kib());
        tcp_cpu.push(tcp.cpu_per_kib());
        cpu_ratio.push(follower.cpu_per_kib() / tcp.cpu_per_kib());
        for (i, writers) in [1, WRITERS].into_iter().enumerate() {
            let mut took = [Duration::ZERO; 2];
            for k in 0..2 {
                let which = (k + round) % 2;
                let addr = [nodes.single.addr(), nodes.leader.addr()][which];
                took[which] = produce(addr, writers, per_writer);
            }
            acks[i].push(took[0].as_secs_f64() / took[1].as_secs_f64());
        }
    }
    let mib = leader.bytes >> 20;
    println!(
        "interleaved catch_up ({mib} MiB, {rounds} rounds, medians of per-round ratios): \
         follower/slower(loopback_tcp, disk_write_then_sync) {:.2}x (goal 0.8x), \
         follower/loopback_tcp {:.2}x, follower/disk_write_then_sync {:.2}x",
        median(vs_slower),
        median(vs_tcp),
        median(vs_disk)
    );
    println!(
        "interleaved leader_cpu: {:.0} ns CPU per KiB replicated, loopback sender {:.0} ns \
         per KiB, leader/loopback {:.2}x (medians)",
        median(leader_cpu),
        median(tcp_cpu),
        median(cpu_ratio)
    );
    for (i, writers) in [1, WRITERS].into_iter().enumerate() {
        println!(
            "interleaved acks ({writers} writers, {per_writer} appends each, {rounds} rounds): \
             one_follower/single_node {:.2}x (goal 0.7x, median of per-round ratios)",
            median(acks[i].clone())
        );
    }
}

fn benches() {
    let mut c = Criterion::default().configure_from_args();
    let leader = Leader::fill(catch_up_bytes());
    bench_catch_up(&mut c, &leader);
    let nodes = AcksNodes::start();
    bench_acks(&mut c, &nodes);
    interleaved(&leader, &nodes);
}

// Not `criterion_group!`: the groups share a leader and nodes that are set up once.
fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
