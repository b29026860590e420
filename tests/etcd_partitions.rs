//! Issue 13's etcd tests in the default election, a leader per partition (each partition and
//! the consumer offsets log `__consumer_offsets/0` is a leadership unit with its own keys):
//! three `stratalog serve --coordinator` nodes, a topic `s` of six partitions, against a real
//! etcd started by the test on 127.0.0.1 (killed when the test ends, also when it fails).
//! - `per_partition_leader_killed_rounds`: under `acks=all` load over every partition
//!   (`produce --node A,B,C --topic s`), `STRATALOG_ETCD_PARTITION_ROUNDS` rounds (default
//!   20) each SIGKILL a node that leads a partition (chosen by the seed) at a random moment
//!   and restart it (no `--leader`) after a random pause: each unit it led gets a new leader
//!   in a higher epoch with no operator, the producer goes on, and at the end every
//!   acknowledged record is at its offset on every replica. Prints the time from each kill to
//!   the new leaders and to the first write acknowledged on a partition the dead node led,
//!   against the lease (never asserted).
//! - `per_partition_etcd_cut_from_a_leader`: etcd reaches one node (chosen by the seed, it
//!   leads two partitions) through a TCP proxy that then black-holes: a producer at
//!   `acks=leader` talking to that node alone gets no acknowledgement, after another node was
//!   elected for a unit, of a record that unit's new leader lacks; the node steps down of
//!   every unit; healed, each partition has exactly one node saying it leads it, the one etcd
//!   names, and the node gets its partitions back.
//! - `per_partition_an_etcd_cluster_losing_a_member_changes_nothing`: three etcd members, one
//!   killed under `acks=all` load: every unit keeps its leader and its epoch, writes go on
//!   being acknowledged on every partition, every acknowledged record is on every replica.
//! - `per_partition_out_of_sync_node_is_not_elected`: a node frozen until it left every
//!   unit's in-sync set, the two others killed: it is elected for no unit; an in-sync node
//!   returning is elected for every unit, the out-of-sync one catches up, is published in sync
//!   again and is then elected when that node dies.
//! - `per_partition_unclean_election_elects_an_out_of_sync_node`: the same node with
//!   `--unclean-election` is elected for every unit and logs, per partition, the log end from
//!   which acknowledged records may be lost (acknowledged records past it exist).
//!
//! Seeded with `STRATALOG_CRASH_SEED`. The tests run one at a time (they share two cores).

#[path = "common/cluster.rs"]
mod cluster;
mod common;
#[path = "common/etcd.rs"]
mod etcd;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cluster::{Proc, eventually, status};
use common::proxy::{Mode, Proxy};
use etcd::{Etcd, EtcdCluster, TopicProducer, check_topic_acks};
use stratalog::replication::coordinator::{ClusterView, LeaderRecord};

const LEASE_MS: u64 = 1000;
const TIMEOUT: Duration = Duration::from_secs(60);
const IDS: [&str; 3] = ["a", "b", "c"];
const TOPIC: &str = "s";
const PARTS: u32 = 6;
/// Lines a producer keeps waiting for their acknowledgement.
const WINDOW: usize = 50;

/// A leadership unit: (topic, partition).
type Key = (String, u32);

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

/// Three stores with topic s (six partitions, round-robin), three free addresses.
fn stores() -> (Vec<tempfile::TempDir>, Vec<PathBuf>, Vec<String>) {
    let tmp: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let dirs: Vec<PathBuf> = tmp.iter().map(|t| t.path().to_path_buf()).collect();
    etcd::create_topic_partitions(&dirs, TOPIC, PARTS);
    (tmp, dirs, common::free_addrs(3))
}

/// Every leadership unit: each partition of s and the consumer offsets log.
fn all_units() -> Vec<Key> {
    let mut units: Vec<Key> = (0..PARTS).map(|p| (TOPIC.to_string(), p)).collect();
    units.push((stratalog::store::OFFSETS_LOG.to_string(), 0));
    units
}

/// Who leads each unit by etcd, once it started its epoch.
fn leaders(view: &ClusterView) -> BTreeMap<Key, Option<LeaderRecord>> {
    all_units()
        .into_iter()
        .map(|k| {
            let l = view
                .units
                .get(&k)
                .and_then(|u| u.leader.clone())
                .filter(|l| l.epoch > 0);
            (k, l)
        })
        .collect()
}

/// Node `i`'s partitions of s as its status gives them: partition to (leads it, epoch).
fn roles(addr: &str) -> Option<BTreeMap<u32, (bool, u64)>> {
    let s = status(addr)?;
    let mut out = BTreeMap::new();
    for p in s["partitions"].as_array()? {
        if p["topic"] != TOPIC {
            continue;
        }
        out.insert(
            p["partition"].as_u64()? as u32,
            (p["role"] == "leader", p["epoch"].as_u64()?),
        );
    }
    (out.len() == PARTS as usize).then_some(out)
}

/// Whether each node of `up` says it leads exactly the partitions of s etcd names it for, in
/// etcd's epoch (and no node says it leads a partition etcd names another node for).
fn statuses_agree(addrs: &[String], up: &[usize], named: &BTreeMap<Key, LeaderRecord>) -> bool {
    for &i in up {
        let Some(roles) = roles(&addrs[i]) else {
            return false;
        };
        for (p, (leads, epoch)) in roles {
            let Some(l) = named.get(&(TOPIC.to_string(), p)) else {
                return false;
            };
            let named_here = l.node_id == IDS[i];
            if leads != named_here || (leads && epoch != l.epoch) {
                return false;
            }
        }
    }
    true
}

/// Whether every unit has a leader in a started epoch, with all three nodes alive and in the
/// in-sync set it published in that epoch (led by its preferred leader too when `preferred`),
/// and the nodes' statuses agree. Returns the leaders.
fn settled(
    view: Option<ClusterView>,
    addrs: &[String],
    preferred: bool,
) -> Option<BTreeMap<Key, LeaderRecord>> {
    let view = view?;
    saw(format!("{view:?}"));
    if view.alive.len() != 3 {
        return None;
    }
    let mut named = BTreeMap::new();
    for key in all_units() {
        let u = view.units.get(&key)?;
        let l = u.leader.clone().filter(|l| l.epoch > 0)?;
        let in_sync = u
            .in_sync
            .as_ref()
            .is_some_and(|(e, ids)| *e == l.epoch && ids.len() == 3);
        if !in_sync || (preferred && u.preferred.as_ref() != Some(&l.node_id)) {
            return None;
        }
        named.insert(key, l);
    }
    statuses_agree(addrs, &[0, 1, 2], &named).then_some(named)
}

/// Polls `cond` every 20 ms (feeding `producer` meanwhile, if any) until it gives a value;
/// panics naming `what` after [`TIMEOUT`].
fn wait_for<T>(
    what: &str,
    mut producer: Option<&mut TopicProducer>,
    mut cond: impl FnMut() -> Option<T>,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(p) = producer.as_deref_mut() {
            p.feed(WINDOW);
        }
        if let Some(v) = cond() {
            return v;
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "timed out after {TIMEOUT:?} waiting for {what}; last seen: {}",
            LAST.with(|l| l.borrow().clone())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

thread_local! {
    /// What a condition of [`wait_for`] saw last, for its timeout's message.
    static LAST: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Notes what a condition saw (shown if it times out).
fn saw(what: String) {
    LAST.with(|l| *l.borrow_mut() = what);
}

/// Feeds the producers for `ms`.
fn load(producers: &mut [&mut TopicProducer], ms: u64) {
    let until = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < until {
        for p in producers.iter_mut() {
            p.feed(WINDOW);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Every node of `up` has the same end of each partition of s, equal to its high watermark.
fn converged(addrs: &[String], up: &[usize]) -> bool {
    (0..PARTS).all(|p| {
        let ends: Vec<Option<(u64, u64)>> = up
            .iter()
            .map(|&i| {
                let s = status(&addrs[i])?;
                let x = s["partitions"]
                    .as_array()?
                    .iter()
                    .find(|x| x["topic"] == TOPIC && x["partition"] == p)?
                    .clone();
                Some((x["log_end"].as_u64()?, x["high_watermark"].as_u64()?))
            })
            .collect();
        ends.iter()
            .all(|e| e.is_some_and(|(end, hw)| end == hw) && *e == ends[0])
    })
}

fn median_max(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() - 1])
}

#[test]
fn per_partition_leader_killed_rounds() {
    let _serial = serial();
    let rounds: usize = std::env::var("STRATALOG_ETCD_PARTITION_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed = seed();
    println!("seed {seed} (STRATALOG_CRASH_SEED), {rounds} rounds, lease {LEASE_MS} ms");
    let mut rng = common::Rng(seed);
    let etcd = Etcd::start();
    let url = etcd.url();
    let cluster = "p-kill";
    let (_tmp, dirs, addrs) = stores();
    let start =
        |i: usize| etcd::serve_with(&dirs[i], IDS[i], &addrs[i], &url, cluster, LEASE_MS, &[]);
    let mut procs: Vec<Option<Proc>> = (0..3).map(|i| Some(start(i))).collect();
    wait_for("every partition led by its preferred leader", None, || {
        settled(etcd.view(cluster), &addrs, true)
    });
    let mut producer = TopicProducer::start(&addrs.join(","), TOPIC, "all", "p");
    let (mut to_elected, mut to_acked) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Every node up and in sync in every unit, so that any may be killed.
        let before = wait_for("every unit led, all in sync", Some(&mut producer), || {
            settled(etcd.view(cluster), &addrs, false)
        });
        load(&mut [&mut producer], 100 + rng.below(700));
        let leading: Vec<usize> = (0..3)
            .filter(|&i| {
                before
                    .iter()
                    .any(|(k, l)| k.0 == TOPIC && l.node_id == IDS[i])
            })
            .collect();
        let victim = leading[rng.below(leading.len() as u64) as usize];
        let led: BTreeMap<Key, u64> = before
            .iter()
            .filter(|(_, l)| l.node_id == IDS[victim])
            .map(|(k, l)| (k.clone(), l.epoch))
            .collect();
        procs[victim] = None; // SIGKILL
        let killed = Instant::now();
        // Per unit: when etcd named its new leader, and how many lines were acknowledged
        // then (an acknowledgement counted after that cannot be the dead node's).
        let mut moved: BTreeMap<Key, (Duration, usize)> = BTreeMap::new();
        let mut first_ack = None;
        while moved.len() < led.len() || first_ack.is_none() {
            producer.feed(WINDOW);
            if moved.len() < led.len()
                && let Some(view) = etcd.view(cluster)
            {
                for (k, l) in leaders(&view) {
                    if let (Some(old), Some(l)) = (led.get(&k), l)
                        && !moved.contains_key(&k)
                        && l.epoch > *old
                        && l.node_id != IDS[victim]
                    {
                        moved.insert(k, (killed.elapsed(), producer.acked()));
                    }
                }
            }
            if first_ack.is_none() {
                let acks = producer.acks();
                let on_moved = moved.iter().any(|(k, (_, base))| {
                    k.0 == TOPIC && acks[*base..].iter().any(|(p, _)| *p == k.1)
                });
                if on_moved {
                    first_ack = Some(killed.elapsed());
                }
            }
            assert!(
                killed.elapsed() < TIMEOUT,
                "round {round}, {} killed: units {:?} moved {moved:?}, first write on one of its partitions {first_ack:?}",
                IDS[victim],
                led.keys().collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let elected = moved.values().map(|(t, _)| *t).max().unwrap();
        to_elected.push(elected);
        to_acked.push(first_ack.unwrap());
        println!(
            "round {round}: killed {} leading {:?}; new leaders named after {elected:?}, first write acknowledged on one of its partitions after {:?}",
            IDS[victim],
            led.keys()
                .map(|(t, p)| format!("{t}/{p}"))
                .collect::<Vec<_>>(),
            first_ack.unwrap()
        );
        load(&mut [&mut producer], rng.below(1000));
        procs[victim] = Some(start(victim));
    }
    wait_for("every unit led, all in sync", Some(&mut producer), || {
        settled(etcd.view(cluster), &addrs, false)
    });
    let acked_before = producer.acked();
    let resumed = Instant::now();
    while producer.acked() < acked_before + 20 {
        producer.feed(WINDOW);
        assert!(
            resumed.elapsed() < TIMEOUT,
            "no 20 writes acknowledged after the last restart"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let (sent, acks) = producer.finish(Duration::from_secs(10));
    eventually("every replica caught up", TIMEOUT, || {
        converged(&addrs, &[0, 1, 2])
    });
    drop(procs);
    for (i, dir) in dirs.iter().enumerate() {
        let n = check_topic_acks(IDS[i], dir, TOPIC, PARTS, &sent, &acks, |_, _| true);
        assert!(n > 0, "{}: nothing was acknowledged", IDS[i]);
    }
    let (em, ex) = median_max(to_elected);
    let (am, ax) = median_max(to_acked);
    println!(
        "lease {LEASE_MS} ms, {rounds} rounds: kill to new leaders of all its units: median {em:?}, max {ex:?}; kill to first write acknowledged on a partition it led: median {am:?}, max {ax:?} (goal: under {} ms); {} records acknowledged over {PARTS} partitions, every one on every replica",
        2 * LEASE_MS,
        acks.len()
    );
}

/// Starts the three nodes, `url_of(i)` the coordinator of node `i`, and waits until every
/// partition is led by its preferred leader with all three in sync.
fn three_settled(
    view: &dyn Fn() -> Option<ClusterView>,
    dirs: &[PathBuf],
    addrs: &[String],
    cluster: &str,
    lease_ms: u64,
    url_of: impl Fn(usize) -> String,
) -> (Vec<Option<Proc>>, BTreeMap<Key, LeaderRecord>) {
    let procs: Vec<Option<Proc>> = (0..3)
        .map(|i| {
            Some(etcd::serve_with(
                &dirs[i],
                IDS[i],
                &addrs[i],
                &url_of(i),
                cluster,
                lease_ms,
                &[],
            ))
        })
        .collect();
    let named = wait_for("every partition led by its preferred leader", None, || {
        settled(view(), addrs, true)
    });
    (procs, named)
}

/// etcd cut off from a node that leads units (through a TCP proxy that black-holes): it stops
/// acknowledging before its lease can expire, so a producer at `acks=leader` talking to it
/// alone gets no acknowledgement, after another node was elected for one of its units, of a
/// record missing from that unit's new leader; it steps down of every unit; once etcd is back,
/// each partition has exactly one node saying it leads it, the one etcd names, and the node
/// gets its preferred partitions back.
#[test]
fn per_partition_etcd_cut_from_a_leader() {
    let _serial = serial();
    let seed = seed();
    let mut rng = common::Rng(seed);
    let etcd = Etcd::start();
    let proxy = Proxy::start(etcd.client.parse().unwrap()).unwrap();
    let via_proxy = format!("etcd://{}", proxy.addr());
    let url = etcd.url();
    let cluster = "p-cut";
    let (_tmp, dirs, addrs) = stores();
    let x = rng.below(3) as usize;
    let (procs, before) = three_settled(
        &|| etcd.view(cluster),
        &dirs,
        &addrs,
        cluster,
        LEASE_MS,
        |i| {
            if i == x {
                via_proxy.clone()
            } else {
                url.clone()
            }
        },
    );
    let led: BTreeMap<Key, u64> = before
        .iter()
        .filter(|(_, l)| l.node_id == IDS[x])
        .map(|(k, l)| (k.clone(), l.epoch))
        .collect();
    assert!(
        led.keys().any(|k| k.0 == TOPIC),
        "{} leads no partition of {TOPIC}: {before:?}",
        IDS[x]
    );
    let others: Vec<usize> = (0..3).filter(|&i| i != x).collect();
    let mut lone = TopicProducer::start(&addrs[x], TOPIC, "leader", "lone");
    let mut rest = TopicProducer::start(
        &others
            .iter()
            .map(|&i| addrs[i].as_str())
            .collect::<Vec<_>>()
            .join(","),
        TOPIC,
        "all",
        "other",
    );
    load(&mut [&mut lone, &mut rest], 500);
    assert!(lone.acked() > 0, "nothing acknowledged before the cut");
    proxy.set_mode(Mode::Blackhole);
    let cut = Instant::now();
    // Per unit x led: how many of the lone producer's lines were acknowledged when etcd named
    // another leader. Acknowledgements at `acks=leader` before that may be lost in the
    // failover; none after it may be.
    let mut elected: BTreeMap<Key, (Duration, usize, LeaderRecord)> = BTreeMap::new();
    let mut stepped_down = None;
    while elected.len() < led.len()
        || stepped_down.is_none()
        || cut.elapsed() < Duration::from_millis(3 * LEASE_MS)
    {
        lone.feed(WINDOW);
        rest.feed(WINDOW);
        if elected.len() < led.len()
            && let Some(view) = etcd.view(cluster)
        {
            for (k, l) in leaders(&view) {
                if let (Some(old), Some(l)) = (led.get(&k), l)
                    && l.epoch > *old
                    && !elected.contains_key(&k)
                {
                    elected.insert(k, (cut.elapsed(), lone.acked(), l));
                }
            }
        }
        if stepped_down.is_none()
            && roles(&addrs[x]).is_some_and(|r| r.values().all(|(leads, _)| !leads))
        {
            stepped_down = Some(cut.elapsed());
        }
        assert!(
            cut.elapsed() < TIMEOUT,
            "{} cut from etcd: new leaders {elected:?}, stepped down {stepped_down:?}",
            IDS[x]
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    for (k, (_, _, l)) in &elected {
        assert_ne!(
            l.node_id, IDS[x],
            "{k:?}: the node cut from etcd was elected"
        );
    }
    println!(
        "seed {seed}: {} cut from etcd (leading {:?}): stepped down of every partition after {:?}, new leaders named after {:?} (lease {LEASE_MS} ms)",
        IDS[x],
        led.keys().collect::<Vec<_>>(),
        stepped_down.unwrap(),
        elected.values().map(|(t, _, _)| *t).max().unwrap()
    );
    proxy.set_mode(Mode::Pass);
    proxy.cut();
    let healed = Instant::now();
    wait_for(
        "each partition led by exactly one node, the one etcd names",
        Some(&mut rest),
        || {
            let view = etcd.view(cluster)?;
            if view.alive.len() != 3 {
                return None;
            }
            let named: BTreeMap<Key, LeaderRecord> = leaders(&view)
                .into_iter()
                .map(|(k, l)| Some((k, l?)))
                .collect::<Option<_>>()?;
            let all: Vec<BTreeMap<u32, (bool, u64)>> =
                addrs.iter().map(|a| roles(a)).collect::<Option<_>>()?;
            for p in 0..PARTS {
                let leading: Vec<usize> = (0..3).filter(|&i| all[i][&p].0).collect();
                let l = &named[&(TOPIC.to_string(), p)];
                if leading.len() != 1 || IDS[leading[0]] != l.node_id {
                    return None;
                }
            }
            Some(())
        },
    );
    println!(
        "healed: one leader per partition, as etcd names, after {:?}",
        healed.elapsed()
    );
    let after = wait_for(
        "the node cut off leads its preferred partitions again",
        Some(&mut rest),
        || settled(etcd.view(cluster), &addrs, true),
    );
    for k in led.keys() {
        assert!(
            after[k].node_id == IDS[x] && after[k].epoch > elected[k].2.epoch,
            "{k:?}: not back with {} in a newer epoch: {:?}",
            IDS[x],
            after[k]
        );
    }
    let before_end = rest.acked();
    load(&mut [&mut rest], 500);
    let lone_sent = lone.sent.clone();
    let (_, lone_acks) = lone.finish(Duration::from_secs(3));
    let (sent, acks) = rest.finish(Duration::from_secs(10));
    assert!(
        acks.len() > before_end,
        "nothing acknowledged after the heal"
    );
    eventually("every replica caught up", TIMEOUT, || {
        converged(&addrs, &[0, 1, 2])
    });
    drop(procs);
    let mut after_election = 0;
    for (i, dir) in dirs.iter().enumerate() {
        check_topic_acks(IDS[i], dir, TOPIC, PARTS, &sent, &acks, |_, _| true);
        // The lone producer's acknowledgements on a unit x led, counted once another node
        // was elected for it; on the other partitions (led by the others throughout), all.
        after_election =
            check_topic_acks(IDS[i], dir, TOPIC, PARTS, &lone_sent, &lone_acks, |k, p| {
                elected
                    .get(&(TOPIC.to_string(), p))
                    .is_none_or(|(_, base, _)| k >= *base)
            });
    }
    println!(
        "lone producer: {} acknowledged, {after_election} of them (on partitions others led, or after a new leader was named) on every replica",
        lone_acks.len()
    );
}

/// A three-member etcd cluster that loses one member (SIGKILL, chosen by the seed: it may be
/// etcd's own leader) under `acks=all` load over every partition changes nothing: every unit
/// keeps its leader and its epoch for four leases, each node still leads exactly its
/// partitions, writes go on being acknowledged on every partition, and every acknowledged
/// record is on every replica. A 3 s lease leaves the client time to move to another member.
#[test]
fn per_partition_an_etcd_cluster_losing_a_member_changes_nothing() {
    let _serial = serial();
    let seed = seed();
    println!("seed {seed} (STRATALOG_CRASH_SEED)");
    let mut rng = common::Rng(seed);
    let lease = 3000;
    let mut etcd = EtcdCluster::start();
    let url = etcd.url();
    let cluster = "p-members";
    let (_tmp, dirs, addrs) = stores();
    let (procs, before) = three_settled(
        &|| etcd.view(cluster),
        &dirs,
        &addrs,
        cluster,
        lease,
        |_| url.clone(),
    );
    let mut producer = TopicProducer::start(&addrs.join(","), TOPIC, "all", "p");
    load(&mut [&mut producer], 500);
    let victim = rng.below(3) as usize;
    etcd.kill(victim);
    let acked_at_kill = producer.acked();
    // Four leases with a member gone; etcd's view and the nodes' are checked throughout.
    let killed = Instant::now();
    let mut looked = 0;
    while killed.elapsed() < Duration::from_millis(4 * lease) {
        load(&mut [&mut producer], 200);
        let Some(view) = etcd.view(cluster) else {
            continue;
        };
        for (k, l) in leaders(&view) {
            let was = &before[&k];
            assert!(
                l.as_ref()
                    .is_some_and(|l| l.node_id == was.node_id && l.epoch == was.epoch),
                "{k:?}: led by {} in epoch {} before etcd member m{victim} died, now {l:?}",
                was.node_id,
                was.epoch
            );
        }
        looked += 1;
    }
    assert!(looked > 0, "the etcd members left never answered");
    assert!(
        statuses_agree(&addrs, &[0, 1, 2], &before),
        "a node's status no longer says it leads exactly its partitions in their epochs"
    );
    let (sent, acks) = producer.finish(Duration::from_secs(10));
    for p in 0..PARTS {
        assert!(
            acks[acked_at_kill..].iter().any(|(q, _)| *q == p),
            "{TOPIC}/{p}: no write acknowledged after etcd member m{victim} died"
        );
    }
    eventually("every replica caught up", TIMEOUT, || {
        converged(&addrs, &[0, 1, 2])
    });
    drop(procs);
    for (i, dir) in dirs.iter().enumerate() {
        check_topic_acks(IDS[i], dir, TOPIC, PARTS, &sent, &acks, |_, _| true);
    }
    println!(
        "seed {seed}: etcd member m{victim} killed; the {} units kept their leaders and epochs for {} ms ({looked} looks); {} acknowledged ({} after the kill), every one on every replica",
        before.len(),
        4 * lease,
        acks.len(),
        acks.len() - acked_at_kill
    );
}

/// The nodes of an out-of-sync test: `x` frozen until it left the in-sync set of every unit,
/// records acknowledged (at `acks=all`, through the two others) on every partition meanwhile;
/// then the two others killed and `x` continued.
struct OutOfSync {
    procs: Vec<Option<Proc>>,
    x: usize,
    others: Vec<usize>,
    /// What was sent and acknowledged with every node in sync, before x was frozen.
    warm: (Vec<Vec<u8>>, Vec<(u32, u64)>),
    sent: Vec<Vec<u8>>,
    acks: Vec<(u32, u64)>,
    /// x's end of each partition of s when it was continued.
    x_ends: Vec<u64>,
}

fn out_of_sync(
    etcd: &Etcd,
    cluster: &str,
    dirs: &[PathBuf],
    addrs: &[String],
    x: usize,
    x_extra: &[&str],
    x_log: &std::path::Path,
) -> OutOfSync {
    let url = etcd.url();
    let mut procs: Vec<Option<Proc>> = (0..3)
        .map(|i| {
            Some(if i == x {
                etcd::serve_logged(
                    &dirs[i], IDS[i], &addrs[i], &url, cluster, LEASE_MS, x_extra, x_log,
                )
            } else {
                etcd::serve_with(&dirs[i], IDS[i], &addrs[i], &url, cluster, LEASE_MS, &[])
            })
        })
        .collect();
    wait_for("every unit led, all in sync", None, || {
        settled(etcd.view(cluster), addrs, false)
    });
    let others: Vec<usize> = (0..3).filter(|&i| i != x).collect();
    let other_ids: Vec<String> = others.iter().map(|&i| IDS[i].to_string()).collect();
    // Records on all three first, so that x's log does not end at 0.
    let mut warm = TopicProducer::start(&addrs.join(","), TOPIC, "all", "w");
    let fed = Instant::now();
    while warm.acked() < 60 {
        warm.feed(WINDOW);
        assert!(fed.elapsed() < TIMEOUT, "no 60 writes acknowledged");
        std::thread::sleep(Duration::from_millis(2));
    }
    let warm = warm.finish(Duration::from_secs(5));
    eventually("every replica caught up", TIMEOUT, || {
        converged(addrs, &[0, 1, 2])
    });
    procs[x].as_ref().unwrap().stop();
    // The producer starts once x leads nothing: a request to a frozen leader would hold the
    // producer (one request at a time) for its 30 s timeout.
    wait_for("every unit led by another node than x", None, || {
        let view = etcd.view(cluster)?;
        saw(format!("{view:?}"));
        leaders(&view)
            .values()
            .all(|l| l.as_ref().is_some_and(|l| l.node_id != IDS[x]))
            .then_some(())
    });
    let mut producer = TopicProducer::start(
        &others
            .iter()
            .map(|&i| addrs[i].as_str())
            .collect::<Vec<_>>()
            .join(","),
        TOPIC,
        "all",
        "p",
    );
    wait_for(
        "x out of every unit's in-sync set",
        Some(&mut producer),
        || {
            let view = etcd.view(cluster)?;
            saw(format!("{view:?}"));
            all_units()
                .iter()
                .all(|k| {
                    view.units.get(k).is_some_and(|u| {
                        u.leader
                            .as_ref()
                            .is_some_and(|l| l.epoch > 0 && l.node_id != IDS[x])
                            && u.in_sync.as_ref().is_some_and(|(e, ids)| {
                                Some(*e) == u.leader.as_ref().map(|l| l.epoch) && *ids == other_ids
                            })
                    })
                })
                .then_some(())
        },
    );
    let out_at = producer.acked();
    let fed = Instant::now();
    while producer.acked() < out_at + 100 {
        producer.feed(WINDOW);
        assert!(
            fed.elapsed() < TIMEOUT,
            "no 100 writes acknowledged with x out of sync"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let (sent, acks) = producer.finish(Duration::from_secs(5));
    for p in 0..PARTS {
        assert!(
            acks[out_at..].iter().any(|(q, _)| *q == p),
            "{TOPIC}/{p}: nothing acknowledged while x was out of sync"
        );
    }
    for &i in &others {
        procs[i] = None;
    }
    let x_ends = (0..PARTS)
        .map(|p| {
            let log = etcd::read_partition(&dirs[x], TOPIC, p);
            log.keys().max().map_or(0, |o| o + 1)
        })
        .collect();
    procs[x].as_ref().unwrap().resume();
    OutOfSync {
        procs,
        x,
        others,
        warm,
        sent,
        acks,
        x_ends,
    }
}

/// A node frozen until it left every unit's in-sync set, then the two in-sync nodes killed:
/// lacking acknowledged records, it is elected for no unit (four leases). One in-sync node
/// returns and is elected for every unit; the out-of-sync node follows it, catches up, is
/// published in sync again in every unit, and is then elected for every unit when that node
/// dies. It then holds every acknowledged record.
#[test]
fn per_partition_out_of_sync_node_is_not_elected() {
    let _serial = serial();
    let seed = seed();
    let mut rng = common::Rng(seed);
    let etcd = Etcd::start();
    let url = etcd.url();
    let cluster = "p-isr";
    let (tmp, dirs, addrs) = stores();
    let x = rng.below(3) as usize;
    let log = tmp[x].path().join("serve.log");
    let mut o = out_of_sync(&etcd, cluster, &dirs, &addrs, x, &[], &log);
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_millis(4 * LEASE_MS) {
        if let Some(view) = etcd.view(cluster) {
            for (k, l) in leaders(&view) {
                assert!(
                    l.as_ref().is_none_or(|l| l.node_id != IDS[o.x]),
                    "{k:?}: {}, out of sync, was elected: {l:?}",
                    IDS[o.x]
                );
            }
        }
        assert!(
            roles(&addrs[o.x]).is_none_or(|r| r.values().all(|(leads, _)| !leads)),
            "{}, out of sync, leads a partition",
            IDS[o.x]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // An in-sync node returns: it is elected for every unit, x follows it.
    let y = o.others[rng.below(2) as usize];
    o.procs[y] = Some(etcd::serve_with(
        &dirs[y],
        IDS[y],
        &addrs[y],
        &url,
        cluster,
        LEASE_MS,
        &[],
    ));
    // (Once back in sync x, the preferred leader of some units, may take those back.)
    wait_for(
        "every unit led by the returning node or by x, x back in each in-sync set",
        None,
        || {
            let view = etcd.view(cluster)?;
            let mut named = BTreeMap::new();
            for k in all_units() {
                let u = view.units.get(&k)?;
                let l = u
                    .leader
                    .clone()
                    .filter(|l| l.epoch > 0 && (l.node_id == IDS[y] || l.node_id == IDS[o.x]))?;
                let x_in = u
                    .in_sync
                    .as_ref()
                    .is_some_and(|(e, ids)| *e == l.epoch && ids.iter().any(|i| i == IDS[o.x]));
                if !x_in {
                    saw(format!("{view:?}"));
                    return None;
                }
                named.insert(k, l);
            }
            statuses_agree(&addrs, &[o.x, y], &named).then_some(())
        },
    );
    // Back in sync, x may be elected: kill y.
    o.procs[y] = None;
    let killed = Instant::now();
    wait_for("x, in sync again, leads every unit", None, || {
        let view = etcd.view(cluster)?;
        let named = leaders(&view);
        let all_x = named
            .values()
            .all(|l| l.as_ref().is_some_and(|l| l.node_id == IDS[o.x]));
        let leads = roles(&addrs[o.x]).is_some_and(|r| r.values().all(|(leads, _)| *leads));
        (all_x && leads).then_some(())
    });
    println!(
        "seed {seed}: {} out of sync was elected for nothing in {} ms; {} returned, every unit led again with {} back in its in-sync set; it was elected for every unit {:?} after {} died",
        IDS[o.x],
        4 * LEASE_MS,
        IDS[y],
        IDS[o.x],
        killed.elapsed(),
        IDS[y]
    );
    let procs = std::mem::take(&mut o.procs);
    drop(procs);
    for i in [o.x, y] {
        check_topic_acks(IDS[i], &dirs[i], TOPIC, PARTS, &o.sent, &o.acks, |_, _| {
            true
        });
        let (sent, acks) = &o.warm;
        check_topic_acks(IDS[i], &dirs[i], TOPIC, PARTS, sent, acks, |_, _| true);
    }
}

/// The same with `--unclean-election` on the out-of-sync node: once no in-sync node came back
/// for two lease times it is elected for every unit, and logs loudly, per partition, the log
/// end from which acknowledged records may be lost; acknowledged records past that end exist
/// (they are the ones lost).
#[test]
fn per_partition_unclean_election_elects_an_out_of_sync_node() {
    let _serial = serial();
    let seed = seed();
    let mut rng = common::Rng(seed);
    let etcd = Etcd::start();
    let cluster = "p-unclean";
    let (tmp, dirs, addrs) = stores();
    let x = rng.below(3) as usize;
    let log = tmp[x].path().join("serve.log");
    let o = out_of_sync(
        &etcd,
        cluster,
        &dirs,
        &addrs,
        x,
        &["--unclean-election"],
        &log,
    );
    let continued = Instant::now();
    wait_for("x elected uncleanly for every unit", None, || {
        let view = etcd.view(cluster)?;
        let all_x = leaders(&view)
            .values()
            .all(|l| l.as_ref().is_some_and(|l| l.node_id == IDS[o.x]));
        let leads = roles(&addrs[o.x]).is_some_and(|r| r.values().all(|(leads, _)| *leads));
        (all_x && leads).then_some(())
    });
    let elected = continued.elapsed();
    let text = std::fs::read_to_string(&log).unwrap();
    for p in 0..PARTS {
        let line = text
            .lines()
            .find(|l| {
                l.contains("UNCLEAN ELECTION")
                    && l.contains(&format!("topic=\"{TOPIC}\""))
                    && l.contains(&format!(" partition={p} "))
            })
            .unwrap_or_else(|| panic!("no unclean election logged for {TOPIC}/{p}:\n{text}"));
        let end: u64 = line
            .split("log_end=Some(")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no log end in {line:?}"));
        assert!(
            end > 0 && end == o.x_ends[p as usize],
            "{TOPIC}/{p}: the logged end is not where x's log ended ({}): {line}",
            o.x_ends[p as usize]
        );
        let lost = o
            .acks
            .iter()
            .filter(|(q, off)| *q == p && *off >= end)
            .count();
        assert!(
            lost > 0,
            "{TOPIC}/{p}: no acknowledged record at or past the logged end {end}"
        );
        println!("{TOPIC}/{p}: logged from offset {end} on; {lost} acknowledged records past it");
    }
    println!(
        "seed {seed}: {} elected uncleanly for every unit {elected:?} after it was continued",
        IDS[o.x]
    );
    drop(o.procs);
}

/// A node holding a unit's leadership key under its live lease without leading the unit (a
/// campaign etcd applied whose answer timed out: seen in `per_partition_leader_killed_rounds`,
/// where nobody led s/5 for a minute) gives the key back, and the unit gets a leader. The
/// state is made by hand: the nodes frozen, t's key of s/0 replaced by one naming another
/// node, epoch 0, under that node's lease, then the nodes continued. Timed out without the
/// fix in `units.rs` (the node took its own key for one of a former run, waiting for a lease
/// that never lapsed; the others took it for an epoch being started).
#[test]
fn per_partition_a_key_held_without_leading_is_given_back() {
    let _serial = serial();
    let lease = 3000;
    let etcd = Etcd::start();
    let url = etcd.url();
    let cluster = "p-lost-answer";
    let (_tmp, dirs, addrs) = stores();
    let (procs, before) = three_settled(
        &|| etcd.view(cluster),
        &dirs,
        &addrs,
        cluster,
        lease,
        |_| url.clone(),
    );
    let unit = (TOPIC.to_string(), 0);
    let old = before[&unit].clone();
    let l = IDS.iter().position(|i| *i == old.node_id).unwrap();
    let n = (l + 1) % 3;
    let prefix = format!("/stratalog/{cluster}/");
    let got = etcd.gateway(
        "kv/range",
        &serde_json::json!({ "key": etcd::b64(format!("{prefix}alive/{}", IDS[n]).as_bytes()) }),
    );
    let lease_n = got["kvs"][0]["lease"]
        .as_str()
        .unwrap_or_else(|| panic!("no lease on alive/{}: {got}", IDS[n]))
        .to_string();
    let key = etcd::b64(format!("{prefix}p/{TOPIC}/0/leader").as_bytes());
    let value = etcd::b64(format!("0 {} {}", addrs[n], IDS[n]).as_bytes());
    for p in procs.iter().flatten() {
        p.stop();
    }
    etcd.gateway("kv/deleterange", &serde_json::json!({ "key": key }));
    etcd.gateway(
        "kv/put",
        &serde_json::json!({ "key": key, "value": value, "lease": lease_n }),
    );
    for p in procs.iter().flatten() {
        p.resume();
    }
    let fixed = Instant::now();
    let after = wait_for("s/0 led again, all in sync", None, || {
        settled(etcd.view(cluster), &addrs, false)
    });
    assert!(after[&unit].epoch > old.epoch, "{:?}", after[&unit]);
    println!(
        "s/0 (led by {} in epoch {}, its key then held by {} under its lease): led by {} in epoch {} after {:?}",
        old.node_id,
        old.epoch,
        IDS[n],
        after[&unit].node_id,
        after[&unit].epoch,
        fixed.elapsed()
    );
    drop(procs);
}
