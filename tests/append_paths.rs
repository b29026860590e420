//! The append paths that write without copying (issue 15): a builder's records written behind
//! their header with one `pwritev`, borrowed values framed in a reused buffer, and a producer's
//! batch re-stamped with its payload borrowed. Each must put on disk exactly the bytes that
//! `BatchBuilder::encode` + `EncodedBatch::stamp` make (docs/FORMAT.md), in the CRC's two
//! regimes (payloads hashed again under the lock, and large ones whose CRC is combined).

use std::path::Path;

use stratalog::format::{
    BATCH_HEADER_LEN, Batch, BatchBuilder, BatchHeader, Compression, FILE_HEADER_LEN, SegmentFile,
    segment_file_name,
};
use stratalog::storage::{FsStorage, OpenMode, Storage};
use stratalog::{FsyncPolicy, Log, LogOptions};

fn values(n: usize, len: usize, seed: u8) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            (0..len)
                .map(|j| (i * 31 + j * 7) as u8 ^ seed)
                .collect::<Vec<u8>>()
        })
        .collect()
}

fn builder(values: &[Vec<u8>], ts: i64, compression: Compression) -> BatchBuilder {
    let mut b = BatchBuilder::new(compression);
    for v in values {
        b.push_value(ts, v).unwrap();
    }
    b
}

/// The bytes `encode` + `stamp` give for `b` at `base` in `epoch`.
fn encoded(b: &BatchBuilder, epoch: u64, base: u64) -> Vec<u8> {
    let mut e = b.encode(epoch).unwrap();
    e.stamp(base);
    e.as_bytes().to_vec()
}

/// The batches of the first segment's file, as stored, in order.
fn stored_batches(dir: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(dir.join(segment_file_name(0, SegmentFile::Log))).unwrap();
    let mut at = FILE_HEADER_LEN;
    let mut out = Vec::new();
    while at + BATCH_HEADER_LEN <= bytes.len() {
        let Ok(h) = BatchHeader::parse(&bytes[at..]) else {
            break; // preallocated zeros
        };
        let len = h.length.get() as usize;
        out.push(bytes[at..at + len].to_vec());
        at += len;
    }
    out
}

#[test]
fn every_append_path_writes_the_bytes_encode_makes() {
    let tmp = tempfile::tempdir().unwrap();
    let options = LogOptions {
        fsync: FsyncPolicy::Never,
        ..Default::default()
    };
    let log = Log::open(tmp.path(), options).unwrap();
    log.set_leader_epoch(3).unwrap();
    let epoch = log.leader_epoch();

    // Uncompressed builders (written in two pieces): a small payload, hashed again under the
    // lock, and a large one (> 16 KiB) whose CRC is combined.
    let small = builder(&values(1, 1024, 1), 1_000, Compression::None);
    let large = builder(&values(64, 1024, 2), 2_000, Compression::None);
    let compressed = builder(&values(8, 512, 3), 3_000, Compression::Lz4);
    let mut expected = Vec::new();
    let mut base = 0;
    for b in [&small, &large, &compressed] {
        let appended = log.append(b).unwrap();
        assert_eq!(appended.base_offset, base);
        expected.push(Some(encoded(b, epoch, base)));
        base += b.len() as u64;
    }

    // Borrowed values: the timestamp is the log's clock, checked against the stored header.
    let vals = values(5, 300, 4);
    let appended = log.append_values(vals.iter().map(Vec::as_slice)).unwrap();
    assert_eq!(
        (appended.base_offset, appended.last_offset),
        (base, base + 4)
    );
    expected.push(None);
    let values_base = base;
    base += 5;

    // Producers' batches, encoded in another epoch at other offsets: kept byte for byte, given
    // this log's offsets and epoch. Small and large payloads again.
    for (b, their_base) in [(&small, 900), (&large, 77_000)] {
        let theirs = Batch::validate(encoded(b, 1, their_base).into()).unwrap();
        let appended = log.append_batch(&theirs).unwrap();
        assert_eq!(appended.base_offset, base);
        expected.push(Some(encoded(b, epoch, base)));
        base += b.len() as u64;
    }
    assert_eq!(log.end_offset(), base);
    log.close().unwrap();

    let stored = stored_batches(tmp.path());
    assert_eq!(stored.len(), expected.len());
    for (i, (got, want)) in stored.iter().zip(&expected).enumerate() {
        match want {
            Some(want) => assert!(got == want, "batch {i} differs from encode's bytes"),
            None => {
                let ts = BatchHeader::parse(got).unwrap().first_timestamp.get();
                let want = encoded(&builder(&vals, ts, Compression::None), epoch, values_base);
                assert!(
                    *got == want,
                    "append_values' batch differs from encode's bytes"
                );
            }
        }
    }

    // And the log reads every record back after a reopen (CRCs checked).
    let log = Log::open(tmp.path(), LogOptions::default()).unwrap();
    assert_eq!(log.read_one(values_base + 4).unwrap().value, &vals[4][..]);
    assert_eq!(
        log.read_one(base - 1).unwrap().value,
        &values(64, 1024, 2)[63][..]
    );
}

#[test]
fn a_vectored_write_of_more_pieces_than_one_call_takes_writes_them_all() {
    // More pieces than the kernel's IOV_MAX (1024), of uneven sizes, some empty: the write goes
    // in turns and must resume exactly where the previous call stopped.
    let pieces: Vec<Vec<u8>> = (0..3000usize)
        .map(|i| vec![(i % 251) as u8; (i * 37) % 300])
        .collect();
    let slices: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("f");
    let file = FsStorage.open(&path, OpenMode::CreateNew).unwrap();
    file.write_at(b"0123456789", 0).unwrap();
    file.write_vectored_at(&slices, 7).unwrap();
    let mut want = b"0123456".to_vec();
    want.extend(pieces.concat());
    assert!(std::fs::read(&path).unwrap() == want);
}

#[test]
fn borrowed_values_that_do_not_fit_are_refused_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Log::open(tmp.path(), LogOptions::default()).unwrap();
    assert!(log.append_values(std::iter::empty()).is_err());
    // An empty value is a record; a refused call leaves the reused buffer clean for the next.
    let appended = log.append_values([&b""[..], &b"x"[..]]).unwrap();
    appended.receipt.wait().unwrap();
    assert_eq!(log.end_offset(), 2);
    assert_eq!(log.read_one(1).unwrap().value, &b"x"[..]);
}

/// Index entries reach their files in runs (issue 15): a crash image taken while some are
/// still only in memory must reopen and serve every record, by offset and by time, and a
/// clean close must leave every entry in the files.
#[test]
fn index_entries_held_in_memory_are_not_needed_after_a_crash_and_all_written_at_close() {
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("live");
    let config = stratalog::LogConfig {
        index_interval_bytes: 256,
        ..Default::default()
    };
    let options = LogOptions {
        config,
        fsync: FsyncPolicy::Never,
        ..Default::default()
    };
    let log = Log::open(&live, options.clone()).unwrap();
    let vals = values(1000, 200, 5);
    for (i, v) in vals.iter().enumerate() {
        let mut b = BatchBuilder::new(Compression::None);
        b.push_value(10_000 + i as i64, v).unwrap();
        log.append(&b).unwrap();
    }
    // The crash image: the files as they are now, the log still open.
    let image = tmp.path().join("image");
    std::fs::create_dir(&image).unwrap();
    for entry in std::fs::read_dir(&live).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), image.join(entry.file_name())).unwrap();
        }
    }
    let index_name = segment_file_name(0, SegmentFile::OffsetIndex);
    let in_image = std::fs::metadata(image.join(&index_name)).unwrap().len();
    log.close().unwrap();
    let at_close = std::fs::metadata(live.join(&index_name)).unwrap().len();
    // Each ~264-byte batch after the first 256 bytes gets an entry: about 1000 of them.
    assert!(
        at_close >= (FILE_HEADER_LEN + 900 * 8) as u64,
        "every entry is in the file after close ({at_close} bytes)"
    );
    assert!(in_image <= at_close);

    for dir in [&image, &live] {
        let log = Log::open(dir, options.clone()).unwrap();
        assert_eq!(log.end_offset(), 1000);
        for (i, v) in vals.iter().enumerate() {
            assert_eq!(
                log.read_one(i as u64).unwrap().value,
                &v[..],
                "{}",
                dir.display()
            );
        }
        assert_eq!(log.offset_for_timestamp(10_500).unwrap(), Some(500));
        log.close().unwrap();
    }
}
