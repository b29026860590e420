//! Record iteration, plain and LZ4. The fuzzer's bytes become the records section of a batch
//! whose header and CRC are valid, so every input reaches the record decoder (and, with LZ4,
//! the decompressor) instead of stopping at the CRC check.
//!
//! Input: byte 0 = mode (bit 0: LZ4-compress the section, so the fuzzer explores records behind
//! valid LZ4; bit 1: the section is used as a raw LZ4 block, to fuzz the decompressor), bytes
//! 1..3 = record count, bytes 3..7 = the claimed uncompressed length (raw LZ4 only), the rest =
//! the section. A section that decodes completely must re-encode to the same bytes, and
//! `Batch::for_each_record` must visit exactly the records the iterator yields.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use stratalog::format::{BATCH_HEADER_LEN, BATCH_MAGIC, BATCH_VERSION, Record, crc_of};
use stratalog::{Batch, BatchBuilder, Compression};

/// A batch of `count` records whose stored section is `section` (LZ4 if `lz4`), with a valid
/// header and CRC.
fn batch_bytes(section: &[u8], lz4: bool, records_len: u32, count: u32) -> Vec<u8> {
    let length = (BATCH_HEADER_LEN + section.len()) as u32;
    let mut b = Vec::with_capacity(length as usize);
    b.extend_from_slice(&0u32.to_le_bytes()); // crc, set below
    b.extend_from_slice(&BATCH_MAGIC.to_le_bytes());
    b.extend_from_slice(&BATCH_VERSION.to_le_bytes());
    b.extend_from_slice(&u16::from(lz4).to_le_bytes());
    b.extend_from_slice(&length.to_le_bytes());
    b.extend_from_slice(&7u64.to_le_bytes()); // base offset
    b.extend_from_slice(&3u64.to_le_bytes()); // leader epoch
    b.extend_from_slice(&0i64.to_le_bytes()); // first timestamp
    b.extend_from_slice(&0i64.to_le_bytes()); // max timestamp
    b.extend_from_slice(&count.to_le_bytes());
    b.extend_from_slice(&records_len.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes()); // reserved
    assert_eq!(b.len(), BATCH_HEADER_LEN);
    b.extend_from_slice(section);
    let crc = crc_of(&b);
    b[..4].copy_from_slice(&crc.to_le_bytes());
    b
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 7 {
        return;
    }
    let mode = data[0];
    let count = u32::from(u16::from_le_bytes([data[1], data[2]])).max(1);
    let claimed = u32::from_le_bytes([data[3], data[4], data[5], data[6]]) % (1 << 20);
    let section = &data[7..];
    let (stored, lz4, records_len) = if mode & 2 != 0 {
        (section.to_vec(), true, claimed)
    } else if mode & 1 != 0 {
        (lz4_compress(section), true, section.len() as u32)
    } else {
        (section.to_vec(), false, section.len() as u32)
    };
    let bytes = batch_bytes(&stored, lz4, records_len, count);
    let Ok(batch) = Batch::validate(Bytes::from(bytes)) else {
        return; // a header bound (count vs. length, minimum sizes): not the subject here
    };
    let Ok(records) = batch.records() else { return };
    let mut decoded = Vec::new();
    let mut failed = false;
    for r in records {
        match r {
            Ok(r) => decoded.push(r),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(decoded.len() <= count as usize);
    // The borrowed visitor sees the same records and fails where the iterator fails.
    let mut visited = 0;
    let visit = batch.for_each_record(|r| {
        let d = &decoded[visited];
        assert_eq!((r.offset, r.timestamp, r.key, r.value), (d.offset, d.timestamp, d.key.as_deref(), &d.value[..]));
        assert!(r.headers().eq(d.headers.iter().map(|h| (&h.name[..], &h.value[..]))));
        visited += 1;
        Ok::<(), stratalog::FormatError>(())
    });
    assert_eq!((visited, visit.is_err()), (decoded.len(), failed));
    if failed {
        return;
    }
    // Everything decoded: exactly `count` records, and encoding them again gives the section.
    assert_eq!(decoded.len(), count as usize);
    let mut builder = BatchBuilder::new(Compression::None);
    for (i, r) in decoded.iter().enumerate() {
        assert_eq!(r.offset, 7 + i as u64);
        let headers: Vec<(&[u8], &[u8])> = r
            .headers
            .iter()
            .map(|h| (&h.name[..], &h.value[..]))
            .collect();
        builder
            .push(&Record {
                timestamp: r.timestamp,
                key: r.key.as_deref(),
                value: &r.value,
                headers: &headers,
            })
            .expect("a decoded record encodes");
    }
    let encoded = builder.encode(0).expect("encode");
    let plain = if lz4 {
        lz4_decompress(&stored, records_len as usize)
    } else {
        stored.clone()
    };
    assert_eq!(&encoded.as_bytes()[BATCH_HEADER_LEN..], &plain[..]);
});

/// The same LZ4 block format the engine writes (`lz4_flex`, as in the engine).
fn lz4_compress(section: &[u8]) -> Vec<u8> {
    lz4_flex::block::compress(section)
}

fn lz4_decompress(stored: &[u8], len: usize) -> Vec<u8> {
    lz4_flex::block::decompress(stored, len).expect("the batch decompressed it already")
}
