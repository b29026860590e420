//! A real crash test: `stratalog produce --fsync always` is killed with SIGKILL while it appends,
//! again and again in the same log. After every kill the log must verify clean (a torn tail
//! after the last fsync is a note, not a problem) and hold, in order and without gaps, every
//! record acknowledged by any producer so far, followed by nothing that was never sent.
//!
//! A SIGKILL keeps the page cache, so this checks the process-crash path (recovery, torn
//! writes cut mid-batch, acks only after fsync), not power loss: `SimStorage` tests cover that.
//!
//! `STRATALOG_CRASH_SEED` and `STRATALOG_CRASH_ITERATIONS` override the fixed seed and the
//! number of iterations; `STRATALOG_CRASH_DIR` names a directory to keep the log in.
#![cfg(feature = "cli")]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BIN: &str = env!("CARGO_BIN_EXE_stratalog");
const DEFAULT_SEED: u64 = 0x5eed_c0de_2024;
const DEFAULT_ITERATIONS: usize = 50;

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

fn describe(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// What one producer run did before it was killed.
struct Run {
    /// Lines written whole to its stdin.
    sent: u64,
    /// The largest offset it acknowledged, if any.
    max_acked: Option<u64>,
    killed: bool,
}

/// Starts a producer, feeds it `it<iteration>-<n>` lines (pausing 1 ms after every `burst`
/// lines, so the log grows at a pace the checks after each kill can keep up with), and kills
/// it after `delay`.
fn produce_and_kill(dir: &Path, iteration: usize, batch: u32, burst: u64, delay: Duration) -> Run {
    let mut child = Command::new(BIN)
        .args([
            "produce",
            "--dir",
            dir.to_str().unwrap(),
            "--fsync",
            "always",
            "--print-acks",
            "--batch",
            &batch.to_string(),
            "--segment-bytes",
            "65536",
            // Every other run writes through io_uring: both write paths must survive a kill.
            "--io",
            if iteration.is_multiple_of(2) {
                "std"
            } else {
                "uring"
            },
        ])
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
            // One write per line, so that the producer sees a stream of small arrivals.
            while !stop.load(Ordering::Relaxed) {
                let line = format!("it{iteration}-{sent}\n");
                if stdin.write_all(line.as_bytes()).is_err() {
                    break; // the producer is dead
                }
                sent += 1;
                if sent.is_multiple_of(burst) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            sent
        })
    };
    let reader = std::thread::spawn(move || {
        let mut max_acked: Option<u64> = None;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let offset: u64 = line
                .strip_prefix("acked ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected producer output {line:?}"));
            assert!(
                max_acked.is_none_or(|m| offset > m),
                "acks out of order: {offset} after {max_acked:?}"
            );
            max_acked = Some(offset);
        }
        max_acked
    });
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    std::thread::sleep(delay);
    let still_running = child.try_wait().expect("try_wait").is_none();
    if still_running {
        child.kill().expect("kill the producer");
    }
    let status = child.wait().expect("wait for the producer");
    stop.store(true, Ordering::Relaxed);
    let sent = writer.join().unwrap();
    let max_acked = reader.join().unwrap();
    let stderr = errors.join().unwrap();
    assert!(
        still_running,
        "the producer exited by itself ({status}) before the kill:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "producer panicked:\n{stderr}");
    Run {
        sent,
        max_acked,
        killed: still_running,
    }
}

#[test]
fn kill_producer_repeatedly_and_check_every_ack_survives() {
    let seed = env_or("STRATALOG_CRASH_SEED", DEFAULT_SEED);
    let iterations = env_or("STRATALOG_CRASH_ITERATIONS", DEFAULT_ITERATIONS);
    eprintln!(
        "crash_kill: seed {seed:#x} (set STRATALOG_CRASH_SEED to replay), {iterations} iterations"
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    // To look at the log after a failure, give a directory of your own (it must not exist).
    let kept = std::env::var_os("STRATALOG_CRASH_DIR").map(std::path::PathBuf::from);
    let dir = kept.as_deref().unwrap_or(tmp.path());
    let d = dir.to_str().unwrap();
    let started = Instant::now();

    // Everything the log held after the previous crash: it must stay, unchanged, in front.
    let mut survived: Vec<String> = Vec::new();
    let (mut kills, mut total_acked, mut total_sent, mut not_appended, mut notes) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut beyond_acks = 0u64;
    for iteration in 0..iterations {
        let batch = rng.random_range(1..=20u32);
        let delay = Duration::from_millis(rng.random_range(5..=150));
        let burst = rng.random_range(4..=40u64);
        let base = survived.len() as u64;
        let run = produce_and_kill(dir, iteration, batch, burst, delay);
        kills += u64::from(run.killed);
        total_sent += run.sent;
        let context = format!(
            "iteration {iteration} (seed {seed:#x}, batch {batch}, burst {burst}, delay {delay:?}, base offset {base}, sent {}, max acked {:?})",
            run.sent, run.max_acked
        );

        // A killed producer leaves at most a torn tail after its last fsync: verify passes.
        // (It may have been killed before it even created the log.)
        if dir.join("default").join("log.meta").exists() {
            let out = run_verify(d);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "verify failed after {context}:\n{}",
                describe(&out)
            );
            notes += stdout.lines().filter(|l| l.starts_with("note:")).count() as u64;
        } else {
            assert!(survived.is_empty() && run.max_acked.is_none(), "{context}");
            continue;
        }

        let out = stratalog(&["consume", "--dir", d, "--format", "text"]);
        assert!(
            out.status.success(),
            "consume failed after {context}:\n{}",
            describe(&out)
        );
        let text = String::from_utf8(out.stdout).expect("utf-8 records");
        let records: Vec<&str> = text.lines().collect();
        assert!(
            records.len() >= survived.len(),
            "the log shrank below what survived the previous crash: {} < {} after {context}",
            records.len(),
            survived.len()
        );
        if let Some(i) = (0..survived.len()).find(|&i| records[i] != survived[i]) {
            panic!(
                "record {i} changed from {:?} to {:?} after {context}",
                survived[i], records[i]
            );
        }
        let new = &records[survived.len()..];
        for (n, record) in new.iter().enumerate() {
            assert_eq!(
                *record,
                format!("it{iteration}-{n}"),
                "record at offset {} is not the next one sent, after {context}",
                base + n as u64
            );
        }
        assert!(
            new.len() as u64 <= run.sent,
            "{} records appended but only {} sent, after {context}",
            new.len(),
            run.sent
        );
        let acked = run.max_acked.map_or(0, |m| {
            assert!(
                m >= base,
                "acked offset {m} below the base {base}: {context}"
            );
            m + 1 - base
        });
        assert!(
            new.len() as u64 >= acked,
            "acknowledged records lost: {acked} acked, {} in the log, after {context}",
            new.len()
        );
        total_acked += acked;
        beyond_acks += new.len() as u64 - acked;
        not_appended += run.sent - new.len() as u64;
        survived = records.iter().map(|s| s.to_string()).collect();
    }

    let segments = std::fs::read_dir(dir.join("default"))
        .map(|entries| {
            entries
                .filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "log"))
                })
                .count()
        })
        .unwrap_or(0);
    eprintln!(
        "crash_kill: {iterations} iterations, {kills} kills, {total_acked} records acknowledged \
         and all present, {} records in the log over {segments} segments ({beyond_acks} of them \
         written but not yet acknowledged at the kill), {total_sent} lines sent \
         ({not_appended} never appended), {notes} verify notes, {:.1} s",
        survived.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(kills as usize, iterations);
    assert!(total_acked > 0, "no record was ever acknowledged");
}

fn run_verify(d: &str) -> Output {
    stratalog(&["verify", "--dir", d])
}
