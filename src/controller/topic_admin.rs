//! Turning topic admin requests into metadata commands: Kafka's validation rules for
//! CreateTopics, DeleteTopics and CreatePartitions, as pure functions of the image.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::commands::check_replicas;
use super::image::{MetadataImage, is_internal_topic};
use super::placement::place;
use super::topic_rules::{METADATA_TOPIC, validate_topic_name};
use super::{ControllerError, MetadataCommand};
use crate::topic_config;
use crate::types::NodeId;

/// Defaults and limits a plan needs from the broker config.
#[derive(Clone, Copy, Debug)]
pub struct TopicDefaults {
    pub num_partitions: i32,
    pub replication_factor: i16,
    pub partitions_per_request_max: i32,
}

/// A CreateTopics entry, decoupled from the wire struct.
#[derive(Clone, Debug, Default)]
pub struct NewTopic {
    pub name: String,
    /// -1 means the broker default.
    pub num_partitions: i32,
    /// -1 means the broker default.
    pub replication_factor: i16,
    /// Manual assignment: (partition index, replicas).
    pub assignments: Vec<(i32, Vec<NodeId>)>,
    pub configs: BTreeMap<String, String>,
}

pub fn plan_create_topic(
    image: &MetadataImage,
    defaults: TopicDefaults,
    topic: &NewTopic,
) -> Result<MetadataCommand, ControllerError> {
    validate_topic_name(&topic.name).map_err(ControllerError::InvalidTopic)?;
    if image.topic(&topic.name).is_some() {
        return Err(ControllerError::TopicAlreadyExists(topic.name.clone()));
    }
    if let Some(other) = colliding_topic(image, &topic.name) {
        return Err(ControllerError::InvalidTopic(format!(
            "Topic '{}' collides with existing topic: {other}",
            topic.name
        )));
    }
    topic_config::validate(&topic.configs).map_err(ControllerError::InvalidConfig)?;
    let assignments = if topic.assignments.is_empty() {
        automatic_assignment(image, defaults, topic)?
    } else {
        manual_assignment(image, topic)?
    };
    if assignments.len() > defaults.partitions_per_request_max as usize {
        return Err(ControllerError::InvalidPartitions(
            "Excessively large number of partitions per request.".into(),
        ));
    }
    Ok(MetadataCommand::CreateTopic {
        name: topic.name.clone(),
        id: Uuid::new_v4(),
        assignments,
        configs: topic.configs.clone(),
    })
}

/// Kafka forbids names that differ only by '.' vs '_' (they clash in metric names).
fn colliding_topic<'a>(image: &'a MetadataImage, name: &str) -> Option<&'a str> {
    let normalized = name.replace('.', "_");
    image
        .topics
        .keys()
        .find(|other| other.replace('.', "_") == normalized)
        .map(String::as_str)
}

fn automatic_assignment(
    image: &MetadataImage,
    defaults: TopicDefaults,
    topic: &NewTopic,
) -> Result<Vec<Vec<NodeId>>, ControllerError> {
    let partitions = match topic.num_partitions {
        -1 => defaults.num_partitions,
        n if n <= 0 => {
            return Err(ControllerError::InvalidPartitions(
                "Number of partitions was set to an invalid non-positive value.".into(),
            ));
        }
        n => n,
    };
    if partitions > defaults.partitions_per_request_max {
        return Err(ControllerError::InvalidPartitions(
            "Excessively large number of partitions per request.".into(),
        ));
    }
    let replication_factor = match topic.replication_factor {
        -1 => defaults.replication_factor,
        n if n <= 0 => {
            return Err(ControllerError::InvalidReplicationFactor(
                "Replication factor must be larger than 0, or -1 to use the default value.".into(),
            ));
        }
        n => n,
    };
    // Kafka prefixes the placer's reason for CreateTopics (not for CreatePartitions).
    place(image, partitions as usize, replication_factor as usize).map_err(|error| {
        ControllerError::InvalidReplicationFactor(format!(
            "Unable to replicate the partition {replication_factor} time(s): {error}"
        ))
    })
}

fn manual_assignment(
    image: &MetadataImage,
    topic: &NewTopic,
) -> Result<Vec<Vec<NodeId>>, ControllerError> {
    if topic.num_partitions != -1 || topic.replication_factor != -1 {
        return Err(ControllerError::InvalidRequest(
            "Both numPartitions or replicationFactor and replicasAssignments were set. \
             Both cannot be used at the same time."
                .into(),
        ));
    }
    let mut sorted = topic.assignments.clone();
    sorted.sort_by_key(|(partition, _)| *partition);
    for (expected, (partition, _)) in sorted.iter().enumerate() {
        if *partition != expected as i32 {
            return Err(ControllerError::InvalidReplicaAssignment(
                "Partitions should be a consecutive 0-based integer sequence".into(),
            ));
        }
    }
    let replicas: Vec<Vec<NodeId>> = sorted.into_iter().map(|(_, replicas)| replicas).collect();
    let replication_factor = replicas.first().map(Vec::len);
    check_manual_lists(image, &replicas, 0, replication_factor)?;
    Ok(replicas)
}

/// Kafka's checks of manual assignments for partitions `first..`: every list valid
/// (non-empty, distinct, registered brokers), of `replication_factor` replicas when given,
/// and with at least one unfenced broker to lead it.
fn check_manual_lists(
    image: &MetadataImage,
    lists: &[Vec<NodeId>],
    first: usize,
    replication_factor: Option<usize>,
) -> Result<(), ControllerError> {
    for (offset, replicas) in lists.iter().enumerate() {
        check_replicas(image, replicas)?;
        if let Some(expected) = replication_factor
            && replicas.len() != expected
        {
            return Err(ControllerError::InvalidReplicaAssignment(format!(
                "The manual partition assignment includes a partition with {} replica(s), but \
                 this is not consistent with previous partitions, which have {expected} \
                 replica(s).",
                replicas.len()
            )));
        }
        if !replicas.iter().any(|&id| image.is_broker_live(id)) {
            return Err(ControllerError::InvalidReplicaAssignment(format!(
                "All brokers specified in the manual partition assignment for partition {} \
                 are fenced or in controlled shutdown.",
                first + offset
            )));
        }
    }
    Ok(())
}

pub fn plan_delete_topic(
    image: &MetadataImage,
    name: &str,
    deletion_enabled: bool,
) -> Result<MetadataCommand, ControllerError> {
    if !deletion_enabled {
        return Err(ControllerError::DeletionDisabled);
    }
    if name == METADATA_TOPIC {
        return Err(ControllerError::InvalidRequest(format!(
            "Cannot delete {name}"
        )));
    }
    let topic = image
        .topic(name)
        .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))?;
    // The id makes a retried command harmless: it cannot delete a topic created since.
    Ok(MetadataCommand::DeleteTopic {
        name: name.to_string(),
        id: Some(topic.id),
    })
}

pub fn plan_create_partitions(
    image: &MetadataImage,
    defaults: TopicDefaults,
    name: &str,
    count: i32,
    assignments: Option<&[Vec<NodeId>]>,
) -> Result<MetadataCommand, ControllerError> {
    let topic = image
        .topic(name)
        .ok_or_else(|| ControllerError::UnknownTopic(name.into()))?;
    let current = topic.partitions.len() as i32;
    if count < current {
        return Err(ControllerError::InvalidPartitions(format!(
            "The topic {name} currently has {current} partition(s); {count} would not be an increase."
        )));
    }
    if count == current {
        return Err(ControllerError::InvalidPartitions(format!(
            "Topic already has {current} partition(s)."
        )));
    }
    if count - current > defaults.partitions_per_request_max {
        return Err(ControllerError::InvalidPartitions(
            "Excessively large number of partitions per request.".into(),
        ));
    }
    if is_internal_topic(name) {
        return Err(ControllerError::InvalidRequest(format!(
            "Cannot add partitions to {name}"
        )));
    }
    let added = count - current;
    let replication_factor = topic.partitions.first().map_or(1, |p| p.replicas.len());
    let new = match assignments {
        Some(lists) => {
            if lists.len() as i32 != added {
                return Err(ControllerError::InvalidReplicaAssignment(format!(
                    "Attempted to add {added} additional partition(s), but only {} assignment(s) \
                     were specified.",
                    lists.len()
                )));
            }
            check_manual_lists(image, lists, current as usize, Some(replication_factor))?;
            lists.to_vec()
        }
        None => place(image, added as usize, replication_factor)?,
    };
    // The count planned against: a retried command adds nothing a second time.
    Ok(MetadataCommand::CreatePartitions {
        name: name.to_string(),
        partitions_before: Some(current as usize),
        assignments: new,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::commands::apply;
    use crate::controller::image::BrokerEndpoint;

    const DEFAULTS: TopicDefaults = TopicDefaults {
        num_partitions: 3,
        replication_factor: 1,
        partitions_per_request_max: 100,
    };

    /// Broker 1 registered and unfenced, as a started single node is.
    fn image() -> MetadataImage {
        let mut image = MetadataImage::default();
        register(&mut image, 1, None);
        image
    }

    fn register(image: &mut MetadataImage, node_id: NodeId, rack: Option<&str>) {
        image.applied_index += 1;
        let register = MetadataCommand::RegisterBroker {
            node_id,
            incarnation_id: Uuid::from_u128(node_id as u128 + 1),
            listeners: vec![BrokerEndpoint {
                name: "PLAINTEXT".into(),
                host: "h".into(),
                port: 9092,
            }],
            rack: rack.map(str::to_string),
        };
        apply(image, &register).unwrap();
        let epoch = image.brokers[&node_id].epoch;
        apply(image, &MetadataCommand::UnfenceBroker { node_id, epoch }).unwrap();
    }

    fn fence(image: &mut MetadataImage, node_id: NodeId) {
        let epoch = image.brokers[&node_id].epoch;
        apply(image, &MetadataCommand::FenceBroker { node_id, epoch }).unwrap();
    }

    fn new_topic(name: &str, partitions: i32, replication_factor: i16) -> NewTopic {
        NewTopic {
            name: name.into(),
            num_partitions: partitions,
            replication_factor,
            ..NewTopic::default()
        }
    }

    #[test]
    fn create_applies_defaults_and_kafka_errors() {
        let mut image = image();
        let command = plan_create_topic(&image, DEFAULTS, &new_topic("t", -1, -1)).unwrap();
        apply(&mut image, &command).unwrap();
        assert_eq!(image.topic("t").unwrap().partitions.len(), 3);
        let error = |topic: NewTopic| plan_create_topic(&image, DEFAULTS, &topic).unwrap_err();
        assert!(matches!(
            error(new_topic("t", 1, 1)),
            ControllerError::TopicAlreadyExists(_)
        ));
        assert!(matches!(
            error(new_topic("bad/name", 1, 1)),
            ControllerError::InvalidTopic(_)
        ));
        assert!(matches!(
            error(new_topic("u", 0, 1)),
            ControllerError::InvalidPartitions(_)
        ));
        assert!(matches!(
            error(new_topic("u", -2, 1)),
            ControllerError::InvalidPartitions(_)
        ));
        assert!(matches!(
            error(new_topic("u", 101, 1)),
            ControllerError::InvalidPartitions(_)
        ));
        assert!(matches!(
            error(new_topic("u", 1, 3)),
            ControllerError::InvalidReplicationFactor(_)
        ));
        assert!(matches!(
            error(new_topic("u", 1, 0)),
            ControllerError::InvalidReplicationFactor(_)
        ));
        let mut configured = new_topic("u", 1, 1);
        configured
            .configs
            .insert("retention.ms".into(), "forever".into());
        assert!(matches!(
            error(configured),
            ControllerError::InvalidConfig(_)
        ));
    }

    #[test]
    fn names_differing_by_dot_and_underscore_collide() {
        let mut image = image();
        let command = plan_create_topic(&image, DEFAULTS, &new_topic("a.b", 1, 1)).unwrap();
        apply(&mut image, &command).unwrap();
        let error = plan_create_topic(&image, DEFAULTS, &new_topic("a_b", 1, 1)).unwrap_err();
        assert!(matches!(error, ControllerError::InvalidTopic(_)));
    }

    #[test]
    fn manual_assignments_are_checked() {
        let image = image();
        let mut topic = new_topic("m", -1, -1);
        topic.assignments = vec![(0, vec![1]), (1, vec![1])];
        assert!(plan_create_topic(&image, DEFAULTS, &topic).is_ok());
        topic.assignments = vec![(0, vec![1]), (2, vec![1])];
        let error = plan_create_topic(&image, DEFAULTS, &topic).unwrap_err();
        assert!(matches!(
            error,
            ControllerError::InvalidReplicaAssignment(_)
        ));
        topic.assignments = vec![(0, vec![2])];
        let error = plan_create_topic(&image, DEFAULTS, &topic).unwrap_err();
        assert!(matches!(
            error,
            ControllerError::InvalidReplicaAssignment(_)
        ));
    }

    #[test]
    fn partitions_only_grow() {
        let mut image = image();
        let command = plan_create_topic(&image, DEFAULTS, &new_topic("p", 2, 1)).unwrap();
        apply(&mut image, &command).unwrap();
        let plan = |count| plan_create_partitions(&image, DEFAULTS, "p", count, None);
        assert!(matches!(
            plan(1),
            Err(ControllerError::InvalidPartitions(_))
        ));
        assert!(matches!(
            plan(2),
            Err(ControllerError::InvalidPartitions(_))
        ));
        match plan(4).unwrap() {
            MetadataCommand::CreatePartitions {
                assignments,
                partitions_before,
                ..
            } => {
                assert_eq!(assignments.len(), 2);
                assert_eq!(
                    partitions_before,
                    Some(2),
                    "the count it was planned against"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        let command = plan(4).unwrap();
        apply(&mut image, &command).unwrap();
        let before = image.clone();
        assert!(matches!(
            apply(&mut image, &command),
            Ok(crate::controller::CommandOutcome::Done)
        ));
        assert_eq!(image, before, "a retried plan adds nothing");
        let unknown = plan_create_partitions(&image, DEFAULTS, "nope", 4, None);
        assert!(matches!(unknown, Err(ControllerError::UnknownTopic(_))));
    }

    #[test]
    fn a_delete_plan_names_the_topic_id_so_a_retry_spares_a_new_topic() {
        let mut image = image();
        let command = plan_create_topic(&image, DEFAULTS, &new_topic("d", 1, 1)).unwrap();
        apply(&mut image, &command).unwrap();
        let id = image.topic("d").unwrap().id;
        let delete = plan_delete_topic(&image, "d", true).unwrap();
        assert_eq!(
            delete,
            MetadataCommand::DeleteTopic {
                name: "d".into(),
                id: Some(id)
            }
        );
        apply(&mut image, &delete).unwrap();
        let again = plan_create_topic(&image, DEFAULTS, &new_topic("d", 1, 1)).unwrap();
        apply(&mut image, &again).unwrap();
        apply(&mut image, &delete).unwrap();
        assert!(image.topic("d").is_some_and(|topic| topic.id != id));
        assert!(matches!(
            plan_delete_topic(&image, "gone", true),
            Err(ControllerError::UnknownTopic(_))
        ));
    }

    type PlanResult = Result<MetadataCommand, ControllerError>;

    fn message(result: PlanResult) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn replication_factor_counts_unfenced_brokers_with_kafkas_message() {
        let mut image = image();
        register(&mut image, 2, None);
        register(&mut image, 3, None);
        assert!(plan_create_topic(&image, DEFAULTS, &new_topic("t", 3, 3)).is_ok());
        fence(&mut image, 3);
        let error = plan_create_topic(&image, DEFAULTS, &new_topic("t", 3, 3)).unwrap_err();
        assert!(matches!(
            error,
            ControllerError::InvalidReplicationFactor(_)
        ));
        assert_eq!(
            error.to_string(),
            "Unable to replicate the partition 3 time(s): The target replication factor of 3 \
             cannot be reached because only 2 broker(s) are registered."
        );
        match plan_create_topic(&image, DEFAULTS, &new_topic("t", 6, 2)).unwrap() {
            MetadataCommand::CreateTopic { assignments, .. } => {
                assert!(assignments.iter().flatten().all(|&id| id != 3));
            }
            other => panic!("unexpected {other:?}"),
        }
        fence(&mut image, 1);
        fence(&mut image, 2);
        assert_eq!(
            message(plan_create_topic(&image, DEFAULTS, &new_topic("t", 1, 1))),
            "Unable to replicate the partition 1 time(s): All brokers are currently fenced."
        );
    }

    #[test]
    fn manual_assignments_follow_kafkas_rules() {
        let mut image = image();
        register(&mut image, 2, None);
        fn plan(image: &MetadataImage, lists: Vec<Vec<NodeId>>) -> PlanResult {
            let mut topic = new_topic("m", -1, -1);
            topic.assignments = lists
                .into_iter()
                .enumerate()
                .map(|(i, l)| (i as i32, l))
                .collect();
            plan_create_topic(image, DEFAULTS, &topic)
        }
        let manual = |lists| plan(&image, lists);
        assert_eq!(
            message(manual(vec![vec![1, 1]])),
            "The manual partition assignment includes the broker 1 more than once."
        );
        assert_eq!(
            message(manual(vec![vec![1, 7]])),
            "The manual partition assignment includes broker 7, but no such broker is registered."
        );
        assert_eq!(
            message(manual(vec![vec![]])),
            "The manual partition assignment includes an empty replica list."
        );
        assert!(message(manual(vec![vec![1, 2], vec![2]])).contains("not consistent"));
        assert!(manual(vec![vec![1, 2], vec![2, 1]]).is_ok());
        fence(&mut image, 2);
        // A fenced replica may follow, but some replica must be able to lead.
        assert!(plan(&image, vec![vec![2, 1]]).is_ok());
        assert_eq!(
            message(plan(&image, vec![vec![1], vec![2]])),
            "All brokers specified in the manual partition assignment for partition 1 are \
             fenced or in controlled shutdown."
        );
    }

    #[test]
    fn added_partitions_keep_the_replication_factor_and_avoid_fenced_brokers() {
        let mut image = image();
        register(&mut image, 2, None);
        register(&mut image, 3, None);
        let command = plan_create_topic(&image, DEFAULTS, &new_topic("p", 2, 2)).unwrap();
        apply(&mut image, &command).unwrap();
        fence(&mut image, 1);
        match plan_create_partitions(&image, DEFAULTS, "p", 8, None).unwrap() {
            MetadataCommand::CreatePartitions { assignments, .. } => {
                assert_eq!(assignments.len(), 6);
                for replicas in &assignments {
                    assert_eq!(replicas.len(), 2);
                    assert!(!replicas.contains(&1));
                }
            }
            other => panic!("unexpected {other:?}"),
        }
        let lists = [vec![1, 2, 3]];
        let error = plan_create_partitions(&image, DEFAULTS, "p", 3, Some(&lists)).unwrap_err();
        assert!(matches!(
            error,
            ControllerError::InvalidReplicaAssignment(_)
        ));
        fence(&mut image, 2);
        assert_eq!(
            message(plan_create_partitions(&image, DEFAULTS, "p", 3, None)),
            "The target replication factor of 2 cannot be reached because only 1 broker(s) are \
             registered."
        );
    }
}
