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
//! Fetches go through an incremental fetch session (KIP-227, [`super::fetch_session`]):
//! once the leader opened one, a request names only the partitions whose fetch offset, log
//! start or leader epoch moved since they were last sent, plus those no longer fetched
//! (backing off, throttled), and the leader answers only partitions with news;
//! a partition left out of an answer had nothing new. A lost connection or a refused
//! session makes the next request full, sent at once as Kafka's fetcher does. A leader
//! that gives no session is sent every partition every round.
//!
//! A round reads only the partitions that changed since the last one: the fetcher stands
//! registered with each followed partition (a [`SessionWatch`], as the leader's fetch
//! sessions are), whose version moves mark it. Every partition is read again when the
//! followed set or a partition's back-off or truncation state changes, and at least once a
//! second ([`WHOLE_WALK`]);
//! every round reads them all while one backs off or truncates, while a follower throttle
//! may hold one back, and when the session needs a full request. So a steady round of a
//! thousand partitions of which two moved costs two, not a thousand.
//!
//! A response's `throttle_time_ms` holds the next request to that leader for that long,
//! whatever the response held, as Kafka's `NetworkClient` pauses a connection.
//!
//! A partition throttled on the follower side here (see [`super::replication_quota`])
//! that is not caught up is left out of the request while the follower quota is over
//! its bound; the bytes fetched for throttled partitions are counted against it.
//!
//! [`ReplicaFetchers::reconcile`] keeps the tasks in step with the partitions' roles after
//! every image.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{
    FetchPartition, FetchTopic, ForgottenTopic, ReplicaState,
};
use kafka_protocol::messages::fetch_response::PartitionData;
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

use super::fetch_session::{
    FetchData, FetchMetadata, FetchRequestParts, FetchSession, KeyMap, Rejection,
    ResponseHeader as SessionResponseHeader, SessionPartition,
};
use super::peer_connection::{PeerConnection, PeerError};
use super::replication_quota::ReplicationQuotas;
use super::waits::SessionWatch;
use super::{Partition, PartitionVersion, ReplicaError, ReplicaManager};
use crate::config::ReplicationConfig;
use crate::controller::MetadataImage;
use crate::log::BatchHeader;
use crate::server::Shutdown;
use crate::types::{NodeId, TopicPartition, now_ms};

const FETCH_VERSION: i16 = 15;
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 4;
/// Kafka's "no epoch / no offset" answer to OffsetForLeaderEpoch.
const UNDEFINED: i64 = -1;
const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
const INVALID_FETCH_SESSION_EPOCH: i16 = 71;

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
    partitions: Mutex<FollowedSet>,
    /// Partitions were added, reset or removed.
    changed: tokio::sync::Notify,
    /// This broker's epoch (its registration), sent in every fetch.
    broker_epoch: AtomicI64,
    /// Rounds that walked every partition, also those that found none to fetch (tests:
    /// which rounds read only the marks).
    #[cfg(test)]
    whole_walks: std::sync::atomic::AtomicUsize,
}

#[derive(Clone)]
struct Followed {
    partition: Arc<Partition>,
    leader_epoch: i32,
    /// False until OffsetForLeaderEpoch truncation finished for this leader epoch.
    truncated: bool,
    /// The last fetch brought the log up to the leader's high watermark (Kafka's
    /// `isReplicaInSync` of the fetch state): a caught-up replica is never throttled.
    /// Shared by the clones of one following (this leader epoch), and set without moving
    /// the followed set's generation: a partition flipping between caught up and not,
    /// as one near the leader's high watermark may at many responses, must not rebuild
    /// the round order.
    caught_up: Arc<AtomicBool>,
    retry_at: Option<Instant>,
}

/// The partitions a fetcher follows, and a generation that moves with every change
/// (anything that can change goes through `&mut`), so the task rebuilds its round order
/// only when the set or a partition's state changed, not every round.
#[derive(Default)]
struct FollowedSet {
    map: HashMap<TopicPartition, Followed>,
    generation: u64,
}

impl FollowedSet {
    fn get(&self, tp: &TopicPartition) -> Option<&Followed> {
        self.map.get(tp)
    }

    fn get_mut(&mut self, tp: &TopicPartition) -> Option<&mut Followed> {
        self.generation += 1;
        self.map.get_mut(tp)
    }

    fn insert(&mut self, tp: TopicPartition, followed: Followed) {
        self.generation += 1;
        self.map.insert(tp, followed);
    }

    #[cfg(test)]
    fn remove(&mut self, tp: &TopicPartition) -> Option<Followed> {
        self.generation += 1;
        self.map.remove(tp)
    }

    /// Keeps what `keep` says; the generation moves only if something went: `reconcile`
    /// retains at every metadata image, and a rebuilt round order walks every partition.
    fn retain(&mut self, mut keep: impl FnMut(&TopicPartition, &Followed) -> bool) {
        let before = self.map.len();
        self.map.retain(|tp, followed| keep(tp, followed));
        if self.map.len() != before {
            self.generation += 1;
        }
    }

    #[cfg(test)]
    fn extend(&mut self, partitions: impl IntoIterator<Item = (TopicPartition, Followed)>) {
        self.generation += 1;
        self.map.extend(partitions);
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// The followed partitions in a stable order (by topic and partition) as of one
/// generation of the [`FollowedSet`], with each one's session key and what the last look
/// at its log found. Rebuilt when the generation moves; rounds in between cost the
/// partitions that changed (sorting and hashing a thousand partitions every round, and
/// taking each one's lock to find its log unchanged, was most of a follower's CPU).
#[derive(Default)]
struct RoundOrder {
    generation: Option<u64>,
    entries: Vec<RoundEntry>,
    by_key: KeyMap<usize>,
    /// Stands registered with every entry's partition, an entry's slot its index: marks
    /// the entries whose partition changed since a round last drained it.
    watch: Option<Arc<SessionWatch>>,
    /// Every entry is truncated: no OffsetForLeaderEpoch is due this generation.
    truncated: bool,
    /// Set when a whole walk of this generation took every entry into the session, to
    /// when the next whole walk is due ([`WHOLE_WALK`] later); until then a round reads
    /// only the marked entries.
    whole_until: Option<Instant>,
}

/// How long rounds may read only the partitions marked as changed before one reads them
/// all again. No change is known to go unmarked; this bounds what one would cost. (A
/// missed log end also heals at once: the leader's records then do not follow the log,
/// are dropped, and the next request is full.)
const WHOLE_WALK: Duration = Duration::from_secs(1);

struct RoundEntry {
    tp: TopicPartition,
    followed: Followed,
    key: SessionPartition,
    /// (partition version, log start offset, log end offset) when last looked at: while
    /// the partition's version is the same, so are the offsets.
    offsets: Option<(PartitionVersion, i64, i64)>,
}

impl RoundEntry {
    /// What to fetch for this partition now: from its log end; None if it was deleted.
    fn fetch_data(&mut self, partition_max_bytes: i32) -> Option<(SessionPartition, FetchData)> {
        let (log_start, log_end) = self.log_offsets()?;
        let data = FetchData {
            fetch_offset: log_end,
            log_start_offset: log_start,
            current_leader_epoch: self.followed.leader_epoch,
            last_fetched_epoch: -1,
            partition_max_bytes,
        };
        Some((self.key, data))
    }

    fn ready(&self, now: Instant) -> bool {
        self.followed.retry_at.is_none_or(|at| at <= now)
    }

    /// (log start offset, log end offset), read again only if the partition changed.
    fn log_offsets(&mut self) -> Option<(i64, i64)> {
        let partition = &self.followed.partition;
        match self.offsets {
            Some((version, start, end)) if version == partition.version() => Some((start, end)),
            _ => {
                let (version, (start, _, end)) = partition.offsets_versioned().ok()?;
                self.offsets = Some((version, start, end));
                Some((start, end))
            }
        }
    }
}

impl RoundOrder {
    /// Registers the watch's slots with their partitions (again after a lapse).
    fn stand(&self) {
        if let Some(watch) = &self.watch {
            for (slot, entry) in self.entries.iter().enumerate() {
                entry.followed.partition.stand(watch, slot as u64);
            }
        }
    }
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
                caught_up: Arc::default(),
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
            session: FetchSession::new(),
            order: RoundOrder::default(),
            rounds: 0,
            throttled_until: None,
            whole_walk: WHOLE_WALK,
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
    /// The incremental fetch session with the leader (KIP-227).
    session: FetchSession,
    /// The followed partitions as of the last change to them.
    order: RoundOrder,
    /// Whole walks so far: a full request's partition order rotates by it, so that
    /// partitions late in the request are not starved when earlier ones fill the response
    /// every time (Kafka moves fetched partitions to the end).
    rounds: usize,
    /// No request goes to the leader before this: its last response was throttled.
    throttled_until: Option<Instant>,
    /// [`WHOLE_WALK`], longer in tests that must see what the marks alone send.
    whole_walk: Duration,
}

impl FetcherTask {
    async fn run(mut self, mut shutdown: Shutdown) {
        let backoff = Duration::from_millis(self.settings.fetch_backoff_ms);
        loop {
            if shutdown.is_triggered() {
                return;
            }
            if let Some(until) = self.throttled_until.take() {
                // Before the snapshot: what is fetched after the pause is what is wanted then.
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    _ = shutdown.triggered() => return,
                }
            }
            let shared = Arc::clone(&self.shared);
            let changed = shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = Instant::now();
            self.refresh_order();
            let entries = &self.order.entries;
            if !entries.iter().any(|entry| entry.ready(now)) {
                let next_retry = entries.iter().filter_map(|e| e.followed.retry_at).min();
                let wake_at = next_retry.unwrap_or(now + Duration::from_secs(3600));
                tokio::select! {
                    _ = changed => {}
                    _ = tokio::time::sleep_until(wake_at) => {}
                    _ = shutdown.triggered() => return,
                }
                continue;
            }
            let round = tokio::select! {
                round = self.round(now) => round,
                _ = shutdown.triggered() => return,
            };
            if let Err(error) = round {
                tracing::warn!(
                    leader = self.leader, address = %self.address, %error,
                    "replica fetcher lost its connection; retrying after replica.fetch.backoff.ms"
                );
                self.connection = None;
                // Whatever failed (connect, OffsetForLeaderEpoch, fetch), the next fetch on
                // the new connection is full.
                self.session.handle_error();
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.triggered() => return,
                }
            }
        }
    }

    /// Rebuilds the round order if the followed set changed since it was built.
    fn refresh_order(&mut self) {
        let partitions = self
            .shared
            .partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if self.order.generation == Some(partitions.generation) {
            return;
        }
        let mut entries: Vec<RoundEntry> = (partitions.map.iter())
            .map(|(tp, followed)| RoundEntry {
                tp: tp.clone(),
                key: SessionPartition {
                    topic_id: followed.partition.topic_id,
                    partition: tp.partition,
                },
                followed: followed.clone(),
                offsets: None,
            })
            .collect();
        let generation = partitions.generation;
        drop(partitions);
        entries.sort_by(|a, b| a.tp.cmp(&b.tp));
        let by_key = (entries.iter().enumerate())
            .map(|(index, entry)| (entry.key, index))
            .collect();
        let watch = Arc::new(SessionWatch::new(crate::client_quota::monotonic_ms()));
        (0..entries.len()).for_each(|slot| watch.add(slot as u64));
        let truncated = entries.iter().all(|entry| entry.followed.truncated);
        self.order = RoundOrder {
            generation: Some(generation),
            entries,
            by_key,
            watch: Some(watch),
            truncated,
            whole_until: None,
        };
        self.order.stand();
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

    /// Holds the next request to the leader for `throttle_time_ms`, as Kafka's
    /// `NetworkClient.maybeThrottle` does with every response that carries one: the leader
    /// asked for the pause, and asking sooner would only be refused again.
    fn throttle(&mut self, throttle_time_ms: i32) {
        if let Ok(pause_ms @ 1..) = u64::try_from(throttle_time_ms) {
            self.throttled_until = Some(Instant::now() + Duration::from_millis(pause_ms));
        }
    }

    fn back_off(&self, tp: &TopicPartition, seen: &Followed) {
        let at = Instant::now() + Duration::from_millis(self.settings.fetch_backoff_ms);
        self.update(tp, seen, |f| f.retry_at = Some(at));
    }

    /// One step: truncate the partitions ready at `now` that need it, else fetch the others.
    async fn round(&mut self, now: Instant) -> Result<(), PeerError> {
        if self.connection.is_none() {
            let frame_max = usize::try_from(self.settings.fetch_response_max_bytes)
                .unwrap_or(0)
                .saturating_mul(2)
                .max(128 << 20);
            let timeout = Duration::from_millis(self.settings.socket_timeout_ms);
            let client_id = format!("broker-{}-fetcher-{}", self.node_id, self.leader);
            let receive_bytes = self.settings.socket_receive_bytes;
            let connecting = PeerConnection::connect(
                &self.address,
                client_id,
                frame_max,
                receive_bytes,
                timeout,
            );
            let connection = connecting.await?;
            self.connection = Some(connection);
        }
        if !self.order.truncated {
            let truncating: Vec<(TopicPartition, Followed)> = (self.order.entries.iter())
                .filter(|entry| entry.ready(now) && !entry.followed.truncated)
                .map(|entry| (entry.tp.clone(), entry.followed.clone()))
                .collect();
            if !truncating.is_empty() {
                return self.truncate(truncating).await;
            }
        }
        self.fetch(now).await
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
        self.throttle(response.throttle_time_ms);
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

    /// One fetch of every partition ready at `now` through the fetch session (only what
    /// changed once the leader gave one), appended as it comes.
    async fn fetch(&mut self, now: Instant) -> Result<(), PeerError> {
        let marked = self.marked(now);
        let parts = match marked.and_then(|changed| self.session.build_changed(changed)) {
            Some(parts) => parts,
            None => {
                #[cfg(test)]
                self.shared.whole_walks.fetch_add(1, Ordering::Relaxed);
                let wanted = self.wanted(now);
                // Once the session takes every partition, the marks say what changes. A
                // walk that leaves one out (or sends nothing: its marks are drained, and
                // the session keeps the data it had) makes the next round walk too.
                let whole = wanted.len() == self.order.entries.len() && !wanted.is_empty();
                self.order.whole_until = whole.then(|| now + self.whole_walk);
                if wanted.is_empty() {
                    // Every one was deleted or throttled meanwhile: wait for the reconcile
                    // that drops them, or for the quota, rather than spin.
                    let backoff = Duration::from_millis(self.settings.fetch_backoff_ms);
                    tokio::time::sleep(backoff).await;
                    return Ok(());
                }
                self.session.build(wanted)
            }
        };
        let request = self.fetch_request(&parts);
        let timeout = self.request_timeout();
        let call = self
            .connection()
            .call(ApiKey::Fetch, FETCH_VERSION, &request, timeout);
        let response: FetchResponse = match call.await {
            Ok(response) => response,
            Err(error) => {
                self.session.handle_error();
                return Err(error);
            }
        };
        self.throttle(response.throttle_time_ms);
        let answers = answers_by_partition(&response);
        let header = SessionResponseHeader {
            error_code: response.error_code,
            session_id: response.session_id,
            throttle_time_ms: response.throttle_time_ms,
        };
        let keys = answers.iter().map(|(key, _)| *key);
        let answered = match self.session.handle_response(header, keys) {
            Ok(answered) => answered,
            Err(rejection) => {
                self.rejected(&rejection, parts.metadata);
                return Ok(());
            }
        };
        let answers: KeyMap<&PartitionData> = answers.into_iter().collect();
        let mut dropped = false;
        for (key, sent) in answered {
            // The session holds only what was wanted this round, all in the order.
            let (Some(&index), Some(answer)) = (self.order.by_key.get(&key), answers.get(&key))
            else {
                continue;
            };
            let entry = &self.order.entries[index];
            dropped |= !self.take(&entry.tp, &entry.followed, sent.fetch_offset, answer);
        }
        if dropped {
            // The leader counts a dropped answer as told (its high watermark is not sent
            // again until it moves), and the partition stays in the session: a follower at
            // the log end would keep a stale high watermark. A full request next round
            // (rare: a leadership change or a truncation while the fetch was out) has
            // every partition answered afresh.
            self.session.handle_error();
        }
        Ok(())
    }

    /// The partitions changed since the last round, with their fetch data, when nothing
    /// else can differ from what the session holds; None when this round must walk every
    /// partition ([`Self::wanted`]). Drains the marks either way, before anything is read:
    /// a change after this marks its partition for the next round.
    ///
    /// Nothing else differs while the last whole walk of this generation wanted every
    /// partition and is not [`WHOLE_WALK`] old, and no follower throttle may hold one
    /// back: a back-off or a truncation moves the generation, which rebuilds the order,
    /// and the walks that follow want every partition again only once none is backing
    /// off; what moves a partition's log (or deletes it) moves its version, which marks it.
    fn marked(&mut self, now: Instant) -> Option<Vec<(SessionPartition, FetchData)>> {
        let order = &mut self.order;
        let drained = order
            .watch
            .as_ref()?
            .drain(crate::client_quota::monotonic_ms());
        if drained.lapsed {
            // Changes went unmarked and the partitions dropped the registration.
            order.stand();
            order.whole_until = None;
        }
        let steady = order.whole_until.is_some_and(|until| now < until);
        if !steady || self.quotas.follower.may_hold() {
            return None;
        }
        let partition_max_bytes = self.settings.fetch_max_bytes;
        let mut changed = Vec::with_capacity(drained.slots.len());
        for slot in drained.slots {
            // The watch is this order's: its slots are the entries' indexes.
            let entry = order.entries.get_mut(slot as usize);
            debug_assert!(entry.is_some(), "slot {slot} of a watch over another order");
            let entry = entry?;
            // Deleted: the walk leaves it out, and the next reconcile drops it.
            changed.push(entry.fetch_data(partition_max_bytes)?);
        }
        Some(changed)
    }

    /// The partitions to fetch this round (ready at `now` and truncated) with their fetch
    /// data, in a rotating order (a full request's order: partitions late in it are not
    /// starved when earlier ones fill the response every time; Kafka moves fetched
    /// partitions to the end). Throttled and deleted partitions are left out.
    fn wanted(&mut self, now: Instant) -> Vec<(SessionPartition, FetchData)> {
        let entries = &mut self.order.entries;
        let count = entries.len();
        let shift = if count == 0 { 0 } else { self.rounds % count };
        self.rounds = self.rounds.wrapping_add(1);
        let mut wanted = Vec::with_capacity(count);
        let now_ms = crate::client_quota::monotonic_ms();
        for index in (shift..count).chain(0..shift) {
            let entry = &mut entries[index];
            if !entry.ready(now) || !entry.followed.truncated {
                continue;
            }
            let caught_up = || entry.followed.caught_up.load(Ordering::Relaxed);
            if self.quotas.follower.holds(&entry.tp, caught_up, now_ms) {
                continue; // throttled: asked again once the rate is back within bound
            }
            // None: deleted meanwhile; the next reconcile drops it.
            wanted.extend(entry.fetch_data(self.settings.fetch_max_bytes));
        }
        wanted
    }

    /// The Fetch request carrying what the session decided to send.
    fn fetch_request(&self, parts: &FetchRequestParts) -> FetchRequest {
        let mut topics: Vec<FetchTopic> = Vec::new();
        for (key, data) in &parts.to_send {
            let entry = FetchPartition::default()
                .with_partition(key.partition)
                .with_current_leader_epoch(data.current_leader_epoch)
                .with_fetch_offset(data.fetch_offset)
                .with_last_fetched_epoch(data.last_fetched_epoch)
                .with_log_start_offset(data.log_start_offset)
                .with_partition_max_bytes(data.partition_max_bytes);
            match topics.iter_mut().find(|t| t.topic_id == key.topic_id) {
                Some(topic) => topic.partitions.push(entry),
                None => topics.push(
                    FetchTopic::default()
                        .with_topic_id(key.topic_id)
                        .with_partitions(vec![entry]),
                ),
            }
        }
        let mut forgotten: Vec<ForgottenTopic> = Vec::new();
        for key in &parts.forgotten {
            match forgotten.iter_mut().find(|t| t.topic_id == key.topic_id) {
                Some(topic) => topic.partitions.push(key.partition),
                None => forgotten.push(
                    ForgottenTopic::default()
                        .with_topic_id(key.topic_id)
                        .with_partitions(vec![key.partition]),
                ),
            }
        }
        let replica_state = ReplicaState::default()
            .with_replica_id(BrokerId(self.node_id))
            .with_replica_epoch(self.shared.broker_epoch.load(Ordering::Relaxed));
        FetchRequest::default()
            .with_replica_state(replica_state)
            .with_max_wait_ms(self.settings.fetch_wait_max_ms)
            .with_min_bytes(self.settings.fetch_min_bytes)
            .with_max_bytes(self.settings.fetch_response_max_bytes)
            .with_session_id(parts.metadata.session_id)
            .with_session_epoch(parts.metadata.epoch)
            .with_topics(topics)
            .with_forgotten_topics_data(forgotten)
    }

    /// A response the session would not use; see [`backs_off`].
    fn rejected(&self, rejection: &Rejection, sent: FetchMetadata) {
        let next = self.session.next_metadata();
        if !backs_off(rejection, sent, next) {
            tracing::info!(
                leader = self.leader, session_id = sent.session_id, epoch = sent.epoch, %rejection,
                next_session_id = next.session_id, next_epoch = next.epoch,
                "fetch session reset; the next fetch is full"
            );
            return;
        }
        tracing::warn!(
            leader = self.leader, session_id = sent.session_id, epoch = sent.epoch, %rejection,
            "fetch refused as a whole; backing off"
        );
        // The session holds what the request wanted, whether it named them or not.
        for key in self.session.partitions().keys() {
            if let Some(&index) = self.order.by_key.get(key) {
                let entry = &self.order.entries[index];
                self.back_off(&entry.tp, &entry.followed);
            }
        }
    }

    /// Applies one partition's part of a fetch response; false if the answer was dropped
    /// unread (the partition moved on while the fetch was out).
    fn take(
        &self,
        tp: &TopicPartition,
        followed: &Followed,
        fetch_offset: i64,
        answer: &PartitionData,
    ) -> bool {
        if !self.is_current(tp, followed) {
            return false; // reconcile moved the partition while the fetch was out
        }
        let partition = &followed.partition;
        if partition.offsets().ok().map(|(_, _, log_end)| log_end) != Some(fetch_offset) {
            // The log moved since the session last sent its offset (Kafka's fetcher checks
            // the same).
            return false;
        }
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
                        return true;
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
        true
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
        followed.caught_up.store(caught_up, Ordering::Relaxed);
    }
}

/// Whether a rejected response backs every partition off for `replica.fetch.backoff.ms`
/// (`sent`: the refused request's session metadata; `next`: the next request's).
///
/// Kafka's fetcher takes a rejected response as an empty answer and goes straight on with
/// the next request. So do we after a session error (FETCH_SESSION_ID_NOT_FOUND,
/// INVALID_FETCH_SESSION_EPOCH) to a full request or an incremental one, and after an
/// incremental answer naming a partition outside the session: the session was reset, so
/// the next request differs. Should it be the very request refused (a leader refusing even
/// a new session), and for any other rejection, every partition backs off as before
/// sessions, so a leader that keeps refusing is not asked in a tight loop. A throttled
/// empty answer never backs off: the leader's throttle time already holds the next request.
fn backs_off(rejection: &Rejection, sent: FetchMetadata, next: FetchMetadata) -> bool {
    match rejection {
        Rejection::Throttled(_) => false,
        Rejection::Error(FETCH_SESSION_ID_NOT_FOUND | INVALID_FETCH_SESSION_EPOCH) => next == sent,
        Rejection::Extra(_) => sent.is_full(),
        Rejection::Error(_) | Rejection::Omitted(_) => true,
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

/// Each partition a response answers, by session key, in response order.
fn answers_by_partition(response: &FetchResponse) -> Vec<(SessionPartition, &PartitionData)> {
    let topics = response.responses.iter();
    topics
        .flat_map(|topic| {
            topic.partitions.iter().map(|answer| {
                let key = SessionPartition {
                    topic_id: topic.topic_id,
                    partition: answer.partition_index,
                };
                (key, answer)
            })
        })
        .collect()
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
#[path = "fetcher_session_tests.rs"]
mod session_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::test_support::encode_batch;
    use kafka_protocol::records::Compression;

    #[test]
    fn every_change_to_the_followed_set_moves_its_generation() {
        let mut set = FollowedSet::default();
        let mut last = set.generation;
        let mut moved = |set: &FollowedSet| {
            let moved = set.generation != last;
            last = set.generation;
            moved
        };
        let tp = TopicPartition::new("t", 0);
        set.retain(|_, _| true);
        assert!(
            !moved(&set),
            "a retain that keeps everything changes nothing"
        );
        assert!(set.get(&tp).is_none());
        assert!(!moved(&set), "a look changes nothing");
        set.get_mut(&tp);
        assert!(moved(&set), "a change may follow any mutable borrow");
    }

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
