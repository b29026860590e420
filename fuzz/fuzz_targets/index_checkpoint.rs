//! Index and checkpoint loading. A closed 3-segment log is loaded into the simulated storage
//! and one of its index files, its recovery checkpoint or its `log.meta` is replaced by (or
//! overwritten with) the fuzzer's bytes. Nothing may panic. A damaged offset or time index is
//! never trusted: the log opens and serves exactly the original records, and time lookups give
//! the original answers. A damaged checkpoint or meta file may make opening fail; if the log
//! opens, it serves a prefix of the original records and takes new appends.
//!
//! A quarantine file (garbage, or a real one with the fuzzer's bytes) is never read by open:
//! the log must serve the original records, and listing quarantine must not fail or panic.
//!
//! Input: byte 0 = which file (mod 8: sealed/active offset index, sealed/active time index,
//! checkpoint, meta, a quarantine file), byte 1 bit 0 = keep the file's first N bytes (N from byte 2) and write the
//! input after them; the rest = the bytes.
#![no_main]

#[path = "common.rs"]
mod common;

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use stratalog::Log;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let t = common::template();
    let dir = Path::new(common::DIR);
    let sealed = "00000000000000000000";
    let active = t
        .files
        .iter()
        .filter_map(|(p, _)| (p.extension()? == "log").then(|| p.file_stem().unwrap().to_owned()))
        .max()
        .unwrap();
    let active = active.to_str().unwrap();
    let (name, is_index) = match data[0] % 8 {
        0 => (format!("{sealed}.index"), true),
        1 => (format!("{active}.index"), true),
        2 => (format!("{sealed}.timeindex"), true),
        3 => (format!("{active}.timeindex"), true),
        4 | 5 => ("recovery.checkpoint".to_owned(), false),
        6 => ("log.meta".to_owned(), false),
        _ => ("00000000000000000005-000000.quarantine".to_owned(), false),
    };
    let is_quarantine = name.ends_with(".quarantine");
    let path = dir.join(&name);
    let empty = Vec::new();
    let original = t
        .files
        .iter()
        .find(|(p, _)| *p == path)
        .map_or(&empty, |(_, bytes)| bytes);
    let mut bytes = if data[1] & 1 != 0 {
        original[..usize::from(data[2]).min(original.len())].to_vec()
    } else {
        Vec::new()
    };
    bytes.extend_from_slice(&data[3..]);
    let sim = common::storage_with_template();
    sim.set_file(&path, bytes);
    let _ = stratalog::verify_dir(&sim, dir);
    let log = match Log::open(dir, common::options(&sim)) {
        Ok(log) => log,
        Err(e) => {
            assert!(
                !is_index && !is_quarantine,
                "a damaged {name} made opening fail: {e}"
            );
            return;
        }
    };
    // The quarantine decoder: listing never fails on a bad file (it is skipped), and a file
    // it accepts describes a sane range.
    for q in log.quarantine().expect("list quarantine") {
        assert!(q.offsets.start <= q.offsets.end, "{q:?}");
    }
    let values = common::read_all(&log);
    if is_index || is_quarantine {
        assert_eq!(values.as_ref(), Some(&t.values), "damaged {name}");
        for ts in [-1, 0, 3, 10, 19, 20] {
            let want = (0..20)
                .contains(&ts)
                .then(|| ts as u64 * 2)
                .or((ts < 0).then_some(0));
            assert_eq!(
                log.offset_for_timestamp(ts).unwrap(),
                want,
                "damaged {name}, ts {ts}"
            );
        }
    } else if let Some(values) = values {
        let start = log.start_offset() as usize;
        assert!(start <= t.values.len(), "start {start} past the end");
        assert!(
            t.values[start..].starts_with(&values),
            "damaged {name}: the log serves records that were never appended"
        );
    }
    common::check_writable(&sim, log);
});
