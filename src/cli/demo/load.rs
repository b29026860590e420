//! The demo's load: producers (threads of the demo, talking the protocol through the library
//! client, so that every acknowledgement is timed) and the consumer group (a `consume --node
//! --group` child process, whose JSON lines are checked as they come).

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::ChildStdout;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use stratalog::replication::transport::Client;
use stratalog::replication::{Acks, ErrorCode, Message};
use stratalog::store::Partitioner;
use stratalog::{BatchBuilder, Compression, Record};

use super::check::{self, KeyValue};

/// Records per produce request (before they are split by partition).
const RECORDS_PER_ROUND: usize = 32;
/// Distinct keys (the partitioner spreads them).
const KEYS: u64 = 1000;
/// How long a producer keeps trying to get one batch acknowledged before it gives up.
const GIVE_UP: Duration = Duration::from_secs(60);

/// One acknowledgement.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    /// Seconds since the demo's load started, when the acknowledgement arrived.
    pub at: f64,
    /// From the batch's first send to its acknowledgement (retries included), microseconds.
    pub latency_us: u64,
    /// Records in the batch.
    pub records: u32,
    /// Which node acknowledged it (index in the node list; `usize::MAX` if another).
    pub node: usize,
    /// The partition it was written to.
    pub partition: u32,
}

/// What the load threads share with the demo.
pub struct Shared {
    /// When the load started (the zero of every `at`).
    pub start: Instant,
    /// Set to stop the producers (each finishes the batch it is sending).
    pub stop: AtomicBool,
    /// Every acknowledgement, in the order received.
    pub acks: Mutex<Vec<Ack>>,
    /// Records acknowledged so far.
    pub acked: AtomicU64,
    /// Records sent so far (acknowledged or not).
    pub sent: AtomicU64,
    /// Distinct records consumed so far, and records the consumer printed in all.
    pub consumed: Mutex<HashSet<KeyValue>>,
    /// Lines the consumer printed.
    pub consumed_lines: AtomicU64,
    /// Consumed records that failed [`check::check_record`] (or a line that is not JSON).
    pub corrupt: Mutex<Vec<String>>,
}

impl Shared {
    /// A new, empty state, its clock starting now.
    pub fn new() -> Shared {
        Shared {
            start: Instant::now(),
            stop: AtomicBool::new(false),
            acks: Mutex::new(Vec::new()),
            acked: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            consumed: Mutex::new(HashSet::new()),
            consumed_lines: AtomicU64::new(0),
            corrupt: Mutex::new(Vec::new()),
        }
    }

    /// Seconds since the start.
    pub fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Distinct records consumed.
    pub fn consumed_count(&self) -> u64 {
        self.consumed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len() as u64
    }

    /// Records acknowledged in the last `window` seconds, per second.
    pub fn recent_rate(&self, window: f64) -> f64 {
        let now = self.now();
        let acks = self.acks.lock().unwrap_or_else(PoisonError::into_inner);
        let n: u64 = acks
            .iter()
            .rev()
            .take_while(|a| a.at >= now - window)
            .map(|a| u64::from(a.records))
            .sum();
        n as f64 / window.min(now).max(1e-3)
    }
}

/// What a producer did.
pub struct ProducerResult {
    /// Every record acknowledged.
    pub acked: Vec<KeyValue>,
    /// Why it stopped early, if it did.
    pub error: Option<String>,
}

/// A producer thread: records keyed over `KEYS` keys, routed by `partitioner`, sent at
/// `acks=all` to whichever of `nodes` leads, until `shared.stop` is set.
pub fn start_producer(
    id: u32,
    nodes: Vec<SocketAddr>,
    partitioner: Partitioner,
    topic: String,
    shared: Arc<Shared>,
) -> JoinHandle<ProducerResult> {
    std::thread::Builder::new()
        .name(format!("demo-producer-{id}"))
        .spawn(move || {
            let mut p = Producer {
                nodes,
                client: None,
                topic,
                shared,
            };
            let mut acked = Vec::new();
            let error = p.run(id, &partitioner, &mut acked).err();
            ProducerResult { acked, error }
        })
        .expect("spawn a producer thread")
}

struct Producer {
    nodes: Vec<SocketAddr>,
    /// The connection, and the index of its node in `nodes` (`usize::MAX`: another).
    client: Option<(usize, Client)>,
    topic: String,
    shared: Arc<Shared>,
}

impl Producer {
    fn run(
        &mut self,
        id: u32,
        partitioner: &Partitioner,
        acked: &mut Vec<KeyValue>,
    ) -> Result<(), String> {
        let mut seq = 0u64;
        let mut rng = 0x5eed_u64 ^ (u64::from(id) << 32);
        while !self.shared.stop.load(Ordering::SeqCst) {
            let mut by_partition: BTreeMap<u32, Vec<KeyValue>> = BTreeMap::new();
            for _ in 0..RECORDS_PER_ROUND {
                rng = rng
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let key = format!("user-{}", (rng >> 33) % KEYS).into_bytes();
                let value = check::record_value(&key, id, seq);
                seq += 1;
                let p = partitioner.partition(Some(&key));
                by_partition.entry(p).or_default().push((key, value));
            }
            for (partition, records) in by_partition {
                self.shared
                    .sent
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
                self.send(partition, &records)?;
                self.shared
                    .acked
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
                acked.extend(records);
            }
        }
        Ok(())
    }

    /// Sends one batch until it is acknowledged (following the leader across a failover).
    fn send(&mut self, partition: u32, records: &[KeyValue]) -> Result<(), String> {
        let mut batch = BatchBuilder::new(Compression::None);
        let ts = stratalog::now_ms();
        for (key, value) in records {
            batch
                .push(&Record {
                    timestamp: ts,
                    key: Some(key),
                    value,
                    headers: &[],
                })
                .map_err(|e| format!("record refused: {e}"))?;
        }
        let mut encoded = batch.encode(0).map_err(|e| format!("batch refused: {e}"))?;
        encoded.stamp(0);
        let request = Message::ProduceRequest {
            topic: self.topic.clone(),
            partition,
            acks: Acks::All,
            timeout_ms: 10_000,
            batches: Bytes::copy_from_slice(encoded.as_bytes()),
        };
        let first_sent = Instant::now();
        let mut next_node = 0usize;
        let mut last_error = String::new();
        loop {
            if first_sent.elapsed() > GIVE_UP {
                return Err(format!(
                    "a batch was not acknowledged within {} s: {last_error}",
                    GIVE_UP.as_secs()
                ));
            }
            let (index, client) = match self.client.as_mut() {
                Some((i, c)) => (*i, c),
                None => {
                    let i = next_node % self.nodes.len();
                    next_node += 1;
                    match Client::connect(self.nodes[i], Duration::from_secs(15)) {
                        Ok(c) => {
                            self.client = Some((i, c));
                            continue;
                        }
                        Err(e) => {
                            last_error = e.to_string();
                            if next_node.is_multiple_of(self.nodes.len()) {
                                std::thread::sleep(Duration::from_millis(10));
                            }
                            continue;
                        }
                    }
                }
            };
            let answer = match client.call(&request) {
                Ok(a) => a,
                Err(e) => {
                    // The node died or closed the connection: try the next one.
                    last_error = e.to_string();
                    self.client = None;
                    continue;
                }
            };
            match answer {
                Message::ProduceResponse {
                    error: ErrorCode::None,
                    ..
                } => {
                    let latency = first_sent.elapsed();
                    let ack = Ack {
                        at: self.shared.now(),
                        latency_us: latency.as_micros() as u64,
                        records: records.len() as u32,
                        node: index,
                        partition,
                    };
                    self.shared
                        .acks
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(ack);
                    return Ok(());
                }
                Message::ErrorResponse {
                    error: ErrorCode::NotLeader,
                    leader,
                    ..
                } if !leader.is_empty() => {
                    last_error = format!("not the leader; the leader is {leader}");
                    self.client = None;
                    if let Ok(addr) = leader.parse::<SocketAddr>() {
                        let i = self
                            .nodes
                            .iter()
                            .position(|n| *n == addr)
                            .unwrap_or(usize::MAX);
                        if let Ok(c) = Client::connect(addr, Duration::from_secs(15)) {
                            self.client = Some((i, c));
                        }
                    }
                    if self.client.is_none() {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                Message::ErrorResponse { error, message, .. } => {
                    // A node that does not know the leader yet, or is starting: another.
                    last_error = format!("{}: {message}", error.name());
                    self.client = None;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Message::ProduceResponse { error, .. } => {
                    // Not acknowledged (a leader change, a follower leaving the in-sync
                    // set): sent again, at least once.
                    last_error = error.name().to_string();
                    if error == ErrorCode::NotLeader {
                        self.client = None;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => {
                    return Err(format!("a produce was answered with {other:?}"));
                }
            }
        }
    }
}

/// Reads the JSON lines of a `consume --format json` process into `shared`: every record is
/// checked ([`check::check_record`]) and kept by key and value.
pub fn read_consumer(stdout: ChildStdout, shared: Arc<Shared>) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("demo-consumer-reader".into())
        .spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                shared.consumed_lines.fetch_add(1, Ordering::Relaxed);
                match parse_line(&line) {
                    Ok(kv) => {
                        shared
                            .consumed
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(kv);
                    }
                    Err(e) => shared
                        .corrupt
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(e),
                }
            }
        })
        .expect("spawn the consumer reader")
}

/// One line of `consume --format json`: its key and value, checked.
fn parse_line(line: &str) -> Result<KeyValue, String> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("a consumed line is not JSON ({e})"))?;
    let bytes = |field: &str| -> Option<Vec<u8>> {
        let hex = v[field]["hex"].as_str()?;
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect()
    };
    let key = bytes("key");
    let value = bytes("value").ok_or("a consumed record has no value")?;
    let at = format!(
        "partition {} offset {}",
        v["partition"].as_u64().unwrap_or(u64::MAX),
        v["offset"].as_u64().unwrap_or(u64::MAX)
    );
    check::check_record(key.as_deref(), &value).map_err(|e| format!("{at}: {e}"))?;
    Ok((key.unwrap_or_default(), value))
}
