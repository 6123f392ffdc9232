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
use crate::controller::image::{BrokerRegistration, is_internal_topic};
use crate::controller::topic_admin::NewTopic;
use crate::controller::topic_rules::{METADATA_TOPIC, validate_topic_name};
use crate::controller::{MetadataImage, NO_LEADER, PartitionImage, TopicImage};
use crate::types::NodeId;

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
            topics.extend(image.topics.values().map(|topic| {
                let operations = request.include_topic_authorized_operations;
                topic_entry(&image, topic, operations, context.version == 0)
            }));
        }
        Some(requested) => {
            let deadline = crate::broker::auto_create_deadline();
            for entry in requested {
                let topic = match entry.name {
                    Some(name) => {
                        by_name(broker, context, name.0.as_str(), allow_create, deadline).await
                    }
                    None => by_id(&broker.image(), context, entry.topic_id),
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
        .with_brokers(brokers(
            &image,
            &context.listener_name,
            broker.config.node_id,
        ))
        .with_cluster_id(Some(StrBytes::from_string(image.cluster_id.clone())))
        .with_controller_id(BrokerId(
            image.controller_for_clients(broker.config.node_id),
        ))
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
                && !partition.offline_replicas.contains(&node_id)
            {
                partition.offline_replicas.push(node_id);
            }
        }
    }
}

/// Unfenced brokers only (clients must not be sent to a fenced one), each at its endpoint
/// on `listener`, the one the request came through. A broker without that listener is
/// left out, as Kafka does (a client there could not reach it).
///
/// One exception, where Kafka lists none: when no broker would be listed, the answering
/// node `local` lists itself (it is answering, so it is reachable). A Metadata answer with
/// topics and no broker makes librdkafka (2.16) drop every broker it knows, bootstrap ones
/// included, until its rebootstrap 5 minutes later; a lone node gives that answer between
/// fencing itself after a stall longer than `broker.session.timeout.ms` and its next
/// heartbeat. Its partitions still show no live leader, so no client is sent to it for
/// them.
fn brokers(image: &MetadataImage, listener: &str, local: NodeId) -> Vec<MetadataResponseBroker> {
    let listed: Vec<_> = image
        .live_brokers()
        .filter_map(|broker| {
            let entry = broker_entry(broker, listener);
            if entry.is_none() {
                tracing::debug!(
                    node_id = broker.node_id,
                    listener,
                    "broker has no endpoint on this listener: left out of Metadata"
                );
            }
            entry
        })
        .collect();
    if !listed.is_empty() {
        return listed;
    }
    let itself = image.brokers.get(&local);
    itself
        .and_then(|broker| broker_entry(broker, listener))
        .into_iter()
        .collect()
}

/// `broker` at its endpoint on `listener`, if it has one.
fn broker_entry(broker: &BrokerRegistration, listener: &str) -> Option<MetadataResponseBroker> {
    let endpoint = broker.listener(listener)?;
    Some(
        MetadataResponseBroker::default()
            .with_node_id(BrokerId(broker.node_id))
            .with_host(StrBytes::from_string(endpoint.host.clone()))
            .with_port(i32::from(endpoint.port))
            .with_rack(broker.rack.clone().map(StrBytes::from_string)),
    )
}

type TopicResult = Result<MetadataResponseTopic, MetadataResponseTopic>;

fn error_topic(name: Option<&str>, id: Uuid, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(name.map(|name| TopicName(StrBytes::from_string(name.to_string()))))
        .with_topic_id(id)
        .with_error_code(error.code())
        .with_topic_authorized_operations(OPERATIONS_OMITTED)
}

async fn by_name(
    broker: &Broker,
    context: &RequestContext,
    name: &str,
    allow_create: bool,
    deadline: tokio::time::Instant,
) -> TopicResult {
    let filter_unavailable = context.version == 0;
    let image = broker.image();
    if let Some(topic) = image.topic(name) {
        return Ok(topic_entry(&image, topic, false, filter_unavailable));
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
    // Charged to the client permissively, as Kafka's Metadata path does: the topic is
    // always created, and later strict requests of the client see the debt.
    let client_id = context.client_id.as_deref().unwrap_or("");
    let mut quota = crate::client_quota::MutationQuota::new(
        &broker.client_quotas,
        crate::client_quota::ANONYMOUS_USER,
        client_id,
        false,
    );
    // Kafka 4 (AutoTopicCreationManager, KRaft) answers UNKNOWN_TOPIC_OR_PARTITION while
    // the creation it forwarded is under way: the client asks again, and no request waits
    // on a quorum that may be gone.
    match broker
        .create_in_background(&new, &mut quota, deadline)
        .await
    {
        Ok(()) => {}
        Err(crate::controller::ControllerError::Unavailable(reason)) => {
            tracing::debug!(topic = name, %reason, "auto-created topic not ready");
            return Err(error_topic(
                Some(name),
                Uuid::nil(),
                ResponseError::UnknownTopicOrPartition,
            ));
        }
        Err(error) => {
            return Err(error_topic(
                Some(name),
                Uuid::nil(),
                controller_error(&error),
            ));
        }
    }
    let image = broker.image();
    match image.topic(name) {
        Some(topic) => Ok(topic_entry(&image, topic, false, filter_unavailable)),
        None => Err(error_topic(
            Some(name),
            Uuid::nil(),
            ResponseError::LeaderNotAvailable,
        )),
    }
}

fn by_id(image: &MetadataImage, context: &RequestContext, id: Uuid) -> TopicResult {
    match image.topic_by_id(&id) {
        Some(topic) => Ok(topic_entry(image, topic, false, context.version == 0)),
        None => Err(error_topic(None, id, ResponseError::UnknownTopicId)),
    }
}

/// `filter_unavailable` (Metadata v0): replica and ISR lists name only live brokers, and a
/// partition missing some answers REPLICA_NOT_AVAILABLE, as Kafka does for v0.
fn topic_entry(
    image: &MetadataImage,
    topic: &TopicImage,
    include_operations: bool,
    filter_unavailable: bool,
) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(index, partition)| {
            partition_entry(image, index as i32, partition, filter_unavailable)
        })
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

/// The live brokers among `nodes`, in order.
fn live_ids(image: &MetadataImage, nodes: &[i32]) -> Vec<BrokerId> {
    nodes
        .iter()
        .copied()
        .filter(|&id| image.is_broker_live(id))
        .map(BrokerId)
        .collect()
}

/// Replicas on brokers that are fenced or not registered (Kafka's offline replicas).
fn offline_ids(image: &MetadataImage, partition: &PartitionImage) -> Vec<BrokerId> {
    partition
        .replicas
        .iter()
        .copied()
        .filter(|&id| !image.is_broker_live(id))
        .map(BrokerId)
        .collect()
}

/// The partition's leader if it is a live broker; NO_LEADER otherwise.
fn live_leader(image: &MetadataImage, partition: &PartitionImage) -> NodeId {
    if partition.leader != NO_LEADER && image.is_broker_live(partition.leader) {
        partition.leader
    } else {
        NO_LEADER
    }
}

fn partition_entry(
    image: &MetadataImage,
    index: i32,
    partition: &PartitionImage,
    filter_unavailable: bool,
) -> MetadataResponsePartition {
    let leader = live_leader(image, partition);
    let (replicas, isr) = if filter_unavailable {
        (
            live_ids(image, &partition.replicas),
            live_ids(image, &partition.isr),
        )
    } else {
        (ids(&partition.replicas), ids(&partition.isr))
    };
    let error = if leader == NO_LEADER {
        ResponseError::LeaderNotAvailable.code()
    } else if replicas.len() < partition.replicas.len() || isr.len() < partition.isr.len() {
        ResponseError::ReplicaNotAvailable.code()
    } else {
        0
    };
    MetadataResponsePartition::default()
        .with_error_code(error)
        .with_partition_index(index)
        .with_leader_id(BrokerId(leader))
        .with_leader_epoch(partition.leader_epoch)
        .with_replica_nodes(replicas)
        .with_isr_nodes(isr)
        .with_offline_replicas(offline_ids(image, partition))
}

/// DescribeTopicPartitions (KIP-966): topics sorted by name, paged by partition count.
pub async fn describe_topic_partitions(
    broker: &Broker,
    _context: &RequestContext,
    request: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    describe_page(&broker.image(), &request)
}

/// Kafka's `max.request.partition.size.limit` default: the most partitions one
/// DescribeTopicPartitions response carries, whatever the client asks for.
const DESCRIBE_PARTITIONS_MAX: i32 = 2000;

/// One page of DescribeTopicPartitions, as Kafka 4.x's handler and metadata cache build
/// it. The cursor is client input: a partition index past the end of its topic answers
/// that topic with no partitions (not an error), a negative one or a cursor topic missing
/// from a non-empty topic list is INVALID_REQUEST for the whole request.
fn describe_page(
    image: &MetadataImage,
    request: &DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let fetch_all = request.topics.is_empty();
    let cursor = request
        .cursor
        .as_ref()
        .map(|cursor| (cursor.topic_name.0.as_str(), cursor.partition_index));
    let start_topic = cursor.map_or("", |(name, _)| name);
    let mut names: Vec<&str> = if fetch_all {
        image.topics.keys().map(String::as_str).collect()
    } else {
        request
            .topics
            .iter()
            .map(|topic| topic.name.0.as_str())
            .collect()
    };
    names.retain(|name| *name >= start_topic);
    names.sort_unstable();
    names.dedup();
    let cursor_valid = match cursor {
        None => true,
        Some((name, index)) => index >= 0 && (fetch_all || names.contains(&name)),
    };
    if !cursor_valid {
        return invalid_request(request);
    }
    let mut budget = request
        .response_partition_limit
        .clamp(1, DESCRIBE_PARTITIONS_MAX) as usize;
    let mut response = DescribeTopicPartitionsResponse::default();
    for name in names {
        if budget == 0 {
            // The previous topic filled the page exactly: resume at this one.
            response.next_cursor = Some(cursor_at(name, 0));
            break;
        }
        let Some(topic) = image.topic(name) else {
            response.topics.push(unknown_topic(name));
            continue;
        };
        let first = match cursor {
            Some((cursor_name, index)) if cursor_name == name => index as usize,
            _ => 0,
        };
        // A start past the end takes nothing: the topic is answered with no partitions.
        let first = first.min(topic.partitions.len());
        let take = budget.min(topic.partitions.len() - first);
        budget -= take;
        response
            .topics
            .push(describe_topic(image, topic, first, take));
        if first + take < topic.partitions.len() {
            response.next_cursor = Some(cursor_at(name, first + take));
            break;
        }
    }
    response
}

/// Kafka's error response for the whole request: every requested topic with the code.
fn invalid_request(request: &DescribeTopicPartitionsRequest) -> DescribeTopicPartitionsResponse {
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(Some(topic.name.clone()))
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_topic_authorized_operations(OPERATIONS_OMITTED)
        })
        .collect();
    DescribeTopicPartitionsResponse::default().with_topics(topics)
}

fn unknown_topic(name: &str) -> DescribeTopicPartitionsResponseTopic {
    // Kafka's `Topic.validate` rules; its metadata topic is a legal (unknown) name there.
    let error = match validate_topic_name(name) {
        Err(_) if name != METADATA_TOPIC => ResponseError::InvalidTopicException,
        _ => ResponseError::UnknownTopicOrPartition,
    };
    DescribeTopicPartitionsResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
        .with_error_code(error.code())
        .with_is_internal(is_internal_topic(name))
        .with_topic_authorized_operations(OPERATIONS_OMITTED)
}

fn cursor_at(name: &str, partition_index: usize) -> Cursor {
    Cursor::default()
        .with_topic_name(TopicName(StrBytes::from_string(name.to_string())))
        .with_partition_index(partition_index as i32)
}

/// As Kafka's DescribeTopicPartitions: a partition without a live leader has leader -1
/// (and, unlike Metadata, no error code); replicas on fenced or unknown brokers are offline.
fn describe_topic(
    image: &MetadataImage,
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
                .with_leader_id(BrokerId(live_leader(image, partition)))
                .with_leader_epoch(partition.leader_epoch)
                .with_replica_nodes(ids(&partition.replicas))
                .with_isr_nodes(ids(&partition.isr))
                .with_offline_replicas(offline_ids(image, partition))
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

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::describe_topic_partitions_request::{
        Cursor as RequestCursor, TopicRequest,
    };

    use super::*;

    fn image(topics: &[(&str, usize)]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for (name, count) in topics {
            let partition = PartitionImage {
                replicas: vec![1],
                isr: vec![1],
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
                adding_replicas: Vec::new(),
                removing_replicas: Vec::new(),
            };
            let topic = TopicImage {
                name: name.to_string(),
                id: Uuid::new_v4(),
                partitions: vec![partition; *count],
                configs: Default::default(),
            };
            image.topic_names.insert(topic.id, topic.name.clone());
            image.topics.insert(topic.name.clone(), topic);
        }
        image
    }

    fn request(
        topics: &[&str],
        limit: i32,
        cursor: Option<(&str, i32)>,
    ) -> DescribeTopicPartitionsRequest {
        DescribeTopicPartitionsRequest::default()
            .with_topics(
                topics
                    .iter()
                    .map(|name| {
                        TopicRequest::default()
                            .with_name(TopicName(StrBytes::from_string(name.to_string())))
                    })
                    .collect(),
            )
            .with_response_partition_limit(limit)
            .with_cursor(cursor.map(|(name, index)| {
                RequestCursor::default()
                    .with_topic_name(TopicName(StrBytes::from_string(name.to_string())))
                    .with_partition_index(index)
            }))
    }

    /// One topic of a response: name, error code, partition indexes.
    type TopicSummary = (String, i16, Vec<i32>);

    /// Every topic of the response, and the next cursor (topic name, partition).
    fn summary(
        response: &DescribeTopicPartitionsResponse,
    ) -> (Vec<TopicSummary>, Option<(String, i32)>) {
        let topics = response
            .topics
            .iter()
            .map(|topic| {
                let name = topic.name.as_ref().unwrap().0.to_string();
                let indexes = topic.partitions.iter().map(|p| p.partition_index).collect();
                (name, topic.error_code, indexes)
            })
            .collect();
        let cursor = response
            .next_cursor
            .as_ref()
            .map(|cursor| (cursor.topic_name.0.to_string(), cursor.partition_index));
        (topics, cursor)
    }

    #[test]
    fn a_cursor_past_the_last_partition_answers_the_topic_empty() {
        // Issue 6: `{__consumer_offsets, 100}` sliced past the end and panicked.
        let image = image(&[("__consumer_offsets", 3), ("t", 2)]);
        for topics in [&[][..], &["__consumer_offsets", "t"][..]] {
            let cursor = Some(("__consumer_offsets", 100));
            let response = describe_page(&image, &request(topics, 2000, cursor));
            let expected = vec![
                ("__consumer_offsets".to_string(), 0, vec![]),
                ("t".to_string(), 0, vec![0, 1]),
            ];
            assert_eq!(summary(&response), (expected, None), "topics {topics:?}");
        }
        let at_end = describe_page(&image, &request(&["t"], 2000, Some(("t", 2))));
        assert_eq!(summary(&at_end), (vec![("t".into(), 0, vec![])], None));
        let far = describe_page(&image, &request(&["t"], 2000, Some(("t", i32::MAX))));
        assert_eq!(summary(&far), (vec![("t".into(), 0, vec![])], None));
    }

    #[test]
    fn pages_resume_where_the_cursor_points() {
        let image = image(&[("a", 3), ("b", 2), ("c", 1)]);
        let first = describe_page(&image, &request(&[], 2, None));
        assert_eq!(
            summary(&first),
            (vec![("a".into(), 0, vec![0, 1])], Some(("a".into(), 2)))
        );
        let second = describe_page(&image, &request(&[], 3, Some(("a", 2))));
        assert_eq!(
            summary(&second),
            (
                vec![("a".into(), 0, vec![2]), ("b".into(), 0, vec![0, 1])],
                Some(("c".into(), 0))
            )
        );
    }

    #[test]
    fn a_negative_or_foreign_cursor_is_an_invalid_request() {
        let image = image(&[("a", 1), ("b", 1)]);
        let negative = describe_page(&image, &request(&["a"], 10, Some(("a", -1))));
        assert_eq!(summary(&negative), (vec![("a".into(), 42, vec![])], None));
        let foreign = describe_page(&image, &request(&["b"], 10, Some(("a", 0))));
        assert_eq!(summary(&foreign), (vec![("b".into(), 42, vec![])], None));
        let all_negative = describe_page(&image, &request(&[], 10, Some(("a", -5))));
        assert_eq!(summary(&all_negative), (vec![], None));
    }

    #[test]
    fn unknown_and_illegal_names_get_their_own_codes() {
        let image = image(&[("a", 1)]);
        let response = describe_page(&image, &request(&["a", "missing", "bad/name"], 10, None));
        let expected = vec![
            ("a".to_string(), 0, vec![0]),
            ("bad/name".to_string(), 17, vec![]),
            ("missing".to_string(), 3, vec![]),
        ];
        assert_eq!(summary(&response), (expected, None));
    }

    /// Broker 1 live, broker 2 fenced, broker 3 never registered; topic `t` holds `partition`.
    #[test]
    fn metadata_lists_each_broker_at_its_endpoint_on_the_request_listener() {
        use crate::controller::commands::register_live_broker_on;
        let mut image = MetadataImage::default();
        let both = [
            ("PLAINTEXT", "kafka1", 9092),
            ("EXTERNAL", "localhost", 19092),
        ];
        register_live_broker_on(&mut image, 1, &both);
        register_live_broker_on(&mut image, 2, &[("PLAINTEXT", "kafka2", 9092)]);
        let listed = |listener| -> Vec<(i32, String, i32)> {
            brokers(&image, listener, 1)
                .into_iter()
                .map(|b| (b.node_id.0, b.host.to_string(), b.port))
                .collect()
        };
        assert_eq!(
            listed("PLAINTEXT"),
            [(1, "kafka1".into(), 9092), (2, "kafka2".into(), 9092)]
        );
        // Broker 2 has no EXTERNAL listener: a client there could not reach it.
        assert_eq!(listed("EXTERNAL"), [(1, "localhost".into(), 19092)]);
        assert!(listed("NONE").is_empty());
    }

    /// Every broker fenced: the answering node lists itself (if it is registered with an
    /// endpoint on the listener), never no broker at all.
    #[test]
    fn with_every_broker_fenced_the_answering_node_lists_itself() {
        use crate::controller::commands::{
            fence_broker_for_tests, register_live_broker, register_live_broker_on,
        };
        let mut image = MetadataImage::default();
        register_live_broker(&mut image, 1);
        register_live_broker_on(&mut image, 2, &[("EXTERNAL", "localhost", 19092)]);
        fence_broker_for_tests(&mut image, 1);
        fence_broker_for_tests(&mut image, 2);
        let listed = |listener, local| -> Vec<i32> {
            (brokers(&image, listener, local).iter())
                .map(|b| b.node_id.0)
                .collect()
        };
        assert_eq!(listed("PLAINTEXT", 1), [1]);
        assert_eq!(listed("EXTERNAL", 2), [2]);
        assert!(
            listed("EXTERNAL", 1).is_empty(),
            "no endpoint there to list"
        );
        assert!(listed("PLAINTEXT", 3).is_empty(), "not registered");
    }

    fn cluster_image(partition: PartitionImage) -> MetadataImage {
        use crate::controller::commands::{fence_broker_for_tests, register_live_broker};
        let mut image = MetadataImage::default();
        register_live_broker(&mut image, 1);
        register_live_broker(&mut image, 2);
        fence_broker_for_tests(&mut image, 2);
        let topic = TopicImage {
            name: "t".into(),
            id: Uuid::from_u128(5),
            partitions: vec![partition],
            configs: Default::default(),
        };
        image.topic_names.insert(topic.id, topic.name.clone());
        image.topics.insert(topic.name.clone(), topic);
        image
    }

    fn summary_of(entry: &MetadataResponsePartition) -> (i16, i32, Vec<i32>, Vec<i32>, Vec<i32>) {
        let ids = |list: &[BrokerId]| list.iter().map(|id| id.0).collect::<Vec<_>>();
        (
            entry.error_code,
            entry.leader_id.0,
            ids(&entry.replica_nodes),
            ids(&entry.isr_nodes),
            ids(&entry.offline_replicas),
        )
    }

    #[test]
    fn metadata_lists_live_brokers_and_marks_fenced_or_unknown_replicas_offline() {
        let partition = PartitionImage {
            replicas: vec![1, 2, 3],
            isr: vec![1, 2],
            leader: 1,
            leader_epoch: 4,
            partition_epoch: 0,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        };
        let image = cluster_image(partition.clone());
        let listed = |local| -> Vec<i32> {
            (brokers(&image, "PLAINTEXT", local).iter())
                .map(|b| b.node_id.0)
                .collect()
        };
        assert_eq!(listed(1), [1]);
        assert_eq!(
            listed(2),
            [1],
            "a fenced node lists the live ones, not itself"
        );
        let entry = partition_entry(&image, 0, &partition, false);
        assert_eq!(
            summary_of(&entry),
            (0, 1, vec![1, 2, 3], vec![1, 2], vec![2, 3])
        );
        assert_eq!(entry.leader_epoch, 4);
        // v0 lists only live replicas and says some are missing.
        let v0 = partition_entry(&image, 0, &partition, true);
        let missing = ResponseError::ReplicaNotAvailable.code();
        assert_eq!(summary_of(&v0), (missing, 1, vec![1], vec![1], vec![2, 3]));
    }

    #[test]
    fn a_partition_without_a_live_leader_answers_leader_not_available() {
        let partition = PartitionImage {
            replicas: vec![2, 1],
            isr: vec![2],
            leader: NO_LEADER,
            leader_epoch: 7,
            partition_epoch: 0,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        };
        let image = cluster_image(partition.clone());
        let entry = partition_entry(&image, 0, &partition, false);
        let unavailable = ResponseError::LeaderNotAvailable.code();
        assert_eq!(
            summary_of(&entry),
            (unavailable, -1, vec![2, 1], vec![2], vec![2])
        );
        assert_eq!(entry.leader_epoch, 7);
        // DescribeTopicPartitions: leader -1 and the offline replica, no error (as Kafka).
        let response = describe_page(&image, &request(&["t"], 10, None));
        let described = &response.topics[0].partitions[0];
        assert_eq!(described.error_code, 0);
        assert_eq!(described.leader_id.0, -1);
        assert_eq!(described.offline_replicas, [BrokerId(2)]);
    }
}
