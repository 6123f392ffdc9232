//! Client quotas in the metadata image (KIP-546): planning AlterClientQuotas into
//! commands, applying them, and answering DescribeClientQuotas from the image, with the
//! rules of Kafka's `ClientQuotaControlManager` and `ClientQuotasImage` as pure functions.
//!
//! An entity is a combination of `user`, `client-id` and `ip`, each named or the default
//! (Kafka's null name). Only `user`, `client-id`, `user`+`client-id` or `ip` alone are
//! valid, and each combination has its own keys. A command carries per-key changes for
//! one entity: applying it twice (a forwarded command retried) changes nothing more.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::image::MetadataImage;
use super::{CommandOutcome, ControllerError, MetadataCommand};

pub const USER: &str = "user";
pub const CLIENT_ID: &str = "client-id";
pub const IP: &str = "ip";

pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
pub const REQUEST_PERCENTAGE: &str = "request_percentage";
pub const CONTROLLER_MUTATION_RATE: &str = "controller_mutation_rate";
pub const CONNECTION_CREATION_RATE: &str = "connection_creation_rate";

/// Kafka's `QuotaConfigs`: the keys a user and/or client-id entity takes, and whether each
/// is a LONG (whole numbers only) or a DOUBLE.
const CLIENT_KEYS: [(&str, bool); 4] = [
    (PRODUCER_BYTE_RATE, true),
    (CONSUMER_BYTE_RATE, true),
    (REQUEST_PERCENTAGE, false),
    (CONTROLLER_MUTATION_RATE, false),
];
/// The one key an ip entity takes (an INT in Kafka: whole numbers only).
const IP_KEYS: [(&str, bool); 1] = [(CONNECTION_CREATION_RATE, true)];

/// One part of an entity: a name, or the default for every name without its own entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum QuotaName {
    Default,
    Named(String),
}

impl QuotaName {
    /// Kafka's wire form: `None` is the default.
    pub fn from_wire(name: Option<&str>) -> QuotaName {
        match name {
            None => QuotaName::Default,
            Some(name) => QuotaName::Named(name.to_string()),
        }
    }

    pub fn as_wire(&self) -> Option<&str> {
        match self {
            QuotaName::Default => None,
            QuotaName::Named(name) => Some(name),
        }
    }
}

/// A validated quota entity: one of Kafka's allowed combinations (see [`plan_alter`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QuotaEntity {
    #[serde(default)]
    pub user: Option<QuotaName>,
    #[serde(default)]
    pub client_id: Option<QuotaName>,
    #[serde(default)]
    pub ip: Option<QuotaName>,
}

impl QuotaEntity {
    /// (entity type, name) pairs in Kafka's type names, user first.
    pub fn parts(&self) -> impl Iterator<Item = (&'static str, &QuotaName)> {
        [
            (USER, &self.user),
            (CLIENT_ID, &self.client_id),
            (IP, &self.ip),
        ]
        .into_iter()
        .filter_map(|(kind, name)| name.as_ref().map(|name| (kind, name)))
    }

    fn part(&self, kind: &str) -> Option<&QuotaName> {
        match kind {
            USER => self.user.as_ref(),
            CLIENT_ID => self.client_id.as_ref(),
            IP => self.ip.as_ref(),
            _ => None,
        }
    }

    /// The keys this combination takes; `None` for a combination Kafka refuses.
    fn keys(&self) -> Option<&'static [(&'static str, bool)]> {
        match (&self.user, &self.client_id, &self.ip) {
            (Some(_), _, None) | (None, Some(_), None) => Some(&CLIENT_KEYS),
            (None, None, Some(_)) => Some(&IP_KEYS),
            _ => None,
        }
    }

    /// Kafka's `ClientQuotaEntity` string, for messages.
    fn describe(&self) -> String {
        let parts: Vec<String> = self
            .parts()
            .map(|(kind, name)| format!("{kind}={}", name.as_wire().unwrap_or("<default>")))
            .collect();
        format!("ClientQuotaEntity(entries={{{}}})", parts.join(", "))
    }
}

/// Every entity's quotas, key -> value; an entity with no key left is removed.
pub type ClientQuotas = BTreeMap<QuotaEntity, BTreeMap<String, f64>>;

/// Per-key changes: `Some` sets, `None` removes.
pub type QuotaChanges = BTreeMap<String, Option<f64>>;

/// Builds the entity of a request from its (type, name) pairs, as Kafka's `validateEntity`.
pub fn entity_from_wire(
    parts: &[(String, Option<String>)],
) -> Result<QuotaEntity, ControllerError> {
    let invalid = |message: String| Err(ControllerError::InvalidRequest(message));
    if parts.is_empty() {
        return invalid("Invalid empty client quota entity".into());
    }
    let mut entity = QuotaEntity::default();
    for (kind, name) in parts {
        let slot = match kind.as_str() {
            USER => &mut entity.user,
            CLIENT_ID => &mut entity.client_id,
            IP => &mut entity.ip,
            other => return invalid(format!("Unhandled client quota entity type: {other}")),
        };
        if slot.is_some() {
            return invalid(format!(
                "Invalid empty client quota entity, duplicate entity entry {kind}"
            ));
        }
        if name.as_deref() == Some("") {
            return invalid(format!("Empty {kind} not supported"));
        }
        *slot = Some(QuotaName::from_wire(name.as_deref()));
    }
    Ok(entity)
}

/// Plans AlterClientQuotas for one entity; `ops` are (key, value, remove). Refused whole
/// when any op is invalid, so a failed entity changes nothing.
pub fn plan_alter(
    entity: QuotaEntity,
    ops: &[(String, f64, bool)],
) -> Result<MetadataCommand, ControllerError> {
    let mut changes = QuotaChanges::new();
    for (key, value, remove) in ops {
        if changes.contains_key(key) {
            return Err(ControllerError::InvalidRequest(format!(
                "Duplicate quota key {key} not updating quota for this entity {}",
                entity.describe()
            )));
        }
        changes.insert(key.clone(), (!remove).then_some(*value));
    }
    validate(&entity, &changes)?;
    Ok(MetadataCommand::AlterClientQuotas { entity, changes })
}

/// Kafka's checks (`configKeysForEntityType`, `isValidIpEntity`, `validateQuotaKeyValue`),
/// run at plan time and again at apply time: the same command always gets the same answer.
fn validate(entity: &QuotaEntity, changes: &QuotaChanges) -> Result<(), ControllerError> {
    let invalid = |message: String| Err(ControllerError::InvalidRequest(message));
    let Some(keys) = entity.keys() else {
        return invalid("Invalid empty client quota entity".into());
    };
    if let Some(QuotaName::Named(ip)) = &entity.ip
        && ip.parse::<std::net::IpAddr>().is_err()
    {
        // Kafka also accepts a resolvable host name; resolving here would make the
        // outcome depend on DNS, so only literal addresses are taken.
        return invalid(format!("{ip} is not a valid IP or resolvable host."));
    }
    for (key, value) in changes {
        let Some(&(_, whole)) = keys.iter().find(|(name, _)| name == key) else {
            return invalid(format!("Invalid configuration key {key}"));
        };
        let Some(value) = value else { continue };
        // Kafka refuses zero and negative quotas (KAFKA-14943); a non-finite value is
        // refused too, as no rate could ever be compared with it.
        if !value.is_finite() || *value <= 0.0 {
            return invalid(format!("Quota {key} must be greater than 0"));
        }
        if whole && (value.round() - value).abs() > 1e-6 {
            return invalid(format!("Configuration {key} must be a Long value"));
        }
    }
    Ok(())
}

/// Applies an `AlterClientQuotas` command: validated in full first, then each key set or
/// removed. Setting a value twice or removing an absent key changes nothing.
pub(super) fn apply_alter_client_quotas(
    image: &mut MetadataImage,
    entity: &QuotaEntity,
    changes: &QuotaChanges,
) -> Result<CommandOutcome, ControllerError> {
    validate(entity, changes)?;
    let quotas = image.client_quotas.entry(entity.clone()).or_default();
    for (key, value) in changes {
        match value {
            Some(value) => quotas.insert(key.clone(), *value),
            None => quotas.remove(key),
        };
    }
    if quotas.is_empty() {
        image.client_quotas.remove(entity);
    }
    Ok(CommandOutcome::Done)
}

/// DescribeClientQuotas' match types.
pub const MATCH_EXACT: i8 = 0;
pub const MATCH_DEFAULT: i8 = 1;
pub const MATCH_SPECIFIED: i8 = 2;

/// Why a describe filter was refused: Kafka answers an unknown entity or match type with
/// UNSUPPORTED_VERSION, anything else malformed with INVALID_REQUEST.
#[derive(Debug, PartialEq, Eq)]
pub enum FilterError {
    Unsupported(String),
    Invalid(String),
}

/// A parsed filter: types that must have exactly this name (or the default), types that
/// must be present with any name, and whether other types are excluded.
struct Filter {
    exact: BTreeMap<String, QuotaName>,
    specified: BTreeSet<String>,
    strict: bool,
}

/// Matching entities with their quotas, in entity order.
pub type Described<'a> = Vec<(&'a QuotaEntity, &'a BTreeMap<String, f64>)>;

/// The entities matching `components` ((entity type, match type, match)), with their
/// quotas, as Kafka's `ClientQuotasImage.describe`.
pub fn describe<'a>(
    quotas: &'a ClientQuotas,
    components: &[(String, i8, Option<String>)],
    strict: bool,
) -> Result<Described<'a>, FilterError> {
    let filter = parse_filter(components, strict)?;
    Ok(quotas
        .iter()
        .filter(|(entity, _)| filter.matches(entity))
        .collect())
}

fn parse_filter(
    components: &[(String, i8, Option<String>)],
    strict: bool,
) -> Result<Filter, FilterError> {
    let invalid = |message: String| Err(FilterError::Invalid(message));
    let mut filter = Filter {
        exact: BTreeMap::new(),
        specified: BTreeSet::new(),
        strict,
    };
    for (kind, match_type, name) in components {
        if kind.is_empty() {
            return invalid("Invalid empty entity type.".into());
        }
        if filter.exact.contains_key(kind) || filter.specified.contains(kind) {
            return invalid(format!(
                "Entity type {kind} cannot appear more than once in the filter."
            ));
        }
        if ![USER, CLIENT_ID, IP].contains(&kind.as_str()) {
            return Err(FilterError::Unsupported(format!(
                "Unsupported entity type {kind}"
            )));
        }
        match (*match_type, name) {
            (MATCH_EXACT, Some(name)) => {
                filter
                    .exact
                    .insert(kind.clone(), QuotaName::Named(name.clone()));
            }
            (MATCH_EXACT, None) => {
                return invalid(
                    "Request specified MATCH_TYPE_EXACT, but set match string to null.".into(),
                );
            }
            (MATCH_DEFAULT, None) => {
                filter.exact.insert(kind.clone(), QuotaName::Default);
            }
            (MATCH_DEFAULT, Some(_)) => {
                return invalid(
                    "Request specified MATCH_TYPE_DEFAULT, but also specified a match string."
                        .into(),
                );
            }
            (MATCH_SPECIFIED, None) => {
                filter.specified.insert(kind.clone());
            }
            (MATCH_SPECIFIED, Some(_)) => {
                return invalid(
                    "Request specified MATCH_TYPE_SPECIFIED, but also specified a match string."
                        .into(),
                );
            }
            (other, _) => {
                return Err(FilterError::Unsupported(format!(
                    "Unsupported match type {other}"
                )));
            }
        }
    }
    let names = |kind: &str| filter.exact.contains_key(kind) || filter.specified.contains(kind);
    if names(IP) && (names(USER) || names(CLIENT_ID)) {
        return invalid(
            "Invalid entity filter component combination. IP filter component should not be \
             used with user or clientId filter component."
                .into(),
        );
    }
    Ok(filter)
}

impl Filter {
    fn matches(&self, entity: &QuotaEntity) -> bool {
        if self.strict && entity.parts().count() != self.exact.len() + self.specified.len() {
            return false;
        }
        let exact = (self.exact.iter()).all(|(kind, name)| entity.part(kind) == Some(name));
        exact && (self.specified.iter()).all(|kind| entity.part(kind).is_some())
    }
}

/// Serde for [`ClientQuotas`] as a list of (entity, quotas) pairs: JSON object keys must
/// be strings, and an entity is a struct.
pub mod serde_entries {
    use super::{BTreeMap, ClientQuotas, QuotaEntity};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        quotas: &ClientQuotas,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let entries: Vec<(&QuotaEntity, &BTreeMap<String, f64>)> = quotas.iter().collect();
        entries.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<ClientQuotas, D::Error> {
        let entries: Vec<(QuotaEntity, BTreeMap<String, f64>)> = Vec::deserialize(deserializer)?;
        Ok(entries.into_iter().collect())
    }
}

#[cfg(test)]
#[path = "client_quotas_tests.rs"]
mod tests;
