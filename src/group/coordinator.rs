//! The group coordinator: owns committed offsets (and, with the group state machine,
//! consumer groups) for the `__consumer_offsets` partitions this broker leads.
//!
//! Every change is first appended as a record to the group's offsets partition (the
//! durable truth, replayed by [`GroupCoordinator::load`] on start), then applied to the
//! in-memory view. Callers resolve which partition a group lives in with
//! [`GroupCoordinator::partition_for`] and pass that partition in.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
};

use super::GroupConfig;
use super::offsets::{OffsetStore, partition_for};
use super::records::{self, GroupValue, OffsetValue, RecordKey};
use super::registry::{GroupRegistry, from_record};
use crate::log::batch::plain_record;
use crate::log::config::DECOMPRESSED_BYTES_FLOOR;
use crate::log::iter_batches;
use crate::log::records::walk_batch;
use crate::replica::Partition;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CoordinatorError {
    #[error("offsets storage: {0}")]
    Storage(String),
    #[error("offset metadata is longer than offset.metadata.max.bytes")]
    OffsetMetadataTooLarge,
    #[error("the group's offsets partition is still loading")]
    LoadInProgress,
    #[error("this broker does not coordinate the group")]
    NotCoordinator,
}

/// Kafka's `offset.metadata.max.bytes` default.
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;
/// How much of the offsets partition one load step reads.
const LOAD_CHUNK_BYTES: usize = 1 << 20;

#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// `offsets.topic.num.partitions`
    pub offsets_partitions: i32,
    /// `offsets.retention.minutes`, in ms.
    pub offsets_retention_ms: i64,
}

pub struct GroupCoordinator {
    config: CoordinatorConfig,
    /// Consumer groups (membership state machines) of the partitions loaded here.
    pub registry: GroupRegistry,
    offsets: Mutex<OffsetStore>,
    /// Offsets partitions whose records have been replayed (others answer
    /// COORDINATOR_LOAD_IN_PROGRESS).
    loaded: Mutex<HashSet<i32>>,
}

/// What one load has replayed so far.
#[derive(Default)]
struct Replay {
    applied: usize,
    skipped_batches: usize,
    skipped_records: usize,
    groups: HashMap<String, Option<GroupValue>>,
}

/// What became of one record during a load.
enum Replayed {
    Applied,
    /// No key: not a record of ours (Kafka ignores these too).
    Ignored,
    /// A key or value this broker cannot decode.
    Unreadable,
}

/// One partition's offset to commit.
#[derive(Clone, Debug)]
pub struct OffsetCommit {
    pub topic: String,
    pub partition: i32,
    pub value: OffsetValue,
}

impl GroupCoordinator {
    pub fn new(config: CoordinatorConfig, group_config: GroupConfig) -> GroupCoordinator {
        GroupCoordinator {
            config,
            registry: GroupRegistry::new(group_config),
            offsets: Mutex::new(OffsetStore::default()),
            loaded: Mutex::new(HashSet::new()),
        }
    }

    pub fn partition_for(&self, group: &str) -> i32 {
        partition_for(group, self.config.offsets_partitions)
    }

    pub fn is_loaded(&self, partition: i32) -> bool {
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&partition)
    }

    /// Replays an offsets partition into memory; afterwards the partition serves requests.
    ///
    /// A batch or record it cannot read (written by a client before produce refused
    /// internal topics, or by a bug) is skipped and counted, and the load goes on: one bad
    /// record must not leave every group of the partition at COORDINATOR_LOAD_IN_PROGRESS
    /// forever. Only a failing disk read stops the load.
    pub fn load(&self, log: &Partition) -> Result<usize, CoordinatorError> {
        let storage = |e: crate::replica::ReplicaError| CoordinatorError::Storage(e.to_string());
        let (mut offset, high_watermark) = {
            let (start, hw, _) = log.offsets().map_err(storage)?;
            (start, hw)
        };
        let decompressed_bytes_max = log
            .config()
            .map_or(DECOMPRESSED_BYTES_FLOOR, |c| c.decompressed_bytes_max());
        let mut replay = Replay::default();
        while offset < high_watermark {
            let read = log.read(offset, LOAD_CHUNK_BYTES, true).map_err(storage)?;
            match self.replay_chunk(&read.records, decompressed_bytes_max, &mut replay) {
                Some(next) if next > offset => offset = next,
                // Nothing readable from here (no whole batch, or a header that is not a
                // v2 batch, so the next one cannot be found): stop rather than spin.
                _ => break,
            }
        }
        if replay.skipped_batches + replay.skipped_records > 0 {
            tracing::warn!(
                partition = log.tp.partition,
                skipped_batches = replay.skipped_batches,
                skipped_records = replay.skipped_records,
                stopped_at = offset,
                "skipped unreadable data while loading the offsets partition"
            );
        }
        let now = crate::types::now_ms();
        for (group_id, value) in replay.groups {
            let snapshot = value.map(|value| from_record(&group_id, value));
            self.registry.restore(snapshot, &group_id, now);
        }
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(log.tp.partition);
        Ok(replay.applied)
    }

    /// Replays the whole batches in `records`; returns the offset after the last batch
    /// seen, if any. Each batch is walked under the decompression cap before it is decoded,
    /// so a bomb stored before produce validation existed costs bounded memory here too.
    fn replay_chunk(
        &self,
        records: &Bytes,
        decompressed_bytes_max: usize,
        replay: &mut Replay,
    ) -> Option<i64> {
        let mut next = None;
        for item in iter_batches(records) {
            let Ok((position, header)) = item else {
                replay.skipped_batches += 1;
                break;
            };
            next = Some(header.last_offset() + 1);
            let batch = records.slice(position..position + header.total_bytes());
            let readable = walk_batch(&batch, &header, decompressed_bytes_max, &mut |_| {})
                .map_err(|error| error.to_string())
                .and_then(|()| {
                    RecordBatchDecoder::decode(&mut batch.clone()).map_err(|e| e.to_string())
                });
            match readable {
                Ok(set) => {
                    for record in &set.records {
                        self.replay_record(record, replay);
                    }
                }
                Err(_) => replay.skipped_batches += 1,
            }
        }
        next
    }

    fn replay_record(&self, record: &Record, replay: &mut Replay) {
        match self.apply_record(record, &mut replay.groups) {
            Replayed::Applied => replay.applied += 1,
            Replayed::Ignored => {}
            Replayed::Unreadable => replay.skipped_records += 1,
        }
    }

    /// Applies one record to the in-memory view. A value that cannot be decoded is skipped,
    /// never taken for a tombstone: that would drop the offset committed before it.
    fn apply_record(
        &self,
        record: &Record,
        groups: &mut HashMap<String, Option<GroupValue>>,
    ) -> Replayed {
        let Some(key) = record.key.as_ref() else {
            return Replayed::Ignored;
        };
        let Ok(key) = records::decode_key(key) else {
            return Replayed::Unreadable;
        };
        match key {
            RecordKey::Offset {
                group,
                topic,
                partition,
            } => {
                let value = match record.value.as_ref().map(|v| records::decode_offset(v)) {
                    None => None,
                    Some(Ok(value)) => Some(value),
                    Some(Err(_)) => return Replayed::Unreadable,
                };
                let mut offsets = self.offsets.lock().unwrap_or_else(|p| p.into_inner());
                offsets.apply(&group, &topic, partition, value);
                Replayed::Applied
            }
            RecordKey::Group { group } => {
                let value = match record.value.as_ref().map(|v| records::decode_group(v)) {
                    None => None,
                    Some(Ok(value)) => Some(value),
                    Some(Err(_)) => return Replayed::Unreadable,
                };
                groups.insert(group, value);
                Replayed::Applied
            }
        }
    }

    /// Validates and persists a commit; per-entry results in request order.
    pub fn commit_offsets(
        &self,
        log: &Partition,
        group: &str,
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
        let accepted: Vec<&OffsetCommit> = commits
            .iter()
            .zip(&verdicts)
            .filter(|(_, verdict)| verdict.is_ok())
            .map(|(commit, _)| commit)
            .collect();
        if accepted.is_empty() {
            return verdicts;
        }
        let entries = accepted.iter().map(|commit| {
            let key = RecordKey::Offset {
                group: group.to_string(),
                topic: commit.topic.clone(),
                partition: commit.partition,
            };
            (
                records::encode_key(&key),
                Some(records::encode_offset(&commit.value)),
            )
        });
        if let Err(error) = append_records(log, entries.collect(), now_ms) {
            return commits.iter().map(|_| Err(error.clone())).collect();
        }
        let mut offsets = self.offsets.lock().unwrap_or_else(|p| p.into_inner());
        for commit in accepted {
            offsets.apply(
                group,
                &commit.topic,
                commit.partition,
                Some(commit.value.clone()),
            );
        }
        verdicts
    }

    pub fn has_offsets(&self, group: &str) -> bool {
        self.offsets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .has_offsets(group)
    }

    pub fn offset_group_ids(&self) -> Vec<String> {
        let offsets = self.offsets.lock().unwrap_or_else(|p| p.into_inner());
        offsets.group_ids().cloned().collect()
    }

    /// Writes tombstones for the listed partitions' offsets (all of the group's if `None`).
    pub fn delete_offsets(
        &self,
        log: &Partition,
        group: &str,
        partitions: Option<Vec<(String, i32)>>,
        now_ms: i64,
    ) -> Result<(), CoordinatorError> {
        let doomed: Vec<(String, i32)> = match partitions {
            Some(list) => list,
            None => self
                .fetch_offsets(group, None)
                .into_iter()
                .map(|(key, _)| key)
                .collect(),
        };
        if doomed.is_empty() {
            return Ok(());
        }
        let entries = doomed
            .iter()
            .map(|(topic, partition)| {
                let key = RecordKey::Offset {
                    group: group.to_string(),
                    topic: topic.clone(),
                    partition: *partition,
                };
                (records::encode_key(&key), None)
            })
            .collect();
        append_records(log, entries, now_ms)?;
        let mut offsets = self.offsets.lock().unwrap_or_else(|p| p.into_inner());
        for (topic, partition) in &doomed {
            offsets.apply(group, topic, *partition, None);
        }
        Ok(())
    }

    /// Drops offsets older than `offsets.retention.minutes` of groups without members
    /// (Kafka expires offsets only once a group is empty); returns how many went.
    pub fn expire_offsets(
        &self,
        resolve: &dyn Fn(&str) -> Option<std::sync::Arc<Partition>>,
        now_ms: i64,
    ) -> usize {
        let cutoff = now_ms.saturating_sub(self.config.offsets_retention_ms);
        let mut expired = 0;
        for group in self.offset_group_ids() {
            if self.registry.has_members_or_busy(&group) {
                continue;
            }
            let old = self
                .offsets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .older_than(&group, cutoff);
            let Some(log) = resolve(&group) else { continue };
            if !old.is_empty()
                && self
                    .delete_offsets(&log, &group, Some(old.clone()), now_ms)
                    .is_ok()
            {
                expired += old.len();
            }
        }
        expired
    }

    /// Committed offsets of `group`: for the listed partitions, or every committed one.
    pub fn fetch_offsets(
        &self,
        group: &str,
        partitions: Option<&[(String, i32)]>,
    ) -> Vec<((String, i32), Option<OffsetValue>)> {
        let offsets = self.offsets.lock().unwrap_or_else(|p| p.into_inner());
        match partitions {
            Some(list) => list
                .iter()
                .map(|(topic, partition)| {
                    let value = offsets.get(group, topic, *partition).cloned();
                    ((topic.clone(), *partition), value)
                })
                .collect(),
            None => offsets
                .group(group)
                .map(|all| {
                    all.iter()
                        .map(|(key, value)| (key.clone(), Some(value.clone())))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// Appends key/value records (a `None` value is a tombstone) as one uncompressed batch.
pub fn append_records(
    log: &Partition,
    entries: Vec<(Bytes, Option<Bytes>)>,
    now_ms: i64,
) -> Result<i64, CoordinatorError> {
    let records: Vec<Record> = entries
        .into_iter()
        .enumerate()
        .map(|(index, (key, value))| plain_record(index as i64, now_ms, Some(key), value))
        .collect();
    let mut buffer = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buffer, &records, &options)
        .map_err(|error| CoordinatorError::Storage(format!("encode offsets batch: {error}")))?;
    let outcome = log
        .append(&buffer.freeze(), now_ms)
        .map_err(|error| CoordinatorError::Storage(error.to_string()))?;
    Ok(outcome.base_offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogConfig;
    use crate::types::TopicPartition;

    fn config() -> CoordinatorConfig {
        CoordinatorConfig {
            offsets_partitions: 1,
            offsets_retention_ms: 1000,
        }
    }

    fn commit(topic: &str, partition: i32, offset: i64, metadata: &str) -> OffsetCommit {
        OffsetCommit {
            topic: topic.into(),
            partition,
            value: OffsetValue {
                offset,
                leader_epoch: 3,
                metadata: metadata.into(),
                commit_timestamp_ms: 10,
            },
        }
    }

    fn open(dir: &std::path::Path) -> Partition {
        let tp = TopicPartition::new("__consumer_offsets", 0);
        let id = uuid::Uuid::from_u128(7);
        let partition = Partition::open(
            tp,
            id,
            dir.join("__consumer_offsets-0"),
            LogConfig::default(),
            0,
            0,
            crate::log::LastShutdown::Unclean,
        )
        .unwrap();
        partition.become_leader(0).unwrap();
        partition
    }

    #[test]
    fn commits_survive_a_reload_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let coordinator = GroupCoordinator::new(config(), GroupConfig::default());
        coordinator.load(&log).unwrap();
        let results = coordinator.commit_offsets(
            &log,
            "g",
            vec![commit("t", 0, 5, "a"), commit("t", 1, 7, &"x".repeat(5000))],
            10,
        );
        assert_eq!(
            results,
            vec![Ok(()), Err(CoordinatorError::OffsetMetadataTooLarge)]
        );
        let results = coordinator.commit_offsets(
            &log,
            "g",
            vec![
                commit("t", 0, 6, "b"),
                commit("u", 0, 1, ""),
                commit("u", 1, 2, ""),
            ],
            11,
        );
        assert_eq!(results, vec![Ok(()), Ok(()), Ok(())]);
        drop(log);

        let log = open(dir.path());
        let reloaded = GroupCoordinator::new(config(), GroupConfig::default());
        assert!(!reloaded.is_loaded(0));
        assert_eq!(reloaded.load(&log).unwrap(), 4);
        assert!(reloaded.is_loaded(0));
        let wanted = [("t".to_string(), 0), ("t".to_string(), 1)];
        let fetched = reloaded.fetch_offsets("g", Some(&wanted));
        assert_eq!(
            fetched[0]
                .1
                .as_ref()
                .map(|v| (v.offset, v.metadata.as_str())),
            Some((6, "b"))
        );
        assert_eq!(fetched[1].1, None);
        assert_eq!(reloaded.fetch_offsets("g", None).len(), 3);
        assert!(reloaded.fetch_offsets("other", None).is_empty());
    }

    #[test]
    fn load_skips_unreadable_batches_and_records_and_always_finishes() {
        use crate::log::test_support::{batch_around, record_bytes};
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let coordinator = GroupCoordinator::new(config(), GroupConfig::default());
        coordinator.load(&log).unwrap();
        let first = coordinator.commit_offsets(&log, "g", vec![commit("t", 0, 5, "a")], 10);
        assert_eq!(first, vec![Ok(())]);
        let end = log.offsets().unwrap().2;
        drop(log);
        // What a client could write before produce refused internal topics: a gzip batch
        // of noise, then a readable batch whose key and offset value are garbage.
        let segment = dir
            .path()
            .join("__consumer_offsets-0/00000000000000000000.log");
        let mut garbage = batch_around(&[0x5a; 64], 1, 1, end).to_vec();
        let mut bad_records = record_bytes(0, 0, Some(b"\x00\x09junk"), b"v");
        let good_key = records::encode_key(&RecordKey::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 0,
        });
        bad_records.extend(record_bytes(1, 0, Some(&good_key[..]), b"\xff\xff"));
        garbage.extend_from_slice(&batch_around(&bad_records, 0, 2, end + 1));
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&segment)
            .unwrap();
        std::io::Write::write_all(&mut file, &garbage).unwrap();
        drop(file);

        let log = open(dir.path());
        assert_eq!(
            log.offsets().unwrap().2,
            end + 3,
            "recovery keeps CRC-valid batches"
        );
        let reloaded = GroupCoordinator::new(config(), GroupConfig::default());
        assert_eq!(reloaded.load(&log).unwrap(), 1);
        assert!(reloaded.is_loaded(0));
        let wanted = [("t".to_string(), 0)];
        let fetched = reloaded.fetch_offsets("g", Some(&wanted));
        // The unreadable value did not erase the offset committed before it.
        assert_eq!(fetched[0].1.as_ref().map(|v| v.offset), Some(5));
        let again = reloaded.commit_offsets(&log, "g", vec![commit("t", 0, 9, "b")], 20);
        assert_eq!(again, vec![Ok(())]);
        drop(log);
        let log = open(dir.path());
        let third = GroupCoordinator::new(config(), GroupConfig::default());
        assert_eq!(third.load(&log).unwrap(), 2);
        let fetched = third.fetch_offsets("g", Some(&wanted));
        assert_eq!(fetched[0].1.as_ref().map(|v| v.offset), Some(9));
    }
}
