//! Moving a partition's log start offset: DeleteRecords on the leader (Kafka's
//! `Partition.deleteRecordsOnLeader`), a follower adopting its leader's start from each
//! fetch response (`ReplicaFetcherThread.processPartitionData`), and the low watermark
//! DeleteRecords waits for (`lowWatermarkIfLeader`, `DelayedDeleteRecords`).
//!
//! Each move is one step under the write lock: the log checkpoints the new start and drops
//! the segments wholly below it, producer snapshots below it go, and the leader-epoch cache
//! is truncated from the start (published durably after the lock, as truncations are). Callers
//! run it off the async threads: it fsyncs and deletes files.

use super::*;

impl Partition {
    /// DeleteRecords on the leader: `offset` -1 means the high watermark; above the high
    /// watermark (or negative) is OFFSET_OUT_OF_RANGE; a topic whose `cleanup.policy` lacks
    /// `delete` refuses (POLICY_VIOLATION). Returns the offset the log now starts at or
    /// above (the one asked for, converted).
    pub fn delete_records(&self, offset: i64) -> Result<i64, ReplicaError> {
        let (target, epochs_to_write) = {
            let mut state = self.write_state();
            let state = &mut *state;
            if !state.leads {
                return Err(ReplicaError::NotLeader);
            }
            let log = state.log.as_ref().ok_or(ReplicaError::Deleted)?;
            if !log.config().retention_deletes {
                return Err(ReplicaError::DeletionPolicy);
            }
            let target = if offset == -1 {
                state.high_watermark
            } else {
                offset
            };
            if target < 0 || target > state.high_watermark {
                return Err(ReplicaError::Log(crate::log::LogError::OffsetOutOfRange {
                    offset: target,
                    log_start: log.log_start_offset(),
                    log_end: state.high_watermark,
                }));
            }
            (target, move_log_start(state, target)?)
        };
        self.write_epochs(epochs_to_write)?;
        self.notify_changed();
        Ok(target)
    }

    /// A follower learns its leader's log start offset (`source`: leader, leader epoch)
    /// and moves its own up to it, never past its own high watermark (Kafka refuses a log
    /// start above it). True if the start moved.
    pub fn follow_log_start(
        &self,
        leader_log_start: i64,
        source: (NodeId, i32),
    ) -> Result<bool, ReplicaError> {
        let epochs_to_write = {
            let mut state = self.write_state();
            let state = &mut *state;
            if !state.follows(source) {
                return Ok(false);
            }
            let target = leader_log_start.min(state.high_watermark);
            let log = state.log.as_ref().ok_or(ReplicaError::Deleted)?;
            if target <= log.log_start_offset() {
                return Ok(false);
            }
            move_log_start(state, target)?
        };
        self.write_epochs(epochs_to_write)?;
        Ok(true)
    }

    /// The log start offset a follower reported in its fetch, at the leader. Wakes a
    /// waiting DeleteRecords when it changed.
    pub fn record_follower_log_start(&self, replica: NodeId, log_start_offset: i64) {
        // Every follower fetch reports every partition's start, which rarely moves: the
        // read lock settles most of them.
        let known = {
            let state = self.state.read().unwrap_or_else(|p| p.into_inner());
            let replication = state.replication.as_ref();
            replication.is_some_and(|r| r.follower_log_start(replica) == Some(log_start_offset))
        };
        if known {
            return;
        }
        let changed = {
            let mut state = self.write_state();
            let replication = state.replication.as_mut();
            replication.is_some_and(|r| r.record_log_start(replica, log_start_offset))
        };
        if changed {
            self.notify_changed();
        }
    }

    /// DeleteRecords' low watermark: the smallest log start offset over this leader and
    /// its followers on `live` brokers.
    pub fn low_watermark(&self, live: &dyn Fn(NodeId) -> bool) -> Result<i64, ReplicaError> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let log = state.log.as_ref().ok_or(ReplicaError::Deleted)?;
        if !state.leads {
            return Err(ReplicaError::NotLeader);
        }
        let leader_start = log.log_start_offset();
        Ok(match state.replication.as_ref() {
            Some(replication) => replication.low_watermark(leader_start, live),
            None => leader_start,
        })
    }

    /// Waits until the low watermark reaches `required` (Kafka's `DelayedDeleteRecords`),
    /// woken by `changed`; returns it. NotLeader if leadership moves meanwhile,
    /// ReplicationTimedOut at `deadline`.
    pub async fn wait_low_watermark(
        &self,
        required: i64,
        live: &(dyn Fn(NodeId) -> bool + Sync),
        deadline: tokio::time::Instant,
    ) -> Result<i64, ReplicaError> {
        loop {
            // Armed before the check, so a change between the two is not missed.
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let low_watermark = self.low_watermark(live)?;
            if low_watermark >= required {
                return Ok(low_watermark);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(ReplicaError::ReplicationTimedOut);
            }
        }
    }
}

/// Moves the log start to `offset` (above the current one, at most the log end) and keeps
/// the producer snapshots and the leader-epoch cache in step; returns the epoch change to
/// write once the lock is released.
fn move_log_start(
    state: &mut PartitionState,
    offset: i64,
) -> Result<Option<EpochsToWrite>, ReplicaError> {
    let log = state.log.as_mut().ok_or(ReplicaError::Deleted)?;
    if !log.increment_log_start(offset)? {
        return Ok(None);
    }
    let log_start = log.log_start_offset();
    // A snapshot below the log start remembers batches that are gone (as retention does).
    producer_snapshot::remove_outside(log.dir(), log_start, i64::MAX)?;
    Ok(match state.epochs.truncate_from_start(log_start) {
        true => state.epochs_changed(),
        false => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::test_support::encode_batch_sized;
    use kafka_protocol::records::Compression;

    fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 600,
            ..LogConfig::default()
        }
    }

    fn leader(dir: &Path) -> Partition {
        let tp = TopicPartition::new("t", 0);
        let (id, dir) = (Uuid::from_u128(7), dir.join("t-0"));
        let partition =
            Partition::open(tp, id, dir, config(), 0, 0, LastShutdown::Unclean).unwrap();
        partition.become_leader(0).unwrap();
        partition
    }

    /// 20 batches of 5 records each: offsets 0..100 across several segments.
    fn fill(partition: &Partition) {
        for _ in 0..20 {
            let batch = encode_batch_sized(&[100; 5], Compression::None, 20).freeze();
            partition.append(&batch, 1).unwrap();
        }
    }

    fn segment_count(partition: &Partition) -> usize {
        let state = partition.state.read().unwrap();
        let log_dir = state.log.as_ref().unwrap().dir().to_path_buf();
        std::fs::read_dir(log_dir)
            .unwrap()
            .filter(|entry| {
                let path = entry.as_ref().unwrap().path();
                path.extension().is_some_and(|e| e == "log")
            })
            .count()
    }

    #[test]
    fn delete_records_moves_the_start_into_a_segment_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let partition = leader(dir.path());
        fill(&partition);
        let segments = segment_count(&partition);
        assert!(segments > 2, "{segments}");
        assert_eq!(partition.delete_records(52).unwrap(), 52);
        let (log_start, high_watermark, log_end) = partition.offsets().unwrap();
        assert_eq!((log_start, high_watermark, log_end), (52, 100, 100));
        assert!(segment_count(&partition) < segments);
        // Reads below the start are out of range; at it, the batch holding it comes back.
        let below = partition.read(51, 10_000, true).unwrap_err();
        assert!(matches!(
            below,
            ReplicaError::Log(crate::log::LogError::OffsetOutOfRange { log_start: 52, .. })
        ));
        let read = partition.read(52, 10_000, true).unwrap();
        let first = crate::log::iter_batches(&read.records)
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(first.1.base_offset, 50);
        assert_eq!(partition.leader_epochs().epoch_at_log_start(52), Some(0));
        // Never backwards, never past the high watermark.
        assert_eq!(partition.delete_records(10).unwrap(), 10);
        assert_eq!(partition.offsets().unwrap().0, 52);
        assert!(matches!(
            partition.delete_records(101),
            Err(ReplicaError::Log(
                crate::log::LogError::OffsetOutOfRange { .. }
            ))
        ));
        drop(partition);
        let reopened = leader(dir.path());
        assert_eq!(reopened.offsets().unwrap(), (52, 100, 100));
        // -1 is the high watermark: everything goes, the log stays usable.
        assert_eq!(reopened.delete_records(-1).unwrap(), 100);
        assert_eq!(reopened.offsets().unwrap(), (100, 100, 100));
        assert_eq!(segment_count(&reopened), 1);
        fill(&reopened);
        assert_eq!(reopened.offsets().unwrap().2, 200);
    }

    #[test]
    fn compacted_only_topics_and_followers_refuse_delete_records() {
        let dir = tempfile::tempdir().unwrap();
        let partition = leader(dir.path());
        fill(&partition);
        partition.set_config(LogConfig {
            retention_deletes: false,
            ..config()
        });
        assert!(matches!(
            partition.delete_records(10),
            Err(ReplicaError::DeletionPolicy)
        ));
        partition.become_follower(1).unwrap();
        assert!(matches!(
            partition.delete_records(10),
            Err(ReplicaError::NotLeader)
        ));
    }
}
