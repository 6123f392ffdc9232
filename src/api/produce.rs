//! Produce: per-partition leadership check, validation and append. Each partition carries
//! its own error code; with acks=0 the client expects no response at all. With acks=all
//! the answer waits (the produce purgatory) until every in-sync replica has the records,
//! woken by the followers' fetches, for at most the request's `timeout_ms`.
//!
//! Transactional produce (a transactional id, transactional batches): before the first
//! batch of a producer's transaction lands on a partition, the transaction coordinator is
//! asked whether the partition is in the transaction (KIP-890 part 1; Produce v12 has it
//! added instead, part 2), see `txn_verify`; the append then checks the verification still
//! holds. The partition's producer state opens the transaction. Control batches from
//! clients are refused (INVALID_RECORD), as Kafka's LogValidator does.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use std::sync::Arc;
use std::time::Duration;

use super::errors::replica_error;
use super::leader_hint::LeaderHints;
use super::txn_verify::{self, Candidate};
use super::{RequestContext, leader_partition};
use crate::broker::Broker;
use crate::controller::MetadataImage;
use crate::controller::image::is_internal_topic;
use crate::log::{BatchError, BatchHeader, RecordError};
use crate::metrics::{self, request::Delayed, request::Parked};
use crate::replica::{Partition, ProduceOutcome, ReplicaError, RequiredAcks};
use crate::txn::producer_state::Verification;
use crate::txn::verification::{self, TxnOperation};
use crate::types::now_ms;

/// The first Produce version that may carry zstd batches (KIP-110).
const ZSTD_PRODUCE_MIN_VERSION: i16 = 7;

pub async fn handle(
    broker: &Broker,
    context: &RequestContext,
    request: ProduceRequest,
) -> Option<ProduceResponse> {
    let acks = request.acks;
    let valid_acks = matches!(acks, -1..=1);
    let required = if acks == -1 {
        RequiredAcks::All
    } else {
        RequiredAcks::Leader
    };
    let image = broker.image();
    let now = now_ms();
    let timeout = Duration::from_millis(request.timeout_ms.max(0) as u64);
    let transactional_id = request.transactional_id.as_ref().map(|id| id.0.to_string());
    let checks = (valid_acks, context.version);
    let mut prepared = prepare_all(broker, &image, request.topic_data, checks);
    let producers = transactional_producers(&prepared);
    if producers == TransactionalProducers::Many {
        // Kafka 4.0's `handleProduceAppend` throws InvalidPidMappingException before
        // anything is verified or appended, and the request's error response gives every
        // partition INVALID_PRODUCER_ID_MAPPING.
        fail_every_partition(&mut prepared, ResponseError::InvalidProducerIdMapping);
    }
    let id = transactional_id.as_deref();
    if producers != TransactionalProducers::None {
        verify_transactional(broker, context.version, id, &mut prepared, now).await;
    }
    // The replication wait starts after the verification, as Kafka's DelayedProduce is
    // created in its callback: a slow coordinator does not use up `timeout_ms`.
    let deadline = tokio::time::Instant::now() + timeout;
    // The verification may have taken a round trip: stamp the append with its own time.
    let topics = append_all(prepared, now_ms(), required);
    if acks == 0 {
        // No response to carry it, but the connection still holds the client (Kafka mutes
        // an acks=0 producer's channel too).
        let throttle = super::throttle::record_produce(broker, context);
        crate::metrics::request::set_throttle_ms(throttle);
        return None;
    }
    let mut waited = Vec::with_capacity(topics.len());
    for (name, topic_id, partitions) in topics {
        let mut results = Vec::with_capacity(partitions.len());
        for (index, appended) in partitions {
            let result = match appended {
                Ok((outcome, partition)) if required == RequiredAcks::All => {
                    wait_replicated(&partition, outcome, deadline).await
                }
                Ok((outcome, _)) => Ok(outcome),
                Err(failure) => Err(failure),
            };
            results.push((index, result));
        }
        waited.push((name, topic_id, results));
    }
    // Hints from the image as it is now: a wait may have ended because leadership moved.
    let image = broker.image();
    let mut hints = LeaderHints::for_produce(&image, &context.listener_name, context.version);
    let mut responses = Vec::with_capacity(waited.len());
    for (name, topic_id, results) in waited {
        let topic = name.0.as_str();
        let answered = results
            .into_iter()
            .map(|(index, result)| partition_response(topic, index, result, &mut hints))
            .collect();
        responses.push(
            TopicProduceResponse::default()
                .with_name(name)
                .with_topic_id(topic_id)
                .with_partition_responses(answered),
        );
    }
    // Recorded once the append is answered, as Kafka's response callback does.
    let throttle = super::throttle::record_produce(broker, context);
    Some(
        ProduceResponse::default()
            .with_responses(responses)
            .with_node_endpoints(hints.produce_endpoints())
            .with_throttle_time_ms(i32::try_from(throttle).unwrap_or(i32::MAX)),
    )
}

/// Every partition's checks before the append, in request order.
fn prepare_all(
    broker: &Broker,
    image: &MetadataImage,
    topic_data: Vec<kafka_protocol::messages::produce_request::TopicProduceData>,
    (valid_acks, version): (bool, i16),
) -> PreparedTopics {
    let mut prepared = Vec::with_capacity(topic_data.len());
    for topic in topic_data {
        let name = topic.name.0.as_str();
        let partitions = topic
            .partition_data
            .into_iter()
            .map(|data| {
                let result = if !valid_acks {
                    Err(ResponseError::InvalidRequiredAcks.into())
                } else {
                    prepare_partition(broker, image, name, &data, version)
                };
                (data.index, result)
            })
            .collect();
        prepared.push((topic.name, topic.topic_id, partitions));
    }
    prepared
}

/// Appends every prepared partition, in request order.
fn append_all(prepared: PreparedTopics, now: i64, required: RequiredAcks) -> AppendedTopics {
    let mut topics = Vec::with_capacity(prepared.len());
    for (name, topic_id, partitions) in prepared {
        let appended = partitions
            .into_iter()
            .map(|(index, prepared)| {
                let result = prepared.and_then(|p| {
                    let outcome =
                        append_logged(&p.partition, &p.records, now, required, p.verification)?;
                    Ok((outcome, p.partition))
                });
                (index, result)
            })
            .collect();
        topics.push((name, topic_id, appended));
    }
    topics
}

/// One partition's append, with the partition to wait on for acks=all.
type Appended = Result<(ProduceOutcome, Arc<Partition>), PartitionFailure>;

/// Every topic's partitions as the request lists them, each appended or failed.
type AppendedTopics = Vec<(TopicName, Uuid, Vec<(i32, Appended)>)>;

/// acks=all: the outcome once the ISR has the records; the error the client retries on
/// otherwise (NOT_LEADER_OR_FOLLOWER after a leader change, REQUEST_TIMED_OUT,
/// NOT_ENOUGH_REPLICAS_AFTER_APPEND).
async fn wait_replicated(
    partition: &Partition,
    outcome: ProduceOutcome,
    deadline: tokio::time::Instant,
) -> Result<ProduceOutcome, PartitionFailure> {
    // Committed when appended (an ISR of the leader alone, or followers ahead of this
    // request): answered without parking, so it is not counted in the purgatory.
    let settled = partition.commit_settled(outcome.end_offset, outcome.leader_epoch);
    let committed = match settled {
        Some(settled) => settled,
        None => {
            let parked = Parked::new(Delayed::Produce);
            let committed = partition
                .wait_committed(outcome.end_offset, outcome.leader_epoch, deadline)
                .await;
            drop(parked);
            committed
        }
    };
    match committed {
        Ok(()) => Ok(outcome),
        Err(error) => {
            tracing::debug!(tp = %partition.tp, %error, "acks=all produce not committed");
            Err(failure(error))
        }
    }
}

/// Why one partition's produce failed: the code, and for records that break a topic rule
/// Kafka's summary message and per-record errors (KIP-467, Produce v8+).
struct PartitionFailure {
    error: ResponseError,
    message: Option<String>,
    record_errors: Vec<RecordError>,
}

impl From<ResponseError> for PartitionFailure {
    fn from(error: ResponseError) -> Self {
        PartitionFailure {
            error,
            message: None,
            record_errors: Vec::new(),
        }
    }
}

/// A partition this broker leads, with the records to append and how they were verified.
struct Prepared {
    partition: Arc<Partition>,
    records: Bytes,
    verification: Verification,
}

/// Every topic's partitions as the request lists them, each ready to append or failed.
type PreparedTopics = Vec<(
    TopicName,
    Uuid,
    Vec<(i32, Result<Prepared, PartitionFailure>)>,
)>;

/// The checks before any append: internal topic, leadership, records present, and a
/// codec the request's version may carry.
fn prepare_partition(
    broker: &Broker,
    image: &MetadataImage,
    topic: &str,
    data: &kafka_protocol::messages::produce_request::PartitionProduceData,
    version: i16,
) -> Result<Prepared, PartitionFailure> {
    // Kafka refuses client appends to internal topics before anything else: garbage in
    // `__consumer_offsets` would stop its coordinator from loading. The coordinators write
    // through `Partition::append` directly, not through this handler.
    if is_internal_topic(topic) {
        return Err(ResponseError::InvalidTopicException.into());
    }
    let unknown = ResponseError::UnknownTopicOrPartition;
    let partition = leader_partition(broker, image, topic, data.index, unknown)?;
    let records = (data.records.as_ref())
        .filter(|r| !r.is_empty())
        .ok_or(ResponseError::InvalidRecord)?;
    if version < ZSTD_PRODUCE_MIN_VERSION && first_batch_is_zstd(records) {
        return Err(ResponseError::UnsupportedCompressionType.into());
    }
    Ok(Prepared {
        partition,
        records: records.clone(),
        verification: Verification::Off,
    })
}

/// Kafka's `ProduceRequest.validateRecords` refuses a whole zstd first batch below v7. A
/// batch cut short is left to the append's validation, which refuses it (INVALID_RECORD,
/// as Kafka finds no batch in it).
fn first_batch_is_zstd(records: &[u8]) -> bool {
    BatchHeader::parse(records).is_ok_and(|header| {
        header.magic == 2 && header.is_zstd() && header.total_bytes() <= records.len()
    })
}

/// KIP-890: the partitions whose first batch is transactional are verified with (or, from
/// Produce v12, added to) the producer's transaction before anything is appended; those
/// the coordinator refuses fail here with the error Kafka gives producers.
async fn verify_transactional(
    broker: &Broker,
    version: i16,
    transactional_id: Option<&str>,
    prepared: &mut PreparedTopics,
    now: i64,
) {
    let operation = TxnOperation::for_produce(version);
    if !txn_verify::applies(broker, operation) {
        return;
    }
    let mut slots = Vec::new();
    let mut candidates: Vec<Candidate> = Vec::new();
    for (name, _, partitions) in prepared.iter_mut() {
        for (index, slot) in partitions.iter_mut() {
            let Ok(ready) = &mut *slot else { continue };
            let Some(header) = transactional_header(&ready.records) else {
                continue;
            };
            // Kafka's append check refuses a transactional batch that was never verified
            // (no transactional id) unless its transaction is open here already.
            ready.verification = Verification::Guard(None);
            // One producer (id and epoch) only: `transactional_producers` found `Many` and
            // failed the request otherwise.
            candidates.push(Candidate {
                topic: name.0.to_string(),
                partition: *index,
                log: ready.partition.clone(),
                producer_id: header.producer_id,
                producer_epoch: header.producer_epoch,
                sequence: header.base_sequence,
            });
            slots.push(slot);
        }
    }
    let Some(transactional_id) = transactional_id else {
        return;
    };
    if candidates.is_empty() {
        return;
    }
    let verdicts = txn_verify::verify(broker, transactional_id, operation, &candidates, now).await;
    for (slot, verdict) in slots.into_iter().zip(verdicts) {
        match (slot.as_mut(), verdict) {
            (Ok(ready), Ok(verification)) => ready.verification = verification,
            (_, Err(error)) => {
                *slot = Err(verification::produce_error(error, operation).into());
            }
            (Err(_), Ok(_)) => {}
        }
    }
}

/// How many producers (id and epoch) the transactional batches of the request's
/// partitions (those not failed already) come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TransactionalProducers {
    /// No transactional batch: most produces. Nothing to verify, and reading the dynamic
    /// broker config that says whether verification applies is skipped too.
    None,
    One,
    /// Kafka 4.0's "Transactional records contained more than one producer ID".
    Many,
}

/// Every batch counts, as in Kafka: a produce should carry one per partition but nothing
/// enforces that yet.
fn transactional_producers(prepared: &PreparedTopics) -> TransactionalProducers {
    let mut seen: Option<(i64, i16)> = None;
    let ready = prepared
        .iter()
        .flat_map(|(_, _, partitions)| partitions.iter())
        .filter_map(|(_, slot)| slot.as_ref().ok());
    for ready in ready {
        let headers = crate::log::iter_batches(&ready.records).map_while(Result::ok);
        for (_, header) in headers {
            if !(header.is_transactional() && header.has_producer_id()) {
                continue;
            }
            let producer = (header.producer_id, header.producer_epoch);
            if seen.get_or_insert(producer) != &producer {
                return TransactionalProducers::Many;
            }
        }
    }
    match seen {
        Some(_) => TransactionalProducers::One,
        None => TransactionalProducers::None,
    }
}

/// Fails every partition of the request with `error`, as a request-level error response
/// does in Kafka (`ProduceRequest.getErrorResponse`).
fn fail_every_partition(prepared: &mut PreparedTopics, error: ResponseError) {
    for (_, _, partitions) in prepared.iter_mut() {
        for (_, slot) in partitions.iter_mut() {
            *slot = Err(error.into());
        }
    }
}

/// The header of the first batch if it is a transactional data batch with a producer id
/// (a produce carries one batch per partition; its validation comes at the append).
fn transactional_header(records: &Bytes) -> Option<BatchHeader> {
    let header = BatchHeader::parse(records).ok()?;
    (header.is_transactional() && header.has_producer_id() && !header.is_control())
        .then_some(header)
}

/// Appends, logging a storage fault (KAFKA_STORAGE_ERROR: disk full, I/O error) once when
/// it starts and once when an append succeeds again; other refusals are the client's
/// business and stay at debug.
fn append_logged(
    partition: &Partition,
    records: &Bytes,
    now: i64,
    acks: RequiredAcks,
    verification: Verification,
) -> Result<ProduceOutcome, PartitionFailure> {
    match partition.append_verified(records, now, acks, verification) {
        Ok(outcome) => {
            let records_appended = (outcome.end_offset - outcome.base_offset).max(0) as u64;
            partition
                .topic_metrics()
                .record_in(records.len(), records_appended);
            if partition.end_storage_fault() {
                tracing::info!(tp = %partition.tp, "appends succeed again after a storage fault");
            }
            Ok(outcome)
        }
        Err(error) => {
            let storage = replica_error(&error) == ResponseError::KafkaStorageError;
            if storage && partition.begin_storage_fault() {
                tracing::error!(
                    tp = %partition.tp,
                    %error,
                    "produce refused with KAFKA_STORAGE_ERROR (logged once until an append succeeds)"
                );
            } else {
                tracing::debug!(tp = %partition.tp, %error, "produce rejected");
            }
            Err(failure(error))
        }
    }
}

fn failure(error: ReplicaError) -> PartitionFailure {
    let code = replica_error(&error);
    match error {
        ReplicaError::Batch(BatchError::Records {
            message, errors, ..
        }) => PartitionFailure {
            error: code,
            message: Some(message),
            record_errors: errors,
        },
        _ => code.into(),
    }
}

/// One partition's answer; a refusal for not leading it names the leader (KIP-951).
fn partition_response(
    topic: &str,
    index: i32,
    result: Result<ProduceOutcome, PartitionFailure>,
    hints: &mut LeaderHints,
) -> PartitionProduceResponse {
    let response = PartitionProduceResponse::default().with_index(index);
    match result {
        Ok(outcome) => response
            .with_base_offset(outcome.base_offset)
            .with_log_append_time_ms(outcome.log_append_time_ms)
            .with_log_start_offset(outcome.log_start_offset),
        Err(failure) => {
            metrics::count_error(ApiKey::Produce, failure.error.code());
            let record_errors = failure.record_errors.into_iter().map(|error| {
                BatchIndexAndErrorMessage::default()
                    .with_batch_index(error.batch_index)
                    .with_batch_index_error_message(Some(StrBytes::from_string(error.message)))
            });
            response
                .with_current_leader(hints.produce_leader(topic, index, failure.error))
                .with_error_code(failure.error.code())
                .with_error_message(failure.message.map(StrBytes::from_string))
                .with_record_errors(record_errors.collect())
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::test_support::encode_batch;
    use kafka_protocol::records::Compression;

    #[test]
    fn only_a_whole_v2_zstd_first_batch_counts_as_zstd() {
        assert!(first_batch_is_zstd(&encode_batch(
            &[1, 2],
            Compression::Zstd
        )));
        for codec in [Compression::None, Compression::Gzip, Compression::Lz4] {
            assert!(!first_batch_is_zstd(&encode_batch(&[1, 2], codec)));
        }
        let zstd = encode_batch(&[1], Compression::Zstd);
        // Cut short, in or after its header: left to the append's validation.
        assert!(!first_batch_is_zstd(&zstd[..40]));
        assert!(!first_batch_is_zstd(&zstd[..zstd.len() - 1]));
        // Only the first batch is looked at here, as in Kafka's `validateRecords`; the
        // append's shape check refuses a second batch (INVALID_RECORD), as Kafka does.
        let mut two = encode_batch(&[1], Compression::None);
        two.extend_from_slice(&zstd);
        assert!(!first_batch_is_zstd(&two));
        let mut magic_one = zstd.clone();
        magic_one[16] = 1;
        assert!(!first_batch_is_zstd(&magic_one));
    }
}
