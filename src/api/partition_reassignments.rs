//! AlterPartitionReassignments v0 and ListPartitionReassignments v0 (KIP-455):
//! `kafka-reassign-partitions`, `AdminClient.alterPartitionReassignments`.
//!
//! Kafka 4.0 forwards both to the active controller. Here Alter names the partitions by
//! topic id and submits one `AlterPartitionReassignments` command (forwarded like every
//! command), answering per partition from its results; List reads the local image, which
//! every node keeps in step with the committed log:
//! - an unknown topic or partition (by the local image, not submitted):
//!   UNKNOWN_TOPIC_OR_PARTITION;
//! - more entries than `partitions.per.request.max` (CreateTopics' bound; Kafka has none
//!   here): INVALID_REQUEST at the top level and on every partition, nothing submitted;
//! - an empty, duplicated or unregistered replica list: INVALID_REPLICA_ASSIGNMENT;
//! - a cancel (null replicas) of a partition not moving: NO_REASSIGNMENT_IN_PROGRESS;
//! - no controller in time: the top-level error (REQUEST_TIMED_OUT), and the same on
//!   every partition named, as Kafka's `getErrorResponse` answers;
//! - List leaves out partitions and topics not moving, and unknown topics (Kafka's
//!   `listPartitionReassignments` skips them); null topics lists every one moving.
//!
//! v1 (KIP-860, `allow_replication_factor_change`) is Kafka 4.1's: not advertised.

use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use super::errors::controller_error;
use crate::broker::Broker;
use crate::controller::{
    CommandOutcome, ControllerError, MetadataCommand, MetadataImage, PartitionImage,
    PartitionReassignment, ReassignmentResult,
};

/// One partition the request names: the reassignment to submit, or the answer already
/// decided from the local image.
struct Named {
    topic: TopicName,
    partition: i32,
    planned: Result<PartitionReassignment, ResponseError>,
}

pub async fn alter(
    broker: &Broker,
    _context: &RequestContext,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let image = broker.image();
    let named = name_partitions(&image, &request);
    // One command carries every entry: the same bound as CreateTopics keeps a single
    // request from making one unbounded Raft entry.
    let limit = broker.topic_defaults().partitions_per_request_max;
    if named.len() > usize::try_from(limit).unwrap_or(0) {
        let error = ControllerError::InvalidRequest(format!(
            "{} reassignments in one request, more than partitions.per.request.max ({limit})",
            named.len()
        ));
        return failed(named, &error);
    }
    let planned: Vec<PartitionReassignment> = (named.iter())
        .filter_map(|n| n.planned.as_ref().ok().cloned())
        .collect();
    let results = if planned.is_empty() {
        Vec::new()
    } else {
        match submit(broker, planned, request.timeout_ms).await {
            Ok(results) => results,
            Err(error) => return failed(named, &error),
        }
    };
    answer(named, results)
}

/// Every partition the request names, in its order, with the command entry for those
/// whose topic exists.
fn name_partitions(
    image: &MetadataImage,
    request: &AlterPartitionReassignmentsRequest,
) -> Vec<Named> {
    let mut named = Vec::new();
    for topic in &request.topics {
        let found = image.topic(topic.name.0.as_str());
        for partition in &topic.partitions {
            let index = partition.partition_index;
            let planned = match found {
                None => Err(ResponseError::UnknownTopicOrPartition),
                // An index the local image lacks is not submitted: the controller would
                // answer the same, at the cost of a command.
                Some(found) if image.partition(&found.name, index).is_none() => {
                    Err(ResponseError::UnknownTopicOrPartition)
                }
                Some(found) => Ok(PartitionReassignment {
                    topic_id: found.id,
                    partition: index,
                    target: (partition.replicas.as_ref())
                        .map(|replicas| replicas.iter().map(|id| id.0).collect()),
                    seen_in_progress_at: image
                        .partition(&found.name, index)
                        .filter(|p| p.is_reassigning())
                        .map(|p| p.partition_epoch),
                }),
            };
            named.push(Named {
                topic: topic.name.clone(),
                partition: index,
                planned,
            });
        }
    }
    named
}

/// Submits the reassignments; their results, one per entry, in order.
async fn submit(
    broker: &Broker,
    reassignments: Vec<PartitionReassignment>,
    timeout_ms: i32,
) -> Result<Vec<ReassignmentResult>, ControllerError> {
    let count = reassignments.len();
    let submitted = broker
        .controller
        .submit(MetadataCommand::AlterPartitionReassignments { reassignments });
    // The client's deadline, where it gave one; the submit has its own bound besides.
    let outcome = match u64::try_from(timeout_ms) {
        Ok(ms) if ms > 0 => tokio::time::timeout(Duration::from_millis(ms), submitted)
            .await
            .unwrap_or_else(|_| {
                Err(ControllerError::Unavailable(format!(
                    "the reassignment was not applied within {ms} ms (it may still be)"
                )))
            }),
        _ => submitted.await,
    }?;
    match outcome {
        CommandOutcome::PartitionsReassigned(results) if results.len() == count => Ok(results),
        other => Err(ControllerError::InvalidRequest(format!(
            "the reassignment answered {other:?}"
        ))),
    }
}

/// Kafka's code and message for one partition's result.
fn partition_error(result: ReassignmentResult) -> (i16, Option<String>) {
    match result {
        ReassignmentResult::Accepted => (0, None),
        ReassignmentResult::UnknownPartition => {
            (ResponseError::UnknownTopicOrPartition.code(), None)
        }
        ReassignmentResult::InvalidReplicaAssignment(message) => (
            ResponseError::InvalidReplicaAssignment.code(),
            Some(message),
        ),
        ReassignmentResult::NoReassignmentInProgress => {
            (ResponseError::NoReassignmentInProgress.code(), None)
        }
    }
}

/// The response, topics in the order first named; `results` answer the planned entries
/// in order.
fn answer(
    named: Vec<Named>,
    results: Vec<ReassignmentResult>,
) -> AlterPartitionReassignmentsResponse {
    let mut results = results.into_iter();
    let mut topics: Vec<ReassignableTopicResponse> = Vec::new();
    for entry in named {
        let (code, message) = match entry.planned {
            Err(code) => (code.code(), None),
            Ok(_) => partition_error(
                results
                    .next()
                    .unwrap_or(ReassignmentResult::UnknownPartition),
            ),
        };
        let partition = ReassignablePartitionResponse::default()
            .with_partition_index(entry.partition)
            .with_error_code(code)
            .with_error_message(message.map(StrBytes::from_string));
        push_partition(&mut topics, entry.topic, partition);
    }
    AlterPartitionReassignmentsResponse::default().with_responses(topics)
}

fn push_partition(
    topics: &mut Vec<ReassignableTopicResponse>,
    name: TopicName,
    partition: ReassignablePartitionResponse,
) {
    match topics.iter_mut().find(|topic| topic.name == name) {
        Some(topic) => topic.partitions.push(partition),
        None => topics.push(
            ReassignableTopicResponse::default()
                .with_name(name)
                .with_partitions(vec![partition]),
        ),
    }
}

/// The whole request failed: the top-level error, and the same on every partition.
fn failed(named: Vec<Named>, error: &ControllerError) -> AlterPartitionReassignmentsResponse {
    let code = controller_error(error).code();
    let message = StrBytes::from_string(error.to_string());
    let mut topics = Vec::new();
    for entry in named {
        let partition = ReassignablePartitionResponse::default()
            .with_partition_index(entry.partition)
            .with_error_code(code)
            .with_error_message(Some(message.clone()));
        push_partition(&mut topics, entry.topic, partition);
    }
    AlterPartitionReassignmentsResponse::default()
        .with_error_code(code)
        .with_error_message(Some(message))
        .with_responses(topics)
}

pub async fn list(
    broker: &Broker,
    _context: &RequestContext,
    request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let image = broker.image();
    let mut topics = Vec::new();
    match &request.topics {
        None => {
            for topic in image.topics.values() {
                let indexes = 0..topic.partitions.len() as i32;
                topics.extend(ongoing(&image, &topic.name, indexes));
            }
        }
        Some(named) => {
            for topic in named {
                let indexes = topic.partition_indexes.iter().copied();
                topics.extend(ongoing(&image, topic.name.0.as_str(), indexes));
            }
        }
    }
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}

/// The reassignments under way among `indexes` of `topic`; `None` if there are none (or
/// no such topic).
fn ongoing(
    image: &MetadataImage,
    topic: &str,
    indexes: impl Iterator<Item = i32>,
) -> Option<OngoingTopicReassignment> {
    let ids = |list: &[i32]| list.iter().copied().map(BrokerId).collect::<Vec<_>>();
    let partitions: Vec<OngoingPartitionReassignment> = indexes
        .filter_map(|index| Some((index, image.partition(topic, index)?)))
        .filter(|(_, partition)| partition.is_reassigning())
        .map(|(index, partition): (i32, &PartitionImage)| {
            OngoingPartitionReassignment::default()
                .with_partition_index(index)
                .with_replicas(ids(&partition.replicas))
                .with_adding_replicas(ids(&partition.adding_replicas))
                .with_removing_replicas(ids(&partition.removing_replicas))
        })
        .collect();
    (!partitions.is_empty()).then(|| {
        OngoingTopicReassignment::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(partitions)
    })
}
