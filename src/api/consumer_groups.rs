//! ConsumerGroupHeartbeat and ConsumerGroupDescribe (KIP-848): adapters from the wire to
//! the consumer-group state machine (`group::consumer`, via the group registry) and back.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::consumer_group_describe_response::{
    self as describe, DescribedGroup, Member,
};
use kafka_protocol::messages::consumer_group_heartbeat_response::{self as heartbeat};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse, GroupId, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use super::errors::{coordinator_error, group_error};
use super::group_admin::GROUP_OPERATIONS_ALL;
use super::group_offsets::coordinator_partition;
use crate::broker::Broker;
use crate::controller::MetadataImage;
use crate::controller::features::{self, GROUP_VERSION};
use crate::controller::image::is_internal_topic;
use crate::group::GroupError;
use crate::group::consumer::{
    Assignment, ConsumerGroup, ConsumerGroupConfig, HeartbeatRequest, TopicInfo, TopicSource,
};
use crate::types::now_ms;

/// ConsumerGroupHeartbeat v1 (KIP-1082): the client makes its own member id.
const CLIENT_MEMBER_ID_VERSION_MIN: i16 = 1;
/// ConsumerGroupDescribe v1 (KIP-1099) tells each member's protocol.
const MEMBER_TYPE_VERSION_MIN: i16 = 1;
/// KIP-1099's member type of a member speaking the consumer protocol.
const MEMBER_TYPE_CONSUMER: i8 = 1;

/// The consumer protocol's settings if it is on: configured
/// (`group.coordinator.rebalance.protocols`) and finalized (`group.version` >= 1), as
/// Kafka's `KafkaApis.isConsumerGroupProtocolEnabled` asks.
pub fn enabled<'a>(broker: &'a Broker, image: &MetadataImage) -> Option<&'a ConsumerGroupConfig> {
    let config = broker.config.consumer_groups.as_ref()?;
    let level = features::finalized_level(image, GROUP_VERSION);
    (level >= features::GROUP_VERSION_CONSUMER_PROTOCOL).then_some(config)
}

/// The metadata image as a consumer group sees it.
struct ImageTopics<'a>(&'a MetadataImage);

impl TopicSource for ImageTopics<'_> {
    fn lookup(&self, name: &str) -> Option<TopicInfo> {
        let topic = self.0.topic(name)?;
        Some(TopicInfo {
            id: topic.id,
            partitions: i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX),
        })
    }

    /// Regexes match user topics only, as consumers leave internal topics out by default.
    fn names(&self) -> Vec<String> {
        (self.0.topics.keys())
            .filter(|name| !is_internal_topic(name))
            .cloned()
            .collect()
    }

    fn version(&self) -> i64 {
        i64::try_from(self.0.applied_index).unwrap_or(i64::MAX)
    }
}

fn text(value: Option<StrBytes>) -> Option<String> {
    value.map(|v| v.to_string())
}

pub async fn consumer_group_heartbeat(
    broker: &Broker,
    context: &RequestContext,
    request: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let failed = |error: ResponseError, message: String| {
        ConsumerGroupHeartbeatResponse::default()
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(message)))
    };
    let image = broker.image();
    if enabled(broker, &image).is_none() {
        let why = "The new consumer group protocol is not enabled.".to_string();
        return failed(ResponseError::UnsupportedVersion, why);
    }
    let group = request.group_id.0.to_string();
    if group.is_empty() {
        return failed(
            ResponseError::InvalidRequest,
            "GroupId can't be empty.".into(),
        );
    }
    let log = match coordinator_partition(broker, &group) {
        Ok(log) => log,
        Err(error) => return failed(coordinator_error(&error), error.to_string()),
    };
    let owned = request.topic_partitions.map(|topics| {
        let mut owned = Assignment::new();
        for topic in topics {
            owned
                .entry(topic.topic_id)
                .or_default()
                .extend(topic.partitions);
        }
        owned
    });
    let decoded = HeartbeatRequest {
        member_id: request.member_id.to_string(),
        member_epoch: request.member_epoch,
        instance_id: text(request.instance_id),
        rack_id: text(request.rack_id),
        rebalance_timeout_ms: request.rebalance_timeout_ms,
        subscribed_topic_names: request
            .subscribed_topic_names
            .map(|names| names.into_iter().map(|name| name.0.to_string()).collect()),
        subscribed_topic_regex: text(request.subscribed_topic_regex),
        server_assignor: text(request.server_assignor),
        owned,
        client_id: context.client_id_text(),
        client_host: context.client_host.to_string(),
        client_makes_member_id: context.version >= CLIENT_MEMBER_ID_VERSION_MIN,
    };
    let answer = broker
        .groups
        .registry
        .consumer_heartbeat(&log, &group, decoded, &ImageTopics(&image), now_ms())
        .await;
    match answer {
        Ok(answer) => ConsumerGroupHeartbeatResponse::default()
            .with_member_id(Some(StrBytes::from_string(answer.member_id)))
            .with_member_epoch(answer.member_epoch)
            .with_heartbeat_interval_ms(answer.heartbeat_interval_ms)
            .with_assignment(answer.assignment.map(|assignment| {
                let topics = assignment
                    .into_iter()
                    .map(|(topic_id, partitions)| {
                        heartbeat::TopicPartitions::default()
                            .with_topic_id(topic_id)
                            .with_partitions(partitions.into_iter().collect())
                    })
                    .collect();
                heartbeat::Assignment::default().with_topic_partitions(topics)
            })),
        Err(error) => failed(group_error(&error), error_message(&error)),
    }
}

/// The message Kafka's exceptions carry, for the errors clients show.
fn error_message(error: &GroupError) -> String {
    match error {
        GroupError::InvalidRequest(why) | GroupError::InvalidRegularExpression(why) => why.clone(),
        other => other.to_string(),
    }
}

pub async fn consumer_group_describe(
    broker: &Broker,
    context: &RequestContext,
    request: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let image = broker.image();
    let Some(config) = enabled(broker, &image).copied() else {
        // Kafka answers every group UNSUPPORTED_VERSION while the protocol is off.
        let refused = (request.group_ids.iter())
            .map(|id| {
                DescribedGroup::default()
                    .with_group_id(id.clone())
                    .with_error_code(ResponseError::UnsupportedVersion.code())
            })
            .collect();
        return ConsumerGroupDescribeResponse::default().with_groups(refused);
    };
    let mut groups = Vec::with_capacity(request.group_ids.len());
    for group_id in &request.group_ids {
        let described = describe_one(broker, &image, &config, group_id, context.version).await;
        groups.push(if request.include_authorized_operations {
            described.with_authorized_operations(GROUP_OPERATIONS_ALL)
        } else {
            described
        });
    }
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}

async fn describe_one(
    broker: &Broker,
    image: &MetadataImage,
    config: &ConsumerGroupConfig,
    group_id: &GroupId,
    version: i16,
) -> DescribedGroup {
    let id = group_id.0.as_str();
    let base = DescribedGroup::default().with_group_id(group_id.clone());
    let error = |error: ResponseError, message: String| {
        base.clone()
            .with_error_code(error.code())
            .with_error_message(Some(StrBytes::from_string(message)))
    };
    if let Err(failure) = coordinator_partition(broker, id) {
        return error(coordinator_error(&failure), failure.to_string());
    }
    let has_offsets = broker.groups.has_offsets(id);
    broker
        .groups
        .registry
        .with_either(id, |classic, consumer| match (classic, consumer) {
            (_, Some(group)) => described(base.clone(), group, image, config, version),
            // A classic group, or a simple one known by its offsets.
            (classic, None) if classic.is_some() || has_offsets => error(
                ResponseError::GroupIdNotFound,
                format!("Group {id} is not a consumer group."),
            ),
            (_, None) => error(
                ResponseError::GroupIdNotFound,
                format!("Group {id} not found."),
            ),
        })
        .await
}

fn described(
    base: DescribedGroup,
    group: &ConsumerGroup,
    image: &MetadataImage,
    config: &ConsumerGroupConfig,
    version: i16,
) -> DescribedGroup {
    let member_type = if version >= MEMBER_TYPE_VERSION_MIN {
        MEMBER_TYPE_CONSUMER
    } else {
        Member::default().member_type
    };
    let members = group
        .members()
        .map(|member| {
            let target = group.target_of(&member.member_id);
            Member::default()
                .with_member_id(StrBytes::from_string(member.member_id.clone()))
                .with_instance_id(member.instance_id.clone().map(StrBytes::from_string))
                .with_rack_id(member.rack_id.clone().map(StrBytes::from_string))
                .with_member_epoch(member.member_epoch)
                .with_client_id(StrBytes::from_string(member.client_id.clone()))
                .with_client_host(StrBytes::from_string(member.client_host.clone()))
                .with_subscribed_topic_names(
                    (member.subscribed.iter())
                        .map(|name| TopicName(StrBytes::from_string(name.clone())))
                        .collect(),
                )
                .with_subscribed_topic_regex(
                    member.subscribed_regex.clone().map(StrBytes::from_string),
                )
                .with_assignment(named(&member.assigned, image))
                .with_target_assignment(target.map(|t| named(t, image)).unwrap_or_default())
                .with_member_type(member_type)
        })
        .collect();
    base.with_group_state(StrBytes::from_static_str(group.state().name()))
        .with_group_epoch(group.group_epoch())
        .with_assignment_epoch(group.target_epoch())
        .with_assignor_name(StrBytes::from_static_str(group.assignor(config).name()))
        .with_members(members)
}

/// An assignment with topic names; topics deleted since are left out.
fn named(assignment: &Assignment, image: &MetadataImage) -> describe::Assignment {
    let topics = assignment
        .iter()
        .filter_map(|(topic_id, partitions)| {
            let name = image.topic_names.get(topic_id)?;
            Some(
                describe::TopicPartitions::default()
                    .with_topic_id(*topic_id)
                    .with_topic_name(TopicName(StrBytes::from_string(name.clone())))
                    .with_partitions(partitions.iter().copied().collect()),
            )
        })
        .collect();
    describe::Assignment::default().with_topic_partitions(topics)
}
