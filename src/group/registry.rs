//! The async shell around the group state machines: per group id a classic [`Group`] or
//! a KIP-848 [`ConsumerGroup`], parked JoinGroup/SyncGroup requests as oneshot channels,
//! and the classic group's effects carried out in order (metadata written to
//! `__consumer_offsets` before the answers that depend on it). A consumer group's step
//! writes the records it changed, and its answer waits until they are committed.
//!
//! Locking: each group lives in its own slot behind its own async mutex, held across the
//! group's state machine step and the writes that step asks for. The registry-wide map
//! lock is held only to find (or create, or drop) a slot, never across a write, so a
//! slow append for one group stalls only that group's requests; the others' requests,
//! heartbeats and timers go on. The slot lock is async so requests waiting behind a slow
//! write park their task instead of blocking a runtime worker thread.
//!
//! A slot that was dropped from the map (group deleted) or replaced (group reloaded) is
//! stale: a request that was waiting on it finds out after locking it (the map no longer
//! points to it) and looks again, so a stale slot never brings a group back.
//!
//! Leadership: the registry serves only groups of offsets partitions that are loaded here
//! (`Slots::loaded`, partition -> the leader epoch it was loaded at). The check and the
//! slot lookup share one lock, so once [`GroupRegistry::unload`] has run no request can
//! find or create a group of that partition; requests that already held a slot find it
//! stale and answer NOT_COORDINATOR, and parked JoinGroup/SyncGroup requests are answered
//! NOT_COORDINATOR (Kafka's `onResignation`).
//!
//! Writes: every `Persist`/`Tombstone` is appended and awaited until committed (the ISR
//! has it) before the answers that depend on it go out; a write that fails turns those
//! answers into the write's error.
//!
//! A consumer group's records are appended under the slot lock; an append that fails
//! puts the group back to what its records say (so memory never runs ahead of the log),
//! while one that was appended and only timed out waiting for replication stays: the log
//! holds it and a reload reads it. Until such a write is known committed, every request
//! of the group waits for it first (`unconfirmed`), so no answer depends on records that
//! a failover could still take back.
//!
//! Timers are event-driven: every `WakeAt` lands in `deadlines`, and the coordinator's
//! timer task sleeps until the earliest one (or until a new earlier one arrives). Due
//! ticks run as their own tasks, so a group stuck in a slow write delays no other
//! group's tick.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, OwnedMutexGuard, oneshot, watch};

use super::consumer::records::{ConsumerKey, ConsumerValue, encode_value};
use super::consumer::{
    Change, ConsumerGroup, ConsumerGroupConfig, HeartbeatAnswer, HeartbeatRequest, TopicSource,
};
use super::offsets::partition_for;
use super::records::{self, GroupValue, MemberValue, RecordKey};
use super::writer::{self, WriteTarget};
use super::{
    CoordinatorError, Effect, Group, GroupConfig, GroupError, GroupSnapshot, JoinOutcome,
    JoinRequest, MemberSnapshot, RequestToken, SyncOutcome, SyncRequest,
};
use crate::replica::Partition;

enum Waiter {
    Join(oneshot::Sender<JoinOutcome>),
    Sync(oneshot::Sender<SyncOutcome>),
}

/// One group's state and its parked requests. A group id is a classic group (`group`) or
/// a KIP-848 consumer group (`consumer`), never both; a slot with neither was created by a
/// join that has not run yet (or its group was just deleted).
struct SlotState {
    group: Option<Group>,
    consumer: Option<ConsumerGroup>,
    waiters: HashMap<RequestToken, Waiter>,
    /// The leader epoch the group's partition was loaded at when this slot was made: its
    /// records go out under this epoch only. A slot outlives a reload only as a stale one,
    /// and a stale slot's write must be refused, not land in the log the new load read.
    leader_epoch: i32,
    /// The end offset of the consumer group's last write while it is not known to be
    /// committed (its wait timed out).
    unconfirmed: Option<i64>,
}

impl SlotState {
    fn new(group: Option<Group>, leader_epoch: i32) -> Slot {
        Self::with(group, None, leader_epoch)
    }

    fn with(group: Option<Group>, consumer: Option<ConsumerGroup>, leader_epoch: i32) -> Slot {
        let state = SlotState {
            group,
            consumer,
            waiters: HashMap::new(),
            leader_epoch,
            unconfirmed: None,
        };
        Arc::new(tokio::sync::Mutex::new(state))
    }
}

type Slot = Arc<tokio::sync::Mutex<SlotState>>;

/// A locked, current (not stale) slot of one group.
struct Locked {
    slot: Slot,
    state: OwnedMutexGuard<SlotState>,
}

/// The groups and the offsets partitions they may live in, behind one lock so that a
/// partition's unload and a request's lookup never interleave.
#[derive(Default)]
struct Slots {
    groups: HashMap<String, Slot>,
    /// Offsets partition -> the leader epoch its records were replayed at.
    loaded: HashMap<i32, i32>,
}

/// A group as whichever kind it is.
#[derive(Clone, Copy)]
pub enum AnyGroup<'a> {
    Classic(&'a Group),
    Consumer(&'a ConsumerGroup),
}

/// Where the registry's groups live and how long their writes may wait.
#[derive(Clone, Copy, Debug)]
pub struct RegistryConfig {
    pub group: GroupConfig,
    /// `offsets.topic.num.partitions`: which partition a group id belongs to.
    pub offsets_partitions: i32,
    /// `offsets.commit.timeout.ms`: how long a metadata write waits for replication.
    pub write_timeout: Duration,
    pub consumer: ConsumerGroupConfig,
}

/// What a replayed partition holds for one group id: a classic group, a consumer group's
/// records, or nothing (its last record was a tombstone).
pub enum Loaded {
    Classic(GroupSnapshot),
    Consumer(BTreeMap<ConsumerKey, ConsumerValue>),
    Deleted,
}

struct Shared {
    config: GroupConfig,
    consumer: ConsumerGroupConfig,
    offsets_partitions: i32,
    write_timeout: Duration,
    slots: Mutex<Slots>,
    /// Group id -> when it next wants a tick.
    deadlines: Mutex<HashMap<String, i64>>,
    next_token: AtomicU64,
    /// Wakes the timer task when a deadline earlier than the ones it sleeps on appears.
    timer: Notify,
    /// Set when the broker stops serving clients (shutdown): parked JoinGroup/SyncGroup
    /// requests answer NOT_COORDINATOR at once instead of holding their connection, and so
    /// the shutdown, until the rebalance ends.
    serving_ended: watch::Sender<bool>,
    /// A consumer group's own configs (GROUP config resources), as the metadata image
    /// holds them now; set once by the broker, none until then (tests).
    group_configs: std::sync::OnceLock<GroupConfigSource>,
}

/// Looks up a group's own configs (`group::consumer::group_configs`) by group id.
pub type GroupConfigSource = Box<dyn Fn(&str) -> Option<BTreeMap<String, String>> + Send + Sync>;

pub struct GroupRegistry {
    shared: Arc<Shared>,
}

/// Std mutexes here guard plain maps for a lookup or an insert, never across an await or
/// a write; a panic while one was held leaves the map consistent, so poison is ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl GroupRegistry {
    pub fn new(config: RegistryConfig) -> GroupRegistry {
        GroupRegistry {
            shared: Arc::new(Shared {
                config: config.group,
                consumer: config.consumer,
                offsets_partitions: config.offsets_partitions,
                write_timeout: config.write_timeout,
                slots: Mutex::new(Slots::default()),
                deadlines: Mutex::new(HashMap::new()),
                next_token: AtomicU64::new(0),
                timer: Notify::new(),
                serving_ended: watch::Sender::new(false),
                group_configs: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Where consumer groups' own configs are read from: at every heartbeat, at a load
    /// (the sessions it starts), at a revert and at a failed tick's retry. Set once; a
    /// second source is ignored.
    pub fn set_group_config_source(&self, source: GroupConfigSource) {
        let _ = self.shared.group_configs.set(source);
    }

    /// Answers every parked JoinGroup/SyncGroup, now and later, NOT_COORDINATOR: the broker
    /// no longer serves clients, and its connections close once they answer. The groups
    /// stay as they are (their state is in the log); a client finds the next coordinator
    /// as after a resignation.
    pub fn stop_serving(&self) {
        self.shared.serving_ended.send_replace(true);
    }

    /// Resolves when a new deadline was set (the timer task then recomputes its sleep).
    pub async fn deadline_changed(&self) {
        self.shared.timer.notified().await
    }

    /// The offsets partition `group_id` lives in.
    pub fn partition_for(&self, group_id: &str) -> i32 {
        partition_for(group_id, self.shared.offsets_partitions)
    }

    /// The leader epoch `partition` was loaded at, if its groups are served here.
    pub fn loaded_epoch(&self, partition: i32) -> Option<i32> {
        lock(&self.shared.slots).loaded.get(&partition).copied()
    }

    /// Every loaded partition with its epoch (the reconciler compares them to the image).
    pub fn loaded_partitions(&self) -> Vec<(i32, i32)> {
        let slots = lock(&self.shared.slots);
        slots.loaded.iter().map(|(p, e)| (*p, *e)).collect()
    }

    /// Installs a replayed partition: its groups (from their latest metadata records;
    /// `None` for a group whose last record is a tombstone) and the epoch its writes go
    /// out at. Groups and the loaded mark appear together, so no request sees the one
    /// without the other; deadlines are set after, so a timer that fires finds the
    /// partition loaded. A fresh slot replaces any old one, which a request still
    /// holding it then finds stale.
    pub fn install(
        &self,
        partition: i32,
        leader_epoch: i32,
        groups: Vec<(String, Loaded)>,
        now_ms: i64,
    ) {
        let mut deadlines = Vec::new();
        {
            let mut slots = lock(&self.shared.slots);
            for (group_id, loaded) in groups {
                let (classic, consumer) = match loaded {
                    Loaded::Deleted => {
                        slots.groups.remove(&group_id);
                        continue;
                    }
                    Loaded::Classic(snapshot) => {
                        (Some(Group::from_snapshot(snapshot, now_ms)), None)
                    }
                    Loaded::Consumer(records) => {
                        // Sessions start again at the load, at the group's own length.
                        let config = &self.shared.consumer_config(&group_id);
                        let group = ConsumerGroup::restore(&group_id, records, now_ms, config);
                        (None, Some(group))
                    }
                };
                let deadline = match (&classic, &consumer) {
                    (Some(group), _) => group.next_deadline_ms(),
                    (_, Some(group)) => group.next_deadline_ms(),
                    _ => None,
                };
                if let Some(deadline) = deadline {
                    deadlines.push((group_id.clone(), deadline));
                }
                let slot = SlotState::with(classic, consumer, leader_epoch);
                slots.groups.insert(group_id, slot);
            }
            slots.loaded.insert(partition, leader_epoch);
        }
        lock(&self.shared.deadlines).extend(deadlines);
        self.shared.timer.notify_one();
    }

    /// Marks `partition` loaded with no groups (tests that drive the registry alone).
    #[cfg(test)]
    pub fn mark_loaded(&self, partition: i32, leader_epoch: i32) {
        self.install(partition, leader_epoch, Vec::new(), 0);
    }

    /// This broker no longer coordinates `partition` (Kafka's `onResignation`): its groups
    /// leave memory, their timers stop, and their parked JoinGroup/SyncGroup requests are
    /// answered NOT_COORDINATOR. Returns how many groups were dropped.
    pub fn unload(&self, partition: i32) -> usize {
        let dropped: Vec<(String, Slot)> = {
            let mut slots = lock(&self.shared.slots);
            slots.loaded.remove(&partition);
            let ids: Vec<String> = slots
                .groups
                .keys()
                .filter(|id| self.partition_for(id) == partition)
                .cloned()
                .collect();
            ids.into_iter()
                .filter_map(|id| slots.groups.remove(&id).map(|slot| (id, slot)))
                .collect()
        };
        {
            let mut deadlines = lock(&self.shared.deadlines);
            deadlines
                .retain(|id, _| partition_for(id, self.shared.offsets_partitions) != partition);
        }
        let count = dropped.len();
        for (_, slot) in dropped {
            match slot.clone().try_lock_owned() {
                Ok(mut state) => resign(&mut state),
                // Busy in a step (a write in flight): answered when the step lets go. The
                // step itself finds its write refused or its slot stale.
                Err(_) => match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => {
                        runtime.spawn(async move { resign(&mut *slot.lock().await) });
                    }
                    Err(_) => tracing::warn!("unloading a busy group outside the runtime"),
                },
            }
        }
        count
    }

    pub async fn join(
        &self,
        log: &Partition,
        group_id: &str,
        request: JoinRequest,
        now_ms: i64,
    ) -> JoinOutcome {
        let member_id = request.member_id.clone();
        // Only a member without an id creates a group; a known id for a group that does
        // not exist (any more) must rejoin from scratch.
        let create = member_id.is_empty();
        let mut locked = match self.shared.lock_group(group_id, create).await {
            Ok(Some(locked)) => locked,
            Ok(None) => return JoinOutcome::failed(member_id, GroupError::UnknownMemberId),
            Err(error) => return JoinOutcome::failed(member_id, error),
        };
        let token = self.shared.token();
        let (sender, receiver) = oneshot::channel();
        let state = &mut *locked.state;
        if let Some(consumer) = &state.consumer {
            // Kafka turns an empty consumer group into a classic one on a JoinGroup (its
            // records deleted first); one with members is not a classic group.
            if !consumer.is_empty() {
                return JoinOutcome::failed(member_id, GroupError::InconsistentGroupProtocol);
            }
            if let Err(error) = self
                .shared
                .delete_consumer(state, log, group_id, now_ms)
                .await
            {
                return JoinOutcome::failed(member_id, error);
            }
        }
        state.waiters.insert(token, Waiter::Join(sender));
        let group = state
            .group
            .get_or_insert_with(|| Group::new(group_id, now_ms));
        // Only the random part: `Group::join` puts the client id (or instance id) before it.
        let mut new_id = || uuid::Uuid::new_v4().to_string();
        let effects = group.join(request, token, now_ms, self.shared.config, &mut new_id);
        self.shared
            .carry_out(state, log, group_id, effects, now_ms)
            .await;
        drop(locked);
        match self.shared.parked(receiver).await {
            Parked::Answered(outcome) => outcome,
            Parked::Dropped => JoinOutcome::failed(member_id, GroupError::UnknownServer),
            Parked::ServingEnded => JoinOutcome::failed(member_id, GroupError::NotCoordinator),
        }
    }

    pub async fn sync(
        &self,
        log: &Partition,
        group_id: &str,
        request: SyncRequest,
        now_ms: i64,
    ) -> SyncOutcome {
        let mut locked = match self.shared.lock_group(group_id, false).await {
            Ok(Some(locked)) => locked,
            Ok(None) => return SyncOutcome::failed(GroupError::UnknownMemberId),
            Err(error) => return SyncOutcome::failed(error),
        };
        let token = self.shared.token();
        let (sender, receiver) = oneshot::channel();
        let state = &mut *locked.state;
        let Some(group) = state.group.as_mut() else {
            return SyncOutcome::failed(GroupError::UnknownMemberId);
        };
        let effects = group.sync(request, token, now_ms);
        state.waiters.insert(token, Waiter::Sync(sender));
        self.shared
            .carry_out(state, log, group_id, effects, now_ms)
            .await;
        drop(locked);
        match self.shared.parked(receiver).await {
            Parked::Answered(outcome) => outcome,
            Parked::Dropped => SyncOutcome::failed(GroupError::UnknownServer),
            Parked::ServingEnded => SyncOutcome::failed(GroupError::NotCoordinator),
        }
    }

    pub async fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        let mut locked = self
            .shared
            .lock_group(group_id, false)
            .await?
            .ok_or(GroupError::UnknownMemberId)?;
        let group = locked
            .state
            .group
            .as_mut()
            .ok_or(GroupError::UnknownMemberId)?;
        group.heartbeat(member_id, group_instance_id, generation_id, now_ms)
    }

    pub async fn leave(
        &self,
        log: &Partition,
        group_id: &str,
        members: Vec<(Option<String>, Option<String>)>,
        now_ms: i64,
    ) -> Vec<Result<(), GroupError>> {
        let refused = |error: GroupError| members.iter().map(|_| Err(error.clone())).collect();
        let mut locked = match self.shared.lock_group(group_id, false).await {
            Ok(Some(locked)) if locked.state.group.is_some() => locked,
            Ok(_) => return refused(GroupError::UnknownMemberId),
            Err(error) => return refused(error),
        };
        let state = &mut *locked.state;
        let group = state.group.as_mut().expect("matched above");
        let (results, effects) = group.leave(members.clone(), now_ms);
        match self
            .shared
            .carry_out(state, log, group_id, effects, now_ms)
            .await
        {
            // The departure is not durable: the members may find themselves back after a
            // failover, so they are told it failed (Kafka answers after the write).
            Some(error) => results
                .into_iter()
                .map(|result| result.and(Err(error.clone())))
                .collect(),
            None => results,
        }
    }

    /// One ConsumerGroupHeartbeat (KIP-848), answered once the records it changed are
    /// committed. A join (epoch 0) creates the group, or takes the id of a classic group
    /// without members, whose record is deleted in the same write (Kafka's
    /// `maybeDeleteEmptyClassicGroup`); a classic group with members is not a consumer
    /// group (GROUP_ID_NOT_FOUND, as Kafka answers).
    ///
    /// A heartbeat for a group this coordinator does not know is UNKNOWN_MEMBER_ID, where
    /// Kafka says GROUP_ID_NOT_FOUND, which clients take as fatal: a group is only gone
    /// here when its first write never committed (the join was answered with an error),
    /// and a member that finds it gone must rejoin, which UNKNOWN_MEMBER_ID tells it.
    pub async fn consumer_heartbeat(
        &self,
        log: &Partition,
        group_id: &str,
        request: HeartbeatRequest,
        topics: &(dyn TopicSource + Sync),
        now_ms: i64,
    ) -> Result<HeartbeatAnswer, GroupError> {
        let joining = request.member_epoch == 0;
        let mut locked = self
            .shared
            .lock_group(group_id, joining)
            .await?
            .ok_or(GroupError::UnknownMemberId)?;
        let state = &mut *locked.state;
        if let Some(classic) = &state.group {
            if !classic.is_empty() {
                return Err(GroupError::GroupIdNotFound);
            }
            if !joining {
                return Err(GroupError::UnknownMemberId);
            }
        }
        self.shared.confirm(state, log).await?;
        // The group's own session timeout and heartbeat interval, if it has them.
        let config = &self.shared.consumer_config(group_id);
        let group = state
            .consumer
            .get_or_insert_with(|| ConsumerGroup::new(group_id));
        let mut new_id = || uuid::Uuid::new_v4().to_string();
        let answer = group.heartbeat(request, now_ms, config, topics, &mut new_id);
        // The empty classic group a successful join replaces goes in the same write.
        let classic_tombstone = (answer.is_ok() && state.group.is_some()).then(|| {
            let key = records::encode_key(&RecordKey::Group {
                group: group_id.to_string(),
            });
            (key, None)
        });
        let written = (self.shared)
            .write_consumer(state, log, group_id, classic_tombstone, now_ms)
            .await;
        let group = state.consumer.as_ref().expect("kept by the write");
        let deadline = group.next_deadline_ms();
        if !group.is_persisted() {
            // A join that failed, or whose write did, leaves nothing behind (Kafka applies
            // nothing of it): not a consumer group, and the empty classic group it would
            // have replaced is still there.
            state.consumer = None;
            if state.group.is_none() {
                self.shared.forget(group_id, &locked.slot);
            }
            written?;
            return answer;
        }
        state.group = None;
        self.shared.set_deadline(group_id, deadline);
        written?;
        answer
    }

    /// Starts `tick` for every group whose deadline passed, each as its own task so a
    /// group busy in a slow write holds up no other; returns the next deadline.
    pub fn tick_due(
        &self,
        resolve: &dyn Fn(&str) -> Option<Arc<Partition>>,
        now_ms: i64,
    ) -> Option<i64> {
        let due: Vec<String> = {
            let mut deadlines = lock(&self.shared.deadlines);
            let due: Vec<String> = deadlines
                .iter()
                .filter(|(_, at)| **at <= now_ms)
                .map(|(group, _)| group.clone())
                .collect();
            for group_id in &due {
                deadlines.remove(group_id);
            }
            due
        };
        for group_id in due {
            let Some(log) = resolve(&group_id) else {
                tracing::debug!(group = group_id, "no offsets partition led for group tick");
                continue;
            };
            let shared = self.shared.clone();
            tokio::spawn(async move { shared.tick(&group_id, &log, now_ms).await });
        }
        lock(&self.shared.deadlines).values().min().copied()
    }

    /// Read access for DescribeGroups / offset validation; waits for the group's step.
    /// A group of a partition not loaded here is seen as absent.
    pub async fn with_group<T>(&self, group_id: &str, view: impl FnOnce(Option<&Group>) -> T) -> T {
        self.with_either(group_id, |classic, _| view(classic)).await
    }

    /// [`Self::with_group`] for a KIP-848 consumer group.
    pub async fn with_consumer_group<T>(
        &self,
        group_id: &str,
        view: impl FnOnce(Option<&ConsumerGroup>) -> T,
    ) -> T {
        self.with_either(group_id, |_, consumer| view(consumer))
            .await
    }

    /// The group under `group_id` as whichever kind it is (at most one is `Some`).
    pub async fn with_either<T>(
        &self,
        group_id: &str,
        view: impl FnOnce(Option<&Group>, Option<&ConsumerGroup>) -> T,
    ) -> T {
        match self.shared.lock_group(group_id, false).await {
            Ok(Some(locked)) => view(locked.state.group.as_ref(), locked.state.consumer.as_ref()),
            Ok(None) | Err(_) => view(None, None),
        }
    }

    /// `view` applied to every group of either kind (ListGroups, the metrics, the status
    /// page), each locked once, in no particular order.
    pub async fn map_all_groups<T>(&self, mut view: impl FnMut(&str, AnyGroup<'_>) -> T) -> Vec<T> {
        let ids: Vec<String> = lock(&self.shared.slots).groups.keys().cloned().collect();
        let mut seen = Vec::with_capacity(ids.len());
        for group_id in ids {
            let Ok(Some(locked)) = self.shared.lock_group(&group_id, false).await else {
                continue;
            };
            // At most one is live; should a load ever leave both, both are shown.
            if let Some(group) = &locked.state.group {
                seen.push(view(&group_id, AnyGroup::Classic(group)));
            }
            if let Some(group) = &locked.state.consumer {
                seen.push(view(&group_id, AnyGroup::Consumer(group)));
            }
        }
        seen
    }

    /// Whether the group has members, without waiting (offset expiry): a group in the
    /// middle of a step counts as active, so its offsets wait for a later round.
    pub fn has_members_or_busy(&self, group_id: &str) -> bool {
        let Some(slot) = lock(&self.shared.slots).groups.get(group_id).cloned() else {
            return false;
        };
        match slot.try_lock() {
            Ok(state) => {
                state.group.as_ref().is_some_and(|group| !group.is_empty())
                    || state
                        .consumer
                        .as_ref()
                        .is_some_and(|group| !group.is_empty())
            }
            Err(_) => true,
        }
    }

    /// The groups without members (classic groups Empty with no member expected back,
    /// consumer groups with no member), leaving out those busy in a step.
    pub fn empty_group_ids(&self) -> Vec<String> {
        let slots: Vec<(String, Slot)> = (lock(&self.shared.slots).groups.iter())
            .map(|(id, slot)| (id.clone(), slot.clone()))
            .collect();
        (slots.into_iter())
            .filter(|(_, slot)| {
                slot.try_lock()
                    .is_ok_and(|state| match (&state.group, &state.consumer) {
                        (Some(group), _) => group.is_empty() && !group.has_pending_members(),
                        (_, Some(group)) => group.is_empty(),
                        (None, None) => false,
                    })
            })
            .map(|(id, _)| id)
            .collect()
    }

    /// DeleteGroups for one group with a live state machine entry.
    pub async fn delete(
        &self,
        log: &Partition,
        group_id: &str,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        self.delete_if(log, group_id, now_ms, &|| true)
            .await
            .map(drop)
    }

    /// [`Self::delete`] if `still_wanted`, asked under the group's lock (the cleanup of
    /// groups without offsets asks again there: a reload may have brought offsets since);
    /// whether it was deleted.
    pub async fn delete_if(
        &self,
        log: &Partition,
        group_id: &str,
        now_ms: i64,
        still_wanted: &(dyn Fn() -> bool + Sync),
    ) -> Result<bool, GroupError> {
        let mut locked = self
            .shared
            .lock_group(group_id, false)
            .await?
            .ok_or(GroupError::GroupIdNotFound)?;
        if !still_wanted() {
            return Ok(false);
        }
        let state = &mut *locked.state;
        if let Some(consumer) = &state.consumer {
            if !consumer.is_empty() {
                return Err(GroupError::NonEmptyGroup);
            }
            self.shared
                .delete_consumer(state, log, group_id, now_ms)
                .await?;
            lock(&self.shared.deadlines).remove(group_id);
            self.shared.forget(group_id, &locked.slot);
            return Ok(true);
        }
        let group = state.group.as_mut().ok_or(GroupError::GroupIdNotFound)?;
        let effects = group.delete()?;
        let failed = self
            .shared
            .carry_out(state, log, group_id, effects, now_ms)
            .await;
        // The group is Dead in memory either way (the state machine cannot step back); a
        // tombstone that did not commit means a reload may bring it back, so the client
        // is told the delete failed and may retry.
        state.group = None;
        lock(&self.shared.deadlines).remove(group_id);
        self.shared.forget(group_id, &locked.slot);
        failed.map_or(Ok(true), Err)
    }

    /// True while some request or tick holds the group's lock (tests wait on this).
    #[cfg(test)]
    fn is_busy(&self, group_id: &str) -> bool {
        let slot = lock(&self.shared.slots).groups.get(group_id).cloned();
        slot.is_some_and(|slot| slot.try_lock().is_err())
    }
}

/// Answers a resigned group's parked requests NOT_COORDINATOR and drops its state.
fn resign(state: &mut SlotState) {
    for (_, waiter) in state.waiters.drain() {
        match waiter {
            Waiter::Join(sender) => {
                let _ = sender.send(JoinOutcome::failed("", GroupError::NotCoordinator));
            }
            Waiter::Sync(sender) => {
                let _ = sender.send(SyncOutcome::failed(GroupError::NotCoordinator));
            }
        }
    }
    state.group = None;
    state.consumer = None;
}

/// The error a request gets when the group's metadata write failed (Kafka 4's mapping:
/// NOT_COORDINATOR when leadership went, COORDINATOR_NOT_AVAILABLE when the write was not
/// replicated in time, UNKNOWN_SERVER_ERROR for what cannot be retried elsewhere).
fn write_failure(error: &CoordinatorError) -> GroupError {
    match error {
        CoordinatorError::NotCoordinator => GroupError::NotCoordinator,
        CoordinatorError::NotCommitted(_) | CoordinatorError::LoadInProgress => {
            GroupError::CoordinatorNotAvailable
        }
        CoordinatorError::Storage(_)
        | CoordinatorError::OffsetMetadataTooLarge
        | CoordinatorError::TooLarge(_) => GroupError::UnknownServer,
        // Transactional offset commits only; a metadata write never sees these.
        CoordinatorError::InvalidProducerEpoch
        | CoordinatorError::InvalidTxnState
        | CoordinatorError::UnstableOffsetCommit => GroupError::UnknownServer,
    }
}

/// How a parked request's wait ended.
enum Parked<T> {
    Answered(T),
    /// The group dropped the waiter without an answer.
    Dropped,
    ServingEnded,
}

impl Shared {
    /// The settings a consumer group runs with: the broker's, with the group's own
    /// configs over them where this broker's bounds allow (`ConsumerGroupConfig::
    /// for_group`).
    fn consumer_config(&self, group_id: &str) -> ConsumerGroupConfig {
        let own = self.group_configs.get().and_then(|source| source(group_id));
        self.consumer.for_group(own.as_ref())
    }

    fn token(&self) -> RequestToken {
        RequestToken(self.next_token.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Waits for a parked request's answer, or for the end of serving. Only the wait is
    /// raced, never a step or its writes: the group is left as the last step made it, and
    /// an answer sent later finds its receiver gone, which the group ignores.
    async fn parked<T>(&self, receiver: oneshot::Receiver<T>) -> Parked<T> {
        let mut serving_ended = self.serving_ended.subscribe();
        tokio::select! {
            biased;
            answer = receiver => answer.map_or(Parked::Dropped, Parked::Answered),
            _ = serving_ended.wait_for(|ended| *ended) => Parked::ServingEnded,
        }
    }

    /// Locks the group's current slot. With `create`, a missing group gets an empty slot
    /// (no classic nor consumer group in it); without it, a missing or empty one is
    /// `Ok(None)`. A group whose offsets partition is not loaded here is NOT_COORDINATOR.
    async fn lock_group(&self, group_id: &str, create: bool) -> Result<Option<Locked>, GroupError> {
        let partition = partition_for(group_id, self.offsets_partitions);
        loop {
            let slot = {
                let mut slots = lock(&self.slots);
                let Some(leader_epoch) = slots.loaded.get(&partition).copied() else {
                    return Err(GroupError::NotCoordinator);
                };
                match slots.groups.get(group_id) {
                    Some(slot) => slot.clone(),
                    None if create => slots
                        .groups
                        .entry(group_id.to_string())
                        .or_insert_with(|| SlotState::new(None, leader_epoch))
                        .clone(),
                    None => return Ok(None),
                }
            };
            let state = slot.clone().lock_owned().await;
            // Deleted, reloaded or unloaded while we waited: this slot must not be used
            // (or revived); the next look finds the current one, or none.
            if !self.is_current(group_id, &slot) {
                continue;
            }
            if state.group.is_none() && state.consumer.is_none() && !create {
                return Ok(None);
            }
            return Ok(Some(Locked { slot, state }));
        }
    }

    fn is_current(&self, group_id: &str, slot: &Slot) -> bool {
        lock(&self.slots)
            .groups
            .get(group_id)
            .is_some_and(|current| Arc::ptr_eq(current, slot))
    }

    /// Drops the group's slot from the map if it is still the current one.
    fn forget(&self, group_id: &str, slot: &Slot) {
        let mut slots = lock(&self.slots);
        if slots
            .groups
            .get(group_id)
            .is_some_and(|current| Arc::ptr_eq(current, slot))
        {
            slots.groups.remove(group_id);
        }
    }

    /// Sets (or, with `None`, clears) when a group next wants a tick. The timer task is
    /// woken only for a deadline earlier than the group's last one: a heartbeat pushes its
    /// session's end later, which the sleeping timer finds out when it wakes anyway.
    fn set_deadline(&self, group_id: &str, at: Option<i64>) {
        let mut deadlines = lock(&self.deadlines);
        match at {
            Some(at) => {
                let earlier = deadlines
                    .insert(group_id.to_string(), at)
                    .is_none_or(|old| at < old);
                if earlier {
                    self.timer.notify_one();
                }
            }
            None => {
                deadlines.remove(group_id);
            }
        }
    }

    /// One timer tick of one group, under that group's lock only.
    async fn tick(&self, group_id: &str, log: &Partition, now_ms: i64) {
        let Ok(Some(mut locked)) = self.lock_group(group_id, false).await else {
            return;
        };
        let state = &mut *locked.state;
        if state.consumer.is_some() {
            let ticked = self.tick_consumer(state, log, group_id, now_ms).await;
            let deadline = match ticked {
                // The members that were due still are: try again a heartbeat later, not
                // at once.
                Err(_) => {
                    let interval = self.consumer_config(group_id).heartbeat_interval_ms;
                    Some(now_ms + i64::from(interval))
                }
                Ok(()) => state.consumer.as_ref().and_then(|g| g.next_deadline_ms()),
            };
            self.set_deadline(group_id, deadline);
            return;
        }
        let Some(group) = state.group.as_mut() else {
            return;
        };
        let effects = group.tick(now_ms);
        self.carry_out(state, log, group_id, effects, now_ms).await;
    }

    /// A consumer group's timers: members whose session or revocation time ran out are
    /// fenced, and that is written. A write that failed brings them back (their sessions
    /// start again) and is logged; a later tick tries again.
    async fn tick_consumer(
        &self,
        state: &mut SlotState,
        log: &Partition,
        group_id: &str,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        self.confirm(state, log).await?;
        if let Some(group) = state.consumer.as_mut() {
            group.tick(now_ms);
        }
        self.write_consumer(state, log, group_id, None, now_ms)
            .await
    }

    /// Waits until the consumer group's last write is committed, if that was not known yet.
    async fn confirm(&self, state: &mut SlotState, log: &Partition) -> Result<(), GroupError> {
        let Some(end_offset) = state.unconfirmed else {
            return Ok(());
        };
        self.wait_written(log, state.leader_epoch, end_offset)
            .await?;
        state.unconfirmed = None;
        Ok(())
    }

    /// Waits until the records before `end_offset` are committed under `leader_epoch`.
    async fn wait_written(
        &self,
        log: &Partition,
        leader_epoch: i32,
        end_offset: i64,
    ) -> Result<(), GroupError> {
        let target = WriteTarget {
            log,
            leader_epoch,
            timeout: self.write_timeout,
        };
        let deadline = tokio::time::Instant::now() + self.write_timeout;
        writer::wait_committed(target, end_offset, deadline)
            .await
            .map_err(|error| {
                tracing::warn!(%error, "group records not committed");
                write_failure(&error)
            })
    }

    /// Writes what the consumer group's last step changed (and `extra`, a record of the
    /// same write) and waits until it is committed. A failed append puts the group back
    /// to its records; an append whose wait failed stays (see the module comment).
    async fn write_consumer(
        &self,
        state: &mut SlotState,
        log: &Partition,
        group_id: &str,
        extra: Option<(Bytes, Option<Bytes>)>,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        let Some(group) = state.consumer.as_mut() else {
            return Ok(());
        };
        let changes = group.take_changes(now_ms);
        if changes.is_empty() && extra.is_none() {
            return Ok(());
        }
        let mut entries: Vec<(Bytes, Option<Bytes>)> = extra.into_iter().collect();
        entries.extend(consumer_entries(group_id, &changes));
        match self.append(log, state.leader_epoch, group_id, entries, now_ms) {
            Ok(end_offset) => {
                group.appended(changes);
                state.unconfirmed = Some(end_offset);
            }
            Err(error) => {
                group.revert(now_ms, &self.consumer_config(group_id));
                return Err(error);
            }
        }
        self.confirm(state, log).await
    }

    /// Deletes an empty consumer group's records (DeleteGroups, or its id going to a
    /// classic group) and drops it; on a failed write the group stays.
    async fn delete_consumer(
        &self,
        state: &mut SlotState,
        log: &Partition,
        group_id: &str,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        self.confirm(state, log).await?;
        let Some(group) = state.consumer.as_ref() else {
            return Ok(());
        };
        let tombstones = group.tombstones();
        if tombstones.is_empty() {
            state.consumer = None;
            return Ok(());
        }
        let entries = consumer_entries(group_id, &tombstones);
        let end_offset = self.append(log, state.leader_epoch, group_id, entries, now_ms)?;
        // Appended: the log no longer has the group, whether or not the wait succeeds.
        state.consumer = None;
        state.unconfirmed = Some(end_offset);
        self.confirm(state, log).await
    }

    /// Appends a group's records under the epoch its slot was loaded at; returns the offset
    /// after them.
    fn append(
        &self,
        log: &Partition,
        leader_epoch: i32,
        group_id: &str,
        entries: Vec<(Bytes, Option<Bytes>)>,
        now_ms: i64,
    ) -> Result<i64, GroupError> {
        let partition = partition_for(group_id, self.offsets_partitions);
        if lock(&self.slots).loaded.get(&partition) != Some(&leader_epoch) {
            return Err(GroupError::NotCoordinator);
        }
        let target = WriteTarget {
            log,
            leader_epoch,
            timeout: self.write_timeout,
        };
        match writer::append(target, entries, now_ms, None) {
            Ok((_, end_offset)) => Ok(end_offset),
            Err(error) => {
                tracing::warn!(group = group_id, %error, "writing group records failed");
                Err(write_failure(&error))
            }
        }
    }

    /// Whether the group's deadline has passed; if so it is taken (the caller ticks).
    fn take_due(&self, group_id: &str, now_ms: i64) -> bool {
        let mut deadlines = lock(&self.deadlines);
        let due = deadlines.get(group_id).is_some_and(|at| *at <= now_ms);
        if due {
            deadlines.remove(group_id);
        }
        due
    }

    /// Executes effects in order; a deadline that is already due (a rebalance with no
    /// delay) is ticked at once rather than through the timer task. Returns the error of
    /// the last failed write, if one failed.
    async fn carry_out(
        &self,
        state: &mut SlotState,
        log: &Partition,
        group_id: &str,
        effects: Vec<Effect>,
        now_ms: i64,
    ) -> Option<GroupError> {
        let mut effects = effects;
        let mut failed = None;
        // Bounded: each tick can only move the group forward a state.
        for _ in 0..8 {
            if let Some(error) = self
                .carry_out_once(state, log, group_id, effects, now_ms)
                .await
            {
                // The group takes back what the record described (and rebalances) before
                // anything else reads it; its own effects are carried out next round.
                effects = match state.group.as_mut() {
                    Some(group) => group.write_failed(&error, now_ms),
                    None => Vec::new(),
                };
                failed = Some(error);
                if !effects.is_empty() {
                    continue;
                }
            }
            if state.group.is_none() || !self.take_due(group_id, now_ms) {
                return failed;
            }
            let Some(group) = state.group.as_mut() else {
                return failed;
            };
            effects = group.tick(now_ms);
        }
        failed
    }

    async fn carry_out_once(
        &self,
        state: &mut SlotState,
        log: &Partition,
        group_id: &str,
        effects: Vec<Effect>,
        now_ms: i64,
    ) -> Option<GroupError> {
        let mut write_failed: Option<GroupError> = None;
        for effect in effects {
            let effect = match &write_failed {
                Some(error) => effect.after_failed_write(error),
                None => effect,
            };
            match effect {
                Effect::Persist(snapshot) => {
                    let epoch = state.leader_epoch;
                    let written = self.persist(log, epoch, group_id, Some(&snapshot), now_ms);
                    write_failed = written.await.err().or(write_failed);
                }
                Effect::Tombstone { group_id } => {
                    let epoch = state.leader_epoch;
                    let written = self.persist(log, epoch, &group_id, None, now_ms).await;
                    write_failed = written.err().or(write_failed);
                }
                Effect::JoinDone { token, response } => {
                    if let Some(Waiter::Join(sender)) = state.waiters.remove(&token) {
                        let _ = sender.send(response);
                    }
                }
                Effect::SyncDone { token, response } => {
                    if let Some(Waiter::Sync(sender)) = state.waiters.remove(&token) {
                        let _ = sender.send(response);
                    }
                }
                Effect::WakeAt(at) => {
                    lock(&self.deadlines).insert(group_id.to_string(), at);
                    self.timer.notify_one();
                }
            }
        }
        write_failed
    }

    /// Writes a group's metadata record (or its tombstone) and waits until it is
    /// committed, at the epoch the group's slot was loaded at (not whatever is loaded
    /// now: a slot replaced by a reload must not write over what the reload read).
    async fn persist(
        &self,
        log: &Partition,
        leader_epoch: i32,
        group_id: &str,
        snapshot: Option<&GroupSnapshot>,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        let key = records::encode_key(&RecordKey::Group {
            group: group_id.to_string(),
        });
        let value = snapshot.map(|snapshot| records::encode_group(&to_record(snapshot)));
        let end_offset = self.append(log, leader_epoch, group_id, vec![(key, value)], now_ms)?;
        self.wait_written(log, leader_epoch, end_offset).await
    }
}

/// A consumer group's changes as offsets-topic records.
fn consumer_entries(group_id: &str, changes: &[Change]) -> Vec<(Bytes, Option<Bytes>)> {
    (changes.iter())
        .map(|(key, value)| {
            let key = records::encode_key(&RecordKey::Consumer {
                group: group_id.to_string(),
                key: key.clone(),
            });
            (key, value.as_ref().map(encode_value))
        })
        .collect()
}

pub fn to_record(snapshot: &GroupSnapshot) -> GroupValue {
    GroupValue {
        protocol_type: snapshot.protocol_type.clone().unwrap_or_default(),
        generation: snapshot.generation_id,
        protocol: snapshot.protocol_name.clone(),
        leader: snapshot.leader_id.clone(),
        current_state_timestamp_ms: snapshot.state_since_ms,
        members: snapshot
            .members
            .iter()
            .map(|member| MemberValue {
                member_id: member.member_id.clone(),
                group_instance_id: member.group_instance_id.clone(),
                client_id: member.client_id.clone(),
                client_host: member.client_host.clone(),
                rebalance_timeout_ms: member.rebalance_timeout_ms,
                session_timeout_ms: member.session_timeout_ms,
                subscription: Bytes::from(member.subscription.clone()),
                assignment: Bytes::from(member.assignment.clone()),
            })
            .collect(),
    }
}

pub fn from_record(group_id: &str, value: GroupValue) -> GroupSnapshot {
    GroupSnapshot {
        group_id: group_id.to_string(),
        protocol_type: Some(value.protocol_type).filter(|t| !t.is_empty()),
        generation_id: value.generation,
        protocol_name: value.protocol,
        leader_id: value.leader,
        state_since_ms: value.current_state_timestamp_ms,
        members: value
            .members
            .into_iter()
            .map(|member| MemberSnapshot {
                member_id: member.member_id,
                group_instance_id: member.group_instance_id,
                client_id: member.client_id,
                client_host: member.client_host,
                rebalance_timeout_ms: member.rebalance_timeout_ms,
                session_timeout_ms: member.session_timeout_ms,
                subscription: member.subscription.to_vec(),
                assignment: member.assignment.to_vec(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::log::LogConfig;
    use crate::types::TopicPartition;

    const NOW_MS: i64 = 1_000_000;

    fn open(dir: &Path, partition: i32) -> Arc<Partition> {
        let tp = TopicPartition::new("__consumer_offsets", partition);
        let path = dir.join(format!("__consumer_offsets-{partition}"));
        let id = uuid::Uuid::from_u128(7);
        let last_shutdown = crate::log::LastShutdown::Unclean;
        let opened = Partition::open(tp, id, path, LogConfig::default(), 0, NOW_MS, last_shutdown);
        let log = opened.unwrap();
        log.become_leader(0).unwrap();
        Arc::new(log)
    }

    /// A registry whose one offsets partition (every group's) is loaded at epoch 0.
    fn registry() -> Arc<GroupRegistry> {
        let group = GroupConfig {
            initial_rebalance_delay_ms: 0,
            ..GroupConfig::default()
        };
        let registry = GroupRegistry::new(RegistryConfig {
            group,
            offsets_partitions: 1,
            write_timeout: Duration::from_secs(5),
            consumer: ConsumerGroupConfig::default(),
        });
        registry.mark_loaded(0, 0);
        Arc::new(registry)
    }

    fn join_request(member_id: &str) -> JoinRequest {
        JoinRequest {
            member_id: member_id.to_string(),
            group_instance_id: None,
            client_id: "client".to_string(),
            client_host: "/127.0.0.1".to_string(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".to_string(),
            protocols: vec![("range".to_string(), vec![1, 2, 3])],
            require_known_member_id: false,
            supports_skip_assignment: false,
            reason: None,
        }
    }

    fn sync_request(member_id: &str, generation_id: i32, assignment: &[u8]) -> SyncRequest {
        SyncRequest {
            member_id: member_id.to_string(),
            group_instance_id: None,
            generation_id,
            protocol_type: None,
            protocol_name: None,
            assignments: vec![(member_id.to_string(), assignment.to_vec())],
        }
    }

    /// A one-member group through JoinGroup: (member id, generation).
    async fn joined(registry: &GroupRegistry, log: &Partition, group_id: &str) -> (String, i32) {
        let outcome = registry.join(log, group_id, join_request(""), NOW_MS).await;
        assert_eq!(outcome.error, None);
        assert_eq!(outcome.leader, outcome.member_id);
        assert_eq!(outcome.generation_id, 1);
        (outcome.member_id, outcome.generation_id)
    }

    /// Yields until `ready` holds; the runtime's other worker makes the progress.
    async fn until(ready: impl Fn() -> bool) {
        while !ready() {
            tokio::task::yield_now().await;
        }
    }

    /// Hang guard only: without per-group locks these tests would wait forever.
    const HANG_GUARD: std::time::Duration = std::time::Duration::from_secs(60);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_assignment_write_is_answered_and_taken_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), 0);
        let registry = registry();
        let (member, generation) = joined(&registry, &log, "g").await;
        // The record cannot be stored (beyond max.message.bytes): Kafka's storeGroup
        // answers UNKNOWN_SERVER_ERROR and the group rebalances.
        let roomy = log.config().unwrap();
        let tiny = LogConfig {
            max_message_bytes: 64,
            ..roomy.clone()
        };
        log.set_config(tiny);
        let request = sync_request(&member, generation, b"for-g");
        let synced = registry.sync(&log, "g", request, NOW_MS).await;
        assert_eq!(synced, SyncOutcome::failed(GroupError::UnknownServer));
        assert_eq!(log.offsets().unwrap().2, 0, "nothing was written");
        let state = registry.with_group("g", |g| g.map(Group::state)).await;
        assert_eq!(state, Some(crate::group::GroupState::PreparingRebalance));
        let beat = registry.heartbeat("g", &member, None, generation, NOW_MS);
        assert_eq!(beat.await, Err(GroupError::RebalanceInProgress));
        // Rejoined, the next generation's assignment is written and handed out.
        log.set_config(roomy);
        let rejoin = registry
            .join(&log, "g", join_request(&member), NOW_MS)
            .await;
        assert_eq!((rejoin.error, rejoin.generation_id), (None, generation + 1));
        let request = sync_request(&member, generation + 1, b"for-g");
        let synced = registry.sync(&log, "g", request, NOW_MS).await;
        assert_eq!((synced.error, synced.assignment), (None, b"for-g".to_vec()));
        assert_eq!(log.offsets().unwrap().2, 1);
    }

    /// Spawns a request and waits until the group holds it parked.
    async fn parked<T: Send + 'static>(
        registry: &Arc<GroupRegistry>,
        request: impl std::future::Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        let waiters = || async { lock_waiters(registry, "g").await };
        let before = waiters().await;
        let handle = tokio::spawn(request);
        tokio::time::timeout(HANG_GUARD, async {
            while waiters().await == before {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        handle
    }

    async fn lock_waiters(registry: &GroupRegistry, group_id: &str) -> usize {
        let locked = registry.shared.lock_group(group_id, false).await;
        locked
            .unwrap()
            .map_or(0, |locked| locked.state.waiters.len())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parked_requests_answer_not_coordinator_once_serving_ends() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), 0);
        let registry = registry();
        let (leader, generation) = joined(&registry, &log, "g").await;
        let request = sync_request(&leader, generation, b"for-leader");
        let synced = registry.sync(&log, "g", request, NOW_MS).await;
        assert_eq!(synced.error, None);
        // A second member's join parks until the leader rejoins.
        let join = {
            let (registry, log) = (registry.clone(), log.clone());
            async move { registry.join(&log, "g", join_request(""), NOW_MS).await }
        };
        let second = parked(&registry, join).await;
        let rejoin = registry.join(&log, "g", join_request(&leader), NOW_MS);
        let (rejoined, second) = tokio::join!(rejoin, second);
        let second = second.unwrap();
        assert_eq!((rejoined.error, second.error), (None, None));
        assert_eq!(second.generation_id, generation + 1);
        // The follower's sync parks until the leader's: serving ends first.
        let sync = {
            let (registry, log) = (registry.clone(), log.clone());
            let request = sync_request(&second.member_id, generation + 1, b"");
            async move { registry.sync(&log, "g", request, NOW_MS).await }
        };
        let follower = parked(&registry, sync).await;
        registry.stop_serving();
        let answer = tokio::time::timeout(HANG_GUARD, follower).await.unwrap();
        assert_eq!(
            answer.unwrap(),
            SyncOutcome::failed(GroupError::NotCoordinator)
        );
        // A join that parks after the end of serving answers at once too: a third
        // member's join starts a rebalance that waits for the other two.
        let third = registry.join(&log, "g", join_request(""), NOW_MS);
        let third = tokio::time::timeout(HANG_GUARD, third).await.unwrap();
        assert_eq!(third.error, Some(GroupError::NotCoordinator));
        // Requests that need no wait are still answered (the connection closes after).
        let beat = registry.heartbeat("g", &leader, None, generation + 1, NOW_MS);
        assert_eq!(beat.await, Err(GroupError::RebalanceInProgress));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_write_holds_up_only_its_own_group() {
        let dir = tempfile::tempdir().unwrap();
        let (slow, fast) = (open(dir.path(), 0), open(dir.path(), 1));
        let registry = registry();
        let (member_a, generation_a) = joined(&registry, &slow, "a").await;
        let stall = slow.stall_appends();
        let sync_a = tokio::spawn({
            let (registry, slow) = (registry.clone(), slow.clone());
            let request = sync_request(&member_a, generation_a, b"for-a");
            async move { registry.sync(&slow, "a", request, NOW_MS).await }
        });
        let other_group = async {
            // Group a's sync holds its lock from here until its append is let through.
            until(|| registry.is_busy("a")).await;
            let (member_b, generation_b) = joined(&registry, &fast, "b").await;
            let request = sync_request(&member_b, generation_b, b"for-b");
            let synced = registry.sync(&fast, "b", request, NOW_MS).await;
            assert_eq!(synced.error, None);
            assert_eq!(synced.assignment, b"for-b".to_vec());
            let beat = registry.heartbeat("b", &member_b, None, generation_b, NOW_MS);
            assert_eq!(beat.await, Ok(()));
            let state = registry.with_group("b", |g| g.map(Group::state)).await;
            assert_eq!(state, Some(crate::group::GroupState::Stable));
        };
        tokio::time::timeout(HANG_GUARD, other_group)
            .await
            .expect("group b waited on group a's write");
        assert!(
            !sync_a.is_finished(),
            "a's sync finished with its write stalled"
        );
        drop(stall);
        let synced_a = sync_a.await.unwrap();
        assert_eq!(synced_a.error, None);
        assert_eq!(synced_a.assignment, b"for-a".to_vec());
        // The write went through: the group metadata record is in a's partition.
        let (_, high_watermark, _) = slow.offsets().unwrap();
        assert_eq!(high_watermark, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn timers_of_other_groups_fire_while_one_group_is_stalled() {
        let dir = tempfile::tempdir().unwrap();
        let (slow, fast) = (open(dir.path(), 0), open(dir.path(), 1));
        let registry = registry();
        let (member_a, generation_a) = joined(&registry, &slow, "a").await;
        let (member_b, generation_b) = joined(&registry, &fast, "b").await;
        let request = sync_request(&member_b, generation_b, b"for-b");
        assert_eq!(registry.sync(&fast, "b", request, NOW_MS).await.error, None);
        let stall = slow.stall_appends();
        let sync_a = tokio::spawn({
            let (registry, slow) = (registry.clone(), slow.clone());
            let request = sync_request(&member_a, generation_a, b"for-a");
            async move { registry.sync(&slow, "a", request, NOW_MS).await }
        });
        until(|| registry.is_busy("a")).await;
        // Past both sessions (10 s): b's member expires, and b is persisted Empty to its
        // own partition while a's tick waits behind a's stalled write.
        let later_ms = NOW_MS + 20_000;
        let resolve = |group: &str| {
            Some(if group == "a" {
                slow.clone()
            } else {
                fast.clone()
            })
        };
        registry.tick_due(&resolve, later_ms);
        let emptied = async {
            until(|| {
                fast.offsets()
                    .is_ok_and(|(_, high_watermark, _)| high_watermark == 2)
            })
            .await;
            registry.with_group("b", |g| g.map(Group::state)).await
        };
        let state = tokio::time::timeout(HANG_GUARD, emptied).await;
        assert_eq!(
            state.expect("b's timer waited on a's write"),
            Some(crate::group::GroupState::Empty)
        );
        let beat = registry.heartbeat("b", &member_b, None, generation_b, later_ms);
        assert_eq!(beat.await, Err(GroupError::UnknownMemberId));
        assert!(
            !sync_a.is_finished(),
            "a's sync finished with its write stalled"
        );
        drop(stall);
        assert_eq!(sync_a.await.unwrap().error, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_queued_behind_a_delete_does_not_revive_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), 0);
        let registry = registry();
        let (member, generation) = joined(&registry, &log, "g").await;
        let left = registry.leave(&log, "g", vec![(Some(member.clone()), None)], NOW_MS);
        assert_eq!(left.await, vec![Ok(())]);
        let stall = log.stall_appends();
        let delete = tokio::spawn({
            let (registry, log) = (registry.clone(), log.clone());
            async move { registry.delete(&log, "g", NOW_MS).await }
        });
        until(|| registry.is_busy("g")).await;
        let slot = lock(&registry.shared.slots)
            .groups
            .get("g")
            .cloned()
            .unwrap();
        let heartbeat = tokio::spawn({
            let (registry, member) = (registry.clone(), member.clone());
            async move {
                registry
                    .heartbeat("g", &member, None, generation, NOW_MS)
                    .await
            }
        });
        // Held by the map, our copy, and twice each by the delete and the queued heartbeat
        // (their slot and the lock future or guard).
        until(|| Arc::strong_count(&slot) == 6).await;
        drop(stall);
        let outcome = tokio::time::timeout(HANG_GUARD, async {
            (delete.await.unwrap(), heartbeat.await.unwrap())
        });
        let (deleted, beat) = outcome.await.expect("delete or heartbeat hung");
        assert_eq!(deleted, Ok(()));
        assert_eq!(beat, Err(GroupError::UnknownMemberId));
        assert!(registry.with_group("g", |g| g.is_none()).await);
        assert!(!lock(&registry.shared.slots).groups.contains_key("g"));
        let rejoin = registry
            .join(&log, "g", join_request(&member), NOW_MS)
            .await;
        assert_eq!(rejoin.error, Some(GroupError::UnknownMemberId));
    }
}
