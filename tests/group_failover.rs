//! Consumer groups through `--node` across a failover, with real processes on 127.0.0.1:
//! three `stratalog serve` nodes, a keyed producer at `acks=all` through `produce --node ...
//! --topic` (routed by the topic's partitioner as the node reports it), consumers of one group
//! (`consume --node A,B,C --topic t --group g`) killed with SIGKILL at random moments, the
//! leader killed and a follower promoted between them, the old leader brought back.
//!
//! What must hold: every acknowledged record is printed by some consumer (nothing missed:
//! commits are made only after the records were written out, at least once), and the group's
//! commits replicate with the data: after the failover the group resumes from its commits on
//! the new leader instead of from the start. Seeded (`STRATALOG_CRASH_SEED`); every process is
//! killed when the test ends, also when it fails.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use cluster::{BIN, Proc, status};

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng, rngs::StdRng};

const TIMEOUT: Duration = Duration::from_secs(60);
const RECORDS: usize = 3000;
const PARTITIONS: u32 = 3;

fn serve(dir: &Path, id: &str, listen: &str, leader: Option<&str>, peers: &str) -> Proc {
    let extra = ["--peers", peers, "--replicas", "3", "--min-in-sync", "2"];
    cluster::serve(
        dir,
        id,
        listen,
        leader,
        &[&extra[..], &["--replica-lag-timeout", "1500"]].concat(),
    )
}

fn eventually(what: &str, cond: impl FnMut() -> bool) {
    cluster::eventually(what, TIMEOUT, cond)
}

/// Every follower of every partition in sync and caught up on the leader at `addr`.
fn all_in_sync(addr: &str) -> bool {
    status(addr).is_some_and(|s| {
        s["role"] == "leader"
            && s["partitions"].as_array().is_some_and(|ps| {
                ps.iter().all(|p| {
                    p["followers"].as_array().is_some_and(|f| {
                        f.iter()
                            .filter(|f| f["in_sync"] == true && f["lag"] == 0)
                            .count()
                            == 2
                    })
                })
            })
    })
}

/// Runs one consumer of group `g`; kills it after `kill_after` lines (`None`: lets it run to
/// the high watermark and exit). Returns the values it printed.
fn consume(nodes: &str, kill_after: Option<usize>) -> Vec<String> {
    let mut child = Proc(
        Command::new(BIN)
            .args(["consume", "--node", nodes, "--topic", "t", "--group", "g"])
            .args(["--commit-every", "25"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if kill_after.is_some_and(|k| printed.len() >= k) {
            // SIGKILL: no chance to commit what it printed since its last commit. What it had
            // written out before is still in the pipe: it was consumed (and may be committed).
            let _ = child.0.kill();
            printed.extend(rx.iter());
            break;
        }
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => printed.push(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("a consumer hung"),
        }
    }
    let status = child.0.wait().unwrap();
    reader.join().unwrap();
    if kill_after.is_none() {
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut err);
        assert!(status.success(), "consume failed: {err}");
    }
    printed
}

#[test]
fn a_group_killed_at_random_misses_nothing_across_a_failover() {
    let seed = std::env::var("STRATALOG_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6e0_u64);
    let mut rng = StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (0..3).map(|i| tmp.path().join(format!("n{i}"))).collect();
    for d in &dirs {
        let ok = Command::new(BIN)
            .args(["topics", "create", "--dir", d.to_str().unwrap(), "t"])
            .args(["--partitions", &PARTITIONS.to_string()])
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
    eventually("two followers in sync", || all_in_sync(&addrs[0]));

    // A keyed producer through the nodes: `acked <partition> <offset>` per batch.
    let mut producer = Proc(
        Command::new(BIN)
            .args([
                "produce",
                "--node",
                &peers,
                "--topic",
                "t",
                "--key-field",
                "1",
            ])
            .args(["--acks", "all", "--print-acks", "--batch", "50"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let values: Vec<String> = (0..RECORDS).map(|i| format!("k{},v{i}", i % 97)).collect();
    {
        let mut stdin = producer.0.stdin.take().unwrap();
        for v in &values {
            writeln!(stdin, "{v}").unwrap();
        }
    }
    let out = producer.0.wait_with_output_ref();
    assert!(out.0.success(), "produce failed: {}", out.2);
    let mut acked_per_partition: BTreeMap<u32, u64> = BTreeMap::new();
    for line in out.1.lines() {
        let mut f = line.split_whitespace();
        assert_eq!(f.next(), Some("acked"), "producer printed {line:?}");
        let p: u32 = f.next().unwrap().parse().unwrap();
        let o: u64 = f.next().unwrap().parse().unwrap();
        assert!(p < PARTITIONS);
        let e = acked_per_partition.entry(p).or_default();
        assert!(o >= *e, "acks of partition {p} went backwards");
        *e = o;
    }
    let acked_records: u64 = acked_per_partition.values().map(|o| o + 1).sum();
    assert_eq!(
        acked_records, RECORDS as u64,
        "every record acknowledged once"
    );
    assert!(
        acked_per_partition.len() > 1,
        "keys spread over several partitions"
    );

    // Where each value is: (partition, offset), read from the leader's logs (read-only).
    let place: BTreeMap<String, (u32, u64)> = (0..PARTITIONS)
        .flat_map(|p| {
            partition_values(&dirs[0], p)
                .into_iter()
                .map(move |(o, v)| (v, (p, o)))
        })
        .collect();
    assert_eq!(place.len(), RECORDS, "every record stored once");

    // Consumers of one group, killed at random, until about half was printed.
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut printed_total = 0usize;
    let mut kills = 0;
    while seen.len() < RECORDS / 2 {
        let lines = consume(&peers, Some(rng.random_range(10..300)));
        printed_total += lines.len();
        seen.extend(lines);
        kills += 1;
        assert!(kills < 200, "the consumers make no progress");
    }

    // SIGKILL the leader; the operator promotes a follower; the old leader comes back and
    // finds the new one through its peers.
    drop(nodes[0].take());
    let out = Command::new(BIN)
        .args(["promote", "--node", &addrs[1]])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promote: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    nodes[0] = Some(serve(&dirs[0], "n0", &addrs[0], None, &peers));

    // The group goes on from its replicated commits: the first consumer after the failover
    // does not start over.
    let first = consume(&peers, Some(1));
    assert!(
        !first.is_empty(),
        "the first consumer after the failover printed nothing"
    );
    printed_total += first.len();
    let first_value = &first[0];
    // A partition's records are consumed in order and committed at least every 25 records
    // and 50 more (one batch): the first record printed after the failover is no earlier
    // than that below the records of its partition printed before it. Had the commits been
    // lost, it would be the partition's first record.
    let (p, offset) = place[first_value];
    let printed_of_p = seen
        .iter()
        .filter(|v| *v != first_value && place[*v].0 == p)
        .count() as u64;
    seen.extend(first.iter().cloned());
    assert!(
        offset + 75 >= printed_of_p,
        "after the failover the group resumed partition {p} at {offset}, though {printed_of_p} \
         of its records were printed (and committed, at least every 25) before: the commits \
         did not replicate"
    );
    kills += 1;
    while {
        let lines = consume(&peers, Some(rng.random_range(10..300)));
        kills += 1;
        let n = lines.len();
        printed_total += n;
        seen.extend(lines);
        n > 0 && seen.len() < RECORDS
    } {}
    // The last consumer runs to the end.
    let rest = consume(&peers, None);
    printed_total += rest.len();
    seen.extend(rest);
    let missing: Vec<&String> = values.iter().filter(|v| !seen.contains(*v)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged records were never consumed, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    // At least once, and not much more: a killed consumer prints again at most what it
    // printed since its partition's last commit (under 25 records and one batch).
    let duplicates = printed_total - RECORDS;
    assert!(
        duplicates <= 75 * kills,
        "{duplicates} records printed again by {kills} killed consumers"
    );
    eprintln!(
        "group_failover: seed {seed:#x}, {RECORDS} records over {} partitions, {kills} consumers killed, {printed_total} printed ({duplicates} again)",
        acked_per_partition.len()
    );
}

/// (offset, value) of every record of partition `p` of topic t in the store in `dir`.
fn partition_values(dir: &Path, p: u32) -> Vec<(u64, String)> {
    let log = stratalog::Log::open(
        stratalog::store::partition_dir(dir, "t", p),
        stratalog::LogOptions {
            read_only: true,
            create: false,
            ..Default::default()
        },
    )
    .unwrap();
    let mut out = Vec::new();
    let mut next = log.start_offset();
    while next < log.end_offset() {
        for batch in log.read(next, 1 << 20).unwrap() {
            for r in batch.records().unwrap() {
                let r = r.unwrap();
                out.push((r.offset, String::from_utf8(r.value.to_vec()).unwrap()));
            }
            next = batch.last_offset() + 1;
        }
    }
    out
}

trait WaitRef {
    fn wait_with_output_ref(&mut self) -> (std::process::ExitStatus, String, String);
}

impl WaitRef for Child {
    /// Waits for the child and returns its status, standard output and standard error.
    fn wait_with_output_ref(&mut self) -> (std::process::ExitStatus, String, String) {
        let (mut out, mut err) = (String::new(), String::new());
        if let Some(mut s) = self.stdout.take() {
            std::io::Read::read_to_string(&mut s, &mut out).unwrap();
        }
        if let Some(mut s) = self.stderr.take() {
            std::io::Read::read_to_string(&mut s, &mut err).unwrap();
        }
        (self.wait().unwrap(), out, err)
    }
}

/// A commit through a node is answered `NotEnoughReplicas` while too few replicas are in sync
/// (here the only follower is down, `--min-in-sync 2`). The consumer waits that out (up to its
/// failover wait) instead of failing: it commits once the follower is back. Before, `consume
/// --group` exited 1 at the first refusal.
#[test]
fn a_commit_refused_while_a_follower_is_down_is_made_once_it_is_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (0..2).map(|i| tmp.path().join(format!("n{i}"))).collect();
    cluster::create_topic(&dirs);
    let addrs = common::free_addrs(2);
    let extra = ["--replicas", "2", "--min-in-sync", "2"];
    let lag = ["--replica-lag-timeout", "500"];
    let extra: Vec<&str> = [&extra[..], &lag[..]].concat();
    let _leader = cluster::serve(&dirs[0], "n0", &addrs[0], None, &extra);
    let follower = cluster::serve(&dirs[1], "n1", &addrs[1], Some(&addrs[0]), &extra);
    eventually("the follower in sync", || {
        status(&addrs[0])
            .as_ref()
            .and_then(|s| cluster::follower_state(s, "n1"))
            .is_some_and(|(in_sync, _)| in_sync)
    });
    let mut produce = Command::new(BIN)
        .args([
            "produce", "--node", &addrs[0], "--log", "t/0", "--acks", "all",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    produce
        .stdin
        .take()
        .unwrap()
        .write_all(b"a\nb\nc\n")
        .unwrap();
    assert!(produce.wait().unwrap().success());
    drop(follower);
    // Past the lag timeout: the leader counts the follower out at the next acknowledgement.
    std::thread::sleep(Duration::from_millis(1000));
    let mut consumer = Proc(
        Command::new(BIN)
            .args([
                "consume", "--node", &addrs[0], "--log", "t/0", "--group", "g",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(1500));
    let _follower = cluster::serve(&dirs[1], "n1", &addrs[1], Some(&addrs[0]), &extra);
    let (mut stdout, mut stderr) = (String::new(), String::new());
    consumer
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    consumer
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        consumer.0.wait().unwrap().success(),
        "consume failed: {stderr}"
    );
    assert_eq!(stdout, "a\nb\nc\n");
}
