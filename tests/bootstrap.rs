//! Bootstrap of a new follower and a new mirror from a snapshot streamed by the leader
//! (`snapshot::bootstrap_node`, docs/DR.md), with real processes on 127.0.0.1: the leader's
//! retention deleted its first segments; a `serve --leader` and a `mirror --source` started on
//! empty directories take a snapshot (they say so on stderr), then follow; both end
//! byte-identical to the leader up to its high watermark, from the same start offset, with
//! the leader's consumer group.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cluster::{BIN, Proc, Producer, eventually, read_log, serve, status};
use stratalog::{FsyncPolicy, LogConfig, PartitionerKind, Store, StoreOptions, TopicConfig};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Starts `stratalog ARGS` with `RUST_LOG=info`, its stderr into `log`, and returns once it
/// prints `listening on`.
fn spawn_logged(args: &[&str], log: &Path) -> Proc {
    let mut child = Proc(
        Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("spawn"),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("listening on "),
        "{args:?} printed {line:?}"
    );
    child
}

/// (log_start, log_end, high_watermark) of t/0 on the node at `addr`.
fn offsets(addr: &str) -> Option<(u64, u64, u64)> {
    let s = status(addr)?;
    let p = &s["partitions"][0];
    Some((
        p["log_start"].as_u64()?,
        p["log_end"].as_u64()?,
        p["high_watermark"].as_u64()?,
    ))
}

#[test]
fn a_new_follower_and_a_new_mirror_bootstrap_from_the_leaders_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    // The leader's store: small segments, retention of 16 KiB applied, so its first
    // segments are gone; a consumer group committed.
    {
        let store = Store::open(
            &a,
            StoreOptions {
                retention_interval: None,
                ..Default::default()
            },
        )
        .unwrap();
        let config = TopicConfig {
            log: LogConfig {
                segment_bytes: 4096,
                retention_bytes: Some(16 << 10),
                ..Default::default()
            },
            fsync: FsyncPolicy::Never,
        };
        store
            .create_topic("t", 1, config, PartitionerKind::Jump)
            .unwrap();
        let log = store.partition("t", 0).unwrap();
        for i in 0..400 {
            log.append_records(&[format!("{i:0>100}")]).unwrap();
        }
        log.flush().unwrap();
        store.commit("g", "t", 0, 390, log.leader_epoch()).unwrap();
        store.apply_retention();
        assert!(log.start_offset() > 0, "retention deleted nothing");
        drop(log);
        store.close().unwrap();
    }
    let addrs = common::free_addrs(3);
    let _leader = serve(&a, "a", &addrs[0], None, &[]);
    let (start, _, _) = offsets(&addrs[0]).unwrap();
    assert!(start > 0);

    let (b_log, c_log) = (tmp.path().join("b.log"), tmp.path().join("c.log"));
    let _follower = spawn_logged(
        &[
            "serve",
            "--dir",
            b.to_str().unwrap(),
            "--node-id",
            "b",
            "--listen",
            &addrs[1],
            "--leader",
            &addrs[0],
        ],
        &b_log,
    );
    let _mirror = spawn_logged(
        &[
            "mirror",
            "--dir",
            c.to_str().unwrap(),
            "--source",
            &addrs[0],
            "--listen",
            &addrs[2],
        ],
        &c_log,
    );
    // More records once they follow.
    let mut producer = Producer::start(&addrs[0], "leader", 1);
    for i in 0..50 {
        assert!(producer.send(format!("after-{i}").into_bytes()));
    }
    let acks = producer.finish(Duration::from_secs(20));
    assert_eq!(acks.len(), 50, "every record acknowledged");

    let mut leader_end = 0;
    eventually(
        "the follower and the mirror at the leader's end",
        TIMEOUT,
        || {
            let Some((_, end, hw)) = offsets(&addrs[0]) else {
                return false;
            };
            leader_end = end;
            hw == end
                && offsets(&addrs[1]).is_some_and(|o| o.1 == end)
                && offsets(&addrs[2]).is_some_and(|o| o.1 == end)
        },
    );
    for (who, addr) in [("follower", &addrs[1]), ("mirror", &addrs[2])] {
        let (s, _, _) = offsets(addr).unwrap();
        assert_eq!(
            s, start,
            "{who}: starts where the leader's retention left it"
        );
    }
    let (_, want) = read_log(&a, leader_end);
    for (who, dir) in [("follower", &b), ("mirror", &c)] {
        let (_, got) = read_log(dir, leader_end);
        assert!(
            got == want,
            "{who}: its batches differ from the leader's ({} and {} bytes)",
            got.len(),
            want.len()
        );
    }
    for (who, log) in [("follower", &b_log), ("mirror", &c_log)] {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(
            text.contains("bootstrapped from a snapshot"),
            "{who} did not bootstrap: {text}"
        );
    }
    drop(_follower);
    drop(_mirror);
    for (who, dir) in [("follower", &b), ("mirror", &c)] {
        let store = Store::open(
            dir,
            StoreOptions {
                retention_interval: None,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            store.committed("g", "t", 0).map(|c| c.offset),
            Some(390),
            "{who}: the leader's group"
        );
    }
    println!(
        "follower and mirror bootstrapped at offset {start}, followed to {leader_end}, {} batch bytes identical",
        want.len()
    );
}
