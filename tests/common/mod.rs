//! Helpers shared by the integration tests.
#![allow(
    dead_code,
    reason = "each test file includes this module and uses only some of its helpers; `expect` would fail in the files that use them all"
)]

use std::path::Path;
use std::sync::Arc;

use stratalog::storage::Storage;
use stratalog::{Log, LogConfig, LogOptions};

/// Small segments and a dense index, so that a few records exercise rolls and index lookups.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 256,
        ..Default::default()
    }
}

pub fn options(storage: Arc<dyn Storage>, fsync: stratalog::FsyncPolicy) -> LogOptions {
    LogOptions {
        config: small_config(),
        fsync,
        storage,
        create: true,
        ..Default::default()
    }
}

/// Every record value in the log, in offset order, checking offsets are dense from the start.
pub fn values(log: &Log) -> stratalog::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut next = log.start_offset();
    while next < log.end_offset() {
        let batches = log.read(next, 64 * 1024)?;
        assert!(
            !batches.is_empty(),
            "read at {next} below end {} returned nothing",
            log.end_offset()
        );
        for batch in batches {
            for record in batch.records().expect("records of a checked batch") {
                let record = record.expect("record of a checked batch");
                assert_eq!(record.offset, next, "offsets must be dense");
                out.push(record.value.to_vec());
                next += 1;
            }
        }
    }
    Ok(out)
}

/// Asserts the log directory verifies sound.
pub fn assert_sound(storage: &dyn Storage, dir: &Path, context: &str) {
    let report = stratalog::verify_dir(storage, dir).expect("verify ran");
    assert!(
        report.is_sound(),
        "{context}: verify found problems: {:#?}",
        report.problems
    );
}

/// A small deterministic generator (splitmix64), so failures reproduce from the seed alone.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}
pub mod proxy;

/// `n` free loopback addresses, for nodes that must know each other's addresses before they
/// start (the ports are released before use, so another process could take one meanwhile:
/// unlikely on a test machine).
pub fn free_addrs(n: usize) -> Vec<String> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect()
}
