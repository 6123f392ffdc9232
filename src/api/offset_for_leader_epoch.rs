//! OffsetForLeaderEpoch (KIP-101, KIP-279, KIP-320): for each partition, the end offset of
//! the largest leader epoch at or below the one asked for. Followers call it after a
//! leader change to find where their log diverged; librdkafka and the Java consumer call it
//! to detect truncation after a failover.
//!
//! Served by the leader only (`leader_check`), whatever the `replica_id` (v3+: -1 a
//! consumer, -2 a debug tool, >= 0 a follower): Kafka's `ReplicaManager.
//! lastOffsetForLeaderEpoch` passes `fetchOnlyFromLeader = true` for all of them. The
//! answer is `LeaderEpochCache::end_offset_for` (Kafka's `LeaderEpochFileCache.
//! endOffsetFor`); when it has none, the partition answers no error with epoch and end
//! offset -1 (`UnifiedLog.endOffsetForEpoch` returning `None`).

use kafka_protocol::messages::offset_for_leader_epoch_request::OffsetForLeaderPartition;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::RequestContext;
use super::errors::replica_error;
use super::leader_check::leading_partition;
use crate::broker::Broker;
use crate::controller::MetadataImage;

pub async fn handle(
    broker: &Broker,
    _context: &RequestContext,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let image = broker.image();
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.topic.0.as_str();
            let partitions = (topic.partitions.iter())
                .map(|wanted| epoch_end_offset(broker, &image, name, wanted))
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

fn epoch_end_offset(
    broker: &Broker,
    image: &MetadataImage,
    topic: &str,
    wanted: &OffsetForLeaderPartition,
) -> EpochEndOffset {
    // The defaults are Kafka's UNDEFINED_EPOCH and UNDEFINED_EPOCH_OFFSET (-1, -1).
    let response = EpochEndOffset::default().with_partition(wanted.partition);
    let found = leading_partition(
        broker,
        image,
        topic,
        wanted.partition,
        wanted.current_leader_epoch,
    )
    .and_then(|partition| {
        (partition.end_offset_for_epoch(wanted.leader_epoch)).map_err(|error| replica_error(&error))
    });
    match found {
        Ok((epoch, end_offset)) if end_offset >= 0 => response
            .with_leader_epoch(epoch)
            .with_end_offset(end_offset),
        Ok(_) => response,
        Err(error) => response.with_error_code(error.code()),
    }
}
