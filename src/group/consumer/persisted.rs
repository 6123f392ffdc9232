//! A consumer group and its records in `__consumer_offsets` (Kafka's
//! `GroupCoordinatorRecordHelpers` and the consumer-group half of its replay).
//!
//! - Each step marks the records it may have changed; [`ConsumerGroup::take_changes`]
//!   turns those into the records whose value differs from what the log holds, and the
//!   shell appends them before it answers. [`ConsumerGroup::appended`] then takes them into
//!   `persisted`, the group's own copy of what the log holds.
//! - [`ConsumerGroup::restore`] builds a group from its records: when a partition is loaded,
//!   and when an append failed ([`ConsumerGroup::revert`]), so memory never runs ahead of
//!   the log. Sessions start again at the load (Kafka's `onLoaded`), and a member still
//!   revoking gets a fresh revocation timeout.
//! - Records are data from disk: a restore never panics on them. Two members holding one
//!   partition cannot come from our writes; if the records say so anyway, the later member
//!   (in member-id order) is taken to hold only what no one else does, and its record is
//!   rewritten at the next write. Target or assignment records of a member without
//!   metadata are leftovers and are deleted at the next write.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use super::group::{ConsumerGroup, ConsumerGroupConfig};
use super::member::{ConsumerMember, MemberState};
use super::records::{
    ConsumerKey, ConsumerValue, CurrentAssignment, MemberMetadata, ResolvedRegex,
};
use super::topic_regex::TopicRegex;

/// A record to write: a key and its new value, `None` for a tombstone.
pub type Change = (ConsumerKey, Option<ConsumerValue>);

impl ConsumerGroup {
    /// The records the steps since the last call changed: new values in key order, then
    /// tombstones in reverse key order, the order Kafka's replay demands (a member's
    /// assignment records are deleted before its metadata, every member before the group).
    pub fn take_changes(&mut self, now_ms: i64) -> Vec<Change> {
        let dirty = std::mem::take(&mut self.dirty);
        let mut changes = Vec::new();
        let mut tombstones = Vec::new();
        for key in dirty {
            let value = self.record(&key, now_ms);
            let unchanged = match (&value, self.persisted.get(&key)) {
                (None, None) => true,
                // A regex's timestamp says when it matched; only what it matched matters.
                (Some(ConsumerValue::Regex(new)), Some(ConsumerValue::Regex(old))) => {
                    new.topics == old.topics
                }
                (Some(new), Some(old)) => new == old,
                _ => false,
            };
            match value {
                _ if unchanged => {}
                Some(value) => changes.push((key, Some(value))),
                None => tombstones.push((key, None)),
            }
        }
        changes.extend(tombstones.into_iter().rev());
        changes
    }

    /// The records were appended to the log: they are what it holds now.
    pub fn appended(&mut self, changes: Vec<Change>) {
        for (key, value) in changes {
            match value {
                Some(value) => self.persisted.insert(key, value),
                None => self.persisted.remove(&key),
            };
        }
    }

    /// The append failed: the group goes back to what the log holds. Members' sessions
    /// start again from `now_ms`.
    pub fn revert(&mut self, now_ms: i64, config: &ConsumerGroupConfig) {
        let records = std::mem::take(&mut self.persisted);
        let compiled = std::mem::take(&mut self.regexes);
        *self = ConsumerGroup::restore_with(&self.group_id, records, now_ms, config, compiled);
    }

    /// Tombstones for every record the log holds for the group (DeleteGroups, or the id
    /// going to a classic group).
    pub fn tombstones(&self) -> Vec<Change> {
        (self.persisted.keys().rev())
            .map(|key| (key.clone(), None))
            .collect()
    }

    /// Whether the log holds any record of the group.
    pub fn is_persisted(&self) -> bool {
        !self.persisted.is_empty()
    }

    /// The group its records describe (see the module comment).
    pub fn restore(
        group_id: &str,
        records: BTreeMap<ConsumerKey, ConsumerValue>,
        now_ms: i64,
        config: &ConsumerGroupConfig,
    ) -> ConsumerGroup {
        Self::restore_with(group_id, records, now_ms, config, HashMap::new())
    }

    /// [`ConsumerGroup::restore`] with regexes already compiled (a revert keeps its own).
    fn restore_with(
        group_id: &str,
        records: BTreeMap<ConsumerKey, ConsumerValue>,
        now_ms: i64,
        config: &ConsumerGroupConfig,
        mut compiled: HashMap<String, TopicRegex>,
    ) -> ConsumerGroup {
        let mut group = ConsumerGroup::new(group_id);
        let session_deadline_ms = now_ms + i64::from(config.session_timeout_ms);
        for (key, value) in &records {
            match (key, value) {
                (ConsumerKey::Metadata, ConsumerValue::Metadata { epoch }) => {
                    group.group_epoch = *epoch;
                }
                (ConsumerKey::TargetMetadata, ConsumerValue::TargetMetadata { epoch }) => {
                    group.target_epoch = *epoch;
                }
                (ConsumerKey::PartitionMetadata, ConsumerValue::PartitionMetadata(topics)) => {
                    group.topics = topics.clone();
                }
                (ConsumerKey::Regex(pattern), ConsumerValue::Regex(regex)) => {
                    group.resolved.insert(pattern.clone(), regex.topics.clone());
                }
                (ConsumerKey::Member(member_id), ConsumerValue::Member(metadata)) => {
                    let member = new_member(member_id, metadata.clone(), session_deadline_ms);
                    group.members.insert(member_id.clone(), member);
                }
                _ => {}
            }
        }
        for (key, value) in &records {
            match (key, value) {
                (ConsumerKey::TargetMember(member_id), ConsumerValue::TargetMember(target))
                    if group.members.contains_key(member_id) =>
                {
                    group.targets.insert(member_id.clone(), target.clone());
                }
                (ConsumerKey::CurrentAssignment(id), ConsumerValue::CurrentAssignment(current)) => {
                    let Some(member) = group.members.get_mut(id) else {
                        group.dirty.insert(key.clone());
                        continue;
                    };
                    set_current(member, current.clone(), now_ms);
                }
                (ConsumerKey::TargetMember(_), _) => {
                    group.dirty.insert(key.clone());
                }
                _ => {}
            }
        }
        // A target ahead of the group epoch cannot come from our writes; taken as is, no
        // target would be computed until the group epoch passed it.
        group.group_epoch = group.group_epoch.max(group.target_epoch);
        group.restore_holders();
        for pattern in group
            .members
            .values()
            .filter_map(|m| m.subscribed_regex.as_ref())
        {
            if group.regexes.contains_key(pattern) {
                continue;
            }
            if let Some(regex) = compiled.remove(pattern) {
                group.regexes.insert(pattern.clone(), regex);
                continue;
            }
            match TopicRegex::new(pattern) {
                Ok(regex) => {
                    group.regexes.insert(pattern.clone(), regex);
                }
                // It compiled when a member subscribed with it; a build that no longer
                // takes it leaves its match as it was recorded.
                Err(error) => tracing::warn!(group = group_id, pattern, %error, "regex"),
            }
        }
        group.persisted = records;
        group
    }

    /// Rebuilds `holders` from the members (see the module comment for a conflict).
    fn restore_holders(&mut self) {
        let mut holders = std::mem::take(&mut self.holders);
        for member in self.members.values_mut() {
            let mut taken = Vec::new();
            for partition in member.holds().collect::<Vec<_>>() {
                match holders.entry(partition) {
                    // Listed twice by the member itself (assigned and revoking): its own.
                    Entry::Occupied(holder) if *holder.get() == member.member_id => {}
                    Entry::Occupied(_) => taken.push(partition),
                    Entry::Vacant(free) => {
                        free.insert(member.member_id.clone());
                    }
                }
            }
            if taken.is_empty() {
                continue;
            }
            tracing::error!(
                group = self.group_id,
                member = member.member_id,
                ?taken,
                "records give partitions to two members; the later one keeps only its own"
            );
            for (topic, partition) in taken {
                for map in [&mut member.assigned, &mut member.pending_revocation] {
                    if let Some(set) = map.get_mut(&topic) {
                        set.remove(&partition);
                        if set.is_empty() {
                            map.remove(&topic);
                        }
                    }
                }
            }
            (self.dirty).insert(ConsumerKey::CurrentAssignment(member.member_id.clone()));
        }
        self.holders = holders;
    }

    /// The value `key` has now; `None` if it no longer exists.
    fn record(&self, key: &ConsumerKey, now_ms: i64) -> Option<ConsumerValue> {
        match key {
            ConsumerKey::Metadata => Some(ConsumerValue::Metadata {
                epoch: self.group_epoch,
            }),
            ConsumerKey::TargetMetadata => Some(ConsumerValue::TargetMetadata {
                epoch: self.target_epoch,
            }),
            ConsumerKey::PartitionMetadata => {
                Some(ConsumerValue::PartitionMetadata(self.topics.clone()))
            }
            ConsumerKey::Member(id) => {
                (self.members.get(id)).map(|member| ConsumerValue::Member(metadata_of(member)))
            }
            ConsumerKey::TargetMember(id) => {
                (self.targets.get(id)).map(|target| ConsumerValue::TargetMember(target.clone()))
            }
            ConsumerKey::CurrentAssignment(id) => (self.members.get(id))
                .map(|member| ConsumerValue::CurrentAssignment(current_of(member))),
            ConsumerKey::Regex(pattern) => self.resolved.get(pattern).map(|topics| {
                ConsumerValue::Regex(ResolvedRegex {
                    topics: topics.clone(),
                    version: self.topics_version.unwrap_or(0),
                    timestamp_ms: now_ms,
                })
            }),
        }
    }

    /// A group rebuilt from its records equals this one in everything the records carry
    /// (the simulation checks this after every step, so a step that changes state without
    /// marking its record fails there).
    #[cfg(test)]
    pub fn assert_restorable(&self, config: &ConsumerGroupConfig) {
        assert!(self.dirty.is_empty(), "changes not taken: {:?}", self.dirty);
        let (records, compiled) = (self.persisted.clone(), self.regexes.clone());
        let restored = ConsumerGroup::restore_with(&self.group_id, records, 0, config, compiled);
        assert!(restored.dirty.is_empty(), "{:?}", restored.dirty);
        assert_eq!(restored.group_epoch, self.group_epoch);
        assert_eq!(restored.target_epoch, self.target_epoch);
        assert_eq!(restored.topics, self.topics);
        assert_eq!(restored.resolved, self.resolved);
        assert_eq!(restored.targets, self.targets);
        assert_eq!(restored.holders, self.holders);
        let view = |group: &ConsumerGroup| -> Vec<(MemberMetadata, CurrentAssignment)> {
            (group.members.values())
                .map(|m| (metadata_of(m), current_of(m)))
                .collect()
        };
        assert_eq!(view(&restored), view(self));
        let ids = |group: &ConsumerGroup| group.members.keys().cloned().collect::<Vec<_>>();
        assert_eq!(ids(&restored), ids(self));
    }
}

fn metadata_of(member: &ConsumerMember) -> MemberMetadata {
    MemberMetadata {
        instance_id: member.instance_id.clone(),
        rack_id: member.rack_id.clone(),
        client_id: member.client_id.clone(),
        client_host: member.client_host.clone(),
        subscribed: member.subscribed.clone(),
        subscribed_regex: member.subscribed_regex.clone(),
        rebalance_timeout_ms: member.rebalance_timeout_ms,
        server_assignor: member.server_assignor.clone(),
    }
}

fn current_of(member: &ConsumerMember) -> CurrentAssignment {
    CurrentAssignment {
        member_epoch: member.member_epoch,
        previous_epoch: member.previous_epoch,
        state: member.state,
        assigned: member.assigned.clone(),
        pending_revocation: member.pending_revocation.clone(),
    }
}

/// A member as its metadata record describes it, before its assignment record is read
/// (a member without one has joined and been given nothing yet).
fn new_member(
    member_id: &str,
    metadata: MemberMetadata,
    session_deadline_ms: i64,
) -> ConsumerMember {
    ConsumerMember {
        member_id: member_id.to_string(),
        instance_id: metadata.instance_id,
        rack_id: metadata.rack_id,
        client_id: metadata.client_id,
        client_host: metadata.client_host,
        rebalance_timeout_ms: metadata.rebalance_timeout_ms,
        subscribed: metadata.subscribed,
        subscribed_regex: metadata.subscribed_regex,
        server_assignor: metadata.server_assignor,
        state: MemberState::Stable,
        member_epoch: 0,
        previous_epoch: 0,
        assigned: Default::default(),
        pending_revocation: Default::default(),
        session_deadline_ms,
        revocation_deadline_ms: None,
    }
}

fn set_current(member: &mut ConsumerMember, current: CurrentAssignment, now_ms: i64) {
    member.member_epoch = current.member_epoch;
    member.previous_epoch = current.previous_epoch;
    member.state = current.state;
    member.assigned = current.assigned;
    member.pending_revocation = current.pending_revocation;
    // Kafka's `onLoaded`: a member still revoking gets its whole rebalance timeout again;
    // a static member away (epoch -2) revokes nothing and waits out its session only.
    let revoking = current.state == MemberState::UnrevokedPartitions
        && !member.pending_revocation.is_empty()
        && member.member_epoch >= 0;
    member.revocation_deadline_ms =
        revoking.then(|| now_ms + i64::from(member.rebalance_timeout_ms.max(0)));
}
