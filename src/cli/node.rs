//! `stratalog serve`, `promote` and `status`: run a node over a store, and talk to one.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use clap::Args;
use stratalog::replication::coordinator::CoordinatorOptions;
use stratalog::replication::node::{Node, NodeOptions};
use stratalog::replication::transport::Client;
use stratalog::replication::{ErrorCode, Message};
use stratalog::{Store, StoreOptions};

use super::{CliError, context, outln};

/// `stratalog serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The store's directory (created if missing; a store prepared with `topics create` is
    /// served as it is).
    #[arg(short = 'd', long, env = "STRATALOG_DIR", value_name = "DIR")]
    pub dir: PathBuf,
    /// This node's id, as followers are known on their leader.
    #[arg(long, value_name = "ID")]
    pub node_id: String,
    /// Address to listen on (127.0.0.1:0 picks a free port; the address is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Follow this leader (any address that reaches it); without it, this node leads.
    #[arg(long, value_name = "ADDR")]
    pub leader: Option<String>,
    /// A follower not caught up for this long (milliseconds) leaves the in-sync set.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub replica_lag_timeout: u64,
    /// `acks=all` is refused while fewer replicas (the leader included) are in sync.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub min_in_sync: usize,
    /// Replicas of each partition, the leader included (for `acks=quorum`).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub replicas: usize,
    /// The other nodes (comma-separated addresses). A follower whose leader stops answering
    /// asks them who leads now; a node started without `--leader` first asks them, and
    /// follows a node that leads a higher epoch instead of leading beside it.
    #[arg(long, value_name = "ADDR,...", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Elect the leader through etcd (`etcd://HOST:PORT[,HOST:PORT...]`): no `--leader`, the
    /// node campaigns, follows whoever etcd names, and rejoins by itself after a restart
    /// (needs a build with the `etcd` feature).
    #[arg(long, value_name = "etcd://HOST:PORT,...", conflicts_with = "leader")]
    pub coordinator: Option<String>,
    /// The leadership lease (milliseconds): a leader that cannot renew it for this long
    /// stops acknowledging and is replaced.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 5000,
        requires = "coordinator"
    )]
    pub lease_ms: u64,
    /// The cluster's name in etcd (its keys live under /stratalog/NAME/).
    #[arg(
        long,
        value_name = "NAME",
        default_value = "default",
        requires = "coordinator"
    )]
    pub cluster: String,
    /// Let a node outside the in-sync set be elected when no in-sync node is (availability
    /// over durability): acknowledged records may be lost, and the node logs which.
    #[arg(long, requires = "coordinator")]
    pub unclean_election: bool,
    /// Elect a leader per partition (and one for the consumer offsets log), spread over the
    /// nodes by preferred leaders and handed back to a preferred leader that returns. This is
    /// the default under `--coordinator`; the flag is kept so that older command lines work.
    #[arg(long, requires = "coordinator", conflicts_with = "node_wide_leader")]
    pub per_partition_leaders: bool,
    /// Elect one leader of every partition instead of one per partition (the election of
    /// earlier versions). Every node of a cluster must agree: a node whose mode differs from
    /// the one recorded in etcd refuses to start.
    #[arg(long, requires = "coordinator")]
    pub node_wide_leader: bool,
}

impl ServeArgs {
    fn coordinator(&self) -> Result<Option<CoordinatorOptions>, CliError> {
        let Some(url) = &self.coordinator else {
            return Ok(None);
        };
        if self.lease_ms < 100 {
            return Err("--lease-ms must be at least 100".into());
        }
        let mut c = CoordinatorOptions::from_url(url).map_err(|e| e.to_string())?;
        c.lease = Duration::from_millis(self.lease_ms);
        c.cluster = self.cluster.clone();
        c.unclean_election = self.unclean_election;
        c.per_partition = self.per_partition_leaders || !self.node_wide_leader;
        Ok(Some(c))
    }
}

/// `stratalog mirror`.
#[derive(Debug, Args)]
pub struct MirrorArgs {
    /// The mirror's store directory (created if missing).
    #[arg(short = 'd', long, env = "STRATALOG_DIR", value_name = "DIR")]
    pub dir: PathBuf,
    /// The source cluster: one or more of its nodes (comma-separated). The mirror follows
    /// whichever leads, also after a failover there.
    #[arg(
        long,
        value_name = "ADDR[,ADDR...]",
        value_delimiter = ',',
        required = true
    )]
    pub source: Vec<String>,
    /// Copy only the topics whose names match this glob pattern (`*`, `?`, `[...]`); every
    /// topic by default.
    #[arg(long, value_name = "PATTERN")]
    pub topics: Option<String>,
    /// This mirror's id.
    #[arg(long, value_name = "ID", default_value = "mirror")]
    pub node_id: String,
    /// Address to listen on (for `status`, `promote` and consumers).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: String,
}

/// Runs a node until SIGINT or SIGTERM.
pub fn serve(a: ServeArgs) -> Result<(), CliError> {
    let coordinator = a.coordinator()?;
    run(
        &a.dir,
        NodeOptions {
            node_id: a.node_id.clone(),
            listen: a.listen.clone(),
            leader: a.leader.clone(),
            replica_lag_timeout: Duration::from_millis(a.replica_lag_timeout),
            min_in_sync: a.min_in_sync,
            replicas: a.replicas,
            peers: a.peers.clone(),
            coordinator,
            ..NodeOptions::default()
        },
    )
}

/// Runs a mirror of a source cluster until SIGINT or SIGTERM.
pub fn mirror(a: MirrorArgs) -> Result<(), CliError> {
    let source = a
        .source
        .first()
        .cloned()
        .ok_or("--source needs an address")?;
    run(
        &a.dir,
        NodeOptions {
            node_id: a.node_id.clone(),
            listen: a.listen.clone(),
            leader: Some(source),
            peers: a.source.clone(),
            mirror: true,
            topics: a.topics.clone(),
            ..NodeOptions::default()
        },
    )
}

fn run(dir: &std::path::Path, options: NodeOptions) -> Result<(), CliError> {
    let (tx, stopped) = mpsc::channel();
    super::on_interrupt(move |signal| {
        let _ = tx.send(signal);
    })
    .map_err(context("cannot set up the SIGINT/SIGTERM handler"))?;
    // A new follower or mirror (empty directory) starts from a snapshot of its leader.
    match stratalog::snapshot::bootstrap_node(dir, &options) {
        Ok(Some(r)) => tracing::info!(
            node = r.node,
            bytes = r.restore.bytes,
            "bootstrapped from a snapshot"
        ),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, "no snapshot to bootstrap from; fetching from the start")
        }
    }
    let store = Store::open(dir, StoreOptions::default()).map_err(context(format!(
        "cannot open the store in {}",
        dir.display()
    )))?;
    let store = Arc::new(store);
    let id = options.node_id.clone();
    let node =
        Node::start(store.clone(), options).map_err(context(format!("cannot start node {id}")))?;
    outln!(
        "listening on {} as {} ({})",
        node.addr(),
        id,
        node.role().name()
    );
    let _ = stopped.recv();
    node.stop();
    match Arc::try_unwrap(store) {
        Ok(store) => store.close().map_err(context("closing the store failed")),
        Err(_) => Ok(()),
    }
}

/// `stratalog promote` and `stratalog status`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The node's address.
    #[arg(long, value_name = "ADDR")]
    pub node: String,
    /// Print JSON instead of text (`status`).
    #[arg(long)]
    pub json: bool,
    /// `status`: also show the cluster as etcd holds it (`etcd://HOST:PORT,...`): who leads,
    /// its lease, the epoch and the in-sync set.
    #[arg(long, value_name = "etcd://HOST:PORT,...")]
    pub coordinator: Option<String>,
    /// `status --coordinator`: the cluster's name in etcd.
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub cluster: String,
}

/// The cluster as etcd holds it, as JSON (`null` fields when absent).
#[cfg(feature = "etcd")]
fn coordinator_view(a: &NodeArgs) -> Result<Option<serde_json::Value>, CliError> {
    let Some(url) = &a.coordinator else {
        return Ok(None);
    };
    let mut c = CoordinatorOptions::from_url(url).map_err(|e| e.to_string())?;
    c.cluster = a.cluster.clone();
    let v = stratalog::replication::coordinator::describe(&c, Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    Ok(Some(serde_json::json!({
        "coordinator": url,
        "cluster": c.cluster,
        "leader": v.leader.as_ref().map(|l| serde_json::json!({
            "node_id": l.node_id,
            "addr": l.addr,
            "epoch": l.epoch,
        })),
        "lease": {
            "left_ms": v.lease_left_ms,
            "granted_ms": v.lease_granted_ms,
        },
        "epoch": v.epoch,
        "in_sync": v.in_sync.as_ref().map(|(_, ids)| ids.clone()),
        "in_sync_epoch": v.in_sync.as_ref().map(|(e, _)| *e),
        // Per-partition leadership (the default): the members, those up, each one's lease,
        // and each partition's leader, epoch, in-sync set and preferred leader.
        "members": v.members,
        "alive": v.alive,
        "leases": v.leases.iter().map(|(id, (left, granted))| (id.clone(), serde_json::json!({
            "left_ms": left,
            "granted_ms": granted,
        }))).collect::<serde_json::Map<_, _>>(),
        "partitions": v.units.iter().map(|((topic, p), u)| serde_json::json!({
            "topic": topic,
            "partition": p,
            "leader": u.leader.as_ref().map(|l| serde_json::json!({
                "node_id": l.node_id,
                "addr": l.addr,
                "epoch": l.epoch,
            })),
            "epoch": u.epoch,
            "in_sync": u.in_sync.as_ref().map(|(_, ids)| ids.clone()),
            "preferred": u.preferred,
            "handover": u.handover,
        })).collect::<Vec<_>>(),
    })))
}

#[cfg(not(feature = "etcd"))]
fn coordinator_view(a: &NodeArgs) -> Result<Option<serde_json::Value>, CliError> {
    match &a.coordinator {
        None => Ok(None),
        Some(_) => Err("this build has no etcd coordinator (build with the `etcd` feature)".into()),
    }
}

fn connect(node: &str) -> Result<Client, CliError> {
    let addr: SocketAddr = node
        .to_socket_addrs()
        .map_err(context(format!("cannot resolve {node}")))?
        .next()
        .ok_or_else(|| format!("{node} resolves to no address"))?;
    Client::connect(addr, Duration::from_secs(10)).map_err(|e| e.to_string().into())
}

/// Makes the node the leader of a new epoch.
pub fn promote(a: NodeArgs) -> Result<(), CliError> {
    let mut client = connect(&a.node)?;
    match client.call(&Message::PromoteRequest { min_epoch: 0 }) {
        Ok(Message::PromoteResponse {
            error: ErrorCode::None,
            epoch,
        }) => {
            outln!("{} leads in epoch {epoch}", a.node);
            Ok(())
        }
        Ok(Message::ErrorResponse { message, .. }) => {
            Err(format!("promote refused: {message}").into())
        }
        Ok(other) => Err(format!("promote refused: {other:?}").into()),
        Err(e) => Err(e.to_string().into()),
    }
}

/// Prints the node's role, epoch, leader and each partition's offsets and followers.
pub fn status(a: NodeArgs) -> Result<(), CliError> {
    let mut client = connect(&a.node)?;
    let Message::StatusResponse {
        node_id,
        role,
        epoch,
        leader,
        partitions,
    } = client
        .call(&Message::StatusRequest)
        .map_err(|e| e.to_string())?
    else {
        return Err("the node answered a status request with something else".into());
    };
    let cluster = coordinator_view(&a)?;
    // Who leads each partition: this node for those it leads; etcd's word for the others
    // when `--coordinator` is given (per-partition leadership), else the node's leader.
    let leader_of = |p: &stratalog::replication::PartitionStatus| -> String {
        if p.role == stratalog::replication::Role::Leader {
            return a.node.clone();
        }
        cluster
            .as_ref()
            .and_then(|c| {
                c["partitions"].as_array()?.iter().find(|u| {
                    u["topic"] == p.topic.as_str() && u["partition"] == p.partition
                })?["leader"]["addr"]
                    .as_str()
                    .map(String::from)
            })
            .unwrap_or_else(|| leader.clone())
    };
    if a.json {
        let parts: Vec<serde_json::Value> = partitions
            .iter()
            .map(|p| {
                serde_json::json!({
                    "topic": p.topic,
                    "partition": p.partition,
                    "leader": leader_of(p),
                    "role": p.role.name(),
                    "epoch": p.epoch,
                    "log_start": p.log_start,
                    "log_end": p.log_end,
                    "high_watermark": p.high_watermark,
                    "lag": {
                        "records": p.lag_records,
                        "bytes": p.lag_bytes,
                        "ms": p.lag_ms,
                    },
                    "followers": p.followers.iter().map(|f| serde_json::json!({
                        "node_id": f.node_id,
                        "log_end": f.log_end,
                        "lag": f.lag,
                        "in_sync": f.in_sync,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        outln!(
            "{}",
            serde_json::json!({
                "node_id": node_id,
                "role": role.name(),
                "epoch": epoch,
                "leader": leader,
                "partitions": parts,
                "coordinator": cluster,
            })
        );
        return Ok(());
    }
    outln!(
        "node {node_id} role={} epoch={epoch} leader={leader}",
        role.name()
    );
    if let Some(c) = &cluster {
        let leader = &c["leader"];
        outln!(
            "coordinator {} cluster={} leader={} ({}) epoch={} lease_left_ms={} lease_granted_ms={} in_sync={}",
            c["coordinator"].as_str().unwrap_or(""),
            c["cluster"].as_str().unwrap_or(""),
            leader["addr"].as_str().unwrap_or("none"),
            leader["node_id"].as_str().unwrap_or("-"),
            c["epoch"],
            c["lease"]["left_ms"],
            c["lease"]["granted_ms"],
            c["in_sync"]
        );
        for (id, l) in c["leases"].as_object().into_iter().flatten() {
            outln!(
                "  lease of {id}: left_ms={} granted_ms={}",
                l["left_ms"],
                l["granted_ms"]
            );
        }
        for u in c["partitions"].as_array().into_iter().flatten() {
            outln!(
                "  partition {}/{} leader={} ({}) epoch={} in_sync={} preferred={}",
                u["topic"].as_str().unwrap_or(""),
                u["partition"],
                u["leader"]["addr"].as_str().unwrap_or("none"),
                u["leader"]["node_id"].as_str().unwrap_or("-"),
                u["epoch"],
                u["in_sync"],
                u["preferred"].as_str().unwrap_or("-")
            );
        }
    }
    for p in partitions {
        if p.role == stratalog::replication::Role::Leader {
            outln!(
                "  {}/{} log_start={} log_end={} high_watermark={}",
                p.topic,
                p.partition,
                p.log_start,
                p.log_end,
                p.high_watermark
            );
        } else {
            outln!(
                "  {}/{} log_start={} log_end={} high_watermark={} lag={} records (~{} bytes, {} ms)",
                p.topic,
                p.partition,
                p.log_start,
                p.log_end,
                p.high_watermark,
                p.lag_records,
                p.lag_bytes,
                p.lag_ms
            );
        }
        for f in p.followers {
            outln!(
                "    follower {} log_end={} lag={} in_sync={}",
                f.node_id,
                f.log_end,
                f.lag,
                f.in_sync
            );
        }
    }
    Ok(())
}
