//! TxnOffsetCommit (v0-5): a transactional producer commits a group's offsets inside its
//! transaction (`sendOffsetsToTransaction`), after AddOffsetsToTxn put the group's offsets
//! partition in it. The offsets are written as part of the transaction and become visible
//! to the group only when its commit marker lands (see `group::txn_offsets`).
//!
//! Checks in Kafka's order: the group id, the coordinator, the membership (v3+ carries
//! generation, member id and group instance id; older clients send none and are taken
//! as "simple" commits), then each partition on its own: a topic-partition that does not
//! exist is UNKNOWN_TOPIC_OR_PARTITION. Transactions version 2 (v5's implicit
//! AddOffsetsToTxn and its verification) is not done: v5 is served as v4.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::RequestContext;
use super::errors::{coordinator_error, group_error};
use super::group_offsets::coordinator_partition;
use crate::broker::Broker;
use crate::group::records::OffsetValue;
use crate::group::{GroupState, OffsetCommit, TxnProducer};
use crate::types::now_ms;

pub async fn handle(
    broker: &Broker,
    _context: &RequestContext,
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
    let group_error = match &log {
        Err(error) => Some(*error),
        Ok(_) => membership_error(broker, &group, &request).await,
    };
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
        .with_group(group, |found| match found {
            Some(g) if g.state() != GroupState::Dead => g
                .validate_txn_offset_commit(&member_id, instance.as_deref(), generation)
                .err()
                .map(|e| group_error(&e)),
            _ if generation < 0 => None,
            _ => Some(ResponseError::IllegalGeneration),
        })
        .await
}
