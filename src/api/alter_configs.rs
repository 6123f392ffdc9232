//! AlterConfigs (v0-2, replace-all) and IncrementalAlterConfigs (v0-1) for topics,
//! dynamic broker configs and consumer groups' own configs. Each resource succeeds or
//! fails on its own; the change goes through the controller and the answer waits until
//! this node applied it, so a client that describes or produces next sees the new value.
//!
//! BROKER_LOGGER resources (IncrementalAlterConfigs only, as Kafka) change this process's
//! log levels (`tracing_levels`): not through the controller, not kept across restarts.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::incremental_alter_configs_response as incremental_response;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use super::errors::controller_error;
use crate::broker::Broker;
use crate::controller::config_admin::{self, ConfigOp, ConfigTarget};
use crate::controller::{ControllerError, MetadataCommand};
use crate::tracing_levels::{self, LoggerError, LoggerLevels, LoggerOp};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const RESOURCE_BROKER_LOGGER: i8 = 8;
const RESOURCE_GROUP: i8 = 32;

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

type Failure = (ResponseError, String);

/// One resource of either request: what to change, as its API says it.
enum Changes {
    /// AlterConfigs: the whole set of keys (absent ones revert to default).
    Replace(Vec<(String, Option<String>)>),
    /// IncrementalAlterConfigs: (key, operation, value).
    Incremental(Vec<(String, i8, Option<String>)>),
}

/// (resource type, name, error code, message) of each resource, in request order.
type Outcomes = Vec<(i8, StrBytes, i16, Option<StrBytes>)>;

pub async fn alter_configs(
    broker: &Broker,
    _context: &RequestContext,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let resources = (request.resources.into_iter()).map(|resource| {
        let entries = (resource.configs.iter())
            .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
            .collect();
        let changes = Changes::Replace(entries);
        (resource.resource_type, resource.resource_name, changes)
    });
    let outcomes = alter_all(broker, request.validate_only, resources.collect()).await;
    let results = outcomes
        .into_iter()
        .map(|(resource_type, name, code, message)| {
            AlterConfigsResourceResponse::default()
                .with_resource_type(resource_type)
                .with_resource_name(name)
                .with_error_code(code)
                .with_error_message(message)
        });
    AlterConfigsResponse::default().with_responses(results.collect())
}

pub async fn incremental_alter_configs(
    broker: &Broker,
    _context: &RequestContext,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let resources = (request.resources.into_iter()).map(|resource| {
        let ops = (resource.configs.iter())
            .map(|c| {
                let value = c.value.as_ref().map(|v| v.to_string());
                (c.name.to_string(), c.config_operation, value)
            })
            .collect();
        let changes = Changes::Incremental(ops);
        (resource.resource_type, resource.resource_name, changes)
    });
    let outcomes = alter_all(broker, request.validate_only, resources.collect()).await;
    let results = outcomes
        .into_iter()
        .map(|(resource_type, name, code, message)| {
            incremental_response::AlterConfigsResourceResponse::default()
                .with_resource_type(resource_type)
                .with_resource_name(name)
                .with_error_code(code)
                .with_error_message(message)
        });
    IncrementalAlterConfigsResponse::default().with_responses(results.collect())
}

/// Each resource on its own, in request order; a resource named twice fails every copy.
async fn alter_all(
    broker: &Broker,
    validate_only: bool,
    resources: Vec<(i8, StrBytes, Changes)>,
) -> Outcomes {
    let repeated = repeated_resources(resources.iter().map(|r| (r.0, r.1.as_str())));
    let mut outcomes = Vec::with_capacity(resources.len());
    for (resource_type, name, changes) in resources {
        let outcome = if repeated.contains(&(resource_type, name.to_string())) {
            Err(repeated_failure())
        } else if resource_type == RESOURCE_BROKER_LOGGER {
            alter_loggers(broker, &name, &changes, validate_only)
        } else {
            alter_one(
                broker,
                resource_type,
                &name,
                validate_only,
                |target| match &changes {
                    Changes::Replace(entries) => plan_replace(broker, target, entries),
                    Changes::Incremental(ops) => plan_incremental(broker, target, ops),
                },
            )
            .await
        };
        let (code, message) = split(outcome);
        outcomes.push((resource_type, name, code, message));
    }
    outcomes
}

/// Log levels of this broker's loggers (Kafka's `ConfigAdminManager.validateLogLevelConfigs`
/// and `alterLogLevelConfigs`): all the resource's operations apply, or none.
fn alter_loggers(
    broker: &Broker,
    name: &str,
    changes: &Changes,
    validate_only: bool,
) -> Result<(), Failure> {
    let Changes::Incremental(ops) = changes else {
        return Err((
            ResponseError::InvalidRequest,
            "AlterConfigs is deprecated and does not support the resource type BROKER_LOGGER"
                .into(),
        ));
    };
    super::configs::check_logger_resource(broker, name)?;
    duplicate_keys(ops.iter().map(|(name, _, _)| name.as_str()))?;
    let mut parsed = Vec::with_capacity(ops.len());
    for (logger, op, value) in ops {
        let op = match *op {
            OP_SET => LoggerOp::Set(value.clone().unwrap_or_else(|| "null".into())),
            OP_DELETE => LoggerOp::Delete,
            OP_APPEND | OP_SUBTRACT => {
                let name = if *op == OP_APPEND {
                    "APPEND"
                } else {
                    "SUBTRACT"
                };
                return Err((
                    ResponseError::InvalidRequest,
                    format!("{name} operation is not allowed for the BROKER_LOGGER resource"),
                ));
            }
            other => {
                return Err((
                    ResponseError::InvalidRequest,
                    format!("Unknown operation type {other}"),
                ));
            }
        };
        parsed.push((logger.clone(), op));
    }
    let outcome = if validate_only {
        LoggerLevels::validate(&parsed)
    } else {
        tracing_levels::global().apply(&parsed)
    };
    outcome.map_err(|error| match error {
        LoggerError::InvalidConfig(message) => (ResponseError::InvalidConfig, message),
        LoggerError::InvalidRequest(message) => (ResponseError::InvalidRequest, message),
    })
}

/// Resources named more than once in one request: Kafka's `ConfigAdminManager.preprocess`
/// refuses every copy and applies none (with replace-all, the last copy would silently win).
fn repeated_resources<'a>(
    resources: impl Iterator<Item = (i8, &'a str)>,
) -> std::collections::BTreeSet<(i8, String)> {
    let mut seen = std::collections::BTreeSet::new();
    let mut repeated = std::collections::BTreeSet::new();
    for (resource_type, name) in resources {
        if !seen.insert((resource_type, name)) {
            repeated.insert((resource_type, name.to_string()));
        }
    }
    repeated
}

fn repeated_failure() -> Failure {
    (
        ResponseError::InvalidRequest,
        "Each resource must appear at most once.".to_string(),
    )
}

fn split(outcome: Result<(), Failure>) -> (i16, Option<StrBytes>) {
    match outcome {
        Ok(()) => (0, None),
        Err((error, message)) => (error.code(), Some(StrBytes::from_string(message))),
    }
}

/// How many times one resource is planned before a config that keeps changing under
/// the plan is reported (REQUEST_TIMED_OUT, which clients retry).
const PLAN_ATTEMPTS: usize = 5;

/// Checks the resource, plans with `plan`, and submits unless `validate_only`. A plan
/// refused because the resource's config changed after this node's image was read (see
/// `config_admin`) is made again: submitting waited until this node applied the entry
/// that refused it, so the next plan reads a newer config.
async fn alter_one(
    broker: &Broker,
    resource_type: i8,
    name: &str,
    validate_only: bool,
    plan: impl Fn(ConfigTarget) -> Result<MetadataCommand, Failure>,
) -> Result<(), Failure> {
    let target = target(broker, resource_type, name)?;
    let mut attempt = 1;
    loop {
        let command = plan(target)?;
        if validate_only {
            return Ok(());
        }
        match broker.submit_planned(command).await {
            Err(ControllerError::ConfigChanged(_)) if attempt < PLAN_ATTEMPTS => attempt += 1,
            outcome => return outcome.map_err(failure),
        }
    }
}

fn target<'a>(
    broker: &Broker,
    resource_type: i8,
    name: &'a str,
) -> Result<ConfigTarget<'a>, Failure> {
    match resource_type {
        RESOURCE_TOPIC => Ok(ConfigTarget::Topic(name)),
        RESOURCE_GROUP => Ok(ConfigTarget::Group(name)),
        // A per-broker change is sent to that broker (clients route it so), as Kafka checks.
        RESOURCE_BROKER if name.is_empty() || name == broker.config.node_id.to_string() => {
            Ok(ConfigTarget::Broker(name))
        }
        RESOURCE_BROKER => Err((
            ResponseError::InvalidRequest,
            format!(
                "Unexpected broker id, expected {}, but received {name}",
                broker.config.node_id
            ),
        )),
        other => Err((
            ResponseError::InvalidRequest,
            format!("Unsupported resource type {other}"),
        )),
    }
}

fn failure(error: ControllerError) -> Failure {
    let message = match &error {
        // Kafka's wording (QuorumController's existence check).
        ControllerError::UnknownTopic(name) => format!("The topic '{name}' does not exist."),
        other => other.to_string(),
    };
    (controller_error(&error), message)
}

fn duplicate_keys<'a>(mut names: impl Iterator<Item = &'a str>) -> Result<(), Failure> {
    let mut seen = std::collections::BTreeSet::new();
    if names.all(|name| seen.insert(name)) {
        return Ok(());
    }
    Err((
        ResponseError::InvalidRequest,
        "Error due to duplicate config keys".into(),
    ))
}

fn plan_replace(
    broker: &Broker,
    target: ConfigTarget,
    entries: &[(String, Option<String>)],
) -> Result<MetadataCommand, Failure> {
    duplicate_keys(entries.iter().map(|(name, _)| name.as_str()))?;
    let mut given = Vec::with_capacity(entries.len());
    for (name, value) in entries {
        let value = value.clone().ok_or_else(|| null_value(target, name))?;
        given.push((name.clone(), value));
    }
    config_admin::plan_replace(&broker.image(), &broker.config, target, &given).map_err(failure)
}

fn plan_incremental(
    broker: &Broker,
    target: ConfigTarget,
    ops: &[(String, i8, Option<String>)],
) -> Result<MetadataCommand, Failure> {
    duplicate_keys(ops.iter().map(|(name, _, _)| name.as_str()))?;
    let mut parsed = Vec::with_capacity(ops.len());
    for (name, op, value) in ops {
        let value = || value.clone().ok_or_else(|| null_value(target, name));
        let op = match *op {
            OP_SET => ConfigOp::Set(value()?),
            OP_DELETE => ConfigOp::Delete,
            OP_APPEND => ConfigOp::Append(value()?),
            OP_SUBTRACT => ConfigOp::Subtract(value()?),
            other => {
                return Err((
                    ResponseError::InvalidRequest,
                    format!("Unknown operation type {other}"),
                ));
            }
        };
        parsed.push((name.clone(), op));
    }
    config_admin::plan_incremental(&broker.image(), &broker.config, target, &parsed)
        .map_err(failure)
}

/// Kafka refuses a null value for anything but a DELETE.
fn null_value(target: ConfigTarget, name: &str) -> Failure {
    let kind = match target {
        ConfigTarget::Topic(_) => "topic",
        ConfigTarget::Broker(_) => "broker",
        ConfigTarget::Group(_) => "group",
    };
    (
        ResponseError::InvalidConfig,
        format!("Null value not supported for {kind} configs: {name}"),
    )
}
