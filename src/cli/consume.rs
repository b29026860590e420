//! `stratalog consume`: print the records of a log from an offset to its end.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use stratalog::store::{Store, StoreOptions};

use serde_json::{Value, json};
use stratalog::format::RecordView;
use stratalog::storage::FsStorage;
use stratalog::{Batch, FsyncPolicy, Log, LogOptions};

use super::{CliError, Target, context, context_with, is_broken_pipe};

/// Bytes of batches asked for per read.
const READ_BYTES: usize = 1 << 20;

/// What `consume` reads.
#[derive(Debug)]
pub enum Source {
    /// A plain log or one partition of a store topic.
    Log(Target),
    /// Every partition of a store topic, one after the other.
    Topic {
        /// The store's directory.
        dir: PathBuf,
        /// The topic.
        topic: String,
    },
}

/// What `consume` was asked to do.
#[derive(Debug)]
pub struct Options {
    /// What to read.
    pub source: Source,
    /// First offset to print (default: the log start).
    pub from: Option<u64>,
    /// Most records to print.
    pub max: Option<u64>,
    /// JSON lines instead of raw values.
    pub json: bool,
    /// Consumer group: start at its committed offsets and commit as records are printed.
    pub group: Option<String>,
    /// With a group, commit after at least this many records were printed (and flushed).
    pub commit_every: u64,
}

/// Runs `consume`.
pub fn run(o: Options) -> Result<(), CliError> {
    match &o.source {
        Source::Log(Target::Log(dir)) => run_log(dir, &o),
        Source::Log(Target::Partition {
            dir,
            topic,
            partition,
        }) => run_store(dir, topic, Some(*partition), &o),
        Source::Topic { dir, topic } => run_store(dir, topic, None, &o),
    }
}

fn run_log(dir: &Path, o: &Options) -> Result<(), CliError> {
    if !dir.join("log.meta").exists() {
        return Err(format!("no log in {}", dir.display()).into());
    }
    let log = Log::open(
        dir,
        LogOptions {
            fsync: FsyncPolicy::Never,
            storage: FsStorage::shared(),
            create: false,
            ..LogOptions::default()
        },
    )
    .map_err(context(format!("cannot open the log in {}", dir.display())))?;
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let (start, end) = (log.start_offset(), log.end_offset());
    let next = o.from.unwrap_or(start);
    let printed = if next < start || next > end {
        Err(format!(
            "--from {next} is out of range: the log holds offsets {start}..{end} (from {start} up to {end} excluded)"
        )
        .into())
    } else {
        let mut left = o.max.unwrap_or(u64::MAX);
        print_records(
            &log,
            next,
            &mut left,
            o.json,
            None,
            &mut out,
            &mut |_, _, _| Ok(()),
        )
        .map(|_| ())
    };
    let flushed = out.flush();
    drop(out);
    let closed = log.close().map_err(context("closing the log failed"));
    finish(printed, flushed, closed)
}

fn finish(
    printed: Result<(), CliError>,
    flushed: io::Result<()>,
    closed: Result<(), CliError>,
) -> Result<(), CliError> {
    match printed.and_then(|()| flushed.map_err(Into::into)) {
        // The reader went away (`consume | head`): not a failure of the log.
        Err(e) if is_broken_pipe(&*e) => {}
        Err(e) => return Err(e),
        Ok(()) => {}
    }
    closed
}

fn run_store(dir: &Path, topic: &str, only: Option<u32>, o: &Options) -> Result<(), CliError> {
    let store = Store::open(
        dir,
        StoreOptions {
            storage: FsStorage::shared(),
            create: false,
            retention_interval: None,
            ..StoreOptions::default()
        },
    )
    .map_err(context(format!(
        "cannot open the store in {}",
        dir.display()
    )))?;
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let printed = consume_store(&store, topic, only, o, &mut out);
    let flushed = out.flush();
    drop(out);
    let closed = store.close().map_err(context("closing the store failed"));
    finish(printed, flushed, closed)
}

fn consume_store(
    store: &Store,
    topic: &str,
    only: Option<u32>,
    o: &Options,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let info = store
        .topic(topic)
        .map_err(context(format!("cannot consume {topic:?}")))?;
    let partitions: Vec<u32> = match only {
        Some(p) => vec![p],
        None => (0..info.partitions()).collect(),
    };
    let mut left = o.max.unwrap_or(u64::MAX);
    for p in partitions {
        if left == 0 {
            break;
        }
        let log = store
            .partition(topic, p)
            .map_err(context(format!("cannot open partition {topic}/{p}")))?;
        let (start, end) = (log.start_offset(), log.end_offset());
        let committed = o
            .group
            .as_deref()
            .and_then(|g| store.committed(g, topic, p))
            .map(|c| c.offset);
        let next = match (committed, o.from) {
            (Some(c), _) if c < start => {
                tracing::warn!(
                    topic,
                    partition = p,
                    committed = c,
                    start,
                    "the committed offset was deleted by retention; starting at the log start"
                );
                start
            }
            (Some(c), _) if c > end => {
                tracing::warn!(
                    topic,
                    partition = p,
                    committed = c,
                    end,
                    "the committed offset is past the end of the log (truncated?); starting at its end"
                );
                end
            }
            (Some(c), _) => c,
            (None, Some(from)) if from < start || from > end => {
                return Err(format!(
                    "--from {from} is out of range: {topic}/{p} holds offsets {start}..{end} (from {start} up to {end} excluded)"
                )
                .into());
            }
            (None, Some(from)) => from,
            (None, None) => start,
        };
        let label = only.is_none().then_some(p);
        let mut since_commit = 0u64;
        let mut last_commit = committed;
        let mut commit = |out: &mut dyn Write, next: u64, printed: u64| -> Result<(), CliError> {
            let Some(group) = o.group.as_deref() else {
                return Ok(());
            };
            since_commit += printed;
            // `u64::MAX` printed means "the partition is done": commit what is left.
            if since_commit >= o.commit_every || (printed == u64::MAX && last_commit != Some(next))
            {
                // At least once: everything below `next` was printed and flushed first.
                out.flush()?;
                store
                    .commit(group, topic, p, next, log.leader_epoch())
                    .map_err(context(format!("commit of {topic}/{p} at {next} failed")))?;
                since_commit = 0;
                last_commit = Some(next);
            }
            Ok(())
        };
        let next = print_records(&log, next, &mut left, o.json, label, out, &mut commit)?;
        commit(out, next, u64::MAX)?;
    }
    Ok(())
}

/// Called after each batch printed: `(output, next offset, records printed)`.
type AfterBatch<'a> = dyn FnMut(&mut dyn Write, u64, u64) -> Result<(), CliError> + 'a;

/// Prints records from `next` to the end of the log (at most `left` of them); after each
/// batch calls `after_batch(out, next offset, records printed)`. Returns the next offset.
fn print_records<W: Write>(
    log: &Log,
    mut next: u64,
    left: &mut u64,
    json: bool,
    partition: Option<u32>,
    out: &mut W,
    after_batch: &mut AfterBatch<'_>,
) -> Result<u64, CliError> {
    let end = log.end_offset();
    let mut budget = READ_BYTES;
    while *left > 0 && next < end {
        let batches = match log.read(next, budget) {
            Ok(batches) => batches,
            // A bad batch fails the whole read: read again one batch at a time, so that every
            // good batch before it is printed, and the error names the bad one.
            Err(e) if e.is_corruption() && budget > 1 => {
                budget = 1;
                continue;
            }
            Err(e) => {
                return Err(context(format!("reading offset {next} failed"))(e));
            }
        };
        if batches.is_empty() {
            break;
        }
        let first_base = batches[0].base_offset();
        if first_base > next {
            return Err(format!(
                "the log returned offset {first_base} where {next} was expected (a gap in the log)"
            )
            .into());
        }
        for batch in &batches {
            // `Log::read` can return, after the batches of one segment that fit in the byte
            // budget, batches of a later segment (skipping the rest of the first one): stop at
            // a gap and read again from the next offset.
            if batch.base_offset() > next {
                break;
            }
            // Decode the whole batch before printing any of it.
            let records = decode(log.dir(), batch)?;
            let mut printed = 0;
            let from = next;
            for record in records.iter().filter(|r| r.offset >= from) {
                if *left == 0 {
                    break;
                }
                if json {
                    writeln!(out, "{}", record_json(record, partition))?;
                } else {
                    out.write_all(&record.value)?;
                    out.write_all(b"\n")?;
                }
                *left -= 1;
                printed += 1;
                next = record.offset + 1;
            }
            if *left > 0 {
                next = next.max(batch.last_offset() + 1);
            }
            after_batch(out, next, printed)?;
            if *left == 0 {
                break;
            }
        }
    }
    Ok(next)
}

fn decode(dir: &Path, batch: &Batch) -> Result<Vec<RecordView>, CliError> {
    batch
        .records()
        .and_then(|records| records.collect::<Result<Vec<_>, _>>())
        .map_err(context_with(|| format!(
            "corrupt records in the batch at offset {} of {} (its CRC is good: it was written bad)",
            batch.base_offset(),
            segment_of(dir, batch.base_offset()).display()
        )))
}

/// The segment file that holds `offset`: the one with the largest base at or below it.
fn segment_of(dir: &Path, offset: u64) -> PathBuf {
    let base = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let stem = name.to_str()?.strip_suffix(".log")?;
            (stem.len() == 20).then(|| stem.parse::<u64>().ok())?
        })
        .filter(|&b| b <= offset)
        .max()
        .unwrap_or(0);
    dir.join(format!("{base:020}.log"))
}

/// A JSON string if the bytes are UTF-8, otherwise `{"hex":"..."}`.
fn bytes_json(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::String(s.to_owned()),
        Err(_) => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            json!({ "hex": hex })
        }
    }
}

/// One JSON line, fields in a fixed order: (partition,) offset, timestamp, key, value, headers.
fn record_json(r: &RecordView, partition: Option<u32>) -> String {
    let headers: Vec<String> = r
        .headers
        .iter()
        .map(|h| {
            format!(
                r#"{{"name":{},"value":{}}}"#,
                bytes_json(&h.name),
                bytes_json(&h.value)
            )
        })
        .collect();
    let partition = partition.map_or(String::new(), |p| format!(r#""partition":{p},"#));
    format!(
        r#"{{{partition}"offset":{},"timestamp":{},"key":{},"value":{},"headers":[{}]}}"#,
        r.offset,
        r.timestamp,
        r.key.as_deref().map_or(Value::Null, bytes_json),
        bytes_json(&r.value),
        headers.join(",")
    )
}
