//! The async shell around the group state machine: one [`Group`] per group id, parked
//! JoinGroup/SyncGroup requests as oneshot channels, and the effects carried out in
//! order (metadata written to `__consumer_offsets` before the answers that depend on it).
//!
//! Timers are event-driven: every `WakeAt` lands in `deadlines`, and the coordinator's
//! timer task sleeps until the earliest one (or until a new earlier one arrives).

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::{Notify, oneshot};

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

#[derive(Default)]
struct Registry {
    groups: HashMap<String, Group>,
    waiters: HashMap<RequestToken, Waiter>,
    /// Group id -> when it next wants a tick.
    deadlines: HashMap<String, i64>,
    next_token: u64,
}

pub struct GroupRegistry {
    config: GroupConfig,
    state: Mutex<Registry>,
    /// Wakes the timer task when a deadline earlier than the ones it sleeps on appears.
    timer: Notify,
}

impl GroupRegistry {
    pub fn new(config: GroupConfig) -> GroupRegistry {
        GroupRegistry {
            config,
            state: Mutex::new(Registry::default()),
            timer: Notify::new(),
        }
    }

    /// Resolves when a new deadline was set (the timer task then recomputes its sleep).
    pub async fn deadline_changed(&self) {
        self.timer.notified().await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Restores a group from its latest metadata record (replay at load).
    pub fn restore(&self, snapshot: Option<GroupSnapshot>, group_id: &str, now_ms: i64) {
        let mut registry = self.lock();
        match snapshot {
            Some(snapshot) => {
                let group = Group::from_snapshot(snapshot, now_ms);
                if let Some(deadline) = group.next_deadline_ms() {
                    registry.deadlines.insert(group_id.to_string(), deadline);
                }
                registry.groups.insert(group_id.to_string(), group);
            }
            None => {
                registry.groups.remove(group_id);
            }
        }
        self.timer.notify_one();
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
        let receiver = {
            let mut registry = self.lock();
            // Only a member without an id creates a group; a known id for a group that
            // does not exist (any more) must rejoin from scratch.
            if !member_id.is_empty() && !registry.groups.contains_key(group_id) {
                return JoinOutcome::failed(member_id, GroupError::UnknownMemberId);
            }
            let token = registry.token();
            let (sender, receiver) = oneshot::channel();
            registry.waiters.insert(token, Waiter::Join(sender));
            let group = registry
                .groups
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(group_id, now_ms));
            let mut new_id = || format!("{client_id}-{}", uuid::Uuid::new_v4());
            let effects = group.join(request, token, now_ms, self.config, &mut new_id);
            self.carry_out(&mut registry, log, group_id, effects, now_ms);
            receiver
        };
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
        let receiver = {
            let mut registry = self.lock();
            if !registry.groups.contains_key(group_id) {
                return SyncOutcome::failed(GroupError::UnknownMemberId);
            }
            let token = registry.token();
            let (sender, receiver) = oneshot::channel();
            registry.waiters.insert(token, Waiter::Sync(sender));
            let group = registry.groups.get_mut(group_id).expect("checked above");
            let effects = group.sync(request, token, now_ms);
            self.carry_out(&mut registry, log, group_id, effects, now_ms);
            receiver
        };
        receiver
            .await
            .unwrap_or_else(|_| SyncOutcome::failed(GroupError::UnknownServer))
    }

    pub fn heartbeat(
        &self,
        group_id: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        let mut registry = self.lock();
        let group = registry
            .groups
            .get_mut(group_id)
            .ok_or(GroupError::UnknownMemberId)?;
        group.heartbeat(member_id, group_instance_id, generation_id, now_ms)
    }

    pub fn leave(
        &self,
        log: &Partition,
        group_id: &str,
        members: Vec<(Option<String>, Option<String>)>,
        now_ms: i64,
    ) -> Vec<Result<(), GroupError>> {
        let mut registry = self.lock();
        let Some(group) = registry.groups.get_mut(group_id) else {
            return members
                .iter()
                .map(|_| Err(GroupError::UnknownMemberId))
                .collect();
        };
        let (results, effects) = group.leave(members, now_ms);
        self.carry_out(&mut registry, log, group_id, effects, now_ms);
        results
    }

    /// Runs `tick` on every group whose deadline passed; returns the next deadline.
    pub fn tick_due(
        &self,
        resolve: &dyn Fn(&str) -> Option<std::sync::Arc<Partition>>,
        now_ms: i64,
    ) -> Option<i64> {
        let mut registry = self.lock();
        let due: Vec<String> = registry
            .deadlines
            .iter()
            .filter(|(_, at)| **at <= now_ms)
            .map(|(group, _)| group.clone())
            .collect();
        for group_id in due {
            registry.deadlines.remove(&group_id);
            let Some(group) = registry.groups.get_mut(&group_id) else {
                continue;
            };
            let effects = group.tick(now_ms);
            match resolve(&group_id) {
                Some(log) => self.carry_out(&mut registry, &log, &group_id, effects, now_ms),
                None => tracing::warn!(group = group_id, "no offsets partition for group tick"),
            }
        }
        registry.deadlines.values().min().copied()
    }

    /// Read access for DescribeGroups / ListGroups / offset validation.
    pub fn with_group<T>(&self, group_id: &str, view: impl FnOnce(Option<&Group>) -> T) -> T {
        view(self.lock().groups.get(group_id))
    }

    pub fn with_groups<T>(&self, view: impl FnOnce(&HashMap<String, Group>) -> T) -> T {
        view(&self.lock().groups)
    }

    /// DeleteGroups for one group with a live state machine entry.
    pub fn delete(&self, log: &Partition, group_id: &str, now_ms: i64) -> Result<(), GroupError> {
        let mut registry = self.lock();
        let Some(group) = registry.groups.get_mut(group_id) else {
            return Err(GroupError::GroupIdNotFound);
        };
        let effects = group.delete()?;
        self.carry_out(&mut registry, log, group_id, effects, now_ms);
        registry.groups.remove(group_id);
        registry.deadlines.remove(group_id);
        Ok(())
    }

    /// Executes effects in order; a deadline that is already due (a rebalance with no
    /// delay) is ticked at once rather than through the timer task.
    fn carry_out(
        &self,
        registry: &mut Registry,
        log: &Partition,
        group_id: &str,
        effects: Vec<Effect>,
        now_ms: i64,
    ) {
        let mut effects = effects;
        // Bounded: each tick can only move the group forward a state.
        for _ in 0..8 {
            self.carry_out_once(registry, log, group_id, effects, now_ms);
            let due = registry
                .deadlines
                .get(group_id)
                .is_some_and(|at| *at <= now_ms);
            let Some(group) = registry.groups.get_mut(group_id).filter(|_| due) else {
                return;
            };
            registry.deadlines.remove(group_id);
            effects = group.tick(now_ms);
        }
    }

    fn carry_out_once(
        &self,
        registry: &mut Registry,
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
                    if let Some(Waiter::Join(sender)) = registry.waiters.remove(&token) {
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
                    if let Some(Waiter::Sync(sender)) = registry.waiters.remove(&token) {
                        let _ = sender.send(response);
                    }
                }
                Effect::WakeAt(at) => {
                    registry.deadlines.insert(group_id.to_string(), at);
                    self.timer.notify_one();
                }
            }
        }
    }
}

impl Registry {
    fn token(&mut self) -> RequestToken {
        self.next_token += 1;
        RequestToken(self.next_token)
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
