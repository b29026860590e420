//! What a log needs to be a replica: appending a leader's batches unchanged, the durable epoch
//! history, the high watermark, and a wait for new data (so a fetch can long-poll).
//!
//! A follower's log holds the leader's bytes at the leader's offsets: [`Log::append_replica`]
//! never re-encodes, never re-stamps, and refuses anything that does not continue the log
//! exactly (base offset == log end, epochs that never fall).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::{Error, ReplicaGap, Result};
use crate::format::Batch;

use super::{Appended, EpochHistory, Inner, Log, lock};

impl Log {
    /// Appends a leader's batches exactly as they are: each must have passed
    /// [`Batch::validate`] (header and CRC), start at the log's end and carry an epoch at or
    /// above the log's current one. A batch of a new epoch records that epoch in the history
    /// (durably) before it is written. Returns the offsets of all of them and the receipt of the
    /// last, which completes once every one of them is acknowledged under the fsync policy.
    ///
    /// On [`Error::NotContiguous`] nothing of the refused batch was appended (earlier batches of
    /// the same call were).
    pub fn append_replica(&self, batches: &[Batch]) -> Result<Appended> {
        let Some(first) = batches.first() else {
            return Err(Error::InvalidArgument("no batch to append".into()));
        };
        let mut last = None;
        for batch in batches {
            let mut w = self.inner.lock_or_fail(&self.inner.writer, "writer")?;
            self.inner.check_writable()?;
            // Epochs of the records never fall; the leader's may be below this log's current
            // epoch (a follower that was promoted and deposed keeps the higher number).
            let latest = self
                .inner
                .lock_or_fail(&self.inner.epochs, "epochs")?
                .latest();
            if batch.base_offset() != w.next_offset
                || latest.is_some_and(|e| batch.leader_epoch() < e)
            {
                return Err(Error::NotContiguous(ReplicaGap {
                    offset: batch.base_offset(),
                    epoch: batch.leader_epoch(),
                    end: w.next_offset,
                    current_epoch: latest.unwrap_or(0),
                }));
            }
            if latest != Some(batch.leader_epoch()) {
                self.inner
                    .record_epoch(batch.leader_epoch(), batch.base_offset())?;
            }
            let bytes = batch.as_bytes();
            if self
                .inner
                .should_roll(&w, bytes.len() as u64, batch.record_count())
            {
                self.inner.roll(&mut w).map_err(|e| self.inner.fail(e))?;
            }
            let appended = self.inner.write_batch(
                &mut w,
                &[bytes],
                batch.base_offset(),
                batch.record_count(),
                batch.max_timestamp(),
            )?;
            last = Some(appended);
        }
        let last = last.expect("at least one batch");
        Ok(Appended {
            base_offset: first.base_offset(),
            ..last
        })
    }

    /// Appends a batch encoded elsewhere (a producer's, received by a leader): its records are
    /// kept byte for byte, the log gives it its offsets and its current leader epoch. The batch
    /// must have passed [`Batch::validate`]; its records are decoded once here, so that a batch
    /// whose CRC is right but whose records are not is refused rather than stored.
    pub fn append_batch(&self, batch: &Batch) -> Result<Appended> {
        let records = batch
            .records()
            .map_err(|e| Error::InvalidArgument(format!("bad records in the batch: {e}")))?;
        for record in records {
            record.map_err(|e| Error::InvalidArgument(format!("bad record in the batch: {e}")))?;
        }
        // The records are borrowed from `batch` and written behind a new header (no copy).
        let parts = crate::format::BatchParts::from_batch(batch, self.leader_epoch());
        self.inner.append_parts(parts)
    }

    /// The log's epoch history: which leader epoch started at which offset.
    ///
    /// Records written before any epoch was set are in epoch 0: a log that holds records and
    /// has no history reports `(0, start offset)`.
    pub fn epoch_history(&self) -> EpochHistory {
        let history = lock(&self.inner.epochs).clone();
        if history.entries().is_empty() && self.written_end() > self.start_offset() {
            let mut seeded = history;
            // Cannot fail: the history is empty.
            let _ = seeded.assign(0, self.start_offset());
            return seeded;
        }
        history
    }

    /// The epoch of this log's last record (what a follower asks the leader about when it
    /// rejoins); `None` if the log holds no record or its history does not cover it. Not the
    /// history's newest epoch, which may hold no record (a leader elected that wrote nothing)
    /// and which another leader may never have seen.
    pub fn last_record_epoch(&self) -> Option<u64> {
        let end = self.written_end();
        if end <= self.start_offset() {
            return None;
        }
        self.epoch_history().epoch_at(end - 1)
    }

    /// Where `epoch` ends in this log (Kafka's `OffsetsForLeaderEpoch`): the largest epoch at
    /// or below it that the history knows, and one past its last offset (the start of the next
    /// epoch, or the written end, [`Log::written_end`], for the newest). `None` if no known
    /// epoch is at or below it.
    pub fn epoch_end(&self, epoch: u64) -> Option<(u64, u64)> {
        self.epoch_history().end_of(epoch, self.written_end())
    }

    /// The high watermark: the offset below which records are committed (on enough replicas).
    /// Until the replication layer sets one ([`Log::set_high_watermark`]) it is the end offset:
    /// a log alone is its own quorum.
    pub fn high_watermark(&self) -> u64 {
        if self.inner.hw_managed.load(Ordering::Acquire) {
            self.inner.high_watermark.load(Ordering::Acquire)
        } else {
            self.end_offset()
        }
    }

    /// Sets the high watermark (the replication layer calls this: the leader as followers make
    /// records durable, a follower from the leader's fetch answers). It never exceeds the end
    /// offset; a truncation lowers it with the end.
    pub fn set_high_watermark(&self, hw: u64) {
        let hw = hw.min(self.end_offset());
        self.inner.high_watermark.store(hw, Ordering::Release);
        self.inner.hw_managed.store(true, Ordering::Release);
    }

    /// One past the last offset written, durable or not: at least [`Log::end_offset`], and
    /// above it while appends wait for their fsync (under [`FsyncPolicy::Always`]). What a
    /// follower's fetch may read ([`Log::read_file_ranges`] with this as its upper bound), and
    /// where a replica's next [`Log::append_replica`] must start.
    ///
    /// [`FsyncPolicy::Always`]: crate::FsyncPolicy::Always
    pub fn written_end(&self) -> u64 {
        self.inner
            .written_end
            .load(Ordering::Acquire)
            .max(self.end_offset())
    }

    /// Waits until the end offset is above `offset` (a record at `offset` can be read) or
    /// `timeout` passes; returns whether it is. For fetches that long-poll instead of spinning.
    pub fn wait_for_data(&self, offset: u64, timeout: Duration) -> bool {
        self.wait_for(offset, timeout, Log::end_offset)
    }

    /// [`Log::wait_for_data`] for [`Log::written_end`]: wakes as soon as a record at `offset`
    /// is written, before it is durable.
    pub fn wait_for_written(&self, offset: u64, timeout: Duration) -> bool {
        self.wait_for(offset, timeout, Log::written_end)
    }

    fn wait_for(&self, offset: u64, timeout: Duration, end: fn(&Log) -> u64) -> bool {
        let deadline = Instant::now() + timeout;
        let inner = &self.inner;
        let (mutex, condvar) = &inner.data_signal;
        inner.data_waiters.fetch_add(1, Ordering::AcqRel);
        let mut guard = lock(mutex);
        let ready = loop {
            if end(self) > offset || inner.closed.load(Ordering::Acquire) {
                break end(self) > offset;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            guard = condvar
                .wait_timeout(guard, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        };
        drop(guard);
        inner.data_waiters.fetch_sub(1, Ordering::AcqRel);
        ready
    }
}

impl Inner {
    /// Raises the written end to `end` and wakes [`Log::wait_for_written`] waiters.
    pub(super) fn publish_written(&self, end: u64) {
        let before = self.written_end.fetch_max(end, Ordering::AcqRel);
        if end > before && self.data_waiters.load(Ordering::Acquire) > 0 {
            let _g = lock(&self.data_signal.0);
            self.data_signal.1.notify_all();
        }
    }

    /// Raises the end offset readers see to `end` and wakes [`Log::wait_for_data`] waiters.
    pub(super) fn publish_end(&self, end: u64) {
        let before = self.end_offset.fetch_max(end, Ordering::AcqRel);
        if end > before && self.data_waiters.load(Ordering::Acquire) > 0 {
            // Taking the mutex orders this wake after a waiter's check of the end offset.
            let _g = lock(&self.data_signal.0);
            self.data_signal.1.notify_all();
        }
    }

    /// Starts `epoch` (at least the current one) at `start` in the history, durably, and makes
    /// it the epoch stamped into new local batches. Called with the writer lock held (so `start`
    /// is the log's end).
    pub(super) fn start_epoch(&self, epoch: u64, start: u64) -> Result<()> {
        let mut epochs = self.lock_or_fail(&self.epochs, "epochs")?;
        self.seed_epoch_zero(&mut epochs, start)?;
        let raised = epochs.raise(epoch)?;
        if epochs.assign(epoch, start)? || raised {
            epochs.store(self.storage.as_ref(), &self.dir)?;
        }
        self.epoch.store(epochs.current(), Ordering::Release);
        Ok(())
    }

    /// Records that the replicated records of `epoch` start at `start` (the current epoch rises
    /// to it if it is higher), durably. Called with the writer lock held.
    fn record_epoch(&self, epoch: u64, start: u64) -> Result<()> {
        let mut epochs = self.lock_or_fail(&self.epochs, "epochs")?;
        self.seed_epoch_zero(&mut epochs, start)?;
        if epochs.assign(epoch, start)? {
            epochs.store(self.storage.as_ref(), &self.dir)?;
        }
        self.epoch.store(epochs.current(), Ordering::Release);
        Ok(())
    }

    /// Records written before the first epoch was set are in epoch 0: when the first entry is
    /// added at `start` above the log start, `(0, log start)` goes in first, so that the
    /// history answers for those records too.
    fn seed_epoch_zero(&self, epochs: &mut EpochHistory, start: u64) -> Result<()> {
        let log_start = self.start_offset.load(Ordering::Acquire);
        if epochs.entries().is_empty() && start > log_start {
            epochs.assign(0, log_start)?;
        }
        Ok(())
    }

    /// Applies `cut` to the epoch history (after a truncation or retention) and stores it if it
    /// changed.
    pub(super) fn cut_epochs(&self, cut: impl FnOnce(&mut EpochHistory) -> bool) -> Result<()> {
        let mut epochs = self.lock_or_fail(&self.epochs, "epochs")?;
        if cut(&mut epochs) {
            epochs.store(self.storage.as_ref(), &self.dir)?;
        }
        Ok(())
    }
}
