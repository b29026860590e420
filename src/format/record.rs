//! Records inside a batch's records section.
//!
//! ```text
//! record = u32 len                      bytes of the record after this field
//!        | i64 timestamp                milliseconds since the Unix epoch
//!        | u32 key_len                  0xFFFF_FFFF = no key
//!        | key bytes
//!        | u32 value_len | value bytes
//!        | u16 header_count
//!        | header*                      header = u16 name_len | name | u32 value_len | value
//! ```
//!
//! A record's offset is its batch's base offset plus its position in the batch.

use bytes::Bytes;

use std::sync::Arc;

use super::batch::SKIP_EVERY;
use super::{FormatError, check_len};

/// Smallest encoded record: length, timestamp, key length, value length, header count.
pub(crate) const MIN_RECORD_LEN: usize = 4 + 8 + 4 + 4 + 2;
const NO_KEY: u32 = u32::MAX;

/// A record to append.
///
/// # Examples
///
/// ```
/// use stratalog::format::{Batch, BatchBuilder, Compression, Record};
///
/// # fn main() -> Result<(), stratalog::FormatError> {
/// let record = Record { timestamp: 1_700_000_000_000, key: Some(b"user-7"), value: b"paid", headers: &[] };
/// let mut builder = BatchBuilder::new(Compression::None);
/// builder.push(&record)?;
/// assert_eq!(builder.records_len(), record.encoded_len());
/// let mut encoded = builder.encode(0)?;
/// encoded.stamp(0);
/// let read = Batch::validate(encoded.as_bytes().to_vec().into())?.records()?.next().unwrap()?;
/// assert_eq!((read.timestamp, read.key.as_deref()), (record.timestamp, record.key));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Record<'a> {
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Optional key (partitioners and compaction use it).
    pub key: Option<&'a [u8]>,
    /// The payload.
    pub value: &'a [u8],
    /// Name/value pairs.
    pub headers: &'a [(&'a [u8], &'a [u8])],
}

impl Record<'_> {
    /// Bytes this record takes in the records section.
    pub fn encoded_len(&self) -> usize {
        MIN_RECORD_LEN
            + self.key.map_or(0, <[u8]>::len)
            + self.value.len()
            + self
                .headers
                .iter()
                .map(|(n, v)| 6 + n.len() + v.len())
                .sum::<usize>()
    }
}

pub(crate) fn encode_record(record: &Record<'_>, out: &mut Vec<u8>) -> Result<(), FormatError> {
    let too_long = |what, value: usize, max: u64| FormatError::OutOfBounds {
        what,
        value: value as u64,
        min: 0,
        max,
    };
    let body_len = record.encoded_len() - 4;
    if body_len > u32::MAX as usize {
        return Err(too_long("record length", body_len, u32::MAX.into()));
    }
    if record.headers.len() > u16::MAX as usize {
        return Err(too_long(
            "header count",
            record.headers.len(),
            u16::MAX.into(),
        ));
    }
    out.reserve(body_len + 4);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&record.timestamp.to_le_bytes());
    match record.key {
        Some(key) => {
            out.extend_from_slice(&(key.len() as u32).to_le_bytes());
            out.extend_from_slice(key);
        }
        None => out.extend_from_slice(&NO_KEY.to_le_bytes()),
    }
    out.extend_from_slice(&(record.value.len() as u32).to_le_bytes());
    out.extend_from_slice(record.value);
    out.extend_from_slice(&(record.headers.len() as u16).to_le_bytes());
    for (name, value) in record.headers {
        if name.len() > u16::MAX as usize {
            return Err(too_long("header name length", name.len(), u16::MAX.into()));
        }
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
    }
    Ok(())
}

/// A record header (name/value pair) read from a batch.
///
/// # Examples
///
/// ```
/// use stratalog::format::{Batch, BatchBuilder, Compression, Header, Record};
///
/// # fn main() -> Result<(), stratalog::FormatError> {
/// let headers: &[(&[u8], &[u8])] = &[(b"content-type", b"json"), (b"trace", b"42")];
/// let mut builder = BatchBuilder::new(Compression::None);
/// builder.push(&Record { timestamp: 0, key: None, value: b"{}", headers })?;
/// let mut encoded = builder.encode(0)?;
/// encoded.stamp(0);
/// let record = Batch::validate(encoded.as_bytes().to_vec().into())?.records()?.next().unwrap()?;
/// // Headers come back in order, names and values as written.
/// let trace = Header { name: b"trace"[..].into(), value: b"42"[..].into() };
/// assert_eq!(record.headers.len(), 2);
/// assert_eq!(record.headers[1], trace);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name.
    pub name: Bytes,
    /// The value.
    pub value: Bytes,
}

/// A record read from a batch. Key, value and header bytes share the batch's buffer.
///
/// # Examples
///
/// ```
/// use stratalog::{Log, LogOptions};
///
/// # fn main() -> stratalog::Result<()> {
/// let tmp = tempfile::tempdir().unwrap();
/// let log = Log::open(tmp.path(), LogOptions::default())?;
/// log.append_records(&["a", "b"])?.receipt.wait()?;
/// let view = log.read_one(1)?;
/// assert_eq!((view.offset, &view.value[..]), (1, &b"b"[..]));
/// assert!(view.key.is_none() && view.headers.is_empty());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordView {
    /// The record's offset in the log.
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The key, if the record has one.
    pub key: Option<Bytes>,
    /// The payload.
    pub value: Bytes,
    /// Name/value pairs.
    pub headers: Vec<Header>,
}

/// Iterates the records of a batch, checking every length against the bytes that remain.
///
/// # Examples
///
/// ```
/// use stratalog::format::{Batch, BatchBuilder, Compression};
///
/// # fn main() -> Result<(), stratalog::FormatError> {
/// let mut builder = BatchBuilder::new(Compression::None);
/// for i in 0..5 {
///     builder.push_value(i, format!("v{i}").as_bytes())?;
/// }
/// let mut encoded = builder.encode(0)?;
/// encoded.stamp(10);
/// let batch = Batch::validate(encoded.as_bytes().to_vec().into())?;
/// let offsets: Vec<u64> = batch.records()?.map(|r| r.map(|r| r.offset)).collect::<Result<_, _>>()?;
/// assert_eq!(offsets, vec![10, 11, 12, 13, 14]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RecordIter {
    section: Bytes,
    pos: usize,
    next_offset: u64,
    remaining: u32,
    failed: bool,
    /// Offset of the batch's first record and its record count (for the skip table).
    first_offset: u64,
    count: u32,
    skips: Option<Arc<[u32]>>,
}

impl RecordIter {
    pub(crate) fn new(section: Bytes, base_offset: u64, count: u32) -> Self {
        RecordIter {
            section,
            pos: 0,
            next_offset: base_offset,
            remaining: count,
            failed: false,
            first_offset: base_offset,
            count,
            skips: None,
        }
    }

    /// Positions of every `SKIP_EVERY`th record, for [`Iterator::nth`].
    pub(crate) fn with_skips(mut self, skips: Option<Arc<[u32]>>) -> Self {
        self.skips = skips;
        self
    }

    fn next_record(&mut self) -> Result<RecordView, FormatError> {
        let mut cur = Cursor {
            bytes: &self.section,
            pos: self.pos,
        };
        let len = cur.u32("record length")? as usize;
        let end = cur
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.section.len())
            .ok_or(FormatError::Truncated {
                what: "record",
                needed: len as u64,
                available: (self.section.len() - cur.pos) as u64,
            })?;
        let mut cur = Cursor {
            bytes: &self.section[..end],
            pos: cur.pos,
        };
        let timestamp = cur.u64("record timestamp")? as i64;
        let key_len = cur.u32("key length")?;
        let key = if key_len == NO_KEY {
            None
        } else {
            Some(cur.take(&self.section, key_len as usize, "key")?)
        };
        let value_len = cur.u32("value length")? as usize;
        let value = cur.take(&self.section, value_len, "value")?;
        let header_count = cur.u16("header count")? as usize;
        // Each header takes at least 6 bytes: bound the allocation by what is left.
        check_len("record headers", header_count as u64 * 6, end - cur.pos)?;
        let mut headers = Vec::with_capacity(header_count);
        for _ in 0..header_count {
            let name_len = cur.u16("header name length")? as usize;
            let name = cur.take(&self.section, name_len, "header name")?;
            let value_len = cur.u32("header value length")? as usize;
            let value = cur.take(&self.section, value_len, "header value")?;
            headers.push(Header { name, value });
        }
        if cur.pos != end {
            return Err(FormatError::Invalid {
                what: "record length (trailing bytes)",
                value: len as u64,
            });
        }
        self.pos = end;
        let offset = self.next_offset;
        self.next_offset += 1;
        Ok(RecordView {
            offset,
            timestamp,
            key,
            value,
            headers,
        })
    }
}

impl Iterator for RecordIter {
    type Item = Result<RecordView, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.remaining == 0 {
            if self.pos != self.section.len() {
                self.failed = true;
                return Some(Err(FormatError::Invalid {
                    what: "bytes after the last record",
                    value: (self.section.len() - self.pos) as u64,
                }));
            }
            return None;
        }
        self.remaining -= 1;
        let item = self.next_record();
        self.failed = item.is_err();
        Some(item)
    }

    /// Skips `n` records by their length prefixes alone (bounds-checked, not parsed), so that
    /// finding one record of a batch costs one parse, not one per record before it.
    fn nth(&mut self, mut n: usize) -> Option<Self::Item> {
        let done = (self.count - self.remaining) as usize;
        let target = done.saturating_add(n);
        if let Some(skips) = &self.skips
            && !self.failed
            && target < self.count as usize
        {
            let k = target / SKIP_EVERY;
            if k * SKIP_EVERY > done
                && let Some(&pos) = skips.get(k)
                && (pos as usize) <= self.section.len()
            {
                self.pos = pos as usize;
                self.next_offset = self.first_offset + (k * SKIP_EVERY) as u64;
                self.remaining = self.count - (k * SKIP_EVERY) as u32;
                n = target - k * SKIP_EVERY;
            }
        }
        for _ in 0..n {
            if self.failed || self.remaining == 0 {
                return None;
            }
            let mut cur = Cursor {
                bytes: &self.section,
                pos: self.pos,
            };
            let end = cur.u32("record length").and_then(|len| {
                cur.pos
                    .checked_add(len as usize)
                    .filter(|&e| e <= self.section.len())
                    .ok_or(FormatError::Truncated {
                        what: "record",
                        needed: u64::from(len),
                        available: (self.section.len() - cur.pos) as u64,
                    })
            });
            match end {
                Ok(end) => {
                    self.pos = end;
                    self.remaining -= 1;
                    self.next_offset += 1;
                }
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        self.next()
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], FormatError> {
        check_len(what, N as u64, self.bytes.len() - self.pos)?;
        let out = self.bytes[self.pos..self.pos + N]
            .try_into()
            .expect("length checked");
        self.pos += N;
        Ok(out)
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, FormatError> {
        self.array(what).map(u16::from_le_bytes)
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, FormatError> {
        self.array(what).map(u32::from_le_bytes)
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, FormatError> {
        self.array(what).map(u64::from_le_bytes)
    }
    fn take(
        &mut self,
        whole: &Bytes,
        len: usize,
        what: &'static str,
    ) -> Result<Bytes, FormatError> {
        check_len(what, len as u64, self.bytes.len() - self.pos)?;
        let out = whole.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(out)
    }
}

/// A record borrowed from its batch's bytes, as [`Batch::for_each_record`] gives it: the same
/// fields as a [`RecordView`], checked the same way, but slices instead of shared [`Bytes`],
/// so visiting a record costs no reference count and no allocation.
///
/// # Examples
///
/// ```
/// use stratalog::format::{Batch, BatchBuilder, Compression, FormatError, Record};
///
/// # fn main() -> Result<(), FormatError> {
/// let headers: &[(&[u8], &[u8])] = &[(b"trace", b"42")];
/// let mut builder = BatchBuilder::new(Compression::None);
/// builder.push(&Record { timestamp: 5, key: Some(b"k"), value: b"v1", headers })?;
/// builder.push_value(6, b"v2")?;
/// let mut encoded = builder.encode(0)?;
/// encoded.stamp(10);
/// let batch = Batch::validate(encoded.as_bytes().to_vec().into())?;
/// let mut seen = Vec::new();
/// batch.for_each_record(|r| {
///     // The slices live as long as the call (an LZ4 batch is decompressed for it): copy out
///     // what must outlive it.
///     seen.push((r.offset, r.key.map(<[u8]>::to_vec), r.value.to_vec(), r.headers().count()));
///     Ok::<(), FormatError>(())
/// })?;
/// let want = vec![(10, Some(b"k".to_vec()), b"v1".to_vec(), 1), (11, None, b"v2".to_vec(), 0)];
/// assert_eq!(seen, want);
/// # Ok(())
/// # }
/// ```
///
/// [`Batch::for_each_record`]: super::Batch::for_each_record
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The record's offset in the log.
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The key, if the record has one.
    pub key: Option<&'a [u8]>,
    /// The payload.
    pub value: &'a [u8],
    /// The encoded headers (checked when the record was read).
    headers: &'a [u8],
    header_count: u16,
}

impl<'a> RecordRef<'a> {
    /// The record's headers (name/value pairs), in order.
    pub fn headers(&self) -> HeaderRefs<'a> {
        HeaderRefs {
            bytes: self.headers,
            remaining: self.header_count,
        }
    }
}

/// The headers of a [`RecordRef`], as `(name, value)` slices.
///
/// # Examples
///
/// ```
/// use stratalog::format::{Batch, BatchBuilder, Compression, FormatError, Record};
///
/// # fn main() -> Result<(), FormatError> {
/// let headers: &[(&[u8], &[u8])] = &[(b"a", b"1"), (b"b", b"22")];
/// let mut builder = BatchBuilder::new(Compression::None);
/// builder.push(&Record { timestamp: 0, key: None, value: b"", headers })?;
/// let mut encoded = builder.encode(0)?;
/// encoded.stamp(0);
/// let batch = Batch::validate(encoded.as_bytes().to_vec().into())?;
/// batch.for_each_record(|r| {
///     let got: Vec<(&[u8], &[u8])> = r.headers().collect();
///     assert_eq!(got, headers);
///     Ok::<(), FormatError>(())
/// })?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct HeaderRefs<'a> {
    bytes: &'a [u8],
    remaining: u16,
}

impl<'a> Iterator for HeaderRefs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        // The headers were checked when the record was read; `get` keeps this panic-free anyway.
        self.remaining = self.remaining.checked_sub(1)?;
        let b = self.bytes;
        let name_len = usize::from(u16::from_le_bytes(b.get(..2)?.try_into().ok()?));
        let name = b.get(2..2 + name_len)?;
        let at = 2 + name_len;
        let value_len = u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize;
        let value = b.get(at + 4..at + 4 + value_len)?;
        self.bytes = &b[at + 4 + value_len..];
        Some((name, value))
    }
}

/// Parses the record at `pos` of `section` with exactly the checks (and errors) of
/// [`RecordIter`]'s, borrowing instead of slicing `Bytes`. Returns the record and its end.
fn parse_ref(
    section: &[u8],
    pos: usize,
    offset: u64,
) -> Result<(RecordRef<'_>, usize), FormatError> {
    let mut cur = Cursor {
        bytes: section,
        pos,
    };
    let len = cur.u32("record length")? as usize;
    let end = cur
        .pos
        .checked_add(len)
        .filter(|&e| e <= section.len())
        .ok_or(FormatError::Truncated {
            what: "record",
            needed: len as u64,
            available: (section.len() - cur.pos) as u64,
        })?;
    let mut cur = Cursor {
        bytes: &section[..end],
        pos: cur.pos,
    };
    let timestamp = cur.u64("record timestamp")? as i64;
    let key_len = cur.u32("key length")?;
    let key = if key_len == NO_KEY {
        None
    } else {
        Some(cur.borrow(key_len as usize, "key")?)
    };
    let value_len = cur.u32("value length")? as usize;
    let value = cur.borrow(value_len, "value")?;
    let header_count = cur.u16("header count")?;
    check_len("record headers", u64::from(header_count) * 6, end - cur.pos)?;
    let headers_at = cur.pos;
    for _ in 0..header_count {
        let name_len = cur.u16("header name length")? as usize;
        cur.borrow(name_len, "header name")?;
        let value_len = cur.u32("header value length")? as usize;
        cur.borrow(value_len, "header value")?;
    }
    if cur.pos != end {
        return Err(FormatError::Invalid {
            what: "record length (trailing bytes)",
            value: len as u64,
        });
    }
    let record = RecordRef {
        offset,
        timestamp,
        key,
        value,
        headers: &section[headers_at..end],
        header_count,
    };
    Ok((record, end))
}

impl<'a> Cursor<'a> {
    fn borrow(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], FormatError> {
        check_len(what, len as u64, self.bytes.len() - self.pos)?;
        let out = &self.bytes[self.pos..self.pos + len];
        self.pos += len;
        Ok(out)
    }
}

/// Visits the records of a records section with the checks of [`RecordIter`]: `count` records,
/// then no byte left. Stops at the first error.
fn visit_section<E: From<FormatError>>(
    section: &[u8],
    base_offset: u64,
    count: u32,
    f: &mut impl FnMut(RecordRef<'_>) -> Result<(), E>,
) -> Result<(), E> {
    let mut pos = 0;
    for i in 0..count {
        let (record, end) = parse_ref(section, pos, base_offset + u64::from(i))?;
        f(record)?;
        pos = end;
    }
    if pos != section.len() {
        return Err(FormatError::Invalid {
            what: "bytes after the last record",
            value: (section.len() - pos) as u64,
        }
        .into());
    }
    Ok(())
}

impl super::Batch {
    /// Calls `f` with each record of the batch in order, borrowed from the batch's bytes
    /// ([`RecordRef`]): the records [`Batch::records`](super::Batch::records) yields, with the
    /// same checks, but without a reference count per record (a scan that visits every record
    /// spends a good part of its time on those). Stops at the first error, of the format
    /// ([`FormatError`], converted with `From`) or returned by `f`; the records before it were
    /// visited.
    ///
    /// ```
    /// use stratalog::{Log, LogOptions};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let tmp = tempfile::tempdir()?;
    /// let log = Log::open(tmp.path(), LogOptions::default())?;
    /// log.append_records(&["a", "bb", "ccc"])?.receipt.wait()?;
    /// let mut bytes = 0;
    /// for batch in log.read(0, 1 << 20)? {
    ///     batch.for_each_record(|r| {
    ///         bytes += r.value.len();
    ///         Ok::<(), stratalog::FormatError>(())
    ///     })?;
    /// }
    /// assert_eq!(bytes, 6);
    /// # Ok(())
    /// # }
    /// ```
    pub fn for_each_record<E: From<FormatError>>(
        &self,
        mut f: impl FnMut(RecordRef<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        // `records` finds the section (decompressing an LZ4 batch); only its bytes are used.
        let iter = self.records()?;
        visit_section(&iter.section, iter.first_offset, iter.count, &mut f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::batch::{BATCH_HEADER_LEN, BATCH_MAGIC, BATCH_VERSION, crc_of};
    use crate::format::{Batch, BatchBuilder, Compression};

    /// A batch whose records section is `section` as stored (LZ4 if `lz4`, of `records_len`
    /// bytes uncompressed), claiming `count` records, with a valid header and CRC, so that
    /// whatever the section holds reaches the record decoder.
    fn batch_of(section: &[u8], count: u32, lz4: bool, records_len: u32) -> Option<Batch> {
        let length = (BATCH_HEADER_LEN + section.len()) as u32;
        let mut b = Vec::new();
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&BATCH_MAGIC.to_le_bytes());
        b.extend_from_slice(&BATCH_VERSION.to_le_bytes());
        b.extend_from_slice(&u16::from(lz4).to_le_bytes());
        b.extend_from_slice(&length.to_le_bytes());
        b.extend_from_slice(&7u64.to_le_bytes()); // base offset
        b.extend_from_slice(&3u64.to_le_bytes()); // leader epoch
        b.extend_from_slice(&0i64.to_le_bytes());
        b.extend_from_slice(&0i64.to_le_bytes());
        b.extend_from_slice(&count.to_le_bytes());
        b.extend_from_slice(&records_len.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(section);
        let crc = crc_of(&b);
        b[..4].copy_from_slice(&crc.to_le_bytes());
        Batch::validate(Bytes::from(b)).ok()
    }

    /// What `records()` yields (the records before the first error, and the error), and what
    /// `for_each_record` visits, in the same shape.
    type Outcome = (
        Vec<(u64, i64, Option<Vec<u8>>, Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>)>,
        Option<String>,
    );

    fn by_iter(batch: &Batch) -> Outcome {
        let mut out = Vec::new();
        let iter = match batch.records() {
            Ok(i) => i,
            Err(e) => return (out, Some(e.to_string())),
        };
        for r in iter {
            match r {
                Ok(r) => out.push((
                    r.offset,
                    r.timestamp,
                    r.key.map(|k| k.to_vec()),
                    r.value.to_vec(),
                    r.headers
                        .iter()
                        .map(|h| (h.name.to_vec(), h.value.to_vec()))
                        .collect(),
                )),
                Err(e) => return (out, Some(e.to_string())),
            }
        }
        (out, None)
    }

    fn by_visit(batch: &Batch) -> Outcome {
        let mut out = Vec::new();
        let result = batch.for_each_record(|r| {
            out.push((
                r.offset,
                r.timestamp,
                r.key.map(<[u8]>::to_vec),
                r.value.to_vec(),
                r.headers().map(|(n, v)| (n.to_vec(), v.to_vec())).collect(),
            ));
            Ok::<(), FormatError>(())
        });
        (out, result.err().map(|e| e.to_string()))
    }

    /// A section of varied records: keys or none, empty and non-empty values, headers.
    fn section() -> (Vec<u8>, u32) {
        let mut b = BatchBuilder::new(Compression::None);
        for i in 0..9u8 {
            let key = [i; 2];
            let value = vec![i; usize::from(i) * 5];
            let headers: Vec<(&[u8], &[u8])> =
                (0..i % 3).map(|_| (&b"hn"[..], &key[..1])).collect();
            b.push(&Record {
                timestamp: i64::from(i) * 1000 - 3,
                key: (i % 2 == 1).then_some(&key[..]),
                value: &value,
                headers: &headers,
            })
            .unwrap();
        }
        let encoded = b.encode(0).unwrap();
        (encoded.as_bytes()[BATCH_HEADER_LEN..].to_vec(), 9)
    }

    #[test]
    fn for_each_record_visits_what_records_yields_on_every_damaged_section() {
        let (good, count) = section();
        let mut cases: Vec<(Vec<u8>, u32)> = vec![(good.clone(), count)];
        for cut in 0..good.len() {
            cases.push((good[..cut].to_vec(), count));
        }
        for delta in [count - 1, count + 1, 1] {
            cases.push((good.clone(), delta));
        }
        // Every byte set to values that break lengths: 0, 0xFF and a bit flip.
        for at in 0..good.len() {
            for v in [0u8, 0xFF, good[at] ^ 0x10] {
                let mut s = good.clone();
                s[at] = v;
                cases.push((s, count));
            }
        }
        let mut failures = 0;
        for (s, count) in &cases {
            for lz4 in [false, true] {
                let stored = if lz4 {
                    lz4_flex::block::compress(s)
                } else {
                    s.clone()
                };
                let Some(batch) = batch_of(&stored, *count, lz4, s.len() as u32) else {
                    continue; // a header bound refused it: not the decoder's business
                };
                let (iter, visit) = (by_iter(&batch), by_visit(&batch));
                failures += usize::from(iter.1.is_some());
                assert_eq!(
                    iter,
                    visit,
                    "section of {} bytes, count {count}, lz4 {lz4}",
                    s.len()
                );
            }
        }
        // The damaged sections did reach the decoder and fail there, not only the good one.
        assert!(
            failures >= cases.len() / 2,
            "{failures} failures over {} cases",
            cases.len()
        );
    }

    #[test]
    fn for_each_record_stops_at_the_callers_error() {
        let (good, count) = section();
        let batch = batch_of(&good, count, false, good.len() as u32).unwrap();
        let mut seen = 0;
        let r = batch.for_each_record(|rec| {
            seen += 1;
            if rec.offset == 9 {
                return Err(FormatError::Invalid {
                    what: "stop",
                    value: 9,
                });
            }
            Ok(())
        });
        assert!(matches!(r, Err(FormatError::Invalid { what: "stop", .. })));
        assert_eq!(seen, 3, "offsets 7, 8 and 9");
    }
}
