//! Partitioners: spread over partitions, keys moved when a partition is added (consistent
//! hashing about 1/(n+1), modulo nearly all), same key same partition and order, and the
//! versions a topic keeps.

use stratalog::store::{PartitionerKind, Store, StoreOptions, TopicConfig};
use stratalog::{BatchBuilder, Compression, Partitioner, Record};

const KEYS: usize = 100_000;

fn keys() -> Vec<Vec<u8>> {
    (0..KEYS)
        .map(|i| format!("user-{i}").into_bytes())
        .collect()
}

fn kinds() -> [PartitionerKind; 5] {
    [
        PartitionerKind::Modulo,
        PartitionerKind::Jump,
        PartitionerKind::Ring { vnodes: 256 },
        PartitionerKind::RoundRobin,
        PartitionerKind::Random,
    ]
}

/// Largest and smallest partition size relative to the mean.
fn spread(counts: &[usize]) -> (f64, f64) {
    let mean = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
    let max = *counts.iter().max().unwrap() as f64 / mean;
    let min = *counts.iter().min().unwrap() as f64 / mean;
    (max, min)
}

#[test]
fn spread_over_partitions() {
    let keys = keys();
    for n in [3u32, 8, 16] {
        for kind in kinds() {
            let p = Partitioner::new(kind, n).unwrap();
            let mut counts = vec![0usize; n as usize];
            for k in &keys {
                counts[p.partition(Some(k)) as usize] += 1;
            }
            let (max, min) = spread(&counts);
            println!("spread {kind} over {n}: max/mean {max:.3}, min/mean {min:.3}");
            // A ring with 256 points per partition is within about 15% of even; the others
            // within a few percent (100,000 keys).
            let tolerance = if matches!(kind, PartitionerKind::Ring { .. }) {
                0.2
            } else {
                0.05
            };
            assert!(
                max < 1.0 + tolerance && min > 1.0 - tolerance,
                "{kind} over {n}: {counts:?}"
            );
        }
    }
}

#[test]
fn keys_moved_when_a_partition_is_added() {
    let keys = keys();
    for n in [4u32, 10] {
        let ideal = 1.0 / f64::from(n + 1);
        for kind in [
            PartitionerKind::Modulo,
            PartitionerKind::Jump,
            PartitionerKind::Ring { vnodes: 256 },
        ] {
            let before = Partitioner::new(kind, n).unwrap();
            let after = Partitioner::new(kind, n + 1).unwrap();
            let moved = after.moved(&before, keys.iter().map(Vec::as_slice));
            let count = moved.iter().flatten().count();
            let fraction = count as f64 / KEYS as f64;
            let to_new = moved.iter().flatten().filter(|(_, to)| *to == n).count();
            println!(
                "{kind} {n} -> {}: {count} of {KEYS} keys moved ({:.1}%, 1/(n+1) = {:.1}%), {to_new} of them to the new partition",
                n + 1,
                fraction * 100.0,
                ideal * 100.0
            );
            match kind {
                PartitionerKind::Modulo => {
                    // n/(n+1) of the keys move.
                    assert!(fraction > 0.75, "{kind}: {fraction}");
                }
                _ => {
                    assert!(
                        (fraction - ideal).abs() < ideal * 0.2,
                        "{kind}: {fraction} vs {ideal}"
                    );
                    assert_eq!(
                        to_new, count,
                        "consistent: keys only move to the new partition"
                    );
                }
            }
        }
    }
}

#[test]
fn same_key_same_partition_and_order_through_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        StoreOptions {
            retention_interval: None,
            ..Default::default()
        },
    )
    .unwrap();
    store
        .create_topic("t", 6, TopicConfig::default(), PartitionerKind::Jump)
        .unwrap();
    let partitioner = store.partitioner("t").unwrap();
    // 50 keys, 40 records each, interleaved, appended one batch per partition per round.
    for round in 0..40 {
        let mut builders: Vec<BatchBuilder> = (0..6)
            .map(|_| BatchBuilder::new(Compression::None))
            .collect();
        for k in 0..50 {
            let key = format!("k{k}");
            let value = format!("{k}:{round}");
            let p = partitioner.partition(Some(key.as_bytes()));
            builders[p as usize]
                .push(&Record {
                    timestamp: 0,
                    key: Some(key.as_bytes()),
                    value: value.as_bytes(),
                    headers: &[],
                })
                .unwrap();
        }
        for (p, b) in builders.iter().enumerate() {
            if !b.is_empty() {
                store
                    .partition("t", p as u32)
                    .unwrap()
                    .append(b)
                    .unwrap()
                    .receipt
                    .wait()
                    .unwrap();
            }
        }
    }
    let mut seen_in: std::collections::HashMap<String, u32> = Default::default();
    let mut next_round: std::collections::HashMap<String, u32> = Default::default();
    for p in 0..6 {
        let log = store.partition("t", p).unwrap();
        for batch in log.read(0, usize::MAX).unwrap() {
            for r in batch.records().unwrap() {
                let r = r.unwrap();
                let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
                let value = String::from_utf8(r.value.to_vec()).unwrap();
                let round: u32 = value.split(':').nth(1).unwrap().parse().unwrap();
                assert_eq!(
                    *seen_in.entry(key.clone()).or_insert(p),
                    p,
                    "{key} in two partitions"
                );
                let expected = next_round.entry(key.clone()).or_insert(0);
                assert_eq!(round, *expected, "{key} out of order");
                *expected += 1;
            }
        }
    }
    assert_eq!(next_round.len(), 50);
    assert!(next_round.values().all(|&n| n == 40));
    let used: std::collections::BTreeSet<u32> = seen_in.values().copied().collect();
    println!("50 keys x 40 records: each key in one partition, in order; partitions used {used:?}");
}

#[test]
fn topic_versions_tell_which_keys_moved_and_from_where() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        StoreOptions {
            retention_interval: None,
            ..Default::default()
        },
    )
    .unwrap();
    store
        .create_topic(
            "t",
            4,
            TopicConfig::default(),
            PartitionerKind::Ring { vnodes: 128 },
        )
        .unwrap();
    for p in 0..4 {
        let log = store.partition("t", p).unwrap();
        log.append_records(&vec![b"x"; (p + 1) as usize])
            .unwrap()
            .receipt
            .wait()
            .unwrap();
    }
    let t = store.add_partitions("t", 5).unwrap();
    store.close().unwrap();
    let store = Store::open(
        dir.path(),
        StoreOptions {
            retention_interval: None,
            ..Default::default()
        },
    )
    .unwrap();
    let t2 = store.topic("t").unwrap();
    assert_eq!(t, t2, "versions persisted");
    let v1 = t2.version(1).unwrap().partitioner();
    let v2 = t2.version(2).unwrap().partitioner();
    assert_eq!((v1.partitions(), v2.partitions()), (4, 5));
    assert_eq!(t2.version(2).unwrap().start_offsets, vec![1, 2, 3, 4]);
    let keys = keys();
    let moved = v2.moved(&v1, keys.iter().map(Vec::as_slice));
    let n = moved.iter().flatten().count();
    println!(
        "ring:128 4 -> 5 through the store: {n} of {KEYS} keys moved ({:.1}%); version 2 starts at offsets {:?}",
        n as f64 * 100.0 / KEYS as f64,
        t2.version(2).unwrap().start_offsets
    );
    assert!(n > 0 && n < KEYS / 3);
    // Parsing the command-line names.
    for (s, kind) in [
        ("jump", PartitionerKind::Jump),
        ("modulo", PartitionerKind::Modulo),
        ("ring:64", PartitionerKind::Ring { vnodes: 64 }),
        ("round-robin", PartitionerKind::RoundRobin),
        ("random", PartitionerKind::Random),
    ] {
        assert_eq!(s.parse::<PartitionerKind>().unwrap(), kind);
        assert_eq!(kind.to_string().parse::<PartitionerKind>().unwrap(), kind);
    }
    assert!("ring:0".parse::<PartitionerKind>().is_err());
    assert!("nope".parse::<PartitionerKind>().is_err());
}
