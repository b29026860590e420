//! Crash points: `stratalog produce --fsync always --print-acks` runs with one named crash
//! point armed (`STRATALOG_CRASH_POINT=NAME:N`, see `src/crash.rs`) and aborts the N-th time it
//! gets there: after the write, before and after the fsync, during the index update, in the
//! segment roll, around the directory fsync, in retention's delete and in truncation. After
//! each abort `stratalog verify` must pass, `stratalog consume` (read-only) must show every
//! acknowledged record and only records that were sent, in order, and after `stratalog recover`
//! a second `verify` must pass without notes.
//!
//! The crash points exist only in test builds: this test's build of the binary has them
//! through the dev-dependency on the crate with the `crash-points` feature.
//! `STRATALOG_CRASH_POINT_RUNS` (default 30) sets the runs per point and
//! `STRATALOG_CRASH_SEED` the seed of the hit counts and batch sizes.
#![cfg(feature = "cli")]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BIN: &str = env!("CARGO_BIN_EXE_stratalog");

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn stratalog(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run stratalog")
}

/// What the producer printed, in order.
enum Event {
    Acked(u64),
    Truncated(u64),
}

struct Run {
    sent: u64,
    events: Vec<Event>,
    stderr: String,
    signal: Option<i32>,
}

fn run_until_crash(dir: &Path, point: &str, hit: u64, batch: u32, extra: &[&str]) -> Run {
    let mut child = Command::new(BIN)
        .args(["produce", "--dir", dir.to_str().unwrap()])
        .args([
            "--fsync",
            "always",
            "--print-acks",
            "--segment-bytes",
            "4096",
        ])
        .args(["--batch", &batch.to_string()])
        .args(extra)
        .env("STRATALOG_CRASH_POINT", format!("{point}:{hit}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stratalog produce");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if stdin.write_all(format!("l{sent}\n").as_bytes()).is_err() {
                    break;
                }
                sent += 1;
                if sent.is_multiple_of(16) {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            sent
        })
    };
    let reader = std::thread::spawn(move || {
        let mut events = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(n) = line.strip_prefix("acked ") {
                events.push(Event::Acked(n.parse().unwrap()));
            } else if let Some(n) = line.strip_prefix("truncated ") {
                events.push(Event::Truncated(n.parse().unwrap()));
            } else {
                panic!("unexpected producer output {line:?}");
            }
        }
        events
    });
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    stop.store(true, Ordering::Relaxed);
    Run {
        sent: writer.join().unwrap(),
        events: reader.join().unwrap(),
        stderr: errors.join().unwrap(),
        signal: status.signal(),
    }
}

#[test]
fn every_crash_point_many_times() {
    let seed = env_or("STRATALOG_CRASH_SEED", 0xc0ffee_u64);
    let runs = env_or("STRATALOG_CRASH_POINT_RUNS", 30usize);
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let (mut crashes, mut acked_total, mut records_total, mut truncations) = (0, 0u64, 0u64, 0);
    let mut notes = 0;
    for &point in stratalog::crash::POINTS {
        for run in 0..runs {
            let tmp = tempfile::tempdir().unwrap();
            let d = tmp.path().to_str().unwrap();
            let hit = rng.random_range(1..=12u64);
            let batch = rng.random_range(1..=12u32);
            // Retention and truncation only run when asked; the other points run in the plain
            // producer (acks from its acker thread, concurrent with appends).
            let extra: &[&str] = if point.starts_with("retention") {
                &["--retention-bytes", "8192"]
            } else if point.starts_with("truncate") {
                &["--truncate-every", "3"]
            } else {
                &[]
            };
            let context =
                format!("point {point} hit {hit}, run {run}, batch {batch} (seed {seed:#x})");
            let r = run_until_crash(tmp.path(), point, hit, batch, extra);
            assert!(
                r.stderr.contains(&format!("crash point {point} hit {hit}")),
                "{context}: the point was not reached (status signal {:?}):\n{}",
                r.signal,
                r.stderr
            );
            assert_eq!(
                r.signal,
                Some(libc_sigabrt()),
                "{context}: not aborted\n{}",
                r.stderr
            );
            crashes += 1;

            // Acknowledged offsets, minus what a truncation took back.
            let mut must_reach = 0u64;
            let mut before_last_ack = 0u64;
            for e in &r.events {
                match *e {
                    Event::Acked(last) => {
                        before_last_ack = must_reach;
                        must_reach = must_reach.max(last + 1);
                    }
                    Event::Truncated(to) => {
                        must_reach = to;
                        truncations += 1;
                    }
                }
            }
            // A crash inside a truncation may have removed the batch being truncated (acked
            // last) or not: both are the log before or after the truncation it was asked for.
            if point.starts_with("truncate") && matches!(r.events.last(), Some(Event::Acked(_))) {
                must_reach = before_last_ack;
            }
            let out = stratalog(&["verify", "--dir", d, "--log", "default"]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(out.status.success(), "{context}: verify failed:\n{text}");
            notes += text.lines().filter(|l| l.starts_with("note:")).count();

            let out = stratalog(&["consume", "--dir", d, "--format", "text"]);
            assert!(
                out.status.success(),
                "{context}: consume failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8(out.stdout).unwrap();
            let numbers: Vec<u64> = text
                .lines()
                .map(|l| {
                    l.strip_prefix('l')
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_else(|| panic!("{context}: record {l:?} was never sent"))
                })
                .collect();
            for pair in numbers.windows(2) {
                let contiguous = pair[1] == pair[0] + 1;
                // Truncation removes whole batches: holes, but never reordering.
                assert!(
                    contiguous || (extra.first() == Some(&"--truncate-every") && pair[1] > pair[0]),
                    "{context}: record l{} follows l{}",
                    pair[1],
                    pair[0]
                );
            }
            if extra.is_empty() {
                assert!(
                    numbers.first().is_none_or(|&n| n == 0),
                    "{context}: the log does not start at l0"
                );
            }
            assert!(
                numbers.iter().all(|&n| n < r.sent),
                "{context}: a record beyond what was sent"
            );
            // consume only reads; recovery is what the next writer (or `recover`) does.
            let out = stratalog(&["recover", "--dir", d, "--log", "default"]);
            assert!(
                out.status.success(),
                "{context}: recover failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let out = stratalog(&["verify", "--dir", d, "--log", "default"]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(
                out.status.success(),
                "{context}: verify after recovery failed:\n{text}"
            );
            assert!(
                !text.contains("note:"),
                "{context}: recovery left something to repair:\n{text}"
            );
            let end: u64 = text
                .lines()
                .find_map(|l| l.split("end offset ").nth(1))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("{context}: no end offset in:\n{text}"));
            assert!(
                end >= must_reach,
                "{context}: acknowledged records lost: the log ends at {end}, acks reach {must_reach}"
            );
            acked_total += must_reach;
            records_total += numbers.len() as u64;
        }
    }
    eprintln!(
        "crash_points: {} points x {runs} runs = {crashes} aborts at the armed point (seed {seed:#x}); \
         {acked_total} acknowledged offsets all present after recovery, {records_total} records \
         read back in order, {truncations} truncations seen, {notes} verify notes before recovery \
         and none after, {:.1} s",
        stratalog::crash::POINTS.len(),
        started.elapsed().as_secs_f64()
    );
}

/// SIGABRT, which `std::process::abort` raises.
fn libc_sigabrt() -> i32 {
    6
}
