//! The leader's view of its followers for one partition: each follower's durable end, the
//! in-sync set, the high watermark, and whether an acknowledgement level is reached. Pure state,
//! no I/O and no clock of its own (the caller passes `now`), so every rule is unit-tested.
//!
//! Rules (Kafka's ISR, adapted):
//! - A follower's fetch offset is its durable log end: it fetches from there only after its
//!   earlier batches were fsynced, so the leader learns what a follower made durable from its
//!   next fetch, with no separate acknowledgement message.
//! - A follower is *caught up* at a fetch whose offset reaches the leader's log end at that time,
//!   or the leader's log end at its previous fetch (then it was caught up as of that fetch). A
//!   follower not caught up for longer than the lag timeout leaves the in-sync set; it rejoins
//!   once its durable end reaches the high watermark.
//! - The high watermark is the smallest durable end among the leader and the in-sync followers.
//!   It never falls while one leader leads: a follower that leaves the set no longer holds it
//!   back, and one that rejoins is at or above it.
//! - Mirrors are never tracked here: they count toward nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::frame::Acks;

/// What the leader knows of one follower ([`ReplicaTracker::followers`]).
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use stratalog::replication::isr::ReplicaTracker;
///
/// let mut isr = ReplicaTracker::new(0, Duration::from_secs(5), 1);
/// isr.on_fetch("b", 4, 4, 4, Instant::now());
/// let b = &isr.followers()["b"];
/// assert_eq!((b.durable_end, b.in_sync), (4, true));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerState {
    /// The follower's durable log end (its last fetch offset).
    pub durable_end: u64,
    /// When it last fetched.
    pub last_fetch: Instant,
    /// When it was last caught up (see the module docs).
    pub last_caught_up: Instant,
    /// The leader's log end at its last fetch.
    pub leader_end_at_last_fetch: u64,
    /// Whether it is in the in-sync set.
    pub in_sync: bool,
}

/// Why an acknowledgement level cannot be reached now.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stratalog::replication::Acks;
/// use stratalog::replication::isr::{AckState, ReplicaTracker};
///
/// // Two replicas in sync wanted, only the leader there: `all` is refused, not waited for.
/// let isr = ReplicaTracker::new(0, Duration::from_secs(5), 2);
/// assert_eq!(
///     isr.ack_state(Acks::All, 1, 1, 3),
///     AckState::NotEnoughReplicas { in_sync: 1, min_in_sync: 2 }
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckState {
    /// Reached: the records are durable on enough replicas.
    Reached,
    /// Not yet: wait for more fetches.
    Waiting,
    /// `acks=all` with fewer replicas in sync than the configured minimum: refused.
    NotEnoughReplicas {
        /// Replicas in sync, the leader included.
        in_sync: usize,
        /// The configured minimum.
        min_in_sync: usize,
    },
}

/// The followers of one partition, as its leader tracks them.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use stratalog::replication::Acks;
/// use stratalog::replication::isr::{AckState, ReplicaTracker};
///
/// let now = Instant::now();
/// let mut isr = ReplicaTracker::new(0, Duration::from_secs(5), 2);
/// isr.on_fetch("b", 0, 10, 10, now); // b joins at the high watermark
/// assert_eq!(isr.ack_state(Acks::All, 10, 10, 2), AckState::Waiting);
/// assert_eq!(isr.on_fetch("b", 10, 10, 10, now), 10); // b made 0..10 durable
/// assert_eq!(isr.ack_state(Acks::All, 10, 10, 2), AckState::Reached);
/// ```
#[derive(Debug, Clone)]
pub struct ReplicaTracker {
    followers: BTreeMap<String, FollowerState>,
    lag_timeout: Duration,
    min_in_sync: usize,
    high_watermark: u64,
}

impl ReplicaTracker {
    /// A tracker for a leader whose high watermark starts at `high_watermark` (what it knew
    /// before it led, never above its durable end). `min_in_sync` counts the leader.
    pub fn new(high_watermark: u64, lag_timeout: Duration, min_in_sync: usize) -> ReplicaTracker {
        ReplicaTracker {
            followers: BTreeMap::new(),
            lag_timeout,
            min_in_sync: min_in_sync.max(1),
            high_watermark,
        }
    }

    /// The followers by node id.
    pub fn followers(&self) -> &BTreeMap<String, FollowerState> {
        &self.followers
    }

    /// The high watermark.
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark
    }

    /// Replicas in the in-sync set, the leader included.
    pub fn in_sync_count(&self) -> usize {
        1 + self.followers.values().filter(|f| f.in_sync).count()
    }

    /// A fetch from follower `node` at `offset` (its durable end) when the leader's log end is
    /// `leader_end` and its durable end `leader_durable`. A follower seen for the first time
    /// joins the in-sync set only once it has reached the high watermark. Returns the new high
    /// watermark.
    pub fn on_fetch(
        &mut self,
        node: &str,
        offset: u64,
        leader_end: u64,
        leader_durable: u64,
        now: Instant,
    ) -> u64 {
        let hw = self.high_watermark;
        let f = self
            .followers
            .entry(node.to_string())
            .or_insert(FollowerState {
                durable_end: offset,
                last_fetch: now,
                last_caught_up: now,
                leader_end_at_last_fetch: leader_end,
                in_sync: false,
            });
        if offset >= leader_end {
            f.last_caught_up = now;
        } else if offset >= f.leader_end_at_last_fetch {
            f.last_caught_up = f.last_caught_up.max(f.last_fetch);
        }
        f.durable_end = offset;
        f.last_fetch = now;
        f.leader_end_at_last_fetch = leader_end;
        if !f.in_sync && offset >= hw && now.duration_since(f.last_caught_up) <= self.lag_timeout {
            f.in_sync = true;
        }
        self.expire(now);
        self.advance(leader_durable)
    }

    /// Takes follower `node` into the in-sync set before it fetched (a new leader carrying the
    /// in-sync set of the epoch before: those followers hold every record acknowledged then).
    /// Its durable end counts as the high watermark, so the high watermark does not move for
    /// it until it fetches; `leader_end` is the leader's log end now. It leaves the set as
    /// any follower does if it is not caught up within the lag timeout from `now`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use stratalog::replication::Acks;
    /// use stratalog::replication::isr::{AckState, ReplicaTracker};
    ///
    /// let t0 = Instant::now();
    /// let mut isr = ReplicaTracker::new(10, Duration::from_secs(5), 2);
    /// isr.carry_in_sync("b", 10, t0);
    /// assert_eq!(isr.in_sync_count(), 2);
    /// // A record the leader alone holds is not acknowledged at `all` before b has it.
    /// assert_eq!(isr.advance(11), 10);
    /// assert_eq!(isr.ack_state(Acks::All, 11, 11, 3), AckState::Waiting);
    /// // b never fetches: it leaves after the lag timeout.
    /// assert_eq!(isr.expire(t0 + Duration::from_secs(6)), ["b"]);
    /// ```
    pub fn carry_in_sync(&mut self, node: &str, leader_end: u64, now: Instant) {
        let hw = self.high_watermark;
        self.followers.insert(
            node.to_string(),
            FollowerState {
                durable_end: hw,
                last_fetch: now,
                last_caught_up: now,
                leader_end_at_last_fetch: leader_end,
                in_sync: true,
            },
        );
    }

    /// Moves followers that were not caught up within the lag timeout out of the in-sync set.
    /// Returns the node ids that left.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let mut left = Vec::new();
        for (id, f) in &mut self.followers {
            if f.in_sync && now.saturating_duration_since(f.last_caught_up) > self.lag_timeout {
                f.in_sync = false;
                left.push(id.clone());
            }
        }
        left
    }

    /// Recomputes the high watermark from the leader's durable end and the in-sync followers'.
    /// It never falls.
    pub fn advance(&mut self, leader_durable: u64) -> u64 {
        let min_in_sync = self
            .followers
            .values()
            .filter(|f| f.in_sync)
            .map(|f| f.durable_end)
            .fold(leader_durable, u64::min);
        self.high_watermark = self.high_watermark.max(min_in_sync);
        self.high_watermark
    }

    /// Whether records up to `end` (exclusive) are acknowledged at `level`, with the leader's
    /// durable end `leader_durable` and `replicas` the partition's replica count (leader
    /// included, mirrors excluded), for `quorum`.
    pub fn ack_state(
        &self,
        level: Acks,
        end: u64,
        leader_durable: u64,
        replicas: usize,
    ) -> AckState {
        let durable_here = leader_durable >= end;
        match level {
            Acks::Leader if durable_here => AckState::Reached,
            Acks::Leader => AckState::Waiting,
            Acks::Quorum => {
                let have = usize::from(durable_here)
                    + self
                        .followers
                        .values()
                        .filter(|f| f.durable_end >= end)
                        .count();
                let replicas = replicas.max(1 + self.followers.len());
                if have > replicas / 2 {
                    AckState::Reached
                } else {
                    AckState::Waiting
                }
            }
            Acks::All => {
                let in_sync = self.in_sync_count();
                if in_sync < self.min_in_sync {
                    AckState::NotEnoughReplicas {
                        in_sync,
                        min_in_sync: self.min_in_sync,
                    }
                } else if durable_here && self.high_watermark >= end {
                    AckState::Reached
                } else {
                    AckState::Waiting
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG: Duration = Duration::from_secs(5);

    #[test]
    fn the_high_watermark_follows_the_slowest_in_sync_replica() {
        let t0 = Instant::now();
        let mut isr = ReplicaTracker::new(0, LAG, 1);
        assert_eq!(isr.on_fetch("b", 0, 10, 10, t0), 0, "b has nothing yet");
        assert_eq!(isr.on_fetch("c", 0, 10, 10, t0), 0);
        assert_eq!(isr.in_sync_count(), 3, "both joined at the high watermark");
        assert_eq!(isr.on_fetch("b", 10, 10, 10, t0), 0, "c still holds it");
        assert_eq!(isr.on_fetch("c", 6, 10, 10, t0), 6);
        assert_eq!(isr.on_fetch("c", 10, 10, 10, t0), 10);
        assert_eq!(isr.advance(8), 10, "it never falls");
    }

    #[test]
    fn a_follower_that_stops_fetching_leaves_and_rejoins_once_caught_up() {
        let t0 = Instant::now();
        let mut isr = ReplicaTracker::new(0, LAG, 2);
        isr.on_fetch("b", 0, 0, 0, t0);
        isr.on_fetch("c", 0, 0, 0, t0);
        // b keeps up, c goes silent while the leader writes on.
        let t1 = t0 + Duration::from_secs(3);
        isr.on_fetch("b", 50, 50, 50, t1);
        let t2 = t0 + Duration::from_secs(6);
        assert_eq!(
            isr.on_fetch("b", 100, 100, 100, t2),
            100,
            "c no longer holds it back"
        );
        assert!(!isr.followers()["c"].in_sync);
        assert_eq!(isr.in_sync_count(), 2);
        // c comes back behind: not in sync until it reaches the high watermark.
        isr.on_fetch("c", 40, 100, 100, t2);
        assert!(!isr.followers()["c"].in_sync);
        isr.on_fetch("c", 100, 100, 100, t2 + Duration::from_millis(10));
        assert!(isr.followers()["c"].in_sync);
    }

    #[test]
    fn a_follower_fetching_but_never_reaching_the_end_leaves() {
        let t0 = Instant::now();
        let mut isr = ReplicaTracker::new(0, LAG, 1);
        isr.on_fetch("b", 0, 0, 0, t0);
        let mut end = 0;
        let mut offset = 0;
        for s in 1..=10 {
            // The leader moves 100 ahead each second; b fetches but only gets halfway.
            end += 100;
            offset += 50;
            isr.on_fetch("b", offset, end, end, t0 + Duration::from_secs(s));
        }
        assert!(!isr.followers()["b"].in_sync, "lagging for 10 s > 5 s");
    }

    #[test]
    fn ack_levels() {
        let t0 = Instant::now();
        let mut isr = ReplicaTracker::new(0, LAG, 2);
        isr.on_fetch("b", 0, 0, 0, t0);
        isr.on_fetch("c", 0, 0, 0, t0);
        // The leader wrote 0..10 durably; b has 10, c has 0.
        isr.on_fetch("b", 10, 10, 10, t0);
        assert_eq!(isr.ack_state(Acks::Leader, 10, 10, 3), AckState::Reached);
        assert_eq!(isr.ack_state(Acks::Leader, 10, 9, 3), AckState::Waiting);
        assert_eq!(
            isr.ack_state(Acks::Quorum, 10, 10, 3),
            AckState::Reached,
            "2 of 3"
        );
        assert_eq!(
            isr.ack_state(Acks::Quorum, 10, 10, 5),
            AckState::Waiting,
            "2 of 5"
        );
        assert_eq!(
            isr.ack_state(Acks::All, 10, 10, 3),
            AckState::Waiting,
            "c is in sync"
        );
        isr.on_fetch("c", 10, 10, 10, t0);
        assert_eq!(isr.ack_state(Acks::All, 10, 10, 3), AckState::Reached);
        // Both followers go silent: acks=all is refused below the minimum, never acknowledged.
        isr.expire(t0 + Duration::from_secs(6));
        assert_eq!(
            isr.ack_state(Acks::All, 11, 11, 3),
            AckState::NotEnoughReplicas {
                in_sync: 1,
                min_in_sync: 2
            }
        );
    }
}
