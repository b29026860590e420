//! `stratalog`: produce to, consume from, verify and dump stratalog logs.
//!
//! This file only parses the command line, sets up logging and turns results into an exit
//! code; the commands live in `src/cli/` (part of the binary, not of the library).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use stratalog::store::{PartitionerKind, ResetTo};

mod cli;

use cli::{CliError, parse_partitioner};

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
    ///
    /// A line longer than the largest record a batch can hold (a little under 64 MiB) is
    /// refused as soon as that much of it was read: produce says so and exits 1, after
    /// appending the lines before it.
    Produce(cli::produce::Options),
    /// Print the records of a log from an offset to its end (or, with `--follow`, on).
    ///
    /// `--format text` prints each value followed by a newline, as raw bytes.
    ///
    /// `--format json` prints one JSON object per line:
    /// `{"offset":N,"timestamp":MS,"key":B,"value":B,"headers":[{"name":B,"value":B},...]}`
    /// (with `--topic`, `"partition":P` first). Every byte field B is the same object:
    /// `{"hex":"<lowercase hex of the bytes>","utf8":"<the bytes as text>"}`, `utf8` being
    /// `null` when the bytes are not valid UTF-8; a record without a key has `"key":null`.
    /// So `jq -r .value.utf8` prints text values and `.value.hex` any value.
    ///
    /// Without `--group` the log (or store) is opened read-only: no lock is taken and nothing
    /// is written, so it reads beside a running producer, and `--follow` tails what that
    /// producer appends; after a crash it serves the valid prefix and repairs nothing (that is
    /// `stratalog recover`'s job, or the next writer's). With `--group` the store is opened
    /// writable, to commit, and recovered.
    /// Exits 0 at the end of the log (with `--follow`, on SIGINT or SIGTERM). On corrupt data
    /// nothing of the bad batch is printed, the file and byte position are named on stderr and
    /// the exit status is 1.
    Consume(cli::consume::Options),
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
    /// Open logs writable and close them cleanly: runs recovery after a crash (a torn tail is
    /// cut and kept in quarantine, damaged indexes are rebuilt, an interrupted retention is
    /// finished) and prints what it did.
    ///
    /// `--dir DIR` recovers every log under DIR; `--dir DIR --log NAME` only DIR/NAME. The
    /// other commands that read (`consume`, `verify`, `dump`, `topics list|describe`, `groups
    /// list|describe`) never change a file; the next writer (`produce`, a broker) recovers as
    /// this does. Fails if another process holds a log.
    Recover(VerifyArgs),
    /// Run a node: serve the store in DIR over TCP, as the leader of every partition or, with
    /// `--leader ADDR`, as a follower that copies the leader's batches byte for byte.
    ///
    /// Prints `listening on ADDR as ID (ROLE)` and serves until SIGINT or SIGTERM. Clients use
    /// `produce --node ADDR --log TOPIC/PARTITION --acks LEVEL` and `consume --node ADDR`.
    /// Replication is being built: consumer groups and offsets over the network, produce by
    /// key through a node, mirrors and etcd are not there yet (docs/REPLICATION.md).
    Serve(cli::node::ServeArgs),
    /// Mirror a source cluster into DIR (another data centre): every partition matching
    /// `--topics` and the consumer offsets, at the source's offsets and epochs, byte for byte,
    /// never counting toward the source's acknowledgements. `status` shows its lag; `promote`
    /// makes it lead.
    Mirror(cli::node::MirrorArgs),
    /// Make the node at `--node ADDR` the leader of a new epoch (operator failover).
    Promote(cli::node::NodeArgs),
    /// Show a node's role, epoch and leader, and per partition its offsets, high watermark
    /// and (on a leader) each follower's lag and in-sync state; `--json` for JSON.
    Status(cli::node::NodeArgs),
    /// Print the batches of a segment file, or of every segment of a log directory.
    ///
    /// One line per batch: byte position, base and last offset, record count, leader epoch,
    /// first and max timestamp, size, compression and `crc=ok` or `crc=bad`. A batch with a bad
    /// CRC but a sane header is skipped by its length; an invalid header or a batch running
    /// past the end of the file stops the dump of that file. Exits 1 if anything was bad.
    Dump(DumpArgs),
    /// Take a snapshot of the store in `--dir DIR` into the new directory `--out SNAP`: sealed
    /// segments hard-linked (copied across file systems), active segments copied up to the
    /// snapshot point, the registry, the consumer offsets and a `MANIFEST` with the CRC-32C
    /// of every file (docs/DR.md). The command opens the store itself: a store open in
    /// another process (a running node) is refused. Written under a temporary name and
    /// renamed at the end. With `--node ADDR[,ADDR...]` instead of `--dir`: a snapshot
    /// streamed from the leader of a running cluster, cut at every log's high watermark.
    Snapshot(SnapshotArgs),
    /// Restore the snapshot `--snapshot SNAP` into `--dir DIR` (new or empty): every file is
    /// checked against the `MANIFEST` before anything appears at DIR; a damaged, truncated or
    /// mismatched snapshot is refused with an error naming the file.
    Restore(RestoreArgs),
    /// Measure the engine on this machine next to the machine's own limits.
    ///
    /// In one run: a memory copy, the disk's fsync latency, a plain file written with `write` +
    /// `sync_data`; `produce --count` (100 B and 1 KiB records, its default batches, fsync
    /// never) against a plain `write` of the bytes the log writes and of the values alone (by
    /// wall-clock and CPU time); then durable batched appends (128 B and 1 KiB records,
    /// 1 MiB per fsync), durable 1 KiB appends from 1, 4, 16 and 64 threads (appends/s and
    /// p50/p99/p99.9 latency, and 64 threads paced at half their peak), a sequential and a
    /// random read, and reopening after a clean close and after a crash. Prints a table of each
    /// figure with its ratio to a baseline measured in the same run, and names the baseline: a
    /// limit of the machine (memory copy, plain file, fsync latency) or a reference that
    /// batching is meant to beat (one fsync per append, where ratios far above 1 are the
    /// point). Writes a plot of throughput and latency against writers as SVG and, with
    /// `--json`, the figures. Scratch files go in a temporary directory (under `--dir`, default
    /// the system's temporary directory, which must be on the disk to measure) that is removed
    /// at the end, or on SIGINT/SIGTERM, after which bench exits 130.
    Bench(cli::bench::Options),
    /// The whole engine in one command: three nodes and a mirror on 127.0.0.1, keyed
    /// producers at `acks=all` and a consumer group, the leader killed and failed over, a
    /// snapshot restored, then checks that nothing acknowledged was lost.
    ///
    /// Runs real `serve`, `mirror`, `promote`, `status`, `consume`, `snapshot` and `restore`
    /// processes of this executable in a temporary directory (under `$TMPDIR`, removed at
    /// the end; `--keep DIR` keeps the data). Fails over through a local etcd it starts (etcd
    /// elects the next leader, nobody promotes) when this build has the `etcd` feature and an
    /// `etcd` binary is on PATH, by `promote` otherwise, and says which (`--failover`). Shows each phase with live throughput and lag,
    /// then a summary (records, throughput, acknowledgement latency p50/p99/p99.9, failover
    /// time from the kill to the first acknowledged write, records checked, records lost)
    /// and writes a plot of throughput and latency over time (`--svg`, default
    /// `stratalog-demo.svg`). Checks: every acknowledged record is in the final log and was
    /// consumed at least once, none is corrupt, the replicas and the mirror are
    /// byte-identical up to the high watermark, the restored copy equals the source up to the
    /// snapshot. Exits 1 if any check fails; on SIGINT or SIGTERM stops every node, removes
    /// the scratch directory and exits 130.
    Demo(cli::demo::Options),
    /// Create, list, describe, alter and delete the topics of a store.
    ///
    /// A store is a directory (`--dir DIR`) holding topics, each with a number of partitions
    /// (each partition one log, in `DIR/TOPIC/PARTITION`), their settings and partitioner
    /// versions (in `DIR/stratalog.store`), and the consumer offsets of consumer groups.
    /// `produce` and `consume` reach a partition with `--log TOPIC/PARTITION`, a whole topic
    /// with `--topic TOPIC`.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// List, describe, delete and reset consumer groups: their committed offsets and lag.
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
        settings: cli::topics::Settings,
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
        settings: cli::topics::Settings,
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
    /// Remove every committed offset of a group.
    Delete {
        /// The store's directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The group.
        group: String,
    },
    /// Move a group's committed position on a topic (every partition, or one).
    Reset {
        /// The store's directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The group.
        group: String,
        /// The topic.
        #[arg(long, value_name = "TOPIC")]
        topic: String,
        /// Only this partition (default: every partition of the topic).
        #[arg(long, value_name = "P")]
        partition: Option<u32>,
        /// The new position: `earliest`, `latest`, an offset, or `time:MS` (the first record at
        /// or after MS milliseconds since the Unix epoch, found with the time index).
        #[arg(long, value_name = "POSITION", value_parser = parse_reset_to)]
        to: ResetTo,
    },
}

fn parse_reset_to(s: &str) -> Result<ResetTo, String> {
    s.parse()
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// Directory holding the logs. Without `--log`, every log under it is checked: each
    /// directory, at any depth, that holds a `log.meta` (DIR itself included).
    #[arg(long, value_name = "DIR", required_unless_present = "snapshot")]
    dir: Option<PathBuf>,
    /// Check only the log DIR/NAME.
    #[arg(long = "log", value_name = "NAME")]
    name: Option<String>,
    /// (verify only) Check the snapshot SNAP instead: its `MANIFEST`, that exactly its files
    /// are present, and every file's length and CRC-32C.
    #[arg(long, value_name = "SNAP", conflicts_with_all = ["dir", "name"])]
    snapshot: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct SnapshotArgs {
    /// The store to snapshot (offline).
    #[arg(
        short,
        long,
        value_name = "DIR",
        env = "STRATALOG_DIR",
        required_unless_present = "node",
        conflicts_with = "node"
    )]
    dir: Option<PathBuf>,
    /// Take it from a running node instead: the leader (a follower's answer is followed to
    /// it) streams its store cut at every log's high watermark.
    #[arg(long, value_name = "ADDR[,ADDR...]", value_delimiter = ',')]
    node: Vec<String>,
    /// The snapshot directory to create (must not exist).
    #[arg(long, value_name = "SNAP")]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct RestoreArgs {
    /// The snapshot to restore.
    #[arg(long, value_name = "SNAP")]
    snapshot: PathBuf,
    /// Where to restore it (must not exist, or be empty).
    #[arg(short, long, value_name = "DIR")]
    dir: PathBuf,
}

#[derive(Debug, Args)]
struct DumpArgs {
    /// A segment file (`<base offset>.log`) or a log directory (every `.log` file, in order).
    #[arg(value_name = "PATH")]
    path: PathBuf,
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
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: not in files or pipes.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Produce(o) => cli::produce::run(o),
        Command::Consume(o) => cli::consume::run(o),
        Command::Verify(a) => match (a.snapshot, a.dir, a.name) {
            (Some(snap), _, _) => cli::snapshot::verify(&snap),
            (None, Some(dir), Some(name)) => {
                cli::verify::run(&cli::Target::parse(&dir, &name)?.log_dir())
            }
            (None, Some(dir), None) => cli::verify::run_all(&dir),
            (None, None, _) => Err("give --dir DIR or --snapshot SNAP".into()),
        },
        Command::Recover(a) => match (a.snapshot, a.dir, a.name) {
            (Some(_), _, _) => Err("recover takes no --snapshot: use restore".into()),
            (None, Some(dir), Some(name)) => {
                cli::recover::run(&cli::Target::parse(&dir, &name)?.log_dir())
            }
            (None, Some(dir), None) => cli::recover::run_all(&dir),
            (None, None, _) => Err("give --dir DIR".into()),
        },
        Command::Snapshot(a) => match a.dir {
            Some(dir) if a.node.is_empty() => cli::snapshot::create(&dir, &a.out),
            _ => cli::snapshot::create_from_node(&a.node, &a.out),
        },
        Command::Restore(a) => cli::snapshot::restore(&a.snapshot, &a.dir),
        Command::Serve(a) => cli::node::serve(a),
        Command::Mirror(a) => cli::node::mirror(a),
        Command::Promote(a) => cli::node::promote(a),
        Command::Status(a) => cli::node::status(a),
        Command::Dump(a) => cli::dump::run(&a.path),
        Command::Bench(o) => cli::bench::run(o),
        Command::Demo(o) => cli::demo::run(o),
        Command::Topics(t) => match t {
            TopicsCommand::Create {
                dir,
                name,
                partitions,
                partitioner,
                settings,
            } => cli::topics::create(&dir, &name, partitions, partitioner, &settings),
            TopicsCommand::List { dir } => cli::topics::list(&dir),
            TopicsCommand::Describe { dir, name } => cli::topics::describe(&dir, &name),
            TopicsCommand::Alter {
                dir,
                name,
                partitions,
                partitioner,
                settings,
            } => cli::topics::alter(&dir, &name, partitions, partitioner, &settings),
            TopicsCommand::Delete { dir, name } => cli::topics::delete(&dir, &name),
        },
        Command::Groups(g) => match g {
            GroupsCommand::List { dir } => cli::groups::list(&dir),
            GroupsCommand::Describe { dir, group } => cli::groups::describe(&dir, group.as_deref()),
            GroupsCommand::Delete { dir, group } => cli::groups::delete(&dir, &group),
            GroupsCommand::Reset {
                dir,
                group,
                topic,
                partition,
                to,
            } => cli::groups::reset(&dir, &group, &topic, partition, to),
        },
    }
}
