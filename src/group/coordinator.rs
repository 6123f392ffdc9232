//! The group coordinator: owns committed offsets (and, with the group state machine,
//! consumer groups) for the `__consumer_offsets` partitions this broker leads.
//!
//! Every change is first appended as a record to the group's offsets partition (the
//! durable truth, replayed by the loader when this broker becomes its leader) and waited
//! on until committed (every ISR member has it); only then is it applied to the in-memory
//! view, so OffsetFetch never shows an offset a failover could lose. Callers resolve which
//! partition a group lives in with [`GroupCoordinator::partition_for`] and pass that
//! partition in.
//!
//! Leadership ([`GroupCoordinator::follow_leadership`]): a partition this broker starts to
//! lead is loaded in the background (see `loader`); one it stops leading is unloaded at
//! once: its groups and offsets leave memory and its requests answer NOT_COORDINATOR.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;

use super::GroupConfig;
use super::consumer::ConsumerGroupConfig;
use super::loader::Loads;
use super::offsets::{OffsetStore, partition_for};
use super::records::{self, OffsetValue, RecordKey};
use super::registry::{GroupRegistry, RegistryConfig};
use super::writer::{WriteTarget, write_committed};
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
    /// Appended but not known to be replicated (timeout, too few in-sync replicas) or the
    /// partition is gone: Kafka answers COORDINATOR_NOT_AVAILABLE and the client retries.
    #[error("the write was not committed: {0}")]
    NotCommitted(String),
    /// The records do not fit the offsets partition (`max.message.bytes`): retrying cannot
    /// help. Kafka 4 answers UNKNOWN_SERVER_ERROR (3.x answered offset commits
    /// INVALID_COMMIT_OFFSET_SIZE).
    #[error("the write is too large for the offsets partition: {0}")]
    TooLarge(String),
    /// A transactional write by a producer whose epoch is not the partition's current one
    /// (a zombie). Kafka: INVALID_PRODUCER_EPOCH.
    #[error("invalid producer epoch")]
    InvalidProducerEpoch,
    /// A transactional write the partition's producer state refuses for the transaction's
    /// state. Kafka: INVALID_TXN_STATE.
    #[error("invalid transaction state")]
    InvalidTxnState,
    /// OffsetFetch with require_stable for a partition an open transaction holds an offset
    /// of. Kafka: UNSTABLE_OFFSET_COMMIT (the consumer retries).
    #[error("an open transaction holds an offset of this partition")]
    UnstableOffsetCommit,
}

/// Committed offsets by (topic, partition); `None` where nothing is committed.
pub type FetchedOffsets = Vec<((String, i32), Option<OffsetValue>)>;

/// [`FetchedOffsets`] under require_stable: a partition an open transaction holds an
/// offset of is [`CoordinatorError::UnstableOffsetCommit`].
pub type StableOffsets = Vec<((String, i32), Result<Option<OffsetValue>, CoordinatorError>)>;

/// Kafka's `offset.metadata.max.bytes` default.
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;

#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// `offsets.topic.num.partitions`
    pub offsets_partitions: i32,
    /// `offsets.retention.minutes`, in ms.
    pub offsets_retention_ms: i64,
    /// `offsets.commit.timeout.ms`: how long a write waits for replication.
    pub commit_timeout_ms: u64,
    /// `group.consumer.*`: also what a consumer group loaded from the log runs with when
    /// the consumer protocol is off.
    pub consumer: ConsumerGroupConfig,
}

#[derive(Clone)]
pub struct GroupCoordinator {
    config: CoordinatorConfig,
    /// Consumer groups (membership state machines) of the partitions loaded here.
    pub registry: Arc<GroupRegistry>,
    pub(super) book: Arc<OffsetBook>,
    pub(super) loads: Arc<Loads>,
}

/// Committed offsets and the per-group write order.
#[derive(Default)]
pub(super) struct OffsetBook {
    pub(super) offsets: Mutex<OffsetStore>,
    /// One writer at a time per group: a group's offset records are appended, committed
    /// and applied in one order, so a slower wait can never apply an older commit over a
    /// newer one (Kafka keeps pending commits apart for the same reason).
    group_writes: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Std mutexes here guard plain maps, never across an await; poison is ignored.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
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
        let registry = GroupRegistry::new(RegistryConfig {
            group: group_config,
            offsets_partitions: config.offsets_partitions,
            write_timeout: Duration::from_millis(config.commit_timeout_ms),
            consumer: config.consumer,
        });
        GroupCoordinator {
            config,
            registry: Arc::new(registry),
            book: Arc::new(OffsetBook::default()),
            loads: Arc::new(Loads::default()),
        }
    }

    pub fn partition_for(&self, group: &str) -> i32 {
        partition_for(group, self.config.offsets_partitions)
    }

    pub(super) fn partition_count(&self) -> i32 {
        self.config.offsets_partitions
    }

    pub(super) fn commit_timeout(&self) -> Duration {
        Duration::from_millis(self.config.commit_timeout_ms)
    }

    /// Whether `partition`'s groups are served here (loaded, and not unloaded since).
    pub fn is_loaded(&self, partition: i32) -> bool {
        self.registry.loaded_epoch(partition).is_some()
    }

    /// Whether `partition`'s groups may be served now from `log` (this broker's replica of
    /// it), for a caller that found this broker named its leader in the metadata image.
    /// Memory must have been loaded at the epoch the log leads at. A partition not loaded
    /// yet, loaded at an older epoch and about to be reloaded, or whose log has yet to
    /// take the leadership the image gave it, answers COORDINATOR_LOAD_IN_PROGRESS (as
    /// Kafka's coordinator runtime answers while loading): memory loaded under an older
    /// epoch may miss records another leader wrote since, and must not be served.
    pub fn check_serving(&self, partition: i32, log: &Partition) -> Result<(), CoordinatorError> {
        let (leader_epoch, leads) = log.leadership();
        if !leads {
            return Err(CoordinatorError::LoadInProgress);
        }
        match self.registry.loaded_epoch(partition) {
            Some(loaded) if loaded == leader_epoch => Ok(()),
            Some(loaded) if loaded > leader_epoch => Err(CoordinatorError::NotCoordinator),
            Some(_) | None => Err(CoordinatorError::LoadInProgress),
        }
    }

    /// Where a write for `group` goes: its log at the epoch the partition was loaded at.
    pub(super) fn target<'a>(
        &self,
        log: &'a Partition,
        group: &str,
    ) -> Result<WriteTarget<'a>, CoordinatorError> {
        let leader_epoch = self
            .registry
            .loaded_epoch(self.partition_for(group))
            .ok_or(CoordinatorError::NotCoordinator)?;
        Ok(WriteTarget {
            log,
            leader_epoch,
            timeout: self.commit_timeout(),
        })
    }

    /// Applies committed offset records (the batch's records from `base_offset` on),
    /// unless the partition was unloaded (or reloaded at another epoch) while the write
    /// waited: then memory is not this write's to touch.
    fn apply_committed(
        &self,
        target: &WriteTarget<'_>,
        group: &str,
        changes: Vec<OffsetChange>,
        base_offset: i64,
    ) {
        let mut offsets = lock(&self.book.offsets);
        let partition = self.partition_for(group);
        if self.registry.loaded_epoch(partition) != Some(target.leader_epoch) {
            return;
        }
        for (index, (topic, partition, value)) in changes.into_iter().enumerate() {
            offsets.apply(group, &topic, partition, value, base_offset + index as i64);
        }
    }

    /// The group's write lock (see [`OffsetBook::group_writes`]).
    fn group_write_lock(&self, group: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut writes = lock(&self.book.group_writes);
        writes.retain(|_, write| Arc::strong_count(write) > 1);
        writes.entry(group.to_string()).or_default().clone()
    }

    /// Validates and persists a commit; per-entry results in request order. Answers once
    /// the records are committed (or the write failed).
    pub async fn commit_offsets(
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
        let changes: Vec<OffsetChange> = accepted
            .iter()
            .map(|c| (c.topic.clone(), c.partition, Some(c.value.clone())))
            .collect();
        if let Err(error) = self.write_offsets(log, group, changes, now_ms).await {
            // Entries refused on their own keep their own error, as in Kafka.
            return verdicts
                .into_iter()
                .map(|verdict| verdict.and(Err(error.clone())))
                .collect();
        }
        verdicts
    }

    /// Appends offset records (tombstones for `None`), waits until they are committed and
    /// applies them, under the group's write lock.
    async fn write_offsets(
        &self,
        log: &Partition,
        group: &str,
        changes: Vec<OffsetChange>,
        now_ms: i64,
    ) -> Result<(), CoordinatorError> {
        let target = self.target(log, group)?;
        let write_lock = self.group_write_lock(group);
        let _writing = write_lock.lock().await;
        self.write_offsets_locked(target, group, changes, now_ms)
            .await
    }

    /// `write_offsets` for a caller that holds the group's write lock.
    async fn write_offsets_locked(
        &self,
        target: WriteTarget<'_>,
        group: &str,
        changes: Vec<OffsetChange>,
        now_ms: i64,
    ) -> Result<(), CoordinatorError> {
        let entries = offset_entries(group, &changes);
        let base_offset = write_committed(target, entries, now_ms).await?;
        self.apply_committed(&target, group, changes, base_offset);
        Ok(())
    }

    pub fn has_offsets(&self, group: &str) -> bool {
        lock(&self.book.offsets).has_offsets(group)
    }

    pub fn offset_group_ids(&self) -> Vec<String> {
        lock(&self.book.offsets).group_ids().into_iter().collect()
    }

    /// Writes tombstones for the listed partitions' offsets (all of the group's if `None`:
    /// committed ones and those open transactions hold, as Kafka's group deletion does)
    /// and answers once they are committed.
    pub async fn delete_offsets(
        &self,
        log: &Partition,
        group: &str,
        partitions: Option<Vec<(String, i32)>>,
        now_ms: i64,
    ) -> Result<(), CoordinatorError> {
        let doomed: Vec<(String, i32)> = match partitions {
            Some(list) => list,
            None => {
                let mut all: std::collections::BTreeSet<(String, i32)> = self
                    .fetch_offsets(group, None)?
                    .into_iter()
                    .map(|(key, _)| key)
                    .collect();
                all.extend(lock(&self.book.offsets).pending_partitions(group));
                all.into_iter().collect()
            }
        };
        if doomed.is_empty() {
            return Ok(());
        }
        let changes = doomed
            .into_iter()
            .map(|(topic, partition)| (topic, partition, None))
            .collect();
        self.write_offsets(log, group, changes, now_ms).await
    }

    /// Drops offsets older than `offsets.retention.minutes` of groups without members
    /// (Kafka expires offsets only once a group is empty), and deletes groups left with no
    /// members and no offsets (Kafka's `cleanupGroupMetadata`; a group whose last offsets
    /// expire now goes at the next check, where Kafka deletes it in the same one). The
    /// tombstones are written by tasks of their own, so a slow replication holds up neither
    /// the caller's loop nor the other groups; returns how many offsets were sent to
    /// expire.
    pub fn expire_offsets(
        &self,
        resolve: &dyn Fn(&str) -> Option<Arc<Partition>>,
        now_ms: i64,
    ) -> usize {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return 0;
        };
        let cutoff = now_ms.saturating_sub(self.config.offsets_retention_ms);
        let mut expired = 0;
        for group in self.offset_group_ids() {
            if self.registry.has_members_or_busy(&group) {
                continue;
            }
            let old = lock(&self.book.offsets).older_than(&group, cutoff);
            if old.is_empty() {
                continue;
            }
            let Some(log) = resolve(&group) else { continue };
            expired += old.len();
            let coordinator = self.clone();
            runtime.spawn(async move {
                let deleted = coordinator.expire_group(&log, &group, cutoff, now_ms);
                if let Err(error) = deleted.await {
                    tracing::warn!(group, %error, "expiring committed offsets failed");
                }
            });
        }
        for group in self.registry.empty_group_ids() {
            if self.has_offsets(&group) {
                continue;
            }
            let Some(log) = resolve(&group) else { continue };
            let coordinator = self.clone();
            runtime
                .spawn(async move { coordinator.delete_empty_group(&log, &group, now_ms).await });
        }
        expired
    }

    /// Deletes `group` if it still has no members and no offsets, decided under the
    /// group's write lock (an offset commit cannot slip in) and its slot lock (nor can a
    /// reload that brings offsets). A transactional offset appended meanwhile can: it
    /// stays, only the group's metadata goes (Kafka keeps the group then).
    async fn delete_empty_group(&self, log: &Partition, group: &str, now_ms: i64) {
        let write_lock = self.group_write_lock(group);
        let _writing = write_lock.lock().await;
        let no_offsets = || !self.has_offsets(group);
        match self
            .registry
            .delete_if(log, group, now_ms, &no_offsets)
            .await
        {
            Ok(true) => tracing::info!(group, "deleted an empty group without offsets"),
            Ok(false) => {}
            Err(error) => {
                // A member joined meanwhile, the group went, or so did the coordinator; the
                // next check tries again where that still applies.
                tracing::debug!(group, %error, "an empty group was not deleted");
            }
        }
    }

    /// Expires `group`'s offsets older than `cutoff`, decided again under the group's
    /// write lock: a commit that was waiting for replication when the expiry was planned
    /// has been applied by then, and its fresh offset must not be deleted.
    async fn expire_group(
        &self,
        log: &Partition,
        group: &str,
        cutoff: i64,
        now_ms: i64,
    ) -> Result<(), CoordinatorError> {
        let target = self.target(log, group)?;
        let write_lock = self.group_write_lock(group);
        let _writing = write_lock.lock().await;
        if self.registry.has_members_or_busy(group) {
            return Ok(());
        }
        let old = lock(&self.book.offsets).older_than(group, cutoff);
        if old.is_empty() {
            return Ok(());
        }
        let changes = old.into_iter().map(|(topic, p)| (topic, p, None)).collect();
        self.write_offsets_locked(target, group, changes, now_ms)
            .await
    }

    /// Committed offsets of `group`: for the listed partitions, or every committed one.
    ///
    /// NOT_COORDINATOR if the group's partition is not loaded, checked under the offsets
    /// lock: an unload clears the loaded mark before it takes that lock to drop the
    /// offsets, so a fetch racing it can never answer "nothing committed" (which would
    /// send consumers to `auto.offset.reset`).
    pub fn fetch_offsets(
        &self,
        group: &str,
        partitions: Option<&[(String, i32)]>,
    ) -> Result<FetchedOffsets, CoordinatorError> {
        let fetched = self.fetch_offsets_stable(group, partitions, false)?;
        Ok(fetched
            .into_iter()
            .map(|(key, value)| (key, value.ok().flatten()))
            .collect())
    }

    /// [`GroupCoordinator::fetch_offsets`], answering `require_stable` as Kafka does: a
    /// partition with offsets of an open transaction is UNSTABLE_OFFSET_COMMIT instead of
    /// its last committed offset (which the transaction may be about to replace). Without
    /// it, the last committed offset; offsets of open transactions never show.
    pub fn fetch_offsets_stable(
        &self,
        group: &str,
        partitions: Option<&[(String, i32)]>,
        require_stable: bool,
    ) -> Result<StableOffsets, CoordinatorError> {
        let offsets = lock(&self.book.offsets);
        if !self.is_loaded(self.partition_for(group)) {
            return Err(CoordinatorError::NotCoordinator);
        }
        let unstable = |topic: &str, partition: i32| {
            require_stable && offsets.has_pending(group, topic, partition)
        };
        let answer = |topic: &str, partition: i32, value: Option<&OffsetValue>| {
            if unstable(topic, partition) {
                Err(CoordinatorError::UnstableOffsetCommit)
            } else {
                Ok(value.cloned())
            }
        };
        Ok(match partitions {
            Some(list) => list
                .iter()
                .map(|(topic, partition)| {
                    let value = offsets.get(group, topic, *partition);
                    (
                        (topic.clone(), *partition),
                        answer(topic, *partition, value),
                    )
                })
                .collect(),
            None => offsets
                .group(group)
                .map(|all| {
                    all.iter()
                        .map(|(key, c)| (key.clone(), answer(&key.0, key.1, Some(&c.value))))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

/// One offset record to write: (topic, partition, value), `None` for a tombstone.
pub(super) type OffsetChange = (String, i32, Option<OffsetValue>);

/// The records of `changes` for `group`, in order: key and value (`None`: tombstone).
pub(super) fn offset_entries(group: &str, changes: &[OffsetChange]) -> Vec<(Bytes, Option<Bytes>)> {
    changes
        .iter()
        .map(|(topic, partition, value)| {
            let key = RecordKey::Offset {
                group: group.to_string(),
                topic: topic.clone(),
                partition: *partition,
            };
            (
                records::encode_key(&key),
                value.as_ref().map(records::encode_offset),
            )
        })
        .collect()
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
            commit_timeout_ms: 5_000,
            consumer: Default::default(),
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

    /// The offsets partition, led by this broker at epoch 0.
    fn open(dir: &std::path::Path) -> Partition {
        let tp = TopicPartition::new("__consumer_offsets", 0);
        let id = uuid::Uuid::from_u128(7);
        let log = Partition::open(
            tp,
            id,
            dir.join("__consumer_offsets-0"),
            LogConfig::default(),
            0,
            0,
            crate::log::LastShutdown::Unclean,
        )
        .unwrap();
        log.become_leader(0).unwrap();
        log
    }

    #[tokio::test]
    async fn a_commit_too_large_for_the_partition_is_refused_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let coordinator = GroupCoordinator::new(config(), GroupConfig::default());
        coordinator.load_now(&log).unwrap();
        let small = LogConfig {
            max_message_bytes: 2_000,
            ..LogConfig::default()
        };
        log.set_config(small);
        let metadata = "m".repeat(400);
        let commits = (0..8).map(|p| commit("t", p, 5, &metadata)).collect();
        let mut commits: Vec<OffsetCommit> = commits;
        commits.push(commit("t", 8, 5, &"x".repeat(5000)));
        let results = coordinator.commit_offsets(&log, "g", commits, 10).await;
        assert!(
            results[..8]
                .iter()
                .all(|r| matches!(r, Err(CoordinatorError::TooLarge(_))))
        );
        // The entry refused on its own keeps its own error.
        assert_eq!(results[8], Err(CoordinatorError::OffsetMetadataTooLarge));
        assert_eq!(log.offsets().unwrap().2, 0, "nothing was appended");
        assert!(!coordinator.has_offsets("g"));
        let fits = coordinator
            .commit_offsets(&log, "g", vec![commit("t", 0, 6, "ok")], 11)
            .await;
        assert_eq!(fits, vec![Ok(())]);
    }

    #[tokio::test]
    async fn serving_needs_the_epoch_the_log_leads_at() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let coordinator = GroupCoordinator::new(config(), GroupConfig::default());
        assert_eq!(
            coordinator.check_serving(0, &log),
            Err(CoordinatorError::LoadInProgress)
        );
        // An unloaded partition's offsets are not "none committed": they are not here.
        assert_eq!(
            coordinator.fetch_offsets("g", None),
            Err(CoordinatorError::NotCoordinator)
        );
        coordinator.load_now(&log).unwrap();
        assert_eq!(coordinator.check_serving(0, &log), Ok(()));
        assert_eq!(coordinator.fetch_offsets("g", None), Ok(vec![]));
        // Led again at a later epoch, not reloaded yet: what memory holds may be stale.
        log.become_follower(1).unwrap();
        log.become_leader(2).unwrap();
        assert_eq!(
            coordinator.check_serving(0, &log),
            Err(CoordinatorError::LoadInProgress)
        );
        log.become_follower(3).unwrap();
        assert_eq!(
            coordinator.check_serving(0, &log),
            Err(CoordinatorError::LoadInProgress)
        );
    }

    #[tokio::test]
    async fn commits_survive_a_reload_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let coordinator = GroupCoordinator::new(config(), GroupConfig::default());
        coordinator.load_now(&log).unwrap();
        let results = coordinator
            .commit_offsets(
                &log,
                "g",
                vec![commit("t", 0, 5, "a"), commit("t", 1, 7, &"x".repeat(5000))],
                10,
            )
            .await;
        assert_eq!(
            results,
            vec![Ok(()), Err(CoordinatorError::OffsetMetadataTooLarge)]
        );
        let results = coordinator
            .commit_offsets(
                &log,
                "g",
                vec![
                    commit("t", 0, 6, "b"),
                    commit("u", 0, 1, ""),
                    commit("u", 1, 2, ""),
                ],
                11,
            )
            .await;
        assert_eq!(results, vec![Ok(()), Ok(()), Ok(())]);
        drop(log);

        let log = open(dir.path());
        let reloaded = GroupCoordinator::new(config(), GroupConfig::default());
        assert!(!reloaded.is_loaded(0));
        assert_eq!(reloaded.load_now(&log).unwrap(), 4);
        assert!(reloaded.is_loaded(0));
        let wanted = [("t".to_string(), 0), ("t".to_string(), 1)];
        let fetched = reloaded.fetch_offsets("g", Some(&wanted)).unwrap();
        assert_eq!(
            fetched[0]
                .1
                .as_ref()
                .map(|v| (v.offset, v.metadata.as_str())),
            Some((6, "b"))
        );
        assert_eq!(fetched[1].1, None);
        assert_eq!(reloaded.fetch_offsets("g", None).unwrap().len(), 3);
        assert!(reloaded.fetch_offsets("other", None).unwrap().is_empty());
    }

    /// The cleaner keeps a batch with only its surviving records, at their original
    /// offsets: a commit of three partitions whose middle one was committed again is left
    /// with offset deltas 0 and 2. A load (failover, restart) must still read both.
    #[tokio::test]
    async fn offsets_in_a_batch_the_cleaner_left_with_gaps_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let compacted = LogConfig {
            compact: true,
            segment_bytes: 400,
            ..LogConfig::default()
        };
        log.set_config(compacted.clone());
        let coordinator = GroupCoordinator::new(config(), GroupConfig::default());
        coordinator.load_now(&log).unwrap();
        let three = (0..3).map(|p| commit("t", p, 5, "first")).collect();
        let results = coordinator.commit_offsets(&log, "g", three, 10).await;
        assert_eq!(results, vec![Ok(()), Ok(()), Ok(())]);
        let again = vec![commit("t", 1, 7, "second")];
        assert_eq!(
            coordinator.commit_offsets(&log, "g", again, 11).await,
            vec![Ok(())]
        );
        // Commits of another group until the segment holding those closes.
        let mut commits = 0;
        while log.log_stats().unwrap().1 < 3 {
            let other = vec![commit("u", 0, commits, "other")];
            assert_eq!(
                coordinator.commit_offsets(&log, "h", other, 12).await,
                vec![Ok(())]
            );
            commits += 1;
            assert!(commits < 100, "the segment never rolled");
        }
        let stop = std::sync::atomic::AtomicBool::new(false);
        let stats = log
            .clean(1_000, crate::log::DEDUPE_BUFFER_BYTES_DEFAULT, &stop)
            .unwrap();
        assert!(stats.records_removed >= 1, "{stats:?}");
        // The first batch now holds offsets 0 and 2 only.
        let read = log.read(0, 1 << 20, true).unwrap();
        let first =
            kafka_protocol::records::RecordBatchDecoder::decode(&mut read.records.clone()).unwrap();
        let offsets: Vec<i64> = first.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [0, 2], "the cleaner left a gap");
        drop(log);

        let log = open(dir.path());
        log.set_config(compacted);
        let reloaded = GroupCoordinator::new(config(), GroupConfig::default());
        reloaded.load_now(&log).unwrap();
        let wanted: Vec<(String, i32)> = (0..3).map(|p| ("t".to_string(), p)).collect();
        let fetched = reloaded.fetch_offsets("g", Some(&wanted)).unwrap();
        let fetched: Vec<_> = fetched
            .iter()
            .map(|(_, value)| value.as_ref().map(|v| (v.offset, v.metadata.clone())))
            .collect();
        let want = [(5, "first"), (7, "second"), (5, "first")];
        let want: Vec<_> = want.map(|(o, m)| Some((o, m.to_string()))).into();
        assert_eq!(fetched, want);
    }

    #[tokio::test]
    async fn load_skips_unreadable_batches_and_records_and_always_finishes() {
        use crate::log::test_support::{batch_around, record_bytes};
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        let coordinator = GroupCoordinator::new(config(), GroupConfig::default());
        coordinator.load_now(&log).unwrap();
        let first = coordinator
            .commit_offsets(&log, "g", vec![commit("t", 0, 5, "a")], 10)
            .await;
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
        assert_eq!(reloaded.load_now(&log).unwrap(), 1);
        assert!(reloaded.is_loaded(0));
        let wanted = [("t".to_string(), 0)];
        let fetched = reloaded.fetch_offsets("g", Some(&wanted)).unwrap();
        // The unreadable value did not erase the offset committed before it.
        assert_eq!(fetched[0].1.as_ref().map(|v| v.offset), Some(5));
        let again = reloaded
            .commit_offsets(&log, "g", vec![commit("t", 0, 9, "b")], 20)
            .await;
        assert_eq!(again, vec![Ok(())]);
        drop(log);
        let log = open(dir.path());
        let third = GroupCoordinator::new(config(), GroupConfig::default());
        assert_eq!(third.load_now(&log).unwrap(), 2);
        let fetched = third.fetch_offsets("g", Some(&wanted)).unwrap();
        assert_eq!(fetched[0].1.as_ref().map(|v| v.offset), Some(9));
    }
}
