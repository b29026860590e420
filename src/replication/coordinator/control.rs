//! The coordinator's handle on its node: a child module of `node` (declared there with
//! `#[path]`), kept beside the coordinator so that the node's files carry only small hooks.

#[cfg(feature = "etcd")]
use std::collections::BTreeMap;
#[cfg(feature = "etcd")]
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::*;

#[cfg(feature = "etcd")]
/// What the coordinator may ask of its node. Holds the node weakly: a stopped node is gone.
#[derive(Clone)]
pub(crate) struct Control(pub(super) Weak<Shared>);

#[cfg(feature = "etcd")]
/// The node's role as the coordinator sees it.
#[derive(Debug, Clone)]
pub(crate) struct View {
    pub(crate) role: Role,
    pub(crate) epoch: u64,
    pub(crate) leader: String,
    pub(crate) addr: String,
    pub(crate) node_id: String,
}

#[cfg(feature = "etcd")]
impl Control {
    fn get(&self) -> Option<Arc<Shared>> {
        self.0.upgrade()
    }

    pub(crate) fn view(&self) -> Option<View> {
        let s = self.get()?;
        let st = lock(&s.state);
        Some(View {
            role: st.role,
            epoch: st.epoch,
            leader: st.leader.clone(),
            addr: s.addr.get().map(|a| a.to_string()).unwrap_or_default(),
            node_id: s.options.node_id.clone(),
        })
    }

    /// The highest epoch this node knows (its state and its logs' histories).
    pub(crate) fn known_epoch(&self) -> Result<u64> {
        let s = self.get().ok_or_else(stopped)?;
        let st = lock(&s.state).epoch;
        Ok(st.max(current_epoch(&s.store)?))
    }

    /// Leads `epoch` (or a higher one, returned), durably in every partition.
    pub(crate) fn promote_to(&self, epoch: u64) -> Result<u64> {
        let s = self.get().ok_or_else(stopped)?;
        s.promote(epoch.saturating_sub(1))
    }

    /// Follows `leader`, which leads `epoch` (the leader-change path of an announcement).
    pub(crate) fn follow(&self, epoch: u64, leader: String) {
        if let Some(s) = self.get() {
            let (error, theirs) = s.leader_change(epoch, leader.clone());
            if error != ErrorCode::None {
                tracing::debug!(
                    epoch,
                    leader,
                    error = error.name(),
                    ours = theirs,
                    "not following"
                );
            }
        }
    }

    /// Stops leading at once (the lease could not be renewed, or another node holds the
    /// leadership): refuses produces, and fetches from whoever the coordinator names next.
    pub(crate) fn resign(&self) {
        let Some(s) = self.get() else { return };
        if let Some(f) = &s.fence {
            f.revoke();
        }
        {
            let mut st = lock(&s.state);
            if st.role != Role::Leader {
                return;
            }
            tracing::warn!(node = %s.options.node_id, epoch = st.epoch, "lost the leadership lease: no longer leading");
            st.role = Role::Follower;
            st.leader = String::new();
            st.generation += 1;
        }
        lock(&s.trackers).clear();
        s.progress.notify_all();
        if let Err(e) = s.start_fetchers() {
            tracing::error!(error = %e, "could not start following after losing the lease");
        }
    }

    /// The in-sync set as this leader sees it: itself, and every follower in sync in every
    /// partition it fetches (sorted).
    pub(crate) fn in_sync(&self) -> Vec<String> {
        let Some(s) = self.get() else {
            return Vec::new();
        };
        let mut verdict: BTreeMap<String, bool> = BTreeMap::new();
        for tracked in lock(&s.trackers).values() {
            for (id, f) in tracked.tracker.followers() {
                *verdict.entry(id.clone()).or_insert(true) &= f.in_sync;
            }
        }
        verdict.insert(s.options.node_id.clone(), true);
        verdict
            .into_iter()
            .filter_map(|(id, ok)| ok.then_some(id))
            .collect()
    }

    /// Each log's end here (`topic`, partition, end), for the unclean election's report.
    pub(crate) fn log_ends(&self) -> Vec<(String, u32, u64)> {
        let Some(s) = self.get() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for t in s.store.topics().unwrap_or_default() {
            for p in 0..t.partitions() {
                if let Ok(log) = s.store.partition(&t.name, p) {
                    out.push((t.name.clone(), p, log.end_offset()));
                }
            }
        }
        out
    }
}

#[cfg(feature = "etcd")]
/// One leadership unit as the per-partition coordinator sees it.
#[derive(Debug, Clone)]
pub(crate) struct UnitView {
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) role: Role,
    pub(crate) epoch: u64,
    /// The highest epoch in the unit's log history.
    pub(crate) log_epoch: u64,
}

#[cfg(feature = "etcd")]
/// The per-partition coordinator's handle: one leadership unit per partition, and one for
/// the consumer offsets log.
impl Control {
    /// This node's address and id.
    pub(crate) fn me(&self) -> Option<(String, String)> {
        let s = self.get()?;
        Some((
            s.addr.get().map(|a| a.to_string()).unwrap_or_default(),
            s.options.node_id.clone(),
        ))
    }

    /// Every unit of the store: the consumer offsets log first, then each partition.
    pub(crate) fn units(&self) -> Vec<UnitView> {
        let Some(s) = self.get() else {
            return Vec::new();
        };
        let mut keys = vec![(OFFSETS_LOG.to_string(), 0)];
        for t in s.store.topics().unwrap_or_default() {
            for p in 0..t.partitions() {
                keys.push((t.name.clone(), p));
            }
        }
        // The logs first: the state lock is not held across the store's lookups.
        let logs: Vec<(Key, u64)> = keys
            .into_iter()
            .filter_map(|key| {
                let epoch = s.partition(&key.0, key.1).ok()?.leader_epoch();
                Some((key, epoch))
            })
            .collect();
        let st = lock(&s.state);
        logs.into_iter()
            .map(|(key, log_epoch)| {
                let u = st.unit(&key);
                UnitView {
                    topic: key.0,
                    partition: key.1,
                    role: u.role,
                    epoch: u.epoch,
                    log_epoch,
                }
            })
            .collect()
    }

    /// Leads a unit in `epoch` or a higher one (returned), with the followers `carried` (the
    /// members of the unit's last published in-sync set that are up) in sync from the start.
    pub(crate) fn promote_unit(&self, key: &Key, epoch: u64, carried: &[String]) -> Result<u64> {
        let s = self.get().ok_or_else(stopped)?;
        s.promote_unit(key, epoch.saturating_sub(1), carried)
    }

    /// Follows `leader` in a unit, which it leads in `epoch`.
    pub(crate) fn follow_unit(&self, key: &Key, epoch: u64, leader: String) {
        if let Some(s) = self.get() {
            s.follow_unit(key, epoch, leader);
        }
    }

    /// Stops leading a unit at once.
    pub(crate) fn resign_unit(&self, key: &Key) {
        if let Some(s) = self.get() {
            s.resign_unit(key);
        }
    }

    /// Stops leading every unit at once (the lease is lost).
    pub(crate) fn resign_all(&self) {
        let Some(s) = self.get() else { return };
        if let Some(f) = &s.fence {
            f.revoke();
        }
        let led: Vec<Key> = lock(&s.state)
            .units
            .iter()
            .filter(|(_, u)| u.role == Role::Leader)
            .map(|(k, _)| k.clone())
            .collect();
        for key in led {
            s.resign_unit(&key);
        }
    }

    /// Starts or ends handing a unit over.
    pub(crate) fn set_handing_over(&self, key: &Key, on: bool) {
        if let Some(s) = self.get() {
            s.set_handing_over(key, on);
        }
    }

    /// A unit's in-sync set as its leader sees it: itself and its followers in sync (sorted).
    pub(crate) fn unit_in_sync(&self, key: &Key) -> Vec<String> {
        let Some(s) = self.get() else {
            return Vec::new();
        };
        let mut ids = vec![s.options.node_id.clone()];
        if let Some(t) = lock(&s.trackers).get_mut(key) {
            // Also when no produce waits (which expires them too): a follower carried in at an
            // election that never fetches leaves the published set after the lag timeout.
            t.tracker.expire(std::time::Instant::now());
            ids.extend(
                t.tracker
                    .followers()
                    .iter()
                    .filter(|(_, f)| f.in_sync)
                    .map(|(id, _)| id.clone()),
            );
        }
        ids.sort();
        ids.dedup();
        ids
    }

    /// Whether follower `id` of a unit this node leads is in sync and holds, durably, every
    /// record of the unit's log.
    pub(crate) fn holds_everything(&self, key: &Key, id: &str) -> bool {
        let Some(s) = self.get() else { return false };
        let Ok(log) = s.partition(&key.0, key.1) else {
            return false;
        };
        let end = log.written_end();
        lock(&s.trackers)
            .get(key)
            .and_then(|t| t.tracker.followers().get(id).cloned())
            .is_some_and(|f| f.in_sync && f.durable_end >= end)
    }

    /// Whether this node, following a unit, holds everything its leader had at its last
    /// fetch answer.
    pub(crate) fn caught_up(&self, key: &Key) -> bool {
        let Some(s) = self.get() else { return false };
        let Ok(log) = s.partition(&key.0, key.1) else {
            return false;
        };
        lock(&s.lag)
            .get(key)
            .is_some_and(|l| log.end_offset() >= l.leader_mark)
    }

    /// A unit's log end here, for the unclean election's report.
    pub(crate) fn log_end(&self, key: &Key) -> Option<u64> {
        let s = self.get()?;
        s.partition(&key.0, key.1).ok().map(|l| l.end_offset())
    }
}

#[cfg(feature = "etcd")]
fn stopped() -> Error {
    Error::Coordinator {
        what: "the node stopped".into(),
        source: None,
    }
}

impl Shared {
    /// The coordinated leader's last check before it acknowledges `topic/partition` below
    /// `end`: its lease must still be surely held, and at `acks=all` every member of the
    /// in-sync set published in etcd must hold the records (so that whichever may be elected
    /// next has them); waits for that up to `timeout`. `error`: the answer so far, returned
    /// as it is unless it is a success. Without a coordinator: `error`.
    pub(super) fn coordinated_ack(
        &self,
        topic: &str,
        partition: u32,
        end: u64,
        acks: Acks,
        error: ErrorCode,
        timeout: Duration,
    ) -> ErrorCode {
        let Some(fence) = &self.fence else {
            return error;
        };
        if error != ErrorCode::None {
            return error;
        }
        let deadline = Instant::now() + timeout;
        let key = (topic.to_string(), partition);
        let own = &self.options.node_id;
        let mut trackers = lock(&self.trackers);
        loop {
            if !fence.valid() {
                return ErrorCode::LeadershipLost;
            }
            if acks != Acks::All {
                return ErrorCode::None;
            }
            let held = fence
                .published(topic, partition)
                .iter()
                .filter(|id| *id != own)
                .all(|id| {
                    trackers
                        .get(&key)
                        .and_then(|t| t.tracker.followers().get(id))
                        .is_some_and(|f| f.durable_end >= end)
                });
            if held {
                return ErrorCode::None;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return ErrorCode::Timeout;
            }
            trackers = self
                .progress
                .wait_timeout(trackers, left.min(Duration::from_millis(20)))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }
}
