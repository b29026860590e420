//! The writer path: appends, index entries, segment rolls and sealing, the preallocation of the
//! active segment (`prealloc::Filler`), the group-commit fsync (`Syncer`) and the clean close.
//! Everything here runs under the `writer` lock, except the fsyncs themselves.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use zerocopy::IntoBytes;

use super::checkpoint::Checkpoint;
use super::commit::{Receipt, SyncPoint, Syncer};
use super::index::{IndexBuilder, IndexState, Planned};
use super::segment::{self, Segment};
use super::{Appended, Inner, NewSegment, Preallocate, Writer, lock, prealloc};
use crate::crash;
use crate::error::{Error, IoContext, Result};
use crate::format::{BatchParts, EncodedBatch, FILE_HEADER_LEN, MAX_BATCH_BYTES};
use crate::storage::ZEROS;

/// Index entries of either kind held in memory before they are written to their file in one
/// run (`Inner::flush_index`): 32 entries are about 128 KiB of log at the default interval.
const INDEX_RUN: usize = 32;

impl Inner {
    pub(super) fn append_encoded(&self, mut batch: EncodedBatch) -> Result<Appended> {
        let mut w = self.lock_or_fail(&self.writer, "writer")?;
        self.check_writable()?;
        let len = batch.as_bytes().len() as u64;
        if self.should_roll(&w, len, batch.record_count()) {
            self.roll(&mut w).map_err(|e| self.fail(e))?;
        }
        let base = w.next_offset;
        batch.stamp(base);
        let (count, max_ts) = (batch.record_count(), batch.max_timestamp());
        self.write_batch(&mut w, &[batch.as_bytes()], base, count, max_ts)
    }

    /// As [`Inner::append_encoded`] for a batch in two pieces, header and borrowed payload,
    /// written with one vectored write: the payload is never copied in user space.
    pub(super) fn append_parts(&self, mut batch: BatchParts<'_>) -> Result<Appended> {
        let mut w = self.lock_or_fail(&self.writer, "writer")?;
        self.check_writable()?;
        let len = batch.encoded_len() as u64;
        if self.should_roll(&w, len, batch.record_count()) {
            self.roll(&mut w).map_err(|e| self.fail(e))?;
        }
        let base = w.next_offset;
        batch.stamp(base);
        let (count, max_ts) = (batch.record_count(), batch.max_timestamp());
        self.write_batch(
            &mut w,
            &[batch.header_bytes(), batch.payload()],
            base,
            count,
            max_ts,
        )
    }

    /// Writes one stamped batch at the writer's position, with its index entries, and queues it
    /// for the group commit. The caller checked that the log is writable and rolled if needed.
    /// The batch is the concatenation of `pieces` (a header and a borrowed payload, or one
    /// encoded buffer), written with one (vectored) write.
    pub(super) fn write_batch(
        &self,
        w: &mut Writer,
        pieces: &[&[u8]],
        base: u64,
        count: u32,
        max_ts: i64,
    ) -> Result<Appended> {
        debug_assert_eq!(base, w.next_offset, "offsets follow on");
        let len: u64 = pieces.iter().map(|p| p.len() as u64).sum();
        let pos = w.written;
        let active = w.active.clone();
        let rel = (base - active.base) as u32;
        // Index entries go into memory after the batch is written, and to their files in runs
        // before a later batch (and at the seal): a failed write (a full disk) leaves at most
        // stray entries past the end, which the next run overwrites and which sealing trims.
        let planned = self.plan_index_entries(w, rel, rel + count - 1, pos, max_ts);
        self.flush_index(w, false).map_err(|e| self.fail(e))?;
        active
            .file
            .write_vectored_at(pieces, pos)
            .map_err(|e| self.fail(Error::io("write", &active.paths.log, e)))?;
        crash::point("append.after_write");
        let segment_max_ts = match &mut *active.index.write().unwrap_or_else(|e| e.into_inner()) {
            IndexState::Active(builder) => {
                builder.apply(&planned);
                builder.max_ts
            }
            _ => i64::MIN,
        };
        debug_assert!(count > 0, "a batch holds a record");
        debug_assert!(
            base >= active.base && pos >= FILE_HEADER_LEN as u64,
            "the batch lies in the active segment, after its header"
        );
        w.written += len;
        w.allocated = w.allocated.max(w.written);
        w.next_offset = base + u64::from(count);
        active.note_written(w.written, w.next_offset);
        self.publish_written(w.next_offset);
        w.seq += len;
        w.first_append.get_or_insert_with(Instant::now);
        self.want_fill(w);
        let mut st = self.commit.lock();
        st.point = Some(SyncPoint {
            generation: w.generation,
            seq: w.seq,
            segment: active.clone(),
            written: w.written,
            next_offset: w.next_offset,
            max_ts: segment_max_ts,
        });
        self.commit.wrote(&mut st, w.seq);
        debug_assert!(
            self.end_offset.load(Ordering::Acquire) <= base,
            "nothing at or past this batch is visible before it is published"
        );
        let target = if self.commit.policy().acks_durable() {
            w.seq
        } else {
            active.publish(w.written, w.next_offset, max_ts);
            self.publish_end(w.next_offset);
            0
        };
        drop(st);
        Ok(Appended {
            base_offset: base,
            last_offset: w.next_offset - 1,
            receipt: Receipt::new(self.commit.clone(), target),
        })
    }

    /// Asks the preallocation thread to extend the active segment when less than half a chunk
    /// of preallocated space is left ahead of the writer.
    pub(super) fn want_fill(&self, w: &mut Writer) {
        if self.preallocate == Preallocate::Auto {
            // Decide again after every AUTO_WINDOW bytes, from the fsyncs that covered them.
            let syncs = self.group_syncs.load(Ordering::Acquire);
            let (bytes, fsyncs) = (w.seq - w.fill_mark.0, syncs - w.fill_mark.1);
            if bytes >= prealloc::AUTO_WINDOW {
                w.fill_mark = (w.seq, syncs);
                w.fill_zeros = fsyncs > 0 && bytes / fsyncs < prealloc::ZEROS_BELOW;
            }
        }
        if self.preallocate == Preallocate::Off
            || (self.preallocate == Preallocate::Auto && !w.fill_zeros)
            || w.fill_pending
            || w.allocated >= w.written + prealloc::chunk_for(w.written) / 2
            || w.allocated >= lock(&self.config).segment_bytes
        {
            return;
        }
        if let Some(this) = self.this.get() {
            w.fill_pending = prealloc::request(this.clone());
        }
    }

    pub(super) fn plan_index_entries(
        &self,
        w: &Writer,
        rel: u32,
        last_rel: u32,
        pos: u64,
        max_ts: i64,
    ) -> Planned {
        let state = w.active.index.read().unwrap_or_else(|e| e.into_inner());
        let IndexState::Active(builder) = &*state else {
            unreachable!("the active segment's index is always the in-memory one");
        };
        builder.plan(rel, last_rel, pos, max_ts)
    }

    /// Writes the active segment's index entries that are only in memory to its index files,
    /// once `INDEX_RUN` of either kind wait (or all of them, with `all`): one `pwrite` per run
    /// instead of two per indexed batch. Readers in this process use the in-memory index, so
    /// only a reopen after a crash sees the files without the last run; it then plans entries
    /// again from the last one it finds (the index stays sparse-correct, only sparser there),
    /// as after a power loss, which could always lose entries the group fsync does not sync.
    pub(super) fn flush_index(&self, w: &Writer, all: bool) -> Result<()> {
        let state = w.active.index.read().unwrap_or_else(|e| e.into_inner());
        let IndexState::Active(builder) = &*state else {
            return Ok(());
        };
        let [offsets, times] = &w.active.index_flushed;
        let (o, t) = (
            offsets.load(Ordering::Acquire),
            times.load(Ordering::Acquire),
        );
        let due = |done: usize, len: usize| len > done && (all || len - done >= INDEX_RUN);
        if due(o, builder.offsets.len()) {
            let at = (FILE_HEADER_LEN + o * 8) as u64;
            w.index_file
                .write_at(builder.offsets[o..].as_bytes(), at)
                .ctx("write", &w.active.paths.index)?;
            offsets.store(builder.offsets.len(), Ordering::Release);
        }
        crash::point("index.during_update");
        if due(t, builder.times.len()) {
            let at = (FILE_HEADER_LEN + t * 12) as u64;
            w.time_file
                .write_at(builder.times[t..].as_bytes(), at)
                .ctx("write", &w.active.paths.time)?;
            times.store(builder.times.len(), Ordering::Release);
        }
        Ok(())
    }

    pub(super) fn should_roll(&self, w: &Writer, len: u64, records: u32) -> bool {
        if w.written <= FILE_HEADER_LEN as u64 {
            return false;
        }
        let config = lock(&self.config);
        let too_big = w.written + len > config.segment_bytes;
        // Index entries hold offsets relative to the segment's base in 32 bits.
        let too_many = w.next_offset + u64::from(records) - w.active.base > u64::from(u32::MAX);
        let too_old = config.segment_ms.is_some_and(|ms| {
            w.first_append
                .is_some_and(|t| t.elapsed().as_millis() as u64 >= ms)
        });
        too_big || too_old || too_many
    }

    pub(super) fn active_max_ts(w: &Writer) -> i64 {
        match &*w.active.index.read().unwrap_or_else(|e| e.into_inner()) {
            IndexState::Active(b) => b.max_ts,
            _ => i64::MIN,
        }
    }

    /// Writes the active segment's last time entry and syncs its three files; everything
    /// written so far becomes durable and visible.
    pub(super) fn seal_active(&self, w: &mut Writer) -> Result<()> {
        let (offsets, times) = match &mut *w.active.index.write().unwrap_or_else(|e| e.into_inner())
        {
            IndexState::Active(b) => {
                b.seal();
                (b.offsets.len(), b.times.len())
            }
            _ => (0, 0),
        };
        let paths = &w.active.paths;
        let io = || -> Result<()> {
            // Every entry still in memory, the seal's last time entry with them.
            self.flush_index(w, true)?;
            // Trim stray entries a failed append may have left (the active index files are
            // never mapped, so shrinking them is safe).
            let index_len = (FILE_HEADER_LEN + offsets * 8) as u64;
            w.index_file
                .set_len(index_len)
                .ctx("truncate", &paths.index)?;
            w.time_file
                .set_len((FILE_HEADER_LEN + times * 12) as u64)
                .ctx("truncate", &paths.time)?;
            // Trim preallocated space past the last batch. Readers never look past `visible`
            // (at most `written`), so no mapping is read past the new end.
            if w.allocated > w.written || w.active.file.len().ctx("stat", &paths.log)? > w.written {
                w.active
                    .file
                    .set_len(w.written)
                    .ctx("truncate", &paths.log)?;
            }
            self.sync_segment(&w.active)?;
            w.index_file.sync().ctx("fsync", &paths.index)?;
            w.time_file.sync().ctx("fsync", &paths.time)
        };
        io().map_err(|e| Error::Failed(self.commit.fail(e)))?;
        w.allocated = w.written;
        let max_ts = Self::active_max_ts(w);
        let mut st = self.commit.lock();
        self.commit.made_durable(&mut st, w.generation, w.seq);
        w.active.publish(w.written, w.next_offset, max_ts);
        self.publish_end(w.next_offset);
        Ok(())
    }

    pub(super) fn roll(&self, w: &mut Writer) -> Result<()> {
        self.seal_active(w)?;
        crash::point("roll.after_seal");
        let (segment, index_file, time_file) = self.create_segment(w.next_offset)?;
        crash::point("roll.after_create");
        debug_assert_eq!(
            w.active.next_offset(),
            w.next_offset,
            "the sealed segment ends where the new one starts (offsets contiguous)"
        );
        *w.active.index.write().unwrap_or_else(|e| e.into_inner()) = IndexState::Unloaded;
        self.segments
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(segment.base, segment.clone());
        *w = Writer {
            active: segment,
            index_file,
            time_file,
            written: FILE_HEADER_LEN as u64,
            allocated: FILE_HEADER_LEN as u64,
            fill_pending: false,
            fill_mark: w.fill_mark,
            fill_zeros: w.fill_zeros,
            next_offset: w.next_offset,
            seq: w.seq,
            generation: w.generation,
            first_append: None,
        };
        // Synced, so that after a power loss recovery starts in this segment at the latest.
        // (A poisoned checkpoint lock has failed the log: nothing more to write.)
        if let Ok(mut checkpoint) = self.lock_or_fail(&self.checkpoint, "checkpoint")
            && let Err(e) = checkpoint.write(w.checkpoint(false), w.generation, true, true)
        {
            tracing::warn!(error = %e, "writing the recovery checkpoint failed; recovery will scan more");
        }
        Ok(())
    }

    /// Creates the three files of a new empty segment, durable (files and directory entries).
    pub(super) fn create_segment(&self, base: u64) -> Result<NewSegment> {
        let [log, index, time] =
            segment::create_segment_files(self.storage.as_ref(), &self.dir, base)?;
        crash::point("dir_fsync.before");
        self.storage
            .sync_dir(&self.dir)
            .ctx("fsync directory", &self.dir)?;
        crash::point("dir_fsync.after");
        let config = *lock(&self.config);
        let interval = u64::from(config.index_interval_bytes);
        let segment = Segment::new(
            self.storage.clone(),
            &self.dir,
            base,
            log,
            FILE_HEADER_LEN as u64,
            base,
            config.segment_bytes + u64::from(MAX_BATCH_BYTES),
            interval,
            IndexState::Active(IndexBuilder::new(interval)),
        );
        Ok((Arc::new(segment), index, time))
    }

    /// fsyncs a segment's `.log` file through the sync gate (see `sync_gate`); a failure fails
    /// the log.
    pub(super) fn sync_segment(&self, segment: &Segment) -> Result<()> {
        let _gate = self.lock_or_fail(&self.sync_gate, "sync gate")?;
        self.commit.check_failed()?;
        segment
            .file
            .sync()
            .map_err(|e| Error::Failed(self.commit.fail(Error::io("fsync", &segment.paths.log, e))))
    }

    pub(super) fn close(&self) -> Result<()> {
        let mut w = self.lock_or_fail(&self.writer, "writer")?;
        if self.closed.swap(true, Ordering::AcqRel) || self.read_only {
            return Ok(());
        }
        self.commit.check_failed()?;
        self.seal_active(&mut w)?;
        self.lock_or_fail(&self.checkpoint, "checkpoint")?.write(
            w.checkpoint(true),
            w.generation,
            true,
            true,
        )
    }
}

impl prealloc::Filler for Inner {
    /// Extends the active segment by up to a chunk, in pieces under the writer lock and only
    /// at or past the writer's position, then fsyncs it (outside the lock).
    fn fill(&self) {
        let stale = |w: &Writer, segment: &Arc<Segment>, generation: u64| {
            !Arc::ptr_eq(&w.active, segment)
                || w.generation != generation
                || self.closed.load(Ordering::Acquire)
                || self.commit.check_failed().is_err()
        };
        // What to fill; the loop stops at once if there is nothing (or the log closed).
        let (segment, generation, end, zeros) = {
            let Ok(w) = self.lock_or_fail(&self.writer, "writer") else {
                return;
            };
            let limit = lock(&self.config).segment_bytes;
            let end = (w.allocated.max(w.written) + prealloc::chunk_for(w.written)).min(limit);
            (w.active.clone(), w.generation, end, w.fill_zeros)
        };
        loop {
            let Ok(mut w) = self.lock_or_fail(&self.writer, "writer") else {
                return;
            };
            if stale(&w, &segment, generation) {
                return;
            }
            let at = w.allocated.max(w.written);
            if at >= end {
                w.fill_pending = false;
                return;
            }
            let (result, upto) = match zeros {
                false => (segment.file.allocate(at, end - at), end),
                true => {
                    let n = (end - at).min(prealloc::PIECE);
                    (segment.file.write_at(&ZEROS[..n as usize], at), at + n)
                }
            };
            if let Err(e) = result {
                // Not an error of the log: appends grow the file themselves (and meet a full
                // disk themselves). Do not retry before the writer passes this chunk.
                tracing::debug!(segment = %segment.paths.log.display(), error = %e, "preallocation failed");
                w.allocated = end;
                w.fill_pending = false;
                return;
            }
            w.allocated = upto;
            drop(w);
            // The fsync that makes the new length and blocks durable, so that the appends'
            // own fsyncs need not: one per piece, so that a group commit waiting at the sync
            // gate waits for at most one piece. Its failure is the log's: it may have consumed
            // a write-back error of appended data, which a later fsync would then not report.
            if self.sync_segment(&segment).is_err() {
                return;
            }
        }
    }
}

impl Syncer for Inner {
    /// One group-commit fsync, run by the flusher thread or a leading writer.
    fn sync_now(&self) {
        // What the latest append recorded (see `SyncPoint`): no wait for the writer lock.
        let point = self.commit.lock().point.clone();
        let (generation, seq, segment, written, next, max_ts) = match point {
            Some(p) => (
                p.generation,
                p.seq,
                p.segment,
                p.written,
                p.next_offset,
                p.max_ts,
            ),
            None => {
                // Nothing appended since the log opened.
                // A poisoned writer has failed the log, which wakes every waiting receipt.
                let Ok(w) = self.lock_or_fail(&self.writer, "writer") else {
                    return;
                };
                (
                    w.generation,
                    w.seq,
                    w.active.clone(),
                    w.written,
                    w.next_offset,
                    Self::active_max_ts(&w),
                )
            }
        };
        crash::point("fsync.before");
        if self.sync_segment(&segment).is_err() {
            return;
        }
        crash::point("fsync.after");
        self.group_syncs.fetch_add(1, Ordering::AcqRel);
        let mut st = self.commit.lock();
        let Some(covered) = self.commit.covered(&mut st, generation, seq) else {
            return;
        };
        if self.commit.policy().acks_durable() {
            // Visible <= durable: only what this fsync covered is published.
            debug_assert!(
                st.durable >= seq,
                "publishing bytes up to {seq} while only {} are durable",
                st.durable
            );
            segment.publish(written, next, max_ts);
            self.publish_end(next);
        }
        self.commit.raise_durable_hint(seq);
        drop(st);
        // Woken with the lock released (see `Commit::covered`).
        covered.into_iter().for_each(std::task::Waker::wake);
        let c = Checkpoint {
            clean: false,
            segment_base: segment.base,
            position: written,
            next_offset: next,
            max_ts,
        };
        if let Ok(mut checkpoint) = self.lock_or_fail(&self.checkpoint, "checkpoint")
            && let Err(e) = checkpoint.write_after_fsync(c, generation, seq)
        {
            tracing::warn!(error = %e, "writing the recovery checkpoint failed; recovery will scan more");
        }
    }
}
