//! Real `stratalog serve` processes on 127.0.0.1 for the replication fault tests: spawning nodes
//! and producers, `status --json`, stopping and resuming a process, reading a replica's log.
//! Every process started here is a [`Proc`], killed (SIGKILL, which also ends a stopped process)
//! and reaped when dropped, also when a test panics.
//!
//! Not part of `common/mod.rs`, which every test includes: this needs the command-line build
//! (`serde_json`, the binary). A test includes it with `#[path = "common/cluster.rs"] mod cluster;`.
#![allow(
    dead_code,
    reason = "each test file includes this module and uses only some of its helpers; `expect` would fail in the files that use them all"
)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use stratalog::{Log, LogOptions};

pub const BIN: &str = env!("CARGO_BIN_EXE_stratalog");

/// A child process, killed and reaped on drop.
pub struct Proc(pub Child);

impl Proc {
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    /// SIGSTOP: the process freezes, its sockets stay open (the kernel still accepts
    /// connections into its backlog).
    pub fn stop(&self) {
        signal(self.pid(), "STOP");
    }

    /// SIGCONT.
    pub fn resume(&self) {
        signal(self.pid(), "CONT");
    }
}

fn signal(pid: i32, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{name} {pid} failed");
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Creates topic `t` (one partition) in each directory, as every node needs it in its store.
pub fn create_topic(dirs: &[std::path::PathBuf]) {
    for d in dirs {
        let ok = Command::new(BIN)
            .args(["topics", "create", "--dir", d.to_str().unwrap(), "t"])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "topics create in {}", d.display());
    }
}

/// `stratalog serve` on `listen`, returning once it listens. `extra`: more arguments
/// (`--replicas`, `--min-in-sync`, `--replica-lag-timeout`, `--peers` ...).
pub fn serve(dir: &Path, id: &str, listen: &str, leader: Option<&str>, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--dir", dir.to_str().unwrap(), "--node-id", id])
        .args(["--listen", listen])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(node_log(id));
    if let Some(l) = leader {
        cmd.args(["--leader", l]);
    }
    let mut child = Proc(cmd.spawn().expect("spawn serve"));
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on "), "serve printed {line:?}");
    child
}

/// Where a node's log lines go: nowhere, or, when `STRATALOG_TEST_NODE_LOGS` names a
/// directory, appended to `<dir>/<id>.log` (to see why a test failed).
fn node_log(id: &str) -> Stdio {
    let Some(dir) = std::env::var_os("STRATALOG_TEST_NODE_LOGS") else {
        return Stdio::null();
    };
    let path = Path::new(&dir).join(format!("{id}.log"));
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        Ok(f) => Stdio::from(f),
        Err(e) => panic!("cannot open {}: {e}", path.display()),
    }
}

/// `status --node ADDR --json`, or `None` if the node does not answer (within 10 s).
pub fn status(addr: &str) -> Option<serde_json::Value> {
    let out = Command::new(BIN)
        .args(["status", "--node", addr, "--json"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// The leader's view of follower `id` of partition t/0: `(in_sync, lag)`, if it knows it.
pub fn follower_state(leader_status: &serde_json::Value, id: &str) -> Option<(bool, u64)> {
    leader_status["partitions"][0]["followers"]
        .as_array()?
        .iter()
        .find(|f| f["node_id"] == id)
        .map(|f| (f["in_sync"] == true, f["lag"].as_u64().unwrap_or(u64::MAX)))
}

/// Polls `cond` every 20 ms until it holds; panics naming `what` after `timeout`.
pub fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `produce --node ADDR --log t/0 --acks LEVEL --print-acks`, fed lines by the test. The
/// acknowledged offsets are collected as they are printed.
pub struct Producer {
    proc: Proc,
    stdin: Option<ChildStdin>,
    acks: Arc<Mutex<Vec<u64>>>,
    reader: Option<JoinHandle<()>>,
    /// Every value sent, in order.
    pub sent: Vec<Vec<u8>>,
}

impl Producer {
    pub fn start(node: &str, acks: &str, batch: usize) -> Producer {
        let mut child = Proc(
            Command::new(BIN)
                .args(["produce", "--node", node, "--log", "t/0", "--acks", acks])
                .args(["--print-acks", "--batch", &batch.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn produce"),
        );
        let stdin = child.0.stdin.take();
        let stdout = child.0.stdout.take().unwrap();
        let acks = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let acks = acks.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(o) = line.strip_prefix("acked ").and_then(|o| o.parse().ok()) {
                        acks.lock().unwrap().push(o);
                    }
                }
            })
        };
        Producer {
            proc: child,
            stdin,
            acks,
            reader: Some(reader),
            sent: Vec::new(),
        }
    }

    /// Sends one line; false once the producer no longer reads (it exited).
    pub fn send(&mut self, value: Vec<u8>) -> bool {
        let Some(stdin) = self.stdin.as_mut() else {
            return false;
        };
        // A line is only counted as sent once it is in the pipe: a partial write cannot
        // happen for lines this short (below PIPE_BUF).
        let mut line = value.clone();
        line.push(b'\n');
        if stdin.write_all(&line).is_err() {
            self.stdin = None;
            return false;
        }
        self.sent.push(value);
        true
    }

    /// The acknowledged offsets so far, in the order printed.
    pub fn acks(&self) -> Vec<u64> {
        self.acks.lock().unwrap().clone()
    }

    /// Whether the producer process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.proc.0.try_wait(), Ok(Some(_)))
    }

    /// Closes its input and gives it `grace` to send what is left; then kills it (a produce
    /// waiting on a deposed leader may wait out its 30 s timeout). Returns the acks.
    pub fn finish(mut self, grace: Duration) -> Vec<u64> {
        self.stdin = None;
        let started = Instant::now();
        while started.elapsed() < grace && !self.exited() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.proc.0.kill();
        let _ = self.proc.0.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.acks()
    }
}

/// Partition t/0 of the store in `dir`, read-only (the node may keep running): every batch
/// that ends below `upto`, as `(offset, value)` records and the bytes of those batches.
pub fn read_log(dir: &Path, upto: u64) -> (Vec<(u64, Vec<u8>)>, Vec<u8>) {
    let log = Log::open(
        stratalog::store::partition_dir(dir, "t", 0),
        LogOptions {
            read_only: true,
            create: false,
            ..Default::default()
        },
    )
    .unwrap();
    let (mut records, mut bytes) = (Vec::new(), Vec::new());
    let mut next = log.start_offset();
    'outer: while next < upto.min(log.end_offset()) {
        let batches = log.read(next, 1 << 20).unwrap();
        if batches.is_empty() {
            break;
        }
        for batch in batches {
            if batch.last_offset() >= upto {
                break 'outer;
            }
            bytes.extend_from_slice(batch.as_bytes());
            for r in batch.records().unwrap() {
                let r = r.unwrap();
                records.push((r.offset, r.value.to_vec()));
            }
            next = batch.last_offset() + 1;
        }
    }
    (records, bytes)
}

/// Checks a producer's acknowledgements against a replica's records: for each `acked X`, the
/// record at offset X is one this producer sent, and every value it sent before that one is
/// in the log below X, in the order sent. Returns how many of its values are acknowledged.
pub fn check_acked(who: &str, records: &[(u64, Vec<u8>)], sent: &[Vec<u8>], acks: &[u64]) -> usize {
    let Some(&last) = acks.iter().max() else {
        return 0;
    };
    let at: std::collections::HashMap<u64, &Vec<u8>> =
        records.iter().map(|(o, v)| (*o, v)).collect();
    let mut covered = 0usize;
    for &x in acks {
        let v = at
            .get(&x)
            .unwrap_or_else(|| panic!("{who}: acknowledged offset {x} is not in the log"));
        let j = sent.iter().position(|s| s == *v).unwrap_or_else(|| {
            panic!(
                "{who}: acknowledged offset {x} holds {:?}, which this producer never sent",
                String::from_utf8_lossy(v)
            )
        });
        covered = covered.max(j + 1);
    }
    // Every value up to the last acknowledged one, in order, at offsets up to `last`.
    let mut want = sent[..covered].iter();
    let mut next = want.next();
    for (o, v) in records {
        if *o > last {
            break;
        }
        if Some(v) == next {
            next = want.next();
        }
    }
    assert!(
        next.is_none(),
        "{who}: acknowledged value {:?} is missing (or out of order) below offset {last}",
        next.map(|v| String::from_utf8_lossy(v).into_owned())
    );
    covered
}
