//! Automatic failover through etcd: the nodes of a cluster elect their leader with an etcd
//! lease instead of waiting for an operator's `promote` (docs/REPLICATION.md, "Automatic
//! failover through etcd").
//!
//! A node started with [`NodeOptions::coordinator`](super::node::NodeOptions::coordinator)
//! runs one coordinator thread, with the etcd client on a tokio runtime of its own (the
//! library needs no runtime otherwise). Under the key prefix `/stratalog/<cluster>/`:
//! - `leader`: held with the node's lease; the campaign creates it only if it does not exist.
//!   Its value is `"<epoch> <address> <node id>"` (epoch 0 while the winner starts its epoch).
//! - `epoch`: the highest epoch any leader started, raised by a transaction that succeeds only
//!   while the writer holds `leader` (its create revision), so two nodes never start the same
//!   epoch.
//! - `isr`: `"<epoch> <id>,<id>,..."`, the in-sync set as the leader last wrote it (guarded the
//!   same way). A node campaigns only while it is in it, unless `unclean_election`.
//!
//! With [`CoordinatorOptions::per_partition`] each partition (and the consumer offsets log)
//! is elected on its own under `p/<topic>/<partition>/`, spread over the nodes by preferred
//! leaders and handed back to a preferred leader that returns (see `units.rs`).
//!
//! The leader keeps "lease valid until" = when its last successful keepalive was *sent* + the
//! lease time − a safety margin; no produce or commit is acknowledged after it, nor before
//! every member of the published in-sync set holds the records, and the node steps down when
//! it cannot renew.
//!
//! Built with the `etcd` feature; without it, a node given a coordinator refuses to start.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

#[cfg(feature = "etcd")]
mod etcd;
#[cfg(feature = "etcd")]
pub use etcd::{ClusterView, LeaderRecord, UnitRecord, describe};
#[cfg(feature = "etcd")]
pub(crate) use etcd::{Running, start};

/// How a node takes part in an etcd election.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stratalog::replication::coordinator::CoordinatorOptions;
///
/// let c = CoordinatorOptions::from_url("etcd://127.0.0.1:2379,127.0.0.1:22379")?;
/// assert_eq!(c.endpoints, ["http://127.0.0.1:2379", "http://127.0.0.1:22379"]);
/// assert_eq!(c.lease, Duration::from_secs(5));
/// assert!(CoordinatorOptions::from_url("zk://127.0.0.1:2181").is_err());
/// # Ok::<(), stratalog::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorOptions {
    /// etcd's client endpoints (`http://HOST:PORT`).
    pub endpoints: Vec<String>,
    /// The cluster's name: its keys live under `/stratalog/<cluster>/`.
    pub cluster: String,
    /// The lease time: a leader that cannot renew its lease for this long is replaced. etcd
    /// grants whole seconds, at least its own minimum (1.5 election timeouts); a shorter lease
    /// asks for one second, and the node still counts with this value.
    pub lease: Duration,
    /// Let a node outside the in-sync set campaign (after a lease time without a leader),
    /// logging loudly the records that may be lost.
    pub unclean_election: bool,
    /// Elect a leader per partition (and one for the consumer offsets log), spread over the
    /// nodes by preferred leaders (the default), instead of one leader of every partition
    /// (see docs/REPLICATION.md, "Automatic failover through etcd"). The first node of a
    /// cluster records its mode in etcd (`mode`); a node of the other mode refuses to start.
    pub per_partition: bool,
}

impl Default for CoordinatorOptions {
    fn default() -> Self {
        CoordinatorOptions {
            endpoints: Vec::new(),
            cluster: "default".into(),
            lease: Duration::from_secs(5),
            unclean_election: false,
            per_partition: true,
        }
    }
}

impl CoordinatorOptions {
    /// Parses `etcd://HOST:PORT[,HOST:PORT...]` (the other fields default).
    pub fn from_url(url: &str) -> Result<CoordinatorOptions> {
        let bad = |why: &str| Error::Coordinator {
            what: format!(
                "bad coordinator address {url:?}: {why}; write etcd://HOST:PORT[,HOST:PORT...]"
            ),
            source: None,
        };
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| bad("only etcd:// is known"))?;
        let mut endpoints = Vec::new();
        for hp in rest.split(',') {
            let hp = hp.trim();
            let Some((host, port)) = hp.rsplit_once(':') else {
                return Err(bad("an address lacks its port"));
            };
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(bad("an address is not HOST:PORT"));
            }
            endpoints.push(format!("http://{hp}"));
        }
        Ok(CoordinatorOptions {
            endpoints,
            ..CoordinatorOptions::default()
        })
    }

    /// The prefix of this cluster's keys.
    pub fn prefix(&self) -> String {
        format!("/stratalog/{}/", self.cluster)
    }
}

/// What the produce and commit paths check before they acknowledge, on a coordinated node:
/// until when the leadership lease is surely held, and the in-sync set last published.
#[derive(Debug)]
pub(crate) struct LeaseFence {
    base: Instant,
    /// Nanoseconds after `base` until which acknowledging is allowed; 0: never.
    until_ns: AtomicU64,
    /// The in-sync set as written to etcd (node ids); every one of them must hold a record
    /// before it is acknowledged at `acks=all`.
    published: Mutex<Vec<String>>,
    /// Per partition (a per-partition coordinator): each unit's published in-sync set, which
    /// replaces `published` for its unit.
    published_units: Mutex<HashMap<(String, u32), Vec<String>>>,
}

impl LeaseFence {
    pub(crate) fn new() -> LeaseFence {
        LeaseFence {
            base: Instant::now(),
            until_ns: AtomicU64::new(0),
            published: Mutex::new(Vec::new()),
            published_units: Mutex::new(HashMap::new()),
        }
    }

    /// Whether acknowledging is allowed now.
    pub(crate) fn valid(&self) -> bool {
        let until = self.until_ns.load(Ordering::Acquire);
        until != 0 && (self.base.elapsed().as_nanos() as u64) < until
    }

    #[cfg_attr(
        all(not(feature = "etcd"), not(test)),
        expect(dead_code, reason = "only the etcd coordinator sets the fence")
    )]
    /// Allows acknowledging until `at`.
    pub(crate) fn allow_until(&self, at: Instant) {
        let ns = at.saturating_duration_since(self.base).as_nanos() as u64;
        self.until_ns.store(ns.max(1), Ordering::Release);
    }

    /// Stops every acknowledgement at once.
    pub(crate) fn revoke(&self) {
        self.until_ns.store(0, Ordering::Release);
    }

    #[cfg_attr(
        all(not(feature = "etcd"), not(test)),
        expect(dead_code, reason = "only the etcd coordinator sets the fence")
    )]
    pub(crate) fn set_published(&self, ids: Vec<String>) {
        *self.published.lock().unwrap_or_else(|e| e.into_inner()) = ids;
    }

    /// The in-sync set published for `topic/partition`'s unit (the node-wide one unless a
    /// per-partition coordinator published one for it).
    pub(crate) fn published(&self, topic: &str, partition: u32) -> Vec<String> {
        let units = self
            .published_units
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(ids) = units.get(&(topic.to_string(), partition)) {
            return ids.clone();
        }
        drop(units);
        self.published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    #[cfg_attr(
        all(not(feature = "etcd"), not(test)),
        expect(dead_code, reason = "only the etcd coordinator sets the fence")
    )]
    /// Sets the in-sync set published for one unit.
    pub(crate) fn set_published_unit(&self, topic: &str, partition: u32, ids: Vec<String>) {
        self.published_units
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((topic.to_string(), partition), ids);
    }
}

#[cfg_attr(
    not(feature = "etcd"),
    expect(dead_code, reason = "only the etcd coordinator counts leases")
)]
/// The safety margin taken off a lease: a tenth of it, at least 50 ms.
pub(crate) fn margin(lease: Duration) -> Duration {
    (lease / 10).max(Duration::from_millis(50))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fence_refuses_after_its_instant_and_once_revoked() {
        let f = LeaseFence::new();
        assert!(!f.valid(), "a new fence allows nothing");
        f.allow_until(Instant::now() + Duration::from_secs(60));
        assert!(f.valid());
        f.revoke();
        assert!(!f.valid());
        f.allow_until(Instant::now() - Duration::from_millis(1));
        assert!(!f.valid(), "an instant already past allows nothing");
    }

    #[test]
    fn urls() {
        assert!(CoordinatorOptions::from_url("etcd://").is_err());
        assert!(CoordinatorOptions::from_url("etcd://host").is_err());
        assert!(CoordinatorOptions::from_url("etcd://host:99999").is_err());
        let c = CoordinatorOptions::from_url("etcd://localhost:2379").unwrap();
        assert_eq!(c.prefix(), "/stratalog/default/");
    }
}
