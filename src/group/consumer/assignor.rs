//! The server-side assignors of KIP-848 consumer groups (`group.consumer.assignors`):
//! `uniform`, Kafka's default, and `range`. Both are pure functions of the members'
//! subscriptions, the subscribed topics' partition counts and (for `uniform`) the previous
//! target assignment.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

/// Partitions by topic id: what a member owns, is assigned or is targeted.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// A subscribed topic as the metadata image knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    pub id: Uuid,
    pub partitions: i32,
}

/// One member as an assignor sees it.
pub struct AssignorMember<'a> {
    pub member_id: &'a str,
    pub subscribed: &'a [String],
    /// The member's previous target assignment (kept where still valid: sticky).
    pub previous: Option<&'a Assignment>,
}

/// The assignors Kafka 4.0 ships, by the names clients pass in `ServerAssignor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Assignor {
    Uniform,
    Range,
}

impl Assignor {
    pub fn from_name(name: &str) -> Option<Assignor> {
        match name {
            "uniform" => Some(Assignor::Uniform),
            "range" => Some(Assignor::Range),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Assignor::Uniform => "uniform",
            Assignor::Range => "range",
        }
    }

    /// The target assignment of every member (members subscribed to nothing that exists
    /// get an empty one). Every partition of a subscribed topic goes to exactly one
    /// member subscribed to that topic.
    pub fn assign(
        self,
        members: &[AssignorMember<'_>],
        topics: &BTreeMap<String, TopicInfo>,
    ) -> BTreeMap<String, Assignment> {
        match self {
            Assignor::Uniform => uniform(members, topics),
            Assignor::Range => range(members, topics),
        }
    }
}

/// Every member with an empty assignment: members subscribed to nothing that exists keep
/// one.
fn empty_assignments(members: &[AssignorMember<'_>]) -> BTreeMap<String, Assignment> {
    (members.iter())
        .map(|m| (m.member_id.to_string(), Assignment::new()))
        .collect()
}

/// The ids of the members subscribed to `topic`, in the members' order.
fn subscribers_of<'a>(members: &[AssignorMember<'a>], topic: &str) -> Vec<&'a str> {
    (members.iter())
        .filter(|m| m.subscribed.iter().any(|s| s == topic))
        .map(|m| m.member_id)
        .collect()
}

/// Balanced and sticky: partitions keep the member they had while it is still subscribed,
/// new or freed partitions go to the eligible member with the fewest, then partitions move
/// from a member to an eligible one with at least two fewer until none can. With the same
/// subscriptions everywhere this leaves every member within one partition of the others.
fn uniform(
    members: &[AssignorMember<'_>],
    topics: &BTreeMap<String, TopicInfo>,
) -> BTreeMap<String, Assignment> {
    let mut result = empty_assignments(members);
    let mut counts: BTreeMap<&str, usize> = members.iter().map(|m| (m.member_id, 0)).collect();
    // Each topic's subscribers once, and (topic id, partition) -> its topic's list: the
    // members that may own it (one list per topic, not per partition).
    let mut lists: Vec<Vec<&str>> = Vec::new();
    let mut eligible: BTreeMap<(Uuid, i32), usize> = BTreeMap::new();
    for (name, topic) in topics {
        let subscribers = subscribers_of(members, name);
        if subscribers.is_empty() {
            continue;
        }
        lists.push(subscribers);
        for partition in 0..topic.partitions {
            eligible.insert((topic.id, partition), lists.len() - 1);
        }
    }
    let mut owner: BTreeMap<(Uuid, i32), &str> = BTreeMap::new();
    for member in members {
        let Some(previous) = member.previous else {
            continue;
        };
        for (topic, partitions) in previous {
            for partition in partitions {
                let key = (*topic, *partition);
                let allowed = eligible
                    .get(&key)
                    .is_some_and(|list| lists[*list].contains(&member.member_id));
                if allowed && !owner.contains_key(&key) {
                    owner.insert(key, member.member_id);
                    *counts.get_mut(member.member_id).expect("a member") += 1;
                }
            }
        }
    }
    for (key, list) in &eligible {
        if owner.contains_key(key) {
            continue;
        }
        let fewest = lists[*list]
            .iter()
            .min_by_key(|id| (counts[*id], **id))
            .expect("eligible lists are not empty");
        owner.insert(*key, fewest);
        *counts.get_mut(fewest).expect("a member") += 1;
    }
    // Each move lowers the sum of squared counts, so this ends; the bound only guards it.
    for _ in 0..eligible.len().saturating_mul(members.len()).max(1) {
        let mut moved = false;
        for (key, list) in &eligible {
            let from = owner[key];
            let to = lists[*list]
                .iter()
                .min_by_key(|id| (counts[*id], **id))
                .expect("eligible lists are not empty");
            if counts[to] + 1 < counts[from] {
                owner.insert(*key, to);
                *counts.get_mut(from).expect("a member") -= 1;
                *counts.get_mut(to).expect("a member") += 1;
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    for ((topic, partition), member) in owner {
        let assignment = result.get_mut(member).expect("a member");
        assignment.entry(topic).or_default().insert(partition);
    }
    result
}

/// Per topic, its subscribers sorted by member id get contiguous ranges, the first
/// `partitions % subscribers` one partition more (the classic range assignor's split).
fn range(
    members: &[AssignorMember<'_>],
    topics: &BTreeMap<String, TopicInfo>,
) -> BTreeMap<String, Assignment> {
    let mut result = empty_assignments(members);
    for (name, topic) in topics {
        let mut subscribers = subscribers_of(members, name);
        if subscribers.is_empty() {
            continue;
        }
        subscribers.sort_unstable();
        let count = subscribers.len() as i32;
        let (each, extra) = (topic.partitions / count, topic.partitions % count);
        let mut next = 0;
        for (index, member) in subscribers.iter().enumerate() {
            let take = each + i32::from((index as i32) < extra);
            if take > 0 {
                let assignment = result.get_mut(*member).expect("a member");
                assignment
                    .entry(topic.id)
                    .or_default()
                    .extend(next..next + take);
            }
            next += take;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(list: &[(&str, u128, i32)]) -> BTreeMap<String, TopicInfo> {
        list.iter()
            .map(|(name, id, partitions)| {
                let info = TopicInfo {
                    id: Uuid::from_u128(*id),
                    partitions: *partitions,
                };
                (name.to_string(), info)
            })
            .collect()
    }

    fn count(assignment: &Assignment) -> usize {
        assignment.values().map(BTreeSet::len).sum()
    }

    #[test]
    fn uniform_balances_and_covers_every_partition_once() {
        let subscribed = vec!["a".to_string(), "b".to_string()];
        let ids = ["m1", "m2", "m3"];
        let members: Vec<AssignorMember> = ids
            .iter()
            .map(|id| AssignorMember {
                member_id: id,
                subscribed: &subscribed,
                previous: None,
            })
            .collect();
        let topics = topics(&[("a", 1, 4), ("b", 2, 3)]);
        let result = Assignor::Uniform.assign(&members, &topics);
        let counts: Vec<usize> = result.values().map(count).collect();
        assert!(counts.iter().all(|c| *c == 2 || *c == 3), "{counts:?}");
        assert_eq!(counts.iter().sum::<usize>(), 7);
        let mut seen = BTreeSet::new();
        for assignment in result.values() {
            for (topic, partitions) in assignment {
                for partition in partitions {
                    assert!(seen.insert((*topic, *partition)), "assigned twice");
                }
            }
        }
    }

    #[test]
    fn uniform_keeps_partitions_where_they_were() {
        let subscribed = vec!["a".to_string()];
        let topics = topics(&[("a", 1, 6)]);
        let first = {
            let members = [AssignorMember {
                member_id: "m1",
                subscribed: &subscribed,
                previous: None,
            }];
            Assignor::Uniform.assign(&members, &topics)
        };
        assert_eq!(count(&first["m1"]), 6);
        let members = [
            AssignorMember {
                member_id: "m1",
                subscribed: &subscribed,
                previous: Some(&first["m1"]),
            },
            AssignorMember {
                member_id: "m2",
                subscribed: &subscribed,
                previous: None,
            },
        ];
        let second = Assignor::Uniform.assign(&members, &topics);
        assert_eq!(count(&second["m1"]), 3);
        assert_eq!(count(&second["m2"]), 3);
        // m1 only gave partitions away; it took none it did not have.
        let topic = Uuid::from_u128(1);
        assert!(second["m1"][&topic].is_subset(&first["m1"][&topic]));
    }

    #[test]
    fn uniform_gives_a_topic_only_to_its_subscribers() {
        let only_a = vec!["a".to_string()];
        let both = vec!["a".to_string(), "b".to_string()];
        let members = [
            AssignorMember {
                member_id: "m1",
                subscribed: &only_a,
                previous: None,
            },
            AssignorMember {
                member_id: "m2",
                subscribed: &both,
                previous: None,
            },
        ];
        let topics = topics(&[("a", 1, 2), ("b", 2, 4)]);
        let result = Assignor::Uniform.assign(&members, &topics);
        assert!(!result["m1"].contains_key(&Uuid::from_u128(2)));
        assert_eq!(result["m2"][&Uuid::from_u128(2)].len(), 4);
        assert_eq!(result["m1"][&Uuid::from_u128(1)].len(), 2);
    }

    #[test]
    fn range_splits_each_topic_in_member_order() {
        let subscribed = vec!["a".to_string()];
        let members = [
            AssignorMember {
                member_id: "m2",
                subscribed: &subscribed,
                previous: None,
            },
            AssignorMember {
                member_id: "m1",
                subscribed: &subscribed,
                previous: None,
            },
        ];
        let topics = topics(&[("a", 7, 5)]);
        let result = Assignor::Range.assign(&members, &topics);
        let topic = Uuid::from_u128(7);
        assert_eq!(result["m1"][&topic], BTreeSet::from([0, 1, 2]));
        assert_eq!(result["m2"][&topic], BTreeSet::from([3, 4]));
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for assignor in [Assignor::Uniform, Assignor::Range] {
            assert_eq!(Assignor::from_name(assignor.name()), Some(assignor));
        }
        assert_eq!(Assignor::from_name("sticky"), None);
    }
}
