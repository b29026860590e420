//! `stratalog produce`: append lines of standard input, or generated records, to a log.

use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::thread::JoinHandle;
use std::time::Instant;

use stratalog::storage::FsStorage;
use stratalog::{
    BatchBuilder, Compression, FsyncPolicy, Log, LogConfig, LogOptions, Receipt, now_ms,
};

use super::{CliError, context, context_with};

/// A batch is appended early once its records take this many bytes, well below the format's
/// limit on a batch.
const BATCH_BYTES: usize = 8 << 20;

/// What `produce` was asked to do.
#[derive(Debug)]
pub struct Options {
    /// The log directory (`DIR/NAME`).
    pub dir: PathBuf,
    /// The fsync policy.
    pub fsync: FsyncPolicy,
    /// Largest number of records per batch.
    pub batch: usize,
    /// Compression of the batches.
    pub compression: Compression,
    /// `LogConfig::segment_bytes` for a new log.
    pub segment_bytes: Option<u64>,
    /// Print `acked <offset>` lines.
    pub print_acks: bool,
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

/// Runs `produce`.
pub fn run(o: Options) -> Result<(), CliError> {
    let mut config = LogConfig {
        compression: o.compression,
        ..LogConfig::default()
    };
    if let Some(bytes) = o.segment_bytes {
        config.segment_bytes = bytes;
    }
    config.retention_bytes = o.retention_bytes;
    let log = Log::open(
        &o.dir,
        LogOptions {
            config,
            fsync: o.fsync,
            storage: FsStorage::shared(),
            create: true,
            ..Default::default()
        },
    )
    .map_err(context(format!(
        "cannot open the log in {}",
        o.dir.display()
    )))?;
    if let Some(asked) = o.segment_bytes {
        let kept = log.config().segment_bytes;
        if kept != asked {
            tracing::warn!(
                dir = %o.dir.display(),
                segment_bytes = kept,
                "the log already exists: --segment-bytes {asked} is ignored"
            );
        }
    }
    let started = Instant::now();
    let acker = Acker::spawn(o.print_acks).map_err(context("cannot start the acker thread"))?;
    let produced = match o.generate {
        Some((count, size)) => generate(&log, &o, count, size, &acker),
        None => from_stdin(&log, &o, &acker),
    };
    let acked = acker.finish();
    let elapsed = started.elapsed();
    let closed = log.close().map_err(context("closing the log failed"));
    // Report the first failure; the later ones are most likely its consequences.
    let (records, bytes) = produced?;
    acked?;
    closed?;
    if o.generate.is_some() {
        let secs = elapsed.as_secs_f64().max(1e-9);
        println!(
            "produced {records} records ({bytes} bytes of values) in {secs:.3} s: {:.0} records/s, {:.2} MB/s",
            records as f64 / secs,
            bytes as f64 / secs / 1e6,
        );
    }
    Ok(())
}

/// Appends `builder` and hands its receipt to the acker. Returns false if the acker stopped
/// (it failed: its error is reported by [`Acker::finish`]).
fn append(log: &Log, builder: &BatchBuilder, acker: &Acker) -> Result<bool, CliError> {
    let appended = log.append(builder).map_err(context("append failed"))?;
    Ok(acker.send(appended.last_offset, appended.receipt))
}

fn generate(
    log: &Log,
    o: &Options,
    count: u64,
    size: usize,
    acker: &Acker,
) -> Result<(u64, u64), CliError> {
    let mut builder = BatchBuilder::new(o.compression);
    let mut value = vec![0u8; size];
    let mut done = 0u64;
    while done < count {
        builder.clear();
        let ts = now_ms();
        while done < count
            && builder.len() < o.batch
            && (builder.is_empty() || builder.records_len() + size <= BATCH_BYTES)
        {
            // Varied but compressible bytes.
            for (j, b) in value.iter_mut().enumerate() {
                *b = b'a' + ((done as usize + j) % 26) as u8;
            }
            builder
                .push_value(ts, &value)
                .map_err(context_with(|| format!("record of {size} bytes")))?;
            done += 1;
        }
        if !append(log, &builder, acker)? {
            break;
        }
    }
    Ok((done, done * size as u64))
}

fn from_stdin(log: &Log, o: &Options, acker: &Acker) -> Result<(u64, u64), CliError> {
    let lines = spawn_stdin_reader(o.batch.clamp(64, 4096))
        .map_err(context("cannot start the stdin reader thread"))?;
    let mut builder = BatchBuilder::new(o.compression);
    let (mut records, mut bytes, mut batches) = (0u64, 0u64, 0u64);
    // Wait for one line, then take the lines that are already there, up to a full batch.
    while let Ok(first) = lines.recv() {
        builder.clear();
        let ts = now_ms();
        let mut next = Some(first);
        while let Some(line) = next.take() {
            let line = line.map_err(context("reading standard input failed"))?;
            bytes += line.len() as u64;
            builder
                .push_value(ts, &line)
                .map_err(context_with(|| format!("line of {} bytes", line.len())))?;
            if builder.len() < o.batch && builder.records_len() < BATCH_BYTES {
                match lines.try_recv() {
                    Ok(line) => next = Some(line),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
                }
            }
        }
        records += builder.len() as u64;
        batches += 1;
        if let Some(every) = o.truncate_every {
            append_then_truncate(log, &builder, batches % every.max(1) == 0)?;
        } else if !append(log, &builder, acker)? {
            break;
        }
        if o.retention_bytes.is_some() {
            log.apply_retention().map_err(context("retention failed"))?;
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

/// Waits for receipts in append order on its own thread, so that appends go on while earlier
/// batches are being made durable (their fsyncs are shared), and prints the acks.
struct Acker {
    tx: Option<SyncSender<(u64, Receipt)>>,
    handle: JoinHandle<Result<(), CliError>>,
}

impl Acker {
    fn spawn(print: bool) -> io::Result<Acker> {
        let (tx, rx) = mpsc::sync_channel::<(u64, Receipt)>(1024);
        let handle = std::thread::Builder::new().name("acker".into()).spawn(
            move || -> Result<(), CliError> {
                let stdout = io::stdout();
                for (last_offset, receipt) in rx {
                    // Receipts complete in append order: once this one is done, every record
                    // up to `last_offset` is acknowledged.
                    receipt.wait().map_err(context_with(|| {
                        format!("the batch ending at offset {last_offset} was not acknowledged")
                    }))?;
                    if print {
                        let mut out = stdout.lock();
                        writeln!(out, "acked {last_offset}")
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
    fn send(&self, last_offset: u64, receipt: Receipt) -> bool {
        self.tx
            .as_ref()
            .is_some_and(|tx| tx.send((last_offset, receipt)).is_ok())
    }

    /// Waits for every receipt sent so far.
    fn finish(mut self) -> Result<(), CliError> {
        drop(self.tx.take());
        self.handle
            .join()
            .unwrap_or_else(|_| Err("the acker thread panicked".into()))
    }
}
