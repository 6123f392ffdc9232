//! DescribeConfigs for topics, this broker, its loggers and consumer groups: every config
//! with its value, source, default flag, type and (when asked) synonyms and Kafka's
//! documentation, as Kafka reports them.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::config::connection_limits;
use crate::config::dynamic_broker::{self, BROKER_ONLY_LIVE_CONFIGS};
use crate::config::kafka_broker_configs::{KAFKA_BROKER_CONFIGS, KafkaBrokerConfig};
use crate::config::kafka_config_docs;
use crate::group::consumer::ConsumerGroupConfig;
use crate::group::consumer::group_configs;
use crate::replica::replication_quota::{RATE_CONFIGS, RATE_UNBOUNDED};
use crate::topic_config::{
    self, ConfigSource, ConfigType, DynamicBrokerConfigs, DynamicLayers, ResolvedConfig,
};
use crate::tracing_levels;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const RESOURCE_BROKER_LOGGER: i8 = 8;
const RESOURCE_GROUP: i8 = 32;

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
                    let shape = EntryShape {
                        version: context.version,
                        synonyms: request.include_synonyms,
                        documentation: request.include_documentation,
                        resource_type: resource.resource_type,
                    };
                    let configs = configs
                        .into_iter()
                        .filter(|c| {
                            keys.is_none_or(|keys| keys.iter().any(|k| k.as_str() == c.name))
                        })
                        .map(|c| entry(c, shape))
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
    let image = broker.image();
    let dynamic = DynamicLayers::of(&image.broker_configs, broker.config.node_id);
    match resource_type {
        RESOURCE_TOPIC => {
            let topic = image.topic(name).ok_or_else(|| {
                (
                    ResponseError::UnknownTopicOrPartition,
                    format!("Topic {name} does not exist"),
                )
            })?;
            Ok(topic_config::resolve_all(
                &broker.config,
                dynamic,
                &topic.configs,
            ))
        }
        // Kafka describes the "" resource as the cluster-wide dynamic defaults only.
        RESOURCE_BROKER if name.is_empty() => Ok(cluster_defaults(&image.broker_configs)),
        RESOURCE_BROKER => {
            if name != broker.config.node_id.to_string() {
                let message = format!(
                    "Unexpected broker id, expected {} or empty string, but received {name}",
                    broker.config.node_id
                );
                return Err((ResponseError::InvalidRequest, message));
            }
            Ok(broker_configs(&broker.config, dynamic))
        }
        RESOURCE_BROKER_LOGGER => {
            check_logger_resource(broker, name)?;
            Ok(tracing_levels::global()
                .describe()
                .into_iter()
                .map(|(logger, level)| ResolvedConfig {
                    name: logger,
                    value: level,
                    source: ConfigSource::DynamicBrokerLogger,
                    config_type: ConfigType::String,
                    synonyms: Vec::new(),
                })
                .collect())
        }
        RESOURCE_GROUP => {
            if name.is_empty() {
                let message = "Group name must not be empty".to_string();
                return Err((ResponseError::InvalidRequest, message));
            }
            let own = image.group_configs.get(name).cloned().unwrap_or_default();
            Ok(group_entries(&broker.config.consumer_group_settings, &own))
        }
        other => Err((
            ResponseError::InvalidRequest,
            format!("Unsupported resource type {other}"),
        )),
    }
}

/// A group's configs as Kafka's `ConfigHelper` describes them: every group config, set
/// ones as GROUP_CONFIG (their only synonym), the rest at the broker's value as
/// DEFAULT_CONFIG with no synonym (the broker's `group.consumer.*` names are not theirs).
fn group_entries(
    base: &ConsumerGroupConfig,
    own: &std::collections::BTreeMap<String, String>,
) -> Vec<ResolvedConfig> {
    (base.describe_group(own).into_iter())
        .map(|(name, value, set)| {
            let source = match set {
                true => ConfigSource::Group,
                false => ConfigSource::Default,
            };
            let value = value.to_string();
            ResolvedConfig {
                name: name.to_string(),
                synonyms: match set {
                    true => vec![(name.to_string(), value.clone(), source)],
                    false => Vec::new(),
                },
                value,
                source,
                config_type: ConfigType::Int,
            }
        })
        .collect()
}

/// A BROKER_LOGGER resource names this broker, as Kafka's `ConfigHelper` requires.
pub(super) fn check_logger_resource(
    broker: &Broker,
    name: &str,
) -> Result<(), (ResponseError, String)> {
    if name.is_empty() {
        return Err((
            ResponseError::InvalidRequest,
            "Broker id must not be empty".to_string(),
        ));
    }
    if name != broker.config.node_id.to_string() {
        let message = format!(
            "Unexpected broker id, expected {} but received {name}",
            broker.config.node_id
        );
        return Err((ResponseError::InvalidRequest, message));
    }
    Ok(())
}

fn cluster_defaults(configs: &DynamicBrokerConfigs) -> Vec<ResolvedConfig> {
    let Some(defaults) = configs.get("") else {
        return Vec::new();
    };
    defaults
        .iter()
        .map(|(name, value)| {
            let source = ConfigSource::DynamicDefaultBroker;
            ResolvedConfig {
                name: name.clone(),
                value: value.clone(),
                source,
                config_type: broker_config_type(name),
                synonyms: vec![(name.clone(), value.clone(), source)],
            }
        })
        .collect()
}

/// The type of an alterable broker config.
fn broker_config_type(name: &str) -> ConfigType {
    if RATE_CONFIGS.contains(&name) {
        return ConfigType::Long;
    }
    topic_config::find_by_broker_synonym(name).map_or_else(
        || kafka_row(unprefixed(name)).map_or(ConfigType::String, |row| row.config_type),
        |def| def.config_type,
    )
}

/// Keys this broker reads that Kafka 4.0's table lacks (ours, or newer than the table);
/// none carries a secret, so their values are shown.
const KNOWN_UNLISTED_CONFIGS: &[&str] = &[
    "cluster.id",
    "controller.quorum.bootstrap.servers",
    "follower.replication.throttled.rate",
    "http.listener",
    "leader.imbalance.per.broker.percentage",
    "leader.replication.throttled.rate",
    "log.filter",
    "log.roll.minutes",
    "partitions.per.request.max",
    "producer.id.expiration.check.interval.ms",
    "transaction.state.log.commit.timeout.ms",
    "unclean.leader.election.interval.ms",
];

/// Kafka hides the values of PASSWORD configs, and of any config whose type it cannot tell
/// (`maybeSensitive`): an operator's file may carry a private key under a name we do not
/// know (`listener.name.x.ssl.keystore.key`), and DescribeConfigs has no authorization yet.
/// Listener- and mechanism-prefixed keys are judged by the config they prefix.
fn is_sensitive(name: &str) -> bool {
    let base = unprefixed(name);
    let by_type = match kafka_row(base) {
        Some(row) => row.config_type == ConfigType::Password,
        // Group configs (GROUP resources) are known too: INTs, none secret.
        None => {
            !KNOWN_UNLISTED_CONFIGS.contains(&base)
                && topic_config::find(base).is_none()
                && !group_configs::NAMES.contains(&base)
        }
    };
    by_type || name.contains("password") || name.ends_with("jaas.config")
}

/// `listener.name.<listener>.[<sasl mechanism>.]<config>` -> `<config>`.
fn unprefixed(name: &str) -> &str {
    let Some((_, rest)) = name
        .strip_prefix("listener.name.")
        .and_then(|rest| rest.split_once('.'))
    else {
        return name;
    };
    if kafka_row(rest).is_some() {
        return rest;
    }
    rest.split_once('.').map_or(rest, |(_, config)| config)
}

/// Whether a described entry hides its value: a logger's level never does (its name is a
/// logger's, not a config key's).
fn hides_value(name: &str, source: ConfigSource) -> bool {
    source != ConfigSource::DynamicBrokerLogger && is_sensitive(name)
}

/// The value as Kafka shows it: none for a sensitive config or a null Kafka default.
fn shown(name: &str, value: String, source: ConfigSource) -> Option<StrBytes> {
    let null_default = source == ConfigSource::Default
        && value.is_empty()
        && kafka_row(name).is_some_and(|row| row.default.is_none());
    (!hides_value(name, source) && !null_default).then(|| StrBytes::from_string(value))
}

/// Topic configs, logger levels and group configs are all alterable; a broker config only
/// if it is applied live here.
fn is_read_only(config: &ResolvedConfig, resource_type: i8) -> bool {
    if config.source == ConfigSource::DynamicBrokerLogger || resource_type == RESOURCE_GROUP {
        return false;
    }
    let broker_level =
        config.source != ConfigSource::DynamicTopic && topic_config::find(&config.name).is_none();
    broker_level && !topic_config::is_live_broker_config(&config.name)
}

/// What a described entry carries besides its value, from the request.
#[derive(Clone, Copy)]
struct EntryShape {
    version: i16,
    synonyms: bool,
    /// `include_documentation` (v3+).
    documentation: bool,
    resource_type: i8,
}

/// Kafka's documentation of a described config: a topic's configs by their topic names, a
/// broker's by theirs; loggers have none.
fn documentation(resource_type: i8, name: &str) -> Option<&'static str> {
    match resource_type {
        RESOURCE_TOPIC => kafka_config_docs::topic_doc(name),
        RESOURCE_BROKER => kafka_config_docs::broker_doc(name),
        RESOURCE_GROUP => group_configs::documentation(name),
        _ => None,
    }
}

fn entry(config: ResolvedConfig, shape: EntryShape) -> DescribeConfigsResourceResult {
    let synonyms = if shape.synonyms {
        config
            .synonyms
            .iter()
            .map(|(name, value, source)| {
                DescribeConfigsSynonym::default()
                    .with_name(StrBytes::from_string(name.clone()))
                    .with_value(shown(name, value.clone(), *source))
                    .with_source(*source as i8)
            })
            .collect()
    } else {
        Vec::new()
    };
    let doc = (shape.documentation && shape.version >= 3)
        .then(|| documentation(shape.resource_type, &config.name))
        .flatten();
    let result = DescribeConfigsResourceResult::default()
        .with_documentation(doc.map(StrBytes::from_static_str))
        .with_read_only(is_read_only(&config, shape.resource_type))
        .with_is_sensitive(hides_value(&config.name, config.source))
        .with_value(shown(&config.name, config.value, config.source))
        .with_name(StrBytes::from_string(config.name))
        .with_config_source(config.source as i8)
        .with_synonyms(synonyms);
    if shape.version >= 3 {
        result.with_config_type(config.config_type as i8)
    } else {
        result
    }
}

/// The broker's own configs: operator-set ones as STATIC_BROKER_CONFIG, the rest defaults;
/// the topic-config defaults and the live broker-only configs with their dynamic layers;
/// then every other key the operator set (file, environment, `--override`) as
/// STATIC_BROKER_CONFIG.
fn broker_configs(config: &BrokerConfig, dynamic: DynamicLayers) -> Vec<ResolvedConfig> {
    let mut all: Vec<ResolvedConfig> = own_configs(config)
        .into_iter()
        .map(|(name, value, config_type)| {
            let source = source_of(config, name);
            ResolvedConfig {
                name: name.to_string(),
                synonyms: vec![(name.into(), value.clone(), source)],
                value,
                source,
                config_type,
            }
        })
        .collect();
    for def in topic_config::TOPIC_CONFIGS {
        let Some(name) = def.broker_synonym else {
            continue;
        };
        if !all.iter().any(|c| c.name == name) {
            all.push(topic_config::resolve_broker_level(def, config, dynamic));
        }
    }
    for def in BROKER_ONLY_LIVE_CONFIGS {
        all.push(dynamic_broker::resolve(def, config, dynamic));
    }
    // Set only dynamically (Kafka's `DynamicConfig.Broker`): a static value is not read.
    for name in RATE_CONFIGS {
        let unbounded = RATE_UNBOUNDED.to_string();
        all.push(topic_config::resolve_dynamic_only(
            name, &unbounded, dynamic,
        ));
    }
    for (name, value) in &config.explicit {
        if !all.iter().any(|c| c.name == *name) {
            let source = ConfigSource::StaticBroker;
            all.push(ResolvedConfig {
                name: name.clone(),
                value: value.clone(),
                source,
                config_type: broker_config_type(name),
                synonyms: vec![(name.clone(), value.clone(), source)],
            });
        }
    }
    // The rest of Kafka's broker configs, at Kafka's defaults ("" stands for null).
    for row in KAFKA_BROKER_CONFIGS {
        if !all.iter().any(|c| c.name == row.name) {
            let source = ConfigSource::Default;
            let value = row.default.unwrap_or_default().to_string();
            all.push(ResolvedConfig {
                name: row.name.to_string(),
                synonyms: vec![(row.name.to_string(), value.clone(), source)],
                value,
                source,
                config_type: row.config_type,
            });
        }
    }
    with_dynamic_connection_limits(&mut all, dynamic);
    all.sort_by(|a, b| a.name.cmp(&b.name));
    all
}

/// The connection limits set dynamically, described as Kafka does: the highest layer's
/// value and source, the layers under it as synonyms (this broker's, the cluster
/// default, then the static or default value).
fn with_dynamic_connection_limits(all: &mut Vec<ResolvedConfig>, dynamic: DynamicLayers) {
    let layers = [
        (dynamic.per_broker, ConfigSource::DynamicBroker),
        (dynamic.cluster, ConfigSource::DynamicDefaultBroker),
    ];
    let names: std::collections::BTreeSet<String> = (layers.iter())
        .filter_map(|(layer, _)| *layer)
        .flat_map(|layer| layer.keys())
        .filter(|name| connection_limits::is_live(name))
        .cloned()
        .collect();
    for name in names {
        let mut chain: Vec<(String, String, ConfigSource)> = (layers.iter())
            .filter_map(|(layer, source)| {
                Some((name.clone(), (*layer)?.get(&name)?.clone(), *source))
            })
            .collect();
        let config_type =
            kafka_row(unprefixed(&name)).map_or(ConfigType::String, |row| row.config_type);
        if let Some(index) = all.iter().position(|config| config.name == name) {
            chain.append(&mut all.remove(index).synonyms);
        }
        let (_, value, source) = chain[0].clone();
        all.push(ResolvedConfig {
            name,
            value,
            source,
            config_type,
            synonyms: chain,
        });
    }
}

fn kafka_row(name: &str) -> Option<&'static KafkaBrokerConfig> {
    KAFKA_BROKER_CONFIGS.iter().find(|row| row.name == name)
}

/// The broker settings this broker has and uses, with their effective values.
fn own_configs(config: &BrokerConfig) -> [(&'static str, String, ConfigType); 14] {
    [
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
            config.connection_limits.connections_max.to_string(),
            ConfigType::Int,
        ),
        (
            "fetch.max.bytes",
            config.fetch_bytes_max.to_string(),
            ConfigType::Int,
        ),
        (
            "max.incremental.fetch.session.cache.slots",
            config.fetch_session_slots_max.to_string(),
            ConfigType::Int,
        ),
    ]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_unknown_keys_are_hidden_known_ones_shown() {
        for hidden in [
            "listener.name.internal.ssl.keystore.key",
            "listener.name.internal.ssl.keystore.password",
            "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config",
            "ssl.key.password",
            "my.custom.secret",
        ] {
            assert!(is_sensitive(hidden), "{hidden}");
        }
        for shown in [
            "log.retention.ms",
            "listener.name.internal.max.connections",
            "http.listener",
            "log.filter",
            "retention.ms",
            "num.partitions",
        ] {
            assert!(!is_sensitive(shown), "{shown}");
        }
    }
}
