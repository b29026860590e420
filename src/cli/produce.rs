//! `stratalog produce`: append lines of standard input, or generated records, to a log.

use std::io::{self, BufRead, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::Args;
use stratalog::format::{BATCH_HEADER_LEN, MAX_BATCH_BYTES};
use stratalog::storage::{IoEngine, real_storage};
use stratalog::store::{Partitioner, PartitionerKind, Store, StoreOptions, TopicInfo};
use stratalog::{
    BatchBuilder, Compression, FsyncPolicy, Log, LogConfig, LogOptions, Preallocate, Receipt,
    Record, now_ms,
};

use super::{
    CliError, CompressionArg, LogArgs, Target, context, context_with, outln, parse_fsync,
    parse_partitioner,
};

/// A batch is appended early once its records take this many bytes, well below the format's
/// limit on a batch.
const BATCH_BYTES: usize = 8 << 20;

/// Bytes of lines the stdin reader may have read ahead of the appender.
const READ_AHEAD_BYTES: usize = 64 << 20;

/// `stratalog produce`: its command line is its options.
#[derive(Debug, Args)]
pub struct Options {
    #[command(flatten)]
    pub log: LogArgs,
    /// Append to every partition of this topic of the store in DIR (instead of `--log`),
    /// spreading records with the topic's partitioner (or `--partitioner`).
    #[arg(short = 't', long, value_name = "TOPIC", conflicts_with = "name")]
    pub topic: Option<String>,
    /// With `--topic`: the record key is this field (1-based) of the line, fields being
    /// separated by `--delimiter`; the value is the whole line. Records with the same key go
    /// to the same partition under a keyed partitioner, so they keep their order. A line
    /// with fewer fields gets no key: stderr says how many lines had none (see
    /// `--strict-keys`).
    #[arg(long, value_name = "N", requires = "topic",
          value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub key_field: Option<u64>,
    /// With `--key-field`: the character separating the fields of a line; one ASCII
    /// character (one byte), `\t` for a tab.
    #[arg(long, value_name = "CHAR", default_value = ",", requires = "key_field",
          value_parser = parse_delimiter)]
    pub delimiter: u8,
    /// With `--key-field`: refuse a line that has no such field (the lines before it are
    /// appended, nothing from it on), instead of appending it with no key.
    #[arg(long, requires = "key_field")]
    pub strict_keys: bool,
    /// Every record's key (UTF-8 text). With `--topic`, records are routed by it.
    #[arg(short = 'k', long, value_name = "KEY", conflicts_with = "key_field")]
    pub key: Option<String>,
    /// A header `NAME=VALUE` added to every record (repeatable; the value may be empty and
    /// may hold `=`).
    #[arg(short = 'H', long = "header", value_name = "NAME=VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// With `--topic`: spread records with this partitioner instead of the topic's (see
    /// `topics create --help`).
    #[arg(long, value_name = "KIND", requires = "topic", value_parser = parse_partitioner)]
    pub partitioner: Option<PartitionerKind>,
    /// When appends are made durable and acknowledged: `always` (fsync before each
    /// acknowledgement, concurrent batches share an fsync), `never` (only on segment roll and
    /// close), `<N>ms` (every N milliseconds) or `<N>b` (every N bytes written). Default
    /// `always`; for a store topic, its own setting applies.
    #[arg(long, value_name = "POLICY", value_parser = parse_fsync)]
    pub fsync: Option<FsyncPolicy>,
    /// Largest number of records per batch. Default 100 for lines of standard input; with
    /// `--count`, as many records as make about 128 KiB of values (1310 of 100 B, 128 of
    /// 1 KiB, at least 1): the log writes each batch with one `pwrite`, and batches of 100
    /// small records make the syscalls, not the bytes, the cost of a load generator.
    #[arg(short = 'b', long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub batch: Option<u32>,
    /// Compression of the batches (default none; for a store topic, its own setting).
    #[arg(long, value_enum)]
    pub compression: Option<CompressionArg>,
    /// Segment size at which the log rolls to a new segment (default 1 GiB). Applies only
    /// when the log is created: an existing log keeps its own.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64)
          .range(LogConfig::MIN_SEGMENT_BYTES..=LogConfig::MAX_SEGMENT_BYTES))]
    pub segment_bytes: Option<u64>,
    /// Print `acked <offset>` (and flush) each time every record up to and including
    /// <offset> has been acknowledged under the fsync policy (durable with `--fsync always`).
    /// With `--topic`, `acked <partition> <offset>`. If the acknowledgements cannot be
    /// written (standard output closed), produce stops, says so and exits 1.
    #[arg(long)]
    pub print_acks: bool,
    /// The write path: `std` (pwrite + fdatasync) or `uring` (io_uring; falls back to std
    /// with a warning if the kernel refuses it).
    #[arg(long, value_name = "ENGINE", default_value = "std")]
    pub io: IoEngine,
    /// How the log's segments are extended ahead of the writer: `auto` (zeros while fsyncs
    /// are small, `fallocate` otherwise), `zeros` (written and fsynced in the background),
    /// `fallocate` or `off`.
    #[arg(long, value_name = "MODE", default_value = "auto")]
    pub prealloc: Preallocate,
    /// Append this many generated records instead of reading standard input.
    #[arg(short = 'c', long, value_name = "N")]
    pub count: Option<u64>,
    /// Size in bytes of each generated record's value (with `--count`); at most the largest
    /// record a batch can hold (a little under 64 MiB).
    #[arg(
        short = 's',
        long,
        value_name = "BYTES",
        requires = "count",
        default_value_t = 100
    )]
    pub size: u64,
    /// Append through the node at this address instead of a directory (`--log
    /// TOPIC/PARTITION`, or `--topic TOPIC` routed by the topic's partitioner as the node
    /// reports it, or `--partitioner`): each batch is sent and acknowledged at `--acks` before
    /// the next; a follower answers with its leader's address, which is followed. Several
    /// addresses, separated by commas: when one does not answer (a failover) the next is
    /// tried and an unacknowledged batch is sent again (at least once: it may be stored twice,
    /// never lost once acknowledged).
    #[arg(long, value_name = "ADDR[,ADDR...]", conflicts_with_all = ["truncate_every"])]
    pub node: Option<String>,
    /// With `--node`: `leader` (durable on the leader), `quorum` (on a majority of replicas)
    /// or `all` (on every in-sync replica; refused while too few are in sync).
    #[arg(long, value_name = "LEVEL", default_value = "all", requires = "node",
          value_parser = super::remote::parse_acks)]
    pub acks: stratalog::replication::Acks,
    /// Testing only: retention limit for a new log, applied after every batch.
    #[arg(long, value_name = "BYTES", hide = true)]
    pub retention_bytes: Option<u64>,
    /// Testing only: truncate every N-th batch (from stdin) away again after its ack, and
    /// print `truncated <offset>`. Acks are then printed by the appending thread, in order
    /// with the truncations.
    #[arg(long, value_name = "N", hide = true, conflicts_with = "count")]
    pub truncate_every: Option<u64>,
}

/// Records per batch when `--batch` is not given for lines of standard input.
pub const DEFAULT_BATCH: usize = 100;

/// Bytes of values per batch that `produce --count` aims at when `--batch` is not given.
pub const COUNT_BATCH_BYTES: usize = 128 << 10;

/// Records per batch of `produce --count --size SIZE` when `--batch` is not given: about
/// [`COUNT_BATCH_BYTES`] of values, at least one record.
pub fn count_batch(size: usize) -> usize {
    (COUNT_BATCH_BYTES / size.max(1)).clamp(1, 1_000_000)
}

impl Options {
    /// Records per batch: `--batch`, or its default (see [`Options::batch`]).
    pub(crate) fn batch_len(&self) -> usize {
        match (self.batch, self.count) {
            (Some(n), _) => n as usize,
            (None, Some(_)) => count_batch(usize::try_from(self.size).unwrap_or(usize::MAX)),
            (None, None) => DEFAULT_BATCH,
        }
    }
}

/// `--delimiter`: one ASCII character (a multi-byte character could never split a line of
/// bytes), or `\t`.
fn parse_delimiter(s: &str) -> Result<u8, String> {
    match s.as_bytes() {
        [b] if b.is_ascii() => Ok(*b),
        b"\\t" => Ok(b'\t'),
        _ => Err(format!(
            "{s:?} is not one ASCII character: the delimiter must be a single byte \
             (for example `,`, `;`, `|`, or `\\t` for a tab)"
        )),
    }
}

/// `--header NAME=VALUE`.
fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!(
            "{s:?} is not NAME=VALUE (a non-empty name, then `=`)"
        )),
    }
}

/// The largest value a record can have so that its batch, holding it alone, stays within the
/// format's limit on a batch. `fixed` is what else the record holds (key and headers); an LZ4
/// block can be slightly larger than its input.
pub fn max_value_len(compression: Compression, fixed: usize) -> usize {
    let room = MAX_BATCH_BYTES as usize - BATCH_HEADER_LEN;
    let room = match compression {
        Compression::Lz4 => room - room / 255 - 16,
        _ => room,
    };
    room.saturating_sub(Record::default().encoded_len() + fixed)
}

/// The values of generated records (`produce --count`): value `n` is `size` bytes, byte `j`
/// being `b'a' + (n + j) % 26` (varied but compressible). Every value is a slice of one
/// pattern, so making one costs nothing.
pub struct Values {
    pattern: Vec<u8>,
    size: usize,
}

impl Values {
    /// Values of `size` bytes.
    pub fn new(size: usize) -> Values {
        let pattern = (0..size + 26).map(|j| b'a' + (j % 26) as u8).collect();
        Values { pattern, size }
    }

    /// The value of record `n`.
    pub fn get(&self, n: u64) -> &[u8] {
        self.at(ValueAt((n % 26) as usize))
    }

    /// Where the value of record 0 is.
    pub fn start(&self) -> ValueAt {
        ValueAt(0)
    }

    /// Where the value after `at`'s is: walking values in order this way costs no division.
    pub fn next(&self, at: ValueAt) -> ValueAt {
        ValueAt(if at.0 == 25 { 0 } else { at.0 + 1 })
    }

    /// The value at `at`.
    pub fn at(&self, at: ValueAt) -> &[u8] {
        &self.pattern[at.0..at.0 + self.size]
    }
}

/// Where a value starts in the pattern of [`Values`] (record `n`'s at `n % 26`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueAt(usize);

/// Where `produce` appends.
#[derive(Debug)]
enum Dest {
    /// A plain log or one partition of a store topic.
    Log(Target),
    /// Every partition of a store topic, records routed by a partitioner.
    Topic {
        dir: std::path::PathBuf,
        topic: String,
    },
}

/// The open logs: a plain log, or partitions of a store.
enum Opened {
    Log(Log),
    Store(Store, Vec<Arc<Log>>),
}

impl Opened {
    fn logs(&self) -> Vec<&Log> {
        match self {
            Opened::Log(log) => vec![log],
            Opened::Store(_, logs) => logs.iter().map(|l| &**l).collect(),
        }
    }

    fn close(self) -> Result<(), CliError> {
        match self {
            Opened::Log(log) => log.close().map_err(context("closing the log failed")),
            Opened::Store(store, logs) => {
                drop(logs);
                store.close().map_err(context("closing the store failed"))
            }
        }
    }
}

/// How records are keyed and spread over the open logs.
pub(super) struct Router {
    partitioner: Option<Partitioner>,
    key_field: Option<usize>,
    delimiter: u8,
    /// `--key`: every record's key.
    key: Option<Vec<u8>>,
}

impl Router {
    /// The router of `o`'s key options, spreading with `partitioner` (`None`: one log).
    pub(super) fn new(o: &Options, partitioner: Option<Partitioner>) -> Router {
        Router {
            partitioner,
            key_field: o.key_field.map(|f| f as usize),
            delimiter: o.delimiter,
            key: o.key.as_ref().map(|k| k.as_bytes().to_vec()),
        }
    }

    /// The key of a line: `--key`, or its `key_field`-th field if it has one. `Err(())` if a
    /// key field is asked for and the line has no such field.
    pub(super) fn key<'a>(&'a self, line: &'a [u8]) -> Result<Option<&'a [u8]>, ()> {
        if let Some(key) = &self.key {
            return Ok(Some(key));
        }
        let Some(field) = self.key_field else {
            return Ok(None);
        };
        match line.split(|&b| b == self.delimiter).nth(field - 1) {
            Some(key) => Ok(Some(key)),
            None => Err(()),
        }
    }

    pub(super) fn route(&self, key: Option<&[u8]>) -> usize {
        self.partitioner
            .as_ref()
            .map_or(0, |p| p.partition(key) as usize)
    }
}

fn open_log(o: &Options, dir: &Path) -> Result<Log, CliError> {
    let mut config = LogConfig {
        compression: o
            .compression
            .map(CompressionArg::into_compression)
            .unwrap_or_default(),
        ..LogConfig::default()
    };
    if let Some(bytes) = o.segment_bytes {
        config.segment_bytes = bytes;
    }
    config.retention_bytes = o.retention_bytes;
    let log = Log::open(
        dir,
        LogOptions {
            config,
            fsync: o.fsync.unwrap_or(FsyncPolicy::Always),
            storage: real_storage(o.io).0,
            create: true,
            preallocate: o.prealloc,
            ..Default::default()
        },
    )
    .map_err(context(format!("cannot open the log in {}", dir.display())))?;
    if let Some(asked) = o.segment_bytes {
        let kept = log.config().segment_bytes;
        if kept != asked {
            tracing::warn!(
                dir = %dir.display(),
                segment_bytes = kept,
                "the log already exists: --segment-bytes {asked} is ignored"
            );
        }
    }
    Ok(log)
}

fn open_store_partitions(
    o: &Options,
    dir: &Path,
    topic: &str,
    only: Option<u32>,
) -> Result<(Opened, TopicInfo), CliError> {
    if o.segment_bytes.is_some() || o.fsync.is_some() {
        tracing::warn!(
            topic,
            "--fsync and --segment-bytes are ignored for a store topic: its settings apply (change them with `stratalog topics alter`)"
        );
    }
    let store = Store::open(
        dir,
        StoreOptions {
            storage: real_storage(o.io).0,
            create: false,
            preallocate: o.prealloc,
            ..StoreOptions::default()
        },
    )
    .map_err(context(format!(
        "cannot open the store in {}",
        dir.display()
    )))?;
    let info = store
        .topic(topic)
        .map_err(context(format!("cannot produce to {topic:?}")))?;
    let partitions: Vec<u32> = match only {
        Some(p) => vec![p],
        None => (0..info.partitions()).collect(),
    };
    let mut logs = Vec::with_capacity(partitions.len());
    for p in partitions {
        logs.push(
            store
                .partition(topic, p)
                .map_err(context(format!("cannot open partition {topic}/{p}")))?,
        );
    }
    Ok((Opened::Store(store, logs), info))
}

/// What every record carries besides its value.
struct Fixed<'a> {
    headers: Vec<(&'a [u8], &'a [u8])>,
    /// Bytes the key (`--key`) and headers add to each record.
    len: usize,
}

/// Runs `produce`.
pub fn run(o: Options) -> Result<(), CliError> {
    if let Some(node) = &o.node {
        return super::remote::produce(node, &o);
    }
    let dest = match &o.topic {
        Some(topic) => Dest::Topic {
            dir: o.log.dir()?,
            topic: topic.clone(),
        },
        None => Dest::Log(Target::parse(&o.log.dir()?, &o.log.name)?),
    };
    let headers: Vec<(&[u8], &[u8])> = o
        .headers
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect();
    let fixed = Fixed {
        len: o.key.as_ref().map_or(0, String::len)
            + headers
                .iter()
                .map(|(n, v)| 6 + n.len() + v.len())
                .sum::<usize>(),
        headers,
    };
    // Refuse a size no batch can hold before allocating anything for it (the compression of
    // a store topic is only known once it is open: an LZ4 batch that grows is refused by
    // the append, cleanly).
    let compression_asked = o.compression.map(CompressionArg::into_compression);
    let largest = max_value_len(compression_asked.unwrap_or_default(), fixed.len);
    if let Some(count) = o.count
        && count > 0
        && o.size > largest as u64
    {
        return Err(format!(
            "--size {} is larger than the largest record a batch can hold: {largest} bytes of \
             value (with these key and headers)",
            o.size
        )
        .into());
    }
    let (opened, partitioner, compression, labelled) = match &dest {
        Dest::Log(Target::Log(dir)) => {
            let log = open_log(&o, dir)?;
            (
                Opened::Log(log),
                None,
                compression_asked.unwrap_or_default(),
                false,
            )
        }
        Dest::Log(Target::Partition {
            dir,
            topic,
            partition,
        }) => {
            let (opened, info) = open_store_partitions(&o, dir, topic, Some(*partition))?;
            let compression = compression_asked.unwrap_or(info.config.log.compression);
            (opened, None, compression, false)
        }
        Dest::Topic { dir, topic } => {
            let (opened, info) = open_store_partitions(&o, dir, topic, None)?;
            let kind = o.partitioner.unwrap_or(info.current().kind);
            let partitioner =
                Partitioner::new(kind, info.partitions()).map_err(context("bad --partitioner"))?;
            let compression = compression_asked.unwrap_or(info.config.log.compression);
            (opened, Some(partitioner), compression, true)
        }
    };
    let router = Router::new(&o, partitioner);
    let started = Instant::now();
    let acker = Acker::spawn(o.print_acks).map_err(context("cannot start the acker thread"))?;
    let logs = opened.logs();
    let mut sink = Sink {
        logs: &logs,
        builders: logs
            .iter()
            .map(|_| BatchBuilder::new(compression))
            .collect(),
        labelled,
        acker: &acker,
        truncate_every: o.truncate_every,
        retention: o.retention_bytes.is_some(),
        batches: 0,
        batch_bytes: 0,
        pending: Vec::new(),
    };
    let produced = match o.count {
        Some(count) => generate(
            &mut sink,
            o.batch_len(),
            &router,
            &fixed,
            count,
            o.size as usize,
        ),
        None => from_stdin(&mut sink, &o, &router, &fixed, compression),
    };
    drop(sink);
    let acked = acker.finish();
    let elapsed = started.elapsed();
    drop(logs);
    let closed = opened.close();
    // Report the first failure; the later ones are most likely its consequences.
    let (records, bytes) = produced?;
    acked?;
    closed?;
    if o.count.is_some() {
        let secs = elapsed.as_secs_f64().max(1e-9);
        outln!(
            "produced {records} records ({bytes} bytes of values) in {secs:.3} s: {:.0} records/s, {:.2} MB/s",
            records as f64 / secs,
            bytes as f64 / secs / 1e6,
        );
    }
    Ok(())
}

/// One batch being filled per open log.
struct Sink<'a> {
    logs: &'a [&'a Log],
    builders: Vec<BatchBuilder>,
    /// Acks name the partition.
    labelled: bool,
    acker: &'a Acker,
    /// Crash tests: truncate every this many appended batches away again (see
    /// [`Options::truncate_every`]), and apply retention after each append.
    truncate_every: Option<u64>,
    retention: bool,
    batches: u64,
    /// Bytes of the batches appended, header included, before compression.
    batch_bytes: u64,
    /// Receipts not yet handed to the acker: they go in chunks of [`ACK_CHUNK`], or all at
    /// once when no more input is available right now (so acks stay prompt), which spares a
    /// wake-up of the acker thread per batch.
    pending: Vec<Ack>,
}

/// Receipts handed to the acker at once while input keeps coming.
const ACK_CHUNK: usize = 32;

impl Sink<'_> {
    /// Adds a record for log `i`; appends that log's batch first if the record would not fit
    /// in it, and after if it is full. Returns false if the acker stopped.
    fn push(&mut self, i: usize, record: &Record<'_>, batch: usize) -> Result<bool, CliError> {
        let builder = &self.builders[i];
        if !builder.is_empty()
            && builder.records_len() + record.encoded_len() > BATCH_BYTES
            && !self.append(i)?
        {
            return Ok(false);
        }
        let builder = &mut self.builders[i];
        builder.push(record).map_err(context_with(|| {
            format!("record of {} bytes", record.value.len())
        }))?;
        if builder.len() >= batch || builder.records_len() >= BATCH_BYTES {
            return self.append(i);
        }
        Ok(true)
    }

    /// Appends log `i`'s batch (if not empty) and hands its receipt to the acker. Returns false
    /// if the acker stopped (it failed: its error is reported by [`Acker::finish`]).
    fn append(&mut self, i: usize) -> Result<bool, CliError> {
        let builder = &mut self.builders[i];
        if builder.is_empty() {
            return Ok(true);
        }
        self.batches += 1;
        self.batch_bytes += (BATCH_HEADER_LEN + builder.records_len()) as u64;
        if let Some(every) = self.truncate_every {
            let truncate = self.batches.is_multiple_of(every.max(1));
            append_then_truncate(self.logs[i], builder, truncate)?;
            builder.clear();
            return self.retain(i).map(|()| true);
        }
        let appended = self.logs[i]
            .append(builder)
            .map_err(context("append failed"))?;
        builder.clear();
        let label = self.labelled.then_some(i as u32);
        self.pending
            .push((label, appended.last_offset, appended.receipt));
        let sent = self.pending.len() < ACK_CHUNK || self.hand_over();
        self.retain(i)?;
        Ok(sent)
    }

    /// Hands the pending receipts to the acker. False if it stopped.
    fn hand_over(&mut self) -> bool {
        self.pending.is_empty() || self.acker.send(std::mem::take(&mut self.pending))
    }

    fn retain(&self, i: usize) -> Result<(), CliError> {
        if self.retention {
            self.logs[i]
                .apply_retention()
                .map_err(context("retention failed"))?;
        }
        Ok(())
    }

    /// Appends every batch and hands every receipt to the acker.
    fn append_all(&mut self) -> Result<bool, CliError> {
        for i in 0..self.builders.len() {
            if !self.append(i)? {
                return Ok(false);
            }
        }
        Ok(self.hand_over())
    }
}

fn generate(
    sink: &mut Sink<'_>,
    batch: usize,
    router: &Router,
    fixed: &Fixed<'_>,
    count: u64,
    size: usize,
) -> Result<(u64, u64), CliError> {
    let values = Values::new(if count == 0 { 0 } else { size });
    let key = router.key.as_deref();
    let i_fixed = router.route(key);
    let mut ts = now_ms();
    let mut done = 0u64;
    // Records until the next clock read: one per batch's worth of records (counted down, as
    // a division per record showed in profiles).
    let mut until_clock = 0usize;
    let mut pattern = values.start();
    while done < count {
        if until_clock == 0 {
            ts = now_ms();
            until_clock = batch;
        }
        until_clock -= 1;
        // A round-robin or random partitioner spreads even keyless records.
        let i = if router.partitioner.is_some() && key.is_none() {
            router.route(None)
        } else {
            i_fixed
        };
        let record = Record {
            timestamp: ts,
            key,
            value: values.at(pattern),
            headers: &fixed.headers,
        };
        pattern = values.next(pattern);
        done += 1;
        if !sink.push(i, &record, batch)? {
            return Ok((done, done * size as u64));
        }
    }
    sink.append_all()?;
    Ok((done, done * size as u64))
}

/// What [`generate_into`] appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generated {
    /// Bytes of values.
    pub value_bytes: u64,
    /// Bytes of the batches as the log writes them (uncompressed): values plus record and
    /// batch framing.
    pub batch_bytes: u64,
    /// Batches appended (one `pwrite` each).
    pub batches: u64,
}

/// What `produce --count COUNT --size SIZE --batch BATCH` does, into an open log, with no
/// acks printed: the same generation, batching, appends and acknowledgements (for `bench`).
/// Returns what it appended, once every batch is acknowledged.
pub fn generate_into(
    log: &Log,
    count: u64,
    size: usize,
    batch: usize,
) -> Result<Generated, CliError> {
    let acker = Acker::spawn(false).map_err(context("cannot start the acker thread"))?;
    let logs = [log];
    let mut sink = Sink {
        logs: &logs,
        builders: vec![BatchBuilder::new(Compression::None)],
        labelled: false,
        acker: &acker,
        truncate_every: None,
        retention: false,
        batches: 0,
        batch_bytes: 0,
        pending: Vec::new(),
    };
    let router = Router {
        partitioner: None,
        key_field: None,
        delimiter: b',',
        key: None,
    };
    let fixed = Fixed {
        headers: Vec::new(),
        len: 0,
    };
    let produced = generate(&mut sink, batch, &router, &fixed, count, size);
    let (batch_bytes, batches) = (sink.batch_bytes, sink.batches);
    drop(sink);
    let acked = acker.finish();
    let (_, value_bytes) = produced?;
    acked?;
    Ok(Generated {
        value_bytes,
        batch_bytes,
        batches,
    })
}

fn from_stdin(
    sink: &mut Sink<'_>,
    o: &Options,
    router: &Router,
    fixed: &Fixed<'_>,
    compression: Compression,
) -> Result<(u64, u64), CliError> {
    // A line with a key field holds its key twice (the key, and the value: the whole line).
    let limit = match router.key_field {
        Some(_) => max_value_len(compression, fixed.len) / 2,
        None => max_value_len(compression, fixed.len),
    };
    let in_flight = Arc::new(AtomicUsize::new(0));
    let lines = spawn_stdin_reader(o.batch_len().clamp(64, 4096), limit, in_flight.clone())
        .map_err(context("cannot start the stdin reader thread"))?;
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut keyless = 0u64;
    // Wait for one line, then take the lines that are already there, appending each batch once
    // it is full, and every batch once no more input is available right now.
    let outcome = 'read: loop {
        let Ok(first) = lines.recv() else {
            break 'read Ok(());
        };
        let ts = now_ms();
        let mut next = Some(first);
        while let Some(line) = next.take() {
            let line = match line {
                Ok(line) => line,
                Err(e) => break 'read Err(e),
            };
            in_flight.fetch_sub(line.len(), Ordering::Relaxed);
            let key = match router.key(&line) {
                Ok(key) => key,
                Err(()) if o.strict_keys => {
                    break 'read Err(format!(
                        "line {} has no field {} (fields separated by {:?}) and --strict-keys \
                         refuses a line without a key: it was not appended, the lines before \
                         it were",
                        records + 1,
                        router.key_field.unwrap_or(0),
                        char::from(router.delimiter)
                    )
                    .into());
                }
                Err(()) => {
                    keyless += 1;
                    None
                }
            };
            bytes += line.len() as u64;
            records += 1;
            let i = router.route(key);
            let record = Record {
                timestamp: ts,
                key,
                value: &line,
                headers: &fixed.headers,
            };
            if !sink.push(i, &record, o.batch_len())? {
                return Ok((records, bytes));
            }
            match lines.try_recv() {
                Ok(line) => next = Some(line),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
            }
        }
        if !sink.append_all()? {
            return Ok((records, bytes));
        }
    };
    if keyless > 0 {
        tracing::warn!(
            "{keyless} of {records} lines had no field {} (fields separated by {:?}): they were \
             appended with no key (--strict-keys refuses them)",
            router.key_field.unwrap_or(0),
            char::from(router.delimiter)
        );
    }
    // On an input error, append what was read before it, then report the input error (an
    // append failing now would only be reported after it, so it is left to the acks).
    if let Err(e) = outcome {
        let _ = sink.append_all();
        return Err(e);
    }
    Ok((records, bytes))
}

/// Appends, waits for the ack and prints it; then, if asked, truncates the batch away again and
/// prints `truncated <offset>`.
fn append_then_truncate(log: &Log, builder: &BatchBuilder, truncate: bool) -> Result<(), CliError> {
    let appended = log.append(builder).map_err(context("append failed"))?;
    appended
        .receipt
        .wait()
        .map_err(context("the batch was not acknowledged"))?;
    let mut out = io::stdout().lock();
    let print = |out: &mut io::StdoutLock<'_>, line: String| {
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| undelivered(&line, &e))
    };
    print(&mut out, format!("acked {}", appended.last_offset))?;
    if truncate {
        log.truncate(appended.base_offset)
            .map_err(context("truncate failed"))?;
        print(&mut out, format!("truncated {}", appended.base_offset))?;
    }
    Ok(())
}

/// The error when an acknowledgement cannot be written out. Deliberately without the
/// `io::Error` as its source: a closed pipe here is a failure (the producer's reader did not
/// get its acks), not the quiet end of `... | head`.
fn undelivered(line: &str, e: &io::Error) -> CliError {
    format!(
        "cannot deliver the acknowledgements: writing `{line}` to standard output failed ({e}); \
         produce stopped: the records up to that offset were appended and acknowledged, and \
         input not yet appended was dropped"
    )
    .into()
}

/// Reads stdin on a thread, one line (without its `\n`, at most `limit` bytes) per message,
/// so that the appender can tell which lines are already available. The thread ends at EOF or
/// on an error (a read error, or a line longer than `limit`: reading stops there, so a line
/// without a newline never takes more than `limit` bytes of memory). It waits while the lines
/// it has sent take more than [`READ_AHEAD_BYTES`] (`in_flight`, which the appender lowers).
fn spawn_stdin_reader(
    capacity: usize,
    limit: usize,
    in_flight: Arc<AtomicUsize>,
) -> io::Result<Receiver<Result<Vec<u8>, CliError>>> {
    let (tx, rx) = mpsc::sync_channel(capacity);
    std::thread::Builder::new()
        .name("stdin-reader".into())
        .spawn(move || {
            let mut stdin = io::stdin().lock();
            let mut number = 0u64;
            loop {
                let mut line = Vec::new();
                number += 1;
                let message = match read_line(&mut stdin, &mut line, limit) {
                    Ok(false) => return,
                    Ok(true) => Ok(line),
                    Err(LineError::TooLong) => Err(format!(
                        "line {number} is longer than {limit} bytes, the largest record a batch \
                         can hold: it was not appended, the lines before it were"
                    )
                    .into()),
                    Err(LineError::Io(e)) => Err(context("reading standard input failed")(e)),
                };
                let failed = message.is_err();
                if let Ok(line) = &message {
                    while in_flight.load(Ordering::Relaxed) > READ_AHEAD_BYTES {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    in_flight.fetch_add(line.len(), Ordering::Relaxed);
                }
                if tx.send(message).is_err() || failed {
                    return;
                }
            }
        })?;
    Ok(rx)
}

/// Why [`read_line`] stopped.
#[derive(Debug)]
enum LineError {
    /// The line is longer than the limit (what was read of it is dropped).
    TooLong,
    /// Reading failed.
    Io(io::Error),
}

/// Reads one line into `line` without its `\n`, refusing it as soon as it is longer than
/// `limit` bytes. Returns false at the end of the input with nothing read.
fn read_line(
    input: &mut impl BufRead,
    line: &mut Vec<u8>,
    limit: usize,
) -> Result<bool, LineError> {
    let mut read_any = false;
    loop {
        let buf = match input.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(LineError::Io(e)),
        };
        if buf.is_empty() {
            return Ok(read_any);
        }
        read_any = true;
        let newline = buf.iter().position(|&b| b == b'\n');
        let chunk = &buf[..newline.unwrap_or(buf.len())];
        if line.len() + chunk.len() > limit {
            return Err(LineError::TooLong);
        }
        line.extend_from_slice(chunk);
        let used = newline.map_or(buf.len(), |at| at + 1);
        input.consume(used);
        if newline.is_some() {
            return Ok(true);
        }
    }
}

/// (partition to name in the ack line, last offset of the batch, its receipt).
type Ack = (Option<u32>, u64, Receipt);

/// Waits for receipts in append order on its own thread, so that appends go on while earlier
/// batches are being made durable (their fsyncs are shared), and prints the acks.
struct Acker {
    tx: Option<SyncSender<Vec<Ack>>>,
    handle: JoinHandle<Result<(), CliError>>,
}

impl Acker {
    fn spawn(print: bool) -> io::Result<Acker> {
        let (tx, rx) = mpsc::sync_channel::<Vec<Ack>>(64);
        let handle = std::thread::Builder::new().name("acker".into()).spawn(
            move || -> Result<(), CliError> {
                let stdout = io::stdout();
                for (label, last_offset, receipt) in rx.into_iter().flatten() {
                    // Receipts complete in append order: once this one is done, every record
                    // up to `last_offset` is acknowledged.
                    receipt.wait().map_err(context_with(|| {
                        format!("the batch ending at offset {last_offset} was not acknowledged")
                    }))?;
                    if print {
                        let line = match label {
                            Some(p) => format!("acked {p} {last_offset}"),
                            None => format!("acked {last_offset}"),
                        };
                        let mut out = stdout.lock();
                        writeln!(out, "{line}")
                            .and_then(|()| out.flush())
                            .map_err(|e| undelivered(&line, &e))?;
                    }
                }
                Ok(())
            },
        )?;
        Ok(Acker {
            tx: Some(tx),
            handle,
        })
    }

    /// Hands over receipts, in append order. False if the acker has stopped (after an error).
    fn send(&self, acks: Vec<Ack>) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(acks).is_ok())
    }

    /// Waits for every receipt sent so far.
    fn finish(mut self) -> Result<(), CliError> {
        drop(self.tx.take());
        self.handle
            .join()
            .unwrap_or_else(|_| Err("the acker thread panicked".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_line_stops_at_the_limit_and_keeps_lines_apart() {
        let mut input = io::Cursor::new(b"ab\n\nabcdef\nxyz".to_vec());
        let mut line = Vec::new();
        assert!(read_line(&mut input, &mut line, 4).unwrap());
        assert_eq!(line, b"ab");
        line.clear();
        assert!(read_line(&mut input, &mut line, 4).unwrap());
        assert_eq!(line, b"");
        line.clear();
        assert!(matches!(
            read_line(&mut input, &mut line, 4),
            Err(LineError::TooLong)
        ));
        assert!(line.len() <= 4);
        let mut input = io::Cursor::new(b"xyz".to_vec());
        line.clear();
        assert!(read_line(&mut input, &mut line, 4).unwrap());
        assert_eq!(line, b"xyz");
        line.clear();
        assert!(!read_line(&mut input, &mut line, 4).unwrap());
    }

    #[test]
    fn generated_values_are_the_documented_pattern() {
        let values = Values::new(30);
        for n in [0u64, 1, 25, 26, 1000] {
            let want: Vec<u8> = (0..30)
                .map(|j| b'a' + ((n as usize + j) % 26) as u8)
                .collect();
            assert_eq!(values.get(n), &want[..], "value {n}");
        }
        // Walking in order (as `produce --count` does) gives the same values.
        let mut at = values.start();
        for n in 0..100u64 {
            assert_eq!(values.at(at), values.get(n), "value {n} walked to");
            at = values.next(at);
        }
    }

    #[test]
    fn the_delimiter_is_one_ascii_byte() {
        assert_eq!(parse_delimiter(","), Ok(b','));
        assert_eq!(parse_delimiter("\\t"), Ok(b'\t'));
        assert!(parse_delimiter("é").is_err());
        assert!(parse_delimiter(",,").is_err());
        assert!(parse_delimiter("").is_err());
    }
}
