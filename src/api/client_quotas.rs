//! DescribeClientQuotas (v0-1) and AlterClientQuotas (v0-1), KIP-546. Describe answers
//! from this node's image, as a KRaft broker answers from its metadata cache. Alter plans
//! each entity against Kafka's rules and submits it through the controller; the answer
//! waits until this node applied it, so a describe that follows sees the change.

use std::collections::HashMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_client_quotas_response as alter_response;
use kafka_protocol::messages::describe_client_quotas_response::{EntityData, EntryData, ValueData};
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use super::errors::controller_error;
use crate::broker::Broker;
use crate::controller::client_quotas::{self, FilterError, QuotaEntity};

/// The most entries one AlterClientQuotas request may carry: each is validated and
/// committed through the controller in turn, so an unbounded list would hold the
/// connection and the controller for as long as its sender likes.
pub const ALTER_ENTRIES_MAX: usize = 1_000;

pub async fn describe(
    broker: &Broker,
    _context: &RequestContext,
    request: DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    let components: Vec<(String, i8, Option<String>)> = (request.components.iter())
        .map(|c| {
            let name = c._match.as_ref().map(|m| m.to_string());
            (c.entity_type.to_string(), c.match_type, name)
        })
        .collect();
    let image = broker.image();
    match client_quotas::describe(&image.client_quotas, &components, request.strict) {
        Ok(found) => {
            let entries = found
                .into_iter()
                .map(|(entity, values)| describe_entry(entity, values))
                .collect();
            DescribeClientQuotasResponse::default().with_entries(Some(entries))
        }
        Err(error) => {
            let (code, message) = match error {
                FilterError::Unsupported(message) => (ResponseError::UnsupportedVersion, message),
                FilterError::Invalid(message) => (ResponseError::InvalidRequest, message),
            };
            DescribeClientQuotasResponse::default()
                .with_error_code(code.code())
                .with_error_message(Some(StrBytes::from_string(message)))
                .with_entries(None)
        }
    }
}

fn describe_entry(
    entity: &QuotaEntity,
    values: &std::collections::BTreeMap<String, f64>,
) -> EntryData {
    let entity = entity
        .parts()
        .map(|(kind, name)| {
            EntityData::default()
                .with_entity_type(StrBytes::from_static_str(kind))
                .with_entity_name(name.as_wire().map(|n| StrBytes::from_string(n.to_string())))
        })
        .collect();
    let values = (values.iter())
        .map(|(key, value)| {
            ValueData::default()
                .with_key(StrBytes::from_string(key.clone()))
                .with_value(*value)
        })
        .collect();
    EntryData::default().with_entity(entity).with_values(values)
}

/// One request entry: its entity as sent (echoed back) and its ops.
struct Alteration {
    parts: Vec<(String, Option<String>)>,
    ops: Vec<(String, f64, bool)>,
}

pub async fn alter(
    broker: &Broker,
    _context: &RequestContext,
    request: AlterClientQuotasRequest,
) -> AlterClientQuotasResponse {
    let alterations: Vec<Alteration> = (request.entries.iter())
        .map(|entry| Alteration {
            parts: (entry.entity.iter())
                .map(|e| {
                    (
                        e.entity_type.to_string(),
                        e.entity_name.as_ref().map(|n| n.to_string()),
                    )
                })
                .collect(),
            ops: (entry.ops.iter())
                .map(|op| (op.key.to_string(), op.value, op.remove))
                .collect(),
        })
        .collect();
    if alterations.len() > ALTER_ENTRIES_MAX {
        // Each entry is a controller commit: a request naming more is refused whole.
        let message = format!(
            "At most {ALTER_ENTRIES_MAX} entries per AlterClientQuotas request, got {}",
            alterations.len()
        );
        let results = (alterations.iter())
            .map(|a| alter_result(a, Err((ResponseError::InvalidRequest, message.clone()))))
            .collect();
        return AlterClientQuotasResponse::default().with_entries(results);
    }
    let entities: Vec<Option<QuotaEntity>> = (alterations.iter())
        .map(|a| client_quotas::entity_from_wire(&a.parts).ok())
        .collect();
    let mut named: HashMap<&QuotaEntity, usize> = HashMap::with_capacity(entities.len());
    for entity in entities.iter().flatten() {
        *named.entry(entity).or_default() += 1;
    }
    let mut results = Vec::with_capacity(alterations.len());
    for (alteration, entity) in alterations.iter().zip(&entities) {
        let repeated = entity.as_ref().is_some_and(|e| named[e] > 1);
        let outcome = if repeated {
            // Kafka refuses an entity named twice in one request; none of its copies applies.
            Err((
                ResponseError::InvalidRequest,
                "Ignoring duplicate entity".to_string(),
            ))
        } else {
            alter_one(broker, alteration, request.validate_only).await
        };
        results.push(alter_result(alteration, outcome));
    }
    AlterClientQuotasResponse::default().with_entries(results)
}

async fn alter_one(
    broker: &Broker,
    alteration: &Alteration,
    validate_only: bool,
) -> Result<(), (ResponseError, String)> {
    let failure =
        |error: crate::controller::ControllerError| (controller_error(&error), error.to_string());
    let entity = client_quotas::entity_from_wire(&alteration.parts).map_err(failure)?;
    if alteration.ops.is_empty() {
        // Nothing to change: the entity is validated, no controller commit is made.
        return Ok(());
    }
    let command = client_quotas::plan_alter(entity, &alteration.ops).map_err(failure)?;
    if !validate_only {
        broker.submit_planned(command).await.map_err(failure)?;
    }
    Ok(())
}

fn alter_result(
    alteration: &Alteration,
    outcome: Result<(), (ResponseError, String)>,
) -> alter_response::EntryData {
    let entity = (alteration.parts.iter())
        .map(|(kind, name)| {
            alter_response::EntityData::default()
                .with_entity_type(StrBytes::from_string(kind.clone()))
                .with_entity_name(name.clone().map(StrBytes::from_string))
        })
        .collect();
    let (code, message) = match outcome {
        Ok(()) => (0, None),
        Err((error, message)) => (error.code(), Some(StrBytes::from_string(message))),
    };
    alter_response::EntryData::default()
        .with_error_code(code)
        .with_error_message(message)
        .with_entity(entity)
}
