//! `stratalog consume`: print the records of a log from an offset to its end.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use stratalog::format::RecordView;
use stratalog::storage::FsStorage;
use stratalog::{Batch, FsyncPolicy, Log, LogOptions};

use super::{CliError, context, context_with, is_broken_pipe};

/// Bytes of batches asked for per read.
const READ_BYTES: usize = 1 << 20;

/// What `consume` was asked to do.
#[derive(Debug)]
pub struct Options {
    /// The log directory (`DIR/NAME`).
    pub dir: PathBuf,
    /// First offset to print (default: the log start).
    pub from: Option<u64>,
    /// Most records to print.
    pub max: Option<u64>,
    /// JSON lines instead of raw values.
    pub json: bool,
}

/// Runs `consume`.
pub fn run(o: Options) -> Result<(), CliError> {
    if !o.dir.join("log.meta").exists() {
        return Err(format!("no log in {}", o.dir.display()).into());
    }
    let log = Log::open(
        &o.dir,
        LogOptions {
            fsync: FsyncPolicy::Never,
            storage: FsStorage::shared(),
            create: false,
            ..LogOptions::default()
        },
    )
    .map_err(context(format!(
        "cannot open the log in {}",
        o.dir.display()
    )))?;
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let printed = print_records(&log, &o, &mut out);
    let flushed = out.flush();
    drop(out);
    let closed = log.close().map_err(context("closing the log failed"));
    match printed.and_then(|()| flushed.map_err(Into::into)) {
        // The reader went away (`consume | head`): not a failure of the log.
        Err(e) if is_broken_pipe(&*e) => {}
        Err(e) => return Err(e),
        Ok(()) => {}
    }
    closed
}

fn print_records(log: &Log, o: &Options, out: &mut impl Write) -> Result<(), CliError> {
    let (start, end) = (log.start_offset(), log.end_offset());
    let mut next = o.from.unwrap_or(start);
    if next < start || next > end {
        return Err(format!(
            "--from {next} is out of range: the log holds offsets {start}..{end} (from {start} up to {end} excluded)"
        )
        .into());
    }
    let mut left = o.max.unwrap_or(u64::MAX);
    let mut budget = READ_BYTES;
    while left > 0 && next < end {
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
            for record in records.iter().filter(|r| r.offset >= next) {
                if left == 0 {
                    break;
                }
                if o.json {
                    writeln!(out, "{}", record_json(record))?;
                } else {
                    out.write_all(&record.value)?;
                    out.write_all(b"\n")?;
                }
                left -= 1;
            }
            next = next.max(batch.last_offset() + 1);
        }
    }
    Ok(())
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

/// One JSON line, fields in a fixed order: offset, timestamp, key, value, headers.
fn record_json(r: &RecordView) -> String {
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
    format!(
        r#"{{"offset":{},"timestamp":{},"key":{},"value":{},"headers":[{}]}}"#,
        r.offset,
        r.timestamp,
        r.key.as_deref().map_or(Value::Null, bytes_json),
        bytes_json(&r.value),
        headers.join(",")
    )
}
