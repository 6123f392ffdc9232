//! KIP-848 consumer-group settings, with Kafka 4.0's names, defaults and constraints
//! (`GroupCoordinatorConfig`).

use std::collections::BTreeMap;

use super::{ConfigError, parse};
use crate::group::consumer::{Assignor, Assignors, ConsumerGroupConfig};

const PROTOCOLS: &str = "group.coordinator.rebalance.protocols";
const ASSIGNORS: &str = "group.consumer.assignors";

/// `None` when `group.coordinator.rebalance.protocols` leaves `consumer` out: then the
/// ConsumerGroupHeartbeat family is not advertised and is answered UNSUPPORTED_VERSION.
pub fn parse_consumer_groups(
    explicit: &BTreeMap<String, String>,
) -> Result<Option<ConsumerGroupConfig>, ConfigError> {
    let invalid = |key: &str, value: String, reason: &str| ConfigError::Invalid {
        key: key.into(),
        value,
        reason: reason.into(),
    };
    let protocols = list(
        explicit
            .get(PROTOCOLS)
            .map_or("classic,consumer", String::as_str),
    );
    for protocol in &protocols {
        if !["classic", "consumer"].contains(&protocol.as_str()) {
            let reason = "supported protocols are classic and consumer";
            return Err(invalid(PROTOCOLS, protocol.clone(), reason));
        }
    }
    // Kafka: "Disabling the 'classic' protocol is not supported."
    if !protocols.iter().any(|p| p == "classic") {
        let value = protocols.join(",");
        return Err(invalid(PROTOCOLS, value, "must include classic"));
    }
    let settings = parse_consumer_group_settings(explicit)?;
    Ok(protocols
        .iter()
        .any(|p| p == "consumer")
        .then_some(settings))
}

/// The `group.consumer.*` settings alone, parsed and checked whether or not the consumer
/// protocol is on: groups' own configs are set, validated and described against them
/// either way, as in Kafka.
pub fn parse_consumer_group_settings(
    explicit: &BTreeMap<String, String>,
) -> Result<ConsumerGroupConfig, ConfigError> {
    let invalid = |key: &str, value: String, reason: &str| ConfigError::Invalid {
        key: key.into(),
        value,
        reason: reason.into(),
    };
    let session = parse(explicit, "group.consumer.session.timeout.ms", 45_000)?;
    let session_min = parse(explicit, "group.consumer.min.session.timeout.ms", 45_000)?;
    let session_max = parse(explicit, "group.consumer.max.session.timeout.ms", 60_000)?;
    let heartbeat = parse(explicit, "group.consumer.heartbeat.interval.ms", 5_000)?;
    let heartbeat_min = parse(explicit, "group.consumer.min.heartbeat.interval.ms", 5_000)?;
    let heartbeat_max = parse(explicit, "group.consumer.max.heartbeat.interval.ms", 15_000)?;
    let max_size: i32 = parse(explicit, "group.consumer.max.size", i32::MAX)?;
    let checks: [(&str, i32); 6] = [
        ("group.consumer.session.timeout.ms", session),
        ("group.consumer.min.session.timeout.ms", session_min),
        ("group.consumer.max.session.timeout.ms", session_max),
        ("group.consumer.heartbeat.interval.ms", heartbeat),
        ("group.consumer.min.heartbeat.interval.ms", heartbeat_min),
        ("group.consumer.max.heartbeat.interval.ms", heartbeat_max),
    ];
    for (key, value) in checks {
        if value < 1 {
            return Err(invalid(key, value.to_string(), "must be >= 1"));
        }
    }
    if max_size < 1 {
        let key = "group.consumer.max.size";
        return Err(invalid(key, max_size.to_string(), "must be >= 1"));
    }
    let inconsistent = |why: &str| Err(ConfigError::Inconsistent(why.to_string()));
    if !(session_min..=session_max).contains(&session) {
        return inconsistent(
            "group.consumer.session.timeout.ms must be within group.consumer.min.session.\
             timeout.ms and group.consumer.max.session.timeout.ms",
        );
    }
    if !(heartbeat_min..=heartbeat_max).contains(&heartbeat) {
        return inconsistent(
            "group.consumer.heartbeat.interval.ms must be within group.consumer.min.\
             heartbeat.interval.ms and group.consumer.max.heartbeat.interval.ms",
        );
    }
    if heartbeat >= session {
        return inconsistent(
            "group.consumer.heartbeat.interval.ms must be less than group.consumer.session.\
             timeout.ms",
        );
    }
    let assignors = assignors(
        explicit
            .get(ASSIGNORS)
            .map_or("uniform,range", String::as_str),
    )
    .map_err(|value| invalid(ASSIGNORS, value, "known assignors are uniform and range"))?;
    Ok(ConsumerGroupConfig {
        session_timeout_ms: session,
        heartbeat_interval_ms: heartbeat,
        max_size,
        assignors,
        session_timeout_bounds_ms: (session_min, session_max),
        heartbeat_interval_bounds_ms: (heartbeat_min, heartbeat_max),
    })
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|item| item.trim().to_lowercase())
        .filter(|item| !item.is_empty())
        .collect()
}

/// The configured assignors in order, by short name or by Kafka's class name; the error
/// is the value refused.
fn assignors(value: &str) -> Result<Assignors, String> {
    let mut found: Vec<Assignor> = Vec::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let assignor = match item {
            "org.apache.kafka.coordinator.group.assignor.UniformAssignor" => Assignor::Uniform,
            "org.apache.kafka.coordinator.group.assignor.RangeAssignor" => Assignor::Range,
            name => Assignor::from_name(name).ok_or_else(|| item.to_string())?,
        };
        if !found.contains(&assignor) {
            found.push(assignor);
        }
    }
    let first = *found.first().ok_or_else(|| value.to_string())?;
    Ok(Assignors {
        first,
        second: found.get(1).copied(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn kafka_defaults() {
        let config = parse_consumer_groups(&BTreeMap::new()).unwrap().unwrap();
        assert_eq!(config, ConsumerGroupConfig::default());
    }

    #[test]
    fn the_consumer_protocol_can_be_turned_off_but_classic_cannot() {
        let off = with(&[(PROTOCOLS, "classic")]);
        assert_eq!(parse_consumer_groups(&off).unwrap(), None);
        assert!(parse_consumer_groups(&with(&[(PROTOCOLS, "consumer")])).is_err());
        assert!(parse_consumer_groups(&with(&[(PROTOCOLS, "classic,share")])).is_err());
    }

    #[test]
    fn timeouts_must_fit_their_bounds() {
        let short = with(&[
            ("group.consumer.min.session.timeout.ms", "2000"),
            ("group.consumer.session.timeout.ms", "3000"),
            ("group.consumer.min.heartbeat.interval.ms", "200"),
            ("group.consumer.heartbeat.interval.ms", "500"),
        ]);
        let config = parse_consumer_groups(&short).unwrap().unwrap();
        assert_eq!(
            (config.session_timeout_ms, config.heartbeat_interval_ms),
            (3000, 500)
        );
        let below = with(&[("group.consumer.session.timeout.ms", "3000")]);
        assert!(parse_consumer_groups(&below).is_err());
        let slow = with(&[
            ("group.consumer.min.session.timeout.ms", "2000"),
            ("group.consumer.session.timeout.ms", "3000"),
            ("group.consumer.heartbeat.interval.ms", "5000"),
        ]);
        assert!(parse_consumer_groups(&slow).is_err());
    }

    #[test]
    fn assignors_by_short_or_class_name() {
        let named = with(&[(
            ASSIGNORS,
            "org.apache.kafka.coordinator.group.assignor.RangeAssignor, uniform",
        )]);
        let config = parse_consumer_groups(&named).unwrap().unwrap();
        assert_eq!(config.assignors.first, Assignor::Range);
        assert_eq!(config.assignors.second, Some(Assignor::Uniform));
        assert!(parse_consumer_groups(&with(&[(ASSIGNORS, "sticky")])).is_err());
        assert!(parse_consumer_groups(&with(&[(ASSIGNORS, "")])).is_err());
    }
}
