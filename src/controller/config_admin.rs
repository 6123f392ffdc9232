//! Turning AlterConfigs and IncrementalAlterConfigs into metadata commands, and applying
//! them: Kafka's rules (`ConfigurationControlManager`, `ControllerConfigurationValidator`,
//! the broker's dynamic-config checks) as pure functions of the image.
//!
//! A command carries per-key changes and the resource's config the plan read
//! (`expected`). The plan may be built on a stale image (any node plans; the active
//! controller applies), and what it validated, appended to or replaced was that config:
//! so apply refuses the command if the config is now another ([`ControllerError::
//! ConfigChanged`]) and the API plans again against the newer image, a compare-and-set.
//! Applying a command twice (a forwarded command retried) finds the config already as
//! the plan made it and changes nothing more.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::image::MetadataImage;
use super::{CommandOutcome, ControllerError, MetadataCommand};
use crate::config::BrokerConfig;
use crate::config::connection_limits;
use crate::group::consumer::group_configs;
use crate::topic_config::{self, ConfigType};

/// What an `AlterConfigs` command changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigResource {
    /// A topic, with the id the plan saw: a topic re-created since is left alone.
    Topic { name: String, id: Uuid },
    /// Dynamic broker configs: a node id, or "" for the cluster-wide defaults.
    Broker { name: String },
    /// A consumer group's own configs (`group::consumer::group_configs`), whether or not
    /// the group exists, as Kafka's.
    Group { name: String },
}

/// A request's resource before planning.
#[derive(Clone, Copy, Debug)]
pub enum ConfigTarget<'a> {
    Topic(&'a str),
    Broker(&'a str),
    Group(&'a str),
}

/// IncrementalAlterConfigs' operations (`AlterConfigOp.OpType`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigOp {
    Set(String),
    Delete,
    Append(String),
    Subtract(String),
}

/// Per-key changes: `None` removes the key (back to the next layer's value).
pub type ConfigChanges = BTreeMap<String, Option<String>>;

/// Plans IncrementalAlterConfigs for one resource (keys are distinct: the API checks).
pub fn plan_incremental(
    image: &MetadataImage,
    broker: &BrokerConfig,
    target: ConfigTarget,
    ops: &[(String, ConfigOp)],
) -> Result<MetadataCommand, ControllerError> {
    let current = current_configs(image, target);
    let mut changes = ConfigChanges::new();
    for (key, op) in ops {
        let value = match op {
            ConfigOp::Set(value) => Some(value.clone()),
            ConfigOp::Delete => None,
            ConfigOp::Append(value) | ConfigOp::Subtract(value) => {
                let base = list_base(broker, target, &current, key, op)?;
                Some(edit_list(&base, value, matches!(op, ConfigOp::Append(_))))
            }
        };
        changes.insert(key.clone(), value);
    }
    plan(image, broker, target, &current, changes)
}

/// Plans the legacy AlterConfigs for one resource: the given keys become the resource's
/// whole dynamic config, every other key it had is removed.
pub fn plan_replace(
    image: &MetadataImage,
    broker: &BrokerConfig,
    target: ConfigTarget,
    entries: &[(String, String)],
) -> Result<MetadataCommand, ControllerError> {
    let current = current_configs(image, target);
    let mut changes: ConfigChanges = current.keys().map(|key| (key.clone(), None)).collect();
    for (key, value) in entries {
        changes.insert(key.clone(), Some(value.clone()));
    }
    plan(image, broker, target, &current, changes)
}

fn current_configs(image: &MetadataImage, target: ConfigTarget) -> BTreeMap<String, String> {
    let found = match target {
        ConfigTarget::Topic(name) => image.topic(name).map(|topic| &topic.configs),
        ConfigTarget::Broker(name) => image.broker_configs.get(name),
        ConfigTarget::Group(name) => image.group_configs.get(name),
    };
    found.cloned().unwrap_or_default()
}

/// The list APPEND or SUBTRACT edits: the resource's own value, else the static or
/// default one, as Kafka's `getParts`. Only LIST configs may be edited so.
fn list_base(
    broker: &BrokerConfig,
    target: ConfigTarget,
    current: &BTreeMap<String, String>,
    key: &str,
    op: &ConfigOp,
) -> Result<String, ControllerError> {
    let def = match target {
        ConfigTarget::Topic(_) => topic_config::find(key),
        ConfigTarget::Broker(_) => topic_config::find_by_broker_synonym(key),
        // Every group config is an INT.
        ConfigTarget::Group(_) => None,
    };
    let Some(def) = def.filter(|def| def.config_type == ConfigType::List) else {
        let op = if matches!(op, ConfigOp::Append(_)) {
            "APPEND"
        } else {
            "SUBTRACT"
        };
        return Err(ControllerError::InvalidConfig(format!(
            "Can't {op} to key {key} because its type is not LIST."
        )));
    };
    Ok(current
        .get(key)
        .cloned()
        .unwrap_or_else(|| topic_config::static_or_default(broker, def)))
}

/// Kafka's list edit: APPEND adds the items not there yet, SUBTRACT removes them.
fn edit_list(base: &str, items: &str, append: bool) -> String {
    let mut list: Vec<&str> = base.split(',').filter(|item| !item.is_empty()).collect();
    for item in items.split(',') {
        if append {
            if !list.contains(&item) {
                list.push(item);
            }
        } else {
            list.retain(|existing| *existing != item);
        }
    }
    list.join(",")
}

/// Validates the resource's configs as they would be after `changes`, then names the
/// resource as the command carries it.
fn plan(
    image: &MetadataImage,
    broker: &BrokerConfig,
    target: ConfigTarget,
    current: &BTreeMap<String, String>,
    changes: ConfigChanges,
) -> Result<MetadataCommand, ControllerError> {
    let after = with_changes(current, &changes);
    let resource = match target {
        ConfigTarget::Topic(name) => {
            // Kafka validates the configs before it checks that the topic exists.
            topic_config::validate(&after).map_err(ControllerError::InvalidConfig)?;
            let topic = image
                .topic(name)
                .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))?;
            ConfigResource::Topic {
                name: name.to_string(),
                id: topic.id,
            }
        }
        ConfigTarget::Broker(name) => {
            check_broker_name(name)?;
            check_broker_changes(&changes)?;
            check_connection_limits(image, name, &after, &changes)?;
            ConfigResource::Broker {
                name: name.to_string(),
            }
        }
        ConfigTarget::Group(name) => {
            if name.is_empty() {
                return Err(ControllerError::InvalidRequest(
                    "Group name must not be empty".to_string(),
                ));
            }
            group_configs::validate(&after, &broker.consumer_group_settings)
                .map_err(ControllerError::InvalidConfig)?;
            ConfigResource::Group {
                name: name.to_string(),
            }
        }
    };
    Ok(MetadataCommand::AlterConfigs {
        resource,
        changes,
        expected: Some(current.clone()),
    })
}

/// "" (the cluster default) or a node id, as Kafka's `validateBrokerName`.
fn check_broker_name(name: &str) -> Result<(), ControllerError> {
    if name.is_empty() || name.parse::<i32>().is_ok_and(|id| id >= 0) {
        return Ok(());
    }
    Err(ControllerError::InvalidRequest(format!(
        "Invalid broker name {name}"
    )))
}

/// Only the broker configs applied live here may change; Kafka refuses the static ones
/// with this message (INVALID_REQUEST). Values are checked like the topic configs they
/// are the defaults of. Removing a key is always allowed.
fn check_broker_changes(changes: &ConfigChanges) -> Result<(), ControllerError> {
    // Removing a key is always allowed (Kafka answers a DELETE of a key it would not set
    // as a no-op); only values to set must be live here.
    let refused: Vec<&str> = changes
        .iter()
        .filter(|(_, value)| value.is_some())
        .map(|(key, _)| key.as_str())
        .filter(|key| !topic_config::is_live_broker_config(key))
        .collect();
    if !refused.is_empty() {
        return Err(ControllerError::InvalidRequest(format!(
            "Cannot update these configs dynamically: Set({})",
            refused.join(", ")
        )));
    }
    for (key, value) in changes {
        if let Some(value) = value {
            // INVALID_REQUEST, as Kafka wraps a broker config's ConfigException (KAFKA-13609).
            topic_config::validate_broker_value(key, value)
                .map_err(ControllerError::InvalidRequest)?;
        }
    }
    Ok(())
}

/// The connection limits must fit together once changed (Kafka's `KafkaConfig` checks,
/// e.g. `max.connections.per.ip` 0 needs overrides), judged on the dynamic layers: the
/// cluster default with a broker's own over it. INVALID_REQUEST with Kafka's message.
/// Static configs are each broker's and not seen here; a broker whose static configs make
/// a combination invalid keeps its limits and logs it.
fn check_connection_limits(
    image: &MetadataImage,
    name: &str,
    after: &BTreeMap<String, String>,
    changes: &ConfigChanges,
) -> Result<(), ControllerError> {
    if !changes.keys().any(|key| connection_limits::is_live(key)) {
        return Ok(());
    }
    let (cluster, per_broker) = if name.is_empty() {
        (Some(after), None)
    } else {
        (image.broker_configs.get(""), Some(after))
    };
    let configs = connection_limits::layered(&BTreeMap::new(), cluster, per_broker);
    connection_limits::ConnectionLimits::from_configs(&configs)
        .map(drop)
        .map_err(ControllerError::InvalidRequest)
}

/// Applies an `AlterConfigs` command. A topic that is gone or was re-created (another
/// id), or a config that is neither what the plan read nor what it made, is refused
/// before anything changes.
pub(super) fn apply_alter_configs(
    image: &mut MetadataImage,
    resource: &ConfigResource,
    changes: &ConfigChanges,
    expected: Option<&BTreeMap<String, String>>,
) -> Result<CommandOutcome, ControllerError> {
    let (current, name) = match resource {
        ConfigResource::Topic { name, id } => match image.topics.get(name) {
            Some(topic) if topic.id == *id => {
                (&topic.configs, format!("the configs of topic {name}"))
            }
            _ => return Err(ControllerError::UnknownTopic(name.clone())),
        },
        ConfigResource::Broker { name } => (
            image.broker_configs.get(name).unwrap_or(&EMPTY),
            if name.is_empty() {
                "the brokers' default configs".to_string()
            } else {
                format!("the configs of broker {name}")
            },
        ),
        ConfigResource::Group { name } => (
            image.group_configs.get(name).unwrap_or(&EMPTY),
            format!("the configs of group {name}"),
        ),
    };
    if let Some(expected) = expected
        && current != expected
        && *current != with_changes(expected, changes)
    {
        return Err(ControllerError::ConfigChanged(name));
    }
    let after = with_changes(current, changes);
    match resource {
        ConfigResource::Topic { name, .. } => {
            if let Some(topic) = image.topics.get_mut(name) {
                topic.configs = after;
            }
        }
        ConfigResource::Broker { name } if after.is_empty() => {
            image.broker_configs.remove(name);
        }
        ConfigResource::Broker { name } => {
            image.broker_configs.insert(name.clone(), after);
        }
        ConfigResource::Group { name } if after.is_empty() => {
            image.group_configs.remove(name);
        }
        ConfigResource::Group { name } => {
            image.group_configs.insert(name.clone(), after);
        }
    }
    Ok(CommandOutcome::Done)
}

static EMPTY: BTreeMap<String, String> = BTreeMap::new();

/// `configs` after `changes`: a value sets its key, `None` removes it.
fn with_changes(
    configs: &BTreeMap<String, String>,
    changes: &ConfigChanges,
) -> BTreeMap<String, String> {
    let mut after = configs.clone();
    for (key, value) in changes {
        match value {
            Some(value) => after.insert(key.clone(), value.clone()),
            None => after.remove(key),
        };
    }
    after
}

#[cfg(test)]
#[path = "config_admin_tests.rs"]
mod tests;
