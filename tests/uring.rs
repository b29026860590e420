//! The io_uring storage: the log works on it exactly as on the std one, and its linked
//! write + fsync writes every byte.
//!
//! The machines this project targets (and its CI) allow io_uring, so a kernel that refuses it
//! fails these tests, with the reason; set `STRATALOG_NO_URING=1` to skip them on a machine
//! known to refuse io_uring (they then say so and fail nothing).
#![cfg(all(feature = "io-uring", target_os = "linux"))]

mod common;

use std::sync::Arc;

use stratalog::storage::{IoEngine, OpenMode, Storage, UringStorage, real_storage};
use stratalog::{FsyncPolicy, Log};

fn uring() -> Option<Arc<dyn Storage>> {
    match UringStorage::shared() {
        Ok(storage) => Some(storage),
        Err(e) if std::env::var_os("STRATALOG_NO_URING").is_some() => {
            eprintln!("io_uring refused ({e}); STRATALOG_NO_URING is set, so NOT tested");
            None
        }
        Err(e) => panic!("the kernel refused io_uring: {e} (set STRATALOG_NO_URING=1 to skip)"),
    }
}

#[test]
fn the_log_round_trips_on_io_uring() {
    let Some(storage) = uring() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("u");
    let values: Vec<Vec<u8>> = (0..500u32)
        .map(|i| format!("value-{i}-{}", "x".repeat((i % 97) as usize)).into_bytes())
        .collect();
    {
        let log = Log::open(&dir, common::options(storage.clone(), FsyncPolicy::Always)).unwrap();
        for chunk in values.chunks(7) {
            let appended = log.append_records(chunk).unwrap();
            appended.receipt.wait().unwrap();
        }
        assert_eq!(common::values(&log).unwrap(), values);
        log.close().unwrap();
    }
    let log = Log::open(&dir, common::options(storage.clone(), FsyncPolicy::Always)).unwrap();
    assert_eq!(common::values(&log).unwrap(), values, "after reopen");
    drop(log);
    common::assert_sound(storage.as_ref(), &dir, "io_uring log");
    let segments = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("log".as_ref()))
        .count();
    assert!(segments > 3, "the test must roll segments, got {segments}");
    println!("io_uring: 500 records in {segments} segments written, reopened and verified");
}

#[test]
fn linked_write_and_fsync_writes_every_byte() {
    let Some(storage) = uring() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("f");
    let file = storage.open(&path, OpenMode::CreateNew).unwrap();
    // Sizes around page and ring boundaries, at unaligned positions.
    let mut expected = Vec::new();
    let mut pos = 0u64;
    for (i, len) in [1usize, 4095, 4096, 4097, 1 << 20, 3 * (1 << 20) + 17]
        .into_iter()
        .enumerate()
    {
        let buf: Vec<u8> = (0..len).map(|j| (j * 31 + i) as u8).collect();
        if i % 2 == 0 {
            file.write_and_sync(&buf, pos).unwrap();
        } else {
            file.write_at(&buf, pos).unwrap();
            file.sync().unwrap();
        }
        expected.extend_from_slice(&buf);
        pos += len as u64;
    }
    assert_eq!(file.len().unwrap(), pos);
    assert_eq!(std::fs::read(&path).unwrap(), expected);
    let mut back = vec![0u8; 100];
    file.read_at(&mut back, 4000).unwrap();
    assert_eq!(back, expected[4000..4100]);
    let map = file.map(pos).unwrap();
    assert_eq!(&map.bytes[..], &expected[..]);
}

#[test]
fn errors_come_back_typed_not_as_panics() {
    let Some(storage) = uring() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ro");
    std::fs::write(&path, b"x").unwrap();
    let file = storage.open(&path, OpenMode::Existing).unwrap();
    // A write far past any file size the kernel allows fails with EFBIG or EINVAL.
    let err = file.write_at(b"y", i64::MAX as u64).unwrap_err();
    assert!(err.raw_os_error().is_some(), "an OS error: {err}");
}

#[test]
fn the_engine_is_chosen_at_open() {
    let Some(_) = uring() else { return };
    let (_, engine) = real_storage(IoEngine::IoUring);
    assert_eq!(engine, IoEngine::IoUring);
    let (_, engine) = real_storage(IoEngine::Std);
    assert_eq!(engine, IoEngine::Std);
    assert_eq!("uring".parse::<IoEngine>().unwrap(), IoEngine::IoUring);
    assert!("aio".parse::<IoEngine>().is_err());
}
