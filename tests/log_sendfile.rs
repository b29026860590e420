//! Fetch answers sent from the segment files with `sendfile` (`Log::read_file_ranges`,
//! `Reply::send_fetch_ranges`): the bytes a follower or consumer receives are exactly the
//! batches `Log::read` returns, from the active segment, from sealed segments whose descriptor
//! was closed (opened again by path), and from the simulated storage (no descriptor: `writev`).
//! Network: 127.0.0.1 only; every server is stopped by its guard, also when a test fails.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use stratalog::replication::transport::{Client, Handler, Reply, Server, ServerOptions};
use stratalog::replication::{ErrorCode, FetchRole, Message, WireError};
use stratalog::storage::{FsStorage, SimStorage, Storage};
use stratalog::{FsyncPolicy, Log, LogOptions};

/// Answers fetches from a log with `send_fetch_ranges`, counting the bytes sent by `sendfile`.
struct Fetcher {
    log: Arc<Log>,
    sendfile_bytes: AtomicU64,
}

impl Handler for Fetcher {
    fn handle(&self, request: Message, reply: &mut Reply<'_>) -> Result<(), WireError> {
        let Message::FetchRequest {
            offset, max_bytes, ..
        } = request
        else {
            return Err(std::io::Error::other("only fetches").into());
        };
        let log = &self.log;
        let ranges = log
            .read_file_ranges(offset, log.end_offset(), max_bytes as usize)
            .map_err(std::io::Error::other)?;
        let sent = reply.send_fetch_ranges(
            ErrorCode::None,
            1,
            log.high_watermark(),
            log.start_offset(),
            log.end_offset(),
            u64::MAX,
            &ranges,
        )?;
        self.sendfile_bytes.fetch_add(sent, Ordering::AcqRel);
        Ok(())
    }
}

/// Stops the server when the test ends, also by a panic.
struct Running(Option<Server>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(server) = self.0.take() {
            server.stop();
        }
    }
}

fn fetch_request(offset: u64, max_bytes: u32) -> Message {
    Message::FetchRequest {
        role: FetchRole::Consumer,
        node_id: String::new(),
        topic: "t".into(),
        partition: 0,
        offset,
        last_epoch: 0,
        leader_epoch: 0,
        max_bytes,
        max_wait_ms: 0,
        durable_end: 0,
        topic_id: [0; 16],
    }
}

/// Fetches the whole log through a server and checks every answer against `Log::read`;
/// returns the bytes the server sent with `sendfile` and the number of fetches.
fn fetch_all_and_compare(log: Arc<Log>, max_bytes: u32) -> (u64, u64, u64) {
    let fetcher = Arc::new(Fetcher {
        log: log.clone(),
        sendfile_bytes: AtomicU64::new(0),
    });
    let server = Running(Some(
        Server::start("127.0.0.1:0", fetcher.clone(), ServerOptions::default()).unwrap(),
    ));
    let addr = server.0.as_ref().unwrap().addr();
    let mut client = Client::connect(addr, Duration::from_secs(20)).unwrap();
    let (mut offset, mut fetches, mut total) = (log.start_offset(), 0, 0u64);
    while offset < log.end_offset() {
        let answer = client.call(&fetch_request(offset, max_bytes)).unwrap();
        let Message::FetchResponse { error, batches, .. } = answer else {
            panic!("not a fetch answer: {answer:?}");
        };
        assert_eq!(error, ErrorCode::None);
        let expected: Vec<Bytes> = log
            .read(offset, max_bytes as usize)
            .unwrap()
            .iter()
            .map(|b| b.as_bytes().clone())
            .collect();
        assert_eq!(batches, expected.concat(), "answer at {offset}");
        let got = stratalog::replication::node::split_batches(batches.clone()).unwrap();
        assert_eq!(got.first().unwrap().base_offset(), offset);
        offset = got.last().unwrap().last_offset() + 1;
        total += batches.len() as u64;
        fetches += 1;
    }
    drop(server);
    (
        fetcher.sendfile_bytes.load(Ordering::Acquire),
        total,
        fetches,
    )
}

fn options(storage: Arc<dyn Storage>) -> LogOptions {
    common::options(storage, FsyncPolicy::Always)
}

fn fill(log: &Log, n: usize, size: usize) {
    for i in 0..n {
        let value = vec![b'a' + (i % 26) as u8; size];
        log.append_records(&[value])
            .unwrap()
            .receipt
            .wait()
            .unwrap();
    }
}

#[test]
fn fetch_answers_go_by_sendfile_from_active_and_sealed_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let log = Log::open(&dir, options(FsStorage::shared())).unwrap();
    fill(&log, 40, 100);
    log.close().unwrap();
    // Reopened, the sealed segments keep a mapping and no descriptor; the active one is new.
    let log = Arc::new(Log::open(&dir, options(FsStorage::shared())).unwrap());
    fill(&log, 20, 100);
    let ranges = log.read_file_ranges(0, log.end_offset(), 1 << 20).unwrap();
    assert!(ranges.len() > 2, "the test must span segments: {ranges:?}");
    assert!(
        ranges.iter().all(|r| r.fd().is_some()),
        "sealed segments are opened again for sendfile"
    );
    for pair in ranges.windows(2) {
        assert_eq!(pair[1].base_offset(), pair[0].last_offset() + 1);
    }
    for max_bytes in [1, 700, 1 << 20] {
        let (by_sendfile, total, fetches) = fetch_all_and_compare(log.clone(), max_bytes);
        println!(
            "max_bytes {max_bytes}: {fetches} fetches, {total} bytes, {by_sendfile} by sendfile"
        );
        assert_eq!(by_sendfile, total, "every byte went by sendfile");
    }
}

#[test]
fn an_answer_of_8_mib_is_sent_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Arc::new(
        Log::open(
            tmp.path(),
            LogOptions {
                config: stratalog::LogConfig {
                    segment_bytes: 64 << 20,
                    ..Default::default()
                },
                ..options(FsStorage::shared())
            },
        )
        .unwrap(),
    );
    // 8 MiB in 64 KiB records: more than a socket buffer takes at once.
    fill(&log, 128, 64 << 10);
    let (by_sendfile, total, fetches) = fetch_all_and_compare(log, 16 << 20);
    assert_eq!(fetches, 1);
    assert!(total > 8 << 20);
    assert_eq!(by_sendfile, total);
}

#[test]
fn the_simulated_storage_has_no_descriptor_and_falls_back_to_writev() {
    let sim = SimStorage::new(9);
    let log = Arc::new(Log::open("/sim", options(sim.shared())).unwrap());
    fill(&log, 40, 100);
    let ranges = log.read_file_ranges(0, log.end_offset(), 1 << 20).unwrap();
    assert!(!ranges.is_empty() && ranges.iter().all(|r| r.fd().is_none()));
    let (by_sendfile, total, _) = fetch_all_and_compare(log, 1 << 20);
    assert_eq!(by_sendfile, 0);
    assert!(total > 0);
}

#[test]
fn a_sealed_file_replaced_on_disk_is_not_sent_from() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let log = Log::open(&dir, options(FsStorage::shared())).unwrap();
    fill(&log, 40, 100);
    log.close().unwrap();
    let log = Arc::new(Log::open(&dir, options(FsStorage::shared())).unwrap());
    // Another file at the first segment's path (same bytes, another inode): what a truncation
    // or a reset could leave there. The range is served from the checked mapping instead.
    let first = dir.join(stratalog::format::segment_file_name(
        0,
        stratalog::format::SegmentFile::Log,
    ));
    let copy = dir.join("copy.tmp");
    std::fs::copy(&first, &copy).unwrap();
    std::fs::rename(&copy, &first).unwrap();
    let ranges = log.read_file_ranges(0, log.end_offset(), 1 << 20).unwrap();
    assert!(ranges.len() > 1);
    assert!(
        ranges[0].fd().is_none(),
        "the replaced file must not be used"
    );
    assert!(ranges[1..].iter().all(|r| r.fd().is_some()));
    let (by_sendfile, total, _) = fetch_all_and_compare(log, 1 << 20);
    assert!(by_sendfile > 0 && by_sendfile < total);
}

#[test]
fn ranges_stop_below_the_upper_bound_and_within_the_budget() {
    let sim = SimStorage::new(4);
    let log = Log::open(Path::new("/upper"), options(sim.shared())).unwrap();
    for i in 0..10 {
        log.append_records(&[format!("{i}a"), format!("{i}b")])
            .unwrap()
            .receipt
            .wait()
            .unwrap();
    }
    // Batches hold 2 records: an upper bound inside a batch stops before it.
    let ranges = log.read_file_ranges(0, 5, 1 << 20).unwrap();
    assert_eq!(ranges.last().unwrap().last_offset(), 3);
    assert!(log.read_file_ranges(4, 5, 1 << 20).unwrap().is_empty());
    // The budget: at least one batch, whole batches only.
    let one = log.read_file_ranges(2, 20, 1).unwrap();
    assert_eq!((one[0].base_offset(), one[0].last_offset()), (2, 3));
    let len: u64 = one.iter().map(|r| r.len()).sum();
    assert_eq!(len, log.read(2, 1).unwrap()[0].as_bytes().len() as u64);
    assert!(matches!(
        log.read_file_ranges(21, 30, 1),
        Err(stratalog::Error::OffsetOutOfRange { .. })
    ));
}
