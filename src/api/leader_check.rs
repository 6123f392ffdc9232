//! The leader-only lookup that OffsetForLeaderEpoch and ListOffsets share, in Kafka's order
//! (`ReplicaManager.getPartitionOrException`, then `Partition.getLocalLog`):
//!
//! 1. hosted here? else NOT_LEADER_OR_FOLLOWER if the image has the partition (another
//!    broker hosts it), UNKNOWN_TOPIC_OR_PARTITION if not, KAFKA_STORAGE_ERROR if its log
//!    would not open;
//! 2. the client's `current_leader_epoch` against the partition's own epoch (-1 skips it):
//!    older is FENCED_LEADER_EPOCH, newer is UNKNOWN_LEADER_EPOCH;
//! 3. does this broker lead it? else NOT_LEADER_OR_FOLLOWER.
//!
//! The epoch is checked before leadership, as Kafka does: a follower asked with a stale
//! epoch answers FENCED_LEADER_EPOCH, so the client refreshes its metadata rather than
//! retrying the same broker.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;

use crate::broker::Broker;
use crate::controller::MetadataImage;
use crate::replica::Partition;

/// Kafka's "no epoch given" (`RecordBatch.NO_PARTITION_LEADER_EPOCH`).
pub const NO_EPOCH: i32 = -1;

/// The partition this broker leads, checked as the module doc says.
pub fn leading_partition(
    broker: &Broker,
    image: &MetadataImage,
    topic: &str,
    index: i32,
    current_leader_epoch: i32,
) -> Result<Arc<Partition>, ResponseError> {
    let partition = match broker.replicas.get(topic, index) {
        Some(partition) => partition,
        None if broker.replicas.open_failure(topic, index).is_some() => {
            return Err(ResponseError::KafkaStorageError);
        }
        None if image.partition(topic, index).is_some() => {
            return Err(ResponseError::NotLeaderOrFollower);
        }
        None => return Err(ResponseError::UnknownTopicOrPartition),
    };
    let (epoch, leads) = partition.leadership();
    check_leadership(current_leader_epoch, epoch, leads)?;
    Ok(partition)
}

/// Steps 2 and 3 of the module doc, on one snapshot of (epoch, leads).
fn check_leadership(requested: i32, epoch: i32, leads: bool) -> Result<(), ResponseError> {
    if requested != NO_EPOCH && requested < epoch {
        return Err(ResponseError::FencedLeaderEpoch);
    }
    if requested != NO_EPOCH && requested > epoch {
        return Err(ResponseError::UnknownLeaderEpoch);
    }
    if !leads {
        return Err(ResponseError::NotLeaderOrFollower);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_is_checked_before_leadership() {
        assert_eq!(check_leadership(NO_EPOCH, 4, true), Ok(()));
        assert_eq!(check_leadership(4, 4, true), Ok(()));
        assert_eq!(
            check_leadership(3, 4, true),
            Err(ResponseError::FencedLeaderEpoch)
        );
        assert_eq!(
            check_leadership(5, 4, true),
            Err(ResponseError::UnknownLeaderEpoch)
        );
        // A follower: a stale epoch is fenced first, the right one is told to go elsewhere.
        assert_eq!(
            check_leadership(3, 4, false),
            Err(ResponseError::FencedLeaderEpoch)
        );
        assert_eq!(
            check_leadership(4, 4, false),
            Err(ResponseError::NotLeaderOrFollower)
        );
        assert_eq!(
            check_leadership(NO_EPOCH, 4, false),
            Err(ResponseError::NotLeaderOrFollower)
        );
    }
}
