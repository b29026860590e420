//! A node: serves a [`Store`] over the protocol, as the leader of every partition or as a
//! follower of a leader, with operator-driven failover ([`Message::PromoteRequest`]).
//!
//! The node's state and its request handler live here; each role has a room of its own (see
//! docs/REPLICATION.md for the whole design and what is still missing):
//! - `leader`: appends produced batches (keeping the producer's records byte for byte; the log
//!   gives offsets and the epoch), waits until they are durable locally, then until the asked
//!   acknowledgement level is reached ([`ReplicaTracker`]); commits consumer offsets; answers
//!   fetches with whole batches sent from the segment files, long-polling when nothing is new
//!   (followers read to the log end, consumers and mirrors to the high watermark; a
//!   follower's fetch offset is its durable end and moves the in-sync set).
//! - `follower` (and mirror): one fetcher per partition and one for the consumer offsets log;
//!   takes the leader's topics; asks from its log end with the epoch of its last batch, cuts a
//!   divergent suffix (KIP-101, KIP-279), starts over at the leader's start when below it,
//!   appends the bytes unchanged at the same offsets, waits until durable, fetches again.
//! - `failover`: a promote to a new epoch, higher than every epoch seen, durable in every
//!   partition's history before the node answers, and announced to the peers; following an
//!   announced leader; stepping down on a newer epoch; asking the peers who leads. Under a
//!   per-partition etcd coordinator the same changes apply to one leadership unit (a
//!   partition, or the consumer offsets log) at a time: the node keeps its node-wide role
//!   plus per-unit overrides (`State::units`), and every produce, fetch, commit and fetcher
//!   asks for the unit of its partition.

use std::collections::{HashMap, HashSet};
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

// The etcd coordinator's handle on the node lives beside the coordinator.
#[path = "../coordinator/control.rs"]
pub(crate) mod control;
mod failover;
mod follower;
mod leader;
mod snapshot;

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
    /// Elect the leader through etcd instead of `leader` (see
    /// [`coordinator`](crate::replication::coordinator)): the node starts as a follower, with
    /// no leader until etcd names one. Needs the `etcd` feature.
    pub coordinator: Option<crate::replication::coordinator::CoordinatorOptions>,
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
            coordinator: None,
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

/// A partition's in-sync bookkeeping on a leader, tied to the incarnation of the topic it was
/// made for (its id): a topic deleted and created again under the same name starts over, so
/// that no follower's end in the old topic counts in the new one.
struct Tracked {
    topic_id: TopicId,
    tracker: ReplicaTracker,
}

struct State {
    role: Role,
    /// The epoch this node leads in, or last saw its leader in.
    epoch: u64,
    /// The leader's address (this node's own when it leads).
    leader: String,
    /// Bumped on every role change: fetchers and waiting produces of an older generation stop.
    generation: u64,
    /// Under a per-partition coordinator: the leadership units (a partition, or the consumer
    /// offsets log as `(__consumer_offsets, 0)`) whose state etcd set, each overriding the
    /// node-wide fields above for its unit. Always empty in operator mode.
    units: HashMap<Key, Unit>,
    /// The last generation given to a unit (counted apart from the node-wide generation, from
    /// [`UNIT_GENERATIONS`] on, so that the two never meet).
    unit_generation: u64,
}

/// Where the generations of the units start: far above any node-wide generation.
const UNIT_GENERATIONS: u64 = 1 << 40;

/// One leadership unit's state (see [`State::units`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Unit {
    role: Role,
    epoch: u64,
    leader: String,
    generation: u64,
    /// This node leads the unit but hands it over to its preferred leader: produces and
    /// commits are refused, fetches still answered, until the new leader holds every record.
    handing_over: bool,
}

impl State {
    /// The state of `key`'s unit: its own, or the node-wide one.
    fn unit(&self, key: &Key) -> Unit {
        self.units.get(key).cloned().unwrap_or_else(|| Unit {
            role: self.role,
            epoch: self.epoch,
            leader: self.leader.clone(),
            generation: self.generation,
            handing_over: false,
        })
    }

    /// `key`'s unit's leader and epoch, for writing: its own, or the node-wide ones.
    fn fields_mut(&mut self, key: &Key) -> (&mut String, &mut u64) {
        match self.units.get_mut(key) {
            Some(u) => (&mut u.leader, &mut u.epoch),
            None => (&mut self.leader, &mut self.epoch),
        }
    }

    /// Makes `key`'s unit a follower of `leader` (empty: not known yet) in `epoch`, in a
    /// fresh generation, which it returns.
    fn follow_in_unit(&mut self, key: &Key, epoch: u64, leader: String) -> u64 {
        let generation = self.next_unit_generation();
        self.units.insert(
            key.clone(),
            Unit {
                role: Role::Follower,
                epoch,
                leader,
                generation,
                handing_over: false,
            },
        );
        generation
    }

    /// A fresh unit generation.
    fn next_unit_generation(&mut self) -> u64 {
        self.unit_generation += 1;
        self.unit_generation
    }
}

/// The leadership unit of `topic/partition` (the consumer offsets log is `__consumer_offsets/0`).
fn key_of(topic: &str, partition: u32) -> Key {
    (topic.to_string(), partition)
}

struct Shared {
    store: Arc<Store>,
    options: NodeOptions,
    /// Set once the server listens.
    addr: std::sync::OnceLock<SocketAddr>,
    state: Mutex<State>,
    trackers: Mutex<HashMap<Key, Tracked>>,
    /// Signalled when a high watermark moves or the role changes (produces waiting for acks).
    progress: Condvar,
    stop: AtomicBool,
    fetchers: Mutex<Vec<JoinHandle<()>>>,
    /// The partitions a fetcher runs for, with its generation: one fetcher per partition.
    fetching: Mutex<HashSet<(Key, u64)>>,
    /// Topics a follower is deleting (the leader deleted them, or holds another incarnation):
    /// their fetchers stop, so that the deletion finds them closed.
    dropping: Mutex<HashSet<String>>,
    /// Set by a fetcher the leader told that it holds another incarnation of its topic: the
    /// consumer offsets fetcher takes the leader's topics at once.
    resync: AtomicBool,
    /// [`Store::reopened_after_failure`] when this node last looked.
    failure_reopens: std::sync::atomic::AtomicU64,
    /// On a follower or mirror, per partition: how far behind its leader it is.
    lag: Mutex<HashMap<Key, Lag>>,
    /// The mirror's topic filter.
    topics: Option<glob::Pattern>,
    /// Held by a fetcher while it truncates or appends, and by a promote while it changes the
    /// role: a fetcher of an older generation (one still waiting on a leader that froze when
    /// the promote came) never writes once the node leads a new epoch.
    replica_writes: Mutex<()>,
    /// With a coordinator: what the leader checks before it acknowledges (its lease).
    fence: Option<Arc<crate::replication::coordinator::LeaseFence>>,
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
    #[cfg(feature = "etcd")]
    coordinator: Option<crate::replication::coordinator::Running>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The node's maps and role are replaced whole under these locks: a panic cannot leave one
    // half-written.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Node {
    /// Starts serving `store`: as its leader, or following `options.leader`.
    pub fn start(store: Arc<Store>, options: NodeOptions) -> Result<Node> {
        let failure_reopens = store.reopened_after_failure();
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
        let fence = options_coordinated(&options);
        let shared = Arc::new(Shared {
            store,
            addr: std::sync::OnceLock::new(),
            lag: Mutex::new(HashMap::new()),
            topics,
            state: Mutex::new(State {
                role: if options.mirror {
                    Role::Mirror
                } else if options.leader.is_some() || options.coordinator.is_some() {
                    Role::Follower
                } else {
                    Role::Leader
                },
                epoch,
                leader: options.leader.clone().unwrap_or_default(),
                generation: 0,
                units: HashMap::new(),
                unit_generation: UNIT_GENERATIONS,
            }),
            options,
            trackers: Mutex::new(HashMap::new()),
            progress: Condvar::new(),
            stop: AtomicBool::new(false),
            fetchers: Mutex::new(Vec::new()),
            fetching: Mutex::new(HashSet::new()),
            dropping: Mutex::new(HashSet::new()),
            resync: AtomicBool::new(false),
            failure_reopens: failure_reopens.into(),
            replica_writes: Mutex::new(()),
            fence,
        });
        let handler = Arc::new(NodeHandler(shared.clone()));
        let server = Server::start(
            shared.options.listen.as_str(),
            handler,
            ServerOptions::default(),
        )
        .map_err(|e| Error::io("listen", shared.options.listen.clone(), e))?;
        let _ = shared.addr.set(server.addr());
        if shared.options.leader.is_none() && shared.fence.is_none() {
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
        #[cfg(feature = "etcd")]
        let coordinator = match (&shared.options.coordinator, &shared.fence) {
            (Some(c), Some(fence)) => Some(crate::replication::coordinator::start(
                control::Control(Arc::downgrade(&shared)),
                fence.clone(),
                c.clone(),
            )?),
            _ => None,
        };
        #[cfg(not(feature = "etcd"))]
        if shared.options.coordinator.is_some() {
            return Err(Error::Coordinator {
                what: "this build has no etcd coordinator: build with the `etcd` feature".into(),
                source: None,
            });
        }
        let node = Node {
            shared,
            server: Some(server),
            #[cfg(feature = "etcd")]
            coordinator,
        };
        if lock(&node.shared.state).role == Role::Leader {
            // A leader's every start is a new epoch (see `next_epoch`).
            let mut st = lock(&node.shared.state);
            let epoch = failover::next_epoch(st.epoch, failover::EpochStart::Start);
            node.shared.start_epoch_everywhere(epoch)?;
            st.epoch = epoch;
            st.leader = server_addr(&node.shared).to_string();
            tracing::info!(node = %node.shared.options.node_id, epoch, "leading");
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
        #[cfg(feature = "etcd")]
        if let Some(mut c) = self.coordinator.take() {
            c.stop();
        }
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

fn options_coordinated(
    options: &NodeOptions,
) -> Option<Arc<crate::replication::coordinator::LeaseFence>> {
    options
        .coordinator
        .as_ref()
        .map(|_| Arc::new(crate::replication::coordinator::LeaseFence::new()))
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

    /// `Some(leader address)` if this node does not lead `key`'s unit (fetches).
    fn not_leading(&self, key: &Key) -> Option<String> {
        let u = lock(&self.state).unit(key);
        (u.role != Role::Leader).then_some(u.leader)
    }

    /// `Some(leader address)` if this node takes no produce or commit for `key`'s unit: it
    /// does not lead it, or hands it over (no address then: the client asks again).
    fn not_accepting(&self, key: &Key) -> Option<String> {
        let u = lock(&self.state).unit(key);
        match (u.role, u.handing_over) {
            (Role::Leader, false) => None,
            (Role::Leader, true) => Some(String::new()),
            _ => Some(u.leader),
        }
    }

    /// Whether leadership is per partition (a per-partition coordinator).
    fn per_unit(&self) -> bool {
        self.options
            .coordinator
            .as_ref()
            .is_some_and(|c| c.per_partition)
    }

    fn status(&self) -> Message {
        let (role, epoch, leader, units) = {
            let st = lock(&self.state);
            let mut role = st.role;
            if st.units.values().any(|u| u.role == Role::Leader) {
                // Per partition: a node that leads any unit says it leads.
                role = Role::Leader;
            }
            (role, st.epoch, st.leader.clone(), st.units.clone())
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
                let role = units.get(&(t.name.clone(), p)).map_or(role, |u| u.role);
                let followers = trackers
                    .get(&(t.name.clone(), p))
                    .filter(|tr| tr.topic_id == t.id)
                    .map(|tr| {
                        tr.tracker
                            .followers()
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
                config: t.config,
                topic: t.name,
            })
            .collect();
        Message::MetadataResponse { leader, topics }
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

/// Who fetches what, from a [`Message::FetchRequest`].
#[derive(Debug, Clone, Copy)]
struct FetchAt<'a> {
    role: FetchRole,
    node_id: &'a str,
    topic: &'a str,
    partition: u32,
    /// The first offset wanted (a follower's written end).
    offset: u64,
    /// The epoch of the fetcher's last batch.
    last_epoch: u64,
    /// A follower's durable end (at most `offset`).
    durable_end: u64,
    /// The incarnation of the topic the fetcher holds (all zeros: not checked).
    topic_id: [u8; 16],
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
            } => match node.not_leading(&key_of(&topic, partition)) {
                // A unit handed over answers `LeadershipLost` (see `produce`): the client
                // sends again until the new leader is named.
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
                durable_end,
                topic_id,
            } => {
                // Fencing: a fetcher that knows a newer epoch than this node leads in follows a
                // newer leader, so this one was deposed: it stops leading before it answers.
                let key = key_of(&topic, partition);
                if leader_epoch > lock(&node.state).unit(&key).epoch {
                    node.step_down(&key, leader_epoch);
                    node.follow_newer_epoch(&key, leader_epoch);
                }
                if let Some(leader) = node.not_leading(&key) {
                    return reply.send(&not_leader(leader));
                }
                // A follower still in an older epoch is refused with this one; it takes it and
                // fetches again (its last epoch decides what it must truncate).
                let epoch = lock(&node.state).unit(&key).epoch;
                if role != FetchRole::Consumer && leader_epoch < epoch {
                    return reply.send_fetch(ErrorCode::FencedEpoch, epoch, 0, 0, 0, u64::MAX, &[]);
                }
                let wait = Duration::from_millis(max_wait_ms.min(30_000).into());
                let fetch = FetchAt {
                    role,
                    node_id: &node_id,
                    topic: &topic,
                    partition,
                    offset,
                    last_epoch,
                    durable_end,
                    topic_id,
                };
                return node.fetch(reply, fetch, max_bytes, wait);
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
            } => match node.not_accepting(&key_of(OFFSETS_LOG, 0)) {
                Some(leader) => not_leader(leader),
                None => Message::OffsetCommitResponse {
                    error: node.commit(&group, &topic, partition, offset, epoch),
                },
            },
            Message::OffsetFetchRequest {
                group,
                topic,
                partition,
            } => match node.not_accepting(&key_of(OFFSETS_LOG, 0)) {
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
            // Per partition, the leader of the consumer offsets log serves snapshots: it cuts
            // the partitions it follows at the high watermark their leaders last sent it.
            Message::SnapshotRequest { chunk_bytes } => {
                match node.not_leading(&key_of(OFFSETS_LOG, 0)) {
                    Some(leader) => not_leader(leader),
                    None => return node.serve_snapshot(reply, chunk_bytes),
                }
            }
            Message::OffsetForTimeRequest {
                topic,
                partition,
                timestamp,
            } => match node.not_leading(&key_of(&topic, partition)) {
                Some(leader) => not_leader(leader),
                None => node.offset_for_time(&topic, partition, timestamp),
            },
            Message::StatusRequest => node.status(),
            Message::MetadataRequest => node.metadata(),
            Message::PromoteRequest { .. } if node.fence.is_some() => Message::ErrorResponse {
                error: ErrorCode::InvalidRequest,
                leader: String::new(),
                message: "this node's leaders are elected through etcd (--coordinator): a \
                          promote would start an epoch etcd does not know of. Stop the leader \
                          (its lease lapses and etcd elects another), or run the cluster \
                          without --coordinator to fail over by hand"
                    .into(),
            },
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
