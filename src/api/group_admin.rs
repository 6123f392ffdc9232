//! ListGroups, DescribeGroups, DeleteGroups and OffsetDelete. A group known only by its
//! committed offsets (manual assignment) is listed as an Empty group with no protocol
//! type, as Kafka lists it.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    GroupId, ListGroupsRequest, ListGroupsResponse, OffsetDeleteRequest, OffsetDeleteResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use super::errors::{coordinator_error, group_error};
use super::group_offsets::coordinator_partition;
use crate::broker::Broker;
use crate::group::registry::AnyGroup;
use crate::group::{GroupError, GroupState};
use crate::types::now_ms;

/// DescribeGroups v6 answers a missing group with an error and a message (KIP-1043).
const DESCRIBE_GROUPS_ERROR_MESSAGE_VERSION_MIN: i16 = 6;

/// DESCRIBE, DELETE and READ on a group: everything, without ACLs.
pub(super) const GROUP_OPERATIONS_ALL: i32 = (1 << 3) | (1 << 6) | (1 << 8);

/// One group as ListGroups shows it.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Listed {
    id: String,
    protocol_type: String,
    state: &'static str,
    /// KIP-848's group type: `classic` or `consumer`.
    group_type: &'static str,
}

/// Every group this broker coordinates: classic groups, KIP-848 consumer groups (protocol
/// type `consumer`, as Kafka lists them), and groups known only by their offsets.
async fn all_groups(broker: &Broker) -> Vec<Listed> {
    let listed = broker
        .groups
        .registry
        .map_all_groups(|id, group| match group {
            AnyGroup::Classic(group) => (group.state() != GroupState::Dead).then(|| Listed {
                id: id.to_string(),
                protocol_type: group.protocol_type().unwrap_or_default().to_string(),
                state: group.state().as_str(),
                group_type: "classic",
            }),
            AnyGroup::Consumer(group) => Some(Listed {
                id: id.to_string(),
                protocol_type: "consumer".to_string(),
                state: group.state().name(),
                group_type: "consumer",
            }),
        });
    let mut groups: Vec<Listed> = listed.await.into_iter().flatten().collect();
    // A set, not a scan of `groups` per id: that was quadratic in the number of groups.
    let known: std::collections::HashSet<String> = groups.iter().map(|g| g.id.clone()).collect();
    for id in broker.groups.offset_group_ids() {
        if !known.contains(&id) {
            groups.push(Listed {
                id,
                protocol_type: String::new(),
                state: GroupState::Empty.as_str(),
                group_type: "classic",
            });
        }
    }
    groups.retain(|group| coordinator_partition(broker, &group.id).is_ok());
    groups.sort();
    groups
}

pub async fn list_groups(
    broker: &Broker,
    context: &RequestContext,
    request: ListGroupsRequest,
) -> ListGroupsResponse {
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let types: Vec<String> = request
        .types_filter
        .iter()
        .map(|t| t.to_lowercase())
        .collect();
    let groups = all_groups(broker)
        .await
        .into_iter()
        .filter(|g| states.is_empty() || states.contains(&g.state.to_lowercase()))
        .filter(|g| types.is_empty() || types.iter().any(|t| t == g.group_type))
        .map(|group| {
            let listed = ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(group.id)))
                .with_protocol_type(StrBytes::from_string(group.protocol_type));
            let listed = if context.version >= 4 {
                listed.with_group_state(StrBytes::from_static_str(group.state))
            } else {
                listed
            };
            if context.version >= 5 {
                listed.with_group_type(StrBytes::from_static_str(group.group_type))
            } else {
                listed
            }
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub async fn describe_groups(
    broker: &Broker,
    context: &RequestContext,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(request.groups.len());
    for group_id in &request.groups {
        let described = describe_one(broker, group_id, context.version).await;
        groups.push(
            if context.version >= 3 && request.include_authorized_operations {
                described.with_authorized_operations(GROUP_OPERATIONS_ALL)
            } else {
                described
            },
        );
    }
    DescribeGroupsResponse::default().with_groups(groups)
}

async fn describe_one(broker: &Broker, group_id: &GroupId, version: i16) -> DescribedGroup {
    let id = group_id.0.as_str();
    let base = DescribedGroup::default().with_group_id(group_id.clone());
    if let Err(error) = coordinator_partition(broker, id) {
        return base.with_error_code(coordinator_error(&error).code());
    }
    let has_offsets = broker.groups.has_offsets(id);
    broker
        .groups
        .registry
        .with_either(id, |group, consumer| match group {
            _ if consumer.is_some() => not_classic(base, id, version),
            Some(group) if group.state() != GroupState::Dead => {
                let members = group
                    .members()
                    .into_iter()
                    .map(|member| {
                        let described = DescribedGroupMember::default()
                            .with_member_id(StrBytes::from_string(member.member_id))
                            .with_client_id(StrBytes::from_string(member.client_id))
                            .with_client_host(StrBytes::from_string(member.client_host))
                            .with_member_metadata(Bytes::from(member.metadata))
                            .with_member_assignment(Bytes::from(member.assignment));
                        if version >= 4 {
                            described.with_group_instance_id(
                                member.group_instance_id.map(StrBytes::from_string),
                            )
                        } else {
                            described
                        }
                    })
                    .collect();
                base.with_group_state(StrBytes::from_static_str(group.state().as_str()))
                    .with_protocol_type(StrBytes::from_string(
                        group.protocol_type().unwrap_or_default().to_string(),
                    ))
                    .with_protocol_data(StrBytes::from_string(
                        group.protocol_name().unwrap_or_default().to_string(),
                    ))
                    .with_members(members)
            }
            _ if has_offsets => base.with_group_state(StrBytes::from_static_str("Empty")),
            _ => not_found(base, id, version),
        })
        .await
}

/// A group that does not exist: state Dead, and from v6 (KIP-1043) GROUP_ID_NOT_FOUND with
/// the message Kafka's `GroupMetadataManager` gives.
fn not_found(base: DescribedGroup, id: &str, version: i16) -> DescribedGroup {
    dead(base, version, format!("Group {id} not found."))
}

/// A KIP-848 consumer group, which DescribeGroups does not describe (ConsumerGroupDescribe
/// does): Dead, and from v6 GROUP_ID_NOT_FOUND, as Kafka answers.
fn not_classic(base: DescribedGroup, id: &str, version: i16) -> DescribedGroup {
    dead(base, version, format!("Group {id} is not a classic group."))
}

fn dead(base: DescribedGroup, version: i16, message: String) -> DescribedGroup {
    let dead = base.with_group_state(StrBytes::from_static_str("Dead"));
    if version < DESCRIBE_GROUPS_ERROR_MESSAGE_VERSION_MIN {
        return dead;
    }
    dead.with_error_code(ResponseError::GroupIdNotFound.code())
        .with_error_message(Some(StrBytes::from_string(message)))
}

pub async fn delete_groups(
    broker: &Broker,
    _context: &RequestContext,
    request: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for group_id in &request.groups_names {
        let code = match delete_one(broker, group_id.0.as_str()).await {
            Ok(()) => 0,
            Err(code) => code.code(),
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(group_id.clone())
                .with_error_code(code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}

async fn delete_one(broker: &Broker, group: &str) -> Result<(), ResponseError> {
    let log = coordinator_partition(broker, group).map_err(|e| coordinator_error(&e))?;
    let now = now_ms();
    let live = broker
        .groups
        .registry
        .with_either(group, |g, consumer| {
            consumer.is_some() || g.is_some_and(|g| g.state() != GroupState::Dead)
        })
        .await;
    if live {
        broker
            .groups
            .registry
            .delete(&log, group, now)
            .await
            .map_err(|e| group_error(&e))?;
    } else if !broker.groups.has_offsets(group) {
        return Err(group_error(&GroupError::GroupIdNotFound));
    }
    broker
        .groups
        .delete_offsets(&log, group, None, now)
        .await
        .map_err(|e| coordinator_error(&e))
}

pub async fn offset_delete(
    broker: &Broker,
    _context: &RequestContext,
    request: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let group = request.group_id.0.as_str();
    let log = match coordinator_partition(broker, group) {
        Ok(log) => log,
        Err(error) => {
            return OffsetDeleteResponse::default()
                .with_error_code(coordinator_error(&error).code());
        }
    };
    let (exists, subscribed) = broker
        .groups
        .registry
        .with_either(group, |g, consumer| match (g, consumer) {
            (_, Some(c)) => (true, c.subscribed_topic_names().into_iter().collect()),
            (Some(g), None) if g.state() != GroupState::Dead => (true, subscribed_topics(g)),
            _ => (false, Vec::new()),
        })
        .await;
    if !exists && !broker.groups.has_offsets(group) {
        return OffsetDeleteResponse::default()
            .with_error_code(ResponseError::GroupIdNotFound.code());
    }
    let mut doomed = Vec::new();
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let name = topic.name.0.to_string();
            let busy = subscribed.contains(&name);
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    if !busy {
                        doomed.push((name.clone(), p.partition_index));
                    }
                    let code = if busy {
                        ResponseError::GroupSubscribedToTopic.code()
                    } else {
                        0
                    };
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    if let Err(error) = broker
        .groups
        .delete_offsets(&log, group, Some(doomed), now_ms())
        .await
    {
        return OffsetDeleteResponse::default().with_error_code(coordinator_error(&error).code());
    }
    OffsetDeleteResponse::default().with_topics(topics)
}

/// Topics the group's consumers subscribe to, from their ConsumerProtocolSubscription
/// (version i16, topics as an i32-counted array of i16-length strings).
fn subscribed_topics(group: &crate::group::Group) -> Vec<String> {
    if group.protocol_type() != Some("consumer") {
        return Vec::new();
    }
    let mut topics = Vec::new();
    for member in group.members() {
        let mut bytes: &[u8] = &member.metadata;
        let Some(count) = bytes
            .get(2..6)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        else {
            continue;
        };
        bytes = &bytes[6..];
        for _ in 0..count.max(0) {
            let Some(length) = bytes
                .get(..2)
                .map(|b| i16::from_be_bytes([b[0], b[1]]).max(0) as usize)
            else {
                break;
            };
            let Some(name) = bytes.get(2..2 + length) else {
                break;
            };
            topics.push(String::from_utf8_lossy(name).into_owned());
            bytes = &bytes[2 + length..];
        }
    }
    topics
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_group_is_dead_and_from_v6_group_id_not_found_with_a_message() {
        let base = || DescribedGroup::default().with_group_id(GroupId(StrBytes::from("g1")));
        let old = not_found(base(), "g1", 5);
        assert_eq!((old.error_code, old.group_state.as_str()), (0, "Dead"));
        assert!(old.error_message.is_none());
        let new = not_found(base(), "g1", 6);
        assert_eq!((new.error_code, new.group_state.as_str()), (69, "Dead"));
        let message = new.error_message.as_ref().map(|m| m.as_str());
        assert_eq!(message, Some("Group g1 not found."));
    }
}
