//! Checks that `docs/FORMAT.md` and the code agree, so that the byte map cannot drift from the
//! bytes the code writes.
//!
//! What is checked:
//! - every struct table (a level-3 heading of the form ``### `Name` (N bytes)``, then a table with
//!   the columns `offset | size | type | field | meaning`): each row's offset, size and type
//!   against `offset_of!` and the field's type, that the rows cover the struct exactly (no gap,
//!   no overlap, nothing missing), and that `N` is the struct's size;
//! - the `### Constants` table against the code's constants (values and bytes on disk);
//! - the record tables, by encoding records with `BatchBuilder` and reading the bytes at the
//!   documented offsets;
//! - the hex examples, byte for byte, against what the code encodes;
//! - the file tables (`### File ...`), the directory layout, the checkpoint slots and the sparse
//!   index rule, against a log written by `stratalog::Log`.
//!
//! If this test fails after a change to the format, update `docs/FORMAT.md` (and read its
//! "Adding a format version" section). `cargo test --test format_doc -- --ignored --nocapture
//! print_examples` prints the hex examples as the code encodes them today.

use std::collections::{BTreeMap, BTreeSet};
use std::mem::{offset_of, size_of};
use std::path::Path;

use stratalog::format::{
    BATCH_HEADER_LEN, BATCH_MAGIC, BATCH_VERSION, BatchBuilder, BatchHeader, CHECKPOINT_MAGIC,
    CheckpointSlot, Compression, EpochEntry, EpochFileHeader, FILE_HEADER_LEN, FILE_VERSION,
    FileHeader, FileKind, MAX_BATCH_BYTES, MAX_RECORDS_BYTES, META_MAGIC, MetaBody,
    OFFSET_INDEX_MAGIC, OffsetIndexEntry, Record, SEGMENT_MAGIC, TIME_INDEX_MAGIC, TimeIndexEntry,
};
use stratalog::log::{
    MAX_QUARANTINE_BYTES, MAX_QUARANTINE_FILES, QUARANTINE_HEADER_LEN, QUARANTINE_MAGIC,
    QUARANTINE_VERSION, QuarantineHeader,
};
use stratalog::{FsyncPolicy, Log, LogConfig, LogOptions};
use zerocopy::little_endian::{I64, U16, U32, U64};
use zerocopy::{FromBytes, IntoBytes};

const DOC: &str = include_str!("../docs/FORMAT.md");

/// The columns every layout table has, in this order.
const LAYOUT_COLUMNS: [&str; 5] = ["offset", "size", "type", "field", "meaning"];

// ---------------------------------------------------------------------------------------------
// Reading the document
// ---------------------------------------------------------------------------------------------

/// The first table under a level-3 heading.
#[derive(Debug)]
struct Table {
    /// The heading line without `### `.
    heading: String,
    /// Line number (1-based) of the heading, for messages.
    line: usize,
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// Cells of a markdown table line, trimmed, with backticks removed.
fn cells(line: &str) -> Vec<String> {
    let line = line.trim();
    let line = line.strip_prefix('|').unwrap_or(line);
    let line = line.strip_suffix('|').unwrap_or(line);
    line.split('|').map(|c| c.trim().replace('`', "")).collect()
}

fn is_separator(cells: &[String]) -> bool {
    cells
        .iter()
        .all(|c| !c.is_empty() && c.chars().all(|ch| matches!(ch, '-' | ':' | ' ')))
}

/// Every level-3 heading that has a table under it (before the next heading), with that table.
fn tables() -> Vec<Table> {
    let mut out: Vec<Table> = Vec::new();
    let mut current: Option<Table> = None;
    let mut in_table = false;
    let mut in_code = false;
    for (i, line) in DOC.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        if let Some(heading) = line.strip_prefix("### ") {
            out.extend(current.take().filter(|t| !t.columns.is_empty()));
            current = Some(Table {
                heading: heading.trim().to_string(),
                line: i + 1,
                columns: Vec::new(),
                rows: Vec::new(),
            });
            in_table = false;
            continue;
        }
        if line.starts_with("#") {
            out.extend(current.take().filter(|t| !t.columns.is_empty()));
            continue;
        }
        let Some(table) = current.as_mut() else {
            continue;
        };
        if line.trim_start().starts_with('|') {
            // Only the first table under a heading counts.
            if !in_table && !table.columns.is_empty() {
                continue;
            }
            in_table = true;
            let c = cells(line);
            if table.columns.is_empty() {
                table.columns = c;
            } else if !is_separator(&c) {
                table.rows.push(c);
            }
        } else if in_table {
            in_table = false;
        }
    }
    out.extend(current.filter(|t| !t.columns.is_empty()));
    out
}

/// The table under the heading that starts with `prefix` (exactly one must exist).
fn table_starting(prefix: &str) -> Table {
    let mut found: Vec<Table> = tables()
        .into_iter()
        .filter(|t| t.heading.starts_with(prefix))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "docs/FORMAT.md must have exactly one table under a `### {prefix}...` heading"
    );
    found.pop().unwrap()
}

/// `(N bytes)` in a heading.
fn heading_size(heading: &str) -> Option<usize> {
    let start = heading.rfind('(')?;
    let inner = heading[start + 1..].strip_suffix(')')?;
    inner.strip_suffix(" bytes")?.trim().parse().ok()
}

/// A number as the doc writes it: decimal (with optional `_`) or `0x` hex.
fn parse_num(s: &str) -> Option<u64> {
    let s = s.trim().replace('_', "");
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// A sum of integers and variables, such as `22 + K + V`.
fn eval(expr: &str, vars: &BTreeMap<&str, usize>) -> Result<usize, String> {
    expr.split('+')
        .map(|term| {
            let term = term.trim();
            parse_num(term)
                .map(|n| n as usize)
                .or_else(|| vars.get(term).copied())
                .ok_or_else(|| format!("cannot evaluate {term:?} in {expr:?}"))
        })
        .sum()
}

/// Bytes from the fenced code block that follows the `### {heading}` line: on each line, the
/// text before `//` is a list of two-digit hex bytes.
fn hex_block(heading: &str) -> Vec<u8> {
    let start = DOC
        .lines()
        .position(|l| l.strip_prefix("### ").is_some_and(|h| h.trim() == heading))
        .unwrap_or_else(|| panic!("docs/FORMAT.md has no `### {heading}` heading"));
    let mut lines = DOC.lines().skip(start + 1);
    lines
        .by_ref()
        .find(|l| l.trim_start().starts_with("```"))
        .unwrap_or_else(|| panic!("no code block after `### {heading}`"));
    let mut bytes = Vec::new();
    for line in lines.take_while(|l| !l.trim_start().starts_with("```")) {
        let data = line.split("//").next().unwrap_or("");
        for token in data.split_whitespace() {
            assert!(
                token.len() == 2 && token.chars().all(|c| c.is_ascii_hexdigit()),
                "`### {heading}`: {token:?} is not a hex byte in line {line:?}"
            );
            bytes.push(u8::from_str_radix(token, 16).unwrap());
        }
    }
    bytes
}

fn fail_if_any(problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "docs/FORMAT.md disagrees with the code:\n  - {}",
        problems.join("\n  - ")
    );
}

// ---------------------------------------------------------------------------------------------
// The code's layouts
// ---------------------------------------------------------------------------------------------

/// The name the doc uses for a field type.
trait DocType {
    const NAME: &'static str;
}
impl DocType for U16 {
    const NAME: &'static str = "u16";
}
impl DocType for U32 {
    const NAME: &'static str = "u32";
}
impl DocType for U64 {
    const NAME: &'static str = "u64";
}
impl DocType for I64 {
    const NAME: &'static str = "i64";
}
impl DocType for [u8; 8] {
    const NAME: &'static str = "[u8; 8]";
}
impl DocType for [u8; 16] {
    const NAME: &'static str = "[u8; 16]";
}

#[derive(Debug)]
struct FieldLayout {
    name: &'static str,
    offset: usize,
    size: usize,
    ty: &'static str,
}

#[derive(Debug)]
struct StructLayout {
    name: &'static str,
    size: usize,
    fields: Vec<FieldLayout>,
}

fn field_size<S, F>(_: fn(&S) -> &F) -> usize {
    size_of::<F>()
}

fn field_type<S, F: DocType>(_: fn(&S) -> &F) -> &'static str {
    F::NAME
}

/// The layout of a struct from the code. The destructuring pattern lists every field, so adding
/// a field to the struct without listing it here (and documenting it) does not compile.
macro_rules! layout {
    ($s:ident { $($f:ident),* $(,)? }) => {{
        #[expect(dead_code, reason = "never called: it only has to compile")]
        fn every_field_is_listed(s: $s) {
            let $s { $($f: _),* } = s;
        }
        StructLayout {
            name: stringify!($s),
            size: size_of::<$s>(),
            fields: vec![$(FieldLayout {
                name: stringify!($f),
                offset: offset_of!($s, $f),
                size: field_size(|s: &$s| &s.$f),
                ty: field_type(|s: &$s| &s.$f),
            }),*],
        }
    }};
}

fn code_layouts() -> Vec<StructLayout> {
    vec![
        layout!(FileHeader {
            magic,
            version,
            flags,
            base_offset,
            reserved,
            crc,
        }),
        layout!(BatchHeader {
            crc,
            magic,
            version,
            attributes,
            length,
            base_offset,
            leader_epoch,
            first_timestamp,
            max_timestamp,
            record_count,
            records_len,
            reserved,
        }),
        layout!(OffsetIndexEntry {
            relative_offset,
            position,
        }),
        layout!(TimeIndexEntry {
            timestamp,
            relative_offset,
        }),
        layout!(CheckpointSlot {
            crc,
            clean,
            sequence,
            segment_base,
            position,
            next_offset,
            max_timestamp,
            reserved,
        }),
        layout!(QuarantineHeader {
            crc,
            magic,
            version,
            reason_len,
            kind,
            first_offset,
            end_offset,
            segment_base,
            position,
            cut_bytes,
            kept_bytes,
        }),
        layout!(EpochFileHeader {
            magic,
            version,
            count,
            current_epoch,
            crc,
            reserved,
        }),
        layout!(EpochEntry {
            epoch,
            start_offset,
        }),
        layout!(MetaBody {
            crc,
            reserved0,
            start_offset,
            segment_bytes,
            segment_ms,
            retention_bytes,
            retention_ms,
            index_interval_bytes,
            compression,
            reserved1,
            reserved2,
        }),
    ]
}

/// Checks one struct table against the code's layout.
fn check_struct_table(table: &Table, code: &StructLayout, problems: &mut Vec<String>) {
    let at = format!("`{}` (line {})", code.name, table.line);
    if table.columns != LAYOUT_COLUMNS {
        problems.push(format!(
            "{at}: columns are {:?}, expected {LAYOUT_COLUMNS:?}",
            table.columns
        ));
        return;
    }
    match heading_size(&table.heading) {
        Some(n) if n == code.size => {}
        other => problems.push(format!(
            "{at}: heading says {other:?} bytes, the struct has {}",
            code.size
        )),
    }
    let mut seen = BTreeSet::new();
    let mut next = 0usize;
    for row in &table.rows {
        let [offset, size, ty, field, _meaning] = row.as_slice() else {
            problems.push(format!("{at}: row {row:?} does not have 5 cells"));
            continue;
        };
        let (Some(offset), Some(size)) = (parse_num(offset), parse_num(size)) else {
            problems.push(format!(
                "{at}: row {row:?}: offset and size must be numbers"
            ));
            continue;
        };
        let (offset, size) = (offset as usize, size as usize);
        if offset != next {
            problems.push(format!(
                "{at}: field `{field}` is at {offset}, but the previous row ends at {next} \
                 (rows must be in order, with no gap or overlap)"
            ));
        }
        next = offset + size;
        if !seen.insert(field.clone()) {
            problems.push(format!("{at}: field `{field}` appears twice"));
        }
        let Some(f) = code.fields.iter().find(|f| f.name == field) else {
            problems.push(format!("{at}: the struct has no field `{field}`"));
            continue;
        };
        if offset != f.offset {
            problems.push(format!(
                "{at}: `{field}` is at offset {offset} in the doc, {} in the code",
                f.offset
            ));
        }
        if size != f.size {
            problems.push(format!(
                "{at}: `{field}` has size {size} in the doc, {} in the code",
                f.size
            ));
        }
        if ty != f.ty {
            problems.push(format!(
                "{at}: `{field}` has type {ty} in the doc, {} in the code",
                f.ty
            ));
        }
    }
    if next != code.size {
        problems.push(format!(
            "{at}: the rows cover {next} bytes, the struct has {}",
            code.size
        ));
    }
    for f in &code.fields {
        if !seen.contains(f.name) {
            problems.push(format!("{at}: field `{}` is not documented", f.name));
        }
    }
}

#[test]
fn struct_tables_match_code() {
    let layouts = code_layouts();
    let struct_tables: Vec<Table> = tables()
        .into_iter()
        .filter(|t| t.heading.starts_with('`'))
        .collect();
    let mut problems = Vec::new();
    for code in &layouts {
        let mine: Vec<&Table> = struct_tables
            .iter()
            .filter(|t| t.heading.split('`').nth(1) == Some(code.name))
            .collect();
        match mine.as_slice() {
            [table] => check_struct_table(table, code, &mut problems),
            [] => problems.push(format!("no table for `{}`", code.name)),
            _ => problems.push(format!("{} tables for `{}`", mine.len(), code.name)),
        }
    }
    for t in &struct_tables {
        let name = t.heading.split('`').nth(1).unwrap_or("");
        if !layouts.iter().any(|l| l.name == name) {
            problems.push(format!(
                "line {}: table for `{name}`, which this test does not know (add it to \
                 code_layouts)",
                t.line
            ));
        }
    }
    fail_if_any(problems);
}

// ---------------------------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------------------------

#[derive(Debug, PartialEq)]
enum Value {
    Num(u64),
    Bytes(Vec<u8>),
}

fn parse_value(s: &str) -> Option<Value> {
    if let Some(inner) = s.strip_prefix("b\"").and_then(|r| r.strip_suffix('"')) {
        let mut out = Vec::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next()? {
                    '0' => out.push(0),
                    '\\' => out.push(b'\\'),
                    '"' => out.push(b'"'),
                    _ => return None,
                },
                c if c.is_ascii() => out.push(c as u8),
                _ => return None,
            }
        }
        return Some(Value::Bytes(out));
    }
    parse_num(s).map(Value::Num)
}

/// Bytes as the doc writes them (`53 54 42 31 ("STB1")`): leading two-digit hex tokens.
fn parse_disk_bytes(s: &str) -> Option<Vec<u8>> {
    if matches!(s.trim(), "—" | "-" | "") {
        return None;
    }
    Some(
        s.split_whitespace()
            .map_while(|t| {
                (t.len() == 2)
                    .then(|| u8::from_str_radix(t, 16).ok())
                    .flatten()
            })
            .collect(),
    )
}

/// The example record of the doc: 3-byte key, 5-byte value, one header.
fn example_record() -> Record<'static> {
    Record {
        timestamp: 1_700_000_000_000,
        key: Some(b"abc"),
        value: b"hello",
        headers: &[(b"enc", b"utf8")],
    }
}

/// The records section of an uncompressed batch holding `records`.
fn encode_records(records: &[Record<'_>]) -> Vec<u8> {
    let mut b = BatchBuilder::new(Compression::None);
    for r in records {
        b.push(r).unwrap();
    }
    let mut batch = b.encode(0).unwrap();
    batch.stamp(0);
    batch.as_bytes()[BATCH_HEADER_LEN..].to_vec()
}

fn attributes_of(compression: Compression) -> u16 {
    let mut b = BatchBuilder::new(compression);
    b.push(&example_record()).unwrap();
    let mut batch = b.encode(0).unwrap();
    batch.stamp(0);
    BatchHeader::parse(batch.as_bytes())
        .unwrap()
        .attributes
        .get()
}

/// The constants the doc must quote: name → (value, bytes on disk if the value is stored).
fn code_constants() -> BTreeMap<&'static str, (Value, Option<Vec<u8>>)> {
    let no_key = {
        let section = encode_records(&[Record::default()]);
        u32::from_le_bytes(section[12..16].try_into().unwrap())
    };
    let le = |v: &[u8]| Some(v.to_vec());
    let num = |v: u64| Value::Num(v);
    let magic = |m: [u8; 8]| (Value::Bytes(m.to_vec()), Some(m.to_vec()));
    BTreeMap::from([
        (
            "BATCH_MAGIC",
            (num(BATCH_MAGIC.into()), le(&BATCH_MAGIC.to_le_bytes())),
        ),
        (
            "QUARANTINE_MAGIC",
            (
                num(QUARANTINE_MAGIC.into()),
                le(&QUARANTINE_MAGIC.to_le_bytes()),
            ),
        ),
        (
            "QUARANTINE_VERSION",
            (
                num(QUARANTINE_VERSION.into()),
                le(&QUARANTINE_VERSION.to_le_bytes()),
            ),
        ),
        (
            "QUARANTINE_HEADER_LEN",
            (num(QUARANTINE_HEADER_LEN as u64), None),
        ),
        ("MAX_QUARANTINE_BYTES", (num(MAX_QUARANTINE_BYTES), None)),
        (
            "MAX_QUARANTINE_FILES",
            (num(MAX_QUARANTINE_FILES as u64), None),
        ),
        (
            "BATCH_VERSION",
            (num(BATCH_VERSION.into()), le(&BATCH_VERSION.to_le_bytes())),
        ),
        ("BATCH_HEADER_LEN", (num(BATCH_HEADER_LEN as u64), None)),
        ("MAX_BATCH_BYTES", (num(MAX_BATCH_BYTES.into()), None)),
        ("MAX_RECORDS_BYTES", (num(MAX_RECORDS_BYTES.into()), None)),
        (
            "MIN_RECORD_LEN",
            (num(Record::default().encoded_len() as u64), None),
        ),
        ("NO_KEY", (num(no_key.into()), le(&no_key.to_le_bytes()))),
        (
            "Compression::None",
            (
                num(attributes_of(Compression::None).into()),
                le(&attributes_of(Compression::None).to_le_bytes()),
            ),
        ),
        (
            "Compression::Lz4",
            (
                num(attributes_of(Compression::Lz4).into()),
                le(&attributes_of(Compression::Lz4).to_le_bytes()),
            ),
        ),
        ("FILE_HEADER_LEN", (num(FILE_HEADER_LEN as u64), None)),
        (
            "FILE_VERSION",
            (num(FILE_VERSION.into()), le(&FILE_VERSION.to_le_bytes())),
        ),
        ("SEGMENT_MAGIC", magic(SEGMENT_MAGIC)),
        ("OFFSET_INDEX_MAGIC", magic(OFFSET_INDEX_MAGIC)),
        ("TIME_INDEX_MAGIC", magic(TIME_INDEX_MAGIC)),
        ("CHECKPOINT_MAGIC", magic(CHECKPOINT_MAGIC)),
        ("META_MAGIC", magic(META_MAGIC)),
        (
            "LogConfig::MIN_SEGMENT_BYTES",
            (num(LogConfig::MIN_SEGMENT_BYTES), None),
        ),
        (
            "LogConfig::MAX_SEGMENT_BYTES",
            (num(LogConfig::MAX_SEGMENT_BYTES), None),
        ),
    ])
}

#[test]
fn constants_match_code() {
    let table = table_starting("Constants");
    let expected_columns = ["constant", "value", "bytes on disk", "meaning"];
    assert_eq!(
        table.columns, expected_columns,
        "`### Constants` (line {}) must have the columns {expected_columns:?}",
        table.line
    );
    let code = code_constants();
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for row in &table.rows {
        let [name, value, disk, _meaning] = row.as_slice() else {
            problems.push(format!("Constants: row {row:?} does not have 4 cells"));
            continue;
        };
        if !seen.insert(name.as_str()) {
            problems.push(format!("Constants: `{name}` appears twice"));
        }
        let Some((code_value, code_disk)) = code.get(name.as_str()) else {
            problems.push(format!(
                "Constants: `{name}` is not a constant this test knows (add it to code_constants)"
            ));
            continue;
        };
        match parse_value(value) {
            Some(v) if v == *code_value => {}
            Some(v) => problems.push(format!(
                "Constants: `{name}` is {v:?} in the doc, {code_value:?} in the code"
            )),
            None => problems.push(format!("Constants: `{name}`: cannot parse value {value:?}")),
        }
        let doc_disk = parse_disk_bytes(disk);
        if doc_disk != *code_disk {
            problems.push(format!(
                "Constants: `{name}` is stored as {doc_disk:02x?} in the doc, {code_disk:02x?} \
                 in the code"
            ));
        }
    }
    for name in code.keys() {
        if !seen.contains(name) {
            problems.push(format!("Constants: `{name}` is missing"));
        }
    }
    fail_if_any(problems);
}

#[test]
fn crc_is_crc32_ieee() {
    // The check value of CRC-32/ISO-HDLC, quoted by the doc so that other implementations can
    // test their CRC.
    assert!(DOC.contains("0xCBF43926"));
    assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
    assert!(DOC.contains("CRC-32"));
}

// ---------------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------------

/// Checks a variable-length table against `bytes`: rows in order and contiguous from 0, ending
/// at `bytes.len()`, and each field holding `expected[field]`.
fn check_variable_table(
    table: &Table,
    vars: &BTreeMap<&str, usize>,
    bytes: &[u8],
    expected: &BTreeMap<&str, Vec<u8>>,
    problems: &mut Vec<String>,
) {
    let at = format!(
        "`### {}` (line {}) with {vars:?}",
        table.heading, table.line
    );
    if table.columns != LAYOUT_COLUMNS {
        problems.push(format!(
            "{at}: columns are {:?}, expected {LAYOUT_COLUMNS:?}",
            table.columns
        ));
        return;
    }
    let mut next = 0;
    let mut seen = BTreeSet::new();
    for row in &table.rows {
        let [offset, size, ty, field, _meaning] = row.as_slice() else {
            problems.push(format!("{at}: row {row:?} does not have 5 cells"));
            continue;
        };
        let (offset, size) = match (eval(offset, vars), eval(size, vars)) {
            (Ok(o), Ok(s)) => (o, s),
            (Err(e), _) | (_, Err(e)) => {
                problems.push(format!("{at}: {e}"));
                continue;
            }
        };
        if offset != next {
            problems.push(format!(
                "{at}: `{field}` is at {offset}, the previous row ends at {next}"
            ));
        }
        next = offset + size;
        seen.insert(field.as_str());
        let fixed = match ty.as_str() {
            "u16" => Some(2),
            "u32" => Some(4),
            "i64" | "u64" => Some(8),
            _ => None,
        };
        if fixed.is_some_and(|n| n != size) {
            problems.push(format!("{at}: `{field}` is a {ty} but has size {size}"));
        }
        let Some(want) = expected.get(field.as_str()) else {
            problems.push(format!("{at}: the encoding has no field `{field}`"));
            continue;
        };
        match bytes.get(offset..offset + size) {
            Some(got) if got == want.as_slice() => {}
            got => problems.push(format!(
                "{at}: bytes {offset}..{} for `{field}` are {got:02x?}, the code wrote {want:02x?} \
                 there",
                offset + size
            )),
        }
    }
    if next != bytes.len() {
        problems.push(format!(
            "{at}: the rows cover {next} bytes, the encoding has {}",
            bytes.len()
        ));
    }
    for name in expected.keys() {
        if !seen.contains(name) {
            problems.push(format!("{at}: `{name}` is not documented"));
        }
    }
}

#[test]
fn record_tables_match_encoding() {
    let record_table = table_starting("Record (");
    let header_table = table_starting("Record header (");
    let mut problems = Vec::new();

    // The doc's example: key "abc", value "hello", one header enc=utf8.
    let record = example_record();
    let bytes = encode_records(&[record]);
    assert_eq!(bytes.len(), record.encoded_len());
    let (name, hvalue) = record.headers[0];
    let header_len = 6 + name.len() + hvalue.len();
    let header_bytes = bytes[bytes.len() - header_len..].to_vec();
    let vars = BTreeMap::from([("K", 3), ("V", 5), ("H", header_len)]);
    let expected = BTreeMap::from([
        ("length", ((bytes.len() - 4) as u32).to_le_bytes().to_vec()),
        ("timestamp", record.timestamp.to_le_bytes().to_vec()),
        ("key_len", 3u32.to_le_bytes().to_vec()),
        ("key", b"abc".to_vec()),
        ("value_len", 5u32.to_le_bytes().to_vec()),
        ("value", b"hello".to_vec()),
        ("header_count", 1u16.to_le_bytes().to_vec()),
        ("headers", header_bytes.clone()),
    ]);
    check_variable_table(&record_table, &vars, &bytes, &expected, &mut problems);

    let header_vars = BTreeMap::from([("N", name.len()), ("W", hvalue.len())]);
    let header_expected = BTreeMap::from([
        ("name_len", (name.len() as u16).to_le_bytes().to_vec()),
        ("name", name.to_vec()),
        ("value_len", (hvalue.len() as u32).to_le_bytes().to_vec()),
        ("value", hvalue.to_vec()),
    ]);
    check_variable_table(
        &header_table,
        &header_vars,
        &header_bytes,
        &header_expected,
        &mut problems,
    );

    // The smallest record: no key (key_len = NO_KEY, no key bytes), empty value, no header.
    let empty = Record {
        timestamp: -5,
        ..Default::default()
    };
    let bytes = encode_records(&[empty]);
    let vars = BTreeMap::from([("K", 0), ("V", 0), ("H", 0)]);
    let expected = BTreeMap::from([
        ("length", ((bytes.len() - 4) as u32).to_le_bytes().to_vec()),
        ("timestamp", (-5i64).to_le_bytes().to_vec()),
        ("key_len", u32::MAX.to_le_bytes().to_vec()),
        ("key", Vec::new()),
        ("value_len", 0u32.to_le_bytes().to_vec()),
        ("value", Vec::new()),
        ("header_count", 0u16.to_le_bytes().to_vec()),
        ("headers", Vec::new()),
    ]);
    check_variable_table(&record_table, &vars, &bytes, &expected, &mut problems);
    fail_if_any(problems);
}

// ---------------------------------------------------------------------------------------------
// Hex examples
// ---------------------------------------------------------------------------------------------

/// The doc's example batch: the example record, uncompressed, leader epoch 7, base offset 42.
fn example_batch() -> Vec<u8> {
    let mut b = BatchBuilder::new(Compression::None);
    b.push(&example_record()).unwrap();
    let mut batch = b.encode(7).unwrap();
    batch.stamp(42);
    batch.as_bytes().to_vec()
}

fn example_file_header() -> Vec<u8> {
    FileHeader::new(FileKind::Segment, 42).as_bytes().to_vec()
}

#[test]
fn examples_match_encoding() {
    let batch = example_batch();
    assert_eq!(
        hex_block("Example: a batch"),
        batch,
        "the example batch in docs/FORMAT.md is not what the code encodes (see print_examples)"
    );
    assert_eq!(
        stratalog::format::crc_of(&batch),
        u32::from_le_bytes(batch[..4].try_into().unwrap())
    );
    assert_eq!(
        hex_block("Example: a segment file header"),
        example_file_header(),
        "the example file header in docs/FORMAT.md is not what the code encodes"
    );
}

/// Prints the hex examples of the doc, split at the documented field boundaries.
#[test]
#[ignore = "prints the doc's hex examples; run by hand when the format changes"]
fn print_examples() {
    let layouts = code_layouts();
    let dump = |bytes: &[u8], layout: &StructLayout| {
        for f in &layout.fields {
            let hex: Vec<String> = bytes[f.offset..f.offset + f.size]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            println!("{:<48}// {}", hex.join(" "), f.name);
        }
    };
    let batch = example_batch();
    println!("### Example: a batch");
    dump(&batch[..BATCH_HEADER_LEN], &layouts[1]);
    let hex: Vec<String> = batch[BATCH_HEADER_LEN..]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    for chunk in hex.chunks(16) {
        println!("{}", chunk.join(" "));
    }
    println!("### Example: a segment file header");
    dump(&example_file_header(), &layouts[0]);
}

// ---------------------------------------------------------------------------------------------
// Files and directory
// ---------------------------------------------------------------------------------------------

/// Batches to append: compression, then (timestamp, value) of each record.
type TestBatch = (Compression, Vec<(i64, Vec<u8>)>);

/// Writes a log with `batches` and closes it cleanly.
fn write_log(dir: &Path, config: LogConfig, batches: &[TestBatch]) {
    let log = Log::open(
        dir,
        LogOptions {
            config,
            fsync: FsyncPolicy::Never,
            ..Default::default()
        },
    )
    .unwrap();
    for (compression, records) in batches {
        let mut b = BatchBuilder::new(*compression);
        for (ts, value) in records {
            b.push(&Record {
                timestamp: *ts,
                key: Some(b"k"),
                value,
                headers: &[],
            })
            .unwrap();
        }
        log.append(&b).unwrap();
    }
    log.close().unwrap();
}

fn some_batches(n: usize) -> Vec<TestBatch> {
    (0..n)
        .map(|i| {
            let compression = if i % 3 == 0 {
                Compression::Lz4
            } else {
                Compression::None
            };
            // Timestamps mostly grow, with some going back, so the time index skips some.
            let ts = 10_000 + 100 * i as i64 - if i % 4 == 3 { 1_000 } else { 0 };
            let records = (0..1 + i % 3)
                .map(|j| {
                    (
                        ts + j as i64,
                        vec![b'a' + (i % 26) as u8; 20 + (i * 37) % 150],
                    )
                })
                .collect();
            (compression, records)
        })
        .collect()
}

fn segment_bases(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|n| n.strip_suffix(".log").map(|s| s.parse().unwrap()))
        .collect();
    bases.sort_unstable();
    bases
}

/// Checks a `### File ...` table: rows contiguous, struct rows sized as the struct, total as the
/// heading says.
fn check_file_table(table: &Table, problems: &mut Vec<String>) -> Option<usize> {
    let at = format!("`### {}` (line {})", table.heading, table.line);
    if table.columns != LAYOUT_COLUMNS {
        problems.push(format!("{at}: columns are {:?}", table.columns));
        return None;
    }
    let sizes: BTreeMap<&str, usize> = code_layouts().iter().map(|l| (l.name, l.size)).collect();
    let mut next = Some(0usize);
    for row in &table.rows {
        let [offset, size, ty, field, _] = row.as_slice() else {
            problems.push(format!("{at}: row {row:?} does not have 5 cells"));
            continue;
        };
        let offset = parse_num(offset).map(|o| o as usize);
        if next.is_some() && offset != next {
            problems.push(format!(
                "{at}: `{field}` is at {offset:?}, the previous row ends at {next:?}"
            ));
        }
        // A struct, or `n × Struct` with a size of `m × n`.
        let (ty_name, repeated) = match ty.split_once('×') {
            Some((_, t)) => (t.trim(), true),
            None => (ty.trim(), false),
        };
        if let Some(&struct_size) = sizes.get(ty_name) {
            let doc_size = if repeated {
                size.split('×').next().and_then(parse_num)
            } else {
                parse_num(size)
            };
            if doc_size != Some(struct_size as u64) {
                problems.push(format!(
                    "{at}: `{field}` is a {ty_name} of {struct_size} bytes, the doc says {size}"
                ));
            }
        }
        next = match (offset, parse_num(size)) {
            (Some(o), Some(s)) if !repeated => Some(o + s as usize),
            _ => None,
        };
    }
    let total = heading_size(&table.heading);
    if total.is_some() && total != next {
        problems.push(format!(
            "{at}: the heading says {total:?} bytes, the rows cover {next:?}"
        ));
    }
    total
}

#[test]
fn files_and_directory_match_a_written_log() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 256,
        compression: Compression::Lz4,
        ..Default::default()
    };
    write_log(dir.path(), config, &some_batches(40));
    let mut problems = Vec::new();

    // Every file is one the doc describes.
    let bases = segment_bases(dir.path());
    assert!(bases.len() >= 3, "the test log should roll: {bases:?}");
    let mut expected: BTreeSet<String> = [".lock", "log.meta", "recovery.checkpoint"]
        .map(String::from)
        .into();
    for base in &bases {
        for ext in ["log", "index", "timeindex"] {
            expected.insert(format!("{base:020}.{ext}"));
        }
    }
    let names: BTreeSet<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, expected);
    for name in [
        "`.lock`",
        "`log.meta`",
        "`recovery.checkpoint`",
        "`{base:020}.log`",
        "`{base:020}.index`",
        "`{base:020}.timeindex`",
        "`*.tmp`",
    ] {
        if !DOC.contains(name) {
            problems.push(format!("the directory layout does not mention {name}"));
        }
    }

    // Each file starts with a header of its kind whose base offset is in the name.
    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
    for &base in &bases {
        for (ext, kind) in [
            ("log", FileKind::Segment),
            ("index", FileKind::OffsetIndex),
            ("timeindex", FileKind::TimeIndex),
        ] {
            FileHeader::parse(&read(&format!("{base:020}.{ext}")), kind, base).unwrap();
        }
        let log = read(&format!("{base:020}.log"));
        let first = BatchHeader::parse(&log[FILE_HEADER_LEN..]).unwrap();
        assert_eq!(first.base_offset.get(), base);
    }

    // The fixed-size files have the sizes the doc gives.
    let meta = read("log.meta");
    let checkpoint = read("recovery.checkpoint");
    for (prefix, bytes) in [
        ("File `log.meta`", &meta),
        ("File `recovery.checkpoint`", &checkpoint),
    ] {
        let total = check_file_table(&table_starting(prefix), &mut problems);
        if total != Some(bytes.len()) {
            problems.push(format!(
                "`### {prefix}` says {total:?} bytes, the file has {}",
                bytes.len()
            ));
        }
    }
    for prefix in [
        "File `{base:020}.log`",
        "File `{base:020}.index`",
        "File `{base:020}.timeindex`",
    ] {
        check_file_table(&table_starting(prefix), &mut problems);
    }

    // The meta body, with the encodings the doc gives for "no limit" and compression.
    FileHeader::parse(&meta, FileKind::Meta, 0).unwrap();
    let body = MetaBody::parse(&meta[FILE_HEADER_LEN..]).unwrap();
    assert_eq!(body.segment_bytes.get(), 2048);
    assert_eq!(body.segment_ms.get(), 0, "segment_ms None is stored as 0");
    assert_eq!(body.retention_bytes.get(), u64::MAX, "None is u64::MAX");
    assert_eq!(body.retention_ms.get(), u64::MAX, "None is u64::MAX");
    assert_eq!(body.index_interval_bytes.get(), 256);
    assert_eq!(body.compression.get(), 1, "LZ4 is 1");

    // The checkpoint: slot i at 32 + 64 i holds a sequence with sequence % 2 == i; after a clean
    // close the newest slot is clean and names the end of the last segment.
    FileHeader::parse(&checkpoint, FileKind::Checkpoint, 0).unwrap();
    let slots: Vec<Option<CheckpointSlot>> = (0..2)
        .map(|i| CheckpointSlot::parse(&checkpoint[FILE_HEADER_LEN + 64 * i..]))
        .collect();
    for (i, slot) in slots.iter().enumerate() {
        let slot = slot.expect("both slots are written after open and close");
        assert_eq!(slot.sequence.get() % 2, i as u64, "slot {i}");
    }
    let newest = slots
        .iter()
        .flatten()
        .max_by_key(|s| s.sequence.get())
        .unwrap();
    let last = *bases.last().unwrap();
    assert_eq!(newest.clean.get(), 1);
    assert_eq!(newest.segment_base.get(), last);
    assert_eq!(
        newest.position.get(),
        read(&format!("{last:020}.log")).len() as u64
    );
    let reopened = Log::open(
        dir.path(),
        LogOptions {
            create: false,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(newest.next_offset.get(), reopened.end_offset());
    drop(reopened);
    fail_if_any(problems);
}

#[test]
fn sparse_index_rule_matches_the_writer() {
    let interval = 300u32;
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1 << 20,
        index_interval_bytes: interval,
        ..Default::default()
    };
    let batches = some_batches(60);
    write_log(dir.path(), config, &batches);

    // Batch positions from the segment itself.
    let log = std::fs::read(dir.path().join(format!("{:020}.log", 0))).unwrap();
    let mut pos = FILE_HEADER_LEN;
    let mut seen = Vec::new(); // (relative offset, last relative offset, position, max timestamp)
    while pos < log.len() {
        let h = BatchHeader::parse(&log[pos..]).unwrap();
        seen.push((
            h.base_offset.get() as u32,
            h.last_offset() as u32,
            pos as u32,
            h.max_timestamp.get(),
        ));
        pos += h.length.get() as usize;
    }
    assert_eq!(seen.len(), batches.len());

    // The rule as docs/FORMAT.md states it.
    let mut offsets = Vec::new();
    let mut times = Vec::new();
    let mut last_indexed = FILE_HEADER_LEN as u32;
    let mut last_time = i64::MIN;
    let mut max_ts = i64::MIN;
    for &(rel, last_rel, pos, batch_max) in &seen {
        max_ts = max_ts.max(batch_max);
        if pos >= last_indexed + interval {
            last_indexed = pos;
            offsets.push((rel, pos));
            if max_ts > last_time {
                last_time = max_ts;
                times.push((max_ts, last_rel));
            }
        }
    }
    if max_ts > last_time {
        times.push((max_ts, seen.last().unwrap().1));
    }

    let index = std::fs::read(dir.path().join(format!("{:020}.index", 0))).unwrap();
    let got: Vec<(u32, u32)> = <[OffsetIndexEntry]>::ref_from_bytes(&index[FILE_HEADER_LEN..])
        .unwrap()
        .iter()
        .map(|e| (e.relative_offset.get(), e.position.get()))
        .collect();
    assert_eq!(got, offsets, "offset index entries");
    let time = std::fs::read(dir.path().join(format!("{:020}.timeindex", 0))).unwrap();
    let got: Vec<(i64, u32)> = <[TimeIndexEntry]>::ref_from_bytes(&time[FILE_HEADER_LEN..])
        .unwrap()
        .iter()
        .map(|e| (e.timestamp.get(), e.relative_offset.get()))
        .collect();
    assert_eq!(got, times, "time index entries");
    assert!(offsets.len() > 5 && times.len() > 3 && times.len() <= offsets.len() + 1);
}
