//! Replica placement for new partitions, with the goals of Kafka's `StripedReplicaPlacer`:
//! only unfenced brokers; the replicas of one partition on distinct racks where the racks
//! allow it; leaders and replicas spread evenly over the brokers.
//!
//! Racks (brokers without a rack form one rack of their own) are taken in name order and
//! the brokers of a rack in id order. Partition `g` (counted over the whole cluster, see
//! [`place`]) starts at rack `g % racks` and takes one broker from each rack in turn, then
//! a second round if the replication factor asks for more. Inside a rack, the broker taken
//! first is `(g / racks + round) % rack size`, so each time a rack leads again its next
//! broker does. With equal racks every broker leads as often as any other, and replicas
//! of a partition share a rack only once every rack holds one. Kafka starts the stripe at a
//! random offset; we start where the existing partitions left off, which spreads as well
//! and keeps planning reproducible.

use std::collections::BTreeMap;

use super::ControllerError;
use super::image::MetadataImage;
use crate::types::NodeId;

/// Replica lists for `count` new partitions of `replication_factor` replicas each, or
/// Kafka's placer message (callers add their own prefix) as INVALID_REPLICATION_FACTOR.
pub fn place(
    image: &MetadataImage,
    count: usize,
    replication_factor: usize,
) -> Result<Vec<Vec<NodeId>>, ControllerError> {
    let invalid = |reason: String| Err(ControllerError::InvalidReplicationFactor(reason));
    if replication_factor == 0 {
        return invalid(format!(
            "Invalid replication factor {replication_factor}: the replication factor must \
             be positive."
        ));
    }
    let racks = live_racks(image);
    let live: usize = racks.iter().map(Vec::len).sum();
    if live == 0 {
        return invalid("All brokers are currently fenced.".into());
    }
    if replication_factor > live {
        return invalid(format!(
            "The target replication factor of {replication_factor} cannot be reached because \
             only {live} broker(s) are registered."
        ));
    }
    Ok(stripe(
        &racks,
        image.partition_count(),
        count,
        replication_factor,
    ))
}

/// Unfenced brokers grouped by rack, racks in name order (no rack first), ids ascending.
/// A broker in controlled shutdown is left out: it is about to go, and could not lead.
fn live_racks(image: &MetadataImage) -> Vec<Vec<NodeId>> {
    let mut racks: BTreeMap<Option<&str>, Vec<NodeId>> = BTreeMap::new();
    for broker in image.live_brokers().filter(|broker| broker.is_eligible()) {
        racks
            .entry(broker.rack.as_deref())
            .or_default()
            .push(broker.node_id);
    }
    racks.into_values().collect()
}

/// Placements for partitions `first..first + count` of the cluster-wide stripe. Needs
/// `replication_factor` at most the number of brokers in `racks`; a list is shorter if not.
fn stripe(
    racks: &[Vec<NodeId>],
    first: usize,
    count: usize,
    replication_factor: usize,
) -> Vec<Vec<NodeId>> {
    (0..count)
        .map(|offset| place_one(racks, first.wrapping_add(offset), replication_factor))
        .collect()
}

fn place_one(racks: &[Vec<NodeId>], partition: usize, replication_factor: usize) -> Vec<NodeId> {
    let mut replicas = Vec::with_capacity(replication_factor);
    if racks.is_empty() {
        return replicas;
    }
    let first_rack = partition % racks.len();
    let turn = partition / racks.len();
    let deepest = racks.iter().map(Vec::len).max().unwrap_or(0);
    for round in 0..deepest {
        for step in 0..racks.len() {
            let rack = &racks[(first_rack + step) % racks.len()];
            if replicas.len() == replication_factor {
                return replicas;
            }
            if round < rack.len() {
                replicas.push(rack[turn.wrapping_add(round) % rack.len()]);
            }
        }
    }
    replicas
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::controller::image::{BrokerEndpoint, BrokerRegistration};

    fn image(brokers: &[(NodeId, Option<&str>, bool)]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for &(node_id, rack, fenced) in brokers {
            let registration = BrokerRegistration {
                node_id,
                incarnation_id: uuid::Uuid::from_u128(1),
                epoch: 1,
                listeners: vec![BrokerEndpoint {
                    name: "PLAINTEXT".into(),
                    host: "h".into(),
                    port: 1,
                }],
                host: "h".into(),
                port: 1,
                rack: rack.map(str::to_string),
                fenced,
                in_controlled_shutdown: false,
            };
            image.brokers.insert(node_id, registration);
        }
        image
    }

    fn count_by<F: Fn(&[NodeId]) -> Vec<NodeId>>(
        placements: &[Vec<NodeId>],
        pick: F,
    ) -> BTreeMap<NodeId, usize> {
        let mut counts = BTreeMap::new();
        for replicas in placements {
            for id in pick(replicas) {
                *counts.entry(id).or_insert(0) += 1;
            }
        }
        counts
    }

    #[test]
    fn without_racks_leaders_rotate_and_replicas_are_distinct() {
        let image = image(&[(1, None, false), (2, None, false), (3, None, false)]);
        let placements = place(&image, 6, 3).unwrap();
        let leaders: Vec<_> = placements.iter().map(|r| r[0]).collect();
        assert_eq!(leaders, [1, 2, 3, 1, 2, 3]);
        for replicas in &placements {
            assert_eq!(replicas.iter().collect::<BTreeSet<_>>().len(), 3);
        }
    }

    #[test]
    fn replicas_of_a_partition_land_on_distinct_racks_and_leaders_spread() {
        let image = image(&[
            (1, Some("a"), false),
            (2, Some("a"), false),
            (3, Some("b"), false),
            (4, Some("b"), false),
            (5, Some("c"), false),
            (6, Some("c"), false),
        ]);
        let rack = |id: NodeId| image.brokers[&id].rack.clone();
        let placements = place(&image, 60, 3).unwrap();
        for replicas in &placements {
            let racks: BTreeSet<_> = replicas.iter().map(|&id| rack(id)).collect();
            assert_eq!(racks.len(), 3, "{replicas:?} shares a rack");
        }
        let leaders = count_by(&placements, |r| vec![r[0]]);
        assert!(leaders.values().all(|&n| n == 10), "{leaders:?}");
        let replicas = count_by(&placements, |r| r.to_vec());
        assert!(replicas.values().all(|&n| n == 30), "{replicas:?}");
        // Two replicas on three racks: still distinct racks.
        for replicas in place(&image, 12, 2).unwrap() {
            assert_ne!(rack(replicas[0]), rack(replicas[1]));
        }
    }

    #[test]
    fn more_replicas_than_racks_reuse_racks_only_after_each_holds_one() {
        let image = image(&[
            (1, Some("a"), false),
            (2, Some("a"), false),
            (3, Some("b"), false),
        ]);
        for replicas in place(&image, 8, 3).unwrap() {
            assert_eq!(replicas.iter().collect::<BTreeSet<_>>().len(), 3);
        }
        for replicas in place(&image, 8, 2).unwrap() {
            assert!(replicas.contains(&3), "{replicas:?} skips rack b");
        }
    }

    #[test]
    fn fenced_brokers_get_nothing_and_the_factor_is_checked_against_live_ones() {
        let image = image(&[(1, None, false), (2, None, true), (3, None, false)]);
        let placements = place(&image, 10, 2).unwrap();
        assert!(placements.iter().flatten().all(|&id| id != 2));
        let error = place(&image, 1, 3).unwrap_err();
        assert_eq!(
            error.to_string(),
            "The target replication factor of 3 cannot be reached because only 2 broker(s) \
             are registered."
        );
        assert!(matches!(
            error,
            ControllerError::InvalidReplicationFactor(_)
        ));
        let all_fenced = self::image(&[(1, None, true)]);
        let error = place(&all_fenced, 1, 1).unwrap_err();
        assert_eq!(error.to_string(), "All brokers are currently fenced.");
        assert!(place(&all_fenced, 1, 0).is_err());
    }

    #[test]
    fn new_topics_continue_the_stripe() {
        let mut image = image(&[(1, None, false), (2, None, false), (3, None, false)]);
        let topic = crate::controller::TopicImage {
            name: "t".into(),
            id: uuid::Uuid::from_u128(9),
            partitions: vec![
                crate::controller::PartitionImage {
                    replicas: vec![1],
                    isr: vec![1],
                    leader: 1,
                    leader_epoch: 0,
                    partition_epoch: 0,
                    adding_replicas: Vec::new(),
                    removing_replicas: Vec::new(),
                };
                4
            ],
            configs: BTreeMap::new(),
        };
        image.topics.insert("t".into(), topic);
        let leaders: Vec<_> = place(&image, 3, 1).unwrap().iter().map(|r| r[0]).collect();
        assert_eq!(leaders, [2, 3, 1]);
    }
}
