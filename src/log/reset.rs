//! [`Log::reset_to`]: dropping every record and starting the log empty at an offset (Kafka's
//! `truncateFullyAndStartAt`), for a follower whose position is below the leader's retained
//! start, or a log switching to a compacted generation.
//!
//! Crash safety rests on one file, `log.reset` (byte map in docs/FORMAT.md), written durably
//! (temporary file, fsync, rename, fsync of the directory) before anything else changes. Until
//! it is durable the log is as it was; once it is, every open finishes the reset before it
//! reads a segment. The steps after it are each idempotent, so a crash in any of them is
//! finished by the next open:
//!
//! 1. `log.reset` holds the offset (the commit point);
//! 2. every segment's files are removed, newest first, and the directory is fsynced;
//! 3. the epoch history keeps its current epoch and drops its entries (`log.epochs` replaced);
//! 4. quarantine files wholly below the offset are removed (as retention would);
//! 5. `log.meta` gets the offset as its start (replaced);
//! 6. an empty segment named by the offset is created, and the checkpoint names it;
//! 7. `log.reset` is removed and the directory fsynced.
//!
//! An open that finds `log.reset` does 2 to 5 and 7; the ordinary open then finds no segment and
//! creates the empty one at the start offset of `log.meta` (6). A read-only open that finds it
//! refuses to open: the old segments may still be there, and they are no longer the log.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;

use crate::crash;
use crate::error::{Error, IoContext, Result};
use crate::format::parse_segment_name;
use crate::storage::{OpenMode, Storage, read_all};

use super::checkpoint::Meta;
use super::segment::{self, SegmentPaths, replace_file};
use super::{EpochHistory, Inner, Log, Writer, check_start_offset, quarantine};

/// Name of the reset marker in a log directory.
pub(crate) const RESET_NAME: &str = "log.reset";
/// First 8 bytes of `log.reset`.
const RESET_MAGIC: [u8; 8] = *b"STRARST\0";
/// Size of `log.reset`: magic, offset, CRC-32 of the 16 bytes before it, 4 zero bytes.
const RESET_LEN: usize = 24;

fn encode(offset: u64) -> [u8; RESET_LEN] {
    let mut bytes = [0u8; RESET_LEN];
    bytes[..8].copy_from_slice(&RESET_MAGIC);
    bytes[8..16].copy_from_slice(&offset.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..16]);
    bytes[16..20].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// The offset of an interrupted reset, if `log.reset` exists. A marker that fails its checks is
/// corruption (it is only ever replaced whole).
pub(crate) fn pending(storage: &dyn Storage, dir: &Path) -> Result<Option<u64>> {
    let path = dir.join(RESET_NAME);
    if !storage.exists(&path) {
        return Ok(None);
    }
    let file = storage.open(&path, OpenMode::Read).ctx("open", &path)?;
    let bytes = read_all(file.as_ref()).ctx("read", &path)?;
    let corrupt = |what, value| Error::Corrupt {
        path: path.clone(),
        position: 0,
        source: crate::format::FormatError::Invalid { what, value },
    };
    if bytes.len() != RESET_LEN {
        return Err(corrupt("reset marker length", bytes.len() as u64));
    }
    let offset = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    if bytes[..] != encode(offset)[..] {
        return Err(corrupt(
            "reset marker (magic, CRC or reserved bytes)",
            offset,
        ));
    }
    Ok(Some(offset))
}

/// Steps 2 to 5 (see the module documentation): idempotent.
fn drop_everything(
    storage: &dyn Storage,
    dir: &Path,
    offset: u64,
    epochs: &mut EpochHistory,
    meta: &mut Meta,
) -> Result<()> {
    let mut bases: Vec<u64> = storage
        .list(dir)
        .ctx("list", dir)?
        .iter()
        .filter_map(|n| parse_segment_name(n))
        .collect();
    // Newest first, as truncation does.
    bases.sort_unstable_by(|a, b| b.cmp(a));
    let paths: Vec<SegmentPaths> = bases.iter().map(|&b| SegmentPaths::new(dir, b)).collect();
    segment::remove_segment_files(storage, dir, &paths)?;
    crash::point("reset.after_remove");
    if epochs.clear_entries() {
        epochs.store(storage, dir)?;
    }
    crash::point("reset.after_epochs");
    quarantine::remove_below(storage, dir, offset)?;
    meta.start_offset = offset;
    meta.write(storage, dir)?;
    crash::point("reset.after_meta");
    Ok(())
}

/// Step 7: the reset is complete.
fn unmark(storage: &dyn Storage, dir: &Path) -> Result<()> {
    let path = dir.join(RESET_NAME);
    storage.remove(&path).ctx("remove", &path)?;
    storage.sync_dir(dir).ctx("fsync directory", dir)
}

/// At open (writable, directory locked, before the segments are listed): finishes the reset
/// that `log.reset` records, if any. A read-only open refuses a log with a pending reset.
pub(super) fn finish_at_open(
    storage: &dyn Storage,
    dir: &Path,
    meta: &mut Meta,
    read_only: bool,
) -> Result<()> {
    let Some(offset) = pending(storage, dir)? else {
        return Ok(());
    };
    if read_only {
        return Err(Error::InvalidArgument(format!(
            "{} has an interrupted Log::reset_to({offset}); open it writable once to finish it",
            dir.display()
        )));
    }
    tracing::warn!(dir = %dir.display(), offset, "finishing an interrupted reset of the log");
    let mut epochs = EpochHistory::load(storage, dir)?;
    drop_everything(storage, dir, offset, &mut epochs, meta)?;
    unmark(storage, dir)
}

impl Log {
    /// Drops every record and makes the log empty at `offset` (Kafka's
    /// `truncateFullyAndStartAt`), whether `offset` is above the log's end (a follower whose
    /// position is below the leader's retained start) or anywhere below it (a log switching to a
    /// compacted generation). Afterwards `start_offset() == end_offset() == high_watermark() ==
    /// offset`, and the next record appended gets `offset`.
    ///
    /// The current leader epoch is kept (it only rises); the epoch history's entries are
    /// dropped, with the records they described. What was appended before the call is made
    /// durable first (its receipts complete), then removed; the removed records are not
    /// quarantined (they are dropped on purpose; the range is logged).
    ///
    /// Crash-safe: after a crash or power loss at any point the log opens either as it was or
    /// empty at `offset` (see docs/SAFETY.md). A failure after the reset was recorded fails the
    /// log ([`Error::Failed`]); reopening it finishes the reset. `offset` above `i64::MAX` is
    /// refused with [`Error::InvalidArgument`].
    ///
    /// ```
    /// use stratalog::{Log, LogOptions};
    ///
    /// # fn main() -> stratalog::Result<()> {
    /// let tmp = tempfile::tempdir().unwrap();
    /// let log = Log::open(tmp.path(), LogOptions::default())?;
    /// log.set_leader_epoch(3)?;
    /// log.append_records(&["a", "b"])?.receipt.wait()?;
    /// log.reset_to(500)?;
    /// assert_eq!((log.start_offset(), log.end_offset()), (500, 500));
    /// assert_eq!(log.leader_epoch(), 3);
    /// assert!(log.epoch_history().entries().is_empty());
    /// assert_eq!(log.append_records(&["c"])?.base_offset, 500);
    /// # Ok(())
    /// # }
    /// ```
    pub fn reset_to(&self, offset: u64) -> Result<()> {
        self.inner.reset_to(offset)
    }
}

impl Inner {
    fn reset_to(&self, offset: u64) -> Result<()> {
        check_start_offset(offset, "reset offset")?;
        let _m = self.lock_or_fail(&self.maintenance, "maintenance")?;
        let mut w = self.lock_or_fail(&self.writer, "writer")?;
        self.check_writable()?;
        let (start, end) = (self.start_offset.load(Ordering::Acquire), w.next_offset);
        // What was appended becomes durable and visible, so that its receipts complete as they
        // would before a truncation; then nothing is written to the old files again.
        self.seal_active(&mut w)?;
        // Step 1, the commit point: a failure here leaves the log as it was.
        replace_file(
            self.storage.as_ref(),
            &self.dir.join(RESET_NAME),
            &encode(offset),
        )?;
        crash::point("reset.after_marker");
        self.finish_reset(&mut w, offset)
            .map_err(|e| Error::Failed(self.commit.fail(e)))?;
        tracing::warn!(dir = %self.dir.display(), from = start, to = end, offset, "the log was reset: every record was dropped");
        Ok(())
    }

    /// Steps 2 to 7 of a reset, with the writer lock held.
    fn finish_reset(&self, w: &mut Writer, offset: u64) -> Result<()> {
        let mut meta = Meta {
            start_offset: self.start_offset.load(Ordering::Acquire),
            config: *super::lock(&self.config),
        };
        {
            let mut epochs = self.lock_or_fail(&self.epochs, "epochs")?;
            drop_everything(
                self.storage.as_ref(),
                &self.dir,
                offset,
                &mut epochs,
                &mut meta,
            )?;
        }
        self.restart_at(
            w,
            BTreeMap::new(),
            offset,
            Some("reset.after_create"),
            || {
                self.start_offset.store(offset, Ordering::Release);
                self.high_watermark.store(offset, Ordering::Release);
            },
        )?;
        unmark(self.storage.as_ref(), &self.dir)?;
        // Readers waiting for an offset below the new end must look again (they get
        // `OffsetOutOfRange`, or the records appended at the new offsets).
        let _g = super::lock(&self.data_signal.0);
        self.data_signal.1.notify_all();
        Ok(())
    }
}
