//! Fetch: raw batches from each partition up to its high watermark, within the
//! request's byte limits, waiting up to `max_wait_ms` for `min_bytes` (woken by appends).
//!
//! A fetch carrying a replica id (`ReplicaState` from v15, `replica_id` before) is a
//! follower's: it reads up to the log end rather than the high watermark, and its fetch
//! offset tells the leader how far the follower has come (`record_follower_fetch`), which
//! may move the high watermark, complete acks=all produces and add the follower to the ISR.
//! A partition throttled on the leader side here gets no records while the leader quota is
//! over its bound and the follower is not in the ISR (`replica::replication_quota`); the
//! bytes sent for throttled partitions are counted against that quota.
//!
//! A consumer's fetch at `isolation_level=1` (read_committed) reads only up to the last
//! stable offset and lists the aborted transactions overlapping what it returns (from the
//! partitions' `.txnindex`), so the client drops their records; every response reports the
//! LSO as `last_stable_offset`. A parked read_committed fetch wakes when the LSO moves:
//! markers are appends and the high watermark's moves notify too.
//!
//! Fetch sessions (KIP-227) are declined: we always answer with session id 0, which
//! tells clients to send full fetch requests. A request naming a session we never gave
//! out gets FETCH_SESSION_ID_NOT_FOUND, so a client can never be answered wrongly.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::FetchTopic;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::time::Instant;

use super::errors::replica_error;
use super::leader_hint::LeaderHints;
use super::{RequestContext, leader_partition};
use crate::broker::Broker;
use crate::controller::MetadataImage;
use crate::log::RecordSlices;
use crate::metrics::{self, request::Delayed, request::Parked};
use crate::replica::replication_quota::ReplicationQuotas;
use crate::replica::waits::ChangeWaiter;
use crate::replica::{
    FollowerBroker, Partition, PartitionRead, ReadBound, ReadRecords, ReplicaError, isr_changes,
};
use crate::types::{NodeId, now_ms};

/// The longest a fetch may be parked, whatever the client asks (Kafka clients use ≤ 500 ms
/// by default; a bound keeps a misbehaving client from pinning a connection forever).
const WAIT_MS_MAX: u64 = 30_000;

/// Reads larger than this are sent from the segment files (sendfile) rather than read
/// into memory and copied into the response: below it, the copies cost less than the
/// extra system calls (a write for the bytes before the records, a sendfile for them).
const SEND_FROM_FILE_MIN_BYTES: usize = 8 * 1024;

/// The first version whose responses are spliced with file bytes: flexible versions end
/// with tagged fields, so the connection can hold their last byte back until it has
/// checked that the files were not cut meanwhile (`log::file_slice`).
const SEND_FROM_FILE_MIN_VERSION: i16 = 12;

/// A fetch response and the file slices that take the place of its marker records, in
/// marker order (`api::outgoing`).
pub struct FetchReply {
    pub response: FetchResponse,
    pub from_files: Vec<RecordSlices>,
}

impl FetchReply {
    fn encoded_in_full(response: FetchResponse) -> Self {
        FetchReply {
            response,
            from_files: Vec::new(),
        }
    }
}

/// One requested partition, resolved against the image once.
struct Target {
    topic_index: usize,
    partition_index: i32,
    fetch_offset: i64,
    max_bytes: usize,
    current_leader_epoch: i32,
    partition: Result<Arc<Partition>, ResponseError>,
    /// The follower fetching, if this is a replica's fetch.
    replica: Option<NodeId>,
    /// The log start offset the fetcher reported (a follower's; -1 from consumers).
    log_start_offset: i64,
    /// A consumer's `isolation_level=1`.
    read_committed: bool,
    /// A follower's fetch of a partition throttled on the leader side here: the leader
    /// quota, which holds its records back while over its bound (unless it is in sync).
    leader_quota: Option<Arc<ReplicationQuotas>>,
}

pub async fn handle(
    broker: &Broker,
    context: &RequestContext,
    request: FetchRequest,
) -> FetchReply {
    if let Some(error) = session_error(&request) {
        return FetchReply::encoded_in_full(
            FetchResponse::default()
                .with_error_code(error.code())
                .with_session_id(0),
        );
    }
    let image = broker.image();
    let topics: Vec<(TopicName, uuid::Uuid)> = request
        .topics
        .iter()
        .map(|topic| (resolve_name(&image, topic, context.version), topic.topic_id))
        .collect();
    let replica = follower_id(&request, context.version);
    metrics::request::mark_fetch_from_follower(replica.is_some());
    let read_committed = replica.is_none() && request.isolation_level == 1;
    let mut targets = resolve_targets(broker, &image, &request.topics, &topics, replica);
    for target in &mut targets {
        target.read_committed = read_committed;
    }
    if let Some(replica) = replica {
        record_follower_progress(broker, &image, &request, replica, &mut targets);
        mark_leader_throttled(broker, &mut targets);
    }
    let mut response_bytes_max =
        (request.max_bytes.max(0) as usize).min(broker.config.fetch_bytes_max);
    if replica.is_none()
        && let Some(cap) = super::throttle::fetch_bytes_cap(broker, context)
    {
        // A consumer asks for no more than its quota allows in one window (Kafka's
        // `getMaxValueInQuotaWindow`), so one response cannot overshoot it by much.
        response_bytes_max = response_bytes_max.min(cap);
    }
    let min_bytes = (request.min_bytes.max(0) as usize).min(response_bytes_max);
    let deadline = Instant::now()
        + Duration::from_millis((request.max_wait_ms.max(0) as u64).min(WAIT_MS_MAX));

    let inline_max = match context.version >= SEND_FROM_FILE_MIN_VERSION {
        true => SEND_FROM_FILE_MIN_BYTES - 1,
        false => usize::MAX,
    };
    let read_all = |targets: &[Target]| read_all(targets, response_bytes_max, inline_max);
    let mut results = read_all(&targets);
    if !satisfied(&results, min_bytes) && request.max_wait_ms > 0 {
        let watched: Vec<Arc<Partition>> = targets
            .iter()
            .filter_map(|t| t.partition.as_ref().ok().cloned())
            .collect();
        let mut shutdown = broker.shutdown_signal();
        let _parked = Parked::new(Delayed::Fetch);
        loop {
            let waiter = ChangeWaiter::arm(&watched);
            results = read_all(&targets);
            if satisfied(&results, min_bytes) || Instant::now() >= deadline {
                break;
            }
            // Slices are not held while parked: they would keep deleted segments open.
            results.clear();
            let woken = tokio::select! {
                woken = waiter.wait(deadline) => woken,
                // Answer with what there is rather than hold up shutdown.
                _ = shutdown.triggered() => false,
            };
            if !woken {
                results = read_all(&targets);
                break;
            }
        }
    }
    count_errors(&results);
    let bytes_out = bytes_read(&results);
    // The image as it is now: a parked fetch may have outlived a leader change.
    let image = broker.image();
    let hints = LeaderHints::for_fetch(&image, &context.listener_name, context.version);
    let reply = build_response(topics, &targets, results, hints);
    if replica.is_some() {
        record_bytes_out(&targets, &bytes_out);
        record_leader_throttled(&targets, &bytes_out);
        return reply;
    }
    let (reply, throttled) = throttle_consumer(broker, context, reply);
    // A throttled consumer is sent an empty response: its bytes never went out.
    if !throttled {
        record_bytes_out(&targets, &bytes_out);
    }
    reply
}

/// Records a consumer's response against its fetch quota. Over the quota, the client gets
/// an empty response carrying the throttle time instead (Kafka's
/// `getThrottledResponse`): the records stay in the log for its next fetch. Says whether
/// it was throttled.
fn throttle_consumer(
    broker: &Broker,
    context: &RequestContext,
    reply: FetchReply,
) -> (FetchReply, bool) {
    use kafka_protocol::protocol::Encodable;
    if !broker
        .client_quotas
        .is_enabled(crate::client_quota::QuotaKind::Fetch)
    {
        return (reply, false);
    }
    // Sizing only walks the structure; raw record bytes are counted, not copied. Records
    // sent from files stand as markers in the response: their bytes count instead.
    let encoded = reply.response.compute_size(context.version).unwrap_or(0);
    let size = (reply.from_files.iter()).fold(encoded, |size, records| {
        super::outgoing::spliced_size(size, records.len())
    });
    let throttle = super::throttle::record_fetch(broker, context, size);
    if throttle == 0 {
        return (reply, false);
    }
    let empty = FetchResponse::default()
        .with_session_id(0)
        .with_throttle_time_ms(i32::try_from(throttle).unwrap_or(i32::MAX));
    (FetchReply::encoded_in_full(empty), true)
}

/// Counts the partitions' error codes.
fn count_errors(results: &[ReadOutcome]) {
    for result in results {
        if let Err((error, _, _)) = result {
            metrics::count_error(ApiKey::Fetch, error.code());
        }
    }
}

/// The record bytes read per target (none for a partition in error).
fn bytes_read(results: &[ReadOutcome]) -> Vec<Option<usize>> {
    (results.iter())
        .map(|result| result.as_ref().ok().map(|read| read.records.len()))
        .collect()
}

/// Bytes out per topic (consumers) or replication bytes out (followers), recorded once
/// the response that carries them is final.
fn record_bytes_out(targets: &[Target], bytes_out: &[Option<usize>]) {
    for (target, &bytes) in targets.iter().zip(bytes_out) {
        let Some(bytes) = bytes else { continue };
        match &target.partition {
            _ if target.replica.is_some() => {
                metrics::registry()
                    .replication_bytes_out
                    .fetch_add(bytes as u64, Relaxed);
            }
            Ok(partition) => partition.topic_metrics().record_out(bytes),
            Err(_) => {}
        }
    }
}

/// Marks the follower's targets whose partitions the leader side throttles here (one
/// atomic load per target when nothing is throttled).
fn mark_leader_throttled(broker: &Broker, targets: &mut [Target]) {
    let quotas = &broker.replication_quotas;
    for target in targets {
        if let Ok(partition) = &target.partition
            && quotas.leader.is_throttled(&partition.tp)
        {
            target.leader_quota = Some(Arc::clone(quotas));
        }
    }
}

/// Kafka records the bytes sent for every throttled partition, in sync or not: the
/// bound is on the replication traffic as a whole.
fn record_leader_throttled(targets: &[Target], bytes_out: &[Option<usize>]) {
    let now = crate::client_quota::monotonic_ms();
    for (target, &bytes) in targets.iter().zip(bytes_out) {
        if let (Some(quotas), Some(bytes)) = (&target.leader_quota, bytes)
            && bytes > 0
        {
            quotas.leader.record(bytes, now);
        }
    }
}

/// The fetching replica's broker id, if a follower sent this (consumers send -1).
fn follower_id(request: &FetchRequest, version: i16) -> Option<NodeId> {
    let id = if version >= 15 {
        request.replica_state.replica_id.0
    } else {
        request.replica_id.0
    };
    (id >= 0).then_some(id)
}

/// Records the follower's fetch offsets at the leader, once per request (not at every
/// re-read while parked), and sends the ISR additions that follow to the controller. A
/// partition the follower may not fetch gets its error here.
fn record_follower_progress(
    broker: &Broker,
    image: &MetadataImage,
    request: &FetchRequest,
    replica: NodeId,
    targets: &mut [Target],
) {
    // A follower may join the ISR only while the controller would accept it: registered
    // under the broker epoch it fetches with, unfenced and not shutting down.
    let epoch = request.replica_state.replica_epoch;
    let eligible = image
        .brokers
        .get(&replica)
        .is_some_and(|b| !b.fenced && !b.in_controlled_shutdown && (epoch < 0 || b.epoch == epoch));
    let now = now_ms();
    for target in targets {
        let Ok(partition) = &target.partition else {
            continue;
        };
        let fetch = (target.fetch_offset, target.current_leader_epoch);
        let follower = FollowerBroker { epoch, eligible };
        let recorded = partition.record_follower_fetch(replica, fetch, now, follower);
        match recorded {
            Ok(Some(proposal)) => {
                tracing::info!(
                    tp = %partition.tp, replica, proposed = ?proposal.new_isr,
                    "follower caught up: adding it to the ISR"
                );
                isr_changes::submit(&broker.controller, Arc::clone(partition), proposal);
            }
            Ok(None) => {}
            Err(error) => {
                target.partition = Err(replica_error(&error));
                continue;
            }
        }
        // DeleteRecords waits for every live replica's log start (its low watermark).
        partition.record_follower_log_start(replica, target.log_start_offset);
    }
}

/// Sessions are declined; see the module doc.
fn session_error(request: &FetchRequest) -> Option<ResponseError> {
    match (request.session_id, request.session_epoch) {
        (0, -1) | (0, 0) => None,
        (0, _) => Some(ResponseError::InvalidFetchSessionEpoch),
        _ => Some(ResponseError::FetchSessionIdNotFound),
    }
}

fn resolve_name(image: &MetadataImage, topic: &FetchTopic, version: i16) -> TopicName {
    if version < 13 {
        return topic.topic.clone();
    }
    image
        .topic_by_id(&topic.topic_id)
        .map(|t| TopicName(StrBytes::from_string(t.name.clone())))
        .unwrap_or_default()
}

fn resolve_targets(
    broker: &Broker,
    image: &MetadataImage,
    request_topics: &[FetchTopic],
    names: &[(TopicName, uuid::Uuid)],
    replica: Option<NodeId>,
) -> Vec<Target> {
    let mut targets = Vec::new();
    for (topic_index, topic) in request_topics.iter().enumerate() {
        let name = names[topic_index].0.0.as_str();
        let unknown = if name.is_empty() {
            ResponseError::UnknownTopicId
        } else {
            ResponseError::UnknownTopicOrPartition
        };
        for partition in &topic.partitions {
            let resolved = leader_partition(broker, image, name, partition.partition, unknown);
            targets.push(Target {
                topic_index,
                partition_index: partition.partition,
                fetch_offset: partition.fetch_offset,
                max_bytes: partition.partition_max_bytes.max(0) as usize,
                current_leader_epoch: partition.current_leader_epoch,
                partition: resolved,
                replica,
                log_start_offset: partition.log_start_offset,
                read_committed: false,
                leader_quota: None,
            });
        }
    }
    targets
}

/// What one read of one partition produced.
type ReadOutcome = Result<PartitionRead<ReadRecords>, (ResponseError, i64, i64)>;

/// Reads every target within the response's byte limit; reads up to `inline_max` bytes
/// come back in memory, larger ones as file slices.
fn read_all(targets: &[Target], response_bytes_max: usize, inline_max: usize) -> Vec<ReadOutcome> {
    let mut remaining = response_bytes_max;
    let mut any_data = false;
    targets
        .iter()
        .map(|target| {
            let outcome = read_one(target, remaining, !any_data, inline_max);
            if let Ok(read) = &outcome {
                remaining = remaining.saturating_sub(read.records.len());
                any_data |= !read.records.is_empty();
            }
            outcome
        })
        .collect()
}

fn read_one(
    target: &Target,
    remaining: usize,
    min_one_batch: bool,
    inline_max: usize,
) -> ReadOutcome {
    let partition = target
        .partition
        .as_ref()
        .map_err(|error| (*error, -1, -1))?;
    let offsets = |p: &Partition| {
        p.offsets()
            .map(|(start, hw, _)| (hw, start))
            .unwrap_or((-1, -1))
    };
    let fail = |error: ReplicaError| {
        let (hw, start) = offsets(partition);
        (replica_error(&error), hw, start)
    };
    partition
        .check_leader_epoch(target.current_leader_epoch)
        .map_err(fail)?;
    let mut max_bytes = target.max_bytes.min(remaining);
    let mut min_one_batch = min_one_batch;
    let bound = match target.replica {
        // Held back: no records, but the offsets (and any error) as ever (Kafka's
        // `readFromLog` answers a throttled partition with an empty record set).
        Some(replica) if leader_holds(target, partition, replica) => {
            (max_bytes, min_one_batch) = (0, false);
            ReadBound::LogEnd
        }
        Some(_) => ReadBound::LogEnd,
        None if target.read_committed => ReadBound::LastStableOffset,
        None => ReadBound::HighWatermark,
    };
    let offset = target.fetch_offset;
    partition
        .read_for_fetch(offset, max_bytes, min_one_batch, bound, inline_max)
        .map_err(fail)
}

/// Kafka's `shouldLeaderThrottle` for a target marked throttled.
fn leader_holds(target: &Target, partition: &Partition, replica: NodeId) -> bool {
    target.leader_quota.as_ref().is_some_and(|quotas| {
        let in_sync = || partition.is_in_sync(replica);
        quotas
            .leader
            .holds(&partition.tp, in_sync, crate::client_quota::monotonic_ms())
    })
}

/// Done waiting: enough bytes, or an error the client must see now.
fn satisfied(results: &[ReadOutcome], min_bytes: usize) -> bool {
    let mut total = 0usize;
    for result in results {
        match result {
            Ok(read) => total += read.records.len(),
            Err(_) => return true,
        }
    }
    total >= min_bytes
}

/// The response; partitions refused for not leading them name the leader (KIP-951).
/// Records left in the files stand as markers, their slices in the reply.
fn build_response(
    topics: Vec<(TopicName, uuid::Uuid)>,
    targets: &[Target],
    results: Vec<ReadOutcome>,
    mut hints: LeaderHints,
) -> FetchReply {
    let mut from_files = Vec::new();
    let names: Vec<TopicName> = topics.iter().map(|(name, _)| name.clone()).collect();
    let mut responses: Vec<FetchableTopicResponse> = topics
        .into_iter()
        .map(|(name, id)| {
            FetchableTopicResponse::default()
                .with_topic(name)
                .with_topic_id(id)
        })
        .collect();
    for (target, result) in targets.iter().zip(results) {
        let data = PartitionData::default().with_partition_index(target.partition_index);
        let data = match result {
            Ok(read) => {
                // Kafka sends null for read_uncommitted, a list (maybe empty) otherwise.
                let aborted = target.read_committed.then(|| {
                    let aborted = read.aborted_transactions.iter();
                    aborted
                        .map(|txn| {
                            AbortedTransaction::default()
                                .with_producer_id(txn.producer_id.into())
                                .with_first_offset(txn.first_offset)
                        })
                        .collect()
                });
                let records = match read.records {
                    ReadRecords::Bytes(bytes) => bytes,
                    ReadRecords::Slices(slices) => {
                        from_files.push(slices);
                        super::outgoing::marker(from_files.len() - 1)
                    }
                };
                data.with_high_watermark(read.high_watermark)
                    .with_last_stable_offset(read.last_stable_offset)
                    .with_log_start_offset(read.log_start_offset)
                    .with_aborted_transactions(aborted)
                    .with_records(Some(records))
            }
            Err((error, hw, start)) => data
                .with_current_leader(hints.fetch_leader(
                    names[target.topic_index].0.as_str(),
                    target.partition_index,
                    error,
                ))
                .with_error_code(error.code())
                .with_high_watermark(hw)
                // Kafka answers -1 (unknown) here; the HW would overstate an LSO held back
                // by an open or not yet replicated transaction, and clients cache it.
                .with_last_stable_offset(-1)
                .with_log_start_offset(start)
                .with_records(Some(Bytes::new())),
        };
        responses[target.topic_index].partitions.push(data);
    }
    let response = FetchResponse::default()
        .with_session_id(0)
        .with_responses(responses)
        .with_node_endpoints(hints.fetch_endpoints());
    FetchReply {
        response,
        from_files,
    }
}
