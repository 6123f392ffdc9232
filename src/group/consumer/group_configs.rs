//! A consumer group's own configs (Kafka 4.0's `GroupConfig`, KIP-848): set with
//! IncrementalAlterConfigs or AlterConfigs on a GROUP resource (`kafka-configs
//! --entity-type groups`), kept in the metadata image, and read by the group's coordinator
//! (`GroupRegistry::set_group_config_source`) over the broker's `group.consumer.*`
//! defaults at each heartbeat, at a load, at a revert and at a failed tick's retry.
//!
//! Only the consumer group keys are known: Kafka 4.0 also takes `share.*` keys, for share
//! groups, which this broker does not serve; they are refused as unknown names.

use std::collections::BTreeMap;

use super::ConsumerGroupConfig;

pub const SESSION_TIMEOUT_MS: &str = "consumer.session.timeout.ms";
pub const HEARTBEAT_INTERVAL_MS: &str = "consumer.heartbeat.interval.ms";

/// Every group config name, in the order DescribeConfigs lists them.
pub const NAMES: [&str; 2] = [SESSION_TIMEOUT_MS, HEARTBEAT_INTERVAL_MS];

/// The broker configs whose values a group's keys override.
pub fn broker_synonym(name: &str) -> Option<&'static str> {
    match name {
        SESSION_TIMEOUT_MS => Some("group.consumer.session.timeout.ms"),
        HEARTBEAT_INTERVAL_MS => Some("group.consumer.heartbeat.interval.ms"),
        _ => None,
    }
}

/// Kafka's documentation of a group config (its broker synonym's).
pub fn documentation(name: &str) -> Option<&'static str> {
    match name {
        SESSION_TIMEOUT_MS => {
            Some("The timeout to detect client failures when using the consumer group protocol.")
        }
        HEARTBEAT_INTERVAL_MS => {
            Some("The heartbeat interval given to the members of a consumer group.")
        }
        _ => None,
    }
}

impl ConsumerGroupConfig {
    /// What the coordinator runs a group with: the broker's settings with the group's own
    /// configs over them if together they pass [`validate`] against this broker's own
    /// bounds, else the broker's settings alone. The values were validated on the node
    /// that planned them, whose settings may differ from this one's (or from this
    /// broker's before a restart); a session no longer than the heartbeat interval would
    /// expire every member between two heartbeats.
    pub fn for_group(&self, configs: Option<&BTreeMap<String, String>>) -> ConsumerGroupConfig {
        match configs {
            Some(configs) if validate(configs, self).is_ok() => self.overlaid(configs),
            _ => *self,
        }
    }

    /// The broker's settings with a group's own configs over them, as stored; a value that
    /// does not parse leaves the broker's.
    fn overlaid(&self, configs: &BTreeMap<String, String>) -> ConsumerGroupConfig {
        let mut config = *self;
        let value = |name: &str| configs.get(name)?.trim().parse::<i32>().ok();
        if let Some(session) = value(SESSION_TIMEOUT_MS) {
            config.session_timeout_ms = session;
        }
        if let Some(interval) = value(HEARTBEAT_INTERVAL_MS) {
            config.heartbeat_interval_ms = interval;
        }
        config
    }

    /// Each group config's value for a group with `configs`, and whether the group sets
    /// it (else it is the broker's).
    pub fn describe_group(
        &self,
        configs: &BTreeMap<String, String>,
    ) -> Vec<(&'static str, i32, bool)> {
        let effective = self.overlaid(configs);
        let set = |name: &str| configs.contains_key(name);
        vec![
            (
                SESSION_TIMEOUT_MS,
                effective.session_timeout_ms,
                set(SESSION_TIMEOUT_MS),
            ),
            (
                HEARTBEAT_INTERVAL_MS,
                effective.heartbeat_interval_ms,
                set(HEARTBEAT_INTERVAL_MS),
            ),
        ]
    }
}

/// Kafka's `GroupConfig.validate` of a group's whole config as it would be after a change,
/// against the broker's bounds: known names, integers of at least 1, each within its
/// `group.consumer.min/max.*` bounds, and the session longer than the heartbeat interval
/// (keys left unset count at the broker's value, the one the group would run with, where
/// Kafka 4.0 counts them at its built-in defaults). The message is Kafka's.
pub fn validate(
    configs: &BTreeMap<String, String>,
    broker: &ConsumerGroupConfig,
) -> Result<(), String> {
    if let Some(name) = configs.keys().find(|name| !NAMES.contains(&name.as_str())) {
        return Err(format!("Unknown group config name: {name}"));
    }
    for (name, value) in configs {
        let parsed = value.trim().parse::<i32>().map_err(|_| {
            format!("Invalid value {value} for configuration {name}: Not a number of type INT")
        })?;
        if parsed < 1 {
            return Err(format!(
                "Invalid value {parsed} for configuration {name}: Value must be at least 1"
            ));
        }
    }
    let config = broker.overlaid(configs);
    let (heartbeat_min, heartbeat_max) = broker.heartbeat_interval_bounds_ms;
    let (session_min, session_max) = broker.session_timeout_bounds_ms;
    let checks = [
        (
            config.heartbeat_interval_ms >= heartbeat_min,
            HEARTBEAT_INTERVAL_MS,
            "greater than or equal to group.consumer.min.heartbeat.interval.ms",
        ),
        (
            config.heartbeat_interval_ms <= heartbeat_max,
            HEARTBEAT_INTERVAL_MS,
            "less than or equal to group.consumer.max.heartbeat.interval.ms",
        ),
        (
            config.session_timeout_ms >= session_min,
            SESSION_TIMEOUT_MS,
            "greater than or equal to group.consumer.min.session.timeout.ms",
        ),
        (
            config.session_timeout_ms <= session_max,
            SESSION_TIMEOUT_MS,
            "less than or equal to group.consumer.max.session.timeout.ms",
        ),
        (
            config.session_timeout_ms > config.heartbeat_interval_ms,
            SESSION_TIMEOUT_MS,
            "greater than consumer.heartbeat.interval.ms",
        ),
    ];
    match checks.iter().find(|(holds, ..)| !holds) {
        Some((_, name, rule)) => Err(format!("{name} must be {rule}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        (entries.iter())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_groups_keys_override_the_brokers_and_the_rest_stay() {
        let broker = ConsumerGroupConfig::default();
        assert_eq!(broker.for_group(None), broker);
        let group = configs(&[(SESSION_TIMEOUT_MS, "50000")]);
        let config = broker.for_group(Some(&group));
        assert_eq!(config.session_timeout_ms, 50_000);
        assert_eq!(config.heartbeat_interval_ms, broker.heartbeat_interval_ms);
        // Values this broker's own bounds refuse (set through a node with wider ones) are
        // not run with: the broker's settings are.
        let narrow = ConsumerGroupConfig {
            session_timeout_bounds_ms: (45_000, 45_000),
            ..broker
        };
        assert_eq!(narrow.for_group(Some(&group)), narrow);
        assert_eq!(
            narrow.describe_group(&group)[0],
            (SESSION_TIMEOUT_MS, 50_000, true)
        );
        assert_eq!(
            broker.describe_group(&group),
            vec![
                (SESSION_TIMEOUT_MS, 50_000, true),
                (HEARTBEAT_INTERVAL_MS, 5_000, false)
            ]
        );
    }

    #[test]
    fn validation_follows_kafkas_rules_and_messages() {
        let broker = ConsumerGroupConfig::default();
        let check = |entries: &[(&str, &str)]| validate(&configs(entries), &broker);
        assert_eq!(check(&[]), Ok(()));
        assert_eq!(
            check(&[
                (SESSION_TIMEOUT_MS, "60000"),
                (HEARTBEAT_INTERVAL_MS, "15000")
            ]),
            Ok(())
        );
        assert_eq!(
            check(&[("share.session.timeout.ms", "50000")]),
            Err("Unknown group config name: share.session.timeout.ms".into())
        );
        assert!(
            check(&[(SESSION_TIMEOUT_MS, "soon")])
                .unwrap_err()
                .contains("INT")
        );
        assert!(
            check(&[(SESSION_TIMEOUT_MS, "0")])
                .unwrap_err()
                .contains("at least 1")
        );
        assert_eq!(
            check(&[(SESSION_TIMEOUT_MS, "60001")]),
            Err("consumer.session.timeout.ms must be less than or equal to \
                 group.consumer.max.session.timeout.ms"
                .into())
        );
        assert_eq!(
            check(&[(HEARTBEAT_INTERVAL_MS, "4999")]),
            Err(
                "consumer.heartbeat.interval.ms must be greater than or equal to \
                 group.consumer.min.heartbeat.interval.ms"
                    .into()
            )
        );
        // Both within their bounds, but the session no longer than the interval.
        let wide = ConsumerGroupConfig {
            session_timeout_bounds_ms: (1_000, 60_000),
            ..broker
        };
        let short = configs(&[(SESSION_TIMEOUT_MS, "5000")]);
        assert_eq!(
            validate(&short, &wide),
            Err("consumer.session.timeout.ms must be greater than \
                 consumer.heartbeat.interval.ms"
                .into())
        );
    }
}
