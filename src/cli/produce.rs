//! `stratalog produce`: append lines of standard input, or generated records, to a log.

use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::thread::JoinHandle;
use std::time::Instant;

use stratalog::storage::{IoEngine, real_storage};
use stratalog::store::{Partitioner, PartitionerKind, Store, StoreOptions, TopicInfo};
use stratalog::{
    BatchBuilder, Compression, FsyncPolicy, Log, LogConfig, LogOptions, Preallocate, Receipt,
    Record, now_ms,
};

use super::{CliError, Target, context, context_with, outln};

/// A batch is appended early once its records take this many bytes, well below the format's
/// limit on a batch.
const BATCH_BYTES: usize = 8 << 20;

/// Where `produce` appends.
#[derive(Debug)]
pub enum Dest {
    /// A plain log or one partition of a store topic.
    Log(Target),
    /// Every partition of a store topic, records routed by a partitioner.
    Topic {
        /// The store's directory.
        dir: PathBuf,
        /// The topic.
        topic: String,
        /// The strategy (default: the topic's current partitioner).
        partitioner: Option<PartitionerKind>,
        /// The key is this field (1-based) of the line.
        key_field: Option<usize>,
        /// What separates the fields of a line.
        delimiter: u8,
    },
}

/// What `produce` was asked to do.
#[derive(Debug)]
pub struct Options {
    /// Where to append.
    pub dest: Dest,
    /// The fsync policy (`None`: always for a plain log, the topic's for a store).
    pub fsync: Option<FsyncPolicy>,
    /// Largest number of records per batch.
    pub batch: usize,
    /// Compression of the batches (`None`: none for a plain log, the topic's for a store).
    pub compression: Option<Compression>,
    /// `LogConfig::segment_bytes` for a new log.
    pub segment_bytes: Option<u64>,
    /// Print `acked <offset>` lines.
    pub print_acks: bool,
    /// The write path of the logs.
    pub io: IoEngine,
    /// How the logs (or the store's partitions) preallocate their segments.
    pub prealloc: Preallocate,
    /// `(count, size)`: generate records instead of reading stdin.
    pub generate: Option<(u64, usize)>,
    /// For crash tests: `LogConfig::retention_bytes` for a new log, and retention applied
    /// after every batch.
    pub retention_bytes: Option<u64>,
    /// For crash tests: every this many batches (read from stdin), truncate the last batch
    /// away and print `truncated <offset>`. Acks are then printed by the appending thread, in
    /// order with the truncations.
    pub truncate_every: Option<u64>,
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

/// How records are spread over the open logs.
struct Router {
    partitioner: Option<Partitioner>,
    key_field: Option<usize>,
    delimiter: u8,
}

impl Router {
    /// The key of a line: its `key_field`-th field, if there is one.
    fn key<'a>(&self, line: &'a [u8]) -> Option<&'a [u8]> {
        let field = self.key_field?;
        line.split(|&b| b == self.delimiter).nth(field - 1)
    }

    fn route(&self, key: Option<&[u8]>) -> usize {
        self.partitioner
            .as_ref()
            .map_or(0, |p| p.partition(key) as usize)
    }
}

fn open_log(o: &Options, dir: &std::path::Path) -> Result<Log, CliError> {
    let mut config = LogConfig {
        compression: o.compression.unwrap_or_default(),
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
    dir: &std::path::Path,
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

/// Runs `produce`.
pub fn run(o: Options) -> Result<(), CliError> {
    let (opened, router, compression, labelled) = match &o.dest {
        Dest::Log(Target::Log(dir)) => {
            let log = open_log(&o, dir)?;
            let router = Router {
                partitioner: None,
                key_field: None,
                delimiter: b',',
            };
            let compression = o.compression.unwrap_or_default();
            (Opened::Log(log), router, compression, false)
        }
        Dest::Log(Target::Partition {
            dir,
            topic,
            partition,
        }) => {
            let (opened, info) = open_store_partitions(&o, dir, topic, Some(*partition))?;
            let router = Router {
                partitioner: None,
                key_field: None,
                delimiter: b',',
            };
            let compression = o.compression.unwrap_or(info.config.log.compression);
            (opened, router, compression, false)
        }
        Dest::Topic {
            dir,
            topic,
            partitioner,
            key_field,
            delimiter,
        } => {
            let (opened, info) = open_store_partitions(&o, dir, topic, None)?;
            let kind = partitioner.unwrap_or(info.current().kind);
            let partitioner =
                Partitioner::new(kind, info.partitions()).map_err(context("bad --partitioner"))?;
            let router = Router {
                partitioner: Some(partitioner),
                key_field: *key_field,
                delimiter: *delimiter,
            };
            let compression = o.compression.unwrap_or(info.config.log.compression);
            (opened, router, compression, true)
        }
    };
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
    };
    let produced = match o.generate {
        Some((count, size)) => generate(&mut sink, &o, &router, count, size),
        None => from_stdin(&mut sink, &o, &router),
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
    if o.generate.is_some() {
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
}

impl Sink<'_> {
    /// Adds a record for log `i`; appends that log's batch once it is full. Returns false if
    /// the acker stopped.
    fn push(&mut self, i: usize, record: &Record<'_>, batch: usize) -> Result<bool, CliError> {
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
        let sent = self
            .acker
            .send(label, appended.last_offset, appended.receipt);
        self.retain(i)?;
        Ok(sent)
    }

    fn retain(&self, i: usize) -> Result<(), CliError> {
        if self.retention {
            self.logs[i]
                .apply_retention()
                .map_err(context("retention failed"))?;
        }
        Ok(())
    }

    fn append_all(&mut self) -> Result<bool, CliError> {
        for i in 0..self.builders.len() {
            if !self.append(i)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn generate(
    sink: &mut Sink<'_>,
    o: &Options,
    router: &Router,
    count: u64,
    size: usize,
) -> Result<(u64, u64), CliError> {
    let mut value = vec![0u8; size];
    let mut done = 0u64;
    if size > BATCH_BYTES {
        return Err(format!("--size {size} is larger than a batch may be").into());
    }
    while done < count {
        let ts = now_ms();
        // Varied but compressible bytes.
        for (j, b) in value.iter_mut().enumerate() {
            *b = b'a' + ((done as usize + j) % 26) as u8;
        }
        let i = router.route(None);
        let record = Record {
            timestamp: ts,
            key: None,
            value: &value,
            headers: &[],
        };
        if sink.builders[i].records_len() + size > BATCH_BYTES && !sink.append(i)? {
            return Ok((done, done * size as u64));
        }
        done += 1;
        if !sink.push(i, &record, o.batch)? {
            return Ok((done, done * size as u64));
        }
    }
    sink.append_all()?;
    Ok((done, done * size as u64))
}

fn from_stdin(sink: &mut Sink<'_>, o: &Options, router: &Router) -> Result<(u64, u64), CliError> {
    let lines = spawn_stdin_reader(o.batch.clamp(64, 4096))
        .map_err(context("cannot start the stdin reader thread"))?;
    let (mut records, mut bytes) = (0u64, 0u64);
    // Wait for one line, then take the lines that are already there, appending each batch once
    // it is full, and every batch once no more input is available right now.
    while let Ok(first) = lines.recv() {
        let ts = now_ms();
        let mut next = Some(first);
        while let Some(line) = next.take() {
            let line = line.map_err(context("reading standard input failed"))?;
            bytes += line.len() as u64;
            records += 1;
            let key = router.key(&line);
            let i = router.route(key);
            let record = Record {
                timestamp: ts,
                key,
                value: &line,
                headers: &[],
            };
            if !sink.push(i, &record, o.batch)? {
                return Ok((records, bytes));
            }
            match lines.try_recv() {
                Ok(line) => next = Some(line),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
            }
        }
        if !sink.append_all()? {
            break;
        }
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
            .map_err(context("writing to standard output failed"))
    };
    print(&mut out, format!("acked {}", appended.last_offset))?;
    if truncate {
        log.truncate(appended.base_offset)
            .map_err(context("truncate failed"))?;
        print(&mut out, format!("truncated {}", appended.base_offset))?;
    }
    Ok(())
}

/// Reads stdin on a thread, one line (without its `\n`) per message, so that the appender can
/// tell which lines are already available. The thread ends at EOF or on a read error.
fn spawn_stdin_reader(capacity: usize) -> io::Result<Receiver<io::Result<Vec<u8>>>> {
    let (tx, rx) = mpsc::sync_channel(capacity);
    std::thread::Builder::new()
        .name("stdin-reader".into())
        .spawn(move || {
            let mut stdin = io::stdin().lock();
            loop {
                let mut line = Vec::new();
                let message = match stdin.read_until(b'\n', &mut line) {
                    Ok(0) => return,
                    Ok(_) => {
                        if line.last() == Some(&b'\n') {
                            line.pop();
                        }
                        Ok(line)
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(e),
                };
                let failed = message.is_err();
                if tx.send(message).is_err() || failed {
                    return;
                }
            }
        })?;
    Ok(rx)
}

/// (partition to name in the ack line, last offset of the batch, its receipt).
type Ack = (Option<u32>, u64, Receipt);

/// Waits for receipts in append order on its own thread, so that appends go on while earlier
/// batches are being made durable (their fsyncs are shared), and prints the acks.
struct Acker {
    tx: Option<SyncSender<Ack>>,
    handle: JoinHandle<Result<(), CliError>>,
}

impl Acker {
    fn spawn(print: bool) -> io::Result<Acker> {
        let (tx, rx) = mpsc::sync_channel::<Ack>(1024);
        let handle = std::thread::Builder::new().name("acker".into()).spawn(
            move || -> Result<(), CliError> {
                let stdout = io::stdout();
                for (label, last_offset, receipt) in rx {
                    // Receipts complete in append order: once this one is done, every record
                    // up to `last_offset` is acknowledged.
                    receipt.wait().map_err(context_with(|| {
                        format!("the batch ending at offset {last_offset} was not acknowledged")
                    }))?;
                    if print {
                        let mut out = stdout.lock();
                        match label {
                            Some(p) => writeln!(out, "acked {p} {last_offset}"),
                            None => writeln!(out, "acked {last_offset}"),
                        }
                        .and_then(|()| out.flush())
                        .map_err(context("writing to standard output failed"))?;
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

    /// False if the acker has stopped (after an error).
    fn send(&self, label: Option<u32>, last_offset: u64, receipt: Receipt) -> bool {
        self.tx
            .as_ref()
            .is_some_and(|tx| tx.send((label, last_offset, receipt)).is_ok())
    }

    /// Waits for every receipt sent so far.
    fn finish(mut self) -> Result<(), CliError> {
        drop(self.tx.take());
        self.handle
            .join()
            .unwrap_or_else(|_| Err("the acker thread panicked".into()))
    }
}
