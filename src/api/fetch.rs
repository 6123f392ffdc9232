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
//! Incremental fetch sessions (KIP-227) are served (`fetch_session`): a full fetch with
//! epoch 0 gets a session id; a later request with the session's id and epoch fetches from
//! every partition of the session (reads, `min_bytes`, parking, a follower's progress), not
//! only those it names, and its response lists only partitions with something to say. It
//! visits only the partitions that may have something to say (`fetch_session` says which),
//! and parks on the session's watch, which every partition of the session wakes; a
//! partition marked while it waits joins it. The session is updated once the response is
//! known to go out: a throttled consumer's empty response leaves it as it was. A
//! sessionless fetch (epoch -1) costs what it always did.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use tokio::time::Instant;

use super::errors::replica_error;
use super::fetch_request::{FetchQuery, TopicRun};
use super::fetch_response::{
    FLEXIBLE_MIN_VERSION, FetchAnswer, PartitionAnswer, TOPIC_IDS_MIN_VERSION, TopicAnswer,
};
use super::fetch_session::{
    Answer, Context, INVALID_SESSION_ID, Incremental, PartitionFetch, PartitionKey, QuietRead,
    Responded, Sent, SessionChanges, SessionRequest,
};
use super::leader_hint::LeaderHints;
use super::{RequestContext, leader_partition_with};
use crate::broker::Broker;
use crate::controller::MetadataImage;
use crate::log::TopicCompression;
use crate::metrics::{self, request::Delayed, request::Parked};
use crate::replica::replication_quota::ReplicationQuotas;
use crate::replica::waits::{ChangeWaiter, SessionWake, SessionWatch, wait_deadline};
use crate::replica::{
    FollowerBroker, Partition, PartitionRead, PartitionVersion, ReadBound, ReadRecords,
    ReplicaError, isr_changes,
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
const SEND_FROM_FILE_MIN_VERSION: i16 = FLEXIBLE_MIN_VERSION;

/// The first Fetch version whose consumers may read zstd batches (KIP-110). Below it Kafka
/// answers UNSUPPORTED_COMPRESSION_TYPE for a partition whose topic's `compression.type`
/// is `zstd` (KafkaApis' `maybeConvertFetchedData`); other topics may hold zstd batches a
/// producer sent, and are read as they are, as Kafka does.
const ZSTD_FETCH_MIN_VERSION: i16 = 10;

/// One requested partition, resolved against the image once, and what its final read
/// returned (`bytes_read`).
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
    /// The bytes of records its final read returned; `None` for an error, and until
    /// [`note_bytes_read`].
    bytes_read: Option<usize>,
}

pub async fn handle(
    broker: &Broker,
    context: &RequestContext,
    request: &FetchQuery<'_>,
) -> FetchAnswer {
    let image = broker.image();
    let replica = follower_id(request);
    metrics::request::mark_fetch_from_follower(replica.is_some());
    let mut session = begin_session(broker, &image, request, (context.version, replica));
    // Until the response is settled, a fetch of a session leaves the session to visit
    // every partition next time: the marks it drained would be lost with it.
    let mut unrecorded = Unrecorded::of(broker, &session);
    let (mut topics, mut targets) = match &session {
        Context::Error(error) => return empty_reply(error.code(), INVALID_SESSION_ID, 0),
        Context::Incremental(incremental) => {
            let partitions = (&incremental.partitions[..], incremental.uses_topic_ids);
            session_targets(broker, &image, partitions, replica)
        }
        Context::Sessionless | Context::Full => {
            request_targets(broker, &image, request, context.version, replica)
        }
    };
    let visit = Visit {
        broker,
        image: &image,
        request,
        replica,
    };
    visit.prepare(standing(&session), &mut targets);
    let quiet = session_quiet(&session, &targets);
    let parking = match &mut session {
        Context::Incremental(incremental) => match incremental.watch.clone() {
            Some(watch) => Parking::Session(incremental, watch, &mut topics, visit),
            None => Parking::Targets,
        },
        _ => Parking::Targets,
    };
    let mut results = read_or_park(broker, context, request, (&mut targets, quiet), parking).await;
    if context.version < ZSTD_FETCH_MIN_VERSION && replica.is_none() {
        refuse_zstd_topics(&targets, &mut results);
    }
    count_errors(&results);
    note_bytes_read(&mut targets, &results);
    let (keep, update) = session_update(&session, &topics, &targets, &results);
    // The image as it is now: a parked fetch may have outlived a leader change.
    let image = broker.image();
    let hints = LeaderHints::for_fetch(&image, &context.listener_name, context.version);
    let reply = build_response(topics, &targets, results, hints, keep.as_deref());
    if replica.is_none() {
        let throttle_ms = throttle_consumer(broker, context, &reply);
        // A throttled consumer is sent an empty response: its bytes never went out.
        if throttle_ms > 0 {
            return throttled(broker, &session, throttle_ms);
        }
    }
    let (reply, sent) = settle_session(broker, &session, context.version, replica, update, reply);
    unrecorded.settled(sent);
    if sent {
        record_bytes_out(&targets);
        if replica.is_some() {
            record_leader_throttled(&targets);
        }
    }
    reply
}

/// What a fetch does to its targets before reading them: once per target per request.
struct Visit<'a> {
    broker: &'a Broker,
    image: &'a MetadataImage,
    request: &'a FetchQuery<'a>,
    replica: Option<NodeId>,
}

impl Visit<'_> {
    /// Sets the isolation level, records a follower's progress and marks the partitions
    /// the leader side throttles; in a session, registers each partition not yet registered
    /// with the session's watch at its slot (`standing`, one per target). After the
    /// follower's progress (a high watermark it moves would mark its own slot), before the
    /// read, so a change after the read marks it.
    fn prepare(&self, standing: Option<Standing<'_>>, targets: &mut [Target]) {
        let read_committed = self.replica.is_none() && self.request.isolation_level == 1;
        for target in targets.iter_mut() {
            target.read_committed = read_committed;
        }
        if let Some(replica) = self.replica {
            let (broker, image) = (self.broker, self.image);
            record_follower_progress(broker, image, self.request, replica, targets);
            mark_leader_throttled(broker, targets);
        }
        if let Some((watch, slots)) = standing {
            let hosted = (targets.iter().zip(slots))
                .filter_map(|(target, slot)| Some((target.partition.as_ref().ok()?, *slot)));
            let hosted: Vec<(&Arc<Partition>, u64)> = hosted.collect();
            let numbers = hosted.iter().map(|(p, slot)| (*slot, p.number()));
            for index in watch.to_stand(numbers) {
                let (partition, slot) = hosted[index];
                partition.stand(watch, slot);
            }
        }
    }
}

/// A session's watch and the slots of a run of targets.
type Standing<'a> = (&'a Arc<SessionWatch>, &'a [u64]);

/// The standing registrations of a tracked session's targets; none outside one.
fn standing(session: &Context) -> Option<Standing<'_>> {
    match session {
        Context::Incremental(incremental) => {
            (incremental.watch.as_ref()).map(|watch| (watch, &incremental.slots[..]))
        }
        _ => None,
    }
}

/// What a parked fetch waits on.
enum Parking<'a> {
    /// A wake-up armed on every target's partition, at every park.
    Targets,
    /// The session's watch (its own, tracked), which its partitions mark and wake: the
    /// partitions it marks join the fetch (with their topics) when it wakes.
    Session(
        &'a mut Incremental,
        Arc<SessionWatch>,
        &'a mut Vec<(TopicName, uuid::Uuid)>,
        Visit<'a>,
    ),
}

impl Parking<'_> {
    /// Before each park (armed): the session's partitions marked since the fetch began
    /// that it does not visit yet join its targets, prepared, with their quiet reads.
    /// False once the session has moved on: the fetch's answer will not stand.
    fn grow(&mut self, targets: &mut Vec<Target>, quiet: &mut Vec<Option<Quiet>>) -> bool {
        let Parking::Session(incremental, watch, topics, visit) = self else {
            return true;
        };
        let now_ms = crate::client_quota::monotonic_ms();
        // A lapse is left for the session's next fetch, which visits everything for it.
        let marked = watch.drain_marks(now_ms);
        let sessions = &visit.broker.fetch_sessions;
        if marked.is_empty() {
            return true;
        }
        // A whole visit has every partition already: marked ones are read again anyway,
        // unless the session moved on (the marks were for the fetch that overtook it).
        if incremental.whole {
            return sessions.is_current(incremental);
        }
        let first = incremental.partitions.len();
        match sessions.extend(incremental, marked) {
            None => return false,
            Some(0) => return true,
            Some(_) => {}
        }
        let added = &incremental.partitions[first..];
        let uses_topic_ids = incremental.uses_topic_ids;
        let (broker, image, replica) = (visit.broker, visit.image, visit.replica);
        let (more_topics, mut more) =
            session_targets(broker, image, (added, uses_topic_ids), replica);
        for target in &mut more {
            target.topic_index += topics.len();
        }
        topics.extend(more_topics);
        let from = targets.len();
        targets.extend(more);
        let slots = &incremental.slots[first..];
        visit.prepare(Some((watch, slots)), &mut targets[from..]);
        let tail = added.iter().zip(&targets[from..]);
        quiet.extend(tail.map(|(entry, target)| session_quiet_of(entry, target)));
        true
    }
}

/// Reads the targets, and parks until `min_bytes` are there, an error is, or `max_wait_ms`
/// has passed (woken by appends and high watermark moves of any target, or of any
/// partition of a session). Targets `quiet` marks (one entry per target, or none) are
/// answered unread while their versions hold.
async fn read_or_park(
    broker: &Broker,
    context: &RequestContext,
    request: &FetchQuery<'_>,
    (targets, mut quiet): (&mut Vec<Target>, Vec<Option<Quiet>>),
    mut parking: Parking<'_>,
) -> Vec<ReadOutcome> {
    let replica = follower_id(request);
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
    let wait = Duration::from_millis((request.max_wait_ms.max(0) as u64).min(WAIT_MS_MAX));
    let deadline = wait_deadline(Instant::now(), wait);
    let inline_max = match context.version >= SEND_FROM_FILE_MIN_VERSION {
        true => SEND_FROM_FILE_MIN_BYTES - 1,
        false => usize::MAX,
    };
    // One vector of results and one of quiet reads for every round, refilled in place.
    let mut results = Vec::with_capacity(targets.len());
    let read_all = |results: &mut Vec<ReadOutcome>, targets: &[Target], quiet: &[Option<Quiet>]| {
        read_all(results, targets, quiet, (response_bytes_max, inline_max))
    };
    read_all(&mut results, targets, &quiet);
    if satisfied(&results, min_bytes) || request.max_wait_ms <= 0 {
        return results;
    }
    // Partitions with nothing to read, and the version that says so: re-reads skip them
    // while it holds, so a wake-up costs the partitions that changed, not all of them.
    quiet_reads(&mut quiet, targets, &results);
    let watched: Vec<Arc<Partition>> = match &parking {
        Parking::Targets => {
            let mut watched = Vec::with_capacity(targets.len());
            watched.extend(
                targets
                    .iter()
                    .filter_map(|t| t.partition.as_ref().ok().cloned()),
            );
            watched
        }
        Parking::Session(..) => Vec::new(),
    };
    let mut shutdown = broker.serving_signal();
    let _parked = Parked::new(Delayed::Fetch);
    loop {
        let waiter = match &parking {
            Parking::Targets => Waiter::Targets(ChangeWaiter::arm(&watched)),
            Parking::Session(_, watch, ..) => Waiter::Session(watch.arm()),
        };
        // Armed first: a change from now on wakes the wait below.
        let grown = parking.grow(targets, &mut quiet);
        // Every target still quiet at the version it read: a read now would answer each from
        // its quiet read, which did not satisfy the fetch (`min_bytes` is above zero here:
        // zero is satisfied by the first read), and would give the same quiet reads back,
        // so it parks without reading again.
        let unchanged = grown && all_quiet(targets, &quiet) && Instant::now() < deadline;
        if !unchanged {
            read_all(&mut results, targets, &quiet);
            if !grown || satisfied(&results, min_bytes) || Instant::now() >= deadline {
                return results;
            }
            quiet_reads(&mut quiet, targets, &results);
        }
        // Slices are not held while parked: they would keep deleted segments open.
        results.clear();
        let woken = tokio::select! {
            woken = waiter.wait(deadline) => woken,
            // Answer with what there is rather than hold up shutdown.
            _ = shutdown.triggered() => false,
        };
        if !woken {
            read_all(&mut results, targets, &quiet);
            return results;
        }
    }
}

/// A parked fetch's armed wake-up.
enum Waiter {
    Targets(ChangeWaiter),
    Session(SessionWake),
}

impl Waiter {
    /// Resolves when woken (true) or at `deadline` (false).
    async fn wait(self, deadline: Instant) -> bool {
        match self {
            Waiter::Targets(waiter) => waiter.wait(deadline).await,
            Waiter::Session(wake) => wake.wait(deadline).await,
        }
    }
}

/// Hands a fetch's drained marks back unless its response was settled (see
/// `fetch_session`): dropped with the fetch (a closed connection), a throttled or refused
/// response. The session's next fetch visits every partition, and a fetch of it parked
/// meanwhile (the one that overtook this) takes them all in.
struct Unrecorded<'a> {
    broker: &'a Broker,
    session: Option<(i32, Arc<SessionWatch>)>,
}

impl<'a> Unrecorded<'a> {
    fn of(broker: &'a Broker, session: &Context) -> Unrecorded<'a> {
        let session = match session {
            Context::Incremental(incremental) => {
                (incremental.watch.clone()).map(|watch| (incremental.session_id, watch))
            }
            _ => None,
        };
        Unrecorded { broker, session }
    }

    fn settled(&mut self, sent: bool) {
        if sent {
            self.session = None;
        }
    }
}

impl Drop for Unrecorded<'_> {
    fn drop(&mut self) {
        if let Some((id, watch)) = self.session.take() {
            self.broker.fetch_sessions.revisit(id);
            watch.mark_all();
        }
    }
}

/// The request's session context (Kafka's `FetchManager.newContext`).
fn begin_session(
    broker: &Broker,
    image: &MetadataImage,
    request: &FetchQuery<'_>,
    (version, replica): (i16, Option<NodeId>),
) -> Context {
    let bound = bound_of(replica, request.isolation_level == 1);
    let session = SessionRequest {
        session_id: request.session_id,
        epoch: request.session_epoch,
        uses_topic_ids: version >= TOPIC_IDS_MIN_VERSION,
        reader: (replica, bound),
    };
    let now_ms = crate::client_quota::monotonic_ms();
    let changes = || session_changes(image, request, version);
    broker.fetch_sessions.begin(session, now_ms, changes)
}

/// What an incremental request adds to, updates in and removes from its session.
fn session_changes(
    image: &MetadataImage,
    request: &FetchQuery<'_>,
    version: i16,
) -> SessionChanges {
    let mut upserts = Vec::with_capacity(request.partitions.len());
    for topic in &request.topics {
        let name = resolve_name(image, topic, version);
        for partition in request.partitions_of(topic) {
            upserts.push(PartitionFetch {
                topic: name.clone(),
                topic_id: topic.topic_id,
                partition: partition.partition,
                fetch_offset: partition.fetch_offset,
                max_bytes: partition.partition_max_bytes.max(0) as usize,
                log_start_offset: partition.log_start_offset,
                current_leader_epoch: partition.current_leader_epoch,
            });
        }
    }
    let mut forgotten = Vec::with_capacity(request.forgotten_partitions.len());
    for topic in &request.forgotten {
        let partitions = request.forgotten_of(topic).iter();
        match version {
            TOPIC_IDS_MIN_VERSION.. => {
                forgotten.extend(partitions.map(|&p| PartitionKey::Id(topic.topic_id, p)))
            }
            _ => {
                // One copy of the name per topic, shared by its partitions' keys.
                let name = owned_name(topic.name);
                forgotten.extend(partitions.map(|&p| PartitionKey::Name(name.clone(), p)))
            }
        }
    }
    SessionChanges { upserts, forgotten }
}

/// What the session makes of the response, worked out before the results go into it:
/// which partitions an incremental response lists, and what to remember once it is sent.
fn session_update(
    session: &Context,
    topics: &[(TopicName, uuid::Uuid)],
    targets: &[Target],
    results: &[ReadOutcome],
) -> (Option<Vec<bool>>, SessionUpdate) {
    match session {
        Context::Full => {
            let partitions = (targets.iter().zip(results))
                .map(|(target, result)| {
                    let (topic, topic_id) = &topics[target.topic_index];
                    let fetch = PartitionFetch {
                        topic: topic.clone(),
                        topic_id: *topic_id,
                        partition: target.partition_index,
                        fetch_offset: target.fetch_offset,
                        max_bytes: target.max_bytes,
                        log_start_offset: target.log_start_offset,
                        current_leader_epoch: target.current_leader_epoch,
                    };
                    (fetch, Sent::after(&answer(target, result)))
                })
                .collect();
            (None, SessionUpdate::Create(partitions))
        }
        Context::Incremental(incremental) => {
            let answers: Vec<Answer> = (targets.iter().zip(results))
                .map(|(target, result)| answer(target, result))
                .collect();
            let (keep, responded) = incremental.respond(&answers);
            (Some(keep), SessionUpdate::Commit(responded))
        }
        Context::Sessionless | Context::Error(_) => (None, SessionUpdate::Nothing),
    }
}

/// What the session remembers once a response goes out.
enum SessionUpdate {
    Nothing,
    /// A full fetch's partitions and what was sent of them, for a new session.
    Create(Vec<(PartitionFetch, Sent)>),
    /// What an incremental response sent.
    Commit(Vec<Responded>),
}

/// What a response says of one partition, as sessions compare it.
fn answer(target: &Target, result: &ReadOutcome) -> Answer {
    let quiet = quiet_read(target, result).map(|quiet| QuietRead {
        version: quiet.version,
        fetch_offset: target.fetch_offset,
        current_leader_epoch: target.current_leader_epoch,
        bound: read_bound(target),
        log_end_offset: quiet.log_end_offset,
    });
    match result {
        Ok(read) => Answer {
            high_watermark: read.high_watermark,
            log_start_offset: read.log_start_offset,
            last_stable_offset: read.last_stable_offset,
            has_records: !read.records.is_empty(),
            error: false,
            quiet,
        },
        Err((_, high_watermark, log_start_offset)) => Answer {
            high_watermark: *high_watermark,
            log_start_offset: *log_start_offset,
            last_stable_offset: -1,
            has_records: false,
            error: true,
            quiet: None,
        },
    }
}

/// Creates the session of a full fetch or records what an incremental one sent, and sets
/// the response's session id. Says whether the response still carries its records: an
/// incremental response overtaken by a newer request of its session does not.
fn settle_session(
    broker: &Broker,
    session: &Context,
    version: i16,
    replica: Option<NodeId>,
    update: SessionUpdate,
    mut reply: FetchAnswer,
) -> (FetchAnswer, bool) {
    let sessions = &broker.fetch_sessions;
    match (session, update) {
        (Context::Full, SessionUpdate::Create(partitions)) => {
            let now_ms = crate::client_quota::monotonic_ms();
            let uses_topic_ids = version >= TOPIC_IDS_MIN_VERSION;
            let id = sessions.create(replica.is_some(), uses_topic_ids, now_ms, partitions);
            reply.session_id = id;
        }
        (Context::Incremental(incremental), SessionUpdate::Commit(responded)) => {
            let id = incremental.session_id;
            if let Err(error) = sessions.commit(incremental, responded) {
                tracing::debug!(session = id, "fetch session moved on meanwhile: {error:?}");
                return (empty_reply(error.code(), id, 0), false);
            }
            reply.session_id = id;
        }
        _ => reply.session_id = INVALID_SESSION_ID,
    }
    (reply, true)
}

/// The empty response of a throttled consumer (Kafka's `getThrottledResponse`): a full
/// fetch's names no session; an incremental one's keeps its session unchanged.
fn throttled(broker: &Broker, session: &Context, throttle_ms: u64) -> FetchAnswer {
    let throttle_ms = i32::try_from(throttle_ms).unwrap_or(i32::MAX);
    let Context::Incremental(incremental) = session else {
        return empty_reply(0, INVALID_SESSION_ID, throttle_ms);
    };
    let id = incremental.session_id;
    match broker.fetch_sessions.check_epoch(incremental) {
        Ok(()) => empty_reply(0, id, throttle_ms),
        Err(error) => empty_reply(error.code(), id, throttle_ms),
    }
}

/// A response with no partitions: a session error, or a throttled consumer's.
fn empty_reply(error_code: i16, session_id: i32, throttle_ms: i32) -> FetchAnswer {
    FetchAnswer {
        throttle_time_ms: throttle_ms,
        error_code,
        session_id,
        ..FetchAnswer::default()
    }
}

/// Records a consumer's response against its fetch quota; the throttle time, 0 within it.
/// Over the quota, the client gets an empty response carrying the throttle time instead
/// (Kafka's `getThrottledResponse`): the records stay in the log for its next fetch.
fn throttle_consumer(broker: &Broker, context: &RequestContext, reply: &FetchAnswer) -> u64 {
    if !broker
        .client_quotas
        .is_enabled(crate::client_quota::QuotaKind::Fetch)
    {
        return 0;
    }
    // Sizing only walks the structure: record bytes, in memory or in files, are counted.
    let size = reply.body_size(context.version);
    super::throttle::record_fetch(broker, context, size)
}

/// Counts the partitions' error codes.
fn count_errors(results: &[ReadOutcome]) {
    for result in results {
        if let Err((error, _, _)) = result {
            metrics::count_error(ApiKey::Fetch, error.code());
        }
    }
}

/// Notes in each target the record bytes its final read returned (none for an error), for
/// the byte metrics and the leader quota once the response is known to go out.
fn note_bytes_read(targets: &mut [Target], results: &[ReadOutcome]) {
    debug_assert_eq!(targets.len(), results.len(), "one result per target");
    for (target, result) in targets.iter_mut().zip(results) {
        target.bytes_read = result.as_ref().ok().map(|read| read.records.len());
    }
}

/// Bytes out per topic (consumers) or replication bytes out (followers), recorded once
/// the response that carries them is final.
fn record_bytes_out(targets: &[Target]) {
    for target in targets {
        let Some(bytes) = target.bytes_read else {
            continue;
        };
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
fn record_leader_throttled(targets: &[Target]) {
    let now = crate::client_quota::monotonic_ms();
    for target in targets {
        if let (Some(quotas), Some(bytes)) = (&target.leader_quota, target.bytes_read)
            && bytes > 0
        {
            quotas.leader.record(bytes, now);
        }
    }
}

/// The fetching replica's broker id, if a follower sent this (consumers send -1).
fn follower_id(request: &FetchQuery<'_>) -> Option<NodeId> {
    (request.replica_id >= 0).then_some(request.replica_id)
}

/// Records the follower's fetch offsets at the leader, once per request (not at every
/// re-read while parked), and sends the ISR additions that follow to the controller. A
/// partition the follower may not fetch gets its error here.
fn record_follower_progress(
    broker: &Broker,
    image: &MetadataImage,
    request: &FetchQuery<'_>,
    replica: NodeId,
    targets: &mut [Target],
) {
    // A follower may join the ISR only while the controller would accept it: registered
    // under the broker epoch it fetches with, unfenced and not shutting down.
    let epoch = request.replica_epoch;
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
        let log_start = target.log_start_offset;
        if partition.record_unchanged_follower_fetch(replica, fetch, log_start, now) {
            continue;
        }
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

fn resolve_name(image: &MetadataImage, topic: &TopicRun<'_>, version: i16) -> TopicName {
    if version < TOPIC_IDS_MIN_VERSION {
        return owned_name(topic.name);
    }
    name_of_id(image, &topic.topic_id)
}

/// A name from the request, copied: the request's strings borrow its frame, and a session
/// keeps the names of the partitions it fetches.
fn owned_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

/// The topic's name, empty for an id the image does not know.
fn name_of_id(image: &MetadataImage, topic_id: &uuid::Uuid) -> TopicName {
    image
        .topic_by_id(topic_id)
        .map(|t| TopicName(StrBytes::from_string(t.name.clone())))
        .unwrap_or_default()
}

/// The request's partitions as targets, and its topics (the response's, in its order).
fn request_targets(
    broker: &Broker,
    image: &MetadataImage,
    request: &FetchQuery<'_>,
    version: i16,
    replica: Option<NodeId>,
) -> (Vec<(TopicName, uuid::Uuid)>, Vec<Target>) {
    let topics: Vec<(TopicName, uuid::Uuid)> = (request.topics.iter())
        .map(|topic| (resolve_name(image, topic, version), topic.topic_id))
        .collect();
    let mut targets = Vec::with_capacity(request.partitions.len());
    for (topic_index, topic) in request.topics.iter().enumerate() {
        let name = topics[topic_index].0.0.as_str();
        let partitions = request.partitions_of(topic);
        let indexes = partitions.iter().map(|partition| partition.partition);
        let hosted = broker.replicas.get_many(name, indexes);
        for (partition, hosted) in partitions.iter().zip(hosted) {
            let wanted = Wanted {
                partition: partition.partition,
                fetch_offset: partition.fetch_offset,
                max_bytes: partition.partition_max_bytes.max(0) as usize,
                current_leader_epoch: partition.current_leader_epoch,
                log_start_offset: partition.log_start_offset,
            };
            let resolved = target(broker, image, (topic_index, name), wanted, replica, hosted);
            targets.push(resolved);
        }
    }
    (topics, targets)
}

/// The partitions an incremental fetch visits (`partitions`, of a session that names
/// topics by id or not) as targets, in the session's order, and their topics: one per run
/// of partitions of a topic, as Kafka groups a response. Sessions with topic ids look their
/// names up again: a topic may have become known, or been deleted, since. A run's hosted
/// partitions are looked up together (a follower's session holds every partition it
/// follows here).
fn session_targets(
    broker: &Broker,
    image: &MetadataImage,
    (partitions, uses_topic_ids): (&[(PartitionFetch, Sent)], bool),
    replica: Option<NodeId>,
) -> (Vec<(TopicName, uuid::Uuid)>, Vec<Target>) {
    let mut topics: Vec<(TopicName, uuid::Uuid)> = Vec::new();
    let mut targets = Vec::with_capacity(partitions.len());
    let same_topic = |(before, _): &(PartitionFetch, Sent), (after, _): &(PartitionFetch, Sent)| {
        match uses_topic_ids {
            true => before.topic_id == after.topic_id,
            false => before.topic == after.topic,
        }
    };
    for run in partitions.chunk_by(same_topic) {
        let (first, _) = &run[0];
        let name = match uses_topic_ids {
            true => name_of_id(image, &first.topic_id),
            false => first.topic.clone(),
        };
        topics.push((name, first.topic_id));
        let topic_index = topics.len() - 1;
        let name = topics[topic_index].0.0.as_str();
        let indexes = run.iter().map(|(fetch, _)| fetch.partition);
        let hosted = broker.replicas.get_many(name, indexes);
        for ((fetch, _), hosted) in run.iter().zip(hosted) {
            let wanted = Wanted {
                partition: fetch.partition,
                fetch_offset: fetch.fetch_offset,
                max_bytes: fetch.max_bytes,
                current_leader_epoch: fetch.current_leader_epoch,
                log_start_offset: fetch.log_start_offset,
            };
            let resolved = target(broker, image, (topic_index, name), wanted, replica, hosted);
            targets.push(resolved);
        }
    }
    (topics, targets)
}

/// Kafka's `maybeConvertFetchedData` for a consumer below [`ZSTD_FETCH_MIN_VERSION`]: each
/// partition of a topic stored as zstd is answered with UNSUPPORTED_COMPRESSION_TYPE and
/// offsets of -1 (Kafka's `partitionResponse`), whatever its read found. After the read,
/// as in Kafka, so a long poll waits for records as it would (targets a parked session
/// added included).
fn refuse_zstd_topics(targets: &[Target], results: &mut [ReadOutcome]) {
    let zstd = TopicCompression::Codec(Compression::Zstd);
    for (target, result) in targets.iter().zip(results) {
        let stored_as = target.partition.as_ref().ok().and_then(|p| p.config());
        if stored_as.is_some_and(|config| config.compression == zstd) {
            *result = Err((ResponseError::UnsupportedCompressionType, -1, -1));
        }
    }
}

/// One partition as fetched, from the request or from a session.
#[derive(Clone, Copy)]
struct Wanted {
    partition: i32,
    fetch_offset: i64,
    max_bytes: usize,
    current_leader_epoch: i32,
    log_start_offset: i64,
}

/// The target for `wanted`; `hosted` is its partition as `ReplicaManager::get` answers.
fn target(
    broker: &Broker,
    image: &MetadataImage,
    (topic_index, name): (usize, &str),
    wanted: Wanted,
    replica: Option<NodeId>,
    hosted: Option<Arc<Partition>>,
) -> Target {
    let unknown = if name.is_empty() {
        ResponseError::UnknownTopicId
    } else {
        ResponseError::UnknownTopicOrPartition
    };
    let place = (name, wanted.partition);
    let partition = leader_partition_with(broker, image, place, unknown, || hosted);
    Target {
        topic_index,
        partition_index: wanted.partition,
        fetch_offset: wanted.fetch_offset,
        max_bytes: wanted.max_bytes,
        current_leader_epoch: wanted.current_leader_epoch,
        partition,
        replica,
        log_start_offset: wanted.log_start_offset,
        read_committed: false,
        leader_quota: None,
        bytes_read: None,
    }
}

/// What one read of one partition produced.
type ReadOutcome = Result<PartitionRead<ReadRecords>, (ResponseError, i64, i64)>;

/// A read that found nothing at or past the fetch offset up to its bound, and the
/// partition version it saw: while the version holds, a read finds the same.
#[derive(Clone, Copy, Debug)]
struct Quiet {
    version: PartitionVersion,
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
    log_end_offset: i64,
}

impl Quiet {
    /// What the read found, again. No aborted transactions: they come only with records.
    fn outcome(&self) -> ReadOutcome {
        Ok(PartitionRead {
            records: ReadRecords::Bytes(Bytes::new()),
            high_watermark: self.high_watermark,
            last_stable_offset: self.last_stable_offset,
            aborted_transactions: Vec::new(),
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset,
            version: self.version,
        })
    }
}

/// Whether every target has a quiet read (`quiet`, one per target) that its partition's
/// version still holds: what [`read_all`] would answer unread, every one of them.
fn all_quiet(targets: &[Target], quiet: &[Option<Quiet>]) -> bool {
    quiet.len() == targets.len()
        && (targets.iter().zip(quiet)).all(|(target, &quiet)| still_quiet(target, quiet).is_some())
}

/// The target's quiet read, if its partition's version still holds it.
fn still_quiet(target: &Target, quiet: Option<Quiet>) -> Option<Quiet> {
    quiet.filter(|quiet| (target.partition.as_ref()).is_ok_and(|p| p.version() == quiet.version))
}

/// Each target's quiet read (see [`quiet_read`]), into `quiet` (refilled).
fn quiet_reads(quiet: &mut Vec<Option<Quiet>>, targets: &[Target], results: &[ReadOutcome]) {
    quiet.clear();
    quiet.extend((targets.iter().zip(results)).map(|(target, result)| quiet_read(target, result)));
}

/// The result if it was quiet: empty because the fetch offset is at or past the target's
/// bound, not because a byte limit or a throttle held records back (those depend on more
/// than the partition's state).
fn quiet_read(target: &Target, result: &ReadOutcome) -> Option<Quiet> {
    let read = result
        .as_ref()
        .ok()
        .filter(|read| read.records.is_empty())?;
    let bound = match read_bound(target) {
        ReadBound::LogEnd => read.log_end_offset,
        ReadBound::LastStableOffset => read.last_stable_offset,
        ReadBound::HighWatermark => read.high_watermark,
    };
    (target.fetch_offset >= bound).then_some(Quiet {
        version: read.version,
        high_watermark: read.high_watermark,
        last_stable_offset: read.last_stable_offset,
        log_start_offset: read.log_start_offset,
        log_end_offset: read.log_end_offset,
    })
}

/// Where a target's read stops, throttling aside.
fn read_bound(target: &Target) -> ReadBound {
    bound_of(target.replica, target.read_committed)
}

/// Where the reads of a follower's fetch (`replica`) or a consumer's stop.
fn bound_of(replica: Option<NodeId>, read_committed: bool) -> ReadBound {
    match replica {
        Some(_) => ReadBound::LogEnd,
        None if read_committed => ReadBound::LastStableOffset,
        None => ReadBound::HighWatermark,
    }
}

/// An incremental fetch's targets whose last answer was a quiet read from the same offset
/// to the same bound: what the session sent is what a read finds while the version holds,
/// so partitions idle in a follower's session of a thousand are not read at every fetch.
fn session_quiet(session: &Context, targets: &[Target]) -> Vec<Option<Quiet>> {
    let Context::Incremental(incremental) = session else {
        return Vec::new();
    };
    (incremental.partitions.iter().zip(targets))
        .map(|(entry, target)| session_quiet_of(entry, target))
        .collect()
}

/// [`session_quiet`] of one target and its session entry.
fn session_quiet_of((_, sent): &(PartitionFetch, Sent), target: &Target) -> Option<Quiet> {
    let read = sent.quiet?;
    let same = read.fetch_offset == target.fetch_offset
        && read.current_leader_epoch == target.current_leader_epoch
        && read.bound == read_bound(target);
    same.then_some(Quiet {
        version: read.version,
        high_watermark: sent.high_watermark,
        last_stable_offset: sent.last_stable_offset,
        log_start_offset: sent.log_start_offset,
        log_end_offset: read.log_end_offset,
    })
}

/// Reads every target within the response's byte limit, into `results` (refilled); reads
/// up to `inline_max` bytes come back in memory, larger ones as file slices. A target
/// whose entry in `quiet` (empty: none) still has its partition's version is answered from
/// it without a read.
fn read_all(
    results: &mut Vec<ReadOutcome>,
    targets: &[Target],
    quiet: &[Option<Quiet>],
    (response_bytes_max, inline_max): (usize, usize),
) {
    let mut remaining = response_bytes_max;
    let mut any_data = false;
    results.clear();
    results.extend(targets.iter().enumerate().map(|(index, target)| {
        if let Some(quiet) = still_quiet(target, quiet.get(index).copied().flatten()) {
            return quiet.outcome();
        }
        let outcome = read_one(target, remaining, !any_data, inline_max);
        if let Ok(read) = &outcome {
            remaining = remaining.saturating_sub(read.records.len());
            any_data |= !read.records.is_empty();
        }
        outcome
    }));
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
        _ => read_bound(target),
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
/// Records left in the files stay slices, sent from there (`fetch_response`). An
/// incremental fetch's response lists only the targets `keep` marks.
fn build_response(
    topics: Vec<(TopicName, uuid::Uuid)>,
    targets: &[Target],
    results: Vec<ReadOutcome>,
    mut hints: LeaderHints,
    keep: Option<&[bool]>,
) -> FetchAnswer {
    // Each topic's partitions sized once: growing the list by pushes reallocated it (a
    // long poll's profile showed the copy and glibc's consolidation of free chunks).
    let kept = |index: usize| keep.is_none_or(|keep| keep[index]);
    let mut answered = vec![0usize; topics.len()];
    for (index, target) in targets.iter().enumerate() {
        if kept(index) {
            answered[target.topic_index] += 1;
        }
    }
    let mut answers: Vec<TopicAnswer> = (topics.into_iter().zip(answered))
        .map(|((name, id), count)| TopicAnswer {
            name,
            id,
            partitions: Vec::with_capacity(count),
        })
        .collect();
    for (index, (target, result)) in targets.iter().zip(results).enumerate() {
        if !kept(index) {
            continue;
        }
        let mut answer = PartitionAnswer::empty(target.partition_index);
        match result {
            Ok(read) => {
                answer.high_watermark = read.high_watermark;
                answer.last_stable_offset = read.last_stable_offset;
                answer.log_start_offset = read.log_start_offset;
                // Kafka sends null for read_uncommitted, a list (maybe empty) otherwise.
                answer.aborted_transactions =
                    target.read_committed.then_some(read.aborted_transactions);
                answer.records = read.records;
            }
            Err((error, hw, start)) => {
                let topic = answers[target.topic_index].name.0.as_str();
                answer.current_leader = hints.hint(topic, target.partition_index, error);
                answer.error_code = error.code();
                answer.high_watermark = hw;
                // Kafka answers -1 (unknown) here; the HW would overstate an LSO held back
                // by an open or not yet replicated transaction, and clients cache it.
                answer.last_stable_offset = -1;
                answer.log_start_offset = start;
            }
        }
        answers[target.topic_index].partitions.push(answer);
    }
    if keep.is_some() {
        answers = listed_topics(answers);
    }
    FetchAnswer {
        topics: answers,
        node_endpoints: hints.into_endpoints(),
        ..FetchAnswer::default()
    }
}

/// The topics with partitions left, a run of one topic's partitions under one entry (what
/// is left out can make two runs of a topic meet), as Kafka's `FetchResponse.of` groups.
fn listed_topics(answers: Vec<TopicAnswer>) -> Vec<TopicAnswer> {
    let mut listed: Vec<TopicAnswer> = Vec::new();
    for topic in answers.into_iter().filter(|t| !t.partitions.is_empty()) {
        match listed.last_mut() {
            Some(last) if last.name == topic.name && last.id == topic.id => {
                last.partitions.extend(topic.partitions);
            }
            _ => listed.push(topic),
        }
    }
    listed
}

#[cfg(test)]
mod quiet_tests {
    use super::*;
    use crate::log::test_support::encode_batch;
    use crate::log::{LastShutdown, LogConfig};
    use crate::replica::partition::Leadership;
    use crate::types::TopicPartition;
    use kafka_protocol::records::Compression;

    /// [`super::read_all`] into a new vector.
    fn read_all(
        targets: &[Target],
        quiet: &[Option<Quiet>],
        response_bytes_max: usize,
        inline_max: usize,
    ) -> Vec<ReadOutcome> {
        let mut results = Vec::new();
        super::read_all(
            &mut results,
            targets,
            quiet,
            (response_bytes_max, inline_max),
        );
        results
    }

    /// [`super::quiet_reads`] into a new vector.
    fn quiet_reads(targets: &[Target], results: &[ReadOutcome]) -> Vec<Option<Quiet>> {
        let mut quiet = Vec::new();
        super::quiet_reads(&mut quiet, targets, results);
        quiet
    }

    /// A leader holding one batch of two records (offsets 0 and 1), and that batch.
    fn leader_with_a_batch(dir: &std::path::Path) -> (Arc<Partition>, Bytes) {
        let partition = leader(dir);
        let batch = encode_batch(&[1, 2], Compression::None).freeze();
        partition.append(&batch, 1).unwrap();
        (partition, batch)
    }

    fn leader(dir: &std::path::Path) -> Arc<Partition> {
        let tp = TopicPartition::new("t", 0);
        let opened = (
            tp,
            uuid::Uuid::from_u128(7),
            dir.join("p"),
            LogConfig::default(),
        );
        let partition = Partition::open_at(opened, 0, 0, 0, LastShutdown::Unclean).unwrap();
        let view = Leadership {
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
            replicas: vec![1],
            isr: vec![1],
        };
        partition
            .apply_leadership(1, &view, 0, crate::replica::partition::Publish::Background)
            .unwrap();
        Arc::new(partition)
    }

    fn target(partition: &Arc<Partition>, fetch_offset: i64, max_bytes: usize) -> Target {
        Target {
            topic_index: 0,
            partition_index: 0,
            fetch_offset,
            max_bytes,
            current_leader_epoch: 0,
            partition: Ok(Arc::clone(partition)),
            replica: Some(2),
            log_start_offset: 0,
            read_committed: false,
            leader_quota: None,
            bytes_read: None,
        }
    }

    fn records(result: &ReadOutcome) -> usize {
        result.as_ref().unwrap().records.len()
    }

    /// What `build_response` puts in each entry: a read's offsets, records and (for
    /// read_committed only) aborted list; an error's code and offsets, with the unknown
    /// LSO and null aborted list Kafka's `KafkaApis` sends; `keep` leaves entries out.
    #[test]
    fn the_answer_carries_each_read_and_each_error_as_kafka_does() {
        let dir = tempfile::tempdir().unwrap();
        let (partition, batch) = leader_with_a_batch(dir.path());
        let mut targets = vec![
            target(&partition, 0, usize::MAX),
            target(&partition, 0, usize::MAX),
            target(&partition, 0, usize::MAX),
        ];
        targets[1].read_committed = true;
        targets[1].partition_index = 1;
        targets[2].partition = Err(ResponseError::NotLeaderOrFollower);
        targets[2].partition_index = 2;
        let results = read_all(&targets, &[], usize::MAX, usize::MAX);
        let image = MetadataImage::default();
        let topics = vec![(TopicName(StrBytes::from_static_str("t")), uuid::Uuid::nil())];
        let hints = LeaderHints::for_fetch(&image, "PLAINTEXT", 4);
        let answer = build_response(topics.clone(), &targets, results, hints, None);
        let [topic] = &answer.topics[..] else {
            panic!("one topic")
        };
        let [uncommitted, committed, refused] = &topic.partitions[..] else {
            panic!("3")
        };
        assert_eq!(uncommitted.records.len(), batch.len());
        assert_eq!(uncommitted.high_watermark, 2);
        assert_eq!(uncommitted.aborted_transactions, None);
        assert_eq!(committed.aborted_transactions, Some(Vec::new()));
        assert_eq!(committed.index, 1);
        assert_eq!((refused.index, refused.error_code), (2, 6));
        assert_eq!(
            (refused.high_watermark, refused.last_stable_offset),
            (-1, -1)
        );
        assert_eq!(refused.aborted_transactions, None);
        assert!(refused.records.is_empty());

        let results = read_all(&targets, &[], usize::MAX, usize::MAX);
        let hints = LeaderHints::for_fetch(&image, "PLAINTEXT", 4);
        let answer = build_response(
            topics,
            &targets,
            results,
            hints,
            Some(&[false, true, false]),
        );
        let listed: Vec<(i32, usize)> = (answer.topics.iter())
            .flat_map(|t| t.partitions.iter().map(|p| (p.index, p.records.len())))
            .collect();
        assert_eq!(listed, [(1, batch.len())]);
    }

    #[test]
    fn a_quiet_partition_is_answered_unread_until_its_version_moves() {
        let dir = tempfile::tempdir().unwrap();
        let (partition, batch) = leader_with_a_batch(dir.path());
        // Behind the log end: the batch. Behind it again with no bytes left: records held
        // back by the response's limit, which is not quiet (the next read, with room, has
        // them). At the log end: nothing to read, quiet.
        let targets = [
            target(&partition, 0, usize::MAX),
            target(&partition, 0, usize::MAX),
            target(&partition, 2, usize::MAX),
        ];
        let first = read_all(&targets, &[], batch.len(), usize::MAX);
        let counts: Vec<usize> = first.iter().map(records).collect();
        assert_eq!(counts, [batch.len(), 0, 0]);
        let quiet = quiet_reads(&targets, &first);
        assert!(quiet[0].is_none(), "records");
        assert!(quiet[1].is_none(), "held back by the byte limit, not quiet");
        assert!(quiet[2].is_some());

        // Unchanged: the quiet answer stands, offsets as read.
        let again = read_all(&targets, &quiet, usize::MAX, usize::MAX);
        let (read, cached) = (first[2].as_ref().unwrap(), again[2].as_ref().unwrap());
        assert_eq!(cached.high_watermark, read.high_watermark);
        assert_eq!(cached.log_end_offset, 2);
        assert_eq!(cached.version, read.version);
        // An append moves the version: the partition is read again and has the records.
        partition.append(&batch, 1).unwrap();
        let after = read_all(&targets, &quiet, usize::MAX, usize::MAX);
        assert_eq!(records(&after[2]), batch.len());
        assert!(quiet_reads(&targets, &after)[2].is_none());
    }

    /// A parked fetch skips its re-read only while every target is quiet at its version.
    #[test]
    fn all_quiet_only_while_every_target_is_quiet_at_its_version() {
        let dir = tempfile::tempdir().unwrap();
        let (partition, batch) = leader_with_a_batch(dir.path());
        let at_end = [
            target(&partition, 2, usize::MAX),
            target(&partition, 2, 100),
        ];
        let quiet = quiet_reads(&at_end, &read_all(&at_end, &[], usize::MAX, usize::MAX));
        assert!(all_quiet(&at_end, &quiet));
        // What the skipped re-read would have found: the same quiet reads.
        let again = quiet_reads(&at_end, &read_all(&at_end, &quiet, usize::MAX, usize::MAX));
        let versions = |quiet: &[Option<Quiet>]| -> Vec<_> {
            (quiet.iter())
                .map(|q| q.map(|q| (q.version, q.high_watermark, q.log_end_offset)))
                .collect()
        };
        assert_eq!(versions(&again), versions(&quiet));
        assert!(
            !all_quiet(&at_end, &quiet[..1]),
            "a target without an entry"
        );
        assert!(!all_quiet(&at_end, &[]), "none");
        // One target behind the log end: it has records, so it is not quiet.
        let mixed = [
            target(&partition, 2, usize::MAX),
            target(&partition, 0, usize::MAX),
        ];
        let quiet_mixed = quiet_reads(&mixed, &read_all(&mixed, &[], usize::MAX, usize::MAX));
        assert!(!all_quiet(&mixed, &quiet_mixed));
        // A change moves the version: no longer quiet at it.
        partition.append(&batch, 1).unwrap();
        assert!(!all_quiet(&at_end, &quiet));
    }

    /// A session standing registered with a partition has its slot marked at every version
    /// move, once per registration, and is woken by the changes a read could see.
    #[tokio::test]
    async fn a_partition_marks_and_wakes_the_sessions_standing_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let partition = leader(dir.path());
        let watch = Arc::new(SessionWatch::new(crate::client_quota::monotonic_ms()));
        let drain = || watch.drain(crate::client_quota::monotonic_ms()).slots;
        watch.add(7);
        watch.add(8);
        partition.stand(&watch, 7);
        partition.stand(&watch, 7);
        assert!(drain().is_empty());
        let batch = encode_batch(&[1, 2], Compression::None).freeze();
        let armed = watch.arm();
        partition.append(&batch, 1).unwrap();
        assert_eq!(drain(), vec![7], "marked once");
        let soon = || Instant::now() + Duration::from_millis(50);
        assert!(armed.wait(soon()).await, "woken");
        assert!(drain().is_empty());
        // Only a wake-up armed at the change is woken: nothing is kept for later.
        partition.append(&batch, 2).unwrap();
        assert!(!watch.arm().wait(soon()).await);
        assert_eq!(drain(), vec![7], "the mark is kept");
        // A change no read sees moves the version: marked, not woken.
        let armed = watch.arm();
        partition.set_config(LogConfig::default());
        assert_eq!(drain(), vec![7]);
        assert!(!armed.wait(soon()).await);
        // A slot the session forgot is dropped at the partition's next change.
        watch.remove(7);
        partition.append(&batch, 3).unwrap();
        assert!(drain().is_empty());
    }

    /// A session's quiet read stands for the next fetch only if that fetch asks the same:
    /// a follower that moved its offset or its leader epoch is read again.
    #[test]
    fn a_session_quiet_read_stands_only_for_the_same_question() {
        let dir = tempfile::tempdir().unwrap();
        let partition = leader(dir.path());
        let targets = [target(&partition, 0, usize::MAX)];
        let read = read_all(&targets, &[], usize::MAX, usize::MAX);
        let answered = answer(&targets[0], &read[0]);
        let quiet = answered.quiet.expect("an empty log is quiet at 0");
        assert_eq!(quiet.version, partition.version());
        let fetch = PartitionFetch {
            topic: TopicName::default(),
            topic_id: uuid::Uuid::nil(),
            partition: 0,
            fetch_offset: 0,
            max_bytes: usize::MAX,
            log_start_offset: 0,
            current_leader_epoch: 0,
        };
        let session = Context::Incremental(Incremental {
            session_id: 1,
            epoch: 1,
            uses_topic_ids: false,
            partitions: vec![(fetch, Sent::after(&answered))],
            slots: vec![0],
            watch: Some(Arc::new(SessionWatch::new(0))),
            whole: true,
        });
        assert!(session_quiet(&session, &targets)[0].is_some());
        let mut other_epoch = target(&partition, 0, usize::MAX);
        other_epoch.current_leader_epoch = 1;
        assert!(session_quiet(&session, &[other_epoch])[0].is_none());
        let moved = target(&partition, 1, usize::MAX);
        assert!(session_quiet(&session, &[moved])[0].is_none());
        let mut consumer = target(&partition, 0, usize::MAX);
        consumer.replica = None;
        assert!(
            session_quiet(&session, &[consumer])[0].is_none(),
            "another bound"
        );
        assert!(session_quiet(&Context::Full, &targets).is_empty());
    }
}
