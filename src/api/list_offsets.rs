//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3, KIP-734), earliest local
//! (-4) and by timestamp (the first offset whose timestamp is at or after the target).
//!
//! Served by the leader, checked as Kafka does (`leader_check`): `current_leader_epoch`
//! (v4+) gives FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH. The `leader_epoch` answered
//! (v4+) is Kafka's: the current leader epoch for LATEST (`Partition.
//! fetchOffsetForTimestamp`), the first cached epoch for EARLIEST, and the epoch holding
//! the found offset for timestamp lookups (`UnifiedLog.fetchOffsetByTimestamp`, which reads
//! it from the batch; the leader-epoch cache says the same).
//!
//! Only committed records are found (below the high watermark), and a new leader whose
//! high watermark has not reached the start of its epoch answers OFFSET_NOT_AVAILABLE for
//! latest and for lookups that found nothing committed, as Kafka does, so a consumer
//! resetting to "latest" right after a failover never lands below what it already read.
//! Under `isolation_level=1` (read_committed, v2+) latest is the last stable offset, as in
//! Kafka: a consumer resetting to the end never skips past an open transaction, and a
//! lookup by timestamp (or max timestamp) finds nothing at or past the last stable offset.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::RequestContext;
use super::errors::replica_error;

use super::leader_check::leading_partition;
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
                    let index = wanted.partition_index;
                    let current_epoch = wanted.current_leader_epoch;
                    let partition = leading_partition(broker, &image, name, index, current_epoch);
                    let read_committed = request.isolation_level == 1;
                    let result = partition.and_then(|p| {
                        lookup(&p, wanted.timestamp, read_committed)
                            .map_err(|error| lookup_error(&error, context.version))
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

/// OFFSET_NOT_AVAILABLE arrived with v5 (KIP-207); older clients get the retriable
/// LEADER_NOT_AVAILABLE instead, as Kafka maps it.
fn lookup_error(error: &ReplicaError, version: i16) -> ResponseError {
    match error {
        ReplicaError::OffsetNotAvailable { .. } if version < 5 => ResponseError::LeaderNotAvailable,
        other => replica_error(other),
    }
}

/// (offset, timestamp, leader epoch) for one partition; -1s when no record qualifies, and
/// epoch -1 when the cache does not know the offset's epoch.
fn lookup(
    partition: &Partition,
    timestamp: i64,
    read_committed: bool,
) -> Result<(i64, i64, i32), ReplicaError> {
    let (log_start, _, _) = partition.offsets()?;
    let epochs = partition.leader_epochs();
    let found = match timestamp {
        LATEST => {
            let (high_watermark, leader_epoch) = partition.committed_end()?;
            let end = match read_committed {
                true => partition.last_stable_offset()?.min(high_watermark),
                false => high_watermark,
            };
            Some((end, -1, Some(leader_epoch)))
        }
        EARLIEST | EARLIEST_LOCAL => Some((log_start, -1, epochs.epoch_at_log_start(log_start))),
        EARLIEST_PENDING_UPLOAD => None,
        // Both are bounded by the high watermark; when nothing below it qualifies, a
        // leader that does not know its committed end yet cannot say "none" either.
        MAX_TIMESTAMP | 0.. => {
            let committed = if timestamp == MAX_TIMESTAMP {
                partition.max_timestamp_offset()?
            } else {
                partition.offset_for_timestamp(timestamp)?
            };
            // Kafka's `lastFetchableOffset`: under read_committed nothing at or past the
            // last stable offset is found, as a read_committed fetch could not read it.
            let committed = match (committed, read_committed) {
                (Some((offset, _)), true) if offset >= partition.last_stable_offset()? => None,
                (found, _) => found,
            };
            if committed.is_none() {
                partition.committed_end()?;
            }
            committed
                .map(|(offset, timestamp)| (offset, timestamp, epochs.epoch_for_offset(offset)))
        }
        _ => None,
    };
    Ok(match found {
        Some((offset, timestamp, epoch)) => (offset, timestamp, epoch.unwrap_or(-1)),
        None => (-1, -1, -1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_not_available_is_leader_not_available_before_v5() {
        let unknown = ReplicaError::OffsetNotAvailable {
            high_watermark: 0,
            epoch_start: 3,
        };
        assert_eq!(lookup_error(&unknown, 4), ResponseError::LeaderNotAvailable);
        assert_eq!(lookup_error(&unknown, 5), ResponseError::OffsetNotAvailable);
        assert_eq!(
            lookup_error(&ReplicaError::NotLeader, 1),
            ResponseError::NotLeaderOrFollower
        );
    }
}
