//! fsync EIO and write EIO/ENOSPC at each write site: no receipt completes as durable unless
//! its batch is durable, nothing partial is readable, no panic, and the log recovers on reopen.

mod common;

use std::path::Path;

use common::{assert_sound, options, values};
use stratalog::storage::{Fault, PowerLoss, SimStorage};
use stratalog::{BatchBuilder, Error, FsyncPolicy, GroupCommit, Log, LogOptions};

const BATCHES: usize = 40;

struct Outcome {
    /// Values of appends that returned Ok, in offset order.
    appended: Vec<Vec<u8>>,
    /// How many leading values of `appended` had their receipt complete Ok.
    acked: usize,
    failed_sticky: bool,
}

/// Appends BATCHES batches, injecting `fault` after the log is open. Checks the in-process
/// invariants on the way.
fn workload(sim: &SimStorage, dir: &Path, mode: GroupCommit, fault: Option<Fault>) -> Outcome {
    let options = LogOptions {
        group_commit: mode,
        ..options(sim.shared(), FsyncPolicy::Always)
    };
    let log = Log::open(dir, options).unwrap();
    if let Some(f) = fault {
        sim.inject(f);
    }
    let mut out = Outcome {
        appended: Vec::new(),
        acked: 0,
        failed_sticky: false,
    };
    for i in 0..BATCHES {
        let mut b = BatchBuilder::default();
        let value = format!("v{i}-{}", "x".repeat(i * 7 % 300));
        b.push_value(i as i64, value.as_bytes()).unwrap();
        match log.append(&b) {
            Ok(a) => {
                assert!(
                    !out.failed_sticky,
                    "an append succeeded after the log failed"
                );
                assert_eq!(a.base_offset, out.appended.len() as u64);
                out.appended.push(value.into_bytes());
                match a.receipt.wait() {
                    Ok(()) => out.acked = out.appended.len(),
                    Err(e) => {
                        assert!(matches!(e, Error::Failed(_)), "receipt error: {e}");
                        out.failed_sticky = true;
                    }
                }
            }
            Err(e) if e.is_no_space() => {}
            Err(Error::Failed(_)) => out.failed_sticky = true,
            Err(e) => panic!("unexpected append error: {e}"),
        }
    }
    // Nothing partial is readable, and what is readable is what was appended.
    let visible = values(&log).expect("reads keep working after a write error");
    assert!(visible.len() >= out.acked && visible[..] == out.appended[..visible.len()]);
    if out.failed_sticky {
        assert!(log.flush().is_err(), "flush must fail after an fsync error");
    }
    drop(log);
    out
}

/// Power loss after the workload, then reopen: every acknowledged record is there and the log
/// is a prefix of the successful appends.
fn check_after_power_loss(sim: &SimStorage, dir: &Path, out: &Outcome, what: &str) {
    sim.clear_faults();
    sim.power_loss(PowerLoss::DropUnsynced);
    let log = Log::open(dir, options(sim.shared(), FsyncPolicy::Always))
        .unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
    let got = values(&log).unwrap();
    assert!(
        got.len() >= out.acked,
        "{what}: {} survived, {} acknowledged",
        got.len(),
        out.acked
    );
    assert_eq!(
        got[..],
        out.appended[..got.len()],
        "{what}: not a prefix of the appends"
    );
    // The reopened log takes writes again.
    log.append_records(&["after"])
        .unwrap()
        .receipt
        .wait()
        .unwrap();
    log.close().unwrap();
    assert_sound(sim, dir, what);
}

#[test]
fn io_errors_at_every_write_site() {
    for mode in [GroupCommit::Flusher, GroupCommit::Leader] {
        io_errors_at_every_write_site_with(mode);
    }
}

fn io_errors_at_every_write_site_with(mode: GroupCommit) {
    let dir = Path::new("/faults");
    let clean = SimStorage::new(0);
    let before = {
        let log = Log::open(dir, options(clean.shared(), FsyncPolicy::Always)).unwrap();
        drop(log);
        clean.counters()
    };
    workload(&clean, dir, mode, None);
    let after = clean.counters();
    let (writes, syncs, dir_syncs) = (
        after.writes - before.writes,
        after.syncs - before.syncs,
        after.dir_syncs - before.dir_syncs,
    );
    assert!(
        writes > BATCHES as u64 && syncs > 0 && dir_syncs > 0,
        "workload too small: {writes} {syncs} {dir_syncs}"
    );
    let mut faults = Vec::new();
    for nth in 1..=writes {
        faults.push(Fault::FailWrite { nth, enospc: false });
        faults.push(Fault::FailWrite { nth, enospc: true });
    }
    faults.extend((1..=syncs).map(|nth| Fault::FailSync { nth }));
    faults.extend((1..=dir_syncs).map(|nth| Fault::FailDirSync { nth }));
    let (mut sticky, mut tried) = (0, 0);
    for (i, fault) in faults.iter().enumerate() {
        let sim = SimStorage::new(i as u64);
        let what = format!("{fault:?}");
        let out = workload(&sim, dir, mode, Some(*fault));
        sticky += usize::from(out.failed_sticky);
        check_after_power_loss(&sim, dir, &out, &what);
        tried += 1;
    }
    eprintln!(
        "faults ({mode:?} group commit): {tried} injected ({writes} write sites x EIO/ENOSPC, {syncs} fsyncs, {dir_syncs} directory fsyncs); {sticky} put the log in the failed state; no acknowledged record lost"
    );
}

#[test]
fn no_space_is_not_sticky_and_frees_up() {
    let dir = Path::new("/full");
    let sim = SimStorage::new(3);
    let log = Log::open(dir, options(sim.shared(), FsyncPolicy::Always)).unwrap();
    sim.inject(Fault::Capacity { bytes: 16 * 1024 });
    let mut acked = 0;
    let mut refused = 0;
    for i in 0..200 {
        match log.append_records(&[format!("{i:0>100}")]) {
            Ok(a) => {
                a.receipt.wait().unwrap();
                acked += 1;
            }
            Err(e) => {
                assert!(e.is_no_space(), "{e}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0 && acked > 0);
    assert_eq!(values(&log).unwrap().len(), acked);
    sim.clear_faults();
    log.append_records(&["room again"])
        .unwrap()
        .receipt
        .wait()
        .unwrap();
    assert_eq!(values(&log).unwrap().len(), acked + 1);
}
