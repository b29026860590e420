//! Segment recovery from arbitrary bytes. A closed 3-segment log is loaded into the simulated
//! storage, one segment file is replaced or overwritten with the fuzzer's bytes, then `verify`
//! runs and the log is opened (which recovers it). Nothing may panic. If the log opens: reads
//! return ordered batches inside the log's range, and the log takes an append, serves it,
//! closes and reopens clean.
//!
//! Input: byte 0 = mode (bits 0-1: which segment, 0/1 sealed, 2/3 the active one; bit 2: keep
//! the file's first N bytes and write the input after them, N from bytes 1..3; bit 3: remove
//! the recovery checkpoint, so the whole active segment is scanned), the rest = the bytes.
#![no_main]

#[path = "common.rs"]
mod common;

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use stratalog::Log;
use stratalog::storage::Storage;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let mode = data[0];
    let keep = usize::from(u16::from_le_bytes([data[1], data[2]]));
    let body = &data[3..];
    let t = common::template();
    let sim = common::storage_with_template();
    let segments: Vec<_> = t
        .files
        .iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "log"))
        .collect();
    let (path, original) = segments[usize::from(mode & 3).min(segments.len() - 1)];
    let mut bytes = if mode & 4 != 0 {
        original[..keep.min(original.len())].to_vec()
    } else {
        Vec::new()
    };
    bytes.extend_from_slice(body);
    sim.set_file(path, bytes);
    if mode & 8 != 0 {
        let checkpoint = Path::new(common::DIR).join("recovery.checkpoint");
        let _ = sim.remove(&checkpoint);
    }
    let _ = stratalog::verify_dir(&sim, Path::new(common::DIR));
    let Ok(log) = Log::open(common::DIR, common::options(&sim)) else {
        return;
    };
    let _ = common::read_all(&log);
    common::check_writable(&sim, log);
});
