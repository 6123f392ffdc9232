//! The async shell around the group state machine: one [`Group`] per group id, parked
//! JoinGroup/SyncGroup requests as oneshot channels, and the effects carried out in
//! order (metadata written to `__consumer_offsets` before the answers that depend on it).
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
//! Timers are event-driven: every `WakeAt` lands in `deadlines`, and the coordinator's
//! timer task sleeps until the earliest one (or until a new earlier one arrives). Due
//! ticks run as their own tasks, so a group stuck in a slow write delays no other
//! group's tick.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{Notify, OwnedMutexGuard, oneshot};

use super::coordinator::append_records;
use super::records::{self, GroupValue, MemberValue, RecordKey};
use super::{
    Effect, Group, GroupConfig, GroupError, GroupSnapshot, JoinOutcome, JoinRequest,
    MemberSnapshot, RequestToken, SyncOutcome, SyncRequest,
};
use crate::replica::Partition;

enum Waiter {
    Join(oneshot::Sender<JoinOutcome>),
    Sync(oneshot::Sender<SyncOutcome>),
}

/// One group's state and its parked requests; `group` is `None` only for a slot created
/// by a join that has not run yet (or whose group was just deleted).
#[derive(Default)]
struct SlotState {
    group: Option<Group>,
    waiters: HashMap<RequestToken, Waiter>,
}

type Slot = Arc<tokio::sync::Mutex<SlotState>>;

/// A locked, current (not stale) slot of one group.
struct Locked {
    slot: Slot,
    state: OwnedMutexGuard<SlotState>,
}

struct Shared {
    config: GroupConfig,
    slots: Mutex<HashMap<String, Slot>>,
    /// Group id -> when it next wants a tick.
    deadlines: Mutex<HashMap<String, i64>>,
    next_token: AtomicU64,
    /// Wakes the timer task when a deadline earlier than the ones it sleeps on appears.
    timer: Notify,
}

pub struct GroupRegistry {
    shared: Arc<Shared>,
}

/// Std mutexes here guard plain maps for a lookup or an insert, never across an await or
/// a write; a panic while one was held leaves the map consistent, so poison is ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl GroupRegistry {
    pub fn new(config: GroupConfig) -> GroupRegistry {
        GroupRegistry {
            shared: Arc::new(Shared {
                config,
                slots: Mutex::new(HashMap::new()),
                deadlines: Mutex::new(HashMap::new()),
                next_token: AtomicU64::new(0),
                timer: Notify::new(),
            }),
        }
    }

    /// Resolves when a new deadline was set (the timer task then recomputes its sleep).
    pub async fn deadline_changed(&self) {
        self.shared.timer.notified().await
    }

    /// Restores a group from its latest metadata record (replay at load). A fresh slot
    /// replaces any old one, so a request still holding the old slot finds it stale.
    pub fn restore(&self, snapshot: Option<GroupSnapshot>, group_id: &str, now_ms: i64) {
        let group = snapshot.map(|snapshot| Group::from_snapshot(snapshot, now_ms));
        if let Some(deadline) = group.as_ref().and_then(Group::next_deadline_ms) {
            lock(&self.shared.deadlines).insert(group_id.to_string(), deadline);
        }
        let mut slots = lock(&self.shared.slots);
        match group {
            Some(group) => {
                let state = SlotState {
                    group: Some(group),
                    waiters: HashMap::new(),
                };
                slots.insert(
                    group_id.to_string(),
                    Arc::new(tokio::sync::Mutex::new(state)),
                );
            }
            None => {
                slots.remove(group_id);
            }
        }
        drop(slots);
        self.shared.timer.notify_one();
    }

    pub async fn join(
        &self,
        log: &Partition,
        group_id: &str,
        request: JoinRequest,
        now_ms: i64,
    ) -> JoinOutcome {
        let member_id = request.member_id.clone();
        let client_id = request.client_id.clone();
        // Only a member without an id creates a group; a known id for a group that does
        // not exist (any more) must rejoin from scratch.
        let create = member_id.is_empty();
        let Some(mut locked) = self.shared.lock_group(group_id, create).await else {
            return JoinOutcome::failed(member_id, GroupError::UnknownMemberId);
        };
        let token = self.shared.token();
        let (sender, receiver) = oneshot::channel();
        let state = &mut *locked.state;
        state.waiters.insert(token, Waiter::Join(sender));
        let group = state
            .group
            .get_or_insert_with(|| Group::new(group_id, now_ms));
        let mut new_id = || format!("{client_id}-{}", uuid::Uuid::new_v4());
        let effects = group.join(request, token, now_ms, self.shared.config, &mut new_id);
        self.shared.carry_out(state, log, group_id, effects, now_ms);
        drop(locked);
        receiver
            .await
            .unwrap_or_else(|_| JoinOutcome::failed(member_id, GroupError::UnknownServer))
    }

    pub async fn sync(
        &self,
        log: &Partition,
        group_id: &str,
        request: SyncRequest,
        now_ms: i64,
    ) -> SyncOutcome {
        let Some(mut locked) = self.shared.lock_group(group_id, false).await else {
            return SyncOutcome::failed(GroupError::UnknownMemberId);
        };
        let token = self.shared.token();
        let (sender, receiver) = oneshot::channel();
        let state = &mut *locked.state;
        let Some(group) = state.group.as_mut() else {
            return SyncOutcome::failed(GroupError::UnknownMemberId);
        };
        let effects = group.sync(request, token, now_ms);
        state.waiters.insert(token, Waiter::Sync(sender));
        self.shared.carry_out(state, log, group_id, effects, now_ms);
        drop(locked);
        receiver
            .await
            .unwrap_or_else(|_| SyncOutcome::failed(GroupError::UnknownServer))
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
            .await
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
        let locked = self.shared.lock_group(group_id, false).await;
        let Some(mut locked) = locked.filter(|locked| locked.state.group.is_some()) else {
            return members
                .iter()
                .map(|_| Err(GroupError::UnknownMemberId))
                .collect();
        };
        let state = &mut *locked.state;
        let group = state.group.as_mut().expect("filtered above");
        let (results, effects) = group.leave(members, now_ms);
        self.shared.carry_out(state, log, group_id, effects, now_ms);
        results
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
                tracing::warn!(group = group_id, "no offsets partition for group tick");
                continue;
            };
            let shared = self.shared.clone();
            tokio::spawn(async move { shared.tick(&group_id, &log, now_ms).await });
        }
        lock(&self.shared.deadlines).values().min().copied()
    }

    /// Read access for DescribeGroups / offset validation; waits for the group's step.
    pub async fn with_group<T>(&self, group_id: &str, view: impl FnOnce(Option<&Group>) -> T) -> T {
        match self.shared.lock_group(group_id, false).await {
            Some(locked) => view(locked.state.group.as_ref()),
            None => view(None),
        }
    }

    /// `view` applied to every group (ListGroups), in no particular order.
    pub async fn map_groups<T>(&self, mut view: impl FnMut(&str, &Group) -> T) -> Vec<T> {
        let ids: Vec<String> = lock(&self.shared.slots).keys().cloned().collect();
        let mut seen = Vec::with_capacity(ids.len());
        for group_id in ids {
            let Some(locked) = self.shared.lock_group(&group_id, false).await else {
                continue;
            };
            if let Some(group) = locked.state.group.as_ref() {
                seen.push(view(&group_id, group));
            }
        }
        seen
    }

    /// Whether the group has members, without waiting (offset expiry): a group in the
    /// middle of a step counts as active, so its offsets wait for a later round.
    pub fn has_members_or_busy(&self, group_id: &str) -> bool {
        let Some(slot) = lock(&self.shared.slots).get(group_id).cloned() else {
            return false;
        };
        match slot.try_lock() {
            Ok(state) => state.group.as_ref().is_some_and(|group| !group.is_empty()),
            Err(_) => true,
        }
    }

    /// DeleteGroups for one group with a live state machine entry.
    pub async fn delete(
        &self,
        log: &Partition,
        group_id: &str,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        let mut locked = self
            .shared
            .lock_group(group_id, false)
            .await
            .ok_or(GroupError::GroupIdNotFound)?;
        let state = &mut *locked.state;
        let group = state.group.as_mut().ok_or(GroupError::GroupIdNotFound)?;
        let effects = group.delete()?;
        self.shared.carry_out(state, log, group_id, effects, now_ms);
        state.group = None;
        lock(&self.shared.deadlines).remove(group_id);
        self.shared.forget(group_id, &locked.slot);
        Ok(())
    }

    /// True while some request or tick holds the group's lock (tests wait on this).
    #[cfg(test)]
    fn is_busy(&self, group_id: &str) -> bool {
        let slot = lock(&self.shared.slots).get(group_id).cloned();
        slot.is_some_and(|slot| slot.try_lock().is_err())
    }
}

impl Shared {
    fn token(&self) -> RequestToken {
        RequestToken(self.next_token.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Locks the group's current slot. With `create`, a missing group gets an empty slot
    /// (its `group` is `None`); without it, a missing or empty one is `None`.
    async fn lock_group(&self, group_id: &str, create: bool) -> Option<Locked> {
        loop {
            let slot = {
                let mut slots = lock(&self.slots);
                match slots.get(group_id) {
                    Some(slot) => slot.clone(),
                    None if create => slots.entry(group_id.to_string()).or_default().clone(),
                    None => return None,
                }
            };
            let state = slot.clone().lock_owned().await;
            // Deleted or reloaded while we waited: this slot must not be used (or revived).
            if !self.is_current(group_id, &slot) {
                continue;
            }
            if state.group.is_none() && !create {
                return None;
            }
            return Some(Locked { slot, state });
        }
    }

    fn is_current(&self, group_id: &str, slot: &Slot) -> bool {
        lock(&self.slots)
            .get(group_id)
            .is_some_and(|current| Arc::ptr_eq(current, slot))
    }

    /// Drops the group's slot from the map if it is still the current one.
    fn forget(&self, group_id: &str, slot: &Slot) {
        let mut slots = lock(&self.slots);
        if slots
            .get(group_id)
            .is_some_and(|current| Arc::ptr_eq(current, slot))
        {
            slots.remove(group_id);
        }
    }

    /// One timer tick of one group, under that group's lock only.
    async fn tick(&self, group_id: &str, log: &Partition, now_ms: i64) {
        let Some(mut locked) = self.lock_group(group_id, false).await else {
            return;
        };
        let state = &mut *locked.state;
        let Some(group) = state.group.as_mut() else {
            return;
        };
        let effects = group.tick(now_ms);
        self.carry_out(state, log, group_id, effects, now_ms);
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
    /// delay) is ticked at once rather than through the timer task.
    fn carry_out(
        &self,
        state: &mut SlotState,
        log: &Partition,
        group_id: &str,
        effects: Vec<Effect>,
        now_ms: i64,
    ) {
        let mut effects = effects;
        // Bounded: each tick can only move the group forward a state.
        for _ in 0..8 {
            self.carry_out_once(state, log, group_id, effects, now_ms);
            if state.group.is_none() || !self.take_due(group_id, now_ms) {
                return;
            }
            let Some(group) = state.group.as_mut() else {
                return;
            };
            effects = group.tick(now_ms);
        }
    }

    fn carry_out_once(
        &self,
        state: &mut SlotState,
        log: &Partition,
        group_id: &str,
        effects: Vec<Effect>,
        now_ms: i64,
    ) {
        let mut write_failed = false;
        for effect in effects {
            match effect {
                Effect::Persist(snapshot) => {
                    write_failed |= !persist(log, group_id, Some(&snapshot), now_ms);
                }
                Effect::Tombstone { group_id } => {
                    write_failed |= !persist(log, &group_id, None, now_ms);
                }
                Effect::JoinDone { token, response } => {
                    if let Some(Waiter::Join(sender)) = state.waiters.remove(&token) {
                        let _ = sender.send(response);
                    }
                }
                Effect::SyncDone {
                    token,
                    mut response,
                } => {
                    if write_failed && response.error.is_none() {
                        // Kafka answers SyncGroup only once the assignment is durable.
                        response = SyncOutcome::failed(GroupError::CoordinatorNotAvailable);
                    }
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
    }
}

/// Writes a group's metadata record (or its tombstone); false if the write failed.
fn persist(log: &Partition, group_id: &str, snapshot: Option<&GroupSnapshot>, now_ms: i64) -> bool {
    let key = records::encode_key(&RecordKey::Group {
        group: group_id.to_string(),
    });
    let value = snapshot.map(|snapshot| records::encode_group(&to_record(snapshot)));
    match append_records(log, vec![(key, value)], now_ms) {
        Ok(_) => true,
        Err(error) => {
            tracing::error!(group = group_id, %error, "writing group metadata failed");
            false
        }
    }
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
        let partition = opened.unwrap();
        partition.become_leader(0).unwrap();
        Arc::new(partition)
    }

    fn registry() -> Arc<GroupRegistry> {
        let config = GroupConfig {
            initial_rebalance_delay_ms: 0,
            ..GroupConfig::default()
        };
        Arc::new(GroupRegistry::new(config))
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
        let slot = lock(&registry.shared.slots).get("g").cloned().unwrap();
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
        assert!(lock(&registry.shared.slots).get("g").is_none());
        let rejoin = registry
            .join(&log, "g", join_request(&member), NOW_MS)
            .await;
        assert_eq!(rejoin.error, Some(GroupError::UnknownMemberId));
    }
}
