//! `stratalog demo` end to end, as a user runs it: on a short budget it must pass every one of
//! its checks (every acknowledged record in the final log and consumed, none corrupt, replicas
//! and mirror byte-identical, the restored copy equal to the source) and write what it says;
//! SIGINT to its process group (Ctrl-C) must stop every node and remove the scratch data.
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

/// The demo in a process group of its own, SIGKILLed (with everything it started) on drop.
struct Group(Child);

impl Group {
    fn spawn(args: &[&str], tmpdir: &Path) -> Group {
        let child = Command::new(BIN)
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

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn the_demo_passes_every_check_and_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("tmpdir");
    std::fs::create_dir(&scratch).unwrap();
    let (json, svg) = (tmp.path().join("demo.json"), tmp.path().join("demo.svg"));
    let mut demo = Group::spawn(
        &[
            "--seconds",
            "4",
            "--json",
            json.to_str().unwrap(),
            "--svg",
            svg.to_str().unwrap(),
        ],
        &scratch,
    );
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
    assert!(
        out.contains("operator-promote") && out.contains("records lost"),
        "{out}"
    );

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
    let checks = f["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 7, "{f}");
    for c in checks {
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
}

#[test]
fn sigint_to_the_process_group_stops_every_node_and_removes_the_scratch() {
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("tmpdir");
    std::fs::create_dir(&scratch).unwrap();
    let svg = tmp.path().join("demo.svg");
    let mut demo = Group::spawn(
        &["--seconds", "120", "--svg", svg.to_str().unwrap()],
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
    assert!(
        !entries(&scratch).is_empty(),
        "the demo keeps its data under $TMPDIR"
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
    for (args, says) in [
        (vec!["--seconds", "0"], "--seconds"),
        (vec!["--seconds", "nan"], "--seconds"),
        (vec!["--partitions", "0"], "--partitions"),
        (vec!["--producers", "0"], "--producers"),
        (vec!["--keep", full.to_str().unwrap()], "not empty"),
    ] {
        let out = Command::new(BIN)
            .arg("demo")
            .args(&args)
            .env("TMPDIR", &scratch)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(says) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
    // Nothing was made, and the kept directory's file is untouched.
    assert!(entries(&scratch).is_empty(), "{:?}", entries(&scratch));
    assert_eq!(entries(&full), vec!["precious".to_string()]);
}
