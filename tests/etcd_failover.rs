//! Automatic failover through a real etcd (started by the test on 127.0.0.1, killed when the
//! test ends, also when it fails): three `stratalog serve --coordinator` nodes.
//! - `leader_killed_rounds`: under `acks=all` load (`produce --node A,B,C`), the leader is
//!   killed with SIGKILL at random moments and restarted (with no `--leader`) after a random
//!   pause, `STRATALOG_ETCD_ROUNDS` rounds (default 20): a new leader is elected without an
//!   operator, the producer goes on through it, and at the end every acknowledged record is
//!   on every replica. Prints the time from each kill to the first acknowledged write through
//!   the new leader, against the lease (never asserted).
//! - `frozen_leader_acknowledges_nothing`: a leader stopped (SIGSTOP) for three lease times,
//!   with a producer at `acks=leader` talking to it alone, then continued: nothing it
//!   acknowledges after it continues is missing from the new leader, and it rejoins as a
//!   follower of the new leader.
//! - `etcd_cut_from_leader`: etcd reaches the leader through a TCP proxy that then black-holes:
//!   the same check on its acknowledgements, and once healed, exactly one node leads, the one
//!   etcd names.
//! - `an_etcd_cluster_losing_a_member_changes_nothing`: three etcd members; one is killed under
//!   `acks=all` load: the same node leads the same epoch, writes go on being acknowledged, and
//!   every acknowledged record is on every replica.
//! - `per_partition_leaders_spread_fail_over_and_come_back` (`--per-partition-leaders`, a
//!   topic of six partitions): with every node up each leads its two preferred partitions; a
//!   node killed under `acks=all` load loses exactly its partitions to the others, and gets
//!   them back (handover) once restarted and in sync; rounds by the seed; every acknowledged
//!   record on every replica.
//! - `per_partition_frozen_leader_acknowledges_nothing`: the frozen-leader case per
//!   partition (t/0's leader stopped for three lease times).
//!
//! Seeded with `STRATALOG_CRASH_SEED`. The tests run one at a time (they share two cores).

#[path = "common/cluster.rs"]
mod cluster;
mod common;
#[path = "common/etcd.rs"]
mod etcd;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cluster::{Proc, Producer, check_acked, create_topic, eventually, read_log, status};
use common::proxy::{Mode, Proxy};
use etcd::{Etcd, EtcdCluster};
use stratalog::replication::coordinator::LeaderRecord;

const LEASE_MS: u64 = 1000;
const TIMEOUT: Duration = Duration::from_secs(60);
const IDS: [&str; 3] = ["a", "b", "c"];

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn seed() -> u64 {
    std::env::var("STRATALOG_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// Three stores with topic `t`, three free addresses.
fn stores() -> (Vec<tempfile::TempDir>, Vec<PathBuf>, Vec<String>) {
    let tmp: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let dirs: Vec<PathBuf> = tmp.iter().map(|t| t.path().to_path_buf()).collect();
    create_topic(&dirs);
    (tmp, dirs, common::free_addrs(3))
}

/// The leader etcd names, once it has started its epoch.
fn named_leader(etcd: &Etcd, cluster: &str) -> Option<LeaderRecord> {
    etcd.view(cluster)?.leader.filter(|l| l.epoch > 0)
}

/// Waits until etcd names a leader that leads (its status says so) and publishes all three
/// nodes in sync.
fn healthy(etcd: &Etcd, cluster: &str) -> LeaderRecord {
    let mut found = None;
    eventually("a leader with all three nodes in sync", TIMEOUT, || {
        let Some(view) = etcd.view(cluster) else {
            return false;
        };
        let Some(l) = view.leader.filter(|l| l.epoch > 0) else {
            return false;
        };
        let all = view.in_sync.is_some_and(|(_, ids)| ids.len() == 3);
        let leads = status(&l.addr).is_some_and(|s| s["role"] == "leader" && s["epoch"] == l.epoch);
        found = Some(l);
        all && leads
    });
    found.unwrap()
}

/// Feeds the producer while fewer than 200 of its lines wait for an acknowledgement.
fn feed(p: &mut Producer, prefix: &str, next: &mut u64) {
    while p.sent.len() - p.acks().len() < 200 {
        assert!(
            p.send(format!("{prefix}-{next}").into_bytes()),
            "the producer exited"
        );
        *next += 1;
    }
}

/// Every node's t/0 end and high watermark are the same (all caught up).
fn converged(addrs: &[String]) -> bool {
    let ends: Vec<(u64, u64)> = addrs
        .iter()
        .filter_map(|a| {
            let s = status(a)?;
            let p = &s["partitions"][0];
            Some((p["log_end"].as_u64()?, p["high_watermark"].as_u64()?))
        })
        .collect();
    ends.len() == addrs.len() && ends.iter().all(|e| e.0 == ends[0].0)
}

#[test]
fn leader_killed_rounds() {
    let _serial = serial();
    let rounds: usize = std::env::var("STRATALOG_ETCD_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed = seed();
    println!("seed {seed} (STRATALOG_CRASH_SEED), {rounds} rounds, lease {LEASE_MS} ms");
    let mut rng = common::Rng(seed);
    let etcd = Etcd::start();
    let url = etcd.url();
    let cluster = "kill";
    let (_tmp, dirs, addrs) = stores();
    let start = |i: usize| etcd::serve(&dirs[i], IDS[i], &addrs[i], &url, cluster, LEASE_MS);
    let mut procs: Vec<Option<Proc>> = (0..3).map(|i| Some(start(i))).collect();
    let mut producer = Producer::start(&addrs.join(","), "all", 1);
    let mut next = 0u64;
    let (mut to_elected, mut to_acked) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let old = healthy(&etcd, cluster);
        let load = Instant::now() + Duration::from_millis(100 + rng.below(700));
        while Instant::now() < load {
            feed(&mut producer, "p", &mut next);
            std::thread::sleep(Duration::from_millis(2));
        }
        let i = addrs
            .iter()
            .position(|a| *a == old.addr)
            .expect("the leader is one of ours");
        procs[i] = None; // SIGKILL
        let killed = Instant::now();
        // The first acknowledgement counted is one that arrives after etcd names the new
        // leader (so none of the dead leader's can be counted).
        let mut baseline = None;
        loop {
            feed(&mut producer, "p", &mut next);
            if baseline.is_none()
                && named_leader(&etcd, cluster).is_some_and(|l| l.epoch > old.epoch)
            {
                to_elected.push(killed.elapsed());
                baseline = Some(producer.acks().len());
            }
            if baseline.is_some_and(|b| producer.acks().len() > b) {
                to_acked.push(killed.elapsed());
                break;
            }
            assert!(
                killed.elapsed() < TIMEOUT,
                "round {round}: no write acknowledged through a new leader within {TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        println!(
            "round {round}: killed {} (epoch {}); new leader named after {:?}, first write acknowledged through it after {:?}",
            old.node_id,
            old.epoch,
            to_elected.last().unwrap(),
            to_acked.last().unwrap()
        );
        std::thread::sleep(Duration::from_millis(rng.below(1000)));
        procs[i] = Some(start(i));
    }
    healthy(&etcd, cluster);
    let acks = producer.finish(Duration::from_secs(10));
    eventually("every replica caught up", TIMEOUT, || converged(&addrs));
    drop(procs);
    let sent = next;
    for (i, dir) in dirs.iter().enumerate() {
        let (records, _) = read_log(dir, u64::MAX);
        let covered = check_acked(IDS[i], &records, &producer_sent(sent), &acks);
        assert!(covered > 0, "{}: nothing was acknowledged", IDS[i]);
    }
    let mut acked = to_acked.clone();
    acked.sort();
    println!(
        "kill to first acknowledged write through the new leader, lease {LEASE_MS} ms: median {:?}, max {:?} (goal: under {} ms); kill to new leader named: max {:?}; {} records acknowledged",
        acked[acked.len() / 2],
        acked[acked.len() - 1],
        2 * LEASE_MS,
        to_elected.iter().max().unwrap(),
        acks.len()
    );
}

/// The values `feed` sent, in order.
fn producer_sent(n: u64) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("p-{i}").into_bytes()).collect()
}

/// Starts the three nodes; `url_of(i)` is the coordinator node `i` uses. Node 0 starts first
/// and leads.
fn three_with_first_leading(
    etcd: &Etcd,
    cluster: &str,
    dirs: &[PathBuf],
    addrs: &[String],
    url_of: impl Fn(usize) -> String,
) -> Vec<Proc> {
    let first = etcd::serve(&dirs[0], IDS[0], &addrs[0], &url_of(0), cluster, LEASE_MS);
    eventually("node a leads", TIMEOUT, || {
        named_leader(etcd, cluster).is_some_and(|l| l.node_id == "a")
    });
    let mut procs = vec![first];
    for i in 1..3 {
        procs.push(etcd::serve(
            &dirs[i],
            IDS[i],
            &addrs[i],
            &url_of(i),
            cluster,
            LEASE_MS,
        ));
    }
    healthy(etcd, cluster);
    procs
}

/// Checks the acknowledgements `lone` (a producer that talked to the old leader alone) got
/// after `from`: each names a record of its own in the new leader's log.
fn acked_after_are_kept(sent: &[Vec<u8>], acks: &[u64], from: usize, dir: &std::path::Path) {
    let (records, _) = read_log(dir, u64::MAX);
    let at: std::collections::HashMap<u64, &Vec<u8>> =
        records.iter().map(|(o, v)| (*o, v)).collect();
    for &x in &acks[from.min(acks.len())..] {
        let v = at.get(&x).unwrap_or_else(|| {
            panic!("offset {x}, acknowledged by the old leader after it lost its lease, is not in the new leader's log")
        });
        assert!(
            sent.contains(v),
            "offset {x}, acknowledged by the old leader after it lost its lease, holds {:?} in the new leader's log: the acknowledged record was lost",
            String::from_utf8_lossy(v)
        );
    }
}

#[test]
fn frozen_leader_acknowledges_nothing() {
    let _serial = serial();
    let etcd = Etcd::start();
    let url = etcd.url();
    let cluster = "frozen";
    let (_tmp, dirs, addrs) = stores();
    let procs = three_with_first_leading(&etcd, cluster, &dirs, &addrs, |_| url.clone());
    let old = named_leader(&etcd, cluster).unwrap();
    // One producer at acks=leader on the leader alone, one at acks=all on the others.
    let mut lone = Producer::start(&addrs[0], "leader", 1);
    let mut others = Producer::start(&addrs[1..].join(","), "all", 1);
    let (mut n1, mut n2) = (0, 0);
    for _ in 0..100 {
        feed_prefixed(&mut lone, "lone", &mut n1);
        std::thread::sleep(Duration::from_millis(2));
    }
    procs[0].stop();
    let frozen = Instant::now();
    // Requests keep queueing at the frozen leader's socket meanwhile.
    for i in 0..50 {
        let _ = lone.send(format!("lone-late-{i}").into_bytes());
    }
    eventually("a new leader", TIMEOUT, || {
        named_leader(&etcd, cluster).is_some_and(|l| l.epoch > old.epoch)
    });
    // From here on another node was elected: the old leader must acknowledge nothing more
    // that the new leader lacks.
    let before = lone.acks().len();
    while frozen.elapsed() < Duration::from_millis(3 * LEASE_MS) {
        feed_prefixed(&mut others, "other", &mut n2);
        std::thread::sleep(Duration::from_millis(2));
    }
    procs[0].resume();
    let new = named_leader(&etcd, cluster).unwrap();
    eventually("the old leader follows the new one", TIMEOUT, || {
        status(&addrs[0]).is_some_and(|s| s["role"] == "follower" && s["leader"] == new.addr)
    });
    for _ in 0..200 {
        feed_prefixed(&mut others, "other", &mut n2);
        std::thread::sleep(Duration::from_millis(2));
    }
    let lone_sent = lone.sent.clone();
    let lone_acks = lone.finish(Duration::from_secs(3));
    others.finish(Duration::from_secs(5));
    eventually("every replica caught up", TIMEOUT, || converged(&addrs));
    drop(procs);
    let j = IDS.iter().position(|i| *i == new.node_id).unwrap();
    println!(
        "old leader acknowledged {} writes after it continued",
        lone_acks.len().saturating_sub(before)
    );
    acked_after_are_kept(&lone_sent, &lone_acks, before, &dirs[j]);
}

fn feed_prefixed(p: &mut Producer, prefix: &str, next: &mut u64) {
    if p.sent.len() - p.acks().len() < 100 {
        let _ = p.send(format!("{prefix}-{next}").into_bytes());
        *next += 1;
    }
}

#[test]
fn etcd_cut_from_leader() {
    let _serial = serial();
    let etcd = Etcd::start();
    let proxy = Proxy::start(etcd.client.parse().unwrap()).unwrap();
    let via_proxy = format!("etcd://{}", proxy.addr());
    let url = etcd.url();
    let cluster = "cut";
    let (_tmp, dirs, addrs) = stores();
    let procs = three_with_first_leading(&etcd, cluster, &dirs, &addrs, |i| {
        if i == 0 {
            via_proxy.clone()
        } else {
            url.clone()
        }
    });
    let old = named_leader(&etcd, cluster).unwrap();
    let mut lone = Producer::start(&addrs[0], "leader", 1);
    let mut others = Producer::start(&addrs[1..].join(","), "all", 1);
    let (mut n1, mut n2) = (0, 0);
    for _ in 0..100 {
        feed_prefixed(&mut lone, "lone", &mut n1);
        std::thread::sleep(Duration::from_millis(2));
    }
    proxy.set_mode(Mode::Blackhole);
    let cut = Instant::now();
    // Counted once another node is elected: acknowledgements at `acks=leader` before that may
    // be lost in a failover; after it, none may be given.
    let mut before = None;
    let mut stepped_down = None;
    while stepped_down.is_none() || cut.elapsed() < Duration::from_millis(3 * LEASE_MS) {
        feed_prefixed(&mut lone, "lone", &mut n1);
        feed_prefixed(&mut others, "other", &mut n2);
        if before.is_none() && named_leader(&etcd, cluster).is_some_and(|l| l.epoch > old.epoch) {
            before = Some(lone.acks().len());
        }
        if stepped_down.is_none() && status(&addrs[0]).is_some_and(|s| s["role"] != "leader") {
            stepped_down = Some(cut.elapsed());
        }
        assert!(
            cut.elapsed() < TIMEOUT,
            "the cut-off leader never stepped down"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    eventually("a new leader", TIMEOUT, || {
        named_leader(&etcd, cluster).is_some_and(|l| l.epoch > old.epoch)
    });
    let before = before.unwrap_or_else(|| lone.acks().len());
    let new = named_leader(&etcd, cluster).unwrap();
    assert!(
        new.node_id != "a",
        "the cut-off node cannot be elected: {new:?}"
    );
    println!(
        "cut-off leader stepped down {:?} after the cut (lease {LEASE_MS} ms)",
        stepped_down.unwrap()
    );
    proxy.set_mode(Mode::Pass);
    proxy.cut();
    eventually(
        "exactly one leader, the one etcd names, all following it",
        TIMEOUT,
        || {
            let Some(named) = named_leader(&etcd, cluster) else {
                return false;
            };
            let st: Vec<_> = addrs.iter().filter_map(|a| status(a)).collect();
            st.len() == 3
                && st.iter().filter(|s| s["role"] == "leader").count() == 1
                && st.iter().all(|s| s["leader"] == named.addr)
        },
    );
    let lone_sent = lone.sent.clone();
    let lone_acks = lone.finish(Duration::from_secs(3));
    others.finish(Duration::from_secs(5));
    eventually("every replica caught up", TIMEOUT, || converged(&addrs));
    drop(procs);
    let j = IDS.iter().position(|i| *i == new.node_id).unwrap();
    acked_after_are_kept(&lone_sent, &lone_acks, before, &dirs[j]);
}

/// A follower frozen until it left the in-sync set (etcd's), then the two in-sync nodes
/// killed: the out-of-sync node, lacking acknowledged records, is never elected; a returning
/// in-sync node is, and the other follows it. `status --coordinator` shows etcd's view.
#[test]
fn out_of_sync_node_is_not_elected() {
    let _serial = serial();
    let etcd = Etcd::start();
    let url = etcd.url();
    let cluster = "isr";
    let (_tmp, dirs, addrs) = stores();
    let (mut procs, (n, acks)) =
        out_of_sync_c(&etcd, cluster, &dirs, &addrs, &["--node-wide-leader"]);
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_millis(4 * LEASE_MS) {
        let named = named_leader(&etcd, cluster);
        assert!(
            named.as_ref().is_none_or(|l| l.node_id != "c"),
            "c, out of sync, was elected: {named:?}"
        );
        assert!(
            status(&addrs[2]).is_none_or(|s| s["role"] != "leader"),
            "c, out of sync, leads"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    procs[1] = Some(etcd::serve(
        &dirs[1], "b", &addrs[1], &url, cluster, LEASE_MS,
    ));
    eventually("b elected, c following it", TIMEOUT, || {
        named_leader(&etcd, cluster).is_some_and(|l| l.node_id == "b")
            && status(&addrs[2]).is_some_and(|s| s["leader"] == addrs[1].as_str())
    });
    let out = std::process::Command::new(cluster::BIN)
        .args([
            "status",
            "--node",
            &addrs[1],
            "--coordinator",
            &url,
            "--cluster",
            cluster,
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "status --coordinator failed: {out:?}");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["coordinator"]["leader"]["node_id"], "b", "{s}");
    assert_eq!(s["coordinator"]["leader"]["addr"], addrs[1].as_str(), "{s}");
    assert!(s["coordinator"]["epoch"].as_u64().unwrap() >= 2, "{s}");
    let text = std::process::Command::new(cluster::BIN)
        .args([
            "status",
            "--node",
            &addrs[1],
            "--coordinator",
            &url,
            "--cluster",
            cluster,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!(
            "coordinator {url} cluster={cluster} leader={} (b)",
            addrs[1]
        )),
        "{text}"
    );
    eventually("c caught up with b", TIMEOUT, || converged(&addrs[1..]));
    drop(procs);
    let sent: Vec<Vec<u8>> = (0..n).map(|i| format!("p-{i}").into_bytes()).collect();
    for i in 1..3 {
        let (records, _) = read_log(&dirs[i], u64::MAX);
        check_acked(IDS[i], &records, &sent, &acks);
    }
}

/// Three nodes, a leading; c frozen until etcd's in-sync set is {a, b}, records acknowledged
/// meanwhile; then a and b killed and c continued. c runs with `c_extra`. Returns the
/// processes, how many lines the producer sent and its acknowledgements.
fn out_of_sync_c(
    etcd: &Etcd,
    cluster: &str,
    dirs: &[PathBuf],
    addrs: &[String],
    c_extra: &[&str],
) -> (Vec<Option<Proc>>, (u64, Vec<u64>)) {
    let url = etcd.url();
    let first = etcd::serve(&dirs[0], "a", &addrs[0], &url, cluster, LEASE_MS);
    eventually("node a leads", TIMEOUT, || {
        named_leader(etcd, cluster).is_some_and(|l| l.node_id == "a")
    });
    let mut procs = vec![
        Some(first),
        Some(etcd::serve(
            &dirs[1], "b", &addrs[1], &url, cluster, LEASE_MS,
        )),
        Some(etcd::serve_with(
            &dirs[2], "c", &addrs[2], &url, cluster, LEASE_MS, c_extra,
        )),
    ];
    healthy(etcd, cluster);
    let mut producer = Producer::start(&addrs[..2].join(","), "all", 1);
    let mut n = 0;
    procs[2].as_ref().unwrap().stop();
    let mut in_sync = Vec::new();
    while in_sync != ["a", "b"] {
        feed_prefixed(&mut producer, "p", &mut n);
        in_sync = etcd
            .view(cluster)
            .and_then(|v| v.in_sync)
            .map(|(_, ids)| ids)
            .unwrap_or_default();
        std::thread::sleep(Duration::from_millis(5));
    }
    for _ in 0..100 {
        feed_prefixed(&mut producer, "p", &mut n);
        std::thread::sleep(Duration::from_millis(2));
    }
    let acks = producer.finish(Duration::from_secs(5));
    assert!(
        !acks.is_empty(),
        "records were acknowledged while c was out of sync"
    );
    procs[0] = None;
    procs[1] = None;
    procs[2].as_ref().unwrap().resume();
    (procs, (n, acks))
}

/// The same with `--unclean-election` on c: once no in-sync node came back for two lease
/// times, c is elected (it logs the offsets from which records may be lost).
#[test]
fn unclean_election_elects_an_out_of_sync_node() {
    let _serial = serial();
    let etcd = Etcd::start();
    let cluster = "unclean";
    let (_tmp, dirs, addrs) = stores();
    let (procs, _) = out_of_sync_c(
        &etcd,
        cluster,
        &dirs,
        &addrs,
        &["--node-wide-leader", "--unclean-election"],
    );
    eventually("c elected uncleanly", TIMEOUT, || {
        named_leader(&etcd, cluster).is_some_and(|l| l.node_id == "c")
            && status(&addrs[2]).is_some_and(|s| s["role"] == "leader")
    });
    drop(procs);
}

/// A three-member etcd cluster that loses one member (SIGKILL) changes nothing: the nodes
/// reach etcd through the members left (`etcd://A,B,C`), the leader keeps its lease and its
/// epoch, `acks=all` writes go on, and every acknowledged record is on every replica. The
/// member killed is chosen by the seed (it may be etcd's own leader). A 3 s lease leaves the
/// client time to move to another member.
#[test]
fn an_etcd_cluster_losing_a_member_changes_nothing() {
    let _serial = serial();
    let seed = seed();
    let mut rng = common::Rng(seed);
    let lease = 3000;
    let mut etcd = EtcdCluster::start();
    let url = etcd.url();
    let cluster = "members";
    let (_tmp, dirs, addrs) = stores();
    let start = |i: usize| etcd::serve(&dirs[i], IDS[i], &addrs[i], &url, cluster, lease);
    let first = start(0);
    eventually("node a leads", TIMEOUT, || {
        etcd.view(cluster)
            .and_then(|v| v.leader)
            .is_some_and(|l| l.node_id == "a" && l.epoch > 0)
    });
    let procs = vec![first, start(1), start(2)];
    let before = {
        let mut found = None;
        eventually("all three in sync", TIMEOUT, || {
            let Some(view) = etcd.view(cluster) else {
                return false;
            };
            found = view.leader.clone();
            view.in_sync.is_some_and(|(_, ids)| ids.len() == 3)
        });
        found.unwrap()
    };
    let mut producer = Producer::start(&addrs.join(","), "all", 1);
    let mut next = 0u64;
    let load = |p: &mut Producer, next: &mut u64, for_ms: u64| {
        let until = Instant::now() + Duration::from_millis(for_ms);
        while Instant::now() < until {
            feed(p, "p", next);
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    load(&mut producer, &mut next, 500);
    let victim = rng.below(3) as usize;
    etcd.kill(victim);
    let acked_at_kill = producer.acks().len();
    // Four leases with a member gone.
    load(&mut producer, &mut next, 4 * lease);
    let after = etcd.view(cluster).and_then(|v| v.leader);
    assert_eq!(
        after.as_ref().map(|l| (&l.node_id, l.epoch)),
        Some((&before.node_id, before.epoch)),
        "the leadership changed when etcd member m{victim} died"
    );
    let leads = status(&before.addr).is_some_and(|s| s["role"] == "leader");
    assert!(leads, "{} no longer leads", before.node_id);
    assert!(
        producer.acks().len() > acked_at_kill,
        "no write acknowledged after etcd member m{victim} died"
    );
    let acks = producer.finish(Duration::from_secs(10));
    eventually("every replica caught up", TIMEOUT, || converged(&addrs));
    drop(procs);
    for (i, dir) in dirs.iter().enumerate() {
        let (records, _) = read_log(dir, u64::MAX);
        check_acked(IDS[i], &records, &producer_sent(next), &acks);
    }
    println!(
        "seed {seed}: etcd member m{victim} killed; {} led epoch {} throughout; {} acknowledged ({} after the kill)",
        before.node_id,
        before.epoch,
        acks.len(),
        acks.len() - acked_at_kill
    );
}

/// Per-partition leadership (`--per-partition-leaders`): the topic of the test, its
/// partitions, and the nodes' ids.
const SPREAD_TOPIC: &str = "s";
const SPREAD_PARTITIONS: u32 = 6;

/// `produce --node A,B,C --topic s --acks all --batch 1 --print-acks`, keyless lines spread
/// round-robin over the partitions: with one line per batch, sent one after the other, the
/// i-th `acked <partition> <offset>` line acknowledges the i-th line sent.
struct TopicProducer {
    proc: cluster::Proc,
    stdin: Option<std::process::ChildStdin>,
    acks: std::sync::Arc<Mutex<Vec<(u32, u64)>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    sent: Vec<Vec<u8>>,
}

impl TopicProducer {
    fn start(nodes: &str) -> TopicProducer {
        use std::io::BufRead;
        let mut child = cluster::Proc(
            std::process::Command::new(cluster::BIN)
                .args(["produce", "--node", nodes, "--topic", SPREAD_TOPIC])
                .args(["--acks", "all", "--print-acks", "--batch", "1"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn produce"),
        );
        let stdin = child.0.stdin.take();
        let stdout = child.0.stdout.take().unwrap();
        let acks = std::sync::Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let acks = acks.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                {
                    let mut it = line.split(' ');
                    if let (Some("acked"), Some(p), Some(o)) = (it.next(), it.next(), it.next())
                        && let (Ok(p), Ok(o)) = (p.parse(), o.parse())
                    {
                        acks.lock().unwrap().push((p, o));
                    }
                }
            })
        };
        TopicProducer {
            proc: child,
            stdin,
            acks,
            reader: Some(reader),
            sent: Vec::new(),
        }
    }

    fn acked(&self) -> usize {
        self.acks.lock().unwrap().len()
    }

    /// Keeps at most 50 lines waiting for their acknowledgement.
    fn feed(&mut self, next: &mut u64) {
        use std::io::Write;
        while self.sent.len() - self.acked() < 50 {
            let Some(stdin) = self.stdin.as_mut() else {
                return;
            };
            let value = format!("s-{next}").into_bytes();
            let mut line = value.clone();
            line.push(b'\n');
            if stdin.write_all(&line).is_err() {
                self.stdin = None;
                return;
            }
            self.sent.push(value);
            *next += 1;
        }
    }

    fn exited(&mut self) -> bool {
        matches!(self.proc.0.try_wait(), Ok(Some(_)))
    }

    fn finish(mut self, grace: Duration) -> (Vec<Vec<u8>>, Vec<(u32, u64)>) {
        self.stdin = None;
        let started = Instant::now();
        while started.elapsed() < grace && !self.exited() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.proc.0.kill();
        let _ = self.proc.0.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let acks = self.acks.lock().unwrap().clone();
        (self.sent, acks)
    }
}

/// Who leads each partition of s by etcd (node id and epoch; `None` while leaderless or
/// starting its epoch).
fn spread_leaders(etcd: &Etcd, cluster: &str) -> Option<Vec<Option<(String, u64)>>> {
    let view = etcd.view(cluster)?;
    Some(
        (0..SPREAD_PARTITIONS)
            .map(|p| {
                view.units
                    .get(&(SPREAD_TOPIC.to_string(), p))
                    .and_then(|u| u.leader.clone())
                    .filter(|l| l.epoch > 0)
                    .map(|l| (l.node_id, l.epoch))
            })
            .collect(),
    )
}

/// Waits until every partition of s is led by its preferred leader (by the members etcd
/// holds) and each node's status agrees for the partitions it leads; returns the leaders.
fn spread_settled(etcd: &Etcd, cluster: &str, addrs: &[String]) -> Vec<(String, u64)> {
    let mut found = Vec::new();
    eventually(
        "every partition led by its preferred leader",
        TIMEOUT,
        || {
            let Some(view) = etcd.view(cluster) else {
                return false;
            };
            if view.alive.len() != 3 {
                return false;
            }
            let mut leaders = Vec::new();
            for p in 0..SPREAD_PARTITIONS {
                let Some(u) = view.units.get(&(SPREAD_TOPIC.to_string(), p)) else {
                    return false;
                };
                match (&u.leader, &u.preferred) {
                    (Some(l), Some(pref)) if l.epoch > 0 && l.node_id == *pref => {
                        leaders.push((l.node_id.clone(), l.epoch));
                    }
                    _ => return false,
                }
            }
            // Each node's status says it leads exactly the partitions etcd names it for.
            for (i, addr) in addrs.iter().enumerate() {
                let Some(s) = status(addr) else { return false };
                let Some(parts) = s["partitions"].as_array() else {
                    return false;
                };
                for part in parts.iter().filter(|p| p["topic"] == SPREAD_TOPIC) {
                    let p = part["partition"].as_u64().unwrap() as usize;
                    let leads = part["role"] == "leader";
                    if leads != (leaders[p].0 == IDS[i]) {
                        return false;
                    }
                }
            }
            found = leaders;
            true
        },
    );
    found
}

fn per_node(leaders: &[(String, u64)]) -> std::collections::BTreeMap<String, usize> {
    let mut count = std::collections::BTreeMap::new();
    for (id, _) in leaders {
        *count.entry(id.clone()).or_insert(0) += 1;
    }
    count
}

/// Per-partition leadership through etcd: three nodes, a topic of six partitions.
/// - With every node up, each partition is led by its preferred leader, so no node leads
///   more than ceil(6/3)+1 partitions (in fact two each).
/// - Each round (`STRATALOG_ETCD_SPREAD_ROUNDS`, default 3; the node and the load times
///   chosen by `STRATALOG_CRASH_SEED`), one node is SIGKILLed under `acks=all` load over all
///   six partitions: its partitions get new leaders (of higher epochs), the others keep
///   theirs, and the producer goes on. It is restarted: once in sync it gets its partitions
///   back (handover, no unclean election: no node runs with `--unclean-election`), under load.
/// - `status --coordinator` names each partition's leader; `consume --node --topic` reads
///   every acknowledged record through the nodes.
/// - At the end every acknowledged record is, at its offset, on every replica.
#[test]
fn per_partition_leaders_spread_fail_over_and_come_back() {
    let _serial = serial();
    let etcd = Etcd::start();
    let url = etcd.url();
    let cluster = "spread";
    let tmp: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let dirs: Vec<PathBuf> = tmp.iter().map(|t| t.path().to_path_buf()).collect();
    for d in &dirs {
        let ok = std::process::Command::new(cluster::BIN)
            .args([
                "topics",
                "create",
                "--dir",
                d.to_str().unwrap(),
                SPREAD_TOPIC,
            ])
            .args(["--partitions", &SPREAD_PARTITIONS.to_string()])
            .args(["--partitioner", "round-robin"])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "topics create in {}", d.display());
    }
    let addrs = common::free_addrs(3);
    let start =
        |i: usize| etcd::serve_with(&dirs[i], IDS[i], &addrs[i], &url, cluster, LEASE_MS, &[]);
    let mut procs: Vec<Option<Proc>> = (0..3).map(|i| Some(start(i))).collect();
    let before = spread_settled(&etcd, cluster, &addrs);
    let share = (SPREAD_PARTITIONS as usize).div_ceil(3) + 1;
    let counts = per_node(&before);
    println!("leaders with every node up: {before:?}, per node {counts:?}");
    assert!(
        counts.values().all(|&n| n <= share) && counts.len() == 3,
        "a node leads more than its share ({share}), or one leads none: {counts:?}"
    );
    let mut producer = TopicProducer::start(&addrs.join(","));
    let mut next = 0u64;
    let load = |p: &mut TopicProducer, next: &mut u64, for_ms: u64| {
        let until = Instant::now() + Duration::from_millis(for_ms);
        while Instant::now() < until {
            p.feed(next);
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    load(&mut producer, &mut next, 1000);
    assert!(
        producer.acked() > 0,
        "nothing acknowledged with every node up"
    );
    let rounds: usize = std::env::var("STRATALOG_ETCD_SPREAD_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let seed = seed();
    let mut rng = common::Rng(seed);
    println!("seed {seed} (STRATALOG_CRASH_SEED), {rounds} rounds");
    let mut before = before;
    for round in 0..rounds {
        // Kill a node chosen by the seed (each leads two partitions), after a random load.
        let victim = rng.below(3) as usize;
        load(&mut producer, &mut next, 200 + rng.below(800));
        procs[victim] = None;
        let killed = Instant::now();
        let acked_at_kill = producer.acked();
        let mut moved = None;
        loop {
            producer.feed(&mut next);
            if moved.is_none()
                && spread_leaders(&etcd, cluster).is_some_and(|now| {
                    now.iter().zip(&before).all(|(n, b)| {
                        n.as_ref().is_some_and(|n| {
                            if b.0 == IDS[victim] {
                                n.0 != IDS[victim] && n.1 > b.1
                            } else {
                                n == b
                            }
                        })
                    })
                })
            {
                moved = Some(killed.elapsed());
            }
            if moved.is_some() && producer.acked() > acked_at_kill + 20 {
                break;
            }
            assert!(
                killed.elapsed() < TIMEOUT,
                "round {round}, {} killed: partitions moved {moved:?}, {} acknowledged since",
                IDS[victim],
                producer.acked() - acked_at_kill
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let after_kill = spread_leaders(&etcd, cluster).unwrap();
        println!(
            "round {round}: {} killed: its partitions moved after {:?}, 20 more acknowledged after {:?}; leaders {after_kill:?}",
            IDS[victim],
            moved.unwrap(),
            killed.elapsed()
        );
        load(&mut producer, &mut next, rng.below(1000));
        // It comes back and gets its partitions back, under load.
        procs[victim] = Some(start(victim));
        let back = Instant::now();
        let rebalanced = std::thread::scope(|scope| {
            let settled = scope.spawn(|| spread_settled(&etcd, cluster, &addrs));
            while !settled.is_finished() {
                producer.feed(&mut next);
                std::thread::sleep(Duration::from_millis(2));
            }
            settled.join().unwrap()
        });
        println!(
            "round {round}: {} restarted: leadership rebalanced after {:?}: {rebalanced:?}",
            IDS[victim],
            back.elapsed()
        );
        for (p, (now, then)) in rebalanced.iter().zip(&before).enumerate() {
            assert_eq!(
                now.0, then.0,
                "partition {p}: not led by its preferred leader"
            );
            if then.0 == IDS[victim] {
                assert!(
                    now.1 > after_kill[p].as_ref().unwrap().1,
                    "partition {p}: no new epoch when {} took it back",
                    IDS[victim]
                );
            }
        }
        before = rebalanced;
    }
    let rebalanced = before;
    let acked_before_end = producer.acked();
    load(&mut producer, &mut next, 1000);
    assert!(
        producer.acked() > acked_before_end,
        "nothing acknowledged after the rebalance"
    );
    let (sent, acks) = producer.finish(Duration::from_secs(10));
    eventually("every replica caught up", TIMEOUT, || {
        (0..SPREAD_PARTITIONS as usize).all(|p| {
            let ends: Vec<Option<(Option<u64>, Option<u64>)>> = addrs
                .iter()
                .map(|a| {
                    let s = status(a)?;
                    s["partitions"]
                        .as_array()?
                        .iter()
                        .find(|x| x["topic"] == SPREAD_TOPIC && x["partition"] == p)
                        .map(|x| (x["log_end"].as_u64(), x["high_watermark"].as_u64()))
                })
                .collect();
            ends.iter()
                .all(|e| e.is_some_and(|(end, hw)| end.is_some() && end == hw) && *e == ends[0])
        })
    });
    // `status --coordinator`: who leads each partition, as the node and etcd say.
    let out = std::process::Command::new(cluster::BIN)
        .args([
            "status",
            "--node",
            &addrs[0],
            "--json",
            "--coordinator",
            &url,
        ])
        .args(["--cluster", cluster])
        .output()
        .unwrap();
    assert!(out.status.success(), "status --coordinator failed: {out:?}");
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for part in st["partitions"].as_array().unwrap() {
        let p = part["partition"].as_u64().unwrap() as usize;
        let want = &addrs[IDS.iter().position(|i| *i == rebalanced[p].0).unwrap()];
        assert_eq!(part["leader"], want.as_str(), "{st}");
    }
    // A consumer of the whole topic through any node reads each partition from its leader.
    let out = std::process::Command::new(cluster::BIN)
        .args([
            "consume",
            "--node",
            &addrs.join(","),
            "--topic",
            SPREAD_TOPIC,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "consume --node --topic failed: {out:?}"
    );
    let consumed: std::collections::HashSet<&[u8]> = out.stdout.split(|b| *b == b'\n').collect();
    let missing = (0..acks.len())
        .filter(|k| !consumed.contains(sent[*k].as_slice()))
        .count();
    assert_eq!(
        missing, 0,
        "acknowledged records the consumer did not print"
    );
    // A snapshot streamed through any node comes from the leader of the consumer offsets unit,
    // which cuts the partitions it follows at the high watermark their leaders sent it: with
    // every replica caught up, it holds every acknowledged record.
    let snaps = tempfile::tempdir().unwrap();
    let (snap, restored) = (snaps.path().join("snap"), snaps.path().join("restored"));
    for (what, args) in [
        (
            "snapshot --node",
            vec!["snapshot", "--node", &addrs.join(","), "--out"],
        ),
        ("verify", vec!["verify", "--snapshot"]),
    ] {
        let out = std::process::Command::new(cluster::BIN)
            .args(args)
            .arg(&snap)
            .output()
            .unwrap();
        assert!(out.status.success(), "{what} failed: {out:?}");
    }
    let out = std::process::Command::new(cluster::BIN)
        .args(["restore", "--snapshot"])
        .arg(&snap)
        .arg("--dir")
        .arg(&restored)
        .output()
        .unwrap();
    assert!(out.status.success(), "restore failed: {out:?}");
    let logs: Vec<_> = (0..SPREAD_PARTITIONS)
        .map(|p| etcd::read_partition(&restored, SPREAD_TOPIC, p))
        .collect();
    for (k, &(p, o)) in acks.iter().enumerate() {
        assert_eq!(
            logs[p as usize].get(&o),
            Some(&sent[k]),
            "the restored snapshot lacks acknowledged {SPREAD_TOPIC}/{p} offset {o}"
        );
    }
    drop(procs);
    assert!(acks.len() <= sent.len());
    for (i, dir) in dirs.iter().enumerate() {
        let logs: Vec<_> = (0..SPREAD_PARTITIONS)
            .map(|p| etcd::read_partition(dir, SPREAD_TOPIC, p))
            .collect();
        for (k, &(p, o)) in acks.iter().enumerate() {
            let v = logs[p as usize].get(&o).unwrap_or_else(|| {
                panic!(
                    "{}: acknowledged {SPREAD_TOPIC}/{p} offset {o} is not in the log",
                    IDS[i]
                )
            });
            assert_eq!(
                v, &sent[k],
                "{}: {SPREAD_TOPIC}/{p} offset {o} holds another record than the one acknowledged there",
                IDS[i]
            );
        }
    }
    println!(
        "{} records acknowledged over {SPREAD_PARTITIONS} partitions, every one on every replica",
        acks.len()
    );
}

/// The leader etcd names for t/0 under per-partition leadership, once it started its epoch.
fn unit_leader(etcd: &Etcd, cluster: &str) -> Option<LeaderRecord> {
    etcd.view(cluster)?
        .units
        .get(&("t".to_string(), 0))?
        .leader
        .clone()
        .filter(|l| l.epoch > 0)
}

/// Per-partition leadership, the frozen-leader case: the node leading t/0 is stopped
/// (SIGSTOP) for three lease times while a producer at `acks=leader` talks to it alone, then
/// continued. The lease fence is per node and covers every unit it leads: nothing it
/// acknowledges after another node was elected for t/0 is missing from that node's log, and
/// it rejoins t/0 as a follower of the new leader.
#[test]
fn per_partition_frozen_leader_acknowledges_nothing() {
    let _serial = serial();
    let etcd = Etcd::start();
    let url = etcd.url();
    let cluster = "spread-frozen";
    let (_tmp, dirs, addrs) = stores();
    let procs: Vec<Proc> = (0..3)
        .map(|i| etcd::serve_with(&dirs[i], IDS[i], &addrs[i], &url, cluster, LEASE_MS, &[]))
        .collect();
    let mut old = None;
    eventually(
        "t/0 led by its preferred leader, all in sync",
        TIMEOUT,
        || {
            let Some(view) = etcd.view(cluster) else {
                return false;
            };
            let Some(u) = view.units.get(&("t".to_string(), 0)) else {
                return false;
            };
            let settled = u
                .leader
                .as_ref()
                .is_some_and(|l| l.epoch > 0 && Some(&l.node_id) == u.preferred.as_ref())
                && u.in_sync.as_ref().is_some_and(|(_, ids)| ids.len() == 3)
                && view.alive.len() == 3;
            old = u.leader.clone();
            settled
        },
    );
    let old = old.unwrap();
    let i = IDS.iter().position(|id| *id == old.node_id).unwrap();
    let others: Vec<String> = (0..3)
        .filter(|j| *j != i)
        .map(|j| addrs[j].clone())
        .collect();
    let mut lone = Producer::start(&addrs[i], "leader", 1);
    let mut rest = Producer::start(&others.join(","), "all", 1);
    let (mut n1, mut n2) = (0, 0);
    for _ in 0..100 {
        feed_prefixed(&mut lone, "lone", &mut n1);
        std::thread::sleep(Duration::from_millis(2));
    }
    procs[i].stop();
    let frozen = Instant::now();
    for k in 0..50 {
        let _ = lone.send(format!("lone-late-{k}").into_bytes());
    }
    eventually("a new leader of t/0", TIMEOUT, || {
        unit_leader(&etcd, cluster).is_some_and(|l| l.epoch > old.epoch)
    });
    let before = lone.acks().len();
    while frozen.elapsed() < Duration::from_millis(3 * LEASE_MS) {
        feed_prefixed(&mut rest, "other", &mut n2);
        std::thread::sleep(Duration::from_millis(2));
    }
    procs[i].resume();
    let new = unit_leader(&etcd, cluster).unwrap();
    assert_ne!(new.node_id, old.node_id, "the frozen node still leads t/0");
    // It follows the new leader; being t/0's preferred leader, it may then take it back (a
    // handover, in a newer epoch still).
    eventually("the old leader follows the new one on t/0", TIMEOUT, || {
        status(&addrs[i]).is_some_and(|s| {
            s["partitions"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["topic"] == "t"))
                .is_some_and(|p| {
                    p["role"] == "follower" || p["epoch"].as_u64().is_some_and(|e| e > new.epoch)
                })
        })
    });
    for _ in 0..200 {
        feed_prefixed(&mut rest, "other", &mut n2);
        std::thread::sleep(Duration::from_millis(2));
    }
    let lone_sent = lone.sent.clone();
    let lone_acks = lone.finish(Duration::from_secs(3));
    rest.finish(Duration::from_secs(5));
    eventually("every replica caught up", TIMEOUT, || converged(&addrs));
    drop(procs);
    let j = IDS.iter().position(|id| *id == new.node_id).unwrap();
    println!(
        "t/0: {} frozen, {} elected (epoch {}); the old leader acknowledged {} writes after it continued",
        old.node_id,
        new.node_id,
        new.epoch,
        lone_acks.len().saturating_sub(before)
    );
    acked_after_are_kept(&lone_sent, &lone_acks, before, &dirs[j]);
}

/// The nodes of a cluster must agree on the election: the first node records its mode in
/// etcd and a node of the other mode refuses to start, saying what to do. An operator's
/// promote of a coordinated node is refused too (it would start an epoch etcd does not know).
#[test]
fn modes_must_agree_and_a_coordinated_node_refuses_promote() {
    let _serial = serial();
    let etcd = Etcd::start();
    let url = etcd.url();
    let cluster = "modes";
    let (_tmp, dirs, addrs) = stores();
    let _a = etcd::serve_with(&dirs[0], "a", &addrs[0], &url, cluster, LEASE_MS, &[]);
    eventually("etcd records the per-partition mode", TIMEOUT, || {
        etcd.view(cluster).is_some_and(|v| !v.units.is_empty())
    });
    // `status --coordinator` shows each member's lease.
    let out = std::process::Command::new(cluster::BIN)
        .args([
            "status",
            "--node",
            &addrs[0],
            "--json",
            "--coordinator",
            &url,
        ])
        .args(["--cluster", cluster])
        .output()
        .unwrap();
    assert!(out.status.success(), "status --coordinator failed: {out:?}");
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lease = &st["coordinator"]["leases"]["a"];
    assert!(
        lease["granted_ms"].as_i64().is_some_and(|g| g >= 1000)
            && lease["left_ms"].as_i64().is_some_and(|l| l >= 0),
        "{st}"
    );
    let out = std::process::Command::new(cluster::BIN)
        .args(["promote", "--node", &addrs[0]])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "promote of a coordinated node: {out:?}"
    );
    assert!(err.contains("elected through etcd"), "{err}");
    let lease = LEASE_MS.to_string();
    let wrong = std::process::Command::new(cluster::BIN)
        .args([
            "serve",
            "--dir",
            dirs[1].to_str().unwrap(),
            "--node-id",
            "b",
        ])
        .args([
            "--listen",
            &addrs[1],
            "--coordinator",
            &url,
            "--cluster",
            cluster,
        ])
        .args(["--lease-ms", &lease, "--node-wide-leader"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut wrong = Proc(wrong);
    let started = Instant::now();
    let status = loop {
        if let Some(s) = wrong.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "a node-wide node joined a per-partition cluster"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(wrong.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("elects per-partition leaders") && err.contains("without --node-wide-leader"),
        "{err}"
    );
}

/// Node-wide, a node holding the `leader` key under its live lease without leading (a
/// campaign etcd applied whose answer was lost) gives it back, and a leader is elected. Made
/// by hand: the nodes frozen, the key replaced by one of epoch 0 under a follower's lease, the
/// nodes continued. Without the fix nobody led while that follower lived (the key never
/// lapsed, and an epoch-0 record is one being started, which nobody else campaigns against).
#[test]
fn a_leader_key_held_without_leading_is_given_back() {
    let _serial = serial();
    let etcd = Etcd::start();
    let url = etcd.url();
    let cluster = "lost-answer";
    let (_tmp, dirs, addrs) = stores();
    let procs: Vec<Proc> = (0..3)
        .map(|i| etcd::serve(&dirs[i], IDS[i], &addrs[i], &url, cluster, LEASE_MS))
        .collect();
    let old = healthy(&etcd, cluster);
    let key = etcd::b64(format!("/stratalog/{cluster}/leader").as_bytes());
    let got = etcd.gateway("kv/range", &serde_json::json!({ "key": key }));
    let leader_lease = got["kvs"][0]["lease"].as_str().unwrap().to_string();
    let leases = etcd.gateway("lease/leases", &serde_json::json!({}));
    let other = leases["leases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ID"].as_str())
        .find(|id| *id != leader_lease)
        .unwrap_or_else(|| panic!("no follower's lease in {leases}"))
        .to_string();
    let f = IDS.iter().position(|i| *i != old.node_id).unwrap();
    let value = etcd::b64(format!("0 {} {}", addrs[f], IDS[f]).as_bytes());
    for p in &procs {
        p.stop();
    }
    etcd.gateway("kv/deleterange", &serde_json::json!({ "key": key }));
    etcd.gateway(
        "kv/put",
        &serde_json::json!({ "key": key, "value": value, "lease": other }),
    );
    for p in &procs {
        p.resume();
    }
    let fixed = Instant::now();
    eventually("a leader elected again", TIMEOUT, || {
        named_leader(&etcd, cluster).is_some_and(|l| l.epoch > old.epoch)
    });
    let new = named_leader(&etcd, cluster).unwrap();
    println!(
        "leader {} (epoch {}); its key replaced by one under a follower's lease; {} leads epoch {} after {:?}",
        old.node_id,
        old.epoch,
        new.node_id,
        new.epoch,
        fixed.elapsed()
    );
}
