//! A mirror (`stratalog mirror --source A,B,C`) of a cluster whose partitions have different
//! leaders, and different epochs, under etcd's per-partition election: it must follow each
//! partition's leader and epoch, copy every partition up to its high watermark, byte for
//! byte, and depose no leader.
//!
//! Before the mirror kept a leader and an epoch per partition it kept one of each for all: a
//! partition's answer in epoch 4 (its leader was elected after a failover) raised the mirror's
//! one epoch to 4, and its next fetch of a partition still led in epoch 2 told that leader a
//! newer epoch existed, so it stepped down; etcd elected it again in epoch 6, which deposed
//! the next one, and so on: the epochs of the demo's cluster climbed to 40 and more in 20 s,
//! and the mirror's copy of a partition stopped where its answers were refused as "older".
//!
//! etcd and every process are started by the test on 127.0.0.1 and killed when it ends, also
//! when it fails. Needs an `etcd` binary on PATH (Debian: `etcd-server`; `.ci/run` installs
//! it); without one the test fails, saying so.

#[path = "common/cluster.rs"]
mod cluster;
mod common;
#[path = "common/etcd.rs"]
mod etcd;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cluster::{BIN, Proc, eventually, status};
use etcd::Etcd;

const TOPIC: &str = "m";
const PARTITIONS: u32 = 4;
const LEASE_MS: u64 = 1000;
const TIMEOUT: Duration = Duration::from_secs(60);
const IDS: [&str; 3] = ["a", "b", "c"];

/// Who leads each unit (the topic's partitions and the consumer offsets log) by etcd, with
/// its epoch, once every one has a leader that started its epoch (and, with `preferred`,
/// every node is up and each unit is led by its preferred leader).
fn leaders(
    etcd: &Etcd,
    cluster: &str,
    preferred: bool,
) -> Option<BTreeMap<(String, u32), (String, u64)>> {
    let view = etcd.view(cluster)?;
    if preferred && view.alive.len() != 3 {
        return None;
    }
    let mut out = BTreeMap::new();
    for (key, u) in &view.units {
        let l = u.leader.as_ref().filter(|l| l.epoch > 0)?;
        if preferred && u.preferred.as_ref() != Some(&l.node_id) {
            return None;
        }
        out.insert(key.clone(), (l.node_id.clone(), l.epoch));
    }
    (out.len() == PARTITIONS as usize + 1).then_some(out)
}

/// `produce --node NODES --topic m --acks all` of `n` records `prefix-i`, to its end.
fn produce(nodes: &str, prefix: &str, n: usize) {
    let mut child = Proc(
        Command::new(BIN)
            .args([
                "produce", "--node", nodes, "--topic", TOPIC, "--acks", "all",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn produce"),
    );
    let mut stdin = child.0.stdin.take().unwrap();
    for i in 0..n {
        writeln!(stdin, "{prefix}-{i}").unwrap();
    }
    drop(stdin);
    let started = Instant::now();
    loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            assert!(s.success(), "produce failed: {s}");
            return;
        }
        assert!(started.elapsed() < TIMEOUT, "produce did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The bytes of the batches of partition `p` in the store at `dir` that end below `upto`.
fn batches(dir: &Path, p: u32, upto: u64) -> Vec<u8> {
    let log = stratalog::Log::open(
        stratalog::store::partition_dir(dir, TOPIC, p),
        stratalog::LogOptions {
            read_only: true,
            create: false,
            ..Default::default()
        },
    )
    .unwrap();
    let mut bytes = Vec::new();
    let mut next = log.start_offset();
    'read: while next < upto.min(log.end_offset()) {
        let read = log.read(next, 1 << 20).unwrap();
        if read.is_empty() {
            break;
        }
        for b in read {
            if b.last_offset() >= upto {
                break 'read;
            }
            bytes.extend_from_slice(b.as_bytes());
            next = b.last_offset() + 1;
        }
    }
    bytes
}

/// Per partition of m on the node at `addr`: `(log_end, high_watermark)`.
fn ends(addr: &str) -> Option<Vec<(u64, u64)>> {
    let s = status(addr)?;
    let mut out = vec![(0, 0); PARTITIONS as usize];
    let mut seen = 0;
    for p in s["partitions"]
        .as_array()?
        .iter()
        .filter(|p| p["topic"] == TOPIC)
    {
        let i = p["partition"].as_u64()? as usize;
        out[i] = (p["log_end"].as_u64()?, p["high_watermark"].as_u64()?);
        seen += 1;
    }
    (seen == PARTITIONS).then_some(out)
}

/// Three nodes under etcd's per-partition election, a mirror of them all; the node leading
/// m/0 is SIGKILLed, so that its partitions are led in a newer epoch than the others. The
/// mirror must then copy every partition to its leader's high watermark, byte for byte, and
/// no leader may step down after the failover (the epochs stay where the failover left
/// them, through three lease times of mirroring).
#[test]
fn a_mirror_follows_each_partitions_leader_and_epoch() {
    let etcd = Etcd::start();
    let url = etcd.url();
    let cluster = "mirror";
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<_> = (0..3).map(|i| tmp.path().join(IDS[i])).collect();
    for d in &dirs {
        let ok = Command::new(BIN)
            .args(["topics", "create", "--dir", d.to_str().unwrap(), TOPIC])
            .args(["--partitions", &PARTITIONS.to_string()])
            .args(["--partitioner", "round-robin"])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "topics create in {}", d.display());
    }
    let addrs = common::free_addrs(4);
    let nodes = addrs[..3].join(",");
    let mut procs: Vec<Option<Proc>> = (0..3)
        .map(|i| {
            Some(etcd::serve_with(
                &dirs[i],
                IDS[i],
                &addrs[i],
                &url,
                cluster,
                LEASE_MS,
                &[],
            ))
        })
        .collect();
    let mut before = BTreeMap::new();
    eventually("every unit led by its preferred leader", TIMEOUT, || {
        leaders(&etcd, cluster, true).is_some_and(|l| {
            before = l;
            true
        })
    });
    let mirror_dir = tmp.path().join("mirror");
    let mut mirror = Proc(
        Command::new(BIN)
            .args(["mirror", "--dir", mirror_dir.to_str().unwrap()])
            .args(["--source", &nodes, "--listen", &addrs[3], "--topics", TOPIC])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mirror"),
    );
    let mut line = String::new();
    BufReader::new(mirror.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on "), "mirror printed {line:?}");
    produce(&nodes, "before", 400);

    // Kill the leader of m/0: its partitions move to the others, in newer epochs.
    let (victim_id, _) = before[&(TOPIC.to_string(), 0)].clone();
    let victim = IDS.iter().position(|i| *i == victim_id).unwrap();
    procs[victim] = None;
    let mut after = BTreeMap::new();
    eventually("the killed node's units led by the others", TIMEOUT, || {
        leaders(&etcd, cluster, false).is_some_and(|now| {
            let moved = now
                .iter()
                .all(|(k, (id, epoch))| *id != victim_id && *epoch >= before[k].1);
            if moved {
                after = now;
            }
            moved
        })
    });
    println!("leaders before the kill of {victim_id}: {before:?}; after: {after:?}");
    // `status --coordinator` shows the lease per partition too (it showed none before).
    let view = etcd.view(cluster).unwrap();
    assert!(
        view.lease_granted_ms.is_some_and(|g| g >= LEASE_MS as i64) && view.lease_left_ms.is_some(),
        "no lease in etcd's view of a per-partition cluster: {view:?}"
    );
    for (k, was) in before.iter().filter(|(_, (id, _))| *id != victim_id) {
        assert_eq!(
            after.get(k),
            Some(was),
            "{k:?}, not led by the killed node, changed leader or epoch: before {before:?}, \
             after {after:?}"
        );
    }
    let live: Vec<String> = (0..3)
        .filter(|&i| i != victim)
        .map(|i| addrs[i].clone())
        .collect();
    produce(&live.join(","), "after", 400);

    // Each partition's high watermark, as its leader has it once the followers caught up.
    let mut hws = vec![0u64; PARTITIONS as usize];
    let leader_of = |p: u32| {
        let id = &after[&(TOPIC.to_string(), p)].0;
        IDS.iter().position(|i| i == id).unwrap()
    };
    eventually("every partition's leader at its end", TIMEOUT, || {
        (0..PARTITIONS).all(|p| {
            ends(&addrs[leader_of(p)]).is_some_and(|e| {
                let (end, hw) = e[p as usize];
                hws[p as usize] = hw;
                end == hw
            })
        })
    });
    let mirror_ends = std::cell::RefCell::new(None);
    let copied = (|| {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            let e = ends(&addrs[3]);
            let done = e
                .as_ref()
                .is_some_and(|e| e.iter().zip(&hws).all(|((end, _), hw)| end >= hw));
            *mirror_ends.borrow_mut() = e;
            if done {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    })();
    // Three lease times more of mirroring: no leader may step down meanwhile.
    std::thread::sleep(Duration::from_millis(3 * LEASE_MS));
    let last = leaders(&etcd, cluster, false);
    println!("leaders 3 lease times later: {last:?}");
    assert_eq!(
        last.as_ref(),
        Some(&after),
        "elections after the failover: the mirror deposed leaders (epochs before the kill \
         {before:?})"
    );
    assert!(
        copied,
        "the mirror did not reach every partition's high watermark {hws:?} within 30 s: its \
         (log end, high watermark) per partition: {:?}",
        mirror_ends.borrow()
    );

    // Byte for byte, against each partition's leader.
    drop(mirror);
    drop(procs);
    for p in 0..PARTITIONS {
        let hw = hws[p as usize];
        let leader = batches(&dirs[leader_of(p)], p, hw);
        let copy = batches(&mirror_dir, p, hw);
        assert!(!leader.is_empty(), "{TOPIC}/{p}: nothing below {hw}");
        assert!(
            leader == copy,
            "{TOPIC}/{p}: the mirror's {} bytes differ from the leader's {} below {hw}",
            copy.len(),
            leader.len()
        );
    }
    println!("the mirror holds every partition up to {hws:?}, equal to each one's leader");
}
