//! The metadata image: what the whole cluster agrees on, rebuilt by replaying commands.
//!
//! Every broker serves Metadata, DescribeCluster and leadership checks from this image;
//! nothing outside `controller/` mutates it. The invariants every image keeps (checked by
//! [`MetadataImage::check_invariants`], after every step of the simulation in `sim.rs`):
//! - a partition's replicas are distinct registered brokers, and there is at least one;
//! - its ISR is a non-empty subset of its replicas, without duplicates;
//! - its leader is [`NO_LEADER`] or an eligible member of its ISR (unfenced, not in
//!   controlled shutdown);
//! - its adding and removing replicas (a reassignment under way) are disjoint subsets of
//!   its replicas, without duplicates, and some replica is not being removed;
//! - `topic_names` is exactly the inverse of `topics` (id -> name);
//! - a broker has a listener, and its `host`/`port` are the first listener's;
//! - a client quota entity has at least one key, each with a finite value above zero.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::types::NodeId;

/// Kafka's NO_LEADER: a partition none of whose in-sync replicas is alive. Clients get
/// LEADER_NOT_AVAILABLE for it until a replica in its ISR comes back.
pub const NO_LEADER: NodeId = -1;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetadataImage {
    pub cluster_id: String,
    /// The node currently acting as controller (the Raft leader in a cluster).
    pub controller_id: NodeId,
    pub brokers: BTreeMap<NodeId, BrokerRegistration>,
    pub topics: BTreeMap<String, TopicImage>,
    /// Topic id -> name, kept beside `topics` so Fetch v13+ resolves ids without a scan.
    pub topic_names: BTreeMap<Uuid, String>,
    /// First producer id not yet handed out to any broker.
    pub next_producer_id: i64,
    /// Index of the last log entry applied (the metadata offset). `commands::apply` never
    /// changes it: whoever applies the log sets it to an entry's index before applying
    /// that entry (a broker epoch is the index of its registration), and keeps it there
    /// whether the entry applied or was rejected as a no-op.
    pub applied_index: u64,
    /// Dynamic broker configs (AlterConfigs on BROKER resources): by node id, and "" for
    /// the cluster-wide defaults. Empty in images written before they existed.
    #[serde(default)]
    pub broker_configs: crate::topic_config::DynamicBrokerConfigs,
    /// Finalized feature levels set by UpdateFeatures (Kafka's `FeatureLevelRecord`s); a
    /// feature not named here is at its default (`features::default_level`). Empty in
    /// images written before UpdateFeatures existed.
    #[serde(default)]
    pub feature_levels: BTreeMap<String, i16>,
    /// Client quotas (AlterClientQuotas) by entity; an entity has at least one key. Empty
    /// in images written before they existed.
    #[serde(default, with = "super::client_quotas::serde_entries")]
    pub client_quotas: super::client_quotas::ClientQuotas,
    /// Consumer groups' own configs (AlterConfigs on GROUP resources, Kafka's
    /// `ConfigRecord`s of type GROUP) by group id; a group listed has at least one key.
    /// Empty in images written before they existed.
    #[serde(default)]
    pub group_configs: BTreeMap<String, BTreeMap<String, String>>,
}

/// One advertised listener of a broker (Kafka's `BrokerEndpoint`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerEndpoint {
    /// The listener name, e.g. `PLAINTEXT`.
    pub name: String,
    pub host: String,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub node_id: NodeId,
    /// Chosen anew at every broker start: a registration with another incarnation is a
    /// restarted broker. Nil only for brokers registered by the old single-node log.
    pub incarnation_id: Uuid,
    /// Kafka's broker epoch: the metadata offset of the registration entry. Fencing and
    /// unfencing commands name it, so a command meant for an older incarnation is refused.
    pub epoch: i64,
    /// Every advertised listener; the first is the inter-broker listener.
    pub listeners: Vec<BrokerEndpoint>,
    /// The first (inter-broker) listener's endpoint. Metadata, DescribeCluster,
    /// FindCoordinator and leader hints use [`BrokerRegistration::listener`] instead: the
    /// endpoint on the listener the request arrived on.
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// A fenced broker leads nothing and is not listed to clients.
    pub fenced: bool,
    /// The broker asked to shut down (Kafka's controlled shutdown): it leads nothing, is
    /// never elected and never joins an ISR, until a new registration (its restart).
    #[serde(default)]
    pub in_controlled_shutdown: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopicImage {
    pub name: String,
    pub id: Uuid,
    pub partitions: Vec<PartitionImage>,
    /// Topic-level config overrides only; defaults come from the broker config.
    pub configs: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionImage {
    /// Preferred leader first.
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    /// [`NO_LEADER`] while no in-sync replica is unfenced.
    pub leader: NodeId,
    /// Rises by one at every leader change, never falls.
    pub leader_epoch: i32,
    /// Kafka's partition epoch: rises by one at every change to this partition (leader or
    /// ISR). An ISR change proposed by the leader names the epoch it saw, so a proposal
    /// built on a stale view is refused (INVALID_UPDATE_VERSION) instead of undoing a
    /// newer change. 0 in images written before it existed.
    #[serde(default)]
    pub partition_epoch: i32,
    /// Replicas an ongoing reassignment adds (Kafka's `PartitionRegistration.addingReplicas`):
    /// listed in `replicas`, fetching, not yet all in the ISR. Empty when none is under way
    /// (and in images written before reassignments existed).
    #[serde(default)]
    pub adding_replicas: Vec<NodeId>,
    /// Replicas an ongoing reassignment will drop once every adding replica is in the ISR;
    /// listed in `replicas` after the target replicas.
    #[serde(default)]
    pub removing_replicas: Vec<NodeId>,
}

impl PartitionImage {
    /// True while a reassignment is under way (KIP-455).
    pub fn is_reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }

    /// The replicas the partition is moving to: `replicas` without the removing ones, in
    /// order (`replicas` itself when no reassignment is under way).
    pub fn target_replicas(&self) -> Vec<NodeId> {
        (self.replicas.iter())
            .copied()
            .filter(|replica| !self.removing_replicas.contains(replica))
            .collect()
    }
}

/// Topics whose names start with this are Kafka-internal (`__consumer_offsets`, ...).
pub fn is_internal_topic(name: &str) -> bool {
    name == "__consumer_offsets" || name == "__transaction_state"
}

impl BrokerRegistration {
    /// Unfenced and not shutting down: may lead and join ISRs.
    pub fn is_eligible(&self) -> bool {
        !self.fenced && !self.in_controlled_shutdown
    }

    /// The listener named `name`, if this broker advertises one.
    pub fn listener(&self, name: &str) -> Option<&BrokerEndpoint> {
        self.listeners.iter().find(|listener| listener.name == name)
    }
}

impl MetadataImage {
    /// Where brokers reach `node`: its first listener (the inter-broker one), as
    /// `host:port`. Used by followers' fetchers and the transaction marker sender.
    pub fn inter_broker_address(&self, node: NodeId) -> Option<String> {
        let broker = self.brokers.get(&node)?;
        let endpoint = broker.listeners.first()?;
        Some(format!("{}:{}", endpoint.host, endpoint.port))
    }

    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&TopicImage> {
        self.topic_names
            .get(id)
            .and_then(|name| self.topics.get(name))
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionImage> {
        let index = usize::try_from(partition).ok()?;
        self.topics.get(topic)?.partitions.get(index)
    }

    /// A partition by topic id, mutable, beside the broker registrations its change is
    /// checked against (the borrow split the controller's partition commands need).
    pub fn partition_mut_with_brokers(
        &mut self,
        topic_id: &Uuid,
        partition: i32,
    ) -> Option<(&mut PartitionImage, &BTreeMap<NodeId, BrokerRegistration>)> {
        let index = usize::try_from(partition).ok()?;
        let name = self.topic_names.get(topic_id)?;
        let found = self.topics.get_mut(name)?.partitions.get_mut(index)?;
        Some((found, &self.brokers))
    }

    /// Registered and not fenced: may lead partitions and is listed to clients.
    /// The controller id Metadata and DescribeCluster give clients: they send admin
    /// requests there, so it must be a live broker. The active controller when it is one;
    /// else `local` (it forwards to the active controller), else any live broker, as a
    /// KRaft broker answers.
    pub fn controller_for_clients(&self, local: NodeId) -> NodeId {
        if self.is_broker_live(self.controller_id) {
            self.controller_id
        } else if self.is_broker_live(local) {
            local
        } else {
            self.live_brokers()
                .next()
                .map_or(NO_LEADER, |broker| broker.node_id)
        }
    }

    pub fn is_broker_live(&self, node_id: NodeId) -> bool {
        self.brokers
            .get(&node_id)
            .is_some_and(|broker| !broker.fenced)
    }

    /// Live and not in controlled shutdown: may be elected leader or join an ISR (Kafka's
    /// `ClusterControlManager.isActive`).
    pub fn is_broker_eligible(&self, node_id: NodeId) -> bool {
        self.brokers
            .get(&node_id)
            .is_some_and(BrokerRegistration::is_eligible)
    }

    /// Unfenced brokers, in node id order.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values().filter(|broker| !broker.fenced)
    }

    /// Partitions in all topics.
    pub fn partition_count(&self) -> usize {
        self.topics
            .values()
            .map(|topic| topic.partitions.len())
            .sum()
    }

    /// The first broken invariant (see the module docs), or `Ok`. Pure; used to vet an
    /// image before it is restored, and by tests after every step.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (node_id, broker) in &self.brokers {
            if broker.node_id != *node_id || *node_id < 0 {
                return Err(format!("broker {node_id} is filed under a wrong id"));
            }
            let client = broker.listeners.first();
            if client.is_none_or(|c| c.host != broker.host || i32::from(c.port) != broker.port) {
                return Err(format!(
                    "broker {node_id}: host and port are not its first listener"
                ));
            }
        }
        for (entity, quotas) in &self.client_quotas {
            let valid = |value: &f64| value.is_finite() && *value > 0.0;
            if quotas.is_empty() || !quotas.values().all(valid) {
                return Err(format!("client quota entity {entity:?}: {quotas:?}"));
            }
        }
        if self.topic_names.len() != self.topics.len() {
            return Err("topic_names does not mirror topics".into());
        }
        for (name, topic) in &self.topics {
            if topic.name != *name || self.topic_names.get(&topic.id) != Some(name) {
                return Err(format!("topic {name} is filed under a wrong name or id"));
            }
            for (index, partition) in topic.partitions.iter().enumerate() {
                self.check_partition(partition)
                    .map_err(|reason| format!("{name}-{index}: {reason}"))?;
            }
        }
        Ok(())
    }

    fn check_partition(&self, partition: &PartitionImage) -> Result<(), String> {
        let replicas: BTreeSet<NodeId> = partition.replicas.iter().copied().collect();
        if replicas.is_empty() || replicas.len() != partition.replicas.len() {
            return Err(format!("bad replica list {:?}", partition.replicas));
        }
        if let Some(unknown) = replicas.iter().find(|id| !self.brokers.contains_key(id)) {
            return Err(format!("replica {unknown} is not a registered broker"));
        }
        let isr: BTreeSet<NodeId> = partition.isr.iter().copied().collect();
        if isr.is_empty() || isr.len() != partition.isr.len() || !isr.is_subset(&replicas) {
            return Err(format!("bad ISR {:?}", partition.isr));
        }
        let leader = partition.leader;
        if leader != NO_LEADER && !(isr.contains(&leader) && self.is_broker_eligible(leader)) {
            return Err(format!(
                "leader {leader} is not a live ISR member outside controlled shutdown"
            ));
        }
        Self::check_reassignment(partition, &replicas)
    }

    fn check_reassignment(
        partition: &PartitionImage,
        replicas: &BTreeSet<NodeId>,
    ) -> Result<(), String> {
        let adding: BTreeSet<NodeId> = partition.adding_replicas.iter().copied().collect();
        let removing: BTreeSet<NodeId> = partition.removing_replicas.iter().copied().collect();
        let (adding_count, removing_count) = (
            partition.adding_replicas.len(),
            partition.removing_replicas.len(),
        );
        if adding.len() != adding_count || !adding.is_subset(replicas) {
            return Err(format!(
                "bad adding replicas {:?}",
                partition.adding_replicas
            ));
        }
        if removing.len() != removing_count || !removing.is_subset(replicas) {
            return Err(format!(
                "bad removing replicas {:?}",
                partition.removing_replicas
            ));
        }
        if !adding.is_disjoint(&removing) || removing.len() == replicas.len() {
            return Err(format!(
                "adding {adding:?} and removing {removing:?} overlap or remove every replica"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(node_id: NodeId, fenced: bool) -> BrokerRegistration {
        BrokerRegistration {
            node_id,
            incarnation_id: Uuid::from_u128(node_id as u128 + 1),
            epoch: 1,
            listeners: vec![BrokerEndpoint {
                name: "PLAINTEXT".into(),
                host: "h".into(),
                port: 9092,
            }],
            host: "h".into(),
            port: 9092,
            rack: None,
            fenced,
            in_controlled_shutdown: false,
        }
    }

    fn image_with(partition: PartitionImage) -> MetadataImage {
        let mut image = MetadataImage::default();
        image.brokers.insert(1, broker(1, false));
        image.brokers.insert(2, broker(2, true));
        let id = Uuid::from_u128(7);
        let topic = TopicImage {
            name: "t".into(),
            id,
            partitions: vec![partition],
            configs: BTreeMap::new(),
        };
        image.topics.insert("t".into(), topic);
        image.topic_names.insert(id, "t".into());
        image
    }

    fn partition(replicas: &[NodeId], isr: &[NodeId], leader: NodeId) -> PartitionImage {
        PartitionImage {
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        }
    }

    fn reassigning(replicas: &[NodeId], adding: &[NodeId], removing: &[NodeId]) -> PartitionImage {
        PartitionImage {
            adding_replicas: adding.to_vec(),
            removing_replicas: removing.to_vec(),
            ..partition(replicas, &[1], 1)
        }
    }

    #[test]
    fn invariants_accept_a_sound_image_and_name_each_broken_rule() {
        assert_eq!(
            image_with(reassigning(&[2, 1], &[2], &[1])).check_invariants(),
            Ok(())
        );
        assert_eq!(
            image_with(partition(&[1, 2], &[1, 2], 1)).check_invariants(),
            Ok(())
        );
        assert_eq!(
            image_with(partition(&[2], &[2], NO_LEADER)).check_invariants(),
            Ok(())
        );
        for broken in [
            partition(&[], &[], NO_LEADER),
            partition(&[1, 1], &[1], 1),
            partition(&[1, 3], &[1], 1),
            partition(&[1], &[], NO_LEADER),
            partition(&[1], &[1, 2], 1),
            partition(&[1, 2], &[1, 2], 2),
            partition(&[1, 2], &[2], 1),
            reassigning(&[1, 2], &[3], &[]),
            reassigning(&[1, 2], &[], &[3]),
            reassigning(&[1, 2], &[2], &[2]),
            reassigning(&[1, 2], &[2, 2], &[]),
            reassigning(&[1, 2], &[], &[1, 1]),
            reassigning(&[1, 2], &[], &[1, 2]),
        ] {
            let image = image_with(broken.clone());
            assert!(image.check_invariants().is_err(), "{broken:?} accepted");
        }
        let mut image = image_with(partition(&[1], &[1], 1));
        image.topic_names.clear();
        assert!(image.check_invariants().is_err());
        let mut image = image_with(partition(&[1], &[1], 1));
        image.brokers.get_mut(&2).unwrap().listeners.clear();
        assert!(
            image.check_invariants().is_err(),
            "a broker without listeners"
        );
    }

    #[test]
    fn live_brokers_skip_fenced_ones() {
        let image = image_with(partition(&[1], &[1], 1));
        let live: Vec<_> = image.live_brokers().map(|b| b.node_id).collect();
        assert_eq!(live, [1]);
        assert!(image.is_broker_live(1));
        assert!(!image.is_broker_live(2));
        assert!(!image.is_broker_live(3));
        assert_eq!(image.partition_count(), 1);
    }
}
