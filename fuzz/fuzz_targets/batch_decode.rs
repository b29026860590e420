//! Batch decoding from arbitrary bytes: the header parser, `Batch::validate` and the segment
//! scanner that recovery and `verify` use. Nothing may panic; whatever is accepted must be
//! self-consistent (its length within the input, offsets that add up, positions that move on).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use stratalog::Batch;
use stratalog::format::{BATCH_HEADER_LEN, BatchHeader, crc_of};
use stratalog::log::BatchScan;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = BatchHeader::parse(data) {
        assert!(header.record_count.get() >= 1);
        assert!(header.last_offset() >= header.base_offset.get());
    }
    if let Ok(batch) = Batch::validate(Bytes::copy_from_slice(data)) {
        assert!(batch.len() > BATCH_HEADER_LEN && batch.len() <= data.len());
        assert_eq!(batch.as_bytes()[..], data[..batch.len()]);
        assert_eq!(crc_of(batch.as_bytes()), batch.header().crc.get());
        // Records are checked separately (the `records` target); here only: no panic.
        if let Ok(records) = batch.records() {
            for record in records.take(1 << 16) {
                if let Ok(r) = record {
                    assert!(r.offset >= batch.base_offset() && r.offset <= batch.last_offset());
                }
            }
        }
    }
    // The same bytes as a segment body: every position the scanner reports moves forward and
    // every batch it accepts lies inside the scanned range.
    let bytes = Bytes::copy_from_slice(data);
    let mut last_end = 0u64;
    for (pos, batch) in BatchScan::new(bytes, 0, data.len() as u64) {
        assert_eq!(pos, last_end, "the scan skipped bytes");
        match batch {
            Ok(b) => {
                last_end = pos + b.len() as u64;
                assert!(last_end <= data.len() as u64);
            }
            Err(_) => break,
        }
    }
});
