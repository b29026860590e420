//! `stratalog snapshot`, `stratalog restore` and `stratalog verify --snapshot`: snapshots of
//! a store, offline or streamed from a node (docs/DR.md). Thin over [`stratalog::snapshot`].

use std::path::Path;

use stratalog::Error;
use stratalog::snapshot;

use super::{CliError, context, outln};

/// Takes a snapshot of the store in `dir` into the new directory `out`. The command opens the
/// store itself: a store held by a running process is refused.
pub fn create(dir: &Path, out: &Path) -> Result<(), CliError> {
    let report = match snapshot::create_offline(dir, out) {
        Ok(r) => r,
        Err(Error::Locked { path }) => {
            return Err(format!(
                "the store in {} is open in another process ({} is locked): a running node or producer; stop it, or snapshot through it",
                dir.display(),
                path.display()
            )
            .into());
        }
        Err(e) => {
            return Err(context(format!(
                "cannot snapshot the store in {}",
                dir.display()
            ))(e));
        }
    };
    let m = &report.manifest;
    outln!(
        "snapshot {} of {}: {} log(s), {} file(s): {} hard-linked ({} bytes), {} copied ({} bytes), in {:.3} s",
        out.display(),
        dir.display(),
        m.partitions.len(),
        m.files.len(),
        report.linked_files,
        report.linked_bytes,
        report.copied_files,
        report.copied_bytes,
        report.duration.as_secs_f64()
    );
    print_partitions(m)
}

/// Takes a snapshot streamed from the leader among `nodes` into the new directory `out`.
pub fn create_from_node(nodes: &[String], out: &Path) -> Result<(), CliError> {
    let report = snapshot::create_from_node(nodes, out).map_err(context(format!(
        "cannot take a snapshot from {}",
        nodes.join(",")
    )))?;
    let m = &report.manifest;
    outln!(
        "snapshot {} from {}: {} log(s), {} file(s), {} bytes received in {:.3} s",
        out.display(),
        report.node,
        m.partitions.len(),
        m.files.len(),
        report.bytes,
        report.duration.as_secs_f64()
    );
    print_partitions(m)
}

/// One line per log of the snapshot: its offsets and epoch.
fn print_partitions(m: &stratalog::format::Manifest) -> Result<(), CliError> {
    for p in &m.partitions {
        outln!(
            "  {}: offsets {}..{}, epoch {}",
            p.dir,
            p.start_offset,
            p.end_offset,
            p.leader_epoch
        );
    }
    Ok(())
}

/// Restores the snapshot `snap` into `dir` (new or empty).
pub fn restore(snap: &Path, dir: &Path) -> Result<(), CliError> {
    let report = snapshot::restore(snap, dir).map_err(context(format!(
        "cannot restore {} into {}",
        snap.display(),
        dir.display()
    )))?;
    outln!(
        "restored {} into {}: {} log(s), {} file(s), {} bytes checked and copied in {:.3} s ({:.3} s in all)",
        snap.display(),
        dir.display(),
        report.manifest.partitions.len(),
        report.manifest.files.len(),
        report.bytes,
        report.copy_duration.as_secs_f64(),
        report.duration.as_secs_f64()
    );
    Ok(())
}

/// Checks the snapshot `snap` without restoring it.
pub fn verify(snap: &Path) -> Result<(), CliError> {
    let manifest = snapshot::verify(snap).map_err(context(format!(
        "the snapshot {} failed its checks",
        snap.display()
    )))?;
    let bytes: u64 = manifest.files.iter().map(|f| f.len).sum();
    outln!(
        "ok: snapshot {}: {} log(s), {} file(s), {} bytes, every CRC-32C matches",
        snap.display(),
        manifest.partitions.len(),
        manifest.files.len(),
        bytes
    );
    Ok(())
}
