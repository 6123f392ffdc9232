//! Commands that change the metadata image, and their pure application.
//!
//! `apply` is deterministic and validates against the image it is applied to, so the same
//! command log replayed on any node yields the same image (the property Raft needs).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ControllerError;
use super::image::{BrokerRegistration, MetadataImage, PartitionImage, TopicImage};
use crate::types::NodeId;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum MetadataCommand {
    /// First command of a new cluster.
    Bootstrap {
        cluster_id: String,
        controller_id: NodeId,
    },
    RegisterBroker(BrokerRegistration),
    /// `assignments[p]` lists partition p's replicas, preferred leader first.
    CreateTopic {
        name: String,
        id: Uuid,
        assignments: Vec<Vec<NodeId>>,
        configs: BTreeMap<String, String>,
    },
    DeleteTopic {
        name: String,
    },
    /// Appends partitions to an existing topic.
    CreatePartitions {
        name: String,
        assignments: Vec<Vec<NodeId>>,
    },
    /// Reserves `count` producer ids for one broker to hand out.
    AllocateProducerIds {
        count: i64,
    },
    FenceBroker {
        node_id: NodeId,
        epoch: i64,
    },
    UnfenceBroker {
        node_id: NodeId,
        epoch: i64,
    },
    /// Replaces an empty image (imports the single-node metadata log).
    Restore {
        image: Box<MetadataImage>,
    },
}

/// What applying a command produced, for the caller that submitted it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CommandOutcome {
    Done,
    ProducerIdBlock { first: i64, count: i64 },
}

pub fn apply(
    image: &mut MetadataImage,
    command: &MetadataCommand,
) -> Result<CommandOutcome, ControllerError> {
    match command {
        MetadataCommand::Bootstrap {
            cluster_id,
            controller_id,
        } => {
            image.cluster_id = cluster_id.clone();
            image.controller_id = *controller_id;
        }
        MetadataCommand::RegisterBroker(registration) => {
            let mut registration = registration.clone();
            registration.epoch = image.applied_index as i64;
            registration.fenced = true;
            image.brokers.insert(registration.node_id, registration);
        }
        MetadataCommand::FenceBroker { node_id, epoch }
        | MetadataCommand::UnfenceBroker { node_id, epoch } => {
            let fence = matches!(command, MetadataCommand::FenceBroker { .. });
            match image.brokers.get_mut(node_id) {
                Some(broker) if broker.epoch == *epoch => broker.fenced = fence,
                _ => {
                    return Err(ControllerError::InvalidRequest(format!(
                        "stale broker epoch {epoch} for {node_id}"
                    )));
                }
            }
        }
        MetadataCommand::Restore { image: restored } => {
            if !image.cluster_id.is_empty() {
                return Err(ControllerError::InvalidRequest(
                    "restore into a non-empty image".into(),
                ));
            }
            let index = image.applied_index;
            *image = MetadataImage::clone(restored);
            image.applied_index = index;
        }
        MetadataCommand::CreateTopic {
            name,
            id,
            assignments,
            configs,
        } => {
            create_topic(image, name, *id, assignments, configs)?;
        }
        MetadataCommand::DeleteTopic { name } => {
            let topic = image
                .topics
                .remove(name)
                .ok_or_else(|| ControllerError::UnknownTopic(name.clone()))?;
            image.topic_names.remove(&topic.id);
        }
        MetadataCommand::CreatePartitions { name, assignments } => {
            let topic = image
                .topics
                .get_mut(name)
                .ok_or_else(|| ControllerError::UnknownTopic(name.clone()))?;
            topic
                .partitions
                .extend(assignments.iter().map(|replicas| new_partition(replicas)));
        }
        MetadataCommand::AllocateProducerIds { count } => {
            let first = image.next_producer_id;
            image.next_producer_id = first
                .checked_add(*count)
                .ok_or_else(|| ControllerError::InvalidRequest("producer ids exhausted".into()))?;
            image.applied_index += 1;
            return Ok(CommandOutcome::ProducerIdBlock {
                first,
                count: *count,
            });
        }
    }
    image.applied_index += 1;
    Ok(CommandOutcome::Done)
}

fn create_topic(
    image: &mut MetadataImage,
    name: &str,
    id: Uuid,
    assignments: &[Vec<NodeId>],
    configs: &BTreeMap<String, String>,
) -> Result<(), ControllerError> {
    if image.topics.contains_key(name) {
        return Err(ControllerError::TopicAlreadyExists(name.to_string()));
    }
    if image.topic_names.contains_key(&id) || id.is_nil() {
        return Err(ControllerError::InvalidRequest(format!(
            "topic id {id} is taken"
        )));
    }
    let partitions = assignments
        .iter()
        .map(|replicas| new_partition(replicas))
        .collect();
    let topic = TopicImage {
        name: name.to_string(),
        id,
        partitions,
        configs: configs.clone(),
    };
    image.topics.insert(name.to_string(), topic);
    image.topic_names.insert(id, name.to_string());
    Ok(())
}

fn new_partition(replicas: &[NodeId]) -> PartitionImage {
    assert!(
        !replicas.is_empty(),
        "a partition needs at least one replica"
    );
    PartitionImage {
        replicas: replicas.to_vec(),
        isr: replicas.to_vec(),
        leader: replicas[0],
        leader_epoch: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(name: &str, partitions: usize) -> MetadataCommand {
        MetadataCommand::CreateTopic {
            name: name.into(),
            id: Uuid::new_v4(),
            assignments: vec![vec![1]; partitions],
            configs: BTreeMap::new(),
        }
    }

    #[test]
    fn topics_are_created_extended_and_deleted() {
        let mut image = MetadataImage::default();
        apply(&mut image, &create("a", 2)).unwrap();
        assert_eq!(image.topic("a").unwrap().partitions.len(), 2);
        let id = image.topic("a").unwrap().id;
        assert_eq!(image.topic_by_id(&id).unwrap().name, "a");
        let more = MetadataCommand::CreatePartitions {
            name: "a".into(),
            assignments: vec![vec![1]],
        };
        apply(&mut image, &more).unwrap();
        assert_eq!(image.partition("a", 2).unwrap().leader, 1);
        assert!(matches!(
            apply(&mut image, &create("a", 1)),
            Err(ControllerError::TopicAlreadyExists(_))
        ));
        apply(
            &mut image,
            &MetadataCommand::DeleteTopic { name: "a".into() },
        )
        .unwrap();
        assert!(image.topic("a").is_none());
        assert!(image.topic_by_id(&id).is_none());
        assert_eq!(image.applied_index, 3);
    }

    #[test]
    fn producer_id_blocks_never_overlap() {
        let mut image = MetadataImage::default();
        let command = MetadataCommand::AllocateProducerIds { count: 1000 };
        let first = apply(&mut image, &command).unwrap();
        let second = apply(&mut image, &command).unwrap();
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
    }
}
