use std::collections::BTreeMap;

use super::*;
use crate::controller::commands::{
    CommandOutcome, MetadataCommand, PartitionChangeRefusal, apply, fence_broker_for_tests,
    register_live_broker,
};

/// Brokers 1..=count live, topic "t" with these replica lists (all in the ISR).
fn image_with(count: NodeId, assignments: Vec<Vec<NodeId>>) -> (MetadataImage, Uuid) {
    let mut image = MetadataImage::default();
    for node_id in 1..=count {
        image.applied_index += 1;
        register_live_broker(&mut image, node_id);
    }
    let id = Uuid::from_u128(42);
    let create = MetadataCommand::CreateTopic {
        name: "t".into(),
        id,
        assignments,
        configs: BTreeMap::new(),
    };
    step(&mut image, &create);
    (image, id)
}

fn step(image: &mut MetadataImage, command: &MetadataCommand) -> CommandOutcome {
    image.applied_index += 1;
    let outcome = apply(image, command);
    assert!(outcome.is_ok(), "{command:?}: {outcome:?}");
    assert_eq!(image.check_invariants(), Ok(()), "after {command:?}");
    outcome.unwrap()
}

fn partition(image: &MetadataImage, index: i32) -> &PartitionImage {
    image.partition("t", index).unwrap()
}

fn shut_down(image: &mut MetadataImage, node_id: NodeId) -> CommandOutcome {
    let epoch = image.brokers[&node_id].epoch;
    step(
        image,
        &MetadataCommand::BeginControlledShutdown { node_id, epoch },
    )
}

fn elect(
    image: &mut MetadataImage,
    election: Election,
    partitions: &[(Uuid, i32)],
) -> Vec<ElectionResult> {
    let command = MetadataCommand::ElectLeaders {
        election,
        partitions: partitions.to_vec(),
    };
    match step(image, &command) {
        CommandOutcome::LeadersElected(results) => {
            let named: Vec<_> = results.iter().map(|r| (r.topic_id, r.partition)).collect();
            assert_eq!(named, partitions, "one result per partition, in order");
            results.into_iter().map(|r| r.result).collect()
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn controlled_shutdown_moves_leadership_and_leaves_shared_isrs() {
    let (mut image, _) = image_with(3, vec![vec![1, 2, 3], vec![2, 1, 3], vec![1]]);
    let before = image.clone();
    assert_eq!(shut_down(&mut image, 1), CommandOutcome::Done);
    assert!(image.brokers[&1].in_controlled_shutdown);
    assert!(
        !image.brokers[&1].fenced,
        "still live: it fences itself later"
    );
    let p0 = partition(&image, 0);
    assert_eq!((p0.leader, p0.isr.as_slice()), (2, &[2, 3][..]));
    assert_eq!(
        p0.leader_epoch,
        before.partition("t", 0).unwrap().leader_epoch + 1
    );
    assert!(p0.partition_epoch > before.partition("t", 0).unwrap().partition_epoch);
    let p1 = partition(&image, 1);
    assert_eq!((p1.leader, p1.isr.as_slice()), (2, &[2, 3][..]));
    assert_eq!(
        p1.leader_epoch, 0,
        "a partition it did not lead keeps its leader epoch"
    );
    // The last ISR member stays in the ISR (so the partition can come back) but leads no
    // more: Kafka never keeps a shutting-down broker as leader.
    let p2 = partition(&image, 2);
    assert_eq!((p2.leader, p2.isr.as_slice()), (NO_LEADER, &[1][..]));
    // A retry changes nothing.
    let once = image.clone();
    shut_down(&mut image, 1);
    let mut expected = once;
    expected.applied_index += 1;
    assert_eq!(image, expected);
}

#[test]
fn a_shutting_down_broker_is_never_elected_nor_added_and_a_restart_clears_it() {
    let (mut image, id) = image_with(2, vec![vec![1, 2]]);
    shut_down(&mut image, 1);
    // Fencing the other leaves the partition leaderless: 1 is in no ISR to be elected.
    fence_broker_for_tests(&mut image, 2);
    assert_eq!(partition(&image, 0).leader, NO_LEADER);
    // Unfence 2: it leads again; its proposal to add 1 back is refused.
    let epoch = image.brokers[&2].epoch;
    step(
        &mut image,
        &MetadataCommand::UnfenceBroker { node_id: 2, epoch },
    );
    let p = partition(&image, 0).clone();
    assert_eq!(p.leader, 2);
    let add_back = MetadataCommand::AlterPartition {
        topic_id: id,
        partition: 0,
        leader: 2,
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
        new_isr: vec![1, 2],
        broker_epochs: vec![],
    };
    assert_eq!(
        step(&mut image, &add_back),
        CommandOutcome::PartitionChangeRefused(PartitionChangeRefusal::IneligibleReplica)
    );
    assert_eq!(
        elect(&mut image, Election::Preferred, &[(id, 0)]),
        [ElectionResult::PreferredLeaderNotAvailable]
    );
    // A new registration (the restart) clears the flag: 1 may rejoin and lead.
    let restart = MetadataCommand::RegisterBroker {
        node_id: 1,
        incarnation_id: Uuid::from_u128(99),
        listeners: image.brokers[&1].listeners.clone(),
        rack: None,
    };
    step(&mut image, &restart);
    assert!(!image.brokers[&1].in_controlled_shutdown);
    let epoch = image.brokers[&1].epoch;
    step(
        &mut image,
        &MetadataCommand::UnfenceBroker { node_id: 1, epoch },
    );
    let p = partition(&image, 0).clone();
    let rejoin = MetadataCommand::AlterPartition {
        topic_id: id,
        partition: 0,
        leader: 2,
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
        new_isr: vec![1, 2],
        broker_epochs: vec![],
    };
    assert!(matches!(
        step(&mut image, &rejoin),
        CommandOutcome::PartitionChanged { .. }
    ));
    assert_eq!(
        elect(&mut image, Election::Preferred, &[(id, 0)]),
        [ElectionResult::Elected { leader: 1 }]
    );
}

#[test]
fn controlled_shutdown_checks_the_broker_epoch() {
    let (mut image, _) = image_with(1, vec![vec![1]]);
    image.applied_index += 1;
    let stale = MetadataCommand::BeginControlledShutdown {
        node_id: 1,
        epoch: image.brokers[&1].epoch - 1,
    };
    assert!(apply(&mut image, &stale).is_err());
    let unknown = MetadataCommand::BeginControlledShutdown {
        node_id: 7,
        epoch: 1,
    };
    assert!(apply(&mut image, &unknown).is_err());
    assert!(!image.brokers[&1].in_controlled_shutdown);
}

#[test]
fn preferred_election_answers_as_kafka_does() {
    let (mut image, id) = image_with(3, vec![vec![1, 2, 3], vec![2, 3, 1]]);
    // Partition 0 is led by 1 (preferred); fence 1, then bring it back: 2 leads, 1 is out
    // of the ISR until it rejoins.
    fence_broker_for_tests(&mut image, 1);
    let epoch = image.brokers[&1].epoch;
    step(
        &mut image,
        &MetadataCommand::UnfenceBroker { node_id: 1, epoch },
    );
    assert_eq!(partition(&image, 0).leader, 2);
    let unknown = [(id, 2), (id, -1), (Uuid::from_u128(5), 0)];
    let results = elect(
        &mut image,
        Election::Preferred,
        &[(id, 0), (id, 1), unknown[0], unknown[1], unknown[2]],
    );
    assert_eq!(
        results,
        [
            ElectionResult::PreferredLeaderNotAvailable,
            ElectionResult::ElectionNotNeeded,
            ElectionResult::UnknownPartition,
            ElectionResult::UnknownPartition,
            ElectionResult::UnknownPartition,
        ]
    );
    let p = partition(&image, 0).clone();
    let rejoin = MetadataCommand::AlterPartition {
        topic_id: id,
        partition: 0,
        leader: 2,
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
        new_isr: vec![1, 2, 3],
        broker_epochs: vec![],
    };
    step(&mut image, &rejoin);
    let before = partition(&image, 0).clone();
    assert_eq!(
        elect(&mut image, Election::Preferred, &[(id, 0)]),
        [ElectionResult::Elected { leader: 1 }]
    );
    let after = partition(&image, 0);
    assert_eq!(after.leader, 1);
    assert_eq!(after.leader_epoch, before.leader_epoch + 1);
    assert_eq!(after.partition_epoch, before.partition_epoch + 1);
    assert_eq!(after.isr, before.isr, "a preferred election keeps the ISR");
}

#[test]
fn unclean_election_only_for_leaderless_partitions_and_takes_a_live_replica() {
    let (mut image, id) = image_with(3, vec![vec![1, 2], vec![3]]);
    // 1 and 2 are in the ISR; fence 2, then 1: the ISR is [1], no leader.
    fence_broker_for_tests(&mut image, 2);
    fence_broker_for_tests(&mut image, 1);
    assert_eq!(partition(&image, 0).isr, [1]);
    assert_eq!(partition(&image, 0).leader, NO_LEADER);
    assert_eq!(
        elect(&mut image, Election::Unclean, &[(id, 1)]),
        [ElectionResult::ElectionNotNeeded]
    );
    assert_eq!(
        elect(&mut image, Election::Unclean, &[(id, 0)]),
        [ElectionResult::EligibleLeadersNotAvailable]
    );
    // 2 comes back: it is not in the ISR, so only an unclean election makes it leader.
    let epoch = image.brokers[&2].epoch;
    step(
        &mut image,
        &MetadataCommand::UnfenceBroker { node_id: 2, epoch },
    );
    assert_eq!(partition(&image, 0).leader, NO_LEADER);
    assert_eq!(
        elect(&mut image, Election::Preferred, &[(id, 0)]),
        [ElectionResult::PreferredLeaderNotAvailable]
    );
    let before = partition(&image, 0).clone();
    assert_eq!(
        elect(&mut image, Election::Unclean, &[(id, 0)]),
        [ElectionResult::Elected { leader: 2 }]
    );
    let after = partition(&image, 0);
    assert_eq!((after.leader, after.isr.as_slice()), (2, &[2][..]));
    assert_eq!(after.leader_epoch, before.leader_epoch + 1);
    assert!(after.partition_epoch > before.partition_epoch);
}

#[test]
fn election_commands_and_outcomes_cross_the_wire() {
    let command = MetadataCommand::ElectLeaders {
        election: Election::Unclean,
        partitions: vec![(Uuid::from_u128(3), 4)],
    };
    let json = serde_json::to_string(&command).unwrap();
    assert_eq!(
        serde_json::from_str::<MetadataCommand>(&json).unwrap(),
        command
    );
    let outcome = CommandOutcome::LeadersElected(vec![PartitionElection {
        topic_id: Uuid::from_u128(3),
        partition: 4,
        result: ElectionResult::Elected { leader: 2 },
    }]);
    let json = serde_json::to_string(&outcome).unwrap();
    assert_eq!(
        serde_json::from_str::<CommandOutcome>(&json).unwrap(),
        outcome
    );
    // A registration stored before the flag existed reads as not shutting down.
    let (image, _) = image_with(1, vec![vec![1]]);
    let mut json: serde_json::Value = serde_json::to_value(&image.brokers[&1]).unwrap();
    json.as_object_mut()
        .unwrap()
        .remove("in_controlled_shutdown");
    let old: BrokerRegistration = serde_json::from_value(json).unwrap();
    assert!(!old.in_controlled_shutdown);
    assert_eq!(Election::from_kafka(0), Some(Election::Preferred));
    assert_eq!(Election::from_kafka(1), Some(Election::Unclean));
    assert_eq!(Election::from_kafka(2), None);
}
