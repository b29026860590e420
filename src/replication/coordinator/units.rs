//! The per-partition election ([`CoordinatorOptions::per_partition`]): every partition, and
//! the consumer offsets log, is a leadership unit of its own, with its own keys in etcd, its
//! own epoch and in-sync set; one lease per node covers all the units it leads. Under the
//! prefix `/stratalog/<cluster>/`:
//! - `nodes/<id>` = address: the members, written by each node at its start, never leased
//!   (a member that is down stays the preferred leader of its units; `etcdctl del` removes a
//!   node for good);
//! - `alive/<id>` = address, with the node's lease: the members up now;
//! - `p/<topic>/<partition>/{leader,epoch,isr}`: what `leader`, `epoch` and `isr` are for the
//!   node-wide election (see [`super`]), per unit (the consumer offsets log is
//!   `p/__consumer_offsets/0/`);
//! - `p/<topic>/<partition>/handover` = id, with the asking node's lease: its preferred
//!   leader, in sync and caught up, asks the holder for the unit back.
//!
//! The preferred leader of the `i`th unit of the cluster (units sorted by topic name, then
//! partition; the consumer offsets log is one of them) is `members[i % n]` (members sorted by
//! id): units go round the nodes, so with every node up each leads its share of all units,
//! rounded down or up, however partitions are spread over topics. A node counts the units of
//! its own topics; creating or deleting a topic moves the preferred leader of the units sorted
//! after it, which move by handover (no unclean step). A leaderless unit is campaigned for at once by its
//! preferred leader, or, when that one is down, by the live member in the same place of the
//! live members; by the others after half a lease (preferred leader down) or a lease (up).
//! Only members of the unit's in-sync set campaign (unless unclean elections are allowed).

use std::collections::{BTreeSet, HashMap};

use etcd_client::GetOptions;

use super::*;
use crate::replication::node::control::UnitView;

type Key = (String, u32);

/// The per-partition coordinator's own state.
#[derive(Default)]
pub(super) struct Units {
    /// The lease under which `alive/<id>` was written.
    registered: Option<i64>,
    leading: HashMap<Key, Leading>,
    leaderless_since: HashMap<Key, Instant>,
    /// Units being handed over, since when.
    handing_over: HashMap<Key, Instant>,
    /// Units whose handover failed: not tried again before this instant.
    cooldown: HashMap<Key, Instant>,
    told_not_in_sync: Option<Instant>,
}

impl Units {
    /// Whether a unit this node leads has an in-sync set other than the one published.
    pub(super) fn in_sync_changed(&self, control: &Control) -> bool {
        self.leading
            .iter()
            .any(|(key, l)| control.unit_in_sync(key) != l.published)
    }
}

/// One unit's keys as read.
#[derive(Debug, Default, Clone)]
struct UnitKeys {
    /// The leader record and the create revision of its key.
    leader: Option<(LeaderRecord, i64)>,
    /// The lease its key is bound to.
    leader_lease: i64,
    isr: Option<(u64, Vec<String>)>,
    handover: Option<String>,
}

/// The cluster's keys, read in one range.
#[derive(Debug, Default)]
struct Read {
    members: Vec<String>,
    alive: BTreeSet<String>,
    units: HashMap<Key, UnitKeys>,
    /// Every unit this node counts (its topics' partitions and the consumer offsets log),
    /// sorted: what [`place`] goes round.
    order: Vec<Key>,
}

/// The node, of the sorted `ids`, in the place of unit `key` among `order` (every unit of the
/// cluster, sorted by topic name then partition): units go round the nodes in that order, so
/// each node is the preferred leader of its share of all units, rounded down or up, however
/// the partitions are spread over topics. A unit not in `order` (not known here yet) has no
/// place.
pub(crate) fn place<'a>(ids: &'a [String], order: &[Key], key: &Key) -> Option<&'a String> {
    if ids.is_empty() {
        return None;
    }
    let at = order.binary_search(key).ok()?;
    ids.get(at % ids.len())
}

/// The key names of one unit.
pub(crate) fn unit_prefix(prefix: &str, topic: &str, partition: u32) -> String {
    format!("{prefix}p/{topic}/{partition}/")
}

/// Sorts the keys under `prefix` into members, live members and units.
fn sort_keys(prefix: &str, kvs: &[etcd_client::KeyValue]) -> Read {
    let mut read = Read::default();
    for kv in kvs {
        let Ok(key) = kv.key_str() else { continue };
        let Some(rest) = key.strip_prefix(prefix) else {
            continue;
        };
        if let Some(id) = rest.strip_prefix("nodes/") {
            read.members.push(id.to_string());
        } else if let Some(id) = rest.strip_prefix("alive/") {
            read.alive.insert(id.to_string());
        } else if let Some(unit) = rest.strip_prefix("p/") {
            let mut it = unit.rsplitn(3, '/');
            let (Some(leaf), Some(p), Some(topic)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            let Ok(p) = p.parse::<u32>() else { continue };
            let u = read.units.entry((topic.to_string(), p)).or_default();
            match leaf {
                "leader" => {
                    u.leader = LeaderRecord::parse(kv.value()).map(|r| (r, kv.create_revision()));
                    u.leader_lease = kv.lease();
                }
                "isr" => u.isr = parse_isr(kv.value()),
                "handover" => u.handover = std::str::from_utf8(kv.value()).ok().map(String::from),
                _ => {}
            }
        }
    }
    read.members.sort();
    read
}

/// A unit's leadership as etcd holds it (see [`ClusterView::units`]).
///
/// # Examples
///
/// ```
/// use stratalog::replication::coordinator::UnitRecord;
///
/// let u = UnitRecord::default();
/// assert!(u.leader.is_none() && u.in_sync.is_none() && u.epoch == 0);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitRecord {
    /// Its `leader` key, if a node holds it.
    pub leader: Option<LeaderRecord>,
    /// The highest epoch started in it.
    pub epoch: u64,
    /// Its in-sync set last published, and the epoch that published it.
    pub in_sync: Option<(u64, Vec<String>)>,
    /// The node asking for it back (its preferred leader), if one does.
    pub handover: Option<String>,
    /// Its preferred leader (by the members registered).
    pub preferred: Option<String>,
}

/// Fills the per-partition part of a [`ClusterView`] from the keys under `prefix`.
pub(super) fn describe_units(prefix: &str, kvs: &[etcd_client::KeyValue], view: &mut ClusterView) {
    let read = sort_keys(prefix, kvs);
    for kv in kvs {
        let Ok(key) = kv.key_str() else { continue };
        let Some(unit) = key.strip_prefix(prefix).and_then(|r| r.strip_prefix("p/")) else {
            continue;
        };
        let Some(base) = unit.strip_suffix("/epoch") else {
            continue;
        };
        let Some((topic, p)) = base.rsplit_once('/') else {
            continue;
        };
        let Ok(p) = p.parse::<u32>() else { continue };
        view.units.entry((topic.to_string(), p)).or_default().epoch =
            std::str::from_utf8(kv.value())
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
    }
    // The units etcd knows of, as the nodes count them: those with a leader or an in-sync set
    // (a deleted topic's units keep only their epoch, see `forget`).
    let mut order: Vec<Key> = read
        .units
        .iter()
        .filter(|(_, u)| u.leader.is_some() || u.isr.is_some())
        .map(|(k, _)| k.clone())
        .collect();
    order.sort();
    for (key, u) in read.units {
        let r = view.units.entry(key.clone()).or_default();
        r.leader = u.leader.map(|(l, _)| l);
        r.in_sync = u.isr;
        r.handover = u.handover;
    }
    for (key, r) in view.units.iter_mut() {
        r.preferred = place(&read.members, &order, key).cloned();
    }
    view.members = read.members;
    view.alive = read.alive.into_iter().collect();
}

impl Coordinator {
    /// One round of the per-partition election: the lease, the node's registration, then
    /// every unit.
    pub(super) async fn step_units(&mut self) {
        self.keep_alive().await;
        if !self.lease_held() {
            self.lost_units("the lease could not be renewed in time");
            self.session = None;
            self.units.registered = None;
            self.session = self.open_session().await;
            return;
        }
        let Some((addr, id)) = self.control.me() else {
            return;
        };
        let prefix = self.options.prefix();
        let tick = self.tick;
        let Some(s) = self.session.as_mut() else {
            return;
        };
        if self.units.registered != Some(s.lease) {
            let lease = s.lease;
            let txn = Txn::new().and_then([
                TxnOp::put(format!("{prefix}nodes/{id}"), addr.clone(), None),
                TxnOp::put(
                    format!("{prefix}alive/{id}"),
                    addr.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                ),
            ]);
            if bounded(tick, "register", s.client.txn(txn)).await.is_none() {
                return;
            }
            tracing::info!(node = id, "registered in etcd");
            self.units.registered = Some(lease);
        }
        let Some(got) = bounded(
            tick,
            "read the cluster",
            s.client
                .get(prefix.clone(), Some(GetOptions::new().with_prefix())),
        )
        .await
        else {
            return;
        };
        let mut read = sort_keys(&prefix, got.kvs());
        self.fence.allow_until(self.session_until());
        let units = self.control.units();
        // Units led here whose partition is gone (its topic deleted): give their keys back.
        let gone: Vec<(Key, i64)> = self
            .units
            .leading
            .iter()
            .filter(|(k, _)| !units.iter().any(|u| u.topic == k.0 && u.partition == k.1))
            .map(|(k, l)| (k.clone(), l.revision))
            .collect();
        for (key, revision) in gone {
            self.units.leading.remove(&key);
            self.units.handing_over.remove(&key);
            let names = unit_prefix(&prefix, &key.0, key.1);
            let _ = self.forget(&names, revision).await;
        }
        read.order = units
            .iter()
            .map(|u| (u.topic.clone(), u.partition))
            .collect();
        read.order.sort();
        for unit in units {
            self.step_unit(&read, unit, &addr, &id).await;
            if self
                .session
                .as_ref()
                .is_none_or(|s| Instant::now() >= s.until)
            {
                return;
            }
        }
    }

    /// Stops leading every unit (the lease is lost): no acknowledgement from now on.
    fn lost_units(&mut self, why: &str) {
        self.fence.revoke();
        if !self.units.leading.is_empty() {
            tracing::warn!(why, units = self.units.leading.len(), "stepping down");
        }
        self.units.leading.clear();
        self.units.handing_over.clear();
        self.control.resign_all();
    }

    async fn step_unit(&mut self, read: &Read, v: UnitView, addr: &str, id: &str) {
        let key = (v.topic.clone(), v.partition);
        let names = unit_prefix(&self.options.prefix(), &v.topic, v.partition);
        let uk = read.units.get(&key).cloned().unwrap_or_default();
        let preferred = place(&read.members, &read.order, &key).cloned();
        if let Some(revision) = self.units.leading.get(&key).map(|l| l.revision) {
            match &uk.leader {
                Some((_, rev)) if *rev == revision && v.role == Role::Leader => {
                    self.publish_unit(&key, &names).await;
                    self.hand_over(&key, &names, &uk, preferred.as_deref(), read, revision)
                        .await;
                }
                Some((_, rev)) if *rev == revision => {
                    // Deposed meanwhile (a fetcher fenced it): give the unit back.
                    self.units.leading.remove(&key);
                    let _ = self.give_back(&names, revision).await;
                }
                _ => {
                    tracing::warn!(
                        topic = key.0,
                        partition = key.1,
                        "another node holds the partition's leadership key"
                    );
                    self.units.leading.remove(&key);
                    self.units.handing_over.remove(&key);
                    self.control.resign_unit(&key);
                }
            }
            return;
        }
        if v.role == Role::Leader {
            // Led without holding the key (a take_epoch that failed half-way).
            self.control.resign_unit(&key);
        }
        match &uk.leader {
            Some((rec, revision))
                if rec.node_id == id
                    && self
                        .session
                        .as_ref()
                        .is_some_and(|s| s.lease == uk.leader_lease) =>
            {
                // This node's key under its live lease, though it does not lead the unit: a
                // campaign (or an epoch's start) etcd applied but whose answer timed out. It
                // would never lapse and nobody would lead the unit: give it back, the next
                // campaign starts an epoch properly.
                tracing::warn!(
                    topic = key.0,
                    partition = key.1,
                    "holding the partition's leadership key without leading it (an etcd answer \
                     was lost): giving it back"
                );
                let _ = self.give_back(&names, *revision).await;
            }
            Some((rec, _)) => {
                self.units.leaderless_since.remove(&key);
                if rec.epoch == 0 || rec.node_id == id || rec.addr == addr {
                    // Starting its epoch, or a key of this node's former run (its lease
                    // lapses).
                    return;
                }
                self.control.follow_unit(&key, rec.epoch, rec.addr.clone());
                // The preferred leader, in sync and caught up, asks for the unit back.
                let in_sync = uk
                    .isr
                    .as_ref()
                    .is_some_and(|(e, ids)| *e == rec.epoch && ids.iter().any(|i| i == id));
                if preferred.as_deref() == Some(id)
                    && uk.handover.is_none()
                    && in_sync
                    && self.control.caught_up(&key)
                {
                    let Some(s) = self.session.as_mut() else {
                        return;
                    };
                    let handover = format!("{names}handover");
                    let txn = create_if_absent(handover, id.to_string(), s.lease);
                    if bounded(self.tick, "ask for a handover", s.client.txn(txn))
                        .await
                        .is_some_and(|r| r.succeeded())
                    {
                        tracing::info!(
                            topic = key.0,
                            partition = key.1,
                            holder = rec.node_id,
                            "the preferred leader asks for the partition back"
                        );
                    }
                }
            }
            None => {
                self.campaign_unit(read, &v, &key, &names, &uk, preferred.as_deref(), addr, id)
                    .await;
            }
        }
    }

    /// The holder's side of a handover: once the preferred leader that asked holds every
    /// record, the holder deletes its key and follows; it stops taking produces meanwhile.
    async fn hand_over(
        &mut self,
        key: &Key,
        names: &str,
        uk: &UnitKeys,
        preferred: Option<&str>,
        read: &Read,
        revision: i64,
    ) {
        let asked = uk.handover.as_deref().filter(|x| {
            Some(*x) == preferred
                && read.alive.contains(*x)
                && self
                    .units
                    .cooldown
                    .get(key)
                    .is_none_or(|t| Instant::now() >= *t)
        });
        let Some(to) = asked else {
            if self.units.handing_over.remove(key).is_some() {
                self.control.set_handing_over(key, false);
            }
            return;
        };
        let started = *self
            .units
            .handing_over
            .entry(key.clone())
            .or_insert_with(|| {
                tracing::info!(
                    topic = key.0,
                    partition = key.1,
                    to,
                    "handing the partition over to its preferred leader"
                );
                Instant::now()
            });
        self.control.set_handing_over(key, true);
        if self.control.holds_everything(key, to) {
            let done = self.give_back(names, revision).await;
            if done.is_ok() {
                tracing::info!(
                    topic = key.0,
                    partition = key.1,
                    to,
                    "handed the partition over"
                );
                self.units.leading.remove(key);
                self.units.handing_over.remove(key);
                self.control.resign_unit(key);
            }
        } else if started.elapsed() > self.options.lease * 2 {
            tracing::warn!(
                topic = key.0,
                partition = key.1,
                to,
                "the preferred leader did not catch up: keeping the partition for now"
            );
            self.units.handing_over.remove(key);
            self.units
                .cooldown
                .insert(key.clone(), Instant::now() + self.options.lease * 5);
            self.control.set_handing_over(key, false);
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per part of the unit"
    )]
    async fn campaign_unit(
        &mut self,
        read: &Read,
        v: &UnitView,
        key: &Key,
        names: &str,
        uk: &UnitKeys,
        preferred: Option<&str>,
        addr: &str,
        id: &str,
    ) {
        let since = *self
            .units
            .leaderless_since
            .entry(key.clone())
            .or_insert_with(Instant::now);
        let lease = self.options.lease;
        let wait = match preferred {
            Some(p) if p == id => Duration::ZERO,
            Some(p) if read.alive.contains(p) => lease,
            _ => {
                let alive: Vec<String> = read.alive.iter().cloned().collect();
                if place(&alive, &read.order, key).map(String::as_str) == Some(id) {
                    Duration::ZERO
                } else {
                    lease / 2
                }
            }
        };
        if since.elapsed() < wait {
            return;
        }
        let in_sync = uk
            .isr
            .as_ref()
            .is_none_or(|(_, ids)| ids.iter().any(|i| i == id));
        if !in_sync {
            if !self.options.unclean_election {
                if self
                    .units
                    .told_not_in_sync
                    .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
                {
                    tracing::warn!(node = id, topic = key.0, partition = key.1, isr = ?uk.isr, "no leader, and this node is not in the partition's in-sync set: it does not campaign (see --unclean-election)");
                    self.units.told_not_in_sync = Some(Instant::now());
                }
                return;
            }
            if since.elapsed() < lease * 2 {
                return;
            }
        }
        let Some(s) = self.session.as_mut() else {
            return;
        };
        let me = LeaderRecord {
            epoch: 0,
            addr: addr.to_string(),
            node_id: id.to_string(),
        };
        let leader_key = format!("{names}leader");
        let txn = create_if_absent(leader_key, me.encode(), s.lease);
        let Some(won) = bounded(self.tick, "campaign", s.client.txn(txn)).await else {
            return;
        };
        if !won.succeeded() {
            return;
        }
        let Some(revision) = won.header().map(|h| h.revision()) else {
            return;
        };
        self.units.leaderless_since.remove(key);
        if !in_sync {
            tracing::error!(
                node = id,
                topic = key.0,
                partition = key.1,
                isr = ?uk.isr,
                log_end = ?self.control.log_end(key),
                "UNCLEAN ELECTION: this node was not in the partition's in-sync set; acknowledged \
                 records from this log end on up to the old leader's end may be lost"
            );
        }
        // The members of the last published in-sync set that are up stay in sync (they hold
        // every record acknowledged so far): if this node dies before they fetch from it, one
        // of them can still be elected. After an unclean election they may hold records this
        // node lacks, which they cut when they follow it: none is carried then.
        let carried: Vec<String> = match (&uk.isr, in_sync) {
            (Some((_, ids)), true) => ids
                .iter()
                .filter(|i| *i != id && read.alive.contains(*i))
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        if let Err(e) = self
            .take_unit_epoch(key, names, revision, me, v, carried)
            .await
        {
            tracing::warn!(error = %e, topic = key.0, partition = key.1, "won a partition but could not start an epoch; giving it back");
            self.units.leading.remove(key);
            self.control.resign_unit(key);
            let _ = self.give_back(names, revision).await;
        }
    }

    /// Starts an epoch of the unit above every earlier one (fixed in etcd while holding
    /// `revision`), leads it, names this node its leader and publishes its in-sync set.
    async fn take_unit_epoch(
        &mut self,
        key: &Key,
        names: &str,
        revision: i64,
        mut me: LeaderRecord,
        v: &UnitView,
        carried: Vec<String>,
    ) -> std::result::Result<(), String> {
        let tick = self.tick.max(Duration::from_millis(200));
        let epoch_key = format!("{names}epoch");
        let s = self.session.as_mut().ok_or("no session")?;
        // Read again now that the key is held: the one read before may be older.
        let got = bounded(tick, "get epoch", s.client.get(epoch_key.clone(), None))
            .await
            .ok_or("cannot read the epoch")?;
        let stored: u64 = got
            .kvs()
            .first()
            .and_then(|kv| std::str::from_utf8(kv.value()).ok()?.parse().ok())
            .unwrap_or(0);
        let epoch = (stored.max(v.epoch).max(v.log_epoch) + 2) & !1;
        self.guarded_at(
            names,
            revision,
            vec![TxnOp::put(epoch_key.clone(), epoch.to_string(), None)],
        )
        .await?;
        let led = self
            .control
            .promote_unit(key, epoch, &carried)
            .map_err(|e| e.to_string())?;
        me.epoch = led;
        let lease = self.session.as_ref().ok_or("no session")?.lease;
        let mut own = carried;
        own.push(me.node_id.clone());
        own.sort();
        self.guarded_at(
            names,
            revision,
            vec![
                TxnOp::put(epoch_key, led.to_string(), None),
                TxnOp::put(
                    format!("{names}leader"),
                    me.encode(),
                    Some(PutOptions::new().with_lease(lease)),
                ),
                TxnOp::put(
                    format!("{names}isr"),
                    format!("{led} {}", own.join(",")),
                    None,
                ),
                TxnOp::delete(format!("{names}handover"), None),
            ],
        )
        .await?;
        self.fence.set_published_unit(&key.0, key.1, own.clone());
        self.units.leading.insert(
            key.clone(),
            Leading {
                revision,
                epoch: led,
                published: own,
            },
        );
        tracing::info!(
            node = me.node_id,
            topic = key.0,
            partition = key.1,
            epoch = led,
            "elected through etcd: leading the partition"
        );
        Ok(())
    }

    /// Deletes this node's `leader` key of the unit at `names` while it still holds it (create
    /// revision `revision`): gives the unit back to the next campaign.
    async fn give_back(&mut self, names: &str, revision: i64) -> std::result::Result<(), String> {
        let ops = vec![TxnOp::delete(format!("{names}leader"), None)];
        self.guarded_at(names, revision, ops).await
    }

    /// Gives back a unit whose topic was deleted and forgets its in-sync set and handover, so
    /// that it no longer counts among the cluster's units (`status --coordinator`'s preferred
    /// leaders). Its `epoch` key stays: a topic created again under the same name starts
    /// above it.
    async fn forget(&mut self, names: &str, revision: i64) -> std::result::Result<(), String> {
        let ops = ["leader", "isr", "handover"]
            .iter()
            .map(|leaf| TxnOp::delete(format!("{names}{leaf}"), None))
            .collect();
        self.guarded_at(names, revision, ops).await
    }

    /// Runs `ops` only while this node's `leader` key of the unit at `names` has create
    /// revision `revision`.
    async fn guarded_at(
        &mut self,
        names: &str,
        revision: i64,
        ops: Vec<TxnOp>,
    ) -> std::result::Result<(), String> {
        let key = format!("{names}leader");
        self.guarded_on(key, revision, ops, "the partition's leadership key")
            .await
    }

    /// Writes a unit's in-sync set when it changed (a grown set is waited for before it is
    /// written, a shrunk one only once written, as for the node-wide set).
    async fn publish_unit(&mut self, key: &Key, names: &str) {
        let Some(l) = self.units.leading.get(key) else {
            return;
        };
        let now = self.control.unit_in_sync(key);
        if now == l.published {
            return;
        }
        let (revision, epoch, old) = (l.revision, l.epoch, l.published.clone());
        let mut union = old.clone();
        union.extend(now.iter().filter(|i| !old.contains(i)).cloned());
        self.fence.set_published_unit(&key.0, key.1, union);
        let put = TxnOp::put(
            format!("{names}isr"),
            format!("{epoch} {}", now.join(",")),
            None,
        );
        match self.guarded_at(names, revision, vec![put]).await {
            Ok(()) => {
                tracing::info!(topic = key.0, partition = key.1, in_sync = ?now, "published the partition's in-sync set");
                self.fence.set_published_unit(&key.0, key.1, now.clone());
                if let Some(l) = self.units.leading.get_mut(key) {
                    l.published = now;
                }
            }
            Err(e) => tracing::debug!(error = e, "could not publish the in-sync set"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("n{i}")).collect()
    }

    /// How many units each of `ids` is the preferred leader of.
    fn load(ids: &[String], units: &[Key]) -> HashMap<String, usize> {
        let mut order = units.to_vec();
        order.sort();
        let mut count: HashMap<String, usize> = ids.iter().map(|i| (i.clone(), 0)).collect();
        for u in units {
            *count.get_mut(place(ids, &order, u).unwrap()).unwrap() += 1;
        }
        count
    }

    #[test]
    fn six_partitions_spread_two_per_node() {
        let units: Vec<Key> = (0..6).map(|p| ("t".to_string(), p)).collect();
        let count = load(&ids(3), &units);
        assert!(count.values().all(|&c| c == 2), "{count:?}");
        assert_eq!(place(&[], &units, &units[0]), None);
        assert_eq!(place(&ids(3), &units, &("u".to_string(), 0)), None);
    }

    /// Many single-partition topics (queues) and the consumer offsets log: no node is the
    /// preferred leader of more than its share rounded up. Placing each topic by a hash of
    /// its name (FNV-1a of the name plus the partition, as before) made one of three nodes the
    /// preferred leader of 14 of the 36 units of `q0`..`q34` and the offsets log (share 12).
    #[test]
    fn many_small_topics_spread_evenly() {
        for n in 1..=5 {
            for (topics, orders) in [(1usize, 0u32), (2, 3), (7, 0), (20, 3), (35, 0), (35, 6)] {
                let mut units: Vec<Key> = (0..topics).map(|t| (format!("q{t}"), 0)).collect();
                units.push((crate::store::OFFSETS_LOG.to_string(), 0));
                units.extend((0..orders).map(|p| ("orders".to_string(), p)));
                let count = load(&ids(n), &units);
                let share = units.len().div_ceil(n);
                assert!(
                    count
                        .values()
                        .all(|&c| c <= share && c + 1 >= units.len() / n),
                    "{n} nodes, {} units: {count:?}",
                    units.len()
                );
            }
        }
    }
}
