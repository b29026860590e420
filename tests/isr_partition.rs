//! A partitioned follower leaves the in-sync set and comes back, with real processes on
//! 127.0.0.1: three `stratalog serve` nodes (`--replicas 3 --min-in-sync 2`, a 1 s lag
//! timeout); follower `n2` reaches the leader only through the fault proxy of
//! `tests/common/proxy.rs` (its `--leader` is the proxy). Two producers, one at `acks=quorum`
//! and one at `acks=all`, write all along. Three partitions in turn: a black hole healed
//! silently (the follower must notice its lost fetch by itself), then each one-way drop healed
//! by cutting the connections. Each time: the producers keep being acknowledged while `n2` is
//! cut off, the leader's `status --json` shows `n2` `in_sync: false` after the lag timeout and
//! `in_sync: true` again after the heal, with `n2` caught up. At the end the three logs are
//! byte-identical up to the high watermark and every acknowledged record is on each of them.
//! Every process and the proxy stop when the test ends, also when it fails.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cluster::{Producer, check_acked, eventually, follower_state, read_log, serve, status};
use common::proxy::{Mode, Proxy};

/// Bound of every wait; the whole test takes well under a minute in release.
const WAIT: Duration = Duration::from_secs(30);

/// The two producers, fed one line each every few milliseconds by the test's thread.
struct Load {
    quorum: Producer,
    all: Producer,
    n: u64,
}

impl Load {
    /// Sends one line to each producer.
    fn tick(&mut self) {
        self.n += 1;
        let n = self.n;
        assert!(
            self.quorum.send(format!("q-{n}").into_bytes()),
            "the acks=quorum producer exited"
        );
        assert!(
            self.all.send(format!("a-{n}").into_bytes()),
            "the acks=all producer exited (a refusal ends it)"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    /// Keeps writing until `cond` holds (checked every 100 ms); panics naming `what` after
    /// `WAIT`.
    fn until(&mut self, what: &str, mut cond: impl FnMut(&Load) -> bool) {
        let started = Instant::now();
        let mut last_check = Instant::now();
        loop {
            self.tick();
            if last_check.elapsed() >= Duration::from_millis(100) {
                if cond(self) {
                    return;
                }
                last_check = Instant::now();
            }
            assert!(
                started.elapsed() < WAIT,
                "timed out after {WAIT:?} waiting for {what}"
            );
        }
    }

    fn acked(&self) -> (usize, usize) {
        (self.quorum.acks().len(), self.all.acks().len())
    }
}

#[test]
fn a_partitioned_follower_leaves_the_in_sync_set_and_rejoins() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (0..3).map(|i| tmp.path().join(format!("n{i}"))).collect();
    cluster::create_topic(&dirs);
    let addrs = common::free_addrs(3);
    let proxy = Proxy::start(addrs[0].parse().unwrap()).unwrap();
    let via_proxy = proxy.addr().to_string();
    let args = [
        "--replicas",
        "3",
        "--min-in-sync",
        "2",
        "--replica-lag-timeout",
        "1000",
    ];
    // No --peers: n2 must not find a way around the proxy.
    let _nodes = [
        serve(&dirs[0], "n0", &addrs[0], None, &args),
        serve(&dirs[1], "n1", &addrs[1], Some(&addrs[0]), &args),
        serve(&dirs[2], "n2", &addrs[2], Some(&via_proxy), &args),
    ];
    let leader = addrs[0].as_str();
    let n2 = |s: &serde_json::Value| follower_state(s, "n2");
    let both_in_sync = || {
        status(leader).is_some_and(|s| {
            follower_state(&s, "n1").is_some_and(|(i, _)| i) && n2(&s).is_some_and(|(i, _)| i)
        })
    };
    eventually("both followers in sync", WAIT, both_in_sync);

    let mut load = Load {
        quorum: Producer::start(leader, "quorum", 4),
        all: Producer::start(leader, "all", 4),
        n: 0,
    };
    load.until("first acknowledgements", |l| {
        let (q, a) = l.acked();
        q > 0 && a > 0
    });
    let mut figures = Vec::new();
    for (mode, heal_by_cut) in [
        (Mode::Blackhole, false),
        (Mode::DropClientToServer, true),
        (Mode::DropServerToClient, true),
    ] {
        let at_fault = Instant::now();
        proxy.set_mode(mode);
        let n2_end_at_fault = status(&addrs[2]).unwrap()["partitions"][0]["log_end"]
            .as_u64()
            .unwrap();
        // n2 leaves the in-sync set once the lag timeout has passed, while n1 stays in it.
        load.until(&format!("{mode:?}: n2 out of the in-sync set"), |_| {
            status(leader).is_some_and(|s| {
                n2(&s).is_some_and(|(i, _)| !i) && follower_state(&s, "n1").is_some_and(|(i, _)| i)
            })
        });
        // A figure, not a check: the lag timeout counts from when n2 was last caught up, which
        // under load may be before the fault.
        let left_after = at_fault.elapsed();
        // Both producers keep being acknowledged with n2 cut off.
        let before = load.acked();
        load.until(&format!("{mode:?}: acknowledgements without n2"), |l| {
            let now = l.acked();
            now.0 > before.0 + 5 && now.1 > before.1 + 5
        });
        let s2 = status(&addrs[2]).unwrap();
        let n2_end = s2["partitions"][0]["log_end"].as_u64().unwrap();
        let leader_end = status(leader).unwrap()["partitions"][0]["log_end"]
            .as_u64()
            .unwrap();
        assert!(
            n2_end < leader_end,
            "{mode:?}: n2 ({n2_end}) is cut off but as far as the leader ({leader_end})"
        );
        assert_eq!(s2["role"], "follower", "{mode:?}: n2 stays a follower");
        // Heal: silently (the follower's lost fetch must time out by itself) or by closing the
        // connections (both ends see them end, as after a reset).
        let at_heal = Instant::now();
        proxy.set_mode(Mode::Pass);
        if heal_by_cut {
            proxy.cut();
        }
        load.until(&format!("{mode:?}: n2 back in the in-sync set"), |_| {
            status(leader).is_some_and(|s| n2(&s).is_some_and(|(i, _)| i))
        });
        figures.push(format!(
            "{mode:?} (n2 at {n2_end_at_fault} when cut): out of sync after {:.1} s, back in {:.1} s after the heal{}",
            left_after.as_secs_f64(),
            at_heal.elapsed().as_secs_f64(),
            if heal_by_cut { " (cut)" } else { " (silent)" }
        ));
    }
    let (q_sent, a_sent) = (load.quorum.sent.len(), load.all.sent.len());
    let (q_sent_vals, a_sent_vals) = (load.quorum.sent.clone(), load.all.sent.clone());
    let q_acks = load.quorum.finish(WAIT);
    let a_acks = load.all.finish(WAIT);

    // The end: both followers in sync with no lag, the high watermark at the log end.
    eventually("all caught up at the end", WAIT, || {
        status(leader).is_some_and(|s| {
            let p = &s["partitions"][0];
            p["high_watermark"] == p["log_end"]
                && ["n1", "n2"]
                    .iter()
                    .all(|id| follower_state(&s, id) == Some((true, 0)))
        })
    });
    let hw = status(leader).unwrap()["partitions"][0]["high_watermark"]
        .as_u64()
        .unwrap();
    let (records, bytes) = read_log(&dirs[0], hw);
    assert_eq!(
        records.len() as u64,
        hw,
        "dense offsets up to the high watermark"
    );
    for d in &dirs {
        let (other_records, other) = read_log(d, hw);
        assert!(
            other == bytes,
            "replica {} differs from the leader below the high watermark {hw}",
            d.display()
        );
        check_acked("acks=quorum", &other_records, &q_sent_vals, &q_acks);
        check_acked("acks=all", &other_records, &a_sent_vals, &a_acks);
    }
    let q_covered = check_acked("acks=quorum", &records, &q_sent_vals, &q_acks);
    let a_covered = check_acked("acks=all", &records, &a_sent_vals, &a_acks);
    eprintln!(
        "isr_partition: {}; sent {q_sent} at quorum ({q_covered} acknowledged), {a_sent} at all ({a_covered} acknowledged); 3 replicas byte-identical up to the high watermark {hw}; {:.1} s",
        figures.join("; "),
        started.elapsed().as_secs_f64()
    );
}
