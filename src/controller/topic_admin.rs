//! Turning topic admin requests into metadata commands: Kafka's validation rules for
//! CreateTopics, DeleteTopics and CreatePartitions, as pure functions of the image.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::image::{MetadataImage, is_internal_topic};
use super::placement::assign_replicas;
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

fn registered_brokers(image: &MetadataImage) -> Vec<NodeId> {
    image.brokers.keys().copied().collect()
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
    let brokers = registered_brokers(image);
    if replication_factor as usize > brokers.len() {
        return Err(ControllerError::InvalidReplicationFactor(format!(
            "Unable to replicate the partition {replication_factor} time(s): The target \
             replication factor of {replication_factor} cannot be reached because only {} \
             broker(s) are registered.",
            brokers.len()
        )));
    }
    let start = (image.applied_index as usize) % brokers.len();
    Ok(assign_replicas(
        &brokers,
        0,
        partitions,
        replication_factor as usize,
        start,
    ))
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
    for list in &replicas {
        check_replica_list(image, list)?;
    }
    Ok(replicas)
}

fn check_replica_list(image: &MetadataImage, replicas: &[NodeId]) -> Result<(), ControllerError> {
    let invalid = |reason: String| Err(ControllerError::InvalidReplicaAssignment(reason));
    if replicas.is_empty() {
        return invalid("The manual partition assignment includes an empty replica list.".into());
    }
    let mut unique = replicas.to_vec();
    unique.sort_unstable();
    unique.dedup();
    if unique.len() != replicas.len() {
        return invalid(format!(
            "The manual partition assignment {replicas:?} has duplicates."
        ));
    }
    if let Some(missing) = replicas.iter().find(|id| !image.brokers.contains_key(id)) {
        return invalid(format!(
            "The manual partition assignment includes broker {missing}, but no such broker is registered."
        ));
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
    if image.topic(name).is_none() {
        return Err(ControllerError::UnknownTopic(name.to_string()));
    }
    Ok(MetadataCommand::DeleteTopic {
        name: name.to_string(),
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
    let new = match assignments {
        Some(lists) => {
            if lists.len() as i32 != added {
                return Err(ControllerError::InvalidReplicaAssignment(format!(
                    "Attempted to add {added} additional partition(s), but only {} assignment(s) \
                     were specified.",
                    lists.len()
                )));
            }
            for list in lists {
                check_replica_list(image, list)?;
            }
            lists.to_vec()
        }
        None => {
            let replication_factor = topic.partitions.first().map_or(1, |p| p.replicas.len());
            let brokers = registered_brokers(image);
            if replication_factor > brokers.len() {
                return Err(ControllerError::InvalidReplicationFactor(format!(
                    "Unable to replicate the partition {replication_factor} time(s)"
                )));
            }
            assign_replicas(&brokers, current, added, replication_factor, 0)
        }
    };
    Ok(MetadataCommand::CreatePartitions {
        name: name.to_string(),
        assignments: new,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::commands::apply;
    use crate::controller::image::BrokerRegistration;

    const DEFAULTS: TopicDefaults = TopicDefaults {
        num_partitions: 3,
        replication_factor: 1,
        partitions_per_request_max: 100,
    };

    fn image() -> MetadataImage {
        let mut image = MetadataImage::default();
        let broker = BrokerRegistration {
            node_id: 1,
            host: "h".into(),
            port: 1,
            rack: None,
        };
        apply(&mut image, &MetadataCommand::RegisterBroker(broker)).unwrap();
        image
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
            MetadataCommand::CreatePartitions { assignments, .. } => {
                assert_eq!(assignments.len(), 2)
            }
            other => panic!("unexpected {other:?}"),
        }
        let unknown = plan_create_partitions(&image, DEFAULTS, "nope", 4, None);
        assert!(matches!(unknown, Err(ControllerError::UnknownTopic(_))));
    }
}
