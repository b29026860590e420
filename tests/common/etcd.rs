//! A real `etcd` for the coordinator tests: one member on 127.0.0.1 with free ports and a
//! temporary data directory, killed (and its directory removed) when dropped, also when a
//! test panics. A missing `etcd` fails the test (never skipped): `.ci/run` installs it.
//!
//! Included with `#[path = "common/etcd.rs"] mod etcd;` beside `common/cluster.rs`.
#![allow(
    dead_code,
    reason = "each test file includes this module and uses only some of its helpers; `expect` would fail in the files that use them all"
)]

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stratalog::replication::coordinator::{ClusterView, CoordinatorOptions, describe};

/// A running etcd member.
pub struct Etcd {
    child: Child,
    /// Its client address (`127.0.0.1:PORT`).
    pub client: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd with a short election timeout, so that it grants leases of one second
    /// (its minimum lease is 1.5 election timeouts), and waits until it answers.
    pub fn start() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let ports = crate::common::free_addrs(2);
        let (client, peer) = (ports[0].clone(), ports[1].clone());
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &format!("http://{client}")])
            .args(["--advertise-client-urls", &format!("http://{client}")])
            .args(["--listen-peer-urls", &format!("http://{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://{peer}")])
            .args(["--initial-cluster", &format!("t=http://{peer}")])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "etcd must be installed for these tests (Debian: etcd-server; .ci/run installs it)",
            );
        let etcd = Etcd {
            child,
            client,
            _dir: dir,
        };
        let started = Instant::now();
        loop {
            if TcpStream::connect(&etcd.client).is_ok()
                && describe(&etcd.options("probe"), Duration::from_secs(2)).is_ok()
            {
                return etcd;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "etcd did not answer on {} within 30 s",
                etcd.client
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `etcd://ADDR`.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.client)
    }

    /// Coordinator options naming this etcd and `cluster`.
    pub fn options(&self, cluster: &str) -> CoordinatorOptions {
        let mut o = CoordinatorOptions::from_url(&self.url()).unwrap();
        o.cluster = cluster.to_string();
        o
    }

    /// The cluster's keys, or `None` if etcd does not answer (within 2 s).
    pub fn view(&self, cluster: &str) -> Option<ClusterView> {
        describe(&self.options(cluster), Duration::from_secs(2)).ok()
    }
}

/// Three etcd members forming one cluster on 127.0.0.1, each killed (and its directory
/// removed) when dropped.
pub struct EtcdCluster {
    /// The members; `None` once killed with [`EtcdCluster::kill`].
    pub members: Vec<Option<Etcd>>,
}

impl EtcdCluster {
    /// Starts three members (short election timeout, as [`Etcd::start`]) and waits until the
    /// cluster answers.
    pub fn start() -> EtcdCluster {
        let ports = crate::common::free_addrs(6);
        let names = ["m0", "m1", "m2"];
        let initial: Vec<String> = (0..3)
            .map(|i| format!("{}=http://{}", names[i], ports[2 * i + 1]))
            .collect();
        let initial = initial.join(",");
        let members: Vec<Option<Etcd>> = (0..3)
            .map(|i| {
                let dir = tempfile::tempdir().unwrap();
                let (client, peer) = (ports[2 * i].clone(), ports[2 * i + 1].clone());
                let child = Command::new("etcd")
                    .args(["--name", names[i], "--data-dir"])
                    .arg(dir.path().join("data"))
                    .args(["--listen-client-urls", &format!("http://{client}")])
                    .args(["--advertise-client-urls", &format!("http://{client}")])
                    .args(["--listen-peer-urls", &format!("http://{peer}")])
                    .args(["--initial-advertise-peer-urls", &format!("http://{peer}")])
                    .args(["--initial-cluster", &initial])
                    .args(["--initial-cluster-state", "new"])
                    .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("etcd must be installed for these tests (Debian: etcd-server)");
                Some(Etcd {
                    child,
                    client,
                    _dir: dir,
                })
            })
            .collect();
        let cluster = EtcdCluster { members };
        let started = Instant::now();
        while cluster.view("probe").is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the etcd cluster did not answer within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// `etcd://A,B,C`: every member.
    pub fn url(&self) -> String {
        let clients: Vec<&str> = self
            .members
            .iter()
            .flatten()
            .map(|m| m.client.as_str())
            .collect();
        format!("etcd://{}", clients.join(","))
    }

    /// The cluster's keys as the members still running see them.
    pub fn view(&self, cluster: &str) -> Option<ClusterView> {
        let mut o = CoordinatorOptions::from_url(&self.url()).ok()?;
        o.cluster = cluster.to_string();
        describe(&o, Duration::from_secs(2)).ok()
    }

    /// Kills member `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        self.members[i] = None;
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `stratalog serve` under a coordinator at `url` electing one leader of every partition
/// (`--node-wide-leader`): lease `lease_ms`, three replicas, two in sync for `acks=all`, a
/// follower out of sync after 1 s.
pub fn serve(
    dir: &std::path::Path,
    id: &str,
    listen: &str,
    url: &str,
    cluster: &str,
    lease_ms: u64,
) -> crate::cluster::Proc {
    serve_with(
        dir,
        id,
        listen,
        url,
        cluster,
        lease_ms,
        &["--node-wide-leader"],
    )
}

/// `stratalog serve` under a coordinator with the default election (a leader per partition)
/// and `extra` arguments (`--unclean-election`, `--node-wide-leader`).
pub fn serve_with(
    dir: &std::path::Path,
    id: &str,
    listen: &str,
    url: &str,
    cluster: &str,
    lease_ms: u64,
    extra: &[&str],
) -> crate::cluster::Proc {
    let lease = lease_ms.to_string();
    let mut args = vec![
        "--coordinator",
        url,
        "--cluster",
        cluster,
        "--lease-ms",
        &lease,
        "--replicas",
        "3",
        "--min-in-sync",
        "2",
        "--replica-lag-timeout",
        "1000",
    ];
    args.extend_from_slice(extra);
    crate::cluster::serve(dir, id, listen, None, &args)
}

/// `serve_with`, its standard error (the node's log, `warn` and above unless `RUST_LOG` says
/// otherwise) written to `log`.
#[expect(
    clippy::too_many_arguments,
    reason = "serve_with's arguments and the log file"
)]
pub fn serve_logged(
    dir: &std::path::Path,
    id: &str,
    listen: &str,
    url: &str,
    cluster: &str,
    lease_ms: u64,
    extra: &[&str],
    log: &std::path::Path,
) -> crate::cluster::Proc {
    use std::io::BufRead;
    let lease = lease_ms.to_string();
    let file = std::fs::File::create(log).expect("create the node's log file");
    let mut cmd = Command::new(crate::cluster::BIN);
    cmd.args(["serve", "--dir", dir.to_str().unwrap(), "--node-id", id])
        .args([
            "--listen",
            listen,
            "--coordinator",
            url,
            "--cluster",
            cluster,
        ])
        .args([
            "--lease-ms",
            &lease,
            "--replicas",
            "3",
            "--min-in-sync",
            "2",
        ])
        .args(["--replica-lag-timeout", "1000"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(file));
    let mut child = crate::cluster::Proc(cmd.spawn().expect("spawn serve"));
    let mut line = String::new();
    std::io::BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on "), "serve printed {line:?}");
    child
}

/// Creates `topic` with `partitions` partitions (round-robin partitioner) in each directory.
pub fn create_topic_partitions(dirs: &[std::path::PathBuf], topic: &str, partitions: u32) {
    for d in dirs {
        let ok = Command::new(crate::cluster::BIN)
            .args(["topics", "create", "--dir", d.to_str().unwrap(), topic])
            .args(["--partitions", &partitions.to_string()])
            .args(["--partitioner", "round-robin"])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "topics create {topic} in {}", d.display());
    }
}

/// `produce --node NODES --topic TOPIC --acks LEVEL --batch 1 --print-acks`, fed lines
/// `<prefix>-<n>` by the test, keyless, so the topic's round-robin partitioner spreads them.
/// One line per batch, each acknowledged before the next is sent: the k-th
/// `acked <partition> <offset>` line acknowledges the k-th line sent. The producer exits on
/// an error it cannot retry (with one node, a leader that stops leading): lines sent after
/// that are never acknowledged.
pub struct TopicProducer {
    proc: crate::cluster::Proc,
    stdin: Option<std::process::ChildStdin>,
    acks: std::sync::Arc<std::sync::Mutex<Vec<(u32, u64)>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    prefix: String,
    /// Every value sent, in order.
    pub sent: Vec<Vec<u8>>,
}

impl TopicProducer {
    pub fn start(nodes: &str, topic: &str, acks: &str, prefix: &str) -> TopicProducer {
        use std::io::BufRead;
        let mut child = crate::cluster::Proc(
            Command::new(crate::cluster::BIN)
                .args(["produce", "--node", nodes, "--topic", topic])
                .args(["--acks", acks, "--print-acks", "--batch", "1"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn produce"),
        );
        let stdin = child.0.stdin.take();
        let stdout = child.0.stdout.take().unwrap();
        let acks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let reader = {
            let acks = acks.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                {
                    let mut it = line.split(' ');
                    if let (Some("acked"), Some(p), Some(o)) = (it.next(), it.next(), it.next())
                        && let (Ok(p), Ok(o)) = (p.parse(), o.parse())
                    {
                        acks.lock().unwrap().push((p, o));
                    }
                }
            })
        };
        TopicProducer {
            proc: child,
            stdin,
            acks,
            reader: Some(reader),
            prefix: prefix.to_string(),
            sent: Vec::new(),
        }
    }

    /// How many lines were acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acks.lock().unwrap().len()
    }

    /// The acknowledgements so far, `(partition, offset)`, in the order of the lines sent.
    pub fn acks(&self) -> Vec<(u32, u64)> {
        self.acks.lock().unwrap().clone()
    }

    /// Sends lines while fewer than `window` wait for their acknowledgement.
    pub fn feed(&mut self, window: usize) {
        use std::io::Write;
        while self.sent.len() - self.acked() < window {
            let Some(stdin) = self.stdin.as_mut() else {
                return;
            };
            let value = format!("{}-{}", self.prefix, self.sent.len()).into_bytes();
            let mut line = value.clone();
            line.push(b'\n');
            if stdin.write_all(&line).is_err() {
                self.stdin = None;
                return;
            }
            self.sent.push(value);
        }
    }

    /// Whether the producer process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.proc.0.try_wait(), Ok(Some(_)))
    }

    /// Closes its input, gives it `grace` to finish, kills it; returns what was sent and the
    /// acknowledgements.
    pub fn finish(mut self, grace: Duration) -> (Vec<Vec<u8>>, Vec<(u32, u64)>) {
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
        let acks = self.acks.lock().unwrap().clone();
        (std::mem::take(&mut self.sent), acks)
    }
}

/// Every record of `topic/p` in the store at `dir` (read-only: the node may run): offset to
/// value.
pub fn read_partition(
    dir: &std::path::Path,
    topic: &str,
    p: u32,
) -> std::collections::HashMap<u64, Vec<u8>> {
    let log = stratalog::Log::open(
        stratalog::store::partition_dir(dir, topic, p),
        stratalog::LogOptions {
            read_only: true,
            create: false,
            ..Default::default()
        },
    )
    .unwrap();
    let mut out = std::collections::HashMap::new();
    let mut next = log.start_offset();
    while next < log.end_offset() {
        let batches = log.read(next, 1 << 20).unwrap();
        if batches.is_empty() {
            break;
        }
        for batch in batches {
            for r in batch.records().unwrap() {
                let r = r.unwrap();
                out.insert(r.offset, r.value.to_vec());
            }
            next = batch.last_offset() + 1;
        }
    }
    out
}

/// Checks that acknowledgement `k` of `acks` (those `which` selects) names, on the replica
/// in `dir` (node `who`), the record `sent[k]` at its offset. Returns how many were checked.
pub fn check_topic_acks(
    who: &str,
    dir: &std::path::Path,
    topic: &str,
    partitions: u32,
    sent: &[Vec<u8>],
    acks: &[(u32, u64)],
    which: impl Fn(usize, u32) -> bool,
) -> usize {
    assert!(acks.len() <= sent.len(), "more acknowledgements than lines");
    let logs: Vec<_> = (0..partitions)
        .map(|p| read_partition(dir, topic, p))
        .collect();
    let mut checked = 0;
    for (k, &(p, o)) in acks.iter().enumerate() {
        if !which(k, p) {
            continue;
        }
        let v = logs[p as usize].get(&o).unwrap_or_else(|| {
            panic!("{who}: acknowledged {topic}/{p} offset {o} (line {k}) is not in the log")
        });
        assert_eq!(
            v,
            &sent[k],
            "{who}: {topic}/{p} offset {o} holds {:?}, not the line {:?} acknowledged there",
            String::from_utf8_lossy(v),
            String::from_utf8_lossy(&sent[k])
        );
        checked += 1;
    }
    checked
}

impl Etcd {
    /// A request to etcd's JSON gateway (`POST /v3/<path>`, keys and values in base64, see
    /// [`b64`]), for what the coordinator API does not do: crafting keys. Its JSON answer.
    pub fn gateway(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        use std::io::{Read, Write};
        let body = body.to_string();
        let mut s = TcpStream::connect(&self.client).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "POST /v3/{path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.client,
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        let (head, json) = answer
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("etcd answered {answer:?}"));
        assert!(head.contains(" 200 "), "etcd answered {answer:?}");
        // A chunked answer: the JSON object is between its first '{' and last '}'.
        let (from, to) = (json.find('{').unwrap(), json.rfind('}').unwrap());
        serde_json::from_str(&json[from..=to]).unwrap()
    }
}

/// Standard base64 of `bytes` (etcd's JSON gateway carries keys and values so).
pub fn b64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
