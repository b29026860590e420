//! `stratalog`: produce to, consume from, verify and dump stratalog logs.
//!
//! This file only parses the command line, sets up logging and turns results into an exit
//! code; the commands live in `src/cli/` (part of the binary, not of the library).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
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
    /// Check logs without changing them (no log is opened, so no recovery runs).
    ///
    /// `--dir DIR` checks every log under DIR (each directory at any depth holding a
    /// `log.meta`); `--dir DIR --log NAME` only DIR/NAME. Checks every batch of every segment
    /// (header, CRC, records, offsets that follow on) and every index entry. Prints a summary
    /// per log, each note (what a crash leaves and the next open repairs, such as a torn tail
    /// after the last fsync), each quarantine file (bytes cut earlier by recovery or
    /// truncation: offset range, bytes, reason) and each problem. Exits 0 only if no log has
    /// a problem (and at least one log was found).
    Verify(VerifyArgs),
    /// Print the batches of a segment file, or of every segment of a log directory.
    ///
    /// One line per batch: byte position, base and last offset, record count, leader epoch,
    /// first and max timestamp, size, compression and `crc=ok` or `crc=bad`. A batch with a bad
    /// CRC but a sane header is skipped by its length; an invalid header or a batch running
    /// past the end of the file stops the dump of that file. Exits 1 if anything was bad.
    Dump(DumpArgs),
}

/// Where the log is.
#[derive(Debug, Args)]
struct LogArgs {
    /// Directory holding the logs.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Name of the log: its files are in DIR/NAME.
    #[arg(long = "log", value_name = "NAME", default_value = "default")]
    name: String,
}

#[derive(Debug, Args)]
struct ProduceArgs {
    #[command(flatten)]
    log: LogArgs,
    /// When appends are made durable and acknowledged: `always` (fsync before each
    /// acknowledgement, concurrent batches share an fsync), `never` (only on segment roll and
    /// close), `<N>ms` (every N milliseconds) or `<N>b` (every N bytes written).
    #[arg(long, value_name = "POLICY", default_value = "always", value_parser = parse_fsync)]
    fsync: FsyncPolicy,
    /// Largest number of records per batch.
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    batch: u32,
    /// Compression of the batches.
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    compression: CompressionArg,
    /// Segment size at which the log rolls to a new segment (default 1 GiB). Applies only
    /// when the log is created: an existing log keeps its own.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64)
          .range(LogConfig::MIN_SEGMENT_BYTES..=LogConfig::MAX_SEGMENT_BYTES))]
    segment_bytes: Option<u64>,
    /// Print `acked <offset>` (and flush) each time every record up to and including
    /// <offset> has been acknowledged under the fsync policy (durable with `--fsync always`).
    #[arg(long)]
    print_acks: bool,
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

#[derive(Debug, Args)]
struct ConsumeArgs {
    #[command(flatten)]
    log: LogArgs,
    /// First offset to print (default: the log's start). Must be within the log: from its
    /// start up to its end (at the end, nothing is printed).
    #[arg(long, value_name = "OFFSET")]
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

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Usage errors exit 2, `--help` and `--version` exit 0.
        Err(e) => e.exit(),
    };
    init_tracing();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
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
            dir: cli::log_dir(&a.log.dir, &a.log.name)?,
            fsync: a.fsync,
            batch: a.batch as usize,
            compression: match a.compression {
                CompressionArg::None => Compression::None,
                CompressionArg::Lz4 => Compression::Lz4,
            },
            segment_bytes: a.segment_bytes,
            print_acks: a.print_acks,
            generate: a.count.map(|count| (count, a.size)),
            retention_bytes: a.retention_bytes,
            truncate_every: a.truncate_every,
        }),
        Command::Consume(a) => cli::consume::run(cli::consume::Options {
            dir: cli::log_dir(&a.log.dir, &a.log.name)?,
            from: a.from,
            max: a.max,
            json: a.format == Format::Json,
        }),
        Command::Verify(a) => match a.name {
            Some(name) => cli::verify::run(&cli::log_dir(&a.dir, &name)?),
            None => cli::verify::run_all(&a.dir),
        },
        Command::Dump(a) => cli::dump::run(&a.path),
    }
}
