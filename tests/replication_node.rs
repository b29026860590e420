//! Two nodes in one process over loopback TCP: a leader and a follower of a store's topic,
//! acknowledgements at `all`, the follower's copy byte for byte, the in-sync set, an operator
//! promote after the leader stops, and the old leader rejoining as a follower that truncates the
//! records only it had (never acknowledged at `all`).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use stratalog::replication::frame::Acks;
use stratalog::replication::node::{Node, NodeOptions};
use stratalog::replication::transport::Client;
use stratalog::replication::{ErrorCode, Message, Role};
use stratalog::{BatchBuilder, Compression, PartitionerKind, Store, StoreOptions, TopicConfig};

const TIMEOUT: Duration = Duration::from_secs(30);

fn store(dir: &std::path::Path) -> Arc<Store> {
    let store = Store::open(dir, StoreOptions::default()).unwrap();
    if store.topic("t").is_err() {
        store
            .create_topic("t", 2, TopicConfig::default(), PartitionerKind::Jump)
            .unwrap();
    }
    Arc::new(store)
}

fn options(id: &str, leader: Option<String>) -> NodeOptions {
    NodeOptions {
        node_id: id.into(),
        leader,
        replicas: 2,
        min_in_sync: 2,
        replica_lag_timeout: Duration::from_secs(2),
        fetch_wait: Duration::from_millis(100),
        ..Default::default()
    }
}

fn batch(values: &[String]) -> Bytes {
    let mut b = BatchBuilder::new(Compression::Lz4);
    for v in values {
        b.push_value(1_700_000_000_000, v.as_bytes()).unwrap();
    }
    // A sealed batch (CRC set): the leader gives it its own offsets and epoch.
    let mut encoded = b.encode(0).unwrap();
    encoded.stamp(0);
    Bytes::copy_from_slice(encoded.as_bytes())
}

fn produce(client: &mut Client, partition: u32, acks: Acks, values: &[String]) -> Message {
    client
        .call(&Message::ProduceRequest {
            topic: "t".into(),
            partition,
            acks,
            timeout_ms: 10_000,
            batches: batch(values),
        })
        .unwrap()
}

/// Waits until `cond` holds, or fails after the timeout.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < TIMEOUT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn same_bytes(a: &Store, b: &Store, partition: u32) {
    let (la, lb) = (
        a.partition("t", partition).unwrap(),
        b.partition("t", partition).unwrap(),
    );
    assert_eq!(la.end_offset(), lb.end_offset(), "partition {partition}");
    let mut next = la.start_offset();
    while next < la.end_offset() {
        let (x, y) = (
            la.read(next, 1 << 20).unwrap(),
            lb.read(next, 1 << 20).unwrap(),
        );
        for (p, q) in x.iter().zip(&y) {
            assert_eq!(p.as_bytes(), q.as_bytes(), "batch at {}", p.base_offset());
        }
        next = x.last().unwrap().last_offset() + 1;
    }
}

#[test]
fn leader_follower_promote_and_rejoin() {
    let tmp = tempfile::tempdir().unwrap();
    let (store_a, store_b) = (store(&tmp.path().join("a")), store(&tmp.path().join("b")));
    let a = Node::start(store_a.clone(), options("a", None)).unwrap();
    let b = Node::start(store_b.clone(), options("b", Some(a.addr().to_string()))).unwrap();
    assert_eq!((a.role(), b.role()), (Role::Leader, Role::Follower));

    let mut client = Client::connect(a.addr(), TIMEOUT).unwrap();
    // `acks=all` with 2 in sync needs the follower in the set first (else NotEnoughReplicas,
    // as it should): its first fetch of each partition puts it there.
    eventually("the follower in sync on both partitions", || {
        match client.call(&Message::StatusRequest).unwrap() {
            Message::StatusResponse { partitions, .. } => partitions
                .iter()
                .all(|p| p.followers.iter().any(|f| f.in_sync)),
            _ => false,
        }
    });
    let mut acked = Vec::new();
    for i in 0..20u32 {
        let values: Vec<String> = (0..5).map(|j| format!("r{i}-{j}")).collect();
        match produce(&mut client, i % 2, Acks::All, &values) {
            Message::ProduceResponse {
                error: ErrorCode::None,
                base_offset,
                last_offset,
                ..
            } => {
                assert_eq!(last_offset - base_offset, 4);
                acked.push((i % 2, last_offset));
            }
            other => panic!("produce {i}: {other:?}"),
        }
    }
    // Acknowledged at `all`: on the follower already, byte for byte.
    for p in 0..2 {
        same_bytes(&store_a, &store_b, p);
        assert_eq!(store_b.partition("t", p).unwrap().end_offset(), 50);
    }
    match client.call(&Message::StatusRequest).unwrap() {
        Message::StatusResponse {
            role, partitions, ..
        } => {
            assert_eq!(role, Role::Leader);
            for p in &partitions {
                assert_eq!(p.followers.len(), 1, "{p:?}");
                assert!(p.followers[0].in_sync, "{p:?}");
                assert_eq!(p.high_watermark, 50, "{p:?}");
            }
        }
        other => panic!("{other:?}"),
    }
    // A produce to the follower is answered with the leader's address.
    let mut to_b = Client::connect(b.addr(), TIMEOUT).unwrap();
    match produce(&mut to_b, 0, Acks::Leader, &["x".into()]) {
        Message::ErrorResponse {
            error: ErrorCode::NotLeader,
            leader,
            ..
        } => assert_eq!(leader, a.addr().to_string()),
        other => panic!("{other:?}"),
    }

    // The follower stops; the leader takes a write at `leader` that only it has.
    b.stop();
    match produce(&mut client, 0, Acks::Leader, &["only-on-a".into()]) {
        Message::ProduceResponse {
            error: ErrorCode::None,
            last_offset,
            ..
        } => assert_eq!(last_offset, 50),
        other => panic!("{other:?}"),
    }
    // At `all` it is refused once the silent follower left the in-sync set, never acknowledged.
    eventually("acks=all refused without the follower", || {
        matches!(
            produce(&mut client, 1, Acks::All, &["never".into()]),
            Message::ProduceResponse {
                error: ErrorCode::NotEnoughReplicas | ErrorCode::Timeout,
                ..
            }
        )
    });
    // The leader dies; the operator promotes the follower, which leads a new epoch.
    drop(client);
    a.stop();
    let b = Node::start(store_b.clone(), options("b", Some("127.0.0.1:9".into()))).unwrap();
    let epoch = b.promote(0).unwrap();
    assert!(epoch >= 1);
    let mut client = Client::connect(b.addr(), TIMEOUT).unwrap();
    match produce(&mut client, 0, Acks::Leader, &["on-b".into()]) {
        Message::ProduceResponse {
            error: ErrorCode::None,
            base_offset,
            epoch: e,
            ..
        } => assert_eq!(
            (base_offset, e),
            (50, epoch),
            "offset 50 is reused by the new leader"
        ),
        other => panic!("{other:?}"),
    }
    // The old leader comes back as a follower of the new one: it cuts what only it had
    // (offset 50 of the old epoch, never acknowledged at `all`) and copies the new leader.
    let a = Node::start(store_a.clone(), options("a", Some(b.addr().to_string()))).unwrap();
    eventually("the old leader to catch up", || {
        let (la, lb) = (
            store_a.partition("t", 0).unwrap(),
            store_b.partition("t", 0).unwrap(),
        );
        la.end_offset() == lb.end_offset()
            && la.read_one(50).map(|r| r.value.to_vec()).ok() == Some(b"on-b".to_vec())
    });
    for p in 0..2 {
        eventually("partitions identical", || {
            store_a.partition("t", p).unwrap().end_offset()
                == store_b.partition("t", p).unwrap().end_offset()
        });
        same_bytes(&store_b, &store_a, p);
    }
    // Every record acknowledged at `all` is on both.
    for (p, last) in acked {
        for s in [&store_a, &store_b] {
            assert!(s.partition("t", p).unwrap().end_offset() > last);
        }
    }
    drop(client);
    a.stop();
    b.stop();
}

fn with_peers(id: &str, listen: &str, leader: Option<&str>, peers: &[String]) -> NodeOptions {
    NodeOptions {
        listen: listen.to_string(),
        peers: peers.to_vec(),
        replicas: 3,
        ..options(id, leader.map(str::to_string))
    }
}

fn in_sync_followers(client: &mut Client) -> usize {
    match client.call(&Message::StatusRequest) {
        Ok(Message::StatusResponse { partitions, .. }) => partitions
            .iter()
            .map(|p| p.followers.iter().filter(|f| f.in_sync).count())
            .min()
            .unwrap_or(0),
        _ => 0,
    }
}

/// Three nodes: after the leader dies and a follower is promoted, the other follower finds the
/// new leader through its peers, and the old leader, restarted with no `--leader`, finds that a
/// higher epoch leads and follows it instead of leading beside it.
#[test]
fn three_nodes_follow_a_promoted_leader_through_their_peers() {
    let tmp = tempfile::tempdir().unwrap();
    let addrs = common::free_addrs(3);
    let stores: Vec<Arc<Store>> = ["a", "b", "c"]
        .iter()
        .map(|n| store(&tmp.path().join(n)))
        .collect();
    let a = Node::start(stores[0].clone(), with_peers("a", &addrs[0], None, &addrs)).unwrap();
    let b = Node::start(
        stores[1].clone(),
        with_peers("b", &addrs[1], Some(&addrs[0]), &addrs),
    )
    .unwrap();
    let c = Node::start(
        stores[2].clone(),
        with_peers("c", &addrs[2], Some(&addrs[0]), &addrs),
    )
    .unwrap();
    let mut client = Client::connect(a.addr(), TIMEOUT).unwrap();
    eventually("both followers in sync", || {
        in_sync_followers(&mut client) == 2
    });
    for i in 0..10 {
        match produce(&mut client, 0, Acks::All, &[format!("a{i}")]) {
            Message::ProduceResponse {
                error: ErrorCode::None,
                ..
            } => {}
            other => panic!("{other:?}"),
        }
    }
    drop(client);
    a.stop();
    let epoch = b.promote(0).unwrap();
    let mut client = Client::connect(b.addr(), TIMEOUT).unwrap();
    eventually("c follows b", || in_sync_followers(&mut client) >= 1);
    match produce(&mut client, 0, Acks::All, &["b0".into()]) {
        Message::ProduceResponse {
            error: ErrorCode::None,
            base_offset,
            epoch: e,
            ..
        } => assert_eq!((base_offset, e), (10, epoch)),
        other => panic!("{other:?}"),
    }
    // The old leader comes back with no --leader: it must follow b, not lead.
    let a = Node::start(stores[0].clone(), with_peers("a", &addrs[0], None, &addrs)).unwrap();
    assert_eq!(a.role(), Role::Follower);
    eventually("all three identical", || {
        (0..3).all(|i| stores[i].partition("t", 0).unwrap().end_offset() == 11)
    });
    for s in &stores[..2] {
        same_bytes(&stores[2], s, 0);
    }
    drop(client);
    for n in [a, b, c] {
        n.stop();
    }
}

fn commit(client: &mut Client, group: &str, partition: u32, offset: u64, epoch: u64) -> ErrorCode {
    match client
        .call(&Message::OffsetCommitRequest {
            group: group.into(),
            topic: "t".into(),
            partition,
            offset,
            epoch,
        })
        .unwrap()
    {
        Message::OffsetCommitResponse { error } => error,
        other => panic!("commit answered with {other:?}"),
    }
}

/// Consumer offsets replicate with the data: a follower created with its own topic ids takes
/// the leader's, has every commit the leader acknowledged, follows the leader's compactions of
/// the offsets log (caught up, and lagging behind one while it was stopped), and, promoted,
/// answers with the group's offsets.
#[test]
fn commits_replicate_and_follow_compaction() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (store(a_dir.path()), store(b_dir.path()));
    assert_ne!(a.topic("t").unwrap().id, b.topic("t").unwrap().id);
    let leader = Node::start(a.clone(), options("a", None)).unwrap();
    let follower = Node::start(b.clone(), options("b", Some(leader.addr().to_string()))).unwrap();
    let mut client = Client::connect(leader.addr(), TIMEOUT).unwrap();
    let values: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
    // The leader's epoch (a leader's every start is a new one): commits carry it.
    let mut e = 0;
    eventually("the follower in sync", || {
        match produce(&mut client, 0, Acks::All, &values) {
            Message::ProduceResponse {
                error: ErrorCode::None,
                epoch,
                ..
            } => {
                e = epoch;
                true
            }
            _ => false,
        }
    });
    assert!(e > 0, "a leader's start is a new epoch");
    eventually("the follower takes the leader's topic id", || {
        b.topic("t").unwrap().id == a.topic("t").unwrap().id
    });
    // Acknowledged commits are on the follower when the leader answers.
    for offset in 1..=5 {
        assert_eq!(commit(&mut client, "g", 0, offset, e), ErrorCode::None);
        assert_eq!(b.committed("g", "t", 0).map(|c| c.offset), Some(offset));
    }
    assert_eq!(commit(&mut client, "h", 0, 2, e), ErrorCode::None);
    // A compaction on the leader starts a new generation at the old end: the follower, caught
    // up, goes on from there.
    let before = a.offsets_log_records().unwrap();
    a.compact_offsets().unwrap();
    assert_eq!(commit(&mut client, "g", 0, 7, e), ErrorCode::None);
    assert_eq!(b.committed("g", "t", 0).map(|c| c.offset), Some(7));
    assert_eq!(b.committed("h", "t", 0).map(|c| c.offset), Some(2));
    // Stopped while the leader commits and compacts twice: the follower is below the leader's
    // start, starts over there and fetches the state.
    follower.stop();
    for offset in 8..=9 {
        assert_eq!(
            commit(&mut client, "g", 0, offset, e),
            ErrorCode::NotEnoughReplicas
        );
    }
    a.compact_offsets().unwrap();
    a.compact_offsets().unwrap();
    let follower = Node::start(b.clone(), options("b", Some(leader.addr().to_string()))).unwrap();
    eventually("the lagging follower has the compacted state", || {
        b.committed("g", "t", 0).map(|c| c.offset) == Some(9)
            && b.committed("h", "t", 0).map(|c| c.offset) == Some(2)
    });
    assert!(before > 0);
    // Promoted, it serves the group's offsets.
    leader.stop();
    let epoch = follower.promote(0).unwrap();
    let mut client = Client::connect(follower.addr(), TIMEOUT).unwrap();
    match client
        .call(&Message::OffsetFetchRequest {
            group: "g".into(),
            topic: "t".into(),
            partition: 0,
        })
        .unwrap()
    {
        Message::OffsetFetchResponse {
            error: ErrorCode::None,
            committed: Some((9, _)),
        } => {}
        other => panic!("offset fetch on the promoted follower: {other:?}"),
    }
    // Alone, with two replicas required in sync, it keeps a commit but does not acknowledge it.
    assert_eq!(
        commit(&mut client, "g", 0, 10, epoch),
        ErrorCode::NotEnoughReplicas
    );
    follower.stop();
}

/// A planned switchover: a follower is promoted while the leader is alive and serving. The new
/// leader tells its peers: the old leader stops leading at once (a produce to it is answered
/// `NotLeader` naming the new leader) and both follow the new one, in sync. Without `--peers`
/// on the other nodes: the promoted node tells its former leader, which is enough for it.
#[test]
fn a_promote_beside_a_live_leader_deposes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let addrs = common::free_addrs(3);
    let stores: Vec<Arc<Store>> = ["a", "b", "c"]
        .iter()
        .map(|n| store(&tmp.path().join(n)))
        .collect();
    // Only b knows its peers.
    let a = Node::start(stores[0].clone(), with_peers("a", &addrs[0], None, &[])).unwrap();
    let b = Node::start(
        stores[1].clone(),
        with_peers("b", &addrs[1], Some(&addrs[0]), &addrs),
    )
    .unwrap();
    let c = Node::start(
        stores[2].clone(),
        with_peers("c", &addrs[2], Some(&addrs[0]), &[]),
    )
    .unwrap();
    let mut to_a = Client::connect(a.addr(), TIMEOUT).unwrap();
    eventually("both followers in sync", || {
        in_sync_followers(&mut to_a) == 2
    });
    for i in 0..5 {
        assert!(matches!(
            produce(&mut to_a, 0, Acks::All, &[format!("a{i}")]),
            Message::ProduceResponse {
                error: ErrorCode::None,
                ..
            }
        ));
    }
    let epoch = b.promote(0).unwrap();
    eventually("a no longer leads", || a.role() == Role::Follower);
    match produce(&mut to_a, 0, Acks::Leader, &["late".into()]) {
        Message::ErrorResponse {
            error: ErrorCode::NotLeader,
            leader,
            ..
        } => assert_eq!(leader, b.addr().to_string()),
        other => panic!("the deposed leader answered {other:?}"),
    }
    let mut to_b = Client::connect(b.addr(), TIMEOUT).unwrap();
    eventually("a and c in sync with b", || {
        in_sync_followers(&mut to_b) == 2
    });
    match produce(&mut to_b, 0, Acks::All, &["b0".into()]) {
        Message::ProduceResponse {
            error: ErrorCode::None,
            base_offset,
            epoch: e,
            ..
        } => assert_eq!((base_offset, e), (5, epoch)),
        other => panic!("{other:?}"),
    }
    eventually("all three identical", || {
        (0..3).all(|i| stores[i].partition("t", 0).unwrap().end_offset() == 6)
    });
    for s in &stores[..2] {
        same_bytes(&stores[2], s, 0);
    }
    drop((to_a, to_b));
    for n in [a, b, c] {
        n.stop();
    }
}

/// A follower whose log ends below the leader's start (the leader's records before it are
/// gone) starts over, empty, at the leader's start, and follows from there byte for byte.
#[test]
fn a_follower_below_the_leaders_start_starts_over_there() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (store(a_dir.path()), store(b_dir.path()));
    // The follower holds 3 old records; the leader keeps nothing below 1000.
    b.partition("t", 0)
        .unwrap()
        .append_records(&["old0", "old1", "old2"])
        .unwrap()
        .receipt
        .wait()
        .unwrap();
    a.partition("t", 0).unwrap().reset_to(1000).unwrap();
    let leader = Node::start(a.clone(), options("a", None)).unwrap();
    let follower = Node::start(b.clone(), options("b", Some(leader.addr().to_string()))).unwrap();
    let mut client = Client::connect(leader.addr(), TIMEOUT).unwrap();
    let values: Vec<String> = (0..5).map(|i| format!("n{i}")).collect();
    eventually("the follower in sync", || {
        in_sync_followers(&mut client) == 1
    });
    match produce(&mut client, 0, Acks::All, &values) {
        Message::ProduceResponse {
            error: ErrorCode::None,
            base_offset: 1000,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
    let log = b.partition("t", 0).unwrap();
    assert_eq!((log.start_offset(), log.end_offset()), (1000, 1005));
    same_bytes(&a, &b, 0);
    drop(client);
    follower.stop();
    leader.stop();
}

/// Followers fetch records the leader has written but not yet made durable. A leader that
/// lost such a tail (a power loss) and starts again must not write other records at the same
/// offsets in the same epoch: its start is a new epoch, so a follower that holds the lost
/// tail finds that its epoch ends earlier on the leader and cuts it (KIP-101). Here the lost
/// tail is simulated by truncating the leader's log while it is down; the new leader writes
/// other records at those offsets before the follower comes back.
#[test]
fn a_leader_that_lost_its_unsynced_tail_restarts_in_a_new_epoch_and_followers_cut_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (store_a, store_b) = (store(&tmp.path().join("a")), store(&tmp.path().join("b")));
    let a = Node::start(store_a.clone(), options("a", None)).unwrap();
    let b = Node::start(store_b.clone(), options("b", Some(a.addr().to_string()))).unwrap();
    let mut client = Client::connect(a.addr(), TIMEOUT).unwrap();
    let first: Vec<String> = (0..5).map(|i| format!("first-{i}")).collect();
    let tail: Vec<String> = (0..5).map(|i| format!("tail-{i}")).collect();
    eventually("the follower in sync", || {
        matches!(
            produce(&mut client, 0, Acks::All, &first),
            Message::ProduceResponse {
                error: ErrorCode::None,
                ..
            }
        )
    });
    let end = store_a.partition("t", 0).unwrap().end_offset();
    assert!(matches!(
        produce(&mut client, 0, Acks::All, &tail),
        Message::ProduceResponse {
            error: ErrorCode::None,
            ..
        }
    ));
    eventually("the follower has the tail", || {
        store_b.partition("t", 0).unwrap().end_offset() == end + 5
    });
    let old_epoch = store_a.partition("t", 0).unwrap().leader_epoch();
    drop(client);
    b.stop();
    a.stop();
    // The leader lost the tail; the follower kept it.
    store_a.partition("t", 0).unwrap().truncate(end).unwrap();
    let a = Node::start(store_a.clone(), options("a", None)).unwrap();
    let new_epoch = store_a.partition("t", 0).unwrap().leader_epoch();
    let mut client = Client::connect(a.addr(), TIMEOUT).unwrap();
    let other: Vec<String> = (0..5).map(|i| format!("other-{i}")).collect();
    assert!(matches!(
        produce(&mut client, 0, Acks::Leader, &other),
        Message::ProduceResponse {
            error: ErrorCode::None,
            ..
        }
    ));
    let b = Node::start(store_b.clone(), options("b", Some(a.addr().to_string()))).unwrap();
    eventually(
        "the follower cut the lost tail and took the new records",
        || {
            store_b.partition("t", 0).unwrap().high_watermark() == end + 5
                && store_b.partition("t", 0).unwrap().end_offset() == end + 5
                && store_b
                    .partition("t", 0)
                    .unwrap()
                    .read(end, 1 << 20)
                    .unwrap()
                    .first()
                    .is_some_and(|batch| batch.leader_epoch() == new_epoch)
        },
    );
    same_bytes(&store_a, &store_b, 0);
    assert!(new_epoch > old_epoch, "{new_epoch} > {old_epoch}");
    drop(client);
    b.stop();
    a.stop();
}

fn produce_to(client: &mut Client, topic: &str, acks: Acks, values: &[String]) -> Message {
    client
        .call(&Message::ProduceRequest {
            topic: topic.into(),
            partition: 0,
            acks,
            timeout_ms: 10_000,
            batches: batch(values),
        })
        .unwrap()
}

/// Produces at `all` until the follower is in sync for `topic` (a new topic has no follower
/// in sync until the follower's first fetch of it).
fn produce_retrying(client: &mut Client, topic: &str, values: &[String]) -> Message {
    let started = Instant::now();
    loop {
        match produce_to(client, topic, Acks::All, values) {
            Message::ProduceResponse {
                error: ErrorCode::NotEnoughReplicas,
                ..
            } if started.elapsed() < TIMEOUT => std::thread::sleep(Duration::from_millis(50)),
            other => return other,
        }
    }
}

/// The values of every record of `store`'s `topic`/0, in offset order.
fn values_of(store: &Store, topic: &str) -> Vec<String> {
    let Ok(log) = store.partition(topic, 0) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut next = log.start_offset();
    while next < log.end_offset() {
        let batches = log.read(next, 1 << 20).unwrap();
        for b in &batches {
            for r in b.records().unwrap() {
                out.push(String::from_utf8(r.unwrap().value.to_vec()).unwrap());
            }
            next = b.last_offset() + 1;
        }
    }
    out
}

/// A topic deleted and created again on the leader (same name, a new id) is a new topic on
/// its followers too: they drop their copy of the old one and fetch the new one from its
/// start, instead of appending the new topic's records behind the old one's (KIP-516's
/// reason for topic ids in fetches); the leader's in-sync bookkeeping of the old topic does
/// not acknowledge the new one's records. A topic the leader deletes is deleted on its
/// followers, and partitions it adds are replicated.
#[test]
fn topics_deleted_recreated_and_grown_on_the_leader_are_so_on_followers() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (store(a_dir.path()), store(b_dir.path()));
    let leader = Node::start(a.clone(), options("a", None)).unwrap();
    let follower = Node::start(b.clone(), options("b", Some(leader.addr().to_string()))).unwrap();
    let mut client = Client::connect(leader.addr(), TIMEOUT).unwrap();
    eventually("the follower in sync", || {
        in_sync_followers(&mut client) == 1
    });
    a.create_topic("r", 1, TopicConfig::default(), PartitionerKind::Jump)
        .unwrap();
    eventually("the follower to take topic r", || b.topic("r").is_ok());
    let old: Vec<String> = (0..5).map(|i| format!("old{i}")).collect();
    let answer = produce_retrying(&mut client, "r", &old);
    assert!(
        matches!(
            answer,
            Message::ProduceResponse {
                error: ErrorCode::None,
                ..
            }
        ),
        "{answer:?}"
    );
    // (A produce refused for want of replicas was appended all the same.)
    assert!(values_of(&a, "r").ends_with(&old));
    assert_eq!(values_of(&b, "r"), values_of(&a, "r"));

    // Refused while a fetch of the follower holds the partition open: retried.
    eventually("the leader to delete topic r", || {
        a.delete_topic("r").is_ok()
    });
    a.create_topic("r", 1, TopicConfig::default(), PartitionerKind::Jump)
        .unwrap();
    let new: Vec<String> = (0..3).map(|i| format!("new{i}")).collect();
    // Acknowledged at `all` only once the follower holds the new topic's records.
    let answer = produce_retrying(&mut client, "r", &new);
    let Message::ProduceResponse {
        error: ErrorCode::None,
        base_offset,
        last_offset,
        ..
    } = answer
    else {
        panic!("{answer:?}");
    };
    assert_eq!(
        values_of(&a, "r")[base_offset as usize..=last_offset as usize],
        new[..]
    );
    let on_follower = values_of(&b, "r");
    assert!(
        on_follower.len() > last_offset as usize,
        "acknowledged at all, but the follower has {on_follower:?}"
    );
    assert_eq!(on_follower, values_of(&a, "r"));
    assert_eq!(b.topic("r").unwrap().id, a.topic("r").unwrap().id);

    a.add_partitions("r", 3).unwrap();
    eventually("the follower to add the partitions", || {
        b.topic("r").is_ok_and(|t| t.partitions() == 3)
    });
    eventually("the leader to delete topic r", || {
        a.delete_topic("r").is_ok()
    });
    eventually("the follower to delete topic r", || b.topic("r").is_err());
    same_bytes(&a, &b, 0);
    drop(client);
    follower.stop();
    leader.stop();
}

/// A leader's partition log that fails (an fsync error drops its unsynced writes, which
/// followers may have fetched) and is opened again in the same process (the store closed it
/// as idle) must not go on writing in the same epoch: the node leads a new one, as a restart
/// does, so that followers holding the lost tail cut it.
#[test]
fn a_failed_log_opened_again_in_the_same_process_starts_a_new_epoch() {
    use stratalog::storage::{Fault, SimStorage};
    let sim = SimStorage::new(7);
    let store = Arc::new(
        Store::open(
            "/sim/leader",
            StoreOptions {
                storage: sim.shared(),
                max_open_partitions: Some(1),
                ..StoreOptions::default()
            },
        )
        .unwrap(),
    );
    store
        .create_topic("t", 2, TopicConfig::default(), PartitionerKind::Jump)
        .unwrap();
    let leader = Node::start(
        store.clone(),
        NodeOptions {
            node_id: "a".into(),
            ..Default::default()
        },
    )
    .unwrap();
    let mut client = Client::connect(leader.addr(), TIMEOUT).unwrap();
    let values = vec!["v".to_string()];
    let epoch_of = |m: Message| match m {
        Message::ProduceResponse {
            error: ErrorCode::None,
            epoch,
            ..
        } => epoch,
        other => panic!("{other:?}"),
    };
    let before = epoch_of(produce(&mut client, 0, Acks::Leader, &values));
    sim.inject(Fault::FailSync { nth: 1 });
    match produce(&mut client, 0, Acks::Leader, &values) {
        Message::ProduceResponse {
            error: ErrorCode::StorageError,
            ..
        } => {}
        other => panic!("the fsync error was not reported: {other:?}"),
    }
    assert!(store.partition("t", 0).unwrap().has_failed());
    // Partition 1 takes the one open slot: the failed partition 0 is closed.
    assert_eq!(
        epoch_of(produce(&mut client, 1, Acks::Leader, &values)),
        before
    );
    let after = epoch_of(produce(&mut client, 0, Acks::Leader, &values));
    assert_eq!(store.reopened_after_failure(), 1);
    assert!(
        after > before,
        "a failed log opened again went on in epoch {before}"
    );
    drop(client);
    leader.stop();
}

/// Leadership moves a -> b -> a with no record written while b led: b's epoch history ends
/// with an epoch that holds no record, which a never saw. b, following a again, must ask about
/// the epoch of its last record, not that empty one: asking about the empty one, a answered
/// "diverging at your end" for ever, b cut nothing (its end) and asked again, and never caught
/// up (found by `tests/etcd_partitions.rs`, where a handover after an election does this).
#[test]
fn a_follower_whose_last_epoch_holds_no_record_catches_up() {
    let tmp = tempfile::tempdir().unwrap();
    let addrs = common::free_addrs(2);
    let stores: Vec<Arc<Store>> = ["a", "b"]
        .iter()
        .map(|n| store(&tmp.path().join(n)))
        .collect();
    let a = Node::start(stores[0].clone(), with_peers("a", &addrs[0], None, &addrs)).unwrap();
    let b = Node::start(
        stores[1].clone(),
        with_peers("b", &addrs[1], Some(&addrs[0]), &addrs),
    )
    .unwrap();
    let mut to_a = Client::connect(a.addr(), TIMEOUT).unwrap();
    eventually("b in sync", || in_sync_followers(&mut to_a) == 1);
    for i in 0..5 {
        let r = produce(&mut to_a, 0, Acks::All, &[format!("a{i}")]);
        assert!(
            matches!(
                r,
                Message::ProduceResponse {
                    error: ErrorCode::None,
                    ..
                }
            ),
            "{r:?}"
        );
    }
    // b leads an epoch and writes nothing in it; then a leads again.
    b.promote(0).unwrap();
    eventually("a follows b", || a.role() == Role::Follower);
    a.promote(0).unwrap();
    eventually("b follows a", || b.role() == Role::Follower);
    let mut to_a = Client::connect(a.addr(), TIMEOUT).unwrap();
    let r = produce(&mut to_a, 0, Acks::Leader, &["after".into()]);
    assert!(
        matches!(
            r,
            Message::ProduceResponse {
                error: ErrorCode::None,
                base_offset: 5,
                ..
            }
        ),
        "{r:?}"
    );
    eventually("b has a's record written after the moves", || {
        stores[1].partition("t", 0).unwrap().end_offset() == 6
    });
    same_bytes(&stores[0], &stores[1], 0);
    drop(to_a);
    for n in [a, b] {
        n.stop();
    }
}
