//! Transactional offset commits (TxnOffsetCommit) and their completion by the
//! transaction's marker, as Kafka's `OffsetMetadataManager` keeps them.
//!
//! A transactional producer's offsets are written to the group's offsets partition as a
//! transactional batch under its producer id and epoch (the partition's producer state
//! checks the epoch, and tracks the transaction as open there), waited on until committed,
//! and kept *pending* for that producer id: OffsetFetch does not show them. When the
//! transaction's marker on that partition commits, [`GroupCoordinator::complete_transaction`]
//! makes them the committed offsets (commit) or drops them (abort). The loader replays
//! the same rules from the log (`loader`), so a failover neither shows an aborted offset
//! nor loses a committed one.
//!
//! Pending offsets enter memory at the append, under the offsets lock, not after the
//! replication wait: the marker that ends the transaction comes later in the log, and
//! `complete_transaction` (which takes the same lock) then always finds them. Should the
//! wait fail, they stay: the records are in the log and a reload would replay them just
//! so; if the leadership moved, the partition is unloaded and reloaded anyway.

use super::coordinator::{
    CoordinatorError, GroupCoordinator, OFFSET_METADATA_BYTES_MAX, OffsetChange, OffsetCommit,
    lock, offset_entries,
};
use super::offsets::partition_for;
use super::writer::{self, TxnProducer, WriteTarget};
use crate::replica::Partition;

impl GroupCoordinator {
    /// Validates and writes a transactional commit of `producer`; per-entry results in
    /// request order. Answers once the records are committed (or the write failed); the
    /// offsets stay invisible until the transaction's marker commits them.
    pub async fn txn_commit_offsets(
        &self,
        log: &Partition,
        group: &str,
        producer: TxnProducer,
        commits: Vec<OffsetCommit>,
        now_ms: i64,
    ) -> Vec<Result<(), CoordinatorError>> {
        let verdicts: Vec<Result<(), CoordinatorError>> = commits
            .iter()
            .map(|commit| {
                if commit.value.metadata.len() > OFFSET_METADATA_BYTES_MAX {
                    Err(CoordinatorError::OffsetMetadataTooLarge)
                } else {
                    Ok(())
                }
            })
            .collect();
        let changes: Vec<OffsetChange> = commits
            .iter()
            .zip(&verdicts)
            .filter(|(_, verdict)| verdict.is_ok())
            .map(|(c, _)| (c.topic.clone(), c.partition, Some(c.value.clone())))
            .collect();
        if changes.is_empty() {
            return verdicts;
        }
        match self
            .write_pending(log, group, producer, changes, now_ms)
            .await
        {
            Ok(()) => verdicts,
            // Entries refused on their own keep their own error, as in Kafka.
            Err(error) => verdicts
                .into_iter()
                .map(|verdict| verdict.and(Err(error.clone())))
                .collect(),
        }
    }

    /// Appends the transactional batch and records its offsets as pending (one step under
    /// the offsets lock), then waits until the batch is committed.
    async fn write_pending(
        &self,
        log: &Partition,
        group: &str,
        producer: TxnProducer,
        changes: Vec<OffsetChange>,
        now_ms: i64,
    ) -> Result<(), CoordinatorError> {
        let target = self.target(log, group)?;
        let deadline = tokio::time::Instant::now() + target.timeout;
        let end_offset = self.append_pending(target, group, producer, changes, now_ms)?;
        writer::wait_committed(target, end_offset, deadline).await
    }

    /// The append half of [`Self::write_pending`]: returns the offset after the batch.
    fn append_pending(
        &self,
        target: WriteTarget<'_>,
        group: &str,
        producer: TxnProducer,
        changes: Vec<OffsetChange>,
        now_ms: i64,
    ) -> Result<i64, CoordinatorError> {
        let partition = self.partition_for(group);
        // Held across the append (a buffered write, as every produce append on this
        // thread): a marker's completion cannot slip between the append and the pending
        // offsets entering memory.
        let mut offsets = lock(&self.book.offsets);
        if !offsets.is_installed(partition)
            || self.registry.loaded_epoch(partition) != Some(target.leader_epoch)
        {
            return Err(CoordinatorError::NotCoordinator);
        }
        let entries = offset_entries(group, &changes);
        let (base_offset, end_offset) = writer::append(target, entries, now_ms, Some(producer))?;
        for (index, (topic, topic_partition, value)) in changes.into_iter().enumerate() {
            let Some(value) = value else { continue };
            let at = base_offset + index as i64;
            offsets.add_pending(
                producer.producer_id,
                group,
                &topic,
                topic_partition,
                value,
                at,
            );
        }
        Ok(end_offset)
    }

    /// The transaction of `producer_id` ended on `offsets_partition`: its marker there is
    /// committed. Its pending offsets of that partition's groups become the committed
    /// ones (`committed`) or are dropped. Called by the WriteTxnMarkers handler after the
    /// marker's append is committed, never under the partition's own lock.
    ///
    /// A partition not installed here (not led, or still loading) is left alone: its
    /// load replays the marker from the log (see `loader`).
    pub fn complete_transaction(
        &self,
        offsets_partition: i32,
        producer_id: i64,
        committed: bool,
        marker_offset: i64,
    ) {
        let partitions = self.partition_count();
        let mut offsets = lock(&self.book.offsets);
        if !offsets.is_installed(offsets_partition) {
            return;
        }
        let mine = |group: &str| partition_for(group, partitions) == offsets_partition;
        let ended = offsets.complete(producer_id, committed, mine, marker_offset);
        tracing::debug!(
            offsets_partition,
            producer_id,
            committed,
            offsets = ended,
            "transaction completed on the offsets partition"
        );
    }

    /// Producer ids with an open transaction holding offsets of `offsets_partition`'s
    /// groups (tests, and whoever must know which markers the partition waits for).
    pub fn open_transactions(&self, offsets_partition: i32) -> Vec<i64> {
        let partitions = self.partition_count();
        let offsets = lock(&self.book.offsets);
        offsets.open_producers(|group| partition_for(group, partitions) == offsets_partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::records::{self, OffsetValue, RecordKey};
    use crate::group::{CoordinatorConfig, GroupConfig};
    use crate::log::LogConfig;
    use crate::types::TopicPartition;
    use bytes::{BufMut, Bytes, BytesMut};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    const PRODUCER: TxnProducer = TxnProducer {
        producer_id: 4000,
        producer_epoch: 2,
        verification: crate::txn::producer_state::Verification::Off,
    };

    fn config() -> CoordinatorConfig {
        CoordinatorConfig {
            offsets_partitions: 1,
            offsets_retention_ms: 1000,
            commit_timeout_ms: 5_000,
            consumer: Default::default(),
        }
    }

    fn value(offset: i64) -> OffsetValue {
        OffsetValue {
            offset,
            leader_epoch: 1,
            metadata: "m".into(),
            commit_timestamp_ms: 10,
        }
    }

    fn commit(partition: i32, offset: i64) -> OffsetCommit {
        OffsetCommit {
            topic: "t".into(),
            partition,
            value: value(offset),
        }
    }

    fn open(dir: &std::path::Path) -> Partition {
        let tp = TopicPartition::new("__consumer_offsets", 0);
        let id = uuid::Uuid::from_u128(7);
        let path = dir.join("__consumer_offsets-0");
        let last_shutdown = crate::log::LastShutdown::Unclean;
        let log = Partition::open(tp, id, path, LogConfig::default(), 0, 0, last_shutdown);
        let log = log.unwrap();
        log.become_leader(0).unwrap();
        log
    }

    fn fetched(coordinator: &GroupCoordinator, partition: i32, stable: bool) -> Option<i64> {
        let wanted = [("t".to_string(), partition)];
        let found = coordinator.fetch_offsets_stable("g", Some(&wanted), stable);
        let answer = found.unwrap().remove(0).1;
        match answer {
            Ok(value) => value.map(|v| v.offset),
            Err(CoordinatorError::UnstableOffsetCommit) => Some(-88),
            Err(other) => panic!("unexpected {other}"),
        }
    }

    /// One record of a transactional batch or a marker, for batches built by hand the way
    /// a transactional producer's coordinator and LOG's marker write them.
    fn txn_record(index: i64, key: Bytes, value: Option<Bytes>, control: bool) -> Record {
        Record {
            transactional: true,
            control,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: PRODUCER.producer_id,
            producer_epoch: PRODUCER.producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: index,
            sequence: index as i32 - 1,
            timestamp: 10,
            key: Some(key),
            value,
            headers: Default::default(),
        }
    }

    fn encode(records: &[Record], base_offset: i64) -> BytesMut {
        let mut buffer = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut buffer, records, &options).unwrap();
        buffer[..8].copy_from_slice(&base_offset.to_be_bytes());
        buffer
    }

    /// A transactional batch of one offset commit for "g" t-`partition`.
    fn offsets_batch(partition: i32, offset: i64, base_offset: i64) -> BytesMut {
        let key = records::encode_key(&RecordKey::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition,
        });
        let record = txn_record(0, key, Some(records::encode_offset(&value(offset))), false);
        encode(&[record], base_offset)
    }

    /// A commit (or abort) marker of PRODUCER, in Kafka's control record format.
    fn marker(committed: bool, base_offset: i64) -> BytesMut {
        let mut key = BytesMut::new();
        key.put_i16(0);
        key.put_i16(i16::from(committed));
        let mut value = BytesMut::new();
        value.put_i16(0);
        value.put_i32(5);
        let record = txn_record(0, key.freeze(), Some(value.freeze()), true);
        encode(&[record], base_offset)
    }

    /// Writes `batches` after the end of `dir`'s log (closed), as they would sit in it.
    fn append_raw(dir: &std::path::Path, batches: &[BytesMut]) {
        let segment = dir.join("__consumer_offsets-0/00000000000000000000.log");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(segment)
            .unwrap();
        for batch in batches {
            std::io::Write::write_all(&mut file, batch).unwrap();
        }
    }

    #[tokio::test]
    async fn the_transactional_batch_carries_the_producer_and_no_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let coordinator = GroupCoordinator::new(config(), GroupConfig::default());
        coordinator.load_now(&log).unwrap();
        let target = coordinator.target(&log, "g").unwrap();
        let entries = vec![(Bytes::from_static(b"k"), Some(Bytes::from_static(b"v")))];
        match writer::append(target, entries, 10, Some(PRODUCER)) {
            // Until LOG's transactional append is merged, the partition refuses the batch
            // before writing it; the batch's shape is checked below either way.
            Err(CoordinatorError::Storage(_)) => {
                assert_eq!(log.offsets().unwrap().2, 0, "nothing was appended")
            }
            Ok((base, end)) => assert_eq!((base, end), (0, 1)),
            Err(other) => panic!("unexpected {other}"),
        }
        let changes = vec![("t".to_string(), 0, Some(value(5)))];
        let batch = writer::encode(offset_entries("g", &changes), 10, Some(PRODUCER)).unwrap();
        let header = crate::log::BatchHeader::parse(&batch).unwrap();
        assert!(header.is_transactional() && !header.is_control());
        assert_eq!(header.producer_id, PRODUCER.producer_id);
        assert_eq!(header.producer_epoch, PRODUCER.producer_epoch);
        assert_eq!(header.base_sequence, crate::log::batch::NO_SEQUENCE);
        assert_eq!(header.record_count, 1);
    }

    #[tokio::test]
    async fn offsets_of_a_transaction_show_only_after_its_commit_marker() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let coordinator = GroupCoordinator::new(config(), GroupConfig::default());
        coordinator.load_now(&log).unwrap();
        let plain = coordinator
            .commit_offsets(&log, "g", vec![commit(0, 3)], 10)
            .await;
        assert_eq!(plain, vec![Ok(())]);
        // The partition's transactional append is bypassed here (LOG's branch makes it
        // accept these batches): the pending offsets enter memory as after an append.
        let target = coordinator.target(&log, "g").unwrap();
        let changes = vec![
            ("t".to_string(), 0, Some(value(7))),
            ("t".to_string(), 1, Some(value(8))),
        ];
        {
            let mut offsets = lock(&coordinator.book.offsets);
            assert!(offsets.is_installed(0));
            assert_eq!(
                coordinator.registry.loaded_epoch(0),
                Some(target.leader_epoch)
            );
            for (index, (topic, partition, value)) in changes.into_iter().enumerate() {
                let value = value.unwrap();
                offsets.add_pending(
                    PRODUCER.producer_id,
                    "g",
                    &topic,
                    partition,
                    value,
                    1 + index as i64,
                );
            }
        }
        assert_eq!(
            fetched(&coordinator, 0, false),
            Some(3),
            "the last committed one"
        );
        assert_eq!(fetched(&coordinator, 1, false), None);
        assert_eq!(fetched(&coordinator, 0, true), Some(-88), "unstable");
        assert_eq!(fetched(&coordinator, 1, true), Some(-88));
        assert_eq!(coordinator.open_transactions(0), vec![PRODUCER.producer_id]);
        // Another partition's marker is not this transaction's end here.
        coordinator.complete_transaction(1, PRODUCER.producer_id, true, i64::MAX);
        assert_eq!(fetched(&coordinator, 0, false), Some(3));
        coordinator.complete_transaction(0, PRODUCER.producer_id, true, i64::MAX);
        assert_eq!(fetched(&coordinator, 0, true), Some(7));
        assert_eq!(fetched(&coordinator, 1, true), Some(8));
        assert!(coordinator.open_transactions(0).is_empty());
    }

    #[tokio::test]
    async fn an_unloaded_partition_ignores_markers_and_refuses_transactional_commits() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let coordinator = GroupCoordinator::new(config(), GroupConfig::default());
        coordinator.complete_transaction(0, PRODUCER.producer_id, true, i64::MAX);
        let refused = coordinator
            .txn_commit_offsets(&log, "g", PRODUCER, vec![commit(0, 1)], 10)
            .await;
        assert_eq!(refused, vec![Err(CoordinatorError::NotCoordinator)]);
        coordinator.load_now(&log).unwrap();
        let too_large = OffsetCommit {
            value: OffsetValue {
                metadata: "x".repeat(OFFSET_METADATA_BYTES_MAX + 1),
                ..value(1)
            },
            ..commit(0, 1)
        };
        let results = coordinator
            .txn_commit_offsets(&log, "g", PRODUCER, vec![too_large], 10)
            .await;
        assert_eq!(results, vec![Err(CoordinatorError::OffsetMetadataTooLarge)]);
        assert_eq!(log.offsets().unwrap().2, 0, "nothing was appended");
    }

    /// The whole path through the partition: a coordinator-origin transactional append,
    /// a fenced epoch refused, the marker's completion.
    #[tokio::test]
    async fn a_transactional_commit_through_the_partition() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let coordinator = GroupCoordinator::new(config(), GroupConfig::default());
        coordinator.load_now(&log).unwrap();
        let results = coordinator
            .txn_commit_offsets(&log, "g", PRODUCER, vec![commit(0, 9)], 10)
            .await;
        assert_eq!(results, vec![Ok(())]);
        assert_eq!(fetched(&coordinator, 0, false), None);
        assert_eq!(fetched(&coordinator, 0, true), Some(-88));
        let stale = TxnProducer {
            producer_epoch: 1,
            ..PRODUCER
        };
        let fenced = coordinator
            .txn_commit_offsets(&log, "g", stale, vec![commit(0, 10)], 10)
            .await;
        assert_eq!(fenced, vec![Err(CoordinatorError::InvalidProducerEpoch)]);
        coordinator.complete_transaction(0, PRODUCER.producer_id, true, i64::MAX);
        assert_eq!(fetched(&coordinator, 0, true), Some(9));
    }

    #[tokio::test]
    async fn the_loader_replays_transactions_and_their_markers() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let coordinator = GroupCoordinator::new(config(), GroupConfig::default());
        coordinator.load_now(&log).unwrap();
        let plain = coordinator
            .commit_offsets(
                &log,
                "g",
                vec![commit(0, 3), commit(1, 3), commit(2, 3)],
                10,
            )
            .await;
        assert_eq!(plain, vec![Ok(()), Ok(()), Ok(())]);
        drop(log);
        // Offsets 3..: t-0 committed by a transaction, t-1 aborted, t-2 left open.
        append_raw(
            dir.path(),
            &[
                offsets_batch(0, 10, 3),
                marker(true, 4),
                offsets_batch(1, 11, 5),
                marker(false, 6),
                offsets_batch(2, 12, 7),
            ],
        );
        let log = open(dir.path());
        assert_eq!(log.offsets().unwrap().2, 8, "recovery kept every batch");
        let reloaded = GroupCoordinator::new(config(), GroupConfig::default());
        reloaded.load_now(&log).unwrap();
        assert_eq!(fetched(&reloaded, 0, true), Some(10), "committed");
        assert_eq!(
            fetched(&reloaded, 1, true),
            Some(3),
            "aborted: the last committed"
        );
        assert_eq!(fetched(&reloaded, 2, false), Some(3), "open: invisible");
        assert_eq!(fetched(&reloaded, 2, true), Some(-88), "open: unstable");
        assert_eq!(reloaded.open_transactions(0), vec![PRODUCER.producer_id]);
        // The open transaction's marker arrives after the load.
        reloaded.complete_transaction(0, PRODUCER.producer_id, true, i64::MAX);
        assert_eq!(fetched(&reloaded, 2, true), Some(12));
    }

    #[tokio::test]
    async fn group_deletion_tombstones_pending_offsets_too() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let coordinator = GroupCoordinator::new(config(), GroupConfig::default());
        coordinator.load_now(&log).unwrap();
        drop(log);
        append_raw(dir.path(), &[offsets_batch(4, 10, 0)]);
        let log = open(dir.path());
        let coordinator = GroupCoordinator::new(config(), GroupConfig::default());
        coordinator.load_now(&log).unwrap();
        assert!(
            coordinator.has_offsets("g"),
            "a group exists by its pending offsets"
        );
        let deleted = coordinator.delete_offsets(&log, "g", None, 20).await;
        assert_eq!(deleted, Ok(()));
        assert_eq!(log.offsets().unwrap().2, 2, "one tombstone written");
        assert!(!coordinator.has_offsets("g"));
        // The transaction's commit marker finds nothing left to commit.
        coordinator.complete_transaction(0, PRODUCER.producer_id, true, i64::MAX);
        assert_eq!(fetched(&coordinator, 4, true), None);
    }
}
