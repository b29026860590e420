//! The follower's (and mirror's) side of a node: one fetcher per partition and one for the
//! consumer offsets log, the leader's topics taken over, divergent suffixes cut (KIP-101,
//! KIP-279), and the lag behind the leader.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

impl Shared {
    pub(super) fn join_fetchers(&self) {
        let fetchers = std::mem::take(&mut *lock(&self.fetchers));
        for f in fetchers {
            let _ = f.join();
        }
    }

    /// Starts a fetcher for every partition (and the consumer offsets log) this node follows;
    /// per partition, none for a unit it leads.
    pub(super) fn start_fetchers(self: &Arc<Self>) -> Result<()> {
        let generation = lock(&self.state).generation;
        self.ensure_fetcher(OFFSETS_LOG, 0, generation)?;
        for t in self.store.topics()? {
            if self.copies(&t.name) {
                for p in 0..t.partitions() {
                    self.ensure_fetcher(&t.name, p, generation)?;
                }
            }
        }
        Ok(())
    }

    /// Whether this node copies topic `name` (a mirror's `--topics` pattern; every topic
    /// otherwise).
    pub(super) fn copies(&self, name: &str) -> bool {
        self.topics.as_ref().is_none_or(|p| p.matches(name))
    }

    /// Starts a fetcher for a partition, unless one of this generation runs for it.
    pub(super) fn ensure_fetcher(
        self: &Arc<Self>,
        topic: &str,
        partition: u32,
        generation: u64,
    ) -> Result<()> {
        let key = key_of(topic, partition);
        let generation = if self.per_unit() {
            // Per partition: a unit's own generation, and no fetcher for a unit it leads.
            let u = lock(&self.state).unit(&key);
            if u.role == Role::Leader {
                return Ok(());
            }
            u.generation
        } else {
            generation
        };
        let entry = (key, generation);
        if !lock(&self.fetching).insert(entry.clone()) {
            return Ok(());
        }
        /// Takes the fetcher off `fetching` however it ends.
        struct Running(Arc<Shared>, (Key, u64));
        impl Drop for Running {
            fn drop(&mut self) {
                lock(&self.0.fetching).remove(&self.1);
            }
        }
        let running = Running(self.clone(), entry);
        let (shared, topic) = (self.clone(), topic.to_string());
        let handle = std::thread::Builder::new()
            .name(format!("stratalog-fetch-{topic}-{partition}"))
            .spawn(move || {
                let _running = running;
                shared.fetch_loop(&topic, partition, generation)
            })
            .map_err(|e| Error::io("spawn fetcher thread", "stratalog-fetch", e))?;
        let mut fetchers = lock(&self.fetchers);
        fetchers.retain(|f| !f.is_finished());
        fetchers.push(handle);
        Ok(())
    }

    /// A follower takes its leader's topics: it creates those it lacks (with the leader's id,
    /// partition count, partitioner and settings), adds the partitions the leader added, takes
    /// the leader's changes of settings (see [`Shared::settings_of`]), and fetches them all. A
    /// topic of the same name with another id is the leader's if it holds no record (a store
    /// prepared offline: it takes the leader's id, since the replicated consumer offsets name
    /// topics by id); otherwise it is another incarnation
    /// (the leader deleted the topic and created it again), which is deleted here and created
    /// anew. A follower (not a mirror) deletes the topics its leader no longer has.
    pub(super) fn sync_topics(
        self: &Arc<Self>,
        client: &mut Client,
        generation: u64,
    ) -> Result<()> {
        let answer = client
            .call(&Message::MetadataRequest)
            .map_err(|e| Error::InvalidArgument(format!("metadata from the leader: {e}")))?;
        let Message::MetadataResponse { topics, .. } = answer else {
            return Err(Error::InvalidArgument(format!(
                "the leader answered a metadata request with {answer:?}"
            )));
        };
        for t in &topics {
            if !self.copies(&t.topic) {
                continue;
            }
            let id = TopicId(t.topic_id);
            let local = match self.store.topic(&t.topic) {
                Ok(local) if local.id != id && self.holds_records(&local)? => {
                    tracing::warn!(
                        topic = t.topic,
                        "the leader holds another incarnation of this topic (deleted and \
                         created again): deleting this one and fetching the leader's"
                    );
                    if !self.drop_topic(&t.topic)? {
                        continue;
                    }
                    None
                }
                Ok(local) if local.id != id => {
                    tracing::info!(topic = t.topic, "taking the leader's topic id");
                    self.store.adopt_topic_id(&t.topic, id)?;
                    Some(local)
                }
                Ok(local) => Some(local),
                Err(Error::UnknownTopic { .. }) => None,
                Err(e) => return Err(e),
            };
            if let Some(local) = &local {
                let wanted = self.settings_of(t, local);
                if wanted != local.config {
                    tracing::info!(
                        topic = t.topic,
                        from = ?local.config,
                        to = ?wanted,
                        "taking the leader's settings of the topic"
                    );
                    self.store.set_topic_config(&t.topic, wanted)?;
                }
            }
            let partitions = match local {
                Some(local) if local.partitions() < t.partitions => {
                    tracing::info!(
                        topic = t.topic,
                        from = local.partitions(),
                        to = t.partitions,
                        "adding the partitions the leader added"
                    );
                    self.store.add_partitions(&t.topic, t.partitions)?;
                    t.partitions
                }
                Some(local) => {
                    if local.partitions() > t.partitions {
                        tracing::warn!(
                            topic = t.topic,
                            here = local.partitions(),
                            leader = t.partitions,
                            "the leader has fewer partitions; only the partitions both have \
                             are replicated"
                        );
                    }
                    local.partitions().min(t.partitions)
                }
                None => {
                    let kind = t.partitioner.parse().unwrap_or_default();
                    self.store
                        .create_topic_as(&t.topic, t.partitions, t.config, kind, Some(id))?;
                    tracing::info!(
                        topic = t.topic,
                        partitions = t.partitions,
                        "created a topic of the leader"
                    );
                    t.partitions
                }
            };
            for p in 0..partitions {
                self.ensure_fetcher(&t.topic, p, generation)?;
            }
        }
        if lock(&self.state).role == Role::Follower {
            for local in self.store.topics()? {
                if !topics.iter().any(|t| t.topic == local.name) {
                    tracing::warn!(
                        topic = local.name,
                        "the leader has no such topic (deleted there): deleting it"
                    );
                    self.drop_topic(&local.name)?;
                }
            }
        }
        Ok(())
    }

    /// The settings this node keeps `local`, its copy of the leader's topic `leader`, with:
    /// the leader's, so that a failover does not change how the topic is kept; except that a
    /// mirror keeps its own fsync policy once it has created the topic (it took the source's
    /// then). A mirror counts toward no acknowledgement, and what a power loss takes from its
    /// unsynced tail it fetches again from the source, so an operator may relax its policy
    /// (see docs/REPLICATION.md, "Followers take their leader's topics").
    fn settings_of(&self, leader: &TopicMetadata, local: &crate::store::TopicInfo) -> TopicConfig {
        let mut wanted = leader.config;
        if lock(&self.state).role == Role::Mirror {
            wanted.fsync = local.config.fsync;
        }
        wanted
    }

    /// Whether any partition of `topic` holds a record.
    fn holds_records(&self, topic: &crate::store::TopicInfo) -> Result<bool> {
        for p in 0..topic.partitions() {
            let log = self.store.partition(&topic.name, p)?;
            if log.written_end() > log.start_offset() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Deletes a topic of this follower: true once it is gone. Its fetchers stop first; while
    /// one still holds a partition open the deletion is refused, and the next sync of the
    /// topics tries again.
    fn drop_topic(&self, name: &str) -> Result<bool> {
        lock(&self.dropping).insert(name.to_string());
        match self.store.delete_topic(name) {
            Ok(()) | Err(Error::UnknownTopic { .. }) => {
                lock(&self.dropping).remove(name);
                self.resync.store(true, Ordering::Release);
                Ok(true)
            }
            Err(Error::InUse { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub(super) fn running(&self, generation: u64) -> bool {
        !self.stop.load(Ordering::Acquire) && lock(&self.state).generation == generation
    }

    /// Whether the node runs and `key`'s unit is still in `generation`.
    pub(super) fn running_at(&self, key: &Key, generation: u64) -> bool {
        !self.stop.load(Ordering::Acquire) && lock(&self.state).unit(key).generation == generation
    }

    /// One partition's fetcher: fetch from the log end, append, repeat, until the node stops
    /// or changes role.
    pub(super) fn fetch_loop(self: &Arc<Self>, topic: &str, partition: u32, generation: u64) {
        let mut client: Option<Client> = None;
        // A fetch sent before the last answer's batches were appended: (correlation, offset).
        let mut in_flight: Option<(u32, u64)> = None;
        let mut failures = 0u32;
        // The consumer offsets fetcher also keeps the topics in step with the leader's.
        let mut synced: Option<Instant> = None;
        let key = key_of(topic, partition);
        while self.running_at(&key, generation) {
            if topic != OFFSETS_LOG && lock(&self.dropping).contains(topic) {
                // Being deleted (see `drop_topic`): the partition must be closed for that.
                return;
            }
            if failures >= 3 {
                // The leader does not answer: ask the peers who leads now (per partition,
                // etcd names each unit's leader).
                failures = 0;
                if !self.per_unit()
                    && let Some((leader, epoch)) = self.discover_leader()
                {
                    let mut st = lock(&self.state);
                    if epoch >= st.epoch && st.role != Role::Leader {
                        st.leader = leader;
                        st.epoch = epoch;
                    }
                }
            }
            let leader = lock(&self.state).unit(&key).leader;
            if client
                .as_ref()
                .is_some_and(|c| resolve(&leader) != Some(c.addr()))
            {
                // The leader changed (a newer epoch was announced): drop the old connection.
                client = None;
            }
            if client.is_none() {
                in_flight = None;
                client = resolve(&leader).and_then(|addr| {
                    Client::connect(addr, self.options.fetch_wait + Duration::from_secs(10)).ok()
                });
                if client.is_none() {
                    failures += 1;
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
            let c = client.as_mut().expect("connected above");
            if topic == OFFSETS_LOG
                && (synced.is_none_or(|t| t.elapsed() >= TOPIC_SYNC_INTERVAL)
                    || self.resync.swap(false, Ordering::AcqRel))
            {
                match self.sync_topics(c, generation) {
                    Ok(()) => synced = Some(Instant::now()),
                    Err(e) => {
                        tracing::debug!(error = %e, "could not take the leader's topics");
                        failures += 1;
                        client = None;
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                }
            }
            match self.fetch_once(c, topic, partition, generation, &mut in_flight) {
                Ok(()) => failures = 0,
                Err(Error::UnknownTopic { .. } | Error::UnknownPartition { .. }) => {
                    // Deleted here (the leader deleted it); a new incarnation gets a new
                    // fetcher.
                    return;
                }
                Err(e) => {
                    tracing::debug!(topic, partition, error = %e, "fetch failed; reconnecting");
                    failures += 1;
                    client = None;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// The replica-write lock, if this fetcher's generation is still its unit's.
    pub(super) fn replica_write(&self, key: &Key, generation: u64) -> Result<MutexGuard<'_, ()>> {
        let writes = lock(&self.replica_writes);
        if self.running_at(key, generation) {
            Ok(writes)
        } else {
            Err(Error::InvalidArgument(
                "the node changed role while fetching; the answer is dropped".into(),
            ))
        }
    }

    pub(super) fn fetch_once(
        &self,
        client: &mut Client,
        topic: &str,
        partition: u32,
        generation: u64,
        in_flight: &mut Option<(u32, u64)>,
    ) -> Result<()> {
        let offsets = topic == OFFSETS_LOG;
        let key = key_of(topic, partition);
        let (log, topic_id) = if offsets {
            (self.store.offsets_log()?, [0; 16])
        } else {
            (
                self.store.partition(topic, partition)?,
                self.store.topic_id(topic)?.0,
            )
        };
        // Fetch from what is written: the last answer's batches may still be being made
        // durable (see below), and the durable end goes with the request.
        let offset = log.written_end();
        let durable_end = log.end_offset().min(offset);
        let mirror = lock(&self.state).role == Role::Mirror;
        let request = |offset: u64, last_epoch: u64, durable_end: u64| Message::FetchRequest {
            role: if mirror {
                FetchRole::Mirror
            } else {
                FetchRole::Follower
            },
            node_id: self.options.node_id.clone(),
            topic: topic.to_string(),
            partition,
            offset,
            last_epoch,
            leader_epoch: lock(&self.state).unit(&key).epoch,
            max_bytes: self.options.fetch_max_bytes,
            max_wait_ms: self.options.fetch_wait.as_millis() as u32,
            durable_end: if mirror { 0 } else { durable_end },
            topic_id,
        };
        let wire = |e| Error::InvalidArgument(format!("fetch from the leader: {e}"));
        let answer = match in_flight.take() {
            Some((correlation, at)) if at == offset => client.receive(correlation).map_err(wire)?,
            Some((_, at)) => {
                // The batches before it were not all appended: its answer does not follow on.
                return Err(Error::InvalidArgument(format!(
                    "a fetch from {at} was sent ahead, but the log ends at {offset}; reconnecting"
                )));
            }
            None => client
                .call(&request(offset, last_record_epoch(&log), durable_end))
                .map_err(wire)?,
        };
        if let Message::ErrorResponse {
            error: ErrorCode::NotLeader,
            leader,
            ..
        } = &answer
        {
            // Our leader was deposed: follow the one it names, or ask the peers.
            if !leader.is_empty() {
                *lock(&self.state).fields_mut(&key).0 = leader.clone();
            }
            return Err(Error::InvalidArgument("the leader moved".into()));
        }
        let Message::FetchResponse {
            error,
            epoch,
            high_watermark,
            log_start,
            log_end,
            diverging_end,
            batches,
        } = answer
        else {
            return Err(Error::InvalidArgument(format!(
                "the leader answered a fetch with {answer:?}"
            )));
        };
        if error == ErrorCode::InconsistentTopicId {
            // The leader deleted the topic and created it again: take its topics anew (this
            // copy is deleted, and the new one fetched from its start).
            self.resync.store(true, Ordering::Release);
            return Err(Error::InvalidArgument(format!(
                "the leader holds another incarnation of topic {topic}; taking its topics anew"
            )));
        }
        if error == ErrorCode::FencedEpoch {
            let mut st = lock(&self.state);
            let ours = st.fields_mut(&key).1;
            *ours = (*ours).max(epoch);
            return Ok(());
        }
        if error == ErrorCode::OffsetOutOfRange && offsets && offset < log_start {
            // The leader compacted its consumer offsets log while this node lagged: the
            // records between are gone there; start over at its start and fetch its state.
            tracing::warn!(
                from = offset,
                to = log_start,
                "the leader compacted the consumer offsets log; fetching its state anew"
            );
            let _writes = self.replica_write(&key, generation)?;
            return self.store.restart_offsets_at(log_start);
        }
        if error == ErrorCode::OffsetOutOfRange && !offsets && offset < log_start {
            // The leader no longer has the records from this node's end on (retention, or it
            // started at an offset): this node's records are all below what the leader keeps,
            // so it starts over, empty, at the leader's start (Kafka's
            // truncate-fully-and-start-at) and fetches from there.
            tracing::warn!(
                topic,
                partition,
                from = offset,
                to = log_start,
                "below the leader's start: starting over there"
            );
            let _writes = self.replica_write(&key, generation)?;
            return log.reset_to(log_start);
        }
        if error != ErrorCode::None {
            std::thread::sleep(Duration::from_millis(100));
            return Err(Error::InvalidArgument(format!(
                "the leader refused the fetch: {}",
                error.name()
            )));
        }
        {
            let mut st = lock(&self.state);
            let ours = st.fields_mut(&key).1;
            if epoch < *ours {
                // A deposed leader answered (it froze and came back): its batches are not ours.
                return Err(Error::InvalidArgument(format!(
                    "the leader answered in epoch {epoch}, older than epoch {} this node knows",
                    *ours
                )));
            }
            *ours = (*ours).max(epoch);
        }
        if diverging_end != u64::MAX {
            // Cut exactly the divergent suffix (KIP-101, with KIP-279's refinement): ask where
            // our last epoch ends on the leader, as (e, end); the records in common end at
            // `end` there and at the end of epoch `e` here, whichever is lower.
            let ours = last_record_epoch(&log);
            let at = match client.call(&Message::EpochEndRequest {
                topic: topic.to_string(),
                partition,
                epoch: ours,
            }) {
                Ok(Message::EpochEndResponse {
                    error: ErrorCode::None,
                    epoch: e,
                    end_offset,
                }) => {
                    let own_end = log.epoch_end(e).map_or(log.start_offset(), |(_, end)| end);
                    end_offset.min(own_end).min(offset)
                }
                _ => diverging_end.min(offset),
            };
            let at = at.max(log.start_offset());
            tracing::warn!(
                topic,
                partition,
                from = at,
                to = offset,
                "truncating a divergent suffix"
            );
            let _writes = self.replica_write(&key, generation)?;
            if offsets {
                self.store.truncate_offsets(at)?;
            } else {
                log.truncate(at)?;
            }
            return Ok(());
        }
        // What the leader has for this node: its end (a follower), its high watermark (a
        // mirror).
        let leader_has = if mirror { high_watermark } else { log_end };
        let fetched_bytes = batches.len() as u64;
        let batches =
            split_batches(batches).map_err(|e| Error::InvalidArgument(format!("fetched: {e}")))?;
        let fetched_records: u64 = batches
            .iter()
            .map(|b| b.last_offset() + 1 - b.base_offset())
            .sum();
        if let Some(last) = batches.last()
            && !offsets
            && last.last_offset() + 1 < leader_has
        {
            // Catching up: ask for the next chunk now, so that the leader reads and sends it
            // while these batches are appended (the answers come in order).
            let next = last.last_offset() + 1;
            let sent = client
                .send(&request(
                    next,
                    last.leader_epoch(),
                    log.end_offset().min(next),
                ))
                .map_err(wire)?;
            *in_flight = Some((sent, next));
        }
        if !batches.is_empty() {
            if offsets {
                let _writes = self.replica_write(&key, generation)?;
                self.store.append_offsets_replica(&batches)?;
            } else {
                // Written under the lock, made durable outside it: the partitions' fsyncs
                // must not queue behind one another.
                let appended = {
                    let _writes = self.replica_write(&key, generation)?;
                    log.append_replica(&batches)?
                };
                if log.written_end() >= leader_has {
                    // Caught up: the next fetch tells the leader what is durable, so it waits
                    // for the fsync (the leader's acknowledgements wait for it). Sending that
                    // fetch before the fsync (and the durable end on a second connection) was
                    // measured slower: the long poll then answered each new record alone, and
                    // the follower's fsyncs no longer gathered what arrived during one.
                    appended.receipt.wait()?;
                } else {
                    // Catching up: the fsync runs in the background while the next batches
                    // are fetched; a later fetch reports them durable.
                    appended.receipt.request_sync();
                }
            }
        }
        if batches.is_empty() && !offsets && log.end_offset() < log.written_end() {
            // Nothing new, and records of an earlier answer are still being made durable:
            // the next fetch must report them, not wait a long poll to.
            log.flush()?;
        }
        log.set_high_watermark(high_watermark.min(log.end_offset()));
        let now = Instant::now();
        let mut lags = lock(&self.lag);
        let lag = lags.entry((topic.to_string(), partition)).or_insert(Lag {
            leader_mark: leader_has,
            caught_up_at: now,
            bytes: 0,
            records: 0,
        });
        lag.leader_mark = leader_has;
        lag.bytes += fetched_bytes;
        lag.records += fetched_records;
        if log.end_offset() >= leader_has {
            lag.caught_up_at = now;
        }
        Ok(())
    }
}

/// The epoch of `log`'s last record (0 if it holds none): what a fetch names as its last
/// epoch, as the pipelined fetch does with its last batch's. Not the history's newest epoch,
/// which may hold no record (one this node led without a write) and which the leader may
/// never have seen: asked about it, the leader answers "diverging at your end", cutting there
/// changes nothing, and the follower asked again for ever
/// (`tests/replication_node.rs`, `a_follower_whose_last_epoch_holds_no_record_catches_up`).
fn last_record_epoch(log: &Log) -> u64 {
    let end = log.written_end();
    if end <= log.start_offset() {
        return 0;
    }
    log.epoch_history().epoch_at(end - 1).unwrap_or(0)
}
