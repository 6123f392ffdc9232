use super::*;

fn listener(port: u16) -> Vec<BrokerEndpoint> {
    vec![BrokerEndpoint {
        name: "PLAINTEXT".into(),
        host: "localhost".into(),
        port,
    }]
}

fn register(node_id: NodeId, incarnation: u128) -> MetadataCommand {
    MetadataCommand::RegisterBroker {
        node_id,
        incarnation_id: Uuid::from_u128(incarnation),
        listeners: listener(9000 + node_id as u16),
        rack: None,
    }
}

/// Applies `command` as log entry `applied_index + 1`, as the log's applier does.
fn step(
    image: &mut MetadataImage,
    command: &MetadataCommand,
) -> Result<CommandOutcome, ControllerError> {
    image.applied_index += 1;
    apply(image, command)
}

fn epoch(image: &MetadataImage, node_id: NodeId) -> i64 {
    image.brokers[&node_id].epoch
}

fn unfence(image: &mut MetadataImage, node_id: NodeId) {
    let epoch = epoch(image, node_id);
    step(image, &MetadataCommand::UnfenceBroker { node_id, epoch }).unwrap();
}

fn fence(image: &mut MetadataImage, node_id: NodeId) {
    let epoch = epoch(image, node_id);
    step(image, &MetadataCommand::FenceBroker { node_id, epoch }).unwrap();
}

/// Brokers `1..=count`, registered and unfenced.
fn cluster(count: NodeId) -> MetadataImage {
    let mut image = MetadataImage::default();
    for node_id in 1..=count {
        step(&mut image, &register(node_id, node_id as u128)).unwrap();
        unfence(&mut image, node_id);
    }
    image
}

fn create(name: &str, assignments: Vec<Vec<NodeId>>) -> MetadataCommand {
    MetadataCommand::CreateTopic {
        name: name.into(),
        id: Uuid::new_v4(),
        assignments,
        configs: BTreeMap::new(),
    }
}

fn leader_and_isr(image: &MetadataImage, topic: &str, index: i32) -> (NodeId, Vec<NodeId>, i32) {
    let partition = image.partition(topic, index).unwrap();
    (
        partition.leader,
        partition.isr.clone(),
        partition.leader_epoch,
    )
}

#[test]
fn topics_are_created_extended_and_deleted() {
    let mut image = cluster(1);
    step(&mut image, &create("a", vec![vec![1]; 2])).unwrap();
    assert_eq!(image.topic("a").unwrap().partitions.len(), 2);
    let id = image.topic("a").unwrap().id;
    assert_eq!(image.topic_by_id(&id).unwrap().name, "a");
    let more = MetadataCommand::CreatePartitions {
        name: "a".into(),
        partitions_before: Some(2),
        assignments: vec![vec![1]],
    };
    step(&mut image, &more).unwrap();
    assert_eq!(image.partition("a", 2).unwrap().leader, 1);
    assert!(matches!(
        step(&mut image, &create("a", vec![vec![1]])),
        Err(ControllerError::TopicAlreadyExists(_))
    ));
    step(
        &mut image,
        &MetadataCommand::DeleteTopic {
            name: "a".into(),
            id: None,
        },
    )
    .unwrap();
    assert!(image.topic("a").is_none());
    assert!(image.topic_by_id(&id).is_none());
}

#[test]
fn apply_leaves_applied_index_to_the_caller() {
    let mut image = MetadataImage {
        applied_index: 41,
        ..MetadataImage::default()
    };
    apply(&mut image, &register(1, 1)).unwrap();
    apply(
        &mut image,
        &MetadataCommand::DeleteTopic {
            name: "x".into(),
            id: None,
        },
    )
    .unwrap_err();
    assert_eq!(image.applied_index, 41);
    assert_eq!(
        epoch(&image, 1),
        41,
        "the epoch is the registration's index"
    );
}

#[test]
fn producer_id_blocks_never_overlap_and_bad_counts_are_refused() {
    let mut image = MetadataImage::default();
    let command = MetadataCommand::AllocateProducerIds { count: 1000 };
    let first = step(&mut image, &command).unwrap();
    let second = step(&mut image, &command).unwrap();
    assert_eq!(
        first,
        CommandOutcome::ProducerIdBlock {
            first: 0,
            count: 1000
        }
    );
    assert_eq!(
        second,
        CommandOutcome::ProducerIdBlock {
            first: 1000,
            count: 1000
        }
    );
    let before = image.clone();
    for count in [0, -5, i64::MAX] {
        let command = MetadataCommand::AllocateProducerIds { count };
        assert!(
            apply(&mut image, &command).is_err(),
            "count {count} accepted"
        );
        assert_eq!(image, before);
    }
}

#[test]
fn bootstrap_happens_once() {
    let mut image = MetadataImage::default();
    let bootstrap = |id: &str| MetadataCommand::Bootstrap {
        cluster_id: id.into(),
        controller_id: 1,
    };
    assert!(step(&mut image, &bootstrap("")).is_err());
    step(&mut image, &bootstrap("abc")).unwrap();
    assert!(step(&mut image, &bootstrap("def")).is_err());
    assert_eq!(image.cluster_id, "abc");
}

#[test]
fn a_new_registration_is_fenced_and_the_same_incarnation_is_idempotent() {
    let mut image = MetadataImage::default();
    let outcome = step(&mut image, &register(1, 10)).unwrap();
    assert_eq!(outcome, CommandOutcome::BrokerRegistered { epoch: 1 });
    let broker = &image.brokers[&1];
    assert!(broker.fenced);
    assert_eq!((broker.host.as_str(), broker.port), ("localhost", 9001));
    let before = image.clone();
    let again = step(&mut image, &register(1, 10)).unwrap();
    assert_eq!(again, CommandOutcome::BrokerRegistered { epoch: 1 });
    assert_eq!(image.brokers, before.brokers);
    let restarted = step(&mut image, &register(1, 11)).unwrap();
    assert_eq!(restarted, CommandOutcome::BrokerRegistered { epoch: 3 });
}

#[test]
fn bad_registrations_are_refused() {
    let mut image = MetadataImage::default();
    let with = |node_id, listeners| MetadataCommand::RegisterBroker {
        node_id,
        incarnation_id: Uuid::from_u128(1),
        listeners,
        rack: None,
    };
    let mut twice = listener(1);
    twice.extend(listener(2));
    let mut nameless = listener(1);
    nameless[0].name.clear();
    for command in [
        with(1, vec![]),
        with(-1, listener(1)),
        with(1, twice),
        with(1, nameless),
    ] {
        assert!(step(&mut image, &command).is_err(), "{command:?} accepted");
    }
    assert!(image.brokers.is_empty());
}

#[test]
fn fencing_a_leader_moves_leadership_within_the_isr_and_the_last_member_stays() {
    let mut image = cluster(3);
    step(&mut image, &create("t", vec![vec![1, 2, 3], vec![2, 3, 1]])).unwrap();
    assert_eq!(leader_and_isr(&image, "t", 0), (1, vec![1, 2, 3], 0));
    assert_eq!(leader_and_isr(&image, "t", 1), (2, vec![2, 3, 1], 0));
    fence(&mut image, 1);
    // The next in-sync replica in preference order takes over, at a new epoch.
    assert_eq!(leader_and_isr(&image, "t", 0), (2, vec![2, 3], 1));
    // Not its leader: it only leaves the ISR, and the leader epoch stays.
    assert_eq!(leader_and_isr(&image, "t", 1), (2, vec![2, 3], 0));
    fence(&mut image, 2);
    assert_eq!(leader_and_isr(&image, "t", 0), (3, vec![3], 2));
    fence(&mut image, 3);
    // The last in-sync replica stays in the ISR so the partition can come back with it.
    assert_eq!(leader_and_isr(&image, "t", 0), (NO_LEADER, vec![3], 3));
    unfence(&mut image, 1);
    assert_eq!(
        leader_and_isr(&image, "t", 0).0,
        NO_LEADER,
        "1 is a replica but not in the ISR: electing it could lose acknowledged records"
    );
    unfence(&mut image, 3);
    assert_eq!(leader_and_isr(&image, "t", 0), (3, vec![3], 4));
    assert_eq!(image.check_invariants(), Ok(()));
}

fn alter(image: &MetadataImage, leader: NodeId, new_isr: &[NodeId]) -> MetadataCommand {
    let topic = &image.topics["t"];
    let partition = &topic.partitions[0];
    MetadataCommand::AlterPartition {
        topic_id: topic.id,
        partition: 0,
        leader,
        leader_epoch: partition.leader_epoch,
        partition_epoch: partition.partition_epoch,
        new_isr: new_isr.to_vec(),
        broker_epochs: vec![],
    }
}

fn partition_epoch(image: &MetadataImage) -> i32 {
    image.topics["t"].partitions[0].partition_epoch
}

#[test]
fn alter_partition_shrinks_and_expands_the_isr_from_the_current_leader_only() {
    let mut image = cluster(3);
    step(&mut image, &create("t", vec![vec![1, 2, 3]])).unwrap();
    let shrink = alter(&image, 1, &[3, 1]);
    let outcome = step(&mut image, &shrink).unwrap();
    assert_eq!(
        outcome,
        CommandOutcome::PartitionChanged {
            isr: vec![1, 3],
            leader_epoch: 0,
            partition_epoch: 1
        }
    );
    // The same proposal again was built on epoch 0: refused, nothing changes.
    let before = image.clone();
    let again = step(&mut image, &shrink).unwrap();
    image.applied_index = before.applied_index;
    assert_eq!(
        again,
        CommandOutcome::PartitionChangeRefused(PartitionChangeRefusal::InvalidUpdateVersion)
    );
    assert_eq!(image, before);

    use PartitionChangeRefusal as R;
    let refusals = [
        (alter(&image, 2, &[1, 2, 3]), R::NotLeader),
        (alter(&image, 1, &[2, 3]), R::InvalidIsr),
        (alter(&image, 1, &[1, 4]), R::InvalidIsr),
        (alter(&image, 1, &[1, 1]), R::InvalidIsr),
    ];
    for (command, refusal) in refusals {
        let outcome = apply(&mut image, &command).unwrap();
        assert_eq!(outcome, CommandOutcome::PartitionChangeRefused(refusal));
        assert_eq!(image, before);
    }
    // A fenced replica cannot be added; a live one can.
    fence(&mut image, 2);
    let add_fenced = alter(&image, 1, &[1, 2, 3]);
    let fenced = step(&mut image, &add_fenced).unwrap();
    assert_eq!(
        fenced,
        CommandOutcome::PartitionChangeRefused(R::IneligibleReplica)
    );
    unfence(&mut image, 2);
    let expand = alter(&image, 1, &[1, 2, 3]);
    step(&mut image, &expand).unwrap();
    assert_eq!(leader_and_isr(&image, "t", 0), (1, vec![1, 2, 3], 0));
    assert_eq!(partition_epoch(&image), 2);

    // After a leader change the old leader's proposal is fenced by its epoch.
    let stale = alter(&image, 1, &[1]);
    fence(&mut image, 1);
    let outcome = step(&mut image, &stale).unwrap();
    assert_eq!(
        outcome,
        CommandOutcome::PartitionChangeRefused(R::FencedLeaderEpoch)
    );
    assert_eq!(leader_and_isr(&image, "t", 0), (2, vec![2, 3], 1));
    let unknown = MetadataCommand::AlterPartition {
        topic_id: Uuid::from_u128(404),
        partition: 0,
        leader: 2,
        leader_epoch: 1,
        partition_epoch: 4,
        new_isr: vec![2],
        broker_epochs: vec![],
    };
    let outcome = step(&mut image, &unknown).unwrap();
    assert_eq!(
        outcome,
        CommandOutcome::PartitionChangeRefused(R::UnknownPartition)
    );
    assert_eq!(image.check_invariants(), Ok(()));
}

#[test]
fn alter_partition_refuses_a_replica_registered_again_since_its_fetch() {
    use PartitionChangeRefusal as R;
    let mut image = cluster(3);
    step(&mut image, &create("t", vec![vec![1, 2, 3]])).unwrap();
    let shrink = alter(&image, 1, &[1, 3]);
    step(&mut image, &shrink).unwrap();
    let fetched_with = epoch(&image, 2);
    // Broker 2 restarts (a new incarnation registers under a new epoch) and is unfenced,
    // while the leader's addition, judged on its old fetch, is on its way (KIP-903).
    step(&mut image, &register(2, 22)).unwrap();
    unfence(&mut image, 2);
    assert_ne!(epoch(&image, 2), fetched_with);

    let with_epochs = |image: &MetadataImage, epoch: i64| match alter(image, 1, &[1, 2, 3]) {
        MetadataCommand::AlterPartition {
            topic_id,
            partition,
            leader,
            leader_epoch,
            partition_epoch,
            new_isr,
            ..
        } => MetadataCommand::AlterPartition {
            topic_id,
            partition,
            leader,
            leader_epoch,
            partition_epoch,
            new_isr,
            broker_epochs: vec![(2, epoch)],
        },
        other => other,
    };
    let before = image.clone();
    let stale = with_epochs(&image, fetched_with);
    let stale = apply(&mut image, &stale).unwrap();
    assert_eq!(
        stale,
        CommandOutcome::PartitionChangeRefused(R::IneligibleReplica)
    );
    assert_eq!(image, before);

    // Commands logged before the field existed still decode (with no epochs to check).
    let mut logged = serde_json::to_value(with_epochs(&image, 7)).unwrap();
    logged["AlterPartition"]
        .as_object_mut()
        .unwrap()
        .remove("broker_epochs")
        .unwrap();
    let decoded: MetadataCommand = serde_json::from_value(logged).unwrap();
    assert_eq!(decoded, alter(&image, 1, &[1, 2, 3]));

    let current = with_epochs(&image, epoch(&image, 2));
    step(&mut image, &current).unwrap();
    assert_eq!(leader_and_isr(&image, "t", 0), (1, vec![1, 2, 3], 0));
    assert_eq!(image.check_invariants(), Ok(()));
}

#[test]
fn fencing_twice_and_stale_epochs_change_nothing() {
    let mut image = cluster(2);
    step(&mut image, &create("t", vec![vec![1, 2]])).unwrap();
    let old_epoch = epoch(&image, 1);
    fence(&mut image, 1);
    let fenced = image.clone();
    fence(&mut image, 1);
    image.applied_index = fenced.applied_index;
    assert_eq!(image, fenced, "fencing a fenced broker is a no-op");
    step(&mut image, &register(1, 99)).unwrap();
    let before = image.clone();
    for command in [
        MetadataCommand::UnfenceBroker {
            node_id: 1,
            epoch: old_epoch,
        },
        MetadataCommand::FenceBroker {
            node_id: 1,
            epoch: old_epoch,
        },
        MetadataCommand::FenceBroker {
            node_id: 7,
            epoch: 1,
        },
    ] {
        let error = apply(&mut image, &command).unwrap_err();
        assert!(matches!(
            error,
            ControllerError::StaleBrokerEpoch { .. } | ControllerError::UnknownBroker(7)
        ));
        assert_eq!(image, before);
    }
}

#[test]
fn a_restarted_broker_loses_leadership_until_unfenced() {
    let mut image = cluster(1);
    step(&mut image, &create("t", vec![vec![1]])).unwrap();
    step(&mut image, &register(1, 77)).unwrap();
    assert_eq!(leader_and_isr(&image, "t", 0), (NO_LEADER, vec![1], 1));
    unfence(&mut image, 1);
    assert_eq!(leader_and_isr(&image, "t", 0), (1, vec![1], 2));
}

#[test]
fn new_partitions_are_led_by_their_first_live_replica_with_the_live_ones_in_sync() {
    let mut image = cluster(3);
    fence(&mut image, 1);
    step(&mut image, &create("t", vec![vec![1, 2, 3]])).unwrap();
    assert_eq!(leader_and_isr(&image, "t", 0), (2, vec![2, 3], 0));
    let before = image.clone();
    for assignments in [
        vec![],
        vec![vec![]],
        vec![vec![2, 2]],
        vec![vec![2, 9]],
        vec![vec![1]],
        vec![vec![2], vec![]],
    ] {
        let command = create("u", assignments.clone());
        assert!(
            apply(&mut image, &command).is_err(),
            "{assignments:?} accepted"
        );
        let more = MetadataCommand::CreatePartitions {
            name: "t".into(),
            partitions_before: Some(1),
            assignments: assignments.clone(),
        };
        assert!(
            apply(&mut image, &more).is_err(),
            "{assignments:?} accepted"
        );
        assert_eq!(image, before);
    }
    for bad_name in ["", "a/b", "__cluster_metadata"] {
        assert!(apply(&mut image, &create(bad_name, vec![vec![2]])).is_err());
    }
    let nil_id = MetadataCommand::CreateTopic {
        name: "u".into(),
        id: Uuid::nil(),
        assignments: vec![vec![2]],
        configs: BTreeMap::new(),
    };
    assert!(apply(&mut image, &nil_id).is_err());
    assert_eq!(image, before);
}

#[test]
fn restore_imports_an_image_once_and_keeps_the_log_position() {
    let mut old = cluster(1);
    step(&mut old, &create("t", vec![vec![1]])).unwrap();
    let restore = MetadataCommand::Restore {
        image: Box::new(old.clone()),
    };
    let mut fresh = MetadataImage::default();
    assert!(
        step(&mut fresh, &restore).is_err(),
        "an image without a cluster id"
    );
    old.cluster_id = "c1".into();
    let restore = MetadataCommand::Restore {
        image: Box::new(old.clone()),
    };
    fresh.applied_index = 3;
    fresh.controller_id = 5;
    apply(&mut fresh, &restore).unwrap();
    assert_eq!((fresh.applied_index, fresh.controller_id), (3, 5));
    assert_eq!(fresh.topics, old.topics);
    assert_eq!(fresh.brokers, old.brokers);
    let before = fresh.clone();
    assert!(apply(&mut fresh, &restore).is_err(), "a second restore");
    assert_eq!(fresh, before);
    let mut broken = old.clone();
    broken.topics.get_mut("t").unwrap().partitions[0]
        .isr
        .clear();
    let mut empty = MetadataImage::default();
    let restore = MetadataCommand::Restore {
        image: Box::new(broken),
    };
    assert!(
        apply(&mut empty, &restore).is_err(),
        "an image breaking invariants"
    );
    assert_eq!(empty, MetadataImage::default());
}

#[test]
fn old_register_broker_records_still_decode_and_register_unfenced() {
    let old = r#"{"RegisterBroker":{"node_id":1,"host":"h","port":9092,"rack":"r1"}}"#;
    let command: MetadataCommand = serde_json::from_str(old).unwrap();
    let expected = MetadataCommand::RegisterBroker {
        node_id: 1,
        incarnation_id: Uuid::nil(),
        listeners: vec![BrokerEndpoint {
            name: "PLAINTEXT".into(),
            host: "h".into(),
            port: 9092,
        }],
        rack: Some("r1".into()),
    };
    assert_eq!(command, expected);
    let mut image = MetadataImage::default();
    step(&mut image, &command).unwrap();
    assert!(!image.brokers[&1].fenced);
    let current = serde_json::to_string(&register(2, 5)).unwrap();
    assert_eq!(
        serde_json::from_str::<MetadataCommand>(&current).unwrap(),
        register(2, 5)
    );
    let bad_port = r#"{"RegisterBroker":{"node_id":1,"host":"h","port":70000,"rack":null}}"#;
    assert!(serde_json::from_str::<MetadataCommand>(bad_port).is_err());
}

fn topic_id(image: &MetadataImage, name: &str) -> Uuid {
    image.topic(name).unwrap().id
}

/// Applies `command` a second time, as a forwarded retry does: `Done`, and the image is
/// exactly as the first application left it (bar the log position).
fn assert_retry_changes_nothing(image: &mut MetadataImage, command: &MetadataCommand) {
    let before = image.clone();
    assert_eq!(
        step(image, command).unwrap(),
        CommandOutcome::Done,
        "{command:?}"
    );
    image.applied_index = before.applied_index;
    assert_eq!(*image, before, "{command:?}");
}

#[test]
fn a_create_topic_applied_twice_answers_done_and_another_id_is_refused() {
    let mut image = cluster(2);
    let command = create("t", vec![vec![1, 2], vec![2, 1]]);
    step(&mut image, &command).unwrap();
    assert_retry_changes_nothing(&mut image, &command);
    let before = image.clone();
    let other = create("t", vec![vec![1]]);
    assert!(matches!(
        apply(&mut image, &other),
        Err(ControllerError::TopicAlreadyExists(_))
    ));
    assert_eq!(image, before);
}

#[test]
fn a_delete_topic_applied_twice_answers_done_and_spares_a_topic_created_since() {
    let mut image = cluster(1);
    step(&mut image, &create("t", vec![vec![1]])).unwrap();
    let delete = MetadataCommand::DeleteTopic {
        name: "t".into(),
        id: Some(topic_id(&image, "t")),
    };
    step(&mut image, &delete).unwrap();
    assert!(image.topic("t").is_none());
    assert_retry_changes_nothing(&mut image, &delete);
    // The name is taken again by a new topic: a late retry must not delete it.
    step(&mut image, &create("t", vec![vec![1]])).unwrap();
    assert_retry_changes_nothing(&mut image, &delete);
    assert!(image.topic("t").is_some());
    // Without an id (a record of an older log) a missing topic is still an error.
    let legacy = MetadataCommand::DeleteTopic {
        name: "gone".into(),
        id: None,
    };
    assert!(matches!(
        apply(&mut image, &legacy),
        Err(ControllerError::UnknownTopic(_))
    ));
    let legacy = MetadataCommand::DeleteTopic {
        name: "t".into(),
        id: None,
    };
    step(&mut image, &legacy).unwrap();
    assert!(image.topic("t").is_none() && image.topic_names.is_empty());
}

fn add_partitions(before: usize, assignments: Vec<Vec<NodeId>>) -> MetadataCommand {
    MetadataCommand::CreatePartitions {
        name: "t".into(),
        partitions_before: Some(before),
        assignments,
    }
}

#[test]
fn create_partitions_applied_twice_answers_done_and_another_count_is_refused() {
    let mut image = cluster(2);
    step(&mut image, &create("t", vec![vec![1, 2]])).unwrap();
    let grow = add_partitions(1, vec![vec![2, 1], vec![1, 2]]);
    step(&mut image, &grow).unwrap();
    assert_eq!(image.topic("t").unwrap().partitions.len(), 3);
    assert_retry_changes_nothing(&mut image, &grow);
    // Still its own partitions after more were added behind them.
    step(&mut image, &add_partitions(3, vec![vec![1, 2]])).unwrap();
    assert_retry_changes_nothing(&mut image, &grow);
    let before = image.clone();
    for stale in [
        add_partitions(1, vec![vec![1, 2], vec![1, 2]]),
        add_partitions(1, vec![vec![2, 1]; 4]),
        add_partitions(2, vec![vec![2, 1]]),
        add_partitions(9, vec![vec![1, 2]]),
        add_partitions(usize::MAX, vec![vec![1, 2]]),
    ] {
        let error = apply(&mut image, &stale).unwrap_err();
        assert!(
            matches!(error, ControllerError::InvalidPartitions(_)),
            "{stale:?}: {error}"
        );
        assert_eq!(image, before);
    }
    // Without a planned count (a record of an older log) the partitions are appended.
    let legacy = MetadataCommand::CreatePartitions {
        name: "t".into(),
        partitions_before: None,
        assignments: vec![vec![2, 1]],
    };
    step(&mut image, &legacy).unwrap();
    assert_eq!(image.partition("t", 4).unwrap().replicas, [2, 1]);
}

#[test]
fn topic_records_without_the_planned_id_or_count_still_decode() {
    let delete = r#"{"DeleteTopic":{"name":"t"}}"#;
    assert_eq!(
        serde_json::from_str::<MetadataCommand>(delete).unwrap(),
        MetadataCommand::DeleteTopic {
            name: "t".into(),
            id: None
        }
    );
    let grow = r#"{"CreatePartitions":{"name":"t","assignments":[[1]]}}"#;
    assert_eq!(
        serde_json::from_str::<MetadataCommand>(grow).unwrap(),
        MetadataCommand::CreatePartitions {
            name: "t".into(),
            partitions_before: None,
            assignments: vec![vec![1]],
        }
    );
    for current in [add_partitions(2, vec![vec![1]]), create("t", vec![vec![1]])] {
        let json = serde_json::to_string(&current).unwrap();
        assert_eq!(
            serde_json::from_str::<MetadataCommand>(&json).unwrap(),
            current
        );
    }
}
