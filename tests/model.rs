//! Model test: random sequences of appends, reads, truncations, retention, rolls (small
//! segments), clean reopens and simulated power losses, checked against a `Vec` of records.

mod common;

use std::path::Path;

use common::{assert_sound, values};
use proptest::prelude::*;
use stratalog::storage::{PowerLoss, SimStorage};
use stratalog::{BatchBuilder, Compression, FsyncPolicy, Log, LogConfig, LogOptions};

#[derive(Debug, Clone)]
enum Op {
    Append { records: u8, lz4: bool, wait: bool },
    Read { at: u16 },
    ReadTime { at: u16 },
    Truncate { back: u8 },
    Retention { keep: u16 },
    Flush,
    Reopen,
    Crash { torn: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..6, any::<bool>(), any::<bool>()).prop_map(|(records, lz4, wait)| Op::Append { records, lz4, wait }),
        3 => any::<u16>().prop_map(|at| Op::Read { at }),
        1 => any::<u16>().prop_map(|at| Op::ReadTime { at }),
        1 => any::<u8>().prop_map(|back| Op::Truncate { back }),
        1 => any::<u16>().prop_map(|keep| Op::Retention { keep }),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
        1 => any::<bool>().prop_map(|torn| Op::Crash { torn }),
    ]
}

/// What the log should hold. Record `i` has value `values[i]` and timestamp `i`.
struct Model {
    values: Vec<Vec<u8>>,
    start: u64,
    /// Base offsets of the batches, oldest first.
    boundaries: Vec<u64>,
    /// Offsets below this are acknowledged durable.
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

fn options(sim: &SimStorage, retention_bytes: Option<u64>) -> LogOptions {
    LogOptions {
        config: LogConfig {
            segment_bytes: 1024,
            index_interval_bytes: 100,
            retention_bytes,
            ..Default::default()
        },
        fsync: FsyncPolicy::Always,
        storage: sim.shared(),
        create: true,
        ..Default::default()
    }
}

fn run(ops: Vec<Op>, seed: u64) -> Result<(), TestCaseError> {
    let sim = SimStorage::new(seed);
    let dir = Path::new("/model");
    let mut log = Log::open(dir, options(&sim, None)).unwrap();
    let mut m = Model {
        values: Vec::new(),
        start: 0,
        boundaries: Vec::new(),
        durable: 0,
        counter: 0,
    };
    for op in ops {
        match op {
            Op::Append { records, lz4, wait } => {
                let mut batch = BatchBuilder::new(if lz4 {
                    Compression::Lz4
                } else {
                    Compression::None
                });
                for _ in 0..records {
                    m.counter += 1;
                    let value = format!("v{}-{}", m.counter, "z".repeat((m.counter % 90) as usize));
                    batch
                        .push_value(m.values.len() as i64, value.as_bytes())
                        .unwrap();
                    m.values.push(value.into_bytes());
                }
                let a = log.append(&batch).unwrap();
                prop_assert_eq!(a.last_offset + 1, m.end());
                m.boundaries.push(a.base_offset);
                if wait {
                    a.receipt.wait().unwrap();
                    m.durable = m.end();
                }
            }
            Op::Read { at } => {
                log.flush().unwrap();
                m.durable = m.end();
                let offset = m.start + u64::from(at) % (m.end() - m.start + 1);
                let batches = log.read(offset, 512).unwrap();
                if offset == m.end() {
                    prop_assert!(batches.is_empty());
                }
                let mut expected = None;
                for batch in &batches {
                    for r in batch.records().unwrap() {
                        let r = r.unwrap();
                        prop_assert_eq!(&r.value[..], &m.values[r.offset as usize][..]);
                        prop_assert_eq!(r.timestamp, r.offset as i64);
                        if let Some(e) = expected {
                            prop_assert_eq!(r.offset, e);
                        }
                        expected = Some(r.offset + 1);
                    }
                }
                if let Some(first) = batches.first() {
                    prop_assert!(first.base_offset() <= offset && offset <= first.last_offset());
                }
            }
            Op::ReadTime { at } => {
                log.flush().unwrap();
                m.durable = m.end();
                let ts = i64::from(at) % (m.end() as i64 + 2);
                let want = (ts as u64).max(m.start);
                let got = log.offset_for_timestamp(ts).unwrap();
                prop_assert_eq!(got, (want < m.end()).then_some(want), "timestamp {}", ts);
            }
            Op::Truncate { back } => {
                let Some(&to) = m
                    .boundaries
                    .iter()
                    .rev()
                    .nth(usize::from(back) % (m.boundaries.len() + 1))
                else {
                    continue;
                };
                if to < m.start {
                    continue;
                }
                log.truncate(to).unwrap();
                m.cut(to);
                m.durable = m.end();
                prop_assert_eq!(log.end_offset(), to);
            }
            Op::Retention { keep } => {
                let mut config = log.config();
                config.retention_bytes = Some(u64::from(keep % 4096) + 512);
                log.set_config(config).unwrap();
                log.apply_retention().unwrap();
                let start = log.start_offset();
                prop_assert!(start >= m.start && start <= m.end());
                prop_assert!(
                    start == m.end() || m.boundaries.contains(&start),
                    "start {} is not a batch boundary",
                    start
                );
                m.start = start;
            }
            Op::Flush => {
                log.flush().unwrap();
                m.durable = m.end();
            }
            Op::Reopen => {
                log.close().unwrap();
                log = Log::open(dir, options(&sim, None)).unwrap();
                prop_assert!(log.recovery_report().clean);
                m.durable = m.end();
            }
            Op::Crash { torn } => {
                sim.power_loss(if torn {
                    PowerLoss::Torn
                } else {
                    PowerLoss::DropUnsynced
                });
                drop(log);
                log = Log::open(dir, options(&sim, None)).unwrap();
                let end = log.end_offset();
                prop_assert_eq!(log.start_offset(), m.start);
                prop_assert!(
                    end >= m.durable && end <= m.end(),
                    "end {} outside {}..={}",
                    end,
                    m.durable,
                    m.end()
                );
                m.cut(end);
                m.durable = end;
            }
        }
        let got = values(&log).unwrap();
        prop_assert_eq!(log.start_offset(), m.start);
        // Without a flush, unacknowledged batches may or may not be visible yet.
        prop_assert!(got.len() as u64 + m.start >= m.durable);
        prop_assert_eq!(
            &got[..],
            &m.values[m.start as usize..m.start as usize + got.len()]
        );
    }
    log.close().unwrap();
    assert_sound(&sim, dir, "model end");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_vec_model(ops in proptest::collection::vec(op(), 1..80), seed in any::<u64>()) {
        run(ops, seed)?;
    }
}
