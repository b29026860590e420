//! Simulated power loss over many seeds: after every crash, every acknowledged record is
//! present and the log is a prefix of what was appended.

mod common;

use std::path::Path;

use common::{Rng, assert_sound, options, values};
use stratalog::storage::{PowerLoss, SimStorage};
use stratalog::{BatchBuilder, Compression, FsyncPolicy, GroupCommit, Log, LogOptions};

const SEEDS: u64 = 2000;
const CRASHES_PER_SEED: usize = 3;

/// One seed: a few rounds of appends, then a power loss, then recovery and checks.
fn run_seed(seed: u64) -> (u64, u64) {
    let mut rng = Rng(seed);
    let sim = SimStorage::new(seed);
    let dir = Path::new("/data/log");
    let policy = if rng.chance(70) {
        FsyncPolicy::Always
    } else {
        FsyncPolicy::Never
    };
    let group_commit = if seed.is_multiple_of(2) {
        GroupCommit::Flusher
    } else {
        GroupCommit::Leader
    };
    let mut appended: Vec<Vec<u8>> = Vec::new(); // every value ever appended, in order
    let mut durable = 0usize; // this many leading values were acknowledged durable
    let mut acked_total = 0u64;
    for crash in 0..CRASHES_PER_SEED {
        let log = Log::open(
            dir,
            LogOptions {
                group_commit,
                ..options(sim.shared(), policy)
            },
        )
        .unwrap_or_else(|e| panic!("seed {seed}: open: {e}"));
        let mut pending = Vec::new();
        for _ in 0..rng.below(30) + 1 {
            let mut batch = BatchBuilder::new(if rng.chance(30) {
                Compression::Lz4
            } else {
                Compression::None
            });
            for _ in 0..rng.below(8) + 1 {
                let value = format!(
                    "s{seed}-c{crash}-{}-{}",
                    appended.len(),
                    "x".repeat(rng.below(200) as usize)
                );
                batch
                    .push_value(appended.len() as i64, value.as_bytes())
                    .unwrap();
                appended.push(value.into_bytes());
            }
            let a = log
                .append(&batch)
                .unwrap_or_else(|e| panic!("seed {seed}: append: {e}"));
            assert_eq!(a.last_offset + 1, appended.len() as u64);
            pending.push((a.last_offset + 1, a.receipt));
            // Acknowledge some of what was appended so far.
            if rng.chance(40) {
                match policy {
                    FsyncPolicy::Always => {
                        let (upto, receipt) = pending.pop().unwrap();
                        receipt.wait().unwrap();
                        durable = durable.max(upto as usize);
                        pending.clear();
                    }
                    _ => {
                        log.flush().unwrap();
                        durable = appended.len();
                        pending.clear();
                    }
                }
            }
        }
        acked_total += durable as u64;
        let mode = if rng.chance(50) {
            PowerLoss::Torn
        } else {
            PowerLoss::DropUnsynced
        };
        sim.power_loss(mode);
        drop(log); // its handles are stale now: closing fails and changes nothing
        let log = Log::open(
            dir,
            LogOptions {
                group_commit,
                ..options(sim.shared(), policy)
            },
        )
        .unwrap_or_else(|e| panic!("seed {seed} crash {crash}: reopen: {e}"));
        let got = values(&log).unwrap_or_else(|e| panic!("seed {seed} crash {crash}: read: {e}"));
        assert!(
            got.len() >= durable,
            "seed {seed} crash {crash}: {} records survived, {durable} were acknowledged",
            got.len()
        );
        assert_eq!(
            &got[..],
            &appended[..got.len()],
            "seed {seed} crash {crash}: not a prefix of what was appended"
        );
        appended.truncate(got.len());
        durable = got.len();
        log.close().unwrap();
        assert_sound(&sim, dir, &format!("seed {seed} crash {crash}"));
    }
    (acked_total, appended.len() as u64)
}

#[test]
fn acknowledged_records_survive_power_loss() {
    let seeds: u64 = std::env::var("STRATALOG_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEEDS);
    let mut acked = 0;
    for seed in 0..seeds {
        acked += run_seed(seed).0;
    }
    eprintln!(
        "power loss: {seeds} seeds x {CRASHES_PER_SEED} crashes, {acked} acknowledged-record checks (summed over crashes), no loss"
    );
}
