//! Commands that change the metadata image, and their pure application.
//!
//! `apply` is deterministic (no clock, no randomness, no hash-map order: a command carries
//! everything it needs) and validates against the image it is applied to, so the same
//! command log replayed on any node yields the same image, the property Raft needs.
//!
//! `apply` never panics, and a command it rejects leaves the image exactly as it was: each
//! command is checked in full before the first change. It never touches `applied_index`:
//! the caller sets that to the entry's log index before applying it (see
//! [`MetadataImage::applied_index`]), so a rejected entry is still an applied entry, a
//! no-op, as Raft needs.
//!
//! Topic commands are safe to apply twice: a follower forwards a command to the active
//! controller and retries when the call times out or the connection drops, so a command
//! that was committed may be committed again. Each carries what its plan saw (the topic
//! id, the partition count), and a second application finds its own effect and answers
//! `Done` without changing anything.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ControllerError;
use super::client_quotas::{QuotaChanges, QuotaEntity, apply_alter_client_quotas};
use super::config_admin::{ConfigChanges, ConfigResource, apply_alter_configs};
pub use super::elections::{Election, ElectionResult, PartitionElection};
use super::elections::{begin_controlled_shutdown, elect_leaders};
use super::feature_updates::apply_update_features;
use super::image::{
    BrokerEndpoint, BrokerRegistration, MetadataImage, NO_LEADER, PartitionImage, TopicImage,
};
pub use super::reassignment::{PartitionReassignment, ReassignmentResult};
use super::reassignment::{alter_reassignments, complete_if_ready};
use super::topic_rules::validate_topic_name;
use crate::types::NodeId;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum MetadataCommand {
    /// First command of a new cluster; refused once the image has a cluster id.
    Bootstrap {
        cluster_id: String,
        controller_id: NodeId,
    },
    /// A broker (re)starting. A new incarnation is registered fenced, with the entry's
    /// index as its epoch, and loses whatever leadership its previous incarnation held; the
    /// same incarnation again changes nothing. (A nil incarnation is a record of the old
    /// single-node log, written before fencing existed: that broker is registered unfenced.)
    #[serde(deserialize_with = "legacy::register_broker")]
    RegisterBroker {
        node_id: NodeId,
        incarnation_id: Uuid,
        /// Advertised listeners, the inter-broker listener first.
        listeners: Vec<BrokerEndpoint>,
        rack: Option<String>,
    },
    /// The broker lost its session: its partitions get new leaders, or none.
    FenceBroker { node_id: NodeId, epoch: i64 },
    /// The broker caught up: partitions left without a leader whose ISR holds it elect it.
    UnfenceBroker { node_id: NodeId, epoch: i64 },
    /// `assignments[p]` lists partition p's replicas, preferred leader first. Applied to a
    /// topic of that name with the same id (its own earlier application), it answers
    /// `Done` and changes nothing.
    CreateTopic {
        name: String,
        id: Uuid,
        assignments: Vec<Vec<NodeId>>,
        configs: BTreeMap<String, String>,
    },
    DeleteTopic {
        name: String,
        /// The id of the topic the plan saw (`None` in logs written before it was
        /// carried). With an id, a topic that is gone, or whose name now belongs to
        /// another topic, answers `Done` and nothing is deleted: the planned topic is gone
        /// (a retry must not delete a topic created since).
        #[serde(default)]
        id: Option<Uuid>,
    },
    /// Appends partitions to an existing topic.
    CreatePartitions {
        name: String,
        /// The topic's partition count the plan started from (`None` in logs written
        /// before it was carried: not checked). Another count is refused, unless the topic
        /// already holds the planned partitions with these replica lists (its own earlier
        /// application): then `Done` and nothing changes.
        #[serde(default)]
        partitions_before: Option<usize>,
        assignments: Vec<Vec<NodeId>>,
    },
    /// Reserves `count` producer ids for one broker to hand out.
    AllocateProducerIds { count: i64 },
    /// A partition leader changes its ISR (Kafka's AlterPartition): accepted only from the
    /// current leader at the current leader and partition epochs, with an ISR that holds
    /// the leader, lists only replicas, and adds only live ones. A refusal is an outcome
    /// ([`CommandOutcome::PartitionChangeRefused`]), not an error: the leader waits for
    /// the next image and decides again.
    AlterPartition {
        topic_id: Uuid,
        partition: i32,
        leader: NodeId,
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: Vec<NodeId>,
        /// KIP-903: the broker epoch each replica the leader adds fetched with. A replica
        /// listed here whose registration now has another epoch restarted after the
        /// leader judged it caught up (its log may have lost what it had): refused as
        /// INELIGIBLE_REPLICA. Absent in commands logged before it existed.
        #[serde(default)]
        broker_epochs: Vec<(NodeId, i64)>,
    },
    /// A broker begins its controlled shutdown (Kafka KIP-631), named by its registration's
    /// epoch like `FenceBroker`: it is marked, loses every leadership (to another eligible
    /// ISR member, else the partition waits without a leader) and leaves every ISR it
    /// shares. It is never elected nor added to an ISR again until it re-registers.
    BeginControlledShutdown { node_id: NodeId, epoch: i64 },
    /// Kafka's ElectLeaders, for the listed partitions (topic id, index); each gets its
    /// own [`ElectionResult`] in [`CommandOutcome::LeadersElected`].
    ElectLeaders {
        election: Election,
        partitions: Vec<(Uuid, i32)>,
    },
    /// Replaces an image that has no cluster id yet with `image` (imports the old
    /// single-node metadata log once). Keeps the receiving image's `applied_index` and
    /// `controller_id`, which belong to the log applying it.
    Restore { image: Box<MetadataImage> },
    /// Sets (`Some`) or removes (`None`) dynamic config keys of a topic or of the brokers
    /// (AlterConfigs, IncrementalAlterConfigs), as Kafka's `ConfigRecord`s.
    AlterConfigs {
        resource: ConfigResource,
        changes: ConfigChanges,
        /// The resource's whole dynamic config the plan read (and validated `changes`
        /// against, and computed APPEND/SUBTRACT and replace-all from). Applied to a
        /// resource whose config is no longer this, the command is refused
        /// ([`ControllerError::ConfigChanged`]) unless the config is already what the plan
        /// made (its own earlier application): the planner saw a stale image, or another
        /// alter landed first, and re-plans. `None` in logs written before it existed: not
        /// checked.
        #[serde(default)]
        expected: Option<BTreeMap<String, String>>,
    },
    /// Finalizes feature levels (UpdateFeatures, Kafka's `FeatureLevelRecord`s).
    UpdateFeatures {
        levels: BTreeMap<String, i16>,
        /// Each feature's level the plan saw (see `feature_updates`); `None`: not checked.
        #[serde(default)]
        expected: Option<BTreeMap<String, i16>>,
    },
    /// Kafka's AlterPartitionReassignments: starts, replaces or cancels the reassignment
    /// of each listed partition (see `reassignment`); one [`ReassignmentResult`] each in
    /// [`CommandOutcome::PartitionsReassigned`].
    AlterPartitionReassignments {
        reassignments: Vec<PartitionReassignment>,
    },
    /// Sets (`Some`) or removes (`None`) quota keys of one client quota entity
    /// (AlterClientQuotas), as Kafka's `QuotaRecord`s. Validated again at apply.
    AlterClientQuotas {
        entity: QuotaEntity,
        #[serde(default)]
        changes: QuotaChanges,
    },
}

/// What applying a command produced, for the caller that submitted it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CommandOutcome {
    Done,
    /// The registration's broker epoch (unchanged for a repeated incarnation).
    BrokerRegistered {
        epoch: i64,
    },
    ProducerIdBlock {
        first: i64,
        count: i64,
    },
    /// The partition as it now stands after an accepted (or already applied) change.
    PartitionChanged {
        isr: Vec<NodeId>,
        leader_epoch: i32,
        partition_epoch: i32,
    },
    PartitionChangeRefused(PartitionChangeRefusal),
    /// One result per partition an `ElectLeaders` named, in its order.
    LeadersElected(Vec<PartitionElection>),
    /// One result per partition an `AlterPartitionReassignments` named, in its order.
    PartitionsReassigned(Vec<ReassignmentResult>),
}

/// Why the controller refused a partition change, in Kafka's AlterPartition error terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartitionChangeRefusal {
    /// UNKNOWN_TOPIC_OR_PARTITION / UNKNOWN_TOPIC_ID.
    UnknownPartition,
    /// The sender does not lead the partition (INVALID_REQUEST in Kafka).
    NotLeader,
    /// FENCED_LEADER_EPOCH: the leader epoch moved on.
    FencedLeaderEpoch,
    /// INVALID_UPDATE_VERSION: the partition changed since the proposal was built.
    InvalidUpdateVersion,
    /// INELIGIBLE_REPLICA: the new ISR adds a replica that is fenced or shutting down.
    IneligibleReplica,
    /// INVALID_REQUEST: the leader missing from the ISR, a non-replica, a duplicate.
    InvalidIsr,
}

pub fn apply(
    image: &mut MetadataImage,
    command: &MetadataCommand,
) -> Result<CommandOutcome, ControllerError> {
    match command {
        MetadataCommand::Bootstrap {
            cluster_id,
            controller_id,
        } => bootstrap(image, cluster_id, *controller_id),
        MetadataCommand::RegisterBroker {
            node_id,
            incarnation_id,
            listeners,
            rack,
        } => register_broker(image, *node_id, *incarnation_id, listeners, rack),
        MetadataCommand::FenceBroker { node_id, epoch } => {
            if !check_broker_epoch(image, *node_id, *epoch)? {
                fence_broker(image, *node_id);
            }
            Ok(CommandOutcome::Done)
        }
        MetadataCommand::UnfenceBroker { node_id, epoch } => {
            if check_broker_epoch(image, *node_id, *epoch)? {
                unfence_broker(image, *node_id);
            }
            Ok(CommandOutcome::Done)
        }
        MetadataCommand::CreateTopic {
            name,
            id,
            assignments,
            configs,
        } => create_topic(image, name, *id, assignments, configs),
        MetadataCommand::DeleteTopic { name, id } => delete_topic(image, name, *id),
        MetadataCommand::CreatePartitions {
            name,
            partitions_before,
            assignments,
        } => create_partitions(image, name, *partitions_before, assignments),
        MetadataCommand::AllocateProducerIds { count } => allocate_producer_ids(image, *count),
        MetadataCommand::AlterPartition {
            topic_id,
            partition,
            leader,
            leader_epoch,
            partition_epoch,
            new_isr,
            broker_epochs,
        } => Ok(alter_partition(
            image,
            PartitionChange {
                topic_id: *topic_id,
                partition: *partition,
                leader: *leader,
                leader_epoch: *leader_epoch,
                partition_epoch: *partition_epoch,
                new_isr,
                broker_epochs,
            },
        )),
        MetadataCommand::BeginControlledShutdown { node_id, epoch } => {
            check_broker_epoch(image, *node_id, *epoch)?;
            begin_controlled_shutdown(image, *node_id);
            Ok(CommandOutcome::Done)
        }
        MetadataCommand::ElectLeaders {
            election,
            partitions,
        } => Ok(CommandOutcome::LeadersElected(elect_leaders(
            image, *election, partitions,
        ))),
        MetadataCommand::Restore { image: restored } => restore(image, restored),
        MetadataCommand::AlterConfigs {
            resource,
            changes,
            expected,
        } => apply_alter_configs(image, resource, changes, expected.as_ref()),
        MetadataCommand::UpdateFeatures { levels, expected } => {
            apply_update_features(image, levels, expected.as_ref())
        }
        MetadataCommand::AlterPartitionReassignments { reassignments } => Ok(
            CommandOutcome::PartitionsReassigned(alter_reassignments(image, reassignments)),
        ),
        MetadataCommand::AlterClientQuotas { entity, changes } => {
            apply_alter_client_quotas(image, entity, changes)
        }
    }
}

fn bootstrap(
    image: &mut MetadataImage,
    cluster_id: &str,
    controller_id: NodeId,
) -> Result<CommandOutcome, ControllerError> {
    if !image.cluster_id.is_empty() {
        return Err(ControllerError::InvalidRequest(format!(
            "the metadata already belongs to cluster {}",
            image.cluster_id
        )));
    }
    if cluster_id.is_empty() {
        return Err(ControllerError::InvalidRequest("empty cluster id".into()));
    }
    image.cluster_id = cluster_id.to_string();
    image.controller_id = controller_id;
    Ok(CommandOutcome::Done)
}

fn restore(
    image: &mut MetadataImage,
    restored: &MetadataImage,
) -> Result<CommandOutcome, ControllerError> {
    if !image.cluster_id.is_empty() {
        return Err(ControllerError::InvalidRequest(format!(
            "cannot restore over the metadata of cluster {}",
            image.cluster_id
        )));
    }
    if restored.cluster_id.is_empty() {
        return Err(ControllerError::InvalidRequest(
            "the restored metadata has no cluster id".into(),
        ));
    }
    restored.check_invariants().map_err(|reason| {
        ControllerError::InvalidRequest(format!("restored metadata: {reason}"))
    })?;
    let (applied_index, controller_id) = (image.applied_index, image.controller_id);
    *image = restored.clone();
    image.applied_index = applied_index;
    image.controller_id = controller_id;
    // The imported log comes from the single-node broker, written before partition data
    // was replicated: only the leader holds it, whatever the old image says, so no other
    // replica may be elected from it.
    for topic in image.topics.values_mut() {
        for partition in &mut topic.partitions {
            if partition.leader >= 0 {
                partition.isr = vec![partition.leader];
            } else {
                partition.isr.truncate(1);
            }
        }
    }
    Ok(CommandOutcome::Done)
}

fn allocate_producer_ids(
    image: &mut MetadataImage,
    count: i64,
) -> Result<CommandOutcome, ControllerError> {
    if count <= 0 {
        return Err(ControllerError::InvalidRequest(format!(
            "cannot allocate {count} producer ids"
        )));
    }
    let first = image.next_producer_id;
    image.next_producer_id = first
        .checked_add(count)
        .ok_or_else(|| ControllerError::InvalidRequest("producer ids exhausted".into()))?;
    Ok(CommandOutcome::ProducerIdBlock { first, count })
}

// ---- brokers ----------------------------------------------------------------------------

fn check_listeners(node_id: NodeId, listeners: &[BrokerEndpoint]) -> Result<(), ControllerError> {
    let invalid = |reason: String| Err(ControllerError::InvalidRequest(reason));
    if node_id < 0 {
        return invalid(format!("invalid broker id {node_id}"));
    }
    if listeners.is_empty() {
        return invalid(format!("broker {node_id} registers no listener"));
    }
    for (index, listener) in listeners.iter().enumerate() {
        if listener.name.is_empty() || listener.host.is_empty() {
            return invalid(format!("broker {node_id}: a listener without name or host"));
        }
        if listeners[..index].iter().any(|l| l.name == listener.name) {
            return invalid(format!(
                "broker {node_id} registers listener {} twice",
                listener.name
            ));
        }
    }
    Ok(())
}

fn register_broker(
    image: &mut MetadataImage,
    node_id: NodeId,
    incarnation_id: Uuid,
    listeners: &[BrokerEndpoint],
    rack: &Option<String>,
) -> Result<CommandOutcome, ControllerError> {
    check_listeners(node_id, listeners)?;
    if let Some(existing) = image.brokers.get(&node_id)
        && !incarnation_id.is_nil()
        && existing.incarnation_id == incarnation_id
    {
        return Ok(CommandOutcome::BrokerRegistered {
            epoch: existing.epoch,
        });
    }
    let epoch = i64::try_from(image.applied_index).unwrap_or(i64::MAX);
    let client = &listeners[0];
    let registration = BrokerRegistration {
        node_id,
        incarnation_id,
        epoch,
        listeners: listeners.to_vec(),
        host: client.host.clone(),
        port: i32::from(client.port),
        rack: rack.clone(),
        fenced: true,
        in_controlled_shutdown: false,
    };
    image.brokers.insert(node_id, registration);
    // The previous incarnation is gone: nothing may stay led by it.
    fence_broker(image, node_id);
    if incarnation_id.is_nil() {
        unfence_broker(image, node_id);
    }
    Ok(CommandOutcome::BrokerRegistered { epoch })
}

/// Whether the broker is fenced now; an error for an unknown broker or another epoch.
pub(super) fn check_broker_epoch(
    image: &MetadataImage,
    node_id: NodeId,
    epoch: i64,
) -> Result<bool, ControllerError> {
    let broker = image
        .brokers
        .get(&node_id)
        .ok_or(ControllerError::UnknownBroker(node_id))?;
    if broker.epoch != epoch {
        return Err(ControllerError::StaleBrokerEpoch {
            node_id,
            epoch,
            current: broker.epoch,
        });
    }
    Ok(broker.fenced)
}

/// Marks `node_id` fenced; each partition drops it from its ISR (unless it is the last
/// member, which Kafka keeps so the partition can come back) and elects a new leader
/// where it led.
fn fence_broker(image: &mut MetadataImage, node_id: NodeId) {
    if let Some(broker) = image.brokers.get_mut(&node_id) {
        broker.fenced = true;
    }
    remove_from_every_partition(image, node_id);
}

/// [`remove_replica`] on every partition, with the image's brokers deciding eligibility.
pub(super) fn remove_from_every_partition(image: &mut MetadataImage, node_id: NodeId) {
    let MetadataImage {
        brokers, topics, ..
    } = image;
    let is_eligible = |id: NodeId| {
        brokers
            .get(&id)
            .is_some_and(BrokerRegistration::is_eligible)
    };
    for partition in topics.values_mut().flat_map(|t| t.partitions.iter_mut()) {
        remove_replica(partition, node_id, &is_eligible);
    }
}

/// Takes `node_id` (fenced or shutting down) out of the partition: out of its ISR unless it
/// is the last member, and out of its leadership (to the first eligible ISR member).
fn remove_replica(
    partition: &mut PartitionImage,
    node_id: NodeId,
    is_eligible: &impl Fn(NodeId) -> bool,
) {
    if partition.isr.len() > 1 && partition.isr.contains(&node_id) {
        partition.isr.retain(|&replica| replica != node_id);
        partition.partition_epoch = partition.partition_epoch.saturating_add(1);
    }
    if partition.leader == node_id {
        let leader = elect_leader(partition, is_eligible);
        set_leader(partition, leader);
    }
    // Leaving the ISR can satisfy a reassignment no longer waiting on anything else.
    complete_if_ready(partition, is_eligible);
}

/// Marks `node_id` unfenced; partitions without a leader whose ISR holds it elect it.
fn unfence_broker(image: &mut MetadataImage, node_id: NodeId) {
    let MetadataImage {
        brokers, topics, ..
    } = image;
    if let Some(broker) = brokers.get_mut(&node_id) {
        broker.fenced = false;
    }
    let is_eligible = |id: NodeId| {
        brokers
            .get(&id)
            .is_some_and(BrokerRegistration::is_eligible)
    };
    for partition in topics.values_mut().flat_map(|t| t.partitions.iter_mut()) {
        if partition.leader == NO_LEADER && partition.isr.contains(&node_id) {
            let leader = elect_leader(partition, &is_eligible);
            set_leader(partition, leader);
        }
    }
}

/// The first replica, in preference order, that is in the ISR and eligible (live, not in
/// controlled shutdown); else NO_LEADER.
pub(super) fn elect_leader(
    partition: &PartitionImage,
    is_eligible: &impl Fn(NodeId) -> bool,
) -> NodeId {
    partition
        .replicas
        .iter()
        .copied()
        .find(|&replica| partition.isr.contains(&replica) && is_eligible(replica))
        .unwrap_or(NO_LEADER)
}

/// A leader change starts a new leader epoch (and, as every change, a partition epoch).
pub(super) fn set_leader(partition: &mut PartitionImage, leader: NodeId) {
    if partition.leader != leader {
        partition.leader = leader;
        partition.leader_epoch = partition.leader_epoch.saturating_add(1);
        partition.partition_epoch = partition.partition_epoch.saturating_add(1);
    }
}

/// The fields of one `AlterPartition` command.
struct PartitionChange<'a> {
    topic_id: Uuid,
    partition: i32,
    leader: NodeId,
    leader_epoch: i32,
    partition_epoch: i32,
    new_isr: &'a [NodeId],
    broker_epochs: &'a [(NodeId, i64)],
}

/// Kafka's AlterPartition checks (`ReplicationControlManager.alterPartition`), in its
/// order; the ISR is stored in replica order so equal sets compare equal.
fn alter_partition(image: &mut MetadataImage, change: PartitionChange) -> CommandOutcome {
    use PartitionChangeRefusal as Refused;
    let refused = CommandOutcome::PartitionChangeRefused;
    let Some((partition, brokers)) =
        image.partition_mut_with_brokers(&change.topic_id, change.partition)
    else {
        return refused(Refused::UnknownPartition);
    };
    if change.leader_epoch < partition.leader_epoch {
        return refused(Refused::FencedLeaderEpoch);
    }
    if change.leader != partition.leader || change.leader_epoch != partition.leader_epoch {
        return refused(Refused::NotLeader);
    }
    if change.partition_epoch != partition.partition_epoch {
        return refused(Refused::InvalidUpdateVersion);
    }
    let mut isr = Vec::with_capacity(change.new_isr.len());
    for &replica in &partition.replicas {
        if change.new_isr.contains(&replica) {
            isr.push(replica);
        }
    }
    let duplicates =
        (1..change.new_isr.len()).any(|i| change.new_isr[..i].contains(&change.new_isr[i]));
    if isr.len() != change.new_isr.len() || duplicates || !isr.contains(&change.leader) {
        return refused(Refused::InvalidIsr);
    }
    // Kafka's INELIGIBLE_REPLICA: a fenced or shutting-down broker never joins an ISR,
    // nor one registered again since the fetch that made it look caught up (KIP-903).
    let is_eligible = |id: NodeId| {
        let fetched_epoch = change
            .broker_epochs
            .iter()
            .find(|(replica, _)| *replica == id)
            .map(|(_, epoch)| *epoch);
        brokers.get(&id).is_some_and(|broker| {
            broker.is_eligible() && fetched_epoch.is_none_or(|epoch| epoch == broker.epoch)
        })
    };
    let added_ineligible = isr
        .iter()
        .any(|&replica| !partition.isr.contains(&replica) && !is_eligible(replica));
    if added_ineligible {
        return refused(Refused::IneligibleReplica);
    }
    if isr != partition.isr {
        partition.isr = isr;
        partition.partition_epoch = partition.partition_epoch.saturating_add(1);
        // The ISR change that brings the last adding replica in completes a reassignment
        // in the same command, as Kafka's controller does.
        let may_lead = |id: NodeId| {
            brokers
                .get(&id)
                .is_some_and(BrokerRegistration::is_eligible)
        };
        complete_if_ready(partition, &may_lead);
    }
    CommandOutcome::PartitionChanged {
        isr: partition.isr.clone(),
        leader_epoch: partition.leader_epoch,
        partition_epoch: partition.partition_epoch,
    }
}

// ---- topics -----------------------------------------------------------------------------

fn create_topic(
    image: &mut MetadataImage,
    name: &str,
    id: Uuid,
    assignments: &[Vec<NodeId>],
    configs: &BTreeMap<String, String>,
) -> Result<CommandOutcome, ControllerError> {
    validate_topic_name(name).map_err(ControllerError::InvalidTopic)?;
    if let Some(existing) = image.topics.get(name) {
        // Ids are drawn at random per plan: the same id is this command applied before.
        if existing.id == id {
            return Ok(CommandOutcome::Done);
        }
        return Err(ControllerError::TopicAlreadyExists(name.to_string()));
    }
    if image.topic_names.contains_key(&id) || id.is_nil() {
        return Err(ControllerError::InvalidRequest(format!(
            "topic id {id} is taken"
        )));
    }
    let partitions = new_partitions(image, 0, assignments)?;
    let topic = TopicImage {
        name: name.to_string(),
        id,
        partitions,
        configs: configs.clone(),
    };
    image.topics.insert(name.to_string(), topic);
    image.topic_names.insert(id, name.to_string());
    Ok(CommandOutcome::Done)
}

fn delete_topic(
    image: &mut MetadataImage,
    name: &str,
    id: Option<Uuid>,
) -> Result<CommandOutcome, ControllerError> {
    let existing = image.topics.get(name).map(|topic| topic.id);
    match (existing, id) {
        (None, None) => Err(ControllerError::UnknownTopic(name.to_string())),
        // The planned topic is gone: deleted by this command's earlier application, or
        // by another request. Either way nothing is left to do.
        (None, Some(_)) => Ok(CommandOutcome::Done),
        (Some(existing), Some(planned)) if existing != planned => Ok(CommandOutcome::Done),
        (Some(existing), _) => {
            image.topics.remove(name);
            image.topic_names.remove(&existing);
            Ok(CommandOutcome::Done)
        }
    }
}

fn create_partitions(
    image: &mut MetadataImage,
    name: &str,
    partitions_before: Option<usize>,
    assignments: &[Vec<NodeId>],
) -> Result<CommandOutcome, ControllerError> {
    let topic = image
        .topics
        .get(name)
        .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))?;
    let current = topic.partitions.len();
    if let Some(planned) = partitions_before
        && planned != current
    {
        if holds_partitions(topic, planned, assignments) {
            return Ok(CommandOutcome::Done);
        }
        return Err(ControllerError::InvalidPartitions(format!(
            "Topic {name} has {current} partition(s), not the {planned} the request was \
             planned against (another request changed it)."
        )));
    }
    let partitions = new_partitions(image, current, assignments)?;
    if let Some(topic) = image.topics.get_mut(name) {
        topic.partitions.extend(partitions);
    }
    Ok(CommandOutcome::Done)
}

/// Whether partitions `first..first + assignments.len()` exist with exactly these replica
/// lists: a `CreatePartitions` planned at `first` partitions has been applied.
fn holds_partitions(topic: &TopicImage, first: usize, assignments: &[Vec<NodeId>]) -> bool {
    let Some(end) = first.checked_add(assignments.len()) else {
        return false;
    };
    !assignments.is_empty()
        && topic.partitions.get(first..end).is_some_and(|added| {
            added
                .iter()
                .zip(assignments)
                .all(|(partition, replicas)| partition.replicas == *replicas)
        })
}

/// Partitions `first..first + assignments.len()`, each led by its first eligible replica
/// (live, not shutting down) with every eligible replica in its ISR, as Kafka's
/// `buildPartitionRegistration` does: all logs are empty, so all are in sync.
fn new_partitions(
    image: &MetadataImage,
    first: usize,
    assignments: &[Vec<NodeId>],
) -> Result<Vec<PartitionImage>, ControllerError> {
    if assignments.is_empty() {
        return Err(ControllerError::InvalidPartitions(
            "no partitions to create".into(),
        ));
    }
    let total = first.saturating_add(assignments.len());
    if i32::try_from(total).is_err() {
        return Err(ControllerError::InvalidPartitions(format!(
            "{total} partitions exceed the largest partition index"
        )));
    }
    let mut partitions = Vec::with_capacity(assignments.len());
    for (offset, replicas) in assignments.iter().enumerate() {
        check_replicas(image, replicas)?;
        let live = replicas
            .iter()
            .copied()
            .find(|&id| image.is_broker_eligible(id));
        let Some(leader) = live else {
            return Err(ControllerError::InvalidReplicaAssignment(format!(
                "All brokers specified in the manual partition assignment for partition {} \
                 are fenced or in controlled shutdown.",
                first + offset
            )));
        };
        let isr = replicas
            .iter()
            .copied()
            .filter(|&id| image.is_broker_eligible(id))
            .collect();
        partitions.push(PartitionImage {
            replicas: replicas.clone(),
            isr,
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        });
    }
    Ok(partitions)
}

/// Kafka's rules for one replica list (`validateManualPartitionAssignment`).
pub(super) fn check_replicas(
    image: &MetadataImage,
    replicas: &[NodeId],
) -> Result<(), ControllerError> {
    let invalid = |reason: String| Err(ControllerError::InvalidReplicaAssignment(reason));
    if replicas.is_empty() {
        return invalid("The manual partition assignment includes an empty replica list.".into());
    }
    let mut sorted = replicas.to_vec();
    sorted.sort_unstable();
    for (index, broker) in sorted.iter().enumerate() {
        if !image.brokers.contains_key(broker) {
            return invalid(format!(
                "The manual partition assignment includes broker {broker}, but no such \
                 broker is registered."
            ));
        }
        if index > 0 && sorted[index - 1] == *broker {
            return invalid(format!(
                "The manual partition assignment includes the broker {broker} more than once."
            ));
        }
    }
    Ok(())
}

/// Tests elsewhere: registers `node_id` (nil incarnation, so unfenced at once) with one
/// PLAINTEXT listener, so topics can be placed on it.
#[cfg(test)]
pub fn register_live_broker(image: &mut MetadataImage, node_id: NodeId) {
    register_live_broker_on(image, node_id, &[("PLAINTEXT", "localhost", 9092)]);
}

/// Test helper: registers broker `node_id` unfenced with `(name, host, port)` listeners.
#[cfg(test)]
pub fn register_live_broker_on(
    image: &mut MetadataImage,
    node_id: NodeId,
    listeners: &[(&str, &str, u16)],
) {
    let listeners: Vec<BrokerEndpoint> = (listeners.iter())
        .map(|&(name, host, port)| BrokerEndpoint {
            name: name.into(),
            host: host.into(),
            port,
        })
        .collect();
    let registered = register_broker(image, node_id, Uuid::nil(), &listeners, &None);
    assert!(registered.is_ok(), "{registered:?}");
}

/// Test helper: fences registered broker `node_id` at its current epoch.
#[cfg(test)]
pub fn fence_broker_for_tests(image: &mut MetadataImage, node_id: NodeId) {
    let epoch = image.brokers[&node_id].epoch;
    let fenced = apply(image, &MetadataCommand::FenceBroker { node_id, epoch });
    assert!(fenced.is_ok(), "{fenced:?}");
}

/// Reading records written before brokers had incarnations and listener lists.
mod legacy {
    use serde::{Deserialize, Deserializer, de::Error};
    use uuid::Uuid;

    use super::super::image::BrokerEndpoint;
    use crate::types::NodeId;

    type Fields = (NodeId, Uuid, Vec<BrokerEndpoint>, Option<String>);

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Registration {
        Current {
            node_id: NodeId,
            incarnation_id: Uuid,
            listeners: Vec<BrokerEndpoint>,
            rack: Option<String>,
        },
        /// `RegisterBroker(BrokerRegistration { node_id, host, port, rack })`: the old
        /// single-node log, one client listener.
        Legacy {
            node_id: NodeId,
            host: String,
            port: i32,
            rack: Option<String>,
        },
    }

    /// The `RegisterBroker` fields from either form; the old one gets a nil incarnation.
    pub(super) fn register_broker<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Fields, D::Error> {
        match Registration::deserialize(deserializer)? {
            Registration::Current {
                node_id,
                incarnation_id,
                listeners,
                rack,
            } => Ok((node_id, incarnation_id, listeners, rack)),
            Registration::Legacy {
                node_id,
                host,
                port,
                rack,
            } => {
                let port = u16::try_from(port)
                    .map_err(|_| D::Error::custom(format!("invalid port {port}")))?;
                let listener = BrokerEndpoint {
                    name: "PLAINTEXT".into(),
                    host,
                    port,
                };
                Ok((node_id, Uuid::nil(), vec![listener], rack))
            }
        }
    }
}

#[cfg(test)]
#[path = "commands_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "sim.rs"]
mod sim;
