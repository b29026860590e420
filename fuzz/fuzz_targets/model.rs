//! The log against a `Vec` model, driven by the fuzzer: appends (plain and LZ4), reads by
//! offset and by time, truncations, retention, flushes, clean reopens and simulated power
//! losses (everything unsynced dropped, or torn) on the simulated storage. After every
//! operation the log must hold exactly a prefix of the model from its start offset, with
//! every acknowledged record; after a power loss, its end lies between the last acknowledged
//! offset and the last appended one.
//!
//! Input: a sequence of operations, 3 bytes each (kind, argument, argument).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use stratalog::storage::{PowerLoss, SimStorage};
use stratalog::{BatchBuilder, Compression, FsyncPolicy, Log, LogConfig, LogOptions};

struct Model {
    values: Vec<Vec<u8>>,
    start: u64,
    boundaries: Vec<u64>,
    durable: u64,
    counter: u64,
}

impl Model {
    fn end(&self) -> u64 {
        self.values.len() as u64
    }
    fn cut(&mut self, end: u64) {
        self.values.truncate(end as usize);
        self.boundaries.retain(|&b| b < end);
        self.durable = self.durable.min(end);
    }
}

fn options(sim: &SimStorage) -> LogOptions {
    LogOptions {
        config: LogConfig {
            segment_bytes: 1024,
            index_interval_bytes: 100,
            ..Default::default()
        },
        fsync: FsyncPolicy::Always,
        storage: sim.shared(),
        ..Default::default()
    }
}

fn values(log: &Log) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut next = log.start_offset();
    while next < log.end_offset() {
        let batches = log.read(next, 4096).expect("read");
        assert!(!batches.is_empty());
        for b in batches {
            for r in b.records().expect("records") {
                let r = r.expect("record");
                assert_eq!(r.offset, next);
                out.push(r.value.to_vec());
                next += 1;
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    if data.len() > 3 * 64 {
        return; // long runs add little and slow the fuzzer down
    }
    let sim = SimStorage::new(u64::from(data.first().copied().unwrap_or(0)));
    let dir = Path::new("/model");
    let mut log = Log::open(dir, options(&sim)).unwrap();
    let mut m = Model {
        values: Vec::new(),
        start: 0,
        boundaries: Vec::new(),
        durable: 0,
        counter: 0,
    };
    for op in data.chunks_exact(3) {
        let (kind, a, b) = (op[0] % 9, op[1], op[2]);
        match kind {
            0 | 1 => {
                let mut batch = BatchBuilder::new(if a & 1 == 1 {
                    Compression::Lz4
                } else {
                    Compression::None
                });
                for _ in 0..(a >> 1) % 5 + 1 {
                    m.counter += 1;
                    let value = format!("v{}-{}", m.counter, "z".repeat(usize::from(b % 90)));
                    batch
                        .push_value(m.values.len() as i64, value.as_bytes())
                        .unwrap();
                    m.values.push(value.into_bytes());
                }
                let appended = log.append(&batch).unwrap();
                assert_eq!(appended.last_offset + 1, m.end());
                m.boundaries.push(appended.base_offset);
                if kind == 1 {
                    appended.receipt.wait().unwrap();
                    m.durable = m.end();
                }
            }
            2 => {
                log.flush().unwrap();
                m.durable = m.end();
                let span = m.end() - m.start + 1;
                let offset = m.start + u64::from(u16::from_le_bytes([a, b])) % span;
                let batches = log.read(offset, 512).unwrap();
                if offset == m.end() {
                    assert!(batches.is_empty());
                }
                if let Some(first) = batches.first() {
                    assert!(first.base_offset() <= offset && offset <= first.last_offset());
                }
                for batch in &batches {
                    for r in batch.records().unwrap() {
                        let r = r.unwrap();
                        assert_eq!(&r.value[..], &m.values[r.offset as usize][..]);
                    }
                }
            }
            3 => {
                log.flush().unwrap();
                m.durable = m.end();
                let ts = i64::from(a) % (m.end() as i64 + 2);
                let want = (ts as u64).max(m.start);
                let got = log.offset_for_timestamp(ts).unwrap();
                assert_eq!(got, (want < m.end()).then_some(want), "timestamp {ts}");
            }
            4 => {
                let n = m.boundaries.len() + 1;
                let Some(&to) = m.boundaries.iter().rev().nth(usize::from(a) % n) else {
                    continue;
                };
                if to < m.start {
                    continue;
                }
                let old_end = m.end();
                log.truncate(to).unwrap();
                // The removed batches are accounted for, not lost silently.
                if to < old_end {
                    let qs = log.quarantine().unwrap();
                    let q = qs.last().expect("a quarantine file for the truncation");
                    assert_eq!(q.offsets, to..old_end);
                }
                m.cut(to);
                m.durable = m.end();
                assert_eq!(log.end_offset(), to);
            }
            5 => {
                let mut config = log.config();
                config.retention_bytes = Some(u64::from(u16::from_le_bytes([a, b]) % 4096) + 512);
                log.set_config(config).unwrap();
                log.apply_retention().unwrap();
                let start = log.start_offset();
                assert!(start >= m.start && start <= m.end());
                assert!(start == m.end() || m.boundaries.contains(&start));
                m.start = start;
            }
            6 => {
                log.flush().unwrap();
                m.durable = m.end();
            }
            7 => {
                log.close().unwrap();
                log = Log::open(dir, options(&sim)).unwrap();
                assert!(log.recovery_report().clean);
                m.durable = m.end();
            }
            _ => {
                sim.power_loss(if a & 1 == 1 {
                    PowerLoss::Torn
                } else {
                    PowerLoss::DropUnsynced
                });
                drop(log);
                log = Log::open(dir, options(&sim)).unwrap();
                let end = log.end_offset();
                assert_eq!(log.start_offset(), m.start);
                assert!(
                    end >= m.durable && end <= m.end(),
                    "end {end} outside {}..={}",
                    m.durable,
                    m.end()
                );
                m.cut(end);
                m.durable = end;
            }
        }
        let got = values(&log);
        assert_eq!(log.start_offset(), m.start);
        assert!(got.len() as u64 + m.start >= m.durable);
        assert_eq!(
            &got[..],
            &m.values[m.start as usize..m.start as usize + got.len()]
        );
    }
    log.close().unwrap();
    let report = stratalog::verify_dir(&sim, dir).unwrap();
    assert!(report.is_sound(), "{:?}", report.problems);
});
