//! `stratalog groups list|describe`: consumer groups, their committed offsets and lag.

use std::collections::BTreeMap;
use std::path::Path;

use super::topics::open_store;
use super::{CliError, context, outln};

/// `groups list`: one line per group with the partitions it committed and its total lag.
pub fn list(dir: &Path) -> Result<(), CliError> {
    let store = open_store(dir, false)?;
    let offsets = store
        .group_offsets(None)
        .map_err(context("cannot read the consumer offsets"));
    store.close().map_err(context("closing the store failed"))?;
    let mut groups: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for o in offsets? {
        let g = groups.entry(o.group.clone()).or_default();
        g.0 += 1;
        g.1 += o.lag().unwrap_or(0);
    }
    for (group, (partitions, lag)) in groups {
        outln!("{group} partitions={partitions} lag={lag}");
    }
    Ok(())
}

/// `groups describe`: one line per committed partition of `group` (or of every group).
pub fn describe(dir: &Path, group: Option<&str>) -> Result<(), CliError> {
    let store = open_store(dir, false)?;
    let offsets = store
        .group_offsets(group)
        .map_err(context("cannot read the consumer offsets"));
    store.close().map_err(context("closing the store failed"))?;
    let offsets = offsets?;
    if let Some(g) = group
        && offsets.is_empty()
    {
        return Err(format!("no committed offsets for group {g:?}").into());
    }
    outln!("GROUP TOPIC PARTITION COMMITTED END LAG EPOCH");
    for o in offsets {
        let show = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
        outln!(
            "{} {} {} {} {} {} {}",
            o.group,
            o.topic,
            o.partition,
            o.committed.offset,
            show(o.end_offset),
            show(o.lag()),
            o.committed.leader_epoch
        );
    }
    Ok(())
}
