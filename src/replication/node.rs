//! A node: serves a [`Store`] over the protocol, as the leader of every partition or as a
//! follower of a leader, with operator-driven failover ([`Message::PromoteRequest`]).
//!
//! What this first step does (see docs/REPLICATION.md for what is still missing):
//! - A leader appends produced batches (keeping the producer's records byte for byte; the log
//!   gives offsets and the epoch), waits until they are durable locally, then until the asked
//!   acknowledgement level is reached ([`ReplicaTracker`]).
//! - A leader answers fetches with whole batches as stored (slices of the mapped segment
//!   files, written with `writev`), long-polling when nothing is new; followers read to the
//!   log end, consumers and mirrors to the high watermark. A follower's fetch offset is its
//!   durable end: it moves the in-sync set and the high watermark.
//! - A follower runs one fetcher per partition: it asks from its log end with the epoch of its
//!   last batch; when the leader answers with a diverging end it truncates there (KIP-101), else
//!   it checks each batch's CRC, appends the bytes unchanged at the same offsets, waits until
//!   they are durable and fetches again.
//! - A promote makes the node the leader of a new epoch, higher than every epoch it has seen;
//!   the epoch is durable in every partition's epoch history before the node answers.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::WireError;
use super::frame::{
    Acks, ErrorCode, FetchRole, FollowerStatus, Message, PartitionStatus, Role, TopicMetadata,
};
use super::isr::{AckState, ReplicaTracker};
use super::transport::{Client, Handler, Reply, Server, ServerOptions};
use crate::error::{Error, Result};
use crate::format::Batch;
use crate::log::Log;
use crate::store::{OFFSETS_LOG, Store, TopicConfig, TopicId};

/// How a [`Node`] runs. See [`Node`] for an example.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// This node's id (what followers are known by on the leader).
    pub node_id: String,
    /// Where to listen (port 0: any free port, see [`Node::addr`]).
    pub listen: String,
    /// The leader to follow; `None`: this node leads.
    pub leader: Option<String>,
    /// A follower not caught up for this long leaves the in-sync set.
    pub replica_lag_timeout: Duration,
    /// `acks=all` is refused while fewer replicas (the leader included) are in sync.
    pub min_in_sync: usize,
    /// Replicas of each partition, the leader included (for `acks=quorum`).
    pub replicas: usize,
    /// How long a fetch waits on the leader when nothing is new.
    pub fetch_wait: Duration,
    /// At most this many bytes of batches in one fetch answer.
    pub fetch_max_bytes: u32,
    /// The other nodes' addresses. A follower whose leader stops answering asks them who
    /// leads (the leader of the highest epoch wins); a node that starts as a leader first asks
    /// them, and follows one that leads a higher epoch than its own.
    pub peers: Vec<String>,
    /// Run as a mirror of `leader` (a source in another cluster): copy its partitions (up to
    /// its high watermark) and its consumer offsets at the same offsets, never counting toward
    /// its acknowledgements or in-sync set. `peers` are the source cluster's nodes, asked who
    /// leads when the source fails over. A mirror can be promoted to lead.
    pub mirror: bool,
    /// On a mirror: copy only the topics whose names match this glob pattern (`*`, `?`,
    /// `[...]`); `None`: every topic.
    pub topics: Option<String>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            node_id: "node".into(),
            listen: "127.0.0.1:0".into(),
            leader: None,
            replica_lag_timeout: Duration::from_secs(5),
            min_in_sync: 1,
            replicas: 1,
            fetch_wait: Duration::from_millis(500),
            fetch_max_bytes: 1 << 20,
            peers: Vec::new(),
            mirror: false,
            topics: None,
        }
    }
}

type Key = (String, u32);

/// How far a follower or mirror is behind, as of its last fetch answer.
#[derive(Debug, Clone, Copy)]
struct Lag {
    /// What the leader had: its log end (follower) or high watermark (mirror).
    leader_mark: u64,
    /// When this node last held all of it.
    caught_up_at: Instant,
    /// Batch bytes and records appended, for the bytes-per-record estimate.
    bytes: u64,
    records: u64,
}

/// How often a follower compares its topics with its leader's.
const TOPIC_SYNC_INTERVAL: Duration = Duration::from_secs(1);

struct State {
    role: Role,
    /// The epoch this node leads in, or last saw its leader in.
    epoch: u64,
    /// The leader's address (this node's own when it leads).
    leader: String,
    /// Bumped on every role change: fetchers and waiting produces of an older generation stop.
    generation: u64,
}

struct Shared {
    store: Arc<Store>,
    options: NodeOptions,
    /// Set once the server listens.
    addr: std::sync::OnceLock<SocketAddr>,
    state: Mutex<State>,
    trackers: Mutex<HashMap<Key, ReplicaTracker>>,
    /// Signalled when a high watermark moves or the role changes (produces waiting for acks).
    progress: Condvar,
    stop: AtomicBool,
    fetchers: Mutex<Vec<JoinHandle<()>>>,
    /// On a follower or mirror, per partition: how far behind its leader it is.
    lag: Mutex<HashMap<Key, Lag>>,
    /// The mirror's topic filter.
    topics: Option<glob::Pattern>,
    /// Held by a fetcher while it truncates or appends, and by a promote while it changes the
    /// role: a fetcher of an older generation (one still waiting on a leader that froze when
    /// the promote came) never writes once the node leads a new epoch.
    replica_writes: Mutex<()>,
}

/// A running node. Dropping it stops the server and every fetcher.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use stratalog::replication::node::{Node, NodeOptions};
/// use stratalog::replication::Role;
/// use stratalog::{PartitionerKind, Store, StoreOptions, TopicConfig};
///
/// let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
/// let stores: Vec<Arc<Store>> = [&a, &b]
///     .iter()
///     .map(|d| {
///         let s = Store::open(d.path(), StoreOptions::default())?;
///         s.create_topic("t", 1, TopicConfig::default(), PartitionerKind::Jump)?;
///         Ok(Arc::new(s))
///     })
///     .collect::<stratalog::Result<_>>()?;
/// let leader = Node::start(stores[0].clone(), NodeOptions { node_id: "a".into(), ..Default::default() })?;
/// let follower = Node::start(
///     stores[1].clone(),
///     NodeOptions { node_id: "b".into(), leader: Some(leader.addr().to_string()), ..Default::default() },
/// )?;
/// assert_eq!((leader.role(), follower.role()), (Role::Leader, Role::Follower));
/// leader.stop();
/// // The operator's failover: the follower leads a new epoch.
/// assert!(follower.promote(0)? >= 1);
/// assert_eq!(follower.role(), Role::Leader);
/// follower.stop();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Node {
    shared: Arc<Shared>,
    server: Option<Server>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The node's maps and role are replaced whole under these locks: a panic cannot leave one
    // half-written.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Node {
    /// Starts serving `store`: as its leader, or following `options.leader`.
    pub fn start(store: Arc<Store>, options: NodeOptions) -> Result<Node> {
        let epoch = current_epoch(&store)?;
        if options.mirror && options.leader.is_none() {
            return Err(Error::InvalidArgument(
                "a mirror needs a source to copy (NodeOptions::leader)".into(),
            ));
        }
        let topics = options
            .topics
            .as_deref()
            .map(glob::Pattern::new)
            .transpose()
            .map_err(|e| Error::InvalidArgument(format!("bad topic pattern: {e}")))?;
        let shared = Arc::new(Shared {
            store,
            addr: std::sync::OnceLock::new(),
            lag: Mutex::new(HashMap::new()),
            topics,
            state: Mutex::new(State {
                role: if options.mirror {
                    Role::Mirror
                } else if options.leader.is_some() {
                    Role::Follower
                } else {
                    Role::Leader
                },
                epoch,
                leader: options.leader.clone().unwrap_or_default(),
                generation: 0,
            }),
            options,
            trackers: Mutex::new(HashMap::new()),
            progress: Condvar::new(),
            stop: AtomicBool::new(false),
            fetchers: Mutex::new(Vec::new()),
            replica_writes: Mutex::new(()),
        });
        let handler = Arc::new(NodeHandler(shared.clone()));
        let server = Server::start(
            shared.options.listen.as_str(),
            handler,
            ServerOptions::default(),
        )
        .map_err(|e| Error::io("listen", shared.options.listen.clone(), e))?;
        let _ = shared.addr.set(server.addr());
        if shared.options.leader.is_none() {
            // A node restarted after a failover must not lead beside the new leader: if a
            // peer leads a higher epoch, follow it.
            if let Some((leader, epoch)) = shared.discover_leader() {
                let mut st = lock(&shared.state);
                if epoch > st.epoch {
                    tracing::warn!(leader, epoch, "a peer leads a higher epoch; following it");
                    st.role = Role::Follower;
                    st.leader = leader;
                    st.epoch = epoch;
                }
            }
        }
        let node = Node {
            shared,
            server: Some(server),
        };
        if lock(&node.shared.state).role == Role::Leader {
            lock(&node.shared.state).leader = server_addr(&node.shared).to_string();
        } else {
            node.shared.start_fetchers()?;
        }
        Ok(node)
    }

    /// The address the node listens on.
    pub fn addr(&self) -> SocketAddr {
        server_addr(&self.shared)
    }

    /// This node's role.
    pub fn role(&self) -> Role {
        lock(&self.shared.state).role
    }

    /// Makes this node the leader of a new epoch (see [`Message::PromoteRequest`]).
    pub fn promote(&self, min_epoch: u64) -> Result<u64> {
        self.shared.promote(min_epoch)
    }

    /// Stops serving and fetching; waits for every thread.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.progress.notify_all();
        if let Some(server) = self.server.take() {
            server.stop();
        }
        self.shared.join_fetchers();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// The highest current epoch over the store's partitions.
fn current_epoch(store: &Store) -> Result<u64> {
    let mut epoch = store.offsets_log()?.leader_epoch();
    for t in store.topics()? {
        for p in 0..t.partitions() {
            epoch = epoch.max(store.partition(&t.name, p)?.leader_epoch());
        }
    }
    Ok(epoch)
}

fn server_addr(shared: &Shared) -> SocketAddr {
    *shared
        .addr
        .get()
        .expect("set as soon as the server listens")
}

impl Shared {
    /// The log of `topic/partition`; `__consumer_offsets/0` is the store's consumer offsets log,
    /// which replicates like a partition.
    fn partition(&self, topic: &str, partition: u32) -> std::result::Result<Arc<Log>, ErrorCode> {
        let log = if topic == OFFSETS_LOG && partition == 0 {
            self.store.offsets_log()
        } else {
            self.store.partition(topic, partition)
        };
        log.map_err(|e| match e {
            Error::UnknownTopic { .. } | Error::UnknownPartition { .. } => {
                ErrorCode::UnknownTopicOrPartition
            }
            Error::InvalidArgument(_) => ErrorCode::InvalidRequest,
            _ => ErrorCode::StorageError,
        })
    }

    /// `Some(leader address)` if this node does not lead.
    fn not_leader(&self) -> Option<String> {
        let st = lock(&self.state);
        (st.role != Role::Leader).then(|| st.leader.clone())
    }

    fn produce(
        &self,
        topic: &str,
        partition: u32,
        acks: Acks,
        timeout: Duration,
        bytes: Bytes,
    ) -> Message {
        let answer = |error, base, last, acks, epoch| Message::ProduceResponse {
            error,
            base_offset: base,
            last_offset: last,
            acks,
            epoch,
        };
        let (generation, epoch) = {
            let st = lock(&self.state);
            (st.generation, st.epoch)
        };
        let log = match self.partition(topic, partition) {
            Ok(log) => log,
            Err(code) => return answer(code, 0, 0, acks, epoch),
        };
        let batches = match split_batches(bytes) {
            Ok(b) if !b.is_empty() => b,
            _ => return answer(ErrorCode::CorruptMessage, 0, 0, acks, epoch),
        };
        let (mut base, mut last) = (None, 0);
        for batch in &batches {
            let appended = match log.append_batch(batch) {
                Ok(a) => a,
                Err(Error::InvalidArgument(_)) => {
                    return answer(ErrorCode::CorruptMessage, 0, 0, acks, epoch);
                }
                Err(_) => return answer(ErrorCode::StorageError, 0, 0, acks, epoch),
            };
            if appended.receipt.wait().is_err() {
                return answer(ErrorCode::StorageError, 0, 0, acks, epoch);
            }
            base.get_or_insert(appended.base_offset);
            last = appended.last_offset;
        }
        let base = base.unwrap_or(0);
        let error = self.wait_for_acks(topic, partition, &log, last + 1, acks, timeout, generation);
        answer(error, base, last, acks, epoch)
    }

    /// Waits until every record of `log` below `end` is acknowledged at level `acks`, the
    /// in-sync set falls below what `acks` needs, this node stops leading (its role changed
    /// since `generation`), or `timeout` passes.
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per part of the wait"
    )]
    fn wait_for_acks(
        &self,
        topic: &str,
        partition: u32,
        log: &Log,
        end: u64,
        acks: Acks,
        timeout: Duration,
        generation: u64,
    ) -> ErrorCode {
        let key = (topic.to_string(), partition);
        let deadline = Instant::now() + timeout;
        let mut trackers = lock(&self.trackers);
        loop {
            if lock(&self.state).generation != generation || self.stop.load(Ordering::Acquire) {
                return ErrorCode::LeadershipLost;
            }
            let durable = log.end_offset();
            let tracker = trackers
                .entry(key.clone())
                .or_insert_with(|| self.tracker(log));
            tracker.expire(Instant::now());
            let hw = tracker.advance(durable);
            log.set_high_watermark(hw);
            match tracker.ack_state(acks, end, durable, self.options.replicas) {
                AckState::Reached => return ErrorCode::None,
                AckState::NotEnoughReplicas { .. } => return ErrorCode::NotEnoughReplicas,
                AckState::Waiting => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return ErrorCode::Timeout;
            }
            // Woken by follower fetches; the short bound re-checks expiry of the in-sync set.
            trackers = self
                .progress
                .wait_timeout(trackers, left.min(Duration::from_millis(100)))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Commits a consumer group's position on the leader: durable in the consumer offsets log,
    /// then replicated to every in-sync replica (as `acks=all`), so that a new leader has it.
    fn commit(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
        epoch: u64,
    ) -> ErrorCode {
        let generation = lock(&self.state).generation;
        if let Err(e) = self.store.commit(group, topic, partition, offset, epoch) {
            return match e {
                Error::UnknownTopic { .. } | Error::UnknownPartition { .. } => {
                    ErrorCode::UnknownTopicOrPartition
                }
                Error::StaleEpoch { .. } => ErrorCode::FencedEpoch,
                Error::CommitBeyondEnd { .. } => ErrorCode::OffsetOutOfRange,
                Error::InvalidArgument(_) => ErrorCode::InvalidRequest,
                _ => ErrorCode::StorageError,
            };
        }
        let log = match self.store.offsets_log() {
            Ok(log) => log,
            Err(_) => return ErrorCode::StorageError,
        };
        self.wait_for_acks(
            OFFSETS_LOG,
            0,
            &log,
            log.end_offset(),
            Acks::All,
            Duration::from_secs(30),
            generation,
        )
    }

    fn tracker(&self, log: &Log) -> ReplicaTracker {
        ReplicaTracker::new(
            log.high_watermark(),
            self.options.replica_lag_timeout,
            self.options.min_in_sync,
        )
    }

    #[expect(clippy::too_many_arguments, reason = "one argument per request field")]
    fn fetch(
        &self,
        reply: &mut Reply<'_>,
        role: FetchRole,
        node_id: &str,
        topic: &str,
        partition: u32,
        offset: u64,
        last_epoch: u64,
        max_bytes: u32,
        max_wait: Duration,
    ) -> std::result::Result<(), WireError> {
        let epoch = lock(&self.state).epoch;
        let empty = |reply: &mut Reply<'_>, error, start, end, hw, diverging| {
            reply.send_fetch(error, epoch, hw, start, end, diverging, &[])
        };
        // The handler answered `NotLeader` (with the leader's address) before calling this.
        let log = match self.partition(topic, partition) {
            Ok(log) => log,
            Err(code) => return empty(reply, code, 0, 0, 0, u64::MAX),
        };
        let (start, end) = (log.start_offset(), log.end_offset());
        // A follower whose last epoch ends earlier here (or is unknown here) diverges: it must
        // cut its log there first (KIP-101), and learns where from this answer.
        if role != FetchRole::Consumer && offset > start {
            let diverging = match log.epoch_end(last_epoch) {
                Some((e, epoch_end)) if e == last_epoch && epoch_end >= offset => None,
                Some((_, epoch_end)) => Some(epoch_end.min(offset)),
                None => Some(start),
            };
            if let Some(at) = diverging {
                return empty(reply, ErrorCode::None, start, end, log.high_watermark(), at);
            }
        }
        if offset < start || offset > end {
            return empty(
                reply,
                ErrorCode::OffsetOutOfRange,
                start,
                end,
                log.high_watermark(),
                u64::MAX,
            );
        }
        if role == FetchRole::Follower {
            self.follower_fetched(topic, partition, node_id, offset, &log);
        }
        let upper = |log: &Log| match role {
            FetchRole::Follower => log.end_offset(),
            FetchRole::Consumer | FetchRole::Mirror => log.high_watermark(),
        };
        let deadline = Instant::now() + max_wait;
        while upper(&log) <= offset && !self.stop.load(Ordering::Acquire) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match role {
                FetchRole::Follower => {
                    log.wait_for_data(offset, left);
                }
                // The high watermark moves with other replicas' fetches, not with appends.
                _ => std::thread::sleep(left.min(Duration::from_millis(10))),
            }
        }
        let limit = upper(&log);
        // Sent from the segment files with `sendfile` (docs/SAFETY.md).
        let ranges = if offset < limit {
            match log.read_file_ranges(offset, limit, max_bytes as usize) {
                Ok(b) => b,
                Err(Error::OffsetOutOfRange { start, end, .. }) => {
                    return empty(
                        reply,
                        ErrorCode::OffsetOutOfRange,
                        start,
                        end,
                        log.high_watermark(),
                        u64::MAX,
                    );
                }
                Err(_) => return empty(reply, ErrorCode::StorageError, 0, 0, 0, u64::MAX),
            }
        } else {
            Vec::new()
        };
        reply
            .send_fetch_ranges(
                ErrorCode::None,
                epoch,
                log.high_watermark(),
                log.start_offset(),
                log.end_offset(),
                u64::MAX,
                &ranges,
            )
            .map(drop)
    }

    /// Records a follower's fetch at `offset` (its durable end) and moves the high watermark.
    fn follower_fetched(&self, topic: &str, partition: u32, node: &str, offset: u64, log: &Log) {
        let mut trackers = lock(&self.trackers);
        let tracker = trackers
            .entry((topic.to_string(), partition))
            .or_insert_with(|| self.tracker(log));
        let end = log.end_offset();
        let hw = tracker.on_fetch(node, offset, end, end, Instant::now());
        log.set_high_watermark(hw);
        drop(trackers);
        self.progress.notify_all();
    }

    fn status(&self) -> Message {
        let (role, epoch, leader) = {
            let st = lock(&self.state);
            (st.role, st.epoch, st.leader.clone())
        };
        let trackers = lock(&self.trackers);
        let lags = lock(&self.lag);
        let mut partitions = Vec::new();
        for t in self.store.topics().unwrap_or_default() {
            for p in 0..t.partitions() {
                let Ok(log) = self.store.partition(&t.name, p) else {
                    continue;
                };
                let end = log.end_offset();
                let followers = trackers
                    .get(&(t.name.clone(), p))
                    .map(|tr| {
                        tr.followers()
                            .iter()
                            .map(|(id, f)| FollowerStatus {
                                node_id: id.clone(),
                                log_end: f.durable_end,
                                lag: end.saturating_sub(f.durable_end),
                                in_sync: f.in_sync,
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let (lag_records, lag_bytes, lag_ms) = match lags.get(&(t.name.clone(), p)) {
                    Some(l) if role != Role::Leader => {
                        let records = l.leader_mark.saturating_sub(end);
                        let per_record = l.bytes.checked_div(l.records).unwrap_or(0);
                        let ms = if records == 0 {
                            0
                        } else {
                            l.caught_up_at.elapsed().as_millis() as u64
                        };
                        (records, records * per_record, ms)
                    }
                    _ => (0, 0, 0),
                };
                partitions.push(PartitionStatus {
                    topic: t.name.clone(),
                    partition: p,
                    role,
                    epoch: log.leader_epoch(),
                    log_start: log.start_offset(),
                    log_end: end,
                    high_watermark: log.high_watermark(),
                    lag_records,
                    lag_bytes,
                    lag_ms,
                    followers: if role == Role::Leader {
                        followers
                    } else {
                        Vec::new()
                    },
                });
            }
        }
        Message::StatusResponse {
            node_id: self.options.node_id.clone(),
            role,
            epoch,
            leader,
            partitions,
        }
    }

    fn metadata(&self) -> Message {
        let leader = lock(&self.state).leader.clone();
        let topics = self
            .store
            .topics()
            .unwrap_or_default()
            .into_iter()
            .map(|t| TopicMetadata {
                topic_id: t.id.0,
                partitions: t.partitions(),
                partitioner: t.current().kind.to_string(),
                topic: t.name,
            })
            .collect();
        Message::MetadataResponse { leader, topics }
    }

    /// Leads a new epoch above `min_epoch` and every epoch seen, durably, in every partition.
    fn promote(self: &Arc<Self>, min_epoch: u64) -> Result<u64> {
        let writes = lock(&self.replica_writes);
        let mut st = lock(&self.state);
        let former = std::mem::take(&mut st.leader);
        let epoch = st.epoch.max(min_epoch).max(current_epoch(&self.store)?) + 1;
        for t in self.store.topics()? {
            for p in 0..t.partitions() {
                self.store.set_leader_epoch(&t.name, p, epoch)?;
            }
        }
        self.store.set_offsets_epoch(epoch)?;
        st.role = Role::Leader;
        st.epoch = epoch;
        st.leader = server_addr(self).to_string();
        st.generation += 1;
        drop(st);
        drop(writes);
        lock(&self.trackers).clear();
        self.progress.notify_all();
        // Fetchers see the new generation and stop, without being waited for here: one may
        // wait for its leader's answer until its timeout (a leader that froze). The node's stop
        // joins them.
        lock(&self.fetchers).retain(|f| !f.is_finished());
        tracing::info!(node = %self.options.node_id, epoch, "promoted: leading");
        self.announce(epoch, former);
        Ok(epoch)
    }

    /// Tells every peer and the former leader, before the promote answers, that this node
    /// leads `epoch` (`LeaderChangeRequest`, in parallel, at most about three seconds for a
    /// peer that does not answer). A leader of an older epoch stops leading and follows this
    /// node; a follower takes the epoch and the leader at once, so that the fetches it sends
    /// fence its old leader and it takes no answer of an older epoch. Without this, a leader
    /// that froze (SIGSTOP, a long pause) and came back after the promote went on leading with
    /// the follower that was not promoted, and acknowledged writes at `quorum` and `all` that
    /// the new leader never had.
    ///
    /// The peers that do not answer are told again every second in the background, for as
    /// long as this node leads this epoch: a node that was down at the promote (a source that
    /// a mirror replaced, a crashed old leader) hears it as soon as it is back.
    fn announce(self: &Arc<Self>, epoch: u64, former: String) {
        let own = server_addr(self).to_string();
        let mut targets: Vec<String> = self.options.peers.clone();
        if !former.is_empty() && !targets.contains(&former) {
            targets.push(former);
        }
        targets.retain(|t| *t != own);
        let mut missed = self.tell(&targets, epoch, &own);
        if missed.is_empty() {
            return;
        }
        let generation = lock(&self.state).generation;
        let shared = self.clone();
        let spawned = std::thread::Builder::new()
            .name("stratalog-announce".into())
            .spawn(move || {
                while !missed.is_empty() {
                    std::thread::sleep(Duration::from_secs(1));
                    if !shared.running(generation) {
                        return;
                    }
                    missed = shared.tell(&missed, epoch, &own);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start telling the missing peers of the new epoch again");
        }
    }

    /// Sends `LeaderChangeRequest { epoch, leader }` to every target in parallel; returns
    /// those that did not answer.
    fn tell(&self, targets: &[String], epoch: u64, leader: &str) -> Vec<String> {
        let notice = Message::LeaderChangeRequest {
            epoch,
            leader: leader.to_string(),
        };
        let missed = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for target in targets {
                let (notice, missed) = (&notice, &missed);
                scope.spawn(move || {
                    let Some(addr) = resolve(target) else {
                        lock(missed).push(target.clone());
                        return;
                    };
                    let answer = Client::connect(addr, Duration::from_secs(1)).and_then(|mut c| {
                        c.set_timeout(Duration::from_secs(2))?;
                        c.call(notice)
                    });
                    match answer {
                        Ok(Message::LeaderChangeResponse { error, epoch: theirs }) => {
                            tracing::info!(peer = target, error = error.name(), epoch = theirs, "told a peer of the new epoch");
                        }
                        Ok(other) => tracing::warn!(peer = target, ?other, "a peer answered a leader change oddly"),
                        Err(e) => {
                            tracing::debug!(peer = target, error = %e, "could not tell a peer of the new epoch");
                            lock(missed).push(target.clone());
                        }
                    }
                });
            }
        });
        missed.into_inner().unwrap_or_else(|e| e.into_inner())
    }

    /// Another node leads `epoch` at `leader`: follow it, unless this node knows a newer
    /// epoch (or leads this one). Returns the error to answer and this node's epoch.
    fn leader_change(self: &Arc<Self>, epoch: u64, leader: String) -> (ErrorCode, u64) {
        {
            let mut st = lock(&self.state);
            if epoch < st.epoch || (epoch == st.epoch && st.role == Role::Leader) {
                return (ErrorCode::FencedEpoch, st.epoch);
            }
            if st.role != Role::Leader {
                // The fetchers reconnect when the leader changes, and refuse answers of an
                // older epoch from now on.
                tracing::info!(epoch, leader, "following the newly promoted leader");
                st.leader = leader;
                st.epoch = epoch;
                return (ErrorCode::None, epoch);
            }
            tracing::warn!(node = %self.options.node_id, epoch = st.epoch, new_epoch = epoch, leader, "a newer leader announced itself: no longer leading");
            st.role = Role::Follower;
            st.leader = leader;
            st.epoch = epoch;
            st.generation += 1;
        }
        lock(&self.trackers).clear();
        self.progress.notify_all();
        if let Err(e) = self.start_fetchers() {
            tracing::error!(error = %e, "could not start following the new leader");
        }
        (ErrorCode::None, epoch)
    }

    fn join_fetchers(&self) {
        let fetchers = std::mem::take(&mut *lock(&self.fetchers));
        for f in fetchers {
            let _ = f.join();
        }
    }

    fn start_fetchers(self: &Arc<Self>) -> Result<()> {
        let generation = lock(&self.state).generation;
        let mut fetchers = lock(&self.fetchers);
        let mut logs: Vec<(String, u32)> = vec![(OFFSETS_LOG.to_string(), 0)];
        for t in self.store.topics()? {
            if self.copies(&t.name) {
                logs.extend((0..t.partitions()).map(|p| (t.name.clone(), p)));
            }
        }
        for (name, p) in logs {
            fetchers.push(self.spawn_fetcher(name, p, generation)?);
        }
        Ok(())
    }

    /// Whether this node copies topic `name` (a mirror's `--topics` pattern; every topic
    /// otherwise).
    fn copies(&self, name: &str) -> bool {
        self.topics.as_ref().is_none_or(|p| p.matches(name))
    }

    fn spawn_fetcher(
        self: &Arc<Self>,
        topic: String,
        partition: u32,
        generation: u64,
    ) -> Result<JoinHandle<()>> {
        let shared = self.clone();
        std::thread::Builder::new()
            .name(format!("stratalog-fetch-{topic}-{partition}"))
            .spawn(move || shared.fetch_loop(&topic, partition, generation))
            .map_err(|e| Error::io("spawn fetcher thread", "stratalog-fetch", e))
    }

    /// A follower takes its leader's topics: it creates those it lacks (with the leader's id,
    /// partition count and partitioner; settings default) and starts fetching them, and gives
    /// its own topics of the same names the leader's ids (the replicated consumer offsets name
    /// topics by id).
    fn sync_topics(self: &Arc<Self>, client: &mut Client, generation: u64) -> Result<()> {
        let answer = client
            .call(&Message::MetadataRequest)
            .map_err(|e| Error::InvalidArgument(format!("metadata from the leader: {e}")))?;
        let Message::MetadataResponse { topics, .. } = answer else {
            return Err(Error::InvalidArgument(format!(
                "the leader answered a metadata request with {answer:?}"
            )));
        };
        for t in topics {
            if !self.copies(&t.topic) {
                continue;
            }
            let id = TopicId(t.topic_id);
            match self.store.topic(&t.topic) {
                Ok(local) => {
                    if local.id != id {
                        tracing::info!(topic = t.topic, "taking the leader's topic id");
                        self.store.adopt_topic_id(&t.topic, id)?;
                    }
                    if local.partitions() != t.partitions {
                        tracing::warn!(
                            topic = t.topic,
                            here = local.partitions(),
                            leader = t.partitions,
                            "the leader has another partition count; only the partitions both \
                             have are replicated"
                        );
                    }
                }
                Err(Error::UnknownTopic { .. }) => {
                    let kind = t.partitioner.parse().unwrap_or_default();
                    self.store.create_topic_as(
                        &t.topic,
                        t.partitions,
                        TopicConfig::default(),
                        kind,
                        Some(id),
                    )?;
                    tracing::info!(
                        topic = t.topic,
                        partitions = t.partitions,
                        "created a topic of the leader"
                    );
                    let mut fetchers = lock(&self.fetchers);
                    for p in 0..t.partitions {
                        fetchers.push(self.spawn_fetcher(t.topic.clone(), p, generation)?);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn running(&self, generation: u64) -> bool {
        !self.stop.load(Ordering::Acquire) && lock(&self.state).generation == generation
    }

    /// One partition's fetcher: fetch from the log end, append, repeat, until the node stops
    /// or changes role.
    fn fetch_loop(self: &Arc<Self>, topic: &str, partition: u32, generation: u64) {
        let mut client: Option<Client> = None;
        let mut failures = 0u32;
        // The consumer offsets fetcher also keeps the topics in step with the leader's.
        let mut synced: Option<Instant> = None;
        while self.running(generation) {
            if failures >= 3 {
                // The leader does not answer: ask the peers who leads now.
                failures = 0;
                if let Some((leader, epoch)) = self.discover_leader() {
                    let mut st = lock(&self.state);
                    if epoch >= st.epoch && st.role != Role::Leader {
                        st.leader = leader;
                        st.epoch = epoch;
                    }
                }
            }
            let leader = lock(&self.state).leader.clone();
            if client
                .as_ref()
                .is_some_and(|c| resolve(&leader) != Some(c.addr()))
            {
                // The leader changed (a newer epoch was announced): drop the old connection.
                client = None;
            }
            if client.is_none() {
                client = resolve(&leader).and_then(|addr| {
                    Client::connect(addr, self.options.fetch_wait + Duration::from_secs(10)).ok()
                });
                if client.is_none() {
                    failures += 1;
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
            let c = client.as_mut().expect("connected above");
            if topic == OFFSETS_LOG && synced.is_none_or(|t| t.elapsed() >= TOPIC_SYNC_INTERVAL) {
                match self.sync_topics(c, generation) {
                    Ok(()) => synced = Some(Instant::now()),
                    Err(e) => {
                        tracing::debug!(error = %e, "could not take the leader's topics");
                        failures += 1;
                        client = None;
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                }
            }
            match self.fetch_once(c, topic, partition, generation) {
                Ok(()) => failures = 0,
                Err(e) => {
                    tracing::debug!(topic, partition, error = %e, "fetch failed; reconnecting");
                    failures += 1;
                    client = None;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// The replica-write lock, if this fetcher's generation is still the node's.
    fn replica_write(&self, generation: u64) -> Result<MutexGuard<'_, ()>> {
        let writes = lock(&self.replica_writes);
        if self.running(generation) {
            Ok(writes)
        } else {
            Err(Error::InvalidArgument(
                "the node changed role while fetching; the answer is dropped".into(),
            ))
        }
    }

    fn fetch_once(
        &self,
        client: &mut Client,
        topic: &str,
        partition: u32,
        generation: u64,
    ) -> Result<()> {
        let offsets = topic == OFFSETS_LOG;
        let log = if offsets {
            self.store.offsets_log()?
        } else {
            self.store.partition(topic, partition)?
        };
        let offset = log.end_offset();
        let mirror = lock(&self.state).role == Role::Mirror;
        let request = Message::FetchRequest {
            role: if mirror {
                FetchRole::Mirror
            } else {
                FetchRole::Follower
            },
            node_id: self.options.node_id.clone(),
            topic: topic.to_string(),
            partition,
            offset,
            last_epoch: log.last_record_epoch().unwrap_or(0),
            leader_epoch: lock(&self.state).epoch,
            max_bytes: self.options.fetch_max_bytes,
            max_wait_ms: self.options.fetch_wait.as_millis() as u32,
        };
        let answer = client
            .call(&request)
            .map_err(|e| Error::InvalidArgument(format!("fetch from the leader: {e}")))?;
        if let Message::ErrorResponse {
            error: ErrorCode::NotLeader,
            leader,
            ..
        } = &answer
        {
            // Our leader was deposed: follow the one it names, or ask the peers.
            if !leader.is_empty() {
                lock(&self.state).leader = leader.clone();
            }
            return Err(Error::InvalidArgument("the leader moved".into()));
        }
        let Message::FetchResponse {
            error,
            epoch,
            high_watermark,
            log_start,
            log_end,
            diverging_end,
            batches,
        } = answer
        else {
            return Err(Error::InvalidArgument(format!(
                "the leader answered a fetch with {answer:?}"
            )));
        };
        if error == ErrorCode::FencedEpoch {
            let mut st = lock(&self.state);
            st.epoch = st.epoch.max(epoch);
            return Ok(());
        }
        if error == ErrorCode::OffsetOutOfRange && offsets && offset < log_start {
            // The leader compacted its consumer offsets log while this node lagged: the
            // records between are gone there; start over at its start and fetch its state.
            tracing::warn!(
                from = offset,
                to = log_start,
                "the leader compacted the consumer offsets log; fetching its state anew"
            );
            let _writes = self.replica_write(generation)?;
            return self.store.restart_offsets_at(log_start);
        }
        if error == ErrorCode::OffsetOutOfRange && !offsets && offset < log_start {
            // The leader no longer has the records from this node's end on (retention, or it
            // started at an offset): this node's records are all below what the leader keeps,
            // so it starts over, empty, at the leader's start (Kafka's
            // truncate-fully-and-start-at) and fetches from there.
            tracing::warn!(
                topic,
                partition,
                from = offset,
                to = log_start,
                "below the leader's start: starting over there"
            );
            let _writes = self.replica_write(generation)?;
            return log.reset_to(log_start);
        }
        if error != ErrorCode::None {
            std::thread::sleep(Duration::from_millis(100));
            return Err(Error::InvalidArgument(format!(
                "the leader refused the fetch: {}",
                error.name()
            )));
        }
        {
            let mut st = lock(&self.state);
            if epoch < st.epoch {
                // A deposed leader answered (it froze and came back): its batches are not ours.
                return Err(Error::InvalidArgument(format!(
                    "the leader answered in epoch {epoch}, older than epoch {} this node knows",
                    st.epoch
                )));
            }
            st.epoch = st.epoch.max(epoch);
        }
        if diverging_end != u64::MAX {
            // Cut exactly the divergent suffix (KIP-101, with KIP-279's refinement): ask where
            // our last epoch ends on the leader, as (e, end); the records in common end at
            // `end` there and at the end of epoch `e` here, whichever is lower.
            let ours = log.last_record_epoch().unwrap_or(0);
            let at = match client.call(&Message::EpochEndRequest {
                topic: topic.to_string(),
                partition,
                epoch: ours,
            }) {
                Ok(Message::EpochEndResponse {
                    error: ErrorCode::None,
                    epoch: e,
                    end_offset,
                }) => {
                    let own_end = log.epoch_end(e).map_or(log.start_offset(), |(_, end)| end);
                    end_offset.min(own_end).min(offset)
                }
                _ => diverging_end.min(offset),
            };
            let at = at.max(log.start_offset());
            tracing::warn!(
                topic,
                partition,
                from = at,
                to = offset,
                "truncating a divergent suffix"
            );
            let _writes = self.replica_write(generation)?;
            if offsets {
                self.store.truncate_offsets(at)?;
            } else {
                log.truncate(at)?;
            }
            return Ok(());
        }
        let fetched_bytes = batches.len() as u64;
        let batches =
            split_batches(batches).map_err(|e| Error::InvalidArgument(format!("fetched: {e}")))?;
        let fetched_records: u64 = batches
            .iter()
            .map(|b| b.last_offset() + 1 - b.base_offset())
            .sum();
        if !batches.is_empty() {
            if offsets {
                let _writes = self.replica_write(generation)?;
                self.store.append_offsets_replica(&batches)?;
            } else {
                // Written under the lock, made durable outside it: the partitions' fsyncs
                // must not queue behind one another.
                let appended = {
                    let _writes = self.replica_write(generation)?;
                    log.append_replica(&batches)?
                };
                appended.receipt.wait()?;
            }
        }
        log.set_high_watermark(high_watermark.min(log.end_offset()));
        let mark = if mirror { high_watermark } else { log_end };
        let now = Instant::now();
        let mut lags = lock(&self.lag);
        let lag = lags.entry((topic.to_string(), partition)).or_insert(Lag {
            leader_mark: mark,
            caught_up_at: now,
            bytes: 0,
            records: 0,
        });
        lag.leader_mark = mark;
        lag.bytes += fetched_bytes;
        lag.records += fetched_records;
        if log.end_offset() >= mark {
            lag.caught_up_at = now;
        }
        Ok(())
    }
}

impl Shared {
    /// Stops leading (a newer epoch exists somewhere): refuses produces from now on, and
    /// follows whoever the peers say leads.
    fn step_down(self: &Arc<Self>, seen_epoch: u64) {
        {
            let mut st = lock(&self.state);
            if st.role != Role::Leader || seen_epoch <= st.epoch {
                return;
            }
            tracing::warn!(node = %self.options.node_id, epoch = st.epoch, seen_epoch, "a newer epoch exists: no longer leading");
            st.role = Role::Follower;
            st.leader = String::new();
            st.epoch = seen_epoch;
            st.generation += 1;
        }
        self.progress.notify_all();
        if let Err(e) = self.start_fetchers() {
            tracing::error!(error = %e, "could not start following after stepping down");
        }
    }

    /// A follower hears of an epoch newer than its own (a promote's announcement, see
    /// [`Shared::announce`]): it takes that epoch at once, so that its next fetch fences its
    /// old leader and no answer of an older epoch is appended, then asks its peers who leads
    /// (in the background; the fetcher reconnects when the leader changes).
    fn follow_newer_epoch(self: &Arc<Self>, seen_epoch: u64) {
        {
            let mut st = lock(&self.state);
            if st.role == Role::Leader || seen_epoch <= st.epoch {
                return;
            }
            st.epoch = seen_epoch;
        }
        let shared = self.clone();
        let _ = std::thread::Builder::new()
            .name("stratalog-discover".into())
            .spawn(move || {
                if let Some((leader, epoch)) = shared.discover_leader() {
                    let mut st = lock(&shared.state);
                    if st.role != Role::Leader && epoch >= st.epoch {
                        st.leader = leader;
                        st.epoch = epoch;
                    }
                }
            });
    }

    /// Asks every peer for its status; returns the address and epoch of the peer that leads
    /// the highest epoch, if any answers as a leader.
    fn discover_leader(&self) -> Option<(String, u64)> {
        let own = self.addr.get().map(|a| a.to_string());
        let mut best: Option<(String, u64)> = None;
        for peer in &self.options.peers {
            if Some(peer) == own.as_ref() {
                continue;
            }
            let Some(addr) = resolve(peer) else { continue };
            let Ok(mut client) = Client::connect(addr, Duration::from_secs(1)) else {
                continue;
            };
            if let Ok(Message::StatusResponse {
                role: Role::Leader,
                epoch,
                ..
            }) = client.call(&Message::StatusRequest)
                && best.as_ref().is_none_or(|(_, e)| epoch > *e)
            {
                best = Some((peer.clone(), epoch));
            }
        }
        best
    }
}

fn resolve(addr: &str) -> Option<SocketAddr> {
    addr.to_socket_addrs().ok()?.next()
}

/// The whole, checked batches of `bytes`, which must hold nothing else.
pub fn split_batches(bytes: Bytes) -> std::result::Result<Vec<Batch>, crate::format::FormatError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let batch = Batch::validate(bytes.slice(at..))?;
        at += batch.len();
        out.push(batch);
    }
    Ok(out)
}

struct NodeHandler(Arc<Shared>);

impl Handler for NodeHandler {
    fn handle(
        &self,
        request: Message,
        reply: &mut Reply<'_>,
    ) -> std::result::Result<(), WireError> {
        let node = &self.0;
        let not_leader = |leader: String| Message::ErrorResponse {
            error: ErrorCode::NotLeader,
            leader,
            message: "this node does not lead; ask the leader".into(),
        };
        let answer = match request {
            Message::ProduceRequest {
                topic,
                partition,
                acks,
                timeout_ms,
                batches,
            } => match node.not_leader() {
                Some(leader) => not_leader(leader),
                None => node.produce(
                    &topic,
                    partition,
                    acks,
                    Duration::from_millis(timeout_ms.into()),
                    batches,
                ),
            },
            Message::FetchRequest {
                role,
                node_id,
                topic,
                partition,
                offset,
                last_epoch,
                leader_epoch,
                max_bytes,
                max_wait_ms,
            } => {
                // Fencing: a fetcher that knows a newer epoch than this node leads in follows a
                // newer leader, so this one was deposed: it stops leading before it answers.
                if leader_epoch > lock(&node.state).epoch {
                    node.step_down(leader_epoch);
                    node.follow_newer_epoch(leader_epoch);
                }
                if let Some(leader) = node.not_leader() {
                    return reply.send(&not_leader(leader));
                }
                // A follower still in an older epoch is refused with this one; it takes it and
                // fetches again (its last epoch decides what it must truncate).
                let epoch = lock(&node.state).epoch;
                if role != FetchRole::Consumer && leader_epoch < epoch {
                    return reply.send_fetch(ErrorCode::FencedEpoch, epoch, 0, 0, 0, u64::MAX, &[]);
                }
                let wait = Duration::from_millis(max_wait_ms.min(30_000).into());
                return node.fetch(
                    reply, role, &node_id, &topic, partition, offset, last_epoch, max_bytes, wait,
                );
            }
            Message::EpochEndRequest {
                topic,
                partition,
                epoch,
            } => match node.partition(&topic, partition) {
                Ok(log) => {
                    let (epoch, end_offset) =
                        log.epoch_end(epoch).unwrap_or((0, log.start_offset()));
                    Message::EpochEndResponse {
                        error: ErrorCode::None,
                        epoch,
                        end_offset,
                    }
                }
                Err(error) => Message::EpochEndResponse {
                    error,
                    epoch: 0,
                    end_offset: 0,
                },
            },
            Message::OffsetCommitRequest {
                group,
                topic,
                partition,
                offset,
                epoch,
            } => match node.not_leader() {
                Some(leader) => not_leader(leader),
                None => Message::OffsetCommitResponse {
                    error: node.commit(&group, &topic, partition, offset, epoch),
                },
            },
            Message::OffsetFetchRequest {
                group,
                topic,
                partition,
            } => match node.not_leader() {
                Some(leader) => not_leader(leader),
                None => match node.store.try_committed(&group, &topic, partition) {
                    Ok(c) => Message::OffsetFetchResponse {
                        error: ErrorCode::None,
                        committed: c.map(|c| (c.offset, c.leader_epoch)),
                    },
                    Err(_) => Message::OffsetFetchResponse {
                        error: ErrorCode::StorageError,
                        committed: None,
                    },
                },
            },
            Message::LeaderChangeRequest { epoch, leader } => {
                let (error, epoch) = node.leader_change(epoch, leader);
                Message::LeaderChangeResponse { error, epoch }
            }
            Message::StatusRequest => node.status(),
            Message::MetadataRequest => node.metadata(),
            Message::PromoteRequest { min_epoch } => match node.promote(min_epoch) {
                Ok(epoch) => Message::PromoteResponse {
                    error: ErrorCode::None,
                    epoch,
                },
                Err(e) => Message::ErrorResponse {
                    error: ErrorCode::StorageError,
                    leader: String::new(),
                    message: format!("promote failed: {e}"),
                },
            },
            other => Message::ErrorResponse {
                error: ErrorCode::InvalidRequest,
                leader: String::new(),
                message: format!("not served yet: frame kind {}", other.kind()),
            },
        };
        reply.send(&answer)
    }
}
