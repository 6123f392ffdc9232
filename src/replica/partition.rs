//! One hosted partition: its log, idempotent-producer state and high watermark.
//!
//! Produced records are validated (header, CRC, every record) before any lock is taken;
//! appends then take the write lock, so the producer-sequence check and the append are
//! one atomic step; reads take the read lock and copy whole batches out. Every append
//! (and, later, every high-watermark move) notifies `changed` so delayed fetches wake.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;
use uuid::Uuid;

use super::ReplicaError;
use crate::log::{
    BatchError, BatchHeader, LogConfig, PartitionLog, RecordPolicy, recompress, validate_batches,
    validate_records,
};
use crate::txn::producer_state::{ProducerStateTable, SequenceCheck};
use crate::types::{TopicPartition, kafka_uuid_string};

/// Kafka's file beside the segments that binds a partition directory to a topic id, so a
/// topic deleted and re-created under the same name never reuses old data.
const PARTITION_METADATA_FILE: &str = "partition.metadata";

pub struct Partition {
    pub tp: TopicPartition,
    pub topic_id: Uuid,
    state: RwLock<PartitionState>,
    changed: Notify,
}

struct PartitionState {
    log: Option<PartitionLog>,
    producers: ProducerStateTable,
    leader_epoch: i32,
    high_watermark: i64,
    last_flush_ms: i64,
}

/// What a produce to this partition returns to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProduceOutcome {
    pub base_offset: i64,
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
}

/// Raw batches plus the offsets a fetch response reports beside them.
#[derive(Clone, Debug)]
pub struct PartitionRead {
    pub records: Bytes,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

impl Partition {
    /// Opens (recovering if needed) the log under `dir`, rebuilds producer state from the
    /// batch headers, and binds the directory to `topic_id`.
    pub fn open(
        tp: TopicPartition,
        topic_id: Uuid,
        dir: PathBuf,
        config: LogConfig,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<Partition, ReplicaError> {
        let log = PartitionLog::open(dir.clone(), config, now_ms)?;
        write_partition_metadata(&dir, &topic_id)?;
        let mut producers = ProducerStateTable::default();
        log.scan_batch_headers(log.log_start_offset(), &mut |header: &BatchHeader| {
            producers.update(header, header.base_offset)
        })?;
        // One replica: everything in the log is committed.
        let high_watermark = log.log_end_offset();
        let state = PartitionState {
            log: Some(log),
            producers,
            leader_epoch,
            high_watermark,
            last_flush_ms: now_ms,
        };
        Ok(Partition {
            tp,
            topic_id,
            state: RwLock::new(state),
            changed: Notify::new(),
        })
    }

    /// Notified whenever new data becomes readable.
    pub fn changed(&self) -> &Notify {
        &self.changed
    }

    /// Validates `records` (one or more v2 batches), checks producer sequences and appends.
    pub fn append(&self, records: &Bytes, now_ms: i64) -> Result<ProduceOutcome, ReplicaError> {
        let (records, headers) = self.validate(records, now_ms)?;
        // The log stamps offsets into its own copy; make it before taking the lock.
        let owned = BytesMut::from(&records[..]);
        let outcome = {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            let state = &mut *state;
            let log = state.log.as_mut().ok_or(ReplicaError::Deleted)?;
            if let Some(duplicate) = check_sequences(&state.producers, &headers)? {
                return Ok(ProduceOutcome {
                    base_offset: duplicate,
                    log_append_time_ms: -1,
                    log_start_offset: log.log_start_offset(),
                });
            }
            let info = log.append(owned, &headers, state.leader_epoch, now_ms)?;
            let mut next_offset = info.first_offset;
            for header in &headers {
                state.producers.update(header, next_offset);
                next_offset += i64::from(header.last_offset_delta) + 1;
            }
            assert_eq!(
                next_offset,
                log.log_end_offset(),
                "offsets assigned != log end"
            );
            assert!(state.high_watermark <= log.log_end_offset());
            state.high_watermark = log.log_end_offset();
            ProduceOutcome {
                base_offset: info.first_offset,
                log_append_time_ms: info.log_append_time_ms,
                log_start_offset: info.log_start_offset,
            }
        };
        self.changed.notify_waiters();
        Ok(outcome)
    }

    /// Everything about `records` that does not depend on the log's state: header, CRC and
    /// a walk of every record under the topic's rules. It runs before the write lock is
    /// taken, so a large compressed batch does not stall other producers and fetches of
    /// this partition; only the sequence check and the append stay under the lock.
    /// Returns the records to store: as sent, or re-encoded for the topic's
    /// `compression.type`.
    fn validate(
        &self,
        records: &Bytes,
        now_ms: i64,
    ) -> Result<(Bytes, Vec<BatchHeader>), ReplicaError> {
        let config = self.config().ok_or(ReplicaError::Deleted)?;
        let headers = validate_batches(records, config.max_message_bytes)?;
        check_produce_shape(&headers)?;
        let policy = RecordPolicy::new(&config, self.tp.to_string(), now_ms);
        validate_records(records, &headers, &policy, config.decompressed_bytes_max())?;
        match recompress(records, &headers[0], config.compression)? {
            None => Ok((records.clone(), headers)),
            Some(stored) => {
                // The re-encoded batch may be larger (say, `uncompressed`): Kafka checks
                // max.message.bytes again on what it stores.
                let stored_headers = validate_batches(&stored, config.max_message_bytes)?;
                Ok((stored, stored_headers))
            }
        }
    }

    /// Whole batches from the one containing `offset`, up to the high watermark.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one_batch: bool,
    ) -> Result<PartitionRead, ReplicaError> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let log = state.log.as_ref().ok_or(ReplicaError::Deleted)?;
        let result = log.read(offset, max_bytes, state.high_watermark, min_one_batch)?;
        Ok(PartitionRead {
            records: result.records,
            high_watermark: state.high_watermark,
            log_start_offset: result.log_start_offset,
            log_end_offset: result.log_end_offset,
        })
    }

    /// (log start offset, high watermark, log end offset).
    pub fn offsets(&self) -> Result<(i64, i64, i64), ReplicaError> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let log = state.log.as_ref().ok_or(ReplicaError::Deleted)?;
        Ok((
            log.log_start_offset(),
            state.high_watermark,
            log.log_end_offset(),
        ))
    }

    pub fn leader_epoch(&self) -> i32 {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .leader_epoch
    }

    /// Kafka's check of a client's `current_leader_epoch` (-1 means "not given").
    pub fn check_leader_epoch(&self, requested: i32) -> Result<(), ReplicaError> {
        let current = self.leader_epoch();
        match requested {
            -1 => Ok(()),
            r if r < current => Err(ReplicaError::FencedLeaderEpoch { requested, current }),
            r if r > current => Err(ReplicaError::UnknownLeaderEpoch { requested, current }),
            _ => Ok(()),
        }
    }

    /// First offset with a timestamp at or after `timestamp_ms`, below the high watermark.
    pub fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<(i64, i64)>, ReplicaError> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let log = state.log.as_ref().ok_or(ReplicaError::Deleted)?;
        let found = log.offset_for_timestamp(timestamp_ms)?;
        Ok(found.filter(|(offset, _)| *offset < state.high_watermark))
    }

    /// Offset and timestamp of the record with the largest timestamp (ListOffsets -3).
    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, ReplicaError> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let log = state.log.as_ref().ok_or(ReplicaError::Deleted)?;
        Ok(log.max_timestamp_offset()?)
    }

    pub fn config(&self) -> Option<LogConfig> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state.log.as_ref().map(|log| log.config().clone())
    }

    pub fn set_config(&self, config: LogConfig) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        if let Some(log) = state.log.as_mut() {
            log.set_config(config);
        }
    }

    pub fn enforce_retention(&self, now_ms: i64) -> Result<usize, ReplicaError> {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        match state.log.as_mut() {
            Some(log) => Ok(log.enforce_retention(now_ms)?),
            None => Ok(0),
        }
    }

    /// Log compaction for `cleanup.policy=compact` topics (a no-op otherwise, and when no
    /// segment closed since the last run).
    pub fn compact(&self, now_ms: i64) -> Result<crate::log::CleanStats, ReplicaError> {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        match state.log.as_mut() {
            Some(log) => Ok(log.compact(now_ms)?),
            None => Ok(Default::default()),
        }
    }

    /// Flushes when `flush.ms` has passed since the last flush (time-based fsync policy).
    pub fn flush_if_due(&self, now_ms: i64) -> Result<(), ReplicaError> {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        let due = match state.log.as_ref() {
            Some(log) => now_ms.saturating_sub(state.last_flush_ms) >= log.config().flush_ms,
            None => false,
        };
        if due {
            state.last_flush_ms = now_ms;
            if let Some(log) = state.log.as_mut() {
                log.flush()?;
            }
        }
        Ok(())
    }

    pub fn flush(&self) -> Result<(), ReplicaError> {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        match state.log.as_mut() {
            Some(log) => Ok(log.flush()?),
            None => Ok(()),
        }
    }

    /// Removes the log from disk; later calls answer [`ReplicaError::Deleted`].
    pub fn delete(&self) -> Result<(), ReplicaError> {
        let log = self
            .state
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .log
            .take();
        self.changed.notify_waiters();
        match log {
            Some(log) => Ok(log.delete()?),
            None => Ok(()),
        }
    }
}

/// Produce v3+ carries exactly one non-empty batch per partition (Kafka's LogValidator).
fn check_produce_shape(headers: &[BatchHeader]) -> Result<(), BatchError> {
    if headers.len() != 1 {
        return Err(BatchError::InvalidRecord(format!(
            "produce requests must contain exactly one record batch, found {}",
            headers.len()
        )));
    }
    if headers[0].record_count <= 0 {
        return Err(BatchError::InvalidRecord(
            "record batch has no records".into(),
        ));
    }
    Ok(())
}

/// Runs the idempotence check over every batch of one produce. `Some(offset)` means the
/// request is a retry of batches already in the log, answered with their first offset.
fn check_sequences(
    producers: &ProducerStateTable,
    headers: &[BatchHeader],
) -> Result<Option<i64>, ReplicaError> {
    let mut duplicate = None;
    for header in headers {
        if header.is_transactional() || header.is_control() {
            return Err(ReplicaError::TransactionsUnsupported);
        }
        if let SequenceCheck::Duplicate(batch) = producers.check(header)? {
            duplicate.get_or_insert(batch.first_offset);
        }
    }
    Ok(duplicate)
}

/// The topic id recorded in a partition directory, if any.
pub fn read_partition_metadata(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(PARTITION_METADATA_FILE)).ok()?;
    text.lines().find_map(|line| {
        line.strip_prefix("topic_id:")
            .map(|id| id.trim().to_string())
    })
}

fn write_partition_metadata(dir: &Path, topic_id: &Uuid) -> Result<(), std::io::Error> {
    let wanted = kafka_uuid_string(topic_id);
    if read_partition_metadata(dir).as_deref() == Some(wanted.as_str()) {
        return Ok(());
    }
    let temporary = dir.join(format!("{PARTITION_METADATA_FILE}.tmp"));
    std::fs::write(&temporary, format!("version: 0\ntopic_id: {wanted}\n"))?;
    std::fs::rename(&temporary, dir.join(PARTITION_METADATA_FILE))
}
