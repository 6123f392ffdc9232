//! Broker configs applied live that are no topic config's default: the cleaner's pause and
//! memory, producer-id expiration and transactional partition verification. Each is read
//! where it is used, at every use, from the metadata image's dynamic layers (this broker's
//! own value, then the cluster-wide default) over the static config, so an AlterConfigs
//! takes effect at the next cleaner round, expiration check or produce; nothing restarts.
//!
//! The broker-level defaults of topic configs (`log.retention.ms`, ...) are not here: they
//! resolve with their topic config (`topic_config::resolve`).

use super::BrokerConfig;
use super::kafka_broker_configs::KAFKA_BROKER_CONFIGS;
use crate::topic_config::{ConfigSource, ConfigType, DynamicLayers, ResolvedConfig};

/// A live broker-only config: its type and Kafka's lower bound for numbers.
pub struct BrokerOnlyConfig {
    pub name: &'static str,
    pub config_type: ConfigType,
    /// Kafka's `atLeast` (inclusive); `None` for booleans.
    pub minimum: Option<i64>,
}

/// Kafka's rule for the offset map, with the one cleaner thread here: more than 1 MiB
/// per cleaner thread (the static config is checked the same way).
const DEDUPE_BUFFER_BYTES_MIN: i64 = 1024 * 1024 + 1;

/// Sorted by name; every name is in `topic_config::LIVE_BROKER_CONFIGS` too.
pub const BROKER_ONLY_LIVE_CONFIGS: &[BrokerOnlyConfig] = &[
    BrokerOnlyConfig {
        name: "log.cleaner.backoff.ms",
        config_type: ConfigType::Long,
        minimum: Some(0),
    },
    BrokerOnlyConfig {
        name: "log.cleaner.dedupe.buffer.size",
        config_type: ConfigType::Long,
        minimum: Some(DEDUPE_BUFFER_BYTES_MIN),
    },
    BrokerOnlyConfig {
        name: "producer.id.expiration.ms",
        config_type: ConfigType::Int,
        minimum: Some(1),
    },
    BrokerOnlyConfig {
        name: "transaction.partition.verification.enable",
        config_type: ConfigType::Boolean,
        minimum: None,
    },
];

pub fn find(name: &str) -> Option<&'static BrokerOnlyConfig> {
    BROKER_ONLY_LIVE_CONFIGS.iter().find(|def| def.name == name)
}

/// Checks a value to set; the reason is what Kafka's validators say.
pub fn check_value(def: &BrokerOnlyConfig, value: &str) -> Result<(), String> {
    let value = value.trim();
    let number = match def.config_type {
        // Case-insensitive, as Kafka's ConfigDef parses a BOOLEAN.
        ConfigType::Boolean => {
            return (value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false"))
                .then_some(())
                .ok_or_else(|| "Expected value to be either true or false".to_string());
        }
        ConfigType::Int => value
            .parse::<i32>()
            .map(i64::from)
            .map_err(|_| "Not a number of type INT".to_string())?,
        _ => value
            .parse::<i64>()
            .map_err(|_| "Not a number of type LONG".to_string())?,
    };
    match def.minimum {
        Some(minimum) if number < minimum => Err(format!("Value must be at least {minimum}")),
        _ => Ok(()),
    }
}

/// The first dynamic value of `name` (this broker's, else the cluster default) that
/// parses; a stored value was validated when set, so one that does not parse is skipped.
fn dynamic_value<T: std::str::FromStr>(dynamic: DynamicLayers, name: &str) -> Option<T> {
    dynamic
        .values(name)
        .into_iter()
        .find_map(|(_, value, _)| value.trim().parse().ok())
}

/// `log.cleaner.backoff.ms` now.
pub fn cleaner_backoff_ms(broker: &BrokerConfig, dynamic: DynamicLayers) -> u64 {
    dynamic_value(dynamic, "log.cleaner.backoff.ms").unwrap_or(broker.cleaner_backoff_ms)
}

/// The most the offset map takes, whatever is configured: Kafka's cleaner uses
/// `min(dedupe.buffer.size / threads, Int.MaxValue)`. A client could set 1e15 on the
/// cluster default: the map's allocation would abort every broker, over and over from
/// the stored metadata.
pub const DEDUPE_BUFFER_BYTES_MAX: u64 = i32::MAX as u64;

/// `log.cleaner.dedupe.buffer.size` now, at most [`DEDUPE_BUFFER_BYTES_MAX`].
pub fn cleaner_dedupe_buffer_bytes(broker: &BrokerConfig, dynamic: DynamicLayers) -> u64 {
    dynamic_value(dynamic, "log.cleaner.dedupe.buffer.size")
        .unwrap_or(broker.cleaner_dedupe_buffer_bytes)
        .min(DEDUPE_BUFFER_BYTES_MAX)
}

/// `producer.id.expiration.ms` now.
pub fn producer_id_expiration_ms(broker: &BrokerConfig, dynamic: DynamicLayers) -> i64 {
    dynamic_value(dynamic, "producer.id.expiration.ms")
        .unwrap_or(broker.producer_id_expiration.expiration_ms)
}

/// `transaction.partition.verification.enable` now.
pub fn partition_verification_enable(broker: &BrokerConfig, dynamic: DynamicLayers) -> bool {
    // Stored as given: "TRUE" is as valid as "true" (checked case-insensitively).
    let values = dynamic.values("transaction.partition.verification.enable");
    (values.first()).map_or(broker.transactions.partition_verification_enable, |value| {
        value.1.trim().eq_ignore_ascii_case("true")
    })
}

/// The config as DescribeConfigs shows it: the dynamic layers, the static value, Kafka's
/// default, highest priority first.
pub fn resolve(
    def: &BrokerOnlyConfig,
    broker: &BrokerConfig,
    dynamic: DynamicLayers,
) -> ResolvedConfig {
    let mut layers = dynamic.values(def.name);
    if let Some(value) = broker.explicit.get(def.name) {
        layers.push((def.name.into(), value.clone(), ConfigSource::StaticBroker));
    }
    let default = KAFKA_BROKER_CONFIGS
        .iter()
        .find(|row| row.name == def.name)
        .and_then(|row| row.default)
        .unwrap_or_default();
    layers.push((def.name.into(), default.into(), ConfigSource::Default));
    let (_, value, source) = layers[0].clone();
    ResolvedConfig {
        name: def.name.to_string(),
        value,
        source,
        config_type: def.config_type,
        synonyms: layers,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::topic_config::{DynamicBrokerConfigs, LIVE_BROKER_CONFIGS};

    fn broker(pairs: &[(&str, &str)]) -> BrokerConfig {
        BrokerConfig::from_pairs(pairs)
    }

    fn layer(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn sorted_listed_live_and_in_kafkas_table() {
        for pair in BROKER_ONLY_LIVE_CONFIGS.windows(2) {
            assert!(pair[0].name < pair[1].name, "{}", pair[1].name);
        }
        for def in BROKER_ONLY_LIVE_CONFIGS {
            assert!(LIVE_BROKER_CONFIGS.contains(&def.name), "{}", def.name);
            let row = KAFKA_BROKER_CONFIGS.iter().find(|row| row.name == def.name);
            assert_eq!(
                row.map(|row| row.config_type),
                Some(def.config_type),
                "{}",
                def.name
            );
        }
    }

    #[test]
    fn values_follow_the_dynamic_layers_then_the_static_config() {
        let broker = broker(&[("producer.id.expiration.ms", "5000")]);
        let mut configs = DynamicBrokerConfigs::new();
        let none = DynamicLayers::of(&configs, 1);
        assert_eq!(producer_id_expiration_ms(&broker, none), 5000);
        assert!(partition_verification_enable(&broker, none));
        assert_eq!(cleaner_backoff_ms(&broker, none), 15_000);
        configs.insert("".into(), layer(&[("producer.id.expiration.ms", "2000")]));
        configs.insert("1".into(), layer(&[("log.cleaner.backoff.ms", "10")]));
        configs.insert(
            "2".into(),
            layer(&[("transaction.partition.verification.enable", "false")]),
        );
        let one = DynamicLayers::of(&configs, 1);
        assert_eq!(producer_id_expiration_ms(&broker, one), 2000);
        assert_eq!(cleaner_backoff_ms(&broker, one), 10);
        assert!(partition_verification_enable(&broker, one));
        assert!(!partition_verification_enable(
            &broker,
            DynamicLayers::of(&configs, 2)
        ));
        let described = resolve(find("producer.id.expiration.ms").unwrap(), &broker, one);
        let chain: Vec<(&str, ConfigSource)> = (described.synonyms.iter())
            .map(|(_, value, source)| (value.as_str(), *source))
            .collect();
        assert_eq!(
            chain,
            [
                ("2000", ConfigSource::DynamicDefaultBroker),
                ("5000", ConfigSource::StaticBroker),
                ("86400000", ConfigSource::Default),
            ]
        );
    }

    #[test]
    fn kafkas_bounds() {
        let check = |name: &str, value: &str| check_value(find(name).unwrap(), value);
        assert_eq!(check("log.cleaner.backoff.ms", "0"), Ok(()));
        assert!(check("log.cleaner.backoff.ms", "-1").is_err());
        assert!(check("log.cleaner.dedupe.buffer.size", "1048576").is_err());
        assert_eq!(check("log.cleaner.dedupe.buffer.size", "2097152"), Ok(()));
        assert_eq!(
            check("producer.id.expiration.ms", "0"),
            Err("Value must be at least 1".into())
        );
        assert!(check("producer.id.expiration.ms", "3000000000").is_err());
        assert!(check("transaction.partition.verification.enable", "yes").is_err());
        assert!(check("transaction.partition.verification.enable", "FALSE").is_ok());
        let mut configs = DynamicBrokerConfigs::new();
        configs.insert(
            "".into(),
            layer(&[("transaction.partition.verification.enable", "FALSE")]),
        );
        let dynamic = DynamicLayers::of(&configs, 1);
        assert!(!partition_verification_enable(&broker(&[]), dynamic));
        configs.insert(
            "".into(),
            layer(&[("log.cleaner.dedupe.buffer.size", &i64::MAX.to_string())]),
        );
        let dynamic = DynamicLayers::of(&configs, 1);
        assert_eq!(
            cleaner_dedupe_buffer_bytes(&broker(&[]), dynamic),
            DEDUPE_BUFFER_BYTES_MAX
        );
    }
}
