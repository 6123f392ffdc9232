use std::collections::BTreeMap;

use uuid::Uuid;

use super::*;
use crate::controller::commands::{apply, fence_broker_for_tests, register_live_broker};

const TOPIC_ID: Uuid = Uuid::from_u128(7);
const UNCLEAN: &str = "unclean.leader.election.enable";

fn config(pairs: &[(&str, &str)]) -> BrokerConfig {
    BrokerConfig::from_pairs(pairs)
}

/// Brokers 1..=3, topic "t" on replicas [1, 2]; 2 fenced first (out of the ISR), then 1
/// (the last ISR member: no leader), then 2 back: a leaderless partition with a live
/// replica outside its ISR.
fn offline_image() -> MetadataImage {
    let mut image = MetadataImage::default();
    for node_id in 1..=3 {
        image.applied_index += 1;
        register_live_broker(&mut image, node_id);
    }
    let create = MetadataCommand::CreateTopic {
        name: "t".into(),
        id: TOPIC_ID,
        assignments: vec![vec![1, 2]],
        configs: BTreeMap::new(),
    };
    image.applied_index += 1;
    apply(&mut image, &create).unwrap();
    fence_broker_for_tests(&mut image, 2);
    fence_broker_for_tests(&mut image, 1);
    image.applied_index += 1;
    register_live_broker(&mut image, 2);
    let partition = &image.topics["t"].partitions[0];
    assert_eq!(
        (partition.leader, partition.isr.as_slice()),
        (NO_LEADER, &[1][..])
    );
    image
}

fn set(layer: &mut BTreeMap<String, String>, value: &str) {
    layer.insert(UNCLEAN.into(), value.into());
}

#[test]
fn only_when_the_flag_resolves_true() {
    let mut image = offline_image();
    let off = config(&[]);
    assert_eq!(partitions_to_elect(&image, &off, 3), []);
    // The static config of the active controller.
    let on = config(&[(UNCLEAN, "true")]);
    assert_eq!(partitions_to_elect(&image, &on, 3), [(TOPIC_ID, 0)]);
    // The cluster-wide dynamic default beats the static config.
    set(
        image.broker_configs.entry(String::new()).or_default(),
        "true",
    );
    assert_eq!(partitions_to_elect(&image, &off, 3), [(TOPIC_ID, 0)]);
    // This controller's own dynamic value beats the cluster default; another node's
    // value is not this controller's.
    set(image.broker_configs.entry("3".into()).or_default(), "false");
    assert_eq!(partitions_to_elect(&image, &off, 3), []);
    assert_eq!(partitions_to_elect(&image, &off, 1), [(TOPIC_ID, 0)]);
    // The topic's own value beats them all.
    let topic = image.topics.get_mut("t").unwrap();
    set(&mut topic.configs, "true");
    assert_eq!(partitions_to_elect(&image, &off, 3), [(TOPIC_ID, 0)]);
    set(&mut image.topics.get_mut("t").unwrap().configs, "false");
    assert_eq!(partitions_to_elect(&image, &on, 1), []);
}

#[test]
fn the_election_it_proposes_elects_the_live_replica_once() {
    let mut image = offline_image();
    let on = config(&[(UNCLEAN, "true")]);
    let partitions = partitions_to_elect(&image, &on, 3);
    let command = MetadataCommand::ElectLeaders {
        election: Election::UncleanIfEnabled {
            controller: 3,
            static_enabled: true,
        },
        partitions,
    };
    image.applied_index += 1;
    apply(&mut image, &command).unwrap();
    let partition = &image.topics["t"].partitions[0];
    assert_eq!((partition.leader, partition.isr.as_slice()), (2, &[2][..]));
    assert_eq!(partitions_to_elect(&image, &on, 3), []);
}

#[test]
fn a_partition_with_no_live_replica_is_left_alone() {
    let mut image = offline_image();
    fence_broker_for_tests(&mut image, 2);
    let on = config(&[(UNCLEAN, "true")]);
    assert_eq!(partitions_to_elect(&image, &on, 3), []);
}

#[test]
fn the_check_interval_is_kafkas_internal_setting() {
    assert_eq!(check_interval(&config(&[])), CHECK_INTERVAL_DEFAULT);
    let set = config(&[("unclean.leader.election.interval.ms", "250")]);
    assert_eq!(check_interval(&set), Duration::from_millis(250));
}

/// The flag turned off between the plan and the apply (an AlterConfigs committed in
/// between, or a new controller planning before it applied everything): the apply wins.
#[test]
fn a_flag_turned_off_before_the_command_applies_elects_nothing() {
    let mut image = offline_image();
    let on = config(&[(UNCLEAN, "true")]);
    let partitions = partitions_to_elect(&image, &on, 3);
    assert_eq!(partitions, [(TOPIC_ID, 0)]);
    let command = MetadataCommand::ElectLeaders {
        election: Election::UncleanIfEnabled {
            controller: 3,
            static_enabled: true,
        },
        partitions,
    };
    set(
        image.broker_configs.entry(String::new()).or_default(),
        "false",
    );
    image.applied_index += 1;
    let outcome = apply(&mut image, &command).unwrap();
    let CommandOutcome::LeadersElected(results) = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(results[0].result, ElectionResult::UncleanDisabled);
    assert_eq!(image.topics["t"].partitions[0].leader, NO_LEADER);
}
