//! `stratalog groups list|describe|delete|reset`: consumer groups, their committed offsets and
//! lag; removing a group's offsets, moving its position.

use std::collections::BTreeMap;
use std::path::Path;

use stratalog::store::ResetTo;

use super::topics::{open_store, open_store_read_only};
use super::{CliError, context, outln};

/// `groups list`: one line per group with the partitions it committed and its total lag.
pub fn list(dir: &Path) -> Result<(), CliError> {
    let store = open_store_read_only(dir)?;
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
    let store = open_store_read_only(dir)?;
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

/// `groups delete`: removes every committed offset of `group`.
pub fn delete(dir: &Path, group: &str) -> Result<(), CliError> {
    let store = open_store(dir, false)?;
    let removed = store
        .delete_group(group)
        .map_err(context(format!("cannot delete group {group:?}")));
    store.close().map_err(context("closing the store failed"))?;
    match removed? {
        0 => Err(format!("no committed offsets for group {group:?}").into()),
        n => {
            outln!("deleted group {group} ({n} partition(s))");
            Ok(())
        }
    }
}

/// `groups reset`: sets the committed offset of `group` on `topic` (one partition or all) to
/// `to`, and prints the new positions.
pub fn reset(
    dir: &Path,
    group: &str,
    topic: &str,
    partition: Option<u32>,
    to: ResetTo,
) -> Result<(), CliError> {
    let store = open_store(dir, false)?;
    let reset = store
        .reset_group(group, topic, partition, to)
        .map_err(context(format!("cannot reset group {group:?} on {topic}")));
    store.close().map_err(context("closing the store failed"))?;
    outln!("GROUP TOPIC PARTITION COMMITTED END LAG");
    for o in reset? {
        let show = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
        outln!(
            "{} {} {} {} {} {}",
            o.group,
            o.topic,
            o.partition,
            o.committed.offset,
            show(o.end_offset),
            show(o.lag())
        );
    }
    Ok(())
}
