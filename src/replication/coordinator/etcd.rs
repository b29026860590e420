//! The etcd side of the coordinator: the lease and its keepalives, the campaign, the epoch
//! transaction, following the elected leader, publishing the in-sync set.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn,
    TxnOp,
};

use super::{CoordinatorOptions, LeaseFence, margin};

#[path = "units.rs"]
mod units;
use crate::error::{Error, Result};
use crate::replication::Role;
use crate::replication::node::control::Control;
pub use units::UnitRecord;

/// The coordinator's thread; [`Running::stop`] ends it (the node's stop calls it).
pub(crate) struct Running {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A transaction that creates `key` = `value` under `lease` only if `key` does not exist (a
/// campaign for a leadership key, or a handover request).
fn create_if_absent(key: String, value: impl Into<Vec<u8>>, lease: i64) -> Txn {
    Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key,
            value,
            Some(PutOptions::new().with_lease(lease)),
        )])
}

/// Starts the coordinator of a node.
pub(crate) fn start(
    control: Control,
    fence: Arc<LeaseFence>,
    options: CoordinatorOptions,
) -> Result<Running> {
    if options.endpoints.is_empty() {
        return Err(Error::Coordinator {
            what: "no etcd endpoint given".into(),
            source: None,
        });
    }
    let stop = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Coordinator {
            what: "cannot build the coordinator's runtime".into(),
            source: Some(Box::new(e)),
        })?;
    // A node whose election mode differs from the cluster's would lead beside its peers'
    // leaders: refuse to start while etcd answers and says so. If etcd does not answer now,
    // the coordinator checks again with every session it opens, and does not campaign first.
    let limit = options
        .lease
        .clamp(Duration::from_millis(500), Duration::from_secs(5));
    runtime.block_on(async {
        let connect = ConnectOptions::new()
            .with_connect_timeout(limit)
            .with_timeout(limit);
        let client = bounded(
            limit,
            "connect",
            Client::connect(&options.endpoints, Some(connect)),
        )
        .await;
        match client {
            Some(mut c) => check_mode(&mut c, &options, limit)
                .await
                .map_err(|what| Error::Coordinator { what, source: None }),
            None => Ok(()),
        }
    })?;
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("stratalog-coordinator".into())
        .spawn(move || {
            let mut c = Coordinator::new(control, fence, options, flag);
            runtime.block_on(c.run());
            c.fence.revoke();
        })
        .map_err(|e| Error::Coordinator {
            what: "cannot start the coordinator thread".into(),
            source: Some(Box::new(e)),
        })?;
    Ok(Running {
        stop,
        thread: Some(thread),
    })
}

/// The election mode this node runs (the value of the cluster's `mode` key).
fn mode_of(options: &CoordinatorOptions) -> &'static str {
    if options.per_partition {
        "per-partition"
    } else {
        "node-wide"
    }
}

/// Records this node's election mode in the cluster's `mode` key if none is recorded yet
/// (no lease: it outlives the nodes), and fails with what to do if the recorded one differs.
/// `Ok` too when etcd does not answer within `limit` (the caller asks again later).
async fn check_mode(
    client: &mut Client,
    options: &CoordinatorOptions,
    limit: Duration,
) -> std::result::Result<(), String> {
    let key = format!("{}mode", options.prefix());
    let ours = mode_of(options);
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key.clone(), ours, None)])
        .or_else([TxnOp::get(key.clone(), None)]);
    let Some(answer) = bounded(limit, "record the election mode", client.txn(txn)).await else {
        return Ok(());
    };
    if answer.succeeded() {
        return Ok(());
    }
    let recorded = answer
        .op_responses()
        .into_iter()
        .find_map(|r| match r {
            etcd_client::TxnOpResponse::Get(g) => g
                .kvs()
                .first()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
            _ => None,
        })
        .unwrap_or_default();
    if recorded.is_empty() || recorded == ours {
        return Ok(());
    }
    let flag = if recorded == "node-wide" {
        "start it with --node-wide-leader"
    } else {
        "start it without --node-wide-leader"
    };
    Err(format!(
        "cluster {:?} elects {recorded} leaders (etcd key {key}) and this node was started for \
         {ours} ones: {flag}, or give it another --cluster",
        options.cluster
    ))
}

/// The value of the `leader` key: `"<epoch> <address> <node id>"`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stratalog::replication::coordinator::{CoordinatorOptions, describe};
///
/// // No etcd answers on port 1: a typed error that names the address, within the limit.
/// let o = CoordinatorOptions::from_url("etcd://127.0.0.1:1")?;
/// let err = describe(&o, Duration::from_secs(2)).unwrap_err();
/// assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
/// # Ok::<(), stratalog::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderRecord {
    /// The epoch it leads (0 while it starts it).
    pub epoch: u64,
    /// Its client address.
    pub addr: String,
    /// Its node id.
    pub node_id: String,
}

impl LeaderRecord {
    fn parse(v: &[u8]) -> Option<LeaderRecord> {
        let s = std::str::from_utf8(v).ok()?;
        let mut it = s.splitn(3, ' ');
        Some(LeaderRecord {
            epoch: it.next()?.parse().ok()?,
            addr: it.next()?.to_string(),
            node_id: it.next()?.to_string(),
        })
    }

    fn encode(&self) -> String {
        format!("{} {} {}", self.epoch, self.addr, self.node_id)
    }
}

fn parse_isr(v: &[u8]) -> Option<(u64, Vec<String>)> {
    let s = std::str::from_utf8(v).ok()?;
    let (epoch, ids) = s.split_once(' ').unwrap_or((s, ""));
    Some((
        epoch.parse().ok()?,
        ids.split(',')
            .filter(|i| !i.is_empty())
            .map(str::to_string)
            .collect(),
    ))
}

struct Keys {
    leader: String,
    epoch: String,
    isr: String,
}

impl Keys {
    fn new(options: &CoordinatorOptions) -> Keys {
        let p = options.prefix();
        Keys {
            leader: format!("{p}leader"),
            epoch: format!("{p}epoch"),
            isr: format!("{p}isr"),
        }
    }
}

/// The lease and its keepalive stream.
struct Session {
    client: Client,
    lease: i64,
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
    /// Until when the lease is surely held (last keepalive sent + lease − margin).
    until: Instant,
    last_sent: Instant,
    /// A watch of the cluster's keys: a change (a leader key deleted when its lease expired,
    /// a new leader named, a handover asked) wakes the loop at once instead of at its next
    /// tick. `None` while none could be opened: the loop then only polls.
    watch: Option<(etcd_client::Watcher, etcd_client::WatchStream)>,
    /// When to try opening the watch again.
    watch_retry: Instant,
}

/// This node's leadership.
struct Leading {
    /// The create revision of its `leader` key: what its guarded transactions compare.
    revision: i64,
    epoch: u64,
    /// The in-sync set last written.
    published: Vec<String>,
}

struct Coordinator {
    control: Control,
    fence: Arc<LeaseFence>,
    options: CoordinatorOptions,
    keys: Keys,
    stop: Arc<AtomicBool>,
    tick: Duration,
    session: Option<Session>,
    leading: Option<Leading>,
    /// Since when no leader key exists (for the unclean election's wait).
    leaderless_since: Option<Instant>,
    /// When "not in the in-sync set" was last logged.
    told_not_in_sync: Option<Instant>,
    /// The per-partition election's state (unused by the node-wide one).
    units: units::Units,
}

/// How often a leader looks whether its in-sync set changed, to publish it at once.
const ISR_POLL: Duration = Duration::from_millis(20);

/// Bounds an etcd call: a cut-off etcd must never hold the loop past its lease.
async fn bounded<T, E: std::fmt::Display>(
    limit: Duration,
    what: &str,
    f: impl std::future::Future<Output = std::result::Result<T, E>>,
) -> Option<T> {
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "etcd: {what} failed");
            None
        }
        Err(_) => {
            tracing::debug!("etcd: {what} timed out");
            None
        }
    }
}

impl Coordinator {
    fn new(
        control: Control,
        fence: Arc<LeaseFence>,
        options: CoordinatorOptions,
        stop: Arc<AtomicBool>,
    ) -> Coordinator {
        let tick = (options.lease / 5).clamp(Duration::from_millis(20), Duration::from_secs(1));
        Coordinator {
            keys: Keys::new(&options),
            control,
            fence,
            options,
            stop,
            tick,
            session: None,
            leading: None,
            leaderless_since: None,
            told_not_in_sync: None,
            units: units::Units::default(),
        }
    }

    async fn run(&mut self) {
        while !self.stop.load(Ordering::Acquire) && self.control.view().is_some() {
            let started = Instant::now();
            if self.options.per_partition {
                self.step_units().await;
            } else {
                self.step().await;
            }
            let left = self.tick.saturating_sub(started.elapsed());
            self.wait(left).await;
        }
        if self.leading.take().is_some() {
            self.fence.revoke();
        }
        // Hand the leadership over at once instead of after a lease time.
        if let Some(mut s) = self.session.take() {
            let lease = s.lease;
            let _ = bounded(self.tick, "revoke", s.client.lease_revoke(lease)).await;
        }
    }

    async fn step(&mut self) {
        self.keep_alive().await;
        if !self.lease_held() {
            self.lost("the lease could not be renewed in time");
            self.session = None;
            self.session = self.open_session().await;
            return;
        }
        let Some(view) = self.control.view() else {
            return;
        };
        let Some(s) = self.session.as_mut() else {
            return;
        };
        let leader_key = self.keys.leader.clone();
        let Some(got) = bounded(self.tick, "get leader", s.client.get(leader_key, None)).await
        else {
            return;
        };
        let kv = got.kvs().first().cloned();
        if let Some(l) = &self.leading {
            match &kv {
                Some(kv) if kv.create_revision() == l.revision => {
                    if view.role != Role::Leader {
                        // Deposed meanwhile (a fetcher fenced it): give the leadership back.
                        self.lost("the node no longer leads");
                        self.drop_key().await;
                        return;
                    }
                    self.fence.allow_until(self.session_until());
                    self.publish_in_sync().await;
                }
                _ => self.lost("another node holds the leadership key"),
            }
            return;
        }
        match kv {
            Some(kv) if self.session.as_ref().is_some_and(|s| s.lease == kv.lease()) => {
                // This node's key under its live lease, though it does not lead: a campaign
                // (or an epoch's start) etcd applied but whose answer was lost. It would never
                // lapse and nobody would lead: give it back, the next campaign starts an epoch
                // properly (as per partition, see `units.rs`).
                tracing::warn!(
                    "holding the leadership key without leading (an etcd answer was lost): \
                     giving it back"
                );
                let ops = vec![TxnOp::delete(self.keys.leader.clone(), None)];
                let _ = self.guarded(kv.create_revision(), ops).await;
            }
            Some(kv) => {
                self.leaderless_since = None;
                if let Some(rec) = LeaderRecord::parse(kv.value())
                    && rec.epoch > 0
                    && rec.addr != view.addr
                    && (rec.epoch != view.epoch || rec.addr != view.leader)
                    && rec.epoch >= view.epoch
                {
                    tracing::info!(
                        leader = rec.addr,
                        epoch = rec.epoch,
                        "etcd names a new leader: following it"
                    );
                    self.control.follow(rec.epoch, rec.addr);
                }
            }
            None => {
                let since = *self.leaderless_since.get_or_insert_with(Instant::now);
                self.campaign(&view, since).await;
            }
        }
    }

    /// Whether the node's lease is surely held now (renewed in time).
    fn lease_held(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| Instant::now() < s.until)
    }

    fn session_until(&self) -> Instant {
        self.session.as_ref().map_or_else(Instant::now, |s| s.until)
    }

    /// Stops leading, if it did: no acknowledgement from now on.
    fn lost(&mut self, why: &str) {
        if self.leading.take().is_some() {
            tracing::warn!(why, "stepping down");
            self.fence.revoke();
            self.control.resign();
        } else {
            self.fence.revoke();
        }
    }

    /// Deletes this node's leader key (it stepped down while its lease lives).
    async fn drop_key(&mut self) {
        if let Some(mut s) = self.session.take() {
            let lease = s.lease;
            let _ = bounded(self.tick, "revoke", s.client.lease_revoke(lease)).await;
        }
    }

    async fn open_session(&mut self) -> Option<Session> {
        let limit = self.options.lease.max(Duration::from_millis(200));
        let connect = ConnectOptions::new()
            .with_connect_timeout(limit)
            .with_timeout(limit);
        let mut client = bounded(
            limit,
            "connect",
            Client::connect(&self.options.endpoints, Some(connect)),
        )
        .await?;
        if let Err(why) = check_mode(&mut client, &self.options, limit).await {
            tracing::error!("{why}; this node takes no part in the election");
            return None;
        }
        let secs = self.options.lease.as_millis().div_ceil(1000).max(1) as i64;
        let sent = Instant::now();
        let grant = bounded(limit, "lease grant", client.lease_grant(secs, None)).await?;
        // etcd may grant more than asked (its minimum), never less: counting with the asked
        // lease time is on the safe side.
        let until = sent + self.options.lease - margin(self.options.lease);
        let (keeper, stream) = bounded(
            limit,
            "keepalive stream",
            client.lease_keep_alive(grant.id()),
        )
        .await?;
        tracing::debug!(lease = grant.id(), ttl = grant.ttl(), "etcd lease granted");
        let mut session = Session {
            client,
            lease: grant.id(),
            keeper,
            stream,
            until,
            last_sent: sent,
            watch: None,
            watch_retry: Instant::now(),
        };
        self.open_watch(&mut session).await;
        Some(session)
    }

    /// Opens the watch of the cluster's keys (see [`Session::watch`]), if it is time to try.
    async fn open_watch(&self, s: &mut Session) {
        if s.watch.is_some() || Instant::now() < s.watch_retry {
            return;
        }
        let options = etcd_client::WatchOptions::new().with_prefix();
        let opened = bounded(
            self.tick,
            "watch",
            s.client.watch(self.options.prefix(), Some(options)),
        )
        .await;
        if opened.is_none() {
            s.watch_retry = Instant::now() + self.options.lease;
        }
        s.watch = opened;
    }

    /// Waits `left`, or less if the watch reports a change of the cluster's keys.
    ///
    /// A leader whose in-sync set changed (a follower caught up) stops waiting too, within
    /// [`ISR_POLL`], so that it publishes the set at once: until it does, only itself may be
    /// elected if it dies.
    async fn wait(&mut self, left: Duration) {
        let until = Instant::now() + left;
        loop {
            let now = Instant::now();
            if now >= until {
                return;
            }
            if self.wait_slice((until - now).min(ISR_POLL)).await || self.in_sync_changed() {
                return;
            }
        }
    }

    /// Whether a set this node leads in has an in-sync set other than the one published.
    fn in_sync_changed(&self) -> bool {
        if let Some(l) = &self.leading {
            return self.control.in_sync() != l.published;
        }
        self.units.in_sync_changed(&self.control)
    }

    /// Waits `left` or until the watch reports a change (true).
    async fn wait_slice(&mut self, left: Duration) -> bool {
        let Some(s) = self.session.as_mut() else {
            tokio::time::sleep(left).await;
            return false;
        };
        if s.watch.is_none() {
            let retry = Instant::now() >= s.watch_retry;
            if retry {
                let mut taken = self.session.take();
                if let Some(s) = taken.as_mut() {
                    self.open_watch(s).await;
                }
                self.session = taken;
            }
            tokio::time::sleep(left).await;
            return false;
        }
        let Some((_, stream)) = s.watch.as_mut() else {
            return false;
        };
        match tokio::time::timeout(left, stream.message()).await {
            Ok(Ok(Some(_))) => true,
            Err(_) => false,
            Ok(other) => {
                // The watch ended (a member went away, the stream broke): poll until a new
                // one opens.
                tracing::debug!(?other, "etcd: the watch ended");
                s.watch = None;
                s.watch_retry = Instant::now() + self.options.lease / 5;
                tokio::time::sleep(left).await;
                false
            }
        }
    }

    async fn keep_alive(&mut self) {
        let lease = self.options.lease;
        let endpoints = self.options.endpoints.clone();
        let Some(s) = self.session.as_mut() else {
            return;
        };
        // Renew every third of the lease time.
        if s.last_sent.elapsed() < lease / 3 {
            return;
        }
        let sent = Instant::now();
        s.last_sent = sent;
        let limit = self.tick.min(lease / 3);
        let answered = tokio::time::timeout(limit, async {
            s.keeper.keep_alive().await?;
            s.stream.message().await
        })
        .await;
        match answered {
            Ok(Ok(Some(r))) if r.ttl() > 0 => s.until = sent + lease - margin(lease),
            Ok(Ok(Some(_))) => {
                tracing::warn!("etcd: the lease expired");
                s.until = Instant::now();
            }
            other => {
                // The stream's member may be gone (one of several etcd members died): open a
                // new stream for the same lease, which the client sends to a member that
                // answers, and renew through it at once; again, through a new client (whose
                // connections skip a member that is gone), until the lease would be lost.
                // Once was not enough: a reopened stream could land on the dead member again,
                // and the next try came a third of a lease later (a node lost its lease and
                // its partitions in `tests/etcd_partitions.rs`
                // `per_partition_an_etcd_cluster_losing_a_member_changes_nothing`).
                // `until` moves only on an answer.
                tracing::debug!(?other, "etcd: keepalive unanswered; reopening the stream");
                let lease_id = s.lease;
                let mut fresh_client = false;
                while Instant::now() < s.until {
                    if fresh_client {
                        let connect = ConnectOptions::new()
                            .with_connect_timeout(limit)
                            .with_timeout(limit);
                        let client =
                            tokio::time::timeout(limit, Client::connect(&endpoints, Some(connect)));
                        match client.await {
                            Ok(Ok(c)) => s.client = c,
                            _ => continue,
                        }
                    }
                    fresh_client = true;
                    let reopened = tokio::time::timeout(limit, s.client.lease_keep_alive(lease_id));
                    let Ok(Ok((keeper, stream))) = reopened.await else {
                        continue;
                    };
                    s.keeper = keeper;
                    s.stream = stream;
                    let sent = Instant::now();
                    let again = tokio::time::timeout(limit, async {
                        s.keeper.keep_alive().await?;
                        s.stream.message().await
                    })
                    .await;
                    match again {
                        Ok(Ok(Some(r))) if r.ttl() > 0 => {
                            s.last_sent = sent;
                            s.until = sent + lease - margin(lease);
                            return;
                        }
                        Ok(Ok(Some(_))) => {
                            tracing::warn!("etcd: the lease expired");
                            s.until = Instant::now();
                            return;
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    async fn campaign(&mut self, view: &super::super::node::control::View, since: Instant) {
        let Some(s) = self.session.as_mut() else {
            return;
        };
        let tick = self.tick;
        let isr = bounded(tick, "get isr", s.client.get(self.keys.isr.clone(), None))
            .await
            .map(|r| r.kvs().first().and_then(|kv| parse_isr(kv.value())));
        let Some(isr) = isr else { return };
        let in_sync = isr
            .as_ref()
            .is_none_or(|(_, ids)| ids.contains(&view.node_id));
        if !in_sync {
            if !self.options.unclean_election {
                if self
                    .told_not_in_sync
                    .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
                {
                    tracing::warn!(node = view.node_id, isr = ?isr, "no leader, and this node is not in the in-sync set: it does not campaign (see --unclean-election)");
                    self.told_not_in_sync = Some(Instant::now());
                }
                return;
            }
            // In-sync nodes go first: an unclean candidate waits a lease time more.
            if since.elapsed() < self.options.lease * 2 {
                return;
            }
        }
        let me = LeaderRecord {
            epoch: 0,
            addr: view.addr.clone(),
            node_id: view.node_id.clone(),
        };
        let lease = s.lease;
        let txn = create_if_absent(self.keys.leader.clone(), me.encode(), lease);
        let Some(won) = bounded(tick, "campaign", s.client.txn(txn)).await else {
            return;
        };
        if !won.succeeded() {
            return;
        }
        let Some(revision) = won.header().map(|h| h.revision()) else {
            return;
        };
        if !in_sync {
            tracing::error!(
                node = view.node_id,
                isr = ?isr,
                log_ends = ?self.control.log_ends(),
                "UNCLEAN ELECTION: this node was not in the in-sync set; acknowledged records \
                 from these log ends on (per topic/partition) up to the old leader's ends may be lost"
            );
        }
        if let Err(e) = self.take_epoch(revision, me, isr).await {
            tracing::warn!(error = %e, "won the election but could not start an epoch; giving it back");
            self.leading = None;
            self.fence.revoke();
            self.control.resign();
            self.drop_key().await;
        }
    }

    /// Starts an epoch above every earlier one (fixed in etcd while holding `revision`),
    /// promotes the node, names it the leader, publishes its in-sync set, then acknowledges.
    async fn take_epoch(
        &mut self,
        revision: i64,
        mut me: LeaderRecord,
        _isr: Option<(u64, Vec<String>)>,
    ) -> std::result::Result<(), String> {
        let tick = self.tick.max(Duration::from_millis(200));
        let known = self.control.known_epoch().map_err(|e| e.to_string())?;
        let s = self.session.as_mut().ok_or("no session")?;
        let got = bounded(
            tick,
            "get epoch",
            s.client.get(self.keys.epoch.clone(), None),
        )
        .await
        .ok_or("cannot read the epoch")?;
        let stored: u64 = got
            .kvs()
            .first()
            .and_then(|kv| std::str::from_utf8(kv.value()).ok()?.parse().ok())
            .unwrap_or(0);
        // Promotes take even epochs, a leader's start without a coordinator odd ones
        // (`node::failover::next_epoch`): round up so that the promote takes this one.
        let epoch = (stored.max(known) + 2) & !1;
        self.guarded(
            revision,
            vec![TxnOp::put(self.keys.epoch.clone(), epoch.to_string(), None)],
        )
        .await?;
        let led = self.control.promote_to(epoch).map_err(|e| e.to_string())?;
        if led != epoch {
            self.guarded(
                revision,
                vec![TxnOp::put(self.keys.epoch.clone(), led.to_string(), None)],
            )
            .await?;
        }
        me.epoch = led;
        let lease = self.session.as_ref().ok_or("no session")?.lease;
        let own = vec![me.node_id.clone()];
        self.guarded(
            revision,
            vec![
                TxnOp::put(
                    self.keys.leader.clone(),
                    me.encode(),
                    Some(PutOptions::new().with_lease(lease)),
                ),
                TxnOp::put(
                    self.keys.isr.clone(),
                    format!("{led} {}", own.join(",")),
                    None,
                ),
            ],
        )
        .await?;
        self.fence.set_published(own.clone());
        self.leading = Some(Leading {
            revision,
            epoch: led,
            published: own,
        });
        self.fence.allow_until(self.session_until());
        tracing::info!(
            node = me.node_id,
            epoch = led,
            "elected through etcd: leading"
        );
        Ok(())
    }

    /// Runs `ops` only while this node's leader key has create revision `revision`.
    async fn guarded(&mut self, revision: i64, ops: Vec<TxnOp>) -> std::result::Result<(), String> {
        let key = self.keys.leader.clone();
        self.guarded_on(key, revision, ops, "the leadership key")
            .await
    }

    /// Runs `ops` only while `key` (a leadership key this node wrote, `what` in the error) has
    /// create revision `revision`: the guard of every epoch and in-sync write.
    async fn guarded_on(
        &mut self,
        key: String,
        revision: i64,
        ops: Vec<TxnOp>,
        what: &str,
    ) -> std::result::Result<(), String> {
        let s = self.session.as_mut().ok_or("no session")?;
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, revision)])
            .and_then(ops);
        let r = bounded(
            self.tick.max(Duration::from_millis(200)),
            "guarded txn",
            s.client.txn(txn),
        )
        .await
        .ok_or("etcd did not answer")?;
        if r.succeeded() {
            Ok(())
        } else {
            Err(format!("this node no longer holds {what}"))
        }
    }

    /// Writes the in-sync set when it changed. A grown set is what the acknowledgements wait
    /// for before it is written (the union), a shrunk one only once it is written.
    async fn publish_in_sync(&mut self) {
        let Some(l) = &self.leading else { return };
        let now = self.control.in_sync();
        if now == l.published {
            return;
        }
        let (revision, epoch, old) = (l.revision, l.epoch, l.published.clone());
        let mut union = old.clone();
        union.extend(now.iter().filter(|i| !old.contains(i)).cloned());
        self.fence.set_published(union);
        let put = TxnOp::put(
            self.keys.isr.clone(),
            format!("{epoch} {}", now.join(",")),
            None,
        );
        match self.guarded(revision, vec![put]).await {
            Ok(()) => {
                tracing::info!(in_sync = ?now, "published the in-sync set");
                self.fence.set_published(now.clone());
                if let Some(l) = self.leading.as_mut() {
                    l.published = now;
                }
            }
            Err(e) => tracing::debug!(error = e, "could not publish the in-sync set"),
        }
    }
}

/// The cluster as etcd holds it (`stratalog status --coordinator`), read by [`describe`].
///
/// # Examples
///
/// ```
/// use stratalog::replication::coordinator::ClusterView;
///
/// // A cluster no node ever joined: no leader, epoch 0, no in-sync set.
/// let v = ClusterView::default();
/// assert!(v.leader.is_none() && v.in_sync.is_none() && v.epoch == 0);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// The `leader` key, if a node holds it.
    pub leader: Option<LeaderRecord>,
    /// The remaining time of the leader's lease, in milliseconds (per partition: of the
    /// first unit's leader; see [`ClusterView::leases`]).
    pub lease_left_ms: Option<i64>,
    /// The lease time etcd granted the leader, in milliseconds (per partition: to the first
    /// unit's leader).
    pub lease_granted_ms: Option<i64>,
    /// The highest epoch started.
    pub epoch: u64,
    /// The in-sync set last published, and the epoch that published it.
    pub in_sync: Option<(u64, Vec<String>)>,
    /// Per-partition leadership (the default): each unit (topic, partition;
    /// the consumer offsets log is `__consumer_offsets`, 0) as etcd holds it.
    pub units: std::collections::BTreeMap<(String, u32), UnitRecord>,
    /// The registered members (sorted ids), per-partition leadership only.
    pub members: Vec<String>,
    /// The members up now (their lease lives), per-partition leadership only.
    pub alive: Vec<String>,
    /// Each member's lease that lives now, per-partition leadership only: node id to
    /// (milliseconds left, milliseconds granted). One lease per node covers every unit it leads.
    pub leases: std::collections::BTreeMap<String, (i64, i64)>,
}

/// Reads the cluster's keys from etcd (on a runtime of its own, for at most `limit`).
pub fn describe(options: &CoordinatorOptions, limit: Duration) -> Result<ClusterView> {
    let fail = |what: String, e: Option<Box<dyn std::error::Error + Send + Sync>>| {
        Error::Coordinator { what, source: e }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail("cannot build a runtime".into(), Some(Box::new(e))))?;
    let keys = Keys::new(options);
    runtime.block_on(async {
        let read = async {
            let mut c = Client::connect(&options.endpoints, None).await?;
            let mut view = ClusterView::default();
            let leader = c.get(keys.leader.clone(), None).await?;
            if let Some(kv) = leader.kvs().first() {
                view.leader = LeaderRecord::parse(kv.value());
                if kv.lease() != 0 {
                    let ttl = c.lease_time_to_live(kv.lease(), None).await?;
                    view.lease_left_ms = Some(ttl.ttl() * 1000);
                    view.lease_granted_ms = Some(ttl.granted_ttl() * 1000);
                }
            }
            let epoch = c.get(keys.epoch.clone(), None).await?;
            view.epoch = epoch
                .kvs()
                .first()
                .and_then(|kv| std::str::from_utf8(kv.value()).ok()?.parse().ok())
                .unwrap_or(0);
            let isr = c.get(keys.isr.clone(), None).await?;
            view.in_sync = isr.kvs().first().and_then(|kv| parse_isr(kv.value()));
            let prefix = options.prefix();
            let all = c
                .get(
                    prefix.clone(),
                    Some(etcd_client::GetOptions::new().with_prefix()),
                )
                .await?;
            units::describe_units(&prefix, all.kvs(), &mut view);
            // Per partition: each member's lease, as its `alive/<id>` key carries it.
            let alive = format!("{prefix}alive/");
            for kv in all.kvs() {
                let Some(id) = kv
                    .key_str()
                    .ok()
                    .and_then(|k| k.strip_prefix(alive.as_str()))
                else {
                    continue;
                };
                if kv.lease() != 0 {
                    let ttl = c.lease_time_to_live(kv.lease(), None).await?;
                    view.leases
                        .insert(id.to_string(), (ttl.ttl() * 1000, ttl.granted_ttl() * 1000));
                }
            }
            if view.leader.is_none() {
                // Per partition: the lease of the first unit's leader, so that a lease is
                // shown in the node-wide fields too (each member's is in `leases`).
                let unit_lease = all.kvs().iter().find(|kv| {
                    kv.lease() != 0
                        && kv.key_str().is_ok_and(|k| {
                            k.strip_prefix(prefix.as_str())
                                .is_some_and(|r| r.starts_with("p/") && r.ends_with("/leader"))
                        })
                });
                if let Some(kv) = unit_lease {
                    let ttl = c.lease_time_to_live(kv.lease(), None).await?;
                    view.lease_left_ms = Some(ttl.ttl() * 1000);
                    view.lease_granted_ms = Some(ttl.granted_ttl() * 1000);
                }
            }
            Ok::<_, etcd_client::Error>(view)
        };
        match tokio::time::timeout(limit, read).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(fail(
                format!(
                    "cannot read the cluster from etcd at {}",
                    options.endpoints.join(",")
                ),
                Some(Box::new(e)),
            )),
            Err(_) => Err(fail(
                format!(
                    "etcd at {} did not answer within {limit:?}",
                    options.endpoints.join(",")
                ),
                None,
            )),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let r = LeaderRecord {
            epoch: 7,
            addr: "127.0.0.1:9".into(),
            node_id: "a b".into(),
        };
        assert_eq!(LeaderRecord::parse(r.encode().as_bytes()), Some(r));
        assert_eq!(LeaderRecord::parse(b"x 1 2"), None);
        assert_eq!(parse_isr(b"3 a,b"), Some((3, vec!["a".into(), "b".into()])));
        assert_eq!(parse_isr(b"3"), Some((3, vec![])));
    }
}
