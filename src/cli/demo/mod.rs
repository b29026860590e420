//! `stratalog demo`: the whole engine in one command (issue 14).
//!
//! In a scratch directory (under `$TMPDIR`, removed at the end; `--keep DIR` keeps it) it
//! runs real processes of this executable: three `serve` nodes on 127.0.0.1 and a `mirror`;
//! a topic of several partitions with the consistent-hash ring partitioner; producers
//! (threads of the demo, through the protocol, so that each acknowledgement is timed) writing
//! keyed records at `acks=all` while a consumer group (`consume --node --group --follow`)
//! consumes and commits. Partway through it SIGKILLs a leader and fails over:
//! - through a local `etcd` the demo starts when this build has the `etcd` feature and an
//!   `etcd` binary is on `PATH` (`serve --coordinator`, etcd's default election: a leader per
//!   partition and one for the consumer offsets log, spread over the nodes by preferred
//!   leaders). Once every partition is led by its preferred leader and every node is in sync,
//!   it kills the node leading the most partitions (ties: the one leading the consumer
//!   offsets); etcd elects a new leader for each of its partitions once its lease lapses,
//!   nobody promotes. Restarted with no `--leader`, the node catches up and is handed its
//!   partitions back. The figures and checks take each partition's leader from etcd.
//! - by operator `promote` otherwise (`--failover` chooses): one node leads every
//!   partition; it is killed, an in-sync follower promoted, and it comes back as a follower.
//!
//! It then takes a `snapshot --node` streamed from the running cluster and `restore`s it into
//! a fourth directory. At the end it stops every node and checks, reading the stores with the
//! library: every acknowledged record is in the final log and was consumed at least once (by
//! key and value), none is corrupt, the replicas and the mirror are byte-identical to each
//! partition's leader up to the high watermark, the restored copy equals the source up to the
//! snapshot, and (etcd path) the leadership was spread, failed over and handed back. It prints
//! a summary table, writes an SVG plot (and `--json` figures) and exits 1 if any check failed.

mod check;
mod cluster;
mod etcd;
mod leaders;
mod load;
mod report;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use stratalog::replication::Message;
use stratalog::replication::transport::Client;
use stratalog::store::{Partitioner, PartitionerKind};
use stratalog::{Log, LogOptions};

use super::{CliError, context, outln};
use check::{KeyValue, StoredBatch};
use cluster::{Proc, Server};
use leaders::UnitKey;
use load::Shared;
use report::{Check, Figures};

/// `stratalog demo`: its command line is its options.
#[derive(Debug, Args)]
pub struct Options {
    /// Seconds of production, split over the three stretches of load (before the kill,
    /// between the failover and the snapshot, after it); the whole demo takes about this
    /// plus 15 to 25 s of starting, failing over, draining and checking.
    #[arg(long, value_name = "N", default_value_t = 30.0)]
    pub seconds: f64,
    /// Keep the data (nodes, mirror, snapshot, restored copy, logs) in DIR, which must be
    /// new or empty, instead of a temporary directory removed at the end.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// Also write the figures as JSON to this file (`records_acked`, `records_lost`,
    /// `failover_ms`, latencies, every check; on the etcd path also `killed_node`,
    /// `killed_partitions`, `failover_partition_ms`, `rebalanced_ms`, `leaders_at_end`).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Where to write the plot (default `stratalog-demo.svg` in the current directory).
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Partitions of the demo topic.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub partitions: u32,
    /// Producer threads.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub producers: usize,
    /// How to fail over: `auto` (a local etcd when this build has the `etcd` feature and an
    /// `etcd` binary is on PATH, operator promote otherwise), `etcd` (an error if either is
    /// missing) or `promote`.
    #[arg(long, value_enum, value_name = "PATH", default_value_t = FailoverChoice::Auto)]
    pub failover: FailoverChoice,
    /// The leadership lease on the etcd path, in milliseconds (default 2000): the dead
    /// leader is replaced about one to two lease times after the kill.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1000..=30000))]
    pub lease_ms: Option<u64>,
}

/// `--failover`: which failover path the demo takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailoverChoice {
    /// The etcd path when it is possible here, operator promote otherwise.
    Auto,
    /// A local etcd elects a leader per partition and the next ones after the kill; an error
    /// if this build lacks the `etcd` feature or no `etcd` binary is on PATH.
    Etcd,
    /// The demo runs `stratalog promote`, as an operator would.
    Promote,
}

/// The demo's topic.
const TOPIC: &str = "demo";
/// Its consumer group.
const GROUP: &str = "demo";
/// Nodes of the cluster (the mirror is one more process).
const NODES: usize = 3;
/// Bound of every wait for the cluster (in sync, caught up, drained).
const WAIT: Duration = Duration::from_secs(60);
/// How long a node or consumer gets to stop cleanly after SIGTERM.
const GRACE: Duration = Duration::from_secs(20);
/// The phases, for the `[i/N]` headers.
const PHASES: usize = 8;
/// The etcd path's leadership lease unless `--lease-ms` says otherwise.
const LEASE_MS: u64 = 2000;

/// How the demo fails over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailoverPath {
    /// The demo, as an operator, runs `stratalog promote` on an in-sync follower.
    OperatorPromote,
    /// The nodes run under a local etcd (`serve --coordinator`, no `--leader`, a leader per
    /// partition): once the killed node's lease lapses, etcd elects an in-sync node for each
    /// of its partitions; nobody promotes.
    Etcd,
}

impl FailoverPath {
    /// The path for `choice`, given whether this build has the `etcd` feature and where the
    /// `etcd` binary is, with a note saying which path and why; or why `--failover etcd`
    /// cannot be had here.
    fn choose(
        choice: FailoverChoice,
        built_with_etcd: bool,
        etcd_binary: Option<&Path>,
        lease_ms: u64,
    ) -> Result<(FailoverPath, String), CliError> {
        const PROMOTE: &str = "failing over by operator promote (`stratalog promote`)";
        const NO_FEATURE: &str = "this stratalog was built without the etcd feature: rebuild \
             with `--features etcd` (its etcd client needs `protoc`)";
        const NO_BINARY: &str = "no `etcd` binary on PATH: install etcd (Debian and Ubuntu: \
             `apt-get install etcd-server`)";
        let etcd_note = |binary: &Path| {
            format!(
                "a local etcd ({}) elects a leader per partition (`serve --coordinator`, lease \
                 {lease_ms} ms): the node leading the most partitions is killed and etcd elects \
                 new leaders for them, nobody promotes",
                binary.display()
            )
        };
        match (choice, built_with_etcd, etcd_binary) {
            (FailoverChoice::Promote, _, _) => Ok((
                FailoverPath::OperatorPromote,
                format!("--failover promote: {PROMOTE}"),
            )),
            (FailoverChoice::Auto | FailoverChoice::Etcd, true, Some(binary)) => {
                Ok((FailoverPath::Etcd, etcd_note(binary)))
            }
            (FailoverChoice::Etcd, false, _) => {
                Err(format!("--failover etcd: {NO_FEATURE}; or use --failover promote").into())
            }
            (FailoverChoice::Etcd, true, None) => {
                Err(format!("--failover etcd: {NO_BINARY}; or use --failover promote").into())
            }
            (FailoverChoice::Auto, false, _) => Ok((
                FailoverPath::OperatorPromote,
                format!("{NO_FEATURE} for the etcd path; {PROMOTE}"),
            )),
            (FailoverChoice::Auto, true, None) => Ok((
                FailoverPath::OperatorPromote,
                format!("{NO_BINARY} for the etcd path; {PROMOTE}"),
            )),
        }
    }

    /// Its name in the summary and the JSON.
    fn name(self) -> &'static str {
        match self {
            FailoverPath::OperatorPromote => "operator-promote",
            FailoverPath::Etcd => "etcd",
        }
    }
}

/// The operator's failover: makes the node at `new_leader` lead (`stratalog promote`).
/// Returns what the command said.
fn promote(exe: &Path, new_leader: &str) -> Result<String, CliError> {
    let out = cluster::run(
        exe,
        &["promote", "--node", new_leader],
        Duration::from_secs(30),
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The scratch directory and whether to keep it, for the signal handler.
static SCRATCH: OnceLock<(PathBuf, bool)> = OnceLock::new();

/// On SIGINT or SIGTERM: kills every node, removes the scratch directory (unless `--keep`)
/// and exits 130.
fn interrupted(signal: i32) -> ! {
    let name = if signal == libc::SIGTERM {
        "SIGTERM"
    } else {
        "SIGINT"
    };
    cluster::kill_all_children();
    match SCRATCH.get() {
        Some((path, false)) => match fs::remove_dir_all(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => eprintln!(
                "\nerror: stratalog demo: interrupted by {name}; every node was stopped but the \
                 scratch directory {} could not be removed: {e}; remove it by hand",
                path.display()
            ),
            _ => eprintln!(
                "\nstratalog demo: interrupted by {name}; stopped every node and removed {}",
                path.display()
            ),
        },
        Some((path, true)) => eprintln!(
            "\nstratalog demo: interrupted by {name}; stopped every node; the data is kept in {}",
            path.display()
        ),
        None => eprintln!("\nstratalog demo: interrupted by {name}"),
    }
    std::process::exit(130);
}

/// Runs `demo`.
pub fn run(o: Options) -> Result<(), CliError> {
    if !(o.seconds.is_finite() && o.seconds >= 1.0 && o.seconds <= 3600.0) {
        return Err(format!(
            "--seconds must be between 1 and 3600 seconds of load, not {}",
            o.seconds
        )
        .into());
    }
    if !(1..=64).contains(&o.partitions) {
        return Err(format!("--partitions must be 1 to 64, not {}", o.partitions).into());
    }
    if !(1..=16).contains(&o.producers) {
        return Err(format!("--producers must be 1 to 16, not {}", o.producers).into());
    }
    let lease_ms = o.lease_ms.unwrap_or(LEASE_MS);
    let etcd_binary = etcd::find_on_path();
    let (path, path_note) = FailoverPath::choose(
        o.failover,
        cfg!(feature = "etcd"),
        etcd_binary.as_deref(),
        lease_ms,
    )?;
    if path != FailoverPath::Etcd && o.lease_ms.is_some() {
        return Err(format!(
            "--lease-ms is the etcd path's lease, and the demo fails over by operator promote \
             here ({path_note})"
        )
        .into());
    }
    let failover = Failover {
        path,
        note: path_note,
        etcd_binary: etcd_binary.filter(|_| path == FailoverPath::Etcd),
        lease_ms,
    };
    // Before any other thread starts (so that they all leave the signals to it), and before
    // the scratch directory exists.
    super::on_interrupt(|signal| interrupted(signal))
        .map_err(context("cannot set up the SIGINT/SIGTERM handler"))?;
    let started = Instant::now();
    let (root, temp) = match &o.keep {
        Some(dir) => {
            fs::create_dir_all(dir).map_err(context(format!("cannot create {}", dir.display())))?;
            let empty = fs::read_dir(dir)
                .map_err(context(format!("cannot list {}", dir.display())))?
                .next()
                .is_none();
            if !empty {
                return Err(format!(
                    "--keep {}: the directory is not empty; give a new or empty one",
                    dir.display()
                )
                .into());
            }
            (dir.clone(), None)
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("stratalog-demo-")
                .tempdir()
                .map_err(context(format!(
                    "cannot make a scratch directory in {}",
                    std::env::temp_dir().display()
                )))?;
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    let _ = SCRATCH.set((root.clone(), o.keep.is_some()));
    let exe = std::env::current_exe().map_err(context("cannot find this executable"))?;
    let outcome = Demo::new(&o, failover, exe, root.clone()).and_then(|mut demo| {
        let run = demo.run_phases();
        // Whatever happened, no process of the demo outlives it.
        demo.stop_everything();
        run.map(|()| demo)
    });
    let mut demo = outcome?;
    demo.figures.elapsed = started.elapsed().as_secs_f64();
    let f = &demo.figures;
    outln!("\nsummary");
    print!("{}", f.table());
    if let Some(path) = &o.json {
        let text = serde_json::to_string_pretty(&f.to_json()).expect("JSON of plain values");
        fs::write(path, text + "\n")
            .map_err(context(format!("cannot write {}", path.display())))?;
        outln!("figures written to {}", path.display());
    }
    let svg = o
        .svg
        .clone()
        .unwrap_or_else(|| PathBuf::from("stratalog-demo.svg"));
    let acks = demo
        .shared
        .acks
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    report::write_svg(&svg, &acks, f)
        .map_err(context(format!("cannot write the plot {}", svg.display())))?;
    drop(acks);
    outln!(
        "plot of throughput and latency over time (kill and failover marked) written to {}",
        svg.display()
    );
    match temp {
        Some(temp) => temp
            .close()
            .map_err(context("cannot remove the scratch directory"))?,
        None => outln!("the data is kept in {}", root.display()),
    }
    let failed = f.checks.iter().filter(|c| !c.passed).count();
    if failed > 0 {
        return Err(format!("{failed} of {} checks failed (see above)", f.checks.len()).into());
    }
    outln!(
        "all {} checks passed: nothing acknowledged was lost",
        f.checks.len()
    );
    Ok(())
}

/// The failover path chosen, and what it needs.
struct Failover {
    path: FailoverPath,
    /// Which path and why, for the first phase's header.
    note: String,
    /// The `etcd` executable, on the etcd path.
    etcd_binary: Option<PathBuf>,
    /// The leadership lease on the etcd path.
    lease_ms: u64,
}

/// A consumer process of the group and the thread reading its lines.
struct Consumer {
    proc: Proc,
    reader: JoinHandle<()>,
}

/// The demo's state.
struct Demo {
    exe: PathBuf,
    root: PathBuf,
    seconds: f64,
    partitions: u32,
    producers: usize,
    path: FailoverPath,
    path_note: String,
    /// The `etcd` executable (etcd path).
    etcd_binary: Option<PathBuf>,
    /// The leadership lease (etcd path).
    lease_ms: u64,
    /// The demo's etcd, while it runs (etcd path).
    etcd: Option<etcd::Etcd>,
    terminal: bool,
    phase: usize,
    /// Node addresses, then the mirror's, then (etcd path) etcd's client and peer ones.
    addrs: Vec<String>,
    nodes: Vec<Option<Server>>,
    mirror: Option<Server>,
    /// The leader on the operator path (of every partition); on the etcd path, the node
    /// killed (once chosen).
    leader: usize,
    /// On the etcd path, each partition's leader (node index) as etcd names it.
    part_leaders: Vec<usize>,
    /// On the etcd path, the consumer offsets unit's leader (it streams the snapshots).
    offsets_leader: Option<usize>,
    /// On the etcd path: each unit's epoch once the leadership first settled, at the kill
    /// and at the end (for the elections counted).
    epochs_start: BTreeMap<UnitKey, u64>,
    epochs_kill: BTreeMap<UnitKey, u64>,
    /// On the etcd path: the units each node led at the kill.
    led_at_kill: Vec<Vec<UnitKey>>,
    /// On the etcd path: what the leadership check found, and whether it held.
    leadership: Vec<String>,
    leadership_ok: bool,
    consumer: Option<Consumer>,
    /// The consumer runs with `--follow` (and is restarted if it exits).
    consumer_follows: bool,
    producer_threads: Vec<JoinHandle<load::ProducerResult>>,
    shared: Arc<Shared>,
    /// Mirror lag in records at the last look, and when that was.
    mirror_lag: Option<u64>,
    mirror_looked: Option<Instant>,
    /// The snapshot's end offset per partition of the demo topic.
    snapshot_ends: Vec<(u32, u64)>,
    /// Every record acknowledged, once the producers stopped.
    acked: Vec<KeyValue>,
    /// Why producers stopped early.
    producer_errors: Vec<String>,
    /// The final high watermark per partition.
    hws: Vec<u64>,
    figures: Figures,
}

impl Demo {
    fn new(o: &Options, f: Failover, exe: PathBuf, root: PathBuf) -> Result<Demo, CliError> {
        let path = f.path;
        let ports = NODES + 1 + if path == FailoverPath::Etcd { 2 } else { 0 };
        fs::create_dir_all(root.join("logs")).map_err(context(format!(
            "cannot create {}",
            root.join("logs").display()
        )))?;
        Ok(Demo {
            exe,
            root,
            seconds: o.seconds,
            partitions: o.partitions,
            producers: o.producers,
            path,
            path_note: f.note,
            etcd_binary: f.etcd_binary,
            lease_ms: f.lease_ms,
            etcd: None,
            terminal: std::io::stderr().is_terminal(),
            phase: 0,
            addrs: cluster::free_addrs(ports)?,
            nodes: (0..NODES).map(|_| None).collect(),
            mirror: None,
            leader: 0,
            part_leaders: Vec::new(),
            offsets_leader: None,
            epochs_start: BTreeMap::new(),
            epochs_kill: BTreeMap::new(),
            led_at_kill: Vec::new(),
            leadership: Vec::new(),
            leadership_ok: true,
            consumer: None,
            consumer_follows: false,
            producer_threads: Vec::new(),
            shared: Arc::new(Shared::new()),
            mirror_lag: None,
            mirror_looked: None,
            snapshot_ends: Vec::new(),
            acked: Vec::new(),
            producer_errors: Vec::new(),
            hws: Vec::new(),
            figures: Figures {
                path: path.name().to_string(),
                lease_ms: (path == FailoverPath::Etcd).then_some(f.lease_ms),
                partitions: o.partitions,
                producers: o.producers,
                seconds: o.seconds,
                ..Figures::default()
            },
        })
    }

    fn node_dir(&self, i: usize) -> PathBuf {
        self.root.join(format!("n{i}"))
    }

    fn mirror_addr(&self) -> &str {
        &self.addrs[NODES]
    }

    fn node_list(&self) -> String {
        self.addrs[..NODES].join(",")
    }

    /// Prints the phase's header and returns its progress bar: a bar over `len` steps, or a
    /// spinner; drawn on stderr only when it is a terminal.
    fn phase(&mut self, name: &str, what: &str, len: Option<u64>) -> Result<ProgressBar, CliError> {
        self.phase += 1;
        outln!("[{}/{PHASES}] {name}: {what}", self.phase);
        let target = if self.terminal {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(len, target);
        let template = if len.is_some() {
            "{spinner} {prefix:<8} [{bar:16}] {elapsed:>3} {msg}"
        } else {
            "{spinner} {prefix:<8} {elapsed:>3} {msg}"
        };
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(name.to_string());
        if self.terminal {
            bar.enable_steady_tick(Duration::from_millis(120));
        }
        Ok(bar)
    }

    fn run_phases(&mut self) -> Result<(), CliError> {
        self.start_cluster()?;
        self.start_load()?;
        self.load_for("load", self.seconds * 0.4)?;
        self.fail_over()?;
        self.load_for("load", self.seconds * 0.3)?;
        self.snapshot()?;
        self.load_for("load", self.seconds * 0.3)?;
        self.drain()?;
        self.check()
    }

    // --- processes

    /// `serve` for node `i`: following `leader`, or with no `--leader` (on the etcd path,
    /// always: etcd elects a leader per partition, the default election, and the node
    /// follows whoever etcd names for each of the others).
    fn serve_args(&self, i: usize, leader: Option<usize>) -> Result<Vec<String>, CliError> {
        let mut args: Vec<String> = [
            "serve",
            "--dir",
            &self.node_dir(i).to_string_lossy(),
            "--node-id",
            &format!("n{i}"),
            "--listen",
            &self.addrs[i],
            "--replicas",
            "3",
            "--min-in-sync",
            "2",
            "--replica-lag-timeout",
            "1500",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        match self.path {
            FailoverPath::OperatorPromote => {
                args.extend(["--peers".to_string(), self.node_list()]);
                if let Some(l) = leader {
                    args.extend(["--leader".to_string(), self.addrs[l].clone()]);
                }
            }
            FailoverPath::Etcd => {
                let url = self.etcd_url().ok_or("etcd is not running")?;
                args.extend([
                    "--coordinator".to_string(),
                    url,
                    "--cluster".to_string(),
                    etcd::CLUSTER.to_string(),
                    "--lease-ms".to_string(),
                    self.lease_ms.to_string(),
                ]);
            }
        }
        Ok(args)
    }

    /// `etcd://ADDR` of the demo's etcd, while it runs.
    fn etcd_url(&self) -> Option<String> {
        self.etcd.as_ref().map(etcd::Etcd::url)
    }

    /// Starts the demo's etcd (etcd path), its data in the scratch directory.
    fn start_etcd(&mut self) -> Result<(), CliError> {
        let binary = self
            .etcd_binary
            .clone()
            .ok_or("the etcd path without an etcd binary")?;
        let (client, peer) = (&self.addrs[NODES + 1], &self.addrs[NODES + 2]);
        self.etcd = Some(etcd::Etcd::start(
            &binary,
            &self.root.join("etcd"),
            client,
            peer,
            &self.root.join("logs").join("etcd.log"),
        )?);
        Ok(())
    }

    /// etcd's view of the cluster (`status --coordinator`, asked through a running node): who
    /// leads, its lease, the epoch, the published in-sync set.
    fn etcd_view(&self) -> Option<Value> {
        let url = self.etcd_url()?;
        let i = (0..NODES).find(|&i| self.nodes[i].is_some())?;
        let out = cluster::run(
            &self.exe,
            &[
                "status",
                "--node",
                &self.addrs[i],
                "--json",
                "--coordinator",
                &url,
                "--cluster",
                etcd::CLUSTER,
            ],
            Duration::from_secs(15),
        )
        .ok()?;
        let s: Value = serde_json::from_slice(&out.stdout).ok()?;
        Some(s["coordinator"].clone())
    }

    /// etcd's view of the leadership units (etcd path).
    fn view(&self) -> Option<leaders::View> {
        leaders::View::parse(&self.etcd_view()?)
    }

    /// The node leading partition `p` of the demo topic: etcd's word on the etcd path (as
    /// last read, see [`Demo::refresh_leaders`]), the one leader otherwise.
    fn leader_of(&self, p: u32) -> usize {
        match self.path {
            FailoverPath::Etcd => self.part_leaders.get(p as usize).copied().unwrap_or(0),
            FailoverPath::OperatorPromote => self.leader,
        }
    }

    /// `the leader n0`, or on the etcd path `each partition's leader (demo/0 n0, ...)`.
    fn leaders_named(&self) -> String {
        match self.path {
            FailoverPath::OperatorPromote => format!("the leader n{}", self.leader),
            FailoverPath::Etcd => {
                let each: Vec<String> = (0..self.partitions)
                    .map(|p| format!("{TOPIC}/{p} n{}", self.leader_of(p)))
                    .collect();
                format!("each partition's leader ({})", each.join(", "))
            }
        }
    }

    /// On the etcd path, reads each partition's leader from etcd (it may elect another when
    /// a lease lapses under load, or hand a partition back to its preferred leader); false if
    /// etcd does not answer or names no leader for some partition now.
    fn refresh_leaders(&mut self) -> bool {
        if self.path != FailoverPath::Etcd {
            return true;
        }
        let Some(v) = self.view() else { return false };
        let Some(ls) = v.leaders(TOPIC, self.partitions) else {
            return false;
        };
        self.part_leaders = ls;
        self.offsets_leader = v.offsets_leader().or(self.offsets_leader);
        true
    }

    /// On the etcd path, once every node is up and each unit is led by its preferred leader
    /// (with `all_in_sync`: and publishes every node in sync), and each partition's leader
    /// says it leads it: etcd's view. Takes the leaders.
    fn settled(&mut self, all_in_sync: bool) -> Option<leaders::View> {
        let v = self.view()?;
        if !v.settled(TOPIC, self.partitions, NODES, all_in_sync) {
            return None;
        }
        let ls = v.leaders(TOPIC, self.partitions)?;
        for (p, &l) in ls.iter().enumerate() {
            let (_, ps) = self.partitions_of(&self.addrs[l])?;
            if ps[p]["role"] != "leader" {
                return None;
            }
        }
        self.part_leaders = ls;
        self.offsets_leader = v.offsets_leader();
        Some(v)
    }

    /// `n0 demo/0 demo/3, n1 demo/1, ...`: who leads what in `v`.
    fn spread(&self, v: &leaders::View) -> String {
        (0..NODES)
            .map(|n| {
                let led: Vec<String> = v.led_by(n).iter().map(leaders::name).collect();
                if led.is_empty() {
                    format!("n{n} nothing")
                } else {
                    format!("n{n} {}", led.join(" "))
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn start_node(&mut self, i: usize, leader: Option<usize>) -> Result<(), CliError> {
        let args = self.serve_args(i, leader)?;
        let stderr = self.root.join("logs").join(format!("n{i}.stderr"));
        self.nodes[i] = Some(cluster::start_server(
            &self.exe,
            &args,
            &format!("node n{i}"),
            &stderr,
        )?);
        Ok(())
    }

    fn start_consumer(&mut self, follow: bool) -> Result<(), CliError> {
        let nodes = self.node_list();
        let mut args = vec![
            "consume",
            "--node",
            &nodes,
            "--topic",
            TOPIC,
            "--group",
            GROUP,
            "--format",
            "json",
            "--commit-every",
            "200",
        ];
        if follow {
            args.push("--follow");
        }
        let stderr_path = self.root.join("logs").join("consumer.stderr");
        let stderr = fs::File::options()
            .create(true)
            .append(true)
            .open(&stderr_path)
            .map_err(context(format!("cannot create {}", stderr_path.display())))?;
        let mut cmd = cluster::command(&self.exe, &args);
        cmd.stdout(std::process::Stdio::piped()).stderr(stderr);
        let mut proc = Proc::spawn(&mut cmd, "the consumer")?;
        let stdout = proc
            .child()
            .stdout
            .take()
            .ok_or("no stdout of the consumer")?;
        let reader = load::read_consumer(stdout, self.shared.clone());
        self.consumer = Some(Consumer { proc, reader });
        self.consumer_follows = follow;
        Ok(())
    }

    /// Restarts the `--follow` consumer if it exited (a failover it did not ride out): the
    /// group resumes from its commits.
    fn keep_consumer_alive(&mut self) -> Result<(), CliError> {
        let exited = match self.consumer.as_mut() {
            Some(c) if self.consumer_follows => c.proc.exited().is_some(),
            _ => false,
        };
        if exited {
            if let Some(c) = self.consumer.take() {
                let _ = c.reader.join();
            }
            self.figures.consumer_restarts += 1;
            self.start_consumer(true)?;
        }
        Ok(())
    }

    /// What the partitions of the demo topic look like on the node at `addr`.
    fn partitions_of(&self, addr: &str) -> Option<(Value, Vec<Value>)> {
        let s = cluster::status(&self.exe, addr)?;
        let mut ps: Vec<Value> = s["partitions"]
            .as_array()?
            .iter()
            .filter(|p| p["topic"] == TOPIC)
            .cloned()
            .collect();
        ps.sort_by_key(|p| p["partition"].as_u64());
        (ps.len() == self.partitions as usize).then_some((s, ps))
    }

    /// The status of each partition of the demo topic on its leader (etcd's on the etcd
    /// path), if each one's leader says it leads it.
    fn on_leaders(&mut self) -> Option<Vec<Value>> {
        if !self.refresh_leaders() {
            return None;
        }
        let mut seen: HashMap<usize, Vec<Value>> = HashMap::new();
        let mut out = Vec::new();
        for p in 0..self.partitions {
            let l = self.leader_of(p);
            let ps = match seen.entry(l) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(self.partitions_of(&self.addrs[l])?.1)
                }
            };
            let part = ps[p as usize].clone();
            if part["role"] != "leader" {
                return None;
            }
            out.push(part);
        }
        Some(out)
    }

    /// Each partition's high watermark on its leader if both followers are in sync on every
    /// partition (and, with `caught_up`, at the leader's log end, which is then the high
    /// watermark).
    fn in_sync(&mut self, caught_up: bool) -> Option<Vec<u64>> {
        let ps = self.on_leaders()?;
        let mut hws = Vec::new();
        for p in &ps {
            let good = p["followers"]
                .as_array()?
                .iter()
                .filter(|f| f["in_sync"] == true && (!caught_up || f["lag"] == 0))
                .count();
            if good != NODES - 1 || (caught_up && p["log_end"] != p["high_watermark"]) {
                return None;
            }
            hws.push(p["high_watermark"].as_u64()?);
        }
        Some(hws)
    }

    /// Each partition's high watermark on its leader.
    fn leader_hws(&mut self) -> Option<Vec<u64>> {
        let ps = self.on_leaders()?;
        ps.iter().map(|p| p["high_watermark"].as_u64()).collect()
    }

    /// True if node `i` follows the leader on every partition, in sync, and its durable end
    /// reached `targets` (the high watermarks when it was restarted): a node that only just
    /// came back may still be listed in sync from before, its log end tells.
    fn rejoined(&mut self, i: usize, targets: &[u64]) -> Option<()> {
        let (s, ps) = self.partitions_of(&self.addrs[self.leader])?;
        if s["role"] != "leader" {
            return None;
        }
        let id = format!("n{i}");
        ps.iter()
            .zip(targets)
            .all(|(p, target)| {
                p["followers"].as_array().is_some_and(|fs| {
                    fs.iter().any(|f| {
                        f["node_id"] == id
                            && f["in_sync"] == true
                            && f["log_end"].as_u64().is_some_and(|e| e >= *target)
                    })
                })
            })
            .then_some(())
    }

    /// Records the mirror lacks of what it last heard the source had (at most once a second).
    fn mirror_lag(&mut self) -> Option<u64> {
        if self
            .mirror_looked
            .is_none_or(|t| t.elapsed() > Duration::from_secs(1))
        {
            self.mirror_looked = Some(Instant::now());
            self.mirror_lag = self
                .partitions_of(&self.addrs[NODES])
                .map(|(_, ps)| ps.iter().filter_map(|p| p["lag"]["records"].as_u64()).sum());
        }
        self.mirror_lag
    }

    /// The live line: throughput, acknowledged, consumer and mirror lag.
    fn live(&mut self) -> String {
        let rate = self.shared.recent_rate(1.0);
        let acked = self.shared.acked.load(Ordering::Relaxed);
        let consumed = self.shared.consumed_count();
        let mirror = self.mirror_lag().map_or("?".to_string(), |l| l.to_string());
        format!(
            "{rate:>5.0} acks/s, {acked} acked, lag: group {} mirror {mirror}",
            acked.saturating_sub(consumed)
        )
    }

    /// Waits for `cond`, showing the live line on `bar`.
    fn wait<T>(
        &mut self,
        bar: &ProgressBar,
        what: &str,
        mut cond: impl FnMut(&mut Demo) -> Option<T>,
    ) -> Result<T, CliError> {
        let started = Instant::now();
        loop {
            if let Some(v) = cond(self) {
                return Ok(v);
            }
            if started.elapsed() > WAIT {
                return Err(
                    format!("timed out after {} s waiting for {what}", WAIT.as_secs()).into(),
                );
            }
            self.keep_consumer_alive()?;
            let line = self.live();
            bar.set_message(format!("{what} · {line}"));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // --- the phases

    fn start_cluster(&mut self) -> Result<(), CliError> {
        let what = format!(
            "3 nodes and a mirror on 127.0.0.1, topic {TOPIC:?} of {} partitions (consistent-hash ring); {}",
            self.partitions, self.path_note
        );
        let bar = self.phase("cluster", &what, None)?;
        for i in 0..NODES {
            let dir = self.node_dir(i);
            cluster::run(
                &self.exe,
                &[
                    "topics",
                    "create",
                    "--dir",
                    &dir.to_string_lossy(),
                    TOPIC,
                    "--partitions",
                    &self.partitions.to_string(),
                    "--partitioner",
                    "ring",
                ],
                Duration::from_secs(30),
            )?;
        }
        match self.path {
            FailoverPath::OperatorPromote => {
                bar.set_message("starting the nodes");
                self.start_node(0, None)?;
                for i in 1..NODES {
                    self.start_node(i, Some(0))?;
                }
            }
            FailoverPath::Etcd => {
                bar.set_message("starting etcd");
                self.start_etcd()?;
                bar.set_message("starting the nodes");
                for i in 0..NODES {
                    self.start_node(i, None)?;
                }
                let v = self.wait(
                    &bar,
                    "etcd to elect each partition's preferred leader",
                    |d| d.settled(false),
                )?;
                self.epochs_start = v.epochs();
            }
        }
        // The mirror starts from the leader (and follows whichever leads later).
        let mut sources = vec![self.addrs[self.leader].clone()];
        sources.extend(
            (0..NODES)
                .filter(|&i| i != self.leader)
                .map(|i| self.addrs[i].clone()),
        );
        let args: Vec<String> = [
            "mirror",
            "--dir",
            &self.root.join("mirror").to_string_lossy(),
            "--source",
            &sources.join(","),
            "--listen",
            self.mirror_addr(),
            "--topics",
            TOPIC,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let stderr = self.root.join("logs").join("mirror.stderr");
        self.mirror = Some(cluster::start_server(
            &self.exe,
            &args,
            "the mirror",
            &stderr,
        )?);
        bar.set_message("waiting for the followers to join the in-sync set");
        self.wait(&bar, "followers in sync", |d| d.in_sync(true))?;
        self.wait(&bar, "the mirror to take the topic", |d| {
            d.partitions_of(&d.addrs[NODES]).map(|_| ())
        })?;
        let view = match self.path {
            FailoverPath::Etcd => Some(self.wait(&bar, "etcd's view", |d| d.view())?),
            FailoverPath::OperatorPromote => None,
        };
        bar.finish_and_clear();
        for i in 0..NODES {
            let role = match &view {
                Some(v) => {
                    let led: Vec<String> = v.led_by(i).iter().map(leaders::name).collect();
                    if led.is_empty() {
                        "leads nothing".to_string()
                    } else {
                        format!("leads {}", led.join(" "))
                    }
                }
                None if i == self.leader => "leader".to_string(),
                None => "follower".to_string(),
            };
            outln!("  n{i} {} ({role})", self.addrs[i]);
        }
        outln!(
            "  mirror {} (copies {TOPIC:?} and the group's offsets)",
            self.mirror_addr()
        );
        if let Some(e) = &self.etcd {
            outln!(
                "  etcd {} (cluster {:?}, lease {} ms; a leader elected per partition and for \
                 the consumer offsets, each partition's preferred leader by default)",
                e.client,
                etcd::CLUSTER,
                self.lease_ms
            );
        }
        Ok(())
    }

    fn start_load(&mut self) -> Result<(), CliError> {
        // The partitioner as the node reports it, as any client would route by.
        let addr: SocketAddr = self.addrs[self.leader_of(0)]
            .parse()
            .map_err(context("a node address"))?;
        let mut client = Client::connect(addr, Duration::from_secs(10))
            .map_err(context("cannot reach the leader"))?;
        let Message::MetadataResponse { topics, .. } = client
            .call(&Message::MetadataRequest)
            .map_err(context("metadata request failed"))?
        else {
            return Err("the leader answered a metadata request with something else".into());
        };
        let t = topics
            .into_iter()
            .find(|t| t.topic == TOPIC)
            .ok_or("the leader does not know the demo topic")?;
        let kind: PartitionerKind = t.partitioner.parse().map_err(|e: String| -> CliError {
            format!("the leader names an unknown partitioner: {e}").into()
        })?;
        let nodes: Vec<SocketAddr> = self.addrs[..NODES]
            .iter()
            .map(|a| a.parse())
            .collect::<Result<_, _>>()
            .map_err(context("a node address"))?;
        // The load's clock starts now.
        self.shared = Arc::new(Shared::new());
        self.start_consumer(true)?;
        for id in 0..self.producers {
            let partitioner = Partitioner::new(kind, t.partitions)
                .map_err(context("cannot spread over the topic's partitions"))?;
            self.producer_threads.push(load::start_producer(
                id as u32,
                nodes.clone(),
                partitioner,
                TOPIC.to_string(),
                self.shared.clone(),
            ));
        }
        Ok(())
    }

    /// Lets the load run for `seconds`, showing it live.
    fn load_for(&mut self, name: &str, seconds: f64) -> Result<(), CliError> {
        let what = format!(
            "{} producers, keyed records of {} bytes at acks=all; consumer group {GROUP:?} \
             consuming and committing; for {seconds:.1} s",
            self.producers,
            check::VALUE_LEN
        );
        let len = (seconds * 1000.0) as u64;
        let bar = self.phase(name, &what, Some(len))?;
        let (started, acked_before) = (Instant::now(), self.shared.acked.load(Ordering::Relaxed));
        while started.elapsed().as_secs_f64() < seconds {
            if self.producer_threads.iter().any(JoinHandle::is_finished) {
                bar.finish_and_clear();
                return Err(self.producer_failure());
            }
            self.keep_consumer_alive()?;
            let line = self.live();
            bar.set_position(started.elapsed().as_millis() as u64);
            bar.set_message(line);
            std::thread::sleep(Duration::from_millis(200));
        }
        bar.finish_and_clear();
        let acked = self.shared.acked.load(Ordering::Relaxed) - acked_before;
        let line = self.live();
        outln!(
            "  {acked} records acknowledged in {seconds:.1} s ({:.0}/s); now: {line}",
            acked as f64 / seconds
        );
        Ok(())
    }

    /// A producer stopped before it was told to: why.
    fn producer_failure(&mut self) -> CliError {
        self.shared.stop.store(true, Ordering::SeqCst);
        let errors: Vec<String> = self
            .producer_threads
            .drain(..)
            .filter_map(|h| h.join().ok().and_then(|r| r.error))
            .collect();
        format!("a producer stopped: {}", errors.join("; ")).into()
    }

    /// On the etcd path, before the kill: etcd's view once every unit is led by its
    /// preferred leader and publishes every node in sync (so that an in-sync node can be
    /// elected for each unit of the node killed); records the lease etcd granted.
    fn etcd_ready(&mut self) -> Option<leaders::View> {
        let v = self.settled(true)?;
        self.figures.lease_granted_ms = v.lease_granted_ms;
        Some(v)
    }

    /// An in-sync follower of every partition (every acknowledged record is on it), for the
    /// operator to promote.
    fn promote_candidate(&self) -> Result<usize, CliError> {
        let (s, _) = self
            .partitions_of(&self.addrs[self.leader])
            .ok_or("the leader does not answer status")?;
        (0..NODES)
            .filter(|&i| i != self.leader)
            .find(|i| {
                let id = format!("n{i}");
                s["partitions"].as_array().is_some_and(|ps| {
                    ps.iter().filter(|p| p["topic"] == TOPIC).all(|p| {
                        p["followers"].as_array().is_some_and(|fs| {
                            fs.iter()
                                .any(|f| f["node_id"] == id && f["in_sync"] == true)
                        })
                    })
                })
            })
            .ok_or_else(|| "no follower is in sync on every partition: not failing over".into())
    }

    fn fail_over(&mut self) -> Result<(), CliError> {
        if self.path == FailoverPath::Etcd {
            return self.fail_over_etcd();
        }
        let what = format!(
            "SIGKILL the leader n{} under load; promote an in-sync follower",
            self.leader
        );
        let bar = self.phase("failover", &what, None)?;
        let new = self.promote_candidate()?;
        let old = self.leader;
        let kill_at = self.shared.now();
        if let Some(n) = self.nodes[old].take() {
            n.proc.kill();
        }
        let said = promote(&self.exe, &self.addrs[new])?;
        let new_at = self.shared.now();
        self.leader = new;
        let shared = self.shared.clone();
        let first = self.wait(&bar, "the first acknowledged write after the kill", |_| {
            let acks = shared.acks.lock().unwrap_or_else(PoisonError::into_inner);
            acks.iter()
                .find(|a| a.at > kill_at && a.node != old)
                .map(|a| a.at)
        })?;
        self.figures.kill_at = Some(kill_at);
        self.figures.failover_at = Some(first);
        self.figures.failover_ms = Some((first - kill_at) * 1000.0);
        self.figures.promote_ms = Some((new_at - kill_at) * 1000.0);
        // The old leader comes back with no `--leader`: it asks its peers who leads and
        // follows.
        bar.set_message(format!("restarting n{old} as a follower"));
        let targets = self.wait(&bar, "the new leader's status", Demo::leader_hws)?;
        self.start_node(old, None)?;
        let back = Instant::now();
        self.wait(&bar, "the old leader back in sync", |d| {
            d.rejoined(old, &targets)
        })?;
        bar.finish_and_clear();
        outln!(
            "  n{old} killed at {kill_at:.2} s; {said} ({:.0} ms after the kill); first write \
             acknowledged {:.0} ms after the kill; n{old} back as a follower (restarted with \
             no --leader), in sync {:.1} s after its restart",
            (new_at - kill_at) * 1000.0,
            (first - kill_at) * 1000.0,
            back.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// The etcd path's failover: once every unit is led by its preferred leader and every
    /// node is in sync, SIGKILLs the node leading the most partitions (see
    /// [`leaders::victim`]); etcd elects a new leader for each of its units, nobody promotes;
    /// it comes back with no `--leader` and, once in sync, is handed its preferred units
    /// back.
    fn fail_over_etcd(&mut self) -> Result<(), CliError> {
        let what = format!(
            "SIGKILL the node leading the most partitions under load; no promote: etcd elects \
             a new leader for each of its partitions once its lease ({} ms) lapses; restarted \
             with no --leader, it gets its preferred partitions back",
            self.lease_ms
        );
        let bar = self.phase("failover", &what, None)?;
        let v = self.wait(
            &bar,
            "each partition led by its preferred leader, every node in sync",
            Demo::etcd_ready,
        )?;
        let victim = leaders::victim(&v, TOPIC, NODES).ok_or("etcd names no leader to kill")?;
        self.leader = victim;
        self.epochs_kill = v.epochs();
        self.led_at_kill = (0..NODES).map(|n| v.led_by(n)).collect();
        let moved = self.led_at_kill[victim].clone();
        let moved_parts: Vec<u32> = moved.iter().filter(|k| k.0 == TOPIC).map(|k| k.1).collect();
        let moved_names: Vec<String> = moved.iter().map(leaders::name).collect();
        let leading = self.led_at_kill.iter().filter(|l| !l.is_empty()).count();
        let spread_ok = leading >= NODES.min(self.partitions as usize);
        self.leadership_ok &= spread_ok;
        self.leadership.push(format!(
            "before the kill {} ({leading} of {NODES} nodes lead)",
            self.spread(&v)
        ));
        let kill_at = self.shared.now();
        if let Some(n) = self.nodes[victim].take() {
            n.proc.kill();
        }
        let epochs_kill = self.epochs_kill.clone();
        let (after, new_at) = self.wait(
            &bar,
            "etcd to elect new leaders of the killed node's partitions",
            |d| {
                let v = d.view()?;
                let all = moved.iter().all(|k| {
                    v.units.get(k).is_some_and(|u| {
                        u.leader.is_some_and(|l| l != victim) && u.epoch > epochs_kill[k]
                    })
                });
                if !all {
                    return None;
                }
                for &p in &moved_parts {
                    let l = v.units.get(&(TOPIC.to_string(), p))?.leader?;
                    let (_, ps) = d.partitions_of(&d.addrs[l])?;
                    if ps[p as usize]["role"] != "leader" {
                        return None;
                    }
                }
                Some((v, d.shared.now()))
            },
        )?;
        let shared = self.shared.clone();
        let firsts: Vec<(u32, f64)> = self.wait(
            &bar,
            "a write acknowledged on each partition of the killed node",
            |_| {
                let acks = shared.acks.lock().unwrap_or_else(PoisonError::into_inner);
                moved_parts
                    .iter()
                    .map(|&p| {
                        acks.iter()
                            .find(|a| a.at > kill_at && a.partition == p)
                            .map(|a| (p, a.at))
                    })
                    .collect()
            },
        )?;
        let first = firsts.iter().map(|f| f.1).fold(f64::INFINITY, f64::min);
        self.figures.kill_at = Some(kill_at);
        self.figures.failover_at = Some(first);
        self.figures.failover_ms = Some((first - kill_at) * 1000.0);
        self.figures.elected_ms = Some((new_at - kill_at) * 1000.0);
        self.figures.killed_node = Some(format!("n{victim}"));
        self.figures.killed_units = moved_names.clone();
        self.figures.failover_partition_ms = firsts
            .iter()
            .map(|&(p, at)| (format!("{TOPIC}/{p}"), (at - kill_at) * 1000.0))
            .collect();
        let elected: Vec<String> = moved
            .iter()
            .filter_map(|k| {
                let u = after.units.get(k)?;
                Some(format!(
                    "n{} for {} (epoch {})",
                    u.leader?,
                    leaders::name(k),
                    u.epoch
                ))
            })
            .collect();
        let said = format!("etcd elected {}", elected.join(", "));
        self.leadership.push(format!(
            "n{victim} SIGKILLed leading {}: {said}, {:.0} ms after the kill, nobody promoted",
            moved_names.join(" "),
            (new_at - kill_at) * 1000.0
        ));

        // It comes back with no `--leader` and gets its preferred units back (handover: it
        // catches up, the holder gives the unit back, it wins the next election).
        bar.set_message(format!("restarting n{victim} with no --leader"));
        self.start_node(victim, None)?;
        let back = Instant::now();
        let v = self.wait(
            &bar,
            "the restarted node leading its preferred partitions again",
            |d| d.settled(false),
        )?;
        self.wait(&bar, "every node in sync", |d| d.in_sync(false))?;
        let rebalanced = back.elapsed().as_secs_f64();
        self.figures.rebalanced_ms = Some(rebalanced * 1000.0);
        let handed: Vec<String> = moved
            .iter()
            .filter_map(|k| {
                Some(format!(
                    "{} epoch {}",
                    leaders::name(k),
                    v.units.get(k)?.epoch
                ))
            })
            .collect();
        let back_ok = moved.iter().all(|k| {
            v.units.get(k).is_some_and(|u| {
                u.leader == Some(victim) && after.units.get(k).is_some_and(|a| u.epoch > a.epoch)
            })
        });
        self.leadership_ok &= back_ok;
        self.leadership.push(format!(
            "restarted with no --leader, n{victim} led {} again {rebalanced:.1} s later, handed \
             back in new epochs ({}; no node runs with --unclean-election)",
            moved_names.join(" "),
            handed.join(", ")
        ));
        bar.finish_and_clear();
        let per_partition: Vec<String> = firsts
            .iter()
            .map(|&(p, at)| format!("{TOPIC}/{p} {:.0} ms", (at - kill_at) * 1000.0))
            .collect();
        outln!(
            "  n{victim} (leading {}) killed at {kill_at:.2} s; {said} ({:.0} ms after the kill, \
             no promote); first write acknowledged on its partitions {:.0} ms after the kill \
             ({}); n{victim} restarted with no --leader led {} again {rebalanced:.1} s after \
             its restart (handed back); now {}",
            moved_names.join(" "),
            (new_at - kill_at) * 1000.0,
            (first - kill_at) * 1000.0,
            per_partition.join(", "),
            moved_names.join(" "),
            self.spread(&v)
        );
        Ok(())
    }

    fn snapshot(&mut self) -> Result<(), CliError> {
        let (f, who) = match self.path {
            FailoverPath::OperatorPromote => {
                let f = (0..NODES)
                    .find(|&i| i != self.leader)
                    .expect("three nodes, one leader");
                (
                    f,
                    format!("asked of follower n{f}, cut by the leader at its high watermarks"),
                )
            }
            FailoverPath::Etcd => {
                self.refresh_leaders();
                let o = self.offsets_leader.unwrap_or(0);
                let f = (0..NODES).find(|&i| i != o).expect("three nodes");
                (
                    f,
                    format!(
                        "asked of n{f}; streamed by n{o}, the consumer offsets unit's leader, \
                         which cuts the partitions it leads at their high watermarks and those \
                         it follows at the ones their leaders last sent it"
                    ),
                )
            }
        };
        let what = format!(
            "snapshot streamed from the running cluster ({who}) while the producers go on; \
             restore it into a fourth directory"
        );
        let bar = self.phase("snapshot", &what, None)?;
        let snap = self.root.join("snapshot");
        let restored = self.root.join("restored");
        self.figures.snapshot_at = Some(self.shared.now());
        // Asked of a follower: it names the leader, which streams the snapshot; appends go on.
        cluster::run(
            &self.exe,
            &[
                "snapshot",
                "--node",
                &self.addrs[f],
                "--out",
                &snap.to_string_lossy(),
            ],
            Duration::from_secs(120),
        )?;
        let manifest = stratalog::snapshot::verify(&snap).map_err(context(format!(
            "the snapshot {} failed its checks",
            snap.display()
        )))?;
        self.snapshot_ends = manifest
            .partitions
            .iter()
            .filter_map(|p| {
                let (topic, partition) = p.dir.split_once('/')?;
                (topic == TOPIC).then_some((partition.parse().ok()?, p.end_offset))
            })
            .collect();
        self.figures.snapshot_records = manifest
            .partitions
            .iter()
            .filter(|p| p.dir.starts_with(&format!("{TOPIC}/")))
            .map(|p| p.end_offset - p.start_offset)
            .sum();
        cluster::run(
            &self.exe,
            &[
                "restore",
                "--snapshot",
                &snap.to_string_lossy(),
                "--dir",
                &restored.to_string_lossy(),
            ],
            Duration::from_secs(120),
        )?;
        bar.finish_and_clear();
        outln!(
            "  snapshot through n{f}: {} records of {TOPIC:?} over {} partitions, {} files; \
             restored into {}",
            self.figures.snapshot_records,
            self.snapshot_ends.len(),
            manifest.files.len(),
            restored.display()
        );
        Ok(())
    }

    /// Stops the producers; waits for the followers and the mirror to reach the high
    /// watermark and the group to consume everything; keeps the acknowledged records and the
    /// final high watermarks for the checks.
    fn drain(&mut self) -> Result<(), CliError> {
        let bar = self.phase(
            "drain",
            "stop the producers; wait for the replicas, the mirror and the group to catch up",
            None,
        )?;
        self.shared.stop.store(true, Ordering::SeqCst);
        let mut acked = Vec::new();
        let mut errors = Vec::new();
        for h in self.producer_threads.drain(..) {
            match h.join() {
                Ok(r) => {
                    acked.extend(r.acked);
                    errors.extend(r.error);
                }
                Err(_) => errors.push("a producer thread panicked".into()),
            }
        }
        self.acked = acked;
        self.producer_errors = errors;
        if self.path == FailoverPath::Etcd {
            // A lease that lapsed under load moved a partition: its preferred leader gets it
            // back once in sync; the checks read each partition from the leader etcd names.
            self.wait(&bar, "each partition led by its preferred leader", |d| {
                d.settled(false)
            })?;
        }
        let hws = self.wait(&bar, "the followers at the leader's end", |d| {
            d.in_sync(true)
        })?;
        let want = hws.clone();
        self.wait(&bar, "the mirror at the high watermark", |d| {
            let (_, ps) = d.partitions_of(&d.addrs[NODES])?;
            ps.iter()
                .zip(&want)
                .all(|(p, hw)| p["log_end"].as_u64() == Some(*hw))
                .then_some(())
        })?;
        // The follower consumer stops (committing what it printed); one more runs to the
        // high watermark and exits.
        if let Some(c) = self.consumer.take() {
            let _ = c.proc.terminate(GRACE);
            let _ = c.reader.join();
        }
        self.start_consumer(false)?;
        let status = self.wait(
            &bar,
            "the consumer group to reach the high watermark",
            |d| d.consumer.as_mut().and_then(|c| c.proc.exited()),
        )?;
        if let Some(c) = self.consumer.take() {
            let _ = c.reader.join();
        }
        if !status.success() {
            return Err(format!(
                "the last consumer failed ({status}); see {}",
                self.root.join("logs/consumer.stderr").display()
            )
            .into());
        }
        self.hws = hws;
        if self.path == FailoverPath::Etcd {
            let end = self.wait(&bar, "etcd's view", |d| d.view())?.epochs();
            let moved = self
                .led_at_kill
                .get(self.leader)
                .cloned()
                .unwrap_or_default();
            self.figures.unplanned_elections =
                leaders::unplanned(&self.epochs_start, &self.epochs_kill, &end, &moved);
            self.figures.leaders_at_end = (0..self.partitions)
                .map(|p| (format!("{TOPIC}/{p}"), format!("n{}", self.leader_of(p))))
                .collect();
        }
        bar.finish_and_clear();
        outln!(
            "  {} records acknowledged; high watermarks {:?}; the group consumed {} distinct records",
            self.acked.len(),
            self.hws,
            self.shared.consumed_count()
        );
        Ok(())
    }

    /// Stops every node and the mirror (cleanly), reads their stores back and checks.
    fn check(&mut self) -> Result<(), CliError> {
        let bar = self.phase(
            "check",
            "stop every node; read the stores back with the library and check them",
            None,
        )?;
        bar.set_message("stopping the nodes and the mirror");
        for (i, n) in self.nodes.iter_mut().enumerate() {
            if let Some(n) = n.take()
                && !n.proc.terminate(GRACE).1
            {
                tracing::warn!(
                    "node n{i} did not stop within {} s of SIGTERM",
                    GRACE.as_secs()
                );
            }
        }
        if let Some(m) = self.mirror.take()
            && !m.proc.terminate(GRACE).1
        {
            tracing::warn!(
                "the mirror did not stop within {} s of SIGTERM",
                GRACE.as_secs()
            );
        }
        bar.set_message("reading the stores");
        let mut checks = Vec::new();
        checks.push(Check {
            name: "the producers wrote through the failover".into(),
            passed: self.producer_errors.is_empty(),
            detail: if self.producer_errors.is_empty() {
                format!("{} producers, none gave up", self.producers)
            } else {
                self.producer_errors.join("; ")
            },
        });

        // Each partition's final leader's log is its reference (on the etcd path, the node
        // etcd names for it; the one leader otherwise).
        let mut reference = Vec::new();
        let mut in_log: HashSet<KeyValue> = HashSet::new();
        let (mut total, mut corrupt) = (0u64, Vec::new());
        for p in 0..self.partitions {
            let leader = self.leader_of(p);
            let dir = stratalog::store::partition_dir(&self.node_dir(leader), TOPIC, p);
            match read_log(&dir, self.hws[p as usize]) {
                Ok((batches, records)) => {
                    for (offset, key, value) in records {
                        total += 1;
                        match check::check_record(key.as_deref(), &value) {
                            Ok(_) => {
                                in_log.insert((key.unwrap_or_default(), value));
                            }
                            Err(e) => {
                                corrupt.push(format!("n{leader} {TOPIC}/{p} offset {offset}: {e}"))
                            }
                        }
                    }
                    reference.push(batches);
                }
                Err(e) => {
                    corrupt.push(format!("n{leader} {TOPIC}/{p}: {e}"));
                    reference.push(Vec::new());
                }
            }
        }
        let consumer_corrupt = self
            .shared
            .corrupt
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let lines = self.shared.consumed_lines.load(Ordering::Relaxed);
        let corrupt_count = (corrupt.len() + consumer_corrupt.len()) as u64;
        checks.push(Check {
            name: "no record corrupt".into(),
            passed: corrupt_count == 0,
            detail: if corrupt_count == 0 {
                format!(
                    "{total} records of the final log and {lines} consumed records checked \
                     (batch CRC, then each value's digest of its key)"
                )
            } else {
                let all: Vec<String> = corrupt.into_iter().chain(consumer_corrupt).collect();
                format!("{} corrupt, e.g. {}", all.len(), all[0])
            },
        });

        let lost = check::missing(&self.acked, &in_log);
        checks.push(Check {
            name: "every acknowledged record is in the final log".into(),
            passed: lost.missing == 0,
            detail: format!(
                "{} acknowledged records looked up by key and value below the high watermark \
                 of {}: {} lost{}",
                lost.checked,
                self.leaders_named(),
                lost.missing,
                example(&lost.example)
            ),
        });
        let consumed = self
            .shared
            .consumed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let not_consumed = check::missing(&self.acked, &consumed);
        checks.push(Check {
            name: "every acknowledged record consumed at least once".into(),
            passed: not_consumed.missing == 0,
            detail: format!(
                "group {GROUP:?}: {} distinct records consumed ({lines} printed, {} consumer \
                 restarts); {} acknowledged records never consumed{}",
                consumed.len(),
                self.figures.consumer_restarts,
                not_consumed.missing,
                example(&not_consumed.example)
            ),
        });

        // The followers and the mirror against each partition's leader, below the high
        // watermark.
        let mut copies: Vec<(String, PathBuf)> = (0..NODES)
            .map(|i| (format!("n{i}"), self.node_dir(i)))
            .collect();
        copies.push(("mirror".into(), self.root.join("mirror")));
        let mut compared = [(0u64, Vec::new()), (0u64, Vec::new())];
        for (i, (name, dir)) in copies.iter().enumerate() {
            let which = usize::from(name == "mirror");
            for p in (0..self.partitions).filter(|&p| self.leader_of(p) != i) {
                let hw = self.hws[p as usize];
                let result = read_log(&stratalog::store::partition_dir(dir, TOPIC, p), hw)
                    .and_then(|(b, _)| check::compare_logs(&reference[p as usize], &b, hw));
                match result {
                    Ok(bytes) => compared[which].0 += bytes,
                    Err(e) => compared[which].1.push(format!("{name} {TOPIC}/{p}: {e}")),
                }
            }
        }
        for (which, name, whose) in [
            (
                0,
                "replicas byte-identical up to the high watermark",
                "2 followers",
            ),
            (
                1,
                "mirror byte-identical up to the high watermark",
                "the mirror",
            ),
        ] {
            let (bytes, errors) = &compared[which];
            checks.push(Check {
                name: name.into(),
                passed: errors.is_empty(),
                detail: if errors.is_empty() {
                    format!(
                        "{whose} x {} partitions: {bytes} bytes of batches equal to those of \
                         {}, at the same offsets (high watermarks {:?}){}",
                        self.partitions,
                        self.leaders_named(),
                        self.hws,
                        if which == 1 && self.path == FailoverPath::Etcd {
                            " (a node answers a mirror's fetch only for a partition it leads: \
                             the mirror followed each partition's leader)"
                        } else {
                            ""
                        }
                    )
                } else {
                    errors.join("; ")
                },
            });
        }

        // The restored copy against the source, up to the snapshot's end.
        let restored = self.root.join("restored");
        let mut errors = Vec::new();
        let mut bytes = 0u64;
        if self.snapshot_ends.len() != self.partitions as usize {
            errors.push(format!(
                "the snapshot holds {} partitions of {TOPIC:?}, not {}",
                self.snapshot_ends.len(),
                self.partitions
            ));
        }
        for &(p, end) in &self.snapshot_ends {
            let Some(source) = reference.get(p as usize) else {
                errors.push(format!(
                    "the snapshot holds {TOPIC}/{p}, which the topic lacks"
                ));
                continue;
            };
            let result = read_log(&stratalog::store::partition_dir(&restored, TOPIC, p), end)
                .and_then(|(b, _)| check::compare_logs(source, &b, end));
            match result {
                Ok(n) => bytes += n,
                Err(e) => errors.push(format!("restored {TOPIC}/{p}: {e}")),
            }
        }
        checks.push(Check {
            name: "restored copy equal to the source up to the snapshot".into(),
            passed: errors.is_empty(),
            detail: if errors.is_empty() {
                format!(
                    "{} records, {bytes} bytes of batches equal to those of {} up to the \
                     snapshot's ends {:?}",
                    self.figures.snapshot_records,
                    self.leaders_named(),
                    self.snapshot_ends
                )
            } else {
                errors.join("; ")
            },
        });

        if self.path == FailoverPath::Etcd {
            checks.push(Check {
                name: "leadership per partition spread, failed over by etcd and handed back".into(),
                passed: self.leadership_ok,
                detail: format!(
                    "{}; {} elections besides the failover and the handovers",
                    self.leadership.join("; "),
                    self.figures.unplanned_elections
                ),
            });
        }

        let f = &mut self.figures;
        f.records_sent = self.shared.sent.load(Ordering::Relaxed);
        f.records_acked = self.acked.len() as u64;
        f.records_consumed = consumed.len() as u64;
        f.records_not_consumed = not_consumed.missing;
        f.records_checked = total;
        f.records_lost = lost.missing;
        f.records_corrupt = corrupt_count;
        f.records_duplicated = total.saturating_sub(in_log.len() as u64);
        f.add_acks(
            &self
                .shared
                .acks
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        f.checks = checks;
        bar.finish_and_clear();
        Ok(())
    }

    /// Stops every process the demo started (nodes and mirror cleanly, with SIGTERM).
    fn stop_everything(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(c) = self.consumer.take() {
            c.proc.kill();
            let _ = c.reader.join();
        }
        for n in self.nodes.iter_mut().filter_map(Option::take) {
            let _ = n.proc.terminate(GRACE);
        }
        if let Some(m) = self.mirror.take() {
            let _ = m.proc.terminate(GRACE);
        }
        // etcd last: the nodes revoke their leases as they stop.
        if let Some(e) = self.etcd.take() {
            let _ = e.proc.terminate(GRACE);
        }
        for h in self.producer_threads.drain(..) {
            let _ = h.join();
        }
    }
}

/// The failover time of `stratalog bench`: in the new directory `root`, a leader and a
/// follower (`serve` processes on 127.0.0.1, one partition, `--min-in-sync 1`), a producer at
/// `acks=all` through both addresses; the leader is SIGKILLed and the follower promoted
/// (`promote`). Returns the time from the kill to the first write the new leader acknowledged.
pub fn failover_time(root: &Path) -> Result<Duration, CliError> {
    const BENCH_TOPIC: &str = "failover";
    let exe = std::env::current_exe().map_err(context("cannot find this executable"))?;
    fs::create_dir_all(root).map_err(context(format!("cannot create {}", root.display())))?;
    let addrs = cluster::free_addrs(2)?;
    let peers = addrs.join(",");
    let mut nodes = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let dir = root.join(format!("n{i}")).to_string_lossy().into_owned();
        cluster::run(
            &exe,
            &["topics", "create", "--dir", &dir, BENCH_TOPIC],
            Duration::from_secs(30),
        )?;
        let mut args: Vec<String> = [
            "serve",
            "--dir",
            &dir,
            "--node-id",
            &format!("n{i}"),
            "--listen",
            addr,
            "--peers",
            &peers,
            "--replicas",
            "2",
            "--min-in-sync",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if i == 1 {
            args.extend(["--leader".to_string(), addrs[0].clone()]);
        }
        let stderr = root.join(format!("n{i}.stderr"));
        nodes.push(Some(cluster::start_server(
            &exe,
            &args,
            &format!("node n{i}"),
            &stderr,
        )?));
    }
    let in_sync = || -> Option<()> {
        let s = cluster::status(&exe, &addrs[0])?;
        s["partitions"]
            .as_array()?
            .iter()
            .filter(|p| p["topic"] == BENCH_TOPIC)
            .all(|p| {
                p["followers"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|f| f["in_sync"] == true))
            })
            .then_some(())
    };
    let started = Instant::now();
    while in_sync().is_none() {
        if started.elapsed() > WAIT {
            return Err("the follower did not join the in-sync set within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let shared = Arc::new(Shared::new());
    let sockets: Vec<SocketAddr> = addrs
        .iter()
        .map(|a| a.parse())
        .collect::<Result<_, _>>()
        .map_err(context("a node address"))?;
    let partitioner = Partitioner::new(PartitionerKind::RoundRobin, 1)
        .map_err(context("a partitioner of one partition"))?;
    let producer = load::start_producer(
        0,
        sockets,
        partitioner,
        BENCH_TOPIC.to_string(),
        shared.clone(),
    );
    let outcome = (|| -> Result<Duration, CliError> {
        let loaded = Instant::now();
        while shared.acked.load(Ordering::Relaxed) == 0
            || loaded.elapsed() < Duration::from_millis(300)
        {
            if producer.is_finished() || loaded.elapsed() > WAIT {
                return Err("the producer got no write acknowledged before the kill".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let kill_at = shared.now();
        if let Some(n) = nodes[0].take() {
            n.proc.kill();
        }
        promote(&exe, &addrs[1])?;
        let waited = Instant::now();
        loop {
            let first = shared
                .acks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .find(|a| a.at > kill_at && a.node == 1)
                .map(|a| a.at);
            if let Some(at) = first {
                return Ok(Duration::from_secs_f64(at - kill_at));
            }
            if producer.is_finished() || waited.elapsed() > WAIT {
                return Err("no write was acknowledged after the failover".into());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    })();
    shared.stop.store(true, Ordering::SeqCst);
    let result = producer.join();
    for n in nodes.into_iter().flatten() {
        n.proc.kill();
    }
    match result {
        Ok(load::ProducerResult { error: Some(e), .. }) if outcome.is_err() => Err(format!(
            "{}; the producer: {e}",
            outcome.err().map_or(String::new(), |o| o.to_string())
        )
        .into()),
        _ => outcome,
    }
}

/// `, e.g. key K value V` for a report.
fn example(kv: &Option<KeyValue>) -> String {
    kv.as_ref().map_or(String::new(), |(k, v)| {
        format!(
            ", e.g. key {:?} value {:?}",
            String::from_utf8_lossy(k),
            String::from_utf8_lossy(v)
        )
    })
}

/// A record read back: offset, key, value.
type ReadRecord = (u64, Option<Vec<u8>>, Vec<u8>);

/// The batches of the log in `dir` that end below `upto`, and their records, read with the
/// library (read-only: every batch's CRC is checked as it is read).
fn read_log(dir: &Path, upto: u64) -> Result<(Vec<StoredBatch>, Vec<ReadRecord>), String> {
    let log = Log::open(
        dir,
        LogOptions {
            read_only: true,
            create: false,
            ..Default::default()
        },
    )
    .map_err(|e| format!("cannot open {}: {e}", dir.display()))?;
    let (mut batches, mut records) = (Vec::new(), Vec::new());
    let mut next = log.start_offset();
    'read: while next < upto.min(log.end_offset()) {
        let read = log
            .read(next, 1 << 20)
            .map_err(|e| format!("reading {} at offset {next}: {e}", dir.display()))?;
        if read.is_empty() {
            break;
        }
        for batch in read {
            if batch.last_offset() >= upto {
                break 'read;
            }
            let recs = batch.records().map_err(|e| {
                format!(
                    "the batch at offset {} is corrupt: {e}",
                    batch.base_offset()
                )
            })?;
            for r in recs {
                let r = r.map_err(|e| {
                    format!(
                        "a record of the batch at offset {} is corrupt: {e}",
                        batch.base_offset()
                    )
                })?;
                records.push((r.offset, r.key.map(|k| k.to_vec()), r.value.to_vec()));
            }
            next = batch.last_offset() + 1;
            batches.push(StoredBatch {
                base: batch.base_offset(),
                last: batch.last_offset(),
                bytes: batch.as_bytes().clone(),
            });
        }
    }
    Ok((batches, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choose(
        choice: FailoverChoice,
        feature: bool,
        binary: Option<&str>,
    ) -> Result<(FailoverPath, String), String> {
        FailoverPath::choose(choice, feature, binary.map(Path::new), 2000)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn auto_takes_etcd_only_with_the_feature_and_the_binary() {
        let (path, note) = choose(FailoverChoice::Auto, true, Some("/usr/bin/etcd")).unwrap();
        assert_eq!(path, FailoverPath::Etcd);
        assert!(
            note.contains("/usr/bin/etcd") && note.contains("lease 2000 ms"),
            "{note}"
        );
        let (path, note) = choose(FailoverChoice::Auto, false, Some("/usr/bin/etcd")).unwrap();
        assert_eq!(path, FailoverPath::OperatorPromote);
        assert!(
            note.contains("built without the etcd feature")
                && note.contains("--features etcd")
                && note.contains("operator promote"),
            "{note}"
        );
        let (path, note) = choose(FailoverChoice::Auto, true, None).unwrap();
        assert_eq!(path, FailoverPath::OperatorPromote);
        assert!(
            note.contains("no `etcd` binary on PATH") && note.contains("operator promote"),
            "{note}"
        );
    }

    #[test]
    fn forced_etcd_is_refused_when_impossible_and_promote_is_always_had() {
        let e = choose(FailoverChoice::Etcd, false, Some("/usr/bin/etcd")).unwrap_err();
        assert!(
            e.contains("--failover etcd") && e.contains("--features etcd"),
            "{e}"
        );
        let e = choose(FailoverChoice::Etcd, true, None).unwrap_err();
        assert!(
            e.contains("--failover etcd") && e.contains("etcd-server"),
            "{e}"
        );
        let (path, _) = choose(FailoverChoice::Etcd, true, Some("/usr/bin/etcd")).unwrap();
        assert_eq!(path, FailoverPath::Etcd);
        for (feature, binary) in [(true, Some("/usr/bin/etcd")), (false, None)] {
            let (path, note) = choose(FailoverChoice::Promote, feature, binary).unwrap();
            assert_eq!(path, FailoverPath::OperatorPromote);
            assert!(note.contains("--failover promote"), "{note}");
        }
    }
}
