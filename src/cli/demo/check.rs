//! The demo's checks, as pure functions over what was collected, so that each one can be
//! shown to fail on crafted inputs (the unit tests below) without a debug flag in the demo.

use std::collections::HashSet;

use bytes::Bytes;

/// Length of every value the demo produces: `P:SEQ:DIGEST:` padded with `.`.
pub const VALUE_LEN: usize = 100;

/// A record as produced: its key and value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// FNV-1a over `parts` (a digest that a flipped byte changes; not a cryptographic one).
fn digest(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so that ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The value producer `producer` sends as its record number `seq` under `key`: the producer,
/// the sequence number, a digest of the three and padding, `VALUE_LEN` bytes in all.
pub fn record_value(key: &[u8], producer: u32, seq: u64) -> Vec<u8> {
    let head = format!("{producer}:{seq}");
    let d = digest(&[key, head.as_bytes()]);
    let mut v = format!("{head}:{d:016x}:").into_bytes();
    v.resize(VALUE_LEN, b'.');
    v
}

/// Checks a record read back: it has a key, its value is one [`record_value`] makes for that
/// key (digest and padding included). Returns `(producer, seq)`, or what is wrong.
pub fn check_record(key: Option<&[u8]>, value: &[u8]) -> Result<(u32, u64), String> {
    let key = key.ok_or("the record has no key")?;
    let text = std::str::from_utf8(value).map_err(|_| "the value is not text".to_string())?;
    let mut fields = text.splitn(4, ':');
    let (Some(p), Some(s), Some(_), Some(_)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(format!("the value {text:?} has not the demo's layout"));
    };
    let (Ok(producer), Ok(seq)) = (p.parse::<u32>(), s.parse::<u64>()) else {
        return Err(format!("the value {text:?} has not the demo's layout"));
    };
    if record_value(key, producer, seq) != value {
        return Err(format!(
            "the value {text:?} does not match its key {:?} (digest or padding differs)",
            String::from_utf8_lossy(key)
        ));
    }
    Ok((producer, seq))
}

/// What [`missing`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// Records of `acked` that were looked for.
    pub checked: u64,
    /// How many of them are not in the set.
    pub missing: u64,
    /// The first one missing, for the report.
    pub example: Option<KeyValue>,
}

/// Which acknowledged records (key and value) are not in `found`.
pub fn missing(acked: &[KeyValue], found: &HashSet<KeyValue>) -> Missing {
    let mut out = Missing {
        checked: acked.len() as u64,
        missing: 0,
        example: None,
    };
    for kv in acked {
        if !found.contains(kv) {
            out.missing += 1;
            if out.example.is_none() {
                out.example = Some(kv.clone());
            }
        }
    }
    out
}

/// One batch of a log as stored: its offsets and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBatch {
    /// First offset.
    pub base: u64,
    /// Last offset.
    pub last: u64,
    /// The batch's bytes, as in the segment file.
    pub bytes: Bytes,
}

/// Compares two copies of a log below `upto` (every batch ending below it): the same
/// batches, at the same offsets, byte for byte, and neither stops short of `upto`.
/// Returns the bytes compared, or where they first differ.
pub fn compare_logs(
    reference: &[StoredBatch],
    copy: &[StoredBatch],
    upto: u64,
) -> Result<u64, String> {
    let below = |batches: &[StoredBatch]| -> Vec<StoredBatch> {
        batches.iter().filter(|b| b.last < upto).cloned().collect()
    };
    let (a, b) = (below(reference), below(copy));
    let mut bytes = 0u64;
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        if (x.base, x.last) != (y.base, y.last) {
            return Err(format!(
                "batch {i} holds offsets {}..={} in the reference, {}..={} in the copy",
                x.base, x.last, y.base, y.last
            ));
        }
        if x.bytes != y.bytes {
            let at = x
                .bytes
                .iter()
                .zip(y.bytes.iter())
                .position(|(p, q)| p != q)
                .unwrap_or(x.bytes.len().min(y.bytes.len()));
            return Err(format!(
                "the batch at offset {} differs at byte {at} ({} and {} bytes long)",
                x.base,
                x.bytes.len(),
                y.bytes.len()
            ));
        }
        bytes += x.bytes.len() as u64;
    }
    if a.len() != b.len() {
        let (longer, which) = if a.len() > b.len() {
            (&a, "the copy lacks")
        } else {
            (&b, "the copy has more:")
        };
        let first = &longer[a.len().min(b.len())];
        return Err(format!(
            "{which} the batch at offset {} (below {upto})",
            first.base
        ));
    }
    let end = a.last().map_or(0, |x| x.last + 1);
    if end < upto {
        return Err(format!(
            "both copies end at offset {end}, below the {upto} they must hold"
        ));
    }
    Ok(bytes)
}

/// The `q`-quantile (0..=1) of `sorted` (ascending), by the nearest rank; 0 when empty.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_and_any_flipped_byte_is_corrupt() {
        let v = record_value(b"user-7", 2, 41);
        assert_eq!(v.len(), VALUE_LEN);
        assert_eq!(check_record(Some(b"user-7"), &v), Ok((2, 41)));
        for i in 0..v.len() {
            let mut bad = v.clone();
            bad[i] ^= 0x01;
            assert!(
                check_record(Some(b"user-7"), &bad).is_err(),
                "a flip of byte {i} went unnoticed"
            );
        }
        // The right value under another key, no key, a short value, garbage.
        assert!(check_record(Some(b"user-8"), &v).is_err());
        assert!(check_record(None, &v).is_err());
        assert!(check_record(Some(b"user-7"), &v[..50]).is_err());
        assert!(check_record(Some(b"user-7"), b"\xff\xfe").is_err());
    }

    #[test]
    fn an_acknowledged_record_not_found_is_missing() {
        let acked: Vec<KeyValue> = (0..5)
            .map(|i| (b"k".to_vec(), record_value(b"k", 0, i)))
            .collect();
        let mut found: HashSet<KeyValue> = acked.iter().cloned().collect();
        let all = missing(&acked, &found);
        assert_eq!((all.checked, all.missing, all.example), (5, 0, None));
        found.remove(&acked[3]);
        // A record with the same value under another key does not count.
        found.insert((b"other".to_vec(), acked[3].1.clone()));
        let m = missing(&acked, &found);
        assert_eq!((m.checked, m.missing), (5, 1));
        assert_eq!(m.example.as_ref(), Some(&acked[3]));
    }

    fn batch(base: u64, last: u64, fill: u8) -> StoredBatch {
        StoredBatch {
            base,
            last,
            bytes: Bytes::from(vec![fill; 16]),
        }
    }

    #[test]
    fn identical_logs_compare_equal_up_to_the_watermark() {
        let a = vec![batch(0, 9, 1), batch(10, 19, 2), batch(20, 29, 3)];
        // The copy may hold more past `upto` (a follower's unreplicated tail).
        let mut b = a.clone();
        b.push(batch(30, 31, 9));
        assert_eq!(compare_logs(&a, &b, 20), Ok(32));
        assert_eq!(compare_logs(&a, &a, 30), Ok(48));
        assert_eq!(compare_logs(&[], &[], 0), Ok(0));
    }

    #[test]
    fn a_differing_byte_a_missing_batch_or_a_short_log_fails() {
        let a = vec![batch(0, 9, 1), batch(10, 19, 2)];
        let mut flipped = a.clone();
        let mut bytes = flipped[1].bytes.to_vec();
        bytes[7] ^= 0x40;
        flipped[1].bytes = Bytes::from(bytes);
        let e = compare_logs(&a, &flipped, 20).unwrap_err();
        assert!(e.contains("offset 10 differs at byte 7"), "{e}");
        // A batch missing in the copy, or one too many.
        assert!(compare_logs(&a, &a[..1], 20).is_err());
        assert!(compare_logs(&a[..1], &a, 20).is_err());
        // Other offsets for the same bytes.
        let shifted = vec![batch(0, 9, 1), batch(11, 19, 2)];
        assert!(compare_logs(&a, &shifted, 20).is_err());
        // Both equal, but short of the watermark they must reach.
        let e = compare_logs(&a, &a, 25).unwrap_err();
        assert!(e.contains("end at offset 20"), "{e}");
        assert!(compare_logs(&[], &[], 5).is_err());
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(quantile(&v, 0.5), 500);
        assert_eq!(quantile(&v, 0.99), 990);
        assert_eq!(quantile(&v, 0.999), 999);
        assert_eq!(quantile(&v, 1.0), 1000);
        assert_eq!(quantile(&[7], 0.999), 7);
        assert_eq!(quantile(&[], 0.5), 0);
    }
}
