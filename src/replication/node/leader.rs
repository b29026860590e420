//! The leader's side of a node: produces and their acknowledgement levels, the consumer
//! offset commits, fetch answers (long-polling, from the segment files), and the in-sync set
//! as followers fetch.

use std::time::{Duration, Instant};

use super::*;

impl Shared {
    pub(super) fn produce(
        &self,
        topic: &str,
        partition: u32,
        acks: Acks,
        timeout: Duration,
        bytes: Bytes,
    ) -> Message {
        let answer = |error, base, last, acks, epoch| Message::ProduceResponse {
            error,
            base_offset: base,
            last_offset: last,
            acks,
            epoch,
        };
        let key = key_of(topic, partition);
        let epoch = lock(&self.state).unit(&key).epoch;
        let log = match self.partition(topic, partition) {
            Ok(log) => log,
            Err(code) => return answer(code, 0, 0, acks, epoch),
        };
        self.check_reopened_after_failure();
        let (generation, epoch) = {
            let u = lock(&self.state).unit(&key);
            if u.role != Role::Leader || u.handing_over {
                return answer(ErrorCode::LeadershipLost, 0, 0, acks, u.epoch);
            }
            (u.generation, u.epoch)
        };
        let batches = match split_batches(bytes) {
            Ok(b) if !b.is_empty() => b,
            _ => return answer(ErrorCode::CorruptMessage, 0, 0, acks, epoch),
        };
        let (mut base, mut last) = (None, 0);
        for batch in &batches {
            let appended = match log.append_batch(batch) {
                Ok(a) => a,
                Err(Error::InvalidArgument(_)) => {
                    return answer(ErrorCode::CorruptMessage, 0, 0, acks, epoch);
                }
                Err(_) => return answer(ErrorCode::StorageError, 0, 0, acks, epoch),
            };
            if appended.receipt.wait().is_err() {
                return answer(ErrorCode::StorageError, 0, 0, acks, epoch);
            }
            base.get_or_insert(appended.base_offset);
            last = appended.last_offset;
        }
        let base = base.unwrap_or(0);
        let error = self.wait_for_acks(topic, partition, &log, last + 1, acks, timeout, generation);
        let error = self.coordinated_ack(topic, partition, last + 1, acks, error, timeout);
        answer(error, base, last, acks, epoch)
    }

    /// Waits until every record of `log` below `end` is acknowledged at level `acks`, the
    /// in-sync set falls below what `acks` needs, this node stops leading (its role changed
    /// since `generation`), or `timeout` passes.
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per part of the wait"
    )]
    pub(super) fn wait_for_acks(
        &self,
        topic: &str,
        partition: u32,
        log: &Log,
        end: u64,
        acks: Acks,
        timeout: Duration,
        generation: u64,
    ) -> ErrorCode {
        let key = (topic.to_string(), partition);
        let deadline = Instant::now() + timeout;
        let mut trackers = lock(&self.trackers);
        loop {
            if lock(&self.state).unit(&key).generation != generation
                || self.stop.load(Ordering::Acquire)
            {
                return ErrorCode::LeadershipLost;
            }
            let durable = log.end_offset();
            let tracker = self.tracker_of(&mut trackers, &key, log);
            tracker.expire(Instant::now());
            let hw = tracker.advance(durable);
            log.set_high_watermark(hw);
            match tracker.ack_state(acks, end, durable, self.options.replicas) {
                AckState::Reached => return ErrorCode::None,
                AckState::NotEnoughReplicas { .. } => return ErrorCode::NotEnoughReplicas,
                AckState::Waiting => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return ErrorCode::Timeout;
            }
            // Woken by follower fetches; the short bound re-checks expiry of the in-sync set.
            trackers = self
                .progress
                .wait_timeout(trackers, left.min(Duration::from_millis(100)))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Commits a consumer group's position on the leader: durable in the consumer offsets log,
    /// then replicated to every in-sync replica (as `acks=all`), so that a new leader has it.
    pub(super) fn commit(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
        epoch: u64,
    ) -> ErrorCode {
        let generation = lock(&self.state).unit(&key_of(OFFSETS_LOG, 0)).generation;
        if let Err(e) = self.store.commit(group, topic, partition, offset, epoch) {
            return match e {
                Error::UnknownTopic { .. } | Error::UnknownPartition { .. } => {
                    ErrorCode::UnknownTopicOrPartition
                }
                Error::StaleEpoch { .. } => ErrorCode::FencedEpoch,
                Error::CommitBeyondEnd { .. } => ErrorCode::OffsetOutOfRange,
                Error::InvalidArgument(_) => ErrorCode::InvalidRequest,
                _ => ErrorCode::StorageError,
            };
        }
        let log = match self.store.offsets_log() {
            Ok(log) => log,
            Err(_) => return ErrorCode::StorageError,
        };
        let end = log.end_offset();
        let error = self.wait_for_acks(
            OFFSETS_LOG,
            0,
            &log,
            end,
            Acks::All,
            Duration::from_secs(30),
            generation,
        );
        self.coordinated_ack(
            OFFSETS_LOG,
            0,
            end,
            Acks::All,
            error,
            Duration::from_secs(30),
        )
    }

    /// The in-sync bookkeeping of `key`, made anew if it was made for another incarnation of
    /// the topic (see [`Tracked`]).
    pub(super) fn tracker_of<'a>(
        &self,
        trackers: &'a mut HashMap<Key, Tracked>,
        key: &Key,
        log: &Log,
    ) -> &'a mut ReplicaTracker {
        let topic_id = if key.0 == OFFSETS_LOG {
            TopicId::default()
        } else {
            self.store.topic_id(&key.0).unwrap_or_default()
        };
        let fresh = || Tracked {
            topic_id,
            tracker: ReplicaTracker::new(
                log.high_watermark(),
                self.options.replica_lag_timeout,
                self.options.min_in_sync,
            ),
        };
        let tracked = trackers.entry(key.clone()).or_insert_with(fresh);
        if tracked.topic_id != topic_id {
            *tracked = fresh();
        }
        &mut tracked.tracker
    }

    pub(super) fn fetch(
        &self,
        reply: &mut Reply<'_>,
        at: FetchAt<'_>,
        max_bytes: u32,
        max_wait: Duration,
    ) -> std::result::Result<(), WireError> {
        let FetchAt {
            role,
            node_id,
            topic,
            partition,
            offset,
            last_epoch,
            durable_end,
            topic_id,
        } = at;
        let key = key_of(topic, partition);
        let epoch = lock(&self.state).unit(&key).epoch;
        let empty = |reply: &mut Reply<'_>, error, start, end, hw, diverging| {
            reply.send_fetch(error, epoch, hw, start, end, diverging, &[])
        };
        // The handler answered `NotLeader` (with the leader's address) before calling this.
        let log = match self.partition(topic, partition) {
            Ok(log) => log,
            Err(code) => return empty(reply, code, 0, 0, 0, u64::MAX),
        };
        self.check_reopened_after_failure();
        let epoch = lock(&self.state).unit(&key).epoch;
        // A fetcher holding another incarnation of the topic (deleted and created again here)
        // must not take this one's records behind its own (KIP-516).
        if topic_id != [0; 16] && self.store.topic_id(topic).ok() != Some(TopicId(topic_id)) {
            return empty(reply, ErrorCode::InconsistentTopicId, 0, 0, 0, u64::MAX);
        }
        // Followers read what is written, durable or not: the leader's fsync and the
        // follower's fetch, append and fsync overlap, and a record is committed only once the
        // high watermark (durable on the leader and every in-sync follower) passes it.
        // Consumers and mirrors read committed records only.
        let upper = |log: &Log| match role {
            FetchRole::Follower => log.written_end(),
            FetchRole::Consumer | FetchRole::Mirror => log.high_watermark(),
        };
        let (start, end) = (log.start_offset(), log.written_end());
        // A follower whose last epoch ends earlier here (or is unknown here) diverges: it must
        // cut its log there first (KIP-101), and learns where from this answer.
        if role != FetchRole::Consumer && offset > start {
            let diverging = match log.epoch_end(last_epoch) {
                Some((e, epoch_end)) if e == last_epoch && epoch_end >= offset => None,
                Some((_, epoch_end)) => Some(epoch_end.min(offset)),
                None => Some(start),
            };
            if let Some(at) = diverging {
                return empty(reply, ErrorCode::None, start, end, log.high_watermark(), at);
            }
        }
        if offset < start || offset > end {
            return empty(
                reply,
                ErrorCode::OffsetOutOfRange,
                start,
                end,
                log.high_watermark(),
                u64::MAX,
            );
        }
        if role == FetchRole::Follower {
            self.follower_fetched(topic, partition, node_id, durable_end.min(offset), &log);
        }
        let deadline = Instant::now() + max_wait;
        while upper(&log) <= offset && !self.stop.load(Ordering::Acquire) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // A topic being deleted waits for the partitions held open (this wait holds one):
            // the wait looks every so often, and lets go.
            if topic != OFFSETS_LOG && self.store.try_partition(topic, partition).is_err() {
                return empty(reply, ErrorCode::UnknownTopicOrPartition, 0, 0, 0, u64::MAX);
            }
            match role {
                FetchRole::Follower => {
                    log.wait_for_written(offset, left.min(Duration::from_millis(50)));
                }
                // The high watermark moves with other replicas' fetches, not with appends.
                _ => std::thread::sleep(left.min(Duration::from_millis(10))),
            }
        }
        let limit = upper(&log);
        // Sent from the segment files with `sendfile` (docs/SAFETY.md).
        let ranges = if offset < limit {
            match log.read_file_ranges(offset, limit, max_bytes as usize) {
                Ok(b) => b,
                Err(Error::OffsetOutOfRange { start, end, .. }) => {
                    return empty(
                        reply,
                        ErrorCode::OffsetOutOfRange,
                        start,
                        end,
                        log.high_watermark(),
                        u64::MAX,
                    );
                }
                Err(_) => return empty(reply, ErrorCode::StorageError, 0, 0, 0, u64::MAX),
            }
        } else {
            Vec::new()
        };
        reply
            .send_fetch_ranges(
                ErrorCode::None,
                epoch,
                log.high_watermark(),
                log.start_offset(),
                log.end_offset(),
                u64::MAX,
                &ranges,
            )
            .map(drop)
    }

    /// Answers an [`Message::OffsetForTimeRequest`]: the first offset whose record's timestamp
    /// is at or after `timestamp`, looked up in the log's time index (as
    /// [`Log::offset_for_timestamp`], which `consume --dir --from-time` uses), bounded by the
    /// high watermark: consumers read committed records only, so a record above it is not
    /// found yet, and the answer is the high watermark when nothing below it is that recent.
    pub(super) fn offset_for_time(&self, topic: &str, partition: u32, timestamp: i64) -> Message {
        let answer = |error, offset| Message::OffsetForTimeResponse { error, offset };
        let log = match self.partition(topic, partition) {
            Ok(log) => log,
            Err(code) => return answer(code, 0),
        };
        let high_watermark = log.high_watermark();
        match log.offset_for_timestamp(timestamp) {
            Ok(found) => answer(
                ErrorCode::None,
                found.map_or(high_watermark, |o| o.min(high_watermark)),
            ),
            Err(e) if e.is_corruption() => answer(ErrorCode::CorruptMessage, 0),
            Err(_) => answer(ErrorCode::StorageError, 0),
        }
    }

    /// Records a follower's fetch reporting `offset` as its durable end and moves the high
    /// watermark.
    pub(super) fn follower_fetched(
        &self,
        topic: &str,
        partition: u32,
        node: &str,
        offset: u64,
        log: &Log,
    ) {
        let mut trackers = lock(&self.trackers);
        let tracker = self.tracker_of(&mut trackers, &(topic.to_string(), partition), log);
        let end = log.end_offset();
        let hw = tracker.on_fetch(node, offset, end, end, Instant::now());
        log.set_high_watermark(hw);
        drop(trackers);
        self.progress.notify_all();
    }
}
