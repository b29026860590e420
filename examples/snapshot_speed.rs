//! Measures snapshots and restores (docs/DR.md, "Performance"), in one run:
//!
//! - a snapshot of a store holding `SIZE` MiB of sealed segments (hard links on one file
//!   system; the CRC-32C of every linked file is computed, from the page cache when the store
//!   was just written);
//! - a restore of that snapshot (every byte read, checked and written, files fsynced, the store
//!   opened once), against the disk's sequential write speed measured the same way (1 MiB
//!   `write`s of as many bytes, one `fsync`).
//!
//! ```sh
//! cargo run --release --example snapshot_speed -- [SIZE_MIB (1024)] [DIR (a temporary one)]
//! ```
//!
//! It needs about 3 x SIZE of free space in DIR and removes what it wrote.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use stratalog::{
    FsyncPolicy, LogConfig, PartitionerKind, Store, StoreOptions, TopicConfig, snapshot,
};

const MIB: u64 = 1 << 20;

fn options() -> StoreOptions {
    StoreOptions {
        retention_interval: None,
        ..Default::default()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let size_mib: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1024);
    let tmp = match args.next() {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let root = tmp.path();
    let store_dir = root.join("store");

    // A store with `size_mib` MiB of sealed 64 MiB segments (1 MiB batches) and a small
    // active segment.
    let store = Store::open(&store_dir, options())?;
    let config = TopicConfig {
        log: LogConfig {
            segment_bytes: 64 * MIB,
            ..Default::default()
        },
        fsync: FsyncPolicy::Never,
    };
    store.create_topic("bench", 1, config, PartitionerKind::Jump)?;
    let log = store.partition("bench", 0)?;
    let value = vec![0x5au8; 64 << 10];
    let values: Vec<&[u8]> = (0..16).map(|_| &value[..]).collect();
    // Past the last full segment: an active one with data.
    for _ in 0..size_mib + 3 {
        log.append_records(&values)?;
    }
    log.flush()?;
    drop(log);
    store.close()?;
    let store = Store::open(&store_dir, options())?;

    let snap = root.join("snap");
    let report = snapshot::create(&store, &snap)?;
    println!(
        "snapshot: {:.3} s for {} linked file(s) ({:.0} MiB) and {} copied ({:.1} MiB); snapshot point read in {:?}",
        report.duration.as_secs_f64(),
        report.linked_files,
        report.linked_bytes as f64 / MIB as f64,
        report.copied_files,
        report.copied_bytes as f64 / MIB as f64,
        report.cut_duration,
    );
    store.close()?;

    let restored = root.join("restored");
    let r = snapshot::restore(&snap, &restored)?;
    let mib = r.bytes as f64 / MIB as f64;
    let restore_mibs = mib / r.duration.as_secs_f64();
    let copy_mibs = mib / r.copy_duration.as_secs_f64();
    println!(
        "restore: {:.3} s for {mib:.0} MiB ({restore_mibs:.0} MiB/s; the checked copy alone {:.3} s, {copy_mibs:.0} MiB/s)",
        r.duration.as_secs_f64(),
        r.copy_duration.as_secs_f64(),
    );
    std::fs::remove_dir_all(&restored)?;

    let disk_mibs = sequential_write(&root.join("plain"), r.bytes)?;
    println!(
        "disk: sequential write of as many bytes, 1 MiB writes + one fsync: {disk_mibs:.0} MiB/s; restore / disk = {:.2}, checked copy / disk = {:.2}",
        restore_mibs / disk_mibs,
        copy_mibs / disk_mibs
    );
    Ok(())
}

/// Writes `bytes` to a new file in 1 MiB writes and fsyncs it; returns MiB/s.
fn sequential_write(path: &Path, bytes: u64) -> std::io::Result<f64> {
    let buf = vec![0xa5u8; MIB as usize];
    let started = Instant::now();
    let mut f = std::fs::File::create_new(path)?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(MIB) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    let secs = started.elapsed().as_secs_f64();
    std::fs::remove_file(path)?;
    Ok(bytes as f64 / MIB as f64 / secs)
}
