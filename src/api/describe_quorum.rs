//! DescribeQuorum (KIP-595, v1 KIP-836, v2 KIP-853): the metadata quorum's leader, epoch,
//! high watermark and replica progress, for `kafka-metadata-quorum describe`.
//!
//! Kafka 4.0 brokers forward this request to the active controller, whose Raft client
//! answers it (`KafkaRaftClient.handleDescribeQuorumRequest`). Here the controller's
//! [`QuorumStatus`] is the leader's view (the quorum forwards to the Raft leader), so the
//! client listener answers it directly. The answers follow Kafka's:
//! - a request that is not exactly one topic `__cluster_metadata` with one partition 0:
//!   UNKNOWN_TOPIC_OR_PARTITION on every partition it named;
//! - no leader known: NOT_LEADER_OR_FOLLOWER on `__cluster_metadata-0`;
//! - the quorum cannot be asked: a top-level error.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{
    BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use super::errors::controller_error;
use crate::broker::Broker;
use crate::controller::quorum_status::{
    CLUSTER_METADATA_PARTITION, CLUSTER_METADATA_TOPIC, NO_LEADER,
};
use crate::controller::{ControllerError, QuorumNode, QuorumStatus, ReplicaProgress};

/// Version 2 added directory ids, the nodes list and error messages.
const NODES_VERSION_MIN: i16 = 2;

/// Kafka's messages for the two partition errors (`Errors.message()`), which v2 carries.
const UNKNOWN_TOPIC_OR_PARTITION_MESSAGE: &str = "This server does not host this topic-partition.";
const NOT_LEADER_OR_FOLLOWER_MESSAGE: &str = "For requests intended only for the leader, this \
    error indicates that the broker is not the current leader. For requests intended for any \
    replica, this error indicates that the broker is not a replica of the topic partition.";

pub async fn describe_quorum(
    broker: &Broker,
    context: &RequestContext,
    request: DescribeQuorumRequest,
) -> DescribeQuorumResponse {
    let version = context.version;
    if !names_metadata_partition(&request) {
        return unknown_partitions(&request, version);
    }
    match broker.controller.quorum_status().await {
        Err(error) => quorum_error(&error, version),
        Ok(status) if !status.has_leader() => not_leader(version),
        Ok(status) => describe(&status, version),
    }
}

/// The quorum could not be asked: a top-level error, with the cause as its message (v2).
fn quorum_error(error: &ControllerError, version: i16) -> DescribeQuorumResponse {
    let message = (version >= NODES_VERSION_MIN).then(|| StrBytes::from_string(error.to_string()));
    DescribeQuorumResponse::default()
        .with_error_code(controller_error(error).code())
        .with_error_message(message)
}

/// Kafka's check: exactly one topic, `__cluster_metadata`, with exactly one partition, 0.
fn names_metadata_partition(request: &DescribeQuorumRequest) -> bool {
    match request.topics.as_slice() {
        [topic] => {
            topic.topic_name.0.as_str() == CLUSTER_METADATA_TOPIC
                && matches!(topic.partitions.as_slice(),
                    [partition] if partition.partition_index == CLUSTER_METADATA_PARTITION)
        }
        _ => false,
    }
}

/// UNKNOWN_TOPIC_OR_PARTITION on every partition the request named, echoing its topics.
fn unknown_partitions(request: &DescribeQuorumRequest, version: i16) -> DescribeQuorumResponse {
    let error = (
        ResponseError::UnknownTopicOrPartition,
        UNKNOWN_TOPIC_OR_PARTITION_MESSAGE,
    );
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| partition_error(partition.partition_index, error, version))
                .collect();
            TopicData::default()
                .with_topic_name(topic.topic_name.clone())
                .with_partitions(partitions)
        })
        .collect();
    DescribeQuorumResponse::default().with_topics(topics)
}

fn not_leader(version: i16) -> DescribeQuorumResponse {
    let error = (
        ResponseError::NotLeaderOrFollower,
        NOT_LEADER_OR_FOLLOWER_MESSAGE,
    );
    let partition = partition_error(CLUSTER_METADATA_PARTITION, error, version);
    DescribeQuorumResponse::default().with_topics(vec![metadata_topic(partition)])
}

/// A partition carrying only an error, and Kafka's default message for it. The leader is
/// -1, the schema's "leader unknown" (Kafka's own error responses leave it 0; no client
/// reads it beside an error).
fn partition_error(
    index: i32,
    (error, message): (ResponseError, &'static str),
    version: i16,
) -> PartitionData {
    let message = (version >= NODES_VERSION_MIN).then(|| StrBytes::from_static_str(message));
    PartitionData::default()
        .with_partition_index(index)
        .with_error_code(error.code())
        .with_error_message(message)
        .with_leader_id(BrokerId(NO_LEADER))
}

fn metadata_topic(partition: PartitionData) -> TopicData {
    TopicData::default()
        .with_topic_name(TopicName(StrBytes::from_static_str(CLUSTER_METADATA_TOPIC)))
        .with_partitions(vec![partition])
}

/// The full answer for `version`: fields a version does not have stay at their defaults,
/// since the encoder refuses a set field the version cannot carry.
fn describe(status: &QuorumStatus, version: i16) -> DescribeQuorumResponse {
    let replicas = |list: &[ReplicaProgress]| {
        list.iter()
            .map(|progress| replica_state(progress, version))
            .collect::<Vec<_>>()
    };
    let partition = PartitionData::default()
        .with_partition_index(CLUSTER_METADATA_PARTITION)
        .with_leader_id(BrokerId(status.leader_id))
        .with_leader_epoch(status.leader_epoch)
        .with_high_watermark(status.high_watermark)
        .with_current_voters(replicas(&status.voters))
        .with_observers(replicas(&status.observers));
    let response = DescribeQuorumResponse::default().with_topics(vec![metadata_topic(partition)]);
    if version < NODES_VERSION_MIN {
        return response;
    }
    response.with_nodes(nodes(&status.nodes))
}

fn replica_state(progress: &ReplicaProgress, version: i16) -> ReplicaState {
    let state = ReplicaState::default()
        .with_replica_id(BrokerId(progress.replica_id))
        .with_log_end_offset(progress.log_end_offset)
        .with_last_fetch_timestamp(progress.last_fetch_timestamp)
        .with_last_caught_up_timestamp(progress.last_caught_up_timestamp);
    if version < NODES_VERSION_MIN {
        return state;
    }
    state.with_replica_directory_id(progress.replica_directory_id)
}

/// The v2 nodes list. Both lists are maps in Kafka's schema (keyed by node id, and by
/// listener name) and the Java admin client collects them into maps, failing on a
/// duplicate; `RaftVoterEndpoint` also insists on an upper-case, non-empty name (Kafka
/// normalises listener names to upper case). So: the first entry per key, names in upper
/// case, nameless listeners left out.
fn nodes(nodes: &[QuorumNode]) -> Vec<Node> {
    let mut seen = std::collections::BTreeSet::new();
    nodes
        .iter()
        .filter(|node| seen.insert(node.node_id))
        .map(node)
        .collect()
}

fn node(node: &QuorumNode) -> Node {
    let mut names = std::collections::BTreeSet::new();
    let listeners = node
        .listeners
        .iter()
        .map(|(name, host, port)| (name.to_ascii_uppercase(), host, port))
        .filter(|(name, _, _)| !name.is_empty() && names.insert(name.clone()))
        .map(|(name, host, port)| {
            Listener::default()
                .with_name(StrBytes::from_string(name))
                .with_host(StrBytes::from_string(host.clone()))
                .with_port(*port)
        })
        .collect();
    Node::default()
        .with_node_id(BrokerId(node.node_id))
        .with_listeners(listeners)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::messages::describe_quorum_request;
    use kafka_protocol::protocol::{Decodable, Encodable};
    use uuid::Uuid;

    use super::*;

    fn status() -> QuorumStatus {
        let progress = |id, offset| ReplicaProgress {
            replica_id: id,
            replica_directory_id: Uuid::from_u128(id as u128),
            log_end_offset: offset,
            last_fetch_timestamp: 1_000 + i64::from(id),
            last_caught_up_timestamp: 2_000 + i64::from(id),
        };
        QuorumStatus {
            leader_id: 2,
            leader_epoch: 7,
            high_watermark: 40,
            voters: vec![progress(1, 39), progress(2, 41), progress(3, -1)],
            observers: vec![progress(4, 12)],
            nodes: vec![QuorumNode {
                node_id: 2,
                listeners: vec![("CONTROLLER".into(), "h2".into(), 9093)],
            }],
        }
    }

    fn request(topic: &str, partitions: &[i32]) -> DescribeQuorumRequest {
        let partitions = partitions
            .iter()
            .map(|&index| {
                describe_quorum_request::PartitionData::default().with_partition_index(index)
            })
            .collect();
        let topic = describe_quorum_request::TopicData::default()
            .with_topic_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(partitions);
        DescribeQuorumRequest::default().with_topics(vec![topic])
    }

    fn round_trip(response: &DescribeQuorumResponse, version: i16) -> DescribeQuorumResponse {
        let mut bytes = BytesMut::new();
        response.encode(&mut bytes, version).unwrap();
        assert_eq!(bytes.len(), response.compute_size(version).unwrap());
        DescribeQuorumResponse::decode(&mut bytes.freeze(), version).unwrap()
    }

    #[test]
    fn every_version_encodes_and_decodes_the_status() {
        for version in 0..=2 {
            let decoded = round_trip(&describe(&status(), version), version);
            assert_eq!(decoded.error_code, 0);
            assert_eq!(decoded.topics.len(), 1);
            assert_eq!(
                decoded.topics[0].topic_name.0.as_str(),
                "__cluster_metadata"
            );
            let partition = &decoded.topics[0].partitions[0];
            assert_eq!((partition.partition_index, partition.error_code), (0, 0));
            assert_eq!(partition.leader_id, BrokerId(2));
            assert_eq!((partition.leader_epoch, partition.high_watermark), (7, 40));
            let voter_ids: Vec<i32> = partition
                .current_voters
                .iter()
                .map(|v| v.replica_id.0)
                .collect();
            assert_eq!(voter_ids, [1, 2, 3]);
            assert_eq!(partition.current_voters[2].log_end_offset, -1);
            assert_eq!(partition.observers[0].replica_id, BrokerId(4));
            let voter = &partition.current_voters[0];
            if version >= 1 {
                assert_eq!(
                    (voter.last_fetch_timestamp, voter.last_caught_up_timestamp),
                    (1_001, 2_001)
                );
            }
            if version >= 2 {
                assert_eq!(voter.replica_directory_id, Uuid::from_u128(1));
                assert_eq!(decoded.nodes.len(), 1);
                let listener = &decoded.nodes[0].listeners[0];
                assert_eq!(listener.name.as_str(), "CONTROLLER");
                assert_eq!((listener.host.as_str(), listener.port), ("h2", 9093));
            } else {
                assert!(decoded.nodes.is_empty());
            }
        }
    }

    #[test]
    fn only_the_metadata_partition_is_described() {
        assert!(names_metadata_partition(&request(
            "__cluster_metadata",
            &[0]
        )));
        assert!(!names_metadata_partition(&request(
            "__cluster_metadata",
            &[1]
        )));
        assert!(!names_metadata_partition(&request(
            "__cluster_metadata",
            &[0, 0]
        )));
        assert!(!names_metadata_partition(&request("other", &[0])));
        assert!(!names_metadata_partition(&DescribeQuorumRequest::default()));
    }

    #[test]
    fn a_wrong_partition_gets_unknown_topic_or_partition_on_each_one_named() {
        for version in 0..=2 {
            let wrong = request("other", &[0, 5]);
            let decoded = round_trip(&unknown_partitions(&wrong, version), version);
            assert_eq!(decoded.error_code, 0);
            assert_eq!(decoded.topics[0].topic_name.0.as_str(), "other");
            let partitions = &decoded.topics[0].partitions;
            assert_eq!(partitions.len(), 2);
            assert_eq!(partitions[1].partition_index, 5);
            assert!(partitions.iter().all(|p| p.error_code == 3));
            if version >= 2 {
                let message = partitions[0].error_message.as_ref().map(|m| m.as_str());
                assert_eq!(
                    message,
                    Some("This server does not host this topic-partition.")
                );
            }
        }
    }

    #[test]
    fn no_leader_is_not_leader_or_follower_on_the_metadata_partition() {
        for version in 0..=2 {
            let decoded = round_trip(&not_leader(version), version);
            let partition = &decoded.topics[0].partitions[0];
            assert_eq!(
                decoded.topics[0].topic_name.0.as_str(),
                "__cluster_metadata"
            );
            assert_eq!(partition.error_code, 6);
            assert_eq!(partition.leader_id, BrokerId(-1));
        }
    }

    #[test]
    fn nodes_are_unique_with_upper_case_named_listeners() {
        let listener = |name: &str, port| (name.to_string(), "h".to_string(), port);
        let mut status = status();
        status.nodes = vec![
            QuorumNode {
                node_id: 1,
                listeners: vec![listener("controller", 1), listener("CONTROLLER", 2)],
            },
            QuorumNode {
                node_id: 1,
                listeners: vec![listener("OTHER", 3)],
            },
            QuorumNode {
                node_id: 2,
                listeners: vec![listener("", 4), listener("Sasl", 5)],
            },
        ];
        let decoded = round_trip(&describe(&status, 2), 2);
        let listed: Vec<(i32, Vec<(&str, u16)>)> = decoded
            .nodes
            .iter()
            .map(|node| {
                let listeners = node.listeners.iter();
                let pairs = listeners.map(|l| (l.name.as_str(), l.port)).collect();
                (node.node_id.0, pairs)
            })
            .collect();
        assert_eq!(
            listed,
            [(1, vec![("CONTROLLER", 1)]), (2, vec![("SASL", 5)])]
        );
    }

    #[test]
    fn a_quorum_that_cannot_answer_is_a_top_level_error() {
        for version in 0..=2 {
            let error = ControllerError::LogPoisoned("disk gone".into());
            let decoded = round_trip(&quorum_error(&error, version), version);
            assert_eq!(decoded.error_code, 56, "KAFKA_STORAGE_ERROR");
            assert!(decoded.topics.is_empty());
            if version >= 2 {
                let message = decoded.error_message.as_ref().map(|m| m.as_str());
                assert!(message.unwrap().contains("disk gone"));
            }
        }
    }
}
