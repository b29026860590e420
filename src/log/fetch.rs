//! Fetch answers sent from the segment files: [`Log::read_file_ranges`] gives, for a fetch, the
//! checked batches as ranges of their files with a descriptor to `sendfile` them from.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use bytes::Bytes;

use super::Log;
use crate::error::Result;

/// Whole batches of one segment file, back to back and checked (CRC), for a fetch answer sent
/// from the file with `sendfile` (see [`Log::read_file_ranges`]). It holds the batches' mapped
/// bytes too, for a storage without descriptors.
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
/// log.append_records(&["c"])?.receipt.wait()?;
/// let ranges = log.read_file_ranges(0, log.end_offset(), 1 << 20)?;
/// // Both batches lie back to back in the one segment: one range.
/// assert_eq!(ranges.len(), 1);
/// assert_eq!((ranges[0].base_offset(), ranges[0].last_offset()), (0, 2));
/// // The real storage has descriptors; the bytes are there for a storage without.
/// assert!(ranges[0].fd().is_some());
/// let bytes: usize = ranges[0].chunks().iter().map(|c| c.len()).sum();
/// assert_eq!(bytes as u64, ranges[0].len());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct FileRange {
    fd: Option<OwnedFd>,
    position: u64,
    len: u64,
    chunks: Vec<Bytes>,
    base_offset: u64,
    last_offset: u64,
}

impl FileRange {
    /// A descriptor of the segment file to send the range from, if the storage has one (it is
    /// closed when the range is dropped).
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(AsFd::as_fd)
    }

    /// Byte position of the range in the segment file.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Bytes in the range.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True if the range holds no byte (never, for a range [`Log::read_file_ranges`] returns).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The range's bytes, one mapped slice per batch, checked: what to write when there is no
    /// descriptor.
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    /// Offset of the first record in the range.
    pub fn base_offset(&self) -> u64 {
        self.base_offset
    }

    /// Offset of the last record in the range.
    pub fn last_offset(&self) -> u64 {
        self.last_offset
    }
}

impl Log {
    /// For a fetch answer sent with `sendfile`: the batches [`Log::read`] returns for `from`
    /// and `max_bytes`, checked the same way (CRC, offsets following on), up to the last one
    /// whose last offset is below `upper` (the high watermark for a consumer, the written end
    /// for a follower), as ranges of their segment files: one per segment, each of whole
    /// batches back to back. Errors as [`Log::read`]; empty if the first batch reaches `upper`.
    ///
    /// An `upper` above [`Log::end_offset`] reads past the durable end, up to
    /// [`Log::written_end`]: records written but not yet durable (a leader's follower fetches
    /// them while the leader's own fsync runs; they are not committed until the high watermark
    /// passes them). A failed log serves none of them ([`Error::Failed`](crate::Error::Failed)).
    ///
    /// Each range carries a descriptor of its file if the storage has one: the active
    /// segment's is duplicated; a sealed segment keeps no descriptor (descriptors stay
    /// bounded, docs/SAFETY.md), so its file is opened again by path, and used only if it is
    /// still the file that was mapped and checked (same device and inode, long enough), not one
    /// a truncation or reset put in its place. A range without one is sent from its mapped
    /// bytes. The descriptors close when the ranges are dropped.
    pub fn read_file_ranges(
        &self,
        from: u64,
        upper: u64,
        max_bytes: usize,
    ) -> Result<Vec<FileRange>> {
        let mut placed = Vec::new();
        let unsynced = upper > self.end_offset();
        let batches = self.read_placed(from, max_bytes, Some(&mut placed), unsynced)?;
        let mut ranges: Vec<FileRange> = Vec::new();
        let mut segment_of_last = None;
        for (batch, (segment, position)) in batches.into_iter().zip(placed) {
            if batch.last_offset() >= upper {
                break;
            }
            let len = batch.as_bytes().len() as u64;
            match ranges.last_mut() {
                Some(r)
                    if segment_of_last == Some(segment.base) && r.position + r.len == position =>
                {
                    r.len += len;
                    r.last_offset = batch.last_offset();
                    r.chunks.push(batch.as_bytes().clone());
                }
                _ => {
                    segment_of_last = Some(segment.base);
                    ranges.push(FileRange {
                        fd: segment.file.send_fd(),
                        position,
                        len,
                        chunks: vec![batch.as_bytes().clone()],
                        base_offset: batch.base_offset(),
                        last_offset: batch.last_offset(),
                    });
                }
            }
        }
        Ok(ranges)
    }
}
