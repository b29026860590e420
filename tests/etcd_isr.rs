//! A new leader keeps the in-sync set it was elected from (a real etcd on 127.0.0.1, three
//! `stratalog serve --coordinator` nodes, the default per-partition election).
//!
//! `a_second_failure_right_after_an_election_still_elects_an_in_sync_node`: t/0's leader `x`
//! is SIGKILLed while `z` is frozen (SIGSTOP, with a lease long enough that etcd still counts
//! it up), so the only node that can be elected, `y`, cannot see `z` fetch. `y` is killed as
//! soon as it leads, before the lag timeout could take `z` out of its in-sync set; `z` is then
//! continued. `z` was in sync under `x`, so it holds every acknowledged record: it must be
//! elected for t/0, with no unclean election, and hold every acknowledged record. When a new
//! leader published itself alone as the in-sync set, `z` was never elected (the partition had
//! no leader until `x` or `y` came back).

#[path = "common/cluster.rs"]
mod cluster;
mod common;
#[path = "common/etcd.rs"]
mod etcd;

use std::time::{Duration, Instant};

use cluster::{Proc, Producer, check_acked, create_topic, eventually, read_log, status};
use etcd::Etcd;
use stratalog::replication::coordinator::UnitRecord;

const LEASE_MS: u64 = 1000;
/// `z`'s lease: it stays up in etcd's eyes while it is frozen.
const LONG_LEASE_MS: u64 = 8000;
/// Long enough that `y` cannot drop `z` between its election and its death.
const LAG_MS: u64 = 4000;
const TIMEOUT: Duration = Duration::from_secs(30);
const IDS: [&str; 3] = ["a", "b", "c"];

fn serve(dir: &std::path::Path, id: &str, listen: &str, url: &str, lease_ms: u64) -> Proc {
    let (lease, lag) = (lease_ms.to_string(), LAG_MS.to_string());
    cluster::serve(
        dir,
        id,
        listen,
        None,
        &[
            "--coordinator",
            url,
            "--cluster",
            "isr",
            "--lease-ms",
            &lease,
            "--replicas",
            "3",
            "--min-in-sync",
            "2",
            "--replica-lag-timeout",
            &lag,
        ],
    )
}

/// etcd's record of t/0.
fn t0(etcd: &Etcd) -> Option<UnitRecord> {
    etcd.view("isr")?.units.get(&("t".to_string(), 0)).cloned()
}

#[test]
fn a_second_failure_right_after_an_election_still_elects_an_in_sync_node() {
    let etcd = Etcd::start();
    let url = etcd.url();
    let tmp: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let dirs: Vec<std::path::PathBuf> = tmp.iter().map(|t| t.path().to_path_buf()).collect();
    create_topic(&dirs);
    let addrs = common::free_addrs(3);
    // Which node will be `z` is known only once t/0 has a leader: it is restarted then.
    let mut procs: Vec<Option<Proc>> = (0..3)
        .map(|i| Some(serve(&dirs[i], IDS[i], &addrs[i], &url, LEASE_MS)))
        .collect();
    // t/0 led by its preferred leader (so that it stays where it is), all three in sync.
    let settled = |etcd: &Etcd| -> Option<UnitRecord> {
        let u = t0(etcd)?;
        let leads = u
            .leader
            .as_ref()
            .is_some_and(|l| l.epoch > 0 && Some(&l.node_id) == u.preferred.as_ref());
        let all = u.in_sync.as_ref().is_some_and(|(_, ids)| ids.len() == 3);
        let up = etcd.view("isr").is_some_and(|v| v.alive.len() == 3);
        (leads && all && up).then_some(u)
    };
    let mut first = None;
    eventually("t/0 led, all three in sync", TIMEOUT, || {
        first = settled(&etcd);
        first.is_some()
    });
    let leader_of = |u: &UnitRecord| {
        let id = &u.leader.as_ref().unwrap().node_id;
        IDS.iter().position(|i| i == id).unwrap()
    };
    let x = leader_of(first.as_ref().unwrap());
    let (y, z) = ((x + 1) % 3, (x + 2) % 3);
    // `z` again, with a lease that outlasts its freeze; not t/0's preferred leader, it does
    // not take t/0 over.
    procs[z] = None;
    procs[z] = Some(serve(&dirs[z], IDS[z], &addrs[z], &url, LONG_LEASE_MS));
    let mut before = None;
    eventually("t/0 settled again with z back in sync", TIMEOUT, || {
        before = settled(&etcd);
        before.is_some()
    });
    let before = before.unwrap();
    assert_eq!(leader_of(&before), x, "t/0 moved while z restarted");
    // Acknowledged records, at `acks=all`, that all three hold.
    let mut producer = Producer::start(&addrs[x], "all", 1);
    for k in 0..200 {
        assert!(producer.send(format!("r-{k}").into_bytes()));
    }
    eventually("the writes acknowledged", TIMEOUT, || {
        producer.acks().len() == 200
    });
    let sent = producer.sent.clone();
    let acks = producer.finish(Duration::from_secs(3));
    eventually("z holds every record", TIMEOUT, || {
        status(&addrs[z]).is_some_and(|s| s["partitions"][0]["log_end"].as_u64() >= Some(200))
    });

    procs[z].as_ref().unwrap().stop();
    procs[x] = None; // SIGKILL
    let killed = Instant::now();
    let mut elected = None;
    eventually("y elected for t/0", TIMEOUT, || {
        elected = t0(&etcd).filter(|u| {
            u.leader.as_ref().is_some_and(|l| {
                l.node_id == IDS[y] && l.epoch > before.leader.as_ref().unwrap().epoch
            }) && u.in_sync.as_ref().is_some_and(|(e, _)| *e >= u.epoch)
        });
        elected.is_some()
    });
    procs[y] = None; // SIGKILL, before the lag timeout could drop z
    let elected = elected.unwrap();
    let published = elected.in_sync.clone().unwrap().1;
    println!(
        "x={} killed, y={} elected {} ms later publishing {:?}, then killed",
        IDS[x],
        IDS[y],
        killed.elapsed().as_millis(),
        published
    );
    procs[z].as_ref().unwrap().resume();
    let mut last = None;
    let waited = Instant::now();
    while waited.elapsed() < TIMEOUT {
        last = t0(&etcd);
        if last
            .as_ref()
            .and_then(|u| u.leader.as_ref())
            .is_some_and(|l| l.node_id == IDS[z] && l.epoch > elected.epoch)
            && status(&addrs[z]).is_some_and(|s| s["partitions"][0]["role"] == "leader")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        last.as_ref()
            .and_then(|u| u.leader.as_ref())
            .is_some_and(|l| l.node_id == IDS[z]),
        "z, in sync under x, was not elected for t/0 after x and y died (y had published \
         {published:?}); etcd's t/0: {last:?}"
    );
    drop(procs);
    let (records, _) = read_log(&dirs[z], u64::MAX);
    let covered = check_acked(IDS[z], &records, &sent, &acks);
    assert_eq!(covered, 200, "z lacks acknowledged records");
}
