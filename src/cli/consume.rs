//! `stratalog consume`: print the records of a log from an offset to its end, or follow it.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::{Value, json};
use stratalog::format::RecordView;
use stratalog::replication::{ErrorCode, Message};
use stratalog::storage::FsStorage;
use stratalog::store::{Store, StoreOptions};
use stratalog::{Batch, FsyncPolicy, Log, LogOptions};

use super::{CliError, LogArgs, Target, context, context_with, is_broken_pipe};

/// Bytes of batches asked for per read.
const READ_BYTES: usize = 1 << 20;

/// How long `--follow` sleeps when nothing new was found.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Set by SIGINT or SIGTERM while `--follow` runs: stop and exit 0.
pub(crate) static STOP: AtomicBool = AtomicBool::new(false);

/// `stratalog consume`: its command line is its options.
#[derive(Debug, Args)]
pub struct Options {
    #[command(flatten)]
    pub log: LogArgs,
    /// Print every partition of this topic of the store in DIR, one partition after the other
    /// (instead of `--log`). With `--format json` each line also has `"partition"`.
    #[arg(short = 't', long, value_name = "TOPIC", conflicts_with = "name")]
    pub topic: Option<String>,
    /// Consume as this consumer group (needs a store partition or `--topic`): start at the
    /// group's committed offset of each partition (`--from`/`--from-time` where it has none)
    /// and commit as records are printed, after they were written out (at least once: after
    /// a crash, records since the last commit are printed again, none is skipped).
    #[arg(short = 'g', long, value_name = "GROUP")]
    pub group: Option<String>,
    /// With `--group`: commit once at least this many records were printed, and at the end
    /// of each partition (with `--follow`, each time it has caught up).
    #[arg(long, value_name = "N", default_value_t = 1000, requires = "group",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub commit_every: u64,
    /// Where to start: an offset within the log (from its start up to its end; not with
    /// `--topic`), `start` (the default) or `end` (only records appended from now on, with
    /// `--follow`).
    #[arg(short = 'o', long, value_name = "OFFSET|start|end", value_parser = parse_from)]
    pub from: Option<From>,
    /// Start at the first record whose timestamp (milliseconds since the Unix epoch) is at or
    /// after this; if no record is that recent, at the end of the log (with `--node`, the
    /// leader looks it up in its time index, and the end is its high watermark).
    #[arg(long, value_name = "MS", conflicts_with = "from")]
    pub from_time: Option<i64>,
    /// Print at most this many records.
    #[arg(short = 'n', long, value_name = "N")]
    pub max: Option<u64>,
    /// At the end of the log, keep waiting for new records and print them as they come (like
    /// `tail -f`; with `--topic`, polling each partition in turn) until SIGINT or SIGTERM,
    /// then exit 0 (with `--group`, after committing what was printed). Note: consume still
    /// opens the log (or store) with its lock, so while it follows, a producer in another
    /// process cannot open it.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Read from the node at this address instead of a directory: `--log TOPIC/PARTITION` or
    /// `--topic TOPIC`, up to the node's high watermark (with `--follow`, waiting for more). A
    /// follower answers with its leader's address, which is followed. Several addresses,
    /// separated by commas: the next is tried when one does not answer (a failover). With
    /// `--group`, the group's offsets are kept by the node and replicate with the data.
    #[arg(long, value_name = "ADDR[,ADDR...]")]
    pub node: Option<String>,
    /// Output format (see `consume --help` for the JSON schema).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Where `--from` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// The log's first offset.
    Start,
    /// The log's end: only records appended later.
    End,
    /// This offset.
    Offset(u64),
}

fn parse_from(s: &str) -> Result<From, String> {
    match s {
        "start" | "beginning" => Ok(From::Start),
        "end" => Ok(From::End),
        _ => s
            .parse()
            .map(From::Offset)
            .map_err(|_| format!("{s:?} is not an offset (a number from 0), `start` or `end`")),
    }
}

/// How `consume` prints records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Each value as raw bytes, followed by a newline.
    Text,
    /// One JSON object per line (see `consume --help`).
    Json,
}

/// Runs `consume`.
pub fn run(o: Options) -> Result<(), CliError> {
    if o.follow {
        // Before any other thread starts, so that every thread leaves the signals to it.
        super::on_interrupt(|_| STOP.store(true, Ordering::SeqCst))
            .map_err(context("cannot set up the SIGINT/SIGTERM handler"))?;
    }
    if let Some(node) = &o.node {
        return super::remote::consume(node, &o);
    }
    let source = match &o.topic {
        Some(topic) => (o.log.dir()?, topic.clone(), None),
        None => match Target::parse(&o.log.dir()?, &o.log.name)? {
            Target::Log(dir) => {
                if o.group.is_some() {
                    return Err(
                        "--group needs a store: use --log TOPIC/PARTITION or --topic TOPIC".into(),
                    );
                }
                return run_log(&dir, &o);
            }
            Target::Partition {
                dir,
                topic,
                partition,
            } => (dir, topic, Some(partition)),
        },
    };
    if o.topic.is_some() && matches!(o.from, Some(From::Offset(_))) {
        return Err(
            "--from OFFSET names an offset of one log: with --topic use `--from start`, \
             `--from end` or --from-time"
                .into(),
        );
    }
    let (dir, topic, only) = source;
    run_store(&dir, &topic, only, &o)
}

fn run_log(dir: &Path, o: &Options) -> Result<(), CliError> {
    if !dir.join("log.meta").exists() {
        return Err(format!("no log in {}", dir.display()).into());
    }
    // Read-only: no lock and nothing written, so it reads beside a producer that holds the
    // log (and `--follow` tails it), and never repairs a crashed log behind anyone's back.
    let log = match Log::open(
        dir,
        LogOptions {
            fsync: FsyncPolicy::Never,
            storage: FsStorage::shared(),
            create: false,
            read_only: true,
            ..LogOptions::default()
        },
    ) {
        // A writer stopped while creating the log: it holds no record, so there is nothing
        // to print (with `--follow`, the writer that finishes it must be waited for instead).
        Err(stratalog::Error::NoSegment { .. }) if !o.follow => {
            tracing::warn!(dir = %dir.display(), "the log's creation did not finish: it holds no record");
            return Ok(());
        }
        opened => opened.map_err(context(format!("cannot open the log in {}", dir.display())))?,
    };
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let printed = start_offset(&log, o, None, "the log").and_then(|next| {
        let mut cursors = [Cursor::new(&log, 0, None, next, None)];
        follow(&mut cursors, None, o, &mut out)
    });
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

/// The first offset to print of a log, from `--from` or `--from-time` (a group's committed
/// offset is handled by the caller).
fn start_offset(log: &Log, o: &Options, from: Option<u64>, what: &str) -> Result<u64, CliError> {
    let (start, end) = (log.start_offset(), log.end_offset());
    if let Some(ts) = o.from_time {
        return Ok(log
            .offset_for_timestamp(ts)
            .map_err(context(format!(
                "looking up timestamp {ts} in {what} failed"
            )))?
            .unwrap_or(end));
    }
    match o.from.or(from.map(From::Offset)) {
        None | Some(From::Start) => Ok(start),
        Some(From::End) => Ok(end),
        Some(From::Offset(next)) if next < start || next > end => Err(format!(
            "--from {next} is out of range: {what} holds offsets {start}..{end} (from {start} up to {end} excluded)"
        )
        .into()),
        Some(From::Offset(next)) => Ok(next),
    }
}

/// `--from-time` through a node (`consume --node`): asks the leader, through `call` (which
/// follows a follower's `NotLeader` answer to the leader), for the first offset of
/// `topic/partition` whose record's timestamp is at or after `ts`, or its high watermark if no
/// committed record is that recent: where the `--dir` form starts.
pub(crate) fn node_offset_for_time(
    call: &mut dyn FnMut(&Message) -> Result<Message, CliError>,
    topic: &str,
    partition: u32,
    ts: i64,
) -> Result<u64, CliError> {
    let request = Message::OffsetForTimeRequest {
        topic: topic.to_string(),
        partition,
        timestamp: ts,
    };
    match call(&request)? {
        Message::OffsetForTimeResponse {
            error: ErrorCode::None,
            offset,
        } => Ok(offset),
        Message::OffsetForTimeResponse { error, .. } => Err(format!(
            "looking up timestamp {ts} in {topic}/{partition} failed on the node: {}",
            error.name()
        )
        .into()),
        Message::ErrorResponse { error, message, .. } => Err(format!(
            "looking up timestamp {ts} in {topic}/{partition}: the node refused it ({}): \
             {message} (a node older than this client does not serve --from-time)",
            error.name()
        )
        .into()),
        other => Err(format!("the node answered an offset-for-time request with {other:?}").into()),
    }
}

fn run_store(dir: &Path, topic: &str, only: Option<u32>, o: &Options) -> Result<(), CliError> {
    // Without a group nothing is written: read-only, beside a producer that holds the store.
    // A group commits, which needs the store itself.
    let store = Store::open(
        dir,
        StoreOptions {
            storage: FsStorage::shared(),
            create: false,
            retention_interval: None,
            read_only: o.group.is_none(),
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
    let mut logs = Vec::with_capacity(partitions.len());
    let mut opened = Vec::with_capacity(partitions.len());
    for &p in &partitions {
        // A partition of a read-only store that was never produced to has no log: nothing to
        // print (a partition created after this started is not followed).
        if let Some(log) = store
            .try_partition(topic, p)
            .map_err(context(format!("cannot open partition {topic}/{p}")))?
        {
            logs.push(log);
            opened.push(p);
        }
    }
    let mut cursors = Vec::with_capacity(logs.len());
    for (&p, log) in opened.iter().zip(&logs) {
        let (start, end) = (log.start_offset(), log.end_offset());
        let committed = o
            .group
            .as_deref()
            .and_then(|g| store.committed(g, topic, p))
            .map(|c| c.offset);
        let next = match committed {
            Some(c) if c < start => {
                tracing::warn!(
                    topic,
                    partition = p,
                    committed = c,
                    start,
                    "the committed offset was deleted by retention; starting at the log start"
                );
                start
            }
            Some(c) if c > end => {
                tracing::warn!(
                    topic,
                    partition = p,
                    committed = c,
                    end,
                    "the committed offset is past the end of the log (truncated?); starting at its end"
                );
                end
            }
            Some(c) => c,
            None => start_offset(log, o, None, &format!("{topic}/{p}"))?,
        };
        let label = only.is_none().then_some(p);
        cursors.push(Cursor::new(log, p, label, next, committed));
    }
    let committer = o.group.as_deref().map(|group| Committer {
        store,
        group,
        topic,
        every: o.commit_every,
    });
    follow(&mut cursors, committer.as_ref(), o, out)
}

/// Where the records printed are committed (`--group`).
struct Committer<'a> {
    store: &'a Store,
    group: &'a str,
    topic: &'a str,
    every: u64,
}

/// A log being printed.
struct Cursor<'a> {
    log: &'a Log,
    /// The partition to name in JSON lines.
    label: Option<u32>,
    /// The next offset to print.
    next: u64,
    commits: Commits,
}

/// What a cursor committed.
struct Commits {
    /// The partition.
    partition: u32,
    /// Records printed since the last commit.
    since: u64,
    /// The offset last committed.
    last: Option<u64>,
}

impl<'a> Cursor<'a> {
    fn new(
        log: &'a Log,
        partition: u32,
        label: Option<u32>,
        next: u64,
        committed: Option<u64>,
    ) -> Self {
        Cursor {
            log,
            label,
            next,
            commits: Commits {
                partition,
                since: 0,
                last: committed,
            },
        }
    }
}

/// Commits `next` for a cursor's partition if `printed` records brought it to the group's
/// `--commit-every`, or if `caught_up` and it moved; after flushing `out` (at least once).
fn maybe_commit(
    committer: Option<&Committer<'_>>,
    log: &Log,
    commits: &mut Commits,
    out: &mut dyn Write,
    next: u64,
    printed: u64,
    caught_up: bool,
) -> Result<(), CliError> {
    let Some(c) = committer else {
        return Ok(());
    };
    let partition = commits.partition;
    commits.since += printed;
    if commits.since >= c.every || (caught_up && commits.last != Some(next)) {
        // At least once: everything below `next` was printed and flushed first.
        out.flush()?;
        c.store
            .commit(c.group, c.topic, partition, next, log.leader_epoch())
            .map_err(context(format!(
                "commit of {}/{partition} at {next} failed",
                c.topic
            )))?;
        commits.since = 0;
        commits.last = Some(next);
    }
    Ok(())
}

/// Prints each cursor's records to the end of its log, one cursor after the other; with
/// `--follow`, goes round again, sleeping a little whenever nothing was new, until SIGINT or
/// SIGTERM (or `--max` records).
fn follow(
    cursors: &mut [Cursor<'_>],
    committer: Option<&Committer<'_>>,
    o: &Options,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let json = o.format == Format::Json;
    let mut left = o.max.unwrap_or(u64::MAX);
    loop {
        let before = left;
        for c in cursors.iter_mut() {
            if left == 0 {
                break;
            }
            let Cursor {
                log,
                label,
                next,
                commits,
            } = c;
            let mut after_batch = |out: &mut dyn Write, next: u64, printed: u64| {
                maybe_commit(committer, log, commits, out, next, printed, false)
            };
            *next = print_records(log, *next, &mut left, json, *label, out, &mut after_batch)?;
            maybe_commit(committer, log, commits, out, *next, 0, true)?;
        }
        if !o.follow || left == 0 || STOP.load(Ordering::SeqCst) {
            return Ok(());
        }
        if left == before {
            // Caught up: show what was printed, then wait for more. A read-only log sees what
            // another process appended only once it looks again.
            out.flush()?;
            std::thread::sleep(POLL_INTERVAL);
            for c in cursors.iter() {
                c.log
                    .refresh()
                    .map_err(context("following the log failed"))?;
            }
        }
    }
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
    while *left > 0 && next < end && !STOP.load(Ordering::SeqCst) {
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
        .filter_map(|e| stratalog::format::parse_segment_name(e.file_name().to_str()?))
        .filter(|&b| b <= offset)
        .max()
        .unwrap_or(0);
    dir.join(stratalog::format::segment_file_name(
        base,
        stratalog::format::SegmentFile::Log,
    ))
}

/// Every byte field in JSON: `{"utf8":"<text>" or null,"hex":"<lowercase hex>"}`, so that
/// one jq filter fits every record (`.value.utf8`, `.value.hex`).
fn bytes_json(bytes: &[u8]) -> Value {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        hex.push(char::from(DIGITS[usize::from(b >> 4)]));
        hex.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    json!({ "utf8": std::str::from_utf8(bytes).ok(), "hex": hex })
}

/// One JSON line, fields in a fixed order: (partition,) offset, timestamp, key, value, headers.
pub(crate) fn record_json(r: &RecordView, partition: Option<u32>) -> String {
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
