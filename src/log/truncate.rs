//! Truncation ([`Log::truncate`](super::Log::truncate)): removing every record at or above an
//! offset, the removed batches kept in quarantine, the epoch history cut with them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::index::IndexState;
use super::quarantine::{self, LossKind};
use super::segment::{self, BatchScan, Segment};
use super::{Inner, MAX_QUARANTINE_BYTES, Writer, lock};
use crate::crash;
use crate::error::{Error, IoContext, Result};
use crate::format::FILE_HEADER_LEN;
use crate::storage::OpenMode;

impl Inner {
    pub(super) fn truncate(&self, offset: u64) -> Result<()> {
        let _m = self.lock_or_fail(&self.maintenance, "maintenance")?;
        let mut w = self.lock_or_fail(&self.writer, "writer")?;
        self.check_writable()?;
        if offset >= w.next_offset {
            // No record to cut, but an epoch started at the end with no record in it goes (a
            // leader elected just before it died): kept, it would name that epoch as its last
            // one to a leader that never heard of it, which answers "cut here" again and again.
            return self.cut_epochs(|h| h.truncate_end(offset));
        }
        let start = self.start_offset.load(Ordering::Acquire);
        if offset < start {
            return Err(Error::InvalidArgument(format!(
                "cannot truncate to {offset}, below the log start {start}"
            )));
        }
        // Everything that stays must be durable, and visible, before files change.
        self.seal_active(&mut w)?;
        let segments: Vec<Arc<Segment>> = self.segments_from(offset);
        let target = segments[0].clone();
        let cut = if offset == target.base {
            None
        } else {
            Some(self.batch_boundary(&target, offset)?)
        };
        self.quarantine_suffix(&segments, cut, offset, w.next_offset);
        crash::point("truncate.after_quarantine");
        self.truncate_files(&mut w, &segments, cut, offset)
            .map_err(|e| Error::Failed(self.commit.fail(e)))?;
        self.cut_epochs(|h| h.truncate_end(offset))
    }

    /// Keeps the batches a truncation to `offset` removes in a quarantine file (their first
    /// [`MAX_QUARANTINE_BYTES`]). A failure (a full disk) is logged and does not stop the
    /// truncation, which the replication layer depends on.
    pub(super) fn quarantine_suffix(
        &self,
        segments: &[Arc<Segment>],
        cut: Option<u64>,
        offset: u64,
        end: u64,
    ) {
        let gather = || -> Result<(Vec<u8>, u64, u64)> {
            let (mut data, mut total) = (Vec::new(), 0u64);
            let from = cut.unwrap_or(FILE_HEADER_LEN as u64);
            for (i, s) in segments.iter().enumerate() {
                let len = s.visible_len();
                let start = if i == 0 { from } else { FILE_HEADER_LEN as u64 };
                if len <= start {
                    continue;
                }
                total += len - start;
                let room = MAX_QUARANTINE_BYTES.saturating_sub(data.len() as u64);
                if room > 0 {
                    let bytes = s.bytes(len)?;
                    let take = (len - start).min(room) as usize;
                    data.extend_from_slice(&bytes[start as usize..start as usize + take]);
                }
            }
            Ok((data, total, from))
        };
        let result = gather().and_then(|(data, total, position)| {
            if total == 0 {
                return Ok(None);
            }
            let reason = format!("Log::truncate to offset {offset}");
            let loss = quarantine::Loss {
                kind: LossKind::Truncation,
                first_offset: offset,
                end_offset: end,
                segment_base: segments[0].base,
                position,
                cut_bytes: total,
                reason: &reason,
            };
            quarantine::save(self.storage.as_ref(), &self.dir, &loss, &data).map(Some)
        });
        if let Err(e) = result {
            tracing::error!(dir = %self.dir.display(), offset, error = %e, "could not quarantine the truncated batches; they are lost");
        }
    }

    /// Byte position of the batch starting at `offset`; an error if `offset` is inside a batch.
    pub(super) fn batch_boundary(&self, segment: &Segment, offset: u64) -> Result<u64> {
        let end = segment.visible_len();
        let bytes = segment.bytes(end)?;
        for (pos, batch) in BatchScan::new(bytes, FILE_HEADER_LEN as u64, end) {
            let batch = batch.map_err(|source| Error::Corrupt {
                path: segment.paths.log.clone(),
                position: pos,
                source,
            })?;
            if batch.base_offset() == offset {
                return Ok(pos);
            }
            if batch.last_offset() >= offset {
                return Err(Error::InvalidArgument(format!(
                    "offset {offset} is inside the batch {}..={}; truncate at a batch boundary",
                    batch.base_offset(),
                    batch.last_offset()
                )));
            }
        }
        Err(Error::InvalidArgument(format!(
            "offset {offset} not found in {}",
            segment.paths.log.display()
        )))
    }

    pub(super) fn truncate_files(
        &self,
        w: &mut Writer,
        segments: &[Arc<Segment>],
        cut: Option<u64>,
        offset: u64,
    ) -> Result<()> {
        let target = &segments[0];
        // Newest first, so that a crash in between leaves a prefix of the log.
        let doomed = segments
            .iter()
            .rev()
            .filter(|s| s.base != target.base || cut.is_none());
        segment::remove_segment_files(self.storage.as_ref(), &self.dir, doomed.map(|s| &s.paths))?;
        crash::point("truncate.after_remove");
        let mut segment_map = self
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        segment_map.retain(|base, _| *base < target.base);
        if let Some(pos) = cut {
            // Never shrink a file that may be mapped: write the kept prefix to a new file.
            let prefix = target.bytes(pos)?;
            segment::replace_file(
                self.storage.as_ref(),
                &target.paths.log,
                &prefix[..pos as usize],
            )?;
            crash::point("truncate.after_prefix");
            let file = self
                .storage
                .open(&target.paths.log, OpenMode::Existing)
                .ctx("open", &target.paths.log)?;
            let interval = u64::from(lock(&self.config).index_interval_bytes);
            let kept = Arc::new(Segment::new(
                self.storage.clone(),
                &self.dir,
                target.base,
                file,
                pos,
                offset,
                0,
                interval,
                IndexState::Unloaded,
            ));
            kept.rebuild_index()?;
            segment_map.insert(kept.base, kept);
        }
        self.restart_at(w, segment_map, offset, None, || {
            self.high_watermark.fetch_min(offset, Ordering::AcqRel);
        })
    }

    /// Starts the writer over at `offset` in a new, empty active segment after `kept` (the
    /// segments that stay), as a truncation or a reset leaves the log: readers see the end at
    /// `offset`, `watermarks` runs under the commit lock (the caller's start and high
    /// watermark changes), and the checkpoint is written. `crash_point` is hit between the
    /// segment's creation and its installation.
    pub(super) fn restart_at(
        &self,
        w: &mut Writer,
        mut kept: BTreeMap<u64, Arc<Segment>>,
        offset: u64,
        crash_point: Option<&'static str>,
        watermarks: impl FnOnce(),
    ) -> Result<()> {
        let (segment, index_file, time_file) = self.create_segment(offset)?;
        if let Some(name) = crash_point {
            crash::point(name);
        }
        kept.insert(offset, segment.clone());
        *self.segments.write().unwrap_or_else(|e| e.into_inner()) = kept;
        w.generation += 1;
        *w = Writer {
            active: segment,
            index_file,
            time_file,
            written: FILE_HEADER_LEN as u64,
            allocated: FILE_HEADER_LEN as u64,
            fill_pending: false,
            fill_mark: w.fill_mark,
            fill_zeros: w.fill_zeros,
            next_offset: offset,
            seq: w.seq,
            generation: w.generation,
            first_append: None,
        };
        let mut st = self.commit.lock();
        st.generation = w.generation;
        st.durable = st.written;
        self.end_offset.store(offset, Ordering::Release);
        self.written_end.store(offset, Ordering::Release);
        watermarks();
        drop(st);
        self.lock_or_fail(&self.checkpoint, "checkpoint")?.write(
            w.checkpoint(false),
            w.generation,
            true,
            true,
        )
    }
}
