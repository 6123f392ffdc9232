//! Partition reassignments (KIP-455 as Kafka's KRaft controller runs them): moving a
//! partition's replicas to a target list while it stays available.
//!
//! Pure functions over the image, applied by `commands::apply` (deterministic, as every
//! command is), after Kafka's `ReplicationControlManager` and `PartitionChangeBuilder`:
//! - starting one to target T on replicas R: replicas become T followed by R-T (Kafka's
//!   `PartitionReassignmentReplicas`), adding = T-R, removing = R-T. For a reassignment
//!   already under way Kafka takes R as the merged replica list (old target plus
//!   removing); here it is first reverted (below) when that keeps an in-sync replica, so
//!   adding replicas the new target drops do not linger, and otherwise R is the merged
//!   list with the ISR kept, as in Kafka;
//! - it completes once every adding replica is in the ISR: replicas = T, ISR = ISR ∩ T,
//!   and a leader outside T (or outside the new ISR) gives way to the first replica of T
//!   in the new ISR that may lead. The check runs when it starts (a shrink or a reorder
//!   completes at once) and whenever the leader's AlterPartition changes the ISR, so the
//!   completion is itself part of a committed command: crash-safe, same on every node;
//! - cancelling (a null target) reverts to R: adding replicas leave the replicas and the
//!   ISR (Kafka's `PartitionReassignmentRevert`).
//!
//! Every change bumps the partition epoch (and a leader change the leader epoch), so a
//! leader's AlterPartition built on the view before it is refused as stale.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::commands::{check_replicas, set_leader};
use super::image::{BrokerRegistration, MetadataImage, NO_LEADER, PartitionImage};
use crate::types::NodeId;

/// One partition an AlterPartitionReassignments names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionReassignment {
    pub topic_id: Uuid,
    pub partition: i32,
    /// The target replicas, preferred leader first; `None` cancels.
    pub target: Option<Vec<NodeId>>,
    /// For a cancel: the partition epoch at which the requesting broker's image saw this
    /// reassignment under way (`None` if it saw none). A cancel that finds nothing under way
    /// at a later epoch answers success: the reassignment ended since (completed, or
    /// reverted by this very command's earlier application, which a forwarded retry
    /// repeats).
    #[serde(default)]
    pub seen_in_progress_at: Option<i32>,
}

/// One partition's answer, in Kafka's error terms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReassignmentResult {
    /// NONE: started, replaced, completed, cancelled, or nothing to do.
    Accepted,
    /// UNKNOWN_TOPIC_OR_PARTITION.
    UnknownPartition,
    /// INVALID_REPLICA_ASSIGNMENT, with Kafka's message.
    InvalidReplicaAssignment(String),
    /// NO_REASSIGNMENT_IN_PROGRESS: a cancel of a partition that is not moving.
    NoReassignmentInProgress,
}

/// Applies each reassignment in order; one result each. A refused one changes nothing.
pub(super) fn alter_reassignments(
    image: &mut MetadataImage,
    reassignments: &[PartitionReassignment],
) -> Vec<ReassignmentResult> {
    reassignments
        .iter()
        .map(|reassignment| alter_one(image, reassignment))
        .collect()
}

fn alter_one(image: &mut MetadataImage, change: &PartitionReassignment) -> ReassignmentResult {
    if let Some(target) = &change.target
        && let Err(error) = check_replicas(image, target)
    {
        return ReassignmentResult::InvalidReplicaAssignment(error.to_string());
    }
    let Some((partition, brokers)) =
        image.partition_mut_with_brokers(&change.topic_id, change.partition)
    else {
        return ReassignmentResult::UnknownPartition;
    };
    let is_eligible = |id: NodeId| {
        brokers
            .get(&id)
            .is_some_and(BrokerRegistration::is_eligible)
    };
    match &change.target {
        Some(target) => start(partition, target, &is_eligible),
        None => cancel(partition, change.seen_in_progress_at, &is_eligible),
    }
}

/// Starts (or replaces) a reassignment to `target`, completing it at once when it adds
/// nothing the ISR lacks.
fn start(
    partition: &mut PartitionImage,
    target: &[NodeId],
    is_eligible: &impl Fn(NodeId) -> bool,
) -> ReassignmentResult {
    let unchanged = if partition.is_reassigning() {
        partition.target_replicas() == target
    } else {
        partition.replicas == target
    };
    if unchanged {
        // The same target again (a retried command, or a client repeating itself): a
        // restart would drop adding replicas that already caught up from the ISR. An ISR
        // change that should have completed it (e.g. an unclean election) gets its chance.
        complete_if_ready(partition, is_eligible);
        return ReassignmentResult::Accepted;
    }
    let (current, isr, pending) = match reverted(partition) {
        Some((current, isr)) => (current, isr, Vec::new()),
        // Only adding replicas are in sync: as Kafka does, the new target is computed
        // against the merged replica list and the ISR is kept. Adding replicas that the
        // new target keeps but that have not caught up stay adding, so completion still
        // waits for them (Kafka would count them as present).
        None => {
            let pending: Vec<NodeId> = (partition.adding_replicas.iter().copied())
                .filter(|replica| !partition.isr.contains(replica))
                .collect();
            (partition.replicas.clone(), partition.isr.clone(), pending)
        }
    };
    let removing: Vec<NodeId> = (current.iter().copied())
        .filter(|replica| !target.contains(replica))
        .collect();
    let adding: Vec<NodeId> = (target.iter().copied())
        .filter(|replica| !current.contains(replica) || pending.contains(replica))
        .collect();
    let mut replicas = target.to_vec();
    replicas.extend(&removing);
    partition.replicas = replicas;
    partition.isr = isr;
    partition.adding_replicas = adding;
    partition.removing_replicas = removing;
    partition.partition_epoch = partition.partition_epoch.saturating_add(1);
    // One leader change at most per command: completing elects if it must.
    if !complete_if_ready(partition, is_eligible) {
        keep_a_leader(partition, is_eligible);
    }
    ReassignmentResult::Accepted
}

/// Cancels the reassignment under way: back to the replicas it started from. Refused when
/// only adding replicas are in sync (Kafka reverts anyway, electing uncleanly).
fn cancel(
    partition: &mut PartitionImage,
    seen_in_progress_at: Option<i32>,
    is_eligible: &impl Fn(NodeId) -> bool,
) -> ReassignmentResult {
    if !partition.is_reassigning() {
        let ended_since = seen_in_progress_at.is_some_and(|seen| seen < partition.partition_epoch);
        return if ended_since {
            ReassignmentResult::Accepted
        } else {
            ReassignmentResult::NoReassignmentInProgress
        };
    }
    let Some((replicas, isr)) = reverted(partition) else {
        return not_revertible();
    };
    partition.replicas = replicas;
    partition.isr = isr;
    partition.adding_replicas.clear();
    partition.removing_replicas.clear();
    partition.partition_epoch = partition.partition_epoch.saturating_add(1);
    keep_a_leader(partition, is_eligible);
    ReassignmentResult::Accepted
}

/// The replicas and ISR the partition had before the reassignment under way (itself when
/// none is): the adding replicas leave both. `None` when only adding replicas are in
/// sync (the original ones fell out meanwhile): reverting would drop every replica known
/// to hold the committed records: a cancel is refused (see [`not_revertible`]) and a new
/// target is computed against the merged replicas instead (see [`start`]).
fn reverted(partition: &PartitionImage) -> Option<(Vec<NodeId>, Vec<NodeId>)> {
    let kept = |list: &[NodeId]| -> Vec<NodeId> {
        (list.iter().copied())
            .filter(|replica| !partition.adding_replicas.contains(replica))
            .collect()
    };
    let isr = kept(&partition.isr);
    (!isr.is_empty()).then(|| (kept(&partition.replicas), isr))
}

fn not_revertible() -> ReassignmentResult {
    ReassignmentResult::InvalidReplicaAssignment(
        "The reassignment under way cannot be reverted or replaced: only replicas it adds \
         are in sync, and reverting would lose the records only they hold. Wait for it to \
         complete, then reassign again."
            .into(),
    )
}

/// Completes the reassignment under way if every adding replica is in the ISR and some
/// target replica is (Kafka's `maybeCompleteReassignment`). True if it completed.
pub(super) fn complete_if_ready(
    partition: &mut PartitionImage,
    is_eligible: &impl Fn(NodeId) -> bool,
) -> bool {
    if !partition.is_reassigning() {
        return false;
    }
    let all_added =
        (partition.adding_replicas.iter()).all(|replica| partition.isr.contains(replica));
    let target = partition.target_replicas();
    let isr: Vec<NodeId> = (partition.isr.iter().copied())
        .filter(|replica| target.contains(replica))
        .collect();
    if !all_added || isr.is_empty() {
        return false;
    }
    partition.replicas = target;
    partition.isr = isr;
    partition.adding_replicas.clear();
    partition.removing_replicas.clear();
    partition.partition_epoch = partition.partition_epoch.saturating_add(1);
    keep_a_leader(partition, is_eligible);
    true
}

/// A leader no longer in the ISR gives way to the first replica, in replica order, that
/// is in the ISR and may lead (else the partition waits without a leader).
fn keep_a_leader(partition: &mut PartitionImage, is_eligible: &impl Fn(NodeId) -> bool) {
    if partition.leader != NO_LEADER && partition.isr.contains(&partition.leader) {
        return;
    }
    let leader = (partition.replicas.iter().copied())
        .find(|&replica| partition.isr.contains(&replica) && is_eligible(replica))
        .unwrap_or(NO_LEADER);
    set_leader(partition, leader);
}

#[cfg(test)]
#[path = "reassignment_tests.rs"]
mod tests;
