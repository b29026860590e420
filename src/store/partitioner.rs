//! Partitioners: which partition of a topic a record goes to.
//!
//! Four strategies ([`PartitionerKind`]):
//!
//! - [`RoundRobin`](PartitionerKind::RoundRobin) and [`Random`](PartitionerKind::Random)
//!   ignore keys: they spread records evenly but records with the same key may land in
//!   different partitions (so their relative order is lost).
//! - [`Modulo`](PartitionerKind::Modulo): `hash(key) % partitions`. Even spread, but adding a
//!   partition moves almost every key (`n / (n + 1)` of them).
//! - [`Ring`](PartitionerKind::Ring) (a hash ring with virtual nodes) and
//!   [`Jump`](PartitionerKind::Jump) (Lamping and Veach's jump consistent hash): adding a
//!   partition moves about `1 / (n + 1)` of the keys, all of them to the new partition.
//!
//! With a key-based kind, a record with a key always goes to the same partition for a given
//! partitioner version, so records with the same key keep their order (a partition is one log).
//! A record without a key goes round robin.
//!
//! The hash is FNV-1a (64 bit) followed by the splitmix64 finaliser: stable across processes,
//! platforms and releases (it is part of the on-disk contract, since it decides where keys live).
//!
//! The partitioner of a topic is versioned with the topic (see
//! [`TopicInfo::versions`](super::TopicInfo::versions)): adding partitions creates a new
//! version, and [`Partitioner::moved`] tells which keys changed partition between two versions.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// How a partitioner picks a partition.
///
/// # Examples
///
/// ```
/// use stratalog::PartitionerKind;
///
/// assert_eq!("jump".parse(), Ok(PartitionerKind::Jump));
/// assert_eq!("ring:64".parse(), Ok(PartitionerKind::Ring { vnodes: 64 }));
/// assert!("ring:0".parse::<PartitionerKind>().is_err());
/// // Keyed kinds keep a key on one partition; the others ignore keys.
/// assert!(PartitionerKind::Modulo.is_keyed());
/// assert!(!PartitionerKind::RoundRobin.is_keyed());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PartitionerKind {
    /// Partitions in turn, ignoring keys.
    RoundRobin,
    /// A random partition, ignoring keys.
    Random,
    /// `hash(key) % partitions`.
    Modulo,
    /// A consistent-hash ring with `vnodes` points per partition.
    Ring {
        /// Points per partition on the ring (more points, more even spread; 1..=65536).
        vnodes: u32,
    },
    /// Jump consistent hashing (no state, perfectly even, only grows at the end).
    Jump,
}

impl Default for PartitionerKind {
    /// [`PartitionerKind::Jump`]: consistent and even.
    fn default() -> Self {
        PartitionerKind::Jump
    }
}

impl PartitionerKind {
    /// Largest accepted `vnodes` of a ring.
    pub const MAX_VNODES: u32 = 65536;

    /// True if records with the same key always go to the same partition.
    pub fn is_keyed(self) -> bool {
        !matches!(self, PartitionerKind::RoundRobin | PartitionerKind::Random)
    }

    /// The code stored on disk (see docs/FORMAT.md) and the ring's vnodes (0 otherwise).
    pub(crate) fn encode(self) -> (u8, u32) {
        match self {
            PartitionerKind::RoundRobin => (0, 0),
            PartitionerKind::Random => (1, 0),
            PartitionerKind::Modulo => (2, 0),
            PartitionerKind::Ring { vnodes } => (3, vnodes),
            PartitionerKind::Jump => (4, 0),
        }
    }

    pub(crate) fn decode(code: u8, vnodes: u32) -> Option<Self> {
        Some(match code {
            0 => PartitionerKind::RoundRobin,
            1 => PartitionerKind::Random,
            2 => PartitionerKind::Modulo,
            3 if (1..=Self::MAX_VNODES).contains(&vnodes) => PartitionerKind::Ring { vnodes },
            4 => PartitionerKind::Jump,
            _ => return None,
        })
    }

    pub(crate) fn check(self) -> Result<()> {
        if let PartitionerKind::Ring { vnodes } = self
            && !(1..=Self::MAX_VNODES).contains(&vnodes)
        {
            return Err(Error::InvalidArgument(format!(
                "a ring needs 1..={} virtual nodes per partition, not {vnodes}",
                Self::MAX_VNODES
            )));
        }
        Ok(())
    }
}

impl std::fmt::Display for PartitionerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PartitionerKind::RoundRobin => f.write_str("round-robin"),
            PartitionerKind::Random => f.write_str("random"),
            PartitionerKind::Modulo => f.write_str("modulo"),
            PartitionerKind::Ring { vnodes } => write!(f, "ring:{vnodes}"),
            PartitionerKind::Jump => f.write_str("jump"),
        }
    }
}

impl std::str::FromStr for PartitionerKind {
    type Err = String;

    /// `round-robin`, `random`, `modulo`, `jump`, `ring` (128 virtual nodes) or `ring:<N>`.
    fn from_str(s: &str) -> Result<Self, String> {
        let kind = match s {
            "round-robin" | "roundrobin" | "rr" => PartitionerKind::RoundRobin,
            "random" => PartitionerKind::Random,
            "modulo" | "hash" => PartitionerKind::Modulo,
            "jump" => PartitionerKind::Jump,
            "ring" => PartitionerKind::Ring { vnodes: 128 },
            _ => match s.strip_prefix("ring:").map(str::parse::<u32>) {
                Some(Ok(vnodes)) => PartitionerKind::Ring { vnodes },
                _ => {
                    return Err(format!(
                        "unknown partitioner {s:?}; use round-robin, random, modulo, jump, ring or ring:<vnodes>"
                    ));
                }
            },
        };
        kind.check().map_err(|e| e.to_string())?;
        Ok(kind)
    }
}

/// The stable 64-bit hash of a key: FNV-1a, then the splitmix64 finaliser (FNV alone mixes
/// the last bytes poorly into the high bits).
pub fn key_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// splitmix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Jump consistent hash (Lamping and Veach, 2014): a bucket in `0..buckets`.
pub fn jump_hash(mut key: u64, buckets: u32) -> u32 {
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as u32
}

/// Picks partitions for records of one topic under one partitioner version.
///
/// Cheap to share between threads (`&self` methods; the round-robin counter is atomic).
///
/// # Examples
///
/// ```
/// use stratalog::{Partitioner, PartitionerKind};
///
/// # fn main() -> stratalog::Result<()> {
/// let p = Partitioner::new(PartitionerKind::Jump, 8)?;
/// let home = p.partition(Some(b"user-7"));
/// assert!(home < 8);
/// // The same key always goes to the same partition.
/// assert!((0..100).all(|_| p.partition(Some(b"user-7")) == home));
/// // Keyless records go round robin.
/// let q = Partitioner::new(PartitionerKind::RoundRobin, 3)?;
/// assert_eq!([q.partition(None), q.partition(None), q.partition(None)].iter().sum::<u32>(), 3);
/// assert!(Partitioner::new(PartitionerKind::Jump, 0).is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Partitioner {
    kind: PartitionerKind,
    partitions: u32,
    /// Sorted ring points `(hash, partition)`; only for [`PartitionerKind::Ring`].
    ring: Vec<(u64, u32)>,
    counter: AtomicU64,
    rng: AtomicU64,
}

impl Partitioner {
    /// A partitioner of `kind` over `partitions` partitions (at least 1).
    pub fn new(kind: PartitionerKind, partitions: u32) -> Result<Partitioner> {
        kind.check()?;
        if partitions == 0 {
            return Err(Error::InvalidArgument(
                "a topic needs at least one partition".into(),
            ));
        }
        let ring = match kind {
            PartitionerKind::Ring { vnodes } => {
                let mut ring: Vec<(u64, u32)> = (0..partitions)
                    .flat_map(|p| {
                        (0..vnodes).map(move |v| (mix((u64::from(p) << 32) | u64::from(v)), p))
                    })
                    .collect();
                ring.sort_unstable();
                ring
            }
            _ => Vec::new(),
        };
        Ok(Partitioner {
            kind,
            partitions,
            ring,
            counter: AtomicU64::new(0),
            rng: AtomicU64::new(crate::log::now_ms() as u64 ^ 0x9e37_79b9_7f4a_7c15),
        })
    }

    /// The strategy.
    pub fn kind(&self) -> PartitionerKind {
        self.kind
    }

    /// The number of partitions.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The partition for a record with this key (or none). Keyed kinds send a key always to the
    /// same partition; records without a key, and every record under the keyless kinds, are
    /// spread round robin (or at random under [`PartitionerKind::Random`]).
    pub fn partition(&self, key: Option<&[u8]>) -> u32 {
        match (self.kind, key) {
            (PartitionerKind::Random, _) => {
                let x = self.rng.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
                (mix(x) % u64::from(self.partitions)) as u32
            }
            (kind, Some(key)) if kind.is_keyed() => self.for_key(key),
            _ => {
                let n = self.counter.fetch_add(1, Ordering::Relaxed);
                (n % u64::from(self.partitions)) as u32
            }
        }
    }

    /// The partition of `key` under a keyed kind (round robin and random use the key hash
    /// modulo the partitions here, so that the answer is at least deterministic).
    pub fn for_key(&self, key: &[u8]) -> u32 {
        let h = key_hash(key);
        match self.kind {
            PartitionerKind::Ring { .. } => {
                let i = self.ring.partition_point(|&(point, _)| point < h);
                self.ring.get(i).unwrap_or(&self.ring[0]).1
            }
            PartitionerKind::Jump => jump_hash(h, self.partitions),
            _ => (h % u64::from(self.partitions)) as u32,
        }
    }

    /// For each key, `Some((from, to))` if `older` and `self` send it to different partitions.
    /// Frontends use it after partitions were added to tell which keys moved.
    pub fn moved<'k>(
        &self,
        older: &Partitioner,
        keys: impl IntoIterator<Item = &'k [u8]>,
    ) -> Vec<Option<(u32, u32)>> {
        keys.into_iter()
            .map(|k| {
                let (from, to) = (older.for_key(k), self.for_key(k));
                (from != to).then_some((from, to))
            })
            .collect()
    }
}
