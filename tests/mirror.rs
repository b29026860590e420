//! A mirror in another "data centre", with real processes on 127.0.0.1: a source cluster of two
//! `serve` nodes under a producer at `acks=all`, a `stratalog mirror` of it killed (SIGKILL) and
//! restarted at random moments, the source failing over twice (leader SIGKILLed, the follower
//! promoted, the old leader restarted). What must hold:
//! - the mirror's log is a prefix of the source's at the same offsets, byte for byte, and at
//!   the end it has everything the source had (no gap, no duplicate batch after its crashes);
//! - its lag is in `status`;
//! - it copies only the topics `--topics` matches;
//! - promoted, it leads a new epoch and a consumer group resumes from its mirrored offsets:
//!   it prints exactly the records the group had not committed on the source, none twice.
//!
//! Seeded (`STRATALOG_CRASH_SEED`); every process is killed when the test ends, also when it
//! fails.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cluster::{BIN, Proc, Producer, eventually, read_log, serve, status};
use rand::{Rng, SeedableRng, rngs::StdRng};

const TIMEOUT: Duration = Duration::from_secs(60);

fn mirror(dir: &Path, listen: &str, sources: &str) -> Proc {
    let mut child = Proc(
        Command::new(BIN)
            .args([
                "mirror",
                "--dir",
                dir.to_str().unwrap(),
                "--source",
                sources,
            ])
            .args(["--listen", listen, "--topics", "t*"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mirror"),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("listening on ") && line.contains("(mirror)"),
        "mirror printed {line:?}"
    );
    child
}

fn run(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn end_of(addr: &str) -> Option<(u64, u64)> {
    let s = status(addr)?;
    let p = &s["partitions"]
        .as_array()?
        .iter()
        .find(|p| p["topic"] == "t")?;
    Some((p["log_end"].as_u64()?, p["high_watermark"].as_u64()?))
}

#[test]
fn a_mirror_follows_a_failing_over_source_and_takes_over_with_its_groups() {
    let seed = std::env::var("STRATALOG_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x3177_0a5e_u64);
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (0..2).map(|i| tmp.path().join(format!("n{i}"))).collect();
    let mirror_dir = tmp.path().join("mirror");
    cluster::create_topic(&dirs);
    // A topic the mirror must not copy.
    for d in &dirs {
        run(&["topics", "create", "--dir", d.to_str().unwrap(), "other"]);
    }
    let addrs = common::free_addrs(3);
    let sources = format!("{},{}", addrs[0], addrs[1]);
    let extra = [
        "--replicas",
        "2",
        "--min-in-sync",
        "2",
        "--replica-lag-timeout",
        "1500",
        "--peers",
        &sources,
    ];
    let mut nodes = [
        Some(serve(&dirs[0], "n0", &addrs[0], None, &extra)),
        Some(serve(&dirs[1], "n1", &addrs[1], Some(&addrs[0]), &extra)),
    ];
    let mut leader = 0usize;
    // The source fails over: SIGKILL its leader, promote the follower, restart the old
    // leader, which finds the new one through its peers.
    let fail_over = |nodes: &mut [Option<Proc>; 2], leader: &mut usize| {
        drop(nodes[*leader].take());
        let other = 1 - *leader;
        run(&["promote", "--node", &addrs[other]]);
        nodes[*leader] = Some(serve(
            &dirs[*leader],
            &format!("n{leader}"),
            &addrs[*leader],
            None,
            &extra,
        ));
        *leader = other;
    };
    let mut mirror_proc = Some(mirror(&mirror_dir, &addrs[2], &sources));
    run(&["produce", "--node", &addrs[0], "--log", "other/0"]);

    let mut producer = Producer::start(&sources, "all", 5);
    let mut sent = 0usize;
    let (mut mirror_kills, mut failovers) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut next_event = Instant::now() + Duration::from_millis(rng.random_range(300..800));
    while Instant::now() < deadline {
        if !producer.send(format!("r{sent}").into_bytes()) {
            panic!("the producer exited early");
        }
        sent += 1;
        std::thread::sleep(Duration::from_millis(2));
        if Instant::now() < next_event {
            continue;
        }
        next_event = Instant::now() + Duration::from_millis(rng.random_range(300..1200));
        if failovers < 2 && rng.random_bool(0.4) {
            fail_over(&mut nodes, &mut leader);
            failovers += 1;
        } else {
            // The mirror dies and comes back.
            drop(mirror_proc.take());
            mirror_proc = Some(mirror(&mirror_dir, &addrs[2], &sources));
            mirror_kills += 1;
        }
    }
    let sent_values = producer.sent.clone();
    let acks = producer.finish(Duration::from_secs(20));
    assert!(!acks.is_empty(), "nothing was acknowledged");
    while failovers < 2 {
        fail_over(&mut nodes, &mut leader);
        failovers += 1;
    }
    // A consumer group on the source processes part of the records and commits.
    let first = run(&[
        "consume", "--node", &sources, "--topic", "t", "--group", "g", "-n", "300",
    ]);
    let first: Vec<&str> = first.lines().collect();
    assert_eq!(first.len(), 300, "the source holds at least 300 records");

    // The mirror catches up with the source's high watermark, and shows it in status.
    let (_, source_hw) = end_of(&addrs[leader]).unwrap();
    eventually("the mirror caught up", TIMEOUT, || {
        end_of(&addrs[2]).is_some_and(|(end, _)| end >= source_hw)
    });
    let m = status(&addrs[2]).unwrap();
    assert_eq!(m["role"], "mirror");
    let part = m["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["topic"] == "t")
        .unwrap();
    assert!(part["lag"]["records"].is_u64() && part["lag"]["ms"].is_u64());
    // Only the matching topics were copied.
    let topics = run(&["topics", "list", "--dir", mirror_dir.to_str().unwrap()]);
    assert!(
        topics.contains("t ") && !topics.contains("other"),
        "{topics}"
    );

    // A prefix of the source, at the same offsets, byte for byte.
    let (m_end, _) = end_of(&addrs[2]).unwrap();
    let (source_records, source_bytes) = read_log(&dirs[leader], m_end);
    let (mirror_records, mirror_bytes) = read_log(&mirror_dir, m_end);
    assert!(!mirror_records.is_empty());
    assert_eq!(mirror_records.len(), source_records.len());
    assert!(
        mirror_bytes == source_bytes,
        "the mirror's bytes differ from the source's below {m_end}"
    );
    // Every acknowledged record is on the mirror (it caught up past the source's high
    // watermark, and acknowledged records are below it).
    let covered = cluster::check_acked("mirror", &mirror_records, &sent_values, &acks);
    assert!(covered > 0);
    // The group's commit reaches the mirror too (read-only, beside the running mirror).
    eventually("the group's commit on the mirror", TIMEOUT, || {
        Command::new(BIN)
            .args([
                "groups",
                "describe",
                "--dir",
                mirror_dir.to_str().unwrap(),
                "g",
            ])
            .output()
            .is_ok_and(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| l.starts_with("g t 0 300 "))
            })
    });

    // Disaster: the source is gone. The mirror is promoted, and the group resumes there from
    // its mirrored offsets: the records it had not committed, each once.
    for n in nodes.iter_mut() {
        drop(n.take());
    }
    let promoted = run(&["promote", "--node", &addrs[2]]);
    assert!(promoted.contains("leads in epoch"), "{promoted}");
    let rest = run(&[
        "consume", "--node", &addrs[2], "--topic", "t", "--group", "g",
    ]);
    let rest: Vec<&str> = rest.lines().collect();
    // The group read offsets 0..300 on the source; on the mirror it reads 300.. and nothing
    // else (a value may be stored twice: a producer sends a batch again after a failover).
    let values: Vec<&str> = mirror_records
        .iter()
        .map(|(_, v)| std::str::from_utf8(v).unwrap())
        .collect();
    assert_eq!(
        first,
        values[..300],
        "the group's first 300 records on the source"
    );
    assert_eq!(
        rest,
        values[300..],
        "the group on the promoted mirror must print exactly the records after its commit"
    );
    // The old source leader comes back with its old store and peers: the promoted mirror
    // keeps telling the source nodes of its epoch, so it follows the mirror instead of leading
    // beside it.
    let back = serve(
        &dirs[leader],
        &format!("n{leader}"),
        &addrs[leader],
        None,
        &extra,
    );
    eventually(
        "the old source follows the promoted mirror",
        TIMEOUT,
        || {
            status(&addrs[leader])
                .is_some_and(|s| s["role"] == "follower" && s["leader"] == addrs[2].as_str())
        },
    );
    drop(back);
    drop(mirror_proc);
    eprintln!(
        "mirror: seed {seed:#x}, {sent} records sent, {} acknowledged, {} on the mirror (byte-identical prefix), {mirror_kills} mirror kills, {failovers} source failovers, the group resumed on the promoted mirror after {} records: {} more, {:.1} s",
        covered,
        mirror_records.len(),
        first.len(),
        rest.len(),
        started.elapsed().as_secs_f64()
    );
}
