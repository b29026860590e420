//! A `stratalog snapshot` or `stratalog restore` killed (SIGKILL) at a random moment leaves
//! either nothing at its target or a complete result: a snapshot that verifies, a restored
//! store that opens with exactly the snapshot's offsets. Never a half one.
#![cfg(feature = "cli")]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rand::Rng;
use stratalog::{
    FsyncPolicy, LogConfig, PartitionerKind, Store, StoreOptions, TopicConfig, snapshot,
};

const BIN: &str = env!("CARGO_BIN_EXE_stratalog");

/// Kills and reaps the child when dropped, also when the test fails.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn options() -> StoreOptions {
    StoreOptions {
        retention_interval: None,
        ..Default::default()
    }
}

/// A store of about 8 MiB in 1 MiB segments, so that a copy takes some milliseconds.
fn store(dir: &Path) {
    let store = Store::open(dir, options()).unwrap();
    let config = TopicConfig {
        log: LogConfig {
            segment_bytes: 1 << 20,
            ..Default::default()
        },
        fsync: FsyncPolicy::Never,
    };
    store
        .create_topic("t", 2, config, PartitionerKind::Jump)
        .unwrap();
    let value = vec![7u8; 16 << 10];
    for p in 0..2 {
        let log = store.partition("t", p).unwrap();
        for _ in 0..(4 << 20) / (4 * value.len()) {
            log.append_records(&[&value[..], &value[..], &value[..], &value[..]])
                .unwrap();
        }
        store.commit("g", "t", p, 9, log.leader_epoch()).unwrap();
    }
    store.close().unwrap();
}

/// Runs the binary and kills it after `delay` (if it is still running).
fn run_killed(args: &[&str], delay: Duration) {
    let child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = Killed(child);
    std::thread::sleep(delay);
    let _ = guard.0.kill();
    let _ = guard.0.wait();
}

#[test]
fn a_killed_snapshot_or_restore_leaves_nothing_or_a_whole_result() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    store(&src);
    let reference = tmp.path().join("reference");
    let manifest = snapshot::create_offline(&src, &reference).unwrap().manifest;
    // How long each command takes here, unkilled (machines and their load differ): the kills
    // land at random within 1.2 times that, so that some runs finish and most do not. The
    // times only place the kills; no check depends on them.
    let timed = |args: &[&str]| {
        let started = std::time::Instant::now();
        let status = Command::new(BIN)
            .args(args)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "stratalog {args:?}");
        started.elapsed().as_micros() as u64 * 6 / 5 + 1
    };
    let timed_snap = tmp.path().join("timed-snap");
    let snapshot_us = timed(&[
        "snapshot",
        "--dir",
        src.to_str().unwrap(),
        "--out",
        timed_snap.to_str().unwrap(),
    ]);
    let timed_restore = tmp.path().join("timed-restore");
    let restore_us = timed(&[
        "restore",
        "--snapshot",
        reference.to_str().unwrap(),
        "--dir",
        timed_restore.to_str().unwrap(),
    ]);
    let mut rng = rand::rng();
    let (mut snaps_whole, mut restores_whole) = (0, 0);
    let rounds = 12;
    for round in 0..rounds {
        let delay = Duration::from_micros(rng.random_range(0..snapshot_us));
        let snap = tmp.path().join(format!("snap{round}"));
        run_killed(
            &[
                "snapshot",
                "--dir",
                src.to_str().unwrap(),
                "--out",
                snap.to_str().unwrap(),
            ],
            delay,
        );
        if snap.exists() {
            snapshot::verify(&snap).unwrap();
            snaps_whole += 1;
        }
        let restored = tmp.path().join(format!("restored{round}"));
        run_killed(
            &[
                "restore",
                "--snapshot",
                reference.to_str().unwrap(),
                "--dir",
                restored.to_str().unwrap(),
            ],
            Duration::from_micros(rng.random_range(0..restore_us)),
        );
        if restored.exists() {
            let store = Store::open(&restored, options()).unwrap();
            for p in &manifest.partitions {
                if let Some(n) = p.dir.strip_prefix("t/") {
                    let log = store.partition("t", n.parse().unwrap()).unwrap();
                    assert_eq!(
                        (log.start_offset(), log.end_offset()),
                        (p.start_offset, p.end_offset)
                    );
                }
            }
            assert_eq!(store.committed("g", "t", 1).map(|c| c.offset), Some(9));
            store.close().unwrap();
            restores_whole += 1;
        }
        // The source is intact whatever was killed (the snapshot took its lock).
        snapshot::create_offline(&src, &tmp.path().join(format!("check{round}"))).unwrap();
    }
    println!(
        "{rounds} rounds (kills within {snapshot_us} us of a snapshot, {restore_us} us of a restore): {snaps_whole} snapshot(s) and {restores_whole} restore(s) had finished, the rest left nothing at their target"
    );
}
