//! UpdateFeatures v0-2 (KIP-584): `kafka-features upgrade|downgrade`,
//! `Admin.updateFeatures`.
//!
//! Kafka 4.0 forwards this to the active controller (`FeatureControlManager`); here the
//! node that receives it plans against its image (`controller::feature_updates`) and
//! submits one `UpdateFeatures` command, then answers once it has applied it, so its own
//! ApiVersions shows the new levels at once. The request is all or nothing: the first
//! refused update is the answer for the request, as Kafka 4.0 answers:
//! - the top-level error and message carry it (every version);
//! - v0-1 also list every feature named with that same error (v2 has no per-feature
//!   results, KIP-1022).
//!
//! v0's `allow_downgrade` is the safe downgrade type; `validate_only` (v1+) checks and
//! answers without submitting; `timeout_ms` is not used (the submission has its own
//! bound, and an answer that times out says so).

use kafka_protocol::messages::update_features_response::UpdatableFeatureResult;
use kafka_protocol::messages::{UpdateFeaturesRequest, UpdateFeaturesResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use super::errors::controller_error;
use crate::broker::Broker;
use crate::controller::ControllerError;
use crate::controller::feature_updates::{FeatureUpdate, UpgradeType, plan_update_features};

/// How many times a request is planned before levels that keep changing under the plan
/// are reported (REQUEST_TIMED_OUT, which clients retry).
const PLAN_ATTEMPTS: usize = 5;

/// Plans and submits (unless `validate_only`); a plan refused because a level changed
/// after this node's image was read is made again against the newer image (submitting
/// waited until this node applied the entry that refused it).
async fn update(
    broker: &Broker,
    updates: &[FeatureUpdate],
    validate_only: bool,
) -> Result<(), ControllerError> {
    let mut attempt = 1;
    loop {
        let planned = plan_update_features(&broker.image(), broker.config.node_id, updates)?;
        let Some(command) = planned.filter(|_| !validate_only) else {
            return Ok(());
        };
        match broker.submit_planned(command).await {
            Err(ControllerError::ConfigChanged(_)) if attempt < PLAN_ATTEMPTS => attempt += 1,
            outcome => return outcome,
        }
    }
}

/// Version 1 replaced `allow_downgrade` with `upgrade_type` and added `validate_only`.
const UPGRADE_TYPE_VERSION_MIN: i16 = 1;
/// Version 2 answers with the top-level error only.
const TOP_LEVEL_ONLY_VERSION_MIN: i16 = 2;

pub async fn handle(
    broker: &Broker,
    context: &RequestContext,
    request: UpdateFeaturesRequest,
) -> UpdateFeaturesResponse {
    let updates: Vec<FeatureUpdate> = request
        .feature_updates
        .iter()
        .map(|update| FeatureUpdate {
            name: update.feature.to_string(),
            level: update.max_version_level,
            upgrade: if context.version >= UPGRADE_TYPE_VERSION_MIN {
                UpgradeType::from_wire(update.upgrade_type)
            } else if update.allow_downgrade {
                Some(UpgradeType::SafeDowngrade)
            } else {
                Some(UpgradeType::Upgrade)
            },
        })
        .collect();
    let validate_only = context.version >= UPGRADE_TYPE_VERSION_MIN && request.validate_only;
    let outcome = update(broker, &updates, validate_only).await;
    let (code, message) = match &outcome {
        Ok(()) => (0, None),
        Err(error) => (controller_error(error).code(), Some(error.to_string())),
    };
    let results = if context.version >= TOP_LEVEL_ONLY_VERSION_MIN {
        Vec::new()
    } else {
        updates
            .iter()
            .map(|update| {
                UpdatableFeatureResult::default()
                    .with_feature(StrBytes::from_string(update.name.clone()))
                    .with_error_code(code)
                    .with_error_message(message.clone().map(StrBytes::from_string))
            })
            .collect()
    };
    UpdateFeaturesResponse::default()
        .with_error_code(code)
        .with_error_message(message.map(StrBytes::from_string))
        .with_results(results)
}
