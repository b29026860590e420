//! Checks the "Store" section of docs/FORMAT.md against files the store really writes: the
//! registry (`stratalog.store`) is decoded by following the documented tables field by field,
//! and every value must be what was created; the consumer offset record is decoded the same
//! way from the offsets log. A field added, removed, resized or reordered in the code without
//! the doc (or the other way round) fails here.

use std::collections::HashMap;
use std::time::Duration;

use stratalog::{
    Compression, FsyncPolicy, Log, LogConfig, LogOptions, PartitionerKind, Store, StoreOptions,
    TopicConfig,
};

const DOC: &str = include_str!("../docs/FORMAT.md");

/// The rows of the `n`th table after `heading` (cells trimmed, header and separator dropped).
fn table(heading: &str, n: usize) -> Vec<Vec<String>> {
    let start = DOC
        .lines()
        .position(|l| l.trim() == heading)
        .unwrap_or_else(|| panic!("FORMAT.md has no heading {heading:?}"));
    let mut tables: Vec<Vec<Vec<String>>> = Vec::new();
    let mut current: Option<Vec<Vec<String>>> = None;
    for line in DOC.lines().skip(start + 1) {
        if line.starts_with("## ") || line.starts_with("### ") {
            break;
        }
        if line.starts_with('|') {
            let cells: Vec<String> = line
                .trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect();
            current.get_or_insert_with(Vec::new).push(cells);
        } else if let Some(t) = current.take() {
            tables.push(t);
        }
    }
    tables.extend(current);
    let t = tables
        .get(n)
        .unwrap_or_else(|| panic!("no table {n} under {heading:?}"));
    t[2..].to_vec()
}

/// Reads little-endian fields off a byte slice.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        assert!(
            self.pos + n <= self.bytes.len(),
            "field runs past the end at {}",
            self.pos
        );
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        out
    }

    /// One documented integer type.
    fn int(&mut self, ty: &str) -> i128 {
        let ty = ty.trim_matches('`');
        match ty {
            "u8" => i128::from(self.take(1)[0]),
            "u16" => i128::from(u16::from_le_bytes(self.take(2).try_into().unwrap())),
            "u32" => i128::from(u32::from_le_bytes(self.take(4).try_into().unwrap())),
            "u64" => i128::from(u64::from_le_bytes(self.take(8).try_into().unwrap())),
            "i64" => i128::from(i64::from_le_bytes(self.take(8).try_into().unwrap())),
            other => panic!("FORMAT.md uses a type this test does not know: {other:?}"),
        }
    }
}

/// Decodes one record of a "field | type | meaning" table; `n` bytes take the length read
/// just before, `x × y` repeats.
fn decode(
    rows: &[Vec<String>],
    r: &mut Reader<'_>,
    sub: &[Vec<String>],
) -> Vec<HashMap<String, i128>> {
    let mut fields = HashMap::new();
    let mut nested = Vec::new();
    let mut last = 0i128;
    for row in rows {
        let (field, ty) = (row[0].as_str(), row[1].as_str());
        if ty == "[u8; 16]" {
            let hex: String = r.take(16).iter().map(|b| format!("{b:02x}")).collect();
            fields.insert(format!("{field}:{hex}"), 16);
        } else if ty.ends_with("bytes") {
            let text = String::from_utf8(r.take(last as usize).to_vec()).expect("UTF-8");
            fields.insert(format!("{field}:{text}"), last);
        } else if ty.contains('×') {
            let count = fields[ty
                .split('×')
                .next()
                .unwrap()
                .trim()
                .trim_matches('`')
                .replace('v', "version_count")
                .as_str()];
            let elem = ty.split('×').nth(1).unwrap().trim();
            for _ in 0..count {
                if elem == "version" {
                    nested.extend(decode(sub, r, &[]));
                } else {
                    let v = r.int(elem);
                    fields.insert(format!("{field}[]"), v);
                }
            }
        } else {
            last = r.int(ty);
            fields.insert(field.to_string(), last);
        }
    }
    let mut out = vec![fields];
    out.extend(nested);
    out
}

#[test]
fn registry_matches_the_documented_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), StoreOptions::default()).unwrap();
    let config = TopicConfig {
        log: LogConfig {
            segment_bytes: 1 << 20,
            segment_ms: Some(60_000),
            retention_bytes: Some(123_456),
            retention_ms: None,
            index_interval_bytes: 8192,
            compression: Compression::Lz4,
        },
        fsync: FsyncPolicy::Interval(Duration::from_millis(7)),
    };
    store
        .create_topic("orders", 3, config, PartitionerKind::Ring { vnodes: 64 })
        .unwrap();
    let id = store.topic("orders").unwrap().id;
    let log = store.partition("orders", 1).unwrap();
    log.append_records(&["a", "b"])
        .unwrap()
        .receipt
        .wait()
        .unwrap();
    drop(log);
    store.add_partitions("orders", 5).unwrap();
    store.close().unwrap();

    let bytes = std::fs::read(tmp.path().join("stratalog.store")).unwrap();
    let header = table("### Store registry layout", 0);
    let mut h = HashMap::new();
    for row in &header {
        let (offset, size, field): (usize, usize, &str) =
            (row[0].parse().unwrap(), row[1].parse().unwrap(), &row[3]);
        let raw = &bytes[offset..offset + size];
        let value = match size {
            4 => i128::from(u32::from_le_bytes(raw.try_into().unwrap())),
            8 if row[2] == "u64" => i128::from(u64::from_le_bytes(raw.try_into().unwrap())),
            8 => {
                let magic = row[4].trim_matches('`').replace("\\0", "\0");
                assert_eq!(raw, magic.as_bytes(), "registry magic");
                0
            }
            _ => panic!("unexpected size {size}"),
        };
        h.insert(field.to_string(), value);
    }
    let header_len = header
        .iter()
        .map(|r| r[0].parse::<usize>().unwrap() + r[1].parse::<usize>().unwrap())
        .max()
        .unwrap();
    assert_eq!(header_len, 32, "the doc says the header is 32 bytes");
    assert_eq!(h["version"], 2);
    assert_eq!(h["topic_count"], 1);
    assert_eq!(h["body_len"] as usize, bytes.len() - 32);
    assert_eq!(h["body_crc"] as u32, crc32fast::hash(&bytes[32..]));
    assert_eq!(h["header_crc"] as u32, crc32fast::hash(&bytes[..28]));

    let entry = table("### Store registry topic entry", 0);
    let version = table("### Store registry topic entry", 1);
    let mut r = Reader {
        bytes: &bytes[32..],
        pos: 0,
    };
    let decoded = decode(&entry, &mut r, &version);
    assert_eq!(
        r.pos,
        bytes.len() - 32,
        "the entry accounts for every byte of the body"
    );
    let t = &decoded[0];
    assert!(t.contains_key("name:orders"), "{t:?}");
    assert!(t.contains_key(&format!("topic_id:{id}")), "{t:?}");
    assert_eq!(t["state"], 0);
    assert_eq!((t["fsync_kind"], t["fsync_value"]), (2, 7));
    assert_eq!(t["segment_bytes"], 1 << 20);
    assert_eq!(t["segment_ms"], 60_000);
    assert_eq!(t["retention_bytes"], 123_456);
    assert_eq!(t["retention_ms"], i128::from(u64::MAX));
    assert_eq!(t["index_interval_bytes"], 8192);
    assert_eq!(t["compression"], 1);
    assert_eq!(t["version_count"], 2);
    // The documented codes, read from the meaning column.
    let code = |rows: &[Vec<String>], field: &str, name: &str| -> i128 {
        let meaning = &rows.iter().find(|r| r[0] == field).unwrap()[2];
        let at = meaning
            .find(name)
            .unwrap_or_else(|| panic!("{field}: no {name:?} in {meaning:?}"));
        let digits: String = meaning[..at]
            .trim_end()
            .chars()
            .rev()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.chars().rev().collect::<String>().parse().unwrap()
    };
    assert_eq!(t["fsync_kind"], code(&entry, "fsync_kind", "`Interval`"));
    assert_eq!(t["compression"], code(&entry, "compression", "LZ4"));
    assert_eq!(decoded[1]["kind"], code(&version, "kind", "ring"));
    let (v1, v2) = (&decoded[1], &decoded[2]);
    assert_eq!(
        (v1["version"], v1["partitions"], v1["kind"], v1["vnodes"]),
        (1, 3, 3, 64)
    );
    assert_eq!((v2["version"], v2["partitions"], v2["kind"]), (2, 5, 3));
    assert_eq!((v1["start_count"], v2["start_count"]), (0, 3));
    assert!(v2["created_ms"] >= v1["created_ms"] && v1["created_ms"] > 0);
}

#[test]
fn consumer_offset_record_matches_the_documented_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), StoreOptions::default()).unwrap();
    store
        .create_topic("t", 2, TopicConfig::default(), PartitionerKind::Jump)
        .unwrap();
    let log = store.partition("t", 1).unwrap();
    log.append_records(&["x", "y", "z"])
        .unwrap()
        .receipt
        .wait()
        .unwrap();
    let epoch = log.leader_epoch();
    let id = store.topic("t").unwrap().id;
    drop(log);
    store.commit("billing", "t", 1, 2, epoch).unwrap();
    store.close().unwrap();

    let rows = table("### Consumer offset record", 0);
    let key_doc = &rows.iter().find(|r| r[0] == "key").unwrap()[1];
    let value_doc = &rows.iter().find(|r| r[0] == "value").unwrap()[1];
    assert!(
        key_doc.starts_with("u16 group_len, group (UTF-8), u16 topic_len, topic, u32 partition")
    );
    assert!(value_doc.contains("41 bytes"));
    assert!(value_doc.ends_with("[u8; 16] topic_id; 41 bytes"));

    let offsets = Log::open(
        tmp.path().join("__consumer_offsets"),
        LogOptions {
            create: false,
            ..Default::default()
        },
    )
    .unwrap();
    let batches = offsets.read(0, 1 << 20).unwrap();
    let record = batches[0].records().unwrap().next().unwrap().unwrap();
    let key = record.key.expect("a keyed record");
    let mut k = Reader {
        bytes: &key,
        pos: 0,
    };
    let group_len = k.int("u16") as usize;
    assert_eq!(k.take(group_len), b"billing");
    let topic_len = k.int("u16") as usize;
    assert_eq!(k.take(topic_len), b"t");
    assert_eq!(k.int("u32"), 1);
    assert_eq!(k.pos, key.len());
    assert_eq!(record.value.len(), 41);
    let mut v = Reader {
        bytes: &record.value,
        pos: 0,
    };
    assert_eq!(v.int("u8"), 2, "version");
    assert_eq!(v.int("u64"), 2, "offset");
    assert_eq!(v.int("u64"), i128::from(epoch), "leader_epoch");
    assert!(v.int("i64") > 0, "commit_ms");
    assert_eq!(v.take(16), id.0, "topic_id");
    assert_eq!(v.pos, record.value.len());
}
