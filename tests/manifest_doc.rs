//! Checks that docs/DR.md's MANIFEST byte map and the code agree (as tests/format_doc.rs does
//! for docs/FORMAT.md): each struct table's rows (offset, size, type, field) against
//! `offset_of!`, the field's size and type, that the rows cover the struct with no gap and
//! that the heading's size is the struct's; the `how` table against `FileCopy`; the constants
//! table against the code; and an encoded MANIFEST read back at the documented offsets.

use std::mem::{offset_of, size_of};

use stratalog::format::{
    FileCopy, MANIFEST_CRC_LEN, MANIFEST_FILE_LEN, MANIFEST_HEADER_LEN, MANIFEST_MAGIC,
    MANIFEST_NAME, MANIFEST_PARTITION_LEN, MANIFEST_VERSION, MAX_MANIFEST_ENTRIES,
    MAX_MANIFEST_PATH, Manifest, ManifestFile, ManifestFileEntry, ManifestHeader,
    ManifestPartition, ManifestPartitionEntry,
};

const DOC: &str = include_str!("../docs/DR.md");

/// The rows of the first table under the level-3 heading that starts with `prefix`, and the
/// heading.
fn table(prefix: &str) -> (String, Vec<Vec<String>>) {
    let mut lines = DOC.lines();
    let heading = lines
        .by_ref()
        .find(|l| {
            l.strip_prefix("### ")
                .is_some_and(|h| h.starts_with(prefix))
        })
        .unwrap_or_else(|| panic!("docs/DR.md has no `### {prefix}` heading"))
        .to_string();
    let rows: Vec<Vec<String>> = lines
        .skip_while(|l| !l.trim_start().starts_with('|'))
        .take_while(|l| l.trim_start().starts_with('|'))
        .map(|l| {
            let l = l.trim().trim_start_matches('|').trim_end_matches('|');
            l.split('|').map(|c| c.trim().replace('`', "")).collect()
        })
        .collect();
    assert!(rows.len() > 2, "no table under {heading}");
    // Header row and separator.
    (heading, rows[2..].to_vec())
}

/// (field, offset, size, type) as the code has them.
type Field = (&'static str, usize, usize, &'static str);

fn check_struct(name: &str, size: usize, fields: &[Field]) {
    let (heading, rows) = table(&format!("`{name}`"));
    assert!(
        heading.contains(&format!("({size} bytes)")),
        "{heading}: the struct has {size} bytes"
    );
    assert_eq!(rows.len(), fields.len(), "{name}: rows vs fields");
    let mut next = 0;
    for (row, &(field, offset, len, ty)) in rows.iter().zip(fields) {
        let doc = (
            row[0].parse::<usize>().unwrap(),
            row[1].parse::<usize>().unwrap(),
            row[2].as_str(),
            row[3].as_str(),
        );
        assert_eq!(doc, (offset, len, ty, field), "{name}.{field}");
        assert_eq!(offset, next, "{name}: gap or overlap before {field}");
        next = offset + len;
    }
    assert_eq!(next, size, "{name}: the rows do not cover the struct");
}

macro_rules! field {
    ($t:ty, $f:ident, $len:expr, $ty:expr) => {
        (stringify!($f), offset_of!($t, $f), $len, $ty)
    };
}

#[test]
fn struct_tables_match_the_code() {
    check_struct(
        "ManifestHeader",
        size_of::<ManifestHeader>(),
        &[
            field!(ManifestHeader, magic, 8, "[u8; 8]"),
            field!(ManifestHeader, version, 4, "u32"),
            field!(ManifestHeader, flags, 4, "u32"),
            field!(ManifestHeader, snapshot_id, 8, "u64"),
            field!(ManifestHeader, created_ms, 8, "i64"),
            field!(ManifestHeader, partition_count, 4, "u32"),
            field!(ManifestHeader, file_count, 4, "u32"),
        ],
    );
    check_struct(
        "ManifestPartitionEntry",
        size_of::<ManifestPartitionEntry>(),
        &[
            field!(ManifestPartitionEntry, start_offset, 8, "u64"),
            field!(ManifestPartitionEntry, end_offset, 8, "u64"),
            field!(ManifestPartitionEntry, leader_epoch, 8, "u64"),
            field!(ManifestPartitionEntry, dir_len, 2, "u16"),
        ],
    );
    check_struct(
        "ManifestFileEntry",
        size_of::<ManifestFileEntry>(),
        &[
            field!(ManifestFileEntry, len, 8, "u64"),
            field!(ManifestFileEntry, crc32c, 4, "u32"),
            field!(ManifestFileEntry, how, 1, "u8"),
            field!(ManifestFileEntry, reserved, 1, "u8"),
            field!(ManifestFileEntry, path_len, 2, "u16"),
        ],
    );
}

#[test]
fn how_table_matches_file_copy() {
    let (_, rows) = table("`how`");
    let all = [
        FileCopy::Linked,
        FileCopy::Copied,
        FileCopy::Cut,
        FileCopy::Written,
    ];
    assert_eq!(rows.len(), all.len());
    for (row, how) in rows.iter().zip(all) {
        assert_eq!(row[0].parse::<u8>().unwrap(), how as u8, "{row:?}");
        assert_eq!(row[1], format!("{how:?}"));
        assert_eq!(FileCopy::from_byte(how as u8), Some(how));
    }
    assert_eq!(
        FileCopy::from_byte(all.len() as u8),
        None,
        "a value the doc does not list"
    );
}

#[test]
fn constants_table_matches_the_code() {
    let (_, rows) = table("Constants");
    let code: Vec<(&str, String)> = vec![
        (
            "MANIFEST_MAGIC",
            String::from_utf8_lossy(&MANIFEST_MAGIC).replace('\0', "\\0"),
        ),
        ("MANIFEST_VERSION", MANIFEST_VERSION.to_string()),
        ("MANIFEST_HEADER_LEN", MANIFEST_HEADER_LEN.to_string()),
        ("MANIFEST_PARTITION_LEN", MANIFEST_PARTITION_LEN.to_string()),
        ("MANIFEST_FILE_LEN", MANIFEST_FILE_LEN.to_string()),
        ("MANIFEST_CRC_LEN", MANIFEST_CRC_LEN.to_string()),
        ("MAX_MANIFEST_PATH", MAX_MANIFEST_PATH.to_string()),
        ("MAX_MANIFEST_ENTRIES", MAX_MANIFEST_ENTRIES.to_string()),
        ("MANIFEST_NAME", MANIFEST_NAME.to_string()),
    ];
    let doc: Vec<(&str, String)> = rows.iter().map(|r| (r[0].as_str(), r[1].clone())).collect();
    assert_eq!(doc, code);
}

#[test]
fn an_encoded_manifest_reads_back_at_the_documented_offsets() {
    let m = Manifest {
        snapshot_id: 0x1122_3344_5566_7788,
        created_ms: -5,
        partitions: vec![ManifestPartition {
            dir: "orders/3".into(),
            start_offset: 7,
            end_offset: 99,
            leader_epoch: 4,
        }],
        files: vec![ManifestFile {
            path: "orders/3/log.meta".into(),
            len: 96,
            crc32c: 0xabcd_ef01,
            how: FileCopy::Cut,
        }],
    };
    let b = m.encode();
    let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let u16_at = |at: usize| u16::from_le_bytes(b[at..at + 2].try_into().unwrap());
    // Header.
    assert_eq!(&b[0..8], b"STRASNP\0");
    assert_eq!((u32_at(8), u32_at(12)), (1, 0));
    assert_eq!(u64_at(16), m.snapshot_id);
    assert_eq!(u64_at(24) as i64, -5);
    assert_eq!((u32_at(32), u32_at(36)), (1, 1));
    // Partition entry, then its directory.
    let p = 40;
    assert_eq!(
        (u64_at(p), u64_at(p + 8), u64_at(p + 16), u16_at(p + 24)),
        (7, 99, 4, 8)
    );
    assert_eq!(&b[p + 26..p + 34], b"orders/3");
    // File entry, then its path.
    let f = p + 34;
    assert_eq!(
        (
            u64_at(f),
            u32_at(f + 8),
            b[f + 12],
            b[f + 13],
            u16_at(f + 14)
        ),
        (96, 0xabcd_ef01, 2, 0, 17)
    );
    assert_eq!(&b[f + 16..f + 33], b"orders/3/log.meta");
    // The CRC-32C of everything before it, and nothing after.
    let end = f + 33;
    assert_eq!(b.len(), end + 4);
    assert_eq!(u32_at(end), crc32c_of(&b[..end]));
}

/// CRC-32C (Castagnoli), bitwise: independent of the crate the code uses.
fn crc32c_of(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
