//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3, KIP-734), earliest local
//! (-4) and by timestamp (the first offset whose timestamp is at or after the target).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::errors::replica_error;
use super::{RequestContext, leader_partition};
use crate::broker::Broker;
use crate::replica::{Partition, ReplicaError};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const EARLIEST_PENDING_UPLOAD: i64 = -5;

pub async fn handle(
    broker: &Broker,
    context: &RequestContext,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let image = broker.image();
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.name.0.as_str();
            let partitions = topic
                .partitions
                .iter()
                .map(|wanted| {
                    let response = ListOffsetsPartitionResponse::default()
                        .with_partition_index(wanted.partition_index);
                    let unknown = ResponseError::UnknownTopicOrPartition;
                    let partition =
                        leader_partition(broker, &image, name, wanted.partition_index, unknown);
                    let result = partition.and_then(|p| {
                        lookup(&p, wanted.current_leader_epoch, wanted.timestamp)
                            .map_err(|error| replica_error(&error))
                    });
                    match result {
                        Ok((offset, timestamp, epoch)) => response
                            .with_offset(offset)
                            .with_timestamp(timestamp)
                            // Leader epochs exist in the response from v4 on.
                            .with_leader_epoch(if context.version >= 4 { epoch } else { -1 }),
                        Err(error) => response
                            .with_error_code(error.code())
                            .with_offset(-1)
                            .with_timestamp(-1)
                            .with_leader_epoch(-1),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// (offset, timestamp, leader epoch) for one partition; -1s when no record qualifies.
fn lookup(
    partition: &Partition,
    current_leader_epoch: i32,
    timestamp: i64,
) -> Result<(i64, i64, i32), ReplicaError> {
    partition.check_leader_epoch(current_leader_epoch)?;
    let epoch = partition.leader_epoch();
    let (log_start, high_watermark, _) = partition.offsets()?;
    let found = match timestamp {
        LATEST => Some((high_watermark, -1)),
        EARLIEST | EARLIEST_LOCAL => Some((log_start, -1)),
        EARLIEST_PENDING_UPLOAD => None,
        MAX_TIMESTAMP => partition.max_timestamp_offset()?,
        target if target >= 0 => partition.offset_for_timestamp(target)?,
        _ => None,
    };
    Ok(match found {
        Some((offset, timestamp)) => (offset, timestamp, epoch),
        None => (-1, -1, -1),
    })
}
