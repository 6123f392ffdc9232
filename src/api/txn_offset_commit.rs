//! TxnOffsetCommit (v0-5): a transactional producer commits a group's offsets inside its
//! transaction (`sendOffsetsToTransaction`), after AddOffsetsToTxn put the group's offsets
//! partition in it. The offsets are written as part of the transaction and become visible
//! to the group only when its commit marker lands (see `group::txn_offsets`).
//!
//! Checks in Kafka's order: the group id, the coordinator, the membership (v3+ carries
//! generation, member id and group instance id; older clients send none and are taken
//! as "simple" commits), then each partition on its own: a topic-partition that does not
//! exist is UNKNOWN_TOPIC_OR_PARTITION.
//!
//! After the membership checks the offsets partition is verified with the transaction
//! coordinator as a produce's partitions are (KIP-890, `txn_verify`): v0-4 ask whether the
//! group's offsets partition is in the transaction (AddOffsetsToTxn put it there); v5,
//! whose clients (transactions version 2) skip AddOffsetsToTxn, has it added.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::RequestContext;
use super::errors::{coordinator_error, group_error};
use super::group_offsets::coordinator_partition;
use super::txn_verify::{self, Candidate};
use crate::broker::Broker;
use crate::group::records::OffsetValue;
use crate::group::{GroupError, GroupState, OFFSETS_TOPIC, OffsetCommit, TxnProducer};
use crate::log::batch::NO_SEQUENCE;
use crate::replica::Partition;
use crate::txn::producer_state::Verification;
use crate::txn::verification::TxnOperation;
use crate::types::now_ms;
use std::sync::Arc;

pub async fn handle(
    broker: &Broker,
    context: &RequestContext,
    request: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let group = request.group_id.0.to_string();
    let image = broker.image();
    let now = now_ms();
    let log = if group.is_empty() {
        Err(ResponseError::InvalidGroupId)
    } else if request.producer_id.0 < 0 {
        // A transactional batch needs a producer id; Kafka's log refuses one without.
        Err(ResponseError::InvalidRequest)
    } else {
        coordinator_partition(broker, &group).map_err(|e| coordinator_error(&e))
    };
    let mut group_error = match &log {
        Err(error) => Some(*error),
        Ok(_) => membership_error(broker, &group, &request).await,
    };
    // Verified only when something will be written: a commit the membership checks or
    // unknown topics refuse appends nothing, so it keeps those answers (Kafka verifies
    // before validating membership; it answers such a commit with the verification's
    // error when both fail).
    let any_known = request.topics.iter().any(|topic| {
        let name = topic.name.0.as_str();
        (topic.partitions.iter()).any(|p| image.partition(name, p.partition_index).is_some())
    });
    let mut verification = Verification::Off;
    if let (Ok(partition), None, true) = (&log, group_error, any_known) {
        match verify(broker, context.version, &request, partition, now).await {
            // The verification waited on another node: a rebalance may have fenced the
            // member meanwhile, and a zombie's offsets must not land (KIP-447). Kafka
            // validates membership at write time; so again here.
            Ok(verified) => {
                verification = verified;
                group_error = membership_error(broker, &group, &request).await;
            }
            Err(error) => group_error = Some(error),
        }
    }
    let mut commits = Vec::new();
    let mut slots = Vec::new();
    for topic in &request.topics {
        for partition in &topic.partitions {
            let exists = image
                .partition(topic.name.0.as_str(), partition.partition_index)
                .is_some();
            let slot = match (group_error, exists) {
                (Some(error), _) => Err(error),
                (None, false) => Err(ResponseError::UnknownTopicOrPartition),
                (None, true) => {
                    commits.push(OffsetCommit {
                        topic: topic.name.0.to_string(),
                        partition: partition.partition_index,
                        value: OffsetValue {
                            offset: partition.committed_offset,
                            leader_epoch: partition.committed_leader_epoch,
                            metadata: partition
                                .committed_metadata
                                .as_ref()
                                .map(|m| m.to_string())
                                .unwrap_or_default(),
                            commit_timestamp_ms: now,
                        },
                    });
                    Ok(commits.len() - 1)
                }
            };
            slots.push(slot);
        }
    }
    let producer = TxnProducer {
        producer_id: request.producer_id.0,
        producer_epoch: request.producer_epoch,
        verification,
    };
    let results = match &log {
        Ok(log) if !commits.is_empty() => {
            broker
                .groups
                .txn_commit_offsets(log, &group, producer, commits, now)
                .await
        }
        _ => Vec::new(),
    };
    let mut slots = slots.into_iter();
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| {
                    let code = match slots.next().expect("one slot per partition") {
                        Err(error) => error.code(),
                        Ok(index) => match results.get(index) {
                            Some(Ok(())) => 0,
                            Some(Err(error)) => coordinator_error(error).code(),
                            None => ResponseError::UnknownServerError.code(),
                        },
                    };
                    TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(partition.partition_index)
                        .with_error_code(code)
                })
                .collect();
            TxnOffsetCommitResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

/// The group's offsets partition verified with (v5: added to) the producer's transaction;
/// the verification the commit's append presents, or the error every partition gets,
/// mapped as Kafka's group coordinator maps a failed write (`handleOperationException`):
/// transport and availability errors become ones TxnOffsetCommit clients retry.
async fn verify(
    broker: &Broker,
    version: i16,
    request: &TxnOffsetCommitRequest,
    partition: &Arc<Partition>,
    now: i64,
) -> Result<Verification, ResponseError> {
    let candidate = Candidate {
        topic: OFFSETS_TOPIC.to_string(),
        partition: partition.tp.partition,
        log: partition.clone(),
        producer_id: request.producer_id.0,
        producer_epoch: request.producer_epoch,
        // The coordinator's batch carries no sequence (Kafka passes NO_SEQUENCE too).
        sequence: NO_SEQUENCE,
    };
    let operation = TxnOperation::for_txn_offset_commit(version);
    let id = request.transactional_id.0.as_str();
    let verdicts = txn_verify::verify(broker, id, operation, &[candidate], now).await;
    match verdicts.into_iter().next() {
        Some(Ok(verification)) => Ok(verification),
        Some(Err(error)) => Err(offset_commit_error(error)),
        None => Ok(Verification::Off),
    }
}

/// Kafka's `CoordinatorRuntime` / `maybeConvertOffsetCommitError` table for an error met
/// while writing a transactional offset commit; the others pass unchanged.
fn offset_commit_error(error: ResponseError) -> ResponseError {
    match error {
        ResponseError::NetworkException => ResponseError::CoordinatorLoadInProgress,
        ResponseError::NotEnoughReplicas
        | ResponseError::NotEnoughReplicasAfterAppend
        | ResponseError::UnknownTopicOrPartition
        | ResponseError::RequestTimedOut => ResponseError::CoordinatorNotAvailable,
        ResponseError::NotLeaderOrFollower | ResponseError::KafkaStorageError => {
            ResponseError::NotCoordinator
        }
        other => other,
    }
}

/// Kafka's `validateTransactionalOffsetCommit`: a group that does not exist takes the
/// commit only without a generation (it becomes a simple group); one that exists checks
/// member, instance and generation when given (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID,
/// FENCED_INSTANCE_ID), but unlike OffsetCommit takes commits without them in any state
/// and does not refuse them while the group completes a rebalance.
async fn membership_error(
    broker: &Broker,
    group: &str,
    request: &TxnOffsetCommitRequest,
) -> Option<ResponseError> {
    let generation = request.generation_id;
    let member_id = request.member_id.to_string();
    let instance = request.group_instance_id.as_ref().map(|id| id.to_string());
    broker
        .groups
        .registry
        .with_either(group, |classic, consumer| match (classic, consumer) {
            // A stale epoch is ILLEGAL_GENERATION here: the transactional producer knows no
            // STALE_MEMBER_EPOCH (Kafka's `OffsetMetadataManager` converts it too).
            (_, Some(c)) => c
                .validate_offset_commit(&member_id, instance.as_deref(), generation, None)
                .err()
                .map(|e| match e {
                    GroupError::StaleMemberEpoch => ResponseError::IllegalGeneration,
                    other => group_error(&other),
                }),
            (Some(g), None) if g.state() != GroupState::Dead => g
                .validate_txn_offset_commit(&member_id, instance.as_deref(), generation)
                .err()
                .map(|e| group_error(&e)),
            _ if generation < 0 => None,
            _ => Some(ResponseError::IllegalGeneration),
        })
        .await
}
