//! DeleteRecords v0-2 (`kafka-delete-records`, `AdminClient.deleteRecords`): moves each
//! partition's log start offset up to the offset asked for, as Kafka's
//! `ReplicaManager.deleteRecords` does.
//!
//! Per partition, in Kafka's order: an internal topic is INVALID_TOPIC_EXCEPTION; a
//! partition missing from the metadata is UNKNOWN_TOPIC_OR_PARTITION; one this broker does
//! not lead is NOT_LEADER_OR_FOLLOWER; a topic whose `cleanup.policy` lacks `delete` is
//! POLICY_VIOLATION; offset -1 means the high watermark, and an offset above it (or below
//! -1) is OFFSET_OUT_OF_RANGE. The leader moves its own start at once (checkpointed,
//! segments below deleted, off the async threads), then the request waits, up to
//! `timeout_ms` (`DelayedDeleteRecords`), until the low watermark (the smallest log start
//! over the leader and its followers on live brokers) reaches the offset: followers move
//! theirs from the next fetch response. Answered with that low watermark; a partition still
//! waiting at the timeout gets REQUEST_TIMED_OUT with the low watermark it had.

use std::collections::HashSet;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::RequestContext;
use super::errors::replica_error;
use super::leader_check::{NO_EPOCH, leading_partition};
use crate::broker::Broker;
use crate::controller::image::is_internal_topic;
use crate::replica::Partition;
use crate::types::NodeId;

/// Kafka's `DeleteRecordsResponse.INVALID_LOW_WATERMARK`.
const INVALID_LOW_WATERMARK: i64 = -1;

/// One partition's way through the request.
struct Deletion {
    topic_index: usize,
    result: DeleteRecordsPartitionResult,
    /// The leader and the offset its log start moved to, while the low watermark is owed.
    pending: Option<(Arc<Partition>, i64)>,
}

pub async fn handle(
    broker: &Broker,
    _context: &RequestContext,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    // SEAM(acl): Kafka first answers TOPIC_AUTHORIZATION_FAILED per partition without DELETE
    // on the topic; add that check here once ACLs exist.
    let deadline = tokio::time::Instant::now()
        + std::time::Duration::from_millis(request.timeout_ms.max(0) as u64);
    let image = broker.image();
    let live: HashSet<NodeId> = (image.brokers.iter())
        .filter(|(_, registration)| !registration.fenced)
        .map(|(&id, _)| id)
        .collect();
    let mut deletions = Vec::new();
    let mut to_delete = Vec::new();
    for (topic_index, topic) in request.topics.iter().enumerate() {
        let name = topic.name.0.as_str();
        for wanted in &topic.partitions {
            let index = wanted.partition_index;
            let found = if is_internal_topic(name) {
                Err(ResponseError::InvalidTopicException)
            } else if image.partition(name, index).is_none() {
                Err(ResponseError::UnknownTopicOrPartition)
            } else {
                leading_partition(broker, &image, name, index, NO_EPOCH)
            };
            if let Ok(partition) = &found {
                to_delete.push((deletions.len(), partition.clone(), wanted.offset));
            }
            deletions.push(Deletion {
                topic_index,
                result: failed(
                    index,
                    found.err().unwrap_or(ResponseError::UnknownServerError),
                ),
                pending: None,
            });
        }
    }
    for (position, outcome) in delete_off_async_threads(to_delete).await {
        match outcome {
            Ok(pending) => deletions[position].pending = Some(pending),
            Err(error) => deletions[position].result.error_code = error.code(),
        }
    }
    let is_live = |replica: NodeId| live.contains(&replica);
    for deletion in &mut deletions {
        if let Some((partition, required)) = deletion.pending.take() {
            deletion.result = wait(&partition, required, &is_live, deadline).await;
        }
    }
    respond(&request, deletions)
}

/// The leaders' own moves, on a blocking thread: they fsync a checkpoint and delete
/// segment files. Returns each position's partition and the offset asked for, or the error.
async fn delete_off_async_threads(
    to_delete: Vec<(usize, Arc<Partition>, i64)>,
) -> Vec<(usize, Result<(Arc<Partition>, i64), ResponseError>)> {
    if to_delete.is_empty() {
        return Vec::new();
    }
    let positions: Vec<usize> = to_delete.iter().map(|(position, _, _)| *position).collect();
    let work = tokio::task::spawn_blocking(move || {
        let delete = |(position, partition, offset): (usize, Arc<Partition>, i64)| {
            let outcome = match partition.delete_records(offset) {
                Ok(moved_to) => Ok((partition, moved_to)),
                Err(error) => {
                    tracing::debug!(tp = %partition.tp, offset, %error, "delete records refused");
                    Err(replica_error(&error))
                }
            };
            (position, outcome)
        };
        to_delete.into_iter().map(delete).collect()
    });
    match work.await {
        Ok(outcomes) => outcomes,
        Err(error) => {
            tracing::error!(%error, "a delete-records pass panicked");
            let failed = |position| (position, Err(ResponseError::UnknownServerError));
            positions.into_iter().map(failed).collect()
        }
    }
}

/// Waits for the low watermark to reach `required` (see the module doc).
async fn wait(
    partition: &Partition,
    required: i64,
    live: &(dyn Fn(NodeId) -> bool + Sync),
    deadline: tokio::time::Instant,
) -> DeleteRecordsPartitionResult {
    let index = partition.tp.partition;
    match partition.wait_low_watermark(required, live, deadline).await {
        Ok(low_watermark) => DeleteRecordsPartitionResult::default()
            .with_partition_index(index)
            .with_low_watermark(low_watermark),
        Err(crate::replica::ReplicaError::ReplicationTimedOut) => {
            let low_watermark = partition
                .low_watermark(live)
                .unwrap_or(INVALID_LOW_WATERMARK);
            DeleteRecordsPartitionResult::default()
                .with_partition_index(index)
                .with_low_watermark(low_watermark)
                .with_error_code(ResponseError::RequestTimedOut.code())
        }
        Err(error) => failed(index, replica_error(&error)),
    }
}

fn failed(partition_index: i32, error: ResponseError) -> DeleteRecordsPartitionResult {
    DeleteRecordsPartitionResult::default()
        .with_partition_index(partition_index)
        .with_low_watermark(INVALID_LOW_WATERMARK)
        .with_error_code(error.code())
}

/// The response in the request's topic order.
fn respond(request: &DeleteRecordsRequest, deletions: Vec<Deletion>) -> DeleteRecordsResponse {
    let mut topics: Vec<DeleteRecordsTopicResult> = (request.topics.iter())
        .map(|topic| DeleteRecordsTopicResult::default().with_name(topic.name.clone()))
        .collect();
    for deletion in deletions {
        topics[deletion.topic_index]
            .partitions
            .push(deletion.result);
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
