//! DescribeConfigs for topics and this broker: every config with its value, source,
//! default flag, type and (when asked) synonyms, as Kafka reports them.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::topic_config::{self, ConfigSource, ConfigType, ResolvedConfig};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const RESOURCE_BROKER_LOGGER: i8 = 8;

pub async fn describe_configs(
    broker: &Broker,
    context: &RequestContext,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let results = request
        .resources
        .iter()
        .map(|resource| {
            let base = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            match resolve_resource(broker, resource.resource_type, &resource.resource_name) {
                Err((error, message)) => base
                    .with_error_code(error.code())
                    .with_error_message(Some(StrBytes::from_string(message))),
                Ok(configs) => {
                    // Null or empty key lists both mean "every config".
                    let keys = resource
                        .configuration_keys
                        .as_ref()
                        .filter(|keys| !keys.is_empty());
                    let configs = configs
                        .into_iter()
                        .filter(|c| {
                            keys.is_none_or(|keys| keys.iter().any(|k| k.as_str() == c.name))
                        })
                        .map(|c| entry(c, context.version, request.include_synonyms))
                        .collect();
                    base.with_configs(configs)
                }
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn resolve_resource(
    broker: &Broker,
    resource_type: i8,
    name: &str,
) -> Result<Vec<ResolvedConfig>, (ResponseError, String)> {
    match resource_type {
        RESOURCE_TOPIC => {
            let image = broker.image();
            let topic = image.topic(name).ok_or_else(|| {
                (
                    ResponseError::UnknownTopicOrPartition,
                    format!("Topic {name} does not exist"),
                )
            })?;
            Ok(topic_config::resolve_all(&broker.config, &topic.configs))
        }
        RESOURCE_BROKER | RESOURCE_BROKER_LOGGER => {
            if !name.is_empty() && name != broker.config.node_id.to_string() {
                let message = format!(
                    "Unexpected broker id, expected {} or empty string, but received {name}",
                    broker.config.node_id
                );
                return Err((ResponseError::InvalidRequest, message));
            }
            match resource_type {
                RESOURCE_BROKER => Ok(broker_configs(&broker.config)),
                _ => Ok(Vec::new()),
            }
        }
        other => Err((
            ResponseError::InvalidRequest,
            format!("Unsupported resource type {other}"),
        )),
    }
}

fn entry(
    config: ResolvedConfig,
    version: i16,
    with_synonyms: bool,
) -> DescribeConfigsResourceResult {
    let synonyms = if with_synonyms {
        config
            .synonyms
            .iter()
            .map(|(name, value, source)| {
                DescribeConfigsSynonym::default()
                    .with_name(StrBytes::from_string(name.clone()))
                    .with_value(Some(StrBytes::from_string(value.clone())))
                    .with_source(*source as i8)
            })
            .collect()
    } else {
        Vec::new()
    };
    let result = DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_static_str(config.name))
        .with_value(Some(StrBytes::from_string(config.value)))
        .with_read_only(false)
        .with_config_source(config.source as i8)
        .with_is_sensitive(false)
        .with_synonyms(synonyms);
    if version >= 3 {
        result.with_config_type(config.config_type as i8)
    } else {
        result
    }
}

/// The broker's own configs: operator-set ones as STATIC_BROKER_CONFIG, the rest defaults.
fn broker_configs(config: &BrokerConfig) -> Vec<ResolvedConfig> {
    let own: [(&'static str, String, ConfigType); 13] = [
        ("node.id", config.node_id.to_string(), ConfigType::Int),
        ("broker.id", config.node_id.to_string(), ConfigType::Int),
        (
            "process.roles",
            "broker,controller".into(),
            ConfigType::List,
        ),
        ("listeners", endpoint(&config.listener), ConfigType::String),
        (
            "advertised.listeners",
            endpoint(&config.advertised),
            ConfigType::String,
        ),
        (
            "log.dirs",
            config.log_dirs.display().to_string(),
            ConfigType::String,
        ),
        (
            "num.partitions",
            config.num_partitions.to_string(),
            ConfigType::Int,
        ),
        (
            "default.replication.factor",
            config.default_replication_factor.to_string(),
            ConfigType::Int,
        ),
        (
            "auto.create.topics.enable",
            config.auto_create_topics_enable.to_string(),
            ConfigType::Boolean,
        ),
        (
            "delete.topic.enable",
            config.delete_topic_enable.to_string(),
            ConfigType::Boolean,
        ),
        (
            "socket.request.max.bytes",
            config.frame_bytes_max.to_string(),
            ConfigType::Int,
        ),
        (
            "max.connections",
            config.connections_max.to_string(),
            ConfigType::Int,
        ),
        (
            "fetch.max.bytes",
            config.fetch_bytes_max.to_string(),
            ConfigType::Int,
        ),
    ];
    let mut all: Vec<ResolvedConfig> = own
        .into_iter()
        .map(|(name, value, config_type)| {
            let source = source_of(config, name);
            ResolvedConfig {
                name,
                synonyms: vec![(name.into(), value.clone(), source)],
                value,
                source,
                config_type,
            }
        })
        .collect();
    // The broker-level defaults behind every topic config.
    let topic_defaults = topic_config::resolve_all(config, &Default::default());
    for (def, resolved) in topic_config::TOPIC_CONFIGS.iter().zip(topic_defaults) {
        let Some(name) = def.broker_synonym else {
            continue;
        };
        if all.iter().any(|c| c.name == name) {
            continue;
        }
        let source = resolved.source;
        let synonyms = vec![(name.to_string(), resolved.value.clone(), source)];
        all.push(ResolvedConfig {
            name,
            value: resolved.value,
            source,
            config_type: def.config_type,
            synonyms,
        });
    }
    all.sort_by_key(|c| c.name);
    all
}

fn source_of(config: &BrokerConfig, name: &str) -> ConfigSource {
    if config.explicit.contains_key(name) {
        ConfigSource::StaticBroker
    } else {
        ConfigSource::Default
    }
}

fn endpoint(endpoint: &crate::config::Endpoint) -> String {
    format!("{}://{}:{}", endpoint.name, endpoint.host, endpoint.port)
}
