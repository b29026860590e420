//! Operator failover with real processes on 127.0.0.1: three `stratalog serve` nodes, a
//! producer at `acks=all` through `produce --node`, the leader killed with SIGKILL at a random
//! moment, the most advanced follower promoted (as an operator reading `status` would), the old
//! leader restarted with no `--leader` (it finds the new one through `--peers`). After every
//! round: every acknowledged record is on every replica, and the replicas are byte-identical
//! up to the high watermark (so no offset names two records). Seeded
//! (`STRATALOG_CRASH_SEED`), `STRATALOG_FAILOVER_ROUNDS` rounds (default 20). Every process is
//! killed when the test ends, also when it fails.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng, rngs::StdRng};
use stratalog::{Log, LogOptions};

const BIN: &str = env!("CARGO_BIN_EXE_stratalog");
const TIMEOUT: Duration = Duration::from_secs(60);

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn serve(dir: &Path, id: &str, listen: &str, leader: Option<&str>, peers: &str) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "serve",
        "--dir",
        dir.to_str().unwrap(),
        "--node-id",
        id,
        "--listen",
        listen,
    ])
    .args(["--peers", peers, "--replicas", "3", "--min-in-sync", "2"])
    .args(["--replica-lag-timeout", "1500"])
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if let Some(l) = leader {
        cmd.args(["--leader", l]);
    }
    let mut child = cmd.spawn().expect("spawn serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on "), "serve printed {line:?}");
    Proc(child)
}

fn status(addr: &str) -> Option<serde_json::Value> {
    let out = Command::new(BIN)
        .args(["status", "--node", addr, "--json"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < TIMEOUT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every record value of partition t/0 in `dir`, read-only (the node keeps running), up to
/// `upto`, with the bytes of its batches.
fn read_log(dir: &Path, upto: u64) -> (Vec<Vec<u8>>, Vec<u8>) {
    let log = Log::open(
        stratalog::store::partition_dir(dir, "t", 0),
        LogOptions {
            read_only: true,
            create: false,
            ..Default::default()
        },
    )
    .unwrap();
    let (mut values, mut bytes) = (Vec::new(), Vec::new());
    let mut next = log.start_offset();
    while next < upto.min(log.end_offset()) {
        for batch in log.read(next, 1 << 20).unwrap() {
            if batch.last_offset() >= upto {
                return (values, bytes);
            }
            bytes.extend_from_slice(batch.as_bytes());
            for r in batch.records().unwrap() {
                values.push(r.unwrap().value.to_vec());
            }
            next = batch.last_offset() + 1;
        }
    }
    (values, bytes)
}

#[test]
fn sigkill_the_leader_promote_rejoin_rounds() {
    let seed = env_or("STRATALOG_CRASH_SEED", 0xfa11_0f3e);
    let rounds = env_or("STRATALOG_FAILOVER_ROUNDS", 20);
    let mut rng = StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (0..3).map(|i| tmp.path().join(format!("n{i}"))).collect();
    for d in &dirs {
        let ok = Command::new(BIN)
            .args(["topics", "create", "--dir", d.to_str().unwrap(), "t"])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
    let addrs = common::free_addrs(3);
    let peers = addrs.join(",");
    let mut nodes: Vec<Option<Proc>> = (0..3)
        .map(|i| {
            let leader = (i != 0).then(|| addrs[0].as_str());
            Some(serve(&dirs[i], &format!("n{i}"), &addrs[i], leader, &peers))
        })
        .collect();
    let mut leader = 0usize;
    let mut acked: BTreeSet<Vec<u8>> = BTreeSet::new();
    let (mut sent_total, mut promoted_epochs) = (0u64, Vec::new());
    let started = Instant::now();
    for round in 0..rounds {
        let context = format!("round {round} (seed {seed:#x})");
        eventually(&format!("two followers in sync, {context}"), || {
            status(&addrs[leader]).is_some_and(|s| {
                s["role"] == "leader"
                    && s["partitions"][0]["followers"]
                        .as_array()
                        .is_some_and(|f| f.iter().filter(|f| f["in_sync"] == true).count() == 2)
            })
        });
        // A producer at acks=all, fed lines until the leader dies under it.
        let mut producer = Proc(
            Command::new(BIN)
                .args([
                    "produce",
                    "--node",
                    &addrs[leader],
                    "--log",
                    "t/0",
                    "--acks",
                    "all",
                ])
                .args(["--print-acks", "--batch", "5"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let mut stdin = producer.0.stdin.take().unwrap();
        let stdout = producer.0.stdout.take().unwrap();
        let (tx, acks) = mpsc::channel::<u64>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(o) = line.strip_prefix("acked ").and_then(|o| o.parse().ok()) {
                    let _ = tx.send(o);
                }
            }
        });
        let kill_after = Duration::from_millis(rng.random_range(50..=400));
        let t0 = Instant::now();
        let mut sent: Vec<Vec<u8>> = Vec::new();
        while t0.elapsed() < kill_after {
            let value = format!("r{round}-{}", sent.len()).into_bytes();
            if stdin
                .write_all(&value)
                .and_then(|()| stdin.write_all(b"\n"))
                .is_err()
            {
                break;
            }
            sent.push(value);
            std::thread::sleep(Duration::from_millis(2));
        }
        // SIGKILL the leader mid-stream.
        drop(nodes[leader].take());
        drop(stdin);
        let _ = producer.0.wait();
        reader.join().unwrap();
        let last_acked = acks.try_iter().max();
        sent_total += sent.len() as u64;
        // The operator promotes the follower that has the most (it is in sync).
        let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
        let ends: Vec<u64> = followers
            .iter()
            .map(|&i| {
                status(&addrs[i]).map_or(0, |s| s["partitions"][0]["log_end"].as_u64().unwrap_or(0))
            })
            .collect();
        let new_leader = if ends[0] >= ends[1] {
            followers[0]
        } else {
            followers[1]
        };
        let out = Command::new(BIN)
            .args(["promote", "--node", &addrs[new_leader]])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{context}: promote failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        promoted_epochs.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
        // The old leader comes back with no --leader; it must find and follow the new one.
        nodes[leader] = Some(serve(
            &dirs[leader],
            &format!("n{leader}"),
            &addrs[leader],
            None,
            &peers,
        ));
        leader = new_leader;
        // Every record acknowledged in this round is on the new leader, at the offsets it was
        // acknowledged at: this producer's records are dense from its first one (offset `f`,
        // found as the position of its first value), so `acked X` covers sent[..=X - f].
        if let Some(last) = last_acked {
            let (values, _) = read_log(&dirs[leader], u64::MAX);
            let f = values
                .iter()
                .position(|v| v == &sent[0])
                .unwrap_or_else(|| {
                    panic!("{context}: acknowledged records missing on the new leader")
                });
            assert!(
                last as usize >= f,
                "{context}: ack {last} below the first record {f}"
            );
            for offset in f..=last as usize {
                assert_eq!(
                    values.get(offset),
                    Some(&sent[offset - f]),
                    "{context}: acknowledged offset {offset}"
                );
                acked.insert(sent[offset - f].clone());
            }
            // And they become committed there once the followers caught up.
            eventually(
                &format!("the new leader's high watermark past {last}, {context}"),
                || {
                    status(&addrs[leader]).is_some_and(|s| {
                        s["partitions"][0]["high_watermark"].as_u64().unwrap_or(0) > last
                    })
                },
            );
        }
    }
    // The end: all three in sync and byte-identical up to the leader's high watermark, and
    // every record acknowledged in any round is there.
    eventually("all in sync at the end", || {
        status(&addrs[leader]).is_some_and(|s| {
            s["partitions"][0]["followers"].as_array().is_some_and(|f| {
                f.iter()
                    .filter(|f| f["in_sync"] == true && f["lag"] == 0)
                    .count()
                    == 2
            })
        })
    });
    let hw = status(&addrs[leader]).unwrap()["partitions"][0]["high_watermark"]
        .as_u64()
        .unwrap();
    let (values, bytes) = read_log(&dirs[leader], hw);
    for d in &dirs {
        let (_, other) = read_log(d, hw);
        assert_eq!(
            other,
            bytes,
            "replica {} differs below the high watermark",
            d.display()
        );
    }
    let all: BTreeSet<&Vec<u8>> = values.iter().collect();
    for v in &acked {
        assert!(
            all.contains(v),
            "an acknowledged record is missing: {}",
            String::from_utf8_lossy(v)
        );
    }
    eprintln!(
        "failover_kill: seed {seed:#x}, {rounds} rounds of SIGKILL + promote + rejoin, {sent_total} records sent, {} on every replica up to the high watermark {hw}, epochs {:?}, {:.1} s",
        values.len(),
        promoted_epochs.last(),
        started.elapsed().as_secs_f64()
    );
}
