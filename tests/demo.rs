//! `stratalog demo` end to end, as a user runs it: on a short budget it must pass every one of
//! its checks (every acknowledged record in the final log and consumed, none corrupt, replicas
//! and mirror byte-identical, the restored copy equal to the source) and write what it says,
//! on both failover paths: operator promote (`--failover promote`, forced: this test build has
//! the `etcd` feature) and etcd (`--failover etcd`: the demo starts its own etcd, which elects a
//! leader per partition spread over the nodes; the demo kills the node leading the most
//! partitions, etcd elects new leaders for them, and the node restarted gets them back).
//! SIGINT to its process group (Ctrl-C) must stop every node (and etcd) and remove the scratch
//! data, on both paths. On the etcd path a node leading partitions frozen (SIGSTOP) for three
//! lease times under load is replaced by etcd on its own: the demo must follow the leaders
//! etcd names then, and pass every check.
//!
//! The etcd tests need an `etcd` binary on PATH (Debian and Ubuntu: `etcd-server`; `.ci/run`
//! installs it): without one they fail, saying so, and are never skipped.
//!
//! That each check can fail is shown by the unit tests of the checkers
//! (`src/cli/demo/check.rs`, on crafted inputs). Every process is in a process group of its
//! own that a guard SIGKILLs when the test ends, also when it fails.
#![cfg(feature = "cli")]

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_stratalog");

/// The demos run one at a time: each runs a cluster, and they share two cores.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The demo in a process group of its own, SIGKILLed (with everything it started) on drop.
struct Group(Child);

impl Group {
    fn spawn(args: &[&str], tmpdir: &Path) -> Group {
        Group::spawn_with(args, tmpdir, |_| {})
    }

    /// [`Group::spawn`], `setup` changing the command first (its environment).
    fn spawn_with(args: &[&str], tmpdir: &Path, setup: impl FnOnce(&mut Command)) -> Group {
        let mut cmd = Command::new(BIN);
        setup(&mut cmd);
        let child = cmd
            .arg("demo")
            .args(args)
            .env("TMPDIR", tmpdir)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("spawn stratalog demo");
        Group(child)
    }

    fn pgid(&self) -> libc::pid_t {
        self.0.id() as libc::pid_t
    }

    /// Waits at most `timeout` for the demo to exit.
    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                started.elapsed() < timeout,
                "the demo did not finish within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// True while any process of the group is alive (zombies included).
    fn any_alive(&self) -> bool {
        // SAFETY: signal 0 only checks that the process group exists.
        unsafe { libc::kill(-self.pgid(), 0) == 0 }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: a plain system call on the group this test made.
        unsafe {
            libc::kill(-self.pgid(), libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

/// Fails the test, saying what to install, if no `etcd` is on PATH.
fn require_etcd() {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join("etcd").is_file()));
    assert!(
        found,
        "etcd must be installed for the demo's etcd path tests (Debian and Ubuntu: \
         apt-get install etcd-server; .ci/run installs it)"
    );
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Runs the demo with `extra` arguments on a 4 s budget and checks what it says, its figures
/// (`checks` checks, all passed), its plot, that it removed its scratch data and that none of
/// its processes outlived it. Returns its output and figures.
fn demo_passes_every_check(extra: &[&str], checks: usize) -> (String, serde_json::Value) {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("tmpdir");
    std::fs::create_dir(&scratch).unwrap();
    let (json, svg) = (tmp.path().join("demo.json"), tmp.path().join("demo.svg"));
    let mut args = vec![
        "--seconds",
        "4",
        "--json",
        json.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut demo = Group::spawn(&args, &scratch);
    let (mut out, mut err) = (String::new(), String::new());
    let mut stdout = demo.0.stdout.take().unwrap();
    let mut stderr = demo.0.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut e = String::new();
        let _ = stderr.read_to_string(&mut e);
        e
    });
    stdout.read_to_string(&mut out).unwrap();
    let status = demo.wait(Duration::from_secs(240));
    err.push_str(&reader.join().unwrap());
    eprintln!("{out}");
    assert!(
        status.success(),
        "the demo failed ({status}):\n{out}\nstderr:\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.contains("records lost"), "{out}");

    // The figures, as numbers.
    let f: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let num = |k: &str| {
        f[k].as_u64()
            .unwrap_or_else(|| panic!("{k} is not a number: {}", f[k]))
    };
    assert!(num("records_acked") > 0, "{f}");
    assert_eq!(num("records_lost"), 0, "{f}");
    assert_eq!(num("records_not_consumed"), 0, "{f}");
    assert_eq!(num("records_corrupt"), 0, "{f}");
    assert!(num("records_checked") >= num("records_acked"), "{f}");
    assert!(num("records_consumed") >= num("records_acked"), "{f}");
    assert!(num("snapshot_records") > 0, "{f}");
    let failover = f["failover_ms"].as_f64().expect("failover_ms is a number");
    assert!(failover > 0.0, "{f}");
    assert!(f["ack_latency_ms"]["p999"].as_f64().unwrap() > 0.0, "{f}");
    let all = f["checks"].as_array().unwrap();
    assert_eq!(all.len(), checks, "{f}");
    for c in all {
        assert_eq!(c["passed"], true, "check failed: {c}");
    }
    assert_eq!(f["passed"], true);

    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(
        plot.contains("<svg") && plot.contains("leader killed"),
        "{plot}"
    );
    // The scratch directory under $TMPDIR is gone.
    assert!(
        entries(&scratch).is_empty(),
        "left behind: {:?}",
        entries(&scratch)
    );
    assert!(!demo.any_alive(), "a process of the demo outlived it");
    (out, f)
}

#[test]
fn the_demo_passes_every_check_and_cleans_up() {
    let (out, f) = demo_passes_every_check(&["--failover", "promote"], 7);
    assert!(
        out.contains("--failover promote: failing over by operator promote"),
        "{out}"
    );
    assert_eq!(f["failover_path"], "operator-promote", "{f}");
    assert!(f["promote_ms"].as_f64().is_some(), "{f}");
    assert!(f["lease_ms"].is_null() && f["elected_ms"].is_null(), "{f}");
}

/// The etcd path: the demo starts its own etcd, three nodes under it with no `--leader`;
/// etcd elects a leader per partition, spread over the nodes (the first phase says who leads
/// what); the demo kills the node leading the most partitions and does not promote: etcd
/// elects new leaders for its partitions, the node comes back with no `--leader` and gets
/// them back, and every check passes, the leadership check included (8 checks); etcd is
/// stopped with the rest (the process group is empty at the end) and its data removed with
/// the scratch.
#[test]
fn the_etcd_demo_elects_the_next_leader_and_passes_every_check() {
    require_etcd();
    let (out, f) = demo_passes_every_check(&["--failover", "etcd"], 8);
    assert!(
        out.contains("a local etcd") && out.contains("etcd elected n"),
        "{out}"
    );
    // Leadership spread: each node's line says what it leads, and all three lead something.
    let leading = out
        .lines()
        .filter(|l| {
            l.starts_with("  n") && l.contains(" (leads ") && !l.contains("(leads nothing)")
        })
        .count();
    assert_eq!(
        leading, 3,
        "the leadership is not spread over the 3 nodes: {out}"
    );
    let killed = f["killed_node"].as_str().expect("killed_node").to_string();
    let parts: Vec<&str> = f["killed_partitions"]
        .as_array()
        .expect("killed_partitions")
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    let topic_parts: Vec<&&str> = parts.iter().filter(|p| p.starts_with("demo/")).collect();
    assert!(!topic_parts.is_empty(), "{killed} led no partition: {f}");
    // A first acknowledged write on each of them, none before the kill's first.
    let per = f["failover_partition_ms"]
        .as_object()
        .expect("per partition");
    assert_eq!(per.len(), topic_parts.len(), "{f}");
    let failover = f["failover_ms"].as_f64().unwrap();
    for p in &topic_parts {
        let ms = per[**p]
            .as_f64()
            .unwrap_or_else(|| panic!("no failover time of {p}: {f}"));
        assert!(
            ms >= failover,
            "{p}: {ms} ms before the first, {failover} ms: {f}"
        );
    }
    assert!(f["rebalanced_ms"].as_f64().is_some_and(|r| r > 0.0), "{f}");
    // At the end, the killed node leads again what it led (handed back).
    let end = f["leaders_at_end"].as_object().expect("leaders_at_end");
    assert_eq!(end.len(), 4, "{f}");
    for p in &topic_parts {
        assert_eq!(
            end[**p],
            killed.as_str(),
            "{p} not handed back to {killed}: {f}"
        );
    }
    assert!(!out.contains("leads in epoch"), "the demo promoted: {out}");
    assert_eq!(f["failover_path"], "etcd", "{f}");
    assert_eq!(f["lease_ms"].as_u64(), Some(2000), "{f}");
    assert!(
        f["lease_granted_ms"].as_u64().is_some_and(|g| g >= 2000),
        "{f}"
    );
    assert!(f["elected_ms"].as_f64().is_some_and(|e| e > 0.0), "{f}");
    assert!(f["promote_ms"].is_null(), "{f}");
    assert!(f["unplanned_elections"].as_u64().is_some(), "{f}");
}

#[test]
fn sigint_to_the_process_group_stops_every_node_and_removes_the_scratch() {
    sigint_stops_everything("promote");
}

/// The same with etcd running: the demo's etcd is stopped too (the group is empty after) and
/// its data removed.
#[test]
fn sigint_on_the_etcd_path_stops_etcd_too() {
    require_etcd();
    sigint_stops_everything("etcd");
}

/// SIGINT to the demo's process group (`--failover PATH`) once its load runs: it exits 130
/// saying so, every process it started is gone and its scratch directory removed.
fn sigint_stops_everything(path: &str) {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("tmpdir");
    std::fs::create_dir(&scratch).unwrap();
    let svg = tmp.path().join("demo.svg");
    let mut demo = Group::spawn(
        &[
            "--seconds",
            "120",
            "--failover",
            path,
            "--svg",
            svg.to_str().unwrap(),
        ],
        &scratch,
    );
    // Wait until the load runs: the nodes, the mirror and the consumer are up.
    let stdout = demo.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let started = Instant::now();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(120).saturating_sub(started.elapsed()))
            .expect("the demo did not reach its load phase in 120 s");
        if line.starts_with("[2/8]") {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let data = entries(&scratch);
    assert_eq!(
        data.len(),
        1,
        "the demo keeps its data under $TMPDIR: {data:?}"
    );
    let root = scratch.join(&data[0]);
    assert_eq!(
        root.join("etcd").is_dir(),
        path == "etcd",
        "etcd's data is in the scratch directory on the etcd path only: {:?}",
        entries(&root)
    );
    // Ctrl-C: SIGINT to the whole process group.
    // SAFETY: a plain system call on the group this test made.
    assert_eq!(unsafe { libc::kill(-demo.pgid(), libc::SIGINT) }, 0);
    let status = demo.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(130), "{status}");
    let mut err = String::new();
    demo.0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("interrupted by SIGINT"), "{err}");
    // Every node, the mirror and the consumer: gone (their parent reaped them).
    let deadline = Instant::now() + Duration::from_secs(10);
    while demo.any_alive() {
        assert!(
            Instant::now() < deadline,
            "processes of the demo survived its SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        entries(&scratch).is_empty(),
        "left behind: {:?}",
        entries(&scratch)
    );
}

#[test]
fn bad_arguments_are_refused_before_anything_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("tmpdir");
    std::fs::create_dir(&scratch).unwrap();
    let full = tmp.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("precious"), b"x").unwrap();
    // A PATH with no etcd on it.
    let no_etcd = tmp.path().join("bin");
    std::fs::create_dir(&no_etcd).unwrap();
    for (args, says, code) in [
        (vec!["--seconds", "0"], "--seconds", 1),
        (vec!["--seconds", "nan"], "--seconds", 1),
        (vec!["--partitions", "0"], "--partitions", 1),
        (vec!["--producers", "0"], "--producers", 1),
        (vec!["--keep", full.to_str().unwrap()], "not empty", 1),
        (
            vec!["--failover", "etcd", "--keep", full.to_str().unwrap()],
            "--failover etcd: no `etcd` binary on PATH: install etcd",
            1,
        ),
        (
            vec!["--failover", "promote", "--lease-ms", "1000"],
            "--lease-ms is the etcd path's lease",
            1,
        ),
        (vec!["--failover", "sideways"], "--failover", 2),
        (vec!["--lease-ms", "500"], "--lease-ms", 2),
    ] {
        let out = Command::new(BIN)
            .arg("demo")
            .args(&args)
            .env("TMPDIR", &scratch)
            .env("PATH", &no_etcd)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(
            err.contains(says) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
    // Nothing was made, and the kept directory's file is untouched.
    assert!(entries(&scratch).is_empty(), "{:?}", entries(&scratch));
    assert_eq!(entries(&full), vec!["precious".to_string()]);
}

/// `--failover auto` (the default) with no `etcd` on PATH takes the operator path and says
/// why, in its first line, before it starts anything.
#[test]
fn auto_without_etcd_on_path_says_it_falls_back_to_promote() {
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("tmpdir");
    std::fs::create_dir(&scratch).unwrap();
    let no_etcd = tmp.path().join("bin");
    std::fs::create_dir(&no_etcd).unwrap();
    let svg = tmp.path().join("demo.svg");
    let mut demo = Group::spawn_with(
        &["--seconds", "120", "--svg", svg.to_str().unwrap()],
        &scratch,
        |cmd| {
            cmd.env("PATH", &no_etcd);
        },
    );
    let mut first = String::new();
    // Kept open until the demo exits: a closed stdout would end it before the SIGINT.
    let mut stdout = BufReader::new(demo.0.stdout.take().unwrap());
    stdout.read_line(&mut first).unwrap();
    assert!(
        first.starts_with("[1/8] cluster:")
            && first.contains("no `etcd` binary on PATH: install etcd")
            && first.contains("failing over by operator promote"),
        "{first}"
    );
    // SAFETY: a plain system call on the group this test made.
    assert_eq!(unsafe { libc::kill(-demo.pgid(), libc::SIGINT) }, 0);
    assert_eq!(demo.wait(Duration::from_secs(60)).code(), Some(130));
    drop(stdout);
}

/// The process ids of the children of `parent` whose command line contains `needle`.
fn children_running(parent: u32, needle: &str) -> Vec<libc::pid_t> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<libc::pid_t>() else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // `pid (comm) state ppid ...`: the fields after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if ppid == Some(parent) && cmdline.contains(needle) {
            found.push(pid);
        }
    }
    found
}

/// On the etcd path, a node leading partitions is frozen (SIGSTOP) under load for three lease
/// times, then continued: etcd elects other leaders for its partitions without the demo, and
/// hands them back once the node caught up; the demo must follow the leaders etcd names (for
/// its waits and its checks) and still pass every check, counting those elections.
#[test]
fn the_etcd_demo_follows_a_leader_etcd_elected_on_its_own() {
    require_etcd();
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("tmpdir");
    std::fs::create_dir(&scratch).unwrap();
    let (json, svg) = (tmp.path().join("demo.json"), tmp.path().join("demo.svg"));
    let mut demo = Group::spawn(
        &[
            "--failover",
            "etcd",
            "--seconds",
            "20",
            "--json",
            json.to_str().unwrap(),
            "--svg",
            svg.to_str().unwrap(),
        ],
        &scratch,
    );
    let stdout = demo.0.stdout.take().unwrap();
    let mut stderr = demo.0.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut e = String::new();
        let _ = stderr.read_to_string(&mut e);
        e
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let out_reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            let _ = tx.send(line);
        }
        all
    });
    let started = Instant::now();
    let mut leader = None;
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(120).saturating_sub(started.elapsed()))
            .expect("the demo did not reach its load phase in 120 s");
        // `  nI ADDR (leads demo/0 demo/3)`: the first node that leads a partition.
        if leader.is_none() && line.starts_with("  n") && line.contains(" (leads demo/") {
            leader = line.split_whitespace().next().map(str::to_string);
        }
        if line.starts_with("[2/8]") {
            break;
        }
    }
    let leader = leader.expect("the demo names a node leading a partition");
    let pids = children_running(demo.0.id(), &format!("--node-id {leader} "));
    assert_eq!(pids.len(), 1, "the leader {leader}'s process: {pids:?}");
    // Three lease times (the demo's lease is 2 s), well inside the 8 s of the first load.
    // SAFETY: plain system calls on a process of the group this test made.
    unsafe { libc::kill(pids[0], libc::SIGSTOP) };
    std::thread::sleep(Duration::from_secs(6));
    unsafe { libc::kill(pids[0], libc::SIGCONT) };
    let status = demo.wait(Duration::from_secs(180));
    let out = out_reader.join().unwrap();
    let err = err_reader.join().unwrap();
    eprintln!("{out}");
    assert!(
        status.success(),
        "the demo failed ({status}):\n{out}\nstderr:\n{err}"
    );
    let f: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for c in f["checks"].as_array().unwrap() {
        assert_eq!(c["passed"], true, "check failed: {c}");
    }
    assert_eq!(f["records_lost"].as_u64(), Some(0), "{f}");
    let unplanned = f["unplanned_elections"].as_u64().expect("a number");
    println!("elections besides the demo's failover: {unplanned}");
    assert!(
        unplanned >= 1,
        "etcd elected no other leader while {leader}, leading partitions, was frozen for three \
         lease times: {f}"
    );
    assert!(
        entries(&scratch).is_empty(),
        "left behind: {:?}",
        entries(&scratch)
    );
    assert!(!demo.any_alive(), "a process of the demo outlived it");
}
