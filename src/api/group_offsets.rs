//! FindCoordinator, OffsetCommit and OffsetFetch: where a group lives and its committed
//! offsets. The offsets topic is created on the first FindCoordinator, as Kafka does.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, FindCoordinatorResponse, GroupId, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use super::errors::{coordinator_error, group_error, internal_topic_error};
use crate::broker::Broker;
use crate::group::records::OffsetValue;
use crate::group::{CoordinatorError, GroupState, OFFSETS_TOPIC, OffsetCommit};
use crate::replica::Partition;
use crate::types::now_ms;

const KEY_TYPE_GROUP: i8 = 0;

pub async fn find_coordinator(
    broker: &Broker,
    context: &RequestContext,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let keys: Vec<StrBytes> = if context.version >= 4 {
        request.coordinator_keys.clone()
    } else {
        vec![request.key.clone()]
    };
    let mut coordinators = Vec::with_capacity(keys.len());
    let deadline = crate::broker::auto_create_deadline();
    for key in keys {
        let found = match request.key_type {
            KEY_TYPE_GROUP => locate(broker, &key, &context.listener_name, deadline).await,
            super::txn_coordinator::KEY_TYPE_TRANSACTION => {
                super::txn_coordinator::locate(broker, &key, &context.listener_name, deadline).await
            }
            // Kafka: "Unknown coordinator type".
            _ => Err(ResponseError::InvalidRequest),
        };
        coordinators.push(coordinator_entry(key, found));
    }
    if context.version >= 4 {
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let single = coordinators.remove(0);
    FindCoordinatorResponse::default()
        .with_error_code(single.error_code)
        .with_error_message(single.error_message)
        .with_node_id(single.node_id)
        .with_host(single.host)
        .with_port(single.port)
}

fn coordinator_entry(
    key: StrBytes,
    found: Result<(i32, String, i32), ResponseError>,
) -> Coordinator {
    match found {
        Ok((node_id, host, port)) => Coordinator::default()
            .with_key(key)
            .with_node_id(BrokerId(node_id))
            .with_host(StrBytes::from_string(host))
            .with_port(port)
            .with_error_message(None),
        Err(error) => Coordinator::default()
            .with_key(key)
            .with_node_id(BrokerId(-1))
            .with_port(-1)
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(error.to_string()))),
    }
}

/// The node leading the group's offsets partition, creating the offsets topic if needed,
/// at its endpoint on `listener` (the request's): COORDINATOR_NOT_AVAILABLE when it has
/// none there, as Kafka answers.
async fn locate(
    broker: &Broker,
    group: &str,
    listener: &str,
    deadline: tokio::time::Instant,
) -> Result<(i32, String, i32), ResponseError> {
    if group.is_empty() {
        return Err(ResponseError::InvalidGroupId);
    }
    broker
        .ensure_offsets_topic(deadline)
        .await
        .map_err(|error| internal_topic_error(OFFSETS_TOPIC, &error))?;
    let partition = broker.groups.partition_for(group);
    coordinator_endpoint(&broker.image(), OFFSETS_TOPIC, partition, listener)
}

/// The leader of a coordinator's internal partition, as (node id, host, port) of its
/// endpoint on `listener`: COORDINATOR_NOT_AVAILABLE without a leader or an endpoint there.
pub(super) fn coordinator_endpoint(
    image: &crate::controller::MetadataImage,
    topic: &str,
    partition: i32,
    listener: &str,
) -> Result<(i32, String, i32), ResponseError> {
    let leader = image
        .partition(topic, partition)
        .map(|p| p.leader)
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    let node = image
        .brokers
        .get(&leader)
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    let endpoint = node
        .listener(listener)
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    Ok((
        node.node_id,
        endpoint.host.clone(),
        i32::from(endpoint.port),
    ))
}

/// The offsets partition this broker coordinates `group` through, if it does.
pub(super) fn coordinator_partition(
    broker: &Broker,
    group: &str,
) -> Result<Arc<Partition>, CoordinatorError> {
    let index = broker.groups.partition_for(group);
    let image = broker.image();
    match image.partition(OFFSETS_TOPIC, index) {
        Some(p) if p.leader == broker.config.node_id => {}
        _ => return Err(CoordinatorError::NotCoordinator),
    }
    let partition = broker
        .replicas
        .get(OFFSETS_TOPIC, index)
        .ok_or(CoordinatorError::NotCoordinator)?;
    broker.groups.check_serving(index, &partition)?;
    Ok(partition)
}

/// OffsetCommit v9 (KIP-848) carries a consumer group member's epoch.
const MEMBER_EPOCH_VERSION_MIN: i16 = 9;

pub async fn offset_commit(
    broker: &Broker,
    context: &RequestContext,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let group = request.group_id.0.to_string();
    let image = broker.image();
    let now = now_ms();
    let log = if group.is_empty() {
        Err(ResponseError::InvalidGroupId)
    } else {
        coordinator_partition(broker, &group).map_err(|e| coordinator_error(&e))
    };
    let group_error = match &log {
        Err(error) => Some(*error),
        Ok(_) => membership_error(broker, &group, &request, context.version).await,
    };
    // Per partition: a topic-partition that does not exist is refused on its own.
    let mut commits = Vec::new();
    let mut slots = Vec::new();
    for topic in &request.topics {
        for partition in &topic.partitions {
            let exists = image
                .partition(topic.name.0.as_str(), partition.partition_index)
                .is_some();
            let slot = match (group_error, exists) {
                (Some(error), _) => Err(error),
                (None, false) => Err(ResponseError::UnknownTopicOrPartition),
                (None, true) => {
                    commits.push(OffsetCommit {
                        topic: topic.name.0.to_string(),
                        partition: partition.partition_index,
                        value: OffsetValue {
                            offset: partition.committed_offset,
                            leader_epoch: partition.committed_leader_epoch,
                            metadata: partition
                                .committed_metadata
                                .as_ref()
                                .map(|m| m.to_string())
                                .unwrap_or_default(),
                            commit_timestamp_ms: now,
                        },
                    });
                    Ok(commits.len() - 1)
                }
            };
            slots.push(slot);
        }
    }
    // Commits are only collected when the group resolved to a partition (`log` is Ok).
    let results = match &log {
        Ok(log) if !commits.is_empty() => {
            broker
                .groups
                .commit_offsets(log, &group, commits, now)
                .await
        }
        _ => Vec::new(),
    };
    let mut slots = slots.into_iter();
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| {
                    let code = match slots.next().expect("one slot per partition") {
                        Err(error) => error.code(),
                        Ok(index) => match &results.get(index) {
                            Some(Ok(())) => 0,
                            Some(Err(error)) => coordinator_error(error).code(),
                            None => ResponseError::UnknownServerError.code(),
                        },
                    };
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(partition.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// Kafka's commit rules: members of a managed group commit with their generation (a
/// consumer group's members with their member epoch); a commit with a negative
/// generation to a group without members is a "simple" commit.
async fn membership_error(
    broker: &Broker,
    group: &str,
    request: &OffsetCommitRequest,
    version: i16,
) -> Option<ResponseError> {
    let generation = request.generation_id_or_member_epoch;
    let member = request.member_id.as_str();
    let instance = request.group_instance_id.as_ref().map(|id| id.as_str());
    broker
        .groups
        .registry
        .with_either(group, |classic, consumer| match (classic, consumer) {
            (_, Some(c)) => c
                .validate_offset_commit(member, instance, generation, Some(version))
                .err()
                .map(|e| group_error(&e)),
            (Some(g), None) if g.state() != GroupState::Dead => g
                .validate_offset_commit(member, instance, generation)
                .err()
                .map(|e| group_error(&e)),
            _ if generation < 0 => None,
            // A KIP-848 member whose group this coordinator does not know (its first write
            // never committed, or it was deleted) must rejoin, which UNKNOWN_MEMBER_ID
            // makes it do; ILLEGAL_GENERATION would send librdkafka down its classic path,
            // into a join Kafka refuses. Kafka answers GROUP_ID_NOT_FOUND here.
            _ if version >= MEMBER_EPOCH_VERSION_MIN && !member.is_empty() => {
                Some(ResponseError::UnknownMemberId)
            }
            _ => Some(ResponseError::IllegalGeneration),
        })
        .await
}

/// OffsetFetch v9+ from a consumer group's member: it must be the member at its current
/// epoch (Kafka's `validateOffsetFetch`); other groups are not checked.
async fn fetch_member_error(
    broker: &Broker,
    group: &OffsetFetchRequestGroup,
) -> Option<ResponseError> {
    let member = group.member_id.as_ref().map(|id| id.as_str());
    let epoch = group.member_epoch;
    // What admin clients and classic members send: nothing to check, and no reason to
    // wait for the group's lock (a classic group may be in the middle of a write).
    if member.is_none() && epoch < 0 {
        return None;
    }
    broker
        .groups
        .registry
        .with_consumer_group(group.group_id.0.as_str(), |found| {
            let found = found?;
            let result = found.validate_offset_fetch(member, epoch);
            result.err().map(|e| group_error(&e))
        })
        .await
}

/// One group's wanted partitions: `None` means every committed one.
type Wanted = Option<Vec<(String, i32)>>;

/// (topic, partition) pairs of a request's topic list, in request order.
fn flatten<'a>(topics: impl Iterator<Item = (&'a TopicName, &'a [i32])>) -> Vec<(String, i32)> {
    topics
        .flat_map(|(name, partitions)| partitions.iter().map(move |p| (name.0.to_string(), *p)))
        .collect()
}

pub async fn offset_fetch(
    broker: &Broker,
    context: &RequestContext,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    if context.version >= 8 {
        let mut groups = Vec::with_capacity(request.groups.len());
        for group in &request.groups {
            let refused = if context.version >= 9 {
                fetch_member_error(broker, group).await
            } else {
                None
            };
            if let Some(error) = refused {
                let entry = OffsetFetchResponseGroup::default()
                    .with_group_id(group.group_id.clone())
                    .with_error_code(error.code());
                groups.push(entry);
                continue;
            }
            let wanted: Wanted = group.topics.as_ref().map(|topics| {
                flatten(
                    topics
                        .iter()
                        .map(|t| (&t.name, t.partition_indexes.as_slice())),
                )
            });
            groups.push(group_entry(
                broker,
                &group.group_id,
                wanted,
                request.require_stable,
            ));
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let wanted: Wanted = request.topics.as_ref().map(|topics| {
        flatten(
            topics
                .iter()
                .map(|t| (&t.name, t.partition_indexes.as_slice())),
        )
    });
    // require_stable exists from v7 on; decoding leaves it false before.
    let entry = group_entry(broker, &request.group_id, wanted, request.require_stable);
    let topics = entry
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .into_iter()
                .map(|p| {
                    let partition = OffsetFetchResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_committed_offset(p.committed_offset)
                        .with_metadata(p.metadata)
                        .with_error_code(if context.version < 2 {
                            entry.error_code
                        } else {
                            p.error_code
                        });
                    if context.version >= 5 {
                        partition.with_committed_leader_epoch(p.committed_leader_epoch)
                    } else {
                        partition
                    }
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    let response = OffsetFetchResponse::default().with_topics(topics);
    if context.version >= 2 {
        response.with_error_code(entry.error_code)
    } else {
        response
    }
}

/// One group's answer. With `require_stable` (v7+), a partition an open transaction
/// holds an offset of answers UNSTABLE_OFFSET_COMMIT (offset -1), as Kafka does; the
/// consumer retries until the transaction ended.
fn group_entry(
    broker: &Broker,
    group_id: &GroupId,
    wanted: Wanted,
    require_stable: bool,
) -> OffsetFetchResponseGroup {
    let group = group_id.0.as_str();
    let base = OffsetFetchResponseGroup::default().with_group_id(group_id.clone());
    let found = coordinator_partition(broker, group).and_then(|_| {
        broker
            .groups
            .fetch_offsets_stable(group, wanted.as_deref(), require_stable)
    });
    let found = match found {
        Ok(found) => found,
        Err(error) => return base.with_error_code(coordinator_error(&error).code()),
    };
    let mut by_topic: BTreeMap<String, Vec<OffsetFetchResponsePartitions>> = BTreeMap::new();
    let mut order = Vec::new();
    for ((topic, partition), value) in found {
        let (offset, epoch, metadata, code) = match value {
            Ok(Some(v)) => (v.offset, v.leader_epoch, v.metadata, 0),
            Ok(None) => (-1, -1, String::new(), 0),
            Err(error) => (-1, -1, String::new(), coordinator_error(&error).code()),
        };
        if !by_topic.contains_key(&topic) {
            order.push(topic.clone());
        }
        by_topic.entry(topic).or_default().push(
            OffsetFetchResponsePartitions::default()
                .with_partition_index(partition)
                .with_committed_offset(offset)
                .with_committed_leader_epoch(epoch)
                .with_metadata(Some(StrBytes::from_string(metadata)))
                .with_error_code(code),
        );
    }
    let topics = order
        .into_iter()
        .map(|topic| {
            let partitions = by_topic.remove(&topic).unwrap_or_default();
            OffsetFetchResponseTopics::default()
                .with_name(TopicName(StrBytes::from_string(topic)))
                .with_partitions(partitions)
        })
        .collect();
    base.with_topics(topics)
}
