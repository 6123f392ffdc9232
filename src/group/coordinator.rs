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
    pub fn load(&self, log: &Partition) -> Result<usize, CoordinatorError> {
        let (mut offset, high_watermark) = {
            let (start, hw, _) = log
                .offsets()
                .map_err(|e| CoordinatorError::Storage(e.to_string()))?;
            (start, hw)
        };
        let mut applied = 0;
        let mut groups: HashMap<String, Option<GroupValue>> = HashMap::new();
        while offset < high_watermark {
            let read = log
                .read(offset, LOAD_CHUNK_BYTES, true)
                .map_err(|e| CoordinatorError::Storage(e.to_string()))?;
            if read.records.is_empty() {
                break;
            }
            let mut bytes = read.records.clone();
            let sets = RecordBatchDecoder::decode_all(&mut bytes)
                .map_err(|e| CoordinatorError::Storage(format!("offsets log: {e}")))?;
            for record in sets.iter().flat_map(|set| set.records.iter()) {
                offset = offset.max(record.offset + 1);
                if self.apply_record(record, &mut groups) {
                    applied += 1;
                }
            }
        }
        let now = crate::types::now_ms();
        for (group_id, value) in groups {
            let snapshot = value.map(|value| from_record(&group_id, value));
            self.registry.restore(snapshot, &group_id, now);
        }
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(log.tp.partition);
        Ok(applied)
    }

    fn apply_record(
        &self,
        record: &Record,
        groups: &mut HashMap<String, Option<GroupValue>>,
    ) -> bool {
        let Some(key) = record.key.as_ref() else {
            return false;
        };
        let Ok(key) = records::decode_key(key) else {
            tracing::warn!(
                offset = record.offset,
                "unreadable key in __consumer_offsets"
            );
            return false;
        };
        match key {
            RecordKey::Offset {
                group,
                topic,
                partition,
            } => {
                let value = record
                    .value
                    .as_ref()
                    .and_then(|v| records::decode_offset(v).ok());
                let mut offsets = self.offsets.lock().unwrap_or_else(|p| p.into_inner());
                offsets.apply(&group, &topic, partition, value);
                true
            }
            RecordKey::Group { group } => {
                let value = record
                    .value
                    .as_ref()
                    .and_then(|v| records::decode_group(v).ok());
                groups.insert(group, value);
                true
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
        Partition::open(
            tp,
            id,
            dir.join("__consumer_offsets-0"),
            LogConfig::default(),
            0,
            0,
            crate::log::LastShutdown::Unclean,
        )
        .unwrap()
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
}
