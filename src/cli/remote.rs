//! `consume --node ADDR` and `produce --node ADDR`: the same output as their `--dir` forms,
//! through a node over the protocol (consumers read up to the high watermark).

use std::io::{self, BufRead, BufWriter, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use stratalog::replication::node::split_batches;
use stratalog::replication::transport::Client;
use stratalog::replication::{Acks, ErrorCode, FetchRole, Message, TopicMetadata};
use stratalog::store::Partitioner;
use stratalog::{BatchBuilder, Compression, Record};

use super::consume::{Format, From, Options, STOP, record_json};
use super::produce::Router;
use super::{CliError, context, is_broken_pipe};

/// How long one fetch may wait on the node with `--follow`.
const FOLLOW_WAIT_MS: u32 = 500;
/// Leader changes followed before giving up (a loop of redirects).
const MAX_REDIRECTS: usize = 8;

/// Where one partition is read.
struct Cursor {
    partition: u32,
    next: Option<u64>,
    /// The node's high watermark at the last answer.
    high_watermark: u64,
    /// The leader's epoch at the last answer (a commit names it).
    epoch: u64,
    /// `next` came from the group's commit (out of range: start over, as `--dir` does).
    from_commit: bool,
    /// With `--group`: records printed since the last commit, and the offset last committed.
    since: u64,
    committed: Option<u64>,
}

/// A connection that follows `NotLeader` answers to the leader, and, when several addresses
/// were given, moves to the next one when a node does not answer.
struct Conn {
    nodes: Vec<String>,
    /// The address in use, in `nodes` or a leader named by a node.
    current: String,
    client: Client,
}

/// With several addresses: how long a client keeps looking for a node that answers (a
/// failover takes this long at most before the client gives up).
const FAILOVER_WAIT: Duration = Duration::from_secs(30);

fn connect(addr: &str) -> Result<Client, CliError> {
    let sock: SocketAddr = addr
        .to_socket_addrs()
        .map_err(context(format!("cannot resolve {addr}")))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to no address"))?;
    Client::connect(sock, Duration::from_secs(30))
        .map_err(|e| -> CliError { format!("{addr}: {e}").into() })
}

impl Conn {
    /// Connects to the first of the comma-separated `nodes` that answers.
    fn open(nodes: &str) -> Result<Conn, CliError> {
        let nodes: Vec<String> = nodes
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(String::from)
            .collect();
        if nodes.is_empty() {
            return Err("--node needs an address (HOST:PORT[,HOST:PORT...])".into());
        }
        let mut errors = Vec::new();
        for n in &nodes {
            match connect(n) {
                Ok(client) => {
                    return Ok(Conn {
                        current: n.clone(),
                        nodes: nodes.clone(),
                        client,
                    });
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        Err(format!("no node answers: {}", errors.join("; ")).into())
    }

    /// Several addresses were given: failures are worth a retry elsewhere.
    fn can_fail_over(&self) -> bool {
        self.nodes.len() > 1
    }

    /// Connects to the next address that answers, trying them in turn until
    /// [`FAILOVER_WAIT`] passes.
    fn fail_over(&mut self) -> Result<(), CliError> {
        let deadline = Instant::now() + FAILOVER_WAIT;
        let first = self.nodes.iter().position(|n| *n == self.current);
        let mut i = first.map_or(0, |i| i + 1);
        loop {
            let n = self.nodes[i % self.nodes.len()].clone();
            if let Ok(client) = connect(&n) {
                tracing::info!(node = n, "moved to another node");
                self.client = client;
                self.current = n;
                return Ok(());
            }
            i += 1;
            if Instant::now() >= deadline {
                return Err(format!(
                    "no node of {} answered for {} s",
                    self.nodes.join(","),
                    FAILOVER_WAIT.as_secs()
                )
                .into());
            }
            if i % self.nodes.len() == 0 {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// What the node knows of `topic` (a metadata request).
    fn topic(&mut self, topic: &str) -> Result<TopicMetadata, CliError> {
        let Message::MetadataResponse { topics, .. } = self.call(&Message::MetadataRequest)? else {
            return Err("the node answered a metadata request with something else".into());
        };
        topics
            .into_iter()
            .find(|t| t.topic == topic)
            .ok_or_else(|| format!("no topic {topic:?} on {}", self.current).into())
    }

    /// Sends `request`; on `NotLeader` with an address, reconnects there and sends it again.
    /// With several addresses, a node that does not answer, or answers `NotLeader` without
    /// naming a leader (a failover under way), makes it try the others.
    fn call(&mut self, request: &Message) -> Result<Message, CliError> {
        let deadline = Instant::now() + FAILOVER_WAIT;
        let mut redirects = 0;
        loop {
            let answer = match self.client.call(request) {
                Ok(answer) => answer,
                Err(e) if self.can_fail_over() && Instant::now() < deadline => {
                    tracing::info!(node = self.current, error = %e, "the node does not answer");
                    self.fail_over()?;
                    continue;
                }
                Err(e) => return Err(format!("{}: {e}", self.current).into()),
            };
            let leader = match &answer {
                Message::ErrorResponse {
                    error: ErrorCode::NotLeader,
                    leader,
                    ..
                } if !leader.is_empty() => leader.clone(),
                Message::ErrorResponse {
                    error: ErrorCode::NotLeader,
                    ..
                }
                | Message::FetchResponse {
                    error: ErrorCode::NotLeader,
                    ..
                } => {
                    if self.can_fail_over() && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(200));
                        self.fail_over()?;
                        continue;
                    }
                    return Err("the node does not lead and did not name its leader".into());
                }
                _ => return Ok(answer),
            };
            redirects += 1;
            if redirects > MAX_REDIRECTS {
                return Err("too many leader changes; try again".into());
            }
            tracing::info!(leader, "the node does not lead; asking the leader");
            match connect(&leader) {
                Ok(client) => {
                    self.client = client;
                    self.current = leader;
                }
                Err(_) if self.can_fail_over() && Instant::now() < deadline => {
                    // The node named a leader that is gone (a failover under way, the others
                    // still name it until a new one is elected): not a leader change.
                    redirects -= 1;
                    std::thread::sleep(Duration::from_millis(100));
                    self.fail_over()?;
                }
                Err(_) if self.can_fail_over() => self.fail_over()?,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Runs `consume --node`.
pub fn consume(node: &str, o: &Options) -> Result<(), CliError> {
    let mut conn = Conn::open(node)?;
    let (topic, partitions) = match &o.topic {
        Some(topic) => {
            let t = conn.topic(topic)?;
            (topic.clone(), (0..t.partitions).collect::<Vec<u32>>())
        }
        None => {
            let (topic, p) = o
                .log
                .name
                .split_once('/')
                .and_then(|(t, p)| Some((t.to_string(), p.parse::<u32>().ok()?)))
                .ok_or("with --node, name a partition: --log TOPIC/PARTITION (or --topic)")?;
            (topic, vec![p])
        }
    };
    let label = |p: u32| o.topic.is_some().then_some(p);
    let mut cursors = Vec::with_capacity(partitions.len());
    for &partition in &partitions {
        let committed = match &o.group {
            Some(group) => fetch_committed(&mut conn, group, &topic, partition)?,
            None => None,
        };
        let from_time = match (committed, o.from_time) {
            (None, Some(ts)) => Some(super::consume::node_offset_for_time(
                &mut |m| conn.call(m),
                &topic,
                partition,
                ts,
            )?),
            _ => None,
        };
        cursors.push(Cursor {
            partition,
            next: match (committed, o.from) {
                (Some(c), _) => Some(c),
                (None, Some(From::Offset(n))) => Some(n),
                _ => from_time,
            },
            high_watermark: 0,
            epoch: 0,
            from_commit: committed.is_some(),
            since: 0,
            committed,
        });
    }
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut left = o.max.unwrap_or(u64::MAX);
    let mut fetch_conns: std::collections::HashMap<u32, Conn> = std::collections::HashMap::new();
    let result = (|| -> Result<(), CliError> {
        loop {
            let mut progressed = false;
            for c in cursors.iter_mut() {
                if left == 0 {
                    return Ok(());
                }
                // Each partition is fetched from its own leader (per-partition leadership
                // under etcd); the group's calls stay on `conn`.
                let fetching = match fetch_conns.entry(c.partition) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => e.insert(Conn::open(node)?),
                };
                let printed = fetch_and_print(fetching, &topic, c, o, label, &mut left, &mut out)?;
                progressed |= printed > 0;
                if let Some(group) = &o.group {
                    let caught_up = c.next.is_some_and(|n| n >= c.high_watermark);
                    let moved = c.next.is_some() && c.committed != c.next;
                    if moved && (caught_up || left == 0) {
                        // At least once: what is committed was written out first.
                        out.flush()?;
                        commit(&mut conn, group, &topic, c)?;
                    }
                }
            }
            let caught_up = cursors
                .iter()
                .all(|c| c.next.is_some_and(|n| n >= c.high_watermark));
            if left == 0 || STOP.load(Ordering::SeqCst) || (caught_up && !o.follow) {
                if let Some(group) = &o.group {
                    out.flush()?;
                    for c in cursors.iter_mut() {
                        if c.next.is_some() && c.committed != c.next {
                            commit(&mut conn, group, &topic, c)?;
                        }
                    }
                }
                return Ok(());
            }
            if !progressed {
                out.flush()?;
            }
        }
    })();
    let flushed = out.flush();
    match result.and_then(|()| flushed.map_err(Into::into)) {
        Err(e) if is_broken_pipe(&*e) => Ok(()),
        other => other,
    }
}

/// The offset `group` committed for `topic/partition` on the node, if any.
fn fetch_committed(
    conn: &mut Conn,
    group: &str,
    topic: &str,
    partition: u32,
) -> Result<Option<u64>, CliError> {
    let request = Message::OffsetFetchRequest {
        group: group.to_string(),
        topic: topic.to_string(),
        partition,
    };
    match conn.call(&request)? {
        Message::OffsetFetchResponse {
            error: ErrorCode::None,
            committed,
        } => Ok(committed.map(|(offset, _)| offset)),
        Message::OffsetFetchResponse { error, .. } => Err(format!(
            "the node refused to tell {group}'s offset of {topic}/{partition}: {}",
            error.name()
        )
        .into()),
        other => Err(format!("the node answered an offset fetch with {other:?}").into()),
    }
}

/// Commits `c.next` for `group` on the leader (replicated before it answers). A leader change
/// since the last fetch (`FencedEpoch`) is learnt from one more fetch, and the commit made
/// again; too few replicas in sync (or a replication timeout) is waited out for up to
/// [`FAILOVER_WAIT`].
fn commit(conn: &mut Conn, group: &str, topic: &str, c: &mut Cursor) -> Result<(), CliError> {
    let Some(offset) = c.next else {
        return Ok(());
    };
    let deadline = std::time::Instant::now() + FAILOVER_WAIT;
    let mut redirects = 0;
    while redirects < MAX_REDIRECTS {
        let request = Message::OffsetCommitRequest {
            group: group.to_string(),
            topic: topic.to_string(),
            partition: c.partition,
            offset,
            epoch: c.epoch,
        };
        match conn.call(&request)? {
            Message::OffsetCommitResponse {
                error: ErrorCode::None,
            } => {
                c.committed = Some(offset);
                c.since = 0;
                return Ok(());
            }
            Message::OffsetCommitResponse {
                error: ErrorCode::NotEnoughReplicas | ErrorCode::Timeout,
            } if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Message::OffsetCommitResponse {
                error: ErrorCode::FencedEpoch | ErrorCode::LeadershipLost,
            } => {
                redirects += 1;
                let probe = Message::FetchRequest {
                    role: FetchRole::Consumer,
                    node_id: String::new(),
                    topic: topic.to_string(),
                    partition: c.partition,
                    offset,
                    last_epoch: 0,
                    leader_epoch: 0,
                    max_bytes: 0,
                    max_wait_ms: 0,
                    durable_end: 0,
                    topic_id: [0; 16],
                };
                if let Message::FetchResponse { epoch, .. } = conn.call(&probe)? {
                    c.epoch = epoch;
                }
            }
            Message::OffsetCommitResponse { error } => {
                return Err(format!(
                    "commit of {topic}/{} at {offset} for {group} refused: {} (the records since \
                     the last commit will be read again)",
                    c.partition,
                    error.name()
                )
                .into());
            }
            other => {
                return Err(format!("the node answered an offset commit with {other:?}").into());
            }
        }
    }
    Err(format!(
        "commit of {topic}/{} at {offset}: the leader keeps changing",
        c.partition
    )
    .into())
}

/// One fetch for `c`; prints what it got. Returns how many records were printed.
fn fetch_and_print(
    conn: &mut Conn,
    topic: &str,
    c: &mut Cursor,
    o: &Options,
    label: impl Fn(u32) -> Option<u32>,
    left: &mut u64,
    out: &mut impl Write,
) -> Result<u64, CliError> {
    let request = |offset: u64, wait: u32| Message::FetchRequest {
        role: FetchRole::Consumer,
        node_id: String::new(),
        topic: topic.to_string(),
        partition: c.partition,
        offset,
        last_epoch: 0,
        leader_epoch: 0,
        max_bytes: 1 << 20,
        max_wait_ms: wait,
        durable_end: 0,
        topic_id: [0; 16],
    };
    let wait = if o.follow && c.next.is_some() {
        FOLLOW_WAIT_MS
    } else {
        0
    };
    let answer = conn.call(&request(c.next.unwrap_or(0), wait))?;
    let Message::FetchResponse {
        error,
        epoch,
        high_watermark,
        log_start,
        batches,
        ..
    } = answer
    else {
        return Err(format!("the node answered a fetch with {answer:?}").into());
    };
    c.high_watermark = high_watermark;
    c.epoch = epoch;
    match (error, c.next) {
        (ErrorCode::None, Some(_)) => {}
        // The first fetch learns where the partition starts (and ends).
        (ErrorCode::None | ErrorCode::OffsetOutOfRange, None) => {
            c.next = Some(match o.from {
                Some(From::End) => high_watermark,
                _ => log_start,
            });
            return Ok(0);
        }
        (ErrorCode::OffsetOutOfRange, Some(n)) if c.from_commit => {
            // As with `--dir`: a commit below the start (retention) starts at the start, one
            // past the end (a truncation) at the end.
            let at = if n < log_start {
                log_start
            } else {
                high_watermark
            };
            tracing::warn!(
                partition = c.partition,
                committed = n,
                at,
                "the committed offset is out of range; starting elsewhere"
            );
            c.next = Some(at);
            c.from_commit = false;
            return Ok(0);
        }
        (ErrorCode::OffsetOutOfRange, Some(n)) => {
            return Err(format!(
                "--from {n} is out of range: {topic}/{} holds offsets {log_start}..{high_watermark}",
                c.partition
            )
            .into());
        }
        (e, _) => {
            return Err(format!("the node refused the fetch: {}", e.name()).into());
        }
    }
    let next = c.next.unwrap_or(0);
    let batches = split_batches(batches).map_err(|e| format!("bad batch from the node: {e}"))?;
    let mut printed = 0;
    let mut at = next;
    for batch in &batches {
        let records = batch
            .records()
            .and_then(|r| r.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("corrupt records at offset {}: {e}", batch.base_offset()))?;
        let from = at;
        for record in records.iter().filter(|r| r.offset >= from) {
            if *left == 0 {
                break;
            }
            if o.format == Format::Json {
                writeln!(out, "{}", record_json(record, label(c.partition)))?;
            } else {
                out.write_all(&record.value)?;
                out.write_all(b"\n")?;
            }
            *left -= 1;
            printed += 1;
            c.since += 1;
            at = record.offset + 1;
        }
        // With `--group`, commit as often as `--commit-every` asks, within a fetch too (a
        // fetch may carry many batches).
        if let Some(group) = &o.group
            && c.since >= o.commit_every
        {
            c.next = Some(at);
            // At least once: what is committed was written out first.
            out.flush()?;
            commit(conn, group, topic, c)?;
        }
    }
    c.next = Some(at);
    Ok(printed)
}

/// A record to send: its key (if any) and value.
type KeyValue<'a> = (Option<&'a [u8]>, &'a [u8]);

/// `--acks`: `leader`, `quorum` or `all`.
pub fn parse_acks(s: &str) -> Result<Acks, String> {
    match s {
        "leader" | "1" => Ok(Acks::Leader),
        "quorum" => Ok(Acks::Quorum),
        "all" | "-1" => Ok(Acks::All),
        _ => Err(format!(
            "{s:?} is not an acknowledgement level: leader, quorum or all"
        )),
    }
}

/// Runs `produce --node`: lines of standard input (or `--count` generated records) in batches
/// of `--batch`, each sent and acknowledged before the next; `--print-acks` prints
/// `acked <offset>` for the last record of each acknowledged batch (`acked <partition>
/// <offset>` with `--topic`, whose records are routed by the topic's partitioner).
pub fn produce(node: &str, o: &super::produce::Options) -> Result<(), CliError> {
    let mut conn = Conn::open(node)?;
    // One connection per partition, each following its partition's leader: partitions may
    // have different leaders (per-partition leadership under etcd).
    let mut conns: std::collections::HashMap<u32, Conn> = std::collections::HashMap::new();
    let (topic, fixed, router) = match &o.topic {
        Some(topic) => {
            let t = conn.topic(topic)?;
            let kind = match o.partitioner {
                Some(kind) => kind,
                None => t.partitioner.parse().map_err(|e| {
                    format!(
                        "the node names partitioner {:?} for {topic}, which this client does not \
                         know ({e}); pass --partitioner",
                        t.partitioner
                    )
                })?,
            };
            let partitioner = Partitioner::new(kind, t.partitions)
                .map_err(context(format!("cannot spread over {topic}'s partitions")))?;
            (topic.clone(), None, Router::new(o, Some(partitioner)))
        }
        None => {
            let (topic, partition) = o
                .log
                .name
                .split_once('/')
                .and_then(|(t, p)| Some((t.to_string(), p.parse::<u32>().ok()?)))
                .ok_or("with --node, name a partition: --log TOPIC/PARTITION (or --topic)")?;
            (topic, Some(partition), Router::new(o, None))
        }
    };
    let headers: Vec<(&[u8], &[u8])> = o
        .headers
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect();
    let compression = o
        .compression
        .map_or(Compression::None, super::CompressionArg::into_compression);
    // The connection opened for the metadata serves the first partition sent to.
    let mut conns_first = Some(conn);
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut keyless = 0u64;
    let mut lines_read = 0u64;
    // Sends `records` (key, value) of one partition as one batch; with several nodes a batch
    // refused by a failover under way is sent again.
    let mut send_one = |partition: u32, records: &[KeyValue<'_>]| -> Result<(), CliError> {
        let mut batch = BatchBuilder::new(compression);
        let ts = stratalog::now_ms();
        for (key, value) in records {
            batch
                .push(&Record {
                    timestamp: ts,
                    key: *key,
                    value,
                    headers: &headers,
                })
                .map_err(|e| format!("record refused: {e}"))?;
        }
        let mut encoded = batch.encode(0).map_err(|e| format!("batch refused: {e}"))?;
        encoded.stamp(0);
        let request = Message::ProduceRequest {
            topic: topic.clone(),
            partition,
            acks: o.acks,
            timeout_ms: 30_000,
            batches: Bytes::copy_from_slice(encoded.as_bytes()),
        };
        let deadline = Instant::now() + FAILOVER_WAIT;
        let conn = match conns.entry(partition) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(match conns_first.take() {
                Some(c) => c,
                None => Conn::open(node)?,
            }),
        };
        loop {
            match conn.call(&request)? {
                Message::ProduceResponse {
                    error: ErrorCode::None,
                    last_offset,
                    ..
                } => {
                    if o.print_acks {
                        let line = if o.topic.is_some() {
                            writeln!(out, "acked {partition} {last_offset}")
                        } else {
                            writeln!(out, "acked {last_offset}")
                        };
                        line.and_then(|()| out.flush())
                            .map_err(|e| format!("cannot deliver the acknowledgements: {e}"))?;
                    }
                    return Ok(());
                }
                Message::ProduceResponse {
                    error:
                        error @ (ErrorCode::LeadershipLost
                        | ErrorCode::NotEnoughReplicas
                        | ErrorCode::Timeout),
                    ..
                } if conn.can_fail_over() && Instant::now() < deadline => {
                    tracing::info!(
                        error = error.name(),
                        "batch not acknowledged; sending it again"
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
                Message::ProduceResponse { error, .. } => {
                    return Err(format!(
                        "the node refused the batch: {} (records before it were acknowledged)",
                        error.name()
                    )
                    .into());
                }
                other => return Err(format!("the node answered a produce with {other:?}").into()),
            }
        }
    };
    // Routes each line by its key, and sends one batch per partition, in partition order.
    let mut send = |values: &[Vec<u8>]| -> Result<(), CliError> {
        let mut by_partition: std::collections::BTreeMap<u32, Vec<KeyValue<'_>>> =
            std::collections::BTreeMap::new();
        for v in values {
            lines_read += 1;
            let key = match router.key(v) {
                Ok(key) => key,
                Err(()) if o.strict_keys => {
                    for (p, records) in &by_partition {
                        send_one(*p, records)?;
                    }
                    return Err(format!(
                        "line {lines_read} has no key field and --strict-keys refuses a line \
                         without a key: it was not sent, the lines before it were"
                    )
                    .into());
                }
                Err(()) => {
                    keyless += 1;
                    None
                }
            };
            let p = fixed.unwrap_or_else(|| router.route(key) as u32);
            by_partition.entry(p).or_default().push((key, v));
        }
        for (p, records) in &by_partition {
            send_one(*p, records)?;
        }
        Ok(())
    };
    let batch = o.batch_len();
    if let Some(count) = o.count {
        let value = vec![b'x'; usize::try_from(o.size).map_err(|_| "--size is too large")?];
        let mut left = count;
        while left > 0 {
            let n = left.min(batch as u64) as usize;
            send(&vec![value.clone(); n])?;
            left -= n as u64;
        }
        return Ok(());
    }
    // A reader thread hands lines over, so that a batch goes out as soon as it is full or no
    // more input is there right now (an interactive producer is acknowledged promptly).
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(batch.max(1024));
    std::thread::spawn(move || {
        let stdin = io::stdin();
        let mut lines = stdin.lock();
        loop {
            let mut line = Vec::new();
            // Bounded: a line longer than a batch can hold is refused, not read whole.
            let limit = u64::from(stratalog::format::MAX_BATCH_BYTES);
            match io::Read::take(&mut lines, limit).read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(n) if n as u64 == limit && line.last() != Some(&b'\n') => {
                    let _ = tx.send(Err(io::Error::other(format!(
                        "a line is longer than the largest record a batch can hold ({limit} bytes)"
                    ))));
                    break;
                }
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    if tx.send(Ok(line)).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    break;
                }
            }
        }
    });
    let mut pending: Vec<Vec<u8>> = Vec::with_capacity(batch);
    while let Ok(first) = rx.recv() {
        pending.push(first?);
        while pending.len() < batch {
            match rx.try_recv() {
                Ok(line) => pending.push(line?),
                Err(_) => break,
            }
        }
        send(&pending)?;
        pending.clear();
    }
    if keyless > 0 {
        tracing::warn!(
            "{keyless} of {lines_read} lines had no key field: they were sent with no key \
             (--strict-keys refuses them)"
        );
    }
    Ok(())
}
