//! Following the offsets partitions' leadership: the coordinator of a group moves with
//! the leadership of its `__consumer_offsets` partition (Kafka's `onElection` /
//! `onResignation`).
//!
//! - Elected (the partition leads here at epoch E, not loaded at E): a background load
//!   first waits until the high watermark reaches the log end offset the partition had
//!   when it was elected, so every record the previous leader may have acknowledged is
//!   committed and read; then it replays the partition up to the high watermark on a
//!   blocking thread and installs the groups and offsets at once. Until then the
//!   partition's groups answer COORDINATOR_LOAD_IN_PROGRESS.
//! - Resigned (another leader, or this one at another epoch): the partition is unloaded
//!   at once, and a load still under way for it is abandoned.
//!
//! A record or batch the loader cannot read is skipped and counted: one bad record must
//! not leave every group of the partition loading forever. Only a failing read stops it.
//!
//! Transactions (TxnOffsetCommit): offset records in a transactional batch are pending
//! for the batch's producer id until that producer's marker (a control batch) commits
//! them or aborts them; a transaction still open at the end of the replay stays pending,
//! its marker may come later ([`GroupCoordinator::complete_transaction`]). So that no
//! marker committed during the replay is missed, the tail written meanwhile is replayed
//! again under the offsets lock just before the install (see `load_blocking`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use kafka_protocol::records::Record;

use super::consumer::records::{ConsumerKey, ConsumerValue, decode_value};
use super::coordinator::{CoordinatorError, GroupCoordinator, lock};
use super::offsets::OffsetStore;
use super::records::{self, GroupValue, RecordKey};
use super::registry::{Loaded, from_record};
use crate::replica::committed_replay::replay_committed;
use crate::replica::{Partition, ReplicaError};

/// Loads under way: partition -> the epoch being loaded. An unload removes the entry, and
/// a load whose entry is gone (or names another epoch) installs nothing.
#[derive(Default)]
pub struct Loads {
    pending: Mutex<HashMap<i32, i32>>,
    /// Replays run one at a time, so two loads of one partition never interleave.
    replaying: Mutex<()>,
}

/// One offsets partition as the reconciler sees it.
pub struct LedPartition {
    pub log: Arc<Partition>,
    pub leader_epoch: i32,
}

/// What one replay read: offsets and the latest metadata records of each group.
#[derive(Default)]
struct Replay {
    applied: usize,
    skipped_batches: usize,
    skipped_records: usize,
    offsets: OffsetStore,
    groups: HashMap<String, GroupRecords>,
}

/// One group id's metadata records, latest per key, with where each kind last changed.
#[derive(Default)]
struct GroupRecords {
    /// The classic group's record (`None`: a tombstone) and its offset.
    classic: Option<(Option<GroupValue>, i64)>,
    /// A consumer group's live records.
    consumer: BTreeMap<ConsumerKey, ConsumerValue>,
    /// The offset of its last record, tombstones included.
    consumer_at: Option<i64>,
}

impl GroupRecords {
    /// What the group is: the kind written last when both have live records (one id is
    /// only ever one kind; the switch deletes the other kind's records first).
    fn into_loaded(self, group_id: &str) -> Loaded {
        let consumer_live = !self.consumer.is_empty();
        match (self.classic, self.consumer_at) {
            (Some((Some(value), at)), consumer_at)
                if !consumer_live || consumer_at.is_none_or(|c| c < at) =>
            {
                if consumer_live {
                    tracing::warn!(
                        group = group_id,
                        "classic and consumer group records both live"
                    );
                }
                Loaded::Classic(from_record(group_id, value))
            }
            _ if consumer_live => Loaded::Consumer(self.consumer),
            _ => Loaded::Deleted,
        }
    }
}

/// What became of one record during a load.
enum Replayed {
    Applied,
    /// No key: not a record of ours (Kafka ignores these too).
    Ignored,
    /// A key or value this broker cannot decode.
    Unreadable,
}

impl GroupCoordinator {
    /// Makes the loaded partitions match `led` (partition -> its log and epoch, for every
    /// offsets partition this broker leads now): unloads the others, starts loading the
    /// new ones. Called by the reconciler after each image (on a blocking thread or in
    /// `block_in_place`); loads run as tasks of the current runtime.
    pub fn follow_leadership(&self, led: &HashMap<i32, LedPartition>) {
        let loaded = self.registry.loaded_partitions();
        let pending: Vec<(i32, i32)> = lock(&self.loads.pending)
            .iter()
            .map(|(p, e)| (*p, *e))
            .collect();
        for (partition, epoch) in loaded.iter().chain(&pending) {
            if led.get(partition).map(|l| l.leader_epoch) != Some(*epoch) {
                self.unload(*partition);
            }
        }
        for (partition, led) in led {
            let current = Some(led.leader_epoch);
            if self.registry.loaded_epoch(*partition) == current
                || lock(&self.loads.pending).get(partition).copied() == current
            {
                continue;
            }
            self.start_load(led.log.clone(), led.leader_epoch);
        }
    }

    /// Resigns `partition`: groups and offsets leave memory, timers stop, parked requests
    /// answer NOT_COORDINATOR, a load under way is abandoned.
    pub fn unload(&self, partition: i32) {
        lock(&self.loads.pending).remove(&partition);
        let groups = self.registry.unload(partition);
        let offsets_partitions = self.partition_count();
        lock(&self.book.offsets).remove_partition(partition, |group| {
            super::offsets::partition_for(group, offsets_partitions) == partition
        });
        tracing::info!(
            partition,
            groups,
            "unloaded offsets partition: no longer its leader"
        );
    }

    /// Starts loading `log` at `leader_epoch` in the background.
    fn start_load(&self, log: Arc<Partition>, leader_epoch: i32) {
        let partition = log.tp.partition;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(partition, "no runtime to load the offsets partition on");
            return;
        };
        lock(&self.loads.pending).insert(partition, leader_epoch);
        let coordinator = self.clone();
        runtime.spawn(async move {
            if let Err(error) = coordinator.load_when_committed(log, leader_epoch).await {
                tracing::warn!(partition, leader_epoch, %error, "offsets partition not loaded");
                let mut pending = lock(&coordinator.loads.pending);
                if pending.get(&partition) == Some(&leader_epoch) {
                    pending.remove(&partition);
                }
            }
        });
    }

    fn still_wanted(&self, partition: i32, leader_epoch: i32) -> bool {
        lock(&self.loads.pending).get(&partition) == Some(&leader_epoch)
    }

    /// Waits for the high watermark to cover the log as it was at election, then replays.
    async fn load_when_committed(
        &self,
        log: Arc<Partition>,
        leader_epoch: i32,
    ) -> Result<(), CoordinatorError> {
        let partition = log.tp.partition;
        let storage = |e: ReplicaError| CoordinatorError::Storage(e.to_string());
        let (_, _, log_end) = log.offsets().map_err(storage)?;
        loop {
            if !self.still_wanted(partition, leader_epoch) {
                return Ok(());
            }
            let deadline = tokio::time::Instant::now() + self.commit_timeout();
            match log
                .wait_high_watermark(log_end, leader_epoch, deadline)
                .await
            {
                Ok(()) => break,
                Err(ReplicaError::ReplicationTimedOut) => {
                    tracing::info!(
                        partition,
                        leader_epoch,
                        log_end,
                        "offsets partition waits for its high watermark before loading"
                    );
                }
                Err(error) => return Err(super::writer::write_error(&error)),
            }
        }
        let coordinator = self.clone();
        let replayed =
            tokio::task::spawn_blocking(move || coordinator.load_blocking(&log, leader_epoch))
                .await
                .map_err(|error| CoordinatorError::Storage(format!("load task: {error}")))?;
        replayed.map(drop)
    }

    /// Replays the partition up to its high watermark and installs what it read, if the
    /// load is still wanted; returns how many records were applied.
    pub fn load_blocking(
        &self,
        log: &Partition,
        leader_epoch: i32,
    ) -> Result<usize, CoordinatorError> {
        let partition = log.tp.partition;
        let _one_at_a_time = lock(&self.loads.replaying);
        if !self.still_wanted(partition, leader_epoch) {
            return Ok(0);
        }
        let mut replay = Replay::default();
        let replayed_to = replay_range(log, 0, &mut replay)?;
        let now = crate::types::now_ms();
        // Installed under the pending lock: an unload either ran before (nothing is
        // installed) or runs after (and removes what was).
        let mut pending = lock(&self.loads.pending);
        if pending.get(&partition) != Some(&leader_epoch) {
            return Ok(0);
        }
        {
            // Transaction markers may have committed while the replay ran, and their
            // `complete_transaction` found nothing installed. Under the offsets lock (which
            // `complete_transaction` takes) the tail up to the high watermark is replayed
            // too: every marker is then either read here or completed after the install.
            // Only markers are written meanwhile (writes need the partition loaded), so
            // the tail is short.
            let mut offsets = lock(&self.book.offsets);
            replay_range(log, replayed_to, &mut replay)?;
            offsets.install(partition, std::mem::take(&mut replay.offsets));
        }
        // Only once installed: a failed tail replay leaves the load pending, so a retry
        // or the next image can still load it.
        pending.remove(&partition);
        let applied = replay.applied;
        let groups = replay
            .groups
            .into_iter()
            .map(|(group_id, records)| {
                let loaded = records.into_loaded(&group_id);
                (group_id, loaded)
            })
            .collect();
        self.registry.install(partition, leader_epoch, groups, now);
        drop(pending);
        tracing::info!(
            partition,
            leader_epoch,
            records = applied,
            "loaded offsets partition"
        );
        Ok(applied)
    }
}

#[cfg(test)]
impl GroupCoordinator {
    /// Loads `log` now, on this thread, at the epoch it leads with (tests).
    pub fn load_now(&self, log: &Partition) -> Result<usize, CoordinatorError> {
        let (leader_epoch, _) = log.leadership();
        lock(&self.loads.pending).insert(log.tp.partition, leader_epoch);
        self.load_blocking(log, leader_epoch)
    }
}

/// Reads the partition from `from` (or its start, if later) to the high watermark into
/// `replay`; returns the offset it stopped at.
fn replay_range(log: &Partition, from: i64, replay: &mut Replay) -> Result<i64, CoordinatorError> {
    let end = replay_committed(
        log,
        from,
        &mut |record| match apply_record(record, replay) {
            Replayed::Applied => replay.applied += 1,
            Replayed::Ignored => {}
            Replayed::Unreadable => replay.skipped_records += 1,
        },
    )
    .map_err(|e| CoordinatorError::Storage(e.to_string()))?;
    replay.skipped_batches += end.skipped_batches;
    if replay.skipped_batches + replay.skipped_records > 0 {
        tracing::warn!(
            partition = log.tp.partition,
            skipped_batches = replay.skipped_batches,
            skipped_records = replay.skipped_records,
            stopped_at = end.next_offset,
            "skipped unreadable data while loading the offsets partition"
        );
    }
    Ok(end.next_offset)
}

/// Applies one record to the replay. A value that cannot be decoded is skipped, never
/// taken for a tombstone: that would drop the offset committed before it.
fn apply_record(record: &Record, replay: &mut Replay) -> Replayed {
    if record.control {
        return apply_marker(record, replay);
    }
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
            match value {
                // Kafka's replay: a transactional offset is pending for its producer; a
                // tombstone (never transactional from us) deletes either way.
                Some(value) if record.transactional && record.producer_id >= 0 => {
                    let producer_id = record.producer_id;
                    let at = record.offset;
                    replay
                        .offsets
                        .add_pending(producer_id, &group, &topic, partition, value, at);
                }
                value => replay
                    .offsets
                    .apply(&group, &topic, partition, value, record.offset),
            }
            Replayed::Applied
        }
        RecordKey::Group { group } => {
            let value = match record.value.as_ref().map(|v| records::decode_group(v)) {
                None => None,
                Some(Ok(value)) => Some(value),
                Some(Err(_)) => return Replayed::Unreadable,
            };
            replay.groups.entry(group).or_default().classic = Some((value, record.offset));
            Replayed::Applied
        }
        RecordKey::Consumer { group, key } => {
            let value = match record.value.as_ref().map(|v| decode_value(&key, v)) {
                None => None,
                Some(Ok(value)) => Some(value),
                Some(Err(_)) => return Replayed::Unreadable,
            };
            let records = replay.groups.entry(group).or_default();
            records.consumer_at = Some(record.offset);
            match value {
                Some(value) => records.consumer.insert(key, value),
                None => records.consumer.remove(&key),
            };
            Replayed::Applied
        }
    }
}

/// Replays decoded records, in log order, into a fresh store: the loader's rules without
/// a log (the simulation's failover).
#[cfg(test)]
pub(super) fn replay_records(records: &[Record]) -> OffsetStore {
    let mut replay = Replay::default();
    for record in records {
        apply_record(record, &mut replay);
    }
    replay.offsets
}

/// Control record types (the key's second int16), as Kafka's `ControlRecordType`.
const CONTROL_ABORT: i16 = 0;
const CONTROL_COMMIT: i16 = 1;

/// A control record: a transaction marker ends its producer's open transaction (every
/// group replayed here lives in this partition). Other control types are not ours.
fn apply_marker(record: &Record, replay: &mut Replay) -> Replayed {
    let Some(key) = record.key.as_ref() else {
        return Replayed::Unreadable;
    };
    let Some(kind) = key.get(2..4).map(|b| i16::from_be_bytes([b[0], b[1]])) else {
        return Replayed::Unreadable;
    };
    let committed = match kind {
        CONTROL_COMMIT => true,
        CONTROL_ABORT => false,
        _ => return Replayed::Ignored,
    };
    replay
        .offsets
        .complete(record.producer_id, committed, |_| true, record.offset);
    Replayed::Applied
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::group::consumer::{
        Assignment, HeartbeatAnswer, HeartbeatRequest, MemberState, TopicInfo, TopicSource,
    };
    use crate::group::records::OffsetValue;
    use crate::group::{
        CoordinatorConfig, GroupConfig, GroupError, GroupState, JoinRequest, OffsetCommit,
        SyncRequest,
    };
    use crate::log::LogConfig;
    use crate::types::TopicPartition;

    const NOW_MS: i64 = 1_000_000;
    const HANG_GUARD: Duration = Duration::from_secs(60);

    /// An offsets partition in a temporary directory, led here at epoch 0.
    fn led_log() -> (tempfile::TempDir, Arc<Partition>) {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        log.become_leader(0).unwrap();
        (dir, log)
    }

    fn open(dir: &std::path::Path) -> Arc<Partition> {
        let tp = TopicPartition::new("__consumer_offsets", 0);
        let id = uuid::Uuid::from_u128(7);
        let path = dir.join("__consumer_offsets-0");
        let last_shutdown = crate::log::LastShutdown::Unclean;
        let log = Partition::open(tp, id, path, LogConfig::default(), 0, NOW_MS, last_shutdown);
        Arc::new(log.unwrap())
    }

    fn coordinator() -> GroupCoordinator {
        let config = CoordinatorConfig {
            offsets_partitions: 1,
            offsets_retention_ms: 60_000,
            commit_timeout_ms: 5_000,
            consumer: Default::default(),
        };
        let group = GroupConfig {
            initial_rebalance_delay_ms: 0,
            ..GroupConfig::default()
        };
        GroupCoordinator::new(config, group)
    }

    fn led(log: &Arc<Partition>) -> HashMap<i32, LedPartition> {
        let (leader_epoch, leads) = log.leadership();
        assert!(leads);
        let entry = LedPartition {
            log: log.clone(),
            leader_epoch,
        };
        HashMap::from([(0, entry)])
    }

    async fn until_loaded(coordinator: &GroupCoordinator, epoch: i32) {
        let loaded = async {
            while coordinator.registry.loaded_epoch(0) != Some(epoch) {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(HANG_GUARD, loaded)
            .await
            .expect("the load never finished");
    }

    fn join(member_id: &str) -> JoinRequest {
        JoinRequest {
            member_id: member_id.to_string(),
            group_instance_id: None,
            client_id: "client".to_string(),
            client_host: "/127.0.0.1".to_string(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 60_000,
            protocol_type: "consumer".to_string(),
            protocols: vec![("range".to_string(), vec![1])],
            require_known_member_id: false,
            supports_skip_assignment: false,
            reason: None,
        }
    }

    fn commit(offset: i64) -> Vec<OffsetCommit> {
        let value = OffsetValue {
            offset,
            leader_epoch: 0,
            metadata: String::new(),
            commit_timestamp_ms: NOW_MS,
        };
        vec![OffsetCommit {
            topic: "t".into(),
            partition: 0,
            value,
        }]
    }

    fn committed(coordinator: &GroupCoordinator) -> Option<i64> {
        let wanted = [("t".to_string(), 0)];
        // Unloaded (NOT_COORDINATOR) reads as nothing here: memory holds no offsets.
        let found = coordinator.fetch_offsets("g", Some(&wanted)).ok()?;
        found[0].1.as_ref().map(|value| value.offset)
    }

    /// A Stable one-member group "g" with offset 5 committed; returns the member id.
    async fn stable_group(coordinator: &GroupCoordinator, log: &Partition) -> String {
        let joined = coordinator.registry.join(log, "g", join(""), NOW_MS).await;
        assert_eq!(joined.error, None);
        let sync = SyncRequest {
            member_id: joined.member_id.clone(),
            group_instance_id: None,
            generation_id: joined.generation_id,
            protocol_type: None,
            protocol_name: None,
            assignments: vec![(joined.member_id.clone(), b"a".to_vec())],
        };
        let synced = coordinator.registry.sync(log, "g", sync, NOW_MS).await;
        assert_eq!(synced.error, None);
        let results = coordinator
            .commit_offsets(log, "g", commit(5), NOW_MS)
            .await;
        assert_eq!(results, vec![Ok(())]);
        joined.member_id
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn losing_leadership_unloads_and_regaining_it_reloads() {
        let (_dir, log) = led_log();
        let coordinator = coordinator();
        coordinator.follow_leadership(&led(&log));
        until_loaded(&coordinator, 0).await;
        let member = stable_group(&coordinator, &log).await;
        assert_eq!(committed(&coordinator), Some(5));
        // A second member's join parks until the first rejoins (or the rebalance times out).
        let parked = tokio::spawn({
            let (coordinator, log) = (coordinator.clone(), log.clone());
            async move { coordinator.registry.join(&log, "g", join(""), NOW_MS).await }
        });
        let rebalancing = async {
            loop {
                let state = coordinator
                    .registry
                    .with_group("g", |g| g.map(|g| g.state()));
                if state.await == Some(GroupState::PreparingRebalance) {
                    return;
                }
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(HANG_GUARD, rebalancing).await.unwrap();

        // Another broker leads now.
        log.become_follower(1).unwrap();
        coordinator.follow_leadership(&HashMap::new());
        let answer = tokio::time::timeout(HANG_GUARD, parked)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer.error, Some(GroupError::NotCoordinator));
        assert!(!coordinator.is_loaded(0));
        assert_eq!(committed(&coordinator), None, "offsets left memory");
        assert!(!coordinator.has_offsets("g"));
        let beat = coordinator
            .registry
            .heartbeat("g", &member, None, 1, NOW_MS);
        assert_eq!(beat.await, Err(GroupError::NotCoordinator));
        let rejoin = coordinator.registry.join(&log, "g", join(""), NOW_MS).await;
        assert_eq!(rejoin.error, Some(GroupError::NotCoordinator));
        let refused = coordinator
            .commit_offsets(&log, "g", commit(9), NOW_MS)
            .await;
        assert_eq!(refused, vec![Err(CoordinatorError::NotCoordinator)]);
        assert_eq!(
            coordinator
                .registry
                .tick_due(&|_| Some(log.clone()), i64::MAX),
            None,
            "the group's timers stopped"
        );

        // Leadership comes back at a later epoch: the partition is replayed.
        log.become_leader(2).unwrap();
        coordinator.follow_leadership(&led(&log));
        until_loaded(&coordinator, 2).await;
        assert_eq!(committed(&coordinator), Some(5));
        let state = coordinator
            .registry
            .with_group("g", |g| g.map(|g| g.state()));
        assert_eq!(state.await, Some(GroupState::Stable));
        let beat = coordinator
            .registry
            .heartbeat("g", &member, None, 1, NOW_MS);
        assert_eq!(beat.await, Ok(()));
        let again = coordinator
            .commit_offsets(&log, "g", commit(7), NOW_MS)
            .await;
        assert_eq!(again, vec![Ok(())]);
        assert_eq!(committed(&coordinator), Some(7));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_epoch_on_the_same_leader_reloads_what_the_log_holds() {
        let (_dir, log) = led_log();
        let coordinator = coordinator();
        coordinator.follow_leadership(&led(&log));
        until_loaded(&coordinator, 0).await;
        stable_group(&coordinator, &log).await;
        // Leadership moved away and back between two images this node applied: the
        // coordinator must not keep serving (or writing under) the state of epoch 0.
        log.become_leader(3).unwrap();
        let stale = coordinator
            .commit_offsets(&log, "g", commit(6), NOW_MS)
            .await;
        assert_eq!(stale, vec![Err(CoordinatorError::NotCoordinator)]);
        assert_eq!(
            committed(&coordinator),
            Some(5),
            "a refused write changes nothing"
        );
        coordinator.follow_leadership(&led(&log));
        until_loaded(&coordinator, 3).await;
        assert_eq!(committed(&coordinator), Some(5));
        let results = coordinator
            .commit_offsets(&log, "g", commit(8), NOW_MS)
            .await;
        assert_eq!(results, vec![Ok(())]);
        assert_eq!(committed(&coordinator), Some(8));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_partition_serves_nothing_until_its_load_finished() {
        let (_dir, log) = led_log();
        let coordinator = coordinator();
        // Registered as loading, not loaded: groups of the partition are not served.
        lock(&coordinator.loads.pending).insert(0, 0);
        assert!(!coordinator.is_loaded(0));
        let joined = coordinator.registry.join(&log, "g", join(""), NOW_MS).await;
        assert_eq!(joined.error, Some(GroupError::NotCoordinator));
        let refused = coordinator
            .commit_offsets(&log, "g", commit(1), NOW_MS)
            .await;
        assert_eq!(refused, vec![Err(CoordinatorError::NotCoordinator)]);
        // Unloaded before its replay ran: the replay installs nothing.
        coordinator.unload(0);
        assert_eq!(coordinator.load_blocking(&log, 0), Ok(0));
        assert!(!coordinator.is_loaded(0));
    }

    /// One topic "t" of four partitions, for consumer groups.
    struct OneTopic;

    const TOPIC_ID: uuid::Uuid = uuid::Uuid::from_u128(9);

    impl TopicSource for OneTopic {
        fn lookup(&self, name: &str) -> Option<TopicInfo> {
            let info = TopicInfo {
                id: TOPIC_ID,
                partitions: 4,
            };
            (name == "t").then_some(info)
        }

        fn names(&self) -> Vec<String> {
            vec!["t".into()]
        }

        fn version(&self) -> i64 {
            0
        }
    }

    fn beat(member_id: &str, epoch: i32, owned: &[i32]) -> HeartbeatRequest {
        let owned = Assignment::from([(TOPIC_ID, owned.iter().copied().collect())]);
        HeartbeatRequest {
            member_id: member_id.into(),
            member_epoch: epoch,
            rebalance_timeout_ms: if epoch == 0 { 5_000 } else { -1 },
            subscribed_topic_names: (epoch == 0).then(|| vec!["t".to_string()]),
            owned: Some(if epoch == 0 { Assignment::new() } else { owned }),
            client_makes_member_id: true,
            ..HeartbeatRequest::default()
        }
    }

    async fn consumer_beat(
        coordinator: &GroupCoordinator,
        log: &Partition,
        request: HeartbeatRequest,
    ) -> Result<HeartbeatAnswer, GroupError> {
        let registry = &coordinator.registry;
        registry
            .consumer_heartbeat(log, "cg", request, &OneTopic, NOW_MS)
            .await
    }

    type MemberView = (String, i32, i32, MemberState, Assignment, Assignment);

    /// The group's epochs and each member's epochs, state and partitions.
    async fn consumer_view(coordinator: &GroupCoordinator) -> Option<(i32, i32, Vec<MemberView>)> {
        let registry = &coordinator.registry;
        registry
            .with_consumer_group("cg", |group| {
                let group = group?;
                let members = (group.members())
                    .map(|m| {
                        let (epochs, state) = ((m.member_epoch, m.previous_epoch), m.state);
                        let partitions = (m.assigned.clone(), m.pending_revocation.clone());
                        (
                            m.member_id.clone(),
                            epochs.0,
                            epochs.1,
                            state,
                            partitions.0,
                            partitions.1,
                        )
                    })
                    .collect();
                Some((group.group_epoch(), group.target_epoch(), members))
            })
            .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_consumer_group_reloads_from_its_records() {
        let (_dir, log) = led_log();
        let first = coordinator();
        first.load_now(&log).unwrap();
        let a = consumer_beat(&first, &log, beat("a", 0, &[]))
            .await
            .unwrap();
        assert_eq!(a.member_epoch, 1);
        let b = consumer_beat(&first, &log, beat("b", 0, &[]))
            .await
            .unwrap();
        assert_eq!(b.member_epoch, 2);
        // a is told to give up two partitions and stays at epoch 1 meanwhile.
        let a = consumer_beat(&first, &log, beat("a", 1, &[0, 1, 2, 3])).await;
        let kept: Vec<i32> = a.unwrap().assignment.unwrap()[&TOPIC_ID]
            .iter()
            .copied()
            .collect();
        assert_eq!(kept.len(), 2);
        let before = consumer_view(&first).await;
        let members = &before.as_ref().unwrap().2;
        assert_eq!(members[0].3, MemberState::UnrevokedPartitions);
        assert_eq!(members[1].3, MemberState::UnreleasedPartitions);

        let second = coordinator();
        second.load_now(&log).unwrap();
        assert_eq!(consumer_view(&second).await, before);
        let a = consumer_beat(&second, &log, beat("a", 1, &kept))
            .await
            .unwrap();
        assert_eq!(a.member_epoch, 2);
        let b = consumer_beat(&second, &log, beat("b", 2, &[]))
            .await
            .unwrap();
        let released = b.assignment.unwrap()[&TOPIC_ID].clone();
        assert_eq!(released.len(), 2);
        assert!(kept.iter().all(|p| !released.contains(p)));
        for member in ["a", "b"] {
            consumer_beat(&second, &log, beat(member, -1, &[]))
                .await
                .unwrap();
        }

        // Its id taken by a classic group: the consumer group's records are deleted.
        let third = coordinator();
        third.load_now(&log).unwrap();
        let view = consumer_view(&third).await.unwrap();
        assert_eq!(
            (view.0, view.2.len()),
            (4, 0),
            "both left: epoch 4, no members"
        );
        let joined = third.registry.join(&log, "cg", join(""), NOW_MS).await;
        assert_eq!(joined.error, None);
        let fourth = coordinator();
        fourth.load_now(&log).unwrap();
        assert_eq!(consumer_view(&fourth).await, None);
    }

    /// A group's own session length (its GROUP config) is what a heartbeat and a load
    /// start its members' sessions at; a coordinator without the source uses the broker's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_groups_own_session_length_starts_its_sessions_at_a_heartbeat_and_a_load() {
        const OWN_MS: i64 = 50_000;
        const BROKER_MS: i64 = 45_000;
        let (_dir, log) = led_log();
        let with_source = || {
            let coordinator = coordinator();
            let own = BTreeMap::from([(
                "consumer.session.timeout.ms".to_string(),
                OWN_MS.to_string(),
            )]);
            let source = move |group: &str| (group == "cg").then(|| own.clone());
            coordinator
                .registry
                .set_group_config_source(Box::new(source));
            coordinator
        };
        let deadline = |coordinator: &GroupCoordinator| {
            let registry = coordinator.registry.clone();
            async move {
                let view = |group: Option<&crate::group::consumer::ConsumerGroup>| {
                    group?.next_deadline_ms()
                };
                registry.with_consumer_group("cg", view).await.unwrap()
            }
        };
        let first = with_source();
        first.load_now(&log).unwrap();
        consumer_beat(&first, &log, beat("a", 0, &[]))
            .await
            .unwrap();
        assert_eq!(deadline(&first).await, NOW_MS + OWN_MS);

        let loaded_from = crate::types::now_ms();
        let second = with_source();
        second.load_now(&log).unwrap();
        let session = deadline(&second).await - loaded_from;
        assert!((OWN_MS..OWN_MS + 5_000).contains(&session), "{session}");
        let third = coordinator();
        third.load_now(&log).unwrap();
        let session = deadline(&third).await - loaded_from;
        assert!((BROKER_MS..OWN_MS).contains(&session), "{session}");
    }

    /// An append that fails puts the group back to what its records say: the member that
    /// was joining is not there, and the one that was there is as it was.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_consumer_group_append_reverts_to_the_records() {
        let (_dir, log) = led_log();
        let coordinator = coordinator();
        coordinator.load_now(&log).unwrap();
        let a = consumer_beat(&coordinator, &log, beat("a", 0, &[]))
            .await
            .unwrap();
        assert_eq!(a.member_epoch, 1);
        let before = consumer_view(&coordinator).await;
        // The log leads at a new epoch this coordinator has not loaded: appends fail.
        log.become_leader(2).unwrap();
        let refused = consumer_beat(&coordinator, &log, beat("b", 0, &[])).await;
        assert_eq!(refused, Err(GroupError::NotCoordinator));
        assert_eq!(consumer_view(&coordinator).await, before);
        let unchanged = consumer_beat(&coordinator, &log, beat("a", 1, &[0, 1, 2, 3])).await;
        assert_eq!(unchanged.map(|answer| answer.member_epoch), Ok(1));
    }

    /// Kafka's cleanup: a group with no members and no offsets is deleted by the offsets
    /// expiry (and stays deleted across a reload); one with members or offsets stays.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_expiry_deletes_empty_groups_without_offsets() {
        let (_dir, log) = led_log();
        let serving = coordinator();
        serving.load_now(&log).unwrap();
        stable_group(&serving, &log).await;
        consumer_beat(&serving, &log, beat("a", 0, &[]))
            .await
            .unwrap();
        consumer_beat(&serving, &log, beat("a", -1, &[]))
            .await
            .unwrap();
        assert!(consumer_view(&serving).await.is_some());
        // Nothing is old enough to expire; "cg" is empty and never committed.
        let resolve = |_: &str| Some(log.clone());
        assert_eq!(serving.expire_offsets(&resolve, NOW_MS), 0);
        let gone = async {
            while consumer_view(&serving).await.is_some() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(HANG_GUARD, gone)
            .await
            .expect("never deleted");
        let stable = serving
            .registry
            .with_group("g", |g| g.map(|g| g.state()))
            .await;
        assert_eq!(stable, Some(GroupState::Stable));
        let reloaded = coordinator();
        reloaded.load_now(&log).unwrap();
        assert_eq!(consumer_view(&reloaded).await, None);
        assert_eq!(committed(&reloaded), Some(5));
    }
}
