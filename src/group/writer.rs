//! Durable writes to an offsets partition: one batch appended under the leader epoch the
//! partition was loaded at, then acknowledged only once the high watermark passes it
//! (every ISR member has it). Offset commits and group metadata both go through here, so
//! nothing the coordinator answers can be lost with the leader that wrote it.
//!
//! Errors are mapped the way Kafka 4's group coordinator maps append errors
//! (`CoordinatorOperationExceptionHelper.handleOperationException`): NOT_ENOUGH_REPLICAS,
//! REQUEST_TIMED_OUT and UNKNOWN_TOPIC_OR_PARTITION become COORDINATOR_NOT_AVAILABLE
//! ([`CoordinatorError::NotCommitted`]); NOT_LEADER_OR_FOLLOWER and KAFKA_STORAGE_ERROR
//! become NOT_COORDINATOR; MESSAGE_TOO_LARGE (a batch beyond the partition's
//! `max.message.bytes`) is [`CoordinatorError::TooLarge`], never retried; the rest keep
//! their own meaning.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};

use super::CoordinatorError;
use crate::log::batch::plain_record;
use crate::log::{BatchError, LogError};
use crate::replica::{Partition, ReplicaError};
use crate::txn::producer_state::{SequenceError, Verification};

/// Where and how long a write may wait: the partition's log, the leader epoch its state
/// was loaded at, and the wait for replication (the request's timeout, or
/// `offsets.commit.timeout.ms`).
#[derive(Clone, Copy)]
pub struct WriteTarget<'a> {
    pub log: &'a Partition,
    pub leader_epoch: i32,
    pub timeout: Duration,
}

/// The producer a transactional write is made for (TxnOffsetCommit): its records go in a
/// transactional batch under this producer id and epoch, so the partition's producer state
/// sees the transaction open there and the transaction's marker closes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnProducer {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// How the write was verified with the transaction coordinator (KIP-890): checked by
    /// the partition under the append's lock, as a client's produce is.
    pub verification: Verification,
}

/// Appends key/value records (a `None` value is a tombstone) as one uncompressed batch and
/// waits until they are committed; returns the batch's base offset.
///
/// The epoch is checked before the append: a partition this broker no longer leads (or
/// leads at an epoch it has not loaded) must not take coordinator records at all.
pub async fn write_committed(
    target: WriteTarget<'_>,
    entries: Vec<(Bytes, Option<Bytes>)>,
    now_ms: i64,
) -> Result<i64, CoordinatorError> {
    let deadline = tokio::time::Instant::now() + target.timeout;
    let (base_offset, end_offset) = append(target, entries, now_ms, None)?;
    wait_committed(target, end_offset, deadline).await?;
    Ok(base_offset)
}

/// Waits until the records before `end_offset` are committed (the high watermark passed
/// them under the epoch the write was made at).
pub async fn wait_committed(
    target: WriteTarget<'_>,
    end_offset: i64,
    deadline: tokio::time::Instant,
) -> Result<(), CoordinatorError> {
    target
        .log
        .wait_committed(end_offset, target.leader_epoch, deadline)
        .await
        .map_err(|error| write_error(&error))
}

/// The append half, on the caller's thread as every produce append is: (base offset, the
/// offset after the batch). Record `i` of `entries` lands at base offset + `i`.
pub fn append(
    target: WriteTarget<'_>,
    entries: Vec<(Bytes, Option<Bytes>)>,
    now_ms: i64,
    producer: Option<TxnProducer>,
) -> Result<(i64, i64), CoordinatorError> {
    let (epoch, leads) = target.log.leadership();
    if !leads || epoch != target.leader_epoch {
        return Err(CoordinatorError::NotCoordinator);
    }
    let count = entries.len() as i64;
    let batch = encode(entries, now_ms, producer)?;
    // A transactional batch is the coordinator's own write for the producer (Kafka's
    // AppendOrigin.COORDINATOR): it carries no sequence, so the partition checks only its
    // epoch (stale -> INVALID_PRODUCER_EPOCH) and opens the producer's transaction.
    let appended = match producer {
        Some(producer) => target
            .log
            .append_coordinator(&batch, now_ms, producer.verification),
        None => target.log.append(&batch, now_ms),
    };
    let outcome = appended.map_err(|error| write_error(&error))?;
    Ok((outcome.base_offset, outcome.base_offset + count))
}

/// One uncompressed v2 batch of the entries; transactional (producer id and epoch set,
/// no sequence) when written for a transaction.
pub(super) fn encode(
    entries: Vec<(Bytes, Option<Bytes>)>,
    now_ms: i64,
    producer: Option<TxnProducer>,
) -> Result<Bytes, CoordinatorError> {
    let records: Vec<Record> = entries
        .into_iter()
        .enumerate()
        .map(|(index, (key, value))| {
            let record = plain_record(index as i64, now_ms, Some(key), value);
            match producer {
                None => record,
                Some(producer) => Record {
                    transactional: true,
                    producer_id: producer.producer_id,
                    producer_epoch: producer.producer_epoch,
                    ..record
                },
            }
        })
        .collect();
    let mut buffer = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buffer, &records, &options)
        .map_err(|error| CoordinatorError::Storage(format!("encode offsets batch: {error}")))?;
    Ok(buffer.freeze())
}

/// Kafka 4's mapping of a failed coordinator append or replication wait.
pub fn write_error(error: &ReplicaError) -> CoordinatorError {
    match error {
        ReplicaError::NotLeader
        | ReplicaError::FencedLeaderEpoch { .. }
        | ReplicaError::UnknownLeaderEpoch { .. }
        | ReplicaError::Io(_)
        | ReplicaError::Offline { .. } => CoordinatorError::NotCoordinator,
        ReplicaError::Log(
            crate::log::LogError::Io(_)
            | crate::log::LogError::Corrupt(_)
            | crate::log::LogError::TxnIndexLacking(_),
        ) => CoordinatorError::NotCoordinator,
        // Kafka 4's coordinator maps all of these to COORDINATOR_NOT_AVAILABLE, which
        // consumers retry (NOT_ENOUGH_REPLICAS_AFTER_APPEND would fail a commitSync).
        ReplicaError::ReplicationTimedOut
        | ReplicaError::NotEnoughReplicas { .. }
        | ReplicaError::NotEnoughReplicasAfterAppend { .. }
        | ReplicaError::Deleted => CoordinatorError::NotCommitted(error.to_string()),
        ReplicaError::Batch(
            BatchError::TooLarge { .. } | BatchError::DecompressedTooLarge { .. },
        )
        | ReplicaError::Log(LogError::Batch(
            BatchError::TooLarge { .. } | BatchError::DecompressedTooLarge { .. },
        )) => CoordinatorError::TooLarge(error.to_string()),
        // A transactional write by a producer whose epoch the partition has seen bumped:
        // a zombie, refused as Kafka's coordinator append refuses it. (The epoch is the
        // only producer-state check a coordinator-origin append meets.)
        ReplicaError::Sequence(SequenceError::StaleEpoch { .. }) => {
            CoordinatorError::InvalidProducerEpoch
        }
        // The offsets partition was not verified as part of the producer's transaction,
        // or that transaction ended meanwhile (KIP-890): Kafka's INVALID_TXN_STATE.
        ReplicaError::Sequence(SequenceError::Unverified { .. }) => {
            CoordinatorError::InvalidTxnState
        }
        other => CoordinatorError::Storage(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogConfig;
    use crate::types::TopicPartition;

    fn open(dir: &std::path::Path) -> Partition {
        let tp = TopicPartition::new("__consumer_offsets", 0);
        let id = uuid::Uuid::from_u128(7);
        let path = dir.join("__consumer_offsets-0");
        let last_shutdown = crate::log::LastShutdown::Unclean;
        Partition::open(tp, id, path, LogConfig::default(), 0, 0, last_shutdown).unwrap()
    }

    fn entry() -> Vec<(Bytes, Option<Bytes>)> {
        vec![(Bytes::from_static(b"k"), Some(Bytes::from_static(b"v")))]
    }

    #[tokio::test]
    async fn a_write_under_an_epoch_not_led_is_refused_before_the_append() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        log.become_leader(3).unwrap();
        let timeout = Duration::from_secs(5);
        let stale = WriteTarget {
            log: &log,
            leader_epoch: 2,
            timeout,
        };
        let refused = write_committed(stale, entry(), 10).await;
        assert_eq!(refused, Err(CoordinatorError::NotCoordinator));
        assert_eq!(log.offsets().unwrap().2, 0, "nothing was appended");
        let current = WriteTarget {
            leader_epoch: 3,
            ..stale
        };
        assert_eq!(write_committed(current, entry(), 10).await, Ok(0));
        log.become_follower(4).unwrap();
        let demoted = WriteTarget {
            leader_epoch: 4,
            ..stale
        };
        let refused = write_committed(demoted, entry(), 10).await;
        assert_eq!(refused, Err(CoordinatorError::NotCoordinator));
        assert_eq!(log.offsets().unwrap().2, 1);
    }

    #[test]
    fn append_and_wait_errors_map_as_kafka_4_maps_them() {
        assert_eq!(
            write_error(&ReplicaError::NotLeader),
            CoordinatorError::NotCoordinator
        );
        assert!(matches!(
            write_error(&ReplicaError::ReplicationTimedOut),
            CoordinatorError::NotCommitted(_)
        ));
        assert!(matches!(
            write_error(&ReplicaError::NotEnoughReplicas { isr: 1, min: 2 }),
            CoordinatorError::NotCommitted(_)
        ));
        assert!(matches!(
            write_error(&ReplicaError::NotEnoughReplicasAfterAppend { isr: 1, min: 2 }),
            CoordinatorError::NotCommitted(_)
        ));
    }
}
