//! A KIP-848 consumer group (Kafka's `ConsumerGroup` and the ConsumerGroupHeartbeat half
//! of `GroupMetadataManager`) as a pure state machine: a heartbeat goes in with the time,
//! the broker's settings and a view of the metadata image; an answer comes out.
//!
//! Epochs: the group epoch moves when membership, a subscription or a subscribed topic's
//! partition count changes; the target assignment is then recomputed at once (the
//! assignors are pure and quick), and each member is reconciled towards it on its own
//! heartbeats (`member.rs`). No partition is held by two members at once: `holders` names
//! the one member that holds each partition, and a member is only given a partition that
//! no other member holds.
//!
//! Persisted as Kafka persists it: every step marks the records it may have changed
//! (`dirty`), and the shell writes what [`ConsumerGroup::take_changes`] returns to
//! `__consumer_offsets` before it answers (`persisted.rs`). A reload, or a write that
//! failed, rebuilds the group from those records.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use uuid::Uuid;

use super::assignor::{Assignment, Assignor, AssignorMember, TopicInfo};
use super::member::{ConsumerMember, LEFT_STATIC_EPOCH, MemberState, Target, is_subset};
use super::records::{ConsumerKey, ConsumerValue};
use super::topic_regex::TopicRegex;
use crate::group::GroupError;

/// A member's epoch in a heartbeat that joins (or rejoins) the group.
pub const JOIN_EPOCH: i32 = 0;
/// A member's epoch in a heartbeat that leaves the group for good.
pub const LEAVE_EPOCH: i32 = -1;

/// The configured assignors, most preferred first (`group.consumer.assignors`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assignors {
    pub first: Assignor,
    pub second: Option<Assignor>,
}

impl Assignors {
    pub fn get(self, name: &str) -> Option<Assignor> {
        let named = Assignor::from_name(name)?;
        (named == self.first || Some(named) == self.second).then_some(named)
    }
}

/// The broker's consumer-group settings, Kafka names in the comments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsumerGroupConfig {
    /// `group.consumer.session.timeout.ms`
    pub session_timeout_ms: i32,
    /// `group.consumer.heartbeat.interval.ms`
    pub heartbeat_interval_ms: i32,
    /// `group.consumer.max.size`
    pub max_size: i32,
    /// `group.consumer.assignors`
    pub assignors: Assignors,
    /// `group.consumer.min/max.session.timeout.ms`: what a group's own
    /// `consumer.session.timeout.ms` may be.
    pub session_timeout_bounds_ms: (i32, i32),
    /// `group.consumer.min/max.heartbeat.interval.ms`, likewise.
    pub heartbeat_interval_bounds_ms: (i32, i32),
}

impl Default for ConsumerGroupConfig {
    fn default() -> Self {
        Self {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            max_size: i32::MAX,
            assignors: Assignors {
                first: Assignor::Uniform,
                second: Some(Assignor::Range),
            },
            session_timeout_bounds_ms: (45_000, 60_000),
            heartbeat_interval_bounds_ms: (5_000, 15_000),
        }
    }
}

/// A decoded ConsumerGroupHeartbeat plus what the connection knows about the client.
/// `None` (or -1 for the timeout) means "unchanged since the last heartbeat".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeartbeatRequest {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Option<Vec<String>>,
    /// v1+: an empty string drops a regex subscription.
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// The partitions the member owns, by topic id.
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
    /// v1+ (KIP-1082): the client makes its member id, so a join must carry one.
    pub client_makes_member_id: bool,
}

/// A heartbeat's answer; `assignment` is sent only on a join, a full heartbeat, or when
/// the member's assigned partitions changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatAnswer {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    pub assignment: Option<Assignment>,
}

/// Kafka's `ConsumerGroup.ConsumerGroupState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsumerGroupState {
    Empty,
    /// The group epoch moved and no heartbeat has recomputed the target yet.
    Assigning,
    /// Some member has not reached the target epoch with its whole target.
    Reconciling,
    Stable,
}

impl ConsumerGroupState {
    /// The name ListGroups and DescribeGroups give (Kafka's `toString`).
    pub fn name(self) -> &'static str {
        match self {
            ConsumerGroupState::Empty => "Empty",
            ConsumerGroupState::Assigning => "Assigning",
            ConsumerGroupState::Reconciling => "Reconciling",
            ConsumerGroupState::Stable => "Stable",
        }
    }
}

#[derive(Clone, Debug)]
pub struct ConsumerGroup {
    pub(super) group_id: String,
    pub(super) group_epoch: i32,
    /// The group epoch the target assignment was computed at.
    pub(super) target_epoch: i32,
    pub(super) members: BTreeMap<String, ConsumerMember>,
    /// Member id -> its target assignment.
    pub(super) targets: BTreeMap<String, Assignment>,
    /// The subscribed topics (by name or by a member's regex) as the last heartbeat saw
    /// them; a change moves the group epoch.
    pub(super) topics: BTreeMap<String, TopicInfo>,
    /// Each subscribed regex and the topics it matched then.
    pub(super) resolved: BTreeMap<String, BTreeSet<String>>,
    /// Compiled subscribed regexes, by pattern.
    pub(super) regexes: HashMap<String, TopicRegex>,
    /// Partition -> the member holding it (assigned, or still revoking).
    pub(super) holders: HashMap<(Uuid, i32), String>,
    /// The topic source's version `topics` and `resolved` were computed at; `None` once a
    /// subscription may have changed outside a heartbeat (a member removed).
    pub(super) topics_version: Option<i64>,
    /// Records a step may have changed since the last [`ConsumerGroup::take_changes`].
    pub(super) dirty: BTreeSet<ConsumerKey>,
    /// What the log holds for the group (appended, maybe not yet committed): the latest
    /// value of each of its records.
    pub(super) persisted: BTreeMap<ConsumerKey, ConsumerValue>,
}

/// The metadata image as a group sees it.
pub trait TopicSource {
    /// A topic by name, if it exists.
    fn lookup(&self, name: &str) -> Option<TopicInfo>;
    /// Every topic a regex may match (internal topics are left out).
    fn names(&self) -> Vec<String>;
    /// Changes whenever the topics may have (the metadata image's offset): the subscribed
    /// topics are looked up and the regexes matched again only then.
    fn version(&self) -> i64;
}

impl ConsumerGroup {
    pub fn new(group_id: &str) -> ConsumerGroup {
        ConsumerGroup {
            group_id: group_id.to_string(),
            group_epoch: 0,
            target_epoch: 0,
            members: BTreeMap::new(),
            targets: BTreeMap::new(),
            topics: BTreeMap::new(),
            resolved: BTreeMap::new(),
            regexes: HashMap::new(),
            holders: HashMap::new(),
            topics_version: None,
            dirty: BTreeSet::new(),
            persisted: BTreeMap::new(),
        }
    }

    pub fn group_epoch(&self) -> i32 {
        self.group_epoch
    }

    pub fn target_epoch(&self) -> i32 {
        self.target_epoch
    }

    pub fn members(&self) -> impl Iterator<Item = &ConsumerMember> {
        self.members.values()
    }

    pub fn target_of(&self, member_id: &str) -> Option<&Assignment> {
        self.targets.get(member_id)
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn state(&self) -> ConsumerGroupState {
        if self.members.is_empty() {
            ConsumerGroupState::Empty
        } else if self.group_epoch != self.target_epoch {
            ConsumerGroupState::Assigning
        } else if self
            .members
            .values()
            .any(|m| !m.is_reconciled_to(self.target_epoch))
        {
            ConsumerGroupState::Reconciling
        } else {
            ConsumerGroupState::Stable
        }
    }

    /// The assignor the group runs: the one most members asked for (ties go to the
    /// configured order), else the first configured (Kafka's rule).
    pub fn assignor(&self, config: &ConsumerGroupConfig) -> Assignor {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some(name) = member.server_assignor.as_deref() {
                *votes.entry(name).or_default() += 1;
            }
        }
        let assignors = config.assignors;
        let order = |a: Assignor| if a == assignors.first { 0 } else { 1 };
        votes
            .into_iter()
            .filter_map(|(name, count)| assignors.get(name).map(|a| (a, count)))
            .max_by_key(|(a, count)| (*count, std::cmp::Reverse(order(*a))))
            .map_or(assignors.first, |(a, _)| a)
    }

    /// Every topic a member subscribes to, by name or through its regex (OffsetDelete
    /// refuses to drop their offsets).
    pub fn subscribed_topic_names(&self) -> BTreeSet<String> {
        self.names_and_matches(&self.resolved).cloned().collect()
    }

    /// Every member's topic names, then every name `resolved` regexes matched.
    fn names_and_matches<'a>(
        &'a self,
        resolved: &'a BTreeMap<String, BTreeSet<String>>,
    ) -> impl Iterator<Item = &'a String> {
        let by_name = self.members.values().flat_map(|m| m.subscribed.iter());
        by_name.chain(resolved.values().flatten())
    }

    /// When the next member's session or revocation deadline falls.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        self.members
            .values()
            .flat_map(|m| [Some(m.session_deadline_ms), m.revocation_deadline_ms])
            .flatten()
            .min()
    }

    /// Removes members whose session ended or who did not revoke in time (Kafka fences
    /// them).
    pub fn tick(&mut self, now_ms: i64) {
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.session_deadline_ms <= now_ms
                    || m.revocation_deadline_ms.is_some_and(|at| at <= now_ms)
            })
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in &expired {
            tracing::info!(group = self.group_id, member = member_id, "member fenced");
            self.remove_member(member_id);
        }
    }

    /// One ConsumerGroupHeartbeat.
    pub fn heartbeat(
        &mut self,
        request: HeartbeatRequest,
        now_ms: i64,
        config: &ConsumerGroupConfig,
        topics: &dyn TopicSource,
        new_member_id: &mut dyn FnMut() -> String,
    ) -> Result<HeartbeatAnswer, GroupError> {
        validate(&request, config)?;
        // Compiled before anything is looked up (Kafka refuses a bad pattern first), kept
        // only once a member subscribes with it.
        let new_regex = match request.subscribed_topic_regex.as_deref() {
            Some(pattern) if !pattern.is_empty() && !self.regexes.contains_key(pattern) => {
                let regex =
                    TopicRegex::new(pattern).map_err(GroupError::InvalidRegularExpression)?;
                Some((pattern.to_string(), regex))
            }
            _ => None,
        };
        if request.member_epoch == LEAVE_EPOCH || request.member_epoch == LEFT_STATIC_EPOCH {
            return self.leave(&request, config);
        }
        let (member_id, joined) = self.find_or_join(&request, config, now_ms, new_member_id)?;
        self.regexes.extend(new_regex);
        let member = self.members.get_mut(&member_id).expect("found or joined");
        let assigned_before = member.assigned.clone();
        let mut changed = apply_request(member, &request) || joined;
        member.session_deadline_ms = now_ms + i64::from(config.session_timeout_ms);
        // Marked on every heartbeat; `take_changes` writes them only if they changed.
        self.dirty.insert(ConsumerKey::Member(member_id.clone()));
        self.dirty
            .insert(ConsumerKey::CurrentAssignment(member_id.clone()));

        // The common heartbeat (same subscriptions, same metadata) skips this: it scans
        // every member's subscription and matches every regex against every topic.
        // Only a newer version: a request that took its image before a newer one's
        // heartbeat ran must not take the group back to older topics.
        let version = topics.version();
        if changed || self.topics_version.is_none_or(|seen| version > seen) {
            let (subscribed, resolved) = self.subscribed_topics(topics);
            self.topics_version = Some(version);
            if subscribed != self.topics {
                self.topics = subscribed;
                self.dirty.insert(ConsumerKey::PartitionMetadata);
                changed = true;
            }
            if resolved != self.resolved {
                let patterns = self.resolved.keys().chain(resolved.keys());
                (self.dirty).extend(patterns.map(|p| ConsumerKey::Regex(p.clone())));
                self.resolved = resolved;
                changed = true;
            }
        }
        if changed {
            self.bump_group_epoch();
        }
        if self.group_epoch > self.target_epoch {
            self.compute_targets(config);
        }
        self.reconcile(&member_id, request.owned.as_ref(), now_ms);

        let member = &self.members[&member_id];
        let full = request.rebalance_timeout_ms != -1
            && (request.subscribed_topic_names.is_some()
                || request.subscribed_topic_regex.is_some())
            && request.owned.is_some();
        let send = request.member_epoch == JOIN_EPOCH || full || member.assigned != assigned_before;
        Ok(HeartbeatAnswer {
            member_id: member_id.clone(),
            member_epoch: member.member_epoch,
            heartbeat_interval_ms: config.heartbeat_interval_ms,
            assignment: send.then(|| member.assigned.clone()),
        })
    }

    /// The member a heartbeat speaks for: an existing one (epoch checked), or one that
    /// joins now (epoch 0), possibly taking over a static member's place. The flag is set
    /// for a member new to the group, whose arrival moves the group epoch.
    fn find_or_join(
        &mut self,
        request: &HeartbeatRequest,
        config: &ConsumerGroupConfig,
        now_ms: i64,
        new_member_id: &mut dyn FnMut() -> String,
    ) -> Result<(String, bool), GroupError> {
        let static_holder = (request.instance_id.as_deref())
            .and_then(|instance| self.static_member(instance))
            .map(|m| m.member_id.clone());
        if request.member_epoch != JOIN_EPOCH {
            // A static member is found by its instance id, when the heartbeat carries it
            // (Kafka: unknown instance -> UNKNOWN_MEMBER_ID, another member's ->
            // FENCED_INSTANCE_ID).
            if request.instance_id.is_some() {
                match &static_holder {
                    None => return Err(GroupError::UnknownMemberId),
                    Some(holder) if *holder != request.member_id => {
                        return Err(GroupError::FencedInstanceId);
                    }
                    Some(_) => {}
                }
            }
            let member = self
                .members
                .get(&request.member_id)
                .ok_or(GroupError::UnknownMemberId)?;
            let epoch = request.member_epoch;
            let lost_answer = epoch == member.previous_epoch
                && request
                    .owned
                    .as_ref()
                    .is_some_and(|owned| is_subset(owned, &member.assigned));
            if epoch > member.member_epoch || (epoch < member.member_epoch && !lost_answer) {
                return Err(GroupError::FencedMemberEpoch);
            }
            return Ok((request.member_id.clone(), false));
        }
        if !request.member_id.is_empty() && self.members.contains_key(&request.member_id) {
            if static_holder
                .as_ref()
                .is_some_and(|holder| *holder != request.member_id)
            {
                return Err(GroupError::UnreleasedInstanceId);
            }
            return Ok((request.member_id.clone(), false));
        }
        let member_id = if request.member_id.is_empty() {
            new_member_id()
        } else {
            request.member_id.clone()
        };
        if let Some(holder) = static_holder {
            self.take_over_static(&holder, &member_id)?;
            return Ok((member_id, false));
        }
        if self.members.len() >= usize::try_from(config.max_size).unwrap_or(0) {
            return Err(GroupError::GroupMaxSizeReached);
        }
        let member = ConsumerMember {
            member_id: member_id.clone(),
            instance_id: request.instance_id.clone(),
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            rebalance_timeout_ms: request.rebalance_timeout_ms,
            subscribed: Vec::new(),
            subscribed_regex: None,
            server_assignor: None,
            state: MemberState::Stable,
            member_epoch: JOIN_EPOCH,
            previous_epoch: JOIN_EPOCH,
            assigned: Assignment::new(),
            pending_revocation: Assignment::new(),
            session_deadline_ms: now_ms + i64::from(config.session_timeout_ms),
            revocation_deadline_ms: None,
        };
        self.members.insert(member_id.clone(), member);
        Ok((member_id, true))
    }

    /// A static instance back under a new member id takes over the old member's
    /// partitions and epoch, so nothing moves (KIP-345's promise, kept by KIP-848); only
    /// while the old one is away (it left with epoch -2).
    fn take_over_static(&mut self, old_id: &str, new_id: &str) -> Result<(), GroupError> {
        if self.members[old_id].member_epoch != LEFT_STATIC_EPOCH {
            return Err(GroupError::UnreleasedInstanceId);
        }
        let mut member = self.members.remove(old_id).expect("found by the caller");
        self.mark_member(old_id);
        self.mark_member(new_id);
        member.member_id = new_id.to_string();
        member.member_epoch = member.previous_epoch;
        for holder in self.holders.values_mut() {
            if holder == old_id {
                *holder = new_id.to_string();
            }
        }
        if let Some(target) = self.targets.remove(old_id) {
            self.targets.insert(new_id.to_string(), target);
        }
        self.members.insert(new_id.to_string(), member);
        Ok(())
    }

    fn static_member(&self, instance_id: &str) -> Option<&ConsumerMember> {
        (self.members.values()).find(|m| m.instance_id.as_deref() == Some(instance_id))
    }

    fn leave(
        &mut self,
        request: &HeartbeatRequest,
        config: &ConsumerGroupConfig,
    ) -> Result<HeartbeatAnswer, GroupError> {
        let member_id = match request.instance_id.as_deref() {
            Some(instance) => {
                let holder = self
                    .static_member(instance)
                    .ok_or(GroupError::UnknownMemberId)?;
                if holder.member_id != request.member_id {
                    return Err(GroupError::FencedInstanceId);
                }
                holder.member_id.clone()
            }
            None if self.members.contains_key(&request.member_id) => request.member_id.clone(),
            None => return Err(GroupError::UnknownMemberId),
        };
        if request.member_epoch == LEFT_STATIC_EPOCH {
            // Away for a restart: keeps its assigned partitions until its session ends, but
            // what it was revoking is free at once and no revocation timeout fences it
            // (Kafka's `consumerGroupStaticMemberGroupLeave`).
            (self.dirty).insert(ConsumerKey::CurrentAssignment(member_id.clone()));
            let member = self.members.get_mut(&member_id).expect("found above");
            if member.member_epoch != LEFT_STATIC_EPOCH {
                member.previous_epoch = member.member_epoch;
                member.member_epoch = LEFT_STATIC_EPOCH;
            }
            let released: Vec<(Uuid, i32)> = (member.pending_revocation.iter())
                .flat_map(|(topic, partitions)| partitions.iter().map(move |p| (*topic, *p)))
                .collect();
            member.pending_revocation.clear();
            member.revocation_deadline_ms = None;
            for partition in released {
                self.holders.remove(&partition);
            }
        } else {
            tracing::info!(group = self.group_id, member = member_id, "member left");
            self.remove_member(&member_id);
        }
        Ok(HeartbeatAnswer {
            member_id,
            member_epoch: request.member_epoch,
            heartbeat_interval_ms: config.heartbeat_interval_ms,
            assignment: None,
        })
    }

    fn remove_member(&mut self, member_id: &str) {
        if self.members.remove(member_id).is_none() {
            return;
        }
        self.targets.remove(member_id);
        self.holders.retain(|_, holder| holder != member_id);
        self.topics_version = None;
        self.mark_member(member_id);
        self.bump_group_epoch();
    }

    /// Marks every record of one member.
    fn mark_member(&mut self, member_id: &str) {
        self.dirty.extend([
            ConsumerKey::Member(member_id.to_string()),
            ConsumerKey::TargetMember(member_id.to_string()),
            ConsumerKey::CurrentAssignment(member_id.to_string()),
        ]);
    }

    fn bump_group_epoch(&mut self) {
        // Saturating: an epoch read from disk may be anything.
        self.group_epoch = self.group_epoch.saturating_add(1);
        self.dirty.insert(ConsumerKey::Metadata);
    }

    /// Every topic some member subscribes to, by name or by regex, that exists now; and
    /// what each regex matched. Regexes no member uses any more are dropped.
    fn subscribed_topics(
        &mut self,
        source: &dyn TopicSource,
    ) -> (
        BTreeMap<String, TopicInfo>,
        BTreeMap<String, BTreeSet<String>>,
    ) {
        let patterns: BTreeSet<&str> = self
            .members
            .values()
            .filter_map(|m| m.subscribed_regex.as_deref())
            .collect();
        self.regexes
            .retain(|pattern, _| patterns.contains(pattern.as_str()));
        let mut resolved = BTreeMap::new();
        if !patterns.is_empty() {
            let names = source.names();
            for pattern in patterns {
                let Some(regex) = self.regexes.get(pattern) else {
                    continue;
                };
                let matched = names.iter().filter(|n| regex.matches(n)).cloned().collect();
                resolved.insert(pattern.to_string(), matched);
            }
        }
        let mut topics = BTreeMap::new();
        for name in self.names_and_matches(&resolved) {
            if topics.contains_key(name) {
                continue;
            }
            if let Some(info) = source.lookup(name).filter(|info| info.partitions > 0) {
                topics.insert(name.clone(), info);
            }
        }
        (topics, resolved)
    }

    /// A member's subscription: its topic names and what its regex matched.
    fn effective_subscription(&self, member: &ConsumerMember) -> Vec<String> {
        let matched = member
            .subscribed_regex
            .as_ref()
            .and_then(|pattern| self.resolved.get(pattern))
            .into_iter()
            .flatten();
        let all: BTreeSet<&String> = member.subscribed.iter().chain(matched).collect();
        all.into_iter().cloned().collect()
    }

    fn compute_targets(&mut self, config: &ConsumerGroupConfig) {
        let assignor = self.assignor(config);
        let subscriptions: Vec<(&str, Vec<String>)> = self
            .members
            .values()
            .map(|m| (m.member_id.as_str(), self.effective_subscription(m)))
            .collect();
        let members: Vec<AssignorMember<'_>> = subscriptions
            .iter()
            .map(|(member_id, subscribed)| AssignorMember {
                member_id,
                subscribed,
                previous: self.targets.get(*member_id),
            })
            .collect();
        let targets = assignor.assign(&members, &self.topics);
        let moved = self.targets.keys().chain(targets.keys());
        (self.dirty).extend(moved.map(|m| ConsumerKey::TargetMember(m.clone())));
        self.dirty.insert(ConsumerKey::TargetMetadata);
        self.targets = targets;
        self.target_epoch = self.group_epoch;
    }

    /// Moves one member towards its target and keeps `holders` and its revocation
    /// deadline in step.
    fn reconcile(&mut self, member_id: &str, owned: Option<&Assignment>, now_ms: i64) {
        // The common heartbeat: nothing to move, so no holding to rewrite.
        if self.members[member_id].is_reconciled_to(self.target_epoch) {
            return;
        }
        let empty = Assignment::new();
        let partitions = self.targets.get(member_id).unwrap_or(&empty);
        let holders = &self.holders;
        let owned_elsewhere =
            |topic: Uuid, p: i32| holders.get(&(topic, p)).is_some_and(|h| h != member_id);
        let target = Target {
            epoch: self.target_epoch,
            partitions,
            owned_elsewhere: &owned_elsewhere,
        };
        let member = self.members.get_mut(member_id).expect("a member");
        let was = (member.state, member.member_epoch);
        member.reconcile(&target, owned);
        if member.state != MemberState::UnrevokedPartitions {
            member.revocation_deadline_ms = None;
        } else if was != (member.state, member.member_epoch)
            || member.revocation_deadline_ms.is_none()
        {
            let timeout = i64::from(member.rebalance_timeout_ms.max(0));
            member.revocation_deadline_ms = Some(now_ms + timeout);
        }
        let holds: Vec<(Uuid, i32)> = member.holds().collect();
        self.holders.retain(|_, holder| holder != member_id);
        for partition in holds {
            let previous = self.holders.insert(partition, member_id.to_string());
            assert!(
                previous.is_none(),
                "{partition:?} given while another member holds it"
            );
        }
    }

    /// The group's bookkeeping agrees with itself (simulation and tests): members hold
    /// disjoint partitions, `holders` names exactly those, targets are disjoint, and no
    /// member is ahead of the target epoch.
    #[cfg(test)]
    pub fn check(&self) {
        let mut held = HashMap::new();
        for member in self.members.values() {
            for partition in member.holds() {
                let other = held.insert(partition, member.member_id.clone());
                assert!(
                    other.is_none(),
                    "{partition:?} held by {other:?} and {member:?}"
                );
            }
            assert!(member.member_epoch <= self.target_epoch);
        }
        assert_eq!(held, self.holders);
        let mut targeted = std::collections::HashSet::new();
        for target in self.targets.values() {
            for (topic, partitions) in target {
                for partition in partitions {
                    assert!(targeted.insert((*topic, *partition)), "targeted twice");
                }
            }
        }
        assert!(self.target_epoch <= self.group_epoch);
    }

    /// Kafka's `ConsumerGroup.validateOffsetCommit`. `version` is OffsetCommit's; `None`
    /// for TxnOffsetCommit, which may also leave the member out entirely.
    pub fn validate_offset_commit(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        member_epoch: i32,
        version: Option<i16>,
    ) -> Result<(), GroupError> {
        // An admin client or a consumer without group management: only to an empty group.
        if member_epoch < 0 && self.members.is_empty() {
            return Ok(());
        }
        let anonymous = member_epoch == -1 && member_id.is_empty() && instance_id.is_none();
        if version.is_none() && anonymous {
            return Ok(());
        }
        let member = self
            .members
            .get(member_id)
            .ok_or(GroupError::UnknownMemberId)?;
        if version.is_some_and(|v| v < 9) {
            return Err(GroupError::UnsupportedVersion);
        }
        if member_epoch != member.member_epoch {
            return Err(GroupError::StaleMemberEpoch);
        }
        Ok(())
    }

    /// Kafka's `ConsumerGroup.validateOffsetFetch` (OffsetFetch v9+): a request that names
    /// no member (an admin client) reads freely; one that does must be that member at its
    /// current epoch.
    pub fn validate_offset_fetch(
        &self,
        member_id: Option<&str>,
        member_epoch: i32,
    ) -> Result<(), GroupError> {
        let Some(member_id) = member_id else {
            return if member_epoch < 0 {
                Ok(())
            } else {
                Err(GroupError::UnknownMemberId)
            };
        };
        let member = self
            .members
            .get(member_id)
            .ok_or(GroupError::UnknownMemberId)?;
        if member_epoch != member.member_epoch {
            return Err(GroupError::StaleMemberEpoch);
        }
        Ok(())
    }
}

/// Takes what the heartbeat changed into the member; true when that moves the group epoch
/// (its subscription or its assignor; Kafka's `hasMemberSubscriptionChanged`).
fn apply_request(member: &mut ConsumerMember, request: &HeartbeatRequest) -> bool {
    let mut changed = false;
    if let Some(names) = &request.subscribed_topic_names {
        let mut names = names.clone();
        names.sort_unstable();
        names.dedup();
        changed |= names != member.subscribed;
        member.subscribed = names;
    }
    if let Some(pattern) = &request.subscribed_topic_regex {
        let pattern = Some(pattern.clone()).filter(|p| !p.is_empty());
        changed |= pattern != member.subscribed_regex;
        member.subscribed_regex = pattern;
    }
    if let Some(assignor) = &request.server_assignor {
        changed |= member.server_assignor.as_ref() != Some(assignor);
        member.server_assignor = Some(assignor.clone());
    }
    // Kept for ConsumerGroupDescribe; no assignor here is rack-aware.
    if let Some(rack) = &request.rack_id {
        member.rack_id = Some(rack.clone());
    }
    if request.rebalance_timeout_ms != -1 {
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
    }
    member.client_id = request.client_id.clone();
    member.client_host = request.client_host.clone();
    changed
}

/// Kafka's `throwIfConsumerGroupHeartbeatRequestIsInvalid`, before any state is looked at.
fn validate(request: &HeartbeatRequest, config: &ConsumerGroupConfig) -> Result<(), GroupError> {
    let invalid = |why: &str| Err(GroupError::InvalidRequest(why.to_string()));
    if request.instance_id.as_deref() == Some("") {
        return invalid("InstanceId can't be empty.");
    }
    if request.rack_id.as_deref() == Some("") {
        return invalid("RackId can't be empty.");
    }
    match request.member_epoch {
        JOIN_EPOCH => {
            if request.rebalance_timeout_ms == -1 {
                return invalid("RebalanceTimeoutMs must be provided in first request.");
            }
            if request.owned.as_ref().is_none_or(|owned| !owned.is_empty()) {
                return invalid("TopicPartitions must be empty when (re-)joining.");
            }
            if request.subscribed_topic_names.is_none() && request.subscribed_topic_regex.is_none()
            {
                return invalid(
                    "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.",
                );
            }
            if request.client_makes_member_id && request.member_id.is_empty() {
                return invalid("MemberId can't be empty.");
            }
        }
        LEFT_STATIC_EPOCH if request.instance_id.is_none() => {
            return invalid("InstanceId can't be null.");
        }
        epoch if epoch < LEFT_STATIC_EPOCH => return invalid("MemberEpoch is invalid."),
        _ if request.member_id.is_empty() => return invalid("MemberId can't be empty."),
        _ => {}
    }
    if let Some(name) = request.server_assignor.as_deref()
        && config.assignors.get(name).is_none()
    {
        return Err(GroupError::UnsupportedAssignor);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One topic "t" of four partitions.
    struct OneTopic;

    impl TopicSource for OneTopic {
        fn lookup(&self, name: &str) -> Option<TopicInfo> {
            (name == "t").then_some(TopicInfo {
                id: Uuid::from_u128(7),
                partitions: 4,
            })
        }

        fn names(&self) -> Vec<String> {
            vec!["t".into()]
        }

        fn version(&self) -> i64 {
            0
        }
    }

    fn join(member_id: &str, instance: Option<&str>) -> HeartbeatRequest {
        HeartbeatRequest {
            member_id: member_id.into(),
            instance_id: instance.map(String::from),
            rebalance_timeout_ms: 5_000,
            subscribed_topic_names: Some(vec!["t".into()]),
            owned: Some(Assignment::new()),
            client_makes_member_id: true,
            ..HeartbeatRequest::default()
        }
    }

    fn beat(member_id: &str, epoch: i32, owned: &[i32]) -> HeartbeatRequest {
        let owned = Assignment::from([(Uuid::from_u128(7), owned.iter().copied().collect())]);
        HeartbeatRequest {
            member_id: member_id.into(),
            member_epoch: epoch,
            rebalance_timeout_ms: -1,
            owned: Some(owned),
            ..HeartbeatRequest::default()
        }
    }

    fn send(
        group: &mut ConsumerGroup,
        request: HeartbeatRequest,
    ) -> Result<HeartbeatAnswer, GroupError> {
        let config = ConsumerGroupConfig::default();
        let answer = group.heartbeat(request, 1_000, &config, &OneTopic, &mut || "x".into());
        group.check();
        answer
    }

    fn partitions(answer: &HeartbeatAnswer) -> Vec<i32> {
        let assignment = answer.assignment.as_ref().expect("an assignment");
        assignment.values().flatten().copied().collect()
    }

    #[test]
    fn epochs_are_checked_and_the_member_is_fenced_when_wrong() {
        let mut group = ConsumerGroup::new("g");
        let a = send(&mut group, join("a", None)).unwrap();
        assert_eq!((a.member_epoch, partitions(&a)), (1, vec![0, 1, 2, 3]));
        assert_eq!(
            send(&mut group, beat("a", 1, &[0, 1, 2, 3]))
                .unwrap()
                .assignment,
            None
        );
        let fenced = send(&mut group, beat("a", 2, &[]));
        assert_eq!(fenced, Err(GroupError::FencedMemberEpoch));
        let unknown = send(&mut group, beat("b", 1, &[]));
        assert_eq!(unknown, Err(GroupError::UnknownMemberId));
        assert_eq!(group.validate_offset_fetch(Some("a"), 1), Ok(()));
        assert_eq!(
            group.validate_offset_fetch(Some("a"), 0),
            Err(GroupError::StaleMemberEpoch)
        );
        assert_eq!(group.validate_offset_fetch(None, -1), Ok(()));
        assert_eq!(
            group.validate_offset_fetch(Some("b"), 1),
            Err(GroupError::UnknownMemberId)
        );
        assert_eq!(group.validate_offset_commit("", None, -1, None), Ok(()));
        let anonymous = group.validate_offset_commit("", None, -1, Some(9));
        assert_eq!(anonymous, Err(GroupError::UnknownMemberId));
    }

    #[test]
    fn a_second_member_gets_only_what_the_first_revoked() {
        let mut group = ConsumerGroup::new("g");
        send(&mut group, join("a", None)).unwrap();
        let b = send(&mut group, join("b", None)).unwrap();
        // a still holds everything: b waits at the new epoch with nothing yet.
        assert_eq!((b.member_epoch, partitions(&b)), (2, vec![]));
        let a = send(&mut group, beat("a", 1, &[0, 1, 2, 3])).unwrap();
        assert_eq!(a.member_epoch, 1, "a revokes at its epoch first");
        let kept = partitions(&a);
        assert_eq!(kept.len(), 2);
        let a = send(&mut group, beat("a", 1, &kept)).unwrap();
        assert_eq!(a.member_epoch, 2);
        let b = send(&mut group, beat("b", 2, &[])).unwrap();
        let mut all = kept.clone();
        all.extend(partitions(&b));
        all.sort_unstable();
        assert_eq!(all, vec![0, 1, 2, 3]);
        assert_eq!(group.state(), ConsumerGroupState::Stable);
    }

    #[test]
    fn a_static_member_away_keeps_its_partitions_and_its_restart_takes_them() {
        let mut group = ConsumerGroup::new("g");
        send(&mut group, join("a", None)).unwrap();
        send(&mut group, join("s1", Some("i"))).unwrap();
        let a = send(&mut group, beat("a", 1, &[0, 1, 2, 3])).unwrap();
        let kept = partitions(&a);
        send(&mut group, beat("a", 1, &kept)).unwrap();
        let s = send(&mut group, beat("s1", 2, &[])).unwrap();
        let theirs = partitions(&s);
        let away = HeartbeatRequest {
            member_epoch: LEFT_STATIC_EPOCH,
            ..join("s1", Some("i"))
        };
        assert_eq!(
            send(&mut group, away).unwrap().member_epoch,
            LEFT_STATIC_EPOCH
        );
        // Away, its instance id is free for the restarted instance (a new member id).
        let again = send(&mut group, join("s2", Some("i"))).unwrap();
        assert_eq!(partitions(&again), theirs);
        assert_eq!(again.member_epoch, 2);
        // The old member id is fenced by the instance's new one.
        let old = HeartbeatRequest {
            instance_id: Some("i".into()),
            ..beat("s1", 2, &theirs)
        };
        assert_eq!(send(&mut group, old), Err(GroupError::FencedInstanceId));
        // An active instance id cannot be taken.
        assert_eq!(
            send(&mut group, join("s3", Some("i"))),
            Err(GroupError::UnreleasedInstanceId)
        );
    }

    #[test]
    fn requests_kafka_refuses_are_refused() {
        let mut group = ConsumerGroup::new("g");
        let no_timeout = HeartbeatRequest {
            rebalance_timeout_ms: -1,
            ..join("a", None)
        };
        let refused = send(&mut group, no_timeout);
        assert!(
            matches!(refused, Err(GroupError::InvalidRequest(ref why)) if why.contains("Rebalance"))
        );
        let owning = HeartbeatRequest {
            owned: None,
            ..join("a", None)
        };
        assert!(matches!(
            send(&mut group, owning),
            Err(GroupError::InvalidRequest(_))
        ));
        assert!(matches!(
            send(&mut group, join("", None)),
            Err(GroupError::InvalidRequest(_))
        ));
        let bad_regex = HeartbeatRequest {
            subscribed_topic_regex: Some("(".into()),
            ..join("a", None)
        };
        let refused = send(&mut group, bad_regex);
        assert!(matches!(
            refused,
            Err(GroupError::InvalidRegularExpression(_))
        ));
        let sticky = HeartbeatRequest {
            server_assignor: Some("sticky".into()),
            ..join("a", None)
        };
        assert_eq!(
            send(&mut group, sticky),
            Err(GroupError::UnsupportedAssignor)
        );
        assert!(group.is_empty() && group.regexes.is_empty());
    }

    /// Topics "t1", and "t2" once `grown`; `version` as given.
    struct Growing {
        grown: bool,
        version: i64,
    }

    impl TopicSource for Growing {
        fn lookup(&self, name: &str) -> Option<TopicInfo> {
            let id = match name {
                "t1" => 1,
                "t2" if self.grown => 2,
                _ => return None,
            };
            let partitions = 1;
            Some(TopicInfo {
                id: Uuid::from_u128(id),
                partitions,
            })
        }

        fn names(&self) -> Vec<String> {
            let names: &[&str] = if self.grown { &["t1", "t2"] } else { &["t1"] };
            names.iter().map(|n| n.to_string()).collect()
        }

        fn version(&self) -> i64 {
            self.version
        }
    }

    /// Topics are looked up and regexes matched again only when the source's version
    /// moves (or a subscription changes), so a heartbeat on the same metadata is cheap.
    #[test]
    fn regexes_are_matched_again_when_the_metadata_moves() {
        let config = ConsumerGroupConfig::default();
        let mut group = ConsumerGroup::new("g");
        let beat = |group: &mut ConsumerGroup, request, grown, version| {
            let topics = Growing { grown, version };
            let answer = group.heartbeat(request, 1_000, &config, &topics, &mut || "x".into());
            answer.unwrap()
        };
        let join = HeartbeatRequest {
            subscribed_topic_names: None,
            subscribed_topic_regex: Some("t.*".into()),
            ..join("m", None)
        };
        let joined = beat(&mut group, join, false, 1);
        assert_eq!(joined.member_epoch, 1);
        let owned = Assignment::from([(Uuid::from_u128(1), BTreeSet::from([0]))]);
        let same = HeartbeatRequest {
            member_id: "m".into(),
            member_epoch: 1,
            rebalance_timeout_ms: -1,
            owned: Some(owned),
            ..HeartbeatRequest::default()
        };
        // "t2" exists, but the metadata version has not moved: not seen yet.
        assert_eq!(beat(&mut group, same.clone(), true, 1).member_epoch, 1);
        let moved = beat(&mut group, same, true, 2);
        assert_eq!(moved.member_epoch, 2);
        let both = (moved.assignment.unwrap().keys().copied()).collect::<Vec<_>>();
        assert_eq!(both, vec![Uuid::from_u128(1), Uuid::from_u128(2)]);
    }

    /// A member's removal (here its session ending) makes the next heartbeat look the
    /// topics up again even on the same metadata: the topic only it subscribed to leaves
    /// the group's topics, and that moves the group epoch.
    #[test]
    fn a_removed_member_takes_its_topics_with_it() {
        let config = ConsumerGroupConfig::default();
        let mut group = ConsumerGroup::new("g");
        let topics = Growing {
            grown: true,
            version: 1,
        };
        let beat = |group: &mut ConsumerGroup, request, now_ms| {
            let answer = group.heartbeat(request, now_ms, &config, &topics, &mut || "x".into());
            answer.unwrap()
        };
        let only = |names: &[&str]| HeartbeatRequest {
            subscribed_topic_names: Some(names.iter().map(|n| n.to_string()).collect()),
            ..join("", None)
        };
        let a = HeartbeatRequest {
            member_id: "a".into(),
            ..only(&["t1"])
        };
        let b = HeartbeatRequest {
            member_id: "b".into(),
            ..only(&["t2"])
        };
        beat(&mut group, a, 1_000);
        beat(&mut group, b, 1_000);
        assert_eq!(group.topics.len(), 2);
        let epoch = group.group_epoch();
        // b's session ends (a heartbeats on until then); the next heartbeat drops "t2".
        let session = i64::from(config.session_timeout_ms);
        let keep_alive = |member_epoch| HeartbeatRequest {
            member_id: "a".into(),
            member_epoch,
            rebalance_timeout_ms: -1,
            ..HeartbeatRequest::default()
        };
        let a_epoch = beat(&mut group, keep_alive(1), 1_000 + session / 2).member_epoch;
        group.tick(1_000 + session + 1);
        assert_eq!(group.members().count(), 1);
        beat(&mut group, keep_alive(a_epoch), 1_000 + session + 2);
        assert_eq!(group.topics.keys().collect::<Vec<_>>(), vec!["t1"]);
        assert_eq!(
            group.group_epoch(),
            epoch + 2,
            "b's removal, then t2 leaving"
        );
    }
}
