//! UpdateFeatures (KIP-584, with KIP-778's upgrade types) as Kafka's
//! `FeatureControlManager` decides it: pure planning against the image, and the command's
//! application.
//!
//! A request is all or nothing, as in Kafka 4.0: the first refused update refuses the
//! request and nothing changes. What can change here is only what this node implements:
//! - `transaction.version` 0-2: the coordinator serves every level's requests whatever is
//!   finalized; the level decides what Java clients use (KIP-890 from 2) and the
//!   `__transaction_state` value version written (flexible from 1);
//! - `metadata.version` stays at the one level whose behaviour exists
//!   ([`features::METADATA_VERSION_FINALIZED`]): a downgrade is refused as Kafka refuses
//!   one that might lose metadata, an upgrade past it is out of the supported range;
//! - `kraft.version` 0 only (KIP-853 dynamic voters are not implemented);
//! - a feature this node does not know (`group.version`, `share.version`, ...) only at 0,
//!   which it already is.
//!
//! Every node runs the same binary, so the local supported range stands for the
//! cluster's; Kafka also checks each registered broker's range (SEAM(mixed-versions):
//! registrations would carry supported ranges once nodes of different versions can meet).

use std::collections::BTreeMap;

use super::ControllerError;
use super::commands::{CommandOutcome, MetadataCommand};
use super::features::{self, METADATA_VERSION, SUPPORTED, finalized_level};
use super::image::MetadataImage;
use crate::types::NodeId;

/// `FeatureUpdate.UpgradeType`; v0 requests' `allow_downgrade` maps to the first two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpgradeType {
    Upgrade,
    SafeDowngrade,
    UnsafeDowngrade,
}

impl UpgradeType {
    /// The wire value (v1+); `None` for a value Kafka calls UNKNOWN.
    pub fn from_wire(value: i8) -> Option<UpgradeType> {
        match value {
            1 => Some(UpgradeType::Upgrade),
            2 => Some(UpgradeType::SafeDowngrade),
            3 => Some(UpgradeType::UnsafeDowngrade),
            _ => None,
        }
    }
}

/// One requested change: a feature to `level`, or `upgrade` None for an unknown type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureUpdate {
    pub name: String,
    pub level: i16,
    pub upgrade: Option<UpgradeType>,
}

/// Checks every update against `image` and returns the command that finalizes them, or
/// `None` when nothing would change. Only features this node supports are carried (an
/// unknown feature can only be asked for at 0, where it already is), so the command stays
/// small whatever the request holds.
pub fn plan_update_features(
    image: &MetadataImage,
    node_id: NodeId,
    updates: &[FeatureUpdate],
) -> Result<Option<MetadataCommand>, ControllerError> {
    let mut levels = BTreeMap::new();
    let mut expected = BTreeMap::new();
    for update in updates {
        check_update(image, node_id, update)?;
        if SUPPORTED.iter().any(|feature| feature.name == update.name) {
            levels.insert(update.name.clone(), update.level);
            expected.insert(update.name.clone(), finalized_level(image, &update.name));
        }
    }
    if levels.is_empty() {
        return Ok(None);
    }
    Ok(Some(MetadataCommand::UpdateFeatures {
        levels,
        expected: Some(expected),
    }))
}

fn check_update(
    image: &MetadataImage,
    node_id: NodeId,
    update: &FeatureUpdate,
) -> Result<(), ControllerError> {
    let refuse = |reason: String| Err(invalid_update_version(&update.name, update.level, &reason));
    let Some(upgrade) = update.upgrade else {
        return refuse("The controller does not support the given upgrade type.".into());
    };
    let current = finalized_level(image, &update.name);
    if update.level < 0 {
        return refuse("A feature version cannot be less than 0.".into());
    }
    if let Some(reason) = reason_not_supported(node_id, &update.name, update.level) {
        return refuse(reason);
    }
    if update.level > current && upgrade != UpgradeType::Upgrade {
        return refuse("Can't downgrade to a newer version.".into());
    }
    if update.level < current && upgrade == UpgradeType::Upgrade {
        return refuse(
            "Can't downgrade the version of this feature without setting the upgrade type \
             to either safe or unsafe downgrade."
                .into(),
        );
    }
    if update.name == METADATA_VERSION && update.level < current {
        // Kafka refuses a downgrade whose levels differ in metadata; below the level this
        // node implements every one does, as far as this node can tell.
        let reason = if upgrade == UpgradeType::UnsafeDowngrade {
            "Unsafe metadata downgrade is not supported in this version."
        } else {
            "Refusing to perform the requested downgrade because it might delete metadata \
             information."
        };
        return Err(ControllerError::InvalidUpdateVersion(format!(
            "Invalid metadata.version {}. {reason}",
            update.level
        )));
    }
    Ok(())
}

/// Kafka's `QuorumFeatures.reasonNotSupported` for this node: an unknown feature may only
/// be at 0, a known one only within its range. `metadata.version` is further held at the
/// level whose behaviour exists (its range starts lower for what ApiVersions advertises
/// and downgrades are refused above).
fn reason_not_supported(node_id: NodeId, name: &str, level: i16) -> Option<String> {
    let Some(range) = SUPPORTED.iter().find(|feature| feature.name == name) else {
        return (level != 0)
            .then(|| format!("Local controller {node_id} does not support this feature."));
    };
    let max = if name == METADATA_VERSION {
        features::METADATA_VERSION_FINALIZED
    } else {
        range.max_level
    };
    if (range.min_level..=max).contains(&level) {
        return None;
    }
    Some(format!(
        "Local controller {node_id} only supports versions \
         SupportedVersionRange[min_version:{}, max_version:{max}]",
        range.min_level
    ))
}

/// Kafka's `invalidUpdateVersion` wording.
fn invalid_update_version(name: &str, level: i16, reason: &str) -> ControllerError {
    ControllerError::InvalidUpdateVersion(format!(
        "Invalid update version {level} for feature {name}. {reason}"
    ))
}

/// Applies an `UpdateFeatures` command. Refused whole, before anything changes:
/// - a feature no longer at the level the plan saw (`expected`), unless it is already at
///   the planned one (the command's own earlier application): the planner's image was
///   behind, and the API plans again;
/// - a level this node cannot run at. SEAM(mixed-versions): with nodes of different
///   versions, a level one supports and another does not would make their images differ
///   (Kafka's replay stops instead); every node runs the same binary today.
///
/// A level equal to the default is still stored, so a later change of the default does
/// not move a cluster that chose it.
pub(super) fn apply_update_features(
    image: &mut MetadataImage,
    levels: &BTreeMap<String, i16>,
    expected: Option<&BTreeMap<String, i16>>,
) -> Result<CommandOutcome, ControllerError> {
    for (name, &level) in levels {
        let current = finalized_level(image, name);
        let seen = expected.and_then(|expected| expected.get(name));
        if seen.is_some_and(|&seen| seen != current) && current != level {
            return Err(ControllerError::ConfigChanged(format!(
                "the finalized level of {name}"
            )));
        }
        if name == METADATA_VERSION && level != current {
            return Err(invalid_update_version(
                name,
                level,
                "This node runs only at its own metadata.version.",
            ));
        }
        if let Some(reason) = reason_not_supported(image.controller_id, name, level) {
            return Err(invalid_update_version(name, level, &reason));
        }
    }
    for (name, &level) in levels {
        if SUPPORTED.iter().any(|feature| feature.name == name) {
            image.feature_levels.insert(name.clone(), level);
        }
    }
    Ok(CommandOutcome::Done)
}

#[cfg(test)]
#[path = "feature_updates_tests.rs"]
mod tests;
