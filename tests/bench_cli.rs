//! `stratalog bench` end to end, on a tiny time budget: it runs every step, writes the JSON and
//! the SVG it promises, prints the table, and removes its scratch files. (No timing is checked:
//! the figures of a two-second run on a shared machine mean nothing.)
#![cfg(feature = "cli")]

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn bench_runs_every_step_and_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("scratch");
    let json = tmp.path().join("figures.json");
    let svg = tmp.path().join("plot.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_stratalog"))
        .args(["bench", "--seconds", "2", "--compare-io", "--dir"])
        .arg(&scratch)
        .arg("--json")
        .arg(&json)
        .arg("--svg")
        .arg(&svg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed:\n{stdout}\n{stderr}");
    for row in [
        "memory copy",
        "one fsync per append",
        "64 durable writers, 1 KiB",
        "random read by offset p50",
        "reopen after crash",
        "[io_uring] 64 durable writers",
        // The README and --help promise p99.9.
        "1 writers p99.9 latency",
        "64 writers p99.9 latency",
        "produce --count (100 B records, default batch 1310), fsync never",
        "produce --count (1 KiB records, default batch 128), fsync never",
        "plain write of its values only",
        "plain write of the same bytes (the log's batches)",
        "ratio to baseline",
    ] {
        assert!(stdout.contains(row), "no {row:?} row in:\n{stdout}");
    }

    let figures: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = figures["rows"].as_array().unwrap();
    assert!(rows.len() >= 20, "{} rows", rows.len());
    for row in rows {
        let value = row["value"].as_f64().unwrap();
        assert!(value.is_finite() && value >= 0.0, "bad figure {row}");
    }
    let writers: Vec<u64> = figures["writers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["writers"].as_u64().unwrap())
        .collect();
    assert_eq!(writers, [1, 4, 16, 64]);

    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.contains("durable 1 KiB appends/s"));

    let left: Vec<_> = std::fs::read_dir(&scratch).unwrap().collect();
    assert!(left.is_empty(), "scratch files left behind: {left:?}");
}

/// `--seconds 99999999999999999999` used to be accepted and run without end.
#[test]
fn bench_refuses_a_bad_budget() {
    let tmp = tempfile::tempdir().unwrap();
    for seconds in ["0", "-1", "NaN", "inf", "99999999999999999999", "86401"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_stratalog"))
            .args(["bench", &format!("--seconds={seconds}"), "--dir"])
            .arg(tmp.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Refused at once; a bench that starts would run until the deadline: stop it there.
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > Duration::from_secs(30) {
                child.kill().unwrap();
                child.wait().unwrap();
                panic!("--seconds {seconds} was accepted: bench is still running after 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(1), "--seconds {seconds}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--seconds"),
            "--seconds {seconds}"
        );
    }
    let left: Vec<_> = fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "scratch files left behind: {left:?}");
}

/// Ctrl-C used to leave the scratch directory (up to hundreds of MB) behind. On SIGINT and
/// SIGTERM bench removes it and exits 130.
#[test]
fn bench_removes_its_scratch_directory_when_interrupted() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let tmp = tempfile::tempdir().unwrap();
        let scratch = tmp.path().join("scratch");
        let svg = tmp.path().join("plot.svg");
        let child = Command::new(env!("CARGO_BIN_EXE_stratalog"))
            .args(["bench", "--seconds", "200", "--dir"])
            .arg(&scratch)
            .arg("--svg")
            .arg(&svg)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until a step wrote files into its scratch directory.
        let started = Instant::now();
        loop {
            let written = fs::read_dir(&scratch)
                .ok()
                .and_then(|mut d| d.next())
                .and_then(|e| fs::read_dir(e.ok()?.path()).ok()?.next());
            if written.is_some() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no scratch files after a minute"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        let pid = i32::try_from(child.id()).unwrap();
        // SAFETY: sends a signal to our own child process, which has not been waited for.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "signal {signal}: {stderr}");
        assert!(stderr.contains("removed the scratch directory"), "{stderr}");
        let left: Vec<_> = fs::read_dir(&scratch).unwrap().collect();
        assert!(left.is_empty(), "signal {signal}: left behind {left:?}");
        assert!(!svg.exists());
    }
}
