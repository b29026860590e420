//! `consume --node ADDR` and `produce --node ADDR`: the same output as their `--dir` forms,
//! through a node over the protocol (consumers read up to the high watermark).

use std::io::{self, BufRead, BufWriter, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use stratalog::replication::node::split_batches;
use stratalog::replication::transport::Client;
use stratalog::replication::{Acks, ErrorCode, FetchRole, Message};
use stratalog::{BatchBuilder, Compression, Record};

use super::consume::{Format, From, Options, STOP, record_json};
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
}

/// A connection that follows `NotLeader` answers to the leader.
struct Conn {
    client: Client,
}

impl Conn {
    fn open(node: &str) -> Result<Conn, CliError> {
        let addr: SocketAddr = node
            .to_socket_addrs()
            .map_err(context(format!("cannot resolve {node}")))?
            .next()
            .ok_or_else(|| format!("{node} resolves to no address"))?;
        let client = Client::connect(addr, Duration::from_secs(30))
            .map_err(|e| -> CliError { e.to_string().into() })?;
        Ok(Conn { client })
    }

    /// Sends `request`; on `NotLeader` with an address, reconnects there and sends it again.
    fn call(&mut self, request: &Message) -> Result<Message, CliError> {
        for _ in 0..MAX_REDIRECTS {
            let answer = self
                .client
                .call(request)
                .map_err(|e| -> CliError { e.to_string().into() })?;
            let leader = match &answer {
                Message::ErrorResponse {
                    error: ErrorCode::NotLeader,
                    leader,
                    ..
                } if !leader.is_empty() => leader.clone(),
                Message::FetchResponse {
                    error: ErrorCode::NotLeader,
                    ..
                } => {
                    return Err("the node does not lead and did not name its leader".into());
                }
                _ => return Ok(answer),
            };
            tracing::info!(leader, "the node does not lead; asking the leader");
            *self = Conn::open(&leader)?;
        }
        Err("too many leader changes; try again".into())
    }
}

/// Runs `consume --node`.
pub fn consume(node: &str, o: &Options) -> Result<(), CliError> {
    let mut conn = Conn::open(node)?;
    let (topic, partitions) = match &o.topic {
        Some(topic) => {
            let Message::MetadataResponse { topics, .. } = conn.call(&Message::MetadataRequest)?
            else {
                return Err("the node answered a metadata request with something else".into());
            };
            let t = topics
                .iter()
                .find(|t| &t.topic == topic)
                .ok_or_else(|| format!("no topic {topic:?} on {node}"))?;
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
    if o.from_time.is_some() {
        return Err("--from-time is not served by a node yet; use --from".into());
    }
    let label = |p: u32| o.topic.is_some().then_some(p);
    let mut cursors: Vec<Cursor> = partitions
        .iter()
        .map(|&partition| Cursor {
            partition,
            next: match o.from {
                Some(From::Offset(n)) => Some(n),
                _ => None,
            },
            high_watermark: 0,
        })
        .collect();
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut left = o.max.unwrap_or(u64::MAX);
    let result = (|| -> Result<(), CliError> {
        loop {
            let mut progressed = false;
            for c in cursors.iter_mut() {
                if left == 0 {
                    return Ok(());
                }
                progressed |= fetch_and_print(&mut conn, &topic, c, o, label, &mut left, &mut out)?;
            }
            let caught_up = cursors
                .iter()
                .all(|c| c.next.is_some_and(|n| n >= c.high_watermark));
            if left == 0 || STOP.load(Ordering::SeqCst) || (caught_up && !o.follow) {
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

/// One fetch for `c`; prints what it got. Returns whether anything was printed.
fn fetch_and_print(
    conn: &mut Conn,
    topic: &str,
    c: &mut Cursor,
    o: &Options,
    label: impl Fn(u32) -> Option<u32>,
    left: &mut u64,
    out: &mut impl Write,
) -> Result<bool, CliError> {
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
    };
    let wait = if o.follow && c.next.is_some() {
        FOLLOW_WAIT_MS
    } else {
        0
    };
    let answer = conn.call(&request(c.next.unwrap_or(0), wait))?;
    let Message::FetchResponse {
        error,
        high_watermark,
        log_start,
        batches,
        ..
    } = answer
    else {
        return Err(format!("the node answered a fetch with {answer:?}").into());
    };
    c.high_watermark = high_watermark;
    match (error, c.next) {
        (ErrorCode::None, Some(_)) => {}
        // The first fetch learns where the partition starts (and ends).
        (ErrorCode::None | ErrorCode::OffsetOutOfRange, None) => {
            c.next = Some(match o.from {
                Some(From::End) => high_watermark,
                _ => log_start,
            });
            return Ok(false);
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
    let mut printed = false;
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
            printed = true;
            at = record.offset + 1;
        }
    }
    c.next = Some(at);
    Ok(printed)
}

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
/// `acked <offset>` for the last record of each acknowledged batch.
pub fn produce(node: &str, o: &super::produce::Options) -> Result<(), CliError> {
    let (topic, partition) = o
        .log
        .name
        .split_once('/')
        .and_then(|(t, p)| Some((t.to_string(), p.parse::<u32>().ok()?)))
        .ok_or("with --node, name a partition: --log TOPIC/PARTITION")?;
    let mut conn = Conn::open(node)?;
    let key = o.key.as_deref().map(str::as_bytes);
    let headers: Vec<(&[u8], &[u8])> = o
        .headers
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect();
    let compression = o
        .compression
        .map_or(Compression::None, super::CompressionArg::into_compression);
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut send = |values: &[Vec<u8>]| -> Result<(), CliError> {
        let mut batch = BatchBuilder::new(compression);
        let ts = stratalog::now_ms();
        for v in values {
            batch
                .push(&Record {
                    timestamp: ts,
                    key,
                    value: v,
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
        match conn.call(&request)? {
            Message::ProduceResponse {
                error: ErrorCode::None,
                last_offset,
                ..
            } => {
                if o.print_acks {
                    writeln!(out, "acked {last_offset}")
                        .and_then(|()| out.flush())
                        .map_err(|e| format!("cannot deliver the acknowledgements: {e}"))?;
                }
                Ok(())
            }
            Message::ProduceResponse { error, .. } => Err(format!(
                "the node refused the batch: {} (records before it were acknowledged)",
                error.name()
            )
            .into()),
            other => Err(format!("the node answered a produce with {other:?}").into()),
        }
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
    Ok(())
}
