//! Followers replicating from their leaders: one fetcher task per leader broker, which
//! fetches every partition this broker follows there in one request (Kafka's
//! `ReplicaFetcherThread`, one per source broker).
//!
//! A partition starts in the truncating phase whenever it begins following a leader at a
//! new leader epoch: it asks the leader OffsetForLeaderEpoch for its latest epoch and cuts
//! its log where the two diverge (KIP-101 / KIP-279), so it never keeps records the new
//! leader does not have. Then it fetches from its log end; the leader parks the fetch until
//! it has data or `replica.fetch.wait.max.ms` passes, so an idle follower costs one
//! request per half second and new records travel at once (no polling). Errors back the
//! partition (or, for a broken connection, the whole fetcher) off for
//! `replica.fetch.backoff.ms`.
//!
//! A partition throttled on the follower side here (see [`super::replication_quota`])
//! that is not caught up is left out of the request while the follower quota is over
//! its bound; the bytes fetched for throttled partitions are counted against it.
//!
//! [`ReplicaFetchers::reconcile`] keeps the tasks in step with the partitions' roles after
//! every image.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::peer_connection::{PeerConnection, PeerError};
use super::replication_quota::ReplicationQuotas;
use super::{Partition, ReplicaError, ReplicaManager};
use crate::config::ReplicationConfig;
use crate::controller::MetadataImage;
use crate::log::BatchHeader;
use crate::server::Shutdown;
use crate::types::{NodeId, TopicPartition, now_ms};

const FETCH_VERSION: i16 = 15;
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 4;
/// Kafka's "no epoch / no offset" answer to OffsetForLeaderEpoch.
const UNDEFINED: i64 = -1;

/// The fetcher tasks of this broker, by leader.
pub struct ReplicaFetchers {
    node_id: NodeId,
    settings: ReplicationConfig,
    quotas: Arc<ReplicationQuotas>,
    shutdown: Shutdown,
    fetchers: Mutex<HashMap<NodeId, Fetcher>>,
}

struct Fetcher {
    address: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a fetcher task shares with `reconcile`.
#[derive(Default)]
struct Shared {
    partitions: Mutex<HashMap<TopicPartition, Followed>>,
    /// Partitions were added, reset or removed.
    changed: tokio::sync::Notify,
    /// This broker's epoch (its registration), sent in every fetch.
    broker_epoch: AtomicI64,
}

#[derive(Clone)]
struct Followed {
    partition: Arc<Partition>,
    leader_epoch: i32,
    /// False until OffsetForLeaderEpoch truncation finished for this leader epoch.
    truncated: bool,
    /// The last fetch brought the log up to the leader's high watermark (Kafka's
    /// `isReplicaInSync` of the fetch state): a caught-up replica is never throttled.
    caught_up: bool,
    retry_at: Option<Instant>,
}

impl Followed {
    fn same(&self, other: &Followed) -> bool {
        Arc::ptr_eq(&self.partition, &other.partition) && self.leader_epoch == other.leader_epoch
    }
}

impl ReplicaFetchers {
    pub fn new(
        node_id: NodeId,
        settings: ReplicationConfig,
        quotas: Arc<ReplicationQuotas>,
        shutdown: Shutdown,
    ) -> ReplicaFetchers {
        ReplicaFetchers {
            node_id,
            settings,
            quotas,
            shutdown,
            fetchers: Mutex::new(HashMap::new()),
        }
    }

    /// Follows every hosted partition another broker leads, from that leader; stops
    /// fetching what this broker now leads, or what has no leader or is gone.
    pub fn reconcile(&self, image: &MetadataImage, replicas: &ReplicaManager) {
        let mut wanted: HashMap<NodeId, HashMap<TopicPartition, Followed>> = HashMap::new();
        for partition in replicas.all() {
            let (leader, leader_epoch, _) = partition.applied_leadership();
            let (_, leads) = partition.leadership();
            if leads || leader < 0 || leader == self.node_id {
                continue;
            }
            let followed = Followed {
                partition: Arc::clone(&partition),
                leader_epoch,
                truncated: false,
                caught_up: false,
                retry_at: None,
            };
            wanted
                .entry(leader)
                .or_default()
                .insert(partition.tp.clone(), followed);
        }
        let broker_epoch = image.brokers.get(&self.node_id).map_or(-1, |b| b.epoch);
        let mut fetchers = self.fetchers.lock().unwrap_or_else(|p| p.into_inner());
        fetchers.retain(|leader, fetcher| {
            let address = image.inter_broker_address(*leader);
            wanted.contains_key(leader) && address.as_deref() == Some(fetcher.address.as_str())
        });
        for (leader, partitions) in wanted {
            let Some(address) = image.inter_broker_address(leader) else {
                tracing::warn!(leader, "leader has no registered endpoint; not fetching");
                continue;
            };
            let fetcher = fetchers
                .entry(leader)
                .or_insert_with(|| self.spawn(leader, address));
            fetcher
                .shared
                .broker_epoch
                .store(broker_epoch, Ordering::Relaxed);
            let mut followed = fetcher
                .shared
                .partitions
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            followed.retain(|tp, _| partitions.contains_key(tp));
            for (tp, wanted) in partitions {
                let keep = followed
                    .get(&tp)
                    .is_some_and(|current| current.same(&wanted));
                if !keep {
                    followed.insert(tp, wanted);
                }
            }
            drop(followed);
            fetcher.shared.changed.notify_one();
        }
    }

    fn spawn(&self, leader: NodeId, address: String) -> Fetcher {
        let shared = Arc::new(Shared::default());
        let task = FetcherTask {
            leader,
            address: address.clone(),
            node_id: self.node_id,
            settings: self.settings.clone(),
            quotas: Arc::clone(&self.quotas),
            shared: Arc::clone(&shared),
            connection: None,
            rounds: 0,
        };
        tracing::info!(leader, %address, "starting a replica fetcher");
        let task = tokio::spawn(task.run(self.shutdown.clone()));
        Fetcher {
            address,
            shared,
            task,
        }
    }

    /// How many partitions are being followed, by leader (tests, diagnostics).
    pub fn followed(&self) -> HashMap<NodeId, usize> {
        let fetchers = self.fetchers.lock().unwrap_or_else(|p| p.into_inner());
        fetchers
            .iter()
            .map(|(leader, fetcher)| {
                let partitions = fetcher.shared.partitions.lock();
                (*leader, partitions.map_or(0, |p| p.len()))
            })
            .collect()
    }
}

struct FetcherTask {
    leader: NodeId,
    address: String,
    node_id: NodeId,
    settings: ReplicationConfig,
    quotas: Arc<ReplicationQuotas>,
    shared: Arc<Shared>,
    connection: Option<PeerConnection>,
    /// Fetch rounds so far: the partition order rotates by it, so that partitions late in
    /// the request are not starved when earlier ones fill the response every time (Kafka
    /// moves fetched partitions to the end).
    rounds: usize,
}

impl FetcherTask {
    async fn run(mut self, mut shutdown: Shutdown) {
        let backoff = Duration::from_millis(self.settings.fetch_backoff_ms);
        loop {
            if shutdown.is_triggered() {
                return;
            }
            let shared = Arc::clone(&self.shared);
            let changed = shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = Instant::now();
            let followed = self.snapshot();
            let ready: Vec<(TopicPartition, Followed)> = followed
                .iter()
                .filter(|(_, f)| f.retry_at.is_none_or(|at| at <= now))
                .cloned()
                .collect();
            if ready.is_empty() {
                let next_retry = followed.iter().filter_map(|(_, f)| f.retry_at).min();
                let wake_at = next_retry.unwrap_or(now + Duration::from_secs(3600));
                tokio::select! {
                    _ = changed => {}
                    _ = tokio::time::sleep_until(wake_at) => {}
                    _ = shutdown.triggered() => return,
                }
                continue;
            }
            let round = tokio::select! {
                round = self.round(ready) => round,
                _ = shutdown.triggered() => return,
            };
            if let Err(error) = round {
                tracing::warn!(
                    leader = self.leader, address = %self.address, %error,
                    "replica fetcher lost its connection; retrying after replica.fetch.backoff.ms"
                );
                self.connection = None;
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.triggered() => return,
                }
            }
        }
    }

    fn snapshot(&self) -> Vec<(TopicPartition, Followed)> {
        let partitions = self
            .shared
            .partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        partitions
            .iter()
            .map(|(tp, followed)| (tp.clone(), followed.clone()))
            .collect()
    }

    /// Updates a followed partition unless `reconcile` replaced it meanwhile.
    fn update(&self, tp: &TopicPartition, seen: &Followed, change: impl FnOnce(&mut Followed)) {
        let mut partitions = self
            .shared
            .partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(current) = partitions.get_mut(tp)
            && current.same(seen)
        {
            change(current);
        }
    }

    /// True while `seen` is still what this fetcher follows for `tp`, truncated.
    fn is_current(&self, tp: &TopicPartition, seen: &Followed) -> bool {
        let partitions = self
            .shared
            .partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        partitions
            .get(tp)
            .is_some_and(|current| current.same(seen) && current.truncated)
    }

    fn back_off(&self, tp: &TopicPartition, seen: &Followed) {
        let at = Instant::now() + Duration::from_millis(self.settings.fetch_backoff_ms);
        self.update(tp, seen, |f| f.retry_at = Some(at));
    }

    /// One step: truncate the partitions that need it, else fetch the others.
    async fn round(&mut self, ready: Vec<(TopicPartition, Followed)>) -> Result<(), PeerError> {
        if self.connection.is_none() {
            let frame_max = usize::try_from(self.settings.fetch_response_max_bytes)
                .unwrap_or(0)
                .saturating_mul(2)
                .max(128 << 20);
            let timeout = Duration::from_millis(self.settings.socket_timeout_ms);
            let client_id = format!("broker-{}-fetcher-{}", self.node_id, self.leader);
            let connection =
                PeerConnection::connect(&self.address, client_id, frame_max, timeout).await?;
            self.connection = Some(connection);
        }
        let (truncating, fetching): (Vec<_>, Vec<_>) =
            ready.into_iter().partition(|(_, f)| !f.truncated);
        if !truncating.is_empty() {
            return self.truncate(truncating).await;
        }
        self.fetch(fetching).await
    }

    fn connection(&mut self) -> &mut PeerConnection {
        self.connection
            .as_mut()
            .expect("connected at the start of the round")
    }

    fn request_timeout(&self) -> Duration {
        let wait = u64::try_from(self.settings.fetch_wait_max_ms).unwrap_or(0);
        Duration::from_millis(self.settings.socket_timeout_ms + wait)
    }

    /// OffsetForLeaderEpoch for every partition that started following a new leader
    /// epoch, then the truncation Kafka's `getOffsetTruncationState` decides.
    async fn truncate(
        &mut self,
        partitions: Vec<(TopicPartition, Followed)>,
    ) -> Result<(), PeerError> {
        let mut asked = Vec::new();
        for (tp, followed) in partitions {
            match followed.partition.leader_epochs().entries().last() {
                Some(latest) => asked.push((tp, followed, latest.epoch)),
                None => {
                    // No epoch recorded: an empty log (nothing to cut) or one written
                    // before epochs were kept; Kafka truncates the latter to its high
                    // watermark.
                    let partition = &followed.partition;
                    let source = (self.leader, followed.leader_epoch);
                    let cut = partition
                        .offsets()
                        .map(|(_, hw, end)| (hw < end).then_some(hw));
                    let result = match cut {
                        Ok(Some(high_watermark)) => cut_log(partition, high_watermark, source),
                        Ok(None) => Ok(()),
                        Err(error) => Err(error),
                    };
                    self.after_truncation(&tp, &followed, result, true);
                }
            }
        }
        if asked.is_empty() {
            return Ok(());
        }
        let mut topics: Vec<OffsetForLeaderTopic> = Vec::new();
        for (tp, followed, epoch) in &asked {
            let entry = OffsetForLeaderPartition::default()
                .with_partition(tp.partition)
                .with_current_leader_epoch(followed.leader_epoch)
                .with_leader_epoch(*epoch);
            match topics.iter_mut().find(|t| t.topic.0.as_str() == &*tp.topic) {
                Some(topic) => topic.partitions.push(entry),
                None => topics.push(
                    OffsetForLeaderTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(tp.topic.to_string())))
                        .with_partitions(vec![entry]),
                ),
            }
        }
        let request = OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(self.node_id))
            .with_topics(topics);
        let timeout = self.request_timeout();
        let response: OffsetForLeaderEpochResponse = self
            .connection()
            .call(
                ApiKey::OffsetForLeaderEpoch,
                OFFSET_FOR_LEADER_EPOCH_VERSION,
                &request,
                timeout,
            )
            .await?;
        for (tp, followed, _) in &asked {
            let answer = response
                .topics
                .iter()
                .filter(|topic| topic.topic.0.as_str() == &*tp.topic)
                .flat_map(|topic| topic.partitions.iter())
                .find(|p| p.partition == tp.partition);
            let Some(answer) = answer else {
                self.back_off(tp, followed);
                continue;
            };
            if answer.error_code != 0 {
                tracing::debug!(
                    %tp, leader = self.leader, error = ?ResponseError::try_from_code(answer.error_code),
                    "OffsetForLeaderEpoch refused; retrying"
                );
                self.back_off(tp, followed);
                continue;
            }
            let decided = truncation_point(
                &followed.partition,
                i64::from(answer.leader_epoch),
                answer.end_offset,
            );
            let source = (self.leader, followed.leader_epoch);
            let result = decided.and_then(|(offset, complete)| {
                cut_log(&followed.partition, offset, source).map(|()| complete)
            });
            match result {
                Ok(complete) => self.after_truncation(tp, followed, Ok(()), complete),
                Err(error) => self.after_truncation(tp, followed, Err(error), false),
            }
        }
        Ok(())
    }

    fn after_truncation(
        &self,
        tp: &TopicPartition,
        followed: &Followed,
        result: Result<(), ReplicaError>,
        complete: bool,
    ) {
        match result {
            Ok(()) => self.update(tp, followed, |f| f.truncated = complete),
            Err(error) => {
                tracing::error!(%tp, %error, "follower truncation failed; retrying");
                self.back_off(tp, followed);
            }
        }
    }

    /// One fetch of every ready partition, appended as it comes.
    async fn fetch(
        &mut self,
        mut partitions: Vec<(TopicPartition, Followed)>,
    ) -> Result<(), PeerError> {
        // A stable order first (the snapshot comes from a hash map), then the rotation.
        partitions.sort_by(|(a, _), (b, _)| a.cmp(b));
        if !partitions.is_empty() {
            let shift = self.rounds % partitions.len();
            partitions.rotate_left(shift);
        }
        self.rounds = self.rounds.wrapping_add(1);
        let mut topics: Vec<FetchTopic> = Vec::new();
        let mut asked = Vec::new();
        let now = crate::client_quota::monotonic_ms();
        for (tp, followed) in partitions {
            if self.quotas.follower.holds(&tp, || followed.caught_up, now) {
                continue; // throttled: asked again once the rate is back within bound
            }
            let Ok((log_start, _, log_end)) = followed.partition.offsets() else {
                continue; // deleted meanwhile; the next reconcile drops it
            };
            let entry = FetchPartition::default()
                .with_partition(tp.partition)
                .with_current_leader_epoch(followed.leader_epoch)
                .with_fetch_offset(log_end)
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(log_start)
                .with_partition_max_bytes(self.settings.fetch_max_bytes);
            let topic_id = followed.partition.topic_id;
            match topics.iter_mut().find(|t| t.topic_id == topic_id) {
                Some(topic) => topic.partitions.push(entry),
                None => topics.push(
                    FetchTopic::default()
                        .with_topic_id(topic_id)
                        .with_partitions(vec![entry]),
                ),
            }
            asked.push((tp, followed, log_end));
        }
        if asked.is_empty() {
            // Every one was deleted meanwhile: wait for the reconcile that drops them
            // rather than spin.
            tokio::time::sleep(Duration::from_millis(self.settings.fetch_backoff_ms)).await;
            return Ok(());
        }
        let replica_state = ReplicaState::default()
            .with_replica_id(BrokerId(self.node_id))
            .with_replica_epoch(self.shared.broker_epoch.load(Ordering::Relaxed));
        let request = FetchRequest::default()
            .with_replica_state(replica_state)
            .with_max_wait_ms(self.settings.fetch_wait_max_ms)
            .with_min_bytes(self.settings.fetch_min_bytes)
            .with_max_bytes(self.settings.fetch_response_max_bytes)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(topics);
        let timeout = self.request_timeout();
        let response: FetchResponse = self
            .connection()
            .call(ApiKey::Fetch, FETCH_VERSION, &request, timeout)
            .await?;
        if response.error_code != 0 {
            tracing::warn!(
                leader = self.leader, error = ?ResponseError::try_from_code(response.error_code),
                "fetch refused as a whole; backing off"
            );
            for (tp, followed, _) in &asked {
                self.back_off(tp, followed);
            }
            return Ok(());
        }
        for (tp, followed, fetch_offset) in &asked {
            let answer = response
                .responses
                .iter()
                .filter(|topic| topic.topic_id == followed.partition.topic_id)
                .flat_map(|topic| topic.partitions.iter())
                .find(|p| p.partition_index == tp.partition);
            let Some(answer) = answer else {
                continue; // not answered this time (response size): asked again next round
            };
            self.take(tp, followed, *fetch_offset, answer);
        }
        Ok(())
    }

    /// Applies one partition's part of a fetch response.
    fn take(
        &self,
        tp: &TopicPartition,
        followed: &Followed,
        fetch_offset: i64,
        answer: &kafka_protocol::messages::fetch_response::PartitionData,
    ) {
        if !self.is_current(tp, followed) {
            return; // reconcile moved the partition while the fetch was out
        }
        let partition = &followed.partition;
        let source = (self.leader, followed.leader_epoch);
        match ResponseError::try_from_code(answer.error_code) {
            None => {
                let records = whole_batches(answer.records.as_ref());
                if !records.is_empty() {
                    // Inline, as a leader's produce appends: a page-cache write of what one
                    // response carries. `block_in_place` here handed the worker to another
                    // thread for every response with records (thread wake-ups per round
                    // trip, measured in the RF 3 latency row).
                    let appended = partition.append_replicated(&records, source, now_ms());
                    if let Err(error) = appended {
                        tracing::warn!(%tp, fetch_offset, %error, "appending replicated batches failed");
                        // Re-check where the logs diverge before fetching again.
                        self.update(tp, followed, |f| f.truncated = false);
                        self.back_off(tp, followed);
                        return;
                    }
                }
                self.count_throttled(tp, followed, answer.high_watermark, records.len());
                partition.follow_high_watermark(answer.high_watermark, source);
                follow_log_start(tp, partition, answer.log_start_offset, source);
            }
            Some(ResponseError::OffsetOutOfRange) => {
                if fetch_offset < answer.log_start_offset {
                    // The leader no longer has what comes next (retention): start over at
                    // its log start, as Kafka's `truncateFullyAndStartAt` does.
                    tracing::warn!(
                        %tp, fetch_offset, leader_log_start = answer.log_start_offset,
                        "follower is behind its leader's log start; restarting the log there"
                    );
                    let restarted = tokio::task::block_in_place(|| {
                        partition.restart_following_at(answer.log_start_offset, source)
                    });
                    if let Err(error) = restarted {
                        tracing::error!(%tp, %error, "restarting the follower's log failed");
                        self.back_off(tp, followed);
                    }
                } else {
                    // Ahead of the leader: find where the logs diverge again.
                    self.update(tp, followed, |f| f.truncated = false);
                }
            }
            Some(error) => {
                tracing::debug!(%tp, leader = self.leader, ?error, "fetch refused; backing off");
                self.back_off(tp, followed);
            }
        }
    }
}

impl FetcherTask {
    /// Counts a throttled partition's fetched bytes against the follower quota (in sync or
    /// not, as Kafka), and notes whether the log caught up with the leader's high mark
    /// (for every partition: a throttle set later must find in-sync replicas known).
    fn count_throttled(
        &self,
        tp: &TopicPartition,
        followed: &Followed,
        leader_high_watermark: i64,
        bytes: usize,
    ) {
        let quota = &self.quotas.follower;
        if bytes > 0 && quota.is_throttled(tp) {
            quota.record(bytes, crate::client_quota::monotonic_ms());
        }
        let caught_up = (followed.partition.offsets())
            .is_ok_and(|(_, _, log_end)| log_end >= leader_high_watermark);
        if caught_up != followed.caught_up {
            self.update(tp, followed, |f| f.caught_up = caught_up);
        }
    }
}

/// Moves the follower's log start up to its leader's (retention or DeleteRecords there), as
/// Kafka's `processPartitionData` does with `maybeIncrementLogStartOffset`, deleting the
/// segments below it. Checked cheaply first: most responses leave the start where it is.
fn follow_log_start(
    tp: &TopicPartition,
    partition: &Partition,
    leader_log_start: i64,
    source: (NodeId, i32),
) {
    let Ok((log_start, high_watermark, _)) = partition.offsets() else {
        return;
    };
    if leader_log_start <= log_start || log_start >= high_watermark {
        return;
    }
    // It fsyncs a checkpoint and deletes files: not on an async worker's time.
    let moved =
        tokio::task::block_in_place(|| partition.follow_log_start(leader_log_start, source));
    match moved {
        Ok(true) => tracing::debug!(%tp, leader_log_start, "log start follows the leader's"),
        Ok(false) => {}
        Err(error) => partition.report_background_failure("following the log start", &error),
    }
}

/// Kafka's `getOffsetTruncationState`: where to cut the follower's log given the leader's
/// answer (its largest epoch at or below ours, and where that epoch ends), and whether
/// that settles it (false: the follower lacks the leader's epoch, so it cuts to the end
/// of its own earlier epoch and asks again).
fn truncation_point(
    partition: &Partition,
    leader_epoch: i64,
    leader_end_offset: i64,
) -> Result<(i64, bool), ReplicaError> {
    let (_, high_watermark, log_end) = partition.offsets()?;
    if leader_end_offset == UNDEFINED || leader_epoch == UNDEFINED {
        // The leader has no epoch at or below ours: its log starts later. Kafka falls
        // back to the high watermark, which every in-sync replica has.
        return Ok((high_watermark.min(log_end), true));
    }
    let epoch = i32::try_from(leader_epoch).unwrap_or(i32::MAX);
    let (own_epoch, own_end) = partition.end_offset_for_epoch(epoch)?;
    if i64::from(own_epoch) == UNDEFINED {
        return Ok((leader_end_offset.min(log_end), true));
    }
    if own_epoch != epoch {
        return Ok((own_end.min(log_end), false));
    }
    Ok((leader_end_offset.min(own_end).min(log_end), true))
}

/// Cuts the log at `offset` if it extends past it, only while the partition still follows
/// `source` (leader, leader epoch): an answer that arrives after leadership moved must not
/// cut a log that moved on.
fn cut_log(partition: &Partition, offset: i64, source: (NodeId, i32)) -> Result<(), ReplicaError> {
    let (_, high_watermark, log_end) = partition.offsets()?;
    if offset >= log_end {
        return Ok(());
    }
    if offset < high_watermark {
        tracing::warn!(
            tp = %partition.tp, offset, high_watermark,
            "truncating below the high watermark: the new leader was elected without all \
             committed records"
        );
    } else {
        tracing::info!(tp = %partition.tp, offset, log_end, "truncating to the new leader's log");
    }
    tokio::task::block_in_place(|| partition.truncate_following(offset, source))
}

/// The whole batches at the start of `records` (a leader may cut the last one short).
fn whole_batches(records: Option<&Bytes>) -> Bytes {
    let Some(records) = records else {
        return Bytes::new();
    };
    let mut end = 0;
    while let Ok(header) = BatchHeader::parse(&records[end..]) {
        let next = end + header.total_bytes();
        if next > records.len() {
            break;
        }
        end = next;
    }
    records.slice(..end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::test_support::encode_batch;
    use kafka_protocol::records::Compression;

    #[test]
    fn whole_batches_drops_a_cut_tail() {
        let one = encode_batch(&[1, 2], Compression::None);
        let mut two = one.clone();
        two.extend_from_slice(&one);
        let two = two.freeze();
        assert_eq!(whole_batches(Some(&two)).len(), two.len());
        let cut = two.slice(..two.len() - 5);
        assert_eq!(whole_batches(Some(&cut)).len(), one.len());
        assert!(whole_batches(Some(&two.slice(..10))).is_empty());
        assert!(whole_batches(None).is_empty());
    }
}
