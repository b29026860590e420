//! Who leads what on the demo's etcd path, where etcd elects a leader per partition (and one
//! for the consumer offsets log): etcd's view as `status --coordinator --json` prints it,
//! read into plain values, and the pure decisions the demo takes from it (whether the
//! leadership settled on the preferred leaders, which node to kill, how many elections
//! happened), each tested below on crafted views.

use std::collections::BTreeMap;

use serde_json::Value;

/// A leadership unit: a topic and a partition (the consumer offsets log is
/// `__consumer_offsets`, 0).
pub type UnitKey = (String, u32);

/// The consumer offsets log's unit.
pub const OFFSETS: &str = "__consumer_offsets";

/// One unit as etcd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// The node leading it (index in the demo's node list), once it started its epoch.
    pub leader: Option<usize>,
    /// Its epoch (etcd's `epoch` key; each election starts the next even epoch).
    pub epoch: u64,
    /// Its preferred leader.
    pub preferred: Option<usize>,
    /// Its published in-sync set (node ids).
    pub in_sync: Vec<String>,
}

/// etcd's view of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// Every unit etcd knows of.
    pub units: BTreeMap<UnitKey, Unit>,
    /// Members up now (their lease lives).
    pub alive: usize,
    /// The lease etcd granted (a unit leader's), milliseconds.
    pub lease_granted_ms: Option<u64>,
}

/// The index of node `nI`.
fn node_index(id: &str) -> Option<usize> {
    id.strip_prefix('n')?.parse().ok()
}

/// `unit` as `topic/partition`.
pub fn name(unit: &UnitKey) -> String {
    format!("{}/{}", unit.0, unit.1)
}

impl View {
    /// Reads the `coordinator` object of `status --coordinator --json`.
    pub fn parse(v: &Value) -> Option<View> {
        let mut units = BTreeMap::new();
        for u in v["partitions"].as_array()? {
            let key = (
                u["topic"].as_str()?.to_string(),
                u32::try_from(u["partition"].as_u64()?).ok()?,
            );
            let leader = u["leader"]
                .as_object()
                .filter(|l| {
                    l.get("epoch")
                        .and_then(Value::as_u64)
                        .is_some_and(|e| e > 0)
                })
                .and_then(|l| node_index(l.get("node_id")?.as_str()?));
            let in_sync = u["in_sync"]
                .as_array()
                .map(|ids| {
                    ids.iter()
                        .filter_map(|i| i.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            units.insert(
                key,
                Unit {
                    leader,
                    epoch: u["epoch"].as_u64().unwrap_or(0),
                    preferred: u["preferred"].as_str().and_then(node_index),
                    in_sync,
                },
            );
        }
        Some(View {
            units,
            alive: v["alive"].as_array().map_or(0, Vec::len),
            lease_granted_ms: v["lease"]["granted_ms"].as_u64(),
        })
    }

    /// The leader of each partition `0..partitions` of `topic`, if every one has one.
    pub fn leaders(&self, topic: &str, partitions: u32) -> Option<Vec<usize>> {
        (0..partitions)
            .map(|p| self.units.get(&(topic.to_string(), p))?.leader)
            .collect()
    }

    /// The leader of the consumer offsets unit.
    pub fn offsets_leader(&self) -> Option<usize> {
        self.units.get(&(OFFSETS.to_string(), 0))?.leader
    }

    /// True once all `nodes` are up, the `partitions` of `topic` and the consumer offsets
    /// unit are each led by their preferred leader, and (with `all_in_sync`) each unit
    /// publishes every node in sync.
    pub fn settled(&self, topic: &str, partitions: u32, nodes: usize, all_in_sync: bool) -> bool {
        let wanted = (0..partitions)
            .map(|p| (topic.to_string(), p))
            .chain([(OFFSETS.to_string(), 0)]);
        self.alive == nodes
            && wanted.into_iter().all(|k| {
                self.units.get(&k).is_some_and(|u| {
                    u.leader.is_some()
                        && u.leader == u.preferred
                        && (!all_in_sync || u.in_sync.len() == nodes)
                })
            })
    }

    /// The units `node` leads, in order.
    pub fn led_by(&self, node: usize) -> Vec<UnitKey> {
        self.units
            .iter()
            .filter(|(_, u)| u.leader == Some(node))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Each unit's epoch.
    pub fn epochs(&self) -> BTreeMap<UnitKey, u64> {
        self.units
            .iter()
            .map(|(k, u)| (k.clone(), u.epoch))
            .collect()
    }
}

/// The node to kill: the one leading the most partitions of `topic`; of those, the one
/// leading the consumer offsets unit (so that the group coordinator moves too); then the
/// lowest index. `None` if nobody leads anything.
pub fn victim(view: &View, topic: &str, nodes: usize) -> Option<usize> {
    (0..nodes)
        .map(|n| {
            let led = view.led_by(n);
            let parts = led.iter().filter(|k| k.0 == topic).count();
            let offsets = led.iter().any(|k| k.0 == OFFSETS);
            (n, parts, offsets)
        })
        .filter(|&(_, parts, offsets)| parts > 0 || offsets)
        .max_by_key(|&(n, parts, offsets)| (parts, offsets, std::cmp::Reverse(n)))
        .map(|(n, _, _)| n)
}

/// Elections between two readings of the epochs: each one starts the next even epoch, so a
/// rise of `d` counts `ceil(d / 2)`; a unit missing from `before` counts from epoch 0.
pub fn elections(before: &BTreeMap<UnitKey, u64>, after: &BTreeMap<UnitKey, u64>) -> u64 {
    after
        .iter()
        .map(|(k, e)| {
            e.saturating_sub(before.get(k).copied().unwrap_or(0))
                .div_ceil(2)
        })
        .sum()
}

/// Elections besides the planned ones: every election from `start` to `kill`, and from
/// `kill` to `end` those beyond two (the failover and the handover back) for each unit in
/// `moved` and beyond none for the others.
pub fn unplanned(
    start: &BTreeMap<UnitKey, u64>,
    kill: &BTreeMap<UnitKey, u64>,
    end: &BTreeMap<UnitKey, u64>,
    moved: &[UnitKey],
) -> u64 {
    let after: u64 = end
        .iter()
        .map(|(k, e)| {
            let n = e
                .saturating_sub(kill.get(k).copied().unwrap_or(0))
                .div_ceil(2);
            n.saturating_sub(if moved.contains(k) { 2 } else { 0 })
        })
        .sum();
    elections(start, kill) + after
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn unit(topic: &str, p: u32, leader: Option<(&str, u64)>, preferred: &str) -> Value {
        json!({
            "topic": topic,
            "partition": p,
            "leader": leader.map(|(id, epoch)| json!({"node_id": id, "addr": "x", "epoch": epoch})),
            "epoch": leader.map_or(0, |l| l.1),
            "in_sync": ["n0", "n1", "n2"],
            "preferred": preferred,
            "handover": null,
        })
    }

    fn view(units: Vec<Value>, alive: usize) -> View {
        let alive: Vec<String> = (0..alive).map(|i| format!("n{i}")).collect();
        View::parse(&json!({"partitions": units, "alive": alive, "lease": {"granted_ms": 2000}}))
            .unwrap()
    }

    fn spread() -> Vec<Value> {
        vec![
            unit("__consumer_offsets", 0, Some(("n2", 2)), "n2"),
            unit("demo", 0, Some(("n0", 2)), "n0"),
            unit("demo", 1, Some(("n1", 2)), "n1"),
            unit("demo", 2, Some(("n2", 2)), "n2"),
            unit("demo", 3, Some(("n0", 2)), "n0"),
        ]
    }

    #[test]
    fn a_view_reads_leaders_and_settles_only_on_preferred_leaders() {
        let v = view(spread(), 3);
        assert_eq!(v.leaders("demo", 4), Some(vec![0, 1, 2, 0]));
        assert_eq!(v.offsets_leader(), Some(2));
        assert_eq!(v.lease_granted_ms, Some(2000));
        assert!(v.settled("demo", 4, 3, true));
        // A node down, a unit led by another than its preferred leader, a leader starting
        // its epoch (epoch 0), a unit missing, a smaller in-sync set: not settled.
        assert!(!view(spread(), 2).settled("demo", 4, 3, true));
        let mut moved = spread();
        moved[4] = unit("demo", 3, Some(("n1", 4)), "n0");
        assert!(!view(moved, 3).settled("demo", 4, 3, true));
        let mut starting = spread();
        starting[1] = unit("demo", 0, Some(("n0", 0)), "n0");
        let starting = view(starting, 3);
        assert!(!starting.settled("demo", 4, 3, true));
        assert_eq!(starting.leaders("demo", 4), None);
        assert!(!view(spread()[..4].to_vec(), 3).settled("demo", 4, 3, true));
        let mut short = spread();
        short[2]["in_sync"] = json!(["n1", "n2"]);
        assert!(!view(short.clone(), 3).settled("demo", 4, 3, true));
        assert!(view(short, 3).settled("demo", 4, 3, false));
    }

    #[test]
    fn the_victim_leads_the_most_partitions_then_the_offsets_unit() {
        // n0 leads two partitions: it is the one.
        assert_eq!(victim(&view(spread(), 3), "demo", 3), Some(0));
        // n0 and n2 two each: n2 leads the offsets unit too.
        let mut tie = spread();
        tie[2] = unit("demo", 1, Some(("n2", 2)), "n1");
        assert_eq!(victim(&view(tie, 3), "demo", 3), Some(2));
        // Nobody leads anything.
        let none: Vec<Value> = (0..4).map(|p| unit("demo", p, None, "n0")).collect();
        assert_eq!(victim(&view(none, 3), "demo", 3), None);
    }

    #[test]
    fn elections_are_counted_from_the_epochs() {
        let k = |t: &str, p| (t.to_string(), p);
        let start = BTreeMap::from([(k("demo", 0), 2), (k("demo", 1), 2)]);
        assert_eq!(elections(&start, &start), 0);
        let kill = BTreeMap::from([(k("demo", 0), 2), (k("demo", 1), 4)]);
        assert_eq!(elections(&start, &kill), 1);
        // demo/0 failed over and came back (two elections): planned; demo/1 once more: not.
        let end = BTreeMap::from([(k("demo", 0), 6), (k("demo", 1), 6)]);
        assert_eq!(unplanned(&start, &kill, &end, &[k("demo", 0)]), 2);
        assert_eq!(unplanned(&kill, &kill, &end, &[k("demo", 0)]), 1);
        assert_eq!(
            unplanned(&kill, &kill, &end, &[k("demo", 0), k("demo", 1)]),
            0
        );
        // A unit etcd did not know yet counts from epoch 0.
        assert_eq!(elections(&BTreeMap::new(), &start), 2);
    }
}
