//! A real consumer crash test: `stratalog consume --topic T --group G` is killed with SIGKILL at
//! random moments and restarted, again and again, on a store topic of 3 partitions. The union
//! of what the runs printed must cover every record, in order per partition, with no gap: each
//! run starts each partition at or before the point the previous runs reached (records may be
//! printed again, never skipped), and prints a partition's records consecutively.
//!
//! `STRATALOG_CRASH_SEED` and `STRATALOG_CONSUMER_KILLS` override the fixed seed and the number
//! of kills.
#![cfg(feature = "cli")]

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BIN: &str = env!("CARGO_BIN_EXE_stratalog");
const DEFAULT_SEED: u64 = 0xc0_45_0e_a7;
const DEFAULT_KILLS: usize = 25;
const PARTITIONS: u32 = 3;
const RECORDS: u64 = 4000;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn stratalog(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run stratalog");
    if let Some(input) = stdin {
        use std::io::Write;
        let mut s = child.stdin.take().unwrap();
        s.write_all(input).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "stratalog {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs the consumer; kills it after `delay` if still running. Returns the complete lines it
/// printed and whether it was killed.
fn consume_and_kill(d: &str, commit_every: u64, delay: Option<Duration>) -> (Vec<String>, bool) {
    let mut child = Command::new(BIN)
        .args([
            "consume",
            "--dir",
            d,
            "--topic",
            "t",
            "--group",
            "g",
            "--commit-every",
            &commit_every.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn consume");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    // The kill's delay counts from the consumer's first output, so that it lands while records
    // are printed, however long the store takes to open on a busy machine.
    let (first_output, printing) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 64 << 10];
        loop {
            match stdout.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if bytes.is_empty() {
                        let _ = first_output.send(());
                    }
                    bytes.extend_from_slice(&chunk[..n]);
                }
            }
        }
        bytes
    });
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut killed = false;
    if let Some(delay) = delay {
        // No output within the bound: the consumer ended (nothing new) or is stuck, which the
        // status and the lines below tell apart.
        let _ = printing.recv_timeout(Duration::from_secs(30));
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            child.kill().expect("SIGKILL the consumer");
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    let bytes = reader.join().unwrap();
    let stderr = errors.join().unwrap();
    assert!(
        killed || status.success(),
        "consume failed ({status}): {stderr}"
    );
    assert!(!stderr.contains("panicked"), "consumer panicked: {stderr}");
    let text = String::from_utf8(bytes).unwrap();
    // A line cut by the kill (no newline) was not fully printed: drop it.
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    (complete.lines().map(String::from).collect(), killed)
}

#[test]
fn kill_consumer_repeatedly_and_check_nothing_is_skipped() {
    let seed = env_or("STRATALOG_CRASH_SEED", DEFAULT_SEED);
    let kills_wanted = env_or("STRATALOG_CONSUMER_KILLS", DEFAULT_KILLS);
    let mut rng = StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    let started = Instant::now();
    stratalog(
        &[
            "topics",
            "create",
            "--dir",
            d,
            "t",
            "--partitions",
            "3",
            "--segment-bytes",
            "8192",
        ],
        None,
    );
    // Records `from..to` of every partition, as lines `<partition>:<index>`.
    let produce = |from: u64, to: u64| {
        for p in 0..PARTITIONS {
            let input: String = (from..to).map(|i| format!("{p}:{i}\n")).collect();
            stratalog(
                &[
                    "produce",
                    "--dir",
                    d,
                    "--log",
                    &format!("t/{p}"),
                    "--batch",
                    "7",
                ],
                Some(input.as_bytes()),
            );
        }
    };
    produce(0, RECORDS);
    let mut produced = RECORDS;

    // For each partition, the next record index not yet printed by any run.
    let mut reached: BTreeMap<u32, u64> = (0..PARTITIONS).map(|p| (p, 0)).collect();
    let (mut kills, mut runs, mut printed, mut redelivered) = (0usize, 0usize, 0u64, 0u64);
    let mut mid_stream = 0usize;
    let mut done = false;
    while !done {
        runs += 1;
        assert!(
            runs < kills_wanted * 10 + 10,
            "the consumer makes no progress"
        );
        let commit_every = rng.random_range(1..=200u64);
        let delay = (kills < kills_wanted).then(|| Duration::from_millis(rng.random_range(0..=60)));
        let (lines, killed) = consume_and_kill(d, commit_every, delay);
        kills += usize::from(killed);
        if killed && !lines.is_empty() {
            mid_stream += 1;
        }
        let context =
            format!("run {runs} (seed {seed:#x}, commit every {commit_every}, delay {delay:?})");
        // Within a run: per partition, consecutive indices, starting at or before `reached`.
        let mut last: BTreeMap<u32, u64> = BTreeMap::new();
        for line in &lines {
            let (p, i) = line
                .split_once(':')
                .map(|(p, i)| (p.parse::<u32>().unwrap(), i.parse::<u64>().unwrap()))
                .unwrap_or_else(|| panic!("unexpected output {line:?} in {context}"));
            match last.get(&p) {
                Some(&prev) => assert_eq!(i, prev + 1, "{p}:{i} after {p}:{prev} in {context}"),
                None => assert!(
                    i <= reached[&p],
                    "partition {p} resumed at {i}, but only records below {} were ever printed: a gap, in {context}",
                    reached[&p]
                ),
            }
            last.insert(p, i);
            printed += 1;
            if i < reached[&p] {
                redelivered += 1;
            }
            let r = reached.get_mut(&p).unwrap();
            *r = (*r).max(i + 1);
        }
        if !killed {
            assert!(
                reached.values().all(|&r| r == produced),
                "a run that was not killed ended before the end: {reached:?} of {produced}, {context}"
            );
            if kills < kills_wanted {
                // The consumer got to the end before the kill: give it more to read.
                produce(produced, produced + RECORDS / 4);
                produced += RECORDS / 4;
            } else {
                done = true;
            }
        }
    }
    let complete = reached.values().all(|&r| r == produced);
    eprintln!(
        "consumer_crash: seed {seed:#x}, {kills} SIGKILLs ({mid_stream} after the run had printed records) over {runs} runs, {} records in 3 partitions, \
         {printed} lines printed ({redelivered} printed again after a kill, none skipped), reached {reached:?}, {:.1} s",
        produced * u64::from(PARTITIONS),
        started.elapsed().as_secs_f64()
    );
    assert!(complete, "not every record was printed: {reached:?}");
    assert_eq!(kills, kills_wanted);
    // Redeliveries are rare here: a SIGKILL keeps the page cache, so a commit whose record was
    // written survives even if its fsync had not finished; only a kill between the flush of
    // stdout and that write makes records print twice.
    assert!(
        mid_stream * 3 >= kills,
        "too few kills landed while records were printed: {mid_stream} of {kills}"
    );
    let out = stratalog(&["groups", "describe", "--dir", d, "g"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    for p in 0..PARTITIONS {
        assert!(
            text.contains(&format!("g t {p} {produced} {produced} 0 0")),
            "group not fully committed:\n{text}"
        );
    }
}
