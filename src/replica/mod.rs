//! The partitions this broker hosts and its role for each.
//!
//! [`ReplicaManager`] keeps one [`Partition`] per hosted topic-partition, reconciled with
//! the metadata image. A partition owns its log, its idempotent-producer table and its
//! high watermark; [`waits`] lets fetches sleep until a partition changes; [`LogCleaner`]
//! runs compaction passes on its own thread. Today every
//! partition has one replica, so the leader's log end offset is the high watermark; the
//! cluster issue adds follower fetchers and ISR tracking behind the same interface.

pub mod committed_replay;
pub mod fetch_session;
pub mod fetcher;
pub mod hw_checkpoint;
pub mod isr_changes;
pub mod leader_state;
pub mod log_cleaner;
pub mod partition;
pub mod peer_connection;
pub mod producer_expiration;
pub mod replica_manager;
pub mod replication_quota;
pub mod waits;

use thiserror::Error;

pub use log_cleaner::{CleanerSettings, LogCleaner};
pub use partition::{
    FollowerBroker, IsrAnswer, IsrProposal, Leadership, LeadershipChange, Partition, PartitionRead,
    PartitionVersion, ProduceOutcome, Publish, ReadBound, ReadRecords, RequiredAcks,
};
pub use replica_manager::ReplicaManager;

use crate::log::{BatchError, LogError};
use crate::txn::producer_state::SequenceError;

#[derive(Debug, Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    #[error("this broker does not lead the partition")]
    NotLeader,
    #[error("the partition is being deleted")]
    Deleted,
    /// DeleteRecords on a topic whose `cleanup.policy` does not include `delete`.
    #[error("records of a topic without cleanup.policy=delete cannot be deleted")]
    DeletionPolicy,
    #[error("leader epoch {requested} is older than the current {current}")]
    FencedLeaderEpoch { requested: i32, current: i32 },
    #[error("leader epoch {requested} is newer than the current {current}")]
    UnknownLeaderEpoch { requested: i32, current: i32 },
    /// acks=all before the append: fewer in-sync replicas than `min.insync.replicas`.
    #[error("the ISR has {isr} replicas, fewer than min.insync.replicas {min}")]
    NotEnoughReplicas { isr: usize, min: usize },
    /// acks=all after the append: the record is in the log but the ISR shrank below
    /// `min.insync.replicas` before it was committed.
    #[error("appended, but the ISR shrank to {isr}, below min.insync.replicas {min}")]
    NotEnoughReplicasAfterAppend { isr: usize, min: usize },
    /// acks=all: the in-sync replicas did not all have the records within the request's
    /// timeout.
    #[error("the records were not replicated to every in-sync replica in time")]
    ReplicationTimedOut,
    /// A new leader whose high watermark has not yet reached the start of its epoch: it
    /// cannot tell where the committed records end (ListOffsets).
    #[error("the high watermark {high_watermark} is below the leader epoch's start {epoch_start}")]
    OffsetNotAvailable {
        high_watermark: i64,
        epoch_start: i64,
    },
    #[error("partition metadata I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Partitions assigned here whose logs could not be opened (disk full, descriptor
    /// limit, unreadable directory). Kafka answers KAFKA_STORAGE_ERROR.
    #[error(
        "{} partitions of topic {topic} could not be opened on this broker ({}): {cause}",
        .partitions.len(),
        partition_ranges(.partitions)
    )]
    Offline {
        topic: String,
        partitions: Vec<i32>,
        cause: String,
    },
    #[error("{dir} belongs to topic id {recorded}, not {wanted}")]
    InconsistentTopicId {
        dir: String,
        recorded: String,
        wanted: String,
    },
}

/// Ascending partition indexes as runs, "0-2, 5, 7-9": thousands of failed partitions
/// still make a short error message.
fn partition_ranges(partitions: &[i32]) -> String {
    let mut runs: Vec<(i32, i32)> = Vec::new();
    for &partition in partitions {
        match runs.last_mut() {
            Some((_, last)) if partition == *last + 1 => *last = partition,
            _ => runs.push((partition, partition)),
        }
    }
    let text: Vec<String> = runs
        .iter()
        .map(|&(first, last)| match last - first {
            0 => first.to_string(),
            1 => format!("{first}, {last}"),
            _ => format!("{first}-{last}"),
        })
        .collect();
    text.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_ranges_join_consecutive_indexes() {
        assert_eq!(partition_ranges(&[]), "");
        assert_eq!(partition_ranges(&[4]), "4");
        assert_eq!(partition_ranges(&[0, 1]), "0, 1");
        assert_eq!(partition_ranges(&[0, 1, 2, 5, 7, 8, 9]), "0-2, 5, 7-9");
        let many: Vec<i32> = (38..4000).collect();
        assert_eq!(partition_ranges(&many), "38-3999");
    }

    #[test]
    fn an_offline_error_names_count_partitions_and_cause() {
        let error = ReplicaError::Offline {
            topic: "orders".into(),
            partitions: vec![0, 1, 2, 9],
            cause: "No space left on device (os error 28)".into(),
        };
        assert_eq!(
            error.to_string(),
            "4 partitions of topic orders could not be opened on this broker (0-2, 9): \
             No space left on device (os error 28)"
        );
    }
}
