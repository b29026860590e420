//! `stratalog`: produce to, consume from, verify and dump stratalog logs.
//!
//! This file only parses the command line, sets up logging and turns results into an exit
//! code; the commands live in `src/cli/` (part of the binary, not of the library).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use stratalog::store::PartitionerKind;
use stratalog::{Compression, FsyncPolicy, LogConfig};

mod cli;

use cli::CliError;

/// An embeddable append-only log storage engine: command-line tool.
///
/// A log lives in a directory `DIR/NAME` (`--dir DIR --log NAME`; NAME defaults to `default`)
/// of segment files (`<base offset>.log`), their indexes, a recovery checkpoint and `log.meta`.
///
/// Diagnostics go to stderr; set `RUST_LOG` (for example `RUST_LOG=info`) to see more than
/// warnings. Exit status: 0 on success, 1 on an error or a failed check, 2 on bad arguments.
#[derive(Debug, Parser)]
#[command(name = "stratalog", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Append records to a log (created if missing).
    ///
    /// Without `--count`, reads standard input, one record per line (the value is the line
    /// without its `\n`; any bytes are accepted), and appends the lines in batches of at most
    /// `--batch` lines: a batch is appended as soon as it is full or no more input is available
    /// right now, so a slow or interactive producer is acknowledged promptly.
    ///
    /// With `--count N`, appends N generated records of `--size` bytes instead, waits until
    /// all of them are acknowledged and prints the throughput.
    Produce(ProduceArgs),
    /// Print the records of a log from an offset to its end.
    ///
    /// `--format text` prints each value followed by a newline, as raw bytes.
    ///
    /// `--format json` prints one JSON object per line:
    /// `{"offset":N,"timestamp":MS,"key":K,"value":V,"headers":[{"name":K,"value":V},...]}`.
    /// A key, value or header name/value is a JSON string when its bytes are valid UTF-8 and
    /// otherwise an object `{"hex":"<lowercase hex of the bytes>"}`; a missing key is `null`.
    ///
    /// Opening the log takes its lock and recovers it after a crash (a torn tail is cut).
    /// Exits 0 at the end of the log. On corrupt data nothing of the bad batch is printed,
    /// the file and byte position are named on stderr and the exit status is 1.
    Consume(ConsumeArgs),
    /// Check logs without changing them: every file is opened read-only and no lock is
    /// taken, so it works on a read-only mount and beside a running producer (no log is
    /// opened, so no recovery runs).
    ///
    /// `--dir DIR` checks every log under DIR (each directory at any depth holding a
    /// `log.meta`); `--dir DIR --log NAME` only DIR/NAME. Checks every batch of every segment
    /// (header, CRC, records, offsets that follow on) and every index entry. Prints a summary
    /// per log, each note (what a crash leaves and the next open repairs, such as a torn tail
    /// after the last fsync), each quarantine file (bytes cut earlier by recovery or
    /// truncation: offset range, bytes, reason) and each problem. Exits 0 only if no log has
    /// a problem (and at least one log was found). Every bad range of a segment is a problem
    /// of its own (the check goes on at the next sound batch); when some offsets are not
    /// readable, a second line gives `offsets START..END: R records, L offsets in bad ranges or
    /// gaps`, with R + L = END - START.
    Verify(VerifyArgs),
    /// Print the batches of a segment file, or of every segment of a log directory.
    ///
    /// One line per batch: byte position, base and last offset, record count, leader epoch,
    /// first and max timestamp, size, compression and `crc=ok` or `crc=bad`. A batch with a bad
    /// CRC but a sane header is skipped by its length; an invalid header or a batch running
    /// past the end of the file stops the dump of that file. Exits 1 if anything was bad.
    Dump(DumpArgs),
    /// Measure the engine on this machine next to the machine's own limits.
    ///
    /// In one run: a memory copy, the disk's fsync latency, a plain file written with `write` +
    /// `sync_data`; then durable batched appends (128 B and 1 KiB records, 1 MiB per fsync),
    /// durable 1 KiB appends from 1, 4, 16 and 64 threads (appends/s and p50/p99/p99.9
    /// latency, and 64 threads paced at half their peak), a sequential and a random read, and
    /// reopening after a clean close and after a crash. Prints a table of each figure with its
    /// ratio to the limit it is bounded by, writes a plot of throughput and latency against
    /// writers as SVG and, with `--json`, the figures. Scratch files go in a temporary
    /// directory (under `--dir`, default the system's temporary directory, which must be on
    /// the disk to measure) that is removed at the end.
    Bench(BenchArgs),
    /// Create, list, describe, alter and delete the topics of a store.
    ///
    /// A store is a directory (`--dir DIR`) holding topics, each with a number of partitions
    /// (each partition one log, in `DIR/TOPIC/PARTITION`), their settings and partitioner
    /// versions (in `DIR/stratalog.store`), and the consumer offsets of consumer groups.
    /// `produce` and `consume` reach a partition with `--log TOPIC/PARTITION`, a whole topic
    /// with `--topic TOPIC`.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// List and describe consumer groups: their committed offsets and lag.
    #[command(subcommand)]
    Groups(GroupsCommand),
}

#[derive(Debug, Subcommand)]
enum TopicsCommand {
    /// Create a topic (and the store, if the directory holds none).
    Create {
        /// The store's directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The topic's name: 1 to 200 characters of A-Z a-z 0-9 . _ - (not starting with `__`).
        name: String,
        /// Number of partitions.
        #[arg(long, value_name = "N", default_value_t = 1)]
        partitions: u32,
        /// How producers spread keyed records: `jump` (consistent), `ring` or `ring:<vnodes>`
        /// (consistent), `modulo` (hash modulo partitions), `round-robin` or `random` (keys
        /// ignored).
        #[arg(long, value_name = "KIND", default_value = "jump", value_parser = parse_partitioner)]
        partitioner: PartitionerKind,
        #[command(flatten)]
        settings: TopicSettings,
    },
    /// List the topics: name, partitions, partitioner and its version.
    List {
        /// The store's directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print a topic's settings, partitioner versions and each partition's offsets.
    Describe {
        /// The store's directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The topic.
        name: String,
    },
    /// Change a topic's settings, add partitions or change its partitioner (each of the last
    /// two makes a new partitioner version).
    Alter {
        /// The store's directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The topic.
        name: String,
        /// New number of partitions (more than now: partitions are only added).
        #[arg(long, value_name = "N")]
        partitions: Option<u32>,
        /// New partitioner (see `topics create --help`).
        #[arg(long, value_name = "KIND", value_parser = parse_partitioner)]
        partitioner: Option<PartitionerKind>,
        #[command(flatten)]
        settings: TopicSettings,
    },
    /// Delete a topic and all its data.
    Delete {
        /// The store's directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The topic.
        name: String,
    },
}

/// Settings of a topic; left out, a new topic gets the default and `alter` keeps the current.
#[derive(Debug, Args)]
struct TopicSettings {
    /// When appends are durable: `always`, `never`, `<N>ms` or `<N>b` (default always).
    #[arg(long, value_name = "POLICY", value_parser = parse_fsync)]
    fsync: Option<FsyncPolicy>,
    /// Segment size at which a partition rolls to a new segment (default 1 GiB).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64)
          .range(LogConfig::MIN_SEGMENT_BYTES..=LogConfig::MAX_SEGMENT_BYTES))]
    segment_bytes: Option<u64>,
    /// Roll a partition's active segment once its first append is this old (0: never).
    #[arg(long, value_name = "MS")]
    segment_ms: Option<u64>,
    /// Delete a partition's oldest segments while it is larger than this (0: no limit).
    #[arg(long, value_name = "BYTES")]
    retention_bytes: Option<u64>,
    /// Delete segments whose newest record is older than this (0: no limit).
    #[arg(long, value_name = "MS")]
    retention_ms: Option<u64>,
    /// Compression of batches appended by `produce`.
    #[arg(long, value_enum)]
    compression: Option<CompressionArg>,
}

impl TopicSettings {
    fn into_settings(self) -> cli::topics::Settings {
        cli::topics::Settings {
            fsync: self.fsync,
            segment_bytes: self.segment_bytes,
            segment_ms: self.segment_ms,
            retention_bytes: self.retention_bytes,
            retention_ms: self.retention_ms,
            compression: self.compression.map(CompressionArg::into_compression),
        }
    }
}

#[derive(Debug, Subcommand)]
enum GroupsCommand {
    /// One line per consumer group: partitions committed and total lag.
    List {
        /// The store's directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Each committed partition of a group (or of every group): committed offset, end offset,
    /// lag and the leader epoch of the commit.
    Describe {
        /// The store's directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The group (default: every group).
        group: Option<String>,
    },
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Directory on the disk to measure (a temporary directory is made inside it).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The write path: `std` (pwrite + fdatasync) or `uring` (io_uring).
    #[arg(long, value_name = "ENGINE", default_value = "std")]
    io: stratalog::storage::IoEngine,
    /// About how long the whole run takes, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    seconds: f64,
    /// Also write the figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Where to write the plot (default `stratalog-bench.svg` in the current directory).
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Also run the write workloads on the std and the io_uring path alternately, round by
    /// round, and print io_uring's median per-round ratio to std.
    #[arg(long)]
    compare_io: bool,
    /// How segments are extended ahead of the writer: `auto` (zeros while fsyncs are small,
    /// `fallocate` otherwise), `zeros` (written and fsynced in the background), `fallocate`
    /// or `off`.
    #[arg(long, value_name = "MODE", default_value = "auto")]
    prealloc: stratalog::Preallocate,
    /// Also run the write workloads with each preallocation alternately, round by round, and
    /// print each one's median per-round ratio to `off`.
    #[arg(long)]
    compare_prealloc: bool,
}

/// Where the log is.
#[derive(Debug, Args)]
struct LogArgs {
    /// Directory holding the logs (or the store).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Name of the log: its files are in DIR/NAME. `TOPIC/PARTITION` names a partition of a
    /// topic of the store in DIR (see `stratalog topics`).
    #[arg(long = "log", value_name = "NAME", default_value = "default")]
    name: String,
}

#[derive(Debug, Args)]
struct ProduceArgs {
    #[command(flatten)]
    log: LogArgs,
    /// Append to every partition of this topic of the store in DIR (instead of `--log`),
    /// spreading records with the topic's partitioner (or `--partitioner`).
    #[arg(long, value_name = "TOPIC", conflicts_with = "name")]
    topic: Option<String>,
    /// With `--topic`: the record key is this field (1-based) of the line, fields being
    /// separated by `--delimiter`; the value is the whole line. Records with the same key go
    /// to the same partition under a keyed partitioner, so they keep their order.
    #[arg(long, value_name = "N", requires = "topic",
          value_parser = clap::value_parser!(u64).range(1..=65536))]
    key_field: Option<u64>,
    /// With `--key-field`: the byte separating the fields of a line.
    #[arg(long, value_name = "CHAR", default_value = ",", requires = "key_field")]
    delimiter: char,
    /// With `--topic`: spread records with this partitioner instead of the topic's (see
    /// `topics create --help`).
    #[arg(long, value_name = "KIND", requires = "topic", value_parser = parse_partitioner)]
    partitioner: Option<PartitionerKind>,
    /// When appends are made durable and acknowledged: `always` (fsync before each
    /// acknowledgement, concurrent batches share an fsync), `never` (only on segment roll and
    /// close), `<N>ms` (every N milliseconds) or `<N>b` (every N bytes written). Default
    /// `always`; for a store topic, its own setting applies.
    #[arg(long, value_name = "POLICY", value_parser = parse_fsync)]
    fsync: Option<FsyncPolicy>,
    /// Largest number of records per batch.
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    batch: u32,
    /// Compression of the batches (default none; for a store topic, its own setting).
    #[arg(long, value_enum)]
    compression: Option<CompressionArg>,
    /// Segment size at which the log rolls to a new segment (default 1 GiB). Applies only
    /// when the log is created: an existing log keeps its own.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64)
          .range(LogConfig::MIN_SEGMENT_BYTES..=LogConfig::MAX_SEGMENT_BYTES))]
    segment_bytes: Option<u64>,
    /// Print `acked <offset>` (and flush) each time every record up to and including
    /// <offset> has been acknowledged under the fsync policy (durable with `--fsync always`).
    /// With `--topic`, `acked <partition> <offset>`.
    #[arg(long)]
    print_acks: bool,
    /// The write path: `std` (pwrite + fdatasync) or `uring` (io_uring; falls back to std
    /// with a warning if the kernel refuses it).
    #[arg(long, value_name = "ENGINE", default_value = "std")]
    io: stratalog::storage::IoEngine,
    /// How the log's segments are extended ahead of the writer: `auto` (zeros while fsyncs
    /// are small, `fallocate` otherwise), `zeros` (written and fsynced in the background),
    /// `fallocate` or `off`.
    #[arg(long, value_name = "MODE", default_value = "auto")]
    prealloc: stratalog::Preallocate,
    /// Append this many generated records instead of reading standard input.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Size in bytes of each generated record's value (with `--count`).
    #[arg(long, value_name = "BYTES", requires = "count", default_value_t = 100)]
    size: usize,
    /// Testing only: retention limit for a new log, applied after every batch.
    #[arg(long, value_name = "BYTES", hide = true)]
    retention_bytes: Option<u64>,
    /// Testing only: truncate every N-th batch (from stdin) away again after its ack.
    #[arg(long, value_name = "N", hide = true, conflicts_with = "count")]
    truncate_every: Option<u64>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CompressionArg {
    /// Stored as is.
    None,
    /// One LZ4 block per batch.
    Lz4,
}

impl CompressionArg {
    fn into_compression(self) -> Compression {
        match self {
            CompressionArg::None => Compression::None,
            CompressionArg::Lz4 => Compression::Lz4,
        }
    }
}

#[derive(Debug, Args)]
struct ConsumeArgs {
    #[command(flatten)]
    log: LogArgs,
    /// Print every partition of this topic of the store in DIR, one partition after the other
    /// (instead of `--log`). With `--format json` each line also has `"partition"`.
    #[arg(long, value_name = "TOPIC", conflicts_with = "name")]
    topic: Option<String>,
    /// Consume as this consumer group (needs a store partition or `--topic`): start at the
    /// group's committed offset of each partition (the log start if none) and commit as
    /// records are printed, after they were written out (at least once: after a crash, records
    /// since the last commit are printed again, none is skipped).
    #[arg(long, value_name = "GROUP", conflicts_with = "from")]
    group: Option<String>,
    /// With `--group`: commit once at least this many records were printed, and at the end
    /// of each partition.
    #[arg(long, value_name = "N", default_value_t = 1000, requires = "group",
          value_parser = clap::value_parser!(u64).range(1..))]
    commit_every: u64,
    /// First offset to print (default: the log's start). Must be within the log: from its
    /// start up to its end (at the end, nothing is printed). Not with `--topic`.
    #[arg(long, value_name = "OFFSET", conflicts_with = "topic")]
    from: Option<u64>,
    /// Print at most this many records.
    #[arg(long, value_name = "N")]
    max: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// How `consume` prints records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Each value as raw bytes, followed by a newline.
    Text,
    /// One JSON object per line (see `consume --help`).
    Json,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// Directory holding the logs. Without `--log`, every log under it is checked: each
    /// directory, at any depth, that holds a `log.meta` (DIR itself included).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Check only the log DIR/NAME.
    #[arg(long = "log", value_name = "NAME")]
    name: Option<String>,
}

#[derive(Debug, Args)]
struct DumpArgs {
    /// A segment file (`<base offset>.log`) or a log directory (every `.log` file, in order).
    #[arg(value_name = "PATH")]
    path: PathBuf,
}

fn parse_fsync(s: &str) -> Result<FsyncPolicy, String> {
    s.parse()
}

fn parse_partitioner(s: &str) -> Result<PartitionerKind, String> {
    s.parse()
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Usage errors exit 2, `--help` and `--version` exit 0.
        Err(e) => e.exit(),
    };
    init_tracing();
    // As servers do: a store of many partitions needs more than the usual 1024 descriptors.
    if let Err(e) = stratalog::limits::raise_fd_limit() {
        tracing::debug!(error = %e, "could not raise the open file limit");
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`stratalog topics list | head`): nothing left to tell anyone.
        Err(e) if cli::is_broken_pipe(&*e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cli::error_chain(&*e));
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Produce(a) => cli::produce::run(cli::produce::Options {
            dest: match a.topic {
                Some(topic) => {
                    let delimiter = u8::try_from(a.delimiter)
                        .map_err(|_| "--delimiter must be a single-byte (ASCII) character")?;
                    cli::produce::Dest::Topic {
                        dir: a.log.dir,
                        topic,
                        partitioner: a.partitioner,
                        key_field: a.key_field.map(|f| f as usize),
                        delimiter,
                    }
                }
                None => cli::produce::Dest::Log(cli::Target::parse(&a.log.dir, &a.log.name)?),
            },
            fsync: a.fsync,
            batch: a.batch as usize,
            compression: a.compression.map(CompressionArg::into_compression),
            segment_bytes: a.segment_bytes,
            print_acks: a.print_acks,
            io: a.io,
            prealloc: a.prealloc,
            generate: a.count.map(|count| (count, a.size)),
            retention_bytes: a.retention_bytes,
            truncate_every: a.truncate_every,
        }),
        Command::Consume(a) => {
            let source = match a.topic {
                Some(topic) => cli::consume::Source::Topic {
                    dir: a.log.dir,
                    topic,
                },
                None => cli::consume::Source::Log(cli::Target::parse(&a.log.dir, &a.log.name)?),
            };
            if a.group.is_some() && matches!(source, cli::consume::Source::Log(cli::Target::Log(_)))
            {
                return Err(
                    "--group needs a store: use --log TOPIC/PARTITION or --topic TOPIC".into(),
                );
            }
            cli::consume::run(cli::consume::Options {
                source,
                from: a.from,
                max: a.max,
                json: a.format == Format::Json,
                group: a.group,
                commit_every: a.commit_every,
            })
        }
        Command::Verify(a) => match a.name {
            Some(name) => cli::verify::run(&cli::Target::parse(&a.dir, &name)?.log_dir()),
            None => cli::verify::run_all(&a.dir),
        },
        Command::Dump(a) => cli::dump::run(&a.path),
        Command::Bench(a) => cli::bench::run(cli::bench::Options {
            dir: a.dir,
            io: a.io,
            seconds: a.seconds,
            json: a.json,
            svg: a.svg,
            compare_io: a.compare_io,
            prealloc: a.prealloc,
            compare_prealloc: a.compare_prealloc,
        }),
        Command::Topics(t) => match t {
            TopicsCommand::Create {
                dir,
                name,
                partitions,
                partitioner,
                settings,
            } => cli::topics::create(
                &dir,
                &name,
                partitions,
                partitioner,
                &settings.into_settings(),
            ),
            TopicsCommand::List { dir } => cli::topics::list(&dir),
            TopicsCommand::Describe { dir, name } => cli::topics::describe(&dir, &name),
            TopicsCommand::Alter {
                dir,
                name,
                partitions,
                partitioner,
                settings,
            } => cli::topics::alter(
                &dir,
                &name,
                partitions,
                partitioner,
                &settings.into_settings(),
            ),
            TopicsCommand::Delete { dir, name } => cli::topics::delete(&dir, &name),
        },
        Command::Groups(g) => match g {
            GroupsCommand::List { dir } => cli::groups::list(&dir),
            GroupsCommand::Describe { dir, group } => cli::groups::describe(&dir, group.as_deref()),
        },
    }
}
