//! Metadata and DescribeTopicPartitions: served from the metadata image, with Kafka's
//! auto-creation of topics a client asks for.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, MetadataRequest,
    MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::RequestContext;
use super::errors::controller_error;
use crate::broker::Broker;
use crate::controller::image::is_internal_topic;
use crate::controller::topic_admin::NewTopic;
use crate::controller::{MetadataImage, PartitionImage, TopicImage};

/// Kafka's "authorized operations were not requested" marker.
pub(super) const OPERATIONS_OMITTED: i32 = i32::MIN;
/// CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS,
/// IDEMPOTENT_WRITE: the cluster operations Kafka reports, all allowed without ACLs.
pub(super) const CLUSTER_OPERATIONS_ALL: i32 =
    (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);
/// READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS: no ACLs
/// here, so a client may do everything.
const TOPIC_OPERATIONS_ALL: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);

pub async fn handle(
    broker: &Broker,
    context: &RequestContext,
    request: MetadataRequest,
) -> MetadataResponse {
    // v0 sends an empty list for "all topics"; v1+ sends null.
    let wanted = request
        .topics
        .filter(|topics| context.version == 0 && !topics.is_empty() || context.version > 0);
    let allow_create = context.version < 4 || request.allow_auto_topic_creation;
    let mut topics = Vec::new();
    match wanted {
        None => {
            let image = broker.image();
            topics.extend(
                image
                    .topics
                    .values()
                    .map(|topic| topic_entry(topic, request.include_topic_authorized_operations)),
            );
        }
        Some(requested) => {
            for entry in requested {
                let topic = match entry.name {
                    Some(name) => by_name(broker, name.0.as_str(), allow_create).await,
                    None => by_id(&broker.image(), entry.topic_id),
                };
                topics.push(topic.unwrap_or_else(|error| error));
            }
            if request.include_topic_authorized_operations {
                for topic in topics.iter_mut().filter(|t| t.error_code == 0) {
                    topic.topic_authorized_operations = TOPIC_OPERATIONS_ALL;
                }
            }
        }
    }
    mark_offline_replicas(broker, &mut topics);
    let image = broker.image();
    MetadataResponse::default()
        .with_brokers(brokers(&image))
        .with_cluster_id(Some(StrBytes::from_string(image.cluster_id.clone())))
        .with_controller_id(BrokerId(image.controller_id))
        .with_topics(topics)
        .with_cluster_authorized_operations(
            if request.include_cluster_authorized_operations && (8..=10).contains(&context.version)
            {
                CLUSTER_OPERATIONS_ALL
            } else {
                OPERATIONS_OMITTED
            },
        )
}

/// Lists this broker among the offline replicas (Metadata v5+) of partitions assigned here
/// whose log would not open, as Kafka does for a partition in a failed log directory.
fn mark_offline_replicas(broker: &Broker, topics: &mut [MetadataResponseTopic]) {
    if !broker.replicas.has_open_failures() {
        return;
    }
    let node_id = BrokerId(broker.config.node_id);
    for topic in topics {
        let Some(name) = &topic.name else { continue };
        for partition in &mut topic.partitions {
            let index = partition.partition_index;
            if broker
                .replicas
                .open_failure(name.0.as_str(), index)
                .is_some()
            {
                partition.offline_replicas.push(node_id);
            }
        }
    }
}

fn brokers(image: &MetadataImage) -> Vec<MetadataResponseBroker> {
    image
        .brokers
        .values()
        .map(|broker| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(broker.node_id))
                .with_host(StrBytes::from_string(broker.host.clone()))
                .with_port(broker.port)
                .with_rack(broker.rack.clone().map(StrBytes::from_string))
        })
        .collect()
}

type TopicResult = Result<MetadataResponseTopic, MetadataResponseTopic>;

fn error_topic(name: Option<&str>, id: Uuid, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(name.map(|name| TopicName(StrBytes::from_string(name.to_string()))))
        .with_topic_id(id)
        .with_error_code(error.code())
        .with_topic_authorized_operations(OPERATIONS_OMITTED)
}

async fn by_name(broker: &Broker, name: &str, allow_create: bool) -> TopicResult {
    if let Some(topic) = broker.image().topic(name) {
        return Ok(topic_entry(topic, false));
    }
    if !(allow_create && broker.config.auto_create_topics_enable) || is_internal_topic(name) {
        return Err(error_topic(
            Some(name),
            Uuid::nil(),
            ResponseError::UnknownTopicOrPartition,
        ));
    }
    let new = NewTopic {
        name: name.into(),
        num_partitions: -1,
        replication_factor: -1,
        ..NewTopic::default()
    };
    match broker.create_topic(&new, false).await {
        Ok(_) => tracing::info!(topic = name, "auto-created topic"),
        // Two clients racing to create the same topic: the loser just reads it.
        Err(crate::controller::ControllerError::TopicAlreadyExists(_)) => {}
        Err(error) => {
            return Err(error_topic(
                Some(name),
                Uuid::nil(),
                controller_error(&error),
            ));
        }
    }
    match broker.image().topic(name) {
        Some(topic) => Ok(topic_entry(topic, false)),
        None => Err(error_topic(
            Some(name),
            Uuid::nil(),
            ResponseError::LeaderNotAvailable,
        )),
    }
}

fn by_id(image: &MetadataImage, id: Uuid) -> TopicResult {
    match image.topic_by_id(&id) {
        Some(topic) => Ok(topic_entry(topic, false)),
        None => Err(error_topic(None, id, ResponseError::UnknownTopicId)),
    }
}

fn topic_entry(topic: &TopicImage, include_operations: bool) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(index, partition)| partition_entry(index as i32, partition))
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(topic.id)
        .with_is_internal(is_internal_topic(&topic.name))
        .with_partitions(partitions)
        .with_topic_authorized_operations(if include_operations {
            TOPIC_OPERATIONS_ALL
        } else {
            OPERATIONS_OMITTED
        })
}

fn ids(nodes: &[i32]) -> Vec<BrokerId> {
    nodes.iter().copied().map(BrokerId).collect()
}

fn partition_entry(index: i32, partition: &PartitionImage) -> MetadataResponsePartition {
    MetadataResponsePartition::default()
        .with_partition_index(index)
        .with_leader_id(BrokerId(partition.leader))
        .with_leader_epoch(partition.leader_epoch)
        .with_replica_nodes(ids(&partition.replicas))
        .with_isr_nodes(ids(&partition.isr))
}

/// DescribeTopicPartitions (KIP-966): topics sorted by name, paged by partition count.
pub async fn describe_topic_partitions(
    broker: &Broker,
    _context: &RequestContext,
    request: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let image = broker.image();
    let mut names: Vec<String> = if request.topics.is_empty() {
        image.topics.keys().cloned().collect()
    } else {
        request
            .topics
            .iter()
            .map(|topic| topic.name.0.to_string())
            .collect()
    };
    names.sort();
    names.dedup();
    let (start_topic, start_partition) = match &request.cursor {
        Some(cursor) => (
            cursor.topic_name.0.to_string(),
            cursor.partition_index.max(0),
        ),
        None => (String::new(), 0),
    };
    let mut budget = request.response_partition_limit.clamp(1, 2000) as usize;
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for name in names.into_iter().filter(|name| *name >= start_topic) {
        let first = if name == start_topic {
            start_partition as usize
        } else {
            0
        };
        let Some(topic) = image.topic(&name) else {
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_string(name))))
                    .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                    .with_topic_authorized_operations(OPERATIONS_OMITTED),
            );
            continue;
        };
        if budget == 0 {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(TopicName(StrBytes::from_string(name)))
                    .with_partition_index(first as i32),
            );
            break;
        }
        let take = budget.min(topic.partitions.len().saturating_sub(first));
        budget -= take;
        topics.push(describe_topic(topic, first, take));
        if first + take < topic.partitions.len() {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(TopicName(StrBytes::from_string(name)))
                    .with_partition_index((first + take) as i32),
            );
            break;
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor)
}

fn describe_topic(
    topic: &TopicImage,
    first: usize,
    take: usize,
) -> DescribeTopicPartitionsResponseTopic {
    let partitions = topic.partitions[first..first + take]
        .iter()
        .enumerate()
        .map(|(offset, partition)| {
            DescribeTopicPartitionsResponsePartition::default()
                .with_partition_index((first + offset) as i32)
                .with_leader_id(BrokerId(partition.leader))
                .with_leader_epoch(partition.leader_epoch)
                .with_replica_nodes(ids(&partition.replicas))
                .with_isr_nodes(ids(&partition.isr))
                .with_eligible_leader_replicas(Some(Vec::new()))
                .with_last_known_elr(Some(Vec::new()))
        })
        .collect();
    DescribeTopicPartitionsResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(topic.id)
        .with_is_internal(is_internal_topic(&topic.name))
        .with_partitions(partitions)
        .with_topic_authorized_operations(TOPIC_OPERATIONS_ALL)
}
