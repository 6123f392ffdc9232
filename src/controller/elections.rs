//! Leadership moves the controller makes on request: a broker's controlled shutdown, and
//! Kafka's ElectLeaders (preferred and unclean elections).
//!
//! Pure functions over the image, applied by `commands::apply` (deterministic, as every
//! command is). Each follows Kafka's `ReplicationControlManager` (`electLeader`,
//! `handleBrokerInControlledShutdown`): a leader change starts a new leader epoch, and any
//! change to a partition a new partition epoch.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::commands::{elect_leader, remove_from_every_partition, set_leader};
use super::image::{BrokerRegistration, MetadataImage, NO_LEADER, PartitionImage};
use super::reassignment::complete_if_ready;
use crate::types::NodeId;

/// Kafka's `ElectionType`: 0 preferred, 1 unclean.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Election {
    /// Leadership back to the first replica, if it is an eligible ISR member.
    Preferred,
    /// A partition without a leader takes one from its ISR, else from any live replica
    /// (which may lose acknowledged records: the user asked for it).
    Unclean,
    /// [`Election::Unclean`] for the partitions whose `unclean.leader.election.enable`
    /// still resolves to true when the command applies (the automatic elections of
    /// `controller::unclean_election`): an AlterConfigs that turned it off between the plan
    /// and the apply wins. Resolved as the planning controller did: the topic's value, then
    /// `controller`'s dynamic value, the cluster default, then its static value carried
    /// here, else false.
    UncleanIfEnabled {
        controller: NodeId,
        static_enabled: bool,
    },
}

impl Election {
    /// The wire value (`ElectLeadersRequest.election_type`); `None` for an unknown one.
    pub fn from_kafka(election_type: i8) -> Option<Election> {
        match election_type {
            0 => Some(Election::Preferred),
            1 => Some(Election::Unclean),
            _ => None,
        }
    }
}

/// One partition's answer to an ElectLeaders, in Kafka's error terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionResult {
    /// NONE: `leader` now leads (at a new leader epoch).
    Elected { leader: NodeId },
    /// ELECTION_NOT_NEEDED: the preferred replica already leads (preferred), or the
    /// partition has a leader (unclean).
    ElectionNotNeeded,
    /// PREFERRED_LEADER_NOT_AVAILABLE: the preferred replica is not a live ISR member
    /// outside controlled shutdown.
    PreferredLeaderNotAvailable,
    /// ELIGIBLE_LEADERS_NOT_AVAILABLE: unclean, and no replica is live.
    EligibleLeadersNotAvailable,
    /// UNKNOWN_TOPIC_OR_PARTITION.
    UnknownPartition,
    /// [`Election::UncleanIfEnabled`] found the topic's unclean election off at apply.
    UncleanDisabled,
}

/// The result for one partition an `ElectLeaders` named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionElection {
    pub topic_id: Uuid,
    pub partition: i32,
    pub result: ElectionResult,
}

/// Marks `node_id` in controlled shutdown and moves it out of every partition: leadership
/// to the first eligible ISR member (else none: Kafka's `isAcceptableLeader` excludes the
/// broker), ISR without it unless it is the last member. Applying it twice changes nothing
/// the second time. The caller has checked the broker's epoch.
pub(super) fn begin_controlled_shutdown(image: &mut MetadataImage, node_id: NodeId) {
    if let Some(broker) = image.brokers.get_mut(&node_id) {
        broker.in_controlled_shutdown = true;
    }
    remove_from_every_partition(image, node_id);
}

/// Runs `election` on each listed partition, in order; one result each.
pub(super) fn elect_leaders(
    image: &mut MetadataImage,
    election: Election,
    partitions: &[(Uuid, i32)],
) -> Vec<PartitionElection> {
    let MetadataImage {
        brokers,
        topics,
        topic_names,
        broker_configs,
        ..
    } = image;
    let is_eligible = |id: NodeId| {
        brokers
            .get(&id)
            .is_some_and(BrokerRegistration::is_eligible)
    };
    partitions
        .iter()
        .map(|&(topic_id, index)| {
            let topic = topic_names
                .get(&topic_id)
                .and_then(|name| topics.get_mut(name));
            let allowed = match (election, &topic) {
                (
                    Election::UncleanIfEnabled {
                        controller,
                        static_enabled,
                    },
                    Some(topic),
                ) => unclean_enabled(broker_configs, controller, static_enabled, &topic.configs),
                _ => true,
            };
            let found =
                topic.and_then(|topic| topic.partitions.get_mut(usize::try_from(index).ok()?));
            let result = match found {
                None => ElectionResult::UnknownPartition,
                Some(_) if !allowed => ElectionResult::UncleanDisabled,
                Some(partition) => match election {
                    Election::Preferred => elect_preferred(partition, &is_eligible),
                    Election::Unclean | Election::UncleanIfEnabled { .. } => {
                        elect_unclean(partition, &is_eligible)
                    }
                },
            };
            PartitionElection {
                topic_id,
                partition: index,
                result,
            }
        })
        .collect()
}

/// `unclean.leader.election.enable` for a topic as `controller` resolves it: the topic's
/// value, `controller`'s dynamic value, the cluster default, its static value.
fn unclean_enabled(
    broker_configs: &crate::topic_config::DynamicBrokerConfigs,
    controller: NodeId,
    static_enabled: bool,
    topic_configs: &std::collections::BTreeMap<String, String>,
) -> bool {
    const NAME: &str = "unclean.leader.election.enable";
    let dynamic = crate::topic_config::DynamicLayers::of(broker_configs, controller);
    let layers = [Some(topic_configs), dynamic.per_broker, dynamic.cluster];
    match layers
        .into_iter()
        .flatten()
        .find_map(|layer| layer.get(NAME))
    {
        Some(value) => value.trim().eq_ignore_ascii_case("true"),
        None => static_enabled,
    }
}

fn elect_preferred(
    partition: &mut PartitionImage,
    is_eligible: &impl Fn(NodeId) -> bool,
) -> ElectionResult {
    let Some(&preferred) = partition.replicas.first() else {
        return ElectionResult::PreferredLeaderNotAvailable;
    };
    if partition.leader == preferred {
        return ElectionResult::ElectionNotNeeded;
    }
    if !(partition.isr.contains(&preferred) && is_eligible(preferred)) {
        return ElectionResult::PreferredLeaderNotAvailable;
    }
    set_leader(partition, preferred);
    ElectionResult::Elected { leader: preferred }
}

/// Only for a partition without a leader: an eligible ISR member if there is one (a clean
/// election), else the first live replica, whose ISR becomes itself alone.
fn elect_unclean(
    partition: &mut PartitionImage,
    is_eligible: &impl Fn(NodeId) -> bool,
) -> ElectionResult {
    if partition.leader != NO_LEADER {
        return ElectionResult::ElectionNotNeeded;
    }
    let clean = elect_leader(partition, is_eligible);
    if clean != NO_LEADER {
        set_leader(partition, clean);
        return ElectionResult::Elected { leader: clean };
    }
    let Some(leader) = partition.replicas.iter().copied().find(|&r| is_eligible(r)) else {
        return ElectionResult::EligibleLeadersNotAvailable;
    };
    partition.isr = vec![leader];
    set_leader(partition, leader);
    // An adding replica elected alone may be all a reassignment waits for; nothing else
    // would complete it (no AlterPartition follows an election that changes no ISR).
    complete_if_ready(partition, is_eligible);
    ElectionResult::Elected {
        leader: partition.leader,
    }
}

#[cfg(test)]
#[path = "elections_tests.rs"]
mod tests;
