//! CreateTopics, DeleteTopics and CreatePartitions. Each topic in a request succeeds or
//! fails on its own; a name given twice in one request fails every copy (INVALID_REQUEST),
//! as Kafka does. Each valid topic's partitions count against the client's controller
//! mutation quota (KIP-599): strict from CreateTopics v6, DeleteTopics v5 and
//! CreatePartitions v3 (a topic over it fails with THROTTLING_QUOTA_EXCEEDED), permissive
//! before; either way the response carries the throttle.

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use kafka_protocol::error::ResponseError;

use super::RequestContext;
use super::errors::{controller_error, replica_error};
use crate::broker::Broker;
use crate::client_quota::{ANONYMOUS_USER, MutationQuota};
use crate::controller::topic_admin::NewTopic;
use crate::controller::{ControllerError, MetadataCommand};
use crate::topic_config;

fn text(value: String) -> Option<StrBytes> {
    Some(StrBytes::from_string(value))
}

fn duplicated<'a>(names: impl Iterator<Item = &'a str>) -> HashMap<&'a str, usize> {
    let mut counts = HashMap::new();
    for name in names {
        *counts.entry(name).or_insert(0) += 1;
    }
    counts.retain(|_, count| *count > 1);
    counts
}

/// The first versions KIP-599 made strict.
const CREATE_TOPICS_STRICT_SINCE: i16 = 6;
const DELETE_TOPICS_STRICT_SINCE: i16 = 5;
const CREATE_PARTITIONS_STRICT_SINCE: i16 = 3;

fn mutation_quota<'a>(
    broker: &'a Broker,
    context: &'a RequestContext,
    strict_since: i16,
) -> MutationQuota<'a> {
    let client_id = context.client_id.as_deref().unwrap_or("");
    let strict = context.version >= strict_since;
    MutationQuota::new(&broker.client_quotas, ANONYMOUS_USER, client_id, strict)
}

pub async fn create_topics(
    broker: &Broker,
    context: &RequestContext,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut quota = mutation_quota(broker, context, CREATE_TOPICS_STRICT_SINCE);
    let duplicates = duplicated(request.topics.iter().map(|t| t.name.0.as_str()));
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let result = if duplicates.contains_key(topic.name.0.as_str()) {
            let message = format!(
                "Create topics request from client contains a duplicate topic {}",
                topic.name.0.as_str()
            );
            Err(ControllerError::InvalidRequest(message))
        } else {
            broker
                .create_topic(&new_topic(topic), request.validate_only, &mut quota)
                .await
        };
        let result = result
            .map_err(|error| (controller_error(&error), error.to_string()))
            .and_then(|command| {
                check_opened(broker, topic.name.0.as_str(), request.validate_only)?;
                Ok(command)
            });
        results.push(create_result(broker, topic, result));
    }
    CreateTopicsResponse::default()
        .with_topics(results)
        .with_throttle_time_ms(quota.throttle_time_ms())
}

fn new_topic(topic: &CreatableTopic) -> NewTopic {
    NewTopic {
        name: topic.name.0.to_string(),
        num_partitions: topic.num_partitions,
        replication_factor: topic.replication_factor,
        assignments: topic
            .assignments
            .iter()
            .map(|a| {
                (
                    a.partition_index,
                    a.broker_ids.iter().map(|id| id.0).collect(),
                )
            })
            .collect(),
        configs: topic
            .configs
            .iter()
            .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
            .collect(),
    }
}

/// After a topic change was applied and reconciled: an error if partitions of `topic`
/// assigned here did not open, so the client does not take a topic that cannot store
/// anything for ready (KAFKA_STORAGE_ERROR, naming the partitions and the cause).
fn check_opened(
    broker: &Broker,
    topic: &str,
    validate_only: bool,
) -> Result<(), (ResponseError, String)> {
    if validate_only {
        return Ok(());
    }
    broker
        .replicas
        .check_opened(topic)
        .map_err(|error| (replica_error(&error), error.to_string()))
}

fn create_result(
    broker: &Broker,
    topic: &CreatableTopic,
    result: Result<MetadataCommand, (ResponseError, String)>,
) -> CreatableTopicResult {
    let base = CreatableTopicResult::default().with_name(topic.name.clone());
    let (id, assignments, configs) = match result {
        Ok(MetadataCommand::CreateTopic {
            id,
            assignments,
            configs,
            ..
        }) => (id, assignments, configs),
        Ok(other) => unreachable!("create planned {other:?}"),
        Err((code, message)) => {
            tracing::info!(
                topic = topic.name.0.as_str(),
                error = message,
                "create topic refused"
            );
            return base
                .with_error_code(code.code())
                .with_error_message(text(message))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
                .with_configs(None);
        }
    };
    let replication_factor = assignments.first().map_or(0, Vec::len) as i16;
    // Kafka answers null, not the schema's default "", for a topic created.
    base.with_topic_id(id)
        .with_error_message(None)
        .with_num_partitions(assignments.len() as i32)
        .with_replication_factor(replication_factor)
        .with_configs(Some(describe_new_configs(broker, &configs)))
}

fn describe_new_configs(
    broker: &Broker,
    configs: &BTreeMap<String, String>,
) -> Vec<CreatableTopicConfigs> {
    let image = broker.image();
    let dynamic = topic_config::DynamicLayers::of(&image.broker_configs, broker.config.node_id);
    topic_config::resolve_all(&broker.config, dynamic, configs)
        .into_iter()
        .map(|config| {
            CreatableTopicConfigs::default()
                .with_name(StrBytes::from_string(config.name))
                .with_value(text(config.value))
                .with_config_source(config.source as i8)
        })
        .collect()
}

pub async fn delete_topics(
    broker: &Broker,
    context: &RequestContext,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let mut quota = mutation_quota(broker, context, DELETE_TOPICS_STRICT_SINCE);
    // v6 names topics by name or id; earlier versions by name only.
    let wanted: Vec<(Option<TopicName>, uuid::Uuid)> = if context.version >= 6 {
        request
            .topics
            .into_iter()
            .map(|t| (t.name, t.topic_id))
            .collect()
    } else {
        request
            .topic_names
            .into_iter()
            .map(|name| (Some(name), uuid::Uuid::nil()))
            .collect()
    };
    let mut results = Vec::with_capacity(wanted.len());
    for (name, id) in wanted {
        let image = broker.image();
        let resolved = match &name {
            Some(name) => Ok(name.0.to_string()),
            None => image
                .topic_by_id(&id)
                .map(|topic| topic.name.clone())
                .ok_or(ControllerError::UnknownTopicId(id)),
        };
        let topic_id = resolved
            .as_ref()
            .ok()
            .and_then(|n| image.topic(n))
            .map(|t| t.id);
        let result = match &resolved {
            Ok(name) => broker.delete_topic(name, &mut quota).await,
            Err(_) => Err(ControllerError::UnknownTopicId(id)),
        };
        let entry = DeletableTopicResult::default()
            .with_name(
                resolved
                    .ok()
                    .map(|n| TopicName(StrBytes::from_string(n)))
                    .or(name),
            )
            .with_topic_id(topic_id.unwrap_or(id));
        results.push(match result {
            Ok(()) => entry,
            Err(error) => entry
                .with_error_code(controller_error(&error).code())
                .with_error_message(text(error.to_string())),
        });
    }
    DeleteTopicsResponse::default()
        .with_responses(results)
        .with_throttle_time_ms(quota.throttle_time_ms())
}

pub async fn create_partitions(
    broker: &Broker,
    context: &RequestContext,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut quota = mutation_quota(broker, context, CREATE_PARTITIONS_STRICT_SINCE);
    let duplicates = duplicated(request.topics.iter().map(|t| t.name.0.as_str()));
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let name = topic.name.0.as_str();
        let assignments: Option<Vec<Vec<i32>>> = topic.assignments.as_ref().map(|list| {
            list.iter()
                .map(|a| a.broker_ids.iter().map(|id| id.0).collect())
                .collect()
        });
        let result = if duplicates.contains_key(name) {
            Err(ControllerError::InvalidRequest(format!(
                "Duplicate topic {name} in request"
            )))
        } else {
            broker
                .create_partitions(
                    name,
                    topic.count,
                    assignments.as_deref(),
                    request.validate_only,
                    &mut quota,
                )
                .await
        };
        let result = result
            .map_err(|error| (controller_error(&error), error.to_string()))
            .and_then(|()| check_opened(broker, name, request.validate_only));
        let entry = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        results.push(match result {
            Ok(()) => entry,
            Err((code, message)) => entry
                .with_error_code(code.code())
                .with_error_message(text(message)),
        });
    }
    CreatePartitionsResponse::default()
        .with_results(results)
        .with_throttle_time_ms(quota.throttle_time_ms())
}
