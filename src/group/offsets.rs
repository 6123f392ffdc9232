//! Committed offsets: the in-memory view of the latest offset record per
//! (group, topic, partition), rebuilt by replaying `__consumer_offsets`.

use std::collections::{BTreeMap, HashMap};

use super::records::OffsetValue;

/// Offsets of one group, ordered so OffsetFetch answers in a stable order.
pub type GroupOffsets = BTreeMap<(String, i32), OffsetValue>;

#[derive(Debug, Default)]
pub struct OffsetStore {
    groups: HashMap<String, GroupOffsets>,
}

impl OffsetStore {
    /// Applies one record: `Some` stores the commit, `None` (a tombstone) deletes it.
    pub fn apply(&mut self, group: &str, topic: &str, partition: i32, value: Option<OffsetValue>) {
        match value {
            Some(value) => {
                let offsets = self.groups.entry(group.to_string()).or_default();
                offsets.insert((topic.to_string(), partition), value);
            }
            None => {
                if let Some(offsets) = self.groups.get_mut(group) {
                    offsets.remove(&(topic.to_string(), partition));
                    if offsets.is_empty() {
                        self.groups.remove(group);
                    }
                }
            }
        }
    }

    /// Adds the groups of a freshly replayed partition (their ids are not here yet: the
    /// partition was unloaded, or never loaded).
    pub fn install(&mut self, other: OffsetStore) {
        self.groups.extend(other.groups);
    }

    /// Forgets every group `doomed` names (an unloaded partition's).
    pub fn remove_groups(&mut self, doomed: impl Fn(&str) -> bool) {
        self.groups.retain(|group, _| !doomed(group));
    }

    pub fn group(&self, group: &str) -> Option<&GroupOffsets> {
        self.groups.get(group)
    }

    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<&OffsetValue> {
        self.groups.get(group)?.get(&(topic.to_string(), partition))
    }

    pub fn has_offsets(&self, group: &str) -> bool {
        self.groups
            .get(group)
            .is_some_and(|offsets| !offsets.is_empty())
    }

    /// Groups that have offsets (a group can exist by its offsets alone).
    pub fn group_ids(&self) -> impl Iterator<Item = &String> {
        self.groups.keys()
    }

    /// The keys of every offset committed before `cutoff_ms` in `group` (expiry).
    pub fn older_than(&self, group: &str, cutoff_ms: i64) -> Vec<(String, i32)> {
        self.groups
            .get(group)
            .map(|offsets| {
                offsets
                    .iter()
                    .filter(|(_, value)| value.commit_timestamp_ms < cutoff_ms)
                    .map(|(key, _)| key.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Kafka's `Utils.abs(groupId.hashCode()) % partitions`: Java's String.hashCode over UTF-16
/// code units, so a group maps to the same offsets partition as on Apache Kafka.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    assert!(partitions > 0);
    let hash = group.encode_utf16().fold(0i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    let positive = if hash == i32::MIN { 0 } else { hash.abs() };
    positive % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(offset: i64, at: i64) -> OffsetValue {
        OffsetValue {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: at,
        }
    }

    #[test]
    fn latest_commit_wins_and_tombstones_delete() {
        let mut store = OffsetStore::default();
        store.apply("g", "t", 0, Some(value(5, 1)));
        store.apply("g", "t", 0, Some(value(9, 2)));
        store.apply("g", "t", 1, Some(value(3, 3)));
        assert_eq!(store.get("g", "t", 0).unwrap().offset, 9);
        assert_eq!(store.older_than("g", 3), vec![("t".to_string(), 0)]);
        store.apply("g", "t", 0, None);
        store.apply("g", "t", 1, None);
        assert!(!store.has_offsets("g"));
        assert_eq!(store.group_ids().count(), 0);
    }

    #[test]
    fn partition_matches_java_string_hash() {
        // "console-consumer-1".hashCode() = 35782224 in Java; % 50 = 24.
        assert_eq!(partition_for("console-consumer-1", 50), 24);
        // "abc".hashCode() = 96354.
        assert_eq!(partition_for("abc", 50), 96354 % 50);
        assert_eq!(partition_for("", 50), 0);
        // A negative hash: "g-neg-test".hashCode() = -1919009451; abs % 50 = 1.
        assert_eq!(partition_for("g-neg-test", 50), 1919009451 % 50);
        assert!((0..50).contains(&partition_for("ünïcödé", 50)));
    }
}
