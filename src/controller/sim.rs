//! A seeded simulation of the metadata state machine: thousands of random commands (valid
//! and invalid) applied one log entry at a time, with the image's invariants checked after
//! every step. A failing seed replays exactly: the generator uses only its own xorshift
//! RNG and the image.
//!
//! Now and then a step re-applies an earlier successful topic command instead, as a
//! follower's forwarding retry does, and checks that the retry answers `Done` and leaves
//! the image exactly as it was.
//!
//! Partition leadership is driven too: ISR changes from the leader (current and stale),
//! controlled shutdowns, preferred and unclean elections. After each step: every leader is
//! a live ISR member not in controlled shutdown (or none); a leader change is exactly one
//! leader epoch; any change raises the partition epoch; no ISR gains a fenced or
//! shutting-down broker; a refused ISR change changes nothing. Reassignments start,
//! replace, cancel and complete among them (adding and removing replicas stay disjoint
//! subsets of the replicas; a refused one changes nothing).

use super::*;
use crate::controller::placement::place;
use crate::sim_rng::Rng;

/// What the metadata simulation draws beyond numbers.
trait Draw {
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T;
    fn uuid(&mut self) -> Uuid;
}

impl Draw for Rng {
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn uuid(&mut self) -> Uuid {
        Uuid::from_u64_pair(self.next_u64(), self.next_u64() | 1)
    }
}

/// Node ids drawn from a small range (0..=6) so brokers collide, restart and go missing.
const NODE_ID_RANGE: u64 = 7;
const TOPIC_NAMES: [&str; 8] = ["t0", "t1", "t2", "t3", "t4", "t5", "t6", "t.7"];

struct Generator {
    rng: Rng,
}

impl Generator {
    fn command(&mut self, image: &MetadataImage) -> MetadataCommand {
        match self.rng.below(150) {
            0..=14 => self.register(image),
            15..=29 => self.fence_or_unfence(image, true),
            30..=49 => self.fence_or_unfence(image, false),
            50..=66 => self.create_topic(image),
            67..=74 => self.delete_topic(image),
            75..=84 => self.create_partitions(image),
            85..=92 => MetadataCommand::AllocateProducerIds {
                count: *self.rng.pick(&[1000, 1000, 1, 0, -1, i64::MAX / 2]),
            },
            93..=96 => MetadataCommand::Bootstrap {
                cluster_id: self.rng.pick(&["", "c1", "c2"]).to_string(),
                controller_id: 1,
            },
            97..=99 => self.restore(image),
            100..=114 => self.alter_partition(image),
            115..=119 => self.controlled_shutdown(image),
            120..=129 => self.elect_leaders(image),
            130..=141 => self.reassign(image),
            _ => self.alter_client_quotas(),
        }
    }

    /// A partition of the image (its topic id and index), or an unknown one now and then.
    fn partition(&mut self, image: &MetadataImage) -> (Uuid, i32, Option<PartitionImage>) {
        let topics: Vec<&TopicImage> = image.topics.values().collect();
        if topics.is_empty() || self.rng.chance(5) {
            return (self.rng.uuid(), self.rng.below(3) as i32, None);
        }
        let topic = *self.rng.pick(&topics);
        let index = self.rng.below(topic.partitions.len() as u64 + 1) as usize;
        let found = topic.partitions.get(index).cloned();
        (topic.id, index as i32, found)
    }

    /// Usually the leader's proposal at the current epochs (shrinking or expanding the
    /// ISR, sometimes with an ineligible or invalid member); sometimes a stale one.
    fn alter_partition(&mut self, image: &MetadataImage) -> MetadataCommand {
        let (topic_id, partition, found) = self.partition(image);
        let current = found.unwrap_or(PartitionImage {
            replicas: vec![1],
            isr: vec![1],
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        });
        let mut new_isr: Vec<NodeId> = current
            .isr
            .iter()
            .copied()
            .filter(|&id| id == current.leader || !self.rng.chance(30))
            .collect();
        for &replica in &current.replicas {
            if !new_isr.contains(&replica) && self.rng.chance(40) {
                new_isr.push(replica);
            }
        }
        match self.rng.below(20) {
            0 => new_isr.push(self.node_id()),
            1 => new_isr.retain(|&id| id != current.leader),
            _ => {}
        }
        let (mut leader, mut leader_epoch, mut partition_epoch) = (
            current.leader,
            current.leader_epoch,
            current.partition_epoch,
        );
        match self.rng.below(10) {
            0 => leader_epoch -= 1,
            1 => partition_epoch -= 1,
            2 => leader = self.node_id(),
            _ => {}
        }
        // The broker epochs added replicas fetched with: mostly their registration's,
        // sometimes one from before a restart (KIP-903).
        let broker_epochs = new_isr
            .iter()
            .filter(|id| !current.isr.contains(id))
            .filter_map(|&id| {
                let epoch = image.brokers.get(&id)?.epoch;
                Some((
                    id,
                    if self.rng.chance(10) {
                        epoch - 1
                    } else {
                        epoch
                    },
                ))
            })
            .collect();
        MetadataCommand::AlterPartition {
            topic_id,
            partition,
            leader,
            leader_epoch,
            partition_epoch,
            new_isr,
            broker_epochs,
        }
    }

    fn controlled_shutdown(&mut self, image: &MetadataImage) -> MetadataCommand {
        match self.fence_or_unfence(image, true) {
            MetadataCommand::FenceBroker { node_id, epoch } => {
                MetadataCommand::BeginControlledShutdown { node_id, epoch }
            }
            other => other,
        }
    }

    /// Half the partitions named are away from their preferred replica (or leaderless),
    /// where an election may do something.
    fn elect_leaders(&mut self, image: &MetadataImage) -> MetadataCommand {
        let moved: Vec<(Uuid, i32)> = image
            .topics
            .values()
            .flat_map(|topic| {
                topic
                    .partitions
                    .iter()
                    .enumerate()
                    .filter_map(|(index, p)| {
                        (p.replicas.first() != Some(&p.leader)).then_some((topic.id, index as i32))
                    })
            })
            .collect();
        let count = 1 + self.rng.below(4);
        let partitions = (0..count)
            .map(|_| {
                if !moved.is_empty() && self.rng.chance(50) {
                    return *self.rng.pick(&moved);
                }
                let (topic_id, index, _) = self.partition(image);
                (topic_id, index)
            })
            .collect();
        let election = *self.rng.pick(&[Election::Preferred, Election::Unclean]);
        MetadataCommand::ElectLeaders {
            election,
            partitions,
        }
    }

    /// A reassignment of one or two partitions: to 1-3 drawn node ids (sometimes
    /// unregistered or repeated), or a cancel naming the epoch it saw, current or stale.
    fn reassign(&mut self, image: &MetadataImage) -> MetadataCommand {
        let count = 1 + self.rng.below(2);
        let reassignments = (0..count)
            .map(|_| {
                let (topic_id, partition, found) = self.partition(image);
                let registered: Vec<NodeId> = image.brokers.keys().copied().collect();
                let target = (!self.rng.chance(25)).then(|| {
                    let size = 1 + self.rng.below(3);
                    if registered.is_empty() || self.rng.chance(20) {
                        return (0..size).map(|_| self.node_id()).collect();
                    }
                    // Mostly distinct registered brokers, which a move can complete on.
                    let mut target: Vec<NodeId> = Vec::new();
                    for _ in 0..size {
                        let node_id = *self.rng.pick(&registered);
                        if !target.contains(&node_id) {
                            target.push(node_id);
                        }
                    }
                    target
                });
                let seen_in_progress_at = found
                    .filter(|_| self.rng.chance(50))
                    .map(|p| p.partition_epoch - self.rng.below(2) as i32);
                PartitionReassignment {
                    topic_id,
                    partition,
                    target,
                    seen_in_progress_at,
                }
            })
            .collect();
        MetadataCommand::AlterPartitionReassignments { reassignments }
    }

    /// A quota change for a drawn entity, valid or not (a bad combination, key or value).
    fn alter_client_quotas(&mut self) -> MetadataCommand {
        use crate::controller::client_quotas::{QuotaEntity, QuotaName};
        let name = |rng: &mut Rng| match rng.below(3) {
            0 => None,
            1 => Some(QuotaName::Default),
            _ => Some(QuotaName::Named(
                rng.pick(&["a", "b", "10.0.0.1"]).to_string(),
            )),
        };
        let entity = QuotaEntity {
            user: name(&mut self.rng),
            client_id: name(&mut self.rng),
            ip: if self.rng.chance(20) {
                name(&mut self.rng)
            } else {
                None
            },
        };
        let keys = [
            "producer_byte_rate",
            "consumer_byte_rate",
            "request_percentage",
            "connection_creation_rate",
            "bogus",
        ];
        let mut changes = std::collections::BTreeMap::new();
        for _ in 0..=self.rng.below(2) {
            let value = *self
                .rng
                .pick(&[Some(1024.0), Some(12.5), Some(0.0), Some(-3.0), None]);
            changes.insert(self.rng.pick(&keys).to_string(), value);
        }
        MetadataCommand::AlterClientQuotas { entity, changes }
    }

    fn node_id(&mut self) -> NodeId {
        if self.rng.chance(3) {
            return -1;
        }
        self.rng.below(NODE_ID_RANGE) as NodeId
    }

    fn register(&mut self, image: &MetadataImage) -> MetadataCommand {
        let node_id = self.node_id();
        let incarnation_id = match image.brokers.get(&node_id) {
            Some(existing) if self.rng.chance(30) => existing.incarnation_id,
            _ if self.rng.chance(3) => Uuid::nil(),
            _ => self.rng.uuid(),
        };
        let mut listeners = vec![BrokerEndpoint {
            name: "PLAINTEXT".into(),
            host: format!("host{node_id}"),
            port: 9092,
        }];
        match self.rng.below(20) {
            0 => listeners.clear(),
            1 => listeners.push(listeners[0].clone()),
            2 => listeners.push(BrokerEndpoint {
                name: "INTERNAL".into(),
                host: format!("internal{node_id}"),
                port: 9094,
            }),
            _ => {}
        }
        let rack = self.rng.pick(&[None, Some("a"), Some("b"), Some("c")]);
        MetadataCommand::RegisterBroker {
            node_id,
            incarnation_id,
            listeners,
            rack: rack.map(str::to_string),
        }
    }

    fn fence_or_unfence(&mut self, image: &MetadataImage, fence: bool) -> MetadataCommand {
        let node_id = self.node_id();
        let current = image.brokers.get(&node_id).map_or(0, |broker| broker.epoch);
        let epoch = if self.rng.chance(85) {
            current
        } else {
            current - 1 - self.rng.below(3) as i64
        };
        if fence {
            MetadataCommand::FenceBroker { node_id, epoch }
        } else {
            MetadataCommand::UnfenceBroker { node_id, epoch }
        }
    }

    fn topic_name(&mut self) -> String {
        if self.rng.chance(3) {
            return self
                .rng
                .pick(&["", "bad/name", "__cluster_metadata"])
                .to_string();
        }
        self.rng.pick(&TOPIC_NAMES).to_string()
    }

    /// Replica lists: usually what placement chooses, sometimes arbitrary (often invalid).
    fn assignments(&mut self, image: &MetadataImage) -> Vec<Vec<NodeId>> {
        let count = self.rng.below(4) as usize;
        let replication_factor = 1 + self.rng.below(3) as usize;
        if self.rng.chance(70)
            && let Ok(placed) = place(image, count, replication_factor)
        {
            return placed;
        }
        (0..count)
            .map(|_| (0..self.rng.below(4)).map(|_| self.node_id()).collect())
            .collect()
    }

    fn create_topic(&mut self, image: &MetadataImage) -> MetadataCommand {
        let id = match self.rng.below(20) {
            0 => Uuid::nil(),
            1 => image.topic_names.keys().next().copied().unwrap_or_default(),
            _ => self.rng.uuid(),
        };
        MetadataCommand::CreateTopic {
            name: self.topic_name(),
            id,
            assignments: self.assignments(image),
            configs: BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]),
        }
    }

    /// Usually the id planning would see; sometimes none (an old record) or a stranger's.
    fn delete_topic(&mut self, image: &MetadataImage) -> MetadataCommand {
        let name = self.topic_name();
        let id = match self.rng.below(10) {
            0 => None,
            1 => Some(self.rng.uuid()),
            _ => Some(
                image
                    .topic(&name)
                    .map_or_else(|| self.rng.uuid(), |topic| topic.id),
            ),
        };
        MetadataCommand::DeleteTopic { name, id }
    }

    /// Usually planned against the current count; sometimes unchecked (an old record) or
    /// planned against another count.
    fn create_partitions(&mut self, image: &MetadataImage) -> MetadataCommand {
        let name = self.topic_name();
        let current = image.topic(&name).map_or(0, |topic| topic.partitions.len());
        let partitions_before = match self.rng.below(10) {
            0 => None,
            1 => Some(self.rng.below(6) as usize),
            _ => Some(current),
        };
        MetadataCommand::CreatePartitions {
            name,
            partitions_before,
            assignments: self.assignments(image),
        }
    }

    /// The current image under a cluster id (valid once, on an image without one), or a
    /// copy whose invariants are broken (never valid).
    fn restore(&mut self, image: &MetadataImage) -> MetadataCommand {
        let mut restored = image.clone();
        restored.cluster_id = "restored".into();
        if self.rng.chance(50)
            && let Some(partition) = restored
                .topics
                .values_mut()
                .flat_map(|topic| topic.partitions.iter_mut())
                .next()
        {
            partition.isr.clear();
        }
        MetadataCommand::Restore {
            image: Box::new(restored),
        }
    }
}

/// Earlier successful topic commands, with the id of the topic each applied to, for
/// replaying as retries.
#[derive(Default)]
struct Successes {
    commands: Vec<(MetadataCommand, Option<Uuid>)>,
}

impl Successes {
    fn record(&mut self, before: &MetadataImage, command: &MetadataCommand) {
        let topic_id = match command {
            MetadataCommand::CreateTopic { id, .. } => Some(*id),
            MetadataCommand::DeleteTopic { id: Some(_), .. } => None,
            MetadataCommand::CreatePartitions {
                name,
                partitions_before: Some(_),
                ..
            } => before.topic(name).map(|topic| topic.id),
            _ => return,
        };
        self.commands.push((command.clone(), topic_id));
    }

    /// A random earlier success whose retry must change nothing: a deletion naming its
    /// topic's id, or a creation of a topic (or of partitions) still alive under the same
    /// id. (A topic deleted since would be created again by a late CreateTopic retry: the
    /// image keeps no tombstones, so that retry is not generated.)
    fn pick(&self, rng: &mut Rng, image: &MetadataImage) -> Option<MetadataCommand> {
        if self.commands.is_empty() {
            return None;
        }
        let (command, topic_id) = rng.pick(&self.commands);
        let name = match command {
            MetadataCommand::CreateTopic { name, .. }
            | MetadataCommand::CreatePartitions { name, .. } => name,
            _ => return Some(command.clone()),
        };
        let alive = image
            .topic(name)
            .filter(|topic| Some(topic.id) == *topic_id)?;
        // A CreatePartitions retry knows its partitions by their replica lists: one
        // reassigned since the first application answers INVALID_PARTITIONS instead (a
        // retry arrives within seconds, a reassignment of the new partition in between
        // is not modelled).
        if let MetadataCommand::CreatePartitions {
            partitions_before: Some(first),
            assignments,
            ..
        } = command
        {
            let planned = alive.partitions.iter().skip(*first).zip(assignments);
            if planned.clone().count() != assignments.len()
                || planned
                    .into_iter()
                    .any(|(p, replicas)| p.replicas != *replicas)
            {
                return None;
            }
        }
        Some(command.clone())
    }
}

/// Re-applies `command` (a retry): it must answer `Done` and change nothing.
fn check_retry(image: &mut MetadataImage, command: &MetadataCommand, step: usize) {
    let mut expected = image.clone();
    image.applied_index += 1;
    expected.applied_index += 1;
    let outcome = apply(image, command);
    assert!(
        matches!(outcome, Ok(CommandOutcome::Done)),
        "step {step}: retried {command:?}: {outcome:?}"
    );
    assert_eq!(*image, expected, "step {step}: retried {command:?}");
}

/// What must hold between two consecutive images, beyond each one's own invariants.
fn check_step(before: &MetadataImage, after: &MetadataImage, step: usize) {
    for (name, topic) in &after.topics {
        let Some(old) = before.topic(name).filter(|old| old.id == topic.id) else {
            continue;
        };
        for (index, (old, new)) in old.partitions.iter().zip(&topic.partitions).enumerate() {
            assert!(
                new.leader_epoch >= old.leader_epoch,
                "step {step}: {name}-{index} leader epoch fell from {} to {}",
                old.leader_epoch,
                new.leader_epoch
            );
            let epoch_after_change = old.leader_epoch.saturating_add(1);
            assert!(
                new.leader == old.leader || new.leader_epoch == epoch_after_change,
                "step {step}: {name}-{index} changed leader from {} to {} with epoch {} -> {}",
                old.leader,
                new.leader,
                old.leader_epoch,
                new.leader_epoch
            );
            let ineligible_joined = new
                .isr
                .iter()
                .find(|&&id| !old.isr.contains(&id) && !after.is_broker_eligible(id));
            assert!(
                ineligible_joined.is_none(),
                "step {step}: {name}-{index} ISR {:?} -> {:?} gained a fenced or shutting-down \
                 broker",
                old.isr,
                new.isr
            );
            let changed = new.isr != old.isr || new.leader != old.leader;
            assert!(
                new.partition_epoch >= old.partition_epoch
                    && (!changed || new.partition_epoch > old.partition_epoch),
                "step {step}: {name}-{index} changed from {old:?} to {new:?} without a new \
                 partition epoch"
            );
        }
    }
}

/// Partitions moving in `before` that completed in `after`: the replicas are the target
/// and every adding replica is in the ISR.
fn completed_reassignments(before: &MetadataImage, after: &MetadataImage) -> usize {
    let mut completed = 0;
    for (name, topic) in &after.topics {
        let Some(old) = before.topic(name).filter(|old| old.id == topic.id) else {
            continue;
        };
        for (old, new) in old.partitions.iter().zip(&topic.partitions) {
            let completion = old.is_reassigning()
                && !new.is_reassigning()
                && old.target_replicas() == new.replicas
                && old.adding_replicas.iter().all(|r| new.isr.contains(r));
            completed += usize::from(completion);
        }
    }
    completed
}

/// No partition waits without a leader while an in-sync replica could lead (live, not in
/// controlled shutdown).
fn check_elections(image: &MetadataImage, step: usize) {
    for (name, topic) in &image.topics {
        for (index, partition) in topic.partitions.iter().enumerate() {
            let electable = partition.isr.iter().any(|&id| image.is_broker_eligible(id));
            assert_eq!(
                partition.leader != NO_LEADER,
                electable,
                "step {step}: {name}-{index} {partition:?}"
            );
        }
    }
}

#[derive(Default)]
struct Outcomes {
    applied: usize,
    rejected: usize,
    fenced_leaderless: usize,
    retried: usize,
    isr_changed: usize,
    isr_refused: usize,
    shutdowns: usize,
    elected: usize,
    elections_refused: usize,
    reassignments_accepted: usize,
    reassignments_refused: usize,
    reassignments_completed: usize,
}

impl Outcomes {
    fn count(&mut self, command: &MetadataCommand, outcome: &CommandOutcome) {
        match outcome {
            CommandOutcome::PartitionChanged { .. } => self.isr_changed += 1,
            CommandOutcome::PartitionChangeRefused(_) => self.isr_refused += 1,
            CommandOutcome::LeadersElected(results) => {
                for result in results {
                    match result.result {
                        ElectionResult::Elected { .. } => self.elected += 1,
                        _ => self.elections_refused += 1,
                    }
                }
            }
            CommandOutcome::PartitionsReassigned(results) => {
                for result in results {
                    match result {
                        ReassignmentResult::Accepted => self.reassignments_accepted += 1,
                        _ => self.reassignments_refused += 1,
                    }
                }
            }
            _ if matches!(command, MetadataCommand::BeginControlledShutdown { .. }) => {
                self.shutdowns += 1;
            }
            _ => {}
        }
    }
}

/// A stale ISR change is refused; a refused one, and an election that elected nothing,
/// change nothing but the applied index.
fn check_refusals(
    before: &MetadataImage,
    after: &MetadataImage,
    command: &MetadataCommand,
    outcome: &CommandOutcome,
) {
    if let MetadataCommand::AlterPartition {
        topic_id,
        partition,
        leader_epoch,
        partition_epoch,
        ..
    } = command
        && let Some(current) = before
            .topic_by_id(topic_id)
            .and_then(|topic| topic.partitions.get(usize::try_from(*partition).ok()?))
        && (*leader_epoch, *partition_epoch) != (current.leader_epoch, current.partition_epoch)
    {
        assert!(
            matches!(outcome, CommandOutcome::PartitionChangeRefused(_)),
            "stale {command:?} on {current:?} answered {outcome:?}"
        );
    }
    // KIP-903: a replica added under a broker epoch its registration no longer has is
    // never in the ISR afterwards.
    if let MetadataCommand::AlterPartition {
        topic_id,
        partition,
        broker_epochs,
        new_isr,
        ..
    } = command
        && let CommandOutcome::PartitionChanged { .. } = outcome
        && let Some(current) = before
            .topic_by_id(topic_id)
            .and_then(|topic| topic.partitions.get(usize::try_from(*partition).ok()?))
    {
        for (replica, fetched_with) in broker_epochs {
            let registered = before.brokers.get(replica).map(|b| b.epoch);
            let added = new_isr.contains(replica) && !current.isr.contains(replica);
            assert!(
                !added || registered == Some(*fetched_with),
                "{command:?} added replica {replica} at epoch {fetched_with}, registered at \
                 {registered:?}"
            );
        }
    }
    let unchanged = match outcome {
        CommandOutcome::PartitionChangeRefused(_) => true,
        CommandOutcome::LeadersElected(results) => results
            .iter()
            .all(|r| !matches!(r.result, ElectionResult::Elected { .. })),
        CommandOutcome::PartitionsReassigned(results) => results
            .iter()
            .all(|r| !matches!(r, ReassignmentResult::Accepted)),
        _ => false,
    };
    if unchanged {
        let mut expected = before.clone();
        expected.applied_index = after.applied_index;
        assert_eq!(*after, expected, "{outcome:?} changed the image");
    }
}

/// Runs `steps` commands from `seed`; returns the command log and the final image.
fn run(seed: u64, steps: usize) -> (Vec<MetadataCommand>, MetadataImage, Outcomes) {
    let mut generator = Generator {
        rng: Rng::new(seed),
    };
    let mut image = MetadataImage::default();
    let mut log = Vec::with_capacity(steps);
    let mut blocks: Vec<(i64, i64)> = Vec::new();
    let mut outcomes = Outcomes::default();
    let mut successes = Successes::default();
    for step in 0..steps {
        if generator.rng.chance(10)
            && let Some(retry) = successes.pick(&mut generator.rng, &image)
        {
            let before = image.clone();
            check_retry(&mut image, &retry, step);
            check_step(&before, &image, step);
            outcomes.retried += 1;
            log.push(retry);
            continue;
        }
        let command = generator.command(&image);
        let encoded = serde_json::to_string(&command).unwrap();
        let decoded: MetadataCommand = serde_json::from_str(&encoded).unwrap();
        assert_eq!(
            decoded, command,
            "step {step}: the command's JSON round trip"
        );
        let before = image.clone();
        image.applied_index += 1;
        match apply(&mut image, &command) {
            Ok(outcome) => {
                outcomes.applied += 1;
                outcomes.count(&command, &outcome);
                check_refusals(&before, &image, &command, &outcome);
                successes.record(&before, &command);
                if let CommandOutcome::ProducerIdBlock { first, count } = outcome {
                    blocks.push((first, count));
                }
            }
            Err(error) => {
                outcomes.rejected += 1;
                let mut unchanged = before.clone();
                unchanged.applied_index += 1;
                assert_eq!(
                    image, unchanged,
                    "step {step}: rejected {command:?} ({error})"
                );
            }
        }
        log.push(command);
        if let Err(reason) = image.check_invariants() {
            panic!("step {step}: after {:?}: {reason}", log.last());
        }
        // A Restore replaces the whole image (and cuts each ISR to its leader without a new
        // partition epoch): not a step of the partitions before it.
        if !matches!(log.last(), Some(MetadataCommand::Restore { .. })) {
            check_step(&before, &image, step);
        }
        check_elections(&image, step);
        outcomes.reassignments_completed += completed_reassignments(&before, &image);
        outcomes.fenced_leaderless += image
            .topics
            .values()
            .flat_map(|topic| &topic.partitions)
            .filter(|partition| partition.leader == NO_LEADER)
            .count();
        if step % 16 == 0 {
            let json = serde_json::to_string(&image).unwrap();
            let back: MetadataImage = serde_json::from_str(&json).unwrap();
            assert_eq!(back, image, "step {step}: the image's JSON round trip");
        }
    }
    check_blocks(&blocks, image.next_producer_id);
    (log, image, outcomes)
}

/// Blocks are handed out in order, disjoint, and all below the next free id.
fn check_blocks(blocks: &[(i64, i64)], next_producer_id: i64) {
    let mut end = 0;
    for &(first, count) in blocks {
        assert!(
            count > 0 && first >= end,
            "block {first}+{count} overlaps ..{end}"
        );
        end = first + count;
    }
    assert!(end <= next_producer_id);
}

fn replay(log: &[MetadataCommand]) -> MetadataImage {
    let mut image = MetadataImage::default();
    for command in log {
        image.applied_index += 1;
        let _ = apply(&mut image, command);
    }
    image
}

#[test]
fn random_commands_keep_every_invariant_and_replay_to_the_same_image() {
    let mut totals = Outcomes::default();
    for seed in 1..=12 {
        let (log, image, outcomes) = run(seed, 2500);
        assert_eq!(replay(&log), image, "seed {seed}: replay differs");
        let json = serde_json::to_string(&image).unwrap();
        assert_eq!(serde_json::from_str::<MetadataImage>(&json).unwrap(), image);
        // The generator must reach the interesting states, or the checks prove little.
        assert!(
            outcomes.applied > 500,
            "seed {seed}: {} applied",
            outcomes.applied
        );
        assert!(
            outcomes.rejected > 200,
            "seed {seed}: {} rejected",
            outcomes.rejected
        );
        assert!(
            outcomes.fenced_leaderless > 0,
            "seed {seed}: never leaderless"
        );
        assert!(
            outcomes.retried > 50,
            "seed {seed}: {} retries",
            outcomes.retried
        );
        totals.isr_changed += outcomes.isr_changed;
        totals.isr_refused += outcomes.isr_refused;
        totals.shutdowns += outcomes.shutdowns;
        totals.elected += outcomes.elected;
        totals.elections_refused += outcomes.elections_refused;
        totals.reassignments_accepted += outcomes.reassignments_accepted;
        totals.reassignments_refused += outcomes.reassignments_refused;
        totals.reassignments_completed += outcomes.reassignments_completed;
    }
    // Over all seeds, each leadership path must have been taken many times.
    for (what, count) in [
        ("ISR changes accepted", totals.isr_changed),
        ("ISR changes refused", totals.isr_refused),
        ("controlled shutdowns", totals.shutdowns),
        ("leaders elected", totals.elected),
        ("elections refused", totals.elections_refused),
        ("reassignments accepted", totals.reassignments_accepted),
        ("reassignments refused", totals.reassignments_refused),
    ] {
        assert!(count > 100, "{what}: only {count}");
    }
    // A move completes only after the leader's ISR change adds every new replica; with
    // brokers fenced, moves replaced and topics deleted at random, that is rarer.
    let completed = totals.reassignments_completed;
    assert!(completed > 5, "reassignments completed: only {completed}");
}

#[test]
fn the_same_seed_generates_the_same_run() {
    let (first, image, _) = run(99, 300);
    let (second, again, _) = run(99, 300);
    assert_eq!(first, second);
    assert_eq!(image, again);
}
