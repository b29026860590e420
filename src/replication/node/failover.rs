//! Role changes: a promote to a new epoch and its announcement to the peers, following a
//! newly announced leader, stepping down on a newer epoch, and asking the peers who leads.

use std::sync::Arc;
use std::time::Duration;

use super::*;

impl Shared {
    /// Leads a new epoch above `min_epoch` and every epoch seen, durably, in every partition.
    pub(super) fn promote(self: &Arc<Self>, min_epoch: u64) -> Result<u64> {
        let writes = lock(&self.replica_writes);
        let mut st = lock(&self.state);
        let former = std::mem::take(&mut st.leader);
        let epoch = next_epoch(
            st.epoch.max(min_epoch).max(current_epoch(&self.store)?),
            EpochStart::Promote,
        );
        self.start_epoch_everywhere(epoch)?;
        // A mirror promoted: its fetchers' own leaders and epochs per partition go (see
        // `start_mirroring`), the node-wide role is every partition's again.
        st.units.retain(|_, u| u.role != Role::Mirror);
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
        // Under a coordinator, etcd names the leader (an announcement could wait seconds on a
        // frozen former leader).
        if self.fence.is_none() {
            self.announce(epoch, former);
        }
        Ok(epoch)
    }

    /// A partition log that had failed (an fsync or write error) was opened again in this
    /// process since this node last looked ([`Store::reopened_after_failure`]): what it had
    /// written but not made durable, which followers may have fetched, may be gone, so a
    /// leader starts a new epoch, as a restart does (see [`next_epoch`]); followers that hold
    /// such a tail then cut it. Under a coordinator only etcd starts epochs: the node stops
    /// acknowledging and logs that it must be restarted.
    pub(super) fn check_reopened_after_failure(&self) {
        let now = self.store.reopened_after_failure();
        if self.failure_reopens.swap(now, Ordering::AcqRel) == now {
            return;
        }
        if let Err(e) = self.new_epoch_after_failure() {
            tracing::error!(error = %e, "could not start a new epoch after a failed log was opened again");
        }
    }

    fn new_epoch_after_failure(&self) -> Result<()> {
        let writes = lock(&self.replica_writes);
        let mut st = lock(&self.state);
        let leads_a_unit = st.units.values().any(|u| u.role == Role::Leader);
        if st.role != Role::Leader && !leads_a_unit {
            return Ok(());
        }
        if let Some(fence) = &self.fence {
            fence.revoke();
            tracing::error!(node = %self.options.node_id, "a failed partition log was opened again: under a coordinator this node cannot start an epoch by itself and acknowledges nothing more; restart it");
            return Ok(());
        }
        let epoch = next_epoch(st.epoch.max(current_epoch(&self.store)?), EpochStart::Start);
        self.start_epoch_everywhere(epoch)?;
        st.epoch = epoch;
        st.generation += 1;
        drop(st);
        drop(writes);
        lock(&self.trackers).clear();
        self.progress.notify_all();
        tracing::warn!(node = %self.options.node_id, epoch, "a failed partition log was opened again: leading a new epoch");
        Ok(())
    }

    /// Starts `epoch` durably in every partition's history and the consumer offsets log.
    pub(super) fn start_epoch_everywhere(&self, epoch: u64) -> Result<()> {
        for t in self.store.topics()? {
            for p in 0..t.partitions() {
                self.store.set_leader_epoch(&t.name, p, epoch)?;
            }
        }
        self.store.set_offsets_epoch(epoch)
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
    pub(super) fn announce(self: &Arc<Self>, epoch: u64, former: String) {
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
    pub(super) fn tell(&self, targets: &[String], epoch: u64, leader: &str) -> Vec<String> {
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
    pub(super) fn leader_change(self: &Arc<Self>, epoch: u64, leader: String) -> (ErrorCode, u64) {
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

    /// Stops leading `key`'s unit (node-wide in operator mode: every partition), as a newer
    /// epoch exists somewhere: refuses produces from now on, and follows whoever the peers
    /// (per partition: etcd) say leads.
    pub(super) fn step_down(self: &Arc<Self>, key: &Key, seen_epoch: u64) {
        if self.per_unit() {
            self.step_down_unit(key, seen_epoch);
            return;
        }
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
    pub(super) fn follow_newer_epoch(self: &Arc<Self>, key: &Key, seen_epoch: u64) {
        if self.per_unit() {
            // Per partition, etcd names the unit's leader: only the epoch is taken here.
            let mut st = lock(&self.state);
            if st.unit(key).role != Role::Leader {
                let ours = st.fields_mut(key).1;
                *ours = (*ours).max(seen_epoch);
            }
            return;
        }
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
    pub(super) fn discover_leader(&self) -> Option<(String, u64)> {
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

/// The per-partition role changes, which the etcd coordinator makes (see `control.rs`).
impl Shared {
    #[cfg_attr(
        not(feature = "etcd"),
        expect(dead_code, reason = "only the etcd coordinator elects per partition")
    )]
    /// Leads `key`'s unit in a new epoch above `min_epoch` and every epoch seen in it, durably
    /// in its log's history; returns the epoch.
    pub(super) fn promote_unit(
        self: &Arc<Self>,
        key: &Key,
        min_epoch: u64,
        carried: &[String],
    ) -> Result<u64> {
        let log = self.partition(&key.0, key.1).map_err(|code| {
            Error::InvalidArgument(format!("cannot lead {}/{}: {}", key.0, key.1, code.name()))
        })?;
        let writes = lock(&self.replica_writes);
        let mut st = lock(&self.state);
        let seen = st.unit(key).epoch.max(min_epoch).max(log.leader_epoch());
        let epoch = next_epoch(seen, EpochStart::Promote);
        if key.0 == OFFSETS_LOG {
            self.store.set_offsets_epoch(epoch)?;
        } else {
            self.store.set_leader_epoch(&key.0, key.1, epoch)?;
        }
        let generation = st.next_unit_generation();
        st.units.insert(
            key.clone(),
            Unit {
                role: Role::Leader,
                epoch,
                leader: server_addr(self).to_string(),
                generation,
                handing_over: false,
            },
        );
        drop(st);
        drop(writes);
        {
            // The followers that were in sync under the last leader hold every record it
            // acknowledged: they stay in sync (until the lag timeout, unless they fetch), so
            // that one of them can still be elected if this node dies before they fetch again.
            let mut trackers = lock(&self.trackers);
            trackers.remove(key);
            if !carried.is_empty() {
                let tracker = self.tracker_of(&mut trackers, key, &log);
                let (now, end) = (Instant::now(), log.end_offset());
                for id in carried {
                    tracker.carry_in_sync(id, end, now);
                }
            }
        }
        self.progress.notify_all();
        lock(&self.fetchers).retain(|f| !f.is_finished());
        tracing::info!(node = %self.options.node_id, topic = key.0, partition = key.1, epoch, carried = ?carried, "elected: leading the partition");
        Ok(epoch)
    }

    #[cfg_attr(
        not(feature = "etcd"),
        expect(dead_code, reason = "only the etcd coordinator elects per partition")
    )]
    /// Follows `leader` (another node) in `key`'s unit, which it leads in `epoch`: a leader
    /// of an older epoch stops leading it; a follower takes the new leader and epoch (its
    /// fetcher reconnects). Nothing changes if this node knows a newer epoch of the unit.
    pub(super) fn follow_unit(self: &Arc<Self>, key: &Key, epoch: u64, leader: String) {
        let generation = {
            let mut st = lock(&self.state);
            let u = st.unit(key);
            // A unit never followed yet has no epoch of its own (the node-wide one is the
            // highest of all the logs): etcd's word is taken.
            let own = st.units.contains_key(key);
            if own && (epoch < u.epoch || (u.role == Role::Leader && epoch == u.epoch)) {
                return;
            }
            if own && u.role != Role::Leader {
                if u.leader == leader && u.epoch == epoch {
                    drop(st);
                    // Still followed: make sure a fetcher runs (one may have ended).
                    let _ = self.ensure_fetcher(&key.0, key.1, u.generation);
                    return;
                }
                let (l, e) = st.fields_mut(key);
                *l = leader.clone();
                *e = epoch;
                u.generation
            } else {
                if u.role == Role::Leader {
                    tracing::warn!(node = %self.options.node_id, topic = key.0, partition = key.1, epoch = u.epoch, new_epoch = epoch, leader, "another node leads the partition: no longer leading it");
                }
                st.follow_in_unit(key, epoch, leader)
            }
        };
        self.following_unit(key, generation);
    }

    /// After `key`'s unit became a follower in `generation`: no in-sync bookkeeping of it is
    /// kept, waiting produces wake (and find they no longer lead), and a fetcher runs.
    fn following_unit(self: &Arc<Self>, key: &Key, generation: u64) {
        lock(&self.trackers).remove(key);
        self.progress.notify_all();
        if let Err(e) = self.ensure_fetcher(&key.0, key.1, generation) {
            tracing::error!(error = %e, topic = key.0, partition = key.1, "could not start following the partition's leader");
        }
    }

    /// Stops leading `key`'s unit at once (its leadership key is gone, or handed over): no
    /// produce or commit of it is acknowledged from now on; it follows whoever etcd names
    /// next.
    pub(super) fn resign_unit(self: &Arc<Self>, key: &Key) {
        let generation = {
            let mut st = lock(&self.state);
            let u = st.unit(key);
            if u.role != Role::Leader {
                return;
            }
            tracing::warn!(node = %self.options.node_id, topic = key.0, partition = key.1, epoch = u.epoch, "no longer leading the partition");
            st.follow_in_unit(key, u.epoch, String::new())
        };
        self.following_unit(key, generation);
    }

    /// A fetcher knows a newer epoch of `key`'s unit than the one this node leads it in.
    fn step_down_unit(self: &Arc<Self>, key: &Key, seen_epoch: u64) {
        {
            let st = lock(&self.state);
            let u = st.unit(key);
            if u.role != Role::Leader || seen_epoch <= u.epoch {
                return;
            }
        }
        self.resign_unit(key);
        let mut st = lock(&self.state);
        let ours = st.fields_mut(key).1;
        *ours = (*ours).max(seen_epoch);
    }

    #[cfg_attr(
        not(feature = "etcd"),
        expect(dead_code, reason = "only the etcd coordinator elects per partition")
    )]
    /// Starts or ends handing `key`'s unit over (see [`Unit::handing_over`]).
    pub(super) fn set_handing_over(&self, key: &Key, on: bool) {
        let mut st = lock(&self.state);
        if let Some(u) = st.units.get_mut(key)
            && u.role == Role::Leader
        {
            u.handing_over = on;
        }
    }
}

/// Why a node starts a new epoch (see [`next_epoch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EpochStart {
    /// A promote (an operator's, or an election): even epochs.
    Promote,
    /// A node that starts as the leader (a restart, or a new cluster): odd epochs.
    Start,
}

/// The epoch a node starts above every epoch it has `seen`: the next even number for a
/// promote, the next odd one for a leader's start, so that the two never start the same
/// epoch.
///
/// Every start of a leader needs an epoch of its own because followers fetch records the
/// leader has written but not yet made durable (the two fsyncs overlap): a leader that lost
/// such a tail in a power loss and went on in the same epoch would write other records at
/// the same offsets in the same epoch, which no follower could tell apart (KIP-101 compares
/// epochs). A restart in a new epoch makes followers cut what the leader no longer has.
/// A promoted node and the old leader restarted while it was being promoted (an operator's
/// mistake: start a deposed leader with `--leader` or `--peers`) still never share an epoch,
/// so fencing and the divergence check tell them apart.
pub(super) fn next_epoch(seen: u64, why: EpochStart) -> u64 {
    let next = seen + 1;
    match (why, next % 2) {
        (EpochStart::Promote, 0) | (EpochStart::Start, 1) => next,
        _ => next + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotes_and_starts_never_share_an_epoch() {
        for seen in 0..50 {
            let p = next_epoch(seen, EpochStart::Promote);
            let s = next_epoch(seen, EpochStart::Start);
            assert!(p > seen && s > seen && p <= seen + 2 && s <= seen + 2);
            assert_eq!((p % 2, s % 2), (0, 1));
        }
    }
}
