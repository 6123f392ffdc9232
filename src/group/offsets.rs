//! Committed offsets: the in-memory view of the latest offset record per
//! (group, topic, partition), rebuilt by replaying `__consumer_offsets`, and the offsets
//! of open transactions (TxnOffsetCommit), kept apart per producer id until the
//! transaction's marker commits them or aborts them (Kafka's `OffsetMetadataManager`).
//!
//! Every offset remembers the log offset of the record it came from: records are applied
//! in memory after their write is committed, and writes of one group do not all wait in
//! one order, so "newer" means "later in the log", never "applied later". Kafka compares
//! the same way when a transaction commits: its pending offset replaces the committed one
//! only if the pending record is the later one.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::records::OffsetValue;

/// An offset as the group sees it, and where its record sits in the offsets partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub value: OffsetValue,
    pub record_offset: i64,
}

/// Offsets of one group, ordered so OffsetFetch answers in a stable order.
pub type GroupOffsets = BTreeMap<(String, i32), Committed>;

#[derive(Debug, Default)]
pub struct OffsetStore {
    groups: HashMap<String, GroupOffsets>,
    /// Open transactions' offsets: producer id -> group -> offsets. Invisible to fetches.
    pending: HashMap<i64, HashMap<String, GroupOffsets>>,
    /// Offsets partitions whose state is installed here (see [`OffsetStore::install`]).
    loaded: BTreeSet<i32>,
}

/// Stores `value` unless `offsets` already holds a record later in the log for `key`:
/// "newer" is log order, never apply order (see the module comment).
fn insert_if_later(
    offsets: &mut GroupOffsets,
    key: (String, i32),
    value: OffsetValue,
    record_offset: i64,
) {
    if offsets
        .get(&key)
        .is_none_or(|held| held.record_offset < record_offset)
    {
        offsets.insert(
            key,
            Committed {
                value,
                record_offset,
            },
        );
    }
}

impl OffsetStore {
    /// Applies one committed record at `record_offset`: `Some` stores the commit, `None` (a
    /// tombstone) deletes it and the pending offsets of that partition written before it
    /// (Kafka's replay of a tombstone). A record older than what memory holds changes
    /// nothing: a later one was applied first.
    pub fn apply(
        &mut self,
        group: &str,
        topic: &str,
        partition: i32,
        value: Option<OffsetValue>,
        record_offset: i64,
    ) {
        let key = (topic.to_string(), partition);
        let newer = |held: Option<&Committed>| held.is_none_or(|c| c.record_offset < record_offset);
        match value {
            Some(value) => {
                let offsets = self.groups.entry(group.to_string()).or_default();
                insert_if_later(offsets, key, value, record_offset);
            }
            None => {
                if let Some(offsets) = self.groups.get_mut(group) {
                    if newer(offsets.get(&key)) {
                        offsets.remove(&key);
                    }
                    if offsets.is_empty() {
                        self.groups.remove(group);
                    }
                }
                for groups in self.pending.values_mut() {
                    if let Some(offsets) = groups.get_mut(group) {
                        if newer(offsets.get(&key)) {
                            offsets.remove(&key);
                        }
                        if offsets.is_empty() {
                            groups.remove(group);
                        }
                    }
                }
                self.pending.retain(|_, groups| !groups.is_empty());
            }
        }
    }

    /// Records an offset written by `producer_id`'s open transaction at `record_offset`.
    pub fn add_pending(
        &mut self,
        producer_id: i64,
        group: &str,
        topic: &str,
        partition: i32,
        value: OffsetValue,
        record_offset: i64,
    ) {
        let offsets = self
            .pending
            .entry(producer_id)
            .or_default()
            .entry(group.to_string())
            .or_default();
        insert_if_later(
            offsets,
            (topic.to_string(), partition),
            value,
            record_offset,
        );
    }

    /// `producer_id`'s transaction ended for the groups `mine` selects (those of the offsets
    /// partition whose marker this is): on commit its offsets become the committed ones
    /// where they are later in the log than what is committed; on abort they are dropped.
    /// Only offsets written before the marker (`marker_offset`) belong to the transaction
    /// it ends, as a replay of the log sees it: a TxnOffsetCommit appended after the
    /// marker but before its completion gets here stays pending for the producer's next
    /// marker. Returns how many pending offsets the transaction had there.
    /// Completing twice is harmless: the second time nothing is pending.
    pub fn complete(
        &mut self,
        producer_id: i64,
        committed: bool,
        mine: impl Fn(&str) -> bool,
        marker_offset: i64,
    ) -> usize {
        let Some(groups) = self.pending.get_mut(&producer_id) else {
            return 0;
        };
        let mut ended: Vec<(String, GroupOffsets)> = Vec::new();
        for (group, offsets) in groups.iter_mut().filter(|(group, _)| mine(group)) {
            let (before, after): (GroupOffsets, GroupOffsets) = std::mem::take(offsets)
                .into_iter()
                .partition(|(_, pending)| pending.record_offset < marker_offset);
            *offsets = after;
            ended.push((group.clone(), before));
        }
        groups.retain(|_, offsets| !offsets.is_empty());
        let mut count = 0;
        for (group, offsets) in ended {
            count += offsets.len();
            if !committed || offsets.is_empty() {
                continue;
            }
            // A transaction's own offsets become committed ones; the other transactions'
            // pending offsets are not touched (unlike `apply`, which serves tombstones).
            let committed_offsets = self.groups.entry(group).or_default();
            for (key, pending) in offsets {
                insert_if_later(committed_offsets, key, pending.value, pending.record_offset);
            }
        }
        if self
            .pending
            .get(&producer_id)
            .is_some_and(|groups| groups.is_empty())
        {
            self.pending.remove(&producer_id);
        }
        count
    }

    /// Whether an open transaction holds an offset of this partition for `group`
    /// (OffsetFetch with require_stable answers UNSTABLE_OFFSET_COMMIT for it).
    pub fn has_pending(&self, group: &str, topic: &str, partition: i32) -> bool {
        let key = (topic.to_string(), partition);
        self.pending.values().any(|groups| {
            groups
                .get(group)
                .is_some_and(|offsets| offsets.contains_key(&key))
        })
    }

    /// Every partition of `group` an open transaction holds an offset of.
    pub fn pending_partitions(&self, group: &str) -> BTreeSet<(String, i32)> {
        self.pending
            .values()
            .filter_map(|groups| groups.get(group))
            .flat_map(|offsets| offsets.keys().cloned())
            .collect()
    }

    /// Producer ids with an open transaction on a group `mine` selects.
    pub fn open_producers(&self, mine: impl Fn(&str) -> bool) -> Vec<i64> {
        let mut producers: Vec<i64> = self
            .pending
            .iter()
            .filter(|(_, groups)| groups.keys().any(|group| mine(group)))
            .map(|(producer_id, _)| *producer_id)
            .collect();
        producers.sort_unstable();
        producers
    }

    /// Installs the state of a freshly replayed offsets partition (its groups are not
    /// here yet: the partition was unloaded, or never loaded).
    pub fn install(&mut self, partition: i32, other: OffsetStore) {
        self.groups.extend(other.groups);
        for (producer_id, groups) in other.pending {
            self.pending.entry(producer_id).or_default().extend(groups);
        }
        self.loaded.insert(partition);
    }

    /// Whether `partition`'s state is installed here.
    pub fn is_installed(&self, partition: i32) -> bool {
        self.loaded.contains(&partition)
    }

    /// Forgets an unloaded partition: every group `doomed` names, committed and pending.
    pub fn remove_partition(&mut self, partition: i32, doomed: impl Fn(&str) -> bool) {
        self.loaded.remove(&partition);
        self.groups.retain(|group, _| !doomed(group));
        for groups in self.pending.values_mut() {
            groups.retain(|group, _| !doomed(group));
        }
        self.pending.retain(|_, groups| !groups.is_empty());
    }

    pub fn group(&self, group: &str) -> Option<&GroupOffsets> {
        self.groups.get(group)
    }

    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<&OffsetValue> {
        let offsets = self.groups.get(group)?;
        offsets
            .get(&(topic.to_string(), partition))
            .map(|c| &c.value)
    }

    /// Whether the group has offsets, committed or pending: a group exists by its offsets
    /// alone, and Kafka creates the (simple) group at its first transactional commit.
    pub fn has_offsets(&self, group: &str) -> bool {
        let committed = self
            .groups
            .get(group)
            .is_some_and(|offsets| !offsets.is_empty());
        committed
            || self
                .pending
                .values()
                .any(|groups| groups.contains_key(group))
    }

    /// Groups that have offsets, committed or pending.
    pub fn group_ids(&self) -> BTreeSet<String> {
        let pending = self.pending.values().flat_map(|groups| groups.keys());
        self.groups.keys().chain(pending).cloned().collect()
    }

    /// The keys of every offset committed before `cutoff_ms` in `group` (expiry), except
    /// those an open transaction also holds: Kafka keeps them until it ends.
    pub fn older_than(&self, group: &str, cutoff_ms: i64) -> Vec<(String, i32)> {
        let pending = self.pending_partitions(group);
        self.groups
            .get(group)
            .map(|offsets| {
                offsets
                    .iter()
                    .filter(|(_, c)| c.value.commit_timestamp_ms < cutoff_ms)
                    .filter(|(key, _)| !pending.contains(*key))
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
        store.apply("g", "t", 0, Some(value(5, 1)), 0);
        store.apply("g", "t", 0, Some(value(9, 2)), 1);
        store.apply("g", "t", 1, Some(value(3, 3)), 2);
        assert_eq!(store.get("g", "t", 0).unwrap().offset, 9);
        assert_eq!(store.older_than("g", 3), vec![("t".to_string(), 0)]);
        store.apply("g", "t", 0, None, 3);
        store.apply("g", "t", 1, None, 4);
        assert!(!store.has_offsets("g"));
        assert_eq!(store.group_ids().len(), 0);
    }

    #[test]
    fn a_record_applied_after_a_later_one_changes_nothing() {
        let mut store = OffsetStore::default();
        store.apply("g", "t", 0, Some(value(9, 2)), 7);
        store.apply("g", "t", 0, Some(value(5, 1)), 6);
        assert_eq!(store.get("g", "t", 0).unwrap().offset, 9);
        store.apply("g", "t", 0, None, 5);
        assert_eq!(
            store.get("g", "t", 0).unwrap().offset,
            9,
            "an older tombstone"
        );
        store.apply("g", "t", 0, None, 8);
        assert_eq!(store.get("g", "t", 0), None);
    }

    #[test]
    fn pending_offsets_show_only_once_their_transaction_commits() {
        let mut store = OffsetStore::default();
        store.apply("g", "t", 0, Some(value(1, 1)), 0);
        store.add_pending(7, "g", "t", 0, value(10, 2), 1);
        store.add_pending(7, "g", "t", 1, value(11, 2), 2);
        store.add_pending(8, "g", "t", 0, value(20, 2), 3);
        assert_eq!(store.get("g", "t", 0).unwrap().offset, 1);
        assert_eq!(store.get("g", "t", 1), None);
        assert!(store.has_pending("g", "t", 0) && store.has_pending("g", "t", 1));
        assert!(!store.has_pending("g", "t", 2) && !store.has_pending("h", "t", 0));
        assert_eq!(store.open_producers(|_| true), vec![7, 8]);
        // Abort drops 8's offsets; commit makes 7's visible.
        assert_eq!(store.complete(8, false, |_| true, i64::MAX), 1);
        assert_eq!(store.get("g", "t", 0).unwrap().offset, 1);
        assert_eq!(store.complete(7, true, |_| true, i64::MAX), 2);
        assert_eq!(store.get("g", "t", 0).unwrap().offset, 10);
        assert_eq!(store.get("g", "t", 1).unwrap().offset, 11);
        assert!(!store.has_pending("g", "t", 0));
        assert_eq!(
            store.complete(7, true, |_| true, i64::MAX),
            0,
            "completing twice is harmless"
        );
        assert_eq!(store.open_producers(|_| true), Vec::<i64>::new());
    }

    #[test]
    fn a_commit_later_in_the_log_than_the_transaction_wins_at_its_marker() {
        let mut store = OffsetStore::default();
        store.add_pending(7, "g", "t", 0, value(10, 1), 1);
        store.apply("g", "t", 0, Some(value(50, 2)), 2);
        store.complete(7, true, |_| true, i64::MAX);
        assert_eq!(store.get("g", "t", 0).unwrap().offset, 50);
        // And the other way round: the transaction's record is the later one.
        store.apply("g", "t", 1, Some(value(50, 2)), 3);
        store.add_pending(7, "g", "t", 1, value(10, 3), 4);
        store.complete(7, true, |_| true, i64::MAX);
        assert_eq!(store.get("g", "t", 1).unwrap().offset, 10);
    }

    #[test]
    fn a_marker_completes_only_its_partitions_groups() {
        let mut store = OffsetStore::default();
        store.add_pending(7, "a", "t", 0, value(10, 1), 1);
        store.add_pending(7, "b", "t", 0, value(20, 1), 1);
        assert!(
            store.has_offsets("a"),
            "a group exists by its pending offsets"
        );
        assert_eq!(store.complete(7, true, |group| group == "a", i64::MAX), 1);
        assert_eq!(store.get("a", "t", 0).unwrap().offset, 10);
        assert_eq!(store.get("b", "t", 0), None);
        assert!(store.has_pending("b", "t", 0));
        assert_eq!(store.open_producers(|group| group == "b"), vec![7]);
    }

    #[test]
    fn a_tombstone_drops_pending_offsets_written_before_it() {
        let mut store = OffsetStore::default();
        store.apply("g", "t", 0, Some(value(1, 1)), 0);
        store.add_pending(7, "g", "t", 0, value(10, 1), 1);
        store.add_pending(8, "g", "t", 1, value(10, 1), 5);
        store.apply("g", "t", 0, None, 2);
        store.apply("g", "t", 1, None, 3);
        assert!(!store.has_pending("g", "t", 0));
        assert!(
            store.has_pending("g", "t", 1),
            "written after the tombstone"
        );
        store.complete(7, true, |_| true, i64::MAX);
        assert_eq!(
            store.get("g", "t", 0),
            None,
            "the deleted offset stays deleted"
        );
        store.complete(8, true, |_| true, i64::MAX);
        assert_eq!(store.get("g", "t", 1).unwrap().offset, 10);
    }

    #[test]
    fn expiry_keeps_offsets_an_open_transaction_holds() {
        let mut store = OffsetStore::default();
        store.apply("g", "t", 0, Some(value(1, 1)), 0);
        store.apply("g", "t", 1, Some(value(1, 1)), 1);
        store.add_pending(7, "g", "t", 0, value(10, 1), 2);
        assert_eq!(store.older_than("g", 100), vec![("t".to_string(), 1)]);
    }

    #[test]
    fn unloading_a_partition_forgets_its_pending_offsets() {
        let mut replayed = OffsetStore::default();
        replayed.add_pending(7, "a", "t", 0, value(10, 1), 1);
        replayed.apply("a", "t", 1, Some(value(3, 1)), 0);
        let mut other = OffsetStore::default();
        other.add_pending(7, "b", "t", 0, value(10, 1), 1);
        let mut store = OffsetStore::default();
        store.install(0, replayed);
        store.install(1, other);
        assert!(store.is_installed(0) && store.is_installed(1));
        store.remove_partition(0, |group| group == "a");
        assert!(!store.is_installed(0));
        assert!(!store.has_offsets("a"));
        assert!(store.has_pending("b", "t", 0));
        assert_eq!(store.open_producers(|_| true), vec![7]);
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

    #[test]
    fn a_marker_completes_only_the_offsets_written_before_it() {
        // 7 aborts (marker at 2); a commit of 7's lands at 3, after the marker but before
        // the marker's completion reaches the store (or is replayed again): that marker
        // must not end it. The log gives it to 7's next marker (5), as a replay does.
        let mut store = OffsetStore::default();
        store.apply("g", "t", 0, Some(value(1, 1)), 0);
        store.add_pending(7, "g", "t", 0, value(10, 2), 1);
        assert_eq!(store.complete(7, false, |_| true, 2), 1);
        store.add_pending(7, "g", "t", 0, value(99, 2), 3);
        assert_eq!(
            store.complete(7, true, |_| true, 2),
            0,
            "a replayed old marker"
        );
        assert!(store.has_pending("g", "t", 0));
        store.add_pending(7, "g", "t", 1, value(20, 2), 4);
        assert_eq!(store.complete(7, true, |_| true, 5), 2);
        assert_eq!(store.get("g", "t", 1).unwrap().offset, 20);
    }
}
