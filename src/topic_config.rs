//! Topic-level configs: Kafka's names, types, defaults and broker-level synonyms.
//!
//! One table drives validation (CreateTopics), the effective values (DescribeConfigs,
//! with the source of each) and the [`LogConfig`] a partition log runs with.

use std::collections::BTreeMap;

use crate::config::{BrokerConfig, connection_limits, dynamic_broker};
use crate::log::{LogConfig, TimestampType, TopicCompression};
use crate::replica::replication_quota;
use crate::types::NodeId;

/// Kafka's `ConfigDef.Type` codes as DescribeConfigs v3+ reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Short = 4,
    Long = 5,
    Double = 6,
    List = 7,
    Class = 8,
    Password = 9,
}

/// Kafka's `DescribeConfigsResponse.ConfigSource` codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    DynamicTopic = 1,
    DynamicBroker = 2,
    DynamicDefaultBroker = 3,
    StaticBroker = 4,
    Default = 5,
    /// A logger's level (BROKER_LOGGER resources).
    DynamicBrokerLogger = 6,
    /// A consumer group's own config (GROUP resources).
    Group = 8,
}

pub struct TopicConfigDef {
    pub name: &'static str,
    /// The broker config that supplies the default when the topic does not set it.
    pub broker_synonym: Option<&'static str>,
    pub config_type: ConfigType,
    pub default: &'static str,
    /// Allowed values for enumerated strings; empty means any value of the type.
    pub choices: &'static [&'static str],
}

const fn def(
    name: &'static str,
    broker_synonym: Option<&'static str>,
    config_type: ConfigType,
    default: &'static str,
) -> TopicConfigDef {
    TopicConfigDef {
        name,
        broker_synonym,
        config_type,
        default,
        choices: &[],
    }
}

const LONG_MAX: &str = "9223372036854775807";

/// Every topic config Kafka 4.0 describes, sorted by name as Kafka lists them.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    TopicConfigDef {
        choices: &["delete", "compact", "compact,delete", "delete,compact"],
        ..def(
            "cleanup.policy",
            Some("log.cleanup.policy"),
            ConfigType::List,
            "delete",
        )
    },
    TopicConfigDef {
        choices: &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"],
        ..def(
            "compression.type",
            Some("compression.type"),
            ConfigType::String,
            "producer",
        )
    },
    def(
        "delete.retention.ms",
        Some("log.cleaner.delete.retention.ms"),
        ConfigType::Long,
        "86400000",
    ),
    def(
        "file.delete.delay.ms",
        Some("log.segment.delete.delay.ms"),
        ConfigType::Long,
        "60000",
    ),
    def(
        "flush.messages",
        Some("log.flush.interval.messages"),
        ConfigType::Long,
        LONG_MAX,
    ),
    def(
        "flush.ms",
        Some("log.flush.interval.ms"),
        ConfigType::Long,
        LONG_MAX,
    ),
    def(
        replication_quota::FOLLOWER_REPLICAS,
        None,
        ConfigType::List,
        "",
    ),
    def(
        "index.interval.bytes",
        Some("log.index.interval.bytes"),
        ConfigType::Int,
        "4096",
    ),
    def(
        replication_quota::LEADER_REPLICAS,
        None,
        ConfigType::List,
        "",
    ),
    def(
        "local.retention.bytes",
        Some("log.local.retention.bytes"),
        ConfigType::Long,
        "-2",
    ),
    def(
        "local.retention.ms",
        Some("log.local.retention.ms"),
        ConfigType::Long,
        "-2",
    ),
    def(
        "max.compaction.lag.ms",
        Some("log.cleaner.max.compaction.lag.ms"),
        ConfigType::Long,
        LONG_MAX,
    ),
    def(
        "max.message.bytes",
        Some("message.max.bytes"),
        ConfigType::Int,
        "1048588",
    ),
    def(
        "message.timestamp.after.max.ms",
        Some("log.message.timestamp.after.max.ms"),
        ConfigType::Long,
        "3600000", // Kafka 4.0's default; 3.x allowed any future timestamp
    ),
    def(
        "message.timestamp.before.max.ms",
        Some("log.message.timestamp.before.max.ms"),
        ConfigType::Long,
        LONG_MAX,
    ),
    TopicConfigDef {
        choices: &["CreateTime", "LogAppendTime"],
        ..def(
            "message.timestamp.type",
            Some("log.message.timestamp.type"),
            ConfigType::String,
            "CreateTime",
        )
    },
    def(
        "min.cleanable.dirty.ratio",
        Some("log.cleaner.min.cleanable.ratio"),
        ConfigType::Double,
        "0.5",
    ),
    def(
        "min.compaction.lag.ms",
        Some("log.cleaner.min.compaction.lag.ms"),
        ConfigType::Long,
        "0",
    ),
    def(
        "min.insync.replicas",
        Some("min.insync.replicas"),
        ConfigType::Int,
        "1",
    ),
    def(
        "preallocate",
        Some("log.preallocate"),
        ConfigType::Boolean,
        "false",
    ),
    def("remote.storage.enable", None, ConfigType::Boolean, "false"),
    def(
        "retention.bytes",
        Some("log.retention.bytes"),
        ConfigType::Long,
        "-1",
    ),
    def(
        "retention.ms",
        Some("log.retention.ms"),
        ConfigType::Long,
        "604800000",
    ),
    def(
        "segment.bytes",
        Some("log.segment.bytes"),
        ConfigType::Int,
        "1073741824",
    ),
    def(
        "segment.index.bytes",
        Some("log.index.size.max.bytes"),
        ConfigType::Int,
        "10485760",
    ),
    def(
        "segment.jitter.ms",
        Some("log.roll.jitter.ms"),
        ConfigType::Long,
        "0",
    ),
    def(
        "segment.ms",
        Some("log.roll.ms"),
        ConfigType::Long,
        "604800000",
    ),
    def(
        "unclean.leader.election.enable",
        Some("unclean.leader.election.enable"),
        ConfigType::Boolean,
        "false",
    ),
];

pub fn find(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|def| def.name == name)
}

/// One effective config value and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedConfig {
    pub name: String,
    pub value: String,
    pub source: ConfigSource,
    pub config_type: ConfigType,
    /// Lower-priority values that this one overrides (DescribeConfigs synonyms).
    pub synonyms: Vec<(String, String, ConfigSource)>,
}

/// The broker's value for a synonym, if the operator set it (time families resolved).
fn broker_value(broker: &BrokerConfig, synonym: &str) -> Option<String> {
    let family_set = |prefix: &str| {
        ["ms", "minutes", "hours"]
            .iter()
            .any(|unit| broker.explicit.contains_key(&format!("{prefix}.{unit}")))
    };
    match synonym {
        "log.retention.ms" if family_set("log.retention") => {
            broker.time_ms(synonym).map(|ms| ms.to_string())
        }
        "log.roll.ms" if family_set("log.roll") => broker.time_ms(synonym).map(|ms| ms.to_string()),
        _ => broker.explicit.get(synonym).cloned(),
    }
}

/// Broker configs set through the controller (AlterConfigs), by resource name: a node id
/// for one broker's values, "" for the cluster-wide defaults (Kafka's names for them).
pub type DynamicBrokerConfigs = BTreeMap<String, BTreeMap<String, String>>;

/// The dynamic broker layers one node resolves with: its own, then the cluster default.
#[derive(Clone, Copy, Debug, Default)]
pub struct DynamicLayers<'a> {
    pub per_broker: Option<&'a BTreeMap<String, String>>,
    pub cluster: Option<&'a BTreeMap<String, String>>,
}

impl<'a> DynamicLayers<'a> {
    pub fn of(configs: &'a DynamicBrokerConfigs, node_id: NodeId) -> DynamicLayers<'a> {
        DynamicLayers {
            per_broker: configs.get(&node_id.to_string()),
            cluster: configs.get(""),
        }
    }

    /// The dynamic values of broker key `name`, highest priority first, with sources.
    pub fn values(&self, name: &str) -> Vec<(String, String, ConfigSource)> {
        let layers = [
            (self.per_broker, ConfigSource::DynamicBroker),
            (self.cluster, ConfigSource::DynamicDefaultBroker),
        ];
        layers
            .into_iter()
            .filter_map(|(layer, source)| {
                let value = layer?.get(name)?;
                Some((name.to_string(), value.clone(), source))
            })
            .collect()
    }
}

/// Broker configs that may be altered dynamically here: the broker-level defaults of the
/// topic configs [`log_config`] applies, so a new value takes effect at once on every
/// topic without its own; `unclean.leader.election.enable`, which the active controller's
/// unclean election task reads (`controller::unclean_election`); and the broker-only
/// configs of `config::dynamic_broker`, read at each use. Kafka allows more; those we do
/// not apply are refused, never stored and ignored. The replication throttles' rates are
/// alterable too ([`is_live_broker_config`]); they are no topic config's default.
// SEAM(cleaner-knobs): `log.cleaner.min.compaction.lag.ms`, `...max.compaction.lag.ms`,
// `log.cleaner.min.cleanable.ratio` (the cleaner compacts every closed segment each round,
// with no dirty-ratio or lag gate), `log.cleaner.threads` (one cleaner thread),
// `log.cleaner.io.max.bytes.per.second` (no I/O throttle) and `log.cleaner.io.buffer.*`
// have no matching knob here, so they stay refused.
// SEAM(segment-knobs): `log.preallocate` (never preallocated), `log.segment.delete.delay.ms`
// (segments go at once), `log.index.size.max.bytes` (indexes grow as needed) and
// `log.roll.jitter.ms` (no jitter) are not implemented, so they stay refused.
pub const LIVE_BROKER_CONFIGS: &[&str] = &[
    "compression.type",
    "log.cleaner.backoff.ms",
    "log.cleaner.dedupe.buffer.size",
    "log.cleaner.delete.retention.ms",
    "log.cleanup.policy",
    "log.flush.interval.messages",
    "log.flush.interval.ms",
    "log.index.interval.bytes",
    "log.message.timestamp.after.max.ms",
    "log.message.timestamp.before.max.ms",
    "log.message.timestamp.type",
    "log.retention.bytes",
    "log.retention.ms",
    "log.roll.ms",
    "log.segment.bytes",
    "max.connection.creation.rate",
    "max.connections",
    "max.connections.per.ip",
    "max.connections.per.ip.overrides",
    "message.max.bytes",
    "min.insync.replicas",
    "producer.id.expiration.ms",
    "transaction.partition.verification.enable",
    "unclean.leader.election.enable",
];

/// Whether broker config `name` may be altered dynamically here: one of
/// [`LIVE_BROKER_CONFIGS`] or a listener-prefixed connection limit
/// (`listener.name.<l>.max.connections`, `...max.connection.creation.rate`) or
/// a replication throttle rate.
pub fn is_live_broker_config(name: &str) -> bool {
    LIVE_BROKER_CONFIGS.contains(&name)
        || replication_quota::RATE_CONFIGS.contains(&name)
        || connection_limits::is_live(name)
}

/// The effective value of a dynamic-only broker config (the replication rates): this
/// broker's, the cluster default, else Kafka's default; named and typed as a LONG.
pub fn resolve_dynamic_only(name: &str, default: &str, dynamic: DynamicLayers) -> ResolvedConfig {
    let mut layers = dynamic.values(name);
    layers.push((name.to_string(), default.to_string(), ConfigSource::Default));
    let (_, value, source) = layers[0].clone();
    ResolvedConfig {
        name: name.to_string(),
        value,
        source,
        config_type: ConfigType::Long,
        synonyms: layers,
    }
}

/// The topic config a broker key is the default of.
pub fn find_by_broker_synonym(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS
        .iter()
        .find(|def| def.broker_synonym == Some(name))
}

/// Checks a value for a dynamic broker config; the error text is what clients show.
pub fn validate_broker_value(name: &str, value: &str) -> Result<(), String> {
    if replication_quota::RATE_CONFIGS.contains(&name) {
        return replication_quota::validate_rate(name, value);
    }
    // The connection limits are the socket server's, not topic defaults.
    if connection_limits::is_live(name) {
        return connection_limits::validate_value(name, value);
    }
    let checked = if let Some(def) = dynamic_broker::find(name) {
        dynamic_broker::check_value(def, value)
    } else {
        let def = find_by_broker_synonym(name)
            .ok_or_else(|| format!("Unknown broker config name: {name}"))?;
        check_value(def, value)
    };
    checked.map_err(|reason| format!("Invalid value {value} for configuration {name}: {reason}"))
}

/// The value a topic config has without topic or dynamic overrides (static or default):
/// what Kafka's APPEND and SUBTRACT start from when the topic does not set the key.
pub fn static_or_default(broker: &BrokerConfig, def: &TopicConfigDef) -> String {
    def.broker_synonym
        .and_then(|synonym| broker_value(broker, synonym))
        .unwrap_or_else(|| def.default.to_string())
}

/// Every topic config with its effective value: topic override, this broker's dynamic
/// value, the cluster-wide dynamic default, the static broker config, Kafka's default.
pub fn resolve_all(
    broker: &BrokerConfig,
    dynamic: DynamicLayers,
    topic: &BTreeMap<String, String>,
) -> Vec<ResolvedConfig> {
    TOPIC_CONFIGS
        .iter()
        .map(|def| resolve(def, broker, dynamic, topic))
        .collect()
}

/// The effective value of topic config `name` for a topic with `topic`'s overrides: one
/// config resolved, not the whole table.
pub fn effective_value(
    name: &str,
    broker: &BrokerConfig,
    dynamic: DynamicLayers,
    topic: &BTreeMap<String, String>,
) -> Option<String> {
    let def = find(name)?;
    Some(resolve(def, broker, dynamic, topic).value)
}

/// The broker-level value behind `def` (no topic override), named as the broker key.
pub fn resolve_broker_level(
    def: &'static TopicConfigDef,
    broker: &BrokerConfig,
    dynamic: DynamicLayers,
) -> ResolvedConfig {
    let mut resolved = resolve(def, broker, dynamic, &BTreeMap::new());
    resolved.name = def.broker_synonym.unwrap_or(def.name).to_string();
    resolved
}

fn resolve(
    def: &'static TopicConfigDef,
    broker: &BrokerConfig,
    dynamic: DynamicLayers,
    topic: &BTreeMap<String, String>,
) -> ResolvedConfig {
    let mut layers = Vec::new();
    if let Some(value) = topic.get(def.name) {
        layers.push((
            def.name.to_string(),
            value.clone(),
            ConfigSource::DynamicTopic,
        ));
    }
    if let Some(synonym) = def.broker_synonym {
        layers.extend(dynamic.values(synonym));
        if let Some(value) = broker_value(broker, synonym) {
            layers.push((synonym.to_string(), value, ConfigSource::StaticBroker));
        }
    }
    let default_name = def.broker_synonym.unwrap_or(def.name).to_string();
    layers.push((default_name, def.default.to_string(), ConfigSource::Default));
    let (_, value, source) = layers[0].clone();
    ResolvedConfig {
        name: def.name.to_string(),
        value,
        source,
        config_type: def.config_type,
        synonyms: layers,
    }
}

/// Checks a CreateTopics config map; the error text is what Kafka clients show.
pub fn validate(configs: &BTreeMap<String, String>) -> Result<(), String> {
    for (name, value) in configs {
        let def = find(name).ok_or_else(|| format!("Unknown topic config name: {name}"))?;
        if [
            replication_quota::LEADER_REPLICAS,
            replication_quota::FOLLOWER_REPLICAS,
        ]
        .contains(&name.as_str())
        {
            replication_quota::validate_replica_list(name, value)?;
            continue;
        }
        check_value(def, value).map_err(|reason| {
            format!("Invalid value {value} for configuration {name}: {reason}")
        })?;
    }
    Ok(())
}

/// Kafka's validators (`atLeast`, `between` in `LogConfig`'s ConfigDef) for the numeric
/// topic configs, which also bound the broker defaults that are their synonyms: a value the
/// log layer would clamp or misread (a negative `delete.retention.ms` would drop tombstones
/// at once, `min.insync.replicas` 0 would be enforced as 1 but described as 0) is refused.
/// `segment.bytes` keeps Kafka 3.x's floor (14, one record's overhead), not 4.0's 1 MiB:
/// small segments are how retention and compaction are tested here.
fn bounds(name: &str) -> Option<(f64, f64)> {
    let at_least = |minimum: f64| Some((minimum, f64::INFINITY));
    match name {
        "segment.bytes" => at_least(14.0),
        "segment.ms" | "max.compaction.lag.ms" | "flush.messages" | "min.insync.replicas" => {
            at_least(1.0)
        }
        "segment.index.bytes" => at_least(4.0),
        "retention.ms" => at_least(-1.0),
        "local.retention.ms" | "local.retention.bytes" => at_least(-2.0),
        "segment.jitter.ms"
        | "flush.ms"
        | "max.message.bytes"
        | "index.interval.bytes"
        | "delete.retention.ms"
        | "min.compaction.lag.ms"
        | "file.delete.delay.ms"
        | "message.timestamp.before.max.ms"
        | "message.timestamp.after.max.ms" => at_least(0.0),
        "min.cleanable.dirty.ratio" => Some((0.0, 1.0)),
        _ => None,
    }
}

fn check_bounds(def: &TopicConfigDef, value: &str) -> Result<(), String> {
    let (Some((minimum, maximum)), Ok(number)) = (bounds(def.name), value.trim().parse::<f64>())
    else {
        return Ok(());
    };
    let shown = |bound: f64| {
        if bound.fract() == 0.0 {
            format!("{}", bound as i64)
        } else {
            bound.to_string()
        }
    };
    if number < minimum {
        Err(format!("Value must be at least {}", shown(minimum)))
    } else if number > maximum {
        Err(format!("Value must be no more than {}", shown(maximum)))
    } else {
        Ok(())
    }
}

fn check_value(def: &TopicConfigDef, value: &str) -> Result<(), String> {
    check_type(def, value)?;
    check_bounds(def, value)
}

fn check_type(def: &TopicConfigDef, value: &str) -> Result<(), String> {
    let value = value.trim();
    match def.config_type {
        ConfigType::Boolean => value
            .parse::<bool>()
            .map(drop)
            .map_err(|_| "Expected value to be either true or false".to_string()),
        ConfigType::Int => value
            .parse::<i32>()
            .map(drop)
            .map_err(|_| "Not a number of type INT".into()),
        ConfigType::Long => value
            .parse::<i64>()
            .map(drop)
            .map_err(|_| "Not a number of type LONG".into()),
        ConfigType::Double => value
            .parse::<f64>()
            .map(drop)
            .map_err(|_| "Not a number of type DOUBLE".into()),
        ConfigType::String | ConfigType::List if !def.choices.is_empty() => {
            let normalized: String = value
                .split(',')
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(",");
            if def.choices.contains(&normalized.as_str()) {
                Ok(())
            } else {
                Err(format!("String must be one of: {}", def.choices.join(", ")))
            }
        }
        _ => Ok(()),
    }
}

/// The log engine's settings for a topic: effective values mapped onto [`LogConfig`].
pub fn log_config(
    broker: &BrokerConfig,
    dynamic: DynamicLayers,
    topic: &BTreeMap<String, String>,
) -> LogConfig {
    let values: BTreeMap<String, String> = resolve_all(broker, dynamic, topic)
        .into_iter()
        .map(|c| (c.name, c.value))
        .collect();
    let long = |name: &str, fallback: i64| {
        values
            .get(name)
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(fallback)
    };
    let defaults = LogConfig::default();
    let policy: Vec<&str> = values
        .get("cleanup.policy")
        .map(|p| p.split(',').map(str::trim).collect())
        .unwrap_or_default();
    LogConfig {
        segment_bytes: long("segment.bytes", defaults.segment_bytes as i64).max(14) as u64,
        segment_ms: long("segment.ms", defaults.segment_ms).max(1),
        retention_ms: long("retention.ms", defaults.retention_ms),
        retention_bytes: long("retention.bytes", defaults.retention_bytes),
        flush_messages: long("flush.messages", i64::MAX).max(1) as u64,
        flush_ms: long("flush.ms", i64::MAX),
        index_interval_bytes: long("index.interval.bytes", 4096).clamp(0, u32::MAX as i64) as u32,
        max_message_bytes: long("max.message.bytes", 1_048_588).clamp(0, u32::MAX as i64) as u32,
        timestamp_type: match values.get("message.timestamp.type").map(String::as_str) {
            Some("LogAppendTime") => TimestampType::LogAppendTime,
            _ => TimestampType::CreateTime,
        },
        timestamp_before_max_ms: long(
            "message.timestamp.before.max.ms",
            defaults.timestamp_before_max_ms,
        ),
        timestamp_after_max_ms: long(
            "message.timestamp.after.max.ms",
            defaults.timestamp_after_max_ms,
        ),
        compression: values
            .get("compression.type")
            .and_then(|value| TopicCompression::parse(value))
            .unwrap_or_default(),
        compact: policy.contains(&"compact"),
        retention_deletes: policy.contains(&"delete"),
        delete_retention_ms: long("delete.retention.ms", defaults.delete_retention_ms),
        min_insync_replicas: long("min.insync.replicas", 1).clamp(1, i64::from(i32::MAX)) as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(overrides: &[(&str, &str)]) -> BrokerConfig {
        BrokerConfig::from_pairs(overrides)
    }

    #[test]
    fn numeric_values_outside_kafkas_bounds_are_refused() {
        let check = |name: &str, value: &str| {
            validate(&BTreeMap::from([(name.to_string(), value.to_string())]))
        };
        for (name, value) in [
            ("delete.retention.ms", "-1"),
            ("min.insync.replicas", "0"),
            ("retention.ms", "-2"),
            ("segment.bytes", "13"),
            ("segment.ms", "0"),
            ("message.timestamp.before.max.ms", "-1"),
            ("min.cleanable.dirty.ratio", "1.5"),
            ("flush.messages", "0"),
        ] {
            let error = check(name, value).expect_err(name);
            assert!(error.contains("Value must be"), "{name}={value}: {error}");
        }
        assert_eq!(
            check("min.cleanable.dirty.ratio", "2").unwrap_err(),
            "Invalid value 2 for configuration min.cleanable.dirty.ratio: Value must be no more \
             than 1"
        );
        for (name, value) in [
            ("retention.ms", "-1"),
            ("segment.bytes", "1024"),
            ("min.insync.replicas", "2"),
            ("delete.retention.ms", "0"),
            ("local.retention.ms", "-2"),
            ("min.cleanable.dirty.ratio", "0.5"),
        ] {
            assert_eq!(check(name, value), Ok(()), "{name}={value}");
        }
    }

    const NONE: DynamicLayers<'static> = DynamicLayers {
        per_broker: None,
        cluster: None,
    };

    fn topic(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn table_is_sorted_and_unique() {
        for pair in TOPIC_CONFIGS.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} >= {}",
                pair[0].name,
                pair[1].name
            );
        }
    }

    #[test]
    fn sources_follow_precedence() {
        let broker = broker(&[("log.retention.hours", "2"), ("log.segment.bytes", "1000")]);
        let all = resolve_all(&broker, NONE, &topic(&[("segment.bytes", "5000")]));
        let get = |name: &str| all.iter().find(|c| c.name == name).unwrap().clone();
        let segment = get("segment.bytes");
        assert_eq!(
            (segment.value.as_str(), segment.source),
            ("5000", ConfigSource::DynamicTopic)
        );
        assert_eq!(segment.synonyms.len(), 3);
        let retention = get("retention.ms");
        assert_eq!(retention.value, "7200000");
        assert_eq!(retention.source, ConfigSource::StaticBroker);
        let policy = get("cleanup.policy");
        assert_eq!(
            (policy.value.as_str(), policy.source),
            ("delete", ConfigSource::Default)
        );
    }

    #[test]
    fn validation_matches_kafka_types() {
        assert!(
            validate(&topic(&[
                ("retention.ms", "1000"),
                ("cleanup.policy", "compact")
            ]))
            .is_ok()
        );
        assert!(validate(&topic(&[("cleanup.policy", "compact, delete")])).is_ok());
        assert!(validate(&topic(&[("retention.ms", "soon")])).is_err());
        assert!(validate(&topic(&[("no.such.config", "1")])).is_err());
        assert!(validate(&topic(&[("message.timestamp.type", "Whenever")])).is_err());
        assert!(validate(&topic(&[("preallocate", "maybe")])).is_err());
    }

    #[test]
    fn log_config_takes_effective_values() {
        let broker = broker(&[]);
        let config = log_config(
            &broker,
            NONE,
            &topic(&[
                ("max.message.bytes", "10000"),
                ("message.timestamp.type", "LogAppendTime"),
            ]),
        );
        assert_eq!(config.max_message_bytes, 10_000);
        assert_eq!(config.timestamp_type, TimestampType::LogAppendTime);
        assert_eq!(config.segment_bytes, 1_073_741_824);
        assert_eq!(config.retention_ms, 604_800_000);
        assert!(!config.compact && config.retention_deletes);
        let compacted = log_config(&broker, NONE, &topic(&[("cleanup.policy", "compact")]));
        assert!(compacted.compact && !compacted.retention_deletes);
        let both = log_config(
            &broker,
            NONE,
            &topic(&[("cleanup.policy", "delete, compact")]),
        );
        assert!(both.compact && both.retention_deletes);
    }

    #[test]
    fn dynamic_broker_layers_sit_between_topic_and_static() {
        let broker = broker(&[("log.retention.ms", "1000")]);
        let mut dynamic = DynamicBrokerConfigs::new();
        dynamic.insert("".into(), topic(&[("log.retention.ms", "2000")]));
        dynamic.insert("1".into(), topic(&[("log.retention.ms", "3000")]));
        dynamic.insert("2".into(), topic(&[("log.retention.ms", "9999")]));
        let layers = DynamicLayers::of(&dynamic, 1);
        let all = resolve_all(&broker, layers, &topic(&[("retention.ms", "4000")]));
        let retention = all.iter().find(|c| c.name == "retention.ms").unwrap();
        let chain: Vec<(&str, ConfigSource)> = (retention.synonyms.iter())
            .map(|(_, value, source)| (value.as_str(), *source))
            .collect();
        assert_eq!(
            chain,
            [
                ("4000", ConfigSource::DynamicTopic),
                ("3000", ConfigSource::DynamicBroker),
                ("2000", ConfigSource::DynamicDefaultBroker),
                ("1000", ConfigSource::StaticBroker),
                ("604800000", ConfigSource::Default),
            ]
        );
        assert_eq!(log_config(&broker, layers, &topic(&[])).retention_ms, 3000);
        let other = DynamicLayers::of(&dynamic, 3);
        assert_eq!(log_config(&broker, other, &topic(&[])).retention_ms, 2000);
        let def = find("retention.ms").unwrap();
        let level = resolve_broker_level(def, &broker, other);
        assert_eq!(level.name, "log.retention.ms");
        assert_eq!(level.source, ConfigSource::DynamicDefaultBroker);
        assert_eq!(static_or_default(&broker, def), "1000");
    }

    #[test]
    fn live_broker_configs_are_topic_defaults_or_broker_only_and_sorted() {
        for pair in LIVE_BROKER_CONFIGS.windows(2) {
            assert!(pair[0] < pair[1], "{}", pair[1]);
        }
        for name in LIVE_BROKER_CONFIGS {
            let known = find_by_broker_synonym(name).is_some()
                || dynamic_broker::find(name).is_some()
                || connection_limits::LIVE_CONFIGS.contains(name);
            assert!(known, "{name}");
        }
        assert!(validate_broker_value("producer.id.expiration.ms", "1000").is_ok());
        assert_eq!(
            validate_broker_value("log.cleaner.backoff.ms", "-5").unwrap_err(),
            "Invalid value -5 for configuration log.cleaner.backoff.ms: Value must be at least 0"
        );
        assert!(validate_broker_value("max.connections.per.ip", "-1").is_err());
        assert!(validate_broker_value("max.connections.per.ip", "3").is_ok());
        assert!(is_live_broker_config(
            "listener.name.external.max.connections"
        ));
        assert!(!is_live_broker_config(
            "listener.name.external.num.network.threads"
        ));
        assert!(validate_broker_value("log.retention.ms", "60000").is_ok());
        assert!(validate_broker_value("log.retention.ms", "soon").is_err());
        assert!(validate_broker_value("log.cleanup.policy", "compact").is_ok());
        assert!(validate_broker_value("log.cleanup.policy", "shred").is_err());
        assert!(validate_broker_value("leader.replication.throttled.rate", "100").is_ok());
        assert!(validate_broker_value("follower.replication.throttled.rate", "-1").is_err());
        assert!(is_live_broker_config("follower.replication.throttled.rate"));
        assert!(!is_live_broker_config("log.dirs"));
    }

    #[test]
    fn throttled_replica_lists_are_topic_configs_validated_as_kafka_does() {
        let list = |value: &str| topic(&[("leader.replication.throttled.replicas", value)]);
        assert!(validate(&list("0:1,1:2")).is_ok());
        assert!(validate(&list("*")).is_ok());
        let error = validate(&list("0-1")).unwrap_err();
        assert!(
            error.starts_with("Invalid value [0-1] for configuration"),
            "{error}"
        );
        let all = resolve_all(&broker(&[]), NONE, &topic(&[]));
        let follower = all
            .iter()
            .find(|c| c.name == "follower.replication.throttled.replicas")
            .unwrap();
        assert_eq!(
            (follower.value.as_str(), follower.source),
            ("", ConfigSource::Default)
        );
        assert_eq!(follower.config_type, ConfigType::List);
    }
}
