//! Unclean leader election at the active controller (Kafka's `maybeElectUncleanLeaders`):
//! a partition left without a leader (its last in-sync replica fenced or shut down) whose
//! `unclean.leader.election.enable` is true takes any live replica as leader, which may
//! lose acknowledged records; the operator chose availability.
//!
//! The flag resolves as Kafka's `ConfigurationControlManager.getTopicConfig`: the topic's
//! own value, then this controller's dynamic broker value, the cluster-wide dynamic
//! default, this controller's static config, Kafka's default (false). The active
//! controller decides ([`partitions_to_elect`], pure) and proposes an unclean
//! `ElectLeaders`, which every node applies the same way. It checks at every change of the
//! metadata image (a broker fenced or back, a config altered: Kafka elects at fencing and
//! unfencing too) and every `unclean.leader.election.interval.ms` (Kafka's internal
//! setting, 5 minutes), which covers a controller that has just become active.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::image::NO_LEADER;
use super::{CommandOutcome, Controller, Election, ElectionResult, MetadataCommand, MetadataImage};
use crate::config::BrokerConfig;
use crate::server::Shutdown;
use crate::topic_config::{self, DynamicLayers};
use crate::types::NodeId;

/// Kafka's `maxElectionsPerImbalance`: elections proposed in one command; the next check
/// takes the rest.
pub const ELECTIONS_PER_CHECK_MAX: usize = 1_000;

/// Kafka's default `unclean.leader.election.interval.ms`.
pub const CHECK_INTERVAL_DEFAULT: Duration = Duration::from_secs(300);

/// Leaderless partitions (topic id, index) whose topic allows unclean election and that
/// have a live replica to elect, in topic name and partition order, at most
/// [`ELECTIONS_PER_CHECK_MAX`].
pub fn partitions_to_elect(
    image: &MetadataImage,
    config: &BrokerConfig,
    node_id: NodeId,
) -> Vec<(Uuid, i32)> {
    let dynamic = DynamicLayers::of(&image.broker_configs, node_id);
    let mut chosen = Vec::new();
    for topic in image.topics.values() {
        // The flag is resolved only for topics that have a leaderless partition.
        let leaderless = topic.partitions.iter().any(|p| p.leader == NO_LEADER);
        if !leaderless || !enabled(config, dynamic, &topic.configs) {
            continue;
        }
        for (index, partition) in topic.partitions.iter().enumerate() {
            let electable = (partition.replicas.iter()).any(|&r| image.is_broker_eligible(r));
            if partition.leader == NO_LEADER
                && electable
                && let Ok(index) = i32::try_from(index)
            {
                chosen.push((topic.id, index));
                if chosen.len() == ELECTIONS_PER_CHECK_MAX {
                    return chosen;
                }
            }
        }
    }
    chosen
}

fn enabled(
    config: &BrokerConfig,
    dynamic: DynamicLayers,
    topic_configs: &BTreeMap<String, String>,
) -> bool {
    let name = "unclean.leader.election.enable";
    topic_config::effective_value(name, config, dynamic, topic_configs)
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("true"))
}

/// `unclean.leader.election.interval.ms` (internal in Kafka), at least 1 ms.
pub fn check_interval(config: &BrokerConfig) -> Duration {
    config
        .explicit
        .get("unclean.leader.election.interval.ms")
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map_or(CHECK_INTERVAL_DEFAULT, |ms| {
            Duration::from_millis(ms.max(1))
        })
}

/// Runs on every controller; acts only while this node is the active controller.
pub async fn run_unclean_elections(
    controller: Arc<Controller>,
    config: Arc<BrokerConfig>,
    mut shutdown: Shutdown,
) {
    let period = check_interval(&config);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut images = controller.subscribe();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = images.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = shutdown.triggered() => return,
        }
        if controller.is_leader() {
            elect_once(&controller, &config).await;
        }
    }
}

async fn elect_once(controller: &Controller, config: &BrokerConfig) {
    let image = controller.image();
    let partitions = partitions_to_elect(&image, config, config.node_id);
    if partitions.is_empty() {
        return;
    }
    // Checked again when the command applies: a config turned off meanwhile wins.
    let static_enabled = enabled(config, DynamicLayers::default(), &BTreeMap::new());
    let command = MetadataCommand::ElectLeaders {
        election: Election::UncleanIfEnabled {
            controller: config.node_id,
            static_enabled,
        },
        partitions,
    };
    match controller.submit_as_leader(command).await {
        Ok((Ok(CommandOutcome::LeadersElected(results)), _)) => {
            for result in results {
                let topic = image.topic_names.get(&result.topic_id);
                match result.result {
                    // Kafka logs these at ERROR: acknowledged records may be gone.
                    ElectionResult::Elected { leader } => tracing::error!(
                        topic = topic.map(String::as_str),
                        partition = result.partition,
                        leader,
                        "unclean leader election for an offline partition \
                         (unclean.leader.election.enable)"
                    ),
                    other => tracing::warn!(
                        topic = topic.map(String::as_str),
                        partition = result.partition,
                        ?other,
                        "cannot run an unclean leader election for an offline partition"
                    ),
                }
            }
        }
        Ok((other, _)) => tracing::warn!(?other, "unclean leader election: unexpected outcome"),
        Err(error) => tracing::warn!(%error, "unclean leader election not applied"),
    }
}

#[cfg(test)]
#[path = "unclean_election_tests.rs"]
mod tests;
