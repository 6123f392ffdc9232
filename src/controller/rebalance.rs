//! Automatic leader rebalance at the active controller (`auto.leader.rebalance.enable`).
//!
//! Failovers leave leadership where it fell; this puts it back on each partition's
//! preferred replica (its first), so load spreads as placement intended. Every
//! `leader.imbalance.check.interval.seconds` the active controller computes, per broker B,
//! the share of partitions preferring B that B does not lead; above
//! `leader.imbalance.per.broker.percentage` it runs a preferred election for those of them
//! B can take (B live, not shutting down, in the ISR). The decision is the pure
//! [`imbalanced_partitions`]; the task only times and submits it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::{CommandOutcome, Controller, Election, ElectionResult, MetadataCommand, MetadataImage};
use crate::config::BrokerConfig;
use crate::server::Shutdown;
use crate::types::NodeId;

/// The three Kafka settings the task runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebalanceSettings {
    /// `auto.leader.rebalance.enable`
    pub enabled: bool,
    /// `leader.imbalance.check.interval.seconds`
    pub check_interval: Duration,
    /// `leader.imbalance.per.broker.percentage`
    pub imbalance_percentage_max: u32,
}

impl RebalanceSettings {
    pub fn from_config(config: &BrokerConfig) -> RebalanceSettings {
        RebalanceSettings {
            enabled: config.auto_leader_rebalance_enable,
            check_interval: Duration::from_secs(config.leader_imbalance_check_interval_seconds),
            imbalance_percentage_max: config.leader_imbalance_per_broker_percentage,
        }
    }
}

/// The partitions preferring one broker.
#[derive(Default)]
struct Preferring {
    total: u64,
    /// Led by another broker, or by none.
    not_led: u64,
    /// Of those, the ones it could take back now.
    movable: Vec<(Uuid, i32)>,
}

/// Partitions (topic id, index) to give back to their preferred replica: those of every
/// broker whose imbalance (partitions preferring it that it does not lead, over partitions
/// preferring it) is above `percentage_max`, keeping only partitions where the preferred
/// replica is eligible and in sync (others would answer PREFERRED_LEADER_NOT_AVAILABLE).
/// In topic name and partition order, so the same image always gives the same list.
pub fn imbalanced_partitions(image: &MetadataImage, percentage_max: u32) -> Vec<(Uuid, i32)> {
    let mut brokers: BTreeMap<NodeId, Preferring> = BTreeMap::new();
    for topic in image.topics.values() {
        for (index, partition) in topic.partitions.iter().enumerate() {
            let (Some(&preferred), Ok(index)) = (partition.replicas.first(), i32::try_from(index))
            else {
                continue;
            };
            let counts = brokers.entry(preferred).or_default();
            counts.total += 1;
            if partition.leader == preferred {
                continue;
            }
            counts.not_led += 1;
            if partition.isr.contains(&preferred) && image.is_broker_eligible(preferred) {
                counts.movable.push((topic.id, index));
            }
        }
    }
    let mut chosen: Vec<(Uuid, i32)> = brokers
        .into_values()
        .filter(|b| b.not_led * 100 > b.total * u64::from(percentage_max))
        .flat_map(|b| b.movable)
        .collect();
    chosen.sort_by_key(|(id, index)| (image.topic_names.get(id).cloned(), *index));
    chosen
}

/// Runs on every controller; acts only while this node is the active controller.
pub async fn run_rebalance(
    controller: Arc<Controller>,
    settings: RebalanceSettings,
    mut shutdown: Shutdown,
) {
    if !settings.enabled {
        return;
    }
    let period = settings.check_interval.max(Duration::from_secs(1));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.triggered() => return,
        }
        if controller.is_leader() {
            rebalance_once(&controller, settings.imbalance_percentage_max).await;
        }
    }
}

/// One check, and the preferred election it calls for (if any).
async fn rebalance_once(controller: &Controller, percentage_max: u32) {
    let partitions = imbalanced_partitions(&controller.image(), percentage_max);
    if partitions.is_empty() {
        return;
    }
    let command = MetadataCommand::ElectLeaders {
        election: Election::Preferred,
        partitions,
    };
    match controller.submit_as_leader(command).await {
        Ok((Ok(CommandOutcome::LeadersElected(results)), _)) => {
            let elected = results
                .iter()
                .filter(|r| matches!(r.result, ElectionResult::Elected { .. }))
                .count();
            tracing::info!(
                elected,
                asked = results.len(),
                "auto leader rebalance moved leaderships back to preferred replicas"
            );
        }
        Ok((other, _)) => tracing::warn!(?other, "auto leader rebalance: unexpected outcome"),
        Err(error) => tracing::warn!(%error, "auto leader rebalance not applied"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::controller::commands::{apply, fence_broker_for_tests, register_live_broker};

    /// Brokers 1..=3; topic "t" with `count` partitions preferring broker 1 and one
    /// preferring broker 2.
    fn image(count: usize) -> MetadataImage {
        let mut image = MetadataImage::default();
        for node_id in 1..=3 {
            image.applied_index += 1;
            register_live_broker(&mut image, node_id);
        }
        let mut assignments = vec![vec![1, 2, 3]; count];
        assignments.push(vec![2, 3, 1]);
        let create = MetadataCommand::CreateTopic {
            name: "t".into(),
            id: Uuid::from_u128(9),
            assignments,
            configs: BTreeMap::new(),
        };
        image.applied_index += 1;
        apply(&mut image, &create).unwrap();
        image
    }

    fn lead(image: &mut MetadataImage, index: usize, leader: NodeId) {
        image.topics.get_mut("t").unwrap().partitions[index].leader = leader;
    }

    #[test]
    fn a_balanced_cluster_needs_nothing() {
        assert_eq!(imbalanced_partitions(&image(10), 10), []);
    }

    #[test]
    fn only_an_imbalance_above_the_percentage_triggers_elections() {
        let id = Uuid::from_u128(9);
        let mut image = image(10);
        // 1 of the 10 partitions preferring broker 1 is led elsewhere: 10%, not above it.
        lead(&mut image, 3, 2);
        assert_eq!(imbalanced_partitions(&image, 10), []);
        assert_eq!(imbalanced_partitions(&image, 9), [(id, 3)]);
        // 2 of 10: 20% > 10%. Both go back; broker 2 (balanced) is left alone.
        lead(&mut image, 7, 3);
        assert_eq!(imbalanced_partitions(&image, 10), [(id, 3), (id, 7)]);
        // The lone partition preferring 2, led by 3: 100%.
        lead(&mut image, 10, 3);
        assert_eq!(
            imbalanced_partitions(&image, 10),
            [(id, 3), (id, 7), (id, 10)]
        );
        assert_eq!(imbalanced_partitions(&image, 100), []);
    }

    #[test]
    fn a_preferred_replica_that_cannot_lead_is_not_asked() {
        let id = Uuid::from_u128(9);
        let mut image = image(2);
        fence_broker_for_tests(&mut image, 1);
        // 1 is fenced: both of its partitions moved, but it cannot take them back.
        assert_eq!(imbalanced_partitions(&image, 10), []);
        let epoch = image.brokers[&1].epoch;
        image.applied_index += 1;
        apply(
            &mut image,
            &MetadataCommand::UnfenceBroker { node_id: 1, epoch },
        )
        .unwrap();
        // Live again, but out of the ISR until it catches up.
        assert_eq!(imbalanced_partitions(&image, 10), []);
        for partition in &mut image.topics.get_mut("t").unwrap().partitions[..2] {
            partition.isr = vec![1, 2, 3];
        }
        assert_eq!(imbalanced_partitions(&image, 10), [(id, 0), (id, 1)]);
        image.brokers.get_mut(&1).unwrap().in_controlled_shutdown = true;
        assert_eq!(imbalanced_partitions(&image, 10), []);
    }
}
